"""Streamed BERT instances (lmjax.data.streaming): the same batches in every run and after a
resume, and the statistics of the in-memory instance creation (NSP, 15% masked, 80/10/10)."""

import os
import shutil

import numpy as np

from configs import bert_books
from lmjax.data import pretraining, streaming
from tests.test_pretraining_data import (
    MASK,
    SPECIALS,
    assert_masking_rates,
    assert_pairs_and_nsp_rate,
    mask_kwargs,
    synthetic_corpus,
)


class IdTokenizer:
    """The synthetic corpus's "sentences" are already id arrays."""

    cls_id, sep_id, pad_id, mask_id = (
        SPECIALS["cls_id"],
        SPECIALS["sep_id"],
        SPECIALS["pad_id"],
        MASK,
    )

    def encode(self, sentence):
        return np.asarray(sentence, np.int32)


def stream(documents, seed=0, **kwargs):
    kwargs = dict(max_seq_length=32, group_size=4, window_size=300) | kwargs
    return streaming.instance_stream(
        list(range(len(documents))), documents.__getitem__, IdTokenizer(), seed, **kwargs
    )


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_same(rows_a, rows_b):
    assert len(rows_a) == len(rows_b)
    for a, b in zip(rows_a, rows_b, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].tobytes() == b[k].tobytes(), k


def test_same_seed_same_instances_other_seed_others():
    documents, _, _ = synthetic_corpus(num_docs=12)
    first = take(iter(stream(documents)), 500)
    assert_same(first, take(iter(stream(documents)), 500))
    other = take(iter(stream(documents, seed=1)), 500)
    assert any(
        a["input_ids"].tobytes() != b["input_ids"].tobytes()
        for a, b in zip(first, other, strict=True)
    )


def test_resume_mid_epoch_continues_with_the_uninterrupted_stream():
    documents, _, _ = synthetic_corpus(num_docs=12)
    ds = stream(documents).batch(8)
    straight = iter(ds)
    take(straight, 37)  # inside a window, a group and the first epoch (12 documents)
    state = straight.get_state()
    expected = take(straight, 150)  # across windows, groups and epochs
    resumed = iter(stream(documents).batch(8))
    resumed.set_state(state)
    assert_same(take(resumed, 150), expected)


def test_streamed_instances_keep_the_pairs_nsp_rate_and_masking_rates():
    documents, doc_of, vocab_size = synthetic_corpus(num_docs=16)
    rows = take(iter(stream(documents, window_size=1000)), 4000)
    inst = {k: np.stack([r[k] for r in rows]) for k in pretraining.INSTANCE_KEYS}
    # The original's "put back" (a random B returns the chunk's unused sentences, so that
    # document yields another pair) makes random Bs a little more frequent and correlated: 0.53
    # over 20 seeds of the in-memory creation at this length. Binomial bounds are too tight.
    assert_pairs_and_nsp_rate(inst, documents, doc_of, 32, tolerance=0.06)
    out = pretraining.mask_tokens(inst, np.random.default_rng(0), **mask_kwargs(vocab_size))
    assert_masking_rates(inst, out, vocab_size)
    # Every epoch pairs the documents anew: the instances of two epochs differ.
    a = {r["input_ids"].tobytes() for r in rows[:1000]}
    assert len(a & {r["input_ids"].tobytes() for r in rows[-1000:]}) < 50


def test_a_books_run_resumed_mid_epoch_equals_an_uninterrupted_one(tmp_path):
    """configs/bert_books.py:test streams the fixture books; a run stopped after its step-3
    checkpoint and rerun logs the losses of one that never stopped."""
    from lmjax import workdir as workdir_lib
    from lmjax.train import loop

    config = bert_books.get_config("test")
    config.log_every_steps = 1

    def losses(workdir):
        return {
            r["step"]: r["train/loss"]
            for r in workdir_lib.read_metrics(workdir)
            if "train/loss" in r
        }

    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    loop.train_and_evaluate(config, straight)
    loop.train_and_evaluate(config, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))  # as if killed after step 3's save
    loop.train_and_evaluate(config, resumed)
    assert sorted(losses(resumed)) == [1, 2, 3, 4, 5, 6]
    assert losses(resumed) == losses(straight)
