"""Loading a database from a pg_dump backup: planning pg_restore's lists from the archives' tables
of contents, then running psql or pg_restore on the decoded artifacts, streamed, in sections and
in parallel where the archive allows (a work file for ``--jobs`` of a custom archive).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import attrs

from pgvault.exceptions import ArchiveFormatError, RestoreError
from pgvault.operations.restore.options import RestoreOptions
from pgvault.operations.restore.overlap import (
    EarlyPostData,
    data_shares,
    restore_overlapped,
    table_weights,
)
from pgvault.operations.restore.selection import RestorePlan, listing, plan_restore
from pgvault.operations.restore.target import DatabaseTarget
from pgvault.postgres.archive import ArchiveToc, map_tablespaces, read_toc_stream
from pgvault.postgres.client import exit_description, find_binary, pipe_into, quote_ident
from pgvault.sources.pg_dump import server_major
from pgvault.transforms.api import DecodeContext
from pgvault.vault.contents import Vault, raise_if_damaged
from pgvault.vault.manifest import Manifest

if TYPE_CHECKING:
    from pgvault.engine.pipeline import Progress

log = logging.getLogger("pgvault.restore")


@attrs.frozen
class Plans:
    """The restore plan, and the archives' tables of contents it was made from."""

    main: RestorePlan
    main_toc: ArchiveToc | None
    """None when the archive's TOC could not be read: pg_restore then gets no list."""
    parts: dict[str, ArchiveToc]
    """Data archives' TOCs, by artifact path (read for partial restores only)."""

    def main_list(self) -> str | None:
        """The main archive's ``--use-list``, None to restore it whole."""
        if self.main_toc is None:
            return None
        if not self.main.partial and not self.main.refreshes:
            return None  # nothing to leave out: pg_restore's own order, no list
        return self.main.use_list(self.main_toc)

    def part_list(self, path: str) -> str | None:
        """A data archive's ``--use-list``; ``""`` when it holds nothing to restore."""
        if not self.main.partial:
            return None
        return self.main.data_use_list(self.parts[path]) or ""


def _read_toc(vault: Vault, manifest: Manifest, path: str, context: DecodeContext) -> ArchiveToc:
    chunks = vault.decoded(manifest, path, context)
    try:
        return read_toc_stream(chunks, name=f"artifact {path}")
    finally:
        chunks.close()  # the TOC is at the start; the restore reads the whole artifact later


def plan_archives(
    vault: Vault,
    manifest: Manifest,
    context: DecodeContext,
    tables: tuple[str, ...],
    schemas: tuple[str, ...],
) -> Plans:
    """Read the archives' tables of contents and plan the restore (see :mod:`.selection`)."""
    main = next(a for a in manifest.artifacts if a.role == "main")
    partial = bool(tables or schemas)
    try:
        toc = _read_toc(vault, manifest, main.path, context)
    except ArchiveFormatError as exc:
        if partial:
            raise RestoreError(
                f"backup {manifest.backup_id}: a partial restore needs the archive's table of "
                f"contents, which pgvault cannot read: {exc}"
            ) from None
        # A whole restore does not need it: pg_restore judges the archive itself.
        log.warning("restoring %s without a list: %s", manifest.backup_id, exc)
        return Plans(RestorePlan(frozenset(), partial=False), None, {})
    plan = plan_restore(toc, tables=tables, schemas=schemas, backup_id=manifest.backup_id)
    parts = {}
    if partial:
        for art in manifest.artifacts:
            if art.role == "data":
                parts[art.path] = _read_toc(vault, manifest, art.path, context)
    return Plans(plan, toc, parts)


def check_work_space(manifest: Manifest, jobs: int, work_dir: Path | None, fmt: str) -> None:
    """Fail before any side effect when a parallel restore's work file cannot fit."""
    if jobs <= 1 or fmt != "custom":
        return
    main = next((a for a in manifest.artifacts if a.role == "main"), None)
    if main is not None:
        _free_space(work_dir, main.raw_size, manifest)


