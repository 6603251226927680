"""Every entry point restarts itself once with glibc's malloc asking for huge pages.

XLA:CPU allocates one block for all of a step's temporaries each time the step runs and frees it
afterwards: 47 MB at the Shakespeare GPT's shape, more at bigger ones. glibc serves a block that
large with a fresh `mmap`, so every step touches its temporaries for the first time, one 4 KiB
page fault after another (~25k faults a step at the Shakespeare GPT's shape, ~325k at L6 C384
T256 B8: a third and a fifth of the step). `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` makes glibc
`madvise` those mappings for transparent huge pages, one fault per 2 MiB. On this project's
2-core Zen 5, float32: the Shakespeare GPT 29 -> 19 ms a step, nanoGPT's GPU model (L6 C384
T256 B8) 568 -> 447 ms, the tiny BERT 123 -> 80 ms (README, "Where the time goes").

glibc reads its tunables when a process starts, hence the restart: `os.execve` of the same
command line (same PID, nothing run yet: `cli.run` calls `restart_with_huge_pages` before it
parses the flags). Nothing happens off Linux, on a C library other than glibc >= 2.35 (where the
tunable appeared), with transparent huge pages `never`, when GLIBC_TUNABLES already sets
`glibc.malloc.hugetlb`, or with `LMJAX_MALLOC=system`. It changes where memory comes from, never
a number a run computes.
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "LMJAX_MALLOC"  # =system: keep glibc's defaults
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the glibc this process runs on, or None on another C library."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):  # no confstr name (macOS), musl
        return None


def huge_pages_possible(thp_enabled: str = THP_ENABLED) -> bool:
    """Whether the kernel gives transparent huge pages to a mapping that asks (`always` or
    `madvise` in /sys/kernel/mm/transparent_hugepage/enabled)."""
    try:
        with open(thp_enabled) as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def wanted(env: dict[str, str] | None = None, thp_enabled: str = THP_ENABLED) -> bool:
    """Whether this process should restart with `TUNABLE`."""
    env = os.environ if env is None else env
    tunables = env.get("GLIBC_TUNABLES", "")
    return (
        env.get(OPT_OUT, "") != "system"
        and sys.platform.startswith("linux")
        and (glibc_version() or (0, 0)) >= (2, 35)
        and "glibc.malloc.hugetlb=" not in tunables  # set already: by us, or the user's choice
        and huge_pages_possible(thp_enabled)
        and bool(sys.executable)
    )


def tuned_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with `TUNABLE` added to its GLIBC_TUNABLES (colon-separated)."""
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    return {**env, "GLIBC_TUNABLES": ":".join([*tunables, TUNABLE])}


def untuned_env(env: dict[str, str]) -> dict[str, str]:
    """`env` without `TUNABLE`: how a user runs another program (the benchmark's peers)."""
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and t != TUNABLE]
    out = {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"}
    return {**out, "GLIBC_TUNABLES": ":".join(tunables)} if tunables else out


def opt_out_error(env: dict[str, str] | None = None) -> str | None:
    """The one-line message for an `LMJAX_MALLOC` that is neither unset/empty nor `system`."""
    value = (os.environ if env is None else env).get(OPT_OUT, "")
    if value in ("", "system"):
        return None
    fix = f"use {OPT_OUT}=system (glibc's defaults) or unset it"
    return f"{OPT_OUT}={value!r} is not a setting: {fix}"


def restart_with_huge_pages() -> None:
    """Re-executes this command line with `TUNABLE` when `wanted()`; returns only when it does
    not restart (or the exec fails)."""
    if not wanted():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, *sys.orig_argv[1:]]  # the interpreter's own flags (-u, -X ...) too
    try:
        os.execve(sys.executable, argv, tuned_env(dict(os.environ)))
    except OSError:  # cannot re-execute (e.g. the interpreter file is gone): run as we are
        return
