"""Deterministic, checkpointable input pipelines built on grain.

A training iterator's position is saved in every checkpoint (`get_state` / `set_state`), so a
resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import grain
import jax
import numpy as np

from lmjax import errors

# (batch, np.random.Generator) -> batch, run on each train batch (e.g. dynamic masking).
BatchFn = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]


@dataclasses.dataclass
class TaskData:
    """What a task's `make_data` returns to the train loop."""

    train_ds: grain.MapDataset | grain.IterDataset  # examples (MapDataset: before shuffling)
    eval_ds: grain.MapDataset  # held-out examples, batched by `eval_batches`
    tokenizer: object  # saved into the workdir
    vocab_size: int
    batch_fn: object = None  # (batch, np.random.Generator) -> batch on each train batch


def lm_windows(tokens: np.ndarray, seq_len: int, stride: int = 1) -> grain.MapDataset:
    """MapDataset of the `seq_len + 1`-token windows of `tokens` starting every `stride` tokens,
    as {"inputs", "targets"}. Training takes every window (nanoGPT's random offsets); evaluation
    takes non-overlapping ones (stride = seq_len), so each held-out token is scored once."""

    def window(i):
        w = tokens[i * stride : i * stride + seq_len + 1]
        return {"inputs": w[:-1], "targets": w[1:]}

    return grain.MapDataset.range((len(tokens) - seq_len - 1) // stride + 1).map(window)


def rows(arrays: Mapping[str, np.ndarray]) -> grain.MapDataset:
    """MapDataset whose element i is {key: arrays[key][i]} (arrays of equal length)."""
    n = len(next(iter(arrays.values())))
    return grain.MapDataset.range(n).map(lambda i: {k: v[i] for k, v in arrays.items()})


def train_iterator(
    ds: grain.MapDataset | grain.IterDataset,
    batch_size: int,
    seed: int,
    batch_fn: BatchFn | None = None,
) -> grain.DatasetIterator:
    """Shuffled (reshuffled every epoch), repeated, batched iterator over this process's share.

    `batch_size` is the global batch; each of the `jax.process_count()` processes reads
    every process_count-th example and yields its part of the batch. `batch_fn(batch, rng)`
    (e.g. dynamic masking) runs on each batch with a numpy Generator fixed by the seed and the
    batch's index, so it too is the same after a resume. An IterDataset (a stream such as
    `lmjax.data.streaming`'s) is already shuffled, endless and this process's share: it is only
    batched.
    """
    per_process = _per_process(batch_size)
    if batch_fn is not None and jax.process_count() > 1:  # each process's part: its own draws
        batch_fn = _per_process_rng(batch_fn, jax.process_index())
    if isinstance(ds, grain.IterDataset):
        ds = ds.batch(per_process, drop_remainder=True)
        return iter(ds if batch_fn is None else ds.random_map(batch_fn, seed=seed))
    ds = ds.seed(seed).shuffle().repeat(None)
    ds = ds[jax.process_index() :: jax.process_count()]
    ds = ds.batch(per_process, drop_remainder=True)
    if batch_fn is not None:
        ds = ds.random_map(batch_fn)
    return iter(ds.to_iter_dataset())


def _per_process_rng(batch_fn, process_index):
    def fn(batch, rng):
        return batch_fn(batch, np.random.default_rng([int(rng.integers(2**63)), process_index]))

    return fn


def eval_batches(
    ds: grain.MapDataset, batch_size: int, num_batches: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """A fixed list of eval batches: a fixed-seed sample of `num_batches`, or all when it is -1.

    The same in every run and after resume, so eval numbers compare across runs. Every batch has
    `eval_weight` [B] (1.0 for a real example); the last one is padded with zero rows of weight
    0.0 so that a full pass scores every example exactly once.
    """
    per_process = _per_process(batch_size)
    ds = ds.seed(seed).shuffle()[jax.process_index() :: jax.process_count()]
    ds = ds.batch(per_process, drop_remainder=False)
    n = len(ds) if num_batches < 0 else min(num_batches, len(ds))
    return [_pad_batch(ds[i], per_process) for i in range(n)]


def _pad_batch(batch, size):
    n = len(next(iter(batch.values())))
    padded = {
        k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }
    padded["eval_weight"] = (np.arange(size) < n).astype(np.float32)
    return padded


def _per_process(batch_size):
    if batch_size % jax.process_count():
        raise errors.InputError(
            f"batch_size {batch_size} does not divide over {jax.process_count()} processes: use a "
            f"multiple of {jax.process_count()}"
        )
    return batch_size // jax.process_count()


def fake_batch(
    batch_size: int, seq_len: int, vocab_size: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random tokens in the CLM batch layout (benchmarks, shape checks)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab_size, (batch_size, seq_len + 1), dtype=np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
