"""``streamskew run``: the detector as a Kafka consumer-group service.

Each process runs both stages of the engine:

1. **Builders.** A consumer in group ``[kafka] group_id`` reads the prediction-request
   topics; every assigned partition has its own :class:`PaneBuilder`. Sealed partial panes,
   watermark heartbeats, dead letters, the builders' checkpoints and the consumed offsets are
   written in **one Kafka transaction** per checkpoint interval.
2. **Evaluator.** A consumer in group ``<group_id>.evaluator`` reads the panes topic (one
   partition, so exactly one process evaluates). It merges partial panes from every source
   partition and closes a pane once every partition's watermark has passed it; alerts, the
   evaluator's checkpoint and the panes offsets go in one transaction too.

A crash or a rebalance therefore neither loses nor repeats anything: uncommitted work is
re-done from the last checkpoint, and because pane contents depend only on each partition's
records, it is re-done identically (same events, same event ids). A revoked partition is
checkpointed before it moves; a newly assigned one is restored from the state topic.

With ``until_end`` the service stops once it has caught up with the end offsets it saw at
start: every source partition is then sealed ("final"), the evaluator flushes, and the
process exits. "Caught up" is judged by the consumer's fetch position, not by the last record
it returned: the end offset may lie past offsets that hold no record to return (a transaction
marker, aborted records, records deleted by retention before they were read).
SIGTERM/SIGINT finish the current batch, commit, and leave the group.
"""

from __future__ import annotations

import gc
import itertools
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as TP
from kafka.errors import IllegalStateError
from kafka.structs import OffsetAndMetadata

from ..baseline import Baseline
from ..config import Config
from ..detector.builder import BuilderStats, PaneBuilder, SealedPane, baseline_for
from ..detector.evaluator import Evaluator, WindowResult
from ..detector.events import SkewEvent
from ..detector.window import Pane
from ..records import NO_TIME, BadRecord
from .clients import admin_settings, consumer_settings, producer_settings
from .state import builder_key, evaluator_key, read_latest
from .topics import ensure_topics, internal_topics, source_topics

__all__ = ["DetectorService", "ServiceStats", "dead_letter_headers", "decode_pane_message",
           "pane_message"]

log = logging.getLogger(__name__)

FINAL = 2**62  # watermark of a source that will never send more
# The evaluator's state (every pane of the open windows) is larger than a builder's and
# changes only as panes arrive, so it is checkpointed every this many checkpoint intervals,
# or at once when there are alerts to publish. A crash re-reads at most that much of the
# panes topic, which is cheap.
EVALUATOR_CHECKPOINT_EVERY = 10


def source_name(tp: TP) -> str:
    return f"{tp.topic}/{tp.partition}"


def pane_message(kind: str, source: str, **fields: Any) -> bytes:
    """A panes-topic record: a JSON header line, then the pane's bytes for kind 'pane'."""
    payload = fields.pop("payload", b"")
    return orjson.dumps({"kind": kind, "source": source, **fields}) + b"\n" + payload


def decode_pane_message(value: bytes) -> tuple[dict[str, Any], bytes]:
    header, _, payload = value.partition(b"\n")
    return orjson.loads(header), payload


def dead_letter_headers(record: BadRecord, tp: TP, offset: int) -> list[tuple[str, bytes]]:
    return [("streamskew.reason", record.reason.encode()),
            ("streamskew.detail", record.detail.encode()[:1000]),
            ("streamskew.used", b"true" if record.used else b"false"),
            ("streamskew.source.topic", tp.topic.encode()),
            ("streamskew.source.partition", str(tp.partition).encode()),
            ("streamskew.source.offset", str(offset).encode())]


@dataclass
class ServiceStats:
    """What a run did (summed over the partitions this process owned)."""

    builders: BuilderStats = field(default_factory=BuilderStats)
    events: list[SkewEvent] = field(default_factory=list)
    windows: int = 0
    dead_letters: int = 0
    transactions: int = 0


