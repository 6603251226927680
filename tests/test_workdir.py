"""lmjax.workdir: the run directory's files, on a local path and on a `gs://` bucket (mocked with
etils.epath's test backend onto a local folder, so every access must go through epath)."""

import json
import os

import pytest
from absl import logging
from etils.epath import testing as epath_testing

from configs import sst2_finetune
from lmjax import workdir as workdir_lib
from lmjax.data import tokenizers
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
