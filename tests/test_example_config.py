"""The example configuration in the repository stays loadable and documents the production
settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from retail_etl.config import SecretsSettings, StorageSettings, WarehouseSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "retail-etl.example.toml"


def test_the_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RETAIL_ETL_MASTER_KEY", "RETAIL_ETL_MASTER_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(EXAMPLE)
    assert settings.storage.url == "s3://acme-retail-sales"
    assert settings.warehouse.url.get_secret_value().startswith("mysql+pymysql://")
    assert settings.secrets.key_file == Path("~/.config/retail-etl/master.key")


@pytest.mark.parametrize("section", [StorageSettings, WarehouseSettings, SecretsSettings])
def test_the_example_mentions_every_production_setting(section: type) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    written = set(re.findall(r"^#?\s*([a-z_]+) = ", text, flags=re.M))
    missing = set(section.model_fields) - written
    assert not missing, f"retail-etl.example.toml does not mention {sorted(missing)}"
