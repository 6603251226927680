"""Orbax checkpoints in `WORKDIR/checkpoints/<step>`: the train state and the data position.

A checkpoint holds two items: `state` (params, optimizer state, step, rng) and `data` (the
grain iterator's state as JSON). Restoring both makes a resumed run the same run.

What a run can rely on: a state with a non-finite value is never saved (the loop checks with
`all_finite`); a save that fails stops the run at once (`check_saves`, `finish`) naming the last
good checkpoint; a checkpoint that does not read back (a file cut short or missing) is skipped
on restore for the one before it (`restore_newest`). A checkpoint skipped is moved to
`WORKDIR/checkpoints_set_aside/<step>`, never deleted.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from lmjax import errors
from lmjax import workdir as workdir_lib

SET_ASIDE = workdir_lib.SET_ASIDE  # WORKDIR/checkpoints_set_aside/<step>: kept, not listed


def make_manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """The run's manager: saves in the background; `checkpoints/` appears with the first save;
    the temporary folders of saves a crash cut short are removed (a run holds the workdir's
    lock, so none is another run's save in flight)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=False,
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(
        workdir_lib.checkpoint_dir(workdir),
        options=options,
        item_handlers={
            "state": ocp.StandardCheckpointHandler(),
            "data": ocp.JsonCheckpointHandler(),
        },
    )


#### Saving: never a non-finite state; a failure stops the run at once


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    floats = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in floats]))


def all_finite(tree: Any) -> bool:
    """Whether every float in `tree` (params and optimizer state) is finite: one jitted
    reduction, fetched as one bool."""
    return bool(_all_finite(tree))


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: dict[str, Any],
    data_state: Any,
    force: bool = False,
) -> bool:
    """Starts an async save (`finish` waits for it), once there is room for it on a local disk
    and a folder can be made there; raises SaveFailed when not or when the save cannot start."""
    _check_free_space(manager, step, state)
    _check_writable(manager, step)
    try:
        return manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
            ),
            force=force,
        )
    except (OSError, ValueError) as e:  # ValueError: what TensorStore raises for I/O errors
        raise _save_failed(manager, e) from e


def check_saves(manager: ocp.CheckpointManager) -> None:
    """Raises SaveFailed if a background save failed (cheap: call it after every step)."""
    try:
        manager.check_for_errors()
    except Exception as e:
        raise _save_failed(manager, e) from e


def finish(manager: ocp.CheckpointManager) -> None:
    """Waits for the saves in flight and closes the manager; raises SaveFailed if one failed."""
    try:
        manager.wait_until_finished()
    except Exception as e:
        raise _save_failed(manager, e) from e
    finally:
        manager.close()


def latest_saved(manager: ocp.CheckpointManager) -> int | None:
    """The newest checkpoint on disk, once the saves in flight are done (or failed)."""
    try:
        manager.wait_until_finished()
    except Exception:  # a failed save: the checkpoints before it stand
        pass
    manager.reload()  # a failed save may still be listed
    return manager.latest_step()


def last_good(manager: ocp.CheckpointManager) -> str:
    """Where a rerun resumes, for an error message: "the last good checkpoint is step N in DIR"."""
    step = latest_saved(manager)
    if step is None:
        return f"there is no checkpoint in {manager.directory}: a rerun starts afresh"
    return f"the last good checkpoint is step {step} in {manager.directory}: a rerun resumes there"


def _check_free_space(manager, step, state) -> None:
    directory = workdir_lib.nearest_existing(manager.directory)  # `checkpoints/`: the 1st save
    if directory is None:  # a bucket: no free-space figure
        return
    needed = sum(x.nbytes for x in jax.tree.leaves(state)) + 2**20
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise errors.SaveFailed(
            f"no space for checkpoint {step}: it needs about {needed / 1e6:,.1f} MB and "
            f"{manager.directory} has {free / 1e6:,.1f} MB free; {last_good(manager)} once "
            "there is room"
        )


def _check_writable(manager, step) -> None:
    """A step folder Orbax cannot make leaves its background threads waiting minutes for it
    after the run has stopped: a folder that cannot be written is found here first."""
    directory = workdir_lib.nearest_existing(manager.directory)
    if directory is None:  # a bucket: nothing to probe
        return
    try:
        workdir_lib.probe_folder(directory)
    except OSError as e:
        raise errors.SaveFailed(
            f"cannot save checkpoint {step}: {directory}: {e.strerror}; make it writable; "
            f"{last_good(manager)} once that is fixed"
        ) from e


