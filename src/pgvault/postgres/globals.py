"""The cluster's globals (roles, memberships, role settings, tablespaces) as a backup keeps them.

The pg_dump source stores ``pg_dumpall --globals-only`` output beside the dump (artifact
``globals.sql``, role ``globals``). It is the whole cluster's, not only the roles the database
refers to: the roles an application logs in as usually own nothing and hold no grant themselves
(they inherit them through a group role), and the file is small and is what operators already
know how to read and apply by hand.

A restore never runs that file as it is: it would alter the roles a server already has (their
attributes, passwords, settings). :func:`parse_globals` reads it statement by statement, and
:func:`plan_roles` picks what to create: the roles the database needs, the roles that are
members of them (the login roles that reach the database through them), and the roles those
belong to; of those, only the ones the target lacks. Existing roles are never altered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from pgvault.exceptions import RestoreError

GLOBALS_STREAM = "globals.sql"
GLOBALS_ROLE = "globals"
GLOBALS_END = b"-- PostgreSQL database cluster dump complete"

# Role attributes only a superuser may give (PostgreSQL 15 and later).
SUPERUSER_ATTRIBUTES = ("SUPERUSER", "REPLICATION", "BYPASSRLS")


@attrs.frozen
class Token:
    """One lexical token of a SQL statement: ``kind`` is ``word``, ``ident`` (double-quoted),
    ``string`` or ``punct``; ``value`` is the identifier or word as PostgreSQL reads it."""

    kind: str
    value: str


def split_statements(text: str) -> list[str]:
    """The SQL statements of ``text`` (ended by ``;``), without comments and psql
    meta-commands (``\\connect``, ``\\restrict``), each as written."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    line_start = True
    while i < n:
        ch = text[i]
        if line_start and ch == "\\":  # psql meta-command: the rest of the line
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        line_start = False
        if ch == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        if ch in "'\"":
            end = _quoted_end(text, i, escapes=ch == "'" and _is_e_string(text, i))
            current.append(text[i:end])
            i = end
            continue
        if ch == "$":
            tag = _dollar_tag(text, i)
            if tag:
                close = text.find(tag, i + len(tag))
                end = len(text) if close < 0 else close + len(tag)
                current.append(text[i:end])
                i = end
                continue
        if ch == ";":
            statement = "".join(current).strip()
            if statement:
                statements.append(statement)
            current = []
            i += 1
            continue
        if ch == "\n":
            line_start = True
        current.append(ch)
        i += 1
    rest = "".join(current).strip()
    if rest:
        statements.append(rest)
    return statements


def _dollar_tag(text: str, i: int) -> str | None:
    """The ``$tag$`` opening a dollar-quoted string at ``text[i]``, if one does."""
    if i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
        return None  # $ inside a word (an identifier like a$b, a parameter $1)
    j = i + 1
    while j < len(text) and (text[j].isalnum() or text[j] == "_"):
        j += 1
    if j < len(text) and text[j] == "$" and not text[i + 1 : j][:1].isdigit():
        return text[i : j + 1]
    return None


def _is_e_string(text: str, i: int) -> bool:
    return (
        i > 0
        and text[i - 1] in "eE"
        and (i < 2 or not (text[i - 2].isalnum() or text[i - 2] == "_"))
    )


