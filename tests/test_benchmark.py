"""The benchmark prints a JSON line whose numbers agree with each other; the suite's table, its
peers' commands and the accelerator script (shrunk to the CPU) work."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

from benchmarks import suite
from lmjax import flops, host_malloc
from lmjax.models.kernels import cpu_ffi
from lmjax.train import benchmark
from tests.conftest import CONFIGS, REPO, run_script, script_env


def test_benchmark_prints_consistent_json():
    out = run_script(
        "benchmark.py",
        f"--config={os.path.join(CONFIGS, 'gpt_shakespeare_char.py')}",
        "--steps=3",
        "--warmup=1",
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("step_ms", "tokens_per_sec", "model_flops_per_step", "peak_flops", "mfu"):
        assert result[key] > 0, key
    assert result["num_params"] == 795_904  # nanoGPT reports 0.80M for this config
    tokens = 12 * 64
    assert result["tokens_per_sec"] == pytest.approx(tokens / result["step_ms"] * 1000)
    per_token = flops.flops_per_token(795_904, 4, 128, 64)
    assert result["model_flops_per_step"] == per_token * tokens
    assert result["mfu"] == pytest.approx(
        result["model_flops_per_step"] / (result["step_ms"] / 1000) / result["peak_flops"]
    )
    assert 0 < result["mfu"] < 1
    assert 1 <= result["warmup_passes"] <= benchmark.STEADY_PASSES
    assert result["system_ms_per_step"] >= 0
    assert result["timed_passes"] > 1  # passes of 3 steps (~0.1 s) until they fill 3 s
    assert result["peak_flops_source"] == "measured float32 matmul"


def test_bf16_peak_times_the_dot_the_model_runs():
    # bf16 operands into a float32 dot, as `transformer.matmul`: no upcast of the operands (XLA:CPU
    # converts them to float32 for a bf16-result dot, which runs at the float32 rate).
    hlo = flops.peak_matmul().lower(jax.numpy.ones((64, 64), jax.numpy.bfloat16)).compile()
    text = hlo.as_text()
    assert "convert" not in text, text
    dots = [line for line in text.splitlines() if " dot(" in line]
    assert dots and all("= f32[64,64]" in line for line in dots), text


def test_measured_peak_is_kept_and_measured_again_on_request(monkeypatch):
    figures = iter([2e11, 1e11, 2.2e11, 4e11])  # a first figure, one at half, a better one
    monkeypatch.setattr(flops, "_measure", lambda *key: next(figures))
    monkeypatch.setattr(flops, "_BEST", {})
    assert flops.measure_peak_flops() == 2e11
    assert flops.measure_peak_flops() == 2e11  # kept: nothing measured
    assert flops.measure_peak_flops(again=True) == 2e11  # the half figure does not replace it
    assert flops.measure_peak_flops(again=True) == 2.2e11
    assert flops.measure_peak_flops(jax.numpy.bfloat16) == 4e11  # another dtype: its own
    assert flops.measure_peak_flops() == 2.2e11


@pytest.mark.parametrize(
    "kind, peak",
    [
        ("TPU v5 lite", 197e12),  # v5e: not v5p's 459 though it starts with "TPU v5"
        ("TPU v5", 459e12),  # v5p, as JAX may report it
        ("TPU v5p", 459e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA A100-SXM4-40GB", 312e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("cpu", None),
        ("TPU v3", None),
    ],
)
def test_known_peak_flops_by_device_kind(kind, peak):
    assert flops.known_peak_flops(kind) == peak


def test_data_benchmark_times_the_streamed_books():
    out = run_script(
        "benchmark.py",
        f"--config={os.path.join(CONFIGS, 'bert_books.py')}:test",
        "--data_only=20",
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["batches"] == 20 and result["batch_ms"] > 0 and result["peak_rss_mb"] > 0
    assert result["tokens_per_sec"] == pytest.approx(8 * 64 / result["batch_ms"] * 1000)


#### The suite (benchmarks/suite.py)

TINY_GPT = {
    "model.num_layers": 1,
    "model.num_heads": 2,
    "model.emb_dim": 32,
    "model.mlp_dim": 128,
    "seq_len": 16,
    "batch_size": 2,
}


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


# Stands for experiments/benchmark.py: a JSON line with the arguments it got; fails on batch 3.
FAKE_BENCHMARK = """import json, os, sys
if "--config.batch_size=3" in sys.argv:
    sys.exit("boom")
