//! The record model: one row of `DeviceNetworkEvents`, reduced to what detection needs.
//!
//! An [`Event`] is small and `Copy`: strings are gone (the device is an interned id, the IP an
//! integer), so readers can fill reusable `Vec<Event>` batches without allocating per record.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::time::Nanos;

/// Index of a device name in a [`crate::DeviceTable`]. Only meaningful with its table.
pub type DeviceId = u32;

/// An IP address as one integer: IPv6 as is, IPv4 as the IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`), so both families share one key space and hash the same way everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Ip(pub u128);

impl Ip {
    pub fn v4(a: [u8; 4]) -> Ip {
        Ip(0xffff_0000_0000u128 | u32::from_be_bytes(a) as u128)
    }

    pub fn is_v4(self) -> bool {
        self.0 >> 32 == 0xffff
    }

    /// The network prefix used to measure how widely sources are spread: /24 for IPv4, /48 for
    /// IPv6 (the usual smallest routed prefixes).
    pub fn prefix(self) -> Ip {
        if self.is_v4() {
            Ip(self.0 & !0xff)
        } else {
            Ip(self.0 & !((1u128 << 80) - 1))
        }
    }

    pub fn to_std(self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }

    /// Parses an IPv4 or IPv6 literal (IPv4-mapped IPv6 literals become the IPv4 address).
    pub fn parse(s: &[u8]) -> Option<Ip> {
        if let Some(ip) = parse_v4_fast(s) {
            return Some(ip);
        }
        let s = std::str::from_utf8(s).ok()?;
        match s.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) => Some(Ip::v4(v4.octets())),
            IpAddr::V6(v6) => Some(Ip(u128::from(v6))),
        }
    }
}

/// Dotted-quad parser without allocation or UTF-8 checks; the common case in this telemetry.
#[inline]
fn parse_v4_fast(s: &[u8]) -> Option<Ip> {
    let mut out = [0u8; 4];
    let mut part = 0usize;
    let mut val = 0u32;
    let mut len = 0usize;
    for &c in s {
        match c {
            b'0'..=b'9' => {
                if len > 0 && val == 0 {
                    return None; // leading zero: ambiguous (octal in some parsers), reject like std
                }
                val = val * 10 + (c - b'0') as u32;
                len += 1;
                if val > 255 || len > 3 {
                    return None;
                }
            }
            b'.' => {
                if len == 0 || part == 3 {
                    return None;
                }
                out[part] = val as u8;
                part += 1;
                val = 0;
                len = 0;
            }
            _ => return None,
        }
    }
    if part != 3 || len == 0 {
        return None;
    }
    out[3] = val as u8;
    Some(Ip::v4(out))
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_std().fmt(f)
    }
}

impl From<Ip> for String {
    fn from(ip: Ip) -> String {
        ip.to_string()
    }
}

impl TryFrom<String> for Ip {
    type Error = String;
    fn try_from(s: String) -> Result<Ip, String> {
        Ip::parse(s.as_bytes()).ok_or_else(|| format!("not an IP address: {s:?}"))
    }
}

impl From<IpAddr> for Ip {
    fn from(a: IpAddr) -> Ip {
        match a {
            IpAddr::V4(v4) => Ip::v4(v4.octets()),
            IpAddr::V6(v6) => Ip(u128::from(v6)),
        }
    }
}

impl From<Ipv4Addr> for Ip {
    fn from(a: Ipv4Addr) -> Ip {
        Ip::v4(a.octets())
    }
}

/// Transport protocol, parsed case-insensitively from the `Protocol` column: `Tcp*` is TCP
/// (Defender also writes `TcpV4`/`TcpV6`), `Udp*` is UDP, `Icmp*` is ICMP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    /// A value we do not know.
    Other,
    /// Empty, null, `Unknown` or absent.
    #[default]
    Unknown,
}

impl Protocol {
    pub fn parse(s: &[u8]) -> Protocol {
        fn starts(s: &[u8], p: &[u8]) -> bool {
            s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p)
        }
        if s.is_empty() || s.eq_ignore_ascii_case(b"unknown") {
            Protocol::Unknown
        } else if starts(s, b"tcp") {
            Protocol::Tcp
        } else if starts(s, b"udp") {
            Protocol::Udp
        } else if starts(s, b"icmp") {
            Protocol::Icmp
        } else {
            Protocol::Other
        }
    }
}

/// `AdditionalFields.direction` of `*ConnectionInspected` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Direction {
    In,
    Out,
    #[default]
    Unknown,
}

