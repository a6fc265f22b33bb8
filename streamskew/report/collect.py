"""Collects what the HTML report shows while the engine runs.

Wire a :class:`ReportCollector` into the engine with ``Detector(on_window=collector.on_window,
on_bad_record=collector.on_bad_record)`` (or the same callbacks of ``detect_file``), then build
the report's input with :meth:`ReportCollector.data` from the run's stats and events.

What it keeps, per model and per check of every feature (a *series*: ``distribution``,
``missing_rate``, ``out_of_range`` or ``unseen_categories``, ``schema/type_change``,
``schema/feature_absent``, ``schema/new_feature``):

- exact counters over the whole run: judged windows, windows over the threshold, the peak
  (largest value / threshold) and the last value;
- a downsampled timeline: at most :data:`MAX_BUCKETS` points, each the maximum (and minimum)
  of a run of consecutive windows. Windows are merged in pairs whenever the run outgrows the
  budget, so the memory and the HTML stay bounded however long the run is, and a peak is never
  averaged away;
- the *runs over threshold* (consecutive judged windows above the threshold) with a snapshot
  of the feature's window at each run's worst window. A skew is raised only after windows over
  the threshold and resolved only after windows below it, so the worst window of an incident
  (raise to resolve, from the events) is the worst of the runs that overlap it: exact, with no
  copy of the hysteresis settings. At most :data:`MAX_RUN_SNAPSHOTS` snapshots are kept per
  series (the mildest are dropped first);
- bad records by reason per second of event time (:meth:`ReportCollector.on_bad_record`), so
  an incident can list the dead letters and field errors of its span. Records whose event time
  is unknown are counted in the whole-run totals only.

Integer-valued features: a numeric feature whose baseline edges, extremes and quantiles are
whole numbers and whose training sum (mean x count) is whole is taken as integer-valued. Its
serving quantiles are then read from the exact bin counts when the bin holding the quantile
contains a single integer (always the case below ~100 distinct values), else the sketch's value
is rounded to an integer and kept inside that bin. So ``p01 3`` shows as ``3``, not the
sketch's ``2.98``. For every numeric feature the sketch's quantile (1% relative error) is kept
inside the exact bin that holds it and inside the window's exact min and max.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..baseline import Baseline, CategoricalBaseline, NumericBaseline
from ..detector import DetectorStats, SkewEvent, WindowResult
from ..records import BadRecord
from ..sketch.categorical import CategoricalSummary
from ..sketch.numeric import NumericSummary
from .performance import PerformanceTrack

PERFORMANCE_CHECKS = ("performance", "estimated_performance")

__all__ = ["MAX_BUCKETS", "MAX_RUN_SNAPSHOTS", "REPORT_QUANTILES", "ReportCollector",
           "integer_valued", "serving_quantiles"]

MAX_BUCKETS = 240  # timeline points per series; beyond, pairs of points merge
MAX_RUN_SNAPSHOTS = 64  # per series: worst-window snapshots of runs over threshold
BAD_RESOLUTION_MS = 1000  # bad records are counted per second of event time
REPORT_QUANTILES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75,
                    "p95": 0.95, "p99": 0.99}
CHECK_ORDER = ("distribution", "missing_rate", "out_of_range", "unseen_categories",
               "type_change", "feature_absent", "new_feature")


def _ratio(value: float, threshold: float) -> float:
    """How far over (> 1) or under its threshold a value is."""
    if threshold > 0 and math.isfinite(threshold):
        return value / threshold
    return math.inf if value > threshold else 0.0


@dataclass
class _Run:
    """Consecutive judged windows over the threshold, and a snapshot of the worst one."""

    first_end: int | None
    last_end: int | None
    windows: int = 0
    peak_ratio: float = -math.inf
    peak_value: float = math.nan
    peak_threshold: float = math.nan
    peak_end: int | None = None
    snapshot: dict[str, Any] | None = None


@dataclass
class _Series:
    """One check of one feature of one model over the whole run."""

    feature: str
    kind: str
    check: str
    metric: str
    windows: int = 0  # windows seen (judged or not)
    judged: int = 0
    over: int = 0
    ever_positive: bool = False
    last: tuple[int | None, float | None, float | None] = (None, None, None)
    peak_ratio: float = -math.inf
    peak: tuple[int | None, float | None, float | None] = (None, None, None)
    # bucket index -> [t_first, t_last, vmax, vmin, thr at vmax, ratio max, judged, over]
    buckets: dict[int, list[Any]] = field(default_factory=dict)
    runs: list[_Run] = field(default_factory=list)
    open_run: _Run | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.feature, self.check, self.metric)


@dataclass
class _ModelTrack:
    baseline: Baseline
    sequence: int = 0  # windows judged for this model
    per_bucket: int = 1  # windows per timeline bucket (a power of two)
    first_end: int | None = None
    last_end: int | None = None
    window_ms: int | None = None
    series: dict[tuple[str, str, str], _Series] = field(default_factory=dict)
    last_window: dict[str, Any] = field(default_factory=dict)  # feature -> summary copy
    last_span: tuple[int | None, int | None, int] = (None, None, 0)


class ReportCollector:
    """Keeps, in bounded memory, what the report draws: per-check timelines, runs over the
    threshold with their worst windows, and bad records by event time."""

    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline
        self.models: dict[str, _ModelTrack] = {}
        # (reason, used, feature or None) -> Counter of event-time seconds
        self._bad: dict[tuple[str, bool, str | None], Counter[int]] = {}
        self.bad_without_time: Counter[tuple[str, bool]] = Counter()
        self._detail_feature: dict[str, str | None] = {}
        self._untimed = 0
        self.performance: PerformanceTrack | None = None  # with labels ([labels])

    # -- input ------------------------------------------------------------------------------

    def on_window(self, result: WindowResult) -> None:
        """Record one judged window (``Detector(on_window=...)``)."""
        shown = _shown(result.model, getattr(result, "version", None))
        track = self.models.get(shown)
        if track is None:
            track = self.models[shown] = _ModelTrack(result.baseline)
        track.baseline = result.baseline
        if result.end is not None:
            track.first_end = result.end if track.first_end is None else track.first_end
            track.last_end = result.end
            if result.start is not None:
                track.window_ms = result.end - result.start
        index = track.sequence // track.per_bucket
        track.sequence += 1
        for check in result.results:
            self._observe(track, result, check, index)
        if track.sequence > MAX_BUCKETS * track.per_bucket:
            track.per_bucket *= 2
            for series in track.series.values():
                series.buckets = _halve(series.buckets)
        track.last_window = {name: summary.copy()
                             for name, summary in result.window.summaries.items()}
        track.last_span = (result.start, result.end, result.records)

    def on_performance_window(self, window: Any) -> None:
        """Record one judged performance window (``Detector(on_performance_window=...)``)."""
        if self.baseline.performance is None:
            return
        if self.performance is None:
            self.performance = PerformanceTrack()
        self.performance.on_window(window, self.baseline.performance)

    def on_bad_record(self, record: BadRecord) -> None:
        """Count one rejected record or field error (``Detector(on_bad_record=...)``)."""
        feature = self._feature_of(record.detail) if record.used else None
        if record.event_time is None:
            self.bad_without_time[(record.reason, record.used)] += 1
            return
        key = (record.reason, record.used, feature)
        counts = self._bad.get(key)
        if counts is None:
            counts = self._bad[key] = Counter()
        counts[record.event_time // BAD_RESOLUTION_MS] += 1

    def _feature_of(self, detail: str) -> str | None:
        """The feature a field error names (its detail reads ``"<feature>: ..."``)."""
        if detail in self._detail_feature:
            return self._detail_feature[detail]
        names = set(self.baseline.features)
        for track in self.models.values():
            names.update(track.baseline.features)
        found = None
        cut = detail.find(": ")
        while cut >= 0:
            if detail[:cut] in names:
                found = detail[:cut]
            cut = detail.find(": ", cut + 1)
        if len(self._detail_feature) < 10_000:
            self._detail_feature[detail] = found
        return found

    def _observe(self, track: _ModelTrack, result: WindowResult, check: Any,
                 index: int) -> None:
        key = (check.feature, check.check, check.metric)
        series = track.series.get(key)
        if series is None:
            series = track.series[key] = _Series(check.feature, check.kind, check.check,
                                                 check.metric)
        series.windows += 1
        value = float(check.value)
        judged = bool(check.judged) and math.isfinite(value)
        threshold = float(check.threshold)
        bucket = series.buckets.get(index)
        if bucket is None:
            bucket = series.buckets[index] = [result.end, result.end, None, None, None,
                                              -math.inf, 0, 0]
        bucket[1] = result.end
        if not judged:
            series.last = (result.end, None, _finite(threshold))
            return
        series.judged += 1
        series.ever_positive = series.ever_positive or value > 0
        ratio = _ratio(value, threshold)
        over = value > threshold
        series.last = (result.end, value, _finite(threshold))
        if ratio > series.peak_ratio:
            series.peak_ratio = ratio
            series.peak = (result.end, value, _finite(threshold))
        bucket[6] += 1
        if bucket[2] is None or value > bucket[2]:
            bucket[2] = value
        if bucket[3] is None or value < bucket[3]:
            bucket[3] = value
        if ratio > bucket[5]:
            bucket[5], bucket[4] = ratio, _finite(threshold)
        if not over:
            series.open_run = None
            return
        series.over += 1
        bucket[7] += 1
        run = series.open_run
        if run is None:
            run = series.open_run = _Run(result.end, result.end)
            series.runs.append(run)
        run.last_end = result.end
        run.windows += 1
        if ratio > run.peak_ratio:
            run.peak_ratio, run.peak_value, run.peak_threshold = ratio, value, threshold
            run.peak_end = result.end
            run.snapshot = _snapshot(track.baseline, check.feature, result)
            _limit_snapshots(series.runs)

    # -- output -----------------------------------------------------------------------------

    def data(self, stats: DetectorStats, events: list[SkewEvent], source: str,
             baseline_path: str | None) -> dict[str, Any]:
        """The report's input (see :func:`streamskew.report.render_report`)."""
        # Bad records the spans cannot show: no event time, or never handed to
        # on_bad_record (the run's totals count them all).
        timed = sum(sum(c.values()) for c in self._bad.values())
        total = sum(stats.bad.values()) + sum(stats.field_errors.values())
        self._untimed = max(total - timed, sum(self.bad_without_time.values()))
        # Performance events have their own section; the feature timelines are the skew checks.
        skew_events = [e for e in events if e.check not in PERFORMANCE_CHECKS]
        incidents = _incidents(skew_events)
        models = []
        names = sorted(set(self.models) | {_shown(e.model, e.model_version)
                                           for e in skew_events})
        counter = 0
        for model in names:
            track = self.models.get(model) or _ModelTrack(self.baseline)
            for m, feature, check, metric in incidents:
                if m == model and (feature, check, metric) not in track.series:
                    kind = next((e.kind for e in events
                                 if (_shown(e.model, e.model_version), e.feature) == (m, feature)),
                                "unknown")
                    track.series[(feature, check, metric)] = _Series(feature, kind, check,
                                                                     metric)
            features: dict[str, dict[str, Any]] = {}
            for series in track.series.values():
                spans = incidents.get((model, *series.key), [])
                if series.metric == "feature_absent" and not spans \
                        and not series.ever_positive:
                    continue  # present all along: not worth a lane or a row
                entry = features.get(series.feature)
                if entry is None:
                    entry = features[series.feature] = self._feature(track, series)
                views = []
                for span in spans:
                    counter += 1
                    views.append(self._incident(track, series, span, f"inc-{counter}"))
                entry["checks"].append(_series_view(series, views))
                entry["incidents"].extend(views)
            for entry in features.values():
                entry["checks"].sort(key=lambda c: _check_rank(c["metric"], c["check"]))
                entry["incidents"].sort(key=lambda i: (i["raised"] is None, i["raised"] or 0))
            models.append({
                "model": model, "start": track.first_end, "end": track.last_end,
                "window_ms": track.window_ms, "windows_per_point": track.per_bucket,
                "windows": track.sequence, "features": list(features.values()),
            })
        return {
            "title": "streamskew report",
            "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source": source,
            "baseline": {"id": self.baseline.id, "count": self.baseline.count,
                         "path": baseline_path},
            "summary": {"records": stats.records, "accepted": stats.accepted,
                        "bad_records": dict(stats.bad),
                        "field_errors": dict(stats.field_errors),
                        "bad_without_time": self._untimed,
                        "late_records": stats.late, "windows": stats.windows,
                        "events": len(events)},
            "events": [e.to_dict() for e in events],
            "models": models,
            "performance": self.performance.data(
                events, stats.labels.summary() if getattr(stats, "labels", None) else None)
            if self.performance is not None else [],
        }

    def _feature(self, track: _ModelTrack, series: _Series) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": series.feature, "kind": series.kind, "checks": [],
                                 "incidents": []}
        feature = track.baseline.features.get(series.feature)
        if feature is None:
            entry["kind"] = "unknown"
            return entry
        entry["baseline"] = _baseline_view(feature)
        entry["integer"] = isinstance(feature, NumericBaseline) and integer_valued(feature)
        summary = track.last_window.get(series.feature)
        if summary is not None:
            start, end, records = track.last_span
            entry["last_window"] = _summary_view(feature, summary, start, end, records)
        return entry

    def _incident(self, track: _ModelTrack, series: _Series,
                  span: dict[str, Any], ident: str) -> dict[str, Any]:
        raised, resolved = span["raised"], span["resolved"]
        worst: _Run | None = None
        windows_over = 0
        for run in series.runs:
            if _overlaps(run, raised, resolved):
                windows_over += run.windows
                if worst is None or run.peak_ratio > worst.peak_ratio:
                    worst = run
        kept = [r for r in series.runs if _overlaps(r, raised, resolved) and r.snapshot]
        best = max(kept, key=lambda r: r.peak_ratio, default=None)
        view = {**span, "id": ident, "feature": series.feature, "check": series.check,
                "metric": series.metric, "kind": series.kind,
                "windows_over": windows_over if series.runs else None,
                "peak": None, "worst": None,
                "bad": self._bad_in(span["raised_start"], resolved, series.feature)}
        if worst is not None:
            view["peak"] = {"value": _finite(worst.peak_value),
                            "threshold": _finite(worst.peak_threshold), "end": worst.peak_end}
        if best is not None:
            view["worst"] = {**(best.snapshot or {}), "value": _finite(best.peak_value),
                             "threshold": _finite(best.peak_threshold)}
        return view

    def _bad_in(self, start: int | None, end: int | None, feature: str) -> dict[str, Any]:
        """Bad records whose event time lies in ``[start, end)`` (open ends: the whole run)."""
        lo = -math.inf if start is None else start // BAD_RESOLUTION_MS
        hi = math.inf if end is None else -(-end // BAD_RESOLUTION_MS)
        rejected: Counter[str] = Counter()
        field_errors: Counter[str] = Counter()
        this_feature: Counter[str] = Counter()
        for (reason, used, named), seconds in self._bad.items():
            n = sum(c for s, c in seconds.items() if lo <= s < hi)
            if not n:
                continue
            (field_errors if used else rejected)[reason] += n
            if used and named == feature:
                this_feature[reason] += n
        return {"rejected": dict(rejected), "field_errors": dict(field_errors),
                "feature_field_errors": dict(this_feature),
                "without_time": self._untimed}


# --------------------------------------------------------------------------- helpers


def _halve(buckets: dict[int, list[Any]]) -> dict[int, list[Any]]:
    """Merge the timeline's buckets in pairs (index i -> i // 2)."""
    merged: dict[int, list[Any]] = {}
    for index in sorted(buckets):
        b = buckets[index]
        into = merged.get(index // 2)
        if into is None:
            merged[index // 2] = list(b)
            continue
        into[1] = b[1]
        if b[2] is not None and (into[2] is None or b[2] > into[2]):
            into[2] = b[2]
        if b[3] is not None and (into[3] is None or b[3] < into[3]):
            into[3] = b[3]
        if b[5] > into[5]:
            into[5], into[4] = b[5], b[4]
        into[6] += b[6]
        into[7] += b[7]
    return merged


def _limit_snapshots(runs: list[_Run]) -> None:
    kept = [r for r in runs if r.snapshot is not None]
    if len(kept) > MAX_RUN_SNAPSHOTS:
        min(kept[:-1], key=lambda r: r.peak_ratio).snapshot = None


def _overlaps(run: _Run, raised: int | None, resolved: int | None) -> bool:
    if raised is None or run.last_end is None or run.first_end is None:
        return True  # no event times (one window for the whole input)
    return run.last_end >= raised and (resolved is None or run.first_end <= resolved)


def _shown(model: str, version: str | None) -> str:
    """A model's name in the report: with its version when versions are configured."""
    return model if version is None else f"{model} (version {version})"


def _incidents(events: list[SkewEvent]) -> dict[tuple[str, str, str, str], list[dict[str, Any]]]:
    """Raise-to-resolve spans per model/feature/check/metric, from the events."""
    out: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for e in sorted(events, key=lambda e: (e.window_end is None, e.window_end or 0)):
        spans = out.setdefault((_shown(e.model, e.model_version), e.feature, e.check,
                                e.metric), [])
        if e.type == "skew_detected":
            spans.append({"raised": e.window_end, "raised_start": e.window_start,
                          "resolved": None, "raise_event": e.event_id, "resolve_event": None,
                          "severity": e.severity, "raise_value": _finite(e.value),
                          "raise_threshold": _finite(e.threshold),
                          "evidence": e.evidence})
        elif spans and spans[-1]["resolve_event"] is None:
            spans[-1]["resolved"] = e.window_end
            spans[-1]["resolve_event"] = e.event_id
    return out


def _check_rank(metric: str, check: str) -> int:
    name = metric if check == "schema" else check
    return CHECK_ORDER.index(name) if name in CHECK_ORDER else len(CHECK_ORDER)


def _series_view(series: _Series, incidents: list[dict[str, Any]]) -> dict[str, Any]:
    if incidents and incidents[-1]["resolved"] is None:
        state = "skew"
    elif incidents:
        state = "resolved"
    elif series.judged:
        state = "ok"
    else:
        state = "not_judged"
    resolved = [i["resolved"] for i in incidents if i["resolved"] is not None]
    end, value, threshold = series.last
    peak_end, peak_value, peak_threshold = series.peak
    return {
        "check": series.check, "metric": series.metric, "state": state,
        "windows": series.windows, "judged": series.judged, "over": series.over,
        "last": {"end": end, "value": _finite(value), "threshold": threshold},
        "peak": {"end": peak_end, "value": _finite(peak_value), "threshold": peak_threshold},
        "first_raised": incidents[0]["raised"] if incidents else None,
        "last_resolved": max(resolved) if resolved else None,
        "incidents": [{"id": i["id"], "raised": i["raised"], "resolved": i["resolved"]}
                      for i in incidents],
        # [t_first, t_last, max, min, threshold at the max, judged, over]
        "points": [[b[0], b[1], _finite(b[2]), _finite(b[3]), b[4], b[6], b[7]]
                   for _, b in sorted(series.buckets.items())],
    }


def _baseline_view(feature: NumericBaseline | CategoricalBaseline) -> dict[str, Any]:
    counts = feature.bin_counts
    probs = (counts / max(int(counts.sum()), 1)).tolist()
    if isinstance(feature, NumericBaseline):
        return {"edges": feature.edges.tolist(), "probs": probs,
                "quantiles": {k: _finite(feature.quantiles.get(k, math.nan))
                              for k in REPORT_QUANTILES},
                "min": _finite(feature.minimum), "max": _finite(feature.maximum),
                "mean": _finite(feature.mean), "missing_rate": feature.missing_rate,
                "count": feature.count}
    return {"labels": list(feature.layout.labels), "probs": probs,
            "missing_rate": feature.missing_rate, "count": feature.count}


def _snapshot(baseline: Baseline, name: str, result: WindowResult) -> dict[str, Any] | None:
    feature = baseline.features.get(name)
    summary = result.window.summaries.get(name)
    if feature is None or summary is None:
        return {"start": result.start, "end": result.end, "records": result.records}
    return _summary_view(feature, summary, result.start, result.end, result.records)


def _summary_view(feature: NumericBaseline | CategoricalBaseline,
                  summary: NumericSummary | CategoricalSummary, start: int | None,
                  end: int | None, records: int) -> dict[str, Any]:
    """A compact, JSON-ready picture of one feature in one window."""
    view: dict[str, Any] = {"start": start, "end": end, "records": records}
    if isinstance(summary, NumericSummary) and isinstance(feature, NumericBaseline):
        total = int(summary.bins.sum())
        view.update(
            count=summary.count, missing=int(summary.counts[1]), invalid=int(summary.counts[2]),
            probs=(summary.bins / total).tolist() if total else None,
            quantiles=serving_quantiles(feature, summary) if summary.count else {},
            min=_finite(summary.moments[2]) if summary.count else None,
            max=_finite(summary.moments[3]) if summary.count else None,
            mean=_finite(summary.mean))
        return view
    assert isinstance(summary, CategoricalSummary)
    total = int(summary.counts.sum())
    view.update(count=summary.count, missing=summary.missing, invalid=summary.invalid,
                probs=(summary.counts / total).tolist() if total else None,
                top_unseen=[{"value": v, "count": c} for v, c in summary.top_unseen(8)])
    return view


def integer_valued(feature: NumericBaseline) -> bool:
    """Whether the training values of a numeric feature look like whole numbers: its bin
    edges, min, max and quantiles are whole and so is its sum (mean x count).

    >>> from streamskew import Baseline
    >>> b = Baseline.from_columns({"n": [1, 2, 2, 3, 7] * 60, "x": [1, 2.5, 3, 4, 5] * 60})
    >>> integer_valued(b.features["n"]), integer_valued(b.features["x"])
    (True, False)
    """
    values = [*feature.edges.tolist(), feature.minimum, feature.maximum,
              *feature.quantiles.values()]
    if not all(math.isfinite(v) and float(v).is_integer() for v in values):
        return False
    total = feature.mean * feature.count
    return math.isfinite(total) and abs(total - round(total)) <= 1e-6 * max(1.0, abs(total))


def serving_quantiles(feature: NumericBaseline, summary: NumericSummary,
                      ranks: dict[str, float] | None = None) -> dict[str, float | None]:
    """The window's quantiles (numpy's "lower" convention), as exact as the summary allows.

    The sketch's value (1% relative error) is kept within the exact baseline bin that holds
    the quantile and within the window's exact min and max. For an integer-valued feature
    (see :func:`integer_valued`) a bin holding one integer gives the exact value; otherwise
    the value is rounded to an integer.
    """
    ranks = REPORT_QUANTILES if ranks is None else ranks
    n = summary.count
    if n == 0:
        return dict.fromkeys(ranks)
    sketch = summary.quantile(list(ranks.values()))
    integer = integer_valued(feature)
    cumulative = np.cumsum(summary.bins)
    edges = feature.edges
    k = len(edges) - 1
    lo_all, hi_all = float(summary.moments[2]), float(summary.moments[3])
    out: dict[str, float | None] = {}
    for (name, rank), value in zip(ranks.items(), sketch, strict=True):
        slot = int(np.searchsorted(cumulative, math.floor(rank * (n - 1)), side="right"))
        # The bin's value range, within the window's exact extremes; flags: bound included.
        lo, lo_in, hi, hi_in = lo_all, True, hi_all, True
        if 1 <= slot <= k:
            if edges[slot - 1] > lo:
                lo = edges[slot - 1]
            if edges[slot] < hi:
                hi, hi_in = edges[slot], slot == k  # the last bin is closed
        elif slot == 0:
            if edges[0] < hi:
                hi, hi_in = edges[0], False
        elif edges[-1] >= lo:
            lo, lo_in = edges[-1], False
        v = float(value) if math.isfinite(value) else lo
        if integer:
            first = math.ceil(lo) if lo_in else math.floor(lo) + 1
            last = math.floor(hi) if hi_in else math.ceil(hi) - 1
            last = max(last, first)
            v = float(first) if first == last else float(min(max(round(v), first), last))
        else:
            v = min(max(v, lo), hi)
        out[name] = v
    return out


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
