"""``streamskew demo``: the engine on real sample data with injected skews, no Kafka needed.

The data is ggplot2's *diamonds* table (53,940 real diamonds, MIT; see data/README.md). The
demo trains a tiny price model (least squares on log carat and the grades), builds a baseline
from the training split (60%) and its predictions, then streams 70 minutes of prediction
requests drawn without replacement from the held-out 40%, one record every 200 ms of event
time, through the engine (the last 15 minutes are clean again, so every incident resolves).
Four incidents are injected, each a classic cause of training-serving skew:

====================  ==========  =============================================================
event time (minutes)  feature     what happens
====================  ==========  =============================================================
15-30                 ``carat``   a client sends grams instead of carats (x0.2): unit change,
                                  which also moves the model's predictions
25-40                 ``cut``     a new grade "Excellent" appears in 30% of requests
35-50                 ``depth``   an upstream join fails: 40% of requests lack it
45-55                 ``table``   sent as a string ("57.0"): a type change
====================  ==========  =============================================================

A few malformed messages are mixed in; they go to the dead-letter file, the stream goes on.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
import numpy as np
import orjson

from .baseline import Baseline
from .config import Config
from .detector import SkewEvent
from .display import event_line

__all__ = ["DEMO_CONFIG", "load_diamonds", "run_demo"]

START_MS = 1_764_324_000_000  # 2025-11-28T10:00:00Z, a fixed clock so runs repeat exactly
STEP_MS = 200
MINUTES = 70
MODEL = "diamond-price"
GRADES = {"cut": ["Fair", "Good", "Very Good", "Premium", "Ideal"],
          "color": ["J", "I", "H", "G", "F", "E", "D"],
          "clarity": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"]}
NUMERIC = ("carat", "depth", "table", "x", "y", "z")

DEMO_CONFIG = {
    "message": {"features": "features", "timestamp": "timestamp", "model": "model",
                "prediction": "prediction"},
    "window": {"size": "10m", "pane": "1m", "allowed_lateness": "10s"},
    "detect": {"min_count": 500},
}


def load_diamonds() -> dict[str, list[Any]]:
    """The bundled sample as columns (numbers as floats, grades as strings)."""
    data = resources.files("streamskew").joinpath("data/diamonds.csv.gz").read_bytes()
    reader = csv.DictReader(io.StringIO(gzip.decompress(data).decode("utf-8")))
    rows = list(reader)
    columns: dict[str, list[Any]] = {name: [row[name] for row in rows]
                                     for name in reader.fieldnames or []}
    for name in (*NUMERIC, "price"):
        columns[name] = [float(v) for v in columns[name]]
    return columns


class PriceModel:
    """Least-squares log-price model on log carat, depth, table and one-hot grades."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        target = np.log(np.asarray(columns["price"], dtype=float))
        self.coef, *_ = np.linalg.lstsq(self._design(columns), target, rcond=None)

    @staticmethod
    def _design(columns: dict[str, list[Any]]) -> np.ndarray:
        def number(name: str, fill: float) -> np.ndarray:  # serving-side imputation
            return np.array([v if isinstance(v, float) else fill for v in columns[name]])

        parts = [np.ones(len(columns["carat"])), np.log(np.maximum(number("carat", 0.7), 0.01)),
                 number("depth", 61.8), number("table", 57.0)]
        for name, levels in GRADES.items():
            values = np.asarray(columns[name], dtype=object)
            parts.extend((values == level).astype(float) for level in levels[1:])
        return np.column_stack(parts)

    def predict(self, columns: dict[str, list[Any]]) -> np.ndarray:
        """Predicted prices (USD, rounded to cents) for columns of features."""
        return np.round(np.exp(self._design(columns) @ self.coef), 2)


def _requests(columns: dict[str, list[Any]], pool: np.ndarray,
              rng: np.random.Generator) -> list[dict[str, Any]]:
    """An hour of requests' features with the incidents of the module docs."""
    requests = []
    total = MINUTES * 60_000 // STEP_MS
    # Without replacement: a random part of the held-out rows is a fresh sample of the same
    # population, which is what "no skew" means (resampling one small pool would not be).
    for i, row in enumerate(rng.permutation(pool)[:total]):
        minute = i * STEP_MS / 60_000
        features: dict[str, Any] = {name: columns[name][row] for name in (*NUMERIC, *GRADES)}
        if 15 <= minute < 30:
            features["carat"] = round(features["carat"] * 0.2, 4)
        if 25 <= minute < 40 and rng.random() < 0.3:
            features["cut"] = "Excellent"
        if 35 <= minute < 50 and rng.random() < 0.4:
            features["depth"] = None
        if 45 <= minute < 55:
            features["table"] = f"{features['table']:.1f}"
        requests.append(features)
    return requests


