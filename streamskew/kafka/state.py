"""What the service writes to its internal topics, and reading checkpoints back.

**Checkpoints** live in a compacted topic: the latest value per key wins. Keys name what
they restore: ``builder/<group>/<topic>/<partition>`` (a source partition's open panes,
clock and held records) and ``evaluator/<group>/<panes partition>`` (every source's
watermark, windows, pending panes, hysteresis). They are written in the same Kafka
transaction as the offsets they correspond to, so a restored checkpoint always matches the
committed position. A checkpoint value is a JSON header line (the consumer position it
belongs to, ...) followed by the engine's own snapshot bytes.

**Panes-topic records** hand sealed panes and watermarks from the source stage to the
evaluator stage: a JSON header line (kind ``pane`` or ``watermark``, the source partition,
the deployment's group and, for panes, the model, pane index and baseline id), then the
pane's bytes for kind ``pane``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

__all__ = ["BuilderCheckpoint", "EvaluatorCheckpoint", "PaneMessage", "builder_key",
           "evaluator_key", "read_latest"]


def builder_key(group: str, topic: str, partition: int) -> bytes:
    return f"builder/{group}/{topic}/{partition}".encode()


def evaluator_key(group: str, partition: int) -> bytes:
    return f"evaluator/{group}/{partition}".encode()


def _split(value: bytes) -> tuple[dict[str, Any], bytes]:
    header, _, body = value.partition(b"\n")
    return orjson.loads(header), body


@dataclass(frozen=True)
class BuilderCheckpoint:
    """A source partition's state: its builder's snapshot and where its consumer stood."""

    position: int | None
    final: bool  # sealed for good (until_end reached the partition's end)
    state: bytes  # PaneBuilder.state_bytes()

    def encode(self) -> bytes:
        return orjson.dumps({"final": self.final, "position": self.position}) + b"\n" \
            + self.state

    @classmethod
    def decode(cls, value: bytes) -> BuilderCheckpoint:
        header, state = _split(value)
        return cls(header.get("position"), header["final"], state)


@dataclass(frozen=True)
class EvaluatorCheckpoint:
    """The evaluator stage's state: its coordinator's snapshot and its panes position."""

    position: int
    state: bytes  # SourceCoordinator.snapshot()

    def encode(self) -> bytes:
        return orjson.dumps({"position": self.position}) + b"\n" + self.state

    @classmethod
    def decode(cls, value: bytes) -> EvaluatorCheckpoint:
        header, state = _split(value)
        return cls(header["position"], state)


@dataclass(frozen=True)
class PaneMessage:
    """One panes-topic record: a sealed pane, or a source's watermark heartbeat."""

    kind: str  # "pane" or "watermark"
    source: str  # "topic/partition"
    group: str  # the deployment that wrote it
    model: str = ""
    index: int = 0
    baseline: str = ""
    watermark: int = 0
    idle: bool = False
    final: bool = False
    payload: bytes = b""  # the pane's bytes

    def encode(self) -> bytes:
        header: dict[str, Any] = {"kind": self.kind, "source": self.source,
                                  "group": self.group}
        if self.kind == "pane":
            header.update(model=self.model, index=self.index, baseline=self.baseline)
        else:
            header.update(watermark=self.watermark, idle=self.idle, final=self.final)
        return orjson.dumps(header) + b"\n" + self.payload

    @classmethod
    def decode(cls, value: bytes) -> PaneMessage:
        """Raises ValueError for a record that is not a panes-topic message."""
        try:
            header, payload = _split(value)
            return cls(kind=header["kind"], source=header["source"],
                       group=header.get("group", ""), model=header.get("model", ""),
                       index=header.get("index", 0), baseline=header.get("baseline", ""),
                       watermark=header.get("watermark", 0), idle=header.get("idle", False),
                       final=header.get("final", False), payload=payload)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a streamskew panes record ({exc!r})") from None


def read_latest(settings: dict[str, Any], topic: str, keys: set[bytes],
                timeout_s: float = 30.0) -> dict[bytes, bytes]:
    """The latest committed value of each key in ``keys`` (absent keys are left out)."""
    consumer = KafkaConsumer(**{**settings, "group_id": None, "enable_auto_commit": False,
                                "isolation_level": "read_committed"})
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
                      or ()]
        if not partitions:
            return {}
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)  # the last stable offset when read_committed
        found: dict[bytes, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading checkpoints from {topic} took over {timeout_s}s")
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    if record.key in keys:
                        if record.value is None:
                            found.pop(record.key, None)
                        else:
                            found[record.key] = record.value
        return found
    finally:
        consumer.close()
