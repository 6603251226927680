"""Optimizer and the pure train / eval steps. The loop jits them with shardings and donation."""

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(config):
    """Linear warmup from 0, then cosine decay to `min_learning_rate` at the last step."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=max(config.num_train_steps, config.warmup_steps + 1),
        end_value=config.min_learning_rate,
    )


def _decay_mask(decay_embeddings):
    """Weight decay on matmul kernels (and embeddings if asked), never on biases or LayerNorm."""
    suffixes = ("kernel", "embedding", "pos_embed") if decay_embeddings else ("kernel",)

    def decayed(path, _):
        return any(str(getattr(k, "key", "")).endswith(suffixes) for k in path)

    return lambda params: jax.tree_util.tree_map_with_path(decayed, params)


def make_optimizer(config):
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


def make_train_step(config, task, model, tx):
    """Returns `train_step(state, batch) -> (state, metrics)`; state is a dict of arrays."""

    def train_step(state, batch):
        rng = jax.random.fold_in(state["rng"], state["step"])

        def loss_fn(params):
            return task.loss_fn(config, model, params, batch, rng=rng, train=True)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = dict(state, step=state["step"] + 1, params=params, opt_state=opt_state)
        metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads)}
        return new_state, metrics

    return train_step


def make_eval_step(config, task, model):
    """Returns `eval_step(params, batch) -> {name: (sum, count)}`, summed over the batch."""

    def eval_step(params, batch):
        return task.eval_metrics(config, model, params, batch)

    return eval_step


def average(metric_sums):
    """{name: (sum, count)} accumulated over batches → {name: sum / count}."""
    return {k: float(s) / max(float(c), 1.0) for k, (s, c) in metric_sums.items()}


def accumulate(total, new):
    if total is None:
        return new
    return {k: (total[k][0] + new[k][0], total[k][1] + new[k][1]) for k in total}


def init_state(task, model, tx, rng, example_batch):
    """Fresh train state (params still carry their logical-axis boxes)."""
    params_rng, state_rng = jax.random.split(rng)
    params = task.init_params(model, params_rng, example_batch)
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": tx.init(params),
        "rng": state_rng,
    }
