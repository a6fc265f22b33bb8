"""``streamskew run``: the detector as a Kafka consumer-group service.

Each process runs both stages of the engine and a poll loop that drives them:

1. **Source stage** (:mod:`.source_stage`). A consumer in group ``[kafka] group_id`` reads
   the prediction-request topics; every assigned partition is an engine source with its own
   builder. Sealed partial panes, watermark heartbeats, dead letters, the builders'
   checkpoints and the consumed offsets are written in **one Kafka transaction** per
   checkpoint interval.
2. **Evaluator stage** (:mod:`.evaluator_stage`). A consumer in group
   ``<group_id>.evaluator`` reads the panes topic (one partition, so exactly one process
   evaluates). Its source coordinator merges partial panes from every source partition and
   closes a pane once every partition's watermark has passed it; alerts, the checkpoint and
   the panes offsets go in one transaction too.

A crash or a rebalance therefore neither loses nor repeats anything: uncommitted work is
re-done from the last checkpoint, and because pane contents depend only on each partition's
records, it is re-done identically (same events, same event ids). A revoked partition is
checkpointed before it moves; a newly assigned one is restored from the state topic
(checkpoint values: :mod:`.state`).

With ``until_end`` the service stops once it has caught up with the end offsets it saw at
start: every source partition is then sealed ("final"), the evaluator flushes, and the
process exits. "Caught up" is judged by the consumer's fetch position, not by the last record
it returned: the end offset may lie past offsets that hold no record to return (a transaction
marker, aborted records, records deleted by retention before they were read).
SIGTERM/SIGINT finish the current batch, commit, and leave the group.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as TP
from kafka.errors import KafkaError, ProducerFencedError

from ..baseline import Baseline
from ..config import Config
from ..detector.builder import DEFAULT_MODEL, BuilderStats
from ..detector.engine import next_free_pane
from ..detector.evaluator import WindowResult
from ..detector.events import SkewEvent
from ..detector.models import ModelBaselines
from ..performance.join import JoinCounts
from .clients import admin_settings, consumer_settings, producer_settings
from .evaluator_stage import EvaluatorStage
from .evaluators import EvaluatorStages
from .failures import KafkaProblem, connect_admin, explain, is_transient
from .metrics import Metrics, NullMetrics
from .registry import RegistryEntry, RegistryFollower, registry_topic
from .slots import Slot
from .source_stage import SourceStage, dead_letter_headers, source_name
from .state import CheckpointStore, builder_key, evaluator_key
from .topics import (
    RetentionWatch,
    ensure_topics,
    internal_topics,
    retention_ms,
    source_topics,
    wanted_label_topics,
)
from .transactions import transaction

__all__ = ["DetectorService", "ServiceStats", "dead_letter_headers", "source_name"]

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0  # backoff after a transient Kafka failure, doubled up to RETRY_MAX_S
RETRY_MAX_S = 30.0
FENCED_LIMIT = 5  # fenced this many times in a row without a commit: someone else has our id

# The evaluator's state (every pane of the open windows) is larger than a builder's and
# changes only as panes arrive, so it is checkpointed every this many checkpoint intervals,
# or at once when there are alerts to publish. A crash re-reads at most that much of the
# panes topic, which is cheap.
EVALUATOR_CHECKPOINT_EVERY = 10


@dataclass
class ServiceStats:
    """What a run did (summed over the partitions this process owned). Only committed work
    counts, so records re-read after a failure are counted once."""

    builders: BuilderStats = field(default_factory=BuilderStats)
    events: list[SkewEvent] = field(default_factory=list)
    windows: int = 0
    dead_letters: int = 0
    transactions: int = 0
    kafka_errors: dict[str, int] = field(default_factory=dict)  # waited out, by error
    deleted_unread: dict[str, int] = field(default_factory=dict)  # by topic (retention)
    warnings: list[str] = field(default_factory=list)  # said in the log; repeat at the end
    labels: JoinCounts | None = None  # [labels]: the join's counts, if this process ran it


class DetectorService:
    """The consumer-group detector (see the module docs).

    ``clock`` (seconds, monotonic) decides when a silent partition counts as idle and when
    to checkpoint; the engine's verdicts never depend on it.
    """

    def __init__(self, config: Config, baselines: Baseline | Mapping[str, Baseline],
                 bootstrap_servers: str | None = None, until_end: bool = False,
                 checkpoint_interval_s: float = 1.0, idle_timeout_s: float = 30.0,
                 on_event: Callable[[SkewEvent], None] | None = None,
                 metrics: Metrics | None = None, max_poll_records: int = 5000,
                 worker: int = 0, clock: Callable[[], float] = time.monotonic,
                 on_window: Callable[[WindowResult], None] | None = None,
                 follow_registry: bool = True) -> None:
        self.config = config
        self.kafka = config.kafka
        # One resolver for every stage of this process: a registry entry set on it reaches
        # every builder and evaluator at once, and admissions ([models] max_models) are
        # counted once per process.
        self.baselines = ModelBaselines.of(
            {DEFAULT_MODEL: baselines} if isinstance(baselines, Baseline) else baselines, config)
        self.registry = RegistryFollower(self.kafka, bootstrap_servers) \
            if follow_registry else None
        self.bootstrap = bootstrap_servers
        self.until_end = until_end
        self.checkpoint_interval_s = checkpoint_interval_s
        self.on_event = on_event
        self.metrics: Metrics = metrics if metrics is not None else NullMetrics()
        self.metrics.use_baselines(self.baselines)  # bounds its model labels; baseline_info
        self.max_poll_records = max_poll_records
        self.worker = worker  # this process's number under `run --workers` (0 otherwise)
        self.clock = clock
        self.group = self.kafka.group_id
        self.stats = ServiceStats()
        self.expected_sources: set[str] = set()  # request partitions
        self.expected_label_sources: set[str] = set()  # [labels] partitions
        self.label_topics: list[str] = []
        self.checkpoints = CheckpointStore(self.kafka.state_topic, self.group)
        self.source_stage = SourceStage(config, self.baselines, self.metrics, clock,
                                        until_end, idle_timeout_s, self.checkpoints)
        self.evaluator_stage = EvaluatorStages(lambda: EvaluatorStage(
            config, self.baselines, self.metrics, lambda: self.expected_sources,
            self.checkpoints, on_window, expected_labels=lambda: self.expected_label_sources))
        self.joined_sources = self.joined_evaluator = False
        self._evaluator_due = 0  # checkpoints since the evaluator's last commit
        self._committed_since_failure = True
        self.slot: Slot | None = None
        self.transactional_id = ""
        self._topics_checked = 0.0  # when topic_pattern was last matched against the broker

    # -- setup -------------------------------------------------------------------------------

    def _connect(self, first: bool = True) -> None:
        """Create the clients and subscribe. The first time, a broker that cannot be had is
        a one-line KafkaProblem; later (after a failure) its errors are waited out."""
        admin = (connect_admin(self.kafka, self.bootstrap, "run") if first
                 else KafkaAdminClient(**admin_settings(self.kafka, self.bootstrap)))
        try:
            registry = [registry_topic(self.kafka)] if self.registry is not None else []
            created = ensure_topics(admin, internal_topics(self.kafka) + registry)
            if created:
                log.info("created topics %s", ", ".join(created))
            available = admin.list_topics()
            self.label_topics = wanted_label_topics(self.kafka, self.config.labels, available,
                                                    "run")
            self.topics = [t for t in source_topics(self.kafka, available)
                           if t not in self.label_topics]
            self.source_stage.retention = RetentionWatch(
                retention_ms(admin, self.topics + self.label_topics))
        finally:
            admin.close()
        if not self.topics:
            wanted = self.kafka.topic_pattern or ", ".join(self.kafka.topics) or "(none)"
            raise KafkaProblem(f"run: no source topic to read: [kafka] topics/topic_pattern = "
                               f"{wanted}; create the topic or fix the config")
        settings = consumer_settings(self.kafka, self.bootstrap)
        self.state_settings = {k: v for k, v in settings.items()
                               if k not in ("max_poll_records",)}
        self.source_consumer = KafkaConsumer(**{**settings, "group_id": self.group,
                                                "max_poll_records": self.max_poll_records})
        self.panes_consumer = KafkaConsumer(**{**settings,
                                               "group_id": f"{self.group}.evaluator"})
        self.source_stage.consumer = self.source_consumer
        self.evaluator_stage.consumer = self.panes_consumer
        self.source_stage.label_topics = set(self.label_topics)
        partitions = [TP(t, p) for t in self.topics + self.label_topics
                      for p in sorted(self.source_consumer.partitions_for_topic(t) or ())]
        self.expected_sources = {source_name(tp) for tp in partitions
                                 if tp.topic not in self.label_topics}
        self.expected_label_sources = {source_name(tp) for tp in partitions
                                       if tp.topic in self.label_topics}
        if self.until_end:
            self.source_stage.targets = self.source_consumer.end_offsets(partitions)
        # A transactional id that a restarted process reuses: init_transactions then fences
        # the dead one and aborts its open transaction at once, instead of leaving its
        # uncommitted offsets to block the partitions until the transaction times out.
        assert self.slot is not None
        self.transactional_id = self.slot.transactional_id(
            self.kafka.client.get("transactional_id"))
        self.producer = KafkaProducer(**producer_settings(
            self.kafka, self.bootstrap, transactional_id=self.transactional_id, linger_ms=5))
        self.producer.init_transactions()
        self.source_consumer.subscribe(self.topics + self.label_topics,
                                       listener=_SourceListener(self))
        self._topics_checked = self.clock()
        self.panes_consumer.subscribe([self.kafka.panes_topic],
                                      listener=_EvaluatorListener(self))
        if self.registry is not None:  # (again after a failure: re-read, applied once)
            self.registry.close()
            for entry in self.registry.start():
                self._use_registered(entry)

    # -- main loop ---------------------------------------------------------------------------

    def run(self, stop: Any = None) -> ServiceStats:
        """Consume until ``stop`` (a threading.Event) is set, or the end with until_end.

        Transient Kafka failures (broker down or paused, coordinator moved, this member
        fenced out of its group) are logged and waited out with backoff; the service then
        carries on from its last committed transaction. A failure the user must fix
        (authentication, authorization, configuration) ends it as a KafkaProblem."""
        self.slot = Slot.take(self.group)
        try:
            self._connect()
            with _collecting_less():
                self._serve(stop)
        finally:
            self._close()
            self.slot.release()
        return self.stats

    def _serve(self, stop: Any) -> None:
        failures = 0
        while True:
            try:
                self._loop(stop)
                return
            except Exception as exc:
                if not is_transient(exc):
                    if isinstance(exc, KafkaError):
                        raise explain(exc, self.kafka, self.bootstrap, "run") from exc
                    raise
                failures = 1 if self._committed_since_failure else failures + 1
                if isinstance(exc, ProducerFencedError) and failures >= FENCED_LIMIT:
                    raise KafkaProblem(
                        f"run: another process keeps taking transactional id "
                        f"{self.transactional_id!r}; give each deployment its own group_id "
                        f"(or remove transactional_id from [kafka])") from exc
                if not self._recover(exc, failures, stop):
                    return

    def _recover(self, exc: Exception, failures: int, stop: Any) -> bool:
        """Drop uncommitted work and the clients, wait, reconnect (until it works or
        ``stop``); False when stopped first."""
        name = type(exc).__name__
        self.stats.kafka_errors[name] = self.stats.kafka_errors.get(name, 0) + 1
        self.metrics.kafka_error(name)
        self._abandon()
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
        log.warning("Kafka failed (%s: %s); carrying on from the last checkpoint, "
                    "reconnecting in %.0fs", name, str(exc)[:300], delay)
        while not _wait(stop, delay):
            try:
                self._connect(first=False)
            except Exception as again:
                if not is_transient(again):
                    raise explain(again, self.kafka, self.bootstrap, "run") from again
                self._abandon()
                delay = min(RETRY_MAX_S, delay * 2)
                log.warning("Kafka still unavailable (%s: %s); next try in %.0fs",
                            type(again).__name__, str(again)[:200], delay)
                continue
            log.info("reconnected to Kafka; resuming from the last checkpoint")
            self._committed_since_failure = False
            return True
        return False

    def _abandon(self) -> None:
        """Forget uncommitted work (it is redone from the checkpoints) and close the clients
        without committing anything."""
        self.stats.builders.merge(self.source_stage.release())
        self.source_stage.stats = BuilderStats()
        self.evaluator_stage.release()
        self.joined_sources = self.joined_evaluator = False
        for client in ("source_consumer", "panes_consumer"):
            consumer = self.__dict__.pop(client, None)
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close(autocommit=False, timeout_ms=1000)
        producer = self.__dict__.pop("producer", None)
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.close(timeout=1)

    def _loop(self, stop: Any) -> None:
        last_checkpoint = self.clock()
        while not (stop is not None and stop.is_set()):
            self._poll_sources()
            self._poll_panes()
            # A partition sealed for good (until_end) is committed at once, so its final
            # heartbeat goes out; the evaluator still commits at its own pace (alerts,
            # every EVALUATOR_CHECKPOINT_EVERY checkpoints, the end): with a dozen
            # partitions finishing one after another, forcing it each time would write
            # its whole state (the label join's pending requests) a dozen times.
            if self.clock() - last_checkpoint >= self.checkpoint_interval_s \
                    or self._finishing():
                self.checkpoint()
                # Measured after the commit: a slow checkpoint must not make every
                # following poll checkpoint again.
                last_checkpoint = self.clock()
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
        if self.clock() - self._topics_checked < every_s:
            return
        self._topics_checked = self.clock()
        topics = [t for t in source_topics(self.kafka, self.source_consumer.topics())
                  if t not in self.label_topics]
        if set(topics) - set(self.topics):
            log.info("new source topics: %s", ", ".join(sorted(set(topics) - set(self.topics))))
            self.topics = sorted(set(self.topics) | set(topics))  # deleted ones: left to Kafka
            self.source_consumer.subscribe(self.topics + self.label_topics,
                                           listener=_SourceListener(self))

    def _poll_sources(self) -> None:
        for tp, records in self.source_consumer.poll(timeout_ms=100).items():
            self.source_stage.feed(tp, records)
        self.source_stage.follow_positions()

    def _poll_panes(self) -> None:
        # A zero timeout never lets the group join complete; keep it short once joined:
        # the client fetches in its own thread, so 1 ms takes what has arrived, and the
        # source records waiting meanwhile are not held up (with [labels], 10 ms here cost
        # ~0.5 s of a 100,000-request run: the panes stay empty between commits).
        busy = self.joined_evaluator and bool(self.source_stage.sources)
        for tp, records in self.panes_consumer.poll(timeout_ms=1 if busy else 100).items():
            self.evaluator_stage.on_records(tp, records)

    # -- commits -----------------------------------------------------------------------------

    def checkpoint(self, force: bool = False) -> None:
        """Commit stage 1 (panes, dead letters, builder state, source offsets), then stage 2
        (alerts, evaluator state, panes offsets), each in its own transaction. Stage 2 waits
        for alerts or for EVALUATOR_CHECKPOINT_EVERY checkpoints, unless ``force``. New
        registry entries are taken in first (so at most a checkpoint interval late)."""
        if self.registry is not None:
            for entry in self.registry.poll():
                self._use_registered(entry)
        if self.source_stage.commit(self.producer, transaction):
            self.stats.transactions += 1
            self._committed_since_failure = True
        self._evaluator_due += 1
        if force or self.evaluator_stage.pending \
                or self._evaluator_due >= EVALUATOR_CHECKPOINT_EVERY:
            if self.evaluator_stage.commit(self.producer, transaction, self._published):
                self.stats.transactions += 1
            self._evaluator_due = 0
        self.source_stage.report()

    def _use_registered(self, entry: RegistryEntry) -> None:
        """Judge ``entry``'s model and version against its baseline from the pane that holds
        its ``from_time`` on, or from the first pane this process holds nothing of yet
        when that is later (no pane mixes two baselines' bins)."""
        version = entry.version or None
        current = self.baselines.own(entry.model, version)
        if current is not None and current.id == entry.baseline.id:
            return  # already in use (read again after a reconnect)
        evaluators = [s.sources.evaluator for s in self.evaluator_stage.stages.values()
                      if s.sources is not None]
        builders = [s.builder for s in self.source_stage.sources.values()]
        from_pane = max(entry.from_time // self.config.window.pane_ms,
                        next_free_pane(builders, evaluators))
        try:
            self.baselines.set_baseline(entry.model, version, entry.baseline, from_pane)
        except ValueError as exc:
            log.warning("registry: model %r version %r not used: %s", entry.model,
                        entry.version, exc)
            return
        self.metrics.use_baselines(self.baselines)
        log.info("registry: model %r version %s judged against baseline %s from pane %d on",
                 entry.model, repr(entry.version) if entry.version else "(any)",
                 entry.baseline.id, from_pane)

    def _published(self, event: SkewEvent) -> None:
        self.stats.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    # -- rebalances (called by the listeners, inside poll) -----------------------------------

    def assign_sources(self, partitions: list[TP]) -> None:
        keys = {builder_key(self.group, tp.topic, tp.partition) for tp in partitions}
        self.source_stage.assign(partitions, self.checkpoints.read(self.state_settings, keys))

    def revoke_sources(self, partitions: list[TP]) -> None:
        self.source_stage.revoke(partitions, self.producer, transaction)

    def assign_evaluator(self, partitions: list[TP]) -> None:
        keys = {evaluator_key(self.group, tp.partition) for tp in partitions}
        self.evaluator_stage.assign(partitions, self.checkpoints.read(self.state_settings, keys))

    def revoke_evaluator(self) -> None:
        self.evaluator_stage.revoke(self.producer, transaction, self._published)

    # -- the end -----------------------------------------------------------------------------

    def _finishing(self) -> bool:
        return self.until_end and (self.source_stage.finishing or (
            self.evaluator_stage.owner and self.evaluator_stage.done
            and bool(self.evaluator_stage.pending)))

    def _done(self) -> bool:
        """until_end: both groups joined, my partitions sealed and committed, and the
        evaluation (if it is mine) flushed and committed."""
        if not (self.joined_sources and self.joined_evaluator):
            return False
        if self.evaluator_stage.pending or not self.source_stage.done:
            return False
        return self.evaluator_stage.done

    def _close(self) -> None:
        # Everything is committed; forget it before closing, so the revocation callbacks
        # that closing triggers neither commit nor count it again.
        self.stats.builders.merge(self.source_stage.release())
        if self.evaluator_stage.monitor is not None:
            self.stats.labels = self.evaluator_stage.monitor.counts
        self.evaluator_stage.release()
        self.stats.windows = self.evaluator_stage.windows
        self.stats.dead_letters = self.source_stage.dead_letters
        self.stats.deleted_unread = dict(self.source_stage.deleted_unread)
        self.stats.warnings = list(self.source_stage.warnings)
        if self.registry is not None:
            self.registry.close()
        for client in ("source_consumer", "panes_consumer", "producer"):
            closer = getattr(self.__dict__.get(client), "close", None)
            if closer is None:
                continue
            try:
                closer()
            except Exception:  # closing is best effort; the work is committed
                log.debug("close failed", exc_info=True)


def _wait(stop: Any, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set meanwhile; True when stopped."""
    if stop is None:
        time.sleep(seconds)
        return False
    return bool(stop.wait(seconds))


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
