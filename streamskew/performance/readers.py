"""Requests and label records -> the arrays the label join needs.

:class:`RequestReader` picks out of each prediction-request message its request id, event
time, model and prediction (``[labels] request_id``, ``[message] timestamp``/``model``,
``[labels] prediction`` or ``[message] prediction``); :class:`LabelReader` picks out of each
label record its request id, label and label time (``[labels] label_request_id``, ``label``,
``label_time``). Both take raw bytes, JSON text or dicts, and never raise on bad input: a
request that cannot be read is simply not joined (the engine's decoder already dead-letters
it), a label that cannot be read is returned as a :class:`~streamskew.records.BadRecord` with
its reason (``invalid_json``, ``not_an_object``, ``missing_request_id``, ``missing_label``,
``bad_label``, ``bad_timestamp``).

Request ids are compared as text: ``123`` and ``"123"`` are the same id. The join key of an
id is a 64-bit hash of its UTF-8 bytes (:func:`id_keys`): the same in every process and
every run, so hash sampling keeps the same requests and labels everywhere.

>>> from streamskew.config import Config
>>> reader = LabelReader(Config.from_dict({"labels": {}}))
>>> batch = reader.read([b'{"request_id": "r-1", "label": 1, "timestamp": 5}', b'{"label": 0}'])
>>> batch.ids, batch.times.tolist(), [b.reason for b in batch.bad]
(['r-1'], [5], ['missing_request_id'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numba
import numpy as np
import orjson

from ..config import Config, LabelsConfig
from ..records import NO_TIME, BadRecord, _get, _path, _to_millis
from .reference import label_category

__all__ = ["LabelBatch", "LabelReader", "RequestBatch", "RequestChunks", "RequestReader",
           "id_keys", "id_text"]


def id_text(value: Any) -> str | None:
    """A request id as text (strings as they are, whole numbers without a decimal point)."""
    if isinstance(value, str):
        return value if value else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def id_keys(ids: Sequence[str]) -> np.ndarray:
    """The 64-bit join key of each id: FNV-1a over its UTF-8 bytes, then the splitmix64
    finalizer (so every bit of the key depends on every byte: sampling by key is uniform).

    >>> id_keys(["r-1", "r-2"]).tolist()
    [14907855904740433798, 16992279074631424917]
    """
    text = "".join(ids)
    if text.isascii():  # the common case: one encode, and a character is a byte
        data = text.encode("ascii")
        lengths = np.fromiter(map(len, ids), np.int64, count=len(ids))
    else:
        encoded = [i.encode() for i in ids]
        data = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), np.int64, count=len(encoded))
    out = np.empty(len(lengths), np.uint64)
    _hash_ids(np.frombuffer(data, np.uint8), np.cumsum(lengths), out)
    return out


@numba.njit(cache=True, nogil=True)
def _hash_ids(data, ends, out):  # pragma: no cover (numba)
    start = 0
    for i in range(ends.shape[0]):
        h = np.uint64(0xCBF29CE484222325)
        for j in range(start, ends[i]):
            h = (h ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        out[i] = h ^ (h >> np.uint64(31))
        start = ends[i]


def _parse(messages: Sequence[bytes | str | Mapping[str, Any]]) -> list[Any]:
    """Parsed messages (None where a message is not JSON); dicts pass through."""
    if set(map(type, messages)) == {bytes}:
        try:  # each message on its own (see records.Decoder._parse), mapped in C
            return list(map(orjson.loads, messages))
        except orjson.JSONDecodeError:
            pass
    return [_one(m) if isinstance(m, bytes | str) else m for m in messages]


def _one(message: bytes | str) -> Any:
    try:
        return orjson.loads(message)
    except orjson.JSONDecodeError:
        return None


def _values(objects: list[Any], path: tuple[str, ...]) -> list[Any]:
    if not path:
        return [None] * len(objects)
    if len(path) == 1:
        return list(map(dict.get, objects, repeat(path[0])))
    return [_get(o, path) for o in objects]


def _times(values: list[Any], fallback: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ms per value (NO_TIME where none) and which values were bad times."""
    times = np.full(len(values), NO_TIME, np.int64)
    bad = np.zeros(len(values), bool)
    if values and set(map(type, values)) == {int}:  # the common case: epoch ms
        array = np.fromiter(values, np.float64, count=len(values))
        if array.min() >= 0 and array.max() < 2**53:
            times = array.astype(np.int64)
            values = []
    for i, value in enumerate(values):
        if value is None:
            continue
        millis, problem = _to_millis(value)
        if problem:
            bad[i] = True
        else:
            times[i] = millis
    if fallback is not None:
        times = np.where(times == NO_TIME, fallback, times)
    return times, bad


