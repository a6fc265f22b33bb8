"""Event-time panes and the sliding window made of the last ``size`` of them.

A :class:`Pane` holds every feature's summary for records whose event time falls in
``[index * pane_ms, (index + 1) * pane_ms)``. Panes merge (partial panes from several
partitions or processes become one) and serialize to bytes (state checkpoints, the panes
topic). A :class:`SlidingWindow` keeps the last ``size`` panes and their aggregate: sliding by
one pane adds the new one and subtracts the expired one, so the cost is O(bins), not
O(records) or O(panes * bins).
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from ..baseline import Baseline
from ..sketch.categorical import CategoricalSummary, merge_heavy_hitters
from ..sketch.numeric import NumericSummary

__all__ = ["BaselineMismatch", "Pane", "SlidingWindow"]

Summary = NumericSummary | CategoricalSummary


class BaselineMismatch(ValueError):
    """A pane summarized against one baseline met another: its bins mean something else."""


@dataclass
class Pane:
    """Summaries of one model's records in one pane (or, aggregated, in one window)."""

    index: int
    records: int = 0
    summaries: dict[str, Summary] = field(default_factory=dict)
    new_features: dict[str, int] = field(default_factory=dict)
    baseline_id: str = ""  # the baseline whose bins the summaries count over

    @classmethod
    def empty(cls, index: int, baseline: Baseline) -> Pane:
        return cls(index, 0, {name: f.layout.empty() for name, f in baseline.monitored.items()},
                   baseline_id=baseline.id)

    def merge(self, other: Pane) -> None:
        """Add ``other`` (same baseline) into this pane."""
        if other.baseline_id != self.baseline_id:
            raise BaselineMismatch(f"cannot merge a pane summarized against baseline "
                                   f"{other.baseline_id} into one of baseline {self.baseline_id}")
        self.records += other.records
        for name, summary in other.summaries.items():
            self.summaries[name].merge(summary)
        for name, count in other.new_features.items():
            self.new_features[name] = self.new_features.get(name, 0) + count

    def subtract(self, other: Pane) -> None:
        self.records -= other.records
        for name, summary in other.summaries.items():
            self.summaries[name].subtract(summary)
        for name, count in other.new_features.items():
            left = self.new_features.get(name, 0) - count
            if left:
                self.new_features[name] = left
            else:
                self.new_features.pop(name, None)

    def copy(self) -> Pane:
        return Pane(self.index, self.records,
                    {name: s.copy() for name, s in self.summaries.items()},
                    dict(self.new_features), self.baseline_id)

    def to_bytes(self) -> bytes:
        """Serialize, zlib-compressed (the baseline supplies the layouts when reading back).

        Panes travel through Kafka (panes topic, checkpoints): compression keeps a window of
        many features far below Kafka's 1 MB default message size."""
        parts = [s.to_bytes() for s in self.summaries.values()]
        header = orjson.dumps({
            "index": self.index, "records": self.records, "new_features": self.new_features,
            "baseline": self.baseline_id,
            "summaries": [[name, len(part)] for name, part in zip(self.summaries, parts,
                                                                  strict=True)]})
        return zlib.compress(struct.pack("<I", len(header)) + header + b"".join(parts), 1)

    @classmethod
    def from_bytes(cls, data: bytes, baseline: Baseline) -> Pane:
        try:
            body = zlib.decompress(data)
            (size,) = struct.unpack_from("<I", body)
            raw = orjson.loads(body[4:4 + size])
        except (zlib.error, struct.error, orjson.JSONDecodeError) as exc:
            raise ValueError(f"not a serialized pane ({exc})") from None
        if raw.get("baseline") != baseline.id:
            raise BaselineMismatch(f"pane {raw['index']} was summarized against baseline "
                                   f"{raw.get('baseline') or '(unknown)'}, not {baseline.id}")
        offset = 4 + size
        summaries: dict[str, Summary] = {}
        for name, length in raw["summaries"]:
            feature = baseline.monitored.get(name)
            if feature is None:
                raise ValueError(f"pane has feature {name!r} that the baseline does not know")
            summaries[name] = feature.layout.read(body[offset:offset + length])
            offset += length
        return cls(raw["index"], raw["records"], summaries, dict(raw["new_features"]),
                   baseline.id)


