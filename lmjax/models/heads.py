"""Heads on the encoder's hidden states: BERT's pooler, MLM, NSP and a sequence classifier.

Each maps onto one Hugging Face BERT module (for `convert/hf.py`): `Pooler` ↔ `bert.pooler`,
`MlmHead` ↔ `cls.predictions` (transform dense + LayerNorm, decoder tied to the word embeddings,
its own bias), `NspHead` ↔ `cls.seq_relationship`, `ClassifierHead` ↔ `classifier`.
Logits are float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.models.transformer import (
    ACTIVATIONS,
    Dense,
    TransformerConfig,
    layer_norm,
    matmul,
    unpad_vocab,
)


class Pooler(nn.Module):
    """dense + tanh on the first ([CLS]) position: [B, T, D] → [B, D]."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        cls_BxD = x_BxTxD[:, 0]
        h_BxD = Dense((self.cfg.emb_dim,), ("embed", None), self.cfg, name="dense")(cls_BxD)
        return nn.with_logical_constraint(jnp.tanh(h_BxD), ("batch", "embed"))


class MlmHead(nn.Module):
    """dense + activation + LayerNorm, then logits against the tied token embedding plus a bias.

    Takes the hidden states of the positions to predict, [B, P, D] (or [B, T, D]) → [B, P, V].
    """

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x_BxPxD: jax.Array, embedding_VxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        h_BxPxD = Dense((cfg.emb_dim,), ("embed", None), cfg, name="dense")(x_BxPxD)
        h_BxPxD = layer_norm(cfg, "ln")(ACTIVATIONS[cfg.activation](h_BxPxD))
        logits_BxPxV = matmul(
            h_BxPxD, embedding_VxD, dtype=cfg.dtype, kernel_NxK=True, impl=cfg.matmul_impl
        )
        logits_BxPxV = unpad_vocab(cfg, logits_BxPxV).astype(jnp.float32)
        bias_V = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            (cfg.vocab_size,),
        )
        logits_BxPxV = logits_BxPxV + bias_V.reshape((1,) * (logits_BxPxV.ndim - 1) + bias_V.shape)
        return nn.with_logical_constraint(logits_BxPxV, ("batch", "length", "vocab"))


class NspHead(nn.Module):
    """Next-sentence prediction: 2-way dense on the pooled output, [B, D] → [B, 2]."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, pooled_BxD: jax.Array) -> jax.Array:
        logits_Bx2 = Dense((2,), ("embed", None), self.cfg, name="dense")(pooled_BxD)
        return logits_Bx2.astype(jnp.float32)


class ClassifierHead(nn.Module):
    """dropout + dense on the pooled output, [B, D] → [B, num_classes]."""

    cfg: TransformerConfig
    num_classes: int

    @nn.compact
    def __call__(self, pooled_BxD: jax.Array, train: bool = False) -> jax.Array:
        h_BxD = nn.Dropout(self.cfg.dropout_rate)(pooled_BxD, deterministic=not train)
        logits_BxC = Dense((self.num_classes,), ("embed", None), self.cfg, name="dense")(h_BxD)
        return logits_BxC.astype(jnp.float32)
