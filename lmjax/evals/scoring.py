"""Sentence log-probabilities under a trained language model, for zero-shot evaluation.

Causal LMs (GPT): log p(sentence) is the sum of its tokens' log-probabilities, each given the
tokens before it, after a start token (`start_id`) so that the first token is scored too. A
sentence longer than the model's positions is scored in windows that re-read the last half
window, as `lmjax.sampling` goes on past `max_len`.

Masked LMs (BERT): pseudo-log-likelihood, PLL (Salazar et al. 2020, "Masked Language Model
Scoring"): `[CLS] tokens [SEP]`, each token masked in turn and its log-probability read at the
mask; [CLS] and [SEP] are in every input, never masked or scored. PLL-word-l2r (Kauf & Ivanova
2023, "A Better Way to Do Masked Language Model Scoring") also masks the pieces of the same word
to the right of the scored one (a `##` piece continues a word), so that a word cut into pieces
does not give away its own ending. Both come from one pass: a row that masks the same tokens for
both (every single-piece word, every word's last piece) runs once.

Each forward pass scores one row (a window, or a copy with masks). Rows are padded to a few
bucket lengths (`BUCKETS`) and run in batches of a fixed number of rows, so that a benchmark
compiles once per bucket; the MLM head runs at the one masked position of a row only
(`masked_lm_positions`). Identical token sequences are scored once, so they get the same score
bit for bit: two sentences that tokenize alike tie, whatever the batch they would have run in.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lmjax import errors
from lmjax.data import tokenizers
from lmjax.models import bert
from lmjax.models.transformer import Transformer

CAUSAL = "logp"  # sum of token log-probs of a causal LM
PLL = "pll"  # pseudo-log-likelihood of a masked LM
PLL_WORD_L2R = "pll_word_l2r"  # PLL with the later pieces of the scored word masked too
# Padded row lengths: at most 1.5x the real length, a handful of compilations per benchmark.
BUCKETS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def metrics_of(model: nn.Module) -> tuple[str, ...]:
    """The scores `score_sentences` gives for `model`: (CAUSAL,) for a GPT, (PLL, PLL_WORD_L2R)
    for a BERT with its MLM head; `errors.InputError` for a model without an LM head."""
    if isinstance(model, bert.BertForPreTraining):
        return (PLL, PLL_WORD_L2R)
    if type(model) is Transformer and model.cfg.causal:
        return (CAUSAL,)
    raise errors.InputError(
        f"a {type(model).__name__} has no language-model head to score sentences with: give a "
        "GPT (task clm) or BERT pretraining (task mlm_nsp) workdir"
    )


def bucket_length(length: int, max_len: int) -> int:
    """The smallest of `BUCKETS` that holds `length` tokens, at most `max_len`."""
    return min(next((b for b in BUCKETS if b >= length), max_len), max_len)


def start_id(tokenizer: tokenizers.Tokenizer) -> int:
    """The token a causal LM's sentence is scored after: "\\n" for a character vocabulary (a
    line starts after one; sample.py's default prompt), [CLS] for a WordPiece vocabulary (the
    start symbol of the n-gram baselines on the same tokens), else the end-of-text token
    (GPT-2's <|endoftext|>, which separates its training documents)."""
    if isinstance(tokenizer, tokenizers.WordPieceTokenizer):  # a causal LM on BERT's tokens
        return int(tokenizer.cls_id)
    if isinstance(tokenizer, tokenizers.CharTokenizer):
        chars = tokenizer.chars
        found, what = chars.index("\n") if "\n" in chars else None, 'a newline "\\n"'
    else:
        found = getattr(tokenizer, "eos_id", None)
        found = tokenizer.token_to_id("<|endoftext|>") if found is None else found
        what = "an end-of-text token (eos_token, <|endoftext|>)"
    if found is None:
        raise errors.InputError(
            f"the vocabulary has no {what} to start a sentence with: a causal LM scores a "
            "sentence's first token after one"
        )
    return int(found)


def encode(tokenizer: tokenizers.Tokenizer, sentences: Sequence[str]) -> list[np.ndarray]:
    """Token ids of each sentence (no special tokens); `errors.InputError` naming the first
    sentence the vocabulary cannot encode."""
    if hasattr(tokenizer, "encode_batch"):
        return tokenizer.encode_batch(sentences)
    out = []
    for s in sentences:
        try:
            out.append(tokenizer.encode(s))
        except errors.InputError as e:
            raise errors.InputError(f"the sentence {s!r} does not encode: {e}") from None
    return out


def score_sentences(
    model: nn.Module,
    params: object,
    tokenizer: tokenizers.Tokenizer,
    sentences: Sequence[str],
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """{score name (`metrics_of`): [N] float64 log-probabilities of `sentences`}.

    `batch_size` rows (windows or masked copies) go through the model per call."""
    if batch_size < 1:
        raise errors.InputError(f"batch_size={batch_size} must be >= 1")
    names = metrics_of(model)
    ids = encode(tokenizer, sentences)
    unique, inverse = {}, np.empty(len(ids), np.int64)
    for i, x in enumerate(ids):  # one score per distinct token sequence
        inverse[i] = unique.setdefault(x.astype(np.int32).tobytes(), len(unique))
    seqs = [np.frombuffer(key, np.int32) for key in unique]
    if names == (CAUSAL,):
        scores = {CAUSAL: _causal_scores(model, params, seqs, start_id(tokenizer), batch_size)}
    else:
        scores = _masked_scores(model, params, tokenizer, seqs, sentences, inverse, batch_size)
    return {name: value[inverse] for name, value in scores.items()}


#### Running rows in batches


def _run_rows(
    fn: Callable[..., jax.Array],
    num_rows: int,
    make_batch: Callable[[np.ndarray], dict[str, np.ndarray]],
    batch_size: int,
) -> np.ndarray:
    """`fn(**make_batch(rows))` over all rows, `batch_size` at a time (the last batch filled up
    with copies of its last row, so that one shape compiles), concatenated on the host."""
    outs = []
    for start in range(0, num_rows, batch_size):
        rows = np.arange(start, min(start + batch_size, num_rows))
        # Dispatch is asynchronous: the next batch is built while this one runs.
        outs.append((fn(**make_batch(np.pad(rows, (0, batch_size - len(rows)), "edge"))), rows))
    return np.concatenate([np.asarray(out)[: len(rows)] for out, rows in outs])


def _by_bucket(lengths: np.ndarray, max_len: int) -> dict[int, np.ndarray]:
    """{bucket length: indices of the rows of `lengths` it holds}."""
    buckets = np.array([bucket_length(int(n), max_len) for n in lengths], np.int64)
    return {int(b): np.flatnonzero(buckets == b) for b in np.unique(buckets)}


#### Causal LMs


@functools.partial(jax.jit, static_argnames="model")
def _causal_logprobs(model, params, inputs_BxT, targets_BxT):
    """log p(targets[t] | inputs[: t + 1]) at every position, [B, T] float32."""
    logits_BxTxV = model.apply({"params": params}, inputs_BxT)
    picked_BxT = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    return picked_BxT - jax.nn.logsumexp(logits_BxTxV, axis=-1)


def causal_windows(ids_N: np.ndarray, start: int, max_len: int) -> list[tuple[np.ndarray, int]]:
    """(tokens, first scored) of each row that scores `ids_N` after `start`: row r's input is
    tokens[:-1], its targets tokens[1:], and targets from `first` on count. One row when the
    sentence fits in `max_len` positions, else windows that re-read max_len // 2 tokens."""
    x_N1 = np.concatenate([[start], ids_N]).astype(np.int32)
    keep = max(max_len // 2, 1)
    rows, next_target, window = [], 1, 0  # next_target: index in x of the first unscored token
    while next_target < len(x_N1):
        end = min(window + max_len, len(x_N1) - 1)  # inputs x[window:end]
        rows.append((x_N1[window : end + 1], next_target - window - 1))
        next_target, window = end + 1, end + 1 - keep
    return rows


def _causal_scores(model, params, seqs, start, batch_size):
    max_len = model.cfg.max_len
    rows = [(i, *row) for i, ids in enumerate(seqs) for row in causal_windows(ids, start, max_len)]
    scores = np.zeros(len(seqs), np.float64)
    lengths = np.array([len(tokens) - 1 for _, tokens, _ in rows], np.int64)
    for length, members in _by_bucket(lengths, max_len).items():
        tick = time.perf_counter()
        logp_R = _causal_bucket(model, params, [rows[m][1:] for m in members], length, batch_size)
        np.add.at(scores, [rows[m][0] for m in members], logp_R)
        _log_bucket("causal", length, len(members), tick)
    return scores


def _causal_bucket(model, params, rows, length, batch_size):
    """[R] float64: the scored log-probs of each (tokens, first scored) row, summed."""
    tokens_RxT1 = np.zeros((len(rows), length + 1), np.int32)
    weights_RxT = np.zeros((len(rows), length), np.float64)
    for r, (tokens, first) in enumerate(rows):
        tokens_RxT1[r, : len(tokens)] = tokens
        weights_RxT[r, first : len(tokens) - 1] = 1.0

    def batch(rows_B):  # right padding: a causal model's real positions never see it
        return {"inputs_BxT": tokens_RxT1[rows_B, :-1], "targets_BxT": tokens_RxT1[rows_B, 1:]}

    fn = functools.partial(_causal_logprobs, model, params)
    logp_RxT = _run_rows(fn, len(rows), batch, batch_size)
    # float64 sums on the host: a sentence's score does not depend on its batch's shape.
    return np.sum(logp_RxT * weights_RxT, axis=1)


#### Masked LMs


@functools.partial(jax.jit, static_argnames="model")
def _masked_logprobs(model, params, input_ids_BxT, attention_mask_BxT, positions_B, targets_B):
    """log p(targets[b] at positions[b] | input_ids[b]), [B] float32."""
    out = model.apply(
        {"params": params},
        input_ids_BxT,
        attention_mask=attention_mask_BxT,
        masked_lm_positions=positions_B[:, None],
    )
    logp_BxV = jax.nn.log_softmax(out["mlm_logits"][:, 0], axis=-1)
    return jnp.take_along_axis(logp_BxV, targets_B[:, None], axis=-1)[:, 0]


def word_ends(ids_N: np.ndarray, continuation_V: np.ndarray) -> np.ndarray:
    """[N]: for each token, one past the last piece of its word (the next token that is not a
    `##` continuation piece, or N)."""
    ends_N = np.empty(len(ids_N), np.int64)
    next_start = len(ids_N)
    for i in range(len(ids_N) - 1, -1, -1):
        ends_N[i] = next_start
        if not continuation_V[ids_N[i]]:
            next_start = i
    return ends_N


def masked_rows(ids_N: np.ndarray, continuation_V: np.ndarray) -> tuple[np.ndarray, ...]:
    """The rows that score `ids_N` (no specials) by PLL and PLL-word-l2r: (first, stop) [R] of
    each row's masked span in ids_N (the token scored is `first`), and, per token, the row of
    its PLL score and of its PLL-word-l2r score [N] (the same row when its word has no later
    piece)."""
    n = len(ids_N)
    ends_N = word_ends(ids_N, continuation_V)
    longer = np.flatnonzero(ends_N > np.arange(n) + 1)  # tokens whose word goes on after them
    first_R = np.concatenate([np.arange(n), longer])
    stop_R = np.concatenate([np.arange(n) + 1, ends_N[longer]])
    l2r_row_N = np.arange(n)
    l2r_row_N[longer] = n + np.arange(len(longer))
    return first_R, stop_R, np.arange(n), l2r_row_N


def _special_ids(tokenizer):
    ids = {name: tokenizer.token_to_id(name) for name in ("[CLS]", "[SEP]", "[MASK]", "[PAD]")}
    continuation = getattr(tokenizer, "continuation_mask", None)
    if None in ids.values() or continuation is None:
        raise errors.InputError(
            f"a masked LM is scored with its WordPiece vocabulary ([CLS], [SEP], [MASK], "
            f"[PAD] and ## pieces); this workdir's tokenizer is a {type(tokenizer).__name__}"
        )
    return ids, continuation


def _masked_scores(model, params, tokenizer, seqs, sentences, inverse, batch_size):
    specials, continuation_V = _special_ids(tokenizer)
    max_len = model.cfg.max_len
    for i, ids in enumerate(seqs):
        if len(ids) + 2 > max_len:
            sentence = sentences[int(np.flatnonzero(inverse == i)[0])]
            raise errors.InputError(
                f"the sentence {sentence!r} is {len(ids)} tokens, more than the {max_len - 2} "
                f"that fit the model's {max_len} positions with [CLS] and [SEP]"
            )
    scores = {PLL: np.zeros(len(seqs)), PLL_WORD_L2R: np.zeros(len(seqs))}
    lengths = np.array([len(ids) + 2 for ids in seqs], np.int64)
    for length, members in _by_bucket(lengths, max_len).items():
        tick = time.perf_counter()
        bucket = [seqs[m] for m in members]
        pll_S, l2r_S, num_rows = _masked_bucket(
            model, params, bucket, continuation_V, specials, length, batch_size
        )
        scores[PLL][members], scores[PLL_WORD_L2R][members] = pll_S, l2r_S
        _log_bucket("masked", length, num_rows, tick)
    return scores


def _masked_bucket(model, params, seqs, continuation_V, specials, length, batch_size):
    """([S] PLL, [S] PLL-word-l2r, number of rows run) of sentences that fit `length` with
    [CLS] and [SEP]."""
    # [CLS] tokens [SEP] [PAD]..., one line per sentence; a row is a masked copy of one.
    base_SxT = np.full((len(seqs), length), specials["[PAD]"], np.int32)
    base_SxT[:, 0] = specials["[CLS]"]
    real_S = np.array([len(ids) + 2 for ids in seqs])
    row_sentence, row_first, row_stop, pll_rows, l2r_rows = [], [], [], [], []
    num_rows = 0
    for s, ids in enumerate(seqs):
        base_SxT[s, 1 : len(ids) + 1] = ids
        base_SxT[s, len(ids) + 1] = specials["[SEP]"]
        first_R, stop_R, pll_N, l2r_N = masked_rows(ids, continuation_V)
        row_sentence.append(np.full(len(first_R), s))
        row_first.append(first_R + 1)  # + 1: positions in the row, after [CLS]
        row_stop.append(stop_R + 1)
        pll_rows.append(pll_N + num_rows)
        l2r_rows.append(l2r_N + num_rows)
        num_rows += len(first_R)
    if num_rows == 0:  # sentences of no token: log p = 0
        return np.zeros(len(seqs)), np.zeros(len(seqs)), 0
    row_sentence, row_first, row_stop = map(np.concatenate, (row_sentence, row_first, row_stop))
    positions_T = np.arange(length)

    def batch(rows_B):
        ids_BxT = base_SxT[row_sentence[rows_B]]
        first_B, stop_B = row_first[rows_B], row_stop[rows_B]
        hidden_BxT = (positions_T >= first_B[:, None]) & (positions_T < stop_B[:, None])
        real_Bx1 = real_S[row_sentence[rows_B]][:, None]
        return {
            "input_ids_BxT": np.where(hidden_BxT, specials["[MASK]"], ids_BxT),
            "attention_mask_BxT": (positions_T < real_Bx1).astype(np.int32),
            "positions_B": first_B.astype(np.int32),
            "targets_B": ids_BxT[np.arange(len(rows_B)), first_B],
        }

    fn = functools.partial(_masked_logprobs, model, params)
    logp_R = _run_rows(fn, num_rows, batch, batch_size).astype(np.float64)
    pll_S = np.array([np.sum(logp_R[rows]) for rows in pll_rows])
    l2r_S = np.array([np.sum(logp_R[rows]) for rows in l2r_rows])
    return pll_S, l2r_S, num_rows


def _log_bucket(kind, length, num_rows, tick):
    seconds = time.perf_counter() - tick
    logging.info("%s rows of length %d: %d in %.1f s", kind, length, num_rows, seconds)
