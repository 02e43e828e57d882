"""wal-daemon and its archive command (ack.sh) on real clusters: ahead of the archiver, and
never an acknowledgement for a file that is not stored."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgvault.testing.fixtures import unavailable
from pgvault.testing.servers import FlakyProxy, S3Server
from pgvault.testing.storage_fixtures import make_sink
from pgvault.wal.archive import WalArchive
from pgvault.wal.configure import archive_command
from tests.wal.conftest import AS_ROOT, WalRig, as_postgres, chown_postgres, python_child
from tests.wal.test_push import fetched_bytes

Rig = Callable[..., WalRig]


class Daemon:
    """A wal-daemon run as postgres, as its systemd unit does."""

    def __init__(self, rig: WalRig) -> None:
        self.rig = rig
        self.log = rig.folder / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                as_postgres([*self.rig.command, "-v", "wal-daemon", str(self.rig.config)]),
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=self.rig.folder,
            )
        pid_file = self.rig.spool / "archive" / "daemon.pid"
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text().strip() == str(self.pid)):
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "wal-daemon did not start"
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        """The daemon's own process id (under runuser when root)."""
        assert self.process is not None
        return python_child(self.process.pid)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the daemon (by its pid) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
        self.process.wait(timeout=60)


@pytest.fixture
def daemons() -> Iterator[Callable[[WalRig], Daemon]]:
    """Start daemons for rigs; every one is stopped after the test."""
    started: list[Daemon] = []

    def start(rig: WalRig) -> Daemon:
        daemon = Daemon(rig).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill(signal.SIGTERM)


def counting_command(rig: WalRig) -> list[str]:
    """A pgvault command that notes every start in ``calls.log`` (the fallback's witness)."""
    calls = rig.folder / "calls.log"
    calls.touch()
    chown_postgres(calls)
    wrapper = rig.folder / "counting-pgvault"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {" ".join(rig.command)} "$@"\n')
    wrapper.chmod(0o755)
    return [str(wrapper)]


def use_daemon_command(rig: WalRig) -> Path:
    """Point the cluster at ack.sh (with a counting fallback); the calls log."""
    value = archive_command(rig.load(), counting_command(rig))
    rig.cluster.execute(f"ALTER SYSTEM SET archive_command = {value}")
    rig.cluster.execute("SELECT pg_reload_conf()")
    return rig.folder / "calls.log"


def test_the_daemon_stores_segments_and_the_archive_command_only_acknowledges(
    wal_rig: Rig, daemons: Callable[[WalRig], Daemon]
) -> None:
    """With the daemon running, every segment is stored by it and acknowledged by ack.sh with
    no Python start; stopped, the archive command stores segments itself."""
    rig = wal_rig(None, wal={"ack_timeout": "20s"})
    calls = use_daemon_command(rig)
    daemon = daemons(rig)
    names = rig.switch(4)
    rig.wait_archived(names[-1])
    for name in names:
        assert fetched_bytes(rig, name) == (rig.cluster.data / "pg_wal" / name).read_bytes()
    assert calls.read_text() == ""  # no fallback: the daemon stored all of them
    assert f"archived {names[-1]}" in daemon.log.read_text()
    assert list((rig.spool / "archive").glob("*.ok")) == []  # consumed
    daemon.kill(signal.SIGTERM)
    assert not (rig.spool / "archive" / "daemon.pid").exists()
    (after,) = rig.switch(1)
    rig.wait_archived(after)
    assert f"wal-push {rig.config} pg_wal/{after}" in calls.read_text()
    assert fetched_bytes(rig, after) == (rig.cluster.data / "pg_wal" / after).read_bytes()


