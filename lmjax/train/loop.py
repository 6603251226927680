"""The train loop: mesh → data → model → state (restore or init) → steps, logs, evals, checkpoints.

Restore order: the latest checkpoint in `WORKDIR/checkpoints` if there is one; else a fresh init,
with the weights it shares with `config.init_from`'s latest checkpoint loaded (fine-tuning).
"""

import functools
import json
import math
import os
import signal
import time

import jax
import numpy as np
from absl import logging

from lmjax import tasks
from lmjax.data import pipeline
from lmjax.train import checkpoint, flops, parallel, step
from lmjax.train.metrics import MetricWriter, format_duration


def setup(config, devices=None):
    """Task, mesh and axis rules: what a run needs first, shared by train, sample and benchmark."""
    task = tasks.get_task(config.task)
    mesh = parallel.make_mesh(config.mesh, devices)
    rules = tuple(tuple(r) for r in config.logical_axis_rules)
    parallel.check_batch_size(config.batch_size, mesh, rules, config.get("grad_accum_steps", 1))
    parallel.check_model_fits_mesh(config.model, mesh, rules)
    return task, mesh, rules


def build_state(config, task, model, mesh, rules):
    """Abstract state with shardings, and a jitted init that creates the state already sharded."""
    tx = step.make_optimizer(config)
    example = task.fake_batch(config, model.cfg.vocab_size)
    init = functools.partial(step.init_state, task, model, tx, example_batch=example)
    boxed = jax.eval_shape(init, jax.random.PRNGKey(0))
    shardings = parallel.state_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        parallel.unbox(boxed),
        shardings,
    )
    init_sharded = jax.jit(lambda rng: parallel.unbox(init(rng)), out_shardings=shardings)
    return tx, abstract, shardings, init_sharded


def compile_steps(config, task, model, tx, shardings, mesh, rules):
    """jit over the mesh (the state sharded as the rules say); or pmap if `config.use_pmap`."""
    if config.get("use_pmap"):
        return parallel.pmap_steps(config, task, model, tx, shardings, mesh)
    batch_sharding = parallel.batch_sharding(mesh, rules)
    train_step = jax.jit(
        step.make_train_step(config, task, model, tx),
        in_shardings=(shardings, batch_sharding),
        out_shardings=(shardings, parallel.replicated(mesh)),
        donate_argnums=0,
    )
    eval_step = jax.jit(
        step.make_eval_step(config, task, model),
        in_shardings=(shardings["params"], batch_sharding),
        out_shardings=parallel.replicated(mesh),
    )
    return parallel.Steps(
        train=lambda state, b: train_step(state, parallel.to_global_batch(b, batch_sharding)),
        eval=lambda state, b: eval_step(
            state["params"], parallel.to_global_batch(b, batch_sharding)
        ),
    )


class _Preemption:
    """Turns SIGTERM into a flag the loop checks after each step (save, then exit)."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint, then exiting")
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def save_config(config, workdir):
    """The resolved config as WORKDIR/config.json (what `load_config` reads); process 0 writes."""
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


def evaluate(steps, state, eval_batches):
    total = None
    for batch in eval_batches:
        total = step.accumulate(total, steps.eval(state, batch))
    return {f"eval/{k}": v for k, v in step.average(jax.device_get(total)).items()}


def train_and_evaluate(config, workdir, devices=None):
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns last metrics.

    `devices`: the mesh's devices (default: all of them)."""
    os.makedirs(workdir, exist_ok=True)
    task, mesh, rules = setup(config, devices)
    with parallel.use_mesh(config, mesh, rules):
        return _train(config, workdir, task, mesh, rules)


def _train(config, workdir, task, mesh, rules):
    #### Data
    data = task.make_data(config, workdir)
    save_config(config, workdir)
    if jax.process_index() == 0:
        data.tokenizer.save(workdir)
    train_iter = pipeline.train_iterator(
        data.train_ds, config.batch_size, config.seed, data.batch_fn
    )
    eval_batches = pipeline.eval_batches(data.eval_ds, config.batch_size, config.eval_steps)

    #### Model and state
    model = task.make_model(config, data.vocab_size)
    tx, abstract_state, shardings, init_sharded = build_state(config, task, model, mesh, rules)
    steps = compile_steps(config, task, model, tx, shardings, mesh, rules)
    manager = checkpoint.make_manager(workdir, config.checkpoint_max_to_keep)
    writer = MetricWriter(workdir)
    latest = manager.latest_step()
    if latest is not None:
        state, data_state = checkpoint.restore(manager, latest, abstract_state)
        train_iter.set_state(data_state)
        writer.truncate_after(latest)
        logging.info("resumed from %s/%d", manager.directory, latest)
    else:
        state = init_sharded(jax.random.PRNGKey(config.seed))
        if config.get("init_from"):  # fine-tuning: shared weights from a pretraining workdir
            state["params"], copied, fresh = checkpoint.load_pretrained_params(
                config.init_from, state["params"], skip=config.get("init_from_skip", ())
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
        task.flops_per_token(config, num_params, data.vocab_size)
        * config.batch_size
        * config.seq_len
    )
    peak_flops = flops.measure_peak_flops() * mesh.devices.size
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
                eval_metrics = evaluate(steps, state, eval_batches)
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


def load_config(workdir):
    """The resolved config a run saved in its workdir, as a ConfigDict."""
    import ml_collections

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config.json in {workdir}: is it a training workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))
