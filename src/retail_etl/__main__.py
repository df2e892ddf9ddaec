import os
import sys

if not __package__:
    # Run as a script (spark-submit's `.../retail_etl/__main__.py`): Python put this folder
    # first on sys.path, where retail_etl/secrets.py would shadow the standard library's
    # `secrets` (DuckDB's relations name themselves with secrets.token_hex).
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]

from retail_etl.cli import main  # noqa: E402

main()
