#!/usr/bin/env bash
# Screenshot an HTML run report (depthseg-fas preprocess --html-report) with headless Chromium.
#
#   scripts/screenshot_report.sh REPORT.html OUT.png [WIDTH,HEIGHT]     (default 1200,2000)
#
# Prints the PNG's path. Chromium: $CHROMIUM, else chromium / chromium-browser / google-chrome on
# PATH (Debian: apt-get install -y chromium). It runs offline with a throw-away profile: no
# network services, no sync, no GPU. Exit codes: 2 bad arguments, 3 no Chromium, 1 no screenshot.
set -euo pipefail

usage() { echo "usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
report=$1
out=$2
size=${3:-1200,2000}
[[ $size =~ ^[0-9]+,[0-9]+$ ]] || { echo "error: size must be WIDTH,HEIGHT, got '$size'" >&2; exit 2; }
[ -f "$report" ] || { echo "error: no such report: $report" >&2; exit 2; }

chrome=${CHROMIUM:-}
if [ -z "$chrome" ]; then
  for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then chrome=$(command -v "$c"); break; fi
  done
fi
[ -n "$chrome" ] || { echo "error: Chromium not found (apt-get install -y chromium, or set CHROMIUM)" >&2; exit 3; }

report_abs=$(realpath "$report")
out_abs=$(realpath -m "$out")
mkdir -p "$(dirname "$out_abs")"
rm -f "$out_abs"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# file:// URL with the path percent-encoded (spaces and other specials in the report's path)
url="file://$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$report_abs")"

timeout 120 "$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --screenshot="$out_abs" --window-size="$size" \
  "$url" >"$profile/chromium.log" 2>&1 || true
if [ ! -s "$out_abs" ]; then
  echo "error: Chromium wrote no screenshot of $report" >&2
  tail -20 "$profile/chromium.log" >&2
  exit 1
fi
echo "$out_abs"
