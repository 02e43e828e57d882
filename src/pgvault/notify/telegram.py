"""The ``telegram`` notifier: a Bot API ``sendMessage`` per event.

Create a bot with @BotFather, add it to the chat, and give its token as ``bot_token_env``. The
token is part of the API URL, so it is masked from every logged error. ``api_url`` points at a
self-hosted Bot API server when there is one.
"""

from __future__ import annotations

import json
from typing import ClassVar

import attrs

from pgvault.notify.api import (
    Event,
    Notifier,
    NotifierPlugin,
    NotifyError,
    dumps,
    exactly_one,
    post,
    resolve_secret,
)


@attrs.frozen
class Telegram(Notifier):
    """Send each event as a message to ``chat_id``."""

    type_name: ClassVar[str] = "telegram"

    chat_id: int | str
    """Numeric chat id (``-100…`` for groups) or ``@channelname``."""
    bot_token: str | None = attrs.field(default=None, repr=False)
    """The bot's token (prefer ``bot_token_env``)."""
    bot_token_env: str | None = None
    """Name of the environment variable holding the token."""
    api_url: str = "https://api.telegram.org"
    """Bot API endpoint."""

    def __attrs_post_init__(self) -> None:
        exactly_one(self, self.bot_token, self.bot_token_env, "bot_token")

    def _token(self) -> str:
        return resolve_secret(self.bot_token, self.bot_token_env, "Telegram bot token")

    def describe(self) -> str:
        return f"telegram chat {self.chat_id}"

    def secrets(self) -> list[str]:
        try:
            return [self._token()]
        except Exception:
            return []

    def send(self, event: Event) -> None:
        url = f"{self.api_url.rstrip('/')}/bot{self._token()}/sendMessage"
        # A report's summary line, not its whole table; the Bot API keeps 4096 characters.
        text = (f"{event.title}\n\nhost: {event.host}" if event.brief else event.body())[:4096]
        body = post(
            url,
            dumps({"chat_id": self.chat_id, "text": text, "disable_web_page_preview": True}),
            timeout=self.timeout,
        )
        try:
            answer = json.loads(body)
        except ValueError:
            raise NotifyError("the Bot API answered with something other than JSON") from None
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            description = answer.get("description") if isinstance(answer, dict) else None
            raise NotifyError(f"the Bot API refused the message: {description or answer!r}")


plugin = NotifierPlugin(Telegram)
"""The plugin registered as ``telegram`` in the ``pgvault`` entry-point group."""
