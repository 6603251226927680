"""Step timing for `experiments/benchmark.py`: the train step the loop runs, on fixed batches."""

import resource
import statistics
import time

import jax
import ml_collections

from lmjax import flops
from lmjax.data import pipeline
from lmjax.train import build


def run(
    config: ml_collections.ConfigDict, steps: int = 40, warmup: int = 5, real_data: bool = False
) -> dict:
    """Times `steps` train steps after compilation and `warmup` more; returns the figures."""
    s = build.setup(config)
    config, task, mesh = s.config, s.task, s.mesh
    with s.activate():
        if real_data:
            data = task.make_data()
            vocab_size = data.vocab_size
            it = pipeline.train_iterator(
                data.train_ds, config.batch_size, config.seed, data.batch_fn
            )
            batches = [next(it) for _ in range(8)]
        else:
            vocab_size = config.get("vocab_size", 65)
            batches = [task.fake_batch(vocab_size)]
        b = build.build(s, task.make_model(vocab_size))
        compiled = b.steps
        train_step = compiled.train  # takes host batches, as the loop feeds them
        state = compiled.place(b.init(jax.random.PRNGKey(config.seed)))

        start = time.perf_counter()
        state, metrics = train_step(state, batches[0])
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - start
        for i in range(warmup):
            state, metrics = train_step(state, batches[i % len(batches)])
        jax.block_until_ready(metrics)

        # Each step is timed to completion (median is robust to stragglers); the total run is
        # timed with async dispatch, as the train loop runs.
        times = []
        for i in range(steps):
            t = time.perf_counter()
            state, metrics = train_step(state, batches[i % len(batches)])
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t)
        start = time.perf_counter()
        for i in range(steps):
            state, metrics = train_step(state, batches[i % len(batches)])
        jax.block_until_ready(metrics)
        pipelined_s = (time.perf_counter() - start) / steps

    step_s = min(statistics.median(times), pipelined_s)
    num_params = flops.count_params(compiled.unplace(state)["params"])
    tokens_per_step = config.batch_size * config.seq_len
    flops_per_step = task.flops_per_token(num_params, vocab_size) * tokens_per_step
    peak_per_device = flops.measure_peak_flops()
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
        "compile_s": compile_s,
        "step_ms": 1000 * step_s,
        "step_ms_median_synced": 1000 * statistics.median(times),
        "step_ms_pipelined": 1000 * pipelined_s,
        "tokens_per_sec": tokens_per_step / step_s,
        "tokens_per_sec_per_device": tokens_per_step / step_s / n,
        "model_flops_per_step": flops_per_step,
        "peak_flops": peak_per_device * n,
        "peak_flops_per_device": peak_per_device,
        "mfu": flops_per_step / step_s / (peak_per_device * n),
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
