"""Stage 1 of the engine: records of one source -> sealed event-time panes.

A :class:`PaneBuilder` owns one source: a file, or one Kafka partition. It decodes batches,
folds each record into the pane of its event time (per model), and *seals* a pane once the
source's watermark (largest event time seen minus ``allowed_lateness``) has passed the pane's
end. A record whose pane is already sealed is counted as late, not folded in. Lateness is a
property of the source alone, so the same records give the same sealed panes whichever
process reads them and however the batches are cut.

Without event times (no timestamp in the input and none supplied by the source) every
record goes to one pane, sealed at the end of the input: the whole input is one window.
"""

from __future__ import annotations

import time
from base64 import b64decode, b64encode
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ..baseline import Baseline, CategoricalBaseline
from ..config import Config
from ..records import NO_TIME, BadRecord, Columns, Decoder, Reason
from .window import Pane

__all__ = ["DEFAULT_MODEL", "WHOLE_INPUT", "BuilderStats", "PaneBuilder", "SealedPane"]

DEFAULT_MODEL = "default"
MAX_FUTURE_MS = 86_400_000  # event times more than a day ahead of the clock are bad
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
    accepted: int = 0
    bad: dict[str, int] = field(default_factory=dict)  # rejected records, by reason
    field_errors: dict[str, int] = field(default_factory=dict)  # records used in part
    late: int = 0
    outside_range: int = 0  # replay: event time outside the requested range

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


def baseline_for(baselines: Mapping[str, Baseline], model: str) -> Baseline:
    """The model's own baseline, else the ``default`` one, else the only one."""
    return baselines.get(model) or baselines.get(DEFAULT_MODEL) or next(iter(baselines.values()))


def union_schema(baselines: Mapping[str, Baseline]) -> dict[str, str]:
    schema: dict[str, str] = {}
    for baseline in baselines.values():
        for name, kind in baseline.schema.items():
            schema.setdefault(name, kind)
    return schema


