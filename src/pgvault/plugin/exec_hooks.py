"""Exec hooks: the ``[[hook]]`` tables, commands run before and after an operation.

For what a plugin is too heavy for: ``systemctl stop app`` before a restore and ``start`` after
it, a cache flush before a backup, a copy after one::

    [[hook]]
    on = ["before_restore"]
    command = ["systemctl", "stop", "app"]
    timeout = "60s"

A command gets the event's fields in its environment (``PGVAULT_EVENT``, ``PGVAULT_PIPELINE``,
``PGVAULT_BACKUP_ID``, …, see :data:`ENV_FIELDS`), never a secret: the variables the config names
in its ``*_env`` options are removed from what the command inherits. A ``before_*`` hook that
fails (exit ≠ 0, not found, timed out) stops the operation with :class:`ExecHookError`, whose one
line holds the tail of the command's output. An ``after_*`` hook runs once the operation started,
whatever its outcome (``PGVAULT_OUTCOME``), also when a ``before_*`` hook stopped it, so that a
``start`` undoes a half-done ``stop``; its failure is logged at ERROR and does not change the
outcome.

These run as direct calls, not through pluggy: a before hook must be able to stop the operation,
and pluggy's event hooks are isolated notifications that never can. Backup hooks fire for the
pipeline's own runs only, not for the safety backup a restore takes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import attrs

from pgvault.exceptions import ExecHookError
from pgvault.units import Duration

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.hooks")

HookEvent = Literal[
    "before_backup",
    "after_backup",
    "before_restore",
    "after_restore",
    "before_prune",
    "after_prune",
    "before_drill",
    "after_drill",
]

ENV_FIELDS = (
    "PGVAULT_EVENT",
    "PGVAULT_PIPELINE",
    "PGVAULT_CONFIG",
    "PGVAULT_BACKUP_ID",
    "PGVAULT_TARGET",
    "PGVAULT_SAFETY_BACKUP_ID",
    "PGVAULT_DRILL_ID",
    "PGVAULT_OUTCOME",
    "PGVAULT_ERROR",
)
"""The variables a hook command may find set (each only when it applies to the event)."""

_TAIL_LINES = 5
_TAIL_CHARS = 400
_KILL_GRACE = 5.0


def _not_empty(instance: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must not be empty")


@attrs.frozen
class ExecHook:
    """One ``[[hook]]`` table: a command and the events it runs for."""

    on: tuple[HookEvent, ...] = attrs.field(validator=_not_empty)
    """Events to run for: ``before_backup``, ``after_restore`` …"""
    command: tuple[str, ...] = attrs.field(validator=_not_empty)
    """The program and its arguments (no shell: give ``["sh", "-c", "…"]`` for one)."""
    timeout: Duration = attrs.field(factory=lambda: Duration.parse("60s"))
    """How long the command may run before it is stopped (and counted as failed)."""

    def describe(self) -> str:
        """The command as a shell would show it, for messages."""
        return shlex.join(self.command)


def _secret_variables(config: PipelineConfig) -> set[str]:
    """Names of the environment variables the config reads secrets from (``*_env`` options)."""
    found: set[str] = set()
    parts: list[object] = [config.source, config.sink, *config.transforms, *config.notify]
    for part in parts:
        cls: Any = type(part)
        if not attrs.has(cls):
            continue
        for field in attrs.fields(cls):
            value = getattr(part, field.name, None)
            if field.name.endswith("_env") and isinstance(value, str) and value:
                found.add(value)
    return found


def hook_environment(
    config: PipelineConfig, event: str, fields: Mapping[str, str | None]
) -> dict[str, str]:
    """The environment a hook command runs with: ours minus secrets, plus the event's fields."""
    env = {k: v for k, v in os.environ.items() if k not in _secret_variables(config)}
    env = {k: v for k, v in env.items() if not k.startswith("PGVAULT_") or k == "PGVAULT_CONFIG"}
    env["PGVAULT_EVENT"] = event
    env["PGVAULT_PIPELINE"] = config.name
    if config.path is not None:
        env["PGVAULT_CONFIG"] = str(config.path)
    for key, value in fields.items():
        if value is not None:
            env[f"PGVAULT_{key.upper()}"] = value.replace("\n", " ")
    return env


