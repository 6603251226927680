"""Sweep files and their points: axes (`product`, `zip_axes`), the `Point` a run is made of,
its name and its `--config.KEY=VALUE` flags.

A sweep file (`configs/sweeps/*.py`) defines

    get_sweep()                 -> [{"model.num_layers": 2, "seed": 0}, ...]   (required)
    CONFIG = "configs/x.py[:arg]"  the config when the command line gives no --config
    BASE = {...}                   overrides every point shares, left out of the point names
    FINETUNE_CONFIG = "configs/sst2_finetune.py[:arg]"      (optional) a second stage:
    get_finetune_sweep(points)  -> [{"init_from": points[0], "seed": 0}, ...]
    FINETUNE_BASE = {...}

Keys are `--config.KEY` paths. In the second stage a value that is one of `points` (the dicts
`get_sweep()` returned) stands for that point's run directory, and the point runs after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import types

from lmjax import errors
from lmjax.config_files import config_flag, load_module

FINETUNE = "finetune"  # the second stage's name and subdirectory

Axis = tuple[str, list | tuple | range] | list[dict] | dict


#### Axes


def product(*axes: Axis) -> list[dict]:
    """Every combination of the axes, the first one outermost. An axis is `(key, values)`, a
    list of override dicts (e.g. a `zip_axes`), or one dict (overrides shared by all points)."""
    points = [{}]
    for axis in axes:
        points = [{**p, **q} for p in points for q in _axis_points(axis)]
    return points


def zip_axes(*axes: Axis) -> list[dict]:
    """The axes side by side: point i takes the i-th value of every axis (same lengths)."""
    lists = [_axis_points(axis) for axis in axes]
    if len({len(points) for points in lists}) > 1:
        raise errors.InputError(
            f"zip_axes: the axes have different lengths {[len(p) for p in lists]}"
        )
    return [{k: v for p in ps for k, v in p.items()} for ps in zip(*lists, strict=True)]


def _axis_points(axis: Axis) -> list[dict]:
    if isinstance(axis, dict):
        return [dict(axis)]
    if isinstance(axis, tuple) and len(axis) == 2 and isinstance(axis[0], str):
        key, values = axis
        if not isinstance(values, list | tuple | range):
            raise TypeError(f"axis {key!r}: values must be a list, got {values!r}")
        return [{key: v} for v in values]
    if isinstance(axis, list) and all(isinstance(p, dict) for p in axis):
        return [dict(p) for p in axis]
    raise TypeError(f"not an axis: {axis!r} (use (key, [values]), a list of dicts or a dict)")


#### Sweep files


def load_sweep_file(path: str) -> types.ModuleType:
    if not os.path.isfile(path):
        raise errors.MissingInput(f"no sweep file {path}")
    module = load_module(path, "lmjax_sweep_spec")
    if not hasattr(module, "get_sweep"):
        raise errors.InputError(f"{path} defines no get_sweep()")
    return module


#### Points


@dataclasses.dataclass
class Point:
    name: str  # directory name, made of the overrides
    stage: str  # "" for get_sweep(), FINETUNE for the second stage
    config: str  # `path[:arg]` as train.py's --config gets it
    overrides: dict  # dotted key -> value, including BASE; references are run directories
    recorded: dict  # the point's own overrides as point.json keeps them (references: names)
    references: list  # keys whose value is a first-stage point
    parent: str | None  # the first-stage point this one starts from (its name)
    run_dir: str
    num_train_steps: int

    @property
    def args(self) -> list[str]:
        """The train command's arguments: --config, --workdir and one flag per override."""
        flags = [config_flag(k, v) for k, v in self.overrides.items()]
        return [f"--config={self.config}", f"--workdir={self.run_dir}", *flags]

    def command(self, train_command: list[str]) -> list[str]:
        return [*train_command, *self.args]

    @property
    def label(self) -> str:
        return os.path.join(self.stage, self.name)


def point_name(overrides: dict, config_keys: list[str], parent_name: str | None = None) -> str:
    """`num_layers=2,seed=0`: each key by its last part unless that part is ambiguous in the
    config, values made filename-safe; a reference contributes its point's name."""
    leaves = [k.rsplit(".", 1)[-1] for k in config_keys]
    parts = []
    for key, value in overrides.items():
        if parent_name is not None and isinstance(value, dict):
            parts.extend(parent_name.split(","))
            continue
        leaf = key.rsplit(".", 1)[-1]
        short = leaf if leaves.count(leaf) <= 1 else key
        text = (value or "none") if isinstance(value, str) else repr(value)
        parts.append(f"{short}={re.sub(r'[^A-Za-z0-9._+-]', '_', text)}")
    parts = list(dict.fromkeys(parts))  # a fine-tune's seed repeats its parent's
    name = ",".join(parts) or "default"
    if len(name) > 150:
        name = name[:120] + "-" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return name
