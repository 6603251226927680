"""GLUE tasks (Wang et al. 2018) as (sentence A, sentence B, label) examples: the TSV files of
GLUE's `download_glue_data.py` (`glue_data/<Task>/{train,dev,test}.tsv`), or a prepared TFDS
`glue/<task>` dataset.

One reader, driven by `FORMATS` (a `TaskFormat` per task: which columns hold sentence A,
sentence B and the label, the header row, the label vocabulary). It is strict: a line that does
not fit the task's format is an `errors.InputError` naming the file and the line. Fields are split
on tabs only, with no quoting (MRPC's sentences contain quotes; google-research/bert's
run_classifier.py reads them with quotechar=None), and kept verbatim.

Label ids follow GLUE's and TFDS's order: a label's id is its position in `TaskFormat.labels`
(RTE: entailment=0, not_entailment=1; the others: "0"=0, "1"=1). STS-B is regression: a float
score in 0..5.

A GLUE test file (no labels; `index` then the sentences) reads for prediction, with
`labels=None`: line 1 tells the labelled and the test layouts apart.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lmjax import errors
from lmjax.data import corpora


@dataclasses.dataclass(frozen=True)
class TaskFormat:
    """One GLUE task: its TSV layout (column numbers from 0), its metrics and its size. The one
    registry of the tasks: the reader, the metrics, the configs and the sweep's tables read it."""

    title: str  # as GLUE's paper and leaderboard write it
    metrics: tuple[str, ...]  # of lmjax.tasks.glue_metrics (Wang et al. 2018, table 1)
    train_examples: int  # in the training set (the embedded train.tsv files)
    folder: str  # GLUE's folder name in glue_data/ ("" for SST-2: embedded in assets/sst2/)
    columns: int  # fields on every line of a labelled file
    header: tuple[str, ...] | None  # a labelled file's line 1; None: no header (CoLA)
    sentence_a: int  # column of sentence A in a labelled file
    sentence_b: int | None  # column of sentence B; None: single-sentence task
    label: int  # column of the label (or score)
    labels: tuple[str, ...] | None  # label vocabulary, id = position; None: a float score
    test_header: tuple[str, ...]  # line 1 of GLUE's unlabelled test file
    test_sentence_a: int  # column of sentence A in the test file
    test_sentence_b: int | None  # column of sentence B in the test file
    score_range: tuple[float, float] = (0.0, 5.0)  # regression only: the allowed scores


_PAIR_HEADER = ("index", "sentence1", "sentence2", "label")  # RTE and WNLI
_STSB_COLUMNS = ("index", "genre", "filename", "year", "old_index", "source1", "source2")

