"""Stage 2 of the engine: sealed panes from every source -> windows -> skew events.

The :class:`Evaluator` merges the partial panes that sources (files, Kafka partitions, other
processes) sealed for the same model and pane, and closes pane ``i`` once every source's
watermark has passed its end: then no source can add to it any more, so its content is
final and the same whichever process evaluates it. Each close slides the model's window by
one pane and judges it; hysteresis turns the judgements into ``skew_detected`` /
``skew_resolved`` events.
"""

from __future__ import annotations

import math
from base64 import b64decode, b64encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

from ..baseline import Baseline
from ..config import Config
from ..records import NO_TIME
from .builder import WHOLE_INPUT, baseline_for
from .checks import CheckResult, Judge
from .events import SkewEvent
from .hysteresis import Hysteresis
from .window import Pane, SlidingWindow

__all__ = ["Evaluator", "WindowResult"]


@dataclass(frozen=True)
class WindowResult:
    """One judged window of one model: the check results (for reports and metrics)."""

    model: str
    start: int | None
    end: int | None
    records: int
    results: tuple[CheckResult, ...]
    window: Pane  # the live aggregate: read it now, copy what you keep
    baseline: Baseline


class _ModelState:
    """Partial panes, window, judge and hysteresis of one model."""

    def __init__(self, model: str, baseline: Baseline, config: Config) -> None:
        self.model = model
        self.baseline = baseline
        self.config = config
        self.judge = Judge(config, baseline)
        self.window = SlidingWindow(config.window.panes, baseline)
        self.pending: dict[int, Pane] = {}
        self.hysteresis: dict[tuple[str, str, str], Hysteresis] = {}

    def state(self, key: tuple[str, str, str]) -> Hysteresis:
        state = self.hysteresis.get(key)
        if state is None:
            d = self.config.detect
            state = self.hysteresis[key] = Hysteresis(d.raise_after, d.resolve_after,
                                                      d.resolve_ratio)
        return state


