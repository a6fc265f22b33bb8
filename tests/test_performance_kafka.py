"""Performance skew in the Kafka service, on a real broker: the label join in the evaluator.

The CPS1988 setup of tests/test_performance.py (a logistic regression trained here on the
wage table; requests and labels from held-out rows, labels delayed by an exponential delay
of mean 10 minutes, some late, some twice, some never, plus labels of requests that never
existed). Requests go round-robin to a 3-partition topic, labels in their arrival order
(jittered, out of order) to another 3-partition topic, keyed by request id: a label's
partition has nothing to do with its request's, as in production.

Every run is compared with ``detect --labels`` over the same records (the Detector, which
tests/test_performance.py checks against scikit-learn): the same performance events, by
event id, and the join's counts exact.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer

from streamskew import Config, Detector
from streamskew.kafka.service import DetectorService
from streamskew.kafka.topics import TopicSpec, ensure_topics, internal_topics
from streamskew.kafka.workers import run_workers

from .kafka_helpers import (
    KEEP,
    config_file,
    create_topic,
    event_ids,
    produce,
    read_all,
    unique,
    wait_until,
)
from .performance_data import CONFIG, T0, interleaved, stream
from .test_performance import _baseline, _expected_counts

pytest.importorskip("sklearn")
pytestmark = pytest.mark.kafka

HOUR = 3_600_000
PARTITIONS = 3
PERFORMANCE_CHECKS = ("performance", "estimated_performance")


@pytest.fixture(scope="module")
def classifier_baseline():
    return _baseline()


def _labels_config(bootstrap: str, requests: str, labels: str, group: str,
                   **overrides: object) -> Config:
    """CONFIG of tests/performance_data.py, on Kafka; internal topics kept without a time
    limit (see kafka_helpers.KEEP)."""
    config = Config.from_dict({
        **CONFIG,
        "labels": {**CONFIG["labels"], "topic": labels, **overrides},
        "kafka": {"bootstrap_servers": bootstrap, "topics": [requests], "group_id": group},
    })
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        ensure_topics(admin, [TopicSpec(s.name, s.partitions, {**s.configs, **KEEP})
                              for s in internal_topics(config.kafka)])
    finally:
        admin.close()
    return config


def _produce(bootstrap: str, st) -> tuple[str, str]:
    requests, labels = unique("requests"), unique("labels")
    for name in (requests, labels):
        create_topic(bootstrap, name, PARTITIONS)
    # Transactional (so idempotent): a retried batch can never be reordered within a
    # partition, and each partition holds its records in exactly the order sent.
    produce(bootstrap, requests, [orjson.dumps(r) for r in st.requests], PARTITIONS,
            transactional_id=unique("produce"))
    produce_labels(bootstrap, labels, st.labels)
    return requests, labels


def produce_labels(bootstrap: str, topic: str, records: list[dict]) -> None:
    """Labels keyed by request id (Kafka's default partitioner: a request's labels, a
    duplicate too, share a partition, in their order), stamped with their label time, in
    their arrival order (out of order), in one transaction."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             transactional_id=unique("labels"))
    producer.init_transactions()
    producer.begin_transaction()
    for record in records:
        producer.send(topic, key=str(record.get("request_id", "")).encode(),
                      value=record if isinstance(record, bytes) else orjson.dumps(record),
                      timestamp_ms=record.get("timestamp", T0))
    producer.commit_transaction()
    producer.close()


def _detect(config: Config, baseline, st) -> Detector:
    """``detect --labels`` on the same records: requests and labels interleaved by time."""
    detector = Detector(config, baseline)
    detector.events = []  # type: ignore[attr-defined]
    for kind, part in interleaved(st, 500):
        raw = [orjson.dumps(r) for r in part]
        new = detector.process_labels(raw) if kind == "labels" else detector.process(raw)
        detector.events += new  # type: ignore[attr-defined]
    detector.events += detector.flush()  # type: ignore[attr-defined]
    return detector