class SlidingWindow:
    """The last ``size`` panes of one model and their running aggregate, and the running
    aggregates of the newest ``k`` panes for each finer scale ``k`` in ``scales``.

    >>> import numpy as np
    >>> from streamskew.baseline import Baseline
    >>> baseline = Baseline.from_columns({"x": [float(i) for i in range(100)]})
    >>> window = SlidingWindow(3, baseline, scales=(1, 2))
    >>> for index in range(4):
    ...     pane = Pane.empty(index, baseline)
    ...     pane.summaries["x"].update(np.arange(10.0) * (index + 1))
    ...     pane.records = 10
    ...     window.push(pane)
    >>> window.aggregate.records, float(window.aggregate.summaries["x"].moments[3])
    (30, 36.0)
    >>> [(k, window.scale(k).records, float(window.scale(k).summaries["x"].moments[3]))
    ...  for k in window.scales]
    [(1, 10, 36.0), (2, 20, 36.0)]
    """

    def __init__(self, size: int, baseline: Baseline, scales: tuple[int, ...] = ()) -> None:
        self.size = size
        self.baseline = baseline
        self.scales = tuple(k for k in scales if 1 <= k < size)
        self.panes: deque[Pane] = deque()
        self.aggregate = Pane.empty(-1, baseline)
        # Scale 1 is the newest pane itself; longer ones keep a running aggregate.
        self.recent = {k: Pane.empty(-1, baseline) for k in self.scales if k > 1}

    def reset(self, index: int) -> None:
        """Forget every pane (a gap longer than the window: all of them expired)."""
        self.panes.clear()
        self.aggregate = Pane.empty(index, self.baseline)
        self.recent = {k: Pane.empty(index, self.baseline) for k in self.recent}

    def push(self, pane: Pane) -> None:
        """Slide to ``pane`` (the next pane in order; empty panes included).

        Empty panes (no records: every count zero) are neither merged nor subtracted, and
        an aggregate that no non-empty pane entered or left keeps its moments: with many
        small models most panes are empty, and this is then most of the evaluator's work."""
        self.panes.append(pane)
        if pane.records:
            self.aggregate.merge(pane)
        for k, recent in self.recent.items():
            changed = bool(pane.records)
            if changed:
                recent.merge(pane)
            if len(self.panes) > k and self.panes[-k - 1].records:
                recent.subtract(self.panes[-k - 1])
                changed = True
            recent.index = pane.index
            if changed:
                self._refresh_non_subtractable(recent, list(self.panes)[-k:])
        changed = bool(pane.records)
        if len(self.panes) > self.size:
            expired = self.panes.popleft()
            if expired.records:
                self.aggregate.subtract(expired)
                changed = True
        self.aggregate.index = pane.index
        if changed:
            self._refresh_non_subtractable(self.aggregate, list(self.panes))

    def scale(self, k: int) -> Pane:
        """The aggregate of the newest ``k`` panes (``k`` in :attr:`scales`)."""
        if k == 1:
            return self.panes[-1] if self.panes else self.aggregate
        return self.recent[k]

    def covered(self) -> list[tuple[int, Pane]]:
        """The finer scales that hold less than the whole window now, with their panes."""
        held = len(self.panes)
        return [(k, self.scale(k)) for k in self.scales if k < held]

    @staticmethod
    def _refresh_non_subtractable(aggregate: Pane, panes: list[Pane]) -> None:
        """Moments (min/max) and heavy hitters cannot be subtracted: re-derive from panes."""
        panes = [p for p in panes if p.records]
        for name, summary in aggregate.summaries.items():
            parts = [p.summaries[name] for p in panes]
            if isinstance(summary, NumericSummary):
                summary.set_moments(parts)  # type: ignore[arg-type]
            else:
                summary.unseen = merge_heavy_hitters([s.unseen for s in parts])  # type: ignore

    @property
    def first_index(self) -> int:
        return self.panes[0].index if self.panes else self.aggregate.index

    @property
    def has_records(self) -> bool:
        return self.aggregate.records > 0

    def summaries(self) -> Mapping[str, Summary]:
        return self.aggregate.summaries

