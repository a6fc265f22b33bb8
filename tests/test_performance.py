"""Performance skew: reference performance, the label join, performance windows, CBPE.

Real data: the CPS1988 wage table (tests/performance_data.py), a logistic regression for
"earns more than the median wage" and a linear regression of the log wage, trained here with
scikit-learn. Requests and labels are built from held-out rows, labels delayed
(exponential, mean 10 minutes), out of order (jittered up to 20 s), some late, some twice,
some never, plus labels of requests that never existed.

Tolerances against scikit-learn, on the same windows:
- accuracy, precision, recall, F1: 1e-12 (exact counts: the threshold is a bin edge);
- log loss: 1e-12 relative (exact sums; scores clipped as scikit-learn clips them);
- ROC AUC: within the window's own bound, 0.5 * (pairs sharing a score bin) / (P N),
  which must be below 5e-3 here (512 logit-spaced bins; 2.7e-3 on the validation set),
  plus 1e-12 for float sums.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    recall_score,
    roc_auc_score,
)

from streamskew import Baseline, Config, Detector
from streamskew.cli import main
from streamskew.config import ConfigError
from streamskew.performance import PerformanceMonitor, PerformancePane
from streamskew.performance.cbpe import expected_metrics, isotonic_calibration
from streamskew.performance.floors import PerformanceFloors, WindowCounts
from streamskew.performance.metrics import binned_auc
from streamskew.performance.summary import ExactSum, ScoreLayout
from streamskew.performance.table import HashTable
from streamskew.records import NO_TIME

from .performance_data import (
    CONFIG,
    T0,
    interleaved,
    split,
    stream,
    validation_table,
)

pytest.importorskip("sklearn")

HOUR = 3_600_000


def _baseline(task: str = "classification") -> Baseline:
    table = validation_table(task)
    return Baseline.from_columns({c: table[c].tolist() for c in table.columns}, label="label")


@pytest.fixture(scope="module")
def classifier_baseline() -> Baseline:
    return _baseline()


def _config(**labels: object) -> Config:
    return Config.from_dict({**CONFIG, "labels": {**CONFIG["labels"], **labels}})


def _run(config: Config, baseline: Baseline, st, batch: int = 500, windows=None):
    """Requests and labels interleaved by time through a Detector; events with, for each,
    the largest label time fed before it was emitted."""
    detector = Detector(config, baseline,
                        on_performance_window=windows.append if windows is not None else None)
    events: list = []
    label_clock = []  # (event, max label time fed so far)
    latest = None
    for kind, part in interleaved(st, batch):
        if kind == "labels":
            new = detector.process_labels(part)
            latest = max([latest or 0, *(r["timestamp"] for r in part)])
        else:
            new = detector.process(part)
        events += new
        label_clock += [(e, latest) for e in new]
    new = detector.flush()
    events += new
    label_clock += [(e, math.inf) for e in new]
    return detector, events, label_clock


def _performance(events):
    return [e for e in events if e.check in ("performance", "estimated_performance")]


# -- the reference ---------------------------------------------------------------------------


def test_reference_matches_scikit_learn_on_the_validation_set(classifier_baseline):
    table = validation_table()
    y, p = table.label.to_numpy(), table.prediction.to_numpy()
    ref = classifier_baseline.performance
    assert ref is not None and ref.task == "classification" and ref.positive == "1"
    m = ref.metrics
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-12)
    assert m["precision"] == pytest.approx(precision_score(y, p >= 0.5), abs=1e-12)
    assert m["recall"] == pytest.approx(recall_score(y, p >= 0.5), abs=1e-12)
    assert m["f1"] == pytest.approx(f1_score(y, p >= 0.5), abs=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-12)
    assert m["roc_auc_bound"] < 5e-3
    assert abs(m["roc_auc"] - roc_auc_score(y, p)) <= m["roc_auc_bound"] + 1e-12
    # The label is not a feature; the prediction is (prediction drift).
    assert "label" not in classifier_baseline.features
    assert "prediction" in classifier_baseline.features


def test_calibration_is_scikit_learns_isotonic_regression_on_the_bins(classifier_baseline):
    ref = classifier_baseline.performance
    bins = np.arange(ref.bins)
    weights = (ref.positives + ref.negatives).astype(float)
    seen = weights > 0
    fitted = IsotonicRegression().fit(bins[seen], ref.positives[seen] / weights[seen],
                                      sample_weight=weights[seen]).predict(bins[seen])
    ours = isotonic_calibration(ref.positives, ref.negatives)
    assert np.allclose(ours[seen], fitted, atol=1e-12)
    assert np.all(np.diff(ours) >= 0)  # unseen bins keep it monotone


def test_cbpe_on_validation_equals_realized_where_calibration_is_exact():
    # With one validation record class per bin pattern, expected counts are the real ones.
    positives, negatives = np.array([0, 1, 3, 8]), np.array([9, 3, 1, 0])
    calibration = isotonic_calibration(positives, negatives)
    est = expected_metrics(positives + negatives, calibration, threshold_bin=2)
    assert est["accuracy"] == pytest.approx((11 + 12) / 25)
    auc, _ = binned_auc(positives, negatives)
    assert est["roc_auc"] == pytest.approx(auc)


def test_baseline_file_round_trip_and_old_files_still_load(tmp_path, classifier_baseline):
    path = tmp_path / "b.json"
    classifier_baseline.save(path)
    loaded = Baseline.load(path)
    assert loaded.performance.metrics == classifier_baseline.performance.metrics
    assert np.array_equal(loaded.performance.calibration.round(10),
                          classifier_baseline.performance.calibration.round(10))
    raw = json.loads(path.read_text())
    del raw["performance"]  # a file written before performance skew
    path.write_text(json.dumps(raw))
    old = Baseline.load(path)
    assert old.performance is None and old.id == classifier_baseline.id
    assert set(old.features) == set(classifier_baseline.features)


def test_regression_reference_matches_numpy():
    baseline = _baseline("regression")
    table = validation_table("regression")
    errors = table.prediction.to_numpy() - table.label.to_numpy()
    m = baseline.performance.metrics
    assert baseline.performance.task == "regression"
    assert m["mae"] == pytest.approx(mean_absolute_error(table.label, table.prediction),
                                     rel=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean(errors**2)), rel=1e-12)
    assert m["bias"] == pytest.approx(np.mean(errors), abs=1e-12)


def test_reference_refuses_what_it_cannot_judge():
    from streamskew.baseline import BaselineError

    rng = np.random.default_rng(0)
    x = rng.random(500)
    with pytest.raises(BaselineError, match="more than two classes"):
        Baseline.from_columns({"x": x, "prediction": x,
                               "y": rng.choice(["a", "b", "c"], 500)}, label="y",
                              config=Config.from_dict({"labels": {"task": "classification"}}))
    with pytest.raises(BaselineError, match="set \\[labels\\] positive"):
        Baseline.from_columns({"x": x, "prediction": x, "y": rng.choice(["cat", "dog"], 500)},
                              label="y")
    with pytest.raises(BaselineError, match="no such column"):
        Baseline.from_columns({"x": x, "prediction": x}, label="y")
    ok = Baseline.from_columns({"x": x, "prediction": x, "y": rng.choice(["cat", "dog"], 500)},
                               label="y", config=Config.from_dict({"labels": {"positive": "dog"}}))
    assert ok.performance.positive == "dog"


def test_hard_predictions_have_no_log_loss():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    predicted = np.where(rng.random(2000) < 0.8, y, 1 - y)
    baseline = Baseline.from_columns({"x": rng.random(2000), "prediction": predicted, "y": y},
                                     label="y")
    ref = baseline.performance
    assert ref.hard and "log_loss" not in ref.metrics
    assert ref.metrics["accuracy"] == pytest.approx(accuracy_score(y, predicted), abs=1e-12)


# -- summaries ---------------------------------------------------------------------------


def test_pane_sums_are_exact_whatever_the_batching_and_merge_order():
    rng = np.random.default_rng(3)
    values = rng.normal(0, 1e6, 5000) * rng.random(5000) ** 8
    whole = ExactSum()
    whole.add(values)
    parts = [ExactSum() for _ in range(7)]
    for i, chunk in enumerate(np.array_split(values[::-1], 7)):
        parts[i].add(chunk)
    merged = ExactSum()
    for part in reversed(parts):
        merged.merge(part)
    assert merged.value == whole.value == math.fsum(values)


def _msum(partials: list[float], values) -> list[float]:
    """Shewchuk's msum in plain Python (the recipe behind math.fsum): the reference."""
    partials = list(partials)
    for x in values:
        x = float(x)
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]
    return partials


