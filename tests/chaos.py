"""Helpers of the crash, concurrency and fault tests (issue 7): run the real command line as a
separate process against a test's installation, and read back everything a run leaves."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from conftest import HEADER, Env, make_env
from helpers import customer_mart_rows, keys, ledger, object_bytes, team_mart
from pydantic import SecretStr
from sqlalchemy import select

from retail_etl.tools.generate import generate
from retail_etl.warehouse.schema import lake_object, run_lock

TESTS = Path(__file__).parent
KILLPOINT = TESTS / "killpoint.py"


def _plain(value: Any) -> Any:
    """A settings value as the environment spells it (secrets revealed)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal | Path | date):
        return str(value)
    return value


def cli_environment(settings: Any) -> dict[str, str]:
    """The settings of a test installation as RETAIL_ETL_<SECTION>__<KEY> variables (JSON for
    lists and tables)."""
    variables = {
        name: value for name, value in os.environ.items() if not name.startswith("RETAIL_ETL_")
    }
    for section, values in settings.model_dump().items():
        for key, value in values.items():
            if value is None:
                continue
            value = _plain(value)
            text = json.dumps(value) if isinstance(value, dict | list) else str(value)
            variables[f"RETAIL_ETL_{section.upper()}__{key.upper()}"] = text
    return variables


def command(env: Env, *args: str, kill: list[str] | None = None) -> list[str]:
    if kill:
        return [sys.executable, str(KILLPOINT), *kill, "--", *args]
    return [sys.executable, "-m", "retail_etl", *args]


