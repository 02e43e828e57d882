"""Reading a PostgreSQL connection string (URI or ``key=value`` conninfo) without libpq.

The config checks every source's DSN when it is loaded, and most commands (``list``, ``show``,
``prune``) never connect: importing psycopg (libpq and its type adapters, a sizeable part of
their start-up) only to check a string would make them pay for a connection they never make.
This module is a port of libpq's own parser (``conninfo_parse`` and ``conninfo_uri_parse`` in
``fe-connect.c``): it accepts what libpq accepts and fails with libpq's message, word for word,
so the error a user reads is the one psycopg would have given (tests compare the two). The
connection itself, and anything that rewrites a DSN, still goes through psycopg
(:mod:`pgvault.postgres.client`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["KEYWORDS", "make_conninfo", "parse_conninfo"]

KEYWORDS = frozenset(
    {
        "application_name",
        "channel_binding",
        "client_encoding",
        "connect_timeout",
        "dbname",
        "fallback_application_name",
        "gssdelegation",
        "gssencmode",
        "gsslib",
        "host",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "krbsrvname",
        "load_balance_hosts",
        "max_protocol_version",
        "min_protocol_version",
        "oauth_client_id",
        "oauth_client_secret",
        "oauth_issuer",
        "oauth_scope",
        "options",
        "passfile",
        "password",
        "port",
        "replication",
        "require_auth",
        "requirepeer",
        "scram_client_key",
        "scram_server_key",
        "service",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcert",
        "sslcertmode",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslkey",
        "sslkeylogfile",
        "sslmode",
        "sslnegotiation",
        "sslpassword",
        "sslrootcert",
        "sslsni",
        "target_session_attrs",
        "tcp_user_timeout",
        "user",
    }
)
"""The connection options libpq 18 knows (``PQconndefaults``); a test checks that the libpq
psycopg loads knows no other."""

_URI_PREFIXES = (b"postgresql://", b"postgres://")
_HEX = b"0123456789abcdefABCDEF"


def parse_conninfo(dsn: str) -> dict[str, str]:
    """The options ``dsn`` sets, as libpq reads them; ValueError with libpq's message if it is
    not a valid connection string (the message may quote the string: callers withhold it)."""
    data = dsn.encode()
    options: dict[str, bytes] = {}
    if data.startswith(_URI_PREFIXES):
        _parse_uri(data, options)
    else:
        _parse_pairs(data, options)
    return {k: v.decode(errors="replace") for k, v in options.items()}


_ESCAPE = re.compile(r"([\\'])")
_SPACE = re.compile(r"\s")


def make_conninfo(params: Mapping[str, object]) -> str:
    """``params`` as a ``key=value`` conninfo string, each value quoted as libpq needs (the
    rule psycopg's ``make_conninfo`` applies); ValueError if libpq would not read it back."""
    text = " ".join(f"{k}={_quote(str(v))}" for k, v in params.items() if v is not None)
    parse_conninfo(text)
    return text


def _quote(value: str) -> str:
    if not value:
        return "''"
    value = _ESCAPE.sub(r"\\\1", value)
    return f"'{value}'" if _SPACE.search(value) else value


def _store(options: dict[str, bytes], keyword: bytes, value: bytes, *, uri: bool = False) -> bool:
    """libpq's ``conninfo_storeval``: False for an unknown keyword, ``requiressl`` mapped."""
    if keyword == b"requiressl":
        keyword, value = b"sslmode", b"require" if value[:1] == b"1" else b"prefer"
    name = keyword.decode(errors="replace")
    if name not in KEYWORDS:
        return False
    options[name] = _decode(value) if uri else value
    return True


def _parse_pairs(data: bytes, options: dict[str, bytes]) -> None:
    """``key = value`` pairs: values may be single-quoted; a backslash escapes any byte."""
    i, n = 0, len(data)
    while i < n:
        if data[i : i + 1].isspace():
            i += 1
            continue
        start = i
        while i < n and data[i] != ord("=") and not data[i : i + 1].isspace():
            i += 1
        name = data[start:i]
        while i < n and data[i : i + 1].isspace():
            i += 1
        if i >= n or data[i] != ord("="):
            raise ValueError(
                f'missing "=" after "{name.decode(errors="replace")}" in connection info string'
            )
        i += 1
        while i < n and data[i : i + 1].isspace():
            i += 1
        value = bytearray()
        if i < n and data[i] == ord("'"):
            i += 1
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string in connection info string")
                if data[i] == ord("\\"):
                    i += 1
                    if i < n:
                        value.append(data[i])
                        i += 1
                    continue
                if data[i] == ord("'"):
                    i += 1
                    break
                value.append(data[i])
                i += 1
        else:
            while i < n:
                if data[i : i + 1].isspace():
                    i += 1
                    break
                if data[i] == ord("\\"):
                    i += 1
                    if i < n:
                        value.append(data[i])
                        i += 1
                else:
                    value.append(data[i])
                    i += 1
        if not _store(options, name, bytes(value)):
            raise ValueError(f'invalid connection option "{name.decode(errors="replace")}"')


def _parse_uri(data: bytes, options: dict[str, bytes]) -> None:
    """``postgresql://[user[:password]@][host][:port][,...][/dbname][?param=value&...]``."""
    uri = data.decode(errors="replace")
    p = len(_URI_PREFIXES[0]) if data.startswith(_URI_PREFIXES[0]) else len(_URI_PREFIXES[1])
    n = len(data)

    def at(i: int) -> bytes:
        return data[i : i + 1]  # b"" past the end, as libpq's terminating NUL

    start = p
    while at(p) not in (b"", b"@", b"/"):
        p += 1
    if at(p) == b"@":
        user_end = data.index(b":", start, p) if b":" in data[start:p] else p
        if user_end > start:
            _store(options, b"user", data[start:user_end], uri=True)
        if user_end < p and p > user_end + 1:
            _store(options, b"password", data[user_end + 1 : p], uri=True)
        p += 1
    else:
        p = start
    hosts: list[bytes] = []
    ports: list[bytes] = []
    while True:
        if at(p) == b"[":
            p += 1
            host_start = p
            while p < n and data[p] != ord("]"):
                p += 1
            if p >= n:
                raise ValueError(
                    'end of string reached when looking for matching "]" in IPv6 host address '
                    f'in URI: "{uri}"'
                )
            if p == host_start:
                raise ValueError(f'IPv6 host address may not be empty in URI: "{uri}"')
            host = data[host_start:p]
            p += 1
            if at(p) not in (b"", b":", b"/", b"?", b","):
                raise ValueError(
                    f'unexpected character "{at(p).decode(errors="replace")}" at position '
                    f'{p + 1} in URI (expected ":" or "/"): "{uri}"'
                )
        else:
            host_start = p
            while at(p) not in (b"", b":", b"/", b"?", b","):
                p += 1
            host = data[host_start:p]
        hosts.append(host)
        end = at(p)
        port = b""
        if end == b":":
            p += 1
            port_start = p
            while at(p) not in (b"", b"/", b"?", b","):
                p += 1
            port = data[port_start:p]
            end = at(p)
        ports.append(port)
        if end != b",":
            break
        p += 1
    # Joined before the test, as libpq does: "postgresql://,/db" sets host to ",".
    if b",".join(hosts):
        _store(options, b"host", b",".join(hosts), uri=True)
    if b",".join(ports):
        _store(options, b"port", b",".join(ports), uri=True)
    if end not in (b"", b"?"):
        p += 1
        db_start = p
        while at(p) not in (b"", b"?"):
            p += 1
        if p > db_start:
            _store(options, b"dbname", data[db_start:p], uri=True)
        end = at(p)
    if end:
        _parse_params(data[p + 1 :], options)


def _parse_params(params: bytes, options: dict[str, bytes]) -> None:
    """A URI's ``?key=value&...``: both halves percent-decoded, ``ssl=true`` as libpq reads it."""
    pairs = params.split(b"&")
    if pairs[-1] == b"":
        pairs.pop()  # libpq stops at the end: one trailing "&" (or a bare "?") is no parameter
    for pair in pairs:
        keyword, sep, value = pair.partition(b"=")
        if not sep:
            raise ValueError(
                'missing key/value separator "=" in URI query parameter: '
                f'"{keyword.decode(errors="replace")}"'
            )
        if b"=" in value:
            raise ValueError(
                'extra key/value separator "=" in URI query parameter: '
                f'"{keyword.decode(errors="replace")}"'
            )
        keyword, value = _decode(keyword), _decode(value)
        if keyword == b"ssl" and value == b"true":
            keyword, value = b"sslmode", b"require"
        if not _store(options, keyword, value):
            raise ValueError(f'invalid URI query parameter: "{keyword.decode(errors="replace")}"')


def _decode(value: bytes) -> bytes:
    """libpq's ``conninfo_uri_decode``: ``%XX`` escapes, never ``%00``."""
    if b"%" not in value:
        return value
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] != ord("%"):
            out.append(value[i])
            i += 1
            continue
        digits = value[i + 1 : i + 3]
        if len(digits) < 2 or any(d not in _HEX for d in digits):
            raise ValueError(f'invalid percent-encoded token: "{value.decode(errors="replace")}"')
        byte = int(digits, 16)
        if byte == 0:
            raise ValueError(
                f'forbidden value %00 in percent-encoded value: "{value.decode(errors="replace")}"'
            )
        out.append(byte)
        i += 3
    return bytes(out)
