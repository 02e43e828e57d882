"""The azure sink passes pgvault's sink conformance suite against Azurite, and is found by name."""

from __future__ import annotations

import pytest
from pgvault_azure import AzureBlobSink

from pgvault.config import structure
from pgvault.plugin.components import load_component
from pgvault.sinks.api import Sink
from pgvault.testing.conformance import SinkConformanceTests

from .conftest import KEY


def test_found_through_the_entry_point() -> None:
    """pgvault finds the sink by its type name, through the pgvault.sinks entry point only."""
    assert load_component("sink", "azure", key="sink.type") is AzureBlobSink


class TestAzureBlobSink(SinkConformanceTests):
    """The azure sink against Azurite."""

    @pytest.fixture
    def sink(self, azurite: str, container: str, tmp_path) -> Sink:  # type: ignore[no-untyped-def]
        options = {
            "url": f"az://{container}/vaults",
            "connection_string": azurite,
            "part_size_mib": 5,
            "retry_attempts": 3,
            "retry_max_seconds": 10.0,
        }
        sink = structure(AzureBlobSink, options, where="<test>", key="sink", base=tmp_path)
        assert isinstance(sink, AzureBlobSink)
        return sink

    @pytest.fixture
    def sink_secrets(self) -> list[str]:
        return [KEY]
