"""Checkpoints in a compacted Kafka topic: the latest value per key wins.

Keys name what they restore: ``builder/<group>/<topic>/<partition>`` (a source partition's
open panes and clocks) and ``evaluator/<group>/<panes partition>`` (windows, pending panes,
hysteresis, source watermarks). They are written in the same Kafka transaction as the
offsets they correspond to, so a restored checkpoint always matches the committed position.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

__all__ = ["builder_key", "evaluator_key", "read_latest"]


def builder_key(group: str, topic: str, partition: int) -> bytes:
    return f"builder/{group}/{topic}/{partition}".encode()


def evaluator_key(group: str, partition: int) -> bytes:
    return f"evaluator/{group}/{partition}".encode()


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
