"""S3Store against a real S3-protocol endpoint (moto in server mode on 127.0.0.1)."""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from services import S3Server

from retail_etl.config import StorageSettings
from retail_etl.errors import ConfigError, ObjectReplacedError, StorageError
from retail_etl.storage import open_store
from retail_etl.storage.s3 import S3Store

MIB = 1024 * 1024
WEIRD_KEYS = [
    "landing/with space/file name.csv",
    "landing/ünïcödé/日本語 ファイル.csv",
    'landing/quotes/it\'s "quoted"; DROP TABLE x;--.csv',
    "landing/symbols/a+b=c&d?e#f%20g.csv",
    "landing/dots/../../escape.csv",
    "landing//absolute/etc/passwd.csv",
]


def make_store(s3_server: S3Server, request: pytest.FixtureRequest, **overrides: Any) -> S3Store:
    bucket = s3_server.fresh_bucket(request)
    store = open_store(StorageSettings(**s3_server.storage_settings(bucket, **overrides)))
    assert isinstance(store, S3Store)
    request.addfinalizer(store.close)
    return store


@pytest.fixture
def store(s3_server: S3Server, request: pytest.FixtureRequest) -> S3Store:
    return make_store(s3_server, request)


def count_calls(store: S3Store, operation: str) -> list[dict[str, Any]]:
    """Every request of `operation` the store's client sends, with its parameters."""
    seen: list[dict[str, Any]] = []
    store.client.meta.events.register(
        f"before-parameter-build.s3.{operation}", lambda params, **_kw: seen.append(params)
    )
    return seen


def read(store: S3Store, key: str, tmp_path: Path) -> bytes:
    dest = tmp_path / f"read-{time.monotonic_ns()}"
    store.download(key, dest)
    return dest.read_bytes()


# --- listing ------------------------------------------------------------------------------------
def test_listing_pages_through_more_than_1000_keys_recursively_sorted(store: S3Store) -> None:
    wanted = [f"landing/day-{i % 7}/store-{i % 3}/file-{i:05d}.csv" for i in range(1105)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: store.put_bytes(key, key.encode()), wanted))
    store.put_bytes("landing/folder-marker/", b"")  # a console "folder": not an object
    store.put_bytes("elsewhere/x.csv", b"x")
    pages = count_calls(store, "ListObjectsV2")

    listed = store.list("landing/")

    assert [info.key for info in listed] == sorted(wanted)
    assert all(info.size == len(info.key) for info in listed)
    assert len(pages) >= 2, "more than 1,000 keys take more than one page"
    assert [info.key for info in store.list("landing/day-3/store-0/")] == sorted(
        key for key in wanted if key.startswith("landing/day-3/store-0/")
    )
    assert store.list("nothing-here/") == []


def test_a_root_inside_the_bucket_is_invisible_to_callers(
    s3_server: S3Server, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    bucket = s3_server.fresh_bucket(request)
    store = open_store(StorageSettings(**s3_server.storage_settings(f"{bucket}/team/etl")))
    store.put_bytes("sales_data/a.csv", b"abc")
    raw = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in raw] == ["team/etl/sales_data/a.csv"]
    assert [info.key for info in store.list("sales_data/")] == ["sales_data/a.csv"]
    assert isinstance(store, S3Store)
    assert read(store, "sales_data/a.csv", tmp_path) == b"abc"


# --- transfers ----------------------------------------------------------------------------------
def test_large_files_go_in_parallel_parts_both_ways(
    s3_server: S3Server, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = make_store(
        s3_server,
        request,
        multipart_threshold=5 * MIB,
        multipart_chunksize=5 * MIB,
        max_concurrency=3,
    )
    payload = os.urandom(11 * MIB)  # 3 parts of at most 5 MiB
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    parts = count_calls(store, "UploadPart")
    gets = count_calls(store, "GetObject")

    store.upload(src, "lake/big.bin")
    assert len(parts) == 3
    etag = store.client.head_object(Bucket=store.bucket, Key="lake/big.bin")["ETag"]
    assert etag.strip('"').endswith("-3"), "a multipart upload's ETag counts its parts"

    assert read(store, "lake/big.bin", tmp_path) == payload
    assert len([g for g in gets if "Range" in g]) >= 3, "downloaded in ranged parts"

    small = tmp_path / "small.bin"
    small.write_bytes(b"tiny")
    store.upload(small, "lake/small.bin")
    assert len(parts) == 3, "below the threshold: one PUT"
    assert read(store, "lake/small.bin", tmp_path) == b"tiny"


def test_a_failed_multipart_upload_leaves_no_object(
    s3_server: S3Server, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = make_store(
        s3_server,
        request,
        multipart_threshold=5 * MIB,
        multipart_chunksize=5 * MIB,
        max_attempts=1,
    )
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * MIB))
    calls = Counter[str]()

    def break_second_part(params: dict[str, Any], **_kw: Any) -> None:
        calls["part"] += 1
        if params.get("PartNumber") == 2:
            from botocore.exceptions import ConnectionClosedError

            raise ConnectionClosedError(endpoint_url=s3_server.endpoint)

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", break_second_part)
    with pytest.raises(StorageError, match="^upload s3://.*/lake/big.bin: Connection was closed"):
        store.upload(src, "lake/big.bin")

    assert not store.exists("lake/big.bin"), "readers never see a partial object"
    pending = s3_server.client().list_multipart_uploads(Bucket=store.bucket)
    assert pending.get("Uploads", []) == [], "the incomplete upload was aborted"


