"""BERT pretraining objectives, then SST-2: a RoBERTa-style ablation (Liu et al. 2019, table 2)
on a CPU budget. Not part of CI: about an hour on 2 free CPU cores.

  python experiments/sweep.py --config=configs/bert_tiny_wikitext.py \
      --sweep=configs/sweeps/bert_objectives.py --workdir=/tmp/lmjax/bert_objectives

Pretraining arms (the tiny BERT of configs/bert_tiny_wikitext.py, 2000 of its 6000 steps):
  (a) MLM + NSP, static masking: the original BERT recipe (each of the 5 copies masked once);
  (b) MLM only, static masking: the NSP loss dropped, the same [CLS] A [SEP] B [SEP] inputs;
  (c) MLM only, dynamic masking: (b) with a fresh mask for every batch (RoBERTa).
Each over seeds 0, 1, 2, then fine-tuned on SST-2 (1000 steps of configs/sst2_finetune.py, same
seed), plus the same fine-tuning from scratch as the no-pretraining reference.
"""

from lmjax.sweep import product, zip_axes

CONFIG = "configs/bert_tiny_wikitext.py"
SEEDS = [0, 1, 2]
OBJECTIVES = zip_axes(
    ("use_nsp", [True, False, False]),
    ("data.dynamic_masking", [False, False, True]),
)
# A third of the config's pretraining, the same warmup fraction and learning-rate schedule.
BASE = {
    "num_train_steps": 2000,
    "warmup_steps": 100,
    "eval_every_steps": 500,
    "checkpoint_every_steps": 500,
}


def get_sweep():
    # Seed-major order (names keep the arm first): a partial sweep has every arm of seed 0 first.
    return sorted(product(OBJECTIVES, ("seed", SEEDS)), key=lambda p: p["seed"])


FINETUNE_CONFIG = "configs/sst2_finetune.py"
# 1000 steps of batch 32 (half an epoch of SST-2's 67k sentences), 10% warmup, linear decay.
FINETUNE_BASE = {
    "num_train_steps": 1000,
    "warmup_steps": 100,
    "log_every_steps": 100,
    "eval_every_steps": 250,
    "checkpoint_every_steps": 500,
}


def get_finetune_sweep(points):
    finetuned = [{"init_from": p, "seed": p["seed"]} for p in points]
    scratch = [{"init_from": "", "seed": s} for s in SEEDS]
    return finetuned + scratch
