"""Hugging Face interop: import and export BERT and GPT-2 checkpoints.

    model, variables = hf.import_model("path/to/gpt2")       # config.json + model.safetensors
    logits = model.apply(variables, input_ids)               # GPT-2: [B, T, V] float32
    out = model.apply(variables, input_ids, token_type_ids=..., attention_mask=...)
    # BertForPreTraining / BertModel / BertForMaskedLM: {"mlm_logits", "nsp_logits"}
    # BertForSequenceClassification: {"logits"}
    hf.export_model(model, variables, "out_dir", tokenizer)  # loads with from_pretrained

Models run in evaluation mode (no dropout) unless `train=True` is passed to `apply`. The
architecture comes from `config.json` only (`hf_families`); safetensors are read with the
`safetensors` numpy API, so torch is needed only for `pytorch_model.bin` files.
`import_to_workdir` / `export_workdir` do the same to and from an lmjax workdir
(`experiments/convert.py`), so that `config.init_from` and `experiments/sample.py` work on it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import traverse_util

from lmjax import errors
from lmjax.convert import hf_families as fam
from lmjax.data import tokenizers
from lmjax.models import bert
from lmjax.models.transformer import DTYPES, Transformer, TransformerConfig

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"

# Hugging Face family: config translation, tensor table, tied tensors, base-model prefix and a
# tensor whose presence under the prefix tells a head model's checkpoint from a base model's.
FAMILIES = {
    "gpt2": (fam.gpt2_from_hf, fam.gpt2_tensors, fam.gpt2_tied, "transformer.", "wte.weight"),
    "bert": (
        fam.bert_from_hf,
        fam.bert_tensors,
        fam.bert_tied,
        "bert.",
        "embeddings.word_embeddings.weight",
    ),
}
# Hugging Face architecture → (family, lmjax model class, lmjax task).
ARCHITECTURES = {
    "GPT2LMHeadModel": ("gpt2", Transformer, "clm"),
    "GPT2Model": ("gpt2", Transformer, "clm"),
    "BertForPreTraining": ("bert", bert.BertForPreTraining, "mlm_nsp"),
    "BertForMaskedLM": ("bert", bert.BertForPreTraining, "mlm_nsp"),
    "BertModel": ("bert", bert.BertForPreTraining, "mlm_nsp"),
    "BertForSequenceClassification": ("bert", bert.BertForSequenceClassification, "classify"),
}


#### Import


def import_model(path: str, dtype: str = "float32") -> tuple[Transformer, dict[str, Any]]:
    """(lmjax model, {"params": ...}) of the Hugging Face checkpoint directory `path`.

    Heads the checkpoint lacks (BertModel: MLM and NSP heads) are initialised afresh, with a
    warning; a missing encoder tensor, a tensor lmjax has no place for, a shape that does not fit
    config.json and an architecture option lmjax lacks are errors naming the tensor or key.
    `dtype` is the compute dtype ("float32" or "bfloat16"); parameters are float32.
    """
    hf_config = read_json(os.path.join(path, CONFIG_FILE))
    arch = architecture(hf_config)
    family, model_class, _ = ARCHITECTURES[arch]
    from_hf, tensor_table, tied, head_prefix, marker = FAMILIES[family]
    cfg = TransformerConfig(**from_hf(hf_config, arch), dtype=DTYPES[dtype])
    model = make_model(model_class, cfg, hf_config)
    tensors = read_tensors(path)
    prefix = head_prefix if head_prefix + marker in tensors else ""
    abstract = _abstract_params(model)
    table = tensor_table(cfg.num_layers, prefix)
    params, used, missing = _params_from_tensors(tensors, table, abstract, path)
    for name, target in tied(prefix).items():
        if name in tensors:
            if target in tensors and not np.array_equal(tensors[name], tensors[target]):
                raise errors.InputError(f"{path}: {name} differs from {target}; lmjax ties them")
            used.add(name)
    unexpected = [n for n in tensors if n not in used and not n.endswith(fam.IGNORED_SUFFIXES)]
    if unexpected:
        raise errors.InputError(
            f"{path}: tensor {unexpected[0]} has no place in lmjax's {arch} "
            f"({len(unexpected)} such tensors): an architecture variant lmjax does not support"
        )
    required = [(p, n) for p, n in missing if not p.startswith(fam.OPTIONAL_PARAMS)]
    if required:
        raise errors.InputError(
            f"{path}: the checkpoint has no {required[0][1]} (lmjax {required[0][0]})"
        )
    if missing:
        rng = np.random.default_rng(0)
        params.update({p: _fresh_param(p, abstract[p], cfg.init_std, rng) for p, _ in missing})
        logging.warning(
            "%s: no weights for %s in the checkpoint; initialised afresh",
            path,
            ", ".join(p for p, _ in missing),
        )
    return model, {"params": traverse_util.unflatten_dict(params, sep="/")}


def _params_from_tensors(tensors, table, abstract, path):
    """Converts the tensors of `table` that the lmjax model has (`abstract`, flat); returns
    (flat params, Hugging Face names used, [(lmjax name, absent Hugging Face name)])."""
    params, used, missing = {}, set(), []
    for lmjax_name, hf_names, kind in table:
        if lmjax_name not in abstract:
            continue  # a head this lmjax model does not have
        absent = [n for n in hf_names if n not in tensors]
        if absent:
            missing.append((lmjax_name, absent[0]))
            continue
        box = abstract[lmjax_name]
        for n, shape in zip(hf_names, _hf_shapes(kind, box), strict=True):
            if tensors[n].shape != shape:
                raise errors.InputError(
                    f"{path}: {n} has shape {tensors[n].shape}, but config.json makes it {shape} "
                    f"(lmjax parameter {lmjax_name} {box.value.shape})"
                )
        params[lmjax_name] = to_lmjax(kind, [tensors[n] for n in hf_names], box)
        used.update(hf_names)
    return params, used, missing


def architecture(hf_config: Mapping[str, Any]) -> str:
    """The supported Hugging Face architecture named in a config.json dict."""
    archs = hf_config.get("architectures") or []
    known = [a for a in archs if a in ARCHITECTURES]
    if not known:
        raise errors.InputError(
            f"config.json: architectures={archs!r} (model_type {hf_config.get('model_type')!r}) "
            f"is not supported; lmjax imports {sorted(ARCHITECTURES)}"
        )
    family = ARCHITECTURES[known[0]][0]
    if hf_config.get("model_type", family) != family:
        raise errors.InputError(
            f"config.json: model_type={hf_config['model_type']!r} with {known[0]}"
        )
    return known[0]


def make_model(
    model_class: type[Transformer], cfg: TransformerConfig, hf_config: Mapping[str, Any]
) -> Transformer:
    if model_class is bert.BertForSequenceClassification:
        return model_class(cfg, num_classes=fam.num_labels(hf_config))
    return model_class(cfg)


def read_json(path: str) -> Any:
    if not os.path.exists(path):
        raise errors.MissingInput(f"{path} not found: is it a Hugging Face model directory?")
    with open(path) as f:
        return json.load(f)


def read_tensors(path: str) -> dict[str, np.ndarray]:
    """{name: numpy array} of model.safetensors, pytorch_model.bin or their sharded forms;
    floating point tensors as float32."""
    for name, load in ((SAFETENSORS_FILE, _load_safetensors), (TORCH_FILE, _load_torch)):
        files = [name]
        index = os.path.join(path, name + ".index.json")
        if os.path.exists(index):
            files = sorted(set(read_json(index)["weight_map"].values()))
        elif not os.path.exists(os.path.join(path, name)):
            continue
        tensors = {}
        for f in files:
            tensors.update(load(os.path.join(path, f)))
        # Checkpoints converted from TensorFlow name LayerNorm parameters gamma and beta.
        rename = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
        return {_replace_suffix(k, rename): v for k, v in tensors.items()}
    raise errors.MissingInput(f"{path} has no {SAFETENSORS_FILE} or {TORCH_FILE}")


def _replace_suffix(name, rename):
    for old, new in rename.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def _float32(x):
    return x.astype(np.float32) if np.issubdtype(x.dtype, np.floating) else x


def _load_safetensors(path):
    import safetensors
    import safetensors.numpy

    try:
        return {k: _float32(v) for k, v in safetensors.numpy.load_file(path).items()}
    except TypeError:  # numpy has no bfloat16: read the raw buffers with ml_dtypes' type
        import ml_dtypes

        with open(path, "rb") as f:
            raw = safetensors.deserialize(f.read())
        dtypes = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32}
        dtypes.update({"F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8})
        arrays = {k: np.frombuffer(t["data"], dtypes[t["dtype"]]) for k, t in raw}
        return {k: _float32(arrays[k].reshape(t["shape"])) for k, t in raw}


def _load_torch(path):
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs torch (pip install torch)") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}


#### Layout conversion


def _abstract_params(model):
    """{"a/b/kernel": nn.Partitioned of a ShapeDtypeStruct} without allocating the params."""
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))
    return traverse_util.flatten_dict(boxed["params"], sep="/")


def _fresh_param(name, box, init_std, rng):
    """A head parameter initialised as BERT (and transformers for missing weights) does:
    N(0, init_std) kernels, zero biases, unit LayerNorm scales."""
    shape = box.value.shape
    if name.endswith("kernel"):
        return jnp.asarray(rng.normal(0.0, init_std, shape), jnp.float32)
    return jnp.full(shape, 1.0 if name.endswith("scale") else 0.0, jnp.float32)


def _qkv_layout(box):
    """Permutation from the lmjax q/k/v tensor to [*inputs, 3, H, K]. The q/k/v axis is the one
    without a logical axis name, so this follows any order the model stores them in."""
    names = box.names
    canonical = (*[n for n in names if n not in (None, "heads", "kv")], None, "heads", "kv")
    return [names.index(n) for n in canonical], [canonical.index(n) for n in names]


def to_lmjax(kind: str, arrays: Sequence[np.ndarray], box: nn.Partitioned) -> jax.Array:
    """The lmjax parameter made of Hugging Face `arrays`, shaped as `box` (an abstract param)."""
    shape = box.value.shape
    if kind == "same":
        x = arrays[0]
    elif kind == "linear":  # torch.nn.Linear: [out, in]
        x = arrays[0].T.reshape(shape)
    elif kind == "conv1d":  # GPT-2's Conv1D: [in, out]
        x = arrays[0].reshape(shape)
    else:  # qkv_linear: q, k, v as Linear weights or biases; qkv_conv1d: one [in, 3 * H * K]
        to_canonical, to_box = _qkv_layout(box)
        canonical_shape = tuple(shape[i] for i in to_canonical)
        if kind == "qkv_linear":
            x = np.stack([a.T for a in arrays], axis=-2)  # [*in, 3, H * K]
        else:
            x = arrays[0]
        x = np.transpose(x.reshape(canonical_shape), to_box)
    return jnp.asarray(x, jnp.float32)


def to_hf(kind: str, x: jax.Array, box: nn.Partitioned) -> tuple[jax.Array, ...]:
    """The Hugging Face tensors (a tuple) of lmjax parameter `x`; jnp ops, so that
    `jax.eval_shape` gives their shapes."""
    if kind == "same":
        return (x,)
    if kind == "linear":
        return (x.reshape(-1, x.shape[-1]).T,)
    if kind == "conv1d":
        return (x.reshape(-1, x.shape[-1]),)
    to_canonical, _ = _qkv_layout(box)
    x = jnp.transpose(x, to_canonical)  # [*in, 3, H, K]
    x = x.reshape(*x.shape[:-2], -1)  # [*in, 3, H * K]
    if kind == "qkv_conv1d":
        return (x.reshape(*x.shape[:-2], -1),)
    return tuple(jnp.take(x, i, axis=-2).T for i in range(3))


def _hf_shapes(kind, box):
    out = jax.eval_shape(lambda x: to_hf(kind, x, box), box.value)
    return [tuple(o.shape) for o in out]


#### Export


def export_model(
    model: Transformer,
    variables: Mapping[str, Any],
    path: str,
    tokenizer: tokenizers.Tokenizer | None = None,
) -> None:
    """Writes `path`/{config.json, model.safetensors} (and the tokenizer's files when given),
    loadable with transformers' `from_pretrained`. A model trained without biases (nanoGPT's
    recipe) is written with zero biases: GPT-2 always has them."""
    arch = hf_architecture(model)
    family = ARCHITECTURES[arch][0]
    _, tensor_table, _, head_prefix, _ = FAMILIES[family]
    cfg = model.cfg
    if not cfg.use_bias:
        model = model.clone(cfg=dataclasses.replace(cfg, use_bias=True))
    abstract = _abstract_params(model)
    params = traverse_util.flatten_dict(nn.unbox(variables["params"]), sep="/")
    tensors = {}
    for lmjax_name, hf_names, kind in tensor_table(cfg.num_layers, head_prefix):
        if lmjax_name not in abstract:
            continue
        box = abstract[lmjax_name]
        x = params.pop(lmjax_name, None)
        if x is None and not cfg.use_bias and lmjax_name.endswith("bias"):
            x = np.zeros(box.value.shape, np.float32)
        if x is None or tuple(x.shape) != box.value.shape:
            raise errors.InputError(
                f"params/{lmjax_name}: shape {None if x is None else tuple(x.shape)}, but the "
                f"model's config makes it {box.value.shape}"
            )
        if lmjax_name == "tok_embed/embedding":  # padding rows (vocab_multiple) have no place
            x = x[: cfg.vocab_size]
            box = box.replace_boxed(jax.ShapeDtypeStruct(tuple(x.shape), box.value.dtype))
        for n, t in zip(hf_names, to_hf(kind, jnp.asarray(x, jnp.float32), box), strict=True):
            tensors[n] = np.ascontiguousarray(np.asarray(t, np.float32))
    if params:
        raise errors.InputError(f"params/{sorted(params)[0]} has no Hugging Face {arch} equivalent")

    import safetensors.numpy

    os.makedirs(path, exist_ok=True)
    safetensors.numpy.save_file(
        tensors, os.path.join(path, SAFETENSORS_FILE), metadata={"format": "pt"}
    )
    if family == "gpt2":
        eos = getattr(tokenizer, "eos_id", None)
        hf_config = fam.gpt2_to_hf(cfg, arch, eos_token_id=eos)
    else:
        pad = getattr(tokenizer, "pad_id", 0)
        num_classes = getattr(model, "num_classes", None)
        hf_config = fam.bert_to_hf(cfg, arch, num_classes, pad_token_id=pad)
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(hf_config, f, indent=2)
    if tokenizer is not None:
        write_hf_tokenizer(tokenizer, path, cfg.max_len)


def hf_architecture(model: nn.Module) -> str:
    """The Hugging Face architecture an lmjax model exports as."""
    if isinstance(model, bert.BertForSequenceClassification):
        return "BertForSequenceClassification"
    if isinstance(model, bert.BertForPreTraining):
        return "BertForPreTraining"
    if type(model) is Transformer:
        return "GPT2LMHeadModel"
    raise errors.InputError(f"no Hugging Face architecture for {type(model).__name__}")


#### Tokenizers


def read_hf_tokenizer(path: str, model_type: str) -> tokenizers.Tokenizer | None:
    """The lmjax tokenizer of a Hugging Face directory, or None: BERT's vocab.txt as WordPiece
    (`do_lower_case` from tokenizer_config.json), else tokenizer.json or GPT-2's vocab.json +
    merges.txt through Hugging Face `tokenizers`."""
    config_path = os.path.join(path, "tokenizer_config.json")
    tok_config = read_json(config_path) if os.path.exists(config_path) else {}
    vocab_txt = os.path.join(path, "vocab.txt")
    if model_type == "bert" and os.path.exists(vocab_txt):
        lowercase = tok_config.get("do_lower_case", True)
        return tokenizers.WordPieceTokenizer.from_vocab_file(vocab_txt, lowercase=lowercase)
    if os.path.exists(os.path.join(path, "tokenizer.json")):
        return tokenizers.HFTokenizer.from_file(os.path.join(path, "tokenizer.json"), tok_config)
    vocab_json, merges = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
    if os.path.exists(vocab_json) and os.path.exists(merges):
        return tokenizers.HFTokenizer.from_bpe_files(vocab_json, merges, tok_config)
    return None


def write_hf_tokenizer(tokenizer: tokenizers.Tokenizer, path: str, max_len: int) -> None:
    """The tokenizer files transformers' AutoTokenizer reads; a character tokenizer has none."""
    if isinstance(tokenizer, tokenizers.WordPieceTokenizer):
        with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
            f.writelines(piece + "\n" for piece in tokenizer.vocab)
        tok_config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": tokenizer.lowercase,
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        }
    elif isinstance(tokenizer, tokenizers.HFTokenizer):
        tokenizer.save_hf(path)
        tok_config = dict(tokenizer.hf_config)
    else:
        logging.warning("%s has no Hugging Face form; no tokenizer written", type(tokenizer))
        return
    tok_config["model_max_length"] = max_len
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(tok_config, f, indent=2)


