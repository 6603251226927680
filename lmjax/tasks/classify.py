"""Sequence classification and regression fine-tuning: the GLUE tasks (`data.glue_task`: cola,
sst2, mrpc, stsb, rte, wnli), as google-research/bert's run_classifier.py feeds them.

Single sentences as `[CLS] A [SEP]`, pairs as `[CLS] A [SEP] B [SEP]` with token types 0 / 1, the
longer of the two trimmed from its end until the pair fits. The pooler's output goes to a
classifier (cross-entropy) or, for STS-B, one regression output (mean squared error). Eval
reports the loss (and accuracy) averaged over examples and GLUE's metrics over the whole eval
file (`lmjax.tasks.glue_metrics`: Matthews correlation, F1, Pearson, Spearman).

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

from lmjax import errors, flops
from lmjax import workdir as workdir_lib
from lmjax.data import corpora, glue, pipeline, tokenizers
from lmjax.models import bert
from lmjax.models.transformer import DTYPES, TransformerConfig
from lmjax.tasks import base, glue_metrics
from lmjax.tasks.base import Batch, MetricSums, Outputs, Params


def truncate_pair(tokens_a: list[int], tokens_b: list[int], max_tokens: int) -> None:
    """Trims the longer list from its end, one token at a time, in place, until the two fit in
    `max_tokens` (run_classifier.py's _truncate_seq_pair: deterministic, unlike pretraining's)."""
    while len(tokens_a) + len(tokens_b) > max_tokens:
        (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()


def encode_examples(
    examples: glue.Examples, tokenizer: tokenizers.WordPieceTokenizer, seq_len: int
) -> dict[str, np.ndarray]:
    """`[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]` (token types 0 for [CLS] A [SEP], 1 for
    B [SEP]), truncated to seq_len and padded, as fixed-shape arrays; `label` when labelled."""
    n = len(examples)
    ids_NxT = np.full((n, seq_len), tokenizer.pad_id, np.int32)
    types_NxT = np.zeros((n, seq_len), np.int32)
    encoded_a = tokenizer.encode_batch(examples.sentences_a)
    encoded_b = tokenizer.encode_batch(examples.sentences_b) if examples.sentences_b else None
    for i, a in enumerate(encoded_a):
        a = list(a)
        if encoded_b is None:
            row, types = [tokenizer.cls_id, *a[: seq_len - 2], tokenizer.sep_id], []
        else:
            b = list(encoded_b[i])
            truncate_pair(a, b, seq_len - 3)
            row = [tokenizer.cls_id, *a, tokenizer.sep_id, *b, tokenizer.sep_id]
            types = [1] * (len(b) + 1)
        ids_NxT[i, : len(row)] = row
        if types:
            types_NxT[i, len(row) - len(types) : len(row)] = types
    out = {
        "input_ids": ids_NxT,
        "token_type_ids": types_NxT,
        "attention_mask": (ids_NxT != tokenizer.pad_id).astype(np.int32),
    }
    if examples.labels is not None:
        out["label"] = examples.labels
    return out


def split_holdout(
    sentences: Sequence[str], labels: np.ndarray, size: int, seed: int, min_words: int = 10
) -> list[tuple[Sequence[str], np.ndarray]]:
    """(train, holdout) parts of a labelled set of single sentences (`holdout_indices`)."""
    train, held = holdout_indices(sentences, size, seed, min_words)
    return [([sentences[i] for i in idx], labels[idx]) for idx in (train, held)]


def holdout_indices(
    sentences: Sequence[str], size: int, seed: int, min_words: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) indices of a labelled set, to choose hyperparameters on the holdout and
    never on the eval set (e.g. SST-2 dev).

    `size` examples of at least `min_words` words are drawn with `seed`. SST-2's training set
    holds every phrase of its parse trees, so a held-out sentence's phrases and the longer
    phrases around it would leak its label: training drops every example that lies inside a
    held-out one or contains one (word-level)."""
    if size == 0:
        return np.arange(len(sentences)), np.zeros(0, int)
    words = [s.split() for s in sentences]
    candidates = np.flatnonzero([len(w) >= min_words for w in words])
    if not 0 <= size <= len(candidates):
        raise errors.InputError(
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
    return np.asarray(train, int), chosen


def _random_holdout(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= size < n:
        raise errors.InputError(
            f"data.holdout_size={size} must be in [0, {n - 1}] (training examples)"
        )
    chosen = np.sort(np.random.default_rng(seed).permutation(n)[:size])
    return np.setdiff1d(np.arange(n), chosen), chosen


def _take(examples: glue.Examples, idx: np.ndarray) -> glue.Examples:
    return glue.Examples(
        [examples.sentences_a[i] for i in idx],
        None if examples.sentences_b is None else [examples.sentences_b[i] for i in idx],
        None if examples.labels is None else examples.labels[idx],
    )


def _concat(first: glue.Examples, second: glue.Examples) -> glue.Examples:
    return glue.Examples(
        first.sentences_a + second.sentences_a,
        None if first.sentences_b is None else first.sentences_b + second.sentences_b,
        np.concatenate([first.labels, second.labels]),
    )


def read_examples(
    config: ml_collections.ConfigDict, split: str, labelled: bool | None = True
) -> glue.Examples:
    """The "train" or "eval" examples of `data.glue_task`: `data.train_path` / `data.eval_path`
    (embedded names or GLUE-format TSV files), or TFDS `data.tfds_name` (`glue/<task>`)."""
    data = config.data
    if not data.glue_task:  # an imported classifier of another task: it loads and exports only
        raise errors.InputError(
            f"data.glue_task is empty: set --config.data.glue_task to the task to train on, one "
            f"of {sorted(glue.FORMATS)}"
        )
    if data.tfds_name:
        named = data.tfds_name.split(":")[0].removeprefix("glue/")
        if named != data.glue_task:
            raise errors.InputError(
                f"data.tfds_name={data.tfds_name!r} is not glue/{data.glue_task} "
                f"(data.glue_task={data.glue_task!r}): name the same task in both"
            )
        tfds_split = "train" if split == "train" else data.tfds_eval_split
        return glue.read_tfds(data.tfds_name, tfds_split, data.tfds_data_dir)
    return glue.read_tsv(data.train_path if split == "train" else data.eval_path, data.glue_task,
                         labelled)  # fmt: skip


def _subset(n, size):
    if not 0 < size <= n:
        raise errors.InputError(
            f"data.train_examples={size} must be in [1, {n}] (training examples)"
        )
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


def _check_init_from(config: ml_collections.ConfigDict, source: ml_collections.ConfigDict) -> None:
    """init_from must be a BERT (pretraining or classifier) workdir, and a classifier head it
    has must fit `num_classes` unless it is skipped (initialised afresh)."""
    base.check_init_from_task(config, source.task)
    skipped = any("classifier/".startswith(p) for p in config.init_from_skip)
    if source.task == "classify" and source.num_classes != config.num_classes and not skipped:
        raise errors.InputError(
            f"init_from={config.init_from} has a {source.num_classes}-output classifier and "
            f"this run needs {config.num_classes}: pass "
            "--config.init_from_skip='(\"classifier/\",)' to start the head afresh"
        )


class Classify(base.BertTask):
    """A GLUE task's sentences (or pairs) → pooler → classifier or regression output."""

    name: ClassVar[str] = "classify"

    @classmethod
    def resolve_config(
        cls, config: ml_collections.ConfigDict, workdir: str | None = None
    ) -> ml_collections.ConfigDict:
        """With `init_from`, records what the run needs of that workdir's config (its `model` and
        `seq_len`) as `pretrained`, so that the fine-tuned workdir rebuilds its model (and loads,
        exports and resumes) after init_from is gone. Returns a copy; `config` is not changed.

        Checks first that `data.glue_task` is one lmjax reads and `num_classes` fits it."""
        task = config.data.glue_task
        if task and task not in glue.FORMATS:
            raise errors.InputError(
                f"data.glue_task={task!r} is not a GLUE task lmjax reads; use one of "
                f"{sorted(glue.FORMATS)}"
            )
        if task and config.num_classes != glue.num_labels(task):
            raise errors.InputError(
                f"num_classes={config.num_classes} does not fit {task} "
                f"({glue.num_labels(task)} outputs): set --config.num_classes="
                f"{glue.num_labels(task)}"
            )
        if not config.init_from or config.get("pretrained") is not None:
            return config
        saved = workdir_lib.read_config_dict(workdir) if workdir else {}
        if saved.get("init_from") == config.init_from and saved.get("pretrained"):
            pretrained = saved["pretrained"]  # resuming: what the run derived at its start
        else:
            source = workdir_lib.load_config(config.init_from)
            _check_init_from(config, source)
            pretrained = {"model": source.model.to_dict(), "seq_len": source.seq_len}
        config = config.copy_and_resolve_references()
        with config.unlocked():
            config.pretrained = ml_collections.ConfigDict(pretrained)
        return config

    def make_data(self, workdir: str | None = None) -> pipeline.TaskData:
        config = self.config
        task = config.data.glue_task
        train, eval_set = read_examples(config, "train"), read_examples(config, "eval")
        if task == "sst2":  # every phrase of a parse tree is an example: drop the leaking ones
            train_idx, held_idx = holdout_indices(
                train.sentences_a, config.data.holdout_size, config.data.holdout_seed
            )
        else:
            train_idx, held_idx = _random_holdout(
                len(train), config.data.holdout_size, config.data.holdout_seed
            )
        train, holdout = _take(train, train_idx), _take(train, held_idx)
        if config.data.train_examples:  # a few-label regime: a fixed random subset
            train = _take(train, _subset(len(train), config.data.train_examples))
        tokenizer = make_tokenizer(config, train.sentences_a + (train.sentences_b or []), workdir)
        # One eval pass scores both sets: `is_holdout` tells eval_metrics which is which.
        eval_arrays = encode_examples(_concat(eval_set, holdout), tokenizer, config.seq_len)
        is_holdout = np.arange(len(eval_set) + len(holdout)) >= len(eval_set)
        eval_arrays["is_holdout"] = is_holdout.astype(np.float32)
        return pipeline.TaskData(
            train_ds=pipeline.rows(encode_examples(train, tokenizer, config.seq_len)),
            eval_ds=pipeline.rows(eval_arrays),
            tokenizer=tokenizer,
            vocab_size=tokenizer.vocab_size,
        )

    @property
    def regression(self) -> bool:
        """One output, trained by mean squared error (STS-B; `num_classes` fits the task)."""
        return self.config.num_classes == 1

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
        """(predictions [B], per-example losses [B], logits [B, C]): the class with the highest
        logit and cross-entropy; for regression the one output and its squared error."""
        logits_BxC = self.apply(model, params, batch, rng, train)["logits"]
        if self.regression:
            predictions_B = logits_BxC[:, 0]
            return predictions_B, jnp.square(predictions_B - batch["label"]), logits_BxC
        losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, batch["label"])
        return jnp.argmax(logits_BxC, -1), losses_B, logits_BxC

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
        """Mean cross-entropy (mean squared error for regression); no extra metrics."""
        counts = self.loss_counts(batch) if counts is None else counts
        _, losses_B, _ = self._losses(model, params, batch, rng, train)
        return jnp.sum(losses_B) / counts["examples"], {}

    def eval_metrics(
        self, model: nn.Module, params: Params, batch: Batch
    ) -> tuple[MetricSums, Outputs]:
        """`loss` (and `accuracy`) on `data.eval_path`; with `data.holdout_size`, also
        `holdout_loss` (`holdout_accuracy`) on the training examples held out for model
        selection. Outputs: each example's prediction, label and whether it is held out."""
        predictions_B, losses_B, _ = self._losses(model, params, batch)
        weight_B = batch["eval_weight"]  # 0 for padding rows: every example counts once
        parts = {"": weight_B * (1 - batch["is_holdout"])}
        if self.config.data.holdout_size:
            parts["holdout_"] = weight_B * batch["is_holdout"]
        sums = {}
        for prefix, w_B in parts.items():
            count = jnp.sum(w_B)
            sums[prefix + "loss"] = (jnp.sum(losses_B * w_B), count)
            if not self.regression:
                correct_B = predictions_B == batch["label"]
                sums[prefix + "accuracy"] = (jnp.sum(correct_B * w_B), count)
        outputs = {"prediction": predictions_B, "label": batch["label"]}
        return sums, {**outputs, "is_holdout": batch["is_holdout"]}

    def corpus_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """GLUE's metrics of the task over the whole eval file (and the holdout)."""
        task = self.config.data.glue_task
        held = outputs["is_holdout"] > 0
        parts = {"": ~held, "holdout_": held} if self.config.data.holdout_size else {"": ~held}
        metrics = {}
        for prefix, keep in parts.items():
            values = glue_metrics.compute(task, outputs["label"][keep], outputs["prediction"][keep])
            metrics.update({prefix + k: v for k, v in values.items()})
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
            "label": (
                rng.uniform(0.0, 5.0, (b,)).astype(np.float32)
                if self.regression
                else rng.integers(0, config.num_classes, (b,), dtype=np.int32)
            ),
        }
