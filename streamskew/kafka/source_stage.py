"""Stage 1 of the service: the source partitions this process owns -> sealed panes.

Every assigned partition is one engine source with its own
:class:`~streamskew.detector.builder.PaneBuilder`. Polled records are folded; sealed partial
panes, dead letters and the partition's watermark wait for the next checkpoint, which writes
them with the builders' checkpoints and the consumed offsets in one Kafka transaction
(:meth:`SourceStage.commit`). Idle partitions are decided here, from the service's clock,
and told to the evaluator as a flag on the heartbeat: the engine itself reads no clock.

With ``[labels]`` the labels topic's partitions are sources too (same consumer group), but
without a builder: the label join runs in the evaluator stage, which sees every partition.
For each polled batch, this stage picks out what the join needs (request ids as join keys,
event times, models, predictions; label keys, times and values:
:mod:`streamskew.performance.shipping`) and ships it on the panes topic in the same
transaction as the consumed offsets, ahead of the partition's heartbeat, so the evaluator
sees each partition's requests and labels in the partition's order. Unreadable labels are
dead-lettered with their reason, like bad requests.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as TP
from kafka.errors import IllegalStateError
from kafka.structs import OffsetAndMetadata

from ..baseline import Baseline
from ..config import Config
from ..detector.builder import BuilderStats, PaneBuilder, SealedPane
from ..detector.window import BaselineMismatch, Pane
from ..performance.shipping import JoinFeed, LabelArrays, RequestArrays
from ..records import NO_TIME, BadRecord
from .evaluators import panes_partition
from .metrics import Metrics
from .state import BuilderCheckpoint, CheckpointStore, PaneMessage, builder_key
from .topics import RetentionWatch
from .transactions import TXN_TIMEOUT_S, send_offsets

__all__ = ["SourceStage", "dead_letter", "dead_letter_headers", "source_name"]

log = logging.getLogger(__name__)

# A dead letter keeps at most this much of the original record: with its headers it stays
# under Kafka's default 1 MiB message limit (the original keeps its offset in its topic).
DEAD_LETTER_MAX_BYTES = 512 * 1024


def source_name(tp: TP) -> str:
    return f"{tp.topic}/{tp.partition}"


def dead_letter_headers(record: BadRecord, tp: TP, offset: int) -> list[tuple[str, bytes]]:
    return [("streamskew.reason", record.reason.encode()),
            ("streamskew.detail", record.detail.encode()[:1000]),
            ("streamskew.used", b"true" if record.used else b"false"),
            ("streamskew.source.topic", tp.topic.encode()),
            ("streamskew.source.partition", str(tp.partition).encode()),
            ("streamskew.source.offset", str(offset).encode())]


def dead_letter(record: BadRecord, tp: TP, max_bytes: int
                ) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The dead letter's value and headers. A record larger than ``max_bytes`` keeps its
    first ``max_bytes`` bytes; the headers then carry its original size and SHA-256, so a
    dead letter never exceeds what the broker accepts (the original is still in its topic,
    at the offset the headers name)."""
    headers = dead_letter_headers(record, tp, record.position)
    value = record.raw
    if len(value) > max_bytes:
        headers += [("streamskew.truncated", b"true"),
                    ("streamskew.original_size", str(len(value)).encode()),
                    ("streamskew.original_sha256", hashlib.sha256(value).hexdigest().encode())]
        value = value[:max_bytes]
    return value, headers


def pane_parts(pane: Pane, max_bytes: int) -> list[bytes]:
    """A pane's bytes, split by feature into partial panes of at most ``max_bytes`` each
    when it is larger (a model with many features). Partial panes merge like any others:
    the record count and new-feature counts travel with the first part only."""
    whole = pane.to_bytes()
    if len(whole) <= max_bytes:
        return [whole]
    if pane.values is not None:  # values are not split: summaries are (per feature)
        dense = pane.copy()
        dense.densify()
        return pane_parts(dense, max_bytes)
    if len(pane.summaries) < 2:
        return [whole]
    names = list(pane.summaries)
    half = len(names) // 2
    first = Pane(pane.index, pane.records, {n: pane.summaries[n] for n in names[:half]},
                 pane.new_features, pane.baseline_id)
    second = Pane(pane.index, 0, {n: pane.summaries[n] for n in names[half:]}, {},
                  pane.baseline_id)
    return pane_parts(first, max_bytes) + pane_parts(second, max_bytes)


