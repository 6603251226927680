"""The Project Gutenberg book reader (`lmjax.data.books`) on small synthetic PG-formatted books
(tests/data/books: CRLF, a modern, a wrapped-marker and a pre-2004 layout), and on the real
corpus when ../shared/data/gutenberg is there."""

import glob
import os
import shutil

import pytest

from lmjax.data import books
from lmjax.errors import InputError, MissingInput
from tests.conftest import REPO

FIXTURES = os.path.join(REPO, "tests", "data", "books")
MANIFEST = os.path.join(FIXTURES, "manifest.tsv")
BOOKS = os.path.join(FIXTURES, "books")
SHARED = os.path.join(REPO, "..", "shared", "data", "gutenberg")


def read(name):
    with open(os.path.join(BOOKS, name), encoding="utf-8", newline="") as f:
        return f.read()


def names(paths):
    return [os.path.basename(p) for p in paths]


def test_fixtures_are_crlf_with_a_header_and_a_licence():
    text = read("pg90001.txt")
    assert text.count("\r\n") == text.count("\n") > 50
    assert "FULL PROJECT GUTENBERG LICENSE" in text and "Release Date:" in text


@pytest.mark.parametrize(
    "name, first, last, gone",
    [
        # *** START OF THIS ... ***, End of the ... EBook line, then *** END OF THIS ... ***
        ("pg90001.txt", "THE LIGHTHOUSE KEEPER\n", "\nTHE END.", "Produced by"),
        # ***START OF THE ... wrapped onto two lines***, ***END OF THE ...***
        ("pg90002.txt", "A RATHER LONG ACCOUNT\n", "damp in the flour.", "Transcribed from"),
        # pre-2004: *END THE SMALL PRINT!...*END*, then "End of Project Gutenberg's ..."
        ("pg90003.txt", "LETTERS FROM NOWHERE\n", "\nYour loving brother.", "etext was produced"),
    ],
)
def test_strip_keeps_the_body_between_the_markers(name, first, last, gone):
    body = books.strip_gutenberg(read(name), name)
    assert body.startswith(first) and body.endswith(last), body
    assert "\r" not in body
    for header_or_licence in ["Gutenberg", "GUTENBERG", "LICENSE", "SMALL PRINT", "Release Date"]:
        assert header_or_licence not in body
    assert gone not in body  # the producers' credits after the START marker
    assert "NORTHERN ISLANDS***" not in body  # the second line of a wrapped START marker


def test_paragraphs_join_wrapped_lines_and_drop_decoration():
    body = books.strip_gutenberg(read("pg90001.txt"), "pg90001.txt")
    assert books.book_paragraphs(body) == [
        "THE LIGHTHOUSE KEEPER",
        "By Ada Fictional",
        "CHAPTER I.",
        "The keeper climbed the stairs at dusk, as he had done for thirty years. The lamp was "
        "cold. He lit it with a match from his coat, and the light went out over the water.",
        '"Is anyone there?" he called. Nobody answered.',
        # [Illustration: ...] and * * * * * are gone
        "She came in the morning with the supply boat. Old Hale was not pleased; he had asked "
        "for oil, not for company.",
        "THE END.",
    ]
    # lines without a blank line between them are one paragraph
    assert books.book_paragraphs("a\nb\n \n\nc\r") == ["a b", "c"]


def test_a_book_is_one_document_of_sentences():
    document = books.book_document(read("pg90003.txt"), "pg90003.txt")
    assert document == [
        "LETTERS FROM NOWHERE",
        "LETTER I.",
        "Dear Sister, the post is slow here.",
        "I write in the evenings, by the stove.",  # a sentence across a line break
        "Your loving brother.",
    ]


def test_a_book_without_markers_is_an_error_naming_it(tmp_path):
    with pytest.raises(InputError, match=r"^notes\.txt has no Project Gutenberg START marker"):
        books.strip_gutenberg("Just some text.\r\nNo markers here.\r\n", "notes.txt")
    cut_short = read("pg90001.txt").split("End of the Project")[0]
    with pytest.raises(InputError, match=r"^pg90001\.txt has a .* START marker but no END"):
        books.strip_gutenberg(cut_short, "pg90001.txt")
    (tmp_path / "pg7.txt").write_bytes(b"Just some text.\r\n")
    with pytest.raises(InputError, match=rf"^{tmp_path}/pg7\.txt has no Project Gutenberg START"):
        books.read_book(str(tmp_path / "pg7.txt"))
    (tmp_path / "pg8.txt").write_bytes(
        read("pg90002.txt").replace("fair", "fa\xeer").encode("latin-1")
    )
    with pytest.raises(InputError, match=r"pg8\.txt is not UTF-8 \(invalid continuation byte"):
        books.read_book(str(tmp_path / "pg8.txt"))


