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
from kafka import KafkaConsumer, TopicPartition

from streamskew import Baseline, Config, Detector
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


def members(bootstrap: str, group: str) -> int:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return len(admin.describe_groups([group]).get(group, {}).get("members") or [])
    except Exception:  # the group is forming
        return 0
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


def test_broker_killed_with_labels_pending_is_waited_out(broker):
    """[labels] on: the broker is killed for 20 s while the join's committed checkpoint holds
    requests waiting for their labels, and the rest of the stream comes after it. The service
    stays up; the performance events are those of ``detect --labels`` over the same
    records, each published once, and the join's counts are exact."""
    from .performance_data import stream
    from .test_performance import _baseline, _expected_counts
    from .test_performance_kafka import (
        PARTITIONS,
        _detect,
        _labels_config,
        _pending_in_checkpoint,
        _performance,
        _published,
        produce_labels,
    )

    bootstrap = broker.bootstrap
    baseline = _baseline()
    st = stream(hours=4, bug_from=2.0, late_share=0.03, duplicate_share=0.02,
                unlabelled_share=0.05, orphans=40)
    requests, labels = unique("outage-requests"), unique("outage-labels")
    for name in (requests, labels):
        create_topic(bootstrap, name, PARTITIONS)
    # The first half, by time: requests are in time order, labels in arrival order.
    first = st.requests[:len(st.requests) // 2]
    middle = first[-1]["timestamp"]
    first_labels = st.labels[:next(i for i, r in enumerate(st.labels)
                                   if r["timestamp"] > middle)]
    produce(bootstrap, requests, [orjson.dumps(r) for r in first], PARTITIONS,
            transactional_id=unique("produce"))
    produce_labels(bootstrap, labels, first_labels)
    group = unique("outage-labels")
    config = _labels_config(bootstrap, requests, labels, group)
    running = Running(DetectorService(config, baseline, checkpoint_interval_s=0.5))
    wait_until(lambda: _pending_in_checkpoint(config, baseline) > 0, 120,
               lambda: "no committed checkpoint with pending requests", running.alive)
    broker.stop(kill=True)
    hold(20, running)
    broker.start(timeout=180)
    produce(bootstrap, requests, [orjson.dumps(r) for r in st.requests[len(first):]],
            PARTITIONS, transactional_id=unique("produce"))
    produce_labels(bootstrap, labels, st.labels[len(first_labels):])

    def read_through() -> bool:  # every record of both topics read and committed
        return (committed(bootstrap, group, requests) >= len(st.requests)
                and committed(bootstrap, group, labels) >= len(st.labels))

    wait_until(read_through, 240, lambda: "after the outage: not everything was committed",
               running.alive)
    # Either the service met the outage (and carried on from its checkpoint) or kafka-python
    # waited it out inside its own retries, when no transaction was open as the broker went:
    # both must give the events and counts below, and one CI run saw each.
    running.finish()
    rest = DetectorService(config, baseline, until_end=True)  # the windows the end makes final
    rest.run()
    published = _performance(_published(bootstrap, config))
    ids = [e["event_id"] for e in published]
    assert ids and len(ids) == len(set(ids)), "an event was published twice"
    assert sorted(ids) == event_ids(_performance(_detect(config, baseline, st).events))
    counts = rest.stats.labels
    assert counts is not None
    wanted = _expected_counts(st)
    assert {k: getattr(counts, k) for k in wanted} == wanted


# -- state of any size ---------------------------------------------------------------------------


def _largest_record(bootstrap: str, topic: str) -> int:
    return max((len(r.value or b"") + len(r.key or b"")
                + sum(len(k) + len(v or b"") for k, v in r.headers or [])
                for r in read_all(bootstrap, topic)), default=0)


def test_fifty_models_wide_records_and_a_huge_dead_letter(broker):
    """50 models on one topic (an evaluator checkpoint of several MB), records with 10,000
    keys, and a 1,048,399-byte bad record: no crash, the events of detect, and no record the
    service wrote is over Kafka's 1 MiB limit."""
    bootstrap = broker.bootstrap
    rng = np.random.default_rng(7)
    columns = {f"f{i:02d}": rng.lognormal(3, 0.5, 5_000).round(3).tolist() for i in range(20)}
    baseline = Baseline.from_columns(columns)
    messages = []
    for i in range(20_000):  # 16 minutes, 100 records of each model per 4-minute window
        shift = 3.0 if i >= 10_000 and i % 50 == 7 else 1.0  # model m07 drifts halfway
        features = {name: round(float(rng.lognormal(3, 0.5)) * shift, 3) for name in columns}
        if i % 70 == 0:  # a producer that sends 10,000 unknown keys
            features.update({f"extra_{k}": k for k in range(10_000)})
        messages.append(orjson.dumps({"timestamp": START + i * 48, "model": f"m{i % 50:02d}",
                                      "features": features}))
    messages.insert(500, b"{" + b" " * 1_048_397 + b"x")  # 1,048,399 bytes, not JSON
    topic = unique("big-state")
    create_topic(bootstrap, topic)
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=2_000_000)
    for i, message in enumerate(messages):
        producer.send(topic, message, partition=i % 6,
                      timestamp_ms=START + max(i - 1, 0) * 48)
    producer.flush()
    producer.close()
    config = service_config(bootstrap, topic, unique("big"),
                            client={"max_partition_fetch_bytes": 4 * 1024 * 1024})
    config = Config.from_dict({"window": {"size": "4m", "pane": "1m",
                                          "allowed_lateness": "2s"},
                               "detect": {"min_count": 80},
                               "kafka": {**{k: getattr(config.kafka, k) for k in (
                                   "bootstrap_servers", "group_id", "alerts_topic",
                                   "dlq_topic", "panes_topic", "state_topic")},
                                   "topics": [topic], **config.kafka.client}})
    service = DetectorService(config, baseline, until_end=True, checkpoint_interval_s=0.5)
    stats = service.run()
    assert stats.builders.records == len(messages) and stats.dead_letters == 1
    assert service.evaluator_stage.checkpoint_bytes > 1_048_576 // 4  # it really was big
    published = alert_ids(bootstrap, config)
    assert published and published == offline_ids(config, baseline, messages)
    events = [orjson.loads(r.value) for r in read_all(bootstrap, config.kafka.alerts_topic)]
    assert ("m07", "distribution") in {(e["model"], e["check"]) for e in events}
    # The models whose records carry 10,000 unknown keys say so (a schema event naming one
    # of the most frequent keys), and nothing else.
    wide = {e["model"] for e in events if e["model"] != "m07"}
    assert wide == {"m00", "m10", "m20", "m30", "m40"}
    assert all(e["metric"] == "new_feature" for e in events if e["model"] in wide)
    for written in (config.kafka.panes_topic, config.kafka.state_topic, config.kafka.dlq_topic):
        assert _largest_record(bootstrap, written) < 1_048_576, written
    [dead] = read_all(bootstrap, config.kafka.dlq_topic)
    headers = dict(dead.headers)
    assert headers["streamskew.original_size"] == b"1048399"
    assert headers["streamskew.truncated"] == b"true" and len(dead.value) == 512 * 1024