impl Direction {
    pub fn parse(s: &[u8]) -> Direction {
        if s.eq_ignore_ascii_case(b"in") || s.eq_ignore_ascii_case(b"inbound") {
            Direction::In
        } else if s.eq_ignore_ascii_case(b"out") || s.eq_ignore_ascii_case(b"outbound") {
            Direction::Out
        } else {
            Direction::Unknown
        }
    }
}

macro_rules! action_types {
    ($($v:ident),* $(,)?) => {
        /// The `ActionType` column. Unknown values are kept as [`ActionType::Other`] rather than
        /// rejected: Microsoft adds action types over time.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
        pub enum ActionType {
            $($v,)*
            #[default]
            Other,
        }

        impl ActionType {
            pub const ALL: &[ActionType] = &[$(ActionType::$v,)* ActionType::Other];

            /// Exact, case-sensitive match on Defender's spelling.
            pub fn parse(s: &[u8]) -> ActionType {
                $(if s == stringify!($v).as_bytes() { return ActionType::$v; })*
                ActionType::Other
            }

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ActionType::$v => stringify!($v),)*
                    ActionType::Other => "Other",
                }
            }
        }
    };
}

action_types!(
    InboundConnectionAccepted,
    InboundConnectionAttempt,
    InboundConnectionAcknowledged,
    ConnectionAttempt,
    ConnectionAcknowledged,
    ConnectionSuccess,
    ConnectionFailed,
    ConnectionRequest,
    ConnectionFound,
    ListeningConnectionCreated,
    ConnectionSuccessAggregatedReport,
    ConnectionFailedAggregatedReport,
    HttpConnectionInspected,
    SslConnectionInspected,
    DnsConnectionInspected,
    IcmpConnectionInspected,
    SshConnectionInspected,
    FtpConnectionInspected,
    SmtpConnectionInspected,
    NetworkSignatureInspected,
    InboundInternetScanInspected,
);

impl ActionType {
    /// `*ConnectionInspected`: Zeek-parsed sessions whose `AdditionalFields` carry byte and
    /// packet counters and a direction.
    pub fn is_inspected(self) -> bool {
        matches!(
            self,
            ActionType::HttpConnectionInspected
                | ActionType::SslConnectionInspected
                | ActionType::DnsConnectionInspected
                | ActionType::IcmpConnectionInspected
                | ActionType::SshConnectionInspected
                | ActionType::FtpConnectionInspected
                | ActionType::SmtpConnectionInspected
        )
    }

    /// Hourly roll-ups whose weight is `AdditionalFields.uniqueEventsAggregated`.
    pub fn is_aggregated_report(self) -> bool {
        matches!(
            self,
            ActionType::ConnectionSuccessAggregatedReport
                | ActionType::ConnectionFailedAggregatedReport
        )
    }

    /// Rows whose `AdditionalFields.direction` and `"Tcp Flags"` decide their class: the
    /// inspected sessions, and the handshake and failure rows whose direction the action type
    /// alone does not settle. Every reader fills [`Event::direction`] and [`Event::tcp_flags`]
    /// for these and only these, so that one row gives one event whatever path read it.
    pub fn reads_direction(self) -> bool {
        self.is_inspected()
            || matches!(
                self,
                ActionType::InboundConnectionAttempt
                    | ActionType::InboundConnectionAcknowledged
                    | ActionType::ConnectionAttempt
                    | ActionType::ConnectionAcknowledged
                    | ActionType::ConnectionFailed
                    | ActionType::ConnectionFailedAggregatedReport
            )
    }

    /// Whether any part of `AdditionalFields` is read for this action type.
    pub fn reads_additional_fields(self) -> bool {
        self.reads_direction() || self.is_aggregated_report()
    }
}

/// The weight of an aggregated report from its `uniqueEventsAggregated`: the count itself, at
/// least 1 (the row exists, so it stands for at least one connection; a 0 is read as a roll-up
/// of one rather than as a row that counts for nothing), saturated at `u32::MAX`. Absent: 1.
pub fn aggregated_weight(unique_events: Option<u64>) -> u32 {
    unique_events.map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX).max(1))
}

/// Action types of the other `Device*` tables of Advanced Hunting (process, file, registry,
/// logon, image-load, `DeviceEvents`): a row carrying one in a `union` export is a row of
/// another table, not an unknown network action. Not exhaustive (those tables have many more):
/// a row of another table is also told by having none of the network columns.
pub const OTHER_TABLE_ACTIONS: &[&str] = &[
    "ProcessCreated",
    "FileCreated",
    "FileModified",
    "FileDeleted",
    "FileRenamed",
    "RegistryKeyCreated",
    "RegistryKeyDeleted",
    "RegistryKeyRenamed",
    "RegistryValueSet",
    "RegistryValueDeleted",
    "LogonSuccess",
    "LogonFailed",
    "LogonAttempted",
    "ImageLoaded",
    "AntivirusDetection",
    "PowerShellCommand",
    "ScheduledTaskCreated",
    "ServiceInstalled",
    "DnsQueryResponse",
    "FirewallInboundConnectionBlocked",
    "FirewallOutboundConnectionBlocked",
    "FirewallInboundConnectionToAppBlocked",
    "ExploitGuardNetworkProtectionBlocked",
    "SmartScreenUrlWarning",
];