def restore_archives(
    vault: Vault,
    manifest: Manifest,
    target: DatabaseTarget,
    opts: RestoreOptions,
    plans: Plans | None,
    context: DecodeContext,
    progress: Progress | None,
    on_loading: Callable[[], None] | None = None,
) -> None:
    """Load the backup's archives into ``target`` with psql or pg_restore, as ``opts`` says
    (``opts.work_dir`` already resolved), restricted to ``plans``' selection."""
    fmt = manifest.source.get("format", "custom")
    major = server_major(manifest.source)
    conninfo, env = target.conninfo
    main = next(a for a in manifest.artifacts if a.role == "main")
    data_parts = [a for a in manifest.artifacts if a.role == "data"]

    pending = [on_loading] if on_loading is not None else []

    def stream(path: str) -> Iterator[bytes]:
        chunks: Iterator[bytes] = vault.decoded(manifest, path, context)
        if opts.tablespace_map and path == main.path:
            chunks = map_tablespaces(chunks, opts.tablespace_map, where=f"artifact {path}")
        for chunk in chunks:
            if progress is not None:
                progress.advance(raw=len(chunk))
            yield chunk
            if pending:  # the first bytes have reached the tool: the load is under way
                pending.pop()()

    if fmt == "plain":
        psql = find_binary("psql", server_major=major)
        argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", f"--dbname={conninfo}"]
        if opts.role:
            argv.insert(1, f"--command=SET ROLE {quote_ident(opts.role)}")
        _run_tool(argv, stream(main.path), env)
        return

    pg_restore = find_binary("pg_restore", server_major=major)
    base = [pg_restore, f"--dbname={conninfo}", "--exit-on-error", "--no-password"]
    if opts.no_owner:
        base.append("--no-owner")
    if opts.no_privileges:
        base.append("--no-privileges")
    if opts.role:
        base.append(f"--role={opts.role}")
    if opts.no_tablespaces:
        base.append("--no-tablespaces")
    if not opts.subscriptions:
        base.append("--no-subscriptions")
    with tempfile.TemporaryDirectory(prefix="pgvault-lists-", dir=opts.work_dir) as lists:
        main_list = plans.main_list() if plans is not None else None
        main_base = [*base, *_use_list(Path(lists) / "main.list", main_list)]
        parts: list[tuple[str, list[str]]] = []
        for i, part in enumerate(data_parts):
            text = plans.part_list(part.path) if plans is not None else None
            if text == "":
                continue  # a partial restore needs nothing from this data archive
            parts.append((part.path, [*base, *_use_list(Path(lists) / f"data-{i}.list", text)]))
        shares: _Shares | None = None
        if opts.jobs > 1 and fmt == "custom" and not data_parts and plans is not None:
            shares = _data_shares(plans, manifest, opts.jobs, base, Path(lists))
        _restore_pg_archives(main.path, main_base, parts, fmt, opts, stream, env, manifest, shares)


@attrs.frozen
class _Shares:
    """A single archive's parallel load: pg_restore's argv for each share of its data (see
    :mod:`.overlap`), the early post-data after each, and the final post-data's list."""

    data: list[list[str]]
    after: Callable[[int], list[str] | None]
    post_flags: Callable[[], list[str] | None]
    """pg_restore's flags for the final post-data once some entries ran early (a use-list
    without them), else None: the main archive's own flags then do."""


def _data_shares(
    plans: Plans, manifest: Manifest, jobs: int, base: list[str], lists: Path
) -> _Shares | None:
    """How a single archive loads in parallel (see :mod:`.overlap`), None when the archive's
    TOC is unknown."""
    toc = plans.main_toc
    if toc is None:
        return None
    selected = plans.main.entries if plans.main_list() is not None else None
    weights = table_weights(manifest.source)
    shares = data_shares(toc, selected, weights, jobs)
    early = EarlyPostData(toc, selected, shares)

    def after(k: int) -> list[str] | None:
        ready = early.after(k)
        if not ready:
            return None
        log.debug("post-data of %d entries starts after share %d", len(ready), k)
        return [
            *base,
            "--section=post-data",
            *_use_list(lists / f"post-after-{k}.list", listing(ready)),
        ]

    def post_flags() -> list[str] | None:
        if not early.started:
            return None
        rest = [
            e
            for e in toc.entries
            if (selected is None or e.dump_id in selected) and e.dump_id not in early.started
        ]
        return [*base, *_use_list(lists / "post-final.list", listing(rest))]

    return _Shares(
        [
            [*base, "--section=data", *_use_list(lists / f"share-{k}.list", listing(share))]
            for k, share in enumerate(shares)
        ],
        after,
        post_flags,
    )


def _use_list(path: Path, text: str | None) -> list[str]:
    """pg_restore's ``--use-list`` flag for list ``text`` (written to ``path``), if any."""
    if text is None:
        return []
    path.write_text(text, encoding="utf-8")
    return [f"--use-list={path}"]


