"""The BERT encoder and heads: numpy float64 reference, padding, bidirectionality, gathered MLM."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models import bert
from lmjax.models.bert import BertForPreTraining, BertForSequenceClassification

VOCAB, MAX_LEN = 13, 12


def _cfg(**kw):
    sizes = dict(num_layers=2, num_heads=2, emb_dim=16, mlp_dim=32, dropout_rate=0.0)
    return bert.bert_config(VOCAB, MAX_LEN, **{**sizes, **kw})


def _inputs(batch=2, length=9, seed=1):
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(1, VOCAB, (batch, length)), jnp.int32)
    types = jnp.asarray(np.arange(length)[None] >= length // 2, jnp.int32) * jnp.ones_like(ids)
    return ids, types


def _unbox(tree):
    return jax.tree.map(
        lambda x: x.value if isinstance(x, nn.Partitioned) else x,
        tree,
        is_leaf=lambda x: isinstance(x, nn.Partitioned),
    )


def _init(model, *args, seed=0):
    return _unbox(model.init(jax.random.PRNGKey(seed), *args)["params"])


def _perturbed(params, seed=7):
    """Random values for every parameter (LayerNorms and biases start at 1/0: test them too)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(
        tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )


# ---- numpy float64 reference ---------------------------------------------------------------


def _np_layer_norm(x, p, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


_np_erf = np.vectorize(math.erf)


def _np_gelu(x):
    return 0.5 * x * (1 + _np_erf(x / np.sqrt(2)))


def _np_dense(x, p, num_in=1):
    kernel = p["kernel"].reshape(math.prod(p["kernel"].shape[:num_in]), -1)
    y = x.reshape(*x.shape[: x.ndim - num_in], -1) @ kernel
    return y.reshape(*y.shape[:-1], *p["kernel"].shape[num_in:]) + p["bias"]


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_post_ln_block(x, b, mask, eps):
    """BERT layer: x = LN(x + attn(x)); x = LN(x + mlp(x)); padded keys masked out."""
    q, k, v = np.moveaxis(_np_dense(x, b["attn"]["qkv"]), 3, 0)  # [B, T, H, K] each
    logits = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask[:, None, None, :] > 0, logits, -np.inf)
    attn = np.einsum("bhts,bshk->bthk", _np_softmax(logits), v)
    x = _np_layer_norm(x + _np_dense(attn, b["attn"]["out"], num_in=2), b["ln_attn"], eps)
    h = _np_dense(_np_gelu(_np_dense(x, b["mlp"]["fc"])), b["mlp"]["proj"])
    return _np_layer_norm(x + h, b["ln_mlp"], eps)


def _np_bert(params, cfg, ids, types, mask):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    ids, types, mask = np.asarray(ids), np.asarray(types), np.asarray(mask)
    eps = cfg.layer_norm_epsilon
    x = p["tok_embed"]["embedding"][ids] + p["type_embed"][types] + p["pos_embed"][: ids.shape[1]]
    x = _np_layer_norm(x, p["ln_embed"], eps)
    for i in range(cfg.num_layers):
        x = _np_post_ln_block(x, p[f"block_{i}"], mask, eps)
    pooled = np.tanh(_np_dense(x[:, 0], p["pooler"]["dense"]))
    out = {"hidden": x, "pooled": pooled}
    if "mlm_head" in p:
        h = _np_layer_norm(_np_gelu(_np_dense(x, p["mlm_head"]["dense"])), p["mlm_head"]["ln"], eps)
        out["mlm_logits"] = h @ p["tok_embed"]["embedding"].T + p["mlm_head"]["bias"]
        out["nsp_logits"] = _np_dense(pooled, p["nsp_head"]["dense"])
    else:
        out["logits"] = _np_dense(pooled, p["classifier"]["dense"])
    return out


# ---- tests ---------------------------------------------------------------------------------