class Evaluator:
    """Merges sealed panes, closes them in order, judges windows, emits events."""

    def __init__(self, config: Config, baselines: Mapping[str, Baseline],
                 on_window: Callable[[WindowResult], None] | None = None) -> None:
        self.config = config
        self.baselines = baselines
        self.on_window = on_window
        self.pane_ms = config.window.pane_ms
        self.models: dict[str, _ModelState] = {}
        self.closed_through: int | None = None  # highest pane index closed
        self.windows = 0
        self.events = 0
        self.late_panes = 0  # partial panes that came after their pane had closed
        self.late_records = 0  # ... and the records in them

    def _model(self, model: str) -> _ModelState:
        state = self.models.get(model)
        if state is None:
            state = self.models[model] = _ModelState(model, baseline_for(self.baselines, model),
                                                     self.config)
        return state

    def add_pane(self, model: str, index: int, pane: Pane) -> None:
        """Merge one source's sealed pane (counted as late if that pane already closed)."""
        if index != WHOLE_INPUT and self.closed_through is not None \
                and index <= self.closed_through:
            self.late_panes += 1
            self.late_records += pane.records
            return
        state = self._model(model)
        pending = state.pending.get(index)
        if pending is None:
            state.pending[index] = pane
        else:
            pending.merge(pane)

    def advance(self, watermark: int) -> list[SkewEvent]:
        """Close every pane whose end is at or before ``watermark`` (the smallest watermark
        of all sources); returns the events."""
        if watermark == NO_TIME:
            return []
        target = watermark // self.pane_ms - 1  # last pane whose end <= watermark
        if self.closed_through is None:
            first = min((i for s in self.models.values() for i in s.pending if i >= 0),
                        default=None)
            if first is None or first > target:
                return []
            self.closed_through = first - 1
        events: list[SkewEvent] = []
        while self.closed_through < target:
            index = self._next_pane(target)
            for state in self.models.values():
                events.extend(self._close(state, index))
            self.closed_through = index
        return events

    def _next_pane(self, target: int) -> int:
        """The next pane, skipping stretches where every window is empty anyway."""
        assert self.closed_through is not None
        index = self.closed_through + 1
        if any(s.window.has_records for s in self.models.values()):
            return index
        upcoming = [i for s in self.models.values() for i in s.pending if i >= index]
        return min(min(upcoming), target) if upcoming else target

    def _close(self, state: _ModelState, index: int) -> list[SkewEvent]:
        window = state.window
        if window.panes and index - window.panes[-1].index > window.size:
            window.panes.clear()  # a long gap: everything in the window expired
            window.aggregate = Pane.empty(index, state.baseline)
        pane = state.pending.pop(index, None) or Pane.empty(index, state.baseline)
        window.push(pane)
        if not window.has_records:
            return []
        start = (index - window.size + 1) * self.pane_ms
        return self._judge(state, start, (index + 1) * self.pane_ms)

    def flush(self) -> list[SkewEvent]:
        """End of input: close every pending pane (or judge the whole input as one window)."""
        events: list[SkewEvent] = []
        for state in self.models.values():
            pane = state.pending.pop(WHOLE_INPUT, None)
            if pane is not None:
                state.window.push(pane)
                events.extend(self._judge(state, None, None))
        last = max((i for s in self.models.values() for i in s.pending), default=None)
        if last is not None:
            events.extend(self.advance((last + 1) * self.pane_ms))
        return events

    # -- judging -----------------------------------------------------------------------------

    def _judge(self, state: _ModelState, start: int | None, end: int | None
               ) -> list[SkewEvent]:
        self.windows += 1
        aggregate = state.window.aggregate
        results = tuple(state.judge.judge(aggregate))
        events: list[SkewEvent] = []
        for result in results:
            if not result.judged or math.isnan(result.value):
                continue
            change = state.state(result.key).observe(result.value, result.threshold)
            if change is not None:
                events.append(self._event(state, result, change, start, end))
        if self.on_window is not None:
            self.on_window(WindowResult(state.model, start, end, aggregate.records, results,
                                        aggregate, state.baseline))
        self.events += len(events)
        return events

    def _event(self, state: _ModelState, result: CheckResult, change: str,
               start: int | None, end: int | None) -> SkewEvent:
        baseline = state.baseline
        summary = state.window.aggregate.summaries.get(result.feature)
        if summary is not None:
            evidence = state.judge.evidence(result.feature, summary)
            if result.check == "distribution":
                evidence["noise_floor_applied"] = \
                    result.threshold > state.judge.metric_of(result.feature)[1]
        else:
            evidence = {"records_with_feature": round(result.value * result.count)}
        if change == "skew_resolved":
            severity = "info"
        else:
            severity = "critical" if result.value >= 2 * result.threshold else "warning"
        return SkewEvent(type=change, model=state.model, feature=result.feature,
                         kind=result.kind, check=result.check, metric=result.metric,
                         value=result.value, threshold=result.threshold, severity=severity,
                         window_start=start, window_end=end, window_count=result.count,
                         baseline_id=baseline.id, baseline_count=baseline.count,
                         evidence=evidence)

    # -- checkpoints -------------------------------------------------------------------------

    def state_bytes(self) -> bytes:
        """Everything needed to continue elsewhere: windows, pending panes, hysteresis."""
        return orjson.dumps({
            "closed_through": self.closed_through,
            "models": {
                model: {
                    "window": [b64encode(p.to_bytes()).decode() for p in s.window.panes],
                    "pending": {str(i): b64encode(p.to_bytes()).decode()
                                for i, p in s.pending.items()},
                    "hysteresis": [[*key, h.active, h.streak]
                                   for key, h in s.hysteresis.items()],
                } for model, s in self.models.items()},
        })

    def restore(self, data: bytes) -> None:
        """Continue from :meth:`state_bytes`. Raises BaselineMismatch, and changes nothing,
        when the saved panes were summarized against another baseline."""
        raw = orjson.loads(data)
        models: dict[str, _ModelState] = {}
        for model, saved in raw["models"].items():
            state = _ModelState(model, baseline_for(self.baselines, model), self.config)
            for encoded in saved["window"]:
                state.window.push(Pane.from_bytes(b64decode(encoded), state.baseline))
            state.pending = {int(i): Pane.from_bytes(b64decode(p), state.baseline)
                             for i, p in saved["pending"].items()}
            for feature, check, metric, active, streak in saved["hysteresis"]:
                h = state.state((feature, check, metric))
                h.active, h.streak = active, streak
            models[model] = state
        self.models = models
        self.closed_through = raw["closed_through"]
