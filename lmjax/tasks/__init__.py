"""Objectives. A task owns what differs between them: data, model, loss and metrics (the
interface: `lmjax.tasks.base.Task`)."""

import ml_collections

from lmjax import config_checks, config_defaults, errors
from lmjax import workdir as workdir_lib
from lmjax.tasks.base import Task, check_init_from_task
from lmjax.tasks.classify import Classify
from lmjax.tasks.clm import Clm
from lmjax.tasks.mlm_nsp import MlmNsp

TASKS: dict[str, type[Task]] = {t.name: t for t in (Clm, MlmNsp, Classify)}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise errors.InputError(f"config.task={name!r} is unknown: use one of {sorted(TASKS)}")
    return TASKS[name]


def resolve_config(
    config: ml_collections.ConfigDict, workdir: str | None = None
) -> ml_collections.ConfigDict:
    """The config a run saves and reads: a copy with the defaults of keys it lacks
    (`config_defaults.DEFAULTS`) and what its task derives (`Task.resolve_config`; a run resumed
    in `workdir` keeps what it derived at its start).

    Checks first that its values are in range (`config_checks.check`) and, for a run starting in
    `workdir` (no checkpoint there yet), that `init_from` is a workdir it can start from."""
    config = config_defaults.with_defaults(config)
    config_checks.check(config)
    cls = task_class(config.task)
    if workdir is not None and config.init_from and workdir_lib.latest_step(workdir) is None:
        check_init_from(config)
    return cls.resolve_config(config, workdir)


def check_init_from(config: ml_collections.ConfigDict) -> None:
    """`config.init_from` is a trained workdir (`workdir.check_trained`) of a task this run can
    start from; else `errors.MissingInput` or `errors.InputError` naming it. Read only."""
    workdir_lib.check_trained(config.init_from, "config.init_from")
    check_init_from_task(config, workdir_lib.read_config_dict(config.init_from).get("task"))


def get_task(config: ml_collections.ConfigDict) -> Task:
    """The task of a resolved config (`resolve_config`), bound to it."""
    return task_class(config.task)(config)
