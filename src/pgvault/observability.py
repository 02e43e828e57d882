"""Run logs and Prometheus metrics: what every run and check leaves behind for operators.

* **Logs.** Each backup run ends with one INFO record on the ``pgvault.run`` logger carrying its
  id, vault name, kind, outcome, sizes and duration as fields (a failure's user-facing message is
  the CLI's one error line; the record is for the log). :func:`setup_logging` (the CLI calls it;
  an embedding app may) sends pgvault's logs to stderr and, with ``[logging] file``, to a
  rotating file, as text or as JSON lines. stderr shows warnings only unless ``stderr_level``
  says otherwise, so a cron job stays silent when all is well.
* **Metrics.** With ``metrics_file`` set, every run and check rewrites a Prometheus text-format
  file for node_exporter's textfile collector: last success time, last duration and size, run
  and failure counters, check status. Several pipelines may share one file: samples are labelled
  by vault name and updated under a lock, and the file is replaced atomically, so the collector
  never reads half a file. The lock is a 0600 file only pgvault's user can lock, taken with a
  bounded wait: nothing another process does to it can hang a run or a check.

The pipeline and the check call :func:`after_run` and :func:`after_check` directly instead of
through a hook: these are promises of the config file, so they must hold whatever plugins are
installed. Like hooks, they are isolated: a metrics or log failure is logged, never raised.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import logging.handlers
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgvault.settings import LogSettings

if TYPE_CHECKING:
    from pgvault.operations.check import CheckResult
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.vault.manifest import Manifest

log = logging.getLogger("pgvault.observability")
run_log = logging.getLogger("pgvault.run")

FIELDS_ATTR = "pgvault"
"""Attribute of a :class:`logging.LogRecord` holding its structured fields (``extra=``)."""


LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


# Logs


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


_TEXT_STDERR = "pgvault: %(levelname)s: %(message)s"
_TEXT_FILE = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _formatter(fmt: str, text: str) -> logging.Formatter:
    if fmt == "json":
        return JsonLinesFormatter()
    formatter = logging.Formatter(text, datefmt="%Y-%m-%dT%H:%M:%S%z")
    return formatter


def setup_logging(settings: LogSettings, *, stderr_level: int | None = None) -> None:
    """Send the ``pgvault`` loggers to stderr (and ``settings.file``) as ``settings`` say.

    ``stderr_level`` overrides ``settings.stderr_level`` (the CLI's ``-v``/``--debug``/``-q``).
    Replaces the handlers a previous call installed, so calling it once per loaded config is safe.
    Raises ``OSError`` when the log file cannot be opened.
    """
    root = logging.getLogger("pgvault")
    for handler in root.handlers:
        handler.close()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(_formatter(settings.format, _TEXT_STDERR))
    stderr.setLevel(stderr_level if stderr_level is not None else LEVELS[settings.stderr_level])
    handlers: list[logging.Handler] = [stderr]
    if settings.file is not None:
        settings.file.parent.mkdir(parents=True, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(
            settings.file,
            maxBytes=int(settings.max_bytes),
            backupCount=settings.keep_files,
            encoding="utf-8",
        )
        rotating.setFormatter(_formatter(settings.format, _TEXT_FILE))
        rotating.setLevel(LEVELS[settings.level])
        handlers.append(rotating)
    root.handlers[:] = handlers
    root.setLevel(min(h.level for h in handlers))
    root.propagate = False


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def after_run(
    config: PipelineConfig,
    *,
    backup_id: str,
    kind: str,
    started: datetime,
    finished: datetime,
    manifest: Manifest | None = None,
    error: BaseException | None = None,
) -> None:
    """Log the run's record and update the metrics file; never raises."""
    try:
        _log_run(config, backup_id, kind, started, finished, manifest, error)
    except Exception as exc:  # a log that cannot be written must not turn a backup into a failure
        log.warning("could not log run %s: %s", backup_id, exc)
    if config.metrics_file is None or kind != "scheduled":
        # Safety backups taken by a restore are of another database: counting them as the
        # pipeline's runs would hide a scheduled job that stopped.
        return
    try:
        record_run_metrics(
            config.metrics_file,
            config.name,
            finished=finished,
            duration=(finished - started).total_seconds(),
            manifest=manifest,
        )
    except Exception as exc:
        log.warning("could not update metrics file %s: %s", config.metrics_file, exc)


def _log_run(
    config: PipelineConfig,
    backup_id: str,
    kind: str,
    started: datetime,
    finished: datetime,
    manifest: Manifest | None,
    error: BaseException | None,
) -> None:
    duration = (finished - started).total_seconds()
    fields: dict[str, Any] = {
        "event": "backup",
        "run_id": backup_id,
        "name": config.name,
        "kind": kind,
        "outcome": "succeeded" if manifest is not None else "failed",
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_seconds": round(duration, 3),
    }
    if manifest is not None:
        fields["size"] = manifest.size
        fields["raw_size"] = manifest.raw_size
        fields["artifacts"] = len(manifest.artifacts)
        run_log.info(
            "backup %s of %s succeeded: %d bytes stored (%d raw) in %.1fs",
            backup_id,
            config.name,
            manifest.size,
            manifest.raw_size,
            duration,
            extra={FIELDS_ATTR: fields},
        )
    else:
        fields["error"] = str(error) or type(error).__name__
        run_log.info(
            "backup %s of %s failed after %.1fs: %s",
            backup_id,
            config.name,
            duration,
            fields["error"],
            extra={FIELDS_ATTR: fields},
        )


def after_check(config: PipelineConfig, result: CheckResult) -> None:
    """Log the check's outcome and update the metrics file; never raises."""
    fields: dict[str, Any] = {
        "event": "check",
        "name": config.name,
        "status": result.status.name,
        "backups": result.backups,
        "problems": [str(p) for p in result.problems],
    }
    with contextlib.suppress(Exception):
        # INFO like the run record: the CLI prints the problems, the log keeps the history.
        run_log.info(
            "check of %s: %s: %s",
            config.name,
            result.status.name,
            result.summary(),
            extra={FIELDS_ATTR: fields},
        )
    if config.metrics_file is None:
        return
    try:
        record_check_metrics(config.metrics_file, config.name, result)
    except Exception as exc:
        log.warning("could not update metrics file %s: %s", config.metrics_file, exc)


# Metrics

METRICS: dict[str, tuple[str, str]] = {
    "pgvault_last_run_timestamp_seconds": ("gauge", "Unix time the last backup run finished."),
    "pgvault_last_run_success": ("gauge", "1 if the last backup run succeeded, else 0."),
    "pgvault_last_success_timestamp_seconds": (
        "gauge",
        "Unix time the last successful backup finished.",
    ),
    "pgvault_last_duration_seconds": ("gauge", "Wall time of the last backup run."),
    "pgvault_last_size_bytes": ("gauge", "Stored bytes of the last successful backup."),
    "pgvault_last_raw_size_bytes": (
        "gauge",
        "Bytes the source produced for the last successful backup.",
    ),
    "pgvault_runs_total": ("counter", "Backup runs, successful or not."),
    "pgvault_failures_total": ("counter", "Failed backup runs."),
    "pgvault_check_status": ("gauge", "Result of the last check: 0 OK, 1 WARNING, 2 CRITICAL."),
    "pgvault_check_timestamp_seconds": ("gauge", "Unix time of the last check."),
    "pgvault_backups": ("gauge", "Complete backups in the vault at the last check."),
    "pgvault_newest_backup_timestamp_seconds": (
        "gauge",
        "Start time of the newest complete backup at the last check.",
    ),
    "pgvault_sink_free_bytes": ("gauge", "Free space where the sink stores, at the last check."),
    "pgvault_wal_last_archived_timestamp_seconds": (
        "gauge",
        "Unix time this host last stored a WAL file (wal-push or wal-daemon).",
    ),
    "pgvault_wal_pushed_total": ("counter", "WAL files stored (or found stored) by wal-push."),
    "pgvault_wal_push_failures_total": ("counter", "wal-push runs that failed."),
    "pgvault_wal_ready_files": (
        "gauge",
        "Files waiting in pg_wal/archive_status (.ready): the archive backlog.",
    ),
    "pgvault_wal_daemon_timestamp_seconds": ("gauge", "Unix time wal-daemon last reported."),
    "pgvault_wal_newest_timestamp_seconds": (
        "gauge",
        "When the newest WAL file in the vault was stored, at the last wal-check.",
    ),
    "pgvault_wal_lost_segments": (
        "gauge",
        "Segments missing inside the archived WAL ranges (not merely not yet archived).",
    ),
    "pgvault_wal_pending_segments": (
        "gauge",
        "Segments not archived yet: missing in the vault, still .ready in pg_wal.",
    ),
    "pgvault_wal_archiver_failed_count": (
        "gauge",
        "pg_stat_archiver.failed_count of the server at the last wal-check.",
    ),
}

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)\s*$")

