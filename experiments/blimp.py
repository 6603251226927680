"""BLiMP zero-shot: how often a trained LM prefers the good sentence of each minimal pair.

  python experiments/blimp.py --workdir=/tmp/shakespeare [--step=N] [--limit=100] \
      [--output=/tmp/blimp_pairs.jsonl] [--metric=pll|pll_word_l2r] [--batch_size=64] \
      [--data=path/to/blimp]
  python experiments/blimp.py --workdir=/tmp/shakespeare --every_checkpoint --limit=100
  python experiments/blimp.py --seed_table=docs/experiments/blimp_10m  # ARM_SEED.json files

Any GPT (task clm: sum of token log-probs after a start token) or BERT pretraining workdir
(task mlm_nsp: pseudo-log-likelihood), trained here or imported with experiments/convert.py.
Prints overall, per-phenomenon and per-field accuracies beside the paper's models and the ties;
writes blimp.json and blimp.png into the workdir (beside --output when given) and, with
--output, one JSON line per pair. `--seed_table` reads copies of blimp.json named ARM_SEED.json
and prints the markdown table of each arm's mean ± std over its seeds. See docs/blimp.md.
"""

from lmjax import host_malloc

host_malloc.restart_tuned(__name__)  # first: on a CPU host, glibc's malloc for XLA (see there)

import os

from absl import flags

from lmjax import cli, errors
from lmjax.evals import blimp

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained GPT or BERT pretraining workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_DATA = flags.DEFINE_string(
    "data", None, "A BLiMP folder (data/*.jsonl) or a .jsonl file (default: the shipped pairs)."
)
_OUTPUT = flags.DEFINE_string("output", None, "A JSON-lines file of per-pair log-probabilities.")
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N pairs of each paradigm.")
_METRIC = flags.DEFINE_enum(
    "metric", None, ["pll", "pll_word_l2r"], "Masked LMs: the score that decides (default pll)."
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 64, "Rows (windows or masked copies) per forward pass; less for a big vocabulary."
)
_EVERY = flags.DEFINE_bool(
    "every_checkpoint", False, "Score every checkpoint (a curve) instead of one; no --output."
)
_SEED_TABLE = flags.DEFINE_string(
    "seed_table", None, "A folder of ARM_SEED.json summaries: print mean ± std per arm."
)


def main(argv):
    del argv
    if _SEED_TABLE.value:
        runs = blimp.seed_runs(_SEED_TABLE.value)
        print(blimp.format_seed_table({arm: blimp.over_seeds(r) for arm, r in runs.items()}))
        return
    if not _WORKDIR.value:
        raise errors.InputError("give --workdir=DIR (a trained GPT or BERT), or --seed_table")
    if _EVERY.value:
        if _STEP.value is not None or _OUTPUT.value:
            raise errors.InputError("--every_checkpoint scores every step: drop --step/--output")
        rows = blimp.curve(
            _WORKDIR.value, _DATA.value, _LIMIT.value, _METRIC.value, _BATCH_SIZE.value
        )
        for row in rows:
            print(
                f"step {row['step']:>7,}  tokens {row['tokens']:>13,}  {100 * row['overall']:.1f}"
            )
        for path in blimp.save_curve(rows, _WORKDIR.value):
            print(f"wrote {path}")
        return
    summary = blimp.evaluate(
        _WORKDIR.value,
        step=_STEP.value,
        data=_DATA.value,
        limit=_LIMIT.value,
        metric=_METRIC.value,
        batch_size=_BATCH_SIZE.value,
        output=_OUTPUT.value,
    )
    print(blimp.format_table(summary))
    folder = os.path.dirname(os.path.abspath(_OUTPUT.value)) if _OUTPUT.value else _WORKDIR.value
    for path in blimp.save_summary(summary, folder):
        print(f"wrote {path}")
    if _OUTPUT.value:
        print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    cli.run(main)
