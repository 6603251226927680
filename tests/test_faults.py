"""Faults a run survives without losing work: divergence on a save step, damaged checkpoints,
a second run in the same workdir, kills at random moments, a failed save, a failed start."""

import errno
import glob
import logging
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lmjax import errors
from lmjax import workdir as workdir_lib
from lmjax.data import tokenizers
from lmjax.train import build, checkpoint, loop, metrics, step
from tests.conftest import CONFIGS, REPO, script_env, tiny_config, unwritable
from tests.test_train import _train_losses

# A failed read or write leaves TensorStore callbacks that find Orbax's event loop closed.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored:pytest.PytestUnraisableExceptionWarning"
)


def _saved_steps(workdir):
    return sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


def _is_finite(workdir, saved_step):
    state = ocp.StandardCheckpointer().restore(f"{workdir}/checkpoints/{saved_step}/state")
    return all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))


@pytest.fixture(autouse=True)
def _absl_info(caplog):
    caplog.set_level(logging.INFO)  # "resumed from ..." and the warnings, as the loop logs them


# ---- Divergence: a non-finite state is never saved ----


def test_divergence_on_a_save_step_saves_nothing_non_finite(workdir, caplog):
    """lr 1e6 makes step 3's update NaN (its loss is still finite, 2.8e9): with a checkpoint
    every step, that state was saved and named "the last good checkpoint", and the advised rerun
    at a lower learning rate resumed the NaN parameters. Nor may the rerun resume the state
    step 3 started from: its gradient on step 3's batch is NaN whatever the learning rate."""
    config = tiny_config(learning_rate=1e6, checkpoint_every_steps=1, log_every_steps=1)
    with pytest.raises(errors.Diverged, match=r"at step (\d+);") as err:
        loop.train_and_evaluate(config, workdir)
    bad_step = int(str(err.value).split("at step ")[1].split(";")[0])
    saved = _saved_steps(workdir)
    assert saved and all(_is_finite(workdir, s) for s in saved), saved
    assert saved[-1] == bad_step - 2, (bad_step, saved)
    assert os.path.isdir(os.path.join(workdir, checkpoint.SET_ASIDE, str(bad_step - 1)))
    assert f"last good checkpoint is step {saved[-1]} in " in str(err.value)
    assert "learning_rate" in str(err.value) and "\n" not in str(err.value)

    loop.train_and_evaluate(tiny_config(checkpoint_every_steps=1, log_every_steps=1), workdir)
    assert f"resumed from {workdir_lib.checkpoint_dir(workdir)}/{saved[-1]}" in caplog.text
    losses = _train_losses(workdir)
    assert sorted(losses) == list(range(1, 7)) and all(np.isfinite(list(losses.values())))


def test_an_update_that_overflows_the_parameters_is_never_saved(workdir, monkeypatch):
    """The loss and gradient norm of a step are computed before its update: only a check of the
    state itself catches an update that makes the parameters non-finite on a save step."""
    make_train_step = step.make_train_step

    def overflow_at_step_3(*args, **kwargs):
        train_step = make_train_step(*args, **kwargs)

        def overflowing(state, batch):
            state, metrics = train_step(state, batch)
            blow_up = state["step"] == 3
            params = jax.tree.map(lambda p: jnp.where(blow_up, jnp.inf, p), state["params"])
            return {**state, "params": params}, metrics

        return overflowing

    monkeypatch.setattr(step, "make_train_step", overflow_at_step_3)
    config = tiny_config(checkpoint_every_steps=1, log_every_steps=1)
    with pytest.raises(errors.Diverged, match="not finite after step 3") as err:
        loop.train_and_evaluate(config, workdir)
    assert _saved_steps(workdir) == [1, 2]
    assert "last good checkpoint is step 2 in " in str(err.value)


# ---- Damaged checkpoints: restore walks back to the newest one that reads ----


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of 6 steps, checkpoints at 2, 4 and 6."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    loop.train_and_evaluate(_every_other_step(), workdir)
    return workdir


def _every_other_step(**overrides):
    return tiny_config(log_every_steps=1, checkpoint_every_steps=2, **overrides)


