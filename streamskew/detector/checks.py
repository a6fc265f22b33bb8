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

- ``surge`` / ``share_ratio`` (categorical): the category whose share rose or fell by the
  largest factor against what it needed (:mod:`streamskew.stats.surge`);
- ``joint`` / the numeric metric, on the pseudo-feature ``(joint)``: the distribution of each
  record's PCA reconstruction error over the numeric features
  (:mod:`streamskew.baseline.joint`);
- ``persistent`` / the feature's metric: the last ``persistent_windows`` windows summed,
  judged once per window's worth of panes (:meth:`Judge.judge_persistent`).

Every threshold is ``max(configured, noise floor)`` (see :mod:`streamskew.stats.noise`); rates
are compared with the baseline's own rate plus the configured allowance. A check whose window
has fewer than ``min_count`` values is not judged.

Scales. Besides the whole window, every check but ``feature_absent`` and ``new_feature`` is
also judged on the newest ``k`` panes alone for each finer scale ``k`` (``[detect] scales``,
by default 1, 2, 4, ... panes up to half the window), each against its own noise floor for its
own count: a strong change shows in the newest pane long before it fills the window. Per
check, the scales give one result: the whole window when it is over its threshold, else the
finer scale furthest over its threshold when one is, else the whole window (so the timeline
shows the whole window but where only a finer scale sees the change); ``CheckResult.scale`` says
which (0: the whole window). So a check raises as soon as any scale crosses its line, and
resolves when no finer scale is over its line and the whole window is back under
``resolve_ratio`` of its threshold. A finer scale's distance threshold is the configured one
raised by the noise its size carries on average (``sqrt(t^2 + E0[d^2])``, or ``t + E0[d]``
for PSI and phi^2): distances of few values are biased upward by noise, and without this a
shift just under the threshold would cross it in a pane now and then and flap.

The false-alarm budget. ``alpha`` is per feature and judged window: a feature whose data
follow the baseline raises nothing in a window with probability at most ``alpha``, whatever
the number of its checks and scales. It is split equally (a union bound) over the feature's
tests: ``checks x scales`` (plus one for ``persistent``), where the checks with sampling noise
are distribution, missing rate, type change and out of range for a numeric feature;
distribution, missing rate, type change, unseen and surge for a categorical one; and the
joint check alone for ``(joint)``. So with the default 3 finer scales a numeric feature's
tests run at ``alpha / 17`` each. ``feature_absent`` and ``new_feature`` have no noise to
budget for.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..baseline import Baseline, CategoricalBaseline, NumericBaseline
from ..config import Config
from ..sketch.categorical import CategoricalSummary
from ..sketch.joint import JointSummary
from ..sketch.numeric import NumericSummary
from ..stats.distances import NOISE_SHAPE, distance
from ..stats.noise import (
    NoiseFloors,
    SharedFloors,
    dkw_floor,
    max_deviation_floor,
    rate_floor,
    two_sample_size,
)
from ..stats.surge import surge
from .window import Pane

__all__ = ["JOINT_CHECK", "PERSISTENT_CHECK", "VERSION_SHIFT_CHECK", "CheckResult", "Judge",
           "version_shift"]

EVIDENCE_QUANTILES = {"p01": 0.01, "p50": 0.5, "p99": 0.99}
JOINT_CHECK = "joint"
PERSISTENT_CHECK = "persistent"
SURGE_CHECK = "surge"
VERSION_SHIFT_CHECK = "version_shift"


# Noise floors depend only on the baseline feature and alpha (SharedFloors says why they
# are shared).
_SHARED_FLOORS: SharedFloors[NoiseFloors] = SharedFloors()


def shared_floors(baseline: Baseline, name: str, alpha: float) -> NoiseFloors:
    """The noise floors of one baseline feature, simulated once per process."""
    def build() -> NoiseFloors:
        feature = baseline.monitored[name]
        options: dict[str, Any] = {}
        if isinstance(feature, NumericBaseline):
            options = {"points": feature.points, "scale": feature.std or 1.0}
        return NoiseFloors(feature.bin_counts, alpha, f"{baseline.id}|{name}", **options)
    return _SHARED_FLOORS.get((baseline.id, name, alpha), build)


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
    scale: int = 0  # newest panes judged (0: the whole window)
    detail: Mapping[str, Any] | None = None  # what the check found (surge: the category)
    window_count: int | None = None  # the whole window's count, when another scale decided

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.feature, self.check, self.metric)

    @property
    def ratio(self) -> float:
        """How far over (> 1) or under its threshold the value is."""
        if self.threshold > 0 and math.isfinite(self.threshold):
            return self.value / self.threshold
        return math.inf if self.value > self.threshold else 0.0


class Judge:
    """Runs the checks of one baseline; keeps each feature's cached noise floors."""

    def __init__(self, config: Config, baseline: Baseline,
                 window_panes: int | None = None) -> None:
        self.config = config
        self.detect = config.detect
        self.baseline = baseline
        panes = config.window.panes if window_panes is None else window_panes
        self.scales = self.detect.scale_panes(panes)
        self._floors: dict[str, NoiseFloors] = {}
        self._alpha: dict[str, float] = {}

    def tests(self, name: str) -> int:
        """How many tests share the feature's ``alpha`` (see the module docs)."""
        feature = self.baseline.monitored[name]
        if self.is_joint(name):
            checks = 1
        elif isinstance(feature, NumericBaseline):
            checks = 4  # distribution, missing rate, type change, out of range
        else:
            assert isinstance(feature, CategoricalBaseline)
            checks = 3 + int(feature.tail_complete) + int(self.detect.surge)
        return checks * (1 + len(self.scales)) + int(self.detect.persistent)

    def alpha_of(self, name: str) -> float:
        """The false-alarm probability each test of the feature is held to."""
        alpha = self._alpha.get(name)
        if alpha is None:
            alpha = self._alpha[name] = self.detect.alpha / self.tests(name)
        return alpha

    def is_joint(self, name: str) -> bool:
        joint = self.baseline.joint
        return joint is not None and name == joint.name

    def metric_of(self, name: str) -> tuple[str, float]:
        feature = self.baseline.monitored[name]
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
            floors = self._floors[name] = shared_floors(self.baseline, name,
                                                        self.alpha_of(name))
        return floors

    def judge(self, window: Pane, finer: Sequence[tuple[int, Pane]] = ()
              ) -> Iterator[CheckResult]:
        """All checks of the window's aggregate summaries, and of each finer scale's
        aggregate in ``finer`` (``(k, pane)``: the newest ``k`` panes); one result per check
        (see the module docs for how the scales combine)."""
        for name, summary in window.summaries.items():
            if self.config.feature(name).ignore:
                continue
            results = list(self._feature_checks(name, summary, window.records, 0))
            if finer:
                by_key: dict[tuple[str, str, str], list[CheckResult]] = {
                    r.key: [r] for r in results}
                for k, pane in finer:
                    part = pane.summaries.get(name)
                    if part is None or pane.records < self.detect.min_count:
                        continue  # (under min_count no check of that scale is judged)
                    for r in self._feature_checks(name, part, pane.records, k):
                        by_key[r.key].append(r)
                results = [_decisive(scales) for scales in by_key.values()]
            yield from results
        yield from self._new_feature_checks(window)

    def judge_persistent(self, counts: Mapping[str, np.ndarray], panes: int
                         ) -> Iterator[CheckResult]:
        """The ``persistent`` check of each feature in ``counts``: its bin (numeric) or
        category (categorical) counts summed over the last windows (``panes`` panes). The
        threshold is ``persistent_ratio`` times the feature's own, never below the noise
        floor of that many values: a shift too small for one window, or under the threshold
        where the window's floor is low, sustained over all of them."""
        d = self.detect
        for name, summed in counts.items():
            if self.config.feature(name).ignore:
                continue
            feature = self.baseline.monitored[name]
            metric, threshold = self.metric_of(name)
            n = int(summed.sum())
            options: dict[str, Any] = {}
            if isinstance(feature, NumericBaseline):
                options = {"points": feature.points, "scale": feature.std or 1.0}
            value = float(distance(metric, summed, feature.bin_counts, **options)) if n \
                else math.nan
            enough = n >= d.min_count
            floors = self.floors(name)
            floor = floors.floor(metric, n) if enough else math.inf
            wanted = _with_noise(d.persistent_ratio * threshold, metric,
                                 floors.null_mean(metric, n) if enough else 0.0)
            yield CheckResult(name, feature.kind, PERSISTENT_CHECK, metric, value,
                              max(floor, wanted), enough, n, panes,
                              {"noise_floor": _num(floor)})

    def _feature_checks(self, name: str, summary: NumericSummary | CategoricalSummary,
                        records: int, scale: int) -> Iterator[CheckResult]:
        feature = self.baseline.monitored[name]
        kind = feature.kind
        min_count = self.detect.min_count
        n = summary.count
        metric, threshold = self.metric_of(name)
        value = self.distribution_value(name, summary, metric) if n else math.nan
        floors = self.floors(name)
        if scale and not value > threshold:
            floor = 0.0  # a finer scale counts only over its threshold, never below this one
        else:
            floor = floors.floor(metric, n) if n >= min_count else math.inf
            if scale and n >= min_count:  # what an effect of `threshold` shows at this size
                threshold = _with_noise(threshold, metric, floors.null_mean(metric, n))
        joint = self.is_joint(name)
        yield CheckResult(name, kind, JOINT_CHECK if joint else "distribution", metric, value,
                          max(threshold, floor), n >= min_count, n, scale)
        if joint:
            return  # its inputs' missing rates are their own checks

        absent = records >= min_count and summary.records - _missing(summary) == 0
        if scale == 0:
            yield CheckResult(name, kind, "schema", "feature_absent", 1.0 if absent else 0.0,
                              0.5, records >= min_count, records)
        seen = summary.records
        missing = _missing(summary)
        alpha = self.alpha_of(name)
        yield self._rate(name, kind, "missing_rate", "missing_rate", missing, seen,
                         feature.missing / max(feature.records, 1),
                         self.detect.missing_rate_threshold, alpha, scale, judged=not absent)
        invalid = _invalid(summary)
        yield self._rate(name, kind, "schema", "type_change", invalid, seen,
                         feature.invalid / max(feature.records, 1),
                         self.detect.type_change_threshold, alpha, scale)
        if isinstance(feature, NumericBaseline):
            assert isinstance(summary, NumericSummary)
            outside = int(summary.bins[0] + summary.bins[-1])
            # Chance that a fresh draw falls outside the range of N training values.
            p0 = 2.0 / (feature.count + 1)
            yield self._rate(name, kind, "out_of_range", "out_of_range_rate", outside, n, p0,
                             self.detect.out_of_range_threshold, alpha, scale)
            return
        assert isinstance(summary, CategoricalSummary)
        if feature.tail_complete:
            unseen = int(summary.counts[-1])
            yield self._rate(name, kind, "unseen_categories", "unseen_rate", unseen, n,
                             feature.unseen_rate, self.detect.unseen_threshold, alpha, scale)
        if self.detect.surge:
            yield self._surge(name, feature, summary, scale)

    def _surge(self, name: str, feature: CategoricalBaseline, summary: CategoricalSummary,
               scale: int) -> CheckResult:
        """Every category's share against the baseline's (the unseen slot has its check)."""
        d = self.detect
        n = summary.count
        found = surge(summary.counts[:-1], feature.bin_counts[:-1], self.alpha_of(name),
                      d.surge_factor, d.surge_min_change, serving_total=n)
        judged = n >= d.min_count and found.judged
        detail = None
        if found.judged:
            labels = feature.layout.labels
            detail = {"category": labels[found.index], "direction": found.direction,
                      "serving_share": _num(found.serving_share),
                      "baseline_share": _num(found.baseline_share),
                      "factor": _num(found.value), "needed": _num(found.threshold)}
        value = found.value if found.judged else math.nan
        return CheckResult(name, "categorical", SURGE_CHECK, "share_ratio", value,
                           found.threshold, judged, n, scale, detail)

    def _rate(self, name: str, kind: str, check: str, metric: str, hits: int, n: int,
              p0: float, allowance: float, alpha: float, scale: int = 0,
              judged: bool = True) -> CheckResult:
        """A rate check: threshold = max(p0 + allowance, Chernoff noise floor)."""
        enough = n >= self.detect.min_count and judged
        value = hits / n if n else 0.0
        if scale and value <= p0 + allowance:  # a finer scale under it cannot decide
            return CheckResult(name, kind, check, metric, value, p0 + allowance, enough, n,
                               scale)
        p0_smoothed = max(p0, 0.5 / (self.baseline.count + 1))
        floor = rate_floor(p0_smoothed, n, alpha, self.baseline.count) \
            if enough else math.inf
        return CheckResult(name, kind, check, metric, value, max(p0 + allowance, floor),
                           enough, n, scale)

    def _new_feature_checks(self, window: Pane) -> Iterator[CheckResult]:
        records = window.records
        judged = records >= self.detect.min_count
        for name, count in sorted(window.new_features.items()):
            yield CheckResult(name, "unknown", "schema", "new_feature", count / records,
                              self.detect.new_feature_threshold, judged, records)

    def distribution_value(self, name: str, summary: NumericSummary | CategoricalSummary,
                           metric: str) -> float:
        feature = self.baseline.monitored[name]
        counts = summary.bins if isinstance(summary, NumericSummary) else summary.counts
        options: dict[str, Any] = {}
        if metric == "wasserstein" and isinstance(feature, NumericBaseline) \
                and isinstance(summary, NumericSummary):  # the only one that needs points
            options = {"points": _points(feature, summary), "scale": feature.std or 1.0}
        return float(distance(metric, counts, feature.bin_counts, **options))

    def evidence(self, name: str, summary: NumericSummary | CategoricalSummary
                 ) -> dict[str, Any]:
        """What an event carries to explain itself."""
        feature = self.baseline.monitored[name]
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
            joint = self.baseline.joint
            if joint is not None and name == joint.name and isinstance(summary, JointSummary):
                evidence["contributions"] = joint.contributions(summary)
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


