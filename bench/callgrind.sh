#!/usr/bin/env bash
# Instruction count of the scanner + seed-only aggregation on a fixed 20,000-row sample, under
# callgrind: deterministic, so a regression shows without a quiet machine.
# Usage: bench/callgrind.sh [--update]   (--update rewrites bench/callgrind-baseline.txt)
# Fails when the count is more than 10% above the committed baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --quiet -p floodwatch-scan --example callgrind_scan
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Count only inside aggregate_lines: generating the sample is not the parser's cost.
valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='floodwatch_scan::lines::aggregate_lines*' \
  target/release/examples/callgrind_scan >&2 2>/dev/null
count=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }')
echo "instructions: $count ($(awk -v c="$count" 'BEGIN { printf "%.0f", c / 20000 }') per row)"
baseline_file=bench/callgrind-baseline.txt
if [ "${1:-}" = "--update" ] || [ ! -s "$baseline_file" ]; then
  echo "$count" >"$baseline_file"
  echo "baseline written to $baseline_file"
  exit 0
fi
base=$(head -n1 "$baseline_file")
awk -v c="$count" -v b="$base" 'BEGIN {
  r = c / b; printf "baseline: %d (%+.1f%%)\n", b, (r - 1) * 100
  if (r > 1.10) { print "FAIL: more than 10% above the baseline"; exit 1 }
}'
