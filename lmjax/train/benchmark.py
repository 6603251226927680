"""Step timing for `experiments/benchmark.py`: the train step the loop runs, on fixed batches
(`run`), and the input pipeline alone (`run_data`). lmjax against its peers:
`benchmarks/suite.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from lmjax import flops
from lmjax.data import pipeline
from lmjax.tasks import clm
from lmjax.train import build


def fake_vocab_size(config: ml_collections.ConfigDict) -> int:
    """The vocabulary of random batches: that of a causal config's tokenizer file (a WordPiece
    vocab.txt or a tokenizer.json as `data.tokenizer`), else the config's `data.vocab_size`
    (GPT-2's 50257, BERT's 30522); a character-level config has none: tiny Shakespeare's 65
    characters."""
    if config.data.get("tokenizer", "char") not in ("char", "bpe"):
        return clm.make_tokenizer(config, "").vocab_size
    return config.data.get("vocab_size", 65)


@dataclasses.dataclass
class ReadyStep:
    """A config's compiled train step (taking host batches, as the loop feeds them), a placed
    initial state and the batches to feed it."""

    setup: build.Setup
    steps: build.Steps
    state: Any
    batches: list
    vocab_size: int


@contextlib.contextmanager
def ready_step(config: ml_collections.ConfigDict, real_data: bool = False) -> Iterator[ReadyStep]:
    """Inside the config's mesh, its `ReadyStep`: with one random batch of the config's shape
    (`fake_vocab_size`), or the first 8 batches of its data."""
    s = build.setup(config)
    config, task = s.config, s.task
    with s.activate():
        if real_data:
            data = task.make_data()
            vocab_size = data.vocab_size
            it = pipeline.train_iterator(
                data.train_ds, config.batch_size, config.seed, data.batch_fn
            )
            batches = [next(it) for _ in range(8)]
        else:
            vocab_size = fake_vocab_size(config)
            batches = [task.fake_batch(vocab_size)]
        b = build.build(s, task.make_model(vocab_size))
        state = b.steps.place(b.init(jax.random.PRNGKey(config.seed)))
        yield ReadyStep(s, b.steps, state, batches, vocab_size)


STEADY_PASSES = 4  # untimed passes of `steps` steps at most, before the timed ones
MIN_TIMED_S = 3.0  # timed passes of `steps` steps until they add up to this


def _pass(train_step: Callable, state: Any, batches: list, steps: int) -> tuple[Any, dict]:
    """`steps` train steps dispatched without waiting, as the train loop runs them, then one
    wait for the last update; returns the state and the pass's wall time, system time and page
    faults."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(steps):
        state, metrics = train_step(state, batches[i % len(batches)])
    jax.block_until_ready((state, metrics))
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return state, {
        "wall_s": wall,
        "system_s": after.ru_stime - before.ru_stime,
        "faults": after.ru_minflt - before.ru_minflt,
    }


