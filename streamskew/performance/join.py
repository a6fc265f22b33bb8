"""The label join: requests and their delayed labels, by request id, in bounded memory.

A :class:`LabelJoin` is one *join shard*: it must see every request and every label of the
request ids it owns (one process, or Kafka partitions co-partitioned by request id). It
knows nothing of Kafka or files: batches of requests and of labels come in, sealed
performance panes (:class:`SealedPerformance`) and its progress come out, for
:class:`~streamskew.performance.windows.PerformanceWindows` to merge and judge.

Two clocks, both the engine's :class:`~streamskew.detector.clock.SourceClock`:

- **request time**, per request source: a request is late (not used) when its pane was
  already sealed by its source's watermark before it, exactly as the engine decides for
  the skew checks. Pane ``p`` is *request-final* once every request source's watermark has
  passed its end: its score histogram is complete, so its CBPE estimate can be judged.
- **label time**, per label source (the label's own event time, ``[labels] label_time``):
  the label watermark ``W_L`` = the label stream time less ``allowed_lateness``. Pane ``p``
  is *final* once it is request-final and ``W_L`` has passed its end plus ``max_delay`` (or,
  with ``final_when_labelled``, once that share of its sampled requests have their label):
  its realized performance is judged then.

What happens to each label, judged in its source's order (so a replay, or any batching of
the same records, decides the same):

- ``matched``: its request is known, and the label came at most ``max_delay`` after the
  request's event time and not behind the label watermark: folded into the request's pane;
- ``late``: its request is known but the label came more than ``max_delay`` after it, or
  behind the label watermark (its pane may be final): counted, not used;
- ``duplicate``: a second label for the same request;
- ``without_request``: no request with that id came (the request watermark passed the
  label's time with none), or it came more than ``2 max_delay`` before the label (then the
  join has forgotten it);
- ``unsampled``: dropped by hash sampling, as its request was.

A sampled request whose label did not come within ``max_delay`` is counted ``unlabelled``.
Labels may come before their request (the labels topic read ahead of the requests): they
wait in a second table until the request comes or the request watermark passes them.

Memory: a pending request costs 39 to 54 bytes (:mod:`.table`) and is kept until the label
watermark is ``2 max_delay`` past it (``max_delay`` to join it, ``max_delay`` more to tell a
late label from one without a request); ``max_pending`` bounds the table (further sampled
requests are counted ``dropped``). Open panes cost 12 KB per model (classifiers, 512 score
bins) until final. ``sample = 0.01`` keeps the requests whose id hashes below 1% of the
64-bit range, and the labels of exactly those: memory and label traffic scale by the share,
the metrics carry their sampling spread (wider confidence intervals, higher floors).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numba
import numpy as np
import orjson

from ..config import Config, LabelsConfig, parse_duration
from ..detector.builder import DEFAULT_MODEL, WHOLE_INPUT
from ..detector.clock import SourceClock, combined_watermark
from ..records import NO_TIME, BadRecord
from .readers import LabelReader, RequestReader, id_keys
from .reference import ReferencePerformance, label_category
from .summary import PerformancePane
from .table import (
    DELETED,
    EMPTY,
    EXPIRED,
    LATE,
    MATCHED,
    PENDING,
    HashTable,
    find_slot,
    insert_slot,
)

__all__ = ["JoinCounts", "LabelJoin", "SealedPerformance", "prediction_values", "reference_for"]

NONE_YET = -(2**62)  # "no pane yet" for the progress marks
REQUESTS, LABELS = "requests", "labels"

# Label outcomes (the numba kernel's codes)
L_MATCHED, L_LATE_FIRST, L_LATE, L_DUPLICATE, L_ORPHAN, L_WITHOUT, L_DROPPED = range(7)
# Request outcomes
R_PENDING, R_DUPLICATE, R_FULL, R_MATCHED, R_LATE = range(5)


@dataclass(frozen=True)
class SealedPerformance:
    """A pane one join shard will not change again at this stage: ``requests`` (its score
    histogram and request counts are complete) or ``labels`` (final: everything)."""

    stage: str
    model: str
    index: int
    pane: PerformancePane


@dataclass
class JoinCounts:
    """What the join did, for summaries, reports and metrics."""

    requests: int = 0  # on-time requests of models with a reference performance
    late_requests: int = 0  # their pane had closed (not used; the engine dead-letters them)
    no_reference: int = 0  # requests of a model whose baseline has no reference performance
    requests_without_id: int = 0
    invalid_predictions: int = 0
    sampled: int = 0  # requests kept for the join (valid prediction, id, hash sampled)
    duplicate_requests: int = 0  # a request id seen again while pending
    dropped: int = 0  # sampled requests not stored: the pending table was full
    labels: int = 0  # label records read
    bad_labels: dict[str, int] = field(default_factory=dict)
    unsampled_labels: int = 0
    matched: int = 0
    late: int = 0
    duplicate: int = 0
    without_request: int = 0
    unlabelled: int = 0  # sampled requests whose label did not come within max_delay

    def bad(self, reason: str, count: int = 1) -> None:
        self.bad_labels[reason] = self.bad_labels.get(reason, 0) + count

    def summary(self) -> str:
        bad = sum(self.bad_labels.values())
        listing = (" (" + ", ".join(f"{k}={v}" for k, v in sorted(self.bad_labels.items()))
                   + ")") if bad else ""
        return (f"labels={self.labels} matched={self.matched} late={self.late} "
                f"duplicate={self.duplicate} without_request={self.without_request} "
                f"unsampled={self.unsampled_labels} bad={bad}{listing}; requests sampled="
                f"{self.sampled} unlabelled={self.unlabelled} dropped={self.dropped}")


@numba.njit(cache=True, nogil=True)
def _decide_labels(keys, times, values, models, states, o_keys, o_times, o_values, o_flags,
                   o_states, label_keys, label_times, label_values, watermarks, max_delay,
                   forget, max_orphans, o_live, codes, slots):  # pragma: no cover (numba)
    """One label at a time, in order (see the module docs); returns the orphans added."""
    added = 0
    for i in range(label_keys.shape[0]):
        key = label_keys[i]
        t_label = label_times[i]
        mark = watermarks[i]
        behind = mark != NO_TIME and t_label != NO_TIME and t_label < mark
        slot = find_slot(keys, states, key)
        slots[i] = slot
        if slot >= 0:
            t = times[slot]
            state = states[slot]
            if mark != NO_TIME and t + forget < mark:
                codes[i] = L_WITHOUT  # forgotten: as if the request never came
            elif state == PENDING:
                if behind or (t_label != NO_TIME and t_label - t > max_delay):
                    states[slot] = LATE
                    codes[i] = L_LATE_FIRST
                else:
                    states[slot] = MATCHED
                    codes[i] = L_MATCHED
            elif state == EXPIRED:
                states[slot] = LATE
                codes[i] = L_LATE
            else:
                codes[i] = L_DUPLICATE
            continue
        if find_slot(o_keys, o_states, key) >= 0:
            codes[i] = L_DUPLICATE
        elif o_live + added >= max_orphans:
            codes[i] = L_DROPPED
        else:
            o_slot = insert_slot(o_keys, o_states, key)
            o_keys[o_slot] = key
            o_times[o_slot] = t_label
            o_values[o_slot] = label_values[i]
            o_flags[o_slot] = 1 if behind else 0
            o_states[o_slot] = PENDING
            added += 1
            codes[i] = L_ORPHAN
    return added


@numba.njit(cache=True, nogil=True)
def _add_requests(keys, times, values, models, states, o_keys, o_times, o_values, o_flags,
                  o_states, new_keys, new_times, new_values, new_models, max_delay,
                  max_pending, live, codes, labels):  # pragma: no cover (numba)
    """Store sampled requests, joining labels that came before them; returns
    (requests added, orphans removed)."""
    added = 0
    removed = 0
    for i in range(new_keys.shape[0]):
        key = new_keys[i]
        if find_slot(keys, states, key) >= 0:
            codes[i] = R_DUPLICATE
            continue
        if live + added >= max_pending:
            codes[i] = R_FULL
            continue
        t = new_times[i]
        state = PENDING
        codes[i] = R_PENDING
        o_slot = find_slot(o_keys, o_states, key)
        if o_slot >= 0:
            t_label = o_times[o_slot]
            if o_flags[o_slot] == 1 or (t_label != NO_TIME and t_label - t > max_delay):
                state = LATE
                codes[i] = R_LATE
            else:
                state = MATCHED
                codes[i] = R_MATCHED
                labels[i] = o_values[o_slot]
            o_states[o_slot] = DELETED
            removed += 1
        slot = insert_slot(keys, states, key)
        keys[slot] = key
        times[slot] = t
        values[slot] = new_values[i]
        models[slot] = new_models[i]
        states[slot] = state
        added += 1
    return added, removed


@dataclass
class _Mark:
    idle: bool = False
    final: bool = False


class LabelJoin:
    """One join shard (see the module docs).

    ``references`` maps a model to its reference performance (``"default"`` serves models
    without their own); requests of other models are counted ``no_reference``.
    """

    def __init__(self, config: Config, references: Mapping[str, ReferencePerformance]) -> None:
        self.config = config
        self.settings: LabelsConfig = config.labels or LabelsConfig()
        self.references = dict(references)
        window = config.window
        self.pane_ms = parse_duration(self.settings.pane) if self.settings.pane \
            else window.pane_ms
        self.max_delay_ms = self.settings.max_delay_ms
        self.lateness_ms = window.allowed_lateness_ms
        self.sample_bound = min(int(self.settings.sample * 2**64), 2**64 - 1)
        self.request_reader = RequestReader(config)
        self.label_reader = LabelReader(config)
        self.request_clocks: dict[str, SourceClock] = {}
        self.label_clocks: dict[str, SourceClock] = {}
        self.request_marks: dict[str, _Mark] = {}
        self.label_marks: dict[str, _Mark] = {}
        self.event_time: bool | None = None
        self.pending = HashTable()
        self.orphans = HashTable()
        self.open: dict[tuple[str, int], PerformancePane] = {}
        self.models: list[str] = []  # table index -> model
        self.requests_through = NONE_YET  # last request-final pane
        self.final_through = NONE_YET  # last final pane
        self.swept_label_pane = NONE_YET  # label-watermark pane of the last expiry sweep
        self.swept_request_pane = NONE_YET
        self.finished = False
        self.counts = JoinCounts()
        self.sealed: list[SealedPerformance] = []
        self._encode = _label_encoder(self.references.values())

    # -- clocks ------------------------------------------------------------------------------

    def _clock(self, clocks: dict[str, SourceClock], marks: dict[str, _Mark], source: str,
               pane_ms: int) -> SourceClock:
        clock = clocks.get(source)
        if clock is None:
            w = self.config.window
            clock = clocks[source] = SourceClock(pane_ms, self.lateness_ms, w.max_ahead_ms,
                                                 w.watermark_quorum, w.watermark_memory)
            marks.setdefault(source, _Mark())
        marks[source].idle = False
        return clock

    @staticmethod
    def _watermark(clocks: dict[str, SourceClock], marks: dict[str, _Mark]) -> int:
        holding = [clocks[s].watermark for s, m in marks.items()
                   if not (m.idle or m.final) and s in clocks]
        if any(not (m.idle or m.final) and s not in clocks for s, m in marks.items()):
            return NO_TIME  # announced but never reported
        return combined_watermark(holding, (clocks[s].watermark for s, m in marks.items()
                                            if m.idle and s in clocks))

    @property
    def request_watermark(self) -> int:
        return self._watermark(self.request_clocks, self.request_marks)

    @property
    def label_watermark(self) -> int:
        if self.finished:
            return np.iinfo(np.int64).max
        return self._watermark(self.label_clocks, self.label_marks)

    def expect(self, request_sources: Sequence[str] = (),
               label_sources: Sequence[str] = ()) -> None:
        """Sources that must report before anything is final (e.g. every partition)."""
        for source in request_sources:
            self.request_marks.setdefault(source, _Mark())
        for source in label_sources:
            self.label_marks.setdefault(source, _Mark())

    # -- requests ----------------------------------------------------------------------------

    def add_requests(self, messages: Sequence[bytes | str | Mapping[str, Any]],
                     timestamps: Sequence[int] | np.ndarray | None = None,
                     source: str = "input") -> None:
        """A batch of prediction-request messages of one request source, in its order."""
        batch = self.request_reader.read(messages, timestamps)
        self.add_request_arrays(batch.ids, batch.times, batch.models, batch.predictions,
                                source)

    def add_request_arrays(self, ids: Sequence[str | None], times: np.ndarray,
                           models: Sequence[str | None], predictions: Sequence[Any],
                           source: str = "input") -> None:
        """The same, already picked out of the messages (one entry per request)."""
        def pick(rows: np.ndarray, reference: ReferencePerformance
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            values = _predictions([predictions[i] for i in rows], reference)
            row_ids = [ids[i] for i in rows]
            has_id = np.fromiter((i is not None for i in row_ids), bool, count=len(rows))
            keys = np.zeros(len(rows), np.uint64)
            if has_id.any():
                keys[has_id] = id_keys([i for i in row_ids if i is not None])
            return values, has_id, keys

        self._requests(times, [m if m is not None else DEFAULT_MODEL for m in models], pick,
                       source)

    def add_request_keys(self, times: np.ndarray, models: Sequence[str], values: np.ndarray,
                         has_id: np.ndarray, keys: np.ndarray, source: str = "input") -> None:
        """Requests already reduced to what the join needs (what a Kafka source stage ships:
        :mod:`.shipping`): event times, model names, predictions as numbers (NaN where
        unusable, as :func:`prediction_values` makes them), whether each has an id, and
        its 64-bit join key (:func:`~.readers.id_keys`; any key at or above the sampling
        bound for a request not sampled). Decides exactly as :meth:`add_request_arrays`."""
        values = np.asarray(values, np.float64)
        has_id = np.asarray(has_id, bool)
        keys = np.asarray(keys, np.uint64)
        self._requests(times, models, lambda rows, _: (values[rows], has_id[rows], keys[rows]),
                       source)

    def _requests(self, times: np.ndarray, names: Sequence[str], pick: Any,
                  source: str) -> None:
        clock = self._clock(self.request_clocks, self.request_marks, source, self.pane_ms)
        times = np.asarray(times, np.int64)
        if not len(times):
            return self._progress()
        if self.event_time is None:
            self.event_time = bool((times != NO_TIME).any())
        if self.event_time:
            timed = np.flatnonzero(times != NO_TIME)
            step = clock.observe(times[timed])  # per record, as the engine's builder does
            on_time = np.zeros(len(times), bool)
            on_time[timed[~step.late]] = True
            self.counts.late_requests += int(step.late.sum())
            panes = np.where(on_time, times // self.pane_ms, 0)
        else:
            on_time = np.ones(len(times), bool)
            panes = np.full(len(times), WHOLE_INPUT)
        distinct = set(names)
        for model in sorted(distinct):
            rows = np.flatnonzero(on_time & (np.array(names, dtype=object) == model)) \
                if len(distinct) > 1 else np.flatnonzero(on_time)
            if len(rows):
                self._model_requests(model, rows, times, panes, pick)
        return self._progress()

    def _model_requests(self, model: str, rows: np.ndarray, times: np.ndarray,
                        panes: np.ndarray, pick: Any) -> None:
        reference = self._reference(model)
        if reference is None:
            self.counts.no_reference += len(rows)
            return
        self.counts.requests += len(rows)
        values, has_id, keys = pick(rows, reference)
        valid = np.isfinite(values)
        self.counts.invalid_predictions += int((~valid).sum())
        self.counts.requests_without_id += int((valid & ~has_id).sum())
        sampled = valid & has_id & (keys < np.uint64(self.sample_bound))
        layout = reference.layout() if reference.is_classifier else None
        bins = layout.bin_of(values) if layout is not None else np.zeros(len(rows), np.int64)
        model_index = self._model_index(model)
        pane_ids = panes[rows]
        for index in np.unique(pane_ids):
            in_pane = pane_ids == index
            self._pane(model, int(index), reference).add_requests(
                bins[in_pane], valid[in_pane], sampled[in_pane])
        self.counts.sampled += int(sampled.sum())
        chosen = np.flatnonzero(sampled)
        if not len(chosen):
            return
        self.pending.ensure(len(chosen))
        codes = np.empty(len(chosen), np.int64)
        labels = np.full(len(chosen), np.nan)
        added, removed = _add_requests(
            *self._arrays(self.pending), *self._arrays(self.orphans), keys[chosen],
            times[rows][chosen], values[chosen], np.full(len(chosen), model_index, np.uint16),
            self.max_delay_ms, self.settings.max_pending, self.pending.live, codes, labels)
        self.pending.live += added
        self.orphans.live -= removed
        self.orphans.deleted += removed
        self.counts.duplicate_requests += int((codes == R_DUPLICATE).sum())
        self.counts.dropped += int((codes == R_FULL).sum())
        late = codes == R_LATE
        self.counts.late += int(late.sum())
        self.counts.unlabelled += int(late.sum())
        matched = np.flatnonzero(codes == R_MATCHED)
        if len(matched):
            where = chosen[matched]
            self._fold_labelled(model, reference, pane_ids[where], values[where],
                                labels[matched], bins[where])

    # -- labels ------------------------------------------------------------------------------

    def add_labels(self, records: Sequence[bytes | str | Mapping[str, Any]],
                   timestamps: Sequence[int] | np.ndarray | None = None,
                   source: str = "labels") -> list[BadRecord]:
        """A batch of label records of one label source, in its order; returns the records
        that could not be used (their ``position`` is their index in the batch)."""
        batch = self.label_reader.read(records, timestamps)
        self.counts.labels += len(records)
        for bad in batch.bad:
            self.counts.bad(bad.reason)
        self._labels(batch.ids, batch.times, batch.labels, source)
        return batch.bad

    def add_label_arrays(self, ids: Sequence[str], times: np.ndarray, labels: Sequence[Any],
                         source: str = "labels") -> None:
        """Labels already picked out of their records (ids, label times, raw labels)."""
        self.counts.labels += len(ids)
        self._labels(ids, np.asarray(times, np.int64), labels, source)

    def add_label_keys(self, keys: np.ndarray, times: np.ndarray, values: np.ndarray,
                       source: str = "labels", bad: Mapping[str, int] | None = None) -> None:
        """Labels already reduced to what the join needs (what a Kafka source stage ships:
        :mod:`.shipping`): join keys (any key at or above the sampling bound for a label
        not sampled), label times, and labels as numbers (:meth:`label_value`). ``bad``
        counts the records of the same batch that could not be read, by reason. Decides
        exactly as :meth:`add_labels` on the records."""
        values = np.asarray(values, np.float64)
        self.counts.labels += len(keys) + sum((bad or {}).values())
        for reason, count in sorted((bad or {}).items()):
            self.counts.bad(reason, count)
        self._label_keys(np.asarray(keys, np.uint64), np.asarray(times, np.int64),
                         lambda rows: values[rows], source)

    def label_value(self, raw: Any) -> float:
        """A raw label as the join stores it (a classifier's classes as 1.0 / 0.0)."""
        return float(self._encode(raw))

    def _labels(self, ids: Sequence[str], times: np.ndarray, raw: Sequence[Any],
                source: str) -> None:
        keys = id_keys(list(ids)) if len(ids) else np.zeros(0, np.uint64)
        self._label_keys(keys, np.asarray(times, np.int64),
                         lambda rows: np.array([self._encode(raw[i]) for i in rows],
                                               np.float64), source)

    def _label_keys(self, keys: np.ndarray, times: np.ndarray, encode: Any,
                    source: str) -> None:
        clock = self._clock(self.label_clocks, self.label_marks, source, 1)
        if not len(keys):
            return self._progress()
        watermarks = np.full(len(keys), NO_TIME, np.int64)
        timed = np.flatnonzero(times != NO_TIME)
        if len(timed):
            step = clock.observe(times[timed])
            before = step.stream_before
            watermarks[timed] = np.where(before != NO_TIME, before - self.lateness_ms, NO_TIME)
        keep = keys < np.uint64(self.sample_bound)
        self.counts.unsampled_labels += int((~keep).sum())
        rows = np.flatnonzero(keep)
        if not len(rows):
            return self._progress()
        values = encode(rows)
        self.orphans.ensure(len(rows))
        codes = np.empty(len(rows), np.int64)
        slots = np.empty(len(rows), np.int64)
        added = _decide_labels(
            *self._arrays(self.pending), *self._arrays(self.orphans), keys[rows], times[rows],
            values, watermarks[rows], self.max_delay_ms, 2 * self.max_delay_ms,
            self.settings.max_pending, self.orphans.live, codes, slots)
        self.orphans.live += added
        counts = np.bincount(codes, minlength=7)
        self.counts.late += int(counts[L_LATE_FIRST] + counts[L_LATE])
        self.counts.unlabelled += int(counts[L_LATE_FIRST])
        self.counts.duplicate += int(counts[L_DUPLICATE])
        self.counts.without_request += int(counts[L_WITHOUT] + counts[L_DROPPED])
        matched = np.flatnonzero(codes == L_MATCHED)
        if len(matched):
            self._fold_matched(slots[matched], values[matched])
        return self._progress()

    def _fold_matched(self, slots: np.ndarray, labels: np.ndarray) -> None:
        table = self.pending
        models = table.models[slots]
        for model_index in np.unique(models):
            mine = models == model_index
            model = self.models[int(model_index)]
            reference = self._reference(model)
            assert reference is not None
            times = table.times[slots[mine]]
            panes = times // self.pane_ms if self.event_time \
                else np.full(len(times), WHOLE_INPUT)
            predictions = table.values[slots[mine]]
            bins = reference.layout().bin_of(predictions) if reference.is_classifier else None
            self._fold_labelled(model, reference, panes, predictions, labels[mine], bins)

    def _fold_labelled(self, model: str, reference: ReferencePerformance, panes: np.ndarray,
                       predictions: np.ndarray, labels: np.ndarray,
                       bins: np.ndarray | None) -> None:
        if reference.is_classifier:
            usable = (labels == 0.0) | (labels == 1.0)
        else:
            usable = np.isfinite(labels)
        if not usable.all():
            self.counts.bad("bad_label", int((~usable).sum()))
        final = (panes <= self.final_through) & (panes != WHOLE_INPUT)
        late = usable & final  # only possible with final_when_labelled
        self.counts.late += int(late.sum())
        use = usable & ~final
        self.counts.matched += int(use.sum())
        for index in np.unique(panes[use]):
            rows = use & (panes == index)
            self._pane(model, int(index), reference).add_labelled(
                predictions[rows], labels[rows], None if bins is None else bins[rows])

    # -- heartbeats --------------------------------------------------------------------------

    def advance_requests(self, source: str, watermark: int) -> None:
        """Let a request source's event time pass without records (an idle source)."""
        self._clock(self.request_clocks, self.request_marks, source, self.pane_ms) \
            .advance_to(watermark)
        self._progress()

    def advance_labels(self, source: str, watermark: int) -> None:
        self._clock(self.label_clocks, self.label_marks, source, 1).advance_to(watermark)
        self._progress()

    def set_idle(self, source: str, idle: bool = True, labels: bool = False) -> None:
        """A source that is caught up and silent stops holding its clock back."""
        marks = self.label_marks if labels else self.request_marks
        marks.setdefault(source, _Mark()).idle = idle
        self._progress()

    def set_final(self, source: str, labels: bool = False) -> None:
        """A source that will send nothing more (a Kafka partition read to its end)."""
        marks = self.label_marks if labels else self.request_marks
        marks.setdefault(source, _Mark()).final = True
        self._progress()

    @property
    def all_final(self) -> bool:
        """Every source known to the join has said it is final (:meth:`set_final`)."""
        marks = (*self.request_marks.values(), *self.label_marks.values())
        return bool(marks) and all(m.final for m in marks)

    def finish(self) -> None:
        """End of input: every request is in, every label that will come has come."""
        self.finished = True
        for mark in (*self.request_marks.values(), *self.label_marks.values()):
            mark.final = True
        self._sweep_orphans(np.iinfo(np.int64).max, everything=True)
        self._sweep_pending(np.iinfo(np.int64).max)
        last = max((index for _, index in self.open), default=None)
        if last is not None:
            self._release(last, final=True)

    # -- progress ----------------------------------------------------------------------------

    @property
    def progress(self) -> tuple[int, int]:
        """(last request-final pane, last final pane), NONE_YET before any."""
        return self.requests_through, self.final_through

    def take(self) -> list[SealedPerformance]:
        """The panes sealed since the last call, in order."""
        sealed, self.sealed = self.sealed, []
        return sealed

    def _progress(self) -> None:
        if self.finished or not self.event_time:
            return
        requests_mark = self.request_watermark
        if requests_mark != NO_TIME:
            through = requests_mark // self.pane_ms - 1
            if through > self.requests_through:
                self._release(through)
            if through > self.swept_request_pane:
                self._sweep_orphans(requests_mark)
                self.swept_request_pane = through
        labels_mark = self.label_watermark
        if labels_mark != NO_TIME and labels_mark // self.pane_ms > self.swept_label_pane:
            self._sweep_pending(labels_mark)
            self.swept_label_pane = labels_mark // self.pane_ms
        self._finalize(labels_mark)

    def _release(self, through: int, final: bool = False) -> None:
        """Panes up to ``through`` are request-final (``final``: final too)."""
        for key in sorted(self.open, key=lambda k: (k[1], k[0])):
            model, index = key
            if index <= through and index > self.requests_through:
                self.sealed.append(SealedPerformance(REQUESTS, model, index,
                                                     self.open[key].copy()))
        self.requests_through = max(self.requests_through, through)
        if final:
            self._finalize(np.iinfo(np.int64).max)

    def _finalize(self, labels_mark: int) -> None:
        if labels_mark == NO_TIME:
            target = NONE_YET
        elif labels_mark == np.iinfo(np.int64).max:
            target = self.requests_through
        else:
            target = min(self.requests_through,
                         (labels_mark - self.max_delay_ms) // self.pane_ms - 1)
        share = self.settings.final_when_labelled
        if share > 0:  # panes whose labels are in, in order
            while target < self.requests_through and self._labelled_enough(target + 1, share):
                target += 1
        if target <= self.final_through:
            return
        for key in sorted((k for k in self.open if k[1] <= target),
                          key=lambda k: (k[1], k[0])):
            self.sealed.append(SealedPerformance(LABELS, key[0], key[1], self.open.pop(key)))
        self.final_through = target

    def _labelled_enough(self, index: int, share: float) -> bool:
        panes = [p for (_, i), p in self.open.items() if i == index]
        return all(p.labelled >= share * p.sampled for p in panes)

    def _sweep_pending(self, labels_mark: int) -> None:
        """Requests ``max_delay`` behind the label watermark will get no label in time;
        those ``2 max_delay`` behind are forgotten."""
        table = self.pending
        states, times = table.states, table.times
        occupied = (states != EMPTY) & (states != DELETED)
        if labels_mark == np.iinfo(np.int64).max:
            expired = occupied & (states == PENDING)
            forgotten = occupied
        else:
            expired = occupied & (states == PENDING) & (times + self.max_delay_ms < labels_mark)
            forgotten = occupied & (times + 2 * self.max_delay_ms < labels_mark)
        self.counts.unlabelled += int(expired.sum())
        states[expired] = EXPIRED
        table.delete(np.flatnonzero(forgotten))
        if table.deleted > 0.3 * table.capacity:
            table.ensure(0)

    def _sweep_orphans(self, requests_mark: int, everything: bool = False) -> None:
        """Labels whose time the request watermark has passed with no request: none will
        come (a request is never after its label)."""
        table = self.orphans
        occupied = (table.states != EMPTY) & (table.states != DELETED)
        if everything:
            gone = occupied
        else:
            times = table.times
            known = times != NO_TIME
            pane_end = np.where(known, (np.where(known, times, 0) // self.pane_ms + 1)
                                * self.pane_ms, np.iinfo(np.int64).max)
            gone = occupied & known & (pane_end <= requests_mark)
        self.counts.without_request += int(gone.sum())
        table.delete(np.flatnonzero(gone))

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _arrays(table: HashTable) -> tuple[np.ndarray, ...]:
        return table.keys, table.times, table.values, table.models, table.states

    def _reference(self, model: str) -> ReferencePerformance | None:
        return reference_for(self.references, model)

    def _model_index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            if len(self.models) >= 65_535:
                raise ValueError("more than 65,535 models in one label join") from None
            self.models.append(model)
            return len(self.models) - 1

    def _pane(self, model: str, index: int, reference: ReferencePerformance
              ) -> PerformancePane:
        pane = self.open.get((model, index))
        if pane is None:
            pane = self.open[(model, index)] = PerformancePane.empty(index, reference.task,
                                                                     reference.bins)
        return pane

    @property
    def memory(self) -> dict[str, int]:
        """Entries and bytes held (the tables' arrays and the open panes)."""
        pane_bytes = sum(p.scored.nbytes + p.positives.nbytes + p.negatives.nbytes
                         for p in self.open.values())
        return {"pending": self.pending.live, "orphans": self.orphans.live,
                "pending_bytes": self.pending.nbytes, "orphan_bytes": self.orphans.nbytes,
                "open_panes": len(self.open), "pane_bytes": pane_bytes}

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Everything needed to continue elsewhere, as bytes (JSON; tables and panes inside
        are zlib-compressed and base64-encoded)."""
        import base64

        return orjson.dumps({
            "schema": "streamskew.labeljoin/v1",
            "event_time": self.event_time, "models": self.models,
            "request_clocks": {s: c.snapshot() for s, c in self.request_clocks.items()},
            "label_clocks": {s: c.snapshot() for s, c in self.label_clocks.items()},
            "request_marks": {s: [m.idle, m.final] for s, m in self.request_marks.items()},
            "label_marks": {s: [m.idle, m.final] for s, m in self.label_marks.items()},
            "pending": self.pending.snapshot(), "orphans": self.orphans.snapshot(),
            "open": [[m, i, base64.b64encode(p.to_bytes()).decode()]
                     for (m, i), p in sorted(self.open.items(), key=lambda kv: (kv[0][1],
                                                                                kv[0][0]))],
            "requests_through": self.requests_through, "final_through": self.final_through,
            "swept": [self.swept_label_pane, self.swept_request_pane],
            "finished": self.finished, "counts": asdict(self.counts),
            "sealed": [[s.stage, s.model, s.index, base64.b64encode(s.pane.to_bytes()).decode()]
                       for s in self.sealed],
        })

    def restore(self, data: bytes) -> None:
        """Continue from :meth:`snapshot` (same config and references)."""
        import base64

        raw = orjson.loads(data)
        if raw.get("schema") != "streamskew.labeljoin/v1":
            raise ValueError("not a label-join snapshot")
        self.event_time = raw["event_time"]
        self.models = list(raw["models"])
        self.request_clocks, self.label_clocks = {}, {}
        self.request_marks = {s: _Mark(*m) for s, m in raw["request_marks"].items()}
        self.label_marks = {s: _Mark(*m) for s, m in raw["label_marks"].items()}
        for saved, clocks, pane_ms in ((raw["request_clocks"], self.request_clocks,
                                        self.pane_ms), (raw["label_clocks"], self.label_clocks, 1)):
            for source, state in saved.items():
                w = self.config.window
                clock = clocks[source] = SourceClock(pane_ms, self.lateness_ms, w.max_ahead_ms,
                                                     w.watermark_quorum, w.watermark_memory)
                clock.restore(state)
        self.pending = HashTable.restore(raw["pending"])
        self.orphans = HashTable.restore(raw["orphans"])
        self.open = {(m, i): PerformancePane.from_bytes(base64.b64decode(p))
                     for m, i, p in raw["open"]}
        self.requests_through = raw["requests_through"]
        self.final_through = raw["final_through"]
        self.swept_label_pane, self.swept_request_pane = raw["swept"]
        self.finished = raw["finished"]
        counts = raw["counts"]
        self.counts = JoinCounts(**{**counts, "bad_labels": dict(counts["bad_labels"])})
        self.sealed = [SealedPerformance(stage, m, i, PerformancePane.from_bytes(
            base64.b64decode(p))) for stage, m, i, p in raw["sealed"]]


def reference_for(references: Mapping[str, ReferencePerformance], model: str
                  ) -> ReferencePerformance | None:
    """The reference performance that judges ``model`` (its own, else ``default``, else
    the only one), None when there is none."""
    reference = references.get(model)
    if reference is None:
        reference = references.get(DEFAULT_MODEL)
    if reference is None and len(references) == 1:
        reference = next(iter(references.values()))
    return reference


def prediction_values(values: list[Any], reference: ReferencePerformance) -> np.ndarray:
    """Predictions as the join uses them: scores in [0, 1] (or the class, for hard
    predictions) / numbers for regressors; NaN where unusable."""
    return _predictions(values, reference)


def _predictions(values: list[Any], reference: ReferencePerformance) -> np.ndarray:
    """Scores in [0, 1] (or the class, for hard predictions) / numbers; NaN if unusable."""
    out = np.full(len(values), np.nan)
    if set(map(type, values)) <= {float, int}:
        out[:] = values
        if reference.is_classifier:
            out[(out < 0) | (out > 1)] = np.nan
        out[~np.isfinite(out)] = np.nan
        return out
    for i, value in enumerate(values):
        if isinstance(value, bool):
            number = 1.0 if value else 0.0
            if reference.is_classifier and (label_category(value) in (reference.positive,
                                                                       reference.negative)):
                out[i] = 1.0 if label_category(value) == reference.positive else 0.0
            elif not reference.is_classifier:
                out[i] = np.nan
            else:
                out[i] = number
        elif isinstance(value, int | float) and math.isfinite(value):
            if not reference.is_classifier or 0.0 <= value <= 1.0:
                out[i] = float(value)
        elif isinstance(value, str) and reference.is_classifier:
            category = label_category(value)
            if category == reference.positive:
                out[i] = 1.0
            elif category == reference.negative:
                out[i] = 0.0
    return out


def _label_encoder(references: Any) -> Any:
    """Raw label -> float: a classifier's classes to 1.0 / 0.0, other numbers as they are
    (models sharing a labels topic must agree on their classes)."""
    positives = {r.positive for r in references if r.is_classifier}
    negatives = {r.negative for r in references if r.is_classifier}

    def encode(value: Any) -> float:
        category = label_category(value)
        if category in positives:
            return 1.0
        if category in negatives:
            return 0.0
        if isinstance(value, bool):
            return math.nan
        try:
            number = float(value)
        except (TypeError, ValueError):
            return math.nan
        return number if math.isfinite(number) else math.nan
    return encode
