"""Joining a multi-process run with `jax.distributed.initialize()` (JAX's public API only)."""

import jax
from absl import logging


def initialize(
    mode: str = "auto",
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Joins the run's other processes; returns whether this is a multi-process run.

    mode "off": never. "on": always (an error if JAX finds no cluster and no coordinator is
    given). "auto": with `coordinator_address` (and the others) as given; else JAX's own cluster
    detection (TPU pod slice, SLURM, Open MPI, Kubernetes) decides, and where it finds nothing
    the run stays one process. A detected cluster of one process (a one-task SLURM job) starts
    a one-process runtime, which changes nothing."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"distributed mode must be auto, on or off, not {mode!r}")
    if mode == "off":
        return False
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    except ValueError as e:  # JAX found no cluster and was given no coordinator
        if mode == "on" or coordinator_address is not None:
            raise
        logging.info("no multi-process environment found (%s): running as one process", e)
        return False
    logging.info(
        "process %d of %d; %d local and %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    if jax.process_index() != 0:  # process 0 logs the run; the others only warnings and errors
        logging.set_verbosity(logging.WARNING)
    return jax.process_count() > 1
