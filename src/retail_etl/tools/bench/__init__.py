"""`retail-etl bench` and the scripts it measures the tool against.

- run.py: which variants run (or why not), their schedule (taking turns), the checks and the
  results JSON;
- variants.py: the profiles, and one attempt of each variant, as its own process;
- services.py: the production stack on this machine (moto's S3 server, a throwaway MariaDB
  database);
- report.py: the Markdown table and the SVG chart;
- textbook_spark.py, handwritten_duckdb.py: standalone scripts (no retail_etl import), run as
  their own processes: the tutorial Spark job and what a skilled engineer writes by hand.
"""

from retail_etl.tools.bench.report import table
from retail_etl.tools.bench.run import Options, run_bench, with_chain
from retail_etl.tools.bench.variants import FLOOR_SQL, PROFILES

__all__ = ["FLOOR_SQL", "PROFILES", "Options", "run_bench", "table", "with_chain"]
