"""Training parity: lmjax's train step against Hugging Face `transformers` in torch, step by step.

  python benchmarks/train_parity.py --config=configs/bert_books.py \
      --config.data.path=../shared/data/gutenberg/books --steps=300
  python benchmarks/train_parity.py --config=configs/gpt_shakespeare_char.py \
      --config.model.use_bias=True --steps=300

Both sides start from the same weights (lmjax's init, exported with `lmjax.convert.hf`) and take
the same batches (lmjax's input pipeline, masks included). lmjax runs its own jitted train step
(`lmjax.train.build`, as the train loop does); torch runs `BertForPreTraining` or
`GPT2LMHeadModel` with a loop written here from torch's parts: `torch.optim.AdamW` over two
parameter groups (weight decay on the Linear/Conv1D weights, on the embedding tables only with
`optimizer.decay_embeddings`), global-norm clipping (`clip_grads_with_norm_`), and the warmup +
cosine schedule written out below. Dropout is switched off on both sides (the two draw
different masks); everything else is the config's. The losses of every step (computed before
that step's update) and the gradient norms (before clipping) are compared; a relative loss
difference above `--rtol` at any step fails the run (exit 1). The last line printed is one JSON
object.

The config must describe a model Hugging Face has: task `mlm_nsp` (BERT) or `clm` with biases
(GPT-2; `--config.model.use_bias=True` for the character-level configs, which train without).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile

import jax
import ml_collections
import numpy as np

os.environ.setdefault("USE_TF", "0")  # transformers would import TensorFlow and Flax otherwise
os.environ.setdefault("USE_FLAX", "0")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import pytorch_utils  # noqa: E402

from lmjax.convert import hf  # noqa: E402
from lmjax.data import pipeline  # noqa: E402
from lmjax.train import build  # noqa: E402

ARCHITECTURES = {"mlm_nsp": transformers.BertForPreTraining, "clm": transformers.GPT2LMHeadModel}


def parity_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with dropout off (the two frameworks cannot draw the same dropout masks)."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.dropout_rate = 0.0
    if "attention_dropout_rate" in config.model:
        config.model.attention_dropout_rate = 0.0
    return config


def learning_rate(config: ml_collections.ConfigDict, step: int) -> float:
    """The rate of update `step` (0-based): linear from 0 over `warmup_steps`, then a half cosine
    down to `min_learning_rate` at `num_train_steps` (BERT's and nanoGPT's shape)."""
    peak, low = config.learning_rate, config.min_learning_rate
    warmup, total = config.warmup_steps, max(config.num_train_steps, config.warmup_steps + 1)
    if step < warmup:
        return peak * step / warmup
    progress = min(step - warmup, total - warmup) / (total - warmup)
    return low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def torch_optimizer(model: torch.nn.Module, config: ml_collections.ConfigDict):
    """AdamW with BERT's and GPT-2's decay rule: the weights of Linear and Conv1D layers decay,
    biases and LayerNorm never; embedding tables (and the output layer tied to one) only with
    `decay_embeddings`. Returns (optimizer, LambdaLR scheduler)."""
    opt = config.optimizer
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    matrices = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, torch.nn.Linear | pytorch_utils.Conv1D)
    }
    decay = matrices | embeddings if opt.decay_embeddings else matrices - embeddings
    params = list(model.parameters())  # a tied tensor is listed once
    groups = [
        {"params": [p for p in params if id(p) in decay], "weight_decay": opt.weight_decay},
        {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=config.learning_rate, betas=(opt.b1, opt.b2), eps=opt.eps
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: learning_rate(config, s) / config.learning_rate
    )
    return optimizer, schedule


def torch_loss(model: torch.nn.Module, batch: dict[str, np.ndarray], config) -> torch.Tensor:
    """The objective of `config.task` on one lmjax batch, written from the Hugging Face model's
    logits: mean next-token cross-entropy (clm); mean cross-entropy over the masked positions
    (labels -100 elsewhere) plus, with `use_nsp`, the next-sentence cross-entropy (mlm_nsp)."""
    t = {
        k: torch.from_numpy(np.asarray(v)).long()
        for k, v in batch.items()
        if k != "masked_lm_weights"
    }
    ce = torch.nn.functional.cross_entropy
    if config.task == "clm":
        logits = model(input_ids=t["inputs"]).logits
        return ce(logits.flatten(0, 1), t["targets"].flatten())
    labels = torch.full_like(t["input_ids"], -100)
    weights = np.asarray(batch["masked_lm_weights"]) > 0
    rows, cols = np.nonzero(weights)
    labels[rows, t["masked_lm_positions"][rows, cols]] = t["masked_lm_ids"][rows, cols]
    out = model(
        input_ids=t["input_ids"],
        token_type_ids=t["token_type_ids"],
        attention_mask=t["attention_mask"],
    )
    loss = ce(out.prediction_logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    if config.use_nsp:
        loss = loss + ce(out.seq_relationship_logits, t["next_sentence_label"])
    return loss


def clip_gradients(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """`clip_grad_norm_` with the global norm summed in float64: torch's float32 `vector_norm`
    on CPU is off by ~4e-4 relative on a [8000, 128] embedding gradient (against numpy float64),
    which would make the two clipping factors differ more than the two gradients do."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.sqrt(sum(torch.sum(p.grad.double() ** 2) for p in params))
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm.float())
    return norm