def test_a_stale_acknowledgement_from_another_cluster_is_ignored(wal_rig: Rig) -> None:
    """An .ok left for the next segment's name by another cluster does not acknowledge this
    cluster's segment: ack.sh drops it and stores the file itself."""
    rig = wal_rig(None)
    use_daemon_command(rig)
    row = rig.cluster.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")[0]
    upcoming = str(row[0])
    folder = rig.spool / "archive"
    folder.mkdir(exist_ok=True)
    chown_postgres(folder)
    other_header = "10d10700010000000000" + "ab" * 30  # another system identifier
    stale = folder / f"{upcoming}.ok"
    stale.write_text(f"pgvault-ack 1 {1 << 20} {other_header}\n")
    chown_postgres(stale)
    (name,) = rig.switch(1)
    assert name == upcoming
    rig.wait_archived(name)
    assert fetched_bytes(rig, name) == (rig.cluster.data / "pg_wal" / name).read_bytes()
    assert "ignoring a stale acknowledgement" in rig.cluster.log.read_text()
    assert not stale.exists()


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[tuple[FlakyProxy, dict[str, Any]]]:
    """A FlakyProxy in front of the session's S3 server, and sink options through it."""
    proxy = FlakyProxy(s3_server.endpoint)
    bucket = s3_server.create_bucket(f"pgvault-daemon-{os.getpid()}-{time.monotonic_ns()}")
    yield (
        proxy,
        s3_server.sink_options(
            bucket, "vaults", endpoint_url=proxy.endpoint, retry_attempts=2, retry_max_seconds=2.0
        ),
    )
    proxy.stop()


def test_a_daemon_failure_fails_the_archive_command_fast_and_it_recovers(
    wal_rig: Rig,
    daemons: Callable[[WalRig], Daemon],
    s3_proxy: tuple[FlakyProxy, dict[str, Any]],
) -> None:
    """S3 down: the daemon's reason reaches the server log through ack.sh (exit 1, counted in
    pg_stat_archiver); S3 back: the daemon's retry stores the segment and archiving goes on."""
    proxy, sink = s3_proxy
    rig = wal_rig(None, sink=sink, wal={"ack_timeout": "60s"})
    calls = use_daemon_command(rig)
    daemons(rig)
    (first,) = rig.switch(1)
    rig.wait_archived(first)
    proxy.fail(100_000, 503, "ServiceUnavailable")
    (second,) = rig.switch(1)
    deadline = time.monotonic() + 60
    while rig.archived()[2] == 0:
        assert time.monotonic() < deadline, "the archive command never failed"
        time.sleep(0.1)
    assert f"wal-daemon could not store {second}" in rig.cluster.log.read_text()
    direct = make_sink({**sink, "endpoint_url": f"http://{proxy.upstream}"})
    assert not any(second in i.key for i in direct.list("main/wal/"))
    proxy.heal()
    rig.switch(1)
    rig.wait_archived(second)
    assert fetched_bytes(rig, second) == (rig.cluster.data / "pg_wal" / second).read_bytes()
    assert calls.read_text() == ""  # the daemon, not a fallback, stored it


def test_kill_9_of_the_daemon_mid_upload_and_a_restart_lose_nothing(
    wal_rig: Rig,
    daemons: Callable[[WalRig], Daemon],
    s3_proxy: tuple[FlakyProxy, dict[str, Any]],
) -> None:
    """The daemon killed with SIGKILL while its uploads travel leaves nothing visible; the
    archive command carries on by itself, a restarted daemon takes the rest, and every segment
    ends up archived whole."""
    proxy, sink = s3_proxy
    rig = wal_rig(None, sink=sink, wal={"ack_timeout": "60s", "workers": 2})
    use_daemon_command(rig)
    daemon = daemons(rig)
    (warm,) = rig.switch(1)
    rig.wait_archived(warm)
    proxy.slow(60)
    names = rig.switch(3)
    deadline = time.monotonic() + 60
    while proxy.held < 2:  # two uploads on the wire
        assert time.monotonic() < deadline, daemon.log.read_text()
        time.sleep(0.05)
    daemon.kill(signal.SIGKILL)
    direct = make_sink({**sink, "endpoint_url": f"http://{proxy.upstream}"})
    assert not any(n in i.key for n in names for i in direct.list("main/wal/"))
    proxy.heal()
    daemons(rig)  # restarted with the .ready files still there
    rig.wait_archived(names[-1], timeout=120)
    for name in names:
        assert fetched_bytes(rig, name) == (rig.cluster.data / "pg_wal" / name).read_bytes()
    assert direct.list_partials("main/wal/") == []


