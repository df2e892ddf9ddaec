"""The warehouse on MariaDB / MySQL: DDL, bulk upserts, connection errors, and passwords that
never reach any output (the CLI runs as a subprocess, as a user would run it)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pytest
from services import MariaDB
from sqlalchemy import Connection, Table, select, text
from sqlalchemy.engine import make_url

from retail_etl.config import WarehouseSettings
from retail_etl.errors import WarehouseError
from retail_etl.secrets import encrypt, generate_key, parse_key
from retail_etl.warehouse import Warehouse, bulk, schema


@pytest.fixture
def database(mariadb: MariaDB, request: pytest.FixtureRequest) -> str:
    return mariadb.fresh_database(request)


@pytest.fixture
def warehouse(mariadb: MariaDB, database: str) -> Iterator[Warehouse]:
    wh = Warehouse(WarehouseSettings(url=mariadb.url(database)))
    wh.create_all()
    yield wh
    wh.dispose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- DDL --------------------------------------------------------------------------------------
def test_tables_have_exact_types_utf8mb4_and_keys(
    warehouse: Warehouse, mariadb: MariaDB, database: str
) -> None:
    columns = {
        (table, column): (data_type, precision, scale)
        for table, column, data_type, precision, scale in mariadb.execute(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s",
            (database,),
        )
    }
    money = ("decimal", 18, 2)
    assert columns["customers_data_mart", "total_sales"] == money
    assert columns["sales_team_data_mart", "total_sales"] == money
    assert columns["sales_team_data_mart", "incentive"] == money
    # merging happens on exact integer cents
    assert columns["sales_team_data_mart", "total_cents"][0] == "bigint"
    assert columns["customers_data_mart", "total_cents"][0] == "bigint"
    assert columns["customers_data_mart", "sales_date_month"][0] == "date"
    assert columns["product", "current_price"] == ("decimal", 12, 2)
    assert columns["customer", "customer_joining_date"][0] == "date"
    assert columns["sales_team_data_mart", "sales_month"][0] == "char"

    collations = dict(
        mariadb.execute(
            "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = %s",
            (database,),
        )
    )
    assert set(collations) >= {t.name for t in schema.metadata.sorted_tables}
    assert set(collations.values()) == {"utf8mb4_bin"}
    engines = {
        e
        for (e,) in mariadb.execute(
            "SELECT DISTINCT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
            (database,),
        )
    }
    assert engines == {"InnoDB"}

    keys: dict[tuple[str, str], list[str]] = {}
    for table, index, column in mariadb.execute(
        "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
        (database,),
    ):
        keys.setdefault((table, index), []).append(column)
    assert keys["customers_data_mart", "PRIMARY"] == ["customer_id", "sales_date_month"]
    assert keys["sales_team_data_mart", "PRIMARY"] == ["store_id", "sales_person_id", "sales_month"]
    assert keys["product_staging_table", "ix_staging_status"] == ["status"]
    assert keys["product_staging_table", "ix_staging_checksum"] == ["checksum"]
    assert keys["product_staging_table", "ix_staging_name_hash"] == ["name_hash"]


def upsert(
    warehouse: Warehouse, conn: Connection, table: Table, rows: list[dict[str, Any]]
) -> None:
    """bulk.upsert with rows written as dicts (all with the same keys)."""
    bulk.upsert(conn, table, pa.Table.from_pylist(rows))


def test_money_is_exact_and_oversized_values_are_errors(warehouse: Warehouse) -> None:
    row = {
        "customer_id": 1,
        "full_name": "Zoë 🛒 O'Brien",
        "address": "1 Main St",
        "phone_number": "555",
        "sales_date_month": date(2024, 3, 1),
        "sales_rows": 3,
        "updated_at": datetime(2024, 3, 31, 23, 59, 59),
    }
    total = Decimal("0.10") + Decimal("0.20") + Decimal("9999999999999999.00")
    with warehouse.begin() as conn:
        upsert(
            warehouse,
            conn,
            schema.customers_data_mart,
            [{**row, "total_sales": total, "total_cents": int(total * 100)}],
        )
    with warehouse.begin() as conn:
        stored = conn.execute(select(schema.customers_data_mart)).one()
    assert (
        stored.total_sales == Decimal("9999999999999999.30") and type(stored.total_sales) is Decimal
    )
    assert stored.full_name == "Zoë 🛒 O'Brien"
    assert stored.sales_date_month == date(2024, 3, 1)

    # Strict mode: a total beyond DECIMAL(18,2) fails instead of being clipped.
    with pytest.raises(WarehouseError, match="Out of range"), warehouse.begin() as conn:
        upsert(
            warehouse,
            conn,
            schema.customers_data_mart,
            [{**row, "customer_id": 2, "total_sales": Decimal("10") ** 17, "total_cents": 0}],
        )


def test_upserts_are_batched_multi_row_statements(warehouse: Warehouse) -> None:
    rows = [
        {
            "customer_id": i,
            "full_name": f"customer {i}",
            "address": None,
            "phone_number": None,
            "sales_date_month": date(2024, 1, 1),
            "total_sales": Decimal("1.25"),
            "total_cents": 125,
            "sales_rows": 1,
            "updated_at": datetime(2024, 1, 31),
        }
        for i in range(12_000)
    ]
    with warehouse.begin() as conn:

        def inserts() -> int:
            return int(conn.execute(text("SHOW SESSION STATUS LIKE 'Com_insert'")).one()[1])

        before = inserts()
        upsert(warehouse, conn, schema.customers_data_mart, rows)
        upsert(
            warehouse,
            conn,
            schema.customers_data_mart,
            [
                {**r, "total_sales": Decimal("2.50"), "total_cents": 250, "sales_rows": 2}
                for r in rows
            ],
        )
        statements = inserts() - before
    assert statements <= 2 * 12_000 // 1000, f"{statements} INSERT statements for 24,000 rows"
    with warehouse.begin() as conn:
        count, total, kinds = conn.execute(
            text(
                "SELECT COUNT(*), SUM(total_sales), COUNT(DISTINCT sales_rows) "
                "FROM customers_data_mart"
            )
        ).one()
    assert (count, total, kinds) == (12_000, Decimal("30000.00"), 1), "second upsert replaced"


@pytest.mark.parametrize("local_files", [True, False], ids=["load-data-replace", "scratch-copy"])
def test_an_upsert_replaces_rows_whose_key_exists_and_adds_the_others(
    warehouse: Warehouse, local_files: bool
) -> None:
    """A month's coupons recomputed: LOAD DATA ... REPLACE where the server takes local files,
    the scratch copy and INSERT ... ON DUPLICATE KEY UPDATE where it does not; same rows."""

    def coupon(customer_id: int, segment: str, cents: int) -> dict[str, Any]:
        return {
            "month": "2024-03",
            "customer_id": customer_id,
            "segment": segment,
            "discount_pct": Decimal("5.00"),
            "reason": f"reason {customer_id}, with a comma and a \\ backslash",
            "code": f"{segment[:3].upper()}-{customer_id:012d}",
            "total_sales": Decimal(cents) / 100,
        }

    with warehouse.begin() as conn:
        upsert(
            warehouse, conn, schema.customer_coupons, [coupon(i, "welcome", 100) for i in (1, 2)]
        )
    with warehouse.begin() as conn:
        conn.connection.info["local_infile"] = local_files  # what the server was found to allow

        def statements(kind: str) -> int:
            return int(conn.execute(text(f"SHOW SESSION STATUS LIKE 'Com_{kind}'")).one()[1])

        loads, inserts = statements("load"), statements("insert_select")
        upsert(
            warehouse,
            conn,
            schema.customer_coupons,
            [coupon(2, "loyalty", 250), coupon(3, "welcome", 99)],
        )
        used = (statements("load") - loads, statements("insert_select") - inserts)
        assert used == ((1, 0) if local_files else (0, 1)), used
    with warehouse.begin() as conn:
        stored = conn.execute(
            select(schema.customer_coupons).order_by(schema.customer_coupons.c.customer_id)
        ).all()
    assert [dict(row._mapping) for row in stored] == [
        coupon(1, "welcome", 100),
        coupon(2, "loyalty", 250),
        coupon(3, "welcome", 99),
    ]


# --- connection errors ------------------------------------------------------------------------
def test_a_page_the_server_cuts_is_read_again_in_smaller_pages(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server cuts a page's text at group_concat_max_len (and at max_allowed_packet,
    which a session cannot change) with only a warning: no row may be lost or read half.
    Here the cap is a few rows' worth: the text ends inside a quoted name, inside the last
    number of a page, or exactly at a line's end."""
    t = schema.customers_data_mart
    n = 40
    data = pa.table(
        {
            "customer_id": pa.array(range(10, 10 + n), pa.int64()),
            "full_name": pa.array([f"Name {i}" * (1 + i % 3) for i in range(n)]),
            "sales_date_month": pa.array([date(2024, 3, 1)] * n),
            "total_sales": pa.array([Decimal(i) for i in range(n)], pa.decimal128(18, 2)),
            "total_cents": pa.array([10**15 + i for i in range(n)], pa.int64()),
            "sales_rows": pa.array(range(n), pa.int64()),
            "updated_at": pa.array([datetime(2024, 3, 31)] * n, pa.timestamp("s")),
        }
    )
    with warehouse.begin() as conn:
        bulk.load(conn, t, data)
    everything = [t.c[name] for name in data.column_names]
    numbers = [t.c.customer_id, t.c.total_cents]  # each line "NN,1000000000000NNN,." + "\n"
    line = 22
    for columns, cap in (
        (everything, 300),  # inside a quoted name
        (numbers, line + 10),  # inside the last number of a two-row page
        (numbers, 2 * line - 1),  # at a line's end
    ):
        monkeypatch.setattr(bulk, "PAGE_BYTES", cap)
        expected = data.select([c.name for c in columns]).to_pylist()
        with warehouse.begin() as conn:
            read = bulk.select_arrow(conn, select(*columns), t.c.customer_id)
            ordered = bulk.select_arrow(conn, select(*columns).order_by(t.c.customer_id))
        assert read.sort_by("customer_id").to_pylist() == expected, cap
        assert ordered.sort_by("customer_id").to_pylist() == expected, cap

    monkeypatch.setattr(bulk, "PAGE_BYTES", 20)  # not even one row
    with pytest.raises(WarehouseError, match="max_allowed_packet"), warehouse.begin() as conn:
        bulk.select_arrow(conn, select(*everything), t.c.customer_id)


