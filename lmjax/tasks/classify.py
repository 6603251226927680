"""Sequence classification fine-tuning (e.g. SST-2): `[CLS] sentence [SEP]` → pooler → classifier.

With `config.init_from=PRETRAIN_WORKDIR` the encoder's architecture, vocabulary and weights
(embeddings, blocks, pooler) come from that workdir; the classifier is initialised afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lmjax import flops
from lmjax import workdir as workdir_lib
from lmjax.data import corpora, pipeline, tokenizers
from lmjax.models import bert
from lmjax.models.transformer import DTYPES, TransformerConfig
from lmjax.tasks import base
from lmjax.tasks.base import Batch, MetricSums, Params


def read_labeled_tsv(path: str) -> tuple[list[str], np.ndarray]:
    """(sentences, labels) of a `sentence<TAB>label` file with a header row (GLUE's SST-2)."""
    text = corpora.read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    if not lines or lines[0].split("\t")[:2] != ["sentence", "label"]:
        raise ValueError(f"{path}: line 1 must be the header 'sentence<TAB>label'")
    sentences, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip().isdigit():
            raise ValueError(
                f"{path}: line {number} is not 'sentence<TAB>integer label': {line[:80]!r}"
            )
        sentences.append(fields[0].strip())
        labels.append(int(fields[1]))
    return sentences, np.asarray(labels, np.int32)


def encode_examples(
    sentences: Sequence[str],
    labels: np.ndarray,
    tokenizer: tokenizers.WordPieceTokenizer,
    seq_len: int,
) -> dict[str, np.ndarray]:
    """`[CLS] tokens [SEP]` truncated to seq_len and padded, as fixed-shape int32 arrays."""
    n = len(sentences)
    ids_NxT = np.full((n, seq_len), tokenizer.pad_id, np.int32)
    for i, ids in enumerate(tokenizer.encode_batch(sentences)):
        row = [tokenizer.cls_id, *ids[: seq_len - 2], tokenizer.sep_id]
        ids_NxT[i, : len(row)] = row
    return {
        "input_ids": ids_NxT,
        "token_type_ids": np.zeros_like(ids_NxT),
        "attention_mask": (ids_NxT != tokenizer.pad_id).astype(np.int32),
        "label": labels,
    }


def split_holdout(
    sentences: Sequence[str], labels: np.ndarray, size: int, seed: int, min_words: int = 10
) -> list[tuple[Sequence[str], np.ndarray]]:
    """(train, holdout) parts of a labelled set, to choose hyperparameters on the holdout and
    never on the eval set (e.g. SST-2 dev).

    `size` examples of at least `min_words` words are drawn with `seed`. SST-2's training set
    holds every phrase of its parse trees, so a held-out sentence's phrases and the longer
    phrases around it would leak its label: training drops every example that lies inside a
    held-out one or contains one (word-level)."""
    if size == 0:
        return [(sentences, labels), ([], labels[:0])]
    words = [s.split() for s in sentences]
    candidates = np.flatnonzero([len(w) >= min_words for w in words])
    if not 0 <= size <= len(candidates):
        raise ValueError(
            f"data.holdout_size={size} must be in [0, {len(candidates)}] (the training "
            f"examples of {min_words}+ words)"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(candidates, size, replace=False))
    held = {" ".join(words[i]) for i in chosen}
    inside = {" ".join(words[i][a:b]) for i in chosen for a, b in _spans(len(words[i]), 1)}

    def leaks(w):
        if " ".join(w) in inside:
            return True
        return any(" ".join(w[a:b]) in held for a, b in _spans(len(w), min_words))

    is_chosen = np.zeros(len(sentences), bool)
    is_chosen[chosen] = True
    train = [i for i in range(len(sentences)) if not is_chosen[i] and not leaks(words[i])]
    logging.info(
        "holdout: %d examples; %d training examples sharing their parse trees dropped",
        size, len(sentences) - size - len(train),
    )  # fmt: skip
    return [([sentences[i] for i in idx], labels[idx]) for idx in (np.asarray(train, int), chosen)]


def _subset(n, size):
    if not 0 < size <= n:
        raise ValueError(f"data.train_examples={size} must be in [1, {n}] (training examples)")
    return np.sort(np.random.default_rng(0).permutation(n)[:size])


def _spans(n, min_len):
    return ((a, b) for a in range(n) for b in range(a + min_len, n + 1))


def make_tokenizer(
    config: ml_collections.ConfigDict, train_sentences: Sequence[str], workdir: str | None = None
) -> tokenizers.Tokenizer:
    """The workdir's tokenizer (resume), else init_from's, else `data.vocab_path`, else one
    trained on the training sentences."""
    saved = workdir_lib.saved_tokenizer(workdir)
    if saved is not None:
        return saved
    if config.init_from:
        return workdir_lib.load_tokenizer(config.init_from)
    if config.data.vocab_path:
        return tokenizers.WordPieceTokenizer.from_vocab_file(
            corpora.resolve(config.data.vocab_path), lowercase=True
        )
    return tokenizers.WordPieceTokenizer.train(
        train_sentences, config.data.vocab_size, lowercase=True
    )


class Classify(base.BertTask):
    """`[CLS] sentence [SEP]` → pooler → classifier, mean cross-entropy; accuracy on eval."""

    name: ClassVar[str] = "classify"

    @classmethod
    def resolve_config(
        cls, config: ml_collections.ConfigDict, workdir: str | None = None
    ) -> ml_collections.ConfigDict:
        """With `init_from`, records what the run needs of that workdir's config (its `model` and
        `seq_len`) as `pretrained`, so that the fine-tuned workdir rebuilds its model (and loads,
        exports and resumes) after init_from is gone. Returns a copy; `config` is not changed."""
        if not config.init_from or config.get("pretrained") is not None:
            return config
        saved = workdir_lib.read_config_dict(workdir) if workdir else {}
        if saved.get("init_from") == config.init_from and saved.get("pretrained"):
            pretrained = saved["pretrained"]  # resuming: what the run derived at its start
        else:
            source = workdir_lib.load_config(config.init_from)
            pretrained = {"model": source.model.to_dict(), "seq_len": source.seq_len}
        config = config.copy_and_resolve_references()
        with config.unlocked():
            config.pretrained = ml_collections.ConfigDict(pretrained)
        return config

    def make_data(self, workdir: str | None = None) -> pipeline.TaskData:
        config = self.config
        train_sentences, train_labels = read_labeled_tsv(config.data.train_path)
        eval_sentences, eval_labels = read_labeled_tsv(config.data.eval_path)
        (train_sentences, train_labels), (holdout_sentences, holdout_labels) = split_holdout(
            train_sentences, train_labels, config.data.holdout_size, config.data.holdout_seed
        )
        if config.data.train_examples:  # a few-label regime: a fixed random subset
            keep = _subset(len(train_sentences), config.data.train_examples)
            train_sentences = [train_sentences[i] for i in keep]
            train_labels = train_labels[keep]
        tokenizer = make_tokenizer(config, train_sentences, workdir)
        encode = lambda s, y: encode_examples(s, y, tokenizer, config.seq_len)  # noqa: E731
        # One eval pass scores both sets: `is_holdout` tells eval_metrics which is which.
        eval_set = encode(
            eval_sentences + holdout_sentences, np.concatenate([eval_labels, holdout_labels])
        )
        is_holdout = np.arange(len(eval_set["label"])) >= len(eval_sentences)
        eval_set["is_holdout"] = is_holdout.astype(np.float32)
        return pipeline.TaskData(
            train_ds=pipeline.rows(encode(train_sentences, train_labels)),
            eval_ds=pipeline.rows(eval_set),
            tokenizer=tokenizer,
            vocab_size=tokenizer.vocab_size,
        )

    def model_config(self, vocab_size: int) -> TransformerConfig:
        """Architecture from the pretrained workdir when fine-tuning, else from `config.model`;
        dropout and compute dtype are this run's choice, not the pretraining's."""
        config = self.config
        pretrained = config.get("pretrained")
        if config.init_from and pretrained is None:
            raise ValueError("a fine-tuning config needs Classify.resolve_config first")
        return base.bert_model_config(
            pretrained.model if pretrained else config.model,
            vocab_size,
            config.seq_len,
            pretrained.seq_len if pretrained else config.seq_len,
            where=config.init_from or "the model",
            dropout_rate=config.model.dropout_rate,
            dtype=DTYPES[config.model.dtype],
        )

    def make_model(self, vocab_size: int) -> bert.BertForSequenceClassification:
        return bert.BertForSequenceClassification(
            self.model_config(vocab_size), num_classes=self.config.num_classes
        )

    def _losses(self, model, params, batch, rng=None, train=False):
        logits_BxC = self.apply(model, params, batch, rng, train)["logits"]
        losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, batch["label"])
        return logits_BxC, losses_B

    def loss_counts(self, batch: Batch) -> dict[str, jax.Array]:
        return {"examples": jnp.asarray(batch["label"].shape[0], jnp.float32)}

    def loss_fn(
        self,
        model: nn.Module,
        params: Params,
        batch: Batch,
        rng: jax.Array | None,
        train: bool = True,
        counts: dict[str, jax.Array] | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean cross-entropy; no extra metrics."""
        counts = self.loss_counts(batch) if counts is None else counts
        _, losses_B = self._losses(model, params, batch, rng, train)
        return jnp.sum(losses_B) / counts["examples"], {}

    def eval_metrics(self, model: nn.Module, params: Params, batch: Batch) -> MetricSums:
        """`loss` / `accuracy` on `data.eval_path`; with `data.holdout_size`, also `holdout_loss` /
        `holdout_accuracy` on the training examples held out for model selection."""
        logits_BxC, losses_B = self._losses(model, params, batch)
        correct_B = jnp.argmax(logits_BxC, -1) == batch["label"]
        weight_B = batch["eval_weight"]  # 0 for padding rows: every example counts once
        parts = {"": weight_B * (1 - batch["is_holdout"])}
        if self.config.data.holdout_size:
            parts["holdout_"] = weight_B * batch["is_holdout"]
        metrics = {}
        for prefix, w_B in parts.items():
            count = jnp.sum(w_B)
            metrics[prefix + "loss"] = (jnp.sum(losses_B * w_B), count)
            metrics[prefix + "accuracy"] = (jnp.sum(correct_B * w_B), count)
        return metrics

    def flops_per_token(self, num_params: int, vocab_size: int) -> float:
        """6N + attention, N without the token embedding (a lookup here, no output matmul)."""
        cfg = self.model_config(1)
        n = num_params - vocab_size * cfg.emb_dim
        return flops.flops_per_token(n, cfg.num_layers, cfg.emb_dim, self.config.seq_len)

    def fake_batch(self, vocab_size: int) -> Batch:
        config = self.config
        rng = np.random.default_rng(0)
        b, t = config.batch_size, config.seq_len
        return {
            "input_ids": rng.integers(0, vocab_size, (b, t), dtype=np.int32),
            "token_type_ids": np.zeros((b, t), np.int32),
            "attention_mask": np.ones((b, t), np.int32),
            "label": rng.integers(0, config.num_classes, (b,), dtype=np.int32),
        }
