//! The generator's typed record: one `DeviceNetworkEvents` row before it becomes text (for the
//! file formats) or an [`Event`] (for the in-memory path). Both views come from this one struct,
//! so a dataset written to disk and read back aggregates exactly like the in-memory one.

use std::fmt::Write as _;

use floodwatch_core::model::{ActionType, DeviceId, Direction, Event, Ip, Protocol};
use floodwatch_core::time::{NANOS_PER_SEC, Nanos, Rfc3339};

/// Transport protocol as Defender spells it in the `Protocol` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "Tcp",
            Proto::Udp => "Udp",
            Proto::Icmp => "Icmp",
        }
    }

    fn core(self) -> Protocol {
        match self {
            Proto::Tcp => Protocol::Tcp,
            Proto::Udp => Protocol::Udp,
            Proto::Icmp => Protocol::Icmp,
        }
    }
}

/// What the Zeek-parsed session looked like (`*ConnectionInspected` rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detail {
    Ssl { sni: u8 },
    Http { host: u8, status: u16 },
    Dns { query: u8 },
    Icmp { itype: u8 },
}

/// Counters of an inspected session. Zeek writes them as strings in `AdditionalFields`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Inspected {
    pub inbound: bool,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
    pub orig_pkts: u64,
    pub resp_pkts: u64,
    pub duration_ms: u32,
    pub detail: Detail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Extra {
    /// `AdditionalFields` is null (most rows).
    None,
    Inspected(Inspected),
    /// `*AggregatedReport`: one row standing for `unique` connections over the past hour.
    Aggregated {
        unique: u32,
    },
}

/// One simulated row. Strings live in the device table and static tables; the row is `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub ts: Nanos,
    /// Index into the simulated device list.
    pub device: u16,
    pub action: ActionType,
    pub proto: Proto,
    pub remote_ip: Ip,
    pub remote_port: Option<u16>,
    pub local_port: Option<u16>,
    /// Index into [`DOMAINS`]; 0 means `RemoteUrl` is empty (all inbound rows).
    pub remote_url: u8,
    pub report_id: i64,
    /// Index into [`PROCESSES`].
    pub process: u8,
    pub extra: Extra,
    /// 0 for normal traffic, `i + 1` for rows of scenario `i`: ground truth for tests.
    pub tag: u16,
}

/// The process that owns the socket (the `InitiatingProcess*` columns).
pub(crate) struct Process {
    pub file: &'static str,
    pub folder: &'static str,
    pub account: &'static str,
    pub domain: &'static str,
    pub pid: u32,
}

pub(crate) const P_W3WP: u8 = 0;
pub(crate) const P_NGINX: u8 = 1;
pub(crate) const P_DOTNET: u8 = 2;
pub(crate) const P_TRANSPORT: u8 = 3;
pub(crate) const P_SVCHOST: u8 = 4;
pub(crate) const P_SENSE: u8 = 5;
pub(crate) const P_SYSTEM: u8 = 6;

pub(crate) const PROCESSES: &[Process] = &[
    Process {
        file: "w3wp.exe",
        folder: "c:\\windows\\system32\\inetsrv\\w3wp.exe",
        account: "defaultapppool",
        domain: "iis apppool",
        pid: 4312,
    },
    Process {
        file: "nginx.exe",
        folder: "c:\\nginx\\nginx.exe",
        account: "network service",
        domain: "nt authority",
        pid: 2876,
    },
    Process {
        file: "dotnet.exe",
        folder: "c:\\program files\\dotnet\\dotnet.exe",
        account: "svc-orders-api",
        domain: "contoso",
        pid: 5120,
    },
    Process {
        file: "EdgeTransport.exe",
        folder: "c:\\program files\\microsoft\\exchange server\\v15\\bin\\edgetransport.exe",
        account: "network service",
        domain: "nt authority",
        pid: 3944,
    },
    Process {
        file: "svchost.exe",
        folder: "c:\\windows\\system32\\svchost.exe",
        account: "network service",
        domain: "nt authority",
        pid: 1580,
    },
    Process {
        file: "MsSense.exe",
        folder: "c:\\program files\\windows defender advanced threat protection\\mssense.exe",
        account: "system",
        domain: "nt authority",
        pid: 3208,
    },
    Process {
        file: "System",
        folder: "",
        account: "system",
        domain: "nt authority",
        pid: 4,
    },
];

/// Remote host names for outbound rows and inspected sessions; index 0 is "no URL".
pub(crate) const DOMAINS: &[&str] = &[
    "",
    "login.microsoftonline.com",
    "winatp-gw-weu.microsoft.com",
    "settings-win.data.microsoft.com",
    "www.contoso.com",
    "api.contoso.com",
    "mail.contoso.com",
    "shop.contoso.com",
    "ctldl.windowsupdate.com",
    "crl.microsoft.com",
    "api.stripe.com",
    "cdn.contoso-static.net",
];

