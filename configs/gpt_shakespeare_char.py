"""Character-level GPT on tiny Shakespeare: nanoGPT's CPU recipe for `shakespeare_char`.

  python experiments/train.py --config=configs/gpt_shakespeare_char.py --workdir=/tmp/shakespeare

Result beside nanoGPT's: docs/experiments/shakespeare_char.md (about 1.5 minutes on 2 CPU cores).
Presets: `:test` (a few steps, for CI).
"""

import ml_collections

from lmjax import config_defaults


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.task = "clm"  # objective, a key of lmjax.tasks.TASKS
    config.seed = 0  # one seed for init, dropout and data order

    config.init_from = ""  # a workdir whose weights start this run (shared names and shapes)

    config.data = ml_collections.ConfigDict()
    config.data.path = "tinyshakespeare"  # embedded corpus name or a local text file
    config.data.train_fraction = 0.9  # first 90% of the text trains, the rest is held out
    # With a books data.path: train on the first N words of the `train` books (0: all, split by
    # train_fraction); the `valid` books are held out.
    config.data.max_words = 0
    # char (one id per character), bpe, a WordPiece vocab.txt (BERT's tokens) or a tokenizer.json
    config.data.tokenizer = "char"

    config.batch_size = 12  # global batch, split over the data-parallel devices
    config.seq_len = 64  # context length (nanoGPT's block_size)
    config.num_train_steps = 2000
    config.warmup_steps = 100
    config.learning_rate = 1e-3  # peak, after linear warmup from 0
    config.min_learning_rate = 1e-4  # cosine decays to this at the last step

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.99
    config.optimizer.eps = 1e-8
    config.optimizer.weight_decay = 0.1  # on matmul kernels, never on biases or LayerNorm
    config.optimizer.decay_embeddings = False  # also decay the embeddings (nanoGPT does)
    config.optimizer.grad_clip_norm = 1.0

    config.model = ml_collections.ConfigDict()
    config.model.num_layers = 4
    config.model.num_heads = 4
    config.model.emb_dim = 128
    config.model.mlp_dim = 512
    config.model.dropout_rate = 0.0
    config.model.dtype = "float32"  # compute dtype: float32 or bfloat16 (params stay float32)
    config.model.activation = "gelu_tanh"  # gelu_tanh (GPT-2) or gelu (exact erf)
    config.model.use_bias = False  # nanoGPT's shakespeare_char run trains without biases
    config.model.remat = False  # recompute block activations in the backward pass
    config.model.remat_policy = "nothing_saveable"  # with remat: a jax.checkpoint_policies name

    config.log_every_steps = 100
    config.eval_every_steps = 250  # nanoGPT's eval_interval
    config.eval_steps = -1  # eval batches per eval (a fixed sample); -1: the whole held-out split
    config.checkpoint_every_steps = 500
    config.checkpoint_max_to_keep = 3

    config = config_defaults.add_parallelism(config)

    if arg == "test":
        config = config_defaults.shrink_for_test(config)
    elif arg:
        raise ValueError(f"unknown preset {arg!r}; known: test")
    return config
