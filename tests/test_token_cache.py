"""Token ids cached across runs (lmjax/data/token_cache.py): built once, read back equal, keyed
by the text and the tokenizer, shared by the processes of a run, never in the way."""

import os

import numpy as np
import pytest
from absl import logging

from lmjax.data import token_cache, tokenizers
from lmjax.tasks import clm
from tests.conftest import make_task, tiny_config


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(token_cache.ENV, str(folder))
    return folder / token_cache.FOLDER


def _no_tokenizing(*args):
    raise AssertionError("tokenized again")


def test_a_second_start_reads_the_ids_the_first_built(cache, monkeypatch):
    task = make_task(tiny_config())
    first = task.make_data()
    (cached,) = os.listdir(cache)
    monkeypatch.setattr(clm, "encode_in_chunks", _no_tokenizing)
    second = task.make_data()
    for a, b in ((first.train_ds, second.train_ds), (first.eval_ds, second.eval_ds)):
        assert len(a) == len(b)
        for i in (0, len(a) - 1):
            assert all(np.array_equal(a[i][k], b[i][k]) for k in a[i]), i
    text = clm.read_corpus_text(task.config)
    want = first.tokenizer.encode(text)  # the ids are the tokenizer's, in order
    assert np.array_equal(np.load(cache / cached)[: len(want)], want)


def test_another_text_or_tokenizer_builds_another_file(cache):
    text = "to be or not to be\n" * 50
    char = tokenizers.CharTokenizer.from_text(text)
    keys = {
        token_cache.key([text], char),
        token_cache.key([text + "!"], char),
        token_cache.key([text], tokenizers.CharTokenizer.from_text(text + "?")),
        token_cache.key([text, ""], char),
    }
    assert len(keys) == 4
    assert token_cache.key([text], char) == token_cache.key([text], char)


def test_turned_off_or_unwritable_it_tokenizes_and_runs_on(cache, monkeypatch, tmp_path):
    build = lambda: np.arange(5, dtype=np.int32)
    monkeypatch.setenv(token_cache.ENV, "")
    assert np.array_equal(token_cache.load_or_build("k", build), np.arange(5))
    assert not cache.exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder below a file cannot be made, even by root
    monkeypatch.setenv(token_cache.ENV, str(blocker / "cache"))
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda *a: warnings.append(a[0] % a[1:]))
    assert np.array_equal(token_cache.load_or_build("k", build), np.arange(5))
    assert len(warnings) == 1 and "token ids not cached" in warnings[0]


@pytest.mark.parametrize("shared", [True, False])
def test_process_0_builds_and_the_others_read_or_build_their_own(cache, monkeypatch, shared):
    """Two processes simulated in turn: process 0 builds and writes; process 1 reads the file
    where it sees it (a shared cache), builds its own where it does not; both reach the one
    barrier."""
    jax = token_cache.jax
    barriers, builds = [], []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(token_cache.multihost_utils, "sync_global_devices", barriers.append)

    def build():
        builds.append(1)
        return np.arange(7, dtype=np.int32)

    monkeypatch.setattr(jax, "process_index", lambda: 0)
    assert np.array_equal(token_cache.load_or_build("k", build), np.arange(7))
    if not shared:  # process 1's cache folder is its own
        monkeypatch.setenv(token_cache.ENV, str(cache.parent.parent / "other"))
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert np.array_equal(token_cache.load_or_build("k", build), np.arange(7))
    assert len(barriers) == 2 and len(builds) == (1 if shared else 2)
