"""File validation (SPEC section 3): one pass over the bytes computes the content checksum
and proves the file is a readable UTF-8 CSV whose header has every mandatory column."""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from retail_etl.engines.base import MANDATORY_COLUMNS

CHUNK = 1 << 20
MAX_COLUMNS = 1_000
MAX_HEADER_BYTES = 1 << 20
MAX_RECORD_BYTES = 4 << 20  # the engines' longest line (DuckDB max_line_size)
# Sum over broken lines of (fields off) x (bytes of the line the engine keeps per error + its
# overhead): about the memory the engine's rejects of one file may take.
STRUCTURE_BUDGET = 64 << 20
_LINE_KEPT, _ERROR_OVERHEAD = 10_000, 1_000
_LF, _COMMA, _QUOTE = 10, 44, 34


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
    shape = _Shape()
    compressed = name.lower().endswith(".gz")
    offset = 0
    problem: str | None = None
    with open(path, "rb") as handle:
        try:
            for data in _plain_chunks(handle, digest, compressed):
                if len(head) < MAX_HEADER_BYTES:
                    head += data[: MAX_HEADER_BYTES - len(head)]
                try:
                    decoder.decode(data)
                except UnicodeDecodeError as exc:
                    problem = f"not UTF-8 text: invalid byte at offset {offset + exc.start}"
                    break
                shape.feed(data)
                offset += len(data)
                if shape.hopeless:
                    break  # what is left only needs hashing
        except _Unreadable as exc:
            problem = str(exc)
        while chunk := handle.read(CHUNK):  # quarantined files still get a checksum
            digest.update(chunk)
    if problem is None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            problem = "not UTF-8 text: truncated multi-byte character at the end"
    checksum = digest.hexdigest()
    if problem is not None:
        return FileCheck(checksum, size, problem=problem)
    if compressed and offset == 0:
        return FileCheck(checksum, size, problem="empty file (no data inside the gzip)")
    header, problem = parse_header(bytes(head))
    if problem is None:
        problem = shape.finish(lambda: _exact_field_errors(path, compressed, len(header)))
    return FileCheck(checksum, size, header, problem)


class _Unreadable(Exception):
    pass


# Gzip header flags (RFC 1952) that zlib accepts and DuckDB's reader refuses ("Unsupported
# GZIP archive"), failing the whole batch: a file that sets one is quarantined here instead.
_ENGINE_UNREADABLE_FLAGS = {0x01: "FTEXT", 0x02: "FHCRC", 0x10: "FCOMMENT"}


def _plain_chunks(handle: BinaryIO, digest: Any, compressed: bool) -> Iterator[bytes]:
    """The file's bytes (decompressed for .gz) in pieces of at most CHUNK bytes, so that a
    gzip bomb never sits in memory whole; the raw bytes go into `digest` as they are read.
    A .gz must be gzip members the engine reads: no zlib or raw deflate streams, no header
    flag it refuses."""
    decompressor = zlib.decompressobj(wbits=31)  # gzip only (47 also takes zlib streams)
    read = 0
    if compressed:
        _check_member_header(handle, 0)
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
        read += len(chunk)
        if not compressed:
            yield chunk
            continue
        while chunk:
            try:
                data = decompressor.decompress(chunk, CHUNK)
            except zlib.error as exc:
                raise _Unreadable(f"not a readable gzip file: {exc}") from None
            if data:
                yield data
            if decompressor.eof:
                chunk = decompressor.unused_data
                if chunk:  # concatenated members
                    _check_member_header(handle, read - len(chunk))
                    decompressor = zlib.decompressobj(wbits=31)
            else:
                chunk = decompressor.unconsumed_tail
    if compressed and not decompressor.eof:
        raise _Unreadable("not a readable gzip file: truncated")


def _check_member_header(handle: BinaryIO, start: int) -> None:
    """Raise _Unreadable when the gzip member at `start` sets a flag the engine refuses."""
    header = os.pread(handle.fileno(), 4, start)  # ID1 ID2 CM FLG
    if len(header) < 4 or header[:2] != b"\x1f\x8b":
        return  # not a gzip member at all: zlib says so
    refused = [name for bit, name in _ENGINE_UNREADABLE_FLAGS.items() if header[3] & bit]
    if refused:
        raise _Unreadable(
            f"a gzip header the engine cannot read (it sets {', '.join(refused)}): "
            "compress the file again with gzip"
        )


