"""Train a model from a config, resuming from WORKDIR's latest checkpoint.

  python experiments/train.py --config=configs/gpt_shakespeare_char.py --workdir=/tmp/run \
      [--config.model.num_layers=8 ...]
"""

from absl import app, flags, logging
from ml_collections import config_flags

from lmjax.train import loop, metrics

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally `path:preset`.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    metrics.quiet_library_logs()
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
