"""Plot a run's learning curves (losses and eval accuracies) from its metrics.jsonl.

python experiments/plot.py --workdir=/tmp/bert_tiny [--out=curves.png]
"""

from absl import app, flags

from lmjax import plots

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_OUT = flags.DEFINE_string("out", None, "PNG path (default: WORKDIR/curves.png).")
_TITLE = flags.DEFINE_string("title", None, "Figure title (default: the workdir's name).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    print(plots.plot_run(_WORKDIR.value, _OUT.value, _TITLE.value))


if __name__ == "__main__":
    app.run(main)
