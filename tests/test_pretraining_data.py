"""BERT pretraining data: documents, sentence pairs, NSP labels and MLM masking, checked against
create_pretraining_data.py's recipe by hand-worked cases and by statistics in binomial bounds."""

import numpy as np
import pytest

from lmjax.data import corpora, pretraining, text, tokenizers

PAD, UNK, CLS, SEP, MASK = range(5)
SPECIALS = dict(cls_id=CLS, sep_id=SEP, pad_id=PAD)


def binomial_ok(count, n, p, sigmas=4.0):
    """|count - n p| within `sigmas` standard deviations of a Binomial(n, p)."""
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


class ScriptedRng:
    """Plays back hand-chosen draws; each integer draw also checks the range it is drawn from."""

    def __init__(self, script):
        self.script = list(script)

    def random(self):
        value = self.script.pop(0)
        assert isinstance(value, float), f"expected a random() draw, script has {value}"
        return value

    def integers(self, low, high):
        lo, hi_inclusive, value = self.script.pop(0)
        assert (low, high - 1) == (lo, hi_inclusive), f"randint({low}, {high - 1})"
        return value


# Two documents of sentences; ids name themselves (document 1 is 20s).
DOC0 = [[10, 11, 12], [13, 14], [15, 16, 17, 18], [19]]
DOC1 = [[20, 21], [22, 23, 24]]


def test_pairs_by_hand_truncation_and_actual_next():
    rng = ScriptedRng(
        [
            0.5,  # >= short_seq_prob: target = max_seq_length - 3 = 7
            # sentences 0-2 (9 tokens >= 7) form a chunk
            (1, 2, 2),  # a_end: A = sentences 0, 1
            0.7,  # >= 0.5: B is the actual next (sentence 2)
            0.2,  # 9 > 7: trim the longer, A, at the front
            0.9,  # 8 > 7: A and B both 4 long, trim B (not longer) at the back
            # sentence 3 alone (the last one): B must be random, no coin flipped
            (0, 1, 1),  # random document 1
            (0, 1, 0),  # from its sentence 0, until B has >= 7 - 1 tokens (the document ends)
        ]
    )
    pairs = pretraining.create_pairs_from_document([DOC0, DOC1], 0, 10, 0.1, rng)
    assert rng.script == []
    assert pairs == [
        ([11, 12, 13, 14], [15, 16, 17], False),
        ([19], [20, 21, 22, 23, 24], True),
    ]


def test_pairs_by_hand_short_target_random_next_puts_sentences_back():
    rng = ScriptedRng(
        [
            0.05,  # < short_seq_prob 0.1: a short target
            (2, 7, 4),  # target 4
            # sentences 0-1 (5 tokens) form a chunk
            (1, 1, 1),  # a_end = 1
            0.3,  # < 0.5: B is random
            (0, 1, 0),  # the same document: draw again
            (0, 1, 1),  # document 1
            (0, 1, 1),  # from its sentence 1: 3 tokens >= 4 - 3, stop
            # sentence 1 was not used: it is put back and starts the next chunk (1-2)
            (1, 1, 1),  # a_end = 1
            0.6,  # actual next
            # sentence 3 alone: random
            (0, 1, 1),
            (0, 1, 0),  # sentence 0 (2 tokens < 3), then sentence 1 (5 >= 3)
        ]
    )
    pairs = pretraining.create_pairs_from_document([DOC0, DOC1], 0, 10, 0.1, rng)
    assert rng.script == []
    assert pairs == [
        ([10, 11, 12], [22, 23, 24], True),
        ([13, 14], [15, 16, 17, 18], False),
        ([19], [20, 21, 22, 23, 24], True),
    ]


