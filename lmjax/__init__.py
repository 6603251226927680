"""lmjax: Transformer language models in JAX/Flax."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow is only used to write metrics
