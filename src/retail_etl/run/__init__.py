"""`retail-etl run`: the stages of a run in the order they run (pipeline.py), the file ledger
that owns every status (ledger.py) and the run lock around them (lifecycle.py)."""

from retail_etl.run.pipeline import run
from retail_etl.run.summary import FileOutcome, RunSummary

__all__ = ["FileOutcome", "RunSummary", "run"]
