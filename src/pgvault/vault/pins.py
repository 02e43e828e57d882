"""Pins: a backup that retention must keep, until a date or for ever, with a note.

Where a pin lives, and why there: ``<name>/pins/<backup_id>.json``, beside the backups, never in
the backup's folder. A backup folder is written once and never changed (its manifest is the last
write and stays immutable, and its artifacts may sit in a cold storage class); a pin is mutable
metadata that ``pin``/``unpin`` rewrite at any time, and that must stay readable at once. Prune
removes a backup's pin with the backup, and ``unpin`` removes it without touching the backup.

A ``keep_until`` label written by ``run --keep-until`` (or a restore's safety backup) is the
other way to protect a backup: it is decided at backup time and lives in the manifest.

The vault is hostile (see docs/storage.md): a pin object that cannot be read (not JSON, too large,
of an unknown format, naming another backup) still protects its backup, reported as a damaged
pin, because a pin can only ever *keep* something: the worst a forged pin can do is cost storage,
whereas ignoring a damaged one could let prune remove a backup someone pinned. A pin never
changes what ``latest`` means, what ``check`` counts, or which backups the tiers count: it only
adds a reason to keep.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from pgvault.exceptions import ConfigError, ObjectNotFoundError, PgVaultError
from pgvault.units import parse_duration
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import Manifest

PIN_FORMAT = 1
FOREVER = datetime.max.replace(tzinfo=UTC)
"""The ``until`` of a pin (or ``keep_until`` label) that never expires."""
MAX_PIN_BYTES = 64 * 1024
"""A pin is a few hundred bytes; a larger object is not read (a hostile vault must not make
``list`` load gigabytes)."""
MAX_NOTE = 500
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")


@attrs.frozen
class Pin:
    """One backup's pin: kept until ``until`` (:data:`FOREVER` for ever)."""

    backup_id: str
    until: datetime = FOREVER
    note: str = ""
    pinned_at: datetime | None = None
    pinned_by: str = ""

    @property
    def forever(self) -> bool:
        """Whether the pin never expires."""
        return self.until == FOREVER

    def active(self, now: datetime) -> bool:
        """Whether the pin still protects its backup at ``now``."""
        return now < self.until

    def describe(self) -> str:
        """``pinned forever`` / ``pinned until 2027-01-01 00:00 UTC``, and the note."""
        text = "pinned forever" if self.forever else f"pinned until {until_text(self.until)}"
        return text + (f" ({self.note})" if self.note else "")

    def to_json(self) -> str:
        """The stored form."""
        data: dict[str, Any] = {
            "format_version": PIN_FORMAT,
            "backup_id": self.backup_id,
            "until": None if self.forever else _iso(self.until),
            "note": self.note,
            "pinned_at": _iso(self.pinned_at) if self.pinned_at else None,
            "pinned_by": self.pinned_by,
        }
        return json.dumps(data, indent=2) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``list --json``."""
        return {
            "until": None if self.forever else _iso(self.until),
            "forever": self.forever,
            "note": self.note,
            "pinned_at": _iso(self.pinned_at) if self.pinned_at else None,
            "pinned_by": self.pinned_by,
        }


@attrs.frozen
class DamagedPin:
    """A pin object that cannot be read: its backup is kept, and this says why."""

    backup_id: str
    key: str
    reason: str

    def describe(self) -> str:
        """One line for ``list`` and ``prune``."""
        return f"pin object damaged ({self.reason}): kept until you look (pgvault unpin removes it)"


@attrs.frozen
class Pins:
    """Every pin of a vault, from one listing."""

    pins: Mapping[str, Pin] = attrs.field(factory=dict)
    damaged: Mapping[str, DamagedPin] = attrs.field(factory=dict)

    def protecting(self, now: datetime) -> dict[str, tuple[datetime, str]]:
        """Backup id → (until, why), for every pin that keeps its backup at ``now`` (a damaged
        one for ever), as :func:`pgvault.vault.retention.plan` takes them."""
        kept = {i: (p.until, "pin") for i, p in self.pins.items() if p.active(now)}
        kept.update({i: (FOREVER, d.describe()) for i, d in self.damaged.items()})
        return kept

    def describe(self, backup_id: str) -> str | None:
        """What ``list`` says about ``backup_id``'s pin, or None."""
        if backup_id in self.damaged:
            return self.damaged[backup_id].describe()
        pin = self.pins.get(backup_id)
        return pin.describe() if pin else None


def pins_prefix(vault: Vault) -> str:
    """Key prefix of a vault's pins."""
    return f"{vault.name}/pins/"


def pin_key(vault: Vault, backup_id: str) -> str:
    """Key of one backup's pin."""
    return f"{pins_prefix(vault)}{backup_id}.json"


