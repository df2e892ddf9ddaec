"""How the DuckDB engine keeps its memory bounded: it splits a batch into queries (each
per-file scan holds its own read buffers until its query ends, so big files must not all share
one query: eight 1.9 GB files in one query ran out of the default 1 GB memory limit), and it
runs the mart queries in a smaller pool."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retail_etl.config import EngineSettings, RulesSettings
from retail_etl.engines.base import (
    MANDATORY_COLUMNS,
    BatchFile,
    Dimensions,
    Manifest,
    RowLimits,
)
from retail_etl.engines.duckdb_engine import (
    CSV_BYTES_PER_MEMORY_BYTE,
    FILES_PER_QUERY,
    MARTS_MEMORY,
    DuckDBEngine,
    _queries,
)


def _dims() -> Dimensions:
    return Dimensions(
        customer=pa.table({"customer_id": [1, 2], "customer_full_name": ["A B", "C D"],
                           "customer_address": ["x", "z"], "customer_phone_number": ["1", "2"]}),
        store=pa.table({"store_id": [1], "store_address": ["y"], "store_manager_name": ["M"]}),
        sales_team=pa.table({"sales_person_id": [1], "sales_person_full_name": ["S P"]}),
        product=pa.table({"product_name": ["Tea"], "product_id": [7]}),
    )  # fmt: skip


def _files(tmp_path: Path, sizes: list[int]) -> list[BatchFile]:
    files = []
    for index, size in enumerate(sizes):
        path = tmp_path / f"{index}.csv"
        with open(path, "wb") as handle:
            handle.truncate(size)  # sparse: the size without the bytes
        files.append(BatchFile(index, path.name, path, ("customer_id",)))
    return files


def test_big_files_get_a_query_each_and_small_ones_share(tmp_path: Path) -> None:
    budget = 1 << 20
    big = _files(tmp_path, [budget * 2, budget // 2 + 1, budget // 2, budget // 2])
    groups = _queries(big, budget)
    assert [[f.ledger_id for f in group] for group in groups] == [[0], [1], [2, 3]]

    small = _files(tmp_path, [1000] * (FILES_PER_QUERY * 2 + 1))
    groups = _queries(small, budget)
    assert [len(group) for group in groups] == [FILES_PER_QUERY, FILES_PER_QUERY, 1]
    assert [f for group in groups for f in group] == small  # every file, in order


@pytest.mark.parametrize(("configured", "limit"), [("1GB", 10**9), ("2GiB", 2 << 30)])
def test_a_query_reads_at_most_an_eighth_of_the_memory_limit_in_csv(
    tmp_path: Path, configured: str, limit: int
) -> None:
    """The lake's partitioned writer holds about 8 bytes per byte of CSV read when no partition
    fills up (a million customers over hundreds of stores): a bigger share spills."""
    assert CSV_BYTES_PER_MEMORY_BYTE == 1 / 8
    engine = DuckDBEngine(EngineSettings(work_dir=str(tmp_path / "work"), memory_limit=configured))
    eighth = limit // 8
    files = _files(tmp_path, [int(eighth * share) for share in (0.45, 0.45, 0.55, 0.55, 0.2)])
    groups = _queries(files, engine._bytes_per_query)
    assert [[f.ledger_id for f in group] for group in groups] == [[0, 1], [2], [3, 4]]
    engine.close()


@pytest.mark.parametrize(
    ("configured", "during_marts"), [("1GB", f"{MARTS_MEMORY >> 20}.0 MiB"), ("300MB", "286.1 MiB")]
)
def test_mart_queries_run_under_the_smaller_of_the_limit_and_marts_memory(
    tmp_path: Path, configured: str, during_marts: str
) -> None:
    day = tmp_path / "day.csv"
    day.write_text(",".join(MANDATORY_COLUMNS) + "\n1,1,Tea,2024-03-30,1,2.00,1,2.00\n")
    dims = _dims()
    engine = DuckDBEngine(EngineSettings(work_dir=str(tmp_path / "work"), memory_limit=configured))
    ((configured_shown,),) = engine.con.execute("SELECT current_setting('memory_limit')").fetchall()
    limits: list[str] = []  # the limit as each mart query starts
    connection = engine.con

    class Recording:
        def __getattr__(self, name: str) -> Any:
            return getattr(connection, name)

        def sql(self, query: str) -> Any:
            if "_data_mart contributions" in query:
                shown = connection.execute("SELECT current_setting('memory_limit')").fetchall()
                limits.append(shown[0][0])
            return connection.sql(query)

    engine.con = Recording()  # type: ignore[assignment]
    result = engine.process(
        [BatchFile(1, "day.csv", day, MANDATORY_COLUMNS)],
        dims,
        RowLimits.of(RulesSettings(), date.today()),
        1,
        tmp_path / "out",
    )
    assert result.customer_contributions.num_rows == 1
    # the batch's two mart queries, and the two over the files its corrections replace
    assert limits == [during_marts] * 4
    # the next batch's lake pass has the configured limit again
    assert engine.con.execute("SELECT current_setting('memory_limit')").fetchall() == [
        (configured_shown,)
    ]
    engine.close()


def _comparable(manifest: Manifest, out: Path) -> dict[str, Any]:
    """A manifest with its paths below out, and every lake part's rows."""
    return {
        "lake": sorted(
            (str(part.path.relative_to(out)), pq.read_table(part.path).to_pylist())
            for part in manifest.lake_parts
        ),
        "rejected": {
            ledger_id: [pq.read_table(path).to_pylist() for path in paths]
            for ledger_id, paths in manifest.rejected_parts.items()
        },
        "malformed": manifest.malformed.to_pylist(),
        "counts": dict(manifest.counts),
        "rules": dict(manifest.rules),
        "marts": [
            table.sort_by([(name, "ascending") for name in table.column_names]).to_pylist()
            for table in (
                manifest.customer_contributions,
                manifest.sales_team_contributions,
                manifest.daily_sales_person,
                manifest.daily_product,
            )
        ],
    }


