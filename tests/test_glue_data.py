"""GLUE readers: every task on its real embedded files (counts, first example), strict errors
that name the file and line, GLUE's unlabelled test layout, and the TFDS route (offline)."""

import os
import re

import numpy as np
import pytest

from lmjax.data import corpora, glue

# (train, dev) example counts of GLUE's glue_data/ files.
COUNTS = {
    "cola": (8551, 1043),
    "sst2": (67349, 872),
    "mrpc": (3667, 408),
    "stsb": (5749, 1500),
    "rte": (2490, 277),
    "wnli": (635, 71),
}

# The first dev example of each task: (sentence A, sentence B, label), verbatim.
FIRST_DEV = {
    "cola": ("The sailors rode the breeze clear of the rocks.", None, 1),
    "sst2": ("it 's a charming and often affecting journey . ", None, 1),
    "mrpc": (
        "He said the foodservice pie business doesn 't fit the company 's long-term growth "
        "strategy .",
        '" The foodservice pie business does not fit our long-term growth strategy .',
        1,
    ),
    "stsb": ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0),
    "rte": (
        "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age "
        "44, according to the Christopher Reeve Foundation.",
        "Christopher Reeve had an accident.",
        1,  # not_entailment
    ),
    "wnli": (
        "The drain is clogged with hair. It has to be cleaned.",
        "The hair has to be cleaned.",
        0,
    ),
}

FIRST_TRAIN = {
    "cola": ("Our friends won't buy this analysis, let alone the next one we propose.", None, 1),
    "sst2": ("hide new secretions from the parental units ", None, 0),
    "mrpc": (
        'Amrozi accused his brother , whom he called " the witness " , of deliberately '
        "distorting his evidence .",
        'Referring to him as only " the witness " , Amrozi accused his brother of deliberately '
        "distorting his evidence .",
        1,
    ),
    "stsb": ("A plane is taking off.", "An air plane is taking off.", 5.0),
    "rte": (
        "No Weapons of Mass Destruction Found in Iraq Yet.",
        "Weapons of Mass Destruction Found in Iraq.",
        1,
    ),
    "wnli": (
        "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.",
        "The carrot had a hole.",
        1,
    ),
}


def _first(examples):
    b = examples.sentences_b[0] if examples.sentences_b is not None else None
    return examples.sentences_a[0], b, examples.labels[0].item()


@pytest.mark.parametrize("task", sorted(COUNTS))
def test_embedded_files(task):
    for split, count, first in [
        ("train", COUNTS[task][0], FIRST_TRAIN[task]),
        ("dev", COUNTS[task][1], FIRST_DEV[task]),
    ]:
        examples = glue.read_tsv(glue.embedded_name(task, split), task)
        assert len(examples) == len(examples.labels) == count
        assert _first(examples) == first
        if glue.FORMATS[task].sentence_b is None:
            assert examples.sentences_b is None
        else:
            assert len(examples.sentences_b) == count
        if glue.is_regression(task):
            assert examples.labels.dtype == np.float32
            assert 0 <= examples.labels.min() and examples.labels.max() <= 5
        else:
            assert examples.labels.dtype == np.int32
            assert set(np.unique(examples.labels)) == {0, 1}
        assert all(s.strip() for s in examples.sentences_a)


def test_task_table():
    assert sorted(glue.FORMATS) == sorted(COUNTS)
    assert {t: glue.num_labels(t) for t in COUNTS} == {
        "cola": 2, "sst2": 2, "mrpc": 2, "stsb": 1, "rte": 2, "wnli": 2
    }  # fmt: skip
    assert [t for t in COUNTS if glue.is_regression(t)] == ["stsb"]
    assert glue.FORMATS["rte"].labels == ("entailment", "not_entailment")  # TFDS / GLUE order
    assert glue.embedded_name("sst2", "dev") == "sst2_dev"
    for task in COUNTS:
        for split in ("train", "dev"):
            assert os.path.isfile(corpora.resolve(glue.embedded_name(task, split)))
    with pytest.raises(ValueError, match="unknown GLUE task 'mnli'"):
        glue.num_labels("mnli")


def _write(path, lines, bom=False):
    path.write_bytes(("\ufeff" if bom else "").encode() + "\n".join(lines).encode() + b"\n")
    return str(path)


def _error(path, task, line, *fragments, labelled=None):
    with pytest.raises(ValueError) as e:
        glue.read_tsv(path, task, labelled=labelled)
    message = str(e.value)
    assert message.startswith(f"{path}: line {line}: "), message
    assert "\n" not in message
    for fragment in fragments:
        assert re.search(fragment, message), message


