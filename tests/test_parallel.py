"""Parallelism: every mesh, pmap, gradient accumulation and remat give the one-device losses;
parameters are sharded as the rules say; checkpoints restore across meshes and processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh

from lmjax import workdir as workdir_lib
from lmjax.train import loop, parallel
from tests.conftest import REPO, script_env

WORKER = os.path.join(REPO, "tests", "parallel_worker.py")
ONE_DEVICE = "one_device"


# The cases in two worker processes side by side (XLA compiles on one core), ~60 s each.
WORKERS = (
    ["fsdp8", "data8", "pmap8", "remat", "bfloat16"],
    ["one_device", "data2_tensor4", "data2_fsdp2_tensor2", "pmap4_grad_accum2", "grad_accum4",
     "data2_grad_accum2", "remat_dots"],
)  # fmt: skip


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Runs tests/parallel_worker.py with 8 simulated devices: every case, in two processes."""
    out = tmp_path_factory.mktemp("parallel")
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(out), *cases],
            env=script_env(devices=8),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cases in WORKERS
    ]
    merged = {}
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-4000:]
        line = next(x for x in stdout.splitlines() if x.startswith("RESULTS "))
        merged.update(json.loads(line.removeprefix("RESULTS ")))
    return merged


@pytest.mark.parametrize(
    "case",
    [
        "data8",
        "fsdp8",
        "data2_tensor4",
        "data2_fsdp2_tensor2",
        "pmap8",
        "pmap4_grad_accum2",
        "grad_accum4",
        "data2_grad_accum2",
        "remat",
        "remat_dots",
    ],
)
def test_same_losses_as_one_device(results, case):
    want = results[ONE_DEVICE]["losses"]
    assert len(want) == 10 and want[-1] < want[0]
    np.testing.assert_allclose(results[case]["losses"], want, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "case, name, shard",
    [
        # qkv kernel [D=32, H=4, 3, K=8]: embed over fsdp, heads over tensor.
        ("one_device", "block_0/attn/qkv/kernel", [32, 4, 3, 8]),
        ("data8", "block_0/attn/qkv/kernel", [32, 4, 3, 8]),
        ("fsdp8", "block_0/attn/qkv/kernel", [4, 4, 3, 8]),
        ("data2_tensor4", "block_0/attn/qkv/kernel", [32, 1, 3, 8]),
        ("data2_fsdp2_tensor2", "block_0/attn/qkv/kernel", [16, 2, 3, 8]),
        # out kernel [H, K, D], MLP [D, F=64] and [F, D]: Megatron's column / row split.
        ("data2_tensor4", "block_0/attn/out/kernel", [1, 8, 32]),
        ("data2_tensor4", "block_0/mlp/fc/kernel", [32, 16]),
        ("data2_fsdp2_tensor2", "block_0/mlp/proj/kernel", [32, 16]),
        # A 65-token vocabulary does not divide over tensor=4: replicated on that dim.
        ("data2_tensor4", "tok_embed/embedding", [65, 32]),
        ("fsdp8", "tok_embed/embedding", [65, 4]),
        ("fsdp8", "ln_final/scale", [4]),
    ],
)
def test_parameter_shardings_follow_the_rules(results, case, name, shard):
    assert results[case]["shards"][name][0] == shard


def test_bfloat16_compute_keeps_float32_weights_and_the_float32_losses(results):
    """bf16 matmuls with f32 master weights: the loss curve within bf16 rounding of f32's."""
    assert {dtype for _, dtype in results["bfloat16"]["shards"].values()} == {"float32"}
    np.testing.assert_allclose(
        results["bfloat16"]["losses"], results[ONE_DEVICE]["losses"], rtol=0, atol=2e-2
    )


@pytest.mark.parametrize("case", ["fsdp8_resumed_on_one_device", "fsdp8_resumed_on_data2_tensor4"])
def test_checkpoint_restores_under_another_mesh(results, case):
    """fsdp=8's step-5 checkpoint, resumed on another mesh, continues the same run."""
    np.testing.assert_allclose(
        results[case]["losses"], results[ONE_DEVICE]["losses"], rtol=0, atol=1e-4
    )


def test_mesh_that_does_not_match_the_devices_names_the_numbers():
    with pytest.raises(ValueError, match="needs 6 devices, but 1 are available"):
        parallel.make_mesh({"data": 2, "fsdp": 1, "tensor": 3}, jax.devices()[:1])


