"""Config loading: every mistake is one line naming the file and the key."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

import pgvault
from pgvault.sinks.local import LocalSink
from pgvault.sources.pg_dump import PgDumpSource
from pgvault.transforms.compress import Gzip, Zstd
from tests.fake_backups import fake_backup

GOOD = """
name = "app"
checksums = ["sha256", "md5"]
[source]
type = "pg_dump"
dsn = "postgresql://postgres@127.0.0.1:5432/app"
count_tables = ["public.users"]
[[transform]]
type = "zstd"
level = 9
[[transform]]
type = "gzip"
[sink]
type = "local"
path = "vault"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(pgvault.ConfigError) as info:
        pgvault.load_config(write(tmp_path, text), env=env or {})
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_good_config_loads_into_typed_objects(tmp_path: Path) -> None:
    """The issue's example config becomes typed components; relative paths follow the file."""
    config = pgvault.load_config(write(tmp_path, GOOD))
    assert config.name == "app"
    assert isinstance(config.source, PgDumpSource)
    assert config.source.count_tables == ("public.users",)
    assert config.transforms == (Zstd(level=9), Gzip())
    assert isinstance(config.sink, LocalSink)
    assert config.sink.path == tmp_path / "vault"
    assert config.checksums == ("sha256", "md5")


def test_environment_interpolation(tmp_path: Path) -> None:
    """${VAR} and ${VAR:-default} are replaced from the environment; $${ is a literal."""
    text = GOOD.replace('"postgresql://postgres@127.0.0.1:5432/app"', '"${DSN}"').replace(
        'path = "vault"', 'path = "${DIR:-fallback}/x$${y}"'
    )
    config = pgvault.load_config(write(tmp_path, text), env={"DSN": "dbname=from_env"})
    assert isinstance(config.source, PgDumpSource)
    assert config.source.dsn == "dbname=from_env"
    assert isinstance(config.sink, LocalSink)
    assert config.sink.path == tmp_path / "fallback" / "x${y}"


def test_missing_environment_variable_is_named(tmp_path: Path) -> None:
    """An unset ${VAR} names the variable, the file and the key."""
    text = GOOD.replace('"postgresql://postgres@127.0.0.1:5432/app"', '"${APP_DSN}"')
    message = error_of(tmp_path, text)
    assert "pipeline.toml: source.dsn: environment variable APP_DSN is not set" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('dsn = "post', 'dns = "x"\ndsn = "post', "source.dns: unknown key (did you mean 'dsn'?)"),
        (
            "level = 9",
            'level = "high"',
            "transform[0].level: expected an integer, got string 'high'",
        ),
        ("level = 9", "level = 42", "transform[0]: invalid value"),
        (
            'type = "zstd"',
            'type = "zstdd"',
            "transform[0].type: unknown transform type 'zstdd' (did you mean 'zstd'?)",
        ),
        (
            'type = "local"',
            'type = "lcoal"',
            "sink.type: unknown sink type 'lcoal' (did you mean 'local'?)",
        ),
        ('name = "app"', 'name = "app"\nretension = 3', "retension: unknown key"),
        ('name = "app"', 'name = "no/slash"', "name: invalid vault name"),
        (
            '"sha256", "md5"',
            '"sha265"',
            "checksums: unknown checksum 'sha265' (did you mean 'sha256'?)",
        ),
        (
            'count_tables = ["public.users"]',
            'count_tables = "public.users"',
            "source.count_tables: expected a list",
        ),
        (
            'format = "x"\n' if False else 'dsn = "post',
            'format = "directory"\ndsn = "post',
            "source.format: invalid value 'directory'",
        ),
        (
            'dsn = "post',
            'jobs = 2\nformat = "plain"\ndsn = "post',
            "jobs > 1 needs format = 'custom'",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "out-of-range",
        "unknown-transform",
        "unknown-sink",
        "unknown-top-level",
        "bad-name",
        "bad-checksum",
        "list-expected",
        "bad-literal",
        "jobs-needs-custom",
    ],
)
def test_mistakes_name_file_and_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    """Each kind of mistake gives one line with the file, the key and a close match if any."""
    assert old in GOOD
    message = error_of(tmp_path, GOOD.replace(old, new, 1))
    assert message.startswith(f"{tmp_path / 'pipeline.toml'}: ")
    assert expected in message


def test_missing_sections_and_files(tmp_path: Path) -> None:
    """A missing file, invalid TOML and a missing [source] are each named."""
    with pytest.raises(pgvault.ConfigError, match="config file not found"):
        pgvault.load_config(tmp_path / "absent.toml")
    assert "invalid TOML" in error_of(tmp_path, "name = ")
    assert "source: missing [source] table" in error_of(
        tmp_path, 'name = "a"\n[sink]\ntype="local"\npath="x"\n'
    )


