"""lmjax.workdir: the run directory's files, on a local path and on a `gs://` bucket (mocked with
etils.epath's test backend onto a local folder, so every access must go through epath)."""

import importlib
import json
import os
import socket
import subprocess
import time
from unittest import mock

import pytest
from absl import logging
from etils.epath import testing as epath_testing

from configs import sst2_finetune
from lmjax import errors
from lmjax import workdir as workdir_lib
from lmjax.data import tokenizers
from lmjax.tasks import resolve_config
from tests.conftest import tiny_config


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """`gs://bucket/...` paths served from tmp_path/bucket; a local path used by mistake fails."""
    from etils.epath import gpath

    # With TensorFlow installed epath sends gs:// to tf.io.gfile, past the mock: keep it there.
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    root = str(tmp_path / "bucket")
    os.makedirs(root)
    touched = []

    def local(path):
        path = os.fspath(path)
        if path.startswith(root):  # the backend calling itself on a path already mapped
            return path
        if not path.startswith("gs://bucket"):
            raise AssertionError(f"{path}: not the bucket (a local path leaked through)")
        touched.append(path)
        return root + path[len("gs://bucket") :]

    def one(fn, path, *args, **kwargs):
        return fn(local(path), *args, **kwargs)

    def two(fn, path, dst, *args, **kwargs):
        return fn(local(path), local(dst), *args, **kwargs)

    def walk(fn, path, **kwargs):
        for directory, dirs, files in fn(local(path), **kwargs):
            yield "gs://bucket" + directory[len(root) :], dirs, files

    def glob(fn, pattern):
        return ["gs://bucket" + p[len(root) :] for p in fn(local(pattern))]

    fns = dict(exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one, open=one,
               remove=one, rmtree=one, stat=one, rename=two, replace=two, copy=two, walk=walk,
               glob=glob)  # fmt: skip
    with epath_testing.mock_epath(**fns):
        yield root, touched


def test_a_run_directory_on_a_bucket(bucket):
    root, touched = bucket
    run = "gs://bucket/sweep/lr=0.001"
    config = tiny_config(num_train_steps=6)
    workdir_lib.save_config(config, run)
    assert json.load(open(os.path.join(root, "sweep/lr=0.001/config.json")))["seq_len"] == 16
    loaded = workdir_lib.load_config(run)
    assert loaded.model.emb_dim == 32 and loaded.num_train_steps == 6

    tok = tokenizers.CharTokenizer.from_text("hello world")
    workdir_lib.save_tokenizer(tok, run)
    assert workdir_lib.saved_tokenizer(run).chars == tok.chars
    assert workdir_lib.saved_tokenizer("gs://bucket/sweep/none") is None

    for step in (1, 2, 3):
        workdir_lib.append_metrics(run, {"step": step, "train/loss": 4.0 - step})
    workdir_lib.truncate_metrics(run, 2)
    assert workdir_lib.read_metrics(run) == [
        {"step": 1, "train/loss": 3.0},
        {"step": 2, "train/loss": 2.0},
    ]

    assert workdir_lib.checkpoint_steps(run) == [] and not workdir_lib.is_finished(run)
    for name in ("3", "6", "6.orbax-checkpoint-tmp-1"):  # an unfinished save has no plain name
        os.makedirs(os.path.join(root, "sweep/lr=0.001/checkpoints", name))
    assert workdir_lib.checkpoint_steps(run) == [3, 6] and workdir_lib.latest_step(run) == 6
    assert workdir_lib.is_finished(run) and not workdir_lib.is_finished(run, 7)
    assert str(workdir_lib.checkpoint_dir(run)) == run + "/checkpoints"  # no abspath on a bucket

    workdir_lib.write_point("gs://bucket/sweep/other", {"name": "other", "status": "running"})
    workdir_lib.write_sweep("gs://bucket/sweep", {"points": ["lr=0.001", "other"]})
    assert workdir_lib.read_point("gs://bucket/sweep/other")["status"] == "running"
    assert workdir_lib.read_sweep("gs://bucket/sweep")["points"][1] == "other"
    assert workdir_lib.find_runs("gs://bucket/sweep") == [run, "gs://bucket/sweep/other"]
    assert touched and all(p.startswith("gs://bucket") for p in touched)


