"""`streamskew alerts` / `read_alerts` against a real Kafka broker (transactions included)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from streamskew import Config
from streamskew.detector.events import SkewEvent
from streamskew.kafka.alerts import (
    AlertReader,
    AlertsError,
    alerts,
    read_alert_records,
    read_alerts,
)
from streamskew.timeparse import format_time

from .kafka_helpers import KEEP

pytestmark = pytest.mark.kafka

DEADLINE_S = 60.0
START = 1_764_324_000_000
MINUTE = 60_000


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="streamskew-test-admin")
    try:
        # KEEP: the records are stamped 2025, older than the broker's default retention.
        admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1,
                                     "configs": KEEP}}, wait_for_metadata=True)
    finally:
        admin.close()


def _event(model: str, feature: str, minute: int, type_: str = "skew_detected",
           value: float = 0.25) -> SkewEvent:
    end = START + minute * MINUTE
    return SkewEvent(
        type=type_, model=model, feature=feature, kind="numeric", check="distribution",
        metric="jsd", value=value, threshold=0.1,
        severity="info" if type_ == "skew_resolved" else ("critical" if value >= 0.2
                                                           else "warning"),
        window_start=end - 10 * MINUTE, window_end=end, window_count=3000,
        baseline_id="d988d5313e68f9db", baseline_count=37758,
        evidence={"serving": {"p50": 0.6}, "baseline": {"p50": 0.7}, "jsd": value})


def _as_stored(event: SkewEvent) -> dict:
    return orjson.loads(event.to_json())


class _Writer:
    """A transactional producer writing events with key model/feature, timestamp = window end."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap,
                                      transactional_id=_unique("streamskew-test-txn"))
        self.producer.init_transactions()
        self.where: dict[str, tuple[int, int]] = {}  # event_id -> (partition, offset)

    def transaction(self, events: list[SkewEvent], commit: bool = True) -> None:
        self.producer.begin_transaction()
        futures = [(event, self._send(event)) for event in events]
        self.producer.flush()  # aborted records too must really reach the log
        for event, future in futures:
            meta = future.get(timeout=DEADLINE_S)
            if commit:
                self.where[event.event_id] = (meta.partition, meta.offset)
        if commit:
            self.producer.commit_transaction()
        else:
            self.producer.abort_transaction()

    def _send(self, event: SkewEvent):
        return self.producer.send(self.topic, value=event.to_json(), key=event.key.encode(),
                                  timestamp_ms=event.window_end)

    def close(self) -> None:
        self.producer.close()


def _config(topic: str) -> Config:
    return Config.from_dict({"kafka": {"alerts_topic": topic}})


def _config_file(tmp_path: Path, topic: str, bootstrap: str) -> str:
    path = tmp_path / "streamskew.toml"
    path.write_text(f'[kafka]\nbootstrap_servers = "{bootstrap}"\nalerts_topic = "{topic}"\n')
    return str(path)


def _by_partition(records) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        out[record.partition].append(record.event)
    return dict(out)


def _by_key(events) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        out[f"{event['model']}/{event['feature']}"].append(event)
    return dict(out)


def _read_uncommitted_features(bootstrap: str, topic: str) -> set[str]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             isolation_level="read_uncommitted")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        features: set[str] = set()
        deadline = time.monotonic() + DEADLINE_S
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, "could not read the topic uncommitted"
            for records in consumer.poll(timeout_ms=200).values():
                features.update(orjson.loads(r.value)["feature"] for r in records)
        return features
    finally:
        consumer.close()


def _group_ids(admin: KafkaAdminClient) -> set[str]:
    return {group["group_id"] for group in admin.list_groups()}


# -- a topic with committed and aborted transactions -------------------------------------------

FIRST = [  # committed, minutes 0..8
    _event("fraud", "amount", 0), _event("fraud", "country", 1, value=0.15),
    _event("churn", "age", 2), _event("fraud", "amount", 3, "skew_resolved", 0.03),
    _event("churn", "tenure", 4, value=0.12),
]
ABORTED = [_event("fraud", "aborted_feature", 5), _event("churn", "age", 5, value=0.9),
           _event("fraud", "amount", 5, value=0.8)]