def run(
    config: ml_collections.ConfigDict, steps: int = 40, warmup: int = 5, real_data: bool = False
) -> dict:
    """Times `steps` train steps after compilation, `warmup` more and the passes that bring the
    step to its steady state; returns the figures."""
    with ready_step(config, real_data) as ready:
        config, task, mesh = ready.setup.config, ready.setup.task, ready.setup.mesh
        kernels = {key: choice.impl for key, choice in ready.setup.kernels.items()}
        compiled, state, batches = ready.steps, ready.state, ready.batches
        vocab_size, train_step = ready.vocab_size, ready.steps.train

        start = time.perf_counter()
        state, metrics = train_step(state, batches[0])
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - start
        if warmup:
            state, _ = _pass(train_step, state, batches, warmup)
        flops.measure_peak_flops(jnp.dtype(config.model.dtype))  # and again after the steps

        # Untimed passes as the timed one runs until one spends under 2% of its time in the
        # kernel, at most `STEADY_PASSES`: while the heap that lmjax.host_malloc keeps still
        # grows, each huge page a step touches first costs it system time, which a training run
        # pays in its first steps only.
        warmup_passes = 0
        while warmup_passes < STEADY_PASSES:
            warmup_passes += 1
            state, usage = _pass(train_step, state, batches, steps)
            if usage["system_s"] < 0.02 * usage["wall_s"]:
                break

        # The figure is the mean of a run with async dispatch, as the train loop runs: a median
        # of single steps hid glibc's periodic stalls (every 3-4 steps, +0.5 s at L6 C384 T256
        # B8 before host_malloc kept the heap) that the loop pays. The synced median is kept
        # as a diagnostic: far below the mean, some steps stall.
        times = []
        for i in range(steps):
            t = time.perf_counter()
            state, metrics = train_step(state, batches[i % len(batches)])
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t)
        # Passes until they fill `MIN_TIMED_S` (at (b) one pass does, at (a) ~4): the figure is
        # the median pass (the slower middle one for an even count), so that a second in which
        # the machine was slow does not make a short step's figure.
        passes = []
        while sum(p["wall_s"] for p in passes) < MIN_TIMED_S:
            state, usage = _pass(train_step, state, batches, steps)
            passes.append(usage)
        timed = sorted(passes, key=lambda p: p["wall_s"])[len(passes) // 2]
        step_s = timed["wall_s"] / steps

    num_params = flops.count_params(compiled.unplace(state)["params"])
    tokens_per_step = config.batch_size * config.seq_len
    flops_per_step = task.flops_per_token(num_params, vocab_size) * tokens_per_step
    # A spec-sheet bf16 peak where the device is known, else a measured matmul in the compute dtype.
    peak_per_device = flops.measure_peak_flops(jnp.dtype(config.model.dtype), again=True)
    known = flops.known_peak_flops(jax.devices()[0].device_kind) is not None
    source = "spec sheet (bf16)" if known else f"measured {config.model.dtype} matmul"
    n = mesh.devices.size
    return {
        "device": jax.devices()[0].device_kind,
        "num_devices": n,
        "mesh": "pmap" if config.use_pmap else "x".join(map(str, mesh.devices.shape)),
        "grad_accum_steps": config.grad_accum_steps,
        "num_params": num_params,
        "batch_size": config.batch_size,
        "seq_len": config.seq_len,
        "dtype": config.model.dtype,
        **kernels,  # attention_impl, matmul_impl: what auto took
        "compile_s": compile_s,
        "step_ms": 1000 * step_s,
        "step_ms_median_synced": 1000 * statistics.median(times),
        "tokens_per_sec": tokens_per_step / step_s,
        "page_faults_per_step": timed["faults"] / steps,  # memory touched for the first time
        "system_ms_per_step": 1000 * timed["system_s"] / steps,
        "warmup_passes": warmup_passes,
        "timed_passes": len(passes),
        "tokens_per_sec_per_device": tokens_per_step / step_s / n,
        "model_flops_per_step": flops_per_step,
        "peak_flops": peak_per_device * n,
        "peak_flops_per_device": peak_per_device,
        "peak_flops_source": source,
        "mfu": flops_per_step / step_s / (peak_per_device * n),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # lmjax.host_malloc
    }


def run_data(config: ml_collections.ConfigDict, batches: int = 1000) -> dict:
    """Times the input pipeline alone: `task.make_data`, the first train batch, then `batches`
    more; with the process's peak resident memory (the figure a streamed corpus must bound)."""
    s = build.setup(config)
    config, task = s.config, s.task
    start = time.perf_counter()
    data = task.make_data()
    make_data_s = time.perf_counter() - start
    it = pipeline.train_iterator(data.train_ds, config.batch_size, config.seed, data.batch_fn)
    start = time.perf_counter()
    next(it)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    per_batch_s = (time.perf_counter() - start) / batches
    return {
        "make_data_s": make_data_s,
        "first_batch_s": first_s,
        "batch_ms": 1000 * per_batch_s,
        "batches": batches,
        "tokens_per_sec": config.batch_size * config.seq_len / per_batch_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
