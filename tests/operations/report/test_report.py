"""`pgvault report`: failed runs are recorded in the vault and counted, trends and cost come out
of the vault's history, and the chart is a well-formed SVG."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pgvault
from pgvault.operations.report.report import FreeSpace, build
from pgvault.testing.servers import S3Server
from pgvault.vault.contents import Vault
from pgvault.vault.failures import read_failures
from tests.conftest import pgvault_cli
from tests.fake_backups import fake_backup
from tests.operations.test_destinations import s3, write_config

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


def test_each_destination_is_costed_by_its_storage_classes(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """A local folder and S3, one artifact moved to STANDARD_IA: each destination reports its
    bytes per class from its own listing, and its monthly cost at the table's price per class;
    the summary line adds them up."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha\n" * 5000)
    bucket = s3_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:12]}")
    path = write_config(
        tmp_path / "p.toml",
        folder,
        [{"type": "local", "path": str(tmp_path / "vault")}, s3(s3_server, bucket)],
    )
    config = pgvault.load_config(path)
    pgvault.run(config)
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="p/app/")["Contents"]
    [artifact] = [o for o in listed if o["Key"].endswith(".zst")]
    client.copy_object(
        Bucket=bucket,
        Key=artifact["Key"],
        CopySource={"Bucket": bucket, "Key": artifact["Key"]},
        StorageClass="STANDARD_IA",
    )
    table = {
        "local": {"default": 1.0},
        "s3": {"default": 0.5, "STANDARD": 0.5, "STANDARD_IA": 0.25},
    }
    built = build(config, prices=table)
    report = built.to_dict()
    local, remote = report["destinations"]
    on_disk = sum(p.stat().st_size for p in (tmp_path / "vault" / "app").rglob("*") if p.is_file())
    assert (local["name"], local["bytes"]) == ("local", on_disk)
    assert local["usd_per_month"] == pytest.approx(on_disk / 2**30 * 1.0, abs=1e-4)
    cold = artifact["Size"]
    warm = sum(o["Size"] for o in listed) - cold
    assert remote["classes"]["STANDARD_IA"]["bytes"] == cold
    assert remote["classes"]["STANDARD"]["bytes"] == warm
    expected = (warm * 0.5 + cold * 0.25) / 2**30
    assert remote["usd_per_month"] == pytest.approx(expected, abs=1e-4)
    assert report["usd_per_month"] == pytest.approx(
        local["usd_per_month"] + remote["usd_per_month"], abs=1e-4
    )
    text = built.text()
    assert "destination s3 (s3://" in text and "STANDARD_IA" in text


def test_days_until_min_free_follow_the_vaults_growth(
    make_config: ConfigMaker, tmp_path: Path
) -> None:
    """With retention keeping 3 backups growing 7 MiB a week, the vault grows 21 MiB a week,
    and the days to [check] min_free are the headroom over that rate."""
    path = make_config(
        {"type": "files", "paths": [str(tmp_path)]},
        extra='[check]\nmin_free = "1%"\n[retention]\nkeep_last = 3\n',
    )
    config = pgvault.load_config(path)
    vault = Vault.from_config(config)
    now = datetime.now(UTC)
    for days, mib in ((21, 100), (14, 107), (7, 114)):
        fake_backup(vault, now - timedelta(days=days), claimed_size=mib * 2**20)
    out = pgvault_cli("report", path, "--format", "json")
    assert out.returncode == 0, out.stderr
    free = json.loads(out.stdout)["free_space"]
    assert free["min_free"] == "1%"
    assert free["min_free_bytes"] == free["total_bytes"] // 100
    assert free["vault_growth_bytes_per_week"] == pytest.approx(3 * 7 * 2**20, rel=0.01)
    headroom = free["free_bytes"] - free["min_free_bytes"]
    rate = free["vault_growth_bytes_per_week"] / 7
    assert free["days_to_min_free"] == pytest.approx(headroom / rate, abs=0.1)
    text = build(config).text()
    assert "(min_free 1%, " in text and ": crossed in about " in text


def test_free_space_edge_cases() -> None:
    """Already below: 0 days; a vault that does not grow, or no trend yet: never."""
    below = FreeSpace(5, 100, "10%", 10, 1000.0)
    assert below.days_left == 0 and below.text().endswith(": already below")
    assert FreeSpace(50, 100, "10%", 10, -3.0).days_left is None
    assert FreeSpace(50, 100, "10%", 10, None).text().endswith(": not crossed at the current trend")
    assert FreeSpace(50, 100, "10%", 10, 7.0).days_left == pytest.approx(40.0)


def test_without_retention_the_vault_grows_by_all_it_stores(
    make_config: ConfigMaker, tmp_path: Path
) -> None:
    """Nothing is pruned: the growth is the period's stored bytes per week."""
    path = make_config(
        {"type": "files", "paths": [str(tmp_path)]}, extra='[check]\nmin_free = "1%"\n'
    )
    config = pgvault.load_config(path)
    vault = Vault.from_config(config)
    now = datetime.now(UTC)
    for days in (20, 10):
        fake_backup(vault, now - timedelta(days=days), claimed_size=70 * 2**20)
    report = build(config, since=timedelta(days=28))
    assert report.free_space is not None
    assert report.free_space.growth_per_week == pytest.approx(140 * 2**20 / 4)
    assert report.wal is None and report.pitr_window == ()
