"""How the DuckDB engine splits a batch into queries: each per-file scan holds its own read
buffers until its query ends, so big files must not all share one query (eight 1.9 GB files
in one query ran out of the default 1 GB memory limit)."""

from __future__ import annotations

from pathlib import Path

from retail_etl.engines.base import BatchFile
from retail_etl.engines.duckdb_engine import BYTES_PER_QUERY, FILES_PER_QUERY, _queries


def _files(tmp_path: Path, sizes: list[int]) -> list[BatchFile]:
    files = []
    for index, size in enumerate(sizes):
        path = tmp_path / f"{index}.csv"
        with open(path, "wb") as handle:
            handle.truncate(size)  # sparse: the size without the bytes
        files.append(BatchFile(index, path.name, path, ("customer_id",)))
    return files


def test_big_files_get_a_query_each_and_small_ones_share(tmp_path: Path) -> None:
    big = _files(tmp_path, [BYTES_PER_QUERY * 2, BYTES_PER_QUERY // 2 + 1, BYTES_PER_QUERY // 2])
    assert [[f.ledger_id for f in group] for group in _queries(big)] == [[0], [1], [2]]

    small = _files(tmp_path, [1000] * (FILES_PER_QUERY * 2 + 1))
    assert [len(group) for group in _queries(small)] == [FILES_PER_QUERY, FILES_PER_QUERY, 1]
    assert [f for group in _queries(small) for f in group] == small  # every file, in order
