//! Which counter an event feeds. This is where Defender's action types become traffic classes:
//! the one place that decides what "inbound", "SYN" or "web" means, shared by every rule.

use serde::{Deserialize, Serialize};

use crate::model::{ActionType, Direction, Event, Protocol};

/// Inbound traffic classes, one per flood vector floodwatch tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Class {
    /// Inbound TCP connections accepted on a web port (HTTP/HTTPS connection floods).
    Web = 0,
    /// Inbound SYNs (`ConnectionAttempt` to a service port): SYN floods, spoofed or not.
    Syn = 1,
    /// Inbound connections that failed (`ConnectionFailed*` to a service port).
    Failed = 2,
    /// Inbound UDP.
    Udp = 3,
    /// Inbound ICMP (`IcmpConnectionInspected`, direction In).
    Icmp = 4,
    /// Any other inbound connection (SSH, RDP, non-web TCP ports).
    OtherInbound = 5,
}

impl Class {
    pub const COUNT: usize = 6;
    pub const ALL: [Class; Class::COUNT] = [
        Class::Web,
        Class::Syn,
        Class::Failed,
        Class::Udp,
        Class::Icmp,
        Class::OtherInbound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Web => "web",
            Class::Syn => "syn",
            Class::Failed => "failed",
            Class::Udp => "udp",
            Class::Icmp => "icmp",
            Class::OtherInbound => "other-inbound",
        }
    }
}

/// A set of TCP/UDP ports as a 65,536-bit bitmap: membership is one load and a mask.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet(Box<[u64; 1024]>);

impl PortSet {
    pub fn new(ports: &[u16]) -> Self {
        let mut s = PortSet(Box::new([0; 1024]));
        for &p in ports {
            s.0[p as usize >> 6] |= 1 << (p & 63);
        }
        s
    }

    #[inline]
    pub fn contains(&self, p: u16) -> bool {
        self.0[p as usize >> 6] & (1 << (p & 63)) != 0
    }

    pub fn to_vec(&self) -> Vec<u16> {
        (0..=u16::MAX).filter(|&p| self.contains(p)).collect()
    }
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.to_vec()).finish()
    }
}

/// Which ports count as what. Built from validated configuration by the CLI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassifyConfig {
    /// The seed rule's ports (`--ports`, default 443): inbound connections accepted here are the
    /// seed rule's `RequestCount`.
    pub seed_ports: PortSet,
    /// Web ports for the HTTP/HTTPS connection-flood vector (default 80, 443, 8080, 8443).
    pub web_ports: PortSet,
    /// Sources whose traffic is legitimate by declaration (load generators, monitors):
    /// `--allow-source CIDR`. Their inbound connections are still counted, and also tallied in
    /// [`crate::BinAgg::allowed`], so a surge they cause can be shown as suppressed.
    pub allow: AllowList,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig {
            seed_ports: PortSet::new(&[443]),
            web_ports: PortSet::new(&[80, 443, 8080, 8443]),
            allow: AllowList::default(),
        }
    }
}

/// A list of source networks (CIDR), IPv4 and IPv6 alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowList {
    /// (network, prefix length in the 128-bit space: IPv4 /n is stored as /(96+n)).
    nets: Vec<(u128, u8)>,
}

impl AllowList {
    /// Parses `203.0.113.0/24`, `2001:db8::/32`, or a bare address (a /32 or /128).
    pub fn add_cidr(&mut self, s: &str) -> Result<(), String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip = crate::model::Ip::parse(addr.trim().as_bytes())
            .ok_or_else(|| format!("not an IP network: {s:?}"))?;
        let max = if ip.is_v4() { 32 } else { 128 };
        let len: u8 = match len {
            Some(l) => l
                .trim()
                .parse()
                .ok()
                .filter(|&l: &u8| l <= max)
                .ok_or_else(|| format!("bad prefix length in {s:?} (0..={max})"))?,
            None => max,
        };
        let len = if ip.is_v4() { len + 96 } else { len };
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len as u32)
        };
        self.nets.push((ip.0 & mask, len));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    #[inline]
    pub fn contains(&self, ip: crate::model::Ip) -> bool {
        self.nets.iter().any(|&(net, len)| {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len as u32)
            };
            ip.0 & mask == net
        })
    }
}

/// What one event contributes to its bin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The class whose connection count (and source sketches) this event feeds.
    pub count: Option<Class>,
    /// The class whose byte/packet totals this event feeds (inspected rows feed bytes only: the
    /// connection itself was already counted by its `InboundConnectionAccepted` row).
    pub bytes: Option<Class>,
    /// Counted by the seed rule (inbound accepted on a seed port, any protocol).
    pub seed_count: bool,
    /// Feeds the seed rule's `TotalBytes` (inbound inspected row on a seed port).
    pub seed_bytes: bool,
}

