"""Malformed sales files for the bad-input tests (issue 7): a valid file mangled by one to three
random mutations. Every mutation draws from a `random.Random`, so hypothesis (st.randoms) and
plain seeded loops share them."""

from __future__ import annotations

import gzip
import random
from collections.abc import Callable

from conftest import HEADER

ROWS = [
    "1,1,Whole Milk 1L,2024-03-05,2,1.19,2,2.38,card",
    '2,2,"Bananas, 1kg",2024-03-05,4,1.39,1,1.39,cash',
    "3,3,Tea,2024-03-06,6,3.10,2,6.20,",
    '1,4,"Coffee ""Gold""",2024-03-07,8,4.50,1,4.50,card',
    "2,1,Sugar,2024-04-01,2,1.65,3,4.95,wallet",
]
VALID = (HEADER + ",payment\n" + "\n".join(ROWS * 4) + "\n").encode()

Mutation = Callable[[bytes, random.Random], bytes]


def _at(data: bytes, rnd: random.Random) -> int:
    return rnd.randrange(len(data) + 1)


def _insert(data: bytes, rnd: random.Random, piece: bytes) -> bytes:
    at = _at(data, rnd)
    return data[:at] + piece + data[at:]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


MUTATIONS: dict[str, Mutation] = {
    "truncate": lambda d, r: d[: _at(d, r)],
    "random-bytes": lambda d, r: _insert(d, r, r.randbytes(r.randint(1, 20))),
    "nul": lambda d, r: _insert(d, r, b"\x00" * r.randint(1, 5)),
    "quote": lambda d, r: _insert(d, r, b'"'),
    "comma": lambda d, r: _insert(d, r, b"," * r.randint(1, 30)),
    "newline": lambda d, r: _insert(d, r, r.choice([b"\n", b"\r", b"\r\n", b"\n\n"])),
    "delete": lambda d, r: (lambda a: d[:a] + d[a + r.randint(1, 40) :])(_at(d, r)),
    "latin-1": lambda d, r: _insert(d, r, "café".encode("latin-1")),
    "utf-8": lambda d, r: _insert(d, r, "naïve – ☕".encode()),
    "invalid-utf-8": lambda d, r: _insert(d, r, r.choice([b"\xc3", b"\xff\xfe", b"\xed\xa0\x80"])),
    "long-line": lambda d, r: _insert(d, r, b"x" * r.randint(10_000, 200_000)),
    "wide-row": lambda d, r: _insert(d, r, b"\n" + b",1" * r.randint(10, 3_000) + b"\n"),
    "short-rows": lambda d, r: _insert(d, r, b"\n1,2" * r.randint(1, 50) + b"\n"),
    "open-quote": lambda d, r: _insert(d, r, b',"never closed'),
    "header-only": lambda d, r: _lines(d)[0] + b"\n",
    "no-header": lambda d, r: b"\n".join(_lines(d)[1:]),
    "drop-header-name": lambda d, r: _drop_name(d, r),
    "duplicate-header-name": lambda d, r: _lines(d)[0] + b",price\n" + b"\n".join(_lines(d)[1:]),
    "shout-header": lambda d, r: _lines(d)[0].upper() + b"\n" + b"\n".join(_lines(d)[1:]),
    "bom": lambda d, r: b"\xef\xbb\xbf" + d,
    "crlf": lambda d, r: d.replace(b"\n", b"\r\n"),
    "cr-only": lambda d, r: d.replace(b"\n", b"\r"),
    "one-line": lambda d, r: d.replace(b"\n", b""),
    "repeat-line": lambda d, r: _repeat(d, r),
    "bad-values": lambda d, r: d.replace(b"2024-03-05", r.choice([b"2024-02-30", b"", b"x"])),
    "only-random": lambda d, r: r.randbytes(r.randint(1, 2_000)),
}


def _drop_name(data: bytes, rnd: random.Random) -> bytes:
    lines = _lines(data)
    names = lines[0].split(b",")
    del names[rnd.randrange(len(names))]
    return b"\n".join([b",".join(names), *lines[1:]])


def _repeat(data: bytes, rnd: random.Random) -> bytes:
    lines = _lines(data)
    pick = rnd.randrange(len(lines))
    return b"\n".join(lines[:pick] + [lines[pick]] * rnd.randint(2, 200) + lines[pick:])


def malformed(rnd: random.Random) -> tuple[str, bytes, list[str]]:
    """(object name, bytes, mutations applied): plain or gzip, maybe a broken gzip."""
    data = VALID
    applied = rnd.sample(sorted(MUTATIONS), rnd.randint(1, 3))
    for name in applied:
        data = MUTATIONS[name](data, rnd)
    if rnd.random() < 0.2:
        data = gzip.compress(data, 1)
        if rnd.random() < 0.3:
            applied.append("gzip-truncated")
            data = data[: rnd.randrange(len(data))]
        return "sales.csv.gz", data, [*applied, "gzip"]
    return "sales.csv", data, applied
