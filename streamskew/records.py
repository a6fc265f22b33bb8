"""Message bytes -> columnar feature values, classifying every bad record instead of raising.

A batch of prediction-request messages (the bytes of Kafka record values, or lines of a JSONL
file) becomes one :class:`Columns`: a float64 array per numeric feature (NaN where the value is
missing or invalid), an object array per categorical feature (None where missing), event times
and model names. Problems are reported as :class:`BadRecord` values:

- record-level (``invalid_utf8``, ``invalid_json``, ``not_an_object``, ``features_not_an_object``,
  ``bad_timestamp``, ``missing_timestamp``, ``too_large``): the record cannot be placed, so it is
  not used;
- field-level (``wrong_type``, ``non_finite``): the offending feature counts as invalid for
  that record, the rest of the record is still used (``used=True``).

>>> decoder = Decoder(MessageConfig(), {"amount": "numeric", "country": "categorical"})
>>> cols, bad = decoder.decode([
...     b'{"timestamp": 1000, "features": {"amount": 12.5, "country": "DE"}}',
...     b'{"timestamp": 2000, "features": {"amount": "12", "country": null}}',
...     b'not json'])
>>> cols.count, cols.numeric["amount"].tolist(), cols.categorical["country"].tolist()
(2, [12.5, nan], ['DE', None])
>>> [(b.position, b.reason, b.used) for b in bad]
[(2, 'invalid_json', False), (1, 'wrong_type', True)]
"""

from __future__ import annotations

import json
import math
import numbers
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import chain, repeat
from typing import Any

import numpy as np
import orjson

from .config import MessageConfig

__all__ = ["VERSION_SEPARATOR", "BadRecord", "Columns", "Decoder", "Reason", "identity_key",
           "split_identity", "strict_json"]

# With [message] model_version, a record's model key is "<model>\x1f<version>": the engine
# keeps state per key, and the Kafka stages pass keys through as they are.
VERSION_SEPARATOR = "\x1f"


def identity_key(model: str, version: str | None) -> str:
    r"""The engine's key of a (model, version); ``version`` None: versions not configured.

    >>> identity_key("fraud", "3"), identity_key("fraud", None)
    ('fraud\x1f3', 'fraud')
    """
    return model if version is None else f"{model}{VERSION_SEPARATOR}{version}"


def split_identity(key: str) -> tuple[str, str | None]:
    r"""``(model, version)`` of an engine key (version None when versions are not configured).

    >>> split_identity("fraud\x1f3"), split_identity("fraud")
    (('fraud', '3'), ('fraud', None))
    """
    model, separator, version = key.partition(VERSION_SEPARATOR)
    return (model, version) if separator else (key, None)


