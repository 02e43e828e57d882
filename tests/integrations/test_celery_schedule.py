"""The beat schedule built from ``[schedule]`` tables: entries, options, and crontabs that fire
exactly when cron would (Celery ANDs the two day fields where cron ORs them)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import pgvault
from pgvault.integrations.celery import _crontabs, beat_schedule_for, make_app
from pgvault.units import CronSpec


@pytest.mark.parametrize(
    "text",
    [
        "0 2 * * *",
        "*/15 * * * *",
        "30 4 1,15 * mon",
        "0 8 * * mon-fri",
        "5 1 */10 * sun",
        "0 0 29 2 *",
        "0 3 1-7 * 0",
        "weekly",
        "monthly",
    ],
)
def test_beat_crontabs_fire_on_the_days_and_minutes_cron_does(text: str) -> None:
    """Over a leap year, a day runs the job under the crontabs exactly when cron's rule says so,
    and at the same hours and minutes."""
    spec = CronSpec.parse(text)
    tabs = [tab for _, tab in _crontabs(spec)]
    for tab in tabs:
        assert tab.minute == set(spec.values("minute"))
        assert tab.hour == set(spec.values("hour"))
    day = date(2028, 1, 1)
    while day.year == 2028:
        weekday = day.isoweekday() % 7
        beat = any(
            day.day in t.day_of_month and day.month in t.month_of_year and weekday in t.day_of_week
            for t in tabs
        )
        first = datetime(
            day.year, day.month, day.day, min(spec.values("hour")), min(spec.values("minute"))
        )
        cron = spec.matches(first)
        assert beat == cron, f"{text}: {day} beat={beat} cron={cron}"
        day += timedelta(days=1)


def test_beat_schedule_for_reads_the_schedule_table(
    make_config: Callable[..., Path], files_source: dict[str, Any]
) -> None:
    """Each scheduled job is an entry sending its task with the config as given; timeout becomes
    the soft (and, a minute later, the hard) time limit; randomized_delay a countdown that stays
    the same from one build to the next; a config without [schedule] adds nothing."""
    config = make_config(
        files_source,
        name="app",
        extra=(
            '[schedule]\nbackup = "30 2 * * *"\ncheck = "*/15 * * * *"\n'
            'drill = "0 5 1 * sun"\nrandomized_delay = "10m"\ntimeout = "2h"\n'
        ),
    )
    plain = make_config(files_source, name="plain")
    entries = beat_schedule_for([config, str(plain)], queue="backups")
    assert sorted(entries) == sorted(
        [
            f"pgvault backup {config}",
            f"pgvault check {config}",
            f"pgvault drill {config} (day of month)",
            f"pgvault drill {config} (day of week)",
        ]
    )
    backup = entries[f"pgvault backup {config}"]
    assert backup["task"] == "pgvault.run" and backup["args"] == (str(config),)
    assert entries[f"pgvault check {config}"]["task"] == "pgvault.check"
    assert entries[f"pgvault drill {config} (day of week)"]["task"] == "pgvault.drill"
    options = backup["options"]
    assert options["queue"] == "backups"
    assert options["soft_time_limit"] == 7200 and options["time_limit"] == 7260
    assert 0 <= options["countdown"] <= 600
    again = beat_schedule_for([config])[f"pgvault backup {config}"]["options"]
    assert again["countdown"] == options["countdown"]
    assert beat_schedule_for([plain]) == {}


def test_a_bad_schedule_names_the_file_and_key(
    make_config: Callable[..., Path], files_source: dict[str, Any]
) -> None:
    """A mistake in [schedule] stops the beat schedule with the config error's one line."""
    config = make_config(files_source, extra='[schedule]\nbackup = "61 2 * * *"\n')
    with pytest.raises(pgvault.ConfigError, match=r"schedule\.backup.*minute"):
        beat_schedule_for([config])


def test_import_pgvault_does_not_import_celery() -> None:
    """Celery is an extra: neither ``import pgvault`` nor the integrations package loads it."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, pgvault, pgvault.integrations; print('celery' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "False"


def test_make_app_reads_the_environment_then_the_settings_module(
    make_config: Callable[..., Path],
    files_source: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shipped app: the variables give broker, queue and the beat's configs, the module
    named by CELERY_CONFIG_MODULE wins over them, and the defaults the promises rest on hold."""
    config = make_config(files_source, name="env", extra='[schedule]\ncheck = "*/5 * * * *"\n')
    (tmp_path / "site_celery_settings.py").write_text("task_default_queue = 'from-module'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = make_app(
        env={
            "PGVAULT_CELERY_BROKER_URL": "amqp://backup@broker.example//",
            "PGVAULT_CELERY_QUEUE": "from-env",
            "PGVAULT_CELERY_CONFIGS": str(config),
            "CELERY_CONFIG_MODULE": "site_celery_settings",
            "TZ": "Europe/Berlin",
        }
    )
    assert app.conf.broker_url == "amqp://backup@broker.example//"
    assert app.conf.task_default_queue == "from-module"
    assert app.conf.timezone == "Europe/Berlin"
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.accept_content == ["json"]
    (entry,) = app.conf.beat_schedule.values()
    assert entry["task"] == "pgvault.check" and entry["options"]["queue"] == "from-module"