def test_files_read_ahead_make_the_manifest_of_the_batch_read_at_once(tmp_path: Path) -> None:
    """The run reads each file as it downloads, before triage says which make the batch: what
    was read of a file left out (a duplicate) is not in the manifest, and a file read in an
    earlier part keeps its malformed lines and rejected rows."""
    header = ",".join(MANDATORY_COLUMNS)
    texts = {
        1: f"{header}\n1,1,Tea,2024-03-30,1,2.00,1,2.00\n2,1,Tea,2024-03-29,1,2.00,x,2.00\n"
        '1,1,"Tea,2024-03-30\n',
        2: f"{header}\n2,1,Tea,2024-03-30,1,3.00,2,6.00\n1,1,Tea,2024-04-01,1,1.00,1,1.00\n",
        3: f"{header}\n1,1,Tea,2024-03-30,1,5.00,1,5.00\n9,1,Tea,2024-03-30,1,5.00,1,5.00\n"
        "1,1,Tea\n",
    }
    files = []
    for ledger_id, text in texts.items():
        path = tmp_path / f"{ledger_id}.csv"
        path.write_text(text)
        files.append(BatchFile(ledger_id, f"day-{ledger_id}.csv", path, MANDATORY_COLUMNS))
    dims, limits = _dims(), RowLimits.of(RulesSettings(), date.today())
    settings = EngineSettings(work_dir=str(tmp_path / "work"))
    batch = [files[0], files[1]]

    at_once = DuckDBEngine(settings)
    expected = at_once.process(batch, dims, limits, 7, tmp_path / "at-once")
    at_once.close()
    ahead = DuckDBEngine(settings)
    ahead.read([files[0]], dims, limits, 7, tmp_path / "ahead")
    ahead.read([files[2]], dims, limits, 7, tmp_path / "ahead")  # triage leaves it out
    lake_pass, read_in_process = ahead._lake_pass, []

    def recording(rows_dir: Path, files: list[BatchFile]) -> None:
        read_in_process.extend(item.ledger_id for item in files)
        lake_pass(rows_dir, files)

    ahead._lake_pass = recording  # type: ignore[method-assign]
    got = ahead.process(batch, dims, limits, 7, tmp_path / "ahead")
    ahead.close()
    assert read_in_process == [2]  # file 1 was read ahead: not read again

    assert _comparable(got, tmp_path / "ahead") == _comparable(expected, tmp_path / "at-once")
    assert set(got.counts) == {1, 2} and got.counts[1].rows_rejected == 2  # x and the quote
    # file 3's malformed line 4 was read too, but file 3 is not in the batch
    assert [(row["ledger_id"], row["line"]) for row in got.malformed.to_pylist()] == [(1, 4)]
    assert not list((tmp_path / "ahead").glob("**/_ledger=3"))


def test_files_read_ahead_for_another_batch_are_not_in_the_manifest(tmp_path: Path) -> None:
    """process given another run id (or folder) than the reads starts over."""
    header = ",".join(MANDATORY_COLUMNS)
    path = tmp_path / "1.csv"
    path.write_text(f"{header}\n1,1,Tea,2024-03-30,1,2.00,1,2.00\n")
    day = BatchFile(1, "day.csv", path, MANDATORY_COLUMNS)
    dims, limits = _dims(), RowLimits.of(RulesSettings(), date.today())
    engine = DuckDBEngine(EngineSettings(work_dir=str(tmp_path / "work")))
    engine.read([day], dims, limits, 7, tmp_path / "out")
    got = engine.process([day], dims, limits, 8, tmp_path / "out")
    engine.close()
    (part,) = got.lake_parts
    assert pq.read_table(part.path)["run_id"].to_pylist() == [8]