def test_download_of_a_missing_object_is_a_clear_error(store: S3Store, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"object not found: s3://.*/landing/nope\.csv$"):
        store.download("landing/nope.csv", tmp_path / "x")
    assert not (tmp_path / "x").exists()


# --- moves --------------------------------------------------------------------------------------
def test_move_copies_server_side_then_deletes_the_source(store: S3Store, tmp_path: Path) -> None:
    store.put_bytes("landing/a.csv", b"a,b\n1,2\n")
    copies = count_calls(store, "CopyObject")
    store.move("landing/a.csv", "archive/run-1/a.csv")
    assert len(copies) == 1 and copies[0]["CopySourceIfMatch"]
    assert not store.exists("landing/a.csv")
    assert read(store, "archive/run-1/a.csv", tmp_path) == b"a,b\n1,2\n"


def test_move_never_overwrites_a_different_object(store: S3Store, tmp_path: Path) -> None:
    store.put_bytes("landing/a.csv", b"new content")
    store.put_bytes("archive/a.csv", b"old content")  # same size, different bytes
    with pytest.raises(StorageError, match="refusing to overwrite"):
        store.move("landing/a.csv", "archive/a.csv")
    assert read(store, "archive/a.csv", tmp_path) == b"old content"
    assert read(store, "landing/a.csv", tmp_path) == b"new content"


def test_move_is_idempotent_after_an_interruption(store: S3Store, tmp_path: Path) -> None:
    store.put_bytes("landing/a.csv", b"same")
    store.put_bytes("archive/a.csv", b"same")  # copied, then the process died
    store.move("landing/a.csv", "archive/a.csv")
    assert not store.exists("landing/a.csv")
    store.move("landing/a.csv", "archive/a.csv")  # source gone, destination there: done
    assert read(store, "archive/a.csv", tmp_path) == b"same"
    with pytest.raises(StorageError, match="object not found"):
        store.move("landing/missing.csv", "archive/missing.csv")