def _performance(events) -> list:
    return [e for e in events
            if (e["check"] if isinstance(e, dict) else e.check) in PERFORMANCE_CHECKS]


def _published(bootstrap: str, config: Config) -> list[dict]:
    return [orjson.loads(r.value) for r in read_all(bootstrap, config.kafka.alerts_topic)]


@pytest.fixture(scope="module")
def bug(kafka_bootstrap):
    """Four hours, education served as 12 from hour 2; labels late, twice, never, ghosts."""
    st = stream(hours=4, bug_from=2.0, late_share=0.03, duplicate_share=0.02,
                unlabelled_share=0.05, orphans=40)
    return st, *_produce(kafka_bootstrap, st)


def test_clean_serving_publishes_no_performance_event(kafka_bootstrap, classifier_baseline):
    st = stream(hours=4, seed=2)
    requests, labels = _produce(kafka_bootstrap, st)
    config = _labels_config(kafka_bootstrap, requests, labels, unique("clean"))
    stats = DetectorService(config, classifier_baseline, until_end=True).run()
    assert stats.builders.records == len(st.requests)
    assert _performance(_published(kafka_bootstrap, config)) == []
    assert _performance(_detect(config, classifier_baseline, st).events) == []


def test_a_preprocessing_bug_is_estimated_before_the_labels_and_realized_after(
        kafka_bootstrap, classifier_baseline, bug):
    st, requests, labels = bug
    config = _labels_config(kafka_bootstrap, requests, labels, unique("bug"))
    stats = DetectorService(config, classifier_baseline, until_end=True).run()
    published = _performance(_published(kafka_bootstrap, config))
    expected = _performance(_detect(config, classifier_baseline, st).events)
    assert {(e.check, e.metric) for e in expected if e.type == "skew_detected"} >= {
        ("estimated_performance", "accuracy"), ("performance", "accuracy")}
    # (d) the same events as detect --labels on the same records, each once
    assert event_ids(published) == event_ids(expected)
    assert len({e["event_id"] for e in published}) == len(published)
    raised = [e for e in published if e["type"] == "skew_detected"]
    assert min(e["window"]["end"] for e in raised) > T0 + 2 * HOUR  # nothing before the bug
    # Before the labels, then after: one key (model/prediction), so one alerts partition,
    # in the order published. The estimate fires at the first window holding the bug, and
    # is out before any realized event; the realized one carries the estimate beside it.
    records = [(r.partition, r.offset, orjson.loads(r.value))
               for r in read_all(kafka_bootstrap, config.kafka.alerts_topic)]
    mine = sorted((p, o, e) for p, o, e in records if e["check"] in PERFORMANCE_CHECKS
                  and e["type"] == "skew_detected")
    assert len({p for p, _, _ in mine}) == 1
    first_estimate = next(e for _, _, e in mine if e["check"] == "estimated_performance")
    first_realized = next(e for _, _, e in mine if e["check"] == "performance")
    assert first_estimate["window"]["end"] <= T0 + 2 * HOUR + 30 * 60_000
    assert mine[0][2]["check"] == "estimated_performance"
    ev = first_realized["evidence"]
    assert ev["realized"] < ev["reference"] and "estimated" in ev
    # (c) the join's counts, exact
    counts = stats.labels
    assert counts is not None
    wanted = _expected_counts(st)
    assert {k: getattr(counts, k) for k in wanted} == wanted
    assert counts.labels == len(st.labels) and counts.requests == len(st.requests)


def test_two_workers_publish_what_one_does(kafka_bootstrap, classifier_baseline, bug):
    st, requests, labels = bug
    config = _labels_config(kafka_bootstrap, requests, labels, unique("two"))
    stats = run_workers(config, classifier_baseline, 2, until_end=True)
    published = _performance(_published(kafka_bootstrap, config))
    expected = _performance(_detect(config, classifier_baseline, st).events)
    assert event_ids(published) == event_ids(expected) == event_ids(_performance(stats.events))


