"""The `streamskew` command: baseline build/show, detect, demo."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from streamskew import Baseline, Config, Detector
from streamskew.cli import main
from streamskew.demo import run_demo
from streamskew.files import iter_line_batches

START = 1_764_324_000_000
EVENT_KEYS = {"schema", "event_id", "type", "model", "feature", "kind", "check", "metric",
              "value", "threshold", "severity", "window", "baseline", "evidence"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Training CSV, a baseline built by the CLI, and a request log with a shift + bad lines."""
    tmp = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(11)
    lines = ["amount,country"]
    lines += [f"{rng.lognormal(3, 0.5):.3f},{rng.choice(['DE', 'FR', 'US'])}"
              for _ in range(20_000)]
    (tmp / "train.csv").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["baseline", "build", "--input", str(tmp / "train.csv"),
                                       "--output", str(tmp / "baseline.json")])
    assert result.exit_code == 0, result.output
    requests = []
    for i in range(12_000):  # 20 minutes at 10 requests/s; amounts double after minute 10
        t = START + i * 100
        scale = 2.0 if i >= 6000 else 1.0
        requests.append(orjson.dumps({
            "timestamp": t, "model": "m",
            "features": {"amount": rng.lognormal(3, 0.5) * scale,
                         "country": str(rng.choice(["DE", "FR", "US"]))}}))
    requests.insert(100, b'{"timestamp": 1, "features": ')  # line 101
    requests.insert(200, b'["array"]')  # line 201
    requests.insert(300, b'{"timestamp": %d, "features": {"amount": "12"}}' % (START + 30_000))
    (tmp / "requests.jsonl").write_bytes(b"\n".join(requests) + b"\n")
    (tmp / "config.toml").write_text('[window]\nsize = "5m"\npane = "1m"\n'
                                     'allowed_lateness = "5s"\n[detect]\nmin_count = 300\n')
    return tmp


def run_detect(files, *extra):
    return CliRunner().invoke(main, [
        "detect", "--config", str(files / "config.toml"), "--baseline",
        str(files / "baseline.json"), "--input", str(files / "requests.jsonl"), *extra])


def test_baseline_build_and_show(files):
    result = CliRunner().invoke(main, ["baseline", "show", str(files / "baseline.json")])
    assert result.exit_code == 0
    assert "amount" in result.output and "numeric" in result.output
    assert "country" in result.output and "categorical" in result.output


def test_detect_writes_events_dead_letters_and_summary(files, tmp_path):
    result = run_detect(files, "--output", str(tmp_path / "events.jsonl"), "--dead-letter",
                        str(tmp_path / "bad.jsonl"))
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    detected = [(e["feature"], e["check"]) for e in events if e["type"] == "skew_detected"]
    assert ("amount", "distribution") in detected
    assert all(f == "amount" for f, _ in detected)
    for event in events:
        assert set(event) == EVENT_KEYS
        assert event["schema"] == "streamskew.event/v1"
        assert event["window"]["end"] - event["window"]["start"] == 5 * 60_000
        assert event["baseline"]["count"] == 20_000
    first = next(e for e in events if e["check"] == "distribution")
    assert first["window"]["end"] > START + 10 * 60_000  # not before the shift began
    assert first["evidence"]["serving"]["p50"] > first["evidence"]["baseline"]["p50"]

    dead = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert [(d["line"], d["reason"], d["used"]) for d in dead] == [
        (101, "invalid_json", False), (201, "not_an_object", False), (301, "wrong_type", True)]
    assert dead[0]["raw"] == '{"timestamp": 1, "features": '
    assert "rejected=2" in result.stderr and "wrong_type=1" in result.stderr
    assert "records=12003" in result.stderr


def test_detect_is_deterministic_and_matches_the_python_api(files):
    first = run_detect(files)
    second = run_detect(files)
    ids = [json.loads(line)["event_id"] for line in first.stdout.splitlines()]
    assert ids and ids == [json.loads(line)["event_id"] for line in second.stdout.splitlines()]

    detector = Detector(Config.from_toml(files / "config.toml"),
                        Baseline.load(files / "baseline.json"))
    events = []
    for _, batch in iter_line_batches(files / "requests.jsonl", batch=777):
        events.extend(detector.process(batch))
    events.extend(detector.flush())
    assert [e.event_id for e in events] == ids  # batch boundaries do not matter


def test_detect_without_timestamps_judges_the_whole_input_as_one_window(files, tmp_path):
    lines = [json.dumps({"features": {"amount": 500.0 + i, "country": "DE"}})
             for i in range(1000)]
    (tmp_path / "r.jsonl").write_text("\n".join(lines))
    result = CliRunner().invoke(main, ["detect", "--baseline", str(files / "baseline.json"),
                                       "--input", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {(e["feature"], e["check"]) for e in events} >= {("amount", "distribution"),
                                                           ("country", "distribution")}
    assert all(e["window"] == {"start": None, "end": None, "count": e["window"]["count"]}
               for e in events)


def test_misuse_and_unreadable_files(files, tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["detect", "--baseline", "b.json"]).exit_code == 2
    missing = runner.invoke(main, ["detect", "--baseline", str(tmp_path / "none.json"),
                                   "--input", str(files / "requests.jsonl")])
    assert missing.exit_code == 1 and "cannot read the baseline" in missing.output
    (tmp_path / "bad.toml").write_text("[window]\npane = 5\n")
    bad_config = runner.invoke(main, ["detect", "--config", str(tmp_path / "bad.toml"),
                                      "--baseline", str(files / "baseline.json"),
                                      "--input", str(files / "requests.jsonl")])
    assert bad_config.exit_code == 1
    assert "bad.toml:2: [window] pane = 5: a bare number is ambiguous" in bad_config.output


def test_report_is_written(files, tmp_path):
    pytest.importorskip("jinja2")
    result = run_detect(files, "--report", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert "amount" in html and "<svg" in html and "skew_detected" in html


def test_demo_detects_every_injected_incident_and_resolves_them(tmp_path):
    events = run_demo(tmp_path / "demo", report=True)
    detected = {(e.feature, e.check, e.metric) for e in events if e.type == "skew_detected"}
    assert detected >= {("carat", "distribution", "jsd"), ("prediction", "distribution", "jsd"),
                        ("cut", "unseen_categories", "unseen_rate"),
                        ("depth", "missing_rate", "missing_rate"),
                        ("table", "schema", "type_change")}
    features = {f for f, _, _ in detected}
    assert features <= {"carat", "cut", "depth", "table", "prediction"}  # nothing else
    for key in {(e.feature, e.check, e.metric) for e in events}:
        kinds = [e.type for e in events if (e.feature, e.check, e.metric) == key]
        assert kinds == ["skew_detected", "skew_resolved"], key
    cut = next(e for e in events if e.check == "unseen_categories")
    assert cut.evidence["top_unseen"][0]["value"] == "Excellent"
    assert (tmp_path / "demo" / "report.html").stat().st_size > 10_000
    dead = (tmp_path / "demo" / "dead-letters.jsonl").read_text().splitlines()
    assert len(dead) > 0 and all('"reason"' in line for line in dead)
