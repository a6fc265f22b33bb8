"""The baseline registry on a real broker: publish, list, replace, retire, follow."""

from __future__ import annotations

import dataclasses
import logging
import threading

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaProducer

from streamskew import Baseline, Config
from streamskew.cli import main
from streamskew.detector.models import ModelBaselines
from streamskew.kafka.registry import (
    BaselineRegistry,
    RegistryFollower,
    entry_key,
)
from streamskew.kafka.service import DetectorService
from streamskew.records import identity_key

from .kafka_helpers import (
    START,
    create_topic,
    produce,
    read_all,
    service_config,
    training_baseline,
    unique,
    wait_until,
)

pytestmark = pytest.mark.kafka


def _config(bootstrap: str) -> Config:
    group = unique("registry")
    return Config.from_dict({"kafka": {"bootstrap_servers": bootstrap, "group_id": group}})


def _wide_baseline(features: int, seed: int = 3) -> Baseline:
    rng = np.random.default_rng(seed)
    return Baseline.from_columns({f"f{i:03d}": rng.normal(i, 1 + i % 7, 5_000).tolist()
                                  for i in range(features)})


def test_publish_list_replace_and_retire(kafka_bootstrap):
    config = _config(kafka_bootstrap)
    registry = BaselineRegistry(config.kafka, part_bytes=16 * 1024)
    assert registry.topic == f"{config.kafka.group_id}.baselines"
    small, wide = training_baseline(1), _wide_baseline(40)
    first = registry.publish(small, "fraud", "v1")
    second = registry.publish(wide, "fraud", "v2")
    assert first.parts == 1 and second.parts > 1  # cut into parts under part_bytes
    entries = registry.entries()
    assert sorted(entries) == [("fraud", "v1"), ("fraud", "v2")]
    # every bin edge and count back, exactly
    assert entries[("fraud", "v2")].baseline.to_json() == wide.to_json()
    assert entries[("fraud", "v1")].baseline.id == small.id

    replaced = registry.publish(training_baseline(2), "fraud", "v1")
    entries = registry.entries()
    assert entries[("fraud", "v1")].baseline.id == replaced.baseline.id != small.id

    registry.retire("fraud", "v1")
    assert sorted(registry.entries()) == [("fraud", "v2")]
    with pytest.raises(Exception, match="not registered"):
        registry.retire("fraud", "v9")


def test_a_manifest_without_its_parts_is_skipped_and_the_previous_kept(kafka_bootstrap,
                                                                        caplog):
    config = _config(kafka_bootstrap)
    registry = BaselineRegistry(config.kafka)
    kept = registry.publish(training_baseline(1), "ads", "")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    broken = {"format": "streamskew.baseline/v1", "publication": "gone", "parts": 2,
              "sha256": "0" * 64, "size": 10}
    producer.send(registry.topic, key=entry_key("ads", ""), value=orjson.dumps(broken))
    producer.send(registry.topic, key=b"not a registry key", value=b"x")
    producer.flush()
    producer.close()
    with caplog.at_level(logging.WARNING, logger="streamskew.kafka.registry"):
        entries = registry.entries()
    assert entries[("ads", "")].baseline.id == kept.baseline.id
    assert "cannot be read (parts missing)" in caplog.text
    assert "not a registry record" in caplog.text


def test_a_follower_sees_what_is_published_after_it_started(kafka_bootstrap):
    config = _config(kafka_bootstrap)
    registry = BaselineRegistry(config.kafka, part_bytes=8 * 1024)
    registry.publish(training_baseline(1), "m", "a")
    follower = RegistryFollower(config.kafka)
    try:
        assert [(e.model, e.version) for e in follower.start()] == [("m", "a")]
        assert follower.poll() == []
        wide = _wide_baseline(20)
        registry.publish(wide, "m", "b")
        seen: list = []
        wait_until(lambda: bool(seen.extend(follower.poll()) or seen), 30,
                   lambda: "the follower never saw the new baseline")
        assert [(e.model, e.version, e.baseline.id) for e in seen] == [("m", "b", wide.id)]
        assert set(follower.entries) == {("m", "a"), ("m", "b")}
    finally:
        follower.close()


