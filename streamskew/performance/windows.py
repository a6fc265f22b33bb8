"""Performance windows: sealed panes from every join shard -> windows -> judged -> events.

:class:`PerformanceWindows` merges the partial panes that join shards seal
(:class:`~streamskew.performance.join.SealedPerformance`) and slides two windows per model,
both by *request* event time and both the last ``size / pane`` panes:

- the **estimated** window advances when every shard has made its panes request-final: its
  score histogram gives CBPE's estimates (classifiers), judged at once, long before labels
  come: ``estimated_performance`` events;
- the **realized** window advances when every shard has made its panes final: the joined
  labels give the realized metrics, judged against the validation performance:
  ``performance`` events, whose evidence carries the estimate of the same window beside the
  realized value.

Each metric is judged by its *degradation* from the reference (the drop of accuracy,
precision, recall, F1, ROC AUC; the relative rise of log loss, MAE, RMSE; the change of the
bias relative to the reference RMSE), against ``max(configured, noise floor)``
(:mod:`.floors`) and through the same raise/resolve hysteresis as the skew checks. A
realized window with fewer than ``[labels] min_labels`` labels, or an estimated window with
fewer than ``[detect] min_count`` requests, is not judged. Event ids are a pure function of
model, prediction name, check, metric, window end and type, as for every event.
"""

from __future__ import annotations

import base64
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..baseline import Baseline
from ..config import Config, LabelsConfig, parse_duration
from ..detector.builder import WHOLE_INPUT, baseline_for
from ..detector.events import SkewEvent
from ..detector.hysteresis import Hysteresis
from ..stats.noise import SharedFloors
from .cbpe import expected_metrics
from .floors import PerformanceFloors, WindowCounts
from .join import LABELS, NONE_YET, REQUESTS, SealedPerformance
from .metrics import (
    CLASSIFIER_METRICS,
    ESTIMATED_METRICS,
    HIGHER_IS_BETTER,
    REGRESSOR_METRICS,
    confusion,
    degradation,
    window_metrics,
)
from .reference import ReferencePerformance
from .summary import PerformancePane

__all__ = ["ESTIMATED", "PERFORMANCE", "MetricResult", "PerformanceWindow",
           "PerformanceWindows"]

PERFORMANCE = "performance"  # the check of realized-performance events
ESTIMATED = "estimated_performance"
MAX_ESTIMATES = 10_000  # estimates kept to report beside the realized value


@dataclass(frozen=True)
class MetricResult:
    """One metric of one judged window."""

    metric: str
    value: float  # the metric itself (accuracy 0.71, ...)
    reference: float
    degradation: float  # what is compared with the threshold (positive = worse)
    threshold: float  # max(configured, floor)
    floor: float
    spread: float  # standard deviation of the metric at this window size (null)
    judged: bool

    @property
    def ci95(self) -> tuple[float, float]:
        return (self.value - 1.96 * self.spread, self.value + 1.96 * self.spread)


@dataclass(frozen=True)
class PerformanceWindow:
    """One judged performance window of one model (for reports and metrics)."""

    model: str
    check: str  # performance | estimated_performance
    start: int | None
    end: int | None
    count: int  # labelled requests (realized) or scored requests (estimated)
    requests: int
    sampled: int
    labelled: int
    results: tuple[MetricResult, ...]
    estimated: Mapping[str, float] = field(default_factory=dict)  # CBPE of the same window
    extra: Mapping[str, float] = field(default_factory=dict)  # roc_auc_bound


# Simulated once per process (SharedFloors says why).
_SHARED_FLOORS: SharedFloors[PerformanceFloors] = SharedFloors()


class _ModelState:
    def __init__(self, model: str, baseline: Baseline, config: Config) -> None:
        self.model = model
        self.baseline = baseline
        reference = baseline.performance
        assert reference is not None
        self.reference: ReferencePerformance = reference
        key = f"{baseline.id}|{model}"
        alpha = config.detect.alpha
        self.floors = _SHARED_FLOORS.get(
            (key, alpha), lambda: PerformanceFloors(reference, alpha, key))
        self.pending: dict[str, dict[int, PerformancePane]] = {REQUESTS: {}, LABELS: {}}
        self.windows: dict[str, deque[PerformancePane]] = {REQUESTS: deque(), LABELS: deque()}
        self.hysteresis: dict[tuple[str, str], Hysteresis] = {}
        self.estimates: dict[int | None, dict[str, float]] = {}  # window end -> CBPE


