"""S3, or any S3-compatible store, through boto3: the production object store.

storage.url is s3://BUCKET or s3://BUCKET/ROOT (every key then lives below ROOT/). Keys are
used verbatim: S3 keys are opaque strings, so a key such as "a/../b.csv" names exactly that
object (local file names never derive from keys; see download.local_name).

- Listing is paginated (ListObjectsV2, 1,000 keys a page) and returned sorted.
- Transfers share one boto3 transfer manager per store: files above multipart_threshold go
  in parallel ranged parts, and at most max_concurrency requests are in flight overall.
- Uploads are atomic for readers (S3 publishes an object only when its PUT or multipart
  upload completes); downloads land in a temporary file renamed into place.
- A move is a server-side copy, verified (size, ETag or content) before the source is
  deleted; a different object at the destination is never overwritten. The run lock makes
  the pipeline the only writer, so checking the destination before the copy is sufficient.
- botocore retries throttling and transient errors in adaptive mode (max_attempts).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)
from s3transfer.exceptions import (
    RetriesExceededError,
    S3DownloadFailedError,
    S3UploadFailedError,
    S3ValidationError,
)
from s3transfer.manager import TransferManager

from retail_etl.config import StorageSettings
from retail_etl.errors import (
    ConfigError,
    ObjectConflictError,
    ObjectMissingError,
    ObjectReplacedError,
    StorageError,
)
from retail_etl.redact import redact
from retail_etl.storage.base import ObjectInfo

# CopyObject copies up to 5 GiB in one request; larger objects take a multipart copy.
SINGLE_COPY_LIMIT = 5 * 1024**3
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class S3Store:
    def __init__(self, settings: StorageSettings) -> None:
        parsed = urlparse(settings.url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ConfigError(f"storage.url must look like s3://bucket, got {settings.url!r}")
        self.url = settings.url
        self.bucket = parsed.netloc
        root = parsed.path.strip("/")
        self.root = f"{root}/" if root else ""
        self.client = _client(settings)
        self.transfer_config = TransferConfig(
            multipart_threshold=settings.multipart_threshold,
            multipart_chunksize=settings.multipart_chunksize,
            max_concurrency=settings.max_concurrency,
            use_threads=True,
        )
        # One manager bounds the requests in flight across every concurrent transfer.
        self._transfers = TransferManager(self.client, self.transfer_config)
        self._finalizer = weakref.finalize(self, self._transfers.shutdown)

    def close(self) -> None:
        self._finalizer()

    # --- helpers --------------------------------------------------------------------------
    def _full(self, key: str) -> str:
        if not key or "\x00" in key:
            raise StorageError(f"invalid object key: {key!r}")
        return self.root + key

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.root}{key}"

    @contextmanager
    def _errors(self, action: str, key: str = "") -> Iterator[None]:
        """Turn boto errors into one StorageError line, with no secret in it."""
        try:
            yield
        except StorageError:
            raise
        except ClientError as exc:
            raise StorageError(redact(f"{action} {self._where(key)}: {_describe(exc)}")) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise StorageError(
                "no AWS credentials found: set storage.access_key_id and "
                "storage.secret_access_key, or configure the AWS credential chain "
                "(environment, ~/.aws, instance role)"
            ) from None
        except EndpointConnectionError as exc:
            raise StorageError(redact(f"{action} {self._where(key)}: {exc}")) from None
        except (
            BotoCoreError,
            Boto3Error,
            RetriesExceededError,
            S3DownloadFailedError,
            S3UploadFailedError,
            S3ValidationError,
        ) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StorageError(redact(f"{action} {self._where(key)}: {detail}")) from None

    def _head(self, key: str) -> dict[str, Any] | None:
        with self._errors("head", key):
            try:
                head: dict[str, Any] = self.client.head_object(
                    Bucket=self.bucket, Key=self._full(key)
                )
                return head
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    return None
                raise

    # --- the ObjectStore protocol ---------------------------------------------------------
    def list(self, prefix: str) -> list[ObjectInfo]:
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors("list", prefix):
            pages = paginator.paginate(
                Bucket=self.bucket,
                Prefix=self.root + prefix,
                PaginationConfig={"PageSize": 1000},
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.root) :]
                    if key and not key.endswith("/"):  # skip "folder" placeholder objects
                        found.append(ObjectInfo(key, int(item["Size"])))
        return sorted(found, key=lambda info: info.key)

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int | None:
        head = self._head(key)
        return None if head is None else int(head["ContentLength"])

    def version(self, key: str) -> str | None:
        """ETag and size: S3 gives every upload its own ETag unless the content is the same."""
        head = self._head(key)
        return None if head is None else _version(head)

    def download(self, key: str, dest: Path) -> None:
        with self._errors("download", key):
            try:
                self._transfers.download(self.bucket, self._full(key), str(dest)).result()
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    raise StorageError(f"object not found: {self._where(key)}") from None
                raise

    def upload(self, src: Path, key: str) -> None:
        with self._errors("upload", key):
            self._transfers.upload(str(src), self.bucket, self._full(key)).result()

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors("put", key):
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data)

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def move(self, src_key: str, dest_key: str, expected_version: str | None = None) -> None:
        source = self._head(src_key)
        if source is not None and expected_version not in (None, _version(source)):
            raise ObjectReplacedError(f"{self._where(src_key)} is not the object that was read")
        existing = self._head(dest_key)
        if existing is not None:
            if source is None:
                return  # an earlier move copied, then stopped before deleting the source
            if not self._same_content(src_key, source, dest_key, existing):
                raise ObjectConflictError(
                    f"refusing to overwrite {self._where(dest_key)} with different content"
                )
            self.delete(src_key)
            return
        if source is None:
            raise ObjectMissingError(f"object not found: {self._where(src_key)}")
        copied_etag = self._copy(src_key, source, dest_key)
        self._verify_copy(src_key, source, dest_key, copied_etag)
        self.delete(src_key)

    # --- move internals -------------------------------------------------------------------
    def _copy(self, src_key: str, source: dict[str, Any], dest_key: str) -> str | None:
        """Server-side copy of exactly the version we looked at; returns the new ETag."""
        copy_source = {"Bucket": self.bucket, "Key": self._full(src_key)}
        with self._errors("copy", src_key), self._replaced_on_precondition(src_key):
            if int(source["ContentLength"]) <= SINGLE_COPY_LIMIT:
                result = self.client.copy_object(
                    Bucket=self.bucket,
                    Key=self._full(dest_key),
                    CopySource=copy_source,
                    CopySourceIfMatch=source["ETag"],
                )
                return str(result["CopyObjectResult"]["ETag"])
            self._transfers.copy(
                copy_source,
                self.bucket,
                self._full(dest_key),
                extra_args={"CopySourceIfMatch": source["ETag"]},
            ).result()
            return None

    @contextmanager
    def _replaced_on_precondition(self, src_key: str) -> Iterator[None]:
        """CopySourceIfMatch refused: the source changed since the HEAD the move looked at."""
        try:
            yield
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412"):
                raise ObjectReplacedError(
                    f"{self._where(src_key)} changed while being moved"
                ) from None
            raise

    def _verify_copy(
        self, src_key: str, source: dict[str, Any], dest_key: str, copied_etag: str | None
    ) -> None:
        copy = self._head(dest_key)
        problem = None
        if copy is None:
            problem = "the copy is missing"
        elif int(copy["ContentLength"]) != int(source["ContentLength"]):
            problem = f"size {copy['ContentLength']} != {source['ContentLength']}"
        elif copied_etag is not None and copy["ETag"] != copied_etag:
            problem = "the copy was replaced while being verified"
        elif _plain_md5(source) and _plain_md5(copy) and copy["ETag"] != source["ETag"]:
            problem = f"ETag {copy['ETag']} != {source['ETag']}"
        if problem is None:
            return
        now = self._head(src_key)
        if copy is not None and (now is None or _version(now) != _version(source)):
            # A server that ignores CopySourceIfMatch copied what was put in its place: that
            # copy is not the object this move was for.
            if copied_etag is None or copy["ETag"] == copied_etag:
                self.delete(dest_key)
            raise ObjectReplacedError(f"{self._where(src_key)} changed while being moved")
        raise StorageError(
            f"copy of {self._where(src_key)} to {self._where(dest_key)} failed verification "
            f"({problem}); the source is kept"
        )

    def _same_content(
        self, key_a: str, head_a: dict[str, Any], key_b: str, head_b: dict[str, Any]
    ) -> bool:
        if int(head_a["ContentLength"]) != int(head_b["ContentLength"]):
            return False
        if _plain_md5(head_a) and _plain_md5(head_b):
            return bool(head_a["ETag"] == head_b["ETag"])
        return self._sha256(key_a) == self._sha256(key_b)  # ETags not comparable: read both

    def _sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with self._errors("read", key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
            for chunk in body.iter_chunks(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()


def _client(settings: StorageSettings) -> Any:
    key_id = settings.access_key_id.get_secret_value() if settings.access_key_id else None
    secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
    if bool(key_id) != bool(secret):
        raise ConfigError(
            "set both storage.access_key_id and storage.secret_access_key, or neither "
            "(to use the AWS credential chain)"
        )
    options: dict[str, Any] = {
        "retries": {"mode": "adaptive", "total_max_attempts": settings.max_attempts},
        "max_pool_connections": max(10, settings.max_concurrency * 2),
        "connect_timeout": 10,
        "read_timeout": 120,
        "tcp_keepalive": True,
    }
    if settings.endpoint_url:
        # S3-compatible stores: path-style addressing, and checksums only where S3 requires
        # them (many such stores reject the newer default trailing checksums).
        options.update(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
    session = boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=settings.region
    )
    try:
        return session.client(
            "s3", endpoint_url=settings.endpoint_url or None, config=Config(**options)
        )
    except (BotoCoreError, ValueError) as exc:
        raise ConfigError(redact(f"cannot set up the S3 client: {exc}")) from None


def _version(head: dict[str, Any]) -> str:
    return f"{head['ETag']}:{head['ContentLength']}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = error.get("Code") or status or "error"
    message = str(error.get("Message") or "").splitlines()[0:1]
    hint = {
        "NoSuchBucket": " (check storage.url)",
        "AccessDenied": " (check the credentials and the bucket policy)",
        "InvalidAccessKeyId": " (check storage.access_key_id)",
        "SignatureDoesNotMatch": " (check storage.secret_access_key)",
        "403": " (access denied: check the credentials and the bucket policy)",
    }.get(str(code), "")
    text = f"{code}: {message[0]}" if message else str(code)
    return f"{text}{hint}"


def _plain_md5(head: dict[str, Any]) -> bool:
    """An ETag that is the MD5 of the content: single-part, not KMS or customer-key encrypted."""
    return (
        "-" not in str(head.get("ETag", "-"))
        and head.get("ServerSideEncryption") != "aws:kms"
        and not head.get("SSECustomerAlgorithm")
    )
