"""BERT pretraining: masked language modelling + next-sentence prediction (Devlin et al. 2018).

Instances are made as google-research/bert's create_pretraining_data.py makes them
(`lmjax.data.pretraining`). With `data.dynamic_masking` the instances are stored unmasked and
every batch gets a fresh mask (RoBERTa); otherwise each of the `dupe_factor` copies is masked
once. The eval set (held-out documents) is built and masked from a fixed seed, so its numbers
compare across runs and checkpoints.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lmjax import errors, flops
from lmjax import workdir as workdir_lib
from lmjax.data import books, corpora, pipeline, pretraining, streaming, text, tokenizers
from lmjax.models import bert
from lmjax.models.transformer import padded_vocab_size
from lmjax.tasks import base
from lmjax.tasks.base import Batch, MetricSums, Outputs, Params

# Arrays the model needs; the rest (special_mask, word_start) only serve masking on the host.
MODEL_KEYS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_label",
)


def read_corpus_documents(config: ml_collections.ConfigDict) -> list[list[str]]:
    """Documents (lists of sentences) of TFDS dataset `data.tfds_name` when it is set (one per
    example, in stored order; `lmjax.data.tfds_text`), else of every file in `data.paths`."""
    if config.data.tfds_name:
        from lmjax.data import tfds_text  # imports tensorflow_datasets: only when asked for

        return tfds_text.read_config_documents(config.data)
    documents = []
    for path in config.data.paths:
        documents.extend(text.read_documents(corpora.read_text(path), fmt=config.data.format))
    return documents


def _source(config):
    data = config.data
    return f"data.tfds_name={data.tfds_name!r}" if data.tfds_name else f"data.paths={data.paths!r}"


def make_tokenizer(
    config: ml_collections.ConfigDict, texts: Iterable[str], workdir: str | None = None
) -> tokenizers.Tokenizer:
    """The workdir's tokenizer when it has one (resume), else `data.vocab_path`, else one trained
    on `texts` (Hugging Face's WordPiece trainer breaks ties differently from run to run, so a
    shipped vocabulary is what makes two runs' instances identical)."""
    saved = workdir_lib.saved_tokenizer(workdir)
    if saved is not None:
        return saved
    if config.data.vocab_path:
        return tokenizers.WordPieceTokenizer.from_vocab_file(
            corpora.resolve(config.data.vocab_path), lowercase=config.data.lowercase
        )
    return tokenizers.WordPieceTokenizer.train(
        texts, config.data.vocab_size, lowercase=config.data.lowercase
    )


def _masking_kwargs(config):
    return dict(
        masked_lm_prob=config.data.masked_lm_prob,
        max_predictions_per_seq=config.data.max_predictions_per_seq,
        whole_word=config.data.whole_word_masking,
    )


def _model_arrays(batch):
    return {k: batch[k] for k in MODEL_KEYS}


def _mask_fn(config, tokenizer):
    return functools.partial(
        pretraining.mask_tokens,
        mask_id=tokenizer.mask_id,
        vocab_size=tokenizer.vocab_size,
        exclude_ids=tokenizer.special_ids,
        **_masking_kwargs(config),
    )


def _eval_rows(config, tokenizer, documents):
    """The held-out instances of `documents` (sentences), made and masked once from
    `data.eval_seed`: the same in every run, so their numbers compare across runs."""
    eval_set = pretraining.make_eval_set(
        pretraining.tokenize_documents(documents, tokenizer),
        tokenizer,
        config.data.eval_seed,
        dupe_factor=1,
        max_seq_length=config.seq_len,
        short_seq_prob=config.data.short_seq_prob,
        **_masking_kwargs(config),
    )
    return pipeline.rows(_model_arrays(eval_set))


def _streamed_data(config, workdir):
    """The training documents streamed (`lmjax.data.streaming`: a group of `data.group_size`
    read, tokenized and paired at a time, new pairs and masks every epoch), the held-out ones
    made and masked once. The documents are the books of `data.path` (a folder, glob or manifest
    of Project Gutenberg books: the manifest's `train` and `valid` books), or the examples of
    TFDS `data.tfds_name`'s `tfds_split` and `tfds_eval_split`, read by index; `data.max_words`
    keeps the first that many words of the training books (`books.first_words`)."""
    data = config.data
    if data.path:
        sources, eval_files = books.train_and_eval_books(data.path, data.num_eval_documents)
        read, eval_documents = books.read_book, map(books.read_book, eval_files)
        if data.max_words:  # a word budget: the leading training books, the last one cut
            sources, read = books.first_words(sources, data.max_words), books.read_first_sentences
    else:
        from lmjax.data import tfds_text  # imports tensorflow_datasets: only when asked for

        num_train, read = tfds_text.document_source(data, data.tfds_split)
        num_eval, read_eval = tfds_text.document_source(data, data.tfds_eval_split)
        sources, eval_documents = list(range(num_train)), map(read_eval, range(num_eval))
    tokenizer = make_tokenizer(config, (s for d in map(read, sources) for s in d), workdir)
    mask = _mask_fn(config, tokenizer)
    train = streaming.instance_stream(
        sources,
        read,
        tokenizer,
        config.seed,
        max_seq_length=config.seq_len,
        short_seq_prob=data.short_seq_prob,
        group_size=data.group_size,
        window_size=data.shuffle_window,
        mask=None if data.dynamic_masking else mask,
    )
    if data.dynamic_masking:
        batch_fn = lambda batch, rng: _model_arrays(mask(batch, rng))  # noqa: E731
    else:
        batch_fn = lambda batch, rng: _model_arrays(batch)  # noqa: E731
    return pipeline.TaskData(
        train_ds=train,
        eval_ds=_eval_rows(config, tokenizer, eval_documents),
        tokenizer=tokenizer,
        vocab_size=tokenizer.vocab_size,
        batch_fn=batch_fn,
    )


def _make_data(config, workdir=None):
    if config.data.path or config.data.tfds_eval_split:
        return _streamed_data(config, workdir)
    documents = read_corpus_documents(config)
    num_eval = config.data.num_eval_documents
    if not 0 < num_eval < len(documents) - 1:
        raise errors.InputError(
            f"data.num_eval_documents={num_eval} must leave at least 2 of the "
            f"{len(documents)} documents of {_source(config)} for training: lower it, or give a "
            "corpus of more documents (separated by blank lines or WikiText ' = Title = ' lines)"
        )
    train_docs, eval_docs = documents[:-num_eval], documents[-num_eval:]
    tokenizer = make_tokenizer(config, [s for d in train_docs for s in d], workdir)
    train_docs = pretraining.tokenize_documents(train_docs, tokenizer)
    dynamic = config.data.dynamic_masking
    train = pretraining.create_pretraining_data(
        train_docs,
        tokenizer,
        np.random.default_rng(config.seed),
        max_seq_length=config.seq_len,
        short_seq_prob=config.data.short_seq_prob,
        dupe_factor=config.data.dupe_factor,
        mask=not dynamic,
        **_masking_kwargs(config),
    )
    batch_fn = None
    if dynamic:
        mask = _mask_fn(config, tokenizer)
        batch_fn = lambda batch, rng: _model_arrays(mask(batch, rng))  # noqa: E731
    else:
        train = _model_arrays(train)
    return pipeline.TaskData(
        train_ds=pipeline.rows(train),
        eval_ds=_eval_rows(config, tokenizer, eval_docs),
        tokenizer=tokenizer,
        vocab_size=tokenizer.vocab_size,
        batch_fn=batch_fn,
    )


class MlmNsp(base.BertTask):
    """BERT pretraining: masked-LM loss on the masked positions (+ NSP loss with `use_nsp`)."""

    name: ClassVar[str] = "mlm_nsp"
    INPUTS = (*base.BertTask.INPUTS, "masked_lm_positions")

    def make_data(self, workdir: str | None = None) -> pipeline.TaskData:
        return _make_data(self.config, workdir)

    def make_model(self, vocab_size: int) -> bert.BertForPreTraining:
        """`model.max_len` (position embeddings) defaults to seq_len; BERT keeps 512."""
        config = self.config
        cfg = base.bert_model_config(config.model, vocab_size, config.seq_len, config.seq_len)
        return bert.BertForPreTraining(cfg)

    def _losses(self, model, params, batch, rng=None, train=False):
        out = self.apply(model, params, batch, rng, train)
        mlm_BxP = optax.softmax_cross_entropy_with_integer_labels(
            out["mlm_logits"], batch["masked_lm_ids"]
        )
        nsp_B = optax.softmax_cross_entropy_with_integer_labels(
            out["nsp_logits"], batch["next_sentence_label"]
        )
        return out, mlm_BxP, nsp_B

    def loss_counts(self, batch: Batch) -> dict[str, jax.Array]:
        """Denominators of the two losses: masked positions and sentence pairs."""
        return {
            "masked": jnp.sum(batch["masked_lm_weights"]).astype(jnp.float32),
            "pairs": jnp.asarray(batch["next_sentence_label"].shape[0], jnp.float32),
        }

    def loss_fn(
        self,
        model: nn.Module,
        params: Params,
        batch: Batch,
        rng: jax.Array | None,
        train: bool = True,
        counts: dict[str, jax.Array] | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """MLM loss over the masked positions only (weighted), plus the NSP loss (`use_nsp`)."""
        counts = self.loss_counts(batch) if counts is None else counts
        _, mlm_BxP, nsp_B = self._losses(model, params, batch, rng, train)
        weights_BxP = batch["masked_lm_weights"]
        mlm_loss = jnp.sum(mlm_BxP * weights_BxP) / jnp.maximum(counts["masked"], 1.0)
        nsp_loss = jnp.sum(nsp_B) / counts["pairs"]
        loss = mlm_loss + nsp_loss if self.config.use_nsp else mlm_loss
        return loss, {"mlm_loss": mlm_loss, "nsp_loss": nsp_loss}

    def eval_metrics(
        self, model: nn.Module, params: Params, batch: Batch
    ) -> tuple[MetricSums, Outputs]:
        """MLM and NSP loss and accuracy; `loss` (mlm_loss + nsp_loss) is averaged over batches."""
        out, mlm_BxP, nsp_B = self._losses(model, params, batch)
        weights_BxP = batch["masked_lm_weights"]
        mlm_correct = jnp.argmax(out["mlm_logits"], -1) == batch["masked_lm_ids"]
        nsp_correct = jnp.argmax(out["nsp_logits"], -1) == batch["next_sentence_label"]
        weights_B = batch["eval_weight"]  # 0 for padding rows (their MLM weights are 0 too)
        num_masked, num_rows = jnp.sum(weights_BxP), jnp.sum(weights_B)
        mlm_loss = jnp.sum(mlm_BxP * weights_BxP) / jnp.maximum(num_masked, 1.0)
        nsp_loss = jnp.sum(nsp_B * weights_B) / jnp.maximum(num_rows, 1.0)
        loss = mlm_loss + nsp_loss if self.config.use_nsp else mlm_loss
        sums = {
            "loss": (loss, jnp.ones(())),
            "mlm_loss": (jnp.sum(mlm_BxP * weights_BxP), num_masked),
            "mlm_accuracy": (jnp.sum(mlm_correct * weights_BxP), num_masked),
            "nsp_loss": (jnp.sum(nsp_B * weights_B), num_rows),
            "nsp_accuracy": (jnp.sum(nsp_correct * weights_B), num_rows),
        }
        return sums, {}

    def flops_per_token(self, num_params: int, vocab_size: int) -> float:
        """6N + attention, with the tied [D, V] output matmul counted only at the predicted
        positions (max_predictions_per_seq of seq_len), where the gathered MLM head runs."""
        config = self.config
        m = config.model
        embedding = padded_vocab_size(vocab_size, m.get("vocab_multiple", 1)) * m.emb_dim
        predicted = config.data.max_predictions_per_seq / config.seq_len
        return (
            flops.flops_per_token(num_params - embedding, m.num_layers, m.emb_dim, config.seq_len)
            + 6 * embedding * predicted
        )

    def fake_batch(self, vocab_size: int) -> Batch:
        """Random ids in the pretraining batch layout (shapes for init and benchmarks)."""
        config = self.config
        rng = np.random.default_rng(0)
        b, t, p = config.batch_size, config.seq_len, config.data.max_predictions_per_seq
        return {
            "input_ids": rng.integers(0, vocab_size, (b, t), dtype=np.int32),
            "token_type_ids": np.repeat((np.arange(t) >= t // 2)[None], b, 0).astype(np.int32),
            "attention_mask": np.ones((b, t), np.int32),
            "masked_lm_positions": np.sort(rng.integers(1, t, (b, p)), axis=1).astype(np.int32),
            "masked_lm_ids": rng.integers(0, vocab_size, (b, p), dtype=np.int32),
            "masked_lm_weights": np.ones((b, p), np.float32),
            "next_sentence_label": rng.integers(0, 2, (b,), dtype=np.int32),
        }
