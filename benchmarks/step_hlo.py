"""The optimized HLO of a config's train step, normalized (no value numbers, metadata or
source files), so that two checkouts can be diffed: the same text is the same compiled step,
so no change in speed. Run it with each checkout's lmjax first on PYTHONPATH:

  PYTHONPATH=$OLD python benchmarks/step_hlo.py --config=configs/gpt_shakespeare_char.py > old
  PYTHONPATH=$NEW python benchmarks/step_hlo.py --config=configs/gpt_shakespeare_char.py > new
  diff old new
"""

import glob
import os
import re
import sys
import tempfile

from absl import app
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally `path:preset`.")


def normalize(hlo: str) -> str:
    """The instruction lines, without value numbers and the attributes that name sources."""
    lines = []
    for line in hlo.splitlines():
        if re.match(r"^\s*(ROOT )?%", line):
            line = re.sub(r", metadata=\{[^}]*\}", "", line)
            line = re.sub(
                r",? ?(stack_frame_id|backend_config|frontend_attributes)=(\{[^}]*\}|\S+)", "", line
            )
            lines.append(re.sub(r"\.\d+\b", "", line).rstrip())
    return "\n".join(lines)


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as dump:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_dump_to={dump} --xla_dump_hlo_module_re=train_step"
        )
        import jax

        from lmjax.train import benchmark

        with benchmark.ready_step(_CONFIG.value) as ready:
            _, metrics = ready.steps.train(ready.state, ready.batches[0])
            jax.block_until_ready(metrics)
        (path,) = glob.glob(f"{dump}/*train_step*after_optimizations.txt")
        with open(path) as f:
            sys.stdout.write(normalize(f.read()) + "\n")


if __name__ == "__main__":
    app.run(main)
