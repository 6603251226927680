"""Pallas splash attention on TPUs (`jax.experimental.pallas.ops.tpu.splash_attention`): a flash
kernel that skips the fully masked blocks of a causal mask.

It runs on one device's batch rows and heads (`attention.attention` puts it under `shard_map`
when a mesh splits them). `INTERPRET = True` runs it through the Pallas interpreter, on any
backend (the tests' way to check it on a CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash

BLOCK = 128  # the kernel's query and key block; the sequence must be a multiple of it
INTERPRET = False


def unsupported(device: jax.Device, head_dim: int, seq_len: int, dropout: bool) -> str | None:
    """Why splash attention cannot run this model on `device`, or None when it can."""
    if device.platform != "tpu":
        return f"splash attention runs on TPUs, not {device.device_kind}"
    if seq_len % BLOCK:
        return f"splash attention needs a sequence length that is a multiple of {BLOCK}"
    if head_dim % 128:  # the lane width; smaller heads were never run through the kernel here
        return "splash attention is used for head dims that are multiples of 128"
    if dropout:
        return "splash attention has no attention dropout"
    return None


@functools.cache
def _kernel(length: int, heads: int, causal: bool, interpret: bool):
    shape = (length, length)
    mask = splash.CausalMask(shape) if causal else splash.FullMask(shape)
    block = min(BLOCK, length)
    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    return splash.make_splash_mha(
        splash.MultiHeadMask([mask] * heads),
        block_sizes=sizes,
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )


def attention(
    q_BxTxHxK: jax.Array, k_BxTxHxK: jax.Array, v_BxTxHxK: jax.Array, *, causal: bool
) -> jax.Array:
    """Self-attention over the whole sequence (causal or not), no other mask."""
    _, length, heads, head_dim = q_BxTxHxK.shape
    kernel = _kernel(length, heads, causal, INTERPRET)
    q_BxTxHxK = q_BxTxHxK * jnp.asarray(head_dim**-0.5, q_BxTxHxK.dtype)  # the kernel does not
    heads_first = lambda a: jnp.swapaxes(a, 1, 2)  # [B, H, T, K]
    out_BxHxTxK = jax.vmap(kernel)(*map(heads_first, (q_BxTxHxK, k_BxTxHxK, v_BxTxHxK)))
    return heads_first(out_BxHxTxK)
