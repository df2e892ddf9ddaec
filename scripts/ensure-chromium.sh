#!/usr/bin/env bash
# Make sure a headless browser is there for the report tests (tests/reports): Debian's
# chromium, installed when missing (as root, like CI). Without root it says what to do.
set -euo pipefail

for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done
if [ "$(id -u)" != "0" ]; then
  echo "chromium is missing: sudo apt-get install chromium (the browser tests skip without it)" >&2
  exit 0
fi
echo "installing chromium..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq chromium >/dev/null
