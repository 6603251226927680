"""Sweeps: lists of config overrides, each point an ordinary `experiments/train.py` run.

A sweep file (`configs/sweeps/*.py`) defines

    get_sweep()                 -> [{"model.num_layers": 2, "seed": 0}, ...]   (required)
    CONFIG = "configs/x.py[:arg]"  the config when the command line gives no --config
    BASE = {...}                   overrides every point shares, left out of the point names
    FINETUNE_CONFIG = "configs/sst2_finetune.py[:arg]"      (optional) a second stage:
    get_finetune_sweep(points)  -> [{"init_from": points[0], "seed": 0}, ...]
    FINETUNE_BASE = {...}

Keys are `--config.KEY` paths. In the second stage a value that is one of `points` (the dicts
`get_sweep()` returned) stands for that point's run directory, and the point runs after it.
Every point runs in `WORKDIR/<name>` (second stage: `WORKDIR/finetune/<name>`), its name made
of its overrides, so a rerun finds it: finished points are skipped, interrupted ones resume.
"""

import concurrent.futures
import dataclasses
import difflib
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(REPO, "experiments", "train.py")
POINT_RECORD = "point.json"  # in each run directory: overrides, command, attempts, wall time
SWEEP_RECORD = "sweep.json"  # in the sweep's workdir: the command that made it
FINETUNE = "finetune"  # the second stage's name and subdirectory


#### Sweep specs


def product(*axes):
    """Every combination of the axes, the first one outermost. An axis is `(key, values)`, a
    list of override dicts (e.g. a `zip_axes`), or one dict (overrides shared by all points)."""
    points = [{}]
    for axis in axes:
        points = [{**p, **q} for p in points for q in _axis_points(axis)]
    return points


def zip_axes(*axes):
    """The axes side by side: point i takes the i-th value of every axis (same lengths)."""
    lists = [_axis_points(axis) for axis in axes]
    if len({len(points) for points in lists}) > 1:
        raise ValueError(f"zip_axes: the axes have different lengths {[len(p) for p in lists]}")
    return [{k: v for p in ps for k, v in p.items()} for ps in zip(*lists, strict=True)]


def _axis_points(axis):
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


#### Points: names, flags, validation


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
    def argv(self):
        flags = [config_flag(k, v) for k, v in self.overrides.items()]
        return [sys.executable, _display_path(TRAIN_SCRIPT), f"--config={self.config}",
                f"--workdir={self.run_dir}", *flags]  # fmt: skip

    @property
    def label(self):
        return os.path.join(self.stage, self.name)


def config_flag(key, value):
    """`--config.KEY=VALUE` with VALUE written so that ml_collections parses it back."""
    if isinstance(value, bool | int | float):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    elif isinstance(value, tuple | list):
        text = repr(tuple(value))
    else:
        raise TypeError(f"{key}: a {type(value).__name__} cannot be passed as --config.{key}")
    return f"--config.{key}={text}"


