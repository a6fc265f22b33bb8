"""Tests of the HTML report: the collector (streamskew.report.collect), the page
(streamskew.report) and its inline-SVG charts (streamskew.report.svg).

The browser test (a real headless Chromium) is in tests/test_report_browser.py.
"""

from __future__ import annotations

import doctest
import itertools
import math
import re
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

pytest.importorskip("jinja2")

import streamskew.report as report
import streamskew.report.collect as collect
from streamskew import Baseline, Config
from streamskew.demo import DEMO_CONFIG, MODEL
from streamskew.detector import SkewEvent, WindowResult
from streamskew.detector.checks import CheckResult
from streamskew.detector.window import Pane
from streamskew.records import BadRecord
from streamskew.report import render_report, svg, write_report
from streamskew.report.collect import ReportCollector, integer_valued, serving_quantiles

T0 = 1_764_288_000_000  # 2025-11-28 00:00:00 UTC
MINUTE = 60_000
EVIL = "<script>alert(1)</script>"
SVG_RE = re.compile(r"<svg\b.*?</svg>", re.S)
SVG_NS = "{http://www.w3.org/2000/svg}"


# --------------------------------------------------------------------------- helpers


def svgs(html: str) -> list[str]:
    return SVG_RE.findall(html)


def parse_all_svgs(html: str) -> list[ET.Element]:
    """Parse every inline <svg> as XML (raises on malformed markup)."""
    return [ET.fromstring(s) for s in svgs(html)]


def overview_rows(html: str) -> dict[str, dict[str, str]]:
    """Overview rows by ``model/feature/check/metric``: their state and incident count."""
    rows = {}
    for m in re.finditer(r'<tr class="ov-row" data-state="([^"]*)" data-incidents="(\d+)"'
                         r' data-key="([^"]*)">(.*?)</tr>', html, re.S):
        rows[m.group(3)] = {"state": m.group(1), "incidents": m.group(2), "html": m.group(4)}
    return rows


def feature_card(html: str, feature: str) -> str:
    for m in re.finditer(r'<article class="card [^"]*" id="[^"]*">.*?</article>', html, re.S):
        if f'<span class="fname">{feature}</span>' in m.group(0):
            return m.group(0)
    raise AssertionError(f"no card for {feature}")


def lane_spans(card: str) -> dict[tuple[str, str], list[str]]:
    """Per lane (check, metric) of a feature's timeline: the incident anchors of its spans."""
    timeline = ET.fromstring(svgs(card)[0])
    out = {}
    for lane in timeline.iter(f"{SVG_NS}g"):
        if lane.get("class") == "lane":
            links = [a.get("href") for a in lane.iter(f"{SVG_NS}a")]
            out[(lane.get("data-check"), lane.get("data-metric"))] = links
    return out


def check(feature: str, check_name: str, metric: str, value: float, threshold: float,
          kind: str = "numeric", judged: bool = True, count: int = 1000) -> CheckResult:
    return CheckResult(feature, kind, check_name, metric, value, threshold, judged, count)


def window(baseline: Baseline, index: int, results: list[CheckResult],
           values: dict[str, Any] | None = None, model: str = "m") -> WindowResult:
    """A judged 10-minute window ending at pane ``index`` (1-minute panes)."""
    pane = Pane.empty(index, baseline)
    for name, vals in (values or {}).items():
        summary = pane.summaries[name]
        if baseline.features[name].kind == "numeric":
            summary.update(np.asarray(vals, dtype=np.float64))
        else:
            column = np.empty(len(vals), dtype=object)
            column[:] = vals
            summary.update(column)
        pane.records = max(pane.records, len(vals))
    end = T0 + (index + 1) * MINUTE
    return WindowResult(model, end - 10 * MINUTE, end, pane.records, tuple(results), pane,
                        baseline)


def skew_event(kind: str, feature: str, check_name: str, metric: str, end: int,
               value: float = 0.5, model: str = "m") -> SkewEvent:
    return SkewEvent(type=kind, model=model, feature=feature, kind="numeric", check=check_name,
                     metric=metric, value=value, threshold=0.1,
                     severity="critical" if kind == "skew_detected" else "info",
                     window_start=end - 10 * MINUTE, window_end=end, window_count=1000,
                     baseline_id="b", baseline_count=1, evidence={})


class _Stats:
    """The counters ReportCollector.data reads (a DetectorStats stand-in for unit tests)."""

    records, accepted, late, windows = 1000, 990, 0, 10
    bad = {"invalid_json": 4}  # noqa: RUF012
    field_errors = {"wrong_type": 6}  # noqa: RUF012


