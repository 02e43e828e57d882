"""Digests of stored bytes: SHA-256 always, MD5 on request.

Digests observe the bytes exactly as the sink stores them (after every transform), so ``verify``
can check an artifact without any key, and ``sha256sum``/``md5sum`` agree with the manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

SUPPORTED = ("sha256", "md5")
"""Algorithms a config may list in ``checksums``."""

MD5_SIDECAR = "MD5SUMS"
"""Name of the per-backup file that ``md5sum -c`` accepts, written when md5 is requested."""


class Digests:
    """Running digests over one stream of stored bytes."""

    def __init__(self, algorithms: Iterable[str]) -> None:
        # usedforsecurity=False: MD5 is an integrity checksum here; FIPS builds refuse it otherwise.
        self._hashes = {
            name: hashlib.new(name, usedforsecurity=name != "md5") for name in algorithms
        }
        self.size = 0

    def update(self, data: bytes) -> None:
        """Add ``data`` to every digest."""
        self.size += len(data)
        for h in self._hashes.values():
            h.update(data)

    def hexdigests(self) -> dict[str, str]:
        """The digests so far, by algorithm name."""
        return {name: h.hexdigest() for name, h in self._hashes.items()}


def md5sums_text(entries: Iterable[tuple[str, str]]) -> str:
    """An ``MD5SUMS`` file for ``(md5 hex, file name)`` pairs, as md5sum writes it."""
    return "".join(f"{md5}  {name}\n" for md5, name in entries)
