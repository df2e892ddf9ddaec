"""enc: configuration values (SPEC section 9): AES-256-GCM, the master key and its file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from retail_etl import secrets
from retail_etl.config import Settings, load_settings
from retail_etl.errors import SecretError
from retail_etl.redact import redact


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (secrets.KEY_ENV, secrets.KEY_FILE_ENV, "RETAIL_ETL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("RETAIL_ETL_"):
            monkeypatch.delenv(name)


def key_file(tmp_path: Path, mode: int = 0o600, name: str = "master.key") -> tuple[Path, bytes]:
    text = secrets.generate_key()
    path = tmp_path / name
    path.write_text(text + "\n", encoding="ascii")
    path.chmod(mode)
    return path, secrets.parse_key(text, "test")


# --- the cipher -------------------------------------------------------------------------------
def test_round_trip_with_a_fresh_nonce_each_time() -> None:
    key = secrets.parse_key(secrets.generate_key(), "test")
    value = "pä$$wörd with spaces, quotes ' \" and 🔑"
    first, second = secrets.encrypt(value, key), secrets.encrypt(value, key)
    assert first.startswith("enc:") and second.startswith("enc:")
    assert first != second, "a new random nonce per encryption"
    assert value not in first
    assert secrets.decrypt(first, key) == value == secrets.decrypt(second, key)


def test_a_wrong_key_or_an_altered_token_is_refused() -> None:
    key = secrets.parse_key(secrets.generate_key(), "test")
    other = secrets.parse_key(secrets.generate_key(), "test")
    token = secrets.encrypt("s3cret", key)
    with pytest.raises(SecretError, match="wrong master key, or the value was altered"):
        secrets.decrypt(token, other)
    flipped = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(SecretError, match="wrong master key, or the value was altered"):
        secrets.decrypt(flipped, key)
    for malformed in ("enc:***not base64***", "enc:AAAA", "enc:" + "A" * 60):
        with pytest.raises(SecretError, match="malformed enc: value"):
            secrets.decrypt(malformed, key)


@pytest.mark.parametrize("text", ["", "short", "A" * 44, "not base64 at all!!", "ü" * 44])
def test_a_key_that_is_not_32_bytes_of_base64_is_refused(text: str) -> None:
    with pytest.raises(SecretError, match="is not valid: expected 32 bytes"):
        secrets.parse_key(text, "RETAIL_ETL_MASTER_KEY")


# --- where the key comes from -------------------------------------------------------------------
def test_key_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_config, config_key = key_file(tmp_path, name="config.key")
    from_env_file, env_file_key = key_file(tmp_path, name="env.key")
    env_text = secrets.generate_key()

    with pytest.raises(SecretError, match="needs the master key: set RETAIL_ETL_MASTER_KEY"):
        secrets.load_key(None)
    assert secrets.load_key(from_config) == config_key
    monkeypatch.setenv(secrets.KEY_FILE_ENV, str(from_env_file))
    assert secrets.load_key(from_config) == env_file_key
    monkeypatch.setenv(secrets.KEY_ENV, env_text)
    assert secrets.load_key(from_config) == secrets.parse_key(env_text, "t")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o004])
def test_a_key_file_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path, _key = key_file(tmp_path, mode)
    with pytest.raises(SecretError) as caught:
        secrets.read_key_file(path)
    assert str(caught.value) == (
        f"the master key file {path} is accessible by group or others "
        f"(mode {mode:04o}); run `chmod 600 {path}`"
    )


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_key_file_only_its_owner_can_read_is_used(tmp_path: Path, mode: int) -> None:
    path, key = key_file(tmp_path, mode)
    assert secrets.read_key_file(path) == key


def test_a_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="cannot read the master key file .*nope.key"):
        secrets.read_key_file(tmp_path / "nope.key")


# --- settings -------------------------------------------------------------------------------------
def test_enc_values_in_the_config_file_are_decrypted_and_masked(tmp_path: Path) -> None:
    path, key = key_file(tmp_path)
    config = tmp_path / "retail-etl.toml"
    config.write_text(
        f"""
[storage]
url = "s3://sales-bucket"
access_key_id = "{secrets.encrypt("AKIAEXAMPLEKEYID", key)}"
secret_access_key = "{secrets.encrypt("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", key)}"

[warehouse]
url = "mysql+pymysql://etl@db.example.com/retail"
password = "{secrets.encrypt("db-Passw0rd-ÿ", key)}"

