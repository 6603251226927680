"""The three arms of docs/experiments/blimp_10m.md: 10M words of books, one model size, BLiMP.

  python experiments/train.py --config=configs/blimp_10m.py:gpt --config.seed=0 \
      --workdir=/tmp/lmjax/blimp10m/gpt_0
  python experiments/blimp.py --workdir=/tmp/lmjax/blimp10m/gpt_0

Presets: `gpt` (causal LM, the default), `bert` (MLM + NSP), `bert_mlm` (MLM only), each with
`_test` after it for a few steps on the four-book fixture (CI; `test` is `gpt_test`), and with
`_accelerator` for the same protocol on one GPU or TPU: the same words and tokenizer, a model of
6 layers of width 512 in bfloat16, batch 128, ten passes over the words (8,000 steps for every
arm: not timed on a device yet; time a pass with benchmark.py first and keep equal wall clocks).
Every arm reads the first 10,000,000 words of the `train` books (`data.max_words`), tokenizes
them with the books' 16k WordPiece vocabulary, and trains 2 layers of width 128 at T128, batch
32, in float32; the `valid` books are held out. The step counts spend the same wall-clock budget in
every arm, about 30 minutes on one core of the 2-core CPU (each run pinned with `taskset -c N`,
two at a time), from a timed pass before the runs (docs/experiments/blimp_10m.md): 1,081 ms a
GPT step (its 16k-way softmax at every position is most of it), 423-430 ms a BERT step. A
checkpoint every 10% of the run is kept for the BLiMP curve.
"""

import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))
BOOKS = os.path.join(HERE, "..", "..", "shared", "data", "gutenberg", "books")
FIXTURE = os.path.join(HERE, "..", "tests", "data", "books")
MAX_WORDS = 10_000_000
# Steps for the same wall clock per arm (the timed pass is in the doc).
STEPS = {"gpt": 1700, "bert": 4200, "bert_mlm": 4200}


def _load(name):
    """A sibling config file's get_config (configs are files, loaded by path, not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config


def get_config(arg="gpt"):
    arg = {"": "gpt", None: "gpt", "test": "gpt_test"}.get(arg, arg)  # every config has :test
    arm = arg.removesuffix("_test").removesuffix("_accelerator")
    test, accelerator = arg.endswith("_test"), arg.endswith("_accelerator")
    if arm not in STEPS:
        raise ValueError(
            f"unknown preset {arg!r}; known: gpt, bert, bert_mlm (+ _test or _accelerator)"
        )
    preset = "test" if test else None
    if arm == "gpt":
        config = _load("gpt_shakespeare_char")(preset)  # nanoGPT's recipe: pre-LN, AdamW 0.9/0.99
        config.data.tokenizer = "gutenberg_vocab_16k"
        config.model.num_layers = 2
        config.model.num_heads = 2
        config.model.emb_dim = 128
        config.model.mlp_dim = 512
    else:
        config = _load("bert_books")(preset)  # the books BERT (2 layers of width 128), its recipe
        config.use_nsp = arm == "bert"
    if test:  # the four-book fixture, a few steps (CI)
        config.data.path = FIXTURE
        config.data.max_words = 20_000
        config.checkpoint_max_to_keep = 3
        return config
    config.data.path = BOOKS
    config.data.max_words = MAX_WORDS
    config.batch_size = 32
    config.seq_len = 128
    config.num_train_steps = STEPS[arm]
    config.warmup_steps = STEPS[arm] // 20
    config.log_every_steps = 100
    config.eval_every_steps = STEPS[arm] // 10
    config.eval_steps = 50  # a fixed sample of the held-out books, 1,600 sequences
    config.checkpoint_every_steps = STEPS[arm] // 10
    config.checkpoint_max_to_keep = 11  # every 10% of the run, for the BLiMP curve
    if accelerator:
        sizes = {"num_layers": 6, "num_heads": 8, "emb_dim": 512, "mlp_dim": 2048}
        for key, value in sizes.items():
            config.model[key] = value
        config.model.dtype = "bfloat16"
        config.batch_size = 128
        config.num_train_steps = 8000  # 131M tokens or positions: ten passes over 13.35M
        config.warmup_steps = 400
        config.eval_every_steps = config.checkpoint_every_steps = 800
    return config