def test_post_ln_block_matches_numpy_float64():
    from lmjax.models.transformer import Block

    cfg = _cfg()
    x = np.random.default_rng(0).normal(size=(2, 7, cfg.emb_dim)).astype(np.float32)
    mask_BxT = np.array([[1] * 7, [1] * 4 + [0] * 3])
    mask_BxTxS = jnp.broadcast_to(jnp.asarray(mask_BxT, bool)[:, None, :], (2, 7, 7))
    params = _perturbed(_init(Block(cfg), x, mask_BxTxS))
    got = Block(cfg).apply({"params": params}, x, mask_BxTxS)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    want = _np_post_ln_block(x.astype(np.float64), p, mask_BxT, cfg.layer_norm_epsilon)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_pretraining_model_matches_numpy_float64():
    """Embeddings + LN, post-LN blocks with a padding mask, pooler, tied MLM head, NSP head."""
    cfg = _cfg()
    ids, types = _inputs()
    mask = jnp.asarray([[1] * 9, [1] * 6 + [0] * 3])
    model = BertForPreTraining(cfg)
    params = _perturbed(_init(model, ids, types, mask))
    got = model.apply({"params": params}, ids, token_type_ids=types, attention_mask=mask)
    want = _np_bert(params, cfg, ids, types, mask)
    assert got["mlm_logits"].dtype == got["nsp_logits"].dtype == jnp.float32
    assert got["mlm_logits"].shape == (2, 9, VOCAB) and got["nsp_logits"].shape == (2, 2)
    np.testing.assert_allclose(got["mlm_logits"], want["mlm_logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["nsp_logits"], want["nsp_logits"], rtol=1e-4, atol=1e-4)


def test_classifier_matches_numpy_float64_and_shares_the_encoder():
    cfg = _cfg()
    ids, types = _inputs()
    mask = jnp.ones_like(ids)
    model = BertForSequenceClassification(cfg, num_classes=3)
    params = _perturbed(_init(model, ids, types, mask))
    got = model.apply({"params": params}, ids, token_type_ids=types, attention_mask=mask)
    assert got["logits"].shape == (2, 3) and got["logits"].dtype == jnp.float32
    want = _np_bert(params, cfg, ids, types, mask)["logits"]
    np.testing.assert_allclose(got["logits"], want, rtol=1e-4, atol=1e-4)

    # Fine-tuning copies the encoder and pooler: every shared parameter has the same shape.
    pretrain = _init(BertForPreTraining(cfg), ids, types, mask)
    shared = set(params) & set(pretrain)
    assert shared == set(params) - {"classifier"}
    for name in shared:
        assert jax.tree.map(jnp.shape, params[name]) == jax.tree.map(jnp.shape, pretrain[name])


def test_padding_does_not_change_real_positions():
    """Each example alone, unpadded == the batch padded to max_len with attention_mask 0."""
    cfg = _cfg()
    model = BertForPreTraining(cfg)
    ids, types = _inputs(length=MAX_LEN)
    lengths = [9, 5]
    mask = jnp.asarray(np.arange(MAX_LEN)[None] < np.array(lengths)[:, None], jnp.int32)
    params = _perturbed(_init(model, ids, types, mask))
    padded = model.apply({"params": params}, ids * mask, types * mask, mask)
    for b, n in enumerate(lengths):
        alone = model.apply({"params": params}, ids[b : b + 1, :n], types[b : b + 1, :n])
        np.testing.assert_allclose(padded["mlm_logits"][b, :n], alone["mlm_logits"][0], atol=1e-5)
        np.testing.assert_allclose(padded["nsp_logits"][b], alone["nsp_logits"][0], atol=1e-5)
    assert np.all(np.isfinite(padded["mlm_logits"]))  # padded query rows too

    # A sequence of padding only (every key masked) gives finite outputs, not NaN.
    empty = model.apply({"params": params}, ids, types, jnp.zeros_like(mask))
    assert all(np.all(np.isfinite(v)) for v in empty.values())


def test_bidirectional_by_gradients_and_padding_gets_no_gradient():
    """Position 0's output depends on every real token, the last one included; padding on none."""
    cfg = _cfg()
    model = BertForPreTraining(cfg)
    ids, types = _inputs(length=MAX_LEN)
    n = 10
    mask = jnp.asarray(np.arange(MAX_LEN) < n, jnp.int32)[None] * jnp.ones_like(ids)
    params = _init(model, ids, types, mask)

    def output_at_0(pos_embed):
        out = model.apply({"params": {**params, "pos_embed": pos_embed}}, ids, types, mask)
        return jnp.sum(jax.nn.log_softmax(out["mlm_logits"][:, 0])[..., 0])

    # Row s of pos_embed enters only the input at position s.
    grad_norm_S = np.linalg.norm(jax.grad(output_at_0)(params["pos_embed"]), axis=-1)
    assert np.all(grad_norm_S[:n] > 0.0), grad_norm_S
    assert np.all(grad_norm_S[n:] == 0.0), grad_norm_S


def test_mlm_head_on_gathered_positions_equals_full_sequence():
    cfg = _cfg()
    model = BertForPreTraining(cfg)
    ids, types = _inputs()
    positions = jnp.asarray([[0, 3, 8], [5, 5, 1]])
    params = _perturbed(_init(model, ids, types))
    full = model.apply({"params": params}, ids, types)
    gathered = model.apply({"params": params}, ids, types, masked_lm_positions=positions)
    want = jnp.take_along_axis(full["mlm_logits"], positions[:, :, None], axis=1)
    assert gathered["mlm_logits"].shape == (2, 3, VOCAB)
    np.testing.assert_allclose(gathered["mlm_logits"], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(gathered["nsp_logits"], full["nsp_logits"])


def test_token_types_change_the_output():
    cfg = _cfg()
    model = BertForPreTraining(cfg)
    ids, types = _inputs()
    params = _perturbed(_init(model, ids, types))
    zeros = model.apply({"params": params}, ids, jnp.zeros_like(ids))
    mixed = model.apply({"params": params}, ids, types)
    assert np.abs(np.asarray(zeros["mlm_logits"] - mixed["mlm_logits"])).max() > 1e-3
    assert np.abs(np.asarray(zeros["nsp_logits"] - mixed["nsp_logits"])).max() > 1e-3
    # Without token_type_ids, every token has type 0.
    default = model.apply({"params": params}, ids)
    np.testing.assert_array_equal(default["mlm_logits"], zeros["mlm_logits"])
    with pytest.raises(ValueError, match="type_vocab_size=0"):
        BertForPreTraining(_cfg(type_vocab_size=0)).init(jax.random.PRNGKey(0), ids, types)


def test_parameter_tree_and_logical_axes():
    """The names the HF import maps onto; every parameter carries one logical name per dim."""
    cfg = _cfg(num_layers=1)
    ids, types = _inputs()
    boxed = BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids, types)["params"]
    shapes = jax.tree.map(jnp.shape, _unbox(boxed))
    dense = lambda i, o: {"kernel": (*i, *o), "bias": o}  # noqa: E731
    ln = {"scale": (16,), "bias": (16,)}
    assert shapes == {
        "tok_embed": {"embedding": (VOCAB, 16)},
        "pos_embed": (MAX_LEN, 16),
        "type_embed": (2, 16),
        "ln_embed": ln,
        "block_0": {
            "attn": {"qkv": dense((16,), (2, 3, 8)), "out": dense((2, 8), (16,))},
            "ln_attn": ln,
            "mlp": {"fc": dense((16,), (32,)), "proj": dense((32,), (16,))},
            "ln_mlp": ln,
        },
        "pooler": {"dense": dense((16,), (16,))},
        "mlm_head": {"dense": dense((16,), (16,)), "ln": ln, "bias": (VOCAB,)},
        "nsp_head": {"dense": dense((16,), (2,))},
    }
    boxes = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(b, nn.Partitioned) and len(b.names) == b.value.ndim for b in boxes)
    assert boxed["type_embed"].names == (None, "embed")
    assert boxed["mlm_head"]["bias"].names == ("vocab",)


def test_dropout_in_training_only():
    cfg = _cfg(dropout_rate=0.0, attention_dropout_rate=0.5)
    model = BertForPreTraining(cfg)
    ids, types = _inputs()
    params = _perturbed(_init(model, ids, types))
    run = lambda seed: model.apply(  # noqa: E731
        {"params": params}, ids, types, train=True, rngs={"dropout": jax.random.PRNGKey(seed)}
    )["mlm_logits"]
    evaluated = model.apply({"params": params}, ids, types)["mlm_logits"]
    assert np.abs(np.asarray(run(0) - evaluated)).max() > 1e-3  # attention dropout is on
    np.testing.assert_array_equal(run(0), run(0))
    assert np.abs(np.asarray(run(0) - run(1))).max() > 1e-3


def test_remat_equals_no_remat():
    ids, types = _inputs()
    mask = jnp.asarray([[1] * 9, [1] * 6 + [0] * 3])
    params = _init(BertForPreTraining(_cfg()), ids, types, mask)

    def loss(p, cfg):
        out = BertForPreTraining(cfg).apply({"params": p}, ids, types, mask)
        return jnp.mean(out["mlm_logits"] ** 2) + jnp.mean(out["nsp_logits"] ** 2)

    g1 = jax.grad(loss)(params, _cfg())
    g2 = jax.grad(loss)(params, _cfg(remat=True))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), g1, g2)


