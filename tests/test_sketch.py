"""The pane sketches (streamskew.sketch) against independent references.

References: exact ``np.quantile(..., method="lower")`` for the quantile sketch, ``np.histogram``
(whose bins are ``[e_i, e_i+1)`` with the last one closed, the documented slot convention) for
the bin counts, summaries recomputed from scratch for sliding windows and merges, and exact
``collections.Counter`` counts for the Misra-Gries heavy hitters.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from streamskew.baseline import Baseline, NumericBaseline
from streamskew.config import BaselineBuildConfig, Config
from streamskew.detector.window import BaselineMismatch, Pane, SlidingWindow
from streamskew.sketch.categorical import (
    HEAVY_HITTER_CAPACITY,
    CategoricalLayout,
    CategoricalSummary,
)
from streamskew.sketch.numeric import NumericLayout, NumericSummary
from streamskew.sketch.quantiles import QuantileLayout

RANKS = np.concatenate([[0.001, 0.002, 0.005], np.linspace(0.01, 0.99, 99), [0.995, 0.999]])


# --------------------------------------------------------------------------- helpers


def histogram_slots(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Independent reference of the slot convention: underflow, np.histogram's bins, overflow.

    ``np.histogram`` bins are ``[e_i, e_(i+1))`` with the last bin closed, exactly the
    documented convention, and it is a different code path from both the numba kernel and
    ``baseline.build._bin_counts`` (which uses searchsorted).
    """
    values = values[~np.isnan(values)]
    inner, _ = np.histogram(values, bins=edges)
    return np.concatenate([[np.sum(values < edges[0])], inner, [np.sum(values > edges[-1])]])


def assert_quantile_guarantee(got: np.ndarray, exact: np.ndarray, layout: QuantileLayout,
                              where: str, require_in_range: bool = True) -> None:
    """The documented guarantee of quantiles.py, case by case.

    ``|got - x| <= a |x|`` for ``min_magnitude < |x| <= max_magnitude`` (a bucket holds
    ``(lower, upper]``; ``min_magnitude`` itself is the lower edge of the first bucket, so it
    already belongs to the zero slot); 0 exactly for ``x == 0`` and for smaller magnitudes;
    the (signed) top bucket for larger ones. The factor ``1 + 1e-9`` only absorbs the float
    rounding of the bucket bounds: the harmonic midpoint of a bucket whose ends have ratio
    <= (1+a)/(1-a) is within exactly ``a`` of both ends, so a real violation would exceed
    ``a`` by far more than 1e-9 relative.
    """
    a = layout.relative_accuracy
    magnitude = np.abs(exact)
    small = magnitude <= layout.min_magnitude  # includes exact zeros
    large = magnitude > layout.max_magnitude
    in_range = ~small & ~large
    if require_in_range:  # the data is chosen so the quantiles are covered by the guarantee
        assert np.all(in_range | (exact == 0)), f"{where}: test data outside the range"
    assert np.all(got[small] == 0.0), f"{where}: small magnitudes / zero not reported as 0"
    assert np.all(got[large] == np.sign(exact[large]) * layout.slot_values[-1]), where
    error = np.abs(got[in_range] - exact[in_range]) / magnitude[in_range]
    worst = int(np.argmax(error)) if len(error) else 0
    assert np.all(error <= a * (1 + 1e-9)), (
        f"{where}: relative error {error[worst]:.5f} > {a} for exact quantile "
        f"{exact[in_range][worst]!r} (got {got[in_range][worst]!r})")


