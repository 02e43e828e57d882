"""Key files, X25519 identities and recipients, key ids, and ``pgvault keygen``."""

from __future__ import annotations

import base64
import logging
import stat
from pathlib import Path

import pytest

import pgvault
from pgvault.transforms import keys
from tests.conftest import pgvault_cli

MASTER = bytes(range(32))


def test_key_id_vectors() -> None:
    """Key ids are fixed functions of the key: a change here would orphan every recorded key id."""
    assert keys.key_id(MASTER) == "5ba6168a899a209d"
    identity = keys.Identity(bytes(range(32, 64)))
    assert str(identity.recipient) == "pgvault-x25519:NYBy1jZYgNGu6jKa35EhODhR7SGijjt16WXQ0s0WYlQ="
    assert identity.key_id == "9b1d76e1cacc496d"


def test_key_id_reveals_nothing_recognisable_about_the_key() -> None:
    """A key id is not a piece of the key in any encoding, and differs for keys one bit apart."""
    kid = keys.key_id(MASTER)
    assert kid not in MASTER.hex()
    assert kid not in base64.b64encode(MASTER).decode()
    assert keys.key_id(bytes([1]) + MASTER[1:]) != kid


def test_key_file_raw_base64_and_comments_load(tmp_path: Path) -> None:
    """A key file may hold the 32 bytes raw, or base64 with whitespace and # comments."""
    raw = tmp_path / "raw.key"
    raw.write_bytes(MASTER)
    b64 = tmp_path / "b64.key"
    b64.write_text(
        "# made by openssl rand -base64 32\n  " + base64.b64encode(MASTER).decode() + "\n\n"
    )
    assert keys.load_key_file(raw) == MASTER
    assert keys.load_key_file(b64) == MASTER


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"short",
        base64.b64encode(bytes(31)),
        base64.b64encode(bytes(33)),
        b"not base64 at all!",
    ],
    ids=["empty", "short", "31-bytes", "33-bytes", "garbage"],
)
def test_bad_key_file_names_the_file_not_the_content(tmp_path: Path, content: bytes) -> None:
    """A key file of the wrong size or encoding fails naming the file, never quoting its content."""
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(pgvault.KeyFileError, match="not a pgvault key file") as info:
        keys.load_key_file(path)
    assert str(path) in str(info.value)
    if content:
        assert content.decode(errors="replace") not in str(info.value)


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    """A key file that does not exist is a config error naming its path."""
    with pytest.raises(pgvault.KeyFileError, match="key file not found") as info:
        keys.load_key_file(tmp_path / "nope.key")
    assert isinstance(info.value, pgvault.ConfigError)
    assert "nope.key" in str(info.value)


