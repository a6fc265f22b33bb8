"""Sparse panes (streamskew.detector.pane): a small pane keeps its records' values instead of
summaries, and must be the same pane stored another way.

Reference: the same records folded at once into a dense pane. Every count (bins, quantile
slots, value/missing/invalid counts, categorical counts, the joint check's residual energy)
must be equal exactly: they are integers, and folding is a sum of per-record increments.
Float moments (sum, sum of squares) are compared with rtol 1e-12: a different order of
additions of at most a few thousand values; min and max exactly. Misra-Gries heavy hitters
exactly while they stay under the table's capacity (order-independent there).
"""

from __future__ import annotations

import numpy as np
import pytest

from streamskew.baseline import Baseline
from streamskew.detector.pane import SPARSE_RECORDS, Pane, fold
from streamskew.detector.window import SlidingWindow
from streamskew.records import NO_TIME, Columns
from streamskew.sketch.categorical import CategoricalSummary
from streamskew.sketch.joint import JointSummary
from streamskew.sketch.numeric import NumericSummary


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    """Three correlated numeric inputs (so the baseline has a joint model) and a category."""
    rng = np.random.default_rng(5)
    n = 20_000
    a = rng.normal(50, 10, n)
    columns = {"a": a.tolist(), "b": (a + rng.normal(0, 1, n)).tolist(),
               "c": rng.gamma(2.0, 3.0, n).tolist(),
               "kind": rng.choice(["x", "y", "z"], n).tolist()}
    baseline = Baseline.from_columns(columns)
    assert baseline.joint is not None
    return baseline


def _columns(rng: np.random.Generator, n: int) -> Columns:
    a = rng.normal(52, 11, n)
    b = a + rng.normal(0, 1, n)
    b[rng.random(n) < 0.1] = np.nan  # missing values
    c = rng.gamma(2.0, 3.0, n)
    kinds = np.array(rng.choice(["x", "y", "z", "new1", "new2", None], n), dtype=object)
    invalid = rng.random(n) < 0.05
    c[invalid] = np.nan
    return Columns(count=n, positions=np.arange(n), timestamps=np.full(n, NO_TIME),
                   models=None, numeric={"a": a, "b": b, "c": c},
                   categorical={"kind": kinds}, invalid={"c": invalid},
                   new_features={"extra": rng.random(n) < 0.2})


def assert_same(got: Pane, want: Pane) -> None:
    assert got.records == want.records
    assert got.new_features == want.new_features
    got.densify()
    want.densify()
    assert set(got.summaries) == set(want.summaries)
    for name, w in want.summaries.items():
        g = got.summaries[name]
        if isinstance(w, CategoricalSummary):
            assert isinstance(g, CategoricalSummary)
            assert g.counts.tolist() == w.counts.tolist(), name
            assert (g.missing, g.invalid, g.unseen) == (w.missing, w.invalid, w.unseen), name
            continue
        assert isinstance(g, NumericSummary)
        assert g.bins.tolist() == w.bins.tolist(), name
        assert g.quantiles.tolist() == w.quantiles.tolist(), name
        assert g.counts.tolist() == w.counts.tolist(), name
        np.testing.assert_allclose(g.moments[:2], w.moments[:2], rtol=1e-12)
        assert g.moments[2:].tolist() == w.moments[2:].tolist(), name
        if isinstance(w, JointSummary):
            assert g.energy.tolist() == w.energy.tolist()  # type: ignore[attr-defined]


def _split(columns: Columns, sizes: list[int]) -> list[Columns]:
    bounds = np.cumsum([0, *sizes])
    return [columns.take(np.arange(bounds[i], bounds[i + 1])) for i in range(len(sizes))]


@pytest.mark.parametrize("sizes", [[1], [3, 5], [SPARSE_RECORDS], [SPARSE_RECORDS, 1],
                                   [40, 40, 40], [1] * 70, [200, 2]])
def test_sparse_folds_equal_one_dense_fold(baseline, sizes):
    rng = np.random.default_rng(sum(sizes))
    columns = _columns(rng, sum(sizes))
    dense = Pane.empty(3, baseline)
    fold(dense, columns, baseline)
    sparse = Pane.sparse(3, baseline)
    for part in _split(columns, sizes):
        fold(sparse, part, baseline)
    assert (sparse.values is not None) == (sum(sizes) <= SPARSE_RECORDS)
    assert_same(sparse, dense)


