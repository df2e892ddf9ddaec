"""Lake consistency (issue 7): a reader of the lake never sees a half-written object, and a
crash leaves no orphan that is later read twice (or read at all, when its file is not in the
marts)."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from chaos import full_state, land_dataset, reference, retail_etl, summary_of
from conftest import Env
from helpers import keys, ledger

from retail_etl.storage.local import LocalFolderStore


def test_readers_see_an_old_or_a_new_object_never_a_partial_one(env: Env, tmp_path: Path) -> None:
    """One thread rewrites an 8 MB object over and over; another reads it meanwhile."""
    versions = [os.urandom(8 << 20), os.urandom(8 << 20)]
    digests = {hashlib.sha256(v).hexdigest() for v in versions}
    sources = []
    for index, data in enumerate(versions):
        source = tmp_path / f"v{index}"
        source.write_bytes(data)
        sources.append(source)
    key = env.settings.storage.lake_prefix + "sales/sales_month=2024-03/store_id=1/x.parquet"
    env.store.upload(sources[0], key)
    done = threading.Event()
    seen: list[str] = []
    listed: set[str] = set()

    def read() -> None:
        target = tmp_path / "read"
        while not done.is_set():
            target.unlink(missing_ok=True)
            env.store.download(key, target)
            seen.append(hashlib.sha256(target.read_bytes()).hexdigest())
            listed.update(info.key for info in env.store.list(env.settings.storage.lake_prefix))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(30):
            env.store.upload(sources[round_ % 2], key)
    finally:
        done.set()
        reader.join()
    assert seen and set(seen) <= digests
    assert listed == {key}


def test_a_run_killed_mid_upload_shows_lake_readers_only_whole_files(
    env: Env, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Folder bucket: the object being written sits complete under a hidden temporary name
    when the run dies; the readers' usual globs (DuckDB, Arrow datasets) never pick it up."""
    if not isinstance(env.store, LocalFolderStore):
        pytest.skip("S3 publishes an object whole when its upload completes")
    ref = reference(env, request, tmp_path)
    land_dataset(env)
    killed = retail_etl(env, "run", kill=["torn:lake/sales/:5"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    sales = env.store.root / env.settings.storage.lake_prefix / "sales"
    temporaries = [p for p in sales.rglob(".retail-etl-tmp-*") if p.stat().st_size > 0]
    assert temporaries
    published = sorted(sales.rglob("*.parquet"))
    # Uploads run in parallel: each of the 5 writes whose temporary file was complete when
    # the kill came is either renamed into place or still hidden under its temporary name
    # (a sibling thread may not have renamed it yet). Each published one is whole.
    assert published and len(published) + len(temporaries) >= 5
    assert all(pq.read_metadata(path).num_rows > 0 for path in published)
    glob = str(sales / "**" / "*.parquet")
    ((counted,),) = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()
    assert counted > 0
    assert ds.dataset(sales, format="parquet", partitioning="hive").count_rows() == counted

    summary_of(retail_etl(env, "run", "--json"))
    assert full_state(env, tmp_path) == ref.state  # temporaries gone, every row once


def read(env: Env, key: str, tmp_path: Path) -> bytes:
    dest = tmp_path / hashlib.sha256(key.encode()).hexdigest()
    env.store.download(key, dest)
    return dest.read_bytes()


@pytest.mark.parametrize("vanished", [False, True], ids=["rerun", "a-file-vanished-meanwhile"])
def test_crash_between_lake_upload_and_commit_then_rerun_reads_each_row_once(
    env: Env, request: pytest.FixtureRequest, tmp_path: Path, vanished: bool
) -> None:
    ref = reference(env, request, tmp_path)
    land_dataset(env)
    killed = retail_etl(env, "run", kill=["checkpoint:lake_written:1"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert keys(env, env.settings.storage.lake_prefix + "sales/")  # uploaded, not committed

    expected = dict(ref.state["lake_rows"])
    if vanished:  # someone deletes a landed file before the rerun
        gone = keys(env, env.landing)[0]
        copy = env.landing + "late/copy-of-first.csv"
        assert read(env, gone, tmp_path) == read(env, copy, tmp_path)
        env.store.delete(gone)
        gone_rows, _fingerprint = expected.pop(gone[len(env.landing) :])
    summary_of(retail_etl(env, "run", "--json"))

    state = full_state(env, tmp_path)  # also: lake objects == their index, no temporaries
    if vanished:
        # its copy of the same night was waiting for its outcome: it loads in its place (its
        # rows' fingerprint names the copy as their source file)
        copy_rows, _fingerprint = state["lake_rows"].pop(copy[len(env.landing) :])
        assert copy_rows == gone_rows
    assert state["lake_rows"] == expected
    if vanished:
        assert {r["status"] for r in ledger(env) if r["file_name"] == gone[len(env.landing) :]} == {
            "E"
        }
    else:
        assert state == ref.state


def test_the_marts_commit_only_once_the_lake_objects_are_uploaded(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The uploads run beside the marts' transaction: however slow they are, the transaction
    that puts the files in the marts commits after every lake object it indexed exists."""
    from sqlalchemy import Engine, event, select

    from retail_etl.run import publish
    from retail_etl.warehouse.schema import lake_object

    land_dataset(env, days=1, rows=2_000, files=2)
    upload = publish.upload_lake

    def slow_upload(*args: object, **kwargs: object) -> tuple[int, int]:
        time.sleep(2)  # the marts' transaction takes far less than this here
        return upload(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(publish, "upload_lake", slow_upload)
    missing_at_commit: list[list[str]] = []

    def wrote_marts(conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO CUSTOMERS_DATA_MART"):
            conn.info["wrote_marts"] = True

    def before_commit(conn) -> None:  # type: ignore[no-untyped-def]
        if not conn.info.pop("wrote_marts", False):
            return
        with env.warehouse.begin() as other:  # the index is committed before the uploads
            indexed = other.execute(select(lake_object.c.object_key)).scalars().all()
        missing_at_commit.append([key for key in indexed if not env.store.exists(key)])

    event.listen(Engine, "before_cursor_execute", wrote_marts)  # the run's own engine too
    event.listen(Engine, "commit", before_commit)
    try:
        summary = env.run()
    finally:
        event.remove(Engine, "before_cursor_execute", wrote_marts)
        event.remove(Engine, "commit", before_commit)
    assert summary.files_processed >= 2 and summary.lake_objects > 0
    assert missing_at_commit == [[]]
