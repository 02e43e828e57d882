"""`pgvault report`: failed runs are recorded in the vault and counted, trends and cost come out
of the vault's history, and the chart is a well-formed SVG."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pgvault
from pgvault.reporting.failures import read_failures
from pgvault.vault.contents import Vault
from tests.conftest import pgvault_cli
from tests.fake_backups import fake_backup

ConfigMaker = Callable[..., Path]


def test_failures_are_recorded_and_reported(make_config: ConfigMaker, tmp_path: Path) -> None:
    """A failed run leaves a failure record (not a backup); the report counts 3 taken, 1 failed,
    a growth of about 7 MiB a week, and the cost at the given price; --chart writes an SVG."""
    data = tmp_path / "data"
    data.mkdir()
    path = make_config({"type": "files", "paths": [str(tmp_path / "missing")]})
    config = pgvault.load_config(path)
    vault = Vault.from_config(config)
    with pytest.raises(pgvault.SourceError):
        pgvault.run(config)
    [failure] = read_failures(vault)
    assert "is not a folder" in failure["error"] and vault.backups() == []

    now = datetime.now(UTC)
    for days, mib in ((21, 100), (14, 107), (7, 114)):
        fake_backup(vault, now - timedelta(days=days), claimed_size=mib * 2**20)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"local": {"default": 2.0}}))
    chart = tmp_path / "report.svg"
    out = pgvault_cli("report", path, "--format", "json", "--chart", chart, "--prices", prices)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["taken"], report["failed"]) == (3, 1)
    assert report["success_rate"] == 0.75
    assert report["size_growth_bytes_per_week"] == pytest.approx(7 * 2**20, rel=0.01)
    stored = report["storage"]["bytes"]
    assert report["storage"]["usd_per_month"] == pytest.approx(stored / 2**30 * 2.0, abs=1e-3)
    assert [r["ok"] for r in report["runs"]] == [True, True, True, False]
    root = ET.parse(chart).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "3 backup(s), 1 failed (75% success)" in ET.tostring(root, encoding="unicode")

    text = pgvault_cli("report", path)
    assert text.returncode == 0
    assert "FAILED" in text.stdout and "is not a folder" in text.stdout