def _quoted_end(text: str, i: int, *, escapes: bool) -> int:
    """Index after the quoted token starting at ``text[i]`` (doubled quotes, and backslash
    escapes in E'' strings)."""
    quote = text[i]
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if escapes and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and text[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return n


def tokens(statement: str) -> list[Token]:
    """The tokens of one statement (see :class:`Token`)."""
    out: list[Token] = []
    i, n = 0, len(statement)
    while i < n:
        ch = statement[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            end = _quoted_end(statement, i, escapes=False)
            out.append(Token("ident", statement[i + 1 : end - 1].replace('""', '"')))
            i = end
        elif ch == "'" or (ch in "eE" and statement[i + 1 : i + 2] == "'"):
            start = i + 1 if ch != "'" else i
            end = _quoted_end(statement, start, escapes=ch != "'")
            out.append(Token("string", statement[start + 1 : end - 1].replace("''", "'")))
            i = end
        elif ch.isalnum() or ch == "_" or ord(ch) > 127:
            j = i
            while j < n and (
                statement[j].isalnum() or statement[j] in "_$" or ord(statement[j]) > 127
            ):
                j += 1
            out.append(Token("word", statement[i:j].lower()))
            i = j
        else:
            out.append(Token("punct", ch))
            i += 1
    return out


def _name(tok: Token) -> str:
    return tok.value


def _words(toks: Sequence[Token], *words: str) -> bool:
    return len(toks) >= len(words) and all(
        t.kind == "word" and t.value == w for t, w in zip(toks, words, strict=False)
    )


@attrs.frozen
class RoleDef:
    """A role of the globals file: its statements (``CREATE ROLE``, ``ALTER ROLE … WITH``,
    comments and labels), its ``ALTER ROLE … SET`` settings, and its attributes."""

    name: str
    statements: tuple[str, ...]
    settings: tuple[str, ...]
    attributes: frozenset[str]


@attrs.frozen
class Membership:
    """``GRANT group TO member``, as written (perhaps ``WITH ADMIN OPTION``, ``GRANTED BY``)."""

    group: str
    member: str
    grantor: str | None
    statement: str


@attrs.frozen
class Globals:
    """What a globals file holds, by role and tablespace."""

    roles: Mapping[str, RoleDef]
    memberships: tuple[Membership, ...]
    tablespaces: Mapping[str, str]
    """Tablespace name → its location on the source server."""
    parameter_grants: tuple[tuple[tuple[str, ...], str], ...] = ()
    """``(grantees, statement)`` of ``GRANT … ON PARAMETER`` (PostgreSQL 15 and later)."""


def parse_globals(text: str) -> Globals:
    """Read ``pg_dumpall --globals-only`` output statement by statement."""
    statements: dict[str, list[str]] = {}
    settings: dict[str, list[str]] = {}
    attributes: dict[str, set[str]] = {}
    order: list[str] = []
    memberships: list[Membership] = []
    tablespaces: dict[str, str] = {}
    parameter_grants: list[tuple[tuple[str, ...], str]] = []
    for stmt in split_statements(text):
        toks = tokens(stmt)
        if _words(toks, "create", "role") and len(toks) >= 3:
            name = _name(toks[2])
            order.append(name)
            statements.setdefault(name, []).append(stmt)
            attributes.setdefault(name, set())
        elif _words(toks, "alter", "role") and len(toks) >= 4:
            name = _name(toks[2])
            if toks[3].kind == "word" and toks[3].value in ("set", "reset", "in"):
                settings.setdefault(name, []).append(stmt)
            else:
                statements.setdefault(name, []).append(stmt)
                attributes.setdefault(name, set()).update(
                    t.value.upper() for t in toks[3:] if t.kind == "word"
                )
        elif (_words(toks, "comment", "on", "role") or _security_label_on_role(toks)) and toks:
            at = next(
                (k + 1 for k, t in enumerate(toks) if t.kind == "word" and t.value == "role"), None
            )
            if at is not None and at < len(toks):
                statements.setdefault(_name(toks[at]), []).append(stmt)
        elif _words(toks, "grant") and any(
            t.kind == "word" and t.value == "parameter" for t in toks
        ):
            to = max(k for k, t in enumerate(toks) if t.kind == "word" and t.value == "to")
            grantees = tuple(t.value for t in toks[to + 1 :] if t.kind in ("word", "ident"))
            parameter_grants.append((grantees, stmt))
        elif (
            _words(toks, "grant")
            and len(toks) >= 4
            and toks[2].kind == "word"
            and toks[2].value == "to"
        ):
            grantor = None
            for k in range(len(toks)):
                if _words(toks[k:], "granted", "by") and k + 2 < len(toks):
                    grantor = _name(toks[k + 2])
            memberships.append(Membership(_name(toks[1]), _name(toks[3]), grantor, stmt))
        elif _words(toks, "create", "tablespace") and len(toks) >= 3:
            location = next(
                (
                    toks[k + 1].value
                    for k, t in enumerate(toks)
                    if t.kind == "word" and t.value == "location" and k + 1 < len(toks)
                ),
                "",
            )
            tablespaces[_name(toks[2])] = location
    roles = {
        name: RoleDef(
            name,
            tuple(statements.get(name, ())),
            tuple(settings.get(name, ())),
            frozenset(attributes.get(name, ())),
        )
        for name in order
    }
    return Globals(roles, tuple(memberships), tablespaces, tuple(parameter_grants))


def _security_label_on_role(toks: Sequence[Token]) -> bool:
    return _words(toks, "security", "label") and any(
        t.kind == "word" and t.value == "role" for t in toks[:6]
    )


@attrs.frozen
class RolePlan:
    """The roles a restore creates, in order, and the memberships and settings it then adds."""

    create: tuple[RoleDef, ...]
    memberships: tuple[str, ...]
    settings: tuple[str, ...]
    parameter_grants: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the roles to create."""
        return tuple(r.name for r in self.create)


def plan_roles(globals_: Globals, needed: Iterable[str], existing: Iterable[str]) -> RolePlan:
    """What to create so that ``needed`` roles exist, from ``globals_``, on a server that has
    ``existing`` roles.

    Chosen: the needed roles, every role that is a member of one of them (transitively: the
    login roles that reach the database through a group), and every role those belong to
    (transitively, so their memberships can be recreated); of those, the ones in the globals
    file that the server lacks. Memberships are added where at least one side was created here
    (never between two roles that already existed); ``GRANTED BY`` a role the server lacks is
    dropped. Settings (``ALTER ROLE … SET``) only for created roles.
    """
    have = set(existing)
    chosen = set(needed)
    members: dict[str, set[str]] = {}
    groups: dict[str, set[str]] = {}
    for m in globals_.memberships:
        members.setdefault(m.group, set()).add(m.member)
        groups.setdefault(m.member, set()).add(m.group)
    chosen |= _closure(chosen, members)
    chosen |= _closure(chosen, groups)
    create = [r for name, r in globals_.roles.items() if name in chosen and name not in have]
    created = {r.name for r in create}
    after = have | created
    grants = []
    for m in globals_.memberships:
        if (m.group in created or m.member in created) and {m.group, m.member} <= after:
            statement = m.statement
            if m.grantor is not None and m.grantor not in after:
                statement = _without_granted_by(statement)
            grants.append(statement)
    settings = [s for r in create for s in r.settings]
    parameter = [
        stmt
        for grantees, stmt in globals_.parameter_grants
        if grantees and set(grantees) <= created
    ]
    return RolePlan(tuple(create), tuple(grants), tuple(settings), tuple(parameter))


def _closure(start: set[str], edges: Mapping[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen and nxt not in start:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _without_granted_by(statement: str) -> str:
    upper = statement.upper()
    at = upper.rfind(" GRANTED BY ")
    return statement[:at] if at >= 0 else statement


def decode_globals(data: bytes, *, where: str) -> Globals:
    """Parse a stored globals artifact; raise :class:`RestoreError` naming it if it is not one."""
    if GLOBALS_END not in data[-4096:]:
        raise RestoreError(f"{where} is not a complete pg_dumpall --globals-only file")
    return parse_globals(data.decode("utf-8", "replace"))
