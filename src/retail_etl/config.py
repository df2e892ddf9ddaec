"""One typed settings object: TOML file, overridden by RETAIL_ETL_<SECTION>__<KEY> variables."""

from __future__ import annotations

import difflib
import os
from contextvars import ContextVar
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from retail_etl.errors import ConfigError, SecretError
from retail_etl.redact import register_secret

DEFAULT_CONFIG_FILE = "retail-etl.toml"
MIB = 1024 * 1024

# The [secrets] key_file of the Settings being validated, for decrypting enc: values.
_KEY_FILE: ContextVar[Path | None] = ContextVar("retail_etl_key_file", default=None)


def _decrypt(value: Any) -> Any:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str) and value.startswith("enc:"):
        from retail_etl import secrets

        try:
            value = secrets.decrypt(value, secrets.load_key(_KEY_FILE.get()))
        except SecretError as exc:
            raise PydanticCustomError("secret", str(exc)) from None
    return value


def _reveal_secret(value: Any) -> Any:
    """Decrypt an enc: value; either way the plain value is masked in every output."""
    value = _decrypt(value)
    if isinstance(value, str):
        register_secret(value)
    return value


def _reveal_url(value: Any) -> Any:
    """Like _reveal_secret, but only the URL's password is masked (the rest is shown)."""
    value = _decrypt(value)
    if isinstance(value, str):
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        if password:
            register_secret(password)
            register_secret(unquote(password))
    return value


# SQLAlchemy URL schemes the warehouse supports: SQLite, and MySQL/MariaDB through PyMySQL
# (the driver the `mysql` extra installs; `mysql://` alone would mean MySQLdb).
_WAREHOUSE_SCHEMES = ("sqlite", "sqlite+pysqlite", "mysql+pymysql", "mariadb+pymysql")


def _check_warehouse_url(value: SecretStr) -> SecretStr:
    """Refuse a URL no warehouse can be made of, naming its scheme only (it may hold a
    password)."""
    text = value.get_secret_value()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in _WAREHOUSE_SCHEMES:
        return value
    if scheme.split("+", 1)[0] in ("mysql", "mariadb"):
        raise PydanticCustomError(
            "warehouse_url",
            "use mysql+pymysql://user@host/db (the PyMySQL driver), not {scheme}://",
            {"scheme": scheme},
        )
    if not scheme:
        raise PydanticCustomError(
            "warehouse_url",
            "not a database URL: use sqlite:///PATH or mysql+pymysql://user@host/db",
        )
    raise PydanticCustomError(
        "warehouse_url",
        "unsupported database {scheme}://: use sqlite:///PATH or mysql+pymysql://user@host/db",
        {"scheme": scheme},
    )


# Secret values: plain or `enc:<token>` (see retail_etl.secrets), never printed.
Secret = Annotated[SecretStr | None, BeforeValidator(_reveal_secret)]
SecretUrl = Annotated[SecretStr, BeforeValidator(_reveal_url)]
WarehouseUrl = Annotated[SecretUrl, AfterValidator(_check_warehouse_url)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    url: str = Field("file://./data/bucket", description="Bucket: file://FOLDER or s3://BUCKET")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto...)")
    region: str | None = Field(None, description="S3 region; the AWS chain decides when unset")
    access_key_id: Secret = Field(None, description="S3 key id (plain or enc:)")
    secret_access_key: Secret = Field(None, description="S3 secret (plain or enc:)")
    landing_prefix: str = Field("sales_data/", description="Where stores upload sales files")
    error_prefix: str = Field("sales_data_error/", description="Quarantined files, rejected rows")
    archive_prefix: str = Field("sales_data_processed/", description="Processed source files")
    lake_prefix: str = Field("lake/", description="Parquet lake root")
    max_concurrency: int = Field(8, ge=1, le=64, description="Parallel transfers")
    multipart_threshold: int = Field(
        64 * MIB, ge=5 * MIB, description="S3: bytes from which transfers go in parallel parts"
    )
    multipart_chunksize: int = Field(
        16 * MIB, ge=5 * MIB, description="S3: size of each part of a multipart transfer"
    )
    max_attempts: int = Field(
        8, ge=1, le=30, description="S3: attempts per request (adaptive retry mode)"
    )

    @field_validator("landing_prefix", "error_prefix", "archive_prefix", "lake_prefix")
    @classmethod
    def _prefix_ends_with_slash(cls, value: str) -> str:
        value = value.strip("/")
        return f"{value}/" if value else ""

    @model_validator(mode="after")
    def _prefixes_apart(self) -> StorageSettings:
        """Each prefix its own part of the bucket: a run would otherwise take its own output
        (the lake, quarantined or archived files, rejected rows) for new sales files."""
        prefixes = {
            name: getattr(self, name)
            for name in ("landing_prefix", "error_prefix", "archive_prefix", "lake_prefix")
        }
        for name, prefix in prefixes.items():
            for other, other_prefix in prefixes.items():
                if name != other and other_prefix.startswith(prefix):
                    where = f"{prefix!r}" if prefix else "the whole bucket"
                    raise ValueError(
                        f"{name} ({where}) holds {other} ({other_prefix!r}): the prefixes "
                        "must not contain one another"
                    )
        return self


