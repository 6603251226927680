"""Device mesh, logical-axis rules and shardings.

The model names its axes (`batch`, `embed`, `heads`, ...); `config.logical_axis_rules` maps those
names to the mesh axes `data`, `fsdp` and `tensor`. Changing the parallelism is a config change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from lmjax import errors
from lmjax.sharding import MESH_AXES, mesh_axes_size

# (logical axis name, mesh axis or axes or None), as `config.logical_axis_rules`
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Mesh of shape (data, fsdp, tensor) from config; one size may be -1 (the rest)."""
    devices = jax.devices() if devices is None else devices
    sizes = [int(mesh_config[a]) for a in MESH_AXES]
    named = ", ".join(f"{a}={n}" for a, n in zip(MESH_AXES, sizes, strict=True))
    if sizes.count(-1) > 1:
        raise errors.InputError(f"at most one mesh axis may be -1, got mesh {named}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise errors.InputError(
                f"mesh {named}: {len(devices)} devices do not divide by {known}"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise errors.InputError(
            f"mesh {named} needs {math.prod(sizes)} devices, but {len(devices)} are available"
        )
    return jax.make_mesh(
        tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(sizes), devices=devices
    )


def logical_axis_size(name: str, mesh: Mesh, rules: Rules) -> int:
    """Number of shards `rules` split the logical axis `name` into on `mesh`."""
    return mesh_axes_size(mesh, nn.logical_to_mesh_axes((name,), rules)[0])


def check_batch_size(batch_size: int, mesh: Mesh, rules: Rules, grad_accum_steps: int = 1) -> None:
    n = logical_axis_size("batch", mesh, rules)
    if batch_size % n:
        raise errors.InputError(
            f"batch_size {batch_size} does not divide over the {n} data-parallel devices "
            f"(mesh {dict(mesh.shape)}); use a multiple of {n}"
        )
    if batch_size % (n * grad_accum_steps):
        raise errors.InputError(
            f"batch_size {batch_size} does not split into grad_accum_steps={grad_accum_steps} "
            f"micro-batches over {n} data-parallel devices; use a multiple of "
            f"{n * grad_accum_steps}"
        )


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), rules))


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules) -> Any:
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
            if size % mesh_axes_size(mesh, axes):
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


def check_model_fits_mesh(model_config: Mapping[str, Any], mesh: Mesh, rules: Rules) -> None:
    """Start-up check: tensor parallelism splits whole attention heads and MLP columns."""
    for name, logical in (("num_heads", "heads"), ("mlp_dim", "mlp")):
        n = logical_axis_size(logical, mesh, rules)
        if model_config[name] % n:
            raise errors.InputError(
                f"model.{name}={model_config[name]} does not divide over the {n} devices that "
                f"'{logical}' is sharded on (mesh {dict(mesh.shape)}); choose a mesh.tensor "
                f"that divides {model_config[name]}"
            )


def single_device_mesh() -> Mesh:
    """A one-device mesh (the first device): loading a model for sampling or export."""
    return make_mesh({a: 1 for a in MESH_AXES}, jax.devices()[:1])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def to_global_batch(
    local_batch: Mapping[str, np.ndarray], sharding: NamedSharding
) -> dict[str, jax.Array]:
    """Per-process numpy batch → global jax arrays sharded on the batch dimension."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def unbox(tree: Any) -> Any:
    """Strips the logical-axis boxes (`nn.Partitioned`) from a params/state tree."""
    return jax.tree.map(lambda x: x.value if _is_box(x) else x, tree, is_leaf=_is_box)


def _is_box(x):
    return isinstance(x, nn.Partitioned)
