"""`retail-etl bench`: one invocation measures every variant on the same generated files.

Each variant runs as its own process (so its peak RSS is its own), at least twice; wall time,
CSV MB/s, peak RSS of the process tree and the ratio to the floor are recorded, and the mart
totals of every variant must agree to the cent. Results go to bench/results.json and the table
to its section of BENCHMARKS.md (`--section`: one per configuration, e.g. input size).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

# How fast the bytes can be parsed at all: every row counted, one column typed and summed.
FLOOR_SQL = (
    "SELECT count(*), sum(total_cost) FROM read_csv($1, types = {'total_cost': 'DECIMAL(18,2)'})"
)


def _markers(section: str) -> tuple[str, str]:
    """Where a run's table goes in the Markdown: each section is regenerated on its own."""
    return f"<!-- bench:{section}:start -->", f"<!-- bench:{section}:end -->"


BYTES_PER_ROW = 50  # what `generate` writes per row (49.6 measured with the sample products)


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

    def record(self, seconds: float, peak_rss_mb: float) -> None:
        self.seconds.append(seconds)
        self.peak_rss_mb.append(peak_rss_mb)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def summary(self, floor: float | None) -> dict[str, Any]:
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
            "totals": self.totals,
            "stage_seconds": self.stage_seconds,
        }


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


def _mart_totals(workspace: Path) -> dict[str, str]:
    import sqlite3

    with sqlite3.connect(workspace / "data" / "warehouse.db") as db:
        customer = db.execute("SELECT SUM(total_sales) FROM customers_data_mart").fetchone()[0]
        team = db.execute("SELECT SUM(total_sales) FROM sales_team_data_mart").fetchone()[0]
    return {
        "customer_total": str(Decimal(str(customer)).quantize(Decimal("0.01"))),
        "team_total": str(Decimal(str(team)).quantize(Decimal("0.01"))),
    }


class Bench:
    def __init__(self, root: Path, gb: float, files: int, customers: int) -> None:
        self.root = root.resolve()
        self.gb, self.files, self.customers = gb, files, customers
        self.template = self.root / "template"  # initialised warehouse with the dimensions
        self.csv_dir = self.root / "csv"
        self.day = date(2024, 3, 30)

    def log(self, message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    def prepare(self) -> list[Path]:
        """Dimensions once, then the day's CSV files (regenerated only when the size changes)."""
        rows = max(1, int(self.gb * 1e9 / self.files / BYTES_PER_ROW))
        marker = self.root / "csv.json"
        wanted = {"rows": rows, "files": self.files, "customers": self.customers}
        if marker.exists() and json.loads(marker.read_text()) == wanted:
            return sorted(self.csv_dir.rglob("*.csv"))
        shutil.rmtree(self.root, ignore_errors=True)
        self.template.mkdir(parents=True)
        self.log(f"initialising dimensions ({self.customers} customers)")
        measure(_cli("init", "--demo", "--customers", str(self.customers)), self.template)
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

    def textbook(self, csvs: list[Path], variant: Variant, attempt: int, script: Path) -> None:
        out_dir = self.root / "runs" / f"textbook-{attempt}"
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [sys.executable, str(script), str(self.root / "dims"), str(out_dir), *map(str, csvs)]
        seconds, rss, out = measure(cmd, self.root)
        variant.record(seconds, rss)
        variant.totals = json.loads(out.strip().splitlines()[-1])
        shutil.rmtree(out_dir, ignore_errors=True)

    def retail_etl(self, csvs: list[Path], variant: Variant, attempt: int, engine: str) -> None:
        ws = self.workspace(f"{engine}-{attempt}", csvs)
        seconds, rss, out = measure(_cli("run", "--engine", engine, "--json"), ws)
        summary = json.loads(out)
        variant.record(seconds, rss)
        variant.stage_seconds = summary["stage_seconds"]
        variant.totals = _mart_totals(ws)
        shutil.rmtree(ws, ignore_errors=True)

    def history(self, history_fraction: float) -> Path:
        """29 days already processed (smaller days by history_fraction, to keep the benchmark
        short), for day30 to add the same day as the other variants on top."""
        history = self.workspace("history", [])
        rows = max(1, int(self.gb * 1e9 * history_fraction / self.files / BYTES_PER_ROW))
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
        variant.stage_seconds = json.loads(out)["stage_seconds"]
        variant.totals = {}
        shutil.rmtree(ws, ignore_errors=True)


# Variants compared with each other take turns (attempt 1 of each, then attempt 2, ...): on a
# shared machine whose speed drifts (CPU steal), back-to-back blocks of runs would put the
# drift into their ratio.
SCHEDULE = (
    ("textbook-spark", "retail-etl-spark"),
    ("floor", "retail-etl-duckdb", "day30-duckdb"),
)


def machine() -> dict[str, Any]:
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
    return info


def run_bench(
    root: Path,
    gb: float,
    files: int,
    repeats: int,
    customers: int,
    spark: bool,
    textbook_script: Path | None,
    history_fraction: float,
    results_path: Path,
    markdown_path: Path | None,
    section: str = "table",
) -> dict[str, Any]:
    bench = Bench(root, gb, files, customers)
    csvs = bench.prepare()
    input_mb = sum(p.stat().st_size for p in csvs) / 1e6
    variants = [Variant("floor", "DuckDB count(*) + sum(total_cost) over the CSVs")]
    if spark and textbook_script is not None:
        variants.append(
            Variant(
                "textbook-spark", "tutorial Spark job: inferSchema, union, joins, window + distinct"
            )
        )
    variants.append(Variant("retail-etl-duckdb", "retail-etl run, DuckDB engine, end to end"))
    if spark:
        variants.append(
            Variant("retail-etl-spark", "retail-etl run, Spark engine local[*], end to end")
        )
    variants.append(Variant("day30-duckdb", "day 30 after 29 processed days, DuckDB engine"))
    by_name = {v.name: v for v in variants}
    for variant in variants:
        variant.input_mb = input_mb
    began = time.perf_counter()
    history = None
    if "day30-duckdb" in by_name:
        history = bench.history(history_fraction)
    for group in SCHEDULE:
        present = [by_name[name] for name in group if name in by_name]
        if present:
            bench.log("measuring " + ", ".join(v.name for v in present) + ", taking turns")
        for attempt in range(repeats):
            for variant in present:
                variant.started.append(time.perf_counter() - began)
                if variant.name == "floor":
                    bench.floor(csvs, variant, attempt)
                elif variant.name == "textbook-spark":
                    assert textbook_script is not None
                    bench.textbook(csvs, variant, attempt, textbook_script)
                elif variant.name == "retail-etl-duckdb":
                    bench.retail_etl(csvs, variant, attempt, "duckdb")
                elif variant.name == "retail-etl-spark":
                    bench.retail_etl(csvs, variant, attempt, "spark")
                else:
                    assert history is not None
                    bench.day30(csvs, variant, attempt, history)
    if history is not None:
        shutil.rmtree(history, ignore_errors=True)
    floor = variants[0].best
    mart_totals = {
        v.name: v.totals["customer_total"] for v in variants if "customer_total" in v.totals
    }
    day1 = by_name["retail-etl-duckdb"]
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "input": {
            "gb": gb,
            "files": files,
            "mb": round(input_mb, 1),
            "customers": customers,
            "repeats": repeats,
            "history_fraction": history_fraction,
        },
        "variants": [v.summary(floor) for v in variants],
        "checks": {
            "mart_totals": mart_totals,
            "mart_totals_agree": len(set(mart_totals.values())) == 1,
            "floor_total_equals_marts": all(
                t == variants[0].totals["all_rows_total"] for t in mart_totals.values()
            ),
            "day30_over_day1": round(by_name["day30-duckdb"].median / day1.median, 2),
        },
    }
    if "textbook-spark" in by_name and "retail-etl-spark" in by_name:
        results["checks"]["spark_speedup_over_textbook"] = round(
            by_name["textbook-spark"].median / by_name["retail-etl-spark"].median, 2
        )
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2))
    if markdown_path is not None:
        update_markdown(markdown_path, results, section)
    return results


