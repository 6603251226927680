"""lmjax and a peer at the same shapes, each point in a fresh process, one markdown table.

  python benchmarks/suite.py [--steps=30] [--peer_python=/path/to/python-with-torch]

Each shape of `SUITE` is timed by `experiments/benchmark.py` (on the CPU) and then by its peer:
nanoGPT (`../shared/peers/nanogpt_ms.sh`) or Hugging Face's BERT in PyTorch
(`benchmarks/torch_bert.py`), where they import; the table gives both, their ratio and lmjax's
MFU, under a line naming the CPU and the versions. Method and figures: docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence

import ml_collections
from absl import flags

from lmjax import cli, config_files, host_malloc

# Config files are named relative to the repository; the peers' scripts live there too.
REPO = config_files.REPO


@dataclasses.dataclass(frozen=True)
class Point:
    """One shape of the suite: a config file (relative to the repository) with `overrides`,
    timed by lmjax and by `peer` (a key of `PEERS`), which reads its sizes from the same
    config, so the two cannot drift apart."""

    config: str
    overrides: dict = dataclasses.field(default_factory=dict)
    peer: str = ""


def gpt_point(layers: int, heads: int, width: int, seq_len: int, batch: int) -> Point:
    """The Shakespeare GPT at nanoGPT's shape: MLP 4 x width, no biases, float32, no dropout."""
    sizes = {"model.num_layers": layers, "model.num_heads": heads, "model.emb_dim": width}
    return Point(
        "configs/gpt_shakespeare_char.py",
        {
            **sizes,
            "model.mlp_dim": 4 * width,
            "seq_len": seq_len,
            "batch_size": batch,
            "model.dtype": "float32",
            "model.dropout_rate": 0.0,
        },
        peer="nanogpt",
    )


SUITE = (
    gpt_point(4, 4, 128, 64, 12),  # configs/gpt_shakespeare_char.py's own shape
    gpt_point(6, 6, 384, 256, 8),  # nanoGPT's train_shakespeare_char.py model, batch 8
    Point("configs/bert_tiny_wikitext.py", peer="transformers"),  # the config as it trains
    # Two BERT-base layers (hidden 768, 12 heads, MLP 3072, vocab 30522, 512 positions) at
    # phase 1's T128: lmjax takes ~0.8 s a step on this project's 2-core CPU.
    Point(
        "configs/bert_base.py",
        {"model.num_layers": 2, "batch_size": 8, "model.dtype": "float32"},
        peer="transformers",
    ),
)


def load_config(point: Point) -> ml_collections.ConfigDict:
    """The config the point's benchmark command runs with."""
    return config_files.load_config(point.config, point.overrides)


def point_label(config: ml_collections.ConfigDict, point: Point) -> str:
    """`gpt_shakespeare_char L4 H4 C128 MLP512 T64 B12`: the config file and the shape."""
    m = config.model
    name = os.path.splitext(os.path.basename(point.config.partition(":")[0]))[0]
    return (
        f"{name} L{m.num_layers} H{m.num_heads} C{m.emb_dim} MLP{m.mlp_dim} "
        f"T{config.seq_len} B{config.batch_size}"
    )


def lmjax_command(point: Point, steps: int, script: str) -> list[str]:
    """`experiments/benchmark.py` (`script`) on the point's config, with one flag per override."""
    file, colon, arg = point.config.partition(":")
    flags = [config_files.config_flag(k, v) for k, v in point.overrides.items()]
    config = f"--config={os.path.join(REPO, file)}{colon}{arg}"
    return [sys.executable, script, config, *flags, f"--steps={steps}"]


@dataclasses.dataclass(frozen=True)
class Peer:
    """Another implementation of a point's step: its name in the table, the modules and files
    (relative to the repository) it needs, its command for a config, and how its output's last
    line gives milliseconds per step."""

    name: str
    modules: tuple[str, ...]
    files: tuple[str, ...]
    command: Callable[[ml_collections.ConfigDict, int, str], list[str]]  # (config, steps, python)
    parse_ms: Callable[[str], float]


def _nanogpt_command(config: ml_collections.ConfigDict, steps: int, python: str) -> list[str]:
    m = config.model
    if m.mlp_dim != 4 * m.emb_dim or m.use_bias or m.dropout_rate:
        raise ValueError("nanoGPT's shape: mlp_dim = 4 * emb_dim, no biases, no dropout")
    sizes = (m.num_layers, m.num_heads, m.emb_dim, config.seq_len, config.batch_size)
    # nanogpt_ms.sh takes the median of its steps 5 and later: 5 more than lmjax's timed steps.
    return ["bash", os.path.join(REPO, "../shared/peers/nanogpt_ms.sh"), *map(str, sizes),
            str(steps + 5)]  # fmt: skip


def _torch_bert_command(config: ml_collections.ConfigDict, steps: int, python: str) -> list[str]:
    m = config.model
    if m.dropout_rate != m.attention_dropout_rate:
        raise ValueError("torch_bert.py takes one dropout rate for hidden and attention")
    sizes = {
        "layers": m.num_layers,
        "hidden": m.emb_dim,
        "heads": m.num_heads,
        "intermediate": m.mlp_dim,
        "vocab": config.data.vocab_size,
        "max_position": m.get("max_len") or config.seq_len,  # lmjax's positions: max_len or T
        "seq_len": config.seq_len,
        "batch": config.batch_size,
        "max_predictions": config.data.max_predictions_per_seq,
        "dropout": m.dropout_rate,
        "steps": steps,
    }
    script = os.path.join(REPO, "benchmarks", "torch_bert.py")
    return [python, script, *(f"--{k}={v}" for k, v in sizes.items())]


