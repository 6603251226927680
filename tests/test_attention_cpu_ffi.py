"""The CPU attention kernel (lmjax/models/kernels/cpu_ffi.py): against float64 numpy, in the
model against the einsums, sharded over a mesh without gathering the batch, and its build."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.models import transformer
from lmjax.models.kernels import cpu_ffi
from tests.conftest import run_snippet


def _reference(qkv, dout):
    """Causal softmax attention and its gradient for qkv [B, T, H, 3, K], in float64."""
    qkv, dout = np.asarray(qkv, np.float64), np.asarray(dout, np.float64)
    q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]
    length, scale = q.shape[1], q.shape[-1] ** -0.5
    s = np.einsum("bthk,bshk->bhts", q, k) * scale
    s = np.where(np.tril(np.ones((length, length), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bhts,bshk->bthk", p, v)
    dp = np.einsum("bthk,bshk->bhts", dout, v)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    dq = np.einsum("bhts,bshk->bthk", ds, k) * scale
    dk = np.einsum("bhts,bthk->bshk", ds, q) * scale
    dv = np.einsum("bhts,bthk->bshk", p, dout)
    return out, np.stack([dq, dk, dv], axis=3)


def test_the_kernel_builds_here():
    # CI's machine has a C++ compiler: a kernel that stopped building would otherwise only
    # show as a slower step (auto would take the einsums).
    assert cpu_ffi.build_error() is None


@pytest.mark.parametrize(
    "shape, scale",
    [
        ((2, 37, 3, 16), 1.0),  # length not a multiple of the 16-wide vectors or 6-row tiles
        ((2, 130, 2, 64), 1.0),  # score rows of 64-wide tiles and a remainder
        ((1, 1, 1, 32), 1.0),  # one token
        ((1, 20, 2, 16), 30.0),  # scores in the hundreds: the softmax must not overflow
    ],
)
def test_forward_and_gradient_match_float64(shape, scale):
    b, t, h, k = shape
    key_qkv, key_dout = jax.random.split(jax.random.PRNGKey(0))
    qkv = scale * jax.random.normal(key_qkv, (b, t, h, 3, k), jnp.float32)
    dout = jax.random.normal(key_dout, (b, t, h, k), jnp.float32)
    fused = lambda qkv: cpu_ffi.causal_attention(qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2])
    out, vjp = jax.vjp(jax.jit(fused), qkv)
    (dqkv,) = vjp(dout)
    want_out, want_dqkv = _reference(qkv, dout)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dqkv, want_dqkv, rtol=1e-4, atol=1e-4 * scale)


def _loss_and_grads(impl):
    cfg = transformer.TransformerConfig(
        vocab_size=50, max_len=48, num_layers=2, num_heads=4, emb_dim=64, mlp_dim=128,
        attention_impl=impl,
    )  # fmt: skip
    model = transformer.Transformer(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 48), 0, 50)
    params = model.init(jax.random.PRNGKey(0), tokens)["params"]

    def loss(params):
        logits = model.apply({"params": params}, tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    step = jax.jit(jax.value_and_grad(loss))
    return step(params), step.lower(params).compile().as_text()


def test_model_with_the_kernel_matches_the_einsums():
    """Same loss and gradients; the kernel reads the fused projection as it is (the slices of
    q, k, v stacked back fold into a bitcast: no copy, no concatenate)."""
    (loss_ffi, grads_ffi), hlo_ffi = _loss_and_grads("cpu_ffi")
    (loss_xla, grads_xla), hlo_xla = _loss_and_grads("xla")
    assert "lmjax_causal_attention_fwd" in hlo_ffi and "lmjax_causal_attention_bwd" in hlo_ffi
    assert "lmjax_causal_attention" not in hlo_xla
    calls = [line for line in hlo_ffi.splitlines() if "lmjax_causal_attention_fwd" in line]
    assert all("custom-call(%bitcast" in line for line in calls), calls
    np.testing.assert_allclose(loss_ffi, loss_xla, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_ffi), jax.tree.leaves(grads_xla), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


_SHARDED = """
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from lmjax.models import attention
auto = (jax.sharding.AxisType.Auto,) * 2  # as lmjax.train.parallel.make_mesh
mesh = jax.make_mesh((2, 4), ("data", "tensor"), axis_types=auto)
rules = (("batch", "data"), ("heads", "tensor"))
qkv = jax.random.normal(jax.random.PRNGKey(0), (4, 40, 4, 3, 16))
dout = jax.random.normal(jax.random.PRNGKey(1), (4, 40, 4, 16))
def attend(qkv):
    q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]
    return attention.attention(q, k, v, mask_BxTxS=None, causal=True, impl="cpu_ffi")
with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    spec = jax.NamedSharding(mesh, jax.P("data", None, "tensor"))
    f = jax.jit(lambda x, g: jax.vjp(attend, x)[1](g)[0] + attend(x).sum(), in_shardings=spec)
    hlo = f.lower(qkv, dout).compile().as_text()
    sharded = f(qkv, dout)
