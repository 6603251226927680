"""Text documents through TensorFlow Datasets: a builder for local text corpora and any TFDS text
dataset by name, read without network.

- `LocalTextCorpus` (`local_text_corpus/wikitext2`, the default config): one example per
  document of local files (default: the embedded WikiText-2 valid + test articles), its
  sentences joined by "\\n", in file order (`disable_shuffling`, zero-padded keys). It needs no
  network, so `read_tfds_documents` prepares it when asked for by name.
- `read_tfds_documents(name, ...)`: every example of a prepared TFDS dataset as a document; its
  text is split into lines, then each line into sentences (`lmjax.data.text.split_sentences`).
  A public dataset (`wikipedia/20230601.en`, `lm1b`, ...) must already be prepared in
  `data_dir` (`tfds build NAME --data_dir=DIR`, with network); nothing is downloaded here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import ml_collections
import tensorflow_datasets as tfds

from lmjax import errors
from lmjax.data import books, corpora, text

FORMATS = ("wikitext", "blank_lines", "auto", "gutenberg")


class UnknownFeature(errors.InputError, KeyError):
    """`data.tfds_text_key` names no feature of the dataset (a KeyError too: a failed lookup)."""


@dataclasses.dataclass(eq=False)
class LocalTextCorpusConfig(tfds.core.BuilderConfig):
    """Local files (embedded names or paths), read in order, and their document format."""

    paths: tuple[str, ...] = ()
    format: str = "auto"  # see lmjax.data.text.read_documents


WIKITEXT2 = LocalTextCorpusConfig(
    name="wikitext2",
    description="The embedded WikiText-2 valid + test articles (lmjax/data/assets/wikitext-2).",
    paths=("wikitext2_valid", "wikitext2_test"),
    format="wikitext",
)
# Project Gutenberg books (lmjax.data.books), one example a book: put (or link) the folder that
# holds `manifest.tsv` and `books/` at MANUAL_DIR/gutenberg (TFDS's manual_dir, by default
# DATA_DIR/downloads/manual). Splits: the manifest's `train` and `valid` books ("train",
# "validation"); without a manifest, every book in "train".
GUTENBERG = LocalTextCorpusConfig(
    name="gutenberg",
    description="Project Gutenberg books from manual_dir/gutenberg, PG's headers stripped.",
    paths=("gutenberg",),  # relative to manual_dir
    format="gutenberg",
)


class LocalTextCorpus(tfds.core.GeneratorBasedBuilder):
    """Documents of local text files, one example each, in file order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One example per document, sentences joined by newlines."}
    BUILDER_CONFIGS = [WIKITEXT2, GUTENBERG]
    DEFAULT_CONFIG_NAME = "wikitext2"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "For local_text_corpus/gutenberg: put the book folder (manifest.tsv and books/pgN.txt, "
        "see lmjax/data/assets/README.md) or a link to it at MANUAL_DIR/gutenberg."
    )

    def _info(self):
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            disable_shuffling=True,  # the task holds out the last documents: keep file order
        )

    def _split_generators(self, dl_manager):
        if self.builder_config.format != "gutenberg":
            return {"train": self._generate_examples()}
        folder = os.path.join(dl_manager.manual_dir, self.builder_config.paths[0])
        if books.manifest_of(folder) is None:
            return {"train": self._book_examples(books.book_files(folder))}
        train, valid = books.train_and_eval_books(folder, 0)
        return {"train": self._book_examples(train), "validation": self._book_examples(valid)}

    def _book_examples(self, files):
        for index, file in enumerate(files):
            yield f"{index:09d}", {"text": "\n".join(books.read_book(file))}

    def _generate_examples(self):
        config = self.builder_config
        if config.format not in FORMATS:
            raise errors.InputError(
                f"unknown document format {config.format!r}: use one of {FORMATS}"
            )
        index = 0
        for path in config.paths:
            for document in text.read_documents(corpora.read_text(path), fmt=config.format):
                yield f"{index:09d}", {"text": "\n".join(document)}
                index += 1


def _data_dir(data_dir):
    return os.path.expanduser(data_dir or os.path.join("~", "tensorflow_datasets"))


