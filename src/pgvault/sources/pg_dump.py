"""The pg_dump source: logical dumps, streamed from pg_dump's stdout.

pg_dump runs inside a snapshot that pgvault exports and holds open, so the row counts recorded in
the manifest describe exactly the data in the dump (restore validation relies on that).

``jobs`` > 1 splits the dump instead of using pg_dump's directory format (which cannot stream):
the largest tables' data goes to ``jobs - 1`` extra data-only archives, each written by its own
pg_dump in the same snapshot, so all of them stream concurrently and restore in parallel. The
main archive keeps the schema, the other tables' data, sequences and large objects.

The config imports this module to check a pipeline's ``[source]``, and most commands never
connect: psycopg is imported by the run's methods, where a connection is made, not at the top.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import re
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs

from pgvault.exceptions import SourceError
from pgvault.postgres.client import (
    _Collector,
    check_dsn,
    child_env,
    connect,
    exit_description,
    find_binary,
    first_line,
    pipe_chunks,
    pipe_into,
    quote_ident,
    split_dsn,
    tool_version,
    widen_pipe,
    with_dbname,
)
from pgvault.postgres.conninfo import parse_conninfo
from pgvault.postgres.globals import GLOBALS_END, GLOBALS_ROLE, GLOBALS_STREAM
from pgvault.sources.api import CHUNK_SIZE, Source, SourceRun, SourceStream
from pgvault.sources.databases import ManyDatabasesRun

log = logging.getLogger("pgvault.sources.pg_dump")

DumpFormat = Literal["custom", "plain", "tar"]

FORMAT_FLAGS: dict[str, str] = {"custom": "c", "plain": "p", "tar": "t"}
STREAM_NAMES: dict[str, str] = {"custom": "dump.pgdump", "plain": "dump.sql", "tar": "dump.tar"}
PLAIN_DUMP_END = b"-- PostgreSQL database dump complete"


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


@attrs.frozen
class PgDumpSource(Source):
    """A logical dump of one database with pg_dump.

    ``dsn`` is a libpq URI or conninfo string; empty means libpq's defaults, and PG* variables and
    ``.pgpass`` are honoured, so no password needs to sit in the config. ``format`` is ``custom``
    (default; restorable table by table), ``plain`` (SQL) or ``tar``. ``schemas``,
    ``exclude_schemas`` and ``exclude_tables`` take pg_dump patterns. ``count_tables`` names tables
    (``schema.table``, or ``"*"`` for all) whose rows are counted exactly for restore validation;
    the others record estimates (the planner's and ``n_live_tup``). ``pg_dump`` overrides the
    binary, which by default matches the server's major version. ``lock_wait_timeout`` (e.g.
    ``"5min"``) makes pg_dump fail instead of waiting forever behind a lock. ``globals`` also
    stores the cluster's roles and tablespaces (``pg_dumpall --globals-only``) as artifact
    ``globals.sql``; ``role_passwords`` includes the roles' password hashes in it (secrets: off
    by default; a role that cannot read ``pg_authid`` backs up without them, as the manifest
    then says).
    """

    type_name: ClassVar[str] = "pg_dump"

    dsn: str = ""
    format: DumpFormat = "custom"
    jobs: int = attrs.field(default=1, validator=_positive)
    schemas: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    exclude_schemas: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    exclude_tables: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    count_tables: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    pg_dump: str | None = None
    lock_wait_timeout: str | None = None
    globals: bool = True
    role_passwords: bool = False
    databases: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    exclude_databases: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        try:
            check_dsn(self.dsn)
        except ValueError as exc:
            raise ValueError(f"dsn: {exc}") from None
        if self.exclude_databases and not self.databases:
            raise ValueError("exclude_databases needs databases (e.g. databases = ['*'])")
        if self.jobs > 1 and self.format != "custom" and not self.databases:
            raise ValueError("jobs > 1 needs format = 'custom' (parallel parts restore by section)")

    def describe(self) -> str:
        from pgvault.postgres.client import describe_dsn

        if self.databases:
            return f"pg_dump of databases {', '.join(self.databases)} on {describe_dsn(self.dsn)}"
        return f"pg_dump of {describe_dsn(self.dsn)}"

    def start(self) -> SourceRun:
        if self.databases:
            return _start_many(self)
        return _PgDumpRun(self)

    @property
    def server_dsn(self) -> str:
        """The DSN pgvault uses for the server as a whole (the run lock; listing the databases
        and reading the globals of a many-database dump): ``dsn``, but for a many-database dump
        whose ``dsn`` names no database, ``postgres`` rather than libpq's default (the user's
        name), which rarely exists."""
        if self.databases and not _has_dbname(self.dsn):
            return with_dbname(self.dsn, "postgres")
        return self.dsn

    def for_database(self, name: str) -> PgDumpSource:
        """This source narrowed to one database of a many-database dump: what that database's
        part is dumped (and restored, and safety-backed-up) with."""
        return attrs.evolve(
            self,
            dsn=with_dbname(self.dsn, name),
            databases=(),
            exclude_databases=(),
            jobs=1,
            globals=False,
        )

    @classmethod
    def check_stream(
        cls, metadata: Mapping[str, Any], role: str, chunks: Iterator[bytes]
    ) -> str | None:
        if role == GLOBALS_ROLE:
            tail = b""
            for chunk in chunks:
                tail = (tail + chunk)[-4096:]
            if GLOBALS_END not in tail:
                raise SourceError("globals file does not end with pg_dumpall's completion marker")
            return "pg_dumpall --globals-only, complete"
        fmt = metadata.get("format")
        if fmt == "plain":
            tail = b""
            for chunk in chunks:
                tail = (tail + chunk)[-4096:]
            if PLAIN_DUMP_END not in tail:
                raise SourceError("plain dump does not end with pg_dump's completion marker")
            return "plain SQL dump, complete"
        if fmt not in ("custom", "tar"):
            return None
        binary = find_binary("pg_restore", server_major=server_major(metadata))
        rc, out, err = pipe_into([binary, "--list"], chunks, {}, keep_stdout=True)
        if rc != 0:
            raise SourceError(exit_description(binary, rc, err))
        entries = sum(1 for line in out.splitlines() if line and not line.startswith(";"))
        return f"pg_restore --list: {entries} entries"


def server_major(metadata: Mapping[str, Any]) -> int | None:
    """The dumped server's major version from a manifest's ``source`` table, if recorded."""
    num = metadata.get("server_version_num")
    return int(num) // 10000 if isinstance(num, int) else None


# A table's rows as the planner would estimate them now: the density ANALYZE or VACUUM last
# measured (reltuples / relpages) times the pages the table has today (main_bytes, the size of
# its main fork), which follows a table that grew or shrank since. With no density (never
# analyzed, or analyzed while empty) there is no estimate, unless the table has no pages at all:
# then it has no rows.
_ESTIMATE = (
    "CASE WHEN c.reltuples >= 0 AND c.relpages > 0 "
    "THEN round(c.reltuples / c.relpages "
    "* (z.main_bytes / current_setting('block_size')::int))::bigint "
    "WHEN z.main_bytes = 0 THEN 0 END"
)


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(str(value))


@attrs.frozen
class _Table:
    schema: str
    name: str
    estimate: int | None
    live_rows: int | None
    """The statistics system's live-row count (``n_live_tup``): a second opinion that follows
    deletes before VACUUM does, but is zero after a stats reset, a crash or on a standby."""
    size: int
    partitioned: bool = False
    """A partitioned table (relkind ``p``): no rows of its own, its partitions hold them."""
    parent: tuple[str, str] | None = None
    """``(schema, name)`` of the partitioned table this one is a partition of."""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def pattern(self) -> str:
        """The pg_dump pattern that matches exactly this table."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"


