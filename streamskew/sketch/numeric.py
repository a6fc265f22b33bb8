"""Per-pane summary of one numeric feature, updated by a numba kernel.

A :class:`NumericSummary` holds

- ``bins``: counts over the baseline's bin edges ``e_0 < ... < e_k``: slot 0 is the underflow
  (``v < e_0``), slot ``i`` (1..k) is ``[e_(i-1), e_i)`` (the last one closed), slot ``k+1``
  the overflow (``v > e_k``). Exact integers: they add and subtract without error.
- ``quantiles``: the counts of a :class:`~streamskew.sketch.quantiles.QuantileLayout` sketch
  (relative value error <= 1% within its magnitude range); also exact integers.
- ``counts``: ``[values, missing, invalid]``.
- ``moments``: ``[sum, sum of squares, min, max]`` of the finite values (floats: they merge,
  but a window re-derives them from its panes instead of subtracting).

>>> layout = NumericLayout.from_edges(np.array([0.0, 1.0, 2.0]))
>>> s = layout.empty()
>>> s.update(np.array([-1.0, 0.5, 1.0, 2.0, 3.0, np.nan]), invalid=0)
>>> s.bins.tolist(), s.counts.tolist()
([1, 1, 2, 1], [5, 1, 0])
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numba
import numpy as np

from .quantiles import QuantileLayout

__all__ = ["NumericLayout", "NumericSummary", "combine_moments"]

GRID_CELLS_PER_EDGE = 4  # uniform-grid lookup: cells per bin edge
_FRACTION_MASK = (1 << 52) - 1
_TWO_POW_MINUS_52 = 2.0**-52
_NO_SLOTS = np.empty(0, dtype=np.int32)  # ``update`` without a slots output


@numba.njit(cache=True, nogil=True)
def _update(values, bits, edges, first_bin, last_bin, bins, quantiles, moments, multiplier,
            key_min, buckets, use_grid, grid_first, grid_last, grid_origin, grid_scale,
            slots, write_slots, step):
    """Fold ``values`` into the pane (``step`` -1: take them out again); returns how many
    were NaN (missing or invalid). The moments of the values go to ``moments``.

    With ``write_slots``, ``slots[i]`` receives the bin slot of value ``i`` (-1 for NaN):
    the joint check reads each record's bins from there instead of searching them again."""
    nan = 0
    total = 0.0
    squares = 0.0
    low = moments[2]
    high = moments[3]
    last = edges.shape[0] - 1
    first_edge = edges[0]
    top_edge = edges[last]
    cells = grid_first.shape[0]
    zero_slot = buckets
    for i in range(values.shape[0]):
        v = values[i]
        if v != v:
            nan += 1
            if write_slots:
                slots[i] = -1
            continue
        total += v
        squares += v * v
        low = min(low, v)
        high = max(high, v)
        # Quantile slot from the float's exponent and mantissa (piecewise-linear log2).
        b = bits[i] & 0x7FFFFFFFFFFFFFFF
        exponent = (b >> 52) - 1023
        fraction = (b & 0xFFFFFFFFFFFFF) * 2.0**-52
        key = math.ceil((exponent + fraction) * multiplier) - key_min
        if key < 0 or exponent == -1023:  # tiny, zero or subnormal: the zero slot
            slot = zero_slot
        else:
            if key >= buckets:
                key = buckets - 1
            slot = zero_slot + 1 + key if v > 0 else zero_slot - 1 - key
        quantiles[slot] += step
        # Bin = number of edges <= v. The slot (or, for a narrow range of edges, the
        # uniform grid) brackets it, usually to one or two candidates, so the search is
        # short; the top edge closes the last bin.
        if not use_grid:
            lo = first_bin[slot]
            n = last_bin[slot] - lo
        elif v < first_edge:
            lo = 0
            n = 0
        elif v > top_edge:
            lo = last + 1
            n = 0
        else:
            cell = min(int((v - grid_origin) * grid_scale), cells - 1)
            lo = grid_first[cell]
            n = grid_last[cell] - lo
        while n > 0:
            half = n >> 1
            if edges[lo + half] <= v:
                lo += half + 1
                n -= half + 1
            else:
                n = half
        if lo == last + 1 and v <= top_edge:
            lo = last
        bins[lo] += step
        if write_slots:
            slots[i] = lo
    moments[0] += total
    moments[1] += squares
    moments[2] = low
    moments[3] = high
    return nan


