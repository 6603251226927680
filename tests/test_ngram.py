"""The n-gram baseline (lmjax.evals.ngram, experiments/ngram_blimp.py) and the word-budget cut
of the books (lmjax.data.books.first_words) that it and the trained arms share.

Kneser-Ney distributions sum to 1 over the vocabulary; a bigram value matches a hand
calculation; a sentence's score is the sum of its tokens'; the cut is deterministic, stops at
the budget on a sentence boundary and reads only `train` books; the command prints the table.
"""

import json
import os

import ml_collections
import numpy as np
import pytest

from lmjax import config_checks, errors
from lmjax.data import books
from lmjax.evals import ngram
from lmjax.tasks import clm
from tests.conftest import REPO, run_script

FIXTURE = os.path.join(REPO, "tests", "data", "books")
BOS, EOS, A, B, C = range(5)  # a toy vocabulary of 5 ids


def _toy_corpus(seed=0, vocab_size=12, num=300):
    """Random sentences over ids 2..vocab_size-2 (id vocab_size-1 never occurs)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(2, vocab_size - 1, size=rng.integers(1, 8)) for _ in range(num)]


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("discount", [None, 0.75])
def test_distributions_sum_to_one(order, discount):
    vocab_size = 12
    model = ngram.NgramLM.train(_toy_corpus(), order, vocab_size, BOS, EOS, discount=discount)
    for level in model.levels:  # no n-gram loses more than its count
        assert np.all(level.discounts_4 >= 0) and np.all(level.discounts_4 <= [0, 1, 2, 3])
    if discount is None and order == 3:  # the trigrams have n1..n4: three estimated discounts
        assert len(set(model.levels[-1].discounts_4[1:])) == 3
    width = max(order - 1, 1)
    histories = [[-1, BOS], [BOS, 3], [3, 4], [4, 5], [vocab_size - 1, 2], [-1, -1], [2, EOS]]
    targets = np.array([w for w in range(vocab_size) if w != BOS])
    for history in histories:
        history_NxH = np.tile(np.array(history[-width:]), (len(targets), 1))
        total = np.exp(model.log_probs(history_NxH, targets)).sum()
        assert total == pytest.approx(1.0, abs=1e-9), (order, history)


def test_bigram_by_hand():
    """Interpolated KN, D = 0.75, on "<s> a b </s>" and "<s> b a b </s>" over {a, b, c, </s>}.

    Continuation counts: a after {<s>, b}: 2; b after {a, <s>}: 2; </s> after {b}: 1; c: 0;
    total 5, three types, so the uniform share is 3 * 0.75 / 5 = 0.45 over 4 ids.
      p_uni(b) = (2 - 0.75) / 5 + 0.45 / 4 = 0.3625
      p(b | a) = (c(a b) - 0.75) / c(a .) + 0.75 * N1+(a .) / c(a .) * p_uni(b)
               = (2 - 0.75) / 2 + 0.75 * 1 / 2 * 0.3625 = 0.7609375
      p(c | a) = 0.375 * 0.45 / 4 = 0.0421875
    """
    model = ngram.NgramLM.train([np.array([A, B]), np.array([B, A, B])], 2, 5, BOS, EOS, 0.75)
    history_NxH, targets = np.array([[A], [A]]), np.array([B, C])
    probs = np.exp(model.log_probs(history_NxH, targets))
    np.testing.assert_allclose(probs, [0.7609375, 0.0421875], rtol=1e-12)
    # p(b | <s>): <s> b keeps its raw count 1 (nothing precedes <s>); c(<s> .) = 2, N1+ = 2.
    p_b_bos = (1 - 0.75) / 2 + 0.75 * 2 / 2 * 0.3625
    p_a_uni = (2 - 0.75) / 5 + 0.45 / 4
    p_a_b = (1 - 0.75) / 3 + 0.75 * 2 / 3 * p_a_uni  # b is followed by a once, </s> twice
    p_eos_uni = (1 - 0.75) / 5 + 0.45 / 4
    p_eos_a = 0.375 * p_eos_uni  # a is never followed by </s>
    expected = np.log(p_b_bos) + np.log(p_a_b) + np.log(p_eos_a)
    np.testing.assert_allclose(model.sentence_logprobs([np.array([B, A])]), [expected])


def test_sentence_score_is_sum_of_token_scores():
    model = ngram.NgramLM.train(_toy_corpus(), 3, 12, BOS, EOS)
    sentence = np.array([3, 4, 11, 5])
    padded = [-1, BOS, *sentence.tolist(), EOS]
    history_NxH = np.array([padded[i : i + 2] for i in range(len(sentence) + 1)])
    expected = model.log_probs(history_NxH, np.array([*sentence, EOS])).sum()
    got = model.sentence_logprobs([np.array([3]), sentence, np.array([], np.int64)])
    assert got[1] == pytest.approx(expected, abs=1e-12)
    assert np.all(np.isfinite(got)) and np.all(got < 0)
    unigram = ngram.NgramLM.train(_toy_corpus(), 1, 12, BOS, EOS)
    words = np.random.default_rng(1).integers(2, 12, size=40)
    reordered = unigram.sentence_logprobs([words, words[::-1], np.sort(words)])
    assert reordered[0] == reordered[1] == reordered[2]  # bit for bit: a BLiMP tie


def test_first_words_cut():
    train, valid = books.train_and_eval_books(FIXTURE, 1)
    words = [[len(s.split()) for s in books.read_book(f)] for f in train]
    total = sum(map(sum, words))
    assert books.first_words(train, total + 100) == [
        (f, len(w)) for f, w in zip(train, words, strict=True)
    ]
    budget = sum(words[0]) + sum(words[1][:3]) + words[1][3] - 1  # the 4th sentence won't fit
    cut = books.first_words(train, budget)
    assert cut == [(train[0], len(words[0])), (train[1], 3)]
    assert cut == books.first_words(train, budget)  # deterministic
    kept = [s for source in cut for s in books.read_first_sentences(source)]
    assert sum(len(s.split()) for s in kept) <= budget
    assert not {f for f, _ in cut} & set(valid)
    text = books.books_text(FIXTURE, "train", budget)  # the causal LM's text: the same words
    assert text.split() == " ".join(kept).split()
    with pytest.raises(errors.InputError, match="max_words"):
        books.first_words(train, 0)


def test_corpus_sentences_read_train_books_only():
    sentences, cut = ngram.corpus_sentences(FIXTURE, 10_000)
    valid = set(books.book_files(FIXTURE, "valid"))
    assert [os.path.basename(f) for f, _ in cut] == ["pg90003.txt", "pg90001.txt"]  # manifest order
    assert not {f for f, _ in cut} & valid
    assert sentences == [s for f in books.book_files(FIXTURE, "train") for s in books.read_book(f)]


def test_config_max_words():
    data = ml_collections.ConfigDict(
        {"path": FIXTURE, "max_words": 30, "tfds_name": "", "train_fraction": 0.9}
    )
    text = clm.read_corpus_text(ml_collections.ConfigDict({"data": data}))
    assert 0 < len(text.split()) <= 30
    config = ml_collections.ConfigDict(
        {
            "task": "clm",
            "seq_len": 8,
            "batch_size": 1,
            "num_train_steps": 2,
            "warmup_steps": 0,
            "learning_rate": 1e-3,
            "model": {"emb_dim": 8, "num_heads": 2},
            "data": {"path": "tiny_shakespeare", "max_words": 30},
        }
    )
    with pytest.raises(errors.InputError, match="max_words=30 cuts Project Gutenberg books"):
        config_checks.check(config)
    config.data.max_words = -1
    with pytest.raises(errors.InputError, match="max_words=-1 must be ≥ 0"):
        config_checks.check(config)


def test_command_prints_the_table(tmp_path):
    out = tmp_path / "pairs.jsonl"
    proc = run_script(
        "ngram_blimp.py",
        "--order=2",
        "--max_words=1000",
        f"--books={FIXTURE}",
        "--limit=1",
        f"--output={out}",
    )
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("BLiMP: 67 paradigms, 67 pairs, 2-gram modified Kneser-Ney")
    assert lines[1].split() == ["2-gram", "5-gram", "LSTM", "TXL", "GPT-2"]
    assert lines[2].split()[0] == "overall"
    assert any(line.startswith("ties (counted wrong) of 67 pairs: 2-gram") for line in lines)
    assert "sentences of 2 books (last pg90001.txt)" in proc.stdout
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(pairs) == 67 and all(p["logp_good"] < 0 for p in pairs)
    summary = json.loads((tmp_path / "blimp.json").read_text())
    assert summary["corpus"]["books"] == 2 and summary["metric"] == "2-gram"
