"""Stage 1 of the engine: records of one source -> sealed event-time panes.

A :class:`PaneBuilder` owns one source: a file, or one Kafka partition. It decodes batches,
asks the source's :class:`~streamskew.detector.clock.SourceClock` what each record is, folds
the on-time ones into the pane of their event time (per model), and *seals* a pane once the
source's watermark has passed its end. Late records (their pane already sealed) and records
that stayed too far ahead of the stream are handed to ``on_bad_record`` with the watermark
they were judged against, never silently dropped. Every decision is the one the records
would get arriving one at a time, so the same records in the same order give the same
sealed panes however the batches are cut.

Without event times (no timestamp in the input and none supplied by the source) every
record goes to one pane, sealed at the end of the input: the whole input is one window.
"""

from __future__ import annotations

from base64 import b64decode, b64encode
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import numpy as np
import orjson

from ..baseline import Baseline
from ..config import Config
from ..records import NO_TIME, BadRecord, Columns, Decoder, Reason, strict_json
from .clock import NEVER, ClockStep, SourceClock
from .models import DEFAULT_MODEL, LATEST, ModelBaselines
from .pane import BatchValues, EncodedPanes, Pane, fold, fold_rows

__all__ = ["DEFAULT_MODEL", "WHOLE_INPUT", "BuilderStats", "PaneBuilder", "SealedPane", "fold"]
WHOLE_INPUT = -1  # the single pane used without event times


@dataclass(frozen=True)
class SealedPane:
    """A pane of one model that this source will never add to again."""

    model: str
    index: int
    pane: Pane


@dataclass
class BuilderStats:
    """Counters for summaries, metrics and reports."""

    records: int = 0
    accepted: int = 0  # folded into a pane
    bad: dict[str, int] = field(default_factory=dict)  # rejected records, by reason
    field_errors: dict[str, int] = field(default_factory=dict)  # records used in part
    late: int = 0  # dead-lettered: their pane had already closed
    outside_range: int = 0  # replay: event time outside the requested range
    min_event_time: int | None = None  # smallest and largest event time seen (any record)
    max_event_time: int | None = None

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    def merge(self, other: BuilderStats) -> None:
        self.records += other.records
        self.accepted += other.accepted
        self.late += other.late
        self.outside_range += other.outside_range
        for mine, theirs in ((self.bad, other.bad), (self.field_errors, other.field_errors)):
            for reason, count in theirs.items():
                mine[reason] = mine.get(reason, 0) + count
        self._span(other.min_event_time, other.max_event_time)

    def _span(self, low: int | None, high: int | None) -> None:
        if low is not None:
            known = self.min_event_time
            self.min_event_time = low if known is None else min(known, low)
        if high is not None:
            known = self.max_event_time
            self.max_event_time = high if known is None else max(known, high)


def baseline_for(baselines: Mapping[str, Baseline], model: str, pane: int = LATEST
                 ) -> Baseline:
    """The model's own baseline (at pane ``pane``: see
    :meth:`~streamskew.detector.models.ModelBaselines.at`), else the ``default`` one, else
    the only one."""
    if isinstance(baselines, ModelBaselines):
        found = baselines.at(model, pane)
        if found is not None:
            return found
    return baselines.get(model) or baselines.get(DEFAULT_MODEL) or next(iter(baselines.values()))


def union_schema(baselines: Mapping[str, Baseline]) -> dict[str, str]:
    schema: dict[str, str] = {}
    for baseline in baselines.values():
        for name, kind in baseline.schema.items():
            schema.setdefault(name, kind)
    return schema


def not_monitored(config: Config, baselines: Mapping[str, Baseline]) -> set[str]:
    """Keys of a request that are known but not features: ignored in the config, left
    out of a baseline as ids or timestamps, or (with ``[labels]``) the request id, which a
    flat message (``features = ""``) carries beside its features."""
    names = {name for name, feature in config.features.items() if feature.ignore}
    for baseline in baselines.values():
        names.update(baseline.left_out)
    if config.labels is not None and config.labels.request_id:
        names.add(config.labels.request_id.split(".")[0])
    return names


