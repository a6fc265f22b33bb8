"""An event-time pane: one model's records whose event time falls in ``[index * pane_ms,
(index + 1) * pane_ms)``, summarized per feature.

A :class:`Pane` merges (partial panes from several partitions or processes become one),
subtracts (a window drops its oldest pane) and serializes to bytes (state checkpoints, the
panes topic).

Small panes stay sparse. Every feature's summary has a fixed size whatever it counts (a
numeric one: its bins and a 2,048-slot quantile sketch), so a deployment of many models with
little traffic each would create, serialize, ship and merge full summaries for panes of one
or two records. A pane therefore keeps its records' values (:class:`PaneValues`) until it
holds more than :data:`SPARSE_RECORDS` records, and only then folds them into summaries.
Folding later gives exactly the counts folding at once gives (they are integers): a sparse
pane is the same pane, stored another way. Float sums (a window's mean) may differ in the
last bits, as they do between any two orders of merging.

>>> import numpy as np
>>> from streamskew.baseline import Baseline
>>> from streamskew.config import MessageConfig
>>> from streamskew.records import Decoder
>>> baseline = Baseline.from_columns({"x": [float(i) for i in range(100)]})
>>> decoder = Decoder(MessageConfig(), {"x": "numeric"})
>>> columns, _ = decoder.decode([b'{"features": {"x": 1.5}}'] * 3)
>>> pane = Pane.sparse(0, baseline)
>>> fold(pane, columns, baseline)
>>> pane.records, pane.values is not None  # three records: kept as values
(3, True)
>>> dense = Pane.empty(0, baseline)
>>> fold(dense, columns, baseline)
>>> pane.densify()
>>> bool((pane.summaries["x"].bins == dense.summaries["x"].bins).all())
True
"""

from __future__ import annotations

import struct
import zlib
from base64 import b64encode
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import orjson

from ..baseline import Baseline
from ..records import Columns
from ..sketch.categorical import CategoricalSummary, merge_heavy_hitters
from ..sketch.joint import slots_buffer
from ..sketch.numeric import EMPTY_MOMENTS, NumericSummary, combine_moments

__all__ = ["MAX_NEW_FEATURES", "SPARSE_RECORDS", "BaselineMismatch", "BatchValues",
           "EncodedPanes", "Pane", "PaneValues", "fold", "fold_rows"]

Summary = NumericSummary | CategoricalSummary

MAX_NEW_FEATURES = 64  # unknown keys counted per pane (the most frequent ones)
# A pane keeps its records' values up to this many records. Below it the values are smaller
# to store and ship than the summaries (a numeric summary is ~17 KB in memory, ~1 KB
# serialized; 64 values are 512 B), and cheaper to fold into a window than summaries to merge.
SPARSE_RECORDS = 64
_SPARSE_MAGIC = b"SSPV"  # an uncompressed sparse pane (zlib streams start with 0x78)


class BaselineMismatch(ValueError):
    """A pane summarized against one baseline met another: its bins mean something else."""


class _Categories:
    """A chunk of categorical values (``[feature, record]`` objects) and, once a fold has
    needed them, their codes. A small pane's records are folded again for every window
    and finer scale that holds them; the chunk is shared by all of them (see
    :meth:`PaneValues.extend`), so each value is looked up once."""

    __slots__ = ("_baseline", "_codes", "values")

    def __init__(self, values: np.ndarray, codes: np.ndarray | None = None,
                 baseline: Baseline | None = None) -> None:
        self.values = values
        self._codes = codes
        self._baseline = baseline  # whose layouts coded them

    def codes(self, baseline: Baseline) -> np.ndarray:
        if self._codes is None or self._baseline is not baseline:
            codes = np.empty(self.values.shape, dtype=np.int64)
            for i, name in enumerate(baseline.categorical_names):
                codes[i] = baseline.monitored[name].layout.codes(self.values[i])  # type: ignore[union-attr]
            self._codes, self._baseline = codes, baseline
        return self._codes

    @staticmethod
    def concatenate(chunks: list[_Categories], baseline: Baseline) -> _Categories:
        if not chunks:
            return _Categories(np.empty((len(baseline.categorical_names), 0), dtype=object))
        values = np.concatenate([c.values for c in chunks], axis=1)
        if all(c._codes is not None and c._baseline is baseline for c in chunks):
            return _Categories(values, np.concatenate([c._codes for c in chunks], axis=1),
                               baseline)
        return _Categories(values)


