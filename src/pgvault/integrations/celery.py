"""Celery tasks for a fleet of backup workers, and a beat schedule from the pipelines' configs.

``pip install 'pgvault[celery]'``, then on every worker host::

    PGVAULT_CELERY_BROKER_URL=amqp://pgvault:…@broker// \\
    PGVAULT_CELERY_RESULT_BACKEND=redis://broker:6379/0 \\
        celery -A pgvault.integrations.celery worker -c 2

and on one host the scheduler (``PGVAULT_CELERY_CONFIGS``: config paths or names, ``:``-separated)::

    PGVAULT_CELERY_CONFIGS=app:billing celery -A pgvault.integrations.celery beat

The tasks (``pgvault.run``, ``pgvault.prune``, ``pgvault.check``, ``pgvault.drill``,
``pgvault.report``, ``pgvault.copy``) take a config path or a name found as ``pgvault run app``
finds it (:mod:`pgvault.config_lookup`, on the worker's host), call the Python API and return a
JSON-able dict whose ``status`` says what happened. They are shared tasks: an application with a
Celery app of its own gets them by importing this module (``imports = ["pgvault.integrations
.celery"]``) and sends them by name.

What the tasks promise, and why:

* **A worker that dies mid-run does not lose the run.** The tasks are ``acks_late`` with
  ``reject_on_worker_lost``: the broker hands the message to another worker when the one running
  it is killed (OOM, SIGKILL, a host lost). pgvault's run leaves nothing listed when killed (the
  manifest is written last), its advisory lock dies with the process, and its lease is taken over
  (at once on the same host, after :data:`~pgvault.engine.runlock.LEASE_SECONDS` from another),
  so the next attempt can run. A message that comes back that way is turned into a counted retry
  before it runs again, so a backup that kills every worker it meets (a dump that exhausts
  memory) stops after :data:`MAX_RETRIES` instead of going round for ever.
* **Transient failures are retried** (:data:`TRANSIENT_ERRORS`: the sink or the database
  unreachable; each failed attempt is a failed run that the notifiers hear of), with a doubling
  delay from ``pgvault_retry_delay`` (app setting, seconds, default :data:`RETRY_DELAY`), at
  most :data:`MAX_RETRIES` times; a dump that failed and mistakes (a bad config, a missing key,
  a failing ``before_*`` hook) fail at once with their one line.
* **Two runs of one pipeline never both go.** A task that finds the pipeline's run lock held by
  another run (another worker, another host, cron) returns ``status = "skipped"``, ``reason =
  "already running"`` and the holder named: one result, no retry storm. After a lost worker the
  lock may be the dead run's own for a while (a lease from another host), so a retried task
  waits and tries again before it gives up as skipped.

:func:`beat_schedule_for` turns the ``[schedule]`` tables into ``beat_schedule`` entries with
:class:`celery.schedules.crontab`; ``timeout`` becomes the task's soft time limit (the run stops
and cleans up) and ``randomized_delay`` a fixed per-pipeline start offset.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from celery import Celery, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.schedules import crontab

import pgvault
from pgvault.config_lookup import find_config
from pgvault.exceptions import (
    ConfigError,
    ExecHookError,
    ObjectArchivedError,
    ObjectNotFoundError,
    PgVaultError,
    RunLockedError,
    SinkError,
    SourceUnavailableError,
)

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.units import CronSpec

__all__ = [
    "JOB_TASKS",
    "MAX_RETRIES",
    "RETRY_DELAY",
    "TRANSIENT_ERRORS",
    "PgVaultTaskError",
    "app",
    "beat_schedule_for",
    "check",
    "copy",
    "drill",
    "make_app",
    "prune",
    "report",
    "run",
]

log = logging.getLogger("pgvault.celery")

MAX_RETRIES = 5
"""Attempts after the first, for transient failures and lost workers together."""
RETRY_DELAY = 30.0
"""Seconds before the first retry; each next one waits twice as long, up to :data:`MAX_DELAY`.
With the defaults the retries span about 15 minutes: longer than a dead host's lease holds."""
MAX_DELAY = 600.0
TIME_LIMIT_GRACE = 60
"""Seconds between ``[schedule] timeout`` (the soft limit: the run stops and cleans up) and the
hard limit (the worker's child is killed)."""

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    SinkError,
    SourceUnavailableError,
    ConnectionError,
)
"""Failures worth another attempt: the storage or the database was unreachable or went away.
A dump that failed (pg_dump's own error) is not among them: another attempt rarely helps, and
each failed attempt is a failed run the notifiers report."""
_PERMANENT: tuple[type[BaseException], ...] = (
    ConfigError,
    ExecHookError,
    ObjectNotFoundError,
    ObjectArchivedError,
)
"""Subclasses (or neighbours) of the transient ones that another attempt would not fix."""

