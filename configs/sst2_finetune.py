"""SST-2 sentiment classification, fine-tuned from a pretraining workdir or trained from scratch.

  python experiments/train.py --config=configs/sst2_finetune.py --workdir=/tmp/sst2 \
      --config.init_from=/tmp/bert_tiny

With `init_from` the encoder (architecture, vocabulary, weights, pooler) comes from that workdir
and the classifier head starts afresh; without it the same-sized BERT trains from scratch with a
same WordPiece vocabulary as the pretraining (`data.vocab_path`). `eval/accuracy` is on
`data.eval_path` (GLUE SST-2 dev by default). Presets: `:test`.
"""

import ml_collections

from lmjax import config_defaults


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.task = "classify"  # objective, a key of lmjax.tasks.TASKS
    config.seed = 0
    config.init_from = ""  # a pretraining workdir; empty: from scratch
    # Parameter-name prefixes initialised afresh instead of loaded, e.g. ("pooler/",).
    config.init_from_skip = ()
    config.num_classes = 2

    config.data = ml_collections.ConfigDict()
    config.data.glue_task = "sst2"  # the file format, labels and metrics (lmjax.data.glue)
    config.data.train_path = "sst2_train"  # embedded name or a `sentence<TAB>label` TSV file
    config.data.eval_path = "sst2_dev"  # any `sentence<TAB>label` TSV with a header row
    # A prepared TFDS dataset instead of the paths ("glue/sst2"); never downloaded here.
    config.data.tfds_name = ""
    config.data.tfds_eval_split = "validation"
    config.data.tfds_data_dir = ""  # "" = ~/tensorflow_datasets
    # Training sentences held out (drawn with holdout_seed, the same for every run) and scored as
    # eval/holdout_accuracy: choose hyperparameters there, never on eval_path. 0: train on all.
    config.data.holdout_size = 0
    config.data.holdout_seed = 0
    # >0: train on a fixed random subset of this many sentences (after the holdout): few labels.
    config.data.train_examples = 0
    # From scratch: the pretraining's vocabulary (a like-for-like ablation), or, when empty, one
    # of `vocab_size` trained on the SST-2 training sentences. Ignored with init_from.
    config.data.vocab_path = "wikitext2_vocab_8k"
    config.data.vocab_size = 8000

    # BERT's fine-tuning recipe (a few epochs, warmup, linear-ish decay) scaled to a tiny model:
    # lr 2e-5..5e-5 suits 110M parameters; a 2-layer, 128-wide model wants ~10x more.
    config.batch_size = 32
    config.seq_len = 64  # SST-2 sentences are short; must not exceed the pretrained positions
    config.num_epochs = 3
    config.num_train_steps = 3 * 67349 // 32  # num_epochs over the 67,349 training sentences
    config.warmup_steps = 600  # ~10% of training
    config.learning_rate = 5e-4
    config.min_learning_rate = 0.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-6
    config.optimizer.weight_decay = 0.01
    config.optimizer.decay_embeddings = False
    config.optimizer.grad_clip_norm = 1.0

    # Used when training from scratch; with init_from the architecture is the checkpoint's
    # (only dropout_rate and dtype apply).
    config.model = ml_collections.ConfigDict()
    config.model.num_layers = 2
    config.model.num_heads = 2
    config.model.emb_dim = 128
    config.model.mlp_dim = 512
    config.model.dropout_rate = 0.1
    config.model.attention_dropout_rate = 0.1
    config.model.dtype = "float32"

    config.log_every_steps = 200
    config.eval_every_steps = 1000
    config.eval_steps = -1  # the whole eval file
    config.checkpoint_every_steps = 2000
    config.checkpoint_max_to_keep = 2
    config = config_defaults.add_parallelism(config)

    if arg == "test":
        config.seq_len = 32
        config.batch_size = 8
        config = config_defaults.shrink_for_test(config)
    elif arg:
        raise ValueError(f"unknown preset {arg!r}; known: test")
    return config
