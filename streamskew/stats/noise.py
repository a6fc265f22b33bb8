"""The sampling-noise floor under every threshold.

A window of ``n`` records drawn from the baseline distribution itself still differs from it:
with 100 bins and ``n = 100`` the Jensen-Shannon distance is around 0.5 from noise alone. So
a check's effective threshold is ``max(configured threshold, noise floor)``, where the floor
is the ``1 - alpha`` quantile of the distance under the null hypothesis "this window comes
from the baseline distribution".

How the floor is computed (deterministic, so every process and every replay agree):

1. The baseline is itself a finite sample of ``N`` records, so both sides carry noise; the
   variance of a bin-probability difference is ``p(1-p) (1/n + 1/N)``. We simulate windows of
   the effective size ``n_eff = n N / (n + N)`` drawn from the baseline bin probabilities
   (multinomial), 1,000 of them, with a seed derived from the feature, metric and size.
2. The simulated statistic (the distance squared, or PSI / phi^2 as they are) is fitted by a
   scaled chi-square ``a * chi2(nu)`` with the same mean and variance (Satterthwaite), and the
   floor is its ``1 - alpha`` quantile (Wilson-Hilferty), which reaches far smaller ``alpha``
   than 1,000 draws could resolve directly. Asymptotically the JS divergence *is* a scaled
   chi-square (8 n JS ~ chi2(k - 1) in nats) and n KS^2 has the exponential tail of chi2(2).
   Maximum-type distances have lighter-than-chi-square tails that such a fit misjudges, so
   they use proven bounds instead: KS the Dvoretzky-Kiefer-Wolfowitz inequality, L-infinity a
   Chernoff bound per bin with a union bound over bins (both at the effective size).
3. Simulations run at window sizes on a grid of ratio sqrt(2) and are cached; a size between
   two grid points interpolates their floors linearly in log-log (floors fall like a power
   of n), so each feature needs only a handful of simulations over a run (a window that
   grows from 1 pane to 15 needs 9). Against a simulation at the size itself, the
   interpolation is off by well under 1% for JSD and within ~2% for PSI (measured on
   uniform, Zipf and nearly-empty-bin baselines; the fit's own seed-to-seed spread is
   0.5-1.4%).
4. Past ``asymptotic_from`` (the grid point at or below ``max(2^14, 64 k)`` for ``k``
   occupied bins) the statistic is in its chi-square regime, where the floor of a "square"
   distance falls exactly like ``n_eff^(-1/2)`` and PSI / phi^2 like ``1 / n_eff``: larger
   windows scale the floor at that point instead of simulating. Measured against direct
   simulations from 2^12 to 2^20, ``floor * n_eff^power`` stays within 2% (JSD) and 5% (PSI,
   mostly the fit's own spread) of its value at 2^14. This keeps a cold start cheap (a run
   whose windows hold 20k-250k records simulates each feature once, not 9 times) and the
   floor a smooth function of n.

Rates (missing, out-of-range, unseen, type changes) use a Chernoff bound instead: the floor is
the smallest rate ``r > p0`` with ``n_eff KL(r || p0) >= ln(1 / alpha)``, which bounds the
false-alarm probability by ``alpha`` for a binomial count.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from functools import lru_cache
from statistics import NormalDist
from typing import Generic, TypeVar

import numba
import numpy as np

from .distances import NOISE_SHAPE, distance

__all__ = ["NoiseFloors", "SharedFloors", "chi2_quantile", "dkw_floor", "effective_size",
           "max_deviation_floor", "next_bucket", "rate_floor", "size_bucket", "two_sample_size"]

ASYMPTOTIC_FROM = 2**14  # window size from which floors scale instead of being simulated
DRAWS = 1000  # the fit needs only a mean and a variance: seed-to-seed spread of a floor 0.5-1.4%
STEPS_PER_OCTAVE = 2  # grid of window sizes: int(2 ** (step / STEPS_PER_OCTAVE))


def _grid_point(step: int) -> int:
    return int(2 ** (step / STEPS_PER_OCTAVE))


def size_bucket(n: int) -> int:
    """Largest grid point (ratio sqrt(2)) not above ``n``.

    >>> size_bucket(1000), size_bucket(1024), size_bucket(1500)
    (724, 1024, 1448)
    """
    if n < 2:
        return max(n, 1)
    step = math.floor(STEPS_PER_OCTAVE * math.log2(n)) + 1
    while _grid_point(step) > n:
        step -= 1
    return max(_grid_point(step), 1)


def next_bucket(bucket: int) -> int:
    """The grid point after ``bucket``."""
    step = math.floor(STEPS_PER_OCTAVE * math.log2(bucket)) + 1
    while _grid_point(step) <= bucket:
        step += 1
    return _grid_point(step)


def effective_size(n: float, baseline_total: float) -> float:
    """Window size with the noise of both the window and the (finite) baseline sample."""
    if baseline_total <= 0:
        return float(n)
    return n * baseline_total / (n + baseline_total)


def two_sample_size(n_a: float, n_b: float) -> float:
    """The effective size of two windows compared with each other (``version_shift``).

    Both are samples of one distribution ``p`` under the null (two versions served the
    same inputs). A bin's share difference then has variance ``p (1 - p) (1/n_a + 1/n_b)``,
    the variance of one sample of ``n_a n_b / (n_a + n_b)`` against ``p`` itself: the
    floors of a window against an exact reference at that size are the two-sample floors
    (to the same chi-square approximation the one-sample floors rest on). It is the
    :func:`effective_size` of a window against a baseline, with the baseline's count
    replaced by the other window's: the one-sample floors were already two-sample floors.

    >>> two_sample_size(1000, 1000), round(two_sample_size(100, 10_000), 1)
    (500.0, 99.0)
    """
    return effective_size(n_a, n_b)


def chi2_quantile(nu: float, alpha: float) -> float:
    """Upper ``alpha`` quantile of chi-square with ``nu`` degrees (Wilson-Hilferty)."""
    z = NormalDist().inv_cdf(1 - alpha)
    h = 2 / (9 * nu)
    return nu * max(1 - h + z * math.sqrt(h), 0.0) ** 3


Floors = TypeVar("Floors")


class SharedFloors(Generic[Floors]):
    """Floors built once per process and shared by every monitor that asks with the same key.

    Simulating floors is the costly part of a cold start, and they depend only on what the
    key names (a baseline id, a feature or model, alpha): models that share a baseline, and
    services started one after another in one process, share them. Bounded, least recently
    used out.

    >>> shared = SharedFloors(max_size=2)
    >>> shared.get("a", lambda: [1]) is shared.get("a", lambda: [2])
    True
    """

    def __init__(self, max_size: int = 4096) -> None:
        self.max_size = max_size
        self._built: OrderedDict[Hashable, Floors] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], Floors]) -> Floors:
        floors = self._built.get(key)
        if floors is not None:
            self._built.move_to_end(key)
            return floors
        floors = self._built[key] = build()
        if len(self._built) > self.max_size:
            self._built.popitem(last=False)
        return floors


class NoiseFloors:
    """Cached noise floors of one feature's distances (see the module docs).

    >>> floors = NoiseFloors(np.full(100, 1000), alpha=1e-5, key="amount")
    >>> floors.floor("jsd", 100) > 0.4 > floors.floor("jsd", 10_000) > 0.04
    True
    """

    def __init__(self, baseline_counts: np.ndarray, alpha: float, key: str,
                 points: np.ndarray | None = None, scale: float = 1.0,
                 reference_noise: bool = True) -> None:
        self.baseline_counts = np.asarray(baseline_counts, dtype=np.int64)
        self.total = int(self.baseline_counts.sum())
        # reference_noise=False: ``n`` is already an effective size (two windows compared
        # with each other: see two_sample_size), the counts only give the probabilities.
        self.noise_total = self.total if reference_noise else 0
        self.probabilities = self.baseline_counts / max(self.total, 1)
        self.alpha = alpha
        self.key = key
        self.options = {"points": points, "scale": scale}
        self._cache: dict[tuple[str, int], float] = {}
        self._means: dict[tuple[str, int], float] = {}  # null mean of the fitted statistic
        self._exact: dict[tuple[str, int], float] = {}
        occupied = int(np.count_nonzero(self.baseline_counts))
        self.asymptotic_from = size_bucket(max(ASYMPTOTIC_FROM, 64 * occupied))

    def floor(self, metric: str, n: int) -> float:
        """The ``1 - alpha`` null quantile of ``metric`` for a window of ``n`` values."""
        if self.total == 0 or np.count_nonzero(self.baseline_counts) < 2:
            return 0.0  # a single occupied bin: no sampling noise in its distribution
        if metric in ("ks", "linf"):  # exact bounds, cached per window size
            cached = self._exact.get((metric, n))
            if cached is None:
                size = effective_size(n, self.noise_total)
                cached = dkw_floor(size, self.alpha) if metric == "ks" else \
                    max_deviation_floor(self.probabilities, size, self.alpha)
                if len(self._exact) >= 4096:  # bounded over a long run
                    self._exact.clear()
                self._exact[(metric, n)] = cached
            return cached
        if n > self.asymptotic_from:  # chi-square regime: module docs, point 4
            anchor = self.asymptotic_from
            power = 1.0 if NOISE_SHAPE[metric] == "linear" else 0.5
            shrink = effective_size(anchor, self.noise_total) / effective_size(n, self.noise_total)
            return self._at(metric, anchor) * shrink**power
        low = size_bucket(n)
        if low >= n:
            return self._at(metric, low)
        high = next_bucket(low)
        # Floors fall like a power of n (1/sqrt(n) for distances, 1/n for PSI and phi^2),
        # a straight line in log-log: interpolate between the two cached grid points.
        f_low, f_high = self._at(metric, low), self._at(metric, high)
        if f_low <= 0 or f_high <= 0:
            return f_low
        t = (math.log(n) - math.log(low)) / (math.log(high) - math.log(low))
        return math.exp(math.log(f_low) + t * (math.log(f_high) - math.log(f_low)))

    def null_mean(self, metric: str, n: int) -> float:
        """The mean, under the null, of the statistic the floor is fitted to (the distance
        squared, or PSI / phi^2 as they are) for a window of ``n`` values: the part of a
        window's value that is noise on average. From the same simulations as the floors
        (L-infinity and KS simulate for it too); scales like ``1 / n_eff`` past
        ``asymptotic_from`` and interpolates in log-log between grid points, as they do."""
        if self.total == 0 or np.count_nonzero(self.baseline_counts) < 2 or n < 1:
            return 0.0
        if n > self.asymptotic_from:
            anchor = self.asymptotic_from
            shrink = effective_size(anchor, self.noise_total) / effective_size(n, self.noise_total)
            return self._mean_at(metric, anchor) * shrink
        low = size_bucket(n)
        if low >= n:
            return self._mean_at(metric, low)
        high = next_bucket(low)
        m_low, m_high = self._mean_at(metric, low), self._mean_at(metric, high)
        if m_low <= 0 or m_high <= 0:
            return m_low
        t = (math.log(n) - math.log(low)) / (math.log(high) - math.log(low))
        return math.exp(math.log(m_low) + t * (math.log(m_high) - math.log(m_low)))

    def _mean_at(self, metric: str, bucket: int) -> float:
        if (metric, bucket) not in self._means:
            self._at(metric, bucket)
        return self._means[(metric, bucket)]

    def _at(self, metric: str, bucket: int) -> float:
        cached = self._cache.get((metric, bucket))
        if cached is None:
            cached = self._cache[(metric, bucket)] = self._simulate(metric, bucket)
        return cached

    def _simulate(self, metric: str, n: int) -> float:
        size = effective_size(n, self.noise_total)
        seed = hashlib.sha256(f"{self.key}|{metric}|{n}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(seed[:8], "little"))
        draws = rng.multinomial(max(round(size), 1), self.probabilities, size=DRAWS)
        values = distance(metric, draws, self.baseline_counts, **self.options)
        square = NOISE_SHAPE[metric] == "square"
        statistic = values**2 if square else values
        mean, variance = float(statistic.mean()), float(statistic.var())
        self._means[(metric, n)] = mean
        if variance <= 0 or mean <= 0:
            quantile = float(statistic.max())
        else:
            scale, nu = variance / (2 * mean), 2 * mean * mean / variance
            quantile = scale * chi2_quantile(nu, self.alpha)
        return math.sqrt(quantile) if square else quantile


def dkw_floor(size: float, alpha: float) -> float:
    """KS floor from the Dvoretzky-Kiefer-Wolfowitz inequality (Massart's constant):
    P(sup |F_n - F| > e) <= 2 exp(-2 n e^2). A proven bound, so never anti-conservative;
    on bins (a coarser CDF) it is conservative."""
    return math.sqrt(math.log(2 / alpha) / (2 * size))


def max_deviation_floor(probabilities: np.ndarray, size: float, alpha: float) -> float:
    """L-infinity floor: the smallest e with sum_i P(|p^_i - p_i| >= e) <= alpha, each
    bin's two tails bounded by Chernoff (binomial KL). A union bound, so conservative; the
    largest deviation is a maximum over bins, whose tail a chi-square fit underestimates.

    >>> round(max_deviation_floor(np.full(10, 0.1), 10_000, 1e-5), 4)
    0.0163
    """
    p = np.ascontiguousarray(probabilities[probabilities > 0], dtype=np.float64)
    return float(_max_deviation_bisect(p, float(size), math.log(1 / alpha)))


@numba.njit(cache=True, nogil=True)
def _max_deviation_bisect(p: np.ndarray, size: float,
                          target: float) -> float:  # pragma: no cover (numba)
    # Bisection on e: the summed Chernoff tails fall as e grows. Compiled because the
    # floor is exact per window size, so it is solved again for (nearly) every window.
    low, high = 0.0, 1.0
    for _ in range(50):
        middle = 0.5 * (low + high)
        log_total = -np.inf  # log of the summed tails, kept in logs against underflow
        for pi in p:
            upper = min(pi + middle, 1.0)
            log_total = np.logaddexp(log_total, -size * _bernoulli_kl(upper, pi))
            if pi - middle > 0:
                log_total = np.logaddexp(log_total, -size * _bernoulli_kl(pi - middle, pi))
        if log_total + target <= 0.0:  # the tails sum to <= alpha
            high = middle
        else:
            low = middle
    return high


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bernoulli_kl(r: float, p: float) -> float:  # pragma: no cover (numba)
    """KL(r || p) of two Bernoulli distributions, in nats (0 log 0 = 0; infinite where r
    is impossible under p, as for p = 0 < r)."""
    total = 0.0
    if r > 0:
        total += r * math.log(r / p)
    if r < 1:
        total += (1 - r) * math.log((1 - r) / (1 - p))
    return total


@lru_cache(maxsize=65_536)  # judged for every window and rate check: same inputs recur
def rate_floor(p0: float, n: int, alpha: float, baseline_total: float) -> float:
    """Smallest rate a window of ``n`` records reaches with probability <= ``alpha`` when the
    true rate is ``p0`` (Chernoff bound with the effective size).

    >>> round(rate_floor(0.01, 10_000, 1e-5, 1_000_000), 4)
    0.0152
    """
    if n <= 0:
        return 1.0
    p0 = min(max(p0, 0.0), 1.0)
    if p0 >= 1.0:
        return 1.0
    size = effective_size(n, baseline_total)
    return float(_rate_bisect(p0, math.log(1 / alpha) / size))


@numba.njit(cache=True, nogil=True)
def _rate_bisect(p0: float, target: float) -> float:  # pragma: no cover (numba)
    # Compiled: every scale of every rate check asks for its own window size.
    low, high = p0, 1.0
    if _bernoulli_kl(high, p0) < target:
        return 1.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        if _bernoulli_kl(middle, p0) >= target:
            high = middle
        else:
            low = middle
    return high
