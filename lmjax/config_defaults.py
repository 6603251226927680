"""Config blocks every experiment shares (so configs/*.py show only what they choose), and the
defaults of keys added after a config or workdir was written."""

from __future__ import annotations

from typing import Any

import ml_collections


def add_parallelism(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """How the run maps onto its devices: the model's kernels, the mesh axis sizes (product =
    device count, -1 takes the rest) and the map from the model's logical axis names to mesh
    axes: data parallelism by default, FSDP over `fsdp`, Megatron-style tensor parallelism over
    `tensor`."""
    # Kernels: "auto" is resolved from the run's devices (lmjax/models/attention.py).
    config.model.attention_impl = "auto"  # xla, cudnn (NVIDIA), tpu_splash (TPU), cpu_ffi (x86)
    config.model.matmul_impl = "auto"  # xla, xla_cpu (16-bit matmuls in XLA:CPU's fast forms)
    # With remat and a named remat_policy: what to keep of qkv, attention, mlp_hidden.
    config.model.remat_names = ()
    # Token-table rows rounded up to a multiple of this (128 for accelerators; 1: none).
    config.model.vocab_multiple = 1
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    config.use_pmap = False  # jax.pmap data parallelism (replicated state) instead of the mesh
    config.grad_accum_steps = 1  # split each batch into this many micro-batches (same update)
    config.logical_axis_rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("mlp", "tensor"),
        ("vocab", "tensor"),
        ("length", None),
        ("kv", None),
    )
    return config


def shrink_for_test(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `:test` preset: a handful of steps that log, eval and checkpoint, for CI."""
    config.num_train_steps = 6
    config.warmup_steps = 2
    config.log_every_steps = 2
    config.eval_every_steps = 3
    config.eval_steps = 2
    config.checkpoint_every_steps = 3
    return config


# Keys lmjax added after configs (and workdirs' config.json files) existed without them, with the
# value that keeps the old behaviour. The code reads them as `config.KEY`; `fill_defaults` is what
# makes that safe for an older config file or workdir.
DEFAULTS = {
    "": {
        "init_from": "",
        "init_from_skip": (),
        "use_pmap": False,
        "grad_accum_steps": 1,
        "model.attention_impl": "auto",
        "model.matmul_impl": "auto",
        "model.remat_names": (),
        "model.vocab_multiple": 1,
    },
    "clm": {
        "data.tokenizer": "char",
        "data.tokenizer_train_chars": 0,
        "data.tfds_name": "",
        "data.tfds_split": "train",
        "data.tfds_text_key": "text",
        "data.tfds_data_dir": "",
        "data.max_words": 0,
    },
    "mlm_nsp": {
        "data.path": "",
        "data.tfds_eval_split": "",
        "data.group_size": 16,
        "data.shuffle_window": 20_000,
        "data.vocab_path": "",
        "data.tfds_name": "",
        "data.tfds_split": "train",
        "data.tfds_text_key": "text",
        "data.tfds_data_dir": "",
        "data.max_words": 0,
    },
    "classify": {
        "data.glue_task": "sst2",
        "data.tfds_name": "",
        "data.tfds_eval_split": "validation",
        "data.tfds_data_dir": "",
        "data.holdout_size": 0,
        "data.holdout_seed": 0,
        "data.train_examples": 0,
    },
}


def fill_defaults(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Sets each key of DEFAULTS (common and the config's task's) that `config` lacks, in place;
    returns {key: default} of those it set."""
    added = {}
    for key, value in {**DEFAULTS[""], **DEFAULTS.get(config.get("task"), {})}.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node.get(p)
            if node is None:
                break
        if node is not None and leaf not in node:
            with node.unlocked():
                node[leaf] = value
            added[key] = value
    return added


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with `fill_defaults` applied."""
    config = config.copy_and_resolve_references()
    fill_defaults(config)
    return config
