"""Runs are exclusive per pipeline: one backup of a vault at a time, across processes and hosts.

Cron firing while last night's run is still going, or two hosts with the same config, must not
both dump and upload. A run therefore takes two locks before its source starts, and holds them
until its manifest is written:

* **An advisory lock in PostgreSQL** (pg_dump sources), as pgBackRest does: a session of the run's
  own on the source's server holds ``pg_try_advisory_lock`` on a key derived from the vault (sink
  location and pipeline name) and the run's kind. It is atomic, and the server drops it the
  moment the process dies, whatever killed it. The session is not the source's own: that one
  closes when the dump ends, before the artifacts are committed and the manifest is written.
* **A lease in the vault**, ``<name>/locks/<kind>.json`` (host, pid, backup id, start, expiry).
  It covers sources without a database (files), hosts that reach different databases, and it
  tells ``prune`` which unfinished folder a live run is writing. A heartbeat renews it every
  :data:`RENEW_SECONDS`; a lease that expired (its run died on another host) or whose process is
  gone (on this host) is taken over. Where the sink can create an object only if it is absent
  (the local sink), taking the lease is atomic; elsewhere the run writes it, waits
  :data:`SETTLE_SECONDS` and reads it back: of two runs that started within the same instant, the
  later writer keeps it and the other gives up. The advisory lock has no such window.

The second run fails with :class:`~pgvault.exceptions.RunLockedError`, one line naming the holder.
Each kind locks on its own: the safety backup a restore takes (kind ``safety``) never waits for,
nor blocks, the scheduled backup; two safety backups of one vault at once do exclude each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import psycopg

from pgvault.exceptions import ObjectNotFoundError, PgVaultError, RunLockedError
from pgvault.postgres.client import connect
from pgvault.sources.api import Source
from pgvault.sources.set import SourceSet
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import utc_now

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.runlock")

LEASE_SECONDS = 600
"""How long a lease holds without renewal: how long a run killed on another host blocks the next."""
RENEW_SECONDS = 60
"""How often a running backup renews its lease."""
SETTLE_SECONDS = 1.0
"""On sinks without create-if-absent: the wait between writing the lease and reading it back."""
CLOCK_SLACK = timedelta(minutes=5)
"""Clock difference between hosts tolerated when judging another host's lease."""

_HOST = socket.gethostname()
_ACTIVE: set[str] = set()
"""Tokens of the leases runs of this process hold right now (a process may run several)."""


def lease_key(name: str, kind: str) -> str:
    """The vault key of the lease that runs of ``kind`` take."""
    return f"{name}/locks/{kind}.json"


