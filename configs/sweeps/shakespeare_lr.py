"""Learning rate x seed on the character-level GPT: the smallest useful sweep.

  python experiments/sweep.py --config=configs/gpt_shakespeare_char.py \
      --sweep=configs/sweeps/shakespeare_lr.py --workdir=/tmp/lmjax/shakespeare_lr --parallel=1

Six runs of the full 2000-step recipe, about 10 min on 2 CPU cores.
"""

from lmjax.sweep import product

CONFIG = "configs/gpt_shakespeare_char.py"


def get_sweep():
    return product(("learning_rate", [3e-4, 1e-3, 3e-3]), ("seed", [0, 1]))
