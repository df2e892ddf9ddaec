"""The command line as a user runs it: a real process, exit codes, one-line errors."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from collections.abc import Callable
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
    assert result.stderr.strip().splitlines() == [
        "error: invalid configuration in retail-etl.toml: storage.urll: unknown setting "
        "(did you mean url?)"
    ]


@pytest.mark.parametrize(
    "prefixes",
    [
        {"LANDING_PREFIX": ""},  # the whole bucket: the lake and the archive are in it
        {"ERROR_PREFIX": "sales_data/err/"},
        {"ARCHIVE_PREFIX": "sales_data/arch"},
        {"LAKE_PREFIX": "sales_data_processed/lake/"},
    ],
    ids=["empty-landing", "error-in-landing", "archive-in-landing", "lake-in-archive"],
)
def test_prefixes_that_contain_one_another_are_refused(
    folder: Path, prefixes: dict[str, str]
) -> None:
    """Else each night would take the last night's output (the lake, quarantined and
    archived files, rejected rows) for new sales files."""
    assert cli(folder, "init").returncode == 0
    env = {f"RETAIL_ETL_STORAGE__{name}": value for name, value in prefixes.items()}
    result = cli(folder, "run", env=env)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "must not contain one another" in line and "Traceback" not in line
    assert (
        cli(folder, "run", env={"RETAIL_ETL_STORAGE__LANDING_PREFIX": "sales_data"}).returncode == 0
    )


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


# --- exit codes: each failure its documented code, with or without --debug ---------------------
def cli_with_a_defect(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`retail-etl ARGS` in its own process, with `status` broken by a plain Python error: what
    a defect in the tool looks like to a user."""
    code = (
        "import retail_etl.reports.status\n"
        "def collect(*_args):\n"
        "    raise KeyError('ledger')\n"
        "retail_etl.reports.status.collect = collect\n"
        "from retail_etl.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def failing_commands(folder: Path) -> dict[str, Callable[..., subprocess.CompletedProcess[str]]]:
    """name -> a command that fails, given the global options to put first."""
    (folder / "a-file").write_text("")
    (folder / "bad.toml").write_text("[engine]\nthreads = 'many'\n")
    assert cli(folder, "init").returncode == 0  # so that only the failure named fails
    return {
        "configuration": lambda *opts: cli(folder, *opts, "--config", "bad.toml", "status"),
        "object store": lambda *opts: cli(
            folder, *opts, "run", env={"RETAIL_ETL_STORAGE__URL": f"file://{folder / 'none'}"}
        ),
        "warehouse": lambda *opts: cli(
            folder,
            *opts,
            "status",
            env={"RETAIL_ETL_WAREHOUSE__URL": f"sqlite:///{folder / 'a-file' / 'x.db'}"},
        ),
        "unexpected": lambda *opts: cli_with_a_defect(folder, *opts, "status"),
    }


@pytest.mark.parametrize(
    ("failure", "code"),
    [("configuration", 2), ("object store", 3), ("warehouse", 4), ("unexpected", 8)],
)
def test_debug_adds_a_traceback_and_changes_nothing_else(
    folder: Path, failure: str, code: int
) -> None:
    command = failing_commands(folder)[failure]
    plain = command()
    assert plain.returncode == code, plain.stderr
    assert "Traceback" not in plain.stderr
    [line] = plain.stderr.strip().splitlines()
    assert line.startswith("error: ")

    debug = command("--debug")
    assert debug.returncode == code, "a scheduler sees the same failure with --debug"
    assert debug.stderr.startswith("Traceback (most recent call last):")
    last = debug.stderr.strip().splitlines()[-1]
    assert last == line.removesuffix(" (run with --debug for the traceback)")
    assert debug.stdout == plain.stdout


def test_an_unexpected_error_is_reported_as_a_defect_with_its_own_code(folder: Path) -> None:
    assert cli(folder, "init").returncode == 0
    result = cli_with_a_defect(folder, "status")
    assert result.returncode == 8
    assert result.stderr.strip().splitlines() == [
        "error: unexpected error (a defect; please report it): KeyError: 'ledger' "
        "(run with --debug for the traceback)"
    ]


@pytest.mark.parametrize("args", [["nosuch"], ["run", "--engine", "nope"], ["--debug", "true"]])
def test_usage_errors_keep_the_usage_exit_code(folder: Path, args: list[str]) -> None:
    for debug in ([], ["--debug"]):
        result = cli(folder, *debug, *args)
        assert result.returncode == 2
        assert "Usage: " in result.stderr and "Traceback" not in result.stderr


def test_help_shows_flags_as_flags(folder: Path) -> None:
    for args in ([], ["run"], ["generate"], ["coupons"]):
        result = cli(folder, *args, "--help")
        assert result.returncode == 0
        assert "<bool>" not in result.stdout, "a flag takes no value"
    assert re.search(r"^  --debug +Print the traceback", cli(folder, "--help").stdout, re.M)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://etl:Pw-1x9@db/retail", "use mysql+pymysql://user@host/db (the PyMySQL driver)"),
        ("postgresql://etl:Pw-1x9@db/retail", "unsupported database postgresql://"),
        ("Pw-1x9", "not a database URL"),
    ],
)
def test_a_warehouse_url_no_warehouse_can_be_made_of_is_a_configuration_error(
    folder: Path, url: str, expected: str
) -> None:
    from_env = cli(folder, "init", env={"RETAIL_ETL_WAREHOUSE__URL": url})
    assert from_env.returncode == 2
    [line] = from_env.stderr.strip().splitlines()
    assert line.startswith(
        "error: invalid configuration: warehouse.url (from RETAIL_ETL_WAREHOUSE__URL): "
    )
    assert expected in line and "Pw-1x9" not in line

    (folder / "retail-etl.toml").write_text(f"[warehouse]\nurl = '{url}'\n")
    from_file = cli(folder, "run")
    assert from_file.returncode == 2
    [line] = from_file.stderr.strip().splitlines()
    assert line.startswith("error: invalid configuration in retail-etl.toml: warehouse.url: ")
    assert expected in line and "Pw-1x9" not in line
    assert not (folder / "data").exists()


