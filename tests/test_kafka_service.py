"""`streamskew run` on a real broker: alerts, dead letters, consumer groups, shutdown."""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import sys
import threading

import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamskew import Detector
from streamskew.cli import main
from streamskew.kafka.replay import replay
from streamskew.kafka.service import DetectorService, ServiceStats, source_name

from .kafka_helpers import (
    START,
    committed_offsets,
    create_topic,
    event_ids,
    event_time,
    produce,
    read_all,
    service_config,
    skewed_stream,
    unique,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.kafka


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
            return committed_offsets(admin, config.kafka.group_id, name)

        def running() -> None:
            assert process.poll() is None, process.stderr.read()

        wait_until(lambda: committed() == end, 120,
                   lambda: f"offsets never reached the end: {committed()}", running)
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
    lags = [line for line in page.splitlines()
            if line.startswith("streamskew_consumer_lag_records{")]
    assert lags and all(line.endswith(" 0.0") for line in lags)


def _run_until_end(service: DetectorService, timeout_s: float) -> ServiceStats:
    """``service.run()`` (until_end) in a thread; fails the test if it has not ended within
    ``timeout_s`` (the service is then stopped, so it cannot hang the suite)."""
    stop = threading.Event()
    outcome: dict = {}

    def run():
        try:
            outcome["stats"] = service.run(stop)
        except BaseException as exc:  # surfaced below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=timeout_s)
    finished = not thread.is_alive()
    progress = {source_name(tp): (s.position, service.source_stage.targets.get(tp), s.final)
                for tp, s in list(service.source_stage.sources.items())}
    stop.set()
    thread.join(timeout=60)
    assert finished, (f"the service did not finish within {timeout_s} s; "
                      f"(position, end offset, final) per partition: {progress}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["stats"]


def test_until_end_finishes_when_partitions_end_in_transaction_markers(kafka_bootstrap,
                                                                        baseline):
    """A topic written in transactions ends, in every partition, with a commit marker: the
    end offset is one past the last record the consumer returns."""
    name = unique("requests")
    create_topic(kafka_bootstrap, name)
    messages = skewed_stream()
    produce(kafka_bootstrap, name, messages, transactional_id=unique("upstream"))
    config = service_config(kafka_bootstrap, name, unique("markers"))
    stats = _run_until_end(DetectorService(config, baseline, until_end=True), 120)
    assert stats.builders.records == len(messages)
    alerts = read_all(kafka_bootstrap, config.kafka.alerts_topic)
    assert event_ids(orjson.loads(r.value) for r in alerts) == \
        event_ids(offline_events(config, baseline, messages))


def test_until_end_finishes_when_unread_records_were_deleted(kafka_bootstrap, baseline):
    """Records deleted (retention, delete-records) before the group read them: the committed
    offset is out of range, the consumer resets to the log start, here the end, and returns
    nothing more for the partition. It is at the end all the same."""
    name = unique("requests")
    create_topic(kafka_bootstrap, name, partitions=2)
    messages = skewed_stream(minutes=4)
    produce(kafka_bootstrap, name, messages, partitions=2)
    config = service_config(kafka_bootstrap, name, unique("deleted"))
    gone = TopicPartition(name, 0)
    committer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False,
                              group_id=config.kafka.group_id)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        committer.commit({gone: OffsetAndMetadata(10, "", -1)})
        admin.delete_records({gone: committer.end_offsets([gone])[gone]})
    finally:
        committer.close()
        admin.close()
    stats = _run_until_end(DetectorService(config, baseline, until_end=True), 120)
    assert stats.builders.records == len(messages[1::2])  # partition 1's, all of them


@pytest.mark.parametrize("restart_id", ["same", "other"])
def test_a_crash_and_restart_neither_loses_nor_repeats_an_event(kafka_bootstrap, baseline,
                                                                tmp_path, restart_id):
    """SIGKILL mid-stream (no clean shutdown), then a fresh process finishes the job: the
    committed alerts are exactly those of an uninterrupted run, each once. The new process
    has the killed one's transactional id (a restarted pod: its open transaction is aborted
    at once) or another one (a new replica: the broker aborts it only after the killed one's
    transaction_timeout_ms, and its pending offsets and records hold the partitions back
    until then)."""
    name = unique("requests")
    create_topic(kafka_bootstrap, name)
    messages = skewed_stream(minutes=40, per_second=25, shift_from=20)
    produce(kafka_bootstrap, name, messages)
    group = unique("crash")
    killed_id = f"{group}-first"
    config = service_config(kafka_bootstrap, name, group, client={
        "transactional_id": killed_id if restart_id == "same" else f"{group}-second"})
    toml = write_config(tmp_path, kafka_bootstrap, name, config, baseline,
                        f'transaction_timeout_ms = 10000\ntransactional_id = "{killed_id}"\n')
    process = subprocess.Popen([sys.executable, "-m", "streamskew.cli", "run", "--config",
                                str(toml), "--checkpoint-interval", "200ms"],
                               stderr=subprocess.DEVNULL)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        def committed() -> int:
            return sum(committed_offsets(admin, group, name).values())

        def running() -> None:
            assert process.poll() is None

        # Some, not all, offsets committed: then kill it.
        wait_until(lambda: committed() > 0, 120, lambda: "no offset committed", running, 0.05)
        process.kill()
        process.wait(timeout=30)
        done = committed()
    finally:
        admin.close()
        if process.poll() is None:
            process.kill()
    assert done < len(messages), "the first run finished before it could be killed"
    _run_until_end(DetectorService(config, baseline, until_end=True), 180)
    alerts = [orjson.loads(r.value) for r in read_all(kafka_bootstrap, config.kafka.alerts_topic)]
    ids = [e["event_id"] for e in alerts]
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert sorted(ids) == event_ids(offline_events(config, baseline, messages))


def test_a_topic_pattern_takes_in_topics_created_later_but_never_its_own(kafka_bootstrap,
                                                                         baseline):
    """A live run subscribed to a pattern reads a matching topic created after it started
    (kafka-python re-checks every metadata_max_age_ms, 1 s here). The group's own topics
    match the pattern too, and must never be read: they would come back as bad records."""
    prefix = unique("pattern")
    first, later = f"{prefix}-a", f"{prefix}-b"
    create_topic(kafka_bootstrap, first)
    first_messages, later_messages = skewed_stream(minutes=2), skewed_stream(minutes=1, seed=5)
    produce(kafka_bootstrap, first, first_messages)
    config = service_config(kafka_bootstrap, first, f"{prefix}-group",
                            client={"metadata_max_age_ms": 1000})
    config = dataclasses.replace(config, kafka=dataclasses.replace(
        config.kafka, topics=(), topic_pattern=re.escape(prefix) + ".*"))
    service = DetectorService(config, baseline)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,))
    thread.start()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        def committed(topic: str) -> int:
            return sum(committed_offsets(admin, config.kafka.group_id, topic).values())

        def running() -> None:
            assert thread.is_alive(), "the service stopped"

        def wait_for(topic: str, count: int) -> None:
            wait_until(lambda: committed(topic) >= count, 90,
                       lambda: f"{topic}: {committed(topic)} of {count}", running)

        wait_for(first, len(first_messages))
        create_topic(kafka_bootstrap, later)
        produce(kafka_bootstrap, later, later_messages)
        wait_for(later, len(later_messages))
        offsets = admin.list_group_offsets({config.kafka.group_id: None})
    finally:
        stop.set()
        thread.join(timeout=60)
        admin.close()
    assert not thread.is_alive()
    assert {tp.topic for tp in offsets[config.kafka.group_id]} == {first, later}
    assert service.stats.builders.bad_total == 0 and service.stats.dead_letters == 0
    assert service.stats.builders.records >= len(first_messages) + len(later_messages)


