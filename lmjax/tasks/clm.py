"""Causal language modelling: predict token t+1 from tokens <= t."""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lmjax import errors, flops
from lmjax import workdir as workdir_lib
from lmjax.data import books, corpora, pipeline, token_cache, tokenizers
from lmjax.models.transformer import Transformer, TransformerConfig
from lmjax.tasks import base
from lmjax.tasks.base import Batch, MetricSums, Outputs, Params


def read_corpus_text(config: ml_collections.ConfigDict) -> str:
    """The text of TFDS dataset `data.tfds_name` when set (its examples' sentences, examples
    separated by blank lines), else of `data.path`: an embedded corpus, a local file, or books
    (a folder, glob or manifest of Project Gutenberg books: their running text)."""
    if config.data.max_words:
        return books.books_text(config.data.path, "train", config.data.max_words)
    if config.data.tfds_name:
        from lmjax.data import tfds_text  # imports tensorflow_datasets: only when asked for

        documents = tfds_text.read_config_documents(config.data)
        return "\n\n".join(" ".join(sentences) for sentences in documents)
    if books.is_book_path(config.data.path):
        return books.books_text(config.data.path)
    return corpora.read_text(config.data.path)


def make_tokenizer(
    config: ml_collections.ConfigDict, text: str, workdir: str | None = None
) -> tokenizers.Tokenizer:
    """`data.tokenizer`: "char" (one id per character), "bpe" (byte-level BPE of
    `data.vocab_size` trained on the text, GPT-2's kind), a BERT WordPiece vocab.txt (a `.txt`
    file or embedded name, lowercased: the same tokens as a BERT run on the same text) or a
    Hugging Face tokenizer.json path (e.g. GPT-2's own). A workdir that has a tokenizer (resume)
    keeps it."""
    saved = workdir_lib.saved_tokenizer(workdir)
    if saved is not None:
        return saved
    kind = config.data.tokenizer
    if kind == "char":
        return tokenizers.CharTokenizer.from_text(text)
    if kind == "bpe":
        sample = text[: config.data.tokenizer_train_chars or len(text)]
        return tokenizers.HFTokenizer.train_byte_level_bpe(sample, config.data.vocab_size)
    path = corpora.resolve(kind)
    if path.endswith(".txt"):
        return tokenizers.WordPieceTokenizer.from_vocab_file(path, lowercase=True)
    return tokenizers.HFTokenizer.from_file(path)


def encode_in_chunks(
    tokenizer: tokenizers.Tokenizer, text: str, chunk_chars: int = 1 << 20
) -> np.ndarray:
    """Token ids of `text`, encoded in pieces of about `chunk_chars` cut at newlines (a corpus
    of gigabytes does not go to the tokenizer as one string)."""
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + chunk_chars)
        end = len(text) if end < 0 else end + 1
        pieces.append(tokenizer.encode(text[start:end]))
        start = end
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int32)


def _encode_all(tokenizer: tokenizers.Tokenizer, texts: list[str]) -> np.ndarray:
    """The ids of `texts` one after the other, then each text's number of ids."""
    encoded = [encode_in_chunks(tokenizer, text) for text in texts]
    return np.concatenate([*encoded, np.array([len(e) for e in encoded], np.int32)])


def check_windows(config: ml_collections.ConfigDict, num_tokens: int, num_train: int) -> None:
    """Both splits of the corpus hold at least one window of `seq_len + 1` tokens (an input and
    its shifted target); `errors.InputError` naming the corpus, the split and the fix otherwise."""
    data, window = config.data, config.seq_len + 1
    source = f"data.tfds_name={data.tfds_name!r}" if data.tfds_name else f"data.path={data.path!r}"
    if num_train < window:
        raise errors.InputError(
            f"{source} has {num_tokens} tokens, {num_train} of them for training "
            f"(data.train_fraction={data.train_fraction}): fewer than one window of seq_len + 1 = "
            f"{window}: give a longer corpus or a smaller seq_len"
        )
    if num_tokens - num_train < window:
        raise errors.InputError(
            f"{source} has {num_tokens} tokens, {num_tokens - num_train} of them held out for eval "
            f"(1 - data.train_fraction={data.train_fraction}): fewer than one window of "
            f"seq_len + 1 = {window}: lower data.train_fraction or seq_len"
        )