def _display_path(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def flatten(config, prefix=""):
    """{dotted key: leaf value} of a ConfigDict (or nested dict)."""
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def point_name(overrides, config_keys, parent_name=None):
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


def load_config(config_arg):
    """`get_config(arg)` of `path[:arg]`, locked, as train.py's --config flag loads it."""
    return resolve_config(config_arg, {})


def resolve_config(config_arg, overrides):
    """The config train.py gets from `--config=config_arg` and `--config.KEY=VALUE` flags:
    parsed by ml_collections' own flag parser, so the types and checks are train.py's."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["train.py", f"--config={config_arg}"]
    argv += [config_flag(k, v) for k, v in overrides.items()]
    flag_values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
    with warnings.catch_warnings():  # ml_collections loads the file with load_module()
        warnings.simplefilter("ignore", DeprecationWarning)
        flag_values(argv)
    return holder.value


def check_overrides(base_flat, overrides, where):
    """Raises ValueError naming the first key of `overrides` that the config does not have."""
    for key in overrides:
        if key not in base_flat:
            close = difflib.get_close_matches(key, list(base_flat), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown config key {key!r}{hint}")


def _resolve_path(path):
    """A config path as given, else relative to the repository (sweep files name configs/...)."""
    file, _, arg = path.partition(":")
    if not os.path.exists(file) and os.path.exists(os.path.join(REPO, file)):
        file = os.path.join(REPO, file)
    return file + (f":{arg}" if arg else "")


def load_sweep_file(path):
    spec = importlib.util.spec_from_file_location("lmjax_sweep_spec", path)
    if spec is None or not os.path.exists(path):
        raise FileNotFoundError(f"no sweep file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"{path} defines no get_sweep()")
    return module


def plan(config_arg, sweep_path, workdir):
    """Every point of the sweep, validated against its config before anything runs: unknown
    keys, values the flags cannot carry, clashing names and a changed base config all raise."""
    module = load_sweep_file(sweep_path)
    config_arg = config_arg or _resolve_path(getattr(module, "CONFIG", ""))
    if not config_arg:
        raise ValueError(f"no --config given and {sweep_path} names no CONFIG")
    first = module.get_sweep()
    stages = [("", config_arg, first, getattr(module, "BASE", {}))]
    if hasattr(module, "FINETUNE_CONFIG"):
        second = module.get_finetune_sweep(first)
        stages.append(
            (FINETUNE, _resolve_path(module.FINETUNE_CONFIG), second,
             getattr(module, "FINETUNE_BASE", {}))
        )  # fmt: skip
    points, first_names = [], {}
    for stage, config, overrides_list, base in stages:
        base_flat = flatten(load_config(config))
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
            raise ValueError(
                f"{sweep_path}: two points share the directory {p.label!r}: "
                f"{seen[p.label]} and {p.recorded}"
            )
        seen[p.label] = p.recorded
        _check_same_config(p)
    return points


def _make_point(stage, config, own, base, base_flat, first, first_names, workdir, index):
    where = f"point {index} of {stage or 'the sweep'} ({own})"
    references = [k for k, v in own.items() if isinstance(v, dict)]
    if references and not stage:
        raise ValueError(f"{where}: only get_finetune_sweep points may refer to other points")
    parent = None
    for key in references:
        matches = [i for i, p in enumerate(first) if p == own[key]]
        if not matches:
            raise ValueError(f"{where}: the value of {key!r} is not one of get_sweep()'s points")
        parent = first_names[matches[0]]
    name = point_name(own, list(base_flat), parent)
    run_dir = os.path.join(workdir, stage, name)
    overrides = {**base, **own}
    for key in references:
        overrides[key] = os.path.join(workdir, first_names[first.index(own[key])])
    check_overrides(base_flat, overrides, where)
    try:
        resolved = flatten(resolve_config(config, overrides))
    except Exception as e:  # absl's flag errors: a value of the wrong type
        raise ValueError(f"{where}: {e}") from None
    for key, value in overrides.items():
        got = resolved[key]
        want = tuple(value) if isinstance(value, list) else value
        if got != want or isinstance(got, bool) != isinstance(want, bool):
            raise ValueError(f"{where}: {key}={value!r} reads back from the flag as {got!r}")
    recorded = {k: (parent if k in references else v) for k, v in own.items()}
    return Point(
        name, stage, config, overrides, recorded, references, parent, run_dir,
        int(resolved["num_train_steps"]),
    )  # fmt: skip


def _normalized(config_arg):
    file, _, arg = config_arg.partition(":")
    return os.path.abspath(file) + (f":{arg}" if arg else "")


def _config_name(config_arg):
    """`file.py:arg` without the directories, so a moved checkout still matches its runs."""
    return os.path.basename(_normalized(config_arg))


def _check_same_config(point):
    record = read_json(os.path.join(point.run_dir, POINT_RECORD))
    if record and _config_name(record["config_path"]) != _config_name(point.config):
        raise ValueError(
            f"{point.run_dir} was trained from --config={record.get('config')}, this sweep "
            f"gives --config={point.config}: use another --workdir"
        )


#### Running


def checkpoint_steps(run_dir):
    """Steps of the finished checkpoints (Orbax writes `<step>` only once the save is done)."""
    directory = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def is_finished(run_dir, num_train_steps):
    steps = checkpoint_steps(run_dir)
    return bool(steps) and steps[-1] >= num_train_steps


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


class _Runner:
    """Runs points as subprocesses; SIGTERM is passed on to them (train.py then checkpoints)."""

    def __init__(self, log):
        self.log = log
        self.lock = threading.Lock()
        self.procs = set()
        self.stopping = False

    def stop(self, signum=None, frame=None):
        self.stopping = True
        with self.lock:
            for proc in self.procs:
                proc.send_signal(signal.SIGTERM)

    def run(self, point, index, total):
        os.makedirs(point.run_dir, exist_ok=True)
        record_path = os.path.join(point.run_dir, POINT_RECORD)
        record = read_json(record_path) or {
            "name": point.name,
            "stage": point.stage,
            "parent": point.parent,
            "overrides": point.recorded,
            "references": point.references,
            "config": point.config,
            "config_path": _normalized(point.config),
            "command": shlex.join(point.argv),
            "attempts": [],
        }
        attempt = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed_from_step": None}
        steps = checkpoint_steps(point.run_dir)
        attempt["resumed_from_step"] = steps[-1] if steps else None
        record["attempts"].append(attempt)
        record["status"] = "running"
        _write_json(record_path, record)
        verb = f"resuming from step {steps[-1]}" if steps else "running"
        self.log(f"[{index}/{total}] {verb}: {point.label}")
        start = time.time()
        with open(os.path.join(point.run_dir, "train.log"), "a") as log_file:
            log_file.write(f"# {attempt['started']}: {shlex.join(point.argv)}\n")
            log_file.flush()
            with self.lock:
                if self.stopping:
                    return False
                proc = subprocess.Popen(point.argv, stdout=log_file, stderr=subprocess.STDOUT)
                self.procs.add(proc)
            returncode = proc.wait()
            with self.lock:
                self.procs.discard(proc)
        attempt["wall_time_s"] = round(time.time() - start, 1)
        attempt["returncode"] = returncode
        record["wall_time_s"] = round(sum(a.get("wall_time_s") or 0 for a in record["attempts"]), 1)
        finished = returncode == 0 and is_finished(point.run_dir, point.num_train_steps)
        record["status"] = "done" if finished else ("failed" if returncode else "interrupted")
        _write_json(record_path, record)
        self.log(
            f"[{index}/{total}] {record['status']} in {attempt['wall_time_s']:.0f} s "
            f"(exit {returncode}): {point.label}"
            + ("" if finished else f"; see {os.path.join(point.run_dir, 'train.log')}")
        )
        return finished


def run(config_arg, sweep_path, workdir, parallel=1, print_commands=False, stage="all",
        log=print):  # fmt: skip
    """Runs (or, with print_commands, prints) the sweep's points, then writes the tables and
    plots. Returns the labels of the points that did not finish."""
    all_points = plan(config_arg, sweep_path, workdir)
    if stage not in ("all", "main", FINETUNE):
        raise ValueError(f"stage must be all, main or {FINETUNE}, not {stage!r}")
    points = [
        p for p in all_points if stage == "all" or p.stage == ("" if stage == "main" else stage)
    ]
    first_stage = {p.name: p for p in all_points if not p.stage}
    if print_commands:
        for p in points:
            log(shlex.join(p.argv))
        return []
    os.makedirs(workdir, exist_ok=True)
    _write_json(
        os.path.join(workdir, SWEEP_RECORD),
        {
            "config": all_points[0].config,
            "sweep": sweep_path,
            "argv": sys.argv,
            "points": [p.label for p in all_points],  # the tables keep this order
        },
    )
    # A chain is a first-stage point and the points that start from it, run one after another.
    chains = {p.name: [p] for p in points if not p.stage}
    for p in points:
        if p.stage:
            chains.setdefault(p.parent or f"\0{p.label}", []).append(p)
    todo = [p for p in points if not is_finished(p.run_dir, p.num_train_steps)]
    log(f"{len(points)} points, {len(points) - len(todo)} finished, {len(todo)} to run")
    runner = _Runner(log)
    counter = itertools.count(1)
    failed = []

    def run_chain(chain):
        for i, p in enumerate(chain):
            if runner.stopping:
                failed.extend(q.label for q in chain[i:])
                return
            if is_finished(p.run_dir, p.num_train_steps):
                continue
            parent = first_stage.get(p.parent)
            if parent and not is_finished(parent.run_dir, parent.num_train_steps):
                log(f"skipped (its first-stage point did not finish): {p.label}")
                failed.append(p.label)
                continue
            if not runner.run(p, next(counter), len(todo)):
                failed.append(p.label)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, runner.stop) if in_main_thread else None
    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
            futures = [pool.submit(run_chain, chain) for chain in chains.values()]
            # Wait in short slices: a signal may land on a worker thread, and Python runs the
            # SIGTERM handler only when the main thread executes.
            while concurrent.futures.wait(futures, timeout=0.5).not_done:
                pass
            for future in futures:
                future.result()
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    from lmjax import plots, results

    outputs = results.write_tables(workdir) + plots.plot_workdir(workdir)
    log("wrote " + ", ".join(outputs))
    if runner.stopping:
        raise SystemExit("sweep stopped by SIGTERM; rerun the same command to resume")
    return failed
