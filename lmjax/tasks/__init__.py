"""Objectives. A task owns what differs between objectives: data, model, loss and metrics."""

from lmjax.tasks import classify, clm, mlm_nsp

TASKS = {"clm": clm, "mlm_nsp": mlm_nsp, "classify": classify}


def get_task(name):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name]
