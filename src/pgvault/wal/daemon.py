"""The long-lived pusher, ``pgvault wal-daemon``: WAL archived ahead of PostgreSQL's archiver.

PostgreSQL runs ``archive_command`` once per segment, one at a time, and waits for it. A Python
start per segment (about half a second here) caps a synchronous archiver at two segments a
second, far below what a bulk load writes. The daemon instead watches
``pg_wal/archive_status/*.ready`` (history files first, then in name order, as PostgreSQL does),
pushes up to ``[wal] workers`` files at once through one warm sink client, and acknowledges
each file in the spool once it is durable::

    <spool>/archive/daemon.lock       held (flock) by the running daemon: one per spool
    <spool>/archive/daemon.pid        its process id, for the acknowledging script
    <spool>/archive/<name>.ok         "pgvault-ack 1 <size> <first 40 bytes, hex>": stored
    <spool>/archive/<name>.error      why the last try failed (the daemon keeps retrying)

The ``archive_command`` is a POSIX shell script shipped in the package (``ack.sh``; ``pgvault
wal-setup`` prints its line): it exits 0 only for an ``.ok`` that matches the very file
PostgreSQL hands it, fails fast with the reason on ``.error``, and stores the file itself
(``pgvault wal-push``) when no daemon runs, when an acknowledgement is stale, or when the daemon
has not answered within ``ack_timeout``. So nothing is ever acknowledged that is not durably
stored, and archiving goes on when the daemon is down.

Restarts are safe: uploads in flight when the daemon dies leave nothing visible (atomic
commits), their ``.ready`` files are still there, and the next daemon pushes them again (a file
already stored with the same bytes counts as stored). Acknowledgements nobody will read (their
``.ready`` is gone) are removed. Memory: at most about two segments per worker (the raw segment
and its encoded form).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from pgvault.exceptions import PgVaultError
from pgvault.wal.names import WalError
from pgvault.wal.push import PushResult, WalFileGone, WalPusher

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.wal.daemon")

POLL_SECONDS = 0.05
METRICS_SECONDS = 10.0
ORPHAN_SECONDS = 30.0
MAX_BACKOFF = 30.0


def ack_folder(spool: Path) -> Path:
    """Where the daemon writes acknowledgements."""
    return spool / "archive"


def archive_order(name: str) -> tuple[int, str]:
    """PostgreSQL's order: timeline history files first, then by name (oldest segment first)."""
    return (0 if name.endswith(".history") else 1, name)


@attrs.define
class DaemonStats:
    """Figures of a running daemon (also written to the metrics file)."""

    pushed: int = 0
    identical: int = 0
    failures: int = 0
    last_archived: str | None = None
    last_archived_at: datetime | None = None
    ready: int = 0


class AlreadyRunning(WalError):
    """Another daemon holds the spool's lock."""


