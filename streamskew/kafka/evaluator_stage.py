"""Stage 2 of the service: the panes topic -> windows -> skew events.

The process that owns the panes topic's partition (group ``<group_id>.evaluator``) feeds
every source partition's sealed panes and watermark heartbeats to one
:class:`~streamskew.detector.sources.SourceCoordinator`, which closes a pane once every
partition has passed it and judges the windows. Alerts, the coordinator's checkpoint and the
panes offsets are committed in one Kafka transaction (:meth:`EvaluatorStage.commit`).

Records on the panes topic that another deployment wrote (another group id) or that were
summarized against another baseline are counted and skipped, never merged: their bins would
mean something else.

With ``[labels]``, the owner of the panes topic's first partition also runs the label join
(one :class:`~streamskew.performance.monitor.PerformanceMonitor`): the source stages ship
it, per polled batch, what it needs of every request and label partition, in each
partition's order, and heartbeats say when a partition is idle or final. Its
``performance`` / ``estimated_performance`` events are published with the skew events, and
its snapshot (pending requests, waiting labels, open panes, windows, hysteresis, counts)
goes into the same checkpoint, in the same transaction as the panes offsets: a restart
continues the join exactly where the last commit left it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as TP
from kafka.structs import OffsetAndMetadata

from ..baseline import Baseline
from ..config import Config
from ..detector.builder import baseline_for
from ..detector.evaluator import WindowResult
from ..detector.events import SkewEvent
from ..detector.sources import SourceCoordinator
from ..detector.window import BaselineMismatch, Pane
from ..errors import StreamskewError
from ..performance.monitor import PerformanceMonitor, references_of
from ..performance.shipping import LabelArrays, RequestArrays
from ..performance.windows import PerformanceWindow
from .metrics import Metrics
from .state import CheckpointStore, EvaluatorCheckpoint, PaneMessage, evaluator_key
from .transactions import TXN_TIMEOUT_S, send_offsets

__all__ = ["JOIN_PARTITION", "EvaluatorStage"]

log = logging.getLogger(__name__)

JOIN_PARTITION = 0  # the panes partition whose owner runs the label join
JOIN_OUTCOMES = ("matched", "late", "duplicate", "without_request", "unlabelled", "dropped",
                 "unsampled_labels")


class EvaluatorStage:
    """The evaluation, when this process owns the panes topic (see the module docs)."""

    def __init__(self, config: Config, baselines: Mapping[str, Baseline], metrics: Metrics,
                 expected: Callable[[], Iterable[str]], checkpoints: CheckpointStore,
                 on_window: Callable[[WindowResult], None] | None = None,
                 expected_labels: Callable[[], Iterable[str]] = tuple,
                 on_performance_window: Callable[[PerformanceWindow], None] | None = None
                 ) -> None:
        self.config = config
        self.kafka = config.kafka
        self.group = config.kafka.group_id
        self.baselines = baselines
        self.metrics = metrics
        self.expected = expected  # every source partition the windows must wait for
        self.consumer: KafkaConsumer | None = None  # set by the service once connected
        self.sources: SourceCoordinator | None = None  # while this process evaluates
        self.partitions: set[TP] = set()
        self.pending: list[SkewEvent] = []  # judged, not committed yet
        self.committed_positions: dict[TP, int] | None = None
        self.windows_before = 0  # windows the restored coordinator had judged elsewhere
        self.committed_windows = 0  # the coordinator's window count at its last commit
        self.windows = 0  # windows judged by this process, over its ownerships
        self.skipped: dict[str, int] = {}  # panes-topic records skipped, by reason
        self.checkpoints = checkpoints
        self.checkpoint_bytes = 0  # stored size of the last checkpoint
        self.then = on_window  # also told of every judged window
        # [labels]: the label join, while this process owns JOIN_PARTITION.
        self.expected_labels = expected_labels  # every labels partition the join waits for
        self.with_labels = config.labels is not None
        if self.with_labels and not references_of(baselines):
            raise StreamskewError("[labels] needs a baseline with a reference performance: "
                                  "rebuild it on the validation set with `streamskew "
                                  "baseline build --label COL [--prediction COL]`")
        self.monitor: PerformanceMonitor | None = None
        self.then_performance = on_performance_window
        self.reported_counts: dict[str, int] = {}  # join counts told to the metrics

    @property
    def owner(self) -> bool:
        return self.sources is not None

    @property
    def done(self) -> bool:
        """until_end: every source finished and the evaluation flushed (with the label join:
        every labels partition finished too, and the join's last windows judged)."""
        if self.sources is None:
            return True
        return self.sources.done and (self.monitor is None or self.monitor.join.finished)

    # -- panes -------------------------------------------------------------------------------

    def on_records(self, records: Iterable[Any]) -> None:
        if self.sources is None:
            return
        for record in records:
            self._on_message(record.value)

    def _on_message(self, value: bytes | None) -> None:
        assert self.sources is not None
        try:
            message = PaneMessage.decode(value or b"")
        except ValueError:
            self._skip("not_a_pane_record")
            return
        if message.group != self.group:  # another deployment sharing the topic
            self._skip("other_deployment")
            return
        if message.kind == "panes":
            try:
                bundled = message.unbundle()
            except ValueError:
                self._skip("not_a_pane_record")
                return
            for pane in bundled:
                if pane.kind == "pane" and pane.group == self.group:
                    self._on_pane(pane)
                else:
                    self._skip("not_a_pane_record")
        elif message.kind in ("requests", "labels"):
            self._join(message)
        elif message.kind == "pane":
            self._on_pane(message)
        elif message.labels:  # a labels partition: only the join follows it
            if self.monitor is not None:
                self.pending.extend(self.monitor.source_state(
                    message.source, message.idle, message.final, labels=True))
        else:
            self.pending.extend(self.sources.heartbeat(message.source, message.watermark,
                                                       idle=message.idle, final=message.final))
            if self.monitor is not None:
                self.pending.extend(self.monitor.source_state(
                    message.source, message.idle, message.final, labels=False))

    def _on_pane(self, message: PaneMessage) -> None:
        assert self.sources is not None
        # The baseline in force at that pane (a registry entry may change it from a
        # pane on; partial panes summarized against another are skipped below).
        baseline = baseline_for(self.baselines, message.model, message.index)
        try:
            pane = Pane.from_bytes(message.payload, baseline)
        except BaselineMismatch:
            self._skip("other_baseline")
            return
        except ValueError:
            self._skip("not_a_pane_record")
            return
        if pane.values is None and len(pane.summaries) < len(baseline.features):
            # one part of a large pane
            whole = Pane.empty(message.index, baseline)
            whole.merge(pane)
            pane = whole
        self.sources.add_pane(message.source, message.model, message.index, pane)

    def _join(self, message: PaneMessage) -> None:
        if self.monitor is None:
            self._skip("labels_without_join")  # [labels] off here, on where it was written
            return
        try:
            if message.kind == "requests":
                events = self.monitor.add_request_keys(RequestArrays.decode(message.payload),
                                                       message.source)
            else:
                events = self.monitor.add_label_keys(LabelArrays.decode(message.payload),
                                                     message.source)
        except (ValueError, KeyError, TypeError):
            self._skip("damaged_join_record")
            return
        self.pending.extend(events)

    def on_performance(self, window: PerformanceWindow) -> None:
        self.metrics.performance_window(window)
        if self.then_performance is not None:
            self.then_performance(window)

    def _skip(self, reason: str) -> None:
        count = self.skipped.get(reason, 0)
        if not count:
            log.warning("panes topic %s: skipping records (%s); counted from now on",
                        self.kafka.panes_topic, reason.replace("_", " "))
        self.skipped[reason] = count + 1

    def on_window(self, result: WindowResult) -> None:
        self.metrics.pane_closed(result.model)
        self.metrics.window_judged(result.model, result.results)
        if self.then is not None:
            self.then(result)

    # -- commits -----------------------------------------------------------------------------

    def commit(self, producer: KafkaProducer, transaction: Any,
               on_event: Callable[[SkewEvent], None]) -> bool:
        """Alerts, checkpoint and panes offsets in one transaction (when anything changed)."""
        if self.sources is None:
            return False
        assert self.consumer is not None
        positions = {tp: self.consumer.position(tp) for tp in self.partitions}
        if not self.pending and positions == self.committed_positions:
            return False
        snapshot = self.sources.snapshot()
        performance = self.monitor.snapshot() if self.monitor is not None else b""
        with transaction(producer):
            for event in self.pending:
                producer.send(self.kafka.alerts_topic, key=event.key.encode(),
                              value=event.to_json(), timestamp_ms=event.window_end)
            for tp in self.partitions:
                self.checkpoint_bytes = self.checkpoints.send(
                    producer, evaluator_key(self.group, tp.partition),
                    EvaluatorCheckpoint(positions[tp], snapshot,
                                        performance if tp.partition == JOIN_PARTITION
                                        else b"").encode())
            send_offsets(producer,
                         {tp: OffsetAndMetadata(p, "", -1) for tp, p in positions.items()},
                         self.consumer.group_metadata(), TXN_TIMEOUT_S)
        self.committed_positions = positions
        self.committed_windows = self.sources.evaluator.windows
        for event in self.pending:
            self.metrics.event(event)
            on_event(event)
        self.pending.clear()
        self._report_join()
        return True

    def _report_join(self) -> None:
        """The join's committed counts (as increments) and pending requests, for metrics."""
        if self.monitor is None:
            return
        counts = self.monitor.counts
        now = {name: getattr(counts, name) for name in JOIN_OUTCOMES}
        now["bad"] = sum(counts.bad_labels.values())
        self.metrics.label_join({k: v - self.reported_counts.get(k, 0) for k, v in now.items()},
                                self.monitor.join.pending.live)
        self.reported_counts = now

    # -- rebalances --------------------------------------------------------------------------

    def assign(self, partitions: list[TP], saved: Mapping[bytes, bytes]) -> None:
        assert self.consumer is not None
        self.sources = SourceCoordinator(self.config, self.baselines,
                                         on_window=self.on_window)
        self.partitions = set(partitions)
        joins = self.with_labels and any(tp.partition == JOIN_PARTITION for tp in partitions)
        self.monitor = PerformanceMonitor(self.config, self.baselines,
                                          on_window=self.on_performance) if joins else None
        for tp in partitions:  # one panes partition in the default layout
            value = saved.get(evaluator_key(self.group, tp.partition))
            if value is None:
                continue
            checkpoint = EvaluatorCheckpoint.decode(value)
            try:
                self.sources.restore(checkpoint.state)
            except BaselineMismatch as exc:
                log.warning("evaluator checkpoint not restored (%s): windows start empty",
                            exc)
                self._skip("other_baseline")
            if self.monitor is not None and checkpoint.performance:
                self._restore_join(checkpoint.performance)
            self.consumer.seek(tp, checkpoint.position)
        # Skews raised before the restart or rebalance show at once, not at their next event.
        self.metrics.evaluator_assigned(
            (m.model, *key) for m in self.sources.evaluator.models.values()
            for key, state in m.hysteresis.items() if state.active)
        self.sources.expect(self.expected())
        if self.monitor is not None:
            self.monitor.join.expect(sorted(self.expected()), sorted(self.expected_labels()))
            counts = self.monitor.counts
            self.reported_counts = {name: getattr(counts, name) for name in JOIN_OUTCOMES}
            self.reported_counts["bad"] = sum(counts.bad_labels.values())
        self.committed_positions = None
        self.windows_before = self.sources.evaluator.windows  # judged by earlier owners
        self.committed_windows = self.windows_before
        log.info("evaluating %s", ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions))

    def _restore_join(self, data: bytes) -> None:
        assert self.monitor is not None
        try:
            self.monitor.restore(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("label join not restored from the checkpoint (%r): it starts empty",
                        exc)
            self.monitor = PerformanceMonitor(self.config, self.baselines,
                                              on_window=self.on_performance)
            self._skip("damaged_join_checkpoint")

    def revoke(self, producer: KafkaProducer, transaction: Any,
               on_event: Callable[[SkewEvent], None]) -> None:
        if self.sources is None:
            return
        try:
            self.commit(producer, transaction, on_event)
        except Exception:
            log.warning("evaluator checkpoint on revoke failed", exc_info=True)
        self.release()
        self.metrics.evaluator_revoked()  # the next owner serves the scores from now on

    def release(self) -> None:
        """Stop evaluating (revoked, closing, or a Kafka failure), counting the windows
        judged and committed here; judged but uncommitted work is redone by the next owner
        (or by this process once Kafka is back) and counted then."""
        if self.sources is not None:
            self.windows += self.committed_windows - self.windows_before
        self.sources = None
        self.monitor = None
        self.partitions = set()
        self.pending.clear()
