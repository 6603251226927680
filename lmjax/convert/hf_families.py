"""What differs between the two Hugging Face families lmjax reads and writes: GPT-2 and BERT.

For each family: its `config.json` ↔ `TransformerConfig` keyword arguments (every architecture
option is read from the config, with transformers' own defaults for keys a config leaves out;
an option lmjax does not implement is an error naming its key), and the table from each lmjax
parameter to the Hugging Face tensor(s) it is made of, with the layout conversion to use
(`hf.py` implements the kinds: `same`, `linear` for torch.nn.Linear [out, in], `conv1d` for
GPT-2's Conv1D [in, out], and `qkv_*` for the fused query/key/value projection).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lmjax import errors

if TYPE_CHECKING:
    from lmjax.models.transformer import TransformerConfig

# (lmjax parameter path, Hugging Face tensor names, layout conversion kind)
TensorEntry = tuple[str, tuple[str, ...], str]

# transformers' ACT2FN names → lmjax activations (`gelu_fast` and `gelu_pytorch_tanh` compute
# GPT-2's tanh approximation, `gelu_python` the exact erf GELU).
ACTIVATIONS_FROM_HF = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new"}

# Buffers some checkpoints carry that are not weights (GPT-2's causal mask, BERT's position ids).
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "embeddings.position_ids")
# lmjax parameters a checkpoint may lack (BertModel has no MLM/NSP heads): initialised afresh.
OPTIONAL_PARAMS = ("pooler/", "mlm_head/", "nsp_head/", "classifier/")

# transformers 4.x GPT2Config / BertConfig defaults, for the keys a config.json may leave out
# (tests/test_hf.py checks them against the installed transformers).
GPT2_DEFAULTS = dict(
    vocab_size=50257,
    n_positions=1024,
    n_embd=768,
    n_layer=12,
    n_head=12,
    n_inner=None,
    activation_function="gelu_new",
    resid_pdrop=0.1,
    embd_pdrop=0.1,
    attn_pdrop=0.1,
    layer_norm_epsilon=1e-5,
    initializer_range=0.02,
    scale_attn_weights=True,
    scale_attn_by_inverse_layer_idx=False,
    reorder_and_upcast_attn=False,
    add_cross_attention=False,
    tie_word_embeddings=True,
)
BERT_DEFAULTS = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=512,
    type_vocab_size=2,
    initializer_range=0.02,
    layer_norm_eps=1e-12,
    position_embedding_type="absolute",
    is_decoder=False,
    add_cross_attention=False,
    tie_word_embeddings=True,
)


def _require(c, key, value, why):
    if c[key] != value:
        raise errors.InputError(
            f"config.json: {key}={c[key]!r} is not supported ({why}); lmjax needs {value!r}"
        )


def _activation(c, key):
    if c[key] not in ACTIVATIONS_FROM_HF:
        raise errors.InputError(
            f"config.json: {key}={c[key]!r} is not supported; known: {sorted(ACTIVATIONS_FROM_HF)}"
        )
    return ACTIVATIONS_FROM_HF[c[key]]


def _heads(c, width_key, heads_key):
    if c[width_key] % c[heads_key]:
        raise errors.InputError(
            f"config.json: {width_key}={c[width_key]} does not divide into "
            f"{heads_key}={c[heads_key]} heads"
        )
    return c[heads_key]


#### GPT-2


def gpt2_from_hf(hf_config: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """`TransformerConfig` kwargs of a GPT2Config dict."""
    c = {**GPT2_DEFAULTS, **hf_config}
    _require(c, "scale_attn_weights", True, "attention scores are always scaled by 1/sqrt(K)")
    _require(c, "scale_attn_by_inverse_layer_idx", False, "no per-layer attention scaling")
    _require(c, "add_cross_attention", False, "no cross-attention")
    _require(c, "tie_word_embeddings", True, "the LM head is the token embedding")
    # reorder_and_upcast_attn only changes the order and precision of the same computation;
    # lmjax already scales q first and takes the softmax in float32.
    return dict(
        vocab_size=c["vocab_size"],  # 50257 for GPT-2: kept odd, never padded
        max_len=c["n_positions"],
        num_layers=c["n_layer"],
        num_heads=_heads(c, "n_embd", "n_head"),
        emb_dim=c["n_embd"],
        mlp_dim=c["n_inner"] or 4 * c["n_embd"],
        activation=_activation(c, "activation_function"),
        layer_norm_epsilon=c["layer_norm_epsilon"],
        dropout_rate=c["resid_pdrop"],  # lmjax has one rate for embeddings and residuals
        attention_dropout_rate=c["attn_pdrop"],
        init_std=c["initializer_range"],
        use_bias=True,
        causal=True,
        norm_position="pre",
        type_vocab_size=0,
        embed_norm=False,
        scale_residual_init=True,
    )


def gpt2_to_hf(
    cfg: TransformerConfig, arch: str, eos_token_id: int | None = None
) -> dict[str, Any]:
    """GPT2Config dict of a `TransformerConfig` (a pre-LN causal decoder)."""
    if not cfg.causal or cfg.norm_position != "pre" or cfg.type_vocab_size or cfg.embed_norm:
        raise errors.InputError(
            "GPT-2 export needs a causal pre-LN decoder without token types or embedding "
            f"LayerNorm; got causal={cfg.causal}, norm_position={cfg.norm_position!r}, "
            f"type_vocab_size={cfg.type_vocab_size}, embed_norm={cfg.embed_norm}"
        )
    if eos_token_id is None and cfg.vocab_size > 50256:
        eos_token_id = 50256  # GPT-2's <|endoftext|>
    return {
        "architectures": [arch],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_len,
        "n_embd": cfg.emb_dim,
        "n_layer": cfg.num_layers,
        "n_head": cfg.num_heads,
        "n_inner": cfg.mlp_dim,
        "activation_function": ACTIVATIONS_TO_HF[cfg.activation],
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "resid_pdrop": cfg.dropout_rate,
        "embd_pdrop": cfg.dropout_rate,
        "attn_pdrop": cfg.attention_dropout_rate,
        "initializer_range": cfg.init_std,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": "float32",
    }


def _dense(lmjax, hf, kind):
    return [
        (f"{lmjax}/kernel", (f"{hf}.weight",), kind),
        (f"{lmjax}/bias", (f"{hf}.bias",), "same"),
    ]


def _layer_norm(lmjax, hf):
    return [
        (f"{lmjax}/scale", (f"{hf}.weight",), "same"),
        (f"{lmjax}/bias", (f"{hf}.bias",), "same"),
    ]


def gpt2_tensors(num_layers: int, prefix: str) -> list[TensorEntry]:
    """[(lmjax path, Hugging Face names, kind)]; `prefix` is "transformer." in GPT2LMHeadModel."""
    p = prefix
    entries = [
        ("tok_embed/embedding", (f"{p}wte.weight",), "same"),
        ("pos_embed", (f"{p}wpe.weight",), "same"),
    ]
    for i in range(num_layers):
        b, h = f"block_{i}", f"{p}h.{i}"
        entries += [
            *_layer_norm(f"{b}/ln_attn", f"{h}.ln_1"),
            (f"{b}/attn/qkv/kernel", (f"{h}.attn.c_attn.weight",), "qkv_conv1d"),
            (f"{b}/attn/qkv/bias", (f"{h}.attn.c_attn.bias",), "qkv_conv1d"),
            *_dense(f"{b}/attn/out", f"{h}.attn.c_proj", "conv1d"),
            *_layer_norm(f"{b}/ln_mlp", f"{h}.ln_2"),
            *_dense(f"{b}/mlp/fc", f"{h}.mlp.c_fc", "conv1d"),
            *_dense(f"{b}/mlp/proj", f"{h}.mlp.c_proj", "conv1d"),
        ]
    return entries + _layer_norm("ln_final", f"{p}ln_f")


def gpt2_tied(prefix: str) -> dict[str, str]:
    """{name a checkpoint may also hold: the tensor it must equal} (weights lmjax ties)."""
    return {"lm_head.weight": f"{prefix}wte.weight"}


#### BERT


def bert_from_hf(hf_config: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """`TransformerConfig` kwargs of a BertConfig dict."""
    c = {**BERT_DEFAULTS, **hf_config}
    _require(c, "position_embedding_type", "absolute", "learned absolute positions only")
    _require(c, "is_decoder", False, "BERT is imported as a bidirectional encoder")
    _require(c, "add_cross_attention", False, "no cross-attention")
    if arch != "BertForSequenceClassification":
        _require(c, "tie_word_embeddings", True, "the MLM decoder is the token embedding")
    if c["type_vocab_size"] < 1:
        raise errors.InputError(f"config.json: type_vocab_size={c['type_vocab_size']} must be >= 1")
    return dict(
        vocab_size=c["vocab_size"],
        max_len=c["max_position_embeddings"],
        num_layers=c["num_hidden_layers"],
        num_heads=_heads(c, "hidden_size", "num_attention_heads"),
        emb_dim=c["hidden_size"],
        mlp_dim=c["intermediate_size"],
        activation=_activation(c, "hidden_act"),
        layer_norm_epsilon=c["layer_norm_eps"],
        dropout_rate=c["hidden_dropout_prob"],
        attention_dropout_rate=c["attention_probs_dropout_prob"],
        init_std=c["initializer_range"],
        type_vocab_size=c["type_vocab_size"],
        use_bias=True,
        causal=False,
        norm_position="post",
        embed_norm=True,
        scale_residual_init=False,
    )


def num_labels(hf_config: Mapping[str, Any]) -> int:
    """Classes of a BertForSequenceClassification config (transformers: len(id2label))."""
    if "id2label" in hf_config:
        return len(hf_config["id2label"])
    return hf_config.get("num_labels", 2)


def bert_to_hf(
    cfg: TransformerConfig, arch: str, num_classes: int | None = None, pad_token_id: int = 0
) -> dict[str, Any]:
    """BertConfig dict of a `TransformerConfig` (a post-LN encoder with token types)."""
    if cfg.causal or cfg.norm_position != "post" or not cfg.embed_norm or not cfg.type_vocab_size:
        raise errors.InputError(
            "BERT export needs a bidirectional post-LN encoder with token types and embedding "
            f"LayerNorm; got causal={cfg.causal}, norm_position={cfg.norm_position!r}, "
            f"type_vocab_size={cfg.type_vocab_size}, embed_norm={cfg.embed_norm}"
        )
    config = {
        "architectures": [arch],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.emb_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_dim,
        "hidden_act": ACTIVATIONS_TO_HF[cfg.activation],
        "hidden_dropout_prob": cfg.dropout_rate,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        "max_position_embeddings": cfg.max_len,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.init_std,
        "layer_norm_eps": cfg.layer_norm_epsilon,
        "position_embedding_type": "absolute",
        "pad_token_id": pad_token_id,
        "torch_dtype": "float32",
    }
    if num_classes is not None:
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_classes)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(num_classes)}
    return config


def bert_tensors(num_layers: int, prefix: str) -> list[TensorEntry]:
    """[(lmjax path, Hugging Face names, kind)]; `prefix` is "bert." except in BertModel.
    Entries for heads the lmjax model lacks are skipped by the caller."""
    p = prefix
    entries = [
        ("tok_embed/embedding", (f"{p}embeddings.word_embeddings.weight",), "same"),
        ("pos_embed", (f"{p}embeddings.position_embeddings.weight",), "same"),
        ("type_embed", (f"{p}embeddings.token_type_embeddings.weight",), "same"),
        *_layer_norm("ln_embed", f"{p}embeddings.LayerNorm"),
    ]
    for i in range(num_layers):
        b, h = f"block_{i}", f"{p}encoder.layer.{i}"
        qkv = [f"{h}.attention.self.{n}" for n in ("query", "key", "value")]
        entries += [
            (f"{b}/attn/qkv/kernel", tuple(f"{n}.weight" for n in qkv), "qkv_linear"),
            (f"{b}/attn/qkv/bias", tuple(f"{n}.bias" for n in qkv), "qkv_linear"),
            *_dense(f"{b}/attn/out", f"{h}.attention.output.dense", "linear"),
            *_layer_norm(f"{b}/ln_attn", f"{h}.attention.output.LayerNorm"),
            *_dense(f"{b}/mlp/fc", f"{h}.intermediate.dense", "linear"),
            *_dense(f"{b}/mlp/proj", f"{h}.output.dense", "linear"),
            *_layer_norm(f"{b}/ln_mlp", f"{h}.output.LayerNorm"),
        ]
    return entries + [
        *_dense("pooler/dense", f"{p}pooler.dense", "linear"),
        *_dense("mlm_head/dense", "cls.predictions.transform.dense", "linear"),
        *_layer_norm("mlm_head/ln", "cls.predictions.transform.LayerNorm"),
        ("mlm_head/bias", ("cls.predictions.bias",), "same"),
        *_dense("nsp_head/dense", "cls.seq_relationship", "linear"),
        *_dense("classifier/dense", "classifier", "linear"),
    ]


def bert_tied(prefix: str) -> dict[str, str]:
    return {
        "cls.predictions.decoder.weight": f"{prefix}embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }
