"""Every sink pgvault ships passes the shipped conformance suite against a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgvault.sinks.api import Sink
from pgvault.sinks.local import LocalSink
from pgvault.testing.conformance import SinkConformanceTests
from pgvault.testing.servers import SECRET_KEY


class TestLocalSink(SinkConformanceTests):
    """The local sink, in a temporary folder."""

    @pytest.fixture
    def sink(self, tmp_path: Path) -> Sink:
        return LocalSink(tmp_path / "vault")


class TestS3Sink(SinkConformanceTests):
    """The s3 sink against moto's S3 server."""

    @pytest.fixture
    def sink(self, s3_sink: Sink) -> Sink:
        return s3_sink

    @pytest.fixture
    def sink_secrets(self) -> list[str]:
        return [SECRET_KEY]


class TestGcsSink(SinkConformanceTests):
    """The gcs sink against the GCS emulator."""

    @pytest.fixture
    def sink(self, gcs_sink: Sink) -> Sink:
        return gcs_sink


class TestSftpSink(SinkConformanceTests):
    """The sftp sink against an SSH server."""

    @pytest.fixture
    def sink(self, sftp_sink: Sink) -> Sink:
        return sftp_sink