class _Source:
    """One assigned source partition: its builder, position, and what waits for commit."""

    def __init__(self, tp: TP, builder: PaneBuilder, final: bool) -> None:
        self.tp = tp
        self.builder = builder
        self.final = final
        self.position: int | None = None
        self.dirty = False
        self.last_record = time.monotonic()
        self.sent_watermark = NO_TIME
        self.sent_idle = False
        self.reported_late = 0


class DetectorService:
    """The consumer-group detector (see the module docs)."""

    def __init__(self, config: Config, baselines: Baseline | Mapping[str, Baseline],
                 bootstrap_servers: str | None = None, until_end: bool = False,
                 checkpoint_interval_s: float = 1.0, idle_timeout_s: float = 30.0,
                 on_event: Callable[[SkewEvent], None] | None = None,
                 metrics: Any = None, max_poll_records: int = 5000, worker: int = 0) -> None:
        self.config = config
        self.kafka = config.kafka
        self.baselines = ({"default": baselines} if isinstance(baselines, Baseline)
                          else dict(baselines))
        self.bootstrap = bootstrap_servers
        self.until_end = until_end
        self.checkpoint_interval_s = checkpoint_interval_s
        self.idle_timeout_s = idle_timeout_s
        self.on_event = on_event
        self.metrics = metrics
        self.max_poll_records = max_poll_records
        self.worker = worker  # this process's number under `run --workers` (0 otherwise)
        self.group = self.kafka.group_id
        self.stats = ServiceStats()
        self.sources: dict[TP, _Source] = {}
        self.pending_panes: list[tuple[str, SealedPane]] = []
        self.pending_dead: list[tuple[TP, int, BadRecord]] = []
        self.evaluator: Evaluator | None = None
        self.evaluator_partitions: set[TP] = set()
        self.watermarks: dict[str, int] = {}  # source -> watermark (FINAL when sealed)
        self.idle: set[str] = set()
        self.evaluator_done = False
        self.pending_events: list[SkewEvent] = []
        self.expected_sources: set[str] = set()
        self.targets: dict[TP, int] = {}
        self.joined_sources = self.joined_evaluator = False
        self._evaluator_due = 0  # checkpoints since the evaluator's last commit
        self._windows_before = 0  # windows the restored evaluator had judged elsewhere
        self._topics_checked = 0.0  # when topic_pattern was last matched against the broker

    # -- setup -------------------------------------------------------------------------------

    def _connect(self) -> None:
        admin = KafkaAdminClient(**admin_settings(self.kafka, self.bootstrap))
        try:
            created = ensure_topics(admin, internal_topics(self.kafka))
            if created:
                log.info("created topics %s", ", ".join(created))
            self.topics = source_topics(self.kafka, admin.list_topics())
        finally:
            admin.close()
        if not self.topics:
            wanted = self.kafka.topic_pattern or ", ".join(self.kafka.topics) or "(none)"
            raise RuntimeError(f"no source topic to read: [kafka] topics/topic_pattern = "
                               f"{wanted}; create the topic or fix the config")
        settings = consumer_settings(self.kafka, self.bootstrap)
        self.state_settings = {k: v for k, v in settings.items()
                               if k not in ("max_poll_records",)}
        self.source_consumer = KafkaConsumer(**{**settings, "group_id": self.group,
                                                "max_poll_records": self.max_poll_records})
        self.panes_consumer = KafkaConsumer(**{**settings,
                                               "group_id": f"{self.group}.evaluator"})
        partitions = [TP(t, p) for t in self.topics
                      for p in sorted(self.source_consumer.partitions_for_topic(t) or ())]
        self.expected_sources = {source_name(tp) for tp in partitions}
        if self.until_end:
            self.targets = self.source_consumer.end_offsets(partitions)
        # A transactional id that a restarted process reuses: init_transactions then fences
        # the dead one and aborts its open transaction at once, instead of leaving its
        # uncommitted offsets to block the partitions until the transaction times out.
        transactional_id = self.kafka.client.get("transactional_id")
        if transactional_id is None:
            transactional_id = _instance_id(self.group, self.worker)
        elif self.worker:  # one configured id, several worker processes: one id each
            transactional_id = f"{transactional_id}-{self.worker}"
        self.producer = KafkaProducer(**producer_settings(
            self.kafka, self.bootstrap, transactional_id=transactional_id, linger_ms=5))
        self.producer.init_transactions()
        self.source_consumer.subscribe(self.topics, listener=_SourceListener(self))
        self._topics_checked = time.monotonic()
        self.panes_consumer.subscribe([self.kafka.panes_topic],
                                      listener=_EvaluatorListener(self))

    # -- main loop ---------------------------------------------------------------------------

    def run(self, stop: Any = None) -> ServiceStats:
        """Consume until ``stop`` (a threading.Event) is set, or the end with until_end."""
        self._connect()
        try:
            with _collecting_less():
                self._loop(stop)
        finally:
            self._close()
        return self.stats

    def _loop(self, stop: Any) -> None:
        last_checkpoint = time.monotonic()
        while not (stop is not None and stop.is_set()):
            self._poll_sources()
            self._poll_panes()
            if time.monotonic() - last_checkpoint >= self.checkpoint_interval_s \
                    or self._finishing():
                self.checkpoint(force=self._finishing())
                # Measured after the commit: a slow checkpoint must not make every
                # following poll checkpoint again.
                last_checkpoint = time.monotonic()
            if self.until_end and self._done():
                break
            self._follow_pattern()
        self.checkpoint(force=True)

    def _follow_pattern(self) -> None:
        """With ``topic_pattern``, take in matching topics created since start (checked every
        ``metadata_max_age_ms``, Kafka's 5 minutes unless set in [kafka]). A plain topic list
        is re-subscribed rather than kafka-python's pattern subscription, whose rejoin waits
        for a full metadata refresh inside each short poll and can starve on a broker with
        many topics. until_end reads only what existed at start."""
        if not self.kafka.topic_pattern or self.until_end:
            return
        every_s = self.kafka.client.get("metadata_max_age_ms", 300_000) / 1000
        if time.monotonic() - self._topics_checked < every_s:
            return
        self._topics_checked = time.monotonic()
        topics = source_topics(self.kafka, self.source_consumer.topics())
        if set(topics) - set(self.topics):
            log.info("new source topics: %s", ", ".join(sorted(set(topics) - set(self.topics))))
            self.topics = sorted(set(self.topics) | set(topics))  # deleted ones: left to Kafka
            self.source_consumer.subscribe(self.topics, listener=_SourceListener(self))

    def _poll_sources(self) -> None:
        batches = self.source_consumer.poll(timeout_ms=100)
        for tp, records in batches.items():
            source = self.sources.get(tp)
            if source is None or not records:
                continue
            self._feed(source, records)
        for source in self.sources.values():
            self._advance(source)
            self._maybe_finish(source)

    def _advance(self, source: _Source) -> None:
        """Take the consumer's fetch position as the source's position. It is past every
        record the consumer returned, and also past offsets that returned none: transaction
        markers and aborted records (read_committed skips them), and records deleted by
        retention before they were read (the fetch is out of range and the consumer resets).
        The last record's offset + 1 alone can stay short of the end offset for good."""
        position = self._fetch_position(source.tp)
        if position is not None and position != source.position:
            source.position = position
            source.dirty = True  # the new offset goes with the next checkpoint

    def _fetch_position(self, tp: TP) -> int | None:
        """The consumer's position for ``tp``, or None while it has none yet. Never blocks:
        a partition that is still waiting for its committed offset (e.g. held back by a dead
        replica's pending transactional offsets) must not stall the loop."""
        try:
            return self.source_consumer.position(tp, timeout_ms=0)
        except IllegalStateError:  # no longer assigned (a rebalance is under way)
            return None

    def _feed(self, source: _Source, records: list[Any]) -> None:
        tp = source.tp
        source.position = records[-1].offset + 1
        source.dirty = True
        if source.final:  # already sealed for good (until_end): nothing more to fold
            return
        offsets = [r.offset for r in records]  # aborted/compacted records leave gaps

        def on_bad(record: BadRecord) -> None:
            self.pending_dead.append((tp, offsets[record.position], record))

        source.builder.on_bad_record = on_bad
        values = [r.value if r.value is not None else b"" for r in records]
        sealed = source.builder.add(values, timestamps=[r.timestamp for r in records])
        self.pending_panes.extend((source_name(tp), s) for s in sealed)
        source.last_record = time.monotonic()
        if self.metrics is not None:
            self.metrics.records(tp.topic, len(records))

    def _maybe_finish(self, source: _Source) -> None:
        """until_end: a partition whose position reached its end offset is sealed for good."""
        if not self.until_end or source.final:
            return
        target = self.targets.get(source.tp)
        position = source.position
        if target is not None and position is not None and position >= target:
            self.pending_panes.extend((source_name(source.tp), s)
                                      for s in source.builder.seal_all())
            source.final = True
            source.dirty = True

    def _poll_panes(self) -> None:
        # A zero timeout never lets the group join complete; keep it short once joined.
        busy = self.joined_evaluator and bool(self.sources)
        batches = self.panes_consumer.poll(timeout_ms=10 if busy else 100)
        if self.evaluator is None:
            return
        for records in batches.values():
            for record in records:
                self._on_pane_message(record.value)
        self._evaluate()

    def _on_pane_message(self, value: bytes) -> None:
        header, payload = decode_pane_message(value)
        source = header["source"]
        # A partition of a topic created after start (pattern subscription): from now on
        # the windows wait for its watermark too.
        self.expected_sources.add(source)
        if header["kind"] == "pane":
            model = header["model"]
            pane = Pane.from_bytes(payload, baseline_for(self.baselines, model))
            assert self.evaluator is not None
            self.evaluator.add_pane(model, header["index"], pane)
        else:
            watermark = FINAL if header.get("final") else header["watermark"]
            self.watermarks[source] = max(self.watermarks.get(source, NO_TIME), watermark)
            if header.get("idle"):
                self.idle.add(source)
            else:
                self.idle.discard(source)

    def _evaluate(self) -> None:
        if self.evaluator is None or self.evaluator_done:
            return
        active = [s for s in self.expected_sources if s not in self.idle]
        marks = [self.watermarks.get(s, NO_TIME) for s in active]
        if self.until_end and marks and all(m == FINAL for m in marks) \
                and len(active) == len(self.expected_sources):
            events = self.evaluator.flush()
            self.evaluator_done = True
        elif marks and NO_TIME not in marks:
            events = self.evaluator.advance(min(marks))
        else:
            events = []
        self.pending_events.extend(events)

    # -- commits -----------------------------------------------------------------------------

    def checkpoint(self, force: bool = False) -> None:
        """Commit stage 1 (panes, dead letters, builder state, source offsets), then stage 2
        (alerts, evaluator state, panes offsets), each in its own transaction. Stage 2 waits
        for alerts or for EVALUATOR_CHECKPOINT_EVERY checkpoints, unless ``force``."""
        self._commit_builders()
        self._evaluator_due += 1
        if force or self.pending_events or self._evaluator_due >= EVALUATOR_CHECKPOINT_EVERY:
            self._commit_evaluator()
        if self.metrics is not None:
            self._report_partitions()

    def _report_partitions(self) -> None:
        """Lag, watermark and late records per owned partition, for the metrics endpoint."""
        for source in self.sources.values():
            tp = source.tp
            late = source.builder.stats.late
            if late > source.reported_late:
                self.metrics.late(tp.topic, late - source.reported_late)
                source.reported_late = late
            if source.builder.watermark != NO_TIME:
                self.metrics.watermark(tp.topic, tp.partition, source.builder.watermark)
            highwater = self.source_consumer.highwater(tp)
            if highwater is not None and source.position is not None:
                self.metrics.lag(tp.topic, tp.partition, max(highwater - source.position, 0))

    def _commit_builders(self, only: set[TP] | None = None) -> None:
        sources = [s for tp, s in self.sources.items() if only is None or tp in only]
        now = time.monotonic()
        heartbeats = []
        for source in sources:
            name = source_name(source.tp)
            idle = (not self.until_end and now - source.last_record > self.idle_timeout_s
                    and self._caught_up(source))
            watermark = FINAL if source.final else source.builder.watermark
            if source.dirty or watermark != source.sent_watermark or idle != source.sent_idle:
                heartbeats.append((source, name, watermark, idle))
        # Only the chosen sources' panes and dead letters go with their checkpoints: a pane
        # committed without its source's checkpoint would be sent again after a crash.
        names = {source_name(s.tp) for s in sources}
        panes = [(n, p) for n, p in self.pending_panes if n in names]
        dead = [(tp, o, r) for tp, o, r in self.pending_dead if source_name(tp) in names]
        if not (heartbeats or panes or dead):
            return
        producer = self.producer
        with _transaction(producer):
            for name, sealed in panes:
                producer.send(self.kafka.panes_topic, key=sealed.model.encode(),
                              value=pane_message("pane", name, model=sealed.model,
                                                 index=sealed.index,
                                                 payload=sealed.pane.to_bytes()))
            for tp, offset, record in dead:
                producer.send(self.kafka.dlq_topic, key=None, value=record.raw,
                              headers=dead_letter_headers(record, tp, offset))
            offsets = {}
            for source, name, watermark, idle in heartbeats:
                self._broadcast_watermark(name, watermark, source.final, idle)
                producer.send(self.kafka.state_topic,
                              key=builder_key(self.group, source.tp.topic, source.tp.partition),
                              value=orjson.dumps({"final": source.final,
                                                  "position": source.position}) + b"\n"
                              + source.builder.state_bytes())
                if source.position is not None:
                    offsets[source.tp] = OffsetAndMetadata(source.position, "", -1)
            if offsets:
                producer.send_offsets_to_transaction(offsets,
                                                     self.source_consumer.group_metadata())
        self.stats.transactions += 1
        self.stats.dead_letters += len(dead)
        if self.metrics is not None:
            for tp, _, record in dead:
                self.metrics.bad_record(tp.topic, record.reason)
        self.pending_panes = [(n, p) for n, p in self.pending_panes if n not in names]
        self.pending_dead = [(t, o, r) for t, o, r in self.pending_dead
                             if source_name(t) not in names]
        for source, _, watermark, idle in heartbeats:
            source.dirty = False
            source.sent_watermark = watermark
            source.sent_idle = idle

    def _broadcast_watermark(self, name: str, watermark: int, final: bool, idle: bool) -> None:
        """Every panes partition's evaluator needs every source's watermark."""
        partitions = self.producer.partitions_for(self.kafka.panes_topic)
        for partition in sorted(partitions):
            self.producer.send(self.kafka.panes_topic, partition=partition, key=None,
                               value=pane_message("watermark", name, watermark=watermark,
                                                  final=final, idle=idle))

    def _caught_up(self, source: _Source) -> bool:
        try:
            highwater = self.source_consumer.highwater(source.tp)
        except (AssertionError, KeyError):
            return False
        return highwater is not None and source.position is not None \
            and source.position >= highwater

    def _commit_evaluator(self) -> None:
        if self.evaluator is None:
            return
        positions = {tp: self.panes_consumer.position(tp) for tp in self.evaluator_partitions}
        if not self.pending_events and positions == getattr(self, "_committed_panes", None):
            return
        producer = self.producer
        with _transaction(producer):
            for event in self.pending_events:
                producer.send(self.kafka.alerts_topic, key=event.key.encode(),
                              value=event.to_json(), timestamp_ms=event.window_end)
            for tp in self.evaluator_partitions:
                producer.send(self.kafka.state_topic, key=evaluator_key(self.group,
                                                                        tp.partition),
                              value=self._evaluator_state(positions[tp]))
            producer.send_offsets_to_transaction(
                {tp: OffsetAndMetadata(p, "", -1) for tp, p in positions.items()},
                self.panes_consumer.group_metadata())
        self.stats.transactions += 1
        self._committed_panes = positions
        self._evaluator_due = 0
        for event in self.pending_events:
            self.stats.events.append(event)
            if self.metrics is not None:
                self.metrics.event(event)
            if self.on_event is not None:
                self.on_event(event)
        self.pending_events.clear()

    def _evaluator_state(self, position: int) -> bytes:
        assert self.evaluator is not None
        header = {"watermarks": self.watermarks, "idle": sorted(self.idle),
                  "done": self.evaluator_done, "windows": self.evaluator.windows,
                  "position": position}
        return orjson.dumps(header) + b"\n" + self.evaluator.state_bytes()

    # -- rebalances --------------------------------------------------------------------------

    def assign_sources(self, partitions: list[TP]) -> None:
        keys = {builder_key(self.group, tp.topic, tp.partition): tp for tp in partitions}
        saved = read_latest(self.state_settings, self.kafka.state_topic, set(keys))
        for key, tp in keys.items():
            builder = PaneBuilder(self.config, self.baselines)
            final = False
            position = None
            if key in saved:
                header, _, state = saved[key].partition(b"\n")
                meta = orjson.loads(header)
                final = meta["final"]
                builder.restore(state)
                position = meta.get("position")
                _resume(self.source_consumer, tp, position)
            self.sources[tp] = source = _Source(tp, builder, final)
            source.position = position  # what the checkpoint says; not new, so not dirty
        log.info("assigned %s", ", ".join(map(source_name, partitions)))

    def revoke_sources(self, partitions: list[TP]) -> None:
        """Checkpoint first, so the next owner continues exactly where we stopped."""
        revoked = {tp for tp in partitions if tp in self.sources}
        try:
            self._commit_builders(only=revoked)
        except Exception:  # the next owner redoes the work from the last checkpoint
            log.warning("checkpoint on revoke failed; the new owner resumes from the last one",
                        exc_info=True)
        for tp in revoked:
            self.stats.builders.merge(self.sources.pop(tp).builder.stats)
            if self.metrics is not None:
                self.metrics.forget_partition(tp.topic, tp.partition)
        # Panes of revoked partitions that were not committed will be rebuilt by the next owner.
        names = {source_name(tp) for tp in revoked}
        self.pending_panes = [(n, s) for n, s in self.pending_panes if n not in names]
        self.pending_dead = [(t, o, r) for t, o, r in self.pending_dead if t not in revoked]

    def assign_evaluator(self, partitions: list[TP]) -> None:
        self.evaluator = Evaluator(self.config, self.baselines, on_window=self._on_window)
        self.evaluator_partitions = set(partitions)
        self.watermarks, self.idle, self.evaluator_done = {}, set(), False
        keys = {evaluator_key(self.group, tp.partition) for tp in partitions}
        saved = read_latest(self.state_settings, self.kafka.state_topic, keys)
        by_key = {evaluator_key(self.group, tp.partition): tp for tp in partitions}
        for key, value in saved.items():  # one panes partition in the default layout
            header, _, state = value.partition(b"\n")
            meta = orjson.loads(header)
            _resume(self.panes_consumer, by_key[key], meta.get("position"))
            self.watermarks = dict(meta["watermarks"])
            self.idle = set(meta["idle"])
            self.evaluator_done = meta["done"]
            self.evaluator.restore(state)
            self.evaluator.windows = meta["windows"]
        self._committed_panes = None
        self._windows_before = self.evaluator.windows  # judged by earlier owners

    def revoke_evaluator(self) -> None:
        if self.evaluator is None:
            return
        try:
            self._commit_evaluator()
        except Exception:
            log.warning("evaluator checkpoint on revoke failed", exc_info=True)
        self.stats.windows += self.evaluator.windows - self._windows_before
        self.evaluator = None
        self.evaluator_partitions = set()
        self.pending_events.clear()

    def _on_window(self, result: WindowResult) -> None:
        if self.metrics is not None:
            self.metrics.pane_closed(result.model)
            self.metrics.window_judged(result.model, result.results)

    # -- the end -----------------------------------------------------------------------------

    def _finishing(self) -> bool:
        return self.until_end and (
            any(s.final and s.dirty for s in self.sources.values()) or (self.evaluator_done
            and bool(self.pending_events)))

    def _done(self) -> bool:
        """until_end: both groups joined, my partitions sealed and committed, and the
        evaluation (if it is mine) flushed and committed."""
        if not (self.joined_sources and self.joined_evaluator):
            return False
        if self.pending_panes or self.pending_dead or self.pending_events:
            return False
        if not all(s.final and not s.dirty for s in self.sources.values()):
            return False
        return self.evaluator is None or self.evaluator_done

    def _close(self) -> None:
        # Everything is committed; forget it before closing, so the revocation callbacks
        # that closing triggers neither commit nor count it again.
        for source in self.sources.values():
            self.stats.builders.merge(source.builder.stats)
        self.sources.clear()
        if self.evaluator is not None:
            self.stats.windows += self.evaluator.windows - self._windows_before
            self.evaluator = None
        for closer in (self.source_consumer.close, self.panes_consumer.close,
                       self.producer.close):
            try:
                closer()
            except Exception:  # closing is best effort; the work is committed
                log.debug("close failed", exc_info=True)


