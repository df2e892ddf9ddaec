"""Warehouse tables. Names and columns of the dimensions, ledger and marts are the contract
(SPEC section 6); the extra columns and the helper tables are ours."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    CHAR,
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

MONEY = Numeric(18, 2, asdecimal=True)
PRICE = Numeric(12, 2, asdecimal=True)

metadata = MetaData()
_mysql: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

# --- dimensions (maintained by other systems) -------------------------------------------
customer = Table(
    "customer",
    metadata,
    Column("customer_id", Integer, primary_key=True, autoincrement=False),
    Column("first_name", String(100)),
    Column("last_name", String(100)),
    Column("address", String(255)),
    Column("pincode", String(20)),
    Column("phone_number", String(20)),
    Column("customer_joining_date", Date),
    **_mysql,
)

store = Table(
    "store",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("address", String(255)),
    Column("store_pincode", String(20)),
    Column("store_manager_name", String(200)),
    Column("store_opening_date", Date),
    Column("reviews", Text),
    **_mysql,
)

product = Table(
    "product",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(255), nullable=False),
    Column("current_price", PRICE),
    Column("old_price", PRICE),
    Column("created_date", Date),
    Column("updated_date", Date),
    Column("expiry_date", Date),
    Index("ix_product_name", "name"),
    **_mysql,
)

sales_team = Table(
    "sales_team",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("first_name", String(100)),
    Column("last_name", String(100)),
    Column("manager_id", Integer),
    Column("is_manager", CHAR(1)),
    Column("address", String(255)),
    Column("pincode", String(20)),
    Column("joining_date", Date),
    Column("store_id", Integer),  # ours: the store a sales person works in (for generate)
    **_mysql,
)

DIMENSIONS = (customer, store, product, sales_team)

# --- ledger ---------------------------------------------------------------------------------
# status: A active, I done, E quarantined, D duplicate. A file in A with pending_status set has
# its outcome committed and only its move to dest_key (and the status flip) left to do.
product_staging_table = Table(
    "product_staging_table",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("file_name", String(1024), nullable=False),
    Column("file_location", String(2048), nullable=False),
    Column("created_date", DateTime, nullable=False),
    Column("updated_date", DateTime, nullable=False),
    Column("status", CHAR(1), nullable=False),
    Column("name_hash", CHAR(64), nullable=False),  # sha256 of file_name: indexable on MySQL
    Column("checksum", CHAR(64)),
    Column("size", BigInteger),
    Column("rows_read", BigInteger),
    Column("rows_valid", BigInteger),
    Column("rows_rejected", BigInteger),
    Column("run_id", Integer, nullable=False),  # the run that registered the file
    Column("last_run_id", Integer, nullable=False),  # the run that last worked on it
    Column("pending_status", CHAR(1)),
    Column("dest_key", String(2048)),
    Column("superseded_by", Integer),  # a later correction of the same file name
    Column("affected_months", Text),  # 'YYYY-MM,...' whose mart snapshots this file changed
    Column("message", Text),
    Index("ix_staging_status", "status"),
    Index("ix_staging_checksum", "checksum"),
    Index("ix_staging_name_hash", "name_hash"),
    sqlite_autoincrement=True,
    **_mysql,
)

# Lake objects written for a ledger row, recorded before they are uploaded so that a resumed
# or corrected file can remove exactly its own objects (no orphan is ever double-read), and a
# correction can read back what the file it replaces put in the marts.
lake_object = Table(
    "etl_lake_object",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ledger_id", Integer, nullable=False),
    Column("object_key", String(1024), nullable=False),
    Index("ix_lake_object_ledger", "ledger_id"),
    sqlite_autoincrement=True,
    **_mysql,
)

# --- marts ------------------------------------------------------------------------------------
# total_cents is the sum in integer cents, so that merging in SQL is exact on every dialect
# (SQLite has no decimal type); total_sales is derived from it. What each file contributed is
# not kept here: a correction recomputes it from the replaced file's lake objects
# (run/transform.py), so nothing in the warehouse grows as files x customers.
customers_data_mart = Table(
    "customers_data_mart",
    metadata,
    Column("customer_id", Integer, primary_key=True, autoincrement=False),
    Column("full_name", String(201)),
    Column("address", String(255)),
    Column("phone_number", String(20)),
    Column("sales_date_month", Date, primary_key=True),
    Column("total_sales", MONEY, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("sales_rows", BigInteger, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_customers_mart_month", "sales_date_month"),
    **_mysql,
)

sales_team_data_mart = Table(
    "sales_team_data_mart",
    metadata,
    Column("store_id", Integer, primary_key=True, autoincrement=False),
    Column("sales_person_id", Integer, primary_key=True, autoincrement=False),
    Column("full_name", String(201)),
    Column("sales_month", CHAR(7), primary_key=True),
    Column("total_sales", MONEY, nullable=False),
    Column("incentive", MONEY, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("sales_rows", BigInteger, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_sales_team_mart_month", "sales_month", "store_id"),
    **_mysql,
)

# --- coupons: computed with the marts from [rules] coupon rules (coupons.py) ------------------
# At most one coupon per customer and month ('YYYY-MM': the month whose spending earned it).
# No index on code: each run rewrites a month's coupons, and random codes doubled that write
# on MariaDB (README, Coupons).
customer_coupons = Table(
    "customer_coupons",
    metadata,
    Column("month", CHAR(7), primary_key=True),
    Column("customer_id", Integer, primary_key=True, autoincrement=False),
    Column("segment", String(32), nullable=False),
    Column("discount_pct", Numeric(5, 2, asdecimal=True), nullable=False),
    Column("reason", String(255), nullable=False),
    Column("code", String(32), nullable=False),
    Column("total_sales", MONEY, nullable=False),  # the customer's spend in that month
    Index("ix_customer_coupons_customer", "customer_id", "month"),
    **_mysql,
)

# --- per-file, per-day aggregates for the daily report (daily.py) ---------------------------
# Same idea as the mart partials: written in the batch's transaction, deleted with a
# superseded file, so the rows present are exactly the committed, current files. Small
# grains only (sales person, product): per-customer figures are read from the lake.
daily_sales_person_partial = Table(
    "etl_daily_sales_person_partial",
    metadata,
    Column("ledger_id", Integer, primary_key=True, autoincrement=False),
    Column("sales_date", Date, primary_key=True),
    Column("store_id", Integer, primary_key=True, autoincrement=False),
    Column("sales_person_id", Integer, primary_key=True, autoincrement=False),
    Column("total_sales", MONEY, nullable=False),
    Column("items", BigInteger, nullable=False),
    Column("sales_rows", BigInteger, nullable=False),
    Index("ix_daily_sales_person_date", "sales_date"),
    **_mysql,
)

daily_product_partial = Table(
    "etl_daily_product_partial",
    metadata,
    Column("ledger_id", Integer, primary_key=True, autoincrement=False),
    Column("sales_date", Date, primary_key=True),
    Column("product_key", CHAR(64), primary_key=True),  # sha256 of product_name: any length
    Column("product_name", Text, nullable=False),
    Column("total_sales", MONEY, nullable=False),
    Column("items", BigInteger, nullable=False),
    Column("sales_rows", BigInteger, nullable=False),
    Index("ix_daily_product_date", "sales_date"),
    **_mysql,
)

DAILY_PARTIALS = (daily_sales_person_partial, daily_product_partial)

# --- operations -------------------------------------------------------------------------------
run_log = Table(
    "etl_run_log",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("outcome", String(16), nullable=False),  # running | succeeded | failed
    Column("engine", String(16), nullable=False),
    Column("files_seen", Integer),
    Column("files_processed", Integer),
    Column("files_quarantined", Integer),
    Column("files_duplicate", Integer),
    Column("files_corrected", Integer),
    Column("rows_read", BigInteger),
    Column("rows_valid", BigInteger),
    Column("rows_rejected", BigInteger),
    Column("seconds", Numeric(12, 3, asdecimal=False)),
    Column("stage_seconds", Text),  # JSON: seconds per stage
    Column("message", Text),
    sqlite_autoincrement=True,
    **_mysql,
)

# Rows per rule broken, per run and file (run/summary.py: rules), for a BI tool to chart.
rule_count = Table(
    "etl_rule_count",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=False),
    Column("ledger_id", Integer, primary_key=True, autoincrement=False),
    Column("rule", String(255), primary_key=True),
    Column("file_name", String(1024), nullable=False),
    Column("occurrences", BigInteger, nullable=False),  # rows; 1 for a file-level rule
    Index("ix_rule_count_rule", "rule", "run_id"),
    **_mysql,
)

run_lock = Table(
    "etl_run_lock",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),  # host:pid:run
    Column("acquired_at", DateTime, nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
    **_mysql,
)


# --- scratch: a batch's mart deltas, per connection, emptied before each use ------------------
_scratch = MetaData()
customer_delta = Table(
    "etl_tmp_customer_delta",
    _scratch,
    Column("customer_id", Integer, nullable=False),
    Column("sales_date_month", Date, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("sales_rows", BigInteger, nullable=False),
    prefixes=["TEMPORARY"],
    **_mysql,
)
sales_team_delta = Table(
    "etl_tmp_sales_team_delta",
    _scratch,
    Column("store_id", Integer, nullable=False),
    Column("sales_person_id", Integer, nullable=False),
    Column("sales_month", CHAR(7), nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("sales_rows", BigInteger, nullable=False),
    prefixes=["TEMPORARY"],
    **_mysql,
)
