"""Each distance of streamskew.stats.distances against an independent reference.

The references are scipy's implementations (or the definition written out by hand here) on
the same binned data. Tolerance for those comparisons: 1e-9 absolute (1e-12 relative where
stated) -- both sides do the same arithmetic on the same small integer counts, so they can
only differ by float rounding (~1e-15 per operation over ~100 bins), many orders of magnitude
below any real error (a wrong bin, a missing smoothing term, a wrong log base changes the
value in the 2nd or 3rd digit).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance as scipy_distance

from streamskew.baseline import Baseline, NumericBaseline
from streamskew.stats.distances import DISTANCES, distance

ATOL = 1e-9


def count_vectors(seed: int, k: int, rows: int, high: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` serving count vectors and one baseline vector over ``k`` bins, with zero bins
    (about a quarter of them, on either or both sides), skewed so the distances differ."""
    rng = np.random.default_rng(seed)
    b = rng.integers(0, high, k)
    b[rng.random(k) < 0.25] = 0
    b[0] = max(b[0], 1)
    s = rng.integers(0, high, (rows, k)) * rng.integers(1, 4, (rows, 1))
    s[rng.random((rows, k)) < 0.25] = 0
    s[:, 0] += 1  # no empty windows
    s[0] = b  # one identical pair: distance 0
    s[1] = 3 * b  # same proportions, other size: distance 0
    return s, b


CASES = [(1, 2), (2, 5), (3, 20), (4, 101)]  # (seed, bins)


def batch_and_rows(metric: str, s: np.ndarray, b: np.ndarray, reference, **options
                   ) -> None:
    """distance() on the 2-d batch and on every 1-d row equals ``reference(row, b)``."""
    batched = distance(metric, s, b, **options)
    assert batched.shape == (len(s),)
    expected = np.array([reference(row, b) for row in s])
    np.testing.assert_allclose(batched, expected, rtol=0, atol=ATOL)
    singles = np.array([float(distance(metric, row, b, **options)) for row in s])
    np.testing.assert_allclose(singles, expected, rtol=0, atol=ATOL)
    # Zero exactly when the compared distributions are equal: the raw proportions, or for
    # the smoothed metrics (psi, chi2) the smoothed ones, which also depend on the size.
    if metric in ("psi", "chi2"):
        same = np.array([np.allclose((row + 0.5) / (row + 0.5).sum(),
                                     (b + 0.5) / (b + 0.5).sum(), rtol=0, atol=1e-15)
                         for row in s])
    else:
        same = np.all(s * b.sum() == b * s.sum(axis=1, keepdims=True), axis=1)
    assert same[0] and same.sum() < len(s) - 5
    np.testing.assert_allclose(batched[same], 0.0, atol=ATOL)
    assert np.all(batched[~same] > 1e-6)


@pytest.mark.parametrize(("seed", "k"), CASES)
def test_jsd_vs_scipy(seed: int, k: int) -> None:
    s, b = count_vectors(seed, k, 40)
    batch_and_rows("jsd", s, b,
                   lambda row, base: scipy_distance.jensenshannon(row, base, base=2))


@pytest.mark.parametrize(("seed", "k"), CASES)
def test_linf_vs_scipy(seed: int, k: int) -> None:
    s, b = count_vectors(seed, k, 40)
    batch_and_rows("linf", s, b,
                   lambda row, base: scipy_distance.chebyshev(row / row.sum(),
                                                              base / base.sum()))


def _points(k: int, seed: int) -> np.ndarray:
    """Distinct increasing representative points, unevenly spaced, some negative."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.uniform(0.1, 3.0, k)) - 5.0


@pytest.mark.parametrize(("seed", "k"), CASES)
def test_ks_vs_ks_2samp(seed: int, k: int) -> None:
    """Samples that put every bin's count at that bin's point have the binned CDFs exactly,
    so ks_2samp's statistic must equal the binned KS."""
    s, b = count_vectors(seed, k, 25)
    points = _points(k, seed)
    batch_and_rows("ks", s, b, lambda row, base: stats.ks_2samp(
        np.repeat(points, row), np.repeat(points, base)).statistic)


@pytest.mark.parametrize(("seed", "k"), CASES)
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_wasserstein_vs_scipy(seed: int, k: int, scale: float) -> None:
    s, b = count_vectors(seed, k, 40)
    points = _points(k, seed)
    batch_and_rows("wasserstein", s, b, lambda row, base: stats.wasserstein_distance(
        points, points, u_weights=row, v_weights=base) / scale, points=points, scale=scale)


def test_wasserstein_needs_points() -> None:
    with pytest.raises(ValueError):
        distance("wasserstein", np.array([1, 2]), np.array([2, 1]))
    with pytest.raises(ValueError):
        distance("no-such-metric", np.array([1, 2]), np.array([2, 1]))


def _jeffreys(counts: np.ndarray) -> np.ndarray:
    """The documented smoothing: half a count in every bin, then normalized."""
    smoothed = [c + 0.5 for c in counts.tolist()]
    total = sum(smoothed)
    return np.array([c / total for c in smoothed])


def _chi2_by_hand(row: np.ndarray, base: np.ndarray) -> float:
    p, q = _jeffreys(row), _jeffreys(base)
    return float(sum((pi - qi) ** 2 / qi for pi, qi in zip(p, q, strict=True)))


