"""Model FLOPs and device peak FLOP/s, for MFU.

MFU = model FLOPs per second / peak FLOP/s, with model FLOPs counted as in the PaLM paper
(Chowdhery et al. 2022, appendix B) and nanoGPT's `estimate_mfu`: 6 * N per token for the
forward and backward matmuls of the N parameters (position embeddings excluded), plus
12 * L * D * T per token for the attention scores and weighted values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# bf16 dense peak per chip, where the device is recognised (vendor spec sheets), by the
# `device_kind` JAX reports, or its start ("NVIDIA H100 80GB HBM3"). v5e reports "TPU v5 lite";
# JAX's own TPU tables list v5p as both "TPU v5p" and "TPU v5".
KNOWN_PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5": 459e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA A100": 312e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA GH200": 989e12,
    "NVIDIA B200": 2250e12,
}


def known_peak_flops(device_kind: str) -> float | None:
    """The spec-sheet peak of `device_kind`: its entry, else the longest entry it starts with
    ("TPU v5 lite" before "TPU v5"); None for a device not in the table."""
    if device_kind in KNOWN_PEAK_FLOPS:
        return KNOWN_PEAK_FLOPS[device_kind]
    names = [k for k in KNOWN_PEAK_FLOPS if device_kind.startswith(k)]
    return KNOWN_PEAK_FLOPS[max(names, key=len)] if names else None


def count_params(params: Any, exclude_position_embeddings: bool = True) -> int:
    """Parameter count; nanoGPT leaves out the position embeddings (they do no matmul)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    n = 0
    for path, leaf in flat:
        if exclude_position_embeddings and "pos_embed" in jax.tree_util.keystr(path):
            continue
        n += int(np.prod(leaf.shape))
    return n


def flops_per_token(num_params: int, num_layers: int, emb_dim: int, seq_len: int) -> int:
    """Training FLOPs per token: 6N + 12 * L * D * T (forward + backward, PaLM appendix B)."""
    return 6 * num_params + 12 * num_layers * emb_dim * seq_len


def peak_matmul() -> Callable[[jax.Array], jax.Array]:
    """The matmul `measure_peak_flops` times: float32 products and sums whatever the input dtype,
    as the model's matmuls (`transformer.matmul`). A bf16 dot returning bf16 runs at the float32
    rate on XLA:CPU; timing that one halved the bf16 peak on an AVX512-BF16 CPU, and (b) printed
    an MFU of 107-116% in bfloat16."""
    return jax.jit(lambda a: jnp.matmul(a, a, preferred_element_type=jnp.float32))


def measure_peak_flops(
    dtype: jnp.dtype | type = jnp.float32, size: int = 2048, repeats: int = 20, again: bool = False
) -> float:
    """Measured matmul FLOP/s of the first device: the best of `repeats` square matmuls.

    20 repeats, not 5: on a busy CPU a best of 5 can land far below the real peak and inflate
    MFU. Measured once per process, device kind and dtype: a process that trains many runs (a
    sweep's worker, a notebook) reuses the first figure. `again=True` measures once more and
    returns the best of every measurement so far, since even a best of 20 can land low:
    `benchmark.run` measures before and after its timed steps."""
    device = jax.devices()[0]
    peak = known_peak_flops(device.device_kind)
    if peak is not None:
        return peak
    key = (device.platform, device.device_kind, jnp.dtype(dtype), size, repeats)
    if again or key not in _BEST:
        _BEST[key] = max(_BEST.get(key, 0.0), _measure(*key))
    return _BEST[key]


_BEST: dict[tuple, float] = {}  # measure_peak_flops's best figure so far, per device and matmul


def _measure(platform: str, device_kind: str, dtype: jnp.dtype, size: int, repeats: int) -> float:
    del device_kind  # part of the key only
    if platform == "cpu":
        size = min(size, 1024)
    x = jnp.ones((size, size), dtype)
    matmul = peak_matmul()
    matmul(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
