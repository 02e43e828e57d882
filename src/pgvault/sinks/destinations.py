"""Destinations: the sinks a pipeline stores every backup to, each with its own policy.

A config names one ``[sink]`` table or several ``[[sink]]`` tables (3-2-1: a local folder, an S3
bucket, an SFTP host …). Besides the sink's own options, each table may hold the keys of
:data:`DESTINATION_KEYS`:

* ``name`` — how commands and messages call it (``copy --from local --to s3``); the sink's type
  when omitted, so two sinks of one type need names;
* ``required`` — whether a backup counts only once it is stored here (default true); a backup
  that could not be stored to a non-required destination succeeds with a warning, and the
  destination *lags* until ``pgvault copy`` brings it up to date;
* ``retention`` — this destination's retention table (default: the pipeline's ``[retention]``);
* ``tiers`` — storage classes by age (``[{after = "30d", storage_class = "STANDARD_IA"}]``),
  applied by ``prune`` on sinks that have storage classes (see :mod:`pgvault.operations.tiers`).

The first destination is the *primary*: ``config.sink`` is its sink, so everything that reads or
locks one place (the run lock, ``show``, ``wal-fetch``) uses it. See docs/storage.md.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from pgvault.exceptions import ConfigError
from pgvault.settings import TIERS as RETENTION_TIERS
from pgvault.settings import RetentionPolicy
from pgvault.sinks.api import Sink
from pgvault.units import Duration

DESTINATION_KEYS = ("name", "required", "retention", "tiers")
"""Keys of a ``[sink]``/``[[sink]]`` table that belong to pgvault, not to the sink."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,49}$")
_KEPT_AS = (*RETENTION_TIERS, "last", "within")


@attrs.frozen
class Tier:
    """One step of a destination's ``tiers``: artifacts of backups older than ``after`` (and,
    with ``kept_as``, kept by that retention rule, e.g. ``"monthly"``) go to ``storage_class``."""

    after: Duration
    storage_class: str
    kept_as: str | None = None
    """A retention rule (``hourly`` … ``yearly``, ``last``, ``within``): only backups that rule
    keeps move to this class. Needs a retention policy on the destination."""

    def __attrs_post_init__(self) -> None:
        if self.kept_as is not None and self.kept_as not in _KEPT_AS:
            raise ValueError(f"kept_as must be one of {', '.join(_KEPT_AS)}, got {self.kept_as!r}")

    def describe(self) -> str:
        """``STANDARD_IA after 30d`` (``, monthly backups only``)."""
        only = f" (backups kept as {self.kept_as})" if self.kept_as else ""
        return f"{self.storage_class} after {self.after}{only}"


@attrs.frozen
class Destination:
    """One place every backup is stored to (see the module doc)."""

    name: str
    sink: Sink
    required: bool = True
    retention: RetentionPolicy | None = None
    """This destination's own policy; None means the pipeline's ``[retention]``."""
    tiers: tuple[Tier, ...] = ()

    def describe(self) -> str:
        """``'s3' (s3://bucket/prefix)`` for messages."""
        return f"{self.name!r} ({self.sink.describe()})"


BuildSink = Callable[[Mapping[str, Any], str], Sink]
"""Builds a sink from its table (``type`` and options) and the table's config key."""
Structure = Callable[[type, Mapping[str, Any], str], Any]
"""Validates a table into an attrs class: ``(cls, options, key)``."""


def parse_destinations(
    tables: Sequence[tuple[str, dict[str, Any]]],
    where: str,
    build: BuildSink,
    structure: Structure,
) -> tuple[Destination, ...]:
    """The destinations of a config's ``[sink]`` table or ``[[sink]]`` tables, given as
    (config key, table) pairs, at least one (the config reads them). Every mistake is a
    ConfigError naming the file and key."""
    found = [_destination(table, key, where, build, structure) for key, table in tables]
    seen: dict[str, str] = {}
    for dest, (key, _) in zip(found, tables, strict=True):
        if dest.name in seen:
            raise ConfigError(
                f"two destinations are called {dest.name!r} (also {seen[dest.name]}): give each "
                'a name = "..."',
                path=where,
                key=f"{key}.name",
            )
        seen[dest.name] = key
    if not any(d.required for d in found):
        raise ConfigError(
            "no destination is required: a backup must count somewhere; set required = true on "
            "at least one",
            path=where,
            key=f"{tables[0][0]}.required",
        )
    return tuple(found)


def _destination(
    table: dict[str, Any], key: str, where: str, build: BuildSink, structure: Structure
) -> Destination:
    own = {k: table[k] for k in DESTINATION_KEYS if k in table}
    sink = build({k: v for k, v in table.items() if k not in DESTINATION_KEYS}, key)
    name = own.get("name", sink.type_name)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"invalid destination name {name!r}: use letters, digits, '.', '_' and '-'",
            path=where,
            key=f"{key}.name",
        )
    required = own.get("required", True)
    if not isinstance(required, bool):
        raise ConfigError(
            f"expected true or false, got {required!r}", path=where, key=f"{key}.required"
        )
    retention = None
    if own.get("retention") is not None:
        if not isinstance(own["retention"], dict):
            raise ConfigError("expected a table", path=where, key=f"{key}.retention")
        retention = structure(RetentionPolicy, own["retention"], f"{key}.retention")
    tiers = _tiers(own.get("tiers", []), sink, key, where, structure)
    return Destination(name, sink, required, retention, tiers)


def _tiers(raw: object, sink: Sink, key: str, where: str, structure: Structure) -> tuple[Tier, ...]:
    if not isinstance(raw, list):
        raise ConfigError(
            'expected a list of tables: [{after = "30d", storage_class = "STANDARD_IA"}]',
            path=where,
            key=f"{key}.tiers",
        )
    if not raw:
        return ()
    classes: tuple[str, ...] = getattr(sink, "tier_classes", ())
    if not classes:
        raise ConfigError(
            f"the {sink.type_name} sink has no storage classes to move backups between",
            path=where,
            key=f"{key}.tiers",
        )
    tiers: list[Tier] = []
    for i, item in enumerate(raw):
        item_key = f"{key}.tiers[{i}]"
        if not isinstance(item, dict):
            raise ConfigError("expected a table", path=where, key=item_key)
        tier = structure(Tier, item, item_key)
        if tier.storage_class not in classes:
            raise ConfigError(
                f"unknown storage class {tier.storage_class!r}; one of {', '.join(classes)}",
                path=where,
                key=f"{item_key}.storage_class",
            )
        tiers.append(tier)
    plain = [t for t in tiers if t.kept_as is None]
    for earlier, later in itertools.pairwise(plain):
        if later.after.delta <= earlier.after.delta:
            raise ConfigError(
                f"tiers must grow older: {later.describe()} comes after {earlier.describe()}",
                path=where,
                key=f"{key}.tiers",
            )
    return tuple(tiers)


def check_tier_policies(
    destinations: tuple[Destination, ...], default: RetentionPolicy | None, where: str
) -> None:
    """Tiers are applied by ``prune``, which needs a retention policy: a destination with tiers
    needs one (its own or the pipeline's ``[retention]``)."""
    for i, dest in enumerate(destinations):
        if dest.tiers and dest.retention is None and default is None:
            raise ConfigError(
                "tiers are applied by prune, which needs a retention policy: add [retention] "
                "or this sink's retention table",
                path=where,
                key=f"sink[{i}].tiers" if len(destinations) > 1 else "sink.tiers",
            )
