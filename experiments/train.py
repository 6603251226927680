"""Train a model from a config, resuming from WORKDIR's latest checkpoint.

  python experiments/train.py --config=configs/gpt_shakespeare_char.py --workdir=/tmp/run \
      [--config.model.num_layers=8 ...]

Multi-host: on a TPU pod slice, a SLURM cluster, or another set-up JAX detects, every process
runs this same command and `jax.distributed.initialize()` finds the others. Elsewhere pass
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` to each process.
"""

from lmjax import host_malloc

host_malloc.restart_tuned(__name__)  # first: on a CPU host, glibc's malloc for XLA (see there)

from absl import flags, logging
from ml_collections import config_flags

from lmjax import cli
from lmjax.train import distributed, loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally `path:preset`.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for a multi-process run set up by hand."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run (by hand).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (by hand).")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "auto: join a multi-process run when the flags above are given or JAX detects a cluster "
    "(TPU pod, SLURM, ...); on: always call jax.distributed.initialize(); off: never.",
)
flags.mark_flags_as_required(["config", "workdir"])
flags.register_validator("workdir", bool, "--workdir must name a directory, not be empty")


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    distributed.initialize(
        _DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
    )
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
