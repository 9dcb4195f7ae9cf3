//! The alert record every rule emits. Its JSON keys keep the seed query's projected column names
//! (`TimeGenerated`, `DeviceName`, `RequestCount`, `UniqueSourceIPs`, `TotalBytes`,
//! `AttackConfidence`), so anything built on the Sentinel rule's output keeps working.

use serde::{Deserialize, Serialize};

use floodwatch_core::time::{Nanos, Rfc3339, parse_rfc3339};

/// `AttackConfidence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "Low",
            Confidence::Medium => "Medium",
            Confidence::High => "High",
        }
    }
}

/// Severity tiers (Sentinel's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
        }
    }
}

/// The flood vector an alert is labelled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vector {
    /// HTTP/HTTPS connection flood (DDoSia style).
    HttpsFlood,
    SynFlood,
    UdpFlood,
    IcmpFlood,
    /// Several vectors at once, none dominant.
    Mixed,
}

impl Vector {
    pub fn as_str(self) -> &'static str {
        match self {
            Vector::HttpsFlood => "https-flood",
            Vector::SynFlood => "syn-flood",
            Vector::UdpFlood => "udp-flood",
            Vector::IcmpFlood => "icmp-flood",
            Vector::Mixed => "mixed",
        }
    }

    /// MITRE ATT&CK techniques (tactic Impact, TA0040) for this vector.
    pub fn mitre(self) -> &'static [&'static str] {
        match self {
            // Connection floods exhaust the web service: Service Exhaustion Flood; DDoSia's
            // randomised request paths also aim at Application Exhaustion.
            Vector::HttpsFlood => &["T1499.002", "T1499.003"],
            Vector::SynFlood => &["T1499.002", "T1498.001"],
            Vector::UdpFlood | Vector::IcmpFlood => &["T1498.001"],
            Vector::Mixed => &["T1498.001", "T1499.002"],
        }
    }
}

/// Which rule produced an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleName {
    Seed,
    Floodwatch,
}

impl RuleName {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleName::Seed => "seed",
            RuleName::Floodwatch => "floodwatch",
        }
    }
}

/// What the bin was compared with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BaselineInfo {
    /// How the baseline was built, e.g. `"mean+5sd of 276 bins"` or `"seasonal median/MAD"`.
    pub method: String,
    /// Expected value (mean, or median) of the metric.
    pub expected: f64,
    /// Spread (sample stdev, or scaled MAD).
    pub spread: f64,
    /// The threshold the observed value was compared with.
    pub threshold: f64,
    /// How many bins the baseline was built from.
    pub bins: u64,
}

/// One of the heaviest sources of a bin. Analysts block addresses from this list, so `count` is
/// never more than the source made: exact, or a guaranteed lower bound with the upper one stated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TopSource {
    #[serde(rename = "IP")]
    pub ip: String,
    /// Connections the source made: exactly, when `exact`; otherwise at least this many.
    pub count: u64,
    /// Whether `count` is exact.
    #[serde(default)]
    pub exact: bool,
    /// When `count` is a lower bound: at most this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_upper_bound: Option<u64>,
}

impl TopSource {
    /// The count as a reader should see it: `4,210` or `>= 3,900 (<= 4,410)`.
    pub fn count_text(&self) -> String {
        match (self.exact, self.count_upper_bound) {
            (true, _) => self.count.to_string(),
            (false, Some(hi)) => format!(">={} (<={hi})", self.count),
            (false, None) => format!(">={}", self.count),
        }
    }
}

fn ser_time<S: serde::Serializer>(t: &Nanos, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Rfc3339(*t))
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Nanos, D::Error> {
    let s = String::deserialize(d)?;
    parse_rfc3339(s.as_bytes()).map_err(serde::de::Error::custom)
}

/// One alert: one device, one bin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Alert {
    /// Bin start, RFC 3339 UTC (`2025-12-22T09:20:00Z`).
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub time_generated: Nanos,
    pub device_name: String,
    /// Connections counted by the rule in this bin.
    pub request_count: u64,
    /// Distinct sources: exact up to 16,384, a bottom-k estimate above (relative standard
    /// error 0.78 %, as KQL's `dcount` at its default accuracy). Never above the bin's distinct
    /// sources of every vector, nor above `RequestCount`.
    #[serde(rename = "UniqueSourceIPs")]
    pub unique_source_ips: u64,
    /// Bytes of inspected inbound sessions; null when the telemetry has none.
    pub total_bytes: Option<u64>,
    pub attack_confidence: Confidence,
    pub rule: RuleName,
    /// The flood vector (floodwatch rule).
    pub vector: Option<Vector>,
    /// Share of the bin's inbound connections that belong to `vector`, 0..1.
    pub vector_share: Option<f64>,
    pub severity: Severity,
    /// Why it fired, as readable sentences with values and thresholds.
    pub reasons: Vec<String>,
    pub baseline: Option<BaselineInfo>,
    /// Share of the bin's sources never seen on this device before, 0..1.
    pub new_source_ratio: Option<f64>,
    pub top_sources: Vec<TopSource>,
    pub mitre_techniques: Vec<String>,
    pub suppressed: bool,
    /// Why a rule explains the surge. With `Suppressed: false` (the `log-only` suppression
    /// mode) the reason it would have been suppressed.
    pub suppression_reason: Option<String>,
    pub incident_id: Option<String>,
    /// Set when the alert judged only part of its bin (the input ended inside it, or a live
    /// early decision). The counts above are what was seen; the tests ran on their projection
    /// onto the whole bin at the rate seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialBin>,
}

/// How much of its bin a partial alert saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PartialBin {
    /// The share of the bin's width the data covered, 0..1.
    pub coverage: f64,
    /// `RequestCount` projected onto the whole bin: what the tests judged.
    pub projected_count: u64,
}

impl Alert {
    /// Output order of the seed query: `order by RequestCount desc`; ties broken by time and
    /// device so output is deterministic.
    pub fn seed_order(a: &Alert, b: &Alert) -> std::cmp::Ordering {
        b.request_count
            .cmp(&a.request_count)
            .then(a.time_generated.cmp(&b.time_generated))
            .then(a.device_name.cmp(&b.device_name))
    }
}
