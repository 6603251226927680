"""BLiMP (lmjax.evals.blimp, lmjax.evals.scoring, experiments/blimp.py).

Sentence scores equal those of transformers on random lmjax models exported to Hugging Face
(GPT-2: sums of log-softmax; BERT: PLL and PLL-word-l2r written here in plain torch, with
transformers' own tokenizer and word ids), in one window and in several; the masked copies a
masked LM sees; the strict tie rule; paradigm-mean aggregation and the paper's rows; the shipped
data; the command line on a trained and on an imported workdir.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from configs import bert_tiny_wikitext, gpt_shakespeare_char
from lmjax import errors
from lmjax.convert import hf
from lmjax.data import tokenizers
from lmjax.evals import blimp, scoring
from lmjax.models import bert
from lmjax.models.transformer import Transformer, TransformerConfig
from lmjax.train import parallel
from tests.conftest import run_script

ATOL = 1e-4  # float32 sums of ~10-60 log-probs, lmjax vs transformers


def _sentences(pairs):
    return [p.good for p in pairs] + [p.bad for p in pairs]


@pytest.fixture(scope="module", autouse=True)
def torch_on_one_thread():
    """torch's tiny forward passes: 2-3 ms on one thread, 40-130 ms on two while XLA's thread
    pool holds the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs():
    """3 pairs of each of the 67 paradigms (201 pairs)."""
    return blimp.read_pairs(limit=3)


@pytest.fixture(scope="module")
def vocab_text():
    return _sentences(blimp.read_pairs(limit=20))


def _params(model, std=0.2):
    """Random parameters of `model`'s shapes: normal(0, std), LayerNorm scales around 1. Drawn
    by numpy: compiling the model's init costs ~10 s of XLA:CPU time."""
    ids = jnp.zeros((1, 8), jnp.int32)
    shapes = parallel.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), ids)["params"])
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        x = rng.normal(0, std, leaf.shape).astype(np.float32)
        return x + 1 if path[-1].key == "scale" else x

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _decisions_agree(got_good, got_bad, ref_good, ref_bad):
    """Same correct/tie decisions wherever the reference is not within rounding of a tie."""
    clear = np.abs(ref_good - ref_bad) > 1e-3
    assert np.mean(clear) > 0.9
    for a, b in zip(blimp.decide(got_good, got_bad), blimp.decide(ref_good, ref_bad), strict=True):
        np.testing.assert_array_equal(a[clear], b[clear])
    correct = blimp.decide(ref_good, ref_bad)[0]
    assert 0.2 < np.mean(correct) < 0.8  # a random model: both kinds of decision are tested


#### Causal LM: transformers' GPT-2


@pytest.fixture(scope="module")
def gpt(tmp_path_factory, vocab_text):
    """(lmjax model, params, tokenizer, exported Hugging Face directory) of a random GPT with
    peaked predictions (weights of std 0.2) and a byte-level BPE learnt on BLiMP sentences."""
    tokenizer = tokenizers.HFTokenizer.train_byte_level_bpe("\n".join(vocab_text), 1000)
    cfg = TransformerConfig(
        vocab_size=tokenizer.vocab_size,
        max_len=64,
        num_layers=2,
        num_heads=2,
        emb_dim=32,
        mlp_dim=64,
        use_bias=True,  # as GPT-2, and as the workdir imported from the export reads it
    )
    model = Transformer(cfg)
    params = _params(model)
    path = str(tmp_path_factory.mktemp("gpt_hf"))
    hf.export_model(model, {"params": params}, path, tokenizer)
    return model, params, tokenizer, path


