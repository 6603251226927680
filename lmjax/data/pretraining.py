"""BERT pretraining data as google-research/bert's create_pretraining_data.py makes it:
documents of tokenized sentences -> `[CLS] A [SEP] B [SEP]` pairs with NSP labels -> MLM masks.

Instance creation is a Python loop over sentences (it runs once per corpus pass). Masking
(`mask_tokens`) is vectorised numpy over a batch, so the same function does static masking (once,
at creation, as the original) and dynamic masking (a fresh mask per batch, as RoBERTa).
All randomness comes from one `np.random.Generator`, so a seed fixes everything.

Instances are dicts of fixed-shape arrays, N instances of length T = max_seq_length:
  input_ids [N,T] int32, token_type_ids [N,T] int32 (0 = A, 1 = B), attention_mask [N,T] int32
  (1 = real token), special_mask [N,T] bool ([CLS]/[SEP]/[PAD]), word_start [N,T] bool (a real
  token that starts a word: not a `##` piece, or the first token of a segment),
  next_sentence_label [N] int32 (0 = B is the actual next text, 1 = B is random, as the original).
`mask_tokens` adds masked_lm_positions [N,P] int32, masked_lm_ids [N,P] int32 and
masked_lm_weights [N,P] float32 (P = max_predictions_per_seq) and masks input_ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lmjax import errors

if TYPE_CHECKING:
    from lmjax.data.tokenizers import Tokenizer, WordPieceTokenizer

# (tokens_a, tokens_b, is_random_next)
Pair = tuple[list[int], list[int], bool]

INSTANCE_KEYS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "special_mask",
    "word_start",
    "next_sentence_label",
)
MASKED_LM_KEYS = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")


def _randint(rng, low, high):
    """A uniform integer in [low, high], both ends included, as Python's random.randint."""
    return int(rng.integers(low, high + 1))


def tokenize_documents(
    documents: Iterable[Sequence[str]], tokenizer: Tokenizer
) -> list[list[np.ndarray]]:
    """Documents of sentence strings -> documents of int32 id arrays; empty ones dropped."""
    encode_batch = getattr(tokenizer, "encode_batch", None)
    tokenized = []
    for document in documents:
        ids = encode_batch(document) if encode_batch else [tokenizer.encode(s) for s in document]
        ids = [np.asarray(s, dtype=np.int32) for s in ids if len(s)]
        if ids:
            tokenized.append(ids)
    return tokenized


