"""The train loop: mesh → data → model → state (restore or init) → steps, logs, evals, checkpoints.

Restore order: the newest checkpoint in `WORKDIR/checkpoints` that restores (damaged newer ones are
moved to `WORKDIR/checkpoints_set_aside`, with a warning); else a fresh init, with the weights it
shares with `config.init_from`'s latest checkpoint loaded (fine-tuning).
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from lmjax import errors, flops, tasks
from lmjax import workdir as workdir_lib
from lmjax.data import pipeline
from lmjax.train import build, checkpoint, step
from lmjax.train.metrics import MetricWriter, format_duration

# In a run of several processes the stop request is agreed every STOP_SYNC_EVERY steps (one
# small all-gather, a host sync): a signal reaches the hosts at different steps, or only one.
STOP_SYNC_EVERY = 10


class _StopRequest:
    """SIGTERM (preemption, `scancel`, a sweep stopping) and SIGINT (Ctrl-C) become a request
    the loop acts on after a step: save a checkpoint, then stop. A second Ctrl-C stops at once.
    Signal handlers belong to the main thread: elsewhere (a notebook's worker) none is set."""

    NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}

    def __init__(self):
        self.by = None  # the first signal's name, once one came
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.NAMES}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.by is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if self.by is None:
            self.by = self.NAMES[signum]
            again = " (Ctrl-C again stops at once)" if signum == signal.SIGINT else ""
            logging.warning(
                "%s: saving a checkpoint after this step, then stopping%s", self.by, again
            )

    def agreed(self, s: int) -> str | None:
        """Who asked every process to stop after step `s` (None: go on). One process reads its
        own flag; several stop together at the first multiple of STOP_SYNC_EVERY after any one
        of them was signalled (a process that saw nothing stops as "another process")."""
        if jax.process_count() == 1:
            return self.by
        if s % STOP_SYNC_EVERY:
            return None
        flags = multihost_utils.process_allgather(np.int32(self.by is not None))
        return (self.by or "another process") if np.any(flags) else None

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


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
    """Trains `config` in `workdir`, resuming from its newest checkpoint; returns last metrics.

    One run per workdir: it holds the workdir's lock from the end of the checks to its end.
    Nothing is written to `workdir` until the inputs have checked out: the data, the model, the
    workdir's saved config, then its checkpoint (or init_from's).
    `devices`: the mesh's devices (default: all of them)."""
    workdir_lib.check_writable(workdir)
    if jax.process_index() == 0:
        workdir_lib.check_unlocked(workdir)  # a second launch stops before preparing any data
    s = build.setup(config, devices, workdir=workdir)
    with s.activate():
        data, train_iter, eval_batches, b = _prepare(s, workdir)
        with workdir_lib.lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
            return _train(s, workdir, data, train_iter, eval_batches, b)


def _prepare(s: build.Setup, workdir: str) -> tuple[pipeline.TaskData, object, list, build.Built]:
    """The data, its iterators and the model's abstract state: what checks the inputs, before
    anything is written to the workdir."""
    config, task = s.config, s.task
    workdir_lib.check_fits(config, workdir)  # the saved config.json, when resuming
    # Only a workdir with a checkpoint keeps its tokenizer: one saved by a start that failed
    # before its first checkpoint may not fit this run's data.
    resuming = workdir_lib.latest_step(workdir) is not None
    data = task.make_data(workdir if resuming else None)
    train_iter = pipeline.train_iterator(
        data.train_ds, config.batch_size, config.seed, data.batch_fn
    )
    eval_batches = pipeline.eval_batches(data.eval_ds, config.batch_size, config.eval_steps)
    return data, train_iter, eval_batches, build.build(s, task.make_model(data.vocab_size))


