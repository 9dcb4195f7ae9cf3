//! Where notifications go: JSON lines, OCSF Detection Findings, CEF over syslog (per alert), and
//! webhook, Teams and Slack (per incident change: opened, escalated, closed).
//!
//! Each sink delivers from the outbox in the database, in order, with its own cursor; see
//! [`deliver`].

pub mod deliver;
pub mod format;

use std::path::PathBuf;
use std::sync::Arc;

pub use deliver::DeliveryOptions;

/// Starts one delivery task per sink ([`deliver::start`]); returns a report of their status
/// for the API, and the tasks.
pub fn start_all(
    specs: &[SinkSpec],
    shared: Arc<crate::engine::Shared>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    opts: &DeliveryOptions,
) -> anyhow::Result<(crate::api::SinkReport, Vec<tokio::task::JoinHandle<()>>)> {
    let (sinks, tasks) = deliver::start(specs, shared, shutdown, opts.clone())?;
    let report: crate::api::SinkReport =
        Arc::new(move || serde_json::to_value(sinks.snapshot()).unwrap_or(serde_json::Value::Null));
    Ok((report, tasks))
}

/// A `--notify` as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// `jsonl:PATH`: each unsuppressed alert (early and bin) as the alert JSON plus `AlertId`,
    /// `Stage`, `DetectedAt`.
    Jsonl(PathBuf),
    /// `ocsf:PATH`: each alert as an OCSF Detection Finding (class 2004), JSON lines.
    Ocsf(PathBuf),
    /// `webhook:URL`: incident changes as JSON POSTs.
    Webhook(String),
    /// `teams:URL`: incident changes as Adaptive Cards for a Teams Workflows webhook.
    Teams(String),
    /// `slack:URL`: incident changes as Slack Block Kit messages.
    Slack(String),
    /// `syslog+udp://HOST:PORT`: each alert as a CEF line in an RFC 5424 syslog message.
    SyslogUdp(String),
    /// `syslog+tcp://HOST:PORT`: the same over TCP (octet-counted framing).
    SyslogTcp(String),
}

impl SinkSpec {
    /// Which outbox kinds it takes: `alert` or `incident`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkSpec::Jsonl(_)
            | SinkSpec::Ocsf(_)
            | SinkSpec::SyslogUdp(_)
            | SinkSpec::SyslogTcp(_) => "alert",
            SinkSpec::Webhook(_) | SinkSpec::Teams(_) | SinkSpec::Slack(_) => "incident",
        }
    }

    /// A stable name: its cursor's key in the database and its metrics label. URLs are
    /// redacted ([`redact`]).
    pub fn name(&self) -> String {
        match self {
            SinkSpec::Jsonl(p) => format!("jsonl:{}", p.display()),
            SinkSpec::Ocsf(p) => format!("ocsf:{}", p.display()),
            SinkSpec::Webhook(u) => format!("webhook:{}", redact(u)),
            SinkSpec::Teams(u) => format!("teams:{}", redact(u)),
            SinkSpec::Slack(u) => format!("slack:{}", redact(u)),
            SinkSpec::SyslogUdp(a) => format!("syslog+udp://{a}"),
            SinkSpec::SyslogTcp(a) => format!("syslog+tcp://{a}"),
        }
    }
}

/// A webhook URL without its path and query, which for Teams and Slack are the credential:
/// `https://host/…#1a2b3c4d` (a hash of the whole URL tells two hooks on one host apart). This is
/// what logs, metrics labels, the status API and the cursor's key show.
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    let mut h: u32 = 0x811c_9dc5;
    for b in url.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{scheme}://{host}/…#{h:08x}")
}

impl std::str::FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let url = |u: &str| -> Result<String, String> {
            if u.starts_with("http://") || u.starts_with("https://") {
                Ok(u.to_owned())
            } else {
                Err(format!("notify {s:?}: expected an http:// or https:// URL"))
            }
        };
        let addr = |a: &str| -> Result<String, String> {
            match a.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(a.to_owned()),
                _ => Err(format!("notify {s:?}: expected HOST:PORT")),
            }
        };
        if let Some(p) = s.strip_prefix("jsonl:") {
            Ok(SinkSpec::Jsonl(p.into()))
        } else if let Some(p) = s.strip_prefix("ocsf:") {
            Ok(SinkSpec::Ocsf(p.into()))
        } else if let Some(u) = s.strip_prefix("webhook:") {
            Ok(SinkSpec::Webhook(url(u)?))
        } else if let Some(u) = s.strip_prefix("teams:") {
            Ok(SinkSpec::Teams(url(u)?))
        } else if let Some(u) = s.strip_prefix("slack:") {
            Ok(SinkSpec::Slack(url(u)?))
        } else if let Some(a) = s.strip_prefix("syslog+udp://") {
            Ok(SinkSpec::SyslogUdp(addr(a)?))
        } else if let Some(a) = s.strip_prefix("syslog+tcp://") {
            Ok(SinkSpec::SyslogTcp(addr(a)?))
        } else {
            Err(format!(
                "notify {s:?}: expected jsonl:PATH, ocsf:PATH, webhook:URL, teams:URL, slack:URL, syslog+udp://HOST:PORT or syslog+tcp://HOST:PORT"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_names_keep_secrets_out() {
        let t: SinkSpec =
            "teams:https://contoso.webhook.office.com/webhookb2/SECRET/IncomingWebhook/KEY?sig=abc"
                .parse()
                .unwrap();
        assert_eq!(t.kind(), "incident");
        let n = t.name();
        assert!(
            n.starts_with("teams:https://contoso.webhook.office.com/…#"),
            "{n}"
        );
        assert!(!n.contains("SECRET") && !n.contains("sig="), "{n}");
        let other: SinkSpec = "teams:https://contoso.webhook.office.com/webhookb2/OTHER"
            .parse()
            .unwrap();
        assert_ne!(other.name(), n, "two hooks on one host have two cursors");
        let u: SinkSpec = "webhook:https://user:pw@hooks.example/x".parse().unwrap();
        assert!(!u.name().contains("pw"), "{}", u.name());
        assert_eq!(
            "jsonl:/var/log/a.jsonl".parse::<SinkSpec>().unwrap(),
            SinkSpec::Jsonl("/var/log/a.jsonl".into())
        );
        assert_eq!(
            "syslog+udp://127.0.0.1:514"
                .parse::<SinkSpec>()
                .unwrap()
                .kind(),
            "alert"
        );
        for bad in [
            "teams:ftp://x",
            "syslog+tcp://nohost",
            "syslog+udp://h:99999",
            "mail:x@y",
            "",
        ] {
            assert!(bad.parse::<SinkSpec>().is_err(), "{bad}");
        }
    }
}
