"""Compares two alert files (JSON lines) on the seed rule's alert columns, in order.

Usage: compare.py EXACT.jsonl SKETCH.jsonl  -> exit 0 when both list the same rows in the same
order. Every column must be equal, except UniqueSourceIPs above 16,384 distinct sources: there the
second file (floodwatch) reports a bottom-k estimate (relative standard error 0.78 %, like KQL's
dcount at its default accuracy, which is exact only up to 1,000), and it must be within 1 % of the
exact count.
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


EXACT_UP_TO = 16384
TOLERANCE = 0.01


def same(x, y):
    """x from the exact engine, y from floodwatch."""
    for i, k in enumerate(KEYS):
        if k == "UniqueSourceIPs" and x[i] > EXACT_UP_TO:
            if abs(y[i] - x[i]) > TOLERANCE * x[i]:
                return False
        elif x[i] != y[i]:
            return False
    return True


a, b = rows(sys.argv[1]), rows(sys.argv[2])
if len(a) == len(b) and all(same(x, y) for x, y in zip(a, b)):
    i = KEYS.index("UniqueSourceIPs")
    est = [abs(y[i] - x[i]) / x[i] for x, y in zip(a, b) if x[i] > EXACT_UP_TO]
    note = f"; distinct sources above {EXACT_UP_TO} within {max(est) * 100:.1f} % ({len(est)} rows)" if est else ""
    print(f"same {len(a)} alert rows{note}")
    sys.exit(0)
print(f"alert rows differ: {len(a)} vs {len(b)}")
for x, y in zip(a, b):
    if not same(x, y):
        print(f"  first difference: {x} vs {y}")
        break
sys.exit(1)
