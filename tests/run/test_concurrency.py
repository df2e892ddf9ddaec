"""Two runs at once (issue 7): one run works at a time; the other exits at once with status 5
and one line, or waits with --wait; a lock left by a killed run never blocks for long."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from chaos import full_state, land_dataset, one_line_error, reference, retail_etl, start
from conftest import Env, csv_text, make_env
from helpers import customer_mart, ledger
from sqlalchemy import update

from retail_etl.errors import LockedError, LockLostError
from retail_etl.warehouse.holder import holder_is_dead, lock_holder
from retail_etl.warehouse.schema import run_lock

DAY1 = csv_text("1,1,Whole Milk 1L,2024-03-05,2,1.19,2,2.38")
DAY2 = csv_text("2,2,Bananas 1kg,2024-03-06,4,1.39,1,1.39", "1,1,Tea,2024-04-01,2,3.10,2,6.20")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_holder_is_dead_only_when_provably_gone() -> None:
    host = socket.gethostname()
    me = lock_holder()
    assert me.startswith(f"{host}:{os.getpid()}")
    assert not holder_is_dead(me)
    dead = _dead_pid()
    identity = me.split(":", 2)[2] if me.count(":") == 2 else ""
    assert holder_is_dead(f"{host}:{dead}")  # the plain host:pid form
    if identity:
        namespace = identity.split(".")[0]
        assert holder_is_dead(f"{host}:{dead}:{namespace}.1")
        # our pid with another start time: the pid was reused, the holder is gone
        assert holder_is_dead(f"{host}:{os.getppid()}:{namespace}.1")
        # another pid namespace (a container with our host name): never judged from here
        assert not holder_is_dead(f"{host}:{dead}:1.1")
    assert not holder_is_dead(f"elsewhere-{host}:{dead}")
    assert not holder_is_dead(f"{host}:not-a-pid")
    assert not holder_is_dead(f"{host}:{os.getppid()}")  # alive


def test_lock_of_a_dead_process_is_taken_over_at_once(env: Env) -> None:
    """stale_lock_seconds is 15 minutes by default: a killed run must not block that long."""
    env.warehouse.acquire_lock(f"{socket.gethostname()}:{_dead_pid()}")
    env.land("day1.csv", DAY1)
    assert env.run().files_processed == 1


def test_a_live_holder_blocks_and_wait_gives_up_after_the_timeout(env: Env) -> None:
    env.warehouse.acquire_lock("other-host:123")
    env.land("day1.csv", DAY1)
    started = time.monotonic()
    with pytest.raises(LockedError, match="other-host:123.*try again later$"):
        env.run(wait_seconds=1.5)
    assert 1.5 <= time.monotonic() - started < 10
    assert ledger(env) == []


def test_second_run_exits_at_once_with_one_line_or_waits_for_the_first(
    env: Env, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ref = reference(env, request, tmp_path)
    dataset = land_dataset(env)
    first = start(env, "run", "--json", kill=["sleep:discovered:4"])
    _wait_for_line(first, "killpoint: sleeping")  # holds the lock, files registered
    try:
        refused = retail_etl(env, "run")
        assert refused.returncode == 5
        assert "another run holds the lock" in one_line_error(refused)
        waited = start(env, "run", "--json", "--wait", "120")
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
        out2, err2 = waited.communicate(timeout=300)
        assert waited.returncode == 0, err2
    finally:
        first.kill()
    assert json.loads(out)["files_seen"] == dataset.files
    assert (json.loads(out2)["files_seen"], json.loads(out2)["files_resumed"]) == (0, 0)
    assert full_state(env, tmp_path) == ref.state


@pytest.mark.parametrize("wait", [False, True], ids=["no-wait", "wait"])
def test_runs_started_together_process_every_file_once(
    env: Env, request: pytest.FixtureRequest, tmp_path: Path, wait: bool
) -> None:
    ref = reference(env, request, tmp_path)
    land_dataset(env)
    args = ["run", "--json", *(["--wait", "120"] if wait else [])]
    runs = [start(env, *args) for _ in range(3)]
    results = [(*p.communicate(timeout=300), p.returncode) for p in runs]
    results = [(code, out, err) for out, err, code in results]
    codes = sorted(code for code, _out, _err in results)
    if wait:
        assert codes == [0, 0, 0], results
    else:
        assert codes[0] == 0 and set(codes) <= {0, 5}, results
        for code, _out, err in results:
            if code == 5:
                assert "another run holds the lock" in err and len(err.strip().splitlines()) == 1
    assert full_state(env, tmp_path) == ref.state


def _wait_for_line(process: subprocess.Popen[str], text: str, timeout: float = 60) -> None:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            pytest.fail(f"process ended before {text!r}: rc {process.returncode}")
    pytest.fail(f"no {text!r} within {timeout}s")


@pytest.mark.parametrize("where", ["validated", "lake_indexed", "marts_committed"])
def test_a_run_whose_lock_was_taken_over_stops_before_its_next_commit(
    env: Env, request: pytest.FixtureRequest, tmp_path: Path, where: str
) -> None:
    """A run frozen past stale_lock_seconds (a VM pause, SIGSTOP) loses its lock to another
    run; when it wakes up it must not commit anything more (fenced transactions)."""
    clean = make_env(env.name, tmp_path / "clean", request)
    for environment in (env, clean):
        environment.land("a.csv", DAY1)
        environment.land("b.csv", DAY2)
    clean.run()
    before = customer_mart(env)

    def taken_over(stage: str) -> None:
        if stage == where:
            with env.warehouse.begin() as conn:
                conn.execute(update(run_lock).values(holder="other-host:1"))

    with pytest.raises(LockLostError, match="now held by other-host:1"):
        env.run(checkpoint=taken_over)
    if where != "marts_committed":
        assert customer_mart(env) == before  # nothing of the batch committed
    assert [r["status"] for r in ledger(env)] == ["A", "A"]
    with env.warehouse.begin() as conn:  # the other run dies in turn; its lock goes stale
        conn.execute(update(run_lock).values(heartbeat_at=datetime(2000, 1, 1)))
    env.run()
    assert full_state(env, tmp_path) == full_state(clean, tmp_path)
