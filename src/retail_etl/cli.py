"""The `retail-etl` command line (SPEC section 8)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from retail_etl.config import Settings, load_settings
from retail_etl.errors import RetailEtlError, StrictError, UnexpectedError, WorkFolderError
from retail_etl.redact import redact

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Nightly retail sales ETL: landing bucket -> lake, marts and quarantine.",
    pretty_exceptions_enable=False,
    # Click's plain help: Typer's Rich help shows every flag as `--debug <bool>`, as if it
    # took a value, and draws boxes into cron mails.
    rich_markup_mode=None,
)
console = Console(stderr=True)
out = Console()


class _State:
    config: Path | None = None
    debug: bool = False


state = _State()


@app.callback()
def _main(
    config: Annotated[Path | None, typer.Option("--config", help="TOML config file")] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Print the traceback before the error line")
    ] = False,
) -> None:
    state.config = config
    state.debug = debug


def _settings() -> Settings:
    settings = load_settings(state.config)
    from retail_etl.logs import setup_logging

    try:
        setup_logging(settings.log)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise WorkFolderError(f"cannot write the log folder {settings.log.dir}: {reason}") from None
    return settings


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")


# --- secrets: key management for enc: config values (SPEC section 9) ---------------------
secrets_app = typer.Typer(
    no_args_is_help=True, help="Master key and enc: values for secret settings."
)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("keygen")
def secrets_keygen(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the key to this new file (mode 600)")
    ] = None,
) -> None:
    """Create a master key: printed, or written to a file only its owner can read."""
    from retail_etl.secrets import KEY_ENV, generate_key, write_key_file

    key = generate_key()
    if out_file is None:
        sys.stdout.write(key + "\n")
        console.print(f"keep it secret: export {KEY_ENV}=<key>, or store it with --out FILE")
        return
    write_key_file(out_file, key)
    console.print(f"master key written to {out_file} (mode 600); point secrets.key_file at it")


@secrets_app.command("encrypt")
def secrets_encrypt(
    value: Annotated[str, typer.Argument(help="The secret; - reads it from stdin or a prompt")],
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Master key file (default: config)")
    ] = None,
) -> None:
    """Print VALUE as an enc: token to paste into the config or an environment variable."""
    from retail_etl.config import configured_key_file
    from retail_etl.secrets import encrypt, load_key, read_key_file

    if value == "-":  # keeps the secret out of the shell history; hidden on a terminal
        if sys.stdin.isatty():
            value = typer.prompt("value to encrypt", hide_input=True, err=True)
        else:
            value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise typer.BadParameter("the value to encrypt is empty")
    if key_file is not None:
        key = read_key_file(key_file.expanduser())
    else:
        key = load_key(configured_key_file(state.config), option="--key-file FILE")
    sys.stdout.write(encrypt(value, key) + "\n")


_CHAIN = "sample chain (init --demo)"


@app.command(short_help="Create the tables and the folder bucket (idempotent).")
def init(
    demo: Annotated[bool, typer.Option("--demo", help="Load sample dimension rows")] = False,
    customers: Annotated[
        int, typer.Option(help="Customers of the sample chain", min=1, rich_help_panel=_CHAIN)
    ] = 40,
    stores: Annotated[
        int, typer.Option(help="Stores of the sample chain", min=1, rich_help_panel=_CHAIN)
    ] = 4,
    products: Annotated[
        int, typer.Option(help="Products of the sample chain", min=1, rich_help_panel=_CHAIN)
    ] = 15,
    sales_people_per_store: Annotated[
        int | None,
        typer.Option(
            help="Sales people per store (default: the sample team of 10 for up to 4 stores, "
            "else 7 per store)",
            min=1,
            rich_help_panel=_CHAIN,
        ),
    ] = None,
) -> None:
    """Create every table if missing, and a folder bucket (idempotent); --demo loads sample
    dimension rows."""
    import time

    from retail_etl.storage import open_store
    from retail_etl.tools import sample_data
    from retail_etl.warehouse import Warehouse

    settings = _settings()
    warehouse = Warehouse(settings.warehouse)
    warehouse.create_all()
    console.print(f"tables ready in {warehouse.display_url}")
    open_store(settings.storage, create=True)
    if settings.storage.url.startswith("file:"):
        console.print(f"bucket folder ready: {settings.storage.url}")
    if demo:
        size = sample_data.ChainSize(customers, stores, products, sales_people_per_store)
        started = time.perf_counter()
        loaded = sample_data.load(warehouse, size)
        console.print(
            "sample rows loaded: "
            + ", ".join(f"{n} {t}" for t, n in loaded.items())
            + f" ({time.perf_counter() - started:.1f}s)"
        )


@app.command()
def generate(
    date_: Annotated[str, typer.Option("--date", help="First sales day, YYYY-MM-DD")],
    days: Annotated[int, typer.Option(min=1)] = 1,
    rows: Annotated[int, typer.Option(min=0, help="Rows per file")] = 1000,
    files: Annotated[int, typer.Option(min=1, help="Files per day")] = 4,
    seed: Annotated[int, typer.Option()] = 42,
    extra_column: Annotated[
        list[str] | None, typer.Option(help="Add a column (repeatable)")
    ] = None,
    drop_column: Annotated[
        list[str] | None, typer.Option(help="Drop a column (repeatable)")
    ] = None,
    bad_rows: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of invalid rows")] = 0.0,
    gzip: Annotated[bool, typer.Option("--gzip", help="Write .csv.gz")] = False,
    customers: Annotated[
        int | None,
        typer.Option(min=1, help="Sell to the first N customers only (default: all)"),
    ] = None,
    stores: Annotated[
        int | None, typer.Option(min=1, help="Sell in the first N stores only (default: all)")
    ] = None,
    products: Annotated[
        int | None, typer.Option(min=1, help="Sell the first N products only (default: all)")
    ] = None,
    sales_people_per_store: Annotated[
        int | None,
        typer.Option(min=1, help="The first N sales people of each store sell (default: all)"),
    ] = None,
) -> None:
    """Write realistic synthetic sales CSVs into the landing prefix, drawn from the dimension
    tables: with more stores than --files, each file holds a region's stores."""
    from retail_etl.storage import open_store
    from retail_etl.tools.generate import Limits
    from retail_etl.tools.generate import generate as write
    from retail_etl.warehouse import Warehouse

    try:
        start = date.fromisoformat(date_)
    except ValueError:
        raise typer.BadParameter(f"--date must be YYYY-MM-DD, got {date_!r}") from None
    settings = _settings()
    written = write(
        open_store(settings.storage, create=True),  # lands files, for demos and the bench
        Warehouse(settings.warehouse),
        settings.storage.landing_prefix,
        start,
        days,
        rows,
        files,
        seed,
        tuple(extra_column or ()),
        tuple(drop_column or ()),
        bad_rows,
        gzip,
        Limits(customers, stores, products, sales_people_per_store),
    )
    total = sum(size for _k, size in written)
    console.print(
        f"wrote {len(written)} files, {total / 1e6:.1f} MB, "
        f"into {settings.storage.url}/{settings.storage.landing_prefix}"
    )


