"""TFDS route for text documents: the local corpus builder (offline, file order kept), TFDS
datasets by name in `read_corpus_documents`, and the error for a dataset that is not prepared."""

import pytest
import tensorflow_datasets as tfds

from configs import bert_books, bert_tiny_wikitext
from lmjax.data import corpora, text, tfds_text
from lmjax.tasks import mlm_nsp

WIKITEXT2 = ("wikitext2_valid", "wikitext2_test")


def _file_documents(paths, fmt="auto"):
    return [d for p in paths for d in text.read_documents(corpora.read_text(p), fmt=fmt)]


def test_local_builder_gives_the_file_documents_in_order(tmp_path, no_network):
    builder = tfds_text.local_builder(data_dir=str(tmp_path))
    assert builder.is_prepared()
    assert builder.info.disable_shuffling
    assert str(tmp_path) in str(builder.data_dir)
    expected = _file_documents(WIKITEXT2)
    assert len(expected) > 100
    # Stored examples, one per document, in file order.
    source = builder.as_data_source(split="train")
    stored = [source[i]["text"].decode("utf-8") for i in range(len(source))]
    assert stored == ["\n".join(d) for d in expected]
    # Read back by name (already prepared: reused), as documents of sentences.
    documents = tfds_text.read_tfds_documents("local_text_corpus/wikitext2", data_dir=str(tmp_path))
    assert documents == expected
    with pytest.raises(KeyError, match="tfds_text_key"):
        tfds_text.read_tfds_documents(
            "local_text_corpus/wikitext2", text_key="content", data_dir=str(tmp_path)
        )
    with pytest.raises(ValueError, match="tfds_split"):
        tfds_text.read_tfds_documents(
            "local_text_corpus/wikitext2", split="test", data_dir=str(tmp_path)
        )


def test_local_builder_custom_blank_line_files(tmp_path, no_network):
    paths = []
    for f in range(2):
        docs = [
            f"File {f} doc {i} starts here. It has a second sentence!\nAnd a line {i}?"
            for i in range(40)
        ]
        path = tmp_path / f"corpus{f}.txt"
        path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
        paths.append(str(path))
    config = tfds_text.LocalTextCorpusConfig(name="mine", paths=tuple(paths), format="blank_lines")
    data_dir = str(tmp_path / "tfds")
    builder = tfds_text.local_builder(config, data_dir=data_dir)
    expected = _file_documents(paths, fmt="blank_lines")
    assert len(expected) == 80 and expected[0] == [
        "File 0 doc 0 starts here.",
        "It has a second sentence!",
        "And a line 0?",
    ]
    assert tfds_text.read_tfds_documents(builder) == expected


class LmjaxTestParagraphs(tfds.core.GeneratorBasedBuilder):
    """A stand-in for a public TFDS text dataset (paragraphs, not sentences, in `content`)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict({"content": tfds.features.Text()})
        return self.dataset_info_from_configs(features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(), "validation": self._generate_examples(2)}

    def _generate_examples(self, n=30):
        for i in range(n):
            body = "" if i == 3 else f"Article {i} begins. Then it ends!\n\nA line {i}."
            yield f"{i:04d}", {"content": body}


def test_prepared_dataset_by_name_tfrecord(tmp_path, no_network):
    """A prepared non-local dataset (TFRecord, read through tf.data like most public ones): each
    example's lines split into sentences, stored order kept, empty examples dropped."""
    name = LmjaxTestParagraphs.name
    LmjaxTestParagraphs(data_dir=str(tmp_path)).download_and_prepare(file_format="tfrecord")
    config = bert_tiny_wikitext.get_config()
    config.data.tfds_name = name
    config.data.tfds_text_key = "content"
    config.data.tfds_data_dir = str(tmp_path)
    documents = mlm_nsp.read_corpus_documents(config)
    assert documents == [
        [f"Article {i} begins.", "Then it ends!", f"A line {i}."] for i in range(30) if i != 3
    ]
    config.data.tfds_split = "validation"
    assert len(mlm_nsp.read_corpus_documents(config)) == 2


def test_read_corpus_documents_tfds_equals_paths(tmp_path, no_network):
    config = bert_tiny_wikitext.get_config()
    assert config.data.tfds_name == ""  # the default run reads the files
    from_files = mlm_nsp.read_corpus_documents(config)
    config.data.tfds_name = "local_text_corpus/wikitext2"
    config.data.tfds_data_dir = str(tmp_path)
    from_tfds = mlm_nsp.read_corpus_documents(config)
    assert from_tfds == from_files == _file_documents(WIKITEXT2)


@pytest.mark.parametrize("name", ["lm1b", "wikipedia/20230601.en", "no_such_dataset_xyz"])
def test_unprepared_dataset_is_a_clear_error(tmp_path, no_network, name):
    config = bert_tiny_wikitext.get_config()
    config.data.tfds_name = name
    config.data.tfds_data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        mlm_nsp.read_corpus_documents(config)
    message = str(e.value)
    assert repr(name) in message and repr(str(tmp_path)) in message
    assert f"tfds build {name} --data_dir={tmp_path}" in message
    assert len(message) < 600  # not TFDS's list of every dataset


def test_books_through_tfds_stream_as_the_books_of_data_path(tmp_path, no_network):
    """local_text_corpus/gutenberg reads the books from TFDS's manual_dir (the manifest's train
    and valid books as "train" and "validation"); streamed from it, a BERT run gets the batches
    and the eval set of the same books given as data.path."""
    import os

    import numpy as np

    from lmjax.data import books, pipeline
    from tests.conftest import make_task

    by_path = bert_books.get_config("test")
    data_dir = tmp_path / "tfds"
    (data_dir / "downloads" / "manual").mkdir(parents=True)
    os.symlink(os.path.abspath(by_path.data.path), data_dir / "downloads" / "manual" / "gutenberg")
    by_tfds = bert_books.get_config("test")
    by_tfds.data.path = ""
    by_tfds.data.tfds_name = "local_text_corpus/gutenberg"
    by_tfds.data.tfds_eval_split = "validation"
    by_tfds.data.tfds_data_dir = str(data_dir)

    train, valid = books.train_and_eval_books(by_path.data.path, 0)
    documents = tfds_text.read_tfds_documents(
        "local_text_corpus/gutenberg", split="validation", data_dir=str(data_dir)
    )
    assert documents == [books.read_book(f) for f in valid] and len(documents) == 2

    batches = []
    for config in (by_path, by_tfds):
        data = make_task(config).make_data()
        it = pipeline.train_iterator(data.train_ds, config.batch_size, config.seed, data.batch_fn)
        batches.append(([next(it) for _ in range(5)], data.eval_ds[0]))
    (train_a, eval_a), (train_b, eval_b) = batches
    for a, b in zip([*train_a, eval_a], [*train_b, eval_b], strict=True):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
