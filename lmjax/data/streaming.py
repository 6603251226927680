"""BERT pretraining instances made lazily from a corpus too big to hold as instances: a grain
pipeline that reads, tokenizes and pairs a few documents at a time.

    documents (e.g. books), shuffled every epoch
      -> groups of `group_size`                 the unit of work: read, tokenize, pair (NSP)
      -> instances of the group                 create_instances, rng from (seed, group index)
      -> one instance at a time (flat map)
      -> window shuffle                         mixes the groups' instances
      -> batches (+ dynamic masking)

Everything random is a function of the seed and the position in the stream, and every stage is
a grain iterator that checkpoints its position (the flat map and the window shuffle recompute
their current group from it), so a resumed run sees the batches of an uninterrupted one. Memory
holds a few groups' instances, whatever the corpus size. An NSP "random next" segment comes from
another document of the same group, as google-research/bert's does from another document of the
same input shard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grain
import jax
import numpy as np
from grain import experimental as grain_exp

from lmjax.data import pretraining

if TYPE_CHECKING:
    from lmjax.data.tokenizers import WordPieceTokenizer


class _Rows(grain_exp.FlatMapTransform):
    """{key: [N, ...]} -> N elements {key: [...]}."""

    max_fan_out = 1 << 20

    def flat_map(self, element: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        n = len(element["input_ids"])
        return [{k: v[i] for k, v in element.items()} for i in range(n)]


class _GroupInstances:
    """Documents of a group -> their unmasked instances (a picklable callable for grain)."""

    def __init__(self, sources, read, tokenizer, max_seq_length, short_seq_prob, mask):
        self.sources, self.read, self.tokenizer = sources, read, tokenizer
        self.max_seq_length, self.short_seq_prob = max_seq_length, short_seq_prob
        self.mask = mask

    def __call__(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        documents = [self.read(self.sources[int(i)]) for i in indices]
        tokenized = pretraining.tokenize_documents(documents, self.tokenizer)
        instances = pretraining.create_instances(
            tokenized,
            rng,
            max_seq_length=self.max_seq_length,
            short_seq_prob=self.short_seq_prob,
            cls_id=self.tokenizer.cls_id,
            sep_id=self.tokenizer.sep_id,
            pad_id=self.tokenizer.pad_id,
            is_continuation=getattr(self.tokenizer, "continuation_mask", None),
        )
        return instances if self.mask is None else self.mask(instances, rng)


def instance_stream(
    sources: Sequence[Any],
    read: Callable[[Any], list[str]],
    tokenizer: WordPieceTokenizer,
    seed: int,
    *,
    max_seq_length: int,
    short_seq_prob: float = 0.1,
    group_size: int = 16,
    window_size: int = 20_000,
    prefetch: int = 2,
    mask: Callable[[dict, np.random.Generator], dict] | None = None,
) -> grain.IterDataset:
    """An endless, shuffled IterDataset of instances (`pretraining.INSTANCE_KEYS`) of the
    documents `read(source)` (a list of sentences) of `sources`, this process's share; unmasked,
    or masked once as they are made by `mask(instances, rng)` (static masking: an instance is
    made anew every epoch, so each epoch has other masks, as the original's dupe_factor copies).

    Each epoch reshuffles the documents, so its groups (and pairs) differ; `window_size`
    instances are shuffled together (a group of 16 books gives about 10,000)."""
    num = len(sources)
    ds = grain.MapDataset.range(num).seed(seed).shuffle().repeat(None)
    ds = ds[jax.process_index() :: jax.process_count()]
    ds = ds.batch(group_size, drop_remainder=True)
    make = _GroupInstances(sources, read, tokenizer, max_seq_length, short_seq_prob, mask)
    # The next `prefetch` groups are made in a thread while the current one is consumed
    # (tokenizers and numpy release the GIL for most of it). Not grain's default of 16 threads
    # and 500 elements ahead: 500 groups of books do not fit in memory.
    ds = ds.random_map(make).to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch)
    )
    ds = grain_exp.FlatMapIterDataset(ds, _Rows())
    return grain_exp.WindowShuffleIterDataset(ds, window_size=window_size, seed=seed)
