"""The healthchecks notifier against a real local HTTP server speaking the ping API: start,
success and failure pings of one run share its run id, for a self-hosted URL too."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from pytest_httpserver import HTTPServer

import pgvault
from pgvault.notify.healthchecks import run_uuid

Make = Callable[..., pgvault.PipelineConfig]
CHECK = "/ping/5f1a7c0e-0000-4000-8000-00000000abcd"


def test_start_and_success_pings_share_the_run_id(
    httpserver: HTTPServer, notify_config: Make
) -> None:
    """A run pings <url>/start then <url>, both with the run's UUID as rid; the body names it."""
    httpserver.expect_request(f"{CHECK}/start", method="POST").respond_with_data("OK")
    httpserver.expect_request(CHECK, method="POST").respond_with_data("OK")
    config = notify_config(
        f'[[notify]]\ntype = "healthchecks"\nurl = "{httpserver.url_for(CHECK)}/"\n'
    )
    manifest = pgvault.run(config)
    (start, _), (success, _) = httpserver.log
    assert start.path == f"{CHECK}/start" and success.path == CHECK
    rid = run_uuid(manifest.backup_id)
    assert start.args["rid"] == success.args["rid"] == rid
    assert uuid.UUID(rid).version == 5  # the API wants a UUID; a backup id is not one
    body = success.get_data(as_text=True)
    assert f"backup: {manifest.backup_id}" in body and "stored: " in body


def test_a_failed_run_pings_fail_with_the_error(
    httpserver: HTTPServer, notify_config: Make
) -> None:
    """A failing source pings /start, then /fail carrying the error in the body."""
    httpserver.expect_request(f"{CHECK}/start", method="POST").respond_with_data("OK")
    httpserver.expect_request(f"{CHECK}/fail", method="POST").respond_with_data("OK")
    config = notify_config(
        f'[[notify]]\ntype = "healthchecks"\nurl = "{httpserver.url_for(CHECK)}"\n', broken=True
    )
    with pytest.raises(pgvault.SourceError):
        pgvault.run(config)
    paths = [req.path for req, _ in httpserver.log]
    assert paths == [f"{CHECK}/start", f"{CHECK}/fail"]
    fail = httpserver.log[1][0]
    assert fail.args["rid"] == httpserver.log[0][0].args["rid"]
    assert "is not a folder" in fail.get_data(as_text=True)


def test_a_failed_check_can_ping_fail(httpserver: HTTPServer, notify_config: Make) -> None:
    """With events = ["check_failed"], a CRITICAL check pings /fail (no run id: it is not a run)."""
    httpserver.expect_request(f"{CHECK}/fail", method="POST").respond_with_data("OK")
    config = notify_config(
        f'[[notify]]\ntype = "healthchecks"\nurl = "{httpserver.url_for(CHECK)}"\n'
        'events = ["check_failed"]\n'
    )
    assert pgvault.check(config).status is pgvault.Status.CRITICAL
    [(request, _)] = httpserver.log
    assert request.path == f"{CHECK}/fail" and "rid" not in request.args
    assert "CRITICAL: no complete backup" in request.get_data(as_text=True)