# -- deployments apart --------------------------------------------------------------------------


def test_two_deployments_with_default_topics_stay_apart(broker, baseline):
    """Two groups on one cluster, same model name, internal topics left to their defaults:
    each gives exactly what detect gives on its own stream."""
    bootstrap = broker.bootstrap
    runs = []
    for seed in (11, 12):
        topic, group = unique("apart"), unique("deployment")
        create_topic(bootstrap, topic)
        messages = skewed_stream(minutes=12, seed=seed, shift_from=6 if seed == 11 else 99)
        produce(bootstrap, topic, messages)
        config = Config.from_dict({
            "window": {"size": "4m", "pane": "1m", "allowed_lateness": "2s"},
            "detect": {"min_count": 300},
            "kafka": {"bootstrap_servers": bootstrap, "topics": [topic], "group_id": group}})
        assert config.kafka.panes_topic == f"{group}.panes"
        runs.append((config, messages, Running(DetectorService(config, baseline,
                                                               until_end=True))))
    for config, messages, running in runs:
        running.thread.join(240)
        assert running.error is None and running.stats is not None
        assert running.stats.builders.records == len(messages)
        assert alert_ids(bootstrap, config) == offline_ids(config, baseline, messages)
    assert alert_ids(bootstrap, runs[0][0]) and not alert_ids(bootstrap, runs[1][0])


