"""Reference performance: how well the model did on its validation set, stored in the
baseline file (``"performance"`` of ``streamskew.baseline/v1``, absent in older files).

``streamskew baseline build --label COL [--prediction COL]`` reads the label and the
model's prediction from the validation table beside the features, in the same one pass and
bounded memory, and keeps:

- classifiers (binary): the score histograms of the validation positives and negatives over
  fixed score bins (:meth:`ScoreLayout.default`: 512 bins, logit-spaced, the decision
  threshold an edge) and the moments of the per-record log loss. From these follow the
  reference metrics, their sampling spread at any window size (the noise floors,
  :mod:`streamskew.performance.floors`) and CBPE's calibration (:mod:`.cbpe`, one number
  per bin);
- regressors: the moments (count, mean, 2nd and 3rd central moments) of the error
  ``prediction - label``, of ``|error|`` and of ``error^2``.

The task is a classification when the label has two values (``[labels] task`` says so
otherwise). The positive class is ``1``, ``true`` or ``yes`` when the labels are 0/1,
booleans or yes/no, else ``[labels] positive`` names it. Predictions are scores in [0, 1]
(``score >= threshold`` predicts the positive class), or the class itself (hard predictions:
no log loss then). Multiclass labels are refused with a one-line error: judge one class
against the rest with a per-class score (a label column of that class vs. the others).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import StreamskewError
from ..records import category_string
from .cbpe import expected_metrics, isotonic_calibration
from .metrics import binned_auc, confusion, rates
from .summary import CLASSIFICATION, REGRESSION, Moments, ScoreLayout, log_loss_terms

__all__ = ["PERFORMANCE_SCHEMA", "ReferenceBuilder", "ReferenceError", "ReferencePerformance",
           "label_category"]

PERFORMANCE_SCHEMA = "streamskew.performance/v1"
MISSING = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "none"})
#: Two-valued labels whose positive class needs no configuration.
KNOWN_POSITIVES = {frozenset({"0", "1"}): "1", frozenset({"false", "true"}): "true",
                   frozenset({"no", "yes"}): "yes", frozenset({"No", "Yes"}): "Yes",
                   frozenset({"-1", "1"}): "1"}
_BOOL_TEXT = {"True": "true", "False": "false", "TRUE": "true", "FALSE": "false"}


class ReferenceError(StreamskewError, ValueError):
    """The validation labels or predictions cannot give a reference; the message says why."""


def label_category(value: Any) -> str | None:
    """The class a raw label stands for: ``1``, ``1.0`` and ``"1"`` are the same class, as
    are ``True``, ``"True"`` and ``"true"``; None when missing."""
    if isinstance(value, str):
        text = value.strip()
        if text in MISSING:
            return None
        text = _BOOL_TEXT.get(text, text)
        try:
            number = float(text)
        except ValueError:
            return text
        return category_string(number) if math.isfinite(number) else None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    return category_string(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class ReferencePerformance:
    """The validation performance of one model (see the module docs)."""

    task: str
    label: str  # column names at build time (for people)
    prediction: str
    count: int  # validation rows used
    invalid: int  # rows without a usable label or prediction
    metrics: Mapping[str, float]  # the reference value of every metric
    # classifiers
    positive: str = "1"
    negative: str = "0"
    threshold: float = 0.5
    hard: bool = False  # predictions were classes, not scores: no log loss
    edges: np.ndarray = field(default_factory=lambda: np.zeros(0))
    positives: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    negatives: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    calibration: np.ndarray = field(default_factory=lambda: np.zeros(0))
    estimated: Mapping[str, float] = field(default_factory=dict)  # CBPE on validation
    moments: Mapping[str, Moments] = field(default_factory=dict)  # log_loss | e, abs, square

    @property
    def is_classifier(self) -> bool:
        return self.task == CLASSIFICATION

    def layout(self) -> ScoreLayout:
        return ScoreLayout(self.edges, self.threshold)

    @property
    def bins(self) -> int:
        return max(len(self.edges) - 1, 0)

    @property
    def scale(self) -> float:
        """What a regressor's bias is measured against: the reference RMSE."""
        return float(self.metrics.get("rmse", 0.0))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": PERFORMANCE_SCHEMA, "task": self.task, "label": self.label,
            "prediction": self.prediction, "count": self.count, "invalid": self.invalid,
            "metrics": dict(self.metrics),
            "moments": {k: m.to_json() for k, m in self.moments.items()}}
        if self.is_classifier:
            out.update({
                "positive": self.positive, "negative": self.negative,
                "threshold": self.threshold, "hard": self.hard, "edges": self.edges.tolist(),
                "positives": self.positives.tolist(), "negatives": self.negatives.tolist(),
                "calibration": [round(float(c), 10) for c in self.calibration],
                "estimated": dict(self.estimated)})
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ReferencePerformance:
        if raw.get("schema") != PERFORMANCE_SCHEMA:
            raise ValueError(f"performance section is not {PERFORMANCE_SCHEMA}")
        common = {"task": raw["task"], "label": raw["label"], "prediction": raw["prediction"],
                  "count": raw["count"], "invalid": raw["invalid"],
                  "metrics": dict(raw["metrics"]),
                  "moments": {k: Moments.from_json(v) for k, v in raw["moments"].items()}}
        if raw["task"] != CLASSIFICATION:
            return cls(**common)
        return cls(**common, positive=raw["positive"], negative=raw["negative"],
                   threshold=float(raw["threshold"]), hard=bool(raw["hard"]),
                   edges=np.asarray(raw["edges"], np.float64),
                   positives=np.asarray(raw["positives"], np.int64),
                   negatives=np.asarray(raw["negatives"], np.int64),
                   calibration=np.asarray(raw["calibration"], np.float64),
                   estimated=dict(raw["estimated"]))

    def describe(self) -> str:
        """One line for ``baseline show``."""
        shown = ", ".join(f"{k}={v:.4g}" for k, v in self.metrics.items()
                          if k != "roc_auc_bound" and isinstance(v, float) and math.isfinite(v))
        what = (f"binary classifier (positive={self.positive}, threshold={self.threshold:g}"
                f"{', hard predictions' if self.hard else ''})" if self.is_classifier
                else "regressor")
        return (f"performance: {what}, label {self.label!r}, prediction {self.prediction!r}, "
                f"n={self.count:,}: {shown}")


