"""The ledger's state machine (run/ledger.py): every transition it allows takes a file where
its table says, and every other one raises, leaving the row as it was. On both backends."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import helpers
import pytest
from conftest import Env, csv_text
from sqlalchemy import Connection, select

from retail_etl.errors import LedgerError
from retail_etl.run import ledger
from retail_etl.run.ledger import LedgerRow
from retail_etl.warehouse.schema import product_staging_table as t

Transition = Callable[[Connection, LedgerRow], Any]

TRANSITIONS: dict[str, Transition] = {
    "settle-E": lambda c, r: ledger.settle(c, r, "E", "err/x.csv", "broken"),
    "settle-D": lambda c, r: ledger.settle(c, r, "D", "arc/x.csv", "duplicate of y"),
    "commit": lambda c, r: ledger.commit(c, r, "arc/x.csv", "ab" * 32, (3, 2, 1), ["2024-03"]),
    "drop": lambda c, r: ledger.drop(c, r, "vanished"),
    "finish": lambda c, r: ledger.finish(c, r),
}
# state -> the transitions that start from it (the module docstring's table)
ALLOWED = {
    "registered": {"settle-E", "settle-D", "commit", "drop"},
    "settled": {"finish"},
    "committed": {"finish"},
    "finished": set(),
}


def state_of(env: Env, row: LedgerRow) -> tuple[str, str | None]:
    with env.warehouse.begin() as conn:
        found = conn.execute(select(t.c.status, t.c.pending_status).where(t.c.id == row.id)).one()
    return found.status, found.pending_status


def row_in(env: Env, state: str, name: str) -> LedgerRow:
    """A file brought to `state` through allowed transitions only."""
    with env.warehouse.begin() as conn:
        (row,) = ledger.register(conn, 1, "file://bucket/sales_data/", [(name, 10)])
        if state == "settled":
            row = ledger.settle(conn, row, "E", f"err/{name}", "broken")
        elif state == "committed":
            row = ledger.commit(conn, row, f"arc/{name}", "cd" * 32, (1, 1, 0), ["2024-03"])
        elif state == "finished":
            row = ledger.commit(conn, row, f"arc/{name}", "ef" * 32, (1, 1, 0), ["2024-03"])
            ledger.finish(conn, row)
    return row


@pytest.mark.parametrize("state", list(ALLOWED))
@pytest.mark.parametrize("transition", list(TRANSITIONS))
def test_each_transition_from_each_state(env: Env, state: str, transition: str) -> None:
    row = row_in(env, state, f"{state}-{transition}.csv")
    before = state_of(env, row)
    if transition in ALLOWED[state]:
        with env.warehouse.begin() as conn:
            after = TRANSITIONS[transition](conn, row)
        expected = {
            "settle-E": ("A", "E"),
            "settle-D": ("A", "D"),
            "commit": ("A", "I"),
            "drop": ("E", None),
            "finish": (row.pending_status, None),
        }[transition]
        assert state_of(env, row) == expected
        if isinstance(after, LedgerRow):  # what the caller carries on with
            assert after.pending_status == expected[1]
    else:
        with pytest.raises(LedgerError, match="cannot"), env.warehouse.begin() as conn:
            TRANSITIONS[transition](conn, row)
        assert state_of(env, row) == before


def test_settle_takes_only_quarantined_or_duplicate(env: Env) -> None:
    row = row_in(env, "registered", "x.csv")
    with pytest.raises(LedgerError, match="only E or D"), env.warehouse.begin() as conn:
        ledger.settle(conn, row, "I", "arc/x.csv", "no")
    assert state_of(env, row) == ("A", None)


@pytest.mark.parametrize("state", ["committed", "finished"])
def test_a_correction_supersedes_a_processed_file_once(env: Env, state: str) -> None:
    old = row_in(env, state, "day.csv")
    new = row_in(env, "registered", "day-again.csv")
    with env.warehouse.begin() as conn:
        ledger.supersede(conn, old.id, new.id)
    with pytest.raises(LedgerError, match="supersede"), env.warehouse.begin() as conn:
        ledger.supersede(conn, old.id, new.id)  # already replaced


@pytest.mark.parametrize("state", ["registered", "settled"])
def test_only_processed_files_can_be_superseded(env: Env, state: str) -> None:
    old = row_in(env, state, "day.csv")
    with pytest.raises(LedgerError, match="supersede"), env.warehouse.begin() as conn:
        ledger.supersede(conn, old.id, 999)


def test_no_module_but_the_ledger_writes_a_file_status(env: Env) -> None:
    """Every statement that writes product_staging_table during runs with every outcome (new,
    quarantined, duplicate, correction, set aside by the engine) comes from run/ledger.py."""
    import traceback

    from sqlalchemy import Engine, event

    writers: set[str] = set()

    def record(_conn, _cursor, statement: str, *_args: object) -> None:  # type: ignore[no-untyped-def]
        if re.match(r"\s*(INSERT INTO|UPDATE) product_staging_table", statement, re.I):
            ours = [f.filename for f in traceback.extract_stack() if "/retail_etl/" in f.filename]
            writers.add(ours[-1].split("/retail_etl/", 1)[1])

    event.listen(Engine, "before_cursor_execute", record)  # the run makes its own engine
    good = "1,1,Tea,2024-03-05,2,1.00,1,1.00"
    env.land("a.csv", csv_text(good))
    env.land("a-copy.csv", csv_text(good))
    env.land("broken.csv", "no header at all\n")
    env.land("crlf.csv", csv_text(good, "2,1,Tea,2024-03-05,2,1.00,1,1.00\r"))
    env.run()
    env.land("a-copy.csv", csv_text("1,1,Tea,2024-03-05,2,2.00,1,2.00"))  # a correction
    env.run()
    event.remove(Engine, "before_cursor_execute", record)
    assert {r["status"] for r in helpers.ledger(env)} == {"I", "E", "D"}
    assert any(r["superseded_by"] for r in helpers.ledger(env))
    assert writers == {"run/ledger.py"}


def test_a_failure_inside_drop_leaves_the_file_registered_for_the_next_run(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """drop (the object vanished after registration) fails after its UPDATE, inside the
    transaction: nothing of it stays, and the next run drops the file."""
    from retail_etl.run import triage

    key = env.land("gone.csv", csv_text("1,1,Tea,2024-03-05,2,1.00,1,1.00"))

    class Crash(Exception):
        pass

    original = ledger.drop

    def drop_then_crash(conn: Connection, row: LedgerRow, message: str) -> None:
        original(conn, row, message)
        raise Crash

    monkeypatch.setattr(triage.ledger, "drop", drop_then_crash)
    with pytest.raises(Crash):
        env.run(checkpoint=lambda stage: env.store.delete(key) if stage == "discovered" else None)
    assert [(r["status"], r["pending_status"]) for r in helpers.ledger(env)] == [("A", None)]

    monkeypatch.undo()
    assert env.run().outcome == "succeeded"
    ((status, message),) = [(r["status"], r["message"]) for r in helpers.ledger(env)]
    assert (status, message) == ("E", triage.VANISHED)
