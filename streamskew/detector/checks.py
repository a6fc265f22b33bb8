"""Judging one window of one model: every check of every feature against the baseline.

Checks (``check`` / ``metric`` in events):

- ``distribution`` / the feature's metric (``jsd`` numeric, ``linf`` categorical by default);
- ``missing_rate`` / ``missing_rate``: share of records where the value is null or absent;
- ``out_of_range`` / ``out_of_range_rate`` (numeric): share of values outside the training
  [min, max];
- ``unseen_categories`` / ``unseen_rate`` (categorical): share of values never seen in training;
- ``schema`` / ``type_change`` (share of values of the wrong type or non-finite),
  ``feature_absent`` (no record of the window has the feature) and ``new_feature`` (a key that
  the baseline does not know, with the share of records carrying it).

Every threshold is ``max(configured, noise floor)`` (see :mod:`streamskew.stats.noise`); rates
are compared with the baseline's own rate plus the configured allowance. A check whose window
has fewer than ``min_count`` values is not judged.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..baseline import Baseline, CategoricalBaseline, NumericBaseline
from ..config import Config
from ..sketch.categorical import CategoricalSummary
from ..sketch.numeric import NumericSummary
from ..stats.distances import distance
from ..stats.noise import NoiseFloors, rate_floor
from .window import Pane

__all__ = ["CheckResult", "Judge"]

EVIDENCE_QUANTILES = {"p01": 0.01, "p50": 0.5, "p99": 0.99}


# Noise floors depend only on the baseline feature and alpha, and simulating them is the
# costly part of a cold start: models that share a baseline (many models judged against one
# default baseline, or replicas of one model) share its floors. Bounded, least recent out.
_SHARED_FLOORS: OrderedDict[tuple[str, str, float], NoiseFloors] = OrderedDict()
_SHARED_FLOORS_MAX = 4096


def shared_floors(baseline: Baseline, name: str, alpha: float) -> NoiseFloors:
    """The noise floors of one baseline feature, simulated once per process."""
    key = (baseline.id, name, alpha)
    floors = _SHARED_FLOORS.get(key)
    if floors is not None:
        _SHARED_FLOORS.move_to_end(key)
        return floors
    feature = baseline.features[name]
    options: dict[str, Any] = {}
    if isinstance(feature, NumericBaseline):
        options = {"points": feature.points, "scale": feature.std or 1.0}
    floors = NoiseFloors(feature.bin_counts, alpha, f"{baseline.id}|{name}", **options)
    _SHARED_FLOORS[key] = floors
    if len(_SHARED_FLOORS) > _SHARED_FLOORS_MAX:
        _SHARED_FLOORS.popitem(last=False)
    return floors


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one window."""

    feature: str
    kind: str
    check: str
    metric: str
    value: float
    threshold: float
    judged: bool
    count: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.feature, self.check, self.metric)


