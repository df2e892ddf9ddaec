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
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from retail_etl.tools.bench.report import update_markdown
from retail_etl.tools.bench.services import MariaDB, S3Endpoint
from retail_etl.tools.bench.variants import PROFILES, Bench, Profile, Variant

DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306"

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
    elif production:  # listed as not run, as its folder + SQLite twin is
        want(("handwritten-duckdb-s3-mariadb",), False, None, "--no-handwritten")
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
    handwritten_production = by_name.get("handwritten-duckdb-s3-mariadb")
    if production is not None and handwritten_production is not None:
        checks["s3_mariadb_over_handwritten_s3_mariadb"] = round(
            production.median / handwritten_production.median, 2
        )
    busy = production.cpu_seconds.get("machine_busy") if production is not None else None
    if busy and handwritten_production is not None:
        # the ratio if the tool's work kept every core busy from start to end
        checks["s3_mariadb_cpu_bound_over_handwritten_s3_mariadb"] = round(
            busy / machine_info["cores"] / handwritten_production.median, 2
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
