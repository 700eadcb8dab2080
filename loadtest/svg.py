"""Small SVG charts as strings: line charts (linear or "nines" x axis), scatter, bar charts.

Written here rather than pulled from a plotting library because the report must be one
self-contained file that opens offline, and these few shapes are all it draws. Every chart is
an ``<svg class="plot">`` with its data as ``<path class="series">``, ``<circle class="point">``
or ``<rect class="bar">`` elements (the report test counts them).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

W, H = 640, 300
PAD_L, PAD_R, PAD_T, PAD_B = 64, 150, 24, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")

Series = tuple[str, Sequence[tuple[float, float]]]


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3g}"


def _frame(title: str, x_label: str, y_label: str, body: str) -> str:
    t = html.escape(title)
    return (
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" '
        f'width="{W}" height="{H}" role="img" aria-label="{t}">'
        f'<text x="{W / 2 - PAD_R / 2}" y="15" text-anchor="middle" font-weight="bold">{t}</text>'
        f'<text x="{PAD_L + (W - PAD_L - PAD_R) / 2}" y="{H - 6}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
        f'<text transform="translate(14 {PAD_T + (H - PAD_T - PAD_B) / 2}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(y_label)}</text>{body}</svg>'
    )


def line_chart(
    title: str,
    series: Sequence[Series],
    x_label: str,
    y_label: str,
    *,
    nines_x: bool = False,
    markers: bool = False,
    lines: bool = True,
) -> str:
    """Lines through each series' points. ``nines_x``: x is a percentile drawn on the
    -log10(1 - p) scale (50, 90, 99, 99.9 ... equally spaced). ``lines=False``: a scatter,
    points only (for samples with no order between them, such as latency by concurrency)."""

    def fx(x: float) -> float:
        return -math.log10(max(1e-6, 1 - min(x, 99.9999) / 100)) if nines_x else x

    pts = [(fx(x), y) for _, s in series for x, y in s]
    if not pts:
        return _frame(title, x_label, y_label, '<text x="200" y="150">no data</text>')
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y1 = max(p[1] for p in pts) * 1.05 or 1.0
    x1 = x1 if x1 > x0 else x0 + 1
    sx = lambda x: PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)  # noqa: E731
    sy = lambda y: H - PAD_B - y / y1 * (H - PAD_T - PAD_B)  # noqa: E731
    body = [_axes(sx, sy, x0, x1, y1, nines_x)]
    for i, (name, s) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        coords = [(sx(fx(x)), sy(y)) for x, y in s]
        if coords and lines:
            d = "M" + " L".join(f"{a:.1f},{b:.1f}" for a, b in coords)
            body.append(
                f'<path class="series" d="{d}" fill="none" stroke="{colour}" '
                f'stroke-width="1.8"><title>{html.escape(name)}</title></path>'
            )
        if coords and (markers or not lines or len(coords) == 1):
            body += [
                f'<circle class="point" cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}" '
                f'fill-opacity="0.7"/>'
                for a, b in coords
            ]
        body.append(_legend(i, name, colour))
    return _frame(title, x_label, y_label, "".join(body))


def _axes(  # noqa: ANN001
    sx, sy, x0: float, x1: float, y1: float, nines_x: bool, *, x_ticks: bool = True
) -> str:
    """Both axes, y ticks from 0 to ``y1``; x ticks over [x0, x1] unless ``x_ticks`` is False
    (a bar chart's bars are categories, labelled by the bars themselves)."""
    parts = [
        f'<g class="axes" stroke="#999" font-size="11">'
        f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}"/>'
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}"/>'
    ]
    for y in _ticks(0.0, y1):
        parts.append(
            f'<text x="{PAD_L - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" '
            f'stroke="none">{_fmt(y)}</text>'
            f'<line x1="{PAD_L}" y1="{sy(y):.1f}" x2="{W - PAD_R}" y2="{sy(y):.1f}" '
            f'stroke="#eee"/>'
        )
    xs: list[tuple[float, str]] = []
    if x_ticks and nines_x:
        xs = [(float(n), f"{100 - 100 / 10**n:g}") for n in range(int(x1) + 1)]
    elif x_ticks:
        xs = [(x, _fmt(x)) for x in _ticks(x0, x1)]
    for x, label in xs:
        if x0 <= x <= x1:
            parts.append(
                f'<text x="{sx(x):.1f}" y="{H - PAD_B + 16}" text-anchor="middle" '
                f'stroke="none">{label}</text>'
            )
    parts.append("</g>")
    return "".join(parts)


def _legend(i: int, name: str, colour: str) -> str:
    y = PAD_T + 14 * i + 6
    return (
        f'<rect x="{W - PAD_R + 10}" y="{y - 8}" width="10" height="10" fill="{colour}"/>'
        f'<text x="{W - PAD_R + 24}" y="{y + 1}" font-size="11">{html.escape(name)}</text>'
    )


def bar_chart(title: str, bars: list[tuple[str, float]], x_label: str) -> str:
    """One horizontal bar per (label, value), labels on the left: stage names such as
    ``edge-connect`` side by side under upright bars ran into each other."""
    if not bars:
        return _frame(title, "", "", '<text x="200" y="150">no data</text>')
    top = max(v for _, v in bars) * 1.1 or 1.0
    left, right = 120, W - 40
    band = (H - PAD_T - PAD_B) / len(bars)
    sx = lambda v: left + v / top * (right - left)  # noqa: E731
    body = [
        f'<g class="axes" stroke="#999" font-size="11">'
        f'<line x1="{left}" y1="{PAD_T}" x2="{left}" y2="{H - PAD_B}"/>'
        f'<line x1="{left}" y1="{H - PAD_B}" x2="{right}" y2="{H - PAD_B}"/>'
    ]
    for v in _ticks(0.0, top):
        body.append(
            f'<text x="{sx(v):.1f}" y="{H - PAD_B + 16}" text-anchor="middle" '
            f'stroke="none">{_fmt(v)}</text>'
            f'<line x1="{sx(v):.1f}" y1="{PAD_T}" x2="{sx(v):.1f}" y2="{H - PAD_B}" '
            f'stroke="#eee"/>'
        )
    body.append("</g>")
    for i, (label, value) in enumerate(bars):
        y = PAD_T + i * band
        body.append(
            f'<rect class="bar" x="{left}" y="{y + band * 0.15:.1f}" '
            f'width="{sx(value) - left:.1f}" height="{band * 0.7:.1f}" '
            f'fill="{COLOURS[i % len(COLOURS)]}">'
            f"<title>{html.escape(label)}: {value:.3f}</title></rect>"
            f'<text x="{left - 6}" y="{y + band / 2 + 4:.1f}" text-anchor="end" '
            f'font-size="11">{html.escape(label)}</text>'
        )
    return _frame(title, x_label, "", "".join(body))
