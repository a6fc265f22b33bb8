"""The metrics of a real `streamskew run` (real broker): every metric the Grafana dashboard
and the Prometheus rules use is on its page, 1,000 model names in messages add a bounded
number of series, and the workers listen where they are told."""

from __future__ import annotations

import dataclasses
import re
import threading
import urllib.error
import urllib.request

import orjson
import pytest

from streamskew.kafka.metrics import MAX_MODELS, OTHER, ServiceMetrics
from streamskew.kafka.service import DetectorService
from streamskew.kafka.workers import run_workers

from .deploy_files import (
    MADE_BY_PROMETHEUS,
    dashboard,
    dashboard_queries,
    metric_names,
    rules,
    variable_queries,
)
from .kafka_helpers import (
    PARTITIONS,
    START,
    create_topic,
    event_time,
    produce,
    service_config,
    skewed_stream,
    unique,
    wait_until,
)

pytestmark = pytest.mark.kafka

# No Kafka failure is provoked here (the fault-tolerance tests do that); its family is on the
# page from the start, with no sample until a failure is waited out.
NO_SAMPLE_WITHOUT_A_FAILURE = {"streamskew_kafka_errors_total"}


def scrape(port: int, host: str = "127.0.0.1") -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def samples(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def total(got: dict[str, float], name: str) -> float:
    return sum(v for k, v in got.items() if k == name or k.startswith(name + "{"))


def watermarks(got: dict[str, float]) -> dict[int, float]:
    """{partition: streamskew_watermark_timestamp_seconds}"""
    return {int(re.search(r'partition="(\d+)"', k).group(1)): v for k, v in got.items()
            if k.startswith("streamskew_watermark_timestamp_seconds{")}


def used_metric_names() -> set[str]:
    board = dashboard()
    exprs = dashboard_queries(board) + variable_queries(board) + [r["expr"] for r in rules()]
    return set().union(*map(metric_names, exprs)) - MADE_BY_PROMETHEUS


def test_every_metric_the_dashboard_and_rules_use_is_on_a_running_services_page(
        kafka_bootstrap, baseline):
    topic = unique("metrics-page")
    create_topic(kafka_bootstrap, topic)
    # The skewed stream (a skew at minute 8, bad records), then records for the first,
    # long-closed pane: late.
    late = [orjson.dumps({"request_id": f"late-{i}", "timestamp": START + i, "model": "fraud",
                          "features": {"amount": 20.0, "country": "DE"}}) for i in range(12)]
    messages = skewed_stream(bad_every=997) + late
    produce(kafka_bootstrap, topic, messages)
    config = service_config(kafka_bootstrap, topic, unique("metrics-page"))
    # Each partition's watermark: its stream time (the watermark_quorum-th latest event time;
    # these records are in order, so the quorum-th largest) less the allowed lateness, in
    # seconds. produce() goes round-robin over the partitions.
    times: dict[int, list[int]] = {}
    for i, message in enumerate(messages):
        t = event_time(message)
        if t is not None:
            times.setdefault(i % PARTITIONS, []).append(t)
    quorum, lateness = config.window.watermark_quorum, config.window.allowed_lateness_ms
    expected_watermarks = {p: (sorted(ts)[-quorum] - lateness) / 1000
                           for p, ts in times.items()}
    metrics = ServiceMetrics(port=0)
    port = metrics.start()
    service = DetectorService(config, baseline, metrics=metrics)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            service.run(stop)
        except BaseException as exc:  # surfaced by still_running
            failure.append(exc)

    thread = threading.Thread(target=run, name="metrics-page-service")
    thread.start()

    def still_running() -> None:
        assert not failure, f"the service failed: {failure[0]!r}"

    def page() -> dict[str, float]:
        return samples(scrape(port))

    def complete() -> bool:
        got = page()
        return (total(got, "streamskew_records_total") == len(messages)
                and total(got, "streamskew_late_records_total") >= len(late)
                and total(got, "streamskew_events_total") > 0
                and watermarks(got) == expected_watermarks)

    try:
        wait_until(complete, 180, lambda: f"the page never showed every record, late record, "
                   f"event and the last watermarks ({expected_watermarks}): {page()}",
                   still_running)
        assert thread.is_alive()  # scraped from the running service
        text = scrape(port)
    finally:
        stop.set()
        thread.join(timeout=60)
        metrics.stop()
    assert not thread.is_alive()

    names = used_metric_names()
    assert {"streamskew_score", "streamskew_threshold", "streamskew_skew_active",
            "streamskew_watermark_timestamp_seconds", "process_start_time_seconds"} <= names
    got = samples(text)
    families = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
    missing = sorted(name for name in names if name not in families)
    assert not missing, f"used by deploy/ but not on the page: {missing}"
    without = sorted(name for name in names - NO_SAMPLE_WITHOUT_A_FAILURE
                     if not any(k == name or k.startswith(name + "{") for k in got))
    assert not without, f"on the page without a sample: {without}"
    assert "_created" not in text

    assert watermarks(got) == expected_watermarks  # in seconds
    lags = [v for k, v in got.items() if k.startswith("streamskew_consumer_lag_records{")]
    assert lags == [0.0] * 6  # everything read


def test_a_thousand_model_names_in_messages_add_a_bounded_number_of_series(
        kafka_bootstrap, baseline):
    """The deployment knows "fraud" and a "default" baseline for any other model: "fraud" and
    the first MAX_MODELS other names seen get series; the 980 others share model="other"."""
    topic = unique("metrics-models")
    create_topic(kafka_bootstrap, topic)
    timed = [(orjson.loads(m)["timestamp"], m) for m in skewed_stream(minutes=6)]
    names = [f"m-{i:04d}" for i in range(1000)]
    for i, name in enumerate(names):
        for j in range(2):  # two records of each, somewhere in the first five minutes
            t = START + (i * 2 + j) * 150
            timed.append((t, orjson.dumps({"request_id": f"{name}-{j}", "timestamp": t,
                                           "model": name,
                                           "features": {"amount": 20.0, "country": "FR"}})))
    timed.sort(key=lambda pair: pair[0])
    produce(kafka_bootstrap, topic, [m for _, m in timed])
    config = service_config(kafka_bootstrap, topic, unique("metrics-models"))
    # Every name judged against the default baseline (the engine's own bound, [models]
    # max_models, would dead-letter names past 100: tests/test_models.py covers that).
    config = dataclasses.replace(config, models=dataclasses.replace(config.models,
                                                                    max_models=2000))
    metrics = ServiceMetrics(port=0)
    port = metrics.start()
    try:
        stats = DetectorService(config, {"fraud": baseline, "default": baseline},
                                until_end=True, metrics=metrics).run()
        text = scrape(port)
    finally:
        metrics.stop()

    assert stats.builders.accepted == len(timed)
    got = samples(text)
    models = set(re.findall(r'[{,]model="([^"]*)"', text))
    extras = models - {"fraud", "default", OTHER}
    assert len(extras) == MAX_MODELS and extras <= set(names)
    assert {"fraud", "default", OTHER} <= models  # default: its baseline_info
    with_model = [k for k in got if 'model="' in k]
    # Per model at most: records, panes, windows, plus score/threshold/skew_active/events
    # per check; "fraud" alone is judged (the others have too few records).
    fraud = [k for k in with_model if 'model="fraud"' in k]
    assert len(with_model) <= len(fraud) + 4 * (len(extras) + 1) + 2
    assert len(with_model) < 200  # 1,001 models unbounded: over 3,000
    assert any(k.startswith("streamskew_score{") for k in fraud)
    # Every record is counted once, and the models past the budget are "other".
    assert total(got, "streamskew_model_records_total") == stats.builders.accepted
    assert got['streamskew_model_records_total{model="other"}'] == 2 * (1000 - MAX_MODELS)
    for name in extras:
        assert got[f'streamskew_model_records_total{{model="{name}"}}'] == 2


def test_workers_serve_metrics_on_the_host_they_are_given(kafka_bootstrap, topic, baseline):
    """127.0.0.2 is loopback too, but not 127.0.0.1: the workers listen only where told."""
    config = service_config(kafka_bootstrap, topic, unique("metrics-workers"))
    stop = threading.Event()
    ports: dict[int, int] = {}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_workers(config, baseline, 2, stop, metrics_port=0, metrics_host="127.0.0.2",
                        on_metrics=lambda worker, port: ports.__setitem__(worker, port))
        except BaseException as exc:
            failure.append(exc)

    def still_running() -> None:
        assert not failure, f"the workers failed: {failure[0]!r}"

    thread = threading.Thread(target=run, name="metrics-workers")
    thread.start()
    try:
        wait_until(lambda: len(ports) == 2, 120, lambda: f"metrics ports: {ports}",
                   still_running)
        for port in ports.values():
            assert "streamskew_build_info{" in scrape(port, "127.0.0.2")
            with pytest.raises(urllib.error.URLError):
                scrape(port, "127.0.0.1")
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive()
    still_running()
