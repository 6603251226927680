"""WordPiece tokenizer: training, BERT vocab.txt files (cased and uncased), workdir round trip."""

import json

import numpy as np
import pytest

from lmjax.data import tokenizers
from lmjax.data.tokenizers import WordPieceTokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
UNCASED = SPECIALS + "the quick brown fox un ##aff ##able jump ##s ##ed . ,".split()
CASED = SPECIALS + "The the Fox quick brown jump ##s ##ed é .".split()


def write_vocab(path, pieces):
    path.write_text("".join(p + "\n" for p in pieces), encoding="utf-8")
    return str(path)


def test_uncased_vocab_file_tokenizes_as_bert(tmp_path):
    tok = WordPieceTokenizer.from_vocab_file(write_vocab(tmp_path / "vocab.txt", UNCASED))
    assert tok.vocab_size == len(UNCASED)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    sentence = "The QUICK brówn fox, unaffable, jumped Zebras."
    pieces = "the quick brown fox , un ##aff ##able , jump ##ed [UNK] .".split()
    assert tok.tokenize(sentence) == pieces
    ids = tok.encode(sentence)
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [UNCASED.index(p) for p in pieces])
    assert tok.decode(ids) == "the quick brown fox, unaffable, jumped [UNK]."
    assert tok.token_to_id("##aff") == 10 and tok.token_to_id("nope") is None
    np.testing.assert_array_equal(np.flatnonzero(tok.continuation_mask), [10, 11, 13, 14])
    assert tok.tokenize("a [MASK] fox") == ["[UNK]", "[MASK]", "fox"]


def test_cased_vocab_file_keeps_case_and_accents(tmp_path):
    tok = WordPieceTokenizer.from_vocab_file(
        write_vocab(tmp_path / "vocab.txt", CASED), lowercase=False
    )
    assert tok.tokenize("The the Fox fox jumps é e.") == [
        "The", "the", "Fox", "[UNK]", "jump", "##s", "é", "[UNK]", ".",
    ]  # fmt: skip
    uncased = WordPieceTokenizer.from_vocab_file(str(tmp_path / "vocab.txt"), lowercase=True)
    assert uncased.tokenize("THE Fox é") == ["the", "[UNK]", "[UNK]"]  # "é" -> "e", not in vocab


def test_vocab_without_special_tokens_is_an_error(tmp_path):
    path = write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "the"])
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[CLS\]', '\[SEP\]'"):
        WordPieceTokenizer.from_vocab_file(path)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        WordPieceTokenizer.from_vocab_file(str(tmp_path / "nope.txt"))


TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A lazy dog sleeps; the foxes jumped quickly over dogs.",
    "Jumping foxes and sleeping dogs are quick and lazy.",
] * 20


def test_train_save_load_round_trip(tmp_path):
    tok = WordPieceTokenizer.train(TEXTS, vocab_size=120)
    assert tok.vocab[:5] == SPECIALS and tok.pad_id == 0
    assert 40 < tok.vocab_size <= 120
    assert any(p.startswith("##") for p in tok.vocab)
    ids = tok.encode("The lazy foxes jumped")
    assert tok.decode(ids) == "the lazy foxes jumped"
    assert tok.tokenize("QUICK zebra")[0] == "quick"
    tok.save(str(tmp_path))
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    assert spec["type"] == "wordpiece" and spec["lowercase"] is True
    assert (tmp_path / "vocab.txt").read_text().splitlines() == tok.vocab
    loaded = tokenizers.load_tokenizer(str(tmp_path))
    assert loaded == tok
    for t in TEXTS[:3] + ["Unseen wörds, [MASK] and [UNK]!"]:
        np.testing.assert_array_equal(loaded.encode(t), tok.encode(t))


def test_cased_training_keeps_case(tmp_path):
    tok = WordPieceTokenizer.train(TEXTS, vocab_size=200, lowercase=False)
    assert "The" in tok.vocab and tok.tokenize("The")[0] == "The"
    tok.save(str(tmp_path))
    loaded = tokenizers.load_tokenizer(str(tmp_path))
    assert loaded == tok and loaded.lowercase is False
