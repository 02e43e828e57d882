"""A dependency-free SVG chart: wall time and output size per method, side by side."""

from __future__ import annotations

from html import escape

from benchmarks.measure import Result

_ROW = 26
_LABEL = 300
_PANEL = 300
_GAP = 60


def _bars(values: list[float | None], x0: int, y0: int, color: str, fmt: str) -> list[str]:
    top = max((v for v in values if v is not None), default=1.0) or 1.0
    out = []
    for i, value in enumerate(values):
        y = y0 + i * _ROW
        if value is None:
            out.append(f'<text x="{x0 + 4}" y="{y + 16}" font-size="12" fill="#888">n/a</text>')
            continue
        width = max(1.0, _PANEL * value / top)
        out.append(
            f'<rect x="{x0}" y="{y + 4}" width="{width:.1f}" height="{_ROW - 8}" fill="{color}"/>'
        )
        out.append(
            f'<text x="{x0 + width + 4:.1f}" y="{y + 17}" font-size="12">'
            f"{escape(fmt.format(value))}</text>"
        )
    return out


def render(results: list[Result], title: str) -> str:
    """SVG markup with one row per method: wall seconds (left) and output MB (right)."""
    height = 60 + _ROW * len(results) + 20
    width = _LABEL + 2 * (_PANEL + 70) + _GAP
    x_time = _LABEL
    x_size = _LABEL + _PANEL + 70 + _GAP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="{x_time}" y="48" font-size="13">wall time (s, median)</text>',
        f'<text x="{x_size}" y="48" font-size="13">output size (MB)</text>',
    ]
    for i, r in enumerate(results):
        parts.append(
            f'<text x="{_LABEL - 8}" y="{60 + i * _ROW + 17}" font-size="12" '
            f'text-anchor="end">{escape(r.name)}</text>'
        )
    parts += _bars([r.wall for r in results], x_time, 60, "#4a7bd0", "{:.1f}")
    parts += _bars(
        [None if r.output_bytes is None else r.output_bytes / 1e6 for r in results],
        x_size,
        60,
        "#d08a4a",
        "{:.0f}",
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