def test_bad_labels_are_dead_lettered_and_the_good_ones_used(kafka_bootstrap,
                                                            classifier_baseline):
    st = stream(hours=1, seed=3)
    requests, labels = _produce(kafka_bootstrap, st)
    broken = [b"not json", b'{"label": 1, "timestamp": 1764324000000}',
              b'{"request_id": "r-1", "timestamp": 1764324000000}']
    produce(kafka_bootstrap, labels, broken, PARTITIONS, transactional_id=unique("bad"))
    config = _labels_config(kafka_bootstrap, requests, labels, unique("badlabels"))
    stats = DetectorService(config, classifier_baseline, until_end=True).run()
    dead = read_all(kafka_bootstrap, config.kafka.dlq_topic)
    reasons = sorted(dict(r.headers)["streamskew.reason"].decode() for r in dead)
    assert reasons == ["invalid_json", "missing_label", "missing_request_id"]
    assert {r.value for r in dead} == set(broken)
    assert all(dict(r.headers)["streamskew.source.topic"] == labels.encode() for r in dead)
    counts = stats.labels
    assert counts is not None and counts.bad_labels == {"invalid_json": 1, "missing_label": 1,
                                 "missing_request_id": 1}
    assert counts.matched == _expected_counts(st)["matched"]


def test_kill_9_with_labels_pending_then_the_same_events_once(kafka_bootstrap,
                                                              classifier_baseline, bug,
                                                              tmp_path):
    """SIGKILL mid-run while the join holds pending requests and waiting labels; a fresh
    process finishes from the last committed checkpoint: the committed alerts are those of
    an uninterrupted run (detect --labels), each once (read_committed)."""
    st, requests, labels = bug
    group = unique("crash")
    config = _labels_config(kafka_bootstrap, requests, labels, group)
    toml = _toml(tmp_path, kafka_bootstrap, config, classifier_baseline,
                 extra_kafka="transaction_timeout_ms = 10000")
    process = subprocess.Popen([sys.executable, "-m", "streamskew.cli", "run", "--config",
                                str(toml), "--checkpoint-interval", "200ms"],
                               stderr=subprocess.DEVNULL)
    try:
        def running() -> None:
            assert process.poll() is None

        # Kill once the committed checkpoint holds requests waiting for their labels.
        wait_until(lambda: _pending_in_checkpoint(config, classifier_baseline) > 0, 180,
                   lambda: "no checkpoint with pending requests", running, 0.1)
        process.kill()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    # What the restart continues from: a join mid-way, requests waiting for labels.
    assert _pending_in_checkpoint(config, classifier_baseline) > 0
    service = DetectorService(config, classifier_baseline, until_end=True)
    _run(service, 300)
    published = _performance(_published(kafka_bootstrap, config))
    ids = [e["event_id"] for e in published]
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert sorted(ids) == event_ids(_performance(_detect(config, classifier_baseline,
                                                         st).events))
    counts = service.stats.labels
    assert counts is not None
    wanted = _expected_counts(st)
    assert {k: getattr(counts, k) for k in wanted} == wanted


def _pending_in_checkpoint(config: Config, baseline) -> int:
    """Requests the label join holds in the evaluator's last committed checkpoint (0 when
    there is none yet, or the join has finished)."""
    from streamskew.kafka.clients import consumer_settings
    from streamskew.kafka.state import CheckpointStore, EvaluatorCheckpoint, evaluator_key
    from streamskew.performance import PerformanceMonitor

    key = evaluator_key(config.kafka.group_id, 0)
    store = CheckpointStore(config.kafka.state_topic, config.kafka.group_id)
    value = store.read(consumer_settings(config.kafka), {key}).get(key)
    if value is None or not EvaluatorCheckpoint.decode(value).performance:
        return 0
    monitor = PerformanceMonitor(config, {"default": baseline})
    monitor.restore(EvaluatorCheckpoint.decode(value).performance)
    return 0 if monitor.join.finished else monitor.join.pending.live


def _run(service: DetectorService, timeout_s: float) -> None:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), "the service did not finish"
    assert errors == []


