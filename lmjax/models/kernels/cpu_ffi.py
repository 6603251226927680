"""Causal self-attention on x86 CPUs as XLA custom calls (C++: `cpu_ffi.cc`).

XLA:CPU runs attention's batched score and value matmuls on one thread, each product written out
between fusions; the kernel here runs each (batch, head) pair as a task on XLA's thread pool and
keeps a few rows of scores at a time (docs/benchmarks.md, "Where the time goes").

The C++ source is compiled on first use with the machine's C++ compiler (`$CXX`, else `c++`) for
the CPU it runs on, and the library cached under `$XDG_CACHE_HOME/lmjax` (default `~/.cache`),
keyed by the source, jaxlib's version, the compiler and the CPU's flags (where that is not
writable: the temporary directory). `build.setup` builds it (`available()`) when it picks the
kernel, so no compiler runs while a step is traced; without a compiler, or if the build fails,
`available()` is False, with the reason (`build_error()`), and `auto` takes the einsums.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import jaxlib

_SOURCE = pathlib.Path(__file__).with_name("cpu_ffi.cc")
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w"]
VECTOR = 16  # the kernel's vector width in floats: the head dim is a multiple of it
_TARGETS = {
    "lmjax_causal_attention_fwd": "LmjaxCausalAttentionFwd",
    "lmjax_causal_attention_bwd": "LmjaxCausalAttentionBwd",
}


@functools.cache
def _cpu_flags() -> str:
    """/proc/cpuinfo's first flags line, read once."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _build(compiler: str) -> pathlib.Path:
    """The compiled library's path, building it into the cache first if it is not there."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        "\0".join(
            [_SOURCE.read_text(), " ".join(_FLAGS), jaxlib.__version__, version, _cpu_flags()]
        ).encode()
    ).hexdigest()[:16]
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    path = cache / "lmjax" / f"cpu_ffi-{key}.so"
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"{path.parent} is not writable")
    except OSError:  # a read-only home: the temporary directory, per user
        path = pathlib.Path(tempfile.gettempdir()) / f"lmjax-{os.getuid()}" / path.name
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # then renamed: no torn library
        out = pathlib.Path(tmp) / path.name
        command = [compiler, *_FLAGS, f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", str(out)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
        os.replace(out, path)
    return path


@functools.cache
def build_error() -> str | None:
    """Builds the kernel and registers it with XLA:CPU (once); why it could not, or None."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        return "no C++ compiler ($CXX, c++) to build it"
    try:
        library = ctypes.CDLL(str(_build(compiler)))
    except (OSError, RuntimeError) as e:
        return f"its build failed: {str(e).splitlines()[0]}"
    for target, symbol in _TARGETS.items():
        capsule = jax.ffi.pycapsule(getattr(library, symbol))
        jax.ffi.register_ffi_target(target, capsule, platform="cpu")
    return None


def available() -> bool:
    """Whether the kernel is built and registered (built on the first call)."""
    return build_error() is None


def measured_cpu() -> bool:
    """Whether this host's CPU is of a kind the kernel was measured faster on than the einsums:
    x86 with AVX2 or AVX-512 (/proc/cpuinfo's flags). Elsewhere (Arm, older x86) it was never
    timed, and a build with vectors wider than the registers ran 10-20x slower."""
    flags = _cpu_flags().split()
    return "avx2" in flags or "avx512f" in flags


def unsupported(head_dim: int, causal: bool) -> str | None:
    """Why the kernel cannot run this model on this host's CPU, or None when it can (building
    it first)."""
    if not causal:
        return "the CPU kernel is causal only"
    if head_dim % VECTOR:
        return f"the CPU kernel needs a head dim that is a multiple of {VECTOR}"
    if not measured_cpu():
        return "the CPU kernel is used on x86 CPUs with AVX2 or AVX-512 only"
    return build_error()


def _forward(qkv_BxTxHx3xK):
    b, t, h, _, k = qkv_BxTxHx3xK.shape
    out_types = (
        jax.ShapeDtypeStruct((b, t, h, k), jnp.float32),
        jax.ShapeDtypeStruct((b, h, t), jnp.float32),  # each query's log-sum-exp
    )
    call = jax.ffi.ffi_call("lmjax_causal_attention_fwd", out_types, vmap_method="sequential")
    return call(qkv_BxTxHx3xK)


@jax.custom_vjp
def _attention(qkv_BxTxHx3xK: jax.Array) -> jax.Array:
    return _forward(qkv_BxTxHx3xK)[0]


def _attention_fwd(qkv_BxTxHx3xK):
    out_BxTxHxK, lse_BxHxT = _forward(qkv_BxTxHx3xK)
    return out_BxTxHxK, (qkv_BxTxHx3xK, out_BxTxHxK, lse_BxHxT)


def _attention_bwd(residuals, dout_BxTxHxK):
    qkv_BxTxHx3xK = residuals[0]
    out_type = jax.ShapeDtypeStruct(qkv_BxTxHx3xK.shape, jnp.float32)
    call = jax.ffi.ffi_call("lmjax_causal_attention_bwd", out_type, vmap_method="sequential")
    return (call(*residuals, dout_BxTxHxK),)


_attention.defvjp(_attention_fwd, _attention_bwd)


def causal_attention_fused(qkv_BxTxHx3xK: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(K) + causal mask) v on one device for the fused projection
    [B, T, H, 3, K] (q, k, v on axis 3), in float32; returns [B, T, H, K] in qkv's dtype. Its
    gradient is the fused projection's, as the projection's backward reads it."""
    if not available():
        raise RuntimeError(f"the CPU attention kernel is unavailable: {build_error()}")
    return _attention(qkv_BxTxHx3xK.astype(jnp.float32)).astype(qkv_BxTxHx3xK.dtype)


def causal_attention(q_BxTxHxK: jax.Array, k_BxTxHxK: jax.Array, v_BxTxHxK: jax.Array) -> jax.Array:
    """`causal_attention_fused` of q, k and v given apart (stacked for the kernel)."""
    return causal_attention_fused(jnp.stack([q_BxTxHxK, k_BxTxHxK, v_BxTxHxK], axis=3))
