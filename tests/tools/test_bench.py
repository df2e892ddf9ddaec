"""`retail-etl bench` as `make bench` runs it, on a tiny input and without Spark (the Spark
variants run the same engine code the Spark tests cover): every variant measured, taking turns,
the marts of every variant (the tool and the hand-written script, on the embedded parts and on
S3 + MariaDB) equal to the floor's sum to the cent, everything written under one output folder,
and the Markdown section regenerated without touching the rest of the file. The floor scripts
in bench/ (the Spark one included) run on the same tiny day."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need

from retail_etl.engines.base import MANDATORY_COLUMNS


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny `retail-etl bench` without Spark but with the production stack, run in a folder
    outside the repository with only --out and a Markdown section in a BENCHMARKS.md with text
    around it; the folder it ran in."""
    folder = tmp_path_factory.mktemp("bench")
    (folder / "BENCHMARKS.md").write_text(
        "# Benchmarks\n\nintro\n\n<!-- bench:tiny:start -->\nold\n<!-- bench:tiny:end -->\n"
        "\nprofile notes\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "retail_etl", "bench", "--gb", "0.002", "--files", "2",
         "--repeats", "2", "--no-spark", "--production", "--history-fraction", "0.5",
         "--out", "out", "--markdown", "BENCHMARKS.md", "--section", "tiny"],
        cwd=folder, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (folder / "stdout.txt").write_text(done.stdout)
    return folder


def test_bench_measures_each_variant_and_checks_their_totals(bench_run: Path) -> None:
    markdown = bench_run / "BENCHMARKS.md"
    outcome = json.loads((bench_run / "out" / "results.json").read_text())
    # everything else went under --out: the work folder and the results; the chart beside
    # the Markdown it was asked to update
    assert {p.name for p in bench_run.iterdir()} == {"BENCHMARKS.md", "docs", "out", "stdout.txt"}
    assert {p.name for p in (bench_run / "out").iterdir()} == {"results.json", "work"}
    # a variant that does not run says why, in the results and the printed table
    assert outcome["not_run"]["textbook-spark"] == "not asked for (--no-spark)"
    assert (
        "Not run: **retail-etl-spark**: not asked for (--no-spark)"
        in (bench_run / "stdout.txt").read_text()
    )
    production = ["handwritten-duckdb-s3-mariadb", "retail-etl-duckdb-s3-mariadb"]
    if production[0] in outcome["not_run"]:
        need(False, f"the production stack: {outcome['not_run'][production[0]]}")
    variants = {v["name"]: v for v in outcome["variants"]}
    assert list(variants) == [
        "floor", "handwritten-duckdb", "retail-etl-duckdb", "day30-duckdb", *production
    ]  # fmt: skip
    for variant in variants.values():
        assert len(variant["seconds"]) == 2 and variant["best_s"] <= variant["median_s"]
        assert variant["peak_rss_mb"] > 0 and variant["mb_per_s"] > 0
    assert variants["floor"]["ratio_to_floor"] == 1.0
    assert variants["handwritten-duckdb"]["ratio_to_handwritten"] == 1.0
    # the variants compared take turns, so drift of the machine's speed hits each of them
    starts = [v["started_s"] for v in variants.values()]
    assert [s[0] for s in starts] + [s[1] for s in starts] == sorted(
        [s[0] for s in starts] + [s[1] for s in starts]
    )
    for name in ("retail-etl-duckdb", "retail-etl-duckdb-s3-mariadb"):
        assert set(variants[name]["stage_seconds"]) >= {"fetch", "transform", "publish", "commit"}
    assert set(variants["handwritten-duckdb-s3-mariadb"]["stage_seconds"]) == {
        "download", "dimensions", "lake", "marts", "upload"
    }  # fmt: skip
    # rows written: the script's mart rows; on MariaDB the server's counters moved too
    mart_rows = outcome["mart_rows"]
    assert (
        variants["handwritten-duckdb"]["warehouse_rows_written"] == mart_rows["handwritten-duckdb"]
    )
    for name in production:
        assert variants[name]["server_rows_changed"] >= mart_rows[name] > 0
    assert (
        "Handler_write" in outcome["server_row_counters"]
        or "Innodb" in (outcome["server_row_counters"])
    )
    checks = outcome["checks"]
    assert checks["mart_totals_agree"] and checks["floor_total_equals_marts"]
    assert set(checks["mart_totals"]) == {"handwritten-duckdb", "retail-etl-duckdb", *production}
    assert checks["day30_over_day1"] > 0
    assert checks["duckdb_over_handwritten"] > 0
    assert checks["s3_mariadb_over_handwritten_s3_mariadb"] > 0
    # where the CPU went on the production stack: the run's own process tree, MariaDB's and
    # moto's processes (all on this machine), and the machine as a whole
    for name in production:
        cpu = variants[name]["cpu_seconds"]
        assert cpu["command"] > 0 and cpu["s3_endpoint"] >= 0 and cpu["warehouse_server"] >= 0
        assert cpu["machine_busy"] >= cpu["command"] and cpu["machine_idle"] >= 0
    assert checks["s3_mariadb_cpu_bound_over_handwritten_s3_mariadb"] > 0
    assert (
        "CPU seconds of retail-etl-duckdb-s3-mariadb (last run): the command "
        in (bench_run / "stdout.txt").read_text()
    )

    text = markdown.read_text()
    assert ", the warehouse server " in text and ", the S3 endpoint " in text
    assert "start -->\nold\n" not in text and "intro" in text and "profile notes" in text
    for name in variants:
        assert f"| {name} |" in text
    assert "every row equals the marts' totals (no row lost or counted twice): **True**" in text
    assert "Seconds per step of the hand-written script" in text
    # the throughput chart: one bar per variant, linked from the section
    chart = (bench_run / "docs" / "bench-tiny.svg").read_text()
    assert chart.startswith("<svg") and chart.count("<rect") == len(variants)
    assert "retail-etl-duckdb" in chart and "MB/s" in chart
    assert "![MB/s per variant](docs/bench-tiny.svg)" in text