@dataclass(frozen=True)
class NumericLayout:
    """What every summary of one numeric feature shares: bin edges and quantile buckets."""

    edges: np.ndarray
    quantile_layout: QuantileLayout
    # Per quantile slot, the range of "number of edges <= v" its values can have.
    first_bin: np.ndarray = field(init=False, repr=False, compare=False)
    last_bin: np.ndarray = field(init=False, repr=False, compare=False)
    # The same per cell of a uniform grid over [edges[0], edges[-1]], used instead when the
    # edges crowd into few quantile slots (a narrow range far from zero: 1000 +- 0.001,
    # epoch timestamps), where a slot would leave dozens of candidates.
    use_grid: bool = field(init=False, repr=False, compare=False)
    grid_first: np.ndarray = field(init=False, repr=False, compare=False)
    grid_last: np.ndarray = field(init=False, repr=False, compare=False)
    grid_origin: float = field(init=False, repr=False, compare=False)
    grid_scale: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        edges = self.edges
        values = self.quantile_layout.slot_values
        # Slot s holds values between the answers of slots s-1 and s+1 (widened by one
        # slot on each side so float rounding at a bucket boundary cannot escape it).
        below = np.concatenate([[-np.inf, -np.inf], values[:-2]])
        above = np.concatenate([values[2:], [np.inf, np.inf]])
        first_bin = np.searchsorted(edges, below, "left")
        last_bin = np.searchsorted(edges, above, "right")
        object.__setattr__(self, "first_bin", first_bin)
        object.__setattr__(self, "last_bin", last_bin)

        origin, span = float(edges[0]), float(edges[-1] - edges[0])
        cells = GRID_CELLS_PER_EDGE * len(edges)
        scale = cells / span if span > 0 and math.isfinite(cells / span) else 0.0
        # Cell c holds [origin + c / scale, origin + (c + 1) / scale), widened by one cell
        # each side against rounding in the cell computation, as the slots are.
        bounds = origin + (np.arange(-1, cells + 2) / scale if scale else np.zeros(cells + 3))
        bounds[0], bounds[-1] = -np.inf, np.inf
        grid_first = np.searchsorted(edges, bounds[:-3], "left")
        grid_last = np.searchsorted(edges, bounds[3:], "right")
        # Pick the bracket that leaves fewer candidates, judged at the bin midpoints.
        middles = (edges[:-1] + edges[1:]) / 2 if len(edges) > 1 else edges
        slots = np.searchsorted(values, middles).clip(0, len(values) - 1)
        by_slot = float(np.mean(last_bin[slots] - first_bin[slots]))
        use_grid = False
        if scale:
            cell = np.minimum(((middles - origin) * scale).astype(np.int64), cells - 1)
            use_grid = 2 * float(np.mean(grid_last[cell] - grid_first[cell])) < by_slot
        object.__setattr__(self, "use_grid", use_grid)
        object.__setattr__(self, "grid_first", grid_first)
        object.__setattr__(self, "grid_last", grid_last)
        object.__setattr__(self, "grid_origin", origin)
        object.__setattr__(self, "grid_scale", scale)

    @classmethod
    def from_edges(cls, edges: np.ndarray, quantile_layout: QuantileLayout | None = None
                   ) -> NumericLayout:
        edges = np.ascontiguousarray(edges, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 1 or np.any(np.diff(edges) <= 0):
            raise ValueError("bin edges must be a non-empty strictly increasing 1-d array")
        if quantile_layout is None:
            quantile_layout = QuantileLayout.around(float(np.max(np.abs(edges))))
        return cls(edges, quantile_layout)

    @property
    def bin_slots(self) -> int:
        return len(self.edges) + 1

    def read(self, data: bytes) -> NumericSummary:
        """A summary of this layout from :meth:`NumericSummary.to_bytes`."""
        return NumericSummary.from_bytes(data, self)

    def empty(self) -> NumericSummary:
        """A summary with nothing in it."""
        return NumericSummary(
            self,
            np.zeros(self.bin_slots, dtype=np.int64),
            np.zeros(self.quantile_layout.slots, dtype=np.int64),
            np.zeros(3, dtype=np.int64),
            np.array(EMPTY_MOMENTS),
        )


@dataclass
class NumericSummary:
    """Mergeable, subtractable summary of one numeric feature over a pane or a window."""

    layout: NumericLayout
    bins: np.ndarray
    quantiles: np.ndarray
    counts: np.ndarray  # [values, missing, invalid]
    moments: np.ndarray  # [sum, sum of squares, min, max]

    def update(self, values: np.ndarray, invalid: int = 0,
               slots: np.ndarray | None = None, step: int = 1,
               moments: np.ndarray | None = None) -> None:
        """Add a float64 column (NaN = missing or invalid; ``invalid`` of them were invalid).

        ``slots`` (int32, one per value), when given, receives each value's bin slot (-1 for
        NaN), in the same pass. ``step=-1`` removes values added before (every count exactly;
        the moments are left alone: a window re-derives them). ``moments``, when given,
        receives the values' moments instead of this summary (the window's aggregates
        re-derive theirs from the panes, so a small pane's fold keeps its own there)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        q = self.layout.quantile_layout
        layout = self.layout
        write = slots is not None
        if slots is None:
            slots = _NO_SLOTS
        elif len(slots) != len(values):
            raise ValueError("slots must have one entry per value")
        if moments is None:
            moments = self.moments if step > 0 else _scratch_moments()
        nan = _update(values, values.view(np.int64), layout.edges, layout.first_bin,
                      layout.last_bin, self.bins,
                      self.quantiles, moments, q.multiplier, q.key_min, q.buckets,
                      layout.use_grid, layout.grid_first, layout.grid_last,
                      layout.grid_origin, layout.grid_scale, slots, write, step)
        self.counts[0] += step * (len(values) - nan)
        self.counts[1] += step * (nan - invalid)
        self.counts[2] += step * invalid

    @property
    def count(self) -> int:
        """Finite values counted."""
        return int(self.counts[0])

    @property
    def records(self) -> int:
        """Records seen, with or without a usable value."""
        values, missing, invalid = self.counts.tolist()  # (faster than a numpy sum of 3)
        return values + missing + invalid

    def merge(self, other: NumericSummary) -> None:
        """Add ``other`` (same layout) into this summary: exact for all counts."""
        self.bins += other.bins
        self.quantiles += other.quantiles
        self.counts += other.counts
        self.moments[:2] += other.moments[:2]
        self.moments[2] = min(self.moments[2], other.moments[2])
        self.moments[3] = max(self.moments[3], other.moments[3])

    def subtract(self, other: NumericSummary) -> None:
        """Remove ``other``'s counts (it must have been merged in). Moments are not subtracted:
        min/max cannot be, so a window re-derives moments from its panes (see ``set_moments``)."""
        self.bins -= other.bins
        self.quantiles -= other.quantiles
        self.counts -= other.counts

    def set_moments(self, panes: list[NumericSummary]) -> None:
        """Re-derive the moments from the panes that make up this window."""
        self.moments = combine_moments(np.array([p.moments for p in panes]).reshape(-1, 4))

    def copy(self) -> NumericSummary:
        return NumericSummary(self.layout, self.bins.copy(), self.quantiles.copy(),
                              self.counts.copy(), self.moments.copy())

    def quantile(self, ranks: list[float] | np.ndarray) -> np.ndarray:
        """Approximate quantiles (relative error <= the layout's accuracy)."""
        return self.layout.quantile_layout.quantiles(self.quantiles, ranks)

    @property
    def mean(self) -> float:
        return float(self.moments[0] / self.count) if self.count else math.nan

    @property
    def std(self) -> float:
        if self.count < 2:
            return math.nan
        mean = self.moments[0] / self.count
        variance = max(self.moments[1] / self.count - mean * mean, 0.0)
        return math.sqrt(variance * self.count / (self.count - 1))

    # -- bytes -------------------------------------------------------------------------------

    _HEADER = struct.Struct("<4sHqq")  # magic, version, occupied quantile slots, bins

    def to_bytes(self) -> bytes:
        """Compact little-endian bytes (version 3): the quantile sketch as its occupied slots
        (a window occupies a few hundred of thousands), each as the gap from the previous one
        (uint16: mostly 1), and the integer counts as byte planes (all low bytes, then all
        next bytes, ...), so the zlib of a pane squeezes out the high zero bytes: panes and
        checkpoints come out about half the size of version 2's."""
        occupied = np.flatnonzero(self.quantiles)
        header = self._HEADER.pack(b"SSNS", 3, len(occupied), len(self.bins))
        gaps = np.diff(occupied, prepend=0).astype("<u2")
        return b"".join([
            header,
            self.counts.astype("<i8").tobytes(),
            self.moments.astype("<f8").tobytes(),
            _planes(self.bins),
            gaps.tobytes(),
            _planes(self.quantiles[occupied]),
        ])

    @classmethod
    def from_bytes(cls, data: bytes, layout: NumericLayout) -> NumericSummary:
        """Inverse of :meth:`to_bytes` for a summary of the same layout (version 3, and
        version 2 from checkpoints written before it)."""
        magic, version, occupied, n_bins = cls._HEADER.unpack_from(data)
        if magic != b"SSNS" or version not in (2, 3):
            raise ValueError("not a streamskew numeric summary (or another version)")
        if n_bins != layout.bin_slots:
            raise ValueError("summary bytes do not match this feature's baseline layout")
        offset = cls._HEADER.size
        counts = np.frombuffer(data, "<i8", 3, offset).astype(np.int64)
        offset += 24
        moments = np.frombuffer(data, "<f8", 4, offset).astype(np.float64)
        offset += 32
        if version == 2:
            bins = np.frombuffer(data, "<i8", n_bins, offset).astype(np.int64)
            offset += 8 * n_bins
            slots = np.frombuffer(data, "<i4", occupied, offset).astype(np.int64)
            offset += 4 * occupied
            values = np.frombuffer(data, "<i8", occupied, offset).astype(np.int64)
        else:
            bins = _unplanes(data, n_bins, offset)
            offset += 8 * n_bins
            slots = np.cumsum(np.frombuffer(data, "<u2", occupied, offset).astype(np.int64))
            offset += 2 * occupied
            values = _unplanes(data, occupied, offset)
        quantiles = np.zeros(layout.quantile_layout.slots, dtype=np.int64)
        if occupied and (slots.min() < 0 or slots.max() >= len(quantiles)):
            raise ValueError("summary bytes do not match this feature's baseline layout")
        quantiles[slots] = values
        return cls(layout, bins, quantiles, counts, moments)


EMPTY_MOMENTS = (0.0, 0.0, math.inf, -math.inf)  # [sum, sum of squares, min, max] of nothing


def _scratch_moments() -> np.ndarray:
    return np.array(EMPTY_MOMENTS)


def combine_moments(table: np.ndarray, axis: int = 0) -> np.ndarray:
    """The moments of the union of parts whose moments are stacked along ``axis`` of
    ``table`` (last axis: sum, sum of squares, min, max).

    >>> combine_moments(np.array([[1.0, 1.0, 1.0, 1.0], [5.0, 13.0, 2.0, 3.0]])).tolist()
    [6.0, 14.0, 1.0, 3.0]
    """
    if table.shape[axis] == 0:
        shape = list(table.shape)
        del shape[axis]
        return np.broadcast_to(np.array(EMPTY_MOMENTS), shape).copy()
    sums = table[..., :2].sum(axis=axis)
    low = table[..., 2].min(axis=axis)
    high = table[..., 3].max(axis=axis)
    return np.concatenate([sums, low[..., None], high[..., None]], axis=-1)


def _planes(values: np.ndarray) -> bytes:
    """int64 values as 8 byte planes (byte 0 of every value, then byte 1, ...)."""
    raw = np.ascontiguousarray(values, dtype="<i8").view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(raw.T).tobytes()


def _unplanes(data: bytes, n: int, offset: int) -> np.ndarray:
    planes = np.frombuffer(data, np.uint8, 8 * n, offset).reshape(8, n)
    return np.ascontiguousarray(planes.T).view("<i8").reshape(n).astype(np.int64)