PEERS = {
    "nanogpt": Peer(
        "nanoGPT",
        ("torch", "numpy", "requests"),
        ("../shared/peers/nanogpt_ms.sh", "../shared/data/tinyshakespeare/input.txt"),
        _nanogpt_command,
        float,  # the script prints the median alone
    ),
    "transformers": Peer(
        "transformers",
        ("torch", "transformers"),
        ("benchmarks/torch_bert.py",),
        _torch_bert_command,
        lambda line: json.loads(line)["step_ms"],
    ),
}


@dataclasses.dataclass
class Row:
    """A point's figures: lmjax's JSON line, the peer's ms per step, and why either is missing."""

    label: str
    peer: str
    lmjax: dict | None = None
    peer_ms: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _run(command: list[str], env: dict[str, str] | None = None) -> str:
    """The command's last line of output; `RuntimeError` with its last error line if it fails."""
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode}: {_last_line(proc.stderr)}")
    return _last_line(proc.stdout)


def peer_missing(peer: Peer, python: str) -> str | None:
    """Why `peer` cannot run here (a file it needs is absent, a module does not import in
    `python`), or None."""
    for file in peer.files:
        if not os.path.exists(os.path.join(REPO, file)):
            return f"{os.path.normpath(os.path.join(REPO, file))} not found"
    proc = subprocess.run(
        [python, "-c", f"import {', '.join(peer.modules)}"], capture_output=True, text=True
    )
    return _last_line(proc.stderr) if proc.returncode else None


def run_suite(
    points: Sequence[Point],
    steps: int,
    script: str,
    python: str = sys.executable,
    peers: dict[str, Peer] = PEERS,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> list[Row]:
    """Times each point in lmjax (`script` = experiments/benchmark.py in a fresh process, on the
    CPU) and then in its peer (run by `python`); a peer that cannot run, or a run that fails,
    leaves its figure out with a note why."""
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    env["PEER_PY"] = python  # nanogpt_ms.sh's Python
    peer_env = host_malloc.untuned_env(env)  # the peers run as their users run them
    missing = {}
    rows = []
    for point in points:
        config = load_config(point)
        peer = peers.get(point.peer)
        row = Row(point_label(config, point), peer.name if peer else point.peer or "-")
        rows.append(row)
        log(f"lmjax: {row.label}")
        try:
            row.lmjax = json.loads(_run(lmjax_command(point, steps, script), env))
        except (RuntimeError, ValueError) as e:
            row.notes.append(f"lmjax: {e}")
        if peer is None:
            row.notes.append(f"no peer {point.peer!r}; known: {', '.join(peers)}")
            continue
        if point.peer not in missing:
            missing[point.peer] = peer_missing(peer, python)
        if missing[point.peer]:
            row.notes.append(f"{peer.name} not run: {missing[point.peer]}")
            continue
        log(f"{peer.name}: {row.label}")
        try:
            row.peer_ms = peer.parse_ms(_run(peer.command(config, steps, python), peer_env))
        except (RuntimeError, ValueError, KeyError) as e:
            row.notes.append(f"{peer.name}: {e}")
    return rows


def cpu_name() -> str:
    """/proc/cpuinfo's model name, with its family and model numbers when the name alone does
    not say which CPU it is (a VM's `AMD EPYC`)."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    name = info.get("model name", platform.processor() or platform.machine())
    if not any(c.isdigit() for c in name) and "cpu family" in info:
        name += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    return name


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def suite_header(steps: int) -> str:
    """The machine and the versions the suite ran on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # torch's OpenMP threads wait on each other when other processes hold the cores: a load
    # above zero at the start makes the peers' figures suspect first.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu_name()}, {cores} cores (load {load:.1f} at the start); jax {_version('jax')}, "
        f"torch {_version('torch')}, transformers {_version('transformers')}; {steps} timed steps "
        f"a point; lmjax's GLIBC_TUNABLES: {os.environ.get('GLIBC_TUNABLES') or 'none'}"
    )


def format_suite(rows: Sequence[Row], header: str) -> str:
    """The markdown table: ms per step of lmjax and the peer, their ratio (> 1: lmjax is
    faster) and lmjax's MFU; a `-` where a figure is missing, explained under the table."""

    def ms(value):
        return "-" if value is None else f"{value:.1f}"

    lines = [
        header,
        "",
        "| shape | peer | lmjax ms/step | peer ms/step | peer / lmjax | lmjax MFU |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lmjax_ms = row.lmjax["step_ms"] if row.lmjax else None
        ratio = "-" if lmjax_ms is None or row.peer_ms is None else f"{row.peer_ms / lmjax_ms:.2f}"
        mfu = f"{100 * row.lmjax['mfu']:.1f}%" if row.lmjax else "-"
        lines.append(
            f"| {row.label} | {row.peer} | {ms(lmjax_ms)} | {ms(row.peer_ms)} | {ratio} | {mfu} |"
        )
    notes = [f"- {row.label}: {note}" for row in rows for note in row.notes]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv):
    del argv
    steps, script = flags.FLAGS.steps, os.path.join(REPO, "experiments", "benchmark.py")
    header = suite_header(steps)  # the load before the runs
    print(format_suite(run_suite(SUITE, steps, script, python=flags.FLAGS.peer_python), header))


if __name__ == "__main__":  # flags defined here: the tests import this module
    flags.DEFINE_integer("steps", 30, "Timed steps per point.")
    flags.DEFINE_string("peer_python", sys.executable, "The Python (with torch) for the peers.")
    cli.run(main)
