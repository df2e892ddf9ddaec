"""SPEC section 5, proven the hard way (issue 7): `retail-etl run` is SIGKILLed at many precise
moments of every stage, then run again; each time the warehouse, lake, archive and error prefix
end up exactly as after an uninterrupted run.

The kill points are installed by tests/killpoint.py from outside the product (pipeline
checkpoints, object-store calls, SQL statements, timers); the process gets a real SIGKILL, so
nothing of it runs after that moment: no finally, no lock release, no rollback but the
database's own.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from chaos import (
    Dataset,
    Reference,
    full_state,
    land_dataset,
    reference,
    retail_etl,
    summary_of,
)
from conftest import Env, csv_text
from helpers import customer_mart, keys, ledger

Spec = Callable[[Reference], str]


def at(spec: str) -> Spec:
    return lambda _ref: spec


def engine_at(fraction: float) -> Spec:
    """While the engine works: a share of the reference run's transform time after triage, and
    at the latest when the engine is done (this run may be faster than the reference)."""
    return lambda ref: (
        f"timer:validated:{ref.summary['stage_seconds']['transform'] * fraction:.3f}:enriched"
    )


MARTS_AT_COMMIT = "commit:sales_team_data_mart:1"
POINTS: dict[str, Spec] = {
    # discovery: registration is one transaction
    "discover/mid-registration": at("sql:^INSERT INTO product_staging_table:7"),
    "discover/registered": at("checkpoint:discovered:1"),
    # download and validation run per file, in parallel
    "download/first-object": at("after:download:1"),
    "download/half": lambda ref: f"after:download:{ref.dataset.files // 2}",
    "validate/third-file": at("validate:-:3"),
    "validate/mid-triage": at("sql:^UPDATE product_staging_table:1"),
    "validate/triaged": at("checkpoint:validated:1"),
    # the engine reading the CSVs and writing Parquet into the work folder
    "engine/early": engine_at(0.25),
    "engine/late": engine_at(0.75),
    # the lake: index recorded first, then the uploads
    "lake/indexed-nothing-uploaded": at("before:upload:1"),
    "lake/half-uploaded": lambda ref: f"after:upload:{ref.summary['lake_objects'] // 2}",
    "lake/torn-upload": at("torn:lake/sales/:3"),
    "lake/written": at("checkpoint:lake_written:1"),
    "rejected/written": at("checkpoint:rejected_written:1"),
    # the marts: one transaction with the ledger outcomes
    "marts/mid-transaction": at("sql:^INSERT INTO customers_data_mart:1"),
    "marts/at-commit": at(MARTS_AT_COMMIT),
    "marts/committed": at("checkpoint:marts_committed:1"),
    # snapshots, then each object's move and status flip
    "archive/first-snapshot": at("after:put_bytes:1"),
    "archive/moved-not-flipped": at("after:move:1"),
    "archive/half": lambda ref: f"after:move:{ref.dataset.files // 2}",
    "archive/last-moved": lambda ref: f"after:move:{ref.dataset.files}",
    "archive/finished-lock-held": at("checkpoint:finished:1"),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_then_rerun_equals_an_uninterrupted_run(
    env: Env, request: pytest.FixtureRequest, tmp_path: Path, point: str
) -> None:
    if point == "lake/torn-upload" and not env.settings.storage.url.startswith("file://"):
        pytest.skip("a torn upload is a folder-store notion (S3 publishes whole objects)")
    ref = reference(env, request, tmp_path)
    land_dataset(env)

    spec = POINTS[point](ref)
    killed = retail_etl(env, "run", "--json", kill=[spec])
    assert killed.returncode == -signal.SIGKILL, (spec, killed.returncode, killed.stderr)
    assert "killpoint: SIGKILL" in killed.stderr

    rerun = summary_of(retail_etl(env, "run", "--json"))
    assert rerun["outcome"] == "succeeded"
    assert full_state(env, tmp_path) == ref.state


def night_with_a_correction(env: Env) -> Dataset:
    """A file processed on an earlier night, then a night that corrects it, lands a new file,
    a broken one and a copy of the new one: every ledger transition happens in one run."""
    first = land_dataset(env, days=1, rows=2_000, files=1)
    env.run()
    for name, day in (("day.csv", "2024-03-30"), ("new.csv", "2024-03-31")):
        env.land(name, csv_text(*(f"{c},1,Tea,{day},2,1.{c:02d},1,1.{c:02d}" for c in range(1, 9))))
    env.run()
    env.land("day.csv", csv_text("1,1,Tea,2024-03-30,2,9.99,1,9.99"))  # corrects day.csv
    env.land("other.csv", csv_text("2,2,Tea,2024-03-31,4,5.00,1,5.00"))
    env.land("other-copy.csv", csv_text("2,2,Tea,2024-03-31,4,5.00,1,5.00"))
    env.land("broken.csv", "not,a,sales,file\n")
    return Dataset(4, first.rows + 16 + 3)


# A kill inside each ledger transition (run/ledger.py), at the statement that makes it.
_SET = r"sql:^UPDATE product_staging_table SET updated_date=\S+, "
LEDGER_POINTS = {
    "settle": _SET + r"(checksum=\S+, size=\S+, )?pending_status=:1",
    "supersede": _SET + r"superseded_by=:1",
    "commit": _SET + r".*rows_read=:1",
    "finish-first": _SET + r"status=\S+, pending_status=:1",
    "finish-last": _SET + r"status=\S+, pending_status=:4",
}


@pytest.mark.slow
@pytest.mark.parametrize("transition", list(LEDGER_POINTS))
def test_sigkill_inside_each_ledger_transition_then_rerun(
    env: Env, request: pytest.FixtureRequest, tmp_path: Path, transition: str
) -> None:
    ref = reference(env, request, tmp_path, night_with_a_correction)
    night_with_a_correction(env)

    killed = retail_etl(env, "run", "--json", kill=[LEDGER_POINTS[transition]])
    assert killed.returncode == -signal.SIGKILL, (transition, killed.returncode, killed.stderr)
    assert "killpoint: SIGKILL before SQL" in killed.stderr

    rerun = summary_of(retail_etl(env, "run", "--json"))
    assert rerun["outcome"] == "succeeded"
    assert full_state(env, tmp_path) == ref.state


def test_the_kill_at_the_marts_commit_comes_after_the_batchs_work(env: Env) -> None:
    """`marts/at-commit` dies at the COMMIT of the batch's transaction, not at an earlier
    one that only read a mart (the schema check when the run starts)."""
    env.land("a.csv", csv_text("1,1,Tea,2024-03-05,2,10.00,1,10.00"))

    killed = retail_etl(env, "run", "--json", kill=[MARTS_AT_COMMIT])

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [(r["file_name"], r["status"], r["pending_status"]) for r in ledger(env)] == [
        ("a.csv", "A", None)
    ]
    assert keys(env, env.settings.storage.lake_prefix + "sales/")  # the commit waits for them
    assert customer_mart(env) == {}
