"""Per-pane summary of one categorical feature.

Counts over the baseline vocabulary (its most frequent values), one ``other`` slot for values
the baseline saw but did not keep in the vocabulary, and one ``unseen`` slot for values the
baseline never saw; plus a small Misra-Gries heavy-hitters table of the unseen values, so an
alert can name them. Counts add and subtract exactly; the heavy-hitters table merges (the
window re-merges it from its panes instead of subtracting).

Heavy-hitters guarantee (Misra-Gries with ``capacity`` counters): a value's reported count is
at most its true count and at least ``true - unseen_total / (capacity + 1)``, so every unseen
value above that share is listed.

>>> layout = CategoricalLayout(("DE", "FR"), known_tail=frozenset({"LU"}))
>>> s = layout.empty()
>>> s.update(np.array(["DE", "FR", "DE", "LU", "XX", None], dtype=object), invalid=0)
>>> s.counts.tolist(), s.missing, s.top_unseen()
([2, 1, 1, 1], 1, [('XX', 1)])
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import orjson

__all__ = ["CategoricalLayout", "CategoricalSummary"]

HEAVY_HITTER_CAPACITY = 32


@dataclass(frozen=True)
class CategoricalLayout:
    """The vocabulary shared by every summary of one categorical feature.

    ``known_tail`` lists baseline values outside the vocabulary (they count as ``other``);
    when the baseline had too many to keep, ``tail_complete`` is False and every value
    outside the vocabulary counts as ``other`` (the unseen check is then off for it).
    """

    vocabulary: tuple[str, ...]
    known_tail: frozenset[str] = frozenset()
    tail_complete: bool = True
    index: dict[str | None, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str | None, int] = {value: i for i, value in enumerate(self.vocabulary)}
        other = len(self.vocabulary)
        for value in self.known_tail:
            index.setdefault(value, other)
        index[None] = -1  # missing: so one dict lookup per value codes everything (update)
        object.__setattr__(self, "index", index)

    @property
    def other_slot(self) -> int:
        return len(self.vocabulary)

    @property
    def unseen_slot(self) -> int:
        return len(self.vocabulary) + 1

    @property
    def labels(self) -> list[str]:
        return [*self.vocabulary, "<other>", "<unseen>"]

    def empty(self) -> CategoricalSummary:
        return CategoricalSummary(self, np.zeros(len(self.vocabulary) + 2, dtype=np.int64))

    def codes(self, values: np.ndarray) -> np.ndarray:
        """The slot of each value of an object column (-1: missing or invalid)."""
        fallback = self.unseen_slot if self.tail_complete else self.other_slot
        # map(index.get, values, repeat(fallback)) runs the lookups in C.
        return np.fromiter(map(self.index.get, values, repeat(fallback)), dtype=np.int64,
                           count=len(values))

    def read(self, data: bytes) -> CategoricalSummary:
        """A summary of this layout from :meth:`CategoricalSummary.to_bytes`."""
        return CategoricalSummary.from_bytes(data, self)


@dataclass
class CategoricalSummary:
    """Mergeable, subtractable counts of one categorical feature over a pane or a window."""

    layout: CategoricalLayout
    counts: np.ndarray  # vocabulary..., other, unseen
    missing: int = 0
    invalid: int = 0
    unseen: dict[str, int] = field(default_factory=dict)  # Misra-Gries heavy hitters

    def update(self, values: np.ndarray, invalid: int = 0, step: int = 1,
               unseen: dict[str, int] | None = None, codes: np.ndarray | None = None
               ) -> None:
        """Add an object column of category strings (None = missing or invalid).

        ``step=-1`` removes values added before (the counts exactly; the heavy hitters are
        left alone: a window re-merges them). ``unseen``, when given, receives the unseen
        values' heavy hitters instead of this summary (as for numeric moments). ``codes``:
        ``layout.codes(values)``, when the caller has them already."""
        layout = self.layout
        fallback = layout.unseen_slot if layout.tail_complete else layout.other_slot
        if codes is None:
            codes = layout.codes(values)
        missing = codes < 0
        nulls = int(missing.sum())
        counted = np.bincount(codes[~missing], minlength=len(self.counts))
        if step > 0:
            self.counts += counted
        else:
            self.counts -= counted
        self.missing += step * (nulls - invalid)
        self.invalid += step * invalid
        if step > 0 and fallback == layout.unseen_slot:
            unseen_rows = np.flatnonzero(codes == fallback)
            if len(unseen_rows):
                count_unseen(self.unseen if unseen is None else unseen,
                             [values[i] for i in unseen_rows])

    @property
    def count(self) -> int:
        """Valid values counted."""
        return int(self.counts.sum())

    @property
    def records(self) -> int:
        return self.count + self.missing + self.invalid

    def merge(self, other: CategoricalSummary) -> None:
        self.counts += other.counts
        self.missing += other.missing
        self.invalid += other.invalid
        self.unseen = merge_heavy_hitters([self.unseen, other.unseen])

    def subtract(self, other: CategoricalSummary) -> None:
        """Remove ``other``'s counts; the heavy hitters are re-merged by the window."""
        self.counts -= other.counts
        self.missing -= other.missing
        self.invalid -= other.invalid

    def copy(self) -> CategoricalSummary:
        return CategoricalSummary(self.layout, self.counts.copy(), self.missing, self.invalid,
                                  dict(self.unseen))

    def top_unseen(self, limit: int = 5) -> list[tuple[str, int]]:
        """The most frequent unseen values (counts are lower bounds, see module docs)."""
        return sorted(self.unseen.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    _HEADER = struct.Struct("<4sHqqq")

    def to_bytes(self) -> bytes:
        unseen = orjson.dumps(self.unseen)
        header = self._HEADER.pack(b"SSCS", 1, self.missing, self.invalid, len(self.counts))
        return header + self.counts.astype("<i8").tobytes() + unseen

    @classmethod
    def from_bytes(cls, data: bytes, layout: CategoricalLayout) -> CategoricalSummary:
        magic, version, missing, invalid, n = cls._HEADER.unpack_from(data)
        if magic != b"SSCS" or version != 1:
            raise ValueError("not a streamskew categorical summary (or a newer version)")
        if n != len(layout.vocabulary) + 2:
            raise ValueError("summary bytes do not match this feature's baseline vocabulary")
        offset = cls._HEADER.size
        counts = np.frombuffer(data, "<i8", n, offset).astype(np.int64)
        unseen = orjson.loads(data[offset + 8 * n:])
        return cls(layout, counts, missing, invalid, unseen)


def count_unseen(table: dict[str, int], values: list[str]) -> None:
    """Add ``values`` to the Misra-Gries table ``table`` (in place)."""
    for value in values:
        if value in table:
            table[value] += 1
        elif len(table) < HEAVY_HITTER_CAPACITY:
            table[value] = 1
        else:  # Misra-Gries: decrement everyone, forget those at zero
            for key in list(table):
                table[key] -= 1
                if table[key] == 0:
                    del table[key]


def merge_heavy_hitters(tables: list[dict[str, int]],
                        capacity: int = HEAVY_HITTER_CAPACITY) -> dict[str, int]:
    """Merge Misra-Gries tables, keeping the guarantee (Agarwal et al., mergeable summaries)."""
    merged: dict[str, int] = {}
    for table in tables:
        for key, value in table.items():
            merged[key] = merged.get(key, 0) + value
    if len(merged) <= capacity:
        return merged
    cut = sorted(merged.values(), reverse=True)[capacity]
    return {k: v - cut for k, v in merged.items() if v > cut}