def test_realistic_profile_with_its_sizes_overridden(tmp_path: Path) -> None:
    """The realistic profile's chain (300 stores, 5,000 products, 7 sales people a store),
    its customers cut down; every file a region's stores; results under ./bench-results."""
    done = subprocess.run(
        [sys.executable, "-m", "retail_etl", "bench", "--profile", "realistic",
         "--customers", "2000", "--gb", "0.002", "--files", "2", "--repeats", "1",
         "--no-spark", "--no-day30", "--no-production"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"bench-results"}
    outcome = json.loads((tmp_path / "bench-results" / "results.json").read_text())
    assert outcome["input"]["profile"] == "realistic"
    sizes = ("customers", "stores", "products", "sales_people")
    assert [outcome["input"][k] for k in sizes] == [2000, 300, 5000, 2100]
    assert outcome["not_run"]["retail-etl-duckdb-s3-mariadb"] == "not asked for (--no-production)"
    assert outcome["checks"]["mart_totals_agree"]
    assert outcome["checks"]["floor_total_equals_marts"]
    # the day spreads over every store; the section is named after the profile
    assert outcome["mart_rows"]["retail-etl-duckdb"] == outcome["mart_rows"]["handwritten-duckdb"]
    text = (tmp_path / "bench-results" / "BENCHMARKS.md").read_text()
    assert "<!-- bench:realistic:start -->" in text and "Profile realistic" in text


def test_the_scripts_it_compares_against_ship_with_the_package() -> None:
    from retail_etl.tools.bench.variants import HANDWRITTEN_SCRIPT, TEXTBOOK_SCRIPT

    for script in (TEXTBOOK_SCRIPT, HANDWRITTEN_SCRIPT):
        assert script.is_file() and script.parent.name == "bench"
        # standalone: what someone writes without the tool
        assert "retail_etl" not in script.read_text().split('"""', 2)[2]


def test_warehouse_floor_counts_the_rows_a_day_makes_the_warehouse_hold(tmp_path: Path) -> None:
    day = tmp_path / "work" / "csv" / "2024-03-30"
    day.mkdir(parents=True)
    header = ",".join(MANDATORY_COLUMNS)
    # customer-months: (1, March), (2, March), (1, April)
    (day / "a.csv").write_text(
        f"{header}\n1,1,Tea,2024-03-30,1,2.00,1,2.00\n1,1,Tea,2024-03-31,1,2.00,1,2.00\n"
        "2,1,Tea,2024-03-30,1,2.00,2,4.00\n1,1,Tea,2024-04-01,1,2.00,1,2.00\n"
    )
    (day / "b.csv").write_text(f"{header}\n1,2,Jam,2024-03-29,2,3.50,1,3.50\n")
    script = Path(__file__).resolve().parents[2] / "bench" / "warehouse_floor.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "work")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["csv_files"] == 2
    assert measured["customer_months"] == 3
    for name in (
        "floor_s",
        "mart_rows_insert_s",
        "coupon_rows_insert_s",
        "mart_rows_update_s",
        "coupon_rows_update_s",
    ):
        assert measured[name] >= 0


def test_lake_floor_writes_the_engines_lake_without_the_checks(bench_run: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "bench" / "lake_floor.py"
    done = subprocess.run(
        [sys.executable, str(script), str(bench_run / "out" / "work")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    # the generated day is clean: the floor's lake holds every row the engine's does, with the
    # same columns (the script exits non-zero when they differ)
    expected_rows = json.loads((bench_run / "out" / "work" / "csv.json").read_text())["rows"] * 2
    assert measured["csv_files"] == 2
    assert measured["lake_rows_floor"] == measured["lake_rows_engine"] == expected_rows
    for name in ("parquet_copy", "lake_floor", "engine"):
        assert measured[f"{name}_s"] > 0 and measured[f"{name}_x_floor"] > 0


def test_spark_lake_floor_writes_the_engines_lake_and_times_textbook_spark(
    bench_run: Path,
) -> None:
    need(shutil.which("java") is not None, "no Java runtime (Spark needs Java 17 or 21)")
    script = Path(__file__).resolve().parents[2] / "bench" / "spark_lake_floor.py"
    done = subprocess.run(
        [sys.executable, str(script), str(bench_run / "out" / "work"), "--repeats", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    # the floor's lake holds every row of the (clean) day with the engine's columns, as the
    # engine's does (the script exits non-zero when the columns differ)
    expected_rows = json.loads((bench_run / "out" / "work" / "csv.json").read_text())["rows"] * 2
    assert measured["lake_rows_floor"] == measured["lake_rows_engine"] == expected_rows
    for name in ("floor", "lake_floor", "lake_flat", "engine", "textbook"):
        assert measured[f"{name}_s"] > 0
    assert measured["textbook_x_engine"] == round(measured["textbook_s"] / measured["engine_s"], 2)


def test_a_variant_that_fails_or_cannot_run_is_reported_and_the_rest_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retail_etl.tools.bench import Options, run_bench, table
    from retail_etl.tools.bench.variants import Bench

    def broken(*_args: object) -> None:
        raise RuntimeError("the script crashed")

    monkeypatch.setattr(Bench, "handwritten", broken)
    options = Options(
        gb=0.001, files=1, repeats=2, spark=False, day30=False, production=True,
        s3_endpoint="http://127.0.0.1:1",  # nothing answers there
    )  # fmt: skip
    outcome = run_bench(tmp_path / "work", options, tmp_path / "r.json", tmp_path / "B.md")
    assert outcome["failed"] == {"handwritten-duckdb": "RuntimeError: the script crashed"}
    assert [v["name"] for v in outcome["variants"]] == ["floor", "retail-etl-duckdb"]
    assert all(len(v["seconds"]) == 2 for v in outcome["variants"])
    # no endpoint (or no MariaDB): the production variants say why they did not run
    for name in ("handwritten-duckdb-s3-mariadb", "retail-etl-duckdb-s3-mariadb"):
        reason = outcome["not_run"][name]
        assert "no S3 endpoint answering at http://127.0.0.1:1" in reason or "MySQL" in reason
    text = table(outcome)
    assert "**Failed: handwritten-duckdb**: RuntimeError: the script crashed" in text
    assert "Not run: **retail-etl-duckdb-s3-mariadb**:" in text


def test_without_the_hand_written_script_neither_stack_runs_it_and_both_say_so(
    tmp_path: Path,
) -> None:
    from retail_etl.tools.bench import Options, run_bench

    options = Options(
        gb=0.001, files=1, repeats=1, spark=False, day30=False, production=True,
        handwritten=False, s3_endpoint="http://127.0.0.1:1",
    )  # fmt: skip
    outcome = run_bench(tmp_path / "work", options, tmp_path / "r.json", tmp_path / "B.md")
    for name in ("handwritten-duckdb", "handwritten-duckdb-s3-mariadb"):
        assert outcome["not_run"][name] == "not asked for (--no-handwritten)"
    assert [v["name"] for v in outcome["variants"]] == ["floor", "retail-etl-duckdb"]