def distribution(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if name == "normal":
        return rng.normal(5.0, 2.0, n)
    if name == "lognormal":  # heavy right tail: quantiles span ~8 orders of magnitude
        return rng.lognormal(0.0, 2.5, n)
    if name == "uniform":
        return rng.uniform(-1.0, 1.0, n)
    if name == "mixture":  # negatives, a third exact zeros, small positives
        third = n // 3
        parts = [rng.normal(-50.0, 10.0, third), np.zeros(third),
                 rng.exponential(0.01, n - 2 * third) + 1e-6]
        return rng.permutation(np.concatenate(parts))
    if name == "integer":  # discrete with heavy ties (and zeros, negatives)
        return rng.poisson(3.0, n).astype(np.float64) - 1.0
    raise AssertionError(name)


def numeric_layout_for(values: np.ndarray, bins: int = 100) -> NumericLayout:
    """Equal-mass edges of the data, as a baseline would build them."""
    return NumericLayout.from_edges(np.unique(np.quantile(values, np.linspace(0, 1, bins + 1))))


def summarize(layout: NumericLayout, values: np.ndarray, invalid: int = 0) -> NumericSummary:
    summary = layout.empty()
    summary.update(values, invalid=invalid)
    return summary


def assert_numeric_equal(got: NumericSummary, want: NumericSummary, rtol: float) -> None:
    """Integer parts exact; float sum / sum of squares to ``rtol``; min / max exact."""
    np.testing.assert_array_equal(got.bins, want.bins)
    np.testing.assert_array_equal(got.quantiles, want.quantiles)
    np.testing.assert_array_equal(got.counts, want.counts)
    np.testing.assert_allclose(got.moments[:2], want.moments[:2], rtol=rtol, atol=0)
    assert got.moments[2] == want.moments[2]
    assert got.moments[3] == want.moments[3]


def assert_heavy_hitters_guarantee(table: dict[str, int], truth: Counter[str]) -> None:
    """Misra-Gries (documented in categorical.py): for every unseen value,
    ``true - total / (capacity + 1) <= reported <= true``; so values above that share are
    listed. The bound is the theorem itself (also after merging, Agarwal et al. 2012): no
    slack is needed, the counts are integers."""
    total = sum(truth.values())
    slack = total / (HEAVY_HITTER_CAPACITY + 1)
    assert len(table) <= HEAVY_HITTER_CAPACITY
    assert set(table) <= set(truth), "a reported value never occurred"
    for value, true in truth.items():
        reported = table.get(value, 0)
        assert reported <= true, (value, reported, true)
        assert reported >= true - slack, (value, reported, true, slack)
        if true > slack:
            assert value in table, (value, true, slack)


# --------------------------------------------------------------------------- quantiles


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000])
@pytest.mark.parametrize("name", ["normal", "lognormal", "uniform", "mixture", "integer"])
def test_quantile_relative_error(name: str, n: int) -> None:
    """Tolerance: relative error <= 0.01 = the layout's relative_accuracy, the documented
    guarantee against the exact lower quantile of the same data (see the helper)."""
    rng = np.random.default_rng([11, n, len(name)])
    values = distribution(name, n, rng)
    layout = numeric_layout_for(values)
    assert layout.quantile_layout.relative_accuracy == 0.01
    summary = summarize(layout, values)
    got = summary.quantile(RANKS)
    exact = np.quantile(values, RANKS, method="lower")
    assert_quantile_guarantee(got, exact, layout.quantile_layout, f"{name} n={n}")
    # Extreme ranks: 0 and 1 give the (approximate) minimum and maximum.
    # (the lognormal minimum can sit below min_magnitude: then 0 is the documented answer).
    ends = summary.quantile([0.0, 1.0])
    assert_quantile_guarantee(ends, np.array([values.min(), values.max()]),
                              layout.quantile_layout, f"{name} n={n} ends",
                              require_in_range=False)


def test_quantile_layout_independent_of_data_scale() -> None:
    """The guarantee also holds with a layout built for a much larger scale (the data sits
    low in the bucket range, as after a unit change): tolerance again exactly a = 0.01."""
    rng = np.random.default_rng(5)
    values = rng.lognormal(-3.0, 1.0, 50_000)
    layout = NumericLayout.from_edges(np.array([0.0, 1e4, 1e5]))
    got = summarize(layout, values).quantile(RANKS)
    assert_quantile_guarantee(got, np.quantile(values, RANKS, method="lower"),
                              layout.quantile_layout, "lognormal on a 1e5 layout")


