"""Restoring a backup of parts (a set of sources, or many databases): which parts, and where
each one goes.

Every part restores as the single-source backup it reads as (:func:`~pgvault.vault.parts.
part_view`): a database part into a database, a files part into a folder, one after another in
the manifest's order. The targets are decided for all parts before the first is touched, and
checked where that is cheap (a database that exists without ``drop_existing``, a folder that is
not empty), so a restore of several parts fails before it starts rather than half-way.

Targets (see docs/cli.md, ``restore --part``):

* A database part goes into the database ``--target-db PART=NAME`` names; else into
  ``--target-db NAME`` when it is the only database part restored; else into a database of the
  name it was backed up from. The server is ``--dsn``, else the part's own source in the config
  (a set's ``[[source]]`` of that name; for a many-database dump, the ``[source]`` server).
* A files part goes into ``--target-dir PART=DIR``; else ``--target-dir DIR`` when it is the
  only files part restored; else, with several files parts, into ``DIR/PART``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import attrs

from pgvault.exceptions import PgVaultError, RestoreError
from pgvault.operations.restore.options import RestoreResult
from pgvault.operations.restore.target import DatabaseTarget, connect_server
from pgvault.pipeline_config import PipelineConfig
from pgvault.sources.api import Source
from pgvault.sources.pg_dump import PgDumpSource
from pgvault.sources.set import SourceSet
from pgvault.vault.manifest import Manifest
from pgvault.vault.parts import part_names, part_view

PartKind = Literal["database", "files"]


@attrs.frozen
class PartTargets:
    """Where the parts go, as the user gave it (``--target-db``, ``--target-dir``, ``--dsn``)."""

    target_db: str | None = None
    target_dbs: Mapping[str, str] = attrs.field(factory=dict)
    target_dir: Path | None = None
    target_dirs: Mapping[str, Path] = attrs.field(factory=dict)
    dsn: str | None = None


@attrs.frozen
class PartPlan:
    """One part's restore: the part as a manifest of its own, the config to restore it with
    (its own source), and its target."""

    name: str
    kind: PartKind
    manifest: Manifest
    config: PipelineConfig
    database: DatabaseTarget | None = None
    folder: Path | None = None

    def describe(self) -> str:
        """The target, for messages."""
        if self.database is not None:
            return self.database.describe()
        return str(self.folder)


def split_assignments(
    values: Sequence[str], parts: Sequence[str]
) -> tuple[str | None, dict[str, str]]:
    """``--target-db``/``--target-dir`` values: ``PART=VALUE`` where the text before the first
    ``=`` is one of ``parts``, else a plain value (a folder may have ``=`` in its name). At most
    one plain value."""
    plain: list[str] = []
    mapped: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if sep and name in parts:
            if name in mapped:
                raise RestoreError(f"part {name!r} is given two targets")
            mapped[name] = rest
        else:
            plain.append(value)
    if len(plain) > 1:
        raise RestoreError(
            f"several targets without a part ({', '.join(plain)}): write them as PART=VALUE"
        )
    return (plain[0] if plain else None), mapped


def plan_parts(
    config: PipelineConfig,
    manifest: Manifest,
    parts: Sequence[str],
    targets: PartTargets,
    *,
    drop_existing: bool = False,
) -> list[PartPlan]:
    """The restore of ``parts`` of ``manifest`` (all of them when empty), each part's target
    decided and checked; RestoreError naming the part for every target that is missing, unknown
    or taken."""
    known = part_names(manifest)
    chosen = list(dict.fromkeys(parts)) or known
    views = {name: part_view(manifest, name) for name in chosen}  # unknown parts fail here
    for name in (*targets.target_dbs, *targets.target_dirs):
        if name not in chosen:
            raise RestoreError(f"a target is given for part {name!r}, which is not restored")
    kinds = {name: _kind(view) for name, view in views.items()}
    dbs = [n for n in chosen if kinds[n] == "database"]
    folders = [n for n in chosen if kinds[n] == "files"]
    if targets.target_db is not None and len(dbs) != 1:
        raise RestoreError(
            f"--target-db {targets.target_db}: {len(dbs)} database parts are restored "
            f"({', '.join(dbs) or 'none'}); give --target-db PART=NAME for each to rename"
        )
    plans: list[PartPlan] = []
    for name in chosen:
        view, source = views[name], _part_source(config, name)
        part_config = config_for_part(config, name)
        if kinds[name] == "database":
            db = targets.target_dbs.get(name) or targets.target_db or view.source.get("database")
            dsn = targets.dsn or getattr(source, "dsn", None)
            if dsn is None:
                raise RestoreError(
                    f"part {name}: the config has no source for it: give --dsn for the target "
                    "server"
                )
            if not isinstance(db, str) or not db:
                raise RestoreError(f"part {name}: give --target-db {name}=NAME")
            plans.append(PartPlan(name, "database", view, part_config, DatabaseTarget(dsn, db)))
        else:
            folder = targets.target_dirs.get(name)
            if folder is None and targets.target_dir is not None:
                folder = targets.target_dir if len(folders) == 1 else targets.target_dir / name
            if folder is None:
                raise RestoreError(
                    f"part {name} holds files: give --target-dir DIR (or {name}=DIR)"
                )
            plans.append(PartPlan(name, "files", view, part_config, folder=Path(folder)))
    _check_targets(plans, drop_existing=drop_existing)
    return plans


def _kind(view: Manifest) -> PartKind:
    if view.source_type == "pg_dump":
        return "database"
    if view.source_type == "files":
        return "files"
    raise RestoreError(
        f"backup {view.backup_id}: a {view.source_type!r} part cannot be restored by pgvault"
    )


def config_for_part(config: PipelineConfig, name: str) -> PipelineConfig:
    """``config`` with part ``name``'s own source (what a safety backup of its database is
    taken with); ``config`` itself if it no longer describes that part."""
    source = _part_source(config, name)
    return attrs.evolve(config, source=source) if source is not None else config


def first_database_part(
    config: PipelineConfig, manifest: Manifest
) -> tuple[PipelineConfig, Manifest]:
    """The first database part of ``manifest`` as a backup of its own, with its config: what a
    drill of a backup with parts restores. RestoreError if it has none."""
    for name in part_names(manifest):
        view = part_view(manifest, name)
        if view.source_type == "pg_dump":
            return config_for_part(config, name), view
    raise RestoreError(f"backup {manifest.backup_id} has no database part: nothing to drill")


def _part_source(config: PipelineConfig, name: str) -> Source | None:
    """The source part ``name`` was backed up with, as the config describes it now."""
    source = config.source
    if isinstance(source, SourceSet):
        with contextlib.suppress(KeyError):
            return source.member(name)
        return None
    if isinstance(source, PgDumpSource) and source.databases:
        return source.for_database(name)
    return None


def _check_targets(plans: Sequence[PartPlan], *, drop_existing: bool) -> None:
    """Targets that would stop a restore half-way: two parts into one target, a folder that is
    not empty, a database that exists (unless it is to be replaced)."""
    seen: dict[str, str] = {}
    for plan in plans:
        key = plan.describe()
        if key in seen:
            raise RestoreError(f"parts {seen[key]} and {plan.name} would both restore into {key}")
        seen[key] = plan.name
        folder = plan.folder
        taken = folder is not None and folder.exists()
        if folder is not None and taken and (not folder.is_dir() or any(folder.iterdir())):
            raise RestoreError(
                f"part {plan.name}: target folder {folder} is not empty; restore into a new "
                "or empty folder"
            )
    if drop_existing:
        return
    for plan in plans:
        if plan.database is None:
            continue
        try:
            conn, _ = connect_server(plan.database)
        except PgVaultError:
            continue  # the part's own restore reports an unreachable server in its own words
        with conn:
            row = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [plan.database.name]
            ).fetchone()
        if row is not None:
            raise RestoreError(
                f"part {plan.name}: database {plan.database.describe()} already exists; "
                f"restore it under another name (--target-db {plan.name}=NAME) or replace it "
                "(--drop-existing)"
            )


def restore_planned(
    manifest: Manifest, plans: Sequence[PartPlan], restore_one: Callable[[PartPlan], RestoreResult]
) -> RestoreResult:
    """Restore each planned part of ``manifest`` in order with ``restore_one``, and sum the
    results up; on a failure, a RestoreError says which parts are restored and which are not
    (the part's own error is its cause)."""
    done: list[tuple[PartPlan, RestoreResult]] = []
    for plan in plans:
        try:
            done.append((plan, restore_one(plan)))
        except PgVaultError as exc:
            left = [p.name for p in plans[len(done) + 1 :]]
            restored = ", ".join(f"{p.name} into {p.describe()}" for p, _ in done) or "none"
            raise RestoreError(
                f"part {plan.name}: {exc} (restored: {restored}; not restored: "
                f"{', '.join([plan.name, *left])})"
            ) from exc
    results = [(plan.name, result) for plan, result in done]
    return RestoreResult(
        backup_id=manifest.backup_id,
        target=", ".join(f"{name} into {r.target}" for name, r in results),
        raw_bytes=sum(r.raw_bytes for _, r in results),
        created_roles=tuple(dict.fromkeys(role for _, r in results for role in r.created_roles)),
        notes=tuple(f"part {name}: {note}" for name, r in results for note in r.notes),
        warnings=tuple(f"part {name}: {w}" for name, r in results for w in r.warnings),
        parts=tuple(results),
    )
