"""The engine for one source: records in, skew events out. It knows nothing of Kafka or files.

:class:`Detector` wires a :class:`~streamskew.detector.builder.PaneBuilder` (records ->
event-time panes, sealed by the watermark) to an
:class:`~streamskew.detector.evaluator.Evaluator` (panes -> windows -> checks -> events).
The Kafka service runs one builder per partition and merges their panes in one evaluator;
the code that reaches a verdict is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..baseline import Baseline
from ..config import Config
from ..records import BadRecord
from .builder import DEFAULT_MODEL, BuilderStats, PaneBuilder, SealedPane
from .evaluator import Evaluator, WindowResult
from .events import SkewEvent

__all__ = ["DEFAULT_MODEL", "Detector", "DetectorStats", "WindowResult"]


@dataclass
class DetectorStats(BuilderStats):
    """Record counters of the builder(s) plus what the evaluator did."""

    windows: int = 0
    events: int = 0

    def summary(self) -> str:
        """One line for people: what came in, what was rejected and why, what fired."""
        def listing(counts: dict[str, int]) -> str:
            return f" ({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))})" \
                if counts else ""
        return (f"records={self.records} accepted={self.accepted} "
                f"rejected={self.bad_total}{listing(self.bad)} "
                f"field_errors={sum(self.field_errors.values())}{listing(self.field_errors)} "
                f"late={self.late} windows={self.windows} events={self.events}")

    @classmethod
    def of(cls, builders: Sequence[PaneBuilder], evaluator: Evaluator) -> DetectorStats:
        stats = cls()
        for builder in builders:
            stats.merge(builder.stats)
        stats.windows, stats.events = evaluator.windows, evaluator.events
        return stats


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
        self.builder = PaneBuilder(config, self.baselines, on_bad_record=on_bad_record)
        self.evaluator = Evaluator(config, self.baselines, on_window=on_window)

    @property
    def stats(self) -> DetectorStats:
        return DetectorStats.of([self.builder], self.evaluator)

    def process(self, messages: Sequence[bytes | str | Mapping[str, Any]],
                timestamps: Sequence[int] | np.ndarray | None = None) -> list[SkewEvent]:
        """Feed a batch of messages (raw bytes, JSON text or dicts); returns new events.

        ``timestamps`` (epoch ms, one per message) are the event times of messages without
        a timestamp of their own, e.g. Kafka record timestamps.
        """
        return self._evaluate(self.builder.add(messages, timestamps))

    def advance_watermark(self, watermark: int) -> list[SkewEvent]:
        """Let event time pass without records (an idle source)."""
        return self._evaluate(self.builder.seal_until(watermark))

    def flush(self) -> list[SkewEvent]:
        """End of input: close every open pane (or judge the whole input as one window)."""
        for sealed in self.builder.seal_all():
            self.evaluator.add_pane(sealed.model, sealed.index, sealed.pane)
        return self.evaluator.flush()

    def _evaluate(self, sealed: list[SealedPane]) -> list[SkewEvent]:
        for pane in sealed:
            self.evaluator.add_pane(pane.model, pane.index, pane.pane)
        return self.evaluator.advance(self.builder.watermark)