#### lmjax workdirs


def import_to_workdir(
    hf_dir: str, workdir: str, base_config: Callable[[str], ml_collections.ConfigDict]
) -> str:
    """Writes `workdir` as a training run leaves it: config.json (`base_config(task)` with the
    imported architecture), the tokenizer and a step-0 checkpoint, so that `init_from`,
    experiments/sample.py and `export_workdir` read it. Not meant to be resumed in place (the
    checkpoint has no data-iterator position). Returns the task name."""
    from lmjax import tasks
    from lmjax import workdir as workdir_lib
    from lmjax.train import checkpoint, step

    model, variables = import_model(hf_dir)
    hf_config = read_json(os.path.join(hf_dir, CONFIG_FILE))
    family, _, task_name = ARCHITECTURES[architecture(hf_config)]
    tokenizer = read_hf_tokenizer(hf_dir, family)
    if tokenizer is None:
        raise errors.MissingInput(f"{hf_dir} has no tokenizer files (vocab.txt, tokenizer.json)")
    if tokenizer.vocab_size != model.cfg.vocab_size:
        raise errors.InputError(
            f"{hf_dir}: the tokenizer has {tokenizer.vocab_size} tokens and the model "
            f"{model.cfg.vocab_size}; lmjax sizes the model by its tokenizer"
        )
    config = tasks.resolve_config(workdir_config(base_config(task_name), task_name, model, hf_dir))

    # The config must rebuild exactly the imported model, as every later reader does.
    rebuilt = tasks.get_task(config).make_model(tokenizer.vocab_size)
    same_classes = getattr(rebuilt, "num_classes", 0) == getattr(model, "num_classes", 0)
    if type(rebuilt) is not type(model) or rebuilt.cfg != model.cfg or not same_classes:
        raise AssertionError(f"config.json would rebuild {rebuilt}, not {model}")
    tx = step.make_optimizer(config)
    state = step.new_state(variables["params"], tx, jax.random.PRNGKey(0))

    workdir_lib.save_config(config, workdir)
    workdir_lib.save_tokenizer(tokenizer, workdir)
    manager = checkpoint.make_manager(workdir, config.checkpoint_max_to_keep)
    checkpoint.save(manager, 0, state, {}, force=True)
    manager.wait_until_finished()
    return task_name