def _gpt2_reference(path, sentences, windows_of=None):
    """log p(sentence) after <|endoftext|> from transformers, tokenized by transformers; with
    `windows_of(ids)`, the sum over (tokens, first) windows of the targets from `first` on."""
    model = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"))
    start = tok.convert_tokens_to_ids("<|endoftext|>")
    rows = []  # (sentence, tokens, first scored target)
    for i, s in enumerate(sentences):
        ids = tok(s, add_special_tokens=False).input_ids
        windows = windows_of(ids) if windows_of else [([start, *ids], 0)]
        rows += [(i, list(tokens), first) for tokens, first in windows]
    # One batch, padded on the right: a causal model's real positions do not see the padding.
    x = torch.zeros((len(rows), max(len(t) for _, t, _ in rows)), dtype=torch.long)
    for r, (_, tokens, _) in enumerate(rows):
        x[r, : len(tokens)] = torch.as_tensor(tokens)
    with torch.no_grad():
        logp = torch.log_softmax(model(x).logits.double(), -1)
    out = np.zeros(len(sentences))
    for r, (i, tokens, first) in enumerate(rows):
        t = torch.arange(first, len(tokens) - 1)
        out[i] += logp[r, t, x[r, t + 1]].sum().item()
    return out


def test_gpt_sentence_logprobs_match_transformers(gpt, pairs):
    model, params, tokenizer, path = gpt
    sentences = _sentences(pairs)
    got = scoring.score_sentences(model, params, tokenizer, sentences)
    assert list(got) == ["logp"]
    reference = _gpt2_reference(path, sentences)
    np.testing.assert_allclose(got["logp"], reference, atol=ATOL, rtol=0)
    n = len(pairs)
    _decisions_agree(got["logp"][:n], got["logp"][n:], reference[:n], reference[n:])


def test_gpt_sentences_longer_than_the_positions_are_scored_in_windows(gpt, pairs):
    """The same weights with 8 positions: transformers over the same windows."""
    model, params, tokenizer, path = gpt
    short = Transformer(dataclasses.replace(model.cfg, max_len=8))
    short_params = {**params, "pos_embed": params["pos_embed"][:8]}
    sentences = [p.good for p in pairs[::20]]
    got = scoring.score_sentences(short, short_params, tokenizer, sentences)
    start = scoring.start_id(tokenizer)
    windows_of = lambda ids: scoring.causal_windows(np.asarray(ids), start, 8)  # noqa: E731
    reference = _gpt2_reference(path, sentences, windows_of)
    assert max(len(windows_of(tokenizer.encode(s))) for s in sentences) >= 3
    np.testing.assert_allclose(got["logp"], reference, atol=ATOL, rtol=0)
    # The full context scores differently: the windows are not a no-op.
    full = scoring.score_sentences(model, params, tokenizer, sentences)["logp"]
    assert np.max(np.abs(full - got["logp"])) > 0.1


@pytest.mark.parametrize("max_len", [1, 2, 5, 8, 40])
def test_causal_windows_score_each_token_once_with_half_a_window_of_context(max_len):
    start, ids = 7, np.arange(100, 137)  # 37 distinct tokens after the start token
    x = [start, *ids]
    scored, rows = [], scoring.causal_windows(ids, start, max_len)
    for tokens, first in rows:
        assert 2 <= len(tokens) <= max_len + 1  # max_len inputs, their targets one ahead
        offset = x.index(int(tokens[0]))
        assert list(tokens) == x[offset : offset + len(tokens)]
        for j in range(first, len(tokens) - 1):
            target = offset + j + 1
            scored.append(target)
            assert j + 1 >= min(target, max(max_len // 2, 1))  # tokens of context
    assert scored == list(range(1, len(x)))
    if max_len >= len(ids):
        assert len(rows) == 1 and rows[0][1] == 0


def test_start_token_of_each_tokenizer(gpt):
    assert scoring.start_id(gpt[2]) == gpt[2].token_to_id("<|endoftext|>")
    assert scoring.start_id(tokenizers.CharTokenizer("\n abc")) == 0
    with pytest.raises(errors.InputError, match=r'no a newline "\\n"'):
        scoring.start_id(tokenizers.CharTokenizer(" abc"))
    wordpiece = tokenizers.WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])
    assert scoring.start_id(wordpiece) == 2  # [CLS]


