"""pgvault's own reading of connection strings agrees with libpq's, result and message."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo
from psycopg import pq

from pgvault.postgres.conninfo import KEYWORDS, parse_conninfo

CASES = [
    "",
    "   ",
    "host=db port=5433 dbname=app user=backup",
    "host = db   dbname =app",
    "host=db\tdbname=app\n",
    "password='it''s' host=x",
    r"password='a\'b c' host=x",
    r"password=a\ b host=x",
    "dbname='unterminated",
    "host",
    "host db",
    "=x",
    "hots=db",
    "requiressl=1",
    "requiressl=0",
    "sslmode=verify-full sslrootcert=/etc/ca.pem application_name=x",
    "postgresql://",
    "postgres://",
    "postgresql://db",
    "postgresql://db:5433/app",
    "postgresql://backup@db/app",
    "postgresql://backup:s3cret@db/app",
    "postgresql://backup:@db/app",
    "postgresql://:pw@db/app",
    "postgresql://@db/app",
    "postgresql://backup:Pct%ZZ-s3cr3t@db/app",
    "postgresql://backup:p%4",
    "postgresql://backup:p%4@db",
    "postgresql://user%40x:p%40ss@db/app",
    "postgresql://db/app%00",
    "postgresql://db/a%C3%A9",
    "postgresql://h1,h2:5433,h3/app",
    "postgresql://,/app",
    "postgresql://:5433/app",
    "postgresql://h1:1,:2/app",
    "postgresql://[::1]:5432/app",
    "postgresql://[::1]/app",
    "postgresql://[::1",
    "postgresql://[]/app",
    "postgresql://[::1]x/app",
    "postgresql://[::1],[::2]:5/app",
    "postgresql:///app?host=/tmp",
    "postgresql://db/app?sslmode=require&connect_timeout=5",
    "postgresql://db/app?ssl=true",
    "postgresql://db/app?ssl=false",
    "postgresql://db/app?foo=1",
    "postgresql://db/app?a=b=c",
    "postgresql://db/app?sslmode",
    "postgresql://db/app?",
    "postgresql://db/app?sslmode=require&",
    "postgresql://db/app?sslmode=require&&",
    "postgresql://db/app?&sslmode=require",
    "postgresql://db/app?ssl%6dode=require",
    "postgresql://db/app?sslmode=%zz",
    "postgresql://db?sslmode=require",
    "postgresql://db/app/more",
    "postgresql://a@b@c/app",
    "postgresql://db/app?application_name=a%20b",
    "POSTGRESQL://db/app",
    "postgresq://db/app",
]


def libpq(dsn: str) -> dict[str, str] | str:
    try:
        return pg_conninfo.conninfo_to_dict(dsn)  # type: ignore[return-value]
    except psycopg.ProgrammingError as exc:
        return str(exc).strip()


def ours(dsn: str) -> dict[str, str] | str:
    try:
        return parse_conninfo(dsn)
    except ValueError as exc:
        return str(exc)


@pytest.mark.parametrize("dsn", CASES)
def test_a_connection_string_reads_as_libpq_reads_it(dsn: str) -> None:
    """Every case gives the options libpq gives, or fails with libpq's message."""
    assert ours(dsn) == libpq(dsn)


def test_every_option_libpq_knows_is_known() -> None:
    """A libpq that psycopg loads knows no connection option the parser would refuse."""
    known = {o.keyword.decode() for o in pq.Conninfo.get_defaults()}
    assert known <= KEYWORDS