impl Row {
    /// The same reduction the readers make from the text form: weight from
    /// `uniqueEventsAggregated`, bytes and packets both ways, direction from `AdditionalFields`.
    pub(crate) fn event(self, device: DeviceId) -> Event {
        let (direction, weight, bytes, packets) = match self.extra {
            Extra::None => (Direction::Unknown, 1, None, None),
            Extra::Aggregated { unique } => (Direction::Unknown, unique.max(1), None, None),
            Extra::Inspected(i) => (
                if i.inbound {
                    Direction::In
                } else {
                    Direction::Out
                },
                1,
                Some(i.orig_bytes + i.resp_bytes),
                Some(i.orig_pkts + i.resp_pkts),
            ),
        };
        Event {
            ts: self.ts,
            device,
            action: self.action,
            protocol: self.proto.core(),
            direction,
            remote_ip: Some(self.remote_ip),
            remote_port: self.remote_port,
            local_port: self.local_port,
            report_id: self.report_id,
            weight,
            bytes,
            packets,
            tcp_flags: None,
        }
    }

    /// `AdditionalFields` as JSON object text, or `None` for null. Values mimic Zeek's output
    /// as Defender passes it on: counters as strings.
    pub(crate) fn additional_fields(&self, out: &mut String) -> bool {
        out.clear();
        match self.extra {
            Extra::None => false,
            Extra::Aggregated { unique } => {
                // Infallible: writing to a String.
                let _ = write!(
                    out,
                    "{{\"uniqueEventsAggregated\":{unique},\"lastSeenTimestamp\":\"{}\"}}",
                    Rfc3339(self.ts - (self.report_id.rem_euclid(600)) * NANOS_PER_SEC)
                );
                true
            }
            Extra::Inspected(i) => {
                let dir = if i.inbound { "In" } else { "Out" };
                let _ = write!(out, "{{\"direction\":\"{dir}\",");
                match i.detail {
                    Detail::Ssl { sni } => {
                        let _ = write!(
                            out,
                            "\"version\":\"TLSv13\",\"cipher\":\"TLS_AES_256_GCM_SHA384\",\"server_name\":\"{}\",\"established\":true,",
                            DOMAINS[sni as usize % DOMAINS.len()]
                        );
                    }
                    Detail::Http { host, status } => {
                        let _ = write!(
                            out,
                            "\"method\":\"GET\",\"host\":\"{}\",\"uri\":\"/\",\"status_code\":\"{status}\",\"user_agent\":\"Mozilla/5.0 (Windows NT 10.0; Win64; x64)\",",
                            DOMAINS[host as usize % DOMAINS.len()]
                        );
                    }
                    Detail::Dns { query } => {
                        let _ = write!(
                            out,
                            "\"query\":\"{}\",\"qtype_name\":\"A\",\"rcode_name\":\"NOERROR\",",
                            DOMAINS[query as usize % DOMAINS.len()]
                        );
                    }
                    Detail::Icmp { itype } => {
                        let _ = write!(out, "\"icmp_type\":\"{itype}\",\"icmp_code\":\"0\",");
                    }
                }
                let _ = write!(
                    out,
                    "\"orig_bytes\":\"{}\",\"resp_bytes\":\"{}\",\"orig_pkts\":\"{}\",\"resp_pkts\":\"{}\",\"duration\":\"{}.{:03}\"}}",
                    i.orig_bytes,
                    i.resp_bytes,
                    i.orig_pkts,
                    i.resp_pkts,
                    i.duration_ms / 1000,
                    i.duration_ms % 1000
                );
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(extra: Extra) -> Row {
        Row {
            ts: 1_766_361_600 * NANOS_PER_SEC,
            device: 0,
            action: ActionType::SslConnectionInspected,
            proto: Proto::Tcp,
            remote_ip: Ip::v4([198, 51, 100, 7]),
            remote_port: Some(51_000),
            local_port: Some(443),
            remote_url: 0,
            report_id: 42,
            process: P_W3WP,
            extra,
            tag: 0,
        }
    }

    #[test]
    fn inspected_rows_carry_counters_and_direction() {
        let r = row(Extra::Inspected(Inspected {
            inbound: true,
            orig_bytes: 700,
            resp_bytes: 5300,
            orig_pkts: 9,
            resp_pkts: 11,
            duration_ms: 1250,
            detail: Detail::Ssl { sni: 4 },
        }));
        let mut s = String::new();
        assert!(r.additional_fields(&mut s));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["direction"], "In");
        assert_eq!(v["orig_bytes"], "700");
        assert_eq!(v["duration"], "1.250");
        assert_eq!(v["server_name"], "www.contoso.com");
        let e = r.event(3);
        assert_eq!(e.direction, Direction::In);
        assert_eq!(
            (e.bytes, e.packets, e.weight, e.device),
            (Some(6000), Some(20), 1, 3)
        );
    }

    #[test]
    fn aggregated_reports_weigh_their_count() {
        let r = row(Extra::Aggregated { unique: 37 });
        let mut s = String::new();
        assert!(r.additional_fields(&mut s));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["uniqueEventsAggregated"], 37);
        assert_eq!(r.event(0).weight, 37);
        assert!(!row(Extra::None).additional_fields(&mut s));
        assert!(s.is_empty());
    }
}
