"""Training data -> a baseline: what each feature looked like when the model was trained.

Per numeric feature: count, missing/invalid rates, about 100 equal-mass bins whose edges are
the training quantiles (from a datasketches KLL sketch, so files larger than memory work)
with the *exact* count in every bin (a second pass), moments, and a few quantiles.
Per categorical feature: the most frequent values with their counts (the vocabulary), the
rest as ``other``, and the number of values seen once (the Good-Turing estimate of how often
a never-seen value turns up by chance).

>>> baseline = Baseline.from_columns({"amount": [1.0, 2.5, 3.0, None, 10.0] * 40,
...                                   "country": ["DE", "FR", "DE", "US", "DE"] * 40})
>>> baseline.features["amount"].kind, baseline.features["country"].vocabulary
('numeric', ('DE', 'FR', 'US'))
>>> baseline.features["amount"].missing_rate
0.2
"""

from __future__ import annotations

import base64
import hashlib
import math
import numbers
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from datasketches import kll_doubles_sketch

from .config import Config
from .readers import FileProblem, SkippedLines, read_chunks
from .records import category_string
from .sketch.categorical import CategoricalLayout
from .sketch.numeric import NumericLayout
from .sketch.quantiles import QuantileLayout

__all__ = ["Baseline", "BaselineError", "CategoricalBaseline", "NumericBaseline"]

SCHEMA = "streamskew.baseline/v1"
QUANTILE_NAMES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75,
                  "p95": 0.95, "p99": 0.99}
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "none"})
MAX_DISTINCT = 100_000  # categorical values counted exactly per feature
MAX_KNOWN_TAIL = 50_000  # values outside the vocabulary kept for the unseen check
NUMERIC_SHARE = 0.99  # a column is numeric when this share of its values parses as numbers


class BaselineError(ValueError):
    """A baseline cannot be built or read; the message says why and what to do."""


@dataclass(frozen=True)
class NumericBaseline:
    """The training distribution of one numeric feature."""

    name: str
    count: int  # finite values
    missing: int
    invalid: int
    edges: np.ndarray  # k+1 increasing edges (training quantiles)
    bin_counts: np.ndarray  # k+2 exact counts: underflow, k bins, overflow
    quantiles: Mapping[str, float]
    mean: float
    std: float
    minimum: float
    maximum: float
    kll: bytes
    quantile_layout: QuantileLayout
    kind: str = field(default="numeric", init=False)

    @property
    def records(self) -> int:
        return self.count + self.missing + self.invalid

    @property
    def missing_rate(self) -> float:
        return (self.missing + self.invalid) / self.records if self.records else 0.0

    @cached_property
    def layout(self) -> NumericLayout:
        """The summary layout for this feature (built once: it precomputes lookup tables)."""
        return NumericLayout(self.edges, self.quantile_layout)

    @property
    def points(self) -> np.ndarray:
        """One representative value per bin (midpoints; the edges for under/overflow)."""
        edges = self.edges
        middle = (edges[:-1] + edges[1:]) / 2 if len(edges) > 1 else edges
        return np.concatenate([[edges[0]], middle, [edges[-1]]])

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "numeric", "count": self.count, "missing": self.missing,
            "invalid": self.invalid, "edges": self.edges.tolist(),
            "bin_counts": self.bin_counts.tolist(), "quantiles": dict(self.quantiles),
            "mean": self.mean, "std": self.std, "min": self.minimum, "max": self.maximum,
            "kll": base64.b64encode(self.kll).decode(),
            "quantile_layout": {"relative_accuracy": self.quantile_layout.relative_accuracy,
                                "key_min": self.quantile_layout.key_min,
                                "buckets": self.quantile_layout.buckets},
        }

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> NumericBaseline:
        q = raw["quantile_layout"]
        return cls(name=name, count=raw["count"], missing=raw["missing"],
                   invalid=raw["invalid"], edges=np.asarray(raw["edges"], dtype=np.float64),
                   bin_counts=np.asarray(raw["bin_counts"], dtype=np.int64),
                   quantiles=dict(raw["quantiles"]), mean=raw["mean"], std=raw["std"],
                   minimum=raw["min"], maximum=raw["max"], kll=base64.b64decode(raw["kll"]),
                   quantile_layout=QuantileLayout(q["relative_accuracy"], q["key_min"],
                                                  q["buckets"]))


