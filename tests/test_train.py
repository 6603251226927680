"""The train loop: learning, exact resume, preemption, sharding, configs and errors."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lmjax import errors, plots
from lmjax import workdir as workdir_lib
from lmjax.train import build, distributed, loop, metrics, parallel, step
from tests.conftest import CONFIGS, REPO, run_script, script_env, tiny_config


def _train_losses(workdir):
    return {
        r["step"]: r["train/loss"] for r in workdir_lib.read_metrics(workdir) if "train/loss" in r
    }


def test_overfits_one_batch():
    config = tiny_config(
        learning_rate=3e-3, min_learning_rate=3e-3, warmup_steps=5, num_train_steps=200
    )
    config.optimizer.weight_decay = 0.0
    s = build.setup(config)
    with s.activate():
        b = build.build(s, s.task.make_model(65))
        steps = b.steps
        batch = s.task.fake_batch(65)
        state = b.init(jax.random.PRNGKey(0))
        losses = []
        for _ in range(config.num_train_steps):
            state, m = steps.train(state, batch)
            losses.append(float(m["loss"]))
    assert losses[0] > 3.5  # ~log(65) at init
    assert losses[-1] < 0.1, losses[-10:]


def test_train_writes_metrics_config_tokenizer_and_checkpoints(workdir):
    config = tiny_config()
    final = loop.train_and_evaluate(config, workdir)
    records = workdir_lib.read_metrics(workdir)
    train = [r for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in train] == [2, 4, 6]
    assert [r["step"] for r in evals] == [3, 6]
    for key in ("train/loss", "train/learning_rate", "train/tokens_per_sec"):
        assert all(np.isfinite(r[key]) for r in train), key
    assert final["eval/loss"] == evals[-1]["eval/loss"]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    assert _tensorboard_scalars(workdir, "train/loss") == [
        (r["step"], pytest.approx(r["train/loss"], rel=1e-6)) for r in train
    ]
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)["model"]
    assert saved["emb_dim"] == 32 and saved["attention_impl"] == "auto"  # as the user set it
    with open(os.path.join(workdir, "kernels.json")) as f:  # what auto took on this CPU
        kernels = json.load(f)
    assert kernels["matmul_impl"] == {"impl": "xla_cpu", "reason": "auto: CPU devices"}
    assert kernels["attention_impl"]["impl"] in ("cpu_ffi", "xla")  # head dim 16: the kernel's
    assert os.path.exists(os.path.join(workdir, "tokenizer.json"))
    png = plots.plot_run(workdir)
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _tensorboard_scalars(workdir, tag):
    """(step, value) of `tag` as TensorBoard reads the run's event files."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(
        os.path.join(workdir, "tensorboard"), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def test_tensorboard_sees_each_record_as_it_is_written(tmp_path):
    """The loop never flushed the event file: locally it lagged ~40 records behind, on gs://
    nothing showed until the run ended."""
    writer = metrics.MetricWriter(str(tmp_path))
    for at in (1, 2, 3):
        writer.write(at, {"train/loss": 4.0 - at})
        assert _tensorboard_scalars(str(tmp_path), "train/loss")[-1] == (at, 4.0 - at)
    writer.close()


