"""Event time of one source: a stream time that a few bad clocks cannot move, and what each
record is (on time, late, or too far ahead to trust yet).

A source (a file, a Kafka partition) delivers records in its own order. Its clock follows
them one at a time, exactly, whatever the batches they come in:

- **stream time** ``S`` = the ``quorum``-th latest event time among the source's last
  ``memory`` records (it never goes back). One record stamped a year ahead, or up to
  ``quorum - 1`` such records among any ``memory``, leave it where the rest of the stream
  is; a source that really jumps ahead is followed once ``quorum`` records are there. Until
  the source has ``quorum`` records, ``S`` is unknown.
- **watermark** ``W = S - allowed_lateness``: pane ``p`` is *sealed* once its end is at or
  before ``W``.
- each record, judged against ``S`` *before* it, is **late** (its pane is already sealed),
  **held** (``S`` is unknown, or the record is more than ``max_ahead`` ahead of ``S``), or
  **on time** (folded into its pane now).
- a held record is **released** at the first later step at which ``S + max_ahead`` reaches
  it: folded then, or late if its pane was sealed meanwhile. If ``memory`` more records pass
  first, it has **expired**: dead-lettered as ahead of the stream.

Only the sequence of stream times is sequential (a small numba loop over a sorted ring of
the last ``memory`` times, about 1 ns per record per ring slot moved); every decision is then
a vectorized function of it, so a batch costs a few numpy passes.

>>> clock = SourceClock(pane_ms=1000, lateness_ms=0, max_ahead_ms=10_000, quorum=2, memory=4)
>>> t = np.array([1000, 1500, 400_000_000, 2200, 900, 3100], dtype=np.int64)
>>> step = clock.observe(t)
>>> step.stream_after.tolist()  # the far-future record does not move the stream time
[-9223372036854775808, 1000, 1500, 2200, 2200, 3100]
>>> [("on time" if o else "late" if la else "held") for o, la in zip(step.on_time, step.late)]
['held', 'held', 'held', 'on time', 'late', 'on time']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from ..records import NO_TIME

__all__ = ["ClockStep", "SourceClock", "combined_watermark"]

NEVER = np.iinfo(np.int64).max  # "not released in this batch"


@numba.njit(cache=True, nogil=True)
def _stream_times(times, ring, ordered, state, quorum, out):
    """Push ``times`` into the ring of the last ``len(ring)`` times; ``out[i]`` = stream time
    after record i. ``state`` = [count, next slot, stream time]; ``ordered`` holds the ring's
    times sorted (its first ``count`` slots)."""
    memory = ring.shape[0]
    count = state[0]
    slot = state[1]
    stream = state[2]
    for i in range(times.shape[0]):
        t = times[i]
        if count == memory:  # the oldest time leaves the ring
            old = ring[slot]
            lo = 0
            hi = count
            while lo < hi:  # leftmost position of old
                mid = (lo + hi) // 2
                if ordered[mid] < old:
                    lo = mid + 1
                else:
                    hi = mid
            for j in range(lo, count - 1):
                ordered[j] = ordered[j + 1]
            count -= 1
        lo = 0
        hi = count
        while lo < hi:  # rightmost insertion point of t
            mid = (lo + hi) // 2
            if ordered[mid] <= t:
                lo = mid + 1
            else:
                hi = mid
        for j in range(count, lo, -1):
            ordered[j] = ordered[j - 1]
        ordered[lo] = t
        count += 1
        ring[slot] = t
        slot += 1
        if slot == memory:
            slot = 0
        if count >= quorum:
            latest = ordered[count - quorum]
            if latest > stream:
                stream = latest
        out[i] = stream
    state[0] = count
    state[1] = slot
    state[2] = stream


def combined_watermark(holding: Sequence[int], idle: Iterable[int]) -> int:
    """The clock of several sources: the smallest watermark of those holding it (neither idle
    nor finished; NO_TIME for one that has not reported). When every source left is idle,
    the furthest of their watermarks, as Flink's watermark valve does when all its inputs
    are idle: what the leading source completed is judged, not held until one speaks again.

    >>> combined_watermark([300, 200], [900]), combined_watermark([], [100, 900])
    (200, 900)
    """
    if holding:
        return min(holding)
    return max(idle, default=NO_TIME)


@dataclass(frozen=True)
class ClockStep:
    """What a batch of records is, each judged as if it came alone, in order.

    Arrays are per record of the batch; ``steps`` number the source's records (0, 1, ...).
    """

    steps: np.ndarray  # int64: the record's step in its source
    stream_before: np.ndarray  # int64: stream time before the record (NO_TIME if unknown)
    stream_after: np.ndarray  # int64: stream time after it
    on_time: np.ndarray  # bool: folded now
    late: np.ndarray  # bool: its pane was already sealed
    held: np.ndarray  # bool: held (stream time unknown, or more than max_ahead ahead)


class SourceClock:
    """The event-time clock of one source (see the module docs)."""

    def __init__(self, pane_ms: int, lateness_ms: int, max_ahead_ms: int, quorum: int,
                 memory: int) -> None:
        if not 1 <= quorum <= memory:
            raise ValueError("need 1 <= quorum <= memory")
        self.pane_ms = pane_ms
        self.lateness_ms = lateness_ms
        self.max_ahead_ms = max_ahead_ms
        self.quorum = quorum
        self.ring = np.zeros(memory, dtype=np.int64)
        self.ordered = np.zeros(memory, dtype=np.int64)
        self.state = np.array([0, 0, NO_TIME], dtype=np.int64)  # count, slot, stream time
        self.steps = 0  # records observed so far
        self.forced_sealed = -(2**62)  # panes sealed from outside (an idle source advanced)

    @property
    def memory(self) -> int:
        return len(self.ring)

    @property
    def stream_time(self) -> int:
        """The source's stream time (NO_TIME until it has ``quorum`` records)."""
        return int(self.state[2])

    @property
    def watermark(self) -> int:
        """Event time up to which the source is complete (NO_TIME while unknown)."""
        stream = self.stream_time
        if stream == NO_TIME:
            return NO_TIME if self.forced_sealed < -(2**61) \
                else (self.forced_sealed + 1) * self.pane_ms
        return max(stream - self.lateness_ms, (self.forced_sealed + 1) * self.pane_ms)

    def sealed_through(self, stream: np.ndarray | int) -> np.ndarray:
        """Index of the last pane sealed at each stream time (very negative while unknown)."""
        stream = np.asarray(stream, dtype=np.int64)
        known = stream != NO_TIME
        sealed = np.where(known, (np.where(known, stream, 0) - self.lateness_ms)
                          // self.pane_ms - 1, -(2**62))
        return np.maximum(sealed, self.forced_sealed)

    def observe(self, times: np.ndarray) -> ClockStep:
        """Advance over a batch of event times (source order); say what each record is."""
        times = np.ascontiguousarray(times, dtype=np.int64)
        n = len(times)
        before_all = self.stream_time
        after = np.empty(n, dtype=np.int64)
        _stream_times(times, self.ring, self.ordered, self.state, self.quorum, after)
        before = np.empty(n, dtype=np.int64)
        if n:
            before[0] = before_all
            before[1:] = after[:-1]
        known = before != NO_TIME
        late = known & (times // self.pane_ms <= self.sealed_through(before))
        ahead = np.where(known, times - np.where(known, before, 0) > self.max_ahead_ms, True)
        held = ~late & ahead
        steps = np.arange(self.steps, self.steps + n, dtype=np.int64)
        self.steps += n
        return ClockStep(steps, before, after, ~late & ~held, late, held)

    def release_steps(self, times: np.ndarray, arrivals: np.ndarray, step: ClockStep
                      ) -> np.ndarray:
        """For held records (event ``times``, arrival ``arrivals`` steps): the step of this
        batch at which each is released, or NEVER when it is not (yet) released here.

        Released at the first step ``j >= arrival`` whose stream time has come within
        ``max_ahead`` of the record, provided the record is still among the last ``memory``
        (``j < arrival + memory``)."""
        if not len(times) or not len(step.steps):
            return np.full(len(times), NEVER, dtype=np.int64)
        need = times - self.max_ahead_ms
        # Stream times only grow (NO_TIME is the smallest int64), so a binary search finds
        # the first step that reaches each record.
        first = np.searchsorted(step.stream_after, need, side="left")
        first = np.maximum(first, arrivals - step.steps[0])
        released = first < len(step.steps)
        at = np.where(released, step.steps[0] + np.minimum(first, len(step.steps) - 1), NEVER)
        return np.where(released & (at < arrivals + self.memory), at, NEVER)

    def expired(self, arrivals: np.ndarray) -> np.ndarray:
        """Held records that ``memory`` records have passed (never to be released)."""
        return arrivals + self.memory <= self.steps

    def advance_to(self, watermark: int) -> None:
        """Seal everything up to ``watermark`` from outside (an idle source moves on)."""
        self.forced_sealed = max(self.forced_sealed, watermark // self.pane_ms - 1)

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        count = int(self.state[0])
        slot = int(self.state[1])
        # The ring's times oldest first, so a restore can refill it in order.
        ring = (np.concatenate([self.ring[slot:count], self.ring[:slot]])
                if count == self.memory else self.ring[:count])
        return {"ring": ring.tolist(), "stream": self.stream_time, "steps": self.steps,
                "forced_sealed": self.forced_sealed}

    def restore(self, saved: dict[str, object]) -> None:
        ring = np.asarray(saved["ring"], dtype=np.int64)
        self.ring[:] = 0
        self.ordered[:] = 0
        self.state[:] = (0, 0, NO_TIME)
        _stream_times(ring, self.ring, self.ordered, self.state, self.quorum,
                      np.empty(len(ring), dtype=np.int64))
        self.state[2] = int(saved["stream"])  # type: ignore[call-overload]
        self.steps = int(saved["steps"])  # type: ignore[call-overload]
        self.forced_sealed = int(saved["forced_sealed"])  # type: ignore[call-overload]