def truncate_seq_pair(
    tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: np.random.Generator
) -> None:
    """Trims the longer list, one token at a time from its front or back (a coin flip), in place,
    until both fit in `max_num_tokens` (create_pretraining_data.py: truncate_seq_pair)."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        # Sometimes the front, sometimes the back, "to add more randomness and avoid biases".
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()


def create_pairs_from_document(
    documents: Sequence[Sequence[np.ndarray]],
    document_index: int,
    max_seq_length: int,
    short_seq_prob: float,
    rng: np.random.Generator,
) -> list[Pair]:
    """Segment pairs of one document: a list of (tokens_a, tokens_b, is_random_next), with token
    lists already truncated to max_seq_length - 3 (create_instances_from_document)."""
    document = documents[document_index]
    max_num_tokens = max_seq_length - 3  # room for [CLS], [SEP], [SEP]
    # Usually fill the whole sequence; with short_seq_prob use a shorter target, to narrow the
    # gap between pretraining and short fine-tuning inputs. A soft target, not a hard limit.
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = _randint(rng, 2, max_num_tokens)

    pairs = []
    current_chunk = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                # How many of the chunk's sentences go into A.
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = _randint(rng, 1, len(current_chunk) - 1)
                tokens_a = [int(t) for s in current_chunk[:a_end] for t in s]

                tokens_b = []
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    # Ten tries at a document other than this one (rarely more than one).
                    for _ in range(10):
                        random_document_index = _randint(rng, 0, len(documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = documents[random_document_index]
                    random_start = _randint(rng, 0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(int(t) for t in random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    # The chunk's sentences after A were not used: "put them back".
                    num_unused_segments = len(current_chunk) - a_end
                    i -= num_unused_segments
                else:
                    is_random_next = False
                    tokens_b = [int(t) for s in current_chunk[a_end:] for t in s]
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                assert tokens_a and tokens_b
                pairs.append((tokens_a, tokens_b, is_random_next))
            current_chunk = []
            current_length = 0
        i += 1
    return pairs


def pack_pairs(
    pairs: Sequence[Pair],
    max_seq_length: int,
    *,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    is_continuation: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """(tokens_a, tokens_b, is_random_next) pairs -> instance arrays of length max_seq_length.

    `is_continuation` is a [vocab_size] bool array, True for `##` pieces (for `word_start`);
    None means every token is a word.
    """
    n, t = len(pairs), max_seq_length
    ids_NxT = np.full((n, t), pad_id, dtype=np.int32)
    types_NxT = np.zeros((n, t), dtype=np.int32)
    real_NxT = np.zeros((n, t), dtype=np.int32)
    special_NxT = np.ones((n, t), dtype=bool)
    segment_start_NxT = np.zeros((n, t), dtype=bool)
    nsp_N = np.zeros((n,), dtype=np.int32)
    for row, (tokens_a, tokens_b, is_random_next) in enumerate(pairs):
        la, lb = len(tokens_a), len(tokens_b)
        length = la + lb + 3
        if length > t:
            raise ValueError(f"pair of {la}+{lb} tokens does not fit max_seq_length={t}")
        ids_NxT[row, :length] = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
        types_NxT[row, la + 2 : length] = 1  # B and its [SEP]
        real_NxT[row, :length] = 1
        special_NxT[row, 1 : la + 1] = False
        special_NxT[row, la + 2 : length - 1] = False
        segment_start_NxT[row, [1, la + 2]] = True
        nsp_N[row] = int(is_random_next)
    if is_continuation is None:
        word_start_NxT = ~special_NxT
    else:
        continuation_NxT = np.asarray(is_continuation, dtype=bool)[ids_NxT]
        word_start_NxT = ~special_NxT & (~continuation_NxT | segment_start_NxT)
    return {
        "input_ids": ids_NxT,
        "token_type_ids": types_NxT,
        "attention_mask": real_NxT,
        "special_mask": special_NxT,
        "word_start": word_start_NxT,
        "next_sentence_label": nsp_N,
    }


def create_instances(
    documents: Iterable[Sequence[np.ndarray]],
    rng: np.random.Generator,
    *,
    max_seq_length: int,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    is_continuation: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Unmasked instances from documents of int id arrays (create_training_instances).

    Shuffles the documents, makes `dupe_factor` passes over them (each pass draws new targets,
    splits and random Bs), then shuffles the instances.
    """
    documents = [d for d in documents if len(d)]
    if len(documents) < 2:
        raise errors.InputError(
            f"next-sentence prediction needs at least two documents, the corpus has "
            f"{len(documents)}: separate documents by blank lines or WikiText ' = Title = ' lines"
        )
    if max_seq_length < 5:
        raise errors.InputError(f"max_seq_length={max_seq_length} leaves no room for A and B")
    documents = list(documents)
    rng.shuffle(documents)
    pairs = []
    for _ in range(dupe_factor):
        for document_index in range(len(documents)):
            pairs.extend(
                create_pairs_from_document(
                    documents, document_index, max_seq_length, short_seq_prob, rng
                )
            )
    order = rng.permutation(len(pairs))
    pairs = [pairs[k] for k in order]
    return pack_pairs(
        pairs,
        max_seq_length,
        cls_id=cls_id,
        sep_id=sep_id,
        pad_id=pad_id,
        is_continuation=is_continuation,
    )


