"""Times train steps of a config after compilation; the last line printed is a JSON object.

  python experiments/benchmark.py --config=configs/gpt_shakespeare_char.py --steps=40 \
      [--config.model.num_layers=6 ...]
  python experiments/benchmark.py --config=configs/bert_books.py --data_only=1500 \
      --config.data.path=../shared/data/gutenberg/books      # the input pipeline alone

MFU counts 6 * N + 12 * L * D * T FLOPs per token (PaLM appendix B, nanoGPT's estimate_mfu)
against the peak of the device: a spec-sheet value for known TPUs/GPUs, else a measured matmul.
lmjax against its peers at the same shapes: `benchmarks/suite.py`.
"""

from lmjax import host_malloc

host_malloc.restart_tuned(__name__)  # first: on a CPU host, glibc's malloc for XLA (see there)

import json

from absl import app, flags
from ml_collections import config_flags

from lmjax import cli
from lmjax.train import benchmark

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally `path:preset`.")
_STEPS = flags.DEFINE_integer("steps", 40, "Timed steps (after warmup).")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps after compilation.")
_REAL_DATA = flags.DEFINE_bool("real_data", False, "Time on real batches instead of random ones.")
_DATA_ONLY = flags.DEFINE_integer(
    "data_only", 0, "Time the input pipeline alone over this many batches (no model)."
)


def main(argv):
    del argv
    if _CONFIG.value is None:
        raise app.UsageError("give --config=FILE")
    if _DATA_ONLY.value:
        result = benchmark.run_data(_CONFIG.value, _DATA_ONLY.value)
    else:
        result = benchmark.run(_CONFIG.value, _STEPS.value, _WARMUP.value, _REAL_DATA.value)
    for k, v in result.items():
        print(f"{k:>24}: {v:,.4g}" if isinstance(v, float) else f"{k:>24}: {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)
