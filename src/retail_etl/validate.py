"""File validation (SPEC section 3): one pass over the bytes computes the content checksum
and proves the file is a readable UTF-8 CSV whose header has every mandatory column."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

from retail_etl.engines.base import MANDATORY_COLUMNS

CHUNK = 1 << 20
MAX_COLUMNS = 1_000
MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True)
class FileCheck:
    checksum: str
    size: int
    header: tuple[str, ...] = ()
    problem: str | None = None  # None: the file may be processed

    @property
    def ok(self) -> bool:
        return self.problem is None


def is_csv_name(name: str) -> bool:
    lowered = name.lower()
    return lowered.endswith(".csv") or lowered.endswith(".csv.gz")


def checksum_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_file(path: Path, name: str) -> FileCheck:
    """Checksum and validate a downloaded object; `name` is its key (for the extension)."""
    size = path.stat().st_size
    if not is_csv_name(name):
        return FileCheck(checksum_of(path), size, problem="not a CSV file (.csv or .csv.gz)")
    if size == 0:
        return FileCheck(checksum_of(path), size, problem="empty file (0 bytes)")
    digest = hashlib.sha256()
    head = bytearray()
    decoder = codecs.getincrementaldecoder("utf-8")()
    decompressor = zlib.decompressobj(wbits=47) if name.lower().endswith(".gz") else None
    offset = 0
    problem: str | None = None
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if problem is not None:
                continue  # keep hashing: quarantined files still get a checksum
            data = chunk
            if decompressor is not None:
                try:
                    data = decompressor.decompress(chunk)
                    while decompressor.eof and decompressor.unused_data:  # concatenated members
                        rest = decompressor.unused_data
                        decompressor = zlib.decompressobj(wbits=47)
                        data += decompressor.decompress(rest)
                except zlib.error as exc:
                    problem = f"not a readable gzip file: {exc}"
                    continue
            if len(head) < MAX_HEADER_BYTES:
                head += data[: MAX_HEADER_BYTES - len(head)]
            try:
                decoder.decode(data)
            except UnicodeDecodeError as exc:
                problem = f"not UTF-8 text: invalid byte at offset {offset + exc.start}"
            offset += len(data)
    if problem is None and decompressor is not None and not decompressor.eof:
        problem = "not a readable gzip file: truncated"
    if problem is None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            problem = "not UTF-8 text: truncated multi-byte character at the end"
    checksum = digest.hexdigest()
    if problem is not None:
        return FileCheck(checksum, size, problem=problem)
    if decompressor is not None and offset == 0:
        return FileCheck(checksum, size, problem="empty file (no data inside the gzip)")
    header, problem = parse_header(bytes(head))
    return FileCheck(checksum, size, header, problem)


def parse_header(head: bytes) -> tuple[tuple[str, ...], str | None]:
    """The header record's names, or why it is unusable."""
    text = head.decode("utf-8", errors="replace").removeprefix("\ufeff")
    if "\x00" in text.split("\n", 1)[0]:
        return (), "header contains NUL bytes"
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        record = next(reader, None)
    except csv.Error as exc:
        return (), f"unreadable CSV header: {exc}"
    if record is None or not any(field.strip() for field in record):
        return (), "no header line"
    if len(record) > MAX_COLUMNS:
        return (), f"too many columns ({len(record)} > {MAX_COLUMNS})"
    names = tuple(field.strip() for field in record)
    if len(head) >= MAX_HEADER_BYTES and len(text.split("\n", 1)) == 1:
        return (), "header line longer than 1 MiB"
    lowered = [name.lower() for name in names]
    duplicates = sorted({name for name in lowered if lowered.count(name) > 1})
    if duplicates:
        return names, "duplicate header names: " + ", ".join(duplicates)
    if "" in lowered:
        return names, "a header name is empty"
    missing = [name for name in MANDATORY_COLUMNS if name not in lowered]
    if missing:
        return names, "missing mandatory columns: " + ", ".join(missing)
    return names, None
