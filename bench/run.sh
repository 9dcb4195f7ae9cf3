#!/usr/bin/env bash
# floodwatch vs DuckDB on the seed rule: same file, same thread count, same alert rows.
# Usage: bench/run.sh [--tiny] [--runs N] [--threads N] [--skip-2x]
#   --tiny     small dataset, one run: only checks that everything works and the rows match (CI)
#   --runs N   timed runs per tool (default 5; medians are reported; the cache is warm)
#   --threads  threads for both tools (default: all cores)
#   --skip-2x  skip the two 2x-larger files (denser, longer) used to show that peak memory does
#              not grow with input
#   --cache reread|as-is  reread (default): evict the input from the page cache and read it back
#              before timing, so every run sees a file as read from disk; as-is: leave the cache
#              as it is (e.g. a file just written in small pieces)
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
cache=reread
tiny=0
skip2x=0
threads=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) tiny=1; runs=1; shift ;;
    --runs) runs=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --skip-2x) skip2x=1; shift ;;
    --cache) cache=$2; shift 2
      case "$cache" in reread|as-is) ;; *) echo "--cache takes reread or as-is" >&2; exit 2 ;; esac ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

say() { printf '%s\n' "$*" >&2; }

if [ ! -x /usr/bin/time ]; then
  say "installing GNU time (for peak RSS)"
  # A fresh machine may have no package lists yet: update once if the first try fails.
  (apt-get install -y time >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y time >/dev/null 2>&1; } \
    || sudo apt-get install -y time >/dev/null 2>&1) || {
    say "need /usr/bin/time (apt-get install time)"; exit 1; }
fi

say "== build"
cargo build --release --quiet
fw=target/release/floodwatch

mkdir -p bench/data
if [ "$tiny" = 1 ]; then scale=0.01; else scale=1.0; fi
data=bench/data/bench-$scale.ndjson
if [ ! -s "$data" ]; then
  say "== generating $data (floodwatch simulate --profile bench --scale $scale)"
  "$fw" simulate --profile bench --scale "$scale" --out "$data"
fi

say "== DuckDB (PyPI) in bench/.venv"
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
fi
bench/.venv/bin/python -c 'import duckdb' 2>/dev/null || bench/.venv/bin/pip install --quiet duckdb
duck_version=$(bench/.venv/bin/python -c 'import duckdb; print(duckdb.__version__)')

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# once NAME OUTFILE CMD...: runs CMD once; appends its wall seconds and peak RSS (KiB) to the
# tool's records (and DuckDB's own query time, which it prints as query_seconds=).
once() {
  local name=$1 out=$2; shift 2
  /usr/bin/time -v -o "$tmp/$name.time" "$@" >"$out" 2>"$tmp/$name.err" || {
    say "$name failed:"; cat "$tmp/$name.err" >&2; cat "$tmp/$name.time" >&2; exit 1; }
  awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' \
    "$tmp/$name.time" >>"$tmp/$name.wall"
  awk -F': ' '/Maximum resident set size/ { print $2 }' "$tmp/$name.time" >>"$tmp/$name.rss"
  grep -o 'query_seconds=[0-9.]*' "$tmp/$name.err" | cut -d= -f2 >>"$tmp/$name.query" || true
}
median() { sort -g "$1" | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

bytes=$(stat -c %s "$data")
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')

# Every tool reads the file from the page cache, in the state a file is in once it has been read
# from disk: its pages are evicted (posix_fadvise DONTNEED, no root needed) and read back by
# readahead, which on current kernels caches it in large folios. A file still cached from being
# written in small pieces is held in 4 KiB pages instead, which costs a memory-mapping reader
# (floodwatch) page-table work that a read() reader (DuckDB) does not do; `--cache as-is` skips
# this step to measure that state (see bench/README.md).
settle() {
  if [ "$cache" = reread ]; then
    python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1"
  fi
  cat "$1" >/dev/null
}
settle "$data"

say "== running ($runs runs each, $threads threads, $mb MB)"
# The tools take turns, run after run, so a slow spell of a shared machine falls on all of them.
for _ in $(seq "$runs"); do
  once duckdb "$tmp/duckdb.jsonl" bench/.venv/bin/python bench/duckdb_seed.py "$data" "$threads"
  once seed "$tmp/seed.jsonl" "$fw" detect --rule seed --threads "$threads" --output jsonl "$data"
  once floodwatch "$tmp/floodwatch.jsonl" "$fw" detect --rule floodwatch --threads "$threads" --output jsonl "$data"
done

say "== checking alert rows (TimeGenerated, DeviceName, RequestCount, UniqueSourceIPs, AttackConfidence)"
python3 bench/compare.py "$tmp/duckdb.jsonl" "$tmp/seed.jsonl"

rss2_line=""
if [ "$tiny" = 0 ] && [ "$skip2x" = 0 ]; then
  # Twice the input two ways: twice the rows in the same hours (denser), and the same rate over
  # twice the hours (longer).
  rss_of() { awk '{ printf "%.0f", $1 / 1024 }' "$tmp/$1.rss"; }
  for kind in 2.0 52h; do
    data2=bench/data/bench-$kind.ndjson
    if [ ! -s "$data2" ]; then
      case $kind in
        2.0) args=(--scale 2.0) ;;
        52h) args=(--hours 52) ;;
      esac
      say "== generating $data2 (${args[*]}) for the memory check"
      "$fw" simulate --profile bench "${args[@]}" --out "$data2"
    fi
    settle "$data2"
    once "seed$kind" "$tmp/seed$kind.jsonl" "$fw" detect --rule seed --threads "$threads" --output jsonl "$data2"
    once "floodwatch$kind" "$tmp/floodwatch$kind.jsonl" "$fw" detect --rule floodwatch --threads "$threads" --output jsonl "$data2"
  done
  rss2_line=$(printf 'peak RSS, twice the rows in the same 26 h (%s MB): seed %s MiB, floodwatch %s MiB\npeak RSS, the same rate over 52 h (%s MB): seed %s MiB, floodwatch %s MiB' \
    "$(awk -v b="$(stat -c %s bench/data/bench-2.0.ndjson)" 'BEGIN { printf "%.1f", b / 1e6 }')" "$(rss_of seed2.0)" "$(rss_of floodwatch2.0)" \
    "$(awk -v b="$(stat -c %s bench/data/bench-52h.ndjson)" 'BEGIN { printf "%.1f", b / 1e6 }')" "$(rss_of seed52h)" "$(rss_of floodwatch52h)")