def _table_record(
    table: _Table, exact_rows: int | None, partitions: Sequence[_Table] = ()
) -> dict[str, Any]:
    """A table's entry in the manifest: its size in ``bytes``; its exact row count, or the
    estimates restore checks.

    A partitioned table's says so (``partitioned``) and lists its direct ``partitions``; a
    partition's names its parent (``partition_of``): restore counts a partitioned table's rows
    through it, which are its partitions' rows. Manifests before these keys list only plain
    tables, partitions among them.
    """
    record: dict[str, Any] = {"schema": table.schema, "name": table.name}
    # Its size on disk (pg_total_relation_size; 0 for a partitioned table): what a parallel
    # restore deals its data by, as the split dump does here.
    record["bytes"] = table.size
    if exact_rows is not None:
        record.update(rows=exact_rows, exact=True)
    else:
        record.update(rows=table.estimate, exact=False)
        if table.live_rows is not None:
            record["live_rows"] = table.live_rows
    if table.partitioned:
        record["partitioned"] = True
        record["partitions"] = [{"schema": p.schema, "name": p.name} for p in partitions]
    if table.parent is not None:
        record["partition_of"] = {"schema": table.parent[0], "name": table.parent[1]}
    return record


def _with_partition_estimates(tables: list[_Table]) -> list[_Table]:
    """``tables`` with each partitioned table's estimates set to the sum of its dumped leaf
    partitions' (the planner keeps none of its own that follow them), or None when a leaf has
    none."""
    leaves = _leaves(tables)
    out: list[_Table] = []
    for t in tables:
        if t.partitioned:
            mine = leaves.get((t.schema, t.name), [])
            estimates = [leaf.estimate for leaf in mine]
            live = [leaf.live_rows for leaf in mine]
            t = attrs.evolve(
                t,
                estimate=None if None in estimates else sum(e or 0 for e in estimates),
                live_rows=None if None in live else sum(v or 0 for v in live),
            )
        out.append(t)
    return out


