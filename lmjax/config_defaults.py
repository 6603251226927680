"""Config blocks every experiment shares, so configs/*.py show only what they choose."""

import ml_collections


def add_parallelism(config):
    """Mesh axis sizes (product = device count, -1 takes the rest) and the map from the model's
    logical axis names to mesh axes: data parallelism by default, FSDP over `fsdp`, Megatron-style
    tensor parallelism over `tensor`."""
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    config.use_pmap = False  # jax.pmap data parallelism (replicated state) instead of the mesh
    config.grad_accum_steps = 1  # split each batch into this many micro-batches (same update)
    config.logical_axis_rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("mlp", "tensor"),
        ("vocab", "tensor"),
        ("length", None),
        ("kv", None),
    )
    return config


def shrink_for_test(config):
    """The `:test` preset: a handful of steps that log, eval and checkpoint, for CI."""
    config.num_train_steps = 6
    config.warmup_steps = 2
    config.log_every_steps = 2
    config.eval_every_steps = 3
    config.eval_steps = 2
    config.checkpoint_every_steps = 3
    return config