def workdir_config(
    config: ml_collections.ConfigDict, task_name: str, model: Transformer, hf_dir: str
) -> ml_collections.ConfigDict:
    """A copy of `config` with the task, positions and architecture of `model` (every
    `TransformerConfig` field, so no default of a task fills it in)."""
    cfg = model.cfg
    config = config.copy_and_resolve_references()
    config.task = task_name
    config.seq_len = cfg.max_len  # the tasks take the number of positions from seq_len
    config.init_from = ""
    dtype_names = {v: k for k, v in DTYPES.items()}
    for field in dataclasses.fields(cfg):
        if field.name not in ("vocab_size", "max_len"):
            value = getattr(cfg, field.name)
            config.model[field.name] = dtype_names[value] if field.name == "dtype" else value
    if "vocab_size" in config.get("data", {}):
        config.data.vocab_size = cfg.vocab_size
    if task_name == "classify":  # the GLUE task its head fits: STS-B regression, or none
        config.num_classes = model.num_classes
        config.data.glue_task = {1: "stsb", 2: config.data.glue_task}.get(model.num_classes, "")
    config.imported_from = os.path.abspath(hf_dir)
    return config


def load_workdir(
    workdir: str, step: int | None = None
) -> tuple[nn.Module, dict, tokenizers.Tokenizer]:
    """(model, params, tokenizer) of any lmjax workdir's config and checkpoint (latest step)."""
    from lmjax.train import inference

    return inference.load_model(workdir, step)


def export_workdir(workdir: str, hf_dir: str, step: int | None = None) -> None:
    """Writes `hf_dir` from `workdir`'s model, checkpoint (latest step) and tokenizer."""
    model, params, tokenizer = load_workdir(workdir, step)
    export_model(model, {"params": params}, hf_dir, tokenizer)
