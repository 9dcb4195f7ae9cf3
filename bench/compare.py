"""Compares two alert files (JSON lines) on the seed rule's alert columns, in order.

Usage: compare.py A.jsonl B.jsonl  -> exit 0 when both list the same rows in the same order.
Lines that are not alert rows (no TimeGenerated) are ignored.
"""
import json
import sys

KEYS = ("TimeGenerated", "DeviceName", "RequestCount", "UniqueSourceIPs", "AttackConfidence")


def rows(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if isinstance(r, dict) and "TimeGenerated" in r:
                out.append(tuple(r.get(k) for k in KEYS))
    return out


a, b = rows(sys.argv[1]), rows(sys.argv[2])
if a == b:
    print(f"same {len(a)} alert rows")
    sys.exit(0)
print(f"alert rows differ: {len(a)} vs {len(b)}")
for x, y in zip(a, b):
    if x != y:
        print(f"  first difference: {x} vs {y}")
        break
sys.exit(1)
