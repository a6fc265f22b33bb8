"""Shared pieces of the Kafka integration tests: topics, a skewed stream, reading topics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streamskew import Baseline, Config
from streamskew.kafka.topics import TopicSpec, ensure_topics, internal_topics

START = 1_764_324_000_000
PARTITIONS = 6
# Records are stamped with their event time (from START, 2025-11-28), and alerts with their
# window's end: once those are older than a topic's retention.ms (the broker's default is 7
# days), the broker's periodic retention check (every 5 minutes) deletes them, in the middle
# of a test. Every topic the tests read is therefore kept without a time limit.
KEEP = {"retention.ms": "-1"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def training_baseline(seed: int = 1) -> Baseline:
    rng = np.random.default_rng(seed)
    return Baseline.from_columns({
        "amount": rng.lognormal(3, 0.5, 20_000).round(3).tolist(),
        "country": rng.choice(["DE", "FR", "US", "NL"], 20_000).tolist(),
    })


def skewed_stream(minutes: int = 16, per_second: int = 8, shift_from: int = 8,
                  seed: int = 2, bad_every: int = 0) -> list[bytes]:
    """Requests in event-time order; amounts triple from minute ``shift_from`` on."""
    rng = np.random.default_rng(seed)
    messages = []
    step = 1000 // per_second
    for i in range(minutes * 60 * per_second):
        t = START + i * step
        scale = 3.0 if t >= START + shift_from * 60_000 else 1.0
        messages.append(orjson.dumps({
            "request_id": f"r-{i}", "timestamp": t, "model": "fraud",
            "features": {"amount": round(float(rng.lognormal(3, 0.5)) * scale, 3),
                         "country": str(rng.choice(["DE", "FR", "US", "NL"]))}}))
        if bad_every and i % bad_every == bad_every - 1:
            messages.append(b'{"request_id": "broken", "timestamp": ' + str(t).encode())
    return messages


def event_time(message: bytes) -> int | None:
    try:
        return orjson.loads(message).get("timestamp")
    except orjson.JSONDecodeError:
        return None


def create_topic(bootstrap: str, name: str, partitions: int = PARTITIONS) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({name: {"num_partitions": partitions, "configs": KEEP}},
                            wait_for_metadata=True)
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, messages: Iterable[bytes],
            partitions: int = PARTITIONS, transactional_id: str | None = None) -> None:
    """Round-robin over partitions, record timestamp = event time (previous one if none).
    With ``transactional_id``, in one committed transaction: every partition then ends with
    a commit marker, an offset that holds no record a consumer returns."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             transactional_id=transactional_id)
    if transactional_id:
        producer.init_transactions()
        producer.begin_transaction()
    last = START
    for i, message in enumerate(messages):
        last = event_time(message) or last
        producer.send(topic, value=message, partition=i % partitions, timestamp_ms=last)
    if transactional_id:
        producer.commit_transaction()
    producer.flush()
    producer.close()


def read_all(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list:
    """Every committed record of a topic, up to its end offsets now.

    The end is the high watermark, not the read_committed end offset (the last stable
    offset): a transaction still open there, e.g. a killed replica's until the broker aborts
    it, hides every record after it, including those its successor committed. Reading on
    until the position passes the high watermark waits for such transactions to end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                             enable_auto_commit=False, group_id=None)
    watermarks = KafkaConsumer(bootstrap_servers=bootstrap,
                               isolation_level="read_uncommitted")
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = watermarks.end_offsets(partitions)
        records = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"reading {topic} timed out"
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
        watermarks.close()


def service_config(bootstrap: str, topic: str, group: str,
                   client: Mapping[str, Any] | None = None, **window: str) -> Config:
    """A service's config (``client``: kafka-python settings passed through), its own topics
    created ahead of it as it would create them, but kept without a time limit (see KEEP)."""
    config = Config.from_dict({
        "window": {"size": "4m", "pane": "1m", "allowed_lateness": "2s", **window},
        "detect": {"min_count": 300},
        "kafka": {"bootstrap_servers": bootstrap, "topics": [topic], "group_id": group,
                  "alerts_topic": f"{group}.alerts", "dlq_topic": f"{group}.dlq",
                  "panes_topic": f"{group}.panes", "state_topic": f"{group}.state",
                  **(client or {})},
    })
    specs = [TopicSpec(s.name, s.partitions, {**s.configs, **KEEP})
             for s in internal_topics(config.kafka)]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        ensure_topics(admin, specs)
    finally:
        admin.close()
    return config


def event_ids(events: Iterable) -> list[str]:
    return sorted(e.event_id if hasattr(e, "event_id") else e["event_id"] for e in events)


def config_file(tmp_path: Path, baseline: Baseline, sections: str) -> Path:
    """``tmp_path/streamskew.toml`` with ``sections`` under ``baseline = "baseline.json"``
    (``baseline`` saved beside it), for the CLI."""
    baseline.save(tmp_path / "baseline.json")
    toml = tmp_path / "streamskew.toml"
    toml.write_text('baseline = "baseline.json"\n' + sections)
    return toml


def write_config(tmp_path, bootstrap: str, topic: str, config: Config, baseline: Baseline,
                 extra_kafka: str = "") -> Path:
    """The TOML file (and baseline file) of ``config`` as service_config builds it, for the
    CLI; ``extra_kafka`` lines go at the end of the [kafka] section."""
    k = config.kafka
    return config_file(tmp_path, baseline, f'''[window]
size = "4m"
pane = "1m"
allowed_lateness = "2s"
[detect]
min_count = 300
[kafka]
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{k.group_id}"
alerts_topic = "{k.alerts_topic}"
dlq_topic = "{k.dlq_topic}"
panes_topic = "{k.panes_topic}"
state_topic = "{k.state_topic}"
{extra_kafka}''')


def committed_offsets(admin: KafkaAdminClient, group: str, topic: str) -> dict[TopicPartition, int]:
    """The group's committed offsets on ``topic`` ({} until a member has joined)."""
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    except KafkaError:  # the group does not exist until a member has joined
        return {}
    return {tp: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def wait_until(condition: Callable[[], bool], timeout_s: float, what: Callable[[], str],
               still_running: Callable[[], None] = lambda: None, every_s: float = 0.2) -> None:
    """Poll ``condition`` until it holds; fail with ``what()`` after ``timeout_s``.
    ``still_running`` asserts that what is being waited for has not died meanwhile. Polling
    is all there is here: the progress being waited for is in a broker or another process,
    which cannot signal this one."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        still_running()
        assert time.monotonic() < deadline, what()
        time.sleep(every_s)