def test_three_plain_run_processes_on_one_host(broker, baseline, tmp_path):
    """`streamskew run` started three times with one config on one host (each takes a slot
    of its own), one killed with -9 and started again (it takes the freed slot): nobody is
    fenced out, and the events are detect's."""
    bootstrap = broker.bootstrap
    topic, group = unique("plain"), unique("plain")
    create_topic(bootstrap, topic)
    messages = skewed_stream(minutes=16)
    first, second = messages[:len(messages) // 2], messages[len(messages) // 2:]
    produce(bootstrap, topic, first)
    config = service_config(bootstrap, topic, group)
    toml = write_config(tmp_path, bootstrap, topic, config, baseline)
    env = {**os.environ, "STREAMSKEW_RUNTIME_DIR": str(tmp_path / "slots")}
    command = [sys.executable, "-m", "streamskew.cli", "-q", "run", "--config", str(toml),
               "--checkpoint-interval", "500ms"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)

    processes = [start() for _ in range(3)]

    def all_up() -> None:
        for process in processes:
            assert process.poll() is None, f"a run exited: {process.stderr.read()}"

    wait_until(lambda: committed(bootstrap, group, topic) >= len(first), 120,
               lambda: "the first half was not consumed", all_up)
    processes[1].send_signal(signal.SIGKILL)
    processes[1].wait(30)
    # The group counts the dead member until its session times out (10 s); once it is gone,
    # the restarted process is the third member (and has taken the dead one's slot).
    wait_until(lambda: members(bootstrap, group) == 2, 60,
               lambda: "the killed member never left the group")
    processes[1] = start()
    wait_until(lambda: members(bootstrap, group) == 3, 120,
               lambda: f"{members(bootstrap, group)} of 3 processes in the group", all_up)
    produce(bootstrap, topic, second)
    wait_until(lambda: committed(bootstrap, group, topic) >= len(messages), 180,
               lambda: f"{committed(bootstrap, group, topic)} of {len(messages)} committed",
               all_up)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for index, process in enumerate(processes):
        code, said = process.wait(60), process.stderr.read()
        assert code == 0, f"process {index} exited with {code}: {said}"
        assert "Fenced" not in said
    DetectorService(config, baseline, until_end=True).run()  # the end of input
    assert alert_ids(bootstrap, config) == offline_ids(config, baseline, messages)


def test_slots_are_unique_among_live_processes_and_reused_after_one_dies(tmp_path):
    first, second = Slot.take("g", tmp_path), Slot.take("g", tmp_path)
    assert {first.number, second.number} == {0, 1}
    assert first.transactional_id() != second.transactional_id()
    code = ("import sys, time; from streamskew.kafka.slots import Slot; "
            f"s = Slot.take('g', {str(tmp_path)!r}); print(s.number, flush=True); "
            "time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "2"
    child.kill()  # kill -9: the OS drops its lock
    child.wait()
    assert Slot.take("g", tmp_path).number == 2
    assert Slot.take("other-group", tmp_path).number == 0
    assert first.transactional_id("configured") == "configured"
    assert second.transactional_id("configured") == "configured-1"


# -- clear, bounded failures -----------------------------------------------------------------------


def _scram_toml(tmp_path: Path, bootstrap: str, topic: str, group: str,
                baseline: Baseline, password_env: str = "KAFKA_PASSWORD") -> Path:
    """The usual test config, reaching the broker through its SCRAM listener."""
    config = Config.from_dict({"kafka": {"group_id": group}})
    return write_config(tmp_path, bootstrap, topic, config, baseline, extra_kafka=f"""\
security_protocol = "SASL_PLAINTEXT"
sasl_mechanism = "SCRAM-SHA-512"
sasl_plain_username = "{USER}"
sasl_plain_password = "${{{password_env}}}"
bootstrap_timeout_ms = 5000
""")


def _cli(args: list[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamskew.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def test_scram_right_credentials_work_for_run_alerts_and_replay(broker, baseline, tmp_path):
    topic, group = unique("scram"), unique("scram")
    create_topic(broker.bootstrap, topic)
    messages = skewed_stream(minutes=12)
    produce(broker.bootstrap, topic, messages)
    toml = _scram_toml(tmp_path, broker.sasl_bootstrap, topic, group, baseline)
    env = {**os.environ, "KAFKA_PASSWORD": PASSWORD}
    run = _cli(["run", "--config", str(toml), "--until-end"], env, 240)
    assert run.returncode == 0, run.stderr
    alerts = _cli(["alerts", "--config", str(toml), "--json"], env, 120)
    assert alerts.returncode == 0, alerts.stderr
    published = [orjson.loads(line) for line in alerts.stdout.splitlines()]
    config = Config.from_dict({"window": {"size": "4m", "pane": "1m",
                                          "allowed_lateness": "2s"},
                               "detect": {"min_count": 300}})
    assert event_ids(published) == offline_ids(config, baseline, messages)
    replay = _cli(["replay", "--config", str(toml), "--from", str(START)], env, 240)
    assert replay.returncode == 0, replay.stderr
    replayed = [orjson.loads(line) for line in replay.stdout.splitlines()]
    assert event_ids(replayed) == event_ids(published)
    for output in (run, alerts, replay):
        assert PASSWORD not in output.stdout + output.stderr


@pytest.mark.parametrize("command", [["run"], ["alerts"], ["replay", "--from", "-1h"]])
def test_a_wrong_password_is_one_line_within_the_bound(broker, baseline, tmp_path, command):
    toml = _scram_toml(tmp_path, broker.sasl_bootstrap, unique("t"), unique("g"), baseline)
    wrong = "not-the-password-1234"
    env = {**os.environ, "KAFKA_PASSWORD": wrong}
    # The bound is bootstrap_timeout_ms (5 s in that file); the rest is start-up, generous.
    result = _cli([command[0], "--config", str(toml), *command[1:]], env, timeout_s=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and "SASL authentication" in lines[0]
    assert "SCRAM-SHA-512" in lines[0] and USER in lines[0]
    assert wrong not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_run_against_a_closed_port_is_one_line_within_the_bound(tmp_path, baseline):
    from streamskew.kafka.local import free_port

    port = free_port()
    toml = write_config(tmp_path, f"127.0.0.1:{port}", "requests",
                        Config.from_dict({"kafka": {"group_id": "g"}}), baseline,
                        extra_kafka="bootstrap_timeout_ms = 3000")
    result = _cli(["run", "--config", str(toml)], dict(os.environ), timeout_s=60)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: run: no Kafka broker answered at 127.0.0.1:{port} within 3s "
                     "(bootstrap_timeout_ms 3000): is it running, and is the address right? "
                     "Set bootstrap_servers in [kafka] or pass --bootstrap-servers"]


# -- backfills that vanish ------------------------------------------------------------------------


def test_records_deleted_before_they_were_read_are_reported(broker, baseline):
    """The broker's low watermark moves past the committed offsets (retention deleted
    records nobody read): the run says how many, instead of reporting success."""
    from kafka import KafkaAdminClient

    bootstrap = broker.bootstrap
    topic, group = unique("deleted"), unique("deleted")
    create_topic(bootstrap, topic)
    messages = skewed_stream(minutes=8)
    produce(bootstrap, topic, messages[:3000])
    config = service_config(bootstrap, topic, group)
    running = Running(DetectorService(config, baseline))
    wait_until(lambda: committed(bootstrap, group, topic) >= 3000, 90, lambda: "not consumed",
               running.alive)
    running.finish()
    produce(bootstrap, topic, messages[3000:])
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        ends = KafkaConsumer(bootstrap_servers=bootstrap).end_offsets(
            [TopicPartition(topic, p) for p in range(6)])
        admin.delete_records({tp: end - 100 for tp, end in ends.items()})
    finally:
        admin.close()
    lost = (len(messages) - 3000) - 6 * 100
    stats = DetectorService(config, baseline, until_end=True).run()
    assert stats.deleted_unread == {topic: lost}
    assert any(f"{topic}/" in w and "deleted by the broker before they were read" in w
               for w in stats.warnings)


def test_records_older_than_the_topics_retention_are_a_warning(broker, baseline, caplog):
    bootstrap = broker.bootstrap
    topic = unique("old")
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:  # the broker's default retention (7 days); the records are a year older
        admin.create_topics({topic: {"num_partitions": 2}}, wait_for_metadata=True)
    finally:
        admin.close()
    produce(bootstrap, topic, skewed_stream(minutes=2), partitions=2)
    config = service_config(bootstrap, topic, unique("old"))
    stats = DetectorService(config, baseline, until_end=True).run()
    [warning] = stats.warnings
    assert warning.startswith(f"topic {topic} holds records stamped") and "retention.ms" in warning