@pytest.fixture(scope="module")
def small_baseline() -> Baseline:
    rng = np.random.default_rng(5)
    return Baseline.from_columns({
        "amount": rng.normal(10, 2, 5000).tolist(),
        "count": rng.integers(1, 17, 5000).astype(float).tolist(),
        "country": rng.choice(["DE", "FR", "US"], 5000).tolist(),
    })


# --------------------------------------------------------------------------- the demo


@pytest.fixture(scope="module")
def demo(demo_output) -> dict[str, Any]:
    """The demo's report, and the report data built from the demo's files again."""
    from streamskew.files import detect_file

    directory, demo_events = demo_output
    baseline = Baseline.load(directory / "baseline.json")
    collector = ReportCollector(baseline)
    run = detect_file(Config.from_dict(DEMO_CONFIG), baseline, directory / "requests.jsonl",
                      on_window=collector.on_window, on_bad_record=collector.on_bad_record)
    data = collector.data(run.detector.stats, run.events, "demo", None)
    return {"html": (directory / "report.html").read_text(encoding="utf-8"), "data": data,
            "events": demo_events, "collector": collector, "stats": run.detector.stats}


# The demo's incidents (all resolve before the end) and where they must show.
DEMO_INCIDENTS = [
    ("carat", "distribution", "jsd"),
    ("cut", "unseen_categories", "unseen_rate"),
    ("depth", "missing_rate", "missing_rate"),
    ("table", "schema", "type_change"),
]


@pytest.mark.parametrize(("feature", "check_name", "metric"), DEMO_INCIDENTS)
def test_demo_incident_in_overview_and_in_its_timeline(demo, feature, check_name, metric):
    html = demo["html"]
    row = overview_rows(html)[f"{MODEL}/{feature}/{check_name}/{metric}"]
    assert row["state"] == "resolved" and row["incidents"] == "1"
    anchor = re.search(r'href="#(inc-\d+)"', row["html"]).group(1)
    # its feature's timeline shades the span in the lane of that check, linking to it
    spans = lane_spans(feature_card(html, feature))
    assert spans[(check_name, metric)] == [f"#{anchor}"]
    others = {link for key, links in spans.items() if key != (check_name, metric)
              for link in links}
    assert f"#{anchor}" not in others
    # and the incident view is there, in the same card
    assert f'id="{anchor}" data-feature="{feature}" data-check="{check_name}"' in \
        feature_card(html, feature)


def test_demo_overview_sorts_incidents_first_and_lists_every_check(demo):
    rows = list(overview_rows(demo["html"]).items())
    states = [r["state"] for _, r in rows]
    n_incidents = sum(s == "resolved" for s in states)
    assert n_incidents == sum(e.type == "skew_detected" for e in demo["events"])
    assert states[:n_incidents] == ["resolved"] * n_incidents  # nothing is active at the end
    assert set(states[n_incidents:]) <= {"ok", "not_judged"}
    # resolved rows: most recently resolved first
    ends = [float(re.findall(r'data-v="([\d.]+)">[^<]*</td>\s*$', r["html"])[0])
            for _, r in rows[:n_incidents]]
    assert ends == sorted(ends, reverse=True)
    # every check of every feature has a row: 10 features, 4 per feature
    # (distribution, missing rate, out of range / unseen, type change), a surge row for each
    # of the 3 categorical features, and the joint check of the numeric features
    assert len(rows) == 10 * 4 + 3 + 1
    assert {key for key, _ in rows} >= {f"{MODEL}/cut/surge/share_ratio",
                                         f"{MODEL}/(joint)/joint/jsd"}


def test_demo_events_link_to_their_incidents(demo):
    html = demo["html"]
    rows = re.findall(r'<tr class="event" data-href="#(inc-\d+)" id="ev-([0-9a-f]+)"', html)
    assert len(rows) == len(demo["events"])
    incident_ids = set(re.findall(r'<div class="incident" id="(inc-\d+)"', html))
    assert {r for r, _ in rows} == incident_ids
    by_id = {e.event_id: e for e in demo["events"]}
    for incident, event_id in rows:  # a detected and its resolved event share one incident
        e = by_id[event_id]
        view = re.search(rf'id="{incident}" data-feature="([^"]*)" data-check="([^"]*)"'
                         rf' data-metric="([^"]*)"', html)
        assert view.groups() == (e.feature, e.check, e.metric)