Samples = dict[tuple[str, str], float]
"""(metric name, label text such as ``{name="app"}``) → value."""


def read_metrics(path: Path) -> Samples:
    """The pgvault samples of a textfile written by :func:`write_metrics` (empty if missing)."""
    try:
        # Non-blocking, and only a regular file: a fifo put in its place must not hang the run.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        text = handle.read().decode("utf-8", errors="replace")
    samples: Samples = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or not m.group(1).startswith("pgvault_"):
            continue
        try:
            samples[m.group(1), m.group(2) or ""] = float(m.group(3))
        except ValueError:
            continue  # a hand-edited line must not stop the counters from counting
    return samples


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 2**53 else repr(value)


def write_metrics(path: Path, samples: Samples) -> None:
    """Replace ``path`` atomically with ``samples`` in Prometheus text format (sorted, typed)."""
    lines: list[str] = []
    for metric in sorted({m for m, _ in samples}):
        kind, help_text = METRICS.get(metric, ("untyped", "pgvault metric."))
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} {kind}")
        for (name, labels), value in sorted(samples.items()):
            if name == metric:
                lines.append(f"{metric}{labels} {_number(value)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp name does not end in .prom, so the collector never reads it half-written.
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).chmod(0o644)  # node_exporter usually runs as another user
        Path(temp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temp).unlink()
        raise