# -- what travels: the shipped arrays decide as the records do (no broker needed) ----------


@pytest.mark.parametrize("sample", [1.0, 0.3])
def test_shipped_arrays_give_the_events_and_counts_of_the_records(classifier_baseline,
                                                                  sample):
    """JoinFeed -> bytes (split small) -> PerformanceMonitor.add_*_keys equals the Detector
    fed the records themselves: same event ids, same join counts (dataclass equality)."""
    from streamskew.performance import PerformanceMonitor
    from streamskew.performance.shipping import JoinFeed, LabelArrays, RequestArrays

    st = stream(hours=3, bug_from=1.5, late_share=0.03, duplicate_share=0.02,
                unlabelled_share=0.05, orphans=40)
    config = Config.from_dict({**CONFIG, "labels": {**CONFIG["labels"], "sample": sample}})
    detector = Detector(config, classifier_baseline)
    monitor = PerformanceMonitor(config, {"default": classifier_baseline})
    feed = JoinFeed(config, {"default": classifier_baseline})
    expected, shipped = [], []
    for kind, part in interleaved(st, 500):
        raw = [orjson.dumps(r) for r in part]
        if kind == "labels":
            expected += detector.process_labels(raw)
            arrays, bad = feed.labels(raw)
            assert bad == []
            for piece in arrays.split(3000):  # several records per batch
                shipped += monitor.add_label_keys(LabelArrays.decode(piece.encode()), "l")
        else:
            expected += detector.process(raw)
            for piece in feed.requests(raw).split(3000):
                shipped += monitor.add_request_keys(RequestArrays.decode(piece.encode()), "r")
    expected += detector.flush()
    shipped += monitor.finish()
    assert _performance(expected), "the bug should fire"
    assert event_ids(_performance(expected)) == event_ids(shipped)
    assert detector.stats.labels == monitor.counts


def test_simple_label_batches_read_as_the_record_reader_reads_them(classifier_baseline):
    """The C-speed path for plain batches and LabelReader give the same arrays; a batch
    with anything unusual goes to LabelReader."""
    import numpy as np

    from streamskew.performance.shipping import JoinFeed

    st = stream(hours=1, duplicate_share=0.02, orphans=10)
    config = Config.from_dict({**CONFIG, "labels": {**CONFIG["labels"], "sample": 0.5}})
    feed = JoinFeed(config, {"default": classifier_baseline})
    for labels in ([orjson.dumps(r) for r in st.labels],
                   [orjson.dumps({**r, "label": "yes" if r["label"] else "no"})
                    for r in st.labels]):
        fast = feed._simple_labels(labels, None)
        slow_feed = JoinFeed(config, {"default": classifier_baseline})
        slow_feed._simple_labels = lambda *_: None  # type: ignore[method-assign]
        slow, bad = slow_feed.labels(labels)
        assert fast is not None and bad == []
        for name in ("times", "keys", "sampled", "values"):
            assert np.array_equal(getattr(fast, name), getattr(slow, name), equal_nan=True)
    assert feed._simple_labels([orjson.dumps(st.labels[0]), b"not json"], None) is None


_DROP = object()