def _take_words_greedily(len_BxW, budget_B):
    """[B,W] bool: which words (lengths in scan order, 0 = none) the original's scan takes.

    create_pretraining_data.py scans the shuffled words and takes each one that still fits the
    budget (`continue` past one that does not). Each round here takes the longest prefix of the
    words that fit what is left; repeating until nothing fits takes exactly the words the scan
    takes (a word skipped once never fits again, as the budget only shrinks), in at most
    max(budget_B) rounds.
    """
    taken_BxW = np.zeros(len_BxW.shape, dtype=bool)
    budget_B = np.array(budget_B, dtype=np.int64)
    while True:
        fits_BxW = ~taken_BxW & (len_BxW > 0) & (len_BxW <= budget_B[:, None])
        cum_BxW = np.cumsum(np.where(fits_BxW, len_BxW, 0), axis=1)
        new_BxW = fits_BxW & (cum_BxW <= budget_B[:, None])
        if not new_BxW.any():
            return taken_BxW
        taken_BxW |= new_BxW
        budget_B -= np.where(new_BxW, len_BxW, 0).sum(axis=1)


def mask_tokens(
    batch: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    *,
    masked_lm_prob: float,
    max_predictions_per_seq: int,
    mask_id: int,
    vocab_size: int,
    whole_word: bool = False,
    exclude_ids: Iterable[int] = (),
) -> dict[str, np.ndarray]:
    """Masks a batch of instances for MLM (create_masked_lm_predictions), vectorised.

    Per row: num_to_predict = min(max_predictions_per_seq, max(1, round(real_tokens *
    masked_lm_prob))) positions among the non-special tokens, in a random order; with
    `whole_word`, whole words are taken greedily in a random order, skipping a word that would
    overflow num_to_predict (the original's `continue`). Of the chosen: 80% [MASK], 10% a random id
    (uniform over range(vocab_size) minus `exclude_ids`), 10% unchanged. Returns a new dict: the
    batch with `input_ids` masked plus the masked_lm_* arrays (positions ascending, padded with 0
    and weight 0.0, as write_instance_to_example_files).
    """
    ids_BxT = np.asarray(batch["input_ids"])
    b, t = ids_BxT.shape
    p = max_predictions_per_seq
    real_BxT = np.asarray(batch["attention_mask"]).astype(bool)
    candidate_BxT = real_BxT & ~np.asarray(batch["special_mask"], dtype=bool)
    # Real tokens include [CLS] and [SEP]: the original rounds len(tokens) * masked_lm_prob.
    num_real_B = real_BxT.sum(axis=1)
    num_to_predict_B = np.minimum(p, np.maximum(1, np.round(num_real_B * masked_lm_prob)))
    num_to_predict_B = num_to_predict_B.astype(np.int64)

    # Group candidate tokens into words: a word starts at a candidate that starts a word or
    # follows a non-candidate. Without whole-word masking every candidate is its own word.
    if whole_word:
        prev_candidate_BxT = np.pad(candidate_BxT[:, :-1], ((0, 0), (1, 0)))
        starts_BxT = candidate_BxT & (np.asarray(batch["word_start"], bool) | ~prev_candidate_BxT)
    else:
        starts_BxT = candidate_BxT
    word_BxT = np.cumsum(starts_BxT, axis=1) - 1  # word index of each candidate token
    word_BxT = np.where(candidate_BxT, word_BxT, t)  # non-candidates -> a dummy word t
    flat_BxT = word_BxT + (t + 1) * np.arange(b)[:, None]
    length_BxW = np.bincount(flat_BxT.ravel(), minlength=b * (t + 1)).reshape(b, t + 1)[:, :t]

    # create_pretraining_data.py: rng.shuffle(cand_indexes). Random keys sort real words first.
    keys_BxW = np.where(length_BxW > 0, rng.random((b, t)), np.inf)
    order_BxW = np.argsort(keys_BxW, axis=1)
    sorted_len_BxW = np.take_along_axis(length_BxW, order_BxW, axis=1)

    taken_BxW = _take_words_greedily(sorted_len_BxW, num_to_predict_B)
    chosen_word_BxW1 = np.zeros((b, t + 1), dtype=bool)
    np.put_along_axis(chosen_word_BxW1, order_BxW, taken_BxW, axis=1)
    chosen_BxT = np.take_along_axis(chosen_word_BxW1, word_BxT, axis=1) & candidate_BxT

    # create_pretraining_data.py: 80% [MASK], 10% keep the original, 10% a random word.
    u_BxT = rng.random((b, t))
    allowed = np.setdiff1d(np.arange(vocab_size), np.asarray(exclude_ids, dtype=np.int64))
    random_ids_BxT = allowed[rng.integers(0, len(allowed), size=(b, t))].astype(ids_BxT.dtype)
    masked_ids_BxT = np.where(u_BxT < 0.8, mask_id, np.where(u_BxT < 0.9, ids_BxT, random_ids_BxT))
    out_ids_BxT = np.where(chosen_BxT, masked_ids_BxT, ids_BxT).astype(ids_BxT.dtype)

    # Chosen positions in ascending order (a stable sort puts True before False), padded to P.
    count_B = chosen_BxT.sum(axis=1)
    order_BxT = np.argsort(~chosen_BxT, axis=1, kind="stable")
    if t < p:
        order_BxT = np.pad(order_BxT, ((0, 0), (0, p - t)))
    weights_BxP = np.arange(p)[None, :] < count_B[:, None]
    positions_BxP = np.where(weights_BxP, order_BxT[:, :p], 0).astype(np.int32)
    labels_BxP = np.where(weights_BxP, np.take_along_axis(ids_BxT, positions_BxP, axis=1), 0)

    out = dict(batch)
    out["input_ids"] = out_ids_BxT
    out["masked_lm_positions"] = positions_BxP
    out["masked_lm_ids"] = labels_BxP.astype(np.int32)
    out["masked_lm_weights"] = weights_BxP.astype(np.float32)
    return out


