"""Notifier test helpers: pipeline configs with [[notify]] tables, real local SMTP servers, and a
throwaway certificate authority for TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import pgvault

ConfigMaker = Callable[..., Path]

SMTP_USER = "backup"
SMTP_PASSWORD = "pw-Zq8!never-logged"


@pytest.fixture
def notify_config(
    make_config: ConfigMaker, tmp_path: Path
) -> Callable[..., pgvault.PipelineConfig]:
    """A files-source pipeline with the given ``[[notify]]`` TOML; ``broken=True`` makes its source
    fail (a folder that does not exist), after the run has started."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "file.txt").write_text("payload\n")

    def make(notify: str, *, broken: bool = False) -> pgvault.PipelineConfig:
        paths = [str(tmp_path / "missing")] if broken else [str(data)]
        return pgvault.load_config(make_config({"type": "files", "paths": paths}, extra=notify))

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.frozen
class TLSFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pgvault test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@attrs.define
class Mailbox:
    """What a local SMTP server received."""

    port: int
    messages: list[dict[str, Any]] = attrs.field(factory=list)
    logins: list[tuple[str, str]] = attrs.field(factory=list)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.content
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "content": content.decode() if isinstance(content, bytes) else str(content),
            }
        )
        return "250 OK"

    def authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == (SMTP_USER, SMTP_PASSWORD), handled=False)


@pytest.fixture
def smtp_server(tls_files: TLSFiles) -> Iterator[Callable[..., Mailbox]]:
    """Start real aiosmtpd servers: ``smtp_server("none" | "starttls" | "ssl")``."""
    controllers: list[Controller] = []

    def start(security: str) -> Mailbox:
        box = Mailbox(free_port())
        kwargs: dict[str, Any] = {}
        if security == "starttls":
            kwargs = {
                "tls_context": tls_files.server_context(),
                "require_starttls": True,
                "authenticator": box.authenticate,
                "auth_require_tls": True,
            }
        elif security == "ssl":
            kwargs = {
                "ssl_context": tls_files.server_context(),
                "authenticator": box.authenticate,
                "auth_require_tls": False,
            }
        controller = Controller(box, hostname="127.0.0.1", port=box.port, **kwargs)
        controller.start()
        controllers.append(controller)
        return box

    yield start
    for controller in controllers:
        controller.stop()