def test_group_readable_key_file_warns_without_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A key file others can read still works, with a warning naming the file but not the key."""
    path = tmp_path / "loose.key"
    path.write_text(keys.encode_key(MASTER))
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="pgvault"):
        assert keys.load_key_file(path) == MASTER
    assert "chmod 600" in caplog.text
    assert base64.b64encode(MASTER).decode() not in caplog.text


def test_write_key_file_is_private_and_never_overwrites(tmp_path: Path) -> None:
    """write_key_file creates a 0600 file of a fresh key and refuses an existing path."""
    path = tmp_path / "new.key"
    kid = keys.write_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.key_id(keys.load_key_file(path)) == kid
    before = path.read_bytes()
    with pytest.raises(pgvault.KeyFileError, match="already exists"):
        keys.write_key_file(path)
    assert path.read_bytes() == before


def test_identity_pair_round_trips(tmp_path: Path) -> None:
    """write_identity writes a 0600 identity and a .pub whose recipient and key id match it."""
    identity, pub = keys.write_identity(tmp_path / "id")
    assert pub == tmp_path / "id.pub"
    assert stat.S_IMODE((tmp_path / "id").stat().st_mode) == 0o600
    loaded = keys.load_identity(tmp_path / "id")
    assert loaded == identity
    assert keys.load_recipient_file(pub) == identity.recipient
    assert identity.key_id in (tmp_path / "id").read_text()
    assert "PGVAULT-X25519-SECRET:" not in pub.read_text()


def test_identity_pair_never_overwrites_either_file(tmp_path: Path) -> None:
    """An existing .pub blocks keygen --x25519 before the identity is written."""
    (tmp_path / "id.pub").write_text("keep me\n")
    with pytest.raises(pgvault.KeyFileError, match="already exists"):
        keys.write_identity(tmp_path / "id")
    assert not (tmp_path / "id").exists()
    assert (tmp_path / "id.pub").read_text() == "keep me\n"


def test_wrap_and_unwrap_a_file_key() -> None:
    """A file key wrapped for a recipient opens with its identity and with no other."""
    alice, bob = keys.generate_identity(), keys.generate_identity()
    eph, wrapped = keys.wrap_key(MASTER, alice.recipient, keys.generate_key())
    assert len(wrapped) == keys.WRAPPED_KEY_SIZE
    assert keys.unwrap_key(wrapped, eph, alice) == MASTER
    assert keys.unwrap_key(wrapped, eph, bob) is None
    flipped = bytes([wrapped[0] ^ 1]) + wrapped[1:]
    assert keys.unwrap_key(flipped, eph, alice) is None


@pytest.mark.parametrize(
    "text",
    ["", "age1qqqq", "pgvault-x25519:", "pgvault-x25519:" + base64.b64encode(bytes(31)).decode()],
    ids=["empty", "other-format", "no-key", "short-key"],
)
def test_bad_recipient_is_refused(text: str) -> None:
    """Recipient strings that are not 32-byte pgvault X25519 keys are refused by name."""
    with pytest.raises(pgvault.KeyFileError, match="recipients"):
        keys.parse_recipient(text, where="recipients")


def test_identity_or_key_tells_the_two_apart(tmp_path: Path) -> None:
    """--identity accepts an X25519 identity or a symmetric key file, and explains anything else."""
    keys.write_identity(tmp_path / "id")
    keys.write_key_file(tmp_path / "k")
    (tmp_path / "junk").write_text("hello\n")
    assert isinstance(keys.load_identity_or_key(tmp_path / "id"), keys.Identity)
    assert isinstance(keys.load_identity_or_key(tmp_path / "k"), bytes)
    with pytest.raises(pgvault.KeyFileError, match="neither an X25519 identity"):
        keys.load_identity_or_key(tmp_path / "junk")
    with pytest.raises(pgvault.KeyFileError, match="not an X25519 identity"):
        keys.load_identity(tmp_path / "k")


def test_cli_keygen_symmetric(tmp_path: Path) -> None:
    """pgvault keygen --out writes a 0600 key file, prints its key id, and refuses to overwrite."""
    path = tmp_path / "backup.key"
    first = pgvault_cli("keygen", "--out", path)
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kid = keys.key_id(keys.load_key_file(path))
    assert first.stdout.strip() == f"key id: {kid}"
    content = path.read_bytes()
    again = pgvault_cli("keygen", "--out", path)
    assert again.returncode != 0
    assert again.stderr.count("\n") == 1 and "already exists" in again.stderr
    assert path.read_bytes() == content


def test_cli_keygen_x25519(tmp_path: Path) -> None:
    """pgvault keygen --x25519 writes PATH (0600) and PATH.pub and prints the public key and id."""
    result = pgvault_cli("keygen", "--x25519", "--out", tmp_path / "id")
    assert result.returncode == 0, result.stderr
    identity = keys.load_identity(tmp_path / "id")
    assert stat.S_IMODE((tmp_path / "id").stat().st_mode) == 0o600
    assert (tmp_path / "id.pub").read_text().strip() == str(identity.recipient)
    assert result.stdout.splitlines() == [
        f"public key: {identity.recipient}",
        f"key id: {identity.key_id}",
    ]
    secret = base64.b64encode(identity.private).decode()
    assert secret not in result.stdout + result.stderr