fi

report() {
  local name=$1 label=$2 wall rss
  wall=$(median "$tmp/$name.wall"); rss=$(median "$tmp/$name.rss")
  awk -v n="$label" -v w="$wall" -v r="$rss" -v b="$bytes" \
    'BEGIN { printf "%-28s %8.3f s %9.0f MB/s %8.0f MiB\n", n, w, b / 1e6 / w, r / 1024 }'
}

echo
echo "machine: $(lscpu | awk -F': *' '/Model name/ { print $2; exit }'), $(nproc) cores; threads: $threads"
echo "input: $data, $mb MB, $(wc -l <"$data") lines; runs: $runs (median, warm cache: $cache); DuckDB $duck_version"
printf '%-28s %10s %14s %12s\n' tool wall throughput "peak RSS"
report duckdb "DuckDB (process)"
dq=$(median "$tmp/duckdb.query")
awk -v w="$dq" -v b="$bytes" 'BEGIN { printf "%-28s %8.3f s %9.0f MB/s\n", "DuckDB (query only)", w, b / 1e6 / w }'
report seed "floodwatch --rule seed"
report floodwatch "floodwatch --rule floodwatch"
ds=$(median "$tmp/seed.wall"); df=$(median "$tmp/floodwatch.wall")
awk -v d="$dq" -v s="$ds" -v f="$df" 'BEGIN {
  printf "throughput ratio vs DuckDB query time (medians): seed %.2fx, floodwatch %.2fx\n", d / s, d / f }'
# The same ratio taken within each round (the tools ran back to back), then the median: a slow
# spell of a shared machine that lasts a round slows both sides of its ratio.
paste "$tmp/duckdb.query" "$tmp/seed.wall" | awk '{ print $1 / $2 }' >"$tmp/ratio.seed"
paste "$tmp/duckdb.query" "$tmp/floodwatch.wall" | awk '{ print $1 / $2 }' >"$tmp/ratio.floodwatch"
awk -v s="$(median "$tmp/ratio.seed")" -v f="$(median "$tmp/ratio.floodwatch")" \
  -v lo="$(sort -g "$tmp/ratio.seed" | head -1)" -v hi="$(sort -g "$tmp/ratio.seed" | tail -1)" \
  -v flo="$(sort -g "$tmp/ratio.floodwatch" | head -1)" -v fhi="$(sort -g "$tmp/ratio.floodwatch" | tail -1)" 'BEGIN {
  printf "per-round ratio, median (min-max): seed %.2fx (%.2f-%.2f), floodwatch %.2fx (%.2f-%.2f)\n", s, lo, hi, f, flo, fhi }'
[ -n "$rss2_line" ] && echo "$rss2_line"
if [ "$tiny" = 1 ]; then
  echo "(--tiny: a 24 MB input dominated by start-up costs; these timings are not a measurement)"
fi
exit 0
