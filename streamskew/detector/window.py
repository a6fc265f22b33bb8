"""The sliding window made of the last ``size`` event-time panes (:mod:`.pane`).

A :class:`SlidingWindow` keeps the last ``size`` panes and their aggregate: sliding by one
pane adds the new one and subtracts the expired one, so the cost is O(bins) (for a small,
sparse pane O(its records)), not O(records in the window) or O(panes * bins); and it is paid
only for windows that are read (judged), see :class:`SlidingWindow`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from ..baseline import Baseline
from .pane import BaselineMismatch, Pane, Summary

__all__ = ["BaselineMismatch", "Pane", "SlidingWindow"]


class SlidingWindow:
    """The last ``size`` panes of one model and their running aggregate, and the aggregates
    of the newest ``k`` panes for each finer scale ``k`` in ``scales``.

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
        self.records = 0  # records in the window's panes
        # The aggregate is brought up to date when read (a window is judged), not at every
        # slide: the windows of a deployment with many small models are mostly under
        # min_count and never judged, and then cost no summary work at all. It holds the
        # panes pushed before ``_folded_through`` (a push count), less those in ``_left``.
        self._aggregate = Pane.empty(-1, baseline)
        self._pushed = 0  # panes pushed so far
        self._folded_through = 0  # ... of which the aggregate holds those pushed before
        self._left: list[Pane] = []  # in the aggregate, but out of the window since
        self._first_push = 0  # push number of self.panes[0]
        # Scale 1 is the newest pane itself; longer ones are summed when asked for.
        self._scales: dict[int, Pane] = {}

    @property
    def aggregate(self) -> Pane:
        """The whole window's summaries (brought up to date now, see ``__init__``)."""
        start = max(self._folded_through - self._first_push, 0)
        fresh = [p for p in list(self.panes)[start:] if p.records]
        if fresh or self._left:
            live = [p for p in self.panes if p.records]
            index = self.panes[-1].index if self.panes else self._aggregate.index
            if all(p.values is not None for p in live):
                # Small panes only: summing them afresh (their values folded together, once)
                # costs less than adding and subtracting each, and needs no re-deriving.
                self._aggregate = Pane.empty(index, self.baseline)
                self._aggregate.merge_all(live)
            else:
                self._aggregate.merge_all(fresh, rederived=True)
                self._aggregate.subtract_all(self._left)
                # Moments (min/max) and heavy hitters cannot be subtracted: re-derive them.
                self._aggregate.set_moments(live)
        self._left = []
        self._folded_through = self._pushed
        if self.panes:
            self._aggregate.index = self.panes[-1].index
        return self._aggregate

    def reset(self, index: int) -> None:
        """Forget every pane (a gap longer than the window: all of them expired)."""
        self.panes.clear()
        self.records = 0
        self._aggregate = Pane.empty(index, self.baseline)
        self._first_push = self._folded_through = self._pushed
        self._left = []
        self._scales = {}

    def push(self, pane: Pane) -> None:
        """Slide to ``pane`` (the next pane in order; empty panes included)."""
        self.panes.append(pane)
        self._pushed += 1
        self.records += pane.records
        self._scales = {}
        if len(self.panes) > self.size:
            expired = self.panes.popleft()
            self.records -= expired.records
            if self._first_push < self._folded_through and expired.records:
                self._left.append(expired)  # the aggregate holds it: take it out when read
            self._first_push += 1

    def scale(self, k: int) -> Pane:
        """The aggregate of the newest ``k`` panes (``k`` in :attr:`scales`)."""
        if not self.panes:
            return self.aggregate
        summed = self._scales.get(k)
        if summed is None and k == 1 and self.panes[-1].values is None:
            summed = self.panes[-1]
        if summed is None:
            summed = Pane.empty(self.panes[-1].index, self.baseline)
            summed.merge_all([p for p in list(self.panes)[-k:] if p.records])
            self._scales[k] = summed
        return summed

    def covered(self, min_records: int = 0) -> list[tuple[int, Pane]]:
        """The finer scales that hold less than the whole window now, with their panes;
        only those with at least ``min_records`` records (fewer than min_count: no check
        can be judged there, so they are not even summed)."""
        held = list(self.panes)
        found = []
        for k in self.scales:
            if k < len(held) and sum(p.records for p in held[-k:]) >= min_records:
                found.append((k, self.scale(k)))
        return found

    @property
    def has_records(self) -> bool:
        return self.records > 0

    def summaries(self) -> Mapping[str, Summary]:
        return self.aggregate.summaries

