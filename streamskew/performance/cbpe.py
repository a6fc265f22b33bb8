"""Performance before labels: confidence-based performance estimation (CBPE).

If the model's scores are calibrated, a request scored ``s`` is a positive with probability
``c(s)``, so a window's *expected* confusion matrix follows from its score histogram alone:
``E[TP] = sum over bins above the threshold of n_b c_b``, ``E[FP] = sum n_b (1 - c_b)`` and
so on, and the expected accuracy, precision, recall and F1 are those of the expected matrix
(as NannyML's CBPE computes them). The expected ROC AUC is the AUC of the histograms of
expected positives ``n_b c_b`` and negatives ``n_b (1 - c_b)``.

The calibration ``c`` is fitted on the validation set when the baseline is built: isotonic
regression (pool adjacent violators) of the label on the score bin, weighted by the bin's
validation count, so ``c`` rises with the score and each pooled block's expected positives
equal its observed ones. Bins no validation record fell in take the value of the nearest
fitted bin below (above, for the lowest). It is stored in the baseline file: one number per
score bin.

CBPE sees a drop when the scores move to where the model is unsure (a feature's information
lost, so scores drift to the middle); it cannot see a change of the relation between
features and label that leaves the scores where they were (concept drift): only labels can.

>>> c = isotonic_calibration(np.array([1, 0, 3, 5]), np.array([4, 2, 1, 0]))
>>> c.round(3).tolist()
[0.143, 0.143, 0.75, 1.0]
>>> est = expected_metrics(np.array([10, 10, 10, 10]), c, threshold_bin=2)
>>> round(float(est["accuracy"]), 4), round(float(est["precision"]), 4)
(0.8661, 0.875)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import binned_auc, confusion, rates

__all__ = ["expected_metrics", "isotonic_calibration"]


def isotonic_calibration(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """P(label = 1 | score bin), non-decreasing in the bin (weighted pool adjacent violators)."""
    weights = (np.asarray(positives) + np.asarray(negatives)).astype(np.float64)
    seen = np.flatnonzero(weights > 0)
    calibration = np.zeros(len(weights))
    if not len(seen):
        return calibration
    values = np.asarray(positives, np.float64)[seen] / weights[seen]
    # Pool adjacent violators: blocks of (mean, weight, length), merged while decreasing.
    means: list[float] = []
    masses: list[float] = []
    lengths: list[int] = []
    for value, weight in zip(values.tolist(), weights[seen].tolist(), strict=True):
        means.append(value)
        masses.append(weight)
        lengths.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            mass = masses[-2] + masses[-1]
            mean = (means[-2] * masses[-2] + means[-1] * masses[-1]) / mass
            length = lengths[-2] + lengths[-1]
            del means[-1], masses[-1], lengths[-1]
            means[-1], masses[-1], lengths[-1] = mean, mass, length
    fitted = np.repeat(means, lengths)
    # Unseen bins: the fitted value of the nearest seen bin below (the lowest seen above).
    position = np.searchsorted(seen, np.arange(len(weights)), side="right") - 1
    calibration = fitted[np.maximum(position, 0)]
    return np.clip(calibration, 0.0, 1.0)


def expected_metrics(scored: Any, calibration: np.ndarray, threshold_bin: int
                     ) -> dict[str, Any]:
    """CBPE's accuracy, precision, recall, F1 and ROC AUC of score histogram(s) ``scored``
    (last axis = bins; leading axes, e.g. simulated windows, are kept)."""
    scored = np.asarray(scored, dtype=np.float64)
    expected_positives = scored * calibration
    expected_negatives = scored - expected_positives
    values = rates(*confusion(expected_positives, expected_negatives, threshold_bin))
    values["roc_auc"], _ = binned_auc(expected_positives, expected_negatives)
    return values
