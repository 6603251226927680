"""Milliseconds per BERT pretraining step in PyTorch eager with Hugging Face `transformers`: the
peer of lmjax's `mlm_nsp` step in `benchmarks/suite.py`.

  python benchmarks/torch_bert.py --layers=2 --hidden=128 --heads=2 --intermediate=512 \
      --vocab=8000 --max_position=128 --seq_len=128 --batch=32 --steps=30

What it measures: a `transformers.BertForPreTraining` built from a `BertConfig` (random weights,
nothing downloaded) in train mode (dropout 0.1 as BERT, `--dropout`), on one random batch laid
out as lmjax's (`input_ids`, token types 0 then 1 at half the sequence, an attention mask of ones,
`--max_predictions` MLM labels per sequence and -100 elsewhere, a next-sentence label). A step
is the forward pass with its loss (MLM + NSP), the backward pass, the gradient clipped to norm 1
(as lmjax and nanoGPT do), `torch.optim.AdamW`'s update and `zero_grad`; the median of `--steps`
steps after `--warmup` untimed ones is the figure. The model computes MLM logits at every
position (BertForPreTraining's design), lmjax's only at the masked ones; `--gather_masked` times
the same Hugging Face modules with that gather, for the cost of the step's compute alone.

torch runs on the CPU with `torch.get_num_threads()` threads (one per core unless OMP_NUM_THREADS
says otherwise; the JSON line gives the number next to the cores it may use, and a line before it
says when it is fewer). Its OpenMP threads wait for each other, so a step slows down many times
when other processes hold the cores: time on a quiet machine. The last line printed is one JSON
object: {"impl": "transformers", "step_ms": ..., "tokens_per_sec": ...}.
"""

import argparse
import json
import os
import statistics
import time

import torch

# transformers imports TensorFlow and Flax when they are installed (lmjax's environment has both),
# which doubles the script's start-up.
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")
import transformers  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--max_position", type=int, default=512, help="position embeddings")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max_predictions", type=int, default=20, help="MLM labels per sequence")
    p.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--gather_masked", action="store_true", help="MLM head at masked positions")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_batch(args, generator):
    """One batch in lmjax's `mlm_nsp` layout; labels -100 (ignored) except at the masked
    positions (drawn from 1..T-1, never [CLS])."""
    b, t, p = args.batch, args.seq_len, args.max_predictions
    positions_BxP = torch.argsort(torch.rand(b, t - 1, generator=generator), dim=1)[:, :p] + 1
    labels_BxT = torch.full((b, t), -100, dtype=torch.long)
    labels_BxT.scatter_(1, positions_BxP, torch.randint(0, args.vocab, (b, p), generator=generator))
    return {
        "input_ids": torch.randint(0, args.vocab, (b, t), generator=generator),
        "token_type_ids": (torch.arange(t) >= t // 2).long().expand(b, t).contiguous(),
        "attention_mask": torch.ones(b, t, dtype=torch.long),
        "labels": labels_BxT,
        "next_sentence_label": torch.randint(0, 2, (b,), generator=generator),
        "positions": torch.sort(positions_BxP, dim=1).values,
    }


def loss_fn(model, batch, gather_masked):
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    if not gather_masked:
        return model(
            **inputs, labels=batch["labels"], next_sentence_label=batch["next_sentence_label"]
        ).loss
    sequence_BxTxD, pooled_BxD = model.bert(**inputs, return_dict=False)[:2]
    positions_BxP = batch["positions"]
    index_BxPxD = positions_BxP[:, :, None].expand(-1, -1, sequence_BxTxD.shape[-1])
    mlm_BxPxV, nsp_Bx2 = model.cls(torch.gather(sequence_BxTxD, 1, index_BxPxD), pooled_BxD)
    labels_BxP = torch.gather(batch["labels"], 1, positions_BxP)
    mlm = torch.nn.functional.cross_entropy(mlm_BxPxV.flatten(0, 1), labels_BxP.flatten())
    return mlm + torch.nn.functional.cross_entropy(nsp_Bx2, batch["next_sentence_label"])


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if torch.get_num_threads() < cores:
        print(f"torch_bert: torch uses {torch.get_num_threads()} threads of {cores} cores")
    config = transformers.BertConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=args.max_position,
        hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout,
    )
    model = transformers.BertForPreTraining(config).train()
    # BERT's AdamW settings, as configs/bert_base.py (the learning rate does not change the cost).
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.01)
    batch = make_batch(args, torch.Generator().manual_seed(args.seed))

    def step():
        loss = loss_fn(model, batch, args.gather_masked)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    result = {
        "impl": "transformers" + ("_gather_masked" if args.gather_masked else ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "cores": cores,
        "num_params": sum(p.numel() for p in model.parameters()),
        "batch_size": args.batch,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "loss": loss,
        "step_ms": 1000 * step_s,
        "tokens_per_sec": args.batch * args.seq_len / step_s,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
