"""Realistic sample dimension rows for `init --demo`, generated vectorised (NumPy and Arrow),
deterministic, and loaded through each warehouse's bulk path.

The defaults are the small sample chain: 4 stores, 10 sales people with a manager, 40
customers and 15 products. Larger chains (`--customers`, `--stores`, `--products`,
`--sales-people-per-store`) keep those rows first and add generated ones: a million customers,
300 stores, 5,000 products and 2,100 sales people load in seconds on SQLite and MariaDB.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Table, delete

from retail_etl.cents import decimals
from retail_etl.errors import ConfigError
from retail_etl.warehouse import Warehouse, bulk
from retail_etl.warehouse.schema import customer, product, sales_team, store

FIRST_NAMES = [
    "Aarav",
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Mateo",
    "Sofia",
    "Ethan",
    "Mia",
    "Lucas",
    "Isabella",
    "Arjun",
    "Chloe",
    "Daniel",
    "Grace",
    "Kenji",
    "Amara",
    "Omar",
    "Zoe",
    "Hugo",
    "Leila",
    "Samuel",
    "Nora",
    "Ravi",
    "Elena",
    "Jonas",
    "Priya",
    "Felix",
    "Hannah",
]
LAST_NAMES = [
    "Sharma",
    "Smith",
    "Garcia",
    "Nguyen",
    "Müller",
    "Johnson",
    "Okafor",
    "Rossi",
    "Kim",
    "Brown",
    "Patel",
    "Dubois",
    "Silva",
    "Tanaka",
    "Wilson",
    "O'Brien",
    "Khan",
    "Novak",
    "Andersen",
    "Lopez",
]
STREETS = [
    "Maple Avenue",
    "Oak Street",
    "Park Road",
    "Elm Street",
    "Lakeview Drive",
    "Hill Lane",
    "Station Road",
    "Church Street",
    "River Walk",
    "Market Square",
]
CITIES = [
    ("Springfield", "62701"),
    ("Riverside", "92501"),
    ("Fairview", "37062"),
    ("Madison", "53703"),
]

STORES = [
    (
        1,
        "12 Market Square, Springfield",
        "62701",
        "Helen Carter",
        date(2015, 3, 14),
        "Friendly staff, well stocked",
    ),
    (2, "480 Station Road, Riverside", "92501", "Marcus Lee", date(2017, 8, 1), "Busy at weekends"),
    (
        3,
        "7 Lakeview Drive, Fairview",
        "37062",
        "Sara Novak",
        date(2019, 5, 20),
        "Great fresh produce",
    ),
    (4, "233 Oak Street, Madison", "53703", "David Osei", date(2021, 11, 6), "New and spacious"),
]

# (id, first, last, manager_id, is_manager, store)
SALES_TEAM = [
    (1, "Rebecca", "Hughes", None, "Y", 1),
    (2, "Tom", "Becker", 1, "N", 1),
    (3, "Anita", "Rao", 1, "N", 1),
    (4, "Carlos", "Mendes", 1, "N", 2),
    (5, "Yuki", "Sato", 1, "N", 2),
    (6, "Fatima", "Zahra", 1, "N", 3),
    (7, "Peter", "Lindqvist", 1, "N", 3),
    (8, "Grace", "Adeyemi", 1, "N", 4),
    (9, "Ivan", "Petrov", 1, "N", 4),
    (10, "Chloe", "Martin", 1, "N", 2),
]

PRODUCTS = [
    (1, "Rolled Oats 1kg", "3.49", "3.29"),
    (2, "Whole Milk 1L", "1.19", "1.09"),
    (3, "Free-Range Eggs (12)", "4.25", "3.99"),
    (4, "Basmati Rice 5kg", "11.90", "10.50"),
    (5, "Extra Virgin Olive Oil 750ml", "8.75", "7.95"),
    (6, "Granulated Sugar 1kg", "1.65", "1.55"),
    (7, "Ground Coffee 250g", "5.60", "5.20"),
    (8, "Green Tea (40 bags)", "3.10", "2.95"),
    (9, "Wholemeal Bread", "2.35", "2.20"),
    (10, "Cheddar Cheese 400g", "4.80", "4.40"),
    (11, "Bananas 1kg", "1.39", "1.29"),
    (12, "Tomato Ketchup 500g", "2.15", "1.99"),
    (13, "Dish Soap, Lemon 1L", "2.99", "2.79"),
    (14, "Paper Towels (6 rolls)", "6.49", "5.99"),
    (15, "Dark Chocolate 70% 100g", "2.25", "2.10"),
]


# What generated stores and products are made of, beyond the sample ones above.
MORE_CITIES = [
    ("Greenville", "29601"),
    ("Franklin", "37064"),
    ("Clinton", "52732"),
    ("Georgetown", "40324"),
    ("Salem", "97301"),
    ("Bristol", "06010"),
    ("Arlington", "76010"),
    ("Ashland", "41101"),
    ("Oxford", "38655"),
    ("Dover", "19901"),
    ("Burlington", "05401"),
    ("Manchester", "03101"),
]
REVIEWS = [
    "Friendly staff, well stocked",
    "Busy at weekends",
    "Great fresh produce",
    "New and spacious",
    "Easy parking",
    "Long queues at lunchtime",
    "Helpful pharmacy counter",
    "Open late",
]
BRANDS = [
    "Harvest",
    "Golden Field",
    "Blue Valley",
    "Sunrise",
    "Nordic",
    "Casa",
    "Green Leaf",
    "Meadow",
    "Coastline",
    "Urban Pantry",
    "Orchard",
    "Highland",
    "Riverbend",
    "Silver Oak",
    "Daily Best",
    "Prairie",
    "Summit",
    "Old Mill",
    "Bright Star",
    "Willow",
]
ITEMS = [
    ("Penne Pasta", 129),
    ("Spaghetti", 119),
    ("Tomato Passata", 159),
    ("Chickpeas", 99),
    ("Red Lentils", 219),
    ("Peanut Butter", 289),
    ("Strawberry Jam", 249),
    ("Honey", 549),
    ("Cornflakes", 279),
    ("Muesli", 399),
    ("Orange Juice", 229),
    ("Apple Juice", 199),
    ("Sparkling Water", 89),
    ("Cola", 159),
    ("Greek Yogurt", 189),
    ("Butter", 259),
    ("Mozzarella", 179),
    ("Frozen Peas", 149),
    ("Fish Fingers", 349),
    ("Chicken Breast", 699),
    ("Minced Beef", 599),
    ("Salmon Fillet", 899),
    ("Potatoes", 249),
    ("Carrots", 99),
    ("Onions", 109),
    ("Apples", 299),
    ("Avocados", 349),
    ("Baguette", 139),
    ("Croissants", 299),
    ("Crisps", 179),
    ("Salted Peanuts", 209),
    ("Biscuits", 149),
    ("Ice Cream", 449),
    ("Laundry Detergent", 899),
    ("Shampoo", 399),
    ("Toothpaste", 229),
    ("Hand Soap", 179),
    ("Bin Bags", 319),
    ("Toilet Paper", 549),
    ("Cat Food", 499),
]
SIZES = [("Small", 0.6), ("Regular", 1.0), ("Large", 1.7), ("Family Pack", 2.6), ("Value", 0.9)]
# Sales people per generated store (a manager and six sellers): 300 stores have 2,100.
SALES_PEOPLE_PER_STORE = 7
LOAD_CHUNK = 100_000  # rows per executemany / LOAD DATA file


@dataclass(frozen=True)
class ChainSize:
    """How large the sample chain is. None for the sales people: the sample team for the
    sample stores, else SALES_PEOPLE_PER_STORE per store."""

    customers: int = 40
    stores: int = len(STORES)
    products: int = len(PRODUCTS)
    sales_people_per_store: int | None = None

    def __post_init__(self) -> None:
        for name in ("customers", "stores", "products"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1")
        if self.sales_people_per_store is not None and self.sales_people_per_store < 1:
            raise ConfigError("--sales-people-per-store must be at least 1")


def _text(values: list[str], index: np.ndarray) -> pa.Array:
    return pc.take(pa.array(values, pa.string()), pa.array(index))


def _join(*parts: pa.Array | str) -> pa.Array:
    """Strings concatenated element-wise (a str is the same for every row)."""
    return pc.binary_join_element_wise(*parts, "")


def _days(base: date, offsets: np.ndarray) -> pa.Array:
    return pa.array(np.datetime64(base, "D") + offsets.astype("timedelta64[D]"), pa.date32())


def customers(count: int, seed: int = 7) -> pa.Table:
    """`count` customers, deterministic for a count (40 gives the sample chain's as before);
    vectorised so a million take under a second."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(FIRST_NAMES), count)
    last = rng.integers(0, len(LAST_NAMES), count)
    numbers = rng.integers(1, 999, count)
    streets = rng.integers(0, len(STREETS), count)
    cities = rng.integers(0, len(CITIES), count)
    phones = rng.integers(2_000_000_000, 9_999_999_999, count)
    joined = rng.integers(0, 3 * 365, count)
    address = _join(
        pc.cast(pa.array(numbers), pa.string()),
        " ",
        _text(STREETS, streets),
        ", ",
        _text([c for c, _ in CITIES], cities),
    )
    return pa.table(
        {
            "customer_id": pa.array(np.arange(1, count + 1)),
            "first_name": _text(FIRST_NAMES, first),
            "last_name": _text(LAST_NAMES, last),
            "address": address,
            "pincode": _text([p for _, p in CITIES], cities),
            "phone_number": pc.cast(pa.array(phones), pa.string()),
            "customer_joining_date": _days(date(2021, 1, 1), joined),
        }
    )


def stores(count: int, seed: int = 11) -> pa.Table:
    """The sample stores, then generated ones (ids go on from 5)."""
    sample = STORES[:count]
    extra = count - len(sample)
    rng = np.random.default_rng(seed)
    cities = CITIES + MORE_CITIES
    city = rng.integers(0, len(cities), extra)
    address = _join(
        pc.cast(pa.array(rng.integers(1, 2000, extra)), pa.string()),
        " ",
        _text(STREETS, rng.integers(0, len(STREETS), extra)),
        ", ",
        _text([c for c, _ in cities], city),
    )
    manager = _join(
        _text(FIRST_NAMES, rng.integers(0, len(FIRST_NAMES), extra)),
        " ",
        _text(LAST_NAMES, rng.integers(0, len(LAST_NAMES), extra)),
    )

    def column(index: int, generated: pa.Array, kind: pa.DataType) -> pa.Array:
        return pa.concat_arrays([pa.array([row[index] for row in sample], kind), generated])

    return pa.table(
        {
            "id": column(0, pa.array(np.arange(len(sample) + 1, count + 1)), pa.int64()),
            "address": column(1, address, pa.string()),
            "store_pincode": column(2, _text([p for _, p in cities], city), pa.string()),
            "store_manager_name": column(3, manager, pa.string()),
            "store_opening_date": column(
                4, _days(date(2005, 1, 1), rng.integers(0, 19 * 365, extra)), pa.date32()
            ),
            "reviews": column(5, _text(REVIEWS, rng.integers(0, len(REVIEWS), extra)), pa.string()),
        }
    )


def products(count: int, seed: int = 13) -> pa.Table:
    """The sample products, then generated ones with unique names ("Harvest Honey Large";
    a number is appended once every brand, item and size is used)."""
    sample = PRODUCTS[:count]
    extra = count - len(sample)
    rng = np.random.default_rng(seed)
    n = np.arange(extra)
    combos = len(BRANDS) * len(ITEMS) * len(SIZES)
    item, size, brand = n % len(ITEMS), (n // len(ITEMS)) % len(SIZES), n // len(ITEMS)
    brand = brand // len(SIZES) % len(BRANDS)
    name = _join(
        _text(BRANDS, brand),
        " ",
        _text([i for i, _ in ITEMS], item),
        " ",
        _text([s for s, _ in SIZES], size),
    )
    if extra > combos:
        suffix = pc.if_else(
            pa.array(n >= combos),
            _join(" #", pc.cast(pa.array(n // combos + 1), pa.string())),
            pa.scalar(""),
        )
        name = _join(name, suffix)
    base = np.array([c for _, c in ITEMS])[item] * np.array([f for _, f in SIZES])[size]
    price = np.maximum(49, (base * rng.uniform(0.8, 1.25, extra)).astype(np.int64))
    old = (price * rng.uniform(0.85, 1.0, extra)).astype(np.int64)
    ids = np.arange(len(sample) + 1, count + 1)

    def sample_cents(index: int) -> np.ndarray:
        return np.array([round(float(row[index]) * 100) for row in sample], dtype=np.int64)

    total = len(sample) + extra
    return pa.table(
        {
            "id": pa.array(np.concatenate([[row[0] for row in sample], ids]).astype(np.int64)),
            "name": pa.concat_arrays([pa.array([row[1] for row in sample], pa.string()), name]),
            "current_price": decimals(np.concatenate([sample_cents(2), price]), 12),
            "old_price": decimals(np.concatenate([sample_cents(3), old]), 12),
            "created_date": _days(date(2022, 1, 1), np.zeros(total, dtype=np.int64)),
            "updated_date": _days(date(2024, 1, 1), np.zeros(total, dtype=np.int64)),
            "expiry_date": _days(date(2026, 12, 31), np.zeros(total, dtype=np.int64)),
        }
    )


def sales_people(store_rows: pa.Table, per_store: int | None, seed: int = 17) -> pa.Table:
    """Who sells where. The sample team for the sample stores (per_store None, at most 4
    stores); else per_store people in each store, the first of them its manager."""
    store_ids = store_rows.column("id").to_numpy()
    addresses = store_rows.column("address")
    pincodes = store_rows.column("store_pincode")
    if per_store is None and len(store_ids) <= len(STORES):
        team = [row for row in SALES_TEAM if row[5] <= len(store_ids)]
        where = np.array([row[5] - 1 for row in team])
        return pa.table(
            {
                "id": pa.array([row[0] for row in team], pa.int64()),
                "first_name": pa.array([row[1] for row in team], pa.string()),
                "last_name": pa.array([row[2] for row in team], pa.string()),
                "manager_id": pa.array([row[3] for row in team], pa.int64()),
                "is_manager": pa.array([row[4] for row in team], pa.string()),
                "address": pc.take(addresses, pa.array(where)),
                "pincode": pc.take(pincodes, pa.array(where)),
                "joining_date": _days(date(2020, 1, 1), 40 * np.array([r[0] for r in team])),
                "store_id": pa.array([row[5] for row in team], pa.int64()),
            }
        )
    per_store = per_store or SALES_PEOPLE_PER_STORE
    rng = np.random.default_rng(seed)
    count = len(store_ids) * per_store
    ids = np.arange(1, count + 1)
    where = np.repeat(np.arange(len(store_ids)), per_store)
    is_manager = (ids - 1) % per_store == 0
    manager_of_store = where * per_store + 1
    return pa.table(
        {
            "id": pa.array(ids),
            "first_name": _text(FIRST_NAMES, rng.integers(0, len(FIRST_NAMES), count)),
            "last_name": _text(LAST_NAMES, rng.integers(0, len(LAST_NAMES), count)),
            "manager_id": pa.array(manager_of_store, mask=is_manager),
            "is_manager": pa.array(np.where(is_manager, "Y", "N"), pa.string()),
            "address": pc.take(addresses, pa.array(where)),
            "pincode": pc.take(pincodes, pa.array(where)),
            "joining_date": _days(date(2015, 1, 1), rng.integers(0, 9 * 365, count)),
            "store_id": pa.array(store_ids[where]),
        }
    )


def chain(size: ChainSize) -> dict[Table, pa.Table]:
    """Every dimension's rows for a chain of that size, in the order they are loaded."""
    store_rows = stores(size.stores)
    return {
        store: store_rows,
        sales_team: sales_people(store_rows, size.sales_people_per_store),
        product: products(size.products),
        customer: customers(size.customers),
    }


def load(warehouse: Warehouse, size: ChainSize | None = None) -> dict[str, int]:
    """Replace the dimension tables' rows with the sample chain's, in one transaction:
    SQLite through executemany of plain tuples, MySQL/MariaDB through LOAD DATA LOCAL
    INFILE (multi-row INSERTs where the server refuses local files).

    Measured with a million customers, 300 stores, 5,000 products and 2,100 sales people (2
    shared cores): SQLite 3.1 s including generating the rows (0.4-0.8 s); MariaDB 10.11
    3.3-7.0 s by LOAD DATA against 13.4-18.4 s by PyMySQL's multi-row INSERTs."""
    rows = chain(size or ChainSize())
    if warehouse.dialect == "sqlite":
        with warehouse.begin() as conn:
            for table in reversed(rows):
                conn.execute(delete(table))
            for table, data in rows.items():
                bulk.insert_arrow(conn, table, data)
    else:
        _load_mysql(warehouse, rows)
    return {table.name: data.num_rows for table, data in rows.items()}


# MySQL / MariaDB error codes: LOAD DATA LOCAL refused by the server or the client.
_LOCAL_INFILE_REFUSED = {1148, 3948, 2068}


def _load_mysql(warehouse: Warehouse, rows: dict[Table, pa.Table]) -> None:
    import pymysql

    try:
        with mysql_bulk_connection(warehouse) as conn, conn.cursor() as cursor:
            for table in reversed(rows):
                cursor.execute(f"DELETE FROM `{table.name}`")
            for table, data in rows.items():
                load_data_local(cursor, table.name, data)
            conn.commit()
        return
    except pymysql.MySQLError as exc:
        if not exc.args or exc.args[0] not in _LOCAL_INFILE_REFUSED:
            raise warehouse.error(exc) from None
    with warehouse.begin() as sa_conn:  # the server refuses local files: multi-row INSERTs
        for table in reversed(rows):
            sa_conn.execute(delete(table))
        for table, data in rows.items():
            bulk.insert_arrow(sa_conn, table, data)


class _BulkConnection:
    """A PyMySQL connection of its own with LOCAL INFILE enabled (only this one), in the
    warehouse's strict SQL mode; rolled back unless committed, closed on exit."""

    def __init__(self, warehouse: Warehouse) -> None:
        import pymysql

        url = warehouse.engine.url
        self.conn = pymysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "",
            password=url.password if isinstance(url.password, str) else "",
            database=url.database,
            charset="utf8mb4",
            local_infile=True,
            autocommit=False,
            connect_timeout=10,
            init_command="SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,"
            "NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'",
        )

    def __enter__(self) -> Any:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.rollback()  # nothing left to roll back after a commit
        finally:
            self.conn.close()


def mysql_bulk_connection(warehouse: Warehouse) -> _BulkConnection:
    return _BulkConnection(warehouse)


def load_data_local(cursor: Any, table_name: str, data: pa.Table) -> None:
    """Append an Arrow table's rows (columns named as the table's) with LOAD DATA LOCAL
    INFILE: Arrow writes the CSV, the server parses it. NULLs travel as an empty unquoted
    field and are restored with NULLIF, so only columns holding NULLs cannot take ''."""
    if data.num_rows == 0:
        return
    columns, sets = [], []
    for name in data.column_names:
        if data.column(name).null_count:
            columns.append(f"@{name}")
            sets.append(f"`{name}` = NULLIF(@{name}, '')")
        else:
            columns.append(f"`{name}`")
    statement = (
        "LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET utf8mb4 "
        "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
        "LINES TERMINATED BY '\\n' ({columns})"
    ).format(table=table_name, columns=", ".join(columns))
    if sets:
        statement += " SET " + ", ".join(sets)
    fd, name = tempfile.mkstemp(prefix="retail-etl-load-", suffix=".csv")
    os.close(fd)
    path = Path(name)
    try:
        for start in range(0, data.num_rows, LOAD_CHUNK):
            pacsv.write_csv(
                data.slice(start, LOAD_CHUNK),
                path,
                pacsv.WriteOptions(include_header=False, quoting_style="needed"),
            )
            cursor.execute(statement, (str(path),))
    finally:
        path.unlink(missing_ok=True)
