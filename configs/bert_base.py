"""BERT-base (110M parameters) pretraining with MLM + NSP, in the paper's two phases.

  # Phase 1: sequence 128, 90% of the steps.
  python experiments/train.py --config=configs/bert_base.py:phase1 --workdir=$BASE/phase1 \
      --config.data.vocab_path=/path/to/uncased_L-12_H-768_A-12/vocab.txt
  # Phase 2: sequence 512, the last 10%, starting from phase 1's weights.
  python experiments/train.py --config=configs/bert_base.py:phase2 --workdir=$BASE/phase2 \
      --config.init_from=$BASE/phase1 --config.data.vocab_path=...

Devlin et al. 2018: L=12, H=768, A=12, 256 sequences per batch, 1M steps, Adam (lr 1e-4, b2
0.999, eps 1e-6, weight decay 0.01, 10k warmup), dropout 0.1, 512 position embeddings in both
phases, max_predictions_per_seq 20 at 128 and 80 at 512. Differences: the decay after warmup is
cosine to 0 (the paper decays linearly), and the corpus is a prepared TFDS dataset (English
Wikipedia by default; BooksCorpus is not in TFDS). Phase 2 starts from phase 1's weights with a
fresh optimizer, as google-research/bert's `init_checkpoint` does.
Presets: `phase1` (default), `phase2`, `test` (a tiny model on the embedded WikiText-2, for CI),
`benchmark` (phase 1's step for experiments/benchmark.py on an accelerator, random batches:
T128, batch 256, bfloat16, dropout 0.1; benchmarks/accelerator.sh):

  python experiments/benchmark.py --config=configs/bert_base.py:benchmark --steps=20
"""

import ml_collections

from lmjax import config_defaults


def get_config(arg=None):
    arg = arg or "phase1"
    config = ml_collections.ConfigDict()
    config.task = "mlm_nsp"
    config.seed = 0
    config.use_nsp = True
    config.init_from = ""  # phase 2: the phase 1 workdir

    config.data = ml_collections.ConfigDict()
    config.data.paths = ()  # local files / embedded names, used when tfds_name is ""
    config.data.format = "auto"
    config.data.tfds_name = "wikipedia/20230601.en"  # prepare once with `tfds build`
    config.data.tfds_split = "train"
    config.data.tfds_text_key = "text"
    config.data.tfds_data_dir = ""
    config.data.num_eval_documents = 1000
    config.data.eval_seed = 12345
    config.data.vocab_path = ""  # Google's uncased vocab.txt; "" trains a WordPiece of vocab_size
    config.data.vocab_size = 30522
    config.data.lowercase = True
    config.data.dupe_factor = 10  # google-research/bert's default
    config.data.short_seq_prob = 0.1
    config.data.masked_lm_prob = 0.15
    config.data.max_predictions_per_seq = 20
    config.data.whole_word_masking = False
    config.data.dynamic_masking = False  # static masks, as the original BERT

    config.batch_size = 256
    config.seq_len = 128
    config.num_train_steps = 900_000
    config.warmup_steps = 10_000
    config.learning_rate = 1e-4
    config.min_learning_rate = 0.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-6
    config.optimizer.weight_decay = 0.01
    config.optimizer.decay_embeddings = False
    config.optimizer.grad_clip_norm = 1.0

    config.model = ml_collections.ConfigDict()
    config.model.num_layers = 12
    config.model.num_heads = 12
    config.model.emb_dim = 768
    config.model.mlp_dim = 3072
    config.model.max_len = 512  # position embeddings: 512 in both phases, as BERT
    config.model.dropout_rate = 0.1
    config.model.attention_dropout_rate = 0.1
    config.model.dtype = "bfloat16"  # compute; parameters and optimizer state stay float32
    config.model.remat = False
    config.model.remat_policy = "nothing_saveable"

    config.log_every_steps = 100
    config.eval_every_steps = 10_000
    config.eval_steps = 100
    config.checkpoint_every_steps = 5000
    config.checkpoint_max_to_keep = 3
    config = config_defaults.add_parallelism(config)

    if arg == "phase1":
        pass
    elif arg == "benchmark":
        # Phase 1's step as it trains (BERT's attention dropout rules out the cuDNN kernel);
        # the benchmark times random batches, so no data is read.
        pass
    elif arg == "phase2":
        config.seq_len = 512
        config.data.max_predictions_per_seq = 80
        config.num_train_steps = 100_000
    elif arg == "test":
        config.data.tfds_name = ""
        config.data.paths = ("wikitext2_valid",)
        config.data.num_eval_documents = 4
        config.data.vocab_path = "wikitext2_vocab_8k"
        config.data.dupe_factor = 1
        config.model.num_layers = 2
        config.model.num_heads = 2
        config.model.emb_dim = 64
        config.model.mlp_dim = 128
        config.model.max_len = 128
        config.model.dtype = "float32"
        config.seq_len = 64
        config.batch_size = 8
        config = config_defaults.shrink_for_test(config)
    else:
        raise ValueError(f"unknown preset {arg!r}; known: phase1, phase2, test, benchmark")
    return config