class WalDaemon:
    """One daemon for one pipeline (see the module doc); :meth:`run` until ``stop`` is set."""

    def __init__(self, config: PipelineConfig, *, poll: float = POLL_SECONDS) -> None:
        settings = config.wal
        where = config.where()
        if settings.pg_wal is None:
            raise WalError(f"{where}: wal-daemon needs [wal] pg_wal (the cluster's pg_wal folder)")
        if settings.spool is None:
            raise WalError(f"{where}: wal-daemon needs [wal] spool (a folder outside PGDATA)")
        self.config = config
        self.pg_wal = settings.pg_wal
        self.status = settings.pg_wal / "archive_status"
        self.acks = ack_folder(settings.spool)
        data_directory = settings.pg_wal.parent
        has_control = (data_directory / "global" / "pg_control").exists()
        self.pusher = WalPusher(config, data_directory if has_control else None)
        self.poll = poll
        self.stats = DaemonStats()
        self._attempts: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._acked: set[str] = set()
        self._lock_fd: int | None = None

    # Lifecycle

    def _take_lock(self) -> None:
        self.acks.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.acks / "daemon.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = _read_pid(self.acks / "daemon.pid")
            raise AlreadyRunning(
                f"another wal-daemon{f' (pid {pid})' if pid else ''} is running for spool "
                f"{self.acks.parent}"
            ) from None
        self._lock_fd = fd
        _write_small(self.acks / "daemon.pid", f"{os.getpid()}\n")

    def _release(self) -> None:
        with contextlib.suppress(OSError):
            if _read_pid(self.acks / "daemon.pid") == os.getpid():
                (self.acks / "daemon.pid").unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def run(self, stop: threading.Event | None = None) -> DaemonStats:
        """Push until ``stop`` is set (or KeyboardInterrupt/SIGTERM): see the module doc."""
        stop = stop or threading.Event()
        self._take_lock()
        workers = self.config.wal.workers
        pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="pgvault-push")
        running: dict[str, concurrent.futures.Future[PushResult]] = {}
        next_metrics = 0.0
        log.info(
            "wal-daemon for %s: watching %s, %d worker(s), acknowledging in %s",
            self.config.name,
            self.status,
            workers,
            self.acks,
        )
        try:
            while not stop.is_set():
                ready = self._ready()
                self.stats.ready = len(ready)
                for name in [n for n, f in running.items() if f.done()]:
                    self._finish(name, running.pop(name))
                now = time.monotonic()
                for name in sorted(ready, key=archive_order):
                    if len(running) >= workers:
                        break
                    if name in running or name in self._acked:
                        continue
                    if self._retry_at.get(name, 0.0) > now:
                        continue
                    running[name] = pool.submit(self.pusher.push, self.pg_wal / name)
                self._forget(ready, running)
                if now >= next_metrics:
                    self._metrics()
                    next_metrics = now + METRICS_SECONDS
                if running and not any(f.done() for f in running.values()):
                    concurrent.futures.wait(
                        running.values(),
                        timeout=self.poll,
                        return_when=concurrent.futures.FIRST_COMPLETED,
                    )
                else:
                    stop.wait(self.poll)
        finally:
            # Pushes under way finish (they are bounded, and each is then acknowledged);
            # those not started are left to the next daemon or to the archive command itself.
            pool.shutdown(wait=True, cancel_futures=True)
            for name, future in running.items():
                if future.done() and not future.cancelled():
                    self._finish(name, future)
            self._metrics()
            self._release()
        return self.stats

    # One scan

    def _ready(self) -> set[str]:
        try:
            with os.scandir(self.status) as entries:
                return {e.name[: -len(".ready")] for e in entries if e.name.endswith(".ready")}
        except FileNotFoundError:
            return set()
        except OSError as exc:
            log.error("cannot read %s: %s", self.status, exc.strerror or exc)
            return set()

    def _finish(self, name: str, future: concurrent.futures.Future[PushResult]) -> None:
        try:
            result = future.result()
        except WalFileGone as exc:
            if not (self.status / f"{name}.ready").exists():
                return  # archived meanwhile by the archive command itself, then recycled
            self._failed(name, exc)
            return
        except PgVaultError as exc:
            self._failed(name, exc)
            return
        except Exception as exc:  # a bug must not stop archiving: report it like a failure
            log.exception("internal error pushing %s", name)
            self._failed(name, exc)
            return
        self._attempts.pop(name, None)
        self._retry_at.pop(name, None)
        if result.outcome == "identical":
            self.stats.identical += 1
        else:
            self.stats.pushed += 1
        self.stats.last_archived = name
        self.stats.last_archived_at = result.finished_at
        with contextlib.suppress(OSError):
            (self.acks / f"{name}.error").unlink()
        try:
            _write_small(self.acks / f"{name}.ok", result.fingerprint + "\n")
        except OSError as exc:
            # The file is stored, but unacknowledged: the archive command stores it again
            # itself after ack_timeout (finding it identical). Slow, never unsafe.
            log.error(
                "%s is archived but cannot be acknowledged in %s: %s",
                name,
                self.acks,
                exc.strerror or exc,
            )
            return
        self._acked.add(name)

    def _failed(self, name: str, exc: BaseException) -> None:
        self.stats.failures += 1
        attempts = self._attempts.get(name, 0) + 1
        self._attempts[name] = attempts
        self._retry_at[name] = time.monotonic() + min(MAX_BACKOFF, 0.5 * 2 ** (attempts - 1))
        message = str(exc).replace("\n", " ") or type(exc).__name__
        log.error("could not archive %s (attempt %d): %s", name, attempts, message)
        with contextlib.suppress(OSError):
            _write_small(self.acks / f"{name}.error", message + "\n")

    def _forget(self, ready: set[str], running: Mapping[str, object]) -> None:
        """Drop what PostgreSQL is done with: acknowledged names no longer ``.ready``, and old
        acknowledgements nobody will read."""
        self._acked &= ready
        for table in (self._attempts, self._retry_at):
            for name in list(table):
                if name not in ready and name not in running:
                    del table[name]
        cutoff = time.time() - ORPHAN_SECONDS
        with contextlib.suppress(OSError), os.scandir(self.acks) as entries:
            for entry in entries:
                base, dot, kind = entry.name.rpartition(".")
                if not dot or kind not in ("ok", "error") or base in ready:
                    continue
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < cutoff:
                        Path(entry.path).unlink()

    def _metrics(self) -> None:
        path = self.config.metrics_file
        if path is None:
            return
        from pgvault.observability import record_wal_metrics

        try:
            record_wal_metrics(
                path,
                self.config.name,
                last_archived_at=self.stats.last_archived_at,
                ready=self.stats.ready,
                daemon_at=datetime.now(UTC),
            )
        except Exception as exc:
            log.warning("could not update metrics file %s: %s", path, exc)


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _write_small(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temp.open("w") as handle:
            handle.write(text)
        temp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
