"""Performance metrics from pane summaries (score histograms, error sums).

Everything here works on histograms, vectorized over leading axes (the noise floors call it
on thousands of simulated windows at once):

- the confusion matrix is exact: the decision threshold is a bin edge, so a score's side of
  it is known from its bin (``score >= threshold`` predicts the positive class);
- ROC AUC from the positive and negative score histograms counts pairs in different bins
  exactly and a pair in the same bin as half a pair (a tie). The exact AUC of the scores
  themselves (scikit-learn's ``roc_auc_score``, which also counts ties as half) differs from
  it only in how those same-bin pairs are ordered, so

      |AUC_bins - AUC_exact| <= 0.5 * sum_b pos_b neg_b / (P N)

  which :func:`binned_auc` returns with the value: every window's AUC carries its own bound
  (``roc_auc_bound`` in the evidence), about 3e-3 for the 512 logit-spaced bins of
  :meth:`~streamskew.performance.summary.ScoreLayout.default` on real scores (measured in
  tests/test_performance.py against scikit-learn);
- log loss, MAE, RMSE and bias from exact sums.

>>> pos, neg = np.array([1, 2, 7]), np.array([6, 3, 1])
>>> auc, bound = binned_auc(pos, neg)
>>> round(float(auc), 4), round(float(bound), 4)
(0.845, 0.095)
>>> [int(c) for c in confusion(pos, neg, 2)]  # TP, FP, FN, TN
[7, 1, 3, 9]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .summary import CLASSIFICATION, PerformancePane

__all__ = ["CLASSIFIER_METRICS", "ESTIMATED_METRICS", "REGRESSOR_METRICS", "binned_auc",
           "classifier_metrics", "confusion", "degradation", "rates", "regressor_metrics",
           "window_metrics"]

CLASSIFIER_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
ESTIMATED_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSOR_METRICS = ("mae", "rmse", "bias")
#: Metrics where larger is better; a window is judged by its drop from the reference.
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc"})


def confusion(positives: Any, negatives: Any, threshold_bin: int) -> tuple[Any, Any, Any, Any]:
    """(TP, FP, FN, TN) from score histograms: bins >= ``threshold_bin`` predict positive."""
    tp = positives[..., threshold_bin:].sum(-1)
    fp = negatives[..., threshold_bin:].sum(-1)
    fn = positives[..., :threshold_bin].sum(-1)
    tn = negatives[..., :threshold_bin].sum(-1)
    return tp, fp, fn, tn


def _ratio(top: Any, bottom: Any) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan)


def rates(tp: Any, fp: Any, fn: Any, tn: Any) -> dict[str, Any]:
    """Accuracy, precision, recall and F1 (NaN where a denominator is 0)."""
    return {"accuracy": _ratio(tp + tn, tp + fp + fn + tn), "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def binned_auc(positives: Any, negatives: Any) -> tuple[Any, Any]:
    """ROC AUC from histograms and the bound on its distance to the exact AUC (module docs).

    Histograms may hold expected (fractional) counts, as CBPE's do."""
    positives = np.asarray(positives, dtype=np.float64)
    negatives = np.asarray(negatives, dtype=np.float64)
    p_total = positives.sum(-1)
    n_total = negatives.sum(-1)
    above = p_total[..., None] - np.cumsum(positives, axis=-1)  # positives in higher bins
    pairs = p_total * n_total
    ties = (positives * negatives).sum(-1)
    ordered = (negatives * above).sum(-1)
    return _ratio(ordered + 0.5 * ties, pairs), _ratio(0.5 * ties, pairs)


def classifier_metrics(pane: PerformancePane, threshold_bin: int) -> dict[str, float]:
    """Realized metrics of a classifier window (its labelled requests)."""
    tp, fp, fn, tn = confusion(pane.positives, pane.negatives, threshold_bin)
    values = {k: float(v) for k, v in rates(tp, fp, fn, tn).items()}
    auc, bound = binned_auc(pane.positives, pane.negatives)
    values["roc_auc"], values["roc_auc_bound"] = float(auc), float(bound)
    values["log_loss"] = pane.sums[0].value / pane.labelled if pane.labelled else math.nan
    return values


def regressor_metrics(pane: PerformancePane) -> dict[str, float]:
    """Realized metrics of a regressor window: errors are prediction - label."""
    n = pane.labelled
    if not n:
        return {"mae": math.nan, "rmse": math.nan, "bias": math.nan}
    total, absolute, square = (s.value for s in pane.sums)
    return {"mae": absolute / n, "rmse": math.sqrt(max(square, 0.0) / n), "bias": total / n}


def window_metrics(pane: PerformancePane, threshold_bin: int) -> dict[str, float]:
    if pane.task == CLASSIFICATION:
        return classifier_metrics(pane, threshold_bin)
    return regressor_metrics(pane)


def degradation(metric: str, value: float, reference: float, scale: float) -> float:
    """How much worse a window is than the reference (positive = worse): the drop for
    metrics where higher is better, the relative increase of log loss, MAE and RMSE, and
    the change of the bias relative to the reference RMSE (``scale``)."""
    if math.isnan(value):
        return math.nan
    if metric in HIGHER_IS_BETTER:
        return reference - value
    if metric == "bias":
        return abs(value - reference) / scale if scale > 0 else math.inf
    return (value - reference) / reference if reference > 0 else math.inf
