"""Transformer blocks shared by the causal decoder (GPT) and the bidirectional encoder (BERT).

Parameters and activations carry logical axis names (`batch`, `length`, `embed`, `heads`, `kv`,
`mlp`, `vocab`); the config maps them to mesh axes, so the model holds no sharding literals.
Shapes are in names: B batch, T query length, S key length, D embed, H heads, K head dim, V vocab.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ACTIVATIONS = {
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # GPT-2
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # exact erf GELU: BERT, nanoGPT
}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture hyper-parameters; built from `config.model` by `from_config_dict`."""

    vocab_size: int
    max_len: int  # number of learned positions
    num_layers: int = 4
    num_heads: int = 4
    emb_dim: int = 128
    mlp_dim: int = 512
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32
    causal: bool = True
    use_bias: bool = False  # biases in Dense and LayerNorm (nanoGPT's shakespeare run: False)
    activation: str = "gelu_tanh"
    layer_norm_epsilon: float = 1e-5
    init_std: float = 0.02
    attention_impl: str = "xla"  # "xla": explicit einsums (fastest on CPU); "cudnn": fused kernel
    remat: bool = False  # recompute each block's activations in the backward pass

    @classmethod
    def from_config_dict(cls, model_config, vocab_size: int, max_len: int):
        kwargs = dict(model_config)
        kwargs["dtype"] = DTYPES[kwargs.get("dtype", "float32")]
        kwargs = {k: v for k, v in kwargs.items() if k in {f.name for f in dataclasses.fields(cls)}}
        return cls(vocab_size=vocab_size, max_len=max_len, **kwargs)


def _dense_init(cfg, scale=1.0):
    return nn.initializers.normal(cfg.init_std * scale)


def matmul(x, kernel, num_in=1):
    """Contracts the last `num_in` dims of `x` with the first `num_in` of `kernel`.

    Done as one 2-D matmul: with leading batch dims kept, XLA:CPU fused the backward of the
    activation with a transpose of the [B*T, mlp] gradient and the step ran 1.4x slower.
    """
    in_size = math.prod(kernel.shape[:num_in])
    out_shape = kernel.shape[num_in:]
    y = x.reshape(-1, in_size) @ kernel.reshape(in_size, -1)
    return y.reshape(*x.shape[: x.ndim - num_in], *out_shape)


class Dense(nn.Module):
    """x @ kernel (+ bias), the kernel's dims named by `axes` (inputs first, then `features`)."""

    features: tuple
    axes: tuple
    cfg: TransformerConfig
    num_in: int = 1
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(_dense_init(cfg, self.init_scale), self.axes),
            (*x.shape[x.ndim - self.num_in :], *self.features),
        )
        y = matmul(x.astype(cfg.dtype), kernel.astype(cfg.dtype), self.num_in)
        if cfg.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, self.axes[self.num_in :]),
                self.features,
            )
            y = y + bias.reshape((1,) * (y.ndim - bias.ndim) + bias.shape).astype(cfg.dtype)
        return y


def dot_product_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxTxS, impl="xla"):
    """Softmax attention; `mask_BxTxS` is True where a query may attend to a key."""
    if impl == "cudnn":
        return jax.nn.dot_product_attention(
            q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask=mask_BxTxS[:, None], implementation="cudnn"
        )
    scale = q_BxTxHxK.shape[-1] ** -0.5
    logits_BxHxTxS = jnp.einsum("bthk,bshk->bhts", q_BxTxHxK * scale, k_BxSxHxK)
    logits_BxHxTxS = jnp.where(
        mask_BxTxS[:, None], logits_BxHxTxS.astype(jnp.float32), jnp.finfo(jnp.float32).min
    )
    probs_BxHxTxS = jax.nn.softmax(logits_BxHxTxS, axis=-1).astype(v_BxSxHxK.dtype)
    return jnp.einsum("bhts,bshk->bthk", probs_BxHxTxS, v_BxSxHxK)