class Reason:
    """Why a record (or one of its fields) was rejected; also the dead-letter header value."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    FEATURES_NOT_AN_OBJECT = "features_not_an_object"
    BAD_TIMESTAMP = "bad_timestamp"
    MISSING_TIMESTAMP = "missing_timestamp"
    TOO_LARGE = "too_large"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    # Event time (decided by the engine's clock, not the decoder):
    LATE = "late"  # the record's pane had already closed
    AHEAD_OF_WATERMARK = "ahead_of_watermark"  # far ahead of its source, and never followed
    # Models (decided by the engine's baselines):
    UNKNOWN_MODEL = "unknown_model"  # no baseline for the record's model
    UNKNOWN_VERSION = "unknown_version"  # the model is known, this version has no baseline


@dataclass(frozen=True)
class BadRecord:
    """One rejected record or field: where it was, why, and its original bytes.

    ``position`` is the record's place in the batch it came in (the engine replaces it with
    the record's id in its source: the Kafka offset, the line number, or the running count);
    ``event_time`` (epoch ms) is set when the record's event time is known.
    """

    position: int
    reason: str
    detail: str
    raw: bytes
    used: bool = False
    event_time: int | None = None


NO_TIME = np.iinfo(np.int64).min  # marks "no event time in the message"
PARSE_CHUNK = 512  # messages per parse pass (and per pass over the parsed dicts)
MAX_NEW_KEYS = 64  # unknown keys counted per chunk (the most frequent; panes keep as many)


@dataclass
class Columns:
    """The accepted records of one batch, one array per feature (row i = accepted record i)."""

    count: int
    positions: np.ndarray  # index of each accepted record in the input batch
    timestamps: np.ndarray  # int64 epoch ms; NO_TIME where the message has none
    models: np.ndarray | None  # object array of model names; None when no model path
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    invalid: dict[str, np.ndarray] = field(default_factory=dict)  # bool mask per feature
    # (only for features with an invalid value in the batch)
    new_features: dict[str, np.ndarray] = field(default_factory=dict)  # rows carrying a key
    # that the schema does not know (for the schema check), as a bool mask per key

    @staticmethod
    def concat(parts: Sequence[Columns]) -> Columns:
        """The rows of ``parts`` one after the other (positions are kept as they are)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        new_keys = sorted(set().union(*(p.new_features for p in parts)))
        return Columns(
            count=sum(p.count for p in parts),
            positions=np.concatenate([p.positions for p in parts]),
            timestamps=np.concatenate([p.timestamps for p in parts]),
            models=None if first.models is None else np.concatenate([p.models for p in parts]),
            numeric={k: np.concatenate([p.numeric[k] for p in parts]) for k in first.numeric},
            categorical={k: np.concatenate([p.categorical[k] for p in parts])
                         for k in first.categorical},
            invalid={k: np.concatenate([p.invalid.get(k, np.zeros(p.count, bool)) for p in parts])
                     for k in sorted(set().union(*(p.invalid for p in parts)))},
            new_features={k: np.concatenate([p.new_features.get(k, np.zeros(p.count, bool))
                                             for p in parts]) for k in new_keys},
        )

    def invalid_of(self, name: str) -> np.ndarray:
        """Feature ``name``'s invalid mask (all False when no record had an invalid value)."""
        mask = self.invalid.get(name)
        return mask if mask is not None else np.zeros(self.count, dtype=bool)

    def take(self, rows: np.ndarray) -> Columns:
        """The subset of rows ``rows`` (e.g. the records of one model or one pane)."""
        return Columns(
            count=len(rows),
            positions=self.positions[rows],
            timestamps=self.timestamps[rows],
            models=None if self.models is None else self.models[rows],
            numeric={k: v[rows] for k, v in self.numeric.items()},
            categorical={k: v[rows] for k, v in self.categorical.items()},
            invalid={k: v[rows] for k, v in self.invalid.items()},
            new_features={k: v[rows] for k, v in self.new_features.items()},
        )


