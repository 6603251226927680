"""BERT (Devlin et al. 2018) from the decoder's building blocks, with its heads.

The encoder is `Transformer.encode` under a BERT config (`bert_config`): word + token-type +
position embeddings, LayerNorm and dropout, post-LN blocks with exact GELU, no final LayerNorm,
and an attention mask that hides padding. The models subclass `Transformer`, so the encoder's
parameters keep the decoder's names at the top of the tree and the heads sit beside them:

    tok_embed/embedding [V, D]   ↔ bert.embeddings.word_embeddings
    pos_embed [max_len, D]       ↔ bert.embeddings.position_embeddings
    type_embed [types, D]        ↔ bert.embeddings.token_type_embeddings
    ln_embed/{scale, bias}       ↔ bert.embeddings.LayerNorm
    block_i/attn/qkv [D, H, 3, K] (q, k, v fused per head) + bias [H, 3, K]
                                 ↔ bert.encoder.layer.i.attention.self.{query, key, value}
    block_i/attn/out [H, K, D]   ↔ ...attention.output.dense
    block_i/ln_attn              ↔ ...attention.output.LayerNorm
    block_i/mlp/fc [D, F]        ↔ ...intermediate.dense
    block_i/mlp/proj [F, D]      ↔ ...output.dense
    block_i/ln_mlp               ↔ ...output.LayerNorm
    pooler/dense                 ↔ bert.pooler.dense
    mlm_head/{dense, ln, bias}   ↔ cls.predictions.{transform.dense, transform.LayerNorm, bias}
    nsp_head/dense               ↔ cls.seq_relationship
    classifier/dense             ↔ classifier

Fine-tuning copies every parameter the two models share (encoder and pooler) and initialises
the rest.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.models.heads import ClassifierHead, MlmHead, NspHead, Pooler
from lmjax.models.transformer import Transformer, TransformerConfig

# google-research/bert `bert_config.json` and Hugging Face `BertConfig` defaults.
BERT_DEFAULTS = dict(
    causal=False,
    norm_position="post",
    type_vocab_size=2,
    embed_norm=True,
    activation="gelu",
    layer_norm_epsilon=1e-12,
    use_bias=True,
    scale_residual_init=False,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
)


def bert_config(vocab_size: int, max_len: int = 512, **overrides) -> TransformerConfig:
    """A `TransformerConfig` with BERT's architecture; `overrides` set sizes and the rest."""
    return TransformerConfig(
        vocab_size=vocab_size, max_len=max_len, **{**BERT_DEFAULTS, **overrides}
    )


class BertForPreTraining(Transformer):
    """Encoder + pooler + MLM head (tied to the token embedding) + NSP head.

    `apply(variables, input_ids, token_type_ids=None, attention_mask=None,
    masked_lm_positions=None, train=False)` → `{"mlm_logits": [B, P, V] at
    `masked_lm_positions` [B, P] (or [B, T, V] at every position), "nsp_logits": [B, 2]}`.
    """

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        masked_lm_positions: jax.Array | None = None,
        train: bool = False,
    ) -> dict[str, jax.Array]:
        cfg = self.cfg
        x_BxTxD, embedding_VxD = self.encode(input_ids, token_type_ids, attention_mask, train=train)
        if masked_lm_positions is None:
            x_BxPxD = x_BxTxD
        else:
            # Gather before the head: its dense, LayerNorm and [D, V] matmul then run on the P
            # predicted positions instead of all T (BERT pretrains with P ≈ 0.15 T).
            x_BxPxD = jnp.take_along_axis(x_BxTxD, masked_lm_positions[:, :, None], axis=1)
            x_BxPxD = nn.with_logical_constraint(x_BxPxD, ("batch", "length", "embed"))
        mlm_logits = MlmHead(cfg, name="mlm_head")(x_BxPxD, embedding_VxD)
        nsp_logits = NspHead(cfg, name="nsp_head")(Pooler(cfg, name="pooler")(x_BxTxD))
        return {"mlm_logits": mlm_logits, "nsp_logits": nsp_logits}


class BertForSequenceClassification(Transformer):
    """Encoder + pooler + classifier: `apply(variables, input_ids, token_type_ids=None,
    attention_mask=None, train=False)` → `{"logits": [B, num_classes]}`."""

    num_classes: int = 2

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        token_type_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        train: bool = False,
    ) -> dict[str, jax.Array]:
        cfg = self.cfg
        x_BxTxD, _ = self.encode(input_ids, token_type_ids, attention_mask, train=train)
        pooled_BxD = Pooler(cfg, name="pooler")(x_BxTxD)
        logits = ClassifierHead(cfg, self.num_classes, name="classifier")(pooled_BxD, train=train)
        return {"logits": logits}