class _Source:
    """One assigned source partition: its builder, position, and what waits for commit."""

    def __init__(self, tp: TP, builder: PaneBuilder | None, final: bool, now: float) -> None:
        self.tp = tp
        self.name = source_name(tp)
        self.builder = builder  # None for a labels partition
        self.labels = builder is None
        self.final = final
        self.position: int | None = None
        self.dirty = False  # a new position or state to checkpoint
        self.last_record = now  # when a record last reached the clock
        self.at_end = -math.inf  # when its position was last seen at the end of its log
        self.sent: tuple[int, bool, bool] | None = None  # last heartbeat: watermark, idle, final
        self.reported_late = 0
        self.panes: list[SealedPane] = []  # sealed, not committed yet
        self.dead: list[BadRecord] = []  # dead letters (position = offset), not committed yet
        self.committed = BuilderStats()  # the builder's counters at its last commit
        self.join: list[RequestArrays | LabelArrays] = []  # for the label join, not committed
        self.label_records = 0  # labels partition: records read
        self.committed_labels = 0  # ... at the last commit

    @property
    def watermark(self) -> int:
        return self.builder.watermark if self.builder is not None else NO_TIME


class SourceStage:
    """The builders of this process's source partitions (see the module docs)."""

    def __init__(self, config: Config, baselines: Mapping[str, Baseline], metrics: Metrics,
                 clock: Callable[[], float], until_end: bool, idle_timeout_s: float,
                 checkpoints: CheckpointStore) -> None:
        self.config = config
        self.kafka = config.kafka
        self.group = config.kafka.group_id
        self.baselines = baselines
        self.metrics = metrics
        self.clock = clock
        self.until_end = until_end
        self.idle_timeout_s = idle_timeout_s
        self.consumer: KafkaConsumer | None = None  # set by the service once connected
        self.sources: dict[TP, _Source] = {}
        self.targets: dict[TP, int] = {}  # until_end: the end offsets seen at start
        self.stats = BuilderStats()  # of partitions no longer owned
        self.dead_letter_max_bytes = DEAD_LETTER_MAX_BYTES
        self.checkpoints = checkpoints
        self.checkpoint_bytes: dict[str, int] = {}  # stored size of each source's checkpoint
        self.retention: RetentionWatch | None = None  # set by the service once connected
        self.deleted_unread: dict[str, int] = {}  # records deleted before read, by topic
        self.warnings: list[str] = []  # what the run should tell at its end
        self.dead_letters = 0
        self.skipped_checkpoints = 0  # built against another baseline
        # [labels]: the labels topics (set by the service) and what to ship of each batch.
        self.label_topics: set[str] = set()
        has_reference = any(b.performance is not None for b in baselines.values())
        self.join_feed = JoinFeed(config, baselines) \
            if config.labels is not None and has_reference else None

    # -- records -----------------------------------------------------------------------------

    def feed(self, tp: TP, records: list[Any]) -> None:
        source = self.sources.get(tp)
        if source is None or not records:
            return
        if source.position is not None and records[0].offset > source.position + 1:
            self._check_deleted(source, source.position)
        if self.retention is not None:
            warning = self.retention.check(tp.topic, min(r.timestamp for r in records))
            if warning:
                self._warn(warning)
        source.position = records[-1].offset + 1
        source.dirty = True
        if source.final:  # already sealed for good (until_end): nothing more to fold
            return
        values = [r.value if r.value is not None else b"" for r in records]
        timestamps = [r.timestamp for r in records]
        heard = True
        if source.builder is None:
            self._feed_labels(source, records, values, timestamps)
        else:
            admitted = source.builder.admitted
            source.builder.on_bad_record = source.dead.append
            # With the join, the builder hands over the messages as it parsed them: the
            # join's ids, times and predictions are picked from those, not parsed again.
            chunks = self.join_feed.request_chunks() if self.join_feed is not None else None
            source.panes.extend(source.builder.add(
                values, timestamps=timestamps, ids=[r.offset for r in records],
                on_parsed=chunks))
            if self.join_feed is not None:
                assert chunks is not None
                source.join.append(self.join_feed.chunked_requests(chunks, timestamps))
            # Records all turned away (an unknown model, malformed) give the clock no time:
            # a partition of only those must go idle, not hold every other's panes open.
            heard = source.builder.admitted > admitted
        if heard:
            source.last_record = self.clock()
        self._note_end(source)

    def _feed_labels(self, source: _Source, records: list[Any], values: list[bytes],
                     timestamps: list[int]) -> None:
        """A batch of a labels partition: the join's arrays, and dead letters for the
        records that cannot be read (their position becomes their offset)."""
        assert self.join_feed is not None
        source.label_records += len(records)
        arrays, bad = self.join_feed.labels(values, timestamps)
        for record in bad:
            source.dead.append(BadRecord(records[record.position].offset, record.reason,
                                         record.detail, record.raw))
        source.join.append(arrays)

    def follow_positions(self) -> None:
        """Take the consumer's fetch position as each source's position. It is past every
        record the consumer returned, and also past offsets that returned none: transaction
        markers and aborted records (read_committed skips them), and records deleted by
        retention before they were read. The last record's offset + 1 alone can stay short
        of the end offset for good. With until_end, a partition at its end is sealed."""
        for source in self.sources.values():
            position = self._fetch_position(source.tp)
            if position is not None and position != source.position:
                if source.position is not None and position > source.position + 1:
                    self._check_deleted(source, source.position)
                source.position = position
                source.dirty = True
            if self.until_end and not source.final:
                target = self.targets.get(source.tp)
                if target is not None and source.position is not None \
                        and source.position >= target:
                    if source.builder is not None:
                        source.panes.extend(source.builder.seal_all())
                    source.final = source.dirty = True

    def _check_deleted(self, source: _Source, expected: int) -> None:
        """Offsets skipped from ``expected`` on: records the broker deleted (retention)
        before they were read, if its low watermark is now past them. A gap of one offset
        is a transaction marker, and is not looked at."""
        assert self.consumer is not None
        try:
            low = self.consumer.beginning_offsets([source.tp])[source.tp]
        except Exception:  # cannot tell now; the next gap asks again
            log.debug("beginning_offsets failed", exc_info=True)
            return
        if low is None or low <= expected:
            return
        lost = low - expected
        topic = source.tp.topic
        self.deleted_unread[topic] = self.deleted_unread.get(topic, 0) + lost
        self.metrics.deleted_unread(topic, lost)
        self._warn(f"{source.name}: {lost:,} records (offsets {expected:,}..{low - 1:,}) were "
                   f"deleted by the broker before they were read (retention.ms of {topic}); "
                   "they are not judged")

    def _warn(self, sentence: str) -> None:
        log.warning("%s", sentence)
        self.warnings.append(sentence)

    def _fetch_position(self, tp: TP) -> int | None:
        """The consumer's position for ``tp``, or None while it has none yet. Never blocks:
        a partition that is still waiting for its committed offset (e.g. held back by a dead
        replica's pending transactional offsets) must not stall the loop."""
        assert self.consumer is not None
        try:
            return self.consumer.position(tp, timeout_ms=0)
        except IllegalStateError:  # no longer assigned (a rebalance is under way)
            return None

    # -- commits -----------------------------------------------------------------------------

    def commit(self, producer: KafkaProducer, transaction: Any,
               only: set[TP] | None = None) -> bool:
        """Write the chosen sources' panes, dead letters, heartbeats, checkpoints and
        offsets in one transaction; returns whether there was anything to write."""
        chosen = [s for tp, s in self.sources.items() if only is None or tp in only]
        now = self.clock()
        due = [(s, self._heartbeat(s, now)) for s in chosen]
        due = [(s, beat) for s, beat in due
               if s.dirty or s.panes or s.dead or s.join or beat != s.sent]
        if not due:
            return False
        assert self.consumer is not None
        panes_partitions = sorted(producer.partitions_for(self.kafka.panes_topic))
        with transaction(producer):
            offsets = {}
            for source, (watermark, idle, final) in due:
                self._send_panes(producer, source, panes_partitions)
                for record in source.dead:
                    value, headers = dead_letter(record, source.tp, self.dead_letter_max_bytes)
                    producer.send(self.kafka.dlq_topic, key=None, value=value, headers=headers)
                # The label join lives with the first panes partition's evaluator; before
                # the heartbeat, so a final heartbeat follows everything the source sent.
                for arrays in source.join:
                    kind = "labels" if isinstance(arrays, LabelArrays) else "requests"
                    for part in arrays.split(self.checkpoints.part_bytes):
                        producer.send(self.kafka.panes_topic, partition=panes_partitions[0],
                                      key=None, value=PaneMessage(
                                          kind, source.name, self.group,
                                          payload=part.encode()).encode())
                # Every panes partition's evaluator needs every source's watermark.
                beat = PaneMessage("watermark", source.name, self.group, watermark=watermark,
                                   idle=idle, final=final, labels=source.labels).encode()
                for partition in panes_partitions:
                    producer.send(self.kafka.panes_topic, partition=partition, key=None,
                                  value=beat)
                self.checkpoint_bytes[source.name] = self.checkpoints.send(
                    producer, builder_key(self.group, source.tp.topic, source.tp.partition),
                    BuilderCheckpoint(source.position, source.final,
                                      source.builder.state_bytes()
                                      if source.builder is not None else b"").encode())
                if source.position is not None:
                    offsets[source.tp] = OffsetAndMetadata(source.position, "", -1)
            if offsets:
                send_offsets(producer, offsets, self.consumer.group_metadata(), TXN_TIMEOUT_S)
        for source, beat in due:
            # Counted once committed: work redone after a failure is not counted twice.
            if source.builder is None:
                self.metrics.records(source.tp.topic,
                                     source.label_records - source.committed_labels)
                source.committed_labels = source.label_records
            else:
                self.metrics.records(source.tp.topic,
                                     source.builder.stats.records - source.committed.records)
                source.committed = copy.deepcopy(source.builder.stats)
            for record in source.dead:
                self.metrics.bad_record(source.tp.topic, record.reason)
            for sealed in source.panes:
                self.metrics.model_records(sealed.model, sealed.pane.records)
            self.dead_letters += len(source.dead)
            source.panes, source.dead, source.join = [], [], []
            source.dirty = False
            source.sent = beat
        return True

    def _send_panes(self, producer: KafkaProducer, source: _Source,
                    panes_partitions: list[int]) -> None:
        """The source's sealed panes, bundled per panes partition (see kafka.state)."""
        by_partition: dict[int, list[bytes]] = {}
        for sealed in source.panes:
            partition = panes_partitions[panes_partition(sealed.model, len(panes_partitions))]
            for payload in pane_parts(sealed.pane, self.checkpoints.part_bytes):
                by_partition.setdefault(partition, []).append(PaneMessage(
                    "pane", source.name, self.group, model=sealed.model, index=sealed.index,
                    baseline=sealed.pane.baseline_id, payload=payload).encode())
        for partition, encoded in by_partition.items():
            for bundle in PaneMessage.bundles(encoded, self.checkpoints.part_bytes):
                producer.send(self.kafka.panes_topic, partition=partition, key=None,
                              value=PaneMessage("panes", source.name, self.group,
                                                payload=bundle).encode())

    def _heartbeat(self, source: _Source, now: float) -> tuple[int, bool, bool]:
        """Idle: no record reached the clock for idle_timeout_s, and the partition was read
        to the end of its log within that time. A silent partition is at the end at every
        heartbeat; one that receives only turned-away records (an unknown model, malformed)
        all the time is at the end after most polls, if seldom at the moment of a
        heartbeat; one with a backlog to read is not, so a record in the backlog is never
        left behind by the others' clock."""
        self._note_end(source)
        idle = (not self.until_end and now - source.last_record > self.idle_timeout_s
                and now - source.at_end <= self.idle_timeout_s)
        return source.watermark, idle, source.final

    def _note_end(self, source: _Source) -> None:
        assert self.consumer is not None
        try:
            highwater = self.consumer.highwater(source.tp)
        except (AssertionError, KeyError):
            return
        if highwater is not None and source.position is not None \
                and source.position >= highwater:
            source.at_end = self.clock()

    def report(self) -> None:
        """Lag, watermark and late records per owned partition, for the metrics."""
        assert self.consumer is not None
        for source in self.sources.values():
            tp = source.tp
            late = source.builder.stats.late if source.builder is not None else 0
            if late > source.reported_late:
                self.metrics.late(tp.topic, late - source.reported_late)
                source.reported_late = late
            if source.watermark != NO_TIME:
                self.metrics.watermark(tp.topic, tp.partition, source.watermark)
            highwater = self.consumer.highwater(tp)
            if highwater is not None and source.position is not None:
                self.metrics.lag(tp.topic, tp.partition, max(highwater - source.position, 0))

    # -- rebalances --------------------------------------------------------------------------

    def assign(self, partitions: list[TP], saved: Mapping[bytes, bytes]) -> None:
        """Take over partitions, each from its checkpoint (``saved``, by key) if any."""
        assert self.consumer is not None
        for tp in partitions:
            labels = tp.topic in self.label_topics
            builder = None if labels else PaneBuilder(self.config, self.baselines)
            source = _Source(tp, builder, final=False, now=self.clock())
            value = saved.get(builder_key(self.group, tp.topic, tp.partition))
            if value is not None:
                checkpoint = BuilderCheckpoint.decode(value)
                try:
                    if builder is not None:
                        builder.restore(checkpoint.state)
                except BaselineMismatch as exc:
                    self.skipped_checkpoints += 1
                    log.warning("%s: checkpoint not restored (%s); its open panes are "
                                "dropped and the partition continues from offset %s",
                                source.name, exc, checkpoint.position)
                    source.builder = PaneBuilder(self.config, self.baselines)
                source.final = checkpoint.final
                source.position = checkpoint.position  # not new, so not dirty
                if checkpoint.position is not None:
                    self._check_deleted(source, checkpoint.position)
                # Continue exactly where the checkpoint was taken. The committed offset says
                # the same (same transaction), but reading it fails or falls back to the
                # reset policy while a dead replica's transaction still holds pending offsets.
                if checkpoint.position is not None:
                    self.consumer.seek(tp, checkpoint.position)
            self.sources[tp] = source
        log.info("assigned %s", ", ".join(map(source_name, partitions)) or "nothing")

    def revoke(self, partitions: list[TP], producer: KafkaProducer, transaction: Any) -> None:
        """Checkpoint first, so the next owner continues exactly where we stopped."""
        revoked = {tp for tp in partitions if tp in self.sources}
        try:
            self.commit(producer, transaction, only=revoked)
        except Exception:  # the next owner redoes the work from the last checkpoint
            log.warning("checkpoint on revoke failed; the new owner resumes from the last one",
                        exc_info=True)
        for tp in revoked:
            self.stats.merge(self.sources.pop(tp).committed)
            self.metrics.forget_partition(tp.topic, tp.partition)
        if revoked:
            log.info("revoked %s", ", ".join(map(source_name, sorted(revoked))))

    # -- the end -----------------------------------------------------------------------------

    @property
    def finishing(self) -> bool:
        """until_end: every owned partition is sealed for good, and one waits for its
        commit (then the run ends as soon as it is written). Partitions that reach their
        end before the others, such as a labels topic read ahead of the requests, wait for
        the next periodic checkpoint: a transaction each would only slow the run down."""
        sources = self.sources.values()
        return all(s.final for s in sources) and any(s.dirty for s in sources)

    @property
    def done(self) -> bool:
        """until_end: every owned partition sealed and committed."""
        return all(s.final and not (s.dirty or s.panes or s.dead or s.join)
                   for s in self.sources.values())

    def release(self) -> BuilderStats:
        """Forget every source; returns the record counters of the run. Only committed
        work counts: what was not committed is redone by the next owner (or by this process
        after a Kafka failure) and counted then."""
        for source in self.sources.values():
            self.stats.merge(source.committed)
        self.sources.clear()
        return self.stats
