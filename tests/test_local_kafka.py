"""End-to-end tests of `streamskew.kafka.local` against a real Kafka broker (KRaft)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from streamskew.kafka.local import LocalKafka, LocalKafkaError, check_port_free

pytestmark = pytest.mark.kafka

DEADLINE_S = 60.0


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="streamskew-test-admin")
    try:
        admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": 1}},
            wait_for_metadata=True,
        )
    finally:
        admin.close()


def _consume(consumer: KafkaConsumer, until: int, deadline_s: float = DEADLINE_S) -> list:
    """Poll until `until` records arrived or the deadline passed; return the records."""
    records = []
    deadline = time.monotonic() + deadline_s
    while len(records) < until and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def _process_gone(pid: int) -> bool:
    """True if `pid` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _wait_until(condition, deadline_s: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)  # poll interval
    return True


def _brokers_of(directory: Path) -> list[int]:
    """Pids of any live kafka.Kafka process whose command line names `directory`."""
    needle = str(directory).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and needle in cmdline and not _process_gone(int(proc.name)):
            pids.append(int(proc.name))
    return pids


def _start_or_skip(kafka: LocalKafka) -> str:
    """Start a separate broker; skip like the session fixture when none can be had."""
    try:
        return kafka.start(timeout=180)
    except LocalKafkaError as exc:
        if os.environ.get("STREAMSKEW_REQUIRE_KAFKA") == "1":
            raise
        pytest.skip(f"no local Kafka: {exc}")


def _local_port(bootstrap: str) -> int:
    host, _, port = bootstrap.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        pytest.skip(f"broker {bootstrap} is not on loopback")
    return int(port)


def test_produce_consume_keyed_in_group(kafka_bootstrap: str) -> None:
    topic = _unique("roundtrip")
    _create_topic(kafka_bootstrap, topic, partitions=3)

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    try:
        futures = [
            producer.send(topic, key=f"user-{i % 10}".encode(), value=str(i).encode())
            for i in range(100)
        ]
        producer.flush(timeout=DEADLINE_S)
        metas = [f.get(timeout=DEADLINE_S) for f in futures]
    finally:
        producer.close()
    assert {m.topic for m in metas} == {topic}

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=_unique("group"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        records = _consume(consumer, until=100)
        assert consumer.partitions_for_topic(topic) == {0, 1, 2}
    finally:
        consumer.close()

    values = [int(r.value) for r in records]
    assert sorted(values) == list(range(100)), f"got {len(values)} of 100 messages"

    by_partition: dict[int, list] = defaultdict(list)
    for r in records:
        by_partition[r.partition].append(r)
    assert len(by_partition) > 1, "10 keys should spread over several of the 3 partitions"
    key_partition: dict[bytes, int] = {}
    for partition, recs in by_partition.items():
        offsets = [r.offset for r in recs]
        assert offsets == sorted(offsets), f"partition {partition} delivered out of order"
        vals = [int(r.value) for r in recs]
        assert vals == sorted(vals), f"partition {partition} lost the produce order"
        for r in recs:
            assert key_partition.setdefault(r.key, partition) == partition, "key split"


def test_transactional_commit_visible_to_read_committed(kafka_bootstrap: str) -> None:
    topic = _unique("txn")
    _create_topic(kafka_bootstrap, topic, partitions=1)

    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=_unique("txn-producer"), acks="all"
    )
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(10):
            producer.send(topic, key=b"k", value=f"committed-{i}".encode())
        producer.commit_transaction()

        producer.begin_transaction()
        for i in range(5):
            producer.send(topic, key=b"k", value=f"aborted-{i}".encode())
        # Flush first: abort_transaction() drops batches not yet sent (as the Java client
        # does), and the point here is aborted records that did reach the log.
        producer.flush(timeout=DEADLINE_S)
        producer.abort_transaction()

        producer.begin_transaction()
        producer.send(topic, key=b"k", value=b"committed-last")
        producer.commit_transaction()
    finally:
        producer.close()

    def read(isolation: str, until: int) -> list[str]:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=_unique(f"txn-{isolation}"),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level=isolation,
        )
        try:
            return [r.value.decode() for r in _consume(consumer, until=until)]
        finally:
            consumer.close()

    committed = read("read_committed", until=11)
    # "committed-last" lies after the aborted batch, so seeing it proves they were skipped.
    assert committed == [f"committed-{i}" for i in range(10)] + ["committed-last"]

    # The aborted records are in the log: a read_uncommitted consumer does see them.
    uncommitted = read("read_uncommitted", until=16)
    assert uncommitted == (
        [f"committed-{i}" for i in range(10)]
        + [f"aborted-{i}" for i in range(5)]
        + ["committed-last"]
    )


def test_second_broker_on_same_port_is_refused(kafka_bootstrap: str, tmp_path: Path) -> None:
    port = _local_port(kafka_bootstrap)
    second = LocalKafka(port=port, directory=tmp_path / "second")
    with pytest.raises(LocalKafkaError, match=rf"port {port}\b"):
        second.start(timeout=30)
    assert second.status() is None
    assert _brokers_of(tmp_path / "second") == []


def test_stop_kill_leaves_no_process(tmp_path: Path) -> None:
    directory = tmp_path / "victim"
    kafka = LocalKafka(port=0, directory=directory)
    bootstrap = _start_or_skip(kafka)
    status = kafka.status()
    assert status is not None and status["running"] and status["bootstrap"] == bootstrap
    pid = status["pid"]
    assert (directory / "kafka.pid").read_text().strip() == str(pid)
    assert _brokers_of(directory) == [pid]

    assert kafka.stop(kill=True) is True
    assert _wait_until(lambda: _process_gone(pid)), f"broker pid {pid} still alive"
    assert _brokers_of(directory) == []
    assert kafka.status() is None
    assert kafka.stop() is False  # nothing left to stop
    # The kernel released the listener together with the process.
    check_port_free(kafka.port)


def test_cli_start_status_stop_across_processes(tmp_path: Path) -> None:
    directory = tmp_path / "cli"
    cli = [sys.executable, "-m", "streamskew.kafka.local"]
    start = subprocess.run(
        [*cli, "start", "--port", "0", "--dir", str(directory), "--timeout", "180"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if start.returncode != 0:
        if os.environ.get("STREAMSKEW_REQUIRE_KAFKA") == "1":
            pytest.fail(f"`local-kafka start` failed:\n{start.stderr}")
        pytest.skip(f"no local Kafka: {start.stderr.strip()[-2000:]}")
    bootstrap = start.stdout.strip()
    assert bootstrap.startswith("127.0.0.1:")

    try:
        status = subprocess.run(
            [*cli, "status", "--dir", str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        state = json.loads(status.stdout)
        assert state["running"] is True and state["bootstrap"] == bootstrap
        pid = state["pid"]

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            assert admin.describe_cluster()["brokers"]
        finally:
            admin.close()
    finally:
        stop = subprocess.run(
            [*cli, "stop", "--dir", str(directory)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stdout
    assert _wait_until(lambda: _process_gone(pid)), f"broker pid {pid} still alive"
    assert "shut down completed" in (directory / "logs" / "server.log").read_text()
    after = subprocess.run(
        [*cli, "status", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert after.returncode == 1
    assert json.loads(after.stdout)["running"] is False