def run(config: ml_collections.ConfigDict, steps: int, log_every: int = 0) -> dict[str, list]:
    """Trains `config` for `steps` steps on both sides; returns {"lmjax_loss", "torch_loss",
    "lmjax_grad_norm", "torch_grad_norm"} (one float per step) and the parameters' difference
    after the last step (`param_difference`)."""
    config = parity_config(config)
    s = build.setup(config, devices=jax.devices()[:1])
    data = s.task.make_data()
    model = s.task.make_model(data.vocab_size)
    b = build.build(s, model)
    with s.activate():
        state = b.steps.place(b.init(jax.random.PRNGKey(config.seed)))
    with tempfile.TemporaryDirectory() as tmp:
        hf.export_model(model, {"params": jax.device_get(state["params"])}, tmp)
        torch_model = ARCHITECTURES[config.task].from_pretrained(tmp, attn_implementation="eager")
    torch_model.train()  # dropout is 0: train mode only as a training loop would set it
    optimizer, schedule = torch_optimizer(torch_model, config)

    batches = pipeline.train_iterator(data.train_ds, config.batch_size, config.seed, data.batch_fn)
    history = {k: [] for k in ("lmjax_loss", "torch_loss", "lmjax_grad_norm", "torch_grad_norm")}
    for i in range(steps):
        batch = next(batches)
        with s.activate():
            state, metrics = b.steps.train(state, batch)
        loss = torch_loss(torch_model, batch, config)
        optimizer.zero_grad()
        loss.backward()
        grad_norm = clip_gradients(torch_model, config.optimizer.grad_clip_norm)
        optimizer.step()
        schedule.step()
        history["lmjax_loss"].append(float(metrics["loss"]))
        history["lmjax_grad_norm"].append(float(metrics["grad_norm"]))
        history["torch_loss"].append(loss.item())
        history["torch_grad_norm"].append(float(grad_norm))
        if log_every and (i % log_every == 0 or i == steps - 1):
            print(
                f"step {i:5d}  loss lmjax {history['lmjax_loss'][-1]:.6f} "
                f"torch {history['torch_loss'][-1]:.6f}  rel {relative(history)[-1]:.2e}",
                flush=True,
            )
    history.update(param_difference(model, state["params"], torch_model))
    return history


def param_difference(model, params, torch_model) -> dict[str, float]:
    """lmjax's parameters (exported as Hugging Face tensors) against torch's: the largest absolute
    difference of any entry, and the norm of the difference over the norm of torch's, over all
    tensors but the key biases. A key bias adds the same amount to every score of a query, which
    softmax ignores: its gradient is zero in exact arithmetic, and Adam scales the rounding noise
    each side computes instead into steps of the learning rate's size, a random walk per side."""
    with tempfile.TemporaryDirectory() as tmp:
        hf.export_model(model, {"params": jax.device_get(params)}, tmp)
        ours = hf.read_tensors(tmp)
    theirs = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    diff = [_without_key_bias(k, ours[k] - theirs[k]) for k in ours]
    ref = [_without_key_bias(k, theirs[k]) for k in ours]
    return {
        "param_max_abs": float(max(np.abs(d).max(initial=0.0) for d in diff)),
        "param_rel_norm": float(
            np.sqrt(sum(np.sum(d**2) for d in diff)) / np.sqrt(sum(np.sum(r**2) for r in ref))
        ),
    }


def _without_key_bias(name: str, x: np.ndarray) -> np.ndarray:
    """`x` (a Hugging Face tensor's values) with its key-bias entries left out."""
    if name.endswith("attention.self.key.bias"):  # BERT
        return x[:0]
    if name.endswith("attn.c_attn.bias"):  # GPT-2: [query, key, value] biases, D each
        d = x.shape[0] // 3
        return np.concatenate([x[:d], x[2 * d :]])
    return x.ravel()


def relative(history: dict[str, list]) -> np.ndarray:
    """|lmjax - torch| / |torch| of the loss at every step."""
    ours, theirs = np.array(history["lmjax_loss"]), np.array(history["torch_loss"])
    return np.abs(ours - theirs) / np.abs(theirs)


def main() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file("config", None, "Config file, `path:preset`.")
    steps = flags.DEFINE_integer("steps", 300, "Train steps on each side.")
    rtol = flags.DEFINE_float("rtol", 1e-4, "Largest relative loss difference allowed.")
    log_every = flags.DEFINE_integer("log_every", 25, "Print the two losses every N steps.")
    output = flags.DEFINE_string("output", "", "Also write the per-step history as JSON here.")
    # torch's OpenMP threads spin while they wait: beside another busy process (JAX's own
    # threads, a second run) a step takes many times longer. One thread is the robust choice
    # for a check that is not a benchmark.
    threads = flags.DEFINE_integer("torch_threads", 1, "torch's intra-op threads.")
    flags.mark_flags_as_required(["config"])

    def _main(argv):
        del argv
        config = config_flag.value
        torch.set_num_threads(threads.value)
        history = run(config, steps.value, log_every.value)
        rel = relative(history)
        grad_rel = np.abs(
            np.array(history["lmjax_grad_norm"]) - np.array(history["torch_grad_norm"])
        ) / np.array(history["torch_grad_norm"])
        summary = {
            "task": config.task,
            "steps": steps.value,
            "loss_first": [history["lmjax_loss"][0], history["torch_loss"][0]],
            "loss_last": [history["lmjax_loss"][-1], history["torch_loss"][-1]],
            "loss_max_rel": float(rel.max()),
            "loss_max_rel_step": int(rel.argmax()),
            "grad_norm_max_rel": float(grad_rel.max()),
            "param_max_abs": history["param_max_abs"],
            "param_rel_norm": history["param_rel_norm"],
            "passed": bool(rel.max() <= rtol.value),
        }
        if output.value:
            with open(output.value, "w") as f:
                json.dump({**summary, "history": history}, f)
        print(json.dumps(summary))
        sys.exit(0 if summary["passed"] else 1)

    app.run(_main)


if __name__ == "__main__":
    main()
