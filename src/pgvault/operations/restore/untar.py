"""Extracting a files backup's tar stream into a folder, treating the archive as hostile.

Whoever can write to a vault can store a crafted archive with a manifest that matches it, so
every member is checked before anything is written, and nothing is ever created, overwritten or
chmodded outside the target folder:

* names must be relative and free of ``..`` (pgvault's own archives never have either);
* each folder on the way to a member is opened from the target folder down with ``O_NOFOLLOW``,
  so no symlink — made by the archive or by anyone else — is ever traversed;
* a member that repeats an earlier name unlinks the earlier entry and is created anew with
  ``O_EXCL``: a hard link or symlink left there is never written through;
* a hard link may only point to a regular file this extraction wrote, checked by inode;
* symlinks are created as recorded but never followed; once the tree is complete each must
  resolve inside the target (through the tree's other symlinks), unless the caller allows
  symlinks that lead outside (trees such as ``/etc`` have absolute ones);
* device nodes, fifos, unknown member types, and setuid/setgid bits on anything but a folder are
  refused (setgid folders are ordinary shared folders, and come back setgid).

Honest archives come back exactly: modes as recorded (no umask), mtimes after content, folders
last and deepest first (so a read-only folder can still be filled and filling it does not move
its mtime), and, when running as root, owners — by name where this machine knows the name, else
by the recorded id, as ``tar`` does. This module uses no ``tarfile`` extraction method, so it
behaves the same on every Python 3.11 (extraction filters only exist from 3.11.4).

On any failure :meth:`TarExtractor.remove_all` removes everything the extraction created; the
caller guarantees that the target folder was new or empty.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import attrs

from pgvault.exceptions import RestoreError

log = logging.getLogger("pgvault.restore")

_COPY_CHUNK = 1 << 20
_MAX_LINK_HOPS = 40  # the kernel's own limit on symlinks followed in one lookup
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Parts = tuple[str, ...]


class MemberRefused(RestoreError):
    """An archive member that would write outside the target, or is not allowed in a restore."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"archive member {name!r} {why}: refused")
        self.member = name


@attrs.define
class _Entry:
    """Something this extraction created."""

    kind: str
    """``dir``, ``file`` (hard links too: same inode) or ``symlink``."""
    inode: tuple[int, int] | None = None
    link: str = ""
    info: tarfile.TarInfo | None = None
    """A folder's member, applied at the end (None: a parent the archive did not list)."""


