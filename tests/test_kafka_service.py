"""`streamskew run` on a real broker: alerts, dead letters, consumer groups, shutdown."""

from __future__ import annotations

import threading

import orjson
import pytest

from streamskew import Detector
from streamskew.kafka.service import DetectorService

from .kafka_helpers import (
    create_topic,
    event_ids,
    produce,
    read_all,
    service_config,
    skewed_stream,
    training_baseline,
    unique,
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
