"""The recovery settings of a restored data directory: ``recovery.signal`` and
``postgresql.auto.conf``.

``postgresql.auto.conf`` is read after ``postgresql.conf``, so what is written there wins.
Lines that already set one of the keys written (production's ``ALTER SYSTEM SET
archive_command``, an older restore's target) are commented out rather than deleted, so the
file still shows what the source had. ``archive_mode`` is written ``off`` unless the caller
asks otherwise: a restored copy of production must never archive into production's WAL (its
new timeline's files would take names the source may still need), whatever the source's
configuration said.

A Debian-style cluster keeps ``postgresql.conf`` and ``pg_hba.conf`` under ``/etc``, so its base
backup has none: a minimal pair is written then (local connections by peer authentication only),
so the copy can start at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

AUTO_CONF = "postgresql.auto.conf"
SIGNAL = "recovery.signal"
MANAGED = (
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_xid",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
    "archive_mode",
    "archive_command",
    "archive_library",
    "primary_conninfo",
    "primary_slot_name",
)
"""Keys pgvault owns in a restored directory: older lines setting them are commented out."""

_KEY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?")


def quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def write_recovery(
    data: Path,
    settings: Mapping[str, str],
    *,
    header: str,
    owner: tuple[int, int] | None = None,
) -> list[str]:
    """Write ``settings`` (values unquoted, except ``restore_command`` which is given quoted)
    into ``data/postgresql.auto.conf`` and create ``recovery.signal``; return the lines written.

    ``owner`` (uid, gid) is given to the files written, when running as root.
    """
    keys = set(settings) | set(MANAGED)
    auto = data / AUTO_CONF
    old = auto.read_text() if auto.exists() else ""
    kept: list[str] = []
    for line in old.splitlines():
        m = _KEY.match(line)
        if m and m.group(1).lower() in keys:
            kept.append(f"#pgvault: {line}")
        else:
            kept.append(line)
    block = [f"# {header}"]
    for key, value in settings.items():
        text = value if key == "restore_command" else quote(value)
        block.append(f"{key} = {text}")
    auto.write_text("\n".join([*kept, *block]) + "\n")
    signal = data / SIGNAL
    signal.touch()
    written = [auto, signal]
    if not (data / "postgresql.conf").exists():
        (data / "postgresql.conf").write_text(
            "# written by pgvault restore: the base backup had no postgresql.conf (kept outside\n"
            "# the data directory, as Debian does). Settings from the source are not here.\n"
            "listen_addresses = 'localhost'\n"
        )
        written.append(data / "postgresql.conf")
    if not (data / "pg_hba.conf").exists():
        (data / "pg_hba.conf").write_text(
            "# written by pgvault restore: the base backup had no pg_hba.conf\nlocal all all peer\n"
        )
        written.append(data / "pg_hba.conf")
    for path in written:
        path.chmod(0o600)
        if owner is not None and os.geteuid() == 0:
            os.chown(path, *owner)
    return block


def read_setting(data: Path, key: str) -> str | None:
    """The value the last line of ``postgresql.auto.conf`` setting ``key`` gives, unquoted."""
    auto = data / AUTO_CONF
    if not auto.exists():
        return None
    value: str | None = None
    for line in auto.read_text().splitlines():
        m = re.match(rf"^\s*{re.escape(key)}\s*=\s*(.*?)\s*$", line)
        if m:
            raw = m.group(1)
            if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
                raw = raw[1:-1].replace("''", "'")
            value = raw
    return value