def test_a_gpt_on_bert_s_wordpiece_tokens_trains_and_is_scored_after_cls(tmp_path):
    """The causal task reads a WordPiece vocab.txt (the tokens a BERT run on the same text
    sees); its workdir keeps that vocabulary and BLiMP scores its sentences after [CLS]."""
    from lmjax.train import loop
    from tests.conftest import override, tiny_config

    config = override(
        tiny_config(num_train_steps=2, log_every_steps=1, eval_every_steps=2, eval_steps=1),
        **{"data.tokenizer": "wikitext2_vocab_8k", "checkpoint_every_steps": 1},
    )
    workdir = str(tmp_path / "gpt_wordpiece")
    loop.train_and_evaluate(config, workdir)
    summary = blimp.evaluate(workdir, limit=2)
    tokenizer = tokenizers.load_tokenizer(workdir)
    assert isinstance(tokenizer, tokenizers.WordPieceTokenizer)
    assert tokenizer.vocab_size == 8000
    assert summary["num_pairs"] == 2 * 67
    assert 0.0 <= summary["overall"] <= 1.0
    # The curve: every checkpoint, with the tokens trained on by then.
    rows = blimp.curve(workdir, limit=2)
    assert [(r["step"], r["tokens"]) for r in rows] == [(1, 8 * 16), (2, 2 * 8 * 16)]
    assert rows[-1]["overall"] == summary["overall"]
    json_file, png = blimp.save_curve(rows, str(tmp_path))
    with open(json_file) as f, open(png, "rb") as g:
        assert json.load(f) == rows and g.read(4) == b"\x89PNG"


#### Masked LM: pseudo-log-likelihood against plain torch


@pytest.fixture(scope="module")
def bert_scores(tmp_path_factory, vocab_text, pairs):
    """(exported directory, lmjax scores, reference scores) of a random BERT (std 0.2) with a
    1,000-piece WordPiece vocabulary: many words are cut into ## pieces."""
    tokenizer = tokenizers.WordPieceTokenizer.train(vocab_text, 1000)
    cfg = bert.bert_config(
        tokenizer.vocab_size,
        max_len=128,
        num_layers=2,
        num_heads=2,
        emb_dim=32,
        mlp_dim=64,
    )
    model = bert.BertForPreTraining(cfg)
    params = _params(model)
    path = str(tmp_path_factory.mktemp("bert_hf"))
    hf.export_model(model, {"params": params}, path, tokenizer)
    sentences = _sentences(pairs)
    got = scoring.score_sentences(model, params, tokenizer, sentences)
    return path, got, _pll_reference(path, sentences)


def _pll_reference(path, sentences):
    """{pll, pll_word_l2r} by transformers' BertForMaskedLM and BertTokenizerFast: every token
    between [CLS] and [SEP] masked in turn (l2r: with the later pieces of its word, by the
    tokenizer's word ids) and its log-probability read at the mask."""
    model = transformers.BertForMaskedLM.from_pretrained(path).eval()
    tok = transformers.BertTokenizerFast(os.path.join(path, "vocab.txt"), do_lower_case=True)
    out = {"pll": np.zeros(len(sentences)), "pll_word_l2r": np.zeros(len(sentences))}
    with torch.no_grad():
        for s, sentence in enumerate(sentences):
            encoding = tok(sentence)
            ids, words = torch.tensor(encoding.input_ids), encoding.word_ids()
            scored = [i for i, w in enumerate(words) if w is not None]  # not [CLS], [SEP]
            rows = []  # (score name, position scored, positions masked)
            for i in scored:
                rows.append(("pll", i, [i]))
                later = [j for j in scored if j > i and words[j] == words[i]]
                rows.append(("pll_word_l2r", i, [i, *later]))
            x = ids.repeat(len(rows), 1)
            for r, (_, _, masked) in enumerate(rows):
                x[r, masked] = tok.mask_token_id
            logp = torch.log_softmax(model(x).logits.double(), -1)
            for r, (name, i, _) in enumerate(rows):
                out[name][s] += logp[r, i, ids[i]].item()
    return out


