"""Noise floors of performance metrics: never fire on sampling noise.

A window of ``n`` labelled requests drawn from the validation distribution itself still
scores differently from the validation set, and more so the smaller it is. As for the
distances (:mod:`streamskew.stats.noise`), a metric's effective threshold is
``max(configured, floor(n))`` where the floor is the ``1 - alpha`` quantile of the metric's
degradation under the null "this window performs like the validation set", with the
validation set's own sampling noise included (the effective size ``n_eff = n N / (n + N)``).
All of it follows from what the baseline file stores, deterministically:

- **accuracy, precision, recall** are proportions of a count the window knows (labelled
  requests, predicted positives, actual positives): a Chernoff bound on the binomial error
  share (:func:`~streamskew.stats.noise.rate_floor`), a proven bound, so conservative;
- **F1, ROC AUC** (realized) and every **CBPE estimate** are not means of per-record terms:
  1,000 windows of ``n_eff`` are drawn (multinomial) from the validation histograms (the
  joint score-bin x label histogram for realized metrics, the score histogram for CBPE's),
  and the drop's mean, spread and skew give a Cornish-Fisher quantile (a normal quantile
  corrected for positive skew, never below the normal one). Sizes are simulated on the
  sqrt(2) grid and interpolated in log-log; past 2^14 the floor (and the spread, for the
  confidence intervals) scales like ``n_eff^-1/2``;
- **log loss, MAE, RMSE, bias** are means of per-record terms: the Cornish-Fisher quantile
  of a mean of ``n_eff`` terms from the stored moments (mean, variance, skew), no simulation.

Tests (tests/test_performance.py) run hundreds of clean windows of 100 to 20,000 labels
through every metric with no floor crossed, and check the floors against direct
simulations.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ..stats.noise import effective_size, next_bucket, rate_floor, size_bucket
from .cbpe import expected_metrics
from .metrics import binned_auc, confusion, rates
from .reference import ReferencePerformance
from .summary import Moments

__all__ = ["PerformanceFloors", "WindowCounts"]

DRAWS = 1000
ASYMPTOTIC_FROM = 2**14
PROPORTIONS = ("accuracy", "precision", "recall")


@dataclass(frozen=True)
class WindowCounts:
    """The counts a window's floors depend on."""

    n: int  # labelled requests (realized) or scored requests (estimated)
    predicted_positive: int = 0
    actual_positive: int = 0


def tail_quantile(mean: float, std: float, skew: float, z: float) -> float:
    """Cornish-Fisher upper quantile, corrected only for positive skew."""
    return mean + std * (z + max(skew, 0.0) * (z * z - 1) / 6)


