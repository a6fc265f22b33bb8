"""Categorical surges: a category whose share rises or falls by a large factor.

L-infinity (the default categorical distance) measures absolute shares, so a rare category
that becomes ten times as common (0.5% -> 5% of requests) moves it by 0.045 and stays under
0.1. The surge check looks at every category on its own (vocabulary and ``other``; never-seen
values have their own check) and flags one when, at the same time,

- its share changed by at least ``factor`` (rise: serving / baseline share; fall: baseline /
  serving share, the serving count taken as at least half a record),
- by at least ``min_change`` in absolute share (a rare category may triple by chance in a
  huge window without being worth an alert), and
- beyond sampling noise of *both* samples: given the category's total ``T = x + c`` over the
  serving window (``x`` of ``n``) and the baseline (``c`` of ``N``), ``x`` is binomial
  ``(T, n / (n + N))`` when both share one rate (hypergeometric for fixed totals, whose tails
  are lighter, so this is conservative). Its Chernoff bound ``exp(-T KL(x/T || q))`` must be
  at most ``alpha / (2 K)``: a union bound over the ``K`` categories and both directions. A
  category seen twice in training is judged with the uncertainty of two counts.

The value of the check is the decisive category's change factor and its threshold the factor
that category had to reach (the largest of the three conditions), so ``value > threshold``
is exactly "flagged", and the timeline reads as "x10 against x3".

>>> baseline = np.array([9_950, 50])  # a category at 0.5% of 10,000 training values
>>> found = surge(np.array([5_700, 300]), baseline, alpha=1e-6, factor=3.0, min_change=0.01)
>>> found.index, found.direction, round(found.value, 1), round(found.threshold, 2)
(1, 'rise', 10.0, 3.0)
>>> surge(np.array([5_960, 40]), baseline, 1e-6, 3.0, 0.01).value < 3  # noise: x1.3
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["Surge", "surge"]


@dataclass(frozen=True)
class Surge:
    """The decisive category of one surge check."""

    value: float  # its change factor (>= 1 when it moved in ``direction``)
    threshold: float  # the factor it had to reach (inf: no change could be significant)
    index: int  # its slot in the counts (-1: nothing to judge)
    direction: str  # "rise" or "fall"
    serving_share: float
    baseline_share: float

    @property
    def judged(self) -> bool:
        return self.index >= 0


@numba.njit(cache=True, nogil=True)
def _tail(x: float, c: float, q: float) -> float:  # pragma: no cover (numba)
    """``T KL(x/T || q)`` with ``T = x + c``: minus the log of the Chernoff tail bound."""
    t = x + c
    if t <= 0:
        return 0.0
    r = x / t
    total = 0.0
    if r > 0:
        total += r * math.log(r / q)
    if r < 1:
        total += (1 - r) * math.log((1 - r) / (1 - q))
    return t * total


@numba.njit(cache=True, nogil=True)
def _count_needed(c: float, q: float, target: float, low: float, high: float,
                  rising: bool) -> float:  # pragma: no cover (numba)
    """The serving count at which the tail bound reaches ``target`` between ``low`` and
    ``high`` (bisection; the bound is monotone on the side of the null expectation)."""
    for _ in range(50):
        middle = 0.5 * (low + high)
        if (_tail(middle, c, q) >= target) == rising:
            high = middle
        else:
            low = middle
    return high if rising else low


@numba.njit(cache=True, nogil=True)
def _scan(x: np.ndarray, c: np.ndarray, n: float, target: float, factor: float,
          min_change: float) -> tuple[int, int, float, float]:  # pragma: no cover (numba)
    """(slot, rising, value, needed) of the category with the largest value / needed.

    The effect-size part of ``needed`` is cheap and bounds the ratio from above, so the
    categories are visited by that bound, best first, and the search for the significance
    part stops once no bound can beat the best ratio found (exact, and a few bisections
    per window instead of one per category)."""
    big_n = c.sum()
    q = n / (n + big_n)
    k = x.shape[0]
    bound = np.full(k, -1.0)
    for i in range(k):
        if c[i] <= 0:
            continue
        share, base = x[i] / n, c[i] / big_n
        rise_effect = max(factor, (base + min_change) / base)
        fall_effect = max(factor, base / (base - min_change)) if base > min_change else np.inf
        bound[i] = max(share / base / rise_effect,
                       base / max(share, 0.5 / n) / fall_effect)
    best, best_i, best_rising, best_value, best_need = -1.0, -1, True, np.nan, np.inf
    for i in np.argsort(-bound):
        if bound[i] < 0 or bound[i] <= best:
            break
        share, base = x[i] / n, c[i] / big_n
        expected = c[i] * q / (1 - q)  # where x / T = q
        # Rise: the smallest significant count, as a factor of the baseline share.
        rise_need = max(factor, (base + min_change) / base)
        if n > expected and _tail(n, c[i], q) >= target:
            rise_need = max(rise_need, _count_needed(c[i], q, target, expected, n, True)
                            / n / base)
        else:
            rise_need = np.inf
        rise_value = share / base
        # Fall: the largest significant count; the share floored at half a record.
        floor = 0.5 / n
        fall_need = max(factor, base / (base - min_change)) if base > min_change else np.inf
        if _tail(0.0, c[i], q) >= target:
            counted = _count_needed(c[i], q, target, 0.0, expected, False)
            fall_need = max(fall_need, base / max(counted / n, floor))
        else:
            fall_need = np.inf
        fall_value = base / max(share, floor)
        for rising, value, need in ((True, rise_value, rise_need),
                                    (False, fall_value, fall_need)):
            ratio = value / need if need < np.inf else 0.0
            if ratio > best or best_i < 0:
                best, best_i, best_rising, best_value, best_need = ratio, i, rising, value, need
    return best_i, int(best_rising), best_value, best_need


def surge(serving: np.ndarray, baseline: np.ndarray, alpha: float, factor: float,
          min_change: float, serving_total: int | None = None) -> Surge:
    """The category whose share moved most against what it needed to be flagged.

    ``serving`` and ``baseline`` are counts per category (same order); ``serving_total``
    (default: the sum of ``serving``) is the number of values the shares are taken of, e.g.
    including never-seen values kept in a slot of their own. Categories the baseline never
    saw are skipped."""
    x = np.ascontiguousarray(serving, dtype=np.float64)
    c = np.ascontiguousarray(baseline, dtype=np.float64)
    n = float(x.sum() if serving_total is None else serving_total)
    tested = int(np.count_nonzero(c > 0))
    if n <= 0 or not tested:
        return Surge(math.nan, math.inf, -1, "rise", math.nan, math.nan)
    target = math.log(2 * tested / alpha)
    index, rising, value, need = _scan(x, c, n, target, factor, min_change)
    return Surge(float(value), float(need), int(index), "rise" if rising else "fall",
                 float(x[index] / n), float(c[index] / c.sum()))
