"""GLUE for one or more checkpoints: every task fine-tuned over a learning-rate grid and seeds,
each point an ordinary train.py run through the sweep machinery, the learning rate selected per
task, and the table (experiments/glue.py).

    DIR/<checkpoint>/<task>/lr=<lr>,seed=<seed>/   one train.py run (point.json, train.log)
    DIR/glue.md, glue.csv   a row per checkpoint: each task's dev metrics at its selected lr and
                            the GLUE score, mean ± std (sample std) over seeds
    DIR/glue_all.csv        every (checkpoint, task, lr, seed) run and its final eval metrics
    DIR/glue.png            GLUE score and task scores per checkpoint, error bars = std

Selection, as the BERT paper (Devlin et al. 2018, section 4.1: "we selected the best fine-tuning
learning rate ... on the Dev set"): for each (checkpoint, task), the learning rate with the best
mean over seeds of the selection score, `glue_metrics.task_score` of the dev metrics or, with
`select_on="holdout"`, of the metrics on training examples held out (`data.holdout_size`); the
table reports the dev metrics of that learning rate. A task's score is the mean of its metrics
(MRPC: F1, accuracy; STS-B: Pearson, Spearman) and the GLUE score the mean of the task scores,
as the GLUE leaderboard computes them.

The task config (configs/glue.py) is loaded by path: the library does not import `configs`.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import math
import os
import re
import shlex
import types
from collections.abc import Callable, Sequence

from lmjax import results
from lmjax import workdir as workdir_lib
from lmjax.config_files import load_config, load_module, resolve_config_path
from lmjax.data import glue as glue_data
from lmjax.sweep.launch import LocalLauncher, Queue, SubmititLauncher
from lmjax.sweep.spec import Point
from lmjax.sweep.validate import check_flags, check_overrides, check_same_config
from lmjax.tasks import glue_metrics

DEFAULT_CONFIG = "configs/glue.py"
SCRATCH = "scratch"  # the checkpoint name (and --init_from value) of training from scratch
SELECT_ON = ("dev", "holdout")
TITLES = {task: fmt.title for task, fmt in glue_data.FORMATS.items()}
SHORT = {"mcc": "MCC", "accuracy": "acc", "f1": "F1", "pearson": "Pearson",
         "spearman": "Spearman"}  # fmt: skip
# Set per point by the flags of experiments/glue.py, so not through --override.
POINT_KEYS = {
    "init_from": "--init_from",
    "learning_rate": "--learning_rates",
    "seed": "--seeds",
    "data.holdout_size": "--holdout_size",
}
EPOCH_KEYS = ("num_epochs", "num_train_steps", "warmup_steps", "eval_every_steps")


@dataclasses.dataclass
class GluePoint:
    """One fine-tuning run: a checkpoint, a task, a learning rate and a seed."""

    checkpoint: str  # the row's name: SCRATCH or the init_from directory's name
    task: str
    learning_rate: float
    seed: int
    point: Point


#### Points


def load_config_module(config_file: str = DEFAULT_CONFIG) -> types.ModuleType:
    """The task config file (`path[:preset]`; the preset is ignored) as a module, by path:
    its `TRAIN_EXAMPLES` (task -> training examples) and `LEARNING_RATES`."""
    path = resolve_config_path(config_file).partition(":")[0]
    module = load_module(path, "lmjax_glue_config")
    for name in ("TRAIN_EXAMPLES", "LEARNING_RATES"):
        if not hasattr(module, name):
            raise ValueError(f"{path} defines no {name}: is it configs/glue.py?")
    return module


def checkpoint_names(init_from: Sequence[str]) -> dict[str, str]:
    """Row name -> init_from ("" for scratch). A checkpoint is named by its directory; two of
    the same name by their last two directories. "" and "scratch" mean from scratch."""
    sources = [SCRATCH if s.strip() in ("", SCRATCH) else s.strip().rstrip("/") for s in init_from]
    if not sources:
        raise ValueError("no checkpoint given: --init_from=WORKDIR[,WORKDIR...] or scratch")
    if len(set(sources)) < len(sources):
        raise ValueError(f"a checkpoint is given twice in --init_from={','.join(init_from)}")

    def name(source, parts):
        if source == SCRATCH:
            return SCRATCH
        tail = [p for p in re.split(r"[/\\]", source) if p][-parts:]
        return re.sub(r"[^A-Za-z0-9._+=-]", "_", "_".join(tail))

    names = [name(s, 1) for s in sources]
    names = [name(s, 2) if names.count(n) > 1 else n for s, n in zip(sources, names, strict=True)]
    if len(set(names)) < len(names):
        raise ValueError(f"two checkpoints of --init_from have the same name: {names}")
    return {n: ("" if s == SCRATCH else s) for n, s in zip(names, sources, strict=True)}


def parse_overrides(items: Sequence[str]) -> dict:
    """`["num_train_steps=4", "model.dtype=bfloat16"]` -> {key: value}, values read as Python
    literals where they are one (4, 1e-3, True, (1, 2)), else kept as strings."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--override {item!r}: use KEY=VALUE (a --config.KEY path)")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        out[key.strip()] = value
    return out


