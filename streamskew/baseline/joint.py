"""The joint check's model: PCA on the numeric features, fitted when the baseline is built.

Per-feature checks cannot see a change in how features relate (a weather feature joined
from the wrong row: ``temp`` and ``humid`` keep their distributions, lose their relation).
The joint check turns every record into one more number, its *reconstruction error* under
a principal-component model of the training data, and watches the distribution of that number
like any numeric feature (its own baseline bins, panes, noise floor, hysteresis, timeline):
its pseudo-feature is named ``(joint)`` and its events carry ``check = "joint"``.

The model (:class:`JointBaseline`):

- Inputs: every numeric feature with at least two occupied baseline bins (up to
  :data:`MAX_INPUTS`, the most informative first when there are more).
- Standardization by *normal scores*: a value is replaced by ``Phi^-1`` of the mid-rank of its
  baseline bin, centred and scaled to mean 0 and variance 1 over the training data. This is
  the Gaussian-copula view of the data: heavy tails and outliers cannot dominate the fit, the
  score needs no extra search at serving time (the feature's kernel has just found the bin),
  and values outside the training range get the most extreme scores. A missing or invalid
  value is imputed with the training mean, 0 (the missing rate itself is watched by each
  feature's ``missing_rate`` check, as before).
- PCA: the covariance of the scores over a deterministic sample of :data:`SAMPLE_ROWS`
  training rows (chosen by a hash of the row number, so the same data gives the same model
  and baseline id); the leading components that explain ``[detect] joint_variance`` (0.9) of
  the variance are the model, and the record's error is its energy in the remaining
  directions, ``||W^T z||^2``. Broken relations put records where the training data had
  almost no variance, so the error grows even when every marginal is unchanged.
- The error's baseline distribution is counted exactly over every training row in the
  build's second pass (bins at the sample's error quantiles). The PCA's own fit is in-sample
  for the sampled rows only, a bias of order ``d k / N`` in the error, far below the noise
  floor of any window.

Cost at serving time: per record, ``d`` table lookups and ``d * m`` multiply-adds (``m``
residual directions), in one numba kernel after the features' own pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from statistics import NormalDist
from typing import Any

import numpy as np
from datasketches import kll_doubles_sketch

from ..sketch.joint import (
    ENERGY_SCALE,
    JointLayout,
    JointSummary,
    joint_errors,
    projection_table,
)
from ..sketch.quantiles import QuantileLayout
from .model import NumericBaseline

__all__ = ["JOINT_FEATURE", "JointBaseline", "JointBuilder"]

JOINT_FEATURE = "(joint)"
SAMPLE_ROWS = 10_000  # rows the PCA is fitted on (a 12x12 correlation to about +-0.01)
MAX_INPUTS = 64  # numeric features in the model; d * m work per record stays bounded
SAMPLE_VALUES = 2_000_000  # kept raw values bound the sample's memory for wide tables
# The error's quantiles are evidence only (the check reads the exact bins): 5% relative
# error over ~11 decades below the top is plenty, and keeps its pane summary a quarter of a
# feature's (errors near 0 would otherwise fill hundreds of 1% buckets).
ERROR_ACCURACY = 0.05
ERROR_BUCKETS = 256
_QUANTILES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95,
              "p99": 0.99}


@dataclass(frozen=True)
class JointBaseline(NumericBaseline):
    """The PCA model and the training distribution of its reconstruction error.

    As a :class:`NumericBaseline` it describes the error (bins, quantiles, moments); the
    model fields say how a record becomes an error."""

    inputs: tuple[str, ...] = ()
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [input, slot]
    basis: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [input, residual]
    components: int = 0  # principal components kept
    explained: float = 0.0  # share of the standardized variance they explain
    energy: np.ndarray = field(default_factory=lambda: np.zeros(0))  # training mean per residual
    sample: int = 0  # rows the PCA was fitted on

    @cached_property
    def layout(self) -> JointLayout:  # type: ignore[override]
        return JointLayout(self.edges, self.quantile_layout, self.basis.shape[1])

    @cached_property
    def table(self) -> np.ndarray:
        """Score times basis per input, bin slot and residual direction (the kernel's)."""
        return projection_table(self.scores, self.basis)

    def fold(self, summary: JointSummary, slots: np.ndarray, step: int = 1,
             moments: np.ndarray | None = None) -> None:
        """Add the records whose inputs' bin slots are ``slots[j, i]`` (-1: missing);
        ``step`` and ``moments`` as for :meth:`NumericSummary.update`."""
        errors = np.empty(slots.shape[1])
        if step > 0:
            joint_errors(slots, self.table, errors, summary.energy)
        else:
            energy = np.zeros_like(summary.energy)
            joint_errors(slots, self.table, errors, energy)
            summary.energy -= energy
        summary.update(errors, step=step, moments=moments)

    def contributions(self, summary: JointSummary, top: int = 3) -> list[dict[str, Any]]:
        """The inputs that carry the window's excess residual energy, largest first: each
        direction's excess over training spread over the inputs by its squared loadings."""
        if not summary.count:
            return []
        excess = np.maximum(summary.mean_energy() - self.energy, 0.0)
        share = (self.basis**2) @ excess
        total = float(share.sum())
        if total <= 0:
            return []
        order = np.argsort(-share, kind="stable")[:top]
        return [{"feature": self.inputs[j], "share": round(float(share[j] / total), 4)}
                for j in order if share[j] > 0]

    def to_json(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs), "scores": self.scores.tolist(),
                "basis": self.basis.tolist(), "components": self.components,
                "explained": self.explained, "energy": self.energy.tolist(),
                "sample": self.sample, "error": super().to_json()}

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> JointBaseline:
        error = NumericBaseline.from_json(name, raw["error"])
        values = {f: getattr(error, f) for f in error.__dataclass_fields__ if f != "kind"}
        return cls(**values, inputs=tuple(raw["inputs"]),
                   scores=np.asarray(raw["scores"], dtype=np.float64),
                   basis=np.asarray(raw["basis"], dtype=np.float64).reshape(
                       len(raw["inputs"]), -1),
                   components=int(raw["components"]), explained=float(raw["explained"]),
                   energy=np.asarray(raw["energy"], dtype=np.float64),
                   sample=int(raw["sample"]))

    def describe(self) -> str:
        return (f"{JOINT_FEATURE:<24} {'joint':<12} n={self.count:<10,} inputs={len(self.inputs)}"
                f" components={self.components} ({self.explained:.0%} of the variance) "
                f"residual directions={self.basis.shape[1]} sample={self.sample:,}")


