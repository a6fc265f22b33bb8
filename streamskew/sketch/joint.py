"""The joint check's per-record kernel and its pane summary.

Every record becomes a vector ``z`` of *normal scores*: each numeric input's value is replaced
by the standardized normal quantile of its baseline bin (the bin the feature's own kernel has
just found, so no second search), a missing or invalid value by 0, the training mean. The
record's reconstruction error under the baseline's PCA is the energy left outside the kept
principal components, ``||W^T z||^2`` with ``W`` an orthonormal basis of the residual
directions: ``d * m`` multiply-adds per record for ``d`` inputs and ``m`` residual directions.
A record with no input at all has no error (NaN: missing).

:class:`JointSummary` is a :class:`~streamskew.sketch.numeric.NumericSummary` of those errors
(bins over the baseline's error quantiles, moments, quantile sketch) plus, per residual
direction, the summed energy, quantized per record to 1/1024 so it adds and subtracts exactly
(and batching cannot change it): the evidence that names which inputs broke their relation.

Two inputs that always agree (the residual direction is their difference), four records:
two that agree, one that does not, one with both inputs missing:

>>> import numpy as np
>>> slots = np.array([[1, 2, 1, -1], [1, 2, 2, -1]], dtype=np.int32)  # [input, record]
>>> scores = np.array([[0.0, -1.0, 1.0], [0.0, -1.0, 1.0]])  # score per bin slot
>>> basis = np.array([[1.0], [-1.0]]) / np.sqrt(2)
>>> errors, energy = np.empty(4), np.zeros(1, dtype=np.int64)
>>> joint_errors(slots, projection_table(scores, basis), errors, energy)
>>> errors.round(6).tolist()[:3], bool(np.isnan(errors[3])), energy.tolist()
([0.0, 0.0, 2.0], True, [2048])
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field

import numba
import numpy as np

from .numeric import NumericLayout, NumericSummary

__all__ = ["ENERGY_SCALE", "JointLayout", "JointSummary", "joint_errors", "projection_table",
           "slots_buffer"]

ENERGY_SCALE = 1024  # residual energy is counted in units of 1/1024 (exact integer sums)


BLOCK = 512  # records per block: their partial projections stay in L1


@numba.njit(cache=True, nogil=True)
def _joint_errors(slots, table, errors, energy, scale):  # pragma: no cover (numba)
    # table[j, c, s] = score of slot s of input j times basis[j, c]; its last slot is zero,
    # where a missing value (-1) points: the training mean adds nothing, and no branch.
    d = slots.shape[0]
    n = slots.shape[1]
    m = table.shape[1]
    zero = table.shape[2] - 1
    projection = np.zeros((m, BLOCK))
    present = np.zeros(BLOCK, dtype=np.int64)
    index = np.zeros(BLOCK, dtype=np.int64)
    for start in range(0, n, BLOCK):
        size = min(BLOCK, n - start)
        projection[:, :size] = 0.0
        present[:size] = 0
        for j in range(d):  # input by input, direction by direction: flat gather-add loops
            row = slots[j]
            for b in range(size):
                s = row[start + b]
                present[b] += s >= 0
                index[b] = s if s >= 0 else zero
            for c in range(m):
                column = table[j, c]
                part = projection[c]
                for b in range(size):
                    part[b] += column[index[b]]
        for b in range(size):
            if present[b] == 0:
                errors[start + b] = np.nan
                continue
            total = 0.0
            for c in range(m):
                part2 = projection[c, b] * projection[c, b]
                total += part2
                energy[c] += np.int64(part2 * scale + 0.5)  # per record: batching-proof
            errors[start + b] = total


def projection_table(scores: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``table[j, c, s] = scores[j, s] * basis[j, c]``, plus a zero slot for missing values:
    a record's projection is then one gather and add per input and direction."""
    table = basis[:, :, None] * scores[:, None, :]
    zero = np.zeros((scores.shape[0], basis.shape[1], 1))
    return np.ascontiguousarray(np.concatenate([table, zero], axis=2))


def joint_errors(slots: np.ndarray, table: np.ndarray, errors: np.ndarray,
                 energy: np.ndarray) -> None:
    """Reconstruction errors of records given as bin slots (``slots[j, i]``: input ``j`` of
    record ``i``, -1 when missing) into ``errors``; residual energy added to ``energy``.
    ``table`` is :func:`projection_table` of the model."""
    _joint_errors(slots, table, errors, energy, float(ENERGY_SCALE))


_scratch = threading.local()


def slots_buffer(inputs: int, n: int) -> np.ndarray:
    """A reusable ``(inputs, n)`` int32 array for the slots of one fold (per thread: fresh
    4 MB arrays per pane would cost page faults; every row is overwritten before use)."""
    buffer = getattr(_scratch, "slots", None)
    if buffer is None or buffer.shape[0] != inputs or buffer.shape[1] < n:
        buffer = np.empty((inputs, max(n, 1024)), dtype=np.int32)
        _scratch.slots = buffer
    return buffer[:, :n]


@dataclass(frozen=True)
class JointLayout(NumericLayout):
    """A numeric layout over the reconstruction error, with ``residuals`` energy counters."""

    residuals: int = field(default=1)

    def empty(self) -> JointSummary:
        base = NumericLayout.empty(self)
        return JointSummary(self, base.bins, base.quantiles, base.counts, base.moments,
                            np.zeros(self.residuals, dtype=np.int64))

    def read(self, data: bytes) -> JointSummary:
        return JointSummary.from_bytes(data, self)


@dataclass
class JointSummary(NumericSummary):
    """Errors of one pane or window (a numeric summary) and their residual energy."""

    energy: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def merge(self, other: NumericSummary) -> None:
        super().merge(other)
        self.energy += other.energy  # type: ignore[attr-defined]

    def subtract(self, other: NumericSummary) -> None:
        super().subtract(other)
        self.energy -= other.energy  # type: ignore[attr-defined]

    def copy(self) -> JointSummary:
        return JointSummary(self.layout, self.bins.copy(), self.quantiles.copy(),
                            self.counts.copy(), self.moments.copy(), self.energy.copy())

    def mean_energy(self) -> np.ndarray:
        """Mean residual energy per direction over the records with an error."""
        return self.energy / ENERGY_SCALE / max(self.count, 1)

    _JOINT_HEADER = struct.Struct("<4sHI")  # magic, version, residual directions

    def to_bytes(self) -> bytes:
        head = self._JOINT_HEADER.pack(b"SSJS", 1, len(self.energy))
        return head + self.energy.astype("<i8").tobytes() + super().to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, layout: NumericLayout) -> JointSummary:
        magic, version, residuals = cls._JOINT_HEADER.unpack_from(data)
        if magic != b"SSJS" or version != 1:
            raise ValueError("not a streamskew joint summary (or another version)")
        if not isinstance(layout, JointLayout) or residuals != layout.residuals:
            raise ValueError("summary bytes do not match this baseline's joint model")
        offset = cls._JOINT_HEADER.size
        energy = np.frombuffer(data, "<i8", residuals, offset).astype(np.int64)
        base = NumericSummary.from_bytes(data[offset + 8 * residuals:], layout)
        return cls(layout, base.bins, base.quantiles, base.counts, base.moments, energy)