def test_a_bad_value_from_the_environment_names_the_variable(folder: Path) -> None:
    result = cli(folder, "status", env={"RETAIL_ETL_ENGINE__THREADS": "many"})
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: invalid configuration: engine.threads (from RETAIL_ETL_ENGINE__THREADS): "
        "Input should be a valid integer"
    )
    unknown = cli(folder, "status", env={"RETAIL_ETL_ENGINE__THREADZ": "2"})
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "error: invalid configuration: engine.threadz (from RETAIL_ETL_ENGINE__THREADZ): "
        "unknown setting (did you mean threads?)"
    )


@pytest.mark.parametrize("where", ["/proc/bucket", "a-file/bucket"])
def test_a_bucket_folder_that_cannot_be_made_is_an_object_store_error(
    folder: Path, where: str
) -> None:
    (folder / "a-file").write_text("")
    url = f"file://{where if where.startswith('/') else folder / where}"
    for command in ("init", "run", "generate"):
        args = ["--date", "2024-06-01"] if command == "generate" else []
        result = cli(folder, command, *args, env={"RETAIL_ETL_STORAGE__URL": url})
        assert result.returncode == 3, (command, result.stderr)
        line = result.stderr.strip().splitlines()[-1]  # init said its tables are ready
        assert line.startswith("error: ") and url in line and "Traceback" not in result.stderr