class Judge:
    """Runs the checks of one baseline; keeps each feature's cached noise floors."""

    def __init__(self, config: Config, baseline: Baseline) -> None:
        self.config = config
        self.detect = config.detect
        self.baseline = baseline
        self._floors: dict[str, NoiseFloors] = {}

    def metric_of(self, name: str) -> tuple[str, float]:
        feature = self.baseline.features[name]
        override = self.config.feature(name)
        if feature.kind == "numeric":
            metric, threshold = self.detect.numeric_metric, self.detect.numeric_threshold
        else:
            metric, threshold = self.detect.categorical_metric, self.detect.categorical_threshold
        if override.metric:
            metric = override.metric
        if override.threshold is not None:
            threshold = override.threshold
        if feature.kind == "categorical" and metric in ("ks", "wasserstein"):
            metric = self.detect.categorical_metric  # order-based metrics need ordered bins
        return metric, threshold

    def floors(self, name: str) -> NoiseFloors:
        floors = self._floors.get(name)
        if floors is None:
            floors = self._floors[name] = shared_floors(self.baseline, name, self.detect.alpha)
        return floors

    def judge(self, window: Pane) -> Iterator[CheckResult]:
        """All checks of the window's aggregate summaries."""
        for name, summary in window.summaries.items():
            if self.config.feature(name).ignore:
                continue
            yield from self._feature_checks(name, summary, window.records)
        yield from self._new_feature_checks(window)

    def _feature_checks(self, name: str, summary: NumericSummary | CategoricalSummary,
                        records: int) -> Iterator[CheckResult]:
        feature = self.baseline.features[name]
        kind = feature.kind
        min_count = self.detect.min_count
        n = summary.count
        metric, threshold = self.metric_of(name)
        value = self.distribution_value(name, summary, metric) if n else math.nan
        floor = self.floors(name).floor(metric, n) if n >= min_count else math.inf
        yield CheckResult(name, kind, "distribution", metric, value, max(threshold, floor),
                          n >= min_count, n)

        absent = records >= min_count and summary.records - _missing(summary) == 0
        yield CheckResult(name, kind, "schema", "feature_absent", 1.0 if absent else 0.0, 0.5,
                          records >= min_count, records)
        seen = summary.records
        missing = _missing(summary)
        yield self._rate(name, kind, "missing_rate", "missing_rate", missing, seen,
                         feature.missing / max(feature.records, 1),
                         self.detect.missing_rate_threshold, judged=not absent)
        invalid = _invalid(summary)
        yield self._rate(name, kind, "schema", "type_change", invalid, seen,
                         feature.invalid / max(feature.records, 1),
                         self.detect.type_change_threshold)
        if isinstance(feature, NumericBaseline):
            assert isinstance(summary, NumericSummary)
            outside = int(summary.bins[0] + summary.bins[-1])
            # Chance that a fresh draw falls outside the range of N training values.
            p0 = 2.0 / (feature.count + 1)
            yield self._rate(name, kind, "out_of_range", "out_of_range_rate", outside, n, p0,
                             self.detect.out_of_range_threshold)
        elif feature.tail_complete:
            assert isinstance(summary, CategoricalSummary)
            unseen = int(summary.counts[-1])
            yield self._rate(name, kind, "unseen_categories", "unseen_rate", unseen, n,
                             feature.unseen_rate, self.detect.unseen_threshold)

    def _rate(self, name: str, kind: str, check: str, metric: str, hits: int, n: int,
              p0: float, allowance: float, judged: bool = True) -> CheckResult:
        """A rate check: threshold = max(p0 + allowance, Chernoff noise floor)."""
        enough = n >= self.detect.min_count and judged
        value = hits / n if n else 0.0
        p0_smoothed = max(p0, 0.5 / (self.baseline.count + 1))
        floor = rate_floor(p0_smoothed, n, self.detect.alpha, self.baseline.count) \
            if enough else math.inf
        return CheckResult(name, kind, check, metric, value, max(p0 + allowance, floor),
                           enough, n)

    def _new_feature_checks(self, window: Pane) -> Iterator[CheckResult]:
        records = window.records
        judged = records >= self.detect.min_count
        for name, count in sorted(window.new_features.items()):
            yield CheckResult(name, "unknown", "schema", "new_feature", count / records,
                              self.detect.new_feature_threshold, judged, records)

    def distribution_value(self, name: str, summary: NumericSummary | CategoricalSummary,
                           metric: str) -> float:
        feature = self.baseline.features[name]
        counts = summary.bins if isinstance(summary, NumericSummary) else summary.counts
        options: dict[str, Any] = {}
        if isinstance(feature, NumericBaseline) and isinstance(summary, NumericSummary):
            options = {"points": _points(feature, summary), "scale": feature.std or 1.0}
        return float(distance(metric, counts, feature.bin_counts, **options))

    def evidence(self, name: str, summary: NumericSummary | CategoricalSummary
                 ) -> dict[str, Any]:
        """What an event carries to explain itself."""
        feature = self.baseline.features[name]
        serving_missing = _missing(summary) / summary.records if summary.records else 0.0
        if isinstance(feature, NumericBaseline) and isinstance(summary, NumericSummary):
            serving_q = summary.quantile(list(EVIDENCE_QUANTILES.values())) if summary.count \
                else [math.nan] * len(EVIDENCE_QUANTILES)
            evidence: dict[str, Any] = {
                "serving": {**{k: _num(v) for k, v in zip(EVIDENCE_QUANTILES, serving_q,
                                                           strict=True)},
                            "mean": _num(summary.mean), "missing_rate": serving_missing},
                "baseline": {**{k: feature.quantiles[k] for k in EVIDENCE_QUANTILES},
                             "mean": feature.mean, "missing_rate": feature.missing_rate},
            }
            for metric in ("jsd", "psi", "ks", "wasserstein"):
                evidence[metric] = _num(self.distribution_value(name, summary, metric)) \
                    if summary.count else None
            evidence["top_unseen"] = []
            return evidence
        assert isinstance(feature, CategoricalBaseline)
        assert isinstance(summary, CategoricalSummary)
        total = max(summary.count, 1)
        top = np.argsort(-summary.counts[:-2], kind="stable")[:3]
        evidence = {
            "serving": {"top": {feature.vocabulary[i]: summary.counts[i] / total for i in top
                                if summary.counts[i]},
                        "missing_rate": serving_missing},
            "baseline": {"top": {feature.vocabulary[i]: feature.vocabulary_counts[i] /
                                 max(feature.count, 1) for i in range(min(3, len(
                                     feature.vocabulary)))},
                         "missing_rate": feature.missing_rate},
        }
        for metric in ("linf", "jsd", "psi"):
            evidence[metric] = _num(self.distribution_value(name, summary, metric)) \
                if summary.count else None
        evidence["top_unseen"] = [{"value": v, "count": c} for v, c in summary.top_unseen()]
        return evidence


def _points(feature: NumericBaseline, summary: NumericSummary) -> np.ndarray:
    """Bin representatives; the under/overflow bins sit at the window's own extremes."""
    points = feature.points.copy()
    if summary.count:
        points[0] = min(points[0], summary.moments[2])
        points[-1] = max(points[-1], summary.moments[3])
    return points


def _missing(summary: NumericSummary | CategoricalSummary) -> int:
    if isinstance(summary, NumericSummary):
        return int(summary.counts[1])
    return summary.missing


def _invalid(summary: NumericSummary | CategoricalSummary) -> int:
    if isinstance(summary, NumericSummary):
        return int(summary.counts[2])
    return summary.invalid


def _num(value: float) -> float | None:
    value = float(value)
    return float(f"{value:.6g}") if math.isfinite(value) else None
