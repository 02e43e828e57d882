"""Fixtures of the sink tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def retry_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog, also attached to the ``pgvault`` logger (which may not propagate to the root
    once a config's [logging] table was applied in this process)."""
    logger = logging.getLogger("pgvault")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
