"""Validation after a restore: every table the backup recorded is there with its rows.

Tables counted exactly at backup time are counted again. The others carry estimates, and are
measured cheaply: a table of up to :data:`SAMPLE_PAGES` pages is counted, a larger one sampled
(``TABLESAMPLE SYSTEM``, whole pages, about :data:`SAMPLE_PAGES` of them) and its rows per
sampled page scaled to its pages. This replaced an ``ANALYZE`` of every table, which computes
statistics of every column: on 2,000 small tables most of validation's time. Counts go to the
server in batches (one statement counts up to :data:`COUNT_BATCH` tables), so many small tables
cost a few round trips, not one each.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import psycopg

from pgvault.postgres.client import connect
from pgvault.settings import RestoreSettings
from pgvault.vault.manifest import Manifest

if TYPE_CHECKING:
    from pgvault.operations.restore.target import DatabaseTarget

ESTIMATE_SLACK_ROWS = 1000
"""Row differences this small never fail an estimate comparison (small tables' estimates jump)."""

SAMPLE_PAGES = 1000
"""Pages read to estimate a large table's rows (8 MB); a table of fewer pages is counted."""

COUNT_BATCH = 200
"""Tables counted by one statement (``count(*)`` of each, ``UNION ALL``)."""

_Conn = psycopg.Connection[tuple[object, ...]]


@attrs.frozen
class TableCheck:
    """One table compared after a restore: what the manifest recorded and what is there now."""

    schema: str
    name: str
    recorded: int | None
    restored: int | None
    exact: bool
    ok: bool
    reason: str = ""

    @property
    def qualified(self) -> str:
        """``schema.name``."""
        return f"{self.schema}.{self.name}"


@attrs.frozen
class ValidationReport:
    """Restored database against the manifest: every table present, counts as recorded."""

    tables: tuple[TableCheck, ...]

    @property
    def ok(self) -> bool:
        """Whether every table passed."""
        return all(t.ok for t in self.tables)

    @property
    def failures(self) -> tuple[TableCheck, ...]:
        """The tables that did not pass."""
        return tuple(t for t in self.tables if not t.ok)

    def describe_failures(self) -> str:
        """``public.users: missing; sales.orders: 4999 rows, backup counted 5000 exactly``."""
        return "; ".join(f"{t.qualified}: {t.reason}" for t in self.failures)


@attrs.frozen
class _Present:
    oid: int
    ident: str
    pages: int
    partitioned: bool


def validate_database(
    manifest: Manifest,
    target: DatabaseTarget,
    settings: RestoreSettings | None = None,
    *,
    selected: Collection[tuple[str, str]] | None = None,
) -> ValidationReport:
    """Compare the restored database with the tables the manifest recorded at backup time.

    Tables counted exactly at backup time are counted again and must match exactly; for the
    others the rows now (counted, or estimated from a sample of pages on a large table) are
    compared with the recorded estimates within ``estimate_tolerance`` (and
    ``ESTIMATE_SLACK_ROWS``). A partitioned table is counted through itself, so its rows are
    those of every partition still attached; its estimate is the sum of its leaf partitions'.
    With ``selected`` (``(schema, name)`` pairs), exactly those tables are expected: each must
    be present, also one the manifest does not record (a partitioned table in a backup older
    than pgvault recording them).
    """
    settings = settings or RestoreSettings()
    recorded = manifest.source.get("tables", [])
    expected = [t for t in recorded if selected is None or (t["schema"], t["name"]) in selected]
    if selected is not None:
        known = {(t["schema"], t["name"]) for t in recorded}
        expected += [
            {"schema": s, "name": n, "rows": None, "exact": False}
            for s, n in sorted(selected)
            if (s, n) not in known
        ]
    with connect(target.dsn, dbname=target.name) as conn:
        present = _present_tables(conn)
        rows = _Rows(conn, present)
        wanted: list[int] = []
        exact: set[int] = set()
        for t in expected:
            table = present.get((t["schema"], t["name"]))
            if table is None:
                continue
            if t.get("exact"):
                wanted.append(table.oid)
                exact.add(table.oid)
            elif _recorded_estimates(t.get("rows"), t.get("live_rows")):
                wanted += rows.leaves(table.oid) if table.partitioned else [table.oid]
        rows.measure(wanted, exact)
        checks = [_check(t, present, rows, settings.estimate_tolerance) for t in expected]
    return ValidationReport(tuple(checks))


def _check(
    t: Mapping[str, Any], present: Mapping[tuple[str, str], _Present], rows: _Rows, tolerance: float
) -> TableCheck:
    schema, name, recorded, exact = t["schema"], t["name"], t.get("rows"), t.get("exact")
    table = present.get((schema, name))
    if table is None:
        return TableCheck(schema, name, recorded, None, bool(exact), False, "missing")
    if exact:
        actual = rows.rows[table.oid]
        ok = actual == recorded
        reason = "" if ok else f"{actual} rows, the backup counted {recorded} exactly"
        return TableCheck(schema, name, recorded, actual, True, ok, reason)
    opinions = _recorded_estimates(recorded, t.get("live_rows"))
    if not opinions:  # no statistics at backup time: nothing to compare
        return TableCheck(schema, name, None, None, False, True)
    oids = rows.leaves(table.oid) if table.partitioned else [table.oid]
    estimate = sum(rows.rows.get(oid, 0) for oid in oids)  # a foreign partition: none
    # Either estimate will do: each goes wrong in its own way (see pg_dump's _ESTIMATE and
    # live_rows), and a good restore must not fail, and be dropped, for stale stats.
    ok = any(abs(estimate - r) <= max(ESTIMATE_SLACK_ROWS, tolerance * r) for r in opinions)
    said = " or ".join(str(r) for r in opinions)
    reason = (
        ""
        if ok
        else f"about {estimate} rows, the backup estimated {said} (tolerance {tolerance:.0%})"
    )
    return TableCheck(schema, name, opinions[0], estimate, False, ok, reason)


def _present_tables(conn: _Conn) -> dict[tuple[str, str], _Present]:
    """Every table of the restored database, with its size in pages."""
    return {
        (str(s), str(n)): _Present(int(str(oid)), str(ident), int(str(pages)), kind == "p")
        for s, n, oid, ident, pages, kind in conn.execute(
            "SELECT n.nspname, c.relname, c.oid::bigint, "
            "quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
            "CASE WHEN c.relkind = 'p' THEN 0 "
            "ELSE pg_relation_size(c.oid) / current_setting('block_size')::int END, "
            "c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p')"
        ).fetchall()
    }


class _Rows:
    """Rows of tables of the restored database, measured once each: ``rows[oid]``."""

    def __init__(self, conn: _Conn, present: Mapping[tuple[str, str], _Present]) -> None:
        self._conn = conn
        self._by_oid = {p.oid: p for p in present.values()}
        self.rows: dict[int, int] = {}
        self._leaves: dict[int, list[int]] = {}

    def leaves(self, oid: int) -> list[int]:
        """The attached leaf partitions of partitioned table ``oid``."""
        if oid not in self._leaves:
            self._leaves[oid] = [
                int(str(r[0]))
                for r in self._conn.execute(
                    "SELECT relid::oid::bigint FROM pg_partition_tree(%s::oid) WHERE isleaf",
                    [oid],
                ).fetchall()
            ]
        return self._leaves[oid]

    def measure(self, oids: Sequence[int], exact: Collection[int] = ()) -> None:
        """Count every table of ``exact`` (compared exactly: a sample would fail a good
        restore), every other one of ``oids`` up to :data:`SAMPLE_PAGES` pages, and partitioned
        ones (through themselves); estimate larger ones from a sample of their pages."""
        todo = [o for o in dict.fromkeys(oids) if o not in self.rows and o in self._by_oid]
        small = [o for o in todo if o in exact or self._by_oid[o].pages <= SAMPLE_PAGES]
        for i in range(0, len(small), COUNT_BATCH):
            batch = small[i : i + COUNT_BATCH]
            sql = " UNION ALL ".join(
                f"SELECT {n}, count(*) FROM {self._by_oid[o].ident}"  # noqa: S608 - quoted
                for n, o in enumerate(batch)
            )
            for n, count in self._conn.execute(sql).fetchall():
                self.rows[batch[int(str(n))]] = int(str(count))
        for oid in todo:
            if oid not in self.rows:
                self.rows[oid] = self._sampled(self._by_oid[oid])

    def _sampled(self, table: _Present) -> int:
        # SYSTEM sampling picks whole pages: the rows on the pages it read, over the pages it
        # read (their ctid's block numbers), times the table's pages. A page without rows is
        # not seen, which a freshly loaded table hardly has.
        percent = min(100.0, 100.0 * SAMPLE_PAGES / table.pages)
        row = self._conn.execute(
            "SELECT count(*), count(DISTINCT (ctid::text::point)[0]) "  # noqa: S608 - quoted
            f"FROM {table.ident} TABLESAMPLE SYSTEM (%s) REPEATABLE (17)",
            [percent],
        ).fetchone()
        rows, pages = (int(str(row[0])), int(str(row[1]))) if row else (0, 0)
        if not pages:
            # A sample that drew no page of a table that has some: count it after all.
            counted = self._conn.execute(f"SELECT count(*) FROM {table.ident}").fetchone()  # noqa: S608
            return int(str(counted[0])) if counted else 0
        return round(rows / pages * table.pages)


def _recorded_estimates(rows: object, live_rows: object) -> list[int]:
    """The estimates a backup recorded for a table: the planner's, then the statistics
    system's live-row count. A live count of zero beside no planner estimate is left out: it is
    what a stats reset, a crash or a standby shows for a table of any size."""
    opinions = [int(str(rows))] if rows is not None else []
    if live_rows is not None and (opinions or int(str(live_rows)) > 0):
        opinions.append(int(str(live_rows)))
    return opinions