def test_exact_sums_keep_the_partials_of_the_python_recipe_to_the_bit():
    """The compiled ExactSum.add keeps exactly the partials of the Python recipe, batch
    after batch: huge cancellations, subnormals, mixed signs, lists and arrays, and the
    non-finite values that make the partials grow."""
    rng = np.random.default_rng(8)
    batches = [rng.normal(0, 1e6, 3000) * rng.random(3000) ** 8,
               np.array([1e308, 1e308, -1e308, 1e-308, 5e-324, -1e16, 1.0, 1e16]),
               rng.normal(0, 1, 1000) * 10.0 ** rng.integers(-300, 300, 1000),
               [3, 1e100, -1e100, 0.1, 0.2, -0.3],
               np.array([np.inf, 1.0, np.nan, -np.inf, 2.0]),
               rng.random(50)]
    total, reference = ExactSum(), []
    for batch in batches:
        total.add(batch)
        reference = _msum(reference, batch)
        assert [v.hex() for v in total.partials] == [v.hex() for v in reference]
    finite = ExactSum()  # (fsum itself overflows on the 1e308 pair: left out here)
    for batch in (batches[0], batches[2], batches[3]):
        finite.add(batch)
    assert finite.value == math.fsum([*batches[0], *batches[2], *batches[3]])


