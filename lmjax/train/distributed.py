"""Joining a multi-process run with `jax.distributed.initialize()` (JAX's public API only)."""

import os
import re
from collections.abc import Mapping

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
    a one-process runtime, which changes nothing. Under SLURM with one task per node, the task
    keeps all of the node's GPUs (`slurm_local_device_ids`)."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"distributed mode must be auto, on or off, not {mode!r}")
    if mode == "off":
        return False
    kwargs = {}
    if (local := slurm_local_device_ids()) is not None:
        kwargs["local_device_ids"] = local
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            **kwargs,
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


def slurm_local_device_ids(environ: Mapping[str, str] = os.environ) -> list[int] | None:
    """The GPUs a SLURM task keeps when it is the only task on its node: all of those the job
    step sees (CUDA_VISIBLE_DEVICES, else SLURM_GPUS_ON_NODE). JAX's SLURM detection gives each
    task the one GPU of its SLURM_LOCALID, right for one task per GPU and silently one GPU of
    eight for `srun --ntasks-per-node=1`. None (JAX decides) outside SLURM, with several tasks
    on the node, where the GPU count is unknown, or when JAX_LOCAL_DEVICE_IDS is set."""
    if "SLURM_JOB_ID" not in environ or "JAX_LOCAL_DEVICE_IDS" in environ:
        return None
    if _tasks_on_this_node(environ) != 1:
        return None
    visible = environ.get("CUDA_VISIBLE_DEVICES", "")
    count = len([d for d in visible.split(",") if d.strip()]) if visible else 0
    if not count and environ.get("SLURM_GPUS_ON_NODE", "").isdigit():
        count = int(environ["SLURM_GPUS_ON_NODE"])
    return list(range(count)) if count > 1 else None


def _tasks_on_this_node(environ: Mapping[str, str]) -> int | None:
    """SLURM's task count on this node: SLURM_NTASKS_PER_NODE, else this node's entry of
    SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE ("8(x2),4": 8 tasks on each of two nodes,
    then 4), indexed by SLURM_NODEID."""
    if environ.get("SLURM_NTASKS_PER_NODE", "").isdigit():
        return int(environ["SLURM_NTASKS_PER_NODE"])
    spec = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
    if not spec:
        return None
    counts = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            return None
        counts += [int(match[1])] * int(match[2] or 1)
    node = int(environ.get("SLURM_NODEID", "0"))
    return counts[node] if node < len(counts) else None
