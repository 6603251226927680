"""Every point of a sweep checked against its config before anything runs: the config each
point's train command will build, through ml_collections' own flag parser."""

from __future__ import annotations

import difflib
import os

from lmjax import config_checks, errors
from lmjax import workdir as workdir_lib
from lmjax.config_files import absolute_config_path, load_config, resolve_config_path
from lmjax.sweep.spec import FINETUNE, Point, load_sweep_file, point_name


def check_overrides(base_flat: dict, overrides: dict, where: str) -> None:
    """Raises ValueError naming the first key of `overrides` that the config does not have."""
    for key in overrides:
        if key not in base_flat:
            close = difflib.get_close_matches(key, list(base_flat), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise errors.InputError(f"{where}: unknown config key {key!r}{hint}")


def plan(config_arg: str | None, sweep_path: str, workdir: str) -> list[Point]:
    """Every point of the sweep, validated against its config before anything runs: unknown
    keys, values the flags cannot carry, clashing names and a changed base config all raise."""
    module = load_sweep_file(sweep_path)
    config_arg = config_arg or resolve_config_path(getattr(module, "CONFIG", ""))
    if not config_arg:
        raise errors.InputError(f"no --config given and {sweep_path} names no CONFIG")
    first = module.get_sweep()
    stages = [("", config_arg, first, getattr(module, "BASE", {}))]
    if hasattr(module, "FINETUNE_CONFIG"):
        second = module.get_finetune_sweep(first)
        stages.append(
            (FINETUNE, resolve_config_path(module.FINETUNE_CONFIG), second,
             getattr(module, "FINETUNE_BASE", {}))
        )  # fmt: skip
    points, first_names = [], {}
    for stage, config, overrides_list, base in stages:
        base_flat = workdir_lib.flatten(load_config(config, {}))
        for i, own in enumerate(overrides_list):
            if not isinstance(own, dict):
                raise TypeError(f"{sweep_path}: point {i} of {stage or 'get_sweep'} is not a dict")
            points.append(
                _make_point(stage, config, own, base, base_flat, first, first_names, workdir, i)
            )
            if not stage:
                first_names[i] = points[-1].name
    seen = {}
    for p in points:
        if p.label in seen:
            raise errors.InputError(
                f"{sweep_path}: two points share the directory {p.label!r}: "
                f"{seen[p.label]} and {p.recorded}"
            )
        seen[p.label] = p.recorded
        check_same_config(p)
    return points


def _make_point(stage, config, own, base, base_flat, first, first_names, workdir, index):
    where = f"point {index} of {stage or 'the sweep'} ({own})"
    references = [k for k, v in own.items() if isinstance(v, dict)]
    if references and not stage:
        raise errors.InputError(
            f"{where}: only get_finetune_sweep points may refer to other points"
        )
    parent = None
    for key in references:
        matches = [i for i, p in enumerate(first) if p == own[key]]
        if not matches:
            raise errors.InputError(
                f"{where}: the value of {key!r} is not one of get_sweep()'s points"
            )
        parent = first_names[matches[0]]
    name = point_name(own, list(base_flat), parent)
    run_dir = os.path.join(workdir, stage, name)
    overrides = {**base, **own}
    for key in references:
        overrides[key] = os.path.join(workdir, first_names[first.index(own[key])])
    check_overrides(base_flat, overrides, where)
    num_train_steps = check_flags(config, overrides, where)
    recorded = {k: (parent if k in references else v) for k, v in own.items()}
    return Point(
        name, stage, config, overrides, recorded, references, parent, run_dir, num_train_steps
    )


def check_flags(config_arg: str, overrides: dict, where: str) -> int:
    """Resolves `overrides` as train.py's flags would; InputError (naming `where`) for a value
    the flags refuse, read back as something else, or out of range (`config_checks`). Returns
    the config's num_train_steps."""
    try:
        config = load_config(config_arg, overrides)
    except Exception as e:  # absl's flag errors: a value of the wrong type
        raise errors.InputError(f"{where}: {e}") from None
    try:  # a value out of range fails the sweep before any of its runs starts
        config_checks.check(config)
    except errors.InputError as e:
        raise errors.InputError(f"{where}: {e}") from None
    resolved = workdir_lib.flatten(config)
    for key, value in overrides.items():
        got = resolved[key]
        want = tuple(value) if isinstance(value, list) else value
        if got != want or isinstance(got, bool) != isinstance(want, bool):
            raise errors.InputError(f"{where}: {key}={value!r} reads back from the flag as {got!r}")
    return int(resolved["num_train_steps"])


def _config_name(config_arg):
    """`file.py:arg` without the directories, so a moved checkout still matches its runs."""
    return os.path.basename(absolute_config_path(config_arg))


def check_same_config(point: Point) -> None:
    """ValueError when `point.run_dir` was trained from another config file."""
    record = workdir_lib.read_point(point.run_dir)
    if record and _config_name(record["config_path"]) != _config_name(point.config):
        raise errors.InputError(
            f"{point.run_dir} was trained from --config={record.get('config')}, this sweep "
            f"gives --config={point.config}: use another --workdir"
        )
