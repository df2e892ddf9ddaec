"""Shared fixtures. Backend-dependent tests take the `env` fixture, which is parametrised over
every backend combination in BACKENDS (the embedded defaults here; the production parts add
theirs), so one test body covers them all."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from retail_etl.config import Settings, load_settings
from retail_etl.run import RunSummary, run
from retail_etl.storage import ObjectStore, open_store
from retail_etl.tools import sample_data
from retail_etl.warehouse import Warehouse

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip locally when a service is missing; in CI a missing service is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@dataclass
class Env:
    """One configured installation: settings plus open handles on its bucket and warehouse."""

    name: str
    root: Path
    settings: Settings
    store: ObjectStore
    warehouse: Warehouse

    @property
    def landing(self) -> str:
        return self.settings.storage.landing_prefix

    def land(self, name: str, data: bytes | str) -> str:
        """Put an object into landing; returns its key."""
        key = self.landing + name
        self.store.put_bytes(key, data.encode("utf-8") if isinstance(data, str) else data)
        return key

    def run(self, **kwargs: Any) -> RunSummary:
        return run(self.settings, **kwargs)

    def with_settings(self, **sections: dict[str, Any]) -> Env:
        merged = self.settings.model_dump()
        for section, values in sections.items():
            merged[section] = {**merged[section], **values}
        settings = Settings.model_validate(merged)
        return Env(self.name, self.root, settings, self.store, self.warehouse)


def embedded_settings(root: Path) -> dict[str, Any]:
    return {
        "storage": {"url": f"file://{root / 'bucket'}"},
        "warehouse": {"url": f"sqlite:///{root / 'warehouse.db'}"},
    }


# name -> factory(tmp_path, request) returning the settings sections for that backend.
BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], dict[str, Any]]] = {
    "embedded": lambda root, _request: embedded_settings(root),
}

# Production parts: S3 over HTTP (moto server) and MariaDB; fixtures and factory in services.py.
from services import mariadb, s3_mysql_settings, s3_server  # noqa: E402, F401

BACKENDS["s3-mysql"] = s3_mysql_settings


def make_env(name: str, root: Path, request: pytest.FixtureRequest, demo: bool = True) -> Env:
    """An installation as `retail-etl init [--demo]` leaves it: tables, and the bucket."""
    sections = BACKENDS[name](root, request)
    sections.setdefault("engine", {}).update({"work_dir": str(root / "work"), "threads": 2})
    sections.setdefault("log", {}).update({"dir": str(root / "logs")})
    settings = Settings.model_validate(sections)
    warehouse = Warehouse(settings.warehouse)
    warehouse.create_all()
    if demo:
        sample_data.load(warehouse)
    return Env(name, root, settings, open_store(settings.storage, create=True), warehouse)


@pytest.fixture(params=list(BACKENDS))
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    environment = make_env(request.param, tmp_path, request)
    yield environment
    environment.warehouse.dispose()


@pytest.fixture
def embedded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """The embedded defaults only, for tests of logic that no backend changes."""
    environment = make_env("embedded", tmp_path, request)
    yield environment
    environment.warehouse.dispose()


HEADER = "customer_id,store_id,product_name,sales_date,sales_person_id,price,quantity,total_cost"


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


__all__ = ["Env", "HEADER", "IN_CI", "csv_text", "load_settings", "need"]
