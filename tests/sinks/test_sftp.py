"""The sftp sink against a real SSH server: host keys, key auth, faults and whole backups."""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pgvault
from pgvault.exceptions import ConfigError, SinkError
from pgvault.plugin.components import load_component
from pgvault.testing import PostgresCluster
from pgvault.testing.servers import SftpServer
from pgvault.testing.storage_fixtures import TEST_SINK_OPTIONS, make_sink
from tests.conftest import snapshot_database

ConfigMaker = Callable[..., Path]
MIB = 1 << 20


def big_folder(tmp_path: Path, mib: int) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    with (folder / "blob.bin").open("wb") as f:
        for i in range(mib):
            f.write(i.to_bytes(4, "big") * (MIB // 4))
    return folder


@pytest.fixture
def own_server(tmp_path: Path) -> Any:
    """A dedicated SFTP server this test may stop and restart."""
    server = SftpServer(base=tmp_path / "sftp").start()
    yield server
    server.close()
    # Anything the server left for the garbage collector is reported here, against the test
    # that stopped it, rather than in whichever test happens to run next.
    gc.collect()


def test_backup_verify_restore_through_sftp(
    pg_cluster: PostgresCluster,
    rich_db: str,
    make_config: ConfigMaker,
    sftp_sink_options: dict[str, Any],
) -> None:
    """A pg_dump backup over SFTP is listed, deep-verified and restored with identical rows."""
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)}, sink=sftp_sink_options)
    config = pgvault.load_config(path)
    manifest = pgvault.run(config)
    vault = pgvault.Vault.from_config(config)
    assert [m.backup_id for m in vault.backups()] == [manifest.backup_id]
    assert vault.verify(manifest, deep=True).ok
    pgvault.restore(config, manifest.backup_id, target_db="restored_from_sftp")
    restored = snapshot_database(pg_cluster, "restored_from_sftp")
    assert restored == snapshot_database(pg_cluster, rich_db)
    pg_cluster.drop_database("restored_from_sftp")