# --- the bucket: only the commands that set up an installation create it ----------------------
def test_run_against_a_missing_bucket_fails_and_creates_nothing(folder: Path) -> None:
    assert cli(folder, "init", "--demo").returncode == 0
    for url, path in [
        (f"file://{folder / 'nonexistent' / 'bucket'}", folder / "nonexistent"),
        ("file://./dat/bucket", folder / "dat"),  # a typo of ./data/bucket
    ]:
        result = cli(folder, "run", env={"RETAIL_ETL_STORAGE__URL": url})
        assert result.returncode == 3
        assert result.stderr.strip().splitlines() == [
            f"error: bucket {url} does not exist ({path.resolve() / 'bucket'}); check "
            "storage.url, or run `retail-etl init` to create the embedded folder bucket"
        ]
        assert not path.exists()


def test_init_creates_the_folder_bucket_a_run_needs(folder: Path) -> None:
    init = cli(folder, "init")
    assert init.returncode == 0, init.stderr
    assert "bucket folder ready: file://./data/bucket" in init.stderr
    assert (folder / "data" / "bucket").is_dir()
    result = cli(folder, "run", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files_seen"] == 0


# --- outputs that name customers are their owner's only --------------------------------------
def test_report_and_coupon_export_are_readable_by_their_owner_only(folder: Path) -> None:
    assert cli(folder, "init", "--demo").returncode == 0
    generate = ["generate", "--date", "2024-06-01", "--rows", "50", "--files", "1"]
    assert cli(folder, *generate).returncode == 0
    assert cli(folder, "run").returncode == 0
    report, export = folder / "out" / "june.html", folder / "out" / "coupons.csv"
    report.parent.mkdir()
    for path in (report, export):
        path.write_text("an older copy, world-readable")
        path.chmod(0o644)
    assert cli(folder, "report", "--month", "2024-06", "--out", str(report)).returncode == 0
    assert cli(folder, "coupons", "--month", "2024-06", "--out", str(export)).returncode == 0
    for path in (report, export):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(p.name for p in report.parent.iterdir()) == ["coupons.csv", "june.html"]


# --- what a run and status show at a terminal ---------------------------------------------------
def test_a_run_with_nothing_to_do_says_so(folder: Path) -> None:
    assert cli(folder, "init", "--demo").returncode == 0
    result = cli(folder, "run")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.strip().splitlines()
    assert line.endswith(": nothing new in file://./data/bucket/sales_data/")
    assert line.startswith("run 1 (duckdb): succeeded")
    as_json = cli(folder, "run", "--json")  # unchanged: the summary, with no files
    summary = json.loads(as_json.stdout)
    assert (summary["files_seen"], summary["files"]) == (0, [])


def test_run_and_status_tables_tell_files_apart_at_80_columns(folder: Path) -> None:
    assert cli(folder, "init", "--demo").returncode == 0
    generate = ["generate", "--date", "2024-06-01", "--rows", "20", "--files", "4"]
    assert cli(folder, *generate, "--bad-rows", "0.1").returncode == 0
    broken = ["--date", "2024-06-02", "--files", "1", "--drop-column", "sales_person_id"]
    assert cli(folder, "generate", *broken).returncode == 0
    narrow = {"COLUMNS": "80"}
    for command in ("run", "status"):
        result = cli(folder, command, env=narrow)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, result.stdout
        text = result.stdout
        for store in (1, 2, 3, 4):  # each file's distinguishing tail is shown whole
            assert f"{store}_2024-06-01_0{store}.csv" in text, text
        assert "1_2024-06-02_01.csv" in text and "2024-06-01/" in text
        assert "sales_person" in text  # the quarantine note wraps, it is not cut
        # the rules broken: under the table at 80 columns (a status note column wider)
        assert ("rules broken: " if command == "run" else "run 1: ") in text, text
    wide = cli(folder, "status", env={"COLUMNS": "160"})
    assert "2024-06-01/sales_store1_2024-06-01_01.csv" in wide.stdout
    assert "│ price is not a number (2), " in wide.stdout  # in the note column


def test_fit_key_keeps_what_tells_files_apart() -> None:
    from retail_etl.reports.terminal import fit_key

    assert fit_key("2024-06-01/a.csv", 20) == "2024-06-01/a.csv"
    assert fit_key("2024-06-01/sales_store1_01.csv", 20) == "2024-06-01/\nsales_store1_01.csv"
    assert fit_key("2024-06-01/sales_store12_01.csv", 16) == "2024-06-01/\n…_store12_01.csv"
    assert fit_key("a/b/c/d.csv", 6) == "a/b/c/\nd.csv"


def test_the_demo_lands_a_realistic_chain_up_to_yesterday(folder: Path) -> None:
    from datetime import date, timedelta

    result = cli(folder, "demo")  # the defaults, as `make demo` runs them
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "Sample chain: 12 stores, 84 sales people, 60 products, 3,000 customers" in out
    landed = re.search(
        r"Landed ([\d,]+) files in file://\./data/bucket/sales_data/: 92 days "
        r"\((\S+) to (\S+)\), ([\d,]+) sales lines, 12 stores, ([\d,]+) customers buying",
        out,
    )
    assert landed, out
    yesterday = date.today() - timedelta(days=1)
    assert landed.group(3) == yesterday.isoformat()
    assert int(landed.group(1).replace(",", "")) == 92 * 12 + 2
    assert int(landed.group(5).replace(",", "")) > 2_000
    archived = folder / "data" / "bucket" / "sales_data_processed"
    days = {p.parent.name for p in archived.rglob("*.csv")}
    assert max(days) == yesterday.isoformat(), "no file dated today or later"
    assert len({d[:7] for d in days}) >= 3, "a few months of history"
    monthly = Path(re.search(r"monthly report:\s+(\S+\.html)", result.stdout).group(1))
    html = monthly.read_text(encoding="utf-8")
    for segment in ("loyalty", "win-back", "welcome"):  # coupons across segments
        assert re.search(rf"([\d,]+) {segment}", html), segment
    assert html.count("top seller</span>") == 12  # one star per store
    daily = Path(re.search(r"daily report:\s+(\S+\.html)", result.stdout).group(1))
    assert yesterday.strftime("%d %B %Y") in daily.read_text(encoding="utf-8")
    assert "... and" in result.stdout and "more processed files" in result.stdout


def test_the_demo_report_month_is_the_last_whole_one() -> None:
    from datetime import date

    from retail_etl.tools.demo import Landed, report_month

    def landed(first: date, last: date) -> Landed:
        return Landed(1, 1, first, last, 1, 1, 1)

    assert report_month(landed(date(2026, 9, 1), date(2026, 12, 1))) == "2026-11"
    assert report_month(landed(date(2026, 9, 1), date(2026, 11, 30))) == "2026-11"
    assert report_month(landed(date(2026, 11, 30), date(2026, 12, 1))) == "2026-12"


def test_names_and_notes_that_look_like_rich_markup_are_printed_as_they_are(folder: Path) -> None:
    """A file name or a quarantine note is data: `[/]` once crashed the run's table after
    the batch had loaded (exit 8), and `status` from then on."""
    assert cli(folder, "init", "--demo").returncode == 0
    landing = folder / "data" / "bucket" / "sales_data"
    landing.mkdir(parents=True, exist_ok=True)
    header = (
        "customer_id,store_id,product_name,sales_date,sales_person_id,price,quantity,total_cost"
    )
    (landing / "[bold]dup.csv").write_text(f"{header},[/],[/]\n1,1,Tea,2024-03-05,2,1,1,1,a,b\n")
    (landing / "good.csv").write_text(f"{header}\n2,1,Tea,2024-03-05,2,1,1,1\n")

    run = cli(folder, "run", env={"COLUMNS": "200"})
    status = cli(folder, "status", env={"COLUMNS": "200"})

    assert run.returncode == 0, run.stderr
    assert "[bold]dup.csv" in run.stdout and "duplicate header names: [/]" in run.stdout
    assert status.returncode == 0, status.stderr
    assert "[bold]dup.csv" in status.stdout and "duplicate header names: [/]" in status.stdout
