"""Tokenizers. A tokenizer maps text to int ids and back and saves itself into a directory (a
run's workdir, through `lmjax.workdir`), so that sampling and fine-tuning use the vocabulary the
model was trained with. Directories are `etils.epath` paths: local or a bucket."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from etils import epath

from lmjax import errors

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
HF_TOKENIZER_FILE = "hf_tokenizer.json"  # a Hugging Face tokenizer.json (HFTokenizer)
# BERT's special tokens; [PAD] is id 0 in a trained vocabulary, as in Google's vocab.txt files.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class CharTokenizer:
    """One id per character, ids in sorted character order (nanoGPT's shakespeare_char)."""

    def __init__(self, chars):
        self.chars = list(chars)
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        try:
            return np.array([self._index[c] for c in text], dtype=np.int32)
        except KeyError as e:
            raise errors.InputError(
                f"character {e.args[0]!r} is not in the vocabulary of {len(self.chars)} "
                "characters the model was trained with: remove or replace it"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, directory: epath.PathLike) -> None:
        _write(directory, TOKENIZER_FILE, json.dumps({"type": "char", "chars": self.chars}))


class WordPieceTokenizer:
    """BERT's WordPiece (tokenization.py's FullTokenizer) through Hugging Face `tokenizers`.

    BERT normalizer (clean text, CJK spacing, lowercase + strip accents when `lowercase`), BERT
    pre-tokenizer (whitespace and punctuation), greedy longest-match-first WordPiece with `##`
    continuation pieces and [UNK] for words longer than 100 characters. The five special tokens
    are registered as special, so "[MASK]" or "[UNK]" in a text maps to its id.
    """

    def __init__(self, vocab, lowercase=True):
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise errors.InputError(f"the WordPiece vocabulary lacks the special tokens {missing}")
        self.vocab = list(vocab)  # id -> piece
        self.lowercase = bool(lowercase)
        index = {piece: i for i, piece in enumerate(self.vocab)}
        if len(index) != len(self.vocab):
            raise errors.InputError("the WordPiece vocabulary has duplicate entries")
        tok = Tokenizer(models.WordPiece(index, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(lowercase=self.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.add_special_tokens(list(SPECIAL_TOKENS))
        self._tok = tok
        self._index = index
        self._continuation = np.array([p.startswith("##") for p in self.vocab], dtype=bool)

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, lowercase: bool = True
    ) -> WordPieceTokenizer:
        """Learns a vocabulary of at most `vocab_size` pieces (specials first, [PAD]=0)."""
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            continuing_subword_prefix="##",
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        index = tok.get_vocab()
        return cls(sorted(index, key=index.get), lowercase=lowercase)

    @classmethod
    def from_vocab_file(cls, path: epath.PathLike, lowercase: bool = True) -> WordPieceTokenizer:
        """Loads a BERT vocab.txt (one piece per line, line number = id), cased or uncased."""
        path = epath.Path(path)
        if not path.is_file():
            raise errors.MissingInput(f"vocabulary file {str(path)!r} not found")
        vocab = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
        while vocab and not vocab[-1]:
            vocab.pop()
        try:
            return cls(vocab, lowercase=lowercase)
        except errors.InputError as e:
            raise errors.InputError(f"{path}: {e}") from None

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, piece: str) -> int | None:
        return self._index.get(piece)

    pad_id = property(lambda self: self._index["[PAD]"])
    unk_id = property(lambda self: self._index["[UNK]"])
    cls_id = property(lambda self: self._index["[CLS]"])
    sep_id = property(lambda self: self._index["[SEP]"])
    mask_id = property(lambda self: self._index["[MASK]"])

    @property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(self._index[t] for t in SPECIAL_TOKENS)

    @property
    def continuation_mask(self) -> np.ndarray:
        """[vocab_size] bool, True for `##` pieces (a token that does not start a word)."""
        return self._continuation.copy()

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text`, no [CLS]/[SEP] added."""
        return np.array(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.array(e.ids, dtype=np.int32) for e in encodings]

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Iterable[int]) -> str:
        """Joins pieces back into text (`##` glued on); special tokens are kept."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def __eq__(self, other):
        return (
            isinstance(other, WordPieceTokenizer)
            and self.vocab == other.vocab
            and self.lowercase == other.lowercase
        )

    def save(self, directory: epath.PathLike) -> None:
        _write(directory, VOCAB_FILE, "".join(piece + "\n" for piece in self.vocab))
        spec = {"type": "wordpiece", "lowercase": self.lowercase, "vocab_file": VOCAB_FILE}
        _write(directory, TOKENIZER_FILE, json.dumps(spec))


class HFTokenizer:
    """Any Hugging Face `tokenizers` tokenizer (a tokenizer.json), e.g. GPT-2's byte-level BPE.

    `hf_config` is the model directory's tokenizer_config.json (tokenizer class, special tokens),
    kept so that an export writes it back. Encoding adds no special tokens, as GPT-2's does not.
    """

    def __init__(self, tokenizer, hf_config=None):
        self._tok = tokenizer
        config = dict(hf_config or {})
        config.pop("added_tokens_decoder", None)  # tokenizer.json has the added tokens
        self.hf_config = config

    @classmethod
    def from_file(
        cls, path: epath.PathLike, hf_config: Mapping[str, Any] | None = None
    ) -> HFTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(epath.Path(path).read_text(encoding="utf-8")), hf_config)

    @classmethod
    def from_bpe_files(
        cls, vocab_path: str, merges_path: str, hf_config: Mapping[str, Any] | None = None
    ) -> HFTokenizer:
        """GPT-2's byte-level BPE from its vocab.json and merges.txt."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

        hf_config = dict(hf_config or {})
        tok = Tokenizer(models.BPE.from_file(vocab_path, merges_path))
        prefix_space = hf_config.get("add_prefix_space", False)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        names = ("bos_token", "eos_token", "unk_token", "pad_token")
        specials = {_token_text(hf_config.get(n, "<|endoftext|>")) for n in names}
        tok.add_special_tokens(sorted(t for t in specials if t and tok.token_to_id(t) is not None))
        return cls(tok, hf_config)

    @classmethod
    def train_byte_level_bpe(
        cls, text: str, vocab_size: int, eos_token: str = "<|endoftext|>"
    ) -> HFTokenizer:
        """A GPT-2-style byte-level BPE of `vocab_size` (with `eos_token`) trained on `text`."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[eos_token],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(text.splitlines(keepends=True), trainer)
        return cls(tok, {"eos_token": eos_token})

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    @property
    def eos_id(self) -> int | None:
        """Id of the end-of-text token named in tokenizer_config.json, or None."""
        token = _token_text(self.hf_config.get("eos_token"))
        return self._tok.token_to_id(token) if token else None

    def encode(self, text: str) -> np.ndarray:
        return np.array(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def save_hf(self, path: epath.PathLike) -> None:
        """Writes the Hugging Face tokenizer.json into `path`."""
        _write(path, "tokenizer.json", self._tok.to_str(pretty=True))

    def save(self, directory: epath.PathLike) -> None:
        # lmjax's tokenizer.json names the type; the Hugging Face file sits beside it.
        _write(directory, HF_TOKENIZER_FILE, self._tok.to_str(pretty=True))
        spec = {"type": "hf", "file": HF_TOKENIZER_FILE, "hf_config": self.hf_config}
        _write(directory, TOKENIZER_FILE, json.dumps(spec))


# Any of the tokenizers above (what `load_tokenizer` returns).
Tokenizer = CharTokenizer | WordPieceTokenizer | HFTokenizer


def _token_text(token):
    """A special token of tokenizer_config.json: a string or an AddedToken dict."""
    return token.get("content") if isinstance(token, dict) else token


def _write(directory, name, text):
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text, encoding="utf-8")


def load_tokenizer(directory: epath.PathLike) -> Tokenizer:
    """The tokenizer a `save(directory)` wrote."""
    directory = epath.Path(directory)
    path = directory / TOKENIZER_FILE
    if not path.exists():
        raise errors.MissingInput(f"no {TOKENIZER_FILE} in {directory}: is it a training workdir?")
    spec = json.loads(path.read_text())
    if spec["type"] == "char":
        return CharTokenizer(spec["chars"])
    if spec["type"] == "wordpiece":
        vocab_path = directory / spec.get("vocab_file", VOCAB_FILE)
        return WordPieceTokenizer.from_vocab_file(vocab_path, lowercase=spec["lowercase"])
    if spec["type"] == "hf":
        return HFTokenizer.from_file(directory / spec["file"], spec.get("hf_config"))
    raise errors.InputError(f"unknown tokenizer type {spec['type']!r} in {path}")
