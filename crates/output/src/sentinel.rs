//! `floodwatch export sentinel`: the rules as Microsoft Sentinel scheduled analytics rules.
//!
//! Two variants, each a KQL query over `DeviceNetworkEvents` built from the same settings
//! `detect` uses (bin width, ports, windows, thresholds):
//!
//! - [`Variant::Seed`]: the seed rule's intent, corrected as `--rule seed` implements it
//!   (inbound `LocalPort`, one baseline row per device from the zero-filled per-bin counts,
//!   bin-aligned windows, no `TotalBytes`).
//! - [`Variant::Floodwatch`]: the part of floodwatch's detector that one query can express:
//!   per-vector counts (web, SYN + failed, UDP, ICMP), a robust median / MAD baseline by
//!   percentiles over same-time-of-day and trailing bins, the new-source share over the
//!   novelty lookback, suppression of allow-listed, few-source, flash-crowd and planned
//!   surges, carpet bombing across devices, and confidence from independent signals.
//!
//! A rule is written as the YAML of Sentinel's content repository ([`Rule::to_yaml`]) or as
//! an ARM template ([`Rule::to_arm`]). The queries score only *closed* bins: each run scores
//! the bins that ended since the previous run, `ingestion_delay` back from the run time, so
//! a bin is scored once and when its events have (very likely) arrived.

use std::fmt::Write as _;

use floodwatch_core::BinWidth;
use floodwatch_core::time::NANOS_PER_SEC;
use floodwatch_detect::floodwatch::FloodwatchConfig;
use floodwatch_detect::seed::SeedParams;
use serde_json::{Value, json};

/// Which rule to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The seed Sentinel rule's intent, corrected (`detect --rule seed`).
    Seed,
    /// floodwatch's stronger tests, as far as KQL expresses them (`detect --rule floodwatch`).
    Floodwatch,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::Seed, Variant::Floodwatch];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Seed => "seed",
            Variant::Floodwatch => "floodwatch",
        }
    }

    /// The rule's id. Fixed per variant, not derived from the settings: Sentinel (and ARM)
    /// identify a rule by it, so re-exporting with tuned thresholds and deploying again updates
    /// the rule in place instead of adding a second one beside it. Two differently tuned copies
    /// in one workspace need their own id (`--id`).
    pub fn default_id(self) -> &'static str {
        match self {
            Variant::Seed => "ecd0e1c4-7492-4758-8586-33b06b05cfd3",
            Variant::Floodwatch => "285e54d8-0f69-43d3-b15b-b3de60cbddf8",
        }
    }
}

/// Everything an export reads, from the validated settings of a run.
#[derive(Clone, Debug)]
pub struct ExportSettings {
    pub width: BinWidth,
    pub seed: SeedParams,
    pub floodwatch: FloodwatchConfig,
    /// Ports of the web vector (`web_ports`).
    pub web_ports: Vec<u16>,
    /// Allow-listed source networks (CIDR or address), as given.
    pub allow_sources: Vec<String>,
    /// How far behind the run time the newest scored bin ends, in seconds: Defender-to-Sentinel
    /// ingestion takes minutes, and a bin scored before its events arrived would under-count.
    pub ingestion_delay_secs: i64,
}

/// One entity mapping: an entity type and (identifier, column) pairs.
#[derive(Clone, Debug, PartialEq)]
pub struct EntityMapping {
    pub entity_type: &'static str,
    pub fields: Vec<(&'static str, &'static str)>,
}

/// A Sentinel scheduled analytics rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub variant: Variant,
    pub id: String,
    pub name: String,
    pub description: String,
    /// The rule's severity; each alert's own comes from the `Severity` column.
    pub severity: &'static str,
    pub query_frequency_secs: i64,
    pub query_period_secs: i64,
    pub tactics: Vec<&'static str>,
    /// Techniques and sub-techniques (`T1498`, `T1498.001`, ...).
    pub techniques: Vec<&'static str>,
    pub query: String,
    pub entity_mappings: Vec<EntityMapping>,
    /// (key, column).
    pub custom_details: Vec<(&'static str, &'static str)>,
    pub alert_name_format: String,
    pub alert_description_format: String,
    pub version: String,
}

/// Scheduled rules run at most every 5 minutes.
const MIN_FREQUENCY_SECS: i64 = 300;
/// Sentinel's longest query period.
const MAX_PERIOD_SECS: i64 = 14 * 86_400;
/// Days of same-time-of-day history the exported query reads at most: with the novelty
/// lookback and the ingestion delay it has to fit in the 14-day query period.
const MAX_SEASONAL_DAYS: u32 = 13;

/// Checks that `s` is a GUID (8-4-4-4-12 hex digits).
pub fn check_guid(s: &str) -> Result<(), String> {
    let groups: Vec<&str> = s.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "not a GUID: {s:?} (expected e.g. {})",
            Variant::Seed.default_id()
        ))
    }
}