def test_training_never_imports_tensorflow(tmp_path):
    """TensorFlow takes ~4 s to import: a run on local data writes its TensorBoard files
    without it (tensorflow_datasets input still imports it)."""
    code = (
        "import sys; from lmjax.train import loop; from tests.conftest import tiny_config;"
        f" loop.train_and_evaluate(tiny_config(num_train_steps=2), {str(tmp_path)!r});"
        " print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=script_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines()[-1] == "[]"


def _no_space(*args):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("missing", ["tensorboard_package", "room_for_the_event_file"])
def test_metrics_without_tensorboard_still_write_json_lines(tmp_path, monkeypatch, missing):
    """An image without the tensorboard package, or an event file that cannot be created,
    keeps metrics.jsonl."""
    if missing == "tensorboard_package":
        monkeypatch.setitem(sys.modules, "tensorboard.compat.proto", None)  # import raises
    else:
        monkeypatch.setattr(metrics.workdir_lib, "tensorboard_dir", _no_space)
    writer = metrics.MetricWriter(str(tmp_path))
    writer.write(1, {"train/loss": 2.5})
    writer.close()
    assert workdir_lib.read_metrics(str(tmp_path)) == [{"step": 1, "train/loss": 2.5}]
    assert not os.path.exists(tmp_path / "tensorboard")


def test_distributed_auto_runs_alone_where_jax_finds_no_cluster(monkeypatch):
    """train.py's --distributed: auto joins a cluster JAX detects (public API only) and runs as
    one process where it finds none; on and an explicit coordinator make that an error."""
    calls = []

    def no_cluster(**kwargs):
        calls.append(kwargs)
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", no_cluster)
    assert distributed.initialize("auto") is False
    assert distributed.initialize("off") is False and len(calls) == 1
    with pytest.raises(ValueError, match="coordinator"):
        distributed.initialize("on")
    with pytest.raises(ValueError, match="coordinator"):
        distributed.initialize("auto", "127.0.0.1:1234", 2, 0)
    assert calls[-1] == {"coordinator_address": "127.0.0.1:1234", "num_processes": 2,
                         "process_id": 0}  # fmt: skip
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    assert distributed.initialize("auto") is False  # a detected cluster of one process
    assert len(calls) == 4
    with pytest.raises(ValueError, match="auto, on or off"):
        distributed.initialize("yes")


# A 2-node SLURM job step with one task per node, seen from the task on the second node.
SLURM_ONE_TASK_PER_NODE = {
    "SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_NODEID": "1",
    "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
}  # fmt: skip


def test_a_slurm_task_alone_on_its_node_keeps_all_of_the_nodes_gpus(monkeypatch):
    """JAX's SLURM detection makes each task see the GPU of its SLURM_LOCALID: under
    `srun --ntasks-per-node=1` that was 1 GPU of 8 on every node, silently."""
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    for key, value in SLURM_ONE_TASK_PER_NODE.items():
        monkeypatch.setenv(key, value)
    distributed.initialize("auto")
    assert calls[-1]["local_device_ids"] == list(range(8))
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "8(x2)")  # one task per GPU: JAX's choice
    distributed.initialize("auto")
    assert "local_device_ids" not in calls[-1]

    def ids(**changes):
        return distributed.slurm_local_device_ids({**SLURM_ONE_TASK_PER_NODE, **changes})

    assert ids(SLURM_STEP_TASKS_PER_NODE="8,1", SLURM_NODEID="1") == list(range(8))
    assert ids(SLURM_STEP_TASKS_PER_NODE="8,1", SLURM_NODEID="0") is None
    assert ids(CUDA_VISIBLE_DEVICES="", SLURM_GPUS_ON_NODE="4") == [0, 1, 2, 3]
    assert ids(CUDA_VISIBLE_DEVICES="3") is None  # one GPU: nothing to keep
    assert ids(JAX_LOCAL_DEVICE_IDS="0") is None  # the user's choice stands
    assert distributed.slurm_local_device_ids({"CUDA_VISIBLE_DEVICES": "0,1"}) is None


def test_learning_rate_schedule_warmup_and_cosine_floor():
    config = tiny_config(num_train_steps=100, warmup_steps=10, learning_rate=1e-3)
    schedule = step.learning_rate_schedule(config)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(100)) == pytest.approx(config.min_learning_rate)


def test_weight_decay_mask_spares_biases_layernorm_and_embeddings():
    config = tiny_config(**{"model.use_bias": True})
    task = build.setup(config).task
    model = task.make_model(65)
    params = parallel.unbox(task.init_params(model, jax.random.PRNGKey(0), task.fake_batch(65)))
    mask = step._decay_mask(False)(params)
    flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_flatten_with_path(mask)[0]}
    decayed = sorted(k for k, m in flat.items() if m)
    assert decayed and all(k.endswith("kernel']") for k in decayed), decayed
    assert not any(m for k, m in flat.items() if "embed" in k or "ln_" in k or "bias" in k)


def test_mfu_divides_by_the_peak_of_the_compute_dtype(workdir, monkeypatch):
    asked = []
    monkeypatch.setattr(
        loop.flops, "measure_peak_flops", lambda dtype=np.float32: asked.append(dtype) or 1e12
    )
    config = tiny_config(**{"model.dtype": "bfloat16"}, num_train_steps=2, log_every_steps=1)
    loop.train_and_evaluate(config, workdir)
    assert asked == [jax.numpy.bfloat16]
    mfus = [r["train/mfu"] for r in workdir_lib.read_metrics(workdir) if "train/mfu" in r]
    assert mfus and all(0 < m < 1 for m in mfus)


def test_resume_equals_uninterrupted_in_process(tmp_path):
    config = tiny_config(log_every_steps=1)
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    loop.train_and_evaluate(config, straight)
    loop.train_and_evaluate(config, resumed)
    # Simulate a crash right after the step-3 checkpoint: drop what came later, rerun.
    shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
    loop.train_and_evaluate(config, resumed)
    assert _train_losses(resumed) == _train_losses(straight)
    assert sorted(_train_losses(resumed)) == [1, 2, 3, 4, 5, 6]