def retail_etl(
    env: Env, *args: str, kill: list[str] | None = None, timeout: float = 300, **popen: Any
) -> subprocess.CompletedProcess[str]:
    """Run `retail-etl ARGS` (under killpoint hooks when `kill` is given) and wait for it."""
    return subprocess.run(
        command(env, *args, kill=kill),
        cwd=env.root,
        env=cli_environment(env.settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def start(env: Env, *args: str, kill: list[str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(env, *args, kill=kill),
        cwd=env.root,
        env=cli_environment(env.settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Dataset:
    files: int  # objects landed
    rows: int  # CSV rows in them


def land_dataset(env: Env, days: int = 4, rows: int = 12_500, files: int = 4) -> Dataset:
    """A night's worth of files crossing a month end, with rejected rows, a quarantined file,
    a duplicate and a header-only file."""
    written = generate(
        env.store,
        env.warehouse,
        env.landing,
        date(2024, 3, 30),
        days=days,
        rows=rows,
        files=files,
        seed=7,
        bad_fraction=0.002,
    )
    scratch = env.root / "dataset-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    env.land("late/copy-of-first.csv", object_bytes(env, written[0][0], scratch))
    env.land("late/broken.csv", "this is not,a sales file\n1,2\n")
    env.land("late/header-only.csv", HEADER + "\n")
    return Dataset(len(written) + 3, days * rows * files)


@dataclass(frozen=True)
class Reference:
    dataset: Dataset
    summary: dict[str, Any]
    state: dict[str, Any]


_references: dict[tuple[str, str], Reference] = {}


def reference(
    env: Env, request: Any, tmp_path: Path, prepare: Callable[[Env], Dataset] | None = None
) -> Reference:
    """The uninterrupted run after `prepare` (default: land_dataset) on the same kind of
    backend as `env`; computed once per backend and preparation in a test session."""
    prepare = prepare or land_dataset
    cache_key = (env.name, prepare.__name__)
    if cache_key not in _references:
        clean = make_env(env.name, tmp_path / "reference", request)
        try:
            dataset = prepare(clean)
            summary = summary_of(retail_etl(clean, "run", "--json"))
            assert summary["files_seen"] == dataset.files
            _references[cache_key] = Reference(dataset, summary, full_state(clean, tmp_path))
        finally:
            clean.warehouse.dispose()
    return _references[cache_key]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_RUN_DIR = re.compile(r"(^|/)(run-)?\d+/")
_IDS = re.compile(r"file id \d+")


def _parquet_rows(env: Env, key: str, tmp_path: Path) -> list[tuple[Any, ...]]:
    data = object_bytes(env, key, tmp_path)
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    return sorted(tuple(sorted((k, v) for k, v in r.items() if k != "updated_at")) for r in rows)


def lake_fingerprint(env: Env, tmp_path: Path) -> dict[str, tuple[int, int]]:
    """Per source file: (rows, sum of row hashes) over every sales row in the lake, partition
    values included. Order-free, and a row read twice counts twice."""
    import duckdb
    import pyarrow as pa

    prefix = env.settings.storage.lake_prefix + "sales/"
    tables = []
    for key in keys(env, prefix):
        table = pq.read_table(io.BytesIO(object_bytes(env, key, tmp_path)))
        parts = dict(p.split("=", 1) for p in key[len(prefix) :].split("/")[:-1])
        table = table.drop_columns([c for c in ("run_id", "ledger_id") if c in table.schema.names])
        tables.append(
            table.append_column(
                "part_month", pa.array([parts["sales_month"]] * len(table))
            ).append_column("part_store", pa.array([parts["store_id"]] * len(table)))
        )
    if not tables:
        return {}
    lake = pa.concat_tables(tables, promote_options="default")  # noqa: F841 - read by duckdb
    columns = ", ".join(f'"{name}"' for name in lake.schema.names)
    found = duckdb.sql(
        f"SELECT source_file, count(*), sum(hash({columns})::HUGEINT) FROM lake GROUP BY 1"
    ).fetchall()
    return {name: (int(n), int(total)) for name, n, total in found}


def full_state(env: Env, tmp_path: Path) -> dict[str, Any]:
    """Everything a run leaves that must not depend on how it got there: marts, ledger, lake
    (rows, index, snapshots), archive, error prefix and landing. Run ids, ledger ids and
    timestamps are left out; they legitimately differ between an interrupted and a clean run.
    Also checks the invariants every finished run must leave."""
    storage = env.settings.storage
    scratch = tmp_path / "state-scratch"
    scratch.mkdir(exist_ok=True)
    rows = ledger(env)
    assert not [r for r in rows if r["status"] == "A"], "files left active"
    lake_keys = keys(env, storage.lake_prefix + "sales/")
    with env.warehouse.begin() as conn:
        indexed = sorted(conn.execute(select(lake_object.c.object_key)).scalars())
        lock = conn.execute(select(run_lock)).fetchall()
    assert lake_keys == indexed, "lake objects and their index differ (orphan or lost object)"
    assert not lock, f"run lock left behind: {lock}"
    if isinstance(getattr(env.store, "root", None), Path):
        leftovers = [p for p in env.store.root.rglob("*") if p.name.startswith(".retail-etl-tmp")]
        assert not leftovers, f"temporary objects left in the bucket: {leftovers}"

    def normalised(key: str, prefix: str) -> str:
        return _RUN_DIR.sub(r"\1", key[len(prefix) :], count=1)

    archive = Counter(
        (normalised(k, storage.archive_prefix), _sha(object_bytes(env, k, scratch)))
        for k in keys(env, storage.archive_prefix)
    )
    errors: Counter[tuple[str, str]] = Counter()
    rejected: dict[str, list[str]] = {}
    for k in keys(env, storage.error_prefix):
        data = object_bytes(env, k, scratch)
        if k.startswith(storage.error_prefix + "rejected/"):
            name = normalised(k, storage.error_prefix + "rejected/")
            text = data.decode("utf-8").splitlines()
            rejected[name] = [text[0], *sorted(text[1:])]
        else:
            errors[(normalised(k, storage.error_prefix), _sha(data))] += 1
    snapshots = {
        k: _parquet_rows(env, k, scratch)
        for prefix in ("customers_data_mart/", "sales_team_data_mart/")
        for k in keys(env, storage.lake_prefix + prefix)
    }
    return {
        "customers": customer_mart_rows(env),
        "team": team_mart(env),
        "ledger": sorted(
            (
                r["file_name"],
                r["status"],
                r["rows_read"],
                r["rows_valid"],
                r["rows_rejected"],
                r["checksum"],
                r["size"],
                _IDS.sub("file id N", r["message"] or ""),
            )
            for r in rows
        ),
        "lake_rows": lake_fingerprint(env, scratch),
        "lake_objects": len(lake_keys),
        "snapshots": snapshots,
        "archive": archive,
        "errors": errors,
        "rejected": rejected,
        "landing": keys(env, env.landing),
    }


def mart_totals(env: Env) -> tuple[Decimal, Decimal]:
    customers = sum((r["total_sales"] for r in customer_mart_rows(env)), Decimal(0))
    team = sum((total for total, _incentive in team_mart(env).values()), Decimal(0))
    return customers, team


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The run failed the way the CLI promises: one line on stderr, no traceback."""
    lines = [
        line
        for line in result.stderr.strip().splitlines()
        if not line.startswith("killpoint:")  # the test wrapper's own notes
    ]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
