"""``pgvault prune``, ``pin`` and ``unpin``: what retention removes and what it keeps."""

from __future__ import annotations

import argparse
import json

from pgvault.cli import common
from pgvault.cli.commands import storage
from pgvault.cli.exits import (
    EXIT_FAILED,
    EXIT_OK,
)
from pgvault.operations.prune import PruneResult
from pgvault.operations.prune import prune as prune_vault
from pgvault.vault.contents import Vault
from pgvault.vault.pins import parse_until, pin, unpin


def cmd_prune(args: argparse.Namespace) -> int:
    """``pgvault prune``: remove what the retention policy does not keep."""
    config = common.load(args)
    if len(config.destinations) > 1:
        return storage.prune_each(config, args, _print_prune)
    result = prune_vault(config, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_prune(result)
    for failure in result.failures:
        common.stderr(f"pgvault: error: could not remove {failure.backup_id}: {failure.message}")
    wal_failures = result.wal.failures if result.wal else ()
    for message in wal_failures:
        common.stderr(f"pgvault: error: could not remove WAL file {message}")
    return EXIT_OK if result.ok and not wal_failures else EXIT_FAILED


def _print_prune(result: PruneResult) -> None:
    plan = result.plan
    zone = plan.policy.timezone.zone
    if result.dry_run:
        words = {True: "keep", False: "remove"}
    else:
        failed = {f.backup_id for f in result.failures}
        words = {True: "kept", False: "removed"}
    rows = []
    for d in plan.decisions:
        action = words[d.keep]
        if not result.dry_run and not d.keep and d.backup_id in failed:
            action = "FAILED"
        when = d.started_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if d.started_at else "?"
        rows.append((action, d.backup_id, when, ", ".join(d.reasons)))
    if rows:
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    kept, removed = len(plan.kept), len(plan.removed)
    cleaned = [i for i in result.leftovers if result.dry_run or i in result.removed]
    if cleaned:
        done = "would clean" if result.dry_run else "cleaned"
        print(f"{done} {len(cleaned)} unfinished backup folder(s): {', '.join(cleaned)}")
    for move in result.moves:
        done = "would move" if result.dry_run else "FAILED to move" if move.error else "moved"
        print(f"{done} {move.key} from {move.from_class} to {move.to_class}")
    if result.wal is not None:
        for line in result.wal.lines(dry_run=result.dry_run):
            print(line)
    if result.dry_run:
        print(
            f"dry run ({plan.policy.describe()}): would keep {kept}, remove {removed}; "
            "nothing was changed"
        )
    else:
        print(
            f"kept {kept}, removed {len(result.removed)} of {removed}"
            + (
                f", {result.partials_removed} unfinished write(s) cleaned"
                if result.partials_removed
                else ""
            )
        )


def cmd_pin(args: argparse.Namespace) -> int:
    """``pgvault pin``: keep a backup whatever retention says."""
    config = common.load(args)
    record = pin(
        Vault.from_config(config), args.backup, until=parse_until(args.until), note=args.note
    )
    print(f"backup {record.backup_id}: {record.describe()}")
    return EXIT_OK


def cmd_unpin(args: argparse.Namespace) -> int:
    """``pgvault unpin``: retention decides about the backup again."""
    backup_id = unpin(Vault.from_config(common.load(args)), args.backup)
    print(f"backup {backup_id}: unpinned (retention decides about it again)")
    return EXIT_OK
