"""Does the default pretraining pay on SST-2? Fine-tuning hyperparameters chosen per arm on
held-out *training* sentences (never on dev), then dev accuracy read at the chosen cell.

  python experiments/sweep.py --config=configs/bert_tiny_wikitext.py \
      --sweep=configs/sweeps/sst2_selection.py --workdir=/tmp/lmjax/sst2_selection

Stage 1: the default bert_tiny_wikitext pretraining (seed 0, its full 6000 steps; a finished run
dir copied to WORKDIR/seed=0 is reused). Stage 2: one epoch of configs/sst2_finetune.py from that
checkpoint and from scratch (same architecture and vocabulary), over learning rate x seed, with
2,000 training sentences held out (`data.holdout_size`, the same ones in every run) and scored as
eval/holdout_accuracy. Selection rule, fixed before the runs: for each arm, the learning rate
with the best holdout accuracy averaged over the seeds; report that cell's dev accuracy (mean ±
std). The grid was 1e-4..1e-3 at first; 3e-3 was added for both arms when the fine-tuned arm's
best was at its edge. 24 fine-tuning runs, ~95 s each on 2 free CPU cores (about 40 min).
"""

from lmjax.sweep import product

CONFIG = "configs/bert_tiny_wikitext.py"
SEEDS = [0, 1, 2]


def get_sweep():
    return [{"seed": 0}]


FINETUNE_CONFIG = "configs/sst2_finetune.py"
# 2,000 held-out sentences of 10+ words; the 17,589 training phrases of their parse trees are
# dropped too (classify.split_holdout), leaving 47,760 to train on: 1,492 steps per epoch.
STEPS_PER_EPOCH = 47760 // 32
FINETUNE_BASE = {
    "data.holdout_size": 2000,
    "num_train_steps": STEPS_PER_EPOCH,  # one epoch, 10% warmup (BERT's recipe)
    "warmup_steps": STEPS_PER_EPOCH // 10,
    "log_every_steps": 500,
    "eval_every_steps": 500,
    "checkpoint_every_steps": 1000,
    "checkpoint_max_to_keep": 1,
}


def get_finetune_sweep(points):
    arms = [{"init_from": points[0]}, {"init_from": ""}]
    grid = product(("learning_rate", [1e-4, 3e-4, 1e-3, 3e-3]), ("seed", SEEDS))
    # Seed-major: a sweep cut short still has every cell of seed 0.
    return sorted(({**arm, **g} for arm in arms for g in grid), key=lambda p: p["seed"])
