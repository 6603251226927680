"""Softmax attention as XLA einsums: runs on every backend, with any mask and attention dropout.

Causal attention over a long sequence splits its queries into blocks of `CAUSAL_BLOCK`; block i
attends only to the keys up to its own end, so the score blocks above the diagonal are never
computed (at T=256, 3 of 4 blocks).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

CAUSAL_BLOCK = 128  # 64-query blocks are slower than 128 (more, smaller matmuls)


def _softmax_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxTxS, probs_dropout):
    scale = q_BxTxHxK.shape[-1] ** -0.5
    logits_BxHxTxS = jnp.einsum("bthk,bshk->bhts", q_BxTxHxK * scale, k_BxSxHxK)
    logits_BxHxTxS = logits_BxHxTxS.astype(jnp.float32)
    if mask_BxTxS is not None:
        logits_BxHxTxS = jnp.where(mask_BxTxS[:, None], logits_BxHxTxS, jnp.finfo(jnp.float32).min)
    probs_BxHxTxS = jax.nn.softmax(logits_BxHxTxS, axis=-1)
    if probs_dropout is not None:
        probs_BxHxTxS = probs_dropout(probs_BxHxTxS)
    probs_BxHxTxS = probs_BxHxTxS.astype(v_BxSxHxK.dtype)
    return jnp.einsum("bhts,bshk->bthk", probs_BxHxTxS, v_BxSxHxK)


def causal_mask(start: int, end: int) -> jax.Array:
    """[1, end - start, end]: queries start..end-1 may attend to keys up to their own position."""
    return (jnp.arange(end)[None, :] <= jnp.arange(start, end)[:, None])[None]


def attention(
    q_BxTxHxK: jax.Array,
    k_BxSxHxK: jax.Array,
    v_BxSxHxK: jax.Array,
    *,
    mask_BxTxS: jax.Array | None,
    causal: bool,
    probs_dropout: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """The einsum attention (see `lmjax.models.attention.attention` for the arguments); logits
    and softmax in float32, the two matmuls in the inputs' dtype."""
    length = q_BxTxHxK.shape[1]
    if not causal or length <= CAUSAL_BLOCK or k_BxSxHxK.shape[1] != length:
        if mask_BxTxS is None and causal:
            mask_BxTxS = causal_mask(0, length)
        return _softmax_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxTxS, probs_dropout)
    outs = []
    for start in range(0, length, CAUSAL_BLOCK):
        end = min(start + CAUSAL_BLOCK, length)
        if mask_BxTxS is None:
            block_mask = causal_mask(start, end)
        else:
            block_mask = mask_BxTxS[:, start:end, :end]
        outs.append(
            _softmax_attention(
                q_BxTxHxK[:, start:end],
                k_BxSxHxK[:, :end],
                v_BxSxHxK[:, :end],
                block_mask,
                probs_dropout,
            )
        )
    return jnp.concatenate(outs, axis=1)
