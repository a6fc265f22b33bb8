"""Distances from binned counts: serving counts ``s`` vs baseline counts ``b``.

All functions accept ``s`` of shape ``(k,)`` or ``(r, k)`` (``r`` windows at once, which is how
the noise floor is simulated) and a baseline ``b`` of shape ``(k,)``; bins are in value order
for numeric features (so KS and Wasserstein make sense) and in vocabulary order for
categorical ones. They are exact for the binned distributions; the tests check each one
against an independent reference (``scipy.spatial.distance.jensenshannon(base=2)``,
``scipy.spatial.distance.chebyshev``, ``scipy.stats.ks_2samp``,
``scipy.stats.wasserstein_distance``, ``scipy.stats.chisquare`` and a hand-written PSI).

- ``jsd``: Jensen-Shannon *distance* with log base 2, in [0, 1].
- ``linf``: L-infinity (largest absolute difference of bin probabilities), as TFDV uses for
  categorical features.
- ``psi``: population stability index, sum (s - b) ln(s / b), with Jeffreys smoothing (half a
  count added to every bin on both sides) so empty bins stay finite.
- ``chi2``: Pearson's phi^2 = chi-square statistic / n, same smoothing.
- ``ks``: Kolmogorov-Smirnov statistic on the bins (largest CDF gap at a bin edge).
- ``wasserstein``: W1 between the binned distributions, each bin's mass at its representative
  point, divided by the baseline standard deviation (so it reads in units of sigma).

>>> import numpy as np
>>> s, b = np.array([10, 30, 60]), np.array([20, 30, 50])
>>> round(float(distance("linf", s, b)), 3), round(float(distance("ks", s, b)), 3)
(0.1, 0.1)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np

__all__ = ["DISTANCES", "distance"]


def _probabilities(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def _smoothed(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64) + 0.5
    return counts / counts.sum(axis=-1, keepdims=True)


@numba.njit(cache=True, nogil=True)
def _jsd_row(s: np.ndarray, b: np.ndarray) -> float:  # pragma: no cover (numba)
    total_s, total_b = s.sum(), b.sum()
    divergence = 0.0
    for i in range(s.shape[0]):
        p = s[i] / total_s if total_s > 0 else 0.0
        q = b[i] / total_b if total_b > 0 else 0.0
        m = 0.5 * (p + q)
        if p > 0:
            divergence += p * math.log2(p / m)
        if q > 0:
            divergence += q * math.log2(q / m)
    return math.sqrt(min(max(0.5 * divergence, 0.0), 1.0))


@numba.njit(cache=True, nogil=True)
def _linf_row(s: np.ndarray, b: np.ndarray) -> float:  # pragma: no cover (numba)
    total_s, total_b = s.sum(), b.sum()
    largest = 0.0
    for i in range(s.shape[0]):
        p = s[i] / total_s if total_s > 0 else 0.0
        q = b[i] / total_b if total_b > 0 else 0.0
        largest = max(largest, abs(p - q))
    return largest


# One loop per distance, not one taking the row kernel as an argument: numba does not cache
# a function-typed argument across processes, and every process would compile it (~1.3 s).
@numba.njit(cache=True, nogil=True)
def _jsd_rows(s: np.ndarray, b: np.ndarray) -> np.ndarray:  # pragma: no cover (numba)
    out = np.empty(s.shape[0])
    for r in range(s.shape[0]):
        out[r] = _jsd_row(s[r], b)
    return out


@numba.njit(cache=True, nogil=True)
def _linf_rows(s: np.ndarray, b: np.ndarray) -> np.ndarray:  # pragma: no cover (numba)
    out = np.empty(s.shape[0])
    for r in range(s.shape[0]):
        out[r] = _linf_row(s[r], b)
    return out


def _compiled(row: Callable, rows: Callable, s: np.ndarray, b: np.ndarray
              ) -> np.ndarray | None:
    """A compiled distance of one window (``row``: every check of every window), or of each
    of a stack of windows (``rows``: a noise-floor simulation, 1,000 at a time), which so
    gets the very value each window gets when judged alone; a compiled loop beats a dozen
    numpy calls on ~100 bins. None for other shapes."""
    if s.ndim not in (1, 2) or b.ndim != 1 or s.shape[-1:] != b.shape:
        return None
    s = np.ascontiguousarray(s, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    return np.float64(row(s, b)) if s.ndim == 1 else rows(s, b)


def jsd(s: np.ndarray, b: np.ndarray, **_: object) -> np.ndarray:
    compiled = _compiled(_jsd_row, _jsd_rows, s, b)
    if compiled is not None:
        return compiled
    p, q = _probabilities(s), _probabilities(b)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log2(p / m), 0.0)
        right = np.where(q > 0, q * np.log2(q / m), 0.0)
    divergence = 0.5 * (left.sum(axis=-1) + right.sum(axis=-1))
    return np.sqrt(np.clip(divergence, 0.0, 1.0))


def linf(s: np.ndarray, b: np.ndarray, **_: object) -> np.ndarray:
    compiled = _compiled(_linf_row, _linf_rows, s, b)
    if compiled is not None:
        return compiled
    return np.abs(_probabilities(s) - _probabilities(b)).max(axis=-1)


def psi(s: np.ndarray, b: np.ndarray, **_: object) -> np.ndarray:
    p, q = _smoothed(s), _smoothed(b)
    return ((p - q) * np.log(p / q)).sum(axis=-1)


def chi2(s: np.ndarray, b: np.ndarray, **_: object) -> np.ndarray:
    p, q = _smoothed(s), _smoothed(b)
    return ((p - q) ** 2 / q).sum(axis=-1)


def ks(s: np.ndarray, b: np.ndarray, **_: object) -> np.ndarray:
    gap = np.cumsum(_probabilities(s), axis=-1) - np.cumsum(_probabilities(b), axis=-1)
    return np.abs(gap).max(axis=-1)


def wasserstein(s: np.ndarray, b: np.ndarray, *, points: np.ndarray | None = None,
                scale: float = 1.0, **_: object) -> np.ndarray:
    if points is None:
        raise ValueError("wasserstein needs the bins' representative points")
    gap = np.cumsum(_probabilities(s), axis=-1) - np.cumsum(_probabilities(b), axis=-1)
    widths = np.diff(points)
    value = (np.abs(gap[..., :-1]) * widths).sum(axis=-1)
    return value / scale if scale > 0 else value


DISTANCES = {"jsd": jsd, "linf": linf, "psi": psi, "chi2": chi2, "ks": ks,
             "wasserstein": wasserstein}

# How each distance grows under pure sampling noise: "square" ones behave like sqrt of a
# chi-square variable, "linear" ones (PSI, phi^2) like a chi-square variable itself.
NOISE_SHAPE = {"jsd": "square", "linf": "square", "ks": "square", "wasserstein": "square",
               "psi": "linear", "chi2": "linear"}


def distance(metric: str, s: np.ndarray, b: np.ndarray, **options: object) -> np.ndarray:
    """The named distance between serving counts ``s`` and baseline counts ``b``."""
    try:
        function = DISTANCES[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(DISTANCES)}") from None
    return function(np.asarray(s), np.asarray(b), **options)
