"""The line chart the benchmark's scaling curves use: well-formed SVG, one polyline a series."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pgvault.operations.report.chart import LinePanel, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_line_chart_draws_each_series_of_each_panel_with_its_legend() -> None:
    panels = [
        LinePanel(
            "wall time against size",
            [("pg_dump", [(0.25, 1.0), (1.0, 4.0)]), ("pgvault", [(0.25, 1.2), (1.0, 4.4)])],
            lambda v: f"{v:.0f}s",
            [(0.25, "0.25 GB"), (1.0, "1 GB")],
        ),
        LinePanel("empty series are left out", [("none", [])], str, []),
    ]
    root = ET.fromstring(line_chart("Scaling <&>", panels))
    assert len(root.findall(f"{SVG}polyline")) == 2
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"Scaling <&>", "pg_dump", "pgvault", "none", "0.25 GB", "1 GB"} <= set(texts)
