"""The ``webhook`` notifier: a JSON POST per event, or a Slack-compatible message.

``format = "json"`` posts :meth:`Event.to_dict` (event, vault, ok, run_id, message, text, host,
time, fields); ``format = "slack"`` posts ``{"text": ...}``, which Slack, Mattermost and
Rocket.Chat incoming webhooks all accept (for a report, its summary line alone). The URL of an
incoming webhook is itself the secret: give it as ``url_env`` (or ``url = "${VAR}"``); logs only
ever show its host.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar, Literal

import attrs

from pgvault.notify.api import (
    Event,
    Notifier,
    NotifierPlugin,
    dumps,
    exactly_one,
    post,
    resolve_secret,
    url_host,
)


@attrs.frozen
class Webhook(Notifier):
    """POST each event to ``url``."""

    type_name: ClassVar[str] = "webhook"

    url: str | None = attrs.field(default=None, repr=False)
    """Where to post (often holds a token: prefer ``url_env``)."""
    url_env: str | None = None
    """Name of the environment variable holding the URL."""
    format: Literal["json", "slack"] = "json"
    """``json``: the full event; ``slack``: a ``{"text": …}`` chat message."""
    headers: dict[str, str] = attrs.field(factory=dict, repr=False)
    """Extra HTTP headers (``Authorization`` …); their values are treated as secrets."""

    def __attrs_post_init__(self) -> None:
        exactly_one(self, self.url, self.url_env, "url")

    def _url(self) -> str:
        return resolve_secret(self.url, self.url_env, "webhook URL")

    def describe(self) -> str:
        try:
            return f"webhook {url_host(self._url())}"
        except Exception:
            return "webhook"

    def secrets(self) -> list[str]:
        found = list(self.headers.values())
        with contextlib.suppress(Exception):  # an unset variable holds no secret to mask
            found.append(self._url())
        return found

    def payload(self, event: Event) -> bytes:
        """The body posted for ``event``."""
        if self.format == "slack":
            icon = ":white_check_mark:" if event.ok else ":rotating_light:"
            text = f"{icon} *{event.title}*"
            if event.text and not event.brief:
                text += f"\n```\n{event.text}\n```"
            return dumps({"text": text})
        return dumps(event.to_dict())

    def send(self, event: Event) -> None:
        post(self._url(), self.payload(event), timeout=self.timeout, headers=self.headers)


plugin = NotifierPlugin(Webhook)
"""The plugin registered as ``webhook`` in the ``pgvault`` entry-point group."""
