//! A fixed, deterministic sample of Advanced Hunting NDJSON rows (the shape of a real export:
//! 22 columns, about 690 bytes a row, a mix of inbound, outbound, inspected and aggregated rows)
//! for the micro-benchmarks and the instruction-count check. It does not depend on the simulator,
//! so a change there does not move the parser's baseline.

use std::fmt::Write;

/// `n` rows, newline-terminated; the same bytes for the same `n`.
pub fn lines(n: usize) -> Vec<u8> {
    let mut out = String::with_capacity(n * 700);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        // xorshift: fixed, portable, no dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let dev = x % 6;
        let kind = (x >> 8) % 10;
        let (action, local, remote, af) = match kind {
            0..=5 => (
                "InboundConnectionAccepted",
                443,
                40_000 + (x >> 16) % 20_000,
                "null".to_owned(),
            ),
            6 => (
                "SslConnectionInspected",
                443,
                40_000 + (x >> 16) % 20_000,
                format!(
                    r#""{{\"direction\":\"In\",\"orig_bytes\":\"{}\",\"resp_bytes\":\"{}\",\"orig_pkts\":\"{}\",\"resp_pkts\":\"{}\"}}""#,
                    (x >> 20) % 5000,
                    (x >> 24) % 90_000,
                    (x >> 28) % 40,
                    (x >> 32) % 90
                ),
            ),
            7 => (
                "ConnectionSuccessAggregatedReport",
                50_000 + (x >> 16) % 10_000,
                443,
                format!(r#""{{\"uniqueEventsAggregated\":{}}}""#, 1 + (x >> 20) % 40),
            ),
            _ => (
                "ConnectionSuccess",
                50_000 + (x >> 16) % 10_000,
                443,
                "null".to_owned(),
            ),
        };
        let secs = i as u64 * 3;
        let _ = writeln!(
            out,
            concat!(
                r#"{{"Timestamp":"2025-12-22T{:02}:{:02}:{:02}.{:07}Z","DeviceId":"a24d2050ce9858094b008b6144f9fd73944fba5{}","#,
                r#""DeviceName":"web0{}.contoso.com","ActionType":"{}","RemoteIP":"{}.{}.{}.{}","RemotePort":{},"#,
                r#""RemoteUrl":"","LocalIP":"10.1.1.1{}","LocalPort":{},"Protocol":"Tcp","LocalIPType":"Private","#,
                r#""RemoteIPType":"Public","InitiatingProcessIntegrityLevel":"High","InitiatingProcessFileName":"w3wp.exe","#,
                r#""InitiatingProcessFolderPath":"c:\\windows\\system32\\inetsrv\\w3wp.exe","InitiatingProcessId":4312,"#,
                r#""InitiatingProcessAccountDomain":"iis apppool","InitiatingProcessAccountName":"defaultapppool","#,
                r#""ReportId":{},"AdditionalFields":{},"MachineGroup":"Web Frontend"}}"#
            ),
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            (x >> 5) % 10_000_000,
            dev,
            dev + 1,
            action,
            1 + (x >> 12) % 223,
            (x >> 20) % 256,
            (x >> 28) % 256,
            (x >> 36) % 256,
            remote,
            dev,
            local,
            10_000 + i,
            af
        );
    }
    out.into_bytes()
}
