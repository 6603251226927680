"""One attention interface (lmjax/models/attention.py): every kernel that runs here against
float64 numpy, the cuDNN wrapper with its call stubbed, and `auto`'s choice for fake devices.

The CPU kernel's own tests (build, AVX2, sharding) are in test_attention_cpu_ffi.py."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax import errors
from lmjax.models import attention
from lmjax.models.kernels import cpu_ffi, tpu_splash, xla
from tests.conftest import run_snippet, tiny_config


def _reference(q, k, v, mask, dout):
    """Softmax attention and its gradients for [B, T, H, K] inputs, mask [B, T, S], float64."""
    q, k, v, dout = (np.asarray(a, np.float64) for a in (q, k, v, dout))
    scale = q.shape[-1] ** -0.5
    s = np.einsum("bthk,bshk->bhts", q, k) * scale
    s = np.where(mask[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bhts,bshk->bthk", p, v)
    dp = np.einsum("bthk,bshk->bhts", dout, v)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    dq = np.einsum("bhts,bshk->bthk", ds, k) * scale
    dk = np.einsum("bhts,bthk->bshk", ds, q) * scale
    dv = np.einsum("bhts,bthk->bshk", p, dout)
    return out, (dq, dk, dv)


def _check(impl, shape, causal, padded=False, tol=1e-5):
    """`attention(impl=...)` and its gradients against `_reference`."""
    b, t, h, k = shape
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    q, k_, v, dout = (jax.random.normal(key, (b, t, h, k), jnp.float32) for key in keys)
    allowed = np.tril(np.ones((t, t), bool)) if causal else np.ones((t, t), bool)
    allowed = np.broadcast_to(allowed, (b, t, t))
    mask = None
    if padded:  # the last row's final quarter is padding (its keys hidden)
        real = np.ones((b, t), bool)
        real[-1, t - t // 4 :] = False
        allowed = allowed & real[:, None, :]
        mask = jnp.asarray(allowed)

    def run(q, k, v):
        return attention.attention(q, k, v, mask_BxTxS=mask, causal=causal, impl=impl)

    out, vjp = jax.vjp(jax.jit(run), q, k_, v)
    grads = vjp(dout)
    want_out, want_grads = _reference(q, k_, v, allowed, dout)
    np.testing.assert_allclose(out, want_out, rtol=tol, atol=tol)
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize(
    "shape, causal, padded",
    [
        ((2, 9, 2, 8), True, False),
        ((2, 12, 2, 8), True, True),
        ((2, 12, 3, 4), False, True),
        ((1, 200, 2, 16), True, False),  # two causal query blocks of 128
    ],
)
def test_xla_matches_float64(shape, causal, padded):
    _check("xla", shape, causal, padded)


@pytest.mark.skipif(cpu_ffi.unsupported(16, causal=True) is not None, reason="not an x86 CPU")
@pytest.mark.parametrize("shape", [(2, 37, 3, 16), (1, 130, 2, 64)])
def test_cpu_ffi_matches_float64(shape):
    _check("cpu_ffi", shape, causal=True)


@pytest.mark.parametrize("causal", [True, False])
def test_tpu_splash_in_interpret_mode_matches_float64(monkeypatch, causal):
    """The Pallas splash kernel itself (not a stub), run by the Pallas interpreter on the CPU."""
    monkeypatch.setattr(tpu_splash, "INTERPRET", True)
    calls = []
    kernel = tpu_splash.attention
    monkeypatch.setattr(
        tpu_splash, "attention", lambda *a, **kw: calls.append(1) or kernel(*a, **kw)
    )
    _check("tpu_splash", (2, 256, 2, 32), causal)
    assert calls  # the kernel ran: not the einsums' fallback


@pytest.mark.parametrize("impl", ["cpu_ffi", "tpu_splash"])
def test_calls_a_kernel_cannot_take_run_the_einsums(monkeypatch, impl):
    """A padding mask, or a length the splash blocks do not divide: the einsums, same numbers."""
    called = []
    for module, name in ((cpu_ffi, "causal_attention"), (tpu_splash, "attention")):
        monkeypatch.setattr(module, name, lambda *a, **kw: called.append(1))
    _check(impl, (2, 12, 2, 16), causal=True, padded=True)
    if impl == "tpu_splash":
        _check(impl, (1, 100, 2, 16), causal=True)
    assert not called


@pytest.mark.parametrize("causal, padded", [(True, False), (True, True), (False, False)])
def test_cudnn_gets_is_causal_or_the_mask(monkeypatch, causal, padded):
    """cuDNN cannot run here: `jax.nn.dot_product_attention` is stubbed by its XLA path (the
    stub: implementation="xla"), so the wrapper's arguments and the numbers are checked."""
    calls = []
    real = jax.nn.dot_product_attention

    def stub(q, k, v, **kwargs):
        calls.append(kwargs)
        return real(q, k, v, **{**kwargs, "implementation": "xla"})

    monkeypatch.setattr(jax.nn, "dot_product_attention", stub)
    _check("cudnn", (2, 12, 2, 8), causal, padded)
    assert all(c["implementation"] == "cudnn" for c in calls)
    assert all(c["is_causal"] == (causal and not padded) for c in calls)
    assert all((c["mask"] is None) == (not padded) for c in calls)