def _save_failed(manager, e: BaseException) -> errors.SaveFailed:
    return errors.SaveFailed(
        f"saving a checkpoint failed: {reason(e)}; {last_good(manager)} once that is fixed"
    )


def reason(e: BaseException) -> str:
    """One line for an exception: the OS's words and the file where TensorStore names them
    (`os_error_code='28'` -> 'No space left on device'), else its innermost cause's first line."""
    text = str(e)
    code = re.search(r"os_error_code='(\d+)'", text)
    if code:
        file = re.search(r'(?:Failed writing|Error writing local file): "([^"]+)"', text)
        return os.strerror(int(code[1])) + (f" ({file[1]})" if file else "")
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f" ({e.filename})" if e.filename else "")
    while e.__cause__ is not None:
        e = e.__cause__
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    line = re.split(r" \[tensorstore_spec=| See full TensorStore details", line)[0]
    return line if len(line) <= 300 else line[:300] + "..."


#### Restoring: the newest checkpoint that restores, past damaged ones


class Damaged(Exception):
    """A checkpoint that cannot be read back (a file missing, cut short or unreadable)."""


def check_compatible(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> None:
    """Raises InputError naming the first parameter whose saved shape differs from the config's
    (and Damaged when the checkpoint's metadata cannot be read)."""
    saved_flat = dict(_flatten(_saved_state_metadata(manager, step)))
    # Parameters first, so the error names a weight rather than its optimizer moment.
    targets = sorted(_flatten(abstract_state), key=lambda kv: not kv[0].startswith("params/"))
    for name, target in targets:
        if name not in saved_flat:
            raise errors.InputError(
                f"checkpoint {manager.directory}/{step} has no {name} (shape {target.shape}) "
                "that the config's model needs: the config does not fit the checkpoint"
            )
        if tuple(saved_flat[name].shape) != tuple(target.shape):
            raise errors.InputError(
                f"checkpoint {manager.directory}/{step} does not fit the config: {name} has "
                f"shape {tuple(saved_flat[name].shape)} in the checkpoint and "
                f"{tuple(target.shape)} in the model built from the config"
            )
    extra = sorted(set(saved_flat) - {n for n, _ in targets})
    if extra:
        raise errors.InputError(
            f"checkpoint {manager.directory}/{step} has {extra[0]} that the config's model "
            "lacks: the config does not fit the checkpoint"
        )


def _saved_state_metadata(manager, step):
    try:
        saved = manager.item_metadata(step)["state"]
    except Exception as e:
        raise Damaged(f"its metadata cannot be read: {reason(e)}") from e
    if saved is None:  # Orbax reads a missing state/_METADATA as an item it cannot name
        raise Damaged("its metadata cannot be read: state/_METADATA is missing")
    return saved


def restore(
    manager: ocp.CheckpointManager, step: int, abstract_state: Any
) -> tuple[dict[str, Any], Any]:
    """Restores (state, data_state) onto the shardings carried by `abstract_state`. Raises
    InputError when the config does not fit it, Damaged when it does not read back whole."""
    check_compatible(manager, step, abstract_state)
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
            ),
        )
    except Exception as e:  # TensorStore, JSON and file errors all mean the same here
        raise Damaged(reason(e)) from e
    if not all_finite(restored["state"]):  # e.g. saved by an lmjax without the NaN guard
        raise Damaged("it holds values that are not finite (a diverged run saved it)")
    _check_step(step, restored["state"]["step"])
    return restored["state"], restored["data"]


def _check_step(folder_step: int, stored_step: Any) -> None:
    """Damaged when the step stored in a checkpoint is not its folder's: a checkpoint copied or
    renamed into another step's folder would resume as that step and be listed as newest."""
    if int(stored_step) != folder_step:
        raise Damaged(
            f"it holds the state after step {int(stored_step)}, not {folder_step} (a checkpoint "
            "copied or renamed into another step's folder)"
        )


def restore_newest(
    manager: ocp.CheckpointManager, abstract_state: Any
) -> tuple[int, dict[str, Any], Any] | None:
    """(step, state, data_state) of the newest checkpoint that restores cleanly, or None when
    there is none. Each newer one it skips is damaged: warned about with its step and reason,
    and set aside once an older one restored.
    Raises InputError when none restores (nothing moved), or when the config does not fit."""
    damaged = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state, data_state = restore(manager, step, abstract_state)
        except Damaged as e:
            logging.warning("checkpoint %s/%d is damaged: %s", manager.directory, step, e)
            damaged.append((step, str(e)))
            continue
        for bad, _ in damaged:
            set_aside(manager, bad, "damaged")
        return step, state, data_state
    if damaged:
        listed = "; ".join(f"{step}: {reason}" for step, reason in damaged)
        raise errors.InputError(
            f"no checkpoint in {manager.directory} restores ({listed}): move them out of "
            "it to start afresh, or use a new --workdir"
        )
    return None


