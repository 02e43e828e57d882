"""The storage commands of the CLI (issue 15): ``copy``, ``thaw``, ``export``, ``cat``, and the
destination-aware parts of ``list``, ``prune``, ``verify`` and ``drill``. The Python API is in
:mod:`pgvault.operations`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgvault.cli import common
from pgvault.cli.exits import EXIT_FAILED, EXIT_OK
from pgvault.engine.progress import human_bytes
from pgvault.exceptions import ConfigError, PgVaultError
from pgvault.operations.destinations import Overview, choose_copy, usable
from pgvault.operations.thaw import thaw
from pgvault.transforms.api import DecodeContext
from pgvault.transforms.digest import MD5_SIDECAR
from pgvault.vault.contents import Vault

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.vault.manifest import Manifest


def cmd_copy(args: argparse.Namespace) -> int:
    """``pgvault copy``."""
    from pgvault.operations.copy import copy  # not for list and show, which import this module

    config = common.load(args)
    result = copy(config, args.source, args.target, tuple(args.backups))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for c in result.backups:
            if c.action == "copied":
                print(f"copied   {c.backup_id}  {human_bytes(c.bytes)}")
            elif c.action == "present":
                print(f"present  {c.backup_id}")
        copied = sum(1 for c in result.backups if c.action == "copied")
        wal = f", {result.wal_copied} WAL file(s)" if result.wal_copied else ""
        print(f"{result.source} -> {result.target}: {copied} backup(s) copied{wal}")
    for c in result.backups:
        if c.action == "failed":
            print(f"pgvault: error: could not copy {c.backup_id}: {c.error}", file=sys.stderr)
    for failure in result.wal_failures:
        print(f"pgvault: error: could not copy WAL {failure}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_thaw(args: argparse.Namespace) -> int:
    """``pgvault thaw``: request (or show) the retrieval; exit 0 once readable, 1 before."""
    config = common.load(args)
    dest, manifest = choose_copy(config, args.backup, source=args.source)
    report = thaw(
        dest,
        config.name,
        manifest,
        days=args.thaw_days,
        speed=args.thaw_speed,
        request=not args.status,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.describe())
    return EXIT_OK if report.ready else EXIT_FAILED


def cmd_export(args: argparse.Namespace) -> int:
    """``pgvault export``: a backup's decoded files and an MD5SUMS in a folder."""
    from pgvault.operations.export import export
    from pgvault.vault.parts import artifacts_of

    config = common.load(args)
    vault = Vault.from_config(config)
    manifest = vault.manifest(args.backup)
    chosen = artifacts_of(manifest, args.part) if args.part else None
    context = DecodeContext(configured=config.transforms, identities=tuple(args.identity))
    result = export(vault, manifest, args.out, artifacts=chosen, context=context)
    for f in result.files:
        print(f"{f.path}  {human_bytes(f.size)}")
    print(f"{result.md5sums}  (check with: cd {result.out_dir} && md5sum -c {MD5_SIDECAR})")
    return EXIT_OK


def cmd_cat(args: argparse.Namespace) -> int:
    """``pgvault cat``: one decoded artifact to stdout."""
    from pgvault.operations.export import cat, find_artifact

    config = common.load(args)
    if sys.stdout.isatty():
        raise ConfigError("stdout is a terminal: pipe cat into a program or redirect it to a file")
    vault = Vault.from_config(config)
    manifest = vault.manifest(args.backup)
    art = find_artifact(manifest, args.artifact)
    context = DecodeContext(configured=config.transforms, identities=tuple(args.identity))
    cat(vault, manifest, art, sys.stdout.buffer, context=context)
    return EXIT_OK


def stored_column(view: Overview, backup_id: str) -> str:
    """``local, s3:GLACIER``: where a backup is, and its artifacts' class there."""
    return ", ".join(p.describe() for p in view.places.get(backup_id, ()))


def stored_json(view: Overview, backup_id: str) -> list[dict[str, Any]]:
    """Per destination holding the backup: its name, artifact classes and bytes per class."""
    return [
        {"destination": p.destination, "classes": list(p.classes), "size_by_class": p.sizes}
        for p in view.places.get(backup_id, ())
    ]


