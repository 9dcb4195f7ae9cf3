//! Inbound signals as Defender logs them, through the CLI: the action types and
//! `AdditionalFields` of real records, not only the ones the simulator writes.

use super::*;

/// One row shaped like a real Defender `DeviceNetworkEvents` record: every column of the
/// Advanced Hunting schema in its order, `AdditionalFields` as a JSON-encoded string.
fn row(
    ts: i64,
    action: &str,
    remote: &str,
    rport: u32,
    local_port: u32,
    af: &str,
    rid: u64,
) -> String {
    let secs = ts.div_euclid(1_000_000_000);
    let frac = ts.rem_euclid(1_000_000_000) / 100;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let day = 22 + secs / 86_400;
    format!(
        concat!(
            r#"{{"Timestamp":"2025-12-{:02}T{:02}:{:02}:{:02}.{:07}Z","DeviceId":"6a4b09c2e1f74d3a9b8c7d6e5f4a3b2c1d0e9f8a","#,
            r#""DeviceName":"web-07.contoso.com","ActionType":"{}","RemoteIP":"{}","RemotePort":{},"RemoteUrl":"","#,
            r#""LocalIP":"10.20.1.7","LocalPort":{},"Protocol":"Tcp","LocalIPType":"Private","RemoteIPType":"Public","#,
            r#""InitiatingProcessSHA1":"","InitiatingProcessSHA256":"","InitiatingProcessMD5":"","#,
            r#""InitiatingProcessFileName":"","InitiatingProcessFileSize":null,"InitiatingProcessVersionInfoCompanyName":"","#,
            r#""InitiatingProcessId":null,"InitiatingProcessCommandLine":"","InitiatingProcessCreationTime":null,"#,
            r#""InitiatingProcessFolderPath":"","InitiatingProcessParentFileName":"","InitiatingProcessParentId":null,"#,
            r#""InitiatingProcessAccountDomain":"","InitiatingProcessAccountName":"","InitiatingProcessAccountSid":"","#,
            r#""InitiatingProcessIntegrityLevel":"","InitiatingProcessTokenElevation":"","ReportId":{},"#,
            r#""AppGuardContainerId":"","AdditionalFields":"{}","MachineGroup":"Web Frontend"}}"#
        ),
        day, h, m, s, frac, action, remote, rport, local_port, rid, af
    )
}

const SYN_AF: &str = r#"{\"Tcp Flags\":2,\"Packet Size\":60,\"Source MAC\":\"00-15-5D-0A-1B-2C\",\"Destination MAC\":\"00-15-5D-3C-4D-5E\"}"#;
const SYN_ACK_AF: &str = r#"{\"Tcp Flags\":18,\"Packet Size\":60,\"Source MAC\":\"00-15-5D-3C-4D-5E\",\"Destination MAC\":\"00-15-5D-0A-1B-2C\"}"#;

const SEC: i64 = 1_000_000_000;

/// Six hours of ordinary traffic on web-07 (inbound HTTPS from 250 returning clients, each
/// connection's SYN logged as `InboundConnectionAttempt`, the device's SYN/ACK as
/// `InboundConnectionAcknowledged`, then the accepted connection), and, when `flood` is set, a
/// SYN flood from 6,000 sources over four minutes from 06:00:30, the device answering each SYN.
/// Ordinary traffic goes on for fifteen minutes after 06:00, so that the flood's bin is
/// complete. Rows in time order, as an export has them.
fn export(flood: bool) -> String {
    let mut rows: Vec<(i64, String)> = Vec::new();
    let mut rid = 1000u64;
    let mut push = |ts: i64, action: &str, ip: &str, rport: u32, af: &str| {
        rid += 1;
        rows.push((ts, row(ts, action, ip, rport, 443, af, rid)));
    };
    let minutes = 6 * 60 + 15;
    // Ordinary clients: 40 connections a minute.
    for k in 0..minutes * 40 {
        let ts = k * 60 * SEC / 40 + (k % 7) * 1_234_567;
        let ip = format!("198.51.100.{}", 1 + (k * 37) % 250);
        let rport = 49_152 + (k * 131 % 16_000) as u32;
        push(ts, "InboundConnectionAttempt", &ip, rport, SYN_AF);
        push(
            ts + 300_000,
            "InboundConnectionAcknowledged",
            &ip,
            rport,
            SYN_ACK_AF,
        );
        push(ts + 900_000, "InboundConnectionAccepted", &ip, rport, "{}");
    }
    if flood {
        // 25 spoofed SYNs a second from sources over many prefixes; none is ever accepted.
        for n in 0..6_000i64 {
            let ts = (6 * 3600 + 30) * SEC + n * SEC / 25;
            let ip = format!(
                "{}.{}.{}.{}",
                20 + n % 180,
                (n * 7) % 256,
                (n / 3) % 256,
                1 + n % 254
            );
            let rport = 1024 + (n * 17 % 60_000) as u32;
            push(ts, "InboundConnectionAttempt", &ip, rport, SYN_AF);
            push(
                ts + 200_000,
                "InboundConnectionAcknowledged",
                &ip,
                rport,
                SYN_ACK_AF,
            );
        }
    }
    rows.sort_by_key(|r| r.0);
    let mut out = String::new();
    for (_, r) in rows {
        out.push_str(&r);
        out.push('\n');
    }
    out
}

fn alerts(path: &Path) -> Vec<serde_json::Value> {
    let o = run(&[
        "detect",
        "--output",
        "jsonl",
        path.to_str().expect("utf-8 path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The issue's case: a SYN flood logged as `InboundConnectionAttempt` (with `"Tcp Flags":2`)
/// raises an unsuppressed `syn-flood` alert, and the device's SYN/ACKs do not double it.
#[test]
fn syn_flood_of_inbound_connection_attempts_alerts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let calm = dir.path().join("calm.json");
    let flooded = dir.path().join("flooded.json");
    std::fs::write(&calm, export(false)).expect("write");
    std::fs::write(&flooded, export(true)).expect("write");

    let quiet = alerts(&calm);
    assert!(
        quiet.iter().all(|a| a["Vector"] != "syn-flood"),
        "ordinary traffic raised a SYN-flood alert: {quiet:?}"
    );

    let got = alerts(&flooded);
    let syn: Vec<_> = got
        .iter()
        .filter(|a| a["Vector"] == "syn-flood" && a["Suppressed"] == false)
        .collect();
    assert!(!syn.is_empty(), "no unsuppressed syn-flood alert: {got:?}");
    for a in &syn {
        assert_eq!(a["DeviceName"], "web-07.contoso.com");
        let t = a["TimeGenerated"].as_str().expect("time");
        assert!(t.starts_with("2025-12-22T06:0"), "{t}");
        // The flood's bin holds 6,000 SYNs next to 200 ordinary ones; with the SYN/ACKs
        // counted too it would be about twice that.
        let n = a["RequestCount"].as_u64().expect("count");
        assert!(n <= 6_200, "SYN/ACKs counted as SYNs: {a}");
    }
    let peak = syn
        .iter()
        .filter_map(|a| a["RequestCount"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(peak >= 6_000, "the flood's bin counts its SYNs: {peak}");
}
