"""Self-contained HTML report of a streamskew run.

:func:`render_report` turns the report data (plain JSON-compatible dicts and lists, as
:meth:`streamskew.report.collect.ReportCollector.data` builds them) into one HTML page:

- an **overview** table, one row per model/feature/check over the whole run: its state now,
  its peak value against its threshold, how many windows went over, when it was first raised
  and last resolved; active and recently resolved rows first; sortable and filterable;
- the **events**, each linking to its incident;
- per feature a **timeline** of every check against its threshold, incidents (raise to
  resolve) shaded, and per **incident** the serving distribution at its worst window beside
  the baseline, the quantiles of both, and the bad records of its span by reason.

The page loads nothing: charts are inline SVG (:mod:`streamskew.report.svg`), styles and one
small script are inline, so the file opens offline and can be attached to a ticket. Without
JavaScript everything is still shown; the script only adds sorting, filtering and clickable
event rows. All user data (feature names, category values, free text) is HTML-escaped.

Size bound: each check's timeline holds at most ``MAX_BUCKETS`` (240) points however long the
run (see :mod:`streamskew.report.collect`), at most :data:`MAX_EVENT_ROWS` events and
:data:`MAX_INCIDENT_CHARTS` incident charts are drawn (the newest; the overview still counts
everything). A day of 1-minute panes for 50 features stays a few MB.

Needs the ``report`` extra (jinja2): ``pip install 'streamskew[report]'``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from streamskew.report import svg
from streamskew.report.svg import fmt_int, fmt_num, fmt_pct, fmt_time

__all__ = ["MAX_EVENT_ROWS", "MAX_INCIDENT_CHARTS", "render_report", "write_report"]

MAX_EVENT_ROWS = 2000  # the newest events of a run are listed; the rest are counted
MAX_INCIDENT_CHARTS = 200  # incident views with charts (the newest); older ones text only

_INSTALL_HINT = "pip install 'streamskew[report]'"
_TEMPLATE = "report.html.j2"
_QUANTILE_KEYS = ("p01", "p05", "p25", "p50", "p75", "p95", "p99")
_STATE_RANK = {"skew": 0, "resolved": 1, "ok": 2, "not_judged": 3}
_STATE_LABEL = {"skew": "skew now", "resolved": "resolved", "ok": "ok",
                "not_judged": "not judged"}
_STATE_CLASS = {"skew": "red", "resolved": "amber", "ok": "green", "not_judged": "grey"}
_CHECK_LABEL = {
    "distribution": "distribution",
    "missing_rate": "missing rate",
    "out_of_range": "out of range",
    "unseen_categories": "unseen categories",
    "type_change": "type change",
    "feature_absent": "feature absent",
    "new_feature": "new feature",
}
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


# --------------------------------------------------------------------------- small helpers


def _get(m: Any, key: str, default: Any = None) -> Any:
    return m.get(key, default) if isinstance(m, Mapping) else default


def _seq(x: Any) -> list[Any]:
    if isinstance(x, Sequence) and not isinstance(x, str | bytes):
        return list(x)
    return []


def _maps(x: Any) -> list[Mapping[str, Any]]:
    return [v for v in _seq(x) if isinstance(v, Mapping)]


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


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def _check_name(check: str, metric: str) -> str:
    return metric if check == "schema" else check


def _check_label(check: str, metric: str) -> str:
    name = _check_name(check, metric)
    return _CHECK_LABEL.get(name, name.replace("_", " "))


def _ratio(value: float | None, threshold: float | None) -> float | None:
    if value is None or threshold is None:
        return None
    if threshold > 0:
        return value / threshold
    return math.inf if value > threshold else None


def _time_or_dash(ms: Any) -> str:
    return fmt_time(ms) if _float(ms) is not None else "\u2014"


def _duration(start: Any, end: Any) -> str:
    a, b = _float(start), _float(end)
    if a is None or b is None or b < a:
        return ""
    minutes = round((b - a) / 60_000)
    if minutes < 1:
        return f"{round((b - a) / 1000)} s"
    if minutes < 120:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest:02d} min" if hours < 48 else f"{hours / 24:.1f} days"


def _value(x: Any, integer: bool) -> str:
    v = _float(x)
    if integer and v is not None:
        return fmt_int(round(v))
    return fmt_num(x)


def _counts(m: Any) -> list[dict[str, str]]:
    if not isinstance(m, Mapping):
        return []
    items = [(k, _float(v)) for k, v in m.items()]
    return [{"reason": _text(k), "count": fmt_int(v)}
            for k, v in sorted(items, key=lambda kv: -(kv[1] or 0.0)) if v]


def _total(m: Any) -> float:
    if isinstance(m, Mapping):
        return sum(v for v in (_float(x) for x in m.values()) if v is not None)
    return _float(m) or 0.0


# --------------------------------------------------------------------------- evidence


def _evidence_chips(ev: Any, count: Any, integer: bool) -> list[str]:
    """An event's evidence as short chips (they wrap, so the column never overflows)."""
    chips = [f"n {fmt_int(count)}"] if count is not None else []
    if not isinstance(ev, Mapping):
        return chips
    srv, base = _get(ev, "serving"), _get(ev, "baseline")
    if isinstance(srv, Mapping) and isinstance(base, Mapping):
        for q in ("p01", "p50", "p99"):
            if q in srv or q in base:
                chips.append(f"{q} {_value(_get(base, q), integer)} \u2192 "
                             f"{_value(_get(srv, q), integer)}")
        if "missing_rate" in srv or "missing_rate" in base:
            chips.append(f"missing {fmt_pct(_get(base, 'missing_rate'))} \u2192 "
                         f"{fmt_pct(_get(srv, 'missing_rate'))}")
        top = _get(srv, "top")
        if isinstance(top, Mapping) and top:
            shown = ", ".join(f"{_short(_text(k), 20)} {fmt_pct(v)}"
                              for k, v in list(top.items())[:3])
            chips.append(f"top: {shown}")
    for key in ("jsd", "linf", "psi", "ks", "wasserstein"):
        if _get(ev, key) is not None:
            chips.append(f"{key} {fmt_num(ev[key])}")
    unseen = _maps(_get(ev, "top_unseen"))
    if unseen:
        shown = ", ".join(f"{_short(_text(u.get('value')), 24)} ({fmt_int(u.get('count'))})"
                          for u in unseen[:3])
        chips.append(f"unseen: {shown}" + (" \u2026" if len(unseen) > 3 else ""))
    if _get(ev, "records_with_feature") is not None:
        chips.append(f"records with it {fmt_int(ev['records_with_feature'])}")
    return chips


