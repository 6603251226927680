"""The RoBERTa-style objective ablation (Liu et al. 2019, table 2) on the book corpus: what
pretraining has learned, measured on the small GLUE tasks. Not part of CI: about 15 minutes of
pretraining per arm and seed on 2 CPU cores (a third of configs/bert_books.py's 15,000 steps).

  python experiments/sweep.py --config=configs/bert_books.py \
      --sweep=configs/sweeps/bert_objectives_books.py --workdir=/tmp/lmjax/objectives_books
  # --init_from is a comma-separated list and the run directories have commas: link them
  cd /tmp/lmjax/objectives_books && ln -s use_nsp=True,dynamic_masking=False,seed=0 mlm_nsp \
      && ln -s use_nsp=False,dynamic_masking=False,seed=0 mlm \
      && ln -s use_nsp=False,dynamic_masking=True,seed=0 mlm_dynamic && cd -
  # the GLUE protocol of docs/experiments/bert_books.md, in its workdir: finished runs (the books
  # checkpoint, scratch) are skipped and the table gets a row per arm
  python experiments/glue.py --workdir=/tmp/lmjax/glue_books --init_from=/tmp/lmjax/bert_books,\
/tmp/lmjax/objectives_books/mlm_nsp,/tmp/lmjax/objectives_books/mlm,\
/tmp/lmjax/objectives_books/mlm_dynamic,scratch --tasks=cola,mrpc,stsb,rte \
      --select_on=holdout --holdout_size=0.1 --override=data.vocab_path=gutenberg_vocab_16k \
      --parallel=2

Arms (configs/bert_books.py, 5,000 steps each):
  (a) MLM + NSP, static masking: the original BERT recipe (streamed: each instance is masked
      once when it is made; every epoch makes the instances anew, as dupe_factor's copies);
  (b) MLM only, static masking: the NSP loss dropped, the same [CLS] A [SEP] B [SEP] inputs;
  (c) MLM only, dynamic masking: (b) with a fresh mask for every batch (RoBERTa).
At 5,000 steps of 32 a run sees about half an epoch of the books, so (b) and (c) differ only in
when the masks are drawn; the ablation mainly measures NSP on this corpus.
"""

from lmjax.sweep import product, zip_axes

CONFIG = "configs/bert_books.py"
SEEDS = [0]
OBJECTIVES = zip_axes(
    ("use_nsp", [True, False, False]),
    ("data.dynamic_masking", [False, False, True]),
)
BASE = {
    "data.path": "../shared/data/gutenberg/books",
    "num_train_steps": 5000,
    "warmup_steps": 250,
    "eval_every_steps": 1000,
    "checkpoint_every_steps": 1000,
}


def get_sweep():
    return sorted(product(OBJECTIVES, ("seed", SEEDS)), key=lambda p: p["seed"])