FORMATS: dict[str, TaskFormat] = {
    # CoLA: source, label, original label (or empty), sentence; no header.
    "cola": TaskFormat(
        title="CoLA",
        metrics=("mcc",),
        train_examples=8551,
        folder="CoLA",
        columns=4,
        header=None,
        sentence_a=3,
        sentence_b=None,
        label=1,
        labels=("0", "1"),  # unacceptable, acceptable
        test_header=("index", "sentence"),
        test_sentence_a=1,
        test_sentence_b=None,
    ),
    "sst2": TaskFormat(
        title="SST-2",
        metrics=("accuracy",),
        train_examples=67349,
        folder="",
        columns=2,
        header=("sentence", "label"),
        sentence_a=0,
        sentence_b=None,
        label=1,
        labels=("0", "1"),  # negative, positive
        test_header=("index", "sentence"),
        test_sentence_a=1,
        test_sentence_b=None,
    ),
    "mrpc": TaskFormat(
        title="MRPC",
        metrics=("f1", "accuracy"),
        train_examples=3667,
        folder="MRPC",
        columns=5,
        header=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        sentence_a=3,
        sentence_b=4,
        label=0,
        labels=("0", "1"),  # not equivalent, equivalent
        test_header=("index", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        test_sentence_a=3,
        test_sentence_b=4,
    ),
    "stsb": TaskFormat(
        title="STS-B",
        metrics=("pearson", "spearman"),
        train_examples=5749,
        folder="STS-B",
        columns=10,
        header=(*_STSB_COLUMNS, "sentence1", "sentence2", "score"),
        sentence_a=7,
        sentence_b=8,
        label=9,
        labels=None,
        test_header=(*_STSB_COLUMNS, "sentence1", "sentence2"),
        test_sentence_a=7,
        test_sentence_b=8,
    ),
    "rte": TaskFormat(
        title="RTE",
        metrics=("accuracy",),
        train_examples=2490,
        folder="RTE",
        columns=4,
        header=_PAIR_HEADER,
        sentence_a=1,
        sentence_b=2,
        label=3,
        labels=("entailment", "not_entailment"),
        test_header=("index", "sentence1", "sentence2"),
        test_sentence_a=1,
        test_sentence_b=2,
    ),
    "wnli": TaskFormat(
        title="WNLI",
        metrics=("accuracy",),
        train_examples=635,
        folder="WNLI",
        columns=4,
        header=_PAIR_HEADER,
        sentence_a=1,
        sentence_b=2,
        label=3,
        labels=("0", "1"),  # not entailment, entailment
        test_header=("index", "sentence1", "sentence2"),
        test_sentence_a=1,
        test_sentence_b=2,
    ),
}


def get_format(task: str) -> TaskFormat:
    """The `TaskFormat` of `task` (a key of `FORMATS`); InputError naming the known tasks."""
    if task not in FORMATS:
        raise errors.InputError(f"unknown GLUE task {task!r}: use one of {sorted(FORMATS)}")
    return FORMATS[task]


def is_regression(task: str) -> bool:
    """True for STS-B (a similarity score), False for the classification tasks."""
    return get_format(task).labels is None


def num_labels(task: str) -> int:
    """Outputs of the task's head: the label vocabulary's size, or 1 for a regression score."""
    labels = get_format(task).labels
    return 1 if labels is None else len(labels)


def embedded_name(task: str, split: str) -> str:
    """The `corpora.EMBEDDED` name of a task's embedded split ("train" or "dev")."""
    get_format(task)
    if split not in ("train", "dev"):
        raise errors.InputError(f"no embedded {task} split {split!r}: use 'train' or 'dev'")
    return f"{task}_{split}" if task == "sst2" else f"glue_{task}_{split}"


@dataclasses.dataclass
class Examples:
    """A task's examples, in file order. `labels`: int32 ids (classification) or float32
    scores (STS-B); None when the file has no labels (a GLUE test file)."""

    sentences_a: list[str]
    sentences_b: list[str] | None  # None for the single-sentence tasks (CoLA, SST-2)
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.sentences_a)


def _show(fields):
    return "<TAB>".join(fields)


def _lines(path):
    text = corpora.decode_file(path, encoding="utf-8-sig")  # MRPC starts with a UTF-8 BOM
    # "\n" only: str.splitlines would also split at \x0b, \x1c, \u2028, ... inside a sentence.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _layout(fmt, task, path, first, labelled):
    """Whether the file is labelled, from its line 1 (fields `first`); InputError otherwise."""
    if tuple(first) == fmt.test_header:
        if labelled:
            raise errors.InputError(
                f"{path}: line 1: a {task} test file (header {_show(fmt.test_header)!r}) has no "
                "labels to evaluate on: give a train or dev file (data.eval_path), or "
                "label it with experiments/predict.py"
            )
        return False
    is_labelled = (
        tuple(first) == fmt.header
        if fmt.header is not None
        else len(first) == fmt.columns and first[0] != "index"
    )
    if is_labelled:
        return True
    expected = (
        f"the header {_show(fmt.header)!r}"
        if fmt.header is not None
        else f"{fmt.columns} fields and no header"
    )
    raise errors.InputError(
        f"{path}: line 1: not a GLUE {task} file: expected {expected} (train/dev) or the test "
        f"header {_show(fmt.test_header)!r}, got {_show(first)[:120]!r}; is it another task's "
        f"file?"
    )


def _label(fmt, task, path, number, field):
    if fmt.labels is not None:
        if field.strip() not in fmt.labels:
            raise errors.InputError(
                f"{path}: line {number}: unknown {task} label {field!r}: use one of "
                f"{list(fmt.labels)}"
            )
        return fmt.labels.index(field.strip())
    try:
        score = float(field)
    except ValueError:
        score = None
    low, high = fmt.score_range
    if score is None or not math.isfinite(score):
        raise errors.InputError(f"{path}: line {number}: {task} score {field!r} is not a number")
    if not low <= score <= high:
        raise errors.InputError(
            f"{path}: line {number}: {task} score {score} is outside {low:g}..{high:g}"
        )
    return score