@dataclass(frozen=True)
class CategoricalBaseline:
    """The training distribution of one categorical feature."""

    name: str
    count: int
    missing: int
    invalid: int
    vocabulary: tuple[str, ...]
    vocabulary_counts: np.ndarray
    other_count: int
    known_tail: frozenset[str]
    tail_complete: bool
    singletons: int  # values seen exactly once (Good-Turing)
    distinct: int
    kind: str = field(default="categorical", init=False)

    @property
    def records(self) -> int:
        return self.count + self.missing + self.invalid

    @property
    def missing_rate(self) -> float:
        return (self.missing + self.invalid) / self.records if self.records else 0.0

    @property
    def bin_counts(self) -> np.ndarray:
        """Counts in summary order: vocabulary, other, unseen (0 in the baseline)."""
        return np.concatenate([self.vocabulary_counts, [self.other_count, 0]]).astype(np.int64)

    @property
    def unseen_rate(self) -> float:
        """Good-Turing estimate of the share of values never seen in training."""
        return self.singletons / self.count if self.count else 0.0

    @cached_property
    def layout(self) -> CategoricalLayout:
        return CategoricalLayout(self.vocabulary, self.known_tail, self.tail_complete)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "categorical", "count": self.count, "missing": self.missing,
            "invalid": self.invalid, "vocabulary": list(self.vocabulary),
            "vocabulary_counts": self.vocabulary_counts.tolist(),
            "other_count": self.other_count,
            "known_tail": sorted(self.known_tail) if self.tail_complete else None,
            "singletons": self.singletons, "distinct": self.distinct,
        }

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> CategoricalBaseline:
        tail = raw.get("known_tail")
        return cls(name=name, count=raw["count"], missing=raw["missing"],
                   invalid=raw["invalid"], vocabulary=tuple(raw["vocabulary"]),
                   vocabulary_counts=np.asarray(raw["vocabulary_counts"], dtype=np.int64),
                   other_count=raw["other_count"], known_tail=frozenset(tail or ()),
                   tail_complete=tail is not None, singletons=raw["singletons"],
                   distinct=raw["distinct"])


FeatureBaseline = NumericBaseline | CategoricalBaseline


@dataclass(frozen=True)
class Baseline:
    """Every feature's training distribution, with an id derived from the content."""

    features: Mapping[str, FeatureBaseline]
    count: int
    id: str
    created_at: str = ""
    sources: tuple[str, ...] = ()
    skipped: SkippedLines = field(default_factory=SkippedLines, compare=False, repr=False)
    """Input lines that could not be used while building (empty when loaded)."""

    @property
    def schema(self) -> dict[str, str]:
        """Feature name -> kind."""
        return {name: feature.kind for name, feature in self.features.items()}

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def build(cls, paths: Iterable[str | os.PathLike[str]], config: Config | None = None,
              progress: bool = False) -> Baseline:
        """Build from CSV/JSONL/Parquet files in two streaming passes (memory stays bounded)."""
        config = config or Config()
        paths = [Path(p) for p in paths]
        for path in paths:
            if not path.is_file():
                raise BaselineError(f"{path}: no such file")
        skipped = SkippedLines()
        builder = _Builder(config)
        for chunk in _chunks(paths, config, skipped, progress, "baseline"):
            builder.first_pass(chunk)
        builder.decide()
        if builder.needs_second_pass:
            for chunk in _chunks(paths, config, SkippedLines(), progress, "baseline: pass 2/2"):
                builder.second_pass(chunk)
        return builder.finish(tuple(str(p) for p in paths), skipped)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Iterable[Any]],
                     config: Config | None = None) -> Baseline:
        """Build from in-memory columns (name -> values), e.g. a dict of lists or arrays."""
        config = config or Config()
        chunk = {name: values.tolist() if isinstance(values, np.ndarray) else list(values)
                 for name, values in columns.items()}
        lengths = {len(v) for v in chunk.values()}
        if len(lengths) > 1:
            raise BaselineError("all columns must have the same length")
        builder = _Builder(config)
        builder.first_pass(chunk)
        builder.decide()
        builder.second_pass(chunk)
        return builder.finish(("<columns>",))

    # -- files -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "id": self.id, "created_at": self.created_at,
                "sources": list(self.sources), "count": self.count,
                "features": {name: f.to_json() for name, f in self.features.items()}}

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Baseline:
        """Read a baseline file written by :meth:`save` (``streamskew baseline build``)."""
        try:
            raw = orjson.loads(Path(path).read_bytes())
        except OSError as exc:
            raise BaselineError(f"{path}: cannot read the baseline: {exc.strerror}") from None
        except orjson.JSONDecodeError as exc:
            raise BaselineError(f"{path}: not a baseline file (invalid JSON: {exc}); build "
                                "one with `streamskew baseline build`") from None
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            raise BaselineError(f"{path}: not a {SCHEMA} file; build one with "
                                "`streamskew baseline build`")
        try:
            features: dict[str, FeatureBaseline] = {}
            for name, spec in raw["features"].items():
                loader = NumericBaseline if spec["kind"] == "numeric" else CategoricalBaseline
                features[name] = loader.from_json(name, spec)
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"{path}: damaged baseline file ({exc!r}); rebuild it") from None
        return cls(features=features, count=raw["count"], id=raw["id"],
                   created_at=raw.get("created_at", ""), sources=tuple(raw.get("sources", ())))

    def describe(self) -> str:
        """A readable per-feature summary (``streamskew baseline show``)."""
        lines = [f"baseline {self.id}  records={self.count:,}  features={len(self.features)}",
                 f"built {self.created_at} from {', '.join(self.sources) or '?'}", ""]
        for name, f in self.features.items():
            head = f"{name:<24} {f.kind:<12} n={f.count:<10,} missing={f.missing_rate:7.2%}"
            if isinstance(f, NumericBaseline):
                q = f.quantiles
                lines.append(f"{head} bins={len(f.edges) - 1:<4} mean={_fmt(f.mean)} "
                             f"std={_fmt(f.std)} min={_fmt(f.minimum)} p50={_fmt(q['p50'])} "
                             f"p99={_fmt(q['p99'])} max={_fmt(f.maximum)}")
            else:
                top = ", ".join(f"{v}={c / max(f.count, 1):.1%}" for v, c in
                                zip(f.vocabulary[:4], f.vocabulary_counts[:4], strict=False))
                lines.append(f"{head} distinct={f.distinct:<6} top: {top}")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _chunks(paths: list[Path], config: Config, skipped: SkippedLines, progress: bool,
            label: str) -> Iterable[dict[str, list[Any]]]:
    from tqdm import tqdm

    total = sum(p.stat().st_size for p in paths)
    with tqdm(total=total, unit="B", unit_scale=True, desc=label,
              disable=not progress, leave=False) as bar:
        done = 0
        for path in paths:
            def advance(position: int, start: int = done) -> None:
                bar.update(max(start + position - bar.n, 0))
            try:
                yield from read_chunks(path, config.message, config.build.chunk_rows, skipped,
                                       advance)
            except FileProblem as exc:
                raise BaselineError(str(exc)) from None
            done += path.stat().st_size


