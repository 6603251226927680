"""Learning-curve plots from a run's `metrics.jsonl` (matplotlib, written as PNG)."""

import os

from lmjax.train.metrics import read_metrics


def plot_run(workdir, path=None, title=None):
    """One panel per metric family: losses (train and eval) and eval accuracies over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
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
