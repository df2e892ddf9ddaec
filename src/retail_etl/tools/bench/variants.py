"""What `retail-etl bench` measures, one attempt at a time: each variant's command run as its
own process on a fresh copy of its inputs (a workspace with the warehouse and the landed files,
or a throwaway MariaDB database and S3 bucket), timed, its peak RSS sampled, its marts' totals
and the rows it wrote read back."""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from retail_etl.tools.bench.services import MariaDB, S3Endpoint
from retail_etl.tools.sample_data import ChainSize

FLOOR_SQL = (
    "SELECT count(*), sum(total_cost) FROM read_csv($1, types = {'total_cost': 'DECIMAL(18,2)'})"
)
SCRIPTS = Path(__file__).resolve().parent  # the textbook and hand-written scripts ship here
TEXTBOOK_SCRIPT = SCRIPTS / "textbook_spark.py"
HANDWRITTEN_SCRIPT = SCRIPTS / "handwritten_duckdb.py"


@dataclass(frozen=True)
class Profile:
    """A benchmark's dimensions, and whether the production-stack variants run by default."""

    name: str
    chain: ChainSize
    bytes_per_row: int  # what `generate` writes per row with these dimensions (measured)
    production: bool


PROFILES = {
    "default": Profile("default", ChainSize(), 50, production=False),
    "realistic": Profile(
        "realistic",
        ChainSize(customers=1_000_000, stores=300, products=5_000, sales_people_per_store=7),
        69,
        production=True,
    ),
}


@dataclass
class Variant:
    name: str
    description: str
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    totals: dict[str, str] = field(default_factory=dict)
    input_mb: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    started: list[float] = field(default_factory=list)  # each run, seconds into the bench
    warehouse_rows_written: int | None = None  # last run, as the variant reports it
    server_rows_changed: int | None = None  # last run, the MariaDB server's row counters
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # last run, CpuMeter's

    def record(self, seconds: float, peak_rss_mb: float) -> None:
        self.seconds.append(seconds)
        self.peak_rss_mb.append(peak_rss_mb)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def summary(self, floor: float | None, handwritten: float | None) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "runs": len(self.seconds),
            "seconds": [round(value, 2) for value in self.seconds],
            "started_s": [round(value, 2) for value in self.started],
            "best_s": round(self.best, 2),
            "median_s": round(self.median, 2),
            "mb_per_s": round(self.input_mb / self.best, 1),
            "peak_rss_mb": round(max(self.peak_rss_mb), 0),
            "ratio_to_floor": round(self.best / floor, 2) if floor else None,
            "ratio_to_handwritten": round(self.median / handwritten, 2) if handwritten else None,
            "totals": self.totals,
            "stage_seconds": self.stage_seconds,
            "warehouse_rows_written": self.warehouse_rows_written,
            "server_rows_changed": self.server_rows_changed,
            "cpu_seconds": self.cpu_seconds,
        }


class CpuMeter:
    """CPU seconds spent while a command runs (a `with` block around measure): the command's
    process tree (the children this process reaped meanwhile), each local service's processes
    (the warehouse server, the S3 endpoint; absent when it does not run on this machine), and
    the whole machine's busy and idle core-seconds. On a machine where all of them share the
    cores, busy / cores is the least wall time the same work could take."""

    def __init__(self, services: dict[str, list[Any]]) -> None:
        self.services = services
        self.seconds: dict[str, float] = {}
        self._before: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        import psutil

        own = resource.getrusage(resource.RUSAGE_CHILDREN)
        machine = psutil.cpu_times()
        # guest time is counted in user already; steal is the hypervisor's, not this work's
        busy = ("user", "nice", "system", "irq", "softirq")
        read = {
            "command": own.ru_utime + own.ru_stime,
            "machine_busy": sum(getattr(machine, name, 0.0) for name in busy),
            "machine_idle": machine.idle + getattr(machine, "iowait", 0.0),
        }
        for name, processes in self.services.items():
            if not processes:
                continue  # not on this machine: not measured
            read[name] = 0.0
            for process in processes:
                try:
                    times = process.cpu_times()
                except psutil.Error:  # gone, or not ours to read
                    continue
                read[name] += times.user + times.system
        return read

    def __enter__(self) -> CpuMeter:
        self._before = self._read()
        return self

    def __exit__(self, *_exc: object) -> None:
        after = self._read()
        self.seconds = {name: round(after[name] - self._before[name], 1) for name in after}


