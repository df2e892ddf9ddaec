"""Realistic sample dimension rows for `init --demo`: 4 stores, 10 sales people with a
manager, a few dozen customers (or as many as asked, generated vectorised) and products."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import numpy as np
from sqlalchemy import delete

from retail_etl.warehouse import Warehouse
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


def customers(count: int, seed: int = 7) -> list[dict[str, object]]:
    """`count` customers, deterministic; vectorised so a million takes seconds."""
    rng = np.random.default_rng(seed)
    first = np.array(FIRST_NAMES, dtype=object)[rng.integers(0, len(FIRST_NAMES), count)]
    last = np.array(LAST_NAMES, dtype=object)[rng.integers(0, len(LAST_NAMES), count)]
    numbers = rng.integers(1, 999, count)
    streets = rng.integers(0, len(STREETS), count)
    cities = rng.integers(0, len(CITIES), count)
    phones = rng.integers(2_000_000_000, 9_999_999_999, count)
    joined = rng.integers(0, 3 * 365, count)
    base = date(2021, 1, 1)
    return [
        {
            "customer_id": i + 1,
            "first_name": first[i],
            "last_name": last[i],
            "address": f"{numbers[i]} {STREETS[streets[i]]}, {CITIES[cities[i]][0]}",
            "pincode": CITIES[cities[i]][1],
            "phone_number": str(phones[i]),
            "customer_joining_date": base + timedelta(days=int(joined[i])),
        }
        for i in range(count)
    ]


def load(warehouse: Warehouse, customer_count: int = 40) -> dict[str, int]:
    """Replace the dimension tables' rows with the sample set."""
    today = date(2024, 1, 1)
    with warehouse.begin() as conn:
        for table in (customer, store, product, sales_team):
            conn.execute(delete(table))
        warehouse.insert_many(
            conn,
            store,
            [
                {
                    "id": i,
                    "address": a,
                    "store_pincode": p,
                    "store_manager_name": m,
                    "store_opening_date": d,
                    "reviews": r,
                }
                for i, a, p, m, d, r in STORES
            ],
        )
        warehouse.insert_many(
            conn,
            sales_team,
            [
                {
                    "id": i,
                    "first_name": f,
                    "last_name": last,
                    "manager_id": mid,
                    "is_manager": im,
                    "address": STORES[s - 1][1],
                    "pincode": STORES[s - 1][2],
                    "joining_date": date(2020, 1, 1) + timedelta(days=40 * i),
                    "store_id": s,
                }
                for i, f, last, mid, im, s in SALES_TEAM
            ],
        )
        warehouse.insert_many(
            conn,
            product,
            [
                {
                    "id": i,
                    "name": n,
                    "current_price": Decimal(c),
                    "old_price": Decimal(o),
                    "created_date": date(2022, 1, 1),
                    "updated_date": today,
                    "expiry_date": date(2026, 12, 31),
                }
                for i, n, c, o in PRODUCTS
            ],
        )
        rows = customers(customer_count)
        warehouse.insert_many(conn, customer, rows)
    return {
        "store": len(STORES),
        "sales_team": len(SALES_TEAM),
        "product": len(PRODUCTS),
        "customer": len(rows),
    }