def test_demo_worst_window_is_the_peak_of_the_incident(demo):
    data = demo["data"]
    features = {f["name"]: f for f in data["models"][0]["features"]}
    for feature, check_name, metric in DEMO_INCIDENTS:
        f = features[feature]
        (incident,) = [i for i in f["incidents"] if (i["check"], i["metric"]) ==
                       (check_name, metric)]
        series = next(c for c in f["checks"] if (c["check"], c["metric"]) ==
                      (check_name, metric))
        # every window over threshold of the run belongs to this one incident
        assert incident["windows_over"] == series["over"] > 0
        worst = incident["worst"]
        assert worst["value"] == pytest.approx(series["peak"]["value"])
        assert worst["end"] == series["peak"]["end"]
        assert incident["raised"] <= worst["end"] <= incident["resolved"]
        # the peak of the downsampled timeline is the same window value
        assert max(p[2] for p in series["points"] if p[2] is not None) == \
            pytest.approx(worst["value"])
    # what each worst window shows
    cut = next(i for i in features["cut"]["incidents"] if i["check"] == "unseen_categories")
    assert cut["worst"]["top_unseen"][0]["value"] == "Excellent"
    depth = features["depth"]["incidents"][0]["worst"]
    assert depth["missing"] / (depth["count"] + depth["missing"]) == pytest.approx(
        depth["value"])
    table = features["table"]["incidents"][0]["worst"]
    assert table["invalid"] > 0 and table["count"] == 0 and table["probs"] is None


def test_demo_report_shows_field_errors_beside_rejected_records(demo):
    html = demo["html"]
    rejected = re.search(r'id="tile-rejected">.*?</div>\s*</div>', html, re.S).group(0)
    field = re.search(r'id="tile-field-errors">.*?</div>\s*</div>', html, re.S).group(0)
    assert '<div class="value">9</div>' in rejected
    assert "invalid_json: 5" in rejected and "not_an_object: 4" in rejected
    assert '<div class="value">3,000</div>' in field and "wrong_type: 3,000" in field


def test_detect_file_hands_every_bad_record_to_the_collector(demo):
    collector, stats = demo["collector"], demo["stats"]
    seen = sum(collector.bad_without_time.values()) + sum(
        sum(c.values()) for c in collector._bad.values())
    assert seen == stats.bad_total + sum(stats.field_errors.values()) == 9 + 3000


def test_demo_categorical_overlay_names_the_unseen_value(demo):
    card = feature_card(demo["html"], "cut")
    unseen = re.search(r'<div class="incident" id="inc-\d+" data-feature="cut"'
                       r' data-check="unseen_categories".*?</svg>', card, re.S).group(0)
    texts = [t.text for t in ET.fromstring(svgs(unseen)[0]).iter(f"{SVG_NS}text")]
    assert "<unseen>" in texts and "\u201cExcellent\u201d" in texts


# --------------------------------------------------------------------------- the collector


def test_worst_window_is_the_worst_inside_the_incident_not_outside(small_baseline):
    collector = ReportCollector(small_baseline)
    values = [0.05, 0.2, 0.3, 0.05, 0.05, 0.5, 0.05, 0.05]  # two runs over 0.1
    for i, v in enumerate(values):
        collector.on_window(window(small_baseline, i,
                                   [check("amount", "distribution", "jsd", v, 0.1)],
                                   {"amount": [10.0 + i] * 50}))
    end = [T0 + (i + 1) * MINUTE for i in range(len(values))]
    events = [skew_event("skew_detected", "amount", "distribution", "jsd", end[1]),
              skew_event("skew_resolved", "amount", "distribution", "jsd", end[4]),
              skew_event("skew_detected", "amount", "distribution", "jsd", end[5]),
              skew_event("skew_resolved", "amount", "distribution", "jsd", end[7])]
    data = collector.data(_Stats(), events, "t", None)
    (feature,) = data["models"][0]["features"]
    first, second = feature["incidents"]
    assert (first["raised"], first["resolved"]) == (end[1], end[4])
    assert first["worst"]["end"] == end[2] and first["worst"]["value"] == 0.3
    assert first["worst"]["quantiles"]["p50"] == pytest.approx(12.0, rel=0.01)
    assert first["windows_over"] == 2
    assert second["worst"]["end"] == end[5] and second["worst"]["value"] == 0.5
    (series,) = feature["checks"]
    assert series["state"] == "resolved" and series["over"] == 3 and series["judged"] == 8
    assert series["first_raised"] == end[1] and series["last_resolved"] == end[7]
    assert [i["id"] for i in series["incidents"]] == [first["id"], second["id"]]


