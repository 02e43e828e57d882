"""The ``apprise`` notifier: one URL reaches Discord, Teams, PagerDuty, ntfy, Matrix and the rest.

`Apprise <https://github.com/caronc/apprise>`_ speaks to about a hundred services, each named by
a URL (``discord://…``, ``msteams://…``, ``pagerduty://…``, ``ntfys://…``, ``matrixs://…``;
several separated by commas). It is an optional extra: ``pip install 'pgvault[apprise]'``.

The built-ins stay for what apprise cannot do: ``healthchecks`` pairs start and end pings of one
run (so the server measures it and alerts on a run that never came), ``email`` refuses to send a
password over a connection without TLS, ``sentry`` groups failures and checks in to Crons.

Apprise reports a failed delivery in its log rather than raising: this notifier captures that
log for the error message, with the URLs (which hold the tokens) masked.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs

from pgvault.notify.api import (
    Event,
    Notifier,
    NotifierPlugin,
    NotifyError,
    exactly_one,
    resolve_secret,
)

INSTALL_HINT = "the apprise notifier needs the apprise package: pip install 'pgvault[apprise]'"


def _apprise() -> Any:
    try:
        # apprise imports the standard library's deprecated imghdr: its warning is not the
        # user's to act on, and under warnings-as-errors it would stop every notification.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise
    except ImportError:
        raise NotifyError(INSTALL_HINT) from None
    return apprise


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """apprise loads its services lazily, one of them importing the standard library's deprecated
    imghdr: that warning is not the user's to act on, and as an error it would stop delivery."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _schemes(urls: str) -> list[str]:
    return [u.strip().split("://", 1)[0] + "://" for u in urls.replace(" ", ",").split(",") if u]


@attrs.frozen
class Apprise(Notifier):
    """Send each event to the services apprise ``url`` names."""

    type_name: ClassVar[str] = "apprise"

    url: str | None = attrs.field(default=None, repr=False)
    """One or more apprise URLs, comma-separated (they hold tokens: prefer ``url_env``)."""
    url_env: str | None = None
    """Name of the environment variable holding the URL(s)."""

    def __attrs_post_init__(self) -> None:
        exactly_one(self, self.url, self.url_env, "url")
        try:
            apprise = _apprise()
        except NotifyError as exc:
            raise ValueError(str(exc)) from None
        with _quiet():
            known = not self.url or apprise.Apprise().add(self.url)
        if not known:
            raise ValueError(
                "url is not one apprise knows (schemes given: "
                + ", ".join(_schemes(self.url or ""))
                + "); see https://github.com/caronc/apprise/wiki"
            )

    def _url(self) -> str:
        return resolve_secret(self.url, self.url_env, "apprise URL")

    def describe(self) -> str:
        try:
            return "apprise " + ", ".join(_schemes(self._url()))
        except Exception:
            return "apprise"

    def secrets(self) -> list[str]:
        try:
            url = self._url()
        except Exception:
            return []
        parts = [u.strip() for u in url.replace(" ", ",").split(",") if u.strip()]
        # A token also appears on its own in apprise's messages (a path segment of the URL).
        pieces = [p for u in parts for p in u.split("://", 1)[-1].split("/") if len(p) >= 8]
        return [url, *parts, *pieces]

    def notify_type(self, event: Event) -> str:
        """Apprise's message type (it picks the colour and icon): failure, warning, success…"""
        if not event.ok:
            return "warning" if event.fields.get("status") == "WARNING" else "failure"
        return "info" if event.name.endswith("_started") else "success"

    def send(self, event: Event) -> None:
        apprise = _apprise()
        sender = apprise.Apprise()
        with _quiet():
            known = sender.add(self._url())
        if not known:
            raise NotifyError("the apprise URL is not one apprise knows")
        text = "" if event.brief else event.text  # a report: its summary line (the title)
        body = "\n\n".join(p for p in (text, f"host: {event.host}") if p)
        with _quiet(), apprise.LogCapture(level=logging.WARNING) as captured:
            delivered = sender.notify(
                title=event.title, body=body, notify_type=self.notify_type(event)
            )
        if not delivered:
            lines = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
            detail = lines[-1] if lines else "no detail"
            raise NotifyError(f"apprise could not deliver: {detail}")


plugin = NotifierPlugin(Apprise)
"""The plugin registered as ``apprise`` in the ``pgvault`` entry-point group."""
