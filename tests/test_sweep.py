"""Sweeps: spec helpers, validation before any run, run/skip/resume, collation and plots, the
local and the submitit launchers."""

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lmjax import config_files, errors, results, sweep
from lmjax import workdir as workdir_lib
from tests.conftest import CONFIGS, REPO, run_script, script_env

GPT_TEST = f"{os.path.join(CONFIGS, 'gpt_shakespeare_char.py')}:test"
TINY = {  # conftest.tiny_config's model, as overrides
    "model.num_layers": 1,
    "model.emb_dim": 32,
    "model.mlp_dim": 64,
    "model.num_heads": 2,
    "seq_len": 16,
    "batch_size": 8,
}


def _write_sweep(tmp_path, body, name="sweep_spec.py"):
    path = tmp_path / name
    path.write_text(f"from lmjax.sweep import product, zip_axes\n\nBASE = {TINY!r}\n\n{body}\n")
    return str(path)


def _sweep(*args, check=True):
    return run_script("sweep.py", f"--config={GPT_TEST}", *args, check=check)


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_product_and_zip_axes():
    assert sweep.product(("seed", [0, 1]), ("learning_rate", [1e-3, 3e-4])) == [
        {"seed": 0, "learning_rate": 1e-3},
        {"seed": 0, "learning_rate": 3e-4},
        {"seed": 1, "learning_rate": 1e-3},
        {"seed": 1, "learning_rate": 3e-4},
    ]
    arms = sweep.zip_axes(("use_nsp", [True, False]), ("data.dynamic_masking", [False, True]))
    assert arms == [
        {"use_nsp": True, "data.dynamic_masking": False},
        {"use_nsp": False, "data.dynamic_masking": True},
    ]
    assert sweep.product(arms, ("seed", [0]), {"num_train_steps": 5})[1] == {
        "use_nsp": False,
        "data.dynamic_masking": True,
        "seed": 0,
        "num_train_steps": 5,
    }
    with pytest.raises(ValueError, match="different lengths"):
        sweep.zip_axes(("a", [1, 2]), ("b", [1]))


def test_point_names_flags_and_validation(tmp_path):
    spec = _write_sweep(
        tmp_path,
        "def get_sweep():\n"
        "    return product(('model.dropout_rate', [0.1]), ('data.path', ['/x/y.txt']),\n"
        "                   ('learning_rate', [1e-05]), ('optimizer.weight_decay', [0]))",
    )
    (point,) = sweep.plan(GPT_TEST, spec, str(tmp_path / "w"))
    assert point.name == "dropout_rate=0.1,path=_x_y.txt,learning_rate=1e-05,weight_decay=0"
    assert "--config.learning_rate=1e-05" in point.args
    assert point.args[-1] == "--config.optimizer.weight_decay=0"  # an int for a float key is fine
    config = config_files.load_config(GPT_TEST, point.overrides)
    assert config.learning_rate == 1e-05 and config.optimizer.weight_decay == 0.0
    bad = _write_sweep(tmp_path, "def get_sweep():\n    return [{'model.num_layers': 2.5}]", "b.py")
    with pytest.raises(ValueError, match="model.num_layers"):
        sweep.plan(GPT_TEST, bad, str(tmp_path / "w"))
    # A value out of range fails the whole sweep before any run (config_checks).
    bad = _write_sweep(tmp_path, "def get_sweep():\n    return [{'optimizer.b1': 1}]", "c.py")
    with pytest.raises(errors.InputError, match=r"config.optimizer.b1=1.0 must be in \[0, 1\)"):
        sweep.plan(GPT_TEST, bad, str(tmp_path / "w"))


@pytest.mark.parametrize(
    "spec", sorted(glob.glob(os.path.join(CONFIGS, "sweeps", "*.py"))), ids=os.path.basename
)
def test_shipped_sweeps_validate(spec, tmp_path):
    points = sweep.plan(None, spec, str(tmp_path))  # their CONFIG; every key checked
    assert points and len({p.label for p in points}) == len(points)


def test_unknown_key_fails_before_any_run_naming_it(tmp_path):
    spec = _write_sweep(
        tmp_path, "def get_sweep():\n    return [{'seed': 0}, {'seed': 1, 'model.num_layer': 3}]"
    )
    workdir = tmp_path / "w"
    proc = _sweep(f"--sweep={spec}", f"--workdir={workdir}", check=False)
    assert proc.returncode != 0
    assert "unknown config key 'model.num_layer' (did you mean 'model.num_layers'?)" in proc.stderr
    assert not workdir.exists()


