"""Several evaluators on a real broker: models spread over the panes partitions."""

from __future__ import annotations

import threading

import numpy as np
import orjson
import pytest

from streamskew import Detector
from streamskew.kafka.evaluators import panes_partition
from streamskew.kafka.service import DetectorService

from .kafka_helpers import (
    START,
    create_topic,
    event_ids,
    produce,
    read_all,
    service_config,
    unique,
    wait_until,
)

pytestmark = pytest.mark.kafka

MODELS = ("fraud", "ads", "churn", "search", "pricing", "eta")


def many_models_stream(minutes: int = 12, per_second: int = 4) -> list[bytes]:
    """Requests of six models in event-time order; each model's amounts triple from its own
    minute on (two models never shift)."""
    rng = np.random.default_rng(7)
    shifts = {"fraud": 5, "ads": 7, "churn": 9, "search": 6, "pricing": None, "eta": None}
    step = 1000 // per_second
    messages = []
    for i in range(minutes * 60 * per_second):
        t = START + i * step
        for model in MODELS:
            shift = shifts[model]
            scale = 3.0 if shift is not None and t >= START + shift * 60_000 else 1.0
            messages.append(orjson.dumps({
                "request_id": f"{model}-{i}", "timestamp": t, "model": model,
                "features": {"amount": round(float(rng.lognormal(3, 0.5)) * scale, 3),
                             "country": str(rng.choice(["DE", "FR", "US", "NL"]))}}))
    return messages


@pytest.fixture(scope="module")
def models_topic(kafka_bootstrap):
    name = unique("models")
    create_topic(kafka_bootstrap, name)
    stream = many_models_stream()
    produce(kafka_bootstrap, name, stream)
    return name, stream


def _ids_on(bootstrap: str, topic: str) -> list[str]:
    return event_ids(orjson.loads(r.value) for r in read_all(bootstrap, topic))


def test_three_evaluators_give_the_same_events_as_one(kafka_bootstrap, models_topic, baseline):
    name, stream = models_topic
    spread = {panes_partition(model, 3) for model in MODELS}
    assert spread == {0, 1, 2}  # the six models land on every partition

    single = service_config(kafka_bootstrap, name, unique("one-evaluator"))
    one = DetectorService(single, baseline, until_end=True)
    one.run()
    alone = [orjson.loads(r.value) for r in read_all(kafka_bootstrap, single.kafka.alerts_topic)]
    detector = Detector(single, baseline)
    offline = detector.process(stream) + detector.flush()
    assert {e.model for e in offline if e.type == "skew_detected"} == \
        {"fraud", "ads", "churn", "search"}
    assert event_ids(alone) == event_ids(offline)

    # Three live processes, each owning one panes partition before the records come (else
    # the first to join may judge everything before the others are given a partition).
    fresh = unique("models-live")
    create_topic(kafka_bootstrap, fresh)
    shared = service_config(kafka_bootstrap, fresh, unique("three-evaluators"),
                            {"panes_partitions": 3})
    assert shared.kafka.panes_partitions == 3
    stop = threading.Event()
    services = [DetectorService(shared, baseline) for _ in range(3)]
    errors: list[BaseException] = []

    def run(service: DetectorService) -> None:
        try:
            service.run(stop)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in services]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: sorted(len(s.evaluator_stage.stages) for s in services) == [1, 1, 1],
                   120, lambda: "the three processes never owned one panes partition each",
                   lambda: None if not errors else pytest.fail(repr(errors)))
        produce(kafka_bootstrap, fresh, stream)
        # Live, the newest pane stays open (no end of input): every window that ends by
        # then is judged, the same as in the run to the end.
        last_pane_start = START + 11 * 60_000
        live = event_ids(e for e in offline if e.window_end <= last_pane_start)
        assert len({e.model for e in offline if e.window_end <= last_pane_start}) == 4
        wait_until(lambda: _ids_on(kafka_bootstrap, shared.kafka.alerts_topic) == live, 180,
                   lambda: f"alerts {_ids_on(kafka_bootstrap, shared.kafka.alerts_topic)} "
                           f"!= {live}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and errors == []
    assert _ids_on(kafka_bootstrap, shared.kafka.alerts_topic) == live  # none twice
    judged = [s.stats.windows for s in services]
    assert all(judged), judged  # each process judged its partition's models


def test_every_panes_partition_has_its_own_checkpoint(kafka_bootstrap, models_topic, baseline):
    name, _ = models_topic
    group = unique("checkpoints")
    config = service_config(kafka_bootstrap, name, group, {"panes_partitions": 3})
    service = DetectorService(config, baseline, until_end=True)
    service.run()
    keys = {r.key for r in read_all(kafka_bootstrap, config.kafka.state_topic)
            if r.key.startswith(b"evaluator/") and b"/part/" not in r.key}
    assert keys == {f"evaluator/{group}/{p}".encode() for p in range(3)}
    panes = read_all(kafka_bootstrap, config.kafka.panes_topic)
    for record in panes:
        header = orjson.loads(record.value.partition(b"\n")[0])
        if header["kind"] == "pane":  # a model's panes go to its partition only
            assert record.partition == panes_partition(header["model"], 3)
    assert {r.partition for r in panes} == {0, 1, 2}