def test_bert_pll_and_word_l2r_match_plain_torch(bert_scores, pairs):
    _, got, reference = bert_scores
    assert sorted(got) == ["pll", "pll_word_l2r"]
    n = len(pairs)
    for name in got:
        np.testing.assert_allclose(got[name], reference[name], atol=ATOL, rtol=0, err_msg=name)
        _decisions_agree(got[name][:n], got[name][n:], reference[name][:n], reference[name][n:])
    # Words in pieces: the two scores differ on most sentences.
    assert np.mean(np.abs(got["pll"] - got["pll_word_l2r"]) > 1e-3) > 0.5


def test_masked_copies_hide_the_scored_token_and_later_pieces_of_its_word(monkeypatch):
    """What the model is given, on a hand-made vocabulary: "the unbelievable cats." is
    the un ##believ ##able cat ##s ."""
    vocab = [*tokenizers.SPECIAL_TOKENS, "the", "un", "##believ", "##able", "cat", "##s", "."]
    tokenizer = tokenizers.WordPieceTokenizer(vocab)
    ids = tokenizer.encode("the unbelievable cats.")
    assert [vocab[i] for i in ids] == vocab[5:]
    cfg = bert.bert_config(len(vocab), max_len=16, num_layers=1, num_heads=1, emb_dim=4)
    seen = []

    def fake_logprobs(model, params, input_ids_BxT, attention_mask_BxT, positions_B, targets_B):
        for ids_T, attention_T, p, t in zip(
            input_ids_BxT, attention_mask_BxT, positions_B, targets_B, strict=True
        ):
            masked = tuple(np.flatnonzero(ids_T == tokenizer.mask_id))
            seen.append((int(p), masked, int(t), tuple(ids_T), tuple(attention_T)))
        masked_B = np.sum(input_ids_BxT == tokenizer.mask_id, axis=1)
        return -(positions_B + 100.0 * masked_B)  # a score that tells the rows apart

    monkeypatch.setattr(scoring, "_masked_logprobs", fake_logprobs)
    model = bert.BertForPreTraining(cfg)
    got = scoring.score_sentences(model, None, tokenizer, ["the unbelievable cats."], 4)
    full = [tokenizer.cls_id, *ids, tokenizer.sep_id]  # 9 tokens, padded to the bucket of 12
    rows = {(p, masked) for p, masked, *_ in seen}
    pll = {(i, (i,)) for i in range(1, 8)}
    l2r = {(2, (2, 3, 4)), (3, (3, 4)), (5, (5, 6))}  # un: ##believ ##able; cat: ##s
    assert rows == pll | l2r  # the rows PLL shares with l2r run once (plus batch padding)
    for p, _, target, ids_T, attention_T in seen:
        assert target == full[p] and len(ids_T) == 12
        assert ids_T[0] == tokenizer.cls_id and ids_T[8] == tokenizer.sep_id
        assert attention_T == (1,) * 9 + (0,) * 3
    assert got["pll"][0] == -sum(i + 100 for i in range(1, 8))
    l2r_masked = {1: 1, 2: 3, 3: 2, 4: 1, 5: 2, 6: 1, 7: 1}
    assert got["pll_word_l2r"][0] == -sum(i + 100 * m for i, m in l2r_masked.items())


#### Decisions, ties, aggregates, the paper's rows


def test_same_token_sequences_tie_and_a_tie_is_not_correct(gpt):
    model, params, tokenizer, _ = gpt
    sentences = ["The cat sleeps.", "Every dog has barked.", "The cat sleeps."]
    logp = scoring.score_sentences(model, params, tokenizer, sentences)["logp"]
    assert logp[0] == logp[2] and logp[0] != logp[1]
    correct, tie = blimp.decide(logp[[0, 0, 1]], logp[[2, 1, 0]])
    assert tie.tolist() == [True, False, False]
    assert correct.tolist() == [False, logp[0] > logp[1], logp[1] > logp[0]]


