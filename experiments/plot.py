"""Plot learning curves from metrics.jsonl: of one run, or of every run under a directory
(a sweep's or any other), with the metric-vs-parameter and per-setting summary figures.

python experiments/plot.py --workdir=/tmp/bert_tiny [--out=curves.png]
python experiments/plot.py --workdir=/tmp/sweep   # curves.png, vs_<axis>.png, results.png
"""

from absl import flags

from lmjax import cli, errors, plots, results, workdir

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir, or a directory of them.")
_OUT = flags.DEFINE_string("out", None, "PNG path for a single run (default: WORKDIR/curves.png).")
_TITLE = flags.DEFINE_string("title", None, "Figure title of a single run (default: its name).")
_TABLES = flags.DEFINE_boolean(
    "tables", True, "For a directory of runs, also write results.csv/md."
)
_METRICS = flags.DEFINE_list(
    "metrics",
    None,
    "For a directory of runs: the results.csv columns to plot (default: every final eval metric).",
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    if not workdir.exists(_WORKDIR.value):
        raise errors.MissingInput(f"--workdir={_WORKDIR.value} does not exist")
    try:
        if _OUT.value or _TITLE.value:
            print(plots.plot_run(_WORKDIR.value, _OUT.value, _TITLE.value))
            return
        paths = plots.plot_workdir(_WORKDIR.value, _METRICS.value)
    except FileNotFoundError as e:  # a directory without metrics.jsonl
        raise errors.MissingInput(str(e)) from e
    if _TABLES.value and not workdir.has_metrics(_WORKDIR.value):
        paths += results.write_tables(_WORKDIR.value)
    print("\n".join(paths))


if __name__ == "__main__":
    cli.run(main)
