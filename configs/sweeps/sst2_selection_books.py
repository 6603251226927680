"""configs/sweeps/sst2_selection.py with the books pretraining (configs/bert_books.py): does
pretraining on 24.8M words pay on SST-2 with all its labels? (README "BERT on books".)

  mkdir -p /tmp/lmjax/sst2_books && cp -r /tmp/lmjax/bert_books /tmp/lmjax/sst2_books/seed=0
  python experiments/sweep.py --sweep=configs/sweeps/sst2_selection_books.py \
      --workdir=/tmp/lmjax/sst2_books --parallel=2

The protocol of sst2_selection.py unchanged: one epoch over the 47,760 training sentences left
after the 2,000 clean held-out ones, lr {1e-4, 3e-4, 1e-3, 3e-3} x seeds {0, 1, 2} per arm,
the rate selected on the holdout, dev read only there. The scratch arm has the same architecture
and the books' 16k vocabulary. 24 runs, ~95 s each on 2 free CPU cores.
"""

from lmjax.sweep import product

CONFIG = "configs/bert_books.py"
SEEDS = [0, 1, 2]
BASE = {"data.path": "../shared/data/gutenberg/books"}


def get_sweep():
    return [{"seed": 0}]


FINETUNE_CONFIG = "configs/sst2_finetune.py"
STEPS_PER_EPOCH = 47760 // 32
FINETUNE_BASE = {
    "data.holdout_size": 2000,
    "data.vocab_path": "gutenberg_vocab_16k",  # the scratch arm's; init_from brings its own
    "num_train_steps": STEPS_PER_EPOCH,
    "warmup_steps": STEPS_PER_EPOCH // 10,
    "log_every_steps": 500,
    "eval_every_steps": 500,
    "checkpoint_every_steps": 1000,
    "checkpoint_max_to_keep": 1,
}


def get_finetune_sweep(points):
    arms = [{"init_from": points[0]}, {"init_from": ""}]
    grid = product(("learning_rate", [1e-4, 3e-4, 1e-3, 3e-3]), ("seed", SEEDS))
    return sorted(({**arm, **g} for arm in arms for g in grid), key=lambda p: p["seed"])
