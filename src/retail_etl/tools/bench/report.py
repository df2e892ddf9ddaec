"""The bench's results as Markdown (a section of BENCHMARKS.md) and an SVG chart."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any


def _markers(section: str) -> tuple[str, str]:
    """Where a run's table goes in the Markdown: each section is regenerated on its own."""
    return f"<!-- bench:{section}:start -->", f"<!-- bench:{section}:end -->"


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


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def table(results: dict[str, Any]) -> str:
    m, i = results["machine"], results["input"]
    lines = [
        f"Measured {results['when']} on {m['cores']} cores, {m['ram_gb']} GB RAM ({m['os']}), "
        f"Python {m['python']}, DuckDB {m['duckdb']}"
        + (f", PySpark {m['pyspark']}" if "pyspark" in m else "")
        + (f", {m['mariadb']}" if "mariadb" in m else "")
        + f". Profile {i.get('profile', 'default')}: {i['mb']} MB of CSV in {i['files']} files, "
        f"{i['customers']} customers, {i.get('stores', 4)} stores, {i.get('products', 15)} "
        f"products, {i.get('sales_people', 10)} sales people; best and median of "
        f"{i['repeats']} runs.",
        "",
        "| variant | best s | median s | MB/s | peak RSS MB | × floor | × hand-written "
        "| warehouse rows written | server rows changed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in results["variants"]:
        lines.append(
            f"| {v['name']} | {v['best_s']} | {v['median_s']} | {v['mb_per_s']} | "
            f"{v['peak_rss_mb']:.0f} | {_cell(v['ratio_to_floor'])} | "
            f"{_cell(v.get('ratio_to_handwritten'))} | {_cell(v.get('warehouse_rows_written'))} "
            f"| {_cell(v.get('server_rows_changed'))} |"
        )
    checks = results["checks"]
    totals = checks["mart_totals"]
    lines += [
        "",
        f"Mart totals agree to the cent across variants: **{checks['mart_totals_agree']}** "
        f"({', '.join(f'{k}: {v}' for k, v in totals.items())}).",
        "The floor's sum over every row equals the marts' totals (no row lost or counted twice): "
        f"**{checks['floor_total_equals_marts']}**.",
    ]
    if "day30_over_day1" in checks:
        lines.append(f"Day 30 / day 1 (median): **{checks['day30_over_day1']}**.")
    if "spark_speedup_over_textbook" in checks:
        lines.append(
            "Textbook Spark / Spark engine (median; above 1 the engine is faster): "
            f"**{checks['spark_speedup_over_textbook']}×**."
        )
    for key, label in (
        ("duckdb_over_handwritten", "retail-etl-duckdb / handwritten-duckdb"),
        (
            "s3_mariadb_over_handwritten",
            "retail-etl-duckdb-s3-mariadb / handwritten-duckdb (folder + SQLite)",
        ),
        (
            "s3_mariadb_over_handwritten_s3_mariadb",
            "retail-etl-duckdb-s3-mariadb / handwritten-duckdb-s3-mariadb",
        ),
        (
            "s3_mariadb_cpu_bound_over_handwritten_s3_mariadb",
            "retail-etl-duckdb-s3-mariadb if every core were busy throughout (the machine's "
            "busy core-seconds / cores, last run) / handwritten-duckdb-s3-mariadb",
        ),
    ):
        if key in checks:
            lines.append(f"{label} (median): **{checks[key]}×**.")
    for v in results["variants"]:
        cpu = v.get("cpu_seconds")
        if cpu:
            services = "".join(
                f", {label} {cpu[key]}"
                for key, label in (("warehouse_server", "the warehouse server"),
                                   ("s3_endpoint", "the S3 endpoint"))
                if key in cpu
            )  # fmt: skip
            lines.append(
                f"CPU seconds of {v['name']} (last run): the command {cpu['command']}{services}; "
                f"the machine busy {cpu['machine_busy']} and idle {cpu['machine_idle']} "
                "core-seconds."
            )
    if results.get("s3_endpoint"):
        lines.append(
            f"S3 endpoint: {results['s3_endpoint']}; its process and MariaDB's are not in the "
            "peak RSS. Warehouse rows written: as the variant reports them (`run --json`'s "
            "`warehouse_rows_written`, blank when it has none). Server rows changed: "
            f"`{results.get('server_row_counters')}` of the whole MariaDB server, read around "
            "the run (anything else writing to it meanwhile is counted too)."
        )
    for name, reason in results.get("not_run", {}).items():
        lines.append(f"Not run: **{name}**: {reason}.")
    for name, reason in results.get("failed", {}).items():
        lines.append(f"**Failed: {name}**: {reason}")
    tool = {
        v["name"]: v["stage_seconds"]
        for v in results["variants"]
        if v["stage_seconds"] and not v["name"].startswith("handwritten")
    }
    script = {
        v["name"]: v["stage_seconds"]
        for v in results["variants"]
        if v["stage_seconds"] and v["name"].startswith("handwritten")
    }
    for title, stages in (
        ("Seconds per stage (`run --json`'s `stage_seconds`, last run):", tool),
        ("Seconds per step of the hand-written script (last run):", script),
    ):
        if not stages:
            continue
        longest_first = sorted(stages.values(), key=len, reverse=True)
        names = list(dict.fromkeys(stage for per in longest_first for stage in per))
        lines += [
            "",
            title,
            "",
            "| variant | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for name, per_stage in stages.items():
            lines.append(f"| {name} | " + " | ".join(_cell(per_stage.get(s)) for s in names) + " |")
    return "\n".join(lines)


def update_markdown(path: Path, results: dict[str, Any], section: str = "table") -> None:
    """Regenerate the section's table in the Markdown and its chart in docs/."""
    chart = chart_path(path, section)
    chart.parent.mkdir(parents=True, exist_ok=True)
    chart.write_text(throughput_chart(results) + "\n")
    link = f"![MB/s per variant]({chart.relative_to(path.parent).as_posix()})"
    start, end = _markers(section)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _old, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{table(results)}\n\n{link}\n{end}{tail}")