@app.command()
def run(
    engine: Annotated[str | None, typer.Option(help="duckdb or spark (default: config)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout")] = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0,
            metavar="SECONDS",
            help="When another run holds the lock, wait up to this long for it (default: "
            "exit at once with status 5)",
        ),
    ] = 0.0,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit with status 9 when a file was quarantined or a row rejected",
        ),
    ] = False,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            "--metrics-file",
            metavar="PATH",
            help="Write the run's metrics there, in Prometheus' text format (also when it fails)",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check everything and show what a run would do; change nothing",
        ),
    ] = False,
) -> None:
    """Process every pending landed file."""
    if engine not in (None, "duckdb", "spark"):
        raise typer.BadParameter("--engine must be duckdb or spark")
    if dry_run and metrics_file is not None:
        raise typer.BadParameter("--metrics-file describes a real run, not a --dry-run")
    from retail_etl.reports import terminal

    settings = _settings()
    summary = terminal.run_with_progress(
        settings, engine, console, not as_json, wait, metrics_file, dry_run
    )
    if as_json:
        _print_json(asdict(summary))
    else:
        terminal.show_run(out, summary, terminal.landing_url(settings))
    if strict and (summary.files_quarantined or summary.rows_rejected):
        raise StrictError(
            f"--strict: {summary.files_quarantined} file(s) quarantined, "
            f"{summary.rows_rejected} row(s) rejected"
        )


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout")] = False,
) -> None:
    """The ledger and recent runs."""
    from retail_etl.reports import terminal
    from retail_etl.reports.status import collect
    from retail_etl.warehouse import Warehouse

    warehouse = Warehouse(_settings().warehouse)
    warehouse.ensure_installed()
    data = collect(warehouse)
    if as_json:
        _print_json(data)
        return
    terminal.show_status(out, data)


def _month(value: str, option: str = "--month") -> str:
    import re

    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise typer.BadParameter(f"{option} must be YYYY-MM, got {value!r}")
    return value