class TarExtractor:
    """Writes the members of one or more tar streams under ``target``, then :meth:`finish`."""

    def __init__(self, target: Path, *, allow_outside_symlinks: bool = False) -> None:
        self._target = target
        self._allow_outside = allow_outside_symlinks
        self._as_root = os.geteuid() == 0
        self._entries: dict[Parts, _Entry] = {}
        self._root = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        umask = os.umask(0o022)
        os.umask(umask)
        # Folders above the archived ones (``srv/`` of ``srv/media``) are not in the archive:
        # they get what ``mkdir -p`` would give them.
        self._implicit_mode = 0o777 & ~umask

    def close(self) -> None:
        """Release the target folder's descriptor."""
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    # Members

    def extract(self, tar: tarfile.TarFile) -> None:
        """Write every member of ``tar`` (a stream: each member's data is read in turn)."""
        for info in tar:
            self._add(tar, info)

    def _add(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        name = info.name
        parts = _parts(name, name)
        if info.ischr() or info.isblk():
            raise MemberRefused(name, "is a device node")
        if info.isfifo():
            raise MemberRefused(name, "is a fifo")
        if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
            raise MemberRefused(name, f"has an unsupported type {info.type!r}")
        if not info.isdir() and info.mode & (stat.S_ISUID | stat.S_ISGID):
            which = "setuid" if info.mode & stat.S_ISUID else "setgid"
            raise MemberRefused(name, f"is {which} (mode {info.mode:04o})")
        with self._folder(parts[:-1], name, create=True) as parent:
            try:
                if info.isdir():
                    self._make_dir(parent, parts, info)
                    return
                self._clear(parent, parts, name)
                if info.isreg():
                    self._write_file(tar, parent, parts, info)
                elif info.islnk():
                    self._hard_link(parent, parts, info)
                else:
                    self._symlink(parent, parts, info)
            except MemberRefused:
                raise
            except (OSError, ValueError, OverflowError) as exc:
                raise RestoreError(
                    f"cannot restore archive member {name!r}: {_describe(exc)}"
                ) from exc

    @contextlib.contextmanager
    def _folder(self, parts: Parts, member: str, *, create: bool) -> Iterator[int]:
        """A descriptor of folder ``parts`` under the target, opened one level at a time without
        following symlinks; missing folders are created (0700 until :meth:`finish`)."""
        fd = os.dup(self._root)
        try:
            for depth, part in enumerate(parts, start=1):
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o700, dir_fd=fd)
                    self._entries[parts[:depth]] = _Entry("dir")
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        is_link = exc.errno == errno.ELOOP or _is_symlink(part, fd)
                        what = "a symlink" if is_link else "not a folder"
                        where = "/".join(parts[:depth])
                        raise MemberRefused(
                            member, f"would be written beneath {where}, which is {what}"
                        ) from None
                    raise RestoreError(
                        f"cannot restore archive member {member!r}: {_describe(exc)}"
                    ) from exc
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def _make_dir(self, parent: int, parts: Parts, info: tarfile.TarInfo) -> None:
        try:
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
        except FileExistsError:
            st = os.lstat(parts[-1], dir_fd=parent)
            entry = self._entries.get(parts)
            if not stat.S_ISDIR(st.st_mode) or entry is None or entry.kind != "dir":
                raise MemberRefused(
                    info.name, "is a folder where the archive already put something else"
                ) from None
        self._entries[parts] = _Entry("dir", info=info)

    def _clear(self, parent: int, parts: Parts, name: str) -> None:
        """Remove an earlier entry of this name (archives may repeat a name: the last wins)."""
        try:
            st = os.lstat(parts[-1], dir_fd=parent)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise MemberRefused(name, "would replace a folder")
        os.unlink(parts[-1], dir_fd=parent)
        self._entries.pop(parts, None)

    def _write_file(
        self, tar: tarfile.TarFile, parent: int, parts: Parts, info: tarfile.TarInfo
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(parts[-1], flags, 0o600, dir_fd=parent)
        try:
            # Recorded first: if the copy fails, remove_all still knows the file is ours.
            st = os.fstat(fd)
            self._entries[parts] = _Entry("file", inode=(st.st_dev, st.st_ino))
            source = tar.extractfile(info)
            if source is not None:
                while chunk := source.read(_COPY_CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            if self._as_root:
                os.fchown(fd, *_owner(info))  # before the mode: chown clears set-id bits
            os.fchmod(fd, stat.S_IMODE(info.mode))
            os.utime(fd, ns=_mtime_ns(info))
        finally:
            os.close(fd)

    def _hard_link(self, parent: int, parts: Parts, info: tarfile.TarInfo) -> None:
        name, linkname = info.name, info.linkname
        target = _parts(linkname, name, what="hard link target")
        entry = self._entries.get(target)
        if entry is None or entry.kind != "file" or entry.inode is None:
            raise MemberRefused(
                name, f"is a hard link to {linkname!r}, which is not a file this restore wrote"
            )
        with self._folder(target[:-1], name, create=False) as source_dir:
            os.link(
                target[-1],
                parts[-1],
                src_dir_fd=source_dir,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
        st = os.lstat(parts[-1], dir_fd=parent)
        if (st.st_dev, st.st_ino) != entry.inode:  # replaced by someone else meanwhile
            os.unlink(parts[-1], dir_fd=parent)
            raise MemberRefused(name, f"is a hard link to {linkname!r}, which changed")
        # The link shares the inode, mode and mtime of the file it names: nothing to apply.
        self._entries[parts] = _Entry("file", inode=entry.inode)

    def _symlink(self, parent: int, parts: Parts, info: tarfile.TarInfo) -> None:
        if not info.linkname or "\0" in info.linkname:
            raise MemberRefused(info.name, "is a symlink without a valid target")
        os.symlink(info.linkname, parts[-1], dir_fd=parent)
        self._entries[parts] = _Entry("symlink", link=info.linkname)
        if self._as_root:
            os.chown(parts[-1], *_owner(info), dir_fd=parent, follow_symlinks=False)
        os.utime(parts[-1], ns=_mtime_ns(info), dir_fd=parent, follow_symlinks=False)

    # The end

    def finish(self) -> None:
        """Check every symlink, then give folders their modes, owners and mtimes."""
        if not self._allow_outside:
            for parts, entry in sorted(self._entries.items()):
                if entry.kind == "symlink" and self._resolve(parts[:-1], entry.link, 0) is None:
                    raise MemberRefused(
                        "/".join(parts),
                        f"is a symlink to {entry.link!r}, which leads outside the target "
                        "folder (restore it anyway with --allow-outside-symlinks)",
                    )
        folders = [(p, e) for p, e in self._entries.items() if e.kind == "dir"]
        # Deepest first: a parent's mode may take away the access its children still need.
        for parts, entry in sorted(folders, key=lambda item: len(item[0]), reverse=True):
            with self._folder(parts[:-1], "/".join(parts), create=False) as parent:
                leaf = parts[-1]
                try:
                    if entry.info is None:
                        os.chmod(leaf, self._implicit_mode, dir_fd=parent)
                        continue
                    if self._as_root:
                        os.chown(leaf, *_owner(entry.info), dir_fd=parent, follow_symlinks=False)
                    os.chmod(leaf, stat.S_IMODE(entry.info.mode), dir_fd=parent)
                    os.utime(leaf, ns=_mtime_ns(entry.info), dir_fd=parent, follow_symlinks=False)
                except (OSError, OverflowError) as exc:
                    raise RestoreError(
                        f"cannot restore folder {'/'.join(parts)!r}: {_describe(exc)}"
                    ) from exc

    def _resolve(self, base: Parts, link: str, hops: int) -> Parts | None:
        """Where ``link``, read in folder ``base``, leads inside the tree; None if outside.

        Walked through the symlinks this extraction made, as the kernel would follow them (a
        lexical clean-up would let ``hop/..`` through when ``hop`` is a link). A name that does
        not exist is taken as a plain folder: the kernel would stop there, we only over-refuse.
        """
        if link.startswith("/") or hops > _MAX_LINK_HOPS:
            return None
        where = list(base)
        for part in link.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not where:
                    return None
                where.pop()
                continue
            where.append(part)
            entry = self._entries.get(tuple(where))
            if entry is not None and entry.kind == "symlink":
                where.pop()
                resolved = self._resolve(tuple(where), entry.link, hops + 1)
                if resolved is None:
                    return None
                where = list(resolved)
        return tuple(where)

    def remove_all(self) -> None:
        """Remove everything under the target (which was empty when the extraction began)."""
        for name in os.listdir(self._root):  # noqa: PTH208 - by descriptor, not by path
            try:
                st = os.lstat(name, dir_fd=self._root)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, dir_fd=self._root)
                else:
                    os.unlink(name, dir_fd=self._root)
            except OSError as exc:
                log.warning(
                    "could not remove %s from the failed restore: %s",
                    self._target / name,
                    _describe(exc),
                )


def _parts(name: str, member: str, *, what: str = "name") -> Parts:
    """The path parts of an archive name, refused when it could lead outside the target."""
    if "\0" in name:
        raise MemberRefused(member, f"has a NUL byte in its {what}")
    if name.startswith("/"):
        raise MemberRefused(member, f"has an absolute {what}")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise MemberRefused(member, f"has a '..' part in its {what}")
    if not parts:
        raise MemberRefused(member, f"has an empty {what} (the target folder itself)")
    return parts


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _owner(info: tarfile.TarInfo) -> tuple[int, int]:
    """uid and gid for a member: by name where this machine knows it, else the recorded ids."""
    uid, gid = info.uid, info.gid
    if info.uname:
        with contextlib.suppress(KeyError):
            uid = pwd.getpwnam(info.uname).pw_uid
    if info.gname:
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam(info.gname).gr_gid
    return uid, gid


def _mtime_ns(info: tarfile.TarInfo) -> tuple[int, int]:
    """atime and mtime in ns, both the recorded mtime (as tar sets them)."""
    mtime = info.mtime
    ns = mtime * 1_000_000_000 if isinstance(mtime, int) else round(mtime * 1_000_000_000)
    return ns, ns


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__
