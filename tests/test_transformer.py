"""The Transformer against numpy float64 references, causality, and the KV cache."""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models import attention, transformer
from lmjax.models.kernels import xla
from lmjax.models.transformer import Transformer, TransformerConfig


def _cfg(**kw):
    base = dict(vocab_size=11, max_len=12, num_layers=2, num_heads=2, emb_dim=16, mlp_dim=32)
    return TransformerConfig(**{**base, **kw})


def _init(cfg, length=12, batch=2, seed=0):
    tokens = jax.random.randint(jax.random.PRNGKey(seed + 1), (batch, length), 0, cfg.vocab_size)
    params = jax.tree.map(
        lambda x: x.value if hasattr(x, "value") else x,
        Transformer(cfg).init(jax.random.PRNGKey(seed), tokens)["params"],
        is_leaf=lambda x: hasattr(x, "value"),
    )
    return params, tokens


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_attention(x, w_qkv, w_out, causal=True):
    """float64 multi-head attention: x [B,T,D], w_qkv [D,H,3,K], w_out [H,K,D]."""
    q, k, v = np.einsum("btd,dhck->cbthk", x, w_qkv)
    t = x.shape[1]
    logits = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(q.shape[-1])
    if causal:
        logits = np.where(np.tril(np.ones((t, t), bool)), logits, -np.inf)
    out = np.einsum("bhts,bshk->bthk", _np_softmax(logits), v)
    return np.einsum("bthk,hkd->btd", out, w_out)


def _np_layer_norm(x, scale, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale


def _check_causal_attention_against_numpy(cfg, x, explicit_mask=True):
    """The causal MultiHeadAttention of `cfg` on x [B, T, D] against the float64 rewrite, given
    the causal mask or none (attention builds it)."""
    batch, length = x.shape[:2]
    module = transformer.MultiHeadAttention(cfg)
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((length, length), bool)), (batch, length, length))
    mask = mask if explicit_mask else None
    variables = module.init(jax.random.PRNGKey(0), x, mask)
    params = jax.tree.map(
        lambda b: np.asarray(b.value, np.float64),
        variables["params"],
        is_leaf=lambda b: hasattr(b, "value"),
    )
    got = module.apply(variables, x, mask)
    want = _np_attention(x.astype(np.float64), params["qkv"]["kernel"], params["out"]["kernel"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_attention_matches_numpy_float64():
    cfg = _cfg()
    x = np.random.default_rng(0).normal(size=(2, 7, cfg.emb_dim)).astype(np.float32)
    _check_causal_attention_against_numpy(cfg, x)


def test_layer_norm_matches_numpy_float64():
    cfg = _cfg()
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(2, 5, cfg.emb_dim)).astype(np.float32)
    scale = np.random.default_rng(1).normal(size=(cfg.emb_dim,))
    ln = transformer.layer_norm(cfg, "ln")
    got = ln.apply({"params": {"scale": jnp.asarray(scale, jnp.float32)}}, x)
    want = _np_layer_norm(x.astype(np.float64), scale, cfg.layer_norm_epsilon)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_full_model_matches_numpy_float64():
    """The whole decoder (embeddings, pre-LN blocks, tied head) against a float64 rewrite."""
    cfg = _cfg()
    params, tokens = _init(cfg, length=9)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = p["tok_embed"]["embedding"][np.asarray(tokens)] + p["pos_embed"][:9]
    gelu = lambda h: 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))  # noqa
    for i in range(cfg.num_layers):
        b = p[f"block_{i}"]
        h = _np_layer_norm(x, b["ln_attn"]["scale"], cfg.layer_norm_epsilon)
        x = x + _np_attention(h, b["attn"]["qkv"]["kernel"], b["attn"]["out"]["kernel"])
        h = _np_layer_norm(x, b["ln_mlp"]["scale"], cfg.layer_norm_epsilon)
        x = x + gelu(h @ b["mlp"]["fc"]["kernel"]) @ b["mlp"]["proj"]["kernel"]
    x = _np_layer_norm(x, p["ln_final"]["scale"], cfg.layer_norm_epsilon)
    want = x @ p["tok_embed"]["embedding"].T
    got = Transformer(cfg).apply({"params": params}, tokens)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("explicit_mask", [True, False])
