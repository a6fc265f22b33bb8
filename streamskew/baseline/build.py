"""Training data -> a :class:`~streamskew.baseline.model.Baseline`.

Two streaming passes over CSV/JSONL/Parquet chunks (memory stays bounded): the first infers
each column's kind and counts distinct values exactly (up to ``MAX_DISTINCT``; past that a
datasketches KLL sketch gives the bin edges), the second, needed only for KLL columns,
counts the bins exactly.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from datasketches import kll_doubles_sketch

from ..config import Config
from ..readers import FileProblem, SkippedLines, read_chunks
from ..records import category_string
from ..sketch.quantiles import QuantileLayout
from .joint import JOINT_FEATURE, JointBuilder
from .model import (
    Baseline,
    BaselineError,
    CategoricalBaseline,
    FeatureBaseline,
    NumericBaseline,
)

__all__ = ["build_from_columns", "build_from_files"]

QUANTILE_NAMES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75,
                  "p95": 0.95, "p99": 0.99}
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "none"})
MAX_DISTINCT = 100_000  # categorical values counted exactly per feature
MAX_KNOWN_TAIL = 50_000  # values outside the vocabulary kept for the unseen check
NUMERIC_SHARE = 0.99  # a column is numeric when this share of its values parses as numbers


def build_from_files(paths: Iterable[str | os.PathLike[str]], config: Config | None = None,
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


def build_from_columns(columns: Mapping[str, Iterable[Any]],
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
        # The joint check's PCA (streamskew/baseline/joint.py): sampled in the first pass,
        # fitted in decide(), its error counted in the second pass.
        self.joint = JointBuilder(config.detect.joint_variance, config.build.bins,
                                  _finite_or_nan) if config.detect.joint else None

    def _wanted(self, name: str) -> bool:
        return name not in self.config.message.exclude and not self.config.feature(name).ignore

    def first_pass(self, chunk: dict[str, list[Any]]) -> None:
        size = len(next(iter(chunk.values()))) if chunk else 0
        if self.joint is not None:
            self.joint.sample(chunk, self.rows, self._wanted)
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
        if self.joint is not None and not self.joint.fit(
                self.kinds, self.edges,
                {name: self.bins[name] for name in self.edges if self.columns[name].exact}):
            self.joint = None

    @property
    def needs_second_pass(self) -> bool:
        return self.joint is not None or any(not self.columns[name].exact for name in self.edges)

    def second_pass(self, chunk: dict[str, list[Any]]) -> None:
        if self.joint is not None:
            self.joint.count(chunk)
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
        joint = self.joint.finish() if self.joint is not None else None
        if joint is not None:
            body[JOINT_FEATURE] = joint.to_json()
            body[JOINT_FEATURE]["error"].pop("kll")
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return Baseline(features=features, count=self.rows, id=digest[:16], created_at=created,
                        sources=sources, skipped=skipped or SkippedLines(), joint=joint)

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