def holdout_examples(holdout_size: float, train_examples: int) -> int:
    """Examples held out of a task's training set: a fraction of them when below 1 (0.1: 10%),
    else a count."""
    if holdout_size < 0:
        raise ValueError(f"--holdout_size={holdout_size} must be >= 0")
    if holdout_size < 1:
        return int(round(holdout_size * train_examples))
    if holdout_size != int(holdout_size):
        raise ValueError(f"--holdout_size={holdout_size}: a count (>= 1) must be a whole number")
    return int(holdout_size)


def task_overrides(
    config_arg: str,
    train_examples: int,
    overrides: dict,
    epochs: float | None,
    holdout: int,
) -> dict:
    """The overrides every point of `task` shares: `overrides`, then with `epochs` the schedule
    configs/glue.py derives from its num_epochs (steps = epochs * examples // batch_size,
    warmup 10%, one eval at the end), then the holdout."""
    out = dict(overrides)
    if epochs is not None:
        batch_size = int(load_config(config_arg, overrides).batch_size)
        steps = max(1, int(epochs * train_examples) // batch_size)
        out.update(num_epochs=epochs, num_train_steps=steps, warmup_steps=steps // 10,
                   eval_every_steps=steps)  # fmt: skip
    if holdout:
        out["data.holdout_size"] = holdout
    return out


def point_dir_name(learning_rate: float, seed: int) -> str:
    return f"lr={learning_rate:g},seed={seed}"


def make_points(
    workdir: str,
    init_from: Sequence[str],
    tasks: Sequence[str],
    learning_rates: Sequence[float],
    seeds: Sequence[int],
    config: str = DEFAULT_CONFIG,
    overrides: dict | None = None,
    epochs: float | None = None,
    holdout_size: float = 0,
) -> list[GluePoint]:
    """Every (checkpoint, task, learning rate, seed) point, checked as train.py will build its
    config (unknown keys, values the flags cannot carry, a run directory of another config)
    before anything runs. Runs in `workdir/<checkpoint>/<task>/lr=<lr>,seed=<seed>`."""
    overrides = dict(overrides or {})
    module = load_config_module(config)
    file, _, preset = resolve_config_path(config).partition(":")
    clash = [k for k in overrides if k in POINT_KEYS or (epochs is not None and k in EPOCH_KEYS)]
    if clash:
        flag = POINT_KEYS.get(clash[0], "--epochs")
        raise ValueError(f"--override {clash[0]}=...: {flag} sets it for every point")
    unknown = [t for t in tasks if t not in module.TRAIN_EXAMPLES]
    if unknown or not tasks:
        raise ValueError(f"unknown task {unknown[:1]}: use some of {list(module.TRAIN_EXAMPLES)}")
    if not learning_rates or not seeds:
        raise ValueError("give at least one learning rate and one seed")
    if epochs is not None and epochs <= 0:
        raise ValueError(f"--epochs={epochs} must be > 0")
    checkpoints = checkpoint_names(init_from)
    for source in checkpoints.values():
        if source and not workdir_lib.has_config(source):
            raise ValueError(f"--init_from={source}: not a run directory (no config.json there)")
    shared = {}  # task -> (config_arg, overrides every point of the task shares)
    for task in dict.fromkeys(tasks):
        config_arg = f"{file}:{task}" + (f",{preset}" if preset else "")
        check_overrides(workdir_lib.flatten(load_config(config_arg, {})), overrides, task)
        examples = module.TRAIN_EXAMPLES[task]
        holdout = holdout_examples(holdout_size, examples)
        shared[task] = config_arg, task_overrides(config_arg, examples, overrides, epochs, holdout)
    points = []
    for checkpoint, source in checkpoints.items():
        for task, (config_arg, task_flags) in shared.items():
            stage = os.path.join(checkpoint, task)
            first = {**task_flags, "init_from": source, "learning_rate": float(learning_rates[0]),
                     "seed": int(seeds[0])}  # fmt: skip
            num_train_steps = check_flags(config_arg, first, stage)
            for lr in learning_rates:
                for seed in seeds:
                    own = {**first, "learning_rate": float(lr), "seed": int(seed)}
                    name = point_dir_name(lr, seed)
                    run_dir = os.path.join(workdir, stage, name)
                    point = Point(
                        name, stage, config_arg, own, own, [], None, run_dir, num_train_steps
                    )
                    check_same_config(point)
                    points.append(GluePoint(checkpoint, task, float(lr), int(seed), point))
    return points


#### Collecting and selecting


def collect(points: Sequence[GluePoint]) -> list[dict]:
    """Each point's run: checkpoint, task, learning_rate, seed, status ("done" once its last
    checkpoint is saved, else point.json's status or "not started"), run_dir, and `metrics`:
    the eval/* metrics logged at its last step (empty unless done)."""
    runs = []
    for g in points:
        p = g.point
        done = workdir_lib.is_finished(p.run_dir, p.num_train_steps)
        metrics = {}
        if done and workdir_lib.has_metrics(p.run_dir):
            for record in workdir_lib.read_metrics(p.run_dir):
                if record.get("step") == p.num_train_steps:
                    metrics.update({k: v for k, v in record.items() if k.startswith("eval/")})
        status = "done" if done else (workdir_lib.read_point(p.run_dir) or {}).get("status")
        runs.append({
            "checkpoint": g.checkpoint, "task": g.task, "learning_rate": g.learning_rate,
            "seed": g.seed, "status": status or "not started", "run_dir": p.run_dir,
            "metrics": metrics,
        })  # fmt: skip
    return runs


def metrics_of(task: str, metrics: dict, split: str = "dev") -> dict[str, float]:
    """The task's GLUE metrics from a run's eval/* metrics: `eval/<m>` (dev) or
    `eval/holdout_<m>` (holdout)."""
    prefix = "eval/" if split == "dev" else "eval/holdout_"
    out = {m: metrics[prefix + m] for m in glue_metrics.METRICS[task] if prefix + m in metrics}
    if len(out) < len(glue_metrics.METRICS[task]):
        hint = " (run with --holdout_size)" if split == "holdout" else ""
        raise ValueError(f"a {task} run lacks its {split} metrics{hint}; it has {sorted(metrics)}")
    return out


@dataclasses.dataclass
class Cell:
    """One (checkpoint, task) at its selected learning rate."""

    learning_rate: float
    seeds: list[int]
    metrics: dict[str, tuple[float, float]]  # dev metric -> (mean, sample std) over seeds
    score: tuple[float, float]  # the dev task score, (mean, std)
    per_seed: dict[int, dict[str, float]]  # seed -> dev metrics
    selection: dict[float, float]  # each complete learning rate -> its mean selection score
    unfinished: dict[float, int]  # learning rates left out -> their runs that did not finish


@dataclasses.dataclass
class Row:
    """One checkpoint: a cell per task and the GLUE score over the seeds every task has."""

    checkpoint: str
    cells: dict[str, Cell]
    glue: tuple[float, float] | None  # (mean, std) over `glue_seeds`
    glue_seeds: list[int]


def select(runs: Sequence[dict], tasks: Sequence[str], select_on: str = "dev") -> list[Row]:
    """A row per checkpoint (in the order of `runs`): for each task, the learning rate with
    the best mean over seeds of the selection score (the dev task score, or the holdout's), the
    first in grid order on a tie, and that learning rate's dev metrics. A learning rate with a
    run that did not finish (diverged, failed, not run yet) is left out. The GLUE score is
    taken per seed, then mean ± std, over the seeds every task's cell has."""
    if select_on not in SELECT_ON:
        raise ValueError(f"select_on must be dev or holdout, not {select_on!r}")
    rows = []
    for checkpoint in dict.fromkeys(r["checkpoint"] for r in runs):
        cells = {}
        for task in tasks:
            by_lr = {}
            for r in runs:
                if r["checkpoint"] == checkpoint and r["task"] == task:
                    by_lr.setdefault(r["learning_rate"], []).append(r)
            # A learning rate competes once all its seeds have finished: a seed that diverged
            # (a failed run) rules its learning rate out.
            unfinished = {lr: sum(not _done(r) for r in rs) for lr, rs in by_lr.items()}
            selection = {
                lr: _mean(
                    glue_metrics.task_score(task, metrics_of(task, r["metrics"], select_on))
                    for r in rs
                )
                for lr, rs in by_lr.items()
                if not unfinished[lr]
            }
            if not selection:
                continue
            best = max(selection, key=lambda lr: _finite(selection[lr]))  # first of the ties
            per_seed = {r["seed"]: metrics_of(task, r["metrics"]) for r in by_lr[best]}
            cells[task] = Cell(
                learning_rate=best,
                seeds=sorted(per_seed),
                metrics={
                    m: _mean_std(v[m] for v in per_seed.values())
                    for m in glue_metrics.METRICS[task]
                },
                score=_mean_std(glue_metrics.task_score(task, v) for v in per_seed.values()),
                per_seed=per_seed,
                selection=selection,
                unfinished={lr: n for lr, n in unfinished.items() if n},
            )
        seeds = [s for s in _seed_order(cells) if all(s in c.per_seed for c in cells.values())]
        glue = None
        if seeds and len(cells) == len(tasks):
            glue = _mean_std(
                glue_metrics.glue_score({t: c.per_seed[s] for t, c in cells.items()}) for s in seeds
            )
        rows.append(Row(checkpoint, cells, glue, seeds if glue else []))
    return rows


def _done(run):
    return run["status"] == "done" and bool(run["metrics"])


def _mean(values):
    values = list(values)
    return sum(values) / len(values)


def _finite(x):
    return x if math.isfinite(x) else -math.inf


def _mean_std(values):
    mean, std, _ = results.mean_std(list(values))
    return (math.nan, math.nan) if mean is None else (mean, std)


def _seed_order(cells):
    return sorted({s for c in cells.values() for s in c.seeds})


#### Tables and plot


def _show(mean_std, n):
    mean, std = mean_std
    if not math.isfinite(mean):
        return ""
    return f"{mean:.3f}" if n < 2 else f"{mean:.3f} ± {std:.3f}"


def _task_header(task):
    return f"{TITLES.get(task, task)} ({'/'.join(SHORT[m] for m in glue_metrics.METRICS[task])})"


def markdown(
    rows: Sequence[Row],
    runs: Sequence[dict],
    tasks: Sequence[str],
    select_on: str,
    holdout: dict[str, int] | None = None,
) -> str:
    """glue.md: the table, how the learning rates were chosen, the selection scores of every
    learning rate (the chosen one bold), and the runs that did not finish."""
    on = (
        "the dev set (the BERT paper's rule)"
        if select_on == "dev"
        else "training examples held out of training ("
        + ", ".join(f"{t} {n}" for t, n in (holdout or {}).items())
        + "); dev is read only at the chosen rate"
    )
    columns = ["checkpoint", "GLUE", *[_task_header(t) for t in tasks]]
    lines = [
        f"# GLUE dev results (learning rate selected on {select_on})",
        "",
        f"Each task's learning rate: the best mean task score over seeds on {on}. Cells: the "
        "dev metrics at that rate, mean ± std (sample std) over seeds; a task's score is the "
        "mean of its metrics, the GLUE score the mean of the task scores (per seed, then mean ± "
        "std).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
    ]
    for row in rows:
        cells = [row.checkpoint, _show(row.glue, len(row.glue_seeds)) if row.glue else ""]
        for task in tasks:
            cell = row.cells.get(task)
            cells.append(
                " / ".join(_show(cell.metrics[m], len(cell.seeds)) for m in cell.metrics)
                if cell
                else ""
            )
        lines.append("| " + " | ".join(cells) + " |")
    lrs = list(dict.fromkeys(r["learning_rate"] for r in runs))
    columns = ["checkpoint", "task", *[f"lr={lr:g}" for lr in lrs], "selected", "seeds"]
    lines += [
        "",
        f"## Selection scores ({select_on} task score, mean over seeds; bold: selected; a rate "
        "with unfinished runs is left out)",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
    ]
    for row in rows:
        for task, cell in row.cells.items():
            scores = [_selection_cell(cell, lr) for lr in lrs]
            seeds = ", ".join(map(str, cell.seeds))
            lines.append(
                f"| {row.checkpoint} | {task} | " + " | ".join(scores)
                + f" | {cell.learning_rate:g} | {seeds} |"
            )  # fmt: skip
    unfinished = [r for r in runs if r["status"] != "done"]
    if unfinished:
        lines += ["", f"Runs that did not finish ({len(unfinished)}, left out):", ""]
        lines += [f"- {r['run_dir']}: {r['status']}" for r in unfinished]
    return "\n".join(lines) + "\n"


def _selection_cell(cell, lr):
    if lr in cell.unfinished:
        return f"({cell.unfinished[lr]} unfinished)"
    if lr not in cell.selection:
        return ""
    score = f"{cell.selection[lr]:.3f}"
    return f"**{score}**" if lr == cell.learning_rate else score


def table_rows(rows: Sequence[Row], tasks: Sequence[str], select_on: str) -> list[dict]:
    """glue.csv's rows: per checkpoint the GLUE score and, per task, each dev metric and the
    task score (mean, and std over 2+ seeds; empty for one), the selected learning rate and the
    number of seeds."""
    out = []
    for row in rows:
        line = {"checkpoint": row.checkpoint, "select_on": select_on}
        _put(line, "glue_score", row.glue, len(row.glue_seeds))
        line["glue_seeds"] = len(row.glue_seeds)
        for task in tasks:
            cell = row.cells.get(task)
            n = len(cell.seeds) if cell else 0
            for m in glue_metrics.METRICS[task]:
                _put(line, f"{task}/{m}", cell.metrics[m] if cell else None, n)
            _put(line, f"{task}/score", cell.score if cell else None, n)
            line[f"{task}/learning_rate"] = cell.learning_rate if cell else ""
            line[f"{task}/seeds"] = n
        out.append(line)
    return out


def _put(line, key, mean_std, n):
    mean, std = mean_std or (None, None)
    line[key], line[f"{key}_std"] = mean, (std if n > 1 else None)


def all_rows(runs: Sequence[dict]) -> list[dict]:
    """glue_all.csv's rows: every run, its dev and holdout task scores and eval/* metrics."""
    out = []
    for r in runs:
        task, metrics = r["task"], r["metrics"]
        line = {k: r[k] for k in ("checkpoint", "task", "learning_rate", "seed", "status")}
        for split, key in (("dev", "score"), ("holdout", "holdout_score")):
            try:
                line[key] = glue_metrics.task_score(task, metrics_of(task, metrics, split))
            except ValueError:
                line[key] = ""
        line.update(metrics)
        line["run_dir"] = r["run_dir"]
        out.append(line)
    return out


def _write_csv(path, rows):
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = [c for c in columns if c != "run_dir"] + (["run_dir"] if "run_dir" in columns else [])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, head)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})


