"""Where a config's train step spends its time, per XLA op (a `jax.profiler` trace joined with
the optimized HLO): matmuls against the rest, grouped by layer op, the slowest ops.

  python benchmarks/profile_step.py --config=configs/gpt_shakespeare_char.py [--config.K=V ...]
  python benchmarks/profile_step.py --config=... --trace_dir=/tmp/trace  # keep it (Perfetto)

Run it on a quiet machine; the trace itself slows the step a little. Each fused op of the trace
is named in the HLO; from there it gets its FLOPs (the dots inside it), the model path it came
from (`block_3/mlp/fc`, forward or backward, from the HLO metadata) and so a group. Caveat on
CPU: a dot that XLA runs on its Eigen thread pool (the weight gradients, typically) returns at
once and its time shows up in the ops it overlaps.
"""

from lmjax import host_malloc

host_malloc.restart_tuned(__name__)  # first: on a CPU host, glibc's malloc for XLA (see there)

import collections
import contextlib
import dataclasses
import glob
import gzip
import json
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Iterable

import jax
from absl import flags
from ml_collections import config_flags

from lmjax import cli
from lmjax.train import benchmark

_SKIP = {"parameter", "constant", "broadcast", "bitcast", "reshape", "get-tuple-element", "tuple"}
# name = shape (an array's, or a tuple's: a custom call's several outputs) opcode(operands...
_INSTR = re.compile(r"(?:ROOT )?%([\w.\-]+) = (\w+\[[\d,]*\]\S*|\([^()]*\)) ([\w\-]+)\((.*)")


@dataclasses.dataclass
class Op:
    name: str
    shape: str
    flops: int  # of the dots inside it
    kinds: dict  # HLO opcode -> count inside the fusion
    where: str  # "fwd block_3/mlp/fc", from the HLO metadata
    ms: float = 0.0  # per step
    calls: int = 0  # per step


def _dims(shape: str) -> list[int]:
    inside = shape[shape.index("[") + 1 : shape.index("]")]
    return [int(d) for d in inside.split(",") if d]


def _where(op_name: str) -> str:
    direction = "bwd" if "transpose(jvp(" in op_name else "fwd" if "jvp(" in op_name else ""
    path = re.sub(r"^jit\([^)]*\)/", "", op_name)
    path = re.sub(r"^(transpose\()?jvp\([^)]*\)\)?/", "", path)
    path = re.sub(r"^\w+\.encode/", "", path)  # the model's encode method: the blocks
    path = re.sub(r"/(dot_general|transpose|mul|add|div|sub)$", "", path)
    return f"{direction} {path}".strip()


def parse_hlo(text: str) -> dict[str, Op]:
    """Every instruction of the module's computations, with the FLOPs of the dots it calls."""
    computations: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            current = computations.setdefault(header.group(1), [])
        elif current is not None and line.strip().startswith(("%", "ROOT")):
            current.append(line.strip())
    ops = {}
    for lines in computations.values():
        for line in lines:
            m = _INSTR.match(line)
            if not m:
                continue
            name, shape, opcode, rest = m.groups()
            shape = re.sub(r"\{[^}]*\}", "", shape)  # no layouts: f32[8,32], (f32[8], f32[2])
            called = re.findall(r"calls=%([\w.\-]+)", rest)
            body = [line] if not called else [c for cc in called for c in computations.get(cc, [])]
            flops, kinds, where, shapes = 0, collections.Counter(), "", {}
            for inner in body:
                im = _INSTR.match(inner)
                if not im:
                    continue
                shapes[im.group(1)] = _dims(im.group(2))
                if im.group(3) not in _SKIP:
                    kinds[im.group(3)] += 1
                if im.group(3) == "dot" and called:
                    lhs = re.match(r"%([\w.\-]+)", im.group(4)).group(1)
                    contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", inner).group(1)
                    k = math.prod(shapes[lhs][int(d)] for d in contracting.split(",") if d)
                    flops += 2 * math.prod(_dims(im.group(2))) * k
                meta = re.search(r'op_name="([^"]*)"', inner)
                if meta and not where:
                    where = _where(meta.group(1))
            ops[name] = Op(name, shape, flops, dict(kinds), where)
    return ops


def read_trace(path: str) -> list[dict]:
    """The complete events ("ph": "X") of a perfetto trace written by `jax.profiler.trace`."""
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X"]


