"""Autoregressive sampling with a KV cache, inside one jit-compiled loop.

The prompt is fed in one call (prefill), then one token per step of a `lax.fori_loop`. When
prompt plus new tokens outgrow the model's `max_len` learned positions, generation continues in a
new window that re-reads the last `max_len // 2` tokens (nanoGPT crops its context the same way,
at every token; re-reading only once per half window keeps the cache useful).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from lmjax import errors

if TYPE_CHECKING:
    from lmjax.models.transformer import Transformer


def check_options(
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_samples: int = 1,
) -> None:
    """`errors.InputError` naming the first option out of range (before a model is loaded: a
    negative temperature or top_p=0 would otherwise sample garbage without a word)."""
    checks = (
        ("max_new_tokens", max_new_tokens, max_new_tokens >= 1, "≥ 1"),
        ("temperature", temperature, 0 <= temperature < float("inf"), "finite and ≥ 0 (0: greedy)"),
        ("top_k", top_k, top_k >= 0, "≥ 0 (0: every token)"),
        ("top_p", top_p, 0 < top_p <= 1, "in (0, 1] (1: every token)"),
        ("num_samples", num_samples, num_samples >= 1, "≥ 1"),
    )
    for name, value, ok, must in checks:
        if not ok:
            raise errors.InputError(f"{name}={value} must be {must}")


def filter_logits(logits_BxV: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Keeps the `top_k` largest logits and the smallest set whose probability reaches `top_p`."""
    neg_inf = jnp.finfo(logits_BxV.dtype).min
    if top_k and top_k < logits_BxV.shape[-1]:
        kth_Bx1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth_Bx1, neg_inf, logits_BxV)
    if top_p < 1.0:
        sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
        probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
        # Keep a token when the mass before it is below top_p (so the first is always kept).
        keep_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV < top_p
        cutoff_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
        logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, neg_inf, logits_BxV)
    return logits_BxV


def sample_token(
    rng: jax.Array,
    logits_BxV: jax.Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> jax.Array:
    """Greedy at temperature 0, else a draw from the filtered, tempered distribution."""
    if temperature == 0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    logits_BxV = filter_logits(logits_BxV / temperature, top_k, top_p)
    return jax.random.categorical(rng, logits_BxV, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "num_new", "temperature", "top_k", "top_p"))
def _generate_window(model, params, context_BxC, rng, num_new, temperature, top_k, top_p):
    """Prefills the cache with `context_BxC`, then samples `num_new` tokens."""
    logits_BxCxV, variables = model.apply(
        {"params": params}, context_BxC, decode=True, mutable=["cache"]
    )
    rng, first_rng = jax.random.split(rng)
    first_B = sample_token(first_rng, logits_BxCxV[:, -1], temperature, top_k, top_p)
    tokens_BxN = jnp.zeros((context_BxC.shape[0], num_new), jnp.int32).at[:, 0].set(first_B)

    def body(i, carry):
        cache, tokens_BxN, rng = carry
        logits_Bx1xV, variables = model.apply(
            {"params": params, "cache": cache},
            jax.lax.dynamic_slice_in_dim(tokens_BxN, i - 1, 1, axis=1),
            decode=True,
            mutable=["cache"],
        )
        rng, step_rng = jax.random.split(rng)
        next_B = sample_token(step_rng, logits_Bx1xV[:, -1], temperature, top_k, top_p)
        return variables["cache"], tokens_BxN.at[:, i].set(next_B), rng

    _, tokens_BxN, _ = jax.lax.fori_loop(1, num_new, body, (variables["cache"], tokens_BxN, rng))
    return tokens_BxN


def generate(
    model: Transformer,
    params: Any,
    prompt_BxP: np.ndarray | jax.Array,
    max_new_tokens: int,
    rng: jax.Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> np.ndarray:
    """Returns the `max_new_tokens` tokens that follow each prompt row, as a [B, N] numpy array."""
    prompt_BxP = np.asarray(prompt_BxP, np.int32)
    check_options(max_new_tokens, temperature, top_k, top_p)
    if prompt_BxP.ndim != 2 or prompt_BxP.shape[1] == 0:
        raise errors.InputError(
            f"prompt must be a non-empty [batch, length] array, got {prompt_BxP.shape}"
        )
    max_len = model.cfg.max_len
    keep = max(max_len // 2, 1)
    context = prompt_BxP[:, -max_len + 1 :] if prompt_BxP.shape[1] >= max_len else prompt_BxP
    out = []
    remaining = max_new_tokens
    while remaining > 0:
        num_new = min(remaining, max_len - context.shape[1])
        rng, window_rng = jax.random.split(rng)
        new = np.asarray(
            _generate_window(
                model, params, jnp.asarray(context), window_rng, num_new, temperature, top_k, top_p
            )
        )
        out.append(new)
        remaining -= num_new
        context = np.concatenate([context, new], axis=1)[:, -keep:]
    return np.concatenate(out, axis=1) if out else np.zeros((len(prompt_BxP), 0), np.int32)