@app.command(short_help="Write a self-contained HTML report: --month or --date.")
def report(
    out_path: Annotated[Path, typer.Option("--out", help="HTML file to write")],
    month: Annotated[str | None, typer.Option(help="Monthly report, YYYY-MM")] = None,
    date_: Annotated[str | None, typer.Option("--date", help="Daily report, YYYY-MM-DD")] = None,
) -> None:
    """Write a self-contained HTML report with charts: --month or --date."""
    from retail_etl import reports

    if (month is None) == (date_ is None):
        raise typer.BadParameter("give exactly one of --month YYYY-MM or --date YYYY-MM-DD")
    settings = _settings()
    if month is not None:
        html = reports.monthly_html(settings, _month(month))
    else:
        try:
            day = date.fromisoformat(date_ or "")
        except ValueError:
            raise typer.BadParameter(f"--date must be YYYY-MM-DD, got {date_!r}") from None
        html = reports.daily_html(settings, day)
    out.print(str(reports.write(html, out_path)), soft_wrap=True, markup=False, highlight=False)


@app.command()
def coupons(
    month: Annotated[str, typer.Option(help="The month whose spending earned them, YYYY-MM")],
    out_path: Annotated[Path, typer.Option("--out", help="CSV file to write")],
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Recompute the month with the current rules first")
    ] = False,
) -> None:
    """Export a month's coupons as CSV for a marketing tool."""
    from retail_etl.marts import coupons as coupon_list
    from retail_etl.warehouse import Warehouse

    month = _month(month)
    settings = _settings()
    warehouse = Warehouse(settings.warehouse)
    try:
        warehouse.ensure_installed()
        if refresh:
            with warehouse.begin() as conn:
                coupon_list.replace_month(warehouse, conn, month, settings.rules)
        count = coupon_list.export_csv(warehouse, month, out_path)
    finally:
        warehouse.dispose()
    console.print(f"{count} coupons for {month}")
    out.print(str(out_path.resolve()), soft_wrap=True, markup=False, highlight=False)


@app.command(short_help="The whole job on embedded defaults, in the current folder.")
def demo(
    days: Annotated[int, typer.Option(min=1, max=3660, help="Days of sales, up to yesterday")] = 92,
    rows: Annotated[
        int, typer.Option(min=1, help="Sales lines per store and day, on average")
    ] = 150,
    customers: Annotated[
        int, typer.Option(min=1, help="Customers of the chain", rich_help_panel=_CHAIN)
    ] = 3_000,
    stores: Annotated[
        int, typer.Option(min=1, help="Stores of the chain", rich_help_panel=_CHAIN)
    ] = 12,
    products: Annotated[
        int, typer.Option(min=1, help="Products of the chain", rich_help_panel=_CHAIN)
    ] = 60,
) -> None:
    """The whole job on embedded defaults: init --demo with a chain of a dozen stores,
    a few months of daily sales files up to yesterday, run, and the monthly and daily
    reports."""
    from retail_etl.storage import open_store
    from retail_etl.tools.demo import run_demo
    from retail_etl.tools.sample_data import ChainSize

    settings = _settings()
    open_store(settings.storage, create=True)  # demo plays init
    run_demo(settings, days, rows, out, ChainSize(customers, stores, products))


_PROFILE = "profile (default: the small sample chain; realistic: a real chain's size)"
_PROD = "production stack (S3 protocol + MariaDB on this machine)"
_OUT = "output"


