"""Pipeline config: one TOML file per pipeline, loaded into typed, validated objects.

The composition root: it builds the settings values (:mod:`pgvault.settings`), the components
and the :class:`~pgvault.pipeline_config.PipelineConfig` that holds them. Only the command line
and the top-level API import it at run time; everything else takes what it builds.

The file names one source, a chain of transforms and one sink, each by its entry-point ``type``;
every other key of their tables is an option, checked against the component's attrs fields.
String values may use ``${VAR}`` (an error if unset) or ``${VAR:-default}``; ``$${`` is a literal
``${``. Relative paths are resolved against the config file's folder, so a pipeline behaves the
same from cron as from a shell. Every error names the file and the key.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from pgvault.exceptions import ConfigError
from pgvault.pipeline_config import PipelineConfig
from pgvault.plugin.components import Kind, load_component
from pgvault.plugin.exec_hooks import ExecHook
from pgvault.settings import (
    CheckThresholds,
    DrillSettings,
    LogSettings,
    RestoreSettings,
    RetentionPolicy,
    ScheduleSettings,
)
from pgvault.sinks.api import Sink
from pgvault.sinks.destinations import check_tier_policies, parse_destinations
from pgvault.sources.api import Source
from pgvault.sources.set import Member, SourceSet
from pgvault.transforms.api import Transform
from pgvault.transforms.digest import SUPPORTED as SUPPORTED_CHECKSUMS
from pgvault.units import Duration
from pgvault.wal.settings import WalSettings

if TYPE_CHECKING:
    from pgvault.notify.api import Notifier

__all__ = ["TOP_LEVEL_KEYS", "PipelineConfig", "load_config", "parse_config", "structure"]
"""``PipelineConfig`` itself lives in :mod:`pgvault.pipeline_config`; it is re-exported here
because ``load_config`` returns it."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_VAR_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

T = TypeVar("T")

TOP_LEVEL_KEYS = (
    "name",
    "source",
    "transform",
    "sink",
    "checksums",
    "restore",
    "drill",
    "retention",
    "check",
    "notify",
    "logging",
    "metrics_file",
    "wal",
    "hook",
    "schedule",
)


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> PipelineConfig:
    """Read and validate the pipeline config at ``path``.

    ``env`` replaces ``os.environ`` for ``${VAR}`` interpolation (tests, embedding apps).
    Raises :class:`ConfigError` naming the file and key for every mistake.
    """
    file = Path(path)
    where = str(file)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError("config file not found", path=where) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", path=where) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8 text", path=where) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=where) from None
    data = _interpolate(data, os.environ if env is None else env, where, "")
    return parse_config(data, path=file)


