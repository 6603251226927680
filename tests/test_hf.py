"""Hugging Face interop (lmjax.convert.hf): logits parity with transformers on imported BERT and
GPT-2 checkpoints of several shapes, export → from_pretrained, import → export → import, errors,
and the command line (experiments/convert.py, sample.py, SST-2 fine-tuning through init_from).

Every model is random, built from a transformers config and saved with `save_pretrained`: nothing
is downloaded.
"""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import traverse_util

from configs import bert_tiny_wikitext, sst2_finetune
from lmjax import sampling
from lmjax.convert import hf, hf_families
from lmjax.data import corpora, tokenizers
from lmjax.models.transformer import Transformer, TransformerConfig
from lmjax.train import checkpoint, loop, parallel
from tests.conftest import make_task, override, run_script

ATOL = 1e-4  # float32 logits, lmjax vs transformers

# Shapes the parity tests use: two per family, with every option the import reads varied.
GPT2_SHAPES = {
    "small": dict(n_positions=64, n_embd=32, n_layer=2, n_head=2),  # GPT-2's defaults otherwise
    "wide": dict(
        vocab_size=251,
        n_positions=40,
        n_embd=48,
        n_layer=3,
        n_head=4,
        n_inner=80,
        activation_function="gelu",
        layer_norm_epsilon=1e-6,
        reorder_and_upcast_attn=True,
    ),
}
BERT_SHAPES = {
    "small": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    ),
    "wide": dict(
        vocab_size=97,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=100,
        max_position_embeddings=40,
        type_vocab_size=3,
        layer_norm_eps=1e-7,
        hidden_act="gelu_new",
    ),
}


#### Fixtures: random Hugging Face checkpoints on disk


