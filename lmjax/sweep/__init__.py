"""Sweeps: lists of config overrides, each point an ordinary training run in its own directory.

    spec.py      sweep files, axes (`product`, `zip_axes`), `Point`, point names, --config flags
    validate.py  every point's config built as train.py builds it and checked (`plan`)
    launch.py    how points run: `LocalLauncher` (subprocesses), `SubmititLauncher` (SLURM)
    __init__     `run`: plan, launch, then collate (results.csv/md via lmjax.results, plots)

Every point runs in `WORKDIR/<name>` (second stage: `WORKDIR/finetune/<name>`), its name made
of its overrides, so a rerun finds it: finished points are skipped, interrupted ones resume.
See spec.py for the sweep file's format.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable

from lmjax import errors, plots, results
from lmjax import workdir as workdir_lib
from lmjax.config_files import config_flag
from lmjax.sweep.launch import (
    LAUNCHERS,
    LocalLauncher,
    Queue,
    SubmititLauncher,
    define_launcher_flags,
    make_launcher,
    train_command,
)
from lmjax.sweep.spec import (
    FINETUNE,
    Point,
    load_sweep_file,
    point_name,
    product,
    zip_axes,
)
from lmjax.sweep.validate import check_overrides, plan

__all__ = [
    "FINETUNE",
    "LAUNCHERS",
    "STAGES",
    "LocalLauncher",
    "Point",
    "SubmititLauncher",
    "check_overrides",
    "config_flag",
    "define_launcher_flags",
    "load_sweep_file",
    "make_launcher",
    "plan",
    "point_name",
    "product",
    "run",
    "train_command",
    "zip_axes",
]

STAGES = ("all", "main", FINETUNE)


def run(
    config_arg: str | None,
    sweep_path: str,
    workdir: str,
    *,
    train_command: list[str],
    launcher: LocalLauncher | SubmititLauncher | None = None,
    print_commands: bool = False,
    stage: str = "all",
    log: Callable[[str], None] = print,
) -> list[str]:
    """Runs the sweep's points (`train_command` + each point's flags, through `launcher`,
    by default one local subprocess at a time), then writes the tables and plots; with
    `print_commands`, prints the commands instead. Returns the labels of the points that did
    not finish."""
    all_points = plan(config_arg, sweep_path, workdir)
    if stage not in STAGES:
        raise errors.InputError(f"stage must be all, main or {FINETUNE}, not {stage!r}")
    own_stage = "" if stage == "main" else stage
    points = [p for p in all_points if stage == "all" or p.stage == own_stage]
    if print_commands:
        for p in points:
            log(shlex.join(p.command(train_command)))
        return []
    launcher = launcher or LocalLauncher()
    workdir_lib.path(workdir).mkdir(parents=True, exist_ok=True)
    workdir_lib.write_sweep(
        workdir,
        {
            "config": all_points[0].config,
            "sweep": sweep_path,
            "argv": sys.argv,
            "points": [p.label for p in all_points],  # the tables keep this order
        },
    )
    queue = Queue(points, all_points, log)
    log(f"{len(points)} points, {len(points) - queue.total} finished, {queue.total} to run")
    launcher.launch(queue, train_command, log)
    if launcher.stopping:
        queue.drop_waiting()
    outputs = results.write_tables(workdir) + plots.plot_workdir(workdir)
    log("wrote " + ", ".join(outputs))
    if launcher.stopping:
        raise SystemExit("sweep stopped (SIGTERM or Ctrl-C); rerun the same command to resume")
    return queue.failed