def test_overall_is_the_mean_of_paradigms_and_groups_are_means_of_theirs():
    def pair(uid, field, phenomenon):
        return blimp.Pair(uid, "0", field, phenomenon, "good", "bad")

    pairs = [pair("a", "syntax", "x")] * 2 + [pair("b", "semantics", "x")] * 4
    pairs += [pair("c", "semantics", "y")]
    good = np.array([1.0, 0.0, 1.0, 1.0, 1.0, -5.0, 2.0])
    bad = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # a: right, tie; b: 3 of 4; c: right
    result = blimp.aggregate(pairs, *blimp.decide(good, bad))
    assert result["overall"] == pytest.approx((0.5 + 0.75 + 1.0) / 3)  # not 5/7 of the pairs
    assert result["phenomena"] == pytest.approx({"x": (0.5 + 0.75) / 2, "y": 1.0})
    assert result["fields"] == pytest.approx({"syntax": 0.5, "semantics": (0.75 + 1.0) / 2})
    assert result["ties"] == 1
    assert result["paradigms"]["a"] == {
        "field": "syntax",
        "phenomenon": "x",
        "pairs": 2,
        "ties": 1,
        "accuracy": 0.5,
    }


def test_shipped_data_and_the_papers_rows():
    pairs = blimp.read_pairs()
    assert len(pairs) == 67_000
    assert pairs[0] == blimp.Pair(
        "adjunct_island",
        "0",
        "syntax",
        "island_effects",
        "Who should Derek hug after shocking Richard?",
        "Who should Derek hug Richard after shocking?",
    )
    uids = [p.uid for p in pairs]
    assert len(set(uids)) == 67 and all(uids.count(u) == 1000 for u in set(uids[::1000]))
    assert sum(p.good == p.bad for p in pairs) == 7  # identical strings: ties for any model
    assert {p.field for p in pairs} == {"syntax", "morphology", "semantics", "syntax_semantics"}
    rows = blimp.paper_rows(pairs)
    overall = {m: round(100 * r["overall"], 1) for m, r in rows.items()}
    assert overall == {"ngram": 61.2, "lstm": 69.8, "txl": 69.6, "gpt2": 83.0}
    # The file's own per-phenomenon means: the 12 phenomena group the paradigms as the paper does.
    means = [json.loads(line) for line in open(blimp.PAPER_SUMMARY) if '"UID":"overall"' in line]
    for row in means:
        term = row["linguistics_term"]
        for m in blimp.REFERENCES:
            expected = row[m]
            got = rows[m]["overall"] if term == "overall" else rows[m]["phenomena"][term]
            assert got == pytest.approx(expected, abs=1e-6), (term, m)
    assert len(rows["gpt2"]["phenomena"]) == 12


def test_data_folder_file_and_limit(tmp_path):
    record = dict(
        field="syntax/semantics",
        linguistics_term="binding",
        UID="principle_A_case_2",
        sentence_good="Good.",
        sentence_bad="Bad.",
    )
    (tmp_path / "data").mkdir()
    lines = [json.dumps({**record, "pairID": str(i)}) for i in range(3)]
    (tmp_path / "data" / "principle_A_case_2.jsonl").write_text("\n".join(lines) + "\n")
    pairs = blimp.read_pairs(str(tmp_path))
    assert [p.pair_id for p in pairs] == ["0", "1", "2"]
    assert pairs[0].field == "syntax_semantics"  # as the other 12 syntax_semantics paradigms
    file = str(tmp_path / "data" / "principle_A_case_2.jsonl")
    assert len(blimp.read_pairs(file, limit=2)) == 2
    # The paper's rows over the one paradigm given.
    gpt2 = next(r["gpt2"] for r in blimp.read_paper_summary() if r["UID"] == record["UID"])
    assert blimp.paper_rows(pairs)["gpt2"] == {
        "overall": gpt2,
        "fields": {"syntax_semantics": gpt2},
        "phenomena": {"binding": gpt2},
    }