def _gpt2_tokenizer():
    """A small byte-level BPE (GPT-2's kind) trained on the embedded Shakespeare."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([corpora.read_text("tinyshakespeare")[:100_000]], trainer)
    eot = "<|endoftext|>"
    return transformers.GPT2TokenizerFast(
        tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot
    )


def _sst2_rows(n):
    return corpora.read_text("sst2_train").split("\n")[1 : n + 1]


def _save(model, path):
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """{name: directory} of random transformers models saved with save_pretrained."""
    root = tmp_path_factory.mktemp("hf")
    dirs = {}
    torch.manual_seed(0)
    gpt2_tok = _gpt2_tokenizer()
    eot = gpt2_tok.eos_token_id
    for name, shape in GPT2_SHAPES.items():
        shape = {"vocab_size": len(gpt2_tok), **shape}
        config = transformers.GPT2Config(
            **shape, initializer_range=0.2, bos_token_id=eot, eos_token_id=eot
        )
        dirs[f"gpt2_{name}"] = _save(transformers.GPT2LMHeadModel(config), root / f"gpt2_{name}")
    gpt2_tok.save_pretrained(dirs["gpt2_small"])

    wordpiece = tokenizers.WordPieceTokenizer.train(
        [r.split("\t")[0] for r in _sst2_rows(2000)], 300
    )
    bert = lambda shape, **kw: transformers.BertConfig(  # noqa: E731
        **{"vocab_size": wordpiece.vocab_size, **BERT_SHAPES[shape]}, initializer_range=0.1, **kw
    )
    for name in BERT_SHAPES:
        model = transformers.BertForPreTraining(bert(name))
        dirs[f"bert_{name}"] = _save(model, root / f"bert_{name}")
    model = transformers.BertForSequenceClassification(bert("wide", num_labels=3))
    dirs["bert_cls_wide"] = _save(model, root / "bert_cls_wide")
    # num_labels=1: a regression head (GLUE's STS-B), as transformers reads it.
    model = transformers.BertForSequenceClassification(bert("small", num_labels=1))
    dirs["bert_cls_regression"] = _save(model, root / "bert_cls_regression")
    dirs["bert_base"] = _save(transformers.BertModel(bert("small")), root / "bert_base")
    with open(os.path.join(dirs["bert_small"], "vocab.txt"), "w") as f:
        f.writelines(piece + "\n" for piece in wordpiece.vocab)
    with open(os.path.join(dirs["bert_small"], "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True}, f)
    return dirs


def _load_hf(path):
    """The transformers model of a directory, in eval mode."""
    arch = json.load(open(os.path.join(path, "config.json")))["architectures"][0]
    return getattr(transformers, arch).from_pretrained(path).eval()


def _flat(variables):
    return traverse_util.flatten_dict(variables["params"], sep="/")


def _assert_same_variables(a, b):
    a, b = _flat(a), _flat(b)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name])), name


def _padded_inputs(vocab_size, batch=3, length=17, seed=0):
    """Random ids, token types 0/1 (a second segment from the middle) and an attention mask with
    right padding of different lengths (one row unpadded)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, (batch, length))
    token_types = np.repeat((np.arange(length) >= length // 2)[None], batch, 0).astype(np.int64)
    mask = (np.arange(length)[None] < np.array([length, length - 5, 6])[:batch, None]).astype(int)
    return ids, token_types, mask


def _t(array):
    return torch.as_tensor(np.asarray(array))


#### Parity, export, round trip


def test_defaults_are_transformers_defaults():
    for cls, defaults in (
        (transformers.GPT2Config, hf_families.GPT2_DEFAULTS),
        (transformers.BertConfig, hf_families.BERT_DEFAULTS),
    ):
        reference = cls().to_dict()
        assert {k: reference[k] for k in defaults} == defaults, cls.__name__


def _check_export_round_trip(model, variables, outputs_fn, expected, tmp_path):
    """export → from_pretrained gives the original's outputs (`outputs_fn(hf_model)`);
    export → import gives the same variables, bit for bit."""
    hf.export_model(model, variables, str(tmp_path / "export"))
    for name, a in outputs_fn(_load_hf(str(tmp_path / "export"))).items():
        np.testing.assert_allclose(a, expected[name], atol=1e-5, err_msg=name)
    _, again = hf.import_model(str(tmp_path / "export"))
    _assert_same_variables(variables, again)


@pytest.mark.parametrize("shape", sorted(GPT2_SHAPES))
def test_gpt2_logits_match_transformers(hf_dirs, shape, tmp_path):
    path = hf_dirs[f"gpt2_{shape}"]
    reference = _load_hf(path)
    model, variables = hf.import_model(path)
    assert model.cfg.vocab_size == reference.config.vocab_size  # odd vocabularies stay unpadded
    ids, _, mask = _padded_inputs(reference.config.vocab_size)

    def hf_logits(m):
        with torch.no_grad():
            return {"logits": m(_t(ids), attention_mask=_t(mask)).logits.numpy()}

    expected = hf_logits(reference)
    logits = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(ids)))
    real = mask.astype(bool)  # right padding: causal logits of real tokens do not see it
    np.testing.assert_allclose(logits[real], expected["logits"][real], atol=ATOL)
    _check_export_round_trip(model, variables, hf_logits, expected, tmp_path)


@pytest.mark.parametrize(
    "name", ["bert_small", "bert_wide", "bert_cls_wide", "bert_cls_regression"]
)
def test_bert_logits_match_transformers(hf_dirs, name, tmp_path):
    path = hf_dirs[name]
    reference = _load_hf(path)
    model, variables = hf.import_model(path)
    ids, token_types, mask = _padded_inputs(reference.config.vocab_size)

    def hf_outputs(m):
        with torch.no_grad():
            out = m(_t(ids), token_type_ids=_t(token_types), attention_mask=_t(mask))
        if "cls" in name:
            return {"logits": out.logits.numpy()}
        return {
            "mlm_logits": out.prediction_logits.numpy(),
            "nsp_logits": out.seq_relationship_logits.numpy(),
        }

    expected = hf_outputs(reference)
    out = jax.jit(model.apply)(
        variables,
        jnp.asarray(ids),
        token_type_ids=jnp.asarray(token_types),
        attention_mask=jnp.asarray(mask),
    )
    assert sorted(out) == sorted(expected)
    if "cls" in name:  # 3 classes, or 1 regression output
        assert out["logits"].shape == (3, reference.config.num_labels)
    for key, value in expected.items():
        assert np.abs(value).max() > 0.1  # not a trivially small comparison
        np.testing.assert_allclose(np.asarray(out[key]), value, atol=ATOL, err_msg=key)
    _check_export_round_trip(model, variables, hf_outputs, expected, tmp_path)


