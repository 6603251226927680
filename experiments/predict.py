"""Predictions of a fine-tuned GLUE workdir on a file of its task, in GLUE's submission format.

  python experiments/predict.py --workdir=/tmp/glue/scratch/rte/lr=0.0003,seed=0 \
      --input=glue_data/RTE/test.tsv --output=/tmp/RTE.tsv [--step=N] [--batch_size=64]

`--input`: a train/dev file or GLUE's unlabelled test file of the workdir's `data.glue_task`
(or an embedded name, e.g. glue_rte_dev). Writes `index<TAB>prediction`, then one line per
example in file order: the label (e.g. `entailment`) or, for STS-B, the score with 3 decimals.
"""

import sys

from absl import app, flags

from lmjax.train import predict

_WORKDIR = flags.DEFINE_string("workdir", None, "A fine-tuned GLUE run directory.")
_INPUT = flags.DEFINE_string("input", None, "A TSV file of the workdir's task, labelled or not.")
_OUTPUT = flags.DEFINE_string("output", None, "Where the predictions go (TSV).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Examples per forward pass.")
flags.mark_flags_as_required(["workdir", "input", "output"])


def main(argv):
    del argv
    try:
        n = predict.write_predictions(
            _WORKDIR.value, _INPUT.value, _OUTPUT.value, _STEP.value, _BATCH_SIZE.value
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"predict.py: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {n} predictions to {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
