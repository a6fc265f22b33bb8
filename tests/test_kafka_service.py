"""`streamskew run` on a real broker: alerts, dead letters, consumer groups, shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from streamskew import Detector
from streamskew.cli import main
from streamskew.kafka.replay import replay
from streamskew.kafka.service import DetectorService

from .kafka_helpers import (
    START,
    create_topic,
    event_ids,
    event_time,
    produce,
    read_all,
    service_config,
    skewed_stream,
    training_baseline,
    unique,
    write_config,
)

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def baseline():
    return training_baseline()


@pytest.fixture(scope="module")
def stream():
    return skewed_stream(bad_every=997)


@pytest.fixture(scope="module")
def topic(kafka_bootstrap, stream):
    name = unique("requests")
    create_topic(kafka_bootstrap, name)
    produce(kafka_bootstrap, name, stream)
    return name


def offline_events(config, baseline, stream):
    """The same messages through the file/in-process path."""
    detector = Detector(config, baseline)
    events = detector.process(stream)
    return events + detector.flush()


def test_run_until_end_publishes_the_same_events_as_detect(kafka_bootstrap, topic, stream,
                                                           baseline):
    config = service_config(kafka_bootstrap, topic, unique("g"))
    stats = DetectorService(config, baseline, until_end=True).run()
    alerts = read_all(kafka_bootstrap, config.kafka.alerts_topic)
    published = [orjson.loads(r.value) for r in alerts]
    expected = offline_events(config, baseline, stream)
    assert expected, "the stream should trigger events"
    assert event_ids(published) == event_ids(expected)
    assert {(e["type"], e["feature"], e["check"]) for e in published} >= {
        ("skew_detected", "amount", "distribution")}
    assert all(r.key == f"{e['model']}/{e['feature']}".encode()
               for r, e in zip(alerts, published, strict=True))
    assert len(stats.events) == len(published)
    assert stats.builders.records == len(stream)


def test_bad_records_go_to_the_dead_letter_topic_with_reasons(kafka_bootstrap, topic, stream,
                                                              baseline):
    config = service_config(kafka_bootstrap, topic, unique("g"))
    stats = DetectorService(config, baseline, until_end=True).run()
    dead = read_all(kafka_bootstrap, config.kafka.dlq_topic)
    broken = [m for m in stream if m.startswith(b'{"request_id": "broken"')]
    assert len(dead) == len(broken) > 0
    for record in dead:
        headers = dict(record.headers)
        assert headers["streamskew.reason"] == b"invalid_json"
        assert headers["streamskew.source.topic"] == topic.encode()
        assert record.value in broken
        offset = int(headers["streamskew.source.offset"])
        partition = int(headers["streamskew.source.partition"])
        assert 0 <= partition < 6 and offset >= 0
    assert stats.builders.accepted == len(stream) - len(broken)


def test_three_consumers_give_the_same_events_as_one(kafka_bootstrap, topic, stream,
                                                     baseline):
    single = service_config(kafka_bootstrap, topic, unique("one"))
    DetectorService(single, baseline, until_end=True).run()
    one = read_all(kafka_bootstrap, single.kafka.alerts_topic)

    shared = service_config(kafka_bootstrap, topic, unique("three"))
    services = [DetectorService(shared, baseline, until_end=True) for _ in range(3)]
    errors: list[BaseException] = []

    def run(service):
        try:
            service.run()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(t.is_alive() for t in threads), "a consumer did not finish"
    assert errors == []
    three = read_all(kafka_bootstrap, shared.kafka.alerts_topic)
    assert event_ids(orjson.loads(r.value) for r in three) == \
        event_ids(orjson.loads(r.value) for r in one)
    owned = sum(s.stats.builders.records for s in services)
    assert owned >= len(stream)  # every record was read (a rebalance may re-read some)


def test_replay_of_the_whole_range_equals_the_live_run(kafka_bootstrap, topic, stream,
                                                       baseline):
    config = service_config(kafka_bootstrap, topic, unique("replay"))
    groups_before = _groups(kafka_bootstrap)
    result = replay(config, baseline, START)
    assert event_ids(result.events) == event_ids(offline_events(config, baseline, stream))
    assert result.records == len(stream)
    assert _groups(kafka_bootstrap) == groups_before  # replay commits to no group


def test_replay_of_a_sub_range_equals_detect_over_those_records(kafka_bootstrap, topic, stream,
                                                                baseline):
    config = service_config(kafka_bootstrap, topic, unique("replay"))
    start, end = START + 5 * 60_000, START + 13 * 60_000
    inside = [m for m in stream if (t := event_time(m)) is not None and start <= t < end]
    expected = offline_events(config, baseline, inside)
    assert expected
    result = replay(config, baseline, start, end)
    assert event_ids(result.events) == event_ids(expected)
    assert all(start < e.window_end <= end for e in result.events)


def test_replay_cli_writes_events_and_can_publish_them(kafka_bootstrap, topic, stream, baseline,
                                                       tmp_path):
    config = service_config(kafka_bootstrap, topic, unique("cli"))
    toml = write_config(tmp_path, kafka_bootstrap, topic, config, baseline)
    runner = CliRunner()
    result = runner.invoke(main, ["replay", "--config", str(toml), "--from",
                                  "2025-11-28T10:00:00Z", "--output", str(tmp_path / "e.jsonl")])
    assert result.exit_code == 0, result.output
    written = [orjson.loads(line) for line in (tmp_path / "e.jsonl").read_bytes().splitlines()]
    expected = event_ids(offline_events(config, baseline, stream))
    assert event_ids(written) == expected
    published = runner.invoke(main, ["replay", "--config", str(toml), "--from",
                                     str(START), "--publish"])
    assert published.exit_code == 0, published.output
    alerts = read_all(kafka_bootstrap, config.kafka.alerts_topic)
    assert event_ids(orjson.loads(r.value) for r in alerts) == expected


def test_sigterm_leaves_committed_offsets_at_the_last_processed_record(kafka_bootstrap,
                                                                      baseline, tmp_path):
    name = unique("requests")
    create_topic(kafka_bootstrap, name)
    messages = skewed_stream(minutes=4)
    produce(kafka_bootstrap, name, messages)
    config = service_config(kafka_bootstrap, name, unique("term"))
    toml = write_config(tmp_path, kafka_bootstrap, name, config, baseline)
    process = subprocess.Popen([sys.executable, "-m", "streamskew.cli", "run", "--config",
                                str(toml)], stderr=subprocess.PIPE, text=True)
    try:
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
        partitions = [TopicPartition(name, p) for p in range(6)]
        end = consumer.end_offsets(partitions)
        consumer.close()

        def committed() -> dict:
            group = config.kafka.group_id
            try:
                offsets = admin.list_group_offsets({group: None}).get(group, {})
            except KafkaError:  # the group does not exist until the service has joined
                return {}
            return {tp: meta.offset for tp, meta in offsets.items() if tp.topic == name}

        deadline = time.monotonic() + 120
        while committed() != end:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, f"offsets never reached the end: {committed()}"
            time.sleep(0.2)  # polling an external process's progress, with a deadline
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert committed() == end
        assert f"records={len(messages)}" in process.stderr.read()
        admin.close()
    finally:
        if process.poll() is None:
            process.kill()


def _groups(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {group["group_id"] for group in admin.list_groups()}
    finally:
        admin.close()


def test_metrics_endpoint_reports_records_scores_and_events(kafka_bootstrap, topic, stream,
                                                            baseline):
    from urllib.request import urlopen

    from streamskew.kafka.metrics import ServiceMetrics

    config = service_config(kafka_bootstrap, topic, unique("metrics"))
    metrics = ServiceMetrics(port=0, host="127.0.0.1")
    port = metrics.start()
    try:
        stats = DetectorService(config, baseline, until_end=True, metrics=metrics).run()
        page = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        metrics.stop()
    assert f'streamskew_records_total{{topic="{topic}"}} {float(len(stream))}' in page
    assert f'streamskew_bad_records_total{{reason="invalid_json",topic="{topic}"}}' in page
    detected = sum(1 for e in stats.events if e.type == "skew_detected")
    assert detected > 0
    assert 'streamskew_score{check="distribution",feature="amount"' in page
    assert 'streamskew_events_total{check="distribution",feature="amount"' in page
    lags = [line for line in page.splitlines() if line.startswith("streamskew_consumer_lag{")]
    assert lags and all(line.endswith(" 0.0") for line in lags)


@pytest.mark.xfail(strict=False, reason=(
    "known, intermittent: after a SIGKILL the restarted service sometimes never receives "
    "fetches for one partition whose dead transaction held pending offsets (seen with "
    "kafka-python 3.0.12); bounded to 180 s here so it cannot hang the suite"))
def test_a_crash_and_restart_neither_loses_nor_repeats_an_event(kafka_bootstrap, baseline,
                                                                tmp_path):
    """SIGKILL mid-stream (no clean shutdown), then a fresh process finishes the job: the
    committed alerts are exactly those of an uninterrupted run, each once."""
    name = unique("requests")
    create_topic(kafka_bootstrap, name)
    messages = skewed_stream(minutes=40, per_second=25, shift_from=20)
    produce(kafka_bootstrap, name, messages)
    config = service_config(kafka_bootstrap, name, unique("crash"))
    # The killed replica's open transaction is aborted by the broker after this timeout
    # (a restart under the same transactional id would abort it at once).
    toml = write_config(tmp_path, kafka_bootstrap, name, config, baseline,
                         "transaction_timeout_ms = 10000\n")
    process = subprocess.Popen([sys.executable, "-m", "streamskew.cli", "run", "--config",
                                str(toml), "--checkpoint-interval", "200ms"],
                               stderr=subprocess.DEVNULL)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        group = config.kafka.group_id
        deadline = time.monotonic() + 120
        while True:  # wait for some, not all, offsets to be committed
            try:
                offsets = admin.list_group_offsets({group: None}).get(group, {})
            except KafkaError:
                offsets = {}
            done = sum(m.offset for tp, m in offsets.items() if tp.topic == name)
            if done > 0:
                break
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)  # polling an external process's progress, with a deadline
        process.kill()
        process.wait(timeout=30)
    finally:
        admin.close()
        if process.poll() is None:
            process.kill()
    assert done < len(messages), "the first run finished before it could be killed"
    stop = threading.Event()
    restart = threading.Thread(target=DetectorService(config, baseline, until_end=True).run,
                               args=(stop,))
    restart.start()
    restart.join(timeout=180)
    finished = not restart.is_alive()
    stop.set()  # a stuck restart still shuts down cleanly
    restart.join(timeout=60)
    assert finished, "the restarted service did not finish within 180 s"
    alerts = [orjson.loads(r.value) for r in read_all(kafka_bootstrap, config.kafka.alerts_topic)]
    ids = [e["event_id"] for e in alerts]
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert sorted(ids) == event_ids(offline_events(config, baseline, messages))
