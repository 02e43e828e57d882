"""The vault: listing, showing and verifying backups from what the sink holds."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pgvault
from pgvault.testing import PostgresCluster
from pgvault.vault.manifest import FORMAT_VERSION, Manifest
from tests.conftest import pgvault_cli
from tests.fake_backups import fake_backup

ConfigMaker = Callable[..., Path]


@pytest.fixture
def backed_up(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> tuple[pgvault.PipelineConfig, pgvault.Manifest]:
    config = pgvault.load_config(
        make_config(
            {"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db), "checksums": ["sha256", "md5"]}
        )
    )
    return config, pgvault.run(config)


def artifact_file(config: pgvault.PipelineConfig, manifest: pgvault.Manifest) -> Path:
    art = manifest.artifacts[0]
    return Path(config.sink.describe()) / config.name / "backups" / manifest.backup_id / art.path


def test_list_and_latest_newest_first(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """A second backup lists first and is 'latest'; ids sort by time."""
    config, first = backed_up
    second = pgvault.run(config)
    vault = pgvault.Vault.from_config(config)
    assert [m.backup_id for m in vault.backups()] == [second.backup_id, first.backup_id]
    assert vault.manifest("latest").backup_id == second.backup_id
    assert vault.manifest(first.backup_id[:-2]).backup_id == first.backup_id
    with pytest.raises(pgvault.BackupNotFoundError, match="no complete backup 'nope'"):
        vault.manifest("nope")


def test_verify_passes_then_names_a_flipped_byte(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """verify is clean on a fresh backup and names the artifact after one byte flips."""
    config, manifest = backed_up
    vault = pgvault.Vault.from_config(config)
    assert vault.verify(manifest).ok
    deep = vault.verify(manifest, deep=True)
    assert deep.ok and "pg_restore --list" in deep.details[manifest.artifacts[0].path]
    path = artifact_file(config, manifest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = vault.verify(manifest)
    assert not report.ok
    assert report.problems[0].artifact == manifest.artifacts[0].path
    assert "sha256 mismatch" in report.problems[0].message
    assert not vault.verify(manifest, deep=True).ok


def test_deep_verify_names_damage_that_pg_restore_trips_over_first(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> None:
    """A damaged archive start makes pg_restore --list fail before the digest is complete:
    deep verify still reports the artifact as damaged, not pg_restore's complaint."""
    config = pgvault.load_config(
        make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)}, transforms=[])
    )
    manifest = pgvault.run(config)
    path = artifact_file(config, manifest)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01  # the archive's magic: pg_restore refuses the file at once
    path.write_bytes(bytes(data))
    report = pgvault.Vault.from_config(config).verify(manifest, deep=True)
    assert [(p.artifact, "sha256 mismatch" in p.message) for p in report.problems] == [
        (manifest.artifacts[0].path, True)
    ]