def test_an_html_book_and_a_licence_inside_the_body_are_stripped():
    html_book = (
        '<?xml version="1.0"?>\n<html><head><title>The Project Gutenberg E-text</title></head>'
        "<body><pre>\n*** START OF THIS PROJECT GUTENBERG EBOOK TALES ***\n\n</pre>\n"
        "<h2>TALES</h2>\n<p>\n  Edward&rsquo;s eyes\n  were bandaged.<br />He slept.\n</p>\n"
        "<pre>\nEnd of Project Gutenberg&rsquo;s Tales\n</pre></body></html>\n"
    )
    body = books.strip_gutenberg(html_book, "tales.html")
    assert books.book_paragraphs(body) == [
        "TALES",
        "Edward\u2019s eyes were bandaged.",
        "He slept.",
    ]
    licensed = (
        "*** START OF THE PROJECT GUTENBERG EBOOK SONGS ***\n\nA song.\n\n-----\n\n"
        "Creative Commons Attribution-NonCommercial-NoDerivatives 4.0 International\n"
        "Public License\n\nBy exercising the Licensed Rights...\n\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK SONGS ***\n"
    )
    assert books.book_paragraphs(books.strip_gutenberg(licensed, "songs.txt")) == ["A song."]


def test_read_manifest_gives_the_books_in_order():
    manifest = books.read_manifest(MANIFEST)
    assert [b.file for b in manifest] == [
        "pg90003.txt",
        "pg90001.txt",
        "pg90002.txt",
        "pg90004.txt",
    ]
    assert [b.split for b in manifest] == ["train", "train", "valid", "valid"]
    assert manifest[1] == books.Book(
        "pg90001.txt", "Ada Fictional", "The Lighthouse Keeper", 1605, manifest[1].md5, "train"
    )
    assert os.path.getsize(os.path.join(BOOKS, "pg90001.txt")) == 1605


GOOD_LINE = "pg1.txt\tA\tT\t10\t" + "0" * 32 + "\ttrain"


@pytest.mark.parametrize(
    "lines, where, message",
    [
        ([GOOD_LINE.replace("\ttrain", "")], 2, "5 tab-separated fields"),
        ([GOOD_LINE, GOOD_LINE.replace("\t10\t", "\t1 KB\t")], 3, "bytes '1 KB'"),
        ([GOOD_LINE.replace("0" * 32, "abc")], 2, "md5 'abc'"),
        ([GOOD_LINE.replace("pg1.txt", "../pg1.txt")], 2, "file '../pg1.txt' is not a file name"),
        ([GOOD_LINE.replace("train", "")], 2, "split ''"),
        ([GOOD_LINE, "", GOOD_LINE], 3, "1 tab-separated fields"),
        ([GOOD_LINE, GOOD_LINE], 3, r"pg1\.txt is listed twice \(also on line 2\)"),
        ([], 1, None),
    ],
)
def test_a_bad_manifest_line_is_named_by_file_and_line(tmp_path, lines, where, message):
    path = tmp_path / "manifest.tsv"
    path.write_text("\n".join(["\t".join(books.MANIFEST_COLUMNS), *lines]) + "\n")
    expected = rf"^{path}:{where}: {message}" if message else rf"^{path} lists no books"
    with pytest.raises(InputError, match=expected):
        books.read_manifest(str(path))


def test_a_manifest_with_another_header_is_refused(tmp_path):
    path = tmp_path / "manifest.tsv"
    path.write_text("file\tmd5\tsplit\n" + GOOD_LINE + "\n")
    with pytest.raises(InputError, match=rf"^{path}:1: the header is 'file\\tmd5\\tsplit'"):
        books.read_manifest(str(path))


def test_a_changed_book_is_named_by_its_md5(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "corpus")
    changed = tmp_path / "corpus" / "books" / "pg90001.txt"
    changed.write_bytes(changed.read_bytes().replace(b"thirty years", b"forty years"))
    book = books.read_manifest(str(tmp_path / "corpus" / "manifest.tsv"))[1]
    named = rf"^pg90001\.txt has md5 [0-9a-f]{{32}} .*the manifest says {book.md5} \(1605 bytes\)"
    with pytest.raises(InputError, match=named):
        books.check_md5(book, str(changed))
    documents = books.book_documents(str(tmp_path / "corpus" / "manifest.tsv"), "train")
    assert next(documents)[0] == "LETTERS FROM NOWHERE"  # pg90003 is unchanged
    with pytest.raises(InputError, match=r"^pg90001\.txt has md5"):
        next(documents)
    unchecked = books.book_documents(str(tmp_path / "corpus"), "train", verify=False)
    assert "forty years" in " ".join(list(unchecked)[1])


