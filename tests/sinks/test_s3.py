"""The s3 sink against moto's real S3 server: options, Object Lock, faults, and whole backups."""

from __future__ import annotations

import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pgvault
from pgvault.exceptions import ConfigError, SinkError
from pgvault.plugin.components import load_component
from pgvault.testing import PostgresCluster
from pgvault.testing.servers import ACCESS_KEY, SECRET_KEY, FlakyProxy, S3Server
from pgvault.testing.storage_fixtures import TEST_SINK_OPTIONS, make_sink
from tests.conftest import pgvault_cli, snapshot_database

ConfigMaker = Callable[..., Path]
MIB = 1 << 20


def big_folder(tmp_path: Path, mib: int) -> Path:
    """A folder with one incompressible file of ``mib`` MiB (a files-source backup of it)."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    with (folder / "blob.bin").open("wb") as f:
        for i in range(mib):
            f.write(i.to_bytes(4, "big") * (MIB // 4))
    return folder


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh bucket on the session's S3 server."""
    return s3_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:16]}")


def test_backup_list_show_verify_restore_through_s3(
    pg_cluster: PostgresCluster,
    rich_db: str,
    make_config: ConfigMaker,
    s3_sink_options: dict[str, Any],
) -> None:
    """A pg_dump backup to S3 is listed, shown, deep-verified and restored by the CLI, intact."""
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)}, sink=s3_sink_options)
    ran = pgvault_cli("run", path)
    assert ran.returncode == 0, ran.stderr
    listed = pgvault_cli("list", path, "--json")
    assert listed.returncode == 0, listed.stderr
    [summary] = json.loads(listed.stdout)
    backup_id = summary["backup_id"]
    shown = pgvault_cli("show", path, backup_id)
    assert shown.returncode == 0 and json.loads(shown.stdout)["backup_id"] == backup_id
    verified = pgvault_cli("verify", path, backup_id, "--deep")
    assert verified.returncode == 0, verified.stderr
    restored = pgvault_cli("restore", path, backup_id, "--target-db", "restored_from_s3")
    assert restored.returncode == 0, restored.stderr
    restored_rows = snapshot_database(pg_cluster, "restored_from_s3")
    assert restored_rows == snapshot_database(pg_cluster, rich_db)
    pg_cluster.drop_database("restored_from_s3")
    for result in (ran, listed, shown, verified, restored):
        assert SECRET_KEY not in result.stdout + result.stderr


def test_storage_class_reaches_artifacts_and_encryption_every_object(
    s3_server: S3Server, bucket: str
) -> None:
    """storage_class reaches artifacts, single-PUT and multipart; index objects (write_bytes)
    keep the bucket's default class; aws:kms encryption reaches all of them."""
    sink = make_sink(
        s3_server.sink_options(
            bucket,
            "p",
            storage_class="STANDARD_IA",
            server_side_encryption="aws:kms",
            sse_kms_key_id="alias/backups",
            **TEST_SINK_OPTIONS,
        )
    )
    sink.write_bytes("index", b"manifest")
    for key, size in (("small", 100), ("large", 11 * MIB)):
        with sink.open_writer(key) as writer:
            writer.write(b"x" * size)
            writer.commit()
    client = s3_server.client()
    for key, storage_class in (("index", "STANDARD"), ("small", "STANDARD_IA")):
        head = client.head_object(Bucket=bucket, Key=f"p/{key}")
        assert head.get("StorageClass", "STANDARD") == storage_class
    for key in ("p/index", "p/small", "p/large"):
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"].endswith("alias/backups")
    assert client.head_object(Bucket=bucket, Key="p/large")["StorageClass"] == "STANDARD_IA"


