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
    "numeric_chart",
    "score_chart",
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


def numeric_chart(
    edges: Sequence[Any] | None,
    baseline_probs: Sequence[Any] | None,
    serving_probs: Sequence[Any] | None,
    *,
    width: int = 560,
    height: int = 210,
    max_ticks: int = 5,
    max_tooltips: int = 20,
) -> str:
    """Baseline vs serving probability per bin of a numeric feature.

    ``baseline_probs``/``serving_probs`` hold ``k + 2`` values: the underflow bin (below
    ``edges[0]``), ``k`` bins ``[edges[i], edges[i+1])`` and the overflow bin (at or above
    ``edges[k]``). The bins are equal-mass in the baseline, so they are drawn by index (equal
    widths) with a few edge values as tick labels; the underflow and overflow bins sit apart
    on a tinted background, as side-by-side bars. Inside, the baseline is a filled step area
    and the serving window a step line. Hover tooltips give ranges and probabilities (runs of
    adjacent bins share one when there are more than ``max_tooltips`` bins, to keep the file
    small). ``serving_probs`` may be None (no serving values in the window).
    """
    edges_f = [_as_float(e) for e in edges] if edges is not None else []
    n = max(len(baseline_probs or ()), len(serving_probs or ()))
    if n < 3:
        return _empty_chart(width, height, "no distribution for this window")
    k = n - 2
    base = _probs(baseline_probs, n) or [0.0] * n
    serv = _probs(serving_probs, n)
    have_edges = len(edges_f) == k + 1

    ml, mr, mt, mb = 46, 10, 24, 34
    pw, ph = width - ml - mr, height - mt - mb
    gap = 8.0
    ow = min(28.0, max(14.0, pw / (k + 2)))  # width of the underflow/overflow slots
    bw = (pw - 2 * ow - 2 * gap) / k
    x_in0 = ml + ow + gap  # left edge of the first interior bin
    x_over = x_in0 + k * bw + gap
    _, ymax, ticks = nice_range(0.0, max(base + (serv or [])), 4)
    y0 = mt + ph

    def y_of(p: float) -> float:
        return y0 - ph * min(p, ymax) / ymax

    def step(vals: Sequence[float], closed: bool) -> str:
        # Relative moves in tenths of a pixel (exact, so no drift); runs of bins of equal
        # height become one segment.
        x = _tenths(x_in0)
        y = _tenths(y0) if closed else _tenths(y_of(vals[1]))
        d = [f"M{_pair(x, y)}"]
        for i in range(k):
            yi = _tenths(y_of(vals[i + 1]))
            if i + 1 < k and _tenths(y_of(vals[i + 2])) == yi:
                continue
            xi = _tenths(x_in0 + (i + 1) * bw)
            d.append(("" if yi == y else f"v{_n10(yi - y)}") + f"h{_n10(xi - x)}")
            x, y = xi, yi
        if closed:
            d.append(f"V{_c(y0)}Z")
        return "".join(d)

    out = [_svg_open(width, height, "distribution of the last window vs baseline")]
    out.append(
        f'<path d="M{_c(ml)} {mt}h{_c(ow)}v{ph}h{_c(-ow)}zM{_c(x_over)} {mt}h{_c(ow)}v{ph}'
        f'h{_c(-ow)}z" fill="{OUTER_BG}"/>'
    )
    out.append(_grid_y(ticks, y_of, ml, width - mr, fmt_pct))
    out.append(
        f'<path d="{step(base, True)}" fill="{BASELINE_FILL}" stroke="{BASELINE_STROKE}"'
        ' stroke-width="0.8"/>'
    )
    half = (ow - 4) / 2
    for xs, idx in ((ml, 0), (x_over, n - 1)):
        yb = y_of(base[idx])
        out.append(
            f'<rect x="{_c(xs + 2)}" y="{_c(yb)}" width="{_c(half)}" height="{_c(y0 - yb)}"'
            f' fill="{BASELINE_FILL}" stroke="{BASELINE_STROKE}" stroke-width="0.8"/>'
        )
        if serv is not None:
            ys = y_of(serv[idx])
            out.append(
                f'<rect x="{_c(xs + 2 + half)}" y="{_c(ys)}" width="{_c(half)}"'
                f' height="{_c(y0 - ys)}" fill="{SERVING}"/>'
            )
    if serv is not None:
        out.append(
            f'<path d="{step(serv, False)}" fill="none" stroke="{SERVING}" stroke-width="1.6"/>'
        )

    # x axis: a few edge values as ticks (bins are equal-mass, so placed by index).
    axis = [_hline(ml, width - mr, y0)]
    texts = []
    ty = y0 + 13
    if have_edges:
        nt = max(2, min(max_ticks, k + 1))
        for i in sorted({round(j * k / (nt - 1)) for j in range(nt)}):
            x = x_in0 + i * bw
            axis.append(f"M{_c(x)} {_c(y0)}v4")
            texts.append(_t(x, ty, fmt_num(edges_f[i]), "middle"))
    texts.append(_t(ml + ow / 2, ty + 12, "under", "middle"))
    texts.append(_t(x_over + ow / 2, ty + 12, "over", "middle"))
    plural = "s" * (k != 1)
    texts.append(_t(x_in0 + k * bw / 2, ty + 12, f"{k} equal-mass baseline bin{plural}", "middle"))
    out.append(f'<path d="{"".join(axis)}" stroke="{AXIS}"/><g fill="{TEXT}">{"".join(texts)}</g>')

    # Tooltips.
    def probs_tip(a: int, b: int) -> str:
        s = f"baseline {fmt_pct(sum(base[a:b]))}"
        return s + (f" \u00b7 serving {fmt_pct(sum(serv[a:b]))}" if serv is not None else "")

    def edge(i: int) -> str:
        return fmt_num(edges_f[i]) if have_edges else "?"

    bands = [
        (ml, ow, f"underflow (< {edge(0)})\n{probs_tip(0, 1)}"),
        (x_over, ow, f"overflow (\u2265 {edge(k)})\n{probs_tip(n - 1, n)}"),
    ]
    for a, b in _groups(k, max_tooltips):
        which = f"bin {a + 1}" if b - a == 1 else f"bins {a + 1}\u2013{b}"
        bands.append(
            (
                x_in0 + a * bw,
                (b - a) * bw,
                f"{which}: [{edge(a)}, {edge(b)})\n{probs_tip(a + 1, b + 1)}",
            )
        )
    out.append(_hover(bands, mt, ph))
    out.append(_legend(ml, 13, serv is not None))
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
    top: int = 20,
    width: int = 560,
    row: int = 20,
) -> str:
    """Grouped horizontal bars (baseline, serving) per category label.

    Shows the ``top`` labels by ``max(baseline, serving)`` probability, largest first; the
    ``<unseen>`` bucket (serving values never seen in training) is always kept when it has
    mass, and highlighted in red. A note tells how many labels were left out. Labels are
    escaped and shortened, with the full label in the row's tooltip.
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
    unseen = [i for i in order[top:] if labels[i] == UNSEEN_LABEL and mass(i) > 0]
    if unseen:
        shown = shown[: top - 1] + unseen[:1]
    hidden = n - len(shown)

    ml, mr, mt = 150, 96, 40
    mb = 26 if hidden else 8
    pw = width - ml - mr
    height = mt + row * len(shown) + mb
    _, xmax, ticks = nice_range(0.0, max(mass(i) for i in shown), 4)

    def x_of(p: float) -> float:
        return ml + pw * min(p, xmax) / xmax

    y_end = mt + row * len(shown)
    out = [_svg_open(width, height, "category frequencies of the last window vs baseline")]
    grid = "".join(f"M{_c(x_of(t))} {mt}V{y_end}" for t in ticks[1:])
    out.append(f'<path d="{grid}" stroke="{GRID}"/>')
    bh = (row - 6) / 2
    bars_b, bars_s, texts, bands = [], [], [], []
    for r, i in enumerate(shown):
        y = mt + r * row
        lab = labels[i]
        is_unseen = lab == UNSEEN_LABEL
        if is_unseen:
            out.append(f'<rect y="{y}" width="{width}" height="{row}" fill="{UNSEEN_BG}"/>')
        style = ""
        if is_unseen:
            style = f' fill="{EXCEED}" font-weight="600"'
        elif lab == OTHER_LABEL:
            style = f' fill="{TEXT}" font-style="italic"'
        texts.append(_t(ml - 6, y + row / 2 + 4, _truncate(lab, 22), "end", style))
        bars_b.append(f"M{ml} {_c(y + 3)}h{_c(x_of(base[i]) - ml)}v{_c(bh)}H{ml}z")
        if serv is not None:
            d = f"M{ml} {_c(y + 3 + bh)}h{_c(x_of(serv[i]) - ml)}v{_c(bh)}H{ml}z"
            if is_unseen:
                out.append(f'<path d="{d}" fill="{EXCEED}"/>')
            else:
                bars_s.append(d)
        val = fmt_pct(base[i]) + (f" \u2192 {fmt_pct(serv[i])}" if serv is not None else "")
        texts.append(_t(width - 4, y + row / 2 + 4, val, "end", f' fill="{TEXT}"'))
        tip = f"{lab}\nbaseline {fmt_pct(base[i])}"
        if serv is not None:
            tip += f" \u00b7 serving {fmt_pct(serv[i])}"
        bands.append((y, tip))
    out.append(
        f'<path d="{"".join(bars_b)}" fill="{BASELINE_FILL}" stroke="{BASELINE_STROKE}"'
        ' stroke-width="0.6"/>'
    )
    if bars_s:
        out.append(f'<path d="{"".join(bars_s)}" fill="{SERVING}"/>')
    out.append(f'<path d="M{ml} {mt - 2}V{y_end}" stroke="{AXIS}"/>')
    texts += [_t(x_of(t), mt - 5, fmt_pct(t), "middle", f' fill="{TEXT}"') for t in ticks[1:]]
    if hidden:
        more = f"+ {hidden} more label{'s' * (hidden != 1)} not shown"
        texts.append(_t(ml, y_end + 17, more, "", f' fill="{TEXT}" font-style="italic"'))
    out.append("<g>" + "".join(texts) + "</g>")
    out.append('<g class="hit" fill="transparent">')
    for y, tip in bands:
        out.append(f'<path d="M0 {y}h{width}v{row}H0z"><title>{_esc(tip)}</title></path>')
    out.append("</g>")
    out.append(_legend(6, 13, serv is not None, bars=True))
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------- scores


def score_chart(
    scores: Sequence[Mapping[str, Any]] | None,
    threshold: Any = None,
    *,
    width: int = 380,
    height: int = 150,
    metric: str = "score",
    max_tooltips: int = 30,
) -> str:
    """A small line chart of a feature's score per evaluated window.

    ``scores`` is a list of ``{"window_end": ms | None, "value": float | None,
    "threshold": float | None}``. x is the window end as time (UTC), or the window's index
    when any ``window_end`` is missing. The threshold (per point, else ``threshold``) is a
    dashed line; values above it get red markers. Null values (window not judged) leave a gap
    in the line and a grey tick on the axis. Hover tooltips list the windows' values (runs of
    adjacent windows share one when there are more than ``max_tooltips``).
    """
    pts = []
    for s in scores or ():
        if not isinstance(s, Mapping):
            continue
        thr = _finite(s.get("threshold"))
        pts.append(
            {
                "t": _finite(s.get("window_end")),
                "v": _finite(s.get("value")),
                "thr": thr if thr is not None else _finite(threshold),
            }
        )
    if not pts:
        return _empty_chart(width, height, "no evaluated windows yet")
    by_time = all(p["t"] is not None for p in pts)
    if by_time:
        pts.sort(key=lambda p: p["t"])
    xs = [p["t"] if by_time else float(i) for i, p in enumerate(pts)]
    n = len(pts)

    ml, mr, mt, mb = 46, 12, 12, 30
    pw, ph = width - ml - mr, height - mt - mb
    x_lo, x_hi = xs[0], xs[-1]
    vals = [p["v"] for p in pts if p["v"] is not None]
    vals += [p["thr"] for p in pts if p["thr"] is not None]
    lo, hi, ticks = nice_range(min([0.0, *vals]), max([0.0, *vals]), 3)
    y0 = mt + ph

    def x_of(x: float) -> float:
        if x_hi == x_lo:
            return ml + pw / 2
        return ml + pw * (x - x_lo) / (x_hi - x_lo)

    def y_of(v: float) -> float:
        return mt + ph * (hi - min(max(v, lo), hi)) / (hi - lo)

    # Labels for times: "HH:MM" within a day, "MM-DD HH:MM" across days; seconds if needed.
    same_day = by_time and fmt_time(x_lo)[:10] == fmt_time(x_hi)[:10]
    seconds = by_time and (0 < x_hi - x_lo < 120_000 or any(x % 60_000 for x in xs))

    def lab(x: float) -> str:
        if not by_time:
            return f"#{int(x) + 1}"
        s = fmt_time(x, with_date=not same_day, seconds=seconds)
        return s if same_day else s[5:]  # drop the year: it is in the axis note

    out = [_svg_open(width, height, f"{metric} per window")]
    out.append(_grid_y(ticks, y_of, ml, width - mr, fmt_num))
    cx = [x_of(x) for x in xs]

    # Threshold: a dashed line (a step line when it changes over time).
    tpts = [(x, p["thr"]) for x, p in zip(cx, pts, strict=True) if p["thr"] is not None]
    if tpts:
        if len({t for _, t in tpts}) == 1:
            d = _hline(ml, width - mr, y_of(tpts[0][1]))
        else:
            d = (
                f"M{_c(ml)} {_c(y_of(tpts[0][1]))}"
                + "".join(f"H{_c(x)}V{_c(y_of(t))}" for x, t in tpts[1:])
                + f"H{_c(width - mr)}"
            )
        out.append(
            f'<path d="{d}" fill="none" stroke="{THRESHOLD}" stroke-width="1.2"'
            ' stroke-dasharray="5 3"/>'
        )
    out.append(f'<path d="{_hline(ml, width - mr, y0)}" stroke="{AXIS}"/>')

    # Value line, broken at nulls.
    segs: list[list[tuple[float, float]]] = [[]]
    for x, p in zip(cx, pts, strict=True):
        if p["v"] is None:
            if segs[-1]:
                segs.append([])
        else:
            segs[-1].append((x, y_of(p["v"])))
    d = "".join(_rel_path(_thin(s), "l") for s in segs if len(s) > 1)
    if d:
        out.append(
            f'<path d="{d}" fill="none" stroke="{SERVING}" stroke-width="1.6"'
            ' stroke-linejoin="round"/>'
        )
    over = [p["v"] is not None and p["thr"] is not None and p["v"] > p["thr"] for p in pts]
    lone = {s[0] for s in segs if len(s) == 1}
    plain = [
        (x, y_of(p["v"]))
        for i, (x, p) in enumerate(zip(cx, pts, strict=True))
        if p["v"] is not None
        and not over[i]
        and (n <= 30 or i == n - 1 or (x, y_of(p["v"])) in lone)
    ]
    out.append(_dots(_dedupe(plain), SERVING, 2.4))
    hot = [(x, y_of(p["v"])) for x, p, o in zip(cx, pts, over, strict=True) if o]
    hot = _dedupe(_thin(hot, 3.0) if len(hot) > pw / 2 else hot)
    out.append(_dots(hot, EXCEED, 3.2, halo=len(hot) <= 30))
    nulls = "".join(
        f"M{_c(x)} {_c(y0 - 3)}v6"
        for x, _ in _dedupe([(x, y0) for x, p in zip(cx, pts, strict=True) if p["v"] is None])
    )
    if nulls:
        out.append(f'<path d="{nulls}" stroke="{AXIS}" stroke-width="1.5"/>')

    # x labels: first and last (and the middle when there is room).
    ty = y0 + 14
    texts = []
    if x_hi == x_lo:
        texts.append(_t(ml + pw / 2, ty, lab(x_lo), "middle"))
    else:
        marks = [(x_lo, "start"), (x_hi, "end")]
        if pw >= 260 and n > 2:
            marks.insert(1, ((x_lo + x_hi) / 2, "middle"))
        texts += [_t(x_of(x), ty, lab(x), "" if a == "start" else a) for x, a in marks]
    note = "window index"
    if by_time:
        d0, d1 = fmt_time(x_lo)[:10], fmt_time(x_hi)[:10]
        note = f"window end, {d0}" + ("" if same_day else f" \u2013 {d1}") + " (UTC)"
    texts.append(_t(ml + pw / 2, ty + 13, note, "middle"))
    out.append(f'<g fill="{TEXT}">{"".join(texts)}</g>')

    # Tooltips: bands around each window (or run of windows).
    def val(i: int) -> str:
        v = pts[i]["v"]
        return "not judged" if v is None else fmt_num(v)

    def vals_text(a: int, b: int) -> str:
        if b - a <= 6:
            return ", ".join(val(i) for i in range(a, b))
        got = [pts[i]["v"] for i in range(a, b) if pts[i]["v"] is not None]
        s = f"{b - a} windows"
        if got:
            s += f": min {fmt_num(min(got))}, max {fmt_num(max(got))}"
        if len(got) < b - a:
            s += f", {b - a - len(got)} not judged"
        return s

    bounds = [ml] + [(cx[i] + cx[i + 1]) / 2 for i in range(n - 1)] + [width - mr]
    bands = []
    for a, b in _groups(n, max_tooltips):
        if b - a == 1:
            tip = f"{lab(xs[a])}: {val(a)}"
        else:
            tip = f"{lab(xs[a])} to {lab(xs[b - 1])}\n{vals_text(a, b)}"
        thr = pts[b - 1]["thr"]
        if thr is not None:
            n_over = sum(over[a:b])
            if n_over:
                lead = f"{n_over} " if b - a > 1 else ""
                tip += f"\n{lead}over threshold {fmt_num(thr)}"
            else:
                tip += f"\nthreshold {fmt_num(thr)}"
        bands.append((bounds[a], bounds[b] - bounds[a], tip))
    out.append(_hover(bands, mt, ph))
    out.append("</svg>")
    return "".join(out)
