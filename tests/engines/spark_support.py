"""Spark for the tests: is it usable here, the settings every Spark test shares (so they share
one SparkSession), and a Spark standalone cluster (master + one worker) on 127.0.0.1 started
from the pyspark installation."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def spark_missing() -> str | None:
    """Why Spark cannot run here, or None."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed: pip install -e '.[spark]'"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "no Java runtime (Spark needs Java 17 or 21)"
    return None


# Short-lived test JVMs: the quick JIT tier only and a simple GC start and finish much sooner on
# a small, busy machine (not for production, where jobs run long enough to profit from C2).
QUICK_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

# Small and polite: the test machine has 2 cores that other suites share.
LOCAL_ENGINE: dict[str, Any] = {
    "name": "spark",
    "spark_master": "local[2]",
    "spark_conf": {
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.memory": "1g",
        "spark.sql.shuffle.partitions": "2",
        "spark.driver.extraJavaOptions": QUICK_JVM,
    },
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    master_url: str
    worker_dir: Path  # executors launched by the worker leave their logs here


def _wait_for(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"{path.name} exited early:\n{path.read_text(errors='replace')}")
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {text!r} in {path}:\n{path.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def standalone_cluster(root: Path) -> Iterator[Cluster]:
    """A Spark standalone master and one worker (1 core, 1 GB) on 127.0.0.1; both are stopped
    on the way out, whatever happened."""
    import pyspark

    home = Path(pyspark.__file__).parent
    spark_class = home / "bin" / "spark-class"
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_NO_DAEMONIZE": "1",
        "SPARK_DAEMON_JAVA_OPTS": QUICK_JVM,
        "SPARK_DAEMON_MEMORY": "512m",
    }
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    master_url = f"spark://127.0.0.1:{port}"
    worker_dir = root / "worker"
    commands = {
        "master": [
            str(spark_class),
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(_free_port()),
        ],
        "worker": [
            str(spark_class),
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--cores",
            "1",
            "--memory",
            "1g",
            "--webui-port",
            str(_free_port()),
            "--work-dir",
            str(worker_dir),
            master_url,
        ],
    }
    started: list[subprocess.Popen[bytes]] = []
    try:
        for name, ready in (
            ("master", "I have been elected leader"),
            ("worker", "Successfully registered with master"),
        ):
            log = root / f"{name}.log"
            with open(log, "wb") as handle:
                process = subprocess.Popen(
                    commands[name],
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped as one
                )
            started.append(process)
            _wait_for(log, ready, process, timeout=180)
        yield Cluster(master_url, worker_dir)
    finally:
        for process in reversed(started):
            _stop(process)
