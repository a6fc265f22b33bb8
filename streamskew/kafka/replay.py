"""``streamskew replay``: re-run the engine over a time range of the topics.

Partitions are assigned by hand from ``offsets_for_times(start)`` to ``offsets_for_times(end)``
(record timestamps), nothing is committed to any group, and only records whose *event* time
lies in ``[start, end)`` count. Each partition is a source of one
:class:`~streamskew.detector.sources.SourceCoordinator`, which decides lateness per record
and closes panes once every partition has passed them, exactly as the live service does, so
a replay yields the events (and event ids) a live run over the same records yields.

With ``[labels]``, the labels topic's partitions are read too, and the live service's label
join judges performance skew: one
:class:`~streamskew.performance.monitor.PerformanceMonitor` (what the evaluator stage runs),
fed per polled batch the arrays the live source stage ships
(:class:`~streamskew.performance.shipping.JoinFeed`), of the requests whose event time lies
in ``[start, end)`` and of the labels whose label time lies in the labels' range
(:func:`label_range`). Every request and labels partition is expected by the join and marked
final at its end, as ``run --until-end`` does, so the ``performance`` and
``estimated_performance`` events (and ids) and the join's counts are those of a live run.
Requests and labels are read in step by record time (each kind by its own consumer; the
kind whose slowest partition is behind is read next, as ``detect --labels`` interleaves its
files), so the join holds about what a live run holds (pending requests, labels waiting for
their request), not a whole topic of one kind. Which partition is read when changes no
verdict: the coordinator and the join decide per source, in each source's order.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from kafka import KafkaConsumer
from kafka import TopicPartition as TP

from ..baseline import Baseline
from ..config import Config
from ..detector.builder import BuilderStats
from ..detector.evaluator import WindowResult
from ..detector.events import SkewEvent
from ..detector.sources import SourceCoordinator
from ..performance.join import JoinCounts
from ..performance.monitor import PerformanceMonitor
from ..performance.shipping import JoinFeed
from ..performance.windows import PerformanceWindow
from ..records import NO_TIME, BadRecord
from .clients import consumer_settings
from .failures import KafkaProblem, connect_admin
from .topics import RetentionWatch, retention_ms, source_topics, wanted_label_topics

__all__ = ["ReplayResult", "label_range", "replay"]

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    events: list[SkewEvent] = field(default_factory=list)
    stats: BuilderStats = field(default_factory=BuilderStats)
    windows: int = 0
    records: int = 0  # request records read
    warnings: list[str] = field(default_factory=list)
    labels: JoinCounts | None = None  # [labels]: the label join's counts
    label_records: int = 0  # label records read
    labels_outside_range: int = 0  # read, but their label time is outside label_range


def label_range(config: Config, start_ms: int, end_ms: int | None
                ) -> tuple[int, int | None]:
    """The label times a replay of requests ``[start_ms, end_ms)`` reads: from ``start_ms``
    (a label never comes before its request) to ``end_ms + 2 max_delay + allowed_lateness``.

    A label joins a request at most ``max_delay`` after it; up to ``2 max_delay`` after it,
    the join still tells it apart (``late``); later, a live join has forgotten the request
    (the label watermark, ``allowed_lateness`` behind the label times, passed it) and counts
    the label ``without_request`` whatever request it names. So every label a live run could
    count for a request of the range is in this range, and reading the labels topic to its
    end would only add labels of later requests (``without_request`` here) at the cost of
    reading, for a replay of one hour a year ago, a year of labels. An open end
    (``end_ms`` None) reads the labels topic to its end, as the live run does.

    >>> config = Config.from_dict({"labels": {"max_delay": "1h"},
    ...                            "window": {"allowed_lateness": "30s"}})
    >>> label_range(config, 0, 3_600_000)
    (0, 10830000)
    """
    if end_ms is None:
        return start_ms, None
    labels = config.labels
    max_delay = labels.max_delay_ms if labels is not None else 0
    return start_ms, end_ms + 2 * max_delay + config.window.allowed_lateness_ms


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


def _inside(times: np.ndarray, start: int, end: int | None) -> np.ndarray:
    inside = times >= start
    if end is not None:
        inside &= times < end
    return inside


class _ReplayJoin:
    """The label join of a replay: the live evaluator's monitor, fed what the live source
    stage ships, restricted to the replay's ranges (module docs)."""

    def __init__(self, config: Config, baselines: Mapping[str, Baseline],
                 requests: tuple[int, int | None], labels: tuple[int, int | None],
                 on_window: Callable[[PerformanceWindow], None] | None) -> None:
        self.monitor = PerformanceMonitor(config, baselines, on_window=on_window)
        self.feed = JoinFeed(config, baselines)
        self.requests_range = requests
        self.labels_range = labels
        self.outside = 0  # labels read whose label time is outside labels_range

    def expect(self, requests: Iterable[str], labels: Iterable[str]) -> None:
        self.monitor.join.expect(sorted(requests), sorted(labels))

    def requests(self, source: str, values: list[bytes], timestamps: list[int]
                 ) -> list[SkewEvent]:
        # The engine's builders count only event times in [start, end) (time_range): so
        # does the join. Unreadable requests are not in the arrays (the builder counts them).
        arrays = self.feed.requests(values, timestamps)
        inside = _inside(arrays.times, *self.requests_range)
        if not inside.all():
            arrays = arrays.select(inside)
        if not len(arrays):
            return []
        return self.monitor.add_request_keys(arrays, source)

    def labels(self, source: str, values: list[bytes], timestamps: list[int]
               ) -> list[SkewEvent]:
        # Unreadable labels are counted by reason (bad_labels); a replay writes no dead
        # letters. A label without a time of its own has its record's timestamp.
        arrays, _ = self.feed.labels(values, timestamps)
        inside = _inside(arrays.times, *self.labels_range) | (arrays.times == NO_TIME)
        if not inside.all():
            self.outside += int((~inside).sum())
            arrays = arrays.select(inside)
        if not len(arrays) and not arrays.bad:
            return []
        return self.monitor.add_label_keys(arrays, source)

    def final(self, source: str, labels: bool) -> list[SkewEvent]:
        """A partition read to its end; once every one is, the join finishes."""
        return self.monitor.source_state(source, idle=False, final=True, labels=labels)

    def finish(self) -> list[SkewEvent]:
        return [] if self.monitor.join.finished else self.monitor.finish()


