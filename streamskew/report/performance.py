"""The report's performance section: realized vs estimated vs reference performance over time.

:class:`PerformanceTrack` collects the judged performance windows of a run
(``Detector(on_performance_window=...)``), in bounded memory: per model and metric at most
:data:`~streamskew.report.collect.MAX_BUCKETS` points, neighbouring windows merged in pairs
past that, each point the *worst* value of its windows (the lowest accuracy, the highest
error), so no drop is averaged away. :func:`performance_chart` draws one lane per metric:
the realized value (solid), CBPE's estimate (dashed), the validation reference (grey) and
the alarm lines (reference less the effective threshold: dotted red for the realized value,
dotted purple for the estimate), windows over them as red dots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .svg import (
    AXIS,
    EXCEED,
    GRID,
    SERVING,
    TEXT,
    THRESHOLD,
    _c,
    _esc,
    _svg_open,
    _t,
    fmt_num,
    fmt_time,
    nice_range,
    time_ticks,
)

__all__ = ["PerformanceTrack", "performance_chart"]

MAX_POINTS = 240
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc"})
ESTIMATE_COLOUR = "#7c3aed"
REFERENCE_COLOUR = "#94a3b8"


@dataclass
class _Line:
    """Points ``[end, value, alarm, over]`` of one metric, realized or estimated."""

    higher_better: bool
    points: list[list[Any]] = field(default_factory=list)
    per_point: int = 1
    pending: list[Any] | None = None
    pending_count: int = 0

    def add(self, end: int | None, value: float, alarm: float | None, over: bool) -> None:
        point = [end, value, alarm, over]
        if self.pending is None:
            self.pending, self.pending_count = point, 1
        else:
            self.pending = _worse(self.pending, point, self.higher_better)
            self.pending_count += 1
        if self.pending_count >= self.per_point:
            self.points.append(self.pending)
            self.pending, self.pending_count = None, 0
        if len(self.points) > MAX_POINTS:
            self.points = [_worse(a, b, self.higher_better) if b is not None else a
                           for a, b in zip(self.points[::2], [*self.points[1::2], None],
                                           strict=False)]
            self.per_point *= 2

    def all(self) -> list[list[Any]]:
        return self.points + ([self.pending] if self.pending is not None else [])


def _worse(a: list[Any], b: list[Any], higher_better: bool) -> list[Any]:
    """The worse of two points, at the later time; over if either was."""
    if a[1] is None:
        worst = b
    elif b[1] is None:
        worst = a
    else:
        worst = (min if higher_better else max)((a, b), key=lambda p: p[1])
    return [b[0], worst[1], worst[2], bool(a[3] or b[3])]


@dataclass
class _ModelPerformance:
    task: str
    reference: dict[str, float]
    reference_estimated: dict[str, float]
    realized: dict[str, _Line] = field(default_factory=dict)
    estimated: dict[str, _Line] = field(default_factory=dict)
    windows: int = 0
    first: int | None = None
    last: int | None = None
    labelled: int = 0
    requests: int = 0


class PerformanceTrack:
    """Collects performance windows for the report (module docs)."""

    def __init__(self) -> None:
        self.models: dict[str, _ModelPerformance] = {}

    def on_window(self, window: Any, reference: Any) -> None:
        model = self.models.get(window.model)
        if model is None:
            model = self.models[window.model] = _ModelPerformance(
                reference.task, dict(reference.metrics), dict(reference.estimated))
        model.windows += 1
        if window.end is not None:
            model.first = window.end if model.first is None else min(model.first, window.end)
            model.last = window.end if model.last is None else max(model.last, window.end)
        lines = model.estimated if window.check == "estimated_performance" else model.realized
        if window.check != "estimated_performance":
            model.labelled += window.labelled
        for result in window.results:
            line = lines.get(result.metric)
            if line is None:
                line = lines[result.metric] = _Line(result.metric in HIGHER_IS_BETTER)
            value = result.value if math.isfinite(result.value) else None
            line.add(window.end, value if result.judged else None,
                     _alarm(result) if result.judged else None,
                     bool(result.judged and result.degradation > result.threshold))

    def data(self, events: Sequence[Any], labels: Any = None) -> list[dict[str, Any]]:
        """The report's ``performance`` entry: per model, its metrics' lines and events."""
        out = []
        for name, model in sorted(self.models.items()):
            metrics = []
            for metric in dict.fromkeys([*model.realized, *model.estimated]):
                mine = [e for e in events if e.model == name and e.metric == metric
                        and e.check in ("performance", "estimated_performance")]
                metrics.append({
                    "metric": metric, "reference": model.reference.get(metric),
                    "reference_estimated": model.reference_estimated.get(metric),
                    "realized": model.realized[metric].all() if metric in model.realized
                    else [],
                    "estimated": model.estimated[metric].all() if metric in model.estimated
                    else [],
                    "events": [[e.window_end, e.type, e.check] for e in mine],
                })
            out.append({"model": name, "task": model.task, "start": model.first,
                        "end": model.last, "windows": model.windows, "metrics": metrics,
                        "labels": labels})
        return out


def _alarm(result: Any) -> float | None:
    """The metric's value at which the window would be over its threshold."""
    ref, threshold = result.reference, result.threshold
    if not (math.isfinite(ref) and math.isfinite(threshold)):
        return None
    if result.metric in HIGHER_IS_BETTER:
        return ref - threshold
    if result.metric == "bias":
        return None  # two-sided, relative to the RMSE: no single line to draw
    return ref * (1 + threshold)