def _odd_requests(t0: int) -> list[bytes]:
    """Requests the join must read exactly as the engine's decoder does, or not at all."""
    ok = {"request_id": "ok", "timestamp": t0, "model": "default", "features": {},
          "prediction": 0.5}

    def dump(**change: object) -> bytes:
        return orjson.dumps({k: v for k, v in {**ok, **change}.items() if v is not _DROP})

    return [
        b"not json", b"", b"\xff\xfe", b"[1, 2]", b'"a string"', b"3",
        b'"{\\"request_id\\": \\"in-a-string\\", \\"features\\": {}}"',  # JSON text in a string
        # NaN: the decoder uses the record (NaN-tolerant parse), strict JSON does not
        b'{"request_id": "nan", "timestamp": %d, "features": {"a": NaN}, "prediction": 0.5}'
        % t0,
        b'{"request_id": "inf", "timestamp": %d, "features": {}, "prediction": Infinity}' % t0,
        dump(request_id="big", features={"pad": "x" * 5000}),  # over max_bytes
        dump(request_id="no-features", features=_DROP), dump(features=3),
        dump(request_id="bad-time", timestamp="yesterday"), dump(timestamp=-5),
        dump(request_id="iso", timestamp="2025-11-28T10:00:00Z"),
        dump(request_id="no-time", timestamp=_DROP),  # the Kafka timestamp is its time
        dump(request_id=123), dump(request_id=12.0), dump(request_id=12.5), dump(request_id=""),
        dump(request_id=None), dump(request_id=True), dump(request_id=_DROP),
        dump(request_id="p-text", prediction="0.7"), dump(request_id="p-null", prediction=None),
        dump(request_id="p-bool", prediction=True), dump(request_id="p-big", prediction=7.5),
        dump(request_id="m-num", model=7), dump(request_id="m-null", model=None),
        dump(request_id="m-other", model="other"),
    ]


@pytest.mark.parametrize("variant", ["default", "versions", "flat"])
def test_requests_picked_from_the_decoders_parse_equal_those_read_from_the_bytes(
        classifier_baseline, variant):
    """What the source stage ships of a batch of requests, picked chunk by chunk from the
    engine decoder's own parse (``PaneBuilder.add(on_parsed=...)``), is byte for byte what
    ``JoinFeed.requests`` reads from the raw messages: on plain batches, on chunks with
    unreadable, NaN, oversized and odd messages (they fall back to one parse per message),
    with the Kafka timestamps standing in for missing times, and for mixed inputs."""
    import numpy as np

    from streamskew.detector.builder import PaneBuilder
    from streamskew.performance.shipping import JoinFeed

    raw_config = {**CONFIG, "message": {**CONFIG["message"], "max_bytes": 4096}}
    if variant == "versions":
        raw_config["message"]["model_version"] = "version"
        raw_config["labels"] = {**CONFIG["labels"], "prediction": "scores.p"}
    if variant == "flat":
        raw_config["message"]["features"] = ""
    config = Config.from_dict(raw_config)
    st = stream(hours=1)
    requests = [orjson.dumps({**r, "version": i % 3, "scores": {"p": r["prediction"]}})
                for i, r in enumerate(st.requests[:1700])]
    odd = _odd_requests(T0)
    batches = [
        requests[:1300],  # plain: three chunks, each parsed in one call
        requests[:600] + odd + requests[600:1200] + odd[::-1],  # odd ones in two chunks
        odd,
        requests[1300:1301],
    ]
    feed = JoinFeed(config, {"default": classifier_baseline})
    fields = ("times", "models", "codes", "values", "flags", "sampled_keys")
    for batch in batches:
        timestamps = [T0 + 7 * i for i in range(len(batch))]
        builder = PaneBuilder(config, {"default": classifier_baseline})
        chunks = feed.request_chunks()
        builder.add(batch, timestamps=timestamps, on_parsed=chunks)
        assert chunks.messages == len(batch)
        picked = feed.chunked_requests(chunks, timestamps)
        read = feed.requests(batch, timestamps)
        assert picked.models == read.models
        for name in fields[2:]:
            assert np.array_equal(getattr(picked, name), getattr(read, name),
                                  equal_nan=name == "values"), name
        assert np.array_equal(picked.times, read.times)
        assert picked.encode() == read.encode()
    # of the odd ones, the join keeps some (not the unreadable, NaN or oversized ones)
    kept = feed.requests(odd, [T0 + 1] * len(odd))
    assert 0 < len(kept) < len(odd) - 10
    # mixed input (dicts, text, bytes) goes through the decoder's object path
    mixed = [orjson.loads(requests[0]), requests[1].decode(), requests[2], *odd]
    builder = PaneBuilder(config, {"default": classifier_baseline})
    chunks = feed.request_chunks()
    builder.add(mixed, timestamps=list(range(len(mixed))), on_parsed=chunks)
    assert feed.chunked_requests(chunks, list(range(len(mixed)))).encode() == \
        feed.requests(mixed, list(range(len(mixed)))).encode()


