"""A move of a landed object checks it is still the object the run read (both stores)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Env

from retail_etl.errors import ObjectMissingError, ObjectReplacedError


def read(env: Env, key: str, tmp_path: Path) -> bytes:
    dest = tmp_path / "read"
    dest.unlink(missing_ok=True)
    env.store.download(key, dest)
    return dest.read_bytes()


def test_a_source_replaced_since_it_was_read_stays_where_it_is(env: Env, tmp_path: Path) -> None:
    env.store.put_bytes("landing/a.csv", b"first,1\n")
    read_version = env.store.version("landing/a.csv")
    env.store.put_bytes("landing/a.csv", b"other,2\n")  # the same size

    with pytest.raises(ObjectReplacedError):
        env.store.move("landing/a.csv", "archive/a.csv", read_version)

    assert read(env, "landing/a.csv", tmp_path) == b"other,2\n"
    assert not env.store.exists("archive/a.csv")


def test_the_source_that_was_read_moves_and_a_repeated_move_is_done(
    env: Env, tmp_path: Path
) -> None:
    env.store.put_bytes("landing/a.csv", b"first,1\n")
    read_version = env.store.version("landing/a.csv")
    assert read_version is not None and env.store.version("landing/a.csv") == read_version

    env.store.move("landing/a.csv", "archive/a.csv", read_version)
    env.store.move("landing/a.csv", "archive/a.csv", read_version)  # an earlier move got there

    assert read(env, "archive/a.csv", tmp_path) == b"first,1\n"
    assert not env.store.exists("landing/a.csv")
    with pytest.raises(ObjectMissingError):
        env.store.move("landing/b.csv", "archive/b.csv", read_version)
