"""configs/sweeps/sst2_selection.py with 2,000 labelled sentences instead of 47,760: does the
default pretraining pay when labels are scarce?

  python experiments/sweep.py --config=configs/bert_tiny_wikitext.py \
      --sweep=configs/sweeps/sst2_few_labels.py --workdir=/tmp/lmjax/sst2_few_labels

The same pretraining stage and clean holdout; fine-tuning trains on a fixed random 2,000 of the
remaining sentences (`data.train_examples`) for 10 epochs (625 steps, 10% warmup). Selection rule,
fixed before the runs: per arm, the learning rate with the best mean holdout accuracy over seeds
0, 1, 2; dev read only there. 18 runs, about a minute each on 2 CPU cores.
"""

from lmjax.sweep import product

CONFIG = "configs/bert_tiny_wikitext.py"
SEEDS = [0, 1, 2]


def get_sweep():
    return [{"seed": 0}]


FINETUNE_CONFIG = "configs/sst2_finetune.py"
STEPS = 10 * 2000 // 32
FINETUNE_BASE = {
    "data.holdout_size": 2000,
    "data.train_examples": 2000,
    "num_train_steps": STEPS,
    "warmup_steps": STEPS // 10,
    "log_every_steps": 125,
    "eval_every_steps": 125,
    "checkpoint_every_steps": 625,
    "checkpoint_max_to_keep": 1,
}


def get_finetune_sweep(points):
    arms = [{"init_from": points[0]}, {"init_from": ""}]
    grid = product(("learning_rate", [1e-4, 3e-4, 1e-3]), ("seed", SEEDS))
    return sorted(({**arm, **g} for arm in arms for g in grid), key=lambda p: p["seed"])
