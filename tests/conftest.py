"""Shared fixtures: tiny configs, temp workdirs, strict numerics, subprocess runners."""

import os
import socket
import subprocess
import sys

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
    env = dict(os.environ)
    # No restart with huge-page malloc (lmjax/host_malloc.py, ~2 s of imports a script; tested
    # in test_host_malloc.py): the tests' steps are too small for it to matter.
    env.setdefault("LMJAX_MALLOC", "system")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env