# Two-sample floors (version_shift): the baseline's bin probabilities against an exact
# reference, evaluated at the two windows' effective size. Shared like the others.
_TWO_SAMPLE_FLOORS: SharedFloors[NoiseFloors] = SharedFloors()


def _two_sample_floors(baseline: Baseline, name: str, alpha: float) -> NoiseFloors:
    return _TWO_SAMPLE_FLOORS.get((baseline.id, name, alpha), lambda: NoiseFloors(
        baseline.monitored[name].bin_counts, alpha, f"{baseline.id}|{name}|two-sample",
        reference_noise=False))


def version_shift(judge: Judge, reference: Pane, other: Pane) -> Iterator[CheckResult]:
    """``version_shift``: each feature's serving distribution in ``other``'s window (one
    version of a model) against ``reference``'s (another version, same window, same
    baseline bins), with the feature's distribution metric and threshold.

    Both sides are samples, so the noise floor is that of two samples of one distribution
    at sizes ``n_a``, ``n_b``: the floor of one sample of the effective size
    ``n_a n_b / (n_a + n_b)`` against an exact reference
    (:func:`~streamskew.stats.noise.two_sample_size`), at the feature's per-test ``alpha``.
    Under the null the shared distribution is unknown; the simulated floors (JSD, PSI,
    phi^2) take the baseline's bin probabilities, whose nearly equal masses put the most
    noise in the most bins (serving that fills fewer bins has less); L-infinity takes the
    two windows' pooled shares in its Chernoff bound, KS the distribution-free DKW bound.
    Wasserstein is judged with JSD (the two sides have no common bin points). Judged when
    both sides hold ``min_count`` values of the feature. As for the joint check, ``(joint)``
    is not judged while one of its inputs is over its line: that input names the cause."""
    results = list(_version_shift(judge, reference, other))
    joint = judge.baseline.joint
    if joint is not None:
        inputs = set(joint.inputs)
        if any(r.judged and r.value > r.threshold for r in results if r.feature in inputs):
            results = [replace(r, judged=False) if r.feature == joint.name else r
                       for r in results]
    yield from results


