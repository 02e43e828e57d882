"""The ``sentry`` notifier: error events for failed runs and Sentry Crons check-ins for backups.

Every failed backup, restore, prune, check and drill becomes a Sentry error event (grouped by
pipeline and event, so a failure that repeats nightly is one issue with a count). With
``monitor_slug`` set, each scheduled backup also checks in to a Sentry Crons monitor:
``in_progress`` when it starts, ``ok`` or ``error`` when it ends (one check-in id per run, so
Sentry measures the run). With ``schedule`` (a crontab line) each check-in carries the monitor's
configuration, so Sentry creates or updates the monitor itself and alerts when a backup that
should have run never checked in: the dead cron job.

Both travel as one envelope POSTed to the DSN's envelope endpoint
(``https://HOST/api/PROJECT/envelope/``), the documented ingestion protocol every Sentry SDK
speaks. Speaking it directly rather than through ``sentry-sdk`` keeps pgvault from installing a
global SDK (its excepthook, its logging integration, its transport thread) inside an application
that embeds pgvault and may run its own Sentry client with another DSN; the protocol needed here
is three JSON lines. An application that already runs sentry-sdk sees pgvault's failures anyway,
through its logging integration: they are logged at ERROR.

The DSN's public key is enough to send events to the project: it is treated as a secret (give it
as ``dsn_env``), and logs only show the host and project id.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar

import attrs

from pgvault.notify.api import (
    Event,
    EventName,
    Notifier,
    NotifierPlugin,
    NotifyError,
    dumps,
    exactly_one,
    post,
    resolve_secret,
)
from pgvault.units import Duration

_CHECKIN_NAMESPACE = uuid.UUID("0b8f3a52-52c4-4b0e-9a55-2f6f0c1d7e31")
_SLUG_RE = re.compile(r"^[a-z0-9_-]{1,50}$")
_CRON_FIELD_RE = re.compile(r"^[\d*/,\-A-Za-z]+$")
CHECKIN_STATUS: dict[str, str] = {
    "backup_started": "in_progress",
    "backup_succeeded": "ok",
    "backup_failed": "error",
}
"""The Crons status a backup event reports."""


def _pgvault_version() -> str:
    try:
        return version("pgvault")
    except PackageNotFoundError:  # a source tree without installed metadata
        return "0"


@attrs.frozen
class Dsn:
    """The parts of a Sentry DSN ``https://PUBLIC_KEY@HOST[:PORT][/PREFIX]/PROJECT_ID``."""

    scheme: str
    public_key: str
    netloc: str
    prefix: str
    project_id: str

    @classmethod
    def parse(cls, text: str) -> Dsn:
        """Split ``text``; the error never quotes it (it holds the key)."""
        match = re.match(
            r"^(?P<scheme>https?)://(?P<key>[^:@/]+)(?::[^@/]*)?@(?P<netloc>[^/@]+)"
            r"(?P<prefix>(?:/[^/]+)*?)/(?P<project>\d+)/?$",
            text.strip(),
        )
        if not match:
            raise NotifyError(
                "invalid Sentry DSN (expected https://PUBLIC_KEY@HOST/PROJECT_ID, as the "
                "project's Client Keys page shows it)"
            )
        return cls(
            match["scheme"], match["key"], match["netloc"], match["prefix"], match["project"]
        )

    @property
    def envelope_url(self) -> str:
        """Where envelopes are POSTed."""
        return f"{self.scheme}://{self.netloc}{self.prefix}/api/{self.project_id}/envelope/"

    def describe(self) -> str:
        """Host and project, for logs: no key."""
        return f"{self.scheme}://{self.netloc}{self.prefix} project {self.project_id}"


def checkin_id(backup_id: str) -> str:
    """The Crons check-in id of a run: a UUID (hex) derived from its backup id, so the start and
    the end of one run pair up without any state kept between them."""
    return uuid.uuid5(_CHECKIN_NAMESPACE, backup_id).hex


