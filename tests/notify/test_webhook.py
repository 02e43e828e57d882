"""The webhook notifier against a real local HTTP server: JSON and Slack payloads, headers,
secret URLs kept out of logs, brief retries, and a failing webhook that never fails the backup."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

import pgvault
from pgvault.notify.webhook import Webhook
from tests.conftest import pgvault_cli

Make = Callable[..., pgvault.PipelineConfig]


def pgvault_log(caplog: pytest.LogCaptureFixture) -> str:
    """pgvault's own log lines (the test server logs request paths, tokens included)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pgvault"))


def posted(httpserver: HTTPServer) -> list[dict[str, object]]:
    return [json.loads(req.get_data()) for req, _ in httpserver.log]


def test_backup_events_are_posted_as_json(httpserver: HTTPServer, notify_config: Make) -> None:
    """Started and succeeded reach the URL as JSON with the run id, sizes and host."""
    httpserver.expect_request("/hook", method="POST").respond_with_json({"ok": True})
    config = notify_config(
        f'[[notify]]\ntype = "webhook"\nurl = "{httpserver.url_for("/hook")}"\n'
        'events = ["backup_started", "backup_succeeded"]\n'
    )
    manifest = pgvault.run(config)
    started, succeeded = posted(httpserver)
    assert started["event"] == "backup_started" and started["run_id"] == manifest.backup_id
    assert succeeded["event"] == "backup_succeeded" and succeeded["ok"] is True
    assert succeeded["vault"] == "test" and succeeded["run_id"] == manifest.backup_id
    fields = succeeded["fields"]
    assert isinstance(fields, dict) and fields["size"] == manifest.size
    assert str(succeeded["message"]).startswith("pgvault: backup of test succeeded")
    assert httpserver.log[0][0].headers["Content-Type"] == "application/json"


def test_failures_are_the_default_and_slack_format_is_text(
    httpserver: HTTPServer, notify_config: Make
) -> None:
    """With no events option only failures are sent; format = "slack" posts {"text": …}."""
    httpserver.expect_request("/slack", method="POST").respond_with_data("ok")
    url = httpserver.url_for("/slack")
    table = f'[[notify]]\ntype = "webhook"\nurl = "{url}"\nformat = "slack"\n'
    pgvault.run(notify_config(table))
    assert httpserver.log == []  # a success is not a default event

    with pytest.raises(pgvault.SourceError):
        pgvault.run(notify_config(table, broken=True))
    [body] = posted(httpserver)
    assert list(body) == ["text"]
    text = str(body["text"])
    assert text.startswith(":rotating_light: *pgvault: backup of test FAILED: ")
    assert "is not a folder" in text


