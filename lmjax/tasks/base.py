"""The task interface, and the pieces the BERT-family tasks share.

A task owns what differs between objectives (the data, the model, the loss and the metrics); the
train loop, the benchmark and inference talk to it only through `Task`. A task is made from the
run's config (`lmjax.tasks.get_task(config)`) and reads it, never writes it: what a run derives
from elsewhere (a fine-tuning run's pretrained architecture) is added by `resolve_config` before
the config is saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from lmjax import errors
from lmjax.data.pipeline import TaskData
from lmjax.models import bert
from lmjax.models.transformer import TransformerConfig

Batch = Mapping[str, np.ndarray | jax.Array]  # {name: [B, ...]}; eval batches add eval_weight [B]
Params = Any  # a pytree of arrays
MetricSums = dict[str, tuple[jax.Array, jax.Array]]  # {name: (sum, count)} over a batch
Outputs = dict[str, jax.Array]  # {name: [B, ...]} per-example values (predictions, labels)


class Task(Protocol):
    """What an objective provides. `config` is the run's resolved config."""

    name: ClassVar[str]  # the `config.task` that selects it
    CAUSAL: ClassVar[bool]  # whether its model attends only to earlier tokens (kernel choice)
    config: ml_collections.ConfigDict

    @classmethod
    def resolve_config(
        cls, config: ml_collections.ConfigDict, workdir: str | None = None
    ) -> ml_collections.ConfigDict:
        """The config with what the run derives filled in (a copy when anything is added); the
        loop calls it once, before config.json is saved. A run resumed in `workdir` keeps what it
        derived at its start (from the config.json there)."""

    def make_data(self, workdir: str | None = None) -> TaskData:
        """Train and eval datasets and the tokenizer (the one saved in `workdir` when there is
        one: a resumed run keeps its vocabulary)."""

    def make_model(self, vocab_size: int) -> nn.Module:
        """The Flax model; `apply` is pure."""

    def init_params(self, model: nn.Module, rng: jax.Array, batch: Batch) -> Params:
        """Fresh parameters (with their logical-axis boxes) for a batch of this task's layout."""

    def loss_counts(self, batch: Batch) -> dict[str, jax.Array]:
        """The loss's denominators over `batch` (tokens, masked positions, examples)."""

    def loss_fn(
        self,
        model: nn.Module,
        params: Params,
        batch: Batch,
        rng: jax.Array | None,
        train: bool = True,
        counts: dict[str, jax.Array] | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(loss, extra metrics). Normalised by `counts` (the whole batch's `loss_counts`), so
        that the parts of a batch (gradient accumulation, pmap devices) add up to the whole."""

    def eval_metrics(
        self, model: nn.Module, params: Params, batch: Batch
    ) -> tuple[MetricSums, Outputs]:
        """({name: (sum, count)} over the rows of `batch` whose `eval_weight` is 1, and the
        per-example outputs that `corpus_metrics` needs; {} when it needs none)."""

    def corpus_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics over the whole eval set (Matthews correlation, F1, Pearson, ...) from the
        outputs of `eval_metrics` of its real rows, concatenated in order."""

    def flops_per_token(self, num_params: int, vocab_size: int) -> float:
        """Training FLOPs per token (forward + backward), for MFU."""

    def fake_batch(self, vocab_size: int) -> Batch:
        """Random arrays in the train batch layout (init shapes and benchmarks)."""


def apply(
    model: nn.Module,
    params: Params,
    *args: Any,
    rng: jax.Array | None = None,
    train: bool = False,
    **kwargs: Any,
) -> Any:
    """`model.apply` in training mode (dropout drawn from `rng`) or evaluation mode."""
    rngs = {"dropout": rng} if train else {}
    return model.apply({"params": params}, *args, train=train, rngs=rngs, **kwargs)


class BaseTask:
    """A task bound to its config, deriving nothing (`resolve_config` returns the config) and
    with no metrics over the whole eval set."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    def corpus_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        return {}

    @classmethod
    def resolve_config(
        cls, config: ml_collections.ConfigDict, workdir: str | None = None
    ) -> ml_collections.ConfigDict:
        return config


class BertTask(BaseTask):
    """What the BERT-family tasks share: the encoder's inputs and its init."""

    INPUTS: ClassVar[tuple[str, ...]] = ("input_ids", "token_type_ids", "attention_mask")
    CAUSAL: ClassVar[bool] = False

    def inputs(self, batch: Batch) -> dict:
        return {k: batch[k] for k in self.INPUTS}

    def init_params(self, model: nn.Module, rng: jax.Array, batch: Batch) -> Params:
        return model.init(rng, **self.inputs(batch))["params"]

    def apply(
        self,
        model: nn.Module,
        params: Params,
        batch: Batch,
        rng: jax.Array | None = None,
        train: bool = False,
    ) -> dict[str, jax.Array]:
        return apply(model, params, **self.inputs(batch), rng=rng, train=train)


def bert_model_config(
    model_config: ml_collections.ConfigDict,
    vocab_size: int,
    seq_len: int,
    positions: int,
    where: str = "the model",
    **overrides,
) -> TransformerConfig:
    """BERT's architecture with the sizes of `model_config`. Position embeddings: `model.max_len`
    where set (BERT-base keeps 512 in both phases), else `positions`; `seq_len` must fit."""
    kwargs = TransformerConfig.kwargs_from(model_config)
    max_len = kwargs.pop("max_len", 0) or positions
    if seq_len > max_len:
        raise errors.InputError(
            f"seq_len {seq_len} exceeds the {max_len} positions of {where}: set --config.seq_len "
            f"to at most {max_len}"
        )
    return bert.bert_config(vocab_size, max_len, **{**kwargs, **overrides})


# The tasks whose workdirs a run of each task starts from (`config.init_from`), and their kind.
INIT_FROM = {
    "clm": ("GPT", ("clm",)),
    "mlm_nsp": ("BERT", ("mlm_nsp", "classify")),
    "classify": ("BERT", ("mlm_nsp", "classify")),
}


def check_init_from_task(config: ml_collections.ConfigDict, source_task: str | None) -> None:
    """`errors.InputError` unless `config.init_from` (which trained `source_task`) holds the kind
    of model `config.task` starts from (a GPT for clm, a BERT for the others)."""
    kind, allowed = INIT_FROM[config.task]
    if source_task not in allowed:
        raise errors.InputError(
            f"init_from={config.init_from} trained task {source_task!r}; fine-tuning needs a "
            f"{kind} workdir (task {' or '.join(allowed)}, e.g. an imported Hugging Face {kind})"
        )