class _Shape:
    """Lines that the engine cannot be trusted with, spotted while the file streams by.

    The engine rejects a line with more or fewer fields than the header with one error per
    field too many or too few, each carrying the line: a line of a million fields, or
    millions of broken lines, take its memory and time without bound, and past some volume
    DuckDB's reject store silently stops reading. Lines longer than MAX_RECORD_BYTES (from
    some tens of MB DuckDB skips them without an error) and a quote left open (DuckDB either
    swallows the rest of the file into one rejected record or, on large files, resumes
    somewhere further on) are as bad. Up to a budget broken lines are rejected one by one as
    usual; beyond it, or with an overlong line or an open quote, the file is quarantined.

    The fast count is per physical line; a comma after an odd number of quotes (inside a
    quoted field, e.g. "Bread, Wholemeal") does not count. Only when it exceeds the budget,
    when a line has an odd number of quotes (a quoted field going on over lines, a quote never
    closed), or when a quote opens anywhere but at the start of a field (the engines read it
    as text, so the parity would hide real commas), is the file parsed as CSV to decide
    exactly: in Python, about 25x slower than the count, so a product name with a comma must
    not send every large file there.
    """

    def __init__(self) -> None:
        self.header_commas: int | None = None
        self.lines = 0  # physical lines seen, the header included
        self.carry = (0, 0, 0)  # commas, quotes, bytes of the line not ended yet
        self.cost = 0
        self.worst = (0, 0, 0)  # fields more or fewer than the header's, line number, fields
        self.longest = (0, 0)  # bytes, line number
        self.odd_quotes = False
        self.quotes = 0
        self.irregular = (0, 0)  # lines with more or fewer fields than the header, first one
        self.quote_parity = 0  # quotes seen so far, mod 2: 1 inside a quoted field
        self.stray_quotes = False  # a quote opening in the middle of a field
        self.last_byte = _LF  # before the data: the file starts a field

    @property
    def hopeless(self) -> bool:
        """Already unusable whatever follows."""
        return max(self.longest[0], self.carry[2]) > MAX_RECORD_BYTES or self.worst[0] > MAX_COLUMNS

    def feed(self, data: bytes) -> None:
        arr = np.frombuffer(data, dtype=np.uint8)
        # Only commas, quotes and line ends matter (about one byte in five): find them once,
        # then count on those alone.
        special = arr == _COMMA
        special |= arr == _QUOTE
        special |= arr == _LF
        where = np.flatnonzero(special)
        kind = arr[where]
        commas = kind == _COMMA
        quotes = kind == _QUOTE
        if len(where) and (self.quote_parity or quotes.any()):
            # uint8 wraps at 256, which keeps the parity; "" inside a value flips it twice
            inside = (np.cumsum(quotes, dtype=np.uint8) + self.quote_parity) & 1
            opening = where[quotes & (inside == 1)]
            if len(opening) and not self.stray_quotes:
                before = arr[np.maximum(opening - 1, 0)]
                if opening[0] == 0:
                    before[0] = self.last_byte
                # after a quote: the second of a doubled quote ("") inside a quoted value
                self.stray_quotes = not bool(np.isin(before, (_COMMA, _LF, _QUOTE)).all())
            commas &= inside == 0
            self.quote_parity = int(inside[-1])
        if len(arr):
            self.last_byte = int(arr[-1])
        carry_commas, carry_quotes, carry_bytes = self.carry
        line_ends = np.flatnonzero(kind == _LF)  # positions in `where`
        if not len(line_ends):
            self.carry = (
                carry_commas + int(np.count_nonzero(commas)),
                carry_quotes + int(np.count_nonzero(quotes)),
                carry_bytes + len(arr),
            )
            return
        # Commas (quotes) per line: sums over each line's special bytes, its LF included (an
        # empty line's sum is its LF alone: 0). The last segment runs to the end of the data;
        # what follows the last LF is carried over.
        starts = np.concatenate(([0], line_ends[:-1] + 1))
        tail = int(line_ends[-1]) + 1
        tail_commas = int(np.count_nonzero(commas[tail:]))
        tail_quotes = int(np.count_nonzero(quotes[tail:]))
        line_commas = np.add.reduceat(commas, starts, dtype=np.int64)
        line_commas[0] += carry_commas
        line_commas[-1] -= tail_commas
        line_quotes = np.add.reduceat(quotes, starts, dtype=np.int64)
        line_quotes[0] += carry_quotes
        line_quotes[-1] -= tail_quotes
        ends = where[line_ends]
        lengths = np.diff(ends, prepend=-1)
        lengths[0] += carry_bytes
        self._lines(line_commas, line_quotes, lengths)
        self.carry = (tail_commas, tail_quotes, len(arr) - int(ends[-1]) - 1)

    def _lines(self, line_commas: np.ndarray, line_quotes: np.ndarray, lengths: np.ndarray) -> None:
        first = self.lines + 1
        self.lines += len(lengths)
        longest = int(np.argmax(lengths))
        if lengths[longest] > self.longest[0]:
            self.longest = (int(lengths[longest]), first + longest)
        self.quotes += int(line_quotes.sum())
        self.odd_quotes = self.odd_quotes or bool((line_quotes % 2).any())
        if self.header_commas is None:
            self.header_commas = int(line_commas[0])
            line_commas, lengths, first = line_commas[1:], lengths[1:], first + 1
        off = np.abs(line_commas - self.header_commas)
        off[(line_commas == 0) & (lengths <= 1)] = 0  # blank lines are skipped, not rejected
        bad = np.flatnonzero(off)
        if not len(bad):
            return
        count, line = self.irregular
        self.irregular = (count + len(bad), line or first + int(bad[0]))
        kept = np.minimum(lengths[bad], _LINE_KEPT) + _ERROR_OVERHEAD
        self.cost += int((off[bad] * kept).sum())
        worst = int(bad[np.argmax(off[bad])])
        if off[worst] > self.worst[0]:
            self.worst = (int(off[worst]), first + worst, int(line_commas[worst]) + 1)

    def finish(self, exact: Callable[[], tuple[int, int, int] | str]) -> str | None:
        """None when the engine may have the file (rejecting broken lines one by one), else
        why not."""
        if self.carry[2]:
            self._lines(*(np.array([value]) for value in self.carry))
        fields = (self.header_commas or 0) + 1
        if self.longest[0] > MAX_RECORD_BYTES:
            return f"line {self.longest[1]} is longer than {MAX_RECORD_BYTES >> 20} MiB"
        if self.worst[0] > MAX_COLUMNS:
            _off, line, found = self.worst
            return f"broken CSV structure: line {line} has {found} fields, the header {fields}"
        if self.cost <= STRUCTURE_BUDGET and not self.odd_quotes and not self.stray_quotes:
            return None
        if self.quotes:  # the fast count may be wrong: parse the file
            counted = exact()
            if isinstance(counted, str):
                return counted
            cost, irregular, line = counted
        else:  # without quotes the fast count is exact
            cost, (irregular, line) = self.cost, self.irregular
        if cost <= STRUCTURE_BUDGET:
            return None
        return (
            f"broken CSV structure: {irregular} lines do not have the header's {fields} fields "
            f"(the first is line {line}); too many to reject one by one"
        )


