"""The command line as a user runs it: a real process, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path


def test_init_generate_run_status_json(folder: Path) -> None:
    assert cli(folder, "init", "--demo").returncode == 0
    assert cli(folder, "init").returncode == 0  # idempotent
    assert (
        cli(
            folder,
            "generate",
            "--date",
            "2024-06-01",
            "--days",
            "2",
            "--rows",
            "100",
            "--files",
            "2",
            "--bad-rows",
            "0.05",
        ).returncode
        == 0
    )
    result = cli(folder, "run", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "succeeded"
    assert summary["files_processed"] == 4
    assert summary["rows_valid"] + summary["rows_rejected"] == 400
    status = json.loads(cli(folder, "status", "--json").stdout)
    assert status["files_by_status"]["I"] == 4
    assert status["recent_runs"][0]["run_id"] == summary["run_id"]
    log_lines = (folder / "data" / "logs" / "retail-etl.jsonl").read_text().splitlines()
    assert any(json.loads(line).get("run_id") == summary["run_id"] for line in log_lines)


def test_bad_configuration_is_one_line_and_nonzero(folder: Path) -> None:
    (folder / "retail-etl.toml").write_text("[storage]\nurll = 'x'\n")
    result = cli(folder, "run")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "storage.urll" in lines[0]
    assert "Traceback" not in result.stderr


def test_environment_overrides_config_file(folder: Path) -> None:
    (folder / "retail-etl.toml").write_text("[storage]\nurl = 'ftp://nowhere'\n")
    ok = cli(folder, "init", env={"RETAIL_ETL_STORAGE__URL": f"file://{folder / 'b'}"})
    assert ok.returncode == 0
    result = cli(folder, "run", "--json", env={"RETAIL_ETL_STORAGE__URL": f"file://{folder / 'b'}"})
    assert result.returncode == 0, result.stderr
    bad = cli(folder, "run")
    assert bad.returncode == 2 and "ftp://nowhere" in bad.stderr


def test_unreachable_warehouse_fails_cleanly(folder: Path) -> None:
    (folder / "not-a-dir").write_text("")
    url = f"sqlite:///{folder / 'not-a-dir' / 'x.db'}"
    result = cli(folder, "run", env={"RETAIL_ETL_WAREHOUSE__URL": url})
    assert result.returncode == 4
    assert "warehouse" in result.stderr and "Traceback" not in result.stderr


def test_demo_runs_the_whole_job(folder: Path) -> None:
    result = cli(folder, "demo", "--days", "2", "--rows", "200")
    assert result.returncode == 0, result.stderr
    assert "Where things are" in result.stdout
    lake = folder / "data" / "bucket" / "lake" / "sales"
    assert any(lake.rglob("*.parquet"))
    assert any((folder / "data" / "bucket" / "sales_data_error").rglob("*.csv"))
