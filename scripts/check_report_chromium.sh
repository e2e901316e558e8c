#!/usr/bin/env bash
# Check that a `nas report` page renders in headless Chromium, and take a screenshot of it.
#
#   scripts/check_report_chromium.sh RUN_DIR/report/report.html [SCREENSHOT.png]
#
# 1. Loads the page with --dump-dom and reads the marker the page sets once loaded,
#    <body data-images-ok="k/n">: every embedded figure must have decoded (k == n, n > 0).
# 2. Fails on JavaScript errors or failed resource loads in Chromium's console log.
# 3. Takes a 1280x2400 screenshot (default docs/report_screenshot.png).
# Needs Debian's chromium (apt-get install -y chromium). Runs offline: the background-networking
# flags keep Chromium from dialling out, and the page itself fetches nothing.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 REPORT.html [SCREENSHOT.png]" >&2
  exit 2
fi
html=$(realpath "$1")
shot=$(realpath -m "${2:-docs/report_screenshot.png}")
[ -f "$html" ] || { echo "error: $1: no such report file" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "error: chromium not found (apt-get install -y chromium)" >&2; exit 2; }

flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --disable-sync --no-first-run --disable-quic --hide-scrollbars)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1 + 2: the DOM after load, with the console log on stderr
"$browser" "${flags[@]}" --user-data-dir="$work/profile1" --enable-logging=stderr --v=0 \
  --virtual-time-budget=10000 --dump-dom "file://$html" >"$work/dom.html" 2>"$work/console.log" || {
  echo "error: chromium failed to load $html" >&2; tail -5 "$work/console.log" >&2; exit 1; }
marker=$(grep -o 'data-images-ok="[0-9]*/[0-9]*"' "$work/dom.html" | head -1 | sed 's/.*="\(.*\)"/\1/' || true)
if [ -z "$marker" ]; then
  echo "error: the page did not finish loading (no data-images-ok marker)" >&2
  exit 1
fi
loaded=${marker%/*}
total=${marker#*/}
echo "images ok: $loaded/$total"
if [ "$total" -eq 0 ] || [ "$loaded" -ne "$total" ]; then
  echo "error: only $loaded of $total figures decoded" >&2
  exit 1
fi
if grep -E "Uncaught|CONSOLE.*[Ee]rror|Failed to load resource|net::ERR_" "$work/console.log" >"$work/errors.txt"; then
  echo "error: the page logged errors in Chromium:" >&2
  head -5 "$work/errors.txt" >&2
  exit 1
fi
echo "console: no errors"

# 3: the screenshot
mkdir -p "$(dirname "$shot")"
"$browser" "${flags[@]}" --user-data-dir="$work/profile2" --window-size=1280,2400 \
  --screenshot="$shot" "file://$html" >/dev/null 2>"$work/shot.log" || {
  echo "error: chromium could not take the screenshot" >&2; tail -5 "$work/shot.log" >&2; exit 1; }
[ -s "$shot" ] || { echo "error: empty screenshot $shot" >&2; exit 1; }
echo "screenshot: $shot ($(stat -c %s "$shot") bytes)"
