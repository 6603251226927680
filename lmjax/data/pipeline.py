"""Deterministic, checkpointable input pipelines built on grain.

A training iterator's position is saved in every checkpoint (`get_state` / `set_state`), so a
resumed run sees exactly the batches an uninterrupted run would have seen.
"""

import grain
import jax
import numpy as np


def lm_windows(tokens, seq_len, stride=1):
    """MapDataset of the `seq_len + 1`-token windows of `tokens` starting every `stride` tokens,
    as {"inputs", "targets"}. Training takes every window (nanoGPT's random offsets); evaluation
    takes non-overlapping ones (stride = seq_len), so each held-out token is scored once."""

    def window(i):
        w = tokens[i * stride : i * stride + seq_len + 1]
        return {"inputs": w[:-1], "targets": w[1:]}

    return grain.MapDataset.range((len(tokens) - seq_len - 1) // stride + 1).map(window)


def train_iterator(ds, batch_size, seed):
    """Shuffled (reshuffled every epoch), repeated, batched iterator over this process's share.

    `batch_size` is the global batch; each of the `jax.process_count()` processes reads
    every process_count-th example and yields its part of the batch.
    """
    per_process = _per_process(batch_size)
    ds = ds.seed(seed).shuffle().repeat(None)
    ds = ds[jax.process_index() :: jax.process_count()]
    return iter(ds.batch(per_process, drop_remainder=True).to_iter_dataset())


def eval_batches(ds, batch_size, num_batches, seed=0):
    """A fixed list of eval batches: a fixed-seed sample of `num_batches`, or all when it is -1.
    The same in every run and after resume, so eval numbers compare across runs."""
    per_process = _per_process(batch_size)
    ds = ds.seed(seed).shuffle()[jax.process_index() :: jax.process_count()]
    ds = ds.batch(per_process, drop_remainder=True)
    n = len(ds) if num_batches < 0 else min(num_batches, len(ds))
    return [ds[i] for i in range(n)]


def _per_process(batch_size):
    if batch_size % jax.process_count():
        raise ValueError(
            f"batch_size {batch_size} does not divide over {jax.process_count()} processes"
        )
    return batch_size // jax.process_count()


def fake_batch(batch_size, seq_len, vocab_size, seed=0):
    """Random tokens in the CLM batch layout (benchmarks, shape checks)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab_size, (batch_size, seq_len + 1), dtype=np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
