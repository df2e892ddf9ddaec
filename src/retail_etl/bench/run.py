"""`retail-etl bench`: one invocation measures every variant on the same generated files.

Each variant runs as its own process (so its peak RSS is its own), at least twice; wall time,
CSV MB/s, peak RSS of the process tree and the ratio to the floor are recorded, and the mart
totals of every variant must agree to the cent. Results go to a JSON file and the table to its
section of a Markdown file (`--section`: one per configuration, e.g. profile or input size),
all under one output folder unless given paths elsewhere.

A variant that cannot run here (no Java for Spark, no MariaDB...) is listed with the reason,
in the output and the results, never dropped silently.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from retail_etl.bench.report import update_markdown
from retail_etl.bench.services import MariaDB, S3Endpoint
from retail_etl.sample_data import ChainSize

# How fast the bytes can be parsed at all: every row counted, one column typed and summed.
FLOOR_SQL = (
    "SELECT count(*), sum(total_cost) FROM read_csv($1, types = {'total_cost': 'DECIMAL(18,2)'})"
)
SCRIPTS = Path(__file__).resolve().parent  # the textbook and hand-written scripts ship here
TEXTBOOK_SCRIPT = SCRIPTS / "textbook_spark.py"
HANDWRITTEN_SCRIPT = SCRIPTS / "handwritten_duckdb.py"
DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306"


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
        }


DESCRIPTIONS = {
    "floor": "DuckDB count(*) + sum(total_cost) over the CSVs",
    "textbook-spark": "tutorial Spark job: inferSchema, union, joins, window + distinct",
    "retail-etl-spark": "retail-etl run, Spark engine local[*], end to end",
    "handwritten-duckdb": "hand-written DuckDB script: typed read, joins, lake, marts (SQLite)",
    "retail-etl-duckdb": "retail-etl run, DuckDB engine, end to end",
    "day30-duckdb": "day 30 after 29 processed days, DuckDB engine",
    "handwritten-duckdb-s3-mariadb": "the hand-written script on S3 (boto3) and MariaDB",
    "retail-etl-duckdb-s3-mariadb": "retail-etl run, DuckDB engine, S3 protocol + MariaDB",
}

# Variants compared with each other take turns (attempt 1 of each, then attempt 2, ...): on a
# shared machine whose speed drifts (CPU steal), back-to-back blocks of runs would put the
# drift into their ratio.
SCHEDULE = (
    ("textbook-spark", "retail-etl-spark"),
    (
        "floor",
        "handwritten-duckdb",
        "retail-etl-duckdb",
        "day30-duckdb",
        "handwritten-duckdb-s3-mariadb",
        "retail-etl-duckdb-s3-mariadb",
    ),
)


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
        from retail_etl import sample_data
        from retail_etl.config import Settings
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
            seconds, rss, out = measure(cmd, ws, env)
            variant.server_rows_changed = self.mysql.rows_changed()[0] - before
            variant.record(seconds, rss)
            variant.totals = self.mysql.totals(database)
            return dict(json.loads(out.strip().splitlines()[-1]))
        finally:
            self.mysql.drop(database)
            if bucket is not None:
                self.s3.remove_bucket(bucket)
            shutil.rmtree(ws, ignore_errors=True)

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


def machine(mysql: MariaDB | None = None) -> dict[str, Any]:
    import duckdb
    import psutil

    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "os": platform.platform(),
    }
    try:
        import pyspark

        info["pyspark"] = pyspark.__version__
    except ImportError:
        pass
    if mysql is not None:
        info["mariadb"] = f"MariaDB/MySQL {mysql.query('SELECT VERSION()')[0][0]}"
    return info


def spark_problem() -> str | None:
    if importlib.util.find_spec("pyspark") is None:
        return "PySpark is not installed (pip install -e '.[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and Path(java_home, "bin", "java").exists()):
        return "no Java found (PySpark needs Java 17 or 21 on PATH or in JAVA_HOME)"
    return None


def production_problem(mysql: MariaDB) -> str | None:
    for module, extra in (("boto3", "s3"), ("pymysql", "mysql"), ("moto", "dev")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    return mysql.problem()


@dataclass(frozen=True)
class Options:
    """What `retail-etl bench` was asked to measure."""

    gb: float = 2.0
    files: int = 8
    repeats: int = 2
    profile: Profile = PROFILES["default"]
    spark: bool = True
    handwritten: bool = True
    production: bool | None = None  # None: the profile's choice
    day30: bool = True
    history_fraction: float = 0.1
    mysql_url: str = DEFAULT_MYSQL_URL
    s3_endpoint: str | None = None  # None: start moto's server


def run_bench(
    root: Path,
    options: Options,
    results_path: Path,
    markdown_path: Path | None,
    section: str = "table",
) -> dict[str, Any]:
    bench = Bench(root, options.gb, options.files, options.profile)
    wanted = ["floor"]
    not_run: dict[str, str] = {}

    def want(names: tuple[str, ...], asked: bool, problem: str | None, flag: str) -> None:
        for name in names:
            if not asked:
                not_run[name] = f"not asked for ({flag})"
            elif problem:
                not_run[name] = problem
            else:
                wanted.append(name)

    want(("textbook-spark", "retail-etl-spark"), options.spark, spark_problem(), "--no-spark")
    want(("handwritten-duckdb",), options.handwritten, None, "--no-handwritten")
    wanted.append("retail-etl-duckdb")
    want(("day30-duckdb",), options.day30, None, "--no-day30")
    production = options.profile.production if options.production is None else options.production
    mysql = MariaDB(options.mysql_url)
    problem = production_problem(mysql) if production else None
    flag = "--production" if options.production is None else "--no-production"
    names: tuple[str, ...] = ("retail-etl-duckdb-s3-mariadb",)
    if options.handwritten:
        names = ("handwritten-duckdb-s3-mariadb", *names)
    want(names, production, problem, flag)

    csvs = bench.prepare()
    input_mb = sum(p.stat().st_size for p in csvs) / 1e6
    s3 = S3Endpoint(options.s3_endpoint)
    failed: dict[str, str] = {}
    history = None
    try:
        if any(name.endswith("-s3-mariadb") for name in wanted):
            try:
                s3.start(bench.root / "s3-server.log")
                bench.mysql, bench.s3 = mysql, s3
                bench.log(f"S3 endpoint: {s3.kind} at {s3.endpoint}; MariaDB: {mysql.display}")
            except RuntimeError as exc:
                for name in names:
                    wanted.remove(name)
                    not_run[name] = f"{exc} ({exc.__cause__})"
        for name, reason in not_run.items():
            bench.log(f"not running {name}: {reason}")
        order = [name for group in SCHEDULE for name in group]
        variants = [Variant(name, DESCRIPTIONS[name]) for name in sorted(wanted, key=order.index)]
        by_name = {v.name: v for v in variants}
        for variant in variants:
            variant.input_mb = input_mb
        began = time.perf_counter()
        if "day30-duckdb" in by_name:
            history = bench.history(options.history_fraction)
        for group in SCHEDULE:
            present = [by_name[name] for name in group if name in by_name]
            if present:
                bench.log("measuring " + ", ".join(v.name for v in present) + ", taking turns")
            for attempt in range(options.repeats):
                for variant in present:
                    if variant.name in failed:
                        continue
                    variant.started.append(time.perf_counter() - began)
                    try:
                        _measure_one(bench, variant, csvs, attempt, history)
                    except Exception as exc:  # one variant's failure does not lose the others
                        failed[variant.name] = " ".join(f"{type(exc).__name__}: {exc}".split())
                        bench.log(f"{variant.name} failed: {failed[variant.name]}")
        machine_info = machine(mysql if bench.s3 else None)
        endpoint = f"{s3.kind} at {s3.endpoint}" if bench.s3 else None
    finally:
        s3.stop()
        if history is not None:
            shutil.rmtree(history, ignore_errors=True)
    variants = [v for v in variants if v.name not in failed]
    by_name = {v.name: v for v in variants}
    results = _results(
        options, variants, by_name, input_mb, not_run, machine_info, endpoint, bench.dimensions()
    )
    results["server_row_counters"] = bench.row_counters
    results["failed"] = {name: reason[-1000:] for name, reason in failed.items()}
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2))
    if markdown_path is not None:
        update_markdown(markdown_path, results, section)
    return results


def _measure_one(
    bench: Bench, variant: Variant, csvs: list[Path], attempt: int, history: Path | None
) -> None:
    if variant.name == "floor":
        bench.floor(csvs, variant, attempt)
    elif variant.name == "textbook-spark":
        bench.textbook(csvs, variant, attempt)
    elif variant.name == "handwritten-duckdb":
        bench.handwritten(csvs, variant, attempt)
    elif variant.name == "retail-etl-duckdb":
        bench.retail_etl(csvs, variant, attempt, "duckdb")
    elif variant.name == "retail-etl-spark":
        bench.retail_etl(csvs, variant, attempt, "spark")
    elif variant.name == "handwritten-duckdb-s3-mariadb":
        bench.handwritten_production(csvs, variant, attempt)
    elif variant.name == "retail-etl-duckdb-s3-mariadb":
        bench.retail_etl_production(csvs, variant, attempt)
    else:
        assert variant.name == "day30-duckdb" and history is not None
        bench.day30(csvs, variant, attempt, history)


def _results(
    options: Options,
    variants: list[Variant],
    by_name: dict[str, Variant],
    input_mb: float,
    not_run: dict[str, str],
    machine_info: dict[str, Any],
    endpoint: str | None,
    dimension_rows: dict[str, int],
) -> dict[str, Any]:
    floor = by_name["floor"].best if "floor" in by_name else None
    handwritten = by_name.get("handwritten-duckdb")
    handwritten_median = handwritten.median if handwritten else None
    customer_totals = {
        v.name: v.totals["customer_total"] for v in variants if "customer_total" in v.totals
    }
    team_totals = {v.name: v.totals["team_total"] for v in variants if "team_total" in v.totals}
    all_rows = by_name["floor"].totals["all_rows_total"] if "floor" in by_name else None
    checks: dict[str, Any] = {
        "mart_totals": customer_totals,
        "team_totals": team_totals,
        "mart_totals_agree": len(set(customer_totals.values()) | set(team_totals.values())) == 1,
        "floor_total_equals_marts": all_rows is not None
        and all(t == all_rows for t in [*customer_totals.values(), *team_totals.values()]),
    }
    day1 = by_name.get("retail-etl-duckdb")
    if "day30-duckdb" in by_name and day1 is not None:
        checks["day30_over_day1"] = round(by_name["day30-duckdb"].median / day1.median, 2)
    if "textbook-spark" in by_name and "retail-etl-spark" in by_name:
        checks["spark_speedup_over_textbook"] = round(
            by_name["textbook-spark"].median / by_name["retail-etl-spark"].median, 2
        )
    production = by_name.get("retail-etl-duckdb-s3-mariadb")
    if handwritten is not None:
        if day1 is not None:
            checks["duckdb_over_handwritten"] = round(day1.median / handwritten.median, 2)
        if production is not None:
            checks["s3_mariadb_over_handwritten"] = round(production.median / handwritten.median, 2)
    if production is not None and "handwritten-duckdb-s3-mariadb" in by_name:
        checks["s3_mariadb_over_handwritten_s3_mariadb"] = round(
            production.median / by_name["handwritten-duckdb-s3-mariadb"].median, 2
        )
    mart_rows = {v.name: int(v.totals["mart_rows"]) for v in variants if "mart_rows" in v.totals}
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info,
        "input": {
            "profile": options.profile.name,
            "gb": options.gb,
            "files": options.files,
            "mb": round(input_mb, 1),
            **dimension_rows,
            "repeats": options.repeats,
            "history_fraction": options.history_fraction,
        },
        "s3_endpoint": endpoint,
        "variants": [v.summary(floor, handwritten_median) for v in variants],
        "mart_rows": mart_rows,
        "not_run": not_run,
        "checks": checks,
    }


def with_chain(profile: Profile, **sizes: int | None) -> Profile:
    """The profile with some of its chain's sizes replaced (None: keep the profile's)."""
    given = {name: value for name, value in sizes.items() if value is not None}
    return replace(profile, chain=replace(profile.chain, **given)) if given else profile