def _truncate_largest_array_file(ckpt):
    files = glob.glob(f"{ckpt}/state/ocdbt.process_0/d/*")  # the arrays' chunks
    largest = max(files, key=os.path.getsize)
    os.truncate(largest, os.path.getsize(largest) // 2)


DAMAGES = {
    "truncated_array_file": _truncate_largest_array_file,
    "no_state_METADATA": lambda ckpt: os.remove(f"{ckpt}/state/_METADATA"),
    "no_data_metadata": lambda ckpt: os.remove(f"{ckpt}/data/metadata"),
    "no_manifest": lambda ckpt: os.remove(f"{ckpt}/state/manifest.ocdbt"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_moved_aside_and_the_run_resumes_from_the_one_before(
    damage, reference, tmp_path, caplog
):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    checkpoints = workdir_lib.checkpoint_dir(workdir)
    shutil.rmtree(f"{checkpoints}/6")  # a crash after the step-4 save ...
    DAMAGES[damage](f"{checkpoints}/4")  # ... that damaged it
    loop.train_and_evaluate(_every_other_step(), workdir)
    assert f"checkpoint {checkpoints}/4 is damaged" in caplog.text
    assert f"resumed from {checkpoints}/2" in caplog.text
    assert os.path.isdir(os.path.join(workdir, checkpoint.SET_ASIDE, "4"))  # kept, not deleted
    assert _saved_steps(workdir) == [2, 4, 6]
    assert _train_losses(workdir) == _train_losses(reference)


def test_when_no_checkpoint_restores_the_error_lists_them_and_moves_nothing(reference, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    for s in (2, 4, 6):
        os.remove(f"{workdir}/checkpoints/{s}/state/manifest.ocdbt")
    with pytest.raises(errors.InputError, match="no checkpoint in .* restores") as err:
        loop.train_and_evaluate(_every_other_step(), workdir)
    assert all(f"{s}: " in str(err.value) for s in (2, 4, 6)) and "\n" not in str(err.value)
    assert _saved_steps(workdir) == [2, 4, 6]
    assert not os.path.exists(os.path.join(workdir, checkpoint.SET_ASIDE))


def test_a_checkpoint_in_another_steps_folder_is_set_aside(reference, tmp_path, caplog):
    """A valid step-4 checkpoint copied to `checkpoints/999`: it was resumed as step 999 and,
    listed as newest for ever after, loaded by sample.py in place of the run's last weights."""
    from lmjax.train import inference

    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    checkpoints = workdir_lib.checkpoint_dir(workdir)
    shutil.copytree(f"{checkpoints}/4", f"{checkpoints}/999")
    _, params, _ = inference.load_model(workdir, task="clm")  # reads, moves nothing
    wrong = f"checkpoint {checkpoints}/999 is damaged (it holds the state after step 4, not 999"
    assert wrong in caplog.text and os.path.isdir(f"{checkpoints}/999")
    want = checkpoint.load_pretrained_params(workdir, params, step=6)[0]
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), params, want))
    loop.train_and_evaluate(_every_other_step(num_train_steps=8), workdir)
    assert f"resumed from {checkpoints}/6" in caplog.text
    assert os.path.isdir(os.path.join(workdir, checkpoint.SET_ASIDE, "999"))
    assert _saved_steps(workdir) == [4, 6, 8]


def test_sampling_walks_back_past_a_damaged_newest_checkpoint(reference, tmp_path, caplog):
    from lmjax.train import inference

    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    os.remove(f"{workdir}/checkpoints/6/state/manifest.ocdbt")
    _, params, _ = inference.load_model(workdir, task="clm")
    assert f"checkpoint {workdir}/checkpoints/6 is damaged (" in caplog.text
    want = checkpoint.load_pretrained_params(workdir, params, step=4)[0]
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), params, want))
    assert _saved_steps(workdir) == [2, 4, 6]  # nothing moved by a reader
    with pytest.raises(errors.InputError, match=f"checkpoint {workdir}/checkpoints/6 does not "
                       "read back: "):  # fmt: skip
        inference.load_model(workdir, step=6, task="clm")


# ---- A workdir the run cannot write: one line before anything runs, no Orbax timeout ----


@pytest.mark.parametrize("part", ["checkpoints", "metrics.jsonl", "config.json"])
def test_a_part_of_the_workdir_that_cannot_be_written_stops_the_resume_at_once(
    part, reference, tmp_path
):
    """An unwritable `checkpoints/` made Orbax wait ~300 s for a step folder it could not make;
    an unwritable metrics.jsonl was a PermissionError traceback that left metrics.jsonl.tmp."""
    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    target = os.path.join(workdir, part)
    start = time.monotonic()
    with unwritable(target), pytest.raises(errors.InputError) as err:
        loop.train_and_evaluate(_every_other_step(num_train_steps=8), workdir)
    assert time.monotonic() - start < 60
    assert re.fullmatch(
        f"cannot write {target} \\((Permission denied|Operation not permitted)\\): make it "
        "writable \\(chmod u\\+w, or chattr -i when it is immutable\\), or give another --workdir",
        str(err.value),
    ), str(err.value)
    assert sorted(os.listdir(workdir)) == sorted(os.listdir(reference))
    assert _saved_steps(workdir) == [2, 4, 6]


