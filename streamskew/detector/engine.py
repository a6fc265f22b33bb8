"""The engine: records in, skew events out. It knows nothing of Kafka or files.

Records are placed in event-time panes aligned to the epoch. The watermark is the largest
event time seen minus ``allowed_lateness``; a pane closes when the watermark passes its end,
and each close slides the window of every model and judges it. A record for a pane that has
already closed is counted as late, not folded in. Because panes are aligned to the epoch and
closing depends only on event times, a replay of the same records gives the same windows and
so the same events (and event ids) as the live run did.

Without event times (no timestamp path, or none in the input) the whole input is one window,
judged by :meth:`Detector.flush`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..baseline import Baseline, CategoricalBaseline
from ..config import Config
from ..records import NO_TIME, BadRecord, Columns, Decoder, Reason
from .checks import CheckResult, Judge
from .events import SkewEvent
from .hysteresis import Hysteresis
from .window import Pane, SlidingWindow

__all__ = ["DEFAULT_MODEL", "Detector", "DetectorStats", "WindowResult"]

DEFAULT_MODEL = "default"
MAX_FUTURE_MS = 86_400_000  # event times more than a day ahead of the clock are bad
WHOLE_INPUT = -1  # the single pane used without event times


@dataclass
class DetectorStats:
    """Counters for the summary line, the metrics endpoint and the report."""

    records: int = 0
    accepted: int = 0
    bad: dict[str, int] = field(default_factory=dict)  # rejected records, by reason
    field_errors: dict[str, int] = field(default_factory=dict)  # records used in part
    late: int = 0
    windows: int = 0
    events: int = 0

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    def summary(self) -> str:
        """One line for people: what came in, what was rejected and why, what fired."""
        def listing(counts: dict[str, int]) -> str:
            return f" ({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))})" \
                if counts else ""
        return (f"records={self.records} accepted={self.accepted} "
                f"rejected={self.bad_total}{listing(self.bad)} "
                f"field_errors={sum(self.field_errors.values())}{listing(self.field_errors)} "
                f"late={self.late} windows={self.windows} events={self.events}")


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
    """Panes, window, judge and hysteresis of one model."""

    def __init__(self, model: str, baseline: Baseline, config: Config) -> None:
        self.model = model
        self.baseline = baseline
        self.config = config
        self.judge = Judge(config, baseline)
        self.window = SlidingWindow(config.window.panes, baseline)
        self.open: dict[int, Pane] = {}
        self.hysteresis: dict[tuple[str, str, str], Hysteresis] = {}

    def pane(self, index: int) -> Pane:
        pane = self.open.get(index)
        if pane is None:
            pane = self.open[index] = Pane.empty(index, self.baseline)
        return pane

    def state(self, key: tuple[str, str, str]) -> Hysteresis:
        state = self.hysteresis.get(key)
        if state is None:
            d = self.config.detect
            state = self.hysteresis[key] = Hysteresis(d.raise_after, d.resolve_after,
                                                      d.resolve_ratio)
        return state


class Detector:
    """Compare serving records with the baseline, window by window, and emit skew events.

    ``baseline`` is one :class:`Baseline` for every model, or a mapping model -> baseline
    (with an optional ``"default"`` entry for the others).

    >>> from streamskew import Baseline, Config, Detector
    >>> import random
    >>> rng = random.Random(7)
    >>> baseline = Baseline.from_columns({"amount": [rng.gauss(0, 1) for _ in range(5000)]})
    >>> config = Config.from_dict({"message": {"timestamp": ""}, "detect": {"min_count": 100}})
    >>> detector = Detector(config, baseline)
    >>> _ = detector.process([{"features": {"amount": rng.gauss(2, 1)}} for _ in range(2000)])
    >>> [(e.type, e.feature, e.check) for e in detector.flush()]
    [('skew_detected', 'amount', 'distribution'), ('skew_detected', 'amount', 'out_of_range')]
    """

    def __init__(self, config: Config, baseline: Baseline | Mapping[str, Baseline],
                 on_bad_record: Callable[[BadRecord], None] | None = None,
                 on_window: Callable[[WindowResult], None] | None = None) -> None:
        self.config = config
        self.baselines: dict[str, Baseline] = (
            {DEFAULT_MODEL: baseline} if isinstance(baseline, Baseline) else dict(baseline))
        if not self.baselines:
            raise ValueError("a Detector needs at least one baseline")
        schema: dict[str, str] = {}
        for b in self.baselines.values():
            for name, kind in b.schema.items():
                schema.setdefault(name, kind)
        self.decoder = Decoder(config.message, schema)
        self.on_bad_record = on_bad_record
        self.on_window = on_window
        self.stats = DetectorStats()
        self.pane_ms = config.window.pane_ms
        self.lateness_ms = config.window.allowed_lateness_ms
        self.models: dict[str, _ModelState] = {}
        self.event_time: bool | None = None  # decided by the first accepted records
        self.max_time = NO_TIME
        self.closed_through: int | None = None  # highest pane index closed

    # -- input -------------------------------------------------------------------------------

    def process(self, messages: Sequence[bytes | str | Mapping[str, Any]],
                timestamps: Sequence[int] | np.ndarray | None = None) -> list[SkewEvent]:
        """Feed a batch of messages (raw bytes, JSON text or dicts); returns new events.

        ``timestamps`` (epoch ms, one per message) are the event times of messages without
        a timestamp of their own, e.g. Kafka record timestamps.
        """
        if not messages:
            return []
        if all(isinstance(m, bytes) for m in messages):
            columns, bad = self.decoder.decode(messages)  # type: ignore[arg-type]
        else:
            columns, bad = self.decoder.decode_objects(messages)
        self.stats.records += len(messages)
        if timestamps is not None:
            fallback = np.asarray(timestamps, dtype=np.int64)[columns.positions]
            columns.timestamps = np.where(columns.timestamps == NO_TIME, fallback,
                                          columns.timestamps)
        columns, bad = self._check_times(columns, bad, messages)
        for record in bad:
            counts = self.stats.field_errors if record.used else self.stats.bad
            counts[record.reason] = counts.get(record.reason, 0) + 1
            if self.on_bad_record is not None:
                self.on_bad_record(record)
        self.stats.accepted += columns.count
        if not columns.count:
            return []
        if self.event_time:
            return self._add_timed(columns)
        self._add_to_panes(columns, np.full(columns.count, WHOLE_INPUT))
        return []

    def _check_times(self, columns: Columns, bad: list[BadRecord],
                     messages: Sequence[Any]) -> tuple[Columns, list[BadRecord]]:
        """Decide event-time mode on first data; reject records without a usable time."""
        has_time = columns.timestamps != NO_TIME
        if self.event_time is None and columns.count:
            self.event_time = bool(has_time.any())
        if not self.event_time:
            return columns, bad
        now = int(time.time() * 1000)
        future = columns.timestamps > now + MAX_FUTURE_MS
        reject = ~has_time | future
        if not reject.any():
            return columns, bad
        for row in np.flatnonzero(reject):
            position = int(columns.positions[row])
            raw = messages[position] if isinstance(messages[position], bytes) else b""
            reason, detail = ((Reason.MISSING_TIMESTAMP, "no event time in the message")
                              if not has_time[row] else
                              (Reason.BAD_TIMESTAMP, "more than a day in the future"))
            bad.append(BadRecord(position, reason, detail, raw))
        # Field-level reports for rejected records would double count them.
        rejected = {int(columns.positions[r]) for r in np.flatnonzero(reject)}
        bad = [b for b in bad if not (b.used and b.position in rejected)]
        return columns.take(np.flatnonzero(~reject)), bad

    def _add_timed(self, columns: Columns) -> list[SkewEvent]:
        panes = columns.timestamps // self.pane_ms
        if self.closed_through is not None:
            late = panes <= self.closed_through
            if late.any():
                self.stats.late += int(late.sum())
                keep = np.flatnonzero(~late)
                columns, panes = columns.take(keep), panes[keep]
        if columns.count:
            self._add_to_panes(columns, panes)
            self.max_time = max(self.max_time, int(columns.timestamps.max()))
        return self.advance_watermark(self.max_time - self.lateness_ms)

    def _add_to_panes(self, columns: Columns, panes: np.ndarray) -> None:
        for model, rows in self._by_model(columns):
            state = self._model(model)
            part = columns if rows is None else columns.take(rows)
            pane_ids = panes if rows is None else panes[rows]
            for index in np.unique(pane_ids):
                in_pane = np.flatnonzero(pane_ids == index)
                subset = part if len(in_pane) == part.count else part.take(in_pane)
                self._fold(state.pane(int(index)), subset, state.baseline)

    def _by_model(self, columns: Columns) -> Iterable[tuple[str, np.ndarray | None]]:
        if columns.models is None:
            return [(DEFAULT_MODEL, None)]
        models = columns.models
        first = models[0]
        if all(m == first for m in models):  # the common case: one model
            return [(first if first is not None else DEFAULT_MODEL, None)]
        names = np.array([m if m is not None else DEFAULT_MODEL for m in models], dtype=object)
        return [(str(name), np.flatnonzero(names == name)) for name in sorted(set(names))]

    def _model(self, model: str) -> _ModelState:
        state = self.models.get(model)
        if state is None:
            baseline = self.baselines.get(model) or self.baselines.get(DEFAULT_MODEL) \
                or next(iter(self.baselines.values()))
            state = self.models[model] = _ModelState(model, baseline, self.config)
        return state

    @staticmethod
    def _fold(pane: Pane, columns: Columns, baseline: Baseline) -> None:
        pane.records += columns.count
        for name, feature in baseline.features.items():
            summary = pane.summaries[name]
            invalid = columns.invalid.get(name)
            n_invalid = int(invalid.sum()) if invalid is not None else 0
            if isinstance(feature, CategoricalBaseline):
                values = columns.categorical.get(name)
                if values is None:  # the decoder saw this name as numeric (another model)
                    values = np.full(columns.count, None, dtype=object)
            else:
                values = columns.numeric.get(name)
                if values is None:
                    values = np.full(columns.count, np.nan)
            summary.update(values, invalid=n_invalid)
        for name, count in columns.new_features.items():
            if count:
                pane.new_features[name] = pane.new_features.get(name, 0) + count

    # -- time --------------------------------------------------------------------------------

    def advance_watermark(self, watermark: int) -> list[SkewEvent]:
        """Close every pane whose end is at or before ``watermark``; returns the events.

        Sources call this directly to let time pass when a partition is idle.
        """
        if watermark == NO_TIME or not self.event_time:
            return []
        target = watermark // self.pane_ms - 1  # last pane whose end <= watermark
        if self.closed_through is None:
            first_open = min((min(s.open) for s in self.models.values() if s.open),
                             default=None)
            if first_open is None or first_open > target:
                return []
            self.closed_through = first_open - 1
        events: list[SkewEvent] = []
        while self.closed_through < target:
            index = self._next_pane_to_close(target)
            for state in self.models.values():
                events.extend(self._close(state, index))
            self.closed_through = index
        return events

    def _next_pane_to_close(self, target: int) -> int:
        """The next pane, skipping stretches where every window is empty anyway."""
        index = self.closed_through + 1
        if any(s.window.has_records for s in self.models.values()):
            return index
        upcoming = [i for s in self.models.values() for i in s.open if i >= index]
        return min(min(upcoming, default=target), target) if upcoming else target

    def _close(self, state: _ModelState, index: int) -> list[SkewEvent]:
        window = state.window
        if window.panes and index - window.panes[-1].index > window.size:
            window.panes.clear()  # a long gap: everything in the window expired
            window.aggregate = Pane.empty(index, state.baseline)
        pane = state.open.pop(index, None) or Pane.empty(index, state.baseline)
        window.push(pane)
        if not window.has_records:
            return []
        start = (index - window.size + 1) * self.pane_ms
        end = (index + 1) * self.pane_ms
        return self._judge(state, start, end)

    def flush(self) -> list[SkewEvent]:
        """End of input: close every open pane (or judge the whole input as one window)."""
        if self.event_time:
            last = max((max(s.open) for s in self.models.values() if s.open), default=None)
            if last is None:
                return []
            return self.advance_watermark((last + 1) * self.pane_ms)
        events: list[SkewEvent] = []
        for state in self.models.values():
            pane = state.open.pop(WHOLE_INPUT, None)
            if pane is None:
                continue
            state.window.push(pane)
            events.extend(self._judge(state, None, None))
        return events

    # -- judging -----------------------------------------------------------------------------

    def _judge(self, state: _ModelState, start: int | None, end: int | None
               ) -> list[SkewEvent]:
        self.stats.windows += 1
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
        self.stats.events += len(events)
        return events

    def _event(self, state: _ModelState, result: CheckResult, change: str,
               start: int | None, end: int | None) -> SkewEvent:
        baseline = state.baseline
        summary = state.window.aggregate.summaries.get(result.feature)
        evidence = state.judge.evidence(result.feature, summary) if summary is not None \
            else {"records_with_feature": round(result.value * result.count)}
        if summary is not None:
            evidence["noise_floor_applied"] = result.threshold > self._configured(
                state, result)
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

    def _configured(self, state: _ModelState, result: CheckResult) -> float:
        if result.check == "distribution":
            return state.judge.metric_of(result.feature)[1]
        return -math.inf