def test_bert_model_imports_the_encoder_and_initialises_the_heads(hf_dirs):
    path = hf_dirs["bert_base"]
    reference = _load_hf(path)
    model, variables = hf.import_model(path)
    assert "mlm_head" in variables["params"] and "nsp_head" in variables["params"]
    ids, token_types, mask = _padded_inputs(reference.config.vocab_size, seed=1)
    with torch.no_grad():
        out = reference(_t(ids), token_type_ids=_t(token_types), attention_mask=_t(mask))
    apply = functools.partial(model.apply, capture_intermediates=True, mutable=["intermediates"])
    _, captured = jax.jit(apply)(
        variables,
        jnp.asarray(ids),
        token_type_ids=jnp.asarray(token_types),
        attention_mask=jnp.asarray(mask),
    )
    captured = captured["intermediates"]
    last = captured[f"block_{model.cfg.num_layers - 1}"]["__call__"][0]
    np.testing.assert_allclose(np.asarray(last), out.last_hidden_state.numpy(), atol=ATOL)
    pooled = captured["pooler"]["__call__"][0]
    np.testing.assert_allclose(np.asarray(pooled), out.pooler_output.numpy(), atol=ATOL)


def test_pytorch_bin_sharded_and_bfloat16_checkpoints_read_the_same(hf_dirs, tmp_path):
    path = hf_dirs["bert_wide"]
    _, expected = hf.import_model(path)
    reference = _load_hf(path)
    reference.save_pretrained(tmp_path / "bin", safe_serialization=False)
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert os.path.exists(tmp_path / "bin" / "pytorch_model.bin")
    assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
    for variant in ("bin", "sharded"):
        _, variables = hf.import_model(str(tmp_path / variant))
        _assert_same_variables(variables, expected)
    # bfloat16 safetensors (numpy has no bfloat16) read as the same values in float32.
    reference.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    reference.to(torch.float32).save_pretrained(tmp_path / "rounded")
    _, variables = hf.import_model(str(tmp_path / "bf16"))
    _assert_same_variables(variables, hf.import_model(str(tmp_path / "rounded"))[1])


def test_gpt2_model_without_lm_head_reads_the_same(hf_dirs, tmp_path):
    """GPT2Model's tensors have no `transformer.` prefix; its LM head is the tied embedding."""
    path = hf_dirs["gpt2_wide"]
    _load_hf(path).transformer.save_pretrained(tmp_path)
    model, variables = hf.import_model(str(tmp_path))
    assert type(model) is Transformer
    _assert_same_variables(variables, hf.import_model(path)[1])


@pytest.mark.parametrize("vocab_multiple", [1, 64])
def test_lmjax_gpt_without_biases_exports_as_gpt2(tmp_path, vocab_multiple):
    """nanoGPT's recipe (no biases) exports with zero biases; transformers gives its logits.
    A token table padded to 128 rows exports its 65 real ones."""
    cfg = TransformerConfig(
        vocab_size=65, max_len=24, num_layers=2, num_heads=4, emb_dim=32, mlp_dim=96, init_std=0.1,
        vocab_multiple=vocab_multiple,
    )  # fmt: skip
    model = Transformer(cfg)
    ids = np.random.default_rng(0).integers(0, 65, (2, 24))
    params = parallel.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(ids))["params"])
    hf.export_model(model, {"params": params}, str(tmp_path))
    with torch.no_grad():
        expected = _load_hf(str(tmp_path))(_t(ids)).logits.numpy()
    logits = jax.jit(model.apply)({"params": params}, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(logits), expected, atol=ATOL)


#### Errors


def _copy(path, tmp_path):
    return shutil.copytree(path, tmp_path / "copy")


def _edit_config(path, **changes):
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    config.update(changes)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)


def _edit_tensors(path, edit):
    file = os.path.join(path, "model.safetensors")
    tensors = safetensors.numpy.load_file(file)
    edit(tensors)
    safetensors.numpy.save_file(tensors, file, metadata={"format": "pt"})