def test_an_archive_storage_class_keeps_the_vault_usable(
    s3_server: S3Server, bucket: str, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """With storage_class GLACIER, manifests and MD5SUMS stay readable, so list, show, check and
    a shallow verify (sizes from the listing) work; a read of the archived artifact is one line
    that says to restore it and how long that takes; once thawed, verify checks digests."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("archived\n" * 1000)
    options = s3_server.sink_options(bucket, "p", storage_class="GLACIER", **TEST_SINK_OPTIONS)
    path = make_config(
        {"type": "files", "paths": [str(folder)], "checksums": ["sha256", "md5"]}, [], sink=options
    )
    ran = pgvault_cli("run", path)
    assert ran.returncode == 0, ran.stderr
    backup_id = ran.stdout.strip()
    client = s3_server.client()
    prefix = f"p/test/backups/{backup_id}/"
    classes = {
        o["Key"][len(prefix) :]: o.get("StorageClass", "STANDARD")
        for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    }
    assert classes == {"files.tar": "GLACIER", "MD5SUMS": "STANDARD", "manifest.json": "STANDARD"}

    config = pgvault.load_config(path)
    vault = pgvault.Vault.from_config(config)
    assert vault.manifest("latest").backup_id == backup_id
    assert [m.backup_id for m in vault.contents().backups] == [backup_id]
    assert pgvault.check(config).ok
    shallow = pgvault_cli("verify", path)
    assert shallow.returncode == 0, shallow.stderr
    assert shallow.stdout.splitlines() == [
        f"OK {backup_id}: 1 artifact(s), 0 with matching digests, 1 archived (size checked from "
        "the listing)",
        "   files.tar: stored in GLACIER: its size matches the listing; its digests cannot be "
        "re-read until it is restored (thawed)",
    ]
    for args in (("verify", "--deep"), ("restore", "latest", "--target-dir", tmp_path / "out")):
        failed = pgvault_cli(args[0], path, *args[1:])
        assert failed.returncode == 1
        [line] = failed.stderr.splitlines()
        assert f"test/backups/{backup_id}/files.tar is in archive storage class GLACIER" in line
        assert "aws s3api restore-object" in line and "3-5 hours" in line
        assert "credentials" not in line and "access denied" not in line

    client.restore_object(Bucket=bucket, Key=prefix + "files.tar", RestoreRequest={"Days": 1})
    thawed = pgvault_cli("verify", path)
    assert thawed.returncode == 0, thawed.stderr
    assert thawed.stdout == f"OK {backup_id}: 1 artifact(s), digests match\n"


def test_a_manifest_archived_by_an_older_pgvault_is_named_not_blamed_on_credentials(
    s3_server: S3Server, bucket: str, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """A manifest that an older pgvault put in GLACIER makes that one backup damaged, with the
    restore advice; the other backups stay usable."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    path = make_config(
        {"type": "files", "paths": [str(folder)]},
        [],
        sink=s3_server.sink_options(bucket, "p", **TEST_SINK_OPTIONS),
    )
    older, newer = (pgvault_cli("run", path).stdout.strip() for _ in range(2))
    client = s3_server.client()
    key = f"p/test/backups/{newer}/manifest.json"
    client.copy_object(
        Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key}, StorageClass="GLACIER"
    )
    listed = pgvault_cli("list", path)
    assert listed.returncode == 0 and older in listed.stdout and newer not in listed.stdout
    assert f"pgvault: WARNING: damaged backup {newer}" in listed.stderr
    assert "is in archive storage class GLACIER" in listed.stderr
    shown = pgvault_cli("show", path, "latest")
    assert json.loads(shown.stdout)["backup_id"] == older