def test_timeline_is_downsampled_to_a_bound_and_keeps_the_peak(small_baseline):
    collector = ReportCollector(small_baseline)
    rng = np.random.default_rng(1)
    n = 1440  # a day of 1-minute panes
    values = rng.uniform(0.0, 0.09, n)
    values[[100, 101, 900]] = [0.4, 0.2, 0.31]
    for i, v in enumerate(values):
        judged = i % 97 != 5  # a few windows not judged
        collector.on_window(window(small_baseline, i, [check("amount", "distribution", "jsd",
                                                             v, 0.1, judged=judged)]))
    data = collector.data(_Stats(), [], "t", None)
    (series,) = data["models"][0]["features"][0]["checks"]
    points = series["points"]
    assert len(points) <= collect.MAX_BUCKETS
    assert data["models"][0]["windows_per_point"] == 8  # 1440 / 8 = 180 <= 240
    judged_values = [v for i, v in enumerate(values) if i % 97 != 5]
    assert max(p[2] for p in points) == pytest.approx(max(judged_values))
    assert min(p[3] for p in points) == pytest.approx(min(judged_values))
    assert sum(p[5] for p in points) == series["judged"] == len(judged_values)
    assert sum(p[6] for p in points) == series["over"] == 3
    # points are in time order and cover the run
    assert points[0][0] == T0 + MINUTE and points[-1][1] == T0 + n * MINUTE
    assert all(a[1] < b[0] for a, b in itertools.pairwise(points))


def test_bad_records_are_counted_per_incident_span(small_baseline):
    collector = ReportCollector(small_baseline)
    for i in range(30):
        v = 0.5 if 10 <= i < 20 else 0.01
        collector.on_window(window(small_baseline, i, [check("amount", "distribution", "jsd",
                                                             v, 0.1)]))
    raised, resolved = T0 + 11 * MINUTE, T0 + 22 * MINUTE  # window [T0+1m, T0+11m) raised

    def bad(reason: str, at: int | None, used: bool = False, detail: str = "") -> None:
        collector.on_bad_record(BadRecord(0, reason, detail, b"x", used=used, event_time=at))

    for k in range(7):  # inside the span [raised window start, resolved window end)
        bad("wrong_type", T0 + 5 * MINUTE + k, used=True, detail="amount: str where numeric")
    bad("wrong_type", T0 + 6 * MINUTE, used=True, detail="count: str where numeric expected")
    bad("invalid_json", T0 + 15 * MINUTE)
    bad("invalid_json", T0 + 25 * MINUTE)  # after the resolve: not this incident's
    bad("invalid_json", None)  # unknown time: in the totals only
    events = [skew_event("skew_detected", "amount", "distribution", "jsd", raised),
              skew_event("skew_resolved", "amount", "distribution", "jsd", resolved)]
    data = collector.data(_Stats(), events, "t", None)
    (incident,) = data["models"][0]["features"][0]["incidents"]
    assert incident["bad"] == {"rejected": {"invalid_json": 1},
                               "field_errors": {"wrong_type": 8},
                               "feature_field_errors": {"wrong_type": 7}, "without_time": 1}
    assert data["summary"]["bad_without_time"] == 1
    # a run whose bad records never reached the collector (replay today): all are untimed
    unseen = ReportCollector(small_baseline)
    unseen.on_window(window(small_baseline, 0, [check("amount", "distribution", "jsd", .5, .1)]))
    untimed = unseen.data(_Stats(), events, "t", None)
    assert untimed["summary"]["bad_without_time"] == 4 + 6
    html = render_report(data)
    view = re.search(r'<div class="incident".*?(?=<details|</article>)', html, re.S).group(0)
    assert "invalid_json: 1" in view and "wrong_type: 8" in view
    assert "of which in <b>amount</b>: wrong_type 7" in view
    assert "1 bad records of the run have no event time known to the report" in view


def test_active_incident_sorts_first_and_counts(small_baseline):
    collector = ReportCollector(small_baseline)
    for i in range(5):
        collector.on_window(window(small_baseline, i, [
            check("amount", "distribution", "jsd", 0.5 if i >= 2 else 0.01, 0.1),
            check("amount", "missing_rate", "missing_rate", 0.0, 0.05),
            check("country", "distribution", "linf", 0.02, 0.1, kind="categorical")]))
    events = [skew_event("skew_detected", "amount", "distribution", "jsd", T0 + 3 * MINUTE)]
    html = render_report(collector.data(_Stats(), events, "t", None))
    keys = list(overview_rows(html))
    assert keys[0] == "m/amount/distribution/jsd"
    assert overview_rows(html)[keys[0]]["state"] == "skew"
    assert re.search(r'id="tile-incidents">.*?<div class="value">1</div>\s*'
                     r'<div class="sub">1 still active', html, re.S)
    assert "still active" in feature_card(html, "amount")