# ---- Reading init_from, and failed starts, write nothing ----


def test_reading_init_from_writes_nothing_there(reference, tmp_path):
    def listing(directory):
        return sorted(os.path.join(d, f) for d, _, files in os.walk(directory) for f in files)

    s = build.setup(tiny_config())
    with s.activate():
        params = build.build(s, s.task.make_model(65)).init(jax.random.PRNGKey(0))["params"]
        before = listing(reference)
        _, copied, _ = checkpoint.load_pretrained_params(reference, params)
        assert copied and listing(reference) == before
        no_checkpoint = tmp_path / "not_a_run"
        no_checkpoint.mkdir()
        for missing in (no_checkpoint, tmp_path / "no_such_dir"):
            with pytest.raises(errors.MissingInput, match=str(missing)):
                checkpoint.load_pretrained_params(str(missing), params)
    assert os.listdir(no_checkpoint) == [] and not os.path.exists(tmp_path / "no_such_dir")


def test_sampling_refuses_a_checkpoint_of_non_finite_parameters(reference, tmp_path):
    """One saved before the NaN guard existed: sample.py used to print newlines and exit 0."""
    from lmjax.train import inference

    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    manager = checkpoint.make_manager(workdir)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _restore_state(manager))
    state, data_state = checkpoint.restore(manager, 6, abstract)
    state["params"] = jax.tree.map(lambda x: x * jnp.nan, state["params"])
    state["step"] = state["step"] + 2  # saved as step 8, as a run would
    checkpoint.save(manager, 8, state, data_state, force=True)
    manager.wait_until_finished()
    with pytest.raises(errors.InputError, match="holds parameters that are not finite"):
        inference.load_model(workdir, task="clm")


def _restore_state(manager):
    return manager.restore(6, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


@pytest.mark.parametrize("bad", ["empty_corpus", "init_from_of_other_shapes"])
def test_a_failed_start_leaves_nothing_in_a_new_workdir(bad, workdir, tmp_path, reference):
    (tmp_path / "empty.txt").write_text("")
    overrides = {
        "empty_corpus": {"data.path": str(tmp_path / "empty.txt")},
        "init_from_of_other_shapes": {"init_from": reference, "model.mlp_dim": 48},
    }[bad]
    with pytest.raises(errors.InputError):
        loop.train_and_evaluate(tiny_config(**overrides), workdir)
    assert not os.path.exists(workdir) or os.listdir(workdir) == []  # the lock's folder at most


def test_a_config_that_does_not_fit_changes_nothing_in_the_workdir(reference, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    files = sorted(glob.glob(f"{workdir}/**", recursive=True))
    contents = {f: open(f, "rb").read() for f in files if os.path.isfile(f)}
    with pytest.raises(errors.InputError, match="mlp/fc/kernel"):
        loop.train_and_evaluate(_every_other_step(**{"model.mlp_dim": 48}), workdir)
    assert sorted(glob.glob(f"{workdir}/**", recursive=True)) == files
    assert all(open(f, "rb").read() == c for f, c in contents.items())


def test_a_fresh_start_makes_its_own_tokenizer(workdir):
    """A tokenizer left by a start that failed before its first checkpoint (e.g. on an empty
    corpus) is not reused: it may not fit this run's data."""
    tokenizers.CharTokenizer.from_text("xyz").save(workdir_lib.path(workdir))
    loop.train_and_evaluate(tiny_config(), workdir)
    assert workdir_lib.load_tokenizer(workdir).vocab_size == 65


# ---- A failed save stops the run at once ----


def test_no_room_for_a_checkpoint_stops_before_saving(workdir, monkeypatch):
    free = shutil.disk_usage("/")._replace(free=1000)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: free)
    with pytest.raises(errors.SaveFailed, match=r"no space for checkpoint 1: .* 0.0 MB free"):
        loop.train_and_evaluate(tiny_config(checkpoint_every_steps=1), workdir)
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_metrics_that_cannot_be_written_stop_the_run_with_one_line(reference, workdir, monkeypatch):
    """A full disk met by metrics.jsonl (step 3) stops the run as a failed save does; the rerun
    resumes from step 2's checkpoint and ends as the uninterrupted run."""
    append = workdir_lib.append_metrics

    def no_space_at_step_3(path, record):
        if record["step"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{path}/metrics.jsonl")
        append(path, record)

    with monkeypatch.context() as m:
        m.setattr(workdir_lib, "append_metrics", no_space_at_step_3)
        with pytest.raises(errors.SaveFailed) as err:
            loop.train_and_evaluate(_every_other_step(), workdir)
    line = str(err.value)
    assert line.startswith("writing the metrics of step 3 failed: No space left on device (")
    assert f"the last good checkpoint is step 2 in {workdir}/checkpoints" in line
    assert "\n" not in line
    loop.train_and_evaluate(_every_other_step(), workdir)
    assert _train_losses(workdir) == _train_losses(reference)


def test_a_tensorboard_file_that_cannot_be_written_warns_and_the_run_goes_on(
    reference, workdir, monkeypatch, caplog
):
    def no_space(self, step, scalars):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(metrics.EventFile, "write_scalars", no_space)
    loop.train_and_evaluate(_every_other_step(), workdir)
    assert "TensorBoard file: [Errno 28] No space left on device; metrics.jsonl only" in caplog.text
    assert caplog.text.count("TensorBoard file:") == 1
    assert _train_losses(workdir) == _train_losses(reference)


# ---- Whole runs in subprocesses: a second run, kills, a write that fails ----

RUN_FLAGS = [
    f"--config={os.path.join(CONFIGS, 'gpt_shakespeare_char.py')}:test",
    "--config.num_train_steps=40",
    "--config.log_every_steps=1",
    "--config.eval_every_steps=1000",
    "--config.checkpoint_every_steps=5",
    "--config.checkpoint_max_to_keep=100",
    "--config.model.num_layers=1",
    "--config.model.emb_dim=32",
    "--config.model.mlp_dim=64",
]


def _start(workdir, *flags, preexec_fn=None):
    """experiments/train.py on RUN_FLAGS; stderr goes to WORKDIR.stderr (a pipe left unread
    could fill and block the run)."""
    with open(workdir + ".stderr", "w") as stderr:
        return subprocess.Popen(
            [sys.executable, os.path.join(REPO, "experiments", "train.py"),
             f"--workdir={workdir}", *RUN_FLAGS, *flags],
            env=script_env(), stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=preexec_fn,
        )  # fmt: skip


def _run(workdir, *flags, preexec_fn=None):
    """experiments/train.py on RUN_FLAGS to its end; stderr captured through a pipe."""
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "experiments", "train.py"),
         f"--workdir={workdir}", *RUN_FLAGS, *flags],
        env=script_env(), capture_output=True, text=True, timeout=300, preexec_fn=preexec_fn,
    )  # fmt: skip


