"""What a restore hands pg_restore: a partial restore's selection, resolved and expanded.

``--table`` and ``--schema`` take names by PostgreSQL's rules: an unquoted name folds to lower
case, a double-quoted one keeps its case, dots and spaces (``""`` is a quote), and a dot outside
quotes separates schema from table. Names are resolved against the archive's own table of
contents (:func:`pgvault.postgres.archive.read_toc_stream`), never by pg_restore's ``-t``/``-n``,
which
match plain names only and follow neither partitions nor dependencies.

A selection is then expanded with the dependencies pg_dump recorded in the archive:

* a partitioned table brings its partitions (every level, the default partition too) with their
  data and ``ATTACH`` entries;
* what the selected objects need to exist comes along: their schema, types, domains,
  sequences, collations, functions, extensions — never another table: a selected object that
  needs a table the selection leaves out (a view over it, a column of its row type) is refused,
  naming that table;
* what belongs to the selected tables comes along: their data, sequences (values and
  ownership), defaults, constraints, indexes, triggers, rules, policies, row security,
  statistics, comments, security labels and grants — unless it also needs something the
  selection leaves out (a foreign key to an unselected table, a policy reading one): such
  objects are left out, and named in the restore's warnings, grouped by the table they need.

A partial restore never brings large objects, publications, subscriptions, event triggers,
default privileges or database-level settings.

Every restore from an archive (partial or not) leaves the ``MATERIALIZED VIEW DATA`` entries to
pgvault, which refreshes them itself once pg_restore is done (see
:mod:`pgvault.operations.restore.database`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import attrs

from pgvault.exceptions import RestoreError
from pgvault.postgres.archive import ArchiveToc, TocEntry

RELATIONS = frozenset({"TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE"})
"""Kinds of relation: pulled into a restore only when selected (or a selected table's
partitions), never because something needs them."""

SELECTABLE = RELATIONS | {"SEQUENCE"}
"""What ``--table`` can name, as with pg_restore ``-t``."""

PREREQUISITES = frozenset(
    {
        "SCHEMA",
        "TYPE",
        "SHELL TYPE",
        "DOMAIN",
        "SEQUENCE",
        "FUNCTION",
        "PROCEDURE",
        "AGGREGATE",
        "COLLATION",
        "CONVERSION",
        "EXTENSION",
        "OPERATOR",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "PROCEDURAL LANGUAGE",
        "CAST",
        "TRANSFORM",
        "ACCESS METHOD",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH CONFIGURATION",
        "FOREIGN DATA WRAPPER",
        "SERVER",
    }
)
"""Kinds restored when a selected object needs them."""

BELONGINGS = frozenset(
    {
        "TABLE DATA",
        "TABLE ATTACH",
        "INDEX",
        "INDEX ATTACH",
        "CONSTRAINT",
        "FK CONSTRAINT",
        "CHECK CONSTRAINT",
        "DEFAULT",
        "TRIGGER",
        "RULE",
        "POLICY",
        "ROW SECURITY",
        "STATISTICS",
        "STATISTICS DATA",
        "COMMENT",
        "SECURITY LABEL",
        "ACL",
        "SEQUENCE SET",
        "SEQUENCE OWNED BY",
        "MATERIALIZED VIEW DATA",
        "USER MAPPING",
    }
)
"""Kinds restored with what they belong to, when everything they need is restored too."""

SESSION = frozenset({"ENCODING", "STDSTRINGS", "SEARCHPATH"})
"""Entries that set up pg_restore's session: always listed."""

_DEFERRED = "MATERIALIZED VIEW DATA"
# PostgreSQL's unquoted identifier: a letter, "_" or any non-ASCII character, then digits and
# "$" too (scan.l's ident_start and ident_cont, where every byte >= 0x80 counts as a letter).
_UNQUOTED = re.compile("[A-Za-z_\u0080-\U0010ffff][A-Za-z_0-9$\u0080-\U0010ffff]*")
_BLANK = " \t\n\r\f\v"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NAMEDATALEN = 63  # bytes PostgreSQL keeps of an identifier


