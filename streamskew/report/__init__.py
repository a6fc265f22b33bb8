"""Self-contained HTML report of a streamskew run.

:func:`render_report` turns the report data (plain JSON-compatible dicts and lists: the run's
summary, the skew events and, per model and feature, the last window's distribution vs the
baseline and the score per window) into one HTML page. The page has no scripts and loads
nothing: the charts are inline SVG drawn by :mod:`streamskew.report.svg`, the styles are
inline, so the file opens offline and can be attached to a ticket or mailed.

Needs the ``report`` extra (jinja2): ``pip install 'streamskew[report]'``. All user data
(feature names, category values, free text) is HTML-escaped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from streamskew.report import svg
from streamskew.report.svg import fmt_int, fmt_num, fmt_pct, fmt_time

__all__ = ["render_report", "write_report"]

_INSTALL_HINT = "pip install 'streamskew[report]'"
_TEMPLATE = "report.html.j2"
_QUANTILES = ("p01", "p25", "p50", "p75", "p99")
_STATUS_ORDER = {"skew": 0}
_STATUS_LABEL = {"skew": "skew", "ok": "ok", "not_judged": "not judged"}
_SEVERITY_CLASS = {
    "critical": "red",
    "error": "red",
    "high": "red",
    "warning": "amber",
    "warn": "amber",
    "medium": "amber",
    "info": "blue",
    "low": "blue",
}

_env_cache: dict[str, Any] = {}


def _environment() -> Any:
    """The jinja2 environment (created once), or an ImportError telling how to get jinja2."""
    env = _env_cache.get("env")
    if env is not None:
        return env
    try:
        import jinja2
    except ImportError as exc:
        raise ImportError(
            f"the HTML report needs jinja2, which is not installed: {_INSTALL_HINT}"
        ) from exc
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("streamskew.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=fmt_num, pct=fmt_pct, int=fmt_int, time=fmt_time)
    _env_cache["env"] = env
    return env


# --------------------------------------------------------------------------- view model


def _get(m: Any, key: str, default: Any = None) -> Any:
    return m.get(key, default) if isinstance(m, Mapping) else default


def _seq(x: Any) -> list[Any]:
    if isinstance(x, Sequence) and not isinstance(x, str | bytes):
        return list(x)
    return []


def _text(x: Any, default: str = "") -> str:
    return default if x is None else str(x)


def _float(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _severity_class(sev: Any) -> str:
    return _SEVERITY_CLASS.get(_text(sev).lower(), "grey")


def _type_class(kind: Any) -> str:
    t = _text(kind).lower()
    if "resolv" in t or "recover" in t or t.endswith("_ok"):
        return "green"
    if "skew" in t or "drift" in t:
        return "violet"
    if "quality" in t or "missing" in t or "range" in t:
        return "amber"
    return "grey"


def _status_class(status: str) -> str:
    return {"skew": "red", "ok": "green", "not_judged": "grey"}.get(status, "grey")


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def _evidence_text(ev: Any, count: Any = None) -> str:
    """A compact one-line summary of an event's evidence (and the window's record count)."""
    parts = [f"n {fmt_int(count)}"] if count is not None else []
    if not isinstance(ev, Mapping):
        return " \u00b7 ".join(parts)
    srv, base = _get(ev, "serving"), _get(ev, "baseline")
    if isinstance(srv, Mapping) and isinstance(base, Mapping):
        for q in ("p50", "missing_rate"):
            if q in srv or q in base:
                parts.append(f"{q} {fmt_num(_get(base, q))} \u2192 {fmt_num(_get(srv, q))}")
    for key in ("psi", "ks", "wasserstein", "jsd"):
        if _get(ev, key) is not None:
            parts.append(f"{key} {fmt_num(ev[key])}")
    unseen = [u for u in _seq(_get(ev, "top_unseen")) if isinstance(u, Mapping)]
    if unseen:
        shown = ", ".join(
            f"{_short(_text(u.get('value')), 24)} ({fmt_int(u.get('count'))})" for u in unseen[:3]
        )
        parts.append(f"unseen: {shown}" + (" \u2026" if len(unseen) > 3 else ""))
    return " \u00b7 ".join(parts)


def _event_rows(events: Any) -> list[dict[str, Any]]:
    rows = []
    for i, ev in enumerate(_seq(events)):
        if not isinstance(ev, Mapping):
            continue
        end = _float(_get(_get(ev, "window"), "end"))
        value, thr = _float(ev.get("value")), _float(ev.get("threshold"))
        rows.append(
            {
                "order": (end is not None, end or 0.0, i),
                "time": fmt_time(end) if end is not None else "\u2014",
                "type": _text(ev.get("type"), "\u2014"),
                "type_class": _type_class(ev.get("type")),
                "model": _text(ev.get("model"), "\u2014"),
                "feature": _text(ev.get("feature"), "\u2014"),
                "check": _text(ev.get("check"), "\u2014"),
                "metric": _text(ev.get("metric"), "\u2014"),
                "value": fmt_num(ev.get("value")),
                "threshold": fmt_num(ev.get("threshold")),
                "over": value is not None and thr is not None and value > thr,
                "severity": _text(ev.get("severity"), "\u2014"),
                "severity_class": _severity_class(ev.get("severity")),
                "evidence": _evidence_text(ev.get("evidence"), _get(_get(ev, "window"), "count")),
                "event_id": _text(ev.get("event_id")),
            }
        )
    rows.sort(key=lambda r: r["order"])  # newest last; events without a time first
    return rows


def _quantile_rows(q: Any) -> list[dict[str, Any]]:
    if not isinstance(q, Mapping):
        return []
    rows = []
    for side in ("baseline", "serving"):
        vals = _get(q, side)
        if isinstance(vals, Mapping):
            rows.append({"name": side, "cells": [fmt_num(vals.get(k)) for k in _QUANTILES]})
    return rows


def _feature_view(f: Mapping[str, Any], anchor: str) -> dict[str, Any]:
    name = _text(f.get("name"), "(unnamed)")
    labels = f.get("labels")
    kind = _text(f.get("kind")) or ("categorical" if labels is not None else "numeric")
    status = _text(f.get("status"), "not_judged")
    threshold = f.get("threshold")
    metric = _text(f.get("metric"), "score")
    base, serv = f.get("baseline_probs"), f.get("serving_probs")
    if kind == "categorical" or (labels is not None and f.get("edges") is None):
        dist = svg.categorical_chart(_seq(labels), _seq(base), None if serv is None else _seq(serv))
    else:
        dist = svg.numeric_chart(
            _seq(f.get("edges")), _seq(base), None if serv is None else _seq(serv)
        )
    scores = [s for s in _seq(f.get("scores")) if isinstance(s, Mapping)]
    thr_f = _float(threshold)
    exceeded = 0
    for s in scores:
        v = _float(s.get("value"))
        t = _float(s.get("threshold"))
        t = thr_f if t is None else t
        exceeded += v is not None and t is not None and v > t
    judged = sum(_float(s.get("value")) is not None for s in scores)
    checks = []
    raw_checks = f.get("checks")
    if isinstance(raw_checks, Mapping):
        for k, v in raw_checks.items():
            fv = _float(v)
            over = k == "distribution" and fv is not None and thr_f is not None and fv > thr_f
            checks.append({"name": _text(k), "value": fmt_num(v), "over": over})
    return {
        "name": name,
        "anchor": anchor,
        "kind": kind,
        "status": status,
        "status_label": _STATUS_LABEL.get(status, status),
        "status_class": _status_class(status),
        "metric": metric,
        "threshold": fmt_num(threshold),
        "checks": checks,
        "dist_svg": dist,
        "score_svg": svg.score_chart(scores, threshold, metric=metric),
        "quantiles": _quantile_rows(f.get("quantiles")) if kind != "categorical" else [],
        "quantile_names": _QUANTILES,
        "no_serving": serv is None,
        "n_scores": len(scores),
        "n_judged": judged,
        "n_exceeded": exceeded,
    }


def _model_views(models: Any) -> list[dict[str, Any]]:
    out = []
    for mi, m in enumerate(_seq(models)):
        if not isinstance(m, Mapping):
            continue
        feats = [f for f in _seq(m.get("features")) if isinstance(f, Mapping)]
        views = [_feature_view(f, f"m{mi}-f{fi}") for fi, f in enumerate(feats)]
        views.sort(key=lambda v: _STATUS_ORDER.get(v["status"], 1))  # stable: skew first
        counts: dict[str, int] = {}
        for v in views:
            counts[v["status"]] = counts.get(v["status"], 0) + 1
        out.append(
            {
                "name": _text(m.get("model"), f"model {mi + 1}"),
                "anchor": f"m{mi}",
                "features": views,
                "counts": [
                    {"label": _STATUS_LABEL.get(s, s), "class": _status_class(s), "n": n}
                    for s, n in sorted(counts.items(), key=lambda kv: _STATUS_ORDER.get(kv[0], 1))
                ],
                "skewed": [v for v in views if v["status"] == "skew"],
            }
        )
    return out


def _summary_view(summary: Any, n_events: int) -> dict[str, Any]:
    bad = _get(summary, "bad_records")
    bad_items: list[dict[str, str]] = []
    bad_total: Any = None
    if isinstance(bad, Mapping):
        nums = [_float(v) for v in bad.values()]
        bad_total = sum(v for v in nums if v is not None)
        bad_items = [
            {"reason": _text(k), "count": fmt_int(v)}
            for k, v in sorted(bad.items(), key=lambda kv: -(_float(kv[1]) or 0.0))
        ]
    elif bad is not None:
        bad_total = bad
    events = _get(summary, "events")
    return {
        "records": fmt_int(_get(summary, "records")),
        "windows": fmt_int(_get(summary, "windows")),
        "events": fmt_int(events if events is not None else n_events),
        "late": fmt_int(_get(summary, "late_records")),
        "bad_total": fmt_int(bad_total),
        "bad_nonzero": bool(_float(bad_total)),
        "bad_items": bad_items,
    }


def _context(data: Mapping[str, Any]) -> dict[str, Any]:
    baseline = data.get("baseline")
    bid = _text(_get(baseline, "id"))
    events = _event_rows(data.get("events"))
    models = _model_views(data.get("models"))
    anchors = {(m["name"], f["name"]): f["anchor"] for m in models for f in m["features"]}
    for e in events:
        e["anchor"] = anchors.get((e["model"], e["feature"]), "")
    return {
        "title": _text(data.get("title"), "streamskew report") or "streamskew report",
        "generated_at": _text(data.get("generated_at")),
        "source": _text(data.get("source")),
        "baseline": {
            "id": bid,
            "id_short": _short(bid, 16),
            "count": fmt_int(_get(baseline, "count")),
            "path": _text(_get(baseline, "path")),
        },
        "summary": _summary_view(data.get("summary"), len(events)),
        "events": events,
        "models": models,
        "n_features": sum(len(m["features"]) for m in models),
        "n_skewed": sum(len(m["skewed"]) for m in models),
        "colors": {
            "baseline": svg.BASELINE_FILL,
            "baseline_stroke": svg.BASELINE_STROKE,
            "serving": svg.SERVING,
            "exceed": svg.EXCEED,
            "threshold": svg.THRESHOLD,
        },
    }


# --------------------------------------------------------------------------- API


def render_report(data: Mapping[str, Any]) -> str:
    """Render the report data as one self-contained HTML page and return its text.

    ``data`` holds plain JSON-compatible values: ``title``, ``generated_at``, ``source``,
    ``baseline`` (``id``, ``count``, ``path``), ``summary`` (``records``, ``bad_records`` by
    reason, ``late_records``, ``windows``, ``events``), ``events`` (skew events in the alert
    schema) and ``models`` (per model, per feature: status, checks, the last window's
    distribution vs the baseline, quantiles and the score per window). Every key is optional;
    missing values show as a dash. The page has a header with the run's counters, the table
    of events (newest last) and one card per feature (features with skew first) with a
    distribution chart, a score-over-time chart and, for numeric features, a quantile table.
    All user-supplied text is HTML-escaped.

    Raises ImportError (saying ``pip install 'streamskew[report]'``) when jinja2 is missing.

    >>> html = render_report({
    ...     "title": "demo",
    ...     "models": [{"model": "m", "features": [{
    ...         "name": "carat", "kind": "numeric", "status": "skew", "metric": "jsd",
    ...         "threshold": 0.1, "edges": [0.2, 0.5, 1.0],
    ...         "baseline_probs": [0.0, 0.5, 0.5, 0.0],
    ...         "serving_probs": [0.1, 0.3, 0.4, 0.2],
    ...         "scores": [{"window_end": 1764324000000, "value": 0.42, "threshold": 0.1}]}]}],
    ... })
    >>> html.startswith("<!DOCTYPE html>"), "carat" in html, html.count("<svg ")
    (True, True, 2)
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"report data must be a mapping, not {type(data).__name__}")
    env = _environment()
    from markupsafe import Markup  # a dependency of jinja2

    ctx = _context(data)
    for m in ctx["models"]:
        for f in m["features"]:
            f["dist_svg"] = Markup(f["dist_svg"])  # built and escaped by streamskew.report.svg
            f["score_svg"] = Markup(f["score_svg"])
    return env.get_template(_TEMPLATE).render(**ctx)


def write_report(data: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Render the report (see :func:`render_report`) and write it to ``path`` as UTF-8.

    The file is written next to its destination first and then moved into place, so a
    reader never sees a half-written report.
    """
    html = render_report(data)
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(html)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
