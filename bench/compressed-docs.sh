#!/usr/bin/env bash
# Compressed JSON documents against compressed NDJSON: the same rows as gzip NDJSON, a gzip JSON
# array and a gzip Advanced Hunting API response, read in turn RUNS times by `ingest_bench`
# (release, two threads); prints the median records/s of each and the median of the per-round
# ratios of the documents to NDJSON.
#
#   bash bench/compressed-docs.sh [ROWS] [RUNS]     (default 300000 rows, 5 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-300000}"
runs="${2:-5}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
python3 - "$dir" "$rows" <<'PY'
import json, random, sys
out, n = sys.argv[1], int(sys.argv[2])
random.seed(1)
acts = ["InboundConnectionAccepted", "ConnectionSuccess", "InboundConnectionAttempt", "IcmpConnectionInspected"]
cols = ["Timestamp", "DeviceId", "DeviceName", "ActionType", "RemoteIP", "RemotePort", "RemoteIPType", "LocalIP",
        "LocalPort", "Protocol", "LocalIPType", "InitiatingProcessFileName", "InitiatingProcessId", "ReportId", "AdditionalFields"]
rows = []
for i in range(n):
    a = random.choice(acts)
    af = {"IcmpConnectionInspected": json.dumps({"direction": "In", "orig_bytes": "84", "resp_bytes": "84"}),
          "InboundConnectionAttempt": json.dumps({"Tcp Flags": 2, "Packet Size": 60})}.get(a)
    rows.append(dict(zip(cols, [
        "2025-12-22T%02d:%02d:%02d.%07dZ" % (9 + i * 3 // n, (i // 5000) % 60, (i // 83) % 60, i % 10000000),
        "ab" * 20, "web-%02d.contoso.com" % (i % 20), a, "203.0.%d.%d" % (i % 256, (i // 256) % 256),
        1024 + i % 60000, "Public", "10.0.0.4", 443, "Tcp", "Private", "w3wp.exe", 4242, i, af])))
c = lambda v: json.dumps(v, separators=(",", ":"))
with open(f"{out}/rows.ndjson", "w") as f:
    f.writelines(c(r) + "\n" for r in rows)
with open(f"{out}/rows-array.json", "w") as f:
    f.write("[" + ",".join(c(r) for r in rows) + "]\n")
with open(f"{out}/rows-ah-api.json", "w") as f:
    f.write(c({"Stats": {"ExecutionTime": 1.0}, "Schema": [{"Name": k, "Type": "String"} for k in cols], "Results": rows}) + "\n")
PY
gzip -1 "$dir"/rows.ndjson "$dir"/rows-array.json "$dir"/rows-ah-api.json
cargo build --release -q -p floodwatch-ingest --example ingest_bench
bin=target/release/examples/ingest_bench
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $rows rows, median of $runs runs"
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
rate() { "$bin" --threads 2 "$dir/$1" 2>/dev/null | sed -E 's/.* ([0-9.]+) M records\/s.*/\1/'; }
# The three inputs take turns in each round, and each round's documents are divided by that
# round's NDJSON: a shared host's speed drifts between rounds, not within one.
files=(rows.ndjson.gz rows-array.json.gz rows-ah-api.json.gz)
declare -A all ratios
for _ in $(seq "$runs"); do
  nd=$(rate rows.ndjson.gz)
  all[rows.ndjson.gz]+="$nd "
  for f in "${files[@]:1}"; do
    r=$(rate "$f")
    all[$f]+="$r "
    ratios[$f]+="$(awk -v a="$r" -v b="$nd" 'BEGIN {printf "%.3f", a / b}') "
  done
done
for f in "${files[@]}"; do
  printf '%-22s %6.2f M records/s median (%s MB)\n' "$f" "$(tr ' ' '\n' <<<"${all[$f]}" | grep . | median)" "$(du -m "$dir/$f" | cut -f1)"
done
for f in "${files[@]:1}"; do
  printf '%s / ndjson.gz: %.2f (median of the per-round ratios: %s)\n' "$f" "$(tr ' ' '\n' <<<"${ratios[$f]}" | grep . | median)" "${ratios[$f]}"
done
