"""Small inline SVG charts for the printable pages (scan reports, area models), drawn on the server.

Hand-written on purpose: the report must print and open offline, with no script and
no CDN, and a bar chart is a few rectangles — a charting library (matplotlib, plotly)
would be a heavy dependency for that. Text is escaped; sizes are in CSS pixels.
"""

from __future__ import annotations

import math
from html import escape

from markupsafe import Markup

_FONT = 'font-family="sans-serif" font-size="11"'


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 2.5, 5 or 10 × 10^k)."""
    if not value > 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= value * (1 - 1e-9))


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.2g}"


def bar_chart(labels: list[str], values: list[float], *, title: str, x_label: str, y_label: str,
              width: int = 560, height: int = 220, color: str = "#2e7d32") -> Markup:
    """Vertical bars, one per label (e.g. histogram classes), with a y axis and 4 grid lines."""
    left, right, top, bottom = 48, 10, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    vmax = _nice_max(max(values, default=0))
    n = max(len(values), 1)
    bw = plot_w / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="14" {_FONT} font-weight="bold">{escape(title)}</text>']
    for i in range(5):
        v = vmax * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" {_FONT} text-anchor="end">{_fmt(v)}</text>')
    every = max(1, n // 12)
    for i, (label, v) in enumerate(zip(labels, values)):
        h = plot_h * v / vmax
        x = left + i * bw
        parts.append(f'<rect x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" width="{max(bw - 2, 1):.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{escape(label)}: {_fmt(v)}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{top + plot_h + 14}" {_FONT} '
                         f'text-anchor="middle">{escape(label)}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" {_FONT} text-anchor="middle">'
                 f'{escape(x_label)}</text>'
                 f'<text x="12" y="{top + plot_h / 2}" {_FONT} text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_h / 2})">{escape(y_label)}</text></svg>')
    return Markup("".join(parts))


def profile_chart(heights: list[float], values: list[float], *, title: str, x_label: str, y_label: str,
                  width: int = 260, height: int = 240, color: str = "#1b5e20") -> Markup:
    """Horizontal bars stacked by height (a vertical profile, e.g. leaf area density)."""
    left, right, top, bottom = 40, 12, 24, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    vmax = _nice_max(max((v for v in values if v == v), default=0))
    n = max(len(values), 1)
    bh = plot_h / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="14" {_FONT} font-weight="bold">{escape(title)}</text>',
             f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#999"/>']
    every = max(1, n // 8)
    for i, (z, v) in enumerate(zip(heights, values)):
        y = top + plot_h - (i + 1) * bh
        w = 0.0 if v != v else plot_w * v / vmax          # NaN (no return reached the layer): no bar
        parts.append(f'<rect x="{left}" y="{y + 0.5:.1f}" width="{w:.1f}" height="{max(bh - 1, 0.5):.1f}" '
                     f'fill="{color}"><title>{_fmt(z)} m: {v:.3f}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{left - 4}" y="{y + bh / 2 + 4:.1f}" {_FONT} text-anchor="end">'
                         f'{_fmt(z)}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{top + plot_h + 14}" {_FONT} text-anchor="end">{_fmt(vmax)}</text>'
                 f'<text x="{left}" y="{top + plot_h + 14}" {_FONT}>0</text>'
                 f'<text x="{left + plot_w / 2}" y="{height - 6}" {_FONT} text-anchor="middle">{escape(x_label)}</text>'
                 f'<text x="10" y="{top + plot_h / 2}" {_FONT} text-anchor="middle" '
                 f'transform="rotate(-90 10 {top + plot_h / 2})">{escape(y_label)}</text></svg>')
    return Markup("".join(parts))


def scatter_chart(x: list[float], y: list[float], *, title: str, x_label: str, y_label: str,
                  identity: bool = False, zero_line: bool = False, width: int = 320, height: int = 300,
                  color: str = "#2e7d32") -> Markup:
    """Points (e.g. observed against predicted) on shared-looking axes, with the 1:1 line
    (`identity`, axes then equal) or the y = 0 line (`zero_line`, residuals)."""
    left, right, top, bottom = 48, 12, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    pairs = [(a, b) for a, b in zip(x, y) if a == a and b == b]
    xs, ys = [a for a, _ in pairs] or [0.0], [b for _, b in pairs] or [0.0]
    if identity:
        lo, hi = min(min(xs), min(ys), 0.0), _nice_max(max(max(xs), max(ys)))
        x0, x1, y0, y1 = lo, hi, lo, hi
    else:
        x0, x1 = min(min(xs), 0.0), _nice_max(max(xs))
        span = max(abs(min(ys)), abs(max(ys)), 1e-9)
        y1 = _nice_max(span)
        y0 = -y1 if zero_line else min(min(ys), 0.0)
    sx = lambda v: left + plot_w * (v - x0) / ((x1 - x0) or 1)                      # noqa: E731
    sy = lambda v: top + plot_h - plot_h * (v - y0) / ((y1 - y0) or 1)              # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="14" {_FONT} font-weight="bold">{escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for i in range(5):
        vx, vy = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{sx(vx):.1f}" y="{top + plot_h + 14}" {_FONT} text-anchor="middle">{_fmt(vx)}</text>'
                     f'<text x="{left - 4}" y="{sy(vy) + 4:.1f}" {_FONT} text-anchor="end">{_fmt(vy)}</text>')
    if identity:
        parts.append(f'<line class="one-to-one" x1="{sx(x0):.1f}" y1="{sy(y0):.1f}" x2="{sx(x1):.1f}" '
                     f'y2="{sy(y1):.1f}" stroke="#999" stroke-dasharray="4 3"/>')
    if zero_line:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" stroke="#999" '
                     f'stroke-dasharray="4 3"/>')
    for a, b in pairs:
        parts.append(f'<circle class="point" cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="3" fill="{color}" '
                     f'fill-opacity="0.7"><title>{_fmt(a)}, {_fmt(b)}</title></circle>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" {_FONT} text-anchor="middle">{escape(x_label)}</text>'
                 f'<text x="12" y="{top + plot_h / 2}" {_FONT} text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_h / 2})">{escape(y_label)}</text></svg>')
    return Markup("".join(parts))