def test_a_full_spool_delays_but_never_loses_a_segment(
    wal_rig: Rig, daemons: Callable[[WalRig], Daemon]
) -> None:
    """With the spool's file system full, the daemon stores segments but cannot acknowledge
    them; after ack_timeout the archive command stores them itself (finding them identical)."""
    if not AS_ROOT:
        unavailable("mounting a small tmpfs as the spool needs root")
    rig = wal_rig(None, wal={"ack_timeout": "2s"})
    use_daemon_command(rig)
    spool = rig.spool
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(spool)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        chown_postgres(spool)
        daemon = daemons(rig)
        filler = spool / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * (1 << 20))
        names = rig.switch(2)
        rig.wait_archived(names[-1], timeout=120)
        for name in names:
            assert fetched_bytes(rig, name) == (rig.cluster.data / "pg_wal" / name).read_bytes()
        assert "cannot be acknowledged" in daemon.log.read_text()
        assert "did not store" in rig.cluster.log.read_text()
        daemon.kill(signal.SIGTERM)
    finally:
        subprocess.run(["umount", "-l", str(spool)], capture_output=True)
    config = rig.load()
    assert len(WalArchive(config.sink, "main").list(_only_cluster(rig))) == len(names)


def _only_cluster(rig: WalRig) -> Any:
    config = rig.load()
    (record,) = WalArchive(config.sink, "main").clusters()
    return record.cluster


def test_one_daemon_per_spool(wal_rig: Rig) -> None:
    """A second daemon on the same spool is refused, naming the running one's pid."""
    from pgvault.wal.daemon import AlreadyRunning, WalDaemon

    rig = wal_rig(None)
    first = WalDaemon(rig.load())
    first._take_lock()
    try:
        with pytest.raises(AlreadyRunning, match=f"wal-daemon \\(pid {os.getpid()}\\) is running"):
            WalDaemon(rig.load())._take_lock()
    finally:
        first._release()
    assert not (rig.spool / "archive" / "daemon.pid").exists()


def test_wal_setup_prints_the_lines_to_paste_and_checks_the_server(wal_rig: Rig) -> None:
    """wal-setup prints archive_command (ack.sh, or wal-push with --sync) and restore_command
    quoted for postgresql.conf, and what it checked on the sink and the server."""
    from tests.conftest import pgvault_cli

    rig = wal_rig("push")
    out = pgvault_cli("wal-setup", rig.config, "--pgvault", "'/opt/pg vault/bin/pgvault'")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    config = rig.load()
    command = ["/opt/pg vault/bin/pgvault"]
    assert f"archive_command = {archive_command(config, command)}" in lines
    ack = next(line for line in lines if line.startswith("archive_command = '/bin/sh "))
    script = ack.split()[3]
    assert Path(script).is_file() and script.endswith("/pgvault/wal/ack.sh")
    assert "''/opt/pg vault/bin/pgvault''" in ack  # shell-quoted inside the conf string
    assert any(
        line.startswith("restore_command = '/bin/sh ") and "fetch.sh" in line for line in lines
    )
    assert "# sink " + config.sink.describe() + ": create-if-absent is atomic: ok" in lines
    assert "# server: wal_level = replica: ok" in lines
    assert "# server: archive_mode = on: ok" in lines
    sync = pgvault_cli("wal-setup", rig.config, "--sync", "--no-server", "--pgvault", "pgvault")
    assert f"archive_command = 'pgvault wal-push {rig.config.resolve()} %p'" in sync.stdout