class PaneValues:
    """The values of a small pane's records per feature of the baseline, not yet summarized.

    Folding costs a fixed amount per feature and call besides its per-record work, so
    values of several panes are folded together where they can be (:meth:`union`)."""

    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline
        self.records = 0
        self.invalid: dict[str, int] = {}
        # Chunks of values: [numeric feature, record] float64 and [categorical feature,
        # record] objects (str or None), in the baseline's numeric_names and
        # categorical_names order: a pane's values are then a few arrays, not one per feature.
        self._numeric: list[np.ndarray] = []
        self._categorical: list[_Categories] = []

    def add(self, columns: Columns) -> None:
        """Keep the values of decoded records."""
        self.extend(BatchValues(columns).values(self.baseline, 0, columns.count))

    def extend(self, other: PaneValues) -> None:
        self._numeric.extend(other._numeric)
        self._categorical.extend(other._categorical)
        for name, count in other.invalid.items():
            self.invalid[name] = self.invalid.get(name, 0) + count
        self.records += other.records

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """All values: ``[numeric feature, record]`` and ``[categorical feature, record]``."""
        if len(self._numeric) != 1:
            self._numeric[:] = [np.concatenate(self._numeric, axis=1) if self._numeric
                                else np.empty((len(self.baseline.numeric_names), 0))]
        if len(self._categorical) != 1:
            self._categorical[:] = [_Categories.concatenate(self._categorical, self.baseline)]
        return self._numeric[0], self._categorical[0].values

    def categorical_codes(self) -> np.ndarray:
        """:meth:`CategoricalLayout.codes` of every categorical value, ``[feature, record]``.
        Each chunk is coded on its own first, so that the panes sharing it keep its codes."""
        for chunk in self._categorical:
            chunk.codes(self.baseline)
        self.matrices()
        return self._categorical[0].codes(self.baseline)

    def copy(self) -> PaneValues:
        return PaneValues.union(self.baseline, [self])

    @staticmethod
    def union(baseline: Baseline, parts: list[PaneValues]) -> PaneValues:
        """The values of all of ``parts`` (of the same baseline) as one."""
        union = PaneValues(baseline)
        for part in parts:
            union.extend(part)
        return union

    # -- folding -----------------------------------------------------------------------------

    def fold_into(self, summaries: dict[str, Summary], step: int = 1,
                  rederived: bool = False) -> None:
        """Add these records to dense ``summaries`` (``step=-1``: take them out again).

        ``rederived``: the target re-derives its moments and heavy hitters from its panes
        afterwards (a window's aggregate, see :meth:`Pane.set_moments`), so the kernels
        leave them alone (as removing values always does)."""
        rederived = rederived or step < 0
        joint = self.baseline.joint
        slots = slots_buffer(len(joint.inputs), self.records) if joint is not None else None
        joint_row = {name: j for j, name in enumerate(joint.inputs)} if joint is not None else {}
        codes = self.categorical_codes()  # (first: it codes each shared chunk once)
        numeric, categorical = self.matrices()
        for i, name in enumerate(self.baseline.categorical_names):
            summaries[name].update(categorical[i], invalid=self.invalid.get(name, 0),  # type: ignore[call-arg]
                                   step=step, unseen={} if rederived else None, codes=codes[i])
        for i, name in enumerate(self.baseline.numeric_names):
            row = joint_row.get(name)
            summaries[name].update(  # type: ignore[call-arg]
                numeric[i], invalid=self.invalid.get(name, 0), step=step,
                moments=np.array(EMPTY_MOMENTS) if rederived else None,
                slots=slots[row] if row is not None and slots is not None else None)
        if joint is not None and slots is not None:
            joint.fold(summaries[joint.name], slots, step=step,  # type: ignore[arg-type]
                       moments=np.array(EMPTY_MOMENTS) if rederived else None)

    # -- bytes -------------------------------------------------------------------------------

    def to_header(self) -> tuple[dict[str, object], bytes]:
        """What the pane header says of the values, and their bytes: the numeric matrix as
        float64, then the categorical one as a JSON list of rows."""
        numeric, categorical = self.matrices()
        data = numeric.astype("<f8").tobytes()
        text = orjson.dumps(categorical.tolist())
        return {"numeric": list(self.baseline.numeric_names),
                "categorical": list(self.baseline.categorical_names),
                "invalid": self.invalid, "sizes": [len(data), len(text)]}, data + text

    @classmethod
    def from_header(cls, header: dict[str, object], body: memoryview | bytes, records: int,
                    baseline: Baseline) -> PaneValues:
        if (header.get("numeric") != list(baseline.numeric_names)
                or header.get("categorical") != list(baseline.categorical_names)):
            raise ValueError("pane values do not match this baseline's features")
        sizes = header["sizes"]
        numeric_size, text_size = int(sizes[0]), int(sizes[1])  # type: ignore[index]
        if numeric_size != 8 * records * len(baseline.numeric_names) \
                or len(body) < numeric_size + text_size:
            raise ValueError("pane values do not match its record count")
        values = cls(baseline)
        numeric = np.frombuffer(body[:numeric_size], "<f8").astype(np.float64)
        values._numeric = [numeric.reshape(len(baseline.numeric_names), records)]
        rows = orjson.loads(bytes(body[numeric_size:numeric_size + text_size]))
        categorical = np.empty((len(baseline.categorical_names), records), dtype=object)
        if len(rows) != len(categorical) or any(len(row) != records for row in rows):
            raise ValueError("pane values do not match its record count")
        for i, row in enumerate(rows):
            categorical[i] = row
        values._categorical = [_Categories(categorical)]
        values.invalid = {str(k): int(v) for k, v in dict(header.get("invalid") or {}).items()}
        values.records = records
        return values