JOB_TASKS: Mapping[str, str] = {
    "backup": "pgvault.run",
    "prune": "pgvault.prune",
    "check": "pgvault.check",
    "drill": "pgvault.drill",
    "report": "pgvault.report",
}
"""The task each ``[schedule]`` job sends."""

DEFAULTS: Mapping[str, Any] = {
    # A run lost with its worker goes back to the broker rather than disappearing.
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    # A backup holds its worker for minutes or hours: never reserve a second task behind it
    # while other workers idle.
    "worker_prefetch_multiplier": 1,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "task_track_started": True,
    "task_default_queue": "pgvault",
    "result_expires": timedelta(days=7),
    "broker_connection_retry_on_startup": True,
    "pgvault_retry_delay": RETRY_DELAY,
}
"""The settings :func:`make_app` starts from (Celery's names; ``pgvault_retry_delay`` is ours)."""


class PgVaultTaskError(Exception):
    """A task failed for good: the message is pgvault's one line (config, key, artifact at fault).

    pgvault's own exceptions carry keyword context that a result backend cannot rebuild; this one
    holds only the line, so every client reads it back as sent.
    """


def _local_zone(env: Mapping[str, str] | None = None) -> str:
    """The host's time zone name: ``[schedule]`` times are local time, as cron's are."""
    env = os.environ if env is None else env
    tz = env.get("TZ", "").lstrip(":")
    if tz == "UTC" or "/" in tz:
        return tz
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        return "UTC"
    _, found, name = target.partition("zoneinfo/")
    return name if found and name else "UTC"


def make_app(
    main: str = "pgvault",
    *,
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> Celery:
    """A Celery app for pgvault's workers and beat: :data:`DEFAULTS`, then the environment, then
    the lowercase names of the module named by ``CELERY_CONFIG_MODULE`` (Celery settings such as
    ``broker_transport_options``), then ``settings``; each wins over the ones before.

    Environment: ``PGVAULT_CELERY_BROKER_URL``, ``PGVAULT_CELERY_RESULT_BACKEND``,
    ``PGVAULT_CELERY_QUEUE`` (default ``pgvault``) and ``PGVAULT_CELERY_CONFIGS`` (configs whose
    ``[schedule]`` tables make the beat schedule, ``:``-separated).
    """
    env = os.environ if env is None else env
    # Not the current app: an application that imports this module for the shared tasks keeps
    # its own app as the one ``.delay()`` sends through.
    celery_app = Celery(main, set_as_current=False)
    conf: dict[str, Any] = {**DEFAULTS, "timezone": _local_zone(env)}
    for var, key in (
        ("PGVAULT_CELERY_BROKER_URL", "broker_url"),
        ("PGVAULT_CELERY_RESULT_BACKEND", "result_backend"),
        ("PGVAULT_CELERY_QUEUE", "task_default_queue"),
    ):
        if env.get(var):
            conf[key] = env[var]
    if env.get("CELERY_CONFIG_MODULE"):
        # Read here rather than through config_from_object: Celery lets values set in code win
        # over a config source, and the module must win over the defaults above.
        module = importlib.import_module(env["CELERY_CONFIG_MODULE"])
        conf.update((k, v) for k, v in vars(module).items() if k.islower() and k[0] != "_")
    conf.update(settings)
    celery_app.conf.update(conf)
    configs = [c for c in env.get("PGVAULT_CELERY_CONFIGS", "").split(os.pathsep) if c]
    if configs and not celery_app.conf.beat_schedule:
        celery_app.conf.beat_schedule = beat_schedule_for(
            configs, queue=celery_app.conf.task_default_queue
        )
    return celery_app


# --- the tasks


def _load(config: str) -> PipelineConfig:
    return pgvault.load_config(find_config(config))


def _worker(task: Any) -> str:
    return str(getattr(task.request, "hostname", None) or "")


def _delay(task: Any) -> float:
    base = float(task.app.conf.get("pgvault_retry_delay", RETRY_DELAY))
    return float(min(base * 2 ** int(task.request.retries or 0), MAX_DELAY))


def _retry(task: Any, why: str) -> NoReturn:
    """Send the task again (counted), or fail for good when the retries are spent."""
    if int(task.request.retries or 0) >= int(task.max_retries or 0):
        raise PgVaultTaskError(f"{why}; gave up after {task.max_retries} retries")
    countdown = _delay(task)
    log.warning("%s: %s; retrying in %g s", task.name, why, countdown)
    raise task.retry(countdown=countdown, exc=PgVaultTaskError(why))


def _transient(exc: BaseException) -> bool:
    # A required destination failing (DestinationError) is a SinkError: the storage was
    # unreachable, as for a single sink. An optional one never fails the run.
    return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, _PERMANENT)


