"""The Prometheus endpoint of ``streamskew run`` (streamskew.kafka.metrics), scraped over HTTP."""

from __future__ import annotations

import math
import socket
import sys
import time
import urllib.error
import urllib.request

import pytest

from streamskew.detector.checks import CheckResult
from streamskew.detector.events import SkewEvent
from streamskew.kafka.metrics import NullMetrics, ServiceMetrics

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
    metrics.records("other", 0)  # no series for nothing
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
    assert "# TYPE streamskew_consumer_lag gauge" in text
    assert 'streamskew_records_total{topic="requests"} 150.0' in text.splitlines()
    assert not any('topic="other"' in key for key in got)
    assert got['streamskew_bad_records_total{reason="invalid_json",topic="requests"}'] == 2
    assert got['streamskew_bad_records_total{reason="not_an_object",topic="requests"}'] == 1
    assert got['streamskew_late_records_total{topic="requests"}'] == 7
    assert got['streamskew_consumer_lag{partition="3",topic="requests"}'] == 1234
    assert got['streamskew_watermark_ms{partition="3",topic="requests"}'] == 1.76432496e12
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
    assert not any(key.startswith(("streamskew_consumer_lag{", "streamskew_watermark_ms{"))
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
    with pytest.raises(OSError, match=f"127.0.0.1:{metrics.port}"):
        clash.start()
    assert not clash.running


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
    with null:
        pass
    assert null.render() == b"" and null.port is None
