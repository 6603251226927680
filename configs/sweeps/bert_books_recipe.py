"""The tiny BERT's recipe on the books, one change at a time, at a fixed CPU budget.

  python experiments/sweep.py --config=configs/bert_books.py \
      --sweep=configs/sweeps/bert_books_recipe.py --workdir=/tmp/lmjax/bert_books_recipe \
      --parallel=1

Protocol (docs/experiments/bert_recipe.md, written before the runs): every arm is
configs/bert_books.py (2 layers, width 128, 16k WordPiece, batch 32, T128, streamed books) for
1,500 steps (6.1M token positions, a tenth of the default run), warmup 75, cosine to 1e-5,
seed 0, and changes one thing: dropout, the LayerNorm position or the NSP loss. Selection:
held-out MLM loss on the fixed 1,600-instance sample of the `valid` books at step 1,500. About
20 minutes on 2 free CPU cores.
"""

from lmjax.sweep import product

CONFIG = "configs/bert_books.py"
BASE = {
    "data.path": "../shared/data/gutenberg/books",
    "num_train_steps": 1500,
    "warmup_steps": 75,
    "eval_every_steps": 500,
    "checkpoint_every_steps": 1000,
}
ARMS = [
    {"learning_rate": 1e-3},  # the default recipe
    {"model.dropout_rate": 0.0, "model.attention_dropout_rate": 0.0},
    {"model.norm_position": "pre"},
    {"use_nsp": False},
]


def get_sweep():
    return product(ARMS, ("seed", [0]))
