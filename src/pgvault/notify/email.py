"""The ``email`` notifier: one mail per event over SMTP, with STARTTLS or implicit TLS.

``security = "starttls"`` (port 587 by default) upgrades a plain connection and refuses to go on
if the server cannot; ``"ssl"`` (port 465) speaks TLS from the first byte; ``"none"`` (port 25) is
for a local relay only. Certificates are verified against the system's CAs or ``ca_file``. The
password comes from ``password_env`` (or ``password = "${VAR}"``) and is never logged.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import ClassVar, Literal

import attrs

from pgvault.notify.api import Event, Notifier, NotifierPlugin, NotifyError, resolve_secret

_DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


def _non_empty(
    instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    if not value:
        raise ValueError("email: 'to' must list at least one address")


@attrs.frozen
class Email(Notifier):
    """Mail each event to ``to`` through the SMTP server ``host``."""

    type_name: ClassVar[str] = "email"

    host: str
    """SMTP server."""
    sender: str
    """The From address."""
    to: tuple[str, ...] = attrs.field(converter=tuple, validator=_non_empty)
    """Recipients."""
    port: int | None = None
    """Default: 587 for starttls, 465 for ssl, 25 for none."""
    security: Literal["starttls", "ssl", "none"] = "starttls"
    """How the connection is protected."""
    username: str | None = None
    """Log in as this user (with ``password``/``password_env``); no login when unset."""
    password: str | None = attrs.field(default=None, repr=False)
    """The password (prefer ``password_env``)."""
    password_env: str | None = None
    """Name of the environment variable holding the password."""
    ca_file: Path | None = None
    """Trust this CA bundle instead of the system's (a private mail server)."""
    subject_prefix: str = "[pgvault]"
    """Put before each subject."""

    def __attrs_post_init__(self) -> None:
        if self.username and not (self.password or self.password_env):
            raise ValueError("email: username is set: also set password_env (or password)")
        if (self.password or self.password_env) and not self.username:
            raise ValueError("email: a password is set: also set username")

    @property
    def effective_port(self) -> int:
        """The port connected to."""
        return self.port or _DEFAULT_PORTS[self.security]

    def describe(self) -> str:
        return f"email via {self.host}:{self.effective_port} to {', '.join(self.to)}"

    def secrets(self) -> list[str]:
        if not self.username:
            return []
        try:
            return [resolve_secret(self.password, self.password_env, "SMTP password")]
        except Exception:
            return []

    def message(self, event: Event) -> EmailMessage:
        """The mail sent for ``event``."""
        msg = EmailMessage()
        subject = event.title.removeprefix("pgvault: ")
        msg["Subject"] = f"{self.subject_prefix} {subject}".strip()
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=event.host or None)
        msg["X-Pgvault-Event"] = event.name
        if event.run_id:
            msg["X-Pgvault-Run-Id"] = event.run_id
        msg.set_content(event.body() + "\n")
        html_part = None
        if event.html:
            msg.add_alternative(event.html, subtype="html")
            html_part = msg.get_body(("html",))
        for item in event.attachments:
            maintype, _, subtype = item.content_type.partition("/")
            if item.content_id and isinstance(html_part, EmailMessage):
                # Inline in the HTML part (multipart/related); clients that do not show SVG
                # inline still offer it as the named file.
                html_part.add_related(
                    item.data,
                    maintype,
                    subtype,
                    cid=f"<{item.content_id}>",
                    filename=item.filename,
                    disposition="inline",
                )
            else:
                msg.add_attachment(item.data, maintype, subtype, filename=item.filename)
        return msg

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def send(self, event: Event) -> None:
        password = (
            resolve_secret(self.password, self.password_env, "SMTP password")
            if self.username
            else None
        )
        smtp: smtplib.SMTP
        try:
            if self.security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    self.host, self.effective_port, timeout=self.timeout, context=self._context()
                )
            else:
                smtp = smtplib.SMTP(self.host, self.effective_port, timeout=self.timeout)
            with smtp:
                if self.security == "starttls":
                    smtp.ehlo()
                    if not smtp.has_extn("starttls"):
                        # Sending the password in clear because a server dropped STARTTLS is
                        # exactly the downgrade this option exists to prevent.
                        raise NotifyError(
                            f'{self.host} does not offer STARTTLS (security = "starttls")'
                        )
                    smtp.starttls(context=self._context())
                    smtp.ehlo()
                if self.username and password is not None:
                    smtp.login(self.username, password)
                smtp.send_message(self.message(event))
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError(
                f"SMTP login as {self.username!r} refused ({exc.smtp_code})"
            ) from None
        except smtplib.SMTPException as exc:
            raise NotifyError(f"SMTP error: {exc}") from None
        except ssl.SSLError as exc:
            raise NotifyError(f"TLS error: {exc.reason or exc}") from None
        except OSError as exc:
            raise NotifyError(f"cannot reach {self.host}:{self.effective_port}: {exc}") from None


plugin = NotifierPlugin(Email)
"""The plugin registered as ``email`` in the ``pgvault`` entry-point group."""