def parse_config(data: Mapping[str, Any], *, path: Path | None = None) -> PipelineConfig:
    """Build a :class:`PipelineConfig` from an already parsed (and interpolated) mapping."""
    where = str(path) if path else "<config>"
    base = path.resolve().parent if path else Path.cwd()
    _reject_unknown(data, TOP_LEVEL_KEYS, where, "")

    name = data.get("name")
    if name is None:
        raise ConfigError(
            'missing key (the vault\'s name, e.g. name = "app")', path=where, key="name"
        )
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"invalid vault name {name!r}: use letters, digits, '.', '_' and '-'",
            path=where,
            key="name",
        )

    source = _source(data, where, base)
    destinations = parse_destinations(
        _tables(data, "sink", where, required=True, lone="sink"),
        where,
        lambda table, key: typing.cast(Sink, _build("sink", table, where, key, base)),
        lambda cls, table, key: structure(cls, table, where=where, key=key, base=base),
    )

    transforms = [
        _build("transform", table, where, key, base)
        for key, table in _tables(data, "transform", where)
    ]

    checksums_raw = data.get("checksums", ["sha256"])
    if not isinstance(checksums_raw, list) or not all(isinstance(c, str) for c in checksums_raw):
        raise ConfigError(
            'expected a list of names, e.g. ["sha256", "md5"]', path=where, key="checksums"
        )
    for c in checksums_raw:
        if c not in SUPPORTED_CHECKSUMS:
            raise ConfigError(
                f"unknown checksum {c!r}{_suggest(c, SUPPORTED_CHECKSUMS)}; known: "
                + ", ".join(SUPPORTED_CHECKSUMS),
                path=where,
                key="checksums",
            )
    checksums = ("sha256", *sorted(set(checksums_raw) - {"sha256"}))

    def section(cls: type[T], key: str) -> T:
        """An optional top-level table, validated like a component's options."""
        table = _table(data, key, where, required=False)
        return typing.cast(T, structure(cls, table, where=where, key=key, base=base))

    restore = section(RestoreSettings, "restore")
    drill = section(DrillSettings, "drill")
    # No [retention] means prune refuses to run, rather than applying a policy nobody wrote.
    retention = None if data.get("retention") is None else section(RetentionPolicy, "retention")
    check = section(CheckThresholds, "check")
    log_settings = section(LogSettings, "logging")
    wal = section(WalSettings, "wal")
    schedule = section(ScheduleSettings, "schedule")
    metrics_file = _coerce(data.get("metrics_file"), Path | None, where, "metrics_file", base)
    check_tier_policies(destinations, retention, where)
    raw_hooks = data.get("hook", [])
    hooks = _coerce(
        [raw_hooks] if isinstance(raw_hooks, dict) else raw_hooks,
        tuple[ExecHook, ...],
        where,
        "hook",
        base,
    )

    return PipelineConfig(
        name=name,
        source=source,
        sink=destinations[0].sink,
        destinations=destinations,
        transforms=tuple(typing.cast(Transform, t) for t in transforms),
        checksums=checksums,
        path=path,
        retention=retention,
        check=check,
        notify=_notifiers(data, where, base),
        logging=log_settings,
        metrics_file=metrics_file,
        restore=restore,
        drill=drill,
        wal=wal,
        hooks=hooks,
        schedule=schedule,
    )


_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,59}$")
_NOT_IN_SETS = {"basebackup": "a base backup restores as a whole cluster, with its WAL"}


def _source(data: Mapping[str, Any], where: str, base: Path) -> Source:
    """The one ``[source]`` table, or the ``[[source]]`` tables of a backup set."""
    tables = _tables(data, "source", where, required=True, lone="source")
    if not isinstance(data["source"], list):
        key, table = tables[0]
        return typing.cast(Source, _build("source", table, where, key, base))
    members: list[Member] = []
    for key, table in tables:
        name = table.get("name")
        if name is None:
            raise ConfigError(
                'missing key (each [[source]] of a set is a part with a name, e.g. name = "db")',
                path=where,
                key=f"{key}.name",
            )
        if not isinstance(name, str) or not _PART_RE.match(name):
            raise ConfigError(
                f"invalid part name {name!r}: use letters, digits, '_' and '-' (up to 60)",
                path=where,
                key=f"{key}.name",
            )
        if any(m.name == name for m in members):
            raise ConfigError(
                f"two [[source]] tables are called {name!r}", path=where, key=f"{key}.name"
            )
        options = {k: v for k, v in table.items() if k != "name"}
        why = _NOT_IN_SETS.get(str(options.get("type")))
        if why:
            raise ConfigError(
                f"a {options.get('type')} source cannot be part of a set ({why}); give it a "
                "pipeline of its own",
                path=where,
                key=f"{key}.type",
            )
        source = typing.cast(Source, _build("source", options, where, key, base))
        if getattr(source, "databases", ()):
            raise ConfigError(
                "a many-database dump cannot be part of a set (its databases are the parts); "
                "give it a pipeline of its own",
                path=where,
                key=f"{key}.databases",
            )
        members.append(Member(name, source))
    return SourceSet(tuple(members))