def _device(platform, kind, capability=None):
    device = types.SimpleNamespace(platform=platform, device_kind=kind)
    if capability:
        device.compute_capability = capability
    return device


H100 = _device("gpu", "NVIDIA H100 80GB HBM3", "9.0")
V100 = _device("gpu", "Tesla V100-SXM2-16GB", "7.0")
A100 = _device("gpu", "NVIDIA A100-SXM4-40GB", "8.0")
MI300 = _device("gpu", "AMD Instinct MI300X")
TPU = _device("tpu", "TPU v5 lite")
CPU = _device("cpu", "cpu")
GPT = dict(causal=True, head_dim=64, seq_len=1024, dtype=jnp.bfloat16, dropout=False)


@pytest.mark.parametrize(
    "devices, model, want, why",
    [
        ([H100] * 8, GPT, "cudnn", "auto: the fastest kernel for NVIDIA H100 80GB HBM3"),
        ([A100], {**GPT, "head_dim": 256}, "xla", "up to 128"),  # 256 from Hopper on
        ([H100], {**GPT, "head_dim": 256}, "cudnn", "fastest"),
        ([H100], {**GPT, "dtype": jnp.float32}, "xla", "needs bfloat16 or float16"),
        ([H100], {**GPT, "dropout": True}, "xla", "no attention dropout"),
        ([V100], GPT, "xla", "compute capability 8.0"),
        ([MI300], GPT, "xla", "runs on NVIDIA GPUs"),
        ([TPU] * 4, {**GPT, "head_dim": 128}, "tpu_splash", "fastest kernel for TPU v5 lite"),
        ([TPU], GPT, "xla", "multiples of 128"),
        ([TPU], {**GPT, "head_dim": 128, "seq_len": 200}, "xla", "multiple of 128"),
        ([CPU] * 2, {**GPT, "head_dim": 32}, "cpu_ffi", "fastest kernel for cpu"),
        ([CPU], {**GPT, "head_dim": 40}, "xla", "multiple of 16"),
        ([CPU], {**GPT, "causal": False}, "xla", "causal only"),
        ([CPU, H100], GPT, "xla", "the devices mix cpu, gpu"),
    ],
)
def test_auto_picks_the_kernel_from_the_device_kind(monkeypatch, devices, model, want, why):
    monkeypatch.setattr(cpu_ffi, "_cpu_flags", lambda: "flags : fpu sse avx avx2")  # built: x86
    choice = attention.resolve("auto", devices, **model)
    assert choice.impl == want and why in choice.reason, choice


def test_auto_on_a_cpu_without_the_kernel(monkeypatch):
    monkeypatch.setattr(cpu_ffi, "_cpu_flags", lambda: "Features : fp asimd")  # Arm
    assert attention.resolve("auto", [CPU], **GPT).impl == "xla"
    monkeypatch.setattr(cpu_ffi, "_cpu_flags", lambda: "flags : avx2")
    monkeypatch.setattr(cpu_ffi, "build_error", lambda: "no C++ compiler ($CXX, c++) to build it")
    choice = attention.resolve("auto", [CPU], **GPT)
    assert choice == attention.Choice("xla", "auto: no C++ compiler ($CXX, c++) to build it")