def replay(config: Config, baselines: Baseline | Mapping[str, Baseline], start_ms: int,
           end_ms: int | None = None, bootstrap_servers: str | None = None,
           on_event: Callable[[SkewEvent], None] | None = None,
           on_window: Callable[[WindowResult], None] | None = None,
           progress: bool | None = None,
           on_bad_record: Callable[[BadRecord], None] | None = None,
           on_performance_window: Callable[[PerformanceWindow], None] | None = None
           ) -> ReplayResult:
    """Replay ``[start_ms, end_ms)`` of the configured topics through the engine.

    With ``[labels]``, the labels topic too, for performance skew (module docs);
    ``on_performance_window`` sees every judged performance window. ``on_bad_record`` sees
    every request record the engine turned away (its ``position`` is the record's offset in
    its partition); a replay writes no dead letters itself."""
    from tqdm import tqdm

    models = {"default": baselines} if isinstance(baselines, Baseline) else dict(baselines)
    admin = connect_admin(config.kafka, bootstrap_servers, "replay")
    try:
        available = admin.list_topics()
        label_topics = wanted_label_topics(config.kafka, config.labels, available, "replay")
        topics = [t for t in source_topics(config.kafka, available) if t not in label_topics]
        retention = RetentionWatch(retention_ms(admin, topics + label_topics))
    finally:
        admin.close()
    if not topics:
        wanted = config.kafka.topic_pattern or ", ".join(config.kafka.topics) or "(none)"
        raise KafkaProblem(f"replay: no source topic to replay: [kafka] topics/topic_pattern "
                           f"= {wanted}; check the config and --bootstrap-servers")
    labels_from, labels_to = label_range(config, start_ms, end_ms)
    join = _ReplayJoin(config, models, (start_ms, end_ms), (labels_from, labels_to),
                       on_performance_window) if config.labels is not None else None
    settings = consumer_settings(config.kafka, bootstrap_servers, group_id=None)
    consumer = KafkaConsumer(**settings)
    consumers = [consumer]
    result = ReplayResult()
    try:
        partitions = _partitions(consumer, topics)
        first, last = _range_offsets(consumer, partitions, start_ms, end_ms)
        label_partitions = _partitions(consumer, label_topics)
        if label_partitions:
            # Offsets by record time, past the label range by allowed_lateness: labels
            # stamped out of order by up to that much are still read (then filtered by
            # their label time).
            cut = None if labels_to is None else labels_to + config.window.allowed_lateness_ms
            label_first, label_last = _range_offsets(consumer, label_partitions, labels_from,
                                                     cut)
            first.update(label_first)
            last.update(label_last)
        todo = [tp for tp in partitions if first[tp] < last[tp]]
        label_todo = [tp for tp in label_partitions if first[tp] < last[tp]]
        is_label = set(label_todo)
        report = None if on_bad_record is None else (
            lambda source, record: on_bad_record(record))
        sources = SourceCoordinator(config, models, on_bad_record=report, on_window=on_window,
                                    time_range=(start_ms, end_ms))
        sources.expect(_name(tp) for tp in todo)
        if join is not None:
            join.expect(map(_name, todo), map(_name, label_todo))
        # Labels get a consumer of their own, polled only while they are behind the requests
        # (pause/resume of kafka-python 3.0 can leave a resumed partition's parked records
        # unreturned for good, so one consumer with paused partitions is not used).
        reader = {False: consumer, True: consumer}
        if label_todo:
            reader[True] = KafkaConsumer(**settings)
            consumers.append(reader[True])
        for kind, assigned in ((False, todo), (True, label_todo)):
            if assigned:
                reader[kind].assign(assigned)
                for tp in assigned:
                    reader[kind].seek(tp, first[tp])
        total = sum(last[tp] - first[tp] for tp in todo + label_todo)
        active = set(todo + label_todo)
        pacer = _Pacer(is_label, start_ms)
        show = sys.stderr.isatty() if progress is None else progress
        with tqdm(total=total, unit="rec", unit_scale=True, desc="replay", disable=not show,
                  file=sys.stderr) as bar:
            deadline = time.monotonic() + 60
            while active:
                polled = reader[pacer.labels_next(active)]
                batches = polled.poll(timeout_ms=200)
                if batches:
                    deadline = time.monotonic() + 60
                elif time.monotonic() > deadline:
                    raise KafkaProblem("replay: no records for 60 s; is the broker up?")
                for tp, records in batches.items():
                    records = [r for r in records if r.offset < last[tp]]
                    if not records:
                        continue
                    warning = retention.check(tp.topic, min(r.timestamp for r in records))
                    if warning:
                        log.warning("%s", warning)
                        result.warnings.append(warning)
                    values = [r.value if r.value is not None else b"" for r in records]
                    timestamps = [r.timestamp for r in records]
                    pacer.read(tp, max(timestamps))
                    if tp in is_label:
                        assert join is not None
                        _emit(join.labels(_name(tp), values, timestamps), result, on_event)
                        result.label_records += len(records)
                    else:
                        _emit(sources.add(_name(tp), values, timestamps=timestamps,
                                          ids=[r.offset for r in records]), result, on_event)
                        if join is not None:
                            _emit(join.requests(_name(tp), values, timestamps), result,
                                  on_event)
                        result.records += len(records)
                    bar.update(len(records))
                # Every active partition of the polled consumer, not only those polled: the
                # position also moves past offsets that return no record (transaction
                # markers, aborted records).
                for tp in sorted(active, key=_name):
                    if reader[tp in is_label] is polled and polled.position(tp) >= last[tp]:
                        _emit(_finish(tp, tp in is_label, sources, join), result, on_event)
                        active.discard(tp)
                        polled.pause(tp)
        _emit(sources.end_of_input(), result, on_event)
        if join is not None:
            _emit(join.finish(), result, on_event)
            result.labels = join.monitor.counts
            result.labels_outside_range = join.outside
        result.stats = sources.builder_stats
        result.stats.late += sources.evaluator.late_records
        result.windows = sources.evaluator.windows
        return result
    finally:
        for client in consumers:
            client.close()


