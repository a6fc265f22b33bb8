"""Per-pane performance summaries: constant memory, mergeable, exact, serializable.

A :class:`PerformancePane` holds, for one model and one pane of *request* event time:

- request counts: on-time requests, those without a usable prediction, those sampled for the
  label join;
- classifiers: the score histogram of every request (what CBPE needs, no labels), and the
  score histograms of the labelled positives and negatives (what the confusion matrix, ROC
  AUC and the window's sampling spread need), plus the summed log loss;
- regressors: the number of labelled requests and the summed errors ``e = prediction -
  label``: ``e``, ``|e|`` and ``e^2``.

Counts are integers and sums are :class:`ExactSum` (Shewchuk's exact float summation), so a
pane merged from several partitions, or built from batches cut anywhere, is *bitwise* the
same as one built in a single pass: windows, metrics and events do not depend on batching or
on the order of merging.

>>> layout = ScoreLayout(np.array([0.0, 0.5, 1.0]), threshold=0.5)
>>> pane = PerformancePane.empty(3, "classification", layout.bins)
>>> layout.bin_of(np.array([0.2, 0.5, 1.0, 1.5, np.nan])).tolist()
[0, 1, 1, -1, -1]
>>> other = PerformancePane.from_bytes(pane.to_bytes())
>>> other.index, other.task, len(other.scored)
(3, 'classification', 2)
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numba
import numpy as np
import orjson

__all__ = ["CLASSIFICATION", "REGRESSION", "ExactSum", "Moments", "PerformancePane",
           "ScoreLayout"]

CLASSIFICATION = "classification"
REGRESSION = "regression"
LOSS_EPS = float(np.finfo(np.float64).eps)  # scores are clipped to [eps, 1 - eps], as
# scikit-learn's log_loss does for float64 input


class ExactSum:
    """A float sum with no rounding error until it is read (Shewchuk's partials, as in
    ``math.fsum``), so sums merge and batch in any order to the same bits.

    >>> a, b = ExactSum(), ExactSum()
    >>> a.add([1e16, 1.0]); b.add([-1e16])
    >>> a.merge(b); a.value
    1.0
    """

    __slots__ = ("partials",)

    def __init__(self, partials: Iterable[float] = ()) -> None:
        self.partials: list[float] = list(partials)

    def add(self, values: Iterable[float]) -> None:
        array = np.asarray(values if isinstance(values, np.ndarray) else list(values),
                           np.float64).ravel()
        if not len(array):
            return
        # Room for one more partial per value: finite sums keep a few dozen at most, but
        # each NaN or infinity can add one.
        partials = np.empty(len(self.partials) + len(array) + 1, np.float64)
        partials[:len(self.partials)] = self.partials
        count = _add_partials(partials, len(self.partials), array)
        self.partials = partials[:count].tolist()

    def merge(self, other: ExactSum) -> None:
        self.add(other.partials)

    @property
    def value(self) -> float:
        return math.fsum(self.partials)

    def copy(self) -> ExactSum:
        return ExactSum(self.partials)


@numba.njit(cache=True, nogil=True)
def _add_partials(partials, count, values):  # pragma: no cover (numba)
    """Shewchuk's ``msum`` (the algorithm of ``math.fsum``) over ``values``, into the first
    ``count`` of ``partials``; returns the new count. The same IEEE operations in the same
    order as the Python loop, so the same partials to the bit."""
    for x in values:
        i = 0
        for j in range(count):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:  # (NaN counts as non-zero, as in Python)
                partials[i] = lo
                i += 1
            x = hi
        partials[i] = x
        count = i + 1
    return count


@dataclass
class Moments:
    """Count, mean and the 2nd and 3rd central moment sums of a variable, mergeable
    (Pebay's pairwise formulas): the spread and skew of a per-record term.

    >>> m = Moments.of(np.array([1.0, 2.0, 4.0]))
    >>> m.n, m.mean, round(m.variance, 6)
    (3, 2.3333333333333335, 1.555556)
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    m3: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            return cls()
        mean = float(values.mean())
        d = values - mean
        return cls(len(values), mean, float(np.dot(d, d)), float(np.sum(d * d * d)))

    def merge(self, other: Moments) -> None:
        if not other.n:
            return
        if not self.n:
            self.n, self.mean, self.m2, self.m3 = other.n, other.mean, other.m2, other.m3
            return
        n1, n2 = self.n, other.n
        n = n1 + n2
        delta = other.mean - self.mean
        m3 = (self.m3 + other.m3 + delta**3 * n1 * n2 * (n1 - n2) / n**2
              + 3 * delta * (n1 * other.m2 - n2 * self.m2) / n)
        self.m2 = self.m2 + other.m2 + delta**2 * n1 * n2 / n
        self.m3 = m3
        self.mean = self.mean + delta * n2 / n
        self.n = n

    @property
    def variance(self) -> float:
        """Population variance of one term."""
        return self.m2 / self.n if self.n else 0.0

    @property
    def skewness(self) -> float:
        var = self.variance
        return (self.m3 / self.n) / var**1.5 if self.n and var > 0 else 0.0

    def to_json(self) -> list[float]:
        return [self.n, self.mean, self.m2, self.m3]

    @classmethod
    def from_json(cls, raw: list[float]) -> Moments:
        return cls(int(raw[0]), float(raw[1]), float(raw[2]), float(raw[3]))


class ScoreLayout:
    """Score bins over [0, 1]: bin ``k`` is ``[edges[k], edges[k+1])``, the last one closed.
    The decision threshold is an edge, so the confusion matrix is exact from the bins."""

    def __init__(self, edges: np.ndarray, threshold: float) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        self.threshold = float(threshold)
        hits = np.flatnonzero(self.edges == self.threshold)
        if not len(hits):
            raise ValueError(f"threshold {threshold} is not a bin edge")
        self.threshold_bin = int(hits[0])  # bins >= this are predicted positive

    @property
    def bins(self) -> int:
        return len(self.edges) - 1

    @classmethod
    def default(cls, threshold: float = 0.5, bins: int = 512, logit: float = 8.0
                ) -> ScoreLayout:
        """Fixed edges, uniform in logit space on [-logit, logit], plus 0, 1 and the
        threshold: fine where scores are near 0 or 1 as well as in the middle, and the same
        for every data set (a one-pass reference build, no quantiles needed)."""
        inner = 1.0 / (1.0 + np.exp(-np.linspace(-logit, logit, bins - 1)))
        edges = np.unique(np.concatenate([[0.0, 1.0, threshold], inner]))
        return cls(edges, threshold)

    def bin_of(self, scores: np.ndarray) -> np.ndarray:
        """The bin of each score; -1 for scores outside [0, 1] or not finite."""
        scores = np.asarray(scores, dtype=np.float64)
        ok = np.isfinite(scores) & (scores >= 0.0) & (scores <= 1.0)
        bins = np.searchsorted(self.edges, np.where(ok, scores, 0.0), side="right") - 1
        bins = np.minimum(bins, self.bins - 1)
        return np.where(ok, bins, -1)


def log_loss_terms(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-record log loss (natural log), scores clipped like scikit-learn's."""
    p = np.clip(np.asarray(scores, dtype=np.float64), LOSS_EPS, 1 - LOSS_EPS)
    return -np.where(np.asarray(labels) > 0, np.log(p), np.log1p(-p))


@dataclass
class PerformancePane:
    """One model's performance summary over one pane (or, aggregated, over a window)."""

    index: int
    task: str
    requests: int = 0  # on-time requests
    invalid: int = 0  # ... without a usable prediction
    sampled: int = 0  # ... with one, sampled for the label join
    labelled: int = 0  # joined labels folded in
    scored: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    positives: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    negatives: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sums: list[ExactSum] = field(default_factory=list)  # classifier: [log loss];
    # regressor: [e, |e|, e^2]

    @classmethod
    def empty(cls, index: int, task: str, bins: int = 0) -> PerformancePane:
        width = bins if task == CLASSIFICATION else 0
        return cls(index, task, scored=np.zeros(width, np.int64),
                   positives=np.zeros(width, np.int64), negatives=np.zeros(width, np.int64),
                   sums=[ExactSum() for _ in range(1 if task == CLASSIFICATION else 3)])

    # -- folding -----------------------------------------------------------------------------

    def add_requests(self, bins_or_values: np.ndarray, valid: np.ndarray,
                     sampled: np.ndarray) -> None:
        """On-time requests: their score bins (classifiers), which have a usable prediction,
        which were sampled for the join."""
        self.requests += len(valid)
        self.invalid += int((~valid).sum())
        self.sampled += int((valid & sampled).sum())
        if self.task == CLASSIFICATION and valid.any():
            self.scored += np.bincount(bins_or_values[valid], minlength=len(self.scored))

    def add_labelled(self, predictions: np.ndarray, labels: np.ndarray,
                     bins: np.ndarray | None = None) -> None:
        """Joined (prediction, label) pairs: scores and 0/1 labels, or values."""
        if not len(labels):
            return
        self.labelled += len(labels)
        if self.task == CLASSIFICATION:
            assert bins is not None
            positive = labels > 0
            width = len(self.positives)
            self.positives += np.bincount(bins[positive], minlength=width)
            self.negatives += np.bincount(bins[~positive], minlength=width)
            self.sums[0].add(log_loss_terms(predictions, labels))
        else:
            errors = np.asarray(predictions, np.float64) - np.asarray(labels, np.float64)
            for total, values in zip(self.sums, (errors, np.abs(errors), errors * errors),
                                     strict=True):
                total.add(values)

    def merge(self, other: PerformancePane) -> None:
        if other.task != self.task or len(other.scored) != len(self.scored):
            raise ValueError("cannot merge performance panes of different references")
        self.requests += other.requests
        self.invalid += other.invalid
        self.sampled += other.sampled
        self.labelled += other.labelled
        self.scored += other.scored
        self.positives += other.positives
        self.negatives += other.negatives
        for mine, theirs in zip(self.sums, other.sums, strict=True):
            mine.merge(theirs)

    def copy(self) -> PerformancePane:
        return PerformancePane(self.index, self.task, self.requests, self.invalid,
                               self.sampled, self.labelled, self.scored.copy(),
                               self.positives.copy(), self.negatives.copy(),
                               [s.copy() for s in self.sums])

    @classmethod
    def total(cls, panes: Iterable[PerformancePane], index: int, task: str,
              bins: int) -> PerformancePane:
        """The sum of ``panes`` (a window's aggregate)."""
        aggregate = cls.empty(index, task, bins)
        for pane in panes:
            aggregate.merge(pane)
        return aggregate

    # -- bytes -------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """zlib-compressed: a header, then the three histograms as little-endian int64."""
        header = orjson.dumps({"index": self.index, "task": self.task,
                               "counts": [self.requests, self.invalid, self.sampled,
                                          self.labelled],
                               "bins": len(self.scored),
                               "sums": [s.partials for s in self.sums]})
        arrays = b"".join(a.astype("<i8").tobytes()
                          for a in (self.scored, self.positives, self.negatives))
        return zlib.compress(struct.pack("<I", len(header)) + header + arrays, 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> PerformancePane:
        try:
            body = zlib.decompress(data)
            (size,) = struct.unpack_from("<I", body)
            raw = orjson.loads(body[4:4 + size])
        except (zlib.error, struct.error, orjson.JSONDecodeError) as exc:
            raise ValueError(f"not a serialized performance pane ({exc})") from None
        bins = raw["bins"]
        arrays = np.frombuffer(body[4 + size:], dtype="<i8").astype(np.int64)
        scored, positives, negatives = (arrays[i * bins:(i + 1) * bins].copy()
                                        for i in range(3))
        requests, invalid, sampled, labelled = raw["counts"]
        return cls(raw["index"], raw["task"], requests, invalid, sampled, labelled, scored,
                   positives, negatives, [ExactSum(p) for p in raw["sums"]])