def test_values_beyond_max_magnitude_are_clamped() -> None:
    """Documented: magnitudes above max_magnitude are answered with the top bucket (at most
    max_magnitude, within a of it); those below min_magnitude with 0. Bins and moments are
    not clamped: a huge value is in the overflow slot and is the exact maximum."""
    layout = NumericLayout.from_edges(np.array([0.0, 1.0, 2.0]))
    q = layout.quantile_layout
    assert q.max_magnitude < 1e12
    summary = summarize(layout, np.array([-1e12, 1e-300, 1e12, 1e300]))
    top = summary.quantile([1.0])[0]
    assert q.max_magnitude / (1 + q.relative_accuracy) <= top <= q.max_magnitude
    assert summary.quantile([0.0])[0] == -top
    # 1e-300 is far below min_magnitude: reported as 0 (rank 1/3 is the second element).
    assert summary.quantile([1 / 3])[0] == 0.0
    assert summary.bins.tolist() == [1, 1, 0, 2]
    assert summary.moments[2] == -1e12 and summary.moments[3] == 1e300


def test_empty_summary_quantile_is_nan() -> None:
    summary = NumericLayout.from_edges(np.array([0.0, 1.0])).empty()
    assert np.all(np.isnan(summary.quantile([0.0, 0.5, 1.0])))
    assert np.isnan(summary.mean) and np.isnan(summary.std)
    summary.update(np.array([np.nan, np.nan]))  # only missing values: still no quantiles
    assert np.all(np.isnan(summary.quantile([0.5])))


# Extreme magnitudes (regressions: slot values used to overflow/underflow as 2lu/(l+u), and
# QuantileLayout.around overflowed for max_abs > ~1.8e305).


def test_quantile_guarantee_at_huge_magnitudes() -> None:
    """edges [1e152, 1e153] -> max_magnitude ~1.0e156: 1e155 comes back within a = 1%."""
    layout = NumericLayout.from_edges(np.array([1e152, 1e153]))
    values = np.array([1e155, -3e154, 2e153])
    summary = summarize(layout, values)
    ranks = [0.0, 0.5, 1.0]
    assert_quantile_guarantee(summary.quantile(ranks),
                              np.quantile(values, ranks, method="lower"),
                              layout.quantile_layout, "1e155")


def test_tiny_magnitudes() -> None:
    """edges linspace(-1e-300, 1e-300, 21): min_magnitude ~4.7e-310, so normal floats such as
    5e-301 are covered by the guarantee, and bins are exact."""
    edges = np.linspace(-1e-300, 1e-300, 21)
    layout = NumericLayout.from_edges(edges)
    values = np.array([5e-301, -3e-301, 1.5e-302, 9.99e-301])
    summary = summarize(layout, values)
    np.testing.assert_array_equal(summary.bins, histogram_slots(edges, values))
    ranks = [0.0, 0.4, 0.7, 1.0]
    assert_quantile_guarantee(summary.quantile(ranks),
                              np.quantile(values, ranks, method="lower"),
                              layout.quantile_layout, "~1e-301")


def test_layout_for_huge_edges() -> None:
    """Edges up to 1e306: the layout is built (top capped at the largest float), bins are
    exact and quantiles within a = 1% (relative error computed directly: max_magnitude
    itself is not representable for this layout)."""
    layout = NumericLayout.from_edges(np.array([0.0, 1e306]))
    values = np.array([5e305, 1e306, 1e300, 1.7e308])
    summary = summarize(layout, values)
    np.testing.assert_array_equal(summary.bins, histogram_slots(layout.edges, values))
    ranks = [0.0, 0.4, 0.7, 1.0]
    exact = np.quantile(values, ranks, method="lower")
    got = summary.quantile(ranks)
    assert np.all(np.abs(got - exact) <= 0.01 * exact)