RTE_HEADER = "index\tsentence1\tsentence2\tlabel"


def test_malformed_lines_are_named(tmp_path):
    rte = [RTE_HEADER, "0\tA man sleeps.\tA person sleeps.\tentailment"]
    path = _write(tmp_path / "columns.tsv", [*rte, "1\tA man sleeps.\tentailment"])
    _error(path, "rte", 3, "3 tab-separated fields, rte lines have 4")
    path = _write(tmp_path / "label.tsv", [*rte, "1\tA man sleeps.\tNo one sleeps.\tcontradiction"])
    _error(path, "rte", 3, "unknown rte label 'contradiction'", "not_entailment")
    path = _write(tmp_path / "empty.tsv", [*rte, "1\t \tNo one sleeps.\tentailment"])
    _error(path, "rte", 3, "empty sentence")
    # CoLA: no header, so line 1 is the first example.
    path = _write(tmp_path / "cola.tsv", ["gj04\t1\t\tFine.", "gj04\t2\t*\tBad label."])
    _error(path, "cola", 2, "unknown cola label '2'")
    stsb = [
        "\t".join(glue.FORMATS["stsb"].header),
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane.\tA jet.\t4.2",
    ]
    row = "1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA cat.\tA dog.\t"
    _error(
        _write(tmp_path / "high.tsv", [*stsb, row + "5.5"]), "stsb", 3, r"5\.5 is outside 0\.\.5"
    )
    _error(_write(tmp_path / "low.tsv", [*stsb, row + "-0.1"]), "stsb", 3, "outside")
    _error(_write(tmp_path / "nan.tsv", [*stsb, row + "nan"]), "stsb", 3, "'nan' is not a number")
    _error(_write(tmp_path / "word.tsv", [*stsb, row + "high"]), "stsb", 3, "not a number")
    examples = glue.read_tsv(_write(tmp_path / "ok.tsv", [*stsb, row + "0"]), "stsb")
    np.testing.assert_array_equal(examples.labels, np.asarray([4.2, 0.0], np.float32))


def test_another_tasks_file_is_named():
    mrpc_dev = corpora.resolve("glue_mrpc_dev")
    _error(mrpc_dev, "rte", 1, "not a GLUE rte file", "index<TAB>sentence1")
    _error(corpora.resolve("glue_rte_dev"), "mrpc", 1, "not a GLUE mrpc file", "Quality")
    _error(corpora.resolve("glue_rte_dev"), "cola", 1, "not a GLUE cola file", "4 fields")
    _error(corpora.resolve("glue_cola_dev"), "sst2", 1, "not a GLUE sst2 file")
    # RTE and WNLI share a header: the first label tells them apart.
    _error(corpora.resolve("glue_rte_dev"), "wnli", 2, "unknown wnli label 'not_entailment'")
    _error(corpora.resolve("glue_wnli_dev"), "rte", 2, "unknown rte label '0'")


def test_unlabelled_test_files(tmp_path):
    """GLUE's test layout (index, then the sentences) reads for prediction, with no labels."""
    mrpc = _write(
        tmp_path / "mrpc_test.tsv",
        [
            "index\t#1 ID\t#2 ID\t#1 String\t#2 String",
            '0\t1089874\t1089925\tPCCW \'s chief said " no " .\tThe chief said no .',
            "1\t3019446\t3019327\tThe world is round .\tEarth is round .",
        ],
        bom=True,
    )
    examples = glue.read_tsv(mrpc, "mrpc")
    assert examples.labels is None
    assert examples.sentences_a == ['PCCW \'s chief said " no " .', "The world is round ."]
    assert examples.sentences_b == ["The chief said no .", "Earth is round ."]
    cola = _write(tmp_path / "cola_test.tsv", ["index\tsentence", "0\tBill whistled.", "1\tA b."])
    examples = glue.read_tsv(cola, "cola", labelled=False)
    assert (examples.sentences_a, examples.sentences_b, examples.labels) == (
        ["Bill whistled.", "A b."],
        None,
        None,
    )
    stsb = _write(
        tmp_path / "stsb_test.tsv",
        [
            "\t".join(glue.FORMATS["stsb"].test_header),
            "0\tmain-captions\tMSRvid\t2012test\t0024\tnone\tnone\tA girl.\tA woman.",
        ],
    )
    assert glue.read_tsv(stsb, "stsb").sentences_b == ["A woman."]
    _error(cola, "cola", 1, "test file", "data.eval_path", labelled=True)
    bad = _write(tmp_path / "rte_test.tsv", ["index\tsentence1\tsentence2", "0\tOnly one."])
    _error(bad, "rte", 2, "2 tab-separated fields, rte lines have 3 in the test layout")
    # labelled=False on a labelled file: the sentences, no labels.
    dev = glue.read_tsv("glue_rte_dev", "rte", labelled=False)
    assert dev.labels is None and len(dev) == 277


