"""pytest fixtures for storage servers and sinks on them (re-exported by ``fixtures``).

Servers are started once per session on free loopback ports; each test gets a fresh bucket or
folder, so tests never see each other's objects:

* ``s3_server``, ``gcs_server``, ``sftp_server`` — the running servers
  (:mod:`pgvault.testing.servers`);
* ``s3_sink_options``, ``gcs_sink_options``, ``sftp_sink_options`` — ``[sink]`` options for a
  fresh bucket/folder, ready for a pipeline config;
* ``s3_sink``, ``gcs_sink``, ``sftp_sink`` — sink objects on them, with small parts (5 MiB) and a
  short retry budget so fault tests stay quick.

A server that cannot start fails the test under CI (``CI=true``) and skips it elsewhere.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from pgvault.config import structure
from pgvault.sinks.api import Sink
from pgvault.testing.servers import (
    GcsServer,
    S3Server,
    ServerUnavailableError,
    SftpServer,
    unavailable,
)

ServerT = TypeVar("ServerT", S3Server, GcsServer, SftpServer)

_counter = itertools.count(1)

TEST_SINK_OPTIONS: dict[str, Any] = {
    "part_size_mib": 5,
    "retry_attempts": 3,
    "retry_max_seconds": 10.0,
    "timeout": 20.0,
}
"""Options every test sink gets: multipart from 5 MiB, quick to give up."""


def _unique(kind: str) -> str:
    return f"pgvault-{kind}-{os.getpid()}-{next(_counter)}"


def _unavailable(reason: str) -> None:
    unavailable(reason)


def _serve(cls: type[ServerT], shut: Callable[[ServerT], None]) -> Iterator[ServerT]:
    """Start a server for a fixture, failing loudly under CI if it cannot start."""
    try:
        server = cls().start()
    except ServerUnavailableError as exc:
        _unavailable(str(exc))
        raise
    yield server
    shut(server)


def make_sink(options: dict[str, Any]) -> Sink:
    """A sink from ``[sink]`` options (with ``type``), validated exactly as a config file is."""
    from pathlib import Path

    from pgvault.plugin.components import load_component

    cls = load_component("sink", options["type"], key="sink.type")
    rest = {k: v for k, v in options.items() if k != "type"}
    sink = structure(cls, rest, where="<test>", key="sink", base=Path.cwd())
    assert isinstance(sink, Sink)
    return sink


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on loopback for the whole session."""
    yield from _serve(S3Server, lambda server: server.stop())


@pytest.fixture
def s3_sink_options(s3_server: S3Server) -> dict[str, Any]:
    """``[sink]`` options for an ``s3`` sink in a fresh bucket (under a prefix)."""
    bucket = s3_server.create_bucket(_unique("s3"))
    return s3_server.sink_options(bucket, "vaults", **TEST_SINK_OPTIONS)


@pytest.fixture
def s3_sink(s3_sink_options: dict[str, Any]) -> Sink:
    """An ``s3`` sink in a fresh bucket of the session's S3 server."""
    return make_sink(s3_sink_options)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GcsServer]:
    """The GCS emulator on loopback for the whole session."""
    yield from _serve(GcsServer, lambda server: server.stop())


@pytest.fixture
def gcs_sink_options(gcs_server: GcsServer) -> dict[str, Any]:
    """``[sink]`` options for a ``gcs`` sink in a fresh bucket (under a prefix)."""
    bucket = gcs_server.create_bucket(_unique("gcs"))
    return gcs_server.sink_options(bucket, "vaults", **TEST_SINK_OPTIONS)


@pytest.fixture
def gcs_sink(gcs_sink_options: dict[str, Any]) -> Sink:
    """A ``gcs`` sink in a fresh bucket of the session's GCS emulator."""
    return make_sink(gcs_sink_options)


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SftpServer]:
    """An SSH/SFTP server on loopback for the whole session."""
    yield from _serve(SftpServer, lambda server: server.close())


@pytest.fixture
def sftp_sink_options(sftp_server: SftpServer) -> dict[str, Any]:
    """``[sink]`` options for an ``sftp`` sink in a fresh folder of the server."""
    return sftp_server.sink_options(f"/{_unique('sftp')}/vaults", **TEST_SINK_OPTIONS)


@pytest.fixture
def sftp_sink(sftp_sink_options: dict[str, Any]) -> Sink:
    """An ``sftp`` sink in a fresh folder of the session's SFTP server."""
    return make_sink(sftp_sink_options)
