"""Tokenizers. A tokenizer maps text to int ids and back and saves itself into a workdir, so
that sampling and fine-tuning use the vocabulary the model was trained with."""

import json
import os

import numpy as np

TOKENIZER_FILE = "tokenizer.json"


class CharTokenizer:
    """One id per character, ids in sorted character order (nanoGPT's shakespeare_char)."""

    def __init__(self, chars):
        self.chars = list(chars)
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        try:
            return np.array([self._index[c] for c in text], dtype=np.int32)
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, workdir):
        with open(os.path.join(workdir, TOKENIZER_FILE), "w") as f:
            json.dump({"type": "char", "chars": self.chars}, f)


def load_tokenizer(workdir):
    path = os.path.join(workdir, TOKENIZER_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {TOKENIZER_FILE} in {workdir}: is it a training workdir?")
    with open(path) as f:
        spec = json.load(f)
    if spec["type"] == "char":
        return CharTokenizer(spec["chars"])
    raise ValueError(f"unknown tokenizer type {spec['type']!r} in {path}")
