"""Collation: the runs under a directory as tables, `results.csv` and `results.md`.

One row per run: its overrides, its status, the final and best value of every `eval/*` metric
(`eval/loss`, `eval/loss:best`; best is the lowest for losses, the highest otherwise), its wall
time and median tokens/s. A sweep's runs name their overrides in `point.json`; other runs are
told apart by the config keys whose values differ. A second-stage (fine-tuning) run shares the
row of the point it started from, its columns prefixed `finetune/`. Rows that differ only in
`seed` are then averaged: mean ± std (sample std) over seeds, as a second table.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Callable, Iterable
from typing import Any

from lmjax import workdir as workdir_lib


def better(key: str) -> Callable:
    """`min` for losses (and perplexities, errors), `max` for accuracies and the rest."""
    return min if any(w in key for w in ("loss", "perplexity", "error")) else max


def summarize(run_dir: str) -> dict:
    """Status, last step, final and best eval metrics, wall time and tokens/s of one run."""
    records = workdir_lib.read_metrics(run_dir) if workdir_lib.has_metrics(run_dir) else []
    final, best = {}, {}
    for r in records:
        for key, value in r.items():
            if key.startswith("eval/") and math.isfinite(value):
                final[key] = value
                best[key] = better(key)(best.get(key, value), value)
    point = workdir_lib.read_point(run_dir) or {}
    if workdir_lib.is_finished(run_dir):  # at the saved config's num_train_steps
        status = "done"
    else:
        status = point.get("status", "incomplete") if records else "not started"
        status = "incomplete" if status in ("done", "running") else status
    out = {"status": status, "step": max((r["step"] for r in records), default=0)}
    for key in sorted(final):
        out[key] = final[key]
        out[f"{key}:best"] = best[key]
    out["wall_time_s"] = point.get("wall_time_s")
    speeds = [r["train/tokens_per_sec"] for r in records if "train/tokens_per_sec" in r]
    out["tokens_per_sec"] = round(statistics.median(speeds)) if speeds else None
    return out


class Table:
    """Rows (dicts) plus which columns are overrides, references and metrics."""

    def __init__(self, rows, overrides, references, metrics):
        self.rows, self.overrides, self.references, self.metrics = (
            rows,
            overrides,
            references,
            metrics,
        )

    @property
    def columns(self) -> list[str]:
        cols = []
        for row in self.rows:
            cols += [k for k in row if k not in cols]
        return cols

    @property
    def group_columns(self) -> list[str]:
        """The overrides that define a setting: all but seeds and references to other runs."""
        return [
            c for c in self.overrides
            if c not in self.references and c.rsplit("/", 1)[-1] != "seed"
        ]  # fmt: skip

    def groups(self) -> list[tuple[str, dict[str, str | None], list[dict]]]:
        """[(label, {column: value or None when unset}, rows)], in order of first appearance."""
        groups = {}
        for row in self.rows:
            # Second-stage runs started from no first-stage run (from scratch) never merge with
            # the others: their "run" column (the first stage's) is empty.
            key = ("run" in row, *(_value(row.get(c)) for c in self.group_columns))
            groups.setdefault(key, []).append(row)
        out = []
        for (_, *key), rows in groups.items():
            values = dict(zip(self.group_columns, key, strict=True))
            out.append((setting_label(values, rows[0]), values, rows))
        return out


def setting_label(values: dict[str, Any], row: dict[str, Any]) -> str:
    """`label(values)`, saying so when `row` is a second-stage run started from no first-stage
    run (from scratch), or naming the first-stage run when nothing else tells them apart."""
    unset = all(v is None for v in values.values())
    if "run" not in row:
        return "(no first-stage run)" if unset else f"{label(values)} (no first-stage run)"
    if unset and any(k.endswith("/run") for k in row):
        return f"after {row['run']}"
    return label(values)


def label(values: dict[str, Any]) -> str:
    """`num_layers=2, dropout_rate=0.1` from {column: value}; unset (None) ones left out."""
    parts = [f"{c.rsplit('.', 1)[-1]}={_shown(v)}" for c, v in values.items() if v is not None]
    return ", ".join(parts) or "(defaults)"


def _value(value):
    return None if value is None else str(value)


def _shown(value):
    return '""' if value == "" else _text(value)


def _text(value):
    return "" if value is None else str(value)


def collate(root: str) -> Table:
    """The runs under `root` as a Table."""
    runs = []
    for run_dir in workdir_lib.find_runs(root):
        point = workdir_lib.read_point(run_dir)
        runs.append(
            {
                "dir": run_dir,
                "rel": os.path.relpath(run_dir, root),
                "point": point,
                "stage": (point or {}).get("stage", ""),
                "summary": summarize(run_dir),
            }
        )
    # A sweep's runs in the order of its points, any others after them.
    order = (workdir_lib.read_sweep(root) or {}).get("points", [])
    runs.sort(key=lambda r: order.index(r["rel"]) if r["rel"] in order else len(order))
    _add_config_diffs([r for r in runs if r["point"] is None])
    first = [r for r in runs if not r["stage"]]
    second = [r for r in runs if r["stage"]]
    children = {}
    for r in second:
        children.setdefault((r["point"] or {}).get("parent"), []).append(r)
    rows, overrides, references, metrics = [], [], [], []

    def add(run, prefix, row):
        row[f"{prefix}run"] = run["rel"]
        point_overrides = run["point"]["overrides"] if run["point"] else run["diffs"]
        for key, value in point_overrides.items():
            _append(overrides, prefix + key)
            row[prefix + key] = value
        for key in (run["point"] or {}).get("references", []):
            _append(references, prefix + key)
        for key, value in run["summary"].items():
            if key not in ("status", "step"):
                _append(metrics, prefix + key)
            row[prefix + key] = value

    for run in first:
        # A first-stage run dir copied in by hand has no point record: its directory is its name.
        kids = children.pop(run["point"]["name"] if run["point"] else run["rel"], [])
        for kid in kids or [None]:
            row = {}
            add(run, "", row)
            if kid:
                add(kid, f"{kid['stage']}/", row)
            rows.append(row)
    for kid in (k for kids in children.values() for k in kids):  # no first-stage run (scratch)
        row = {}
        add(kid, f"{kid['stage']}/", row)
        rows.append(row)
    return Table(rows, overrides, references, metrics)


def _append(columns, key):
    if key not in columns:
        columns.append(key)


def _add_config_diffs(runs):
    """Runs without a point record: their overrides are the config keys they all have and whose
    values differ."""
    flat = []
    for r in runs:
        config = workdir_lib.read_config_dict(r["dir"])
        flat.append({k: json.dumps(v) for k, v in workdir_lib.flatten(config).items()})
    shared = [k for k in (flat[0] if flat else {}) if all(k in f for f in flat)]
    keys = [k for k in shared if len({f[k] for f in flat}) > 1]
    for r, f in zip(runs, flat, strict=True):
        r["diffs"] = {k: json.loads(f[k]) for k in keys}


#### Writing


def write_tables(root: str) -> list[str]:
    """Writes ROOT/results.csv and ROOT/results.md; returns their paths."""
    table = collate(root)
    csv_path = os.path.join(root, "results.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=table.columns)
        writer.writeheader()
        for row in table.rows:
            writer.writerow({k: _text(v) for k, v in row.items()})
    md_path = os.path.join(root, "results.md")
    with open(md_path, "w") as f:
        f.write(markdown(table, root))
    return [csv_path, md_path]


def markdown(table: Table, root: str) -> str:
    record = workdir_lib.read_sweep(root)
    lines = [f"# Results: {os.path.basename(os.path.normpath(root))}", ""]
    if record:
        command = f"python experiments/sweep.py --config={record['config']} "
        command += f"--sweep={record['sweep']} --workdir={root}"
        lines += [f"Regenerate (finished points are skipped): `{command}`", ""]
    rows = [
        {k: fmt(v) if k in table.metrics else _text(v) for k, v in r.items()} for r in table.rows
    ]
    lines += ["## Runs", "", *_md_table(table.columns, rows), ""]
    groups = table.groups()
    if any(len(rows) > 1 for _, _, rows in groups):
        numeric = [
            m for m in table.metrics if any(isinstance(r.get(m), int | float) for r in table.rows)
        ]
        cols = ["setting", "seeds", *numeric]
        md_rows = []
        for setting, _, rows in groups:
            seeds = [_text(r.get("seed", r.get("finetune/seed"))) for r in rows]
            md_row = {"setting": setting, "seeds": f"{len(rows)} ({', '.join(seeds)})"}
            for m in numeric:
                md_row[m] = format_mean_std([r.get(m) for r in rows])
            md_rows.append(md_row)
        lines += ["## Mean ± std over seeds", "", *_md_table(cols, md_rows), ""]
    return "\n".join(lines)


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    """(mean, sample std, n) of the numbers among `values` (std 0 for one value)."""
    xs = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not xs:
        return None, None, 0
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs)


def format_mean_std(values: Iterable[Any]) -> str:
    mean, std, n = mean_std(values)
    if n == 0:
        return ""
    if n == 1:
        return fmt(mean)
    decimals = 3 if abs(mean) < 10 else (1 if abs(mean) < 1000 else 0)
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def fmt(value: Any) -> str:
    """Metrics for reading: 4 decimals below 10, one below 1000, thousands separators above."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _text(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def _md_table(columns, rows):
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = [str(row.get(c, "")).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
