"""Sequence classification fine-tuning (e.g. SST-2): `[CLS] sentence [SEP]` → pooler → classifier.

With `config.init_from=PRETRAIN_WORKDIR` the encoder's architecture, vocabulary and weights
(embeddings, blocks, pooler) come from that workdir; the classifier is initialised afresh.
"""

import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lmjax.data import corpora, pipeline, tokenizers
from lmjax.models import bert
from lmjax.models.transformer import DTYPES, TransformerConfig
from lmjax.train import flops


def read_labeled_tsv(path):
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


def encode_examples(sentences, labels, tokenizer, seq_len):
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


def pretrained_config(config):
    """What this run needs of `config.init_from`'s config (its `model` and `seq_len`), or None
    without init_from. `make_data` records it in the run's own config (`pretrained`, saved in
    its config.json), so a fine-tuned workdir rebuilds its model after init_from is gone."""
    if not config.get("init_from"):
        return None
    if config.get("pretrained") is None:
        from lmjax.train import loop

        source = loop.load_config(config.init_from)
        return ml_collections.ConfigDict({"model": source.model, "seq_len": source.seq_len})
    return config.pretrained


def split_holdout(sentences, labels, size, seed, min_words=10):
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


def make_data(config, workdir=None):
    train_sentences, train_labels = read_labeled_tsv(config.data.train_path)
    eval_sentences, eval_labels = read_labeled_tsv(config.data.eval_path)
    holdout_size = config.data.get("holdout_size", 0)
    (train_sentences, train_labels), (holdout_sentences, holdout_labels) = split_holdout(
        train_sentences, train_labels, holdout_size, config.data.get("holdout_seed", 0)
    )
    if config.data.get("train_examples", 0):  # a few-label regime: a fixed random subset
        keep = _subset(len(train_sentences), config.data.train_examples)
        train_sentences, train_labels = [train_sentences[i] for i in keep], train_labels[keep]
    if config.get("init_from"):  # recorded in the run's config.json (see pretrained_config)
        with config.unlocked():
            config.pretrained = pretrained_config(config)
    if workdir and os.path.exists(os.path.join(workdir, tokenizers.TOKENIZER_FILE)):
        tokenizer = tokenizers.load_tokenizer(workdir)  # resuming
    elif config.get("init_from"):
        tokenizer = tokenizers.load_tokenizer(config.init_from)
    elif config.data.vocab_path:
        tokenizer = tokenizers.WordPieceTokenizer.from_vocab_file(
            corpora.resolve(config.data.vocab_path), lowercase=True
        )
    else:
        tokenizer = tokenizers.WordPieceTokenizer.train(
            train_sentences, config.data.vocab_size, lowercase=True
        )
    encode = lambda s, y: encode_examples(s, y, tokenizer, config.seq_len)  # noqa: E731
    # One eval pass scores both sets: `is_holdout` tells eval_metrics which is which.
    eval_set = encode(
        eval_sentences + holdout_sentences, np.concatenate([eval_labels, holdout_labels])
    )
    eval_set["is_holdout"] = (np.arange(len(eval_set["label"])) >= len(eval_sentences)).astype(
        np.float32
    )
    return pipeline.TaskData(
        train_ds=pipeline.rows(encode(train_sentences, train_labels)),
        eval_ds=pipeline.rows(eval_set),
        tokenizer=tokenizer,
        vocab_size=tokenizer.vocab_size,
    )


def model_config(config, vocab_size):
    """Architecture from the pretrained workdir when fine-tuning, else from `config.model`."""
    pretrained = pretrained_config(config)
    model = pretrained.model if pretrained else config.model
    kwargs = TransformerConfig.kwargs_from(model)
    # Position embeddings: model.max_len where set (BERT-base: 512), else the run's seq_len.
    max_len = kwargs.pop("max_len", 0) or (pretrained.seq_len if pretrained else config.seq_len)
    if config.seq_len > max_len:
        where = config.init_from or "the model"
        raise ValueError(f"seq_len {config.seq_len} exceeds the {max_len} positions of {where}")
    # Fine-tuning regularisation and compute dtype are this run's choice, not the pretraining's.
    kwargs["dropout_rate"] = config.model.dropout_rate
    kwargs["dtype"] = DTYPES[config.model.dtype]
    return bert.bert_config(vocab_size, max_len, **kwargs)


def make_model(config, vocab_size):
    return bert.BertForSequenceClassification(
        model_config(config, vocab_size), num_classes=config.num_classes
    )


def _inputs(batch):
    return dict(
        input_ids=batch["input_ids"],
        token_type_ids=batch["token_type_ids"],
        attention_mask=batch["attention_mask"],
    )


def init_params(model, rng, batch):
    return model.init(rng, **_inputs(batch))["params"]


def _losses(model, params, batch, rng=None, train=False):
    rngs = {"dropout": rng} if train else {}
    logits_BxC = model.apply({"params": params}, **_inputs(batch), train=train, rngs=rngs)["logits"]
    return logits_BxC, optax.softmax_cross_entropy_with_integer_labels(logits_BxC, batch["label"])


def loss_counts(config, batch):
    return {"examples": jnp.asarray(batch["label"].shape[0], jnp.float32)}


def loss_fn(config, model, params, batch, rng, train=True, counts=None):
    """Mean cross-entropy; `counts` as in `clm.loss_fn`."""
    counts = loss_counts(config, batch) if counts is None else counts
    _, losses_B = _losses(model, params, batch, rng, train)
    return jnp.sum(losses_B) / counts["examples"], {}


def eval_metrics(config, model, params, batch):
    """`loss` / `accuracy` on `data.eval_path`; with `data.holdout_size`, also `holdout_loss` /
    `holdout_accuracy` on the training examples held out for model selection."""
    logits_BxC, losses_B = _losses(model, params, batch)
    correct_B = jnp.argmax(logits_BxC, -1) == batch["label"]
    weight_B = batch["eval_weight"]  # 0 for padding rows: every example counts once
    parts = {"": weight_B * (1 - batch["is_holdout"])}
    if config.data.get("holdout_size", 0):
        parts["holdout_"] = weight_B * batch["is_holdout"]
    metrics = {}
    for prefix, w_B in parts.items():
        count = jnp.sum(w_B)
        metrics[prefix + "loss"] = (jnp.sum(losses_B * w_B), count)
        metrics[prefix + "accuracy"] = (jnp.sum(correct_B * w_B), count)
    return metrics


def flops_per_token(config, num_params, vocab_size):
    """6N + attention, N without the token embedding (a lookup here, no output matmul)."""
    cfg = model_config(config, 1)
    n = num_params - vocab_size * cfg.emb_dim
    return flops.flops_per_token(n, cfg.num_layers, cfg.emb_dim, config.seq_len)


def fake_batch(config, vocab_size):
    rng = np.random.default_rng(0)
    b, t = config.batch_size, config.seq_len
    return {
        "input_ids": rng.integers(0, vocab_size, (b, t), dtype=np.int32),
        "token_type_ids": np.zeros((b, t), np.int32),
        "attention_mask": np.ones((b, t), np.int32),
        "label": rng.integers(0, config.num_classes, (b,), dtype=np.int32),
    }
