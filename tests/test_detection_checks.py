"""Unit tests of the finer scales, the surge check, the joint model and kernel, and the
persistent check, each against an independent reference (numpy, scipy) where there is one.
Synthetic data, no broker; the real-data behaviour is in test_detection_real_data.py."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from scipy import optimize, stats

from streamskew import Baseline, Config, Detector
from streamskew.baseline.joint import JOINT_FEATURE, JointBaseline, slots_of
from streamskew.config import ConfigError
from streamskew.detector.builder import DEFAULT_MODEL, fold
from streamskew.detector.checks import CheckResult, Judge, _decisive
from streamskew.detector.evaluator import Evaluator
from streamskew.detector.window import Pane
from streamskew.records import NO_TIME, Columns
from streamskew.sketch.joint import ENERGY_SCALE, JointSummary, joint_errors, projection_table
from streamskew.stats.distances import distance
from streamskew.stats.noise import NoiseFloors
from streamskew.stats.surge import surge

# --------------------------------------------------------------------------- surge


def _reference_surge(x, c, n, alpha, factor, min_change):
    """The surge check computed independently: scipy's brentq for each category's
    significance point, every category evaluated (no search order, no bounds)."""
    big_n = c.sum()
    q = n / (n + big_n)
    tested = np.flatnonzero(c > 0)
    target = math.log(2 * len(tested) / alpha)

    def tail(xv, cv):
        t = xv + cv
        r = xv / t
        kl = (r * math.log(r / q) if r > 0 else 0.0) + \
            ((1 - r) * math.log((1 - r) / (1 - q)) if r < 1 else 0.0)
        return t * kl - target

    best = (-1.0, None)
    for i in tested:
        share, base = x[i] / n, c[i] / big_n
        expected = c[i] * q / (1 - q)
        need_r = max(factor, (base + min_change) / base)
        if n > expected and tail(n, c[i]) >= 0:
            need_r = max(need_r, optimize.brentq(tail, expected, n, args=(c[i],)) / n / base)
        else:
            need_r = math.inf
        need_f = max(factor, base / (base - min_change)) if base > min_change else math.inf
        if tail(0.0, c[i]) >= 0:
            point = optimize.brentq(tail, 0.0, expected, args=(c[i],)) if tail(
                expected * 0.999999, c[i]) < 0 else expected
            need_f = max(need_f, base / max(point / n, 0.5 / n))
        else:
            need_f = math.inf
        for value, need in ((share / base, need_r), (base / max(share, 0.5 / n), need_f)):
            ratio = value / need if need < math.inf else 0.0
            if ratio > best[0]:
                best = (ratio, (i, value, need))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_surge_matches_an_exhaustive_reference(seed):
    """The bounded search finds the same decisive category, factor and needed factor as
    evaluating every category with scipy's root finder (tolerance: the bisection's 50
    halvings, far below 1e-6 relative)."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 120))
    p = 1 / np.arange(1, k + 1) ** rng.uniform(0.5, 1.5)
    p /= p.sum()
    c = rng.multinomial(int(rng.integers(2_000, 200_000)), p).astype(float)
    s = p.copy()
    if seed % 2:  # a real surge of a rare category, or a fall of a big one
        s[k - 1] *= 12
        s[0] *= 0.2
        s /= s.sum()
    x = rng.multinomial(int(rng.integers(500, 50_000)), s).astype(float)
    n = x.sum()
    found = surge(x, c, 1e-5, 3.0, 0.01)
    _, (index, value, need) = _reference_surge(x, c, n, 1e-5, 3.0, 0.01)
    assert found.index == index
    assert found.value == pytest.approx(value, rel=1e-9)
    assert found.threshold == pytest.approx(need, rel=1e-6)