def _messages(requests: list[dict[str, Any]], model: PriceModel) -> list[bytes]:
    """Prediction-request messages, with a few broken ones mixed in."""
    names = list(requests[0])
    predictions = model.predict({n: [r[n] for r in requests] for n in names})
    messages: list[bytes] = []
    for i, (features, prediction) in enumerate(zip(requests, predictions, strict=True)):
        timestamp = START_MS + i * STEP_MS
        present = {k: v for k, v in features.items() if v is not None}  # absent, not null
        messages.append(orjson.dumps({
            "request_id": f"r-{i}", "timestamp": timestamp, "model": MODEL,
            "model_version": "1", "features": present, "prediction": float(prediction)}))
        if i % 4000 == 1999:  # now and then, a broken producer
            messages.append(b'{"request_id": "r-broken", "timestamp": %d, "features": {"ca'
                            % timestamp)
        if i % 6000 == 2999:
            messages.append(b'["not", "an", "object"]')
    return messages


def _describe(event: SkewEvent) -> str:
    minute = (event.window_end - START_MS) / 60_000 if event.window_end is not None else 0
    return event_line(event, f"t+{minute:4.0f}m", color=True)


def run_demo(output_dir: Path, report: bool = True) -> list[SkewEvent]:
    """Run the whole demo, writing its files into ``output_dir``; returns the events."""
    from .files import detect_file
    from .report.collect import ReportCollector

    output_dir.mkdir(parents=True, exist_ok=True)
    echo = click.echo
    echo(click.style("streamskew demo", bold=True) + " - diamonds price model, 70 minutes of "
         "requests with 4 injected incidents\n")
    columns = load_diamonds()
    rng = np.random.default_rng(20261128)
    order = rng.permutation(len(columns["price"]))
    cut = len(order) * 6 // 10  # 32,364 rows to train on, 21,576 to serve from
    train, serve = order[:cut], order[cut:]
    training = {name: [columns[name][i] for i in train] for name in columns}
    model = PriceModel(training)
    training["prediction"] = model.predict(training).tolist()
    del training["price"]  # the label is not a model input
    config = Config.from_dict(DEMO_CONFIG, source="<demo>")
    train_csv = output_dir / "train.csv"
    _write_csv(train_csv, training)
    echo(f"1. baseline from {len(train):,} training rows ({train_csv})")
    baseline = Baseline.build([train_csv], config, progress=sys.stderr.isatty())
    baseline_path = output_dir / "baseline.json"
    baseline.save(baseline_path)
    echo(f"   {len(baseline.features)} features, baseline id {baseline.id} -> {baseline_path}")

    requests_path = output_dir / "requests.jsonl"
    messages = _messages(_requests(columns, serve, rng), model)
    requests_path.write_bytes(b"\n".join(messages) + b"\n")
    echo(f"2. {len(messages):,} serving requests over {MINUTES} minutes -> {requests_path}")
    echo(f"3. detecting (window {config.window.size}, pane {config.window.pane}); events "
         "as they fire:")

    collector = ReportCollector(baseline) if report else None
    events_path = output_dir / "events.jsonl"
    with open(events_path, "wb") as events_out, \
            open(output_dir / "dead-letters.jsonl", "wb") as dead:
        def on_event(event: SkewEvent) -> None:
            echo(_describe(event))
            events_out.write(event.to_json() + b"\n")

        run = detect_file(config, baseline, requests_path, on_event=on_event,
                          dead_letters=dead,
                          on_window=collector.on_window if collector else None,
                          on_bad_record=collector.on_bad_record if collector else None)
    stats = run.detector.stats
    echo(f"\n4. {stats.summary()}\n   events -> {events_path}\n   bad records -> "
         f"{output_dir / 'dead-letters.jsonl'}")
    if collector is not None:
        try:
            from .report import write_report
        except ImportError as exc:
            echo(f"   (no report: {exc})")
        else:
            path = output_dir / "report.html"
            write_report(collector.data(stats, run.events, "demo: diamonds",
                                        str(baseline_path)), path)
            echo(f"5. report -> {path}")
    return run.events


def _write_csv(path: Path, columns: dict[str, list[Any]]) -> None:
    names = list(columns)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows(zip(*(columns[n] for n in names), strict=True))
