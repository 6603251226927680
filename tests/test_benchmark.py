"""The benchmark prints a JSON line whose numbers agree with each other."""

import json
import os

import pytest

from lmjax import flops
from tests.conftest import CONFIGS, run_script


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


def test_data_benchmark_times_the_streamed_books():
    out = run_script(
        "benchmark.py",
        f"--config={os.path.join(CONFIGS, 'bert_books.py')}:test",
        "--data_only=20",
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["batches"] == 20 and result["batch_ms"] > 0 and result["peak_rss_mb"] > 0
    assert result["tokens_per_sec"] == pytest.approx(8 * 64 / result["batch_ms"] * 1000)
