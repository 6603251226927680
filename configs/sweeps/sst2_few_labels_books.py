"""configs/sweeps/sst2_few_labels.py with the books pretraining (configs/bert_books.py): does
pretraining on 24.8M words pay on SST-2 when labels are scarce? (docs/experiments/bert_books.md)

  cp -r /tmp/lmjax/bert_books /tmp/lmjax/sst2_few_books/seed=0   # reuse a finished pretraining
  python experiments/sweep.py --sweep=configs/sweeps/sst2_few_labels_books.py \
      --workdir=/tmp/lmjax/sst2_few_books --parallel=2

The protocol of sst2_few_labels.py unchanged: 2,000 clean held-out training sentences select the
learning rate per arm (best mean holdout accuracy over seeds 0, 1, 2), fine-tuning trains on a
fixed random 2,000 of the rest for 10 epochs, dev is read only at the selected rate. The scratch
arm has the same architecture and the books' 16k vocabulary.
"""

import os

from lmjax.sweep.spec import load_sweep_file

# Everything but the pretraining and the scratch arm's vocabulary comes from the original file.
_ORIGINAL = load_sweep_file(os.path.join(os.path.dirname(__file__), "sst2_few_labels.py"))
SEEDS = _ORIGINAL.SEEDS
get_sweep = _ORIGINAL.get_sweep
get_finetune_sweep = _ORIGINAL.get_finetune_sweep
FINETUNE_CONFIG = _ORIGINAL.FINETUNE_CONFIG

CONFIG = "configs/bert_books.py"
BASE = {"data.path": "../shared/data/gutenberg/books"}
# The scratch arm's vocabulary (init_from brings its own).
FINETUNE_BASE = {**_ORIGINAL.FINETUNE_BASE, "data.vocab_path": "gutenberg_vocab_16k"}
