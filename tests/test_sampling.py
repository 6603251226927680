"""Sampling: greedy equals repeated full forward passes; top-k / top-p filters; CLI."""

import jax
import jax.numpy as jnp
import numpy as np

from lmjax import sampling
from lmjax.models.transformer import Transformer, TransformerConfig
from lmjax.train import loop
from tests.conftest import run_script, tiny_config


def _model(max_len=10):
    cfg = TransformerConfig(
        vocab_size=13, max_len=max_len, num_layers=2, num_heads=2, emb_dim=16, mlp_dim=32
    )
    model = Transformer(cfg)
    tokens = jnp.zeros((1, max_len), jnp.int32)
    params = jax.tree.map(
        lambda b: b.value,
        model.init(jax.random.PRNGKey(3), tokens)["params"],
        is_leaf=lambda b: hasattr(b, "value"),
    )
    # Scale up the embedding so the random model has peaked, prompt-dependent predictions.
    params["tok_embed"]["embedding"] = params["tok_embed"]["embedding"] * 50
    return model, params


def _greedy_without_cache(model, params, prompt, n):
    """Reference: a full forward pass over the (cropped) context for every new token."""
    tokens = list(prompt)
    for _ in range(n):
        context = jnp.asarray([tokens[-model.cfg.max_len :]], jnp.int32)
        tokens.append(int(jnp.argmax(model.apply({"params": params}, context)[0, -1])))
    return tokens[len(prompt) :]


def test_greedy_with_kv_cache_equals_full_forward_passes():
    model, params = _model()
    prompt = [1, 5, 2]
    got = sampling.generate(
        model, params, np.array([prompt]), 7, jax.random.PRNGKey(0), temperature=0.0
    )
    assert got.shape == (1, 7)
    assert got[0].tolist() == _greedy_without_cache(model, params, prompt, 7)


def test_generation_longer_than_the_context_continues_in_new_windows():
    model, params = _model(max_len=8)
    got = sampling.generate(model, params, np.array([[1, 2, 3]]), 20, jax.random.PRNGKey(0), 0.0)
    assert got.shape == (1, 20)
    # The first window (3 prompt + 5 new tokens) is exact; later windows re-read half a context.
    assert got[0, :5].tolist() == _greedy_without_cache(model, params, [1, 2, 3], 5)


def test_top_k_one_is_greedy_and_sampling_is_seeded():
    model, params = _model()
    prompt = np.array([[4, 4, 7], [1, 2, 3]])
    greedy = sampling.generate(model, params, prompt, 6, jax.random.PRNGKey(0), temperature=0.0)
    top1 = sampling.generate(model, params, prompt, 6, jax.random.PRNGKey(9), 1.0, top_k=1)
    np.testing.assert_array_equal(top1, greedy)
    a = sampling.generate(model, params, prompt, 6, jax.random.PRNGKey(1), 1.0)
    b = sampling.generate(model, params, prompt, 6, jax.random.PRNGKey(1), 1.0)
    np.testing.assert_array_equal(a, b)


def test_filter_logits_top_k_and_top_p():
    probs = np.array([[0.5, 0.25, 0.15, 0.1]])
    logits = jnp.log(jnp.asarray(probs))
    keep = lambda out: (np.asarray(out) > np.finfo(np.float32).min / 2).tolist()[0]  # noqa: E731
    assert keep(sampling.filter_logits(logits, top_k=2)) == [True, True, False, False]
    # Mass before the 3rd token is 0.75: top_p=0.7 keeps two tokens, 0.8 keeps three.
    assert keep(sampling.filter_logits(logits, top_p=0.7)) == [True, True, False, False]
    assert keep(sampling.filter_logits(logits, top_p=0.8)) == [True, True, True, False]
    assert keep(sampling.filter_logits(logits, top_p=0.1)) == [True, False, False, False]


def test_sampled_frequencies_follow_the_filtered_distribution():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.2]] * 4000))
    draws = np.asarray(sampling.sample_token(jax.random.PRNGKey(0), logits, 1.0, top_k=2))
    freq = np.bincount(draws, minlength=3) / draws.size
    np.testing.assert_allclose(freq, [0.625, 0.375, 0.0], atol=0.03)


def test_sample_cli_on_a_trained_workdir(workdir):
    loop.train_and_evaluate(tiny_config(), workdir)
    proc = run_script(
        "sample.py",
        f"--workdir={workdir}",
        "--prompt=ROMEO:",
        "--max_new_tokens=40",
        "--temperature=0",
        "--num_samples=2",
    )
    # Library INFO lines are filtered as in training (Orbax logged ~27 while it read the run).
    assert [line for line in proc.stderr.splitlines() if line.startswith("I")] == []
    samples = proc.stdout.split("\n" + "-" * 40 + "\n")[:-1]
    assert len(samples) == 2 and samples[0] == samples[1]  # greedy: identical rows
    assert samples[0].startswith("ROMEO:") and len(samples[0]) == len("ROMEO:") + 40
