"""The files source: folders (media, configs, logs) as one streamed tar archive.

The archive is a standard POSIX (pax) tar, readable with ``tar`` alone. Each folder is stored
under its absolute path without the leading ``/`` (``srv/media/...``), so several folders never
collide and a restore into ``--target-dir`` recreates the same tree beneath it. Modes, owners and
mtimes are kept. Files that change while being read (logs!) are stored at the size they had when
opened, and listed in the manifest; files that vanish are skipped and listed too.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
import tarfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

import attrs

from pgvault.engine.flow import Aborted, Flow
from pgvault.exceptions import SourceError
from pgvault.sources.api import CHUNK_SIZE, Source, SourceRun, SourceStream

log = logging.getLogger("pgvault.sources.files")

STREAM_NAME = "files.tar"
_MAX_LISTED = 100


def _non_empty(instance: object, attribute: attrs.Attribute[Any], value: Sequence[Any]) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must name at least one folder")


def _to_paths(value: Sequence[str | Path]) -> tuple[Path, ...]:
    return tuple(Path(p) for p in value)


@attrs.frozen
class FilesSource(Source):
    """Folders archived as one tar stream.

    ``paths`` are folders (relative ones are resolved against the config file). ``include`` and
    ``exclude`` are glob patterns matched against each entry's path relative to its folder (``*``
    also crosses ``/``); a pattern without ``/`` matches the base name at any depth. An excluded
    folder is skipped whole. With ``include`` set, only files that match it are stored.
    """

    type_name: ClassVar[str] = "files"

    paths: tuple[Path, ...] = attrs.field(converter=_to_paths, validator=_non_empty)
    include: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    exclude: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def describe(self) -> str:
        return "files from " + ", ".join(str(p) for p in self.paths)

    def start(self) -> SourceRun:
        for path in self.paths:
            if not path.is_dir():
                raise SourceError(f"source.paths: {path} is not a folder")
        return _FilesRun(self)


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    base = rel.rsplit("/", 1)[-1]
    return any(
        fnmatch.fnmatchcase(rel, p) if "/" in p else fnmatch.fnmatchcase(base, p) for p in patterns
    )


class _ChunkWriter:
    """The file object tarfile writes to: gathers bytes into chunks for the pipeline."""

    def __init__(self, emit: Any) -> None:
        self._emit = emit
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= CHUNK_SIZE:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf:
            self._emit(bytes(self._buf))
            self._buf.clear()


class _FixedSizeReader:
    """Reads exactly ``size`` bytes: a file that grew is cut, one that shrank is zero-padded."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self._handle = handle
        self._left = size
        self.shrank = False

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n is None or n < 0 else min(n, self._left)
        data = self._handle.read(want)
        if not data:
            self.shrank = True
            data = b"\0" * want
        self._left -= len(data)
        return data


class _FilesRun(SourceRun):
    def __init__(self, source: FilesSource) -> None:
        self._source = source
        self._flow = Flow()
        self._out = self._flow.channel()
        self._files = 0
        self._bytes = 0
        self._changed: list[str] = []
        self._vanished: list[str] = []
        self._skipped: list[str] = []
        self._thread = threading.Thread(target=self._produce, daemon=True, name="pgvault-tar")
        self._error: BaseException | None = None
        self._thread.start()

    @property
    def streams(self) -> Sequence[SourceStream]:
        return [SourceStream(name=STREAM_NAME, chunks=self._chunks(), role="files")]

    def _chunks(self) -> Iterator[bytes]:
        yield from self._out
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _produce(self) -> None:
        try:
            writer = _ChunkWriter(self._out.put)
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for root in self._source.paths:
                    self._add_tree(tar, root.resolve())
            writer.flush()
            self._out.close()
        except Aborted:
            pass
        except OSError as exc:
            self._error = SourceError(f"files: {exc.filename or ''}: {exc.strerror or exc}")
            self._flow.abort(self._error)
        except BaseException as exc:
            self._error = exc
            self._flow.abort(exc)

    def _add_tree(self, tar: tarfile.TarFile, root: Path) -> None:
        src = self._source
        arc_root = root.as_posix().lstrip("/")
        tar.add(root, arcname=arc_root, recursive=False)
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            kept_dirs = []
            for d in sorted(dirnames):
                rel = rel_dir + d
                if src.exclude and _matches(rel, src.exclude):
                    continue
                kept_dirs.append(d)
                self._add_entry(tar, Path(dirpath, d), f"{arc_root}/{rel}")
            dirnames[:] = kept_dirs  # os.walk descends only into what we keep
            for f in sorted(filenames):
                rel = rel_dir + f
                if src.exclude and _matches(rel, src.exclude):
                    continue
                if src.include and not _matches(rel, src.include):
                    continue
                self._add_entry(tar, Path(dirpath, f), f"{arc_root}/{rel}")

    def _add_entry(self, tar: tarfile.TarFile, path: Path, arcname: str) -> None:
        try:
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as handle:
                    info = tar.gettarinfo(arcname=arcname, fileobj=handle)
                    reader = _FixedSizeReader(handle, info.size)
                    tar.addfile(info, reader)
                    self._files += 1
                    self._bytes += info.size
                    if reader.shrank or path.stat().st_size != info.size:
                        self._note(self._changed, arcname, "changed while being read")
                return
            info = tar.gettarinfo(str(path), arcname=arcname)
        except FileNotFoundError:
            self._note(self._vanished, arcname, "vanished before it could be read")
            return
        if info is None or stat.S_ISSOCK(os.lstat(path).st_mode):
            self._note(self._skipped, arcname, "skipped (socket)")
            return
        tar.addfile(info)

    def _note(self, bucket: list[str], arcname: str, what: str) -> None:
        log.warning("files: %s %s", arcname, what)
        if len(bucket) < _MAX_LISTED:
            bucket.append(arcname)

    def metadata(self) -> dict[str, Any]:
        return {
            "paths": [str(p) for p in self._source.paths],
            "include": list(self._source.include),
            "exclude": list(self._source.exclude),
            "files": self._files,
            "bytes": self._bytes,
            "changed_while_reading": self._changed,
            "vanished": self._vanished,
            "skipped": self._skipped,
        }

    def stop(self) -> None:
        self._flow.abort()
        self._thread.join(timeout=30)
