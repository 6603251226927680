"""The restart with glibc's malloc tunables (lmjax/host_malloc.py): when it happens, what the
restarted process gets, and that the benchmark's peers run without it."""

import json
import os
import sys

import pytest

from lmjax import host_malloc
from lmjax.train import benchmark
from tests.conftest import CONFIGS, REPO, run_script

GLIBC_OK = sys.platform.startswith("linux") and (host_malloc.glibc_version() or (0, 0)) >= (2, 35)
OURS = ":".join(host_malloc.TUNABLES)


@pytest.mark.skipif(not GLIBC_OK, reason="needs Linux with glibc >= 2.35")
def test_wanted_on_linux_glibc_unless_opted_out_or_all_set():
    assert host_malloc.wanted({})
    assert host_malloc.wanted({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=16"})
    assert not host_malloc.wanted({"LMJAX_MALLOC": "system"})
    # already restarted, or the user set each of them (to other values too): no second restart
    assert not host_malloc.wanted({"GLIBC_TUNABLES": OURS})
    users = "glibc.malloc.hugetlb=0:glibc.malloc.mmap_max=8:glibc.malloc.trim_threshold=0:"
    assert not host_malloc.wanted({"GLIBC_TUNABLES": users + "glibc.malloc.arena_max=4"})
    assert host_malloc.wanted({"GLIBC_TUNABLES": users})  # arena_max is not set yet


def test_not_wanted_off_glibc(monkeypatch):
    monkeypatch.setattr(host_malloc, "glibc_version", lambda: None)  # musl, macOS
    assert not host_malloc.wanted({})
    monkeypatch.setattr(host_malloc, "glibc_version", lambda: (2, 34))  # before hugetlb
    assert not host_malloc.wanted({})


def test_tuned_and_untuned_env_keep_the_users_tunables():
    env = {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=16"}
    tuned = host_malloc.tuned_env(env)
    assert tuned == {"PATH": "/bin", "GLIBC_TUNABLES": f"glibc.malloc.tcache_count=16:{OURS}"}
    assert host_malloc.untuned_env(tuned) == env
    assert host_malloc.tuned_env({}) == {"GLIBC_TUNABLES": OURS}
    assert host_malloc.untuned_env(host_malloc.tuned_env({})) == {}
    # a value the user chose is kept, and only the others are added
    users = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}
    assert host_malloc.tuned_env(users)["GLIBC_TUNABLES"].split(":") == [
        "glibc.malloc.arena_max=4",
        *host_malloc.TUNABLES[:3],
    ]
    assert host_malloc.untuned_env(host_malloc.tuned_env(users)) == users


def test_restarts_only_the_program_and_only_where_jax_runs_on_the_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(host_malloc.os, "execve", lambda *args: calls.append(args))
    monkeypatch.setattr(host_malloc, "wanted", lambda: True)
    host_malloc.restart_tuned("experiments.train")  # imported by a test or a notebook
    assert calls == []
    host_malloc.restart_tuned("__main__")
    assert len(calls) == 1
    monkeypatch.undo()

    assert host_malloc.backend_is_cpu({"JAX_PLATFORMS": "cpu"})
    assert not host_malloc.backend_is_cpu({"JAX_PLATFORMS": "cuda,cpu"})
    assert not host_malloc.backend_is_cpu({"JAX_PLATFORMS": "tpu"})
    assert host_malloc.backend_is_cpu({})  # this machine: no accelerator plugin installed
    assert host_malloc.wanted({}) == GLIBC_OK
    assert not host_malloc.wanted({"JAX_PLATFORMS": "cuda"})  # a GPU host keeps glibc's
    # An installed GPU plugin (found as JAX finds it) or libtpu: not a CPU host.
    monkeypatch.setattr(host_malloc.importlib.metadata, "entry_points", lambda group: ["cuda"])
    assert not host_malloc.backend_is_cpu({})
    monkeypatch.setattr(host_malloc.importlib.metadata, "entry_points", lambda group: [])
    monkeypatch.setattr(host_malloc.importlib.util, "find_spec", lambda name: name == "libtpu")
    assert not host_malloc.backend_is_cpu({})


def test_entry_points_that_run_steps_restart_before_importing_jax():
    """The restart's first statement runs before anything heavy is imported (the re-exec
    would import it twice)."""
    for name in (
        "train",
        "benchmark",
        "glue",
        "blimp",
        "predict",
        "sample",
        "../benchmarks/profile_step",
    ):
        with open(os.path.join(REPO, "experiments", f"{name}.py")) as f:
            code = [line for line in f.read().split('"""', 2)[2].splitlines() if line.strip()]
        assert code[:2] == [
            "from lmjax import host_malloc",
            "host_malloc.restart_tuned(__name__)  # first: on a CPU host, glibc's malloc for XLA "
            "(see there)",
        ], name


def _benchmark(**env):
    """experiments/benchmark.py's JSON line at the Shakespeare GPT's shape, run with `python -u`
    and `env` added."""
    proc = run_script(
        "benchmark.py",
        f"--config={CONFIGS}/gpt_shakespeare_char.py",
        "--steps=3",
        "--warmup=3",
        env=env,
        python_flags=("-u",),
        timeout=300,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC_OK, reason="needs Linux with glibc >= 2.35")
def test_an_entry_point_restarts_once_with_the_tunables_and_its_steps_fault_nothing_in():
    # the restarted process (which kept the interpreter's -u) has the user's tunable and ours;
    # a restart loop would time out
    tuned = _benchmark(LMJAX_MALLOC="", GLIBC_TUNABLES="glibc.malloc.tcache_count=16")
    assert tuned["glibc_tunables"] == f"glibc.malloc.tcache_count=16:{OURS}"
    # with glibc's defaults each step maps its temporaries afresh (47 MB: ~12k faults)
    system = _benchmark(LMJAX_MALLOC="system", GLIBC_TUNABLES="")
    assert system["glibc_tunables"] == ""
    assert system["page_faults_per_step"] > 1000
    # the benchmark warms up until a pass spends under 2% of its time in the kernel: never here
    assert system["warmup_passes"] == benchmark.STEADY_PASSES
    assert tuned["page_faults_per_step"] < 500  # after the first steps: 0 to ~20


def test_a_failed_restart_runs_on(monkeypatch):
    monkeypatch.setattr(host_malloc, "wanted", lambda: True)

    def execve(*args):
        raise FileNotFoundError("no interpreter")

    monkeypatch.setattr(host_malloc.os, "execve", execve)
    assert host_malloc.restart_tuned() is None  # no exception: the run goes on


def test_an_unknown_lmjax_malloc_is_a_one_line_error_before_anything_runs(tmp_path):
    workdir = tmp_path / "run"
    proc = run_script(
        "train.py",
        f"--config={CONFIGS}/gpt_shakespeare_char.py:test",
        f"--workdir={workdir}",
        env={"LMJAX_MALLOC": "sytem"},
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lmjax: error: LMJAX_MALLOC='sytem' is not a setting: use LMJAX_MALLOC=system "
        "(glibc's defaults) or unset it"
    ]
    assert not workdir.exists()
