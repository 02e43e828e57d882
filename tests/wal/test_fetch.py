"""wal-fetch against real clusters: PostgreSQL's restore contract, exactly."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgvault.testing.servers import FlakyProxy, S3Server
from pgvault.transforms.api import DecodeContext
from pgvault.wal import prefetch
from pgvault.wal.archive import ClusterId, WalArchive, WalIntegrityError
from pgvault.wal.configure import restore_command
from pgvault.wal.fetch import EXIT_ABORT_RECOVERY, WalMissing, fetch
from pgvault.wal.names import WalName
from pgvault.wal.push import WalPusher
from tests.wal.conftest import (
    RestoredCluster,
    WalRig,
    as_postgres,
    base_backup,
    chown_postgres,
)

Rig = Callable[..., WalRig]


def cluster_of(rig: WalRig) -> ClusterId:
    """The rig's cluster as the archive names it."""
    (record,) = WalArchive(rig.load().sink, "main").clusters()
    return record.cluster


def stop_prefetcher(rig: WalRig) -> None:
    """Stop the background prefetcher a fetch started (by its pid, from its lock file)."""
    lock = rig.spool / "fetch" / "prefetch.lock"
    with contextlib.suppress(OSError, ValueError):
        pid = int(lock.read_text().strip())
        os.kill(pid, signal.SIGTERM)