@attrs.frozen
class Lease:
    """A run's lease, as stored in the vault."""

    kind: str
    backup_id: str
    host: str
    pid: int
    started_at: datetime
    expires_at: datetime
    token: str

    def describe(self) -> str:
        """``backup X, pgvault pid N on host H, started …``, for messages."""
        return (
            f"backup {self.backup_id}, pgvault pid {self.pid} on host {self.host}, started "
            f"{self.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        )

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(
            {
                "format_version": 1,
                "kind": self.kind,
                "backup_id": self.backup_id,
                "host": self.host,
                "pid": self.pid,
                "started_at": _iso(self.started_at),
                "expires_at": _iso(self.expires_at),
                "token": self.token,
            },
            indent=2,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Lease:
        """Parse a stored lease; ValueError when it is not one."""
        try:
            raw = json.loads(data)
            return cls(
                kind=str(raw["kind"]),
                backup_id=str(raw["backup_id"]),
                host=str(raw["host"]),
                pid=int(raw["pid"]),
                started_at=_utc(datetime.fromisoformat(str(raw["started_at"]))),
                expires_at=_utc(datetime.fromisoformat(str(raw["expires_at"]))),
                token=str(raw["token"]),
            )
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a pgvault lease ({exc})") from None

    def stale_because(self, now: datetime) -> str | None:
        """Why this lease no longer protects a run (then it may be taken over), or None."""
        if self.expires_at <= now:
            return f"it expired at {self.expires_at:%Y-%m-%d %H:%M:%S} UTC"
        if self.expires_at > now + timedelta(seconds=LEASE_SECONDS) + CLOCK_SLACK:
            # No run renews that far ahead: a clock gone wrong, or a lease written to block us.
            return f"it claims to hold until {self.expires_at:%Y-%m-%d %H:%M:%S} UTC"
        if self.host == _HOST and not _alive(self.pid):
            return f"its process {self.pid} is gone"
        if self.host == _HOST and self.pid == os.getpid() and self.token not in _ACTIVE:
            return "its run, in this process, has ended (it could not give the lease back)"
        return None


def live_leases(vault: Vault) -> dict[str, Lease]:
    """Live leases in ``vault`` by backup id: the backups being written right now."""
    found: dict[str, Lease] = {}
    now = datetime.now(UTC)  # real time, whatever ``now`` a prune plans with: runs are real
    for info in vault.sink.list(f"{vault.name}/locks/"):
        if not info.key.endswith(".json"):
            continue
        try:
            lease = Lease.from_json(vault.sink.read_bytes(info.key))
        except (ValueError, ObjectNotFoundError):
            continue
        if lease.stale_because(now) is None:
            found[lease.backup_id] = lease
    return found


@contextlib.contextmanager
def run_lock(
    config: PipelineConfig, *, backup_id: str, kind: str, started: datetime
) -> Iterator[None]:
    """Hold the run locks of ``config``'s vault for a run of ``kind`` (see the module docs).

    Raises :class:`RunLockedError` naming the holder if another run has them.
    """
    vault = Vault.from_config(config)
    with contextlib.ExitStack() as stack:
        dsn = _lock_dsn(config.source)
        if dsn is not None:
            stack.enter_context(_advisory_lock(config, vault, dsn, kind))
        lease = Lease(
            kind=kind,
            backup_id=backup_id,
            host=_HOST,
            pid=os.getpid(),
            started_at=started,
            expires_at=utc_now() + timedelta(seconds=LEASE_SECONDS),
            token=secrets.token_hex(8),
        )
        stack.enter_context(vault_lease(vault, lease))
        yield


def _lock_dsn(source: Source) -> str | None:
    """Where the advisory lock is taken: a pg_dump source's server (a set's first pg_dump
    part's); None for sources without one (files), which rely on the lease alone."""
    if isinstance(source, SourceSet):
        firsts = (m.source for m in source.members if m.source.type_name == "pg_dump")
        source = next(firsts, source)
    dsn = getattr(source, "server_dsn", None) or getattr(source, "dsn", None)
    return dsn if source.type_name == "pg_dump" and isinstance(dsn, str) else None


@contextlib.contextmanager
def _advisory_lock(config: PipelineConfig, vault: Vault, dsn: str, kind: str) -> Iterator[None]:
    key1, key2 = _advisory_key(vault, kind)
    label = f"pgvault {kind} {config.name} pid {os.getpid()} on {_HOST}"[:63]
    conn = connect(dsn, application_name=label)
    try:
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", [key1, key2]).fetchone()
        if not (row and row[0]):
            holder = _advisory_holder(conn, key1, key2)
            lease = _read_lease(vault, lease_key(vault.name, kind))
            who = f"{lease.describe()}; {holder}" if lease is not None else holder
            raise RunLockedError(
                f"vault {config.name!r}: another {kind} backup is running ({who}, holding the "
                "run lock in PostgreSQL): this run did not start"
            )
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.close()  # the server releases the advisory lock with the session


def _advisory_key(vault: Vault, kind: str) -> tuple[int, int]:
    text = f"pgvault\0{vault.sink.type_name}\0{vault.sink.describe()}\0{vault.name}\0{kind}"
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    # Two non-negative int4: they read back unchanged from pg_locks' oid columns.
    return (
        int.from_bytes(digest[:4], "big") & 0x7FFFFFFF,
        int.from_bytes(digest[4:], "big") & 0x7FFFFFFF,
    )


def _advisory_holder(conn: psycopg.Connection[Any], key1: int, key2: int) -> str:
    try:
        row = conn.execute(
            "SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
            "AND l.objsubid = 2",
            [key1, key2],
        ).fetchone()
    except psycopg.Error:
        row = None
    if row is None:
        return "PostgreSQL session unknown"
    pid, app, addr, since = row
    text = f"PostgreSQL session {pid}"
    if app:
        text += f" '{app}'"
    if addr:
        text += f" from {addr}"
    if isinstance(since, datetime):
        text += f" since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    return text


def _read_lease(vault: Vault, key: str) -> Lease | None:
    try:
        return Lease.from_json(vault.sink.read_bytes(key))
    except ObjectNotFoundError:
        return None
    except ValueError as exc:
        log.warning("%s is not a lease pgvault can read (%s): it is taken over", key, exc)
        return None


@contextlib.contextmanager
def vault_lease(vault: Vault, lease: Lease) -> Iterator[None]:
    """Hold ``lease`` in ``vault`` for the ``with`` block: taken (or a stale one taken over),
    renewed in the background, given back at the end; raises if another holds it."""
    key = lease_key(vault.name, lease.kind)
    _take(vault, key, lease)
    _ACTIVE.add(lease.token)
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(vault, key, lease, stop), daemon=True, name="pgvault-lease"
    )
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=30)
        _ACTIVE.discard(lease.token)
        _give_back(vault, key, lease)


