"""Text corpora: the ones embedded in the package (no network) and local files."""

from __future__ import annotations

import os

from lmjax import errors

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
EMBEDDED = {
    # name: path inside lmjax/data/assets (provenance in assets/README.md)
    "tinyshakespeare": os.path.join(ASSETS, "tinyshakespeare", "input.txt"),
    "wikitext2_valid": os.path.join(ASSETS, "wikitext-2", "valid.txt"),
    "wikitext2_test": os.path.join(ASSETS, "wikitext-2", "test.txt"),
    "sst2_train": os.path.join(ASSETS, "sst2", "train.tsv"),
    "sst2_dev": os.path.join(ASSETS, "sst2", "dev.tsv"),
    # GLUE tasks in glue_data/ layout, read by lmjax.data.glue.read_tsv
    **{
        f"glue_{task}_{split}": os.path.join(ASSETS, "glue", folder, f"{split}.tsv")
        for task, folder in [
            ("cola", "CoLA"),
            ("mrpc", "MRPC"),
            ("stsb", "STS-B"),
            ("rte", "RTE"),
            ("wnli", "WNLI"),
        ]
        for split in ("train", "dev")
    },
    # WordPiece vocabulary trained by lmjax on WikiText-2's training articles (assets/README.md)
    "wikitext2_vocab_8k": os.path.join(ASSETS, "wikitext-2", "vocab_uncased_8k.txt"),
    # WordPiece vocabulary trained by lmjax on the 301 training books of gutenberg/manifest.tsv
    "gutenberg_vocab_16k": os.path.join(ASSETS, "gutenberg", "vocab_uncased_16k.txt"),
}


def resolve(name_or_path: str) -> str:
    """The file of an embedded name, or the path itself; `errors.MissingInput` if it is missing."""
    path = EMBEDDED.get(name_or_path, name_or_path)
    if not os.path.isfile(path):
        raise errors.MissingInput(
            f"data file {path!r} not found: use an existing file or one of the embedded "
            f"names {sorted(EMBEDDED)}"
        )
    return path


def decode_file(path: str, encoding: str = "utf-8") -> str:
    """The text of the file at `path`; `errors.InputError` naming the file and the first bad byte
    when it is binary (a NUL byte) or not in `encoding`."""
    with open(path, "rb") as f:
        data = f.read()
    nul = data.find(b"\0")
    if nul >= 0:
        raise errors.InputError(
            f"data file {path!r} is binary (a NUL byte at offset {nul}): give a UTF-8 text file"
        )
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise errors.InputError(
            f"data file {path!r} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}): convert it, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


def read_text(name_or_path: str) -> str:
    """Returns the text of an embedded corpus (by name) or of a local file (by path): UTF-8 and
    not empty, else `errors.InputError` naming the file."""
    path = resolve(name_or_path)
    text = decode_file(path)
    if not text or text.isspace():
        raise errors.InputError(f"data file {path!r} is empty: give a file with text in it")
    return text
