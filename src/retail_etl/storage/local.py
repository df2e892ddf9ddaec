"""A local folder used as a bucket: the embedded default (file://./data/bucket)."""

from __future__ import annotations

import errno
import filecmp
import glob
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from retail_etl.errors import (
    ObjectConflictError,
    ObjectMissingError,
    ObjectReplacedError,
    StorageError,
)
from retail_etl.storage.base import ObjectInfo, safe_key

# Objects being written are staged beside their destination under this name prefix,
# then renamed into place; listings skip them. The temporary name starts with a digest of the
# destination's name, so that the next write or delete of the same key removes what a killed
# writer left behind (the pipeline rewrites or deletes every key an interrupted run wrote).
_TMP_PREFIX = ".retail-etl-tmp-"
# what listings skip: _temporaries_of's name and mkstemp's 8 random characters, no more, so
# that a file someone names .retail-etl-tmp-*.csv is found (and loaded or set aside) as any other
_TEMPORARY = re.compile(re.escape(_TMP_PREFIX) + r"[0-9a-f]{16}\.[a-z0-9_]{8}")


# Errors of the side that writes a download (the work folder), not of the bucket.
_WRITER_SIDE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _temporaries_of(target: Path) -> str:
    return f"{_TMP_PREFIX}{hashlib.sha256(target.name.encode()).hexdigest()[:16]}."


class LocalFolderStore:
    def __init__(self, root: Path, url: str, create: bool = True) -> None:
        """The bucket folder root; created when missing if create is set, else it must exist
        (storage.open_store decides which)."""
        self.root = root.resolve()
        self.url = url
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise StorageError(
                    f"cannot create the bucket folder {self.root} of {url}: {reason}"
                ) from None
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise StorageError(
                f"bucket {url} {what} ({self.root}); check storage.url, or run "
                "`retail-etl init` to create the embedded folder bucket"
            )

    def _path(self, key: str) -> Path:
        """The key's path; the folders are resolved, the last part is not: a symbolic link in
        the bucket is an object of its own (never followed out of the bucket)."""
        path = self.root / safe_key(key)
        if path == self.root:
            return path
        parent = path.parent.resolve()
        if parent != self.root and self.root not in parent.parents:
            raise StorageError(f"object key escapes the bucket: {key!r}")
        return parent / path.name

    def _key(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """An OS error of the bucket folder becomes one StorageError line naming the object."""
        try:
            yield
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StorageError(f"cannot {action} {key} in {self.url}: {reason}") from exc

    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        found = []
        with self._errors("list", prefix):
            for dirpath, dirs, files in os.walk(base):
                # Anything that is not a folder is an object, links to folders included: an
                # odd one is then set aside by the run rather than silently skipped.
                links = [name for name in dirs if os.path.islink(os.path.join(dirpath, name))]
                for name in files + links:
                    if _TEMPORARY.fullmatch(name):
                        continue
                    path = Path(dirpath) / name
                    found.append(ObjectInfo(self._key(path), path.lstat().st_size))
        return sorted(found, key=lambda info: info.key)

    def exists(self, key: str) -> bool:
        return self.version(key) is not None

    def size(self, key: str) -> int | None:
        with self._errors("read", key):
            found = _file_stat(self._path(key))
        return None if found is None else found.st_size

    def version(self, key: str) -> str | None:
        """Inode, size and modification time: a write makes a new file (_atomic_write renames
        one into place, and so do most tools) or a new time."""
        with self._errors("read", key):  # a name too long, say: one line, not a traceback
            return _version(self._path(key))

    def download(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not self.exists(key):
            raise StorageError(f"object not found: {key}")
        kind = _odd_kind(src)
        if kind:  # a link may point anywhere, a pipe would block the run: never read them
            raise StorageError(f"cannot read {key} in {self.url}: it is a {kind}, not a file")
        # Objects are never modified in place (moves are renames, writes are replacements),
        # so a hard link is a safe zero-copy "download" when the folders share a disk.
        try:
            os.link(src, dest)
            return
        except OSError:
            pass
        try:
            shutil.copyfile(src, dest)
        except OSError as exc:
            if exc.errno in _WRITER_SIDE:
                raise  # the work folder's disk, not the bucket: the pipeline reports it
            with self._errors("read", key):
                raise

    def _atomic_write(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temporaries_of(target), dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._discard_temporaries(target)

    def _discard_temporaries(self, target: Path) -> None:
        for leftover in target.parent.glob(glob.escape(_temporaries_of(target)) + "*"):
            leftover.unlink(missing_ok=True)

    def upload(self, src: Path, key: str) -> None:
        with self._errors("write", key):
            self._atomic_write(key, lambda handle: _copy_into(src, handle))

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors("write", key):
            self._atomic_write(key, lambda handle: handle.write(data))

    def move(self, src_key: str, dest_key: str, expected_version: str | None = None) -> None:
        with self._errors("move", f"{src_key} to {dest_key}"):
            self._move(src_key, dest_key, expected_version)

    def _move(self, src_key: str, dest_key: str, expected_version: str | None) -> None:
        src, dest = self._path(src_key), self._path(dest_key)
        if expected_version is not None and _version(src) not in (None, expected_version):
            raise ObjectReplacedError(f"{src_key} is not the object that was read")
        if os.path.lexists(dest):
            if not os.path.lexists(src):
                return  # an earlier move got this far
            if not _same_object(src, dest):
                raise ObjectConflictError(
                    f"refusing to overwrite {dest_key} with different content"
                )
            src.unlink()
            return
        if not os.path.lexists(src):
            raise ObjectMissingError(f"object not found: {src_key}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A hard link publishes the destination without a window where it is partial; a
        # symbolic link is moved as the link itself.
        try:
            os.link(src, dest, follow_symlinks=False)
        except FileExistsError:
            raise ObjectConflictError(f"refusing to overwrite {dest_key}") from None
        except OSError:
            if _odd_kind(src):
                raise
            self._atomic_write(dest_key, lambda handle: _copy_into(src, handle))
        src.unlink()

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._errors("delete", key):
            path.unlink(missing_ok=True)
            if path.parent.is_dir():
                self._discard_temporaries(path)


def _file_stat(path: Path) -> os.stat_result | None:
    """The object's own stat (a link's, not its target's); None when there is no object."""
    try:
        found = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return None if stat.S_ISDIR(found.st_mode) else found


def _version(path: Path) -> str | None:
    found = _file_stat(path)
    return None if found is None else f"{found.st_ino}:{found.st_size}:{found.st_mtime_ns}"


def _copy_into(src: Path, handle: BinaryIO) -> None:
    with open(src, "rb") as source:
        shutil.copyfileobj(source, handle, 1 << 20)


def _odd_kind(path: Path) -> str | None:
    """What a bucket entry is when it is not a regular file (None when it is one)."""
    mode = path.lstat().st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _same_object(src: Path, dest: Path) -> bool:
    if _odd_kind(src) or _odd_kind(dest):
        return src.is_symlink() and dest.is_symlink() and os.readlink(src) == os.readlink(dest)
    return filecmp.cmp(src, dest, shallow=False)
