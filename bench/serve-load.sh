#!/usr/bin/env bash
# Load benchmark of `floodwatch serve`: HTTP ingest of the benchmark export over loopback, the
# client (`floodwatch replay --speed max`) on the same machine and its two cores. Every 2xx
# means the batch's effect is committed to the state database (WAL, synchronous=NORMAL:
# it survives the process being killed; --fsync for power loss). Reports sustained events/s,
# the slowest and median 5-second rates, peak RSS and whether RSS stays flat, then runs
# `floodwatch detect` on the same file for the ratio.
#
# Usage: bench/serve-load.sh [--seconds N] [--concurrency N] [--batch-bytes N] [--fsync] [--tiny]
#   --seconds N      how long to load the server (default 600: ten minutes)
#   --concurrency N  requests in flight (default 3)
#   --batch-bytes N  request body size (default 2097152)
#   --fsync          fsync every commit
#   --tiny           small dataset and 5 seconds: checks the script works (CI); no measurement
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600; conc=3; batch=2097152; fsync=""; tiny=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --concurrency) conc="$2"; shift 2 ;;
    --batch-bytes) batch="$2"; shift 2 ;;
    --fsync) fsync="--fsync"; shift ;;
    --tiny) tiny=1; seconds=5; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
say() { printf '%s\n' "$*"; }

cargo build --release --locked -q
fw=target/release/floodwatch
mkdir -p bench/data
if [ "$tiny" = 1 ]; then scale=0.01; else scale=1.0; fi
data=bench/data/bench-$scale.ndjson
if [ ! -s "$data" ]; then
  say "== generating $data"
  "$fw" simulate --profile bench --scale "$scale" --out "$data"
fi

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

say "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB"
say "== input: $data ($(du -h "$data" | cut -f1), $(wc -l < "$data") rows), sent again and again with its dates moved on, for ${seconds}s"
# Lateness 10m: with several requests in flight, batches arrive a little out of order.
"$fw" serve --listen "127.0.0.1:$port" --state "$work/state" --lateness 10m --idle-close 10m \
  --log-level warn $fsync 2> "$work/serve.log" &
srv=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done

# Samples: seconds since start, server RSS (KiB), events counted.
(
  t0=$(date +%s.%N)
  while kill -0 "$srv" 2>/dev/null; do
    rss=$(awk '/VmRSS/{print $2}' "/proc/$srv/status" 2>/dev/null || echo 0)
    ev=$(curl -sf "http://127.0.0.1:$port/api/inputs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["events"])' 2>/dev/null || echo 0)
    printf '%s %s %s\n' "$(python3 -c "import time; print(round(time.time()-$t0,2))")" "$rss" "$ev"
    sleep 5
  done
) > "$work/samples.txt" &
sampler=$!

"$fw" replay "$data" --to "http://127.0.0.1:$port" --speed max --batch 0s \
  --concurrency "$conc" --max-batch-bytes "$batch" --repeat 100000 --max-time "${seconds}s" \
  2> "$work/replay.log"
cat "$work/replay.log"
sleep 6
peak=$(awk '/VmHWM/{print $2}' "/proc/$srv/status")
kill "$sampler" 2>/dev/null || true
kill "$srv"; wait "$srv" 2>/dev/null || true; srv=""

python3 - "$work/samples.txt" "$work/replay.log" "$peak" <<'PY'
import re, statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 3]
log = open(sys.argv[2]).read()
m = re.search(r"over ([\d.]+) s: (\d+) events accepted", log)
secs, events = float(m.group(1)), int(m.group(2))
rates = [(b[2]-a[2])/(b[0]-a[0]) for a, b in zip(rows, rows[1:]) if b[0] > a[0] and b[2] >= a[2] and b[2] > 0]
print(f"sustained: {events/secs:,.0f} events/s ({events:,} events in {secs:.1f} s, every one acknowledged after its commit)")
if rates:
    print(f"5-second rates: median {statistics.median(rates):,.0f}/s, slowest {min(rates):,.0f}/s, fastest {max(rates):,.0f}/s")
rss = [r[1] for r in rows if r[1] > 0]
if rss:
    n = max(1, len(rss)//10)
    print(f"server RSS: peak {int(sys.argv[3])/1024:.0f} MiB; first tenth of the run {max(rss[:n])/1024:.0f} MiB, last tenth {max(rss[-n:])/1024:.0f} MiB")
PY

say "== floodwatch detect on the same file (2 threads, 3 runs)"
times=()
for _ in 1 2 3; do
  s=$(date +%s.%N); "$fw" detect --threads 2 -o jsonl "$data" > /dev/null; e=$(date +%s.%N)
  times+=("$(python3 -c "print($e-$s)")")
done
rows=$(wc -l < "$data")
python3 - "$rows" "$work/replay.log" "${times[@]}" <<'PY'
import re, statistics, sys
rows = int(sys.argv[1]); log = open(sys.argv[2]).read(); ts = list(map(float, sys.argv[3:]))
m = re.search(r"over ([\d.]+) s: (\d+) events accepted", log)
serve = int(m.group(2)) / float(m.group(1))
med = statistics.median(ts)
print(f"detect: median {med:.2f} s = {rows/med:,.0f} rows/s; serve over HTTP sustained {serve:,.0f} events/s = {serve/(rows/med):.2f}x detect")
PY
if [ "$tiny" = 1 ]; then say "(--tiny: a few seconds on a small file; not a measurement)"; fi
