"""Shared fixtures: tiny configs, temp workdirs, strict numerics, subprocess runners."""

import contextlib
import os
import socket
import subprocess
import sys
import textwrap

import jax
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")

jax.config.update("jax_numpy_rank_promotion", "raise")


def tiny_config(**overrides):
    """The shakespeare config shrunk to a few fast steps; overrides are dotted keys."""
    from configs import gpt_shakespeare_char

    config = gpt_shakespeare_char.get_config("test")
    config.model.num_layers = 2
    config.model.emb_dim = 32
    config.model.mlp_dim = 64
    config.model.num_heads = 2
    config.seq_len = 16
    config.batch_size = 8
    return override(config, **overrides)


def override(config, **overrides):
    """Sets dotted keys (`model.mlp_dim`) as `--config.KEY=VALUE` would; returns the config."""
    for key, value in overrides.items():
        parent = config
        *path, leaf = key.split(".")
        for p in path:
            parent = parent[p]
        parent[leaf] = value
    return config


def make_task(config):
    """The task of `config`, resolved as a run resolves it."""
    from lmjax import tasks

    return tasks.get_task(tasks.resolve_config(config))


@pytest.fixture(scope="session", autouse=True)
def token_ids_cache(tmp_path_factory):
    """The session's own cache of token ids (lmjax/data/token_cache.py), in process and in the
    scripts the tests start: nothing from an earlier session is read back."""
    from lmjax.data import token_cache

    before = os.environ.get(token_cache.ENV)
    os.environ[token_cache.ENV] = str(tmp_path_factory.mktemp("token_cache"))
    yield
    if before is None:
        os.environ.pop(token_cache.ENV)
    else:
        os.environ[token_cache.ENV] = before


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
    """One persistent XLA compilation cache for the session, in process and in the scripts the
    tests start (through the environment): the tests compile the same tiny programs again and
    again, and a loaded program computes the same numbers. ~3 s of a 12 s script run."""
    from jax.experimental.compilation_cache import compilation_cache

    settings = {
        "jax_compilation_cache_dir": str(tmp_path_factory.mktemp("xla_cache")),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    before = {k: getattr(jax.config, k) for k in settings}
    env_before = {k.upper(): os.environ.get(k.upper()) for k in settings}
    for k, v in settings.items():
        jax.config.update(k, v)
        os.environ[k.upper()] = str(v)
    compilation_cache.reset_cache()  # read the settings again at the next compile
    yield
    for k, v in before.items():
        jax.config.update(k, v)
    for k, v in env_before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    compilation_cache.reset_cache()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a host fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path / "workdir")


def run_snippet(code, devices=1, env=None, timeout=600):
    """Runs Python `code` (dedented) in a fresh process in the repository, with `devices`
    simulated CPU devices and `env`'s variables added; asserts that it exits 0 with "OK" as the
    last line of its output."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**script_env(devices), **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
    return proc


def run_script(script, *args, devices=1, timeout=600, check=True, env=None, python_flags=()):
    """Runs `experiments/<script>` in a fresh Python (with `python_flags`, e.g. "-u") with
    `devices` simulated CPU devices and `env`'s variables added."""
    proc = subprocess.run(
        [sys.executable, *python_flags, os.path.join(REPO, "experiments", script), *args],
        env={**script_env(devices), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def script_env(devices=1):
    env = dict(os.environ)  # the entry points restart with the malloc tunables, as users run
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


@contextlib.contextmanager
def unwritable(path):
    """`path` (a file or a folder) cannot be written while inside: its write bits cleared, or,
    for root (whom modes do not stop), the immutable attribute set; the test is skipped where
    neither can be done."""
    if os.geteuid() != 0:
        mode = os.stat(path).st_mode
        os.chmod(path, mode & ~0o222)
        try:
            yield
        finally:
            os.chmod(path, mode)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip(f"cannot make {path} unwritable here (root, and chattr +i failed)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