def _leaves(tables: Sequence[_Table]) -> dict[tuple[str, str], list[_Table]]:
    """Partitioned table → its leaf partitions among ``tables``, at every level."""
    by_key = {(t.schema, t.name): t for t in tables}
    leaves: dict[tuple[str, str], list[_Table]] = {}
    for t in tables:
        if t.partitioned:
            continue
        seen: set[tuple[str, str]] = set()
        up = t.parent
        while up is not None and up in by_key and up not in seen:
            seen.add(up)
            leaves.setdefault(up, []).append(t)
            up = by_key[up].parent
    return leaves


class _PgDumpRun(SourceRun):
    def __init__(self, source: PgDumpSource) -> None:
        self._source = source
        self._procs: list[tuple[str, subprocess.Popen[bytes], _Collector]] = []
        self._streams: list[SourceStream] = []
        self._counts: dict[str, int] = {}
        self._count_error: BaseException | None = None
        self._stopped = False
        self._conn = connect(source.dsn)
        try:
            self._prepare()
        except BaseException:
            self.stop()
            raise

    # Setup

    def _prepare(self) -> None:
        import psycopg

        from pgvault.postgres.database import read_database_facts

        src, conn = self._source, self._conn
        self._server_version_num = conn.info.server_version
        major = self._server_version_num // 10000
        self._binary = find_binary("pg_dump", server_major=major, configured=src.pg_dump)
        self._pg_dump_version = tool_version(self._binary)
        row = conn.execute(
            "SELECT current_database(), current_setting('server_version')"
        ).fetchone()
        assert row is not None
        self._database, self._server_version = str(row[0]), str(row[1])

        if src.lock_wait_timeout:
            # pgvault's own look at the tables (their sizes, the counts) takes the same locks
            # pg_dump does, so it must give up as soon as pg_dump would, not wait forever.
            try:
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, false)", [src.lock_wait_timeout]
                )
            except psycopg.Error as exc:
                raise SourceError(
                    f"source.lock_wait_timeout {src.lock_wait_timeout!r}: {first_line(str(exc))}"
                ) from None

        self._globals = self._globals_choice() if src.globals else None

        # Hold one snapshot open for the whole run: pg_dump imports it and the counts use it.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            # The snapshot is taken by this, the transaction's first statement: its start is
            # the moment the dump shows (recorded beside a set's file times).
            snap = conn.execute("SELECT pg_export_snapshot(), statement_timestamp()").fetchone()
            self._snapshot: str | None = str(snap[0]) if snap else None
            self._snapshot_at = _iso_utc(snap[1]) if snap else None
        except psycopg.Error as exc:
            # Standbys before PostgreSQL 10 cannot export snapshots: dump anyway, counts are close.
            log.warning(
                "cannot export a snapshot (%s); counts may differ slightly from the dump", exc
            )
            conn.execute("ROLLBACK")
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._snapshot = None
            at = conn.execute("SELECT statement_timestamp()").fetchone()
            self._snapshot_at = _iso_utc(at[0]) if at else None

        try:
            self._tables = self._list_tables()
            self._exact = self._resolve_count_tables()
        except psycopg.errors.LockNotAvailable as exc:
            raise SourceError(
                f"database {self._database}: a table stayed locked by another session for longer "
                f"than source.lock_wait_timeout ({src.lock_wait_timeout}): {first_line(str(exc))}"
            ) from None
        lo_row = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
        self._large_objects = int(str(lo_row[0])) if lo_row else 0
        self._database_facts = read_database_facts(conn)
        self._launch()
        # Counting runs beside the dump (same snapshot, so the figures still match it).
        self._count_thread = threading.Thread(
            target=self._count_rows, daemon=True, name="pgvault-count"
        )
        self._count_thread.start()

    def _list_tables(self) -> list[_Table]:
        src = self._source
        where = [
            "c.relkind IN ('r', 'p')",
            "n.nspname NOT IN ('pg_catalog', 'information_schema')",
            "n.nspname NOT LIKE 'pg\\_toast%%'",
            "n.nspname NOT LIKE 'pg\\_temp%%'",
            # Tables that belong to an extension are dumped by CREATE EXTENSION, not as data.
            "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
            "AND d.objid = c.oid AND d.deptype = 'e')",
        ]
        params: list[str] = []
        if src.schemas:
            clauses = []
            for pat in src.schemas:
                clauses.append("n.nspname ~ %s")
                params.append(_name_regex(pat))
            where.append("(" + " OR ".join(clauses) + ")")
        for pat in src.exclude_schemas:
            where.append("n.nspname !~ %s")
            params.append(_name_regex(pat))
        for pat in src.exclude_tables:
            schema_part, name_part = _split_pattern(pat)
            if schema_part is None:
                where.append("NOT (c.relname ~ %s AND pg_catalog.pg_table_is_visible(c.oid))")
                params.append(_name_regex(name_part))
            else:
                where.append("NOT (n.nspname ~ %s AND c.relname ~ %s)")
                params += [_name_regex(schema_part), _name_regex(name_part)]
        # Only fixed clauses are joined here; every user-given pattern is a bound parameter.
        sql = (
            # pg_stat_get_live_tuples is what pg_stat_all_tables.n_live_tup reads; joining the
            # view instead computed its two dozen columns for every relation: 3 ms of a
            # database's 10 ms listing, paid by each database of a many-database run.
            f"SELECT n.nspname, c.relname, {_ESTIMATE}, pg_stat_get_live_tuples(c.oid), "  # noqa: S608
            # The size functions lock the table: a partitioned one, which has no storage, is
            # left to pg_dump, which takes its locks itself (and gives up per lock_wait_timeout).
            "CASE WHEN c.relkind = 'p' THEN 0 ELSE pg_total_relation_size(c.oid) END, "
            "c.relkind = 'p', pn.nspname, pc.relname "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "CROSS JOIN LATERAL (SELECT CASE WHEN c.relkind = 'p' THEN 0 "
            "ELSE pg_relation_size(c.oid) END AS main_bytes) z "
            "LEFT JOIN pg_inherits i ON c.relispartition AND i.inhrelid = c.oid "
            "LEFT JOIN pg_class pc ON pc.oid = i.inhparent "
            "LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace "
            f"WHERE {' AND '.join(where)} ORDER BY 1, 2"
        )
        rows = self._conn.execute(sql, params).fetchall()
        return _with_partition_estimates(
            [
                _Table(
                    str(s),
                    str(t),
                    _int_or_none(e),
                    _int_or_none(live),
                    int(str(z)),
                    partitioned=bool(p),
                    parent=(str(ps), str(pt)) if ps is not None else None,
                )
                for s, t, e, live, z, p, ps, pt in rows
            ]
        )

    def _resolve_count_tables(self) -> list[_Table]:
        wanted = self._source.count_tables
        if not wanted:
            return []
        if "*" in wanted:
            return list(self._tables)
        by_name = {t.qualified: t for t in self._tables}
        leaves = _leaves(self._tables)
        chosen: list[_Table] = []
        for name in wanted:
            row = self._conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
                [name],
            ).fetchone()
            if row is None:
                raise SourceError(
                    f"source.count_tables: table {name!r} does not exist in database "
                    f"{self._database}"
                )
            qualified = f"{row[0]}.{row[1]}"
            if qualified not in by_name:
                raise SourceError(
                    f"source.count_tables: table {name!r} is not part of the dump (excluded?)"
                )
            table = by_name[qualified]
            chosen.append(table)
            # A partitioned table counts as the sum of its partitions, each counted exactly.
            chosen += leaves.get((table.schema, table.name), [])
        return list(dict.fromkeys(chosen))

    def _launch(self) -> None:
        src = self._source
        conninfo, env = split_dsn(src.dsn)
        base = [self._binary, f"--dbname={conninfo}", "--no-password"]
        if self._snapshot:
            base.append(f"--snapshot={self._snapshot}")
        if src.lock_wait_timeout:
            base.append(f"--lock-wait-timeout={src.lock_wait_timeout}")
        parts = self._split() if src.jobs > 1 else []
        main = [*base, f"--format={FORMAT_FLAGS[src.format]}"]
        if src.format == "custom":
            main.append("--compress=0")  # pgvault's transforms compress, faster and in parallel
        main += [f"--schema={p}" for p in src.schemas]
        main += [f"--exclude-schema={p}" for p in src.exclude_schemas]
        main += [f"--exclude-table={p}" for p in src.exclude_tables]
        for part in parts:
            main += [f"--exclude-table-data={t.pattern}" for t in part]
        self._spawn(STREAM_NAMES[src.format], "main", main, env)
        for i, part in enumerate(parts, start=1):
            argv = [*base, "--format=c", "--compress=0", "--section=data"]
            argv += [f"--table={t.pattern}" for t in part]
            self._spawn(f"data-{i:02d}.pgdump", "data", argv, env)
        if self._globals is not None:
            self._spawn_globals(conninfo, env)

    def _spawn_globals(self, conninfo: str, env: dict[str, str]) -> None:
        assert self._globals is not None
        argv = [self._dumpall, f"--dbname={conninfo}", "--no-password", "--globals-only"]
        if not self._globals["role_passwords"]:
            argv.append("--no-role-passwords")
        self._spawn(GLOBALS_STREAM, GLOBALS_ROLE, argv, env, binary=self._dumpall)

    def _globals_choice(self) -> dict[str, Any]:
        """The manifest's ``globals`` record, deciding on passwords before anything runs:
        reading password hashes needs ``pg_authid``, which only superusers may read, and
        ``pg_dumpall`` would fail on it mid-backup rather than leave them out."""
        import psycopg

        src, conn = self._source, self._conn
        self._dumpall = _sibling(self._binary, "pg_dumpall", src.pg_dump, self._server_version_num)
        choice: dict[str, Any] = {"artifact": GLOBALS_STREAM, "role_passwords": False}
        if src.role_passwords:
            try:
                conn.execute("SELECT 1 FROM pg_authid LIMIT 0")
                choice["role_passwords"] = True
            except psycopg.errors.InsufficientPrivilege:
                choice["role_passwords_note"] = (
                    "role passwords left out: the backup role cannot read pg_authid"
                )
                log.warning(
                    "source.role_passwords: the backup role cannot read pg_authid; "
                    "the roles are stored without their passwords"
                )
        return choice

    def _split(self) -> list[list[_Table]]:
        """Deal the largest tables' data into ``jobs - 1`` parts, balancing bytes across all."""
        bins: list[list[_Table]] = [[] for _ in range(self._source.jobs)]
        loads = [0] * len(bins)
        # Only tables that hold rows: a partitioned table's are its partitions'.
        holders = [t for t in self._tables if not t.partitioned]
        for table in sorted(holders, key=lambda t: t.size, reverse=True):
            i = loads.index(min(loads))
            bins[i].append(table)
            loads[i] += table.size
        return [b for b in bins[1:] if b]

    def _spawn(
        self,
        name: str,
        role: str,
        argv: list[str],
        env: dict[str, str],
        binary: str | None = None,
    ) -> None:
        binary = binary or self._binary
        try:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(env)
            )
        except OSError as exc:
            raise SourceError(f"cannot run {binary}: {exc.strerror}") from None
        assert proc.stdout is not None
        capacity = widen_pipe(proc.stdout.fileno())
        err = _Collector(proc.stderr)
        self._procs.append((name, proc, err))
        chunks = self._read(proc, err, binary, capacity)
        self._streams.append(SourceStream(name=name, chunks=chunks, role=role))

    def _read(
        self, proc: subprocess.Popen[bytes], err: _Collector, binary: str, capacity: int
    ) -> Iterator[bytes]:
        assert proc.stdout is not None
        yield from pipe_chunks(proc.stdout, capacity, CHUNK_SIZE)
        rc = proc.wait()
        stderr = err.text(timeout=10)
        if rc != 0:
            raise SourceError(exit_description(binary, rc, stderr))
        if stderr.strip():
            log.warning("%s: %s", Path(binary).name, stderr.strip())

    def _count_rows(self) -> None:
        try:
            for table in self._exact:
                if table.partitioned:
                    continue  # the sum of its partitions, below: each row is read once
                row = self._conn.execute(
                    f"SELECT count(*) FROM {table.pattern}"  # noqa: S608 - quoted identifiers
                ).fetchone()
                self._counts[table.qualified] = int(str(row[0])) if row else 0
            leaves = _leaves(self._tables)
            for table in self._exact:
                if table.partitioned:
                    # Only the partitions in the dump: an excluded one's rows are not in it.
                    mine = leaves.get((table.schema, table.name), [])
                    self._counts[table.qualified] = sum(self._counts[t.qualified] for t in mine)
        except BaseException as exc:
            self._count_error = exc

    # SourceRun

    @property
    def streams(self) -> Sequence[SourceStream]:
        return self._streams

    def metadata(self) -> dict[str, Any]:
        self._count_thread.join()
        if self._count_error is not None:
            raise SourceError(f"counting rows failed: {self._count_error}")
        exact = {t.qualified for t in self._exact}
        src = self._source
        # Each table's partitions, gathered in one pass: asking every table for its own made
        # this quadratic in the table count (1.8 s at 2,000 tables, 46 s at 10,000).
        children: dict[tuple[str, str], list[_Table]] = {}
        for p in self._tables:
            if p.parent is not None:
                children.setdefault(p.parent, []).append(p)
        return {
            "database": self._database,
            "server_version": self._server_version,
            "server_version_num": self._server_version_num,
            "pg_dump_version": self._pg_dump_version,
            "format": src.format,
            "jobs": src.jobs,
            "snapshot": self._snapshot is not None,
            **({"snapshot_at": self._snapshot_at} if self._snapshot_at else {}),
            "schemas": list(src.schemas),
            "exclude_schemas": list(src.exclude_schemas),
            "exclude_tables": list(src.exclude_tables),
            "large_objects": self._large_objects,
            **self._database_facts,
            **({"globals": self._globals} if self._globals is not None else {}),
            "tables": [
                _table_record(
                    t,
                    self._counts[t.qualified] if t.qualified in exact else None,
                    children.get((t.schema, t.name), []),
                )
                for t in self._tables
            ],
        }

    def stop(self) -> None:
        import psycopg

        if self._stopped:
            return
        self._stopped = True
        for _name, proc, _err in self._procs:
            if proc.poll() is None:
                proc.kill()
        for _name, proc, _err in self._procs:
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
        with contextlib.suppress(psycopg.Error):
            self._conn.cancel()  # a count(*) may still be running
        self._conn.close()


