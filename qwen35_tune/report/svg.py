"""Inline SVG charts for the run report: line charts over steps and a stacked histogram.

Written by hand rather than with matplotlib: the page must stay one self-contained file that a browser draws
crisply at any size, with a hover read-out (matplotlib's SVG has no interactivity, embeds glyphs as paths and costs
a second of import); a chart here is a few kilobytes of markup plus its points as JSON for the read-out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 12, 40
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#6b7280")


@dataclass(frozen=True)
class Line:
    """One series of a line chart: its label, its (x, y) points and how it is drawn."""

    label: str
    points: list[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9 and len(ticks) < 50:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = first + step * len(ticks)
    return ticks


def fmt(value: float) -> str:
    """A number as a person reads it on an axis or in a table: 0.005, 1.2e-05, 12.5k, 3.1M."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 1e9:
        return f"{value:.3g}"
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    if magnitude >= 1e-3:
        return f"{value:.4g}"
    return f"{value:.2e}".replace("e-0", "e-")


def _span(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if low == high:
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


def line_chart(lines: list[Line], *, title: str, chart_id: str, x_label: str = "step", y_label: str = "") -> Markup:
    """An SVG line chart (``<figure>`` with the chart and its points as JSON for the hover read-out)."""
    lines = [line for line in lines if line.points]
    if not lines:
        return Markup('<figure class="chart empty" id="{}"><figcaption>{}</figcaption><p class="note">nothing '
                      'logged</p></figure>').format(chart_id, title)
    xs = [x for line in lines for x, _ in line.points]
    ys = [y for line in lines for _, y in line.points]
    x0, x1 = (min(xs), max(xs)) if min(xs) != max(xs) else (min(xs) - 1, max(xs) + 1)
    y0, y1 = _span(ys)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>']
    for tick in nice_ticks(y0, y1):
        y = py(tick)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(tick))}</text>')
    for tick in nice_ticks(x0, x1, 6):
        x = px(tick)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + plot_h}"/>'
                     f'<text class="tick" x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
                     f'{escape(fmt(tick))}</text>')
    parts.append(f'<text class="axis" x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    if y_label:
        parts.append(f'<text class="axis" transform="translate(14 {TOP + plot_h / 2}) rotate(-90)" '
                     f'text-anchor="middle">{escape(y_label)}</text>')
    for line in lines:
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in line.points)
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        parts.append(f'<polyline class="series" fill="none" stroke="{line.color}"{dash} points="{coords}"/>')
        if len(line.points) <= 40:
            parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{line.color}"/>'
                      for x, y in line.points]
    parts.append(f'<line class="cursor" x1="0" x2="0" y1="{TOP}" y2="{TOP + plot_h}" visibility="hidden"/>')
    data = {"x0": x0, "x1": x1, "left": LEFT, "width": plot_w, "total": WIDTH, "xlabel": x_label,
            "series": [{"label": line.label, "color": line.color, "points": line.points} for line in lines]}
    return Markup('<figure class="chart" id="{id}"><figcaption>{title}</figcaption>{legend}'
                  '<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{title}">{body}</svg>'
                  '<div class="readout" hidden></div>'
                  '<script type="application/json" class="chart-data">{data}</script></figure>').format(
        id=chart_id, title=title, legend=_legend(lines), w=WIDTH, h=HEIGHT, body=Markup("".join(parts)),
        data=_json(data))


def _legend(lines: list[Line]) -> Markup:
    """The series' names and colours above the chart, as HTML so that long names wrap instead of overflowing."""
    items = [Markup('<span><i class="swatch{}" style="border-color: {}"></i>{}</span>').format(
        " dashed" if line.dashed else "", line.color, line.label) for line in lines]
    return Markup('<div class="legend-row">{}</div>').format(Markup("").join(items))


def _json(data) -> Markup:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` as \\u escapes (a label cannot close the element)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def histogram(groups: list[tuple[str, list[int]]], bin_width: int, *, title: str, chart_id: str,
              marker: tuple[float, str] | None = None) -> Markup:
    """Stacked bars: one colour per group (card), bins ``[i*bin_width, (i+1)*bin_width)``; ``marker`` draws a
    dashed vertical line (e.g. train.max_length) with its label."""
    bins = max((len(counts) for _, counts in groups), default=0)
    if not bins:
        return Markup('<figure class="chart empty" id="{}"><figcaption>{}</figcaption><p class="note">no rows'
                      '</p></figure>').format(chart_id, title)
    totals = [sum(counts[i] for _, counts in groups if i < len(counts)) for i in range(bins)]
    x1 = bins * bin_width
    if marker and x1 < marker[0] <= x1 * 1.5:
        x1 = marker[0] * 1.02
    elif marker and marker[0] > x1:  # far to the right of every row: named in the caption, not drawn
        title, marker = f"{title}; {marker[1]} is off the chart, right of every row", None
    y1 = max(totals) * 1.08 or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + x / x1 * plot_w

    def py(y: float) -> float:
        return TOP + (1 - y / y1) * plot_h

    parts = [f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>']
    for tick in nice_ticks(0, y1):
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py(tick):.1f}" y2="{py(tick):.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">'
                     f'{escape(fmt(tick))}</text>')
    for tick in nice_ticks(0, x1, 6):
        parts.append(f'<text class="tick" x="{px(tick):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
                     f'{escape(fmt(tick))}</text>')
    parts.append(f'<text class="axis" x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">tokens per row'
                 '</text><text class="axis" transform="translate(14 {0}) rotate(-90)" text-anchor="middle">rows</text>'
                 .format(TOP + plot_h / 2))
    bar_w = max(plot_w * bin_width / x1 - 1, 1)
    for i in range(bins):
        base = 0
        for g, (name, counts) in enumerate(groups):
            n = counts[i] if i < len(counts) else 0
            if not n:
                continue
            y_top = py(base + n)
            what = f"{escape(name)}: {n} rows of {i * bin_width}-{(i + 1) * bin_width - 1} tokens"
            parts.append(f'<rect class="bar" x="{px(i * bin_width):.1f}" y="{y_top:.1f}" width="{bar_w:.1f}" '
                         f'height="{py(base) - y_top:.1f}" fill="{PALETTE[g % len(PALETTE)]}"><title>{what}</title>'
                         '</rect>')
            base += n
    if marker:
        x = px(marker[0])
        parts.append(f'<line class="marker" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + plot_h}"/>'
                     f'<text class="tick marker-label" x="{x - 4:.1f}" y="{TOP + 12}" text-anchor="end">'
                     f'{escape(marker[1])}</text>')
    legend = _legend([Line(name, [(0, 0)], PALETTE[g % len(PALETTE)]) for g, (name, _) in enumerate(groups)])
    return Markup('<figure class="chart" id="{id}"><figcaption>{title}</figcaption>{legend}'
                  '<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{title}">{body}</svg>'
                  '</figure>').format(id=chart_id, title=title, legend=legend, w=WIDTH, h=HEIGHT,
                                      body=Markup("".join(parts)))