def test_bfloat16_keeps_float32_params_and_logits():
    ids, types = _inputs()
    params = _init(BertForSequenceClassification(_cfg(dtype=jnp.bfloat16)), ids, types)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    l16 = BertForSequenceClassification(_cfg(dtype=jnp.bfloat16)).apply({"params": params}, ids)
    l32 = BertForSequenceClassification(_cfg()).apply({"params": params}, ids)
    assert l16["logits"].dtype == jnp.float32
    np.testing.assert_allclose(l16["logits"], l32["logits"], atol=5e-2)


def test_config_rejects_unknown_norm_position():
    with pytest.raises(ValueError, match="norm_position"):
        _cfg(norm_position="sandwich")


def test_shards_under_the_logical_axis_rules():
    """As the train loop does it: abstract init → shardings from the config's rules → jit."""
    from configs import gpt_shakespeare_char
    from lmjax.train import parallel

    config = gpt_shakespeare_char.get_config()
    rules = tuple(tuple(r) for r in config.logical_axis_rules)
    mesh = parallel.make_mesh(config.mesh)
    model = BertForPreTraining(_cfg())
    ids, types = _inputs()
    positions = jnp.asarray([[1, 2], [3, 4]])
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, types)
        shardings = parallel.state_shardings(abstract, mesh, rules)
        init = jax.jit(model.init, out_shardings=shardings)
        params = parallel.unbox(init(jax.random.PRNGKey(0), ids, types))["params"]
        out = jax.jit(model.apply)({"params": params}, ids, types, None, positions)
    assert out["mlm_logits"].shape == (2, 2, VOCAB) and out["nsp_logits"].shape == (2, 2)
