"""cuDNN's fused (flash) attention on NVIDIA GPUs, through `jax.nn.dot_product_attention`."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp

DTYPES = (jnp.bfloat16, jnp.float16)  # cuDNN's flash attention has no float32 kernel


def unsupported(device: jax.Device, dtype: jnp.dtype, head_dim: int, dropout: bool) -> str | None:
    """Why cuDNN's flash attention cannot run this model on `device`, or None when it can:
    an NVIDIA GPU of compute capability 8.0 or later, bf16/fp16, a head dim that is a multiple
    of 8 up to 128 (256 from 9.0 on), no attention dropout."""
    capability = getattr(device, "compute_capability", "")  # CUDA devices: "9.0"; ROCm: none
    if device.platform != "gpu" or not re.fullmatch(r"\d+\.\d+", capability):
        return f"cuDNN runs on NVIDIA GPUs, not {device.device_kind}"
    version = tuple(map(int, capability.split(".")))
    if version < (8, 0):
        kind = device.device_kind
        return f"cuDNN flash attention needs compute capability 8.0+, {kind} has {capability}"
    if jnp.dtype(dtype) not in DTYPES:
        return f"cuDNN flash attention needs bfloat16 or float16, the model computes in {dtype}"
    most = 256 if version >= (9, 0) else 128
    if head_dim % 8 or head_dim > most:
        return f"cuDNN flash attention needs a head dim that is a multiple of 8 up to {most}"
    if dropout:
        return "cuDNN attention has no attention dropout"
    return None


def attention(
    q_BxTxHxK: jax.Array,
    k_BxSxHxK: jax.Array,
    v_BxSxHxK: jax.Array,
    *,
    mask_BxTxS: jax.Array | None,
    causal: bool,
) -> jax.Array:
    """With nothing masked but the future, cuDNN's causal kernel (`is_causal`, no [B, T, S]
    mask in memory); else the mask."""
    return jax.nn.dot_product_attention(
        q_BxTxHxK,
        k_BxSxHxK,
        v_BxSxHxK,
        mask=None if mask_BxTxS is None else mask_BxTxS[:, None],
        is_causal=causal and mask_BxTxS is None,
        implementation="cudnn",
    )