def test_tensor_size_that_does_not_divide_the_heads_names_the_numbers():
    mesh = AbstractMesh((1, 1, 3), parallel.MESH_AXES)
    rules = (("heads", "tensor"), ("mlp", "tensor"))
    with pytest.raises(ValueError, match="num_heads=4 does not divide over the 3 devices"):
        parallel.check_model_fits_mesh({"num_heads": 4, "mlp_dim": 12}, mesh, rules)


def test_batch_that_does_not_split_into_micro_batches_names_the_numbers():
    mesh = AbstractMesh((2, 1, 1), parallel.MESH_AXES)
    rules = (("batch", ("data", "fsdp")),)
    with pytest.raises(ValueError, match="grad_accum_steps=3 micro-batches over 2"):
        parallel.check_batch_size(8, mesh, rules, grad_accum_steps=3)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(workdir, *extra):
    return [
        sys.executable,
        os.path.join(REPO, "experiments", "train.py"),
        f"--config={REPO}/configs/gpt_shakespeare_char.py:test",
        f"--workdir={workdir}",
        "--config.num_train_steps=10",
        "--config.log_every_steps=1",
        "--config.eval_every_steps=5",
        "--config.checkpoint_every_steps=5",
        "--config.model.num_layers=2",
        "--config.model.emb_dim=32",
        "--config.model.mlp_dim=64",
        "--config.model.num_heads=2",
        "--config.seq_len=16",
        "--config.batch_size=8",
        *extra,
    ]


def _two_processes(workdir, *extra):
    """train.py as a run of two processes of 2 CPU devices each, stderr piped."""
    port = _free_port()
    return [
        subprocess.Popen(
            _train_args(
                workdir,
                *extra,
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            env=script_env(devices=2),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def _losses(workdir):
    return [r["train/loss"] for r in workdir_lib.read_metrics(workdir) if "train/loss" in r]


def test_two_processes_equal_one_and_their_checkpoint_resumes_in_one(tmp_path):
    """jax.distributed with 2 processes x 2 CPU devices = 1 process x 4 devices, step for step;
    the 2-process run's step-5 checkpoint then resumes in a single 1-device process."""
    multi = str(tmp_path / "two_processes")
    procs = _two_processes(multi)
    for i, p in enumerate(procs):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-4000:]
        assert f"process {i} of 2; 2 local and 4 global devices" in err
    single = str(tmp_path / "one_process")
    ref = subprocess.run(
        _train_args(single), env=script_env(devices=4), capture_output=True, text=True
    )
    assert ref.returncode == 0, ref.stderr[-4000:]
    want = _losses(single)
    np.testing.assert_allclose(_losses(multi), want, rtol=0, atol=1e-4)

    resumed = str(tmp_path / "resumed")
    subprocess.run(["cp", "-r", multi, resumed], check=True)
    subprocess.run(["rm", "-r", os.path.join(resumed, "checkpoints", "10")], check=True)
    proc = subprocess.run(
        _train_args(resumed), env=script_env(devices=1), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resumed from" in proc.stderr
    np.testing.assert_allclose(_losses(resumed), want, rtol=0, atol=1e-4)


def test_sigterm_to_one_process_stops_both_at_the_same_step_with_a_checkpoint(tmp_path):
    """SIGTERM reaches the hosts of a job at different steps, or one host only: the processes
    agree (every STOP_SYNC_EVERY steps) and stop together; they deadlocked before, one waiting
    in a collective for the other."""
    workdir = str(tmp_path / "run")
    procs = _two_processes(
        workdir,
        "--config.num_train_steps=100000",
        "--config.eval_every_steps=100000",
        "--config.checkpoint_every_steps=100000",
    )
    deadline = time.time() + 300
    while not (os.path.exists(os.path.join(workdir, workdir_lib.METRICS))
               and len(workdir_lib.read_metrics(workdir)) >= 3):  # fmt: skip
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # the process that does not write the metrics
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs[0][-3000:] + errs[1][-3000:]
    steps = workdir_lib.checkpoint_steps(workdir)
    assert len(steps) == 1 and steps[0] % loop.STOP_SYNC_EVERY == 0, steps
    assert f"stopped by another process after step {steps[0]}" in errs[0]
    assert f"stopped by SIGTERM after step {steps[0]}" in errs[1]