def test_zero_in_a_layout_reaching_subnormals() -> None:
    """edges [-1e-300, 0, 1e-300], value 0.0: expected bin slot 2 ([0, 1e-300]) and quantile
    0.0; got slot 1 and quantile -1.1118e-308."""
    edges = np.array([-1e-300, 0.0, 1e-300])
    layout = NumericLayout.from_edges(edges)
    values = np.array([0.0, -0.0, 1e-310, -2e-320])
    summary = summarize(layout, values)
    np.testing.assert_array_equal(summary.bins, histogram_slots(edges, values))
    assert np.all(summarize(layout, np.array([0.0])).quantile([0.5]) == 0.0)


# --------------------------------------------------------------------------- bins


def _edge_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    normal_edges = np.unique(rng.normal(0.0, 1.0, 200))
    return {
        "regular": np.linspace(0.0, 100.0, 101),
        # 41 edges within 1000 +- 1e-3: many edges share one quantile bucket (1% wide).
        "tiny_relative_range": 1000.0 + np.linspace(-1e-3, 1e-3, 41),
        "negative": -np.geomspace(1e4, 1e-3, 60),
        "across_zero": np.concatenate([-np.geomspace(1e3, 1e-6, 40), [0.0],
                                       np.geomspace(1e-6, 1e3, 40)]),
        # Pairs of adjacent floats: the narrowest possible bins.
        "adjacent_floats": np.unique(np.concatenate([normal_edges,
                                                     np.nextafter(normal_edges, np.inf)])),
        "two_edges": np.array([-3.0, 7.0]),
        # Epoch seconds over a day: 1.76e9 +- 1e-5 relative, quantile-spaced edges.
        "epoch_seconds": np.unique(np.round(np.quantile(
            1.764e9 + rng.gamma(2.0, 9000.0, 5_000), np.linspace(0, 1, 101)), 3)),
    }


EDGE_CASES = _edge_cases()


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_bin_counts_match_histogram(case: str) -> None:
    """Exact equality (integer counts), including values exactly on every edge and the
    adjacent floats on both sides of every edge, zeros of both signs and huge values."""
    edges = EDGE_CASES[case]
    rng = np.random.default_rng([7, len(edges)])
    low, high = edges[0], edges[-1]
    width = high - low
    values = np.concatenate([
        edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf),
        rng.uniform(low - 0.1 * width, high + 0.1 * width, 20_000),
        rng.choice(edges, 2_000),  # ties on edges
        [0.0, -0.0, 1e-300, -1e-300, 1e300, -1e300, np.nan],
    ])
    values = rng.permutation(values)
    summary = summarize(NumericLayout.from_edges(edges), values)
    np.testing.assert_array_equal(summary.bins, histogram_slots(edges, values))
    assert summary.bins.sum() == summary.count == np.count_nonzero(~np.isnan(values))


def test_edges_crowded_into_few_quantile_buckets_use_the_uniform_grid() -> None:
    """A narrow range far from zero puts every edge into one or two 1%-wide quantile
    buckets; the layout then brackets bins with a uniform grid (1-2 candidates instead of
    all edges). Spread-out edges keep the quantile buckets. Either way the counts are exact
    (test_bin_counts_match_histogram covers every case in both modes)."""
    modes = {case: NumericLayout.from_edges(edges).use_grid
             for case, edges in EDGE_CASES.items()}
    assert modes["tiny_relative_range"] and modes["epoch_seconds"]
    assert not (modes["negative"] or modes["across_zero"] or modes["adjacent_floats"])


def test_bin_counts_on_a_baseline_layout() -> None:
    """Edges from Baseline.from_columns (training quantiles, ties included): the serving
    summary's slots agree with np.histogram, and so do the baseline's own bin_counts."""
    rng = np.random.default_rng(8)
    training = np.round(rng.gamma(2.0, 3.0, 20_000), 2)
    feature = Baseline.from_columns({"x": training.tolist()}).features["x"]
    assert isinstance(feature, NumericBaseline)
    np.testing.assert_array_equal(feature.bin_counts, histogram_slots(feature.edges, training))
    serving = np.concatenate([np.round(rng.gamma(2.0, 3.5, 20_000), 2), feature.edges])
    summary = summarize(feature.layout, serving)
    np.testing.assert_array_equal(summary.bins, histogram_slots(feature.edges, serving))


