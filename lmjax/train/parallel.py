"""Device mesh, logical-axis rules and shardings.

The model names its axes (`batch`, `embed`, `heads`, ...); `config.logical_axis_rules` maps those
names to the mesh axes `data`, `fsdp` and `tensor`. Changing the parallelism is a config change.
"""

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from lmjax.train import step

MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(mesh_config, devices=None):
    """Mesh of shape (data, fsdp, tensor) from config; one size may be -1 (the rest)."""
    devices = jax.devices() if devices is None else devices
    sizes = [int(mesh_config[a]) for a in MESH_AXES]
    named = ", ".join(f"{a}={n}" for a, n in zip(MESH_AXES, sizes, strict=True))
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got mesh {named}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"mesh {named}: {len(devices)} devices do not divide by {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh {named} needs {math.prod(sizes)} devices, but {len(devices)} are available"
        )
    return jax.make_mesh(
        tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(sizes), devices=devices
    )


@contextlib.contextmanager
def use_mesh(config, mesh, rules):
    """The context steps run in: the mesh and the logical-axis rules (which turn the model's
    `with_logical_constraint`s into sharding constraints); none of it for the pmap path, where
    the constraints would refer to mesh axes that pmap does not have."""
    if config.get("use_pmap"):
        yield
    else:
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            yield


def _axes_size(mesh, axes):
    """Number of devices along mesh axes `axes` (None, one name, or a tuple of names)."""
    if axes is None:
        return 1
    return math.prod(mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,)))


def logical_axis_size(name, mesh, rules):
    """Number of shards `rules` split the logical axis `name` into on `mesh`."""
    return _axes_size(mesh, nn.logical_to_mesh_axes((name,), rules)[0])


def check_batch_size(batch_size, mesh, rules, grad_accum_steps=1):
    n = logical_axis_size("batch", mesh, rules)
    if batch_size % n:
        raise ValueError(
            f"batch_size {batch_size} does not divide over the {n} data-parallel devices "
            f"(mesh {dict(mesh.shape)}); use a multiple of {n}"
        )
    if batch_size % (n * grad_accum_steps):
        raise ValueError(
            f"batch_size {batch_size} does not split into grad_accum_steps={grad_accum_steps} "
            f"micro-batches over {n} data-parallel devices; use a multiple of "
            f"{n * grad_accum_steps}"
        )


def batch_sharding(mesh, rules):
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), rules))


def state_shardings(abstract_state, mesh, rules):
    """NamedShardings for a boxed abstract state: logical names → mesh axes, else replicated.

    A dimension that its mesh axes do not divide (a 65-character vocabulary over tensor=4) is
    replicated instead, with a warning naming it; heads and MLP width are checked at start-up.
    """
    logical_specs = nn.get_partition_spec(abstract_state)
    shardings = nn.logical_to_mesh_sharding(logical_specs, mesh, rules)
    replicated_dims = []

    def fit(path, leaf, sharding):
        shape = getattr(leaf, "value", leaf).shape
        spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
        for i, (size, axes) in enumerate(zip(shape, spec, strict=True)):
            if size % _axes_size(mesh, axes):
                replicated_dims.append(
                    f"{jax.tree_util.keystr(path, simple=True, separator='/')}"
                    f" dim {i} ({size} over {axes})"
                )
                spec[i] = None
        return NamedSharding(mesh, PartitionSpec(*spec))

    shardings = jax.tree_util.tree_map_with_path(fit, abstract_state, shardings, is_leaf=_is_box)
    if replicated_dims:
        logging.warning(
            "replicated where the mesh does not divide the dimension: %s",
            "; ".join(replicated_dims),
        )
    return shardings


def check_model_fits_mesh(model_config, mesh, rules):
    """Start-up check: tensor parallelism splits whole attention heads and MLP columns."""
    for name, logical in (("num_heads", "heads"), ("mlp_dim", "mlp")):
        n = logical_axis_size(logical, mesh, rules)
        if model_config[name] % n:
            raise ValueError(
                f"model.{name}={model_config[name]} does not divide over the {n} devices that "
                f"'{logical}' is sharded on (mesh {dict(mesh.shape)}); choose a mesh.tensor "
                f"that divides {model_config[name]}"
            )


def replicated(mesh):
    return NamedSharding(mesh, PartitionSpec())


def to_global_batch(local_batch, sharding):
    """Per-process numpy batch → global jax arrays sharded on the batch dimension."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def unbox(tree):
    """Strips the logical-axis boxes (`nn.Partitioned`) from a params/state tree."""
    return jax.tree.map(lambda x: x.value if _is_box(x) else x, tree, is_leaf=_is_box)


def _is_box(x):
    return isinstance(x, nn.Partitioned)


@dataclasses.dataclass(frozen=True)
class Steps:
    """The compiled steps, taking this process's numpy batches, and where the state lives."""

    train: Callable  # (state, host_batch) -> (state, metrics)
    eval: Callable  # (state, host_batch) -> {name: (sum, count)}
    place: Callable = lambda state: state  # init/restored state -> the layout `train` takes
    unplace: Callable = lambda state: state  # and back (for checkpoints)


def pmap_steps(config, task, model, tx, shardings, mesh):
    """The `config.use_pmap` path: the state replicated on every local device, each device a
    slice of the batch, gradients and metrics summed with `lax.psum` (see `make_train_step`)."""
    if any(not s.is_fully_replicated for s in jax.tree.leaves(shardings)):
        raise ValueError(
            "use_pmap=True replicates the state: it needs mesh.fsdp=1 and mesh.tensor=1 "
            "(use the mesh path for FSDP and tensor parallelism)"
        )
    devices = list(mesh.devices.flat)
    n = sum(d.process_index == jax.process_index() for d in devices)  # this process's share
    pmap = functools.partial(jax.pmap, axis_name="devices", devices=devices)
    train_step = pmap(
        step.make_train_step(config, task, model, tx, axis_name="devices"), donate_argnums=0
    )
    eval_metrics = step.make_eval_step(config, task, model)
    eval_step = pmap(lambda params, b: jax.lax.psum(eval_metrics(params, b), "devices"))

    def split(batch):  # [B, ...] -> [devices, B / devices, ...]
        return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)

    def first(tree):  # one device's copy of a replicated tree
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

    def train(state, batch):
        state, metrics = train_step(state, split(batch))
        return state, jax.tree.map(lambda x: x[0], metrics)

    def place(state):
        return pmap(lambda x: x)(jax.tree.map(lambda x: np.stack([x] * n), first(state)))

    def unplace(state):
        return jax.tree.map(
            lambda x, s: jax.make_array_from_process_local_data(s, x), first(state), shardings
        )

    return Steps(
        train=train,
        eval=lambda state, b: jax.tree.map(lambda x: x[0], eval_step(state["params"], split(b))),
        place=place,
        unplace=unplace,
    )