/// Whether `s` is one of [`OTHER_TABLE_ACTIONS`] (exact spelling).
pub fn is_other_table_action(s: &[u8]) -> bool {
    OTHER_TABLE_ACTIONS.iter().any(|a| a.as_bytes() == s)
}

/// TCP flag bits as Defender writes them in `AdditionalFields."Tcp Flags"` (the header's flag
/// byte: 2 is a SYN, 18 a SYN/ACK).
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    /// A connection-opening SYN: SYN set, ACK clear.
    pub fn is_syn(flags: u8) -> bool {
        flags & SYN != 0 && flags & ACK == 0
    }
}

/// One `DeviceNetworkEvents` row, as detection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Event {
    /// `Timestamp` (or `TimeGenerated`), nanoseconds since the epoch, UTC.
    pub ts: Nanos,
    /// `DeviceName`, interned.
    pub device: DeviceId,
    pub action: ActionType,
    pub protocol: Protocol,
    /// `AdditionalFields.direction`, for the action types that read it
    /// ([`ActionType::reads_direction`]); `Unknown` otherwise.
    pub direction: Direction,
    /// `RemoteIP`: the client, for inbound traffic.
    pub remote_ip: Option<Ip>,
    pub remote_port: Option<u16>,
    /// `LocalPort`: the service port, for inbound traffic.
    pub local_port: Option<u16>,
    /// `ReportId`; with DeviceName and Timestamp it identifies the event (used to drop duplicates).
    pub report_id: i64,
    /// How many connections this row stands for: `uniqueEventsAggregated` of aggregated reports,
    /// 1 otherwise.
    pub weight: u32,
    /// Bytes both ways (`orig_bytes + resp_bytes`) of inspected rows, when present.
    pub bytes: Option<u64>,
    /// Packets both ways (`orig_pkts + resp_pkts`) of inspected rows, when present.
    pub packets: Option<u64>,
    /// `AdditionalFields."Tcp Flags"` (0 to 255), for the action types that read it
    /// ([`ActionType::reads_direction`]), when present.
    #[serde(default)]
    pub tcp_flags: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_share_one_key_space() {
        let a = Ip::parse(b"203.0.113.7").unwrap();
        assert!(a.is_v4());
        assert_eq!(a.to_string(), "203.0.113.7");
        assert_eq!(Ip::parse(b"::ffff:203.0.113.7"), Some(a));
        assert_eq!(a.prefix().to_string(), "203.0.113.0");
        let b = Ip::parse(b"2001:db8:1:2::5").unwrap();
        assert!(!b.is_v4());
        assert_eq!(b.prefix().to_string(), "2001:db8:1::");
        for bad in [
            &b"1.2.3"[..],
            b"256.1.1.1",
            b"1.2.3.4.5",
            b"",
            b"01.2.3.4",
            b"x",
        ] {
            assert_eq!(Ip::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let j = serde_json::to_string(&a).unwrap();
        assert_eq!(j, "\"203.0.113.7\"");
        assert_eq!(serde_json::from_str::<Ip>(&j).unwrap(), a);
    }

    #[test]
    fn protocol_variants() {
        assert_eq!(Protocol::parse(b"TcpV4"), Protocol::Tcp);
        assert_eq!(Protocol::parse(b"tcp"), Protocol::Tcp);
        assert_eq!(Protocol::parse(b"UDP"), Protocol::Udp);
        assert_eq!(Protocol::parse(b"Icmp"), Protocol::Icmp);
        assert_eq!(Protocol::parse(b""), Protocol::Unknown);
        assert_eq!(Protocol::parse(b"Unknown"), Protocol::Unknown);
        assert_eq!(Protocol::parse(b"Sctp"), Protocol::Other);
    }

    #[test]
    fn action_types_round_trip() {
        for &a in ActionType::ALL {
            if a != ActionType::Other {
                assert_eq!(ActionType::parse(a.as_str().as_bytes()), a);
            }
        }
        assert_eq!(ActionType::parse(b"SomethingNew"), ActionType::Other);
    }
}