def _resume(consumer: KafkaConsumer, tp: TP, position: int | None) -> None:
    """Continue exactly where the restored checkpoint was taken. The committed offset says
    the same (same transaction), but reading it fails or falls back to the reset policy
    while a dead replica's transaction still holds pending offsets for the partition."""
    if position is not None:
        consumer.seek(tp, position)


_INSTANCES = itertools.count()


def _instance_id(group: str, worker: int = 0) -> str:
    """Stable across restarts of the same host and slot (hostname, e.g. the pod name, the
    worker process number, and the number of the service within that process), unique
    among concurrent services."""
    return f"streamskew-{group}-{socket.gethostname()}-{worker}-{next(_INSTANCES)}"


@contextmanager
def _collecting_less() -> Iterator[None]:
    """Fewer garbage collections while consuming. Every record allocates a dozen short-lived
    objects (kafka-python's record, the parsed JSON), so the default young-generation
    threshold (700) runs a collection every few dozen records, and the older generations,
    which then also hold every module, baseline and client object, are scanned again and
    again. Freezing what exists at start and collecting the young generation every 10,000
    allocations instead cut decoding time by ~15% here. Restored on the way out."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(before[0], 10_000), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


@contextmanager
def _transaction(producer: KafkaProducer) -> Iterator[None]:
    """Everything sent inside commits together, or is aborted (and the error re-raised)."""
    producer.begin_transaction()
    try:
        yield
        producer.commit_transaction()
    except Exception:
        try:
            producer.abort_transaction()
        except Exception:
            log.debug("abort failed", exc_info=True)
        raise


class _SourceListener(ConsumerRebalanceListener):
    def __init__(self, service: DetectorService) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: list[TP]) -> None:
        # Until the new assignment arrives (possibly polls later), "no partitions" does not
        # mean "nothing left to do" for until_end.
        self.service.joined_sources = False
        self.service.revoke_sources(list(revoked))

    def on_partitions_assigned(self, assigned: list[TP]) -> None:
        self.service.assign_sources(list(assigned))
        self.service.joined_sources = True


class _EvaluatorListener(ConsumerRebalanceListener):
    def __init__(self, service: DetectorService) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: list[TP]) -> None:
        self.service.joined_evaluator = False  # as for the sources: wait for the assignment
        self.service.revoke_evaluator()

    def on_partitions_assigned(self, assigned: list[TP]) -> None:
        if assigned:
            self.service.assign_evaluator(list(assigned))
        self.service.joined_evaluator = True