@dataclass
class Pane:
    """Summaries of one model's records in one pane (or, aggregated, in one window).

    Dense (``values`` None): ``summaries`` holds every monitored feature's summary. Sparse:
    ``values`` holds the records' values and ``summaries`` is empty (see the module)."""

    index: int
    records: int = 0
    summaries: dict[str, Summary] = field(default_factory=dict)
    new_features: dict[str, int] = field(default_factory=dict)
    baseline_id: str = ""  # the baseline whose bins the summaries count over
    values: PaneValues | None = None
    # Counts changes of content (records folded, panes merged or subtracted), so encoded
    # bytes can be kept while it stays the same (see EncodedPanes).
    revision: int = field(default=0, compare=False, repr=False)

    @classmethod
    def empty(cls, index: int, baseline: Baseline) -> Pane:
        """A dense pane with nothing in it (a window's aggregate)."""
        return cls(index, 0, {name: f.layout.empty() for name, f in baseline.monitored.items()},
                   baseline_id=baseline.id)

    @classmethod
    def sparse(cls, index: int, baseline: Baseline) -> Pane:
        """A pane to fold records into: it keeps their values while it is small."""
        return cls(index, 0, {}, baseline_id=baseline.id, values=PaneValues(baseline))

    def densify(self) -> None:
        """Fold kept values into summaries (no change for a dense pane)."""
        values = self.values
        if values is None:
            return
        self.summaries = {name: f.layout.empty() for name, f in values.baseline.monitored.items()}
        values.fold_into(self.summaries)
        self.values = None

    def add(self, values: PaneValues, rederived: bool = False) -> None:
        """Add records' values (the caller counts ``records`` and new features);
        ``rederived`` as for :meth:`PaneValues.fold_into`."""
        self.revision += 1
        if self.values is not None and self.values.records + values.records <= SPARSE_RECORDS:
            self.values.extend(values)
            return
        self.densify()
        values.fold_into(self.summaries, rederived=rederived)

    def merge(self, other: Pane) -> None:
        """Add ``other`` (same baseline) into this pane."""
        self.merge_all([other])

    def merge_all(self, panes: list[Pane], rederived: bool = False) -> None:
        """Add ``panes`` into this one; the values of the sparse ones are folded together.
        ``rederived``: this is an aggregate whose moments and heavy hitters are re-derived
        from its panes next (:meth:`set_moments`), so merging need not compute them."""
        kept = []
        for other in panes:
            self._count(other, 1)
            if other.values is not None:
                kept.append(other.values)
            else:
                self.densify()
                for name, summary in other.summaries.items():
                    self.summaries[name].merge(summary)  # type: ignore[arg-type]
        if kept:
            self.add(kept[0] if len(kept) == 1 else PaneValues.union(kept[0].baseline, kept),
                     rederived)

    def subtract(self, other: Pane) -> None:
        """Take ``other`` (merged in before) out; this pane is dense (an aggregate)."""
        self.subtract_all([other])

    def subtract_all(self, panes: list[Pane]) -> None:
        self.densify()
        kept = []
        for other in panes:
            self._count(other, -1)
            if other.values is not None:
                kept.append(other.values)
            else:
                for name, summary in other.summaries.items():
                    self.summaries[name].subtract(summary)  # type: ignore[arg-type]
        if kept:
            PaneValues.union(kept[0].baseline, kept).fold_into(self.summaries, step=-1)

    def _count(self, other: Pane, step: int) -> None:
        """Records and new features of ``other`` added (or taken out) here."""
        if other.baseline_id != self.baseline_id:
            raise BaselineMismatch(f"cannot merge a pane summarized against baseline "
                                   f"{other.baseline_id} into one of baseline {self.baseline_id}")
        self.revision += 1
        self.records += step * other.records
        for name, count in other.new_features.items():
            left = self.new_features.get(name, 0) + step * count
            if left:
                self.new_features[name] = left
            else:
                self.new_features.pop(name, None)

    def copy(self) -> Pane:
        return Pane(self.index, self.records,
                    {name: s.copy() for name, s in self.summaries.items()},
                    dict(self.new_features), self.baseline_id,
                    self.values.copy() if self.values is not None else None)

    def set_moments(self, panes: list[Pane]) -> None:
        """Re-derive this (dense) aggregate's moments and heavy hitters from its panes:
        min/max and heavy hitters cannot be subtracted. The sparse panes' values are
        summarized together, once."""
        parts = [p.summaries for p in panes if p.values is None]
        sparse = [p.values for p in panes if p.values is not None]
        if sparse:
            scratch: dict[str, Summary] = {
                name: f.layout.empty() for name, f in sparse[0].baseline.monitored.items()}
            PaneValues.union(sparse[0].baseline, sparse).fold_into(scratch)
            parts.append(scratch)
        for name, summary in self.summaries.items():
            if isinstance(summary, CategoricalSummary):
                summary.unseen = merge_heavy_hitters([p[name].unseen  # type: ignore[union-attr]
                                                      for p in parts])
            else:
                summary.moments = combine_moments(
                    np.array([p[name].moments for p in parts]).reshape(-1, 4))  # type: ignore

    # -- bytes -------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialize, zlib-compressed (the baseline supplies the layouts when reading back).

        Panes travel through Kafka (panes topic, checkpoints): compression keeps a window of
        many features far below Kafka's 1 MB default message size."""
        head = {"index": self.index, "records": self.records,
                "new_features": self.new_features, "baseline": self.baseline_id}
        if self.values is not None:
            # Not compressed: the values are mostly float64 mantissas, which do not
            # compress, and zlib's set-up costs more than a small pane's whole encoding.
            head["values"], body = self.values.to_header()
            header = orjson.dumps(head)
            return _SPARSE_MAGIC + struct.pack("<I", len(header)) + header + body
        else:
            parts = [s.to_bytes() for s in self.summaries.values()]
            head["summaries"] = [[name, len(part)] for name, part in zip(self.summaries, parts,
                                                                         strict=True)]
            body = b"".join(parts)
        header = orjson.dumps(head)
        return zlib.compress(struct.pack("<I", len(header)) + header + body, 1)

    @classmethod
    def from_bytes(cls, data: bytes, baseline: Baseline) -> Pane:
        try:
            body = data[len(_SPARSE_MAGIC):] if data.startswith(_SPARSE_MAGIC) \
                else zlib.decompress(data)
            (size,) = struct.unpack_from("<I", body)
            raw = orjson.loads(body[4:4 + size])
        except (zlib.error, struct.error, orjson.JSONDecodeError) as exc:
            raise ValueError(f"not a serialized pane ({exc})") from None
        if raw.get("baseline") != baseline.id:
            raise BaselineMismatch(f"pane {raw['index']} was summarized against baseline "
                                   f"{raw.get('baseline') or '(unknown)'}, not {baseline.id}")
        offset = 4 + size
        if "values" in raw:
            try:
                values = PaneValues.from_header(raw["values"], memoryview(body)[offset:],
                                                int(raw["records"]), baseline)
            except (KeyError, TypeError, IndexError, orjson.JSONDecodeError) as exc:
                raise ValueError(f"not a serialized pane ({exc!r})") from None
            return cls(raw["index"], raw["records"], {}, dict(raw["new_features"]),
                       baseline.id, values)
        summaries: dict[str, Summary] = {}
        for name, length in raw["summaries"]:
            feature = baseline.monitored.get(name)
            if feature is None:
                raise ValueError(f"pane has feature {name!r} that the baseline does not know")
            summaries[name] = feature.layout.read(body[offset:offset + length])
            offset += length
        return cls(raw["index"], raw["records"], summaries, dict(raw["new_features"]),
                   baseline.id)


