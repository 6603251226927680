"""The run directory: the one module that knows what a workdir holds and where.

    WORKDIR/
      config.json         the resolved config, written once before the first step
      kernels.json        the kernels this start took on its devices (`auto` resolved) and why
      tokenizer.json      the tokenizer's spec (+ vocab.txt or hf_tokenizer.json beside it)
      metrics.jsonl       one JSON record per logged step ({"step": 100, "train/loss": ...})
      tensorboard/        the same metrics as TensorBoard event files
      checkpoints/<step>  Orbax checkpoints (a step's folder appears once its save finished)
      point.json          a sweep point's record: overrides, command, attempts, status
      train.log           a sweep point's output
      lock                the host and pid of the run that trains here now (`lock`)
      checkpoints_set_aside/<step>  checkpoints that failed to restore, or whose next step
                          diverged: moved aside by a rerun (never deleted)
    SWEEP_DIR/sweep.json  a sweep's record: the command that made it, its points in order

Paths go through `etils.epath` (what Orbax and TFDS use), so a workdir may be a local path or a
`gs://` bucket that every host of a TPU pod reads and writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections
from absl import logging
from etils import epath

from lmjax import config_defaults, errors
from lmjax.data import tokenizers

CONFIG = "config.json"
KERNELS = "kernels.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
POINT = "point.json"
SWEEP = "sweep.json"
LOG = "train.log"
LOCK = "lock"
SET_ASIDE = "checkpoints_set_aside"

PathLike = str | os.PathLike | epath.Path


def path(workdir: PathLike) -> epath.Path:
    return epath.Path(workdir)


def exists(workdir: PathLike) -> bool:
    return path(workdir).is_dir()


#### JSON files


def read_json(file: PathLike) -> dict | None:
    """The JSON object in `file`, or None when there is no such file; InputError naming it when
    it does not parse."""
    file = epath.Path(file)
    if not file.exists():
        return None
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "not text"
        raise errors.InputError(
            f"{file} is damaged ({where}): restore it from a copy, or move it away"
        ) from None


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


def save_kernels(kernels: Mapping[str, Any], workdir: PathLike) -> None:
    """WORKDIR/kernels.json: {config key: {"impl": ..., "reason": ...}} of this start."""
    write_json(path(workdir) / KERNELS, {k: dict(v) for k, v in kernels.items()})


def has_config(workdir: PathLike) -> bool:
    return (path(workdir) / CONFIG).exists()


def load_config(workdir: PathLike) -> ml_collections.ConfigDict:
    """The config a run saved in its workdir, locked as a config file's is. Keys that lmjax
    added after the run was made are filled in with today's defaults, with a warning naming
    them (`config_defaults.fill_defaults`)."""
    saved = read_json(path(workdir) / CONFIG)
    if saved is None:
        raise errors.MissingInput(f"no {CONFIG} in {workdir}: is it a training workdir?")
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


def check_trained(workdir: PathLike, name: str = "workdir") -> None:
    """`errors.MissingInput` unless `workdir` is a trained workdir: it exists and has a config
    and a checkpoint. `name` is how the message calls it (`config.init_from`). Reads only: Orbax
    would make an empty `checkpoints/` in a directory it is asked to read."""
    if not exists(workdir):
        raise errors.MissingInput(
            f"{name}={str(workdir)!r} does not exist: give a training workdir (or one made by "
            "experiments/convert.py import)"
        )
    if not has_config(workdir):
        raise errors.MissingInput(
            f"{name}={str(workdir)!r} has no {CONFIG}: is it a training workdir?"
        )
    if not checkpoint_steps(workdir):
        raise errors.MissingInput(
            f"{name}={str(workdir)!r} has no checkpoint yet in {CHECKPOINTS}/: train it "
            "(experiments/train.py) first, or give the workdir of a finished run"
        )


def is_finished(workdir: PathLike, num_train_steps: int | None = None) -> bool:
    """Whether the run has a checkpoint at its last step (`num_train_steps`, by default the
    saved config's)."""
    if num_train_steps is None:
        num_train_steps = read_config_dict(workdir).get("num_train_steps")
        if num_train_steps is None:
            return False
    last = latest_step(workdir)
    return last is not None and last >= num_train_steps


#### Before a run writes: the workdir is a directory it can write

# The files a run (re)writes at the top of its workdir, besides new ones.
REWRITTEN = (CONFIG, METRICS, LOCK, tokenizers.TOKENIZER_FILE, tokenizers.VOCAB_FILE,
             tokenizers.HF_TOKENIZER_FILE)  # fmt: skip


def check_writable(workdir: PathLike) -> None:
    """InputError unless a run can write WORKDIR: it is a directory or can be made one, a file
    can be made in it and in its `checkpoints/`, and the files a run rewrites there can be
    written. Probes with a temporary file, removed at once (local paths; a bucket is not
    probed). Cheap: a run calls it before it prepares any data."""
    existing = nearest_existing(workdir)  # the folder a new workdir will be made in
    if existing is None:
        return
    target = os.path.abspath(workdir)
    if not os.path.isdir(existing):
        what = "--workdir " if existing == target else "a parent of --workdir, "
        raise errors.InputError(
            f"{what}{existing}, is a file, not a folder: give a --workdir that is a folder or "
            "does not exist yet"
        )
    folders = [existing] + [d for d in [os.path.join(target, CHECKPOINTS)] if os.path.isdir(d)]
    for folder in folders:
        try:
            probe_folder(folder)
        except OSError as e:
            raise _not_writable(folder, e) from None
    for name in REWRITTEN:
        file = os.path.join(target, name)
        if os.path.isfile(file):
            try:
                open(file, "a").close()  # appends nothing: the file is unchanged
            except OSError as e:
                raise _not_writable(file, e) from None


def nearest_existing(path: PathLike) -> str | None:
    """The absolute local `path` or, when it does not exist yet, its nearest parent that does
    (where it will be made); None for a bucket (`gs://...`), which has no such folder."""
    if "://" in str(path):
        return None
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing


def probe_folder(folder: PathLike) -> None:
    """Makes and removes a file in the local `folder`: OSError when a file cannot be made there
    (no permission, an immutable or read-only folder)."""
    fd, probe = tempfile.mkstemp(prefix=".lmjax_write_check_", dir=folder)
    os.close(fd)
    os.remove(probe)


def _not_writable(where: str, e: OSError) -> errors.InputError:
    return errors.InputError(
        f"cannot write {where} ({e.strerror}): make it writable (chmod u+w, or chattr -i when "
        "it is immutable), or give another --workdir"
    )


#### One run per workdir

# A holder on another host proves it is alive by rewriting the lock file every HEARTBEAT seconds;
# one silent for STALE_AFTER seconds is gone (a job killed on one node, requeued on another).
HEARTBEAT = 30.0
STALE_AFTER = 300.0


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def _is_alive(holder: dict) -> bool:
    """Whether the process that wrote the lock may still run: on this host, whether its pid
    exists; elsewhere, whether its heartbeat is recent."""
    if holder.get("host") != socket.gethostname():
        return time.time() - holder.get("heartbeat", holder.get("since", 0)) < STALE_AFTER
    try:
        pid = int(holder.get("pid", 0)) or -1
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's live process, or a pid we cannot test: assume it runs
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed process whose parent has not reaped it yet still answers `os.kill(pid, 0)`
    (Linux: state Z or X in /proc/PID/stat); it runs nothing. Seen when a sweep driver and its
    train.py are killed together and the orphan waits for an init that reaps late."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False  # no /proc (macOS) or the process just went: os.kill decided
    return state in ("Z", "X")


def _describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} (since {since})"