def _tail(output: bytes) -> str:
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines()]
    text = " | ".join([line for line in lines if line][-_TAIL_LINES:])
    return text if len(text) <= _TAIL_CHARS else "…" + text[-_TAIL_CHARS:]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the command and whatever it started (it runs in a session of its own)."""
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_one(hook: ExecHook, event: str, env: Mapping[str, str]) -> str | None:
    """Run ``hook`` for ``event``; return ``None`` when it succeeded, else why it failed."""
    name = f"{event} hook `{hook.describe()}`"
    log.info("running %s", name)
    try:
        process = subprocess.Popen(
            hook.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,  # so a timeout stops its children too
        )
    except OSError as exc:
        return f"{name} could not start: {exc.strerror or exc}"
    try:
        output, _ = process.communicate(timeout=hook.timeout.delta.total_seconds())
    except subprocess.TimeoutExpired:
        _stop(process)
        output, _ = process.communicate()  # what it wrote before it was stopped; closes the pipe
        tail = _tail(output)
        return f"{name} timed out after {hook.timeout}" + (f": {tail}" if tail else "")
    except BaseException:  # Ctrl-C, SIGTERM: the command must not outlive us
        _stop(process)
        raise
    tail = _tail(output)
    if process.returncode != 0:
        how = (
            f"was killed by signal {-process.returncode}"
            if process.returncode < 0
            else f"failed (exit {process.returncode})"
        )
        return f"{name} {how}" + (f": {tail}" if tail else "")
    if tail:
        log.info("%s: %s", name, tail)
    return None


def run_hooks(config: PipelineConfig, event: HookEvent, **fields: str | None) -> None:
    """Run every ``[[hook]]`` of ``config`` that is ``on`` ``event``, in file order.

    A failing ``before_*`` hook raises :class:`ExecHookError` (the later ones do not run); a
    failing ``after_*`` hook is logged at ERROR and the next one still runs.
    """
    hooks = [h for h in getattr(config, "hooks", ()) if event in h.on]
    if not hooks:
        return
    env = hook_environment(config, event, fields)
    for hook in hooks:
        failure = run_one(hook, event, env)
        if failure is None:
            continue
        if event.startswith("before_"):
            raise ExecHookError(f"{failure}; {event.removeprefix('before_')} not started")
        log.error("%s", failure)


@contextlib.contextmanager
def around(
    config: PipelineConfig, operation: str, **fields: str | None
) -> Iterator[dict[str, Any]]:
    """Run ``before_<operation>`` hooks, the body, then ``after_<operation>`` hooks.

    The body may add fields for the after hooks (``backup_id`` once known, ``outcome``) to the
    dict it is given; an exception from the body (or a before hook) sets the outcome to
    ``failed`` with its one-line message, and is re-raised after the after hooks ran.
    """
    extra: dict[str, Any] = dict(fields)
    before: Any = f"before_{operation}"
    after: Any = f"after_{operation}"
    try:
        run_hooks(config, before, **fields)
        yield extra
    except BaseException as exc:
        extra["outcome"] = "failed"
        extra["error"] = str(exc).replace("\n", " ") or type(exc).__name__
        run_hooks(config, after, **extra)
        raise
    extra.setdefault("outcome", "succeeded")
    run_hooks(config, after, **extra)


P = ParamSpec("P")
R = TypeVar("R")


def with_hooks(
    operation: str, outcome: Callable[[Any], Mapping[str, str | None]]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an operation ``fn(config, …)`` so its exec hooks run around it.

    ``outcome(result)`` gives the after hooks' fields from what ``fn`` returned (an operation
    that returns a failed result rather than raising says ``outcome = "failed"`` there). A call
    with ``dry_run=True`` changes nothing and runs no hooks.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            config = args[0] if args else kwargs["config"]
            if kwargs.get("dry_run") or not getattr(config, "hooks", ()):
                return fn(*args, **kwargs)
            with around(config, operation) as extra:  # type: ignore[arg-type]
                result = fn(*args, **kwargs)
                extra.update(outcome(result))
            return result

        return wrapper

    return decorate