class _RecordTooLong(Exception):
    pass


def _exact_field_errors(path: Path, compressed: bool, fields: int) -> tuple[int, int, int] | str:
    """Parse the file as CSV (quotes as the engines read them): (cost, irregular records,
    the first one's line) counted as _Shape counts them, or why the file is unusable.
    Physical lines are known to be at most MAX_RECORD_BYTES long."""
    csv.field_size_limit(MAX_RECORD_BYTES)
    opener = gzip.open if compressed else open
    cost = irregular = first = 0
    pulled = [0]  # bytes read for the record being parsed

    def lines(text: Iterator[str]) -> Iterator[str]:
        for line in text:
            pulled[0] += len(line)
            if pulled[0] > MAX_RECORD_BYTES:
                raise _RecordTooLong
            yield line

    with opener(path, "rt", encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(lines(text), strict=True)
        while True:
            start = reader.line_num + 1
            pulled[0] = 0
            try:
                record = next(reader)
            except StopIteration:
                break
            except _RecordTooLong:
                return (
                    f"line {start}: a record longer than {MAX_RECORD_BYTES >> 20} MiB "
                    "(is a quote never closed?)"
                )
            except csv.Error as exc:
                if "unexpected end of data" in str(exc) and reader.line_num > start:
                    return (
                        f"line {start}: a quoted field is never closed (the "
                        f"{reader.line_num - start} lines after it would be lost)"
                    )
                # a malformed line (on the last line, an open quote): the engine rejects it
                cost += _LINE_KEPT + _ERROR_OVERHEAD
                irregular += 1
                first = first or start
                continue
            if not record or len(record) == fields:
                continue
            off = abs(len(record) - fields)
            length = sum(len(value) for value in record) + len(record)
            cost += off * (min(length, _LINE_KEPT) + _ERROR_OVERHEAD)
            irregular += 1
            first = first or start
    return cost, irregular, first


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