def read_tsv(path: str, task: str, labelled: bool | None = None) -> Examples:
    """The examples of GLUE task `task`'s TSV file `path` (a path or an embedded name,
    `embedded_name(task, split)`).

    labelled: None reads what line 1 says (a train/dev layout, or GLUE's test layout: labels
    None); True requires labels; False returns labels=None even from a labelled file."""
    fmt = get_format(task)
    path = corpora.resolve(path)
    lines = _lines(path)
    if not lines:
        raise errors.InputError(f"{path}: the file is empty: give a GLUE {task} TSV file")
    has_labels = _layout(fmt, task, path, lines[0].split("\t"), labelled)
    if has_labels:
        columns, col_a, col_b = fmt.columns, fmt.sentence_a, fmt.sentence_b
    else:
        columns, col_a, col_b = len(fmt.test_header), fmt.test_sentence_a, fmt.test_sentence_b
    start = 0 if has_labels and fmt.header is None else 1  # line index of the first example
    sentences_a, sentences_b, labels = [], [], []
    for number, line in enumerate(lines[start:], start=start + 1):
        fields = line.split("\t")
        if len(fields) != columns:
            raise errors.InputError(
                f"{path}: line {number}: {len(fields)} tab-separated fields, {task} lines have "
                f"{columns}{'' if has_labels else ' in the test layout'}: fix or remove the line "
                f"({line[:80]!r})"
            )
        for column in (col_a, col_b):
            if column is not None and not fields[column].strip():
                raise errors.InputError(
                    f"{path}: line {number}: empty sentence in column {column + 1}: fix or "
                    f"remove the line"
                )
        sentences_a.append(fields[col_a])
        if col_b is not None:
            sentences_b.append(fields[col_b])
        if has_labels:
            labels.append(_label(fmt, task, path, number, fields[fmt.label]))
    if not sentences_a:
        raise errors.InputError(
            f"{path}: no examples after line 1 (a header only): give a GLUE {task} file with at "
            "least one example"
        )
    dtype = np.float32 if fmt.labels is None else np.int32
    return Examples(
        sentences_a=sentences_a,
        sentences_b=sentences_b if col_b is not None else None,
        labels=np.asarray(labels, dtype) if has_labels and labelled is not False else None,
    )


def read_tfds(name: str, split: str = "train", data_dir: str = "") -> Examples:
    """The examples of a prepared TFDS GLUE dataset (`glue/<task>[:version]`, e.g. `glue/rte`)
    in `data_dir` ("" = ~/tensorflow_datasets); nothing is downloaded: a dataset that is not
    prepared is an `errors.MissingInput` saying how to prepare it (`tfds build`). Examples come in
    the order of GLUE's files (TFDS's `idx`); TFDS's label ids are GLUE's (the order of
    `FORMATS`); a split whose labels are all -1 (test) gives labels=None."""
    parts = name.split(":")[0].split("/")
    if len(parts) != 2 or parts[0] != "glue" or parts[1] not in FORMATS:
        raise errors.InputError(
            f"TFDS dataset {name!r} is not a GLUE task lmjax reads: use glue/<task> with <task> "
            f"one of {sorted(FORMATS)}"
        )
    task = parts[1]
    fmt = FORMATS[task]
    import tensorflow_datasets as tfds  # slow to import: only when asked for

    from lmjax.data import tfds_text

    builder = tfds_text.tfds_builder(name, data_dir)
    if split not in builder.info.splits:
        raise errors.InputError(
            f"TFDS dataset {name!r} has no split {split!r}: use one of "
            f"{sorted(builder.info.splits.keys())}"
        )
    if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
        source = builder.as_data_source(split=split)
        examples = (source[i] for i in range(len(source)))
    else:
        examples = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
    keys = ("sentence", None) if fmt.sentence_b is None else ("sentence1", "sentence2")
    text = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
    # TFDS shuffles GLUE's examples when it prepares them: `idx` (the row in the task's file)
    # restores the file order.
    examples = sorted(examples, key=lambda example: int(example["idx"]))
    sentences_a, sentences_b, labels = [], [], []
    for example in examples:
        sentences_a.append(text(example[keys[0]]))
        if keys[1] is not None:
            sentences_b.append(text(example[keys[1]]))
        labels.append(example["label"])
    dtype = np.float32 if fmt.labels is None else np.int32
    labels = np.asarray(labels, dtype)
    return Examples(
        sentences_a=sentences_a,
        sentences_b=sentences_b if keys[1] is not None else None,
        labels=None if labels.size and np.all(labels == -1) else labels,
    )
