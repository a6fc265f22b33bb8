"""Tests of the HTML report (streamskew.report) and its inline-SVG helpers."""

from __future__ import annotations

import copy
import doctest
import random
import re
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

pytest.importorskip("jinja2")

import streamskew.report as report
from streamskew.report import render_report, svg, write_report

T0 = 1764320400000  # 2025-11-28 09:00:00 UTC
STEP = 900_000  # 15 minutes
EVIL = "<script>alert(1)</script>"
SVG_RE = re.compile(r"<svg\b.*?</svg>", re.S)
SVG_NS = "{http://www.w3.org/2000/svg}"


# --------------------------------------------------------------------------- data


def numeric_feature(
    name: str,
    k: int = 10,
    status: str = "ok",
    n_scores: int = 12,
    jump_at: int | None = None,
    scale: float = 1.0,
) -> dict[str, Any]:
    edges = [scale * (0.2 + 0.1 * i + 0.01 * i * i) for i in range(k + 1)]
    base = [0.01] + [0.98 / k] * k + [0.01]
    serv = [0.0] + [(0.5 + i) for i in range(k)] + [0.05]
    tot = sum(serv)
    serv = [s / tot for s in serv]
    scores = []
    for j in range(n_scores):
        v = 0.03 if jump_at is None or j < jump_at else 0.4
        scores.append({"window_end": T0 + j * STEP, "value": v, "threshold": 0.1})
    qs = ("p01", "p25", "p50", "p75", "p99")
    return {
        "name": name,
        "kind": "numeric",
        "metric": "jsd",
        "threshold": 0.1,
        "status": status,
        "checks": {"distribution": scores[-1]["value"] if scores else None, "missing_rate": 0.0},
        "edges": edges,
        "baseline_probs": base,
        "serving_probs": serv,
        "labels": None,
        "quantiles": {
            "baseline": {q: edges[min(i * k // 4, k)] for i, q in enumerate(qs)},
            "serving": {q: 1.1 * edges[min(i * k // 4, k)] for i, q in enumerate(qs)},
        },
        "scores": scores,
    }


def categorical_feature(name: str = "cut", status: str = "skew") -> dict[str, Any]:
    labels = ["Ideal", "Premium", "Very Good", "Good", "Fair", "<other>", "<unseen>", EVIL]
    return {
        "name": name,
        "kind": "categorical",
        "metric": "jsd",
        "threshold": 0.1,
        "status": status,
        "checks": {"distribution": 0.17, "missing_rate": 0.001, "unseen_rate": 0.12},
        "edges": None,
        "baseline_probs": [0.40, 0.25, 0.22, 0.09, 0.03, 0.01, 0.0, 0.0],
        "serving_probs": [0.30, 0.22, 0.20, 0.10, 0.03, 0.02, 0.12, 0.01],
        "labels": labels,
        "quantiles": None,
        "scores": [
            {"window_end": T0 + j * STEP, "value": 0.02 if j < 8 else 0.17, "threshold": 0.1}
            for j in range(12)
        ],
    }


def event(feature: str, end: int, severity: str = "critical", etype: str = "skew_detected"):
    return {
        "schema": "streamskew.event/v1",
        "event_id": f"ev-{feature}-{end}",
        "type": etype,
        "model": "default",
        "feature": feature,
        "kind": "numeric",
        "check": "distribution",
        "metric": "jsd",
        "value": 0.42,
        "threshold": 0.1,
        "severity": severity,
        "window": {"start": end - STEP, "end": end, "count": 4821},
        "baseline": {"id": "ab12cd34", "count": 43152},
        "evidence": {
            "serving": {"p01": 0.3, "p50": 0.7, "p99": 2.2, "missing_rate": 0.0},
            "baseline": {"p01": 0.31, "p50": 0.7, "p99": 2.18, "missing_rate": 0.0},
            "psi": 0.41,
            "ks": 0.18,
            "wasserstein": 0.07,
            "top_unseen": [{"value": "XX", "count": 12}],
        },
    }


def example() -> dict[str, Any]:
    events = [
        # deliberately not in time order: the report sorts them, newest last
        event("carat", T0 + 10 * STEP, "critical"),
        event("cut", T0 + 8 * STEP, "warning"),
        event("carat", T0 + 11 * STEP, "info", "skew_resolved"),
    ]
    return {
        "title": "streamskew report",
        "generated_at": "2026-11-28T07:30:00Z",
        "source": "detect: requests.jsonl",
        "baseline": {"id": "ab12cd34ef56", "count": 43152, "path": "baseline.json"},
        "summary": {
            "records": 20000,
            "bad_records": {"invalid_json": 3, "bad_timestamp": 1},
            "late_records": 0,
            "windows": 40,
            "events": len(events),
        },
        "events": events,
        "models": [
            {
                "model": "default",
                "features": [
                    numeric_feature("depth", status="ok"),
                    numeric_feature("carat", k=20, status="skew", jump_at=9),
                    categorical_feature("cut"),
                    numeric_feature("table", status="not_judged", n_scores=0),
                ],
            },
            {"model": "ranker", "features": [numeric_feature("score_raw", status="ok")]},
        ],
    }


def svgs(html: str) -> list[str]:
    return SVG_RE.findall(html)


def parse_all_svgs(html: str) -> list[ET.Element]:
    """Parse every inline <svg> as XML (raises on malformed markup)."""
    return [ET.fromstring(s) for s in svgs(html)]


def card_names(html: str) -> list[str]:
    return re.findall(
        r'<article class="card [^"]*" id="[^"]*">\s*<div class="card-head">\s*'
        r"<h3><span>(.*?)</span>",
        html,
    )


# --------------------------------------------------------------------------- content


def test_realistic_report_content() -> None:
    data = example()
    html = render_report(data)
    assert html.startswith("<!DOCTYPE html>")
    assert html.rstrip().endswith("</html>")
    for name in ("depth", "carat", "cut", "table", "score_raw"):
        assert f"<span>{name}</span>" in html
    assert "ranker" in html and "default" in html
    # header counters, bad records by reason
    assert "20,000" in html and "43,152" in html
    assert "invalid_json: 3" in html and "bad_timestamp: 1" in html
    assert "detect: requests.jsonl" in html and "baseline.json" in html
    # one table row per event, newest last, with badges
    rows = re.findall(r'<tr class="event".*?</tr>', html, re.S)
    assert len(rows) == len(data["events"])
    times = [re.search(r'<td class="num">([^<]+)</td>', r).group(1) for r in rows]
    assert times == sorted(times)
    assert times[-1] == "2025-11-28 11:45:00"
    assert '<span class="badge red">critical</span>' in html
    assert '<span class="badge amber">warning</span>' in html
    assert '<span class="badge green">skew_resolved</span>' in html
    assert "psi 0.41" in html and "XX (12)" in html
    # events link to their feature's card
    carat_anchor = re.search(r'id="(m0-f\d+)">\s*<div class="card-head">\s*<h3><span>carat<', html)
    assert carat_anchor and f'href="#{carat_anchor.group(1)}"' in html
    # quantile table for numeric features only (4 numeric features)
    assert html.count('<table class="q">') == 4


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
    n_features = 5
    assert len(roots) == 2 * n_features  # a distribution chart and a score chart each
    for root in roots:
        assert root.tag == f"{SVG_NS}svg"
        assert float(root.get("width")) > 0 and float(root.get("height")) > 0


def test_skewed_features_sort_first() -> None:
    html = render_report(example())
    assert card_names(html) == ["carat", "cut", "depth", "table", "score_raw"]


def test_malicious_names_are_escaped() -> None:
    data = example()
    data["title"] = f"t {EVIL}"
    data["source"] = EVIL
    data["models"][0]["features"][0]["name"] = EVIL
    data["events"].append(event(EVIL, T0))
    data["summary"]["bad_records"][EVIL] = 1
    html = render_report(data)
    assert "<script" not in html.lower()  # nothing executable, anywhere
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # the malicious category label reaches the chart escaped (truncated in the label, full in
    # the tooltip) and the SVG still parses
    cut_svg = next(s for s in svgs(html) if "Premium" in s)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in cut_svg
    texts = [el.text or "" for el in ET.fromstring(cut_svg).iter()]
    assert any(t.startswith(EVIL) for t in texts)  # the tooltip, decoded by the parser
    parse_all_svgs(html)


def test_page_is_self_contained() -> None:
    html = render_report(example())
    without_ns = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in without_ns and "https://" not in without_ns
    for tag in ("<script", "<link", "<img", "<iframe", "@import", "url("):
        assert tag not in html.lower()


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
    for mod in (report, svg):
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert res.attempted > 0 and res.failed == 0, mod.__name__


# --------------------------------------------------------------------------- robustness


def with_feature(f: dict[str, Any], **top: Any) -> dict[str, Any]:
    data = {"title": "r", "models": [{"model": "m", "features": [f]}]}
    data.update(top)
    return data


def test_empty_everything() -> None:
    html = render_report({})
    assert "No skew events in this run." in html
    assert "No per-feature results in this report." in html
    assert svgs(html) == []


def test_empty_events_and_scores() -> None:
    f = numeric_feature("x", n_scores=0)
    html = render_report(with_feature(f, events=[]))
    assert "No skew events in this run." in html
    assert "no evaluated windows yet" in html
    assert len(parse_all_svgs(html)) == 2


def test_serving_probs_none() -> None:
    for f in (numeric_feature("x"), categorical_feature("c")):
        f["serving_probs"] = None
        html = render_report(with_feature(f))
        assert "no serving values" in html
        dist = parse_all_svgs(html)[0]
        assert serving_marks(dist) == 0  # nothing drawn in the serving colour


def serving_marks(root: ET.Element) -> int:
    return sum(
        1
        for el in root.iter()
        if svg.SERVING in (el.get("fill"), el.get("stroke"))
        and el.tag != f"{SVG_NS}text"
        and "h12" not in (el.get("d") or "")  # the legend swatch
    )


def test_single_score_point() -> None:
    f = numeric_feature("x", n_scores=1)
    html = render_report(with_feature(f))
    score = parse_all_svgs(html)[1]
    titles = [t.text for t in score.iter(f"{SVG_NS}title")]
    assert titles == ["09:00: 0.03\nthreshold 0.1"]
    assert "(1 judged)" in html


def test_single_bin_feature() -> None:
    f = numeric_feature("x", k=1)
    assert len(f["edges"]) == 2 and len(f["baseline_probs"]) == 3
    html = render_report(with_feature(f))
    dist = parse_all_svgs(html)[0]
    texts = [t.text for t in dist.iter(f"{SVG_NS}text")]
    assert "1 equal-mass baseline bin" in texts
    assert "0.2" in texts and "0.31" in texts  # both edges as ticks


def test_window_end_none_uses_index() -> None:
    f = numeric_feature("x", n_scores=5, jump_at=3)
    f["scores"][2]["window_end"] = None
    f["scores"][1]["value"] = None
    html = render_report(with_feature(f))
    score = parse_all_svgs(html)[1]
    texts = [t.text for t in score.iter(f"{SVG_NS}text")]
    assert "#1" in texts and "#5" in texts and "window index" in texts
    assert any("not judged" in (t.text or "") for t in score.iter(f"{SVG_NS}title"))


def test_huge_and_tiny_values_are_formatted_compactly() -> None:
    f = numeric_feature("x", scale=1.2345e15)
    f["quantiles"]["serving"]["p50"] = 3.14159e-9
    f["checks"]["distribution"] = float("nan")
    f["checks"]["out_of_range"] = float("inf")
    f["scores"][0]["value"] = 7.5e30
    f["threshold"] = 1e-12
    html = render_report(with_feature(f))
    for text in ("2.47e14", "2.72e15", "3.14e-9", "1e-12", "7.5e30", "NaN", "∞"):
        assert text in html, text
    assert "e+" not in html  # no Python-style exponents
    assert "1234500000000000" not in html.replace(",", "")  # no long digit strings
    parse_all_svgs(html)


def test_malformed_values_do_not_break_the_page() -> None:
    f = numeric_feature("x")
    f["baseline_probs"] = [None, "abc", -1, float("nan"), 0.5]  # wrong length and junk
    f["serving_probs"] = [0.1] * 30
    f["edges"] = [1, 2]  # does not match the bins: no edge ticks
    f["scores"] = [{"window_end": T0, "value": "x"}, "junk", {"value": 0.2}]
    f["quantiles"] = {"baseline": None}
    f["checks"] = None
    g = categorical_feature("c")
    g["labels"] = ["a", None]  # fewer labels than probabilities
    data = with_feature(f)
    data["models"][0]["features"].append(g)
    data["models"].append("junk")
    data["events"] = [None, {"window": {"end": "soon"}}, {"window": {"end": 1e30}}]
    data["summary"] = {"bad_records": 7}
    html = render_report(data)
    assert len(re.findall(r'<tr class="event"', html)) == 2
    assert len(parse_all_svgs(html)) == 4
    assert "28 equal-mass baseline bins" in html


def test_categorical_top_labels_and_unseen() -> None:
    labels = [f"cat{i}" for i in range(40)] + ["<unseen>"]
    base = [1 / 40] * 40 + [0.0]
    serv = [0.9 / 40] * 40 + [0.001]  # <unseen> is the smallest: kept anyway
    chart = svg.categorical_chart(labels, base, serv, top=20)
    root = ET.fromstring(chart)
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert "<unseen>" in texts
    assert sum(1 for t in texts if t and t.startswith("cat")) == 19
    assert "+ 21 more labels not shown" in texts
    unseen = next(t for t in root.iter(f"{SVG_NS}text") if t.text == "<unseen>")
    assert unseen.get("fill") == svg.EXCEED


def test_score_chart_marks_values_over_threshold() -> None:
    scores = [
        {"window_end": T0 + j * STEP, "value": v, "threshold": 0.1}
        for j, v in enumerate([0.05, 0.2, 0.08, 0.3, 0.1, 0.11])
    ]
    root = ET.fromstring(svg.score_chart(scores, 0.1))
    red = [p for p in root.iter(f"{SVG_NS}path") if p.get("stroke") == svg.EXCEED]
    assert len(red) == 1 and red[0].get("d").count("h0") == 3  # 0.2, 0.3, 0.11 (not 0.1)
    dashed = [p for p in root.iter(f"{SVG_NS}path") if p.get("stroke-dasharray")]
    assert len(dashed) == 1 and dashed[0].get("stroke") == svg.THRESHOLD


def test_numeric_chart_outer_bins_and_tooltip_budget() -> None:
    k = 100
    edges = [float(i) for i in range(k + 1)]
    probs = [0.05] + [0.9 / k] * k + [0.05]
    root = ET.fromstring(svg.numeric_chart(edges, probs, probs))
    titles = [t.text for t in root.iter(f"{SVG_NS}title")]
    assert titles[0].startswith("underflow (< 0)") and titles[1].startswith("overflow (≥ 100)")
    assert len(titles) <= 2 + 20  # runs of bins share a tooltip
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert {"under", "over", "0", "100"} <= set(texts)


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
        (None, "—"),
        (float("nan"), "NaN"),
    ],
)
def test_fmt_num(value: Any, expected: str) -> None:
    assert svg.fmt_num(value) == expected


def test_size_bound_for_200_features() -> None:
    rng = random.Random(7)
    k, n_scores = 100, 100
    feats = []
    for i in range(200):
        b = [rng.uniform(0.5, 1.5) for _ in range(k + 2)]
        s = [rng.uniform(0.0, 2.0) for _ in range(k + 2)]
        feats.append(
            {
                "name": f"feature_with_a_longish_name_{i:03d}",
                "kind": "numeric",
                "metric": "jsd",
                "threshold": 0.1,
                "status": "skew",
                "checks": {"distribution": 0.4123, "missing_rate": 0.0123, "out_of_range": 0.0456},
                "edges": sorted(rng.uniform(-1e6, 1e6) for _ in range(k + 1)),
                "baseline_probs": [x / sum(b) for x in b],
                "serving_probs": [x / sum(s) for x in s],
                "labels": None,
                "quantiles": {
                    side: {q: rng.uniform(-1e6, 1e6) for q in ("p01", "p25", "p50", "p75", "p99")}
                    for side in ("baseline", "serving")
                },
                # every value over the threshold, irregular times: the worst case for size
                "scores": [
                    {
                        "window_end": T0 + j * 60_000 + rng.randint(1, 999),
                        "value": rng.uniform(0.1001, 0.9),
                        "threshold": 0.1,
                    }
                    for j in range(n_scores)
                ],
            }
        )
    data = copy.deepcopy(example())
    data["models"] = [{"model": "m", "features": feats}]
    html = render_report(data)
    size = len(html.encode("utf-8"))
    assert size < 3 * 1024 * 1024, size
    assert len(card_names(html)) == 200
    assert len(parse_all_svgs(html)) == 400