class ReferenceBuilder:
    """Accumulates (label, prediction) pairs chunk by chunk; :meth:`finish` decides the task
    and returns the :class:`ReferencePerformance`. Memory is bounded: histograms per label
    value (while there are at most two) and moments, never the rows."""

    def __init__(self, label: str, prediction: str, task: str | None = None,
                 positive: str | None = None, threshold: float = 0.5) -> None:
        self.label = label
        self.prediction = prediction
        self.task = task
        self.positive = positive
        self.layout = ScoreLayout.default(threshold)
        self.rows = 0
        self.invalid = 0
        self.classes: dict[str, np.ndarray] = {}  # label class -> score histogram
        self.class_loss: dict[str, list[Moments]] = {}  # class -> [-log p, -log(1-p)]
        self.hard: Counter[tuple[str, str]] = Counter()  # (label, predicted class)
        self.too_many_classes = False
        self.soft_scores = 0
        self.non_binary_scores = 0  # scores strictly between 0 and 1
        self.regression_ok = task != CLASSIFICATION
        self.errors = {"error": Moments(), "abs_error": Moments(), "squared_error": Moments()}
        self.label_values: Counter[str] = Counter()

    def add(self, labels: Iterable[Any], predictions: Iterable[Any]) -> None:
        """One chunk of raw labels and predictions (strings from a CSV are fine)."""
        labels, predictions = list(labels), list(predictions)
        self.rows += len(labels)
        classes = [label_category(v) for v in labels]
        scores = [_number(v) for v in predictions]
        usable = [c is not None and (s is not None or label_category(p) is not None)
                  for c, s, p in zip(classes, scores, predictions, strict=True)]
        self.invalid += usable.count(False)
        self._classification(classes, scores, predictions, usable)
        if self.regression_ok:
            self._regression(labels, scores, usable)

    def _classification(self, classes: list[str | None], scores: list[float | None],
                        predictions: list[Any], usable: list[bool]) -> None:
        if self.task == REGRESSION or self.too_many_classes:
            return
        for c in set(classes) - {None}:
            self.label_values[c] += 0
        if len(self.label_values) > 2:
            self.too_many_classes = True
            return
        score_array = np.array([s if s is not None else np.nan for s in scores])
        bins = self.layout.bin_of(score_array)
        class_array = np.empty(len(classes), dtype=object)
        class_array[:] = classes
        usable_array = np.asarray(usable, dtype=bool)
        for cls in sorted({c for c, ok in zip(classes, usable, strict=True) if ok}):
            rows = (class_array == cls) & usable_array
            self.label_values[cls] += int(rows.sum())
            soft = rows & (bins >= 0)
            if soft.any():
                histogram = self.classes.setdefault(cls, np.zeros(self.layout.bins, np.int64))
                histogram += np.bincount(bins[soft], minlength=self.layout.bins)
                values = score_array[soft]
                self.soft_scores += int(soft.sum())
                self.non_binary_scores += int(((values > 0) & (values < 1)).sum())
                loss = self.class_loss.setdefault(cls, [Moments(), Moments()])
                loss[0].merge(Moments.of(log_loss_terms(values, np.ones(len(values)))))
                loss[1].merge(Moments.of(log_loss_terms(values, np.zeros(len(values)))))
            for row in np.flatnonzero(rows & (bins < 0)):
                predicted = label_category(predictions[row])
                if predicted is not None:
                    self.hard[(cls, predicted)] += 1

    def _regression(self, labels: list[Any], scores: list[float | None],
                    usable: list[bool]) -> None:
        values = [_number(v) for v in labels]
        pairs = [(s, v) for s, v, ok in zip(scores, values, usable, strict=True)
                 if ok and s is not None and v is not None]
        if any(ok and (s is None or v is None)
               for s, v, ok in zip(scores, values, usable, strict=True)):
            self.regression_ok = False
            return
        if not pairs:
            return
        errors = np.array([s - v for s, v in pairs])
        for name, terms in (("error", errors), ("abs_error", np.abs(errors)),
                            ("squared_error", errors * errors)):
            self.errors[name].merge(Moments.of(terms))

    # -- deciding ----------------------------------------------------------------------------

    def finish(self) -> ReferencePerformance:
        task = self.task or (CLASSIFICATION if len(self.label_values) <= 2 else REGRESSION)
        if task == REGRESSION:
            return self._finish_regression()
        return self._finish_classification()

    def _finish_regression(self) -> ReferencePerformance:
        if not self.regression_ok:
            raise ReferenceError(f"label {self.label!r} or prediction {self.prediction!r} has "
                                 "values that are not numbers: a regression needs numeric "
                                 "labels and predictions (set [labels] task = "
                                 "\"classification\" for classes)")
        e, a, s = (self.errors[k] for k in ("error", "abs_error", "squared_error"))
        if not e.n:
            raise ReferenceError(f"no row has both a label ({self.label!r}) and a prediction "
                                 f"({self.prediction!r}); check --label and --prediction")
        metrics = {"mae": a.mean, "rmse": math.sqrt(max(s.mean, 0.0)), "bias": e.mean}
        return ReferencePerformance(REGRESSION, self.label, self.prediction, e.n,
                                    self.rows - e.n, metrics, moments=dict(self.errors))

    def _finish_classification(self) -> ReferencePerformance:
        classes = sorted(self.label_values)
        if self.too_many_classes or len(classes) > 2:
            raise ReferenceError(
                f"label {self.label!r} has more than two classes ({', '.join(classes[:5])}, "
                "...): performance skew supports binary classifiers and regressors; for a "
                "multiclass model judge one class against the rest (a 0/1 label column and "
                "that class's score), or set [labels] task = \"regression\" for a numeric label")
        if len(classes) < 2:
            raise ReferenceError(f"label {self.label!r} has a single class "
                                 f"({classes[0] if classes else 'none'}) in the validation "
                                 "data: precision, recall and ROC AUC need both")
        positive = self.positive if self.positive is not None else \
            KNOWN_POSITIVES.get(frozenset(classes))
        if positive is None or positive not in classes:
            raise ReferenceError(f"label {self.label!r} has the classes "
                                 f"{classes[0]!r} and {classes[1]!r}: set [labels] positive "
                                 "to the positive one")
        negative = next(c for c in classes if c != positive)
        width = self.layout.bins
        positives = self.classes.get(positive, np.zeros(width, np.int64)).copy()
        negatives = self.classes.get(negative, np.zeros(width, np.int64)).copy()
        for (truth, predicted), count in self.hard.items():
            if predicted not in (positive, negative):
                raise ReferenceError(f"prediction {self.prediction!r} holds {predicted!r}, "
                                     f"neither a score in [0, 1] nor a class of the label "
                                     f"({positive!r}, {negative!r})")
            target = positives if truth == positive else negatives
            target[width - 1 if predicted == positive else 0] += count
        hard = self.non_binary_scores == 0
        loss = Moments()
        if not hard:
            loss.merge(self.class_loss.get(positive, [Moments(), Moments()])[0])
            loss.merge(self.class_loss.get(negative, [Moments(), Moments()])[1])
        return reference_from_histograms(self.label, self.prediction, positives, negatives,
                                         self.layout, positive, negative, hard, loss,
                                         invalid=self.rows - int(positives.sum()
                                                                 + negatives.sum()))