# -- replay reads the labels topic too ------------------------------------------------------


def _toml(tmp_path, bootstrap: str, config: Config, baseline, extra_kafka: str = "") -> str:
    """The CLI's config file for ``config`` (CONFIG of tests/performance_data.py on Kafka);
    ``extra_kafka`` lines go at the end of the [kafka] section."""
    k = config.kafka
    return str(config_file(tmp_path, baseline, f'''[message]
model = "model"
[window]
size = "30m"
pane = "10m"
allowed_lateness = "30s"
[detect]
min_count = 200
[labels]
topic = "{config.labels.topic}"
max_delay = "1h"
min_labels = 200
[kafka]
bootstrap_servers = "{bootstrap}"
topics = ["{k.topics[0]}"]
group_id = "{k.group_id}"
{extra_kafka}'''))


def test_replay_over_requests_and_labels_equals_the_live_run(kafka_bootstrap,
                                                             classifier_baseline, bug):
    """The whole range: the same events (skew and performance, by id) as `run --until-end`
    over the same topics, and the join's counts equal (every field)."""
    from streamskew.kafka.replay import replay

    st, requests, labels = bug
    config = _labels_config(kafka_bootstrap, requests, labels, unique("live"))
    stats = DetectorService(config, classifier_baseline, until_end=True).run()
    published = _published(kafka_bootstrap, config)
    result = replay(config, classifier_baseline, T0)
    assert _performance(published), "the bug should fire"
    assert event_ids(_performance(result.events)) == event_ids(_performance(published))
    assert event_ids(result.events) == event_ids(published)
    assert result.labels is not None and stats.labels is not None
    assert result.labels == stats.labels
    assert result.records == len(st.requests) and result.label_records == len(st.labels)
    assert result.labels_outside_range == 0


