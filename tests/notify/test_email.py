"""The email notifier against real local SMTP servers (aiosmtpd): plain relay, STARTTLS with
login, implicit TLS; the password comes from the environment and never reaches a log."""

from __future__ import annotations

import email
from collections.abc import Callable
from email.message import Message

import pytest

import pgvault
from tests.notify.conftest import SMTP_PASSWORD, SMTP_USER, Mailbox, TLSFiles

Make = Callable[..., pgvault.PipelineConfig]


def pgvault_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pgvault"))


def parse(box: Mailbox) -> Message:
    [received] = box.messages
    return email.message_from_string(received["content"])


def table(box: Mailbox, security: str, extra: str = "") -> str:
    return (
        f'[[notify]]\ntype = "email"\nhost = "127.0.0.1"\nport = {box.port}\n'
        f'security = "{security}"\nsender = "pgvault@db1.example"\n'
        'to = ["ops@example.com", "dba@example.com"]\n' + extra
    )


def test_plain_relay_mails_a_failure(
    smtp_server: Callable[..., Mailbox], notify_config: Make
) -> None:
    """A local relay (security none) gets one mail per failure: subject, recipients, body."""
    box = smtp_server("none")
    with pytest.raises(pgvault.SourceError):
        pgvault.run(notify_config(table(box, "none"), broken=True))
    mail = parse(box)
    assert box.messages[0]["to"] == ["ops@example.com", "dba@example.com"]
    assert str(mail["Subject"]).startswith("[pgvault] backup of test FAILED: ")
    assert mail["X-Pgvault-Event"] == "backup_failed"
    assert mail["X-Pgvault-Run-Id"]
    assert "is not a folder" in str(mail.get_payload())


def test_starttls_with_login_from_the_environment(
    smtp_server: Callable[..., Mailbox],
    notify_config: Make,
    tls_files: TLSFiles,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """STARTTLS verifies the server against ca_file, logs in with password_env, and sends."""
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    box = smtp_server("starttls")
    config = notify_config(
        table(
            box,
            "starttls",
            f'username = "{SMTP_USER}"\npassword_env = "SMTP_PASSWORD"\n'
            f'ca_file = "{tls_files.ca}"\n'
            'events = ["backup_succeeded"]\n',
        )
    )
    manifest = pgvault.run(config)
    assert box.logins == [(SMTP_USER, SMTP_PASSWORD)]
    assert manifest.backup_id in str(parse(box)["Subject"])
    assert SMTP_PASSWORD not in pgvault_log(caplog) and SMTP_PASSWORD not in repr(config)


def test_implicit_tls(
    smtp_server: Callable[..., Mailbox],
    notify_config: Make,
    tls_files: TLSFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """security = "ssl" speaks TLS from the first byte (port 465 style)."""
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    box = smtp_server("ssl")
    config = notify_config(
        table(
            box,
            "ssl",
            f'username = "{SMTP_USER}"\npassword = "${{SMTP_PASSWORD}}"\n'
            f'ca_file = "{tls_files.ca}"\n'
            'events = ["backup_succeeded"]\n',
        )
    )
    pgvault.run(config)
    assert box.logins == [(SMTP_USER, SMTP_PASSWORD)]
    assert len(box.messages) == 1


def test_an_untrusted_certificate_is_logged_not_raised(
    smtp_server: Callable[..., Mailbox],
    notify_config: Make,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the server's CA the TLS handshake fails before any login: logged, backup fine."""
    box = smtp_server("starttls")
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    pgvault.run(
        notify_config(
            table(
                box,
                "starttls",
                f'username = "{SMTP_USER}"\npassword_env = "SMTP_PASSWORD"\n'
                'events = ["backup_succeeded"]\nretries = 0\n',
            )
        )
    )
    logged = pgvault_log(caplog)
    assert "TLS error" in logged and "CERTIFICATE_VERIFY_FAILED" in logged
    assert box.logins == [] and box.messages == []


def test_a_wrong_password_is_logged_without_it(
    smtp_server: Callable[..., Mailbox],
    notify_config: Make,
    tls_files: TLSFiles,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused login is logged with the user and code, never the password; no mail is sent."""
    box = smtp_server("starttls")
    monkeypatch.setenv("SMTP_PASSWORD", "wrong-password-123")
    pgvault.run(
        notify_config(
            table(
                box,
                "starttls",
                f'username = "{SMTP_USER}"\npassword_env = "SMTP_PASSWORD"\n'
                f'ca_file = "{tls_files.ca}"\n'
                'events = ["backup_succeeded"]\nretries = 0\n',
            )
        )
    )
    logged = pgvault_log(caplog)
    assert f"SMTP login as '{SMTP_USER}' refused (535)" in logged
    assert "wrong-password-123" not in logged
    assert box.messages == []


def test_starttls_is_required_when_asked_for(
    smtp_server: Callable[..., Mailbox],
    notify_config: Make,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server without STARTTLS is refused rather than sent a password in clear."""
    box = smtp_server("none")
    config = notify_config(table(box, "starttls", 'events = ["backup_succeeded"]\nretries = 0\n'))
    pgvault.run(config)
    assert "does not offer STARTTLS" in pgvault_log(caplog)
    assert box.messages == []


def test_login_needs_a_password_option(notify_config: Make) -> None:
    """username without password_env is a config error naming the table."""
    with pytest.raises(pgvault.ConfigError, match=r"notify\[0\]: invalid value: email: username"):
        notify_config(
            '[[notify]]\ntype = "email"\nhost = "h"\nsender = "a@b"\nto = ["c@d"]\nusername = "u"\n'
        )
