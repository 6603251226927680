"""lmjax: Transformer language models in JAX/Flax."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow is only used to write metrics
# Tokenizer threads would compete with XLA for the cores, and warn when grain forks.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