def _stderr(workdir):
    with open(workdir + ".stderr") as f:
        return f.read()


def _finish(workdir, proc, timeout=300):
    assert proc.wait(timeout=timeout) == 0, _stderr(workdir)[-3000:]


def _wait_for_step(workdir, target, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if workdir_lib.has_metrics(workdir):
            records = workdir_lib.read_metrics(workdir)
            if records and records[-1]["step"] >= target:
                return
        assert proc.poll() is None, _stderr(workdir)[-3000:]
        time.sleep(0.02)
    raise TimeoutError(f"run did not reach step {target}")


def _logged(workdir):
    """The last step in metrics.jsonl (0 before the first)."""
    return max(_train_losses(workdir), default=0) if workdir_lib.has_metrics(workdir) else 0


def _error_line(text):
    """The one `lmjax: error: ...` line of an entry point's stderr, which has no traceback."""
    assert "Traceback" not in text, text[-3000:]
    lines = [line for line in text.splitlines() if line.startswith("lmjax: error: ")]
    assert len(lines) == 1, text[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("straight") / "run")
    _finish(workdir, _start(workdir))
    return workdir


def test_a_second_run_on_a_locked_workdir_stops_at_once(tmp_path, straight):
    workdir = str(tmp_path / "run")
    first = _start(workdir)
    _wait_for_step(workdir, 2, first)
    first.send_signal(signal.SIGSTOP)  # holds the lock, alive, for as long as the second takes
    try:
        second = _run(workdir)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"is in use by the run of pid {first.pid} on " in _error_line(second.stderr)
    _finish(workdir, first)
    assert _train_losses(workdir) == _train_losses(straight)


def test_kills_at_random_moments_and_during_saves_then_reruns_equal_an_uninterrupted_run(
    tmp_path, straight
):
    rng = random.Random(16)
    workdir = str(tmp_path / "run")
    in_save = 0
    for when in ("during_save", "random", "during_save"):
        done = _logged(workdir)
        proc = _start(workdir)
        _wait_for_step(workdir, done + 1, proc)  # progress past what earlier attempts logged
        if when == "random":
            time.sleep(rng.uniform(0.0, 0.5))
        else:  # as soon as a save is in flight (Orbax writes into `<step>.orbax-checkpoint-tmp`)
            deadline = time.time() + 30
            while proc.poll() is None and time.time() < deadline:
                if glob.glob(f"{workdir}/checkpoints/*.orbax-checkpoint-tmp*"):
                    time.sleep(rng.uniform(0.0, 0.02))
                    break
                time.sleep(0.002)
        proc.kill()
        if proc.wait() == 0:  # (reaped: a zombie's pid would still look alive to the lock)
            break  # it finished before the kill
        in_save += bool(glob.glob(f"{workdir}/checkpoints/*.orbax-checkpoint-tmp*"))
    assert in_save >= 1  # at least one kill left a save unfinished
    _finish(workdir, _start(workdir))
    assert _train_losses(workdir) == _train_losses(straight)
    assert not glob.glob(f"{workdir}/checkpoints/*.orbax-checkpoint-tmp*")


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # preexec_fn: setrlimit only
def test_a_failed_write_stops_the_run_with_one_line_and_the_last_checkpoint_resumes(
    tmp_path, straight
):
    """RLIMIT_FSIZE makes every write past 30 kB fail as a full disk would (EFBIG, "File too
    large"): the checkpoint's array files cannot be written, metrics.jsonl still can."""
    workdir = str(tmp_path / "run")
    shutil.copytree(straight, workdir)
    for s in _saved_steps(workdir):
        if s > 20:
            shutil.rmtree(f"{workdir}/checkpoints/{s}")  # as if the run had stopped at 20

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    failed = _run(workdir, preexec_fn=small_files)  # stderr to a pipe: a file has the limit too
    assert failed.returncode == 1, failed.stderr[-3000:]
    line = _error_line(failed.stderr)
    assert "File too large" in line and f"{workdir}/checkpoints/25" in line, line
    assert f"the last good checkpoint is step 20 in {workdir}/checkpoints" in line, line
    _finish(workdir, _start(workdir))
    assert _train_losses(workdir) == _train_losses(straight)


def test_ctrl_c_saves_and_the_rerun_equals_an_uninterrupted_run(tmp_path, straight):
    """Ctrl-C was a KeyboardInterrupt traceback (exit 130) that lost the steps since the last
    checkpoint (every 5 here, 500 by default)."""
    workdir = str(tmp_path / "run")
    proc = _start(workdir)
    _wait_for_step(workdir, 7, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    stopped = _stderr(workdir).strip().splitlines()[-1]
    assert "Traceback" not in _stderr(workdir)
    match = re.match(r"lmjax: interrupted: stopped by Ctrl-C after step (\d+) ", stopped)
    assert match, stopped
    at = int(match[1])
    assert at >= 7 and _saved_steps(workdir)[-1] == at  # saved where it stopped
    # A second Ctrl-C stops at once (Ctrl-C twice in a row): no traceback, and a rerun still
    # ends as the uninterrupted run.
    proc = _start(workdir)
    _wait_for_step(workdir, at + 1, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert "Traceback" not in _stderr(workdir)
    assert _stderr(workdir).strip().splitlines()[-1].startswith("lmjax: interrupted: stopped by")
    _finish(workdir, _start(workdir))
    assert _train_losses(workdir) == _train_losses(straight)


def test_a_checkpoints_folder_that_becomes_unwritable_stops_the_run_in_seconds(tmp_path):
    """Orbax's save threads waited ~300 s for a step folder they could not make, after the
    run's one-line error, then printed a dozen 'coroutine ... was never awaited' lines."""
    workdir = str(tmp_path / "run")
    proc = _start(workdir, "--config.num_train_steps=100000")
    deadline = time.time() + 120
    while not os.path.isdir(f"{workdir}/checkpoints/5"):
        assert time.time() < deadline and proc.poll() is None, _stderr(workdir)[-3000:]
        time.sleep(0.01)
    with unwritable(f"{workdir}/checkpoints"):
        start = time.monotonic()
        assert proc.wait(timeout=120) == 1
        assert time.monotonic() - start < 30
    line = _error_line(_stderr(workdir))
    # Found by the check before a save (the line is pinned in test_errors.py); or, when the
    # folder turned unwritable during a save already in flight, by Orbax in the background.
    assert line.startswith(("lmjax: error: cannot save checkpoint", "lmjax: error: saving a "))
    assert "; the last good checkpoint is step " in line, line
    assert "never awaited" not in _stderr(workdir)
