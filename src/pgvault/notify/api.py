"""The notifier contract, the delivery of events, and the plugin that delivers them.

A notifier is an attrs class (its fields are the options of a ``[[notify]]`` table) with a
:meth:`Notifier.send` that delivers one :class:`Event`. It reaches pgvault as a pluggy plugin in
the ``pgvault`` entry-point group; :class:`NotifierPlugin` turns notifier classes into such a
plugin, so a third-party package needs three lines::

    # mypkg/pgvault_matrix.py
    from pgvault.notify.api import Notifier, NotifierPlugin
    class Matrix(Notifier): ...               # attrs fields + send()
    plugin = NotifierPlugin(Matrix)

    # pyproject.toml
    [project.entry-points.pgvault]
    matrix = "mypkg.pgvault_matrix:plugin"

pgvault's own webhook, healthchecks, email and telegram notifiers are registered exactly so.

The events themselves (the :class:`Event` value and what each hook's event says) are built in
:mod:`pgvault.notify.events`.

Delivery never fails what it reports on: a notifier that raises is logged and retried briefly
(``retries`` times, doubling ``retry_delay``), then given up on with an error in the log. Secrets
(URLs with tokens, passwords) are left out of logs and messages: each notifier names its secret
values in :meth:`Notifier.secrets` and they are masked from every error text.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import time
import typing
import urllib.error
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import pluggy

from pgvault.exceptions import PluginError
from pgvault.notify.events import (
    EVENTS,
    FAILURES,
    Attachment,
    Event,
    EventName,
    backup_failed,
    backup_started,
    backup_succeeded,
    check_failed,
    drill_failed,
    drill_succeeded,
    prune_done,
    restore_failed,
    restore_started,
    restore_succeeded,
)
from pgvault.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from pgvault.operations.check import CheckResult
    from pgvault.operations.drill import DrillResult
    from pgvault.operations.prune import PruneResult
    from pgvault.operations.restore.database import RestoreResult
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.vault.manifest import Manifest

__all__ = [
    "EVENTS",
    "FAILURES",
    "Attachment",
    "Event",
    "EventName",
    "Notifier",
    "NotifierPlugin",
    "NotifyError",
    "deliver",
    "dumps",
    "exactly_one",
    "notifier_types",
    "post",
    "resolve_secret",
    "send_report",
    "url_host",
]
"""The event types live in :mod:`pgvault.notify.events`; they are re-exported here because
every notifier's ``send`` takes one."""

log = logging.getLogger("pgvault.notify")


class NotifyError(Exception):
    """A notifier could not deliver; its message must hold no secret."""


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be ≥ 0, got {value}")


@attrs.frozen(kw_only=True)
class Notifier(abc.ABC):
    """Base of every notifier: the options all of them share, and the delivery contract.

    Subclasses are ``@attrs.frozen`` and set ``type_name`` (what ``[[notify]] type`` names).
    Secret options are declared with ``repr=False`` and returned by :meth:`secrets`.
    """

    type_name: ClassVar[str]
    default_events: ClassVar[tuple[EventName, ...]] = FAILURES

    events: tuple[EventName, ...] | None = None
    """Events to send; the notifier's own default when unset (failures, for most)."""
    retries: int = attrs.field(default=2, validator=_positive)
    """Further attempts after a failed delivery."""
    retry_delay: float = attrs.field(default=1.0, validator=_positive)
    """Seconds before the first retry; doubled for each next one."""
    timeout: float = attrs.field(default=10.0, validator=_positive)
    """Seconds to wait for the remote end, per attempt."""

    def wants(self, event: EventName) -> bool:
        """Whether this notifier is configured to send ``event``."""
        return event in (self.events if self.events is not None else self.default_events)

    @abc.abstractmethod
    def send(self, event: Event) -> None:
        """Deliver ``event`` once; raise (any exception) if it was not accepted."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where this notifier sends, for logs: no tokens, passwords or secret URLs."""

    def secrets(self) -> list[str]:
        """Secret values this notifier holds, masked from every logged error."""
        return []