class PerformanceWindows:
    """Merges sealed performance panes, slides windows, judges them (module docs)."""

    def __init__(self, config: Config, baselines: Mapping[str, Baseline],
                 on_window: Callable[[PerformanceWindow], None] | None = None) -> None:
        self.config = config
        self.settings: LabelsConfig = config.labels or LabelsConfig()
        self.baselines = baselines
        self.on_window = on_window
        self.pane_ms = parse_duration(self.settings.pane) if self.settings.pane \
            else config.window.pane_ms
        size_ms = parse_duration(self.settings.size) if self.settings.size \
            else config.window.size_ms
        self.size = size_ms // self.pane_ms
        self.models: dict[str, _ModelState] = {}
        self.shards: dict[str, tuple[int, int]] = {}
        self.closed: dict[str, int] = {REQUESTS: NONE_YET, LABELS: NONE_YET}
        self.windows_judged = 0
        self.events = 0
        self.late_panes = 0
        self.prediction = (self.settings.prediction or config.message.prediction
                           or "prediction").split(".")[-1]

    # -- input -------------------------------------------------------------------------------

    def expect(self, shards: Mapping[str, Any] | list[str]) -> None:
        """Shards that must report progress before anything closes."""
        for shard in shards:
            self.shards.setdefault(shard, (NONE_YET, NONE_YET))

    def add(self, sealed: SealedPerformance) -> None:
        """A pane one shard sealed; merged with the other shards' parts of it."""
        state = self._model(sealed.model)
        if state is None:
            return
        if sealed.index != WHOLE_INPUT and sealed.index <= self.closed[sealed.stage]:
            self.late_panes += 1
            return
        pending = state.pending[sealed.stage]
        known = pending.get(sealed.index)
        if known is None:
            pending[sealed.index] = sealed.pane.copy()
        else:
            known.merge(sealed.pane)

    def progress(self, shard: str, requests_through: int, final_through: int
                 ) -> list[SkewEvent]:
        """A shard's progress (its :attr:`LabelJoin.progress`); returns new events."""
        old = self.shards.get(shard, (NONE_YET, NONE_YET))
        self.shards[shard] = (max(old[0], requests_through), max(old[1], final_through))
        requests = min(r for r, _ in self.shards.values())
        final = min(f for _, f in self.shards.values())
        return self._advance(REQUESTS, requests) + self._advance(LABELS, final)

    def flush(self) -> list[SkewEvent]:
        """End of input: close every pending pane (or judge the whole input as one window)."""
        events: list[SkewEvent] = []
        for stage in (REQUESTS, LABELS):
            for state in self.models.values():
                pane = state.pending[stage].pop(WHOLE_INPUT, None)
                if pane is not None:
                    state.windows[stage].append(pane)
                    events.extend(self._judge(state, stage, None, None))
            last = max((i for s in self.models.values() for i in s.pending[stage]),
                       default=None)
            if last is not None:
                events.extend(self._advance(stage, last))
        return events

    # -- sliding -----------------------------------------------------------------------------

    def _model(self, model: str) -> _ModelState | None:
        state = self.models.get(model)
        if state is None:
            baseline = baseline_for(self.baselines, model)
            if baseline.performance is None:
                return None
            state = self.models[model] = _ModelState(model, baseline, self.config)
        return state

    def _advance(self, stage: str, target: int) -> list[SkewEvent]:
        events: list[SkewEvent] = []
        if target == NONE_YET:
            return events
        closed = self.closed[stage]
        if closed == NONE_YET:
            first = min((i for s in self.models.values() for i in s.pending[stage]
                         if i != WHOLE_INPUT), default=None)
            if first is None or first > target:
                return events
            closed = first - 1
        while closed < target:
            index = self._next(stage, closed, target)
            for state in self.models.values():
                events.extend(self._close(state, stage, index))
            closed = index
        self.closed[stage] = closed
        return events

    def _next(self, stage: str, closed: int, target: int) -> int:
        """The next pane to close, skipping stretches where every window is empty."""
        if any(s.windows[stage] for s in self.models.values()):
            return closed + 1
        upcoming = [i for s in self.models.values() for i in s.pending[stage] if i > closed]
        return min(min(upcoming), target) if upcoming else target

    def _close(self, state: _ModelState, stage: str, index: int) -> list[SkewEvent]:
        window = state.windows[stage]
        pane = state.pending[stage].pop(index, None)
        if pane is not None:
            window.append(pane)
        while window and window[0].index <= index - self.size:
            window.popleft()
        if not window:
            return []
        start = (index - self.size + 1) * self.pane_ms
        return self._judge(state, stage, start, (index + 1) * self.pane_ms)

    # -- judging -----------------------------------------------------------------------------

    def _judge(self, state: _ModelState, stage: str, start: int | None, end: int | None
               ) -> list[SkewEvent]:
        reference = state.reference
        window = state.windows[stage]
        aggregate = PerformancePane.total(window, window[-1].index, reference.task,
                                          reference.bins)
        threshold_bin = reference.layout().threshold_bin if reference.is_classifier else 0
        if stage == REQUESTS:
            if not reference.is_classifier:
                return []  # CBPE is for classifiers
            values = {k: float(v) for k, v in
                      expected_metrics(aggregate.scored, reference.calibration,
                                       threshold_bin).items()}
            state.estimates[end] = values
            if len(state.estimates) > MAX_ESTIMATES:
                state.estimates.pop(next(iter(state.estimates)))
            n = int(aggregate.scored.sum())
            counts = WindowCounts(n)
            metrics = self._metrics(ESTIMATED_METRICS)
            check, minimum, expected_ref = ESTIMATED, self.config.detect.min_count, True
            estimated: Mapping[str, float] = {}
            extra: dict[str, float] = {}
        else:
            values = window_metrics(aggregate, threshold_bin)
            n = aggregate.labelled
            if reference.is_classifier:
                tp, fp, fn, _ = confusion(aggregate.positives, aggregate.negatives,
                                          threshold_bin)
                counts = WindowCounts(n, int(tp + fp), int(tp + fn))
                metrics = self._metrics(tuple(m for m in CLASSIFIER_METRICS
                                              if m != "log_loss" or not reference.hard))
                extra = {"roc_auc_bound": values.get("roc_auc_bound", math.nan)}
            else:
                counts = WindowCounts(n)
                metrics = self._metrics(REGRESSOR_METRICS)
                extra = {}
            check, minimum, expected_ref = PERFORMANCE, self.settings.min_labels, False
            estimated = state.estimates.pop(end, {})
        self.windows_judged += 1
        results = []
        events = []
        for metric in metrics:
            result = self._result(state, metric, values.get(metric, math.nan), counts,
                                  expected_ref, n >= minimum)
            results.append(result)
            if not result.judged:
                continue
            key = (check, metric)
            hysteresis = state.hysteresis.get(key)
            if hysteresis is None:
                d = self.config.detect
                hysteresis = state.hysteresis[key] = Hysteresis(d.raise_after, d.resolve_after,
                                                                d.resolve_ratio)
            change = hysteresis.observe(result.degradation, result.threshold)
            if change is not None:
                events.append(self._event(state, check, result, change, start, end, n,
                                          aggregate, estimated, extra))
        if self.on_window is not None:
            self.on_window(PerformanceWindow(state.model, check, start, end, n,
                                             aggregate.requests, aggregate.sampled,
                                             aggregate.labelled, tuple(results), estimated,
                                             extra))
        self.events += len(events)
        return events

    def _metrics(self, available: tuple[str, ...]) -> tuple[str, ...]:
        chosen = self.settings.metrics
        return tuple(m for m in available if not chosen or m in chosen)

    def _result(self, state: _ModelState, metric: str, value: float, counts: WindowCounts,
                estimated: bool, enough: bool) -> MetricResult:
        reference = state.reference
        ref = (reference.estimated if estimated else reference.metrics).get(metric, math.nan)
        configured = self.settings.max_drop if metric in HIGHER_IS_BETTER \
            else self.settings.max_increase
        change = degradation(metric, value, ref, reference.scale)
        floor = state.floors.floor(metric, estimated, counts) if enough else math.inf
        spread = state.floors.spread(metric, estimated, counts) if enough else math.nan
        judged = enough and math.isfinite(change) and math.isfinite(floor)
        return MetricResult(metric, value, ref, change, max(configured, floor), floor, spread,
                            judged)

    def _event(self, state: _ModelState, check: str, result: MetricResult, change: str,
               start: int | None, end: int | None, n: int, aggregate: PerformancePane,
               estimated: Mapping[str, float], extra: Mapping[str, float]) -> SkewEvent:
        configured = result.threshold > result.floor
        evidence: dict[str, Any] = {
            ("estimated" if check == ESTIMATED else "realized"): _num(result.value),
            "reference": _num(result.reference),
            "ci95": [_num(v) for v in result.ci95],
            "noise_floor": _num(result.floor), "noise_floor_applied": not configured,
            "requests": aggregate.requests, "sampled": aggregate.sampled,
            "labelled": aggregate.labelled,
            "label_coverage": _num(aggregate.labelled / aggregate.sampled)
            if aggregate.sampled else None,
        }
        if check == PERFORMANCE and result.metric in estimated:
            evidence["estimated"] = _num(estimated[result.metric])
        if result.metric == "roc_auc" and "roc_auc_bound" in extra:
            evidence["roc_auc_bound"] = _num(extra["roc_auc_bound"])
        severity = "info" if change == "skew_resolved" else (
            "critical" if result.degradation >= 2 * result.threshold else "warning")
        reference = state.reference
        return SkewEvent(type=change, model=state.model, feature=self.prediction,
                         kind=reference.task, check=check, metric=result.metric,
                         value=result.degradation, threshold=result.threshold,
                         severity=severity, window_start=start, window_end=end,
                         window_count=n, baseline_id=state.baseline.id,
                         baseline_count=reference.count, evidence=evidence)

    # -- checkpoints -------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        def panes(items: Any) -> list[str]:
            return [base64.b64encode(p.to_bytes()).decode() for p in items]

        return orjson.dumps({
            "schema": "streamskew.performancewindows/v1",
            "closed": self.closed, "shards": self.shards,
            "counters": [self.windows_judged, self.events, self.late_panes],
            "models": {model: {
                "pending": {stage: {str(i): base64.b64encode(p.to_bytes()).decode()
                                    for i, p in s.pending[stage].items()}
                            for stage in (REQUESTS, LABELS)},
                "windows": {stage: panes(s.windows[stage]) for stage in (REQUESTS, LABELS)},
                "hysteresis": [[c, m, h.active, h.streak] for (c, m), h in s.hysteresis.items()],
                "estimates": [[end, values] for end, values in s.estimates.items()],
            } for model, s in self.models.items()},
        })

    def restore(self, data: bytes) -> None:
        raw = orjson.loads(data)
        if raw.get("schema") != "streamskew.performancewindows/v1":
            raise ValueError("not a performance-windows snapshot")
        self.closed = dict(raw["closed"])
        self.shards = {k: (v[0], v[1]) for k, v in raw["shards"].items()}
        self.windows_judged, self.events, self.late_panes = raw["counters"]
        self.models = {}
        for model, saved in raw["models"].items():
            state = self._model(model)
            assert state is not None
            for stage in (REQUESTS, LABELS):
                state.pending[stage] = {int(i): PerformancePane.from_bytes(base64.b64decode(p))
                                        for i, p in saved["pending"][stage].items()}
                state.windows[stage] = deque(PerformancePane.from_bytes(base64.b64decode(p))
                                             for p in saved["windows"][stage])
            for check, metric, active, streak in saved["hysteresis"]:
                d = self.config.detect
                state.hysteresis[(check, metric)] = Hysteresis(d.raise_after, d.resolve_after,
                                                               d.resolve_ratio, active, streak)
            state.estimates = {end: dict(values) for end, values in saved["estimates"]}


def _num(value: float) -> float | None:
    value = float(value)
    return float(f"{value:.6g}") if math.isfinite(value) else None