unsharded = jax.jit(lambda x, g: jax.vjp(attend, x)[1](g)[0] + attend(x).sum())(qkv, dout)
assert "all-gather" not in hlo and "lmjax_causal_attention_bwd" in hlo, hlo
np.testing.assert_allclose(sharded, unsharded, rtol=1e-6, atol=1e-6)
with jax.set_mesh(mesh), nn.logical_axis_rules(rules):  # 3 rows over data=2: the einsums
    odd = jax.jit(attend).lower(qkv[:3]).compile().as_text()
assert "lmjax_causal_attention" not in odd, odd
# Under pmap (one call per device) and vmap (one call per row, sequentially), the same numbers.
stacked = jax.random.normal(jax.random.PRNGKey(2), (8, 2, 24, 2, 3, 16))
grad = lambda x: jax.grad(lambda y: jnp.sum(attend(y) ** 2))(x)
each = np.stack([jax.jit(grad)(x) for x in stacked])
np.testing.assert_array_equal(jax.pmap(grad)(stacked), each)
np.testing.assert_array_equal(jax.vmap(grad)(stacked), each)
print("OK")
"""


def test_sharded_pmapped_and_vmapped():
    """Under a data x tensor mesh each device runs the kernel on its batch rows and heads:
    the same numbers as on one device, and no all-gather in the compiled step; a batch that
    the mesh does not divide goes to the einsums. Under pmap and vmap: the same numbers."""
    run_snippet(_SHARDED, devices=8, timeout=300)


_AVX2 = """
from lmjax.models.kernels import cpu_ffi
from tests.test_attention_cpu_ffi import test_forward_and_gradient_match_float64 as check
cpu_ffi._FLAGS[cpu_ffi._FLAGS.index("-march=native")] = "-march=haswell"
for shape, scale in [((2, 37, 3, 16), 1.0), ((2, 130, 2, 64), 1.0), ((1, 20, 2, 16), 30.0)]:
    check(shape, scale)
print("OK")
"""


@pytest.mark.skipif(not cpu_ffi.measured_cpu(), reason="runs AVX2 code")
def test_an_avx2_build_matches_float64(tmp_path):
    """Built for AVX2 without AVX-512 (8-float vectors, 6 x 2 tiles: another code path), the
    kernel gives the same numbers."""
    run_snippet(_AVX2, env={"XDG_CACHE_HOME": str(tmp_path)}, timeout=300)
    (library,) = os.listdir(tmp_path / "lmjax")  # built here, not the native one from the cache
    assert library.startswith("cpu_ffi-")


def test_only_measured_cpu_kinds_take_the_kernel(monkeypatch):
    assert cpu_ffi.available()  # built (and cached) under this CPU's real flags first
    arm = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp"
    monkeypatch.setattr(cpu_ffi, "_cpu_flags", lambda: arm)
    assert not cpu_ffi.measured_cpu()
    assert cpu_ffi.unsupported(64, causal=True) == (
        "the CPU kernel is used on x86 CPUs with AVX2 or AVX-512 only"
    )
    old_x86 = "flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 sse4_1 sse4_2 avx"
    monkeypatch.setattr(cpu_ffi, "_cpu_flags", lambda: old_x86)
    assert cpu_ffi.unsupported(64, causal=True) is not None
    monkeypatch.setattr(cpu_ffi, "_cpu_flags", lambda: old_x86 + " fma avx2")
    assert cpu_ffi.unsupported(64, causal=True) is None
    assert cpu_ffi.unsupported(40, causal=True) == (
        "the CPU kernel needs a head dim that is a multiple of 16"
    )
    assert cpu_ffi.unsupported(64, causal=False) == "the CPU kernel is causal only"


def test_cache_is_keyed_by_the_source(tmp_path, monkeypatch):
    """A changed kernel source builds a new library instead of loading a stale one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    compiler = "c++"
    first = cpu_ffi._build(compiler)
    assert first.parent == tmp_path / "lmjax" and first.exists()
    assert cpu_ffi._build(compiler) == first  # cached: not rebuilt
    edited = tmp_path / "cpu_ffi.cc"
    edited.write_text(cpu_ffi._SOURCE.read_text() + "\n// edited\n")
    monkeypatch.setattr(cpu_ffi, "_SOURCE", edited)
    second = cpu_ffi._build(compiler)
    assert second != first and second.exists()
    # Built in a temporary directory and renamed: nothing else is left in the cache.
    assert sorted(os.listdir(tmp_path / "lmjax")) == sorted([first.name, second.name])


def test_unwritable_cache_builds_in_the_temporary_directory(tmp_path, monkeypatch):
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("")  # makedirs below it fails, even for root
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(not_a_dir))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(cpu_ffi.tempfile, "tempdir", None)  # re-read TMPDIR
    path = cpu_ffi._build("c++")
    assert path.parent == tmp_path / "tmp" / f"lmjax-{os.getuid()}" and path.exists()
