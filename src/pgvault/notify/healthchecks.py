"""The ``healthchecks`` notifier: start, success and failure pings to a healthchecks.io-style URL.

healthchecks.io (or a self-hosted Healthchecks, or anything speaking its ping API) then alerts
when a backup failed *and* when none arrived in time: the dead cron job that nothing else
notices. Pings go to ``<url>/start``, ``<url>`` and ``<url>/fail``; each carries the run id as
``rid`` (a UUID derived from the backup id, as the API requires) so the server pairs a start with
its end and measures the run's duration; the body holds the details and the backup id.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

import attrs

from pgvault.notify.api import (
    Event,
    EventName,
    Notifier,
    NotifierPlugin,
    exactly_one,
    post,
    resolve_secret,
    url_host,
)

_RID_NAMESPACE = uuid.UUID("6f1c1f9e-4d8a-4c43-9e33-7d3c1b1e5a10")


def run_uuid(backup_id: str) -> str:
    """The ``rid`` of a run: a stable UUID derived from its backup id."""
    return str(uuid.uuid5(_RID_NAMESPACE, backup_id))


@attrs.frozen
class Healthchecks(Notifier):
    """Ping a check's URL: ``https://hc-ping.com/<uuid>`` or ``https://hc.example/ping/<key>/<slug>``."""

    type_name: ClassVar[str] = "healthchecks"
    default_events: ClassVar[tuple[EventName, ...]] = (
        "backup_started",
        "backup_succeeded",
        "backup_failed",
    )

    url: str | None = attrs.field(default=None, repr=False)
    """The check's ping URL (it is enough to forge pings: prefer ``url_env``)."""
    url_env: str | None = None
    """Name of the environment variable holding the ping URL."""

    def __attrs_post_init__(self) -> None:
        exactly_one(self, self.url, self.url_env, "url")

    def _url(self) -> str:
        return resolve_secret(self.url, self.url_env, "healthchecks ping URL").rstrip("/")

    def describe(self) -> str:
        try:
            return f"healthchecks {url_host(self._url())}"
        except Exception:
            return "healthchecks"

    def secrets(self) -> list[str]:
        try:
            return [self._url()]
        except Exception:
            return []

    def ping_url(self, event: Event) -> str:
        """Where ``event`` is pinged: ``/start`` for a start, ``/fail`` for a failure."""
        url = self._url()
        if event.name == "backup_started":
            url += "/start"
        elif not event.ok:
            url += "/fail"
        if event.run_id:
            url += f"?rid={run_uuid(event.run_id)}"
        return url

    def send(self, event: Event) -> None:
        body = event.body().encode()[:100_000]  # the ping API keeps at most 100 kB of a body
        post(
            self.ping_url(event),
            body,
            timeout=self.timeout,
            content_type="text/plain; charset=utf-8",
        )


plugin = NotifierPlugin(Healthchecks)
"""The plugin registered as ``healthchecks`` in the ``pgvault`` entry-point group."""
