"""On a CPU host, the entry points that run steps restart once with glibc's malloc set to keep
the memory it gets: `restart_tuned(__name__)`, the first statement of each of them.

XLA:CPU allocates the buffers of a step's temporaries each time the step runs and frees them
afterwards (~600 MB a step at L6 C384 T256 B8). glibc serves blocks that large with a fresh
`mmap` and gives them back at `free`, so every step page-faults its temporaries in again, 4 KiB
at a time, a large share of a CPU step. The restart
sets four `GLIBC_TUNABLES` (`TUNABLES`): `mmap_max=0` (large blocks come from the heap too),
`trim_threshold` of 64 GiB (free memory stays in the process), `arena_max=1` (XLA's threads
share the main heap: a thread's own arena stops at 64 MB and would map larger blocks anyway) and
`hugetlb=1` (the heap on transparent huge pages where the kernel allows, fewer faults while it
grows). After the first steps a step faults no page in. The cost is memory: the process keeps
the high-water mark of its heap, fragmented by blocks of many lifetimes (about twice the
resident memory at that shape). Figures: docs/benchmarks.md, "Where the time goes".

glibc reads its tunables when a process starts, hence the restart: `os.execve` of the same
command line (same PID, before JAX or anything else heavy is imported). It happens only where
JAX will run on the CPU, which is known before JAX loads (`backend_is_cpu`: `JAX_PLATFORMS`
names cpu first, or no GPU/TPU plugin is installed): GPU and TPU hosts keep glibc's defaults.
Nothing happens off Linux, on a C library other than glibc >= 2.35 (where `hugetlb` appeared),
when GLIBC_TUNABLES already sets each of the four (the user's value wins over ours), or with
`LMJAX_MALLOC=system`. It changes where memory comes from, never a number a run computes.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys

TUNABLES = (
    "glibc.malloc.hugetlb=1",
    "glibc.malloc.mmap_max=0",
    "glibc.malloc.trim_threshold=68719476736",
    "glibc.malloc.arena_max=1",
)
OPT_OUT = "LMJAX_MALLOC"  # =system: keep glibc's defaults
# Modules whose presence means JAX will take an accelerator (it finds them the same way).
ACCELERATOR_MODULES = ("libtpu", "jax_plugins")


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the glibc this process runs on, or None on another C library."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):  # no confstr name (macOS), musl
        return None


def missing(env: dict[str, str]) -> list[str]:
    """The `TUNABLES` whose names `env`'s GLIBC_TUNABLES does not set (by us, or the user)."""
    given = {t.partition("=")[0] for t in env.get("GLIBC_TUNABLES", "").split(":")}
    return [t for t in TUNABLES if t.partition("=")[0] not in given]


def backend_is_cpu(env: dict[str, str]) -> bool:
    """Whether JAX will run on the CPU, told before it loads: the first of `JAX_PLATFORMS`, or
    else no accelerator plugin installed (none in the `jax_plugins` entry points, no `libtpu`
    or `jax_plugins` module)."""
    platforms = env.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    if importlib.metadata.entry_points(group="jax_plugins"):
        return False
    return not any(importlib.util.find_spec(name) for name in ACCELERATOR_MODULES)


def wanted(env: dict[str, str] | None = None) -> bool:
    """Whether this process should restart with the `missing` tunables."""
    env = os.environ if env is None else env
    return (
        env.get(OPT_OUT, "") != "system"
        and sys.platform.startswith("linux")
        and (glibc_version() or (0, 0)) >= (2, 35)
        and bool(missing(env))
        and bool(sys.executable)
        and backend_is_cpu(env)
    )


def tuned_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with the `missing` tunables added to its GLIBC_TUNABLES (colon-separated)."""
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    return {**env, "GLIBC_TUNABLES": ":".join([*tunables, *missing(env)])}


def untuned_env(env: dict[str, str]) -> dict[str, str]:
    """`env` without `TUNABLES`: how a user runs another program (the benchmark's peers)."""
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and t not in TUNABLES]
    out = {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"}
    return {**out, "GLIBC_TUNABLES": ":".join(tunables)} if tunables else out


def opt_out_error(env: dict[str, str] | None = None) -> str | None:
    """The one-line message for an `LMJAX_MALLOC` that is neither unset/empty nor `system`."""
    value = (os.environ if env is None else env).get(OPT_OUT, "")
    if value in ("", "system"):
        return None
    fix = f"use {OPT_OUT}=system (glibc's defaults) or unset it"
    return f"{OPT_OUT}={value!r} is not a setting: {fix}"


def restart_tuned(module_name: str = "__main__") -> None:
    """Re-executes this command line with the `missing` tunables when `wanted()` and the caller
    is the program (`module_name` is `__name__`: "__main__"; not when a test imports it);
    returns only when it does not restart (or the exec fails)."""
    if module_name != "__main__" or not wanted():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, *sys.orig_argv[1:]]  # the interpreter's own flags (-u, -X ...) too
    try:
        os.execve(sys.executable, argv, tuned_env(dict(os.environ)))
    except OSError:  # cannot re-execute (e.g. the interpreter file is gone): run as we are
        return