class BatchValues:
    """A batch of decoded records as value matrices (per baseline, made once), to cut into
    the values of its panes by row range: a batch of many models' records holds hundreds of
    small panes, and a copy per pane and feature would cost more than the pane's fold."""

    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        # per baseline (by id, with the baseline so the id stays its own): the matrices
        self._matrices: dict[int, tuple[Baseline, np.ndarray, np.ndarray]] = {}
        self._invalid = {name: _running_count(mask) for name, mask in columns.invalid.items()}
        self._new = {name: _running_count(mask) for name, mask in columns.new_features.items()}

    def _of(self, baseline: Baseline) -> tuple[np.ndarray, np.ndarray]:
        known = self._matrices.get(id(baseline))
        if known is not None and known[0] is baseline:
            return known[1], known[2]
        columns = self.columns
        numeric = np.empty((len(baseline.numeric_names), columns.count))
        for i, name in enumerate(baseline.numeric_names):
            values = columns.numeric.get(name)
            numeric[i] = values if values is not None else np.nan
        categorical = np.empty((len(baseline.categorical_names), columns.count), dtype=object)
        for i, name in enumerate(baseline.categorical_names):
            # None where another model's baseline calls this feature numeric
            categorical[i] = columns.categorical.get(name)
        self._matrices[id(baseline)] = (baseline, numeric, categorical)
        return numeric, categorical

    def values(self, baseline: Baseline, start: int, stop: int) -> PaneValues:
        """The values of rows ``start:stop`` for a pane of ``baseline``."""
        numeric, categorical = self._of(baseline)
        values = PaneValues(baseline)
        values._numeric.append(numeric[:, start:stop].copy())
        values._categorical.append(_Categories(categorical[:, start:stop].copy()))
        for name, running in self._invalid.items():
            count = int(running[stop] - running[start])
            if count and name in baseline.features:
                values.invalid[name] = count
        values.records = stop - start
        return values

    def new_features(self, start: int, stop: int) -> dict[str, int]:
        """Rows ``start:stop`` carrying each key the schema does not know."""
        found = {}
        for name, running in self._new.items():
            count = int(running[stop] - running[start])
            if count:
                found[name] = count
        return found