def create_pretraining_data(
    documents: Iterable[Sequence[np.ndarray]],
    tokenizer: WordPieceTokenizer,
    rng: np.random.Generator,
    *,
    max_seq_length: int,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
    masked_lm_prob: float = 0.15,
    max_predictions_per_seq: int = 20,
    whole_word: bool = False,
    mask: bool = True,
) -> dict[str, np.ndarray]:
    """Instances from documents of id arrays, statically masked unless `mask=False`.

    `tokenizer` gives the special ids, vocab_size and `continuation_mask` (WordPieceTokenizer).
    The random replacement ids exclude the special tokens.
    """
    instances = create_instances(
        documents,
        rng,
        max_seq_length=max_seq_length,
        short_seq_prob=short_seq_prob,
        dupe_factor=dupe_factor,
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
        pad_id=tokenizer.pad_id,
        is_continuation=getattr(tokenizer, "continuation_mask", None),
    )
    if not mask:
        return instances
    return mask_tokens(
        instances,
        rng,
        masked_lm_prob=masked_lm_prob,
        max_predictions_per_seq=max_predictions_per_seq,
        mask_id=tokenizer.mask_id,
        vocab_size=tokenizer.vocab_size,
        whole_word=whole_word,
        exclude_ids=tokenizer.special_ids,
    )


def make_eval_set(
    documents: Iterable[Sequence[np.ndarray]],
    tokenizer: WordPieceTokenizer,
    seed: int,
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    """Eval instances and their masks from `seed` alone: byte-identical across runs, so eval
    numbers compare between runs and checkpoints. kwargs as create_pretraining_data."""
    return create_pretraining_data(documents, tokenizer, np.random.default_rng(seed), **kwargs)