def test_surge_chernoff_bound_is_above_the_exact_tail():
    """Given the category's total T = x + c, x is hypergeometric (T draws from n serving
    and N baseline values); the Chernoff bound the check uses must not be below the exact
    tail, or the check would be anti-conservative."""
    from streamskew.stats.surge import _tail

    for c, n, big_n in ((5, 1_000, 100_000), (50, 6_000, 10_000), (400, 50_000, 200_000)):
        q = n / (n + big_n)
        expected = c * q / (1 - q)
        for x in np.unique(np.linspace(expected + 1, expected * 6 + 10, 8).astype(int)):
            bound = math.exp(-_tail(float(x), float(c), q))
            exact = stats.hypergeom(n + big_n, n, x + c).sf(x - 1)
            assert bound >= exact, (c, n, big_n, x)


def test_surge_falls_and_skipped_categories():
    baseline = np.array([3_000, 6_000, 1_000, 0])  # the last: never seen (not judged)
    fall = surge(np.array([300, 7_700, 1_000, 1_000]), baseline, 1e-6, 3.0, 0.01)
    assert (fall.index, fall.direction) == (0, "fall")
    assert fall.value == pytest.approx(0.3 / 0.03) and fall.value > fall.threshold
    quiet = surge(np.array([2_950, 6_050, 1_000, 0]), baseline, 1e-6, 3.0, 0.01)
    assert quiet.value < quiet.threshold
    assert not surge(np.array([1, 2, 3, 4]), np.zeros(4), 1e-6, 3.0, 0.01).judged


def test_surge_needs_the_minimum_share_change():
    """A category at 0.01% that triples in a huge window is significant but moves its share
    by 0.02 points: under the default minimum change of 1 point it is not a surge; without
    a minimum change it is."""
    baseline = np.array([999_900, 100])
    serving = np.array([999_600, 400])
    quiet = surge(serving, baseline, 1e-6, 3.0, 0.01)
    assert quiet.value < quiet.threshold
    loud = surge(serving, baseline, 1e-6, 3.0, 0.0)
    assert loud.index == 1 and loud.value == pytest.approx(4.0, rel=1e-3)
    assert loud.value > loud.threshold


# --------------------------------------------------------------------------- joint kernel


def test_joint_kernel_matches_numpy():
    """Errors ||W^T z||^2 and per-record quantized energies against a numpy computation
    (float tolerance 1e-12 relative: the same sums in another order)."""
    rng = np.random.default_rng(3)
    d, n, width, m = 7, 5_000, 12, 3
    scores = rng.normal(size=(d, width))
    basis, _ = np.linalg.qr(rng.normal(size=(d, m)))
    slots = rng.integers(-1, width, size=(d, n)).astype(np.int32)
    slots[:, :10] = -1  # records without any input
    errors, energy = np.empty(n), np.zeros(m, dtype=np.int64)
    joint_errors(slots, projection_table(scores, basis), errors, energy)
    z = np.where(slots >= 0, np.take_along_axis(scores, np.maximum(slots, 0), axis=1), 0.0)
    projection = basis.T @ z
    expected = (projection**2).sum(axis=0)
    expected[:10] = np.nan
    np.testing.assert_allclose(errors, expected, rtol=1e-12)
    assert np.isnan(errors[:10]).all()
    quantized = np.floor(projection[:, 10:] ** 2 * ENERGY_SCALE + 0.5).astype(np.int64)
    np.testing.assert_array_equal(energy, quantized.sum(axis=1))


def _correlated(rng, n, missing=0.0):
    a = rng.normal(0, 1, n)
    b = a + rng.normal(0, 0.2, n)
    c = rng.lognormal(0, 1, n)
    columns = {"a": a, "b": b, "c": c}
    if missing:
        for values in columns.values():
            values[rng.random(n) < missing] = np.nan
    return columns


def _baseline(columns, config=None, extra=None):
    data = {k: [None if np.isnan(v) else float(v) for v in vals] for k, vals in columns.items()}
    data.update(extra or {})
    return Baseline.from_columns(data, config)


def _columns(numeric, categorical=None):
    n = len(next(iter(numeric.values())))
    return Columns(count=n, positions=np.arange(n), timestamps=np.full(n, NO_TIME),
                   models=None, numeric=numeric, categorical=categorical or {})


