"""The train loop: mesh → data → model → state (restore or init) → steps, logs, evals, checkpoints.

Restore order: the latest checkpoint in `WORKDIR/checkpoints` if there is one; else a fresh init,
with the weights it shares with `config.init_from`'s latest checkpoint loaded (fine-tuning).
"""

from __future__ import annotations

import math
import signal
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from lmjax import flops, tasks
from lmjax import workdir as workdir_lib
from lmjax.data import pipeline
from lmjax.train import build, checkpoint, step
from lmjax.train.metrics import MetricWriter, format_duration


class _Preemption:
    """Turns SIGTERM into a flag the loop checks after each step (save, then exit)."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint, then exiting")
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def evaluate(
    task: tasks.Task, steps: build.Steps, state: dict, eval_batches: list
) -> dict[str, float]:
    """Sums over the eval batches, averaged; then the task's metrics over the whole eval set
    from the per-example outputs of its real rows (padding rows dropped)."""
    total, outputs = None, []
    for batch in eval_batches:
        sums, out = steps.eval(state, batch)
        total = step.accumulate(total, sums)
        if out:
            outputs.append(out)
    metrics = step.average(jax.device_get(total))
    if outputs:
        host = jax.device_get(outputs)
        whole = {k: np.concatenate([np.asarray(o[k]) for o in host]) for k in host[0]}
        real = whole.pop("eval_weight") > 0
        metrics.update(task.corpus_metrics({k: v[real] for k, v in whole.items()}))
    return {f"eval/{k}": v for k, v in metrics.items()}


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, devices: list | None = None
) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns last metrics.

    `devices`: the mesh's devices (default: all of them)."""
    s = build.setup(config, devices, workdir=workdir)  # the resolved config: config.json
    with s.activate():
        return _train(s, workdir)


def _train(s: build.Setup, workdir: str) -> dict[str, float]:
    config, task = s.config, s.task
    #### Data
    data = task.make_data(workdir)
    if jax.process_index() == 0:
        workdir_lib.save_config(config, workdir)
        workdir_lib.save_tokenizer(data.tokenizer, workdir)
    train_iter = pipeline.train_iterator(
        data.train_ds, config.batch_size, config.seed, data.batch_fn
    )
    eval_batches = pipeline.eval_batches(data.eval_ds, config.batch_size, config.eval_steps)

    #### Model and state
    b = build.build(s, task.make_model(data.vocab_size))
    steps = b.steps
    manager = checkpoint.make_manager(workdir, config.checkpoint_max_to_keep)
    writer = MetricWriter(workdir)
    latest = manager.latest_step()
    if latest is not None:
        state, data_state = checkpoint.restore(manager, latest, b.abstract_state)
        train_iter.set_state(data_state)
        writer.truncate_after(latest)
        logging.info("resumed from %s/%d", manager.directory, latest)
    else:
        state = b.init(jax.random.PRNGKey(config.seed))
        if config.init_from:  # fine-tuning: shared weights from a pretraining workdir
            state["params"], copied, fresh = checkpoint.load_pretrained_params(
                config.init_from, state["params"], skip=config.init_from_skip
            )
            logging.info(
                "init_from %s: %d tensors loaded; initialised afresh: %s",
                config.init_from,
                len(copied),
                ", ".join(fresh) or "none",
            )
    first_step = int(state["step"])
    num_params = flops.count_params(state["params"])
    state = steps.place(state)
    flops_per_step = (
        task.flops_per_token(num_params, data.vocab_size) * config.batch_size * config.seq_len
    )
    peak_flops = flops.measure_peak_flops() * s.mesh.devices.size
    schedule = step.learning_rate_schedule(config)
    logging.info("model: %s parameters (position embeddings excluded)", f"{num_params:,}")

    #### Train
    preemption = _Preemption()
    pending = []  # per-step device metrics since the last log: fetched in one sync
    last_metrics = {}
    timer_start, timer_step = None, first_step
    try:
        for s in range(first_step + 1, config.num_train_steps + 1):
            state, metrics = steps.train(state, next(train_iter))
            pending.append((s, metrics))
            if timer_start is None:  # exclude compilation from throughput
                jax.block_until_ready(metrics)
                timer_start, timer_step = time.perf_counter(), s
            is_last = s == config.num_train_steps

            if s % config.log_every_steps == 0 or is_last:
                host = _check_finite(jax.device_get(pending), manager)
                pending = []
                step_time = (time.perf_counter() - timer_start) / max(s - timer_step, 1)
                last_metrics = {  # the task's metrics (loss, ...) averaged over the interval
                    f"train/{k}": float(np.mean([m[k] for _, m in host]))
                    for k in host[0][1]
                    if k != "grad_norm"
                }
                last_metrics.update(
                    {
                        "train/learning_rate": float(schedule(s - 1)),
                        "train/grad_norm": float(host[-1][1]["grad_norm"]),
                        "train/tokens_per_sec": config.batch_size * config.seq_len / step_time,
                        "train/mfu": flops_per_step / step_time / peak_flops,
                    }
                )
                writer.write(s, last_metrics)
                _log_line(s, config.num_train_steps, last_metrics, step_time)
                timer_start, timer_step = time.perf_counter(), s

            if s % config.eval_every_steps == 0 or is_last:
                eval_metrics = evaluate(task, steps, state, eval_batches)
                writer.write(s, eval_metrics)
                last_metrics.update(eval_metrics)
                logging.info(
                    "step %d eval: %s",
                    s,
                    ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()),
                )
                timer_start, timer_step = time.perf_counter(), s

            preempted = preemption.requested  # read once: SIGTERM may arrive at any moment
            if preempted or is_last or s % config.checkpoint_every_steps == 0:
                _check_finite(jax.device_get(pending), manager)  # never save a NaN state
                saved = steps.unplace(state)
                checkpoint.save(manager, s, saved, train_iter.get_state(), force=True)
                timer_start, timer_step = time.perf_counter(), s  # keep saves out of tokens/s
            if preempted:
                logging.warning("preempted at step %d: checkpoint saved, exiting", s)
                break
    finally:
        manager.wait_until_finished()
        writer.close()
        preemption.restore()
    return last_metrics


def _check_finite(host_metrics, manager):
    for s, m in host_metrics:
        if not math.isfinite(float(m["loss"])):
            manager.wait_until_finished()
            raise FloatingPointError(
                f"loss is {float(m['loss'])} at step {s}; stopping. The last good checkpoint is "
                f"step {manager.latest_step()} in {manager.directory} (nothing later was saved). "
                "Lower learning_rate, raise warmup_steps, or use model.dtype=float32."
            )
    return host_metrics


def _log_line(s, total, m, step_time):
    eta = format_duration((total - s) * step_time)
    logging.info(
        "step %d/%d | loss %.4f | lr %.2e | %s tok/s | %.1f ms/step | MFU %.1f%% | ETA %s",
        s,
        total,
        m["train/loss"],
        m["train/learning_rate"],
        f"{m['train/tokens_per_sec']:,.0f}",
        1000 * step_time,
        100 * m["train/mfu"],
        eta,
    )
