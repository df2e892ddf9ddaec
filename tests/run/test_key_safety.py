"""Hostile object keys: names never choose where local files go, and never reach SQL as text."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import pytest
from conftest import Env, csv_text, make_env
from helpers import keys, lake_rows, ledger
from sqlalchemy import func, select

from retail_etl.errors import StorageError
from retail_etl.run.fetch import local_name
from retail_etl.run.ledger import LedgerRow
from retail_etl.storage import safe_key
from retail_etl.storage.local import LocalFolderStore, _temporaries_of
from retail_etl.warehouse.schema import customer, product_staging_table


def row(n: int) -> str:
    """A valid sales row; n makes each file's content (and checksum) distinct."""
    return f"1,1,Whole Milk 1L,2024-03-01,2,1.00,{n},{n}.00"


HOSTILE_NAMES = [
    'it\'s "quoted"; DROP TABLE customer;--.csv',
    "Robert'); DELETE FROM product_staging_table WHERE ('1'='1.csv",
    "back\\slash `tick` $(whoami) %s %(x)s {0}.csv",
    "ünïcödé 日本語 ファイル with  spaces.csv",
]


@pytest.mark.parametrize(
    "key", ["../x.csv", "a/../../x.csv", "/etc/passwd", "/", "", "a/\x00.csv", ".."]
)
def test_safe_key_refuses_keys_that_escape(key: str) -> None:
    with pytest.raises(StorageError, match="unsafe object key"):
        safe_key(key)


def test_safe_key_normalises_harmless_keys() -> None:
    assert safe_key("a/./b//c.csv") == "a/b/c.csv"
    assert safe_key("a/b/../c.csv") == "a/c.csv"
    assert safe_key("landing/") == "landing/"


@pytest.mark.parametrize("key", ["../outside.csv", "landing/../../outside.csv", "/tmp/abs.csv"])
def test_the_folder_store_never_writes_outside_its_root(tmp_path: Path, key: str) -> None:
    store = LocalFolderStore(tmp_path / "bucket", "file://bucket")
    with pytest.raises(StorageError):
        store.put_bytes(key, b"x")
    with pytest.raises(StorageError):
        store.move("landing/a.csv", key)
    assert not (tmp_path / "outside.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bucket"]


def test_a_name_the_folders_file_system_refuses_is_a_storage_error(tmp_path: Path) -> None:
    """One line naming the object (exit 3), not an unexpected OSError (exit 8)."""
    store = LocalFolderStore(tmp_path / "bucket", "file://bucket")
    store.put_bytes("error/a.csv", b"x")
    with pytest.raises(StorageError, match="cannot read .* File name too long"):
        store.exists("error/" + "a" * 300 + ".csv")


def test_a_landed_file_named_like_the_folder_stores_temporaries_is_loaded(embedded: Env) -> None:
    """The folder store hides only its own temporaries (its prefix, a digest, mkstemp's
    suffix): a file someone names .retail-etl-tmp-*.csv is loaded, not silently skipped."""
    embedded.land(".retail-etl-tmp-notes.csv", csv_text(row(1)))
    embedded.land(".retail-etl-tmp-0123456789abcdef.csv", csv_text(row(2)))
    store = embedded.store
    assert isinstance(store, LocalFolderStore)
    store.put_bytes("elsewhere/x.csv", b"x")  # leaves nothing behind, so list it mid-write:
    partial = store._path("elsewhere/y.csv")
    handle, temporary = tempfile.mkstemp(prefix=_temporaries_of(partial), dir=partial.parent)
    os.close(handle)

    summary = embedded.run()

    assert summary.outcome == "succeeded" and summary.files_processed == 2
    assert [info.key for info in store.list("elsewhere/")] == ["elsewhere/x.csv"]
    assert Path(temporary).exists()


@pytest.mark.parametrize(
    "file_name",
    ["../../etc/passwd.csv", "/etc/cron.d/x.csv.gz", "a/../../../x.CSV.GZ", "..", "C:\\x.csv"],
)
def test_local_work_file_names_come_from_the_ledger_id_only(tmp_path: Path, file_name: str) -> None:
    row = LedgerRow(17, file_name, "A", 1, 1, None, None, None)
    name = local_name(row)
    assert name in ("17.csv", "17.csv.gz")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_hostile_file_names_are_data_not_sql(env: Env, tmp_path: Path) -> None:
    with env.warehouse.begin() as conn:
        customers = conn.execute(select(func.count()).select_from(customer)).scalar()
    for n, name in enumerate(HOSTILE_NAMES, 1):
        env.land(f"2024-03-01/{name}", csv_text(row(n)))

    summary = env.run()

    assert summary.outcome == "succeeded" and summary.files_processed == len(HOSTILE_NAMES)
    rows = ledger(env)
    assert sorted(r["file_name"] for r in rows) == sorted(f"2024-03-01/{n}" for n in HOSTILE_NAMES)
    assert {r["status"] for r in rows} == {"I"}
    with env.warehouse.begin() as conn:
        assert conn.execute(select(func.count()).select_from(customer)).scalar() == customers
        assert conn.execute(
            select(func.count()).select_from(product_staging_table)
        ).scalar() == len(HOSTILE_NAMES)
    sources = {key[-1] for key in lake_rows(env, tmp_path)}
    assert sources == {f"2024-03-01/{n}" for n in HOSTILE_NAMES}
    archive = env.settings.storage.archive_prefix
    assert sorted(keys(env, archive)) == sorted(
        f"{archive}run-{summary.run_id}/2024-03-01/{n}" for n in HOSTILE_NAMES
    )


def test_s3_keys_with_dot_dot_or_absolute_paths_stay_in_the_bucket(
    tmp_path: Path, request: pytest.FixtureRequest, s3_server: object
) -> None:
    """S3 keys are opaque strings: "sales_data/../../x.csv" is a legal key. Processing such
    objects must not write outside the work folder; they are processed like any other."""
    env = make_env("s3-mysql", tmp_path / "install", request)
    marker = f"retail-etl-escape-{secrets.token_hex(4)}"
    names = [
        f"../../{marker}.csv",
        f"../../../../../../tmp/{marker}-deep.csv",
        f"/tmp/{marker}-absolute.csv",
        f"a/./../{marker}-dot.csv",
    ]
    client = request.getfixturevalue("s3_server").client()
    bucket = env.settings.storage.url.removeprefix("s3://")
    for n, name in enumerate(names, 1):
        client.put_object(Bucket=bucket, Key=env.landing + name, Body=csv_text(row(n)).encode())

    summary = env.run()

    assert summary.outcome == "succeeded" and summary.files_processed == len(names)
    assert sorted(r["file_name"] for r in ledger(env)) == sorted(names)
    # Whatever stayed on disk outside the (removed) work folder, or where a naive join of the
    # keys would have written: nothing carries the marker.
    assert list(tmp_path.rglob(f"*{marker}*")) == [], "a key chose a local path"
    assert list(Path("/tmp").glob(f"*{marker}*")) == [] == list(Path("/").glob(f"*{marker}*"))
    stored = {item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]}
    archive = env.settings.storage.archive_prefix
    assert {f"{archive}run-{summary.run_id}/{n}" for n in names} <= stored
    assert not any(key.startswith(env.landing) for key in stored)
    env.warehouse.dispose()
