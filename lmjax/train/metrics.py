"""Metric writing: one flat dict per step (`train/loss`, `eval/loss`, ...) goes to
`WORKDIR/metrics.jsonl` and to TensorBoard event files (`lmjax.workdir`); only process 0 writes."""

from __future__ import annotations

import functools
import logging as std_logging
import math
import os
import sys

import jax
from absl import logging

from lmjax import workdir as workdir_lib


class MetricWriter:
    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self.workdir = workdir
        self._tb = None
        if self.enabled:
            try:  # clu's writer imports TensorFlow: only where metrics are written
                from clu import metric_writers
            except ImportError as e:  # e.g. a GPU image without TensorFlow: keep the JSON lines
                logging.warning("no TensorBoard files (%s); metrics.jsonl only", e)
            else:
                tb_dir = workdir_lib.tensorboard_dir(workdir)
                self._tb = metric_writers.SummaryWriter(str(tb_dir))

    def truncate_after(self, step: int) -> None:
        """Drops records after `step`: a resumed run rewrites them, so the file has no repeats."""
        if self.enabled:
            workdir_lib.truncate_metrics(self.workdir, step)

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        workdir_lib.append_metrics(self.workdir, {"step": int(step), **metrics})
        if self._tb is not None:
            self._tb.write_scalars(
                int(step), {k: v for k, v in metrics.items() if math.isfinite(v)}
            )

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def quiet_library_logs(tracebacks: bool = False) -> None:
    """Keeps absl's INFO lines from lmjax's modules and the entry point only, and warnings from
    everyone: Orbax and friends log every file they write. Another library's warning or error
    loses its traceback unless `tracebacks` (`--verbose`): a failed background save makes Orbax
    log the same 80-line traceback from each of its threads, and lmjax's one-line error that
    follows says what happened."""

    def keep(record: std_logging.LogRecord) -> bool:
        if not is_lmjax_record(record):
            return False
        if not tracebacks and record.exc_info and not _is_lmjax_module(record):
            record.exc_info = record.exc_text = None
        return True

    logging.get_absl_handler().addFilter(keep)


def is_lmjax_record(record: std_logging.LogRecord) -> bool:
    """A warning or worse, or a record logged by a module of lmjax or by `__main__`. Told apart
    by the module that logged it (absl names every record "absl"), found from its source file:
    not by the path, which holds "lmjax" for every library of a venv inside a checkout."""
    return record.levelno >= std_logging.WARNING or _is_lmjax_module(record)


def _is_lmjax_module(record: std_logging.LogRecord) -> bool:
    module = _module_of(record.pathname)
    return module == "__main__" or module.split(".")[0] == "lmjax"


@functools.cache
def _module_of(pathname: str) -> str:
    """The name of the imported module whose file is `pathname` ("" when none is)."""
    target = os.path.realpath(pathname)
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and os.path.realpath(file) == target:
            return name
    return ""
