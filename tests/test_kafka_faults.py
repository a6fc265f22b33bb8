"""Deployments that stay up and apart, on a real broker of their own: a broker killed or
paused mid-run, state far over Kafka's record limit, two deployments on one cluster, several
plain processes on one host, SCRAM authentication.

Every test compares the event ids it gets with an uninterrupted reference over the same
produced stream (``detect`` over the same messages, which the service is already proven to
equal), and counts records once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, TopicPartition

from streamskew import Baseline, Config, Detector
from streamskew.cli import main
from streamskew.kafka.local import LocalKafka, LocalKafkaError
from streamskew.kafka.service import DetectorService
from streamskew.kafka.slots import Slot

from .conftest import _kafka_unavailable
from .kafka_helpers import (
    START,
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

USER, PASSWORD = "streamskew", "right-horse-battery-staple"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A broker these tests may kill, pause and restart (the session's one is shared), with
    a SCRAM listener for the authentication tests."""
    kafka = LocalKafka(port=0, directory=tmp_path_factory.mktemp("fault-kafka"),
                       scram=(USER, PASSWORD))
    try:
        kafka.start(timeout=180)
    except LocalKafkaError as exc:
        _kafka_unavailable(str(exc))
    yield kafka
    kafka.stop(timeout=60)


def offline_ids(config: Config, baseline: Baseline, messages: list[bytes]) -> list[str]:
    detector = Detector(config, baseline)
    return event_ids(detector.process(messages) + detector.flush())


def alert_ids(bootstrap: str, config: Config) -> list[str]:
    return event_ids(orjson.loads(r.value) for r in read_all(bootstrap, config.kafka.alerts_topic))


def committed(bootstrap: str, group: str, topic: str) -> int:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return sum(committed_offsets(admin, group, topic).values())
    finally:
        admin.close()


class Running:
    """``service.run(stop)`` in a thread, with what it raised."""

    def __init__(self, service: DetectorService) -> None:
        self.service = service
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.stats = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.stats = self.service.run(self.stop)
        except BaseException as exc:  # surfaced by alive() and finish()
            self.error = exc

    def alive(self) -> None:
        assert self.error is None, f"the service failed: {self.error!r}"
        assert self.thread.is_alive(), "the service stopped"

    def finish(self, timeout_s: float = 120):
        self.stop.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the service did not stop"
        assert self.error is None, f"the service failed: {self.error!r}"
        return self.stats


def hold(seconds: float, running: Running) -> None:
    """Keep the fault in place for ``seconds`` (the fault's duration is the scenario),
    checking all along that the service is still up."""
    deadline = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() >= deadline, seconds + 5, lambda: "unreachable",
               running.alive, every_s=0.5)


def _outage(broker: LocalKafka, baseline: Baseline, fault) -> None:
    bootstrap = broker.bootstrap
    topic = unique("outage")
    create_topic(bootstrap, topic)
    messages = skewed_stream(minutes=16)
    first, second = messages[:len(messages) // 2], messages[len(messages) // 2:]
    produce(bootstrap, topic, first)
    group = unique("outage")
    config = service_config(bootstrap, topic, group)
    running = Running(DetectorService(config, baseline, checkpoint_interval_s=0.5))
    wait_until(lambda: committed(bootstrap, group, topic) >= len(first), 90,
               lambda: "the first half was not consumed", running.alive)
    fault(running)
    produce(bootstrap, topic, second)
    wait_until(lambda: committed(bootstrap, group, topic) >= len(messages), 240,
               lambda: f"after the fault: {committed(bootstrap, group, topic)} of "
                       f"{len(messages)} committed", running.alive)
    stats = running.finish()
    assert stats.kafka_errors, "the fault should have been seen (and waited out)"
    # The rest of the windows: the end of input, in the same group, from its checkpoints.
    rest = DetectorService(config, baseline, until_end=True).run()
    assert stats.builders.records + rest.builders.records == len(messages)
    assert alert_ids(bootstrap, config) == offline_ids(config, baseline, messages)


def test_broker_killed_for_30s_is_waited_out(broker, baseline):
    def kill_and_restart(running: Running) -> None:
        broker.stop(kill=True)
        hold(30, running)
        broker.start(timeout=180)

    _outage(broker, baseline, kill_and_restart)


def test_broker_paused_for_60s_is_waited_out(broker, baseline):
    def pause(running: Running) -> None:
        pid = broker.status()["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            hold(60, running)
        finally:
            os.kill(pid, signal.SIGCONT)

    _outage(broker, baseline, pause)