def test_deep_verify_of_a_damaged_artifact_says_it_in_one_line(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest], tmp_path: Path
) -> None:
    """pgvault verify --deep on a flipped byte: exit 1 and one FAILED line naming the artifact,
    nothing else on the terminal."""
    config, manifest = backed_up
    path = artifact_file(config, manifest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    config_file = next(tmp_path.glob("pipeline*.toml"))
    result = pgvault_cli("verify", config_file, "--deep")
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pgvault: FAILED {manifest.backup_id}: ")
    assert f"{manifest.artifacts[0].path}: " in lines[0]


def test_verify_names_a_removed_artifact(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """A deleted artifact is reported missing, by name."""
    config, manifest = backed_up
    artifact_file(config, manifest).unlink()
    report = pgvault.Vault.from_config(config).verify(manifest)
    assert [(p.artifact, p.message) for p in report.problems] == [
        (manifest.artifacts[0].path, "missing")
    ]


def test_md5_sidecar_is_accepted_by_md5sum(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """The MD5SUMS file passes `md5sum -c` in the backup folder, as users' scripts expect."""
    config, manifest = backed_up
    folder = artifact_file(config, manifest).parent
    result = subprocess.run(["md5sum", "-c", "MD5SUMS"], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{manifest.artifacts[0].path}: OK" in result.stdout
    assert manifest.artifacts[0].digests["md5"] in (folder / "MD5SUMS").read_text()


def test_manifest_is_versioned_and_future_versions_are_refused(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """The stored manifest round-trips; a newer format_version asks for an upgrade."""
    config, manifest = backed_up
    stored = artifact_file(config, manifest).parent / "manifest.json"
    data = json.loads(stored.read_text())
    assert data["format_version"] == FORMAT_VERSION
    assert {
        "backup_id",
        "name",
        "started_at",
        "finished_at",
        "duration_seconds",
        "source",
        "transforms",
        "artifacts",
        "pgvault_version",
        "status",
    } <= set(data)
    assert Manifest.from_json(stored.read_text()) == manifest
    data["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(pgvault.ManifestError, match="upgrade pgvault"):
        Manifest.from_json(json.dumps(data))


def test_incomplete_backup_folders_are_not_listed(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """A folder with data but no manifest (a crashed run) is invisible to list and latest."""
    config, manifest = backed_up
    config.sink.write_bytes(f"{config.name}/backups/29990101T000000Z-dead00/dump.pgdump.zst", b"x")
    vault = pgvault.Vault.from_config(config)
    assert [m.backup_id for m in vault.backups()] == [manifest.backup_id]
    assert vault.incomplete() == ["29990101T000000Z-dead00"]


def test_a_manifest_naming_another_backup_is_refused(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """A manifest whose backup id was edited away from its folder's is refused, naming both: the
    id is what encrypted artifacts are checked against, so it must be the folder's."""
    config, manifest = backed_up
    stored = artifact_file(config, manifest).parent / "manifest.json"
    data = json.loads(stored.read_text())
    data["backup_id"] = other = "20200101T000000Z-0a1b2c"
    stored.write_text(json.dumps(data))
    vault = pgvault.Vault.from_config(config)
    why = (
        f"{config.name}/backups/{manifest.backup_id}/manifest.json: the manifest names backup "
        f"{other}, but is in the folder of backup {manifest.backup_id} (it was moved or edited)"
    )
    with pytest.raises(pgvault.ManifestError) as info:
        vault.manifest(manifest.backup_id)
    assert str(info.value) == why
    # 'latest' skips a damaged backup; with no other one left, it says why there is none.
    with pytest.raises(pgvault.BackupNotFoundError) as not_found:
        vault.manifest("latest")
    assert str(not_found.value).endswith(f"has no complete backup; {why}")


# One damaged object never blocks the vault


@pytest.fixture
def files_config(make_config: ConfigMaker, tmp_path: Path) -> Path:
    """A files pipeline over a one-file folder, keeping the newest good backup on prune."""
    (tmp_path / "data").mkdir()
    return make_config(
        {"type": "files", "paths": [str(tmp_path / "data")]},
        extra="[retention]\nkeep_last = 1\n",
    )


def three_backups(path: Path) -> list[str]:
    """Three real files backups, oldest first; backup i holds data/version.txt = "i"."""
    config = pgvault.load_config(path)
    data = Path(config.source.paths[0])  # type: ignore[attr-defined]
    ids = []
    for i in range(3):
        (data / "version.txt").write_text(f"{i}\n")
        ids.append(pgvault.run(config).backup_id)
    return ids


def manifest_file(path: Path, backup_id: str) -> Path:
    return path.parent / "vault" / "test" / "backups" / backup_id / "manifest.json"


DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "not JSON": lambda text: "<html>503 Service Unavailable</html>",
    "empty": lambda text: "",
    "unknown format version": lambda text: text.replace(
        '"format_version": 1', '"format_version": 0'
    ),
    "newer format version": lambda text: text.replace('"format_version": 1', '"format_version": 9'),
    "no artifacts": lambda text: json.dumps({**json.loads(text), "artifacts": []}),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_manifest_is_reported_and_skipped(files_config: Path, damage: str) -> None:
    """A manifest damaged in any of these ways is a DamagedBackup naming its key, never the
    'latest', and the good backups around it stay listed."""
    ids = three_backups(files_config)
    stored = manifest_file(files_config, ids[1])
    stored.write_text(DAMAGE[damage](stored.read_text()))
    vault = pgvault.Vault.from_config(pgvault.load_config(files_config))
    contents = vault.contents()
    assert [m.backup_id for m in contents.backups] == [ids[2], ids[0]]
    [damaged] = contents.damaged
    assert damaged.backup_id == ids[1] and damaged.key == f"test/backups/{ids[1]}/manifest.json"
    assert damaged.reason
    assert vault.manifest("latest").backup_id == ids[2]
    with pytest.raises(pgvault.ManifestError, match=f"{damaged.key}: "):
        vault.manifest(ids[1])


def test_the_newest_manifest_damaged_leaves_every_command_working(
    files_config: Path, tmp_path: Path
) -> None:
    """With the newest manifest truncated: list shows the others and names it, restore latest
    brings back the newest good backup, verify --all fails it alone, prune keeps it and the newest
    good one, check names it."""
    ids = three_backups(files_config)
    stored = manifest_file(files_config, ids[2])
    stored.write_text(stored.read_text()[:100])
    key = f"test/backups/{ids[2]}/manifest.json"

    listed = pgvault_cli("list", files_config)
    assert listed.returncode == 0, listed.stderr
    assert ids[1] in listed.stdout and ids[0] in listed.stdout and ids[2] not in listed.stdout
    assert listed.stderr.startswith(f"pgvault: WARNING: damaged backup {ids[2]} ({key}): ")
    as_json = json.loads(pgvault_cli("list", files_config, "--json").stdout)
    assert [(b["backup_id"], b["status"]) for b in as_json] == [
        (ids[1], "complete"),
        (ids[0], "complete"),
        (ids[2], "damaged"),
    ]
    assert as_json[2]["key"] == key and "not valid JSON" in as_json[2]["error"]

    out = tmp_path / "restored"
    restored = pgvault_cli("restore", files_config, "latest", "--target-dir", out)
    assert restored.returncode == 0, restored.stderr
    assert f"restored {ids[1]}" in restored.stdout
    assert next(out.rglob("version.txt")).read_text() == "1\n"

    verified = pgvault_cli("verify", files_config, "--all")
    assert verified.returncode == 1
    assert [line.split(":")[0] for line in verified.stdout.splitlines()] == [
        f"OK {ids[1]}",
        f"OK {ids[0]}",
    ]
    assert f"pgvault: FAILED {ids[2]}: manifest.json: not valid JSON" in verified.stderr

    pruned = pgvault_cli("prune", files_config, "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["removed"] == [ids[0]]
    assert stored.exists()
    remaining = pgvault.Vault.from_config(pgvault.load_config(files_config)).contents()
    assert [m.backup_id for m in remaining.backups] == [ids[1]]

    checked = pgvault_cli("check", files_config)
    assert checked.returncode == 1
    assert f"WARNING: damaged backup {ids[2]}: not valid JSON" in checked.stdout


def test_a_manifest_of_no_artifacts_is_not_a_backup(
    pg_cluster: PostgresCluster, files_config: Path
) -> None:
    """A manifest listing no artifacts: verify does not say OK, and a restore of it is one line
    naming the manifest (no database is created), not an internal error."""
    [backup_id] = three_backups(files_config)[-1:]
    stored = manifest_file(files_config, backup_id)
    data = json.loads(stored.read_text())
    data.update(artifacts=[], source={"type": "pg_dump", "format": "custom"})
    stored.write_text(json.dumps(data))

    verified = pgvault_cli("verify", files_config, backup_id)
    assert verified.returncode == 1 and "OK" not in verified.stdout
    restored = pgvault_cli(
        "restore", files_config, backup_id, "--target-db", "nothing_db", "--dsn", pg_cluster.dsn()
    )
    assert restored.returncode == 1
    assert restored.stderr.splitlines() == [
        f"pgvault: error: test/backups/{backup_id}/manifest.json: lists no artifacts, "
        "so it is not a backup"
    ]
    assert "nothing_db" not in pg_cluster.databases()


def test_a_missing_md5sums_fails_verify(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """With md5 among the checksums, a removed MD5SUMS is a verify failure, and so is one that
    disagrees with the manifest."""
    config, manifest = backed_up
    vault = pgvault.Vault.from_config(config)
    sidecar = artifact_file(config, manifest).parent / "MD5SUMS"
    text = sidecar.read_text()
    sidecar.write_text(text.replace(manifest.artifacts[0].digests["md5"], "0" * 32))
    report = vault.verify(manifest)
    assert [(p.artifact, p.message) for p in report.problems] == [
        ("MD5SUMS", f"the md5 of {manifest.artifacts[0].path} differs from the manifest")
    ]
    sidecar.unlink()
    report = vault.verify(manifest, deep=True)
    assert [(p.artifact, p.message) for p in report.problems] == [
        ("MD5SUMS", "missing (the backup's checksums include md5)")
    ]


def test_latest_is_the_newest_scheduled_backup_dated_up_to_now(files_config: Path) -> None:
    """'latest' (and --before) passes over a newer safety backup and a future-dated one, which
    stay listed and reachable by id; with only those, it says so and how to reach them."""
    vault = pgvault.Vault.from_config(pgvault.load_config(files_config))
    now = datetime.now(UTC)
    ahead = fake_backup(vault, now + timedelta(days=399))
    safety = fake_backup(vault, now - timedelta(minutes=1), kind="safety")
    with pytest.raises(pgvault.BackupNotFoundError) as none:
        vault.manifest("latest")
    assert str(none.value) == (
        f"vault 'test' in {vault.sink.describe()} has no complete backup of the pipeline's "
        f"schedule; backup {ahead} dated in the future (a clock ahead?) is never 'latest': give "
        f"an id; safety backups such as {safety} only by id"
    )
    scheduled = fake_backup(vault, now - timedelta(hours=1))
    assert vault.manifest("latest").backup_id == scheduled
    assert vault.manifest_before(now + timedelta(days=500)).backup_id == scheduled
    assert {vault.manifest(i).backup_id for i in (ahead, safety)} == {ahead, safety}
    assert {m.backup_id for m in vault.backups()} == {ahead, safety, scheduled}


def test_restore_latest_after_a_replace_is_the_schedules_backup(
    pg_cluster: PostgresCluster, make_config: ConfigMaker
) -> None:
    """After `restore --drop-existing` took a safety backup of the broken database it replaced,
    `restore latest` brings back the pipeline's backup, not that broken state; the safety backup
    stays listed (kind safety) and restorable by id."""
    for name, value in (("latest_src", "good"), ("latest_app", "broken")):
        pg_cluster.drop_database(name)
        pg_cluster.create_database(name)
        pg_cluster.execute(f"CREATE TABLE t (v text); INSERT INTO t VALUES ('{value}')", name)
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn("latest_src")})
    scheduled = pgvault_cli("run", path).stdout.strip()
    replaced = pgvault_cli(
        "restore", path, "latest", "--target-db", "latest_app", "--drop-existing", "--yes"
    )
    assert replaced.returncode == 0, replaced.stderr
    safety = replaced.stdout.split("safety backup of the replaced database: ")[1].split()[0]

    again = pgvault_cli("restore", path, "latest", "--target-db", "latest_copy")
    assert again.returncode == 0, again.stderr
    assert f"restored {scheduled} into" in again.stdout
    assert pg_cluster.execute("SELECT v FROM t", "latest_copy") == [("good",)]
    assert json.loads(pgvault_cli("show", path, "latest").stdout)["backup_id"] == scheduled
    listed = {
        b["backup_id"]: b["kind"] for b in json.loads(pgvault_cli("list", path, "--json").stdout)
    }
    assert listed == {scheduled: "scheduled", safety: "safety"}
    by_id = pgvault_cli("restore", path, safety, "--target-db", "latest_broken")
    assert by_id.returncode == 0, by_id.stderr
    assert pg_cluster.execute("SELECT v FROM t", "latest_broken") == [("broken",)]
    for name in ("latest_src", "latest_app", "latest_copy", "latest_broken"):
        pg_cluster.drop_database(name)