SECOND = [  # committed after the aborted transaction, minutes 6..9
    _event("churn", "age", 6, "skew_resolved", 0.02), _event("fraud", "country", 7, value=0.5),
    _event("fraud", "amount", 8, value=0.3), _event("churn", "tenure", 9, "skew_resolved", 0.01),
]
COMMITTED = FIRST + SECOND


@pytest.fixture(scope="module")
def alerts_topic(kafka_bootstrap):
    """A 3-partition alerts topic: FIRST committed, ABORTED aborted, SECOND committed."""
    topic = _unique("streamskew-alerts-test")
    _create_topic(kafka_bootstrap, topic, partitions=3)
    writer = _Writer(kafka_bootstrap, topic)
    try:
        writer.transaction(FIRST)
        writer.transaction(ABORTED, commit=False)
        writer.transaction(SECOND)
    finally:
        writer.close()
    return topic, writer.where


def test_read_alerts_returns_exactly_the_committed_events_in_partition_order(
        kafka_bootstrap, alerts_topic):
    topic, where = alerts_topic
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        groups_before = _group_ids(admin)
        records = list(read_alert_records(_config(topic), kafka_bootstrap))
        groups_after = _group_ids(admin)
    finally:
        admin.close()
    assert groups_after == groups_before  # no consumer group: nothing committed anywhere

    expected: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    for event in COMMITTED:
        partition, offset = where[event.event_id]
        expected[partition].append((offset, _as_stored(event)))
    assert len(expected) > 1, "the keys should spread over several partitions"
    got = _by_partition(records)
    assert got == {p: [e for _, e in sorted(items, key=lambda x: x[0])]
                   for p, items in expected.items()}
    for record in records:
        assert (record.partition, record.offset) == where[record.event["event_id"]]
        assert record.timestamp == record.event["window"]["end"]
        assert record.key == f"{record.event['model']}/{record.event['feature']}".encode()
    assert "aborted_feature" not in {r.event["feature"] for r in records}
    # ... although the aborted records are in the log: a read_uncommitted consumer sees them
    assert "aborted_feature" in _read_uncommitted_features(kafka_bootstrap, topic)

    events = list(read_alerts(_config(topic), kafka_bootstrap))
    assert len(events) == len(COMMITTED)
    assert _by_key(events) == _by_key(_as_stored(e) for e in COMMITTED)


def test_bootstrap_servers_from_the_config(kafka_bootstrap, alerts_topic):
    topic, _ = alerts_topic
    config = Config.from_dict({"kafka": {"alerts_topic": topic,
                                         "bootstrap_servers": kafka_bootstrap}})
    assert len(list(read_alerts(config))) == len(COMMITTED)


@pytest.mark.parametrize("minute", [0, 3, 6, 8, 9])
def test_since_skips_older_events(kafka_bootstrap, alerts_topic, minute):
    topic, _ = alerts_topic
    since = START + minute * MINUTE
    events = list(read_alerts(_config(topic), kafka_bootstrap, since_ms=since))
    expected = [_as_stored(e) for e in COMMITTED if e.window_end >= since]
    assert _by_key(events) == _by_key(expected)


def test_since_after_everything_gives_nothing(kafka_bootstrap, alerts_topic):
    topic, _ = alerts_topic
    assert list(read_alerts(_config(topic), kafka_bootstrap, since_ms=START + 60 * MINUTE)) == []


@pytest.mark.parametrize(("filters", "keep"), [
    ({"models": ["fraud"]}, lambda e: e.model == "fraud"),
    ({"models": ["fraud", "churn"]}, lambda e: True),
    ({"models": ["nobody"]}, lambda e: False),
    ({"features": ["amount"]}, lambda e: e.feature == "amount"),
    ({"features": ["age", "tenure"]}, lambda e: e.feature in ("age", "tenure")),
    ({"types": ["resolved"]}, lambda e: e.type == "skew_resolved"),
    ({"types": ["skew_detected"]}, lambda e: e.type == "skew_detected"),
    ({"models": ["fraud"], "features": ["amount"], "types": ["detected"]},
     lambda e: (e.model, e.feature, e.type) == ("fraud", "amount", "skew_detected")),
])
def test_filters(kafka_bootstrap, alerts_topic, filters, keep):
    topic, _ = alerts_topic
    events = list(read_alerts(_config(topic), kafka_bootstrap, **filters))
    expected = [_as_stored(e) for e in COMMITTED if keep(e)]
    assert _by_key(events) == _by_key(expected)