class MultiHeadAttention(nn.Module):
    """Self-attention with a fused QKV projection and an optional KV cache for decoding."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxTxD, mask_BxTxS, decode=False, cache_index=None, train=False):
        cfg = self.cfg
        head_dim = cfg.emb_dim // cfg.num_heads
        qkv = Dense((3, cfg.num_heads, head_dim), ("embed", None, "heads", "kv"), cfg, name="qkv")(
            x_BxTxD
        )
        qkv = nn.with_logical_constraint(qkv, ("batch", "length", None, "heads", "kv"))
        q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

        if decode:
            # Write this call's keys/values at `cache_index` and attend over the whole cache;
            # `mask_BxTxS` (built by the caller) hides the slots not yet written.
            batch, _, heads, _ = k_BxTxHxK.shape
            shape = (batch, cfg.max_len, heads, head_dim)
            cached_k = self.variable("cache", "k", jnp.zeros, shape, k_BxTxHxK.dtype)
            cached_v = self.variable("cache", "v", jnp.zeros, shape, v_BxTxHxK.dtype)
            start = (0, cache_index, 0, 0)
            cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BxTxHxK, start)
            cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BxTxHxK, start)
            k_BxTxHxK, v_BxTxHxK = cached_k.value, cached_v.value

        out_BxTxHxK = dot_product_attention(
            q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, mask_BxTxS, impl=cfg.attention_impl
        )
        # GPT-2: residual projections scaled by 1/sqrt(2 * num_layers).
        out_BxTxD = Dense(
            (cfg.emb_dim,),
            ("heads", "kv", "embed"),
            cfg,
            num_in=2,
            init_scale=(2 * cfg.num_layers) ** -0.5,
            name="out",
        )(out_BxTxHxK)
        return nn.Dropout(cfg.dropout_rate)(out_BxTxD, deterministic=not train)


class Mlp(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxTxD, train=False):
        cfg = self.cfg
        h_BxTxF = Dense((cfg.mlp_dim,), ("embed", "mlp"), cfg, name="fc")(x_BxTxD)
        h_BxTxF = nn.with_logical_constraint(h_BxTxF, ("batch", "length", "mlp"))
        h_BxTxF = ACTIVATIONS[cfg.activation](h_BxTxF)
        out_BxTxD = Dense(
            (cfg.emb_dim,),
            ("mlp", "embed"),
            cfg,
            init_scale=(2 * cfg.num_layers) ** -0.5,
            name="proj",
        )(h_BxTxF)
        return nn.Dropout(cfg.dropout_rate)(out_BxTxD, deterministic=not train)


def layer_norm(cfg, name):
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_epsilon,
        use_bias=cfg.use_bias,
        dtype=cfg.dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        name=name,
    )


class Block(nn.Module):
    """Pre-LN residual block (GPT-2): x + attn(ln(x)), then x + mlp(ln(x))."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxTxD, mask_BxTxS, decode=False, cache_index=None, train=False):
        cfg = self.cfg
        h = layer_norm(cfg, "ln_attn")(x_BxTxD)
        x_BxTxD = x_BxTxD + MultiHeadAttention(cfg, name="attn")(
            h, mask_BxTxS, decode=decode, cache_index=cache_index, train=train
        )
        h = layer_norm(cfg, "ln_mlp")(x_BxTxD)
        x_BxTxD = x_BxTxD + Mlp(cfg, name="mlp")(h, train=train)
        return nn.with_logical_constraint(x_BxTxD, ("batch", "length", "embed"))


class Transformer(nn.Module):
    """GPT-style decoder: token + learned position embeddings, pre-LN blocks, final LayerNorm,
    and an LM head tied to the token embedding. Returns float32 logits [B, T, V].

    With `decode=True` the model reads and writes a KV cache (collection "cache"): each call
    appends its tokens at the cache's current index, so a prompt can be fed at once and then one
    token per call.
    """

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, tokens_BxT, decode=False, train=False):
        cfg = self.cfg
        batch, length = tokens_BxT.shape
        embed = nn.Embed(
            cfg.vocab_size,
            cfg.emb_dim,
            dtype=cfg.dtype,
            embedding_init=nn.with_logical_partitioning(_dense_init(cfg), ("vocab", "embed")),
            name="tok_embed",
        )
        pos_embed = self.param(
            "pos_embed",
            nn.with_logical_partitioning(_dense_init(cfg), (None, "embed")),
            (cfg.max_len, cfg.emb_dim),
        )
        if decode:
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            start = index.value
            index.value = start + length
            positions_T = start + jnp.arange(length)
            key_positions_S = jnp.arange(cfg.max_len)
            mask_TxS = key_positions_S[None, :] <= positions_T[:, None]
        else:
            start = None
            positions_T = jnp.arange(length)
            mask_TxS = jnp.tril(jnp.ones((length, length), bool)) if cfg.causal else None
            if mask_TxS is None:
                mask_TxS = jnp.ones((length, length), bool)
        mask_BxTxS = jnp.broadcast_to(mask_TxS, (batch, *mask_TxS.shape))

        pos_1xTxD = jnp.take(pos_embed, positions_T, axis=0)[None].astype(cfg.dtype)
        x_BxTxD = embed(tokens_BxT) + pos_1xTxD
        x_BxTxD = nn.Dropout(cfg.dropout_rate)(x_BxTxD, deterministic=not train)
        x_BxTxD = nn.with_logical_constraint(x_BxTxD, ("batch", "length", "embed"))
        block = nn.remat(Block, static_argnums=(3, 5)) if cfg.remat else Block
        for i in range(cfg.num_layers):
            x_BxTxD = block(cfg, name=f"block_{i}")(x_BxTxD, mask_BxTxS, decode, start, train)
        x_BxTxD = layer_norm(cfg, "ln_final")(x_BxTxD)
        logits_BxTxV = matmul(x_BxTxD, embed.embedding.T.astype(cfg.dtype))
        logits_BxTxV = nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "vocab"))
        return logits_BxTxV.astype(jnp.float32)
