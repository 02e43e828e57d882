"""Storage tiers by age on moto S3: prune moves artifacts to colder classes while manifests
stay readable, list shows the class, and a backup in GLACIER is thawed and restored."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pgvault
from pgvault.operations.tiers import target_class
from pgvault.sinks.destinations import Tier
from pgvault.sinks.s3 import _thaw_state
from pgvault.testing import PostgresCluster
from pgvault.testing.servers import S3Server
from pgvault.testing.storage_fixtures import TEST_SINK_OPTIONS
from pgvault.units import Duration
from tests.conftest import pgvault_cli
from tests.operations.test_destinations import s3, write_config

TIERS = [
    {"after": "30d", "storage_class": "STANDARD_IA"},
    {"after": "90d", "storage_class": "GLACIER"},
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("cold\n" * 400)
    return data


def classes(s3_server: S3Server, bucket: str) -> dict[str, str]:
    """Object name (in its backup folder) to storage class, over every backup."""
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="p/app/backups/")["Contents"]
    return {o["Key"].rsplit("/", 1)[1]: o.get("StorageClass", "STANDARD") for o in listed}


def test_prune_moves_artifacts_down_the_tiers_and_manifests_stay_readable(
    tmp_path: Path, folder: Path, s3_server: S3Server
) -> None:
    """At 31 days the artifact goes to STANDARD_IA, at 91 to GLACIER (a dry run says so first);
    MD5SUMS and the manifest stay STANDARD, so list, show and a shallow verify still work, and
    list shows the class."""
    bucket = s3_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:12]}")
    path = write_config(
        tmp_path / "p.toml",
        folder,
        [s3(s3_server, bucket, tiers=TIERS, retention={"keep_within": "455d"})],
    )
    backup_id = pgvault_cli("run", path).stdout.strip()
    config = pgvault.load_config(path)
    now = datetime.now(UTC)

    planned = pgvault.prune(config, dry_run=True, now=now + timedelta(days=31))
    assert [(m.from_class, m.to_class) for m in planned.moves] == [("STANDARD", "STANDARD_IA")]
    assert classes(s3_server, bucket)["files.tar.zst"] == "STANDARD"
    pgvault.prune(config, now=now + timedelta(days=31))
    assert classes(s3_server, bucket) == {
        "files.tar.zst": "STANDARD_IA",
        "MD5SUMS": "STANDARD",
        "manifest.json": "STANDARD",
    }
    moved = pgvault.prune(config, now=now + timedelta(days=91))
    assert moved.ok and [m.to_class for m in moved.moves] == ["GLACIER"]
    assert classes(s3_server, bucket)["files.tar.zst"] == "GLACIER"
    assert classes(s3_server, bucket)["manifest.json"] == "STANDARD"
    assert pgvault.prune(config, now=now + timedelta(days=200)).moves == ()  # never moved back

    listed = pgvault_cli("list", path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].endswith("s3:GLACIER")
    [entry] = json.loads(pgvault_cli("list", path, "--json").stdout)
    [stored] = entry["stored"]
    assert set(stored["size_by_class"]) == {"GLACIER", "STANDARD"}
    assert pgvault_cli("verify", path).returncode == 0
    shown = json.loads(pgvault_cli("show", path, "latest").stdout)
    assert shown["backup_id"] == backup_id
    checked = pgvault.check(config)
    assert checked.ok
    assert set(checked.storage["s3"]["size_by_class"]) == {"GLACIER", "STANDARD"}
    assert "GLACIER" in checked.summary()


def test_a_backup_in_glacier_is_thawed_then_restored(
    tmp_path: Path, folder: Path, s3_server: S3Server
) -> None:
    """restore of a GLACIER backup fails with the advice to thaw; pgvault thaw requests the
    retrieval and reports it readable once moto has restored it; verify --deep skips the other
    (--archived skip) or checks the thawed one deep (--archived thaw); restore --thaw --wait
    thaws the other and proceeds; both restores give the files back."""
    bucket = s3_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:12]}")
    path = write_config(
        tmp_path / "p.toml", folder, [s3(s3_server, bucket, storage_class="GLACIER")]
    )
    first = pgvault_cli("run", path).stdout.strip()
    second = pgvault_cli("run", path).stdout.strip()

    refused = pgvault_cli("restore", path, first, "--target-dir", tmp_path / "o1")
    assert refused.returncode == 1
    assert "is in archive storage class GLACIER" in refused.stderr

    status = pgvault_cli("thaw", path, first, "--status")
    assert status.returncode == 1
    thawed = pgvault_cli("thaw", path, first, "--json")
    assert thawed.returncode == 0, thawed.stderr
    report = json.loads(thawed.stdout)
    assert report["ready"] and report["states"] == {"files.tar.zst": "thawed"}
    assert "Standard retrieval from GLACIER takes 3-5 hours" in report["wait"]
    head = s3_server.client().head_object(Bucket=bucket, Key=f"p/app/backups/{first}/files.tar.zst")
    assert 'ongoing-request="false"' in head["Restore"] and head["StorageClass"] == "GLACIER"
    restored = pgvault_cli("restore", path, first, "--target-dir", tmp_path / "o1")
    assert restored.returncode == 0, restored.stderr

    skipped = pgvault_cli("verify", path, second, "--deep", "--archived", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.startswith(f"SKIPPED deep check of {second}: archived")
    deep = pgvault_cli("verify", path, first, "--deep", "--archived", "thaw")
    assert deep.returncode == 0, deep.stderr
    assert deep.stdout.startswith(f"OK {first}: 1 artifact(s), deep match")

    waited = pgvault_cli(
        "restore", path, second, "--thaw", "--wait", "--target-dir", tmp_path / "o2"
    )
    assert waited.returncode == 0, waited.stderr
    for out in ("o1", "o2"):
        [file] = (tmp_path / out).rglob("a.txt")
        assert file.read_text() == "cold\n" * 400


def test_thaw_states_read_from_the_restore_header() -> None:
    """S3's x-amz-restore header: absent (archived), ongoing (thawing), done (thawed until)."""
    assert _thaw_state({"StorageClass": "GLACIER"}).state == "archived"
    assert (
        _thaw_state({"StorageClass": "DEEP_ARCHIVE", "Restore": 'ongoing-request="true"'}).state
        == "thawing"
    )
    done = _thaw_state(
        {
            "StorageClass": "GLACIER",
            "Restore": 'ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"',
        }
    )
    assert done.readable and done.expires == "Fri, 21 Dec 2012 00:00:00 GMT"
    assert _thaw_state({}).state == "hot"