def local_builder(
    config: LocalTextCorpusConfig | str | None = None,
    data_dir: str = "",
    file_format: str = "array_record",
) -> LocalTextCorpus:
    """A `LocalTextCorpus` for `config` (a `LocalTextCorpusConfig` or a config name; default
    wikitext2) in `data_dir` ("" = ~/tensorflow_datasets), prepared if it is not yet. A prepared
    config is reused as it is: after changing its files, delete its directory or rename it."""
    builder = LocalTextCorpus(config=config or WIKITEXT2, data_dir=_data_dir(data_dir))
    if not builder.is_prepared():
        builder.download_and_prepare(
            file_format=file_format,
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
    return builder


def _is_local(name):
    return name.split("/")[0] == LocalTextCorpus.name


def tfds_builder(name: str, data_dir: str = "") -> tfds.core.DatasetBuilder:
    """The prepared builder of TFDS dataset `name` (`dataset[/config][:version]`) in `data_dir`.
    Our local corpus builder is prepared on the spot; any other dataset that is not prepared raises
    `errors.MissingInput` saying how to prepare it (nothing is downloaded)."""
    data_dir = _data_dir(data_dir)
    if _is_local(name):
        config = name.split("/")[1].split(":")[0] if "/" in name else None
        return local_builder(config, data_dir)
    how = (
        f"prepare it first with `tfds build {name} --data_dir={data_dir}` (needs network; "
        f"some datasets, e.g. wikipedia, also need apache_beam), or set data.tfds_data_dir to "
        f"where it is prepared"
    )
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except Exception as e:  # unknown name, or a builder whose code does not import
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]  # not TFDS's name list
        raise errors.MissingInput(
            f"TFDS dataset {name!r} is not available in data_dir {data_dir!r} ({reason}); {how}"
        ) from e
    if not builder.is_prepared():
        raise errors.MissingInput(
            f"TFDS dataset {name!r} is not prepared in data_dir {data_dir!r} "
            f"(nothing found at {builder.data_dir}); {how}"
        )
    return builder


def _examples(builder, split):
    """Examples of `split` in stored order, as numpy (bytes for text)."""
    if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
        source = builder.as_data_source(split=split)
        return (source[i] for i in range(len(source)))
    return tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))


def read_tfds_documents(
    name: str | tfds.core.DatasetBuilder,
    split: str = "train",
    text_key: str = "text",
    data_dir: str = "",
    tokenized: bool = False,
) -> list[list[str]]:
    """Documents (lists of sentences) of TFDS dataset `name`, one per example, in stored order.

    Each example's `text_key` is split into lines and each line into sentences (`tokenized`:
    WikiText-style " . " tokens); a `LocalTextCorpus` stores one sentence per line, so its lines
    are kept as they are. Examples without a sentence are dropped. `name` may also be
    a prepared builder (e.g. `local_builder(LocalTextCorpusConfig(...))`)."""
    if isinstance(name, tfds.core.DatasetBuilder):
        builder, name = name, name.info.full_name
    else:
        builder = tfds_builder(name, data_dir)
    features = builder.info.features
    if text_key not in features:
        raise UnknownFeature(
            f"TFDS dataset {name!r} has no feature {text_key!r} (set data.tfds_text_key to one "
            f"of {sorted(features.keys())})"
        )
    if split not in builder.info.splits:
        raise errors.InputError(
            f"TFDS dataset {name!r} has no split {split!r} (set data.tfds_split to one of "
            f"{sorted(builder.info.splits.keys())})"
        )
    split_lines = not isinstance(builder, LocalTextCorpus)
    documents = [
        _sentences(example[text_key], split_lines, tokenized)
        for example in _examples(builder, split)
    ]
    return [d for d in documents if d]


def _sentences(value, split_lines, tokenized=False):
    """The sentences of an example's text: a LocalTextCorpus stores one a line; other datasets'
    lines are split into sentences."""
    value = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if not split_lines:
        return [line for line in value.splitlines() if line.strip()]
    return [
        s for line in value.splitlines() for s in text.split_sentences(line, tokenized=tokenized)
    ]


def document_source(
    data_config: ml_collections.ConfigDict, split: str
) -> tuple[int, Callable[[int], list[str]]]:
    """(number of examples, read) of `split` of the config's `data.tfds_name`, where `read(i)`
    gives the sentences of example i by random access: what a stream of documents
    (`lmjax.data.streaming`) reads. The dataset must be stored as array_record (as the local
    builder stores it; `tfds build --file_format=array_record` for others)."""
    name = data_config.tfds_name
    builder = tfds_builder(name, data_config.get("tfds_data_dir", ""))
    text_key = data_config.get("tfds_text_key", "text")
    if split not in builder.info.splits:
        raise errors.InputError(
            f"TFDS dataset {name!r} has no split {split!r} (set data.tfds_split or "
            f"data.tfds_eval_split to one of {sorted(builder.info.splits.keys())})"
        )
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise errors.InputError(
            f"TFDS dataset {name!r} is stored as {builder.info.file_format.value}: streaming "
            "reads examples by index, so prepare it with --file_format=array_record"
        )
    source = builder.as_data_source(split=split)
    split_lines = not isinstance(builder, LocalTextCorpus)
    return len(source), lambda i: _sentences(source[i][text_key], split_lines)


def read_config_documents(data_config: ml_collections.ConfigDict) -> list[list[str]]:
    """`read_tfds_documents` of a config's `data.tfds_name`, with its `tfds_split`,
    `tfds_text_key` and `tfds_data_dir` keys (or their defaults), as every task reads them."""
    return read_tfds_documents(
        data_config.tfds_name,
        split=data_config.get("tfds_split", "train"),
        text_key=data_config.get("tfds_text_key", "text"),
        data_dir=data_config.get("tfds_data_dir", ""),
    )