def _attempt(
    task: Any, job: str, config: str, work: Callable[[PipelineConfig], dict[str, Any]]
) -> dict[str, Any]:
    """Run ``work`` on the loaded config with the retry, lock and error rules of the module."""
    delivery = task.request.delivery_info or {}
    if delivery.get("redelivered"):
        # The broker gave this message back: the worker that had it was lost mid-task (or shut
        # down before starting it). Count that as an attempt, so that a job that kills every
        # worker ends after MAX_RETRIES.
        _retry(task, f"{job} of {config}: the worker running it was lost")
    base = {"job": job, "config": config, "worker": _worker(task)}
    try:
        loaded = _load(config)
        base["pipeline"] = loaded.name
        return {**base, **work(loaded)}
    except RunLockedError as exc:
        retries = int(task.request.retries or 0)
        if 0 < retries < int(task.max_retries or 0):
            # A retried task may meet its own lost attempt's lease (another host's lasts until
            # it expires, a zombie's until it is reaped): wait for it before calling it busy.
            _retry(task, str(exc))
        log.info("%s of %s skipped: %s", job, config, exc)
        return {**base, "status": "skipped", "reason": "already running", "message": str(exc)}
    except PgVaultError as exc:
        if _transient(exc):
            _retry(task, f"{job} of {config}: {exc}")
        raise PgVaultTaskError(f"{job} of {config}: {exc}") from None
    except ConnectionError as exc:
        _retry(task, f"{job} of {config}: {exc}")
    except SoftTimeLimitExceeded:
        # The run has stopped and removed what it stored; another attempt would stop there too.
        limit = task.request.timelimit[1] if task.request.timelimit else None
        raise PgVaultTaskError(
            f"{job} of {config}: stopped at its time limit"
            + (f" (soft_time_limit {limit:g} s)" if limit else "")
        ) from None


def _task(name: str) -> Callable[[Callable[..., dict[str, Any]]], Any]:
    return shared_task(  # type: ignore[no-any-return]
        name=f"pgvault.{name}",
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=MAX_RETRIES,
    )