class PaneBuilder:
    """Decodes one source's records into per-model panes and seals them by watermark."""

    def __init__(self, config: Config, baselines: Mapping[str, Baseline],
                 on_bad_record: Callable[[BadRecord], None] | None = None,
                 decoder: Decoder | None = None,
                 time_range: tuple[int, int | None] | None = None) -> None:
        self.config = config
        self.time_range = time_range  # replay: only event times in [start, end) count
        self.baselines = baselines
        self.decoder = decoder or Decoder(config.message, union_schema(baselines))
        self.on_bad_record = on_bad_record
        self.pane_ms = config.window.pane_ms
        self.lateness_ms = config.window.allowed_lateness_ms
        self.stats = BuilderStats()
        self.open: dict[tuple[str, int], Pane] = {}
        self.event_time: bool | None = None  # decided by the first accepted records
        self.max_time = NO_TIME
        self.sealed_through: int | None = None  # highest pane index sealed

    @property
    def watermark(self) -> int:
        """Event time up to which this source is complete (NO_TIME before any record)."""
        if self.max_time == NO_TIME:
            return NO_TIME
        return self.max_time - self.lateness_ms

    # -- input -------------------------------------------------------------------------------

    def add(self, messages: Sequence[bytes | str | Mapping[str, Any]],
            timestamps: Sequence[int] | np.ndarray | None = None) -> list[SealedPane]:
        """Fold a batch of messages in; returns the panes this batch sealed.

        ``timestamps`` (epoch ms, one per message) are the event times of messages without a
        timestamp of their own, e.g. Kafka record timestamps.
        """
        if not messages:
            return []
        if all(isinstance(m, bytes) for m in messages):
            columns, bad = self.decoder.decode(messages)  # type: ignore[arg-type]
        else:
            columns, bad = self.decoder.decode_objects(messages)
        self.stats.records += len(messages)
        if timestamps is not None:
            fallback = np.asarray(timestamps, dtype=np.int64)[columns.positions]
            columns.timestamps = np.where(columns.timestamps == NO_TIME, fallback,
                                          columns.timestamps)
        columns, bad = self._check_times(columns, bad, messages)
        if self.time_range is not None and self.event_time:
            columns = self._in_range(columns)
        for record in bad:
            counts = self.stats.field_errors if record.used else self.stats.bad
            counts[record.reason] = counts.get(record.reason, 0) + 1
            if self.on_bad_record is not None:
                self.on_bad_record(record)
        self.stats.accepted += columns.count
        if not columns.count:
            return []
        if not self.event_time:
            self._fold_all(columns, np.full(columns.count, WHOLE_INPUT))
            return []
        panes = columns.timestamps // self.pane_ms
        if self.sealed_through is not None:
            late = panes <= self.sealed_through
            if late.any():
                self.stats.late += int(late.sum())
                keep = np.flatnonzero(~late)
                columns, panes = columns.take(keep), panes[keep]
        if columns.count:
            self._fold_all(columns, panes)
            self.max_time = max(self.max_time, int(columns.timestamps.max()))
        return self.seal_until(self.watermark)

    def _check_times(self, columns: Columns, bad: list[BadRecord],
                     messages: Sequence[Any]) -> tuple[Columns, list[BadRecord]]:
        """Decide event-time mode on first data; reject records without a usable time."""
        has_time = columns.timestamps != NO_TIME
        if self.event_time is None and columns.count:
            self.event_time = bool(has_time.any())
        if not self.event_time:
            return columns, bad
        now = int(time.time() * 1000)
        reject = ~has_time | (columns.timestamps > now + MAX_FUTURE_MS)
        if not reject.any():
            return columns, bad
        rejected: set[int] = set()
        for row in np.flatnonzero(reject):
            position = int(columns.positions[row])
            rejected.add(position)
            message = messages[position]
            raw = message if isinstance(message, bytes) else _as_bytes(message)
            reason, detail = ((Reason.MISSING_TIMESTAMP, "no event time in the message")
                              if not has_time[row] else
                              (Reason.BAD_TIMESTAMP, "more than a day in the future"))
            bad.append(BadRecord(position, reason, detail, raw))
        # A rejected record is reported once, for its rejection, not for its fields too.
        bad = [b for b in bad if not (b.used and b.position in rejected)]
        return columns.take(np.flatnonzero(~reject)), bad

    def _in_range(self, columns: Columns) -> Columns:
        start, end = self.time_range  # type: ignore[misc]
        inside = columns.timestamps >= start
        if end is not None:
            inside &= columns.timestamps < end
        if inside.all():
            return columns
        self.stats.outside_range += int((~inside).sum())
        return columns.take(np.flatnonzero(inside))

    def _fold_all(self, columns: Columns, panes: np.ndarray) -> None:
        for model, rows in _by_model(columns):
            part = columns if rows is None else columns.take(rows)
            pane_ids = panes if rows is None else panes[rows]
            baseline = baseline_for(self.baselines, model)
            for index in np.unique(pane_ids):
                in_pane = np.flatnonzero(pane_ids == index)
                subset = part if len(in_pane) == part.count else part.take(in_pane)
                key = (model, int(index))
                pane = self.open.get(key)
                if pane is None:
                    pane = self.open[key] = Pane.empty(int(index), baseline)
                fold(pane, subset, baseline)

    # -- sealing -----------------------------------------------------------------------------

    def seal_until(self, watermark: int) -> list[SealedPane]:
        """Seal every pane whose end is at or before ``watermark``."""
        if watermark == NO_TIME or not self.event_time:
            return []
        target = watermark // self.pane_ms - 1  # last pane whose end <= watermark
        if self.sealed_through is not None and target <= self.sealed_through:
            return []
        ready = sorted(key for key in self.open if key[1] <= target)
        self.sealed_through = target
        return [SealedPane(model, index, self.open.pop((model, index)))
                for model, index in sorted(ready, key=lambda k: (k[1], k[0]))]

    def seal_all(self) -> list[SealedPane]:
        """End of input: seal every open pane (the whole-input pane too)."""
        sealed = [SealedPane(model, index, pane) for (model, index), pane in
                  sorted(self.open.items(), key=lambda item: (item[0][1], item[0][0]))]
        if self.open and self.event_time:
            self.sealed_through = max(index for _, index in self.open)
        self.open.clear()
        return sealed

    # -- checkpoints -------------------------------------------------------------------------

    def state_bytes(self) -> bytes:
        """The open panes and clocks, to restore this source elsewhere (Kafka rebalance)."""
        return orjson.dumps({
            "event_time": self.event_time, "max_time": self.max_time,
            "sealed_through": self.sealed_through,
            "open": [[model, index, b64encode(pane.to_bytes()).decode()]
                     for (model, index), pane in self.open.items()],
        })

    def restore(self, data: bytes) -> None:
        raw = orjson.loads(data)
        self.event_time = raw["event_time"]
        self.max_time = raw["max_time"]
        self.sealed_through = raw["sealed_through"]
        self.open = {(model, index): Pane.from_bytes(b64decode(encoded),
                                                     baseline_for(self.baselines, model))
                     for model, index, encoded in raw["open"]}


def fold(pane: Pane, columns: Columns, baseline: Baseline) -> None:
    """Add decoded records to a pane (the numba kernels do the numeric work)."""
    pane.records += columns.count
    for name, feature in baseline.features.items():
        summary = pane.summaries[name]
        invalid = columns.invalid.get(name)
        n_invalid = int(invalid.sum()) if invalid is not None else 0
        if isinstance(feature, CategoricalBaseline):
            values = columns.categorical.get(name)
            if values is None:  # another model's baseline calls this feature numeric
                values = np.full(columns.count, None, dtype=object)
        else:
            values = columns.numeric.get(name)
            if values is None:
                values = np.full(columns.count, np.nan)
        summary.update(values, invalid=n_invalid)
    for name, rows in columns.new_features.items():
        count = int(rows.sum())
        if count:
            pane.new_features[name] = pane.new_features.get(name, 0) + count


def _by_model(columns: Columns) -> Iterable[tuple[str, np.ndarray | None]]:
    if columns.models is None:
        return [(DEFAULT_MODEL, None)]
    models = columns.models
    first = models[0]
    if all(m == first for m in models):  # the common case: one model
        return [(first if first is not None else DEFAULT_MODEL, None)]
    names = np.array([m if m is not None else DEFAULT_MODEL for m in models], dtype=object)
    return [(str(name), np.flatnonzero(names == name)) for name in sorted(set(names))]


def _as_bytes(message: Any) -> bytes:
    if isinstance(message, str):
        return message.encode()
    try:
        return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return repr(message).encode()
