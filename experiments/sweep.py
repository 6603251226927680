"""Run a sweep: every point of a sweep file as a `train.py` run in its own subdirectory, then
the tables (`results.csv`, `results.md`) and plots (PNG) in WORKDIR.

  python experiments/sweep.py --config=configs/gpt_shakespeare_char.py \
      --sweep=configs/sweeps/shakespeare_lr.py --workdir=/tmp/sweep [--parallel=2]

Rerunning skips finished points and resumes interrupted ones; `--print_commands` prints one
train.py command per point instead (for a cluster queue). See lmjax/sweep.py for the format.
"""

import sys

from absl import app, flags

from lmjax import sweep

_CONFIG = flags.DEFINE_string(
    "config", None, "Config of the points, `path[:arg]` (default: the sweep file's CONFIG)."
)
_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file defining get_sweep().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory holding one run directory per point.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Points run at the same time.")
_PRINT = flags.DEFINE_boolean("print_commands", False, "Print the train.py commands, run none.")
_STAGE = flags.DEFINE_enum(
    "stage",
    "all",
    ["all", "main", sweep.FINETUNE],
    "Which points: all, get_sweep's, or the fine-tunes.",
)
flags.mark_flags_as_required(["sweep", "workdir"])


def main(argv):
    del argv
    try:
        failed = sweep.run(
            _CONFIG.value,
            _SWEEP.value,
            _WORKDIR.value,
            parallel=_PARALLEL.value,
            print_commands=_PRINT.value,
            stage=_STAGE.value,
            log=lambda line: print(line, flush=True),
        )
    except (ValueError, TypeError, FileNotFoundError) as e:  # a bad sweep: nothing has run
        sys.exit(f"sweep.py: {e}")
    if failed:
        sys.exit(f"sweep.py: {len(failed)} point(s) did not finish: {', '.join(failed)}")


if __name__ == "__main__":
    app.run(main)