class PerformanceFloors:
    """Floors and spreads of one reference's metrics (see the module docs)."""

    def __init__(self, reference: ReferencePerformance, alpha: float, key: str) -> None:
        self.reference = reference
        self.alpha = alpha
        self.key = key
        self.z = NormalDist().inv_cdf(1 - alpha)
        self.z_two_sided = NormalDist().inv_cdf(1 - alpha / 2)
        self._cache: dict[tuple[bool, int], dict[str, tuple[float, float, float]]] = {}
        if reference.is_classifier:
            joint = np.concatenate([reference.positives, reference.negatives]).astype(float)
            self._joint = joint / max(joint.sum(), 1.0)
            marginal = (reference.positives + reference.negatives).astype(float)
            self._marginal = marginal / max(marginal.sum(), 1.0)

    # -- public ------------------------------------------------------------------------------

    def floor(self, metric: str, estimated: bool, counts: WindowCounts) -> float:
        """The degradation a null window of these counts exceeds with probability alpha."""
        ref = self.reference
        if counts.n <= 0:
            return math.inf
        if not estimated and metric in PROPORTIONS:
            n, p0, total = self._proportion(metric, counts)
            if n <= 0:
                return math.inf
            p0 = min(max(p0, 0.5 / (total + 1)), 1.0)
            return rate_floor(p0, n, self.alpha, total) - p0
        if not estimated and metric in ("log_loss", "mae", "rmse", "bias"):
            return self._mean_floor(metric, counts.n)
        return self._simulated(metric, estimated, counts.n, ref.count)

    def spread(self, metric: str, estimated: bool, counts: WindowCounts) -> float:
        """Standard deviation of the metric for a null window of these counts (for CIs)."""
        ref = self.reference
        if counts.n <= 0:
            return math.inf
        if not estimated and metric in PROPORTIONS:
            n, p0, total = self._proportion(metric, counts)
            size = effective_size(n, total) if n > 0 else 0
            return math.sqrt(p0 * (1 - p0) / size) if size > 0 else math.inf
        if not estimated and metric in ("log_loss", "mae", "rmse", "bias"):
            moments = self._moments(metric)
            size = effective_size(counts.n, moments.n)
            std = math.sqrt(moments.variance / size)
            if metric == "rmse":  # delta method: d sqrt(m) = dm / (2 sqrt(m))
                return std / (2 * ref.metrics["rmse"]) if ref.metrics["rmse"] > 0 else math.inf
            return std
        # Past ASYMPTOTIC_FROM the spread scales like n_eff^-1/2 from the anchor, as the
        # floor does: the floor's simulation serves both (each other size would cost one
        # more simulation of DRAWS windows, ~0.1 s, per window size met).
        bucket = min(size_bucket(max(counts.n, 1)), size_bucket(ASYMPTOTIC_FROM))
        _, std, _ = self._stats(estimated, bucket)[metric]
        return std * math.sqrt(effective_size(bucket, ref.count)
                               / effective_size(counts.n, ref.count))

    # -- proportions and means ---------------------------------------------------------------

    def _proportion(self, metric: str, counts: WindowCounts) -> tuple[int, float, int]:
        """(window denominator, reference error share, validation denominator)."""
        ref = self.reference
        tp, fp, fn, _ = confusion(ref.positives, ref.negatives, ref.layout().threshold_bin)
        p0 = 1.0 - ref.metrics[metric]
        if metric == "accuracy":
            return counts.n, p0, ref.count
        if metric == "precision":
            return counts.predicted_positive, p0, int(tp + fp)
        return counts.actual_positive, p0, int(tp + fn)

    def _moments(self, metric: str) -> Moments:
        name = {"log_loss": "log_loss", "mae": "abs_error", "rmse": "squared_error",
                "bias": "error"}[metric]
        return self.reference.moments[name]

    def _mean_floor(self, metric: str, n: int) -> float:
        ref = self.reference
        moments = self._moments(metric)
        size = effective_size(n, moments.n)
        std = math.sqrt(moments.variance / size)
        skew = moments.skewness / math.sqrt(size)
        if metric == "bias":  # two-sided: a bias either way is a change
            shift = std * (self.z_two_sided + abs(skew) * (self.z_two_sided**2 - 1) / 6)
            return shift / ref.scale if ref.scale > 0 else math.inf
        upper = tail_quantile(moments.mean, std, skew, self.z)
        if metric == "rmse":
            rmse = ref.metrics["rmse"]
            return math.sqrt(max(upper, 0.0)) / rmse - 1 if rmse > 0 else math.inf
        return (upper - moments.mean) / moments.mean if moments.mean > 0 else math.inf

    # -- simulated ---------------------------------------------------------------------------

    def _simulated(self, metric: str, estimated: bool, n: int, total: int) -> float:
        if n > ASYMPTOTIC_FROM:
            anchor = size_bucket(ASYMPTOTIC_FROM)
            shrink = effective_size(anchor, total) / effective_size(n, total)
            return self._floor_at(metric, estimated, anchor) * math.sqrt(shrink)
        low = size_bucket(n)
        if low >= n:
            return self._floor_at(metric, estimated, low)
        high = next_bucket(low)
        f_low = self._floor_at(metric, estimated, low)
        f_high = self._floor_at(metric, estimated, high)
        if not (f_low > 0 and f_high > 0 and math.isfinite(f_low) and math.isfinite(f_high)):
            return max(f_low, f_high)
        t = (math.log(n) - math.log(low)) / (math.log(high) - math.log(low))
        return math.exp(math.log(f_low) + t * (math.log(f_high) - math.log(f_low)))

    def _floor_at(self, metric: str, estimated: bool, bucket: int) -> float:
        mean, std, skew = self._stats(estimated, bucket)[metric]
        if not math.isfinite(std):
            return math.inf
        return tail_quantile(mean, std, skew, self.z)

    def _stats(self, estimated: bool, bucket: int) -> dict[str, tuple[float, float, float]]:
        """Mean, std and skew of each metric's drop over simulated null windows."""
        cached = self._cache.get((estimated, bucket))
        if cached is not None:
            return cached
        ref = self.reference
        size = max(round(effective_size(bucket, ref.count)), 1)
        seed = hashlib.sha256(f"{self.key}|{estimated}|{bucket}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(seed[:8], "little"))
        threshold_bin = ref.layout().threshold_bin
        if estimated:
            draws = rng.multinomial(size, self._marginal, size=DRAWS)
            values = expected_metrics(draws, ref.calibration, threshold_bin)
            reference = ref.estimated
        else:
            draws = rng.multinomial(size, self._joint, size=DRAWS)
            positives, negatives = draws[:, :ref.bins], draws[:, ref.bins:]
            values = rates(*confusion(positives, negatives, threshold_bin))
            values["roc_auc"], _ = binned_auc(positives, negatives)
            reference = ref.metrics
        stats: dict[str, tuple[float, float, float]] = {}
        for metric, samples in values.items():
            drops = reference[metric] - np.asarray(samples, np.float64)
            drops = drops[np.isfinite(drops)]
            if len(drops) < DRAWS // 2:  # mostly undefined at this size (no positives)
                stats[metric] = (math.nan, math.inf, 0.0)
                continue
            std = float(drops.std())
            skew = float(np.mean((drops - drops.mean()) ** 3) / std**3) if std > 0 else 0.0
            stats[metric] = (float(drops.mean()), std, skew)
        self._cache[(estimated, bucket)] = stats
        if len(self._cache) > 256:
            self._cache.pop(next(iter(self._cache)))
        return stats