def _train(
    s: build.Setup,
    workdir: str,
    data: pipeline.TaskData,
    train_iter: object,
    eval_batches: list,
    b: build.Built,
) -> dict[str, float]:
    config, task, steps = s.config, s.task, b.steps
    manager = checkpoint.make_manager(workdir, config.checkpoint_max_to_keep)

    #### State: the newest checkpoint that restores, else a fresh init (+ init_from's weights)
    restored = checkpoint.restore_newest(manager, b.abstract_state)
    if restored is not None:
        latest, state, data_state = restored
        train_iter.set_state(data_state)
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
    # The checkpoint or init_from fits the config too: the run now writes its workdir.
    if jax.process_index() == 0:
        workdir_lib.save_config(config, workdir)
        workdir_lib.save_kernels({k: dataclasses.asdict(c) for k, c in s.kernels.items()}, workdir)
        workdir_lib.save_tokenizer(data.tokenizer, workdir)
    writer = MetricWriter(workdir)
    first_step = int(state["step"])
    writer.truncate_after(first_step)  # records of steps that run again (or of a stale start)
    num_params = flops.count_params(state["params"])
    state = steps.place(state)
    flops_per_step = (
        task.flops_per_token(num_params, data.vocab_size) * config.batch_size * config.seq_len
    )
    # In the compute dtype, as benchmark.py: a bf16 run on a CPU against its bf16 matmul peak.
    peak_flops = flops.measure_peak_flops(jax.numpy.dtype(config.model.dtype)) * s.mesh.devices.size
    schedule = step.learning_rate_schedule(config)
    logging.info("model: %s parameters (position embeddings excluded)", f"{num_params:,}")
    for key, choice in s.kernels.items():  # what auto took on these devices (kernels.json too)
        logging.info("model.%s: %s (%s)", key, choice.impl, choice.reason)

    #### Train
    stop, stopped_by = _StopRequest(), None
    pending = []  # per-step device metrics since the last log: fetched in one sync
    last_metrics = {}
    timer_start, timer_step = None, first_step
    try:
        for s in range(first_step + 1, config.num_train_steps + 1):
            state, metrics = steps.train(state, next(train_iter))
            checkpoint.check_saves(manager)  # a background save that failed stops the run now
            pending.append((s, metrics))
            if timer_start is None:  # exclude compilation from throughput
                jax.block_until_ready(metrics)
                timer_start, timer_step = time.perf_counter(), s
            is_last = s == config.num_train_steps

            if s % config.log_every_steps == 0 or is_last:
                host = _check_finite(pending, manager)
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
                _write_metrics(writer, manager, s, last_metrics)
                _log_line(s, config.num_train_steps, last_metrics, step_time)
                timer_start, timer_step = time.perf_counter(), s

            if s % config.eval_every_steps == 0 or is_last:
                eval_metrics = evaluate(task, steps, state, eval_batches)
                _write_metrics(writer, manager, s, eval_metrics)
                last_metrics.update(eval_metrics)
                logging.info(
                    "step %d eval: %s",
                    s,
                    ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()),
                )
                timer_start, timer_step = time.perf_counter(), s

            stopped_by = stop.agreed(s)  # read once: a signal may arrive at any moment
            if stopped_by or is_last or s % config.checkpoint_every_steps == 0:
                saved = steps.unplace(state)
                _check_finite(pending, manager, saved, s)  # never save a non-finite state
                checkpoint.save(manager, s, saved, train_iter.get_state(), force=True)
                timer_start, timer_step = time.perf_counter(), s  # keep saves out of tokens/s
            if stopped_by:
                break
    finally:
        writer.close()
        stop.restore()
        checkpoint.finish(manager)
    if stopped_by:
        message = (
            f"stopped by {stopped_by} after step {s} (checkpoint saved): rerun the same command "
            "to resume"
        )
        if stopped_by == "Ctrl-C":
            raise errors.Interrupted(message)
        logging.warning("%s", message)
    return last_metrics


def _write_metrics(writer: MetricWriter, manager: Any, s: int, metrics: dict) -> None:
    """`writer.write`; a metrics.jsonl that cannot be written (a full disk) stops the run with
    one line, as a failed checkpoint save does."""
    try:
        writer.write(s, metrics)
    except OSError as e:
        raise errors.SaveFailed(
            f"writing the metrics of step {s} failed: {checkpoint.reason(e)}; "
            f"{checkpoint.last_good(manager)} once that is fixed"
        ) from e


def _check_finite(pending, manager, state=None, s=None):
    """The fetched `pending` metrics; raises Diverged at the first step whose loss or gradient
    norm is not finite, or when `state`, about to be saved after step `s`, holds a value that
    is not finite (the update of a step with a finite loss can overflow the parameters)."""
    host = jax.device_get(pending)
    for at, m in host:
        bad = [f"{k} is {float(m[k])}" for k in ("loss", "grad_norm") if not np.isfinite(m[k])]
        if bad:
            # A step's loss and gradient depend only on the state it starts from (and its batch):
            # from a checkpoint of that state, every rerun fails here again, whatever its
            # learning rate. Set it aside, so that the rerun resumes from the one before.
            if checkpoint.latest_saved(manager) == at - 1:
                checkpoint.set_aside(manager, at - 1, f"the state step {at} diverged from")
            raise _diverged(f"{' and '.join(bad)} at step {at}", manager)
    if state is not None and not checkpoint.all_finite(state):
        raise _diverged(f"the parameters or optimizer state are not finite after step {s}", manager)
    return host


def _diverged(what, manager):
    return errors.Diverged(
        f"{what}; stopping (nothing that is not finite was saved): {checkpoint.last_good(manager)}"
        " with a lower learning_rate, more warmup_steps, or model.dtype=float32"
    )


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
