"""The apprise notifier against a real local HTTP server through apprise's json:// service: the
event's title, body and type arrive; a refused delivery is logged without the URL's token."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
from pytest_httpserver import HTTPServer

import pgvault

Make = Callable[..., pgvault.PipelineConfig]
TOKEN = "tok3n-Zr9xQwErTy"


def test_a_failed_backup_reaches_the_service(httpserver: HTTPServer, notify_config: Make) -> None:
    """A failing run posts one failure message holding the pipeline and the cause."""
    httpserver.expect_request(f"/hook/{TOKEN}", method="POST").respond_with_data("ok")
    url = f"json://127.0.0.1:{httpserver.port}/hook/{TOKEN}"
    config = notify_config(f'[[notify]]\ntype = "apprise"\nurl = "{url}"\n', broken=True)
    with pytest.raises(pgvault.SourceError):
        pgvault.run(config)
    [(request, _)] = httpserver.log
    message = json.loads(request.get_data())
    assert message["type"] == "failure"
    assert message["title"].startswith("pgvault: backup of test FAILED")
    assert "is not a folder" in message["message"]


def test_a_refused_delivery_is_logged_without_the_token(
    httpserver: HTTPServer, notify_config: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP 500 from the service: the backup still succeeds, the log says why, not the token."""
    httpserver.expect_request(f"/hook/{TOKEN}", method="POST").respond_with_data("no", status=500)
    url = f"json://127.0.0.1:{httpserver.port}/hook/{TOKEN}"
    config = notify_config(
        f'[[notify]]\ntype = "apprise"\nurl = "{url}"\nretries = 0\nevents = ["backup_succeeded"]\n'
    )
    with caplog.at_level(logging.WARNING, logger="pgvault"):
        pgvault.run(config)
    [gave_up] = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert gave_up.startswith("notify apprise json://: gave up on backup_succeeded")
    assert "apprise could not deliver" in gave_up
    assert TOKEN not in caplog.text


def test_an_unknown_url_is_a_config_error(notify_config: Make) -> None:
    """A URL no apprise service speaks is refused at load, naming the scheme, not the URL."""
    with pytest.raises(pgvault.ConfigError, match=r"notify\[0\].*schemes given: nosuch://"):
        notify_config(f'[[notify]]\ntype = "apprise"\nurl = "nosuch://{TOKEN}"\n')