def set_aside(manager: ocp.CheckpointManager, step: int, why: str) -> None:
    """Moves checkpoint `step` to `checkpoints_set_aside/<step>` (`<step>.2`, ... if taken) with a
    warning saying why: kept for the user, no longer restored or listed by `manager`."""
    if jax.process_index() == 0:
        aside = manager.directory.parent / SET_ASIDE
        aside.mkdir(parents=True, exist_ok=True)
        target, n = aside / str(step), 1
        while target.exists():
            n += 1
            target = aside / f"{step}.{n}"
        (manager.directory / str(step)).rename(target)
        logging.warning("moved checkpoint %d (%s) to %s", step, why, target)
    if jax.process_count() > 1:  # every process lists the checkpoints after the move
        multihost_utils.sync_global_devices(f"lmjax_set_aside_{step}")
    manager.reload()


def _flatten(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(jax.tree_util.keystr(path, simple=True, separator="/"), leaf) for path, leaf in flat]


def load_pretrained_params(
    workdir: str, params: Any, step: int | None = None, skip: Sequence[str] = ()
) -> tuple[Any, list[str], list[str]]:
    """`params` with every parameter that WORKDIR's checkpoint (the newest that reads back, past
    damaged ones, unless `step`) also has replaced by the saved one (same path, same shape, same
    sharding as `params`); the rest keep their init, as do those whose name starts with one of
    `skip` (e.g. "pooler/"). Only parameters are read, never the optimizer state, and nothing
    in WORKDIR is moved or written.
    Returns (params, names copied, names initialised)."""
    workdir_lib.check_trained(workdir, "init_from")
    manager = ocp.CheckpointManager(  # PyTree handler for a partial restore
        workdir_lib.checkpoint_dir(workdir),
        # create=False: writes nothing there (read_only=True would warn on every read)
        options=ocp.CheckpointManagerOptions(create=False),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
    )
    try:
        steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
        for i, at in enumerate(steps):
            try:
                saved = _read_params(manager, at, params, skip, workdir)
                break
            except Damaged as e:
                if i == len(steps) - 1:
                    newer = "" if step is not None or i == 0 else " (nor does any newer one)"
                    raise errors.InputError(
                        f"checkpoint {manager.directory}/{at} does not read back{newer}: {e}"
                    ) from None
                logging.warning(
                    "checkpoint %s/%d is damaged (%s): reading the one before",
                    manager.directory,
                    at,
                    e,
                )
    finally:
        manager.close()
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [jax.tree_util.keystr(p, simple=True, separator="/") for p, _ in flat]
    leaves = [saved.get(n, leaf) for n, (_, leaf) in zip(names, flat, strict=True)]
    copied = [n for n in names if n in saved]
    return jax.tree_util.tree_unflatten(treedef, leaves), copied, sorted(set(names) - set(copied))


def _read_params(manager, step, params, skip, workdir) -> dict[str, Any]:
    """{name: array} of the parameters of checkpoint `step` that `params` shares (not under
    `skip`); InputError when one's shape differs, Damaged when it does not read back."""
    try:
        saved_meta = dict(_flatten(manager.item_metadata(step)["state"]["params"]))
    except Exception as e:
        raise Damaged(f"its metadata cannot be read: {reason(e)}") from e
    target = {}
    for name, leaf in _flatten(params):
        if name in saved_meta and not name.startswith(tuple(skip)):
            if tuple(saved_meta[name].shape) != tuple(leaf.shape):
                raise errors.InputError(
                    f"init_from {workdir}: params/{name} has shape {tuple(saved_meta[name].shape)}"
                    f" in the checkpoint and {tuple(leaf.shape)} in the model built from the config"
                )
            target[name] = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    # Restore only the shared parameters (a partial tree), onto this run's shardings, and the
    # step (to the host), which must be the folder's.
    abstract = {"params": _unflatten(target)}
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
    restore_args["step"] = ocp.RestoreArgs(restore_type=np.ndarray)
    abstract["step"] = np.zeros((), np.int32)
    restore = ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=True)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=restore))
    except Exception as e:
        raise Damaged(reason(e)) from e
    _check_step(step, restored["state"]["step"])
    return dict(_flatten(restored["state"]["params"]))


def _unflatten(flat):
    tree = {}
    for name, leaf in flat.items():
        node = tree
        *parents, last = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    return tree