def _iso(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


def _run(task: Any, config: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Take a backup (``pgvault run``): ``status`` ``succeeded`` with the backup's id, size and
    times, or ``skipped`` when another run of the pipeline is going."""

    def work(cfg: PipelineConfig) -> dict[str, Any]:
        manifest = pgvault.run(cfg, labels=dict(labels or {}))
        return {
            "status": "succeeded",
            "backup_id": manifest.backup_id,
            "started_at": _iso(manifest.started_at),
            "finished_at": _iso(manifest.finished_at),
            "duration_seconds": round(manifest.duration_seconds, 3),
            "size": manifest.size,
            "raw_size": manifest.raw_size,
            "attempt": int(task.request.retries or 0) + 1,
        }

    return _attempt(task, "backup", config, work)


def _prune(task: Any, config: str, dry_run: bool = False) -> dict[str, Any]:
    """Apply the retention policy (``pgvault prune``); a removal the sink refused is retried."""

    def work(cfg: PipelineConfig) -> dict[str, Any]:
        result = pgvault.prune(cfg, dry_run=dry_run)
        if not result.ok:
            failed = "; ".join(f.message for f in result.failures) or "a tier move failed"
            raise SinkError(f"prune left work undone: {failed}")
        return {"status": "succeeded", **result.to_dict()}

    return _attempt(task, "prune", config, work)


def _check(task: Any, config: str) -> dict[str, Any]:
    """Check the vault (``pgvault check``): ``status`` is the Nagios status (``OK`` …); the task
    itself succeeds whatever the vault's state, as the check does."""

    def work(cfg: PipelineConfig) -> dict[str, Any]:
        result = pgvault.check(cfg)
        return {**result.to_dict(), "status": result.status.name, "summary": result.summary()}

    return _attempt(task, "check", config, work)


def _drill(task: Any, config: str, ref: str = "latest") -> dict[str, Any]:
    """Restore a backup somewhere harmless and validate it (``pgvault drill``). A drill that ran
    and failed is a result (``status`` ``failed``, recorded in the vault), not a retry."""

    def work(cfg: PipelineConfig) -> dict[str, Any]:
        result = pgvault.drill(cfg, ref)
        return {**result.to_dict(), "status": "succeeded" if result.ok else "failed"}

    return _attempt(task, "drill", config, work)


def _report(task: Any, config: str, since_days: float = 30) -> dict[str, Any]:
    """The vault's report over the last ``since_days`` (``pgvault report --format json``)."""

    def work(cfg: PipelineConfig) -> dict[str, Any]:
        built = pgvault.report(cfg, since=timedelta(days=since_days))
        return {"status": "succeeded", "summary": built.summary(), **built.to_dict()}

    return _attempt(task, "report", config, work)


def _copy(
    task: Any, config: str, source: str, target: str, backups: Sequence[str] = ()
) -> dict[str, Any]:
    """Copy backups between the pipeline's destinations (``pgvault copy``); a backup that failed
    to copy is retried (what is there already is not copied again)."""

    def work(cfg: PipelineConfig) -> dict[str, Any]:
        result = pgvault.copy(cfg, source, target, tuple(backups))
        if not result.ok:
            failed = [c for c in result.backups if c.action == "failed"]
            why = "; ".join(f"{c.backup_id}: {c.error}" for c in failed) or "WAL copy failed"
            raise SinkError(f"copy to {target} left work undone: {why}")
        return {"status": "succeeded", **result.to_dict()}

    return _attempt(task, "copy", config, work)


run = _task("run")(_run)
prune = _task("prune")(_prune)
check = _task("check")(_check)
drill = _task("drill")(_drill)
report = _task("report")(_report)
copy = _task("copy")(_copy)


# --- the beat schedule


def _crontabs(spec: CronSpec) -> list[tuple[str, Any]]:
    """Celery crontabs meaning what cron means by ``spec``: Celery requires both day fields to
    match, cron either when both are restricted, so that case becomes two entries."""
    fields = {
        "minute": spec.minute,
        "hour": spec.hour,
        "month_of_year": spec.month,
    }
    dom, dow = spec.day_of_month, spec.day_of_week
    if not dom.startswith("*") and not dow.startswith("*"):
        return [
            (" (day of month)", crontab(day_of_month=dom, day_of_week="*", **fields)),
            (" (day of week)", crontab(day_of_month="*", day_of_week=dow, **fields)),
        ]
    return [("", crontab(day_of_month=dom, day_of_week=dow, **fields))]


def _offset(key: str, delay: timedelta) -> int:
    """A start offset in ``[0, delay]`` fixed per pipeline and job (systemd's
    ``FixedRandomDelay``): hosts and pipelines spread out, each on a steady rhythm."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return int(digest % (int(delay.total_seconds()) + 1))


def beat_schedule_for(
    configs: Iterable[str | os.PathLike[str]], *, queue: str | None = None
) -> dict[str, dict[str, Any]]:
    """``beat_schedule`` entries for the ``[schedule]`` tables of ``configs`` (paths or names).

    Each job becomes ``"pgvault <job> <config>"``: the job's task (:data:`JOB_TASKS`) with the
    config as given (a name stays a name, found on each worker's own search path), its cron
    fields as a :class:`~celery.schedules.crontab` in the app's ``timezone``, ``timeout`` as
    ``soft_time_limit`` (plus :data:`TIME_LIMIT_GRACE` as ``time_limit``), ``randomized_delay``
    as a fixed ``countdown``, and ``queue`` when given. A config without ``[schedule]``
    contributes nothing; one that cannot be read raises its :class:`ConfigError`.
    """
    entries: dict[str, dict[str, Any]] = {}
    for ref in configs:
        text = os.fspath(ref)
        settings = _load(text).schedule
        for job, spec in settings.jobs():
            options: dict[str, Any] = {}
            if queue:
                options["queue"] = queue
            if settings.timeout is not None:
                soft = max(1, int(settings.timeout.total_seconds()))
                options["soft_time_limit"] = soft
                options["time_limit"] = soft + TIME_LIMIT_GRACE
            if settings.randomized_delay:
                options["countdown"] = _offset(f"{text} {job}", settings.randomized_delay)
            for suffix, schedule in _crontabs(spec):
                entries[f"pgvault {job} {text}{suffix}"] = {
                    "task": JOB_TASKS[job],
                    "schedule": schedule,
                    "args": (text,),
                    "options": dict(options),
                }
    return entries


app = make_app()
"""The app ``celery -A pgvault.integrations.celery worker|beat`` runs (see :func:`make_app`)."""