def test_serving_quantiles_of_integer_features_are_exact(small_baseline):
    feature = small_baseline.features["count"]
    assert integer_valued(feature)
    assert not integer_valued(small_baseline.features["amount"])
    rng = np.random.default_rng(2)
    for serving in (rng.integers(3, 17, 3000), rng.integers(1, 40, 3000), np.full(500, 7)):
        summary = feature.layout.empty()
        summary.update(serving.astype(np.float64))
        got = serving_quantiles(feature, summary)
        exact = {k: float(np.quantile(serving, q, method="lower"))
                 for k, q in collect.REPORT_QUANTILES.items()}
        assert got == exact  # exact: one integer per bin inside the training range,
        # and the window's exact min/max outside it


def test_serving_quantiles_of_wide_integer_bins_are_whole_and_close():
    rng = np.random.default_rng(4)
    baseline = Baseline.from_columns({"n": rng.integers(0, 5000, 20000).tolist()})
    feature = baseline.features["n"]
    assert integer_valued(feature)
    serving = rng.integers(0, 5000, 3000)
    summary = feature.layout.empty()
    summary.update(serving.astype(np.float64))
    got = serving_quantiles(feature, summary)
    for k, q in collect.REPORT_QUANTILES.items():
        exact = float(np.quantile(serving, q, method="lower"))
        assert got[k].is_integer()
        # the sketch's 1% relative error, plus 0.5 for the rounding
        assert abs(got[k] - exact) <= 0.01 * exact + 0.5, (k, got[k], exact)


def test_serving_quantiles_of_continuous_features_within_the_sketch_error(small_baseline):
    feature = small_baseline.features["amount"]
    rng = np.random.default_rng(3)
    serving = np.concatenate([rng.normal(13, 3, 2900), rng.normal(40, 1, 100)])
    summary = feature.layout.empty()
    summary.update(serving)
    got = serving_quantiles(feature, summary)
    raw = summary.quantile(list(collect.REPORT_QUANTILES.values()))
    for (k, q), sketch in zip(collect.REPORT_QUANTILES.items(), raw, strict=True):
        exact = float(np.quantile(serving, q, method="lower"))
        # the sketch guarantees 1% relative error; keeping it in the exact bin never hurts
        assert abs(got[k] - exact) <= 0.01 * abs(exact) + 1e-12
        assert abs(got[k] - exact) <= abs(sketch - exact) + 1e-12


def test_integer_feature_shows_whole_numbers_in_the_report(small_baseline):
    collector = ReportCollector(small_baseline)
    rng = np.random.default_rng(8)
    for i in range(3):
        collector.on_window(window(small_baseline, i,
                                   [check("count", "distribution", "jsd", 0.4, 0.1)],
                                   {"count": rng.integers(3, 17, 700).astype(float)}))
    event = skew_event("skew_detected", "count", "distribution", "jsd", T0 + MINUTE)
    event = SkewEvent(**{**event.__dict__, "evidence": {  # the engine's sketch quantiles
        "serving": {"p01": 2.98, "p50": 9.04, "p99": 15.92},
        "baseline": {"p01": 1.0, "p50": 9.0, "p99": 16.0}}})
    data = collector.data(_Stats(), [event], "t", None)
    feature = data["models"][0]["features"][0]
    assert feature["integer"] is True
    html = render_report(data)
    table = re.search(r'<table class="q">.*?</table>', html, re.S).group(0)
    cells = re.findall(r"<td>([^<]*)</td>", table)
    mean_cells = 2  # the last row (mean) is not a quantile
    assert all(re.fullmatch(r"\d+", c) for c in cells[:-mean_cells]), cells
    assert "integer-valued" in feature_card(html, "count")
    for chip in ("p01 1 \u2192 3", "p50 9 \u2192 9", "p99 16 \u2192 16"):
        assert f'<span class="chip">{chip}</span>' in html


# --------------------------------------------------------------------------- size bound


