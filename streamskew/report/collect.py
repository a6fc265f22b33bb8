"""Collects what the HTML report shows while the engine runs (``Detector(on_window=...)``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..baseline import Baseline, NumericBaseline
from ..detector import DetectorStats, SkewEvent, WindowResult
from ..sketch.numeric import NumericSummary

__all__ = ["ReportCollector"]

MAX_SCORES = 2000  # per feature; a long replay keeps its most recent windows
QUANTILES = {"p01": 0.01, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p99": 0.99}


@dataclass
class _FeatureTrack:
    name: str
    kind: str
    metric: str = ""
    threshold: float = math.nan
    scores: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, float] = field(default_factory=dict)
    judged: bool = False
    serving_probs: list[float] | None = None
    serving_quantiles: dict[str, float | None] = field(default_factory=dict)


class ReportCollector:
    """Keeps per-feature score histories and the latest window's distribution."""

    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline
        self.models: dict[str, dict[str, _FeatureTrack]] = {}
        self.baselines: dict[str, Baseline] = {}

    def on_window(self, result: WindowResult) -> None:
        tracks = self.models.setdefault(result.model, {})
        self.baselines[result.model] = result.baseline
        for check in result.results:
            if check.kind == "unknown":
                continue
            track = tracks.get(check.feature)
            if track is None:
                track = tracks[check.feature] = _FeatureTrack(check.feature, check.kind)
            track.checks[check.metric if check.check == "schema" else check.check] = \
                _clean(check.value)
            if check.check != "distribution":
                continue
            track.metric, track.threshold, track.judged = check.metric, check.threshold, \
                check.judged
            track.scores.append({"window_end": result.end,
                                 "value": _clean(check.value) if check.judged else None,
                                 "threshold": _clean(check.threshold)})
            del track.scores[:-MAX_SCORES]
            summary = result.window.summaries.get(check.feature)
            if summary is None:
                continue
            counts = summary.bins if isinstance(summary, NumericSummary) else summary.counts
            total = counts.sum()
            track.serving_probs = (counts / total).tolist() if total else None
            if isinstance(summary, NumericSummary) and summary.count:
                values = summary.quantile(list(QUANTILES.values()))
                track.serving_quantiles = {k: _clean(v) for k, v in zip(QUANTILES, values,
                                                                        strict=True)}

    def data(self, stats: DetectorStats, events: list[SkewEvent], source: str,
             baseline_path: str | None) -> dict[str, Any]:
        """The report's input (see :func:`streamskew.report.render_report`)."""
        last: dict[tuple[str, str, str, str], str] = {}
        for e in events:  # a feature is skewed while any of its checks is still raised
            last[(e.model, e.feature, e.check, e.metric)] = e.type
        active = {(m, f) for (m, f, _, _), kind in last.items() if kind == "skew_detected"}
        models = []
        for model, tracks in sorted(self.models.items()):
            baseline = self.baselines.get(model, self.baseline)
            features = [self._feature(baseline, model, t, active) for t in tracks.values()]
            models.append({"model": model, "features": features})
        return {
            "title": "streamskew report",
            "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source": source,
            "baseline": {"id": self.baseline.id, "count": self.baseline.count,
                         "path": baseline_path},
            "summary": {"records": stats.records, "bad_records": dict(stats.bad),
                        "late_records": stats.late, "windows": stats.windows,
                        "events": len(events)},
            "events": [e.to_dict() for e in events],
            "models": models,
        }

    def _feature(self, baseline: Baseline, model: str, track: _FeatureTrack,
                 active: set[tuple[str, str]]) -> dict[str, Any]:
        feature = baseline.features[track.name]
        counts = feature.bin_counts
        baseline_probs = (counts / max(counts.sum(), 1)).tolist()
        status = "skew" if (model, track.name) in active else (
            "ok" if track.judged else "not_judged")
        entry: dict[str, Any] = {
            "name": track.name, "kind": track.kind, "metric": track.metric,
            "threshold": _clean(track.threshold), "status": status, "checks": track.checks,
            "baseline_probs": baseline_probs, "serving_probs": track.serving_probs,
            "scores": track.scores,
        }
        if isinstance(feature, NumericBaseline):
            entry["edges"] = feature.edges.tolist()
            entry["labels"] = None
            entry["quantiles"] = {
                "baseline": {k: feature.quantiles.get(k, _kll_quantile(feature, q))
                             for k, q in QUANTILES.items()},
                "serving": track.serving_quantiles,
            }
        else:
            entry["labels"] = feature.layout.labels
        return entry


def _kll_quantile(feature: NumericBaseline, rank: float) -> float | None:
    from datasketches import kll_doubles_sketch

    return _clean(kll_doubles_sketch.deserialize(feature.kll).get_quantile(rank))


def _clean(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