@pytest.mark.parametrize(
    "content, match",
    [
        (None, r"^--data='.*/nowhere' does not exist: give a BLiMP folder"),
        ("", r"^--data='.*' holds no paradigm files: expected data/\*.jsonl"),
        ('{"UID": "x"}\n', r"^.*/data/x.jsonl:1 has no 'pairID': not a BLiMP pair$"),
        ('{"UID": "x", \n', r"^.*/data/x.jsonl:1: not JSON lines"),
    ],
)
def test_bad_data_is_one_line(tmp_path, content, match):
    data = tmp_path / "nowhere"
    if content is not None:
        data = tmp_path / "blimp"
        (data / "data").mkdir(parents=True)
        if content:
            (data / "data" / "x.jsonl").write_text(content)
    with pytest.raises(errors.InputError, match=match) as e:
        blimp.read_pairs(str(data))
    assert "\n" not in str(e.value)


#### The command line and workdirs


@pytest.fixture(scope="module")
def gpt_workdir(gpt, tmp_path_factory):
    """The random GPT as `experiments/convert.py import` leaves it: a workdir at step 0."""
    workdir = str(tmp_path_factory.mktemp("gpt_workdir"))
    assert hf.import_to_workdir(gpt[3], workdir, lambda task: gpt_shakespeare_char.get_config())
    return workdir


def test_command_line_table_summary_plot_and_pair_lines(gpt_workdir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = run_script(
        "blimp.py", f"--workdir={gpt_workdir}", "--limit=1", f"--output={out / 'pairs.jsonl'}"
    )
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"BLiMP: 67 paradigms, 67 pairs, {gpt_workdir} step 0")
    assert lines[1].split() == ["logp", "5-gram", "LSTM", "TXL", "GPT-2"]
    overall = lines[2].split()
    assert overall[0] == "overall" and overall[2:] == ["61.2", "69.8", "69.6", "83.0"]
    assert sum(line.startswith("  ") for line in lines[3:]) == 12 + 4  # phenomena and fields
    assert any(line.startswith("ties (counted wrong) of 67 pairs: logp ") for line in lines)

    summary = json.load(open(out / "blimp.json"))
    assert summary["num_pairs"] == 67 and summary["metric"] == "logp" and summary["step"] == 0
    assert not os.path.exists(os.path.join(gpt_workdir, "blimp.json"))  # beside --output
    with open(out / "blimp.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in open(out / "pairs.jsonl")]
    assert len(records) == 67 and set(records[0]) == {"UID", "pairID", "logp_good", "logp_bad"}
    assert records[0] == {**records[0], "UID": "adjunct_island", "pairID": "0"}
    # The summary's numbers are the lines' decisions, averaged per paradigm.
    by_paradigm = {}
    for r in records:
        by_paradigm.setdefault(r["UID"], []).append(r["logp_good"] > r["logp_bad"])
    assert summary["overall"] == pytest.approx(np.mean([np.mean(v) for v in by_paradigm.values()]))
    assert f"{100 * summary['overall']:.1f}" == overall[1]


def test_bad_input_fails_before_the_model_loads(gpt_workdir, tmp_path):
    cases = [
        (dict(workdir=str(tmp_path / "none")), r"does not exist: give a training workdir"),
        (dict(metric="pll"), r"^--metric=pll is for masked LMs; a causal LM has logp$"),
        (dict(data=str(tmp_path / "none")), r"^--data='.*none' does not exist"),
        (dict(limit=0), r"^--limit=0 must be >= 1"),
        (dict(batch_size=0), r"^--batch_size=0 must be >= 1$"),
        (
            dict(output=str(tmp_path / "missing" / "pairs.jsonl")),
            r"^--output='.*/missing/pairs.jsonl': its folder '.*/missing' does not exist: make",
        ),
    ]
    for kwargs, match in cases:
        with pytest.raises(errors.InputError, match=match) as e:
            blimp.evaluate(**{"workdir": gpt_workdir, **kwargs})
        assert "\n" not in str(e.value)  # one line at the command line (lmjax.cli)


def test_imported_hugging_face_bert_workdir(bert_scores, pairs, tmp_path):
    """A BertForPreTraining imported with convert.py's `import_to_workdir`, on a --data file of
    4 pairs: the per-pair lines hold the reference's PLL-word-l2r (the metric asked for) and
    PLL."""
    path, _, reference = bert_scores
    workdir = str(tmp_path / "bert")
    assert hf.import_to_workdir(path, workdir, lambda task: bert_tiny_wikitext.get_config())
    chosen = [0, 50, 100, 150]
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                dict(
                    UID=pairs[i].uid,
                    pairID=pairs[i].pair_id,
                    field=pairs[i].field,
                    linguistics_term=pairs[i].phenomenon,
                    sentence_good=pairs[i].good,
                    sentence_bad=pairs[i].bad,
                )
            )
            + "\n"
            for i in chosen
        )
    )
    output = str(tmp_path / "scores.jsonl")
    summary = blimp.evaluate(workdir, data=str(data), metric="pll_word_l2r", output=output)
    assert summary["metric"] == "pll_word_l2r" and summary["num_pairs"] == 4
    assert sorted(summary["results"]) == ["pll", "pll_word_l2r"]
    records = [json.loads(line) for line in open(output)]
    assert [r["UID"] for r in records] == [pairs[i].uid for i in chosen]
    n = len(pairs)
    for key, name in [("logp", "pll_word_l2r"), ("pll", "pll")]:
        got = np.array([[r[f"{key}_good"], r[f"{key}_bad"]] for r in records])
        expected = np.stack([reference[name][chosen], reference[name][n + np.array(chosen)]], 1)
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0, err_msg=name)
    table = blimp.format_table(summary)
    assert table.splitlines()[1].split()[:2] == ["pll_word_l2r", "pll"]