/// Builds the rule of `variant`; `id` overrides the variant's fixed id.
pub fn rule(variant: Variant, s: &ExportSettings, id: Option<&str>) -> Result<Rule, String> {
    let id = match id {
        Some(id) => {
            check_guid(id)?;
            id.to_ascii_lowercase()
        }
        None => variant.default_id().to_owned(),
    };
    if s.ingestion_delay_secs < 0 {
        return Err("the ingestion delay must not be negative".into());
    }
    let bin = s.width.secs();
    // The smallest multiple of the bin that a schedule allows: every run scores the bins that
    // closed since the previous one.
    let frequency = (MIN_FREQUENCY_SECS + bin - 1) / bin * bin;
    let (query, lookback) = match variant {
        Variant::Seed => seed_query(s, frequency),
        Variant::Floodwatch => floodwatch_query(s, frequency)?,
    };
    // The query reads from `lookback` before the newest scored bin's end, which is up to one
    // bin plus the ingestion delay before the run time.
    let period = round_up_minutes(lookback + s.ingestion_delay_secs + bin);
    if period > MAX_PERIOD_SECS {
        return Err(format!(
            "the {} rule would read {} of data, more than Sentinel's longest query period (14d); \
             shorten the baseline (seed.baseline_start, floodwatch.baseline_days, \
             floodwatch.novelty_days) or the ingestion delay",
            variant.as_str(),
            yaml_duration(period)
        ));
    }
    let bin_s = yaml_duration(bin);
    let r = match variant {
        Variant::Seed => {
            let c = &s.seed.cfg;
            Rule {
                variant,
                id,
                name: format!(
                    "DDoS: inbound connection surge on port(s) {} (corrected seed rule)",
                    ports_list(&c.ports)
                ),
                description: format!(
                    "Flags a device whose inbound connections to port(s) {ports} in a {bin_s} bin \
                     exceed the mean + {sigma} standard deviations of its own per-bin counts from \
                     {start} to {window} before the bin (empty bins counted as zero), or come from \
                     more than {distinct} distinct sources. This is the corrected form of the \
                     Sentinel rule written after the NoName057(16) attack on La Poste (December \
                     2025): it counts inbound connections (LocalPort, InboundConnectionAccepted) \
                     instead of the server's own outbound HTTPS, keeps one baseline row per \
                     device, scores only closed bins, and drops the TotalBytes column that does \
                     not exist. Confidence: High above {hc} connections from more than {hd} \
                     sources, Medium above {mc} from more than {md}, else Low. Exported by \
                     floodwatch {ver} (floodwatch detect --rule seed).",
                    ports = ports_list(&c.ports),
                    sigma = c.sigma,
                    start = c.baseline_start,
                    window = c.window,
                    distinct = c.distinct_threshold,
                    hc = c.high_count,
                    hd = c.high_distinct,
                    mc = c.medium_count,
                    md = c.medium_distinct,
                    ver = env!("CARGO_PKG_VERSION"),
                ),
                severity: "Medium",
                query_frequency_secs: frequency,
                query_period_secs: period,
                tactics: vec!["Impact"],
                techniques: vec!["T1498", "T1498.001", "T1499", "T1499.002", "T1499.003"],
                query,
                entity_mappings: host_and_ip(),
                custom_details: vec![
                    ("BinStart", "BinStart"),
                    ("RequestCount", "RequestCount"),
                    ("UniqueSourceIPs", "UniqueSourceIPs"),
                    ("BaselineMean", "BaselineMean"),
                    ("BaselineStdev", "BaselineStdev"),
                    ("Threshold", "Threshold"),
                    ("InboundBytes", "InboundBytes"),
                    ("AttackConfidence", "AttackConfidence"),
                    ("Reason", "Reason"),
                ],
                alert_name_format: "DDoS surge on {{DeviceName}}: {{RequestCount}} inbound connections in a bin".into(),
                alert_description_format: "{{DeviceName}} received {{RequestCount}} inbound connections from {{UniqueSourceIPs}} distinct sources in one bin (BinStart in the custom details).".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }
        }
        Variant::Floodwatch => {
            let f = &s.floodwatch;
            Rule {
                variant,
                id,
                name: "DDoS: flood by new sources against a device's robust baseline (floodwatch)"
                    .into(),
                description: format!(
                    "Flags a device whose inbound connections of one flood vector (web on ports \
                     {web}, SYN and failed connections to service ports, UDP, ICMP) in a {bin_s} \
                     bin reach the largest of {rr}x its baseline ({nr}x when most of the excess \
                     comes from sources new to the device), the baseline + {z} x 1.4826 MAD, and \
                     the baseline + {me} connections. The baseline is the median of the same time \
                     of day on up to {days} earlier days and of the last {short} bins, empty bins \
                     counted as zero; a source is new when the device has not seen it in \
                     {nov} days. Surges carried by allow-listed sources, by one source, by fewer \
                     than {ms} sources, or mostly by returning sources (a flash crowd), and those \
                     inside planned windows, are raised as Informational with the reason. \
                     Exported by floodwatch {ver} (floodwatch detect --rule floodwatch); the \
                     README says which of its tests a query cannot express.",
                    web = ports_list(&s.web_ports),
                    rr = f.rate_ratio,
                    nr = f.novel_rate_ratio,
                    z = f.z_threshold,
                    me = f.min_excess,
                    days = f.baseline_days.min(MAX_SEASONAL_DAYS),
                    short = f.short_term_bins,
                    nov = f.novelty_days,
                    ms = f.min_sources,
                    ver = env!("CARGO_PKG_VERSION"),
                ),
                severity: "High",
                query_frequency_secs: frequency,
                query_period_secs: period,
                tactics: vec!["Impact"],
                techniques: vec![
                    "T1498",
                    "T1498.001",
                    "T1498.002",
                    "T1499",
                    "T1499.002",
                    "T1499.003",
                ],
                query,
                entity_mappings: {
                    let mut m = host_and_ip();
                    m.push(EntityMapping {
                        entity_type: "IP",
                        fields: vec![("Address", "TopSourceIP")],
                    });
                    m
                },
                custom_details: vec![
                    ("BinStart", "BinStart"),
                    ("Vector", "Vector"),
                    ("Observed", "Observed"),
                    ("Expected", "Expected"),
                    ("Threshold", "Threshold"),
                    ("BaselineKind", "BaselineKind"),
                    ("UniqueSourceIPs", "UniqueSourceIPs"),
                    ("NewSourceShare", "NewShareOfExcess"),
                    ("TopSourceIP", "TopSourceIP"),
                    ("TopSourceShare", "TopSourceShare"),
                    ("Prefixes", "Prefixes"),
                    ("CarpetDevices", "CarpetDevices"),
                    ("AttackConfidence", "AttackConfidence"),
                    ("Suppressed", "Suppressed"),
                    ("SuppressionReason", "SuppressionReason"),
                    ("Reason", "Reason"),
                ],
                alert_name_format:
                    "DDoS {{Vector}} flood on {{DeviceName}} ({{AttackConfidence}} confidence)"
                        .into(),
                alert_description_format:
                    "{{DeviceName}}: {{Reason}} SuppressionReason: {{SuppressionReason}}".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }
        }
    };
    Ok(r)
}

