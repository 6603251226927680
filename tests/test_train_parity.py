"""Training parity with an independent implementation: lmjax's train step against Hugging Face
`transformers` in torch (`benchmarks/train_parity.py`), from the same weights on the same batches,
step by step, for BERT (MLM + NSP) and GPT-2. The long check (hundreds of steps at the shapes
the configs train) is the script itself; docs/train_parity.md has its figures.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import bert_tiny_wikitext
from lmjax.convert import hf
from lmjax.train import build, parallel, step
from tests.conftest import REPO, override, tiny_config

spec = importlib.util.spec_from_file_location(
    "train_parity", os.path.join(REPO, "benchmarks", "train_parity.py")
)
train_parity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_parity)

# Twenty float32 steps agree to ~5e-7 relative (losses, gradient norms and parameters); a
# difference in the recipe shows as 1e-5 or more (an embedding table decayed on one side only:
# 5e-5 in the loss, 1e-4 in the parameters).
RTOL = 1e-5
STEPS = 20
SCHEDULE = {"num_train_steps": STEPS, "warmup_steps": 5}  # warmup, peak and cosine all in 20


def _bert_config():
    # Every embedding table decayed and a strong decay, so that the decay mask is exercised.
    return override(
        bert_tiny_wikitext.get_config("test"),
        **SCHEDULE,
        **{"optimizer.decay_embeddings": True, "optimizer.weight_decay": 0.3},
    )


def _gpt_config():
    return tiny_config(**SCHEDULE, **{"model.use_bias": True})  # GPT-2 has biases


@pytest.mark.parametrize("make_config", [_bert_config, _gpt_config], ids=["bert", "gpt2"])
def test_training_matches_transformers_step_by_step(make_config):
    history = train_parity.run(make_config(), STEPS)
    ours, theirs = np.array(history["lmjax_loss"]), np.array(history["torch_loss"])
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, err_msg="per-step losses differ")
    np.testing.assert_allclose(
        history["lmjax_grad_norm"], history["torch_grad_norm"], rtol=RTOL, err_msg="grad norms"
    )
    assert history["param_rel_norm"] < RTOL, history["param_rel_norm"]
    assert ours[-5:].mean() < ours[:5].mean() - 0.2, ours  # it trained


def test_the_schedule_is_optax_s():
    config = override(tiny_config(), num_train_steps=50, warmup_steps=10)
    schedule = step.learning_rate_schedule(config)
    ours = [train_parity.learning_rate(config, s) for s in range(60)]
    np.testing.assert_allclose(ours, [float(schedule(s)) for s in range(60)], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("decay_embeddings", [False, True])
def test_the_decayed_tensors_are_those_transformers_decays(decay_embeddings, tmp_path):
    """lmjax's weight-decay mask, exported as Hugging Face tensors, decays exactly the tensors
    BERT's recipe decays in torch (Linear weights; the embedding tables when asked)."""
    config = override(_bert_config(), **{"optimizer.decay_embeddings": decay_embeddings})
    s = build.setup(config, devices=jax.devices()[:1])
    model = s.task.make_model(97)
    params = parallel.unbox(
        jax.eval_shape(
            lambda: s.task.init_params(model, jax.random.PRNGKey(0), s.task.fake_batch(97))
        )
    )
    mask = step._decay_mask(decay_embeddings)(params)
    as_arrays = jax.tree.map(lambda m, p: jnp.full(p.shape, float(m)), mask, params)
    out = str(tmp_path)
    hf.export_model(model, {"params": as_arrays}, out)
    ours = {n for n, x in hf.read_tensors(out).items() if x.max() == 1.0}

    torch_model = train_parity.ARCHITECTURES["mlm_nsp"].from_pretrained(out)
    optimizer, _ = train_parity.torch_optimizer(torch_model, config)
    names = {id(p): n for n, p in torch_model.named_parameters()}
    theirs = {
        names[id(p)] for g in optimizer.param_groups if g["weight_decay"] for p in g["params"]
    }
    assert ours == theirs, (sorted(ours - theirs), sorted(theirs - ours))
    assert any("token_type" in n for n in ours) == decay_embeddings