@pytest.fixture(scope="module")
def joint_baseline():
    rng = np.random.default_rng(11)
    return _baseline(_correlated(rng, 40_000, missing=0.02),
                     extra={"kind": rng.choice(["x", "y", "z"], 40_000).tolist()})


def test_joint_model_of_a_baseline(joint_baseline):
    joint = joint_baseline.joint
    assert isinstance(joint, JointBaseline) and joint.inputs == ("a", "b", "c")
    assert joint.components == 2 and joint.basis.shape == (3, 1)
    # the residual direction is a - b (a and b differ by small noise), unit length
    w = joint.basis[:, 0]
    assert abs(w[0] + w[1]) < 0.05 and abs(w[2]) < 0.05
    assert np.linalg.norm(w) == pytest.approx(1.0)
    # the error's baseline bins count every record with an input, exactly
    assert joint.bin_counts.sum() == joint.count == 40_000 - joint.missing
    assert joint.bin_counts[0] == 0  # errors are never below 0
    assert joint.quantiles["p01"] <= joint.quantiles["p50"] <= joint.quantiles["p99"]


def test_joint_errors_in_the_engine_equal_the_baseline_model(joint_baseline):
    """Folding records through the engine gives, per record, the error of the model: the
    features' kernels find the bins, imputation puts 0 for a missing value."""
    rng = np.random.default_rng(12)
    columns = _correlated(rng, 3_000, missing=0.1)
    columns["a"][:5] = np.nan
    columns["b"][:5] = np.nan
    columns["c"][:5] = np.nan  # records with no input are missing for the joint check
    none = int(np.all([np.isnan(v) for v in columns.values()], axis=0).sum())
    assert none >= 5
    pane = Pane.empty(0, joint_baseline)
    fold(pane, _columns(columns), joint_baseline)
    joint = joint_baseline.joint
    slots = np.stack([slots_of(joint_baseline.features[name].edges, columns[name])
                      for name in joint.inputs])
    z = np.where(slots >= 0, np.take_along_axis(joint.scores, np.maximum(slots, 0), axis=1),
                 0.0)
    errors = ((joint.basis.T @ z) ** 2).sum(axis=0)[(slots >= 0).any(axis=0)]
    summary = pane.summaries[JOINT_FEATURE]
    assert isinstance(summary, JointSummary)
    assert summary.count == 3_000 - none and summary.counts[1] == none
    reference = joint.layout.empty()
    reference.update(errors)
    np.testing.assert_array_equal(summary.bins, reference.bins)
    assert summary.moments[0] == pytest.approx(errors.sum(), rel=1e-12)


def test_joint_summary_merges_subtracts_and_serializes(joint_baseline):
    rng = np.random.default_rng(13)
    parts = []
    for _ in range(3):
        pane = Pane.empty(0, joint_baseline)
        fold(pane, _columns(_correlated(rng, 1_000)), joint_baseline)
        parts.append(pane)
    whole = Pane.empty(0, joint_baseline)
    for part in parts:
        whole.merge(part)
    whole.subtract(parts[1])
    expected = parts[0].summaries[JOINT_FEATURE].copy()
    expected.merge(parts[2].summaries[JOINT_FEATURE])
    got = whole.summaries[JOINT_FEATURE]
    np.testing.assert_array_equal(got.bins, expected.bins)
    np.testing.assert_array_equal(got.energy, expected.energy)
    back = Pane.from_bytes(parts[0].to_bytes(), joint_baseline)
    joint = back.summaries[JOINT_FEATURE]
    assert isinstance(joint, JointSummary)
    np.testing.assert_array_equal(joint.energy, parts[0].summaries[JOINT_FEATURE].energy)
    np.testing.assert_array_equal(joint.bins, parts[0].summaries[JOINT_FEATURE].bins)
    with pytest.raises(ValueError, match="joint"):
        JointSummary.from_bytes(b"SSNS" + bytes(40), joint_baseline.joint.layout)


