"""Step timing for `experiments/benchmark.py`: the train step the loop runs, on fixed batches
(`run`), the input pipeline alone (`run_data`), and the suite that times lmjax and a peer
implementation at the same shapes (`SUITE`, `run_suite`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from lmjax import config_files, flops, host_malloc
from lmjax.data import pipeline
from lmjax.tasks import clm
from lmjax.train import build


def fake_vocab_size(config: ml_collections.ConfigDict) -> int:
    """The vocabulary of random batches: that of a causal config's tokenizer file (a WordPiece
    vocab.txt or a tokenizer.json as `data.tokenizer`), else the config's `data.vocab_size`
    (GPT-2's 50257, BERT's 30522); a character-level config has none: tiny Shakespeare's 65
    characters."""
    if config.data.get("tokenizer", "char") not in ("char", "bpe"):
        return clm.make_tokenizer(config, "").vocab_size
    return config.data.get("vocab_size", 65)


@dataclasses.dataclass
class ReadyStep:
    """A config's compiled train step (taking host batches, as the loop feeds them), a placed
    initial state and the batches to feed it."""

    setup: build.Setup
    steps: build.Steps
    state: Any
    batches: list
    vocab_size: int


@contextlib.contextmanager
def ready_step(config: ml_collections.ConfigDict, real_data: bool = False) -> Iterator[ReadyStep]:
    """Inside the config's mesh, its `ReadyStep`: with one random batch of the config's shape
    (`fake_vocab_size`), or the first 8 batches of its data."""
    s = build.setup(config)
    config, task = s.config, s.task
    with s.activate():
        if real_data:
            data = task.make_data()
            vocab_size = data.vocab_size
            it = pipeline.train_iterator(
                data.train_ds, config.batch_size, config.seed, data.batch_fn
            )
            batches = [next(it) for _ in range(8)]
        else:
            vocab_size = fake_vocab_size(config)
            batches = [task.fake_batch(vocab_size)]
        b = build.build(s, task.make_model(vocab_size))
        state = b.steps.place(b.init(jax.random.PRNGKey(config.seed)))
        yield ReadyStep(s, b.steps, state, batches, vocab_size)


STEADY_PASSES = 4  # untimed passes of `steps` steps at most, before the timed ones
MIN_TIMED_S = 3.0  # timed passes of `steps` steps until they add up to this


def _pass(train_step: Callable, state: Any, batches: list, steps: int) -> tuple[Any, dict]:
    """`steps` train steps dispatched without waiting, as the train loop runs them, then one
    wait for the last update; returns the state and the pass's wall time, system time and page
    faults."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(steps):
        state, metrics = train_step(state, batches[i % len(batches)])
    jax.block_until_ready((state, metrics))
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return state, {
        "wall_s": wall,
        "system_s": after.ru_stime - before.ru_stime,
        "faults": after.ru_minflt - before.ru_minflt,
    }


