"""configs/sweeps/sst2_selection.py with the books pretraining (configs/bert_books.py): does
pretraining on 24.8M words pay on SST-2 with all its labels? (docs/experiments/bert_books.md)

  mkdir -p /tmp/lmjax/sst2_books && cp -r /tmp/lmjax/bert_books /tmp/lmjax/sst2_books/seed=0
  python experiments/sweep.py --sweep=configs/sweeps/sst2_selection_books.py \
      --workdir=/tmp/lmjax/sst2_books --parallel=2

The protocol of sst2_selection.py unchanged: one epoch over the 47,760 training sentences left
after the 2,000 clean held-out ones, lr {1e-4, 3e-4, 1e-3, 3e-3} x seeds {0, 1, 2} per arm,
the rate selected on the holdout, dev read only there. The scratch arm has the same architecture
and the books' 16k vocabulary. 24 runs, ~95 s each on 2 free CPU cores.
"""

import os

from lmjax.sweep.spec import load_sweep_file

# Everything but the pretraining and the scratch arm's vocabulary comes from the original file.
_ORIGINAL = load_sweep_file(os.path.join(os.path.dirname(__file__), "sst2_selection.py"))
SEEDS = _ORIGINAL.SEEDS
get_sweep = _ORIGINAL.get_sweep
get_finetune_sweep = _ORIGINAL.get_finetune_sweep
FINETUNE_CONFIG = _ORIGINAL.FINETUNE_CONFIG

CONFIG = "configs/bert_books.py"
BASE = {"data.path": "../shared/data/gutenberg/books"}
# The scratch arm's vocabulary (init_from brings its own).
FINETUNE_BASE = {**_ORIGINAL.FINETUNE_BASE, "data.vocab_path": "gutenberg_vocab_16k"}
