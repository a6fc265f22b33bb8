"""What the service writes to its internal topics, and reading checkpoints back.

**Checkpoints** live in a compacted topic: the latest value per key wins. Keys name what
they restore: ``builder/<group>/<topic>/<partition>`` (a source partition's open panes,
clock and held records) and ``evaluator/<group>/<panes partition>`` (every source's
watermark, windows, pending panes, hysteresis). They are written in the same Kafka
transaction as the offsets they correspond to, so a restored checkpoint always matches the
committed position. A checkpoint value is a JSON header line (the consumer position it
belongs to, ...) followed by the engine's own snapshot bytes.

State can be far larger than a Kafka record may be (1 MiB by default; an evaluator judging
120 models holds ~10 MB), so :class:`CheckpointStore` writes each checkpoint zlib-compressed
in parts of at most ``part_bytes``: a small manifest under the key (parts, size, SHA-256, the
deployment) and the parts under ``<key>/part/<i>``, all in the same transaction; parts left
over from a larger earlier checkpoint are deleted (tombstones), so compaction keeps exactly
one checkpoint per key.

**Panes-topic records** hand sealed panes and watermarks from the source stage to the
evaluator stage: a JSON header line (kind ``pane`` or ``watermark``, the source partition,
the deployment's group and, for panes, the model, pane index and baseline id), then the
pane's bytes for kind ``pane``. With ``[labels]``, kinds ``requests`` and ``labels`` carry
what the label join needs of one polled batch of a source partition, as compact arrays
(:mod:`streamskew.performance.shipping`), and heartbeats of labels partitions say so
(``"labels": true``).

Sealed panes travel in bundles (kind ``panes``): the payload is a sequence of
length-prefixed ``pane`` records (each as above), up to ``part_bytes`` per bundle. A
deployment with many models seals hundreds of small panes per source and pane interval, and
one Kafka record each would cost more to produce and consume than the panes themselves.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

__all__ = ["BuilderCheckpoint", "CheckpointError", "CheckpointStore", "EvaluatorCheckpoint",
           "PaneMessage", "builder_key", "evaluator_key", "read_latest"]

CHECKPOINT_FORMAT = "streamskew.checkpoint/v2"
PART_BYTES = 512 * 1024  # far under Kafka's default 1 MiB record limit, headers included


class CheckpointError(ValueError):
    """A stored checkpoint is incomplete or damaged."""


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
    """The evaluator stage's state: its coordinator's snapshot, with ``[labels]`` the label
    join's and performance windows' snapshot, and its panes position."""

    position: int
    state: bytes  # SourceCoordinator.snapshot()
    performance: bytes = b""  # PerformanceMonitor.snapshot() (with [labels])

    def encode(self) -> bytes:
        header: dict[str, Any] = {"position": self.position}
        if self.performance:
            header["performance"] = len(self.performance)
        return orjson.dumps(header) + b"\n" + self.performance + self.state

    @classmethod
    def decode(cls, value: bytes) -> EvaluatorCheckpoint:
        header, body = _split(value)
        size = header.get("performance", 0)
        return cls(header["position"], body[size:], body[:size])


@dataclass(frozen=True)
class PaneMessage:
    """One panes-topic record: a sealed pane, a source's watermark heartbeat, or (with
    ``[labels]``) what the label join needs of a batch of requests or labels."""

    kind: str  # "pane", "panes" (a bundle of them), "watermark", "requests" or "labels"
    source: str  # "topic/partition"
    group: str  # the deployment that wrote it
    model: str = ""
    index: int = 0
    baseline: str = ""
    watermark: int = 0
    idle: bool = False
    final: bool = False
    labels: bool = False  # a heartbeat of a labels partition
    payload: bytes = b""  # the pane's bytes; RequestArrays / LabelArrays bytes

    def encode(self) -> bytes:
        header: dict[str, Any] = {"kind": self.kind, "source": self.source,
                                  "group": self.group}
        if self.kind == "pane":
            header.update(model=self.model, index=self.index, baseline=self.baseline)
        elif self.kind == "watermark":
            header.update(watermark=self.watermark, idle=self.idle, final=self.final)
            if self.labels:
                header["labels"] = True
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
                       final=header.get("final", False),
                       labels=header.get("labels", False), payload=payload)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a streamskew panes record ({exc!r})") from None

    @staticmethod
    def bundles(panes: list[bytes], max_bytes: int) -> list[bytes]:
        """Payloads of ``panes`` bundles holding the encoded ``pane`` records ``panes``,
        each at most ``max_bytes`` (or one record, if that alone is larger)."""
        out: list[bytes] = []
        chunk: list[bytes] = []
        size = 0
        for encoded in panes:
            framed = _FRAME.pack(len(encoded)) + encoded
            if chunk and size + len(framed) > max_bytes:
                out.append(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(framed)
            size += len(framed)
        if chunk:
            out.append(b"".join(chunk))
        return out

    def unbundle(self) -> list[PaneMessage]:
        """The ``pane`` records of a ``panes`` bundle; ValueError when damaged."""
        payload = self.payload
        out, offset = [], 0
        try:
            while offset < len(payload):
                (size,) = _FRAME.unpack_from(payload, offset)
                offset += _FRAME.size
                if offset + size > len(payload):
                    raise ValueError("a bundled pane runs past the record's end")
                out.append(PaneMessage.decode(payload[offset:offset + size]))
                offset += size
        except struct.error as exc:
            raise ValueError(f"not a streamskew panes bundle ({exc})") from None
        return out


_FRAME = struct.Struct("<I")


class CheckpointStore:
    """Writes and reads checkpoints of any size in parts (see the module docs)."""

    def __init__(self, topic: str, group: str, part_bytes: int = PART_BYTES) -> None:
        self.topic = topic
        self.group = group
        self.part_bytes = part_bytes
        self.parts: dict[bytes, int] = {}  # parts last written (or read) per key

    def send(self, producer: Any, key: bytes, value: bytes) -> int:
        """Send one checkpoint (inside the caller's transaction); returns its stored size."""
        body = zlib.compress(value, 1)
        parts = [body[i:i + self.part_bytes] for i in range(0, len(body), self.part_bytes)]
        manifest = orjson.dumps({"format": CHECKPOINT_FORMAT, "group": self.group,
                                 "parts": len(parts), "size": len(value),
                                 "sha256": hashlib.sha256(value).hexdigest()})
        producer.send(self.topic, key=key, value=manifest)
        for i, part in enumerate(parts):
            producer.send(self.topic, key=_part_key(key, i), value=part)
        for i in range(len(parts), self.parts.get(key, 0)):
            producer.send(self.topic, key=_part_key(key, i), value=None)
        self.parts[key] = len(parts)
        return len(manifest) + len(body)

    def read(self, settings: dict[str, Any], keys: set[bytes],
             timeout_s: float = 30.0) -> dict[bytes, bytes]:
        """The latest committed checkpoint of each key in ``keys`` that has one."""
        stored = read_latest(settings, self.topic, keys, timeout_s,
                             prefixes=tuple(key + b"/part/" for key in keys))
        found = {}
        for key in keys:
            value = stored.get(key)
            if value is not None:
                found[key] = self._assemble(key, value, stored)
        return found

    def _assemble(self, key: bytes, value: bytes, stored: dict[bytes, bytes]) -> bytes:
        if not value.startswith(b'{"format":'):
            return value  # written in one record by an earlier version
        manifest = orjson.loads(value)
        if manifest.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{key.decode()}: unknown checkpoint format "
                                  f"{manifest.get('format')!r} (written by a newer version?)")
        count = manifest["parts"]
        self.parts[key] = count
        try:
            body = b"".join(stored[_part_key(key, i)] for i in range(count))
            data = zlib.decompress(body)
        except (KeyError, zlib.error) as exc:
            raise CheckpointError(f"{key.decode()}: checkpoint parts missing or damaged "
                                  f"({exc!r})") from None
        if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
            raise CheckpointError(f"{key.decode()}: checkpoint does not match its hash")
        return data


def _part_key(key: bytes, index: int) -> bytes:
    return key + b"/part/" + str(index).encode()


def read_latest(settings: dict[str, Any], topic: str, keys: set[bytes],
                timeout_s: float = 30.0, prefixes: tuple[bytes, ...] = ()
                ) -> dict[bytes, bytes]:
    """The latest committed value of each key in ``keys``, and of every key that starts
    with one of ``prefixes`` (absent and deleted keys are left out)."""
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
                    key = record.key
                    if key is not None and (key in keys or key.startswith(prefixes)):
                        if record.value is None:
                            found.pop(key, None)
                        else:
                            found[key] = record.value
        return found
    finally:
        consumer.close()