LOCK_WAIT_SECONDS = 5.0
"""How long a metrics update waits for the lock before giving up (updates take milliseconds)."""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[Samples]:
    """Hold an exclusive lock on ``path``'s lock file while its samples are read and changed.

    The lock file is 0600 and must belong to this user, so no other local user can even open
    it, let alone hold it; and the wait is bounded, so a process that holds it forever (or a
    planted file) costs an update, never a run. Either way the caller logs the reason.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    # O_NOFOLLOW: a symlink planted in a shared folder must not make us create or lock another file.
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(lock_path, flags, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise PermissionError(
                f"lock file {lock_path} is not a file of this user (uid {os.geteuid()}); "
                "remove it and the next update recreates it"
            )
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)  # made 0644 by an older pgvault: other users could lock it
        _lock_within(fd, lock_path, LOCK_WAIT_SECONDS)
        try:
            samples = read_metrics(path)
            yield samples
            write_metrics(path, samples)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock_within(fd: int, lock_path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"its lock file {lock_path} is held by another process (waited "
                    f"{seconds:g}s); these metrics were not recorded"
                ) from None
            time.sleep(0.05)


def _labels(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'{{name="{escaped}"}}'


def record_run_metrics(
    path: Path,
    name: str,
    *,
    finished: datetime,
    duration: float,
    manifest: Manifest | None,
) -> None:
    """Count one run of vault ``name`` in the metrics file at ``path``."""
    labels = _labels(name)
    with _locked(path) as samples:
        samples["pgvault_runs_total", labels] = samples.get(("pgvault_runs_total", labels), 0) + 1
        samples.setdefault(("pgvault_failures_total", labels), 0)
        samples["pgvault_last_run_timestamp_seconds", labels] = finished.timestamp()
        samples["pgvault_last_duration_seconds", labels] = round(duration, 3)
        samples["pgvault_last_run_success", labels] = 1 if manifest is not None else 0
        if manifest is None:
            samples["pgvault_failures_total", labels] += 1
        else:
            samples["pgvault_last_success_timestamp_seconds", labels] = finished.timestamp()
            samples["pgvault_last_size_bytes", labels] = manifest.size
            samples["pgvault_last_raw_size_bytes", labels] = manifest.raw_size


def record_check_metrics(path: Path, name: str, result: CheckResult) -> None:
    """Record the outcome of one check of vault ``name`` in the metrics file at ``path``."""
    labels = _labels(name)
    with _locked(path) as samples:
        samples["pgvault_check_status", labels] = int(result.status)
        samples["pgvault_check_timestamp_seconds", labels] = result.checked_at.timestamp()
        samples["pgvault_backups", labels] = result.backups
        if result.newest is not None:
            samples["pgvault_newest_backup_timestamp_seconds", labels] = (
                result.newest.started_at.timestamp()
            )
        if result.free_bytes is not None:
            samples["pgvault_sink_free_bytes", labels] = result.free_bytes
        if result.wal_newest_at is not None:
            samples["pgvault_wal_newest_timestamp_seconds", labels] = (
                result.wal_newest_at.timestamp()
            )
        if result.wal_lost is not None:
            samples["pgvault_wal_lost_segments", labels] = result.wal_lost


def record_wal_metrics(
    path: Path,
    name: str,
    *,
    last_archived_at: datetime | None = None,
    pushed: int = 0,
    failed: int = 0,
    ready: int | None = None,
    daemon_at: datetime | None = None,
    newest_at: datetime | None = None,
    lost: int | None = None,
    pending: int | None = None,
    archiver_failed: int | None = None,
) -> None:
    """Record WAL archive figures of vault ``name`` (only those given) in the metrics file."""
    labels = _labels(name)
    with _locked(path) as samples:

        def put(metric: str, value: float | None) -> None:
            if value is not None:
                samples[metric, labels] = value

        def add(metric: str, value: int) -> None:
            samples[metric, labels] = samples.get((metric, labels), 0) + value

        if last_archived_at is not None:
            put("pgvault_wal_last_archived_timestamp_seconds", last_archived_at.timestamp())
        if pushed or failed:
            add("pgvault_wal_pushed_total", pushed)
            add("pgvault_wal_push_failures_total", failed)
        put("pgvault_wal_ready_files", ready)
        put("pgvault_wal_daemon_timestamp_seconds", daemon_at.timestamp() if daemon_at else None)
        put("pgvault_wal_newest_timestamp_seconds", newest_at.timestamp() if newest_at else None)
        put("pgvault_wal_lost_segments", lost)
        put("pgvault_wal_pending_segments", pending)
        put("pgvault_wal_archiver_failed_count", archiver_failed)
