"""``pgvault list``, ``show`` and ``verify``: what the vault holds, and whether it is whole."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

import attrs

from pgvault.cli import common
from pgvault.cli.commands import storage
from pgvault.cli.exits import (
    EXIT_FAILED,
    EXIT_OK,
)
from pgvault.engine.progress import human_bytes
from pgvault.exceptions import PgVaultError
from pgvault.operations.destinations import overview
from pgvault.operations.pitr.window import window_lines as pitr_window_lines
from pgvault.transforms.api import DecodeContext
from pgvault.vault.contents import DamagedBackup, Vault, VaultContents, VerifyProblem, VerifyReport
from pgvault.vault.manifest import MANIFEST_NAME, Manifest, id_time
from pgvault.vault.pins import Pins, read_pins

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig


def cmd_list(args: argparse.Namespace) -> int:
    """``pgvault list``: every destination's backups, the WAL ranges and the recovery window."""
    config = common.load(args)
    # Every destination's backups, each with where it is stored (and in which class).
    view = overview(config)
    contents = next(s.contents for s in view.states if s.contents is not None)
    backups = view.backups
    pins = read_pins(Vault.from_config(config))
    future = {m.backup_id for m in backups if contents.is_future(m)}
    stored = storage.wants_stored_column(config, view)
    storage.warn_destinations(view, config)
    if args.json:
        rows_json = [
            {
                **_summary(m, future=m.backup_id in future),
                "pin": pins.pins[m.backup_id].to_dict() if m.backup_id in pins.pins else None,
                **(
                    {"pin_damaged": pins.damaged[m.backup_id].reason}
                    if m.backup_id in pins.damaged
                    else {}
                ),
                "stored": storage.stored_json(view, m.backup_id),
            }
            for m in backups
        ]
        rows_json += [_damaged_summary(d) for d in contents.damaged]
        print(json.dumps(rows_json, indent=2))
        _warn_about(contents)
        return EXIT_OK
    if not backups:
        print(
            f"no complete backups in vault {config.name!r} at {config.sink.describe()}",
            file=sys.stderr,
        )
        _warn_about(contents)
        _print_wal_ranges(config)
        return EXIT_OK
    rows: list[tuple[str, ...]] = [
        ("ID", "STARTED (UTC)", "KIND", "SIZE", "RAW", "TIME", "SOURCE", "NOTE")
    ]
    rows[0] += ("STORED",) if stored else ()
    for m in backups:
        rows.append(
            (
                m.backup_id,
                m.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                f"{m.kind} (future-dated)" if m.backup_id in future else m.kind,
                human_bytes(m.size),
                human_bytes(m.raw_size),
                f"{m.duration_seconds:.1f}s",
                _source_text(m),
                _keep_text(m, pins),
            )
            + ((storage.stored_column(view, m.backup_id),) if stored else ())
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    _warn_about(contents)
    _print_wal_ranges(config)
    # --- point-in-time recovery window (issue 14) ---
    for line in pitr_window_lines(config, list(contents.scheduled)):
        print(line)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """``pgvault show``: a backup's manifest as JSON."""
    manifest = Vault.from_config(common.load(args)).manifest(args.backup)
    print(manifest.to_json(), end="")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """``pgvault verify``: re-read artifacts (``--deep``: decode them); exit 1 on a problem."""
    config = common.load(args)
    vault = Vault.from_config(config)
    damaged: tuple[DamagedBackup, ...] = ()
    if args.all:
        contents = vault.contents()
        manifests = list(contents.backups)
        damaged = contents.damaged
    else:
        manifests = [vault.manifest(args.backup)]
    context = DecodeContext(configured=config.transforms, identities=tuple(args.identity))
    reports: list[VerifyReport] = []
    for m in manifests:
        deep, note, pending = args.deep, None, False
        if args.deep and args.archived != "fail":
            deep, note, pending = storage.deep_or_shallow(config, m, args)
        if deep and m.source_type == "basebackup":
            # -- A base backup is checked as a whole: restored to scratch with its WAL range,
            # then pg_verifybackup (issue 14).
            from pgvault.operations.basebackup_restore import verify_base_backup

            report = verify_base_backup(vault, m, context)
        else:
            report = vault.verify(m, deep=deep, context=context)
        if pending:  # a retrieval under way: not verified yet
            report = attrs.evolve(report, problems=(VerifyProblem("(archived)", note or ""),))
        elif note and not args.json:
            print(note)
        reports.append(report)
        if args.json:
            continue
        if report.ok:
            how = "deep" if args.deep else "digests"
            n = len(report.checked)
            if report.archived:
                text = (
                    f"{n} artifact(s), {n - len(report.archived)} with matching {how}, "
                    f"{len(report.archived)} archived (size checked from the listing)"
                )
            else:
                text = f"{n} artifact(s), {how} match"
            print(f"OK {m.backup_id}: {text}")
            for path, note in report.details.items():
                print(f"   {path}: {note}")
        for problem in report.problems:
            common.stderr(f"pgvault: FAILED {m.backup_id}: artifact {problem}")
    for d in damaged:
        # A manifest that cannot be read verifies nothing: FAILED, like a bad artifact.
        reports.append(
            VerifyReport(d.backup_id, args.deep, (), (VerifyProblem(MANIFEST_NAME, d.reason),))
        )
        if not args.json:
            common.stderr(f"pgvault: FAILED {d.backup_id}: {MANIFEST_NAME}: {d.reason}")
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "backup_id": r.backup_id,
                        "ok": r.ok,
                        "deep": r.deep,
                        "checked": list(r.checked),
                        "problems": [
                            {"artifact": p.artifact, "message": p.message} for p in r.problems
                        ],
                        "details": r.details,
                    }
                    for r in reports
                ],
                indent=2,
            )
        )
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


