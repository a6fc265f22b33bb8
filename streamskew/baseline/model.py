"""The baseline: what each feature looked like when the model was trained.

This is the part the engine needs: per-feature summaries, their bin layouts, and the file
format (save, load, describe). Building a baseline from training data (file readers,
progress, two passes) is :mod:`streamskew.baseline.build`, loaded only when a baseline is
built, so the engine never imports the file readers.

Per numeric feature: count, missing/invalid rates, about 100 equal-mass bins whose edges are
the training quantiles, the *exact* count in every bin, moments, and a few quantiles.
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
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..errors import StreamskewError
from ..sketch.categorical import CategoricalLayout
from ..sketch.numeric import NumericLayout
from ..sketch.quantiles import QuantileLayout

if TYPE_CHECKING:
    from ..config import Config
    from ..performance.reference import ReferencePerformance
    from ..readers import SkippedLines
    from .joint import JointBaseline

__all__ = ["SCHEMA", "Baseline", "BaselineError", "CategoricalBaseline", "FeatureBaseline",
           "NumericBaseline"]

SCHEMA = "streamskew.baseline/v1"


class BaselineError(StreamskewError, ValueError):
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

    @cached_property
    def bin_counts(self) -> np.ndarray:
        """Counts in summary order: vocabulary, other, unseen (0 in the baseline); read-only
        (every check of every window reads it)."""
        counts = np.concatenate([self.vocabulary_counts, [self.other_count, 0]]).astype(np.int64)
        counts.flags.writeable = False
        return counts

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
    left_out: Mapping[str, str] = field(default_factory=dict)
    """Columns of the training data left out as ids or timestamps (name -> why): serving
    records that carry them are not 'new features'."""
    skipped: SkippedLines | None = field(default=None, compare=False, repr=False)
    """Input lines that could not be used while building (None when loaded)."""
    joint: JointBaseline | None = None
    """The joint check's PCA model and error distribution (None: no joint check); see
    :mod:`streamskew.baseline.joint`. Not a message field, so not in :attr:`schema`."""
    performance: ReferencePerformance | None = field(default=None, compare=False, repr=False)
    """The model's validation performance (``baseline build --label``); None in baselines
    built without labels and in files older than it (the file's ``performance`` key)."""

    @property
    def schema(self) -> dict[str, str]:
        """Feature name -> kind (the fields messages carry)."""
        return {name: feature.kind for name, feature in self.features.items()}

    @cached_property
    def numeric_names(self) -> tuple[str, ...]:
        """The numeric features, in feature order."""
        return tuple(n for n, f in self.features.items() if not isinstance(f, CategoricalBaseline))

    @cached_property
    def categorical_names(self) -> tuple[str, ...]:
        """The categorical features, in feature order."""
        return tuple(n for n, f in self.features.items() if isinstance(f, CategoricalBaseline))

    @cached_property
    def monitored(self) -> Mapping[str, FeatureBaseline]:
        """What panes summarize and checks judge: the features, then the joint check's
        pseudo-feature ``(joint)`` when the baseline has a joint model."""
        if self.joint is None:
            return self.features
        return {**self.features, self.joint.name: self.joint}

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def build(cls, paths: Iterable[str | os.PathLike[str]], config: Config | None = None,
              progress: bool = False, label: str | None = None,
              prediction: str | None = None) -> Baseline:
        """Build from CSV/JSONL/Parquet files in two streaming passes (memory stays bounded).

        With ``label`` (a column of the validation data), also the model's reference
        performance: ``prediction`` names the column of the model's output (default: the
        last part of ``[message] prediction``)."""
        from .build import build_from_files

        return build_from_files(paths, config, progress, label=label, prediction=prediction)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Iterable[Any]],
                     config: Config | None = None, label: str | None = None,
                     prediction: str | None = None) -> Baseline:
        """Build from in-memory columns (name -> values), e.g. a dict of lists or arrays;
        ``label`` and ``prediction`` as in :meth:`build`."""
        from .build import build_from_columns

        return build_from_columns(columns, config, label=label, prediction=prediction)

    # -- files -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out = {"schema": SCHEMA, "id": self.id, "created_at": self.created_at,
               "sources": list(self.sources), "count": self.count,
               "left_out": dict(self.left_out),
               "features": {name: f.to_json() for name, f in self.features.items()}}
        if self.joint is not None:  # optional key: files without it still load
            out["joint"] = self.joint.to_json()
        if self.performance is not None:  # an addition to v1: older readers ignore it
            out["performance"] = self.performance.to_json()
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Baseline:
        """Read a baseline file written by :meth:`save` (``streamskew baseline build``)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BaselineError(f"{path}: cannot read the baseline: {exc.strerror}") from None
        return cls.from_bytes(data, str(path))

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "<bytes>") -> Baseline:
        """A baseline from the bytes of its file (``path`` names it in errors)."""
        try:
            raw = orjson.loads(data)
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
            joint = None
            if raw.get("joint"):
                from .joint import JOINT_FEATURE, JointBaseline

                joint = JointBaseline.from_json(JOINT_FEATURE, raw["joint"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"{path}: damaged baseline file ({exc!r}); rebuild it") from None
        performance = None
        if raw.get("performance") is not None:
            from ..performance.reference import ReferencePerformance

            try:
                performance = ReferencePerformance.from_json(raw["performance"])
            except (KeyError, TypeError, ValueError) as exc:
                raise BaselineError(f"{path}: damaged performance section ({exc!r}); rebuild "
                                    "the baseline with --label") from None
        return cls(features=features, count=raw["count"], id=raw["id"],
                   created_at=raw.get("created_at", ""), sources=tuple(raw.get("sources", ())),
                   left_out=dict(raw.get("left_out") or {}), joint=joint,
                   performance=performance)

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
        if self.joint is not None:
            lines.append(self.joint.describe())
        if self.performance is not None:
            lines += ["", self.performance.describe()]
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