def test_cli_publish_and_list(kafka_bootstrap, tmp_path):
    group = unique("registry-cli")
    toml = tmp_path / "streamskew.toml"
    toml.write_text(f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\ngroup_id = "{group}"\n')
    runner = CliRunner()
    empty = runner.invoke(main, ["baseline", "list", "--config", str(toml)])
    assert empty.exit_code == 0, empty.output
    assert "no baselines registered" in empty.output

    wide = _wide_baseline(300)  # JSON over Kafka's default 1 MiB record limit
    path = tmp_path / "wide.json"
    wide.save(path)
    assert path.stat().st_size > 1024 * 1024
    published = runner.invoke(main, ["baseline", "publish", str(path), "--model", "churn",
                                     "--version", "2024-11", "--config", str(toml)])
    assert published.exit_code == 0, published.output
    assert f"baseline {wide.id}" in published.output and f"{group}.baselines" in published.output

    listed = runner.invoke(main, ["baseline", "list", "--config", str(toml)])
    assert listed.exit_code == 0, listed.output
    row = [line for line in listed.output.splitlines() if line.startswith("churn")]
    assert len(row) == 1 and "2024-11" in row[0] and wide.id in row[0]
    assert " 300 features" in row[0] and "applies from 20" in row[0]

    dated = runner.invoke(main, ["baseline", "publish", str(path), "--model", "churn",
                                 "--version", "2024-12", "--from", "2025-11-28T10:00:00Z",
                                 "--config", str(toml)])
    assert dated.exit_code == 0, dated.output
    entries = BaselineRegistry(Config.from_toml(toml).kafka).entries()
    assert entries[("churn", "2024-12")].from_time == 1_764_324_000_000
    bad = runner.invoke(main, ["baseline", "publish", str(path), "--model", "churn",
                               "--from", "next tuesday", "--config", str(toml)])
    assert bad.exit_code == 2 and "--from" in bad.output

    missing = runner.invoke(main, ["baseline", "retire", "--model", "nope", "--config",
                                   str(toml)])
    assert missing.exit_code == 1
    assert "is not registered" in missing.output and "churn 2024-11" in missing.output


# -- a running service follows the registry ------------------------------------------------


def _versions_stream(minutes: int, per_second: int = 8, seed: int = 5) -> list[bytes]:
    """Requests of model fraud, versions v1 and v2 side by side, from the training
    distribution of training_baseline()."""
    rng = np.random.default_rng(seed)
    step = 1000 // per_second
    messages = []
    for i in range(minutes * 60 * per_second):
        # Both versions on every partition (produce() deals messages round-robin): a
        # partition of records all turned away would hold the watermark until it is idle.
        for version in (("v1", "v2") if i % 2 == 0 else ("v2", "v1")):
            messages.append(orjson.dumps({
                "request_id": f"{version}-{i}", "timestamp": START + i * step,
                "model": "fraud", "model_version": version,
                "features": {"amount": round(float(rng.lognormal(3, 0.5)), 3),
                             "country": str(rng.choice(["DE", "FR", "US", "NL"]))}}))
    return messages


def test_a_running_service_takes_new_and_replaced_baselines_without_a_restart(
        kafka_bootstrap):
    topic = unique("registry-live")
    create_topic(kafka_bootstrap, topic)
    config = service_config(kafka_bootstrap, topic, unique("registry-live"))
    config = dataclasses.replace(config, message=dataclasses.replace(
        config.message, model_version="model_version"))
    v1, v1_next, v2 = training_baseline(1), training_baseline(3), training_baseline(2)
    registry = BaselineRegistry(config.kafka)
    registry.publish(v1, "fraud", "v1", from_time=0)
    baselines = ModelBaselines({identity_key("fraud", "v1"): v1}, versioned=True)
    judged: list = []
    # No partition goes idle while the test waits between the two halves of the stream.
    service = DetectorService(config, baselines, on_window=judged.append,
                              idle_timeout_s=600)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            service.run(stop)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    stream = _versions_stream(16)
    half = len(stream) // 2  # minutes 0-8
    try:
        produce(kafka_bootstrap, topic, stream[:half])
        wait_until(lambda: any(w.end is not None and w.end >= START + 6 * 60_000
                               for w in judged), 120,
                   lambda: f"no window judged yet ({len(judged)})",
                   lambda: None if not errors else pytest.fail(repr(errors)))
        assert {w.version for w in judged} == {"v1"}  # v2 has no baseline yet
        wait_until(lambda: any(dict(r.headers)["streamskew.reason"] == b"unknown_version"
                               for r in read_all(kafka_bootstrap, config.kafka.dlq_topic)),
                   60, lambda: "no v2 record dead-lettered as unknown_version")
        # A new version, and the first one's replacement from minute 12 of event time on.
        registry.publish(v2, "fraud", "v2", from_time=0)
        registry.publish(v1_next, "fraud", "v1", from_time=START + 12 * 60_000)
        # Taken in at the service's next checkpoint, while it keeps consuming.
        wait_until(lambda: service.baselines.own("fraud", "v1") is v1_next
                   or getattr(service.baselines.own("fraud", "v1"), "id", "") == v1_next.id,
                   60, lambda: f"the service never took the new baselines: "
                               f"{service.baselines.describe()}")
        assert service.baselines.own("fraud", "v2").id == v2.id
        produce(kafka_bootstrap, topic, stream[half:])
        wait_until(lambda: any(w.version == "v1" and w.end >= START + 15 * 60_000
                               for w in judged), 180,
                   lambda: "v1 never judged to minute 15: " + ", ".join(
                       f"{w.version} ..{(w.end - START) // 60000}m" for w in judged),
                   lambda: None if not errors else pytest.fail(repr(errors)))
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive() and errors == []
    second = [w for w in judged if w.version == "v2"]
    assert second and {w.baseline.id for w in second} == {v2.id}
    per_pane = 60 * 8  # v1 records in one pane
    for window in (w for w in judged if w.version == "v1"):
        if window.end <= START + 12 * 60_000:
            assert window.baseline.id == v1.id, window.end
        else:
            assert window.baseline.id == v1_next.id, window.end
            # the window restarted at the first pane judged against the replacement
            panes = (window.end - (START + 12 * 60_000)) // 60_000
            assert window.records == panes * per_pane or panes >= 4, (window.end,
                                                                      window.records)
    assert any(w.baseline.id == v1_next.id for w in judged)
