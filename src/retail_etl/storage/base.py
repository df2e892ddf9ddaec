"""The object-store seam: the few operations the pipeline needs from a bucket."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from retail_etl.errors import StorageError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class ObjectStore(Protocol):
    """Keys are '/'-separated paths relative to the bucket root."""

    url: str

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under prefix (recursively), sorted by key."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """The object's size, or None when it does not exist."""
        ...

    def version(self, key: str) -> str | None:
        """What tells this object apart from one put in its place later (None when it does
        not exist): the same object gives the same text."""
        ...

    def download(self, key: str, dest: Path) -> None: ...

    def upload(self, src: Path, key: str) -> None:
        """Publish atomically: a reader sees the old object, no object, or the whole new one."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def move(self, src_key: str, dest_key: str, expected_version: str | None = None) -> None:
        """Server-side move that never overwrites a different object at dest_key.

        Idempotent: when the source is gone and the destination exists (a move that was
        interrupted after the copy), it succeeds; when both are gone, ObjectMissingError.
        With expected_version (a `version` of the source), a source that is another object
        by now is left where it is: ObjectReplacedError.
        """
        ...

    def delete(self, key: str) -> None:
        """Delete if present."""
        ...


def safe_key(key: str) -> str:
    """Normalise a key and refuse ones that would escape the bucket root."""
    if not key or key.startswith("/") or "\x00" in key:
        raise StorageError(f"unsafe object key: {key!r}")
    normalised = posixpath.normpath(key)
    if normalised == ".." or normalised.startswith("../"):
        raise StorageError(f"unsafe object key: {key!r}")
    return normalised + ("/" if key.endswith("/") and normalised != "." else "")


MAX_KEY_BYTES = 1024  # S3's limit; far inside any file system's path limit
MAX_PART_BYTES = 255  # a file name's limit on the file systems a folder bucket lives on
_KEPT_NAME_BYTES = 200  # of a shortened key's last part: well inside a file name's 255


def fit_key(prefix: str, name: str) -> str:
    """prefix + name, or, when that is longer than MAX_KEY_BYTES or its last part longer
    than MAX_PART_BYTES (a name given `.csv` more than it landed with), prefix + a digest of
    the name + the end of its last part (the extension included): deterministic, so a
    resumed run finds the same key, and distinct for distinct names."""
    key = prefix + name
    last = key.rsplit("/", 1)[-1]
    if (
        len(key.encode("utf-8", "surrogateescape")) <= MAX_KEY_BYTES
        and len(last.encode("utf-8", "surrogateescape")) <= MAX_PART_BYTES
    ):
        return key
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    tail = name.rsplit("/", 1)[-1].encode("utf-8", "surrogateescape")[-_KEPT_NAME_BYTES:]
    return f"{prefix}{digest}-{tail.decode('utf-8', 'ignore')}"
