#!/usr/bin/env python3
"""Writes the format fixtures: the same DeviceNetworkEvents rows in every shape floodwatch reads.

Run from this directory: `python3 gen.py`. Needs the `gzip` and `zstd` command-line tools.
The rows are listed once below; see README.md for what they contain and the values the tests
expect from them.
"""
import csv, gzip, io, json, os, shutil, subprocess

def t(m, s, ms):
    """(RFC 3339 with 7 fraction digits as Defender writes, Sentinel US form) of 2025-12-22
    12:00 + m minutes, s.ms seconds: the rows straddle 1 PM so that the 12-hour clock is tested."""
    h, mm = 12 + (m // 60), m % 60
    rfc = f"2025-12-22T{h:02}:{mm:02}:{s:02}.{ms:03}0000Z"
    h12 = h % 12 or 12
    us = f"12/22/2025, {h12}:{mm:02}:{s:02}.{ms:03} {'AM' if h < 12 else 'PM'}"
    return rfc, us

ICMP = {"direction": "In", "orig_bytes": "84", "resp_bytes": "84", "orig_pkts": "1", "resp_pkts": "1"}
rows = []
rid = 1000
def row(minute, sec, ms, dev, action, rip, rport, lip, lport, proto, proc, extra=None):
    global rid
    rid += 1
    rfc, us = t(minute, sec, ms)
    rows.append({
        "Timestamp": rfc, "_us": us,
        "DeviceId": {"web-01.contoso.com": "a1" * 20, "web-02.contoso.com": "b2" * 20, "db-01.contoso.com": "c3" * 20}[dev],
        "DeviceName": dev, "ActionType": action,
        "RemoteIP": rip, "RemotePort": rport, "LocalIP": lip, "LocalPort": lport,
        "Protocol": proto, "InitiatingProcessFileName": proc, "ReportId": rid,
        "AdditionalFields": extra,
    })

# web-01: 12 inbound HTTPS connections, 10 in the 13:00 bin and 2 in the 13:05 bin.
v4 = [f"203.0.113.{i % 6 + 1}" for i in range(8)]
srcs = v4 + ["2001:db8:a::1", "2001:db8:a::2", "2001:db8:a::1", "198.51.100.9"]
for i, ip in enumerate(srcs):
    sec = 60 + 1 + i * 30  # from 13:00:01, every 30 s
    row(60 + sec // 60 - 1, sec % 60, 123, "web-01.contoso.com", "InboundConnectionAccepted", ip, 50000 + i, "10.1.0.4", 443, "Tcp", "w3wp.exe")
# web-01: HTTP/3 over UDP 443 at 13:06.
row(66, 0, 0, "web-01.contoso.com", "InboundConnectionAccepted", "198.51.100.20", 50500, "10.1.0.4", 443, "Udp", "w3wp.exe")
# web-02: five SYNs to port 80, four inbound ICMP sessions with Zeek counters.
for i in range(5):
    row(61, i * 10, 500, "web-02.contoso.com", "ConnectionAttempt", f"192.0.2.{10 + i}", 40000 + i, "10.1.0.5", 80, "Tcp", None)
for i, ip in enumerate(["192.0.2.50", "192.0.2.51", "192.0.2.52", "2001:db8:b::7"]):
    row(63, i * 5, 250, "web-02.contoso.com", "IcmpConnectionInspected", ip, None, "10.1.0.5", None, "Icmp", None, ICMP)
# web-02: four inbound connections on 8443 in the 13:10 bin.
for i in range(4):
    row(71, i, 789, "web-02.contoso.com", "InboundConnectionAccepted", f"192.0.2.{100 + i}", 51000 + i, "10.1.0.5", 8443, "Tcp", "nginx.exe")
# db-01: an hourly roll-up standing for 37 connections, three outbound connections, one listener at 12:58.
row(60, 0, 0, "db-01.contoso.com", "ConnectionSuccessAggregatedReport", "10.0.0.5", 443, "10.1.0.9", 51515, "Tcp", "sqlservr.exe", {"uniqueEventsAggregated": 37})
for i in range(3):
    row(62, 10 + i, 0, "db-01.contoso.com", "ConnectionSuccess", "13.107.4.50", 443, "10.1.0.9", 49700 + i, "Tcp", "sqlservr.exe")
row(58, 0, 0, "db-01.contoso.com", "ListeningConnectionCreated", None, None, "0.0.0.0", 1433, "Tcp", "sqlservr.exe")
# The same event delivered twice (same DeviceName, Timestamp, ReportId).
rows.insert(6, dict(rows[3]))
rows.sort(key=lambda r: r["Timestamp"])

COLS = ["Timestamp", "DeviceId", "DeviceName", "ActionType", "RemoteIP", "RemotePort", "LocalIP", "LocalPort",
        "Protocol", "InitiatingProcessFileName", "ReportId", "AdditionalFields"]
TYPES = {"Timestamp": "DateTime", "RemotePort": "Int32", "LocalPort": "Int32", "ReportId": "Int64", "AdditionalFields": "String"}

def ah(r, af="string"):
    """A row as Advanced Hunting writes it; AdditionalFields a JSON string (or object for `af="object"`)."""
    out = {c: r[c] for c in COLS}
    x = r["AdditionalFields"]
    out["AdditionalFields"] = (json.dumps(x, separators=(",", ":")) if x is not None else None) if af == "string" else x
    return out

def envelope(r, **extra):
    e = {"time": r["Timestamp"], "tenantId": "00000000-0000-0000-0000-00000000abcd", "operationName": "Publish",
         "category": "AdvancedHunting-DeviceNetworkEvents", "properties": dict(ah(r), MachineGroup="Web servers")}
    e.update(extra)
    return e

OTHER = {"time": "2025-12-22T09:02:00.0000000Z", "tenantId": "00000000-0000-0000-0000-00000000abcd",
         "operationName": "Publish", "category": "AdvancedHunting-DeviceProcessEvents",
         "properties": {"Timestamp": "2025-12-22T09:02:00.0000000Z", "DeviceName": "web-01.contoso.com",
                        "ActionType": "ProcessCreated", "FileName": "cmd.exe", "ReportId": 77}}

def compact(v):
    return json.dumps(v, separators=(",", ":"))

def write(name, text, newline="\n"):
    with open(name, "w", encoding="utf-8", newline=newline) as f:
        f.write(text)

# 1. NDJSON; one row carries its port as a numeric string, as some exports do.
lines = []
for i, r in enumerate(rows):
    a = ah(r)
    if i == 2:
        a["LocalPort"] = str(a["LocalPort"])
    lines.append(compact(a))
write("ndjson.json", "\n".join(lines) + "\n")
# 2. JSON array, pretty-printed, AdditionalFields as objects.
write("array.json", json.dumps([ah(r, "object") for r in rows], indent=2) + "\n")
# 3. Event Hubs: messages of five records per line, one record of another table.
recs = [envelope(r, Tenant="DefaultTenant") for r in rows]
recs.insert(4, OTHER)
msgs = [compact({"records": recs[i:i + 5]}) for i in range(0, len(recs), 5)]
write("eventhubs.json", "\n".join(msgs) + "\n")
write("eventhubs-pretty.json", json.dumps({"records": recs}, indent=2) + "\n")
# 4. Storage export: one envelope per line, CRLF.
st = [compact(envelope(r, _TimeReceivedBySvc=r["Timestamp"])) for r in rows]
st.insert(7, compact(OTHER))
write("storage.json", "\r\n".join(st) + "\r\n", newline="")
# 5. Advanced Hunting API response.
schema = [{"Name": c, "Type": TYPES.get(c, "String")} for c in COLS]
write("ah-api.json", json.dumps({"Stats": {"ExecutionTime": 0.08, "resource_usage": {"cpu": {"total": "00:00:00"}}},
                                 "Schema": schema, "Results": [ah(r) for r in rows]}, indent=2) + "\n")
# 6. Graph runHuntingQuery response.
write("graph.json", json.dumps({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults",
                                "schema": [{"name": c, "type": TYPES.get(c, "String")} for c in COLS],
                                "results": [ah(r) for r in rows]}, indent=2) + "\n")
# 6b. OData collection response (a Graph or Defender API list, one page of it).
write("odata.json", json.dumps({"@odata.context": "https://api.security.microsoft.com/api/$metadata#DeviceNetworkEvents",
                                "value": [ah(r) for r in rows],
                                "@odata.nextLink": "https://api.security.microsoft.com/api/DeviceNetworkEvents?$skiptoken=2"}, indent=2) + "\n")
# 7. Log Analytics query API: TimeGenerated instead of Timestamp, rows positioned by columns.
la_cols = ["TenantId", "TimeGenerated"] + COLS[1:] + ["Type"]
la_rows = [["00000000-0000-0000-0000-00000000abcd", r["Timestamp"]] + [ah(r)[c] for c in COLS[1:]] + ["DeviceNetworkEvents"] for r in rows]
write("log-analytics.json", json.dumps({"tables": [{"name": "PrimaryResult",
    "columns": [{"name": c, "type": {"TimeGenerated": "datetime", "RemotePort": "int", "LocalPort": "int", "ReportId": "long", "AdditionalFields": "dynamic"}.get(c, "string")} for c in la_cols],
    "rows": la_rows}]}, indent=1) + "\n")
# 8. Defender portal CSV.
buf = io.StringIO()
w = csv.writer(buf)
w.writerow(COLS)
for r in rows:
    a = ah(r)
    w.writerow(["" if a[c] is None else a[c] for c in COLS])
write("defender.csv", buf.getvalue(), newline="")
# 9. Sentinel portal CSV: BOM, `[UTC]` headers, US dates with milliseconds.
buf = io.StringIO()
w = csv.writer(buf)
w.writerow(["TimeGenerated [UTC]", "Timestamp [UTC]"] + COLS[1:])
for r in rows:
    a = ah(r)
    w.writerow([r["_us"], r["_us"]] + ["" if a[c] is None else a[c] for c in COLS[1:]])
write("sentinel.csv", "\ufeff" + buf.getvalue(), newline="")
# 10. Compressed: NDJSON as two gzip members, Storage export as zstd.
half = len(lines) // 2
with open("ndjson.json.gz", "wb") as f:
    f.write(gzip.compress(("\n".join(lines[:half]) + "\n").encode(), mtime=0))
    f.write(gzip.compress(("\n".join(lines[half:]) + "\n").encode(), mtime=0))
subprocess.run(["zstd", "-q", "-f", "-19", "storage.json", "-o", "storage.json.zst"], check=True)
# 11. A Storage container tree: one PT1H.json per hour.
shutil.rmtree("tree", ignore_errors=True)
for hour in (12, 13):
    d = f"tree/insights-logs-advancedhunting-devicenetworkevents/tenantId=00000000-0000-0000-0000-00000000abcd/y=2025/m=12/d=22/h={hour:02}/m=00"
    os.makedirs(d)
    mine = [l for l, r in zip([compact(envelope(r)) for r in rows], rows) if r["Timestamp"][11:13] == f"{hour:02}"]
    write(f"{d}/PT1H.json", "\r\n".join(mine) + "\r\n", newline="")
# 12. A union of tables (`union DeviceNetworkEvents, DeviceProcessEvents, DeviceFileEvents, ...`
# in Advanced Hunting), as a portal CSV and as an API response: the network rows above mixed with
# 18 rows of other tables, which have the union's columns empty where their table has none.
# They must be skipped as other-table, not used.
UNION_COLS = COLS[:4] + ["FileName", "FolderPath", "ProcessCommandLine", "RegistryKey", "AccountName", "LogonType"] + COLS[4:]
def other(m, s, dev, action, **cols):
    rfc, _ = t(m, s, 0)
    global rid
    rid += 1
    r = {c: None for c in UNION_COLS}
    r.update({"Timestamp": rfc, "DeviceId": {"web-01.contoso.com": "a1" * 20, "web-02.contoso.com": "b2" * 20,
              "db-01.contoso.com": "c3" * 20}[dev], "DeviceName": dev, "ActionType": action, "ReportId": rid})
    r.update(cols)
    return r
others = []
for i in range(4):
    others.append(other(59 + i, 7, "web-01.contoso.com", "ProcessCreated", FileName="w3wp.exe",
                        FolderPath="C:\\Windows\\System32\\inetsrv\\w3wp.exe", ProcessCommandLine='w3wp.exe -ap "DefaultAppPool"',
                        InitiatingProcessFileName="svchost.exe"))
for i in range(4):
    others.append(other(60 + i, 20, "web-02.contoso.com", ["FileCreated", "FileModified", "FileRenamed", "FileDeleted"][i],
                        FileName=f"access-{i}.log", FolderPath="D:\\logs\\nginx", InitiatingProcessFileName="nginx.exe"))
for i in range(3):
    others.append(other(61, 30 + i, "db-01.contoso.com", ["RegistryValueSet", "RegistryKeyCreated", "RegistryValueDeleted"][i],
                        RegistryKey="HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\MSSQLServer", InitiatingProcessFileName="sqlservr.exe"))
# Logon rows carry RemoteIP and RemotePort: told by their action type.
for i in range(3):
    others.append(other(62, 40 + i, "web-01.contoso.com", ["LogonSuccess", "LogonFailed", "LogonSuccess"][i],
                        AccountName="svc-deploy", LogonType="Network", RemoteIP=f"10.9.0.{i + 1}", RemotePort=0,
                        Protocol="Kerberos", InitiatingProcessFileName="lsass.exe"))
# DeviceEvents: a firewall block (network columns, action type of that table) and two with none.
others.append(other(64, 1, "web-02.contoso.com", "FirewallInboundConnectionBlocked", RemoteIP="192.0.2.200",
                    RemotePort=51999, LocalIP="10.1.0.5", LocalPort=3389, Protocol="Tcp"))
others.append(other(64, 2, "web-02.contoso.com", "ImageLoaded", FileName="ntdll.dll", InitiatingProcessFileName="nginx.exe"))
others.append(other(65, 3, "db-01.contoso.com", "ProcessPrimaryTokenModified", InitiatingProcessFileName="sqlservr.exe"))
others.append(other(66, 4, "db-01.contoso.com", "ScheduledTaskCreated", AdditionalFields={"TaskName": "\\Backup"}))
assert len(others) == 18
mixed = [dict({c: None for c in UNION_COLS}, **ah(r)) for r in rows] + [dict(o, AdditionalFields=None if o["AdditionalFields"] is None else compact(o["AdditionalFields"])) for o in others]
mixed.sort(key=lambda r: r["Timestamp"])
buf = io.StringIO()
w = csv.writer(buf)
w.writerow(UNION_COLS)
for r in mixed:
    w.writerow(["" if r[c] is None else r[c] for c in UNION_COLS])
write("union.csv", buf.getvalue(), newline="")
write("union-ah-api.json", json.dumps({"Stats": {"ExecutionTime": 0.21}, "Schema": [{"Name": c, "Type": TYPES.get(c, "String")} for c in UNION_COLS],
                                       "Results": mixed}, indent=2) + "\n")
print(f"{len(rows)} rows written")