def test_unknown_type_filter_is_an_error(kafka_bootstrap, alerts_topic):
    topic, _ = alerts_topic
    with pytest.raises(ValueError, match="use detected or resolved"):
        list(read_alerts(_config(topic), kafka_bootstrap, types=["fired"]))


# -- the command -------------------------------------------------------------------------------


def test_cli_table(kafka_bootstrap, alerts_topic, tmp_path):
    topic, _ = alerts_topic
    config = _config_file(tmp_path, topic, "127.0.0.1:1")  # overridden below
    result = CliRunner().invoke(alerts, ["--config", config,
                                         "--bootstrap-servers", kafka_bootstrap])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIME", "TYPE", "SEVERITY", "MODEL", "FEATURE", "CHECK",
                                "METRIC", "VALUE", "THRESHOLD"]
    assert len(lines) == 1 + len(COMMITTED)
    for feature in ("amount", "country", "age", "tenure"):
        assert feature in result.stdout
    assert "aborted_feature" not in result.stdout
    assert "\x1b[" not in result.stdout  # no colors when stdout is not a terminal
    # aligned: every column starts at the same place on every line
    starts = {line.index(" fraud ") if " fraud " in line else line.index(" churn ")
              for line in lines[1:]}
    assert len(starts) == 1
    resolved = next(e for e in COMMITTED if e.type == "skew_resolved")
    row = next(line for line in lines if line.startswith(format_time(resolved.window_end))
               and resolved.feature in line)
    assert row.split() == [format_time(resolved.window_end), "resolved", "info", resolved.model,
                           resolved.feature, "distribution", "jsd", "0.03", "0.1"]


def test_cli_json_prints_the_events_as_stored(kafka_bootstrap, alerts_topic, tmp_path):
    topic, _ = alerts_topic
    config = _config_file(tmp_path, topic, kafka_bootstrap)
    result = CliRunner().invoke(alerts, ["--config", config, "--json"])
    assert result.exit_code == 0, result.output
    lines = result.stdout_bytes.splitlines()
    assert sorted(lines) == sorted(e.to_json() for e in COMMITTED)
    assert _by_key(orjson.loads(line) for line in lines) == \
        _by_key(_as_stored(e) for e in COMMITTED)


