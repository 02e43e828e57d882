"""Parts of one backup: several sources (a backup set) or several databases in one manifest.

A backup with parts records them in its manifest's ``source`` table::

    "source": {"type": "set", "parts": [
        {"name": "db", "type": "pg_dump", "database": "app", ...},
        {"name": "media", "type": "files", "files": 1203, ...}]}

(``type`` is ``pg_dump`` for a many-database dump, with the cluster's ``globals`` beside the parts),
and each artifact names its ``part``; an artifact without one (the cluster's ``globals.sql``) is
shared by every part. Such a manifest has format :data:`~pgvault.manifest.PARTS_FORMAT`, so an
older pgvault refuses it rather than restore one part as if it were everything.

:func:`part_view` turns one part into a manifest of its own (same backup id and artifact paths,
so decoding and its binding checks are unchanged) that every single-source reader (restore,
validation, verify's format check, export) already understands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from pgvault.exceptions import ConfigError, ManifestError
from pgvault.vault.manifest import ArtifactRecord, Manifest


def part_records(manifest: Manifest) -> list[dict[str, Any]]:
    """The ``source.parts`` records of ``manifest`` (empty for a backup without parts), each
    checked to be a table with a string ``name`` and ``type``."""
    raw = manifest.source.get("parts")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ManifestError(f"backup {manifest.backup_id}: source.parts is not a list")
    records: list[dict[str, Any]] = []
    for i, record in enumerate(raw):
        ok = (
            isinstance(record, dict)
            and isinstance(record.get("name"), str)
            and isinstance(record.get("type"), str)
        )
        if not ok:
            raise ManifestError(f"backup {manifest.backup_id}: source.parts[{i}] is malformed")
        records.append(record)
    return records


def part_names(manifest: Manifest) -> list[str]:
    """The names of ``manifest``'s parts, in backup order; empty without parts."""
    return [str(r["name"]) for r in part_records(manifest)]


def has_parts(manifest: Manifest) -> bool:
    """Whether ``manifest`` is a backup of several parts."""
    return bool(part_records(manifest))


def part_view(manifest: Manifest, name: str) -> Manifest:
    """Part ``name`` of ``manifest`` as a single-source manifest: its own metadata and artifacts,
    plus the shared ones (the globals)."""
    records = {str(r["name"]): r for r in part_records(manifest)}
    if name not in records:
        raise _unknown(manifest, name)
    record = dict(records[name])
    source = {k: v for k, v in record.items() if k != "name"}
    shared_globals = manifest.source.get("globals")
    if shared_globals is not None and "globals" not in source:
        source["globals"] = shared_globals
    artifacts = tuple(a for a in manifest.artifacts if a.part in (name, ""))
    if not any(a.part == name for a in artifacts):
        raise ManifestError(f"backup {manifest.backup_id}: part {name!r} has no artifacts")
    return attrs.evolve(manifest, source=source, artifacts=artifacts, format_version=1)


def artifacts_of(manifest: Manifest, names: Sequence[str]) -> list[ArtifactRecord]:
    """The artifacts of parts ``names`` and the shared ones, in manifest order."""
    known = set(part_names(manifest))
    for name in names:
        if name not in known:
            raise _unknown(manifest, name)
    wanted = set(names) | {""}
    return [a for a in manifest.artifacts if a.part in wanted]


def _unknown(manifest: Manifest, name: str) -> ConfigError:
    names = part_names(manifest)
    if not names:
        return ConfigError(f"backup {manifest.backup_id} has no parts (--part {name!r})")
    return ConfigError(
        f"backup {manifest.backup_id} has no part {name!r}; its parts: {', '.join(names)}"
    )


def describe_source(source: dict[str, Any]) -> str:
    """A manifest ``source`` table in a few words, as ``list`` shows it: ``pg_dump app
    (custom)``, ``files: 12 files``, ``set: db, media``, ``pg_dump 20 databases (custom)``."""
    kind = str(source.get("type", "?"))
    parts = source.get("parts")
    if isinstance(parts, list) and parts:
        names = [str(p.get("name", "?")) for p in parts if isinstance(p, dict)]
        if kind == "pg_dump":
            return f"pg_dump {len(names)} databases ({source.get('format', '?')})"
        return f"{kind}: {', '.join(names)}"
    if kind == "pg_dump":
        return f"pg_dump {source.get('database', '?')} ({source.get('format', '?')})"
    if kind == "files":
        return f"files: {source.get('files', '?')} files"
    return kind


def part_lines(manifest: Manifest, size_text: Callable[[int], str] = str) -> list[str]:
    """One line per part for ``show --parts``: its name, what it is, its stored size (written
    by ``size_text``) and when it was caught (a dump's snapshot time, a file set's reading
    time)."""
    lines = []
    for record in part_records(manifest):
        name = str(record["name"])
        size = size_text(sum(a.size for a in manifest.artifacts if a.part == name))
        what = describe_source({k: v for k, v in record.items() if k != "name"})
        if record.get("snapshot_at"):
            when = f"snapshot {record['snapshot_at']}"
        else:
            when = f"read {record.get('started_at', '?')} .. {record.get('finished_at', '?')}"
        lines.append(f"{name}: {what}, {size} stored, {when}")
    return lines