def _keep_text(m: Manifest, pins: Pins) -> str:
    """The NOTE column of ``list``: label, keep_until, pin."""
    parts = []
    label = m.labels.get("label")
    if isinstance(label, str) and label:
        parts.append(f"label {_printable(label)}")
    keep = m.labels.get("keep_until")
    if isinstance(keep, str) and keep:
        parts.append(f"keep until {_printable(keep)}")
    pinned = pins.describe(m.backup_id)
    if pinned:
        parts.append(pinned)
    return "; ".join(parts)


def _printable(text: str) -> str:
    # Labels come from the vault: a control character must not drive the terminal.
    return "".join(ch if ch.isprintable() else " " for ch in text)[:200]


def _summary(m: Manifest, *, future: bool = False) -> dict[str, Any]:
    return {
        "backup_id": m.backup_id,
        "status": "complete",
        "started_at": m.to_dict()["started_at"],
        "kind": m.kind,
        "future": future,
        "size": m.size,
        "raw_size": m.raw_size,
        "duration_seconds": round(m.duration_seconds, 3),
        "source": _source_text(m),
        "labels": {k: v for k, v in m.labels.items() if isinstance(v, str)},
    }


def _damaged_summary(d: DamagedBackup) -> dict[str, Any]:
    when = id_time(d.backup_id)
    return {
        "backup_id": d.backup_id,
        "status": "damaged",
        "started_at": when.isoformat().replace("+00:00", "Z") if when else None,
        "key": d.key,
        "error": d.reason,
    }


def _warn_about(contents: VaultContents) -> None:
    """Name on stderr what ``list`` shows but nothing counts: damaged and future-dated backups."""
    for d in contents.damaged:
        print(
            f"pgvault: WARNING: damaged backup {d.backup_id} ({d.key}): {d.reason}", file=sys.stderr
        )
    for m in contents.future:
        print(
            f"pgvault: WARNING: backup {m.backup_id} is dated in the future (a clock ahead?): "
            "it is never 'latest', not counted and not pruned",
            file=sys.stderr,
        )


def _source_text(m: Manifest) -> str:
    src = m.source
    if m.source_type == "pg_dump":
        return f"pg_dump {src.get('database', '?')} ({src.get('format', '?')})"
    if m.source_type == "files":
        return f"files: {src.get('files', '?')} files"
    return m.source_type


def _print_wal_ranges(config: PipelineConfig) -> None:
    from pgvault.wal.archive import WalArchive
    from pgvault.wal.chain import summarize

    try:
        chains = summarize(WalArchive(config.sink, config.name), pg_wal=config.wal.pg_wal)
    except PgVaultError as exc:
        # The backups listed above are still worth seeing: say so, do not fail the listing.
        common.stderr(f"pgvault: warning: cannot read the WAL archive: {exc}", logging.WARNING)
        return
    for chain in chains:
        print(f"WAL of {chain.cluster}: {chain.files} file(s), {human_bytes(chain.stored_bytes)}")
        for t in chain.timelines:
            spans = ", ".join(
                f"{chain.name(t.timeline, r.first)}..{chain.name(t.timeline, r.last)}"
                for r in t.ranges
            )
            lost = sum(
                g.count for g in chain.gaps if g.timeline == t.timeline and g.state == "lost"
            )
            print(
                f"  timeline {t.timeline}: {spans or 'no segments'}"
                + (f" ({lost} segment(s) missing: see wal-check)" if lost else "")
            )
