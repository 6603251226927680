"""Where a config's train step spends its time, per XLA op (a `jax.profiler` trace joined with
the optimized HLO): matmuls against the rest, grouped by layer op, the slowest ops.

  python experiments/profile.py --config=configs/gpt_shakespeare_char.py [--config.KEY=VALUE ...]
  python experiments/profile.py --config=... --trace_dir=/tmp/trace   # keep the trace (Perfetto)

Run it on a quiet machine; the trace itself slows the step a little.
"""

import os
import tempfile

# Before JAX starts: XLA writes the optimized HLO of the train step here.
_DUMP = tempfile.mkdtemp(prefix="lmjax_hlo_")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={_DUMP} --xla_dump_hlo_module_re=train_step"
)

import glob  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from lmjax import cli  # noqa: E402
from lmjax.train import benchmark, profile  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally `path:preset`.")
_STEPS = flags.DEFINE_integer("steps", 5, "Traced steps (after compilation and warmup).")
_TOP = flags.DEFINE_integer("top", 25, "Rows of each table.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", None, "Keep the trace here (default: a temp dir).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    with benchmark.ready_step(_CONFIG.value) as ready:  # the batch benchmark.py times
        config, state, (batch,) = ready.setup.config, ready.state, ready.batches
        times = []
        for i in range(8):
            start = time.perf_counter()
            state, metrics = ready.steps.train(state, batch)
            jax.block_until_ready(metrics)
            if i >= 3:
                times.append(time.perf_counter() - start)
        trace_dir = _TRACE_DIR.value or tempfile.mkdtemp(prefix="lmjax_trace_")
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(_STEPS.value):
                state, metrics = ready.steps.train(state, batch)
            jax.block_until_ready(metrics)
    (hlo,) = glob.glob(f"{_DUMP}/*train_step*after_optimizations.txt")
    (trace,) = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
    with open(hlo) as f:
        ops = profile.parse_hlo(f.read())
    ran = profile.op_times(ops, profile.read_trace(trace), _STEPS.value)
    print(f"{jax.devices()[0].device_kind}, {config.batch_size} x {config.seq_len} tokens")
    print(profile.report(ran, 1000 * statistics.median(times), _TOP.value))
    if _TRACE_DIR.value:
        print(f"trace: {trace} (open in ui.perfetto.dev)")


if __name__ == "__main__":
    cli.run(main)