def test_object_lock_prevents_early_deletion(s3_server: S3Server) -> None:
    """With COMPLIANCE Object Lock, a stored object's version cannot be deleted before its date."""
    bucket = s3_server.create_bucket(f"pgvault-locked-{uuid.uuid4().hex[:12]}", object_lock=True)
    sink = make_sink(
        s3_server.sink_options(
            bucket, "p", object_lock={"mode": "COMPLIANCE", "days": 3}, **TEST_SINK_OPTIONS
        )
    )
    sink.write_bytes("app/backups/1/manifest.json", b"{}")
    client = s3_server.client()
    head = client.head_object(Bucket=bucket, Key="p/app/backups/1/manifest.json")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    days = (head["ObjectLockRetainUntilDate"] - head["LastModified"]).days
    assert days in (2, 3)
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(
            Bucket=bucket, Key="p/app/backups/1/manifest.json", VersionId=head["VersionId"]
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"object_lock": {"mode": "FOREVER", "days": 3}}, "object_lock.mode"),
        ({"object_lock": {"mode": "GOVERNANCE", "days": 0}}, "object_lock.days"),
        ({"part_size_mib": 4}, "part_size_mib must be at least 5"),
        ({"sse_kms_key_id": "k"}, "sse_kms_key_id needs"),
        ({"url": "https://bucket/x"}, "s3://bucket/prefix"),
        ({"storage_class": "COLD"}, "STANDARD_IA"),
    ],
)
def test_bad_options_are_config_errors(
    make_config: ConfigMaker, options: dict[str, Any], message: str
) -> None:
    """A wrong s3 option is a ConfigError naming the file, the sink and the problem."""
    sink = {"type": "s3", "url": "s3://bucket/prefix", **options}
    path = make_config({"type": "files", "paths": ["."]}, sink=sink)
    with pytest.raises(ConfigError, match=message) as info:
        pgvault.load_config(path)
    assert str(path) in str(info.value) and "sink" in str(info.value)


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without s3fs installed, asking for an s3 sink says: pip install 'pgvault[s3]'."""
    monkeypatch.setitem(sys.modules, "s3fs", None)  # makes `import s3fs` fail
    monkeypatch.delitem(sys.modules, "pgvault.sinks.s3", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'pgvault\[s3\]'"):
        load_component("sink", "s3", key="sink.type")


def test_no_such_bucket_fails_at_once(s3_server: S3Server) -> None:
    """Writing to a missing bucket fails on the first try with 'no such bucket <name>'."""
    sink = make_sink(s3_server.sink_options("pgvault-not-there", **TEST_SINK_OPTIONS))
    with pytest.raises(SinkError, match="no such bucket 'pgvault-not-there'") as info:
        sink.write_bytes("k", b"data")
    assert "attempts" not in str(info.value)
    with pytest.raises(SinkError, match="no such bucket"):
        sink.list("")


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [(403, "AccessDenied", "access denied"), (403, "InvalidAccessKeyId", "bad credentials")],
)
def test_permanent_errors_fail_at_once(
    s3_server: S3Server, bucket: str, status: int, code: str, message: str
) -> None:
    """403 answers are not retried: one request, and the message says which error it was."""
    proxy = FlakyProxy(s3_server.endpoint)
    try:
        options = s3_server.sink_options(bucket, **TEST_SINK_OPTIONS)
        sink = make_sink({**options, "endpoint_url": proxy.endpoint})
        proxy.fail(1, status, code)
        with pytest.raises(SinkError, match=message):
            sink.write_bytes("k", b"data")
        assert proxy.requests == 1
    finally:
        proxy.stop()


def test_run_succeeds_through_a_flaky_server(
    s3_server: S3Server,
    bucket: str,
    tmp_path: Path,
    make_config: ConfigMaker,
    retry_log: pytest.LogCaptureFixture,
) -> None:
    """A store answering 503/500 for a while: the run retries, succeeds, and logs no secret."""
    proxy = FlakyProxy(s3_server.endpoint)
    try:
        options = {
            **s3_server.sink_options(bucket, **TEST_SINK_OPTIONS),
            "endpoint_url": proxy.endpoint,
            "retry_attempts": 4,
        }
        path = make_config(
            {"type": "files", "paths": [str(big_folder(tmp_path, 12))]}, [], sink=options
        )
        config = pgvault.load_config(path)
        proxy.fail(2, 503, "SlowDown")
        proxy.fail(1, 500, "InternalError")
        with retry_log.at_level(logging.DEBUG):
            manifest = pgvault.run(config)
        assert proxy.failed == 3
        vault = pgvault.Vault.from_config(config)
        assert [m.backup_id for m in vault.backups()] == [manifest.backup_id]
        assert vault.verify(manifest).ok
        assert "retrying" in retry_log.text
        assert SECRET_KEY not in retry_log.text
        assert SECRET_KEY not in manifest.to_json()
        assert SECRET_KEY not in repr(config.sink) + config.sink.describe()
        assert ACCESS_KEY not in repr(config.sink)
    finally:
        proxy.stop()


class StopAt:
    """A Progress that stops the S3 server once ``limit`` bytes were handed to the sink."""

    def __init__(self, server: S3Server, limit: int) -> None:
        self.server = server
        self.limit = limit
        self.stored = 0
        self.stopped = threading.Event()

    def advance(self, raw: int = 0, stored: int = 0) -> None:
        self.stored += stored
        if self.stored >= self.limit and not self.stopped.is_set():
            self.stopped.set()
            self.server.stop()


def test_server_stopped_mid_upload(tmp_path: Path, make_config: ConfigMaker) -> None:
    """The store vanishes mid-upload: the run fails, nothing new is listed, leftovers are
    removable, and the next run succeeds."""
    server = S3Server().start()
    try:
        bucket = server.create_bucket(f"pgvault-stopped-{uuid.uuid4().hex[:12]}")
        folder = big_folder(tmp_path, 24)
        path = make_config(
            {"type": "files", "paths": [str(folder)]},
            [],
            sink=server.sink_options(bucket, "p", **TEST_SINK_OPTIONS),
        )
        config = pgvault.load_config(path)
        vault = pgvault.Vault.from_config(config)
        first = pgvault.run(config)

        stopper = StopAt(server, 12 * MIB)
        with pytest.raises(SinkError, match=r"cannot connect|attempts"):
            pgvault.run(config, progress=stopper)
        assert stopper.stopped.is_set()

        server.start()  # same port, same objects
        assert [m.backup_id for m in vault.backups()] == [first.backup_id]
        for name in config.sink.list_partials(""):
            config.sink.delete_partial(name)
        assert config.sink.list_partials("") == []
        assert server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        for backup_id in vault.incomplete():
            vault.delete_backup_objects(backup_id)
        assert vault.incomplete() == []

        second = pgvault.run(config)
        assert [m.backup_id for m in vault.backups()] == [second.backup_id, first.backup_id]
        assert vault.verify(second).ok
    finally:
        server.stop()


def test_aborted_write_aborts_its_multipart_upload(s3_server: S3Server, bucket: str) -> None:
    """Aborting a multipart write leaves no unfinished upload in the bucket."""
    sink = make_sink(s3_server.sink_options(bucket, **TEST_SINK_OPTIONS))
    writer = sink.open_writer("big")
    writer.write(b"y" * (12 * MIB))
    client = s3_server.client()
    writer.abort()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_server_dying_mid_upload_is_one_line_without_asyncio_noise(
    s3_server: S3Server, bucket: str, tmp_path: Path, make_config: ConfigMaker
) -> None:
    """The store's front end dies in the middle of a part (connections reset, new ones closed at
    once): the run fails with pgvault's own lines only, no "Task exception was never retrieved"."""
    folder = big_folder(tmp_path, 12)
    proxy = FlakyProxy(s3_server.endpoint)
    try:
        options = s3_server.sink_options(
            bucket, "p", **{**TEST_SINK_OPTIONS, "endpoint_url": proxy.endpoint}
        )
        path = make_config({"type": "files", "paths": [str(folder)]}, [], sink=options)
        proxy.die_after(7 * MIB)
        result = pgvault_cli("run", path)
    finally:
        proxy.stop()
    assert proxy.dead.is_set()
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("pgvault: error: ")
    assert all(line.startswith("pgvault: ") for line in result.stderr.splitlines()), result.stderr