SINK = '[sink]\ntype = "local"\npath = "vault"\n'
SOURCE = '[source]\ntype = "files"\npaths = ["."]\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"source = 5\n{SINK}", "source: expected a [source] table or [[source]] tables"),
        (f"source = []\n{SINK}", "source: expected at least one [[source]] table"),
        (f"source = [1]\n{SINK}", "source[0]: expected a table"),
        (SOURCE, "sink: missing [sink] table"),
        (f'sink = "x"\n{SOURCE}', "sink: expected a [sink] table or [[sink]] tables"),
        (f"sink = []\n{SOURCE}", "sink: expected at least one [[sink]] table"),
        (f'sink = [{{type = "local", path = "a"}}, 2]\n{SOURCE}', "sink[1]: expected a table"),
        (f"transform = 5\n{SOURCE}{SINK}", "transform: expected a [transform] table or [[t"),
        (f'transform = [{{type = "gzip"}}, 1]\n{SOURCE}{SINK}', "transform[1]: expected a table"),
        (f"{SOURCE}{SINK}[transform]\nlevel = 1\n", "transform[0].type: missing 'type'"),
        (f'notify = "x"\n{SOURCE}{SINK}', "notify: expected a [notify] table or [[notify]] t"),
        (f"notify = [1]\n{SOURCE}{SINK}", "notify[0]: expected a table"),
        (f"{SOURCE}{SINK}[notify]\nurl = 1\n", "notify[0].type: missing 'type'"),
        (f"{SOURCE}[sink]\npath = 1\n", "sink.type: missing 'type'"),
    ],
)
def test_list_of_tables_mistakes_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    """[[source]], [[sink]], [[transform]] and [[notify]] tables that are not tables, none where
    one is needed, or a lone table without a type: one line naming the file and the key."""
    message = error_of(tmp_path, 'name = "a"\n' + text)
    assert message.startswith(f"{tmp_path / 'pipeline.toml'}: {expected}")


def test_a_missing_extra_names_the_pip_command(tmp_path: Path) -> None:
    """A sink whose optional dependency is not installed says which extra to install.

    The test environment has every extra, so a child interpreter is started in which s3fs
    cannot be imported, exactly as on a machine without ``pgvault[s3]``.
    """
    path = write(
        tmp_path, GOOD.replace('type = "local"\npath = "vault"', 'type = "s3"\nurl = "s3://b/p"')
    )
    code = (
        "import sys; sys.modules['s3fs'] = None\n"
        "import pgvault\n"
        f"try:\n    pgvault.load_config({str(path)!r})\n"
        "except pgvault.ConfigError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "sink.type: sink type 's3' cannot be loaded" in out.stdout
    assert "pip install 'pgvault[s3]'" in out.stdout


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("[retention]\nkeep_within", "retention.keep_within"),
        ("[retention]\nkeep_last = 1\nincomplete_grace", "retention.incomplete_grace"),
        ("[check]\nmax_age", "check.max_age"),
    ],
)
def test_a_huge_duration_is_a_config_error_naming_the_key(
    tmp_path: Path, table: str, key: str
) -> None:
    """ "999999999999d" is refused as too long, naming the key, by the CLI too (exit 2, one line),
    not an internal error about a Python int."""
    path = write(tmp_path, GOOD + f'{table} = "999999999999d"\n')
    with pytest.raises(pgvault.ConfigError, match=f"{key}: duration '999999999999d' is too long"):
        pgvault.load_config(path)
    result = subprocess.run(
        [sys.executable, "-m", "pgvault", "list", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"pgvault: error: {path}: {key}: duration '999999999999d' is too long (at most 1000y)\n"
    )


SECRET = "Pct%ZZ-s3cr3t-never-echoed"


def test_a_malformed_dsn_is_refused_without_echoing_the_password(tmp_path: Path) -> None:
    """A DSN whose password has a malformed %-escape is a config error naming the key and the
    fault, quoting no part of the password (stderr, JSON log file), for `run` and `restore
    --dsn` alike."""
    log = tmp_path / "log.json"
    text = GOOD.replace(
        "postgresql://postgres@127.0.0.1:5432/app", f"postgresql://backup:{SECRET}@db/app"
    )
    path = write(tmp_path, text + f'[logging]\nformat = "json"\nfile = "{log}"\n')
    run = subprocess.run(
        [sys.executable, "-m", "pgvault", "run", str(path)], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert run.stderr == (
        f"pgvault: error: {path}: source: invalid value: dsn: invalid PostgreSQL connection "
        'string: invalid percent-encoded token: "…" (the quoted text is withheld: it may hold '
        "the password)\n"
    )
    good = write(tmp_path, GOOD + f'[logging]\nformat = "json"\nfile = "{log}"\n')
    # A pg_dump backup to restore, so that the restore gets as far as the --dsn.
    vault = pgvault.Vault.from_config(pgvault.load_config(good))
    manifest = vault.manifest(fake_backup(vault, datetime.now(UTC) - timedelta(hours=1)))
    vault.write_manifest(attrs.evolve(manifest, source={"type": "pg_dump", "format": "custom"}))
    restore = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgvault",
            "restore",
            str(good),
            "latest",
            "--target-db",
            "x",
            "--dsn",
            f"postgresql://backup:{SECRET}@db/app",
        ],
        capture_output=True,
        text=True,
    )
    # A malformed --dsn is the user's input, refused before any artifact is read: exit 2, as
    # the same mistake in the config is for run.
    assert restore.returncode == 2
    assert restore.stderr.startswith(
        "pgvault: error: invalid PostgreSQL connection string: invalid percent-encoded token"
    )
    leaked = [SECRET, "ZZ-s3cr3t", "s3cr3t"]
    for output in (run.stdout, run.stderr, restore.stdout, restore.stderr, log.read_text()):
        assert not any(part in output for part in leaked), output