def _csv_value(value):
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return "" if value is None else value


def plot(rows: Sequence[Row], tasks: Sequence[str], path: str, select_on: str = "dev") -> str:
    """Bars per checkpoint: the GLUE score and each task's score (dev, at the selected learning
    rate), error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = ["GLUE", *[TITLES.get(t, t) for t in tasks]]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(groups) * max(1, len(rows)) ** 0.5, 4))
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(groups))
    for i, row in enumerate(rows):
        pairs = [row.glue or (math.nan, math.nan)]
        pairs += [row.cells[t].score if t in row.cells else (math.nan, math.nan) for t in tasks]
        means = [m for m, _ in pairs]
        stds = [0.0 if not math.isfinite(s) else s for _, s in pairs]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label=row.checkpoint)  # fmt: skip
    ax.set_xticks(x, groups)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel("dev score (task: mean of its metrics)")
    ax.set_title(
        f"GLUE dev, learning rate selected on {select_on}\nerror bars: std over seeds", fontsize=10
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(
    workdir: str,
    points: Sequence[GluePoint],
    tasks: Sequence[str],
    select_on: str = "dev",
    holdout: dict[str, int] | None = None,
) -> list[str]:
    """glue.md, glue.csv, glue_all.csv and glue.png in `workdir`, from the points' runs as they
    are now (unfinished runs are left out, and glue.md lists them). Returns the paths."""
    runs = collect(points)
    rows = select(runs, tasks, select_on)
    paths = [os.path.join(workdir, f) for f in ("glue.md", "glue.csv", "glue_all.csv")]
    with open(paths[0], "w") as f:
        f.write(markdown(rows, runs, tasks, select_on, holdout))
    _write_csv(paths[1], table_rows(rows, tasks, select_on))
    _write_csv(paths[2], all_rows(runs))
    paths.append(plot(rows, tasks, os.path.join(workdir, "glue.png"), select_on))
    return paths


#### Running


def run(
    workdir: str,
    init_from: Sequence[str],
    *,
    train_command: list[str],
    tasks: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    learning_rates: Sequence[float] | None = None,
    config: str = DEFAULT_CONFIG,
    overrides: dict | None = None,
    epochs: float | None = None,
    holdout_size: float = 0,
    select_on: str = "dev",
    launcher: LocalLauncher | SubmititLauncher | None = None,
    print_commands: bool = False,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Fine-tunes every checkpoint of `init_from` ("" or "scratch": from scratch) on every task
    (default: all of the config's) for each learning rate (default: the config's
    LEARNING_RATES) and seed, as `train_command` + each point's flags through `launcher` (one
    local subprocess at a time by default), then writes the tables and the plot. Finished
    points are skipped, interrupted ones resume. With `print_commands`, prints the commands
    and runs nothing. Returns the labels of the points that did not finish."""
    if select_on not in SELECT_ON:
        raise ValueError(f"select_on must be dev or holdout, not {select_on!r}")
    if select_on == "holdout" and not holdout_size:
        raise ValueError("--select_on=holdout needs --holdout_size (e.g. 0.1: 10% of train)")
    module = load_config_module(config)
    tasks = list(tasks or module.TRAIN_EXAMPLES)
    learning_rates = list(learning_rates or module.LEARNING_RATES)
    points = make_points(workdir, init_from, tasks, learning_rates, seeds, config, overrides,
                         epochs, holdout_size)  # fmt: skip
    if print_commands:
        for g in points:
            log(shlex.join(g.point.command(train_command)))
        return []
    launcher = launcher or LocalLauncher()
    workdir_lib.path(workdir).mkdir(parents=True, exist_ok=True)
    plain = [g.point for g in points]
    queue = Queue(plain, plain, log)
    log(f"{len(plain)} points, {len(plain) - queue.total} finished, {queue.total} to run")
    launcher.launch(queue, train_command, log)
    if launcher.stopping:
        queue.drop_waiting()
    holdout = {t: holdout_examples(holdout_size, module.TRAIN_EXAMPLES[t]) for t in tasks}
    outputs = write_outputs(workdir, points, tasks, select_on, holdout if holdout_size else None)
    log("wrote " + ", ".join(outputs))
    if launcher.stopping:
        raise SystemExit("stopped (SIGTERM or Ctrl-C); rerun the same command to resume")
    return queue.failed