def test_baseline_from_numpy_array_column_is_numeric() -> None:
    """Regression: numpy scalars used to fail the exact type check of baseline.build._as_number."""
    baseline = Baseline.from_columns({"x": np.array([1.5, 2.0, 3.0] * 100),
                                      "i": np.array([1, 2, 3] * 100),
                                      "s": list(np.array([0.5, 1.0] * 150))})
    for name in "xis":
        assert baseline.features[name].kind == "numeric", name
    feature = baseline.features["x"]
    assert isinstance(feature, NumericBaseline)
    assert feature.count == 300 and feature.minimum == 1.5 and feature.maximum == 3.0


def test_constant_feature_values_are_not_out_of_range() -> None:
    """Regression: a constant training feature had a single edge and its value went to slot 0
    (the underflow), so out_of_range_rate counted every serving value."""
    baseline = Baseline.from_columns({"x": [5.0] * 1_000})
    feature = baseline.features["x"]
    assert isinstance(feature, NumericBaseline)
    summary = summarize(feature.layout, np.full(500, 5.0))
    # Neither the baseline nor the serving window has anything outside the training range.
    assert feature.bin_counts[0] + feature.bin_counts[-1] == 0
    assert summary.bins[0] + summary.bins[-1] == 0
    # ... while other values still are.
    summary.update(np.array([4.9, 5.1]))
    assert (summary.bins[0], summary.bins[-1]) == (1, 1)


# --------------------------------------------------------------------------- counts


def test_missing_and_invalid_counts() -> None:
    """NaN counts as missing unless the caller says it was invalid; moments ignore NaN."""
    layout = NumericLayout.from_edges(np.array([0.0, 1.0, 2.0]))
    values = np.array([0.5, np.nan, 1.5, np.nan, np.nan, 2.0, np.nan])
    summary = summarize(layout, values)
    assert summary.counts.tolist() == [3, 4, 0]
    summary.update(values, invalid=3)
    assert summary.counts.tolist() == [6, 5, 3]
    assert summary.count == 6 and summary.records == 14
    assert summary.moments.tolist() == [8.0, 2 * (0.25 + 2.25 + 4.0), 0.5, 2.0]
    assert summary.mean == pytest.approx(8.0 / 6, rel=1e-15)
    assert summary.std == pytest.approx(np.std([0.5, 1.5, 2.0] * 2, ddof=1), rel=1e-12)


# --------------------------------------------------------------------------- sliding window


