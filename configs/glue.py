"""A GLUE task (Wang et al. 2018), fine-tuned from a pretraining workdir or trained from scratch.

  python experiments/train.py --config=configs/glue.py:mrpc --workdir=/tmp/glue/mrpc \
      --config.init_from=/tmp/lmjax/bert_tiny --config.learning_rate=3e-4

Presets: `cola`, `sst2` (the default), `mrpc`, `stsb`, `rte`, `wnli`; add `,test` for a few CI
steps (`:rte,test`; `:test` alone is SST-2's). `config.init_from` is a pretraining workdir or an
imported Hugging Face BERT (`experiments/convert.py import`); without it the same-sized BERT
trains from scratch with the pretraining's WordPiece vocabulary (`data.vocab_path`).
`data.eval_path` scores any file in the task's own format (default: its dev set); eval/ has
GLUE's metrics over the whole file (CoLA mcc, MRPC f1 + accuracy, STS-B pearson + spearman,
the others accuracy). All tasks of one checkpoint, with the learning-rate grid and the table:
experiments/glue.py.

Recipe: the BERT paper's fine-tuning (batch 32, 3 epochs, linear warmup over 10%, max sequence
128; Devlin et al. 2018, section 4.1) with the learning rate scaled for small models (BERT-base:
2e-5..5e-5; Turc et al. 2019's small BERTs: up to 3e-4; `LEARNING_RATES`).
"""

import ml_collections

from lmjax import config_defaults
from lmjax.data import glue

# Training examples per task, for the number of steps (lmjax.data.glue.FORMATS).
TRAIN_EXAMPLES = {task: fmt.train_examples for task, fmt in glue.FORMATS.items()}
LEARNING_RATES = (1e-4, 3e-4, 1e-3)  # experiments/glue.py's grid; the default is the middle


def get_config(arg=None):
    parts = (arg or "").split(",") if arg else []
    tasks = [p for p in parts if p in TRAIN_EXAMPLES]
    presets = [p for p in parts if p not in TRAIN_EXAMPLES]
    if len(tasks) > 1 or any(p != "test" for p in presets):
        raise ValueError(
            f"unknown preset {arg!r}; use one GLUE task ({', '.join(TRAIN_EXAMPLES)}), "
            "optionally with ',test'"
        )
    task = tasks[0] if tasks else "sst2"
    config = ml_collections.ConfigDict()
    config.task = "classify"  # objective, a key of lmjax.tasks.TASKS
    config.seed = 0
    config.init_from = ""  # a pretraining workdir or imported BERT; empty: from scratch
    # Parameter-name prefixes initialised afresh instead of loaded, e.g. ("pooler/",).
    config.init_from_skip = ()
    config.num_classes = glue.num_labels(task)  # 1: regression (STS-B)

    config.data = ml_collections.ConfigDict()
    config.data.glue_task = task  # file format, labels and metrics (lmjax.data.glue)
    config.data.train_path = glue.embedded_name(task, "train")  # embedded name or a TSV file
    config.data.eval_path = glue.embedded_name(task, "dev")  # any file in the task's format
    # A prepared TFDS dataset instead of the paths (f"glue/{task}"); never downloaded here.
    config.data.tfds_name = ""
    config.data.tfds_eval_split = "validation"
    config.data.tfds_data_dir = ""  # "" = ~/tensorflow_datasets
    # Training examples held out (drawn with holdout_seed) and scored as eval/holdout_*: choose
    # hyperparameters there instead of on eval_path. 0: train on all.
    config.data.holdout_size = 0
    config.data.holdout_seed = 0
    config.data.train_examples = 0  # >0: a fixed random subset of this many (few labels)
    # From scratch: the pretraining's vocabulary; empty: one of `vocab_size` trained on the task.
    config.data.vocab_path = "wikitext2_vocab_8k"
    config.data.vocab_size = 8000

    config.batch_size = 32
    config.seq_len = 128  # BERT's max_seq_length for GLUE; pairs are trimmed to fit
    config.num_epochs = 3
    config.num_train_steps = max(1, config.num_epochs * TRAIN_EXAMPLES[task] // config.batch_size)
    config.warmup_steps = config.num_train_steps // 10
    config.learning_rate = LEARNING_RATES[1]
    config.min_learning_rate = 0.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-6
    config.optimizer.weight_decay = 0.01
    config.optimizer.decay_embeddings = False
    config.optimizer.grad_clip_norm = 1.0

    # From scratch: these sizes (those of configs/bert_tiny_wikitext.py); with init_from the
    # architecture is the checkpoint's (only dropout_rate and dtype apply).
    config.model = ml_collections.ConfigDict()
    config.model.num_layers = 2
    config.model.num_heads = 2
    config.model.emb_dim = 128
    config.model.mlp_dim = 512
    config.model.dropout_rate = 0.1
    config.model.attention_dropout_rate = 0.1
    config.model.dtype = "float32"

    config.log_every_steps = max(1, min(100, config.num_train_steps // 10))
    config.eval_every_steps = config.num_train_steps  # GLUE reports the final model
    config.eval_steps = -1  # the whole eval file
    config.checkpoint_every_steps = 1000
    config.checkpoint_max_to_keep = 1
    config = config_defaults.add_parallelism(config)

    if "test" in presets:
        config.seq_len = 32
        config.batch_size = 8
        config = config_defaults.shrink_for_test(config)
    return config
