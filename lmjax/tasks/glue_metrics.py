"""GLUE's metrics (Wang et al. 2018, table 1), over a whole eval set, and the GLUE score.

CoLA: Matthews correlation; SST-2, RTE, WNLI: accuracy; MRPC: F1 of class 1 and accuracy;
STS-B: Pearson and Spearman correlations. A task's score is the mean of its metrics, and the
GLUE score the mean of the task scores (the leaderboard's macro-average). Labels and predictions
are 1-D numpy arrays: class ids, or scores for STS-B. Each task's metric names are in its entry
of `lmjax.data.glue.FORMATS`. numpy and scipy only: the tests compare with scikit-learn, which
lmjax does not need at run time.
"""

from __future__ import annotations

import numpy as np

from lmjax.data import glue

METRICS: dict[str, tuple[str, ...]] = {task: fmt.metrics for task, fmt in glue.FORMATS.items()}


def _pair(labels: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.ndim != 1 or labels.shape != predictions.shape or not labels.size:
        raise ValueError(
            f"labels {labels.shape} and predictions {predictions.shape} must be 1-D arrays of "
            f"the same, non-zero length (class ids or scores, not logits)"
        )
    return labels, predictions


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """The fraction of predictions equal to the label."""
    labels, predictions = _pair(labels, predictions)
    return float(np.mean(labels == predictions))


def f1(labels: np.ndarray, predictions: np.ndarray, positive: int = 1) -> float:
    """F1 of class `positive` (MRPC: 1, "equivalent"); 0 when it is neither predicted nor
    present (as scikit-learn's f1_score)."""
    labels, predictions = _pair(labels, predictions)
    true, predicted = labels == positive, predictions == positive
    tp = np.sum(true & predicted)
    wrong = np.sum(true != predicted)  # false positives + false negatives
    return float(2 * tp / (2 * tp + wrong)) if tp + wrong else 0.0


def matthews_corrcoef(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Matthews correlation (CoLA), multiclass through the confusion matrix (Gorodkin 2004, as
    scikit-learn); 0, not NaN, when labels or predictions hold one class only."""
    labels, predictions = _pair(labels, predictions)
    classes, ids = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    n = len(labels)
    confusion = np.zeros((len(classes), len(classes)), np.float64)
    np.add.at(confusion, (ids[:n], ids[n:]), 1.0)
    true_k, predicted_k = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, total = np.trace(confusion), confusion.sum()
    cov_true_predicted = correct * total - true_k @ predicted_k
    cov_predicted = total**2 - predicted_k @ predicted_k
    cov_true = total**2 - true_k @ true_k
    if cov_predicted * cov_true == 0:
        return 0.0
    return float(cov_true_predicted / np.sqrt(cov_true * cov_predicted))


def _correlation(name, labels, predictions):
    """`scipy.stats.<name>`'s correlation of the two, as float64."""
    import scipy.stats  # 0.6 s to import: only for STS-B, not at every run's start

    labels, predictions = _pair(labels, predictions)
    labels, predictions = labels.astype(np.float64), predictions.astype(np.float64)
    # scipy gives NaN (and a warning) for a constant input: say "no correlation" instead, so that
    # an untrained model's constant predictions score 0 and metric comparisons stay defined.
    if len(labels) < 2 or np.ptp(labels) == 0 or np.ptp(predictions) == 0:
        return 0.0
    return float(getattr(scipy.stats, name)(labels, predictions)[0])


def pearson(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Pearson correlation (STS-B, scipy.stats.pearsonr); 0 when either input is constant."""
    return _correlation("pearsonr", labels, predictions)


def spearman(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Spearman rank correlation (STS-B, scipy.stats.spearmanr); 0 when either input is
    constant."""
    return _correlation("spearmanr", labels, predictions)


_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def _metric_names(task: str) -> tuple[str, ...]:
    if task not in METRICS:
        raise ValueError(f"unknown GLUE task {task!r}: use one of {sorted(METRICS)}")
    return METRICS[task]


def compute(task: str, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """GLUE's metrics of `task` (names in `METRICS[task]`) over a whole eval set.
    predictions: class ids (argmax of the logits), or scores for STS-B."""
    return {name: _FUNCTIONS[name](labels, predictions) for name in _metric_names(task)}


def task_score(task: str, metrics: dict[str, float]) -> float:
    """The task's GLUE score: the mean of its metrics (MRPC: F1 and accuracy; STS-B: Pearson
    and Spearman), as the GLUE leaderboard averages them."""
    names = _metric_names(task)
    missing = [name for name in names if name not in metrics]
    if missing:
        raise KeyError(f"{task} metrics {sorted(metrics)} lack {missing}: give {list(names)}")
    return float(np.mean([metrics[name] for name in names]))


def glue_score(per_task: dict[str, dict[str, float]]) -> float:
    """The GLUE score (Wang et al. 2018): the unweighted mean of the tasks' scores over the
    tasks given (the leaderboard's averages nine tasks; lmjax has six of them)."""
    if not per_task:
        raise ValueError("no task metrics given: glue_score needs at least one task")
    return float(np.mean([task_score(task, metrics) for task, metrics in per_task.items()]))
