"""`streamskew run --workers N` on a real broker: N processes, one verdict."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from streamskew import Detector
from streamskew.kafka.workers import WorkerError, run_workers

from .kafka_helpers import (
    PARTITIONS,
    committed_offsets,
    create_topic,
    event_ids,
    produce,
    read_all,
    service_config,
    skewed_stream,
    unique,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.kafka


def test_two_workers_publish_the_same_events_as_detect(kafka_bootstrap, topic, stream,
                                                       baseline):
    config = service_config(kafka_bootstrap, topic, unique("workers"))
    detector = Detector(config, baseline)
    expected = event_ids(detector.process(stream) + detector.flush())
    assert expected, "the stream should raise alerts"
    relayed = []
    stats = run_workers(config, baseline, 2, until_end=True, on_event=relayed.append)
    published = [orjson.loads(r.value) for r in read_all(kafka_bootstrap,
                                                         config.kafka.alerts_topic)]
    assert event_ids(published) == expected
    assert event_ids(relayed) == expected == event_ids(stats.events)
    assert stats.builders.records >= len(stream)  # a rebalance may make a worker re-read
    assert stats.dead_letters == len(read_all(kafka_bootstrap, config.kafka.dlq_topic)) > 0


def test_a_failing_worker_fails_the_run_with_its_reason(kafka_bootstrap, baseline):
    config = service_config(kafka_bootstrap, unique("no-such-topic"), unique("workers"))
    with pytest.raises(WorkerError, match=r"worker 0: run: no source topic"):
        run_workers(config, baseline, 2, until_end=True)


def test_a_worker_killed_outright_fails_the_run_and_stops_the_others(kafka_bootstrap, topic,
                                                                    baseline):
    config = service_config(kafka_bootstrap, topic, unique("workers"))
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            run_workers(config, baseline, 2)  # no until_end: only a failure ends it
        except BaseException as exc:  # checked below
            outcome.append(exc)

    before = set(multiprocessing.active_children())
    thread = threading.Thread(target=run)
    thread.start()

    def spawned() -> list:
        return sorted((p for p in multiprocessing.active_children()
                       if p not in before and p.name.startswith("streamskew-worker-")),
                      key=lambda p: p.name)

    wait_until(lambda: len(spawned()) == 2, 60, lambda: f"workers: {spawned()}", every_s=0.05)
    workers = spawned()
    os.kill(workers[1].pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the other worker was not stopped"
    assert len(outcome) == 1 and isinstance(outcome[0], WorkerError)
    assert f"worker 1: exited with code {-signal.SIGKILL}" in str(outcome[0])
    assert not workers[0].is_alive()


def test_sigterm_to_the_parent_stops_every_worker_cleanly(kafka_bootstrap, baseline,
                                                          tmp_path):
    name = unique("requests")
    create_topic(kafka_bootstrap, name)
    messages = skewed_stream(minutes=4)
    produce(kafka_bootstrap, name, messages)
    config = service_config(kafka_bootstrap, name, unique("term"))
    toml = write_config(tmp_path, kafka_bootstrap, name, config, baseline)
    process = subprocess.Popen([sys.executable, "-m", "streamskew.cli", "run", "--config",
                                str(toml), "--workers", "2"], stderr=subprocess.PIPE, text=True)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
        end = consumer.end_offsets([TopicPartition(name, p) for p in range(PARTITIONS)])
        consumer.close()

        def committed() -> dict:
            return committed_offsets(admin, config.kafka.group_id, name)

        def running() -> None:
            assert process.poll() is None, process.stderr.read()

        wait_until(lambda: committed() == end, 120,
                   lambda: f"offsets never reached the end: {committed()}", running)
        workers = _children(process.pid)
        assert len(workers) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert committed() == end
        assert f"records={len(messages)}" in process.stderr.read()
        assert not [pid for pid in workers if _alive(pid)], "a worker outlived the parent"
    finally:
        admin.close()
        if process.poll() is None:
            process.kill()


def _children(pid: int) -> list[int]:
    """The worker processes of ``pid`` (Linux /proc): spawned children, not multiprocessing's
    resource tracker (which exits on its own once the parent is gone)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    command = cmdline.read()
            except OSError:
                continue
            if int(fields[1]) == pid and b"spawn_main" in command:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # zombie: exited
    except OSError:
        return False