def test_crlf_and_no_final_newline(tmp_path):
    path = tmp_path / "crlf.tsv"
    path.write_bytes(b"sentence\tlabel\r\nGood film .\t1\r\nBad \x0bfilm .\t0")
    examples = glue.read_tsv(str(path), "sst2")
    # Only "\n" ends a line: a vertical tab inside a sentence stays there.
    assert examples.sentences_a == ["Good film .", "Bad \x0bfilm ."]
    np.testing.assert_array_equal(examples.labels, [1, 0])


def test_tfds_not_prepared_is_a_one_line_error(tmp_path, no_network):
    with pytest.raises(FileNotFoundError) as e:
        glue.read_tfds("glue/rte", "train", data_dir=str(tmp_path))
    message = str(e.value)
    assert "'glue/rte'" in message and f"tfds build glue/rte --data_dir={tmp_path}" in message
    assert "\n" not in message and len(message) < 600
    with pytest.raises(ValueError, match="glue/<task>"):
        glue.read_tfds("glue/mnli", data_dir=str(tmp_path))


def _local_glue(data_dir, task, test_file, file_format):
    """Prepares TFDS `glue/<task>` in `data_dir` from the embedded files, with TFDS's own GLUE
    builder code (its TSV parsing and labels), but no download."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.text import glue as tfds_glue

    class LocalGlue(tfds_glue.Glue, skip_registration=True):
        name = "glue"  # prepared where tfds.builder("glue/<task>") looks for it

        def _split_generators(self, dl_manager):
            files = {
                "train": corpora.resolve(glue.embedded_name(task, "train")),
                "validation": corpora.resolve(glue.embedded_name(task, "dev")),
                "test": test_file,
            }
            return {
                split: self._generate_examples(path, "dev" if split == "validation" else split)
                for split, path in files.items()
            }

    builder = LocalGlue(config=task, data_dir=data_dir)
    builder.download_and_prepare(
        file_format=file_format,
        download_config=tfds.download.DownloadConfig(try_download_gcs=False),
    )


@pytest.mark.parametrize("task, file_format", [("rte", "array_record"), ("cola", "tfrecord")])
def test_tfds_glue_equals_the_files(tmp_path, no_network, task, file_format):
    """TFDS's examples (shuffled when prepared) come back in file order, with the same ids."""
    test_file = _write(
        tmp_path / "test.tsv",
        ["\t".join(glue.FORMATS[task].test_header)]
        + [f"{i}\tSentence {i}." + ("\tHypothesis." if task == "rte" else "") for i in range(3)],
    )
    data_dir = str(tmp_path / "tfds")
    _local_glue(data_dir, task, test_file, file_format)
    for split, tsv in [("train", "train"), ("validation", "dev")]:
        from_tfds = glue.read_tfds(f"glue/{task}", split, data_dir=data_dir)
        from_file = glue.read_tsv(glue.embedded_name(task, tsv), task)
        assert from_tfds.sentences_a == from_file.sentences_a
        assert from_tfds.sentences_b == from_file.sentences_b
        np.testing.assert_array_equal(from_tfds.labels, from_file.labels)
        assert from_tfds.labels.dtype == np.int32
    test = glue.read_tfds(f"glue/{task}", "test", data_dir=data_dir)
    assert test.labels is None and test.sentences_a == [f"Sentence {i}." for i in range(3)]
    assert test.sentences_a == glue.read_tsv(test_file, task).sentences_a


@pytest.mark.parametrize("task", sorted(glue.FORMATS))
def test_the_registry_counts_each_embedded_training_set(task):
    """`train_examples` (which sets a GLUE run's steps) is the embedded train.tsv's size."""
    name = "sst2_train" if task == "sst2" else f"glue_{task}_train"
    examples = glue.read_tsv(corpora.resolve(name), task)
    assert len(examples.labels) == glue.FORMATS[task].train_examples
