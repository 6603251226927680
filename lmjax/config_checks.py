"""Range checks of a config's values, before anything is read, written or compiled.

A value out of range is an `errors.InputError` that names the key, the value, what it must be and
what the key means (`config.seq_len=0 must be ≥ 1: tokens per example`), instead of a traceback
from deep inside grain, optax or XLA (or, for `num_train_steps=0`, a run that does nothing). A
value that is legal but most likely a mistake (warmup longer than the run) is a warning.

`check` is called by `lmjax.tasks.resolve_config`, which every entry point passes through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import logging

from lmjax import errors
from lmjax.data import books
from lmjax.models import attention
from lmjax.models.transformer import (
    ACTIVATIONS,
    CHECKPOINT_NAMES,
    DTYPES,
    MATMUL_IMPLS,
    NAMED_POLICIES,
    REMAT_POLICIES,
)

# The shortest sequence each task can lay out: BERT pretraining needs [CLS] A [SEP] B [SEP] with
# A and B at least one token each; a classifier [CLS] A [SEP].
MIN_SEQ_LEN = {"clm": 1, "mlm_nsp": 5, "classify": 3}


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _real(test: Callable[[float], bool]) -> Callable[[Any], bool]:
    def ok(v):
        number = isinstance(v, int | float) and not isinstance(v, bool)
        return number and math.isfinite(v) and test(v)

    return ok


_POSITIVE_INT, _COUNT = _int_at_least(1), _int_at_least(0)
_PROBABILITY = _real(lambda v: 0 <= v < 1)  # a dropout rate: 1 would drop everything

# (dotted key, test of its value, what it must be, what it is). A key absent from the config
# (each task has its own data keys) is skipped.
RULES: tuple[tuple[str, Callable[[Any], bool], str, str], ...] = (
    ("batch_size", _POSITIVE_INT, "≥ 1", "examples per step, over all devices"),
    ("num_train_steps", _POSITIVE_INT, "≥ 1", "the run's length in steps"),
    ("warmup_steps", _COUNT, "≥ 0", "steps of linear learning-rate warmup"),
    ("learning_rate", _real(lambda v: v > 0), "a finite number > 0", "the peak learning rate"),
    ("min_learning_rate", _real(lambda v: v >= 0), "a finite number ≥ 0", "the final rate"),
    ("log_every_steps", _POSITIVE_INT, "≥ 1", "steps between train log lines"),
    ("eval_every_steps", _POSITIVE_INT, "≥ 1", "steps between evals"),
    ("eval_steps", lambda v: v == -1 or _POSITIVE_INT(v), "≥ 1, or -1", "eval batches (-1: all)"),
    ("checkpoint_every_steps", _POSITIVE_INT, "≥ 1", "steps between checkpoints"),
    ("checkpoint_max_to_keep", _POSITIVE_INT, "≥ 1", "checkpoints kept"),
    ("grad_accum_steps", _POSITIVE_INT, "≥ 1", "micro-batches per step"),
    ("num_classes", _POSITIVE_INT, "≥ 1", "classifier outputs (1: regression)"),
    ("model.num_layers", _POSITIVE_INT, "≥ 1", "Transformer blocks"),
    ("model.num_heads", _POSITIVE_INT, "≥ 1", "attention heads"),
    ("model.emb_dim", _POSITIVE_INT, "≥ 1", "the model width"),
    ("model.mlp_dim", _POSITIVE_INT, "≥ 1", "the MLP's hidden width"),
    ("model.max_len", _COUNT, "≥ 0", "learned positions (0: seq_len)"),
    ("model.vocab_multiple", _POSITIVE_INT, "≥ 1", "the token table's rows are a multiple of it"),
    ("model.dropout_rate", _PROBABILITY, "in [0, 1)", "the hidden dropout rate"),
    ("model.attention_dropout_rate", _PROBABILITY, "in [0, 1)", "the attention dropout rate"),
    ("model.dtype", lambda v: v in DTYPES, f"one of {sorted(DTYPES)}", "the compute dtype"),
    ("model.activation", lambda v: v in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}", "the MLP's"),
    (
        "model.attention_impl",
        lambda v: v in attention.IMPLS,
        f"one of {', '.join(attention.IMPLS)}",
        "the attention kernel",
    ),
    (
        "model.matmul_impl",
        lambda v: v in MATMUL_IMPLS,
        f"one of {', '.join(MATMUL_IMPLS)}",
        "how 16-bit matmuls are laid out",
    ),
    (
        "model.remat_policy",
        lambda v: v in REMAT_POLICIES,
        f"one of {', '.join(REMAT_POLICIES)}",
        "what remat keeps for the backward pass",
    ),
    (
        "model.remat_names",
        lambda v: isinstance(v, (tuple, list)) and set(v) <= set(CHECKPOINT_NAMES),
        f"a tuple of {', '.join(CHECKPOINT_NAMES)}",
        "the tensors a named remat policy keeps",
    ),
    ("optimizer.b1", _PROBABILITY, "in [0, 1)", "Adam's first-moment decay"),
    ("optimizer.b2", _PROBABILITY, "in [0, 1)", "Adam's second-moment decay"),
    ("optimizer.eps", _real(lambda v: v > 0), "a finite number > 0", "Adam's epsilon"),
    ("optimizer.weight_decay", _real(lambda v: v >= 0), "a finite number ≥ 0", "AdamW's decay"),
    ("optimizer.grad_clip_norm", _real(lambda v: v > 0), "a finite number > 0", "clip norm"),
    ("data.train_fraction", _real(lambda v: 0 < v < 1), "in (0, 1)", "the share that trains"),
    ("data.vocab_size", _POSITIVE_INT, "≥ 1", "the tokenizer's size when trained"),
    ("data.tokenizer_train_chars", _COUNT, "≥ 0", "characters the BPE learns from (0: all)"),
    ("data.masked_lm_prob", _real(lambda v: 0 < v <= 1), "in (0, 1]", "the share masked"),
    ("data.max_predictions_per_seq", _POSITIVE_INT, "≥ 1", "masked positions per sequence"),
    ("data.dupe_factor", _POSITIVE_INT, "≥ 1", "passes over the corpus"),
    ("data.group_size", _int_at_least(2), "≥ 2", "books read and paired together (NSP)"),
    ("data.shuffle_window", _POSITIVE_INT, "≥ 1", "streamed instances shuffled together"),
    ("data.short_seq_prob", _real(lambda v: 0 <= v <= 1), "in [0, 1]", "share of short pairs"),
    ("data.num_eval_documents", _POSITIVE_INT, "≥ 1", "documents held out for eval"),
    ("data.max_words", _COUNT, "≥ 0", "words of the training books kept (0: all)"),
    ("data.holdout_size", _real(lambda v: v >= 0), "≥ 0", "training examples held out"),
    ("data.train_examples", _COUNT, "≥ 0", "training examples used (0: all)"),
)


def _lookup(config: ml_collections.ConfigDict, key: str) -> tuple[bool, Any]:
    """(whether `config` has the dotted `key`, its value)."""
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False, None
        node = node[part]
    return True, node


def _fail(key: str, value: Any, must: str, what: str) -> errors.InputError:
    return errors.InputError(f"config.{key}={value!r} must be {must}: {what} (--config.{key})")


def check(config: ml_collections.ConfigDict) -> None:
    """Raises `errors.InputError` for the first value out of range (`RULES`, the task's shortest
    `seq_len`, heads dividing the width, micro-batches dividing the batch); warns when the
    warmup is as long as the run."""
    for key, ok, must, what in RULES:
        present, value = _lookup(config, key)
        if present and not ok(value):
            raise _fail(key, value, must, what)
    min_len = MIN_SEQ_LEN.get(config.get("task"), 1)
    if not _int_at_least(min_len)(config.seq_len):
        raise _fail("seq_len", config.seq_len, f"≥ {min_len}", f"tokens per {config.task} example")
    data = config.get("data") or {}
    if data.get("max_words") and not (data.get("path") and books.is_book_path(data.path)):
        raise errors.InputError(
            f"config.data.max_words={data.max_words} cuts Project Gutenberg books, but "
            f"config.data.path={data.get('path')!r} names none: give a folder, glob or manifest of "
            "books, or set data.max_words=0"
        )
    model = config.model
    if model.emb_dim % model.num_heads:
        raise errors.InputError(
            f"config.model.emb_dim={model.emb_dim} does not divide into "
            f"config.model.num_heads={model.num_heads} heads: make emb_dim a multiple of num_heads"
        )
    if model.get("remat") and model.get("remat_policy") in NAMED_POLICIES and not model.remat_names:
        raise errors.InputError(
            f"config.model.remat_policy={model.remat_policy!r} keeps the tensors named in "
            f"config.model.remat_names, which is empty: name some of {', '.join(CHECKPOINT_NAMES)} "
            "(--config.model.remat_names=\"('qkv', 'attention')\")"
        )
    accum = config.get("grad_accum_steps", 1)
    if config.batch_size % accum:
        raise errors.InputError(
            f"config.batch_size={config.batch_size} does not split into "
            f"config.grad_accum_steps={accum} micro-batches: use a multiple of {accum}"
        )
    if config.warmup_steps >= config.num_train_steps:
        logging.warning(
            "config.warmup_steps=%d ≥ config.num_train_steps=%d: the learning rate never reaches "
            "config.learning_rate=%g; a warmup of ~10%% of the run is usual",
            config.warmup_steps,
            config.num_train_steps,
            config.learning_rate,
        )