def _restore_pg_archives(
    main: str,
    base: list[str],
    parts: list[tuple[str, list[str]]],
    fmt: str,
    opts: RestoreOptions,
    stream: Callable[[str], Iterator[bytes]],
    env: dict[str, str],
    manifest: Manifest,
    shares: _Shares | None = None,
) -> None:
    """Run pg_restore on the main archive (flags ``base``) and the data archives ``parts``
    (path and flags each), in sections and in parallel as ``opts.jobs`` allows (a single
    archive's data by ``shares``, when known)."""
    split = any(a.role == "data" for a in manifest.artifacts)
    main_size = next(a.raw_size for a in manifest.artifacts if a.role == "main")
    if split and opts.jobs > 1:
        # A split dump, in parallel: the main archive is read from the vault once, into a work
        # file while its schema is restored; then every data archive loads concurrently; then
        # pg_restore --jobs builds indexes and constraints from the file, several at a time.
        with _work_file(opts.work_dir, main_size, manifest) as (handle, path):
            _run_tool([*base, "--section=pre-data"], _copied(stream(main), handle), env)
            handle.close()
            # No data offsets filled in: pg_restore reads this file's data in one pass, and its
            # post-data needs none.
            main_data = ([*base, "--section=data", str(path)], _NONE)
            loads = [(argv, stream(p)) for p, argv in parts]
            _run_concurrently([main_data, *loads], opts.jobs, env)
            _run_tool([*base, "--section=post-data", f"--jobs={opts.jobs}", str(path)], _NONE, env)
        return

    if split:
        # A split dump, one archive at a time, streamed: no work file, no extra disk.
        _run_tool([*base, "--section=pre-data"], stream(main), env)
        _run_tool([*base, "--section=data"], stream(main), env)
        for p, argv in parts:
            _run_tool(argv, stream(p), env)
        _run_tool([*base, "--section=post-data"], stream(main), env)
        return

    if opts.jobs > 1 and fmt == "custom" and shares is not None:
        # The work file pg_restore --jobs needs for its post-data is written while the schema,
        # then the data in shares, load from it as it grows (see .overlap).
        with _work_file(opts.work_dir, main_size, manifest) as (handle, path):
            pre = [*base, "--section=pre-data"]
            restore_overlapped(pre, shares.data, stream(main), handle, path, env, shares.after)
            # What ran early is left out of the final pass (by a list of its own).
            flags = shares.post_flags() or base
            _run_tool([*flags, "--section=post-data", f"--jobs={opts.jobs}", str(path)], _NONE, env)
        return

    if opts.jobs > 1 and fmt == "custom":
        # An archive whose TOC pgvault cannot read: pg_restore --jobs on the whole file.
        with _work_file(opts.work_dir, main_size, manifest) as (handle, path):
            for chunk in stream(main):
                handle.write(chunk)
            handle.close()
            _run_tool([*base, f"--jobs={opts.jobs}", str(path)], _NONE, env)
        return

    _run_tool(base, stream(main), env)


# The input of a tool that reads its archive from a file named in its arguments.
_NONE: Iterator[bytes] = iter(())


def _copied(chunks: Iterator[bytes], handle: IO[bytes]) -> Iterator[bytes]:
    """Pass ``chunks`` on, writing each to ``handle`` too."""
    for chunk in chunks:
        handle.write(chunk)
        yield chunk


def _run_concurrently(
    runs: list[tuple[list[str], Iterator[bytes]]], jobs: int, env: dict[str, str]
) -> None:
    """Run each ``(argv, input)`` with :func:`_run_tool`, ``jobs`` at a time; raise the first
    failure once the others have stopped: the caller then drops the database they load."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_run_tool, argv, chunks, env) for argv, chunks in runs]
        for future in concurrent.futures.as_completed(futures):
            future.result()


def _run_tool(argv: list[str], chunks: Iterator[bytes], env: dict[str, str]) -> None:
    rc, _out, err = pipe_into(argv, chunks, env)
    if rc != 0:
        failure = RestoreError(exit_description(argv[0], rc, err))
        if chunks is not _NONE:  # else the tool read a work file, already read to its end
            raise_if_damaged(chunks, failure)
        raise failure
    # The tool may stop reading before the end (trailing padding): the stream must still have
    # been whole, so drain it to let its digests and size be checked.
    for _ in chunks:
        pass


@contextlib.contextmanager
def _work_file(
    work_dir: Path | None, size: int, manifest: Manifest
) -> Iterator[tuple[IO[bytes], Path]]:
    folder = _free_space(work_dir, size, manifest)
    fd, name = tempfile.mkstemp(prefix="pgvault-restore-", suffix=".pgdump", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, path
    finally:
        path.unlink(missing_ok=True)


def _free_space(work_dir: Path | None, size: int, manifest: Manifest) -> Path:
    """The work file's folder, once it is known to have room for ``size`` bytes."""
    folder = work_dir or Path(tempfile.gettempdir())
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise RestoreError(f"--work-dir {folder}: {exc.strerror or exc}") from None
    needed = int(size * 1.05) + (64 << 20)
    if free < needed:
        raise RestoreError(
            f"--work-dir {folder} has {free >> 20} MiB free; the parallel restore of "
            f"{manifest.backup_id} needs about {needed >> 20} MiB"
        )
    return folder
