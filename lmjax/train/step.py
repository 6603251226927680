"""Optimizer and the pure train / eval steps. The loop jits them with shardings and donation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

if TYPE_CHECKING:
    import flax.linen as nn

    from lmjax.tasks.base import Batch, MetricSums, Outputs, Params, Task

# The train state: {"step", "params", "opt_state", "rng"}.
State = dict[str, Any]


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0, then cosine decay to `min_learning_rate` at the last step."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=max(config.num_train_steps, config.warmup_steps + 1),
        end_value=config.min_learning_rate,
    )


# The embedding tables' parameter names: token, position and (BERT) token-type embeddings.
EMBEDDING_TABLES = ("embedding", "pos_embed", "type_embed")


def _decay_mask(decay_embeddings):
    """Weight decay on matmul kernels (and every embedding table if asked: BERT and GPT-2 decay
    all three), never on biases or LayerNorm."""
    suffixes = ("kernel", *EMBEDDING_TABLES) if decay_embeddings else ("kernel",)

    def decayed(path, _):
        return any(str(getattr(k, "key", "")).endswith(suffixes) for k in path)

    return lambda params: jax.tree_util.tree_map_with_path(decayed, params)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    opt = config.optimizer
    return optax.chain(
        optax.clip_by_global_norm(opt.grad_clip_norm),
        optax.adamw(
            learning_rate_schedule(config),
            b1=opt.b1,
            b2=opt.b2,
            eps=opt.eps,
            weight_decay=opt.weight_decay,
            mask=_decay_mask(opt.decay_embeddings),
        ),
    )


def make_train_step(
    config: ml_collections.ConfigDict,
    task: Task,
    model: nn.Module,
    tx: optax.GradientTransformation,
    axis_name: str | None = None,
) -> Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]:
    """Returns `train_step(state, batch) -> (state, metrics)`; state is a dict of arrays.

    With `grad_accum_steps` = M the batch is split into M micro-batches whose gradients are
    summed in a `lax.scan`; every part is normalised by the whole batch's loss counts
    (`task.loss_counts`), so the update equals one step on the whole batch. Under `jax.pmap`
    (`axis_name` set) each device holds a part of the batch in the same way and the gradients
    are summed with `lax.psum`.
    """
    accum = config.grad_accum_steps

    def grads_and_metrics(params, batch, rng, counts):
        def loss_fn(p):
            loss, metrics = task.loss_fn(model, p, batch, rng, train=True, counts=counts)
            return loss, {"loss": loss, **metrics}

        return jax.grad(loss_fn, has_aux=True)(params)

    def train_step(state, batch):
        rng = jax.random.fold_in(state["rng"], state["step"])
        counts = task.loss_counts(batch)
        if axis_name is not None:  # this device's part of the batch; counts of the whole
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
            counts = jax.lax.psum(counts, axis_name)
        if accum == 1:
            grads, metrics = grads_and_metrics(state["params"], batch, rng, counts)
        else:
            # Micro-batch i takes rows i, i + M, i + 2M, ...: each keeps the batch's sharding.
            micro = jax.tree.map(
                lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1),
                batch,
            )

            def add_micro_batch(total, xs):
                i, micro_batch = xs
                part = grads_and_metrics(
                    state["params"], micro_batch, jax.random.fold_in(rng, i), counts
                )
                return jax.tree.map(jnp.add, total, part), None

            zeros = jax.tree.map(
                jnp.zeros_like,
                jax.eval_shape(
                    grads_and_metrics,
                    state["params"],
                    jax.tree.map(lambda x: x[0], micro),
                    rng,
                    counts,
                ),
            )
            (grads, metrics), _ = jax.lax.scan(add_micro_batch, zeros, (jnp.arange(accum), micro))
        if axis_name is not None:
            grads, metrics = jax.lax.psum((grads, metrics), axis_name)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = dict(state, step=state["step"] + 1, params=params, opt_state=opt_state)
        return new_state, {**metrics, "grad_norm": optax.tree.norm(grads)}

    return train_step


def make_eval_step(
    task: Task, model: nn.Module
) -> Callable[[Params, Batch], tuple[MetricSums, Outputs]]:
    """Returns `eval_step(params, batch) -> ({name: (sum, count)}, outputs)`: the sums over the
    batch, and the task's per-example outputs with the batch's `eval_weight` (none if the task
    has none)."""

    def eval_step(params, batch):
        sums, outputs = task.eval_metrics(model, params, batch)
        if outputs:
            outputs = {**outputs, "eval_weight": batch["eval_weight"]}
        return sums, outputs

    return eval_step


def average(metric_sums: MetricSums) -> dict[str, float]:
    """{name: (sum, count)} accumulated over batches → {name: sum / count}."""
    return {k: float(s) / max(float(c), 1.0) for k, (s, c) in metric_sums.items()}


def accumulate(total: MetricSums | None, new: MetricSums) -> MetricSums:
    if total is None:
        return new
    return {k: (total[k][0] + new[k][0], total[k][1] + new[k][1]) for k in total}


def init_state(
    task: Task,
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    example_batch: Batch,
) -> State:
    """Fresh train state (params still carry their logical-axis boxes)."""
    params_rng, state_rng = jax.random.split(rng)
    return new_state(task.init_params(model, params_rng, example_batch), tx, state_rng)


def new_state(params: Params, tx: optax.GradientTransformation, rng: jax.Array) -> State:
    """The train state at step 0 of `params`: {step, params, opt_state, rng}."""
    step = jnp.zeros((), jnp.int32)
    return {"step": step, "params": params, "opt_state": tx.init(params), "rng": rng}
