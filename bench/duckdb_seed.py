"""Runs bench/seed.sql in DuckDB and prints the alert rows as JSON lines.

Usage: duckdb_seed.py FILE THREADS
The query's own wall time (excluding Python and DuckDB start-up) goes to stderr as
`query_seconds=<s>`, so the benchmark can report DuckDB's best case as well as the process.
"""
import json
import pathlib
import sys
import time

import duckdb


def main() -> None:
    path, threads = sys.argv[1], int(sys.argv[2])
    sql = (pathlib.Path(__file__).with_name("seed.sql").read_text()
           .replace("{file}", path.replace("'", "''"))
           .replace("{threads}", str(threads)))
    con = duckdb.connect()
    t = time.perf_counter()
    statements = [s for s in sql.split(";") if s.strip()]
    for s in statements[:-1]:
        con.execute(s)
    rows = con.execute(statements[-1]).fetchall()
    elapsed = time.perf_counter() - t
    cols = ["TimeGenerated", "DeviceName", "RequestCount", "UniqueSourceIPs", "TotalBytes", "AttackConfidence"]
    for r in rows:
        print(json.dumps(dict(zip(cols, r))))
    print(f"query_seconds={elapsed:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