def _day_of_fifty_features() -> tuple[dict[str, Any], ReportCollector]:
    """A day of 1-minute windows for 50 features (40 numeric, 10 categorical), with
    incidents: the worst case for the report's size is long runs with many checks."""
    rng = np.random.default_rng(11)
    columns: dict[str, list[Any]] = {}
    for i in range(40):
        columns[f"numeric_feature_{i:02d}"] = rng.normal(i, 2, 3000).tolist()
    for i in range(10):
        columns[f"categorical_feature_{i:02d}"] = rng.choice(list("abcdef"), 3000).tolist()
    baseline = Baseline.from_columns(columns)
    collector = ReportCollector(baseline)
    events = []
    for index in range(1440):
        results = []
        for name, feature in baseline.features.items():
            kind = feature.kind
            shifted = name.endswith(("1", "7")) and (index // 60) % 3 == 1
            value = rng.uniform(0.12, 0.4) if shifted else rng.uniform(0.0, 0.08)
            results.append(check(name, "distribution", "jsd" if kind == "numeric" else "linf",
                                 value, 0.1, kind=kind))
            results.append(check(name, "missing_rate", "missing_rate", rng.uniform(0, .01),
                                 0.05, kind=kind))
            results.append(check(name, "out_of_range" if kind == "numeric" else
                                 "unseen_categories", "out_of_range_rate" if kind ==
                                 "numeric" else "unseen_rate", rng.uniform(0, .01), 0.02,
                                 kind=kind))
            results.append(check(name, "schema", "type_change", 0.0, 0.01, kind=kind))
            results.append(check(name, "schema", "feature_absent", 0.0, 0.5, kind=kind))
            end = T0 + (index + 1) * MINUTE
            if shifted and index % 60 == 0:
                events.append(skew_event("skew_detected", name, "distribution",
                                         results[-5].metric, end))
            if name.endswith(("1", "7")) and (index // 60) % 3 == 2 and index % 60 == 0:
                events.append(skew_event("skew_resolved", name, "distribution",
                                         results[-5].metric, end))
        values = {name: rng.normal(1, 2, 50) if f.kind == "numeric"
                  else rng.choice(list("abcdefgh"), 50) for name, f in
                  baseline.features.items()} if index % 60 == 0 else None
        collector.on_window(window(baseline, index, results, values))
    return collector.data(_Stats(), events, "day", None), collector


def test_a_day_of_fifty_features_stays_small():
    data, _ = _day_of_fifty_features()
    model = data["models"][0]
    assert len(model["features"]) == 50
    lanes = [c for f in model["features"] for c in f["checks"]]
    assert len(lanes) == 50 * 4  # feature_absent never fired: no lane
    assert max(len(c["points"]) for c in lanes) <= collect.MAX_BUCKETS
    n_incidents = sum(len(f["incidents"]) for f in model["features"])
    assert n_incidents > 50
    html = render_report(data)
    size = len(html.encode("utf-8"))
    assert size < 4 * 1024 * 1024, size  # the README's bound
    # every timeline point is drawn from the downsampled data, not per window: count the
    # vertices of the value lines
    vertices = sum(d.count(" ") + d.count("-") for d in
                   re.findall(r'<path class="value" d="([^"]*)"', html))
    assert vertices <= len(lanes) * collect.MAX_BUCKETS * 2
    assert html.count('class="incident"') == n_incidents
    parse_all_svgs(html)


# --------------------------------------------------------------------------- page basics


def example() -> dict[str, Any]:
    """Report data from the collector for a small run with one incident per check kind."""
    rng = np.random.default_rng(9)
    baseline = Baseline.from_columns({"amount": rng.normal(10, 2, 4000).tolist(),
                                      "country": rng.choice(["DE", "FR", "US"], 4000).tolist()})
    collector = ReportCollector(baseline)
    for i in range(12):
        hot = 4 <= i < 8
        collector.on_window(window(baseline, i, [
            check("amount", "distribution", "jsd", 0.3 if hot else 0.02, 0.1),
            check("amount", "missing_rate", "missing_rate", 0.0, 0.05),
            check("country", "distribution", "linf", 0.02, 0.1, kind="categorical"),
            check("country", "unseen_categories", "unseen_rate", 0.2 if hot else 0.0, 0.02,
                  kind="categorical")],
            {"amount": rng.normal(14 if hot else 10, 2, 600),
             "country": rng.choice(["DE", "XX"] if hot else ["DE", "FR"], 600)}))
    events = [skew_event("skew_detected", "amount", "distribution", "jsd", T0 + 5 * MINUTE),
              skew_event("skew_resolved", "amount", "distribution", "jsd", T0 + 10 * MINUTE),
              skew_event("skew_detected", "country", "unseen_categories", "unseen_rate",
                         T0 + 5 * MINUTE)]
    return collector.data(_Stats(), events, "detect: requests.jsonl", "baseline.json")


class _TagBalance(HTMLParser):
    """Checks that every HTML element is closed, in order."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "col", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> at {self.getpos()} but open: {self.stack[-3:]}")
        else:
            self.stack.pop()


def test_page_tags_are_balanced() -> None:
    checker = _TagBalance()
    checker.feed(render_report(example()))
    assert checker.errors == [] and checker.stack == []


def test_every_svg_is_well_formed_xml() -> None:
    html = render_report(example())
    roots = parse_all_svgs(html)
    # 2 timelines, 2 incident overlays, 2 last-window charts
    assert len(roots) == 6
    for root in roots:
        assert root.tag == f"{SVG_NS}svg"
        assert float(root.get("width")) > 0 and float(root.get("height")) > 0


def test_page_is_self_contained() -> None:
    html = render_report(example())
    without_ns = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in without_ns and "https://" not in without_ns
    for tag in ("<link", "<img", "<iframe", "@import", "url(", "fetch(", "xmlhttprequest"):
        assert tag not in html.lower()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ["<script>"]  # one inline script, nothing loaded


def test_everything_is_in_the_page_without_javascript() -> None:
    html = render_report(example())
    # the controls that need the script are hidden until it runs; the content is not
    assert re.search(r'<div class="controls" id="overview-controls" hidden>', html)
    body = re.sub(r"<script>.*?</script>", "", html, flags=re.S)
    assert len(overview_rows(body)) == 4  # 2 checks of amount, 2 of country
    assert body.count('class="incident"') == 2 and "\u201cXX\u201d" in body


def test_malicious_names_are_escaped() -> None:
    rng = np.random.default_rng(1)
    baseline = Baseline.from_columns({EVIL: rng.normal(0, 1, 1000).tolist(),
                                      "c": rng.choice(["a", EVIL], 1000).tolist()})
    collector = ReportCollector(baseline)
    collector.on_window(window(baseline, 0, [check(EVIL, "distribution", "jsd", 0.5, 0.1),
                                             check("c", "unseen_categories", "unseen_rate",
                                                   0.5, 0.1, kind="categorical")],
                               {"c": ["a", f"new {EVIL}"] * 300}))
    events = [skew_event("skew_detected", EVIL, "distribution", "jsd", T0 + MINUTE),
              skew_event("skew_detected", "c", "unseen_categories", "unseen_rate",
                         T0 + MINUTE)]
    data = collector.data(_Stats(), events, EVIL, EVIL)
    data["title"] = f"t {EVIL}"
    data["summary"]["bad_records"][EVIL] = 1
    html = render_report(data)
    assert "<script>alert" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    parse_all_svgs(html)  # the unseen value, escaped, keeps the SVG valid
    checker = _TagBalance()
    checker.feed(html)
    assert checker.errors == []


def test_write_report(tmp_path) -> None:
    data = example()
    out = tmp_path / "report.html"
    write_report(data, out)
    assert out.read_text(encoding="utf-8") == render_report(data)
    write_report(data, str(out))  # str paths too, overwriting
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left


def test_non_mapping_is_rejected() -> None:
    with pytest.raises(TypeError, match="mapping"):
        render_report([1, 2, 3])  # type: ignore[arg-type]


def test_missing_jinja2_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "_env_cache", {})
    monkeypatch.setitem(sys.modules, "jinja2", None)  # makes `import jinja2` fail
    with pytest.raises(ImportError, match=re.escape("pip install 'streamskew[report]'")):
        render_report(example())


def test_docstring_examples_run() -> None:
    for mod in (report, svg, collect):
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert res.attempted > 0 and res.failed == 0, mod.__name__


def test_empty_everything() -> None:
    html = render_report({})
    assert "No skew events in this run." in html
    assert "No per-feature results in this report." in html
    assert "No judged windows in this report." in html
    assert svgs(html) == []


def test_malformed_values_do_not_break_the_page() -> None:
    data = example()
    f = data["models"][0]["features"][0]
    f["baseline"]["probs"] = [None, "abc", -1, float("nan"), 0.5]  # wrong length and junk
    f["checks"][0]["points"] = [[None, 1, 2], "junk", [T0, T0, "x", None, None, 1, 0]]
    f["incidents"][0]["worst"]["probs"] = [0.1] * 3
    f["incidents"][0]["bad"] = None
    data["models"][0]["features"].append({"name": "x", "checks": "junk", "incidents": [None]})
    data["models"].append("junk")
    data["events"] += [None, {"window": {"end": "soon"}}, {"window": {"end": 1e30}}]
    data["summary"] = {"bad_records": 7}
    html = render_report(data)
    assert len(re.findall(r'<tr class="event"', html)) == 3 + 2
    parse_all_svgs(html)
    checker = _TagBalance()
    checker.feed(html)
    assert checker.errors == []


def test_events_over_the_row_limit_are_counted_not_listed(monkeypatch) -> None:
    monkeypatch.setattr(report, "MAX_EVENT_ROWS", 2)
    data = example()
    html = render_report(data)
    assert len(re.findall(r'<tr class="event"', html)) == 2
    assert "The 1 oldest events are not listed" in html


# --------------------------------------------------------------------------- charts


def test_quantile_chart_ticks_are_evenly_spaced_real_values() -> None:
    k = 100
    edges = [float(i) ** 2 for i in range(k + 1)]  # very uneven in value
    probs = [0.0] + [1 / k] * k + [0.0]
    root = ET.fromstring(svg.quantile_chart(edges, probs, probs))
    texts = {t.text: float(t.get("x")) for t in root.iter(f"{SVG_NS}text")}
    names = ["min", "p10", "p25", "p50", "p75", "p90", "max"]
    xs = [texts[n] for n in names]
    # equal-mass bins: the x position is the training quantile, so p10..p90 are evenly spaced
    unit = (xs[-1] - xs[0])
    for x, q in zip(xs, [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0], strict=True):
        assert x - xs[0] == pytest.approx(q * unit, abs=0.6)
    for value in ("0", "100", "625", "2,500", "5,625", "8,100", "10,000"):
        assert value in texts  # the real values at those quantiles


def test_quantile_chart_integer_bars_are_named() -> None:
    edges = [float(v) for v in range(1, 11)]
    probs = [0.0] + [1 / 9] * 9 + [0.0]
    root = ET.fromstring(svg.quantile_chart(edges, probs, probs, integer=True))
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert [str(v) for v in range(1, 10)] == [t for t in texts if t and t.isdigit()][:9]


def test_quantile_chart_without_serving_values() -> None:
    root = ET.fromstring(svg.quantile_chart([0, 1, 2], [0, .5, .5, 0], None))
    assert not [p for p in root.iter(f"{SVG_NS}path") if p.get("class") == "serving"]
    assert "serving: no values" in [t.text for t in root.iter(f"{SVG_NS}text")]


def test_categorical_chart_names_unseen_values() -> None:
    labels = [f"cat{i}" for i in range(40)] + ["<other>", "<unseen>"]
    base = [1 / 40] * 40 + [0.0, 0.0]
    serv = [0.9 / 40] * 40 + [0.0, 0.1]
    chart = svg.categorical_chart(labels, base, serv, top=20,
                                  unseen=[("Excellent", 0.07), ("New", 0.03)])
    root = ET.fromstring(chart)
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert "<unseen>" in texts and "\u201cExcellent\u201d" in texts and "\u201cNew\u201d" in texts
    assert sum(1 for t in texts if t and t.startswith("cat")) == 19
    assert "+ 22 more labels not shown" in texts


def test_timeline_lanes_shade_spans_and_mark_points_over() -> None:
    points = [[T0 + i * MINUTE, T0 + i * MINUTE, v, v, 0.1, 1, int(v > 0.1)]
              for i, v in enumerate([0.05, 0.2, 0.3, 0.05])]
    lanes = [{"label": "distribution", "check": "distribution", "metric": "jsd",
              "points": points, "spans": [(T0 + MINUTE, T0 + 3 * MINUTE, "inc-1")]},
             {"label": "missing rate", "check": "missing_rate", "metric": "missing_rate",
              "points": [[p[0], p[1], None, None, 0.05, 0, 0] for p in points], "spans": []}]
    root = ET.fromstring(svg.timeline_chart(lanes, T0, T0 + 3 * MINUTE))
    groups = [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "lane"]
    assert [g.get("data-check") for g in groups] == ["distribution", "missing_rate"]
    links = [a.get("href") for a in groups[0].iter(f"{SVG_NS}a")]
    assert links == ["#inc-1"]
    red = [p for p in groups[0].iter(f"{SVG_NS}path") if p.get("stroke") == svg.EXCEED]
    assert len(red) == 1 and red[0].get("d").count("h0") == 2  # 0.2 and 0.3
    assert not [p for p in groups[1].iter(f"{SVG_NS}path") if p.get("class") == "value"]
    span = next(groups[0].iter(f"{SVG_NS}rect"), None)
    assert span is not None


def test_time_ticks_are_round() -> None:
    ticks = svg.time_ticks(T0 + 7 * MINUTE, T0 + 24 * 60 * MINUTE, 8)
    assert all(t % (3 * 60 * MINUTE) == 0 for t in ticks) and len(ticks) == 8


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.42, "0.42"),
        (0.123456, "0.123"),
        (123.456, "123"),
        (43152, "43,152"),
        (519648.7, "519,600"),
        (1234.5, "1,234"),
        (2.5e9, "2.5e9"),
        (-3.2e-7, "-3.2e-7"),
        (0, "0"),
        (None, "\u2014"),
        (float("nan"), "NaN"),
    ],
)
def test_fmt_num(value: Any, expected: str) -> None:
    assert svg.fmt_num(value) == expected


def test_ratio_helper_handles_zero_thresholds() -> None:
    assert collect._ratio(0.2, 0.1) == pytest.approx(2.0)
    assert collect._ratio(0.2, 0.0) == math.inf and collect._ratio(0.0, 0.0) == 0.0