def _version_shift(judge: Judge, reference: Pane, other: Pane) -> Iterator[CheckResult]:
    d = judge.detect
    for name, ref_summary in reference.summaries.items():
        if judge.config.feature(name).ignore or name not in other.summaries:
            continue
        summary = other.summaries[name]
        feature = judge.baseline.monitored[name]
        metric, threshold = judge.metric_of(name)
        if metric == "wasserstein":
            metric = "jsd"
        counts = summary.bins if isinstance(summary, NumericSummary) else summary.counts
        ref_counts = ref_summary.bins if isinstance(ref_summary, NumericSummary) \
            else ref_summary.counts
        n_a, n_b = int(counts.sum()), int(ref_counts.sum())
        judged = min(n_a, n_b) >= d.min_count
        if not judged:
            yield CheckResult(name, feature.kind, VERSION_SHIFT_CHECK, metric, math.nan,
                              math.inf, False, n_a)
            continue
        size = two_sample_size(n_a, n_b)
        alpha = judge.alpha_of(name)
        if metric == "ks":
            floor = dkw_floor(size, alpha)
        elif metric == "linf":
            pooled = (counts + ref_counts) / (n_a + n_b)
            floor = max_deviation_floor(pooled, size, alpha)
        else:
            floor = _two_sample_floors(judge.baseline, name, alpha).floor(
                metric, max(round(size), 1))
        value = float(distance(metric, counts, ref_counts))
        yield CheckResult(name, feature.kind, VERSION_SHIFT_CHECK, metric, value,
                          max(threshold, floor), True, n_a,
                          detail={"noise_floor": _num(floor), "effective_size": _num(size),
                                  "counts": [n_a, n_b]})