def test_a_partition_of_only_unknown_models_goes_idle_instead_of_holding_every_pane(
        kafka_bootstrap, baseline):
    """Partition 1 carries nothing but records of a model without a baseline, arriving all
    the time: they are turned away before the clock, so that partition has no event time.
    It must count as idle (no admitted record for idle_timeout_s, read to the end of its
    log after its polls if seldom at a heartbeat), or its missing watermark would hold every
    pane of the deployment open for as long as the junk keeps coming."""
    topic = unique("unknown-only")
    create_topic(kafka_bootstrap, topic, partitions=2)
    produce(kafka_bootstrap, topic, skewed_stream(minutes=6), partitions=1)  # partition 0
    config = service_config(kafka_bootstrap, topic, unique("unknown-only-group"))
    windows: list = []
    service = DetectorService(config, {"fraud": baseline}, idle_timeout_s=2.0,
                              on_window=windows.append)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,))
    thread.start()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    junk = orjson.dumps({"timestamp": START, "model": "spam",
                         "features": {"amount": 1.0, "country": "DE"}})
    try:
        def feed_junk_and_check() -> bool:
            assert thread.is_alive(), "the service stopped"
            for _ in range(3):  # every 0.5 s: far more often than idle_timeout_s
                producer.send(topic, value=junk, partition=1)
            producer.flush()
            return bool(windows)

        wait_until(feed_junk_and_check, 90, lambda: "no window was judged: partition 1 "
                   "held the watermark", every_s=0.5)
    finally:
        stop.set()
        thread.join(timeout=60)
        producer.close()
    assert not thread.is_alive()
    assert windows[0].model == "fraud"
    assert service.stats.builders.bad.get("unknown_model", 0) > 0