@pytest.mark.parametrize("sizes", [[2, 3, 1], [30, 30, 30], [1, 100, 1], [64, 64]])
def test_merging_sparse_and_dense_parts_in_any_order(baseline, sizes):
    """Partial panes from several sources, merged as the evaluator merges them."""
    rng = np.random.default_rng(len(sizes) * 7 + sizes[0])
    columns = _columns(rng, sum(sizes))
    want = Pane.empty(0, baseline)
    fold(want, columns, baseline)
    parts = []
    for part in _split(columns, sizes):
        pane = Pane.sparse(0, baseline)
        fold(pane, part, baseline)
        parts.append(pane)
    for order in (parts, parts[::-1]):
        merged = Pane.sparse(0, baseline)
        for pane in order:
            merged.merge(pane.copy())
        assert_same(merged, want.copy())


def test_sparse_pane_bytes_round_trip(baseline):
    rng = np.random.default_rng(9)
    pane = Pane.sparse(7, baseline)
    fold(pane, _columns(rng, 20), baseline)
    data = pane.to_bytes()
    back = Pane.from_bytes(data, baseline)
    assert back.values is not None and back.index == 7
    want = Pane.empty(7, baseline)
    fold(want, _columns(np.random.default_rng(9), 20), baseline)
    assert_same(back, want)
    # the point of keeping values: a small pane holds far less memory than its summaries
    dense = pane.copy()
    dense.densify()
    held = sum(matrix.nbytes for matrix in pane.values.matrices())
    summaries = sum(a.nbytes for s in dense.summaries.values()
                    for a in vars(s).values() if isinstance(a, np.ndarray))
    assert held * 20 < summaries


