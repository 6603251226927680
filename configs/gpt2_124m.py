"""GPT-2 small (124M parameters, 1024 context) for accelerators: a TFDS text dataset by name.

  # 8 GPUs on one host (data parallel; add mesh.fsdp / mesh.tensor to shard the model):
  python experiments/train.py --config=configs/gpt2_124m.py --workdir=$WORKDIR
  # TPU pod slice: the same command on every host (docs/scaling_out.md).

The data is read from a prepared TFDS dataset (`tfds build lm1b` once, or any TFDS text dataset
via --config.data.tfds_name); nothing is downloaded at run time. The tokenizer is a byte-level
BPE trained on the corpus (`data.tokenizer="bpe"`), or GPT-2's own: pass its tokenizer.json as
--config.data.tokenizer=/path/to/gpt2/tokenizer.json.
Optimizer and schedule follow nanoGPT's GPT-2 recipe (6e-4 peak, 2000 warmup, cosine to 6e-5,
AdamW b2 0.95, weight decay 0.1, clip 1.0), with 0.5M-token batches made of `grad_accum_steps`
micro-batches where memory needs it.
Presets: `:test` (a two-layer model on the embedded Shakespeare text with a small BPE, for CI);
`:benchmark` (the step alone on one accelerator, random batches; benchmarks/accelerator.sh):

  python experiments/benchmark.py --config=configs/gpt2_124m.py:benchmark --steps=20

The attention kernel is the device's own (cuDNN on NVIDIA GPUs, splash on TPUs: `auto`).
"""

import ml_collections

from lmjax import config_defaults


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.task = "clm"
    config.seed = 0
    config.init_from = ""

    config.data = ml_collections.ConfigDict()
    config.data.tfds_name = "lm1b"  # a prepared TFDS text dataset ("" reads data.path)
    config.data.tfds_split = "train"
    config.data.tfds_text_key = "text"
    config.data.tfds_data_dir = ""  # "" = ~/tensorflow_datasets
    config.data.path = ""  # a local text file or embedded corpus, when tfds_name is ""
    config.data.train_fraction = 0.995  # the last 0.5% of the tokens is held out
    config.data.tokenizer = "bpe"  # char, bpe (trained here), WordPiece vocab.txt, tokenizer.json
    config.data.vocab_size = 50257  # GPT-2's, for the trained BPE
    config.data.tokenizer_train_chars = 200_000_000  # BPE trained on the first 200M characters

    config.batch_size = 512  # x 1024 tokens = 0.5M tokens per step (GPT-2 / nanoGPT)
    config.seq_len = 1024
    config.num_train_steps = 600_000
    config.warmup_steps = 2000
    config.learning_rate = 6e-4
    config.min_learning_rate = 6e-5

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.95
    config.optimizer.eps = 1e-8
    config.optimizer.weight_decay = 0.1
    config.optimizer.decay_embeddings = False
    config.optimizer.grad_clip_norm = 1.0

    config.model = ml_collections.ConfigDict()
    config.model.num_layers = 12
    config.model.num_heads = 12
    config.model.emb_dim = 768
    config.model.mlp_dim = 3072
    config.model.dropout_rate = 0.0
    config.model.dtype = "bfloat16"  # compute; parameters and optimizer state stay float32
    config.model.activation = "gelu_tanh"
    config.model.use_bias = True  # GPT-2 has biases
    config.model.remat = False
    config.model.remat_policy = "nothing_saveable"

    config.log_every_steps = 50
    config.eval_every_steps = 2000
    config.eval_steps = 50  # a fixed sample of held-out batches
    config.checkpoint_every_steps = 2000
    config.checkpoint_max_to_keep = 3

    config = config_defaults.add_parallelism(config)
    config.model.vocab_multiple = 128  # 50,257 tokens in a table of 50,304 rows (nanoGPT's)
    config.grad_accum_steps = 8  # 512 = 8 micro-batches of 64 (8 per device on 8 GPUs)

    if arg == "test":
        config.data.tfds_name = ""
        config.data.path = "tinyshakespeare"
        config.data.train_fraction = 0.9
        config.data.vocab_size = 512
        config.data.tokenizer_train_chars = 200_000
        config.model.num_layers = 2
        config.model.num_heads = 2
        config.model.emb_dim = 64
        config.model.mlp_dim = 256
        config.model.dtype = "float32"
        config.batch_size = 8
        config.seq_len = 64
        config.grad_accum_steps = 2
        config = config_defaults.shrink_for_test(config)
    elif arg == "benchmark":
        # 32 sequences of 1024 tokens in one step, no accumulation: sized for one 80-141 GB GPU
        # (bfloat16 compute, float32 parameters and Adam state, no remat); scale batch_size with
        # the devices.
        config.batch_size = 32
        config.grad_accum_steps = 1
    elif arg:
        raise ValueError(f"unknown preset {arg!r}; known: test, benchmark")
    return config
