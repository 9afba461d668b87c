"""Charts as inline SVG: a line chart and a grouped bar chart, nothing else.

The report page must open anywhere without a network, so it draws its own
charts: a few hundred lines of SVG text per chart, no JavaScript. Every chart is
an `<svg class="chart" data-chart="<name>">` and every data mark (a line, a
point, a bar) carries `class="mark"`, which is what the page test measures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

# Colour-blind-safe (Okabe-Ito), one per series in the order given.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]

WIDTH, HEIGHT = 460, 260
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 30, 64  # the legend sits under the x axis


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round numbers spanning [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.1e}"


class _Frame:
    """Maps data to pixels inside the plot area and draws the axes."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float], log_y: bool = False):
        self.log_y = log_y
        (self.x0, self.x1), (y0, y1) = x_range, y_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1
        self.y0, self.y1 = (math.log10(y0), math.log10(y1)) if log_y else (y0, y1)
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)

    def py(self, y: float) -> float:
        value = math.log10(max(y, 1e-12)) if self.log_y else y
        return HEIGHT - BOTTOM - (value - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)

    def y_ticks(self) -> list[float]:
        if self.log_y:
            return [10.0 ** e for e in range(math.floor(self.y0), math.ceil(self.y1) + 1)
                    if self.y0 - 1e-9 <= e <= self.y1 + 1e-9]
        return [t for t in _ticks(self.y0, self.y1) if self.y0 - 1e-9 <= t <= self.y1 + 1e-9]

    def axes(self, x_label: str, y_label: str, x_ticks: Sequence[tuple[float, str]]) -> list[str]:
        base = HEIGHT - BOTTOM
        out = [f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}" stroke="#555"/>',
               f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#555"/>']
        for value in self.y_ticks():
            y = self.py(value)
            out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e5e5e5"/>')
            out.append(f'<text x="{LEFT - 5}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_label(value)}</text>')
        for x, text in x_ticks:
            out.append(f'<text x="{x:.1f}" y="{base + 15}" text-anchor="middle" font-size="11">{escape(text)}</text>')
        out.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{base + 31}" text-anchor="middle" '
                   f'font-size="12">{escape(x_label)}</text>')
        out.append(f'<text transform="translate(13,{(TOP + base) / 2}) rotate(-90)" text-anchor="middle" '
                   f'font-size="12">{escape(y_label)}</text>')
        return out


def _legend(names: Sequence[str]) -> list[str]:
    """Swatches under the x axis, wrapped onto a second row when they do not fit."""
    out, x, y = [], LEFT, HEIGHT - BOTTOM + 46
    for i, name in enumerate(names):
        width = 24 + 6.5 * len(name)
        if x > LEFT and x + width > WIDTH - RIGHT:
            x, y = LEFT, y + 15
        colour = PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{x:.0f}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{x + 14:.0f}" y="{y}" font-size="11">{escape(name)}</text>')
        x += width
    return out


def _svg(name: str, title: str, body: list[str]) -> str:
    head = (f'<svg class="chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" '
            f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{escape(title)}">')
    heading = f'<text x="{LEFT}" y="18" font-size="13" font-weight="600">{escape(title)}</text>'
    return "\n".join([head, heading, *body, "</svg>"])


def line_chart(name: str, title: str, series: Mapping[str, Sequence[tuple[float, float]]], x_label: str,
               y_label: str, y_range: tuple[float, float] | None = None, log_y: bool = False,
               integer_x: bool = False) -> str:
    """One line (with a dot per point) per series; empty series are left out."""
    series = {k: list(v) for k, v in series.items() if v}
    xs = [x for points in series.values() for x, _ in points] or [0.0, 1.0]
    ys = [y for points in series.values() for _, y in points] or [0.0, 1.0]
    if y_range is None:
        y_range = (min(ys), max(ys))
        if log_y:
            y_range = (10 ** math.floor(math.log10(max(min(ys), 1e-12))), 10 ** math.ceil(math.log10(max(ys))))
        else:
            pad = (y_range[1] - y_range[0]) * 0.08 or 0.05
            y_range = (y_range[0] - pad, y_range[1] + pad)
    frame = _Frame((min(xs), max(xs)), y_range, log_y)
    ticks = ([(frame.px(x), str(int(x))) for x in sorted(set(xs))] if integer_x
             else [(frame.px(t), _label(t)) for t in _ticks(min(xs), max(xs)) if min(xs) <= t <= max(xs)])
    body = frame.axes(x_label, y_label, ticks)
    for i, (label, points) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in points)
        body.append(f'<polyline class="mark" data-series="{escape(label)}" points="{path}" fill="none" '
                    f'stroke="{colour}" stroke-width="2"/>')
        if len(points) <= 40:
            for x, y in points:
                body.append(f'<circle class="mark" cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="3" '
                            f'fill="{colour}"><title>{escape(label)}: {_label(x)}, {y:.4g}</title></circle>')
    body += _legend(list(series))
    return _svg(name, title, body)


def bar_chart(name: str, title: str, groups: Sequence[str], series: Mapping[str, Sequence[float]],
              y_label: str, y_range: tuple[float, float] | None = None) -> str:
    """Grouped bars: one group per entry of `groups`, one bar per series in each."""
    values = [v for vs in series.values() for v in vs] or [0.0]
    lo, hi = y_range or (min(0.0, min(values)), max(values) * 1.1 or 1.0)
    frame = _Frame((0, max(len(groups), 1)), (lo, hi))
    slot = (WIDTH - LEFT - RIGHT) / max(len(groups), 1)
    width = slot * 0.8 / max(len(series), 1)
    body = frame.axes("", y_label, [(LEFT + slot * (g + 0.5), name_) for g, name_ in enumerate(groups)])
    zero = frame.py(max(lo, 0.0))
    for i, (label, vs) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        for g, value in enumerate(vs):
            x = LEFT + slot * g + slot * 0.1 + width * i
            top = frame.py(value)
            y, h = min(top, zero), max(abs(zero - top), 1.0)  # a zero still shows as a hairline
            body.append(f'<rect class="mark" data-series="{escape(label)}" x="{x:.1f}" y="{y:.1f}" '
                        f'width="{width - 2:.1f}" height="{h:.1f}" fill="{colour}">'
                        f'<title>{escape(groups[g])}, {escape(label)}: {value:.4g}</title></rect>')
    body += _legend(list(series))
    return _svg(name, title, body)
