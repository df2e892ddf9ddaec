"""Data quality a team can watch (issue 16): rows per rule, the quality gate, --strict, the
metrics file and the dry run, on every backend."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from chaos import retail_etl
from conftest import Env, csv_text
from helpers import customer_mart, keys, ledger, object_bytes
from prometheus_client.parser import text_string_to_metric_families
from quality_cases import (
    GOOD,
    KNOWN_BAD,
    KNOWN_BAD_RULES,
    NOT_UTF8,
    dry_run_then_run,
    files_by_name,
    land_a_night,
    rejecting,
)
from sqlalchemy import select

from retail_etl.reports import status
from retail_etl.warehouse.schema import lake_object, rule_count


def test_rows_per_rule_per_file_and_run_and_in_the_warehouse(env: Env) -> None:
    env.land("2024-03-01/bad.csv", KNOWN_BAD)
    env.land("2024-03-01/latin1.csv", NOT_UTF8)
    summary = env.run()

    files = files_by_name(summary)
    bad = files["2024-03-01/bad.csv"]
    assert (bad["status"], bad["rows_read"], bad["rows_valid"], bad["rows_rejected"]) == (
        "I",
        6,
        2,
        4,
    )
    assert bad["rules"] == KNOWN_BAD_RULES
    assert files["2024-03-01/latin1.csv"]["rules"] == {"file: not UTF-8 text": 1}
    assert summary.rules == {**KNOWN_BAD_RULES, "file: not UTF-8 text": 1}

    with env.warehouse.begin() as conn:
        stored = conn.execute(
            select(rule_count.c.file_name, rule_count.c.rule, rule_count.c.occurrences).where(
                rule_count.c.run_id == summary.run_id
            )
        ).fetchall()
    assert sorted(map(tuple, stored)) == sorted(
        [("2024-03-01/bad.csv", rule, n) for rule, n in KNOWN_BAD_RULES.items()]
        + [("2024-03-01/latin1.csv", "file: not UTF-8 text", 1)]
    )
    assert status.collect(env.warehouse)["recent_runs"][0]["rules"] == summary.rules


def test_the_gate_quarantines_a_file_above_the_share_and_loads_one_at_or_below(
    env: Env, tmp_path: Path
) -> None:
    gated = env.with_settings(rules={"max_rejected_share": 0.5})
    above = rejecting(bad=6, good=5)  # 54.5%
    env.land("2024-03-03/above.csv", above)
    env.land("2024-03-03/at.csv", rejecting(bad=5, good=5, day=4))  # 50%: not above
    env.land("2024-03-03/below.csv", rejecting(bad=4, good=6, day=5))  # 40%
    summary = gated.run()

    files = files_by_name(summary)
    assert {name: f["status"] for name, f in files.items()} == {
        "2024-03-03/above.csv": "E",
        "2024-03-03/at.csv": "I",
        "2024-03-03/below.csv": "I",
    }
    message = files["2024-03-03/above.csv"]["message"]
    assert message == (
        "rejected share above rules.max_rejected_share: 54.55% of its rows (6 of 11) were "
        "rejected, more than 50.00%; most frequent: quantity is not an integer (6)"
    )
    assert files["2024-03-03/above.csv"]["rules"] == {
        "quantity is not an integer": 6,
        "file: rejected share above rules.max_rejected_share": 1,
    }
    # quarantined whole: byte for byte in the error prefix, nothing in the lake or the marts
    (moved,) = [k for k in keys(env, env.settings.storage.error_prefix) if "above" in k]
    assert object_bytes(env, moved, tmp_path) == above.encode()
    above_id = files["2024-03-03/above.csv"]["id"]
    with env.warehouse.begin() as conn:
        lake_ids = set(conn.execute(select(lake_object.c.ledger_id)).scalars())
    assert above_id not in lake_ids and lake_ids
    assert customer_mart(env) == {(2, "2024-03-01"): Decimal("13.09")}  # 11 x 1.19


def test_strict_exits_9_on_a_rejected_row_or_quarantined_file_and_0_otherwise(env: Env) -> None:
    env.land("2024-03-01/good.csv", csv_text(GOOD))
    assert retail_etl(env, "run", "--strict").returncode == 0
    env.land("2024-03-02/one-bad-row.csv", rejecting(bad=1, good=3))
    result = retail_etl(env, "run", "--strict", "--json")
    assert result.returncode == 9, result.stderr
    assert "--strict: 0 file(s) quarantined, 1 row(s) rejected" in result.stderr
    env.land("2024-03-03/latin1.csv", NOT_UTF8)
    assert retail_etl(env, "run", "--strict").returncode == 9
    env.land("2024-03-04/latin1-again.csv", NOT_UTF8 + b"\n")
    assert retail_etl(env, "run").returncode == 0  # without --strict: as before


def test_the_metrics_file_parses_and_matches_the_run(env: Env, tmp_path: Path) -> None:
    env.land("2024-03-01/bad.csv", KNOWN_BAD)
    env.land("2024-03-01/latin1.csv", NOT_UTF8)
    metrics = tmp_path / "textfile" / "retail_etl.prom"
    summary = env.run(metrics_file=metrics)

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.read_text())
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[("retail_etl_" + name, tuple(sorted(labels.items())))]

    assert value("last_run_success") == 1
    started = value("last_run_start_timestamp_seconds")
    assert value("last_success_timestamp_seconds") >= int(started)  # MySQL: whole seconds
    assert value("last_run_finish_timestamp_seconds") >= value("last_run_start_timestamp_seconds")
    assert value("last_run_duration_seconds") == summary.seconds
    for stage, seconds in summary.stage_seconds.items():
        assert value("last_run_stage_duration_seconds", stage=stage) == seconds
    assert value("last_run_files", outcome="processed") == summary.files_processed == 1
    assert value("last_run_files", outcome="quarantined") == summary.files_quarantined == 1
    assert value("last_run_rows", kind="valid") == summary.rows_valid == 2
    assert value("last_run_rows", kind="rejected") == summary.rows_rejected == 4
    for rule, n in summary.rules.items():
        assert value("last_run_rule_violations", rule=rule) == n
    for stage, moved in summary.stage_bytes.items():
        assert value("last_run_stage_transfer_bytes", stage=stage) == moved
    assert summary.stage_bytes["fetch"] == len(KNOWN_BAD) + len(NOT_UTF8)
    assert summary.stage_mb_per_s["fetch"] >= 0 and summary.stage_bytes["publish"] > 0
    # both files moved out of landing (to the archive and to the error prefix)
    assert summary.stage_bytes["archive"] == len(KNOWN_BAD) + len(NOT_UTF8)
    for transfer in ("publish", "archive"):  # over their own seconds, not their stage's
        seconds = summary.transfer_seconds[transfer]
        rate = summary.stage_bytes[transfer] / 1e6 / seconds
        assert summary.stage_mb_per_s[transfer] == round(rate, 1)
    assert value("last_run_lake_objects") == summary.lake_objects > 0
    assert value("last_run_lake_bytes") == summary.lake_bytes > 0
    assert value("oldest_pending_file_age_seconds") == 0
    assert list(metrics.parent.iterdir()) == [metrics]  # written by rename: no temporary left


def test_a_failed_run_still_writes_its_metrics(embedded: Env, tmp_path: Path) -> None:
    embedded.land("2024-03-01/good.csv", csv_text(GOOD))
    metrics = tmp_path / "retail_etl.prom"
    embedded.run(metrics_file=metrics)
    first = metrics.read_text()
    embedded.land("2024-03-02/good.csv", csv_text(GOOD.replace("03-01", "03-02")))
    with embedded.warehouse.begin() as conn:  # every sale's customer is gone: the run stops
        conn.exec_driver_sql("DELETE FROM customer")
    result = retail_etl(embedded, "run", "--metrics-file", str(metrics))
    assert result.returncode == 4
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(metrics.read_text())
        for s in family.samples
    }
    assert samples["retail_etl_last_run_success"] == 0
    assert samples["retail_etl_oldest_pending_file_age_seconds"] > 0
    # the last success is still the first run's
    (last_success,) = [
        line for line in first.splitlines() if line.startswith("retail_etl_last_success_")
    ]
    assert samples["retail_etl_last_success_timestamp_seconds"] == float(last_success.split()[1])


def test_a_dry_run_changes_nothing_and_predicts_the_run_that_follows(
    env: Env, tmp_path: Path
) -> None:
    env.land("2024-03-01/a.csv", csv_text(GOOD, "2,1,Rolled Oats 1kg,2024-03-02,3,3.49,2,6.98"))
    env.run()
    land_a_night(env)
    env.land("2024-03-03/gated-too.csv", rejecting(bad=3, good=1))  # gated.csv's bytes
    odd = [("2024-03-04/" + "x" * 19, "E")]
    if env.name == "embedded":  # a name longer than the ledger holds (S3 refuses such keys)
        env.land("2024-03-04/" + "/".join(["x" * 200] * 6) + ".csv", csv_text(GOOD))
    else:
        odd = []
    predicted, actual = dry_run_then_run(env, tmp_path)
    assert predicted.outcome == "dry run"
    statuses = sorted((f.file_name[:30], f.status) for f in actual.files)
    assert statuses == sorted(
        [
            ("2024-03-01/a.csv", "I"),  # a correction
            ("2024-03-02/b-again.csv", "I"),
            ("2024-03-02/b.csv", "D"),
            ("2024-03-02/latin1.csv", "E"),
            ("2024-03-03/gated.csv", "E"),
            ("2024-03-03/gated-too.csv", "E"),  # a copy shares the fate of its original
            *odd,
        ]
    )
    assert actual.files_corrected == 1
    assert actual.mart_rows_changed == {
        "2024-03": {"customers_data_mart": 2, "sales_team_data_mart": 2},
        "2024-04": {"customers_data_mart": 1, "sales_team_data_mart": 1},
    }


def test_dry_run_from_the_command_line(embedded: Env) -> None:
    embedded.land("2024-03-01/bad.csv", KNOWN_BAD)
    result = retail_etl(embedded, "run", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["outcome"], summary["rows_valid"], summary["rules"]) == (
        "dry run",
        2,
        KNOWN_BAD_RULES,
    )
    assert ledger(embedded) == []  # nothing registered
    assert retail_etl(embedded, "run", "--dry-run", "--strict").returncode == 9
    assert embedded.run().rows_valid == 2


def test_a_metrics_file_that_cannot_be_written_is_a_work_folder_error(embedded: Env) -> None:
    embedded.land("2024-03-01/good.csv", csv_text(GOOD))
    (embedded.root / "not-a-folder").write_text("")
    result = retail_etl(embedded, "run", "--metrics-file", "not-a-folder/retail_etl.prom")
    assert result.returncode == 7
    assert "metrics file not-a-folder/retail_etl.prom" in result.stderr
    assert ledger(embedded)[0]["status"] == "I"  # the run itself is done