def performance_chart(model: Mapping[str, Any], width: int = 1120,
                      lane_height: int = 70) -> str:
    """One lane per metric: realized, estimated, reference and alarm line over time."""
    metrics = [m for m in model.get("metrics") or () if isinstance(m, Mapping)]
    start, end = model.get("start"), model.get("end")
    if not metrics or start is None or end is None:
        return (f'{_svg_open(width, 60, "performance")}'
                f'{_t(width / 2, 34, "no judged performance windows", "middle")}</svg>')
    t_lo, t_hi = float(start), float(end)
    if t_hi <= t_lo:
        t_lo, t_hi = t_lo - 30_000, t_hi + 30_000
    ml, mr, mt, mb, gap = 120, 14, 22, 30, 10
    pw = width - ml - mr
    height = mt + len(metrics) * (lane_height + gap) - gap + mb

    def x_of(t: float) -> float:
        return ml + pw * (min(max(t, t_lo), t_hi) - t_lo) / (t_hi - t_lo)

    out = [_svg_open(width, height, f"performance of model {model.get('model')}")]
    out.append(_legend(ml, 13))
    for i, metric in enumerate(metrics):
        out.append(_metric_lane(metric, mt + i * (lane_height + gap), lane_height, ml, pw,
                                x_of))
    y_bottom = mt + len(metrics) * (lane_height + gap) - gap
    ticks = time_ticks(t_lo, t_hi, 8)
    out.append(f'<path d="M{_c(ml)} {_c(y_bottom)}H{_c(ml + pw)}" stroke="{AXIS}"/>')
    out.append(f'<g fill="{TEXT}">' + "".join(
        _t(x_of(t), y_bottom + 14, fmt_time(t, with_date=False, seconds=False), "middle")
        for t in ticks) + _t(ml + pw / 2, y_bottom + 27,
                              f"window end, {fmt_time(t_lo)[:10]} (UTC), by request time",
                              "middle") + "</g>")
    out.append("</svg>")
    return "".join(out)


def _legend(x: float, y: float) -> str:
    items = [("realized", SERVING, ""), ("estimated (CBPE)", ESTIMATE_COLOUR, "5 3"),
             ("reference", REFERENCE_COLOUR, ""), ("alarm line", EXCEED, "2 2")]
    parts = []
    for label, colour, dash in items:
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<path d="M{_c(x)} {_c(y - 4)}h18" stroke="{colour}" stroke-width="2"'
                     f'{dashed}/>{_t(x + 22, y, label)}')
        x += 40 + 7 * len(label)
    return f'<g fill="{TEXT}">{"".join(parts)}</g>'