@dataclass
class RequestBatch:
    """The readable requests of a batch (row i = request at ``positions[i]``)."""

    positions: np.ndarray
    ids: list[str | None]
    times: np.ndarray
    models: list[str | None]
    predictions: list[Any]


class RequestReader:
    """Request id, event time, model and prediction of prediction-request messages."""

    def __init__(self, config: Config) -> None:
        labels = config.labels or LabelsConfig()
        message = config.message
        self.id_path = _path(labels.request_id)
        self.time_path = _path(message.timestamp)
        self.model_path = _path(message.model)
        self.prediction_path = _path(labels.prediction or message.prediction)
        self.features_path = _path(message.features)
        self.max_bytes = message.max_bytes

    def read(self, messages: Sequence[bytes | str | Mapping[str, Any]],
             timestamps: Sequence[int] | np.ndarray | None = None) -> RequestBatch:
        parsed = _parse(messages)
        if set(map(type, messages)) == {bytes} \
                and max(map(len, messages)) <= self.max_bytes:  # type: ignore[arg-type]
            sizes_ok = None
        else:
            sizes_ok = [not isinstance(m, bytes | str) or len(m) <= self.max_bytes
                        for m in messages]
        return self._read(parsed, sizes_ok, timestamps)

    def read_parsed(self, objects: Sequence[Any],
                    timestamps: Sequence[int] | np.ndarray | None = None) -> RequestBatch:
        """The same from messages already parsed, one JSON value per message (None for
        one that is not JSON or is too large: :func:`~streamskew.records.strict_json`);
        the same batch as :meth:`read` on the messages themselves."""
        return self._read(objects if isinstance(objects, list) else list(objects), None,
                          timestamps)

    def chunks(self) -> RequestChunks:
        """A collector of the chunks the engine's decoder parses (pass it as
        ``PaneBuilder.add(on_parsed=...)``), read as they come: :meth:`RequestChunks.batch`
        then equals :meth:`read` on the whole batch, with no second parse."""
        return RequestChunks(self)

    def _read(self, parsed: list[Any], sizes_ok: list[bool] | None,
              timestamps: Sequence[int] | np.ndarray | None) -> RequestBatch:
        path = self.features_path
        if sizes_ok is None and len(path) == 1 and set(map(type, parsed)) == {dict} \
                and set(map(type, map(dict.get, parsed, repeat(path[0])))) == {dict}:
            objects = parsed  # the common case, checked at C speed
            positions = np.arange(len(parsed), dtype=np.int64)
        else:
            keep = [i for i, obj in enumerate(parsed)
                    if (sizes_ok is None or sizes_ok[i]) and isinstance(obj, dict)
                    and (not path or isinstance(_get(obj, path), dict))]
            objects = parsed if len(keep) == len(parsed) else [parsed[i] for i in keep]
            positions = np.asarray(keep, np.int64)
        fallback = None if timestamps is None else np.asarray(timestamps, np.int64)[positions]
        times, bad_time = _times(_values(objects, self.time_path), fallback)
        if bad_time.any():  # the engine dead-letters these as bad_timestamp
            rows = np.flatnonzero(~bad_time)
            objects = [objects[i] for i in rows]
            positions, times = positions[rows], times[rows]
        models = _values(objects, self.model_path)
        if not set(map(type, models)) <= {str, type(None)}:
            models = [m if isinstance(m, str) or m is None else str(m) for m in models]
        raw_ids = _values(objects, self.id_path)
        ids = raw_ids if set(map(type, raw_ids)) == {str} and all(raw_ids) \
            else [id_text(v) for v in raw_ids]
        return RequestBatch(positions, ids, times, models,
                            _values(objects, self.prediction_path))


