"""GLUE's metrics equal scikit-learn's and scipy's; hand-worked edge cases; the GLUE score."""

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from lmjax.tasks import glue_metrics

SEEDS = range(6)


def _classes(seed, n_classes=2):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.integers(0, n_classes, n)
    # Predictions right ~70% of the time, so that correlations are neither 0 nor 1.
    predictions = np.where(rng.random(n) < 0.7, labels, rng.integers(0, n_classes, n))
    return labels.astype(np.int32), predictions.astype(np.int32)


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_metrics_equal_sklearn(seed):
    labels, predictions = _classes(seed)
    assert glue_metrics.accuracy(labels, predictions) == pytest.approx(
        sklearn.metrics.accuracy_score(labels, predictions), abs=1e-12
    )
    assert glue_metrics.f1(labels, predictions) == pytest.approx(
        sklearn.metrics.f1_score(labels, predictions, pos_label=1), abs=1e-12
    )
    assert glue_metrics.matthews_corrcoef(labels, predictions) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions), abs=1e-12
    )
    # Multiclass MCC (not a GLUE task's, but the formula is general).
    labels3, predictions3 = _classes(seed, n_classes=3)
    assert glue_metrics.matthews_corrcoef(labels3, predictions3) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels3, predictions3), abs=1e-12
    )
    for value in glue_metrics.compute("mrpc", labels, predictions).values():
        assert type(value) is float


@pytest.mark.parametrize("seed", SEEDS)
def test_correlations_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 300))
    labels = np.round(rng.uniform(0, 5, n), 1).astype(np.float32)  # ties, as STS-B's scores
    predictions = (labels + rng.normal(0, 1.5, n)).astype(np.float32)
    metrics = glue_metrics.compute("stsb", labels, predictions)
    assert metrics["pearson"] == pytest.approx(scipy.stats.pearsonr(labels, predictions)[0])
    assert metrics["spearman"] == pytest.approx(scipy.stats.spearmanr(labels, predictions)[0])
    assert 0 < metrics["spearman"] < 1 and type(metrics["pearson"]) is float


def test_edge_cases():
    y = np.array([0, 1, 1, 0, 1])
    # One class only: MCC 0, not NaN (as scikit-learn).
    ones = np.ones(5, np.int32)
    assert glue_metrics.matthews_corrcoef(y, ones) == 0.0
    assert glue_metrics.matthews_corrcoef(ones, y) == 0.0
    assert glue_metrics.matthews_corrcoef(ones, ones) == 0.0
    assert sklearn.metrics.matthews_corrcoef(y, ones) == 0.0
    # Perfect and inverted predictions.
    assert glue_metrics.matthews_corrcoef(y, y) == 1.0
    assert glue_metrics.matthews_corrcoef(y, 1 - y) == -1.0
    assert glue_metrics.accuracy(y, y) == 1.0 and glue_metrics.accuracy(y, 1 - y) == 0.0
    assert glue_metrics.f1(y, y) == 1.0 and glue_metrics.f1(y, 1 - y) == 0.0
    # Hand-worked: tp=2, fp=1, fn=1 → F1 = 4 / 6; MCC = (2*1 - 1*1) / sqrt(3*2*3*2) = 1/6.
    assert glue_metrics.f1(y, np.array([0, 1, 0, 1, 1])) == pytest.approx(2 / 3)
    assert glue_metrics.matthews_corrcoef(y, np.array([0, 1, 0, 1, 1])) == pytest.approx(1 / 6)
    # No positive label and none predicted: F1 0 (scikit-learn's default).
    zeros = np.zeros(4, np.int32)
    assert glue_metrics.f1(zeros, zeros) == 0.0
    # Correlations: perfect, inverted, and a constant input (0 where scipy gives NaN).
    s = np.array([0.0, 1.5, 2.0, 4.8, 5.0])
    assert glue_metrics.pearson(s, 2 * s + 1) == pytest.approx(1.0)
    assert glue_metrics.spearman(s, s**3) == pytest.approx(1.0)
    assert glue_metrics.pearson(s, -s) == pytest.approx(-1.0)
    assert glue_metrics.spearman(s, -s) == pytest.approx(-1.0)
    assert glue_metrics.pearson(s, np.full(5, 2.5)) == 0.0
    assert glue_metrics.spearman(np.full(5, 2.5), s) == 0.0
    # Logits or mismatched lengths are errors, not broadcasts.
    with pytest.raises(ValueError, match="1-D arrays"):
        glue_metrics.accuracy(y, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="same"):
        glue_metrics.compute("cola", y, y[:3])


def test_compute_and_glue_score():
    assert glue_metrics.METRICS == {
        "cola": ("mcc",),
        "sst2": ("accuracy",),
        "mrpc": ("f1", "accuracy"),
        "stsb": ("pearson", "spearman"),
        "rte": ("accuracy",),
        "wnli": ("accuracy",),
    }
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0, 1, 0, 1, 1])
    assert glue_metrics.compute("mrpc", y, p) == {"f1": pytest.approx(2 / 3), "accuracy": 0.6}
    assert glue_metrics.compute("cola", y, p) == {"mcc": pytest.approx(1 / 6)}
    assert glue_metrics.compute("rte", y, p) == {"accuracy": 0.6}
    per_task = {
        "cola": {"mcc": 0.5},
        "sst2": {"accuracy": 0.9},
        "mrpc": {"f1": 0.8, "accuracy": 0.7},  # task score 0.75
        "stsb": {"pearson": 0.6, "spearman": 0.4, "loss": 3.0},  # 0.5; other keys ignored
        "rte": {"accuracy": 0.65},
        "wnli": {"accuracy": 0.2},
    }
    assert glue_metrics.task_score("mrpc", per_task["mrpc"]) == pytest.approx(0.75)
    # (0.5 + 0.9 + 0.75 + 0.5 + 0.65 + 0.2) / 6 = 3.5 / 6
    assert glue_metrics.glue_score(per_task) == pytest.approx(3.5 / 6)
    assert glue_metrics.glue_score({"rte": {"accuracy": 0.65}}) == pytest.approx(0.65)
    with pytest.raises(KeyError, match="lack \\['spearman'\\]"):
        glue_metrics.task_score("stsb", {"pearson": 0.5})
    with pytest.raises(ValueError, match="unknown GLUE task 'mnli'"):
        glue_metrics.glue_score({"mnli": {"accuracy": 0.8}})