def _start_train(workdir, *overrides):
    args = [
        sys.executable,
        os.path.join(REPO, "experiments", "train.py"),
        f"--config={os.path.join(CONFIGS, 'gpt_shakespeare_char.py')}:test",
        f"--workdir={workdir}",
        "--config.num_train_steps=400",
        "--config.log_every_steps=1",
        "--config.eval_every_steps=1000",
        "--config.checkpoint_every_steps=50",
        "--config.model.num_layers=1",
        "--config.model.emb_dim=32",
        "--config.model.mlp_dim=64",
        *overrides,
    ]
    return subprocess.Popen(
        args, env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait_for_step(workdir, target, proc, timeout=120):
    deadline = time.time() + timeout
    path = os.path.join(workdir, "metrics.jsonl")
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        if os.path.exists(path):
            with open(path) as f:
                lines = [ln for ln in f if ln.strip()]
            if lines and json.loads(lines[-1])["step"] >= target:
                return
        time.sleep(0.05)
    raise TimeoutError(f"run did not reach step {target}")


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    proc = _start_train(straight)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-3000:]

    proc = _start_train(killed)
    _wait_for_step(killed, 120, proc)  # past the checkpoints at 50 and 100, before 150
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _train_losses(killed)
    assert 120 <= max(done) < 400, max(done)

    proc = _start_train(killed)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-3000:]
    assert _train_losses(killed) == _train_losses(straight)


def test_sigterm_saves_a_checkpoint_then_exits(tmp_path):
    workdir = str(tmp_path / "run")
    proc = _start_train(workdir, "--config.checkpoint_every_steps=1000")
    _wait_for_step(workdir, 20, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()[-3000:]
    saved = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))]
    assert len(saved) == 1 and 20 <= saved[0] < 400, saved


ALL_CONFIGS = sorted(glob.glob(os.path.join(CONFIGS, "[!_]*.py")))


@pytest.mark.parametrize("config_file", ALL_CONFIGS, ids=os.path.basename)
def test_every_config_builds_and_runs_one_step(config_file, tmp_path):
    run_script(
        "train.py",
        f"--config={config_file}:test",
        f"--workdir={tmp_path}",
        "--config.num_train_steps=1",
    )
    assert _train_losses(str(tmp_path))


# ---- Clear errors ----


def test_unknown_config_key_is_a_clear_error(tmp_path):
    proc = run_script(
        "train.py",
        f"--config={os.path.join(CONFIGS, 'gpt_shakespeare_char.py')}:test",
        f"--workdir={tmp_path}",
        "--config.model.num_layer=3",
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "lmjax: error: unknown config key model.num_layer in --config.model.num_layer=3 "
        "(did you mean model.num_layers?)"
    )


def test_batch_size_not_dividing_devices_names_both_numbers(workdir):
    proc = run_script(
        "train.py",
        f"--config={os.path.join(CONFIGS, 'gpt_shakespeare_char.py')}:test",
        f"--workdir={workdir}",
        "--config.batch_size=12",
        devices=8,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    expected = "lmjax: error: batch_size 12 does not divide over the 8 data-parallel devices"
    assert proc.stderr.strip().splitlines()[-1].startswith(expected)


def test_missing_data_file_is_a_clear_error(workdir):
    config = tiny_config(**{"data.path": "/no/such/corpus.txt"})
    with pytest.raises(errors.MissingInput, match="^data file '/no/such/corpus.txt' not found"):
        loop.train_and_evaluate(config, workdir)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(workdir):
    config = tiny_config(learning_rate=1e30, warmup_steps=2, checkpoint_every_steps=1)
    config.optimizer.grad_clip_norm = 1e30
    with pytest.raises(FloatingPointError, match=r"at step (\d+)") as err:
        loop.train_and_evaluate(config, workdir)
    bad_step = int(err.value.args[0].split("at step ")[1].split(";")[0])
    saved = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")))
    # The state the failing step started from fails it again on any rerun: it is set aside.
    assert saved and max(saved) == bad_step - 2
    assert os.listdir(os.path.join(workdir, "checkpoints_set_aside")) == [str(bad_step - 1)]
    assert f"last good checkpoint is step {bad_step - 2}" in str(err.value)


def test_config_that_does_not_fit_the_checkpoint_names_the_parameter(workdir):
    loop.train_and_evaluate(tiny_config(), workdir)
    with pytest.raises(ValueError, match=r"mlp/fc/kernel has shape \(32, 64\) in the checkpoint"):
        loop.train_and_evaluate(tiny_config(**{"model.mlp_dim": 48}), workdir)