def test_named_kernels_and_matmuls():
    assert attention.resolve("xla", [H100], **GPT) == attention.Choice("xla", "as configured")
    assert attention.resolve("cudnn", [H100], **GPT).impl == "cudnn"
    with pytest.raises(ValueError, match="^attention_impl='tpu_splash' needs TPUs and this"):
        attention.resolve("tpu_splash", [H100], **GPT)
    with pytest.raises(ValueError, match=r"cannot run this model \(cuDNN flash attention needs"):
        attention.resolve("cudnn", [H100], **{**GPT, "dtype": jnp.float32})
    assert attention.resolve_matmul("auto", [CPU] * 8).impl == "xla_cpu"
    assert attention.resolve_matmul("auto", [H100]).impl == "xla"
    assert attention.resolve_matmul("auto", [TPU]).impl == "xla"
    assert attention.resolve_matmul("xla", [CPU]).impl == "xla"


def test_setup_resolves_auto_for_the_model_and_keeps_the_config():
    """build.setup on this CPU: the GPT takes the CPU kernel, the task's model is built with it,
    the run's config (what config.json saves) keeps `auto`; a BERT (bidirectional) the einsums."""
    from lmjax.train import build

    s = build.setup(tiny_config(**{"model.emb_dim": 64, "model.num_heads": 2}))
    want = "cpu_ffi" if cpu_ffi.unsupported(32, causal=True) is None else "xla"
    assert s.kernels["attention_impl"].impl == want
    assert s.kernels["matmul_impl"] == attention.Choice("xla_cpu", "auto: CPU devices")
    assert s.config.model.attention_impl == "auto" and s.config.model.matmul_impl == "auto"
    model = s.task.make_model(65)
    assert (model.cfg.attention_impl, model.cfg.matmul_impl) == (want, "xla_cpu")

    from configs import bert_tiny_wikitext

    bert = build.setup(bert_tiny_wikitext.get_config("test"))
    assert bert.kernels["attention_impl"].impl == "xla"
    assert "causal only" in bert.kernels["attention_impl"].reason or want == "xla"


def test_setup_refuses_a_kernel_the_devices_cannot_run():
    from lmjax.train import build

    with pytest.raises(
        errors.InputError, match="^config.model.attention_impl='cudnn' needs NVIDIA"
    ):
        build.setup(tiny_config(**{"model.attention_impl": "cudnn"}))


def test_xla_causal_blocks(monkeypatch):
    """The einsums' causal blocks, 5 queries each, equal one softmax (values and gradients)."""
    monkeypatch.setattr(xla, "CAUSAL_BLOCK", 5)
    _check("xla", (1, 12, 2, 8), causal=True)
    _check("xla", (1, 12, 2, 8), causal=True, padded=True)


_MESH = """
import flax.linen as nn, jax, numpy as np
from lmjax.models import attention
from lmjax.models.kernels import tpu_splash
tpu_splash.INTERPRET = True
auto = (jax.sharding.AxisType.Auto,) * 2  # as lmjax.train.parallel.make_mesh
mesh = jax.make_mesh((2, 4), ("data", "tensor"), axis_types=auto)
rules = (("batch", "data"), ("heads", "tensor"))
q, k, v, g = (jax.random.normal(jax.random.PRNGKey(i), (4, 128, 4, 16)) for i in range(4))
for impl in ("xla", "cpu_ffi", "tpu_splash"):
    def attend(q, k, v):
        return attention.attention(q, k, v, mask_BxTxS=None, causal=True, impl=impl)
    def grads(q, k, v, g):
        out, vjp = jax.vjp(attend, q, k, v)
        return out, vjp(g)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        spec = jax.NamedSharding(mesh, jax.P("data", None, "tensor"))
        f = jax.jit(grads, in_shardings=spec)
        hlo = f.lower(q, k, v, g).compile().as_text()
        sharded = f(q, k, v, g)
    one = jax.jit(grads)(q, k, v, g)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(one), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=impl)
    assert "all-gather" not in hlo, impl  # each device ran on its own rows and heads
    assert ("lmjax_causal_attention_bwd" in hlo) == (impl == "cpu_ffi"), impl
print("OK")
"""


def test_a_mesh_equals_one_device_with_each_kernel_that_runs_here():
    """xla, cpu_ffi and tpu_splash (interpreted) over a data x tensor mesh of 8 CPU devices:
    the numbers of one device, and the batch and heads never gathered."""
    run_snippet(_MESH, devices=8)
