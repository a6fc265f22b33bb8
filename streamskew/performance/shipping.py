"""What the label join needs of requests and labels, as compact arrays that travel.

In the Kafka service a label's partition and its request's partition are generally read by
different processes, so the join runs in one place (the evaluator stage) and the source
stage sends it, per polled batch, only what it needs (:class:`JoinFeed`):

- of each readable request: its event time, model, prediction as a number (NaN where
  unusable), whether it has an id, and the 64-bit join key of the sampled ones
  (:class:`RequestArrays`, about 19 bytes per request plus 8 per sampled one);
- of each readable label: its label time, and the join key and label value of the sampled
  ones; the unreadable ones are counted by reason (:class:`LabelArrays`, 9 bytes per label
  plus 16 per sampled one).

Sampling by the hash of the request id is applied here already (the same rule as the join's,
``key < sample * 2**64``), so the unsampled share never travels; every request's time and
prediction does, because CBPE needs every score in its pane histogram. Fed to
:meth:`~streamskew.performance.join.LabelJoin.add_request_keys` and
:meth:`~streamskew.performance.join.LabelJoin.add_label_keys` in each source's order, the
arrays give exactly the decisions the join makes on the records themselves.

>>> from streamskew import Baseline, Config
>>> baseline = Baseline.from_columns({"prediction": [0.2, 0.8] * 200, "y": [0, 1] * 200},
...                                  label="y")
>>> feed = JoinFeed(Config.from_dict({"labels": {}}), {"default": baseline})
>>> shipped = feed.requests([b'{"request_id": "r-1", "timestamp": 5, "features": {},'
...                          b' "prediction": 0.9}'])
>>> again = RequestArrays.decode(shipped.encode())
>>> again.times.tolist(), again.values.tolist(), again.has_id.tolist()
([5], [0.9], [True])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import orjson

from ..baseline import Baseline
from ..config import Config, LabelsConfig
from ..detector.builder import DEFAULT_MODEL
from ..records import BadRecord
from .join import _label_encoder, prediction_values, reference_for
from .readers import (
    LabelReader,
    RequestBatch,
    RequestChunks,
    RequestReader,
    _parse,
    _times,
    id_keys,
)
from .reference import label_category

__all__ = ["UNSAMPLED", "JoinFeed", "LabelArrays", "RequestArrays"]

#: The key a row that is not sampled is given: at or above every sampling bound.
UNSAMPLED = np.uint64(2**64 - 1)
HAS_ID, SAMPLED = 1, 2  # request flags


def _header(data: bytes) -> tuple[dict[str, Any], memoryview]:
    head, _, body = data.partition(b"\n")
    return orjson.loads(head), memoryview(body)


@dataclass
class RequestArrays:
    """One batch of requests of one source, reduced to what the join needs."""

    times: np.ndarray  # int64 event time per request
    models: list[str]  # model names; codes index into them
    codes: np.ndarray  # uint16 model per request
    values: np.ndarray  # float64 prediction per request (NaN: unusable)
    flags: np.ndarray  # uint8: HAS_ID | SAMPLED
    sampled_keys: np.ndarray  # uint64 join key of each sampled request, in order

    ROW_BYTES = 19  # bytes per request, beside 8 per sampled key

    def __len__(self) -> int:
        return len(self.times)

    @property
    def has_id(self) -> np.ndarray:
        return (self.flags & HAS_ID) != 0

    @property
    def keys(self) -> np.ndarray:
        """A join key per request (UNSAMPLED for those not sampled)."""
        keys = np.full(len(self), UNSAMPLED, np.uint64)
        keys[(self.flags & SAMPLED) != 0] = self.sampled_keys
        return keys

    @property
    def names(self) -> list[str]:
        """The model name of each request."""
        if len(self.models) == 1:
            return [self.models[0]] * len(self)
        return [self.models[c] for c in self.codes.tolist()]

    def encode(self) -> bytes:
        return orjson.dumps({"n": len(self), "models": self.models,
                             "sampled": len(self.sampled_keys)}) + b"\n" + b"".join(
            a.tobytes() for a in (self.times, self.values, self.sampled_keys, self.codes,
                                  self.flags))

    @classmethod
    def decode(cls, data: bytes) -> RequestArrays:
        header, body = _header(data)
        n, m = header["n"], header["sampled"]
        parts, at = [], 0
        for dtype, count in ((np.int64, n), (np.float64, n), (np.uint64, m), (np.uint16, n),
                             (np.uint8, n)):
            size = np.dtype(dtype).itemsize * count
            parts.append(np.frombuffer(body[at:at + size], dtype).copy())
            at += size
        times, values, keys, codes, flags = parts
        return cls(times, list(header["models"]), codes, values, flags, keys)

    def select(self, rows: np.ndarray) -> RequestArrays:
        """The requests where the boolean mask ``rows`` is true, in order (a replay keeps
        those whose event time lies in its range)."""
        sampled = (self.flags & SAMPLED) != 0
        return RequestArrays(self.times[rows], self.models, self.codes[rows],
                             self.values[rows], self.flags[rows],
                             self.sampled_keys[rows[sampled]])

    def split(self, max_bytes: int) -> list[RequestArrays]:
        """Consecutive parts of at most about ``max_bytes`` encoded each, in order."""
        rows = max(1, max_bytes // (self.ROW_BYTES + 8))
        if len(self) <= rows:
            return [self]
        parts = []
        sampled_before = np.concatenate([[0], np.cumsum((self.flags & SAMPLED) != 0)])
        for start in range(0, len(self), rows):
            stop = min(start + rows, len(self))
            k0, k1 = sampled_before[start], sampled_before[stop]
            parts.append(RequestArrays(self.times[start:stop], self.models,
                                       self.codes[start:stop], self.values[start:stop],
                                       self.flags[start:stop], self.sampled_keys[k0:k1]))
        return parts


@dataclass
class LabelArrays:
    """One batch of labels of one source, reduced to what the join needs."""

    times: np.ndarray  # int64 label time per readable label
    sampled: np.ndarray  # bool per readable label
    sampled_keys: np.ndarray  # uint64 per sampled label
    sampled_values: np.ndarray  # float64 per sampled label
    bad: dict[str, int] = field(default_factory=dict)  # unreadable records, by reason

    def __len__(self) -> int:
        return len(self.times)

    @property
    def keys(self) -> np.ndarray:
        keys = np.full(len(self), UNSAMPLED, np.uint64)
        keys[self.sampled] = self.sampled_keys
        return keys

    @property
    def values(self) -> np.ndarray:
        values = np.full(len(self), np.nan)
        values[self.sampled] = self.sampled_values
        return values

    def encode(self) -> bytes:
        return orjson.dumps({"n": len(self), "sampled": len(self.sampled_keys),
                             "bad": self.bad}) + b"\n" + b"".join(
            a.tobytes() for a in (self.times, self.sampled_keys, self.sampled_values,
                                  self.sampled.astype(np.uint8)))

    @classmethod
    def decode(cls, data: bytes) -> LabelArrays:
        header, body = _header(data)
        n, m = header["n"], header["sampled"]
        parts, at = [], 0
        for dtype, count in ((np.int64, n), (np.uint64, m), (np.float64, m), (np.uint8, n)):
            size = np.dtype(dtype).itemsize * count
            parts.append(np.frombuffer(body[at:at + size], dtype).copy())
            at += size
        times, keys, values, sampled = parts
        return cls(times, sampled.astype(bool), keys, values, dict(header["bad"]))

    def select(self, rows: np.ndarray) -> LabelArrays:
        """The labels where the boolean mask ``rows`` is true, in order; the counts of
        unreadable records stay (they have no time to select by)."""
        return LabelArrays(self.times[rows], self.sampled[rows],
                           self.sampled_keys[rows[self.sampled]],
                           self.sampled_values[rows[self.sampled]], dict(self.bad))

    def split(self, max_bytes: int) -> list[LabelArrays]:
        rows = max(1, max_bytes // 25)
        if len(self) <= rows:
            return [self]
        parts = []
        before = np.concatenate([[0], np.cumsum(self.sampled)])
        for start in range(0, len(self), rows):
            stop = min(start + rows, len(self))
            k0, k1 = before[start], before[stop]
            parts.append(LabelArrays(self.times[start:stop], self.sampled[start:stop],
                                     self.sampled_keys[k0:k1], self.sampled_values[k0:k1],
                                     self.bad if start == 0 else {}))
        return parts


class JoinFeed:
    """Requests and label records -> :class:`RequestArrays` / :class:`LabelArrays`
    (module docs). Needs the same config and baselines as the join it feeds."""

    def __init__(self, config: Config, baselines: Mapping[str, Baseline]) -> None:
        self.settings = config.labels or LabelsConfig()
        self.references = {m: b.performance for m, b in baselines.items()
                           if b.performance is not None}
        self.sample_bound = np.uint64(min(int(self.settings.sample * 2**64), 2**64 - 1))
        self.request_reader = RequestReader(config)
        self.label_reader = LabelReader(config)
        self.encode_label = _label_encoder(self.references.values())

    def requests(self, messages: Sequence[bytes | str | Mapping[str, Any]],
                 timestamps: Sequence[int] | np.ndarray | None = None) -> RequestArrays:
        return self._request_arrays(self.request_reader.read(messages, timestamps))

    def request_chunks(self) -> RequestChunks:
        """Pass it to ``PaneBuilder.add(on_parsed=...)``; then :meth:`chunked_requests`."""
        return self.request_reader.chunks()

    def chunked_requests(self, chunks: RequestChunks,
                         timestamps: Sequence[int] | np.ndarray | None = None
                         ) -> RequestArrays:
        """:meth:`requests` of the messages the engine's decoder parsed into ``chunks``:
        the same arrays, without parsing the messages a second time."""
        return self._request_arrays(chunks.batch(timestamps))

    def _request_arrays(self, batch: RequestBatch) -> RequestArrays:
        n = len(batch.times)
        names = batch.models if None not in batch.models \
            else [m if m is not None else DEFAULT_MODEL for m in batch.models]
        models = sorted(set(names))
        values = np.full(n, np.nan)
        if len(models) == 1:  # the common case: no per-row picking
            codes = np.zeros(n, np.uint16)
            reference = reference_for(self.references, models[0])
            if reference is not None and n:
                values = prediction_values(batch.predictions, reference)
        else:
            lookup = {m: i for i, m in enumerate(models)}
            codes = np.fromiter((lookup[m] for m in names), np.uint16, count=n)
            for i, model in enumerate(models):
                rows = np.flatnonzero(codes == i)
                reference = reference_for(self.references, model)
                if reference is not None and len(rows):
                    values[rows] = prediction_values([batch.predictions[r] for r in rows],
                                                     reference)
        ids = batch.ids
        if None not in ids:
            has_id = np.ones(n, bool)
            keys = id_keys(ids) if n else np.zeros(0, np.uint64)
        else:
            has_id = np.fromiter((i is not None for i in ids), bool, count=n)
            keys = np.full(n, UNSAMPLED, np.uint64)
            if has_id.any():
                keys[has_id] = id_keys([i for i in ids if i is not None])
        sampled = has_id & np.isfinite(values) & (keys < self.sample_bound)
        flags = has_id.astype(np.uint8) | (sampled.astype(np.uint8) << 1)
        return RequestArrays(batch.times, models or [DEFAULT_MODEL], codes, values, flags,
                             keys[sampled])

    def labels(self, records: Sequence[bytes | str | Mapping[str, Any]],
               timestamps: Sequence[int] | np.ndarray | None = None
               ) -> tuple[LabelArrays, list[BadRecord]]:
        """The readable labels as arrays, and the records that could not be read (their
        ``position`` is their index in ``records``)."""
        fast = self._simple_labels(records, timestamps)
        if fast is not None:
            return fast, []
        batch = self.label_reader.read(records, timestamps)
        bad: dict[str, int] = {}
        for record in batch.bad:
            bad[record.reason] = bad.get(record.reason, 0) + 1
        keys = id_keys(batch.ids) if batch.ids else np.zeros(0, np.uint64)
        sampled = keys < self.sample_bound
        values = np.array([self.encode_label(batch.labels[i]) for i in np.flatnonzero(sampled)],
                          np.float64)
        return LabelArrays(batch.times, sampled, keys[sampled], values, bad), batch.bad

    def _simple_labels(self, records: Sequence[Any],
                       timestamps: Sequence[int] | np.ndarray | None) -> LabelArrays | None:
        """The common batch (JSON objects with one-key paths, text ids, whole-number or text
        labels of a few values, epoch-ms times, nothing bad) at C speed; None for any other
        batch, which :class:`LabelReader` then reads record by record. Same result."""
        reader = self.label_reader
        paths = (reader.id_path, reader.label_path, reader.time_path)
        if not records or any(len(p) != 1 for p in paths[:2]) or len(paths[2]) > 1 \
                or set(map(type, records)) != {bytes}:
            return None
        parsed = _parse(records)
        if set(map(type, parsed)) != {dict}:
            return None
        ids = list(map(dict.get, parsed, repeat(paths[0][0])))
        if set(map(type, ids)) != {str} or not all(ids):
            return None
        raw = list(map(dict.get, parsed, repeat(paths[1][0])))
        kinds = set(map(type, raw))
        if kinds not in ({int}, {str}):
            return None
        distinct = set(raw)
        if len(distinct) > 64 or any(label_category(v) is None for v in distinct):
            return None
        raw_times = list(map(dict.get, parsed, repeat(paths[2][0]))) if paths[2] \
            else [None] * len(parsed)
        times, bad_time = _times(raw_times, None if timestamps is None
                                 else np.asarray(timestamps, np.int64))
        if bad_time.any():
            return None
        keys = id_keys(ids)
        sampled = keys < self.sample_bound
        encoded = {v: self.encode_label(v) for v in distinct}
        chosen = raw if sampled.all() else [raw[i] for i in np.flatnonzero(sampled)]
        values = np.fromiter(map(encoded.__getitem__, chosen), np.float64, count=len(chosen))
        return LabelArrays(times, sampled, keys[sampled], values, {})
