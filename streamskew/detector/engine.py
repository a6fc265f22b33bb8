"""The engine in your process: records in, skew events out. It knows nothing of Kafka or files.

:class:`Detector` feeds a :class:`~streamskew.detector.sources.SourceCoordinator`: each named
source (one by default) gets a :class:`~streamskew.detector.builder.PaneBuilder` (records ->
event-time panes, lateness decided per record), and the coordinator closes a pane for the
:class:`~streamskew.detector.evaluator.Evaluator` once every source has passed it. The Kafka
service and replay use the same pieces, so the code that reaches a verdict is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..baseline import Baseline
from ..config import Config
from ..records import BadRecord
from .builder import DEFAULT_MODEL, BuilderStats, PaneBuilder
from .evaluator import Evaluator, WindowResult
from .events import SkewEvent
from .models import ModelBaselines
from .sources import SourceCoordinator

if TYPE_CHECKING:
    from ..performance import JoinCounts, PerformanceMonitor, PerformanceWindow

__all__ = ["DEFAULT_MODEL", "DEFAULT_SOURCE", "Detector", "DetectorStats", "WindowResult",
           "next_free_pane"]

DEFAULT_SOURCE = "input"


@dataclass
class DetectorStats(BuilderStats):
    """Record counters of the builder(s) plus what the evaluator did."""

    windows: int = 0
    events: int = 0
    labels: JoinCounts | None = None  # the label join's counters (with [labels])
    # The most frequent model names (or model/version) turned away, with their record
    # counts: a fixed-size table, whatever the number of distinct names.
    unknown_names: list[tuple[str, int]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people: what came in, what was rejected and why, what fired."""
        unknown = ", ".join(f"{n}={c}" for n, c in self.unknown_names[:5])

        def listing(counts: dict[str, int]) -> str:
            return f" ({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))})" \
                if counts else ""
        return (f"records={self.records} accepted={self.accepted} "
                f"rejected={self.bad_total}{listing(self.bad)} "
                f"field_errors={sum(self.field_errors.values())}{listing(self.field_errors)} "
                f"late={self.late} windows={self.windows} events={self.events}"
                + (f"; most frequent unknown models: {unknown}" if unknown else "")
                + (f"; {self.labels.summary()}" if self.labels is not None else ""))

    @classmethod
    def of(cls, builders: BuilderStats, evaluator: Evaluator) -> DetectorStats:
        stats = cls()
        stats.merge(builders)
        # Records in partial panes that reached the evaluator after their pane had closed
        # (an idle source woke up) were not used either.
        stats.late += evaluator.late_records
        stats.windows, stats.events = evaluator.windows, evaluator.events
        return stats


def next_free_pane(builders: Iterable[PaneBuilder], evaluators: Iterable[Evaluator]) -> int:
    """The first pane index that none of ``builders`` (open panes) and ``evaluators``
    (pending or closed panes) holds: a baseline set from there on mixes no pane's bins."""
    seen = [index for builder in builders for _, index in builder.open]
    for evaluator in evaluators:
        seen += [i for s in evaluator.models.values() for i in s.pending]
        if evaluator.closed_through is not None:
            seen.append(evaluator.closed_through)
    return max(seen, default=-1) + 1


