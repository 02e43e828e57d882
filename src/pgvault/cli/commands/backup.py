"""``pgvault run`` (one backup, with labels) and ``pgvault keygen``."""

from __future__ import annotations

import argparse
import sys

from pgvault.cli import common
from pgvault.cli.exits import (
    EXIT_OK,
)
from pgvault.engine.pipeline import run as run_backup
from pgvault.engine.progress import human_bytes
from pgvault.exceptions import ConfigError
from pgvault.vault.pins import FOREVER, parse_until


def cmd_run(args: argparse.Namespace) -> int:
    """``pgvault run``: one backup; its id is the last line printed."""
    config = common.load(args)
    labels = _run_labels(args)
    progress = common.progress(args, f"backup {config.name}")
    try:
        manifest = run_backup(config, labels=labels, progress=progress)
    finally:
        if progress:
            progress.close()
    if args.json:
        print(manifest.to_json(), end="")
    elif sys.stderr.isatty():
        print(
            f"backup {manifest.backup_id} complete: {human_bytes(manifest.size)} stored "
            f"({human_bytes(manifest.raw_size)} raw) in {manifest.duration_seconds:.1f}s",
            file=sys.stderr,
        )
    print(manifest.backup_id)
    return EXIT_OK


def _run_labels(args: argparse.Namespace) -> dict[str, str]:
    labels: dict[str, str] = {}
    if args.label is not None:
        if not args.label.strip() or not args.label.isprintable() or len(args.label) > 200:
            raise ConfigError(f"--label {args.label!r}: use up to 200 printable characters")
        labels["label"] = args.label
    if args.keep_until is not None:
        until = parse_until(args.keep_until, option="--keep-until")
        labels["keep_until"] = (
            "forever"
            if until == FOREVER
            else until.isoformat(timespec="seconds").replace("+00:00", "Z")
        )
    return labels


def cmd_keygen(args: argparse.Namespace) -> int:
    """``pgvault keygen``: a key file, or an X25519 identity and its public key."""
    from pgvault.transforms import keys

    if args.x25519:
        identity, pub_path = keys.write_identity(args.out)
        print(f"wrote identity {args.out} (secret, mode 0600) and {pub_path}", file=sys.stderr)
        print(f"public key: {identity.recipient}")
        print(f"key id: {identity.key_id}")
    else:
        kid = keys.write_key_file(args.out)
        print(f"wrote key file {args.out} (secret, mode 0600)", file=sys.stderr)
        print(f"key id: {kid}")
    return EXIT_OK
