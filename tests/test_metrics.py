"""The Prometheus endpoint of ``streamskew run`` (streamskew.kafka.metrics), scraped over HTTP."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.request

import pytest

from streamskew.detector.checks import CheckResult
from streamskew.detector.events import SkewEvent
from streamskew.errors import StreamskewError
from streamskew.kafka.metrics import (
    MAX_MODELS,
    MAX_NEW_FEATURES,
    OTHER,
    Metrics,
    MetricsEndpointError,
    NullMetrics,
    ServiceMetrics,
)

from .kafka_helpers import training_baseline

pytest.importorskip("prometheus_client")

MODEL = "diamond-price"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def samples(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of every sample line of an exposition."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def result(feature: str, check: str, metric: str, value: float, threshold: float,
           judged: bool = True) -> CheckResult:
    return CheckResult(feature, "numeric", check, metric, value, threshold, judged, 3000)


def skew_event(type_: str, value: float, severity: str) -> SkewEvent:
    return SkewEvent(type=type_, model=MODEL, feature="carat", kind="numeric",
                     check="distribution", metric="jsd", value=value, threshold=0.1,
                     severity=severity, window_start=1_764_324_360_000,
                     window_end=1_764_324_960_000, window_count=3000,
                     baseline_id="d988d5313e68f9db", baseline_count=37758)


@pytest.fixture
def metrics():
    service = ServiceMetrics(port=0, host="127.0.0.1")
    service.start()
    yield service
    service.stop()


def test_scrape_shows_what_the_service_reported(metrics: ServiceMetrics) -> None:
    port = metrics.port
    assert isinstance(port, int) and port > 0
    metrics.records("requests", 100)
    metrics.records("requests", 50)
    metrics.records("quiet", 0)  # a topic read but silent still has its series, at 0
    metrics.bad_record("requests", "invalid_json")
    metrics.bad_record("requests", "invalid_json")
    metrics.bad_record("requests", "not_an_object")
    metrics.late("requests", 7)
    metrics.lag("requests", 3, 1234)
    metrics.watermark("requests", 3, 1_764_324_960_000)
    metrics.pane_closed(MODEL)
    metrics.pane_closed(MODEL)
    metrics.window_judged(MODEL, [
        result("carat", "distribution", "jsd", 0.0421, 0.1),
        result("carat", "missing_rate", "missing_rate", 0.0, 0.0512),
        result("depth", "distribution", "jsd", math.nan, math.inf, judged=False),
        result("table", "distribution", "jsd", 0.9, math.inf, judged=False),  # too few values
    ])

    text = scrape(port)
    got = samples(text)
    assert "# HELP streamskew_records_total Prediction-request records consumed." in text
    assert "# TYPE streamskew_consumer_lag_records gauge" in text
    assert 'streamskew_records_total{topic="requests"} 150.0' in text.splitlines()
    assert got['streamskew_records_total{topic="quiet"}'] == 0
    assert got['streamskew_bad_records_total{reason="invalid_json",topic="requests"}'] == 2
    assert got['streamskew_bad_records_total{reason="not_an_object",topic="requests"}'] == 1
    assert got['streamskew_late_records_total{topic="requests"}'] == 7
    assert got['streamskew_consumer_lag_records{partition="3",topic="requests"}'] == 1234
    # Served in seconds (the engine's milliseconds / 1000, exactly representable here).
    assert got['streamskew_watermark_timestamp_seconds{partition="3",topic="requests"}'] \
        == 1_764_324_960.0
    assert got[f'streamskew_pane_closes_total{{model="{MODEL}"}}'] == 2
    assert got[f'streamskew_windows_judged_total{{model="{MODEL}"}}'] == 1
    carat = f'check="distribution",feature="carat",metric="jsd",model="{MODEL}"'
    assert got[f"streamskew_score{{{carat}}}"] == 0.0421
    assert got[f"streamskew_threshold{{{carat}}}"] == 0.1
    assert got[f"streamskew_skew_active{{{carat}}}"] == 0  # present before any event
    missing = f'check="missing_rate",feature="carat",metric="missing_rate",model="{MODEL}"'
    assert got[f"streamskew_threshold{{{missing}}}"] == 0.0512
    # Windows that were not judged leave no score.
    assert not any('feature="depth"' in key or 'feature="table"' in key for key in got)

    metrics.forget_partition("requests", 3)
    metrics.forget_partition("requests", 99)  # never seen: fine
    got = samples(scrape(port))
    assert not any(key.startswith(("streamskew_consumer_lag_records{",
                                   "streamskew_watermark_timestamp_seconds{"))
                   for key in got)


def test_skew_active_follows_events(metrics: ServiceMetrics) -> None:
    port = metrics.port
    assert port is not None
    carat = f'check="distribution",feature="carat",metric="jsd",model="{MODEL}"'
    active = f"streamskew_skew_active{{{carat}}}"

    metrics.window_judged(MODEL, [result("carat", "distribution", "jsd", 0.208, 0.1)])
    metrics.event(skew_event("skew_detected", 0.208, "critical"))
    got = samples(scrape(port))
    assert got[active] == 1
    assert got[f"streamskew_score{{{carat}}}"] == 0.208
    detected = (f'streamskew_events_total{{check="distribution",feature="carat",model="{MODEL}",'
                f'severity="critical",type="skew_detected"}}')
    assert got[detected] == 1

    # A later window below the threshold does not clear the flag; only skew_resolved does.
    metrics.window_judged(MODEL, [result("carat", "distribution", "jsd", 0.05, 0.1)])
    assert samples(scrape(port))[active] == 1

    metrics.event(skew_event("skew_resolved", 0.0672, "info"))
    got = samples(scrape(port))
    assert got[active] == 0
    resolved = detected.replace("critical", "info").replace("skew_detected", "skew_resolved")
    assert got[resolved] == 1
    assert got[detected] == 1
    assert got[f'streamskew_windows_judged_total{{model="{MODEL}"}}'] == 2


def test_stop_frees_the_port() -> None:
    service = ServiceMetrics(port=0, host="127.0.0.1")
    port = service.start()
    assert service.running and service.port == port
    assert "streamskew_records_total" in scrape(port)
    with pytest.raises(RuntimeError, match="already running"):
        service.start()
    thread = service._thread
    service.stop()
    service.stop()  # idempotent
    assert not service.running
    assert thread is not None and not thread.is_alive()
    with pytest.raises(urllib.error.URLError):
        scrape(port)
    # The port can be bound again at once.
    deadline = time.monotonic() + 5
    while True:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
    # ... and served again by a new instance on the same port.
    with ServiceMetrics(port=port, host="127.0.0.1") as again:
        assert again.port == port
        again.records("requests", 3)
        assert 'streamskew_records_total{topic="requests"} 3.0' in scrape(port).splitlines()


def test_instances_do_not_share_metrics() -> None:
    first, second = ServiceMetrics(), ServiceMetrics()
    first.records("requests", 5)
    assert b'streamskew_records_total{topic="requests"} 5.0' in first.render()
    assert b'topic="requests"' not in second.render()
    assert first.port is None and not first.running
    with pytest.raises(ValueError, match="no metrics port"):
        first.start()


def test_port_in_use_names_the_address(metrics: ServiceMetrics) -> None:
    clash = ServiceMetrics(port=metrics.port, host="127.0.0.1")
    with pytest.raises(MetricsEndpointError, match=f"127.0.0.1:{metrics.port}: "
                       "Address already in use; choose another --metrics-port"):
        clash.start()
    assert not clash.running
    assert isinstance(MetricsEndpointError("x"), StreamskewError)  # one line on the CLI


def test_missing_prometheus_client_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'streamskew\[metrics\]'"):
        ServiceMetrics()


def test_null_metrics_accepts_every_call() -> None:
    null = NullMetrics()
    null.records("requests", 1)
    null.bad_record("requests", "invalid_json")
    null.late("requests", 1)
    null.lag("requests", 0, 1)
    null.watermark("requests", 0, 1)
    null.forget_partition("requests", 0)
    null.pane_closed(MODEL)
    null.window_judged(MODEL, [result("carat", "distribution", "jsd", 0.1, 0.1)])
    null.event(skew_event("skew_detected", 0.2, "critical"))
    null.use_baselines({"default": training_baseline()})
    null.model_records(MODEL, 3)
    null.evaluator_assigned([(MODEL, "carat", "distribution", "jsd")])
    null.evaluator_revoked()
    null.kafka_error("NoBrokersAvailable")
    with null:
        pass
    assert null.render() == b"" and null.port is None


def test_both_implementations_have_every_method_of_the_protocol() -> None:
    """The service calls the Protocol; either implementation may be behind it."""
    names = [name for name, member in vars(Metrics).items()
             if callable(member) and not name.startswith("_")]
    assert len(names) >= 14
    for name in names:
        expected = inspect.signature(getattr(Metrics, name))
        for cls in (ServiceMetrics, NullMetrics):
            assert inspect.signature(getattr(cls, name)) == expected, (cls.__name__, name)


def test_no_created_series_in_either_format_and_the_global_registry_keeps_its_own(
        metrics: ServiceMetrics) -> None:
    metrics.records("requests", 5)
    metrics.bad_record("requests", "invalid_json")
    metrics.event(skew_event("skew_detected", 0.2, "critical"))
    text = scrape(metrics.port)
    assert "streamskew_records_total" in text and "_created" not in text
    request = urllib.request.Request(f"http://127.0.0.1:{metrics.port}/metrics",
                                     headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        openmetrics = response.read().decode()
    assert 'streamskew_records_total{topic="requests"} 5.0' in openmetrics
    assert "_created" not in openmetrics
    # A user's registry in the same process keeps its _created series (prometheus-client's
    # default, unless the process switched them off itself).
    import prometheus_client

    if os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "").lower() in ("true", "1", "t"):
        pytest.skip("this process disabled _created series itself")
    theirs = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("user_requests", "A user's counter.", registry=theirs).inc()
    assert b"user_requests_created" in prometheus_client.generate_latest(theirs)


def test_a_scrape_may_ask_for_some_metrics_by_name(metrics: ServiceMetrics) -> None:
    metrics.records("requests", 4)
    metrics.lag("requests", 0, 7)
    url = (f"http://127.0.0.1:{metrics.port}/metrics?name[]=streamskew_records_total"
           "&name[]=streamskew_build_info&name[]=process_open_fds")
    with urllib.request.urlopen(url, timeout=5) as response:
        got = samples(response.read().decode())
    assert got.pop('streamskew_records_total{topic="requests"}') == 4
    assert got.pop("process_open_fds") > 0
    assert [key.split("{")[0] for key in got] == ["streamskew_build_info"]


def test_build_baseline_process_and_python_info(metrics: ServiceMetrics) -> None:
    from streamskew import __version__

    fraud, churn = training_baseline(1), training_baseline(2)
    metrics.use_baselines({"fraud": fraud, "churn": churn})
    got = samples(scrape(metrics.port))
    assert got[f'streamskew_build_info{{version="{__version__}"}}'] == 1
    assert got[f'streamskew_baseline_info{{baseline_id="{fraud.id}",model="fraud"}}'] == 1
    assert got[f'streamskew_baseline_info{{baseline_id="{churn.id}",model="churn"}}'] == 1
    assert fraud.id != churn.id
    # A new set of baselines replaces the old ones.
    metrics.use_baselines({"default": fraud})
    infos = [key for key in samples(scrape(metrics.port))
             if key.startswith("streamskew_baseline_info")]
    assert infos == [f'streamskew_baseline_info{{baseline_id="{fraud.id}",model="default"}}']
    # The process and Python collectors, on the private registry.
    assert got["process_resident_memory_bytes"] > 0
    assert got["process_cpu_seconds_total"] >= 0
    assert any(key.startswith("python_info{") for key in got)
    assert any(key.startswith("python_gc_collections_total{") for key in got)


def test_loopback_unless_told_otherwise() -> None:
    service = ServiceMetrics(port=0)
    assert service.host == "127.0.0.1"
    service.start()
    try:
        assert service._server is not None
        assert service._server.server_address[0] == "127.0.0.1"
    finally:
        service.stop()
    unknown = ServiceMetrics(port=0, host="no-such-host.invalid")
    with pytest.raises(MetricsEndpointError,
                       match=re.escape("cannot serve metrics on no-such-host.invalid:0: ")):
        unknown.start()


def model_labels(text: str) -> set[str]:
    return set(re.findall(r'[{,]model="([^"]*)"', text))


def test_model_names_from_messages_get_a_bounded_number_of_series(
        metrics: ServiceMetrics) -> None:
    """With a default baseline, models beyond the known ones get series up to MAX_MODELS;
    every further one is "other", where its records and raised skews are still counted."""
    metrics.use_baselines({"fraud": training_baseline(), "default": training_baseline()})
    names = [f"model-{i:04d}" for i in range(1000)]
    for name in ["fraud", *names]:
        metrics.model_records(name, 2)
        metrics.pane_closed(name)
        metrics.window_judged(name, [result("amount", "distribution", "jsd", 0.3, 0.1)])
    # Skews raised in 3 models that got no series of their own, one resolved again.
    for name in names[-3:]:
        metrics.event(dataclasses.replace(skew_event("skew_detected", 0.3, "critical"),
                                          model=name, feature="amount"))
    metrics.event(dataclasses.replace(skew_event("skew_resolved", 0.05, "info"),
                                      model=names[-1], feature="amount"))

    text = scrape(metrics.port)
    got = samples(text)
    own = {"fraud", *names[:MAX_MODELS]}
    assert model_labels(text) == own | {OTHER, "default"}  # "default": baseline_info only
    series = [key for key in got if 'model="' in key]
    # Per model: records, panes, windows, score, threshold, skew_active (+ other's events).
    assert len(series) <= 6 * (len(own) + 1) + 2 + 1
    assert got['streamskew_model_records_total{model="other"}'] == 2 * (1000 - MAX_MODELS)
    assert sum(v for k, v in got.items() if k.startswith("streamskew_model_records_total")) \
        == 2 * 1001  # nothing lost
    assert got['streamskew_pane_closes_total{model="other"}'] == 1000 - MAX_MODELS
    other = 'check="distribution",feature="amount",metric="jsd",model="other"'
    assert f"streamskew_score{{{other}}}" not in got  # no one model's score stands for all
    assert got[f"streamskew_skew_active{{{other}}}"] == 2  # raised 3, resolved 1
    assert got[f"streamskew_score{{{other.replace('other', 'model-0000')}}}"] == 0.3


def test_named_baselines_alone_give_no_series_to_unknown_models(
        metrics: ServiceMetrics) -> None:
    metrics.use_baselines({"fraud": training_baseline()})
    for name in ("fraud", "fruad", "churn"):
        metrics.model_records(name, 1)
    got = samples(scrape(metrics.port))
    assert got['streamskew_model_records_total{model="fraud"}'] == 1
    assert got['streamskew_model_records_total{model="other"}'] == 2
    assert model_labels(scrape(metrics.port)) == {"fraud", OTHER}


def test_new_feature_names_are_bounded_too(metrics: ServiceMetrics) -> None:
    """Keys the baseline does not know come from messages: the new_feature check names them."""
    metrics.use_baselines({"default": training_baseline()})
    keys = [f"key_{i}" for i in range(200)]
    metrics.window_judged(MODEL, [result(key, "schema", "new_feature", 1.0, 0.05)
                                  for key in keys])
    metrics.window_judged(MODEL, [result("amount", "distribution", "jsd", 0.01, 0.1)])
    text = scrape(metrics.port)
    features = set(re.findall(r'feature="([^"]*)"', text))
    assert features == {*keys[:MAX_NEW_FEATURES], "amount", OTHER}


def test_an_evaluator_taking_over_shows_the_skews_raised_before(
        metrics: ServiceMetrics) -> None:
    carat = f'check="distribution",feature="carat",metric="jsd",model="{MODEL}"'
    metrics.window_judged(MODEL, [result("carat", "distribution", "jsd", 0.3, 0.1),
                                  result("depth", "distribution", "jsd", 0.01, 0.1)])
    metrics.event(skew_event("skew_detected", 0.3, "critical"))
    assert samples(scrape(metrics.port))[f"streamskew_skew_active{{{carat}}}"] == 1
    # Revoked: another process judges now, so this one serves no stale scores.
    metrics.evaluator_revoked()
    got = samples(scrape(metrics.port))
    assert not any(key.startswith(("streamskew_score{", "streamskew_threshold{",
                                   "streamskew_skew_active{")) for key in got)
    # Assigned again from a checkpoint in which carat is raised: shown before any new event.
    metrics.evaluator_assigned([(MODEL, "carat", "distribution", "jsd")])
    got = samples(scrape(metrics.port))
    assert got[f"streamskew_skew_active{{{carat}}}"] == 1
    assert not any('feature="depth"' in key for key in got)
    metrics.event(skew_event("skew_resolved", 0.05, "info"))
    assert samples(scrape(metrics.port))[f"streamskew_skew_active{{{carat}}}"] == 0


def test_run_listens_where_metrics_host_says_and_fails_in_one_line(tmp_path) -> None:
    """`run --metrics-host` (or STREAMSKEW_METRICS_HOST) reaches the endpoint: an address
    that cannot be had is named in one line, before any broker is contacted."""
    from click.testing import CliRunner

    from streamskew.cli import main

    training_baseline().save(tmp_path / "baseline.json")
    config = tmp_path / "k.toml"
    config.write_text('baseline = "baseline.json"\n[kafka]\nbootstrap_servers = "127.0.0.1:1"\n'
                      'topics = ["t"]\n')
    runner = CliRunner()
    # `run` installs SIGTERM/SIGINT handlers for its own stop: put pytest's back afterwards.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _run_with_metrics_hosts(runner, main, config)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    help_text = runner.invoke(main, ["run", "--help"]).output
    assert "--metrics-host" in help_text and "STREAMSKEW_METRICS_HOST" in help_text
    assert "default: 127.0.0.1" in help_text


def _run_with_metrics_hosts(runner, main, config) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(main, ["run", "--config", str(config), "--metrics-port",
                                      str(port)], env={"STREAMSKEW_METRICS_HOST": None})
        assert result.exit_code == 1
        assert result.stderr == (f"Error: cannot serve metrics on 127.0.0.1:{port}: Address "
                                 "already in use; choose another --metrics-port or "
                                 "--metrics-host\n")
    for args, env in (([], {"STREAMSKEW_METRICS_HOST": "no-such-host.invalid"}),
                      (["--metrics-host", "no-such-host.invalid"], {})):
        result = runner.invoke(main, ["run", "--config", str(config), "--metrics-port", "0",
                                      *args], env=env)
        assert result.exit_code == 1
        assert result.stderr.startswith("Error: cannot serve metrics on "
                                        "no-such-host.invalid:0: ")
        assert result.stderr.count("\n") == 1
