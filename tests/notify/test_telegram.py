"""The telegram notifier against a real local HTTP server speaking the Bot API's sendMessage;
the bot token, part of the URL, never reaches a log line."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from pytest_httpserver import HTTPServer

import pgvault

Make = Callable[..., pgvault.PipelineConfig]
TOKEN = "123456:AAH-secret-bot-token"


def pgvault_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pgvault"))


def test_a_failure_is_sent_to_the_chat(
    httpserver: HTTPServer, notify_config: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed backup becomes one sendMessage to the chat, with the error in the text."""
    monkeypatch.setenv("TG_TOKEN", TOKEN)
    httpserver.expect_request(f"/bot{TOKEN}/sendMessage", method="POST").respond_with_json(
        {"ok": True, "result": {"message_id": 1}}
    )
    config = notify_config(
        '[[notify]]\ntype = "telegram"\nbot_token_env = "TG_TOKEN"\nchat_id = -1001234\n'
        f'api_url = "{httpserver.url_for("/")}"\n',
        broken=True,
    )
    with pytest.raises(pgvault.SourceError):
        pgvault.run(config)
    [(request, _)] = httpserver.log
    body = json.loads(request.get_data())
    assert body["chat_id"] == -1001234
    assert body["text"].startswith("pgvault: backup of test FAILED: ")
    assert "host: " in body["text"]


def test_a_refusal_is_logged_without_the_token(
    httpserver: HTTPServer, notify_config: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """The Bot API's refusal is logged with its description; the token is masked everywhere."""
    httpserver.expect_request(f"/bot{TOKEN}/sendMessage", method="POST").respond_with_json(
        {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, status=400
    )
    config = notify_config(
        f'[[notify]]\ntype = "telegram"\nbot_token = "{TOKEN}"\nchat_id = "@ops"\n'
        f'api_url = "{httpserver.url_for("/")}"\nevents = ["backup_succeeded"]\nretries = 0\n'
    )
    pgvault.run(config)
    logged = pgvault_log(caplog)
    assert "notify telegram chat @ops: gave up on backup_succeeded after 1 attempt(s)" in logged
    assert "chat not found" in logged
    assert TOKEN not in logged and TOKEN not in repr(config)