def copy_as_postgres(source: Path, target: Path) -> None:
    """``cp -a`` as postgres: a data directory keeps its owner and modes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    chown_postgres(target.parent)
    done = subprocess.run(as_postgres(["cp", "-a", str(source), str(target)]), capture_output=True)
    assert done.returncode == 0, done.stderr


def test_recovery_replays_the_archive_with_and_without_prefetch(wal_rig: Rig) -> None:
    """A base backup recovers through wal-fetch to the last archived transaction, on 16 MiB
    segments; through fetch.sh with prefetch it does too, most segments moved from the spool
    without a Python start."""
    rig = wal_rig("push", segsize_mib=16, wal={"prefetch": 4})
    base = base_backup(rig, rig.folder / "base")
    rig.cluster.execute("CREATE TABLE after_backup AS SELECT g FROM generate_series(1, 5000) g")
    names = rig.switch(5)
    rig.wait_archived(names[-1])
    rig.cluster.stop()
    calls = rig.folder / "calls.log"
    counting = rig.folder / "counting-pgvault"
    counting.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {" ".join(rig.command)} "$@"\n')
    counting.chmod(0o755)
    calls.touch()
    chown_postgres(calls)
    plain = rig.folder / "plain.toml"
    plain.write_text(rig.config.read_text().replace("prefetch = 4", "prefetch = 0"))
    chown_postgres(plain)
    restored_counts = {}
    for how in ("plain", "prefetch"):
        config = rig.load() if how == "prefetch" else pgvault_load(plain)
        command = restore_command(config, [str(counting)])
        copy = rig.folder / how / "data"
        copy_as_postgres(base, copy)
        restored = RestoredCluster(rig.cluster, copy, {"restore_command": command})
        try:
            started = restored.start()
            assert started.returncode == 0, restored.log.read_text()[-3000:]
            assert restored.execute("SELECT count(*) FROM after_backup") == [(5000,)]
            log = restored.log.read_text()
            restored_counts[how] = log.count("restored log file")
            assert all(f'restored log file "{n}" from archive' in log for n in names)
        finally:
            restored.stop()
            stop_prefetcher(rig)
    # Python starts for the segments written after the backup, per run (PostgreSQL asks for
    # the last one twice, and probes for history files: those are not counted).
    python_starts = {
        how: sum(
            1
            for line in calls.read_text().splitlines()
            if str(config_path) in line and any(f" {n} pg_wal/RECOVERYXLOG" in line for n in names)
        )
        for how, config_path in (("plain", plain), ("prefetch", rig.config))
    }
    assert python_starts["plain"] >= len(names)
    assert python_starts["prefetch"] < python_starts["plain"], python_starts


def pgvault_load(path: Path) -> Any:
    import pgvault

    return pgvault.load_config(path)


def test_a_file_not_archived_exits_1_and_writes_nothing(wal_rig: Rig) -> None:
    """Absent segments and history files exit 1 (PostgreSQL's "not archived"), no target file;
    a bad name or target aborts recovery (200) instead of looking absent."""
    rig = wal_rig("push")
    (name,) = rig.switch(1)
    rig.wait_archived(name)
    target = "pg_wal/RECOVERYXLOG"
    absent = rig.run("wal-fetch", str(rig.config), "0000000100000000000000FF", target)
    assert absent.returncode == 1, absent.stderr
    assert not (rig.cluster.data / target).exists()
    history = rig.run("wal-fetch", str(rig.config), "00000005.history", "pg_wal/RECOVERYHISTORY")
    assert history.returncode == 1 and history.stderr == ""
    bad = rig.run("wal-fetch", str(rig.config), "../../etc/passwd", target)
    assert bad.returncode == EXIT_ABORT_RECOVERY
    assert "is not a WAL file name" in bad.stderr
    # pg_rewind names its own target: fetched, and no prefetch is started for it.
    other = rig.run("wal-fetch", str(rig.config), name, f"pg_wal/{name}.copy")
    assert other.returncode == 0, other.stderr
    assert (rig.cluster.data / "pg_wal" / f"{name}.copy").read_bytes() == (
        rig.cluster.data / "pg_wal" / name
    ).read_bytes()
    assert not (rig.spool / "fetch").exists()


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[tuple[FlakyProxy, dict[str, Any]]]:
    """A FlakyProxy in front of the session's S3 server, and sink options through it."""
    proxy = FlakyProxy(s3_server.endpoint)
    bucket = s3_server.create_bucket(f"pgvault-fetch-{os.getpid()}-{time.monotonic_ns()}")
    yield (
        proxy,
        s3_server.sink_options(
            bucket, "vaults", endpoint_url=proxy.endpoint, retry_attempts=2, retry_max_seconds=2.0
        ),
    )
    proxy.stop()


def test_an_unreachable_sink_aborts_recovery_unless_this_is_a_standby(
    wal_rig: Rig, s3_proxy: tuple[FlakyProxy, dict[str, Any]]
) -> None:
    """With S3 failing, wal-fetch exits 200 (PostgreSQL aborts recovery, never ends it early);
    in a data directory with standby.signal (or with --on-error missing) it exits 1 so a standby
    keeps running; --on-error abort overrides that."""
    proxy, sink = s3_proxy
    rig = wal_rig(None, sink=sink)
    (name,) = rig.switch(1)
    WalPusher(rig.load(), rig.cluster.data).push(rig.cluster.data / "pg_wal" / name)
    standby = rig.folder / "standby"
    (standby / "global").mkdir(parents=True)
    (standby / "pg_wal").mkdir()
    shutil.copy(rig.cluster.data / "global" / "pg_control", standby / "global")
    shutil.copy(rig.cluster.data / "PG_VERSION", standby)
    (standby / "standby.signal").touch()
    for path in (standby, standby / "global", standby / "pg_wal"):
        chown_postgres(path)
    proxy.fail(100_000, 503, "ServiceUnavailable")
    target = "pg_wal/RECOVERYXLOG"
    down = rig.run("wal-fetch", str(rig.config), name, target)
    assert down.returncode == EXIT_ABORT_RECOVERY, down.stderr
    assert "HTTP 503" in down.stderr and "recovery must stop" in down.stderr
    as_standby = rig.run("wal-fetch", str(rig.config), name, target, cwd=standby)
    assert as_standby.returncode == 1
    assert "reporting the file as not archived" in as_standby.stderr
    forced = rig.run("wal-fetch", str(rig.config), name, target, "--on-error", "abort", cwd=standby)
    assert forced.returncode == EXIT_ABORT_RECOVERY
    assert not (rig.cluster.data / target).exists() and not (standby / target).exists()


def test_damaged_or_misplaced_objects_abort_and_write_nothing(wal_rig: Rig) -> None:
    """A flipped stored byte, an object copied under another name and a truncated object are
    refused as damaged: no target file, no temporary left, exit 200."""
    rig = wal_rig(None)
    names = rig.switch(3)
    config = rig.load()
    pusher = WalPusher(config, rig.cluster.data)
    for name in names:
        pusher.push(rig.cluster.data / "pg_wal" / name)
    cluster = cluster_of(rig)
    archive = WalArchive(config.sink, "main")

    def stored(name: str) -> Path:
        return rig.vault / archive.key(cluster, WalName.parse(name))

    flipped = bytearray(stored(names[0]).read_bytes())
    flipped[-100] ^= 0x01
    stored(names[0]).write_bytes(bytes(flipped))
    stored(names[1]).write_bytes(stored(names[2]).read_bytes())  # moved under another name
    target_dir = rig.folder / "restore_to"
    target_dir.mkdir()
    context = DecodeContext(configured=config.transforms)
    for name, why in ((names[0], "failed authentication"), (names[1], "was moved or copied")):
        with pytest.raises(WalIntegrityError, match=why):
            fetch(config, name, target_dir / "RECOVERYXLOG", cluster=cluster, context=context)
    stored(names[2]).write_bytes(stored(names[2]).read_bytes()[:-5000])
    with pytest.raises(WalIntegrityError, match="truncated"):
        fetch(config, names[2], target_dir / "RECOVERYXLOG", cluster=cluster, context=context)
    assert list(target_dir.iterdir()) == []
    chown_postgres(
        rig.vault, tree=True
    )  # pushed by this test as root; PostgreSQL reads as postgres
    cli = rig.run("wal-fetch", str(rig.config), names[0], "pg_wal/RECOVERYXLOG")
    assert cli.returncode == EXIT_ABORT_RECOVERY
    assert "failed authentication" in cli.stderr
    assert not (rig.cluster.data / "pg_wal" / "RECOVERYXLOG").exists()


def test_an_interrupted_download_leaves_no_target(
    wal_rig: Rig, s3_proxy: tuple[FlakyProxy, dict[str, Any]]
) -> None:
    """The connection failing after the object's size was read: no %p, no temporary file;
    the next fetch writes it whole."""
    proxy, sink = s3_proxy
    rig = wal_rig(None, sink=sink)
    (name,) = rig.switch(1)
    config = rig.load()
    WalPusher(config, rig.cluster.data).push(rig.cluster.data / "pg_wal" / name)
    cluster = cluster_of(rig)
    folder = rig.folder / "pg_wal_copy"
    folder.mkdir()
    proxy.fail(100, 500, "InternalError", after=1)  # the HEAD passes, every read then fails
    with pytest.raises(Exception, match="HTTP 500"):
        fetch(config, name, folder / "RECOVERYXLOG", cluster=cluster)
    assert list(folder.iterdir()) == []
    proxy.heal()
    result = fetch(config, name, folder / "RECOVERYXLOG", cluster=cluster)
    assert result.source == "sink"
    assert (folder / "RECOVERYXLOG").read_bytes() == (
        rig.cluster.data / "pg_wal" / name
    ).read_bytes()


def test_a_prefetched_copy_is_checked_again_before_use(wal_rig: Rig) -> None:
    """A prefetched segment that changed in the spool is dropped and downloaded again; an
    intact one is moved into place; absence is never cached."""
    rig = wal_rig(None, wal={"prefetch": 2})
    names = rig.switch(2)
    config = rig.load()
    pusher = WalPusher(config, rig.cluster.data)
    pusher.push(rig.cluster.data / "pg_wal" / names[0])
    cluster = cluster_of(rig)
    archive = WalArchive(config.sink, "main")
    folder = prefetch.fetch_folder(rig.spool, cluster)
    folder.mkdir(parents=True)
    context = DecodeContext(configured=config.transforms)
    prefetch._prefetch_one(archive, cluster, WalName.parse(names[0]), folder, context)
    spooled = folder / names[0]
    damaged = bytearray(spooled.read_bytes())
    damaged[300_000] ^= 0x55
    spooled.write_bytes(bytes(damaged))
    target = rig.folder / "RECOVERYXLOG"
    first = fetch(config, names[0], target, cluster=cluster, context=context)
    assert first.source == "sink"
    original = (rig.cluster.data / "pg_wal" / names[0]).read_bytes()
    assert target.read_bytes() == original
    assert not spooled.exists()
    prefetch._prefetch_one(archive, cluster, WalName.parse(names[0]), folder, context)
    second = fetch(config, names[0], target, cluster=cluster, context=context)
    assert second.source == "prefetch" and target.read_bytes() == original
    with pytest.raises(WalMissing):
        fetch(config, names[1], target, cluster=cluster, context=context)
    pusher.push(rig.cluster.data / "pg_wal" / names[1])
    assert fetch(config, names[1], target, cluster=cluster, context=context).source == "sink"