def _version_text(value: Any) -> str:
    """Versions sent as numbers name the same version as their text: 3, 3.0 and "3"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _path(text: str | None) -> tuple[str, ...]:
    return tuple(text.split(".")) if text else ()


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _column(objects: list[dict[str, Any]], path: tuple[str, ...]) -> list[Any]:
    """The value at ``path`` of every object (dicts); ``map`` keeps the common case in C."""
    if len(path) == 1:
        return list(map(dict.get, objects, repeat(path[0])))
    return [_get(o, path) for o in objects]


_ABSENT = object()


class Decoder:
    """Decodes batches of messages for a known feature schema (name -> "numeric"/"categorical").

    Features named in the schema become columns; any other key under the features path is
    counted as a *new feature* (for the schema check). The prediction, when configured, is the
    feature named after the last part of its path.
    """

    def __init__(self, message: MessageConfig, schema: Mapping[str, str],
                 not_features: Iterable[str] = ()) -> None:
        self.message = message
        self._lenient = False
        self.schema = dict(schema)
        # Keys that are known but not monitored (``exclude``, ignored features, columns the
        # baseline left out as ids): never counted as new features.
        self.not_features = set(message.exclude) | set(not_features)
        self.features_path = _path(message.features)
        self.timestamp_path = _path(message.timestamp)
        self.model_path = _path(message.model)
        self.version_path = _path(message.model_version)
        self.prediction_path = _path(message.prediction)
        self.prediction_name = self.prediction_path[-1] if self.prediction_path else None
        # Keys that are not features in flat messages (features = "").
        self.flat_skip = set(message.exclude)
        for path in (self.timestamp_path, self.model_path, self.version_path,
                     self.prediction_path):
            if path:
                self.flat_skip.add(path[0])

    # -- parsing ---------------------------------------------------------------------------

    def decode(self, raws: Sequence[bytes],
               on_parsed: Callable[[list[Any]], None] | None = None
               ) -> tuple[Columns, list[BadRecord]]:
        """Decode a batch of raw messages.

        ``on_parsed``, if given, is called with each chunk of messages as parsed here, in
        order (one JSON value per message; None where the message is not strict JSON or is
        over ``max_bytes``, as :func:`strict_json` gives it): what else needs of the
        messages (a label join's request ids) is picked while the chunk is fresh in the
        CPU cache, without a second parse.
        """
        if not raws:
            return self._columns([], raws, [])
        # Chunk by chunk, parse then columns: a chunk's freshly parsed dicts are still in the
        # CPU cache when their values are picked out, which over a whole batch they are not
        # (2.5x faster here for 5,000 messages of 20 features).
        parts: list[Columns] = []
        bad: list[BadRecord] = []
        for start in range(0, len(raws), PARSE_CHUNK):
            chunk = raws[start:start + PARSE_CHUNK]
            chunk_bad: list[BadRecord] = []
            self._lenient = False  # set when a message needed the NaN-tolerant parse
            objects = self._parse(chunk, chunk_bad)
            if on_parsed is not None:
                on_parsed(self._strict(objects, chunk))
            columns, chunk_bad = self._columns(objects, chunk, chunk_bad)
            if start:
                columns.positions += start
                chunk_bad = [replace(b, position=b.position + start) for b in chunk_bad]
            parts.append(columns)
            bad.extend(chunk_bad)
        bad.sort(key=lambda b: (b.used, b.position))
        return Columns.concat(parts), bad

    def decode_objects(self, objects: Sequence[Any]) -> tuple[Columns, list[BadRecord]]:
        """Decode already-parsed messages (dicts), e.g. from the in-process API."""
        bad: list[BadRecord] = []
        parsed: list[Any] = []
        for position, obj in enumerate(objects):
            if isinstance(obj, bytes | bytearray | memoryview | str):
                raw = obj.encode() if isinstance(obj, str) else bytes(obj)
                parsed.append(self._parse_one(position, raw, bad))
            else:
                parsed.append(obj)
        raws = [b"" if not isinstance(o, bytes) else o for o in objects]
        self._lenient = True  # Python objects may hold float("nan")
        return self._columns(parsed, raws, bad)

    def _parse(self, chunk: Sequence[bytes], bad: list[BadRecord]) -> list[Any]:
        # orjson mapped over the chunk (a C loop); a chunk with any problem falls back to one
        # checked call per message. Each message is parsed on its own: joined into one JSON
        # array, messages such as `1,2` and `[3` could line up into a valid array and hand
        # values to the wrong messages.
        if max(map(len, chunk)) <= self.message.max_bytes:
            try:
                return list(map(orjson.loads, chunk))
            except orjson.JSONDecodeError:
                pass
        return [self._parse_one(i, raw, bad) for i, raw in enumerate(chunk)]

    def _strict(self, objects: list[Any], chunk: Sequence[bytes]) -> list[Any]:
        """``objects`` as strict JSON gives them: a chunk parsed by the fast path is; in any
        other, the unparsable are None and the NaN-tolerant ones are parsed again strictly
        (None), which is rare."""
        if not self._lenient and _ABSENT not in objects:  # (JSON values never equal it)
            return objects
        return [None if o is _ABSENT else strict_json(raw, self.message.max_bytes)
                for o, raw in zip(objects, chunk, strict=True)]

    def _parse_one(self, position: int, raw: bytes, bad: list[BadRecord]) -> Any:
        if len(raw) > self.message.max_bytes:
            bad.append(BadRecord(position, Reason.TOO_LARGE,
                                 f"{len(raw)} bytes > max_bytes {self.message.max_bytes}", raw))
            return _ABSENT
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            error = str(exc)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append(BadRecord(position, Reason.INVALID_UTF8, str(exc), raw))
            return _ABSENT
        # NaN, Infinity and overflowing numbers are not JSON, but they carry usable fields:
        # parse them as non-finite floats so only the affected features count as invalid.
        try:
            self._lenient = True
            return json.loads(text, parse_constant=float)
        except (ValueError, RecursionError):
            bad.append(BadRecord(position, Reason.INVALID_JSON, error, raw))
            return _ABSENT

    # -- columns ---------------------------------------------------------------------------

    def _records(self, objects: list[Any], raws: Sequence[bytes],
                 bad: list[BadRecord]) -> tuple[list[int], list[dict[str, Any]]]:
        """Positions and feature maps of the usable records; the others are reported."""
        path = self.features_path
        if len(path) == 1 and set(map(type, objects)) == {dict}:
            maps = list(map(dict.get, objects, repeat(path[0])))
            if set(map(type, maps)) == {dict}:  # the common case, checked at C speed
                return list(range(len(objects))), maps
        keep: list[int] = []
        feature_maps: list[dict[str, Any]] = []
        for position, obj in enumerate(objects):
            if obj is _ABSENT:
                continue
            if not isinstance(obj, dict):
                bad.append(BadRecord(position, Reason.NOT_AN_OBJECT,
                                     f"top-level JSON is {type(obj).__name__}", raws[position]))
                continue
            if path:
                features = _get(obj, path)
                if not isinstance(features, dict):
                    what = "missing" if features is None else type(features).__name__
                    bad.append(BadRecord(position, Reason.FEATURES_NOT_AN_OBJECT,
                                         f"{'.'.join(path)} is {what}", raws[position]))
                    continue
            else:
                features = {k: v for k, v in obj.items() if k not in self.flat_skip}
            keep.append(position)
            feature_maps.append(features)
        return keep, feature_maps

    def _columns(self, objects: list[Any], raws: Sequence[bytes],
                 bad: list[BadRecord]) -> tuple[Columns, list[BadRecord]]:
        keep, feature_maps = self._records(objects, raws, bad)
        kept_objects = [objects[i] for i in keep]
        timestamps, time_ok = self._timestamps(kept_objects, keep, raws, bad)
        if not time_ok.all():
            rows = np.flatnonzero(time_ok)
            keep = [keep[i] for i in rows]
            kept_objects = [kept_objects[i] for i in rows]
            feature_maps = [feature_maps[i] for i in rows]
            timestamps = timestamps[rows]

        columns = Columns(count=len(keep), positions=np.asarray(keep, dtype=np.int64),
                          timestamps=timestamps, models=self._models(kept_objects))
        predictions = None
        if self.prediction_name is not None:
            predictions = _column(kept_objects, self.prediction_path)
        for name, kind in self.schema.items():
            if predictions is not None and name == self.prediction_name:
                values = predictions
            else:
                values = list(map(dict.get, feature_maps, repeat(name)))
            if kind == "numeric":
                column, invalid = _numeric_column(values, self._lenient)
                columns.numeric[name] = column
            else:
                column, invalid = _categorical_column(values)
                columns.categorical[name] = column
            if invalid.any():  # (no mask when none is: most batches, most features)
                columns.invalid[name] = invalid
                self._report_invalid(name, kind, values, invalid, columns.positions, raws, bad)
        self._count_new_features(feature_maps, columns)
        bad.sort(key=lambda b: (b.used, b.position))
        return columns, bad

    def _timestamps(self, objects: list[Any], keep: list[int], raws: Sequence[bytes],
                    bad: list[BadRecord]) -> tuple[np.ndarray, np.ndarray]:
        n = len(objects)
        ok = np.ones(n, dtype=bool)
        if not self.timestamp_path:
            return np.full(n, NO_TIME, dtype=np.int64), ok
        values = _column(objects, self.timestamp_path)
        types = set(map(type, values))
        if types <= {int}:
            array = np.fromiter(values, dtype=np.float64, count=n)
            if n and (array.min() < 0 or array.max() >= 2**53):
                types = {object}  # out of range: take the careful path
            else:
                return array.astype(np.int64), ok
        result = np.empty(n, dtype=np.int64)
        for i, value in enumerate(values):
            millis, problem = _to_millis(value)
            result[i] = millis
            if problem:
                ok[i] = False
                bad.append(BadRecord(keep[i], Reason.BAD_TIMESTAMP,
                                     f"{'.'.join(self.timestamp_path)}: {problem}", raws[keep[i]]))
        return result, ok

    def _models(self, objects: list[Any]) -> np.ndarray | None:
        if not self.model_path and not self.version_path:
            return None
        values = _column(objects, self.model_path) if self.model_path else [None] * len(objects)
        column = np.empty(len(values), dtype=object)
        column[:] = [v if isinstance(v, str) else (None if v is None else str(v)) for v in values]
        if self.version_path:
            # The key is (model, version): a record without a version has version "".
            versions = _column(objects, self.version_path)
            column[:] = [identity_key("default" if m is None else m,
                                      v if isinstance(v, str) else ("" if v is None else
                                                                    _version_text(v)))
                         for m, v in zip(column, versions, strict=True)]
        return column

    def _count_new_features(self, feature_maps: list[dict[str, Any]], columns: Columns) -> None:
        unknown = set().union(*feature_maps) - self.schema.keys() - self.not_features
        if len(unknown) > MAX_NEW_KEYS:
            # A producer sending thousands of unknown keys: count them all at C speed, keep
            # the most frequent (the ones a schema event would name), skip a mask for each.
            counts = Counter(key for key in chain.from_iterable(feature_maps)
                             if key in unknown)
            unknown = {key for key, _ in sorted(counts.items(),
                                                key=lambda kv: (-kv[1], kv[0]))[:MAX_NEW_KEYS]}
        for key in sorted(unknown):
            columns.new_features[key] = np.fromiter((key in f for f in feature_maps),
                                                    dtype=bool, count=len(feature_maps))

    def _report_invalid(self, name: str, kind: str, values: list[Any], invalid: np.ndarray,
                        positions: np.ndarray, raws: Sequence[bytes],
                        bad: list[BadRecord]) -> None:
        for row in np.flatnonzero(invalid):
            value = values[row]
            position = int(positions[row])
            if isinstance(value, float) and not math.isfinite(value):
                bad.append(BadRecord(position, Reason.NON_FINITE, f"{name}: {value}",
                                     raws[position], used=True))
            else:
                bad.append(BadRecord(position, Reason.WRONG_TYPE,
                                     f"{name}: {type(value).__name__} where {kind} expected",
                                     raws[position], used=True))


def strict_json(message: bytes | str, max_bytes: int) -> Any:
    """The JSON value of one message, or None when it is over ``max_bytes`` or not strict
    JSON (NaN and Infinity are not).

    >>> strict_json(b'{"a": 1}', 100), strict_json(b'{"a": NaN}', 100), strict_json(b'[1]', 2)
    ({'a': 1}, None, None)
    """
    if len(message) > max_bytes:
        return None
    try:
        return orjson.loads(message)
    except orjson.JSONDecodeError:
        return None


def _numeric_column(values: list[Any], may_hold_nan: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """float64 values, NaN where missing or invalid; plus the invalid mask.

    orjson rejects NaN, so a NaN in the column is a null unless ``may_hold_nan`` (lenient
    parse or Python objects): only then are NaN values told apart from nulls.
    """
    n = len(values)
    types = set(map(type, values))
    if types <= {float, int, type(None)}:
        # Fast path: numpy turns None into NaN; JSON floats are finite unless they were
        # NaN/Infinity literals, which the careful parse turned into non-finite floats.
        column = np.array(values, dtype=np.float64) if n else np.empty(0)
        invalid = np.isinf(column)
        if may_hold_nan and float in types \
                and np.count_nonzero(np.isnan(column)) > values.count(None):
            # NaN literals (parsed leniently) besides the nulls: mark them invalid.
            invalid |= np.isnan(column) & np.fromiter((v is not None for v in values),
                                                      dtype=bool, count=n)
        if invalid.any():
            column[invalid] = np.nan
        return column, invalid
    column = np.full(n, np.nan)
    invalid = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            continue
        # numbers.Real, not type(): numpy scalars from the in-process API are numbers too.
        if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_) \
                and math.isfinite(value):
            column[i] = value
        else:
            invalid[i] = True
    return column, invalid


def _categorical_column(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Object array of category strings (None where missing or invalid); plus invalid mask."""
    n = len(values)
    column = np.empty(n, dtype=object)
    types = set(map(type, values))
    if types <= {str, type(None)}:
        column[:] = values
        return column, np.zeros(n, dtype=bool)
    invalid = np.zeros(n, dtype=bool)
    converted: list[str | None] = []
    for i, value in enumerate(values):
        category = category_string(value)
        if category is None and value is not None:
            invalid[i] = True
        converted.append(category)
    column[:] = converted
    return column, invalid


def category_string(value: Any) -> str | None:
    """The category a scalar stands for: numbers and booleans as their JSON text.

    >>> category_string(3), category_string(3.0), category_string(True), category_string([1])
    ('3', '3', 'true', None)
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    return None


def _to_millis(value: Any) -> tuple[int, str | None]:
    """Epoch milliseconds from an int/float (ms) or an ISO-8601 string; or a problem."""
    if value is None:
        return NO_TIME, None
    if isinstance(value, bool):
        return NO_TIME, "boolean is not a time"
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0 or value >= 2**53:
            return NO_TIME, f"{value!r} is not epoch milliseconds"
        return int(value), None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return NO_TIME, f"{value[:40]!r} is not ISO-8601"
        if parsed.tzinfo is None:
            return NO_TIME, f"{value[:40]!r} has no time zone; add Z or +00:00"
        return round(parsed.timestamp() * 1000), None
    return NO_TIME, f"{type(value).__name__} is not a time"