def test_a_run_linked_under_its_own_sweep_is_found_once_by_its_real_name(tmp_path):
    """A symlink to a run inside the same root (e.g. a short name for --init_from) must not
    make the run count twice in a sweep's results."""
    for name in ("a=1,seed=0", "a=2,seed=0"):
        os.makedirs(tmp_path / name)
        workdir_lib.append_metrics(tmp_path / name, {"step": 1, "train/loss": 1.0})
    os.symlink("a=1,seed=0", tmp_path / "short")  # sorts after the real names
    os.symlink("a=2,seed=0", tmp_path / "0short")  # sorts before them
    outside = tmp_path.parent / f"{tmp_path.name}_outside"
    os.makedirs(outside)
    workdir_lib.append_metrics(outside, {"step": 1, "train/loss": 1.0})
    os.symlink(outside, tmp_path / "linked_in")  # a run that lives only behind a link
    assert workdir_lib.find_runs(tmp_path) == [
        str(tmp_path / "a=1,seed=0"),
        str(tmp_path / "a=2,seed=0"),
        str(tmp_path / "linked_in"),
    ]


def test_an_old_config_loads_with_todays_defaults_and_a_warning(tmp_path, monkeypatch):
    config = sst2_finetune.get_config("test").to_dict()
    del config["data"]["holdout_size"], config["grad_accum_steps"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda msg, *args: warnings.append(msg % args))
    loaded = workdir_lib.load_config(str(tmp_path))
    assert loaded.data.holdout_size == 0 and loaded.grad_accum_steps == 1
    assert len(warnings) == 1 and "data.holdout_size" in warnings[0]
    assert "grad_accum_steps" in warnings[0]
    with pytest.raises(AttributeError):  # locked, as a config file's is: no new keys by typo
        loaded.learning_rat = 1.0
    warnings.clear()
    workdir_lib.save_config(loaded, str(tmp_path))
    workdir_lib.load_config(str(tmp_path))
    assert not warnings  # a complete config says nothing


def test_missing_config_says_what_the_directory_lacks(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json in .*: is it a training workdir"):
        workdir_lib.load_config(str(tmp_path))


# ---- One run per workdir ----


def _write_lock(workdir, **holder):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, workdir_lib.LOCK), "w") as f:
        json.dump(holder, f)


def test_lock_is_held_while_the_run_runs_and_released_after(tmp_path):
    workdir = str(tmp_path / "run")
    with workdir_lib.lock(workdir):
        holder = workdir_lib.read_json(os.path.join(workdir, workdir_lib.LOCK))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        workdir_lib.check_unlocked(workdir)  # its own lock does not stop a run
    assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK))