def test_type_errors_of_secret_options_do_not_quote_the_value(tmp_path: Path) -> None:
    """An option that holds a secret (here a webhook URL given as a table) is described by its
    kind in the error, never quoted; an sftp URL with a password is refused before it is."""
    text = GOOD + '[[notify]]\ntype = "webhook"\nurl = ["https://hooks/T0k3n-secret"]\n'
    assert "T0k3n" not in error_of(tmp_path, text)
    sftp = GOOD.replace(
        'type = "local"\npath = "vault"', 'type = "sftp"\nurl = "sftp://u:pw-s3cr3t@"'
    )
    message = error_of(tmp_path, sftp)
    assert "pw-s3cr3t" not in message and "must not hold a password" in message


def test_a_config_given_another_sink_stores_there(tmp_path: Path) -> None:
    """`attrs.evolve(config, sink=...)` (how an embedding application points a pipeline
    elsewhere) moves the primary destination too: backups must not keep going to the old one."""
    config = pgvault.load_config(write(tmp_path, GOOD))
    elsewhere = LocalSink(path=tmp_path / "elsewhere")
    moved = attrs.evolve(config, sink=elsewhere)
    assert moved.destinations[0].sink is elsewhere
    assert [d.sink for d in moved.destinations] == [elsewhere]
    assert config.destinations[0].sink is config.sink


def test_the_schedule_table_reads_cron_specs_and_durations(tmp_path: Path) -> None:
    """[schedule] gives each job a CronSpec, and the delay and timeout as lengths of time."""
    config = pgvault.load_config(
        write(
            tmp_path,
            GOOD
            + '[schedule]\nbackup = "30 2 * * *"\ndrill = "weekly"\n'
            + 'randomized_delay = "10m"\ntimeout = "6h"\n',
        )
    )
    schedule = config.schedule
    assert schedule.backup is not None and schedule.backup.expression == "30 2 * * *"
    assert schedule.drill is not None and schedule.drill.expression == "0 0 * * 0"
    assert schedule.prune is None and schedule.check is None and schedule.report is None
    assert schedule.randomized_delay == timedelta(minutes=10)
    assert schedule.timeout == timedelta(hours=6)
    assert [name for name, _ in schedule.jobs()] == ["backup", "drill"]
    bare = pgvault.load_config(write(tmp_path, GOOD)).schedule
    assert bare.jobs() == () and bare.randomized_delay == timedelta(0) and bare.timeout is None


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('backup = "61 2 * * *"', "schedule.backup: minute: 61 is out of range 0-59"),
        ('check = "often"', "schedule.check: a cron expression has 5 fields"),
        ("prune = 3", "schedule.prune: expected a cron expression"),
        ('timeout = "soon"', "schedule.timeout: invalid duration 'soon'"),
        ('timeout = "0s"', "schedule: invalid value: timeout must be longer than 0s"),
        ('backups = "daily"', "schedule.backups: unknown key (did you mean 'backup'?)"),
    ],
)
def test_schedule_mistakes_name_file_and_key(tmp_path: Path, table: str, expected: str) -> None:
    """A wrong [schedule] value is one line with the file and the key."""
    message = error_of(tmp_path, GOOD + "[schedule]\n" + table + "\n")
    assert message.startswith(f"{tmp_path / 'pipeline.toml'}: {expected}")
