"""The baseline registry: baselines on a compacted Kafka topic, by model and version.

``streamskew baseline publish BASELINE --model M --version V`` writes a baseline to the
registry topic (``[kafka] baselines_topic``, ``<group_id>.baselines`` by default); every
running ``streamskew run`` of the deployment follows the topic and judges that model and
version against it from the pane that holds the entry's ``from_time`` on (the event time
it applies from: the start of the second pane after publishing unless ``--from`` says
otherwise, so every replica has read it by then and all switch at the same pane), without a
restart. ``run`` and ``replay`` started with no baseline file take what is registered (a
replay judges its whole range against it). ``streamskew baseline list`` shows what is
registered. Baseline files
(``--baseline``, ``[models.<name>] baseline``) work as before without any of this.

On the topic (one partition, ``cleanup.policy=compact``: the latest value per key is kept):

- a baseline is zlib-compressed and cut into parts of at most ``part_bytes`` (512 KiB, under
  Kafka's default 1 MiB record limit whatever the baseline's size), written under
  ``<key>/part/<publication>/<i>``, **then** a small manifest under the key
  (``["model", "version"]`` as JSON): format, model, version, the baseline's id, when it was
  published, the event time it applies from, the publication id, the part count, size and
  SHA-256. One partition keeps them
  in that order, so whoever reads a manifest has read its parts;
- publishing again under the same key replaces the manifest (compaction drops the old one)
  and deletes the previous publication's parts with tombstones;
- ``baseline retire`` writes tombstones for the manifest and its parts.

A reader never trusts a manifest whose parts do not hash to its SHA-256: it is skipped and
said in the log, and the previous baseline of that key stays in use.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ..baseline import Baseline, BaselineError
from ..config import KafkaConfig
from ..errors import StreamskewError
from ..timeparse import format_time
from .clients import consumer_settings, producer_settings
from .failures import connect_admin
from .topics import TopicSpec, ensure_topics

__all__ = ["REGISTRY_FORMAT", "BaselineRegistry", "RegistryEntry", "RegistryError",
           "RegistryFollower", "registry_topic"]

log = logging.getLogger(__name__)

REGISTRY_FORMAT = "streamskew.baseline/v1"
PART_BYTES = 512 * 1024
# Parts read but not yet claimed by a manifest are held at most this long in bytes: a
# publisher that died between its parts and its manifest cannot make a follower grow.
MAX_PENDING_PART_BYTES = 256 * 1024 * 1024


class RegistryError(StreamskewError):
    """The registry cannot be read or written (the message says what to do)."""


def registry_topic(kafka: KafkaConfig) -> TopicSpec:
    """One partition (manifests after their parts), compacted (latest per key)."""
    return TopicSpec(kafka.baselines_topic, 1, {"cleanup.policy": "compact"})


@dataclass(frozen=True)
class RegistryEntry:
    """One registered baseline: the baseline of ``model`` at ``version``.

    ``version`` ``""`` is the model's baseline for every version without one of its own.
    """

    model: str
    version: str
    baseline: Baseline = field(repr=False)
    published_at: str = ""
    from_time: int = 0  # epoch ms of event time: panes from the one holding it on
    publication: str = ""
    size: int = 0  # the baseline's JSON bytes
    parts: int = 0  # records its compressed bytes were cut into

    @property
    def key(self) -> bytes:
        return entry_key(self.model, self.version)

    def describe(self) -> str:
        version = self.version or "(any)"
        return (f"{self.model:<24} {version:<12} {self.baseline.id}  "
                f"{len(self.baseline.features):>4} features  {self.baseline.count:>10,} rows  "
                f"{self.size / 1024:>8.1f} KiB  published {self.published_at}, applies "
                f"from {format_time(self.from_time)}")


def entry_key(model: str, version: str) -> bytes:
    return orjson.dumps([model, version])


def _part_key(key: bytes, publication: str, index: int) -> bytes:
    return key + b"/part/" + publication.encode() + b"/" + str(index).encode()


def _parse_key(key: bytes) -> tuple[str, str] | None:
    try:
        model, version = orjson.loads(key)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    if not isinstance(model, str) or not isinstance(version, str):
        return None
    return model, version


class _Assembler:
    """Folds registry records, in topic order, into the entries they make."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.parts: dict[bytes, bytes] = {}
        self.part_bytes = 0
        self.manifests: dict[bytes, dict[str, Any]] = {}  # the latest manifest per key

    def fold(self, key: bytes | None, value: bytes | None
             ) -> RegistryEntry | tuple[str, str] | None:
        """A new entry, ``(model, version)`` for a retired one, or None."""
        if key is None:
            return None
        if b"/part/" in key:
            if value is None:
                self._drop_part(key)
            else:
                self._hold_part(key, value)
            return None
        identity = _parse_key(key)
        if identity is None:
            log.warning("%s: a record with key %r is not a registry record; skipped",
                        self.topic, key[:80])
            return None
        if value is None:
            self.manifests.pop(key, None)
            return identity
        return self._assemble(key, identity, value)

    def _hold_part(self, key: bytes, value: bytes) -> None:
        if self.part_bytes + len(value) > MAX_PENDING_PART_BYTES:
            log.warning("%s: over %d MiB of baseline parts with no manifest; dropping them "
                        "(a publisher died mid-way?)", self.topic,
                        MAX_PENDING_PART_BYTES // 2**20)
            self.parts.clear()
            self.part_bytes = 0
        self._drop_part(key)
        self.parts[key] = value
        self.part_bytes += len(value)

    def _drop_part(self, key: bytes) -> None:
        old = self.parts.pop(key, None)
        if old is not None:
            self.part_bytes -= len(old)

    def _assemble(self, key: bytes, identity: tuple[str, str], value: bytes
                  ) -> RegistryEntry | None:
        model, version = identity
        try:
            manifest = orjson.loads(value)
            if manifest.get("format") != REGISTRY_FORMAT:
                raise ValueError(f"format {manifest.get('format')!r}")
            publication = manifest["publication"]
            keys = [_part_key(key, publication, i) for i in range(manifest["parts"])]
            body = b"".join(self.parts[k] for k in keys)
            data = zlib.decompress(body)
            if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
                raise ValueError("the parts do not match the manifest's SHA-256")
            baseline = Baseline.from_bytes(data, f"{self.topic}: {model} {version}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, zlib.error,
                BaselineError) as exc:
            what = "parts missing" if isinstance(exc, KeyError) else str(exc)
            log.warning("%s: the baseline of model %r version %r cannot be read (%s); "
                        "skipped, publish it again", self.topic, model, version, what)
            return None
        for k in keys:
            self._drop_part(k)
        self.manifests[key] = manifest
        return RegistryEntry(model, version, baseline, manifest.get("published_at", ""),
                             int(manifest.get("from_time", 0)), publication, len(data),
                             len(keys))


class BaselineRegistry:
    """Publish, list and retire registered baselines (one-shot clients; see module docs).

    ``baseline publish`` and ``baseline list`` use it; the service uses
    :class:`RegistryFollower` instead.
    """

    def __init__(self, kafka: KafkaConfig, bootstrap_servers: str | None = None,
                 part_bytes: int = PART_BYTES) -> None:
        self.kafka = kafka
        self.bootstrap = bootstrap_servers
        self.topic = kafka.baselines_topic
        self.part_bytes = part_bytes

    def _ensure_topic(self) -> None:
        admin = connect_admin(self.kafka, self.bootstrap, "publishing a baseline")
        try:
            ensure_topics(admin, [registry_topic(self.kafka)])
        finally:
            admin.close()

    def entries(self, timeout_s: float = 30.0) -> dict[tuple[str, str], RegistryEntry]:
        """Everything registered now, by ``(model, version)``."""
        follower = RegistryFollower(self.kafka, self.bootstrap)
        try:
            follower.start(timeout_s)
            return dict(follower.entries)
        finally:
            follower.close()

    def publish(self, baseline: Baseline, model: str, version: str = "",
                from_time: int | None = None) -> RegistryEntry:
        """Register ``baseline`` for ``model`` at ``version`` from event time ``from_time``
        (epoch ms; default now); replaces what was there."""
        if not model:
            raise RegistryError("baseline publish: --model must not be empty")
        self._ensure_topic()
        before = self.entries()
        data = orjson.dumps(baseline.to_json())
        body = zlib.compress(data, 6)
        publication = secrets.token_hex(6)
        key = entry_key(model, version)
        parts = [body[i:i + self.part_bytes] for i in range(0, len(body), self.part_bytes)]
        now = datetime.now(UTC)
        published_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        if from_time is None:
            from_time = int(now.timestamp() * 1000)
        manifest = {"format": REGISTRY_FORMAT, "model": model, "version": version,
                    "baseline_id": baseline.id, "published_at": published_at,
                    "from_time": from_time,
                    "publication": publication, "parts": len(parts), "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest()}
        producer = KafkaProducer(**producer_settings(
            self.kafka, self.bootstrap, enable_idempotence=True,
            max_request_size=max(self.part_bytes * 2, 1024 * 1024)))
        try:
            for i, part in enumerate(parts):
                producer.send(self.topic, key=_part_key(key, publication, i), value=part)
            producer.send(self.topic, key=key, value=orjson.dumps(manifest))
            old = before.get((model, version))
            if old is not None:  # the previous publication's parts: compaction drops them
                for i in range(old.parts):
                    producer.send(self.topic, key=_part_key(key, old.publication, i),
                                  value=None)
            producer.flush()
        finally:
            producer.close()
        return RegistryEntry(model, version, baseline, published_at, from_time, publication,
                             len(data), len(parts))

    def retire(self, model: str, version: str = "") -> RegistryEntry:
        """Remove ``model`` at ``version`` from the registry (running services keep the
        baseline they have until restarted; new windows of it then are ``unknown``)."""
        entries = self.entries()
        old = entries.get((model, version))
        if old is None:
            known = ", ".join(f"{m} {v or '(any)'}" for m, v in sorted(entries)) or "none"
            raise RegistryError(f"baseline retire: model {model!r} version {version!r} is not "
                                f"registered in {self.topic} (registered: {known})")
        key = entry_key(model, version)
        producer = KafkaProducer(**producer_settings(self.kafka, self.bootstrap,
                                                     enable_idempotence=True))
        try:
            producer.send(self.topic, key=key, value=None)
            for i in range(old.parts):
                producer.send(self.topic, key=_part_key(key, old.publication, i), value=None)
            producer.flush()
        finally:
            producer.close()
        return old


class RegistryFollower:
    """The service's view of the registry: read to the end at start, then new entries.

    >>> # follower = RegistryFollower(config.kafka); follower.start()
    >>> # for entry in follower.poll(): ...   (non-blocking; in the poll loop)
    """

    def __init__(self, kafka: KafkaConfig, bootstrap_servers: str | None = None) -> None:
        self.kafka = kafka
        self.bootstrap = bootstrap_servers
        self.topic = kafka.baselines_topic
        self.assembler = _Assembler(self.topic)
        self.consumer: KafkaConsumer | None = None
        self.entries: dict[tuple[str, str], RegistryEntry] = {}

    def start(self, timeout_s: float = 30.0) -> list[RegistryEntry]:
        """Read the whole registry (the entries in force now). The service creates the
        topic first, so replicas started before the first publish still follow it."""
        self.consumer = KafkaConsumer(**consumer_settings(
            self.kafka, self.bootstrap, group_id=None,
            max_partition_fetch_bytes=4 * 1024 * 1024))
        if not self.consumer.partitions_for_topic(self.topic):
            self.close()  # nothing published yet (and no service created the topic)
            return []
        tp = TopicPartition(self.topic, 0)
        self.consumer.assign([tp])
        self.consumer.seek_to_beginning(tp)
        end = self.consumer.end_offsets([tp])[tp]
        deadline = time.monotonic() + timeout_s
        while self.consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise RegistryError(f"reading the baseline registry {self.topic} took over "
                                    f"{timeout_s:.0f}s; is the broker overloaded?")
            self._fold(self.consumer.poll(timeout_ms=200))
        return list(self.entries.values())

    def poll(self) -> list[RegistryEntry]:
        """Entries published since the last call (never blocks)."""
        if self.consumer is None:
            return []
        return self._fold(self.consumer.poll(timeout_ms=0))

    def _fold(self, batches: dict[Any, list[Any]]) -> list[RegistryEntry]:
        new: list[RegistryEntry] = []
        for records in batches.values():
            for record in records:
                outcome = self.assembler.fold(record.key, record.value)
                if isinstance(outcome, RegistryEntry):
                    self.entries[(outcome.model, outcome.version)] = outcome
                    new.append(outcome)
                elif isinstance(outcome, tuple):
                    self.entries.pop(outcome, None)
        return new

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
