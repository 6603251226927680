"""Raw text -> documents -> sentences, the input format of BERT's create_pretraining_data.py
(one sentence per line, blank lines between documents), without nltk.

A document is a list of sentence strings. Two readers:
- `wikitext_documents`: WikiText articles. An article starts at a ` = Title = ` line; section
  headings (` = = Section = = `, ` = = = Sub = = = `) and the title line are dropped (they are
  not sentences, and NSP pairs should read as running text); each paragraph line is split into
  sentences. WikiText's `<unk>` becomes BERT's `[UNK]` (one token, the unknown-word id).
- `blank_line_documents`: documents separated by blank lines, each line split into sentences
  (a file with one sentence per line, the original's format, stays as it is).
"""

from __future__ import annotations

import re

from lmjax import errors

# WikiText is tokenized with spaces around punctuation: a sentence ends at a " . ", " ? " or
# " ! " token (decimals are "1 @.@ 5", so they never match).
_TOKENIZED_END = re.compile(r"(?<= [.?!]) +")
# Untokenized text: a terminator (and closing quotes/brackets) then space then a capital,
# digit or opening quote. Simple on purpose: "Mr. Smith" splits.
_PLAIN_END = re.compile(r"(?<=[.?!])([\"')\]]*)\s+(?=[A-Z0-9\"'(\[])")
_TITLE = re.compile(r"^ ?= [^=].* = ?$")
_HEADING = re.compile(r"^ ?(= ){2,}.*( =){2,} ?$")


def split_sentences(text: str, tokenized: bool = False) -> list[str]:
    """Splits a paragraph into sentences; `tokenized` for space-separated text (WikiText)."""
    text = text.strip()
    if not text:
        return []
    if tokenized:
        parts = _TOKENIZED_END.split(text)
    else:
        parts = [p for p in _PLAIN_END.split(text) if p is not None]
        # re.split also returns the captured closing quotes: glue them back on.
        glued = []
        for i, p in enumerate(parts):
            if i % 2 == 1:
                glued[-1] += p
            else:
                glued.append(p)
        parts = glued
    return [p.strip() for p in parts if p.strip()]


def is_wikitext(text: str) -> bool:
    """True when the first non-blank line is a WikiText article title (` = Title = `)."""
    for line in text.splitlines():
        if line.strip():
            return bool(_TITLE.match(line.rstrip("\n")))
    return False


def wikitext_documents(text: str, unk_token: str | None = "[UNK]") -> list[list[str]]:
    """WikiText articles as documents of sentences (titles and section headings dropped);
    `<unk>` is replaced by `unk_token` (None keeps it)."""
    if unk_token is not None:
        text = text.replace("<unk>", unk_token)
    documents = []
    for line in text.splitlines():
        if _HEADING.match(line):
            continue
        if _TITLE.match(line):
            documents.append([])
            continue
        if not line.strip():
            continue
        if not documents:  # text before the first title: an article of its own
            documents.append([])
        documents[-1].extend(split_sentences(line, tokenized=True))
    return [d for d in documents if d]


def blank_line_documents(text: str, tokenized: bool = False) -> list[list[str]]:
    """Documents separated by blank lines; every line is split into sentences."""
    documents = [[]]
    for line in text.splitlines():
        if not line.strip():
            documents.append([])  # create_pretraining_data.py: empty lines delimit documents
        else:
            documents[-1].extend(split_sentences(line, tokenized=tokenized))
    return [d for d in documents if d]


def read_documents(text: str, fmt: str = "auto") -> list[list[str]]:
    """Documents of sentences from `text` in `fmt` "wikitext", "blank_lines" or "auto" (WikiText
    when the first non-blank line is an article title)."""
    if fmt == "auto":
        fmt = "wikitext" if is_wikitext(text) else "blank_lines"
    if fmt == "wikitext":
        return wikitext_documents(text)
    if fmt == "blank_lines":
        return blank_line_documents(text)
    raise errors.InputError(
        f"unknown document format {fmt!r} (data.format): use 'wikitext', 'blank_lines' or 'auto'"
    )
