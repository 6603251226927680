"""BERT tasks: MLM+NSP pretraining and sequence classification wired into the train loop."""

import os
import shutil

import jax
import numpy as np
import pytest

from configs import bert_tiny_wikitext, sst2_finetune
from lmjax import workdir as workdir_lib
from lmjax.data import glue, pipeline, tokenizers
from lmjax.tasks import classify, mlm_nsp
from lmjax.train import build, checkpoint, inference, loop, parallel
from tests.conftest import make_task, override


def _bert_config(**overrides):
    config = bert_tiny_wikitext.get_config("test")
    config.model.num_layers = 1
    config.model.emb_dim = 32
    config.model.mlp_dim = 64
    config.log_every_steps = 1
    return override(config, **overrides)


def _losses(workdir, key="train/loss"):
    return {r["step"]: r[key] for r in workdir_lib.read_metrics(workdir) if key in r}


def _model_and_params(config, data):
    task = make_task(config)
    model = task.make_model(data.vocab_size)
    batch = pipeline.eval_batches(data.eval_ds, config.batch_size, 1)[0]
    params = parallel.unbox(task.init_params(model, jax.random.PRNGKey(0), batch))
    return model, params, batch


def test_mlm_loss_ignores_unmasked_and_padded_positions():
    config = _bert_config()
    data = make_task(config).make_data()
    model, params, batch = _model_and_params(config, data)
    # Pad the last 8 positions of every row: no attention to them, no predictions there.
    t = batch["input_ids"].shape[1]
    batch["attention_mask"] = batch["attention_mask"] * (np.arange(t) < t - 8)
    weights = batch["masked_lm_weights"] * (batch["masked_lm_positions"] < t - 8)
    weights[:, -1] = 0.0  # and an unused prediction slot in every row
    batch["masked_lm_weights"] = weights
    loss = make_task(config).loss_fn(model, params, batch, None, train=False)[1]["mlm_loss"]

    # Labels at weight-0 prediction slots do not count.
    changed = dict(batch, masked_lm_ids=np.where(weights > 0, batch["masked_lm_ids"], 7))
    again = make_task(config).loss_fn(model, params, changed, None, train=False)[1]["mlm_loss"]
    np.testing.assert_allclose(again, loss, rtol=1e-6)
    # Tokens at padded positions (attention_mask 0) do not change any prediction.
    pad = batch["attention_mask"] == 0
    assert pad.any()
    changed = dict(batch, input_ids=np.where(pad, 5, batch["input_ids"]))
    again = make_task(config).loss_fn(model, params, changed, None, train=False)[1]["mlm_loss"]
    np.testing.assert_allclose(again, loss, rtol=1e-5)
    # A real masked label does count.
    first = np.argwhere(weights > 0)[0]
    labels = batch["masked_lm_ids"].copy()
    labels[tuple(first)] = (labels[tuple(first)] + 1) % data.vocab_size
    again = make_task(config).loss_fn(
        model, params, dict(batch, masked_lm_ids=labels), None, False
    )[1]
    assert not np.isclose(again["mlm_loss"], loss)


def test_eval_set_is_identical_across_runs_and_train_seeds():
    a = make_task(_bert_config()).make_data()
    b = make_task(_bert_config(seed=5)).make_data()
    ea = pipeline.eval_batches(a.eval_ds, 8, -1)
    eb = pipeline.eval_batches(b.eval_ds, 8, -1)
    assert len(ea) == len(eb) > 1
    for x, y in zip(ea, eb, strict=True):
        for k in x:
            assert x[k].tobytes() == y[k].tobytes(), k