class _Column:
    """First-pass accumulator of one column, before its kind is known.

    Distinct raw values are counted exactly (up to ``MAX_DISTINCT`` of them), so for most
    columns the quantiles, bin counts and moments come out exact and reproducible, with no
    second pass. Past that many distinct values the KLL sketch gives the bin edges (rank
    error ~0.3% at k=400) and a second pass counts the bins exactly.
    """

    def __init__(self, kll_k: int) -> None:
        self.records = 0
        self.missing = 0
        self.numbers = 0
        self.non_finite = 0
        self.non_numbers = 0
        self.kll = kll_doubles_sketch(kll_k)
        self.sum = 0.0
        self.sum_squares = 0.0
        self.values: Counter[Any] = Counter()
        self.overflow = 0  # values whose distinct key was not kept (MAX_DISTINCT reached)

    def add(self, values: list[Any]) -> None:
        self.records += len(values)
        chunk = Counter(values)  # C speed; each distinct value is then parsed once
        self.missing += chunk.pop(None, 0)
        for token in MISSING_TOKENS:
            self.missing += chunk.pop(token, 0)
        if not chunk:
            return
        keys = list(chunk)
        counts = np.fromiter(chunk.values(), dtype=np.int64, count=len(keys))
        parsed = [_as_number(k) for k in keys]
        is_number = np.fromiter((p is not None for p in parsed), dtype=bool, count=len(keys))
        numbers = np.array([p if p is not None else 0.0 for p in parsed], dtype=np.float64)
        finite = is_number & np.isfinite(numbers)
        self.non_numbers += int(counts[~is_number].sum())
        self.non_finite += int(counts[is_number & ~finite].sum())
        if finite.any():
            expanded = np.repeat(numbers[finite], counts[finite])
            self.numbers += len(expanded)
            self.kll.update(expanded)
            self.sum += float(expanded.sum())
            self.sum_squares += float(np.dot(expanded, expanded))
        self._keep(chunk)

    def _keep(self, chunk: Counter[Any]) -> None:
        kept = self.values
        if len(kept) + len(chunk) <= MAX_DISTINCT:
            kept.update(chunk)
            return
        for key, count in chunk.items():
            if key in kept or len(kept) < MAX_DISTINCT:
                kept[key] += count
            else:
                self.overflow += count

    @property
    def exact(self) -> bool:
        return self.overflow == 0

    def inferred_kind(self) -> str:
        present = self.numbers + self.non_finite + self.non_numbers
        if present and (self.numbers + self.non_finite) >= NUMERIC_SHARE * present:
            return "numeric"
        return "categorical"

    def number_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted distinct finite numbers and their counts (exact when ``self.exact``)."""
        pairs = [(n, c) for k, c in self.values.items()
                 if (n := _as_number(k)) is not None and math.isfinite(n)]
        merged: dict[float, int] = {}
        for number, count in pairs:  # "1" and "1.0" are the same number
            merged[number] = merged.get(number, 0) + count
        values = np.array(sorted(merged), dtype=np.float64)
        return values, np.array([merged[v] for v in values], dtype=np.int64)

    def category_counts(self) -> Counter[str]:
        categories: Counter[str] = Counter()
        for key, count in self.values.items():
            category = category_string(key)
            if category is not None:
                categories[category.strip() if isinstance(key, str) else category] += count
        return categories


def _weighted_quantiles(values: np.ndarray, counts: np.ndarray, ranks: np.ndarray
                        ) -> np.ndarray:
    """Exact quantiles of weighted data, numpy's "lower" method: element floor(rank * (n-1))."""
    cumulative = np.cumsum(counts)
    index = np.floor(np.asarray(ranks) * (cumulative[-1] - 1)).astype(np.int64)
    return values[np.searchsorted(cumulative, index, side="right")]


