"""The ``[wal]`` table: how this pipeline's cluster archives and fetches WAL.

Every option has a default, so ``pgvault wal-push`` works with no ``[wal]`` table at all; the
long-lived pusher needs ``pg_wal`` and ``spool``, prefetch needs ``spool``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import attrs

from pgvault.units import Duration

_ONE_MINUTE = Duration.parse("60s")
_SYSID = re.compile(r"^[1-9][0-9]{0,19}$")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or value < 0:
        raise ValueError(f"{attribute.name} must be ≥ 0, got {value!r}")


def _sysid(_inst: object, _attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and (not _SYSID.match(value) or int(value) >= 1 << 64):
        raise ValueError(
            f"system_identifier must be the cluster's decimal system identifier as a string "
            f'(pg_controldata shows it), e.g. "7312345678901234567"; got {value!r}'
        )


@attrs.frozen
class WalSettings:
    """The ``[wal]`` table (see docs/continuous-archiving.md)."""

    pg_wal: Path | None = None
    """The cluster's ``pg_wal`` folder: the long-lived pusher reads ``archive_status/*.ready``
    there to push segments before PostgreSQL asks."""
    spool: Path | None = None
    """A folder outside the data directory, writable by ``postgres``: the pusher's
    acknowledgements and the prefetched segments of a recovery."""
    system_identifier: str | None = attrs.field(default=None, validator=_sysid)
    """Pin the cluster this vault archives. Needed only when the vault already holds another
    cluster's WAL (after ``pg_upgrade`` or a new ``initdb``): without it a segment of a second
    cluster is refused, naming both."""
    dsn: str | None = None
    """Server to ask for ``pg_stat_archiver`` and settings (``wal-setup``, ``wal-check``,
    metrics); the source's ``dsn`` when not given."""
    workers: int = attrs.field(default=2, validator=_positive)
    """Segments the long-lived pusher stores at once (each holds at most one segment in memory)."""
    ack_timeout: Duration = _ONE_MINUTE
    """How long the archive command waits for the running pusher to store a segment before it
    stores the segment itself."""
    fetch_on_error: Literal["auto", "abort", "missing"] = "auto"
    """What ``wal-fetch`` does when the sink cannot be reached or an object is damaged:
    ``abort`` stops recovery (exit 200, above 125), so a restore never ends early on a gap it
    only failed to read; ``missing`` reports the file absent (exit 1), so a standby keeps
    running and streams or retries; ``auto`` is ``missing`` when the data directory holds
    ``standby.signal`` and ``abort`` otherwise."""
    prefetch: int = attrs.field(default=8, validator=_non_negative)
    """Segments fetched ahead into ``spool`` during recovery (0: no prefetch)."""
    prefetch_workers: int = attrs.field(default=2, validator=_positive)
    """Downloads the prefetcher runs at once."""