class Detector:
    """Compare serving records with the baseline, window by window, and emit skew events.

    ``baseline`` is one :class:`Baseline` for every model, or a mapping model -> baseline
    (with an optional ``"default"`` entry for the others). Records come from one source by
    default; name sources (``source=``) when several feed one detector, e.g. two servers'
    logs: a pane is judged once every source has passed it.

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
                 on_window: Callable[[WindowResult], None] | None = None,
                 on_performance_window: Callable[[PerformanceWindow], None] | None = None,
                 on_bad_label: Callable[[BadRecord], None] | None = None) -> None:
        self.config = config
        if not isinstance(baseline, Baseline) and not baseline:
            raise ValueError("a Detector needs at least one baseline")
        self.baselines = ModelBaselines.of(
            {DEFAULT_MODEL: baseline} if isinstance(baseline, Baseline) else baseline, config)
        report = None
        if on_bad_record is not None:
            def report(source: str, record: BadRecord) -> None:
                on_bad_record(record)
        self.sources = SourceCoordinator(config, self.baselines, on_bad_record=report,
                                         on_window=on_window)
        # Performance skew, with [labels] in the config: requests also feed the label join
        # (ids, event times, predictions), labels come through process_labels.
        self.performance: PerformanceMonitor | None = None
        if config.labels is not None:
            from ..performance import PerformanceMonitor

            self.performance = PerformanceMonitor(config, self.baselines,
                                                  on_window=on_performance_window,
                                                  on_bad_label=on_bad_label)

    @property
    def evaluator(self) -> Evaluator:
        return self.sources.evaluator

    @property
    def stats(self) -> DetectorStats:
        stats = DetectorStats.of(self.sources.builder_stats, self.sources.evaluator)
        if self.performance is not None:
            stats.labels = self.performance.counts
            stats.events += self.performance.windows.events
        stats.unknown_names = self.baselines.unknown.most_common()
        return stats

    def set_baseline(self, model: str, version: str | None, baseline: Baseline,
                     from_pane: int | None = None) -> int:
        """Add or replace the baseline of ``model`` (``version`` None: every version of the
        model; ``model="default"``: every model without one of its own) without a restart.

        It applies from pane ``from_pane`` on (default: the pane after every pane this
        detector has open or pending, so no pane mixes two baselines' bins); earlier panes
        are judged against the baseline they were summarized with. The window of that
        model starts afresh at the first pane judged against it (its hysteresis stays, so
        a raised check resolves against the new baseline). Returns ``from_pane``."""
        if from_pane is None:
            from_pane = self.next_pane()
        self.baselines.set_baseline(model, version, baseline, from_pane)
        return from_pane

    def next_pane(self) -> int:
        """The first pane index that no builder or the evaluator holds yet."""
        return next_free_pane(self.sources.builders.values(), [self.sources.evaluator])

    def process(self, messages: Sequence[bytes | str | Mapping[str, Any]],
                timestamps: Sequence[int] | np.ndarray | None = None,
                ids: Sequence[int] | np.ndarray | None = None,
                source: str = DEFAULT_SOURCE) -> list[SkewEvent]:
        """Feed a batch of messages (raw bytes, JSON text or dicts); returns new events.

        ``timestamps`` (epoch ms, one per message) are the event times of messages without
        a timestamp of their own, e.g. Kafka record timestamps. ``ids`` (e.g. line numbers)
        are what ``on_bad_record`` reports as a rejected record's ``position``; without them
        records are numbered by their running count in their source.
        """
        events = self.sources.add(source, messages, timestamps, ids)
        if self.performance is not None:
            events += self.performance.add_requests(messages, timestamps, source)
        return events

    def process_labels(self, labels: Sequence[bytes | str | Mapping[str, Any]],
                       timestamps: Sequence[int] | np.ndarray | None = None,
                       ids: Sequence[int] | np.ndarray | None = None,
                       source: str = "labels") -> list[SkewEvent]:
        """Feed a batch of label records (``[labels]`` paths: request id, label, label
        time); returns new ``performance`` / ``estimated_performance`` events.

        ``timestamps`` are the label times of records without one of their own (Kafka
        record timestamps); ``ids`` are what ``on_bad_label`` reports as ``position``.
        """
        if self.performance is None:
            from ..errors import StreamskewError

            raise StreamskewError("labels need a [labels] section in the config and a "
                                  "baseline built with `baseline build --label COL`")
        return self.performance.add_labels(labels, timestamps, ids, source)

    def advance_watermark(self, watermark: int, source: str = DEFAULT_SOURCE
                          ) -> list[SkewEvent]:
        """Let event time pass without records (an idle source)."""
        events = self.sources.advance(source, watermark)
        if self.performance is not None:
            events += self.performance.advance_requests(source, watermark)
        return events

    def flush(self) -> list[SkewEvent]:
        """End of input: close every open pane (or judge the whole input as one window);
        with labels, every label that will come has come."""
        if not self.sources.builders:
            self.sources.builder(DEFAULT_SOURCE)
        events = self.sources.end_of_input()
        if self.performance is not None:
            events += self.performance.finish()
        return events