def test_a_tier_kept_as_monthly_takes_over_from_an_age_tier() -> None:
    """Monthly backups go to DEEP_ARCHIVE after 90 days; the others to GLACIER."""
    tiers = [
        Tier(Duration.parse("90d"), "GLACIER"),
        Tier(Duration.parse("90d"), "DEEP_ARCHIVE", kept_as="monthly"),
    ]
    days = 100 * 86400
    assert target_class(tiers, days, ["daily 2026-01-02"]) == "GLACIER"
    assert target_class(tiers, days, ["daily 2026-01-31", "monthly 2026-01"]) == "DEEP_ARCHIVE"
    assert target_class(tiers, 10 * 86400, ["monthly 2026-01"]) is None


def test_a_drill_skips_or_thaws_an_archived_backup(
    pg_cluster: PostgresCluster, rich_db: str, make_config: Callable[..., Path], s3_server: S3Server
) -> None:
    """drill --archived skip leaves a GLACIER backup alone (exit 0, says so, records nothing);
    --archived thaw requests its retrieval and drills it once readable."""
    bucket = s3_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:12]}")
    options = s3_server.sink_options(bucket, "p", storage_class="GLACIER", **TEST_SINK_OPTIONS)
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)}, sink=options)
    backup_id = pgvault_cli("run", path).stdout.strip()
    skipped = pgvault_cli("drill", path, "--archived", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.startswith(f"SKIPPED drill of {backup_id}: archived")
    drilled = pgvault_cli("drill", path, "--archived", "thaw")
    assert drilled.returncode == 0, drilled.stderr
    assert f"of backup {backup_id}: PASSED" in drilled.stdout