def test_a_live_holder_stops_a_second_run_naming_it(tmp_path):
    workdir = str(tmp_path / "run")
    other = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(workdir, host=socket.gethostname(), pid=other.pid, since=time.time())
        with pytest.raises(errors.InputError, match=f"in use by the run of pid {other.pid} on "):
            workdir_lib.check_unlocked(workdir)
        with pytest.raises(errors.InputError, match="in use"):
            with workdir_lib.lock(workdir):
                pass
    finally:
        other.kill()
        other.wait()
    # The holder is gone: its lock is stale and taken over, with a warning naming it.
    with mock.patch.object(logging, "warning") as warn, workdir_lib.lock(workdir):
        assert workdir_lib.read_json(os.path.join(workdir, workdir_lib.LOCK))["pid"] == os.getpid()
    assert f"stale lock of pid {other.pid}" in warn.call_args[0][0] % warn.call_args[0][1:]


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_a_killed_holder_not_yet_reaped_is_stale(tmp_path):
    """A zombie (killed, its parent has not waited for it) still answers kill(pid, 0): the
    case of a sweep driver and its train.py killed together, the orphan reaped late."""
    workdir = str(tmp_path / "run")
    other = subprocess.Popen(["sleep", "60"])
    try:
        other.kill()
        for _ in range(100):  # until it is a zombie: dead, not reaped (we do not wait yet)
            with open(f"/proc/{other.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.05)
        os.kill(other.pid, 0)  # still "exists"
        _write_lock(workdir, host=socket.gethostname(), pid=other.pid, since=time.time())
        workdir_lib.check_unlocked(workdir)  # no error: the holder runs nothing
    finally:
        other.wait()


def test_a_holder_on_another_host_is_stale_once_its_heartbeat_stops(tmp_path):
    workdir = str(tmp_path / "run")
    _write_lock(workdir, host="node-7", pid=1, since=0.0, heartbeat=time.time() - 10)
    with pytest.raises(errors.InputError, match="pid 1 on node-7"):
        workdir_lib.check_unlocked(workdir)
    _write_lock(workdir, host="node-7", pid=1, since=0.0, heartbeat=time.time() - 3600)
    workdir_lib.check_unlocked(workdir)


# ---- A resumed run keeps its data ----


def test_changing_the_data_of_a_workdir_with_checkpoints_is_an_error(tmp_path):
    workdir = str(tmp_path / "run")
    workdir_lib.save_config(resolve_config(tiny_config()), workdir)
    moved = resolve_config(tiny_config(**{"data.path": "/data/other.txt", "learning_rate": 0.5}))
    workdir_lib.check_fits(moved, workdir)  # no checkpoint yet: what a failed start wrote goes
    os.makedirs(os.path.join(workdir, "checkpoints", "3"))
    with pytest.raises(
        errors.InputError, match="data.path='tinyshakespeare' .now '/data/other.txt'"
    ):
        workdir_lib.check_fits(moved, workdir)
    with mock.patch.object(logging, "warning") as warn:  # a new learning rate is a choice
        workdir_lib.check_fits(resolve_config(tiny_config(learning_rate=0.5)), workdir)
    assert "learning_rate=0.001 (now 0.5)" in warn.call_args[0][0] % warn.call_args[0][1:]


# ---- metrics.jsonl after a crash ----


def test_a_metrics_line_cut_short_is_dropped_and_later_steps_truncated(tmp_path):
    workdir = str(tmp_path)
    with open(os.path.join(workdir, workdir_lib.METRICS), "w") as f:
        f.write('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')
    assert workdir_lib.read_metrics(workdir) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}]
    workdir_lib.truncate_metrics(workdir, 1)
    with open(os.path.join(workdir, workdir_lib.METRICS)) as f:
        assert f.read() == '{"step": 1, "a": 1.0}\n'


def test_a_damaged_metrics_line_inside_the_file_is_an_error_naming_it(tmp_path):
    with open(os.path.join(tmp_path, workdir_lib.METRICS), "w") as f:
        f.write('{"step": 1}\n{"step": 2,\n{"step": 3}\n')
    with pytest.raises(errors.InputError, match=r"metrics.jsonl:2 is not a JSON record"):
        workdir_lib.read_metrics(str(tmp_path))


# ---- Logs ----


def test_library_logs_are_told_apart_by_module_not_by_path(tmp_path, monkeypatch):
    """A library in a venv inside a checkout named lmjax has "lmjax" in its path."""
    import logging as std_logging

    from lmjax.train import loop, metrics

    lib = tmp_path / "lmjax" / ".venv" / "site-packages"
    lib.mkdir(parents=True)
    (lib / "some_library.py").write_text("")
    monkeypatch.syspath_prepend(str(lib))
    some_library = importlib.import_module("some_library")

    def record(module, level=std_logging.INFO):
        return std_logging.LogRecord("absl", level, module.__file__, 1, "msg", (), None)

    assert metrics.is_lmjax_record(record(loop))
    assert not metrics.is_lmjax_record(record(some_library))
    assert metrics.is_lmjax_record(record(some_library, std_logging.WARNING))
