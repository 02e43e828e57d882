"""The sentry notifier against a real local HTTP server speaking Sentry's envelope endpoint:
failed runs arrive as error events, backups check in to a Crons monitor, the DSN stays secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request

import pgvault
from pgvault.notify.sentry import checkin_id

Make = Callable[..., pgvault.PipelineConfig]
KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
ENDPOINT = "/api/42/envelope/"


def envelope_items(request: Request) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Parse an envelope the way Sentry's relay does: a header line, then header/payload pairs
    whose payload is ``length`` bytes."""
    data = request.get_data()
    header_line, _, rest = data.partition(b"\n")
    items = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item = json.loads(item_line)
        payload, rest = rest[: item["length"]], rest[item["length"] :]
        assert rest[:1] in (b"\n", b"")
        rest = rest[1:]
        items.append((item["type"], json.loads(payload)))
    return json.loads(header_line), items


def sentry_table(httpserver: HTTPServer, extra: str = "") -> str:
    dsn = f"http://{KEY}@127.0.0.1:{httpserver.port}/42"
    return f'[[notify]]\ntype = "sentry"\ndsn = "{dsn}"\nretries = 0\n{extra}'


@pytest.fixture
def sentry(httpserver: HTTPServer) -> HTTPServer:
    httpserver.expect_request(ENDPOINT, method="POST").respond_with_json({"id": "x"})
    return httpserver


def test_a_failed_backup_checks_in_and_sends_an_error_event(
    sentry: HTTPServer, notify_config: Make
) -> None:
    """in_progress at the start; at the failure one envelope with the error check-in (same id,
    the monitor's schedule) and an error event naming the pipeline and the cause."""
    config = notify_config(
        sentry_table(
            sentry,
            'monitor_slug = "nightly-db"\nschedule = "0 2 * * *"\ncheckin_margin = "30m"\n'
            'max_runtime = "3h"\nenvironment = "staging"\n',
        ),
        broken=True,
    )
    with pytest.raises(pgvault.SourceError) as failure:
        pgvault.run(config)
    (start, _), (end, _) = sentry.log
    for request in (start, end):
        assert request.headers["Content-Type"] == "application/x-sentry-envelope"
        assert f"sentry_key={KEY}" in request.headers["X-Sentry-Auth"]
    _, [(kind, started)] = envelope_items(start)
    assert kind == "check_in" and started["status"] == "in_progress"
    assert started["monitor_slug"] == "nightly-db"
    assert started["monitor_config"] == {
        "schedule": {"type": "crontab", "value": "0 2 * * *"},
        "timezone": "UTC",
        "checkin_margin": 30,
        "max_runtime": 180,
    }
    header, [(first, ended), (second, event)] = envelope_items(end)
    assert (first, second) == ("check_in", "event")
    assert ended["status"] == "error" and ended["check_in_id"] == started["check_in_id"]
    assert header["event_id"] == event["event_id"]
    assert event["level"] == "error" and event["environment"] == "staging"
    assert event["fingerprint"] == ["pgvault", "test", "backup_failed"]
    assert event["tags"]["pgvault.pipeline"] == "test"
    [exception] = event["exception"]["values"]
    assert exception["type"] == "SourceError"
    assert exception["value"] == str(failure.value) and "is not a folder" in exception["value"]


def test_a_good_backup_checks_in_ok_and_sends_no_event(
    sentry: HTTPServer, notify_config: Make
) -> None:
    """A run that succeeds closes its check-in with ok and its duration; no error event."""
    config = notify_config(sentry_table(sentry, 'monitor_slug = "nightly-db"\n'))
    manifest = pgvault.run(config)
    [(_, [(_, started)]), (_, [(kind, ended)])] = [envelope_items(r) for r, _ in sentry.log]
    assert kind == "check_in" and ended["status"] == "ok"
    assert started["check_in_id"] == ended["check_in_id"] == checkin_id(manifest.backup_id)
    assert ended["duration"] == pytest.approx(manifest.duration_seconds, abs=0.01)
    assert "monitor_config" not in ended  # no schedule given: the monitor is Sentry's to define


def test_failed_check_and_restore_reach_sentry(
    sentry: HTTPServer, notify_config: Make, tmp_path: Path
) -> None:
    """Without a monitor nothing is sent for a good backup; a CRITICAL check and a refused
    restore (into a folder that is not empty) each arrive as an error event."""
    config = notify_config(sentry_table(sentry))
    pgvault.run(config)
    assert sentry.log == []
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(pgvault.RestoreError, match="is not empty"):
        pgvault.restore(config, target_dir=occupied)
    assert pgvault.check(config, thresholds=pgvault.CheckThresholds(min_count=5)).status == 1
    restore, check = (envelope_items(r)[1] for r, _ in sentry.log)
    [(kind, restore_event)] = restore
    assert kind == "event"
    assert restore_event["tags"]["pgvault.event"] == "restore_failed"
    assert "is not empty" in restore_event["exception"]["values"][0]["value"]
    [(kind, check_event)] = check
    assert kind == "event"
    assert check_event["level"] == "warning"  # a WARNING check is a warning in Sentry
    assert "min_count 5" in check_event["message"]["formatted"]


def test_the_dsn_never_reaches_the_log(
    httpserver: HTTPServer, notify_config: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """Sentry answering 429 is logged with host and project only: not the key."""
    httpserver.expect_request(ENDPOINT, method="POST").respond_with_data(
        f"rate limited {KEY}", status=429
    )
    config = notify_config(sentry_table(httpserver), broken=True)
    with caplog.at_level(logging.WARNING, logger="pgvault"), pytest.raises(pgvault.SourceError):
        pgvault.run(config)
    [gave_up] = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert f"sentry http://127.0.0.1:{httpserver.port} project 42" in gave_up
    assert "HTTP 429" in gave_up
    assert KEY not in caplog.text


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('dsn = "https://sentry.example/42"', "invalid Sentry DSN"),
        ('dsn_env = "SENTRY_DSN"\nschedule = "0 2 * *"', "crontab line of 5 fields"),
        ('dsn_env = "SENTRY_DSN"\nschedule = "0 2 * * *"', "schedule needs monitor_slug"),
        ('dsn_env = "SENTRY_DSN"\nmonitor_slug = "Nightly DB"', "lowercase letters"),
    ],
)
def test_config_mistakes_are_named(notify_config: Make, table: str, message: str) -> None:
    """A DSN without key, a crontab of 4 fields, a schedule without a monitor: one line each."""
    with pytest.raises(pgvault.ConfigError, match=message) as error:
        notify_config(f'[[notify]]\ntype = "sentry"\n{table}\n')
    assert "notify[0]" in str(error.value) and "sentry.example/42" not in str(error.value)