def _read_lock(workdir: PathLike) -> dict | None:
    try:
        return read_json(path(workdir) / LOCK)
    except (errors.InputError, OSError):
        return {}  # half-written by a process killed mid-write, or not lmjax's: no holder


def check_unlocked(workdir: PathLike) -> None:
    """Raises InputError when a live run holds WORKDIR's lock (writes nothing; cheap, so a
    second launch stops before it prepares any data)."""
    holder = _read_lock(workdir)
    if holder is not None and holder.get("pid") != os.getpid() and _is_alive(holder):
        raise errors.InputError(
            f"workdir {workdir} is in use by the run of {_describe(holder)}: wait for it, stop "
            f"it, or use another --workdir (if that run is gone, delete {path(workdir) / LOCK})"
        )


@contextlib.contextmanager
def lock(workdir: PathLike) -> Iterator[None]:
    """Holds WORKDIR/lock (this host and pid) while the block runs, so that a second run in the
    same workdir stops at once (`check_unlocked`). A lock left by a process that is gone is
    taken over with a warning. Local files are created exclusively (O_EXCL); on a bucket two
    runs starting in the same second may both pass (the check is then only a read)."""
    file = path(workdir) / LOCK
    file.parent.mkdir(parents=True, exist_ok=True)
    me = _me()
    if not _create_exclusive(file, me):
        check_unlocked(workdir)
        holder = _read_lock(workdir) or {}
        if holder.get("pid") is None:
            logging.warning("replacing %s: not a lock an lmjax run wrote, or cut short", file)
        else:
            logging.warning("taking over the stale lock of %s in %s", _describe(holder), workdir)
        write_json(file, me)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(file, me, stop), daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        if (_read_lock(workdir) or {}).get("pid") == me["pid"]:
            file.unlink(missing_ok=True)


def _create_exclusive(file: epath.Path, record: dict) -> bool:
    """Creates `file` holding `record` unless it exists; False when it did."""
    if "://" in str(file):
        if file.exists():
            return False
        write_json(file, record)
        return True
    try:
        fd = os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return True