def test_truncate_seq_pair_trims_the_longer_front_or_back():
    a, b = [1, 2, 3, 4, 5], [6, 7]
    pretraining.truncate_seq_pair(a, b, 5, ScriptedRng([0.1, 0.9]))
    assert (a, b) == ([2, 3, 4], [6, 7])
    a, b = [1, 2], [3, 4, 5, 6]
    pretraining.truncate_seq_pair(a, b, 4, ScriptedRng([0.9, 0.1]))  # b: back, then front
    assert (a, b) == ([1, 2], [4, 5])
    a, b = [1, 2], [3, 4]
    pretraining.truncate_seq_pair(a, b, 3, ScriptedRng([0.1]))  # a tie trims b
    assert (a, b) == ([1, 2], [4])


def test_pack_pairs_layout():
    is_continuation = np.zeros(30, dtype=bool)
    is_continuation[[12, 20]] = True  # "##" pieces; 20 starts segment B, so it starts a word
    inst = pretraining.pack_pairs(
        [([11, 12, 13], [20, 21], True), ([14], [15], False)],
        9,
        is_continuation=is_continuation,
        **SPECIALS,
    )
    expected_ids = [[CLS, 11, 12, 13, SEP, 20, 21, SEP, PAD], [CLS, 14, SEP, 15, SEP] + [PAD] * 4]
    np.testing.assert_array_equal(inst["input_ids"], expected_ids)
    np.testing.assert_array_equal(
        inst["token_type_ids"], [[0, 0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(inst["attention_mask"].sum(1), [8, 5])
    np.testing.assert_array_equal(inst["special_mask"][0], [1, 0, 0, 0, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(inst["word_start"][0], [0, 1, 0, 1, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(inst["next_sentence_label"], [1, 0])
    with pytest.raises(ValueError, match="does not fit"):
        pretraining.pack_pairs([([1] * 5, [2] * 3, False)], 10, **SPECIALS)


def synthetic_corpus(seed=0, num_docs=20, num_sentences=60, sentence_len=(2, 6)):
    """Documents whose token ids are unique and increasing: id -> (document, position)."""
    rng = np.random.default_rng(seed)
    documents, doc_of, next_id = [], {}, 5
    for d in range(num_docs):
        sentences = []
        for _ in range(num_sentences):
            n = int(rng.integers(sentence_len[0], sentence_len[1] + 1))
            sentences.append(np.arange(next_id, next_id + n, dtype=np.int32))
            doc_of.update((i, d) for i in range(next_id, next_id + n))
            next_id += n
        documents.append(sentences)
    return documents, doc_of, next_id


def segments(row_ids):
    """(A, B) token lists of a packed row."""
    seps = np.flatnonzero(row_ids == SEP)
    assert row_ids[0] == CLS and len(seps) == 2
    return list(row_ids[1 : seps[0]]), list(row_ids[seps[0] + 1 : seps[1]])


def test_instances_structure_and_nsp_rate():
    documents, doc_of, vocab_size = synthetic_corpus()
    t = 24
    inst = pretraining.create_instances(
        documents, np.random.default_rng(0), max_seq_length=t, dupe_factor=10, **SPECIALS
    )
    assert len(inst["input_ids"]) > 3000
    assert_pairs_and_nsp_rate(inst, documents, doc_of, t)


def assert_pairs_and_nsp_rate(inst, documents, doc_of, t, tolerance=None):
    """Rows are [CLS] A [SEP] B [SEP] of contiguous runs, B from later in A's document or (NSP
    label 1) another one, about half of the time where the choice is free: within binomial
    bounds, or within `tolerance` of 1/2."""
    last_sentences = {int(s) for d in documents for s in d[-1]}
    n = len(inst["input_ids"])
    assert all(v.shape[0] == n for v in inst.values())
    real_N = inst["attention_mask"].sum(1)
    assert real_N.max() == t and real_N.min() >= 5
    forced = regular_random = regular = 0
    for row in range(n):
        ids, length = inst["input_ids"][row], real_N[row]
        a, b = segments(ids[:length])
        assert a and b and len(a) + len(b) + 3 == length and (ids[length:] == PAD).all()
        types = inst["token_type_ids"][row]
        assert (types[: len(a) + 2] == 0).all() and (types[len(a) + 2 : length] == 1).all()
        # Truncation only trims ends: each segment is a contiguous run of one document.
        assert np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)
        is_random = inst["next_sentence_label"][row] == 1
        if is_random:
            assert doc_of[b[0]] != doc_of[a[0]]
        else:  # the actual continuation: later in the same document
            assert doc_of[b[0]] == doc_of[a[0]] and b[0] > a[-1]
        # A chunk of one sentence (a document's last) has a random B by construction.
        if a[0] in last_sentences:
            assert is_random
            forced += 1
        else:
            regular += 1
            regular_random += int(is_random)
    assert forced < 0.1 * n
    if tolerance is None:
        assert binomial_ok(regular_random, regular, 0.5), (regular_random, regular)
    else:
        assert abs(regular_random / regular - 0.5) < tolerance, (regular_random, regular)


def test_one_document_is_an_error():
    with pytest.raises(ValueError, match="at least two documents, the corpus has 1"):
        pretraining.create_instances(
            [DOC0], np.random.default_rng(0), max_seq_length=16, **SPECIALS
        )


def mask_kwargs(vocab_size, **overrides):
    kwargs = dict(
        masked_lm_prob=0.15,
        max_predictions_per_seq=20,
        mask_id=MASK,
        vocab_size=vocab_size,
        exclude_ids=(PAD, UNK, CLS, SEP, MASK),
    )
    return kwargs | overrides


def test_masking_rates_80_10_10_and_never_special():
    documents, _, vocab_size = synthetic_corpus(seed=1, num_docs=40)
    inst = pretraining.create_instances(
        documents, np.random.default_rng(1), max_seq_length=64, dupe_factor=5, **SPECIALS
    )
    out = pretraining.mask_tokens(inst, np.random.default_rng(2), **mask_kwargs(vocab_size))
    assert_masking_rates(inst, out, vocab_size)


def assert_masking_rates(inst, out, vocab_size):
    """15% of the real tokens chosen (never a special one), 80% [MASK], 10% kept, 10% random."""
    ids_BxT, masked_BxT = inst["input_ids"], out["input_ids"]
    pos_BxP, w_BxP = out["masked_lm_positions"], out["masked_lm_weights"]
    real_B = inst["attention_mask"].sum(1)
    count_B = w_BxP.sum(1).astype(int)
    # create_pretraining_data.py: min(max_predictions_per_seq, max(1, round(len * prob))).
    np.testing.assert_array_equal(count_B, np.minimum(20, np.maximum(1, np.round(real_B * 0.15))))
    assert abs(count_B.sum() / real_B.sum() - 0.15) < 0.01
    chosen_BxT = np.zeros_like(masked_BxT, dtype=bool)
    rows_BxP = np.broadcast_to(np.arange(len(pos_BxP))[:, None], pos_BxP.shape)
    chosen_BxT[rows_BxP[w_BxP > 0], pos_BxP[w_BxP > 0]] = True
    assert chosen_BxT.sum() == count_B.sum()  # no position twice
    assert not (chosen_BxT & inst["special_mask"]).any()
    assert (masked_BxT[~chosen_BxT] == ids_BxT[~chosen_BxT]).all()
    # Positions ascend, padding is (0, 0, 0.0), labels are the original ids.
    valid = w_BxP > 0
    assert all(np.all(np.diff(p[v]) > 0) for p, v in zip(pos_BxP, valid, strict=True))
    assert (pos_BxP[~valid] == 0).all() and (out["masked_lm_ids"][~valid] == 0).all()
    np.testing.assert_array_equal(
        out["masked_lm_ids"][valid], np.take_along_axis(ids_BxT, pos_BxP, 1)[valid]
    )
    # 80% [MASK], 10% unchanged, 10% a random non-special id (which may equal the original).
    n = int(chosen_BxT.sum())
    new, old = masked_BxT[chosen_BxT], ids_BxT[chosen_BxT]
    p_same = 1 / (vocab_size - 5)
    assert n > 10_000
    assert binomial_ok(int((new == MASK).sum()), n, 0.8)
    assert binomial_ok(int((new == old).sum()), n, 0.1 + 0.1 * p_same)
    changed = (new != MASK) & (new != old)
    assert binomial_ok(int(changed.sum()), n, 0.1 * (1 - p_same))
    assert (new[changed] >= 5).all() and (new[changed] < vocab_size).all()


def test_take_words_greedily_equals_the_original_scan():
    rng = np.random.default_rng(0)
    len_BxW = rng.integers(0, 5, size=(300, 12)) * (rng.random((300, 12)) < 0.8)
    budget_B = rng.integers(1, 12, size=300)
    taken_BxW = pretraining._take_words_greedily(len_BxW, budget_B)
    for row in range(300):
        used, expected = 0, []
        for length in len_BxW[row]:  # create_pretraining_data.py's loop, word by word
            take = 0 < length and used + length <= budget_B[row]
            used += length if take else 0
            expected.append(take)
        np.testing.assert_array_equal(taken_BxW[row], expected)


def test_whole_word_masking_masks_every_piece_of_a_word():
    # Ids 10..59 start a word, 60..109 are "##" pieces; sentences of words of 1-3 pieces.
    rng = np.random.default_rng(3)
    is_continuation = np.arange(110) >= 60
    documents = []
    for _ in range(30):
        sentences = []
        for _ in range(20):
            words = [
                [int(rng.integers(10, 60))] + list(rng.integers(60, 110, size=rng.integers(0, 3)))
                for _ in range(int(rng.integers(2, 6)))
            ]
            sentences.append(np.array(sum(words, []), dtype=np.int32))
        documents.append(sentences)
    inst = pretraining.create_instances(
        documents,
        np.random.default_rng(4),
        max_seq_length=48,
        is_continuation=is_continuation,
        **SPECIALS,
    )
    kwargs = mask_kwargs(110, whole_word=True, max_predictions_per_seq=5)
    out = pretraining.mask_tokens(inst, np.random.default_rng(5), **kwargs)
    w_BxP = out["masked_lm_weights"]
    count_B = w_BxP.sum(1)
    target_B = np.minimum(5, np.maximum(1, np.round(inst["attention_mask"].sum(1) * 0.15)))
    assert (count_B <= target_B).all() and count_B.mean() > 0.9 * target_B.mean()
    split_words = 0
    for row in range(len(w_BxP)):
        chosen = set(out["masked_lm_positions"][row][w_BxP[row] > 0].tolist())
        candidate = ~inst["special_mask"][row] & (inst["attention_mask"][row] == 1)
        word_ids = np.cumsum(inst["word_start"][row]) * candidate
        for word in set(word_ids[candidate].tolist()):
            pieces = set(np.flatnonzero(word_ids == word).tolist())
            assert pieces <= chosen or not (pieces & chosen), (row, pieces, chosen)
            split_words += len(pieces) > 1 and pieces <= chosen
    assert split_words > 100  # multi-piece words were masked, whole


def test_eval_set_is_byte_identical_and_dynamic_masks_differ():
    documents, _, vocab_size = synthetic_corpus(seed=2, num_docs=8)
    tok = FakeTokenizer(vocab_size)
    kwargs = dict(max_seq_length=32, dupe_factor=2, whole_word=True)
    first = pretraining.make_eval_set(documents, tok, seed=123, **kwargs)
    second = pretraining.make_eval_set(documents, tok, seed=123, **kwargs)
    assert sorted(first) == sorted(pretraining.INSTANCE_KEYS + pretraining.MASKED_LM_KEYS)
    for key in first:
        assert first[key].tobytes() == second[key].tobytes(), key
    other = pretraining.make_eval_set(documents, tok, seed=124, **kwargs)
    assert other["input_ids"].tobytes() != first["input_ids"].tobytes()

    # Dynamic masking: the same unmasked batch gets a fresh mask per call.
    batch = pretraining.create_pretraining_data(
        documents, tok, np.random.default_rng(0), max_seq_length=32, mask=False
    )
    one = pretraining.mask_tokens(batch, np.random.default_rng(1), **mask_kwargs(vocab_size))
    two = pretraining.mask_tokens(batch, np.random.default_rng(2), **mask_kwargs(vocab_size))
    again = pretraining.mask_tokens(batch, np.random.default_rng(1), **mask_kwargs(vocab_size))
    differ_B = (one["masked_lm_positions"] != two["masked_lm_positions"]).any(axis=1)
    assert differ_B.mean() > 0.9
    np.testing.assert_array_equal(one["masked_lm_positions"], again["masked_lm_positions"])
    np.testing.assert_array_equal(one["input_ids"], again["input_ids"])
    assert "masked_lm_positions" not in batch  # the input batch is not modified


class FakeTokenizer:
    """The special ids and vocabulary size of a WordPieceTokenizer, over integer ids."""

    pad_id, unk_id, cls_id, sep_id, mask_id = PAD, UNK, CLS, SEP, MASK
    special_ids = (PAD, UNK, CLS, SEP, MASK)

    def __init__(self, vocab_size):
        self.vocab_size = vocab_size


WIKI = "\n".join(
    [
        " ",
        " = First Article = ",
        " ",
        " The first sentence . The second , with 1 @.@ 5 m ? Yes ! ",
        " ",
        " = = A Section = = ",
        " ",
        " A <unk> paragraph . ",
        " ",
        " = Second Article = ",
        " ",
        " Only one sentence here . ",
    ]
)


def test_wikitext_articles_and_sentences():
    assert text.is_wikitext(WIKI)
    assert text.read_documents(WIKI) == [
        ["The first sentence .", "The second , with 1 @.@ 5 m ?", "Yes !", "A [UNK] paragraph ."],
        ["Only one sentence here ."],
    ]
    assert text.wikitext_documents(WIKI, unk_token=None)[0][-1] == "A <unk> paragraph ."
    valid = text.read_documents(corpora.read_text("wikitext2_valid"))
    test = text.read_documents(corpora.read_text("wikitext2_test"))
    assert (len(valid), len(test)) == (60, 62)
    assert valid[0][0].startswith("Homarus gammarus , known as the European lobster")


def test_blank_line_documents_and_plain_sentences():
    raw = 'One. Two "quoted." Three?\nA line\n\n  \nSecond doc! Mr. x stays.\n'
    assert text.read_documents(raw) == [
        ["One.", 'Two "quoted."', "Three?", "A line"],
        ["Second doc!", "Mr. x stays."],
    ]
    with pytest.raises(ValueError, match="unknown document format"):
        text.read_documents(raw, fmt="xml")


def test_wikitext_to_masked_instances_with_wordpiece():
    documents = text.read_documents(corpora.read_text("wikitext2_valid"))[:6]
    tok = tokenizers.WordPieceTokenizer.train([s for d in documents for s in d], vocab_size=600)
    ids = pretraining.tokenize_documents(documents, tok)
    data = pretraining.create_pretraining_data(
        ids, tok, np.random.default_rng(0), max_seq_length=64, whole_word=True
    )
    assert data["input_ids"].shape[1] == 64 and data["masked_lm_positions"].shape[1] == 20
    pieces = np.array(tok.vocab)[data["masked_lm_ids"][data["masked_lm_weights"] > 0]]
    assert not set(pieces.tolist()) & {"[CLS]", "[SEP]", "[PAD]"}
    # Word starts: the real, non-special tokens that are not "##" pieces or begin a segment.
    unmasked = pretraining.create_pretraining_data(
        ids, tok, np.random.default_rng(0), max_seq_length=64, mask=False
    )
    ids_NxT = unmasked["input_ids"]
    after_special_NxT = np.pad(unmasked["special_mask"][:, :-1], ((0, 0), (1, 0)))
    expected = ~unmasked["special_mask"] & (~tok.continuation_mask[ids_NxT] | after_special_NxT)
    np.testing.assert_array_equal(unmasked["word_start"], expected)
    assert (~tok.continuation_mask[ids_NxT] != unmasked["word_start"]).sum() > 0
    assert tok.unk_id in np.concatenate(ids[0])  # WikiText's <unk> is one [UNK] token
