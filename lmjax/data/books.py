"""Project Gutenberg books as pretraining documents, and the manifest that fixes which books a
run trains and evaluates on.

A book file is read as PG publishes it (CRLF, header, licence): `strip_gutenberg` keeps the body
between PG's START and END markers, `book_paragraphs` joins the hard-wrapped lines of each
paragraph, and `book_document` splits the paragraphs into sentences. One book is one document, a
list of sentences, the form of BERT's create_pretraining_data.py (NSP's "next" sentence comes
from the same document).

A manifest (`file author title bytes md5 split`, tab-separated, one book a line) lists the books
of a corpus with their md5 and their split (`train` / `valid`), so that a run is reproducible
from a list of Gutenberg ids. lmjax's results used the 307 books of
`assets/gutenberg/manifest.tsv`; the text is not in the repository (any PG mirror has it, see
`assets/README.md`).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import html
import os
import re
from collections.abc import Iterable, Iterator, Sequence

from lmjax.data import text as text_lib
from lmjax.errors import InputError, MissingInput

# The manifest of the books lmjax's results used (307 books, 6 of them `valid`).
MANIFEST = os.path.join(os.path.dirname(__file__), "assets", "gutenberg", "manifest.tsv")
MANIFEST_COLUMNS = ("file", "author", "title", "bytes", "md5", "split")

# The patterns start at a "\n" (the text is given one in front) rather than "^" with MULTILINE:
# a literal first character lets `re` skip ahead fast (10x on these books).
# Where the body starts: after "*** START OF THE/THIS PROJECT GUTENBERG EBOOK <TITLE> ***" (also
# "***START OF ..."); a long title wraps onto the next line, so the marker runs to its first '*'
# after the title. PG files from before 2004 have no START marker: their body starts after the
# line that closes the licence, "*END*THE SMALL PRINT! ..." or "*END THE SMALL PRINT! ...".
_START = re.compile(
    r"\n\*\*\* ?START OF (?:THE|THIS) PROJECT GUTENBERG(?:[^*]{0,400}\*)?[^\n]*", re.IGNORECASE
)
_OLD_START = re.compile(r"\n\*END\*? ?THE SMALL PRINT![^\n]*")
# Where the body ends: the first "End of (the) Project Gutenberg('s) ..." line (it precedes the
# END marker in most books, and is the only end of the pre-2004 ones) or the
# "*** END OF THE/THIS PROJECT GUTENBERG EBOOK" marker.
_END = re.compile(
    r"\n(?:\*\*\* ?END OF (?:THE|THIS) PROJECT GUTENBERG"
    r"|End of (?:[Tt]he |[Tt]his )?Project Gutenberg)"
)
# Producers' credits and notes about the edition that PG puts right after the START marker
# ("Produced by ...", "E-text prepared by ...", "Transcribed from the 1888 edition by ...",
# "Images of the original pages are available through ...").
_CREDITS = re.compile(
    r"(?:produced by|e-?text prepared by|transcribed (?:from|by)|scanned by|special thanks"
    r"|this e-?(?:text|book) was|(?:note: )?images of the original pages|copyright \(c\)"
    r"|this translation is licensed"
    r"|.*(?:project gutenberg|proofreading team|distributed proofreaders|pgdp\.net))",
    re.IGNORECASE | re.DOTALL,
)
_CREDIT_PARAGRAPHS = 3  # credits are looked for in this many leading paragraphs ...
_CREDIT_CHARS = 600  # ... of at most this length
# A licence inside the body, after the text: pg58344 (Siddhartha, a 2018 translation under
# CC BY-NC-ND) appends its licence before PG's END marker.
_INNER_LICENCE = re.compile(r"\nCreative Commons Attribution[^\n]*\n[ \t]*Public License[ \t]*\n")
# A book published as (X)HTML (pg9254, Hawthorne's Biographical Stories): its block tags end
# paragraphs, its other tags go, its entities are decoded.
_HTML = re.compile(r"\s*<(?:\?xml|!DOCTYPE html|html)", re.IGNORECASE)
_HTML_BLOCK = re.compile(
    r"</?(?:p|div|h[1-6]|blockquote|pre|table|tr|li|ul|ol|br|hr)\b[^>]*>", re.IGNORECASE
)
_HTML_TAG = re.compile(r"<[^>]*>")
_BLANK_LINES = re.compile(r"\n\s*\n")  # paragraphs are separated by blank lines
_LETTER = re.compile(r"[^\W\d_]")  # a paragraph without one is decoration ("* * * * *")
# A paragraph that is only a transcriber's illustration tag: "[Illustration: The Escape.]"
_ILLUSTRATION = re.compile(r"\[(?:Illustration|Picture|Frontispiece)[^\]]*\]?")
_MD5 = re.compile(r"[0-9a-f]{32}")
_SPLIT = re.compile(r"\w+")


def strip_gutenberg(text: str, name: str) -> str:
    """The body of a Project Gutenberg book: what lies between PG's START and END markers, with
    the producers' credits at its top left out, lines ending in "\\n" (a book in HTML becomes
    plain text).

    A text without the markers is an InputError naming `name`: a corpus of PG books that let a
    licence through would train on it silently, and another format would be read wrong."""
    text = "\n" + text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    start = _START.search(text) or _OLD_START.search(text)
    if start is None:
        raise InputError(
            f"{name} has no Project Gutenberg START marker ('*** START OF THE PROJECT GUTENBERG "
            "EBOOK ...' or '*END*THE SMALL PRINT!'): a folder, glob or manifest.tsv as "
            "data.path is read as Project Gutenberg books; give PG's plain-text file of the "
            "book or leave this one out; for plain text, give one file (e.g. cat FOLDER/*.txt "
            "> corpus.txt, then data.path=corpus.txt)"
        )
    end = _END.search(text, start.end())
    if end is None:
        raise InputError(
            f"{name} has a Project Gutenberg START marker but no END marker ('*** END OF THE "
            "PROJECT GUTENBERG EBOOK ...' or 'End of the Project Gutenberg EBook ...'): the file "
            "is cut short; download it again"
        )
    body = text[start.end() : end.start()]
    if _HTML.match(text):
        body = html.unescape(_HTML_TAG.sub("", _HTML_BLOCK.sub("\n\n", body)))
    licence = _INNER_LICENCE.search(body)
    if licence is not None:
        body = body[: licence.start()]
    return _drop_credits(body.strip("\n"))


def _drop_credits(body: str) -> str:
    """`body` without the credit paragraphs among its first few."""
    *head, rest = _BLANK_LINES.split(body, maxsplit=_CREDIT_PARAGRAPHS)
    if len(head) < _CREDIT_PARAGRAPHS:  # a body of a few paragraphs: `rest` is one of them
        head, rest = [*head, rest], ""
    kept = [p for p in head if len(p) > _CREDIT_CHARS or not _CREDITS.match(p.strip())]
    return "\n\n".join(p for p in [*kept, rest] if p.strip()).strip("\n")


def book_paragraphs(body: str) -> list[str]:
    """The paragraphs of a book's body: blank lines separate them, the line breaks inside one
    become spaces (PG hard-wraps its lines at about 70 characters), runs of spaces one space.
    Paragraphs without a letter (rules such as "* * * * *", page numbers) or that are only an
    illustration tag ("[Illustration: The Escape.]") are left out: they are not running text."""
    paragraphs = (" ".join(p.split()) for p in _BLANK_LINES.split(body))
    return [p for p in paragraphs if _LETTER.search(p) and not _ILLUSTRATION.fullmatch(p)]


def book_document(text: str, name: str) -> list[str]:
    """A PG book (as its file holds it) as one document: the sentences of its body."""
    return [
        sentence
        for paragraph in book_paragraphs(strip_gutenberg(text, name))
        for sentence in text_lib.split_sentences(paragraph)
    ]


@dataclasses.dataclass(frozen=True)
class Book:
    """A manifest line: a book's file name, author and title, the size and md5 of the file the
    results used, and its split (`train` or `valid`)."""

    file: str
    author: str
    title: str
    bytes: int
    md5: str
    split: str


def read_manifest(path: str) -> list[Book]:
    """The books of a manifest.tsv, in its order. A header other than MANIFEST_COLUMNS, a line
    with another number of fields, a bad size, md5 or split, or a file listed twice is an
    InputError naming `path:line`."""
    if not os.path.isfile(path):
        raise MissingInput(f"manifest {path} not found: give the path of a manifest.tsv")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = "\t".join(MANIFEST_COLUMNS)
    if not lines or lines[0] != header:
        got = repr(lines[0]) if lines else "nothing"
        raise InputError(f"{path}:1: the header is {got}; a manifest starts with {header!r}")
    books, seen = [], {}
    for number, line in enumerate(lines[1:], start=2):
        where = f"{path}:{number}"
        fields = line.split("\t")
        if len(fields) != len(MANIFEST_COLUMNS):
            raise InputError(
                f"{where}: {len(fields)} tab-separated fields, a manifest line has "
                f"{len(MANIFEST_COLUMNS)} ({', '.join(MANIFEST_COLUMNS)})"
            )
        file, author, title, size, md5, split = fields
        if not file or os.path.basename(file) != file or file in (".", ".."):
            raise InputError(f"{where}: file {file!r} is not a file name (no folders)")
        if not size.isdigit():
            raise InputError(f"{where}: bytes {size!r} is not a whole number")
        if not _MD5.fullmatch(md5):
            raise InputError(f"{where}: md5 {md5!r} is not 32 lowercase hex digits")
        if not _SPLIT.fullmatch(split):
            raise InputError(f"{where}: split {split!r} is not a word such as train or valid")
        if file in seen:
            raise InputError(f"{where}: {file} is listed twice (also on line {seen[file]})")
        seen[file] = number
        books.append(Book(file, author, title, int(size), md5, split))
    if not books:
        raise InputError(f"{path} lists no books: add a line per book under the header")
    return books


def find_manifest(path: str) -> str | None:
    """The manifest that describes the books in directory `path`: `path/manifest.tsv`, or the
    `manifest.tsv` beside it when `path` is a folder named `books` (the layout
    `gutenberg/manifest.tsv`, `gutenberg/books/pgN.txt`); None when there is none."""
    path = os.path.normpath(path)
    candidates = [os.path.join(path, "manifest.tsv")]
    if os.path.basename(path) == "books":
        candidates.append(os.path.join(os.path.dirname(path), "manifest.tsv"))
    return next((c for c in candidates if os.path.isfile(c)), None)


def book_files(path: str, split: str | None = None) -> list[str]:
    """The book files that `path` (a config's `data.path`) names, in a fixed order:
    - a manifest.tsv: its books of `split` (all of them for None), in manifest order, from the
      manifest's folder or the `books/` folder beside it;
    - a directory with a manifest (see `find_manifest`): the same;
    - a glob (`books/pg1*.txt`): the files it matches, sorted; with a manifest in their folder,
      those of them that the manifest lists under `split`, in manifest order;
    - a directory without a manifest: its `.txt` files, sorted; a single file: itself.
    Without a manifest there is no split: `split` must be None.
    A missing book is a MissingInput naming it and where to get it."""
    return [file for file, _ in _resolve(path, split)]


def manifest_of(path: str) -> str | None:
    """The manifest that `path` (as `book_files` takes it) selects its books with, or None."""
    if glob.has_magic(path):
        folder = os.path.dirname(path)
        return None if glob.has_magic(folder) else find_manifest(folder or ".")
    if os.path.isdir(path):
        return find_manifest(path)
    return path if path.endswith(".tsv") else None


def train_and_eval_books(path: str, num_eval: int) -> tuple[list[str], list[str]]:
    """(training books, held-out books) of `path`: its manifest's `train` and `valid` books, every
    one md5-checked; without a manifest, the files in order, the last `num_eval` held out."""
    if manifest_of(path) is None:
        files = book_files(path)
        if not 0 < num_eval < len(files) - 1:
            raise InputError(
                f"data.num_eval_documents={num_eval} must leave at least 2 of the {len(files)} "
                f"books of {path} for training: lower it, or give more books"
            )
        return files[:-num_eval], files[-num_eval:]
    chosen = {}
    for split in ("train", "valid"):
        chosen[split] = _resolve(path, split)
        for file, book in chosen[split]:
            check_md5(book, file)
    return [f for f, _ in chosen["train"]], [f for f, _ in chosen["valid"]]


def _resolve(path: str, split: str | None) -> list[tuple[str, Book | None]]:
    """`book_files`, each file with its manifest line (None without a manifest)."""
    if glob.has_magic(path):
        files = sorted(glob.glob(path))
        if not files:
            raise MissingInput(f"data path {path!r} matches no file: check the pattern")
        folder = os.path.dirname(path)
        manifest = None if glob.has_magic(folder) else find_manifest(folder or ".")
        if manifest is None:
            return _no_split(path, split, files)
        matched = {os.path.basename(f) for f in files}
        chosen = [b for b in _select(manifest, split) if b.file in matched]
        if not chosen:
            raise InputError(
                f"{path!r} matches none of the {'' if split is None else repr(split) + ' '}books "
                f"listed in {manifest}: choose a pattern that matches some of them"
            )
        return [(os.path.join(folder, b.file), b) for b in chosen]
    if os.path.isdir(path):
        manifest = find_manifest(path)
        if manifest is None:
            files = sorted(glob.glob(os.path.join(glob.escape(path), "*.txt")))
            if not files:
                raise MissingInput(f"directory {path} has no .txt files: give a folder of books")
            return _no_split(path, split, files)
        if os.path.dirname(manifest) != os.path.normpath(path):  # the books/ beside a manifest
            return [(_locate(manifest, b, [path]), b) for b in _select(manifest, split)]
        path = manifest  # a folder with a manifest in it: as if the manifest were given
    if path.endswith(".tsv"):
        folders = [os.path.join(os.path.dirname(path), "books"), os.path.dirname(path) or "."]
        return [(_locate(path, b, folders), b) for b in _select(path, split)]
    if os.path.isfile(path):
        return _no_split(path, split, [path])
    raise MissingInput(
        f"data path {path!r} not found: give a folder of .txt books, a glob or a manifest.tsv"
    )


def _no_split(path: str, split: str | None, files: list[str]) -> list[tuple[str, None]]:
    if split is not None:
        raise InputError(
            f"{path} has no manifest.tsv to choose its {split!r} books from: add one beside the "
            "books (see lmjax/data/assets/gutenberg/manifest.tsv) or read all of them"
        )
    return [(f, None) for f in files]


def _select(manifest: str, split: str | None) -> list[Book]:
    """The books of `manifest` in `split` (all for None); an InputError when there are none."""
    books = read_manifest(manifest)
    chosen = [b for b in books if split is None or b.split == split]
    if not chosen:
        splits = ", ".join(sorted({b.split for b in books}))
        raise InputError(f"{manifest} has no {split!r} books: its splits are {splits}")
    return chosen


def _locate(manifest: str, book: Book, folders: list[str]) -> str:
    """The path of `book` in the first of `folders` that holds it; a MissingInput otherwise."""
    for folder in folders:
        candidate = os.path.join(folder, book.file)
        if os.path.isfile(candidate):
            return candidate
    number = re.fullmatch(r"pg(\d+)\.txt", book.file)
    source = (
        f"https://www.gutenberg.org/cache/epub/{number[1]}/{book.file}"
        if number
        else f"the Project Gutenberg ebook {book.title!r} by {book.author} "
        "(lmjax/data/assets/README.md gives its number)"
    )
    raise MissingInput(
        f"{book.file} (listed in {manifest}) is not in {' or '.join(folders)}: get it from any "
        f"Project Gutenberg mirror, e.g. {source}; lmjax's results used the 307 books of "
        "lmjax/data/assets/gutenberg/manifest.tsv"
    )


def check_md5(book: Book, path: str, data: bytes | None = None) -> None:
    """An InputError when the file at `path` (whose bytes are `data`, if already read) is not the
    one the manifest lists: PG re-releases books with new headers, fixes and encodings."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    md5 = hashlib.md5(data).hexdigest()
    if md5 != book.md5:
        raise InputError(
            f"{book.file} has md5 {md5} ({len(data)} bytes), the manifest says {book.md5} "
            f"({book.bytes} bytes): {path} is not the release the manifest lists; get that one, "
            "or put this file's md5 and bytes in the manifest (the run then differs from lmjax's)"
        )


def read_book(path: str, book: Book | None = None) -> list[str]:
    """The document (sentences) of the PG book file at `path`, md5-checked against `book`."""
    return book_document(_read(path, book), path)


def _read(path: str, book: Book | None = None) -> str:
    """The text of the book file at `path` (md5-checked against `book`); InputError if it is not
    UTF-8."""
    with open(path, "rb") as f:
        data = f.read()
    if book is not None:
        check_md5(book, path, data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 ({e.reason} at byte {e.start}): convert it") from e


def is_book_path(path: str) -> bool:
    """Whether a `data.path` names books (a folder, a glob or a manifest) rather than one file."""
    return glob.has_magic(path) or os.path.isdir(path) or path.endswith(".tsv")


def books_text(path: str, split: str | None = None, max_words: int = 0) -> str:
    """The running text of the books `path` names (`book_files` of `split`; with a split, each
    md5-checked): each book's paragraphs, one a line, books separated by a blank line (a causal
    LM's corpus). `max_words` > 0 keeps the text of `first_words` only: the same sentences a
    masked LM reads, the last paragraph cut after its last kept sentence."""
    chosen = _resolve(path, split)
    if max_words:
        kept = _leading_sentences(chosen, max_words)
        books = ((paragraphs, len(sentences)) for _, paragraphs, sentences in kept)
        texts = [_first_sentences(paragraphs, count) for paragraphs, count in books]
    else:
        texts = [book_paragraphs(strip_gutenberg(_read(f, book), f)) for f, book in chosen]
    return "\n\n".join("\n".join(paragraphs) for paragraphs in texts)


def first_words(files: Sequence[str], max_words: int) -> list[tuple[str, int]]:
    """(file, sentences kept) of the leading books of `files`, in their order, whose sentences
    (`read_book`), in order, make at most `max_words` words (whitespace-separated, after
    `strip_gutenberg` and `book_paragraphs`): the book where the budget runs out is cut after
    its last whole sentence that fits. The same files and budget always give the same cut."""
    return [(file, len(sentences)) for file, sentences in first_words_sentences(files, max_words)]


def first_words_sentences(files: Sequence[str], max_words: int) -> list[tuple[str, list[str]]]:
    """(file, the sentences `first_words` keeps of it), each book read once."""
    kept = _leading_sentences(((f, None) for f in files), max_words)
    return [(file, sentences) for file, _, sentences in kept]


def _leading_sentences(
    books: Iterable[tuple[str, Book | None]], max_words: int
) -> Iterator[tuple[str, list[str], list[str]]]:
    """(file, paragraphs, kept sentences) of the leading (file, manifest entry) `books` within
    `max_words` words, each book read once: the cut of `first_words`."""
    if max_words < 1:
        raise InputError(f"data.max_words={max_words} must be >= 1 to cut the books")
    total = 0
    for file, book in books:
        paragraphs = book_paragraphs(strip_gutenberg(_read(file, book), file))
        sentences = [s for paragraph in paragraphs for s in text_lib.split_sentences(paragraph)]
        n = 0
        for sentence in sentences:
            words = len(sentence.split())
            if total + words > max_words:
                break
            total, n = total + words, n + 1
        if n:
            yield file, paragraphs, sentences[:n]
        if n < len(sentences):
            return


def read_first_sentences(source: tuple[str, int]) -> list[str]:
    """The first sentences of a book as `first_words` keeps them: `source` is (file, count)."""
    file, count = source
    return read_book(file)[:count]


def _first_sentences(paragraphs: Sequence[str], count: int) -> list[str]:
    """The leading `count` sentences of `paragraphs` (`text.split_sentences` of each), paragraph
    by paragraph; a paragraph cut short keeps its first sentences joined by a space."""
    out = []
    for paragraph in paragraphs:
        if count <= 0:
            break
        sentences = text_lib.split_sentences(paragraph)
        out.append(paragraph if len(sentences) <= count else " ".join(sentences[:count]))
        count -= len(sentences)
    return out


def book_documents(path: str, split: str | None = None, verify: bool = True) -> Iterator[list[str]]:
    """The documents of the books `path` names (see `book_files`), one book at a time, each
    checked against its manifest md5 unless `verify` is False."""
    for file, book in _resolve(path, split):
        yield read_book(file, book if verify else None)
