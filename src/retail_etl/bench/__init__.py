"""`retail-etl bench` and the scripts it measures the tool against.

- run.py: the variants, their schedule (taking turns), the checks and the results JSON;
- services.py: the production stack on this machine (moto's S3 server, a throwaway MariaDB
  database);
- report.py: the Markdown table and the SVG chart;
- textbook_spark.py, handwritten_duckdb.py: standalone scripts (no retail_etl import), run as
  their own processes: the tutorial Spark job and what a skilled engineer writes by hand.
"""

from retail_etl.bench.report import table
from retail_etl.bench.run import FLOOR_SQL, PROFILES, Options, run_bench, with_chain

__all__ = ["FLOOR_SQL", "PROFILES", "Options", "run_bench", "table", "with_chain"]
