"""The base backup source: a physical copy of the cluster, streamed from ``pg_basebackup``.

``pg_basebackup -D - -Ft -X none --manifest-checksums=SHA256`` writes the data directory as one
tar to stdout, with PostgreSQL's ``backup_manifest`` as its last member. pgvault compresses and
encrypts it itself (server-side compression cannot be combined with the injected manifest, and
client-side is what the pipeline's transforms already are), so nothing is written to a
temporary copy. While the tar passes, every file is hashed and, once the manifest arrives,
compared with it (:mod:`pgvault.sources.backup_manifest`); a mismatch fails the run. The
manifest is stripped from the data tar and stored as an artifact of its own.

``-X none`` leaves the WAL to the archive: the backup is complete only once every segment from
its start to its stop is in the vault's WAL archive. PostgreSQL itself waits for the last
segment to be archived before it ends the backup, forever if archiving is broken; pgvault bounds
that wait (``wal_wait``), then checks the vault for the whole range and names the first missing
segment. A server that does not archive at all is refused before anything starts, as is a
cluster with tablespaces outside the data directory (``pg_basebackup`` can write only one tar
to stdout).

The config imports this module to check a pipeline's ``[source]``, and most commands (``list``,
``wal-fetch`` during a recovery) never connect: psycopg is imported by the run's methods, where
a connection is made, not at the top.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from pgvault.engine.flow import Aborted
from pgvault.exceptions import PgVaultError, SourceError
from pgvault.postgres.client import (
    _Collector,
    check_dsn,
    child_env,
    connect,
    exit_description,
    find_binary,
    first_line,
    split_dsn,
    tool_version,
    widen_pipe,
)
from pgvault.sources.api import CHUNK_SIZE, Source, SourceRun, SourceStream
from pgvault.sources.backup_manifest import (
    BackupManifest,
    BackupManifestError,
    TarStreamChecker,
    compare,
    label_fields,
)
from pgvault.units import Duration

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.wal.archive import ClusterId, WalArchive

log = logging.getLogger("pgvault.sources.basebackup")

BASE_STREAM = "base"
BASE_ROLE = "basebackup"
MANIFEST_STREAM = "backup_manifest"
MANIFEST_ROLE = "backup_manifest"
WAITING_FOR_ARCHIVE = "waiting for wal archiving to finish"
"""``pg_stat_progress_basebackup.phase`` once the data is sent and the server waits for WAL."""
_POLL = 0.5


def _positive_duration(_inst: object, attribute: attrs.Attribute[Any], value: Duration) -> None:
    if value.delta.total_seconds() <= 0:
        raise ValueError(f"{attribute.name} must be longer than zero, got {value.text!r}")


@attrs.frozen
class BaseBackupSource(Source):
    """A physical base backup of a whole cluster with ``pg_basebackup`` (see the module doc).

    ``dsn`` reaches the server as a role with the REPLICATION attribute (``pg_hba.conf`` needs a
    ``replication`` line for it). ``checkpoint`` is ``fast`` (default: start at once) or
    ``spread`` (the next checkpoint, gentler on a busy server). ``max_rate`` caps the transfer
    (``pg_basebackup --max-rate``, e.g. ``"50M"``). ``wal_wait`` bounds how long a backup waits
    for its WAL to reach the vault's archive (default 5 minutes). ``pg_basebackup`` overrides the
    binary, which by default matches the server's major version.
    """

    type_name: ClassVar[str] = "basebackup"

    dsn: str = ""
    checkpoint: Literal["fast", "spread"] = "fast"
    max_rate: str | None = None
    wal_wait: Duration = attrs.field(default=Duration.parse("5min"), validator=_positive_duration)
    pg_basebackup: str | None = None
    label: str = "pgvault base backup"

    def __attrs_post_init__(self) -> None:
        try:
            check_dsn(self.dsn)
        except ValueError as exc:
            raise ValueError(f"dsn: {exc}") from None

    def describe(self) -> str:
        from pgvault.postgres.client import describe_dsn

        return f"base backup of {describe_dsn(self.dsn)}"

    def start(self) -> SourceRun:
        raise SourceError(
            "a base backup is complete only with its WAL in the vault's archive: start it "
            "through a pipeline (pgvault run), which tells it the vault"
        )

    def start_for(self, pipeline: PipelineConfig) -> SourceRun:
        return _BaseBackupRun(self, pipeline)

    @classmethod
    def check_stream(
        cls, metadata: Mapping[str, Any], role: str, chunks: Iterator[bytes]
    ) -> str | None:
        if role == MANIFEST_ROLE:
            manifest = BackupManifest.parse(b"".join(chunks))
            return f"backup_manifest: {len(manifest.files)} files, its checksum matches"
        if role == BASE_ROLE:
            checker = TarStreamChecker(where="base backup tar")
            for chunk in chunks:
                checker.feed(chunk)
            result = checker.finish()
            return f"tar of {len(result.members)} files"
        return None


class _BaseBackupRun(SourceRun):
    def __init__(self, source: BaseBackupSource, pipeline: PipelineConfig) -> None:
        self._source = source
        self._pipeline = pipeline
        self._stopped = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._failure: str | None = None
        """Why the run was cut short by pgvault itself (the bounded WAL wait)."""
        self._done = threading.Event()
        self._manifest_bytes: bytes | None = None
        self._metadata: dict[str, Any] = {}
        self._checker = TarStreamChecker(strip_manifest=True, where="base backup stream")
        self._app_name = f"pgvault-basebackup-{secrets.token_hex(4)}"
        self._conn = connect(source.dsn)
        self._conn_lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        try:
            self._preflight()
            self._launch()
        except BaseException:
            self.stop()
            raise

    # Before anything is streamed

    def _query(self, sql: str, params: Sequence[object] = ()) -> tuple[object, ...]:
        with self._conn_lock:
            row = self._conn.execute(sql, params).fetchone()
        assert row is not None
        return tuple(row)

    def _preflight(self) -> None:
        import psycopg

        self._version_num = self._conn.info.server_version
        self._major = self._version_num // 10000
        (self._server_version,) = self._query("SELECT current_setting('server_version')")
        archive_mode, wal_level, standby = self._query(
            "SELECT current_setting('archive_mode'), current_setting('wal_level'), "
            "pg_is_in_recovery()"
        )
        where = "source"
        if wal_level == "minimal":
            raise SourceError(
                f"{where}: the server has wal_level = minimal: base backups and WAL archiving "
                "need replica (see pgvault wal-setup)"
            )
        if archive_mode == "off":
            raise SourceError(
                f"{where}: the server does not archive WAL (archive_mode = off), and a base "
                "backup cannot be restored without its WAL: set up archiving first "
                "(pgvault wal-setup CONFIG)"
            )
        if not standby:
            command, library = self._query(
                "SELECT current_setting('archive_command', true), "
                "current_setting('archive_library', true)"
            )
            if not str(command or "").strip() and not str(library or "").strip():
                raise SourceError(
                    f"{where}: archive_mode is on but neither archive_command nor "
                    "archive_library is set, so no WAL reaches the vault: set up archiving "
                    "first (pgvault wal-setup CONFIG)"
                )
        rows = self._conn.execute(
            "SELECT spcname, pg_tablespace_location(oid) FROM pg_tablespace "
            "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY spcname"
        ).fetchall()
        if rows:
            names = ", ".join(f"{r[0]} ({r[1] or 'in place'})" for r in rows)
            raise SourceError(
                f"{where}: the cluster has tablespaces outside the data directory ({names}); a "
                "streamed base backup holds only the data directory (pg_basebackup writes one "
                "tar to stdout): move their objects to pg_default (ALTER TABLE/INDEX/DATABASE … "
                "SET TABLESPACE pg_default) or back them up with a pg_dump source"
            )
        (segment_size,) = self._query(
            "SELECT setting::bigint * CASE unit WHEN 'B' THEN 1 WHEN 'MB' THEN 1048576 "
            "ELSE 1 END FROM pg_settings WHERE name = 'wal_segment_size'"
        )
        self._segment_size = int(str(segment_size))
        self._standby = bool(standby)
        # pg_basebackup's stdout is buffered: while the server waits for the archive, the tar's
        # last blocks (global/pg_control) may not have reached pgvault yet. Ask the server too.
        self._server_sysid: int | None = None
        try:
            with self._conn_lock:
                row = self._conn.execute(
                    "SELECT system_identifier FROM pg_control_system()"
                ).fetchone()
            self._server_sysid = int(str(row[0])) if row else None
        except psycopg.Error:
            pass  # not granted to this role: the tar's pg_control tells at the end
        (started,) = self._query("SELECT clock_timestamp()")
        self._started_at = _utc(started)
        self._binary = find_binary(
            "pg_basebackup", server_major=self._major, configured=self._source.pg_basebackup
        )
        self._binary_version = tool_version(self._binary)

    def _launch(self) -> None:
        src = self._source
        conninfo, env = split_dsn(src.dsn, application_name=self._app_name)
        argv = [
            self._binary,
            "-d",
            conninfo,
            "-D",
            "-",
            "-F",
            "tar",
            "-X",
            "none",
            "--manifest-checksums=SHA256",
            "-c",
            src.checkpoint,
            "-l",
            src.label,
        ]
        if src.max_rate:
            argv += ["-r", src.max_rate]
        try:
            self._proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=child_env(env),
            )
        except OSError as exc:
            raise SourceError(f"cannot run {self._binary}: {exc.strerror}") from None
        assert self._proc.stdout is not None
        widen_pipe(self._proc.stdout.fileno())
        self._stderr = _Collector(self._proc.stderr)
        self._monitor = threading.Thread(
            target=self._watch, daemon=True, name="pgvault-basebackup-watch"
        )
        self._monitor.start()

    # While streaming

    def _watch(self) -> None:
        """Bound the server's own wait for WAL archiving (``-X none`` waits forever)."""
        import psycopg

        proc = self._proc
        assert proc is not None
        limit = self._source.wal_wait.delta.total_seconds()
        waiting_since: float | None = None
        while proc.poll() is None and not self._stopped:
            try:
                with self._conn_lock:
                    row = self._conn.execute(
                        "SELECT p.phase FROM pg_stat_progress_basebackup p "
                        "JOIN pg_stat_activity a USING (pid) WHERE a.application_name = %s",
                        [self._app_name],
                    ).fetchone()
            except psycopg.Error:
                return  # the server went away: pg_basebackup fails and says why
            phase = str(row[0]) if row else ""
            if phase == WAITING_FOR_ARCHIVE:
                waiting_since = waiting_since or time.monotonic()
                if time.monotonic() - waiting_since > limit:
                    self._failure = self._archive_stalled()
                    proc.kill()
                    self._end_walsender()
                    return
            time.sleep(_POLL)

    def _archive_stalled(self) -> str:
        import psycopg

        label = self._checker.kept(b"backup_label")
        start_wal = label_fields(label.decode("utf-8", "replace")).get("START WAL LOCATION", "")
        first = ""
        try:
            (current,) = self._query("SELECT pg_walfile_name(pg_current_wal_lsn())")
            first = self._first_missing_up_to(start_wal, str(current))
        except (psycopg.Error, PgVaultError, ValueError) as exc:
            log.info("cannot name the first missing segment: %s", exc)
        missing = f" (first segment missing from the vault: {first})" if first else ""
        return (
            f"base backup incomplete: PostgreSQL has waited {self._source.wal_wait} for the "
            f"backup's WAL to be archived{missing}; archiving is broken{self._archiver_text()}: "
            "check archive_command (pgvault wal-setup, pgvault wal-check CONFIG)"
        )

    def _first_missing_up_to(self, start_location: str, current_wal: str) -> str:
        from pgvault.wal.chain import missing_segments
        from pgvault.wal.names import WalName

        start_name = start_location.split("(file ", 1)[-1].rstrip(")")
        start = WalName.parse(start_name)
        current = WalName.parse(current_wal)
        size = self._segment_size
        cluster = self._cluster()
        missing = missing_segments(
            self._archive(),
            cluster,
            size,
            [(start.timeline, 0)],
            start.start_lsn(size),
            max(current.start_lsn(size) - 1, start.start_lsn(size)),
        )
        return missing[0] if missing else ""

    def _archiver_text(self) -> str:
        import psycopg

        try:
            with self._conn_lock:
                row = self._conn.execute(
                    "SELECT failed_count, last_failed_wal, last_failed_time, last_archived_wal "
                    "FROM pg_stat_archiver"
                ).fetchone()
        except psycopg.Error:
            return ""
        if not row:
            return ""
        failed, last_failed, failed_at, last_archived = row
        text = f" (pg_stat_archiver: {failed} failures"
        if last_failed:
            text += f", last failed {last_failed} at {_utc(failed_at):%Y-%m-%d %H:%M:%SZ}"
        if last_archived:
            text += f", last archived {last_archived}"
        return text + ")"

    def _end_walsender(self) -> None:
        import psycopg

        # The server keeps waiting for the archive after pg_basebackup is gone: end its walsender.
        try:
            with self._conn_lock:
                self._conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    [self._app_name],
                )
        except psycopg.Error as exc:
            log.info("could not end the backup's walsender: %s", first_line(str(exc)))

    def _read_base(self) -> Iterator[bytes]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        read = proc.stdout.read
        checker = self._checker
        try:
            while True:
                chunk = read(CHUNK_SIZE)
                if not chunk:
                    break
                out = checker.feed(chunk)
                if out:
                    yield out
            rc = proc.wait()
            if self._monitor is not None:
                self._monitor.join()
            stderr = self._stderr.text(timeout=10)
            if self._failure:
                raise SourceError(self._failure)
            if rc != 0:
                raise SourceError(exit_description(self._binary, rc, stderr))
            (stopped,) = self._query("SELECT clock_timestamp()")
            self._finish(_utc(stopped))
        except BaseException:
            self._done.set()
            raise
        self._done.set()

    def _finish(self, stopped_at: datetime) -> None:
        """Check the stream against the manifest, then wait for the WAL; fill the metadata."""
        result = self._checker.finish()
        if result.manifest is None:
            raise SourceError("base backup stream: pg_basebackup sent no backup_manifest")
        manifest = BackupManifest.parse(result.manifest, where="base backup's backup_manifest")
        compare(manifest, result.members, where="base backup stream")
        label = result.kept.get(b"backup_label", b"").decode("utf-8", "replace")
        fields = label_fields(label)
        control = result.kept.get(b"global/pg_control", b"")
        if len(control) < 8:
            raise BackupManifestError("base backup stream: no global/pg_control")
        sysid = int.from_bytes(control[:8], "little")
        self._sysid = sysid
        start, end = manifest.start, manifest.end
        size = self._segment_size
        from pgvault.wal.names import format_lsn, segment_name

        start_wal = segment_name(start.timeline, start.start_lsn // size, size)
        stop_wal = segment_name(end.timeline, max(end.end_lsn - 1, 0) // size, size)
        waited = self._await_wal(manifest, start_wal, stop_wal)
        self._manifest_bytes = result.manifest
        self._metadata = {
            "system_identifier": str(sysid),
            "major": self._major,
            "server_version": str(self._server_version),
            "server_version_num": self._version_num,
            "pg_basebackup_version": self._binary_version,
            "segment_size": size,
            "timeline": int(fields.get("START TIMELINE", start.timeline)),
            "start_lsn": format_lsn(start.start_lsn),
            "start_wal": start_wal,
            "stop_lsn": format_lsn(end.end_lsn),
            "stop_timeline": end.timeline,
            "stop_wal": stop_wal,
            "started_at": _iso(self._started_at),
            "stopped_at": _iso(stopped_at),
            "backup_label": label,
            "backup_from": fields.get("BACKUP FROM", "standby" if self._standby else "primary"),
            "checkpoint_lsn": fields.get("CHECKPOINT LOCATION", ""),
            "tablespaces": [],
            "data_bytes": result.data_bytes,
            "files": len(result.members),
            "wal_ranges": [
                {
                    "timeline": r.timeline,
                    "start_lsn": format_lsn(r.start_lsn),
                    "end_lsn": format_lsn(r.end_lsn),
                }
                for r in manifest.wal_ranges
            ],
            "manifest_checksums": "SHA256",
            "backup_manifest_checksum": manifest.checksum,
            "wal_archive": {"cluster": f"{self._major}-{sysid}", "waited_seconds": waited},
        }

    def _cluster(self) -> ClusterId:
        from pgvault.wal.archive import ClusterId

        sysid = getattr(self, "_sysid", None) or self._server_sysid
        if sysid is None:
            control = self._checker.kept(b"global/pg_control")
            if len(control) < 8:
                raise SourceError("the stream has not reached global/pg_control yet")
            sysid = int.from_bytes(control[:8], "little")
        return ClusterId(self._major, sysid)

    def _archive(self) -> WalArchive:
        from pgvault.wal.archive import WalArchive

        return WalArchive(self._pipeline.sink, self._pipeline.name)

    def _await_wal(self, manifest: BackupManifest, start_wal: str, stop_wal: str) -> float:
        """Wait (at most ``wal_wait``) until every segment from start to stop is archived in the
        vault; the seconds waited. Raises naming the first missing segment."""
        from pgvault.wal.chain import missing_segments

        size = self._segment_size
        path = sorted({(r.timeline, r.start_lsn) for r in manifest.wal_ranges}, key=lambda p: p[1])
        path = [(path[0][0], 0), *path[1:]]
        start, end = manifest.start.start_lsn, max(manifest.end.end_lsn - 1, 0)
        archive, cluster = self._archive(), self._cluster()
        began = time.monotonic()
        limit = self._source.wal_wait.delta.total_seconds()
        pause = 0.2
        while True:
            missing = missing_segments(archive, cluster, size, path, start, end)
            if not missing:
                return round(time.monotonic() - began, 3)
            if time.monotonic() - began > limit or self._stopped:
                break
            time.sleep(pause)
            pause = min(pause * 1.5, 2.0)
        vault = f"vault {self._pipeline.name!r} at {self._pipeline.sink.describe()}"
        raise SourceError(
            f"base backup incomplete: WAL segment {missing[0]} (of {start_wal} … {stop_wal}, "
            f"{len(missing)} missing) did not reach the WAL archive of {vault} within "
            f"{self._source.wal_wait}: archiving is broken or goes elsewhere"
            f"{self._archiver_text()}; check archive_command (pgvault wal-setup, "
            "pgvault wal-check CONFIG)"
        )

    def _read_manifest(self) -> Iterator[bytes]:
        while not self._done.wait(0.1):
            if self._stopped:
                raise Aborted("base backup stopped before its backup_manifest arrived")
        data = self._manifest_bytes
        if data is None:
            # The data stream failed and reports why; this stream only gives way (an Aborted
            # never becomes the run's error, whichever thread gets there first).
            raise Aborted("base backup failed before its backup_manifest arrived")
        for start in range(0, len(data), CHUNK_SIZE):
            yield data[start : start + CHUNK_SIZE]

    # SourceRun

    @property
    def streams(self) -> Sequence[SourceStream]:
        return [
            SourceStream(name=BASE_STREAM, chunks=self._read_base(), role=BASE_ROLE),
            SourceStream(name=MANIFEST_STREAM, chunks=self._read_manifest(), role=MANIFEST_ROLE),
        ]

    def metadata(self) -> dict[str, Any]:
        if not self._metadata:
            raise SourceError("base backup metadata asked for before the stream ended")
        return dict(self._metadata)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._done.set()
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
        if self._monitor is not None:
            self._monitor.join(timeout=10)
        self._conn.close()


def _utc(value: object) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.now(UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
