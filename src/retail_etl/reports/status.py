"""`retail-etl status`: the ledger and the recent runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from retail_etl.warehouse import Warehouse
from retail_etl.warehouse.schema import product_staging_table as staging
from retail_etl.warehouse.schema import rule_count, run_log


def collect(warehouse: Warehouse, runs: int = 10, files: int = 20) -> dict[str, Any]:
    with warehouse.begin() as conn:
        by_status: dict[str, int] = dict(
            conn.execute(
                select(staging.c.status, func.count()).group_by(staging.c.status)
            ).fetchall()
        )
        recent_runs = [
            dict(r._mapping)
            for r in conn.execute(select(run_log).order_by(run_log.c.run_id.desc()).limit(runs))
        ]
        ids = [r["run_id"] for r in recent_runs]
        rules: dict[int, dict[str, int]] = {}
        for run_id, rule, n in conn.execute(
            select(rule_count.c.run_id, rule_count.c.rule, func.sum(rule_count.c.occurrences))
            .where(rule_count.c.run_id.in_(ids))
            .group_by(rule_count.c.run_id, rule_count.c.rule)
            .order_by(rule_count.c.run_id, func.sum(rule_count.c.occurrences).desc())
        ):
            rules.setdefault(run_id, {})[rule] = int(n)
        for r in recent_runs:
            r["rules"] = rules.get(r["run_id"], {})  # rows (files) per rule broken, most first
        recent_files = [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    staging.c.id,
                    staging.c.file_name,
                    staging.c.status,
                    staging.c.rows_read,
                    staging.c.rows_valid,
                    staging.c.rows_rejected,
                    staging.c.run_id,
                    staging.c.updated_date,
                    staging.c.message,
                )
                .order_by(staging.c.id.desc())
                .limit(files)
            )
        ]
    return {
        "warehouse": warehouse.display_url,
        "files_by_status": {s: by_status.get(s, 0) for s in ("A", "I", "E", "D")},
        "recent_runs": recent_runs,
        "recent_files": recent_files,
    }
