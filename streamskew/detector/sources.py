"""Multi-source event time: which sources hold the clock back, and when a pane is final.

A :class:`SourceCoordinator` is the one place where the engine decides that pane ``i`` of
every model is complete and can be judged: when every source's watermark has passed its end.
Sources are named (a file, a Kafka partition ``topic/partition``) and come in two kinds:

- **local** sources feed record batches (:meth:`~SourceCoordinator.add`); the coordinator
  runs a :class:`~streamskew.detector.builder.PaneBuilder` for each, which decides lateness
  per record and seals its panes;
- **remote** sources are built elsewhere (other processes of a Kafka deployment): they send
  sealed panes (:meth:`~SourceCoordinator.add_pane`) and heartbeats
  (:meth:`~SourceCoordinator.heartbeat`).

The rules, for both kinds:

- the clock is the smallest watermark of the sources that are neither *idle* nor *finished*;
  a source that was announced (:meth:`~SourceCoordinator.expect`) but has not reported yet
  holds the clock back, as does one whose watermark is still unknown;
- an idle source (say, a partition that is caught up and silent) stops holding it back
  until it reports again; a finished source can add nothing more;
- when every source left is idle, the clock is the furthest of their watermarks (as
  Flink's watermark valve does when all its inputs are idle): the panes that the leading
  source completed are judged, not held until one of them speaks again;
- when every source has finished, the input has ended: every pending pane is judged.

Nothing here reads a wall clock: what is idle is decided by whoever feeds the coordinator
(the Kafka service, from its own clock), so verdicts are a pure function of the input.

>>> from streamskew import Baseline, Config
>>> import random
>>> rng = random.Random(3)
>>> baseline = Baseline.from_columns({"x": [rng.gauss(0, 1) for _ in range(5000)]})
>>> config = Config.from_dict({"window": {"size": "2m", "pane": "1m",
...                                       "allowed_lateness": "0s"},
...                            "detect": {"min_count": 100}})
>>> sources = SourceCoordinator(config, {"default": baseline})
>>> sources.expect(["a", "b"])
>>> batch = [{"timestamp": i * 100, "features": {"x": rng.gauss(3, 1)}} for i in range(1800)]
>>> sources.add("a", batch)  # "b" has not reported: nothing can close
[]
>>> events = sources.add("b", batch[:700])  # b passes 1m: pane 0 is complete everywhere
>>> sorted({(e.type, e.check) for e in events})[:1], sources.evaluator.closed_through
([('skew_detected', 'distribution')], 0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ..baseline import Baseline
from ..config import Config
from ..records import NO_TIME, BadRecord
from .builder import BuilderStats, PaneBuilder, SealedPane
from .clock import combined_watermark
from .evaluator import Evaluator, WindowResult
from .events import SkewEvent
from .window import Pane

__all__ = ["SourceCoordinator", "SourceMark"]


@dataclass
class SourceMark:
    """What the coordinator knows of one source's progress."""

    watermark: int = NO_TIME
    idle: bool = False
    final: bool = False

    @property
    def holds_clock(self) -> bool:
        return not (self.idle or self.final)