def test_cli_since_and_filters(kafka_bootstrap, alerts_topic, tmp_path):
    topic, _ = alerts_topic
    config = _config_file(tmp_path, topic, kafka_bootstrap)
    since = format_time(START + 6 * MINUTE)
    result = CliRunner().invoke(alerts, ["--config", config, "--json", "--since", since,
                                         "--model", "fraud", "--type", "detected"])
    assert result.exit_code == 0, result.output
    got = sorted(result.stdout_bytes.splitlines())
    assert got == sorted(e.to_json() for e in SECOND
                         if e.model == "fraud" and e.type == "skew_detected")
    assert len(got) == 2

    result = CliRunner().invoke(alerts, ["--config", config, "--feature", "age",
                                         "--feature", "tenure", "--type", "resolved"])
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()[1:]
    assert sorted(r.split()[4] for r in rows) == ["age", "tenure"]

    result = CliRunner().invoke(alerts, ["--config", config, "--model", "nobody"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "no skew events" in result.stderr


def test_cli_bad_since_is_a_usage_error(kafka_bootstrap, alerts_topic, tmp_path):
    topic, _ = alerts_topic
    config = _config_file(tmp_path, topic, kafka_bootstrap)
    result = CliRunner().invoke(alerts, ["--config", config, "--since", "2025-11-28T10:00"])
    assert result.exit_code == 2
    assert "add Z" in result.stderr


def test_cli_config_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka]\nalerts_topic = 5\n")
    result = CliRunner().invoke(alerts, ["--config", str(bad)])
    assert result.exit_code == 1
    assert "alerts_topic" in result.stderr and "must be a string" in result.stderr


# -- bad values, a missing topic ---------------------------------------------------------------


def test_malformed_values_are_reported_and_skipped(kafka_bootstrap, tmp_path):
    topic = _unique("streamskew-alerts-bad")
    _create_topic(kafka_bootstrap, topic, partitions=1)
    good = [_event("fraud", "amount", 0), _event("fraud", "amount", 1, "skew_resolved", 0.01)]
    values = [good[0].to_json(), b"not json {", b'{"hello": "world"}', b"[1, 2]",
              orjson.dumps({**_as_stored(good[0]), "model": 7}), good[1].to_json()]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        for value in values:
            producer.send(topic, value=value, key=b"fraud/amount", partition=0)
        producer.flush(timeout=DEADLINE_S)
    finally:
        producer.close()

    problems: list[tuple[int, int, str]] = []
    events = list(read_alerts(_config(topic), kafka_bootstrap,
                              on_invalid=lambda t, p, o, why: problems.append((p, o, why))))
    assert events == [_as_stored(e) for e in good]
    assert [(p, o) for p, o, _ in problems] == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert problems[0][2].startswith("not JSON")
    assert "schema" in problems[1][2]
    assert "wrong type of model" in problems[3][2]

    config = _config_file(tmp_path, topic, kafka_bootstrap)
    result = CliRunner().invoke(alerts, ["--config", config, "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.splitlines() == [e.to_json() for e in good]
    warnings = result.stderr.splitlines()
    assert len(warnings) == 4
    for offset, line in zip((1, 2, 3, 4), warnings, strict=True):
        assert line.startswith(f"warning: {topic} partition 0 offset {offset}: ")
        assert line.endswith("skipped")


def test_missing_topic_is_a_clear_error(kafka_bootstrap, tmp_path):
    topic = _unique("streamskew-alerts-missing")
    with pytest.raises(AlertsError, match=r"\[kafka\] alerts_topic"):
        list(read_alerts(_config(topic), kafka_bootstrap))

    config = _config_file(tmp_path, topic, kafka_bootstrap)
    result = CliRunner().invoke(alerts, ["--config", config])
    assert result.exit_code == 1
    assert topic in result.stderr
    assert "[kafka] alerts_topic" in result.stderr
    assert "Traceback" not in result.output

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert topic not in admin.list_topics()  # reading never auto-creates the topic
    finally:
        admin.close()


# -- follow ------------------------------------------------------------------------------------


def test_follow_returns_new_events_until_stopped(kafka_bootstrap):
    topic = _unique("streamskew-alerts-follow")
    _create_topic(kafka_bootstrap, topic, partitions=3)
    writer = _Writer(kafka_bootstrap, topic)
    old = [_event("fraud", "amount", 0), _event("churn", "age", 1)]
    new = _event("fraud", "country", 2, value=0.4)
    writer.transaction(old)

    got: list[dict] = []
    changed = threading.Condition()
    stop = threading.Event()
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            for event in read_alerts(_config(topic), kafka_bootstrap, follow=True, stop=stop):
                with changed:
                    got.append(event)
                    changed.notify_all()
        except BaseException as exc:  # handed to the test thread
            failure.append(exc)
        finally:
            with changed:
                changed.notify_all()

    thread = threading.Thread(target=consume, name="alerts-follow", daemon=True)
    thread.start()
    try:
        with changed:
            assert changed.wait_for(lambda: len(got) >= len(old) or failure,
                                    timeout=DEADLINE_S), "the backlog was not read"
        assert not failure, failure
        writer.transaction([new])
        with changed:
            assert changed.wait_for(lambda: len(got) > len(old) or failure,
                                    timeout=DEADLINE_S), "the new event did not arrive"
    finally:
        stop.set()
        writer.close()
    thread.join(timeout=DEADLINE_S)
    assert not thread.is_alive(), "read_alerts(follow=True) did not end after stop.set()"
    assert not failure, failure
    assert _by_key(got[:len(old)]) == _by_key(_as_stored(e) for e in old)
    assert got[len(old):] == [_as_stored(new)]


def test_events_written_after_the_start_wait_for_follow(kafka_bootstrap):
    """The backlog ends at the end offsets seen at start; later records come with follow."""
    topic = _unique("streamskew-alerts-later")
    _create_topic(kafka_bootstrap, topic, partitions=1)
    writer = _Writer(kafka_bootstrap, topic)
    old = [_event("fraud", "amount", 0), _event("fraud", "amount", 1, value=0.5)]
    later = [_event("fraud", "amount", 2, "skew_resolved", 0.01),
             _event("fraud", "amount", 3, value=0.7)]
    stop = threading.Event()
    safety = threading.Timer(DEADLINE_S, stop.set)  # a deadline, not a wait: ends follow()
    try:
        writer.transaction(old)
        with AlertReader(_config(topic), kafka_bootstrap) as reader:
            writer.transaction(later)  # after the reader took its end offsets
            assert [r.event for r in reader.backlog()] == [_as_stored(e) for e in old]
            safety.start()
            followed = []
            for record in reader.follow(stop):
                followed.append(record.event)
                if len(followed) == len(later):
                    stop.set()
            assert followed == [_as_stored(e) for e in later]
    finally:
        safety.cancel()
        writer.close()


def test_follow_cli_ends_cleanly_on_sigterm(kafka_bootstrap, tmp_path):
    topic = _unique("streamskew-alerts-sigterm")
    _create_topic(kafka_bootstrap, topic, partitions=1)
    writer = _Writer(kafka_bootstrap, topic)
    try:
        writer.transaction([_event("fraud", "amount", 0)])
        config = _config_file(tmp_path, topic, kafka_bootstrap)
        code = "from streamskew.kafka.alerts import alerts; alerts(prog_name='streamskew alerts')"
        process = subprocess.Popen(
            [sys.executable, "-c", code, "--config", config, "--follow"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                         daemon=True).start()
        try:
            seen: list[str] = []
            deadline = time.monotonic() + DEADLINE_S
            while not any("amount" in line for line in seen):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no event row; got {seen!r}"
                try:
                    seen.append(lines.get(timeout=remaining))
                except queue.Empty:
                    pytest.fail(f"no event row; got {seen!r}")
            writer.transaction([_event("fraud", "country", 1)])
            while not any("country" in line for line in seen):
                remaining = deadline - time.monotonic()
                try:
                    seen.append(lines.get(timeout=max(remaining, 0.01)))
                except queue.Empty:
                    pytest.fail(f"the followed event did not show; got {seen!r}")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=DEADLINE_S) == 0
            assert "Traceback" not in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    finally:
        writer.close()


def test_cli_table_is_in_window_end_order(kafka_bootstrap, alerts_topic, tmp_path):
    topic, _ = alerts_topic
    config = _config_file(tmp_path, topic, kafka_bootstrap)
    result = CliRunner().invoke(alerts, ["--config", config])
    assert result.exit_code == 0, result.output
    times = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    expected = [format_time(e.window_end) for e in sorted(COMMITTED, key=lambda e: e.window_end)]
    assert times == expected  # the topic's 3 partitions interleave them; the table does not


@pytest.mark.parametrize(("extra", "skipped"), [
    ([], 5),  # FIRST: minutes 0..4 (the aborted transaction is not counted)
    (["--model", "fraud"], 3),  # amount 0, country 1, amount 3
    (["--type", "resolved"], 1),  # amount 3
])
def test_cli_since_says_how_many_older_events_it_skipped(kafka_bootstrap, alerts_topic,
                                                         tmp_path, extra, skipped):
    topic, _ = alerts_topic
    config = _config_file(tmp_path, topic, kafka_bootstrap)
    since = START + 6 * MINUTE
    result = CliRunner().invoke(alerts, ["--config", config, "--since", str(since), *extra])
    assert result.exit_code == 0, result.output
    noun = "event" if skipped == 1 else "events"
    assert result.stderr.splitlines() == [
        f"skipped {skipped} older {noun} (before {format_time(since)}, --since)"]
    rows = result.stdout.splitlines()[1:]
    assert all(row.split()[0] >= format_time(since) for row in rows)


def test_cli_since_before_everything_skips_nothing_and_says_nothing(kafka_bootstrap,
                                                                    alerts_topic, tmp_path):
    topic, _ = alerts_topic
    config = _config_file(tmp_path, topic, kafka_bootstrap)
    result = CliRunner().invoke(alerts, ["--config", config, "--since", str(START - MINUTE)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1 + len(COMMITTED)


def test_cli_unreachable_broker_is_one_line_with_one_prefix(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\nrequest_timeout_ms = 2000\n'
                      'api_version_auto_timeout_ms = 2000\n')
    from streamskew.cli import main

    result = CliRunner().invoke(main, ["alerts", "--config", str(config)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Error: error" not in lines[0]
    assert "Traceback" not in result.output
