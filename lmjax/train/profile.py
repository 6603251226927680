"""Where a train step's time goes, per XLA op: a `jax.profiler` trace joined with the optimized
HLO of the step (for `experiments/profile.py`).

Each fused op of the trace is named in the HLO; from there it gets its FLOPs (the dots inside
it), the model path it came from (`block_3/mlp/fc`, forward or backward, from the HLO
metadata) and so a group. Caveat on CPU: a dot that XLA runs on its Eigen thread pool (the
weight gradients, typically) returns at once and its time shows up in the ops it overlaps.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import math
import re
from collections.abc import Iterable

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