def wants_stored_column(config: PipelineConfig, view: Overview) -> bool:
    """Several destinations, or one with storage classes: then ``list`` shows where."""
    return len(config.destinations) > 1 or any(p.classes for ps in view.places.values() for p in ps)


def warn_destinations(view: Overview, config: PipelineConfig) -> None:
    """Unreadable and lagging destinations, on stderr (``list`` still lists the rest)."""
    if len(config.destinations) == 1:
        return
    for state in view.states:
        name = state.destination.name
        if state.contents is None:
            print(
                f"pgvault: WARNING: destination {state.destination.describe()} cannot be read: "
                f"{state.error}",
                file=sys.stderr,
            )
        elif state.lag:
            print(
                f"pgvault: WARNING: destination {name!r} lags: {len(state.lag)} backup(s) newer "
                f"than its newest are missing there (pgvault copy CONFIG --to {name} "
                "--from <another>)",
                file=sys.stderr,
            )


def prune_each(
    config: PipelineConfig, args: argparse.Namespace, print_one: Callable[[Any], None]
) -> int:
    """``prune`` of a pipeline with several destinations: each by its own policy and tiers."""
    from pgvault.operations.prune import prune

    code = EXIT_OK
    outcomes = []
    for dest in config.destinations:
        one = config.for_destination(dest)
        if not args.json:
            print(f"== destination {dest.describe()}")
        if one.retention is None:
            if not args.json:
                print("no retention policy: nothing removed")
            outcomes.append({"destination": dest.name, "skipped": "no retention policy"})
            continue
        try:
            result = prune(one, dry_run=args.dry_run)
        except ConfigError:
            raise
        except PgVaultError as exc:
            print(f"pgvault: error: destination {dest.name!r}: {exc}", file=sys.stderr)
            outcomes.append({"destination": dest.name, "error": str(exc)})
            code = EXIT_FAILED
            continue
        if args.json:
            outcomes.append({"destination": dest.name, **result.to_dict()})
        else:
            print_one(result)
        if not result.ok:
            code = EXIT_FAILED
    if args.json:
        print(json.dumps(outcomes, indent=2))
    return code


def deep_or_shallow(
    config: PipelineConfig, manifest: Manifest, args: argparse.Namespace
) -> tuple[bool, str | None, bool]:
    """``verify --deep --archived skip|thaw`` of one backup: whether to verify it deep, a note
    to print, and whether the backup stays unverified (a retrieval still under way).

    ``skip`` verifies an archived backup shallow (sizes from the listing), ``thaw`` requests its
    retrieval and verifies it deep once readable."""
    dest = config.destinations[0]
    if usable(dest, config.name, manifest) != "archived":
        return True, None, False
    if args.archived == "skip":
        return (
            False,
            f"SKIPPED deep check of {manifest.backup_id}: archived (--archived thaw)",
            False,
        )
    report = thaw(dest, config.name, manifest, days=args.thaw_days, speed=args.thaw_speed)
    if report.ready:
        return True, None, False
    return False, report.describe(), True


def cold_drill(config: PipelineConfig, args: argparse.Namespace) -> int | None:
    """``drill --archived skip|thaw`` of a backup in an archive class: an exit code when the
    drill does not run (skipped, or its retrieval still under way), None to drill it."""
    if args.archived == "fail":
        return None
    dest = config.destinations[0]
    manifest = Vault(dest.sink, config.name).manifest(args.backup)
    if usable(dest, config.name, manifest) != "archived":
        return None
    if args.archived == "skip":
        print(f"SKIPPED drill of {manifest.backup_id}: archived (drill --archived thaw)")
        return EXIT_OK
    report = thaw(dest, config.name, manifest, days=args.thaw_days, speed=args.thaw_speed)
    if report.ready:
        return None
    print(f"pgvault: error: drill not run: {report.describe()}", file=sys.stderr)
    return EXIT_FAILED