def _psi_by_hand(row: np.ndarray, base: np.ndarray) -> float:
    p, q = _jeffreys(row), _jeffreys(base)
    return float(sum((pi - qi) * np.log(pi / qi) for pi, qi in zip(p, q, strict=True)))


@pytest.mark.parametrize(("seed", "k"), CASES)
def test_chi2_is_smoothed_phi_squared(seed: int, k: int) -> None:
    """Documented: phi^2 = Pearson chi-square / n on Jeffreys-smoothed proportions. Reference
    1: the definition by hand. Reference 2: scipy.stats.chisquare on the smoothed proportions
    scaled to the same total n (f_obs = n p, f_exp = n q), divided by n; relative 1e-12
    because the statistic is ~n times larger before the division."""
    s, b = count_vectors(seed, k, 40)
    batch_and_rows("chi2", s, b, _chi2_by_hand)
    values = distance("chi2", s, b)
    for row, value in zip(s, values, strict=True):
        n = float(row.sum())
        statistic = stats.chisquare(f_obs=n * _jeffreys(row), f_exp=n * _jeffreys(b)).statistic
        assert value == pytest.approx(statistic / n, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("seed", "k"), CASES)
def test_psi_by_hand(seed: int, k: int) -> None:
    s, b = count_vectors(seed, k, 40)
    batch_and_rows("psi", s, b, _psi_by_hand)
    # PSI is symmetric in its arguments and non-negative (each term (p-q) ln(p/q) >= 0).
    swapped = np.array([float(distance("psi", b, row)) for row in s])
    np.testing.assert_allclose(swapped, distance("psi", s, b), rtol=1e-12, atol=1e-15)
    assert np.all(distance("psi", s, b) >= 0)


def test_all_distances_are_registered() -> None:
    assert set(DISTANCES) == {"jsd", "linf", "psi", "chi2", "ks", "wasserstein"}


def test_jsd_bounds() -> None:
    """Disjoint supports: JS distance is exactly 1 in base 2 (scipy agrees)."""
    s, b = np.array([5, 0, 0]), np.array([0, 2, 7])
    assert float(distance("jsd", s, b)) == pytest.approx(1.0, abs=ATOL)
    assert scipy_distance.jensenshannon(s, b, base=2) == pytest.approx(1.0, abs=ATOL)
    assert float(distance("linf", s, b)) == pytest.approx(1.0, abs=ATOL)
    assert float(distance("linf", s, np.array([1, 2, 6]))) == pytest.approx(8 / 9, abs=ATOL)
    assert float(distance("ks", s, b)) == pytest.approx(1.0, abs=ATOL)


@pytest.mark.parametrize("shift", ["none", "location", "scale"])
def test_binned_ks_vs_raw_ks(shift: str) -> None:
    """DESIGN: binned KS (CDF gap at the ~100 equal-mass baseline edges) is at most the raw
    two-sample KS, and below it by at most the largest bin mass of either side (within one
    bin, F_s - F_b moves by at most that bin's mass on one side). The raw statistic's sup is
    also attained between data points, so binned <= raw holds exactly (1e-12 rounding)."""
    rng = np.random.default_rng({"none": 1, "location": 2, "scale": 3}[shift])
    training = rng.lognormal(1.0, 0.7, 30_000)
    serving = rng.lognormal(1.0, 0.7, 20_000)
    if shift == "location":
        serving = serving * 1.15
    elif shift == "scale":
        serving = np.exp(1.0 + (np.log(serving) - 1.0) * 1.3)
    feature = Baseline.from_columns({"x": training.tolist()}).features["x"]
    assert isinstance(feature, NumericBaseline)
    assert 90 <= len(feature.edges) - 1 <= 100
    summary = feature.layout.empty()
    summary.update(serving)
    binned = float(distance("ks", summary.bins, feature.bin_counts))
    raw = stats.ks_2samp(serving, training).statistic
    s_mass = summary.bins / summary.bins.sum()
    b_mass = feature.bin_counts / feature.bin_counts.sum()
    largest = max(s_mass.max(), b_mass.max())
    assert largest < 0.05  # equal-mass bins: about 1% each in training
    assert binned <= raw + 1e-12
    assert raw - binned <= largest + 1e-12
    if shift != "none":
        assert binned > 0.05  # the shift is seen through the bins too


@pytest.mark.parametrize("metric", sorted(set(DISTANCES) - {"wasserstein"}))
def test_many_windows_at_once_equal_each_window_alone(metric: str) -> None:
    """The noise floors are simulated 1,000 windows at a time: each must get exactly the
    value the same counts get when a window is judged on its own, or a floor would be
    fitted to a slightly different statistic than the one it guards. Empty windows too."""
    rng = np.random.default_rng(4)
    baseline = rng.integers(0, 500, 40)
    baseline[3] = 0
    windows = rng.multinomial(300, baseline / baseline.sum(), size=200)
    windows[7] = 0
    together = distance(metric, windows, baseline)
    alone = [float(distance(metric, w, baseline)) for w in windows]
    np.testing.assert_allclose(together, alone, rtol=1e-13, atol=0)
    if metric in ("jsd", "linf"):  # compiled row by row: bit for bit
        assert together.tolist() == alone