class SourceCoordinator:
    """Owns multi-source event time and hands complete panes to the evaluator."""

    def __init__(self, config: Config, baselines: Mapping[str, Baseline],
                 on_bad_record: Callable[[str, BadRecord], None] | None = None,
                 on_window: Callable[[WindowResult], None] | None = None,
                 time_range: tuple[int, int | None] | None = None,
                 evaluator: Evaluator | None = None) -> None:
        self.config = config
        self.baselines = baselines
        self.on_bad_record = on_bad_record
        self.time_range = time_range
        self.evaluator = evaluator or Evaluator(config, baselines, on_window=on_window)
        self.builders: dict[str, PaneBuilder] = {}
        self.marks: dict[str, SourceMark] = {}
        self.done = False  # every source finished and the evaluation flushed

    # -- local sources -----------------------------------------------------------------------

    def builder(self, source: str) -> PaneBuilder:
        """The builder of a local source (created, and the source announced, on first use)."""
        builder = self.builders.get(source)
        if builder is None:
            report = None
            if self.on_bad_record is not None:
                callback = self.on_bad_record

                def report(record: BadRecord, source: str = source) -> None:
                    callback(source, record)
            builder = self.builders[source] = PaneBuilder(
                self.config, self.baselines, on_bad_record=report, time_range=self.time_range)
            self.marks.setdefault(source, SourceMark())
        return builder

    def add(self, source: str, messages: Sequence[bytes | str | Mapping[str, Any]],
            timestamps: Sequence[int] | np.ndarray | None = None,
            ids: Sequence[int] | np.ndarray | None = None) -> list[SkewEvent]:
        """A batch of one local source's records (in its order); returns new events."""
        builder = self.builder(source)
        sealed = builder.add(messages, timestamps, ids)
        return self._local(source, builder, sealed)

    def advance(self, source: str, watermark: int) -> list[SkewEvent]:
        """Let a local source's event time pass without records."""
        builder = self.builder(source)
        return self._local(source, builder, builder.advance_to(watermark))

    def finish(self, source: str) -> list[SkewEvent]:
        """A local source's input has ended: seal everything it holds."""
        builder = self.builder(source)
        for sealed in builder.seal_all():
            self._pane(sealed)
        self.marks[source] = SourceMark(builder.watermark, final=True)
        return self._advance()

    def end_of_input(self) -> list[SkewEvent]:
        """No source will send more: finish every local source, judge every pending pane."""
        events: list[SkewEvent] = []
        for source in self.builders:
            if not self.marks[source].final:
                events.extend(self.finish(source))
        for mark in self.marks.values():
            mark.final = True
        return events + self._advance()

    def _local(self, source: str, builder: PaneBuilder, sealed: list[SealedPane]
               ) -> list[SkewEvent]:
        for pane in sealed:
            self._pane(pane)
        mark = self.marks[source]
        mark.watermark, mark.idle = builder.watermark, False
        return self._advance()

    # -- remote sources ----------------------------------------------------------------------

    def expect(self, sources: Iterable[str]) -> None:
        """Sources that must report before any pane closes (e.g. every partition)."""
        for source in sources:
            self.marks.setdefault(source, SourceMark())

    def add_pane(self, source: str, model: str, index: int, pane: Pane) -> None:
        """A pane that a remote source sealed (its watermark follows in a heartbeat)."""
        self.marks.setdefault(source, SourceMark())
        self._pane(SealedPane(model, index, pane))

    def heartbeat(self, source: str, watermark: int, idle: bool = False,
                  final: bool = False) -> list[SkewEvent]:
        """A source's progress: its watermark (never moves back), idle, or finished."""
        mark = self.marks.setdefault(source, SourceMark())
        mark.watermark = max(mark.watermark, watermark)
        mark.idle = idle
        mark.final = mark.final or final
        return self._advance()

    # -- the clock ---------------------------------------------------------------------------

    @property
    def watermark(self) -> int:
        """Event time up to which every source holding the clock is complete."""
        marks = self.marks.values()
        return combined_watermark([m.watermark for m in marks if m.holds_clock],
                                  (m.watermark for m in marks if m.idle))

    def _pane(self, sealed: SealedPane) -> None:
        self.evaluator.add_pane(sealed.model, sealed.index, sealed.pane)

    def _advance(self) -> list[SkewEvent]:
        if self.done or not self.marks:
            return []
        if all(m.final for m in self.marks.values()):
            self.done = True
            return self.evaluator.flush()
        watermark = self.watermark
        if watermark == NO_TIME:  # someone holding the clock has not reported yet
            return []
        return self.evaluator.advance(watermark)

    # -- counters and checkpoints -------------------------------------------------------------

    @property
    def builder_stats(self) -> BuilderStats:
        stats = BuilderStats()
        for builder in self.builders.values():
            stats.merge(builder.stats)
        return stats

    def snapshot(self) -> bytes:
        """The clock of every source and the evaluator (local builders checkpoint apart)."""
        header = {"marks": {s: [m.watermark, m.idle, m.final] for s, m in self.marks.items()},
                  "done": self.done, "windows": self.evaluator.windows,
                  "events": self.evaluator.events}
        return orjson.dumps(header) + b"\n" + self.evaluator.state_bytes()

    def restore(self, data: bytes) -> None:
        """Continue from :meth:`snapshot`; raises BaselineMismatch when the evaluator's panes
        were summarized against another baseline."""
        head, _, state = data.partition(b"\n")
        header = orjson.loads(head)
        # The clocks first: they hold whatever the panes were summarized against.
        self.marks = {s: SourceMark(w, i, f) for s, (w, i, f) in header["marks"].items()}
        self.done = header["done"]
        self.evaluator.windows = header["windows"]
        self.evaluator.events = header["events"]
        self.evaluator.restore(state)