class Clm(base.BaseTask):
    """Next-token cross-entropy of a decoder-only Transformer (GPT)."""

    name: ClassVar[str] = "clm"
    CAUSAL: ClassVar[bool] = True

    def make_data(self, workdir: str | None = None) -> pipeline.TaskData:
        """The corpus split as nanoGPT: the first `train_fraction` of the tokens train. With
        `data.max_words`, the first that many words of the books' `train` split train (all of
        them: a word budget is the training text) and the `valid` books are held out."""
        config = self.config
        text = read_corpus_text(config)
        tokenizer = make_tokenizer(config, text, workdir)
        texts = [text]
        if config.data.max_words:  # the valid books are held out
            texts.append(books.books_text(config.data.path, "valid"))
        # Every text's ids, then their lengths (one array for the cache).
        ids_and_lengths = token_cache.load_or_build(
            token_cache.key(texts, tokenizer), lambda: _encode_all(tokenizer, texts)
        )
        lengths = ids_and_lengths[-len(texts) :]
        ids = ids_and_lengths[: -len(texts)]
        if config.data.max_words:
            split = int(lengths[0])
        else:
            split = int(len(ids) * config.data.train_fraction)
        check_windows(config, len(ids), split)
        return pipeline.TaskData(
            train_ds=pipeline.lm_windows(ids[:split], config.seq_len),
            eval_ds=pipeline.lm_windows(ids[split:], config.seq_len, stride=config.seq_len),
            tokenizer=tokenizer,
            vocab_size=tokenizer.vocab_size,
        )

    def make_model(self, vocab_size: int) -> Transformer:
        model_config = self.config.model
        return Transformer(
            TransformerConfig.from_config_dict(model_config, vocab_size, self.config.seq_len)
        )

    def init_params(self, model: nn.Module, rng: jax.Array, batch: Batch) -> Params:
        return model.init(rng, batch["inputs"])["params"]

    def _token_losses(self, model, params, batch, rng=None, train=False):
        logits_BxTxV = base.apply(model, params, batch["inputs"], rng=rng, train=train)
        losses_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, batch["targets"])
        return logits_BxTxV, losses_BxT

    def loss_counts(self, batch: Batch) -> dict[str, jax.Array]:
        """Denominators of the loss: the number of predicted tokens."""
        return {"tokens": jnp.asarray(batch["targets"].size, jnp.float32)}

    def loss_fn(
        self,
        model: nn.Module,
        params: Params,
        batch: Batch,
        rng: jax.Array | None,
        train: bool = True,
        counts: dict[str, jax.Array] | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean next-token cross-entropy; no extra metrics."""
        counts = self.loss_counts(batch) if counts is None else counts
        _, losses_BxT = self._token_losses(model, params, batch, rng, train)
        return jnp.sum(losses_BxT) / counts["tokens"], {}

    def eval_metrics(
        self, model: nn.Module, params: Params, batch: Batch
    ) -> tuple[MetricSums, Outputs]:
        """`loss` and next-token `accuracy` over the batch's tokens."""
        logits_BxTxV, losses_BxT = self._token_losses(model, params, batch)
        correct_BxT = jnp.argmax(logits_BxTxV, -1) == batch["targets"]
        weight_Bx1 = batch["eval_weight"][:, None]  # 0 for padding rows
        count = jnp.sum(weight_Bx1) * losses_BxT.shape[1]
        sums = {
            "loss": (jnp.sum(losses_BxT * weight_Bx1), count),
            "accuracy": (jnp.sum(correct_BxT * weight_Bx1), count),
        }
        return sums, {}

    def flops_per_token(self, num_params: int, vocab_size: int) -> float:
        m = self.config.model
        return flops.flops_per_token(num_params, m.num_layers, m.emb_dim, self.config.seq_len)

    def fake_batch(self, vocab_size: int) -> Batch:
        return pipeline.fake_batch(self.config.batch_size, self.config.seq_len, vocab_size)
