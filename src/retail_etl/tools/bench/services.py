"""The production stack the bench's `*-s3-mariadb` variants run on, all on this machine:

- an S3-protocol endpoint on 127.0.0.1: moto's server started as a subprocess on a free port
  (or an endpoint given with --s3-endpoint, e.g. a faster S3-compatible server), a fresh bucket
  per run;
- MariaDB / MySQL (--mysql-url, default root without a password on 127.0.0.1:3306): a
  throwaway database per run, created and dropped by the bench, and the server's row counters
  read around each run (rows_changed).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

S3_REGION = "us-east-1"
# moto accepts any key; an endpoint given with --s3-endpoint gets these unless
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are set.
S3_KEY_ID = "bench-key-id"
S3_SECRET = "bench-secret-key"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class S3Endpoint:
    """An S3-protocol endpoint; moto's server when none is given, started by start()."""

    def __init__(self, endpoint: str | None = None) -> None:
        self.endpoint = endpoint
        self.key_id = os.environ.get("AWS_ACCESS_KEY_ID", S3_KEY_ID)
        self.secret = os.environ.get("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        self.server: subprocess.Popen[bytes] | None = None
        self.kind = "given endpoint" if endpoint else "moto server"

    def start(self, log: Path) -> None:
        """Start moto's server (unless an endpoint was given) and wait until it answers."""
        if self.endpoint is None:
            port = _free_port()
            with open(log, "ab") as out:
                self.server = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + (60 if self.server is not None else 10)
        while True:
            try:
                self.client().list_buckets()
                return
            except Exception as exc:  # not up yet, or not an S3 endpoint at all
                if self.server is not None and self.server.poll() is not None:
                    raise RuntimeError(f"moto server exited; see {log}") from exc
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no S3 endpoint answering at {self.endpoint}") from exc
                time.sleep(0.3)

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.server = None

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            config=Config(max_pool_connections=16),
        )

    @property
    def env(self) -> dict[str, str]:
        """For a process using the default AWS chain (the hand-written script)."""
        return {
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": S3_REGION,
        }

    def storage_toml(self, bucket: str) -> str:
        return (
            "[storage]\n"
            f'url = "s3://{bucket}"\n'
            f'endpoint_url = "{self.endpoint}"\n'
            f'region = "{S3_REGION}"\n'
            f'access_key_id = "{self.key_id}"\n'
            f'secret_access_key = "{self.secret}"\n'
        )

    def fresh_bucket(self) -> str:
        name = f"retail-etl-bench-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def upload(self, bucket: str, files: list[Path], base: Path, prefix: str) -> None:
        client = self.client()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda p: client.upload_file(
                        str(p), bucket, prefix + p.relative_to(base).as_posix()
                    ),
                    files,
                )
            )

    def remove_bucket(self, bucket: str) -> None:
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=bucket)


class MariaDB:
    """The server at url (no database in it): throwaway databases and the InnoDB counters."""

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        self.url = make_url(url).set(database=None)
        self.prefix = f"retail_etl_bench_{os.getpid()}_{secrets.token_hex(2)}"
        self._count = 0

    def connect(self, database: str | None = None) -> Any:
        import pymysql

        return pymysql.connect(
            host=self.url.host or "127.0.0.1",
            port=self.url.port or 3306,
            user=self.url.username or "root",
            password=self.url.password or "",
            database=database,
            autocommit=True,
            connect_timeout=5,
            charset="utf8mb4",
        )

    def query(self, sql: str, database: str | None = None) -> list[tuple[Any, ...]]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def problem(self) -> str | None:
        """Why the server cannot be used, or None."""
        try:
            self.query("SELECT VERSION()")
        except ImportError as exc:
            return f"PyMySQL is not installed ({exc}): pip install -e '.[mysql]'"
        except Exception as exc:
            return f"no MySQL/MariaDB at {self.display}: {exc}"
        return None

    @property
    def display(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def create(self) -> str:
        self._count += 1
        name = f"{self.prefix}_{self._count}"
        self.query(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return name

    def drop(self, name: str) -> None:
        assert name.startswith(self.prefix), name  # only the bench's own databases
        self.query(f"DROP DATABASE IF EXISTS `{name}`")

    def sqlalchemy_url(self, database: str) -> str:
        return self.url.set(database=database).render_as_string(hide_password=False)

    def plain_url(self, database: str) -> str:
        """mysql://... for the hand-written script (no SQLAlchemy there)."""
        return self.url.set(drivername="mysql", database=database).render_as_string(
            hide_password=False
        )

    def local_processes(self) -> list[Any]:
        """The server's processes (psutil), when it runs on this machine; else none."""
        import psutil

        if self.url.host not in (None, "127.0.0.1", "localhost", "::1"):
            return []
        return [
            process
            for process in psutil.process_iter(["name"])
            if process.info["name"] in ("mariadbd", "mysqld")
        ]

    def rows_changed(self) -> tuple[int, str]:
        """Rows the whole server has inserted, updated and deleted so far, and which counters
        say so: InnoDB's own where the server has them (MySQL); MariaDB 10.6+ dropped
        `Innodb_rows_*`, and its `Handler_write/_update/_delete` count the same row
        operations on real tables (internal temporary tables are `Handler_tmp_*`)."""
        status = dict(self.query("SHOW GLOBAL STATUS"))
        for names in (
            ("Innodb_rows_inserted", "Innodb_rows_updated", "Innodb_rows_deleted"),
            ("Handler_write", "Handler_update", "Handler_delete"),
        ):
            if all(name in status for name in names):
                return sum(int(status[name]) for name in names), " + ".join(names)
        raise RuntimeError("the server reports no row counters")

    def totals(self, database: str) -> dict[str, str]:
        (customer,), (team,), (rows,) = (
            self.query("SELECT SUM(total_sales) FROM customers_data_mart", database)[0],
            self.query("SELECT SUM(total_sales) FROM sales_team_data_mart", database)[0],
            self.query(
                "SELECT (SELECT COUNT(*) FROM customers_data_mart)"
                " + (SELECT COUNT(*) FROM sales_team_data_mart)",
                database,
            )[0],
        )
        return {
            "customer_total": str(Decimal(customer).quantize(Decimal("0.01"))),
            "team_total": str(Decimal(team).quantize(Decimal("0.01"))),
            "mart_rows": str(int(rows)),
        }