def test_secret_url_and_headers_come_from_the_environment(
    httpserver: HTTPServer,
    notify_config: Make,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """url_env and ${VAR} headers are read at send time; the token never appears in logs or repr."""
    token = "T0KEN-abcdef123456"
    monkeypatch.setenv("HOOK_URL", httpserver.url_for(f"/services/{token}"))
    monkeypatch.setenv("HOOK_AUTH", f"Bearer {token}")
    httpserver.expect_request(f"/services/{token}", method="POST").respond_with_data("down", 503)
    config = notify_config(
        '[[notify]]\ntype = "webhook"\nurl_env = "HOOK_URL"\nheaders = { Authorization = '
        '"${HOOK_AUTH}" }\nevents = ["backup_succeeded"]\nretries = 1\nretry_delay = 0.01\n'
    )
    pgvault.run(config)
    assert len(httpserver.log) == 2  # one attempt and one retry
    assert httpserver.log[0][0].headers["Authorization"] == f"Bearer {token}"
    logged = pgvault_log(caplog)
    assert "gave up on backup_succeeded after 2 attempt(s): HTTP 503" in logged
    assert token not in logged
    assert token not in repr(config.notify[0])
    assert config.notify[0].describe() == f"webhook http://localhost:{httpserver.port}"


def test_a_dead_webhook_never_fails_the_backup_nor_the_next_notifier(
    httpserver: HTTPServer,
    notify_config: Make,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connection refused is retried, logged, and given up; the backup succeeds and the second
    notifier still delivers."""
    httpserver.expect_request("/ok", method="POST").respond_with_data("ok")
    with socket_closed() as dead_url:
        config = notify_config(
            f'[[notify]]\ntype = "webhook"\nurl = "{dead_url}"\nevents = ["backup_succeeded"]\n'
            "retries = 2\nretry_delay = 0.01\n"
            f'[[notify]]\ntype = "webhook"\nurl = "{httpserver.url_for("/ok")}"\n'
            'events = ["backup_succeeded"]\n'
        )
        manifest = pgvault.run(config)
    assert pgvault.Vault.from_config(config).manifest("latest").backup_id == manifest.backup_id
    assert caplog.text.count("not delivered (attempt") == 2
    assert "gave up on backup_succeeded after 3 attempt(s): cannot connect" in caplog.text
    [body] = posted(httpserver)
    assert body["run_id"] == manifest.backup_id


def test_config_mistakes_are_named(notify_config: Make) -> None:
    """Both url and url_env, an unknown event, an unknown type: errors naming the key."""
    with pytest.raises(
        pgvault.ConfigError,
        match=r"notify\[0\]: invalid value: webhook: set "
        "exactly one of url or url_env",
    ):
        notify_config('[[notify]]\ntype = "webhook"\nurl = "http://x"\nurl_env = "X"\n')
    with pytest.raises(
        pgvault.ConfigError,
        match=r"notify\[0\]\.events\[0\]: invalid value "
        "'backup_faild' \\(did you mean 'backup_failed'\\?\\)",
    ):
        notify_config('[[notify]]\ntype = "webhook"\nurl = "http://x"\nevents = ["backup_faild"]\n')
    with pytest.raises(
        pgvault.ConfigError,
        match=r"notify\[0\]\.type: unknown notifier type "
        "'webhok' \\(did you mean 'webhook'\\?\\); known: apprise, email, healthchecks",
    ):
        notify_config('[[notify]]\ntype = "webhok"\n')
    with pytest.raises(pgvault.ConfigError, match=r"notify\[0\]\.timeout: expected a number"):
        notify_config('[[notify]]\ntype = "webhook"\nurl = "http://x"\ntimeout = "fast"\n')


def test_events_option_selects_what_is_sent() -> None:
    """wants() follows events, else the notifier's default (failures)."""
    assert Webhook(url="http://x").wants("backup_failed")
    assert not Webhook(url="http://x").wants("backup_succeeded")
    assert Webhook(url="http://x", events=("prune_done",)).wants("prune_done")


class socket_closed:  # noqa: N801 (used as a context manager, reads like one)
    """A URL on a port nothing listens on, for the duration of the block."""

    def __enter__(self) -> str:
        from tests.notify.conftest import free_port

        return f"http://127.0.0.1:{free_port()}/hook"

    def __exit__(self, *exc: object) -> None:
        return None


def test_safety_backups_are_not_announced(httpserver: HTTPServer, notify_config: Make) -> None:
    """A restore's safety backup is not a run of the schedule: notifiers stay silent for it,
    so a healthchecks-style monitor cannot be fooled into thinking the schedule ran."""
    httpserver.expect_request("/hook", method="POST").respond_with_json({"ok": True})
    config = notify_config(
        f'[[notify]]\ntype = "webhook"\nurl = "{httpserver.url_for("/hook")}"\n'
        'events = ["backup_started", "backup_succeeded", "backup_failed"]\n'
    )
    pgvault.run(config, kind="safety", labels={"database": "app"})
    assert httpserver.log == []
    scheduled = pgvault.run(config)
    assert [body["run_id"] for body in posted(httpserver)] == [scheduled.backup_id] * 2


def test_a_missing_url_env_is_a_config_error_before_the_backup(
    notify_config: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` with url_env naming an unset variable stops at once with a config error naming the
    key (exit 2, no backup taken); commands that never notify, such as list, still work."""
    monkeypatch.delenv("PGVAULT_TEST_UNSET_HOOK", raising=False)
    config = notify_config('[[notify]]\ntype = "webhook"\nurl_env = "PGVAULT_TEST_UNSET_HOOK"\n')
    assert config.path is not None
    ran = pgvault_cli("run", config.path)
    assert ran.returncode == 2
    assert ran.stderr == (
        f"pgvault: error: {config.path}: notify[0].url_env: environment variable "
        "PGVAULT_TEST_UNSET_HOOK is not set (or empty); webhook needs it to send\n"
    )
    assert pgvault.Vault.from_config(config).backups() == []
    listed = pgvault_cli("list", config.path)
    assert listed.returncode == 0, listed.stderr
