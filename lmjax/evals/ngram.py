"""Interpolated Kneser-Ney n-gram language models over token ids, a baseline for BLiMP.

Modified Kneser-Ney as Chen & Goodman ("An Empirical Study of Smoothing Techniques for Language
Modeling", 1998, eq. 17-19) define it and KenLM estimates it: the highest order discounts raw
counts; a lower order discounts continuation counts (the number of distinct tokens seen before
the n-gram), except n-grams that start with the sentence-start symbol, which keep their raw
counts (nothing precedes it); each order has three discounts, D1, D2 and D3+, from its
count-of-counts; the unigrams interpolate with the uniform distribution, so every token of the
vocabulary has a probability. A single `discount` gives interpolated Kneser-Ney (Kneser & Ney
1995) with that one discount at every order.

A sentence is `bos w_1 ... w_m eos`; its log-probability is the sum of log p(w_i | history)
over w_1 .. w_m and eos (natural log). `bos` is never predicted: the vocabulary a model
predicts is every id but `bos`. An n-gram is a base-`vocab_size` integer, so a sorted array of
them is the model and `np.searchsorted` looks them up.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence

import numpy as np

from lmjax import errors
from lmjax.data import books, corpora, tokenizers
from lmjax.evals import blimp

VOCAB = "gutenberg_vocab_16k"  # the WordPiece vocabulary the books' BERT runs use (lowercased)


@dataclasses.dataclass(frozen=True)
class Level:
    """One order k of the model: its n-grams and their (raw or continuation) counts, and per
    context (the first k-1 tokens) the count total and the discounted mass."""

    keys_N: np.ndarray  # int64, sorted: the k-grams seen
    counts_N: np.ndarray  # float64, the counts the order discounts
    discounts_4: np.ndarray  # float64, D(0) = 0, D(1), D(2), D(3+)
    context_keys_C: np.ndarray  # int64, sorted: the (k-1)-grams seen as contexts (empty for k=1)
    context_totals_C: np.ndarray  # float64, sum of the counts of the k-grams with that context
    context_mass_C: np.ndarray  # float64, the discount taken from them: the lower order's weight


@dataclasses.dataclass(frozen=True)
class NgramLM:
    order: int
    vocab_size: int
    bos: int
    eos: int
    levels: tuple[Level, ...]  # orders 1 .. order

    @classmethod
    def train(
        cls,
        sentences: Sequence[np.ndarray],
        order: int,
        vocab_size: int,
        bos: int,
        eos: int,
        discount: float | None = None,
    ) -> NgramLM:
        """Counts the n-grams of `sentences` (token ids, without bos/eos) up to `order`;
        modified Kneser-Ney discounts per order, or the one `discount` when given."""
        if order < 1:
            raise errors.InputError(f"--order={order} must be >= 1")
        if vocab_size ** (order + 1) >= 2**63:
            raise errors.InputError(f"order {order} over {vocab_size:,} ids does not fit int64")
        ids_T, sentence_T = _frame(sentences, bos, eos)
        raw = [_count(ids_T, sentence_T, k, vocab_size) for k in range(1, order + 1)]
        levels = []
        for k in range(1, order + 1):
            keys, counts = raw[k - 1]
            if k < order:
                keys, counts = _continuation(raw[k][0], keys, counts, k, vocab_size, bos)
            if k == 1:  # bos is never predicted: no unigram mass
                keep = keys != bos
                keys, counts = keys[keep], counts[keep]
            discounts = _discounts(counts, discount)
            levels.append(_level(keys, counts, discounts, k, vocab_size))
        return cls(order, vocab_size, bos, eos, tuple(levels))

    def log_probs(self, histories_NxH: np.ndarray, targets_N: np.ndarray) -> np.ndarray:
        """[N] natural log p(target | history); a history is the `order - 1` ids before the
        target, -1 where the sentence has fewer (right-aligned: the last column is nearest)."""
        first = self.levels[0]
        found, index = _find(first.keys_N, targets_N)
        counts = np.where(found, first.counts_N[index], 0.0)
        total, mass = first.context_totals_C[0], first.context_mass_C[0]
        prob_N = (counts - _discount(first, counts)) / total + mass / total / (self.vocab_size - 1)
        for k in range(2, self.order + 1):
            level = self.levels[k - 1]
            context_NxK = histories_NxH[:, histories_NxH.shape[1] - (k - 1) :]
            known = np.all(context_NxK >= 0, axis=1)
            context_N = _encode(np.maximum(context_NxK, 0), self.vocab_size)
            seen, c_index = _find(level.context_keys_C, context_N)
            seen &= known
            found, index = _find(level.keys_N, context_N * self.vocab_size + targets_N)
            counts = np.where(found & seen, level.counts_N[index], 0.0)
            total = np.where(seen, level.context_totals_C[c_index], 1.0)
            mass = np.where(seen, level.context_mass_C[c_index], 0.0)
            mixed = (counts - _discount(level, counts)) / total + mass / total * prob_N
            prob_N = np.where(seen, mixed, prob_N)  # an unseen context backs off entirely
        return np.log(prob_N)

    def sentence_logprobs(self, sentences: Sequence[np.ndarray]) -> np.ndarray:
        """[S] log p(bos w_1 .. w_m eos) of each sentence of ids (without bos/eos)."""
        if not len(sentences):
            return np.zeros(0)
        ids_T, sentence_T = _frame(sentences, self.bos, self.eos)
        targets = np.flatnonzero(ids_T != self.bos)  # every position but the sentence starts
        width = max(self.order - 1, 1)
        histories_NxH = np.full((len(targets), width), -1, np.int64)
        for back in range(1, self.order):
            source = targets - back
            same = sentence_T[np.maximum(source, 0)] == sentence_T[targets]
            histories_NxH[:, width - back] = np.where(same & (source >= 0), ids_T[source], -1)
        logp_N = self.log_probs(histories_NxH, ids_T[targets])
        # Each sentence's terms summed in sorted order: the same terms in another order (a
        # reordered BLiMP pair under a unigram model) give the same float sum, a tie.
        order = np.lexsort((logp_N, sentence_T[targets]))
        return np.bincount(
            sentence_T[targets][order], weights=logp_N[order], minlength=len(sentences)
        )


def _frame(sentences: Sequence[np.ndarray], bos: int, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, sentence index) of every position of `bos s eos` for each sentence s, end to end."""
    lengths = np.array([len(s) + 2 for s in sentences], np.int64)
    ids_T = np.empty(int(lengths.sum()), np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    ids_T[starts], ids_T[ends - 1] = bos, eos
    inner = np.ones(len(ids_T), bool)
    inner[starts], inner[ends - 1] = False, False
    ids_T[inner] = np.concatenate([np.asarray(s, np.int64) for s in sentences] or [[]])
    return ids_T, np.repeat(np.arange(len(sentences)), lengths)


def _encode(grams_NxK: np.ndarray, vocab_size: int) -> np.ndarray:
    """Each row of ids as one base-`vocab_size` integer."""
    key = np.zeros(len(grams_NxK), np.int64)
    for column in range(grams_NxK.shape[1]):
        key = key * vocab_size + grams_NxK[:, column]
    return key


def _count(
    ids_T: np.ndarray, sentence_T: np.ndarray, k: int, vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys, raw counts) of the k-grams inside the sentences."""
    n = len(ids_T) - k + 1
    starts = np.flatnonzero(sentence_T[:n] == sentence_T[k - 1 :])
    grams_NxK = np.stack([ids_T[starts + j] for j in range(k)], axis=1)
    keys, counts = np.unique(_encode(grams_NxK, vocab_size), return_counts=True)
    return keys, counts.astype(np.float64)


def _continuation(
    higher_keys: np.ndarray,
    keys: np.ndarray,
    raw_counts: np.ndarray,
    k: int,
    vocab_size: int,
    bos: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The counts a lower order k discounts: for each k-gram, the number of distinct tokens
    seen before it (the (k+1)-grams it ends); its raw count when it starts with bos."""
    suffixes, continuation = np.unique(higher_keys % vocab_size**k, return_counts=True)
    counts = np.zeros(len(keys))
    found, index = _find(suffixes, keys)
    counts[found] = continuation[index[found]]
    starts_bos = keys // vocab_size ** (k - 1) == bos
    counts[starts_bos] = raw_counts[starts_bos]
    keep = counts > 0
    return keys[keep], counts[keep]


def _discounts(counts_N: np.ndarray, discount: float | None) -> np.ndarray:
    """[D(0)=0, D1, D2, D3+]: Chen & Goodman's estimates from the count-of-counts n1..n4, each
    kept within [0, c] so that no n-gram loses more than its count; or one `discount`."""
    if discount is not None:
        if not 0 < discount <= 1:
            raise errors.InputError(f"discount={discount} must be in (0, 1]")
        return np.array([0.0, discount, discount, discount])
    n = [float(np.sum(counts_N == c)) for c in (1, 2, 3, 4)]
    if min(n) == 0:  # too little data for the estimates: Kneser & Ney's single discount
        d = n[0] / (n[0] + 2 * n[1]) if n[0] + n[1] else 0.5
        return np.array([0.0, d, d, d])
    y = n[0] / (n[0] + 2 * n[1])
    estimates = [1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]]
    return np.array([0.0, *(np.clip(d, 0, c) for c, d in enumerate(estimates, 1))])


