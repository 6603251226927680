"""Learning-curve plots from a run's `metrics.jsonl` (matplotlib, written as PNG)."""

from __future__ import annotations

import os

from lmjax import errors, results
from lmjax import workdir as workdir_lib


def plot_run(workdir: str, path: str | None = None, title: str | None = None) -> str:
    """One panel per metric family: losses (train and eval) and eval accuracies over steps."""
    plt = _pyplot()
    records = workdir_lib.read_metrics(workdir)
    series = {}
    for r in records:
        for k, v in r.items():
            if k != "step" and (k.endswith("loss") or k.endswith("accuracy")):
                series.setdefault(k, ([], []))
                series[k][0].append(r["step"])
                series[k][1].append(v)
    losses = sorted(k for k in series if k.endswith("loss"))
    accuracies = sorted(k for k in series if k.endswith("accuracy"))
    panels = [p for p in (losses, accuracies) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, keys, label in zip(axes[0], panels, ("loss", "accuracy"), strict=False):
        for k in keys:
            steps, values = series[k]
            ax.plot(steps, values, marker="." if k.startswith("eval/") else None, label=k)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or os.path.basename(os.path.normpath(workdir)))
    fig.tight_layout()
    path = path or os.path.join(workdir, "curves.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#### Several runs: a sweep, or any directory of runs


def plot_workdir(root: str, metrics: list[str] | None = None) -> list[str]:
    """The plots of a single run's workdir, or of every run under `root`: learning curves (one
    figure per stage), a metric-vs-parameter figure per swept axis and a per-setting summary,
    of `metrics` (columns of results.csv; default: every final eval metric)."""
    if workdir_lib.has_metrics(root):
        return [plot_run(root)]
    table = results.collate(root)
    if not table.rows:
        raise errors.MissingInput(f"no runs (metrics.jsonl) under {root}")
    paths = []
    for prefix in _stage_prefixes(table):
        name = f"curves_{prefix.rstrip('/')}.png" if prefix else "curves.png"
        paths.append(plot_curves(table, prefix, os.path.join(root, name)))
    metrics = metrics or final_eval_metrics(table)
    unknown = [m for m in metrics if m not in table.metrics]
    if unknown:
        raise errors.InputError(f"no metric {unknown[0]!r} in the runs; they have {table.metrics}")
    if metrics:
        paths += plot_metrics_vs_axes(table, metrics, root)
        paths.append(plot_settings(table, metrics, os.path.join(root, "results.png")))
    return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _stage_prefixes(table):
    return [c[: -len("run")] for c in table.columns if c == "run" or c.endswith("/run")]


def final_eval_metrics(table: results.Table) -> list[str]:
    """The final-value eval columns (`eval/loss`, `finetune/eval/accuracy`), not the bests."""
    return [m for m in table.metrics if "eval/" in m and not m.endswith(":best")]


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_curves(table: results.Table, prefix: str, path: str) -> str:
    """Train and eval loss (and eval accuracies) over steps, one line per run of the stage
    `prefix`; runs of one setting (differing only in seed) share a colour and a label."""
    plt = _pyplot()
    # A first-stage run is labelled by its own overrides, a fine-tune by its row's setting.
    own = [c for c in table.group_columns if "/" not in c]
    settings = {id(row): label for label, _, rows in table.groups() for row in rows}
    runs = {}  # run dir -> setting label
    for row in table.rows:
        if row.get(f"{prefix}run"):
            label = settings[id(row)] if prefix else results.label({c: row.get(c) for c in own})
            runs.setdefault(row[f"{prefix}run"], label)
    root = os.path.dirname(path)
    started = [run for run in runs if workdir_lib.has_metrics(os.path.join(root, run))]
    records = {run: workdir_lib.read_metrics(os.path.join(root, run)) for run in started}
    keys = {k for rs in records.values() for r in rs for k in r}
    panels = [k for k in ("train/loss", "eval/loss") if k in keys]
    panels += sorted(k for k in keys if k.startswith("eval/") and k.endswith("accuracy"))
    cols = min(len(panels), 3) or 1
    rows = -(-len(panels) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    colours = {}
    for ax, key in zip(axes.flat, panels, strict=False):
        labelled = set()
        for run, setting in runs.items():
            points = [(r["step"], r[key]) for r in records.get(run, []) if key in r]
            if not points:
                continue
            colour = colours.setdefault(setting, f"C{len(colours) % 10}")
            steps, values = zip(*points, strict=True)
            ax.plot(
                steps, values, color=colour, alpha=0.8, marker="." if "eval/" in key else None,
                label=None if setting in labelled else setting,
            )  # fmt: skip
            labelled.add(setting)
        ax.set_title(prefix + key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8,
               bbox_to_anchor=(0.5, 0.0))  # fmt: skip
    fig.tight_layout(rect=(0, 0.04 + 0.03 * (-(-len(labels) // 3)), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _axes(table, limit=8):
    """Group columns that take more than one value: the swept axes (at most `limit`)."""
    axes = []
    for c in table.group_columns:
        if len({results._text(r.get(c)) for r in table.rows if r.get(c) is not None}) > 1:
            axes.append(c)
    return axes[:limit]


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def plot_metrics_vs_axes(table: results.Table, metrics: list[str], root: str) -> list[str]:
    """`vs_<axis>.png` for each swept axis: every final eval metric against the axis's values,
    mean ± std over seeds, one line per setting of the other axes."""
    plt = _pyplot()
    paths = []
    for axis in _axes(table):
        others = [c for c in _axes(table) if c != axis]
        values = [r.get(axis) for r in table.rows if r.get(axis) is not None]
        numeric = all(_is_number(v) for v in values)
        categories = list(dict.fromkeys(results._text(v) for v in values))
        series = {}
        for row in table.rows:
            if row.get(axis) is None:
                continue
            setting = results.setting_label({c: row.get(c) for c in others}, row)
            x = row[axis] if numeric else categories.index(results._text(row[axis]))
            series.setdefault(setting, {}).setdefault(x, []).append(row)
        cols = min(len(metrics), 3)
        nrows = -(-len(metrics) // cols)
        fig, axs = plt.subplots(nrows, cols, figsize=(5 * cols, 3.8 * nrows), squeeze=False)
        for ax, metric in zip(axs.flat, metrics, strict=False):
            for i, (setting, by_x) in enumerate(series.items()):
                xs = sorted(by_x)
                stats = [results.mean_std([r.get(metric) for r in by_x[x]]) for x in xs]
                keep = [(x, m, s) for x, (m, s, n) in zip(xs, stats, strict=True) if n]
                if keep:
                    x, m, s = zip(*keep, strict=True)
                    ax.errorbar(x, m, yerr=s, marker="o", capsize=3, color=f"C{i % 10}",
                                label=setting if len(series) > 1 else None)  # fmt: skip
            if numeric and min(values) > 0 and max(values) >= 10 * min(values):
                ax.set_xscale("log")
                ax.minorticks_off()
            if not numeric:
                ax.set_xticks(range(len(categories)), categories)
            elif len(categories) <= 8:  # label the swept values themselves
                ax.set_xticks(sorted(set(values)), [str(v) for v in sorted(set(values))])
            ax.set_xlabel(axis)
            ax.set_title(metric)
            ax.grid(alpha=0.3)
        for ax in list(axs.flat)[len(metrics) :]:
            ax.axis("off")
        if len(series) > 1:  # every series, also those missing from the first panels
            handles = {}
            for ax in axs.flat:
                for h, text in zip(*ax.get_legend_handles_labels(), strict=True):
                    handles.setdefault(text, h)
            axs.flat[0].legend(handles.values(), handles.keys(), fontsize=7)
        name = "vs_" + axis.replace("/", "_") + ".png"
        paths.append(_save(fig, os.path.join(root, name)))
    return paths


def plot_settings(table: results.Table, metrics: list[str], path: str) -> str:
    """One panel per final eval metric: each setting's runs (dots) and mean ± std (bar)."""
    plt = _pyplot()
    groups = table.groups()
    cols = min(len(metrics), 3)
    nrows = -(-len(metrics) // cols)
    width = max(5, 0.9 * len(groups) + 2)
    fig, axs = plt.subplots(nrows, cols, figsize=(width * cols, 4.2 * nrows), squeeze=False)
    for ax, metric in zip(axs.flat, metrics, strict=False):
        for i, (_, _, rows) in enumerate(groups):
            ys = [r.get(metric) for r in rows if _is_number(r.get(metric))]
            mean, std, n = results.mean_std(ys)
            if n:
                ax.plot([i] * n, ys, "o", color=f"C{i % 10}", alpha=0.5)
                ax.errorbar([i + 0.15], [mean], yerr=[std], fmt="s", color=f"C{i % 10}", capsize=4)
        labels = [lbl.replace(", ", "\n") for lbl, _, _ in groups]
        ax.set_xticks(range(len(groups)), labels, fontsize=7)
        ax.set_title(metric)
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axs.flat)[len(metrics) :]:
        ax.axis("off")
    return _save(fig, path)
