"""The fault injectors of tests/faults.py do what the fault tests rely on."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from conftest import need
from faults import _FailingProxy, can_mount, full_disk


def test_s3_proxy_answers_500_and_botocore_retries_through_a_few(tmp_path: Path) -> None:
    need(
        all(importlib.util.find_spec(m) for m in ("boto3", "moto")),
        "boto3 and moto[server] (the dev and s3 extras)",
    )
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    left = {"n": 0}

    def should_fail(method: str, path: str) -> bool:
        if method in ("GET", "HEAD") or left["n"] == 0:
            return False
        left["n"] -= 1
        return True

    proxy = _FailingProxy(f"http://{host}:{port}", should_fail)
    proxy.failing = True
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=proxy.url,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
            config=Config(retries={"mode": "standard", "max_attempts": 4}),
        )
        s3.create_bucket(Bucket="fault-bucket")
        left["n"] = 2
        s3.put_object(Bucket="fault-bucket", Key="lake/a", Body=b"x" * 1000)
        big = tmp_path / "big"
        big.write_bytes(os.urandom(9 * 1024 * 1024))
        left["n"] = 2
        s3.upload_file(str(big), "fault-bucket", "lake/big")  # multipart, through the proxy
        assert proxy.failed == 4
        assert s3.head_object(Bucket="fault-bucket", Key="lake/big")["ContentLength"] == (
            9 * 1024 * 1024
        )
        left["n"] = 100
        try:
            s3.put_object(Bucket="fault-bucket", Key="lake/b", Body=b"y")
            raise AssertionError("a lasting outage must surface")
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "InternalError"
    finally:
        proxy.close()
        server.stop()


def test_full_disk_is_really_full(tmp_path: Path) -> None:
    need(can_mount(tmp_path), "mounting a tmpfs needs root")
    folder = tmp_path / "small"
    with full_disk(folder, "64k"):
        try:
            (folder / "f").write_bytes(b"x" * 200_000)
            raise AssertionError("the tmpfs took more than its size")
        except OSError as exc:
            assert exc.errno == 28
    (folder / "f").write_bytes(b"x" * 200_000)  # unmounted again