def _discount(level: Level, counts_N: np.ndarray) -> np.ndarray:
    return level.discounts_4[np.minimum(counts_N, 3).astype(np.int64)]


def _level(
    keys: np.ndarray, counts: np.ndarray, discounts: np.ndarray, k: int, vocab_size: int
) -> Level:
    """The order-k level: its n-grams and their per-context totals and discounted mass."""
    taken = discounts[np.minimum(counts, 3).astype(np.int64)]
    if k == 1:
        contexts = np.zeros(1, np.int64)
        totals, mass = np.array([counts.sum()]), np.array([taken.sum()])
    else:  # keys are sorted, so each context's n-grams are one run
        contexts, first = np.unique(keys // vocab_size, return_index=True)
        totals, mass = np.add.reduceat(counts, first), np.add.reduceat(taken, first)
    return Level(keys, counts, discounts, contexts, totals, mass)


def _find(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found, index) of each query in `sorted_keys` (index clipped in range where not found)."""
    if not len(sorted_keys):
        return np.zeros(len(queries), bool), np.zeros(len(queries), np.int64)
    index = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return sorted_keys[index] == queries, index


#### BLiMP


def tokenizer() -> tokenizers.WordPieceTokenizer:
    """The books' lowercased WordPiece vocabulary: the tokens a BERT or GPT on them sees."""
    return tokenizers.WordPieceTokenizer.from_vocab_file(corpora.resolve(VOCAB), lowercase=True)


def corpus_sentences(path: str, max_words: int) -> tuple[list[str], list[tuple[str, int]]]:
    """(sentences, `books.first_words` cut) of the first `max_words` words of the `train` books
    of `path` (manifest order)."""
    train_files, _ = books.train_and_eval_books(path, num_eval=1)
    kept = books.first_words_sentences(train_files, max_words)
    return [s for _, sentences in kept for s in sentences], [(f, len(s)) for f, s in kept]


def evaluate(
    path: str,
    order: int,
    max_words: int,
    data: str | None = None,
    limit: int | None = None,
    output: str | None = None,
) -> dict:
    """Trains an order-`order` modified Kneser-Ney model on the first `max_words` words of the
    books of `path` and scores BLiMP's pairs (`data`, `limit` as `blimp.read_pairs`); the
    summary as `blimp.evaluate` returns it (the n-gram model in place of a workdir)."""
    blimp.check_output(output)
    pairs = blimp.read_pairs(data, limit)
    _, summary_file = blimp.data_files(data)
    tok = tokenizer()
    tick = time.perf_counter()
    sentences, cut = corpus_sentences(path, max_words)
    ids = tok.encode_batch(sentences)
    model = NgramLM.train(ids, order, tok.vocab_size, tok.cls_id, tok.sep_id)
    train_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    texts = [p.good for p in pairs] + [p.bad for p in pairs]
    logp = model.sentence_logprobs(tok.encode_batch(texts))
    seconds = time.perf_counter() - tick
    n = len(pairs)
    metric = f"{order}-gram"
    correct, tie = blimp.decide(logp[:n], logp[n:])
    if output is not None:
        blimp.write_pair_scores(output, pairs, {metric: logp}, metric)
    result = blimp.aggregate(pairs, correct, tie)
    return {
        "model": f"{metric} modified Kneser-Ney, first {max_words:,} words of {path}",
        "workdir": os.path.abspath(path),
        "step": None,
        "task": "ngram",
        "metric": metric,
        "data": data or blimp.DATA,
        "limit": limit,
        "num_paradigms": len(result["paradigms"]),
        "num_pairs": n,
        "seconds": round(seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "corpus": {
            "books": len(cut),
            "last_book": cut[-1][0] if cut else None,
            "sentences": len(sentences),
            "words": sum(len(s.split()) for s in sentences),
            "tokens": int(sum(len(i) for i in ids)),
        },
        "overall": result["overall"],
        "ties": result["ties"],
        "results": {metric: result},
        "paper": blimp.paper_rows(pairs, summary_file),
    }
