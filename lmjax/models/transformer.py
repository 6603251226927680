"""Transformer blocks shared by the causal decoder (GPT) and the bidirectional encoder (BERT).

The defaults of `TransformerConfig` give the GPT-2 decoder; BERT sets `causal=False`,
`norm_position="post"`, `type_vocab_size=2`, `embed_norm=True`, exact GELU, biases, eps 1e-12
(`lmjax.models.bert.bert_config`). The BERT models with their heads are in `bert.py`/`heads.py`.

Parameters and activations carry logical axis names (`batch`, `length`, `embed`, `heads`, `kv`,
`mlp`, `vocab`); the config maps them to mesh axes, so the model holds no sharding literals.
Shapes are in names: B batch, T query length, S key length, D embed, H heads, K head dim, V vocab.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from lmjax.models import attention

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# TransformerConfig.matmul_impl: "xla_cpu" computes 16-bit matmuls in the forms XLA:CPU runs on
# the CPU's bf16 instructions (`matmul`); "xla" leaves them to the compiler (GPUs, TPUs).
MATMUL_IMPLS = ("auto", "xla", "xla_cpu")
# TransformerConfig.remat_policy: jax.checkpoint_policies by name. The first six are policies
# themselves; the last two keep (or offload to host memory) the tensors named in `remat_names`.
REMAT_POLICIES = (
    "nothing_saveable",
    "everything_saveable",
    "dots_saveable",
    "checkpoint_dots",
    "dots_with_no_batch_dims_saveable",
    "checkpoint_dots_with_no_batch_dims",
    "save_only_these_names",
    "save_and_offload_only_these_names",
)
NAMED_POLICIES = REMAT_POLICIES[-2:]
# The tensors a block tags with `checkpoint_name`, for the named policies.
CHECKPOINT_NAMES = ("qkv", "attention", "mlp_hidden")


@jax.custom_vjp
def gelu_tanh(x: jax.Array) -> jax.Array:
    """GPT-2's tanh GELU, whose backward pass recomputes tanh from x instead of keeping it.

    Autodiff of `jax.nn.gelu(approximate=True)` makes XLA:CPU write a second [B*T, mlp] array
    in the forward pass for the backward one; recomputing it inside the backward's fused
    multiply is cheaper than that memory traffic. Reverse mode only (jax.jvp through it
    raises), which is all training needs.
    """
    return jax.nn.gelu(x, approximate=True)


def _gelu_tanh_fwd(x):
    return jax.nn.gelu(x, approximate=True), x


def _gelu_tanh_bwd(x, g):
    c = math.sqrt(2 / math.pi)
    t = jnp.tanh(c * (x + 0.044715 * x**3))
    return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)),)


gelu_tanh.defvjp(_gelu_tanh_fwd, _gelu_tanh_bwd)


@jax.custom_vjp
def gelu_erf(x: jax.Array) -> jax.Array:
    """The exact (erf) GELU of BERT, its backward recomputing the Gaussian terms from x, as
    `gelu_tanh` does, for the same reason."""
    return jax.nn.gelu(x, approximate=False)


def _gelu_erf_fwd(x):
    return jax.nn.gelu(x, approximate=False), x


def _gelu_erf_bwd(x, g):
    cdf = 0.5 * (1 + jax.lax.erf(x * (1 / math.sqrt(2))))
    pdf = jnp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
    return (g * (cdf + x * pdf),)


gelu_erf.defvjp(_gelu_erf_fwd, _gelu_erf_bwd)

ACTIVATIONS = {
    "gelu_tanh": gelu_tanh,  # GPT-2
    "gelu": gelu_erf,  # exact erf GELU: BERT, nanoGPT
}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture hyper-parameters; built from `config.model` by `from_config_dict`."""

    vocab_size: int  # the tokenizer's; logits have this many entries
    max_len: int  # number of learned positions
    num_layers: int = 4
    num_heads: int = 4
    emb_dim: int = 128
    mlp_dim: int = 512
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0  # dropout on the attention probabilities (BERT: 0.1)
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32
    causal: bool = True  # False: bidirectional encoder (BERT)
    norm_position: str = "pre"  # "pre": x + f(ln(x)), final LN (GPT-2); "post": ln(x + f(x)) (BERT)
    type_vocab_size: int = 0  # token-type (segment) embeddings; 0: none (GPT), 2: BERT
    embed_norm: bool = False  # LayerNorm on the summed embeddings, before their dropout (BERT)
    use_bias: bool = False  # biases in Dense and LayerNorm (nanoGPT's shakespeare run: False)
    activation: str = "gelu_tanh"
    layer_norm_epsilon: float = 1e-5
    init_std: float = 0.02
    scale_residual_init: bool = True  # GPT-2: residual projections' init std / sqrt(2 * layers)
    # A kernel of lmjax.models.attention (xla, cudnn, tpu_splash, cpu_ffi); "auto" is resolved
    # by build.setup from the run's devices (a model built without it runs "xla").
    attention_impl: str = "auto"
    matmul_impl: str = "auto"  # MATMUL_IMPLS; "auto" as attention_impl ("xla" when unresolved)
    remat: bool = False  # recompute each block's activations in the backward pass
    remat_policy: str = "nothing_saveable"  # what remat keeps: a jax.checkpoint_policies name
    remat_names: tuple[str, ...] = ()  # CHECKPOINT_NAMES kept by the named policies
    # The token table's rows rounded up to a multiple of this (128 on accelerators: aligned
    # output matmuls, and a table the tensor axis divides); the padding rows' logits are cut off.
    vocab_multiple: int = 1

    @property
    def padded_vocab_size(self) -> int:
        return padded_vocab_size(self.vocab_size, self.vocab_multiple)

    def __post_init__(self):
        if self.vocab_multiple < 1:
            raise ValueError(f"vocab_multiple must be >= 1, got {self.vocab_multiple}")
        if self.norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {self.norm_position!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} unknown; known: {list(ACTIVATIONS)}")
        if self.attention_impl not in attention.IMPLS:
            raise ValueError(f"attention_impl {self.attention_impl!r} unknown: {attention.IMPLS}")
        if self.matmul_impl not in MATMUL_IMPLS:
            raise ValueError(f"matmul_impl {self.matmul_impl!r} unknown; known: {MATMUL_IMPLS}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy {self.remat_policy!r} unknown; known: {REMAT_POLICIES}")
        if set(self.remat_names) - set(CHECKPOINT_NAMES):
            raise ValueError(f"remat_names {self.remat_names} not all in {CHECKPOINT_NAMES}")

    @classmethod
    def kwargs_from(cls, model_config: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of a `config.model` dict that this dataclass has, dtype name resolved."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in dict(model_config).items() if k in names}
        kwargs["dtype"] = DTYPES[kwargs.get("dtype", "float32")]
        if "remat_names" in kwargs:  # config.json keeps it as a list
            kwargs["remat_names"] = tuple(kwargs["remat_names"])
        return kwargs

    @classmethod
    def from_config_dict(
        cls, model_config: Mapping[str, Any], vocab_size: int, max_len: int
    ) -> TransformerConfig:
        return cls(vocab_size=vocab_size, max_len=max_len, **cls.kwargs_from(model_config))


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    """Rows of the token table: `vocab_size` rounded up to a multiple of `multiple`."""
    return -(-vocab_size // multiple) * multiple


def _dense_init(cfg, scale=1.0):
    return nn.initializers.normal(cfg.init_std * scale)


def _residual_init_scale(cfg):
    # GPT-2: residual projections scaled by 1/sqrt(2 * num_layers); BERT: plain init_std.
    return (2 * cfg.num_layers) ** -0.5 if cfg.scale_residual_init else 1.0


# XLA:CPU runs a 16-bit dot on the CPU's bf16 instructions (AVX512-BF16 / AMX, through YNNPACK)
# only when the left operand is contracted on its last dim and neither operand is column-major;
# any other dot is upcast to float32, at about half the speed. `w.T` is a
# column-major view, so the backward matmuls below contract dims with dot_general instead and
# make the one real transpose they need with _row_major_transpose.
_CONTRACT_LAST = (((1,), (1,)), ((), ()))  # [M,K] x [N,K] -> [M,N]


def _row_major_transpose(x_MxK: jax.Array) -> jax.Array:
    """x.T as a row-major copy for XLA:CPU: a 2-D transpose stays a column-major view of x, a
    3-D one is copied, and the dot that reads it keeps bf16."""
    m, k = x_MxK.shape
    if m % 2:
        return x_MxK.T
    return jnp.transpose(x_MxK.reshape(m // 2, 2, k), (2, 0, 1)).reshape(k, m)


def _dot_f32(a, b, dims=(((1,), (0,)), ((), ()))):
    return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_f32_accumulate(x_MxK: jax.Array, w: jax.Array, kernel_NxK: bool) -> jax.Array:
    """x @ w ([K,N], or w.T when kernel_NxK) in x's 16-bit dtype with float32 products and
    sums, forward and backward; the gradient of w comes back in w's own dtype (a float32 master
    kernel keeps float32 sums)."""
    w16 = w.astype(x_MxK.dtype)
    y_MxN = _dot_f32(x_MxK, w16, _CONTRACT_LAST) if kernel_NxK else _dot_f32(x_MxK, w16)
    return y_MxN.astype(x_MxK.dtype)


def _matmul_f32_accumulate_fwd(x_MxK, w, kernel_NxK):
    return _matmul_f32_accumulate(x_MxK, w, kernel_NxK), (x_MxK, w)


def _matmul_f32_accumulate_bwd(kernel_NxK, res, g_MxN):
    x_MxK, w = res
    g_MxN = g_MxN.astype(x_MxK.dtype)
    w16 = w.astype(x_MxK.dtype)
    if kernel_NxK:
        dx_MxK = _dot_f32(g_MxN, w16)
        dw = _dot_f32(_row_major_transpose(g_MxN), x_MxK)  # [N,K]
    else:
        dx_MxK = _dot_f32(g_MxN, w16, _CONTRACT_LAST)
        dw = _dot_f32(_row_major_transpose(x_MxK), g_MxN)  # [K,N]
    return dx_MxK.astype(x_MxK.dtype), dw.astype(w.dtype)


_matmul_f32_accumulate.defvjp(_matmul_f32_accumulate_fwd, _matmul_f32_accumulate_bwd)


def matmul(
    x: jax.Array,
    kernel: jax.Array,
    num_in: int = 1,
    dtype: Any = None,
    kernel_NxK: bool = False,
    *,
    impl: str,
) -> jax.Array:
    """Contracts the last `num_in` dims of `x` with the first `num_in` of `kernel` (with its
    last dim if `kernel_NxK`: a [vocab, emb] embedding as the output layer), computing in
    `dtype` (default: x's). The result has that dtype.

    Done as one 2-D matmul: with leading batch dims kept, XLA:CPU fused the backward of the
    activation with a transpose of the [B*T, mlp] gradient and the step ran 1.4x slower.
    With `impl="xla_cpu"`, 16-bit matmuls, forward and backward, take 16-bit inputs and return
    float32 (`preferred_element_type`), then round: XLA:CPU runs those on the CPU's bf16 dot
    instructions, while a bf16 -> bf16 dot ran no faster than float32.
    """
    dtype = jnp.dtype(dtype or x.dtype)
    if kernel_NxK:
        if num_in != 1:
            raise ValueError(f"kernel_NxK needs num_in=1, got {num_in}")
        in_size, out_shape = kernel.shape[-1], kernel.shape[:-1]
    else:
        in_size, out_shape = math.prod(kernel.shape[:num_in]), kernel.shape[num_in:]
    x_MxK = x.reshape(-1, in_size).astype(dtype)
    w = kernel.reshape(-1, in_size) if kernel_NxK else kernel.reshape(in_size, -1)
    if dtype.itemsize == 2 and impl == "xla_cpu":
        y = _matmul_f32_accumulate(x_MxK, w, kernel_NxK)
    else:
        w = w.astype(dtype)
        y = jax.lax.dot_general(x_MxK, w, _CONTRACT_LAST) if kernel_NxK else x_MxK @ w
    return y.reshape(*x.shape[: x.ndim - num_in], *out_shape)


def remat_policy(cfg: TransformerConfig) -> Callable:
    """The jax.checkpoint_policies policy `cfg.remat_policy` names (with `cfg.remat_names` for
    the named ones; offloaded from device to pinned host memory: GPUs and TPUs)."""
    policies = jax.checkpoint_policies
    if cfg.remat_policy == "save_only_these_names":
        return policies.save_only_these_names(*cfg.remat_names)
    if cfg.remat_policy == "save_and_offload_only_these_names":
        return policies.save_and_offload_only_these_names(
            names_which_can_be_saved=(),
            names_which_can_be_offloaded=cfg.remat_names,
            offload_src="device",
            offload_dst="pinned_host",
        )
    return getattr(policies, cfg.remat_policy)


class Dense(nn.Module):
    """x @ kernel (+ bias), the kernel's dims named by `axes` (inputs first, then `features`)."""

    features: tuple
    axes: tuple
    cfg: TransformerConfig
    num_in: int = 1
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(_dense_init(cfg, self.init_scale), self.axes),
            (*x.shape[x.ndim - self.num_in :], *self.features),
        )
        y = matmul(x, kernel, self.num_in, cfg.dtype, impl=cfg.matmul_impl)
        if cfg.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, self.axes[self.num_in :]),
                self.features,
            )
            y = y + bias.reshape((1,) * (y.ndim - bias.ndim) + bias.shape).astype(cfg.dtype)
        return y


class MultiHeadAttention(nn.Module):
    """Self-attention with a fused QKV projection and an optional KV cache for decoding."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(
        self,
        x_BxTxD: jax.Array,
        mask_BxTxS: jax.Array | None,
        decode: bool = False,
        cache_index: jax.Array | None = None,
        train: bool = False,
    ) -> jax.Array:
        cfg = self.cfg
        head_dim = cfg.emb_dim // cfg.num_heads
        # Kernel [D, H, 3, K]: heads outermost, so that with heads split over `tensor` the 2-D
        # matmul's [D, H*3*K] view is split in contiguous blocks (no all-gather of the kernel).
        qkv = Dense((cfg.num_heads, 3, head_dim), ("embed", "heads", None, "kv"), cfg, name="qkv")(
            x_BxTxD
        )
        qkv = nn.with_logical_constraint(qkv, ("batch", "length", "heads", None, "kv"))
        qkv = checkpoint_name(qkv, "qkv")
        probs_dropout = None
        if train and cfg.attention_dropout_rate > 0:
            probs_dropout = nn.Dropout(
                cfg.attention_dropout_rate, deterministic=False, name="probs_dropout"
            )
        # XLA:CPU runs 16-bit batched dots in float32 anyway, and in bf16 the backward pass sums
        # the causal blocks' key/value gradients through chains of converts.
        upcast = cfg.matmul_impl == "xla_cpu" and qkv.dtype.itemsize == 2
        if decode:
            # Write this call's keys/values at `cache_index` and attend over the whole cache;
            # `mask_BxTxS` (built by the caller) hides the slots not yet written.
            q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]
            batch, _, heads, _ = k_BxTxHxK.shape
            shape = (batch, cfg.max_len, heads, head_dim)
            cached_k = self.variable("cache", "k", jnp.zeros, shape, k_BxTxHxK.dtype)
            cached_v = self.variable("cache", "v", jnp.zeros, shape, v_BxTxHxK.dtype)
            start = (0, cache_index, 0, 0)
            cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BxTxHxK, start)
            cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BxTxHxK, start)
            out_BxTxHxK = attention.attention(
                q_BxTxHxK,
                cached_k.value,
                cached_v.value,
                mask_BxTxS=mask_BxTxS,
                causal=False,
                impl=cfg.attention_impl,
                float32=upcast,
            )
        else:
            out_BxTxHxK = attention.self_attention(
                qkv,
                mask_BxTxS=mask_BxTxS,
                causal=cfg.causal,
                impl=cfg.attention_impl,
                probs_dropout=probs_dropout,
                float32=upcast,
            )
        out_BxTxHxK = checkpoint_name(out_BxTxHxK, "attention")
        out_BxTxD = Dense(
            (cfg.emb_dim,),
            ("heads", "kv", "embed"),
            cfg,
            num_in=2,
            init_scale=_residual_init_scale(cfg),
            name="out",
        )(out_BxTxHxK)
        return nn.Dropout(cfg.dropout_rate)(out_BxTxD, deterministic=not train)


class Mlp(nn.Module):
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.cfg
        h_BxTxF = Dense((cfg.mlp_dim,), ("embed", "mlp"), cfg, name="fc")(x_BxTxD)
        h_BxTxF = nn.with_logical_constraint(h_BxTxF, ("batch", "length", "mlp"))
        h_BxTxF = checkpoint_name(h_BxTxF, "mlp_hidden")
        h_BxTxF = ACTIVATIONS[cfg.activation](h_BxTxF)
        out_BxTxD = Dense(
            (cfg.emb_dim,),
            ("mlp", "embed"),
            cfg,
            init_scale=_residual_init_scale(cfg),
            name="proj",
        )(h_BxTxF)
        return nn.Dropout(cfg.dropout_rate)(out_BxTxD, deterministic=not train)


def unpad_vocab(cfg: TransformerConfig, logits: jax.Array) -> jax.Array:
    """`logits` [..., padded V] without the padding rows' entries: [..., V]."""
    if cfg.padded_vocab_size == cfg.vocab_size:
        return logits
    return logits[..., : cfg.vocab_size]


def layer_norm(cfg: TransformerConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_epsilon,
        use_bias=cfg.use_bias,
        dtype=cfg.dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        name=name,
    )


class Block(nn.Module):
    """Residual block. Pre-LN (GPT-2): x + attn(ln(x)), then x + mlp(ln(x)). Post-LN (BERT):
    ln(x + attn(x)), then ln(x + mlp(x)). The parameter names are the same for both."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(
        self,
        x_BxTxD: jax.Array,
        mask_BxTxS: jax.Array | None,
        decode: bool = False,
        cache_index: jax.Array | None = None,
        train: bool = False,
    ) -> jax.Array:
        cfg = self.cfg
        attn = MultiHeadAttention(cfg, name="attn")
        mlp = Mlp(cfg, name="mlp")
        ln_attn, ln_mlp = layer_norm(cfg, "ln_attn"), layer_norm(cfg, "ln_mlp")
        if cfg.norm_position == "pre":
            h = ln_attn(x_BxTxD)
            x_BxTxD = x_BxTxD + attn(
                h, mask_BxTxS, decode=decode, cache_index=cache_index, train=train
            )
            x_BxTxD = x_BxTxD + mlp(ln_mlp(x_BxTxD), train=train)
        else:
            h = attn(x_BxTxD, mask_BxTxS, decode=decode, cache_index=cache_index, train=train)
            x_BxTxD = ln_attn(x_BxTxD + h)
            x_BxTxD = ln_mlp(x_BxTxD + mlp(x_BxTxD, train=train))
        return nn.with_logical_constraint(x_BxTxD, ("batch", "length", "embed"))


class Transformer(nn.Module):
    """GPT-style decoder: token + learned position embeddings, pre-LN blocks, final LayerNorm,
    and an LM head tied to the token embedding. Returns float32 logits [B, T, V].

    With `decode=True` the model reads and writes a KV cache (collection "cache"): each call
    appends its tokens at the cache's current index, so a prompt can be fed at once and then one
    token per call. The BERT models (`bert.py`) subclass it and reuse `encode`.
    """

    cfg: TransformerConfig

    def encode(
        self,
        tokens_BxT: jax.Array,
        token_type_ids_BxT: jax.Array | None = None,
        attention_mask_BxT: jax.Array | None = None,
        decode: bool = False,
        train: bool = False,
    ) -> tuple[jax.Array, jax.Array]:
        """Embeddings and blocks: hidden states [B, T, D] (before any final LayerNorm) and the
        token-embedding matrix [V, D] for tied heads (its rows padded: `padded_vocab_size`).

        Called from the compact `__call__` of this class or a subclass, so its parameters sit at
        the top of the tree. `attention_mask_BxT` (1 = real token) hides padded keys.
        """
        cfg = self.cfg
        batch, length = tokens_BxT.shape
        if length > cfg.max_len:  # jnp.take would clip the positions silently
            raise ValueError(f"{length} tokens exceed the model's {cfg.max_len} positions")
        embed = nn.Embed(
            cfg.padded_vocab_size,
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
            if attention_mask_BxT is not None:
                raise NotImplementedError("decoding with an attention_mask")
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            start = index.value
            index.value = start + length
            positions_T = start + jnp.arange(length)
            key_positions_S = jnp.arange(cfg.max_len)
            mask_TxS = key_positions_S[None, :] <= positions_T[:, None]
        else:
            start = None
            positions_T = jnp.arange(length)
            mask_TxS = None  # every key, or every earlier one (causal): attention builds it
            if attention_mask_BxT is not None:
                mask_TxS = jnp.ones((length, length), bool)
                mask_TxS = jnp.tril(mask_TxS) if cfg.causal else mask_TxS
        mask_BxTxS = None
        if mask_TxS is not None:
            mask_BxTxS = jnp.broadcast_to(mask_TxS, (batch, *mask_TxS.shape))
        if attention_mask_BxT is not None:
            # Padded keys get no weight; a padded query still attends to the real keys (no NaN).
            mask_BxTxS = mask_BxTxS & (attention_mask_BxT[:, None, :] != 0)

        # Summed in BERT's order (word + token type + position); GPT: word + position.
        pos_1xTxD = jnp.take(pos_embed, positions_T, axis=0)[None].astype(cfg.dtype)
        # FSDP gathers the table's `embed` dim before the lookup, as for every other weight: a
        # gather from a table sharded on `embed` into a batch sharded on the same mesh axis
        # made GSPMD replicate the result ("involuntary full rematerialization").
        table_VxD = nn.with_logical_constraint(embed.embedding, ("vocab", None))
        x_BxTxD = jnp.take(table_VxD, tokens_BxT, axis=0).astype(cfg.dtype)
        if cfg.type_vocab_size:
            type_embed = self.param(
                "type_embed",
                nn.with_logical_partitioning(_dense_init(cfg), (None, "embed")),
                (cfg.type_vocab_size, cfg.emb_dim),
            )
            if token_type_ids_BxT is None:
                token_type_ids_BxT = jnp.zeros_like(tokens_BxT)
            x_BxTxD = x_BxTxD + jnp.take(type_embed, token_type_ids_BxT, axis=0).astype(cfg.dtype)
        elif token_type_ids_BxT is not None:
            raise ValueError("token_type_ids given, but the model has type_vocab_size=0")
        x_BxTxD = x_BxTxD + pos_1xTxD
        if cfg.embed_norm:
            x_BxTxD = layer_norm(cfg, "ln_embed")(x_BxTxD)
        x_BxTxD = nn.Dropout(cfg.dropout_rate)(x_BxTxD, deterministic=not train)
        x_BxTxD = nn.with_logical_constraint(x_BxTxD, ("batch", "length", "embed"))
        block = Block
        if cfg.remat:  # static: decode, train
            block = nn.remat(Block, static_argnums=(3, 5), policy=remat_policy(cfg))
        for i in range(cfg.num_layers):
            x_BxTxD = block(cfg, name=f"block_{i}")(x_BxTxD, mask_BxTxS, decode, start, train)
        return x_BxTxD, table_VxD

    @nn.compact
    def __call__(
        self, tokens_BxT: jax.Array, decode: bool = False, train: bool = False
    ) -> jax.Array:
        cfg = self.cfg
        x_BxTxD, embedding_VxD = self.encode(tokens_BxT, decode=decode, train=train)
        if cfg.norm_position == "pre":  # post-LN blocks end in a LayerNorm already
            x_BxTxD = layer_norm(cfg, "ln_final")(x_BxTxD)
        logits_BxTxV = matmul(
            x_BxTxD, embedding_VxD, dtype=cfg.dtype, kernel_NxK=True, impl=cfg.matmul_impl
        )
        logits_BxTxV = unpad_vocab(cfg, logits_BxTxV)
        logits_BxTxV = nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "vocab"))
        return logits_BxTxV.astype(jnp.float32)