class RequestChunks:
    """Reads consecutive chunks of parsed messages (:meth:`RequestReader.chunks`)."""

    def __init__(self, reader: RequestReader) -> None:
        self.reader = reader
        self.parts: list[tuple[int, RequestBatch]] = []  # (first message, its batch)
        self.messages = 0

    def __call__(self, objects: list[Any]) -> None:
        self.parts.append((self.messages, self.reader.read_parsed(objects)))
        self.messages += len(objects)

    def batch(self, timestamps: Sequence[int] | np.ndarray | None = None) -> RequestBatch:
        """The readable requests of all chunks, as :meth:`RequestReader.read` gives them
        (``timestamps``: one per message of all chunks, as there)."""
        if len(self.parts) == 1 and timestamps is None:
            return self.parts[0][1]
        if not self.parts:
            return self.reader.read_parsed([])
        batches = [b for _, b in self.parts]
        positions = np.concatenate([b.positions + start for start, b in self.parts])
        times = np.concatenate([b.times for b in batches])
        if timestamps is not None:  # as _times does: the message's own time first
            times = np.where(times == NO_TIME,
                             np.asarray(timestamps, np.int64)[positions], times)
        return RequestBatch(positions, [i for b in batches for i in b.ids], times,
                            [m for b in batches for m in b.models],
                            [p for b in batches for p in b.predictions])


@dataclass
class LabelBatch:
    """The usable labels of a batch (row i = record at ``positions[i]``) and the bad ones."""

    positions: np.ndarray
    ids: list[str]
    times: np.ndarray
    labels: list[Any]
    bad: list[BadRecord] = field(default_factory=list)


class LabelReader:
    """Request id, label and label time of label records."""

    def __init__(self, config: Config) -> None:
        labels = config.labels or LabelsConfig()
        self.id_path = _path(labels.label_request_id)
        self.label_path = _path(labels.label)
        self.time_path = _path(labels.label_time)

    def read(self, records: Sequence[bytes | str | Mapping[str, Any]],
             timestamps: Sequence[int] | np.ndarray | None = None) -> LabelBatch:
        parsed = _parse(records)
        fallback = None if timestamps is None else np.asarray(timestamps, np.int64)
        keep: list[int] = []
        ids: list[str] = []
        values: list[Any] = []
        raw_times: list[Any] = []
        bad: list[BadRecord] = []
        for position, obj in enumerate(parsed):
            def reject(reason: str, detail: str, position: int = position) -> None:
                bad.append(BadRecord(position, reason, detail, _raw(records[position])))
            if obj is None and not isinstance(records[position], Mapping):
                reject("invalid_json", "the label record is not JSON")
                continue
            if not isinstance(obj, dict):
                reject("not_an_object", f"top-level JSON is {type(obj).__name__}")
                continue
            request_id = id_text(_get(obj, self.id_path))
            if request_id is None:
                reject("missing_request_id", f"no request id at {'.'.join(self.id_path)}")
                continue
            value = _get(obj, self.label_path)
            if label_category(value) is None:
                reason = "missing_label" if value is None else "bad_label"
                reject(reason, f"{'.'.join(self.label_path)} is {value!r:.40}")
                continue
            keep.append(position)
            ids.append(request_id)
            values.append(value)
            raw_times.append(_get(obj, self.time_path) if self.time_path else None)
        times, bad_time = _times(raw_times, None if fallback is None else fallback[keep])
        if bad_time.any():
            for row in np.flatnonzero(bad_time):
                position = keep[row]
                bad.append(BadRecord(position, "bad_timestamp",
                                     f"{'.'.join(self.time_path)}: {raw_times[row]!r:.40} "
                                     "is not a time", _raw(records[position])))
            rows = np.flatnonzero(~bad_time)
            keep = [keep[i] for i in rows]
            ids = [ids[i] for i in rows]
            values = [values[i] for i in rows]
            times = times[rows]
        bad.sort(key=lambda b: b.position)
        return LabelBatch(np.asarray(keep, np.int64), ids, times, values, bad)


def _raw(record: Any) -> bytes:
    if isinstance(record, bytes):
        return record
    if isinstance(record, str):
        return record.encode()
    try:
        return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return repr(record).encode()