# --------------------------------------------------------------------------- view model


class _Page:
    """Builds the template's context from the report data."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.incident_of_event: dict[str, str] = {}
        self.integer: dict[tuple[str, str], bool] = {}
        self.feature_anchor: dict[tuple[str, str], str] = {}
        self.overview: list[dict[str, Any]] = []
        self.incidents: list[dict[str, Any]] = []

    def context(self) -> dict[str, Any]:
        data = self.data
        models = [self._model(m, mi) for mi, m in enumerate(_maps(data.get("models")))]
        self._limit_incident_charts()
        events, hidden_events = self._events(data.get("events"))
        baseline = data.get("baseline")
        bid = _text(_get(baseline, "id"))
        self.overview.sort(key=lambda r: r["order"])
        active = sum(1 for i in self.incidents if i["state"] == "skew")
        return {
            "title": _text(data.get("title"), "streamskew report") or "streamskew report",
            "generated_at": _text(data.get("generated_at")),
            "source": _text(data.get("source")),
            "baseline": {"id": bid, "id_short": _short(bid, 16),
                         "count": fmt_int(_get(baseline, "count")),
                         "path": _text(_get(baseline, "path"))},
            "summary": self._summary(data.get("summary"), len(_seq(data.get("events")))),
            "overview": self.overview,
            "events": events,
            "hidden_events": hidden_events,
            "models": models,
            "n_features": sum(len(m["features"]) for m in models),
            "n_incidents": len(self.incidents),
            "n_active": active,
            "max_event_rows": MAX_EVENT_ROWS,
            "max_incident_charts": MAX_INCIDENT_CHARTS,
            "performance": self._performance(data.get("performance")),
        }

    @staticmethod
    def _performance(entries: Any) -> list[dict[str, Any]]:
        """Per model: realized vs estimated vs reference performance (its own section)."""
        from .performance import performance_chart

        out = []
        for entry in _maps(entries):
            rows = []
            for metric in _maps(entry.get("metrics")):
                realized = [p for p in _seq(metric.get("realized")) if p and p[1] is not None]
                estimated = [p for p in _seq(metric.get("estimated")) if p and p[1] is not None]
                rows.append({
                    "metric": _text(metric.get("metric")),
                    "reference": fmt_num(metric.get("reference")),
                    "last_realized": fmt_num(realized[-1][1]) if realized else "\u2014",
                    "last_estimated": fmt_num(estimated[-1][1]) if estimated else "\u2014",
                    "windows_over": sum(1 for p in realized + estimated if p[3]),
                    "raised": sum(1 for e in _seq(metric.get("events"))
                                  if len(e) > 1 and e[1] == "skew_detected"),
                })
            out.append({"model": _text(entry.get("model")), "task": _text(entry.get("task")),
                        "windows": fmt_int(entry.get("windows")), "rows": rows,
                        "labels": _text(entry.get("labels")),
                        "chart": performance_chart(entry)})
        return out

    # -- header -------------------------------------------------------------------------

    @staticmethod
    def _summary(summary: Any, n_events: int) -> dict[str, Any]:
        bad, field = _get(summary, "bad_records"), _get(summary, "field_errors")
        events = _get(summary, "events")
        return {
            "records": fmt_int(_get(summary, "records")),
            "windows": fmt_int(_get(summary, "windows")),
            "events": fmt_int(events if events is not None else n_events),
            "late": fmt_int(_get(summary, "late_records")),
            "bad_total": fmt_int(_total(bad)) if bad is not None else "\u2014",
            "bad_nonzero": _total(bad) > 0,
            "bad_items": _counts(bad),
            "field_total": fmt_int(_total(field)) if field is not None else "\u2014",
            "field_nonzero": _total(field) > 0,
            "field_items": _counts(field),
            "without_time": fmt_int(_get(summary, "bad_without_time"))
            if _float(_get(summary, "bad_without_time")) else "",
        }

    # -- models, features, checks -------------------------------------------------------

    def _model(self, m: Mapping[str, Any], mi: int) -> dict[str, Any]:
        name = _text(m.get("model"), f"model {mi + 1}")
        start, end = _float(m.get("start")), _float(m.get("end"))
        features = [self._feature(name, mi, fi, f, start, end)
                    for fi, f in enumerate(_maps(m.get("features")))]
        rank = {f["name"]: min([c["rank"] for c in f["checks"]], default=(9,))
                for f in features}
        features.sort(key=lambda f: rank[f["name"]])  # stable: features with incidents first
        return {"name": name, "anchor": f"m{mi}", "features": features,
                "start": _time_or_dash(start), "end": _time_or_dash(end),
                "windows": fmt_int(m.get("windows")),
                "per_point": int(_float(m.get("windows_per_point")) or 1)}

    def _feature(self, model: str, mi: int, fi: int, f: Mapping[str, Any],
                 start: float | None, end: float | None) -> dict[str, Any]:
        name = _text(f.get("name"), "(unnamed)")
        anchor = f"m{mi}-f{fi}"
        kind = _text(f.get("kind"), "numeric")
        integer = bool(f.get("integer"))
        self.integer[(model, name)] = integer
        self.feature_anchor[(model, name)] = anchor
        baseline = f.get("baseline") if isinstance(f.get("baseline"), Mapping) else {}
        incidents = [self._incident(model, name, kind, integer, baseline, i, anchor)
                     for i in _maps(f.get("incidents"))]
        checks = [self._check(model, name, kind, anchor, c) for c in _maps(f.get("checks"))]
        lanes = []
        for c, raw in zip(checks, _maps(f.get("checks")), strict=True):
            spans = [(_get(i, "raised"), _get(i, "resolved"), _text(_get(i, "id")))
                     for i in _maps(raw.get("incidents"))]
            note = f"{c['metric']} \u00b7 peak {c['peak']}"
            lanes.append({"label": c["label"], "note": note, "points": raw.get("points"),
                          "spans": spans, "check": c["check"], "metric": c["metric"]})
        last = f.get("last_window") if isinstance(f.get("last_window"), Mapping) else None
        return {
            "name": name, "anchor": anchor, "kind": kind, "integer": integer,
            "checks": checks, "incidents": incidents,
            "timeline_svg": svg.timeline_chart(lanes, start, end,
                                               label=f"checks of {name} per window"),
            "state": min((c["state"] for c in checks), key=lambda s: _STATE_RANK.get(s, 9),
                         default="not_judged"),
            "last_svg": self._distribution(kind, integer, baseline, last,
                                           f"last window of {name} vs baseline")
            if last else "",
            "last_when": self._when(last) if last else "",
        }

    def _check(self, model: str, feature: str, kind: str, anchor: str,
               c: Mapping[str, Any]) -> dict[str, Any]:
        check, metric = _text(c.get("check")), _text(c.get("metric"))
        state = _text(c.get("state"), "not_judged")
        last, peak = _get(c, "last") or {}, _get(c, "peak") or {}
        pv, pt = _float(_get(peak, "value")), _float(_get(peak, "threshold"))
        ratio = _ratio(pv, pt)
        resolved = _float(c.get("last_resolved"))
        if state == "resolved":
            order = (1, -(resolved or 0.0))
        else:
            order = (_STATE_RANK.get(state, 3), -(ratio if ratio is not None else -1.0))
        incidents = _maps(c.get("incidents"))
        row = {
            "rank": order, "order": (*order, model, feature, check, metric),
            "model": model, "feature": feature, "feature_anchor": anchor, "kind": kind,
            "check": check, "metric": metric, "label": _check_label(check, metric),
            "state": state, "state_label": _STATE_LABEL.get(state, state),
            "state_class": _STATE_CLASS.get(state, "grey"),
            "now": fmt_num(_get(last, "value")), "now_thr": fmt_num(_get(last, "threshold")),
            "now_over": (_float(_get(last, "value")) or 0.0)
            > (_float(_get(last, "threshold")) or math.inf),
            "peak": fmt_num(pv), "peak_thr": fmt_num(pt),
            "peak_ratio": f"{ratio:.1f}\u00d7" if ratio is not None and math.isfinite(ratio)
            else "",
            "peak_sort": ratio if ratio is not None and math.isfinite(ratio) else -1,
            "peak_over": ratio is not None and ratio > 1,
            "peak_when": _time_or_dash(_get(peak, "end")),
            "over": fmt_int(c.get("over")), "over_sort": _float(c.get("over")) or 0,
            "judged": fmt_int(c.get("judged")),
            "n_incidents": len(incidents),
            "first_incident": _text(_get(incidents[0], "id")) if incidents else "",
            "first_raised": _time_or_dash(c.get("first_raised")),
            "first_raised_sort": _float(c.get("first_raised")) or 0,
            "last_resolved": _time_or_dash(resolved), "last_resolved_sort": resolved or 0,
        }
        self.overview.append(row)
        return row

    def _incident(self, model: str, feature: str, kind: str, integer: bool,
                  baseline: Mapping[str, Any], i: Mapping[str, Any],
                  feature_anchor: str) -> dict[str, Any]:
        ident = _text(i.get("id"))
        for key in ("raise_event", "resolve_event"):
            if i.get(key):
                self.incident_of_event[_text(i[key])] = ident
        check, metric = _text(i.get("check")), _text(i.get("metric"))
        raised, resolved = i.get("raised"), i.get("resolved")
        worst = i.get("worst") if isinstance(i.get("worst"), Mapping) else None
        peak = i.get("peak") if isinstance(i.get("peak"), Mapping) else {}
        pv, pt = _float(_get(peak, "value")), _float(_get(peak, "threshold"))
        ratio = _ratio(pv, pt)
        bad = i.get("bad") if isinstance(i.get("bad"), Mapping) else {}
        view = {
            "id": ident, "model": model, "feature": feature, "feature_anchor": feature_anchor,
            "label": _check_label(check, metric), "check": check, "metric": metric,
            "state": "skew" if resolved is None else "resolved",
            "raised": _time_or_dash(raised), "resolved": _time_or_dash(resolved),
            "duration": _duration(raised, resolved),
            "severity": _text(i.get("severity")),
            "severity_class": _SEVERITY_CLASS.get(_text(i.get("severity")).lower(), "grey"),
            "peak": fmt_num(pv), "peak_thr": fmt_num(pt),
            "peak_ratio": f"{ratio:.1f}\u00d7" if ratio is not None and math.isfinite(ratio)
            else "",
            "windows_over": fmt_int(i.get("windows_over"))
            if i.get("windows_over") is not None else "",
            "worst": worst is not None,
            "worst_when": self._when(worst) if worst else "",
            "worst_value": fmt_num(_get(worst, "value")),
            "worst_thr": fmt_num(_get(worst, "threshold")),
            "chart": "",
            "chart_args": (kind, integer, baseline, worst, f"{feature} at the worst window "
                           f"of the {_check_label(check, metric)} incident vs baseline")
            if worst else None,
            "quantiles": self._quantile_rows(kind, integer, baseline, worst),
            "rates": self._rates(baseline, worst),
            "evidence": _evidence_chips(i.get("evidence"), None, integer),
            "rejected": _counts(_get(bad, "rejected")),
            "field_errors": _counts(_get(bad, "field_errors")),
            "feature_field_errors": _counts(_get(bad, "feature_field_errors")),
            "bad_without_time": fmt_int(_get(bad, "without_time"))
            if _float(_get(bad, "without_time")) else "",
            "raised_sort": _float(raised) or 0.0,
        }
        self.incidents.append(view)
        return view

    def _limit_incident_charts(self) -> None:
        """Draw the charts of the newest incidents only (the file stays small)."""
        newest = sorted(self.incidents, key=lambda v: -v["raised_sort"])
        for rank, view in enumerate(newest):
            args = view.pop("chart_args")
            if args is not None and rank < MAX_INCIDENT_CHARTS:
                view["chart"] = self._distribution(*args)

    @staticmethod
    def _when(w: Mapping[str, Any]) -> str:
        start, end = _float(w.get("start")), _float(w.get("end"))
        n = fmt_int(w.get("count") if w.get("count") is not None else w.get("records"))
        if start is None or end is None:
            return f"n {n}"
        return f"{fmt_time(start)} \u2013 {fmt_time(end)[11:]} UTC, n {n}"

    @staticmethod
    def _distribution(kind: str, integer: bool, baseline: Mapping[str, Any],
                      window: Mapping[str, Any] | None, label: str) -> str:
        if not baseline or window is None:
            return ""
        probs = window.get("probs")
        if kind == "categorical" or baseline.get("labels") is not None:
            total = _float(window.get("count")) or 0
            unseen = []
            for u in _maps(window.get("top_unseen")):
                c = _float(u.get("count"))
                if c is not None and total > 0:
                    unseen.append((_text(u.get("value")), c / total))
            return svg.categorical_chart(_seq(baseline.get("labels")),
                                         _seq(baseline.get("probs")),
                                         None if probs is None else _seq(probs),
                                         unseen=unseen, label=label)
        return svg.quantile_chart(_seq(baseline.get("edges")), _seq(baseline.get("probs")),
                                  None if probs is None else _seq(probs), integer=integer,
                                  label=label)

    @staticmethod
    def _quantile_rows(kind: str, integer: bool, baseline: Mapping[str, Any],
                       worst: Mapping[str, Any] | None) -> list[dict[str, str]]:
        """Rows min, p01 ... p99, max, mean with the baseline's and the window's values."""
        if kind == "categorical" or not baseline or baseline.get("labels") is not None \
                or not isinstance(worst, Mapping):
            return []

        def side(src: Mapping[str, Any]) -> list[str]:
            q = src.get("quantiles") if isinstance(src.get("quantiles"), Mapping) else {}
            return [_value(src.get("min"), integer),
                    *(_value(q.get(k), integer) for k in _QUANTILE_KEYS),
                    _value(src.get("max"), integer), fmt_num(src.get("mean"))]

        names = ["min", *_QUANTILE_KEYS, "max", "mean"]
        return [{"name": n, "baseline": b, "serving": s}
                for n, b, s in zip(names, side(baseline), side(worst), strict=True)]

    @staticmethod
    def _rates(baseline: Mapping[str, Any], worst: Mapping[str, Any] | None) -> list[str]:
        if not isinstance(worst, Mapping):
            return []
        seen = sum(_float(worst.get(k)) or 0 for k in ("count", "missing", "invalid"))
        if not seen:
            return []
        out = [f"missing {fmt_pct(baseline.get('missing_rate'))} \u2192 "
               f"{fmt_pct((_float(worst.get('missing')) or 0) / seen)}"]
        if _float(worst.get("invalid")):
            out.append(f"wrong type or not finite {fmt_pct((_float(worst['invalid'])) / seen)}"
                       f" ({fmt_int(worst['invalid'])} values)")
        return out

    # -- events -------------------------------------------------------------------------

    def _events(self, events: Any) -> tuple[list[dict[str, Any]], int]:
        rows = []
        for i, ev in enumerate(_seq(events)):
            if not isinstance(ev, Mapping):
                continue
            window = _get(ev, "window")
            end = _float(_get(window, "end"))
            model, feature = _text(ev.get("model"), "\u2014"), _text(ev.get("feature"), "\u2014")
            value, thr = _float(ev.get("value")), _float(ev.get("threshold"))
            etype = _text(ev.get("type"), "\u2014")
            rows.append({
                "order": (end is not None, end or 0.0, i),
                "time": fmt_time(end) if end is not None else "\u2014",
                "type": etype,
                "type_class": "green" if "resolv" in etype else "red"
                if "skew" in etype else "grey",
                "model": model, "feature": feature,
                "feature_anchor": self.feature_anchor.get((model, feature), ""),
                "label": _check_label(_text(ev.get("check")), _text(ev.get("metric"))),
                "metric": _text(ev.get("metric"), "\u2014"),
                "value": fmt_num(ev.get("value")), "threshold": fmt_num(ev.get("threshold")),
                "over": value is not None and thr is not None and value > thr,
                "severity": _text(ev.get("severity"), "\u2014"),
                "severity_class": _SEVERITY_CLASS.get(_text(ev.get("severity")).lower(),
                                                      "grey"),
                "evidence": _evidence_chips(ev.get("evidence"), _get(window, "count"),
                                            self.integer.get((model, feature), False)),
                "event_id": _text(ev.get("event_id")),
                "incident": self.incident_of_event.get(_text(ev.get("event_id")), ""),
            })
        rows.sort(key=lambda r: r["order"])  # newest last; events without a time first
        hidden = max(0, len(rows) - MAX_EVENT_ROWS)
        return rows[hidden:], hidden


# --------------------------------------------------------------------------- API


def render_report(data: Mapping[str, Any]) -> str:
    """Render the report data as one self-contained HTML page and return its text.

    ``data`` holds plain JSON-compatible values (every key optional; missing values show as
    a dash): ``title``, ``generated_at``, ``source``, ``baseline`` (``id``, ``count``,
    ``path``), ``summary`` (``records``, ``bad_records`` and ``field_errors`` by reason,
    ``late_records``, ``windows``, ``events``), ``events`` (skew events in the alert schema)
    and ``models``: per model ``start``/``end`` (first and last window end, epoch ms) and
    ``features``, each with ``name``, ``kind``, ``integer``, ``baseline`` (``edges`` and
    ``probs``, or ``labels`` and ``probs``; ``quantiles``, ``min``, ``max``, ``mean``,
    ``missing_rate``), ``checks`` (per check: ``state``, ``last``, ``peak``, ``judged``,
    ``over``, ``first_raised``, ``last_resolved``, ``incidents`` and the timeline
    ``points``), ``incidents`` (``id``, ``raised``, ``resolved``, ``peak``, ``worst``: the
    worst window's ``probs``, ``quantiles``, ``top_unseen``..., and ``bad`` by reason) and
    ``last_window``. :meth:`streamskew.report.collect.ReportCollector.data` builds it.

    Raises ImportError (saying ``pip install 'streamskew[report]'``) when jinja2 is missing.

    >>> html = render_report({"title": "demo", "models": [{"model": "m", "start": 0,
    ...     "end": 600_000, "features": [{"name": "carat", "kind": "numeric",
    ...     "checks": [{"check": "distribution", "metric": "jsd", "state": "ok",
    ...                 "points": [[0, 0, 0.02, 0.02, 0.1, 1, 0]]}]}]}]})
    >>> html.startswith("<!DOCTYPE html>"), "carat" in html, html.count("<svg ")
    (True, True, 1)
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"report data must be a mapping, not {type(data).__name__}")
    env = _environment()
    from markupsafe import Markup  # a dependency of jinja2

    ctx = _Page(data).context()
    for m in ctx["models"]:
        for f in m["features"]:  # built and escaped by streamskew.report.svg
            f["timeline_svg"] = Markup(f["timeline_svg"])
            f["last_svg"] = Markup(f["last_svg"])
            for i in f["incidents"]:
                i["chart"] = Markup(i["chart"])
    for p in ctx["performance"]:
        p["chart"] = Markup(p["chart"])  # built and escaped by streamskew.report.performance
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