@dataclass
class _Held:
    """Records held by the clock (too far ahead, or the stream time not known yet), in
    arrival order: their decoded rows and what a dead letter or a checkpoint needs."""

    rows: Columns | None = None
    arrivals: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    fallbacks: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    raws: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.arrivals)

    @property
    def times(self) -> np.ndarray:
        return self.rows.timestamps if self.rows is not None else np.empty(0, np.int64)

    def add(self, other: _Held) -> _Held:
        if not len(other):
            return self
        if not len(self):
            return other
        return _Held(Columns.concat([self.rows, other.rows]),  # type: ignore[list-item]
                     np.concatenate([self.arrivals, other.arrivals]),
                     np.concatenate([self.ids, other.ids]),
                     np.concatenate([self.fallbacks, other.fallbacks]),
                     self.raws + other.raws)

    def take(self, keep: np.ndarray) -> _Held:
        if not len(keep):
            return _Held()
        assert self.rows is not None
        return _Held(self.rows.take(keep), self.arrivals[keep], self.ids[keep],
                     self.fallbacks[keep], [self.raws[i] for i in keep])


class PaneBuilder:
    """Decodes one source's records into per-model panes and seals them by watermark."""

    def __init__(self, config: Config, baselines: Mapping[str, Baseline],
                 on_bad_record: Callable[[BadRecord], None] | None = None,
                 decoder: Decoder | None = None,
                 time_range: tuple[int, int | None] | None = None) -> None:
        self.config = config
        self.time_range = time_range  # replay: only event times in [start, end) count
        self.baselines = ModelBaselines.of(baselines, config)
        self._own_decoder = decoder is None
        self.decoder = decoder or self._decoder()
        self._revision = self.baselines.revision
        self.on_bad_record = on_bad_record
        window = config.window
        self.pane_ms = window.pane_ms
        self.clock = SourceClock(window.pane_ms, window.allowed_lateness_ms,
                                 window.max_ahead_ms, window.watermark_quorum,
                                 window.watermark_memory)
        self.stats = BuilderStats()
        self.open: dict[tuple[str, int], Pane] = {}
        self._encoded = EncodedPanes()  # the open panes' checkpoint text (state_bytes)
        # Records that reached the clock (all but those turned away): a source whose
        # records are all turned away tells the clock nothing, and counts as idle.
        self.admitted = 0
        self.held = _Held()
        self.event_time: bool | None = None  # decided by the first accepted records
        self.next_id = 0  # ids of records given without ids: their running count

    def _decoder(self) -> Decoder:
        return Decoder(self.config.message, union_schema(self.baselines),
                       not_features=not_monitored(self.config, self.baselines))

    @property
    def watermark(self) -> int:
        """Event time up to which this source is complete (NO_TIME while unknown)."""
        return self.clock.watermark if self.event_time else NO_TIME

    @property
    def stream_time(self) -> int:
        return self.clock.stream_time

    # -- input -------------------------------------------------------------------------------

    def add(self, messages: Sequence[bytes | str | Mapping[str, Any]],
            timestamps: Sequence[int] | np.ndarray | None = None,
            ids: Sequence[int] | np.ndarray | None = None,
            on_parsed: Callable[[list[Any]], None] | None = None) -> list[SealedPane]:
        """Fold a batch of messages in; returns the panes this batch sealed.

        ``timestamps`` (epoch ms, one per message) are the event times of messages without a
        timestamp of their own, e.g. Kafka record timestamps. ``ids`` name the records in
        the source (Kafka offsets, line numbers); rejected records are reported with their
        id as ``position``. Without ids, records are numbered by their running count.
        ``on_parsed``, if given, is called with the messages as the decoder parsed them, in
        order and in chunks (see ``Decoder.decode``; one JSON value per message, None where
        not strict JSON or over ``max_bytes``, a mapping as it is): a label join then reads
        the messages without parsing them again.
        """
        if not len(messages):
            return []
        record_ids = self._ids(len(messages), ids)
        if self._revision != self.baselines.revision:  # a baseline was added: its features
            self._revision = self.baselines.revision
            if self._own_decoder:
                self.decoder = self._decoder()
        if all(isinstance(m, bytes) for m in messages):
            columns, bad = self.decoder.decode(messages, on_parsed)  # type: ignore[arg-type]
        else:
            columns, bad = self.decoder.decode_objects(messages)
            if on_parsed is not None:  # (not the Kafka path: its messages are bytes)
                max_bytes = self.decoder.message.max_bytes
                on_parsed([strict_json(m, max_bytes) if isinstance(m, bytes | str) else m
                           for m in messages])
        self.stats.records += len(messages)
        fallbacks = np.full(columns.count, NO_TIME, dtype=np.int64)
        if timestamps is not None:
            fallbacks = np.asarray(timestamps, dtype=np.int64)[columns.positions]
            columns.timestamps = np.where(columns.timestamps == NO_TIME, fallbacks,
                                          columns.timestamps)
        columns, fallbacks, bad = self._require_times(columns, fallbacks, bad, messages)
        columns, fallbacks, bad = self._admit(columns, fallbacks, bad, messages)
        self._report(bad, record_ids, columns)
        if not columns.count:
            return []
        self.admitted += columns.count
        if not self.event_time:
            self._fold(columns, np.full(columns.count, WHOLE_INPUT))
            return []
        self._note_span(columns.timestamps)
        step = self.clock.observe(columns.timestamps)
        if not (step.held.any() or step.late.any() or len(self.held)):
            self._fold(*self._in_range(columns))  # the common case: every record on time
        else:
            self._decide(columns, step, record_ids, fallbacks, messages)
        return self._seal(self.clock.sealed_through(self.clock.stream_time).item())

    def _ids(self, n: int, ids: Sequence[int] | np.ndarray | None) -> np.ndarray:
        if ids is not None:
            return np.asarray(ids, dtype=np.int64)
        numbered = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        return numbered

    def _require_times(self, columns: Columns, fallbacks: np.ndarray, bad: list[BadRecord],
                       messages: Sequence[Any]
                       ) -> tuple[Columns, np.ndarray, list[BadRecord]]:
        """Decide event-time mode on first data; then every record needs an event time."""
        has_time = columns.timestamps != NO_TIME
        if self.event_time is None and columns.count:
            self.event_time = bool(has_time.any())
        if not self.event_time or has_time.all():
            return columns, fallbacks, bad
        rejected: set[int] = set()
        for row in np.flatnonzero(~has_time):
            position = int(columns.positions[row])
            rejected.add(position)
            bad.append(BadRecord(position, Reason.MISSING_TIMESTAMP,
                                 "no event time in the message", _as_bytes(messages[position])))
        # A rejected record is reported once, for its rejection, not for its fields too.
        bad = [b for b in bad if not (b.used and b.position in rejected)]
        keep = np.flatnonzero(has_time)
        return columns.take(keep), fallbacks[keep], bad

    def _admit(self, columns: Columns, fallbacks: np.ndarray, bad: list[BadRecord],
               messages: Sequence[Any]) -> tuple[Columns, np.ndarray, list[BadRecord]]:
        """Records whose model (or version) has no baseline are turned away here, before
        they touch the clock or any state: ``unknown_model`` / ``unknown_version``."""
        if not columns.count:
            return columns, fallbacks, bad
        keys = columns.models
        if keys is None:
            keys = np.full(columns.count, DEFAULT_MODEL, dtype=object)
        first = keys[0]
        if first is not None and (keys == first).all():  # the common case: one model
            counts = {first: columns.count}
        else:
            counts = Counter(keys.tolist())
        verdicts: dict[Any, tuple[str, str] | None] = {}
        for key, count in counts.items():
            name = DEFAULT_MODEL if key is None else key
            baseline, reason, detail = self.baselines.admit(name, count)
            verdicts[key] = None if baseline is not None else (reason, detail)
        if all(v is None for v in verdicts.values()):
            return columns, fallbacks, bad
        keep = np.fromiter((verdicts[k] is None for k in keys.tolist()), bool, columns.count)
        rejected: set[int] = set()
        for row in np.flatnonzero(~keep):
            reason, detail = verdicts[keys[row]]  # type: ignore[misc]
            position = int(columns.positions[row])
            rejected.add(position)
            bad.append(BadRecord(position, reason, detail, _as_bytes(messages[position])))
        bad = [b for b in bad if not (b.used and b.position in rejected)]
        rows = np.flatnonzero(keep)
        return columns.take(rows), fallbacks[rows], bad

    def _report(self, bad: list[BadRecord], ids: np.ndarray, columns: Columns) -> None:
        if not bad:
            return
        times = dict(zip(columns.positions.tolist(), columns.timestamps.tolist(), strict=True))
        for record in bad:
            counts = self.stats.field_errors if record.used else self.stats.bad
            counts[record.reason] = counts.get(record.reason, 0) + 1
            if self.on_bad_record is not None:
                time = times.get(record.position, NO_TIME)
                self.on_bad_record(replace(record, position=int(ids[record.position]),
                                           event_time=None if time == NO_TIME else time))

    def _note_span(self, times: np.ndarray) -> None:
        self.stats._span(int(times.min()), int(times.max()))

    # -- what the clock decided --------------------------------------------------------------

    def _decide(self, columns: Columns, step: ClockStep, ids: np.ndarray,
                fallbacks: np.ndarray, messages: Sequence[Any]) -> None:
        """Fold, hold, release and dead-letter a batch by the clock's per-record decisions."""
        times = columns.timestamps
        rows = np.arange(columns.count)
        new_held = rows[step.held]
        fresh = _Held(columns.take(new_held), step.steps[new_held],
                      ids[columns.positions[new_held]], fallbacks[new_held],
                      [_as_bytes(messages[p]) for p in columns.positions[new_held]])
        held = self.held.add(fresh)
        released_at = self.clock.release_steps(held.times, held.arrivals, step)
        released = released_at != NEVER
        # Judged against the panes sealed before the step that releases them.
        before = step.stream_before[np.clip(released_at - step.steps[0], 0, len(rows) - 1)]
        late_release = released & (held.times // self.pane_ms
                                   <= self.clock.sealed_through(before))
        expired = ~released & self.clock.expired(held.arrivals)

        for i in np.flatnonzero(step.late):
            self._dead(Reason.LATE, int(times[i]), int(step.stream_before[i]),
                       int(ids[columns.positions[i]]), _as_bytes(messages[columns.positions[i]]))
        for i in np.flatnonzero(late_release):
            self._dead(Reason.LATE, int(held.times[i]), int(before[i]), int(held.ids[i]),
                       held.raws[i])
        for i in np.flatnonzero(expired):
            self._dead(Reason.AHEAD_OF_WATERMARK, int(held.times[i]), self.clock.stream_time,
                       int(held.ids[i]), held.raws[i])

        # Fold order is the one-record-at-a-time order: by the step that folds a record,
        # and within a step by arrival (a record released at step j came before record j).
        fold_now = rows[step.on_time]
        fold_held = np.flatnonzero(released & ~late_release)
        parts = []
        if len(fold_held):
            assert held.rows is not None
            parts.append(held.rows.take(fold_held))
        if len(fold_now):
            parts.append(columns.take(fold_now))
        if parts:
            folded = Columns.concat(parts)
            fold_step = np.concatenate([released_at[fold_held], step.steps[fold_now]])
            arrival = np.concatenate([held.arrivals[fold_held], step.steps[fold_now]])
            self._fold(*self._in_range(folded.take(np.lexsort((arrival, fold_step)))))
        self.held = held.take(np.flatnonzero(~released & ~expired))

    def _dead(self, reason: str, time: int, stream: int, record_id: int, raw: bytes) -> None:
        """Dead-letter one record the clock turned away (outside a replay's range: counted)."""
        if not self._inside(time):
            self.stats.outside_range += 1
            return
        lateness = self.config.window.allowed_lateness
        watermark = stream - self.clock.lateness_ms if stream != NO_TIME else NO_TIME
        if reason == Reason.LATE:
            self.stats.late += 1
            detail = (f"event time {_iso(time)} is in a pane that had closed: watermark "
                      f"{_iso(watermark)} (stream time {_iso(stream)} - allowed_lateness "
                      f"{lateness})")
        else:
            self.stats.bad[reason] = self.stats.bad.get(reason, 0) + 1
            detail = (f"event time {_iso(time)} is {_duration(time - stream)} ahead of the "
                      f"stream time {_iso(stream)} (watermark {_iso(watermark)}); the source "
                      f"did not follow within {self.clock.memory} records (max_ahead "
                      f"{self.config.window.max_ahead})")
        if self.on_bad_record is not None:
            self.on_bad_record(BadRecord(record_id, reason, detail, raw, event_time=time))

    def _inside(self, time: int) -> bool:
        if self.time_range is None:
            return True
        start, end = self.time_range
        return time >= start and (end is None or time < end)

    def _in_range(self, columns: Columns) -> tuple[Columns, np.ndarray]:
        """The rows to fold and their panes; a replay counts rows outside its range."""
        if self.time_range is not None:
            start, end = self.time_range
            inside = columns.timestamps >= start
            if end is not None:
                inside &= columns.timestamps < end
            if not inside.all():
                self.stats.outside_range += int((~inside).sum())
                columns = columns.take(np.flatnonzero(inside))
        return columns, columns.timestamps // self.pane_ms

    def _fold(self, columns: Columns, panes: np.ndarray) -> None:
        if not columns.count:
            return
        self.stats.accepted += columns.count
        # One sort by (model, pane), stable (records keep their order within a pane), and
        # one take: each pane's records are then a slice. With many models a batch holds
        # hundreds of small panes, and a take per pane would cost more than folding it.
        names, codes = _model_codes(columns)
        order = np.lexsort((panes, codes))
        if not np.array_equal(order, np.arange(len(order))):
            columns, panes, codes = columns.take(order), panes[order], codes[order]
        cut = (np.diff(panes) != 0) | (np.diff(codes) != 0)
        bounds = [0, *(np.flatnonzero(cut) + 1).tolist(), columns.count]
        batch = BatchValues(columns)
        for start, stop in pairwise(bounds):
            model, index = names[int(codes[start])], int(panes[start])
            key = (model, index)
            pane = self.open.get(key)
            # The baseline in force at this pane (a baseline set later applies to
            # panes from its own start on: an open pane keeps its bins).
            baseline = baseline_for(self.baselines, model, index)
            if pane is None:
                pane = self.open[key] = Pane.sparse(index, baseline)
            fold_rows(pane, batch, baseline, start, stop)

    # -- sealing -----------------------------------------------------------------------------

    def _seal(self, through: int) -> list[SealedPane]:
        ready = [key for key in self.open if key[1] <= through]
        return [SealedPane(model, index, self.open.pop((model, index)))
                for model, index in sorted(ready, key=lambda k: (k[1], k[0]))]

    def advance_to(self, watermark: int) -> list[SealedPane]:
        """Let event time pass without records (an idle source): seal every pane whose end
        is at or before ``watermark``; records for them are late from now on."""
        if watermark == NO_TIME or not self.event_time:
            return []
        self.clock.advance_to(watermark)
        return self._seal(self.clock.sealed_through(self.clock.stream_time).item())

    def seal_all(self) -> list[SealedPane]:
        """End of input: settle the held records, then seal every open pane (the
        whole-input pane too). Held records are folded when the source never had enough
        records to know its stream time; otherwise they stayed ahead and are dead-lettered."""
        if len(self.held):
            held, self.held = self.held, _Held()
            if self.clock.stream_time == NO_TIME:
                assert held.rows is not None
                self._fold(*self._in_range(held.rows))
            else:
                for i in range(len(held)):
                    self._dead(Reason.AHEAD_OF_WATERMARK, int(held.times[i]),
                               self.clock.stream_time, int(held.ids[i]), held.raws[i])
        sealed = [SealedPane(model, index, pane) for (model, index), pane in
                  sorted(self.open.items(), key=lambda item: (item[0][1], item[0][0]))]
        if self.open and self.event_time:
            last = max(index for _, index in self.open)
            self.clock.advance_to((last + 1) * self.pane_ms)
        self.open.clear()
        return sealed

    # -- checkpoints -------------------------------------------------------------------------

    def state_bytes(self) -> bytes:
        """The open panes, the clock and the held records, to continue this source elsewhere
        (a Kafka rebalance or restart)."""
        held = self.held
        return orjson.dumps({
            "event_time": self.event_time, "clock": self.clock.snapshot(),
            "next_id": self.next_id,
            "open": [[model, index, text] for (model, index), text in
                     zip(self.open, self._encoded.texts(self.open.values()), strict=True)],
            "held": [[int(held.arrivals[i]), int(held.ids[i]), int(held.fallbacks[i]),
                      b64encode(held.raws[i]).decode()] for i in range(len(held))],
        })

    def restore(self, data: bytes) -> None:
        """Continue from :meth:`state_bytes`; raises BaselineMismatch when the state was
        summarized against another baseline."""
        raw = orjson.loads(data)
        self.event_time = raw["event_time"]
        self.clock.restore(raw["clock"])
        self.next_id = raw["next_id"]
        self.open = {(model, index): Pane.from_bytes(b64decode(encoded),
                                                     baseline_for(self.baselines, model, index))
                     for model, index, encoded in raw["open"]}
        self.held = _Held()
        if raw["held"]:
            arrivals, ids, fallbacks, encoded = zip(*raw["held"], strict=True)
            raws = [b64decode(e) for e in encoded]
            rows, _ = self.decoder.decode(raws)  # field errors were reported the first time
            fallback = np.asarray(fallbacks, dtype=np.int64)
            rows.timestamps = np.where(rows.timestamps == NO_TIME, fallback, rows.timestamps)
            self.held = _Held(rows, np.asarray(arrivals, np.int64), np.asarray(ids, np.int64),
                              fallback, raws)


def _model_codes(columns: Columns) -> tuple[list[str], np.ndarray]:
    """The model names in a batch and each record's index into them."""
    models = columns.models
    if models is None:
        return [DEFAULT_MODEL], np.zeros(columns.count, np.int64)
    first = models[0]
    if all(m == first for m in models):  # the common case: one model
        return [first if first is not None else DEFAULT_MODEL], np.zeros(columns.count,
                                                                          np.int64)
    names = np.array([m if m is not None else DEFAULT_MODEL for m in models], dtype=object)
    unique, codes = np.unique(names, return_inverse=True)
    return [str(name) for name in unique], codes.astype(np.int64)


def _as_bytes(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode()
    try:
        return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return repr(message).encode()


def _iso(ms: int) -> str:
    if ms == NO_TIME:
        return "(unknown)"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds") \
            .replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if abs(ms) >= size:
            return f"{ms / size:.3g}{unit}"
    return f"{ms}ms"