def test_pages_sized_by_the_first_pages_text_bring_every_row_once(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first page the page size follows its bytes per row: larger pages for narrow
    rows, smaller for wide ones. Keyed pages and OFFSET pages alike bring every row once."""
    t = schema.customers_data_mart
    n = 57
    data = pa.table(
        {
            "customer_id": pa.array(range(1, n + 1), pa.int64()),
            "full_name": pa.array(["Ünal Øster " * (1 + i % 5) for i in range(n)]),
            "sales_date_month": pa.array([date(2024, 3, 1)] * n),
            "total_sales": pa.array([Decimal(i) for i in range(n)], pa.decimal128(18, 2)),
            "total_cents": pa.array(range(n), pa.int64()),
            "sales_rows": pa.array(range(n), pa.int64()),
            "updated_at": pa.array([datetime(2024, 3, 31)] * n, pa.timestamp("s")),
        }
    )
    with warehouse.begin() as conn:
        bulk.load(conn, t, data)
    columns = [t.c[name] for name in data.column_names]
    expected = data.to_pylist()
    for first_page, text_bytes in ((2, 2_000), (20, 300), (3, 1)):
        monkeypatch.setattr(bulk, "PAGE_ROWS", first_page)
        monkeypatch.setattr(bulk, "PAGE_TEXT_BYTES", text_bytes)
        with warehouse.begin() as conn:
            keyed = list(bulk.select_arrow_batches(conn, select(*columns), 10, t.c.customer_id))
            ordered = bulk.select_arrow(conn, select(*columns).order_by(t.c.customer_id))
        assert pa.concat_tables(keyed).sort_by("customer_id").to_pylist() == expected
        assert ordered.sort_by("customer_id").to_pylist() == expected
        assert max(page.num_rows for page in keyed) <= 10
        if text_bytes == 2_000:  # the pages grew after the first
            assert max(page.num_rows for page in keyed) > first_page


def test_an_unreachable_server_is_one_clear_line_after_bounded_retries() -> None:
    port = closed_port()
    warehouse = Warehouse(
        WarehouseSettings(
            url=f"mysql+pymysql://etl:pw-{port}@127.0.0.1:{port}/x", connect_retries=2
        )
    )
    started = time.monotonic()
    with pytest.raises(WarehouseError) as caught:
        warehouse.create_all()
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert 2.5 < elapsed < 20, "retried with a pause, then gave up"
    assert message == (
        f"warehouse mysql+pymysql://etl:***@127.0.0.1:{port}/x: Can't connect to MySQL server "
        f"on '127.0.0.1' ([Errno 111] Connection refused) (error 2003: is the server running "
        "and reachable?); gave up after 3 attempt(s)"
    )


def test_bad_credentials_fail_at_once(mariadb: MariaDB, database: str) -> None:
    url = mariadb.url(database, username="no_such_user_x", password="Wrong-Pw-123")
    warehouse = Warehouse(WarehouseSettings(url=url, connect_retries=5))
    started = time.monotonic()
    with pytest.raises(WarehouseError, match=r"Access denied .*error 1045") as caught:
        warehouse.create_all()
    assert time.monotonic() - started < 5, "bad credentials are not retried"
    assert "Wrong-Pw-123" not in str(caught.value)


# --- the password never reaches any output ------------------------------------------------------
@pytest.fixture
def mysql_user(mariadb: MariaDB, database: str) -> Iterator[tuple[str, str]]:
    """A user with a known password and rights on the test database only."""
    user = f"retail_etl_u_{secrets.token_hex(4)}"
    password = f"Pw{secrets.token_hex(8)}!x"
    hosts = ("%", "localhost")
    for host in hosts:
        quoted_host = host.replace("%", "%%")  # the statement also carries a parameter
        mariadb.execute(f"CREATE USER '{user}'@'{quoted_host}' IDENTIFIED BY %s", (password,))
        mariadb.execute(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'{host}'")
    yield user, password
    for host in hosts:
        mariadb.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")


def run_cli(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("RETAIL_ETL_", "AWS_"))}
    full_env.update(
        RETAIL_ETL_STORAGE__URL=f"file://{tmp_path / 'bucket'}",
        RETAIL_ETL_LOG__DIR=str(tmp_path / "logs"),
        RETAIL_ETL_ENGINE__WORK_DIR=str(tmp_path / "work"),
        RETAIL_ETL_WAREHOUSE__CONNECT_RETRIES="0",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "retail_etl", *args],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def everything_written(tmp_path: Path, results: list[subprocess.CompletedProcess[str]]) -> str:
    logs = "".join(
        p.read_text(encoding="utf-8", errors="replace") for p in (tmp_path / "logs").glob("*")
    )
    return logs + "".join(r.stdout + r.stderr for r in results)


def test_the_password_never_appears_in_output_logs_or_status(
    mariadb: MariaDB, database: str, mysql_user: tuple[str, str], tmp_path: Path
) -> None:
    user, password = mysql_user
    url = mariadb.url(database, username=user, password=password)
    ok = {"RETAIL_ETL_WAREHOUSE__URL": url}
    results = [
        run_cli(tmp_path, ok, "init", "--demo"),
        run_cli(tmp_path, ok, "generate", "--date", "2024-03-01", "--rows", "50", "--files", "2"),
        run_cli(tmp_path, ok, "run"),
        run_cli(tmp_path, ok, "--debug", "run", "--json"),
        run_cli(tmp_path, ok, "status"),
        run_cli(tmp_path, ok, "status", "--json"),
    ]
    assert [r.returncode for r in results] == [0] * 6, [r.stderr for r in results]
    shown = json.loads(results[5].stdout)["warehouse"]
    assert shown == make_url(url).render_as_string(hide_password=True), "named, masked"

    # The same user with a wrong (known) password, in the URL and as warehouse.password.
    wrong = f"Wr0ng{secrets.token_hex(6)}"
    bad_url = {"RETAIL_ETL_WAREHOUSE__URL": mariadb.url(database, username=user, password=wrong)}
    bad_field = {"RETAIL_ETL_WAREHOUSE__URL": url, "RETAIL_ETL_WAREHOUSE__PASSWORD": wrong}
    failures = [
        run_cli(tmp_path, bad_url, "status"),
        run_cli(tmp_path, bad_url, "run", "--json"),
        run_cli(tmp_path, bad_field, "init"),
    ]
    for failure in failures:
        assert failure.returncode == 4, failure.stderr
        lines = failure.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: warehouse mysql+pymysql://")
        assert "Access denied" in lines[0] and "Traceback" not in failure.stderr

    written = everything_written(tmp_path, results + failures)
    for secret in (password, wrong):
        assert secret not in written and quote(secret) not in written


def test_an_encrypted_password_is_decrypted_and_never_shown(
    mariadb: MariaDB, database: str, mysql_user: tuple[str, str], tmp_path: Path
) -> None:
    user, password = mysql_user
    key = generate_key()
    url_without_password = mariadb.url(database, username=user)
    settings = {
        "RETAIL_ETL_MASTER_KEY": key,
        "RETAIL_ETL_WAREHOUSE__URL": url_without_password,
        "RETAIL_ETL_WAREHOUSE__PASSWORD": encrypt(password, parse_key(key, "test")),
    }
    results = [run_cli(tmp_path, settings, "init"), run_cli(tmp_path, settings, "status")]
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]

    wrong = f"Wr0ng{secrets.token_hex(6)}"
    failing = {**settings, "RETAIL_ETL_WAREHOUSE__PASSWORD": encrypt(wrong, parse_key(key, "t"))}
    failure = run_cli(tmp_path, failing, "status")
    assert failure.returncode == 4 and "Access denied" in failure.stderr

    written = everything_written(tmp_path, [*results, failure])
    for secret in (password, wrong):
        assert secret not in written and quote(secret) not in written


def test_an_unreachable_server_via_the_cli_is_one_line(tmp_path: Path) -> None:
    port = closed_port()
    result = run_cli(
        tmp_path,
        {"RETAIL_ETL_WAREHOUSE__URL": f"mysql+pymysql://root:Hidden-{port}@127.0.0.1:{port}/db"},
        "run",
    )
    assert result.returncode == 4
    assert result.stderr.strip().splitlines() == [
        f"error: warehouse mysql+pymysql://root:***@127.0.0.1:{port}/db: Can't connect to MySQL "
        "server on '127.0.0.1' ([Errno 111] Connection refused) (error 2003: is the server "
        "running and reachable?); gave up after 1 attempt(s)"
    ]
    assert f"Hidden-{port}" not in result.stdout + result.stderr
