"""Encrypted configuration values (SPEC section 9): `enc:<token>` with AES-256-GCM.

The master key is 32 random bytes written as URL-safe base64. It comes from, in order:
RETAIL_ETL_MASTER_KEY (the key itself), RETAIL_ETL_MASTER_KEY_FILE, or the `[secrets]
key_file` setting. A key file must be readable by its owner only (chmod 600).

A token is URL-safe base64 of: version byte (1) | 12-byte random nonce | ciphertext + tag.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from retail_etl.errors import SecretError

PREFIX = "enc:"
KEY_ENV = "RETAIL_ETL_MASTER_KEY"
KEY_FILE_ENV = "RETAIL_ETL_MASTER_KEY_FILE"
_VERSION = b"\x01"
_NONCE_BYTES = 12
_AAD = b"retail-etl secret v1"


def is_encrypted(value: str) -> bool:
    return value.startswith(PREFIX)


def generate_key() -> str:
    """A new master key, as the text to store in the environment or a key file."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def parse_key(text: str, source: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise SecretError(
            f"the master key from {source} is not valid: expected 32 bytes as URL-safe base64 "
            "(create one with `retail-etl secrets keygen`)"
        )
    return key


def read_key_file(path: Path) -> bytes:
    """The key in a file readable by its owner only; anything wider is refused."""
    try:
        info = path.stat()
    except OSError as exc:
        raise SecretError(f"cannot read the master key file {path}: {exc.strerror}") from None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(info.st_mode)
        raise SecretError(
            f"the master key file {path} is accessible by group or others (mode {mode:04o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"cannot read the master key file {path}: {exc}") from None
    return parse_key(text, f"key file {path}")


def write_key_file(path: Path, key: str) -> None:
    """Create a key file readable by its owner only; an existing file is never replaced.
    Missing folders are created (the last one, which holds only keys, with mode 700), as
    `~/.config/retail-etl/master.key` on a fresh home needs."""
    parse_key(key, "the new key")
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SecretError(f"cannot create the folder {path.parent}: {reason}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SecretError(f"{path} already exists; not replacing a master key") from None
    except OSError as exc:
        raise SecretError(f"cannot create the key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    os.chmod(path, 0o600)  # whatever the umask


def load_key(key_file: Path | None = None, option: str | None = None) -> bytes:
    """The master key from the environment, else a key file (env variable, then config).
    option: the command-line option that gives a key file too, named when there is none."""
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return parse_key(from_env, KEY_ENV)
    file_from_env = os.environ.get(KEY_FILE_ENV)
    if file_from_env:
        return read_key_file(Path(file_from_env).expanduser())
    if key_file is not None:
        return read_key_file(Path(key_file).expanduser())
    ways = f"set {KEY_ENV}, {KEY_FILE_ENV} or secrets.key_file"
    if option:
        ways = f"pass {option}, or {ways}"
    raise SecretError(
        f"an enc: value needs the master key: {ways} (`retail-etl secrets keygen --out FILE` "
        "creates one)"
    )


def encrypt(plaintext: str, key: bytes) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), _AAD)
    return PREFIX + base64.urlsafe_b64encode(_VERSION + nonce + sealed).decode("ascii")


def decrypt(token: str, key: bytes) -> str:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not is_encrypted(token):
        raise SecretError("not an enc: value")
    try:
        raw = base64.urlsafe_b64decode(token[len(PREFIX) :].strip().encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SecretError("malformed enc: value (not base64)") from None
    if len(raw) < 1 + _NONCE_BYTES + 16 or raw[:1] != _VERSION:
        raise SecretError("malformed enc: value (unknown format or truncated)")
    nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
    try:
        plaintext = AESGCM(key).decrypt(nonce, sealed, _AAD)
    except InvalidTag:
        raise SecretError(
            "cannot decrypt an enc: value: wrong master key, or the value was altered"
        ) from None
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError("cannot decrypt an enc: value: not UTF-8 text") from None