def resolve_secret(value: str | None, env_var: str | None, what: str) -> str:
    """A secret given either directly (``${VAR}`` in the file) or as ``*_env`` (a variable name).

    Read at send time, so commands that never notify (``list``) do not need the secret set.
    """
    if value:
        return value
    if env_var:
        found = os.environ.get(env_var)
        if not found:
            raise NotifyError(f"environment variable {env_var} ({what}) is not set")
        return found
    raise NotifyError(f"no {what} configured")


def exactly_one(instance: Notifier, value: str | None, env_var: str | None, option: str) -> None:
    """Refuse a config that sets both or neither of ``option`` and ``option_env``."""
    if bool(value) == bool(env_var):
        raise ValueError(
            f"{instance.type_name}: set exactly one of {option} or {option}_env "
            f"(the name of an environment variable holding it)"
        )


def post(
    url: str,
    payload: bytes | None,
    *,
    timeout: float,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """POST ``payload`` to ``url`` and return the response body; a non-2xx answer raises.

    Errors name the HTTP status or the network failure, never the URL (it may hold a token).
    """
    # Imported when a notification is sent: every run loads the notifier plugins, and most
    # runs send nothing (urllib.request brings http.client and its parsers).
    import urllib.request

    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise NotifyError(f"unsupported URL scheme {scheme!r} (use http or https)")
    # The scheme is checked above: no file:// or custom handlers reach urllib.
    request = urllib.request.Request(  # noqa: S310
        url, data=payload if payload is not None else b"", method="POST"
    )
    request.add_header("Content-Type", content_type)
    request.add_header("User-Agent", "pgvault")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body: bytes = response.read()
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        detail = exc.read(200).decode("utf-8", "replace").strip()
        exc.close()
        more = f": {detail}" if detail else ""
        raise NotifyError(f"HTTP {exc.code} {exc.reason}{more}") from None
    except urllib.error.URLError as exc:
        raise NotifyError(f"cannot connect: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise NotifyError(f"network error: {exc}") from None
    if not 200 <= status < 300:
        raise NotifyError(f"HTTP {status}")
    return body


def url_host(url: str) -> str:
    """``https://hooks.slack.com/services/T0/B0/xyz`` → ``https://hooks.slack.com`` (for logs)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _mask(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def deliver(notifier: Notifier, event: Event, *, sleep: Any = time.sleep) -> bool:
    """Send ``event`` through ``notifier`` with brief retries; log, never raise.

    Returns whether it was delivered.
    """
    attempts = notifier.retries + 1
    delay = notifier.retry_delay
    for attempt in range(1, attempts + 1):
        try:
            notifier.send(event)
            return True
        except Exception as exc:
            try:
                secrets = notifier.secrets()
            except Exception:
                secrets = []
            message = _mask(str(exc) or type(exc).__name__, secrets)
            if attempt < attempts:
                log.warning(
                    "notify %s: %s not delivered (attempt %d of %d): %s; retrying in %.1fs",
                    notifier.describe(),
                    event.name,
                    attempt,
                    attempts,
                    message,
                    delay,
                )
                sleep(delay)
                delay *= 2
            else:
                log.error(
                    "notify %s: gave up on %s after %d attempt(s): %s",
                    notifier.describe(),
                    event.name,
                    attempts,
                    message,
                )
    return False


def send_report(config: PipelineConfig, event: Event) -> list[tuple[Notifier, bool]]:
    """Deliver a ``report`` event to every notifier of ``config`` that wants it (``events =
    ["report"]``); each with whether it was delivered.

    Not a hook: a report is sent because a command asked for it (``pgvault report --notify``,
    the Celery report task), so the caller hears of each delivery rather than only the logs.
    """
    return [(n, deliver(n, event)) for n in config.notify if n.wants("report")]


# The plugin


class NotifierPlugin:
    """A pluggy plugin delivering every event to the configured notifiers of its classes.

    Each ``[[notify]]`` table of a pipeline config becomes a notifier instance in
    ``config.notify``; this plugin sends to those that are instances of ``classes`` and want the
    event. Register an instance through the ``pgvault`` entry-point group.
    """

    def __init__(self, *classes: type[Notifier]) -> None:
        self.classes = classes

    @hookimpl
    def pgvault_notifier_types(self) -> list[type[Notifier]]:
        """The notifier classes this plugin brings."""
        return list(self.classes)

    def dispatch(self, config: PipelineConfig, event: Event) -> None:
        """Deliver ``event`` to each notifier of this plugin that ``config`` sets up for it."""
        for notifier in getattr(config, "notify", ()):
            if type(notifier) in self.classes and notifier.wants(event.name):
                deliver(notifier, event)

    # Notifiers speak for the schedule: a safety backup taken by a restore is not a run of it,
    # and pinging healthchecks for one would hide a schedule that has stopped.

    @hookimpl
    def pgvault_backup_started(self, config: PipelineConfig, backup_id: str, kind: str) -> None:
        """Send ``backup_started`` (scheduled runs only)."""
        if kind == "scheduled":
            self.dispatch(config, backup_started(config, backup_id))

    @hookimpl
    def pgvault_backup_succeeded(self, config: PipelineConfig, manifest: Manifest) -> None:
        """Send ``backup_succeeded`` (scheduled runs only)."""
        if manifest.kind == "scheduled":
            self.dispatch(config, backup_succeeded(config, manifest))

    @hookimpl
    def pgvault_backup_failed(
        self, config: PipelineConfig, backup_id: str, error: BaseException, kind: str
    ) -> None:
        """Send ``backup_failed`` (scheduled runs only)."""
        if kind == "scheduled":
            self.dispatch(config, backup_failed(config, backup_id, error))

    @hookimpl
    def pgvault_prune_done(self, config: PipelineConfig, result: PruneResult) -> None:
        """Send ``prune_done``."""
        self.dispatch(config, prune_done(config, result))

    @hookimpl
    def pgvault_check_failed(self, config: PipelineConfig, result: CheckResult) -> None:
        """Send ``check_failed``."""
        self.dispatch(config, check_failed(config, result))

    @hookimpl
    def pgvault_drill_succeeded(self, config: PipelineConfig, result: DrillResult) -> None:
        """Send ``drill_succeeded``."""
        self.dispatch(config, drill_succeeded(config, result))

    @hookimpl
    def pgvault_drill_failed(self, config: PipelineConfig, result: DrillResult) -> None:
        """Send ``drill_failed``."""
        self.dispatch(config, drill_failed(config, result))

    @hookimpl
    def pgvault_restore_started(self, config: PipelineConfig, backup_id: str, target: str) -> None:
        """Send ``restore_started``."""
        self.dispatch(config, restore_started(config, backup_id, target))

    @hookimpl
    def pgvault_restore_succeeded(self, config: PipelineConfig, result: RestoreResult) -> None:
        """Send ``restore_succeeded``."""
        self.dispatch(config, restore_succeeded(config, result))

    @hookimpl
    def pgvault_restore_failed(
        self, config: PipelineConfig, backup_id: str, target: str, error: BaseException
    ) -> None:
        """Send ``restore_failed``."""
        self.dispatch(config, restore_failed(config, backup_id, target, error))


def notifier_types(pm: pluggy.PluginManager | None = None) -> dict[str, type[Notifier]]:
    """Every installed notifier class by its ``type`` name (from ``pgvault_notifier_types``)."""
    from pgvault.plugin.manager import get_plugin_manager

    pm = pm or get_plugin_manager()
    found: dict[str, type[Notifier]] = {}
    try:
        results = pm.hook.pgvault_notifier_types()
    except Exception as exc:
        raise PluginError(f"a plugin failed to list its notifier types: {exc}") from exc
    for classes in results:
        for cls in classes:
            name = getattr(cls, "type_name", None)
            if not isinstance(name, str) or not attrs.has(cls):
                raise PluginError(f"notifier {cls!r} needs a type_name and attrs fields")
            if name in found and found[name] is not cls:
                raise PluginError(
                    f"two plugins register notifier type {name!r}: "
                    f"{found[name].__module__} and {cls.__module__}"
                )
            found[name] = typing.cast(type[Notifier], cls)
    return found


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON, as notifiers post it."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
