"""Several evaluators: one per panes-topic partition, the models spread over them.

The panes topic has ``[kafka] panes_partitions`` partitions (1 by default). A model's sealed
panes always go to the partition :func:`panes_partition` picks from its name (every version
of a model to the same one, so ``version_shift`` sees them side by side), and every source's
watermark heartbeat goes to every partition. The evaluator group (``<group_id>.evaluator``)
spreads the partitions over the running processes; each owned partition gets its own
:class:`~streamskew.kafka.evaluator_stage.EvaluatorStage`, with its own coordinator and its
own checkpoint (``evaluator/<group>/<partition>``), so a partition moves between processes
with exactly its models' state. The label join (``[labels]``) lives with partition 0. Any
assignment of partitions to processes gives the same events: each model is judged in one
place, from the same panes and watermarks.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as TP

from ..detector.events import SkewEvent
from ..performance.monitor import PerformanceMonitor
from .evaluator_stage import JOIN_PARTITION, EvaluatorStage

__all__ = ["EvaluatorStages", "panes_partition"]


def panes_partition(model: str, partitions: int) -> int:
    """The panes partition of ``model`` (its name before any version part).

    A stable hash (CRC-32 of the UTF-8 name), the same in every process and release,
    whatever the Kafka client's own partitioner does:

    >>> panes_partition("fraud", 1), panes_partition("fraud", 3)
    (0, 1)
    >>> panes_partition("fraud\\x1fv2", 3) == panes_partition("fraud", 3)
    True
    """
    name = model.split("\x1f", 1)[0]
    return zlib.crc32(name.encode()) % partitions if partitions > 1 else 0


class EvaluatorStages:
    """The evaluator stages of the panes partitions this process owns (module docs).

    It answers what the service asks of its evaluation (``owner``, ``done``, ``pending``,
    ``windows``, ``skipped``) over all of them.
    """

    def __init__(self, make: Callable[[], EvaluatorStage]) -> None:
        self.make = make
        self.stages: dict[int, EvaluatorStage] = {}
        self.consumer: KafkaConsumer | None = None  # set by the service once connected
        self.windows_released = 0  # judged by stages since released
        self.skipped_released: dict[str, int] = {}
        self.released_checkpoint_bytes = 0

    @property
    def owner(self) -> bool:
        return any(stage.owner for stage in self.stages.values())

    @property
    def done(self) -> bool:
        return all(stage.done for stage in self.stages.values())

    @property
    def pending(self) -> list[SkewEvent]:
        return [event for stage in self.stages.values() for event in stage.pending]

    @property
    def windows(self) -> int:
        return self.windows_released + sum(s.windows for s in self.stages.values())

    @property
    def skipped(self) -> dict[str, int]:
        total = dict(self.skipped_released)
        for stage in self.stages.values():
            for reason, count in stage.skipped.items():
                total[reason] = total.get(reason, 0) + count
        return total

    @property
    def monitor(self) -> PerformanceMonitor | None:
        """The label join, when this process owns its partition (``JOIN_PARTITION``)."""
        stage = self.stages.get(JOIN_PARTITION)
        return stage.monitor if stage is not None else None

    @property
    def checkpoint_bytes(self) -> int:
        """Stored size of the last checkpoints (kept once the stages are released)."""
        if self.stages:
            return sum(stage.checkpoint_bytes for stage in self.stages.values())
        return self.released_checkpoint_bytes

    def on_records(self, tp: TP, records: Iterable[Any]) -> None:
        stage = self.stages.get(tp.partition)
        if stage is not None:
            stage.on_records(records)

    def commit(self, producer: KafkaProducer, transaction: Any,
               on_event: Callable[[SkewEvent], None]) -> bool:
        """Each partition's alerts, checkpoint and offsets in its own transaction."""
        committed = False
        for stage in self.stages.values():
            committed = stage.commit(producer, transaction, on_event) or committed
        return committed

    def assign(self, partitions: list[TP], saved: Mapping[bytes, bytes]) -> None:
        for tp in sorted(partitions, key=lambda tp: tp.partition):
            stage = self.make()
            stage.consumer = self.consumer
            stage.assign([tp], saved)
            self.stages[tp.partition] = stage

    def revoke(self, producer: KafkaProducer, transaction: Any,
               on_event: Callable[[SkewEvent], None]) -> None:
        for stage in self.stages.values():
            stage.revoke(producer, transaction, on_event)
        self._forget()

    def release(self) -> None:
        for stage in self.stages.values():
            stage.release()
        self._forget()

    def _forget(self) -> None:
        if self.stages:
            self.released_checkpoint_bytes = sum(s.checkpoint_bytes for s in self.stages.values())
        for stage in self.stages.values():
            self.windows_released += stage.windows
            for reason, count in stage.skipped.items():
                self.skipped_released[reason] = self.skipped_released.get(reason, 0) + count
        self.stages.clear()
