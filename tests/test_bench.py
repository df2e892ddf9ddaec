"""`retail-etl bench` as `make bench` runs it, on a tiny input and without Spark (the Spark
variants run the same engine code the Spark tests cover): every variant measured, the marts of
every variant equal to the floor's sum to the cent, and the Markdown section regenerated
without touching the rest of the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from retail_etl.engines.base import MANDATORY_COLUMNS


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny `retail-etl bench` without Spark, its Markdown section in a BENCHMARKS.md with
    text around it; the folder it ran in."""
    folder = tmp_path_factory.mktemp("bench")
    (folder / "BENCHMARKS.md").write_text(
        "# Benchmarks\n\nintro\n\n<!-- bench:tiny:start -->\nold\n<!-- bench:tiny:end -->\n"
        "\nprofile notes\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "retail_etl", "bench", "--gb", "0.002", "--files", "2",
         "--repeats", "2", "--no-spark", "--history-fraction", "0.5",
         "--workdir", str(folder / "work"), "--results", str(folder / "results.json"),
         "--markdown", str(folder / "BENCHMARKS.md"), "--section", "tiny"],
        cwd=folder, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder


def test_bench_measures_each_variant_and_checks_their_totals(bench_run: Path) -> None:
    markdown = bench_run / "BENCHMARKS.md"
    results = bench_run / "results.json"
    outcome = json.loads(results.read_text())
    variants = {v["name"]: v for v in outcome["variants"]}
    assert list(variants) == ["floor", "retail-etl-duckdb", "day30-duckdb"]
    for variant in variants.values():
        assert len(variant["seconds"]) == 2 and variant["best_s"] <= variant["median_s"]
        assert variant["peak_rss_mb"] > 0 and variant["mb_per_s"] > 0
    assert variants["floor"]["ratio_to_floor"] == 1.0
    # the variants compared take turns, so drift of the machine's speed hits each of them
    floor, day1, day30 = (variants[n]["started_s"] for n in variants)
    assert floor[0] < day1[0] < day30[0] < floor[1] < day1[1] < day30[1]
    assert set(variants["retail-etl-duckdb"]["stage_seconds"]) >= {"download", "enrich"}
    checks = outcome["checks"]
    assert checks["mart_totals_agree"] and checks["floor_total_equals_marts"]
    assert checks["day30_over_day1"] > 0

    text = markdown.read_text()
    assert "start -->\nold\n" not in text and "intro" in text and "profile notes" in text
    assert "| retail-etl-duckdb |" in text and "| day30-duckdb |" in text
    assert "every row equals the marts' totals (no row lost or counted twice): **True**" in text
    # the throughput chart: one bar per variant, linked from the section
    chart = (bench_run / "docs" / "bench-tiny.svg").read_text()
    assert chart.startswith("<svg") and chart.count("<rect") == 3
    assert "retail-etl-duckdb" in chart and "MB/s" in chart
    assert "![MB/s per variant](docs/bench-tiny.svg)" in text


def test_warehouse_floor_counts_the_rows_a_day_makes_the_warehouse_hold(tmp_path: Path) -> None:
    day = tmp_path / "work" / "csv" / "2024-03-30"
    day.mkdir(parents=True)
    header = ",".join(MANDATORY_COLUMNS)
    # customer-months: (1, March), (2, March), (1, April); per file: 3 in a.csv, 1 in b.csv
    (day / "a.csv").write_text(
        f"{header}\n1,1,Tea,2024-03-30,1,2.00,1,2.00\n1,1,Tea,2024-03-31,1,2.00,1,2.00\n"
        "2,1,Tea,2024-03-30,1,2.00,2,4.00\n1,1,Tea,2024-04-01,1,2.00,1,2.00\n"
    )
    (day / "b.csv").write_text(f"{header}\n1,2,Jam,2024-03-29,2,3.50,1,3.50\n")
    script = Path(__file__).resolve().parents[1] / "bench" / "warehouse_floor.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["csv_files"] == 2
    assert measured["customer_months"] == 3
    assert measured["per_file_customer_months"] == 4
    for name in ("floor_s", "mart_rows_insert_s", "per_file_partials_insert_s"):
        assert measured[name] >= 0


def test_lake_floor_writes_the_engines_lake_without_the_checks(bench_run: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "bench" / "lake_floor.py"
    done = subprocess.run(
        [sys.executable, str(script), str(bench_run / "work")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    # the generated day is clean: the floor's lake holds every row the engine's does, with the
    # same columns (the script exits non-zero when they differ)
    expected_rows = json.loads((bench_run / "work" / "csv.json").read_text())["rows"] * 2
    assert measured["csv_files"] == 2
    assert measured["lake_rows_floor"] == measured["lake_rows_engine"] == expected_rows
    for name in ("parquet_copy", "lake_floor", "engine"):
        assert measured[f"{name}_s"] > 0 and measured[f"{name}_x_floor"] > 0