def test_damaged_sparse_bytes_are_refused(baseline):
    rng = np.random.default_rng(2)
    pane = Pane.sparse(0, baseline)
    fold(pane, _columns(rng, 5), baseline)
    pane.records = 6  # the values no longer match the record count
    with pytest.raises(ValueError, match="record count"):
        Pane.from_bytes(pane.to_bytes(), baseline)
    pane.records = 5
    data = pane.to_bytes()
    for damaged in (data[:len(data) // 2], data.replace(b'"sizes"', b'"sizez"'),
                    data.replace(b'"numeric"', b'"numerix"')):
        with pytest.raises(ValueError):  # never a KeyError or an IndexError
            Pane.from_bytes(damaged, baseline)


def test_window_of_sparse_panes_equals_window_of_dense_panes(baseline):
    """Slide 40 small panes (0..30 records, some empty) through a 5-pane window with finer
    scales: after every slide the aggregates (counts subtracted, moments and heavy hitters
    re-derived) equal those of the same panes folded densely."""
    rng = np.random.default_rng(3)
    sparse_window = SlidingWindow(5, baseline, scales=(1, 2, 3))
    dense_window = SlidingWindow(5, baseline, scales=(1, 2, 3))
    for index in range(40):
        n = int(rng.integers(0, 31)) if index % 7 else 0
        sparse, dense = Pane.sparse(index, baseline), Pane.empty(index, baseline)
        if n:
            columns = _columns(rng, n)
            fold(sparse, columns, baseline)
            fold(dense, columns, baseline)
        sparse_window.push(sparse)
        dense_window.push(dense)
        assert_same(sparse_window.aggregate.copy(), dense_window.aggregate.copy())
        for k in (2, 3):
            assert_same(sparse_window.scale(k).copy(), dense_window.scale(k).copy())
    # the newest pane is judged at scale 1: it densifies in place, the same content
    assert_same(sparse_window.scale(1), dense_window.scale(1))
    assert sparse_window.scale(1).values is None


@pytest.mark.parametrize("read_every", [2, 3, 7, 11])
def test_window_read_now_and_then_equals_one_read_every_slide(baseline, read_every):
    """The aggregate is brought up to date only when read: panes that entered and left in
    between, panes folded and then expired, and a reset (a gap) must all come out as if
    it had been kept up to date at every slide."""
    rng = np.random.default_rng(read_every)
    lazy = SlidingWindow(4, baseline, scales=(1, 2))
    eager = SlidingWindow(4, baseline, scales=(1, 2))
    for index in range(60):
        if index == 30:
            lazy.reset(index)
            eager.reset(index)
        n = int(rng.integers(0, 50)) if index % 5 else 0
        panes = Pane.sparse(index, baseline), Pane.empty(index, baseline)
        if n:
            columns = _columns(rng, n)
            for pane in panes:
                fold(pane, columns, baseline)
        lazy.push(panes[0])
        eager.push(panes[1])
        eager.aggregate  # noqa: B018 (read at every slide)
        assert lazy.records == eager.records
        if index % read_every == 0:
            assert_same(lazy.aggregate.copy(), eager.aggregate.copy())
            assert_same(lazy.scale(2).copy(), eager.scale(2).copy())


def test_encoded_panes_follow_every_change(baseline):
    """Checkpoint text is reused only while a pane stays the same: a fold, a merge or a
    subtraction changes it, and the text read back is always the pane as it is now."""
    from base64 import b64decode

    from streamskew.detector.pane import EncodedPanes

    rng = np.random.default_rng(8)
    encoder = EncodedPanes()
    pane, other = Pane.sparse(0, baseline), Pane.sparse(0, baseline)
    fold(other, _columns(rng, 3), baseline)
    changes = [lambda: fold(pane, _columns(rng, 2), baseline),
               lambda: pane.merge(other),
               lambda: fold(pane, _columns(rng, 100), baseline),  # now dense
               lambda: pane.subtract(other)]
    first = encoder.texts([pane])
    assert encoder.texts([pane]) == first  # unchanged: the same text, not encoded again
    for change in changes:
        before = encoder.texts([pane])
        change()
        (text,) = encoder.texts([pane])
        assert text != before[0]
        assert_same(Pane.from_bytes(b64decode(text), baseline), pane.copy())


def test_a_small_panes_categories_are_coded_once_for_every_window_holding_it(baseline,
                                                                           monkeypatch):
    """Every window (and finer scale) holding a small pane folds its values again; their
    category codes are kept with the pane's values, so each value is looked up once. The
    aggregates stay those of dense panes (the test above)."""
    from streamskew.sketch.categorical import CategoricalLayout

    looked_up = []
    codes = CategoricalLayout.codes
    monkeypatch.setattr(CategoricalLayout, "codes",
                        lambda self, values: looked_up.append(len(values)) or codes(self, values))
    rng = np.random.default_rng(11)
    window = SlidingWindow(5, baseline, scales=(2,))
    folded = 0
    for index in range(20):
        pane = Pane.sparse(index, baseline)
        columns = _columns(rng, 20)
        fold(pane, columns, baseline)
        folded += columns.count
        window.push(pane)
        window.aggregate  # noqa: B018 (judged at every slide)
        window.scale(2)
    assert sum(looked_up) == folded  # 5 windows and 2 scales read each pane, coded once


def test_categories_coded_for_one_baseline_are_coded_again_for_another(baseline):
    """Codes are slots of one baseline's vocabulary: values coded for one are looked up
    again when folded for a baseline with another vocabulary, never reused."""
    from streamskew.detector.pane import PaneValues

    rng = np.random.default_rng(2)
    n = 5000
    other = Baseline.from_columns({
        "a": rng.normal(50, 10, n).tolist(), "b": rng.normal(50, 10, n).tolist(),
        "c": rng.gamma(2.0, 3.0, n).tolist(), "kind": rng.choice(["new1", "y"], n).tolist()})
    assert other.categorical_names == baseline.categorical_names
    assert other.numeric_names == baseline.numeric_names
    pane = Pane.sparse(0, baseline)
    columns = _columns(rng, 50)
    fold(pane, columns, baseline)
    assert pane.values is not None
    pane.values.fold_into(Pane.empty(0, baseline).summaries)  # coded for `baseline`
    again = PaneValues(other)
    again.extend(pane.values)
    summaries = Pane.empty(0, other).summaries
    again.fold_into(summaries)
    want = other.monitored["kind"].layout.empty()
    want.update(columns.categorical["kind"])
    assert summaries["kind"].counts.tolist() == want.counts.tolist()
    assert summaries["kind"].missing == want.missing
