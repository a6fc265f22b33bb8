"""Small inline-SVG chart helpers for the HTML report.

Everything here returns plain ``str`` snippets of SVG markup, built by hand: no plotting
library, no JavaScript, no external resources, so the report stays a single self-contained
file that opens offline. Every piece of user data placed in the markup (category labels,
tooltips) is XML-escaped here, because the template inserts these snippets unescaped.

The charts carry the classes ``ss-chart``, ``ax``, ``grid``, ``hit`` ... which the report's
stylesheet uses for fonts and hover effects; colours are presentation attributes, so a chart
still renders sensibly on its own.

Number formatting helpers (:func:`fmt_num`, :func:`fmt_pct`, :func:`fmt_int`,
:func:`fmt_time`) are shared with the template.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

__all__ = [
    "BASELINE_FILL",
    "BASELINE_STROKE",
    "EXCEED",
    "SERVING",
    "categorical_chart",
    "fmt_int",
    "fmt_num",
    "fmt_pct",
    "fmt_time",
    "nice_range",
    "nice_ticks",
    "quantile_chart",
    "time_ticks",
    "timeline_chart",
]

# Palette (also used by the page's legend swatches).
BASELINE_FILL = "#cbd5e1"
BASELINE_STROKE = "#94a3b8"
SERVING = "#2563eb"
EXCEED = "#dc2626"
UNSEEN_BG = "#fef2f2"
OUTER_BG = "#fff7ed"
AXIS = "#94a3b8"
GRID = "#eef1f5"
TEXT = "#64748b"
TEXT_STRONG = "#334155"
THRESHOLD = "#d97706"

_DASH = "\u2014"  # shown for missing numbers


# --------------------------------------------------------------------------- numbers


def _as_float(x: Any) -> float | None:
    """``x`` as a float, or None when it is missing or not a number (bools are not numbers)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _finite(x: Any) -> float | None:
    v = _as_float(x)
    return v if v is not None and math.isfinite(v) else None


def fmt_num(x: Any, digits: int = 3) -> str:
    """Format a number with about ``digits`` significant digits, compactly.

    >>> [fmt_num(v) for v in (0.42, 0.123456, 0, 43152, 519648.7, 2.5e9, -3.2e-7, None)]
    ['0.42', '0.123', '0', '43,152', '519,600', '2.5e9', '-3.2e-7', '—']
    """
    if isinstance(x, bool):
        return str(x).lower()
    v = _as_float(x)
    if v is None:
        return _DASH if x is None else escape(str(x))[:40]
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v == 0:
        return "0"
    a = abs(v)
    if 1000 <= a < 1e6:  # thousands separators; whole numbers exact, others to 4 digits
        return f"{v if v.is_integer() else float(f'{v:.{max(digits, 4)}g}'):,.0f}"
    if a < 1e-3 or a >= 1e6:
        mant, _, exp = f"{v:.{max(digits - 1, 0)}e}".partition("e")
        if "." in mant:
            mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    return f"{v:.{digits}g}"


def fmt_pct(p: Any) -> str:
    """Format a probability (0..1) as a percentage with ~3 significant digits.

    >>> fmt_pct(0.1234), fmt_pct(0.00042), fmt_pct(0), fmt_pct(None)
    ('12.3%', '0.042%', '0%', '—')
    """
    v = _as_float(p)
    if v is None or not math.isfinite(v):
        return _DASH if v is None else fmt_num(v)
    if v == 0:
        return "0%"
    pv = v * 100
    if abs(pv) < 1e-3:
        return f"{fmt_num(pv)}%"
    return f"{pv:.3g}%"


def fmt_int(x: Any) -> str:
    """Format a count with thousands separators (``43,152``); non-integers fall back to
    :func:`fmt_num`, missing values to a dash."""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    v = _finite(x)
    if v is not None and v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return fmt_num(x)


