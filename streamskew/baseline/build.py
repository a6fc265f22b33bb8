"""Training data -> a :class:`~streamskew.baseline.model.Baseline`.

Two streaming passes over CSV/JSONL/Parquet chunks (memory stays bounded): the first infers
each column's kind and counts distinct values exactly (up to ``MAX_DISTINCT``; past that a
datasketches KLL sketch gives the bin edges), the second, needed only for KLL columns,
counts the bins exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from datasketches import kll_doubles_sketch

from ..config import Config
from ..inputs import FileProblem, Input, resolve_inputs
from ..readers import SkippedLines, read_chunks
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
# A column whose values are nearly all distinct is an id or a timestamp, not a feature:
ID_DISTINCT_SHARE = 0.9  # categorical: at least this share of its values distinct ...
ID_MIN_VALUES = 200  # ... among at least this many values (fewer cannot tell)
NUMERIC_ID_MIN_VALUES = 1000  # whole numbers, all distinct, and an id-like name or dense run
_ID_NAME = re.compile(r"(?i)^(rownames|index|id|uuid|guid|key|ts|time|timestamp|date|datetime)$"
                      r"|(_id|id|_uuid|_key|_ts|_time|timestamp|_date|_at)$|^(time|date)")
#: Spellings of booleans in training data (pandas writes True/False) -> their category.
BOOLEAN_TEXT = {"true": "true", "True": "true", "TRUE": "true",
                "false": "false", "False": "false", "FALSE": "false"}

log = logging.getLogger(__name__)


def build_from_files(paths: Iterable[str | os.PathLike[str]], config: Config | None = None,
                     progress: bool = False, label: str | None = None,
                     prediction: str | None = None) -> Baseline:
    """Build from CSV/JSONL/Parquet inputs in two streaming passes (memory stays bounded).

    ``paths`` are files or ``-`` for standard input, gzipped or not (see
    :mod:`streamskew.inputs`). With ``label``, the validation performance of the model whose
    output is column ``prediction`` is stored too (:mod:`streamskew.performance.reference`).
    """
    config = config or Config()
    try:
        sources = resolve_inputs(str(p) for p in paths)
    except FileProblem as exc:
        raise BaselineError(str(exc)) from None
    skipped = SkippedLines()
    builder = _Builder(config)
    reference = _Reference(config, label, prediction) if label else None
    try:
        for chunk in _chunks(sources, config, skipped, progress, "baseline", first=True):
            if reference is not None:
                reference.add(chunk, builder.rows)
            builder.first_pass(chunk)
        builder.decide()
        if builder.needs_second_pass:
            for chunk in _chunks(sources, config, SkippedLines(), progress,
                                 "baseline: pass 2/2", first=False):
                builder.second_pass(chunk)
    finally:
        for source in sources:
            source.cleanup()
    built = builder.finish(tuple(s.label for s in sources), skipped)
    return built if reference is None else replace(built, performance=reference.finish())


def build_from_columns(columns: Mapping[str, Iterable[Any]],
                       config: Config | None = None, label: str | None = None,
                       prediction: str | None = None) -> Baseline:
    """Build from in-memory columns (name -> values), e.g. a dict of lists or arrays."""
    config = config or Config()
    chunk = {name: values.tolist() if isinstance(values, np.ndarray) else list(values)
             for name, values in columns.items()}
    lengths = {len(v) for v in chunk.values()}
    if len(lengths) > 1:
        raise BaselineError("all columns must have the same length")
    reference = _Reference(config, label, prediction) if label else None
    if reference is not None:
        reference.add(chunk, 0)
    builder = _Builder(config)
    builder.first_pass(chunk)
    builder.decide()
    builder.second_pass(chunk)
    built = builder.finish(("<columns>",))
    return built if reference is None else replace(built, performance=reference.finish())


class _Reference:
    """The label and prediction columns -> the reference performance. The label column is
    taken out of the chunk (it is not a feature); the prediction stays (prediction drift)."""

    def __init__(self, config: Config, label: str, prediction: str | None) -> None:
        from ..performance.reference import ReferenceBuilder

        labels = config.labels
        if prediction is None:
            path = (labels.prediction if labels is not None and labels.prediction
                    else config.message.prediction)
            if not path:
                raise BaselineError("no prediction column: pass --prediction COL (the "
                                    "model's output in the validation data)")
            prediction = path.split(".")[-1]
        if prediction == label:
            raise BaselineError(f"--label and --prediction name the same column {label!r}")
        self.label = label
        self.prediction = prediction
        self.seen_label = self.seen_prediction = False
        self.builder = ReferenceBuilder(
            label, prediction, task=labels.task if labels else None,
            positive=labels.positive if labels else None,
            threshold=labels.threshold if labels else 0.5)

    def add(self, chunk: dict[str, list[Any]], rows_before: int) -> None:
        size = len(next(iter(chunk.values()))) if chunk else 0
        labels = chunk.pop(self.label, None)
        predictions = chunk.get(self.prediction)
        self.seen_label |= labels is not None
        self.seen_prediction |= predictions is not None
        self.builder.add(labels if labels is not None else [None] * size,
                         predictions if predictions is not None else [None] * size)

    def finish(self) -> Any:
        from ..performance.reference import ReferenceError

        for seen, what, option in ((self.seen_label, self.label, "--label"),
                                   (self.seen_prediction, self.prediction, "--prediction")):
            if not seen:
                raise BaselineError(f"{option} {what!r}: the input has no such column")
        try:
            return self.builder.finish()
        except ReferenceError as exc:
            raise BaselineError(str(exc)) from None


def _chunks(sources: list[Input], config: Config, skipped: SkippedLines, progress: bool,
            label: str, first: bool) -> Iterable[dict[str, list[Any]]]:
    from tqdm import tqdm

    sizes = [source.size() for source in sources]
    total = None if None in sizes else sum(sizes)  # type: ignore[arg-type]
    with tqdm(total=total, unit="B", unit_scale=True, desc=label,
              disable=not progress, leave=False) as bar:
        done = 0
        for source in sources:
            def advance(position: int, start: int = done) -> None:
                bar.update(max(start + position - bar.n, 0))
            try:
                # Notes only once: the second pass reads the same inputs again.
                yield from read_chunks(source, config.message, config.build.chunk_rows,
                                       skipped, advance, note=log.warning if first else None,
                                       keep_copy=first)
            except FileProblem as exc:
                raise BaselineError(str(exc)) from None
            done = bar.n


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
        self.booleans = 0  # values that are booleans in any spelling (True, "true", "FALSE")
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
        self.booleans += sum(count for key, count in chunk.items()
                             if type(key) is bool or (type(key) is str and key in BOOLEAN_TEXT))
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

    @property
    def present(self) -> int:
        return self.numbers + self.non_finite + self.non_numbers

    @property
    def is_boolean(self) -> bool:
        """Every value is a boolean: True/False, true/false, TRUE/FALSE or a real bool."""
        return self.present > 0 and self.booleans == self.present

    @property
    def distinct(self) -> int:
        return len(self.values) + self.overflow  # a lower bound past MAX_DISTINCT

    def looks_like_id(self, name: str, kind: str) -> str | None:
        """"an id" or "a timestamp" when nearly every value is distinct; else None."""
        present = self.present
        if kind == "categorical":
            if present < ID_MIN_VALUES or self.distinct < ID_DISTINCT_SHARE * present:
                return None
        else:
            if present < NUMERIC_ID_MIN_VALUES or not self.exact or self.distinct < present:
                return None  # a continuous feature is all distinct too: needs more evidence
            values, _ = self.number_counts()
            if not np.all(values == np.round(values)):
                return None
            dense = values[-1] - values[0] + 1 <= 1.5 * len(values)  # row numbers
            if not dense and not _ID_NAME.search(name):
                return None
        return "a timestamp" if _timestamp_like(list(self.values)[:20]) else "an id"

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
        boolean = self.is_boolean
        for key, count in self.values.items():
            category = BOOLEAN_TEXT[key] if boolean and type(key) is str \
                else category_string(key)
            if category is not None:
                categories[category.strip() if isinstance(key, str) else category] += count
        return categories


def _timestamp_like(sample: list[Any]) -> bool:
    """Most of these values are ISO-8601 times or epoch seconds/milliseconds (2001-2286)."""
    hits = 0
    for value in sample:
        number = _as_number(value)
        if number is not None:
            hits += 1e9 <= number < 1e10 or 1e12 <= number < 1e13
            continue
        try:
            datetime.fromisoformat(str(value))
        except ValueError:
            continue
        hits += 1
    return hits > len(sample) / 2


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
        self.left_out: dict[str, str] = {}  # columns left out as ids or timestamps

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
        self._warn_unknown_overrides()
        self._leave_out_ids()
        ranks = np.linspace(0.0, 1.0, self.config.build.bins + 1)
        for name, column in self.columns.items():
            kind = self.config.feature(name).kind or column.inferred_kind()
            if column.is_boolean and kind == "categorical":
                log.info("column %r holds booleans: one categorical feature with the "
                         "categories true and false", name)
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

    def _leave_out_ids(self) -> None:
        """Columns that look like ids or timestamps are not features: say so, leave them out."""
        for name, column in list(self.columns.items()):
            if self.config.feature(name).kind is not None:
                continue  # the user asked for it
            kind = column.inferred_kind()
            what = column.looks_like_id(name, kind)
            if what is None:
                continue
            del self.columns[name]
            self.left_out[name] = what
            log.warning("column %r looks like %s (%s distinct values in %s rows): left out of "
                        "the baseline; to monitor it anyway set [features.%s] kind = \"%s\" "
                        "in the config", name, what, f"{column.distinct:,}",
                        f"{column.present:,}", name, kind)
        if not self.columns:
            raise BaselineError("no feature columns left: every column looks like an id or a "
                                "timestamp; set [features.<name>] kind for those to monitor")

    def _warn_unknown_overrides(self) -> None:
        """``[features.x]`` for a column the data does not have does nothing: say so."""
        unknown = sorted(name for name, feature in self.config.features.items()
                         if name not in self.columns and not feature.ignore)
        if unknown:
            sections = ", ".join(f"[features.{name}]" for name in unknown)
            log.warning("%s: %s in the config name%s no column of the training data, so %s "
                        "nothing (its columns: %s)", self.config.source, sections,
                        "" if len(unknown) > 1 else "s", "they do" if len(unknown) > 1
                        else "it does", _names(self.columns))

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
                        sources=sources, left_out=dict(self.left_out),
                        skipped=skipped or SkippedLines(), joint=joint)

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


def _names(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


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