[secrets]
key_file = "{path}"
""",
        encoding="utf-8",
    )
    settings = load_settings(config)
    assert settings.storage.access_key_id is not None
    assert settings.storage.access_key_id.get_secret_value() == "AKIAEXAMPLEKEYID"
    assert settings.storage.secret_access_key is not None
    assert (
        settings.storage.secret_access_key.get_secret_value()
        == "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    )
    assert settings.warehouse.password is not None
    assert settings.warehouse.password.get_secret_value() == "db-Passw0rd-ÿ"
    assert "db-Passw0rd" not in repr(settings)
    line = "connect with db-Passw0rd-ÿ and wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert redact(line) == "connect with *** and ***"

    path.chmod(0o644)
    with pytest.raises(SecretError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert message.startswith(f"invalid configuration in {config}: storage.access_key_id: ")
    assert "chmod 600" in message and "\n" not in message


def test_enc_values_from_the_environment_and_a_wrong_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key_text = secrets.generate_key()
    token = secrets.encrypt("env-Secret-42", secrets.parse_key(key_text, "t"))
    monkeypatch.setenv("RETAIL_ETL_WAREHOUSE__PASSWORD", token)
    monkeypatch.setenv(secrets.KEY_ENV, key_text)
    settings = load_settings()
    assert settings.warehouse.password is not None
    assert settings.warehouse.password.get_secret_value() == "env-Secret-42"

    monkeypatch.setenv(secrets.KEY_ENV, secrets.generate_key())
    with pytest.raises(SecretError) as caught:
        load_settings()
    assert str(caught.value) == (
        "invalid configuration: warehouse.password (from RETAIL_ETL_WAREHOUSE__PASSWORD): "
        "cannot decrypt an enc: value: wrong master key, or the value was altered"
    )


def test_a_password_inside_the_warehouse_url_is_masked_not_the_url() -> None:
    settings = Settings.model_validate(
        {"warehouse": {"url": "mysql+pymysql://etl:Url%40Pass-77@db/retail"}}
    )
    assert settings.warehouse.url.get_secret_value().endswith("@db/retail")
    assert redact("got Url%40Pass-77 / Url@Pass-77") == "got *** / ***"
    assert redact("sqlite:///./data/warehouse.db") == "sqlite:///./data/warehouse.db"


def test_only_secret_fields_are_decrypted() -> None:
    token = secrets.encrypt("x", secrets.parse_key(secrets.generate_key(), "t"))
    settings = Settings.model_validate({"storage": {"landing_prefix": token}})
    assert settings.storage.landing_prefix == token.strip("/") + "/"


# --- command line -------------------------------------------------------------------------------
def cli(
    tmp_path: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RETAIL_ETL_")}
    return subprocess.run(
        [sys.executable, "-m", "retail_etl", *args],
        cwd=tmp_path,
        env={**clean, "RETAIL_ETL_LOG__DIR": str(tmp_path / "logs"), **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_keygen_and_encrypt(tmp_path: Path) -> None:
    printed = cli(tmp_path, "secrets", "keygen")
    assert printed.returncode == 0
    assert len(secrets.parse_key(printed.stdout.strip(), "stdout")) == 32

    path = tmp_path / "keys" / "master.key"
    path.parent.mkdir()
    made = cli(tmp_path, "secrets", "keygen", "--out", str(path))
    assert made.returncode == 0, made.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    key = secrets.read_key_file(path)
    again = cli(tmp_path, "secrets", "keygen", "--out", str(path))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert secrets.read_key_file(path) == key, "an existing key is never replaced"

    token = cli(tmp_path, "secrets", "encrypt", "hunter2 pw", "--key-file", str(path))
    assert token.returncode == 0, token.stderr
    assert secrets.decrypt(token.stdout.strip(), key) == "hunter2 pw"
    piped = cli(
        tmp_path,
        "secrets",
        "encrypt",
        "-",
        stdin="from stdin\n",
        **{secrets.KEY_FILE_ENV: str(path)},
    )
    assert secrets.decrypt(piped.stdout.strip(), key) == "from stdin"

    (tmp_path / "retail-etl.toml").write_text(f'[secrets]\nkey_file = "{path}"\n')
    from_config = cli(tmp_path, "secrets", "encrypt", "via config")
    assert secrets.decrypt(from_config.stdout.strip(), key) == "via config"

    path.chmod(0o640)
    refused = cli(tmp_path, "secrets", "encrypt", "x")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: the master key file {path} is accessible by group or others (mode 0640); "
        f"run `chmod 600 {path}`"
    ]


def test_keygen_creates_the_missing_key_folder_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"  # a fresh home: no ~/.config yet
    home.mkdir()
    made = cli(
        tmp_path, "secrets", "keygen", "--out", "~/.config/retail-etl/master.key", HOME=str(home)
    )
    assert made.returncode == 0, made.stderr
    key_file = home / ".config" / "retail-etl" / "master.key"
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = cli(
        tmp_path, "secrets", "encrypt", "pw", "--key-file", "~/.config/retail-etl/master.key",
        HOME=str(home),
    )  # fmt: skip
    assert secrets.decrypt(token.stdout.strip(), secrets.read_key_file(key_file)) == "pw"


def test_encrypt_without_a_key_says_how_to_give_one(tmp_path: Path) -> None:
    result = cli(tmp_path, "secrets", "encrypt", "pw")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: an enc: value needs the master key: pass --key-file FILE, or set "
        "RETAIL_ETL_MASTER_KEY, RETAIL_ETL_MASTER_KEY_FILE or secrets.key_file "
        "(`retail-etl secrets keygen --out FILE` creates one)"
    ]