def _with_noise(threshold: float, metric: str, noise: float) -> float:
    """The value a shift of size ``threshold`` shows on average in a window whose null
    statistic has mean ``noise`` (chi-square-like: noise adds to the squared distance, or to
    PSI / phi^2 themselves)."""
    if NOISE_SHAPE[metric] == "square":
        return math.sqrt(threshold * threshold + noise)
    return threshold + noise


def _decisive(scales: list[CheckResult]) -> CheckResult:
    """One result of a check over its scales (``scales[0]`` is the whole window): the whole
    window when it is over its threshold, else the finer scale furthest over its threshold
    when one is, else the whole window. Fed to
    hysteresis, a check raises as soon as any scale crosses its line and resolves when no
    finer scale is over its threshold and the whole window is under ``resolve_ratio`` of its
    own (the band that keeps a hovering value from flapping is the whole window's)."""
    whole = scales[0]
    best = whole
    best_ratio = whole.ratio if whole.judged and math.isfinite(whole.value) else -math.inf
    if best_ratio > 1:
        return whole  # over its line already: the steadier estimate tells the story
    for result in scales[1:]:
        if result.judged and math.isfinite(result.value) and result.ratio > best_ratio:
            best, best_ratio = result, result.ratio
    if best is whole or best_ratio <= 1:
        return whole
    return replace(best, window_count=whole.count)


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