def measure(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[float, float, str]:
    """Run cmd; return wall seconds, peak RSS (MB) of its whole process tree, stdout."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({proc.returncode}): {err[-2000:]}")
    return seconds, peak / 1e6, out


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "retail_etl", *args]


def _sqlite_totals(db_path: Path) -> dict[str, str]:
    with sqlite3.connect(db_path) as db:
        customer = db.execute("SELECT SUM(total_sales) FROM customers_data_mart").fetchone()[0]
        team = db.execute("SELECT SUM(total_sales) FROM sales_team_data_mart").fetchone()[0]
        rows = db.execute(
            "SELECT (SELECT COUNT(*) FROM customers_data_mart)"
            " + (SELECT COUNT(*) FROM sales_team_data_mart)"
        ).fetchone()[0]
    return {
        "customer_total": str(Decimal(str(customer)).quantize(Decimal("0.01"))),
        "team_total": str(Decimal(str(team)).quantize(Decimal("0.01"))),
        "mart_rows": str(rows),
    }


def _chain_args(chain: ChainSize) -> list[str]:
    args = [
        "--customers",
        str(chain.customers),
        "--stores",
        str(chain.stores),
        "--products",
        str(chain.products),
    ]
    if chain.sales_people_per_store is not None:
        args += ["--sales-people-per-store", str(chain.sales_people_per_store)]
    return args


class Bench:
    def __init__(self, root: Path, gb: float, files: int, profile: Profile) -> None:
        self.root = root.resolve()
        self.gb, self.files, self.profile = gb, files, profile
        self.chain = profile.chain
        self.template = self.root / "template"  # initialised warehouse with the dimensions
        self.csv_dir = self.root / "csv"
        self.day = date(2024, 3, 30)
        self.s3: S3Endpoint | None = None
        self.mysql: MariaDB | None = None
        self.row_counters: str | None = None  # which server counters rows_changed read

    def log(self, message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    def rows_per_file(self, fraction: float = 1.0) -> int:
        return max(1, int(self.gb * 1e9 * fraction / self.files / self.profile.bytes_per_row))

    def prepare(self) -> list[Path]:
        """Dimensions once, then the day's CSV files (regenerated only when they change)."""
        rows = self.rows_per_file()
        marker = self.root / "csv.json"
        wanted = {
            "rows": rows,
            "files": self.files,
            "customers": self.chain.customers,
            "stores": self.chain.stores,
            "products": self.chain.products,
            "sales_people_per_store": self.chain.sales_people_per_store,
        }
        if marker.exists() and json.loads(marker.read_text()) == wanted:
            return sorted(self.csv_dir.rglob("*.csv"))
        shutil.rmtree(self.root, ignore_errors=True)
        self.template.mkdir(parents=True)
        self.log(f"initialising dimensions ({self.chain})")
        measure(_cli("init", "--demo", *_chain_args(self.chain)), self.template)
        self.log(f"generating {self.files} files x {rows} rows")
        measure(
            _cli(
                "generate",
                "--date",
                self.day.isoformat(),
                "--rows",
                str(rows),
                "--files",
                str(self.files),
                "--seed",
                "1",
            ),
            self.template,
        )
        shutil.move(self.template / "data" / "bucket" / "sales_data", self.csv_dir)
        self._export_dimensions()
        marker.write_text(json.dumps(wanted))
        return sorted(self.csv_dir.rglob("*.csv"))

    def dimensions(self) -> dict[str, int]:
        """Rows of each dimension in the template warehouse."""
        with sqlite3.connect(self.template / "data" / "warehouse.db") as db:
            count = {
                name: db.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
                for name in ("customer", "store", "product", "sales_team")
            }
        return {
            "customers": count["customer"],
            "stores": count["store"],
            "products": count["product"],
            "sales_people": count["sales_team"],
        }

    def _export_dimensions(self) -> None:
        import pyarrow.parquet as pq

        from retail_etl.config import Settings
        from retail_etl.warehouse import Warehouse
        from retail_etl.warehouse.schema import DIMENSIONS

        url = f"sqlite:///{self.template / 'data' / 'warehouse.db'}"
        warehouse = Warehouse(Settings.model_validate({"warehouse": {"url": url}}).warehouse)
        (self.root / "dims").mkdir(exist_ok=True)
        for table in DIMENSIONS:
            arrow = warehouse.read_arrow(table, [c.name for c in table.columns])
            pq.write_table(arrow, self.root / "dims" / f"{table.name}.parquet")
        warehouse.dispose()

    def workspace(self, name: str, csvs: list[Path]) -> Path:
        """A fresh copy of the initialised warehouse with the CSVs landed (hard links)."""
        ws = self.root / "runs" / name
        shutil.rmtree(ws, ignore_errors=True)
        (ws / "data").mkdir(parents=True)
        shutil.copy(self.template / "data" / "warehouse.db", ws / "data" / "warehouse.db")
        self.land(ws, csvs)
        return ws

    def land(self, ws: Path, csvs: list[Path], prefix: str = "") -> None:
        landing = ws / "data" / "bucket" / "sales_data"
        for path in csvs:
            dest = landing / prefix / path.relative_to(self.csv_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy(path, dest)

    # Each method below measures one attempt of one variant; run_bench interleaves the
    # attempts of the variants it compares (see SCHEDULE).
    def floor(self, csvs: list[Path], variant: Variant, _attempt: int) -> None:
        # DuckDB alone, not retail_etl's imports: the floor is the bare parse
        code = (
            "import duckdb,sys,json;c=duckdb.connect();c.execute('SET enable_progress_bar=false');"
            f"r=c.execute({FLOOR_SQL!r},[sys.argv[1:]]).fetchone();"
            "print(json.dumps([r[0], str(r[1])]))"
        )
        seconds, rss, out = measure([sys.executable, "-c", code, *map(str, csvs)], self.root)
        variant.record(seconds, rss)
        variant.totals = {"all_rows_total": json.loads(out)[1]}

    def textbook(self, csvs: list[Path], variant: Variant, attempt: int) -> None:
        out_dir = self.root / "runs" / f"textbook-{attempt}"
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [
            sys.executable,
            str(TEXTBOOK_SCRIPT),
            str(self.root / "dims"),
            str(out_dir),
            *map(str, csvs),
        ]
        seconds, rss, out = measure(cmd, self.root)
        variant.record(seconds, rss)
        variant.totals = json.loads(out.strip().splitlines()[-1])
        shutil.rmtree(out_dir, ignore_errors=True)

    def handwritten(self, csvs: list[Path], variant: Variant, attempt: int) -> None:
        """The hand-written script on a copy of the warehouse that holds only the dimensions
        (it creates its marts), the lake in a local folder."""
        ws = self.root / "runs" / f"handwritten-{attempt}"
        shutil.rmtree(ws, ignore_errors=True)
        ws.mkdir(parents=True)
        db = ws / "warehouse.db"
        shutil.copy(self.template / "data" / "warehouse.db", db)
        _keep_only_dimensions(db)
        cmd = [
            sys.executable,
            str(HANDWRITTEN_SCRIPT),
            "--warehouse",
            f"sqlite:///{db}",
            "--work",
            str(ws),
            *map(str, csvs),
        ]
        seconds, rss, out = measure(cmd, ws)
        variant.record(seconds, rss)
        reported = json.loads(out.strip().splitlines()[-1])
        variant.stage_seconds = reported["stage_seconds"]
        variant.warehouse_rows_written = reported["warehouse_rows_written"]
        variant.totals = _sqlite_totals(db)
        shutil.rmtree(ws, ignore_errors=True)

    def retail_etl(self, csvs: list[Path], variant: Variant, attempt: int, engine: str) -> None:
        ws = self.workspace(f"{engine}-{attempt}", csvs)
        seconds, rss, out = measure(_cli("run", "--engine", engine, "--json"), ws)
        summary = json.loads(out)
        variant.record(seconds, rss)
        variant.stage_seconds = summary["stage_seconds"]
        variant.warehouse_rows_written = summary.get("warehouse_rows_written")
        variant.totals = _sqlite_totals(ws / "data" / "warehouse.db")
        shutil.rmtree(ws, ignore_errors=True)

    # --- the production stack: S3 protocol + MariaDB --------------------------------------
    def _mariadb_with_dimensions(self, dimensions_only: bool) -> str:
        """A throwaway database holding the same dimension rows as the template (the chain
        is deterministic), every table of the tool's unless dimensions_only."""
        from retail_etl.config import Settings
        from retail_etl.tools import sample_data
        from retail_etl.warehouse import Warehouse
        from retail_etl.warehouse.schema import DIMENSIONS, metadata

        assert self.mysql is not None
        database = self.mysql.create()
        url = self.mysql.sqlalchemy_url(database)
        warehouse = Warehouse(Settings.model_validate({"warehouse": {"url": url}}).warehouse)
        try:
            with warehouse.begin() as conn:
                metadata.create_all(conn, tables=list(DIMENSIONS) if dimensions_only else None)
            sample_data.load(warehouse, self.chain)
        finally:
            warehouse.dispose()
        return database

    def _bucket_with_files(self, csvs: list[Path]) -> str:
        assert self.s3 is not None
        bucket = self.s3.fresh_bucket()
        self.s3.upload(bucket, csvs, self.csv_dir, "sales_data/")
        return bucket

    def _on_production(
        self,
        variant: Variant,
        attempt: int,
        csvs: list[Path],
        dimensions_only: bool,
        command: Callable[[Path, str, str], tuple[list[str], dict[str, str]]],
    ) -> dict[str, Any]:
        """Set up a database and a bucket (not timed), time command(ws, database, bucket)
        with the server's InnoDB counters read around it, then drop both."""
        assert self.s3 is not None and self.mysql is not None
        ws = self.root / "runs" / f"{variant.name}-{attempt}"
        shutil.rmtree(ws, ignore_errors=True)
        ws.mkdir(parents=True)
        database = self._mariadb_with_dimensions(dimensions_only)
        bucket = None
        try:
            bucket = self._bucket_with_files(csvs)
            cmd, env = command(ws, database, bucket)
            before, self.row_counters = self.mysql.rows_changed()
            with CpuMeter(self._service_processes()) as cpu:
                seconds, rss, out = measure(cmd, ws, env)
            variant.server_rows_changed = self.mysql.rows_changed()[0] - before
            variant.cpu_seconds = cpu.seconds
            variant.record(seconds, rss)
            variant.totals = self.mysql.totals(database)
            return dict(json.loads(out.strip().splitlines()[-1]))
        finally:
            self.mysql.drop(database)
            if bucket is not None:
                self.s3.remove_bucket(bucket)
            shutil.rmtree(ws, ignore_errors=True)

    def _service_processes(self) -> dict[str, list[Any]]:
        """The local processes of the warehouse server and the S3 endpoint (psutil)."""
        import psutil

        assert self.s3 is not None and self.mysql is not None
        server = self.s3.server
        return {
            "warehouse_server": self.mysql.local_processes(),
            "s3_endpoint": [psutil.Process(server.pid)] if server is not None else [],
        }

    def retail_etl_production(self, csvs: list[Path], variant: Variant, attempt: int) -> None:
        def command(ws: Path, database: str, bucket: str) -> tuple[list[str], dict[str, str]]:
            assert self.s3 is not None and self.mysql is not None
            (ws / "retail-etl.toml").write_text(
                self.s3.storage_toml(bucket)
                + f'\n[warehouse]\nurl = "{self.mysql.sqlalchemy_url(database)}"\n'
            )
            return _cli("run", "--engine", "duckdb", "--json"), {}

        summary = self._on_production(variant, attempt, csvs, False, command)
        variant.stage_seconds = summary["stage_seconds"]
        variant.warehouse_rows_written = summary.get("warehouse_rows_written")

    def handwritten_production(self, csvs: list[Path], variant: Variant, attempt: int) -> None:
        def command(ws: Path, database: str, bucket: str) -> tuple[list[str], dict[str, str]]:
            assert self.s3 is not None and self.mysql is not None
            cmd = [
                sys.executable,
                str(HANDWRITTEN_SCRIPT),
                "--warehouse",
                self.mysql.plain_url(database),
                "--s3-endpoint",
                str(self.s3.endpoint),
                "--s3-bucket",
                bucket,
                "--work",
                str(ws),
            ]
            return cmd, self.s3.env

        reported = self._on_production(variant, attempt, csvs, True, command)
        variant.stage_seconds = reported["stage_seconds"]
        variant.warehouse_rows_written = reported["warehouse_rows_written"]

    # --- history for day 30 ---------------------------------------------------------------
    def history(self, history_fraction: float) -> Path:
        """29 days already processed (smaller days by history_fraction, to keep the benchmark
        short), for day30 to add the same day as the other variants on top."""
        history = self.workspace("history", [])
        rows = self.rows_per_file(history_fraction)
        self.log(f"processing 29 days of history ({self.files} files x {rows} rows a day)")
        start = self.day - timedelta(days=29)
        measure(
            _cli(
                "generate",
                "--date",
                start.isoformat(),
                "--days",
                "29",
                "--rows",
                str(rows),
                "--files",
                str(self.files),
                "--seed",
                "2",
            ),
            history,
        )
        measure(_cli("run", "--json"), history)
        shutil.rmtree(history / "data" / "bucket" / "sales_data_processed")  # never read again
        return history

    def day30(self, csvs: list[Path], variant: Variant, attempt: int, history: Path) -> None:
        """The day on top of the history: its cost must not grow with history."""
        ws = self.root / "runs" / f"day30-{attempt}"
        shutil.rmtree(ws, ignore_errors=True)
        # the lake only gains files in a run: hard links are a safe, instant copy
        shutil.copytree(history / "data" / "bucket", ws / "data" / "bucket", copy_function=os.link)
        shutil.copy(history / "data" / "warehouse.db", ws / "data" / "warehouse.db")
        self.land(ws, csvs)
        seconds, rss, out = measure(_cli("run", "--json"), ws)
        variant.record(seconds, rss)
        summary = json.loads(out)
        variant.stage_seconds = summary["stage_seconds"]
        variant.warehouse_rows_written = summary.get("warehouse_rows_written")
        variant.totals = {}
        shutil.rmtree(ws, ignore_errors=True)


def _keep_only_dimensions(db: Path) -> None:
    from retail_etl.warehouse.schema import DIMENSIONS

    keep = {table.name for table in DIMENSIONS}
    with sqlite3.connect(db) as conn:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for name in names:
            if name not in keep:
                conn.execute(f'DROP TABLE "{name}"')
