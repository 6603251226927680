"""Orbax checkpoints in `WORKDIR/checkpoints/<step>`: the train state and the data position.

A checkpoint holds two items: `state` (params, optimizer state, step, rng) and `data` (the
grain iterator's state as JSON). Restoring both makes a resumed run the same run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import orbax.checkpoint as ocp

from lmjax import workdir as workdir_lib


def make_manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=True
    )
    return ocp.CheckpointManager(
        workdir_lib.checkpoint_dir(workdir),
        options=options,
        item_handlers={
            "state": ocp.StandardCheckpointHandler(),
            "data": ocp.JsonCheckpointHandler(),
        },
    )


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: dict[str, Any],
    data_state: Any,
    force: bool = False,
) -> bool:
    """Starts an async save; `manager.wait_until_finished()` blocks until it is on disk."""
    return manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
        ),
        force=force,
    )


def check_compatible(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> None:
    """Raises ValueError naming the first parameter whose saved shape differs from the config's."""
    saved = manager.item_metadata(step)["state"]
    saved_flat = dict(_flatten(saved))
    # Parameters first, so the error names a weight rather than its optimizer moment.
    targets = sorted(_flatten(abstract_state), key=lambda kv: not kv[0].startswith("params/"))
    for name, target in targets:
        if name not in saved_flat:
            raise ValueError(
                f"checkpoint {manager.directory}/{step} has no {name} (shape {target.shape}) "
                "that the config's model needs: the config does not fit the checkpoint"
            )
        if tuple(saved_flat[name].shape) != tuple(target.shape):
            raise ValueError(
                f"checkpoint {manager.directory}/{step} does not fit the config: {name} has "
                f"shape {tuple(saved_flat[name].shape)} in the checkpoint and "
                f"{tuple(target.shape)} in the model built from the config"
            )
    extra = sorted(set(saved_flat) - {n for n, _ in targets})
    if extra:
        raise ValueError(
            f"checkpoint {manager.directory}/{step} has {extra[0]} that the config's model "
            "lacks: the config does not fit the checkpoint"
        )


def restore(
    manager: ocp.CheckpointManager, step: int, abstract_state: Any
) -> tuple[dict[str, Any], Any]:
    """Restores (state, data_state) onto the shardings carried by `abstract_state`."""
    check_compatible(manager, step, abstract_state)
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
        ),
    )
    return restored["state"], restored["data"]


def _flatten(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(jax.tree_util.keystr(path, simple=True, separator="/"), leaf) for path, leaf in flat]


def load_pretrained_params(
    workdir: str, params: Any, step: int | None = None, skip: Sequence[str] = ()
) -> tuple[Any, list[str], list[str]]:
    """`params` with every parameter that WORKDIR's checkpoint (the latest unless `step`) also has
    replaced by the saved one (same path, same shape, same sharding as `params`); the rest keep
    their init, as do those whose name starts with one of `skip` (e.g. "pooler/"). Only
    parameters are read, never the optimizer state.
    Returns (params, names copied, names initialised)."""
    manager = ocp.CheckpointManager(  # read-only; PyTree handler for a partial restore
        workdir_lib.checkpoint_dir(workdir),
        item_handlers={"state": ocp.PyTreeCheckpointHandler()},
    )
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    saved_meta = dict(_flatten(manager.item_metadata(step)["state"]["params"]))
    target = {}
    for name, leaf in _flatten(params):
        if name in saved_meta and not name.startswith(tuple(skip)):
            if tuple(saved_meta[name].shape) != tuple(leaf.shape):
                raise ValueError(
                    f"init_from {workdir}: params/{name} has shape {tuple(saved_meta[name].shape)}"
                    f" in the checkpoint and {tuple(leaf.shape)} in the model built from the config"
                )
            target[name] = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    # Restore only the shared parameters (a partial tree), onto this run's shardings.
    abstract = {"params": _unflatten(target)}
    restore = ocp.args.PyTreeRestore(
        abstract,
        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True,
    )
    restored = manager.restore(step, args=ocp.args.Composite(state=restore))
    saved = dict(_flatten(restored["state"]["params"]))
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [jax.tree_util.keystr(p, simple=True, separator="/") for p, _ in flat]
    leaves = [saved.get(n, leaf) for n, (_, leaf) in zip(names, flat, strict=True)]
    copied = [n for n in names if n in saved]
    return jax.tree_util.tree_unflatten(treedef, leaves), copied, sorted(set(names) - set(copied))


def _unflatten(flat):
    tree = {}
    for name, leaf in flat.items():
        node = tree
        *parents, last = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    return tree