def test_unknown_host_is_refused(sftp_server: SftpServer, tmp_path: Path) -> None:
    """A server whose key is not in known_hosts is refused at once, saying how to trust it."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    sink = make_sink(sftp_server.sink_options("/x", known_hosts=str(empty), **TEST_SINK_OPTIONS))
    started = time.monotonic()
    with pytest.raises(SinkError, match=r"host key .* refused.*ssh-keyscan") as info:
        sink.list("")
    assert time.monotonic() - started < 5
    assert "attempts" not in str(info.value)


def test_missing_known_hosts_file_is_explained(sftp_server: SftpServer, tmp_path: Path) -> None:
    """Without a known_hosts file the sink says which file it needs, instead of trusting."""
    sink = make_sink(
        sftp_server.sink_options("/x", known_hosts=str(tmp_path / "nowhere"), **TEST_SINK_OPTIONS)
    )
    with pytest.raises(SinkError, match=r"nowhere does not exist.*allow_unknown_host"):
        sink.write_bytes("k", b"v")


def test_allow_unknown_host_connects(sftp_server: SftpServer, tmp_path: Path) -> None:
    """allow_unknown_host = true skips the host-key check (explicitly asked for)."""
    options = sftp_server.sink_options("/allowed", **TEST_SINK_OPTIONS)
    options.update(known_hosts=str(tmp_path / "nowhere"), allow_unknown_host=True)
    sink = make_sink(options)
    sink.write_bytes("k", b"v")
    assert sink.read_bytes("k") == b"v"


def test_wrong_key_is_refused(sftp_server: SftpServer, tmp_path: Path) -> None:
    """A key the server does not accept fails at once with 'authentication failed'."""
    import asyncssh

    other = tmp_path / "other_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(other))
    sink = make_sink(sftp_server.sink_options("/x", key_file=str(other), **TEST_SINK_OPTIONS))
    with pytest.raises(SinkError, match="authentication failed") as info:
        sink.list("")
    assert "attempts" not in str(info.value)


def test_bad_urls_are_config_errors(make_config: ConfigMaker) -> None:
    """A password in the URL or a non-sftp URL is a ConfigError naming the sink."""
    for url, message in [
        ("sftp://u:pw@host/p", "must not hold a password"),
        ("ftp://host/p", "sftp://user@host:port/path"),
    ]:
        path = make_config({"type": "files", "paths": ["."]}, sink={"type": "sftp", "url": url})
        with pytest.raises(ConfigError, match=message):
            pgvault.load_config(path)


class AtBytes:
    """A Progress that calls ``action`` once ``limit`` bytes were handed to the sink."""

    def __init__(self, limit: int, action: Callable[[], None]) -> None:
        self.limit = limit
        self.action = action
        self.stored = 0
        self.fired = threading.Event()

    def advance(self, raw: int = 0, stored: int = 0) -> None:
        self.stored += stored
        if self.stored >= self.limit and not self.fired.is_set():
            self.fired.set()
            self.action()


def test_server_stopped_mid_upload(
    own_server: SftpServer, tmp_path: Path, make_config: ConfigMaker
) -> None:
    """The server vanishes mid-upload: the run fails, nothing new is listed, the temporary file
    is removable, and the next run succeeds."""
    path = make_config(
        {"type": "files", "paths": [str(big_folder(tmp_path, 16))]},
        [],
        sink=own_server.sink_options("/vault", **TEST_SINK_OPTIONS),
    )
    config = pgvault.load_config(path)
    vault = pgvault.Vault.from_config(config)
    first = pgvault.run(config)

    stopper = AtBytes(8 * MIB, own_server.stop)
    with pytest.raises(SinkError):
        pgvault.run(config, progress=stopper)
    assert stopper.fired.is_set()

    own_server.start()
    assert [m.backup_id for m in vault.backups()] == [first.backup_id]
    for name in config.sink.list_partials(""):
        config.sink.delete_partial(name)
    assert config.sink.list_partials("") == []
    for backup_id in vault.incomplete():
        vault.delete_backup_objects(backup_id)

    second = pgvault.run(config)
    assert [m.backup_id for m in vault.backups()] == [second.backup_id, first.backup_id]
    assert vault.verify(second).ok


def test_dropped_connection_is_retried(
    own_server: SftpServer,
    tmp_path: Path,
    make_config: ConfigMaker,
    retry_log: pytest.LogCaptureFixture,
) -> None:
    """Connections cut mid-upload by a server that comes straight back: the run reconnects,
    re-sends the part and succeeds."""
    options = own_server.sink_options("/vault", **TEST_SINK_OPTIONS)
    # A request caught by the stop can hang (a handshake the server will never finish) until the
    # request timeout: keep that short and the budget long enough to retry after it, as a user
    # with a flaky link would configure.
    options.update(retry_attempts=6, timeout=3.0, retry_max_seconds=60.0)
    path = make_config(
        {"type": "files", "paths": [str(big_folder(tmp_path, 16))]}, [], sink=options
    )
    config = pgvault.load_config(path)

    def restart_once_a_retry_was_logged() -> None:
        # Restart only after the sink has met the dead server: a fixed delay could fall between
        # two requests (under load it did), and then nothing would have been retried at all.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any("retrying" in r.getMessage() for r in list(retry_log.records)):
                break
            time.sleep(0.05)
        own_server.start()

    restart = threading.Thread(target=restart_once_a_retry_was_logged)

    def bounce() -> None:
        own_server.stop()
        restart.start()  # half the data is still to upload, so a request must fail now

    progress = AtBytes(8 * MIB, bounce)
    with retry_log.at_level(logging.WARNING, logger="pgvault"):
        try:
            manifest = pgvault.run(config, progress=progress)
        finally:
            restart.join()
    assert progress.fired.is_set()
    assert "retrying" in retry_log.text
    assert pgvault.Vault.from_config(config).verify(manifest).ok


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sshfs installed, asking for an sftp sink says: pip install 'pgvault[sftp]'."""
    monkeypatch.setitem(sys.modules, "sshfs", None)
    monkeypatch.delitem(sys.modules, "pgvault.sinks.sftp", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'pgvault\[sftp\]'"):
        load_component("sink", "sftp", key="sink.type")


def test_aborted_and_deleted_objects_leave_no_empty_folders(own_server: SftpServer) -> None:
    """An aborted write (an interrupted backup) and a deleted backup leave no empty folder on the
    server: SFTP folders are real, and no listing of objects would ever show them again."""
    sink = make_sink(own_server.sink_options("/vault", **TEST_SINK_OPTIONS))
    writer = sink.open_writer("app/backups/20261101T010000Z-abcdef/dump.pgdump")
    writer.write(b"x" * 1000)
    writer.abort()
    sink.write_bytes("app/backups/20261102T010000Z-abcdef/dump.pgdump", b"data")
    sink.write_bytes("app/backups/20261102T010000Z-abcdef/manifest.json", b"{}")
    sink.delete("app/backups/20261102T010000Z-abcdef/manifest.json")
    sink.delete("app/backups/20261102T010000Z-abcdef/dump.pgdump")
    assert sorted(
        p.relative_to(own_server.root).as_posix() for p in own_server.root.rglob("*")
    ) == ["vault"]