class WarehouseSettings(_Section):
    url: WarehouseUrl = Field(
        SecretStr("sqlite:///./data/warehouse.db"),
        description="SQLAlchemy URL: sqlite:///PATH or mysql+pymysql://user:pass@host/db",
    )
    password: Secret = Field(
        None, description="Password used instead of the one in the URL (plain or enc:)"
    )
    connect_retries: int = Field(3, ge=0, description="Extra connection attempts before failing")
    stale_lock_seconds: int = Field(
        900, ge=10, description="A run lock whose heartbeat is older than this is taken over"
    )


class EngineSettings(_Section):
    name: Literal["duckdb", "spark"] = Field("duckdb", description="Processing engine")
    spark_master: str = Field(
        default="local[*]",
        description="Spark master URL: local[*], spark://host:7077, yarn, k8s://...; "
        "under spark-submit, its --master wins",
    )
    threads: int = Field(
        default_factory=lambda: os.cpu_count() or 2, ge=1, description="Engine threads"
    )
    memory_limit: str = Field("1GB", description="DuckDB memory limit; it spills beyond it")
    work_dir: Path = Field(Path("./data/work"), description="Local scratch folder")
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Spark properties, e.g. spark.executor.memory, spark.hadoop.fs.s3a.*",
    )
    spark_work_dir: str | None = Field(
        default=None,
        description="Hadoop URI the Spark driver and every executor can reach (s3a://bucket/"
        "prefix, hdfs://..., file:/shared/mount) for the batch's files and rows; unset: work_dir, "
        "which only local[*] or a cluster on this machine can see",
    )


_SEGMENT = r"^[a-z][a-z0-9_-]{0,31}$"


class _CouponRule(_Section):
    """What every coupon rule has. A customer gets at most one coupon per month: the first
    rule in `[[rules.coupons]]` order that matches them."""

    segment: str = Field(
        pattern=_SEGMENT, description="Segment name: the coupon's `segment` and code prefix"
    )
    discount_pct: Decimal = Field(
        gt=0, le=100, max_digits=5, decimal_places=2, description="Discount in percent"
    )


class TopSpendersRule(_CouponRule):
    """The month's top spenders: everyone whose spend is at least the k-th highest, with
    k = ceil(share x number of customers who spent more than 0). Ties at the boundary all
    qualify; a month with a single spender gives that customer the coupon."""

    kind: Literal["top_spenders"] = "top_spenders"
    share: Decimal = Field(Decimal("0.10"), gt=0, le=1, description="Share of the spenders")
    min_spend: Decimal = Field(Decimal("0"), ge=0, description="...who spent at least this")