def _window_baseline() -> Baseline:
    rng = np.random.default_rng(21)
    n = 5_000
    x = rng.normal(10.0, 3.0, n)
    categories = rng.choice(["a", "b", "c", "d", "e"], n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    return Baseline.from_columns({"x": x.tolist(), "c": categories.tolist()},
                                 Config(build=BaselineBuildConfig(bins=30, max_categories=3)))


def _pane_data(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(10.5, 3.5, size)
    x[rng.random(size) < 0.03] = np.nan
    pool = np.array(["a", "b", "c", "d", "e", "new1", "new2", "new3"], dtype=object)
    c = rng.choice(pool, size, p=[0.3, 0.2, 0.1, 0.1, 0.05, 0.15, 0.06, 0.04])
    rare = rng.random(size) < 0.1  # many distinct unseen values: stress Misra-Gries
    c[rare] = [f"rare{v}" for v in rng.integers(0, 500, int(rare.sum()))]
    c[rng.random(size) < 0.02] = None
    return x, c


def test_sliding_window_equals_recomputation() -> None:
    """After every push the aggregate equals a from-scratch summary of the last ``size``
    panes' raw values: bins, quantile counts and counts exactly (integers add and subtract
    without error); sum / sum of squares to rtol 1e-9 (float summation order differs: ~1e4
    terms of relative rounding 1e-16 each); min / max exactly (re-derived, not subtracted);
    heavy hitters: the Misra-Gries guarantee against the exact counts of the window."""
    baseline = _window_baseline()
    x_layout = baseline.features["x"].layout
    c_layout = baseline.features["c"].layout
    size = 4
    window = SlidingWindow(size, baseline)
    rng = np.random.default_rng(22)
    raw: list[tuple[np.ndarray, np.ndarray]] = []
    for index in range(60):
        pane_size = 0 if rng.random() < 0.2 else int(rng.integers(1, 3_000))
        x, c = _pane_data(rng, pane_size)
        pane = Pane.empty(index, baseline)
        pane.summaries["x"].update(x)
        nulls = sum(v is None for v in c)
        pane.summaries["c"].update(c, invalid=int(rng.integers(0, nulls + 1)))
        pane.records = pane_size
        window.push(pane)
        raw.append((x, c))

        live = raw[-size:]
        xs = np.concatenate([x for x, _ in live])
        cs = np.concatenate([c for _, c in live])
        aggregate = window.aggregate
        assert aggregate.index == index
        assert aggregate.records == len(xs)
        assert_numeric_equal(aggregate.summaries["x"], summarize(x_layout, xs), rtol=1e-9)

        got = aggregate.summaries["c"]
        assert isinstance(got, CategoricalSummary)
        want = c_layout.empty()
        want.update(cs)
        np.testing.assert_array_equal(got.counts, want.counts)
        invalid = sum(p.summaries["c"].invalid for p in list(window.panes))
        assert got.invalid == invalid and got.missing + invalid == want.missing
        unseen = Counter(v for v in cs if v is not None and v not in c_layout.index)
        assert got.counts[c_layout.unseen_slot] == sum(unseen.values())
        assert_heavy_hitters_guarantee(got.unseen, unseen)


# --------------------------------------------------------------------------- merge


def test_numeric_merge_of_partitions() -> None:
    """3 partitions (random assignment) merged == one summary of everything: exact for the
    integer arrays; sum / sum of squares to rtol 1e-12 (3 partial sums instead of one
    sequential sum of 2e5 terms: the difference is a few ulps of the total); min/max exact."""
    rng = np.random.default_rng(31)
    values = np.concatenate([rng.normal(0, 1, 100_000), rng.lognormal(2, 1, 100_000)])
    values[rng.random(len(values)) < 0.01] = np.nan
    layout = numeric_layout_for(values[~np.isnan(values)])
    part = rng.integers(0, 3, len(values))
    merged = layout.empty()
    for p in range(3):
        merged.merge(summarize(layout, values[part == p]))
    assert_numeric_equal(merged, summarize(layout, values), rtol=1e-12)


def _categorical_stream(rng: np.random.Generator, n: int) -> np.ndarray:
    """Vocabulary values, known-tail values, two heavy unseen values and a long unseen tail."""
    kinds = rng.choice(6, n, p=[0.45, 0.1, 0.1, 0.08, 0.02, 0.25])
    out = np.empty(n, dtype=object)
    out[kinds == 0] = rng.choice(["v0", "v1", "v2"], int((kinds == 0).sum()))
    out[kinds == 1] = rng.choice(["t0", "t1"], int((kinds == 1).sum()))
    out[kinds == 2] = "NEW-big"
    out[kinds == 3] = "NEW-medium"
    out[kinds == 4] = None
    tail = kinds == 5
    out[tail] = [f"tail{v}" for v in rng.zipf(1.3, int(tail.sum())) % 20_000]
    return out


def test_categorical_merge_and_heavy_hitters() -> None:
    """Counts merge exactly; the merged Misra-Gries table satisfies the documented guarantee
    against exact Counter counts (so NEW-big and NEW-medium, far above total/33, are listed)."""
    rng = np.random.default_rng(41)
    layout = CategoricalLayout(("v0", "v1", "v2"), known_tail=frozenset({"t0", "t1"}))
    values = _categorical_stream(rng, 60_000)
    part = rng.integers(0, 3, len(values))
    merged = layout.empty()
    parts = []
    for p in range(3):
        s = layout.empty()
        s.update(values[part == p], invalid=p)
        parts.append(s)
        merged.merge(s)
    whole = layout.empty()
    whole.update(values, invalid=3)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    assert (merged.missing, merged.invalid) == (whole.missing, whole.invalid)

    unseen = Counter(v for v in values if v is not None and v not in layout.index)
    assert merged.counts[layout.unseen_slot] == sum(unseen.values())
    assert_heavy_hitters_guarantee(whole.unseen, unseen)  # one stream
    assert_heavy_hitters_guarantee(merged.unseen, unseen)  # merged tables
    assert [v for v, _ in merged.top_unseen(2)] == ["NEW-big", "NEW-medium"]
    for s, p in zip(parts, range(3), strict=True):  # each partition on its own
        assert_heavy_hitters_guarantee(
            s.unseen, Counter(v for v in values[part == p]
                              if v is not None and v not in layout.index))


# --------------------------------------------------------------------------- categorical


def test_categorical_update_slots() -> None:
    layout = CategoricalLayout(("DE", "FR", "US"), known_tail=frozenset({"LU", "BE"}))
    summary = layout.empty()
    values = np.array(["DE", "US", "LU", "XX", None, "DE", "BE", "YY", "XX", None, "FR"],
                      dtype=object)
    summary.update(values, invalid=1)
    assert summary.counts.tolist() == [2, 1, 1, 2, 3]  # DE FR US <other> <unseen>
    assert (summary.missing, summary.invalid) == (1, 1)
    assert summary.count == 9 and summary.records == 11
    assert summary.unseen == {"XX": 2, "YY": 1}
    assert summary.top_unseen(1) == [("XX", 2)]


def test_categorical_incomplete_tail_counts_everything_else_as_other() -> None:
    layout = CategoricalLayout(("a",), tail_complete=False)
    summary = layout.empty()
    summary.update(np.array(["a", "b", "zzz", None], dtype=object))
    assert summary.counts.tolist() == [1, 2, 0]
    assert summary.unseen == {} and summary.missing == 1


def test_unseen_heavy_hitter_is_named() -> None:
    """A value with 5% of 20,000 records among 2,000 distinct one-off unseen values: Misra-Gries
    (32 counters) must list it first -- its lower bound 1000 - 3000/33 is far above any other."""
    rng = np.random.default_rng(51)
    layout = CategoricalLayout(("x", "y"))
    values = np.array(["x"] * 17_000 + ["BROKEN-ENCODER"] * 1_000
                      + [f"id{i}" for i in range(2_000)], dtype=object)
    values = values[rng.permutation(len(values))]
    summary = layout.empty()
    for chunk in np.array_split(values, 7):
        summary.update(chunk)
    top = summary.top_unseen(1)
    assert top[0][0] == "BROKEN-ENCODER"
    assert 1_000 - 3_000 / (HEAVY_HITTER_CAPACITY + 1) <= top[0][1] <= 1_000


# --------------------------------------------------------------------------- bytes


def test_numeric_bytes_round_trip() -> None:
    rng = np.random.default_rng(61)
    layout = numeric_layout_for(rng.normal(0, 1, 1_000))
    values = np.concatenate([rng.normal(0, 2, 5_000), [np.nan] * 7, [0.0, 1e9]])
    summary = summarize(layout, values, invalid=2)
    for original in (summary, layout.empty()):
        back = NumericSummary.from_bytes(original.to_bytes(), layout)
        assert_numeric_equal(back, original, rtol=0)
        assert back.moments.tobytes() == original.moments.tobytes()


def test_numeric_bytes_layout_mismatch() -> None:
    rng = np.random.default_rng(62)
    layout = numeric_layout_for(rng.normal(0, 1, 1_000), bins=20)
    data = summarize(layout, rng.normal(0, 1, 100)).to_bytes()
    with pytest.raises(ValueError):
        NumericSummary.from_bytes(data, NumericLayout.from_edges(np.linspace(-3, 3, 11)))
    # Quantile slots beyond the target layout's range.
    narrow = NumericLayout(layout.edges, QuantileLayout(0.01, 0, 16))
    with pytest.raises(ValueError):
        NumericSummary.from_bytes(data, narrow)
    with pytest.raises(ValueError):
        NumericSummary.from_bytes(b"XXXX" + data[4:], layout)


def test_categorical_bytes_round_trip_and_mismatch() -> None:
    layout = CategoricalLayout(("a", "b"), known_tail=frozenset({"c"}))
    summary = layout.empty()
    summary.update(np.array(["a", "c", "zz", None, "b", "zz", "é€"], dtype=object), invalid=0)
    summary.invalid += 4
    back = CategoricalSummary.from_bytes(summary.to_bytes(), layout)
    np.testing.assert_array_equal(back.counts, summary.counts)
    assert (back.missing, back.invalid, back.unseen) == (1, 4, {"zz": 2, "é€": 1})
    with pytest.raises(ValueError):
        CategoricalSummary.from_bytes(summary.to_bytes(), CategoricalLayout(("a", "b", "c")))
    with pytest.raises(ValueError):
        CategoricalSummary.from_bytes(b"SSNS" + summary.to_bytes()[4:], layout)


def test_pane_bytes_round_trip_and_mismatch() -> None:
    baseline = _window_baseline()
    rng = np.random.default_rng(71)
    pane = Pane.empty(17, baseline)
    x, c = _pane_data(rng, 2_000)
    pane.summaries["x"].update(x, invalid=5)
    pane.summaries["c"].update(c)
    pane.records = 2_000
    pane.new_features = {"brand_new": 12}
    back = Pane.from_bytes(pane.to_bytes(), baseline)
    assert (back.index, back.records, back.new_features) == (17, 2_000, {"brand_new": 12})
    assert set(back.summaries) == set(pane.summaries)
    bx, px = back.summaries["x"], pane.summaries["x"]
    assert isinstance(bx, NumericSummary) and isinstance(px, NumericSummary)
    assert_numeric_equal(bx, px, rtol=0)
    bc, pc = back.summaries["c"], pane.summaries["c"]
    assert isinstance(bc, CategoricalSummary) and isinstance(pc, CategoricalSummary)
    np.testing.assert_array_equal(bc.counts, pc.counts)
    assert (bc.missing, bc.invalid, bc.unseen) == (pc.missing, pc.invalid, pc.unseen)

    # A pane summarized against another baseline is refused by its id, before any bins
    # are read: merging counts over different bin edges would be silently wrong.
    other = Baseline.from_columns(
        {"x": rng.normal(0, 1, 2_000).tolist(), "c": [f"k{i % 9}" for i in range(2_000)]},
        Config(build=BaselineBuildConfig(bins=10)))
    with pytest.raises(BaselineMismatch, match=f"baseline {baseline.id}, not {other.id}"):
        Pane.from_bytes(pane.to_bytes(), other)
    with pytest.raises(BaselineMismatch):
        Pane.empty(0, other).merge(pane)
    # Bytes that claim the right baseline but do not fit its layouts (fewer bins, bigger
    # vocabulary, only the categorical feature): still a ValueError, never a wrong merge.
    claims_other = Pane(pane.index, pane.records, pane.summaries, baseline_id=other.id)
    with pytest.raises(ValueError):
        Pane.from_bytes(claims_other.to_bytes(), other)
    only_c = Pane(pane.index, pane.records, {"c": pane.summaries["c"]}, baseline_id=other.id)
    with pytest.raises(ValueError):
        Pane.from_bytes(only_c.to_bytes(), other)
    # A feature the baseline does not know, and bytes that are not a pane.
    unknown = Pane(pane.index, pane.records, {"zzz": pane.summaries["c"]},
                   baseline_id=baseline.id)
    with pytest.raises(ValueError, match="does not know"):
        Pane.from_bytes(unknown.to_bytes(), baseline)
    with pytest.raises(ValueError, match="not a serialized pane"):
        Pane.from_bytes(b"junk", baseline)
