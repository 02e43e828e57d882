"""Real storage servers on loopback, for testing sinks: S3 (moto), GCS (an emulator), SFTP.

Each class starts a real server speaking the real protocol on a free 127.0.0.1 port (in this
process; the SFTP server in a child process of its own) and stops it on :meth:`stop`; a stopped
server can be started again on the same port with its content kept (moto and the SFTP folder
keep state), which is how fault tests make a server vanish mid-upload and come back.
:class:`FlakyProxy` sits in front of an HTTP server and answers chosen errors for a while,
to prove retries.

Both emulators are taught one thing the real services do and they do not: conditional creates
are atomic. moto checks ``If-None-Match: *`` and then writes, in two steps that concurrent requests
can interleave; the GCS emulator ignores ``ifGenerationMatch`` altogether. S3 and GCS refuse such a
write atomically, and pgvault's WAL archive relies on it, so :func:`atomic_conditional_writes`
makes the emulators refuse it the same way (a lock around moto's check-and-write; the
precondition, checked under a lock, for the emulator's resumable uploads).

The servers need the ``test`` extra (``moto[server]``, ``gcp-storage-emulator``, ``asyncssh``);
when one is missing, starting it raises :class:`ServerUnavailableError` naming what to install.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pgvault.testing.postgres import free_port

ACCESS_KEY = "pgvault-test-key"
"""Credentials the S3 test server accepts (moto accepts any); handy to check they never leak."""
SECRET_KEY = "pgvault-test-secret-do-not-log"  # noqa: S105 - a throwaway test credential


class ServerUnavailableError(RuntimeError):
    """A test server cannot start: its package is missing or it failed to listen."""


def _wait_http(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback test URL
                return
        except OSError as exc:
            # Any HTTP answer, even an error status, means the server listens.
            if hasattr(exc, "code"):
                return
            if time.monotonic() > deadline:
                raise ServerUnavailableError(f"server at {url} did not answer: {exc}") from exc
            time.sleep(0.05)


_CONDITIONAL_LOCK = threading.Lock()
_PATCHED: set[str] = set()


def atomic_conditional_writes(emulator: str) -> None:
    """Make ``"moto"`` or ``"gcs-emulator"`` (in this process) refuse conditional creates
    atomically, as S3 and GCS do (see the module doc). Idempotent."""
    if emulator in _PATCHED:
        return
    if emulator == "moto":
        from moto.s3.responses import S3Response

        def serialised(method: Any) -> Any:
            def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                headers = getattr(self, "headers", None) or {}
                if headers.get("If-None-Match") != "*":
                    return method(self, *args, **kwargs)
                with _CONDITIONAL_LOCK:
                    return method(self, *args, **kwargs)

            return wrapper

        S3Response.put_object = serialised(S3Response.put_object)  # type: ignore[method-assign]
        S3Response._key_response_post = serialised(  # type: ignore[method-assign]
            S3Response._key_response_post
        )
    elif emulator == "gcs-emulator":
        from http import HTTPStatus
        from urllib.parse import parse_qs, urlparse

        from gcp_storage_emulator import server as emulator_server
        from gcp_storage_emulator.exceptions import NotFound
        from gcp_storage_emulator.handlers import objects

        current = threading.local()
        handle = emulator_server.Router.handle

        def routed(self: Any, method: Any) -> Any:
            current.query = parse_qs(urlparse(self._request_handler.path).query)
            try:
                return handle(self, method)
            finally:
                current.query = None

        finalize = objects._finalize_resumable_object

        def finalize_if(response: Any, storage: Any, obj: Any, data: Any, upload_id: Any) -> Any:
            # The session URL keeps the query of the request that opened it, as on GCS.
            wanted = (getattr(current, "query", None) or {}).get("ifGenerationMatch")
            if wanted != ["0"]:
                return finalize(response, storage, obj, data, upload_id)
            with _CONDITIONAL_LOCK:
                try:
                    storage.get_file_obj(obj["bucket"], obj["name"])
                except NotFound:
                    return finalize(response, storage, obj, data, upload_id)
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json(
                    {
                        "error": {
                            "code": 412,
                            "message": "At least one of the pre-conditions you specified "
                            "did not hold.",
                        }
                    }
                )
                return None

        emulator_server.Router.handle = routed
        objects._finalize_resumable_object = finalize_if
    else:
        raise ValueError(f"unknown emulator {emulator!r}")
    _PATCHED.add(emulator)


class S3Server:
    """moto's standalone S3 server (the real S3 HTTP API) on loopback."""

    def __init__(self, port: int | None = None) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise ServerUnavailableError(
                f"moto is not installed ({exc}): pip install 'moto[server]'"
            ) from exc
        atomic_conditional_writes("moto")
        self.port = port or free_port()
        self._cls = ThreadedMotoServer
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        """The server's base URL, for ``endpoint_url``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        """Listen (again) on this server's port."""
        self._server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        _wait_http(self.endpoint)
        return self

    def stop(self) -> None:
        """Stop listening; open connections are cut. Objects stay for a later start()."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self) -> Any:
        """A boto3 S3 client for this server (to create buckets and inspect objects)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def create_bucket(self, name: str, *, object_lock: bool = False) -> str:
        """Create bucket ``name`` (with Object Lock, and so versioning, when asked)."""
        kwargs: dict[str, Any] = {"Bucket": name}
        if object_lock:
            kwargs["ObjectLockEnabledForBucket"] = True
        self.client().create_bucket(**kwargs)
        return name

    def sink_options(self, bucket: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
        """``[sink]`` options for an ``s3`` sink on this server."""
        url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return {
            "type": "s3",
            "url": url,
            "endpoint_url": self.endpoint,
            "region": "us-east-1",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            **extra,
        }


class GcsServer:
    """``gcp-storage-emulator`` (the GCS JSON API) on loopback, kept in memory."""

    def __init__(self, port: int | None = None) -> None:
        # gcsfs (imported by the sink, maybe later) otherwise probes a gRPC endpoint for 60 s.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        try:
            from gcp_storage_emulator.server import create_server
        except ImportError as exc:
            raise ServerUnavailableError(
                f"gcp-storage-emulator is not installed ({exc}): pip install gcp-storage-emulator"
            ) from exc
        atomic_conditional_writes("gcs-emulator")
        self.port = port or free_port()
        self._create = create_server
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        """The server's base URL, for ``endpoint_url``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GcsServer:
        """Listen on this server's port (content does not survive a stop)."""
        self._server = self._create("127.0.0.1", self.port, in_memory=True)
        self._server.start()
        _wait_http(f"{self.endpoint}/storage/v1/b")
        return self

    def stop(self) -> None:
        """Stop the emulator."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name``."""
        request = urllib.request.Request(  # noqa: S310 - loopback test URL
            f"{self.endpoint}/storage/v1/b?project=test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            return name

    def sink_options(self, bucket: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
        """``[sink]`` options for a ``gcs`` sink on this server."""
        url = f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
        return {
            "type": "gcs",
            "url": url,
            "endpoint_url": self.endpoint,
            "anonymous": True,
            **extra,
        }


class SftpServer:
    """An SSH server with SFTP (asyncssh) on loopback, serving a temporary folder as ``/``.

    It has its own host key (written to :attr:`known_hosts`) and accepts one client key
    (:attr:`client_key`, any user name); password and keyboard-interactive logins are off.
    The server runs in a child process (:mod:`pgvault.testing.sftp_process`), so :meth:`stop`
    cuts every connection the way a crashed host does.
    """

    def __init__(self, port: int | None = None, base: Path | None = None) -> None:
        try:
            import asyncssh
        except ImportError as exc:
            raise ServerUnavailableError(
                f"asyncssh is not installed ({exc}): pip install asyncssh"
            ) from exc
        self.port = port or free_port()
        self._owns_base = base is None  # a folder we made is ours to remove on close()
        self.base = base or Path(tempfile.mkdtemp(prefix="pgvault-sftp-"))
        self.root = self.base / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        keys = self.base / "keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        host = asyncssh.generate_private_key("ssh-ed25519")
        self._host_key = keys / "ssh_host_ed25519_key"
        host.write_private_key(str(self._host_key))
        self._host_key.chmod(0o600)
        client = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = keys / "id_ed25519"
        """The private key the server accepts."""
        client.write_private_key(str(self.client_key))
        self.client_key.chmod(0o600)
        self._authorized_keys = keys / "authorized_keys"
        self._authorized_keys.write_bytes(client.export_public_key())
        self.known_hosts = keys / "known_hosts"
        """A known_hosts file that trusts this server's host key on its port."""
        self.known_hosts.write_text(
            f"[127.0.0.1]:{self.port} {host.export_public_key().decode().strip()}\n"
        )
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> SftpServer:
        """Listen (again) on this server's port; return once it accepts connections."""
        if self._process is not None:
            return self
        command = [
            sys.executable,
            "-m",
            "pgvault.testing.sftp_process",
            f"--port={self.port}",
            f"--root={self.root}",
            f"--host-key={self._host_key}",
            f"--authorized-keys={self._authorized_keys}",
        ]
        # stderr goes to a file, not a pipe: nobody drains a pipe while the server runs, and a
        # chatty server must not block on a full one.
        log = (self.base / "server.log").open("a")
        with log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        assert process.stdout is not None
        ready = threading.Event()

        def wait_ready() -> None:
            if process.stdout is not None and process.stdout.readline().strip() == "ready":
                ready.set()

        waiter = threading.Thread(target=wait_ready, daemon=True)
        waiter.start()
        waiter.join(timeout)
        if not ready.is_set():
            process.kill()
            process.wait()
            process.stdout.close()
            tail = (self.base / "server.log").read_text().strip().splitlines()[-1:]
            raise ServerUnavailableError(
                f"SFTP server on port {self.port} did not start: {' '.join(tail) or 'no output'}"
            )
        self._process = process
        return self

    def stop(self) -> None:
        """Kill the server, cutting every open connection. Files stay for a later start()."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def close(self) -> None:
        """Stop the server for good and remove the folder it made."""
        self.stop()
        if self._owns_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def url(self, path: str = "/", user: str = "backup") -> str:
        """``sftp://`` URL of ``path`` (relative to the served folder)."""
        return f"sftp://{user}@127.0.0.1:{self.port}/{path.lstrip('/')}"

    def sink_options(self, path: str = "/", **extra: Any) -> dict[str, Any]:
        """``[sink]`` options for an ``sftp`` sink on this server."""
        return {
            "type": "sftp",
            "url": self.url(path),
            "key_file": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            **extra,
        }


class FlakyProxy:
    """An HTTP reverse proxy in front of ``upstream`` that can answer errors instead.

    ``fail(n, status)`` makes the next ``n`` requests get ``status`` (with an S3-style XML error
    body) without reaching the upstream; :attr:`requests` counts every request seen and
    :attr:`failed` those answered with an error. Request bodies are read in full before
    answering, as a real front end does. ``die_after(n)`` makes the server die once ``n`` bytes
    of request bodies have arrived: the connection receiving byte ``n`` is reset in the middle of
    its body, a later request on an open connection is reset too, and a new connection is closed
    as soon as it is accepted, as by a server going down. A request whose client vanished
    mid-body is dropped. :meth:`slow` holds requests for a while, :meth:`heal` ends every planned
    fault.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://").rstrip("/")
        self.requests = 0
        self.failed = 0
        self.received = 0
        """Bytes of request bodies read so far."""
        self.dead = threading.Event()
        """Set once the server died (see :meth:`die_after`)."""
        self._die_at: int | None = None
        self._lock = threading.Lock()
        self._plan: list[tuple[int, str] | None] = []
        self._delay = 0.0
        self.held = 0
        """Requests :meth:`slow` has held so far."""
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle(self) -> None:
                if proxy.dead.is_set():
                    # A dying server's backlog: connections are accepted, then closed unread.
                    self.close_connection = True
                    return
                super().handle()

            def _reset(self) -> None:
                # SO_LINGER 0: close with a TCP RST, what the peer of a crashed process sees.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()

            def _read_body(self, length: int) -> bytes | None:
                """The request body, or None when the server died while reading it."""
                parts: list[bytes] = []
                left = length
                while left:
                    chunk = self.rfile.read(min(left, 64 * 1024))
                    if not chunk:
                        break
                    left -= len(chunk)
                    parts.append(chunk)
                    with proxy._lock:
                        proxy.received += len(chunk)
                        if proxy._die_at is not None and proxy.received >= proxy._die_at:
                            proxy.dead.set()
                    if proxy.dead.is_set():
                        return None
                return b"".join(parts)

            def _handle(self) -> None:
                if proxy.dead.is_set():
                    self._reset()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                with proxy._lock:
                    delay = proxy._delay if length else 0.0
                    if delay:
                        proxy.held += 1
                if delay:
                    time.sleep(delay)  # before the body: a client killed now sent nothing whole
                body = self._read_body(length) if length else b""
                if body is None:
                    self._reset()
                    return
                if len(body) < length:
                    self.close_connection = True
                    return  # the client went away mid-request: forward nothing, as S3 would
                with proxy._lock:
                    proxy.requests += 1
                    planned = proxy._plan.pop(0) if proxy._plan else None
                    if planned:
                        proxy.failed += 1
                if planned is not None:
                    status, code = planned
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>injected by FlakyProxy</Message></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in ("connection", "transfer-encoding")
                    }
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in (
                        "connection",
                        "transfer-encoding",
                        "content-length",
                        "server",
                        "date",
                    ):
                        self.send_header(k, v)
                # A HEAD answer has no body but announces the object's length: pass it on.
                announced = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", announced or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle  # noqa: N815

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pgvault-flaky-proxy", daemon=True
        )
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """The proxy's base URL, to use instead of the upstream's."""
        return f"http://127.0.0.1:{self.port}"

    def die_after(self, received: int) -> None:
        """Die once ``received`` bytes of request bodies have arrived (in the middle of one)."""
        with self._lock:
            self._die_at = received

    def fail(
        self, count: int, status: int = 503, code: str = "SlowDown", *, after: int = 0
    ) -> None:
        """Answer ``count`` requests with ``status`` and error ``code``, after letting the next
        ``after`` through."""
        with self._lock:
            self._plan.extend([None] * after)
            self._plan.extend([(status, code)] * count)

    def slow(self, seconds: float) -> None:
        """Hold every request that carries a body (uploads) ``seconds`` before reading it (a
        slow link: kill the client meanwhile and the upstream never sees its request)."""
        with self._lock:
            self._delay = seconds

    def heal(self) -> None:
        """Forget planned failures and delays: pass everything through again."""
        with self._lock:
            self._plan.clear()
            self._delay = 0.0

    def stop(self) -> None:
        """Stop the proxy."""
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def running(server: Any) -> Iterator[Any]:
    """Start ``server`` for the ``with`` block and stop it afterwards."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def unavailable(reason: str) -> None:
    """Fail under CI, skip elsewhere, always saying why."""
    import pytest  # only when a test asks: the servers also run outside pytest

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"required test server unavailable: {reason}", pytrace=False)
    pytest.skip(f"required test server unavailable: {reason}")