def _as_number(value: Any) -> float | None:
    kind = type(value)
    if kind is float or kind is int:
        return float(value)
    if kind is str:
        try:
            return float(value)
        except ValueError:
            return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        return float(value)  # numpy scalars
    return None  # bools, lists, objects are not numbers


class _Builder:
    """(1) kinds, exact counts or KLL -> bin edges; (2) exact bin counts, only if needed."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.columns: dict[str, _Column] = {}
        self.rows = 0
        self.kinds: dict[str, str] = {}
        self.edges: dict[str, np.ndarray] = {}
        self.bins: dict[str, np.ndarray] = {}
        self.extremes: dict[str, list[float]] = {}

    def _wanted(self, name: str) -> bool:
        return name not in self.config.message.exclude and not self.config.feature(name).ignore

    def first_pass(self, chunk: dict[str, list[Any]]) -> None:
        size = len(next(iter(chunk.values()))) if chunk else 0
        for name, values in chunk.items():
            if not self._wanted(name):
                continue
            column = self.columns.get(name)
            if column is None:
                column = self.columns[name] = _Column(self.config.build.kll_k)
                column.records = column.missing = self.rows  # absent from earlier chunks
            column.add(values)
        for name, column in self.columns.items():
            if name not in chunk:  # absent from this chunk: missing
                column.records += size
                column.missing += size
        self.rows += size

    def decide(self) -> None:
        """Fix each column's kind and bin edges; exact columns get their bins right away."""
        if not self.columns:
            raise BaselineError("the input has no feature columns (all excluded or empty)")
        ranks = np.linspace(0.0, 1.0, self.config.build.bins + 1)
        for name, column in self.columns.items():
            kind = self.config.feature(name).kind or column.inferred_kind()
            if kind == "numeric" and column.numbers == 0:
                raise BaselineError(f"feature {name!r} is configured numeric but has no numeric "
                                    "values in the training data; fix [features."
                                    f"{name}] kind or the input")
            self.kinds[name] = kind
            if kind != "numeric":
                continue
            if column.exact:
                values, counts = column.number_counts()
                edges = _with_one_bin(np.unique(_weighted_quantiles(values, counts, ranks)))
                self.bins[name] = _bin_counts(edges, values, counts)
                self.extremes[name] = [float(values[0]), float(values[-1])]
            else:
                # KLL's min and max are exact; its inner quantiles carry the rank error.
                # The outer edges must be the true extremes, or training values would sit
                # in the under/overflow bins that mean "out of range".
                inner = np.asarray(column.kll.get_quantiles(ranks[1:-1]), dtype=np.float64)
                edges = _with_one_bin(np.unique(np.concatenate([
                    [column.kll.get_min_value()], inner, [column.kll.get_max_value()]])))
                self.bins[name] = np.zeros(len(edges) + 1, dtype=np.int64)
                self.extremes[name] = [math.inf, -math.inf]
            self.edges[name] = edges

    @property
    def needs_second_pass(self) -> bool:
        return any(not self.columns[name].exact for name in self.edges)

    def second_pass(self, chunk: dict[str, list[Any]]) -> None:
        for name, edges in self.edges.items():
            values = chunk.get(name)
            if values is None or self.columns[name].exact:
                continue
            numbers = np.fromiter((_finite_or_nan(v) for v in values), dtype=np.float64,
                                  count=len(values))
            numbers = numbers[~np.isnan(numbers)]
            if not len(numbers):
                continue
            self.bins[name] += _bin_counts(edges, numbers, np.ones(len(numbers), np.int64))
            low, high = self.extremes[name]
            self.extremes[name] = [min(low, float(numbers.min())), max(high, float(numbers.max()))]

    def finish(self, sources: tuple[str, ...],
               skipped: SkippedLines | None = None) -> Baseline:
        features: dict[str, FeatureBaseline] = {}
        for name, column in self.columns.items():
            if self.kinds[name] == "numeric":
                features[name] = self._numeric(name, column)
            else:
                features[name] = self._categorical(name, column)
        body = {name: f.to_json() for name, f in features.items()}
        for spec in body.values():
            spec.pop("kll", None)  # its compaction is randomized; the rest is reproducible
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return Baseline(features=features, count=self.rows, id=digest[:16], created_at=created,
                        sources=sources, skipped=skipped or SkippedLines())

    def _numeric(self, name: str, column: _Column) -> NumericBaseline:
        count = column.numbers
        if column.exact:  # exact moments and quantiles from the distinct values
            values, counts = column.number_counts()
            mean = float(np.dot(values, counts) / count)
            variance = float(np.dot((values - mean) ** 2, counts) / count)
            quantile_values = _weighted_quantiles(values, counts,
                                                  np.array(list(QUANTILE_NAMES.values())))
        else:
            mean = column.sum / count
            variance = max(column.sum_squares / count - mean * mean, 0.0)
            quantile_values = column.kll.get_quantiles(list(QUANTILE_NAMES.values()))
        std = math.sqrt(variance * count / (count - 1)) if count > 1 else 0.0
        edges = self.edges[name]
        low, high = self.extremes[name]
        return NumericBaseline(
            name=name, count=count, missing=column.missing,
            invalid=column.non_finite + column.non_numbers, edges=edges,
            bin_counts=self.bins[name],
            quantiles={k: float(v) for k, v in zip(QUANTILE_NAMES, quantile_values,
                                                   strict=True)},
            mean=mean, std=std, minimum=low, maximum=high, kll=column.kll.serialize(),
            quantile_layout=QuantileLayout.around(float(np.max(np.abs(edges)))))

    def _categorical(self, name: str, column: _Column) -> CategoricalBaseline:
        categories = column.category_counts()
        ranked = sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))
        limit = self.config.build.max_categories
        vocabulary, tail = ranked[:limit], ranked[limit:]
        complete = column.overflow == 0 and len(tail) <= MAX_KNOWN_TAIL
        count = sum(categories.values()) + column.overflow
        return CategoricalBaseline(
            name=name, count=count, missing=column.missing,
            invalid=column.records - column.missing - count,
            vocabulary=tuple(v for v, _ in vocabulary),
            vocabulary_counts=np.array([c for _, c in vocabulary], dtype=np.int64),
            other_count=sum(c for _, c in tail) + column.overflow,
            known_tail=frozenset(v for v, _ in tail) if complete else frozenset(),
            tail_complete=complete,
            singletons=sum(1 for c in categories.values() if c == 1),
            distinct=len(categories) + (1 if column.overflow else 0))


def _with_one_bin(edges: np.ndarray) -> np.ndarray:
    """A constant feature still needs one bin [v, next float after v] for its point mass."""
    if len(edges) == 1:
        return np.array([edges[0], np.nextafter(edges[0], np.inf)])
    return edges


def _bin_counts(edges: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Counts per slot: underflow, [e_i, e_i+1) bins (the last closed), overflow."""
    slots = np.searchsorted(edges, values, side="right")
    slots[(slots == len(edges)) & (values <= edges[-1])] = len(edges) - 1
    return np.bincount(slots, weights=counts, minlength=len(edges) + 1).astype(np.int64)


def _finite_or_nan(value: Any) -> float:
    number = _as_number(value)
    return number if number is not None and math.isfinite(number) else math.nan
