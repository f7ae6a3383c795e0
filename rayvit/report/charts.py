"""Small SVG charts for the HTML report (no plotting library): bars, a histogram and a
matrix heat map. Each returns an SVG document as text."""

from __future__ import annotations

from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np

WIDTH, HEIGHT, PAD = 560, 300, 64
FONT = 'font-family="sans-serif" font-size="12"'


def _svg(body: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><rect width="100%" height="100%" fill="white"/>{body}</svg>')


def _number(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _axes(title: str, ylabel: str, top: float) -> str:
    x0, y0, y1 = PAD, HEIGHT - PAD, PAD / 2
    ticks = "".join(
        f'<line x1="{x0 - 4}" x2="{WIDTH - 8}" y1="{y}" y2="{y}" stroke="#ddd"/>'
        f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end" {FONT}>{_number(v)}</text>'
        for v, y in ((top * f, y0 - (y0 - y1) * f) for f in (0, 0.25, 0.5, 0.75, 1)))
    return (ticks + f'<line x1="{x0}" x2="{x0}" y1="{y1}" y2="{y0}" stroke="black"/>'
            f'<line x1="{x0}" x2="{WIDTH - 8}" y1="{y0}" y2="{y0}" stroke="black"/>'
            f'<text x="{WIDTH / 2}" y="14" text-anchor="middle" {FONT} font-weight="bold">{escape(title)}</text>'
            f'<text x="12" y="{HEIGHT / 2}" transform="rotate(-90 12 {HEIGHT / 2})" text-anchor="middle" '
            f'{FONT}>{escape(ylabel)}</text>')


def bars(values: Sequence[float], labels: Sequence[str], title: str, ylabel: str,
         colours: Sequence[str] | None = None, line: Sequence[float] | None = None) -> str:
    """A bar per value (``colours``: one CSS colour per bar), with an optional polyline
    (e.g. the cumulative explained variance) on the same scale."""
    values = [float(v) for v in values]
    top = max(values + list(line or []) + [1e-12])
    n = max(len(values), 1)
    x0, y0, y1 = PAD, HEIGHT - PAD, PAD / 2
    step = (WIDTH - 8 - x0) / n
    body = [_axes(title, ylabel, top)]
    for i, (v, label) in enumerate(zip(values, labels)):
        h = (y0 - y1) * v / top
        fill = colours[i] if colours else "#4477aa"
        body.append(f'<rect x="{x0 + i * step + step * 0.1:.1f}" y="{y0 - h:.1f}" width="{step * 0.8:.1f}" '
                    f'height="{h:.1f}" fill="{fill}"><title>{escape(label)}: {v:.4g}</title></rect>'
                    f'<text x="{x0 + (i + 0.5) * step:.1f}" y="{y0 + 16}" text-anchor="middle" {FONT}>'
                    f'{escape(label)}</text>')
    if line:
        points = " ".join(f"{x0 + (i + 0.5) * step:.1f},{y0 - (y0 - y1) * v / top:.1f}" for i, v in enumerate(line))
        body.append(f'<polyline points="{points}" fill="none" stroke="#cc6677" stroke-width="2"/>')
    return _svg("".join(body))


def histogram(values: np.ndarray, title: str, xlabel: str, bins: int = 40,
              value_range: tuple[float, float] | None = None) -> str:
    """Histogram of ``values`` (finite ones), counts on the y axis."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(values, bins=bins, range=value_range)
    top = max(int(counts.max()) if counts.size else 0, 1)
    x0, y0, y1 = PAD, HEIGHT - PAD, PAD / 2
    step = (WIDTH - 8 - x0) / bins
    body = [_axes(title, "pixels", top)]
    for i, c in enumerate(counts):
        h = (y0 - y1) * c / top
        body.append(f'<rect x="{x0 + i * step:.1f}" y="{y0 - h:.1f}" width="{step:.1f}" height="{h:.1f}" '
                    f'fill="#4477aa" stroke="white" stroke-width="0.5"><title>{edges[i]:.3g} to '
                    f'{edges[i + 1]:.3g}: {c}</title></rect>')
    for f in (0, 0.5, 1):
        v = edges[0] + f * (edges[-1] - edges[0])
        body.append(f'<text x="{x0 + f * bins * step:.1f}" y="{y0 + 16}" text-anchor="middle" {FONT}>{v:.3g}</text>')
    body.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle" {FONT}>{escape(xlabel)}</text>')
    return _svg("".join(body))


def matrix(counts: Sequence[Sequence[float]], labels: Sequence[str], title: str,
           rows: str = "true", cols: str = "predicted") -> str:
    """A heat map of a square matrix (a confusion matrix), each cell with its count; the
    shade is the share of the row (recall)."""
    m = np.asarray(counts, dtype=np.float64)
    n = max(len(labels), 1)
    cell = min(48, 360 // n)
    left, top = 110, 40
    width, height = left + n * cell + 20, top + n * cell + 60
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    body = [f'<text x="{width / 2}" y="16" text-anchor="middle" {FONT} font-weight="bold">{escape(title)}</text>']
    for i in range(n):
        for j in range(n):
            shade = int(255 - 200 * share[i, j])
            ink = "white" if share[i, j] > 0.55 else "black"
            x, y = left + j * cell, top + i * cell
            body.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="rgb({shade},{shade},255)" '
                        f'stroke="white"/><text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" '
                        f'{FONT} fill="{ink}">{int(m[i, j])}</text>')
        body.append(f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end" {FONT}>'
                    f'{escape(str(labels[i]))}</text>')
        body.append(f'<text x="{left + i * cell + cell / 2}" y="{top + n * cell + 16}" text-anchor="middle" '
                    f'{FONT}>{escape(str(labels[i]))}</text>')
    body.append(f'<text x="{left + n * cell / 2}" y="{top + n * cell + 40}" text-anchor="middle" {FONT}>'
                f'{escape(cols)}</text><text x="14" y="{top + n * cell / 2}" text-anchor="middle" {FONT} '
                f'transform="rotate(-90 14 {top + n * cell / 2})">{escape(rows)}</text>')
    return _svg("".join(body), width, height)
