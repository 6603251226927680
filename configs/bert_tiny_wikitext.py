"""A tiny BERT pretrained with MLM + NSP on the embedded WikiText-2 articles (valid + test).

  python experiments/train.py --config=configs/bert_tiny_wikitext.py --workdir=/tmp/bert_tiny

Result: docs/experiments/bert_wikitext_sst2.md; presets: `:test` (a few steps, for CI).
The instances follow google-research/bert's create_pretraining_data.py; the last
`data.num_eval_documents` articles are held out and masked once from `data.eval_seed`.
"""

import ml_collections

from lmjax import config_defaults


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.task = "mlm_nsp"  # objective, a key of lmjax.tasks.TASKS
    config.seed = 0  # one seed for init, dropout, instances, masks and data order
    config.use_nsp = True  # add the next-sentence-prediction loss (False: MLM only)

    config.init_from = ""  # a workdir whose weights start this run (shared names and shapes)

    config.data = ml_collections.ConfigDict()
    config.data.paths = ("wikitext2_valid", "wikitext2_test")  # embedded names or local files
    config.data.format = "auto"  # wikitext (` = Title = ` articles), blank_lines, or auto
    # A TFDS text dataset instead of `paths` (one document per example, never downloaded here):
    # "" reads `paths`; "local_text_corpus/wikitext2" gives the same documents through TFDS (built
    # offline on first use); public ones ("wikipedia/20230601.en", "lm1b") need `tfds build` first.
    config.data.tfds_name = ""
    config.data.tfds_split = "train"  # split of tfds_name to read
    config.data.tfds_text_key = "text"  # feature holding each example's text
    config.data.tfds_data_dir = ""  # where TFDS datasets are prepared; "" = ~/tensorflow_datasets
    config.data.num_eval_documents = 12  # the last articles, held out for eval
    config.data.eval_seed = 12345  # fixes the eval instances and their masks
    # A BERT vocab.txt (embedded name or path): the shipped 8k WordPiece vocabulary was trained on
    # these training articles. Empty: train one of `vocab_size` at start-up.
    config.data.vocab_path = "wikitext2_vocab_8k"
    config.data.vocab_size = 8000
    config.data.lowercase = True
    config.data.dupe_factor = 5  # passes over the corpus, each with other pairs (and masks)
    config.data.short_seq_prob = 0.1
    config.data.masked_lm_prob = 0.15
    config.data.max_predictions_per_seq = 20
    config.data.whole_word_masking = False
    config.data.dynamic_masking = True  # a fresh mask for every batch (RoBERTa)

    config.batch_size = 32  # global batch, split over the data-parallel devices
    config.seq_len = 128  # max_seq_length: [CLS] A [SEP] B [SEP] and padding
    config.num_train_steps = 6000
    config.warmup_steps = 300
    config.learning_rate = 1e-3  # peak, after linear warmup from 0
    config.min_learning_rate = 1e-5  # cosine decays to this at the last step

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.98
    config.optimizer.eps = 1e-6  # BERT's AdamW epsilon
    config.optimizer.weight_decay = 0.01  # BERT's, on matmul kernels only
    config.optimizer.decay_embeddings = False
    config.optimizer.grad_clip_norm = 1.0

    # BERT architecture (post-LN, exact GELU, token types, pooler) from lmjax.models.bert;
    # these keys set its sizes.
    config.model = ml_collections.ConfigDict()
    config.model.num_layers = 2
    config.model.num_heads = 2
    config.model.emb_dim = 128
    config.model.mlp_dim = 512
    config.model.dropout_rate = 0.1  # hidden dropout
    config.model.attention_dropout_rate = 0.1  # on attention probabilities
    config.model.norm_position = "post"  # BERT's post-LN; "pre" (GPT-2's) has no HF export
    config.model.dtype = "float32"  # compute dtype: float32 or bfloat16 (params stay float32)
    config.model.remat = False
    config.model.remat_policy = "nothing_saveable"

    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.eval_steps = -1  # the whole held-out set
    config.checkpoint_every_steps = 1000
    config.checkpoint_max_to_keep = 3
    config = config_defaults.add_parallelism(config)

    if arg == "test":
        config.data.paths = ("wikitext2_valid",)
        config.data.num_eval_documents = 4
        config.data.dupe_factor = 1
        config.seq_len = 64
        config.batch_size = 8
        config = config_defaults.shrink_for_test(config)
    elif arg:
        raise ValueError(f"unknown preset {arg!r}; known: test")
    return config
