"""Refresh docs/report-monthly.png: run `retail-etl demo` in a scratch folder and take a
full-page screenshot of its monthly report in headless Chromium (as the browser test does).

    .venv/bin/python scripts/docs_screenshot.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reports"))

from headless import Chromium, find_chromium  # noqa: E402


def main() -> None:
    binary = find_chromium()
    if binary is None:
        sys.exit("chromium is not installed (bash scripts/ensure-chromium.sh)")
    with tempfile.TemporaryDirectory(prefix="retail-etl-docs-") as tmp:
        demo = subprocess.run(
            [sys.executable, "-m", "retail_etl", "demo"],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=True,
        )
        match = re.search(r"monthly report:\s+(\S+\.html)", demo.stdout)
        if not match:
            sys.exit(f"no report path in the demo's output:\n{demo.stdout}")
        browser = Chromium(binary, Path(tmp) / "chromium-profile")
        try:
            browser.open(Path(match.group(1)).as_uri(), width=1280, height=800)
            if browser.problems():
                sys.exit(f"the report has problems: {browser.problems()}")
            out = ROOT / "docs" / "report-monthly.png"
            browser.screenshot(out)
        finally:
            browser.close()
    print(out)


if __name__ == "__main__":
    main()
