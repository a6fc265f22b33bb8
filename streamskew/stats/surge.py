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


def _tail(x: np.ndarray, c: np.ndarray, q: float) -> np.ndarray:
    """``T KL(x/T || q)`` with ``T = x + c``: minus the log of the Chernoff tail bound."""
    t = x + c
    r = np.divide(x, t, out=np.full_like(t, q), where=t > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(r > 0, r * np.log(r / q), 0.0)
        down = np.where(r < 1, (1 - r) * np.log((1 - r) / (1 - q)), 0.0)
    return t * (up + down)


def _solve(c: np.ndarray, q: float, target: float, low: np.ndarray, high: np.ndarray,
           rising: bool) -> np.ndarray:
    """The serving count at which the tail bound reaches ``target`` between ``low`` (the
    null expectation) and ``high`` (bisection; the bound is monotone on that side)."""
    for _ in range(60):
        middle = 0.5 * (low + high)
        reached = _tail(middle, c, q) >= target
        if rising:
            high = np.where(reached, middle, high)
            low = np.where(reached, low, middle)
        else:
            low = np.where(reached, middle, low)
            high = np.where(reached, high, middle)
    return high if rising else low


def surge(serving: np.ndarray, baseline: np.ndarray, alpha: float, factor: float,
          min_change: float, serving_total: int | None = None) -> Surge:
    """The category whose share moved most against what it needed to be flagged.

    ``serving`` and ``baseline`` are counts per category (same order); ``serving_total``
    (default: the sum of ``serving``) is the number of values the shares are taken of, e.g.
    including never-seen values kept in a slot of their own. Categories the baseline never
    saw are skipped."""
    x_all = np.asarray(serving, dtype=np.float64)
    c_all = np.asarray(baseline, dtype=np.float64)
    n = float(x_all.sum() if serving_total is None else serving_total)
    big_n = float(c_all.sum())
    tested = np.flatnonzero(c_all > 0)
    if n <= 0 or big_n <= 0 or not len(tested):
        return Surge(math.nan, math.inf, -1, "rise", math.nan, math.nan)
    x, c = x_all[tested], c_all[tested]
    q = n / (n + big_n)
    target = math.log(2 * len(tested) / alpha)
    share, base = x / n, c / big_n
    expected = c * q / (1 - q)  # where x / T = q

    # Rises: the smallest count that is significant, as a factor of the baseline share.
    top = np.full_like(c, n)
    reachable = _tail(top, c, q) >= target
    rise_count = _solve(c, q, target, expected.copy(), top, rising=True)
    rise_sig = np.where(reachable & (top > expected), rise_count / n / base, np.inf)
    rise_need = np.maximum.reduce([np.full_like(base, factor), (base + min_change) / base,
                                   rise_sig])
    rise_value = share / base

    # Falls: the largest count that is significant; the share floored at half a record.
    floor_share = 0.5 / n
    reachable = _tail(np.zeros_like(c), c, q) >= target
    fall_count = _solve(c, q, target, np.zeros_like(c), expected.copy(), rising=False)
    with np.errstate(divide="ignore"):
        fall_sig = np.where(reachable, base / np.maximum(fall_count / n, floor_share), np.inf)
        fall_effect = np.where(base > min_change, base / np.maximum(base - min_change, 1e-300),
                               np.inf)
    fall_need = np.maximum.reduce([np.full_like(base, factor), fall_effect, fall_sig])
    fall_value = base / np.maximum(share, floor_share)

    rise_ratio = rise_value / rise_need
    fall_ratio = fall_value / fall_need
    best_rise, best_fall = int(np.argmax(rise_ratio)), int(np.argmax(fall_ratio))
    if rise_ratio[best_rise] >= fall_ratio[best_fall]:
        i, direction, value, need = best_rise, "rise", rise_value, rise_need
    else:
        i, direction, value, need = best_fall, "fall", fall_value, fall_need
    return Surge(float(value[i]), float(need[i]), int(tested[i]), direction, float(share[i]),
                 float(base[i]))