def _heartbeat(file: epath.Path, me: dict, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT):
        try:
            write_json(file, {**me, "heartbeat": time.time()})
        except OSError as e:  # a full disk must not kill the run over its lock
            logging.warning("could not refresh %s: %s", file, e)


#### Resuming: the saved config must fit the run

# Keys that fix what the checkpoints were trained on: a resumed run must keep them. (A model that
# no longer fits is caught by the checkpoint's shapes, naming the parameter.)
FIXED_KEYS = ("task", "seq_len", "data.")


def check_fits(config: ml_collections.ConfigDict, workdir: PathLike) -> None:
    """Compares `config` (the run's, resolved by `tasks.resolve_config`: its defaults are in)
    with WORKDIR/config.json. When WORKDIR has checkpoints, a change of a
    key in FIXED_KEYS (the data, the tokenizer, the task, seq_len) is an InputError listing what
    differs; other changes (learning rate, steps, ...) are allowed with a warning. Without a
    checkpoint, what an earlier failed start wrote is replaced (warning)."""
    if not has_config(workdir):
        return
    saved = ml_collections.ConfigDict(read_config_dict(workdir))
    config_defaults.fill_defaults(saved)  # keys added since it was written: not a change
    saved, now = _comparable(saved.to_dict()), _comparable(config.to_dict())
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if not changed:
        return
    diffs = [f"{k}={saved.get(k)!r} (now {now.get(k)!r})" for k in changed]
    if latest_step(workdir) is None:
        logging.warning(
            "%s has no checkpoint: the config.json and tokenizer of an earlier start are "
            "replaced (%s)",
            workdir,
            ", ".join(diffs),
        )
        return
    fixed = [d for k, d in zip(changed, diffs, strict=True) if k.startswith(FIXED_KEYS)]
    if fixed:
        raise errors.InputError(
            f"workdir {workdir} was trained with {', '.join(fixed)}: a run resumes with the data, "
            "tokenizer and seq_len it started with; use a new --workdir, or the old values"
        )
    logging.warning("resuming %s with changed %s", workdir, ", ".join(diffs))


def _comparable(config: Mapping[str, Any]) -> dict:
    """Flattened, with JSON's types (tuples as lists), as config.json holds it."""
    return flatten(json.loads(json.dumps(config, default=str)))


#### Metrics


def metrics_file(workdir: PathLike) -> epath.Path:
    return path(workdir) / METRICS


def tensorboard_dir(workdir: PathLike) -> epath.Path:
    return path(workdir) / TENSORBOARD


def has_metrics(workdir: PathLike) -> bool:
    return metrics_file(workdir).exists()


def read_metrics(workdir: PathLike) -> list[dict]:
    """The records of WORKDIR/metrics.jsonl, in the order they were written. A last line cut
    short (a crash in mid-write) is dropped with a warning; a damaged line elsewhere is an error
    naming it."""
    file = metrics_file(workdir)
    text = file.read_text()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):  # no newline after it: a write that did not finish
                logging.warning("%s: dropped its last line, cut short (%d chars)", file, len(line))
                break
            raise errors.InputError(
                f"{file}:{number} is not a JSON record ({e.msg}): fix or delete that line"
            ) from None
    return records


def append_metrics(workdir: PathLike, record: dict) -> None:
    """Appends one whole line (one write call)."""
    with metrics_file(workdir).open("a") as f:
        f.write(json.dumps(record, allow_nan=True) + "\n")


def truncate_metrics(workdir: PathLike, step: int) -> None:
    """Keeps the records up to `step` (and drops a last line cut short): a resumed run writes
    the later ones again, so none repeats. Rewritten through a temporary file and a rename."""
    if has_metrics(workdir):
        kept = [r for r in read_metrics(workdir) if r["step"] <= step]
        file = metrics_file(workdir)
        tmp = file.parent / (file.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in kept))
        tmp.replace(file)


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
    """Run directories under `root` (itself included), in sorted order. A local run reached
    twice (a symlink to a run under the same root) is listed once, by its real path."""
    runs = [str(d) for d in _walk(path(root)) if is_run(d)]
    real = {run: run if "://" in run else os.path.realpath(run) for run in runs}
    linked = {run: "://" not in run and real[run] != os.path.abspath(run) for run in runs}
    keep = {}
    for run in runs:  # per real path, the first path not through a link, else the first path
        kept = keep.get(real[run])
        if kept is None or (linked[kept] and not linked[run]):
            keep[real[run]] = run
    return [run for run in runs if keep[real[run]] == run]


def _walk(directory: epath.Path) -> Iterator[epath.Path]:
    yield directory
    subdirs = sorted(
        (d for d in directory.iterdir() if d.is_dir() and d.name not in (CHECKPOINTS, TENSORBOARD)),
        key=lambda d: d.name,
    )
    for d in subdirs:
        yield from _walk(d)
