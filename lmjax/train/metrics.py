"""Metric writing: one flat dict per step (`train/loss`, `eval/loss`, ...) goes to
`WORKDIR/metrics.jsonl` and to a TensorBoard event file (`lmjax.workdir`); only process 0 writes."""

from __future__ import annotations

import functools
import logging as std_logging
import math
import os
import socket
import sys
import time
from typing import Any

import jax
from absl import logging

from lmjax import workdir as workdir_lib


class MetricWriter:
    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self.workdir = workdir
        self._tb = None
        if self.enabled:
            try:
                self._tb = EventFile(workdir_lib.tensorboard_dir(workdir))
            except (ImportError, OSError) as e:  # no tensorboard package; a full disk
                logging.warning("no TensorBoard files (%s); metrics.jsonl only", e)

    def truncate_after(self, step: int) -> None:
        """Drops records after `step`: a resumed run rewrites them, so the file has no repeats."""
        if self.enabled:
            workdir_lib.truncate_metrics(self.workdir, step)

    def write(self, step: int, metrics: dict) -> None:
        """Appends to metrics.jsonl (an OSError, e.g. a full disk, is the caller's to report),
        then to the TensorBoard file, flushed: TensorBoard shows a run as it goes."""
        if not self.enabled:
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        workdir_lib.append_metrics(self.workdir, {"step": int(step), **metrics})
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        self._tensorboard("write_scalars", int(step), finite)
        self._tensorboard("flush")

    def flush(self) -> None:
        self._tensorboard("flush")

    def close(self) -> None:
        self._tensorboard("close")

    def _tensorboard(self, method: str, *args: Any) -> None:
        """TensorBoard's copy is for viewing: one that cannot be written (a full disk) stops
        with a warning, and the run goes on with metrics.jsonl."""
        if self._tb is None:
            return
        try:
            getattr(self._tb, method)(*args)
        except OSError as e:
            logging.warning("TensorBoard file: %s; metrics.jsonl only from here on", e)
            self._tb = None


class EventFile:
    """TensorBoard scalars in one event file, written with the `tensorboard` package's protos and
    record framing. Not clu's or tensorboard's writer: both open the file through TensorFlow's
    file system layer, and importing TensorFlow took ~4 s of every run's start."""

    def __init__(self, directory: workdir_lib.PathLike):
        from tensorboard.compat.proto import event_pb2, summary_pb2, types_pb2
        from tensorboard.summary.writer import record_writer

        self._event_pb2, self._float = event_pb2, types_pb2.DT_FLOAT
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DataClass.DATA_CLASS_SCALAR,
        )
        directory = workdir_lib.path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self._records = record_writer.RecordWriter((directory / name).open("wb"))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: Any) -> None:
        self._records.write(event.SerializeToString())

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        event = self._event_pb2.Event(wall_time=time.time(), step=step)
        for tag, value in scalars.items():
            v = event.summary.value.add(tag=tag, metadata=self._metadata)
            v.tensor.dtype = self._float  # a float32 scalar (no shape), as tensorboard writes
            v.tensor.float_val.append(value)
        self._write(event)

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()


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
        if not tracebacks and record.exc_info and not _is_lmjax_file(record.pathname):
            record.exc_info = record.exc_text = None
        return True

    logging.get_absl_handler().addFilter(keep)


def is_lmjax_record(record: std_logging.LogRecord) -> bool:
    """A warning or worse, or a record logged by a module of lmjax or by `__main__`. Told apart
    by the file that logged it (absl names every record "absl"): one inside the lmjax package's
    directory, not any path holding "lmjax" (every library of a venv inside a checkout does)."""
    return record.levelno >= std_logging.WARNING or _is_lmjax_file(record.pathname)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


@functools.cache
def _is_lmjax_file(pathname: str) -> bool:
    """`pathname` is a file of the lmjax package or the `__main__` script. (Comparing it with
    the file of each module in `sys.modules` cost ~1.2 s of realpath calls at a run's start.)"""
    path = os.path.realpath(pathname)
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return path.startswith(_PACKAGE_DIR + os.sep) or (
        main is not None and path == os.path.realpath(main)
    )