def _metric_lane(metric: Mapping[str, Any], top: float, h: float, ml: float, pw: float,
                 x_of: Any) -> str:
    realized = [p for p in metric.get("realized") or () if p and p[0] is not None]
    estimated = [p for p in metric.get("estimated") or () if p and p[0] is not None]
    values = [p[1] for p in realized + estimated if p[1] is not None]
    values += [p[2] for p in realized + estimated if p[2] is not None]
    reference = metric.get("reference")
    if reference is not None and math.isfinite(reference):
        values.append(reference)
    lo, hi, ticks = nice_range(min(values, default=0.0), max(values, default=1.0), 3)

    def y_of(v: float) -> float:
        return top + h - h * (v - lo) / (hi - lo) if hi > lo else top + h / 2

    out = [f'<g class="lane" data-metric="{_esc(metric.get("metric"))}">',
           f'<rect x="{_c(ml)}" y="{_c(top)}" width="{_c(pw)}" height="{_c(h)}" '
           f'fill="none" stroke="{GRID}"/>',
           _t(ml - 8, top + h / 2 + 4, str(metric.get("metric")), "end",
              f' fill="{TEXT}" font-weight="600"')]
    for t, shift in ((ticks[0], -2), (ticks[-1], 9)):  # both inside the lane
        out.append(_t(ml - 8, y_of(t) + shift, fmt_num(t), "end",
                      f' fill="{TEXT}" font-size="9"'))
    if reference is not None and math.isfinite(reference):
        y = y_of(reference)
        out.append(f'<path d="M{_c(ml)} {_c(y)}H{_c(ml + pw)}" stroke="{REFERENCE_COLOUR}"/>')
    out.append(_polyline([(p[0], p[2]) for p in realized], x_of, y_of, EXCEED, "2 2", 1))
    out.append(_polyline([(p[0], p[2]) for p in estimated], x_of, y_of, ESTIMATE_COLOUR,
                         "1 3", 1))
    out.append(_polyline([(p[0], p[1]) for p in estimated], x_of, y_of, ESTIMATE_COLOUR,
                         "5 3", 1.5))
    out.append(_polyline([(p[0], p[1]) for p in realized], x_of, y_of, SERVING, "", 2))
    for p in realized + estimated:
        if p[3] and p[1] is not None:
            colour = SERVING if p in realized else ESTIMATE_COLOUR
            out.append(f'<circle cx="{_c(x_of(p[0]))}" cy="{_c(y_of(p[1]))}" r="3" '
                       f'fill="{EXCEED}" stroke="{colour}"><title>{_esc(fmt_time(p[0]))}: '
                       f'{_esc(fmt_num(p[1]))}</title></circle>')
    for end, kind, check in metric.get("events") or ():
        if end is None:
            continue
        colour = EXCEED if kind == "skew_detected" else THRESHOLD
        label = f"{kind} ({check}) at {fmt_time(end)}"
        out.append(f'<path d="M{_c(x_of(end))} {_c(top)}v{_c(h)}" stroke="{colour}" '
                   f'stroke-opacity="0.5"><title>{_esc(label)}</title></path>')
    out.append("</g>")
    return "".join(out)


def _polyline(points: Sequence[tuple[Any, Any]], x_of: Any, y_of: Any, colour: str,
              dash: str, width: float) -> str:
    """Segments through the known points (a gap where a window was not judged)."""
    parts, run = [], False
    for t, v in points:
        if v is None or not math.isfinite(v):
            run = False
            continue
        parts.append(f"{'L' if run else 'M'}{_c(x_of(t))} {_c(y_of(v))}")
        run = True
    if not parts:
        return ""
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<path d="{"".join(parts)}" fill="none" stroke="{colour}" '
            f'stroke-width="{width}"{dashed}/>')