def parse_name(text: str, option: str, *, parts: int) -> tuple[str, ...]:
    """The identifiers of ``text`` by PostgreSQL's rules: 1 to ``parts`` dot-separated names.

    Unquoted names fold to lower case (ASCII letters, as PostgreSQL does in multibyte
    encodings) and may hold letters, digits, ``_`` and ``$``; quoted ones keep everything, a
    doubled quote standing for one. Names longer than 63 bytes are cut as PostgreSQL cuts them.
    ``option`` (``--table``) names the option in errors.
    """
    out: list[str] = []
    i, n = 0, len(text)

    def bad(why: str) -> RestoreError:
        example = 'app."Weird Name"' if parts > 1 else '"Mixed Case"'
        return RestoreError(
            f"{option} {text!r}: not a valid name ({why}); quote names with capitals, spaces "
            f"or dots as PostgreSQL does, e.g. {option} '{example}'"
        )

    while True:
        while i < n and text[i] in _BLANK:
            i += 1
        if i < n and text[i] == '"':
            j, name = i + 1, []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise bad("unterminated quote")
                name.append(text[j:k])
                if text[k + 1 : k + 2] == '"':
                    name.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            ident = "".join(name)
            if not ident:
                raise bad('"" is an empty name')
        else:
            match = _UNQUOTED.match(text, i)
            if match is None:
                found = repr(text[i]) if i < n else "nothing"
                raise bad(f"{found} where a name should start")
            ident = match.group().translate(_ASCII_LOWER)
            i = match.end()
        out.append(_truncated(ident))
        while i < n and text[i] in _BLANK:
            i += 1
        if i == n:
            break
        if text[i] != ".":
            raise bad(f"{text[i]!r} after {out[-1]!r}")
        i += 1
    if len(out) > parts:
        raise RestoreError(
            f"{option} {text!r}: give "
            + ("schema.table (or just table)" if parts == 2 else "one schema name")
            + f", not {len(out)} names"
        )
    return tuple(out)


def _truncated(name: str) -> str:
    data = name.encode("utf-8")
    if len(data) <= _NAMEDATALEN:
        return name
    return data[:_NAMEDATALEN].decode("utf-8", "ignore")


def display_name(*parts: str) -> str:
    """``app."Weird Name"``: each part quoted only where PostgreSQL needs it."""
    return ".".join(
        p if re.fullmatch(r"[a-z_][a-z0-9_$]*", p) else '"' + p.replace('"', '""') + '"'
        for p in parts
    )


@attrs.frozen
class RestorePlan:
    """What to restore from a backup's archives, and what pgvault does itself afterwards."""

    entries: frozenset[int]
    """Dump ids of the main archive's entries to restore."""
    partial: bool
    """Whether ``--table``/``--schema`` selected part of the archive."""
    tables: tuple[tuple[str, str], ...] = ()
    """``(schema, name)`` of every table a partial restore brings (partitions included)."""
    refreshes: tuple[TocEntry, ...] = ()
    """The materialized views to refresh after pg_restore, in the archive's order."""
    left_out: tuple[str, ...] = ()
    """Warnings naming what a partial restore left out because it needs unselected tables."""
    creates_public: bool = False
    """Whether the restore runs the archive's own ``CREATE SCHEMA public``."""
    keys: frozenset[tuple[str, str, str]] = frozenset()
    """``(kind, schema, name)`` of the restored relations, to filter data-only archives."""

    def use_list(self, toc: ArchiveToc) -> str:
        """A pg_restore ``--use-list`` for the main archive ``toc``, in the archive's order
        (pg_restore restores a list in its own order)."""
        return listing(e for e in toc.entries if e.dump_id in self.entries)

    def data_use_list(self, toc: ArchiveToc) -> str | None:
        """A ``--use-list`` for a data-only archive of a split dump: the data of the restored
        tables and sequences; None when it holds none of it."""
        wanted = {
            e.dump_id
            for e in toc.entries
            if (e.desc == "TABLE DATA" and ("TABLE", e.namespace, e.tag) in self.keys)
            or (e.desc == "SEQUENCE SET" and ("SEQUENCE", e.namespace, e.tag) in self.keys)
        }
        if not wanted:
            return None
        return listing(e for e in toc.entries if e.desc in SESSION or e.dump_id in wanted)


def listing(entries: Iterable[TocEntry]) -> str:
    """A pg_restore ``--use-list`` of ``entries``, in the order given."""
    # pg_restore reads the number before ';' and ignores the rest: the comment is for people.
    lines = []
    for e in entries:
        comment = f"{e.desc} {e.namespace or '-'} {e.tag}".encode("ascii", "backslashreplace")
        lines.append(f"{e.dump_id}; {comment.decode('ascii').replace(chr(10), ' ')}")
    return "\n".join(lines) + "\n"


def plan_restore(
    toc: ArchiveToc,
    *,
    tables: Sequence[str] = (),
    schemas: Sequence[str] = (),
    backup_id: str = "",
) -> RestorePlan:
    """The plan for restoring ``toc`` whole, or the ``tables`` and ``schemas`` selected.

    Raises :class:`RestoreError` when a name is not valid, matches nothing in the archive, is
    ambiguous, or selects an object that needs a table the selection leaves out.
    """
    if not tables and not schemas:
        refreshes = tuple(e for e in toc.entries if e.desc == _DEFERRED)
        ids = frozenset(e.dump_id for e in toc.entries if e.desc != _DEFERRED)
        return RestorePlan(ids, partial=False, refreshes=refreshes)
    return _Expansion(toc, backup_id).plan(tables, schemas)


