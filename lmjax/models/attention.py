"""Attention: one function for every kernel, and the choice of kernel for a run's devices.

    out_BxTxHxK = attention(q, k, v, mask_BxTxS=None, causal=True, impl="cpu_ffi")

The kernels are siblings in `lmjax/models/kernels/`: `xla` (einsums: every backend, every mask,
attention dropout), `cudnn` (NVIDIA GPUs), `tpu_splash` (TPUs), `cpu_ffi` (x86 CPUs). A model
names its kernel in `TransformerConfig.attention_impl`; `auto` there is resolved once, before the
model is built, by `resolve` from the mesh's devices and the model's shapes (`build.setup` does
it, logs the choice with its reason and records it in the workdir). Layers never ask which
backend they run on. A call the chosen kernel cannot take (a padding mask or a KV cache for
`cpu_ffi` and `tpu_splash`; a mesh that splits the sequence) runs the einsums instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.models.kernels import cpu_ffi, cudnn, tpu_splash, xla
from lmjax.sharding import mesh_axes_size

IMPLS = ("auto", "xla", "cudnn", "tpu_splash", "cpu_ffi")  # TransformerConfig.attention_impl


def attention(
    q_BxTxHxK: jax.Array,
    k_BxSxHxK: jax.Array,
    v_BxSxHxK: jax.Array,
    *,
    mask_BxTxS: jax.Array | None,
    causal: bool,
    impl: str,
    probs_dropout: Callable[[jax.Array], jax.Array] | None = None,
    float32: bool = False,
) -> jax.Array:
    """softmax(q k^T / sqrt(K)) v over the keys a query may attend to: True in `mask_BxTxS`
    (None: every key), and with `causal=True` none after its own position (T == S when no mask
    is given). A query with no key to attend to (a row of padding) gets uniform weights, not
    NaN. `probs_dropout`, if given, is applied to the probabilities (BERT; `xla` only).
    `impl` is a resolved kernel name (`auto` runs the einsums). `float32`: 16-bit inputs are
    computed in float32 (not by `cudnn`). Returns [B, T, H, K] in q's dtype.
    """
    length = q_BxTxHxK.shape[1]
    if mask_BxTxS is None and causal and k_BxSxHxK.shape[1] != length:
        raise ValueError(f"causal attention without a mask needs T == S, got {length} queries")
    qkv = (q_BxTxHxK, k_BxSxHxK, v_BxSxHxK)
    if impl == "cudnn":
        if probs_dropout is not None:
            raise ValueError("attention_impl='cudnn' has no attention dropout; use 'xla'")
        return cudnn.attention(*qkv, mask_BxTxS=mask_BxTxS, causal=causal)
    dtype = q_BxTxHxK.dtype
    if float32:
        qkv = tuple(a.astype(jnp.float32) for a in qkv)
    whole = mask_BxTxS is None and probs_dropout is None and k_BxSxHxK.shape[1] == length
    out = None
    if impl == "cpu_ffi" and whole and causal:
        out = _per_shard(cpu_ffi.causal_attention, *qkv)
    elif impl == "tpu_splash" and whole and length % tpu_splash.BLOCK == 0:
        out = _per_shard(lambda q, k, v: tpu_splash.attention(q, k, v, causal=causal), *qkv)
    if out is None:
        out = xla.attention(*qkv, mask_BxTxS=mask_BxTxS, causal=causal, probs_dropout=probs_dropout)
    return out.astype(dtype)


def self_attention(
    qkv_BxTxHx3xK: jax.Array,
    *,
    mask_BxTxS: jax.Array | None,
    causal: bool,
    impl: str,
    probs_dropout: Callable[[jax.Array], jax.Array] | None = None,
    float32: bool = False,
) -> jax.Array:
    """`attention` of q, k, v stacked on axis 3 of one fused projection [B, T, H, 3, K]: the
    kernel that reads the fused array (`cpu_ffi`, float32 always) takes it as it is, and its
    gradient reaches the projection without a copy; the others get q, k and v sliced."""
    if impl == "cpu_ffi" and mask_BxTxS is None and probs_dropout is None and causal:
        out = _per_shard(cpu_ffi.causal_attention_fused, qkv_BxTxHx3xK)
        if out is not None:
            return out
    q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = (qkv_BxTxHx3xK[:, :, :, i] for i in range(3))
    return attention(
        q_BxTxHxK,
        k_BxTxHxK,
        v_BxTxHxK,
        mask_BxTxS=mask_BxTxS,
        causal=causal,
        impl=impl,
        probs_dropout=probs_dropout,
        float32=float32,
    )


def _per_shard(kernel: Callable, *arrays: jax.Array) -> jax.Array | None:
    """`kernel` on each device's rows of the batch and its heads (`jax.shard_map` over the mesh
    in context; a custom call or Pallas kernel is not split by XLA, which would gather the whole
    batch onto every device). `arrays` are [B, T, H, ...], the output [B, T, H, K]. None when
    the mesh splits the sequence or the head dim, or does not divide the batch or the heads."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return kernel(*arrays)
    spec = nn.logical_to_mesh_axes(("batch", "length", "heads", "kv"))
    for dim, axes in enumerate(spec):
        split = mesh_axes_size(mesh, axes)
        if split > 1 and (dim in (1, 3) or arrays[0].shape[dim] % split):
            return None
    batch, _, heads, _ = spec
    parts = [jax.P(batch, None, heads, *[None] * (a.ndim - 3)) for a in arrays]
    out = jax.P(batch, None, heads, None)
    return jax.shard_map(kernel, in_specs=tuple(parts), out_specs=out, check_vma=False)(*arrays)