@pytest.mark.parametrize("length", [9, 12])
def test_blocked_causal_attention_matches_numpy_float64(monkeypatch, length, explicit_mask):
    """Causal attention in query blocks (the blocks above the diagonal skipped) against float64,
    with a block size that does and does not divide the length, given the mask or not."""
    monkeypatch.setattr(xla, "CAUSAL_BLOCK", 4)
    cfg = _cfg()
    x = np.random.default_rng(1).normal(size=(2, length, cfg.emb_dim)).astype(np.float32)
    _check_causal_attention_against_numpy(cfg, x, explicit_mask)


class _Encoder(Transformer):
    """The blocks' output, with an attention mask (as BERT's models call `encode`)."""

    @nn.compact
    def __call__(self, tokens_BxT, attention_mask_BxT=None):
        return self.encode(tokens_BxT, attention_mask_BxT=attention_mask_BxT)[0]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_cudnn_attention_gets_is_causal_when_nothing_else_is_masked(monkeypatch, causal, padded):
    """With nothing masked but the future, cuDNN gets `is_causal=True` and no [B, 1, T, S] mask
    (its causal kernel); with padding, the whole mask and no `is_causal`."""
    calls = []

    def spy(q, k, v, **kwargs):
        calls.append(kwargs)
        return q

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    model = _Encoder(_cfg(attention_impl="cudnn", causal=causal))
    tokens = jnp.zeros((2, 6), jnp.int32)
    real = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2]) if padded else None
    model.apply(model.init(jax.random.PRNGKey(0), tokens, real), tokens, real)
    assert len(calls) == 2 * _cfg().num_layers  # init and apply
    for call in calls:
        assert call["implementation"] == "cudnn"
        if padded:
            allowed = np.tril(np.ones((6, 6), bool)) if causal else np.ones((6, 6), bool)
            want = allowed[None] & (np.asarray(real)[:, None] != 0)
            assert not call["is_causal"]
            np.testing.assert_array_equal(call["mask"], want[:, None])
        else:
            assert call["is_causal"] == causal and call["mask"] is None


