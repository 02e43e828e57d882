"""The prefetch spool's segments: where they lie, and taking one that is still as verified.

Shared by ``wal-fetch`` (which takes a prefetched segment) and the prefetcher (which writes them),
so that neither imports the other's module back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
from pathlib import Path

from pgvault.wal.archive import ClusterId
from pgvault.wal.names import (
    LONG_HEADER_SIZE,
    SegmentHeader,
    WalError,
    WalName,
)

log = logging.getLogger("pgvault.wal.prefetch")


def fetch_folder(spool: Path, cluster: ClusterId) -> Path:
    """Where prefetched segments of ``cluster`` are kept."""
    return spool / "fetch" / cluster.key


def fingerprint(path: Path) -> str:
    """``pgvault-ack 1 <size> <first 40 bytes in hex>``: what the shell scripts compare (the
    40 bytes are a segment's long page header: magic, timeline, page address, system id)."""
    with path.open("rb") as handle:
        head = handle.read(LONG_HEADER_SIZE)
        size = os.fstat(handle.fileno()).st_size
    return f"pgvault-ack 1 {size} {head.hex()}"


def write_atomically(path: Path, text: str) -> None:
    """Write a small file so that readers see the old one or the whole new one."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with temp.open("w") as handle:
        handle.write(text)
    temp.replace(path)


def take_prefetched(spool: Path, cluster: ClusterId, name: WalName, target: Path) -> int | None:
    """Move the prefetched ``name`` to ``target`` if it is there and still checks out (size,
    header against name and cluster, SHA-256 recorded when it was verified); its size, or None."""
    folder = fetch_folder(spool, cluster)
    path = folder / name.text
    ok = folder / f"{name.text}.ok"
    try:
        recorded = ok.read_text().split("\n")
        data = path.read_bytes()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        header = SegmentHeader.parse(data, name=name.text)
        header.check(name, size=len(data), system_identifier=cluster.system_identifier)
        expected = f"pgvault-ack 1 {len(data)} {data[:LONG_HEADER_SIZE].hex()}"
        if recorded[0] != expected or recorded[1:2] != [hashlib.sha256(data).hexdigest()]:
            raise WalError(f"{name}: the prefetched copy changed since it was verified")
    except WalError as exc:
        log.warning("dropping prefetched %s: %s", name, exc)
        for stale in (ok, path):
            with contextlib.suppress(OSError):
                stale.unlink()
        return None
    temp = target.with_name(f".pgvault-fetch-{name.text}-{secrets.token_hex(4)}")
    try:
        temp.write_bytes(data)
        temp.replace(target)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()
        return None
    for used in (ok, path):
        with contextlib.suppress(OSError):
            used.unlink()
    return len(data)