def test_pane_bytes_round_trip_and_merge():
    layout = ScoreLayout.default()
    rng = np.random.default_rng(1)
    panes = []
    for _ in range(2):
        pane = PerformancePane.empty(5, "classification", layout.bins)
        scores = rng.random(300)
        pane.add_requests(layout.bin_of(scores), np.ones(300, bool), rng.random(300) < 0.5)
        labels = (rng.random(100) < scores[:100]).astype(float)
        pane.add_labelled(scores[:100], labels, layout.bin_of(scores[:100]))
        panes.append(pane)
    copy = PerformancePane.from_bytes(panes[0].to_bytes())
    assert copy.to_bytes() == panes[0].to_bytes()
    copy.merge(panes[1])
    assert copy.labelled == 200 and copy.requests == 600
    assert copy.sums[0].value == pytest.approx(panes[0].sums[0].value + panes[1].sums[0].value)


def test_bytes_per_pending_request():
    table = HashTable()
    n = 1_000_000
    keys = np.random.default_rng(0).integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    for chunk in np.array_split(np.arange(n), 100):
        table.ensure(len(chunk))
        table.insert(keys[chunk], chunk, chunk.astype(float), np.zeros(len(chunk), np.uint16),
                     1)
    per_request = table.nbytes / table.live
    assert table.live == n
    assert 27 / 0.7 <= per_request <= 27 / 0.5 + 0.1  # the README's 39-54 bytes
    found = table.find(keys[::1000])
    assert np.array_equal(table.times[found], np.arange(0, n, 1000))


# -- metric values against scikit-learn on the same windows ----------------------------------


