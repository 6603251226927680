"""Tokenizer, corpus loading and the deterministic, resumable input pipeline."""

import numpy as np
import pytest

from lmjax.data import corpora, pipeline, tokenizers
from lmjax.tasks import clm
from tests.conftest import make_task, tiny_config


def test_char_tokenizer_matches_nanogpt_vocabulary_and_round_trips(tmp_path):
    text = corpora.read_text("tinyshakespeare")
    assert len(text) == 1_115_394
    tok = tokenizers.CharTokenizer.from_text(text)
    assert tok.vocab_size == 65 and tok.chars[:3] == ["\n", " ", "!"]
    assert tok.decode(tok.encode("ROMEO: to be")) == "ROMEO: to be"
    tok.save(str(tmp_path))
    assert tokenizers.load_tokenizer(str(tmp_path)).chars == tok.chars
    with pytest.raises(ValueError, match="'~' is not in the vocabulary"):
        tok.encode("~")


def test_clm_bpe_tokenizer_trains_round_trips_and_is_kept_by_the_workdir(tmp_path):
    config = make_task(tiny_config(**{"data.tokenizer": "bpe", "data.vocab_size": 300})).config
    text = corpora.read_text("tinyshakespeare")[:100_000]
    tok = clm.make_tokenizer(config, text)
    assert tok.vocab_size == 300 and tok.eos_id is not None
    ids = clm.encode_in_chunks(tok, text, chunk_chars=10_000)  # cut at newlines: same text back
    assert len(ids) < 0.8 * len(text) and tok.decode(ids) == text
    tok.save(str(tmp_path))
    again = clm.make_tokenizer(config, "other text", workdir=str(tmp_path))
    np.testing.assert_array_equal(again.encode(text[:5000]), tok.encode(text[:5000]))


def test_missing_corpus_names_the_path():
    with pytest.raises(FileNotFoundError, match="/nope.txt"):
        corpora.read_text("/nope.txt")


def test_windows_are_shifted_targets_and_split_is_90_10():
    config = tiny_config()
    data = make_task(config).make_data()
    n = len(corpora.read_text("tinyshakespeare"))
    assert len(data.train_ds) == int(n * 0.9) - config.seq_len
    held_out = n - int(n * 0.9)
    assert len(data.eval_ds) == (held_out - 1) // config.seq_len  # non-overlapping windows
    last = data.eval_ds[len(data.eval_ds) - 1]
    assert last["targets"].shape == (config.seq_len,)
    ex = data.train_ds[5]
    np.testing.assert_array_equal(ex["inputs"][1:], ex["targets"][:-1])
    assert ex["inputs"].shape == (config.seq_len,)


def test_train_iterator_resumes_from_its_state():
    data = make_task(tiny_config()).make_data()
    it = pipeline.train_iterator(data.train_ds, 8, seed=0)
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it)["inputs"] for _ in range(3)]
    resumed = pipeline.train_iterator(data.train_ds, 8, seed=0)
    resumed.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["inputs"], want)
    other_seed = next(pipeline.train_iterator(data.train_ds, 8, seed=1))["inputs"]
    assert not np.array_equal(
        other_seed, next(pipeline.train_iterator(data.train_ds, 8, 0))["inputs"]
    )


def test_eval_batches_are_identical_across_runs():
    a = pipeline.eval_batches(make_task(tiny_config()).make_data().eval_ds, 8, 3)
    b = pipeline.eval_batches(make_task(tiny_config(seed=7)).make_data().eval_ds, 8, 3)
    assert len(a) == 3
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