def op_times(ops: dict[str, Op], events: Iterable[dict], steps: int) -> list[Op]:
    """The ops of `ops` that ran, with their time and calls per step, slowest first."""
    seen = {}
    for e in events:
        op = ops.get(e.get("args", {}).get("hlo_op") or e["name"])
        if op is None:
            continue
        op = seen.setdefault(op.name, dataclasses.replace(op))
        op.ms += e["dur"] / 1000 / steps
        op.calls += 1
    for op in seen.values():
        op.calls //= steps
    return sorted(seen.values(), key=lambda o: -o.ms)


def _group(op: Op) -> str:
    where = re.sub(r"block_\d+/", "", op.where) or re.sub(r"[.\d]+$", "", op.name)
    return f"{where} ({'matmul' if op.flops else 'other'})"


def report(ran: list[Op], step_ms: float, top: int = 25) -> str:
    """A text table: the step's split between matmuls and the rest, the groups (the same
    layer op summed over blocks), and the `top` slowest ops."""
    total = sum(o.ms for o in ran)
    dot_ms = sum(o.ms for o in ran if o.flops)
    flops = sum(o.flops * o.calls for o in ran)
    lines = [
        f"step {step_ms:.1f} ms (timed); ops in the trace {total:.1f} ms: matmuls {dot_ms:.1f} ms "
        f"({dot_ms / total:.0%}, {flops / 1e9:.2f} GFLOP, {flops / dot_ms / 1e6:.0f} GFLOP/s), "
        f"other {total - dot_ms:.1f} ms ({1 - dot_ms / total:.0%}); {len(ran)} ops a step",
        "",
        f"{'ms/step':>8} {'ops':>4}  group",
    ]
    groups = collections.defaultdict(lambda: [0.0, 0])
    for o in ran:
        groups[_group(o)][0] += o.ms
        groups[_group(o)][1] += o.calls
    for name, (ms, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"{ms:8.2f} {n:4d}  {name}")
    lines += ["", f"{'ms/step':>8} {'GFLOP/s':>8}  op, shape, what"]
    for o in ran[:top]:
        rate = f"{o.flops / o.ms / 1e6:8.0f}" if o.flops else " " * 8
        what = o.where if o.flops else f"{o.where} {o.kinds}"
        lines.append(f"{o.ms:8.2f} {rate}  {o.name} {o.shape} {what}")
    return "\n".join(lines)


def main(argv):
    del argv
    with contextlib.ExitStack() as temporary:  # both folders removed at the end
        dump = temporary.enter_context(tempfile.TemporaryDirectory(prefix="lmjax_hlo_"))
        trace_dir = flags.FLAGS.trace_dir or temporary.enter_context(
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
    steps = flags.FLAGS.steps
    with benchmark.ready_step(flags.FLAGS.config) as ready:  # the batch benchmark.py times
        config, state, (batch,) = ready.setup.config, ready.state, ready.batches
        times = []
        for i in range(8):
            start = time.perf_counter()
            state, metrics = ready.steps.train(state, batch)
            jax.block_until_ready(metrics)
            if i >= 3:
                times.append(time.perf_counter() - start)
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(steps):
                state, metrics = ready.steps.train(state, batch)
            jax.block_until_ready(metrics)
    (hlo,) = glob.glob(f"{dump}/*train_step*after_optimizations.txt")
    (trace,) = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
    with open(hlo) as f:
        ops = parse_hlo(f.read())
    ran = op_times(ops, read_trace(trace), steps)
    print(f"{jax.devices()[0].device_kind}, {config.batch_size} x {config.seq_len} tokens")
    print(report(ran, 1000 * statistics.median(times), flags.FLAGS.top))
    if flags.FLAGS.trace_dir:
        print(f"trace: {trace} (open in ui.perfetto.dev)")


if __name__ == "__main__":  # flags defined here: the tests import this module
    config_flags.DEFINE_config_file("config", None, "Config file, optionally `path:preset`.")
    flags.DEFINE_integer("steps", 5, "Traced steps (after compilation and warmup).")
    flags.DEFINE_integer("top", 25, "Rows of each table.")
    flags.DEFINE_string("trace_dir", None, "Keep the trace here (default: a temp dir).")
    flags.mark_flags_as_required(["config"])
    cli.run(main)
