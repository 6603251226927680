"""configs/sweeps/sst2_few_labels.py with the books pretraining (configs/bert_books.py): does
pretraining on 24.8M words pay on SST-2 when labels are scarce? (README "BERT on books".)

  cp -r /tmp/lmjax/bert_books /tmp/lmjax/sst2_few_books/seed=0   # reuse a finished pretraining
  python experiments/sweep.py --sweep=configs/sweeps/sst2_few_labels_books.py \
      --workdir=/tmp/lmjax/sst2_few_books --parallel=2

The protocol of sst2_few_labels.py unchanged: 2,000 clean held-out training sentences select the
learning rate per arm (best mean holdout accuracy over seeds 0, 1, 2), fine-tuning trains on a
fixed random 2,000 of the rest for 10 epochs, dev is read only at the selected rate. The scratch
arm has the same architecture and the books' 16k vocabulary.
"""

from lmjax.sweep import product

CONFIG = "configs/bert_books.py"
SEEDS = [0, 1, 2]
BASE = {"data.path": "../shared/data/gutenberg/books"}


def get_sweep():
    return [{"seed": 0}]


FINETUNE_CONFIG = "configs/sst2_finetune.py"
STEPS = 10 * 2000 // 32
FINETUNE_BASE = {
    "data.holdout_size": 2000,
    "data.train_examples": 2000,
    "data.vocab_path": "gutenberg_vocab_16k",  # the scratch arm's; init_from brings its own
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
