#!/usr/bin/env python3
"""Writes the inputs `ingest_bench` was measured on (600,000 rows, 20 devices) into a directory:
big.ndjson, big-storage.json (CRLF envelopes), big-eh.json (Event Hubs, 50 records a line),
big-array.json and big.csv. Compress with `gzip -k -1` for the compressed cases.

    python3 crates/ingest/examples/gen_big.py /tmp
"""
import csv, json, random, sys

out = sys.argv[1] if len(sys.argv) > 1 else "."
random.seed(1)
acts = ["InboundConnectionAccepted", "ConnectionSuccess", "ConnectionAttempt", "IcmpConnectionInspected",
        "ConnectionSuccessAggregatedReport"]
rows = []
for i in range(600000):
    a = random.choice(acts)
    rows.append({
        "Timestamp": "2025-12-22T%02d:%02d:%02d.%07dZ" % (9 + i // 300000, (i // 5000) % 60, (i // 83) % 60, i % 10000000),
        "DeviceId": "ab" * 20, "DeviceName": "web-%02d.contoso.com" % (i % 20), "ActionType": a,
        "RemoteIP": "203.0.%d.%d" % (i % 256, (i // 256) % 256), "RemotePort": 1024 + i % 60000,
        "RemoteIPType": "Public", "LocalIP": "10.0.0.4", "LocalPort": 443, "Protocol": "Tcp",
        "LocalIPType": "Private", "InitiatingProcessFileName": "w3wp.exe", "InitiatingProcessId": 4242,
        "ReportId": i,
        "AdditionalFields": json.dumps({"direction": "In", "orig_bytes": "84", "resp_bytes": "84"})
        if a == "IcmpConnectionInspected" else None})

def compact(v):
    return json.dumps(v, separators=(",", ":"))

def env(r):
    return {"time": r["Timestamp"], "tenantId": "t", "operationName": "Publish",
            "category": "AdvancedHunting-DeviceNetworkEvents", "properties": r}

with open(f"{out}/big.ndjson", "w") as f:
    f.writelines(compact(r) + "\n" for r in rows)
with open(f"{out}/big-storage.json", "w", newline="") as f:
    f.writelines(compact(env(r)) + "\r\n" for r in rows)
with open(f"{out}/big-eh.json", "w") as f:
    f.writelines(compact({"records": [env(r) for r in rows[i:i + 50]]}) + "\n" for i in range(0, len(rows), 50))
with open(f"{out}/big-array.json", "w") as f:
    f.write("[\n" + ",\n".join(compact(r) for r in rows) + "\n]\n")
with open(f"{out}/big.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(list(rows[0]))
    for r in rows:
        w.writerow(["" if v is None else v for v in r.values()])