def reference_from_histograms(label: str, prediction: str, positives: np.ndarray,
                              negatives: np.ndarray, layout: ScoreLayout, positive: str,
                              negative: str, hard: bool, loss: Moments,
                              invalid: int = 0) -> ReferencePerformance:
    """A classifier's reference from its validation score histograms."""
    tp, fp, fn, tn = confusion(positives, negatives, layout.threshold_bin)
    metrics = {k: float(v) for k, v in rates(tp, fp, fn, tn).items()}
    auc, bound = binned_auc(positives, negatives)
    metrics["roc_auc"], metrics["roc_auc_bound"] = float(auc), float(bound)
    moments = {}
    if not hard:
        metrics["log_loss"] = loss.mean
        moments["log_loss"] = loss
    calibration = isotonic_calibration(positives, negatives)
    estimated = {k: float(v) for k, v in
                 expected_metrics(positives + negatives, calibration,
                                  layout.threshold_bin).items()}
    return ReferencePerformance(
        CLASSIFICATION, label, prediction, int(positives.sum() + negatives.sum()), invalid,
        metrics, positive=positive, negative=negative, threshold=layout.threshold, hard=hard,
        edges=layout.edges, positives=positives, negatives=negatives, calibration=calibration,
        estimated=estimated, moments=moments)
