"""Metric writing: one flat dict per step (`train/loss`, `eval/loss`, ...) goes to
`WORKDIR/metrics.jsonl` and to TensorBoard event files; only process 0 writes."""

import json
import math
import os

import jax
from absl import logging


class MetricWriter:
    def __init__(self, workdir):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled:
            try:  # clu's writer imports TensorFlow: only where metrics are written
                from clu import metric_writers
            except ImportError as e:  # e.g. a GPU image without TensorFlow: keep the JSON lines
                logging.warning("no TensorBoard files (%s); metrics.jsonl only", e)
            else:
                self._tb = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step):
        """Drops records after `step`: a resumed run rewrites them, so the file has no repeats."""
        if not (self.enabled and os.path.exists(self.path)):
            return
        with open(self.path) as f:
            records = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self.path, "w") as f:
            f.writelines(records)

    def write(self, step, metrics):
        if not self.enabled:
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **metrics}, allow_nan=True) + "\n")
        if self._tb is not None:
            self._tb.write_scalars(
                int(step), {k: v for k, v in metrics.items() if math.isfinite(v)}
            )

    def flush(self):
        if self._tb is not None:
            self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir):
    """The records of `WORKDIR/metrics.jsonl` as a list of dicts."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def format_duration(seconds):
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def quiet_library_logs():
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
