"""The benchmark's report writers render saved results (no measuring, no timings judged)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from benchmarks import basebackup, scaling

X = "\u00d7"  # the report's multiplication sign
LOAD = {"min": 1.0, "median": 2.0, "max": 3.0, "cores": 2}


def result(name: str, wall: float, cpu: float, size: int | None = None) -> dict[str, object]:
    return {
        "name": name,
        "wall": wall,
        "cpu": cpu,
        "max_rss_mb": 70.0,
        "output_bytes": size,
        "reps": 3,
    }


def test_scaling_parts_render_ratios_fits_chart_and_a_missing_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scaling, "RESULTS", tmp_path)
    profile = {
        "wall": 1.0,
        "process_cpu": 2.0,
        "children_cpu": 0.5,
        "raw_bytes": 100e6,
        "stored_bytes": 20e6,
        "peak_rss_mb": 70,
        "stages": {"zstd": {"cpu": 1.5, "top": [["compress (~)", 1.4, 100]]}},
    }
    datasets = {
        "size_gb": 0.4,
        "reps": 3,
        "load_average": LOAD,
        "rows": [
            {
                "dataset": "entropy",
                "db_bytes": 4e8,
                "profile": profile,
                "results": [
                    result(scaling.LIMIT, 2.0, 0.5),
                    result(scaling.PIPELINE, 4.0, 2.0),
                    result(scaling.PGVAULT, 2.1, 2.4),
                ],
            }
        ],
    }
    points = [
        {"axis": "size_gb", "x": x, "db_bytes": x * 1.3e9, **result(name, x * k, x * k)}
        for x in (0.25, 1.0, 4.0)
        for name, k in ((scaling.LIMIT, 1.0), (scaling.PGVAULT, 3.0))
    ]
    many = {
        "databases": 100,
        "database_mb": 10,
        "jobs": 2,
        "reps": 3,
        "load_average": LOAD,
        "results": [result("loop", 10.0, 5.0)],
        "pgvault_missing": "ConfigError: source.databases: unknown key",
    }
    for part, data in (
        ("datasets", datasets),
        ("scaling", {"reps": 3, "tables_gb": 0.1, "points": points, "load_average": LOAD}),
        ("many", many),
    ):
        (tmp_path / f"{part}.json").write_text(json.dumps(data))
    svg = tmp_path / "chart.svg"
    text = "\n".join(scaling.report_lines(svg))
    assert (
        f"| pgvault run (zstd-3 + aes-256-gcm) | 2.10 | 1.05{X} | 0.53{X} | 2.40 | 1.20{X} | 70 |"
        in text
    )
    assert f"1.05{X} the limit (met), CPU 1.20{X} the pipeline's (met)" in text
    assert "+ 3.000 s per GB of the ladder; the worst point is 0% off that line" in text
    assert "pgvault's side is not measured" in text
    assert len(ET.parse(svg).getroot().findall("{http://www.w3.org/2000/svg}polyline")) == 4


def test_basebackup_report_gives_ratios_to_pgvault() -> None:
    data = {
        "scale": 30,
        "cluster_bytes": 493e6,
        "segments_replayed": 18,
        "reps": 3,
        "pgbackrest": "pgBackRest 2.45",
        "load_average": LOAD,
        "backups": [result("pgvault", 4.0, 3.0, 23_000_000), result("pgbackrest", 5.0, 2.0, 24e6)],
        "restores": [
            {**result("pgvault restore", 10.0, 3.5), "recovery_cpu": 6.0},
            {**result("pgbackrest restore", 6.0, 2.3), "recovery_cpu": 2.5},
        ],
    }
    text = "\n".join(basebackup.report_lines(data))
    assert f"| pgbackrest | 5.00 | 1.25{X} | 2.00 | 24 | 70 |" in text
    assert f"| pgbackrest restore | 6.00 | 0.60{X} | 2.30 | 2.50 | 70 |" in text


def test_many_databases_report_gives_each_parallelism_its_ratio_and_the_server_cpu() -> None:
    loop, mine = "pg_dump -Fc -Z0 | zstd -3 loop, xargs -P", "pgvault run (all databases, jobs ="
    data = {
        "databases": 100,
        "database_mb": 10,
        "jobs": 2,
        "jobs_list": [2, 1],
        "reps": 5,
        "load_average": LOAD,
        "results": [
            {**result(f"{loop} 2", 10.0, 9.0), "server_cpu": 12.0},
            {**result(f"{mine} 2, zstd-3)", 11.0, 10.0), "server_cpu": 13.5},
            {**result(f"{loop} 1", 20.0, 9.0), "server_cpu": 12.0},
            {**result(f"{mine} 1, zstd-3)", 19.0, 10.0), "server_cpu": 13.5},
        ],
        "pgvault_missing": None,
    }
    text = "\n".join(scaling.many_lines(data))
    assert f"(100 {X} 10 MB, 2 or 1 at a time)" in text
    assert f"| {mine} 2, zstd-3) | 11.00 | 10.00 | 70 | 13.50 |" in text
    assert f"1.10{X} the loop's wall at 2 at a time; 0.95{X} the loop's wall at 1 at a time" in text