def chart_path(markdown_path: Path, section: str) -> Path:
    """Where a section's throughput chart goes: docs/ beside the Markdown."""
    return markdown_path.parent / "docs" / f"bench-{section}.svg"


def throughput_chart(results: dict[str, Any]) -> str:
    """MB/s of CSV per variant as a standalone SVG (the reports' bar chart)."""
    from retail_etl.reports.charts import bar_chart

    items = [(v["name"], Decimal(str(v["mb_per_s"]))) for v in results["variants"]]
    i = results["input"]
    title = f"MB/s of CSV per variant ({i['mb']} MB, {i['customers']} customers)"
    return str(bar_chart(items, title, fmt=lambda value: f"{value} MB/s"))


def table(results: dict[str, Any]) -> str:
    m, i = results["machine"], results["input"]
    lines = [
        f"Measured {results['when']} on {m['cores']} cores, {m['ram_gb']} GB RAM ({m['os']}), "
        f"Python {m['python']}, DuckDB {m['duckdb']}"
        + (f", PySpark {m['pyspark']}" if "pyspark" in m else "")
        + f". Input: {i['mb']} MB of CSV in {i['files']} files, {i['customers']} customers; "
        f"best and median of {i['repeats']} runs.",
        "",
        "| variant | best s | median s | MB/s | peak RSS MB | × floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for v in results["variants"]:
        lines.append(
            f"| {v['name']} | {v['best_s']} | {v['median_s']} | {v['mb_per_s']} | "
            f"{v['peak_rss_mb']:.0f} | {v['ratio_to_floor']} |"
        )
    checks = results["checks"]
    lines += [
        "",
        f"Mart totals agree to the cent across variants: **{checks['mart_totals_agree']}** "
        f"({', '.join(f'{k}: {v}' for k, v in checks['mart_totals'].items())}).",
        "The floor's sum over every row equals the marts' totals (no row lost or counted twice): "
        f"**{checks['floor_total_equals_marts']}**.",
        f"Day 30 / day 1 (median): **{checks['day30_over_day1']}**.",
    ]
    if "spark_speedup_over_textbook" in checks:
        lines.append(
            f"Spark engine vs textbook Spark: **{checks['spark_speedup_over_textbook']}×** faster."
        )
    stages = {v["name"]: v["stage_seconds"] for v in results["variants"] if v["stage_seconds"]}
    if stages:
        lines += [
            "",
            "Seconds per stage (last run):",
            "",
            "| variant | " + " | ".join(next(iter(stages.values()))) + " |",
            "|---|" + "---:|" * len(next(iter(stages.values()))),
        ]
        for name, per_stage in stages.items():
            lines.append(f"| {name} | " + " | ".join(str(s) for s in per_stage.values()) + " |")
    return "\n".join(lines)


def update_markdown(path: Path, results: dict[str, Any], section: str = "table") -> None:
    """Regenerate the section's table in the Markdown and its chart in docs/."""
    chart = chart_path(path, section)
    chart.parent.mkdir(parents=True, exist_ok=True)
    chart.write_text(throughput_chart(results) + "\n")
    link = f"![MB/s per variant]({chart.relative_to(path.parent).as_posix()})"
    start, end = _markers(section)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _old, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{table(results)}\n\n{link}\n{end}{tail}")


__all__ = ["run_bench", "asdict"]
