"""``pgvault mark CONFIG NAME``: a named restore point, made on the server and kept in the vault.

:func:`mark` calls ``pg_create_restore_point(NAME)`` and records the point (name, LSN, server
time, timeline, cluster) as ``<name>/marks/<NAME>.json``, written create-if-absent: PostgreSQL
stops at the *first* restore point of a name it replays, so a name used twice would silently
mean the older one, and pgvault refuses it instead. Then it switches WAL, so that the segment
holding the mark is archived now rather than when it fills: a mark is useless until then.
``--target-name`` is checked against these records before a restore begins.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgvault.exceptions import ConfigError, ObjectExistsError, PgVaultError, RestoreError
from pgvault.wal.chain import wal_dsn
from pgvault.wal.names import WalName, format_lsn, parse_lsn

from .plan import Mark
from .targets import parse_mark_name

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.sinks.api import Sink

log = logging.getLogger("pgvault.pitr")


def marks_prefix(name: str) -> str:
    """Key prefix of a vault's marks."""
    return f"{name}/marks/"


def _to_json(m: Mark) -> bytes:
    data = {
        "format_version": 1,
        "name": m.name,
        "lsn": format_lsn(m.lsn),
        "time": m.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "timeline": m.timeline,
        "system_identifier": str(m.system_identifier),
    }
    return (json.dumps(data, indent=2) + "\n").encode()


def _from_json(data: bytes, key: str) -> Mark:
    try:
        raw: dict[str, Any] = json.loads(data)
        return Mark(
            name=str(raw["name"]),
            lsn=parse_lsn(str(raw["lsn"])),
            time=datetime.fromisoformat(str(raw["time"]).replace("Z", "+00:00")),
            timeline=int(raw["timeline"]),
            system_identifier=int(raw["system_identifier"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise RestoreError(f"{key}: not a pgvault mark ({exc!r})") from None


def load_marks(sink: Sink, name: str) -> dict[str, Mark]:
    """Every readable mark of vault ``name``; an unreadable one is logged and left out."""
    found: dict[str, Mark] = {}
    prefix = marks_prefix(name)
    for info in sink.list(prefix):
        if not info.key.endswith(".json") or "/" in info.key[len(prefix) :]:
            continue
        try:
            m = _from_json(sink.read_bytes(info.key), info.key)
        except PgVaultError as exc:
            log.warning("%s", exc)
            continue
        if f"{prefix}{m.name}.json" != info.key:
            log.warning("%s: names mark %r, not the one of its key: ignored", info.key, m.name)
            continue
        found[m.name] = m
    return found


def mark(config: PipelineConfig, name: str, *, switch: bool = True) -> Mark:
    """Create restore point ``name`` on the pipeline's server and record it (see module doc)."""
    import psycopg

    name = parse_mark_name(name, option="mark name")
    key = f"{marks_prefix(config.name)}{name}.json"
    if config.sink.exists(key):
        raise RestoreError(
            f"restore point {name!r} is already recorded in vault {config.name!r} ({key}): "
            "PostgreSQL would stop at the first one of a name; choose another name"
        )
    dsn = wal_dsn(config)
    if not dsn:
        raise ConfigError(
            "pgvault mark needs a server: set the source's dsn or [wal] dsn",
            path=config.where(),
            key="wal.dsn",
        )
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT pg_create_restore_point(%s), clock_timestamp(), "
                "(SELECT system_identifier FROM pg_control_system())",
                (name,),
            ).fetchone()
            assert row is not None
            lsn_text, when, sysid = str(row[0]), row[1], int(row[2])
            # The WAL file the mark went into carries the server's timeline in its name.
            walfile = conn.execute("SELECT pg_walfile_name(%s::pg_lsn)", (lsn_text,)).fetchone()
            assert walfile is not None
            if switch:
                conn.execute("SELECT pg_switch_wal()")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()
        raise RestoreError(
            f"could not create restore point {name!r}: {first[0] if first else exc}"
        ) from None
    made = Mark(name, parse_lsn(lsn_text), when, WalName.parse(str(walfile[0])).timeline, sysid)
    try:
        config.sink.write_bytes_if_absent(key, _to_json(made))
    except ObjectExistsError:
        raise RestoreError(
            f"restore point {name!r} was recorded by someone else meanwhile ({key}); the server "
            f"has a second point of that name at {lsn_text}: do not use it"
        ) from None
    log.info("restore point %r at %s on timeline %d", name, lsn_text, made.timeline)
    return made