def test_replay_of_a_sub_range_equals_detect_with_labels_over_it(kafka_bootstrap,
                                                                classifier_baseline, bug):
    """Requests of [1h, 3h) with the labels of replay.label_range ([1h, 3h + 2 max_delay +
    allowed_lateness)): the events and join counts of `detect --labels` over those
    records."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from streamskew.kafka.replay import label_range, replay

    st, requests, labels = bug
    config = _labels_config(kafka_bootstrap, requests, labels, unique("sub"))
    start, end = T0 + HOUR, T0 + 3 * HOUR
    low, high = label_range(config, start, end)
    assert high == end + 2 * HOUR + 30_000
    inside = [r for r in st.requests if start <= r["timestamp"] < end]
    in_range = [r for r in st.labels if low <= r["timestamp"] < high]
    assert len(in_range) < len(st.labels)  # labels are cut at both ends
    reference = _detect(config, classifier_baseline,
                        SimpleNamespace(requests=inside, labels=in_range))
    result = replay(config, classifier_baseline, start, end)
    expected = reference.events  # type: ignore[attr-defined]
    assert _performance(expected), "the bug (from 2h) should fire within the range"
    assert event_ids(result.events) == event_ids(expected)
    assert all(start < e.window_end <= end for e in result.events)
    # The counts, exact; but a second label of a request that never comes (here: of the
    # requests just outside the range) is a `duplicate` while the first still waits, and
    # `without_request` once the request watermark has passed the first: that depends on
    # how the two topics interleave, so only the sum of the two is fixed.
    got, want = asdict(result.labels), asdict(reference.stats.labels)
    either = ("duplicate", "without_request")
    assert {k: v for k, v in got.items() if k not in either} == \
        {k: v for k, v in want.items() if k not in either}
    assert sum(got[k] for k in either) == sum(want[k] for k in either)
    assert result.labels_outside_range > 0  # read (by offset) but out of the label range
    # Every label of the range's requests was read: their counts equal a detect fed only
    # those requests' own labels, all of them.
    ids = {r["request_id"] for r in inside}
    own = _detect(config, classifier_baseline, SimpleNamespace(
        requests=inside, labels=[r for r in st.labels if r["request_id"] in ids]))
    counted = ("matched", "late", "unlabelled", "sampled", "requests")
    assert {k: got[k] for k in counted} == {k: getattr(own.stats.labels, k) for k in counted}
    assert got["late"] > 0 and got["matched"] > 0


def test_replay_with_an_empty_labels_topic_judges_drift_and_says_unmatched(
        kafka_bootstrap, classifier_baseline, bug, tmp_path):
    """`replay --publish --report` with [labels] on an empty labels topic: exit 0, skew
    and estimated-performance events published and drawn, no realized one, and every
    request counted unlabelled; a labels topic that does not exist is one line."""
    from click.testing import CliRunner

    from streamskew.cli import main

    st, requests, _ = bug
    empty = unique("nolabels")
    create_topic(kafka_bootstrap, empty, PARTITIONS)
    config = _labels_config(kafka_bootstrap, requests, empty, unique("empty"))
    toml = _toml(tmp_path, kafka_bootstrap, config, classifier_baseline)
    report = tmp_path / "r.html"
    runner = CliRunner()
    result = runner.invoke(main, ["replay", "--config", toml, "--from", str(T0),
                                  "--publish", "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "labels=0 matched=0" in result.stderr
    assert f"requests sampled={len(st.requests)} unlabelled={len(st.requests)}" \
        in result.stderr
    published = _published(kafka_bootstrap, config)
    checks = {e["check"] for e in published if e["type"] == "skew_detected"}
    assert "distribution" in checks and "estimated_performance" in checks
    assert "performance" not in checks
    html = report.read_text()
    assert 'class="performance"' in html and "estimated_performance" in html

    missing = _toml(tmp_path, kafka_bootstrap, Config.from_dict({
        **CONFIG, "labels": {**CONFIG["labels"], "topic": unique("absent")},
        "kafka": {"bootstrap_servers": kafka_bootstrap, "topics": [requests],
                  "group_id": unique("absent")}}), classifier_baseline)
    failed = runner.invoke(main, ["replay", "--config", missing, "--from", str(T0)])
    assert failed.exit_code == 1
    assert "no labels topic to read" in failed.stderr and "Traceback" not in failed.output
    assert len(failed.stderr.strip().splitlines()) == 1


def test_selected_arrays_equal_the_arrays_of_the_selected_records(classifier_baseline):
    """RequestArrays/LabelArrays.select (a replay's time range) give exactly what JoinFeed
    makes of the selected records alone, sampled keys included (sample 0.5: some rows are
    not sampled)."""
    import numpy as np

    from streamskew.performance.shipping import JoinFeed

    st = stream(hours=1, duplicate_share=0.02)
    config = Config.from_dict({**CONFIG, "labels": {**CONFIG["labels"], "sample": 0.5}})
    feed = JoinFeed(config, {"default": classifier_baseline})
    requests = [orjson.dumps(r) for r in st.requests]
    labels = [orjson.dumps(r) for r in st.labels]
    rows = np.random.default_rng(4).random(len(requests)) < 0.4
    picked = feed.requests(requests).select(rows)
    alone = feed.requests([m for m, keep in zip(requests, rows, strict=True) if keep])
    for name in ("times", "codes", "values", "flags", "sampled_keys", "keys"):
        assert np.array_equal(getattr(picked, name), getattr(alone, name), equal_nan=True)
    label_rows = np.random.default_rng(5).random(len(labels)) < 0.4
    arrays, _ = feed.labels(labels)
    chosen = arrays.select(label_rows)
    single, _ = feed.labels([m for m, keep in zip(labels, label_rows, strict=True) if keep])
    for name in ("times", "sampled", "sampled_keys", "sampled_values", "keys"):
        assert np.array_equal(getattr(chosen, name), getattr(single, name), equal_nan=True)
    assert 0 < picked.sampled_keys.size < len(picked)
