#!/usr/bin/env bash
# Screenshot of a run's HTML report (fedops report RUN_DIR), for the README.
# usage: docs/screenshot_report.sh RUN_DIR OUT.png [WIDTHxHEIGHT, default 1280x2400]
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 RUN_DIR OUT.png [WIDTHxHEIGHT]" >&2
    exit 2
fi
run_dir=$1
out=$2
size=${3:-1280x2400}

browser=""
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        browser=$name
        break
    fi
done
if [[ -z $browser ]]; then
    echo "$0: no chromium found (Debian/Ubuntu: apt-get install chromium)" >&2
    exit 1
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import fedops.reporting.report' 2>/dev/null; then
    echo "$0: $python cannot import fedops.reporting.report (activate fedops's venv or set PYTHON)" >&2
    exit 1
fi
# (re)render the report: the same code as `fedops report RUN_DIR`
report=$("$python" -c 'import sys; from pathlib import Path
from fedops.reporting.report import render_report
print(render_report(Path(sys.argv[1])))' "$run_dir")

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size="${size/x/,}" \
    --screenshot="$(realpath -m "$out")" "file://$(realpath "$report")" 2>/dev/null
echo "$out"