@app.command()
def bench(
    profile: Annotated[
        str,
        typer.Option(
            help="default: 40 customers, 4 stores, 15 products; realistic: 1,000,000 "
            "customers, 300 stores, 5,000 products, 2,100 sales people, with the "
            "production-stack variants",
            rich_help_panel=_PROFILE,
        ),
    ] = "default",
    customers: Annotated[
        int | None, typer.Option(min=1, help="Override the profile's", rich_help_panel=_PROFILE)
    ] = None,
    stores: Annotated[
        int | None, typer.Option(min=1, help="Override the profile's", rich_help_panel=_PROFILE)
    ] = None,
    products: Annotated[
        int | None, typer.Option(min=1, help="Override the profile's", rich_help_panel=_PROFILE)
    ] = None,
    sales_people_per_store: Annotated[
        int | None, typer.Option(min=1, help="Override the profile's", rich_help_panel=_PROFILE)
    ] = None,
    gb: Annotated[float, typer.Option(min=0.001, max=15.0, help="GB of CSV to generate")] = 2.0,
    files: Annotated[int, typer.Option(min=1, help="Files the day is split into")] = 8,
    repeats: Annotated[int, typer.Option(min=1, help="Runs per variant (best and median)")] = 2,
    spark: Annotated[bool, typer.Option(help="Include the Spark variants")] = True,
    handwritten: Annotated[
        bool, typer.Option(help="Include the hand-written DuckDB script")
    ] = True,
    day30: Annotated[bool, typer.Option(help="Include day 30 after 29 processed days")] = True,
    history_fraction: Annotated[
        float, typer.Option(min=0.001, max=1.0, help="Size of each history day vs the day")
    ] = 0.1,
    production: Annotated[
        bool | None,
        typer.Option(
            help="Include the S3 + MariaDB variants (default: with --profile realistic)",
            rich_help_panel=_PROD,
        ),
    ] = None,
    mysql_url: Annotated[
        str,
        typer.Option(
            envvar="RETAIL_ETL_BENCH_MYSQL_URL",
            help="Server for the throwaway databases (created and dropped by the bench)",
            rich_help_panel=_PROD,
        ),
    ] = "mysql+pymysql://root@127.0.0.1:3306",
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            envvar="RETAIL_ETL_BENCH_S3_ENDPOINT",
            help="An S3-compatible endpoint to use (default: start moto's server on 127.0.0.1)",
            rich_help_panel=_PROD,
        ),
    ] = None,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Folder for everything the bench writes", rich_help_panel=_OUT),
    ] = Path("bench-results"),
    workdir: Annotated[
        Path | None,
        typer.Option(help="Scratch folder (default: OUT/work)", rich_help_panel=_OUT),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(help="Results JSON (default: OUT/results.json)", rich_help_panel=_OUT),
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(
            help="Markdown whose section is regenerated, its chart in docs/ beside it "
            "(default: OUT/BENCHMARKS.md)",
            rich_help_panel=_OUT,
        ),
    ] = None,
    section: Annotated[
        str | None,
        typer.Option(
            help="Which table of the Markdown (default: 'table', or the profile's name)",
            rich_help_panel=_OUT,
        ),
    ] = None,
) -> None:
    """Measure the floor, textbook Spark, both engines, a hand-written DuckDB script, day 30
    and (--production) the S3 + MariaDB stack on the same files, the runs taking turns."""
    from retail_etl.tools.bench import PROFILES, Options, run_bench, table, with_chain

    if profile not in PROFILES:
        raise typer.BadParameter(f"--profile must be one of {', '.join(PROFILES)}")
    chosen = with_chain(
        PROFILES[profile],
        customers=customers,
        stores=stores,
        products=products,
        sales_people_per_store=sales_people_per_store,
    )
    options = Options(
        gb=gb,
        files=files,
        repeats=repeats,
        profile=chosen,
        spark=spark,
        handwritten=handwritten,
        production=production,
        day30=day30,
        history_fraction=history_fraction,
        mysql_url=mysql_url,
        s3_endpoint=s3_endpoint,
    )
    markdown = markdown or out_dir / "BENCHMARKS.md"
    outcome = run_bench(
        workdir or out_dir / "work",
        options,
        results or out_dir / "results.json",
        markdown,
        section or ("table" if profile == "default" else profile),
    )
    out.print(table(outcome), soft_wrap=True, markup=False, highlight=False)
    console.print(f"results: {results or out_dir / 'results.json'}; table: {markdown}")
    if outcome["failed"]:
        console.print(f"[red]error:[/red] failed: {', '.join(outcome['failed'])}")
        sys.exit(1)


def main() -> None:
    try:
        returned = app(standalone_mode=False)
    except Exception as exc:  # every failure ends as one line and a documented code
        sys.exit(_exit_with_message(exc))
    # Without standalone mode an Exit (--help, Ctrl-C as 130) comes back as its code.
    sys.exit(returned if isinstance(returned, int) else 0)


def _exit_with_message(exc: Exception) -> int:
    """Show what went wrong and return the exit code: click's own code for usage errors,
    the error's documented code for the tool's errors, UnexpectedError's for anything else.
    --debug adds the traceback before the same line; it never changes the code."""
    if isinstance(exc, typer.Exit):
        return exc.exit_code
    if isinstance(exc, typer.Abort):
        console.print("aborted")
        return 130
    # Typer raises its own (vendored) click exceptions: match them by behaviour.
    if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
        exc.show()  # type: ignore[attr-defined]
        return int(exc.exit_code)  # type: ignore[attr-defined]
    error = exc if isinstance(exc, RetailEtlError) else _unexpected(exc)
    if state.debug:
        import traceback

        # Secrets may sit in an exception's text: masked here as in the one-line error.
        sys.stderr.write(redact("".join(traceback.format_exception(exc))))
    message = redact(str(error))
    if isinstance(error, UnexpectedError) and not state.debug:
        message += " (run with --debug for the traceback)"
    # The message is text, not markup: "[secrets]" and the like stay as written.
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return error.exit_code


def _unexpected(exc: Exception) -> UnexpectedError:
    detail = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
    return UnexpectedError(f"unexpected error (a defect; please report it): {text}")
