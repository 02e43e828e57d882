"""A scheduled report through the notifiers (``events = ["report"]``, ``pgvault report
--notify``): a mail with the table and the chart inline, against a real SMTP server; the summary
line alone to Slack, the whole report as JSON to a webhook, on a real HTTP server."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Callable
from email.message import EmailMessage

import pytest
from pytest_httpserver import HTTPServer

import pgvault
from tests.conftest import pgvault_cli
from tests.notify.conftest import Mailbox

Make = Callable[..., pgvault.PipelineConfig]


def _with_two_backups(config: pgvault.PipelineConfig) -> pgvault.PipelineConfig:
    pgvault.run(config)
    pgvault.run(config)
    return config


def test_the_report_mail_has_the_table_and_the_chart_inline(
    smtp_server: Callable[..., Mailbox], notify_config: Make
) -> None:
    """One mail: the summary as subject, the text table, the HTML table showing the SVG chart
    by its Content-ID, and the chart as a named file."""
    box = smtp_server("none")
    config = _with_two_backups(
        notify_config(
            f'[[notify]]\ntype = "email"\nhost = "127.0.0.1"\nport = {box.port}\n'
            'security = "none"\nsender = "pgvault@db1.example"\nto = ["ops@example.com"]\n'
            'events = ["report", "backup_failed"]\n'
        )
    )
    result = pgvault_cli("report", config.path or "", "--notify", "-v")
    assert result.returncode == 0, result.stderr
    assert "report sent: email via 127.0.0.1" in result.stderr  # with -v; quiet without
    [received] = box.messages  # the backups' successes are not among its events
    mail = email.message_from_string(
        received["content"], _class=EmailMessage, policy=email.policy.default
    )
    assert str(mail["Subject"]).startswith("[pgvault] report test: 2 backup(s), 0 failed")
    assert mail["X-Pgvault-Event"] == "report"
    plain = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert plain is not None and html is not None
    assert "started (UTC)" in plain.get_content()  # the table
    html_text = html.get_content()
    assert "<table>" in html_text and 'src="cid:pgvault-report-chart"' in html_text
    [chart] = [p for p in mail.walk() if p.get_content_type() == "image/svg+xml"]
    assert chart["Content-ID"] == "<pgvault-report-chart>"
    assert chart.get_filename() == "chart.svg"
    svg = chart.get_payload(decode=True)
    assert isinstance(svg, bytes) and svg.lstrip().startswith(b"<svg")


def test_slack_gets_the_summary_line_and_a_webhook_the_whole_report(
    httpserver: HTTPServer, notify_config: Make
) -> None:
    """Slack: one line, no table; the JSON webhook: the event with the report's figures."""
    httpserver.expect_request("/slack", method="POST").respond_with_data("ok")
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    config = _with_two_backups(
        notify_config(
            '[[notify]]\ntype = "webhook"\nformat = "slack"\n'
            f'url = "{httpserver.url_for("/slack")}"\n'
            'events = ["report"]\n'
            f'[[notify]]\ntype = "webhook"\nurl = "{httpserver.url_for("/hook")}"\n'
            'events = ["report"]\n'
        )
    )
    result = pgvault_cli("report", config.path or "", "--notify", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # delivered: nothing for cron to mail
    assert json.loads(result.stdout)["taken"] == 2  # still prints what was asked
    (slack, _), (hook, _) = httpserver.log
    text = json.loads(slack.get_data())["text"]
    assert text.startswith(":white_check_mark: *pgvault: report test: 2 backup(s), 0 failed")
    assert "\n" not in text
    posted = json.loads(hook.get_data())
    assert posted["event"] == "report" and posted["ok"] is True
    assert posted["message"].startswith("pgvault: report test: 2 backup(s)")
    assert posted["fields"]["taken"] == 2 and "started (UTC)" in posted["text"]


def test_report_notify_without_a_report_notifier_says_what_to_add(notify_config: Make) -> None:
    """Notifiers that do not ask for reports get none: --notify is then a usage error."""
    config = notify_config('[[notify]]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\n')
    result = pgvault_cli("report", config.path or "", "--notify")
    assert result.returncode == 2
    assert (
        f"{config.path}: notify: --notify: no [[notify]] table asks for reports: add events = "
        '["report"] to one'
    ) in result.stderr


def test_an_undelivered_report_fails_the_job(httpserver: HTTPServer, notify_config: Make) -> None:
    """A report nobody received exits 1, naming the notifier, so the scheduled job fails."""
    httpserver.expect_request("/down", method="POST").respond_with_data("no", status=503)
    config = notify_config(
        f'[[notify]]\ntype = "webhook"\nurl = "{httpserver.url_for("/down")}"\n'
        'events = ["report"]\nretries = 0\n'
    )
    result = pgvault_cli("report", config.path or "", "--notify")
    assert result.returncode == 1
    assert "pgvault: report NOT sent: webhook http://" in result.stderr
    assert "HTTP 503" in result.stderr


@pytest.mark.parametrize("events", [None, ("backup_failed",)])
def test_a_report_reaches_only_notifiers_that_ask(events: tuple[str, ...] | None) -> None:
    """The default events (failures) and other lists leave reports out."""
    from pgvault.notify.webhook import Webhook

    notifier = Webhook(url="http://127.0.0.1:9/", events=events)  # type: ignore[arg-type]
    assert not notifier.wants("report")
    assert Webhook(url="http://127.0.0.1:9/", events=("report",)).wants("report")


def test_telegram_gets_the_summary_line_alone(
    httpserver: HTTPServer, notify_config: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report to Telegram is its summary line and the host, not the table."""
    from pgvault.notify.api import send_report
    from pgvault.notify.events import report_event
    from pgvault.operations.report.report import build

    monkeypatch.setenv("TG_TOKEN", "123456:AAH-secret")
    httpserver.expect_request("/bot123456:AAH-secret/sendMessage").respond_with_json(
        {"ok": True, "result": {"message_id": 1}}
    )
    config = _with_two_backups(
        notify_config(
            '[[notify]]\ntype = "telegram"\nbot_token_env = "TG_TOKEN"\nchat_id = 7\n'
            f'api_url = "{httpserver.url_for("/")}"\nevents = ["report"]\n'
        )
    )
    [(_, delivered)] = send_report(config, report_event(config, build(config)))
    assert delivered
    [(request, _)] = httpserver.log
    title, host = json.loads(request.get_data())["text"].split("\n\n")
    assert title.startswith("pgvault: report test: 2 backup(s), 0 failed")
    assert host.startswith("host: ")