@dataclasses.dataclass(frozen=True)
class Choice:
    """A resolved kernel and why it was taken (for the log and the workdir's record)."""

    impl: str
    reason: str


def resolve(
    impl: str,
    devices: Sequence,
    *,
    causal: bool,
    head_dim: int,
    seq_len: int,
    dtype: jnp.dtype,
    dropout: bool,
) -> Choice:
    """The kernel `impl` means on `devices` (jax Devices: `platform`, `device_kind`) for a model
    of these shapes. `auto`: cuDNN on NVIDIA GPUs, splash on TPUs, the C++ kernel on x86 CPUs
    with AVX2/AVX-512, each where it supports the model; else `xla`, the reason naming what
    the preferred kernel lacks. A named kernel that cannot run here raises ValueError."""
    platforms = {d.platform for d in devices}
    device = next(iter(devices))
    if len(platforms) > 1:
        why = f"the devices mix {', '.join(sorted(platforms))}"
    elif device.platform == "gpu":
        why = cudnn.unsupported(device, dtype, head_dim, dropout)
        preferred = "cudnn"
    elif device.platform == "tpu":
        why = tpu_splash.unsupported(device, head_dim, seq_len, dropout)
        preferred = "tpu_splash"
    elif device.platform == "cpu":
        why = cpu_ffi.unsupported(head_dim, causal)
        preferred = "cpu_ffi"
    else:
        why = f"no faster kernel for {device.device_kind}"
    if impl == "xla":
        return Choice("xla", "as configured")
    if impl == "auto":
        if why is None:
            return Choice(preferred, f"auto: the fastest kernel for {device.device_kind}")
        return Choice("xla", f"auto: {why}")
    named, platform = {
        "cudnn": ("NVIDIA GPUs", "gpu"),
        "tpu_splash": ("TPUs", "tpu"),
        "cpu_ffi": ("x86 CPUs", "cpu"),
    }[impl]
    if platforms != {platform}:
        raise ValueError(
            f"attention_impl={impl!r} needs {named} and this run's devices are "
            f"{', '.join(sorted(platforms))}: use auto (the best kernel for the device) or xla"
        )
    if why is not None:
        raise ValueError(f"attention_impl={impl!r} cannot run this model ({why}): use auto or xla")
    return Choice(impl, "as configured")


def resolve_matmul(impl: str, devices: Sequence) -> Choice:
    """`TransformerConfig.matmul_impl`: `auto` is `xla_cpu` when every device is a CPU (16-bit
    matmuls in the forms XLA:CPU runs on the CPU's bf16 instructions), else `xla`."""
    if impl != "auto":
        return Choice(impl, "as configured")
    if all(d.platform == "cpu" for d in devices):
        return Choice("xla_cpu", "auto: CPU devices")
    return Choice("xla", "auto: not CPU devices")
