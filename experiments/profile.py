"""Where a config's train step spends its time, per XLA op (a `jax.profiler` trace joined with
the optimized HLO): matmuls against the rest, grouped by layer op, the slowest ops.

  python experiments/profile.py --config=configs/gpt_shakespeare_char.py [--config.KEY=VALUE ...]
  python experiments/profile.py --config=... --trace_dir=/tmp/trace   # keep the trace (Perfetto)

Run it on a quiet machine; the trace itself slows the step a little.
"""

from lmjax import host_malloc

host_malloc.restart_tuned(__name__)  # first: on a CPU host, glibc's malloc for XLA (see there)

from lmjax import host_malloc

host_malloc.restart_tuned(__name__)  # first: on a CPU host, glibc's malloc for XLA (see there)

import contextlib
import glob
import os
import statistics
import tempfile
import time

import jax
from absl import flags
from ml_collections import config_flags

from lmjax import cli
from lmjax.train import benchmark, profile

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally `path:preset`.")
_STEPS = flags.DEFINE_integer("steps", 5, "Traced steps (after compilation and warmup).")
_TOP = flags.DEFINE_integer("top", 25, "Rows of each table.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", None, "Keep the trace here (default: a temp dir).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    with contextlib.ExitStack() as temporary:  # both folders removed at the end
        dump = temporary.enter_context(tempfile.TemporaryDirectory(prefix="lmjax_hlo_"))
        trace_dir = _TRACE_DIR.value or temporary.enter_context(
            tempfile.TemporaryDirectory(prefix="lmjax_trace_")
        )
        # Read when XLA's backend starts (at the first computation, after this): where to write
        # the optimized HLO of the train step. A dump flag the user set is replaced, not doubled.
        kept = [
            f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_dump")
        ]
        dump_flags = [f"--xla_dump_to={dump}", "--xla_dump_hlo_module_re=train_step"]
        os.environ["XLA_FLAGS"] = " ".join([*kept, *dump_flags])
        _profile(dump, trace_dir)


def _profile(dump: str, trace_dir: str) -> None:
    with benchmark.ready_step(_CONFIG.value) as ready:  # the batch benchmark.py times
        config, state, (batch,) = ready.setup.config, ready.state, ready.batches
        times = []
        for i in range(8):
            start = time.perf_counter()
            state, metrics = ready.steps.train(state, batch)
            jax.block_until_ready(metrics)
            if i >= 3:
                times.append(time.perf_counter() - start)
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(_STEPS.value):
                state, metrics = ready.steps.train(state, batch)
            jax.block_until_ready(metrics)
    (hlo,) = glob.glob(f"{dump}/*train_step*after_optimizations.txt")
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
