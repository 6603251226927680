"""A tiny BERT pretrained with MLM + NSP on Project Gutenberg books, streamed
(docs/experiments/bert_books.md). The books are not in the repository: `data.path` names a
folder of them with the manifest beside it (lmjax/data/assets/README.md says how to get the 307
books the results used).

  python experiments/train.py --config=configs/bert_books.py --workdir=/tmp/lmjax/bert_books \
      --config.data.path=../shared/data/gutenberg/books

Presets: "" (this 2-core CPU, about 45 minutes), `accelerator` (a BERT-Mini-sized model, 4 layers
of width 256, batch 256, bf16, 40,000 steps: ~1.3B tokens, ~40 epochs of the books; sized for one
GPU, not yet timed on one), `test` (a few steps on the four-book fixture in
tests/data/books, for CI). The training books (the manifest's `train` split) are streamed: a group
of `data.group_size` books is read, tokenized and paired at a time, so the run starts in seconds
and holds a few groups in memory; every epoch makes new pairs and masks. The `valid` books are the
held-out set, made and masked once from `data.eval_seed`.
"""

import importlib.util
import os

from lmjax import config_defaults

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "tests", "data", "books")


def _wikitext_config():
    """configs/bert_tiny_wikitext.py's config (configs are files, loaded by path, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "bert_tiny_wikitext", os.path.join(HERE, "bert_tiny_wikitext.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config(arg=None):
    config = _wikitext_config()  # the same architecture, optimizer and masking
    config.data.paths = ()
    config.data.path = ""  # a folder of books, a glob, or a manifest.tsv (set on the command line)
    config.data.max_words = 0  # only the first N words of the `train` books (0: all of them)
    config.data.num_eval_documents = 6  # held out when the books have no manifest
    config.data.group_size = 16  # books read and paired together (random-next B from the same)
    config.data.shuffle_window = 20_000  # instances shuffled together, ~1.5 groups
    config.data.vocab_path = "gutenberg_vocab_16k"  # trained on the 301 training books
    config.data.vocab_size = 16_000
    config.data.dynamic_masking = True

    config.batch_size = 32
    config.seq_len = 128
    # 15,000 steps x ~165 ms (benchmark.py --real_data: ~160 ms a step, ~4.5 ms a batch of
    # data) is about 45 minutes on this 2-core CPU: ~480k instances, ~1.6 epochs of the books.
    config.num_train_steps = 15_000
    config.warmup_steps = 750
    config.learning_rate = 1e-3
    config.eval_every_steps = 1000
    config.eval_steps = 50  # a fixed sample of 1,600 held-out instances (of about 8,000)
    config.checkpoint_every_steps = 1000

    if arg == "accelerator":
        config.model.num_layers = 4
        config.model.num_heads = 4
        config.model.emb_dim = 256
        config.model.mlp_dim = 1024
        config.batch_size = 256
        config.num_train_steps = 40_000
        config.warmup_steps = 2_000
        config.learning_rate = 5e-4
        config.model.dtype = "bfloat16"
        config.eval_every_steps = 2_000
        config.eval_steps = -1
        config.checkpoint_every_steps = 2_000
    elif arg == "test":
        config.data.path = FIXTURE
        config.data.group_size = 2
        config.data.shuffle_window = 100
        config.seq_len = 64
        config.batch_size = 8
        config.eval_steps = 2
        config = config_defaults.shrink_for_test(config)
    elif arg:
        raise ValueError(f"unknown preset {arg!r}; known: accelerator, test")
    return config