def test_seed_table_is_the_mean_and_sample_std_of_each_arm(tmp_path):
    """ARM_SEED.json files grouped by arm (curves and other files ignored): overall mean ± std
    (ddof 1) of each run's own metric, phenomena averaged over the seeds."""
    overall = {"gpt": [0.56, 0.55, 0.57], "bert": [0.51, 0.53]}
    for arm, values in overall.items():
        for seed, value in enumerate(values):
            metric = "logp" if arm == "gpt" else "pll"
            phenomena = {"ellipsis": value - 0.2, "binding": value + 0.1}
            other = {"overall": 0.0, "phenomena": {"ellipsis": 0.0, "binding": 0.0}}
            results = {metric: {"overall": value, "phenomena": phenomena}, "pll_word_l2r": other}
            summary = {"metric": metric, "results": results}
            (tmp_path / f"{arm}_{seed}.json").write_text(json.dumps(summary))
    (tmp_path / "gpt_0_curve.json").write_text("[]")
    runs = blimp.seed_runs(str(tmp_path))
    assert sorted(runs) == ["bert", "gpt"] and len(runs["gpt"]) == 3
    gpt = blimp.over_seeds(runs["gpt"])
    assert gpt["mean"] == pytest.approx(np.mean(overall["gpt"]))
    assert gpt["std"] == pytest.approx(np.std(overall["gpt"], ddof=1))
    assert gpt["phenomena"]["ellipsis"] == pytest.approx(np.mean(overall["gpt"]) - 0.2)
    table = blimp.format_seed_table({arm: blimp.over_seeds(r) for arm, r in runs.items()})
    assert "| **overall**, mean ± std | **52.0 ± 1.4** | **56.0 ± 1.0** |" in table
    assert "| binding | 62.0 | 66.0 |" in table
    (tmp_path / "empty").mkdir()
    for folder in ("empty", "missing"):
        with pytest.raises(errors.MissingInput, match=f"no ARM_SEED.json summaries in .*{folder}$"):
            blimp.seed_runs(str(tmp_path / folder))
