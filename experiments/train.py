"""Train a model from a config, resuming from WORKDIR's latest checkpoint.

  python experiments/train.py --config=configs/gpt_shakespeare_char.py --workdir=/tmp/run \
      [--config.model.num_layers=8 ...]

Multi-host: on a TPU pod slice, a SLURM cluster, or another set-up JAX detects, every process
runs this same command and `jax.distributed.initialize()` finds the others. Elsewhere pass
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` to each process.
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lmjax.train import loop, metrics

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
    "auto: join a multi-process run when the flags above are given or a cluster (TPU pod, "
    "SLURM, ...) is detected; on: always call jax.distributed.initialize(); off: never.",
)
flags.mark_flags_as_required(["config", "workdir"])


def _initialize_distributed():
    mode = _DISTRIBUTED.value
    if mode == "off" or (mode == "auto" and _COORDINATOR.value is None and not _on_cluster()):
        return
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
    )
    logging.info(
        "process %d of %d; %d local and %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    if jax.process_index() != 0:  # process 0 logs the run; the others only warnings and errors
        logging.set_verbosity(logging.WARNING)


def _on_cluster():
    """Whether an environment `jax.distributed.initialize()` auto-detects is present and has more
    than one process (a lone process on such a machine, e.g. one GPU box, stays single)."""
    try:
        from jax._src import clusters  # the detectors initialize() itself uses (private API)

        for env in clusters.ClusterEnv._cluster_types:
            if env.is_env_present():
                logging.info("cluster environment detected: %s", env.__name__)
                return env.get_process_count() > 1
    except Exception:  # a JAX without them, or a detector that cannot tell: --distributed=on
        logging.warning("could not read the cluster environment; running as one process")
    return False


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    metrics.quiet_library_logs()
    _initialize_distributed()
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
