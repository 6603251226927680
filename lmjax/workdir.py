"""The run directory: the one module that knows what a workdir holds and where.

    WORKDIR/
      config.json         the resolved config, written once before the first step
      tokenizer.json      the tokenizer's spec (+ vocab.txt or hf_tokenizer.json beside it)
      metrics.jsonl       one JSON record per logged step ({"step": 100, "train/loss": ...})
      tensorboard/        the same metrics as TensorBoard event files
      checkpoints/<step>  Orbax checkpoints (a step's folder appears once its save finished)
      point.json          a sweep point's record: overrides, command, attempts, status
      train.log           a sweep point's output
    SWEEP_DIR/sweep.json  a sweep's record: the command that made it, its points in order

Paths go through `etils.epath` (what Orbax and TFDS use), so a workdir may be a local path or a
`gs://` bucket that every host of a TPU pod reads and writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections
from absl import logging
from etils import epath

from lmjax import config_defaults
from lmjax.data import tokenizers

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
POINT = "point.json"
SWEEP = "sweep.json"
LOG = "train.log"

PathLike = str | os.PathLike | epath.Path


def path(workdir: PathLike) -> epath.Path:
    return epath.Path(workdir)


def exists(workdir: PathLike) -> bool:
    return path(workdir).is_dir()


#### JSON files


def read_json(file: PathLike) -> dict | None:
    """The JSON object in `file`, or None when there is no such file."""
    file = epath.Path(file)
    if not file.exists():
        return None
    return json.loads(file.read_text())


def write_json(file: PathLike, obj: Any) -> None:
    """Writes `obj` to a temporary file, then renames it: a reader never sees half a file."""
    file = epath.Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.parent / (file.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(file)


#### Config


def save_config(config: ml_collections.ConfigDict, workdir: PathLike) -> None:
    """The resolved config as WORKDIR/config.json (what `load_config` reads)."""
    file = path(workdir) / CONFIG
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(config.to_json_best_effort(indent=2))


def has_config(workdir: PathLike) -> bool:
    return (path(workdir) / CONFIG).exists()


def load_config(workdir: PathLike) -> ml_collections.ConfigDict:
    """The config a run saved in its workdir, locked as a config file's is. Keys that lmjax
    added after the run was made are filled in with today's defaults, with a warning naming
    them (`config_defaults.fill_defaults`)."""
    saved = read_json(path(workdir) / CONFIG)
    if saved is None:
        raise FileNotFoundError(f"no {CONFIG} in {workdir}: is it a training workdir?")
    config = ml_collections.ConfigDict(saved)
    added = config_defaults.fill_defaults(config)
    if added:
        logging.warning(
            "%s was written before lmjax had %s; using the defaults (%s)",
            path(workdir) / CONFIG,
            ", ".join(added),
            ", ".join(f"{k}={v!r}" for k, v in added.items()),
        )
    config.lock()
    return config


def read_config_dict(workdir: PathLike) -> dict:
    """config.json as a plain dict ({} when absent): for tables, which only compare values."""
    return read_json(path(workdir) / CONFIG) or {}


def flatten(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict:
    """{dotted key: leaf value} of a config (a ConfigDict or config.json's nested dict): the
    keys as `--config.KEY` flags name them."""
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update({f"{key}.{k}": v for k, v in flatten(value).items()})
        else:
            out[key] = value
    return out


#### Tokenizer


def has_tokenizer(workdir: PathLike) -> bool:
    return (path(workdir) / tokenizers.TOKENIZER_FILE).exists()


def save_tokenizer(tokenizer: tokenizers.Tokenizer, workdir: PathLike) -> None:
    tokenizer.save(path(workdir))


def load_tokenizer(workdir: PathLike) -> tokenizers.Tokenizer:
    return tokenizers.load_tokenizer(path(workdir))


def saved_tokenizer(workdir: PathLike | None) -> tokenizers.Tokenizer | None:
    """The tokenizer a run saved in `workdir` (a resumed run keeps its vocabulary), or None."""
    if workdir and has_tokenizer(workdir):
        return load_tokenizer(workdir)
    return None


#### Checkpoints


def checkpoint_dir(workdir: PathLike) -> epath.Path:
    """WORKDIR/checkpoints, absolute (Orbax wants absolute local paths)."""
    directory = path(workdir) / CHECKPOINTS
    return directory if "://" in str(directory) else epath.Path(os.path.abspath(directory))


def checkpoint_steps(workdir: PathLike) -> list[int]:
    """Steps of the finished checkpoints (Orbax renames `<step>` into place once it is saved)."""
    directory = path(workdir) / CHECKPOINTS
    if not directory.is_dir():
        return []
    return sorted(int(d.name) for d in directory.iterdir() if d.name.isdigit())


def latest_step(workdir: PathLike) -> int | None:
    steps = checkpoint_steps(workdir)
    return steps[-1] if steps else None


def is_finished(workdir: PathLike, num_train_steps: int | None = None) -> bool:
    """Whether the run has a checkpoint at its last step (`num_train_steps`, by default the
    saved config's)."""
    if num_train_steps is None:
        num_train_steps = read_config_dict(workdir).get("num_train_steps")
        if num_train_steps is None:
            return False
    last = latest_step(workdir)
    return last is not None and last >= num_train_steps


#### Metrics


def metrics_file(workdir: PathLike) -> epath.Path:
    return path(workdir) / METRICS


def tensorboard_dir(workdir: PathLike) -> epath.Path:
    return path(workdir) / TENSORBOARD


def has_metrics(workdir: PathLike) -> bool:
    return metrics_file(workdir).exists()


def read_metrics(workdir: PathLike) -> list[dict]:
    """The records of WORKDIR/metrics.jsonl, in the order they were written."""
    return [json.loads(line) for line in metrics_file(workdir).read_text().splitlines() if line]


def append_metrics(workdir: PathLike, record: dict) -> None:
    with metrics_file(workdir).open("a") as f:
        f.write(json.dumps(record, allow_nan=True) + "\n")


def truncate_metrics(workdir: PathLike, step: int) -> None:
    """Drops the records after `step`: a resumed run writes them again, so none repeats."""
    if has_metrics(workdir):
        kept = [r for r in read_metrics(workdir) if r["step"] <= step]
        metrics_file(workdir).write_text(
            "".join(json.dumps(r, allow_nan=True) + "\n" for r in kept)
        )


#### Sweeps: point and sweep records, runs under a directory


def read_point(run_dir: PathLike) -> dict | None:
    return read_json(path(run_dir) / POINT)


def write_point(run_dir: PathLike, record: dict) -> None:
    write_json(path(run_dir) / POINT, record)


def read_sweep(sweep_dir: PathLike) -> dict | None:
    return read_json(path(sweep_dir) / SWEEP)


def write_sweep(sweep_dir: PathLike, record: dict) -> None:
    write_json(path(sweep_dir) / SWEEP, record)


def log_file(run_dir: PathLike) -> epath.Path:
    return path(run_dir) / LOG


def is_run(directory: PathLike) -> bool:
    """A run directory: it has metrics or a sweep point's record."""
    return has_metrics(directory) or (path(directory) / POINT).exists()


def find_runs(root: PathLike) -> list[str]:
    """Run directories under `root` (itself included), in sorted order."""
    return [str(d) for d in _walk(path(root)) if is_run(d)]


def _walk(directory: epath.Path) -> Iterator[epath.Path]:
    yield directory
    subdirs = sorted(
        (d for d in directory.iterdir() if d.is_dir() and d.name not in (CHECKPOINTS, TENSORBOARD)),
        key=lambda d: d.name,
    )
    for d in subdirs:
        yield from _walk(d)
