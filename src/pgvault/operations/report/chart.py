"""The report's chart, drawn as SVG directly.

Written by hand rather than with a plotting library: the chart is two small panels (stored size
per backup with its trend line and the failed runs marked, and the duration per backup), a few
dozen elements; matplotlib would add a large dependency to a backup tool's install for that,
and SVG embeds in the HTML report and in mail as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING

import attrs

from pgvault.engine.progress import human_bytes

if TYPE_CHECKING:
    from pgvault.operations.report.report import Report

WIDTH, PANEL, TOP, LEFT, RIGHT, GAP = 860, 170, 50, 90, 20, 60


def _x(t: float, t0: float, t1: float) -> float:
    span = (t1 - t0) or 1.0
    return LEFT + (t - t0) / span * (WIDTH - LEFT - RIGHT)


def _panel(
    top: float,
    title: str,
    points: list[tuple[float, float]],
    failures: list[float],
    t0: float,
    t1: float,
    label: object,
    colour: str,
    bars: bool,
    trend: tuple[float, float] | None = None,
    more: Sequence[tuple[list[tuple[float, float]], str]] = (),
) -> list[str]:
    out = [
        f'<text x="{LEFT}" y="{top - 10}" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{LEFT}" y="{top}" width="{WIDTH - LEFT - RIGHT}" height="{PANEL}" '
        'fill="#fafafa" stroke="#ccc"/>',
    ]
    high = max([v for _, v in points] + [v for ps, _ in more for _, v in ps] + [1e-9]) * 1.15

    def y(v: float) -> float:
        return top + PANEL - v / high * PANEL

    for i in range(5):
        v = high * i / 4
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#e3e3e3"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">'
            f"{escape(label(v))}</text>"  # type: ignore[operator]
        )
    step = (WIDTH - LEFT - RIGHT) / max(len(points), 1)
    width = max(2.0, min(18.0, step * 0.6))
    if bars:
        for t, v in points:
            out.append(
                f'<rect x="{_x(t, t0, t1) - width / 2:.1f}" y="{y(v):.1f}" width="{width:.1f}" '
                f'height="{top + PANEL - y(v):.1f}" fill="{colour}"/>'
            )
    else:
        for series, stroke in [(points, colour), *more]:
            if not series:
                continue
            path = " ".join(f"{_x(t, t0, t1):.1f},{y(v):.1f}" for t, v in series)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{stroke}" stroke-width="2"/>'
            )
            for t, v in series:
                out.append(
                    f'<circle cx="{_x(t, t0, t1):.1f}" cy="{y(v):.1f}" r="3" fill="{stroke}"/>'
                )
    if trend is not None:
        (a, b) = trend  # value at t0, slope per second
        out.append(
            f'<line x1="{_x(t0, t0, t1):.1f}" y1="{y(a):.1f}" x2="{_x(t1, t0, t1):.1f}" '
            f'y2="{y(a + b * (t1 - t0)):.1f}" stroke="#444" stroke-dasharray="6 4"/>'
        )
    for t in failures:
        out.append(
            f'<text x="{_x(t, t0, t1):.1f}" y="{top + PANEL - 4}" font-size="14" fill="#c62828" '
            'text-anchor="middle">✕</text>'
        )
    return out


def svg(report: Report) -> str:
    """The chart of ``report`` as a standalone SVG document."""
    t0, t1 = report.since.timestamp(), report.until.timestamp()
    good = [r for r in report.runs if r.ok]
    failures = [r.started_at.timestamp() for r in report.runs if not r.ok]
    sizes = [(r.started_at.timestamp(), float(r.size or 0)) for r in good]
    durations = [(r.started_at.timestamp(), r.duration_seconds or 0.0) for r in good]
    trend = None
    growth = report.size_growth_per_week
    if growth is not None and sizes:
        slope = growth / (7 * 86400)
        mean_t = sum(t for t, _ in sizes) / len(sizes)
        mean_v = sum(v for _, v in sizes) / len(sizes)
        trend = (mean_v - slope * (mean_t - t0), slope)
    grow = (
        "n/a" if growth is None else f"{'+' if growth >= 0 else '-'}{human_bytes(abs(growth))}/week"
    )
    height = TOP + 2 * PANEL + GAP + 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, sans-serif">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="24" font-size="16">{escape(report.summary())}</text>',
    ]
    parts += _panel(
        TOP + 20,
        f"stored size per backup (trend {grow}; ✕ failed run)",
        sizes,
        failures,
        t0,
        t1,
        lambda v: human_bytes(int(v)),
        "#1e88e5",
        True,
        trend,
    )
    parts += _panel(
        TOP + 20 + PANEL + GAP,
        "duration per backup",
        durations,
        [],
        t0,
        t1,
        lambda v: f"{v:.0f}s" if v >= 10 else f"{v:.1f}s",
        "#43a047",
        False,
    )
    base = TOP + 20 + 2 * PANEL + GAP
    for i in range(5):
        t = t0 + (t1 - t0) * i / 4
        day = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(
            f'<text x="{_x(t, t0, t1):.1f}" y="{base + 18}" font-size="11" '
            f'text-anchor="{anchor}">{day}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


PALETTE = ("#1e88e5", "#43a047", "#e53935", "#8e24aa", "#fb8c00")


@attrs.frozen
class LinePanel:
    """One panel of :func:`line_chart`: named series of ``(x, y)`` points on shared axes."""

    title: str
    series: Sequence[tuple[str, list[tuple[float, float]]]]
    y_label: Callable[[float], str]
    x_ticks: Sequence[tuple[float, str]]


def line_chart(title: str, panels: Sequence[LinePanel]) -> str:
    """Panels of line series (each panel its own x range from its ticks), with a legend per
    panel, as a standalone SVG document: the benchmark's scaling curves use it."""
    height = TOP + len(panels) * (PANEL + GAP) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, sans-serif">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="24" font-size="16">{escape(title)}</text>',
    ]
    for i, panel in enumerate(panels):
        top = TOP + 20 + i * (PANEL + GAP)
        xs = [x for x, _ in panel.x_ticks] or [0.0, 1.0]
        t0, t1 = min(0.0, *xs), max(xs)
        colours = [PALETTE[j % len(PALETTE)] for j in range(len(panel.series))]
        first = panel.series[0][1] if panel.series else []
        more = [(pts, colours[j]) for j, (_, pts) in enumerate(panel.series) if j]
        parts += _panel(
            top, panel.title, first, [], t0, t1, panel.y_label, colours[0], False, more=more
        )
        for x, text in panel.x_ticks:
            anchor = "end" if x >= t1 else "middle"  # the last label must not leave the panel
            parts.append(
                f'<text x="{_x(x, t0, t1):.1f}" y="{top + PANEL + 16}" font-size="11" '
                f'text-anchor="{anchor}">{escape(text)}</text>'
            )
        for j, (name, _) in enumerate(panel.series):
            y = top + 14 + 16 * j
            parts.append(
                f'<rect x="{LEFT + 10}" y="{y - 9}" width="10" height="10" fill="{colours[j]}"/>'
                f'<text x="{LEFT + 26}" y="{y}" font-size="12">{escape(name)}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
