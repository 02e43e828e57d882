"""wal-push against real clusters: PostgreSQL's archive contract, exactly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgvault.testing.servers import FlakyProxy, S3Server
from pgvault.testing.storage_fixtures import make_sink
from pgvault.transforms.api import DecodeContext
from pgvault.wal.archive import WalArchive, WalConflictError
from pgvault.wal.names import WalError, WalName, WalNameError
from pgvault.wal.push import WalPusher
from tests.wal.conftest import WalRig, chown_postgres, postgres_folder, python_child

Rig = Callable[..., WalRig]


def fetched_bytes(rig: WalRig, name: str) -> bytes:
    """Archived file ``name`` of the rig's vault, decoded and checked."""
    config = rig.load()
    archive = WalArchive(config.sink, config.name)
    (record,) = archive.clusters()
    out: list[bytes] = []
    archive.read(
        record.cluster,
        WalName.parse(name),
        DecodeContext(configured=config.transforms),
        out.append,
    )
    return b"".join(out)


def stored_keys(rig: WalRig) -> dict[str, bytes]:
    """Every WAL object of a local-sink rig, by key, with its stored bytes."""
    root = rig.vault / "main" / "wal"
    return {
        str(p.relative_to(rig.vault)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "clusters" not in p.parts
    }


def test_archive_command_stores_segments_that_read_back_identical(wal_rig: Rig) -> None:
    """Segments PostgreSQL archives through wal-push (zstd, aes-256-gcm) decode to their bytes,
    each stored once under its own name in its timeline's folder."""
    rig = wal_rig("push")
    names = rig.switch(2)
    rig.wait_archived(names[-1])
    for name in names:
        original = (rig.cluster.data / "pg_wal" / name).read_bytes()
        assert fetched_bytes(rig, name) == original
    keys = stored_keys(rig)
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == sorted(names)
    assert all(f"/{name[:16]}/{name}" in " ".join(keys) for name in names)
    assert rig.archived()[2] == 0  # no failure on the way


def test_repush_identical_succeeds_and_a_different_file_is_refused(wal_rig: Rig) -> None:
    """Re-archiving the same bytes (normal after a crash) exits 0 with a warning; different
    bytes under an archived name (segment or history file) exit 1 and overwrite nothing."""
    rig = wal_rig("push")
    (name,) = rig.switch(1)
    rig.wait_archived(name)
    before = stored_keys(rig)

    again = rig.run("wal-push", str(rig.config), f"pg_wal/{name}")
    assert again.returncode == 0, again.stderr
    assert "already archived with identical content" in again.stderr

    other = postgres_folder("pgvault-other-")
    try:
        data = bytearray((rig.cluster.data / "pg_wal" / name).read_bytes())
        data[5000] ^= 0xFF  # same header, same name, other bytes: a split brain's segment
        (other / name).write_bytes(bytes(data))
        history = other / "00000002.history"
        history.write_text("1\t0/3000000\tno recovery target specified\n")
        for path in (other / name, history):
            chown_postgres(path)
        refused = rig.run("wal-push", str(rig.config), str(other / name))
        assert refused.returncode == 1
        assert "a different file is already archived under this name" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1

        pusher = WalPusher(rig.load(), rig.cluster.data)
        assert pusher.push(history).outcome == "stored"
        assert pusher.push(history).outcome == "identical"
        history.write_text("1\t0/4000000\tanother promotion\n")
        with pytest.raises(WalConflictError, match=r"00000002\.history: a different file"):
            pusher.push(history)
    finally:
        shutil.rmtree(other, ignore_errors=True)
    after = stored_keys(rig)
    assert {k: v for k, v in after.items() if k in before} == before
    assert fetched_bytes(rig, "00000002.history").startswith(b"1\t0/3000000")


def test_partial_backup_and_history_files_keep_their_names(wal_rig: Rig) -> None:
    """.partial, .backup and .history files are stored under exactly their own names."""
    rig = wal_rig(None)
    (name,) = rig.switch(1)
    pusher = WalPusher(rig.load(), rig.cluster.data)
    folder = rig.folder / "files"
    folder.mkdir()
    segment = folder / name
    shutil.copy(rig.cluster.data / "pg_wal" / name, segment)
    partial = folder / f"{name}.partial"
    shutil.copy(segment, partial)
    label = folder / f"{name}.00000028.backup"
    label.write_text(f"START WAL LOCATION: 0/{name[-2:]}000028 (file {name})\n")
    history = folder / "00000002.history"
    history.write_text("1\t0/7000000\tno recovery target specified\n")
    results = [pusher.push(p) for p in (segment, partial, label, history)]
    assert [r.outcome for r in results] == ["stored"] * 4
    leaves = sorted(k.rsplit("/", 1)[1] for k in stored_keys(rig))
    assert leaves == sorted(
        [name, f"{name}.partial", f"{name}.00000028.backup", "00000002.history"]
    )
    assert fetched_bytes(rig, f"{name}.partial") == segment.read_bytes()


def test_a_segment_of_another_cluster_is_refused_naming_both(wal_rig: Rig) -> None:
    """A second cluster pointed at the vault is refused: one line names both system ids."""
    first = wal_rig("push")
    (name,) = first.switch(1)
    first.wait_archived(name)
    second = wal_rig(None)
    (theirs,) = second.switch(1)
    ours_id = first.cluster.execute("SELECT system_identifier FROM pg_control_system()")[0][0]
    theirs_id = second.cluster.execute("SELECT system_identifier FROM pg_control_system()")[0][0]
    result = first.run("wal-push", str(first.config), f"pg_wal/{theirs}", cwd=second.cluster.data)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert f"from cluster {theirs_id}" in line and f"archives cluster {ours_id}" in line
    assert "system_identifier" in line
    # Copied into the first cluster's pg_wal, it is refused too: its header names the other.
    shutil.copy(second.cluster.data / "pg_wal" / theirs, first.folder / theirs)
    with pytest.raises(WalError) as copied:
        WalPusher(first.load(), first.cluster.data).push(first.folder / theirs)
    assert f"written by cluster {theirs_id}" in str(copied.value)
    assert f"data directory is cluster {ours_id}" in str(copied.value)


def test_bad_input_is_refused_before_anything_is_stored(wal_rig: Rig, tmp_path: Path) -> None:
    """Empty, truncated or renamed segments and names that are not WAL names are refused with a
    line naming the file; the CLI exits 1 or 2, never above 125, and nothing is stored."""
    rig = wal_rig(None)
    names = rig.switch(2)
    pusher = WalPusher(rig.load(), rig.cluster.data)
    real = (rig.cluster.data / "pg_wal" / names[0]).read_bytes()
    cases: dict[str, tuple[str, bytes]] = {
        "empty": (names[0], b""),
        "truncated": (names[0], real[:100_000]),
        "renamed": (names[1], real),
        "garbage": (names[0], os.urandom(1 << 20)),
    }
    messages = {}
    for label, (name, data) in cases.items():
        folder = tmp_path / label
        folder.mkdir()
        (folder / name).write_bytes(data)
        with pytest.raises(WalError) as caught:
            pusher.push(folder / name)
        messages[label] = str(caught.value)
    assert "is empty" in messages["empty"]
    assert "truncated or padded" in messages["truncated"]
    assert "the name says the segment starts at" in messages["renamed"]
    assert "no WAL page magic" in messages["garbage"]
    for bad in (
        "000000010000000000000001.tmp",
        "0000000100000000000000010",
        "x" * 65,
        "00000001000000000000000a",
        "RECOVERYXLOG",
    ):
        (tmp_path / bad).write_bytes(real)
        with pytest.raises(WalNameError):
            pusher.push(tmp_path / bad)
    assert not (rig.vault / "main").exists()
    result = rig.run("wal-push", str(rig.config), "../../etc/passwd")
    assert result.returncode == 1, result
    assert "'passwd' is not a WAL file name" in result.stderr
    missing = rig.run("wal-push", "/nonexistent/pgvault.toml", f"pg_wal/{names[0]}")
    assert missing.returncode == 2 and "config file not found" in missing.stderr


def test_two_pushers_with_different_content_exactly_one_wins(wal_rig: Rig, tmp_path: Path) -> None:
    """Two pushers racing to archive different bytes under one name: one stores, the other is
    refused, and the stored object is the winner's."""
    rig = wal_rig(None)
    (name,) = rig.switch(1)
    real = (rig.cluster.data / "pg_wal" / name).read_bytes()
    files = []
    for i in range(2):
        folder = tmp_path / f"host{i}"
        folder.mkdir()
        data = bytearray(real)
        data[9000] = i
        (folder / name).write_bytes(bytes(data))
        files.append(folder / name)
    config = rig.load()
    WalArchive(config.sink, config.name).register(_cluster(rig), 1 << 20)
    barrier = threading.Barrier(2)
    outcomes: list[Any] = [None, None]

    def push(i: int) -> None:
        pusher = WalPusher(config, rig.cluster.data)
        barrier.wait()
        try:
            outcomes[i] = pusher.push(files[i]).outcome
        except WalConflictError:
            outcomes[i] = "refused"

    threads = [threading.Thread(target=push, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused", "stored"]
    winner = outcomes.index("stored")
    assert fetched_bytes(rig, name) == files[winner].read_bytes()


def _cluster(rig: WalRig) -> Any:
    from pgvault.wal.archive import ClusterId

    sysid = int(str(rig.cluster.execute("SELECT system_identifier FROM pg_control_system()")[0][0]))
    return ClusterId(15, sysid)


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Any:
    """A FlakyProxy in front of the session's S3 server, and a fresh bucket."""
    proxy = FlakyProxy(s3_server.endpoint)
    bucket = s3_server.create_bucket(f"pgvault-wal-{os.getpid()}-{time.monotonic_ns()}")
    yield (
        proxy,
        s3_server.sink_options(
            bucket,
            "vaults",
            endpoint_url=proxy.endpoint,
            retry_attempts=2,
            retry_max_seconds=2.0,
            timeout=10.0,
        ),
    )
    proxy.stop()


def test_sink_errors_fail_the_archive_command_and_the_next_try_succeeds(
    wal_rig: Rig, s3_proxy: Any
) -> None:
    """A 5xx burst shorter than the retry budget is absorbed; a longer outage fails the archive
    command (counted in pg_stat_archiver, nothing stored), and archiving resumes once S3 is back."""
    proxy, sink = s3_proxy
    rig = wal_rig("push", sink=sink)
    proxy.fail(1, 503, "SlowDown")
    (first,) = rig.switch(1)
    rig.wait_archived(first)
    assert rig.archived()[2] == 0  # the burst was retried inside one call

    proxy.fail(10_000, 503, "ServiceUnavailable")
    (second,) = rig.switch(1)
    deadline = time.monotonic() + 60
    while rig.archived()[2] == 0:
        assert time.monotonic() < deadline, "the archive command never failed"
        time.sleep(0.1)
    direct = make_sink({**sink, "endpoint_url": f"http://{proxy.upstream}"})
    assert not any(second in info.key for info in direct.list("main/wal/"))
    proxy.heal()
    log = rig.cluster.log.read_text()
    assert "the store is throttling or unavailable (HTTP 503" in log
    rig.switch(1)  # wakes an archiver that has given up for now; it retries the oldest first
    rig.wait_archived(second)
    assert fetched_bytes(rig, second) == (rig.cluster.data / "pg_wal" / second).read_bytes()


def test_kill_9_of_the_pusher_mid_upload_leaves_nothing_and_archiving_resumes(
    wal_rig: Rig, s3_proxy: Any
) -> None:
    """wal-push killed with SIGKILL while its upload travels leaves no object; PostgreSQL
    retries, and the segment is then archived whole."""
    proxy, sink = s3_proxy
    rig = wal_rig(None, sink=sink)
    earlier, name = rig.switch(2)
    WalPusher(rig.load(), rig.cluster.data).push(rig.cluster.data / "pg_wal" / earlier)
    proxy.slow(30)
    from tests.wal.conftest import as_postgres

    pusher = subprocess.Popen(
        as_postgres([*rig.command, "wal-push", str(rig.config), f"pg_wal/{name}"]),
        cwd=rig.cluster.data,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while proxy.held < 1:  # the upload is on the wire
        assert pusher.poll() is None, "wal-push ended before its upload was held"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    target = python_child(pusher.pid)
    os.kill(target, signal.SIGKILL)
    pusher.wait()
    proxy.heal()
    config = rig.load()
    assert not any(info.key.endswith(name) for info in config.sink.list("main/wal/"))
    assert (
        WalPusher(config, rig.cluster.data).push(rig.cluster.data / "pg_wal" / name).outcome
        == "stored"
    )
    assert fetched_bytes(rig, name) == (rig.cluster.data / "pg_wal" / name).read_bytes()


@pytest.mark.parametrize("kind", ["gcs", "sftp"])
def test_the_contract_holds_on_every_remote_sink(
    wal_rig: Rig, kind: str, request: pytest.FixtureRequest
) -> None:
    """On GCS and SFTP too: a segment is stored and reads back, the same bytes again succeed,
    different bytes under the name are refused and overwrite nothing."""
    from pgvault.wal.fetch import fetch

    sink = request.getfixturevalue(f"{kind}_sink_options")
    rig = wal_rig(None, sink=sink)
    (name,) = rig.switch(1)
    config = rig.load()
    pusher = WalPusher(config, rig.cluster.data)
    segment = rig.cluster.data / "pg_wal" / name
    assert pusher.push(segment).outcome == "stored"
    assert pusher.push(segment).outcome == "identical"
    other = rig.folder / "other"
    other.mkdir()
    data = bytearray(segment.read_bytes())
    data[7000] ^= 0x10
    (other / name).write_bytes(bytes(data))
    with pytest.raises(WalConflictError):
        pusher.push(other / name)
    target = rig.folder / "RECOVERYXLOG"
    fetch(config, name, target, data_directory=rig.cluster.data)
    assert target.read_bytes() == segment.read_bytes()