class _GlobalsRun(_PgDumpRun):
    """Only the cluster's globals (``pg_dumpall --globals-only``), for a many-database dump,
    which stores them once for all its databases."""

    def _prepare(self) -> None:
        self._server_version_num = self._conn.info.server_version
        major = self._server_version_num // 10000
        self._binary = find_binary("pg_dump", server_major=major, configured=self._source.pg_dump)
        self._globals = self._globals_choice()
        self._spawn_globals(*split_dsn(self._source.dsn))

    def metadata(self) -> dict[str, Any]:
        return {"globals": self._globals}


def _start_many(source: PgDumpSource) -> SourceRun:
    """Start a dump of every database ``source.databases`` chooses (see
    :mod:`pgvault.sources.databases`): the globals once, then each database in its own
    snapshot, ``jobs`` at a time."""
    maintenance = source.server_dsn
    with connect(maintenance) as conn:
        version_num = conn.info.server_version
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
        server_version = str(row[0]) if row else ""
        rows = conn.execute(
            "SELECT datname, pg_database_size(oid) FROM pg_database "
            "WHERE NOT datistemplate AND datallowconn AND has_database_privilege(oid, 'CONNECT') "
            "ORDER BY datname"
        ).fetchall()
    sizes = {str(name): int(str(size)) for name, size in rows}
    names = choose_databases(list(sizes), source.databases, source.exclude_databases)
    binary = find_binary("pg_dump", server_major=version_num // 10000, configured=source.pg_dump)
    metadata = {
        "databases": names,
        "database_patterns": list(source.databases),
        "exclude_databases": list(source.exclude_databases),
        "server_version": server_version,
        "server_version_num": version_num,
        "pg_dump_version": tool_version(binary),
        "format": source.format,
        "jobs": source.jobs,
    }
    shared = _GlobalsRun(attrs.evolve(source, dsn=maintenance)) if source.globals else None
    # Largest first: with jobs at a time, a big database started last would set the run's end.
    order = sorted(names, key=lambda n: (-sizes[n], n))
    return ManyDatabasesRun(
        names,
        order,
        lambda name: _PgDumpRun(source.for_database(name)),
        STREAM_NAMES[source.format],
        source.jobs,
        shared,
        metadata,
    )


def choose_databases(
    present: Sequence[str], wanted: Sequence[str], excluded: Sequence[str]
) -> list[str]:
    """The databases of ``present`` that ``wanted`` names and ``excluded`` does not, in order.

    Entries are database names as they are (case-sensitive, no quoting), where ``*`` and ``?``
    are wildcards. A name without wildcards that is not present (or not connectable) is an
    error, as is a choice that leaves nothing to dump.
    """
    for name in wanted:
        if not _is_pattern(name) and name not in present:
            raise SourceError(
                f"source.databases: database {name!r} does not exist on the server "
                "(or is a template, or does not allow connections)"
            )
    chosen = [
        db
        for db in present
        if any(fnmatch.fnmatchcase(db, w) for w in wanted)
        and not any(fnmatch.fnmatchcase(db, x) for x in excluded)
    ]
    if not chosen:
        raise SourceError("source.databases: no database to dump (all excluded, or none match)")
    return chosen


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def _has_dbname(dsn: str) -> bool:
    try:
        return bool(parse_conninfo(dsn).get("dbname")) or bool(os.environ.get("PGDATABASE"))
    except ValueError:
        return False


def _iso_utc(value: object) -> str | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sibling(binary: str, name: str, configured: str | None, version_num: int) -> str:
    """The client tool ``name`` beside ``binary`` when the user chose the binary (``pg_dump =
    …``); else found like pg_dump, by the server's major version."""
    if configured:
        beside = Path(binary).with_name(name)
        if beside.is_file():
            return str(beside)
    return find_binary(name, server_major=version_num // 10000)


def _split_pattern(pattern: str) -> tuple[str | None, str]:
    """Split a pg_dump pattern at its unquoted dot: ``(schema or None, name)``."""
    in_quotes = False
    for i, ch in enumerate(pattern):
        if ch == '"':
            in_quotes = not in_quotes
        elif ch == "." and not in_quotes:
            return pattern[:i], pattern[i + 1 :]
    return None, pattern


def _name_regex(pattern: str) -> str:
    """A POSIX regex equal to one part of a pg_dump name pattern (psql's \\d rules).

    Unquoted text is folded to lower case and ``*``/``?`` are wildcards; inside double quotes
    everything is literal and case is kept; ``""`` is a literal quote.
    """
    out: list[str] = []
    in_quotes = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == '"':
            if in_quotes and pattern[i + 1 : i + 2] == '"':
                out.append('"')
                i += 2
                continue
            in_quotes = not in_quotes
        elif not in_quotes and ch == "*":
            out.append(".*")
        elif not in_quotes and ch == "?":
            out.append(".")
        else:
            out.append(re.escape(ch if in_quotes else ch.lower()))
        i += 1
    return "^(" + "".join(out) + ")$"


def schema_selected(schema: str, patterns: Sequence[str]) -> bool:
    """Whether pg_dump's ``--schema`` patterns select ``schema``."""
    return any(re.fullmatch(_name_regex(p), schema) for p in patterns)