def test_numeric_summary_bytes_are_small_and_version_2_still_reads(joint_baseline):
    """Version 3 bytes (slot gaps, byte planes) round-trip, compress to well under version
    2's, and version 2 bytes (checkpoints from before) still read back the same summary."""
    import struct
    import zlib

    summary = joint_baseline.features["c"].layout.empty()
    summary.update(np.random.default_rng(16).lognormal(0, 1, 5_000))
    data = summary.to_bytes()
    back = type(summary).from_bytes(data, summary.layout)
    for field in ("bins", "quantiles", "counts", "moments"):
        np.testing.assert_array_equal(getattr(back, field), getattr(summary, field))
    occupied = np.flatnonzero(summary.quantiles)
    v2 = b"".join([struct.pack("<4sHqq", b"SSNS", 2, len(occupied), len(summary.bins)),
                   summary.counts.astype("<i8").tobytes(),
                   summary.moments.astype("<f8").tobytes(),
                   summary.bins.astype("<i8").tobytes(), occupied.astype("<i4").tobytes(),
                   summary.quantiles[occupied].astype("<i8").tobytes()])
    old = type(summary).from_bytes(v2, summary.layout)
    np.testing.assert_array_equal(old.quantiles, summary.quantiles)
    np.testing.assert_array_equal(old.bins, summary.bins)
    assert len(zlib.compress(data, 1)) < 0.6 * len(zlib.compress(v2, 1))


def test_joint_summary_does_not_depend_on_batching(joint_baseline):
    """Energy is quantized per record, bins are integers: any split of the same records
    gives the same joint summary."""
    columns = _correlated(np.random.default_rng(14), 4_000, missing=0.05)
    one = Pane.empty(0, joint_baseline)
    fold(one, _columns(columns), joint_baseline)
    split = Pane.empty(0, joint_baseline)
    for cut in np.array_split(np.arange(4_000), 7):
        fold(split, _columns({k: v[cut] for k, v in columns.items()}), joint_baseline)
    a, b = one.summaries[JOINT_FEATURE], split.summaries[JOINT_FEATURE]
    np.testing.assert_array_equal(a.bins, b.bins)
    np.testing.assert_array_equal(a.energy, b.energy)
    np.testing.assert_array_equal(a.counts, b.counts)


def test_baseline_file_keeps_the_joint_model_and_old_files_still_load(joint_baseline,
                                                                      tmp_path):
    path = tmp_path / "b.json"
    joint_baseline.save(path)
    loaded = Baseline.load(path)
    assert loaded.id == joint_baseline.id and loaded.joint is not None
    np.testing.assert_array_equal(loaded.joint.basis, joint_baseline.joint.basis)
    np.testing.assert_array_equal(loaded.joint.scores, joint_baseline.joint.scores)
    np.testing.assert_array_equal(loaded.joint.bin_counts, joint_baseline.joint.bin_counts)
    assert "(joint)" in loaded.describe()
    # a file written before the joint check: no "joint" key
    raw = orjson.loads(path.read_bytes())
    del raw["joint"]
    old = tmp_path / "old.json"
    old.write_bytes(orjson.dumps(raw))
    legacy = Baseline.load(old)
    assert legacy.joint is None and list(legacy.monitored) == list(legacy.features)
    detector = Detector(Config.from_dict({"message": {"timestamp": ""}}), legacy)
    rng = np.random.default_rng(1)
    detector.process([{"features": {"a": float(v)}} for v in rng.normal(size=500)])
    assert detector.flush() is not None


def test_joint_model_is_reproducible_and_can_be_turned_off():
    rng = np.random.default_rng(15)
    columns = _correlated(rng, 20_000)
    first, second = _baseline(columns), _baseline(columns)
    assert first.id == second.id
    np.testing.assert_array_equal(first.joint.basis, second.joint.basis)
    off = _baseline(columns, Config.from_dict({"detect": {"joint": False}}))
    assert off.joint is None and off.id != first.id
    alone = _baseline({"a": columns["a"]})
    assert alone.joint is None  # one numeric feature: no relation to watch


# --------------------------------------------------------------------------- judging


