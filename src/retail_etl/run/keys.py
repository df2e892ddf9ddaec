"""Where a file's objects go in the bucket: every key derived from a ledger row, in one place.
Keys are fixed by the registration (run id, ledger id), so a resumed run rewrites the same
objects instead of adding new ones, and nothing in the archive or error prefix is overwritten."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from retail_etl.run.ledger import LedgerRow
from retail_etl.storage import fit_key


def archive_key(prefix: str, row: LedgerRow) -> str:
    """The archive (or error) key of a landed object: unique per registration."""
    return fit_key(f"{prefix}run-{row.run_id}/", row.file_name)


def rejected_key(error_prefix: str, run_id: int, file_name: str) -> str:
    """Where a file's rejected rows go (SPEC section 4): its name below landing, a `.csv`
    name kept as it is, `.csv.gz` becoming `.csv`, `.csv` appended to anything else; the
    key shortened when it would pass the store's limit. rejected_keys says where they go when
    another file of the run needs that key."""
    return fit_key(f"{error_prefix}rejected/{run_id}/", _rejected_name(file_name))


def _rejected_name(file_name: str) -> str:
    lower = file_name.lower()
    if lower.endswith(".csv.gz"):
        return file_name[: -len(".gz")]
    if not lower.endswith(".csv"):
        return file_name + ".csv"
    return file_name


def rejected_keys(error_prefix: str, run_id: int, names: Mapping[int, str]) -> dict[int, str]:
    """The rejected-rows key of every file a run registered (ledger id -> its name below
    landing), all distinct and none a folder of another, so that any store holds them all and
    no file's rows take another's place. A key equal to its file's name (a `.csv`) is
    rejected_key's: landing holds those names, so the store holds those keys. A key the name
    was changed into (`x.csv` for `x.csv.gz`) that another key equals, lies below or holds
    below it, gives way to `<name>.csv` (`x.csv.gz.csv`), and, when that clashes too, to
    the name in a folder of the file's own, `rejected/<run id>-<ledger id>/`, which no
    other key reaches. Fixed by the run's registrations: a resumed run finds the same keys."""
    run_folder = f"{error_prefix}rejected/{run_id}/"
    wanted = {i: rejected_key(error_prefix, run_id, name) for i, name in names.items()}
    taken = Counter(wanted.values())
    folders = {key[: at + 1] for key in taken for at, c in enumerate(key) if c == "/"}

    def clashes(key: str, own: int) -> bool:
        if taken[key] > (wanted[own] == key):  # another file's key
            return True
        if key + "/" in folders:  # another key lies below it
            return True
        return any(c == "/" and key[:at] in taken for at, c in enumerate(key))  # or above

    keys = {}
    for i, name in names.items():
        key = wanted[i]
        if key != run_folder + name and clashes(key, i):
            key = fit_key(run_folder, name + ".csv")
            if clashes(key, i):
                key = fit_key(f"{error_prefix}rejected/{run_id}-{i}/", _rejected_name(name))
        keys[i] = key
    return keys


def lake_key(lake_prefix: str, sales_month: str, store_id: int, ledger_id: int, index: int) -> str:
    """A lake object of valid rows: one file's rows of one month and store, part `index`."""
    return (
        f"{lake_prefix}sales/sales_month={sales_month}/store_id={store_id}/"
        f"ledger-{ledger_id}-{index}.parquet"
    )