class _Expansion:
    """Resolves a selection against one archive and expands it by its dependencies."""

    def __init__(self, toc: ArchiveToc, backup_id: str) -> None:
        self.toc = toc
        self.backup = f"backup {backup_id}" if backup_id else "the backup"
        self.by_id: dict[int, TocEntry] = {e.dump_id: e for e in toc.entries}
        self.relations: dict[tuple[str, str], TocEntry] = {
            (e.namespace, e.tag): e for e in toc.entries if e.desc in SELECTABLE
        }
        self.schemas = {e.tag for e in toc.entries if e.desc == "SCHEMA"} | {
            e.namespace for e in toc.entries if e.namespace
        }
        self.children, self.legacy_children = self._partitions()
        self.parent_of = {kid: p for p, kids in self.children.items() for kid in kids}
        self.included: set[int] = set()
        self.soft_ancestors: set[int] = set()
        self._needs: dict[int, frozenset[int] | int] = {}

    # Reading the archive

    def _partitions(self) -> tuple[dict[int, list[int]], set[int]]:
        """Parent table → its partitions, from the ``TABLE ATTACH`` entries (pg_dump 14 and
        later) or, in older archives, from partitions created ``PARTITION OF`` their parent;
        and the ids of those older partitions, which cannot be created without the parent."""
        children: dict[int, list[int]] = {}
        legacy: set[int] = set()
        for e in self.toc.entries:
            if e.desc == "TABLE ATTACH":
                child = self.relations.get((e.namespace, e.tag))
                for d in self._tables_among(e.dependencies):
                    if child is not None and d != child.dump_id:
                        children.setdefault(d, []).append(child.dump_id)
            elif e.desc == "TABLE" and " PARTITION OF " in e.definition:
                for d in self._tables_among(e.dependencies):
                    children.setdefault(d, []).append(e.dump_id)
                    legacy.add(e.dump_id)
        return children, legacy

    def _tables_among(self, ids: Iterable[int]) -> list[int]:
        return [d for d in ids if d in self.by_id and self.by_id[d].desc == "TABLE"]

    def deps(self, e: TocEntry) -> list[int]:
        """The entries ``e`` needs restored before it (those present in the archive).

        pg_dump records some dependencies only to order the archive: a ``CREATE SEQUENCE``
        depends on the table owning it (which its ``SEQUENCE OWNED BY`` entry needs instead,
        though it records only the sequence), and a partition, its constraints and indexes on
        its parent's (restored apart from it, they stand alone, only the ``ATTACH`` needs both).
        """
        found = [d for d in dict.fromkeys(e.dependencies) if d in self.by_id and d != e.dump_id]
        if e.desc == "SEQUENCE" and not e.definition.lstrip().upper().startswith("ALTER"):
            found = [d for d in found if self.by_id[d].desc not in RELATIONS]
        elif e.desc == "SEQUENCE OWNED BY":
            for seq in list(found):
                found += [
                    d
                    for d in self.by_id[seq].dependencies
                    if d in self.by_id and self.by_id[d].desc in RELATIONS
                ]
        if not self.soft_ancestors:
            return found
        if e.desc in ("TABLE ATTACH", "INDEX ATTACH"):
            # An attach needs the partition's direct parent, and only it: pg_dump records its
            # grandparents too, to order the attaches level by level.
            tables = self._tables_among(found)
            direct = {self.parent_of[t] for t in tables if self.parent_of.get(t) in tables}
            return [
                d
                for d in found
                if not self._ancestors_only(d) or self._ancestors_only(d, among=direct)
            ]
        # Only for what is, or belongs to, a table other than those ancestors.
        own = [e.dump_id] if e.desc in RELATIONS else self._relations_among(found)
        if any(t not in self.soft_ancestors for t in own):
            found = [d for d in found if not self._ancestors_only(d)]
        return found

    def _relations_among(self, ids: Iterable[int]) -> list[int]:
        return [d for d in ids if d in self.by_id and self.by_id[d].desc in RELATIONS]

    def _ancestors_only(self, d: int, among: set[int] | None = None) -> bool:
        """Whether ``d`` is, or belongs only to, partition ancestors left out of the restore
        (or, with ``among``, to those tables)."""
        tables_of_interest = self.soft_ancestors if among is None else among
        if d in tables_of_interest:
            return True
        entry = self.by_id[d]
        if entry.desc not in ("CONSTRAINT", "INDEX"):
            return False
        tables = self._tables_among(entry.dependencies)
        return bool(tables) and all(t in tables_of_interest for t in tables)

    def needs(self, dump_id: int, visiting: frozenset[int] = frozenset()) -> frozenset[int] | int:
        """The entries to add so that ``dump_id`` can be restored (itself included), or the id
        of the entry that stops it: a relation, or something belonging to one, not restored."""
        if dump_id in self.included or dump_id in visiting:
            return frozenset()
        if dump_id in self._needs:
            return self._needs[dump_id]
        entry = self.by_id[dump_id]
        result: frozenset[int] | int
        if entry.desc not in PREREQUISITES:
            result = dump_id
        else:
            adding = {dump_id}
            result = frozenset()
            for d in self.deps(entry):
                sub = self.needs(d, visiting | {dump_id})
                if isinstance(sub, int):
                    result = sub
                    break
                adding |= sub
            else:
                result = frozenset(adding)
        if not visiting:  # results inside a cycle depend on where it was entered
            self._needs[dump_id] = result
        return result

    # Resolving and expanding

    def plan(self, tables: Sequence[str], schemas: Sequence[str]) -> RestorePlan:
        roots: dict[int, str] = {}  # dump id → what selected it, for messages
        for text in tables:
            for e in self._resolve_table(text):
                roots[e.dump_id] = f"--table {text}"
        for text in schemas:
            (schema,) = parse_name(text, "--schema", parts=1)
            self._check_schema(schema, text)
            for e in self.toc.entries:
                in_schema = e.namespace == schema and e.desc in (SELECTABLE | PREREQUISITES)
                if in_schema or (e.desc == "SCHEMA" and e.tag == schema):
                    roots.setdefault(e.dump_id, f"--schema {text}")
        selected = set(roots)
        todo = list(selected)
        while todo:  # partitioned tables bring their partitions, at every level
            parent = todo.pop()
            for child in self.children.get(parent, []):
                if child not in selected:
                    selected.add(child)
                    todo.append(child)
                    roots.setdefault(child, roots[parent])
        self.included = set(selected)
        self.soft_ancestors = self._ancestors(selected)
        for dump_id in sorted(selected):
            self._require(dump_id, roots)
        left_out = self._belongings()
        restored = [self.by_id[i] for i in self.included]
        tables_restored = sorted((e.namespace, e.tag) for e in restored if e.desc == "TABLE")
        entries = frozenset(
            e.dump_id
            for e in self.toc.entries
            if (e.dump_id in self.included and e.desc != _DEFERRED) or e.desc in SESSION
        )
        refreshes = tuple(
            e for e in self.toc.entries if e.dump_id in self.included and e.desc == _DEFERRED
        )
        return RestorePlan(
            entries,
            partial=True,
            tables=tuple(tables_restored),
            refreshes=refreshes,
            left_out=left_out,
            creates_public=any(
                e.desc == "SCHEMA" and e.tag == "public" and "CREATE SCHEMA" in e.definition
                for e in restored
            ),
            keys=frozenset((e.desc, e.namespace, e.tag) for e in restored if e.desc in SELECTABLE),
        )

    def _ancestors(self, selected: set[int]) -> set[int]:
        """Partition ancestors of selected tables that are not selected themselves (only where
        partitions are created standalone and attached apart: pg_dump 14 and later)."""
        found: set[int] = set()
        todo = [i for i in selected if i not in self.legacy_children]
        while todo:
            parent = self.parent_of.get(todo.pop())
            if parent is not None and parent not in selected and parent not in found:
                found.add(parent)
                todo.append(parent)
        return found

    def _require(self, dump_id: int, roots: Mapping[int, str]) -> None:
        """Add what selected ``dump_id`` needs, or refuse the selection, naming what it lacks."""
        entry = self.by_id[dump_id]
        for d in self.deps(entry):
            sub = self.needs(d)
            if isinstance(sub, int):
                what = self._describe(entry)
                raise RestoreError(
                    f"{roots.get(dump_id, 'the selection')}: {what} cannot be restored without "
                    f"{self._blocker(sub)}, which the selection leaves out; select it too "
                    f"(--table or --schema)"
                )
            self.included |= sub

    def _belongings(self) -> tuple[str, ...]:
        """Add what belongs to the restored objects; return warnings naming what is left out."""
        candidates = [
            e
            for e in self.toc.entries
            if e.desc in BELONGINGS or (e.desc == "SEQUENCE" and e.dump_id not in self.included)
        ]
        changed = True
        while changed:  # a belonging may belong to another (an index's comment, an attach)
            changed = False
            for e in candidates:
                if e.dump_id in self.included:
                    continue
                deps = self.deps(e)
                if not any(d in self.included for d in deps):
                    continue
                if e.desc == "SEQUENCE" and not any(
                    d in self.included and self.by_id[d].desc in RELATIONS for d in deps
                ):
                    continue  # only an identity sequence belongs to its table
                adding: set[int] = {e.dump_id}
                for d in deps:
                    sub = self.needs(d)
                    if isinstance(sub, int):
                        break
                    adding |= sub
                else:
                    self.included |= adding
                    changed = True
        # What touches the restored objects but could not come: grouped by what stops it.
        stopped: dict[str, list[str]] = {}
        for e in candidates:
            if e.dump_id in self.included:
                continue
            deps = self.deps(e)
            if not any(d in self.included for d in deps):
                continue
            if e.desc == "SEQUENCE" or not self._of_restored(e, deps):
                continue
            blockers = [b for d in deps if isinstance(b := self.needs(d), int)]
            if not blockers:  # it needs a belonging that is itself left out
                continue
            stopped.setdefault(self._blocker(blockers[0]), []).append(self._describe(e))
        return tuple(
            f"left out {len(items)} object(s) that need {blocker}, which the selection does not "
            f"include: {', '.join(items)}"
            for blocker, items in stopped.items()
        )

    def _of_restored(self, e: TocEntry, deps: list[int]) -> bool:
        """Whether ``e`` belongs to a restored object, rather than to an unselected table that
        merely points at one (that table's foreign key to a restored table)."""
        relations = self._relations_among(deps)
        owners = [
            r
            for r in relations
            if self.by_id[r].namespace == e.namespace
            and (e.tag == self.by_id[r].tag or e.tag.startswith(self.by_id[r].tag + " "))
        ]
        return any(r in self.included for r in owners or relations) or not relations

    def _owner_relation(self, dump_id: int) -> TocEntry | None:
        """The relation an entry is or belongs to (for a constraint: its table)."""
        entry = self.by_id[dump_id]
        if entry.desc in RELATIONS:
            return entry
        for d in entry.dependencies:
            if d in self.by_id and self.by_id[d].desc in RELATIONS:
                return self.by_id[d]
        return None

    def _blocker(self, dump_id: int) -> str:
        owner = self._owner_relation(dump_id)
        if owner is not None:
            return f"{owner.desc.lower()} {display_name(owner.namespace, owner.tag)}"
        return self._describe(self.by_id[dump_id])

    @staticmethod
    def _describe(e: TocEntry) -> str:
        name = display_name(e.namespace, e.tag) if e.namespace else display_name(e.tag)
        return f"{e.desc} {name}"

    def _resolve_table(self, text: str) -> list[TocEntry]:
        names = parse_name(text, "--table", parts=2)
        if len(names) == 2:
            found = self.relations.get((names[0], names[1]))
            if found is not None:
                return [found]
            hint = self._hint(names)
            raise RestoreError(
                f"--table {text}: no table {display_name(*names)} in {self.backup}{hint}"
            )
        (name,) = names
        matches = sorted(
            (e for (_, tag), e in self.relations.items() if tag == name),
            key=lambda e: e.namespace,
        )
        if len(matches) == 1:
            return matches
        if not matches:
            hint = self._hint((None, name))
            raise RestoreError(
                f"--table {text}: no table {display_name(name)} in {self.backup}{hint}"
            )
        listed = ", ".join(display_name(e.namespace, e.tag) for e in matches)
        raise RestoreError(
            f"--table {text}: {display_name(name)} is in several schemas ({listed}); "
            "give the one you mean as schema.table"
        )

    def _hint(self, names: tuple[str | None, str]) -> str:
        schema, name = names
        close = [
            display_name(s, t)
            for (s, t) in self.relations
            if t.casefold() == name.casefold()
            and (schema is None or s.casefold() == schema.casefold())
        ]
        if close:
            return f"; did you mean {' or '.join(sorted(close))}? (quoted names keep their case)"
        return " (restore --list shows what it holds)"

    def _check_schema(self, schema: str, text: str) -> None:
        if schema in self.schemas:
            return
        close = sorted(display_name(s) for s in self.schemas if s.casefold() == schema.casefold())
        hint = (
            f"; did you mean {' or '.join(close)}? (quoted names keep their case)"
            if close
            else " (restore --list shows what it holds)"
        )
        raise RestoreError(
            f"--schema {text}: no schema {display_name(schema)} in {self.backup}{hint}"
        )