def test_alpha_is_split_over_a_features_checks_and_scales(joint_baseline):
    judge = Judge(Config.from_dict({"window": {"size": "15m", "pane": "1m"}}),
                  joint_baseline)
    assert judge.scales == (1, 2, 4)
    assert judge.tests("a") == 4 * 4 + 1  # 4 checks x 4 scales + persistent
    assert judge.tests("kind") == 5 * 4 + 1  # + unseen and surge
    assert judge.tests(JOINT_FEATURE) == 1 * 4 + 1
    assert judge.floors("a").alpha == pytest.approx(1e-5 / 17)
    single = Judge(Config.from_dict({"detect": {"scales": "none", "persistent": False,
                                                "surge": False}}), joint_baseline)
    assert single.tests("a") == 4 and single.tests("kind") == 4


def _result(value, threshold, scale, judged=True):
    return CheckResult("x", "numeric", "distribution", "jsd", value, threshold, judged, 100,
                       scale)


def test_decisive_scale():
    whole = _result(0.05, 0.1, 0)
    assert _decisive([whole, _result(0.12, 0.2, 1)]) is whole  # nothing over: the window
    pane = _decisive([whole, _result(0.3, 0.2, 1), _result(0.25, 0.15, 2)])
    assert (pane.scale, pane.value, pane.window_count) == (2, 0.25, 100)  # furthest over
    over = _result(0.11, 0.1, 0)
    assert _decisive([over, _result(0.5, 0.2, 1)]) is over  # the window tells the story
    assert _decisive([whole, _result(0.5, 0.2, 1, judged=False)]) is whole


def test_finer_scale_thresholds_include_their_noise(joint_baseline):
    """A pane's distance threshold is the configured one raised by the pane's mean null
    noise, sqrt(t^2 + E0[d^2]) for JSD: measured against a direct simulation of E0[d^2]."""
    feature = joint_baseline.features["a"]
    floors = NoiseFloors(feature.bin_counts, 1e-6, "k")
    rng = np.random.default_rng(0)
    p = feature.bin_counts / feature.bin_counts.sum()
    for n in (500, 5_000, 50_000):
        # the floors carry the baseline's own noise: a window of the effective size
        size = round(n * feature.count / (n + feature.count))
        draws = rng.multinomial(size, p, size=4000)
        direct = float(np.mean(distance("jsd", draws, feature.bin_counts) ** 2))
        # 1,000 draws inside the floors (relative sd of the mean ~0.5%), grid interpolation
        # and past 2^14 the 1/n_eff scaling: within 3%
        assert floors.null_mean("jsd", n) == pytest.approx(direct, rel=0.03)


# --------------------------------------------------------------------------- the evaluator


def _stream_config(**detect):
    return Config.from_dict({"window": {"size": "4m", "pane": "1m"}, "detect": detect})


def _feed(evaluator, baseline, rng, start, panes, shift=0.0, n=2_000):
    """Panes like the training data (same missing rate, all features), ``c`` scaled."""
    events = []
    for index in range(start, start + panes):
        columns = _correlated(rng, n, missing=0.02)
        columns["c"] = columns["c"] * (1 + shift)
        kind = {"kind": rng.choice(np.array(["x", "y", "z"], dtype=object), n)}
        pane = Pane.empty(index, baseline)
        fold(pane, _columns(columns, kind), baseline)
        evaluator.add_pane(DEFAULT_MODEL, index, pane)
        events.extend(evaluator.advance((index + 1) * 60_000))
    return events


def test_a_resolved_incident_is_not_reported_again_as_persistent(joint_baseline):
    """A strong shift for 3 windows raises and resolves the distribution check; the
    persistent check's blocks then hold it for 8 windows, but it stays quiet: no event of
    its own before or after, over 40 windows."""
    evaluator = Evaluator(_stream_config(), {DEFAULT_MODEL: joint_baseline})
    rng = np.random.default_rng(21)
    events = _feed(evaluator, joint_baseline, rng, 0, 40)
    events += _feed(evaluator, joint_baseline, rng, 40, 12, shift=0.5)
    events += _feed(evaluator, joint_baseline, rng, 52, 160)
    kinds = [(e.type, e.feature, e.check) for e in events]
    assert ("skew_detected", "c", "distribution") in kinds
    assert ("skew_resolved", "c", "distribution") in kinds
    assert all(check != "persistent" for _, _, check in kinds)
    assert all(feature != JOINT_FEATURE for _, feature, _ in kinds)  # explained by c