def _crontab(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    fields = value.split()
    if len(fields) != 5 or not all(_CRON_FIELD_RE.match(f) for f in fields):
        raise ValueError(
            f"schedule must be a crontab line of 5 fields such as '0 2 * * *', got {value!r}"
        )


def _minutes(duration: Duration) -> int:
    return max(1, round(duration.delta.total_seconds() / 60))


@attrs.frozen
class Sentry(Notifier):
    """Send failures (and, with ``monitor_slug``, backup check-ins) to a Sentry project."""

    type_name: ClassVar[str] = "sentry"
    default_events: ClassVar[tuple[EventName, ...]] = (
        "backup_started",
        "backup_succeeded",
        "backup_failed",
        "restore_failed",
        "prune_done",
        "check_failed",
        "drill_failed",
    )

    dsn: str | None = attrs.field(default=None, repr=False)
    """The project's DSN (it holds the key that lets anyone send to it: prefer ``dsn_env``)."""
    dsn_env: str | None = None
    """Name of the environment variable holding the DSN (``SENTRY_DSN``, as Sentry's SDKs)."""
    environment: str = "production"
    """Sentry's environment of events and check-ins."""
    monitor_slug: str | None = None
    """The Crons monitor backups check in to; no check-ins when unset."""
    schedule: str | None = attrs.field(default=None, validator=_crontab)
    """The backups' crontab line (``"0 2 * * *"``): sent with each check-in so Sentry creates the
    monitor and knows when a backup is missing. Without it the monitor must exist in Sentry."""
    timezone: str = "UTC"
    """Time zone of ``schedule``."""
    checkin_margin: Duration | None = None
    """How late a backup may start before Sentry reports it missed (``"30m"``)."""
    max_runtime: Duration | None = None
    """How long a backup may run before Sentry reports it timed out (``"3h"``)."""

    def __attrs_post_init__(self) -> None:
        exactly_one(self, self.dsn, self.dsn_env, "dsn")
        if self.dsn:
            try:
                Dsn.parse(self.dsn)
            except NotifyError as exc:
                raise ValueError(str(exc)) from None
        if self.monitor_slug is not None and not _SLUG_RE.match(self.monitor_slug):
            raise ValueError(
                f"monitor_slug {self.monitor_slug!r}: use lowercase letters, digits, '-' and '_'"
            )
        if self.schedule and not self.monitor_slug:
            raise ValueError("schedule needs monitor_slug (the monitor it configures)")

    def _dsn(self) -> Dsn:
        return Dsn.parse(resolve_secret(self.dsn, self.dsn_env, "Sentry DSN"))

    def describe(self) -> str:
        try:
            return f"sentry {self._dsn().describe()}"
        except Exception:
            return "sentry"

    def secrets(self) -> list[str]:
        try:
            dsn = resolve_secret(self.dsn, self.dsn_env, "Sentry DSN")
        except Exception:
            return []
        found = [dsn]
        with contextlib.suppress(NotifyError):
            found.append(Dsn.parse(dsn).public_key)
        return found

    def monitor_config(self) -> dict[str, Any] | None:
        """The monitor's configuration sent with check-ins (an upsert), when ``schedule`` is set."""
        if not self.schedule:
            return None
        config: dict[str, Any] = {
            "schedule": {"type": "crontab", "value": self.schedule},
            "timezone": self.timezone,
        }
        if self.checkin_margin is not None:
            config["checkin_margin"] = _minutes(self.checkin_margin)
        if self.max_runtime is not None:
            config["max_runtime"] = _minutes(self.max_runtime)
        return config

    def checkin(self, event: Event) -> dict[str, Any] | None:
        """The check-in item's payload for ``event``, or ``None`` when it is not one to report."""
        status = CHECKIN_STATUS.get(event.name)
        if status is None or self.monitor_slug is None or event.run_id is None:
            return None
        payload: dict[str, Any] = {
            "check_in_id": checkin_id(event.run_id),
            "monitor_slug": self.monitor_slug,
            "status": status,
            "environment": self.environment,
            "release": f"pgvault@{_pgvault_version()}",
        }
        duration = event.fields.get("duration_seconds")
        if status != "in_progress" and isinstance(duration, int | float):
            payload["duration"] = float(duration)
        monitor = self.monitor_config()
        if monitor is not None:
            payload["monitor_config"] = monitor
        return payload

    def error_event(self, event: Event) -> dict[str, Any] | None:
        """The error event's payload for a failure, ``None`` for anything that went well."""
        if event.ok:
            return None
        status = event.fields.get("status")
        level = "warning" if status == "WARNING" else "error"
        error = event.fields.get("error")
        payload: dict[str, Any] = {
            "event_id": uuid.uuid4().hex,
            "timestamp": event.time.astimezone(UTC).isoformat(),
            "platform": "python",
            "level": level,
            "logger": "pgvault",
            "server_name": event.host,
            "environment": self.environment,
            "release": f"pgvault@{_pgvault_version()}",
            "message": {"formatted": event.title},
            # One issue per pipeline and kind of failure: last night's and tonight's failed
            # backups are the same problem, counted, not two issues.
            "fingerprint": ["pgvault", event.vault, event.name],
            "tags": {"pgvault.event": event.name, "pgvault.pipeline": event.vault},
            "extra": {"details": event.text, **event.fields},
        }
        if event.run_id:
            payload["tags"]["pgvault.backup_id"] = event.run_id
        if isinstance(error, str):
            payload["exception"] = {
                "values": [
                    {
                        "type": str(event.fields.get("error_type") or event.name),
                        "value": error,
                        "module": "pgvault",
                        "mechanism": {"type": "pgvault", "handled": True},
                    }
                ]
            }
        return payload

    def envelope(self, event: Event) -> bytes | None:
        """The envelope for ``event`` (header line, then one item per line pair), if any."""
        items: list[tuple[str, dict[str, Any]]] = []
        checkin = self.checkin(event)
        if checkin is not None:
            items.append(("check_in", checkin))
        error = self.error_event(event)
        if error is not None:
            items.append(("event", error))
        if not items:
            return None
        header: dict[str, Any] = {
            "sent_at": datetime.now(UTC).isoformat(),
            "sdk": {"name": "pgvault", "version": _pgvault_version()},
        }
        if error is not None:
            header["event_id"] = error["event_id"]
        lines = [dumps(header)]
        for kind, payload in items:
            body = dumps(payload)
            lines += [dumps({"type": kind, "length": len(body)}), body]
        return b"\n".join(lines) + b"\n"

    def send(self, event: Event) -> None:
        envelope = self.envelope(event)
        if envelope is None:
            return
        dsn = self._dsn()
        auth = (
            f"Sentry sentry_version=7, sentry_key={dsn.public_key}, "
            f"sentry_client=pgvault/{_pgvault_version()}"
        )
        post(
            dsn.envelope_url,
            envelope,
            timeout=self.timeout,
            content_type="application/x-sentry-envelope",
            headers={"X-Sentry-Auth": auth},
        )


plugin = NotifierPlugin(Sentry)
"""The plugin registered as ``sentry`` in the ``pgvault`` entry-point group."""
