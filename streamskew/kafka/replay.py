"""``streamskew replay``: re-run the engine over a time range of the topics.

Partitions are assigned by hand from ``offsets_for_times(start)`` to ``offsets_for_times(end)``
(record timestamps), nothing is committed to any group, and only records whose *event* time
lies in ``[start, end)`` count. Each partition is a source of one
:class:`~streamskew.detector.sources.SourceCoordinator`, which decides lateness per record
and closes panes once every partition has passed them, exactly as the live service does, so
a replay yields the events (and event ids) a live run over the same records yields.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kafka import KafkaConsumer
from kafka import TopicPartition as TP

from ..baseline import Baseline
from ..config import Config
from ..detector.builder import BuilderStats
from ..detector.evaluator import WindowResult
from ..detector.events import SkewEvent
from ..detector.sources import SourceCoordinator
from ..records import BadRecord
from .clients import consumer_settings
from .failures import KafkaProblem, connect_admin
from .topics import RetentionWatch, retention_ms, source_topics

__all__ = ["ReplayResult", "replay"]

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    events: list[SkewEvent] = field(default_factory=list)
    stats: BuilderStats = field(default_factory=BuilderStats)
    windows: int = 0
    records: int = 0
    warnings: list[str] = field(default_factory=list)


def _range_offsets(consumer: KafkaConsumer, partitions: list[TP], start_ms: int,
                   end_ms: int | None) -> tuple[dict[TP, int], dict[TP, int]]:
    ends = consumer.end_offsets(partitions)
    found = consumer.offsets_for_times({tp: start_ms for tp in partitions})
    first = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in partitions}
    if end_ms is None:
        return first, ends
    found = consumer.offsets_for_times({tp: end_ms for tp in partitions})
    last = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in partitions}
    return first, last


def replay(config: Config, baselines: Baseline | Mapping[str, Baseline], start_ms: int,
           end_ms: int | None = None, bootstrap_servers: str | None = None,
           on_event: Callable[[SkewEvent], None] | None = None,
           on_window: Callable[[WindowResult], None] | None = None,
           progress: bool | None = None,
           on_bad_record: Callable[[BadRecord], None] | None = None) -> ReplayResult:
    """Replay ``[start_ms, end_ms)`` of the configured topics through the engine.

    ``on_bad_record`` sees every record the engine turned away (its ``position`` is the
    record's offset in its partition); a replay writes no dead letters itself."""
    from tqdm import tqdm

    models = {"default": baselines} if isinstance(baselines, Baseline) else dict(baselines)
    admin = connect_admin(config.kafka, bootstrap_servers, "replay")
    try:
        topics = source_topics(config.kafka, admin.list_topics())
        retention = RetentionWatch(retention_ms(admin, topics))
    finally:
        admin.close()
    if not topics:
        wanted = config.kafka.topic_pattern or ", ".join(config.kafka.topics) or "(none)"
        raise KafkaProblem(f"replay: no source topic to replay: [kafka] topics/topic_pattern "
                           f"= {wanted}; check the config and --bootstrap-servers")
    settings = consumer_settings(config.kafka, bootstrap_servers, group_id=None)
    consumer = KafkaConsumer(**settings)
    result = ReplayResult()
    try:
        partitions = [TP(t, p) for t in topics
                      for p in sorted(consumer.partitions_for_topic(t) or ())]
        first, last = _range_offsets(consumer, partitions, start_ms, end_ms)
        todo = [tp for tp in partitions if first[tp] < last[tp]]
        report = None if on_bad_record is None else (
            lambda source, record: on_bad_record(record))
        sources = SourceCoordinator(config, models, on_bad_record=report, on_window=on_window,
                                    time_range=(start_ms, end_ms))
        sources.expect(_name(tp) for tp in todo)
        consumer.assign(todo)
        for tp in todo:
            consumer.seek(tp, first[tp])
        total = sum(last[tp] - first[tp] for tp in todo)
        active = set(todo)
        show = sys.stderr.isatty() if progress is None else progress
        with tqdm(total=total, unit="rec", unit_scale=True, desc="replay", disable=not show,
                  file=sys.stderr) as bar:
            deadline = time.monotonic() + 60
            while active:
                batches = consumer.poll(timeout_ms=200)
                if not batches:
                    if time.monotonic() > deadline:
                        raise KafkaProblem("replay: no records for 60 s; is the broker up?")
                    continue
                deadline = time.monotonic() + 60
                for tp, records in batches.items():
                    records = [r for r in records if r.offset < last[tp]]
                    if records:
                        warning = retention.check(tp.topic, min(r.timestamp for r in records))
                        if warning:
                            log.warning("%s", warning)
                            result.warnings.append(warning)
                        _emit(sources.add(_name(tp),
                                          [r.value if r.value is not None else b""
                                           for r in records],
                                          timestamps=[r.timestamp for r in records],
                                          ids=[r.offset for r in records]), result, on_event)
                        bar.update(len(records))
                        result.records += len(records)
                    if consumer.position(tp) >= last[tp]:
                        _emit(sources.finish(_name(tp)), result, on_event)
                        active.discard(tp)
                        consumer.pause(tp)
        _emit(sources.end_of_input(), result, on_event)
        result.stats = sources.builder_stats
        result.stats.late += sources.evaluator.late_records
        result.windows = sources.evaluator.windows
        return result
    finally:
        consumer.close()


def _name(tp: TP) -> str:
    return f"{tp.topic}/{tp.partition}"


def _emit(events: list[SkewEvent], result: ReplayResult,
          on_event: Callable[[SkewEvent], None] | None) -> None:
    for event in events:
        result.events.append(event)
        if on_event is not None:
            on_event(event)