def test_dynamic_masking_gives_an_instance_new_masks_each_epoch():
    config = _bert_config()
    data = make_task(config).make_data()
    n = len(data.train_ds)
    it = pipeline.train_iterator(data.train_ds, n // 2, config.seed, data.batch_fn)
    epochs = [[next(it) for _ in range(2)] for _ in range(2)]

    def masks_by_instance(batches):
        # Identify an instance by its unmasked tokens: positions that are not predictions.
        out = {}
        for b in batches:
            for row in range(len(b["input_ids"])):
                ids = b["input_ids"][row].copy()
                ids[b["masked_lm_positions"][row]] = -1
                key = (ids.tobytes(), b["next_sentence_label"][row])
                out[key] = b["masked_lm_positions"][row].tobytes()
        return out

    first, second = masks_by_instance(epochs[0]), masks_by_instance(epochs[1])
    assert all("masked_lm_positions" in b for b in epochs[0])
    # Re-masked instances rarely keep all their positions (and then match as other keys).
    assert len(set(first) & set(second)) < 0.2 * len(first)


def test_bert_resume_equals_uninterrupted(tmp_path):
    config = _bert_config()
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    loop.train_and_evaluate(config, straight)
    loop.train_and_evaluate(config, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
    loop.train_and_evaluate(config, resumed)
    assert _losses(resumed) == _losses(straight)
    assert _losses(resumed, "eval/mlm_accuracy") == _losses(straight, "eval/mlm_accuracy")
    assert sorted(_losses(straight, "eval/nsp_accuracy")) == [3, 6]


def test_tsv_reader_rejects_a_malformed_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("sentence\tlabel\na fine movie\t1\nno label here\nworse\t0\n")
    with pytest.raises(ValueError, match="line 3"):
        glue.read_tsv(str(path), "sst2")
    path.write_text("text\tlabel\nok\t1\n")
    with pytest.raises(ValueError, match="line 1: .*header 'sentence<TAB>label'"):
        glue.read_tsv(str(path), "sst2")
    examples = glue.read_tsv("sst2_dev", "sst2")
    assert len(examples.sentences_a) == 872 and set(examples.labels.tolist()) == {0, 1}


def test_pairs_are_cls_a_sep_b_sep_with_token_types_and_the_longer_one_trimmed():
    """run_classifier.py's layout: [CLS] A [SEP] B [SEP], types 0 then 1, the longer of A and B
    trimmed from its end one token at a time until the pair fits seq_len."""
    tok = tokenizers.WordPieceTokenizer(
        [*tokenizers.SPECIAL_TOKENS, "a", "b", "c", "d", "e", "f", "g", "h"]
    )
    cls, sep, pad = tok.cls_id, tok.sep_id, tok.pad_id
    a, b, c, d, e, f, g, h = range(5, 13)
    examples = glue.Examples(
        ["a b c d e f", "a", "a b"], ["g h", "b c d e f g h", "c"], np.array([1, 0, 1])
    )
    out = classify.encode_examples(examples, tok, seq_len=8)
    # 8 - 3 = 5 tokens for the pair: (6, 2) -> (3, 2); (1, 7) -> (1, 4); (2, 1) fits.
    np.testing.assert_array_equal(out["input_ids"], [
        [cls, a, b, c, sep, g, h, sep],
        [cls, a, sep, b, c, d, e, sep],
        [cls, a, b, sep, c, sep, pad, pad],
    ])  # fmt: skip
    np.testing.assert_array_equal(out["token_type_ids"], [
        [0, 0, 0, 0, 0, 1, 1, 1],
        [0, 0, 0, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 0, 0],
    ])  # fmt: skip
    np.testing.assert_array_equal(out["attention_mask"].sum(1), [8, 8, 6])
    np.testing.assert_array_equal(out["label"], [1, 0, 1])
    single = classify.encode_examples(glue.Examples(["a b c d e f g h"], None, None), tok, 5)
    np.testing.assert_array_equal(single["input_ids"], [[cls, a, b, c, sep]])
    assert "label" not in single and not single["token_type_ids"].any()


def _tsv(path, rows):
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    return str(path)


def test_holdout_drops_the_phrases_of_held_out_parse_trees(tmp_path):
    """SST-2's training set holds every phrase of each parse tree: a held-out sentence's own
    phrases and the longer phrases around it leave training with it."""
    tree = "the film is a charming and often funny ride"
    rows = [
        (tree, 1),
        ("the film is a charming and often funny ride , if too long", 1),  # contains it
        ("charming and often funny", 1),  # inside it
        ("film", 1),  # inside it (one word)
        ("a dull and tedious exercise in style over substance", 0),
        ("dull and tedious", 0),
        ("a good cast wasted on a bad script", 0),
    ]
    rows.append(("a pleasant surprise", 1))
    examples = glue.read_tsv(_tsv(tmp_path / "t.tsv", rows), "sst2")
    sentences, labels = examples.sentences_a, examples.labels
    # Four examples have 8+ words: hold them all out; only the unrelated phrase may train.
    (train, train_labels), (held, held_labels) = classify.split_holdout(
        sentences, labels, 4, seed=0, min_words=8
    )
    assert train == ["a pleasant surprise"] and train_labels.tolist() == [1]
    assert held_labels.tolist() == [1, 1, 0, 0] and len(held) == 4
    # Two of them: the phrases of the trees drawn leave training, the others' stay.
    (train, _), (held, _) = classify.split_holdout(sentences, labels, 2, seed=0, min_words=8)
    assert len(held) == 2 and held == classify.split_holdout(sentences, labels, 2, 0, 8)[1][0]
    for s in sentences:
        shares_a_tree = any(s in h or h in s for h in held)
        assert (s in train) == (s not in held and not shares_a_tree), s
    with pytest.raises(ValueError, match=r"holdout_size=5 must be in \[0, 4\] \(the training"):
        classify.split_holdout(sentences, labels, 5, 0, 8)


def test_holdout_is_scored_apart_from_the_eval_set(tmp_path, monkeypatch):
    train = [(f"word{i} " * 12, i % 2) for i in range(40)]
    config = sst2_finetune.get_config("test")
    config.data.train_path = _tsv(tmp_path / "train.tsv", train)
    config.data.eval_path = _tsv(tmp_path / "dev.tsv", [("good", 1), ("bad", 0), ("ok", 1)])
    config.data.vocab_path = ""
    config.data.vocab_size = 50
    config.data.holdout_size = 5
    data = make_task(config).make_data()
    assert len(data.train_ds) == 35  # no phrase of one example lies inside another here
    config.data.train_examples = 10  # few labels: a fixed subset of the 35
    few = [make_task(config).make_data() for _ in range(2)]  # the same 10 sentences each time
    texts = [[d.tokenizer.decode(list(r["input_ids"])) for r in d.train_ds] for d in few]
    assert len(texts[0]) == 10 and texts[0] == texts[1]
    config.data.train_examples = 36
    with pytest.raises(ValueError, match=r"train_examples=36 must be in \[1, 35\]"):
        make_task(config).make_data()
    config.data.train_examples = 0
    batch = pipeline.eval_batches(data.eval_ds, 16, -1)[0]
    assert batch["is_holdout"].sum() == 5 and batch["eval_weight"].sum() == 8
    # A stand-in model that predicts class 1 everywhere: dev accuracy 2/3, holdout its share.
    logits = np.stack([np.zeros(16), np.ones(16)], -1).astype(np.float32)
    stub = lambda *a, **k: (logits.argmax(-1), np.zeros(16), logits)  # noqa: E731
    monkeypatch.setattr(classify.Classify, "_losses", stub)
    task = make_task(config)
    sums, outputs = task.eval_metrics(None, None, batch)
    out = {k: float(v / c) for k, (v, c) in sums.items()}
    holdout = batch["label"][batch["is_holdout"] > 0]
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["holdout_accuracy"] == pytest.approx(holdout.mean())
    # GLUE's metric over the whole eval set, from the outputs of the real (weight 1) rows.
    real = batch["eval_weight"] > 0
    corpus = task.corpus_metrics({k: np.asarray(v)[real] for k, v in outputs.items()})
    assert corpus == pytest.approx({"accuracy": 2 / 3, "holdout_accuracy": holdout.mean()})
    config.data.holdout_size = 0
    assert set(make_task(config).eval_metrics(None, None, batch)[0]) == {"loss", "accuracy"}


def test_eval_scores_every_example_once():
    config = sst2_finetune.get_config("test")
    data = make_task(config).make_data()
    batches = pipeline.eval_batches(data.eval_ds, 32, -1)
    assert (
        sum(b["eval_weight"].sum() for b in batches) == 872
    )  # 27 full batches + 8 in a padded one


def test_finetuning_loads_the_pretrained_encoder_and_a_fresh_classifier(tmp_path):
    pretrain = str(tmp_path / "pretrain")
    loop.train_and_evaluate(_bert_config(), pretrain)
    config = sst2_finetune.get_config("test")
    config.init_from = pretrain
    config.num_train_steps = 1
    s = build.setup(config)
    with s.activate():
        data = s.task.make_data()
        model = s.task.make_model(data.vocab_size)
        assert model.cfg.num_layers == 1 and model.cfg.emb_dim == 32  # the checkpoint's sizes
        params = build.build(s, model).init(jax.random.PRNGKey(0))["params"]
        loaded, copied, fresh = checkpoint.load_pretrained_params(pretrain, params)
    assert fresh == ["classifier/dense/bias", "classifier/dense/kernel"]
    assert "pooler/dense/kernel" in copied and "block_0/attn/qkv/kernel" in copied
    # config.init_from_skip: named prefixes keep their fresh init (e.g. a re-initialised pooler).
    skipped, _, fresh = checkpoint.load_pretrained_params(pretrain, params, skip=("pooler/",))
    assert fresh == sorted(["classifier/dense/bias", "classifier/dense/kernel",
                            "pooler/dense/bias", "pooler/dense/kernel"])  # fmt: skip
    assert np.array_equal(skipped["pooler"]["dense"]["kernel"], params["pooler"]["dense"]["kernel"])
    saved = checkpoint.make_manager(pretrain)
    meta = saved.item_metadata(saved.latest_step())["state"]["params"]
    assert meta["tok_embed"]["embedding"].shape == loaded["tok_embed"]["embedding"].shape
    assert not np.allclose(
        loaded["block_0"]["mlp"]["fc"]["kernel"], params["block_0"]["mlp"]["fc"]["kernel"]
    )
    # The fine-tuning run itself (vocabulary from the pretraining workdir) trains and evaluates.
    final = loop.train_and_evaluate(config, str(tmp_path / "finetune"))
    assert 0.0 <= final["eval/accuracy"] <= 1.0
    # The fine-tuned workdir records the pretrained architecture: it loads without init_from.
    shutil.rmtree(pretrain)
    model, params, _ = inference.load_model(str(tmp_path / "finetune"), task="classify")
    assert model.cfg.emb_dim == 32 and params["classifier"]["dense"]["kernel"].shape == (32, 2)
    # ... and resumes without it: the same command, two steps further.
    config.num_train_steps = 3
    loop.train_and_evaluate(config, str(tmp_path / "finetune"))
    assert workdir_lib.checkpoint_steps(str(tmp_path / "finetune")) == [1, 3]


def test_init_from_with_other_shapes_names_the_parameter(tmp_path):
    pretrain = str(tmp_path / "pretrain")
    loop.train_and_evaluate(_bert_config(), pretrain)
    config = _bert_config(**{"model.mlp_dim": 48, "num_train_steps": 1})
    config.init_from = pretrain
    with pytest.raises(
        ValueError, match=r"mlp/fc/bias has shape \(64,\) in the checkpoint and \(48,\)"
    ):
        loop.train_and_evaluate(config, str(tmp_path / "other"))


def test_static_whole_word_masking_trains(tmp_path):
    """dynamic_masking=False: each of the dupe_factor copies is masked once at creation."""
    config = _bert_config(
        **{"data.dynamic_masking": False, "data.whole_word_masking": True, "data.dupe_factor": 2}
    )
    data = make_task(config).make_data()
    assert data.batch_fn is None
    rows = [data.train_ds[i] for i in range(20)]
    assert set(rows[0]) == set(mlm_nsp.MODEL_KEYS)
    masked = np.concatenate(
        [r["input_ids"][r["masked_lm_positions"][r["masked_lm_weights"] > 0]] for r in rows]
    )
    assert len(masked) >= 20 and 0.5 < (masked == data.tokenizer.mask_id).mean() < 1.0
    config.num_train_steps = 2
    final = loop.train_and_evaluate(config, str(tmp_path / "static"))
    assert np.isfinite(final["eval/mlm_loss"])


def test_init_from_must_be_a_bert_whose_classifier_fits_or_is_skipped(tmp_path):
    """Checked when the config is resolved, before anything is read or written."""
    from configs import glue as glue_config
    from configs import gpt_shakespeare_char
    from lmjax import tasks

    gpt, mnli_like = str(tmp_path / "gpt"), str(tmp_path / "three_labels")
    workdir_lib.save_config(gpt_shakespeare_char.get_config(), gpt)
    three = glue_config.get_config("rte")
    three.num_classes = 3
    workdir_lib.save_config(three, mnli_like)
    config = glue_config.get_config("mrpc")
    config.init_from = gpt
    with pytest.raises(ValueError, match="trained task 'clm'; fine-tuning needs a BERT workdir"):
        tasks.resolve_config(config)
    config.init_from = mnli_like
    with pytest.raises(ValueError, match="3-output classifier and this run needs 2: pass"):
        tasks.resolve_config(config)
    config.init_from_skip = ("classifier/",)
    assert tasks.resolve_config(config).pretrained.model.emb_dim == 128
    config.num_classes = 3
    with pytest.raises(ValueError, match="num_classes=3 does not fit mrpc"):
        tasks.resolve_config(config)