def _running_count(mask: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])


def fold(pane: Pane, columns: Columns, baseline: Baseline) -> None:
    """Add decoded records to a pane (the numba kernels do the numeric work, now or when a
    sparse pane grows past :data:`SPARSE_RECORDS`)."""
    fold_rows(pane, BatchValues(columns), baseline, 0, columns.count)


def fold_rows(pane: Pane, batch: BatchValues, baseline: Baseline, start: int,
              stop: int) -> None:
    """Add rows ``start:stop`` of a batch to a pane."""
    pane.add(batch.values(baseline, start, stop))
    pane.records += stop - start
    for name, count in batch.new_features(start, stop).items():
        pane.new_features[name] = pane.new_features.get(name, 0) + count
    if len(pane.new_features) > MAX_NEW_FEATURES:
        # A producer that sends thousands of unknown keys must not grow every pane (and the
        # checkpoints and panes records made of them) without bound: keep the most frequent,
        # which are the ones a schema event names anyway.
        kept = sorted(pane.new_features.items(), key=lambda kv: (-kv[1], kv[0]))
        pane.new_features = dict(kept[:MAX_NEW_FEATURES])


class EncodedPanes:
    """Panes as checkpoint text (base64 of :meth:`Pane.to_bytes`), each kept while its pane
    does not change: a checkpoint then encodes the panes that changed since the last one,
    not every open pane again (with many models, most of them did not).

    Keep one per collection of panes: each call forgets the panes it was not given."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[Pane, int, str]] = {}

    def texts(self, panes: Iterable[Pane]) -> list[str]:
        fresh: dict[int, tuple[Pane, int, str]] = {}
        for pane in panes:
            known = self._known.get(id(pane))
            if known is None or known[0] is not pane or known[1] != pane.revision:
                known = (pane, pane.revision, b64encode(pane.to_bytes()).decode())
            fresh[id(pane)] = known  # the pane itself is held, so its id is not reused
        self._known = fresh
        return [text for _, _, text in fresh.values()]
