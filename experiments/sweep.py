"""Run a sweep: every point of a sweep file as a `train.py` run in its own subdirectory, then
the tables (`results.csv`, `results.md`) and plots (PNG) in WORKDIR.

  python experiments/sweep.py --config=configs/gpt_shakespeare_char.py \
      --sweep=configs/sweeps/shakespeare_lr.py --workdir=/tmp/sweep [--parallel=2]
  ... --launcher=slurm --slurm_partition=gpu --slurm_gpus_per_node=1 --slurm_time=120

Rerunning skips finished points and resumes interrupted ones; `--print_commands` prints one
train.py command per point instead. See lmjax/sweep/spec.py for the sweep file's format.
"""

import os

from absl import flags

from lmjax import cli, errors, sweep

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")

_CONFIG = flags.DEFINE_string(
    "config", None, "Config of the points, `path[:arg]` (default: the sweep file's CONFIG)."
)
_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file defining get_sweep().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory holding one run directory per point.")
_PRINT = flags.DEFINE_boolean("print_commands", False, "Print the train.py commands, run none.")
_STAGE = flags.DEFINE_enum(
    "stage", "all", list(sweep.STAGES), "Which points: all, get_sweep's, or the fine-tunes."
)
_LAUNCHER = sweep.define_launcher_flags()
flags.mark_flags_as_required(["sweep", "workdir"])


def main(argv):
    del argv
    train_command = sweep.train_command(TRAIN)
    try:
        launcher = _LAUNCHER(_WORKDIR.value)
        failed = sweep.run(
            _CONFIG.value,
            _SWEEP.value,
            _WORKDIR.value,
            train_command=train_command,
            launcher=launcher,
            print_commands=_PRINT.value,
            stage=_STAGE.value,
            log=lambda line: print(line, flush=True),
        )
    except (ValueError, TypeError, FileNotFoundError) as e:  # a bad sweep: nothing has run
        raise errors.InputError(str(e)) from e
    if failed:
        raise errors.RunStopped(f"{len(failed)} point(s) did not finish: {', '.join(failed)}")


if __name__ == "__main__":
    cli.run(main)
