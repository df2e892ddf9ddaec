"""The real services behind the production backend ("s3-mysql"):

- an S3-protocol HTTP endpoint: moto in server mode on 127.0.0.1 and a free port, started once
  per session inside this process, so every boto3 call goes over the wire;
- MariaDB / MySQL at RETAIL_ETL_TEST_MYSQL_URL (default root, no password, 127.0.0.1:3306).

Each installation gets its own bucket and its own database, named after this session
(`retail_etl_t_<pid>_<random>_<n>`), so parallel test sessions and several installations in one
test never see each other's data. Databases are dropped when their test ends, and any the
session created are dropped when it ends.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

MYSQL_URL = os.environ.get("RETAIL_ETL_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
S3_REGION = "us-east-1"
S3_KEY_ID = "moto-test-key-id"
S3_SECRET = "moto-test-secret-key"
_SAFE_NAME = re.compile(r"^[a-z0-9_]{1,64}$")


# --- S3 (moto server) -----------------------------------------------------------------------
@dataclass
class S3Server:
    endpoint: str
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
        )

    def storage_settings(self, bucket: str, **overrides: Any) -> dict[str, Any]:
        return {
            "url": f"s3://{bucket}",
            "endpoint_url": self.endpoint,
            "region": S3_REGION,
            "access_key_id": S3_KEY_ID,
            "secret_access_key": S3_SECRET,
            **overrides,
        }

    def fresh_bucket(self, request: pytest.FixtureRequest) -> str:
        """A new empty bucket, emptied and deleted when the requesting test ends."""
        name = f"retail-etl-{secrets.token_hex(4)}-{next(self._counter)}"
        client = self.client()
        client.create_bucket(Bucket=name)

        def remove() -> None:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
                if keys:
                    try:
                        client.delete_objects(Bucket=name, Delete={"Objects": keys})
                    except Exception:  # noqa: BLE001 - a key XML cannot carry (control chars)
                        for key in keys:
                            client.delete_object(Bucket=name, **key)
            client.delete_bucket(Bucket=name)

        request.addfinalizer(remove)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from conftest import need

    try:
        import boto3  # noqa: F401
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        need(False, f"S3 tests need boto3 and moto[server] (pip install -e '.[dev,s3]'): {exc}")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


# --- MariaDB / MySQL --------------------------------------------------------------------------
@dataclass
class MariaDB:
    admin_url: Any  # sqlalchemy URL without a database
    prefix: str  # every database of this session starts with it
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def connect(self) -> Any:
        import pymysql

        url = self.admin_url
        return pymysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
            autocommit=True,
            connect_timeout=5,
            charset="utf8mb4",
        )

    def url(self, database: str, **parts: Any) -> str:
        return self.admin_url.set(database=database, **parts).render_as_string(hide_password=False)

    def execute(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def create_database(self) -> str:
        name = f"{self.prefix}_{next(self._counter)}"
        assert _SAFE_NAME.match(name), name  # names are ours: safe as identifiers
        self.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return name

    def drop_database(self, name: str) -> None:
        assert _SAFE_NAME.match(name) and name.startswith(self.prefix), name
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def fresh_database(self, request: pytest.FixtureRequest) -> str:
        """A new empty database, dropped when the requesting test ends."""
        name = self.create_database()
        request.addfinalizer(lambda: self.drop_database(name))
        return name


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    from conftest import need

    try:
        import pymysql
        from sqlalchemy.engine import make_url
    except ImportError as exc:
        need(False, f"MySQL tests need PyMySQL (pip install -e '.[mysql]'): {exc}")
    url = make_url(MYSQL_URL).set(database=None)
    server = MariaDB(url, f"retail_etl_t_{os.getpid()}_{secrets.token_hex(3)}")
    problem = None
    try:
        server.execute("SELECT VERSION()")
    except pymysql.MySQLError as exc:
        problem = f"no MySQL/MariaDB at {url.host}:{url.port or 3306} ({exc.args[-1]})"
    need(problem is None, f"{problem}; `make services` starts one")
    try:
        yield server
    finally:
        pattern = server.prefix.replace("_", r"\_") + r"\_%"
        for (name,) in server.execute("SHOW DATABASES LIKE %s", (pattern,)):
            server.drop_database(name)


# --- the production backend for conftest.BACKENDS --------------------------------------------
def s3_mysql_settings(root: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings sections of an installation on S3 (moto) and MariaDB, fresh per call."""
    s3: S3Server = request.getfixturevalue("s3_server")
    db: MariaDB = request.getfixturevalue("mariadb")
    return {
        "storage": s3.storage_settings(s3.fresh_bucket(request), max_concurrency=4),
        "warehouse": {"url": db.url(db.fresh_database(request))},
    }