def test_sweep_runs_collates_plots_then_reruns_nothing(tmp_path):
    spec = _write_sweep(
        tmp_path,
        "def get_sweep():\n    return product(('learning_rate', [1e-3, 3e-3]), ('seed', [0, 1]))",
    )
    workdir = str(tmp_path / "w")
    printed = _sweep(f"--sweep={spec}", f"--workdir={workdir}", "--print_commands").stdout
    commands = printed.strip().split("\n")
    assert len(commands) == 4 and not os.path.exists(workdir)
    assert all("experiments/train.py" in c and "--config.seed=" in c for c in commands)

    _sweep(f"--sweep={spec}", f"--workdir={workdir}", "--parallel=2")
    names = ["learning_rate=0.001,seed=0", "learning_rate=0.001,seed=1",
             "learning_rate=0.003,seed=0", "learning_rate=0.003,seed=1"]  # fmt: skip
    for name in names:
        assert workdir_lib.checkpoint_steps(os.path.join(workdir, name)) == [3, 6]
        point = workdir_lib.read_json(os.path.join(workdir, name, workdir_lib.POINT))
        assert point["status"] == "done" and point["command"] in commands
    rows = _read_csv(os.path.join(workdir, "results.csv"))
    assert [r["run"] for r in rows] == names
    for row in rows:
        assert row["status"] == "done" and row["step"] == "6"
        for key in (
            "eval/loss",
            "eval/loss:best",
            "eval/accuracy",
            "wall_time_s",
            "tokens_per_sec",
        ):
            assert float(row[key]) > 0, key
        assert float(row["eval/loss:best"]) <= float(row["eval/loss"])
    with open(os.path.join(workdir, "results.md")) as f:
        md = f.read()
    assert "## Mean ± std over seeds" in md and "| learning_rate=0.003 | 2 (0, 1) |" in md
    for png in ("curves.png", "vs_learning_rate.png", "results.png"):
        with open(os.path.join(workdir, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", png

    logs = {n: os.path.getmtime(os.path.join(workdir, n, "train.log")) for n in names}
    again = _sweep(f"--sweep={spec}", f"--workdir={workdir}")
    assert "4 points, 4 finished, 0 to run" in again.stdout
    assert logs == {n: os.path.getmtime(os.path.join(workdir, n, "train.log")) for n in names}


def _wait_for_checkpoint(run_dir, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        if workdir_lib.checkpoint_steps(run_dir):
            return
        time.sleep(0.05)
    raise TimeoutError("no checkpoint")


def test_killed_point_resumes_from_its_checkpoint(tmp_path):
    spec = _write_sweep(
        tmp_path,
        "BASE.update(num_train_steps=1500, checkpoint_every_steps=100, log_every_steps=10,\n"
        "            eval_every_steps=10000)\n\n"
        "def get_sweep():\n    return [{'seed': 0}]",
    )
    workdir = str(tmp_path / "w")
    run_dir = os.path.join(workdir, "seed=0")
    args = [sys.executable, os.path.join(REPO, "experiments", "sweep.py"), f"--config={GPT_TEST}"]
    args += [f"--sweep={spec}", f"--workdir={workdir}"]
    proc = subprocess.Popen(
        args, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes train.py with it
    )  # fmt: skip
    _wait_for_checkpoint(run_dir, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = workdir_lib.checkpoint_steps(run_dir)
    assert saved and saved[-1] < 1500, saved

    out = run_script("sweep.py", *args[2:]).stdout
    assert f"resuming from step {saved[-1]}" in out
    point = workdir_lib.read_json(os.path.join(run_dir, workdir_lib.POINT))
    assert [a["resumed_from_step"] for a in point["attempts"]] == [None, saved[-1]]
    assert point["status"] == "done" and workdir_lib.checkpoint_steps(run_dir)[-1] == 1500
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    steps = [r["step"] for r in records if "train/loss" in r]
    assert steps == list(range(10, 1501, 10))  # every logged step once: resumed, not restarted
    with open(os.path.join(run_dir, "train.log")) as f:
        assert "resumed from" in f.read()


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    """A one-point sweep and its fine-tune, run by the local launcher: (sweep file, workdir)."""
    tmp_path = tmp_path_factory.mktemp("two_stage")
    spec = _write_sweep(
        tmp_path,
        "def get_sweep():\n    return [{'seed': 0}]\n\n"
        f"FINETUNE_CONFIG = {GPT_TEST!r}\nFINETUNE_BASE = dict(BASE, learning_rate=1e-4)\n\n"
        "def get_finetune_sweep(points):\n"
        "    return [{'init_from': p, 'seed': p['seed']} for p in points]",
    )
    workdir = str(tmp_path / "w")
    _sweep(f"--sweep={spec}", f"--workdir={workdir}")
    return spec, workdir


def test_two_stage_sweep_finetunes_from_each_point(two_stage):
    _, workdir = two_stage
    finetune_dir = os.path.join(workdir, "finetune", "seed=0")
    with open(os.path.join(finetune_dir, "config.json")) as f:
        assert json.load(f)["init_from"] == os.path.join(workdir, "seed=0")
    with open(os.path.join(finetune_dir, "train.log")) as f:
        assert "tensors loaded" in f.read()  # the loop's init_from line
    (row,) = _read_csv(os.path.join(workdir, "results.csv"))
    assert row["run"] == "seed=0" and row["finetune/run"] == os.path.join("finetune", "seed=0")
    assert float(row["eval/loss"]) > 0 and float(row["finetune/eval/loss"]) > 0
    assert os.path.exists(os.path.join(workdir, "curves_finetune.png"))


def test_fine_tuned_and_scratch_runs_with_equal_settings_are_separate_groups():
    """A second stage's scratch arm (init_from="") shares every other override with the
    fine-tuned arm; mean ± std must not pool the two."""
    rows = []
    for seed in (0, 1):
        for parent in ("seed=0", ""):
            row = {
                "finetune/init_from": parent,
                "finetune/learning_rate": 3e-4,
                "finetune/seed": seed,
                "finetune/eval/accuracy": 0.8 if parent else 0.7,
            }
            if parent:
                row["run"] = parent
            rows.append(row)
    table = results.Table(
        rows,
        ["finetune/init_from", "finetune/learning_rate", "finetune/seed"],
        ["finetune/init_from"],
        ["finetune/eval/accuracy"],
    )
    groups = {text: [r["finetune/eval/accuracy"] for r in rs] for text, _, rs in table.groups()}
    assert groups == {
        "finetune/learning_rate=0.0003": [0.8, 0.8],
        "finetune/learning_rate=0.0003 (no first-stage run)": [0.7, 0.7],
    }


UNTIMED = ("wall_time_s", "tokens_per_sec")  # measured: differ from one run to the next


def _untimed(rows):
    return [{k: v for k, v in r.items() if k.rsplit("/", 1)[-1] not in UNTIMED} for r in rows]


def _md_runs(path):
    """The rows of results.md's runs table, as dicts."""
    with open(path) as f:
        table = f.read().split("## Runs\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    header, _, *rows = [[c.strip() for c in line.strip("| ").split(" | ")] for line in table]
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_submitit_local_launcher_writes_the_local_launchers_results(two_stage, tmp_path):
    spec, local_dir = two_stage
    workdir = str(tmp_path / "w")
    out = _sweep(f"--sweep={spec}", f"--workdir={workdir}", "--launcher=submitit_local").stdout
    assert out.count("submitted 1 point(s)") == 2, out  # the fine-tune once its point finished
    assert _untimed(_read_csv(os.path.join(workdir, "results.csv"))) == _untimed(
        _read_csv(os.path.join(local_dir, "results.csv"))
    )
    assert _untimed(_md_runs(os.path.join(workdir, "results.md"))) == _untimed(
        _md_runs(os.path.join(local_dir, "results.md"))
    )
    for label in ("seed=0", os.path.join("finetune", "seed=0")):
        point = workdir_lib.read_point(os.path.join(workdir, label))
        local = workdir_lib.read_point(os.path.join(local_dir, label))
        assert point["status"] == "done" and len(point["attempts"]) == 1
        assert point["command"] == local["command"].replace(local_dir, workdir)
    config = workdir_lib.read_config_dict(os.path.join(workdir, "finetune", "seed=0"))
    assert config["init_from"] == os.path.join(workdir, "seed=0")
    assert len(glob.glob(os.path.join(workdir, "submitit", "*_log.out"))) == 2  # a job a point


def test_slurm_launcher_takes_partition_gpus_time_and_array_parallelism(tmp_path, monkeypatch):
    # No SLURM here: a fake srun (submitit looks for one) and an sbatch that keeps the script.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {tmp_path / "job.sh"}\necho "Submitted batch job 4242"\n'
    )
    for tool in ("srun", "sbatch"):
        os.chmod(bin_dir / tool, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    launcher = sweep.make_launcher(  # as experiments/sweep.py's --launcher=slurm --slurm_* flags
        "slurm",
        folder=str(tmp_path / "submitit"),
        slurm_partition="gpu",
        slurm_gpus_per_node=2,
        slurm_cpus_per_task=8,
        slurm_time=90,
        slurm_array_parallelism=2,
    )
    executor = launcher.executor()
    assert executor.cluster == "slurm"
    wanted = {"partition": "gpu", "gpus_per_node": 2, "cpus_per_task": 8, "time": 90,
              "array_parallelism": 2}  # fmt: skip
    assert {k: executor.parameters.get(k) for k in wanted} == wanted

    spec = _write_sweep(tmp_path, "def get_sweep():\n    return product(('seed', [0, 1, 2]))")
    points = sweep.plan(GPT_TEST, spec, str(tmp_path / "w"))
    jobs = launcher.submit(executor, points, ["python", "train.py"])
    assert [job.job_id for job in jobs] == ["4242_0", "4242_1", "4242_2"]  # one array
    script = (tmp_path / "job.sh").read_text().splitlines()
    for line in ("--array=0-2%2", "--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=8",
                 "--time=90"):  # fmt: skip
        assert f"#SBATCH {line}" in script, line
    for job, point in zip(jobs, points, strict=True):  # each job runs its own point
        submission = job.submission()
        assert submission.args == (point,) and submission.function.train_command[-1] == "train.py"