def test_restore_mid_stream_continues_identically_with_blocks(joint_baseline):
    """Checkpoint in the middle of a run (persistent blocks, joint memory included) and
    continue in a new evaluator: the same events as the uninterrupted run. A checkpoint
    written before these checks existed (no blocks) restores too."""
    config = _stream_config(persistent_windows=3)
    shifts = [0.0] * 8 + [0.15] * 20 + [0.5] * 6 + [0.0] * 14  # pane -> shift of c

    def run(split):
        rng = np.random.default_rng(22)
        evaluator = Evaluator(config, {DEFAULT_MODEL: joint_baseline})
        events = []
        for index, shift in enumerate(shifts):
            if index == split:
                evaluator, saved = Evaluator(config, {DEFAULT_MODEL: joint_baseline}), \
                    evaluator.state_bytes()
                evaluator.restore(saved)
            events += _feed(evaluator, joint_baseline, rng, index, 1, shift=shift)
        return [(e.event_id, e.type, e.check, e.value, e.threshold) for e in events]

    uninterrupted = run(-1)
    assert {check for *_, check, _, _ in uninterrupted} >= {"distribution", "persistent"}
    for split in (13, 23, 35):
        assert run(split) == uninterrupted
    raw = orjson.loads(Evaluator(config, {DEFAULT_MODEL: joint_baseline}).state_bytes())
    legacy = Evaluator(config, {DEFAULT_MODEL: joint_baseline})
    evaluator = Evaluator(config, {DEFAULT_MODEL: joint_baseline})
    _feed(evaluator, joint_baseline, np.random.default_rng(1), 0, 5)
    raw = orjson.loads(evaluator.state_bytes())
    for saved in raw["models"].values():
        for key in ("blocks", "first_block", "quiet_through", "input_alarm"):
            del saved[key]
    legacy.restore(orjson.dumps(raw))
    assert legacy.models[DEFAULT_MODEL].blocks == type(legacy.models[DEFAULT_MODEL].blocks)()


def test_events_say_which_scale_fired_and_keep_their_ids(joint_baseline):
    evaluator = Evaluator(_stream_config(), {DEFAULT_MODEL: joint_baseline})
    rng = np.random.default_rng(23)
    _feed(evaluator, joint_baseline, rng, 0, 8)
    (event,) = [e for e in _feed(evaluator, joint_baseline, rng, 8, 1, shift=0.4)
                if e.check == "distribution"]
    assert event.evidence["scale"] == {"name": "newest pane", "panes": 1, "window_panes": 4,
                                       "start": 8 * 60_000, "end": 9 * 60_000,
                                       "count": event.evidence["scale"]["count"]}
    assert event.window_start == 5 * 60_000 and event.window_count > 6_000  # the window's
    from streamskew.detector.events import event_id

    assert event.event_id == event_id(DEFAULT_MODEL, "c", "distribution", "jsd",
                                      9 * 60_000, "skew_detected")


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("detect", "message"), [
    ({"scales": "often"}, "scales"), ({"scales": "0, 2"}, "at least 1 pane"),
    ({"surge_factor": 0.5}, "surge_factor"), ({"surge_min_change": 1.0}, "surge_min_change"),
    ({"joint_variance": 1.0}, "joint_variance"), ({"persistent_windows": 1}, "at least 2"),
    ({"persistent_ratio": 2.0}, "persistent_ratio")])
def test_bad_detect_settings_are_named(detect, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict({"detect": detect})


def test_scales_setting():
    assert Config.from_dict({}).detect.scale_panes(15) == (1, 2, 4)
    assert Config.from_dict({"detect": {"scales": "3,1,20"}}).detect.scale_panes(10) == (1, 3)
    assert Config.from_dict({"detect": {"scales": "none"}}).detect.scale_panes(10) == ()