print("step 1 ...")
tunables = os.environ.get("GLIBC_TUNABLES", "")
print(json.dumps({"step_ms": 4.0, "mfu": 0.125, "argv": sys.argv[1:], "tunables": tunables}))
"""


def test_suite_runs_each_point_and_tabulates_with_a_dash_where_a_figure_is_missing(tmp_path):
    script = tmp_path / "benchmark.py"
    script.write_text(FAKE_BENCHMARK)
    six_ms = lambda config, steps, python: [python, "-c", "print(6)"]
    peers = {
        "absent": suite.Peer("nopeer", ("lmjax_no_such_module",), (), six_ms, float),
        "fake": suite.Peer("fake", ("json",), (), six_ms, float),
    }
    config = "configs/gpt_shakespeare_char.py"
    points = [
        suite.Point(config, TINY_GPT, peer="absent"),
        suite.Point(config, {**TINY_GPT, "model.dropout_rate": 0.0}, peer="fake"),
        suite.Point(config, {**TINY_GPT, "batch_size": 3}, peer="fake"),
    ]
    rows = suite.run_suite(points, 2, str(script), peers=peers, log=lambda line: None)
    assert rows[0].lmjax["argv"] == [
        f"--config={CONFIGS}/gpt_shakespeare_char.py",
        *(f"--config.{k}={v}" for k, v in TINY_GPT.items()),
        "--steps=2",
    ]
    assert rows[1].lmjax["argv"][-2] == "--config.model.dropout_rate=0.0"
    lines = suite.format_suite(rows, "HEADER").splitlines()
    assert lines[:4] == [
        "HEADER",
        "",
        "| shape | peer | lmjax ms/step | peer ms/step | peer / lmjax | lmjax MFU |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    label = "gpt_shakespeare_char L1 H2 C32 MLP128 T16 B2"
    assert _cells(lines[4]) == [label, "nopeer", "4.0", "-", "-", "12.5%"]
    assert _cells(lines[5]) == [label, "fake", "4.0", "6.0", "1.50", "12.5%"]
    failed = "gpt_shakespeare_char L1 H2 C32 MLP128 T16 B3"
    assert _cells(lines[6]) == [failed, "fake", "-", "6.0", "-", "-"]
    assert lines[7:] == [
        "",
        f"- {label}: nopeer not run: ModuleNotFoundError: No module named 'lmjax_no_such_module'",
        f"- {failed}: lmjax: exit status 1: boom",
    ]


def test_suite_runs_the_peers_without_lmjax_malloc_tunables(tmp_path, monkeypatch):
    ours = ":".join(host_malloc.TUNABLES)
    monkeypatch.setenv("GLIBC_TUNABLES", f"glibc.malloc.tcache_count=16:{ours}")
    script = tmp_path / "benchmark.py"
    script.write_text(FAKE_BENCHMARK)
    # the peer prints the length of the GLIBC_TUNABLES it got as its "ms"
    env_len = "import os; print(len(os.environ.get('GLIBC_TUNABLES', '')))"
    command = lambda config, steps, python: [python, "-c", env_len]
    peer = suite.Peer("fake", ("json",), (), command, float)
    point = suite.Point("configs/gpt_shakespeare_char.py", TINY_GPT, peer="fake")
    (row,) = suite.run_suite([point], 2, str(script), peers={"fake": peer}, log=print)
    assert row.lmjax["tunables"] == f"glibc.malloc.tcache_count=16:{ours}"
    assert row.peer_ms == len("glibc.malloc.tcache_count=16")


def test_suite_peers_get_the_shapes_of_the_lmjax_configs():
    gpt_small, gpt_large, bert_tiny, bert_base = (suite.load_config(p) for p in suite.SUITE)
    assert suite.SUITE[2].overrides == {}  # the tiny BERT runs as it trains
    nanogpt = suite.PEERS["nanogpt"].command
    assert nanogpt(gpt_small, 30, "py")[2:] == ["4", "4", "128", "64", "12", "35"]
    assert nanogpt(gpt_large, 30, "py")[2:] == ["6", "6", "384", "256", "8", "35"]
    torch_bert = suite.PEERS["transformers"].command

    def flags(config):
        return dict(a[2:].split("=") for a in torch_bert(config, 30, "py")[2:])

    assert flags(bert_tiny) == {
        "layers": "2", "hidden": "128", "heads": "2", "intermediate": "512", "vocab": "8000",
        "max_position": "128", "seq_len": "128", "batch": "32", "max_predictions": "20",
        "dropout": "0.1", "steps": "30",
    }  # fmt: skip
    base = flags(bert_base)
    assert (base["hidden"], base["heads"], base["intermediate"]) == ("768", "12", "3072")
    assert (base["vocab"], base["max_position"], base["seq_len"]) == ("30522", "512", "128")
    labels = [suite.point_label(suite.load_config(p), p) for p in suite.SUITE]
    assert labels[0] == "gpt_shakespeare_char L4 H4 C128 MLP512 T64 B12"
    assert labels[1] == "gpt_shakespeare_char L6 H6 C384 MLP1536 T256 B8"


def test_accelerator_presets():
    gpt = suite.load_config(suite.Point("configs/gpt2_124m.py:benchmark"))
    assert (gpt.batch_size, gpt.seq_len, gpt.grad_accum_steps) == (32, 1024, 1)
    assert (gpt.model.dtype, gpt.data.vocab_size, gpt.model.num_layers) == ("bfloat16", 50257, 12)
    bert = suite.load_config(suite.Point("configs/bert_base.py:benchmark"))
    assert (bert.batch_size, bert.seq_len, bert.model.dtype) == (256, 128, "bfloat16")


def test_cpu_name_is_specific():
    name = suite.cpu_name()
    assert name and (any(c.isdigit() for c in name) or "family" in name)


#### The peer: benchmarks/torch_bert.py

TINY_BERT = ["--layers=1", "--hidden=32", "--heads=2", "--intermediate=64", "--vocab=100",
             "--max_position=16", "--seq_len=16", "--batch=2", "--max_predictions=3"]  # fmt: skip


def test_torch_bert_prints_its_json_line():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "torch_bert.py"), *TINY_BERT,
         "--steps=2", "--warmup=1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["impl"] == "transformers" and result["step_ms"] > 0
    assert result["tokens_per_sec"] == pytest.approx(2 * 16 / result["step_ms"] * 1000)
    assert 1 <= result["threads"] <= result["cores"]


def test_torch_bert_gathered_head_gives_the_same_loss(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("torch_bert", f"{REPO}/benchmarks/torch_bert.py")
    torch_bert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(torch_bert)
    losses = []
    for extra in ([], ["--gather_masked"]):
        torch_bert.main([*TINY_BERT, "--steps=1", "--warmup=0", "--dropout=0", *extra])
        losses.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


#### The accelerator script, shrunk to the CPU


def test_accelerator_script_runs_its_cpu_mode():
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "benchmarks", "accelerator.sh"), "--cpu"],
        env={**script_env(), "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 4, proc.stdout
    # The kernel auto took on this CPU: the GPT's (causal, head dim 32) is the CPU kernel's.
    gpt_attention = "cpu_ffi" if cpu_ffi.unsupported(32, causal=True) is None else "xla"
    for line, model in zip(table[2:], ("gpt2_124m", "bert_base"), strict=True):
        name, params, _, shape, dtype, attention, ms, *_, mfu, peak = _cells(line)
        assert (name, shape, dtype) == (model, "1 x 32" if model == "gpt2_124m" else "2 x 32",
                                        "bfloat16"), line  # fmt: skip
        assert attention == (gpt_attention if model == "gpt2_124m" else "xla"), line
        assert float(ms) > 0 and mfu.endswith("%") and "measured bfloat16 matmul" in peak
        # The random batches use the config's vocabulary (512 rows of width 64 here), not 65.
        assert float(params.rstrip("M")) * 1e6 > 512 * 64