def test_blocked_causal_attention_gradients_equal_unblocked(monkeypatch):
    """Values and gradients of the blocked path equal one softmax over all keys, also with
    padded keys hidden by the mask (a padded query row attends to the real keys)."""
    rng = np.random.default_rng(2)
    q, k, v, g = (jnp.asarray(rng.normal(size=(2, 10, 2, 4)), jnp.float32) for _ in range(4))
    real = jnp.asarray([[1] * 10, [1] * 6 + [0] * 4], bool)
    mask = jnp.tril(jnp.ones((10, 10), bool))[None] & real[:, None, :]

    def loss(q, k, v):
        out = attention.attention(q, k, v, mask_BxTxS=mask, causal=True, impl="xla")
        return jnp.sum(out * g), out

    want = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    monkeypatch.setattr(xla, "CAUSAL_BLOCK", 3)
    got = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _gelu_tanh64(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _gelu_erf64(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


@pytest.mark.parametrize("name, gelu64", [("gelu_tanh", _gelu_tanh64), ("gelu", _gelu_erf64)])
def test_gelu_gradient_matches_float64_finite_differences(name, gelu64):
    """The GELUs' hand-written backward passes against float64 central differences."""
    gelu = transformer.ACTIVATIONS[name]
    x = np.linspace(-6, 6, 241)

    eps = 1e-6
    want = (gelu64(x + eps) - gelu64(x - eps)) / (2 * eps)
    got = jax.grad(lambda x: gelu(x).sum())(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, want, atol=1e-5)  # float32 rounding; a wrong term is ~0.1
    np.testing.assert_allclose(gelu(jnp.asarray(x, jnp.float32)), gelu64(x), atol=1e-5)


@pytest.mark.parametrize("block", [128, 5])
def test_causality_by_gradients(monkeypatch, block):
    """The loss at position t has zero gradient w.r.t. inputs after t (and nonzero before),
    with one attention block and with the queries split into causal blocks of 5."""
    monkeypatch.setattr(xla, "CAUSAL_BLOCK", block)
    cfg = _cfg()
    params, tokens = _init(cfg)
    model = Transformer(cfg)

    def loss_at(pos_embed, t):
        logits = model.apply({"params": {**params, "pos_embed": pos_embed}}, tokens)
        return jnp.sum(jax.nn.log_softmax(logits[:, t])[..., 0])

    for t in (0, 5, 11):
        # Row s of pos_embed enters only the input at position s.
        grad_norm_S = jnp.linalg.norm(jax.grad(loss_at)(params["pos_embed"], t), axis=-1)
        assert np.all(np.asarray(grad_norm_S[t + 1 :]) == 0.0), t
        assert np.all(np.asarray(grad_norm_S[: t + 1]) > 0.0), t


@pytest.mark.parametrize("use_bias", [False, True])
def test_kv_cache_decoding_matches_full_forward(use_bias):
    cfg = _cfg(use_bias=use_bias)
    params, tokens = _init(cfg)
    model = Transformer(cfg)
    full = model.apply({"params": params}, tokens)

    # Prefill 5 tokens at once, then feed one token per call.
    logits, variables = model.apply({"params": params}, tokens[:, :5], decode=True, mutable="cache")
    steps = [logits]
    for t in range(5, tokens.shape[1]):
        logits, variables = model.apply(
            {"params": params, **variables}, tokens[:, t : t + 1], decode=True, mutable="cache"
        )
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("matmul_impl", ["xla", "xla_cpu"])
def test_bfloat16_compute_keeps_float32_params_and_close_logits(matmul_impl):
    cfg32 = _cfg()
    cfg16 = _cfg(dtype=jnp.bfloat16, matmul_impl=matmul_impl)
    params, tokens = _init(cfg16)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    l32 = Transformer(cfg32).apply({"params": params}, tokens)
    l16 = Transformer(cfg16).apply({"params": params}, tokens)
    assert l16.dtype == jnp.float32  # logits are cast back for the loss
    np.testing.assert_allclose(l16, l32, atol=5e-2)


@pytest.mark.parametrize("kernel_NxK", [False, True])
@pytest.mark.parametrize("batch", [2, 3])  # M = 10 or 15 rows (the row-major transpose of odd M)
def test_bfloat16_matmul_rounds_inputs_sums_in_float32_and_keeps_kernel_grads_float32(
    kernel_NxK, batch
):
    """`xla_cpu`'s bf16 matmul and its two backward matmuls equal float64 products of
    bf16-rounded operands (rounded once at the end), and the kernel's gradient stays float32;
    also with the kernel stored [N, K] (a tied embedding as the output layer)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(batch, 5, 24)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 4, 24) if kernel_NxK else (24, 3, 4)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(batch, 5, 3, 4)), jnp.bfloat16)

    def r(a):  # bf16-rounded, as float64
        return np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64)

    def f(x, w):
        return transformer.matmul(x, w, 1, jnp.bfloat16, kernel_NxK=kernel_NxK, impl="xla_cpu")

    y, vjp = jax.vjp(f, x, w)
    dx, dw = vjp(g)
    assert y.dtype == jnp.bfloat16 and dx.dtype == jnp.float32 and dw.dtype == jnp.float32
    m = batch * 5
    x2, g2 = r(x).reshape(m, 24), r(g).reshape(m, 12)
    w2 = r(w).reshape(12, 24).T if kernel_NxK else r(w).reshape(24, 12)
    one_ulp = dict(rtol=2**-8, atol=1e-6)  # the float32 sum may round the other way
    np.testing.assert_allclose(np.asarray(y, np.float64), r(x2 @ w2).reshape(g.shape), **one_ulp)
    np.testing.assert_allclose(dx, r(g2 @ w2.T).reshape(x.shape), **one_ulp)
    dw2 = x2.T @ g2
    np.testing.assert_allclose(
        dw, (dw2.T if kernel_NxK else dw2).reshape(w.shape), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("kernel_NxK", [False, True])
def test_bfloat16_matmuls_compile_to_bfloat16_dots(kernel_NxK):
    """Forward and both backward matmuls reach XLA:CPU as bf16 x bf16 -> f32 dots: a dot that
    XLA upcasts to float32 (a column-major operand) runs at half the speed."""
    x = jnp.ones((64, 48), jnp.float32)
    w = jnp.ones((32, 48) if kernel_NxK else (48, 32), jnp.float32)

    def loss(x, w):
        return transformer.matmul(x, w, 1, jnp.bfloat16, kernel_NxK, impl="xla_cpu").sum()

    hlo = jax.jit(jax.value_and_grad(loss, (0, 1))).lower(x, w).compile().as_text()
    operand_types = []
    for computation in hlo.split("\n\n"):  # value names are local to a computation
        types = dict(re.findall(r"(%[\w.]+) = (\w+)\[", computation))
        for lhs, rhs in re.findall(r" dot\((%[\w.]+), (%[\w.]+)\)", computation):
            operand_types.append((types[lhs], types[rhs]))
    assert operand_types == [("bf16", "bf16")] * 3


@pytest.mark.parametrize(
    "policy, names",
    [("nothing_saveable", ()), ("save_only_these_names", ("qkv", "attention", "mlp_hidden"))],
)
def test_remat_equals_no_remat(policy, names):
    cfg = _cfg()
    params, tokens = _init(cfg)

    def loss(p, c):
        return jnp.mean(Transformer(c).apply({"params": p}, tokens) ** 2)

    g1 = jax.grad(loss)(params, cfg)
    remat = _cfg(remat=True, remat_policy=policy, remat_names=names)
    g2 = jax.grad(loss)(params, remat)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), g1, g2)
    jaxpr = str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(params, remat))
    for name in names:  # the block tags the tensors the policy names
        assert f"name={name}" in jaxpr, name


def test_a_padded_token_table_gives_the_logits_of_its_real_rows():
    """vocab_multiple=8 pads the 11-token table to 16 rows: the logits (and the loss's
    gradients) are those of the unpadded model holding the first 11 rows; the padding rows
    get no gradient."""
    padded, plain = _cfg(vocab_multiple=8), _cfg()
    params, tokens = _init(padded)
    assert params["tok_embed"]["embedding"].shape == (16, padded.emb_dim)
    cut = {**params, "tok_embed": {"embedding": params["tok_embed"]["embedding"][:11]}}

    def loss(p, c):
        logits = Transformer(c).apply({"params": p}, tokens)
        assert logits.shape == (*tokens.shape, 11)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    np.testing.assert_allclose(loss(params, padded), loss(cut, plain), rtol=1e-6)
    grad = jax.grad(loss)(params, padded)["tok_embed"]["embedding"]
    want = jax.grad(loss)(cut, plain)["tok_embed"]["embedding"]
    np.testing.assert_allclose(grad[:11], want, rtol=1e-5, atol=1e-7)
    assert not np.any(grad[11:])


def test_more_tokens_than_positions_is_an_error_not_a_silent_clip():
    cfg = _cfg()
    params, _ = _init(cfg)
    with pytest.raises(ValueError, match="13 tokens exceed the model's 12 positions"):
        Transformer(cfg).apply({"params": params}, jnp.zeros((1, 13), jnp.int32))
