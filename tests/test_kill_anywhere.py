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
from chaos import Reference, full_state, land_dataset, reference, retail_etl, summary_of
from conftest import Env

Spec = Callable[[Reference], str]


def at(spec: str) -> Spec:
    return lambda _ref: spec


def engine_at(fraction: float) -> Spec:
    """While the engine works: a share of the reference run's enrich time after validation."""
    return lambda ref: f"timer:validated:{ref.summary['stage_seconds']['enrich'] * fraction:.3f}"


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
    "marts/at-commit": at("commit:sales_team_data_mart:1"),
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