def _binned_quantiles(edges: np.ndarray, counts: np.ndarray, low: float, high: float,
                      ranks: list[float]) -> list[float]:
    """Quantiles from exact bin counts, linear within the bin that holds each rank (KLL's
    would be closer but its compaction is randomized, and the baseline id must not be)."""
    bounds = np.concatenate([[min(low, edges[0])], edges, [max(high, edges[-1])]])
    cumulative = np.cumsum(counts)
    total = float(cumulative[-1])
    out = []
    for rank in ranks:
        target = rank * total
        slot = min(int(np.searchsorted(cumulative, target, side="left")), len(counts) - 1)
        before = float(cumulative[slot] - counts[slot])
        inside = (target - before) / counts[slot] if counts[slot] else 0.0
        lo, hi = float(bounds[slot]), float(bounds[slot + 1])
        lo, hi = max(lo, low), min(hi, high)
        out.append(lo + min(max(inside, 0.0), 1.0) * max(hi - lo, 0.0))
    return out


def slots_of(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin slot of every value as the numeric kernel finds it (-1 for NaN): the number of
    edges <= v, the top edge closing the last bin."""
    slots = np.searchsorted(edges, values, side="right")
    slots[(slots == len(edges)) & (values <= edges[-1])] = len(edges) - 1
    slots[np.isnan(values)] = -1
    return slots.astype(np.int32)


def _priorities(first: int, n: int) -> np.ndarray:
    """splitmix64 of the row numbers: a fixed pseudo-random order of the training rows."""
    x = np.arange(first, first + n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _normal_scores(counts: np.ndarray) -> np.ndarray | None:
    """Standardized normal score of every bin slot (mean 0, variance 1 under ``counts``);
    None when the counts leave no spread."""
    counts = np.asarray(counts, dtype=np.float64)
    total = float(counts.sum())
    if total <= 0 or np.count_nonzero(counts) < 2:
        return None
    before = np.cumsum(counts) - counts
    ranks = (before + counts / 2 + 0.5) / (total + 1)
    normal = NormalDist()
    score = np.array([normal.inv_cdf(float(u)) for u in ranks])
    p = counts / total
    mean = float(p @ score)
    std = math.sqrt(float(p @ (score - mean) ** 2))
    if not std > 0:
        return None
    return (score - mean) / std


class JointBuilder:
    """Fits the joint model during a baseline build (the hooks ``sample`` in the first
    pass, ``fit`` after it, ``count`` in the second pass, ``finish`` at the end)."""

    def __init__(self, variance: float, bins: int,
                 parse: Callable[[Any], float]) -> None:
        self.variance = variance
        self.bins = bins
        self.parse = parse  # the build's own number parsing (NaN: missing or invalid)
        self.limit = SAMPLE_ROWS
        self._priority = np.empty(0, dtype=np.uint64)
        self._rows: list[dict[str, Any]] = []
        self.model: dict[str, Any] | None = None  # set by fit

    # -- pass 1 ------------------------------------------------------------------------------

    def sample(self, chunk: Mapping[str, list[Any]], first_row: int,
               wanted: Callable[[str], bool] = lambda name: True) -> None:
        """Keep the rows of ``chunk`` (rows ``first_row``...) whose priority is among the
        :data:`SAMPLE_ROWS` smallest so far: a sample that does not depend on chunking."""
        names = [name for name in chunk if wanted(name)]
        if not names:
            return
        n = len(chunk[names[0]])
        self.limit = max(1_000, min(SAMPLE_ROWS, SAMPLE_VALUES // len(names)))
        priority = _priorities(first_row, n)
        rows = np.arange(n)
        if n > self.limit:
            rows = np.argpartition(priority, self.limit)[:self.limit]
        if len(self._priority) >= self.limit:
            rows = rows[priority[rows] < self._priority.max()]
        if not len(rows):
            return
        self._priority = np.concatenate([self._priority, priority[rows]])
        self._rows.extend({name: chunk[name][i] for name in names} for i in rows.tolist())
        if len(self._priority) > 2 * self.limit:
            self._prune()

    def _prune(self) -> None:
        order = np.argsort(self._priority, kind="stable")[:self.limit]
        self._priority = self._priority[order]
        self._rows = [self._rows[i] for i in order.tolist()]

    # -- between the passes ------------------------------------------------------------------

    def fit(self, kinds: Mapping[str, str], edges: Mapping[str, np.ndarray],
            exact_bins: Mapping[str, np.ndarray]) -> bool:
        """Fit the model on the sample: ``edges`` per numeric feature, and the exact bin
        counts of the features that have them already (the rest use the sample's counts).
        Returns whether a model was fitted (it needs two numeric inputs with spread)."""
        self._prune()
        rows = self._rows
        if not rows:
            return False
        candidates = [name for name, kind in kinds.items()
                      if kind == "numeric" and name in edges and len(edges[name]) > 2]
        inputs, tables, sampled = [], [], []
        for name in candidates:
            values = np.fromiter((self.parse(row.get(name)) for row in rows),
                                 dtype=np.float64, count=len(rows))
            slots = slots_of(edges[name], values)
            counts = exact_bins.get(name)
            if counts is None:
                counts = np.bincount(slots[slots >= 0], minlength=len(edges[name]) + 1)
            scores = _normal_scores(counts)
            if scores is None:
                continue
            inputs.append(name)
            tables.append(scores)
            sampled.append(slots)
        if len(inputs) > MAX_INPUTS:  # keep the inputs whose scores vary most in the sample
            spread = [float(np.mean(t[s[s >= 0]] ** 2)) if (s >= 0).any() else 0.0
                      for t, s in zip(tables, sampled, strict=True)]
            keep = sorted(np.argsort(-np.array(spread), kind="stable")[:MAX_INPUTS])
            inputs = [inputs[i] for i in keep]
            tables = [tables[i] for i in keep]
            sampled = [sampled[i] for i in keep]
        if len(inputs) < 2:
            return False
        width = max(len(t) for t in tables)
        scores = np.zeros((len(inputs), width))
        for j, table in enumerate(tables):
            scores[j, :len(table)] = table
        slots = np.ascontiguousarray(np.stack(sampled), dtype=np.int32)
        z = np.where(slots >= 0, np.take_along_axis(scores, np.maximum(slots, 0), axis=1), 0.0)
        covariance = z @ z.T / z.shape[1]
        eigenvalues, vectors = np.linalg.eigh(covariance)  # ascending
        order = np.argsort(-eigenvalues, kind="stable")
        eigenvalues, vectors = np.maximum(eigenvalues[order], 0.0), vectors[:, order]
        total = float(eigenvalues.sum())
        if total <= 0:
            return False
        explained = np.cumsum(eigenvalues) / total
        kept = int(np.searchsorted(explained, self.variance - 1e-12) + 1)
        kept = min(max(kept, 1), len(inputs) - 1)
        basis = vectors[:, kept:].copy()
        for c in range(basis.shape[1]):  # a fixed sign: the same data gives the same file
            if basis[np.argmax(np.abs(basis[:, c])), c] < 0:
                basis[:, c] = -basis[:, c]
        basis = np.ascontiguousarray(basis)
        errors = np.empty(slots.shape[1])
        table = projection_table(scores, basis)
        joint_errors(slots, table, errors, np.zeros(basis.shape[1], dtype=np.int64))
        errors = errors[~np.isnan(errors)]
        if not len(errors):
            return False
        cuts = np.quantile(errors, np.linspace(0.0, 1.0, self.bins + 1), method="lower")
        cuts[0] = 0.0  # errors are never negative: nothing below the first bin
        cut_edges = np.unique(cuts)
        if len(cut_edges) < 2:
            cut_edges = np.array([0.0, max(float(cut_edges[0]), 1e-12)])
            if cut_edges[1] <= 0:
                cut_edges[1] = np.nextafter(0.0, 1.0)
        self.model = {"inputs": tuple(inputs), "scores": scores, "basis": basis, "table": table,
                      "components": kept, "explained": float(explained[kept - 1]),
                      "sample": len(rows), "edges": cut_edges}
        self._input_edges = {name: edges[name] for name in inputs}
        self._counts = np.zeros(len(cut_edges) + 1, dtype=np.int64)
        self._energy = np.zeros(basis.shape[1], dtype=np.int64)
        self._kll = kll_doubles_sketch(400)
        self._sum = self._squares = 0.0
        self._low, self._high = math.inf, -math.inf
        self._count = self._missing = 0
        self._rows, self._priority = [], np.empty(0, dtype=np.uint64)  # free the sample
        return True

    @property
    def fitted(self) -> bool:
        return self.model is not None

    # -- pass 2 ------------------------------------------------------------------------------

    def count(self, chunk: Mapping[str, list[Any]]) -> None:
        """Count the reconstruction errors of the rows of ``chunk`` exactly."""
        model = self.model
        if model is None or not chunk:
            return
        n = len(next(iter(chunk.values())))
        if not n:
            return
        edges = self._input_edges
        slots = np.full((len(model["inputs"]), n), -1, dtype=np.int32)
        for j, name in enumerate(model["inputs"]):
            values = chunk.get(name)
            if values is not None:
                numbers = np.fromiter(map(self.parse, values), dtype=np.float64, count=n)
                slots[j] = slots_of(edges[name], numbers)
        errors = np.empty(n)
        joint_errors(slots, model["table"], errors, self._energy)
        finite = errors[~np.isnan(errors)]
        self._missing += n - len(finite)
        if not len(finite):
            return
        self._count += len(finite)
        cut_edges = model["edges"]
        bins = np.searchsorted(cut_edges, finite, side="right")
        bins[(bins == len(cut_edges)) & (finite <= cut_edges[-1])] = len(cut_edges) - 1
        self._counts += np.bincount(bins, minlength=len(cut_edges) + 1)
        self._kll.update(finite)
        self._sum += float(finite.sum())
        self._squares += float(finite @ finite)
        self._low = min(self._low, float(finite.min()))
        self._high = max(self._high, float(finite.max()))

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> JointBaseline | None:
        model = self.model
        if model is None or self._count == 0:
            return None
        count = self._count
        mean = self._sum / count
        variance = max(self._squares / count - mean * mean, 0.0)
        std = math.sqrt(variance * count / (count - 1)) if count > 1 else 0.0
        cut_edges = model["edges"]
        quantiles = _binned_quantiles(cut_edges, self._counts, self._low, self._high,
                                      list(_QUANTILES.values()))
        return JointBaseline(
            name=JOINT_FEATURE, count=count, missing=self._missing, invalid=0,
            edges=cut_edges, bin_counts=self._counts.copy(),
            quantiles={k: float(v) for k, v in zip(_QUANTILES, quantiles, strict=True)},
            mean=mean, std=std, minimum=self._low, maximum=self._high,
            kll=self._kll.serialize(),
            quantile_layout=QuantileLayout.around(float(np.max(np.abs(cut_edges))),
                                                  ERROR_ACCURACY, ERROR_BUCKETS),
            inputs=model["inputs"], scores=model["scores"], basis=model["basis"],
            components=model["components"], explained=model["explained"],
            energy=self._energy / ENERGY_SCALE / count, sample=model["sample"])