class SpendDropRule(_CouponRule):
    """Spend fell against the previous calendar month: previous > 0 and
    this month <= previous x (1 - drop_share). No purchase this month counts as 0."""

    kind: Literal["spend_drop"] = "spend_drop"
    drop_share: Decimal = Field(
        Decimal("0.5"), gt=0, le=1, description="Fall, as a share of the previous month"
    )
    min_previous_spend: Decimal = Field(
        Decimal("0"), ge=0, description="...of customers who spent at least this the month before"
    )


class FirstMonthRule(_CouponRule):
    """The customer's first month with a purchase (no customers_data_mart row before it)."""

    kind: Literal["first_month"] = "first_month"
    min_spend: Decimal = Field(Decimal("0"), ge=0, description="...who spent at least this")


CouponRule = Annotated[
    TopSpendersRule | SpendDropRule | FirstMonthRule, Field(discriminator="kind")
]

DEFAULT_COUPON_RULES: tuple[CouponRule, ...] = (
    TopSpendersRule(segment="loyalty", discount_pct=Decimal("10"), share=Decimal("0.10")),
    SpendDropRule(segment="win-back", discount_pct=Decimal("15"), drop_share=Decimal("0.5")),
    FirstMonthRule(segment="welcome", discount_pct=Decimal("5")),
)


# The largest amount DECIMAL(18, 2) holds: every mart total and daily sum is one.
MAX_STORABLE_AMOUNT = Decimal("9999999999999999.99")


class RulesSettings(_Section):
    incentive_rate: Decimal = Field(
        Decimal("0.01"), ge=0, le=1, description="Share of a top seller's monthly total"
    )
    min_sales_date: date = Field(
        date(2000, 1, 1), description="Rows dated before this day are rejected (implausible)"
    )
    max_days_ahead: int = Field(
        7, ge=0, le=3660, description="Rows dated more than this many days after the run: rejected"
    )
    max_amount: Decimal = Field(
        Decimal("100000000.00"),
        gt=0,
        le=MAX_STORABLE_AMOUNT,
        decimal_places=2,
        description="Largest price or total_cost a row may have: keeps monthly sums storable",
    )
    max_quantity: int = Field(
        1_000_000, ge=1, le=10**15, description="Largest quantity a row may have"
    )
    max_rejected_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Quality gate: a file with a larger share of rejected rows is quarantined "
        "whole (e.g. 0.05 for 5%); unset: off",
    )
    coupons: tuple[CouponRule, ...] = Field(
        DEFAULT_COUPON_RULES,
        description="Coupon rules, in priority order ([[rules.coupons]] tables; [] for none)",
    )
    coupon_secret: Secret = Field(
        None,
        description="Key of the HMAC that makes coupon codes (plain or enc:); set it in "
        "production so codes cannot be forged from a customer id",
    )

    @field_validator("coupons")
    @classmethod
    def _segments_unique(cls, rules: tuple[CouponRule, ...]) -> tuple[CouponRule, ...]:
        seen: set[str] = set()
        for rule in rules:
            if rule.segment in seen:
                raise ValueError(f"coupon segment {rule.segment!r} is defined twice")
            seen.add(rule.segment)
        return rules


class SecretsSettings(_Section):
    key_file: Path | None = Field(
        None,
        description="File holding the master key for enc: values (mode 600); "
        "RETAIL_ETL_MASTER_KEY and RETAIL_ETL_MASTER_KEY_FILE take precedence",
    )


class ReportSettings(_Section):
    currency: str | None = Field(
        None,
        min_length=1,
        max_length=8,
        pattern=r"^[^\s<>&\"']+$",
        description='Shown with every amount in reports: a symbol before it ("€" gives '
        '€1,234.50), a code after it ("EUR" gives 1,234.50 EUR); unset: amounts alone',
    )