def read_pins(vault: Vault) -> Pins:
    """Every pin object of ``vault``, read as untrusted input (a bad one is a :class:`DamagedPin`,
    never an error that hides the rest). A sink that cannot be reached raises SinkError."""
    prefix = pins_prefix(vault)
    good: dict[str, Pin] = {}
    damaged: dict[str, DamagedPin] = {}
    for info in vault.sink.list(prefix):
        name = info.key[len(prefix) :]
        if not name.endswith(".json") or "/" in name:
            continue  # not a pin pgvault wrote; it protects nothing
        backup_id = name[: -len(".json")]
        if not _ID_RE.match(backup_id):
            continue
        if info.size > MAX_PIN_BYTES:
            damaged[backup_id] = DamagedPin(backup_id, info.key, f"{info.size} bytes, not a pin")
            continue
        try:
            good[backup_id] = _parse(vault.sink.read_bytes(info.key), backup_id)
        except ObjectNotFoundError:
            continue  # unpinned since the listing
        except (ValueError, PgVaultError) as exc:
            damaged[backup_id] = DamagedPin(backup_id, info.key, str(exc))
    return Pins(good, damaged)


def _parse(raw: bytes, backup_id: str) -> Pin:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValueError("not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a pin object")
    version = data.get("format_version")
    if version != PIN_FORMAT:
        raise ValueError(f"unknown pin format {version!r}")
    if data.get("backup_id") != backup_id:
        raise ValueError("it names another backup (moved or edited)")
    until_raw = data.get("until")
    note = data.get("note", "")
    by = data.get("pinned_by", "")
    at_raw = data.get("pinned_at")
    if not isinstance(note, str) or not isinstance(by, str):
        raise ValueError("note and pinned_by must be strings")
    until = FOREVER if until_raw is None else _parse_time(until_raw, "until")
    at = None if at_raw is None else _parse_time(at_raw, "pinned_at")
    return Pin(backup_id, until, _printable(note)[:MAX_NOTE], at, _printable(by)[:200])


def _parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a time")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} is not an ISO time") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _printable(text: str) -> str:
    """``text`` without control characters: a note from the vault must not drive a terminal."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def parse_until(text: str, now: datetime | None = None, *, option: str = "--until") -> datetime:
    """A pin's end from the command line: ``forever``, an ISO date or time (UTC if no zone), or
    a duration from now (``90d``). It must lie in the future."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if value.lower() == "forever":
        return FOREVER
    try:
        when = datetime.fromisoformat(value.replace(" ", "T"))
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except ValueError:
        try:
            when = now + parse_duration(value)
        except ValueError:
            raise ConfigError(
                f"{option} {text!r}: use 'forever', a date (2027-01-31, UTC), a time "
                "(2027-01-31T12:00+01:00) or a duration from now (90d)"
            ) from None
    if when <= now:
        raise ConfigError(f"{option} {text!r} is in the past")
    return when


def pin(
    vault: Vault,
    ref: str,
    *,
    until: datetime = FOREVER,
    note: str = "",
    now: datetime | None = None,
) -> Pin:
    """Pin backup ``ref`` (an id, unique prefix or ``latest``) until ``until``; replaces an
    earlier pin of the same backup. Returns the pin written."""
    manifest: Manifest = vault.manifest(ref)
    if len(note) > MAX_NOTE:
        raise ConfigError(f"--note is {len(note)} characters; at most {MAX_NOTE}")
    record = Pin(
        manifest.backup_id,
        until,
        _printable(note),
        now or datetime.now(UTC),
        _who(),
    )
    vault.sink.write_bytes(pin_key(vault, manifest.backup_id), record.to_json().encode())
    return record


def unpin(vault: Vault, ref: str) -> str:
    """Remove the pin of backup ``ref``; returns the backup id. A pin whose backup is gone (or
    damaged) is removed by its exact id too."""
    key = pin_key(vault, ref)
    if _ID_RE.match(ref) and vault.sink.exists(key):
        vault.sink.delete(key)
        return ref
    backup_id = vault.manifest(ref).backup_id
    key = pin_key(vault, backup_id)
    if not vault.sink.exists(key):
        raise ConfigError(f"backup {backup_id} is not pinned")
    vault.sink.delete(key)
    return backup_id


def remove_pin(vault: Vault, backup_id: str) -> None:
    """Remove ``backup_id``'s pin if it has one (prune, after removing the backup)."""
    vault.sink.delete(pin_key(vault, backup_id))  # deleting a missing object is no error


def until_text(when: datetime) -> str:
    """A pin's end for people: ``2027-01-01 00:00 UTC`` or ``forever``."""
    return "forever" if when == FOREVER else f"{when.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (OSError, KeyError):
        return ""


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