def test_a_missing_book_says_where_to_get_it(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "corpus")
    os.remove(tmp_path / "corpus" / "books" / "pg90002.txt")
    where_to_get_it = (
        r"^pg90002\.txt \(listed in .*manifest\.tsv\) is not in .*"
        r"https://www\.gutenberg\.org/cache/epub/90002/pg90002\.txt"
    )
    with pytest.raises(MissingInput, match=where_to_get_it):
        books.book_files(str(tmp_path / "corpus" / "manifest.tsv"), "valid")
    assert names(books.book_files(str(tmp_path / "corpus" / "manifest.tsv"), "train")) == [
        "pg90003.txt",
        "pg90001.txt",
    ]
    with pytest.raises(MissingInput, match="nowhere"):
        books.book_files(str(tmp_path / "nowhere"))


def test_data_path_resolution_and_split(tmp_path):
    train, valid = ["pg90003.txt", "pg90001.txt"], ["pg90002.txt", "pg90004.txt"]
    everything = train + valid  # manifest order
    # a manifest, or the books/ folder beside it: the manifest's books, in its order
    for path in [MANIFEST, BOOKS, BOOKS + os.sep]:
        assert names(books.book_files(path)) == everything
        assert names(books.book_files(path, "train")) == train
        assert names(books.book_files(path, "valid")) == valid
    assert books.find_manifest(BOOKS) == books.find_manifest(FIXTURES) == MANIFEST
    # a glob with a manifest beside it: the matched books of the split, in manifest order
    assert names(books.book_files(os.path.join(BOOKS, "pg9000[13].txt"), "train")) == train
    assert names(books.book_files(os.path.join(BOOKS, "*.txt"), "valid")) == valid
    with pytest.raises(InputError, match="has no 'test' books: its splits are train, valid"):
        books.book_files(MANIFEST, "test")
    with pytest.raises(InputError, match=r"matches none of the 'valid' books listed in"):
        books.book_files(os.path.join(BOOKS, "pg90001*.txt"), "valid")
    # no manifest: the folder's .txt files (or the glob's), sorted; no split to choose from
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ["pg90002.txt", "pg90001.txt", "pg90003.txt"]:
        shutil.copy(os.path.join(BOOKS, name), plain / name)
    (plain / "notes.md").write_text("not a book")
    assert names(books.book_files(str(plain))) == ["pg90001.txt", "pg90002.txt", "pg90003.txt"]
    assert names(books.book_files(str(plain / "pg9000[23].txt"))) == ["pg90002.txt", "pg90003.txt"]
    assert names(books.book_files(str(plain / "pg90002.txt"))) == ["pg90002.txt"]
    with pytest.raises(InputError, match=r"has no manifest\.tsv to choose its 'train' books"):
        books.book_files(str(plain), "train")
    with pytest.raises(MissingInput, match="matches no file"):
        books.book_files(str(plain / "*.text"))
    # documents come in the same order, one per book
    documents = list(books.book_documents(str(plain)))
    assert [d[0] for d in documents] == [
        "THE LIGHTHOUSE KEEPER",
        "A RATHER LONG ACCOUNT",
        "LETTERS FROM NOWHERE",
    ]


def test_the_shipped_manifest_lists_the_307_books():
    manifest = books.read_manifest(books.MANIFEST)
    assert len(manifest) == 307 and len({b.file for b in manifest}) == 307
    assert sum(b.bytes for b in manifest) == 150_749_994
    assert [b.file for b in manifest if b.split == "valid"] == [
        "pg52642.txt",
        "pg17375.txt",
        "pg20933.txt",
        "pgx0199.txt",
        "pg6939.txt",
        "pg51580.txt",
    ]


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/data/gutenberg is not here")
def test_every_book_of_the_shared_corpus_strips():
    """All 307 books: markers found, no licence left, a body of paragraphs (about 3 s)."""
    files = sorted(glob.glob(os.path.join(SHARED, "books", "*.txt")))
    assert names(books.book_files(os.path.join(SHARED, "books"))) == names(
        books.book_files(os.path.join(SHARED, "manifest.tsv"))
    )
    assert len(files) == 307
    for path in files:
        with open(path, encoding="utf-8") as f:
            body = books.strip_gutenberg(f.read(), os.path.basename(path))
        for marker in ["PROJECT GUTENBERG", "SMALL PRINT", "\nProduced by", "</p>"]:
            assert marker not in "\n" + body, (path, marker)
        assert len(books.book_paragraphs(body)) > 100, path


def test_a_causal_lm_reads_the_running_text_of_books():
    from lmjax import tasks
    from lmjax.tasks import clm
    from tests.conftest import tiny_config

    text = clm.read_corpus_text(tasks.resolve_config(tiny_config(**{"data.path": BOOKS})))
    assert "We sailed on a Tuesday. The wind was fair." in text
    assert "A small garden wants a plan before it wants a spade." in text
    assert "gutenberg" not in text.lower() and "\r" not in text
    assert text.count("\n\n") == 3  # four books, a blank line between two
