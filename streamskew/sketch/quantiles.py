"""A relative-error quantile sketch that can be added *and subtracted* (DDSketch-style).

Values are counted in logarithmic buckets: bucket ``j`` holds magnitudes whose (piecewise
linear) log2 lies in ``((j-1)/multiplier, j/multiplier]``. The multiplier is chosen so a
bucket spans a magnitude ratio of at most ``gamma = (1 + a) / (1 - a)``; answering with the
bucket's harmonic-midpoint then puts every quantile within relative error ``a``.

Error guarantee (checked in tests/test_sketch.py against exact numpy quantiles): for a rank
``q`` the sketch returns ``v`` with ``|v - x| <= a * |x|``, where ``x`` is the exact lower
quantile ``np.quantile(data, q, method="lower")``, provided ``|x|`` lies within
``[min_magnitude, max_magnitude]`` of the layout. Smaller magnitudes are reported as 0;
larger ones as ``max_magnitude`` (such values are far outside the baseline anyway and are
flagged by the out-of-range check).

Counts live in one int64 array of ``2 * buckets + 1`` slots ordered by value: negative
buckets (largest magnitude first), the zero slot, then positive buckets. Two sketches with
the same layout add and subtract slot by slot, exactly, which is what makes a sliding window
O(slots) per pane.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["QuantileLayout"]


@dataclass(frozen=True)
class QuantileLayout:
    """Bucket mapping shared by every sketch of one feature.

    >>> layout = QuantileLayout.around(max_abs=1000.0)
    >>> layout.relative_accuracy
    0.01
    >>> layout.min_magnitude < 1e-6 < 1e6 < layout.max_magnitude
    True
    """

    relative_accuracy: float
    key_min: int
    buckets: int

    @classmethod
    def around(cls, max_abs: float, relative_accuracy: float = 0.01, buckets: int = 2048,
               headroom: float = 1e3) -> QuantileLayout:
        """A layout whose top bucket sits ``headroom`` times above ``max_abs`` (unit changes)."""
        if not math.isfinite(max_abs) or max_abs <= 0:
            max_abs = 1.0
        top = min(max_abs * headroom, sys.float_info.max)  # headroom, but stay finite
        top_key = _key(top, _multiplier(relative_accuracy))
        return cls(relative_accuracy, top_key - buckets + 1, buckets)

    @property
    def multiplier(self) -> float:
        return _multiplier(self.relative_accuracy)

    @property
    def slots(self) -> int:
        return 2 * self.buckets + 1

    @property
    def min_magnitude(self) -> float:
        """Smallest magnitude with the relative guarantee (lower edge of the first bucket)."""
        return _lower_bound(self.key_min, self.multiplier)

    @property
    def max_magnitude(self) -> float:
        return _lower_bound(self.key_min + self.buckets, self.multiplier)

    @cached_property
    def slot_values(self) -> np.ndarray:
        """The value each slot answers with, in slot order (increasing)."""
        bounds = _lower_bounds(np.arange(self.key_min, self.key_min + self.buckets + 1),
                               self.multiplier)
        lower, upper = bounds[:-1], bounds[1:]
        # Harmonic midpoint 2lu/(l+u), written so it neither overflows nor underflows; the
        # top bucket of a layout near the float limit answers with the largest float.
        with np.errstate(over="ignore"):
            positive = np.minimum(lower * (2.0 / (1.0 + lower / upper)), sys.float_info.max)
        return np.concatenate([-positive[::-1], [0.0], positive])

    def quantiles(self, counts: np.ndarray, ranks: np.ndarray | list[float]) -> np.ndarray:
        """Values at normalized ranks ``ranks`` (lower-quantile convention); NaN when empty."""
        ranks = np.asarray(ranks, dtype=np.float64)
        total = int(counts.sum())
        if total == 0:
            return np.full(ranks.shape, np.nan)
        cumulative = np.cumsum(counts)
        # The element of 0-based index floor(q * (n - 1)) sits in the first slot whose
        # cumulative count exceeds that index.
        index = np.floor(ranks * (total - 1)).astype(np.int64)
        slots = np.searchsorted(cumulative, index, side="right")
        return self.slot_values[slots]


def _multiplier(relative_accuracy: float) -> float:
    gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
    return 1.0 / math.log(gamma)


def _key(value: float, multiplier: float) -> int:
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, mantissa in [.5, 1)
    return math.ceil(((exponent - 1) + (2 * mantissa - 1)) * multiplier)


def _lower_bounds(keys: np.ndarray, multiplier: float) -> np.ndarray:
    """Vectorized :func:`_lower_bound`."""
    f = (keys - 1) / multiplier
    exponent = np.floor(f)
    with np.errstate(over="ignore"):  # bounds past the float limit are inf, and that is right
        return np.ldexp(1 + (f - exponent), exponent.astype(np.int64))


def _lower_bound(key: int, multiplier: float) -> float:
    """Smallest value that maps to ``key`` (the inverse of the piecewise-linear log2)."""
    f = (key - 1) / multiplier
    exponent = math.floor(f)
    return math.ldexp(1 + (f - exponent), exponent)
