"""Prefetch during recovery: the next segments, downloaded and verified ahead of PostgreSQL.

Recovery asks for one segment at a time, and each ``restore_command`` waits for its download. A
prefetcher (``pgvault wal-prefetch``, started in the background by ``wal-fetch`` when PostgreSQL
asks for ``RECOVERYXLOG`` and ``[wal] prefetch`` is above 0) keeps the next ``prefetch`` segments
of the same timeline in the spool, which lies outside the data directory (a copy of PGDATA, a
``pg_rewind`` or a base backup never carries them along)::

    <spool>/fetch/<major>-<sysid>/<segment>       decoded and fully checked (SHA-256, header)
    <spool>/fetch/<major>-<sysid>/<segment>.ok    its size and header, for the check at use
    <spool>/fetch/<major>-<sysid>/<segment>.inflight   being downloaded (fetch.sh waits a little)
    <spool>/fetch/<major>-<sysid>/want            the segment PostgreSQL asked for last
    <spool>/fetch/prefetch.lock                   held (flock) by the running prefetcher: its pid

A prefetched segment is used only if its size and header still match what was verified, and
its header matches the name and the cluster; otherwise it is dropped and downloaded again.
Nothing "missing" is remembered across calls: a segment absent a moment ago is asked for again
(a standby waits for new WAL). Segments behind the last request, or of another timeline, are
removed; the prefetcher exits after a minute without requests, and a later fetch starts it again.
Memory: one segment per download worker at most (decoded straight to a file).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pgvault.transforms.api import DecodeContext
from pgvault.wal.archive import ClusterId, WalArchive
from pgvault.wal.fetch import download
from pgvault.wal.names import (
    Kind,
    WalError,
    WalName,
    segment_name,
)
from pgvault.wal.spool import fetch_folder, fingerprint, write_atomically

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.wal.prefetch")

IDLE_SECONDS = 60.0
_POLL = 0.05


def request(config: PipelineConfig, cluster: ClusterId, name: WalName) -> None:
    """Tell the prefetcher that PostgreSQL asked for ``name``; start it if none is running.
    Never raises: prefetch only ever makes recovery faster."""
    spool = config.wal.spool
    if spool is None or config.wal.prefetch == 0 or name.kind is not Kind.SEGMENT:
        return
    try:
        folder = fetch_folder(spool, cluster)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(folder / "want", name.text + "\n")
        if _running(spool):
            return
        if config.path is None:
            return
        log_file = (spool / "fetch" / "prefetch.log").open("a")
        with log_file:
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pgvault",
                    "--verbose",
                    "wal-prefetch",
                    str(config.path),
                    cluster.key,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        log.warning("prefetch not started: %s", exc)


def _running(spool: Path) -> bool:
    lock = spool / "fetch" / "prefetch.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def run(config: PipelineConfig, cluster: ClusterId, *, idle: float = IDLE_SECONDS) -> None:
    """The prefetcher's loop (``pgvault wal-prefetch``); returns when idle or when another
    prefetcher holds the lock."""
    spool = config.wal.spool
    if spool is None or config.wal.prefetch == 0:
        return
    folder = fetch_folder(spool, cluster)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(spool / "fetch" / "prefetch.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for operators (and tests)
    archive = WalArchive(config.sink, config.name)
    records = {r.cluster: r for r in archive.clusters()}
    if cluster not in records:
        os.close(fd)
        return
    segment_size = records[cluster].segment_size
    context = DecodeContext(configured=config.transforms)
    ahead = config.wal.prefetch
    pool = concurrent.futures.ThreadPoolExecutor(config.wal.prefetch_workers, "pgvault-prefetch")
    running: dict[str, concurrent.futures.Future[None]] = {}
    retry_at: dict[str, float] = {}
    # Prefetched and not to be fetched again: gone from the spool means PostgreSQL took it.
    completed: set[str] = set()
    last_want: str | None = None
    last_change = time.monotonic()
    log.info("prefetcher for %s: %d segment(s) ahead into %s", cluster, ahead, folder)
    try:
        while True:
            want = _read_want(folder)
            now = time.monotonic()
            if want is not None and want.text != last_want:
                last_want, last_change = want.text, now
            if now - last_change > idle and not running:
                return
            for done in [n for n, f in running.items() if f.done()]:
                error = running.pop(done).exception()
                if error is None:
                    completed.add(done)
                else:
                    retry_at[done] = now + 1.0
                    if not isinstance(error, WalError):
                        log.warning("prefetch of %s failed: %s", done, error)
            if want is None:
                time.sleep(_POLL)
                continue
            segno = want.segno(segment_size)
            wanted = [
                segment_name(want.timeline, segno + i, segment_size) for i in range(1, ahead + 1)
            ]
            _clean(folder, set(wanted) | set(running))
            completed &= set(wanted)
            for name in wanted:
                if len(running) >= config.wal.prefetch_workers:
                    break
                if name in running or name in completed or (folder / f"{name}.ok").exists():
                    continue
                if retry_at.get(name, 0.0) > now:
                    break  # not archived (yet): what follows is not either
                running[name] = pool.submit(
                    _prefetch_one, archive, cluster, WalName.parse(name), folder, context
                )
            time.sleep(_POLL)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        os.close(fd)


def _read_want(folder: Path) -> WalName | None:
    try:
        name = WalName.parse((folder / "want").read_text().strip())
    except (OSError, UnicodeDecodeError, WalError):
        return None
    return name if name.kind is Kind.SEGMENT else None


def _clean(folder: Path, keep: set[str]) -> None:
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            base = entry.name.removesuffix(".ok").removesuffix(".inflight")
            if entry.name == "want" or base in keep:
                continue
            if entry.name.startswith("."):
                # Downloads and small writes in progress use hidden temporary files: keep them
                # unless a killed process left them long ago.
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat().st_mtime < 600:
                        continue
            with contextlib.suppress(OSError):
                Path(entry.path).unlink()


def _prefetch_one(
    archive: WalArchive, cluster: ClusterId, name: WalName, folder: Path, context: DecodeContext
) -> None:
    started = time.monotonic()
    target = folder / name.text
    inflight = folder / f"{name.text}.inflight"
    inflight.touch()  # fetch.sh waits for it rather than downloading the same segment itself
    try:
        envelope = download(archive, cluster, name, target, context)
        ok = f"{fingerprint(target)}\n{envelope.sha256}\n"  # the digest download checked
        write_atomically(folder / f"{name.text}.ok", ok)
    finally:
        with contextlib.suppress(OSError):
            inflight.unlink()
    log.info("prefetched %s in %.2fs", name, time.monotonic() - started)
