"""Several destinations: one backup stored to a local folder and S3 (moto) at once, a failing
destination under each ``required`` setting, ``copy`` after an outage, and restore/check/list
when the destinations disagree."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

import pgvault
from pgvault.exceptions import ConfigError
from pgvault.testing.servers import S3Server
from pgvault.testing.storage_fixtures import TEST_SINK_OPTIONS
from tests.conftest import pgvault_cli, toml_value


def table(header: str, options: dict[str, Any]) -> str:
    return f"{header}\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in options.items())


def write_config(path: Path, folder: Path, sinks: list[dict[str, Any]], extra: str = "") -> Path:
    """A files pipeline of ``folder`` with one ``[[sink]]`` table per entry of ``sinks``."""
    text = 'name = "app"\nchecksums = ["sha256", "md5"]\n'
    text += table("[source]", {"type": "files", "paths": [str(folder)]})
    text += table("[[transform]]", {"type": "zstd", "level": 3})
    text += "".join(table("[[sink]]", s) for s in sinks)
    path.write_text(text + extra)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n" * 500)
    (data / "b.txt").write_text("beta\n" * 300)
    return data


def s3(s3_server: S3Server, bucket: str, **more: Any) -> dict[str, Any]:
    return {"name": "s3", **s3_server.sink_options(bucket, "p", **TEST_SINK_OPTIONS), **more}


def objects(s3_server: S3Server, bucket: str) -> dict[str, int]:
    listed = s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: o["Size"] for o in listed}


def local_objects(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and "/backups/" in str(p)
    }


def test_one_backup_is_stored_once_to_every_destination(
    tmp_path: Path, folder: Path, s3_server: S3Server
) -> None:
    """One run stores the same artifacts, MD5SUMS and manifest to the local folder and S3;
    list shows where each backup is, and its class in S3."""
    bucket = s3_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:12]}")
    path = write_config(
        tmp_path / "p.toml",
        folder,
        [{"type": "local", "path": str(tmp_path / "vault")}, s3(s3_server, bucket)],
    )
    ran = pgvault_cli("run", path)
    assert ran.returncode == 0, ran.stderr
    backup_id = ran.stdout.strip()
    local = local_objects(tmp_path / "vault")
    remote = {k.removeprefix("p/"): v for k, v in objects(s3_server, bucket).items()}
    assert local == remote
    assert set(local) == {
        f"app/backups/{backup_id}/{name}" for name in ("files.tar.zst", "MD5SUMS", "manifest.json")
    }
    listed = pgvault_cli("list", path)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[-1] == "STORED"
    assert row.startswith(backup_id) and row.endswith("local, s3:STANDARD")
    [entry] = json.loads(pgvault_cli("list", path, "--json").stdout)
    sizes = {s["destination"]: s["size_by_class"] for s in entry["stored"]}
    assert sizes["s3"] == {"STANDARD": sum(remote.values())}
    assert sizes["local"] == {"-": sum(local.values())}


def test_a_failing_destination_that_is_not_required_lags_until_copy(
    tmp_path: Path, folder: Path, s3_server: S3Server
) -> None:
    """With required = false, a backup whose S3 bucket is gone succeeds locally with a warning
    naming s3; check reports s3 unreachable, then lagging; copy brings it up to date (verified),
    a second copy does nothing, and check is OK again."""
    bucket = f"pgvault-{uuid.uuid4().hex[:12]}"  # not created yet: the outage
    path = write_config(
        tmp_path / "p.toml",
        folder,
        [{"type": "local", "path": str(tmp_path / "vault")}, s3(s3_server, bucket, required=False)],
    )
    ran = pgvault_cli("run", path)
    assert ran.returncode == 0, ran.stderr
    backup_id = ran.stdout.strip()
    assert "destination 's3' failed while" in ran.stderr and "it is not required" in ran.stderr
    assert "no such bucket" in ran.stderr
    config = pgvault.load_config(path)
    [problem] = pgvault.check(config).problems
    assert problem.status is pgvault.Status.WARNING and "unreachable" in problem.message

    s3_server.create_bucket(bucket)  # the store is back
    checked = pgvault_cli("check", path)
    assert checked.returncode == 1, checked.stdout
    assert checked.stdout.startswith(
        f"WARNING: destination 's3' lags: 1 backup(s) newer than its newest, such as {backup_id}"
    )
    assert "pgvault copy CONFIG --from local --to s3" in checked.stdout

    copied = pgvault_cli("copy", path, "--from", "local", "--to", "s3")
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout.splitlines()[-1] == "local -> s3: 1 backup(s) copied"
    assert objects(s3_server, bucket)[f"p/app/backups/{backup_id}/manifest.json"] > 0
    again = pgvault_cli("copy", path, "--from", "local", "--to", "s3")
    assert again.stdout.splitlines()[-1] == "local -> s3: 0 backup(s) copied"
    assert pgvault_cli("check", path).returncode == 0
    only_s3 = pgvault.load_config(path).destination("s3")
    vault = pgvault.Vault(only_s3.sink, "app")
    assert vault.verify(vault.manifest(backup_id)).ok


def test_a_failing_required_destination_fails_the_backup_everywhere(
    tmp_path: Path, folder: Path, s3_server: S3Server
) -> None:
    """With required = true (the default), the run fails naming s3 and leaves no backup and no
    leftover in the local folder either."""
    path = write_config(
        tmp_path / "p.toml",
        folder,
        [
            {"type": "local", "path": str(tmp_path / "vault")},
            s3(s3_server, f"pgvault-missing-{uuid.uuid4().hex[:8]}"),
        ],
    )
    ran = pgvault_cli("run", path)
    assert ran.returncode == 1
    [line] = ran.stderr.splitlines()
    assert line.startswith("pgvault: error: destination 's3' failed while committing")
    assert "no such bucket" in line
    assert "it is required, so backup" in line and "does not count" in line
    assert local_objects(tmp_path / "vault") == {}


def test_copy_refuses_a_damaged_artifact_and_writes_no_manifest(
    tmp_path: Path, folder: Path, s3_server: S3Server
) -> None:
    """copy checks digests while streaming: a flipped byte in the source fails that backup,
    naming the artifact, and the target gets neither the artifact nor the manifest."""
    bucket = s3_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:12]}")
    sinks = [{"type": "local", "path": str(tmp_path / "vault")}, s3(s3_server, bucket)]
    solo = write_config(tmp_path / "solo.toml", folder, sinks[:1])
    backup_id = pgvault_cli("run", solo).stdout.strip()
    path = write_config(tmp_path / "p.toml", folder, sinks)
    artifact = tmp_path / "vault" / "app" / "backups" / backup_id / "files.tar.zst"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    copied = pgvault_cli("copy", path, "--from", "local", "--to", "s3")
    assert copied.returncode == 1
    assert f"could not copy {backup_id}" in copied.stderr
    assert "files.tar.zst: sha256 mismatch" in copied.stderr
    assert objects(s3_server, bucket) == {}


def test_restore_reads_the_first_destination_with_a_usable_copy(
    tmp_path: Path, folder: Path, s3_server: S3Server
) -> None:
    """When the local copy of the newest backup lost an artifact, restore (and list's latest)
    take it from S3; with --from local it says what is missing instead."""
    bucket = s3_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:12]}")
    path = write_config(
        tmp_path / "p.toml",
        folder,
        [{"type": "local", "path": str(tmp_path / "vault")}, s3(s3_server, bucket)],
    )
    backup_id = pgvault_cli("run", path).stdout.strip()
    (tmp_path / "vault" / "app" / "backups" / backup_id / "files.tar.zst").unlink()
    out = tmp_path / "out"
    restored = pgvault_cli("restore", path, "latest", "--target-dir", out)
    assert restored.returncode == 0, restored.stderr
    [restored_file] = out.rglob("a.txt")
    assert restored_file.read_text() == "alpha\n" * 500
    failed = pgvault_cli(
        "restore", path, backup_id, "--from", "local", "--target-dir", tmp_path / "o2"
    )
    assert failed.returncode == 1 and "files.tar.zst: missing" in failed.stderr


def test_destination_config_mistakes_name_the_key(tmp_path: Path, folder: Path) -> None:
    """Two unnamed sinks of one type, no required destination, tiers on a sink without storage
    classes, and tiers that do not grow older are each one error naming the key."""
    local = {"type": "local", "path": str(tmp_path / "v")}
    cases = [
        ([local, {**local, "path": str(tmp_path / "w")}], "", "sink[1].name", "two destinations"),
        ([{**local, "required": False}], "", "sink[0].required", "no destination is required"),
        (
            [{**local, "tiers": [{"after": "30d", "storage_class": "GLACIER"}]}],
            "[retention]\nkeep_daily = 7\n",
            "sink[0].tiers",
            "no storage classes",
        ),
    ]
    for sinks, extra, key, words in cases:
        path = write_config(tmp_path / "bad.toml", folder, sinks, extra)
        with pytest.raises(ConfigError, match=words) as caught:
            pgvault.load_config(path)
        assert caught.value.key == key


def test_fan_out_to_sftp_and_gcs_and_restore_from_the_third(
    tmp_path: Path,
    folder: Path,
    sftp_sink_options: dict[str, Any],
    gcs_sink_options: dict[str, Any],
) -> None:
    """A backup goes to local, SFTP and the GCS emulator at once; with the first two copies
    gone, restore reads the GCS one."""
    path = write_config(
        tmp_path / "p.toml",
        folder,
        [
            {"type": "local", "path": str(tmp_path / "vault")},
            {"name": "sftp", **sftp_sink_options},
            {"name": "gcs", **gcs_sink_options},
        ],
    )
    ran = pgvault_cli("run", path)
    assert ran.returncode == 0, ran.stderr
    backup_id = ran.stdout.strip()
    config = pgvault.load_config(path)
    key = f"app/backups/{backup_id}/files.tar.zst"
    stored = {d.name: d.sink.read_bytes(key) for d in config.destinations}
    assert stored["local"] == stored["sftp"] == stored["gcs"]
    row = pgvault_cli("list", path).stdout.splitlines()[1]
    assert row.startswith(backup_id) and " local, sftp, gcs" in row
    for dest in config.destinations[:2]:
        dest.sink.delete(key)
    out = tmp_path / "out"
    restored = pgvault_cli("restore", path, "latest", "--target-dir", out)
    assert restored.returncode == 0, restored.stderr
    [file] = out.rglob("b.txt")
    assert file.read_text() == "beta\n" * 300


def test_prune_applies_each_destinations_retention_and_copy_respects_the_targets(
    tmp_path: Path, folder: Path, s3_server: S3Server
) -> None:
    """prune keeps 1 backup locally and 3 in S3, each by its own retention table; a copy from
    S3 back to the local folder then brings nothing its retention would remove at once, while
    copy of an id brings exactly that one."""
    bucket = s3_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:12]}")
    path = write_config(
        tmp_path / "p.toml",
        folder,
        [
            {"type": "local", "path": str(tmp_path / "vault"), "retention": {"keep_last": 1}},
            s3(s3_server, bucket, retention={"keep_last": 3}),
        ],
    )
    ids = [pgvault_cli("run", path).stdout.strip() for _ in range(3)]
    pruned = pgvault_cli("prune", path)
    assert pruned.returncode == 0, pruned.stderr
    sections = pruned.stdout.split("== destination ")[1:]
    assert [s.split(" ", 1)[0] for s in sections] == ["'local'", "'s3'"]
    assert "kept 1, removed 2 of 2" in sections[0] and "kept 3, removed 0 of 0" in sections[1]
    config = pgvault.load_config(path)
    held = {
        d.name: [m.backup_id for m in pgvault.Vault(d.sink, "app").backups()]
        for d in config.destinations
    }
    assert held == {"local": ids[-1:], "s3": ids[::-1]}
    nothing = pgvault_cli("copy", path, "--from", "s3", "--to", "local")
    assert nothing.stdout.splitlines()[-1] == "s3 -> local: 0 backup(s) copied"
    one = pgvault_cli("copy", path, "--from", "s3", "--to", "local", ids[0])
    assert one.returncode == 0 and one.stdout.startswith(f"copied   {ids[0]}")
    rows = pgvault_cli("list", path).stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ids[::-1]
    assert rows[0].endswith("  local, s3:STANDARD") and rows[2].endswith("  local, s3:STANDARD")
    assert rows[1].endswith("  s3:STANDARD")