impl ClassifyConfig {
    /// A port a server listens on: well-known, or configured as web or seed port.
    #[inline]
    fn is_service(&self, p: Option<u16>) -> bool {
        match p {
            Some(p) => p < 1024 || self.web_ports.contains(p) || self.seed_ports.contains(p),
            None => false,
        }
    }

    /// The remote side looks like a client: an ephemeral port, or none recorded.
    #[inline]
    fn remote_is_client(&self, p: Option<u16>) -> bool {
        match p {
            Some(p) => p >= 1024 && !self.is_service(Some(p)),
            None => true,
        }
    }

    #[inline]
    fn port_class(&self, ev: &Event) -> Class {
        match ev.protocol {
            Protocol::Udp => Class::Udp,
            Protocol::Icmp => Class::Icmp,
            _ if ev.local_port.is_some_and(|p| self.web_ports.contains(p)) => Class::Web,
            _ => Class::OtherInbound,
        }
    }

    /// Whether a handshake or failure row is inbound: `AdditionalFields.direction` when it
    /// says, else the ports (a service port here, a client port there).
    #[inline]
    fn inbound(&self, ev: &Event) -> bool {
        match ev.direction {
            Direction::In => true,
            Direction::Out => false,
            Direction::Unknown => {
                self.is_service(ev.local_port) && self.remote_is_client(ev.remote_port)
            }
        }
    }

    /// The class of an inbound SYN row: `Syn`, unless its `Tcp Flags` say it was not a
    /// connection-opening SYN (an ACK, a RST...), which is other inbound traffic.
    #[inline]
    fn syn_class(ev: &Event) -> Class {
        match ev.tcp_flags {
            Some(f) if !crate::model::tcp::is_syn(f) => Class::OtherInbound,
            _ => Class::Syn,
        }
    }