def run(
    config: ml_collections.ConfigDict, steps: int = 40, warmup: int = 5, real_data: bool = False
) -> dict:
    """Times `steps` train steps after compilation, `warmup` more and the passes that bring the
    step to its steady state; returns the figures."""
    with ready_step(config, real_data) as ready:
        config, task, mesh = ready.setup.config, ready.setup.task, ready.setup.mesh
        kernels = {key: choice.impl for key, choice in ready.setup.kernels.items()}
        compiled, state, batches = ready.steps, ready.state, ready.batches
        vocab_size, train_step = ready.vocab_size, ready.steps.train

        start = time.perf_counter()
        state, metrics = train_step(state, batches[0])
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - start
        if warmup:
            state, _ = _pass(train_step, state, batches, warmup)
        flops.measure_peak_flops(jnp.dtype(config.model.dtype))  # and again after the steps

        # Untimed passes as the timed one runs until one spends under 2% of its time in the
        # kernel, at most `STEADY_PASSES`: while the heap that lmjax.host_malloc keeps still
        # grows, each huge page a step touches first costs it system time, which a training run
        # pays in its first steps only.
        warmup_passes = 0
        while warmup_passes < STEADY_PASSES:
            warmup_passes += 1
            state, usage = _pass(train_step, state, batches, steps)
            if usage["system_s"] < 0.02 * usage["wall_s"]:
                break

        # The figure is the mean of a run with async dispatch, as the train loop runs: a median
        # of single steps hid glibc's periodic stalls (every 3-4 steps, +0.5 s at L6 C384 T256
        # B8 before host_malloc kept the heap) that the loop pays. The synced median is kept
        # as a diagnostic: far below the mean, some steps stall.
        times = []
        for i in range(steps):
            t = time.perf_counter()
            state, metrics = train_step(state, batches[i % len(batches)])
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t)
        # Passes until they fill `MIN_TIMED_S` (at (b) one pass does, at (a) ~4): the figure is
        # the median pass (the slower middle one for an even count), so that a second in which
        # the machine was slow does not make a short step's figure.
        passes = []
        while sum(p["wall_s"] for p in passes) < MIN_TIMED_S:
            state, usage = _pass(train_step, state, batches, steps)
            passes.append(usage)
        timed = sorted(passes, key=lambda p: p["wall_s"])[len(passes) // 2]
        step_s = timed["wall_s"] / steps

    num_params = flops.count_params(compiled.unplace(state)["params"])
    tokens_per_step = config.batch_size * config.seq_len
    flops_per_step = task.flops_per_token(num_params, vocab_size) * tokens_per_step
    # A spec-sheet bf16 peak where the device is known, else a measured matmul in the compute dtype.
    peak_per_device = flops.measure_peak_flops(jnp.dtype(config.model.dtype), again=True)
    known = flops.known_peak_flops(jax.devices()[0].device_kind) is not None
    source = "spec sheet (bf16)" if known else f"measured {config.model.dtype} matmul"
    n = mesh.devices.size
    return {
        "device": jax.devices()[0].device_kind,
        "num_devices": n,
        "mesh": "pmap" if config.use_pmap else "x".join(map(str, mesh.devices.shape)),
        "grad_accum_steps": config.grad_accum_steps,
        "num_params": num_params,
        "batch_size": config.batch_size,
        "seq_len": config.seq_len,
        "dtype": config.model.dtype,
        **kernels,  # attention_impl, matmul_impl: what auto took
        "compile_s": compile_s,
        "step_ms": 1000 * step_s,
        "step_ms_median_synced": 1000 * statistics.median(times),
        "tokens_per_sec": tokens_per_step / step_s,
        "page_faults_per_step": timed["faults"] / steps,  # memory touched for the first time
        "system_ms_per_step": 1000 * timed["system_s"] / steps,
        "warmup_passes": warmup_passes,
        "timed_passes": len(passes),
        "tokens_per_sec_per_device": tokens_per_step / step_s / n,
        "model_flops_per_step": flops_per_step,
        "peak_flops": peak_per_device * n,
        "peak_flops_per_device": peak_per_device,
        "peak_flops_source": source,
        "mfu": flops_per_step / step_s / (peak_per_device * n),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # lmjax.host_malloc
    }


def run_data(config: ml_collections.ConfigDict, batches: int = 1000) -> dict:
    """Times the input pipeline alone: `task.make_data`, the first train batch, then `batches`
    more; with the process's peak resident memory (the figure a streamed corpus must bound)."""
    s = build.setup(config)
    config, task = s.config, s.task
    start = time.perf_counter()
    data = task.make_data()
    make_data_s = time.perf_counter() - start
    it = pipeline.train_iterator(data.train_ds, config.batch_size, config.seed, data.batch_fn)
    start = time.perf_counter()
    next(it)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    per_batch_s = (time.perf_counter() - start) / batches
    return {
        "make_data_s": make_data_s,
        "first_batch_s": first_s,
        "batch_ms": 1000 * per_batch_s,
        "batches": batches,
        "tokens_per_sec": config.batch_size * config.seq_len / per_batch_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


#### The suite: lmjax and a peer at the same shapes, each point in a fresh process

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