@pytest.mark.parametrize(
    "source, config_changes, match",
    [
        ("bert_wide", {"architectures": ["RobertaForMaskedLM"]}, "RobertaForMaskedLM"),
        ("bert_wide", {"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ("bert_wide", {"hidden_act": "relu"}, "hidden_act='relu'"),
        ("gpt2_wide", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer"),
        ("gpt2_wide", {"scale_attn_weights": False}, "scale_attn_weights"),
        ("gpt2_wide", {"n_inner": 64}, r"transformer\.h\.0\.mlp\.c_fc\.weight has shape"),
        ("bert_wide", {"max_position_embeddings": 50}, "position_embeddings.weight has shape"),
        ("bert_wide", {"intermediate_size": 90}, r"layer\.0\.intermediate\.dense\.weight"),
    ],
)
def test_unsupported_configs_and_mismatched_shapes_name_the_key(
    hf_dirs, tmp_path, source, config_changes, match
):
    path = _copy(hf_dirs[source], tmp_path)
    _edit_config(path, **config_changes)
    with pytest.raises(ValueError, match=match):
        hf.import_model(path)


def test_missing_and_unexpected_tensors_are_named(hf_dirs, tmp_path):
    path = _copy(hf_dirs["gpt2_wide"], tmp_path)
    _edit_tensors(path, lambda t: t.pop("transformer.h.2.ln_2.bias"))
    with pytest.raises(ValueError, match=r"no transformer\.h\.2\.ln_2\.bias \(lmjax block_2/ln_"):
        hf.import_model(path)
    _edit_tensors(path, lambda t: t.update({"transformer.h.2.ln_2.bias": np.zeros(48, np.float32)}))
    hf.import_model(path)
    _edit_tensors(path, lambda t: t.update({"transformer.h.0.crossattention.q": np.zeros(2)}))
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.crossattention\.q has no place"):
        hf.import_model(path)


#### Command line: convert.py, sample.py, SST-2 fine-tuning, export


def test_sample_py_greedy_equals_transformers_generate(hf_dirs, tmp_path):
    path, workdir = hf_dirs["gpt2_small"], str(tmp_path / "gpt2")
    run_script("convert.py", "import", f"--hf_dir={path}", f"--workdir={workdir}")
    prompt, num_new = "ROMEO:", 24
    proc = run_script(
        "sample.py",
        f"--workdir={workdir}",
        f"--prompt={prompt}",
        f"--max_new_tokens={num_new}",
        "--temperature=0",
    )
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    prompt_ids = hf_tokenizer(prompt, return_tensors="pt").input_ids
    reference = _load_hf(path)
    generated = reference.generate(
        prompt_ids, do_sample=False, max_new_tokens=num_new, eos_token_id=None, pad_token_id=0
    )
    expected_ids = generated[0, prompt_ids.shape[1] :].tolist()
    assert len(expected_ids) == num_new and len(set(expected_ids)) > 2
    # Token for token through the library, and the same text through the command line.
    model, params, tokenizer = hf.load_workdir(workdir)
    assert tokenizer.encode(prompt).tolist() == prompt_ids[0].tolist()
    ids = sampling.generate(
        model, params, tokenizer.encode(prompt)[None], num_new, jax.random.PRNGKey(0), 0.0
    )
    assert ids[0].tolist() == expected_ids
    sample = proc.stdout.split("\n" + "-" * 40 + "\n")[0]
    assert sample == prompt + tokenizer.decode(expected_ids)
    # Back to Hugging Face: the tokenizer files and the model load and agree.
    exported = str(tmp_path / "gpt2_hf")
    hf.export_workdir(workdir, exported)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    assert hf_tokenizer(prompt).input_ids == prompt_ids[0].tolist()
    again = _load_hf(exported).generate(
        prompt_ids, do_sample=False, max_new_tokens=num_new, eos_token_id=None, pad_token_id=0
    )
    assert again[0, prompt_ids.shape[1] :].tolist() == expected_ids


def test_fine_tune_imported_bert_on_sst2_and_export(hf_dirs, tmp_path):
    path, pretrained = hf_dirs["bert_small"], str(tmp_path / "bert")
    # What `convert.py import` does (run as a command in the GPT-2 test above).
    task = hf.import_to_workdir(path, pretrained, lambda task: bert_tiny_wikitext.get_config())
    assert task == "mlm_nsp"

    # init_from copies every imported encoder and pooler weight; only the classifier is new.
    tsv = tmp_path / "sst2.tsv"
    tsv.write_text("sentence\tlabel\n" + "\n".join(_sst2_rows(48)) + "\n")
    config = sst2_finetune.get_config("test")
    config = override(
        config, init_from=pretrained, **{"data.train_path": str(tsv), "data.eval_path": str(tsv)}
    )
    vocab_size = tokenizers.load_tokenizer(pretrained).vocab_size
    task = make_task(config)
    model = task.make_model(vocab_size)
    batch = task.fake_batch(vocab_size)
    fresh = parallel.unbox(task.init_params(model, jax.random.PRNGKey(1), batch))
    _, copied, initialised = checkpoint.load_pretrained_params(pretrained, fresh)
    assert initialised == ["classifier/dense/bias", "classifier/dense/kernel"]
    imported = _flat(hf.import_model(path)[1])
    assert sorted(copied) == sorted(n for n in imported if not n.startswith(("mlm_", "nsp_")))

    workdir = str(tmp_path / "sst2")
    metrics = loop.train_and_evaluate(config, workdir)
    assert np.isfinite(metrics["eval/loss"])

    exported = str(tmp_path / "sst2_hf")
    run_script("convert.py", "export", f"--workdir={workdir}", f"--hf_dir={exported}")
    model, params, tokenizer = hf.load_workdir(workdir)
    ids, token_types, mask = _padded_inputs(tokenizer.vocab_size, length=20)
    with torch.no_grad():
        hf_model = _load_hf(exported)
        expected = hf_model(_t(ids), token_type_ids=_t(token_types), attention_mask=_t(mask))
    expected = expected.logits.numpy()
    logits = jax.jit(model.apply)({"params": params}, ids, token_types, mask)["logits"]
    np.testing.assert_allclose(np.asarray(logits), expected, atol=ATOL)
    # transformers' tokenizer from the exported files encodes as lmjax's does.
    sentence = _sst2_rows(1)[0].split("\t")[0]
    hf_ids = transformers.AutoTokenizer.from_pretrained(exported)(sentence).input_ids
    assert hf_ids == [tokenizer.cls_id, *tokenizer.encode(sentence).tolist(), tokenizer.sep_id]


@pytest.mark.parametrize("name,glue_task", [("bert_cls_regression", "stsb"), ("bert_cls_3", "")])
def test_imported_classifier_workdirs_load_with_their_head(hf_dirs, name, glue_task, tmp_path):
    """A regression head imports as an STS-B workdir; a 3-class one (no GLUE task lmjax reads)
    as a workdir that loads and exports, and that fine-tuning starts from with a fresh head."""
    from lmjax import workdir as workdir_lib
    from lmjax.train import inference

    path = str(tmp_path / "hf")
    if name == "bert_cls_3":
        small = hf_dirs["bert_cls_regression"]
        config = transformers.BertConfig.from_pretrained(small, num_labels=3)
        transformers.BertForSequenceClassification(config).save_pretrained(path)
    else:
        shutil.copytree(hf_dirs[name], path)
    for f in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(hf_dirs["bert_small"], f), path)
    workdir = str(tmp_path / "imported")
    assert (
        hf.import_to_workdir(path, workdir, lambda task: sst2_finetune.get_config()) == "classify"
    )
    config = workdir_lib.load_config(workdir)
    assert config.data.glue_task == glue_task
    model, params, _ = inference.load_model(workdir)
    _, variables = hf.import_model(path)
    ids, token_types, mask = _padded_inputs(model.cfg.vocab_size)
    inputs = dict(token_type_ids=jnp.asarray(token_types), attention_mask=jnp.asarray(mask))
    expected = model.apply(variables, jnp.asarray(ids), **inputs)["logits"]
    got = model.apply({"params": params}, jnp.asarray(ids), **inputs)["logits"]
    assert got.shape == (3, config.num_classes)
    np.testing.assert_allclose(got, expected, atol=1e-6)
