"""Objectives. A task owns what differs between them: data, model, loss and metrics (the
interface: `lmjax.tasks.base.Task`)."""

import ml_collections

from lmjax import config_defaults
from lmjax.tasks.base import Task
from lmjax.tasks.classify import Classify
from lmjax.tasks.clm import Clm
from lmjax.tasks.mlm_nsp import MlmNsp

TASKS: dict[str, type[Task]] = {t.name: t for t in (Clm, MlmNsp, Classify)}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name]


def resolve_config(
    config: ml_collections.ConfigDict, workdir: str | None = None
) -> ml_collections.ConfigDict:
    """The config a run saves and reads: a copy with the defaults of keys it lacks
    (`config_defaults.DEFAULTS`) and what its task derives (`Task.resolve_config`; a run resumed
    in `workdir` keeps what it derived at its start)."""
    config = config_defaults.with_defaults(config)
    return task_class(config.task).resolve_config(config, workdir)


def get_task(config: ml_collections.ConfigDict) -> Task:
    """The task of a resolved config (`resolve_config`), bound to it."""
    return task_class(config.task)(config)