def _take(vault: Vault, key: str, lease: Lease) -> None:
    held = _read_lease(vault, key)
    if held is not None:
        why = held.stale_because(datetime.now(UTC))
        if why is None:
            raise _locked(vault, held)
        log.warning("taking over the run lease %s of %s: %s", key, held.describe(), why)
    data = lease.to_json()
    try:
        created = vault.sink.create_if_absent(key, data)
    except NotImplementedError:
        created = None
    if created is None:
        # No atomic create here: write, let a concurrent writer's object land, read back.
        vault.sink.write_bytes(key, data)
        time.sleep(SETTLE_SECONDS)
        now_held = _read_lease(vault, key)
        if now_held is not None and now_held.token != lease.token:
            raise _locked(vault, now_held)
        return
    if not created:
        current = _read_lease(vault, key)
        if current is not None and current.token == lease.token:
            return  # a retried create whose first try had landed: the lease is ours
        if current is not None and (held is None or current.token != held.token):
            raise _locked(vault, current)  # it appeared since we looked: that run won
        vault.sink.delete(key)  # the stale lease judged above (or one nobody can read)
        if not vault.sink.create_if_absent(key, data):
            current = _read_lease(vault, key)
            if current is not None:
                raise _locked(vault, current)
            raise RunLockedError(
                f"vault {vault.name!r}: another {lease.kind} backup took the run lease {key} "
                "at the same moment: this run did not start"
            )


def _locked(vault: Vault, held: Lease) -> RunLockedError:
    until = held.expires_at.astimezone(UTC)
    return RunLockedError(
        f"vault {vault.name!r}: another {held.kind} backup is running ({held.describe()}; its "
        f"lease {lease_key(vault.name, held.kind)} holds until {until:%Y-%m-%d %H:%M:%S} UTC "
        "unless renewed): this run did not start"
    )


def _renew(vault: Vault, key: str, lease: Lease, stop: threading.Event) -> None:
    while not stop.wait(RENEW_SECONDS):
        try:
            current = _read_lease(vault, key)
            if current is not None and current.token != lease.token:
                log.error(
                    "run lease %s was taken over by %s while this run was still going",
                    key,
                    current.describe(),
                )
                return
            renewed = attrs.evolve(lease, expires_at=utc_now() + timedelta(seconds=LEASE_SECONDS))
            vault.sink.write_bytes(key, renewed.to_json())
        except PgVaultError as exc:
            # The run itself will notice a sink that is gone; a missed renewal is not fatal.
            log.warning("could not renew the run lease %s: %s", key, exc)


def _give_back(vault: Vault, key: str, lease: Lease) -> None:
    try:
        current = _read_lease(vault, key)
        if current is not None and current.token == lease.token:
            vault.sink.delete(key)
    except PgVaultError as exc:
        log.warning(
            "could not remove the run lease %s (it expires by itself within %ds): %s",
            key,
            LEASE_SECONDS,
            exc,
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped: a run killed with its parent (a Celery
    worker's child) stays a zombie until init reaps it, which some containers' init does late or
    never. It holds no lock, and its lease must not block the next run for the lease's life."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (not Linux), or gone since: os.kill answered for it
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] == "Z"


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