class LogSettings(_Section):
    dir: Path = Field(Path("./data/logs"), description="Folder of the JSON-lines log")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(BaseSettings):
    """Everything configurable; each section mirrors a TOML table."""

    model_config = SettingsConfigDict(
        env_prefix="RETAIL_ETL_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    storage: StorageSettings = StorageSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    engine: EngineSettings = EngineSettings()
    rules: RulesSettings = RulesSettings()
    log: LogSettings = LogSettings()
    report: ReportSettings = ReportSettings()
    secrets: SecretsSettings = SecretsSettings()

    @model_validator(mode="wrap")
    @classmethod
    def _key_file_first(cls, data: Any, handler: Any) -> Any:
        """enc: values anywhere are decrypted with the key file named in this same config."""
        section = data.get("secrets") if isinstance(data, dict) else None
        if isinstance(section, SecretsSettings):
            key_file = section.key_file
        elif isinstance(section, dict) and section.get("key_file"):
            key_file = Path(str(section["key_file"]))
        else:
            key_file = None
        token = _KEY_FILE.set(key_file)
        try:
            return handler(data)
        finally:
            _KEY_FILE.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _CONFIG_FILE_IN_USE.get("path")
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


# Set by load_settings just around construction: pydantic-settings builds sources per class.
_CONFIG_FILE_IN_USE: dict[str, Path | None] = {}


def config_path(explicit: Path | None = None) -> Path | None:
    """The config file to read: --config, then RETAIL_ETL_CONFIG, then ./retail-etl.toml."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file not found: {explicit}")
        return explicit
    from_env = os.environ.get("RETAIL_ETL_CONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (from RETAIL_ETL_CONFIG)")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(explicit: Path | None = None, **overrides: Any) -> Settings:
    """Read configuration; any problem becomes a ConfigError naming the offending key."""
    path = config_path(explicit)
    _CONFIG_FILE_IN_USE["path"] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [_problem(err["loc"], err["type"], err["msg"]) for err in errors]
        # The file is named when a problem may come from it; a variable names itself.
        in_file = path is not None and any(_variable_of(err["loc"]) is None for err in errors)
        source = f" in {path}" if in_file else ""
        kind = SecretError if all(e["type"] == "secret" for e in errors) else ConfigError
        raise kind(f"invalid configuration{source}: {'; '.join(problems)}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}") from None
    finally:
        _CONFIG_FILE_IN_USE.pop("path", None)


def _variable_of(loc: tuple[int | str, ...]) -> str | None:
    """The RETAIL_ETL_* variable that set the value at loc, if one did (the environment wins
    over the file): RETAIL_ETL_ENGINE__THREADS for engine.threads, RETAIL_ETL_RULES__COUPONS
    for rules.coupons.0.share, RETAIL_ETL_ENGINE for a whole section given as JSON."""
    names = {name.upper(): name for name in os.environ if name.upper().startswith("RETAIL_ETL_")}
    parts = [str(part).upper() for part in loc]
    for end in range(len(parts), 0, -1):
        name = names.get("RETAIL_ETL_" + "__".join(parts[:end]))
        if name is not None:
            return name
    return None


def _problem(loc: tuple[int | str, ...], kind: str, message: str) -> str:
    """One problem as `key (from VARIABLE): message`, in words a user acts on."""
    key = ".".join(str(part) for part in loc)
    if kind == "extra_forbidden":
        message = "unknown setting"
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            message += f" (did you mean {close[0]}?)"
        elif known:
            message += f" (known here: {', '.join(known)})"
    variable = _variable_of(loc)
    return f"{key} (from {variable}): {message}" if variable else f"{key}: {message}"


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The setting names of the section at loc ([] when loc is not a plain section)."""
    model: Any = Settings
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return sorted(model.model_fields)


def configured_key_file(explicit: Path | None = None) -> Path | None:
    """The [secrets] key_file, read without validating (or decrypting) the rest of the config;
    RETAIL_ETL_SECRETS__KEY_FILE wins over the file."""
    from_env = os.environ.get("RETAIL_ETL_SECRETS__KEY_FILE")
    if from_env:
        return Path(from_env)
    path = config_path(explicit)
    if path is None:
        return None
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}") from None
    section = data.get("secrets")
    value = section.get("key_file") if isinstance(section, dict) else None
    return Path(str(value)) if value else None