def _tables(
    data: Mapping[str, Any],
    key: str,
    where: str,
    *,
    required: bool = False,
    lone: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The ``[[key]]`` tables of ``data``, each with the config key its errors name: ``key[i]``.

    A lone ``[key]`` table counts as a list of one, named ``lone`` if given (``[source]`` is
    ``source``); otherwise ``key[0]``, because other messages (``pgvault schedule``'s,
    :mod:`pgvault.pipeline_config`'s) call notifiers ``notify[i]`` however they were written.
    ``required``: at least one table must be there. Anything but tables is a ConfigError.
    """
    raw = data.get(key)
    if raw is None:
        if required:
            raise ConfigError(f"missing [{key}] table", path=where, key=key)
        return []
    if isinstance(raw, dict):
        return [(lone or f"{key}[0]", raw)]
    if not isinstance(raw, list):
        raise ConfigError(f"expected a [{key}] table or [[{key}]] tables", path=where, key=key)
    if required and not raw:
        raise ConfigError(f"expected at least one [[{key}]] table", path=where, key=key)
    tables: list[tuple[str, dict[str, Any]]] = []
    for i, table in enumerate(raw):
        if not isinstance(table, dict):
            raise ConfigError("expected a table", path=where, key=f"{key}[{i}]")
        tables.append((f"{key}[{i}]", table))
    return tables


def _table(data: Mapping[str, Any], key: str, where: str, *, required: bool) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise ConfigError(f"missing [{key}] table", path=where, key=key)
        return {}
    if not isinstance(value, dict):
        raise ConfigError("expected a table", path=where, key=key)
    return value


def _notifiers(data: Mapping[str, Any], where: str, base: Path) -> tuple[Notifier, ...]:
    """The ``[[notify]]`` tables, each built as the notifier class its ``type`` names."""
    tables = _tables(data, "notify", where)
    if not tables:
        return ()
    # Only here: finding the notifier types loads the notifier plugins (and their HTTP and mail
    # libraries), which a pipeline without [[notify]] never needs.
    from pgvault.notify.api import notifier_types

    known = notifier_types()
    found: list[Notifier] = []
    for key, table in tables:
        type_name = table.get("type")
        if not isinstance(type_name, str):
            raise ConfigError(
                "missing 'type' (which notifier: " + ", ".join(sorted(known)) + ")",
                path=where,
                key=f"{key}.type",
            )
        cls = known.get(type_name)
        if cls is None:
            raise ConfigError(
                f"unknown notifier type {type_name!r}{_suggest(type_name, known)}; known: "
                + (", ".join(sorted(known)) or "none installed"),
                path=where,
                key=f"{key}.type",
            )
        options = {k: v for k, v in table.items() if k != "type"}
        notifier = structure(cls, options, where=where, key=key, base=base)
        found.append(typing.cast("Notifier", notifier))
    return tuple(found)


def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _reject_unknown(
    table: Mapping[str, Any], known: typing.Iterable[str], where: str, prefix: str
) -> None:
    known = list(known)
    for key in table:
        if key not in known:
            raise ConfigError(
                f"unknown key{_suggest(key, known)}", path=where, key=f"{prefix}{key}"
            )


def _build(kind: Kind, table: Mapping[str, Any], where: str, key: str, base: Path) -> object:
    type_name = table.get("type")
    if not isinstance(type_name, str):
        raise ConfigError(f"missing 'type' (which {kind} to use)", path=where, key=f"{key}.type")
    cls = load_component(kind, type_name, path=where, key=f"{key}.type")
    options = {k: v for k, v in table.items() if k != "type"}
    return structure(cls, options, where=where, key=key, base=base)


def structure(cls: type, options: Mapping[str, Any], *, where: str, key: str, base: Path) -> object:
    """Instantiate attrs class ``cls`` from config ``options``, checking names and types.

    Public so plugin tables (notifiers, later) are validated the same way as components.
    """
    if not attrs.has(cls):
        raise ConfigError(
            f"component {cls.__qualname__} is not an attrs class", path=where, key=key
        )
    fields = {f.name: f for f in attrs.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    _reject_unknown(options, fields, where, f"{key}.")
    kwargs: dict[str, Any] = {}
    for name, value in options.items():
        # A field kept out of repr holds a secret (a password, a token, a URL with one in it):
        # a type error must then describe the value, never quote it.
        secret = not fields[name].repr
        kwargs[name] = _coerce(
            value, hints.get(name, Any), where, f"{key}.{name}", base, secret=secret
        )
    for name, f in fields.items():
        if f.default is attrs.NOTHING and name not in kwargs:
            raise ConfigError("missing required option", path=where, key=f"{key}.{name}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid value: {exc}", path=where, key=key) from None


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _coerce(
    value: Any, hint: Any, where: str, key: str, base: Path, *, secret: bool = False
) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    from_config = getattr(hint, "from_config", None)
    if isinstance(hint, type) and callable(from_config):
        # A value type that reads itself: a duration ("30d"), a size ("10MiB"), a time zone.
        try:
            return from_config(value)
        except ValueError as exc:
            text = f"invalid {_show(value, secret=True)}" if secret else str(exc)
            raise ConfigError(text, path=where, key=key) from None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, key, base, secret=secret)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is typing.Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            shown = _show(value, secret=True) if secret else repr(value)
            hint_text = "" if secret else _suggest(str(value), map(str, args))
            raise ConfigError(
                f"invalid value {shown}{hint_text}; one of {allowed}", path=where, key=key
            )
        return value
    if origin in (list, tuple, typing.Sequence, typing.get_origin(typing.Sequence[int])):
        if not isinstance(value, list):
            raise ConfigError(
                f"expected a list, got {_show(value, secret=secret)}", path=where, key=key
            )
        item = args[0] if args else Any
        items = [
            _coerce(v, item, where, f"{key}[{i}]", base, secret=secret) for i, v in enumerate(value)
        ]
        return tuple(items) if origin is not list else items
    if origin in (dict, typing.Mapping, typing.get_origin(typing.Mapping[str, int])):
        if not isinstance(value, dict):
            raise ConfigError(
                f"expected a table, got {_show(value, secret=secret)}", path=where, key=key
            )
        return dict(value)
    if isinstance(hint, type) and attrs.has(hint):
        # A nested table (``[[drill.check]]``) is validated like any component's options.
        if not isinstance(value, dict):
            raise ConfigError(
                f"expected a table, got {_show(value, secret=secret)}", path=where, key=key
            )
        return structure(hint, value, where=where, key=key, base=base)
    if hint is timedelta:
        # A plain length of time (``[schedule] timeout``): read like a Duration, kept as the
        # timedelta the schedulers compute with.
        try:
            return Duration.from_config(value).delta
        except ValueError as exc:
            raise ConfigError(str(exc), path=where, key=key) from None
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(
                f"expected a path string, got {_show(value, secret=secret)}", path=where, key=key
            )
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in _TYPE_WORDS:
        # bool is an int in Python; a TOML `true` is never a valid integer option.
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(
                f"expected {_TYPE_WORDS[hint]}, got {_show(value, secret=secret)}",
                path=where,
                key=key,
            )
        return value
    return value


def _show(value: Any, *, secret: bool = False) -> str:
    kind = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        list: "list",
        dict: "table",
    }.get(type(value), type(value).__name__)
    if secret:
        return f"{kind} (value withheld: the option holds a secret)"
    return f"{kind} {value!r}" if not isinstance(value, (list, dict)) else kind


def _interpolate(value: Any, env: Mapping[str, str], where: str, key: str) -> Any:
    if isinstance(value, str):

        def replace(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            var, default = m.group(1), m.group(2)
            if var in env:
                return env[var]
            if default is not None:
                return default
            raise ConfigError(
                f"environment variable {var} is not set (referenced as ${{{var}}})",
                path=where,
                key=key or None,
            )

        return _VAR_RE.sub(replace, value)
    if isinstance(value, dict):
        return {
            k: _interpolate(v, env, where, f"{key}.{k}" if key else k) for k, v in value.items()
        }
    if isinstance(value, list):
        if all(isinstance(v, dict) for v in value) and value:
            return [_interpolate(v, env, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return [_interpolate(v, env, where, key) for v in value]
    return value