def _partitions(consumer: KafkaConsumer, topics: list[str]) -> list[TP]:
    return [TP(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]


def _finish(tp: TP, labels: bool, sources: SourceCoordinator, join: _ReplayJoin | None
            ) -> list[SkewEvent]:
    """A partition read to the end of its range: final for the coordinator and the join."""
    events = [] if labels else sources.finish(_name(tp))
    if join is not None:
        events += join.final(_name(tp), labels)
    return events


class _Pacer:
    """Keeps requests and labels in step by record time (module docs): the kind whose
    slowest partition is behind the other kind's slowest is read next, as ``detect
    --labels`` interleaves its files by time. A kind read to its end leaves the other."""

    def __init__(self, labels: set[TP], start_ms: int) -> None:
        self.labels = labels
        self.start_ms = start_ms
        self.front: dict[TP, int] = {}  # latest record time read, per partition

    def read(self, tp: TP, latest: int) -> None:
        self.front[tp] = max(self.front.get(tp, self.start_ms), latest)

    def labels_next(self, active: set[TP]) -> bool:
        """Whether to read labels next (else requests)."""
        requests = [self.front.get(tp, self.start_ms) for tp in active if tp not in self.labels]
        labels = [self.front.get(tp, self.start_ms) for tp in active if tp in self.labels]
        if not labels or not requests:
            return bool(labels)
        return min(labels) < min(requests)


def _name(tp: TP) -> str:
    return f"{tp.topic}/{tp.partition}"


def _emit(events: list[SkewEvent], result: ReplayResult,
          on_event: Callable[[SkewEvent], None] | None) -> None:
    for event in events:
        result.events.append(event)
        if on_event is not None:
            on_event(event)
