"""Choose the object store from storage.url; heavy clients are imported only when used."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlparse

from retail_etl.config import StorageSettings
from retail_etl.errors import ConfigError
from retail_etl.storage.base import MAX_KEY_BYTES, ObjectInfo, ObjectStore, fit_key, safe_key

__all__ = ["MAX_KEY_BYTES", "ObjectInfo", "ObjectStore", "fit_key", "open_store", "safe_key"]


def open_store(settings: StorageSettings, create: bool = False) -> ObjectStore:
    """The bucket of storage.url. A folder bucket must exist unless create is set: only the
    commands that set up an installation (init, demo, generate) create it, so that a run
    pointed at a mistyped folder fails instead of finding nothing there every night."""
    parsed = urlparse(settings.url)
    if parsed.scheme == "file":
        # file://./data/bucket keeps a relative folder; file:///abs is absolute.
        folder = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        from retail_etl.storage.local import LocalFolderStore

        return LocalFolderStore(Path(folder), settings.url, create=create)
    if parsed.scheme == "s3":
        if importlib.util.find_spec("boto3") is None:
            raise ConfigError("storage.url s3:// needs boto3: pip install 'retail-etl[s3]'")
        from retail_etl.storage.s3 import S3Store

        return S3Store(settings)
    raise ConfigError(f"storage.url must start with file:// or s3://, got {settings.url!r}")