    /// The table of action types (also in the README, "Action types"):
    ///
    /// | action type | counts as |
    /// |---|---|
    /// | `InboundConnectionAccepted` | web (TCP on a web port), udp, icmp or other-inbound; the seed's count on a seed port |
    /// | `InboundConnectionAttempt` | syn (other-inbound when `Tcp Flags` is not a SYN), any local port |
    /// | `ConnectionAttempt` | syn when inbound: `direction` In, or (no direction) to a service port from a client port |
    /// | `InboundConnectionAcknowledged`, `ConnectionAcknowledged` | nothing: the device's SYN/ACK answers a SYN its attempt row already counted |
    /// | `ConnectionFailed`, `ConnectionFailedAggregatedReport` | failed when inbound (as `ConnectionAttempt`), weighted |
    /// | `IcmpConnectionInspected` | icmp count and bytes unless `direction` is Out |
    /// | other `*ConnectionInspected` | bytes only (of the port's class), when `direction` is In |
    /// | `ConnectionSuccess`, `ConnectionRequest`, `ConnectionSuccessAggregatedReport` | nothing: outbound |
    /// | `ConnectionFound`, `ListeningConnectionCreated`, `NetworkSignatureInspected`, `InboundInternetScanInspected` | nothing: snapshots, listeners and signature hits are not connections |
    /// | anything else | nothing; counted by name as an unknown action type |
    #[inline]
    pub fn classify(&self, ev: &Event) -> Verdict {
        let on_seed_port = ev.local_port.is_some_and(|p| self.seed_ports.contains(p));
        match ev.action {
            ActionType::InboundConnectionAccepted => Verdict {
                count: Some(self.port_class(ev)),
                bytes: None,
                seed_count: on_seed_port,
                seed_bytes: false,
            },
            // Inbound by name: the SYN-flood signal as Defender logs it.
            ActionType::InboundConnectionAttempt if ev.direction != Direction::Out => Verdict {
                count: Some(Self::syn_class(ev)),
                ..Verdict::default()
            },
            ActionType::ConnectionAttempt if self.inbound(ev) => Verdict {
                count: Some(Self::syn_class(ev)),
                ..Verdict::default()
            },
            ActionType::ConnectionFailed | ActionType::ConnectionFailedAggregatedReport
                if self.inbound(ev) =>
            {
                Verdict {
                    count: Some(Class::Failed),
                    ..Verdict::default()
                }
            }
            ActionType::IcmpConnectionInspected if ev.direction != Direction::Out => Verdict {
                count: Some(Class::Icmp),
                bytes: Some(Class::Icmp),
                seed_count: false,
                seed_bytes: false,
            },
            a if a.is_inspected() && ev.direction == Direction::In => Verdict {
                count: None,
                bytes: Some(self.port_class(ev)),
                seed_count: false,
                seed_bytes: on_seed_port,
            },
            _ => Verdict::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: ActionType, proto: Protocol, local: u16, remote: u16) -> Event {
        Event {
            action,
            protocol: proto,
            local_port: Some(local),
            remote_port: Some(remote),
            weight: 1,
            ..Event::default()
        }
    }

    #[test]
    fn allow_list() {
        let mut a = AllowList::default();
        a.add_cidr("10.50.0.0/16").unwrap();
        a.add_cidr("2001:db8::/32").unwrap();
        a.add_cidr("198.51.100.7").unwrap();
        let ip = |s: &str| crate::model::Ip::parse(s.as_bytes()).unwrap();
        assert!(a.contains(ip("10.50.3.4")));
        assert!(!a.contains(ip("10.51.0.1")));
        assert!(a.contains(ip("2001:db8:ffff::1")));
        assert!(a.contains(ip("198.51.100.7")));
        assert!(!a.contains(ip("198.51.100.8")));
        assert!(a.add_cidr("10.0.0.0/33").is_err());
        assert!(a.add_cidr("banana/8").is_err());
    }

    #[test]
    fn classes() {
        let c = ClassifyConfig::default();
        use ActionType::*;
        let v = c.classify(&ev(InboundConnectionAccepted, Protocol::Tcp, 443, 50123));
        assert_eq!((v.count, v.seed_count), (Some(Class::Web), true));
        let v = c.classify(&ev(InboundConnectionAccepted, Protocol::Udp, 443, 50123));
        assert_eq!(
            (v.count, v.seed_count),
            (Some(Class::Udp), true),
            "HTTP/3 over UDP 443 is still the seed's port"
        );
        let v = c.classify(&ev(InboundConnectionAccepted, Protocol::Tcp, 22, 50123));
        assert_eq!((v.count, v.seed_count), (Some(Class::OtherInbound), false));
        assert_eq!(
            c.classify(&ev(ConnectionAttempt, Protocol::Tcp, 443, 40000))
                .count,
            Some(Class::Syn)
        );
        assert_eq!(
            c.classify(&ev(ConnectionAttempt, Protocol::Tcp, 51000, 443))
                .count,
            None,
            "the device's own outbound SYN"
        );
        assert_eq!(
            c.classify(&ev(ConnectionSuccess, Protocol::Tcp, 51000, 443)),
            Verdict::default(),
            "outbound HTTPS is not the seed's traffic"
        );
        let mut icmp = ev(IcmpConnectionInspected, Protocol::Icmp, 0, 0);
        icmp.direction = Direction::In;
        assert_eq!(c.classify(&icmp).count, Some(Class::Icmp));
        let mut ssl = ev(SslConnectionInspected, Protocol::Tcp, 443, 50000);
        ssl.direction = Direction::In;
        let v = c.classify(&ssl);
        assert_eq!(
            (v.count, v.bytes, v.seed_bytes),
            (None, Some(Class::Web), true)
        );
        ssl.direction = Direction::Out;
        assert_eq!(c.classify(&ssl), Verdict::default());
    }

    #[test]
    fn handshake_rows_by_direction_and_flags() {
        let c = ClassifyConfig::default();
        use ActionType::*;
        // Defender's inbound SYN: a SYN whatever the local port.
        let mut syn = ev(InboundConnectionAttempt, Protocol::Tcp, 49999, 51000);
        syn.tcp_flags = Some(2);
        assert_eq!(c.classify(&syn).count, Some(Class::Syn));
        syn.tcp_flags = None;
        assert_eq!(c.classify(&syn).count, Some(Class::Syn), "no flags: a SYN");
        syn.tcp_flags = Some(0x14); // RST/ACK
        assert_eq!(c.classify(&syn).count, Some(Class::OtherInbound));
        // The device's SYN/ACK answers a SYN already counted: counting it would double a flood.
        let mut ack = ev(InboundConnectionAcknowledged, Protocol::Tcp, 443, 51000);
        ack.tcp_flags = Some(18);
        assert_eq!(c.classify(&ack), Verdict::default());
        assert_eq!(
            c.classify(&ev(ConnectionAcknowledged, Protocol::Tcp, 443, 51000)),
            Verdict::default()
        );
        // ConnectionAttempt: the direction decides when present, else the ports.
        let mut att = ev(ConnectionAttempt, Protocol::Tcp, 51000, 443);
        assert_eq!(c.classify(&att).count, None, "outbound by ports");
        att.direction = Direction::In;
        assert_eq!(
            c.classify(&att).count,
            Some(Class::Syn),
            "inbound by direction"
        );
        let mut att = ev(ConnectionAttempt, Protocol::Tcp, 443, 51000);
        att.direction = Direction::Out;
        assert_eq!(c.classify(&att).count, None, "outbound by direction");
        let mut failed = ev(ConnectionFailed, Protocol::Tcp, 51000, 443);
        failed.direction = Direction::In;
        assert_eq!(c.classify(&failed).count, Some(Class::Failed));
        // Every other known type counts for nothing; unknown ones neither.
        for a in [
            ConnectionSuccess,
            ConnectionRequest,
            ConnectionFound,
            ListeningConnectionCreated,
            ConnectionSuccessAggregatedReport,
            NetworkSignatureInspected,
            InboundInternetScanInspected,
            Other,
        ] {
            assert_eq!(
                c.classify(&ev(a, Protocol::Tcp, 443, 51000)),
                Verdict::default(),
                "{a:?}"
            );
        }
    }
}
