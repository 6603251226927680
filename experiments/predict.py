"""Predictions of a fine-tuned GLUE workdir on a file of its task, in GLUE's submission format.

  python experiments/predict.py --workdir=/tmp/glue/scratch/rte/lr=0.0003,seed=0 \
      --input=glue_data/RTE/test.tsv --output=/tmp/RTE.tsv [--step=N] [--batch_size=64]

`--input`: a train/dev file or GLUE's unlabelled test file of the workdir's `data.glue_task`
(or an embedded name, e.g. glue_rte_dev). Writes `index<TAB>prediction`, then one line per
example in file order: the label (e.g. `entailment`) or, for STS-B, the score with 3 decimals.
"""

from lmjax import host_malloc

host_malloc.restart_tuned(__name__)  # first: on a CPU host, glibc's malloc for XLA (see there)

from absl import flags

from lmjax import cli
from lmjax.train import inference, predict

_WORKDIR = flags.DEFINE_string("workdir", None, "A fine-tuned GLUE run directory.")
_INPUT = flags.DEFINE_string("input", None, "A TSV file of the workdir's task, labelled or not.")
_OUTPUT = flags.DEFINE_string("output", None, "Where the predictions go (TSV).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Examples per forward pass.", lower_bound=1)
flags.mark_flags_as_required(["workdir", "input", "output"])


def main(argv):
    del argv
    inference.check_workdir(_WORKDIR.value, _STEP.value, task="classify")
    n = predict.write_predictions(
        _WORKDIR.value, _INPUT.value, _OUTPUT.value, _STEP.value, _BATCH_SIZE.value
    )
    print(f"wrote {n} predictions to {_OUTPUT.value}")


if __name__ == "__main__":
    cli.run(main)