def test_move_keeps_the_source_when_the_copy_does_not_verify(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_bytes("landing/a.csv", b"the real bytes")
    real_copy = store.client.copy_object

    def corrupting_copy(**kwargs: Any) -> Any:
        result = real_copy(**kwargs)
        store.client.put_object(Bucket=kwargs["Bucket"], Key=kwargs["Key"], Body=b"garbage")
        return result

    monkeypatch.setattr(store.client, "copy_object", corrupting_copy)
    with pytest.raises(StorageError, match="failed verification.*the source is kept"):
        store.move("landing/a.csv", "archive/a.csv")
    assert read(store, "landing/a.csv", tmp_path) == b"the real bytes"


def test_move_leaves_a_source_replaced_between_its_head_and_its_copy(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy names the ETag the move looked at: a replacement in between is not copied."""
    store.put_bytes("landing/a.csv", b"read by the run")
    read_version = store.version("landing/a.csv")
    real_copy = store.client.copy_object

    def replace_then_copy(**kwargs: Any) -> Any:
        store.client.put_object(Bucket=store.bucket, Key="landing/a.csv", Body=b"new!")
        return real_copy(**kwargs)  # S3 refuses it (412); moto copies, and the move sees that

    monkeypatch.setattr(store.client, "copy_object", replace_then_copy)
    with pytest.raises(ObjectReplacedError, match="changed while being moved"):
        store.move("landing/a.csv", "archive/a.csv", read_version)
    monkeypatch.undo()
    assert read(store, "landing/a.csv", tmp_path) == b"new!"
    assert not store.exists("archive/a.csv")


def test_move_of_a_multipart_object_compares_content_not_etags(
    s3_server: S3Server, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = make_store(s3_server, request, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    payload = os.urandom(6 * MIB)
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    store.upload(src, "landing/big.bin")  # multipart: its ETag is not an MD5

    store.move("landing/big.bin", "archive/big.bin")
    assert read(store, "archive/big.bin", tmp_path) == payload
    assert not store.exists("landing/big.bin")

    # An interrupted move of a multipart object: the copy's ETag differs from the source's,
    # yet the content is the same, so the move completes.
    store.upload(src, "landing/big.bin")
    store.move("landing/big.bin", "archive/big.bin")
    assert not store.exists("landing/big.bin")

    # Same size, different content, ETags not comparable: still refused.
    other = bytearray(payload)
    other[-1] ^= 0xFF
    src.write_bytes(bytes(other))
    store.upload(src, "landing/big.bin")
    with pytest.raises(StorageError, match="refusing to overwrite"):
        store.move("landing/big.bin", "archive/big.bin")


# --- keys ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", WEIRD_KEYS)
def test_keys_with_spaces_unicode_quotes_and_dots_are_used_verbatim(
    store: S3Store, s3_server: S3Server, key: str, tmp_path: Path
) -> None:
    store.put_bytes(key, b"payload")
    assert [info.key for info in store.list("landing/")] == [key]
    raw = s3_server.client().list_objects_v2(Bucket=store.bucket)["Contents"]
    assert [item["Key"] for item in raw] == [key], "stored under exactly that key"
    assert store.exists(key) and store.size(key) == 7
    assert read(store, key, tmp_path) == b"payload"
    store.move(key, "archive/" + key)
    assert [info.key for info in store.list("")] == ["archive/" + key]
    store.delete("archive/" + key)
    store.delete("archive/" + key)  # deleting what is gone is fine
    assert store.list("") == []


# --- client configuration, retries, errors ------------------------------------------------------
def test_retries_are_adaptive_and_bounded(
    s3_server: S3Server, request: pytest.FixtureRequest
) -> None:
    store = make_store(s3_server, request, max_attempts=4)
    assert store.client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 4}
    store.put_bytes("landing/a.csv", b"abc")

    attempts = Counter[str]()

    def throttle_twice(**_kw: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        attempts["head"] += 1
        if attempts["head"] <= 2:
            return AWSResponse(s3_server.endpoint, 503, {"x-amz-request-id": "t"}, _Raw(b""))
        return None  # send for real

    store.client.meta.events.register("before-send.s3.HeadObject", throttle_twice)
    assert store.size("landing/a.csv") == 3
    assert attempts["head"] == 3, "two 503s were retried"

    attempts.clear()
    store.client.meta.events.unregister("before-send.s3.HeadObject", throttle_twice)

    def always_throttle(**_kw: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        attempts["head"] += 1
        return AWSResponse(s3_server.endpoint, 503, {}, _Raw(b""))

    store.client.meta.events.register("before-send.s3.HeadObject", always_throttle)
    with pytest.raises(StorageError) as caught:
        store.size("landing/a.csv")
    assert attempts["head"] == 4, "gives up after max_attempts"
    assert "503" in str(caught.value) and "\n" not in str(caught.value)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_kw: Any) -> Any:
        yield self.body


def test_an_unreachable_endpoint_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    store = open_store(
        StorageSettings(
            url="s3://bucket-x",
            endpoint_url=f"http://127.0.0.1:{port}",
            region="us-east-1",
            access_key_id="key-id-xyz",
            secret_access_key="very-secret-value-123",
            max_attempts=2,
        )
    )
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        store.list("sales_data/")
    message = str(caught.value)
    assert time.monotonic() - started < 30
    assert message.startswith("list s3://bucket-x/sales_data/: Could not connect")
    assert "\n" not in message and "very-secret-value-123" not in message


def test_without_keys_the_aws_credential_chain_is_used(
    s3_server: S3Server, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.fresh_bucket(request)
    settings = s3_server.storage_settings(bucket, access_key_id=None, secret_access_key=None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIACHAINEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    store = open_store(StorageSettings(**settings))
    assert isinstance(store, S3Store)
    sent: list[str] = []
    store.client.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **_kw: sent.append(request.headers["Authorization"].decode()),
    )
    store.put_bytes("a.csv", b"x")
    assert "Credential=AKIACHAINEXAMPLE/" in sent[0]

    # No keys anywhere: a clear error rather than a botocore traceback.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    no_keys = open_store(StorageSettings(**settings))
    with pytest.raises(StorageError, match="^no AWS credentials found"):
        no_keys.list("")


def test_half_a_key_pair_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="both storage.access_key_id and"):
        open_store(StorageSettings(url="s3://bucket-x", access_key_id="only-the-id"))