def test_window_metrics_match_scikit_learn(classifier_baseline):
    st = stream(hours=3)
    windows: list = []
    _run(_config(), classifier_baseline, st, windows=windows)
    realized = [w for w in windows if w.check == "performance"]
    assert len(realized) >= 15
    bounds = []
    for w in realized:
        rows = (st.times >= w.start) & (st.times < w.end)
        y, p = st.truth[rows], st.predictions[rows]
        assert w.labelled == rows.sum()  # every label came in time: all joined
        got = {r.metric: r.value for r in w.results}
        assert got["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-12)
        assert got["precision"] == pytest.approx(precision_score(y, p >= 0.5), abs=1e-12)
        assert got["recall"] == pytest.approx(recall_score(y, p >= 0.5), abs=1e-12)
        assert got["f1"] == pytest.approx(f1_score(y, p >= 0.5), abs=1e-12)
        assert got["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-12)
        bound = w.extra["roc_auc_bound"]
        bounds.append(bound)
        assert abs(got["roc_auc"] - roc_auc_score(y, p)) <= bound + 1e-12
    assert max(bounds) < 5e-3


def test_regression_window_metrics_match_numpy():
    baseline = _baseline("regression")
    st = stream(task="regression", hours=2)
    windows: list = []
    _run(_config(), baseline, st, windows=windows)
    realized = [w for w in windows if w.check == "performance"]
    assert realized
    for w in realized:
        rows = (st.times >= w.start) & (st.times < w.end)
        errors = st.predictions[rows] - st.truth[rows]
        got = {r.metric: r.value for r in w.results}
        assert got["mae"] == pytest.approx(np.mean(np.abs(errors)), rel=1e-12)
        assert got["rmse"] == pytest.approx(math.sqrt(np.mean(errors**2)), rel=1e-12)
        assert got["bias"] == pytest.approx(np.mean(errors), abs=1e-12)


# -- (a) clean serving, (b) a preprocessing bug ----------------------------------------------


@pytest.mark.parametrize("sample", [1.0, 0.25])
def test_clean_serving_fires_no_performance_event(classifier_baseline, sample):
    for seed in (1, 2):
        st = stream(hours=6, seed=seed)
        _, events, _ = _run(_config(sample=sample, min_labels=100), classifier_baseline, st)
        assert _performance(events) == []


def test_clean_regression_fires_nothing_and_the_bug_raises_mae():
    baseline = _baseline("regression")
    _, clean, _ = _run(_config(), baseline, stream(task="regression", hours=4))
    assert _performance(clean) == []
    _, broken, _ = _run(_config(), baseline, stream(task="regression", hours=4, bug_from=2))
    raised = {e.metric for e in _performance(broken) if e.type == "skew_detected"}
    assert {"mae", "rmse"} <= raised
    assert all(e.check == "performance" for e in _performance(broken))  # no CBPE: regression


def test_preprocessing_bug_estimated_before_labels_realized_after(classifier_baseline):
    st = stream(hours=4, bug_from=2.0)
    bug_at = T0 + 2 * HOUR
    _, events, clock = _run(_config(), classifier_baseline, st)
    estimated = [(e, seen) for e, seen in clock
                 if e.check == "estimated_performance" and e.type == "skew_detected"]
    realized = [(e, seen) for e, seen in clock
                if e.check == "performance" and e.type == "skew_detected"]
    assert {e.metric for e, _ in estimated} >= {"accuracy", "roc_auc"}
    assert {e.metric for e, _ in realized} >= {"accuracy", "recall", "f1", "roc_auc",
                                              "log_loss"}
    first_estimate, labels_then = min(estimated, key=lambda x: x[0].window_end)
    first_realized, labels_later = min(realized, key=lambda x: x[0].window_end)
    # Nothing fires before the bug; the estimate fires at the first window holding it.
    assert min(e.window_end for e, _ in estimated + realized) > bug_at
    assert first_estimate.window_end <= bug_at + 30 * 60_000
    # Before labels: when the estimate fired, labels had not passed its window's end yet.
    assert labels_then < first_estimate.window_end
    # The realized event needs the labels: max_delay (1h) past its window's end.
    assert labels_later >= first_realized.window_end + HOUR - 60_000
    ev = first_realized.evidence
    assert ev["realized"] < ev["reference"] and "estimated" in ev and ev["label_coverage"] == 1
    again = _run(_config(), classifier_baseline, st)[1]
    assert [e.event_id for e in _performance(again)] == [e.event_id for e in
                                                        _performance(events)]


# -- (c) the join's counts -------------------------------------------------------------------


def _fnv_splitmix(text: str) -> int:
    """The join key, in plain Python (the README's definition): FNV-1a 64 over the UTF-8
    bytes, then the splitmix64 finalizer."""
    mask = 2**64 - 1
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & mask
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & mask
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & mask
    return h ^ (h >> 31)


def test_join_keys_are_the_documented_hash():
    from streamskew.performance.readers import id_keys

    ids = ["r-1", "", "ß-ü", "x" * 300, "123"]
    assert id_keys(ids).tolist() == [_fnv_splitmix(i) for i in ids]
    keys = id_keys([f"r-{i}" for i in range(100_000)])
    share = float(np.mean(keys < np.uint64(2**64 // 100)))
    assert 0.0084 < share < 0.0116  # 1% sampling keeps 1% (binomial 5 sigma: +-0.0016)


def test_join_keys_of_plain_ascii_batches_are_the_same_hash():
    """A batch of ASCII ids is hashed from one encoded string (a character is a byte
    there); any other batch id by id: the keys are the documented hash either way."""
    from streamskew.performance.readers import id_keys

    ascii_ids = ["r-1", "", "x" * 300, "123", "~\x7f\x00"]
    assert id_keys(ascii_ids).tolist() == [_fnv_splitmix(i) for i in ascii_ids]
    mixed = [*ascii_ids, "é"]
    assert id_keys(mixed).tolist() == [_fnv_splitmix(i) for i in mixed]
    assert id_keys([]).tolist() == []


def _expected_counts(st, sample: float = 1.0) -> dict[str, int]:
    bound = min(int(sample * 2**64), 2**64 - 1)

    def kept(request_id: str) -> bool:
        return _fnv_splitmix(request_id) < bound

    ids = [r["request_id"] for r in st.requests]
    sampled = np.array([kept(i) for i in ids])
    late = st.labelled & (st.delays > 3600)
    matched = st.labelled & ~late
    second = {r: len(p) - 1 for r, p in st.label_of.items() if not r.startswith("ghost")}
    duplicates = sum(n for r, n in second.items() if kept(r))
    ghosts = [r for r in st.label_of if r.startswith("ghost")]
    return {"matched": int((matched & sampled).sum()), "late": int((late & sampled).sum()),
            "duplicate": duplicates, "without_request": sum(kept(g) for g in ghosts),
            "unlabelled": int((sampled & ~matched).sum()), "sampled": int(sampled.sum())}


@pytest.mark.parametrize("sample", [1.0, 0.1])
def test_join_counts_are_exact(classifier_baseline, sample):
    st = stream(hours=3, late_share=0.03, duplicate_share=0.02, unlabelled_share=0.05,
                orphans=40)
    detector, _, _ = _run(_config(sample=sample, min_labels=20), classifier_baseline, st)
    counts = detector.stats.labels
    got = {k: getattr(counts, k) for k in ("matched", "late", "duplicate", "without_request",
                                            "unlabelled", "sampled")}
    assert got == _expected_counts(st, sample)
    assert counts.labels == len(st.labels) and not counts.bad_labels
    assert counts.unsampled_labels == counts.labels - (got["matched"] + got["late"]
                                                       + got["duplicate"]
                                                       + got["without_request"])


def test_labels_before_their_requests_still_join(classifier_baseline):
    st = stream(hours=2, late_share=0.03, duplicate_share=0.02, unlabelled_share=0.05,
                orphans=10)
    detector = Detector(_config(), classifier_baseline)
    detector.process_labels(st.labels)  # the labels topic read first, all of it
    detector.process(st.requests)
    detector.flush()
    got = detector.stats.labels
    expected = _expected_counts(st)
    assert (got.matched, got.duplicate, got.without_request) == (
        expected["matched"], expected["duplicate"], expected["without_request"])


def test_label_fragments_are_bad_and_lend_nothing_to_their_neighbours(classifier_baseline):
    """Fragments of JSON such as `{..},{..}` and `[{..` are each a bad label, however they
    line up in a batch (joined into one array they would parse and shift the labels)."""
    st = stream(hours=2)
    raw = [orjson.dumps(label) for label in st.labels]
    fragments = [raw[0] + b"," + raw[1], b"[" + raw[2], raw[3] + b"]"]

    def counts(labels):
        detector = Detector(_config(), classifier_baseline)
        detector.process(st.requests)
        detector.process_labels(labels)
        detector.flush()
        return detector.stats.labels

    clean, mixed = counts(raw), counts(raw[:10] + fragments + raw[10:])
    assert sum(mixed.bad_labels.values()) == 3
    assert (mixed.matched, mixed.duplicate, mixed.without_request) == (
        clean.matched, clean.duplicate, clean.without_request)


def test_when_every_label_source_is_idle_the_label_clock_is_the_furthest(classifier_baseline):
    """As the engine's clock: a labels partition that never gave a time and one that did go
    idle together, and the label watermark becomes the latter's, so performance windows
    can become final while no label arrives."""
    st = stream(hours=2)
    join = PerformanceMonitor(_config(), {"default": classifier_baseline}).join
    join.expect(label_sources=["labels/0", "labels/1"])
    join.add_labels(st.labels, source="labels/0")
    ahead = join.label_clocks["labels/0"].watermark
    assert ahead != NO_TIME
    join.set_idle("labels/0", labels=True)
    assert join.label_watermark == NO_TIME  # labels/1 has not reported: it holds the clock
    join.set_idle("labels/1", labels=True)
    assert join.label_watermark == ahead
    join.add_labels(st.labels[:1], source="labels/1")
    assert join.label_watermark == join.label_clocks["labels/1"].watermark


def test_detect_files_with_labels(tmp_path, classifier_baseline):
    st = stream(hours=3, bug_from=1.5, late_share=0.03, duplicate_share=0.02,
                unlabelled_share=0.05, orphans=40)
    (tmp_path / "requests.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in st.requests))
    labels = [orjson.dumps(r) for r in st.labels] + [b"not json", b'{"label": 1}']
    (tmp_path / "labels.jsonl").write_bytes(b"\n".join(labels))
    classifier_baseline.save(tmp_path / "baseline.json")
    (tmp_path / "c.toml").write_text('[message]\nmodel = "model"\n[window]\nsize = "30m"\n'
                                     'pane = "10m"\n[labels]\nmax_delay = "1h"\n'
                                     'min_labels = 200\n')
    result = CliRunner().invoke(main, [
        "detect", "--config", str(tmp_path / "c.toml"), "--baseline",
        str(tmp_path / "baseline.json"), str(tmp_path / "requests.jsonl"),
        "--labels", str(tmp_path / "labels.jsonl"), "--output", str(tmp_path / "events.jsonl"),
        "--dead-letter", str(tmp_path / "dead.jsonl"), "--report", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    expected = _expected_counts(st)
    for key in ("matched", "late", "duplicate", "without_request", "unlabelled"):
        assert f"{key}={expected[key]}" in result.output
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    checks = {(e["check"], e["metric"]) for e in events}
    assert ("performance", "accuracy") in checks and ("estimated_performance", "roc_auc") in checks
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert sorted(d["reason"] for d in dead) == ["invalid_json", "missing_request_id"]
    assert {d["line"] for d in dead} == {len(labels) - 1, len(labels)}
    html = (tmp_path / "r.html").read_text()
    assert 'class="performance"' in html and 'data-metric="roc_auc"' in html
    # The same files through the Python API give the same events.
    api = _run(Config.from_toml(tmp_path / "c.toml"), classifier_baseline, st)[1]
    assert sorted(e["event_id"] for e in events if "performance" in e["check"]) == \
        sorted(e.event_id for e in _performance(api))


# -- replay, batching, snapshots -------------------------------------------------------------


def _monitor_run(config, baseline, parts, snapshot_at=None):
    monitor = PerformanceMonitor(config, {"default": baseline})
    events = []
    for i, (kind, part) in enumerate(parts):
        if i == snapshot_at:
            saved = monitor.snapshot()
            monitor = PerformanceMonitor(config, {"default": baseline})
            monitor.restore(saved)
        events += monitor.add_labels(part) if kind == "labels" else monitor.add_requests(part)
    events += monitor.finish()
    return [(e.event_id, e.value, e.threshold) for e in events], monitor.counts


def test_snapshot_restore_mid_stream_gives_the_same_events(classifier_baseline):
    config = _config(sample=0.5, min_labels=100)
    st = stream(hours=4, bug_from=2.0, late_share=0.02, duplicate_share=0.02, orphans=20)
    parts = interleaved(st, 400)
    whole, counts = _monitor_run(config, classifier_baseline, parts)
    assert len(whole) > 5
    for at in (len(parts) // 3, len(parts) // 2, 2 * len(parts) // 3):
        resumed, resumed_counts = _monitor_run(config, classifier_baseline, parts, at)
        assert resumed == whole
        assert resumed_counts == counts


def test_batching_never_changes_the_events(classifier_baseline):
    config = _config()
    st = stream(hours=3, bug_from=1.5, late_share=0.02, duplicate_share=0.02, orphans=10)
    reference = [(e.event_id, e.value) for e in _performance(_run(config, classifier_baseline,
                                                                  st, 500)[1])]
    for batch in (37, 2000):
        assert [(e.event_id, e.value) for e in
                _performance(_run(config, classifier_baseline, st, batch)[1])] == reference


def test_merged_shards_give_the_events_of_one_join(classifier_baseline):
    from streamskew.performance import LabelJoin, PerformanceWindows
    from streamskew.performance.monitor import references_of

    config = _config()
    st = stream(hours=3, bug_from=1.5)
    single = [(e.event_id, e.value) for e in _performance(_run(config, classifier_baseline,
                                                               st)[1])]
    baselines = {"default": classifier_baseline}
    shards = {name: LabelJoin(config, references_of(baselines)) for name in ("a", "b")}
    windows = PerformanceWindows(config, baselines)
    windows.expect(list(shards))

    def owner(request_id: str) -> str:  # co-partitioned by request id
        return "a" if hashlib.sha256(request_id.encode()).digest()[0] % 2 else "b"

    events = []
    for kind, part in interleaved(st, 500):
        for name, join in shards.items():
            mine = [r for r in part if owner(r["request_id"]) == name]
            if kind == "labels":
                join.add_labels(mine)
            else:
                join.add_requests(mine)
            for sealed in join.take():
                windows.add(sealed)
            events += windows.progress(name, *join.progress)
    for name, join in shards.items():
        join.finish()
        for sealed in join.take():
            windows.add(sealed)
        events += windows.progress(name, *join.progress)
    events += windows.flush()
    merged = [(e.event_id, e.value) for e in events]
    # The request clock is per shard here (each sees half the requests): same panes, so the
    # same windows and, from exact sums, the same values.
    assert sorted(merged) == sorted(single)


# -- noise floors ------------------------------------------------------------------------------


@pytest.mark.slow
def test_floors_hold_for_windows_drawn_from_the_validation_rows(classifier_baseline):
    """Null windows bootstrapped from the validation rows at alpha = 1e-3: the false-alarm
    rate of every metric stays at or below alpha (3x slack over 3,000 windows per size)."""
    alpha = 1e-3
    ref = classifier_baseline.performance
    floors = PerformanceFloors(ref, alpha, "test")
    table = validation_table()
    y, p = table.label.to_numpy(), table.prediction.to_numpy()
    layout = ref.layout()
    bins = layout.bin_of(p)
    rng = np.random.default_rng(5)
    for n in (100, 400, 2000):
        alarms = dict.fromkeys(("accuracy", "precision", "recall", "f1", "roc_auc"), 0)
        draws = rng.integers(0, len(y), (3000, n))
        positives = np.stack([np.bincount(bins[d][y[d] == 1], minlength=ref.bins)
                              for d in draws])
        negatives = np.stack([np.bincount(bins[d][y[d] == 0], minlength=ref.bins)
                              for d in draws])
        from streamskew.performance.metrics import confusion, rates

        tp, fp, fn, _ = confusion(positives, negatives, layout.threshold_bin)
        values = rates(tp, fp, fn, n - tp - fp - fn)
        values["roc_auc"], _ = binned_auc(positives, negatives)
        for metric in alarms:
            for i in range(len(draws)):
                counts = WindowCounts(n, int(tp[i] + fp[i]), int(tp[i] + fn[i]))
                if ref.metrics[metric] - values[metric][i] > floors.floor(metric, False, counts):
                    alarms[metric] += 1
        assert max(alarms.values()) <= 3 * alpha * len(draws) + 1, (n, alarms)


def test_floors_fall_with_the_window_size(classifier_baseline):
    floors = PerformanceFloors(classifier_baseline.performance, 1e-5, "test")
    for metric in ("accuracy", "f1", "roc_auc", "log_loss"):
        sizes = [floors.floor(metric, False, WindowCounts(n, n // 2, n // 2))
                 for n in (100, 1000, 10_000, 100_000)]
        assert sizes == sorted(sizes, reverse=True) and sizes[-1] > 0
    for metric in ("accuracy", "roc_auc"):
        sizes = [floors.floor(metric, True, WindowCounts(n)) for n in (200, 2000, 20_000)]
        assert sizes == sorted(sizes, reverse=True)


def test_spreads_of_large_windows_match_a_direct_simulation(classifier_baseline):
    """Past the anchor size the spread (the CIs' standard deviation) is the anchor's,
    scaled like n_eff^-1/2. Checked against 2,000 null windows drawn directly at each size
    from the validation histograms (as the floors draw them). Tolerance 12%: the two
    standard deviations are estimated from 1,000 and 2,000 draws (relative sd ~2.2% and
    ~1.6%, so ~2.7% for their ratio: 12% is over 4 sd), and the scaling of a smooth
    statistic's spread is exact to first order."""
    from streamskew.performance.floors import ASYMPTOTIC_FROM
    from streamskew.performance.metrics import confusion, rates
    from streamskew.stats.noise import effective_size

    ref = classifier_baseline.performance
    floors = PerformanceFloors(ref, 1e-3, "test")
    joint = np.concatenate([ref.positives, ref.negatives]).astype(float)
    joint /= joint.sum()
    rng = np.random.default_rng(11)
    for n in (3 * ASYMPTOTIC_FROM, 10 * ASYMPTOTIC_FROM):
        size = round(effective_size(n, ref.count))
        draws = rng.multinomial(size, joint, size=2000)
        positives, negatives = draws[:, :ref.bins], draws[:, ref.bins:]
        values = rates(*confusion(positives, negatives, ref.layout().threshold_bin))
        values["roc_auc"], _ = binned_auc(positives, negatives)
        for metric in ("f1", "roc_auc"):
            direct = float(np.std(values[metric]))
            spread = floors.spread(metric, False, WindowCounts(n, n // 2, n // 2))
            assert spread == pytest.approx(direct, rel=0.12), (n, metric)
    assert {bucket for _, bucket in floors._cache} == {ASYMPTOTIC_FROM}  # one simulation


# -- configuration and command line ----------------------------------------------------------


def test_labels_config_errors_name_the_key():
    for bad, message in ((({"sample": 0}), "sample"), ({"max_delay": "soon"}, "max_delay"),
                         ({"metrics": ["auc"]}, "metrics"), ({"size": "1h"}, "pane"),
                         ({"threshold": 1.5}, "threshold")):
        with pytest.raises(ConfigError, match=rf"\[labels\] {message}"):
            Config.from_dict({"labels": bad})


def test_cli_build_with_label_and_detect_errors(tmp_path):
    table = validation_table()
    table.to_csv(tmp_path / "val.csv", index=False)
    runner = CliRunner()
    built = runner.invoke(main, ["baseline", "build", "--input", str(tmp_path / "val.csv"),
                                 "--output", str(tmp_path / "b.json"), "--label", "label"])
    assert built.exit_code == 0, built.output
    assert "performance: binary classifier" in built.output
    shown = runner.invoke(main, ["baseline", "show", str(tmp_path / "b.json")])
    assert "accuracy=0.7428" in shown.output
    plain = runner.invoke(main, ["baseline", "build", "--input", str(tmp_path / "val.csv"),
                                 "--output", str(tmp_path / "plain.json")])
    assert plain.exit_code == 0
    (tmp_path / "r.jsonl").write_text('{"request_id": "a", "features": {}}\n')
    (tmp_path / "l.jsonl").write_text('{"request_id": "a", "label": 1}\n')
    refused = runner.invoke(main, ["detect", "--baseline", str(tmp_path / "plain.json"),
                                   str(tmp_path / "r.jsonl"), "--labels",
                                   str(tmp_path / "l.jsonl")])
    assert refused.exit_code == 1 and "--label COL" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    wrong = runner.invoke(main, ["baseline", "build", "--input", str(tmp_path / "val.csv"),
                                 "--output", str(tmp_path / "x.json"), "--prediction", "p"])
    assert wrong.exit_code == 2 and "--prediction needs --label" in wrong.output
    missing = runner.invoke(main, ["baseline", "build", "--input", str(tmp_path / "val.csv"),
                                   "--output", str(tmp_path / "x.json"), "--label", "nope"])
    assert missing.exit_code == 1 and "no such column" in missing.output


def test_python_api_without_labels_config_says_what_to_do(classifier_baseline):
    from streamskew.errors import StreamskewError

    detector = Detector(Config(), classifier_baseline)
    with pytest.raises(StreamskewError, match=r"\[labels\]"):
        detector.process_labels([{"request_id": "a", "label": 1}])


def test_split_is_what_the_docs_say():
    s = split()
    assert (len(s.train), len(s.validation), len(s.test)) == (10_000, 9_000, 9_155)


def _flat_requests_and_labels(n: int = 3000) -> tuple[Baseline, list[bytes], list[bytes]]:
    """Flat requests (``features = ""``: the id, time, features and score side by side, as
    pandas' ``to_json(orient='records', lines=True)`` writes logged rows) and their labels."""
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, 4000)
    scores = 1 / (1 + np.exp(-2 * x))
    truth = (rng.random(4000) < scores).astype(int)
    baseline = Baseline.from_columns({"x": x.tolist(), "score": scores.tolist(),
                                      "y": truth.tolist()}, label="y", prediction="score")
    t0 = 1_764_324_000_000
    requests, labels = [], []
    for i in range(n):
        xi = float(rng.normal(0, 1))
        score = 1 / (1 + math.exp(-2 * xi))
        requests.append(orjson.dumps({"request_id": f"r{i}", "timestamp": t0 + i * 400,
                                      "x": xi, "score": score}))
        labels.append(orjson.dumps({"request_id": f"r{i}", "label": int(rng.random() < score),
                                    "timestamp": t0 + i * 400 + 30_000}))
    return baseline, requests, labels


def test_the_request_id_of_flat_requests_is_not_a_new_feature():
    """With [labels] the request id is known for what it is: a flat request carries it
    beside its features, and it must not raise `new_feature` on every window. Without
    [labels] the same key is unknown, and the schema check still says so."""
    baseline, requests, labels = _flat_requests_and_labels()
    raw = {"message": {"features": "", "prediction": "score"},
           "window": {"size": "10m", "pane": "5m"}}
    with_labels = Detector(Config.from_dict({**raw, "labels": {"max_delay": "5m"}}), baseline)
    events = with_labels.process(requests) + with_labels.process_labels(labels)
    events += with_labels.flush()
    assert "request_id" not in {e.feature for e in events}
    assert with_labels.stats.labels.matched == len(labels)
    without = Detector(Config.from_dict(raw), baseline)
    events = without.process(requests) + without.flush()
    assert ("request_id", "new_feature") in {(e.feature, e.metric) for e in events}


def test_a_labels_table_given_to_detect_is_one_line_with_the_fix(tmp_path):
    baseline, requests, _ = _flat_requests_and_labels(50)
    baseline.save(tmp_path / "baseline.json")
    (tmp_path / "requests.jsonl").write_bytes(b"\n".join(requests) + b"\n")
    (tmp_path / "labels.csv").write_text(",request_id,label,timestamp\n0,r0,1,1764324030000\n")
    (tmp_path / "streamskew.toml").write_text('[message]\nfeatures = ""\nprediction = "score"\n')
    result = CliRunner().invoke(main, [
        "detect", "--config", str(tmp_path / "streamskew.toml"), "--baseline",
        str(tmp_path / "baseline.json"), str(tmp_path / "requests.jsonl"), "--labels",
        str(tmp_path / "labels.csv")])
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert "labels.csv: --labels reads JSON lines of label records" in line
    assert "this is a CSV file" in line and "to_json(orient='records', lines=True)" in line
    assert "baseline build" not in line  # the requests' advice would mislead here