def fmt_time(ms: Any, with_date: bool = True, seconds: bool = True) -> str:
    """Format epoch milliseconds as a UTC time (``2025-11-28 09:40:00``).

    Missing values give a dash, values out of the calendar's range are shown as numbers.

    >>> fmt_time(1764324000000)
    '2025-11-28 10:00:00'
    """
    v = _finite(ms)
    if v is None:
        return _DASH if ms is None else fmt_num(ms)
    try:
        t = datetime.fromtimestamp(v / 1000.0, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return fmt_num(v)
    fmt = ("%Y-%m-%d " if with_date else "") + ("%H:%M:%S" if seconds else "%H:%M")
    return t.strftime(fmt)


# --------------------------------------------------------------------------- ticks


def _tidy(x: float) -> float:
    """Drop floating-point noise (``0.30000000000000004`` -> ``0.3``)."""
    return float(f"{x:.12g}")


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values within ``[lo, hi]`` (1-2-2.5-5 steps).

    >>> nice_ticks(0, 0.42)
    [0.0, 0.1, 0.2, 0.3, 0.4]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    try:
        mag = 10.0 ** math.floor(math.log10(raw))
        step = min((m * mag for m in (1, 2, 2.5, 5, 10)), key=lambda st: abs(math.log(st / raw)))
    except (ValueError, ZeroDivisionError, OverflowError):
        return [lo, hi]
    if not (step > 0 and math.isfinite(step)):
        return [lo, hi]
    out = []
    i = math.ceil(lo / step - 1e-9)
    while i * step <= hi + step * 1e-9 and len(out) < 50:
        out.append(_tidy(i * step))
        i += 1
    return out


def nice_range(lo: float, hi: float, n: int = 4) -> tuple[float, float, list[float]]:
    """``[lo, hi]`` widened to round tick values, and those ticks.

    >>> nice_range(0, 0.42)
    (0.0, 0.5, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0, [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        lo, hi = (lo - 1.0, hi + 1.0) if lo != 0 else (0.0, 1.0)
    t = nice_ticks(lo, hi, n)
    step = t[1] - t[0] if len(t) > 1 else (hi - lo)
    if not (step > 0 and math.isfinite(step)):
        return lo, hi, [lo, hi]
    a = math.floor(lo / step + 1e-9) * step
    b = math.ceil(hi / step - 1e-9) * step
    if not (math.isfinite(a) and math.isfinite(b)) or b <= a:
        return lo, hi, [lo, hi]
    count = min(round((b - a) / step), 50)
    ticks = [_tidy(a + i * step) for i in range(count + 1)]
    if not ticks[-1] > ticks[0]:
        return lo, hi, [lo, hi]
    return ticks[0], ticks[-1], ticks


# --------------------------------------------------------------------------- svg basics


def _c(x: float) -> str:
    """A coordinate with one decimal, without a useless ``.0`` (keeps the file small)."""
    s = f"{x:.1f}"
    if s.endswith(".0"):
        s = s[:-2]
    return "0" if s == "-0" else s


def _esc(s: Any) -> str:
    return escape(str(s), quote=True)


def _svg_open(width: int, height: int, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ss-chart" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" role="img" aria-label="{_esc(label)}"'
        ' font-family="system-ui,sans-serif" font-size="11">'
    )


def _t(x: float, y: float, s: str, anchor: str = "", extra: str = "") -> str:
    """A text element (escaped); ``anchor`` is ``middle``/``end`` or empty for start."""
    a = f' text-anchor="{anchor}"' if anchor else ""
    return f'<text x="{_c(x)}" y="{_c(y)}"{a}{extra}>{_esc(s)}</text>'


def _hline(x0: float, x1: float, y: float) -> str:
    return f"M{_c(x0)} {_c(y)}H{_c(x1)}"


def _tenths(v: float) -> int:
    return round(v * 10)


def _n10(t: int) -> str:
    """A number given in tenths, shortest form (``123`` -> ``12.3``, ``-5`` -> ``-.5``)."""
    sign, t = ("-", -t) if t < 0 else ("", t)
    whole, frac = divmod(t, 10)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole or ''}.{frac}"


def _pair(a: int, b: int) -> str:
    """Two numbers in tenths, separated only where SVG's grammar needs it."""
    sb = _n10(b)
    sep = "" if sb[0] == "-" else " "
    return f"{_n10(a)}{sep}{sb}"


def _rel_path(points: Sequence[tuple[float, float]], seg: str) -> str:
    """A path through ``points`` as relative moves: ``seg`` is ``l`` (polyline) or ``m...h0``
    (separate dots). Coordinates are rounded to tenths first, so errors do not accumulate."""
    if not points:
        return ""
    pts = [(_tenths(x), _tenths(y)) for x, y in points]
    x0, y0 = pts[0]
    d = [f"M{_pair(x0, y0)}", "h0" if seg == "m" else "l"]
    for j, (x, y) in enumerate(pts[1:]):
        rel = _pair(x - x0, y - y0)
        if seg == "m":
            d.append(f"m{rel}h0")
        else:  # after one "l", further pairs are implicit line-tos
            d.append(rel if j == 0 or rel[0] == "-" else " " + rel)
        x0, y0 = x, y
    return "".join(d)


def _thin(points: Sequence[tuple[float, float]], px: float = 2.0) -> list[tuple[float, float]]:
    """Fewer points for a long polyline, same look: per ``px``-wide column only the lowest and
    highest point (in their order) are kept, plus the first and the last point."""
    if len(points) <= 2:
        return list(points)
    cols: dict[int, list[int]] = {}
    for i, (x, y) in enumerate(points):
        c = cols.setdefault(int(x // px), [i, i])
        if y < points[c[0]][1]:
            c[0] = i
        if y > points[c[1]][1]:
            c[1] = i
    if len(cols) * 2 >= len(points):
        return list(points)
    keep = {0, len(points) - 1}
    for lo, hi in cols.values():
        keep.update((lo, hi))
    return [points[i] for i in sorted(keep)]


def _dedupe(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Markers that would land on the same pixel drawn once."""
    seen: set[tuple[int, int]] = set()
    out = []
    for x, y in points:
        key = (round(x), round(y))
        if key not in seen:
            seen.add(key)
            out.append((x, y))
    return out


def _dots(points: Sequence[tuple[float, float]], colour: str, r: float, halo: bool = False) -> str:
    """Markers as one path of zero-length round-capped segments (compact for many points)."""
    if not points:
        return ""
    d = _rel_path(points, "m")
    out = ""
    if halo:
        out = f'<path d="{d}" stroke="#fff" stroke-width="{_c(2 * r + 2)}" stroke-linecap="round"/>'
    return (
        out + f'<path d="{d}" stroke="{colour}" stroke-width="{_c(2 * r)}" stroke-linecap="round"/>'
    )


def _hover(bands: Sequence[tuple[float, float, str]], y: float, h: float) -> str:
    """Transparent hover areas ``(x, width, tooltip)`` spanning ``[y, y + h]``."""
    parts = ['<g class="hit" fill="transparent">']
    for x, w, tip in bands:
        d = f"M{_c(x)} {_c(y)}h{_c(w)}v{_c(h)}h{_c(-w)}z"
        parts.append(f'<path d="{d}"><title>{_esc(tip)}</title></path>')
    parts.append("</g>")
    return "".join(parts)


def _empty_chart(width: int, height: int, message: str) -> str:
    return (
        _svg_open(width, height, message)
        + f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" rx="6"'
        f' fill="#f8fafc" stroke="{GRID}"/>'
        + _t(width / 2, height / 2 + 4, message, "middle", f' fill="{TEXT}"')
        + "</svg>"
    )


def _probs(seq: Any, n: int | None = None) -> list[float] | None:
    """Probabilities as finite non-negative floats (bad entries become 0); ``None`` stays None.
    With ``n``, the list is padded or cut to that length."""
    if seq is None:
        return None
    try:
        vals = [_finite(p) or 0.0 for p in seq]
    except TypeError:
        return None
    vals = [v if v > 0 else 0.0 for v in vals]
    if n is not None:
        vals = (vals + [0.0] * n)[:n]
    return vals


def _grid_y(ticks: Sequence[float], y_of: Any, x0: float, x1: float, label: Any) -> str:
    """Horizontal grid lines with labels left of ``x0``."""
    d = "".join(_hline(x0, x1, y_of(t)) for t in ticks)
    texts = "".join(_t(x0 - 4, y_of(t) + 3.5, label(t), "end") for t in ticks)
    return f'<path d="{d}" stroke="{GRID}"/><g fill="{TEXT}">{texts}</g>'


def _legend(x: float, y: float, serving: bool, bars: bool = False) -> str:
    """Legend: a baseline swatch and the serving line (or a note that serving had no values)."""
    parts = [
        f'<rect x="{_c(x)}" y="{_c(y - 8)}" width="10" height="9" fill="{BASELINE_FILL}"'
        f' stroke="{BASELINE_STROKE}"/>',
        _t(x + 14, y, "baseline", "", f' fill="{TEXT}"'),
    ]
    x += 70
    if serving:
        swatch = (
            f'<rect x="{_c(x)}" y="{_c(y - 8)}" width="10" height="9" fill="{SERVING}"/>'
            if bars
            else f'<path d="M{_c(x)} {_c(y - 4)}h12" stroke="{SERVING}" stroke-width="2"/>'
        )
        parts.append(swatch + _t(x + (14 if bars else 16), y, "serving", "", f' fill="{TEXT}"'))
    else:
        parts.append(_t(x, y, "serving: no values", "", f' fill="{EXCEED}"'))
    return "".join(parts)


def _groups(n: int, max_groups: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``max_groups`` consecutive ``(start, stop)`` runs."""
    size = max(1, math.ceil(n / max(max_groups, 1)))
    return [(i, min(i + size, n)) for i in range(0, n, size)]


# --------------------------------------------------------------------------- numeric


def quantile_chart(
    edges: Sequence[Any] | None,
    baseline_probs: Sequence[Any] | None,
    serving_probs: Sequence[Any] | None,
    *,
    integer: bool = False,
    width: int = 700,
    height: int = 240,
    max_tooltips: int = 25,
    label: str = "serving window vs baseline",
) -> str:
    """Baseline vs serving share per bin of a numeric feature, on a quantile-aligned axis.

    ``baseline_probs``/``serving_probs`` hold ``k + 2`` shares: below ``edges[0]``, the ``k``
    bins ``[edges[i], edges[i+1])`` (the last closed) and above ``edges[k]``. Each bin is as
    wide as its share of the training data (at least a fifth of an average bin), so the x
    axis runs through the training quantiles: with more than 30 bins, evenly spaced tick
    labels sit at the training's min, p10, p25, p50, p75, p90 and max and name the real
    values there; with fewer, the real bin edges are named (and for an integer-valued
    feature with one value per bin, each value under its own bar). Values below the
    training minimum and above its maximum stand apart at both ends. Bars: baseline grey,
    serving blue. ``serving_probs`` may be None (no serving values).

    >>> edges = [i / 10 for i in range(41)]
    >>> chart = quantile_chart(edges, [0] + [1 / 40] * 40 + [0], [.1] + [.9 / 40] * 40 + [0])
    >>> chart.startswith("<svg"), ">p50<" in chart, ">2<" in chart
    (True, True, True)
    """
    edges_f = [_finite(e) for e in (edges or ())]
    k = len(edges_f) - 1
    if k < 1 or any(e is None for e in edges_f):
        return _empty_chart(width, 90, "no bins to draw")
    n = k + 2
    base = _probs(baseline_probs, n) or [0.0] * n
    serv = _probs(serving_probs, n)
    inner = sum(base[1 : k + 1]) or 1.0
    floor = 0.2 / k
    widths = [max(b / inner, floor) for b in base[1 : k + 1]]
    scale = sum(widths)

    ml, mr, mt, mb = 44, 8, 34, 46
    side = 30  # under/overflow columns
    gap = 6
    x0 = ml + side + gap
    pw = width - mr - side - gap - x0
    y0 = height - mb
    ph = y0 - mt
    tallest = max([*base, *(serv or [])], default=0.0)
    _, ymax, yticks = nice_range(0.0, tallest or 0.01, 4)

    def y_of(p: float) -> float:
        return y0 - ph * min(p, ymax) / ymax

    lefts = [x0]
    for w in widths:
        lefts.append(lefts[-1] + pw * w / scale)
    # Where the training quantile q falls on the axis (in the bin that holds it).
    cum = [0.0]
    for b in base[1 : k + 1]:
        cum.append(cum[-1] + b / inner)

    def x_at_quantile(q: float) -> tuple[float, float]:
        for i in range(k):
            if cum[i + 1] >= q - 1e-12 and (cum[i + 1] > cum[i] or i == k - 1):
                share = cum[i + 1] - cum[i]
                f = (q - cum[i]) / share if share > 0 else 0.0
                return lefts[i] + f * (lefts[i + 1] - lefts[i]), edges_f[i] + f * (
                    edges_f[i + 1] - edges_f[i]
                )
        return lefts[-1], edges_f[-1]

    out = [_svg_open(width, height, label)]
    out.append(
        f'<path d="M{ml} {mt}h{side}v{_c(ph)}h{-side}zM{_c(x0 + pw + gap)} {mt}h{side}'
        f'v{_c(ph)}h{-side}z" fill="{OUTER_BG}"/>'
    )
    out.append(_grid_y(yticks, y_of, ml, width - mr, fmt_pct))

    def bars(vals: Sequence[float], inset: float) -> str:
        d = []
        for i in range(k):
            p = vals[i + 1]
            if p <= 0:
                continue
            xa, xb = lefts[i] + inset, lefts[i + 1] - inset
            if xb - xa < 0.6:
                xb = xa + 0.6
            d.append(f"M{_c(xa)} {_c(y0)}V{_c(y_of(p))}H{_c(xb)}V{_c(y0)}z")
        for xs, idx in ((ml, 0), (x0 + pw + gap, n - 1)):
            if vals[idx] > 0:
                d.append(
                    f"M{_c(xs + 3 + inset)} {_c(y0)}V{_c(y_of(vals[idx]))}"
                    f"H{_c(xs + side - 3 - inset)}V{_c(y0)}z"
                )
        return "".join(d)

    out.append(
        f'<path d="{bars(base, 0)}" fill="{BASELINE_FILL}" stroke="{BASELINE_STROKE}"'
        ' stroke-width="0.5"/>'
    )
    if serv is not None:
        out.append(f'<path class="serving" d="{bars(serv, 0.8)}" fill="{SERVING}"'
                   ' fill-opacity="0.75"/>')

    axis = [_hline(ml, width - mr, y0)]
    texts = []
    ty = y0 + 13
    few = integer and k <= 40 and all(
        edges_f[i + 1] - edges_f[i] == 1 or i == k - 1 for i in range(k)
    )
    if few:  # one integer per bar: name each bar, where there is room
        last_x = -1e9
        for i in range(k):
            xm = (lefts[i] + lefts[i + 1]) / 2
            if xm - last_x >= 22:
                axis.append(f"M{_c(xm)} {_c(y0)}v3")
                texts.append(_t(xm, ty, fmt_num(edges_f[i]), "middle"))
                last_x = xm
        texts.append(_t(x0 + pw / 2, ty + 26, "value (bar width: share in training)",
                        "middle"))
    elif k <= 30:  # few bins: name their real edges (an interpolated value would be made up)
        marks: list[tuple[float, str]] = []
        for i in range(k + 1):
            if marks and lefts[i] - marks[-1][0] < 30:
                if i < k:
                    continue
                marks.pop()
            marks.append((lefts[i], fmt_num(edges_f[i])))
        for x, text in marks:
            axis.append(f"M{_c(x)} {_c(y0)}v4")
            texts.append(_t(x, ty, text, "middle"))
        texts.append(_t(x0 + pw / 2, ty + 26, "bin edges (bar width: share in training)",
                        "middle"))
    else:
        last_x = -1e9
        for q, name in ((0, "min"), (0.1, "p10"), (0.25, "p25"), (0.5, "p50"), (0.75, "p75"),
                        (0.9, "p90"), (1.0, "max")):
            x, value = x_at_quantile(q)
            if x - last_x < 40 and name != "max":
                continue
            if x - last_x < 40:  # the max wins over a crowded neighbour
                texts = texts[:-2]
                axis = axis[:-1]
            anchor = "start" if name == "min" else "end" if name == "max" else "middle"
            axis.append(f"M{_c(x)} {_c(y0)}v4")
            shown = fmt_num(round(value)) if integer else fmt_num(value)
            texts.append(_t(x, ty, shown, "" if anchor == "start" else anchor))
            texts.append(_t(x, ty + 12, name, "" if anchor == "start" else anchor,
                            ' fill-opacity="0.7"'))
            last_x = x
        texts.append(_t(x0 + pw / 2, ty + 26, "value, spaced by training quantiles", "middle"))
    for xs, idx, name in ((ml, 0, "< min"), (x0 + pw + gap, n - 1, "> max")):
        texts.append(_t(xs + side / 2, mt - 4, name, "middle", ' font-size="10"'))
        share = serv[idx] if serv is not None else base[idx]
        if share > 0:
            y = max(y_of(share) - 3, mt + 9)
            texts.append(_t(xs + side / 2, y, fmt_pct(share), "middle",
                            f' font-size="9.5" fill="{SERVING}"'))
    out.append(f'<path d="{"".join(axis)}" stroke="{AXIS}"/><g fill="{TEXT}">{"".join(texts)}</g>')

    def tip(a: int, b: int) -> str:  # slots a..b-1 (0 = below, k+1 = above)
        s = f"baseline {fmt_pct(sum(base[a:b]))}"
        return s + (f" \u00b7 serving {fmt_pct(sum(serv[a:b]))}" if serv is not None else "")

    bands = [
        (ml, side, f"below the training min ({fmt_num(edges_f[0])})\n{tip(0, 1)}"),
        (x0 + pw + gap, side, f"above the training max ({fmt_num(edges_f[k])})\n{tip(n - 1, n)}"),
    ]
    for a, b in _groups(k, max_tooltips):
        close = "]" if b == k else ")"
        bands.append((lefts[a], lefts[b] - lefts[a],
                      f"[{fmt_num(edges_f[a])}, {fmt_num(edges_f[b])}{close}\n{tip(a + 1, b + 1)}"))
    out.append(_hover(bands, mt, ph))
    out.append(_legend(ml, 12, serv is not None, bars=True))
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------- categorical

UNSEEN_LABEL = "<unseen>"
OTHER_LABEL = "<other>"


def _truncate(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def categorical_chart(
    labels: Sequence[Any] | None,
    baseline_probs: Sequence[Any] | None,
    serving_probs: Sequence[Any] | None,
    *,
    unseen: Sequence[tuple[Any, Any]] | None = None,
    top: int = 16,
    width: int = 700,
    row: int = 20,
    label: str = "category shares of the serving window vs baseline",
) -> str:
    """Grouped horizontal bars (baseline, serving) per category.

    Shows the ``top`` labels by ``max(baseline, serving)`` share, largest first; the
    ``<unseen>`` bucket (values never seen in training) is always kept when it has mass,
    highlighted in red, and followed by the unseen values themselves (``unseen``: pairs of
    value and share, e.g. from the window's heavy-hitters table), each named. A note tells
    how many labels were left out. Labels are escaped and shortened, the full label in the
    row's tooltip.
    """
    labels = ["" if lab is None else str(lab) for lab in (labels or ())]
    n = max(len(labels), len(baseline_probs or ()), len(serving_probs or ()))
    if n == 0:
        return _empty_chart(width, 90, "no categories")
    labels = (labels + [f"#{i + 1}" for i in range(len(labels), n)])[:n]
    base = _probs(baseline_probs, n) or [0.0] * n
    serv = _probs(serving_probs, n)

    def mass(i: int) -> float:
        return max(base[i], serv[i] if serv is not None else 0.0)

    top = max(top, 1)
    order = sorted(range(n), key=lambda i: (-mass(i), i))
    shown = order[:top]
    kept_unseen = [i for i in order if labels[i] == UNSEEN_LABEL and mass(i) > 0]
    if kept_unseen and kept_unseen[0] not in shown:
        shown = shown[: top - 1] + kept_unseen[:1]
    hidden = n - len(shown)
    # rows: (label, baseline share or None, serving share, style)
    rows: list[tuple[str, float | None, float | None, str]] = []
    named = [(str(v), _finite(p) or 0.0) for v, p in (unseen or ())]
    for i in shown:
        lab = labels[i]
        style = "unseen" if lab == UNSEEN_LABEL else "other" if lab == OTHER_LABEL else ""
        rows.append((lab, base[i], serv[i] if serv is not None else None, style))
        if lab == UNSEEN_LABEL and serv is not None:
            rows.extend((f"\u201c{v}\u201d", None, p, "named") for v, p in named)

    ml, mr, mt = 170, 110, 40
    mb = 26 if hidden else 8
    pw = width - ml - mr
    height = mt + row * len(rows) + mb
    top_share = max([r[1] or 0.0 for r in rows] + [r[2] or 0.0 for r in rows])
    _, xmax, ticks = nice_range(0.0, top_share or 0.01, 4)

    def x_of(p: float) -> float:
        return ml + pw * min(p, xmax) / xmax

    y_end = mt + row * len(rows)
    out = [_svg_open(width, height, label)]
    grid = "".join(f"M{_c(x_of(t))} {mt}V{y_end}" for t in ticks[1:])
    out.append(f'<path d="{grid}" stroke="{GRID}"/>')
    bh = (row - 6) / 2
    bars_b, bars_s, texts, bands = [], [], [], []
    for r, (lab, b, s, style) in enumerate(rows):
        y = mt + r * row
        red = style in ("unseen", "named")
        if red:
            out.append(f'<rect y="{y}" width="{width}" height="{row}" fill="{UNSEEN_BG}"/>')
        extra = ""
        if style == "unseen":
            extra = f' fill="{EXCEED}" font-weight="600"'
        elif style == "named":
            extra = f' fill="{EXCEED}"'
        elif style == "other":
            extra = ' font-style="italic"'
        shown_label = _truncate(lab, 24)
        texts.append(_t(ml - 6, y + row / 2 + 4, shown_label, "end", extra))
        if b is not None:
            bars_b.append(f"M{ml} {_c(y + 3)}h{_c(x_of(b) - ml)}v{_c(bh)}H{ml}z")
        if s is not None:
            d = f"M{ml} {_c(y + 3 + bh)}h{_c(x_of(s) - ml)}v{_c(bh)}H{ml}z"
            if red:
                out.append(f'<path d="{d}" fill="{EXCEED}"/>')
            else:
                bars_s.append(d)
        if style == "named":
            val = f"{fmt_pct(s)} (unseen)"
        else:
            val = fmt_pct(b) + (f" \u2192 {fmt_pct(s)}" if s is not None else "")
        texts.append(_t(width - 4, y + row / 2 + 4, val, "end"))
        tip = f"{lab}\n" + (f"baseline {fmt_pct(b)}" if b is not None else "never in training")
        if s is not None:
            tip += f" \u00b7 serving {fmt_pct(s)}"
        bands.append((y, tip))
    out.append(
        f'<path d="{"".join(bars_b)}" fill="{BASELINE_FILL}" stroke="{BASELINE_STROKE}"'
        ' stroke-width="0.6"/>'
    )
    if bars_s:
        out.append(f'<path class="serving" d="{"".join(bars_s)}" fill="{SERVING}"/>')
    out.append(f'<path d="M{ml} {mt - 2}V{y_end}" stroke="{AXIS}"/>')
    texts += [_t(x_of(t), mt - 5, fmt_pct(t), "middle") for t in ticks[1:]]
    if hidden:
        more = f"+ {hidden} more label{'s' * (hidden != 1)} not shown"
        texts.append(_t(ml, y_end + 17, more, "", ' font-style="italic"'))
    out.append(f'<g fill="{TEXT}">' + "".join(texts) + "</g>")
    out.append('<g class="hit" fill="transparent">')
    for y, tip in bands:
        out.append(f'<path d="M0 {y}h{width}v{row}H0z"><title>{_esc(tip)}</title></path>')
    out.append("</g>")
    out.append(_legend(6, 13, serv is not None, bars=True))
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------- timelines

_TIME_STEPS_MS = [
    s * 1000
    for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, 86400, 172800, 604800)
]


def time_ticks(lo: float, hi: float, n: int = 8) -> list[float]:
    """Round UTC times (1 s ... 1 week apart) within ``[lo, hi]``, at most ``n`` + 1.

    >>> [fmt_time(t, with_date=False, seconds=False) for t in time_ticks(0, 3_600_000, 4)]
    ['00:00', '00:15', '00:30', '00:45', '01:00']
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    step = next((s for s in _TIME_STEPS_MS if (hi - lo) / s <= n), _TIME_STEPS_MS[-1])
    first = math.ceil(lo / step) * step
    return [float(first + i * step) for i in range(int((hi - first) // step) + 1)]


def _time_label(t: float, span: float, step: float) -> str:
    with_date = span >= 86_400_000 or fmt_time(t)[:10] != fmt_time(t - span)[:10]
    s = fmt_time(t, with_date=with_date and step >= 3_600_000, seconds=step < 60_000)
    return s[5:] if with_date and step >= 3_600_000 else s


def timeline_chart(
    lanes: Sequence[Mapping[str, Any]],
    start: Any,
    end: Any,
    *,
    width: int = 1120,
    lane_height: int = 44,
    max_tooltips: int = 16,
    label: str = "checks per window",
) -> str:
    """Stacked lanes, one per check of a feature, over a shared time axis.

    Each lane is ``{"label", "points", "spans", "note", "check", "metric"}`` (the last two
    become ``data-`` attributes of the lane's ``<g class="lane">``): ``points`` are downsampled
    windows ``[t_first, t_last, max, min, threshold, judged, over]`` (window ends, epoch ms;
    ``max``/``min`` None when no window of the point was judged), ``spans`` the incidents
    ``(raised, resolved or None, anchor)``. A lane draws its value (the maximum over the
    point's windows, with the min-max range shaded when a point holds several windows), the
    threshold as a dashed line, points over the threshold as red dots, and every incident as
    a shaded span from raise to resolve that links to ``#anchor``.
    """
    lanes = [lane for lane in lanes if isinstance(lane, Mapping)]
    t_lo, t_hi = _finite(start), _finite(end)
    if not lanes or t_lo is None or t_hi is None:
        return _empty_chart(width, 70, "no judged windows")
    if t_hi <= t_lo:
        t_lo, t_hi = t_lo - 30_000, t_hi + 30_000
    ml, mr, mt, mb = 178, 14, 6, 30
    gap = 8
    pw = width - ml - mr
    height = mt + len(lanes) * (lane_height + gap) - gap + mb

    def x_of(t: float) -> float:
        return ml + pw * (min(max(t, t_lo), t_hi) - t_lo) / (t_hi - t_lo)

    out = [_svg_open(width, height, label)]
    step_ticks = time_ticks(t_lo, t_hi, 8)
    step = step_ticks[1] - step_ticks[0] if len(step_ticks) > 1 else 60_000
    y_bottom = mt + len(lanes) * (lane_height + gap) - gap
    grid = "".join(f"M{_c(x_of(t))} {mt}V{_c(y_bottom)}" for t in step_ticks)
    out.append(f'<path d="{grid}" stroke="{GRID}"/>')
    for li, lane in enumerate(lanes):
        top = mt + li * (lane_height + gap)
        out.append(_lane(lane, top, lane_height, ml, pw, x_of, max_tooltips))
    texts = [
        _t(x_of(t), y_bottom + 14, _time_label(t, t_hi - t_lo, step), "middle")
        for t in step_ticks
    ]
    d0, d1 = fmt_time(t_lo)[:10], fmt_time(t_hi)[:10]
    note = f"window end, {d0}" + ("" if d0 == d1 else f" \u2013 {d1}") + " (UTC)"
    texts.append(_t(ml + pw / 2, y_bottom + 27, note, "middle"))
    out.append(f'<path d="{_hline(ml, ml + pw, y_bottom)}" stroke="{AXIS}"/>')
    out.append(f'<g fill="{TEXT}">{"".join(texts)}</g>')
    out.append("</svg>")
    return "".join(out)


def _lane(lane: Mapping[str, Any], top: float, h: float, ml: float, pw: float, x_of: Any,
          max_tooltips: int) -> str:
    pts = []
    for p in lane.get("points") or ():
        if isinstance(p, Sequence) and len(p) >= 7:
            t0, t1 = _finite(p[0]), _finite(p[1])
            if t0 is None or t1 is None:
                continue
            pts.append((t0, t1, _finite(p[2]), _finite(p[3]), _finite(p[4]),
                        int(_finite(p[5]) or 0), int(_finite(p[6]) or 0)))
    values = [v for p in pts for v in (p[2], p[4]) if v is not None]
    _, ymax, _ = nice_range(0.0, max(values, default=0.0) or 1e-9, 2)
    y0 = top + h

    def y_of(v: float) -> float:
        return y0 - h * min(max(v, 0.0), ymax) / ymax

    ident = "".join(f' data-{k}="{_esc(lane[k])}"' for k in ("check", "metric") if lane.get(k))
    out = [f'<g class="lane"{ident}>',
           f'<rect x="{_c(ml)}" y="{_c(top)}" width="{_c(pw)}" height="{_c(h)}" fill="#fbfcfd"'
           f' stroke="{GRID}"/>']
    for span in lane.get("spans") or ():
        raised, resolved, anchor = [*list(span), None, None, None][:3]
        a = _finite(raised)
        if a is None:
            continue
        b = _finite(resolved)
        xa = x_of(a)
        xb = x_of(b) if b is not None else ml + pw
        tip = f"incident: raised {fmt_time(a)}, " + (
            f"resolved {fmt_time(b)}" if b is not None else "still active"
        )
        rect = (f'<rect class="span" x="{_c(xa)}" y="{_c(top)}" width="{_c(max(xb - xa, 2))}"'
                f' height="{_c(h)}" fill="{EXCEED}" fill-opacity="0.13"><title>{_esc(tip)}'
                "</title></rect>")
        out.append(f'<a href="#{_esc(anchor)}">{rect}</a>' if anchor else rect)
    # value: max line (broken where nothing was judged), min-max band for merged points
    segs: list[list[int]] = [[]]
    for i, p in enumerate(pts):
        if p[2] is None:
            if segs[-1]:
                segs.append([])
        else:
            segs[-1].append(i)
    band = []
    line = []
    for seg in segs:
        if not seg:
            continue
        xy = [((pts[i][0] + pts[i][1]) / 2, i) for i in seg]
        upper = [(x_of(t), y_of(pts[i][2])) for t, i in xy]
        lower = [(x_of(t), y_of(pts[i][3])) for t, i in xy]
        if any(abs(u[1] - lo[1]) >= 1 for u, lo in zip(upper, lower, strict=True)):
            band.append(_rel_path(upper + lower[::-1], "l") + "z")
        if len(upper) == 1:
            line.append(f"M{_c(upper[0][0] - 1.5)} {_c(upper[0][1])}h3")
        else:
            line.append(_rel_path(upper, "l"))
    if band:
        out.append(f'<path d="{"".join(band)}" fill="{SERVING}" fill-opacity="0.16"/>')
    # threshold: a dashed step line through the points' thresholds
    thr = [(p, p[4]) for p in pts if p[4] is not None]
    if thr:
        if len({t for _, t in thr}) == 1:
            d = _hline(ml, ml + pw, y_of(thr[0][1]))
        else:
            d = f"M{_c(x_of(thr[0][0][0]))} {_c(y_of(thr[0][1]))}"
            last = thr[0][1]
            for p, t in thr[1:]:
                if t != last:
                    d += f"H{_c(x_of(p[0]))}V{_c(y_of(t))}"
                    last = t
            d += f"H{_c(x_of(thr[-1][0][1]))}"
        out.append(f'<path d="{d}" fill="none" stroke="{THRESHOLD}" stroke-width="1.1"'
                   ' stroke-dasharray="4 3"/>')
    if line:
        out.append(f'<path class="value" d="{"".join(line)}" fill="none" stroke="{SERVING}"'
                   ' stroke-width="1.4" stroke-linejoin="round"/>')
    hot = _dedupe([(x_of((p[0] + p[1]) / 2), y_of(p[2])) for p in pts if p[6] and p[2] is not None])
    out.append(_dots(hot, EXCEED, 2.4))
    # lane labels and y ticks
    texts = [_t(ml - 34, top + 13, _truncate(str(lane.get("label") or ""), 22), "end",
                f' fill="{TEXT_STRONG}" font-weight="600"')]
    if lane.get("note"):
        texts.append(_t(ml - 34, top + 27, _truncate(str(lane["note"]), 26), "end"))
    texts.append(_t(ml - 4, top + 9, fmt_num(ymax), "end"))
    texts.append(_t(ml - 4, y0, "0", "end"))
    out.append(f'<g fill="{TEXT}">{"".join(texts)}</g>')
    # tooltips over runs of points
    bands = []
    edges = [x_of(p[0]) for p in pts] + ([x_of(pts[-1][1])] if pts else [])
    for a, b in _groups(len(pts), max_tooltips):
        got = [pts[i] for i in range(a, b) if pts[i][2] is not None]
        first, last = fmt_time(pts[a][0]), fmt_time(pts[b - 1][1])
        when = f"{first[5:16]} \u2013 {last[11:16] if first[:10] == last[:10] else last[5:16]}"
        if not got:
            tip = f"{when}\nnot judged"
        else:
            hi = max(got, key=lambda p: p[2])
            judged = sum(p[5] for p in got)
            over = sum(p[6] for p in got)
            tip = (f"{when}: max {fmt_num(hi[2])} (threshold {fmt_num(hi[4])})"
                   + (f", {over} of {judged} windows over" if over else ""))
        xa, xb = edges[a], max(edges[b], edges[a] + 2)
        bands.append((xa, xb - xa, tip))
    out.append(_hover(bands, top, h))
    out.append("</g>")
    return "".join(out)
