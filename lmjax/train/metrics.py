"""Metric writing: one flat dict per step (`train/loss`, `eval/loss`, ...) goes to
`WORKDIR/metrics.jsonl` and to TensorBoard event files (`lmjax.workdir`); only process 0 writes."""

from __future__ import annotations

import math

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


def quiet_library_logs() -> None:
    """Keeps absl INFO lines from lmjax only: Orbax and friends log every file they write."""
    import logging as std_logging

    from absl import logging

    def keep(record):
        return (
            record.levelno >= std_logging.WARNING
            or "lmjax" in record.pathname
            or "experiments" in record.pathname
        )

    logging.get_absl_handler().addFilter(keep)
