"""GLUE for one or more checkpoints: every task fine-tuned over the learning-rate grid and seeds
(each point a resumable train.py run, as experiments/sweep.py runs them), each task's learning
rate selected on dev (the BERT paper) or on a held-out part of train, then the table.

  python experiments/glue.py --init_from=/tmp/lmjax/bert_tiny,scratch --workdir=/tmp/glue \
      [--tasks=rte,stsb] [--seeds=0,1,2] [--select_on=holdout --holdout_size=0.1] [--parallel=2]

Writes WORKDIR/glue.md, glue.csv (a row per checkpoint: each task's dev metrics at its selected
learning rate and the GLUE score, mean ± std over seeds), glue_all.csv (every run) and glue.png.
Runs live in WORKDIR/<checkpoint>/<task>/lr=<lr>,seed=<seed>; rerunning skips finished ones and
rewrites the tables. See lmjax/sweep/glue.py.
"""

from lmjax import host_malloc

host_malloc.restart_tuned(__name__)  # first: on a CPU host, glibc's malloc for XLA (see there)

import os

from absl import flags

from lmjax import cli, errors, sweep
from lmjax.sweep import glue

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")

_INIT_FROM = flags.DEFINE_list(
    "init_from", None, "Checkpoints (pretraining or imported workdirs), one row each; 'scratch' "
    "or an empty entry: from scratch."
)  # fmt: skip
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the runs and the tables.")
_CONFIG = flags.DEFINE_string(
    "config", glue.DEFAULT_CONFIG, "The task config `path[:preset]`; `:task` is added per task "
    "(`configs/glue.py:test` runs `:rte,test`, ...)."
)  # fmt: skip
_TASKS = flags.DEFINE_list("tasks", None, "GLUE tasks (default: all of the config's).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every (task, learning rate).")
_LRS = flags.DEFINE_list(
    "learning_rates", None, "The learning-rate grid (default: the config's LEARNING_RATES)."
)
_SELECT_ON = flags.DEFINE_enum(
    "select_on", "dev", list(glue.SELECT_ON), "Where each task's learning rate is chosen: dev "
    "(the BERT paper) or the held-out training examples (--holdout_size)."
)  # fmt: skip
_HOLDOUT = flags.DEFINE_float(
    "holdout_size", 0.0, "Training examples held out and scored as eval/holdout_*: below 1 a "
    "fraction of each task's training set (0.1: 10%), else a count; 0: none."
)  # fmt: skip
_EPOCHS = flags.DEFINE_float(
    "epochs", None, "Epochs per task: num_train_steps = epochs * examples // batch_size, warmup "
    "10% (default: the config's)."
)  # fmt: skip
_OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "KEY=VALUE: --config.KEY=VALUE for every run (repeatable)."
)
_PRINT = flags.DEFINE_boolean("print_commands", False, "Print the train.py commands, run none.")
_LAUNCHER = sweep.define_launcher_flags()
flags.mark_flags_as_required(["init_from", "workdir"])


def _all(kind):
    """A validator: every entry of a list flag parses as `kind`."""

    def check(values):
        try:
            return all(kind(v) is not None for v in values or [])
        except ValueError:
            return False

    return check


flags.register_validator("learning_rates", _all(float), "give numbers, e.g. 1e-4,3e-4")
flags.register_validator("seeds", _all(int), "give whole numbers, e.g. 0,1,2")


def main(argv):
    del argv
    train_command = sweep.train_command(TRAIN)
    try:
        launcher = _LAUNCHER(_WORKDIR.value, job_name="lmjax_glue")
        failed = glue.run(
            _WORKDIR.value,
            _INIT_FROM.value or [""],
            train_command=train_command,
            tasks=_TASKS.value,
            seeds=[int(s) for s in _SEEDS.value],
            learning_rates=[float(lr) for lr in _LRS.value] if _LRS.value else None,
            config=_CONFIG.value,
            overrides=glue.parse_overrides(_OVERRIDE.value),
            epochs=_EPOCHS.value,
            holdout_size=_HOLDOUT.value,
            select_on=_SELECT_ON.value,
            launcher=launcher,
            print_commands=_PRINT.value,
            log=lambda line: print(line, flush=True),
        )
    except (ValueError, TypeError, FileNotFoundError) as e:  # bad flags: nothing has run
        raise errors.InputError(str(e)) from e
    if failed:
        raise errors.RunStopped(f"{len(failed)} run(s) did not finish: {', '.join(failed)}")


if __name__ == "__main__":
    cli.run(main)