fn host_and_ip() -> Vec<EntityMapping> {
    vec![
        EntityMapping {
            entity_type: "Host",
            fields: vec![("HostName", "HostName"), ("DnsDomain", "DnsDomain")],
        },
        EntityMapping {
            entity_type: "IP",
            fields: vec![("Address", "LocalIP")],
        },
    ]
}

fn round_up_minutes(secs: i64) -> i64 {
    (secs + 59) / 60 * 60
}

fn ports_list(ports: &[u16]) -> String {
    let v: Vec<String> = ports.iter().map(u16::to_string).collect();
    v.join(", ")
}

/// A KQL timespan literal (`5m`, `24h`, `90s`), in the largest unit that divides it.
fn kql_timespan(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A duration as Sentinel's YAML writes it (`5m`, `1h`, `2d`); whole minutes.
pub fn yaml_duration(secs: i64) -> String {
    kql_timespan(secs)
}

/// A duration in ISO 8601, as ARM wants it (`PT5M`, `PT1H`, `P2D`); whole minutes.
pub fn iso_duration(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("P{}D", s / 86_400),
        s if s % 3_600 == 0 => format!("PT{}H", s / 3_600),
        s => format!("PT{}M", s / 60),
    }
}

/// A number as a KQL real literal.
fn real(x: f64) -> String {
    let s = format!("{x}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

/// A KQL string literal (verbatim `@"..."`, where only `"` needs doubling).
fn kql_str(s: &str) -> String {
    format!("@\"{}\"", s.replace('"', "\"\""))
}

/// The `DnsDomain` / `HostName` split of Defender's FQDN `DeviceName`, and the projection
/// helpers both variants end with.
const HOST_COLUMNS: &str = "| extend HostName = tostring(split(DeviceName, \".\")[0])
| extend DnsDomain = iff(DeviceName has \".\", substring(DeviceName, strlen(HostName) + 1), \"\")";

/// Returns the query and how far before the newest scored bin's end it reads, in seconds.
fn seed_query(s: &ExportSettings, frequency: i64) -> (String, i64) {
    let c = &s.seed.cfg;
    let bin = s.width.secs();
    let window = s.seed.window / NANOS_PER_SEC;
    let start = s.seed.baseline_start / NANOS_PER_SEC;
    let base_bins = (start - window) / bin;
    let ports = ports_list(&c.ports);
    let stdev = if base_bins > 1 {
        "sqrt(max_of(0.0, (SumSq - baselineBins * BaselineMean * BaselineMean) / (baselineBins - 1)))"
    } else {
        // One baseline bin has no sample standard deviation; floodwatch uses 0.
        "0.0"
    };
    let q = format!(
        r#"// Corrected seed rule, exported by floodwatch {ver} (detect --rule seed, same settings).
// Per device and {bin_s} bin: inbound connections to port(s) {ports} (LocalPort; any protocol, HTTP/3 is UDP).
// Baseline: one row per device, mean and sample stdev of its per-bin counts over the bins
// from {start_s} to {window_s} before the scored bins, the bins without a connection counted as 0.
let timeBin = {bin_s};
let ingestionDelay = {delay_s};
let sigma = {sigma};
let distinctThreshold = {distinct};
// Only closed bins, once each: those that ended since the previous run ({freq_s} ago).
let scoredTo = bin(now() - ingestionDelay, timeBin);
let scoredFrom = scoredTo - {freq_s};
let baselineFrom = scoredTo - {start_s};
let baselineTo = scoredTo - {window_s};
let baselineBins = {base_bins}.0;
let perBin = DeviceNetworkEvents
    | where TimeGenerated >= baselineFrom and TimeGenerated < scoredTo
    | where LocalPort in ({ports})
    | extend Accepted = ActionType == "InboundConnectionAccepted"
    | extend Inspected = ActionType endswith "ConnectionInspected" and tostring(todynamic(AdditionalFields).direction) == "In"
    | where Accepted or Inspected
    | extend Bytes = tolong(todynamic(AdditionalFields).orig_bytes) + tolong(todynamic(AdditionalFields).resp_bytes)
    | summarize RequestCount = countif(Accepted), UniqueSourceIPs = dcountif(RemoteIP, Accepted),
        InspectedRows = countif(Inspected), Bytes = sumif(Bytes, Inspected), LocalIP = take_anyif(LocalIP, Accepted)
        by DeviceName, BinStart = bin(TimeGenerated, timeBin)
    | extend InboundBytes = iff(InspectedRows == 0, long(null), Bytes);
let baseline = perBin
    | where BinStart < baselineTo
    | summarize Sum = sum(todouble(RequestCount)), SumSq = sum(todouble(RequestCount) * RequestCount) by DeviceName
    | extend BaselineMean = Sum / baselineBins
    | extend BaselineStdev = {stdev}
    | project DeviceName, BaselineMean, BaselineStdev;
perBin
| where BinStart >= scoredFrom and RequestCount > 0
| join kind=leftouter baseline on DeviceName
| extend Threshold = BaselineMean + sigma * BaselineStdev
| where RequestCount > Threshold or UniqueSourceIPs > distinctThreshold
| extend AttackConfidence = case(
    RequestCount > {hc} and UniqueSourceIPs > {hd}, "High",
    RequestCount > {mc} and UniqueSourceIPs > {md}, "Medium",
    "Low")
| extend Severity = AttackConfidence
| extend Reason = strcat(
    iff(RequestCount > Threshold, strcat(RequestCount, " inbound connections > baseline mean ", round(BaselineMean, 2), " + ", sigma, " x stdev ", round(BaselineStdev, 2), " = ", round(Threshold, 2), ". "), ""),
    iff(UniqueSourceIPs > distinctThreshold, strcat(UniqueSourceIPs, " distinct sources > ", distinctThreshold, "."), ""))
{host}
| project BinStart, DeviceName, HostName, DnsDomain, LocalIP, RequestCount, UniqueSourceIPs, BaselineMean, BaselineStdev, Threshold, InboundBytes, AttackConfidence, Severity, Reason
| order by RequestCount desc
"#,
        ver = env!("CARGO_PKG_VERSION"),
        bin_s = kql_timespan(bin),
        delay_s = kql_timespan(s.ingestion_delay_secs),
        freq_s = kql_timespan(frequency),
        start_s = kql_timespan(start),
        window_s = kql_timespan(window),
        sigma = real(c.sigma),
        distinct = c.distinct_threshold,
        hc = c.high_count,
        hd = c.high_distinct,
        mc = c.medium_count,
        md = c.medium_distinct,
        host = HOST_COLUMNS,
    );
    (q, start)
}

/// KQL regex (RE2) of a maintenance-window device glob, matched case-insensitively as
/// floodwatch matches it: `*` any run, `?` one character, `[...]` a class (`[!...]` negated),
/// `{a,b}` alternatives.
fn glob_regex(glob: &str) -> String {
    let mut re = String::from("(?i)^");
    let mut in_class = false;
    let mut braces = 0u32;
    let mut chars = glob.chars().peekable();
    while let Some(ch) = chars.next() {
        if in_class {
            match ch {
                ']' => {
                    in_class = false;
                    re.push(']');
                }
                '\\' => re.push_str("\\\\"),
                c => re.push(c),
            }
            continue;
        }
        match ch {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '[' => {
                in_class = true;
                re.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    re.push('^');
                }
            }
            '{' => {
                braces += 1;
                re.push_str("(?:");
            }
            '}' if braces > 0 => {
                braces -= 1;
                re.push(')');
            }
            ',' if braces > 0 => re.push('|'),
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => re.push(c),
            c => {
                re.push('\\');
                re.push(c);
            }
        }
    }
    re.push('$');
    re
}

/// The `case()` arms of planned windows (a maintenance or load test) for `SuppressionReason`.
fn window_arms(f: &FloodwatchConfig) -> Result<String, String> {
    // Parsing the times once more here would duplicate the detector's checks: `validate` has
    // already accepted them, so only their RFC 3339 text is carried into `datetime()`.
    f.compile_windows()?;
    let mut out = String::new();
    for w in &f.windows {
        let why = if w.reason.is_empty() {
            "planned"
        } else {
            &w.reason
        };
        let _ = writeln!(
            out,
            "    DeviceName matches regex {re} and BinStart >= datetime({start}) and BinStart < datetime({end}), {reason},",
            re = kql_str(&glob_regex(&w.devices)),
            start = w.start.trim(),
            end = w.end.trim(),
            reason = kql_str(&format!(
                "maintenance/load-test window ({why}) for devices \"{}\"",
                w.devices
            )),
        );
    }
    Ok(out)
}

/// The allow-list test on `RemoteIP`, `false` when there is none.
fn allow_test(allow: &[String]) -> String {
    let (v6, v4): (Vec<&String>, Vec<&String>) = allow.iter().partition(|a| a.contains(':'));
    let list = |v: &[&String]| {
        let q: Vec<String> = v.iter().map(|s| format!("\"{}\"", s.trim())).collect();
        q.join(", ")
    };
    let mut tests = Vec::new();
    if !v4.is_empty() {
        tests.push(format!(
            "ipv4_is_in_any_range(RemoteIP, dynamic([{}]))",
            list(&v4)
        ));
    }
    if !v6.is_empty() {
        tests.push(format!(
            "ipv6_is_in_any_range(RemoteIP, dynamic([{}]))",
            list(&v6)
        ));
    }
    if tests.is_empty() {
        "false".into()
    } else {
        tests.join(" or ")
    }
}

fn floodwatch_query(s: &ExportSettings, frequency: i64) -> Result<(String, i64), String> {
    let f = &s.floodwatch;
    let bin = s.width.secs();
    let per_day = 86_400 / bin;
    let days = f.baseline_days.min(MAX_SEASONAL_DAYS) as i64;
    let half = f.seasonal_halfwidth as i64;
    let short = f.short_term_bins as i64;
    // Every baseline point of the earliest scored bin, and the novelty lookback.
    let history = (days * 86_400 + half * bin).max(short * bin) + frequency;
    let novelty = f.novelty_days as i64 * 86_400 + frequency;
    let lookback = history.max(novelty);
    let mut service: Vec<u16> = s.web_ports.clone();
    service.extend(&s.seed.cfg.ports);
    service.sort_unstable();
    service.dedup();
    let service = ports_list(&service);
    let q = format!(
        r#"// floodwatch's detector as far as one query expresses it, exported by floodwatch {ver}
// (detect --rule floodwatch, same settings). Per device, vector and {bin_s} bin.
let timeBin = {bin_s};
let ingestionDelay = {delay_s};
let scoredTo = bin(now() - ingestionDelay, timeBin);
let scoredFrom = scoredTo - {freq_s};
let historyFrom = scoredTo - {hist_s};
let noveltyFrom = scoredFrom - {nov_s};
let binsPerDay = {per_day};
let seasonalDays = {days};
let half = {half};
let shortBins = {short};
let events = DeviceNetworkEvents
    | where TimeGenerated >= historyFrom and TimeGenerated < scoredTo
    | where ActionType in ("InboundConnectionAccepted", "ConnectionAttempt", "InboundConnectionAttempt", "ConnectionFailed", "ConnectionFailedAggregatedReport", "IcmpConnectionInspected")
    | extend Service = LocalPort < 1024 or LocalPort in ({service})
    | extend Client = isnull(RemotePort) or not(RemotePort < 1024 or RemotePort in ({service}))
    | extend Vector = case(
        ActionType == "InboundConnectionAccepted" and Protocol startswith "udp", "udp",
        ActionType == "InboundConnectionAccepted" and Protocol startswith "icmp", "icmp",
        ActionType == "InboundConnectionAccepted" and LocalPort in ({web}), "web",
        ActionType != "InboundConnectionAccepted" and ActionType != "IcmpConnectionInspected" and Service and Client, "syn",
        ActionType == "IcmpConnectionInspected" and tostring(todynamic(AdditionalFields).direction) != "Out", "icmp",
        "")
    | where isnotempty(Vector)
    | extend Weight = iff(ActionType endswith "AggregatedReport", coalesce(tolong(todynamic(AdditionalFields).uniqueEventsAggregated), 1), 1)
    | extend BinStart = bin(TimeGenerated, timeBin);
let firstSeen = events | summarize FirstBin = min(BinStart) by DeviceName;
let known = events | where TimeGenerated >= noveltyFrom and BinStart < scoredFrom | distinct DeviceName, KnownIP = RemoteIP;
let sources = events
    | where BinStart >= scoredFrom
    | summarize N = sum(Weight), LocalIP = take_any(LocalIP) by DeviceName, Vector, BinStart, RemoteIP
    | join kind=leftouter known on DeviceName, $left.RemoteIP == $right.KnownIP
    | extend IsNew = isempty(KnownIP), Allowed = {allow}
    | extend Prefix = iff(isnotnull(parse_ipv4(RemoteIP)), format_ipv4(RemoteIP, 24), parse_ipv6_mask(RemoteIP, 48));
let top = sources | summarize arg_max(N, RemoteIP) by DeviceName, Vector, BinStart
    | project DeviceName, Vector, BinStart, TopSourceIP = RemoteIP, TopN = N;
let current = sources
    | summarize Observed = todouble(sum(N)), UniqueSourceIPs = dcount(RemoteIP), NewConnections = todouble(sumif(N, IsNew)),
        AllowedConnections = todouble(sumif(N, Allowed)), Prefixes = dcount(Prefix), LocalIP = take_any(LocalIP)
        by DeviceName, Vector, BinStart
    | join kind=inner top on DeviceName, Vector, BinStart;
let keys = current | distinct DeviceName, Vector, BinStart;
// Zero-filled per-bin history, then each scored bin's same-time-of-day and trailing points.
let points = events
    | join kind=inner firstSeen on DeviceName
    | where BinStart >= FirstBin
    | make-series Count = sum(Weight) default = 0 on BinStart from historyFrom to scoredTo step timeBin by DeviceName, Vector
    | mv-expand Count to typeof(double), BinStart to typeof(datetime)
    | join kind=inner firstSeen on DeviceName
    | where BinStart >= FirstBin
    | project DeviceName, Vector, PointBin = BinStart, Count
    | join kind=inner keys on DeviceName, Vector
    | extend Back = tolong((BinStart - PointBin) / timeBin)
    | where Back >= 1
    | extend Phase = Back % binsPerDay
    | extend Seasonal = Back >= binsPerDay - half and Back <= seasonalDays * binsPerDay + half and (Phase <= half or Phase >= binsPerDay - half),
        Short = Back <= shortBins
    | where Seasonal or Short;
let seasonal = points | where Seasonal
    | summarize SeasonalN = count(), SeasonalMedian = percentile(Count, 50) by DeviceName, Vector, BinStart;
let seasonalMad = points | where Seasonal | join kind=inner seasonal on DeviceName, Vector, BinStart
    | summarize SeasonalMad = percentile(abs(Count - SeasonalMedian), 50) by DeviceName, Vector, BinStart;
let trailing = points | where Short
    | summarize ShortN = count(), ShortMedian = percentile(Count, 50), Previous = sumif(Count, Back == 1) by DeviceName, Vector, BinStart;
let trailingMad = points | where Short | join kind=inner trailing on DeviceName, Vector, BinStart
    | summarize ShortMad = percentile(abs(Count - ShortMedian), 50) by DeviceName, Vector, BinStart;
let baseline = keys
    | join kind=leftouter seasonal on DeviceName, Vector, BinStart
    | join kind=leftouter seasonalMad on DeviceName, Vector, BinStart
    | join kind=leftouter trailing on DeviceName, Vector, BinStart
    | join kind=leftouter trailingMad on DeviceName, Vector, BinStart
    | extend SeasonalN = coalesce(SeasonalN, 0), ShortN = coalesce(ShortN, 0)
    | extend UseSeasonal = SeasonalN >= {min_seasonal}
    | extend ShortHigher = ShortN > 0 and ShortMedian > SeasonalMedian
    | extend BaselineKind = iff(UseSeasonal, "daily", "short-term")
    | extend Expected = iff(UseSeasonal and not(ShortHigher), SeasonalMedian, ShortMedian)
    | extend Mad = iff(UseSeasonal, iff(ShortHigher, max_of(SeasonalMad, ShortMad), SeasonalMad), ShortMad)
    | project DeviceName, Vector, BinStart, BaselineKind, Expected, Mad, Previous;
let scored = current
    | join kind=leftouter baseline on DeviceName, Vector, BinStart
    | join kind=leftouter firstSeen on DeviceName
    | extend Warm = tolong((BinStart - FirstBin) / timeBin) >= {warmup}
    | extend BaselineKind = iff(Warm, coalesce(BaselineKind, "short-term"), "cold"), Expected = coalesce(Expected, 0.0), Previous = coalesce(Previous, 0.0)
    | extend Spread = max_of(1.4826 * coalesce(Mad, 0.0), {spread_floor} * Expected)
    | extend Excess = max_of(1.0, Observed - Expected)
    | extend NewShareOfExcess = min_of(1.0, NewConnections / Excess)
    | extend Ratio = iff(NewShareOfExcess >= {novel_share}, {novel_ratio}, {rate_ratio})
    | extend Threshold = iff(Warm, max_of(Ratio * Expected, Expected + {z} * Spread, Expected + {min_excess}), {cold_count}.0)
    | extend OneBin = Warm and Observed >= Threshold
    | extend Cold = not(Warm) and Observed >= {cold_count} and UniqueSourceIPs >= {cold_sources} and Prefixes >= {cold_spread} * UniqueSourceIPs
    | extend Rising = Warm and Observed >= {carpet_ratio} * Expected and Observed - Expected >= {min_excess} and NewShareOfExcess >= {novel_share};
let carpet = scored | where Rising | summarize CarpetDevices = dcount(DeviceName) by BinStart;
let alerts = scored
    | join kind=leftouter carpet on BinStart
    | extend CarpetDevices = coalesce(CarpetDevices, 0)
    | extend Carpet = Rising and CarpetDevices >= {carpet_devices}
    | where OneBin or Cold or Carpet;
let totals = alerts | summarize TotalExcess = sum(Excess) by DeviceName, BinStart;
alerts
| summarize arg_max(Excess, *) by DeviceName, BinStart
| join kind=inner totals on DeviceName, BinStart
| extend Vector = iff(Excess / TotalExcess < {mixed_share}, "mixed", Vector)
| extend TopSourceShare = round(min_of(1.0, TopN / Excess), 3), AllowedShare = AllowedConnections / Excess, NewShareOfExcess = round(NewShareOfExcess, 3)
| extend SuppressionReason = case(
{windows}    AllowedShare >= {allowed_share}, strcat("load test: allow-listed sources carry ", round(100 * AllowedShare), "% of the excess"),
    TopSourceShare >= {single_share}, strcat("single-source surge: ", TopSourceIP, " carries ", round(100 * TopSourceShare), "% of the excess (a monitor or scanner)"),
    UniqueSourceIPs < {min_sources}, strcat("few-source surge: ", UniqueSourceIPs, " sources (< {min_sources})"),
    NewShareOfExcess < {novel_share}, strcat("flash crowd: new sources explain ", round(100 * NewShareOfExcess), "% of the excess (< {novel_pct}%)"),
    "")
| extend Suppressed = isnotempty(SuppressionReason)
| extend Persistent = Warm and Previous >= Threshold
| extend Points = toint(Observed >= 2 * Threshold) + toint(NewShareOfExcess >= 0.8) + toint(Persistent) + toint(Prefixes >= {cold_spread} * UniqueSourceIPs) + toint(Carpet)
| extend AttackConfidence = case((Points >= 4 and Persistent) or Points >= 5, "High", Points >= 2, "Medium", "Low")
| extend Severity = case(Suppressed, "Informational",
    AttackConfidence == "High" and Observed >= 2 * Threshold, "High",
    AttackConfidence == "Medium" or Observed >= 2 * Threshold, "Medium", "Low")
| extend Reason = strcat(Vector, ": ", Observed, " connections vs ", BaselineKind, " baseline ", round(Expected, 1), ", threshold ", round(Threshold, 1),
    "; ", UniqueSourceIPs, " sources, new sources explain ", round(100 * NewShareOfExcess), "% of the excess",
    iff(Carpet, strcat("; carpet bombing: ", CarpetDevices, " devices rising together"), ""), iff(Persistent, "; persistent", ""), ".")
{host}
| project BinStart, DeviceName, HostName, DnsDomain, LocalIP, Vector, Observed, Expected, Threshold, BaselineKind, UniqueSourceIPs, NewShareOfExcess,
    TopSourceIP, TopSourceShare, Prefixes, CarpetDevices, AttackConfidence, Severity, Suppressed, SuppressionReason, Reason
| order by Observed desc
"#,
        ver = env!("CARGO_PKG_VERSION"),
        bin_s = kql_timespan(bin),
        delay_s = kql_timespan(s.ingestion_delay_secs),
        freq_s = kql_timespan(frequency),
        hist_s = kql_timespan(lookback),
        nov_s = kql_timespan(f.novelty_days as i64 * 86_400),
        per_day = per_day,
        days = days,
        half = half,
        short = short,
        service = service,
        web = ports_list(&s.web_ports),
        allow = allow_test(&s.allow_sources),
        min_seasonal = f.min_seasonal_points,
        warmup = f.warmup_bins,
        spread_floor = real(f.spread_floor),
        novel_share = real(f.novel_share),
        novel_pct = real(100.0 * f.novel_share),
        novel_ratio = real(f.novel_rate_ratio),
        rate_ratio = real(f.rate_ratio),
        z = real(f.z_threshold),
        min_excess = real(f.min_excess),
        cold_count = f.cold_min_count,
        cold_sources = f.cold_min_sources,
        cold_spread = real(f.cold_min_prefix_spread),
        carpet_ratio = real(f.carpet_rate_ratio),
        carpet_devices = f.carpet_min_devices,
        mixed_share = real(f.mixed_share),
        allowed_share = real(f.allowed_share),
        single_share = real(f.single_source_share),
        min_sources = f.min_sources,
        windows = window_arms(f)?,
        host = HOST_COLUMNS,
    );
    Ok((q, lookback))
}

/// A YAML double-quoted scalar. JSON's string syntax is a subset of YAML's double-quoted one,
/// so serde_json's escaping is exact here.
fn yq(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// A YAML literal block (`|`) at `indent` spaces: the text exactly, lines unchanged.
fn block(out: &mut String, key: &str, text: &str, indent: usize) {
    let pad = " ".repeat(indent);
    let _ = writeln!(out, "{key}: |");
    for line in text.trim_end_matches('\n').lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{pad}{line}");
        }
    }
}

impl Rule {
    /// The rule in the YAML of Sentinel's content repository (`Detections/*.yaml`): what the
    /// repository's validator reads and what the Sentinel "Repositories" feature deploys.
    ///
    /// Written by hand rather than through a YAML serializer: the layout (a literal block for
    /// the query, the repository's key order) is what reviewers of such rules expect, every
    /// scalar is either a fixed word, a number or a JSON-quoted string, and the checker in
    /// `tools/kql` parses the result with a YAML parser and compares it field by field with the
    /// ARM template.
    pub fn to_yaml(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "id: {}", self.id);
        let _ = writeln!(o, "name: {}", yq(&self.name));
        let _ = writeln!(o, "description: {}", yq(&self.description));
        let _ = writeln!(o, "severity: {}", self.severity);
        o.push_str("requiredDataConnectors:\n  - connectorId: MicrosoftThreatProtection\n    dataTypes:\n      - DeviceNetworkEvents\n");
        let _ = writeln!(
            o,
            "queryFrequency: {}",
            yaml_duration(self.query_frequency_secs)
        );
        let _ = writeln!(o, "queryPeriod: {}", yaml_duration(self.query_period_secs));
        o.push_str("triggerOperator: gt\ntriggerThreshold: 0\n");
        o.push_str("tactics:\n");
        for t in &self.tactics {
            let _ = writeln!(o, "  - {t}");
        }
        o.push_str("relevantTechniques:\n");
        for t in &self.techniques {
            let _ = writeln!(o, "  - {t}");
        }
        block(&mut o, "query", &self.query, 2);
        o.push_str("entityMappings:\n");
        for m in &self.entity_mappings {
            let _ = writeln!(o, "  - entityType: {}\n    fieldMappings:", m.entity_type);
            for (id, col) in &m.fields {
                let _ = writeln!(o, "      - identifier: {id}\n        columnName: {col}");
            }
        }
        o.push_str("customDetails:\n");
        for (k, col) in &self.custom_details {
            let _ = writeln!(o, "  {k}: {col}");
        }
        o.push_str("eventGroupingSettings:\n  aggregationKind: AlertPerResult\n");
        o.push_str("alertDetailsOverride:\n");
        let _ = writeln!(
            o,
            "  alertDisplayNameFormat: {}",
            yq(&self.alert_name_format)
        );
        let _ = writeln!(
            o,
            "  alertDescriptionFormat: {}",
            yq(&self.alert_description_format)
        );
        o.push_str("  alertSeverityColumnName: Severity\n");
        let _ = writeln!(o, "version: {}", self.version);
        o.push_str("kind: Scheduled\n");
        o
    }

    /// The rule as an ARM template deploying it into a workspace (`az deployment group create
    /// --template-file rule.json --parameters workspace=NAME`).
    pub fn to_arm(&self) -> Value {
        let (techniques, sub): (Vec<&str>, Vec<&str>) =
            self.techniques.iter().partition(|t| !t.contains('.'));
        let custom: serde_json::Map<String, Value> = self
            .custom_details
            .iter()
            .map(|(k, c)| ((*k).to_owned(), Value::String((*c).to_owned())))
            .collect();
        let entities: Vec<Value> = self
            .entity_mappings
            .iter()
            .map(|m| {
                json!({
                    "entityType": m.entity_type,
                    "fieldMappings": m.fields.iter().map(|(i, c)| json!({"identifier": i, "columnName": c})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut properties = json!({
            "displayName": self.name,
            "description": self.description,
            "severity": self.severity,
            "enabled": true,
            "query": self.query,
            "queryFrequency": iso_duration(self.query_frequency_secs),
            "queryPeriod": iso_duration(self.query_period_secs),
            "triggerOperator": "GreaterThan",
            "triggerThreshold": 0,
            "suppressionDuration": "PT5H",
            "suppressionEnabled": false,
            "tactics": self.tactics,
            "techniques": techniques,
            "subTechniques": sub,
            "alertRuleTemplateName": self.id,
            "templateVersion": self.version,
            "eventGroupingSettings": {"aggregationKind": "AlertPerResult"},
            "alertDetailsOverride": {
                "alertDisplayNameFormat": self.alert_name_format,
                "alertDescriptionFormat": self.alert_description_format,
                "alertSeverityColumnName": "Severity"
            },
            "incidentConfiguration": {
                "createIncident": true,
                "groupingConfiguration": {
                    "enabled": true,
                    "reopenClosedIncident": false,
                    "lookbackDuration": "PT1H",
                    "matchingMethod": "Selected",
                    "groupByEntities": ["Host"],
                    "groupByAlertDetails": [],
                    "groupByCustomDetails": []
                }
            }
        });
        properties["entityMappings"] = Value::Array(entities);
        properties["customDetails"] = Value::Object(custom);
        json!({
            "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0",
            "parameters": {
                "workspace": {
                    "type": "String",
                    "metadata": {"description": "Name of the Log Analytics workspace Sentinel runs on"}
                }
            },
            "resources": [{
                "id": format!("[concat(resourceId('Microsoft.OperationalInsights/workspaces/providers', parameters('workspace'), 'Microsoft.SecurityInsights'),'/alertRules/{}')]", self.id),
                "name": format!("[concat(parameters('workspace'),'/Microsoft.SecurityInsights/{}')]", self.id),
                "type": "Microsoft.OperationalInsights/workspaces/providers/alertRules",
                "kind": "Scheduled",
                "apiVersion": "2023-12-01-preview",
                "properties": properties,
            }]
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use floodwatch_detect::floodwatch::Window;
    use floodwatch_detect::seed::SeedConfig;

    fn settings(bin_secs: i64) -> ExportSettings {
        let width = BinWidth::from_secs(bin_secs).unwrap();
        ExportSettings {
            width,
            seed: SeedConfig::default().validate(width).unwrap(),
            floodwatch: FloodwatchConfig::default(),
            web_ports: vec![80, 443, 8080, 8443],
            allow_sources: vec![],
            ingestion_delay_secs: 600,
        }
    }

    #[test]
    fn seed_query_carries_the_settings_and_none_of_the_seed_errors() {
        let mut s = settings(300);
        s.seed.cfg.ports = vec![443, 8443];
        s.seed.cfg.sigma = 4.5;
        s.seed.cfg.distinct_threshold = 250;
        let r = rule(Variant::Seed, &s, None).unwrap();
        let q = &r.query;
        assert!(q.contains("LocalPort in (443, 8443)"), "{q}");
        assert!(
            !q.contains("RemotePort"),
            "inbound: the client's port is not filtered"
        );
        assert!(!q.contains("TotalBytes"));
        assert!(q.contains("let sigma = 4.5;"));
        assert!(q.contains("let distinctThreshold = 250;"));
        // 24h - 1h of 5-minute bins, zero-filled: the divisor is the bin count, not the rows.
        assert!(q.contains("let baselineBins = 276.0;"));
        assert!(q.contains("by DeviceName\n"), "one baseline row per device");
        assert!(q.contains("bin(now() - ingestionDelay, timeBin)"));
        assert_eq!(r.query_frequency_secs, 300);
        // 24 h of baseline + 10 min delay + one bin of alignment.
        assert_eq!(r.query_period_secs, 86_400 + 600 + 300);
        assert_eq!(yaml_duration(r.query_period_secs), "1455m");
        assert_eq!(iso_duration(r.query_period_secs), "PT1455M");
        assert!(r.techniques.contains(&"T1498") && r.techniques.contains(&"T1499"));
        assert!(
            !r.techniques
                .iter()
                .any(|t| t.starts_with("T1608") || t.starts_with("T1071"))
        );
    }

    #[test]
    fn frequency_is_a_whole_number_of_bins_of_at_least_five_minutes() {
        let r = rule(Variant::Seed, &settings(60), None).unwrap();
        assert_eq!(r.query_frequency_secs, 300);
        assert!(r.query.contains("let scoredFrom = scoredTo - 5m;"));
        let r = rule(Variant::Floodwatch, &settings(600), None).unwrap();
        assert_eq!(r.query_frequency_secs, 600);
        let r = rule(Variant::Floodwatch, &settings(420 * 60 / 7), None).unwrap();
        assert_eq!(r.query_frequency_secs, 3600);
    }

    #[test]
    fn ids_are_fixed_per_variant_and_overridable() {
        let s = settings(300);
        let a = rule(Variant::Seed, &s, None).unwrap();
        let b = rule(Variant::Floodwatch, &s, None).unwrap();
        assert_ne!(a.id, b.id);
        let mut tuned = settings(300);
        tuned.seed.cfg.sigma = 3.0;
        assert_eq!(rule(Variant::Seed, &tuned, None).unwrap().id, a.id);
        let c = rule(
            Variant::Seed,
            &s,
            Some("0E3C1D2B-1111-4222-8333-444455556666"),
        )
        .unwrap();
        assert_eq!(c.id, "0e3c1d2b-1111-4222-8333-444455556666");
        let e = rule(Variant::Seed, &s, Some("not-a-guid")).unwrap_err();
        assert!(e.contains("not a GUID"), "{e}");
        for v in Variant::ALL {
            check_guid(v.default_id()).unwrap();
        }
    }

    #[test]
    fn floodwatch_query_carries_its_settings() {
        let mut s = settings(300);
        s.floodwatch.rate_ratio = 4.0;
        s.floodwatch.novelty_days = 5;
        s.allow_sources = vec!["10.250.0.0/24".into(), "2001:db8::/32".into()];
        s.floodwatch.windows = vec![Window {
            devices: "web*.contoso.com".into(),
            start: "2025-12-22T09:00:00Z".into(),
            end: "2025-12-22T10:00:00Z".into(),
            reason: "quarterly load test".into(),
        }];
        let r = rule(Variant::Floodwatch, &s, None).unwrap();
        let q = &r.query;
        assert!(q.contains("2.0, 4.0)"), "novel and plain ratios");
        assert!(q.contains("let noveltyFrom = scoredFrom - 5d;"));
        assert!(q.contains("ipv4_is_in_any_range(RemoteIP, dynamic([\"10.250.0.0/24\"]))"));
        assert!(q.contains("ipv6_is_in_any_range(RemoteIP, dynamic([\"2001:db8::/32\"]))"));
        assert!(
            q.contains(r#"matches regex @"(?i)^web.*\.contoso\.com$""#),
            "{q}"
        );
        assert!(q.contains("\"ConnectionAttempt\", \"InboundConnectionAttempt\""));
        assert!(q.contains("SeasonalMedian = percentile(Count, 50)"));
        // 13 days of seasonal history (the 14-day period's room), one bin either side, one run.
        assert_eq!(r.query_period_secs, 13 * 86_400 + 300 + 300 + 600 + 300);
    }

    #[test]
    fn settings_needing_more_than_fourteen_days_are_refused() {
        let mut s = settings(300);
        s.seed.cfg.baseline_start = "14d".into();
        s.seed = s.seed.cfg.validate(s.width).unwrap();
        let e = rule(Variant::Seed, &s, None).unwrap_err();
        assert!(
            e.contains("14d") && e.contains("seed.baseline_start"),
            "{e}"
        );
    }

    #[test]
    fn globs_become_anchored_case_insensitive_regexes() {
        assert_eq!(
            glob_regex("web0?.contoso.com"),
            r"(?i)^web0.\.contoso\.com$"
        );
        assert_eq!(glob_regex("{web,api}[!x]*"), r"(?i)^(?:web|api)[^x].*$");
    }

    #[test]
    fn yaml_quotes_what_needs_quoting_and_keeps_the_query_verbatim() {
        let mut r = rule(Variant::Seed, &settings(300), None).unwrap();
        r.name = "a: \"b\" # c".into();
        let y = r.to_yaml();
        assert!(y.contains(r#"name: "a: \"b\" # c""#), "{y}");
        let body: Vec<&str> = y
            .split("query: |\n")
            .nth(1)
            .unwrap()
            .split("\nentityMappings:")
            .next()
            .unwrap()
            .lines()
            .map(|l| l.strip_prefix("  ").unwrap_or(l))
            .collect();
        assert_eq!(body.join("\n"), r.query.trim_end());
        let arm = r.to_arm();
        let p = &arm["resources"][0]["properties"];
        assert_eq!(p["query"], r.query.as_str());
        assert_eq!(p["queryFrequency"], "PT5M");
        assert_eq!(p["techniques"], json!(["T1498", "T1499"]));
        assert_eq!(
            p["subTechniques"],
            json!(["T1498.001", "T1499.002", "T1499.003"])
        );
    }
}
