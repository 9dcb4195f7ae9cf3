//! Payloads of each sink, as pure functions of a notification.
//!
//! Alerts (outbox rows of kind `alert`: the JSON of `LiveAlert::to_json`) become a JSON line
//! ([`jsonl_line`]), an OCSF 1.1 Detection Finding ([`ocsf_finding`]) or a CEF line inside an
//! RFC 5424 syslog message ([`cef_line`], [`syslog_5424`]). Incident changes (rows of kind
//! `incident`: `IncidentEvent` as JSON) become a generic webhook body ([`webhook_body`]), a Teams
//! Adaptive Card ([`teams_card`]) or a Slack Block Kit message ([`slack_blocks`]).
//!
//! Nothing here does I/O or reads a clock, so a payload is a function of the stored
//! notification alone and a retry sends the same bytes. The inputs are `serde_json::Value`s,
//! not the typed structs: the outbox holds text an older build may have written, and a missing
//! or odd field should make a thinner message, not a notification that is never sent.

use serde_json::{Map, Value, json};

use floodwatch_core::time::{Nanos, Rfc3339, parse_rfc3339};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Slack's limits (Block Kit reference): header text, section text, fields per section and
/// text per field, in characters.
pub const SLACK_HEADER_MAX: usize = 150;
pub const SLACK_SECTION_MAX: usize = 3000;
pub const SLACK_FIELDS_MAX: usize = 10;
pub const SLACK_FIELD_MAX: usize = 2000;

/// Teams rejects incoming-webhook messages over about 28 KB; [`teams_card`] stays under this
/// many bytes of JSON, which leaves room for the HTTP envelope.
pub const TEAMS_MAX_BYTES: usize = 27_000;

/// Syslog facility of every message: local0 (16). Not authpriv: that facility is for
/// authentication and authorization records and is routed to restricted files on most systems
/// (`/var/log/secure`, `/var/log/auth.log`), where a SIEM's CEF collector does not look; local0
/// is the facility set aside for site applications, and collectors are told which local
/// facility to take.
pub const SYSLOG_FACILITY: u8 = 16;

// ---------------------------------------------------------------------------------------------
// Reading the notification JSON

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

fn uint(v: &Value, key: &str) -> Option<u64> {
    v.get(key)?.as_u64()
}

fn nanos(v: &Value, key: &str) -> Option<Nanos> {
    v.get(key)?.as_i64()
}

fn strings<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Milliseconds since the epoch (OCSF `timestamp_t`, CEF `rt`) of an RFC 3339 field.
fn millis(v: &Value, key: &str) -> Option<i64> {
    let t = parse_rfc3339(text(v, key)?.as_bytes()).ok()?;
    Some(t.div_euclid(1_000_000))
}

/// `(IP, Count)` of an alert's heaviest sources, heaviest first (as the alert lists them).
fn top_sources(alert: &Value) -> Vec<(&str, Option<u64>)> {
    alert
        .get("TopSources")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| Some((text(s, "IP")?, uint(s, "Count"))))
                .collect()
        })
        .unwrap_or_default()
}

/// `12345` as `12,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `10:00Z`: the time of day a chat message shows (the full time is in the facts).
fn hhmm(t: Nanos) -> String {
    let s = Rfc3339(t).to_string();
    match s.get(11..16) {
        Some(hm) => format!("{hm}Z"),
        None => s,
    }
}

/// How a person names a vector. The seed rule labels none: it counts connections.
fn vector_title(v: Option<&str>) -> String {
    match v {
        Some("https-flood") => "HTTPS flood".into(),
        Some("syn-flood") => "SYN flood".into(),
        Some("udp-flood") => "UDP flood".into(),
        Some("icmp-flood") => "ICMP flood".into(),
        Some("mixed") => "Mixed-vector flood".into(),
        Some(other) => other.to_owned(),
        None => "Connection flood".into(),
    }
}

/// `s` cut to at most `max` characters, ending in `…` when cut. Counts characters, as Slack's
/// limits do, and cuts between characters, so the result is always valid UTF-8.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------------------------
// Alerts

/// The alert JSON as one line (without the newline). The engine stores it compact, so this
/// only guards: JSON has no raw line breaks inside strings, so any in the text are whitespace
/// between tokens and a space does as well.
pub fn jsonl_line(payload: &str) -> String {
    payload.trim().replace(['\r', '\n'], " ")
}

/// `HTTPS flood on web01.contoso.com: 12,345 connections (High)`.
fn alert_title(alert: &Value) -> String {
    let mut s = format!(
        "{} on {}",
        vector_title(text(alert, "Vector")),
        text(alert, "DeviceName").unwrap_or("an unnamed device")
    );
    if let Some(n) = uint(alert, "RequestCount") {
        s.push_str(&format!(": {} connections", thousands(n)));
    }
    if let Some(sev) = text(alert, "Severity") {
        s.push_str(&format!(" ({sev})"));
    }
    s
}

/// MITRE ATT&CK names of the techniques the rules label alerts with (all under Impact, TA0040):
/// (id, name, parent technique id, parent name).
fn mitre(id: &str) -> Option<(&'static str, Option<(&'static str, &'static str)>)> {
    const NETWORK_DOS: (&str, &str) = ("T1498", "Network Denial of Service");
    const ENDPOINT_DOS: (&str, &str) = ("T1499", "Endpoint Denial of Service");
    Some(match id {
        "T1498" => (NETWORK_DOS.1, None),
        "T1498.001" => ("Direct Network Flood", Some(NETWORK_DOS)),
        "T1498.002" => ("Reflection Amplification", Some(NETWORK_DOS)),
        "T1499" => (ENDPOINT_DOS.1, None),
        "T1499.002" => ("Service Exhaustion Flood", Some(ENDPOINT_DOS)),
        "T1499.003" => ("Application Exhaustion Flood", Some(ENDPOINT_DOS)),
        _ => return None,
    })
}

/// One OCSF `attack` per technique. A sub-technique goes in `sub_technique` under its parent
/// `technique`, as OCSF 1.1's attack object has it; an id this table does not know keeps its
/// uid without a name rather than a guessed one.
fn ocsf_attacks(alert: &Value) -> Vec<Value> {
    let tactic = json!({"uid": "TA0040", "name": "Impact"});
    strings(alert, "MitreTechniques")
        .into_iter()
        .map(|id| {
            let mut a = Map::new();
            match mitre(id) {
                Some((name, None)) => {
                    a.insert("technique".into(), json!({"uid": id, "name": name}));
                }
                Some((name, Some((parent, parent_name)))) => {
                    a.insert(
                        "technique".into(),
                        json!({"uid": parent, "name": parent_name}),
                    );
                    a.insert("sub_technique".into(), json!({"uid": id, "name": name}));
                }
                None => {
                    let key = if id.contains('.') {
                        "sub_technique"
                    } else {
                        "technique"
                    };
                    a.insert(key.into(), json!({"uid": id}));
                }
            }
            a.insert("tactic".into(), tactic.clone());
            Value::Object(a)
        })
        .collect()
}

/// Alert keys that [`ocsf_finding`] maps onto OCSF attributes; every other key goes to
/// `unmapped` as it is, so a field added to alerts later is not lost.
const OCSF_MAPPED: [&str; 14] = [
    "AlertId",
    "AttackConfidence",
    "DetectedAt",
    "DeviceName",
    "IncidentId",
    "MitreTechniques",
    "Reasons",
    "RequestCount",
    "Rule",
    "Severity",
    "Suppressed",
    "TimeGenerated",
    "TopSources",
    "Vector",
];

/// An alert as an OCSF 1.1 Detection Finding (class 2004, activity Create), checked against
/// the schema's 1.1.0 release:
///
/// - `time` is `DetectedAt` and `start_time` the bin start (`TimeGenerated`), in ms; `count`
///   is `RequestCount` (events of the group between start and end).
/// - `severity_id` 1–4 from Informational/Low/Medium/High; `confidence_id` 1–3 from
///   `AttackConfidence`; `status_id` New (1), or Suppressed (3) for a suppressed alert.
/// - `metadata.uid` and `finding_info.uid` are the `AlertId`; `metadata.correlation_uid` the
///   `IncidentId`, which ties the alerts of one incident together.
/// - `finding_info.analytic`: the rule, Statistical (3) for floodwatch's baselines, Rule (1)
///   for the seed query's fixed threshold. `finding_info.types`: `DDoS` and the vector.
/// - `resources` and `device` name the attacked device; `evidences` hold one `src_endpoint`
///   per top source, with its connection count in `data`.
/// - `unmapped` keeps the rest (`UniqueSourceIPs`, `TotalBytes`, `Baseline`, `Stage`, ...).
///
/// Not the `security_control` profile: floodwatch observes, it does not allow or block.
pub fn ocsf_finding(alert: &Value) -> Value {
    let id = text(alert, "AlertId").unwrap_or_default();
    let device = text(alert, "DeviceName");
    let (severity_id, severity) = match text(alert, "Severity") {
        Some("Informational") => (1, "Informational"),
        Some("Low") => (2, "Low"),
        Some("Medium") => (3, "Medium"),
        Some("High") => (4, "High"),
        Some(other) => (99, other),
        None => (0, "Unknown"),
    };
    let (confidence_id, confidence) = match text(alert, "AttackConfidence") {
        Some("Low") => (1, "Low"),
        Some("Medium") => (2, "Medium"),
        Some("High") => (3, "High"),
        Some(other) => (99, other),
        None => (0, "Unknown"),
    };
    let suppressed = alert
        .get("Suppressed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (status_id, status) = if suppressed {
        (3, "Suppressed")
    } else {
        (1, "New")
    };
    let detected = millis(alert, "DetectedAt");
    let first_seen = millis(alert, "TimeGenerated");
    let title = alert_title(alert);
    let rule = text(alert, "Rule").unwrap_or("floodwatch");
    let (analytic_type_id, analytic_type) = if rule == "seed" {
        (1, "Rule")
    } else {
        (3, "Statistical")
    };
    let mut types = vec![Value::from("DDoS")];
    if let Some(v) = text(alert, "Vector") {
        types.push(v.into());
    }

    let mut info = Map::new();
    info.insert("uid".into(), id.into());
    info.insert("title".into(), title.clone().into());
    info.insert("desc".into(), strings(alert, "Reasons").join(" ").into());
    info.insert("types".into(), types.into());
    if let Some(t) = detected {
        info.insert("created_time".into(), t.into());
    }
    if let Some(t) = first_seen {
        info.insert("first_seen_time".into(), t.into());
    }
    info.insert(
        "analytic".into(),
        json!({"name": rule, "uid": rule, "type_id": analytic_type_id, "type": analytic_type}),
    );
    let attacks = ocsf_attacks(alert);
    if !attacks.is_empty() {
        info.insert("attacks".into(), attacks.into());
    }

    let mut metadata = Map::new();
    metadata.insert("version".into(), "1.1.0".into());
    metadata.insert(
        "product".into(),
        json!({"name": "floodwatch", "vendor_name": "floodwatch", "version": VERSION}),
    );
    metadata.insert("uid".into(), id.into());
    if let Some(inc) = text(alert, "IncidentId") {
        metadata.insert("correlation_uid".into(), inc.into());
    }

    let mut f = Map::new();
    f.insert("class_uid".into(), 2004.into());
    f.insert("class_name".into(), "Detection Finding".into());
    f.insert("category_uid".into(), 2.into());
    f.insert("category_name".into(), "Findings".into());
    f.insert("activity_id".into(), 1.into());
    f.insert("activity_name".into(), "Create".into());
    f.insert("type_uid".into(), 200401.into());
    f.insert("type_name".into(), "Detection Finding: Create".into());
    // `time` is required; an alert always has DetectedAt, the fallbacks only keep it present.
    f.insert("time".into(), detected.or(first_seen).unwrap_or(0).into());
    if let Some(t) = first_seen {
        f.insert("start_time".into(), t.into());
    }
    if let Some(n) = uint(alert, "RequestCount") {
        f.insert("count".into(), n.into());
    }
    f.insert("severity_id".into(), severity_id.into());
    f.insert("severity".into(), severity.into());
    f.insert("confidence_id".into(), confidence_id.into());
    f.insert("confidence".into(), confidence.into());
    f.insert("status_id".into(), status_id.into());
    f.insert("status".into(), status.into());
    f.insert("message".into(), title.into());
    f.insert("metadata".into(), metadata.into());
    f.insert("finding_info".into(), info.into());
    if let Some(d) = device {
        f.insert("resources".into(), json!([{"type": "device", "name": d}]));
        // type_id is required on a device; 0 (Unknown): telemetry does not say what it is.
        f.insert(
            "device".into(),
            json!({"hostname": d, "name": d, "type_id": 0, "type": "Unknown"}),
        );
    }
    // `evidences` must carry at least one artifact each, so it is left out when no source is
    // known rather than sent as empty objects.
    let evidences: Vec<Value> = top_sources(alert)
        .into_iter()
        .map(|(ip, count)| match count {
            Some(n) => json!({"src_endpoint": {"ip": ip}, "data": {"connections": n}}),
            None => json!({"src_endpoint": {"ip": ip}}),
        })
        .collect();
    if !evidences.is_empty() {
        f.insert("evidences".into(), evidences.into());
    }
    let unmapped: Map<String, Value> = alert
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !OCSF_MAPPED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    if !unmapped.is_empty() {
        f.insert("unmapped".into(), unmapped.into());
    }
    Value::Object(f)
}

/// CEF header text: backslashes and pipes escaped; a header cannot hold a line break, so one
/// becomes a space.
fn cef_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// CEF extension value: backslashes and equal signs escaped, line breaks as `\n` / `\r`
/// (pipes need no escape there).
fn cef_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// CEF severity 0–10 (ArcSight's bands: 0–3 low, 4–6 medium, 7–8 high, 9–10 very high).
fn cef_severity(alert: &Value) -> &'static str {
    match text(alert, "Severity") {
        Some("Informational") => "1",
        Some("Low") => "3",
        Some("Medium") => "5",
        Some("High") => "8",
        // CEF allows the word when the severity is not known.
        _ => "Unknown",
    }
}

/// An alert as a CEF line:
/// `CEF:0|floodwatch|floodwatch|VERSION|RULE/VECTOR|NAME|SEVERITY|EXTENSION`.
///
/// The signature is stable per kind of alert (`floodwatch/https-flood`, `seed/connections`);
/// the name says what was detected and leaves the device to `dhost`. Extension keys are from
/// the CEF dictionary: `rt` (DetectedAt) and `start` (bin start) in ms, `dhost` (the device),
/// `src` (the heaviest source; `c6a2` when it is IPv6, since `src` is IPv4 only), `cnt`
/// (RequestCount), `in` (TotalBytes, inbound), `cn1` UniqueSourceIPs, `cs1` AlertId, `cs2`
/// IncidentId, `cs3` Vector, `cs4` Stage, `cs5` MitreTechniques, `cs6` AttackConfidence, each
/// with its label, `act` (`alert`, or `suppressed`), `cat` (`DDoS`) and `msg` (the first
/// reason).
pub fn cef_line(alert: &Value) -> String {
    let rule = text(alert, "Rule").unwrap_or("floodwatch");
    let vector = text(alert, "Vector");
    let signature = format!("{rule}/{}", vector.unwrap_or("connections"));
    let name = format!("{} detected", vector_title(vector));
    let mut ext: Vec<(&str, String)> = Vec::new();
    if let Some(t) = millis(alert, "DetectedAt") {
        ext.push(("rt", t.to_string()));
    }
    if let Some(t) = millis(alert, "TimeGenerated") {
        ext.push(("start", t.to_string()));
    }
    if let Some(d) = text(alert, "DeviceName") {
        ext.push(("dhost", d.to_owned()));
    }
    if let Some((ip, _)) = top_sources(alert).first() {
        if ip.contains(':') {
            ext.push(("c6a2", (*ip).to_owned()));
            ext.push(("c6a2Label", "TopSource".into()));
        } else {
            ext.push(("src", (*ip).to_owned()));
        }
    }
    if let Some(n) = uint(alert, "RequestCount") {
        ext.push(("cnt", n.to_string()));
    }
    if let Some(n) = uint(alert, "TotalBytes") {
        ext.push(("in", n.to_string()));
    }
    if let Some(n) = uint(alert, "UniqueSourceIPs") {
        ext.push(("cn1", n.to_string()));
        ext.push(("cn1Label", "UniqueSourceIPs".into()));
    }
    let custom = [
        ("cs1", "AlertId", text(alert, "AlertId").map(str::to_owned)),
        (
            "cs2",
            "IncidentId",
            text(alert, "IncidentId").map(str::to_owned),
        ),
        ("cs3", "Vector", vector.map(str::to_owned)),
        ("cs4", "Stage", text(alert, "Stage").map(str::to_owned)),
        (
            "cs5",
            "MitreTechniques",
            Some(strings(alert, "MitreTechniques").join(",")).filter(|s| !s.is_empty()),
        ),
        (
            "cs6",
            "AttackConfidence",
            text(alert, "AttackConfidence").map(str::to_owned),
        ),
    ];
    let labels = [
        "cs1Label", "cs2Label", "cs3Label", "cs4Label", "cs5Label", "cs6Label",
    ];
    for ((key, label, value), label_key) in custom.into_iter().zip(labels) {
        if let Some(v) = value {
            ext.push((key, v));
            ext.push((label_key, label.into()));
        }
    }
    let suppressed = alert
        .get("Suppressed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    ext.push((
        "act",
        if suppressed { "suppressed" } else { "alert" }.into(),
    ));
    ext.push(("cat", "DDoS".into()));
    if let Some(r) = strings(alert, "Reasons").first() {
        ext.push(("msg", (*r).to_owned()));
    }
    let ext: Vec<String> = ext
        .into_iter()
        .map(|(k, v)| format!("{k}={}", cef_value(&v)))
        .collect();
    format!(
        "CEF:0|floodwatch|floodwatch|{}|{}|{}|{}|{}",
        cef_header(VERSION),
        cef_header(&signature),
        cef_header(&name),
        cef_severity(alert),
        ext.join(" ")
    )
}

/// Syslog severity (RFC 5424, 0 emergency … 7 debug) of an alert: High is Critical (2): a
/// service is being flooded now; Medium Warning (4), Low Notice (5), Informational 6.
pub fn syslog_severity(alert: &Value) -> u8 {
    match text(alert, "Severity") {
        Some("High") => 2,
        Some("Medium") => 4,
        Some("Low") => 5,
        _ => 6,
    }
}

/// An RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME floodwatch - ddos - MSG`, facility
/// [`SYSLOG_FACILITY`] (local0) and the given severity (see [`syslog_severity`]), no process
/// id and no structured data.
///
/// The timestamp is rewritten to the RFC's form (UTC, at most 6 fraction digits; `-` when it
/// is not a date-time), the hostname to printable ASCII of at most 255 characters (`-` when
/// none). MSG is sent without the UTF-8 byte-order mark RFC 5424 asks of UTF-8 text: CEF
/// collectors look for `CEF:` at the start of MSG, and MSG-ANY (no BOM) is allowed too.
pub fn syslog_5424(msg: &str, hostname: &str, timestamp_rfc3339: &str, severity: u8) -> String {
    let pri = u16::from(SYSLOG_FACILITY) * 8 + u16::from(severity.min(7));
    let ts = match parse_rfc3339(timestamp_rfc3339.as_bytes()) {
        Ok(t) => Rfc3339(t - t.rem_euclid(1_000)).to_string(),
        Err(_) => "-".into(),
    };
    let host: String = hostname
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let host = if host.is_empty() { "-".into() } else { host };
    format!("<{pri}>1 {ts} {host} floodwatch - ddos - {msg}")
}

// ---------------------------------------------------------------------------------------------
// Incident changes

/// The parts of an `IncidentEvent` the chat messages use.
struct Incident<'a> {
    event_id: &'a str,
    incident_id: &'a str,
    phase: &'a str,
    /// The device, or for a fleet-wide incident `carpet bombing of N devices (a, b, ...)`.
    device: String,
    /// A fleet-wide incident's devices (empty for a device's).
    devices: Vec<&'a str>,
    severity: &'a str,
    vector: Option<&'a str>,
    start: Option<Nanos>,
    end: Option<Nanos>,
    detected_at: Option<Nanos>,
    peak: Option<u64>,
    bins: Option<u64>,
    campaign: Option<&'a str>,
    /// (start, end, peak) of each pulse, as the event lists them.
    pulses: Vec<(Option<Nanos>, Option<Nanos>, Option<u64>)>,
    pulses_json: &'a Value,
    alert: &'a Value,
}

/// An RFC 3339 field as nanoseconds.
fn rfc3339(v: &Value, key: &str) -> Option<Nanos> {
    parse_rfc3339(text(v, key)?.as_bytes()).ok()
}

impl<'a> Incident<'a> {
    fn of(ev: &'a Value) -> Self {
        let alert = ev.get("Alert").unwrap_or(&Value::Null);
        Incident {
            event_id: text(ev, "EventId").unwrap_or_default(),
            incident_id: text(ev, "IncidentId").unwrap_or_default(),
            phase: text(ev, "Phase").unwrap_or("changed"),
            device: match strings(ev, "Devices") {
                d if d.is_empty() => text(ev, "DeviceName")
                    .or_else(|| text(alert, "DeviceName"))
                    .unwrap_or("an unnamed device")
                    .to_owned(),
                d => format!("{} devices (carpet bombing: {})", d.len(), d.join(", ")),
            },
            devices: strings(ev, "Devices"),
            severity: text(ev, "Severity").unwrap_or("Unknown"),
            vector: text(ev, "Vector").or_else(|| text(alert, "Vector")),
            start: nanos(ev, "Start"),
            end: nanos(ev, "End"),
            detected_at: nanos(ev, "DetectedAt"),
            peak: uint(ev, "PeakRequests"),
            bins: uint(ev, "AlertBins"),
            campaign: text(ev, "CampaignId"),
            pulses: ev
                .get("Pulses")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            (
                                rfc3339(p, "Start"),
                                rfc3339(p, "End"),
                                uint(p, "PeakRequestCount"),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            pulses_json: ev.get("Pulses").unwrap_or(&Value::Null),
            alert,
        }
    }

    /// ` in 3 pulses`, for a pulse wave.
    fn in_pulses(&self) -> String {
        match self.pulses.len() {
            0 | 1 => String::new(),
            n => format!(" in {n} pulses"),
        }
    }

    /// `10:00Z–10:05Z (12,345), 10:20Z–10:25Z (11,002)`: each pulse with its peak.
    fn pulse_list(&self) -> String {
        self.pulses
            .iter()
            .map(|(s, e, peak)| {
                let t = |t: &Option<Nanos>| t.map(hhmm).unwrap_or_else(|| "?".into());
                let peak = peak.map(thousands).unwrap_or_else(|| "?".into());
                format!("{}–{} ({peak})", t(s), t(e))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `DDoS incident opened: HTTPS flood on web01.contoso.com`.
    fn title(&self) -> String {
        format!(
            "DDoS incident {}: {} on {}",
            self.phase,
            vector_title(self.vector),
            self.device
        )
    }

    /// One sentence, e.g. `HTTPS flood on web01.contoso.com opened at 10:00Z: 12,345
    /// connections (High)`.
    fn summary(&self) -> String {
        let what = format!("{} on {}", vector_title(self.vector), self.device);
        let at = |t: Option<Nanos>| t.map(|t| format!(" at {}", hhmm(t))).unwrap_or_default();
        let peak = self.peak.map(thousands).unwrap_or_else(|| "?".into());
        let sev = self.severity;
        match self.phase {
            "opened" => format!(
                "{what} opened{}: {peak} connections ({sev})",
                at(self.start)
            ),
            "escalated" => format!(
                "{what} escalated to {sev}{}: {peak} connections at peak{}",
                at(self.detected_at),
                self.in_pulses()
            ),
            "closed" => {
                let bins = match self.bins {
                    Some(1) => " after 1 alert bin".to_owned(),
                    Some(n) => format!(" after {n} alert bins"),
                    None => String::new(),
                };
                format!(
                    "{what} closed{}{bins}{}: {peak} connections at peak ({sev})",
                    at(self.end.or(self.detected_at)),
                    self.in_pulses()
                )
            }
            other => format!("{what} {other}: {peak} connections ({sev})"),
        }
    }

    /// `203.0.113.7 (4,210), 198.51.100.9 (3,977)`: the first `n` of the alert's top sources.
    fn sources(&self, n: usize) -> String {
        top_sources(self.alert)
            .into_iter()
            .take(n)
            .map(|(ip, c)| match c {
                Some(c) => format!("{ip} ({})", thousands(c)),
                None => ip.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn reasons(&self) -> Vec<&'a str> {
        strings(self.alert, "Reasons")
    }

    /// (title, value) of the facts a chat message lists, present ones only.
    fn facts(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            (
                if self.devices.is_empty() {
                    "Device"
                } else {
                    "Devices"
                },
                self.device.clone(),
            ),
            ("Vector", vector_title(self.vector)),
            ("Severity", self.severity.to_owned()),
        ];
        if let Some(t) = self.start {
            f.push(("Start", Rfc3339(t).to_string()));
        }
        if let Some(t) = self.end {
            f.push(("End", Rfc3339(t).to_string()));
        }
        if let Some(p) = self.peak {
            f.push(("Peak", format!("{} connections", thousands(p))));
        }
        if let Some(b) = self.bins {
            f.push(("Alert bins", b.to_string()));
        }
        if self.pulses.len() > 1 {
            f.push((
                "Pulses",
                format!("{}: {}", self.pulses.len(), self.pulse_list()),
            ));
        }
        let sources = self.sources(5);
        if !sources.is_empty() {
            f.push(("Top sources", sources));
        }
        f.push(("Incident", self.incident_id.to_owned()));
        if let Some(c) = self.campaign {
            f.push(("Campaign", c.to_owned()));
        }
        f
    }
}

/// The body POSTed to a generic webhook, one per incident change:
///
/// ```json
/// {"type": "floodwatch.incident.opened",   // .escalated, .closed
///  "EventId": "FW-web01-20251222T1000Z:opened", "IncidentId": "FW-web01-20251222T1000Z",
///  "Phase": "opened", "DeviceName": "web01.contoso.com", "Devices": [],
///  "Start": "2025-12-22T10:00:00Z", "End": null, "DetectedAt": "2025-12-22T10:01:30Z",
///  "Severity": "High", "Vector": "https-flood", "PeakRequests": 12345, "AlertBins": 1,
///  "CampaignId": "FW-campaign-web01-20251222T1000Z",
///  "Pulses": [{"Start": "2025-12-22T10:00:00Z", "End": "2025-12-22T10:05:00Z",
///              "PeakRequestCount": 12345}],
///  "Summary": "HTTPS flood on web01.contoso.com opened at 10:00Z: 12,345 connections (High)",
///  "Alert": { ...the alert JSON that caused the change... }}
/// ```
///
/// `EventId` is also the `Idempotency-Key` header: a receiver that sees one twice (a retry
/// after a lost answer) can drop the second. Times are RFC 3339 UTC; `End` is set when closed.
/// `CampaignId` ties the incidents of one campaign together (incidents of a device days apart,
/// or sharing most of their top sources); `Pulses` lists each pulse of a pulse wave (one entry
/// for a single run of alert bins). A fleet-wide (carpet bombing) incident, `FW-carpet-...`,
/// lists its `Devices` (it escalates as more join) and has no pulses or campaign of its own;
/// `DeviceName` is then the device of the alert that caused the change.
pub fn webhook_body(ev: &Value) -> Value {
    let inc = Incident::of(ev);
    let time = |t: Option<Nanos>| t.map_or(Value::Null, |t| Rfc3339(t).to_string().into());
    json!({
        "type": format!("floodwatch.incident.{}", inc.phase),
        "EventId": inc.event_id,
        "IncidentId": inc.incident_id,
        "Phase": inc.phase,
        "DeviceName": text(ev, "DeviceName").or_else(|| text(inc.alert, "DeviceName")),
        "Devices": inc.devices,
        "Start": time(inc.start),
        "End": time(inc.end),
        "DetectedAt": time(inc.detected_at),
        "Severity": inc.severity,
        "Vector": inc.vector,
        "PeakRequests": inc.peak,
        "AlertBins": inc.bins,
        "CampaignId": inc.campaign,
        "Pulses": inc.pulses_json,
        "Summary": inc.summary(),
        "Alert": inc.alert,
    })
}

/// The Adaptive Card of [`teams_card`], with each text cut to `max` characters.
fn teams_card_within(inc: &Incident, max: usize) -> Value {
    let colour = match (inc.phase, inc.severity) {
        ("closed", _) => "Good",
        (_, "High") => "Attention",
        (_, "Medium") => "Warning",
        _ => "Accent",
    };
    let facts: Vec<Value> = inc
        .facts()
        .into_iter()
        .map(|(t, v)| json!({"title": t, "value": truncate(&v, max)}))
        .collect();
    let mut body = vec![
        json!({"type": "TextBlock", "text": truncate(&inc.title(), max), "weight": "Bolder",
               "size": "Medium", "color": colour, "wrap": true}),
        json!({"type": "TextBlock", "text": truncate(&inc.summary(), max), "wrap": true}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    let reasons = inc.reasons();
    if !reasons.is_empty() {
        body.push(
            json!({"type": "TextBlock", "text": "Reasons", "weight": "Bolder",
                         "wrap": true}),
        );
        // One block per reason rather than a markdown list, whose line-break rules differ
        // between Teams clients.
        for r in reasons.iter().take(10) {
            body.push(
                json!({"type": "TextBlock", "text": truncate(&format!("• {r}"), max),
                             "wrap": true, "spacing": "None"}),
            );
        }
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            }
        }]
    })
}

/// The message a Teams Workflows webhook ("Post to a channel when a webhook request is
/// received") takes: an Adaptive Card 1.4 with a title coloured by phase and severity (closed
/// green, High red, Medium amber, else blue), the summary, a fact set (device, vector,
/// severity, start, end, peak, alert bins, pulses of a pulse wave, top sources, incident id,
/// campaign id) and up to ten reasons.
/// Texts are cut so that the JSON stays under [`TEAMS_MAX_BYTES`], whatever the device names
/// and reasons hold.
pub fn teams_card(ev: &Value) -> Value {
    let inc = Incident::of(ev);
    let mut card = Value::Null;
    // Characters are up to 4 bytes and JSON escapes some as 6, so a character budget alone
    // cannot promise a byte size: measure, and cut harder until it fits. The last budget
    // (about 25 texts of 40 characters) always does.
    for max in [600, 200, 40] {
        card = teams_card_within(&inc, max);
        if card.to_string().len() <= TEAMS_MAX_BYTES {
            break;
        }
    }
    card
}

/// Slack mrkdwn text: `&`, `<` and `>` escaped (so that text from telemetry cannot make a link
/// or an `@channel` mention), cut to `max` characters counted after escaping, never inside an
/// entity, ending in `…` when cut.
fn slack_text(s: &str, max: usize) -> String {
    let piece = |c: char| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        _ => None,
    };
    let total: usize = s.chars().map(|c| piece(c).map_or(1, str::len)).sum();
    let budget = if total <= max {
        max
    } else {
        max.saturating_sub(1)
    };
    let mut out = String::with_capacity(s.len().min(budget * 4));
    let mut n = 0;
    for c in s.chars() {
        let len = piece(c).map_or(1, str::len);
        if n + len > budget {
            out.push('…');
            return out;
        }
        n += len;
        match piece(c) {
            Some(p) => out.push_str(p),
            None => out.push(c),
        }
    }
    out
}

/// A Slack incoming-webhook message: `text` (the summary, shown in notifications and where
/// blocks cannot be), then a header (the title, plain text), a section with the summary and up
/// to ten facts as mrkdwn fields, a section of reasons when there are some, and a context line
/// with the event id. Within Block Kit's limits: header ≤ 150 characters, section text ≤ 3000,
/// ≤ 10 fields of ≤ 2000 each; texts are cut on character boundaries.
pub fn slack_blocks(ev: &Value) -> Value {
    let inc = Incident::of(ev);
    let summary = inc.summary();
    let fields: Vec<Value> = inc
        .facts()
        .into_iter()
        .take(SLACK_FIELDS_MAX)
        .map(|(t, v)| {
            let label = format!("*{t}*\n");
            let room = SLACK_FIELD_MAX - label.chars().count();
            json!({"type": "mrkdwn", "text": format!("{label}{}", slack_text(&v, room))})
        })
        .collect();
    let mut blocks = vec![
        json!({"type": "header",
               "text": {"type": "plain_text", "text": truncate(&inc.title(), SLACK_HEADER_MAX),
                        "emoji": true}}),
        json!({"type": "section",
               "text": {"type": "mrkdwn", "text": slack_text(&summary, SLACK_SECTION_MAX)},
               "fields": fields}),
    ];
    let reasons = inc.reasons();
    if !reasons.is_empty() {
        let list = format!("*Reasons*\n• {}", reasons.join("\n• "));
        blocks.push(json!({"type": "section",
                           "text": {"type": "mrkdwn",
                                    "text": slack_text(&list, SLACK_SECTION_MAX)}}));
    }
    // Slack takes ten fields: the campaign, the last fact, is said here too.
    let context = match inc.campaign {
        Some(c) => format!(
            "floodwatch {VERSION} · event {} · campaign {c}",
            inc.event_id
        ),
        None => format!("floodwatch {VERSION} · event {}", inc.event_id),
    };
    blocks.push(json!({"type": "context",
                       "elements": [{"type": "mrkdwn",
                                     "text": slack_text(&context, SLACK_SECTION_MAX)}]}));
    json!({"text": slack_text(&summary, SLACK_SECTION_MAX), "blocks": blocks})
}

#[cfg(test)]
mod tests {
    use super::*;

    use floodwatch_detect::floodwatch::incident::Pulse;
    use floodwatch_detect::{
        Alert, BaselineInfo, Confidence, RuleName, Severity, TopSource, Vector,
    };
    use floodwatch_pipeline::{IncidentEvent, IncidentPhase, LiveAlert, Stage};

    const T0: Nanos = 1_766_397_600 * 1_000_000_000; // 2025-12-22T10:00:00Z

    fn alert() -> Alert {
        Alert {
            time_generated: T0,
            device_name: "web01.contoso.com".into(),
            request_count: 12_345,
            unique_source_ips: 812,
            total_bytes: Some(9_876_543),
            attack_confidence: Confidence::High,
            rule: RuleName::Floodwatch,
            vector: Some(Vector::HttpsFlood),
            vector_share: Some(0.97),
            severity: Severity::High,
            reasons: vec![
                "12345 connections on 443 is 41x the expected 301 (threshold 1200)".into(),
                "812 sources, 93% never seen on this device".into(),
            ],
            baseline: Some(BaselineInfo {
                method: "seasonal median/MAD".into(),
                expected: 301.0,
                spread: 40.0,
                threshold: 1200.0,
                bins: 2016,
            }),
            new_source_ratio: Some(0.93),
            top_sources: vec![
                TopSource {
                    ip: "203.0.113.7".into(),
                    count: 4210,
                    exact: true,
                    count_upper_bound: None,
                },
                TopSource {
                    ip: "2001:db8::9".into(),
                    count: 3977,
                    exact: true,
                    count_upper_bound: None,
                },
            ],
            mitre_techniques: vec!["T1499.002".into(), "T1499.003".into()],
            suppressed: false,
            suppression_reason: None,
            incident_id: Some("FW-web01.contoso.com-20251222T1000Z".into()),
            partial: None,
        }
    }

    /// The alert JSON exactly as the engine queues it (`LiveAlert::to_json`).
    fn alert_json() -> Value {
        LiveAlert {
            alert_id: "bin-20251222T1000Z-web01.contoso.com".into(),
            stage: Stage::Bin,
            detected_at: T0 + 330 * 1_000_000_000 + 123_456_789,
            alert: alert(),
            bin: T0 / 300_000_000_000,
            carpet: false,
        }
        .to_json()
    }

    /// An incident change; after the open, its flood has come back as a second pulse.
    fn incident(phase: IncidentPhase) -> Value {
        let min = 60 * 1_000_000_000;
        let pulse = |from: i64, to: i64, peak: u64| Pulse {
            start: T0 + from * min,
            end: T0 + to * min,
            peak_request_count: peak,
        };
        let mut pulses = vec![pulse(0, 10, 12_345)];
        if phase != IncidentPhase::Opened {
            pulses.push(pulse(25, 30, 9_876));
        }
        let ev = IncidentEvent {
            event_id: format!("FW-web01.contoso.com-20251222T1000Z:{}", phase.as_str()),
            incident_id: "FW-web01.contoso.com-20251222T1000Z".into(),
            campaign_id: Some("FW-campaign-web01.contoso.com-20251221T0900Z".into()),
            phase,
            device_name: "web01.contoso.com".into(),
            start: T0,
            end: (phase == IncidentPhase::Closed).then_some(T0 + 1_800 * 1_000_000_000),
            detected_at: T0 + 90 * 1_000_000_000,
            severity: Severity::High,
            vector: Some("https-flood".into()),
            peak_requests: 12_345,
            alert_bins: 6,
            pulses,
            alert: alert(),
            devices: Vec::new(),
        };
        serde_json::to_value(&ev).unwrap()
    }

    /// A fleet-wide incident names its devices in every sink's message.
    #[test]
    fn a_carpet_incident_lists_its_devices() {
        let mut ev = incident(IncidentPhase::Opened);
        ev["IncidentId"] = "FW-carpet-20251222T1000Z".into();
        ev["Devices"] = serde_json::json!([
            "web01.contoso.com",
            "web02.contoso.com",
            "web03.contoso.com"
        ]);
        let b = webhook_body(&ev);
        assert_eq!(b["Devices"][2], "web03.contoso.com");
        assert_eq!(b["DeviceName"], "web01.contoso.com");
        assert_eq!(
            b["Summary"],
            "HTTPS flood on 3 devices (carpet bombing: web01.contoso.com, web02.contoso.com, web03.contoso.com) opened at 10:00Z: 12,345 connections (High)"
        );
        let card = teams_card(&ev).to_string();
        assert!(
            card.contains("3 devices (carpet bombing: web01.contoso.com"),
            "{card}"
        );
        let slack = slack_blocks(&ev).to_string();
        assert!(
            slack.contains("carpet bombing: web01.contoso.com, web02.contoso.com"),
            "{slack}"
        );
        // A device's incident has none.
        assert_eq!(
            webhook_body(&incident(IncidentPhase::Opened))["Devices"],
            serde_json::json!([])
        );
    }

    #[test]
    fn jsonl_line_is_one_line_of_the_same_json() {
        let text = serde_json::to_string_pretty(&alert_json()).unwrap();
        assert!(text.contains('\n'));
        let line = jsonl_line(&text);
        assert!(!line.contains(['\n', '\r']));
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap(),
            alert_json(),
            "only whitespace between tokens changed"
        );
        let compact = alert_json().to_string();
        assert_eq!(
            jsonl_line(&compact),
            compact,
            "the stored form is kept as is"
        );
    }

    #[test]
    fn ocsf_finding_follows_the_detection_finding_class() {
        let f = ocsf_finding(&alert_json());
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["category_uid"], 2);
        assert_eq!(f["activity_id"], 1);
        assert_eq!(f["type_uid"], 200401);
        assert_eq!(f["time"], 1_766_397_930_123_i64, "DetectedAt in ms");
        assert_eq!(f["start_time"], 1_766_397_600_000_i64);
        assert_eq!(f["count"], 12_345);
        assert_eq!(f["severity_id"], 4);
        assert_eq!(f["confidence_id"], 3);
        assert_eq!(f["status_id"], 1);
        let md = &f["metadata"];
        assert_eq!(md["version"], "1.1.0");
        assert_eq!(md["product"]["name"], "floodwatch");
        assert_eq!(md["product"]["vendor_name"], "floodwatch");
        assert_eq!(md["product"]["version"], VERSION);
        assert_eq!(md["uid"], "bin-20251222T1000Z-web01.contoso.com");
        assert_eq!(md["correlation_uid"], "FW-web01.contoso.com-20251222T1000Z");
        let info = &f["finding_info"];
        assert_eq!(info["uid"], "bin-20251222T1000Z-web01.contoso.com");
        assert_eq!(
            info["title"],
            "HTTPS flood on web01.contoso.com: 12,345 connections (High)"
        );
        assert!(info["desc"].as_str().unwrap().contains("41x the expected"));
        assert!(info["desc"].as_str().unwrap().contains("812 sources"));
        assert_eq!(info["types"], json!(["DDoS", "https-flood"]));
        assert_eq!(info["created_time"], f["time"]);
        assert_eq!(info["first_seen_time"], f["start_time"]);
        assert_eq!(info["analytic"]["name"], "floodwatch");
        assert_eq!(info["analytic"]["type_id"], 3);
        assert_eq!(
            info["attacks"],
            json!([
                {"technique": {"uid": "T1499", "name": "Endpoint Denial of Service"},
                 "sub_technique": {"uid": "T1499.002", "name": "Service Exhaustion Flood"},
                 "tactic": {"uid": "TA0040", "name": "Impact"}},
                {"technique": {"uid": "T1499", "name": "Endpoint Denial of Service"},
                 "sub_technique": {"uid": "T1499.003", "name": "Application Exhaustion Flood"},
                 "tactic": {"uid": "TA0040", "name": "Impact"}},
            ])
        );
        assert_eq!(
            f["resources"],
            json!([{"type": "device", "name": "web01.contoso.com"}])
        );
        assert_eq!(f["device"]["hostname"], "web01.contoso.com");
        assert_eq!(f["device"]["type_id"], 0);
        assert_eq!(
            f["evidences"],
            json!([
                {"src_endpoint": {"ip": "203.0.113.7"}, "data": {"connections": 4210}},
                {"src_endpoint": {"ip": "2001:db8::9"}, "data": {"connections": 3977}},
            ])
        );
        let un = f["unmapped"].as_object().unwrap();
        let mut keys: Vec<&str> = un.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "Baseline",
                "NewSourceRatio",
                "Stage",
                "SuppressionReason",
                "TotalBytes",
                "UniqueSourceIPs",
                "VectorShare"
            ],
            "everything not mapped, nothing mapped twice"
        );
        assert_eq!(un["Baseline"]["Method"], "seasonal median/MAD");
    }

    #[test]
    fn ocsf_maps_every_severity_the_network_techniques_and_suppression() {
        for (sev, id) in [("Informational", 1), ("Low", 2), ("Medium", 3), ("High", 4)] {
            let mut a = alert_json();
            a["Severity"] = sev.into();
            assert_eq!(ocsf_finding(&a)["severity_id"], id, "{sev}");
        }
        let mut a = alert_json();
        a["MitreTechniques"] = json!(["T1498", "T1498.001", "T1499", "T9999.001"]);
        a["Suppressed"] = true.into();
        a["Rule"] = "seed".into();
        a["TopSources"] = json!([]);
        let f = ocsf_finding(&a);
        let attacks = f["finding_info"]["attacks"].as_array().unwrap();
        assert_eq!(
            attacks[0]["technique"],
            json!({"uid": "T1498", "name": "Network Denial of Service"})
        );
        assert!(attacks[0].get("sub_technique").is_none());
        assert_eq!(
            attacks[1]["sub_technique"],
            json!({"uid": "T1498.001", "name": "Direct Network Flood"})
        );
        assert_eq!(attacks[1]["technique"]["uid"], "T1498");
        assert_eq!(
            attacks[2]["technique"],
            json!({"uid": "T1499", "name": "Endpoint Denial of Service"})
        );
        assert_eq!(
            attacks[3],
            json!({"sub_technique": {"uid": "T9999.001"}, "tactic": {"uid": "TA0040", "name": "Impact"}}),
            "an unknown id keeps its uid, with no invented name"
        );
        assert_eq!(f["status_id"], 3, "suppressed");
        assert_eq!(f["finding_info"]["analytic"]["type_id"], 1, "seed: a rule");
        assert!(f.get("evidences").is_none(), "no empty evidence objects");
    }

    #[test]
    fn cef_line_has_the_header_and_dictionary_keys() {
        let line = cef_line(&alert_json());
        let header: Vec<&str> = line.splitn(8, '|').collect();
        assert_eq!(
            header[..7],
            [
                "CEF:0",
                "floodwatch",
                "floodwatch",
                VERSION,
                "floodwatch/https-flood",
                "HTTPS flood detected",
                "8"
            ]
        );
        let ext = header[7];
        for kv in [
            "rt=1766397930123 ",
            "start=1766397600000 ",
            "dhost=web01.contoso.com ",
            "src=203.0.113.7 ",
            "cnt=12345 ",
            "in=9876543 ",
            "cn1=812 cn1Label=UniqueSourceIPs ",
            "cs1=bin-20251222T1000Z-web01.contoso.com cs1Label=AlertId ",
            "cs2=FW-web01.contoso.com-20251222T1000Z cs2Label=IncidentId ",
            "cs3=https-flood cs3Label=Vector ",
            "cs4=bin cs4Label=Stage ",
            "cs5=T1499.002,T1499.003 cs5Label=MitreTechniques ",
            "cs6=High cs6Label=AttackConfidence ",
            "act=alert ",
            "cat=DDoS ",
            "msg=12345 connections on 443 is 41x the expected 301 (threshold 1200)",
        ] {
            assert!(ext.contains(kv), "{kv:?} missing in {ext}");
        }
        assert!(ext.ends_with("(threshold 1200)"), "msg is last: {ext}");
    }

    #[test]
    fn cef_escapes_header_and_extension_values() {
        let mut a = alert_json();
        a["Rule"] = "odd|rule\\x".into();
        a["Vector"] = "pipe|vec".into();
        a["DeviceName"] = "a=b\\c\nd".into();
        a["Reasons"] = json!(["x=1 | y\r\nz"]);
        a["Severity"] = "Medium".into();
        a["Suppressed"] = true.into();
        a["TopSources"] = json!([{"IP": "2001:db8::1", "Count": 3}]);
        let line = cef_line(&a);
        assert!(line.contains("|odd\\|rule\\\\x/pipe\\|vec|pipe\\|vec detected|5|"));
        assert!(line.contains("dhost=a\\=b\\\\c\\nd "), "{line}");
        assert!(line.contains("msg=x\\=1 | y\\r\\nz"), "{line}");
        assert!(line.contains("c6a2=2001:db8::1 c6a2Label=TopSource "));
        assert!(!line.contains(" src="), "src is IPv4 only");
        assert!(line.contains("act=suppressed "));
        assert!(!line.contains(['\n', '\r']), "one line");
        // Unescaped pipes: exactly the seven header separators.
        let bare = line.replace("\\\\", "").replace("\\|", "");
        let (head, _) = bare.split_at(bare.find("rt=").unwrap());
        assert_eq!(head.matches('|').count(), 7);
    }

    #[test]
    fn syslog_5424_frames_the_message() {
        let a = alert_json();
        let msg = syslog_5424(
            "CEF:0|x",
            "fw-host",
            a["DetectedAt"].as_str().unwrap(),
            syslog_severity(&a),
        );
        // local0 (16) * 8 + critical (2)
        assert_eq!(
            msg, "<130>1 2025-12-22T10:05:30.123456Z fw-host floodwatch - ddos - CEF:0|x",
            "fraction cut to 6 digits"
        );
        assert_eq!(
            syslog_5424("m", "bad host\u{e9}", "yesterday", 9),
            "<135>1 - badhost floodwatch - ddos - m",
            "severity capped at 7, hostname printable ASCII, bad time is the nil value"
        );
        assert!(
            syslog_5424("m", "", "2025-12-22T10:00:00Z", 6)
                .starts_with("<134>1 2025-12-22T10:00:00Z - ")
        );
        let long = "h".repeat(300);
        let m = syslog_5424("m", &long, "2025-12-22T10:00:00Z", 6);
        assert!(m.contains(&format!(" {} ", "h".repeat(255))) && !m.contains(&"h".repeat(256)));
        for (sev, want) in [("High", 2), ("Medium", 4), ("Low", 5), ("Informational", 6)] {
            assert_eq!(syslog_severity(&json!({"Severity": sev})), want);
        }
    }

    #[test]
    fn webhook_body_is_the_documented_shape() {
        let b = webhook_body(&incident(IncidentPhase::Opened));
        assert_eq!(b["type"], "floodwatch.incident.opened");
        assert_eq!(b["EventId"], "FW-web01.contoso.com-20251222T1000Z:opened");
        assert_eq!(b["IncidentId"], "FW-web01.contoso.com-20251222T1000Z");
        assert_eq!(b["Phase"], "opened");
        assert_eq!(b["DeviceName"], "web01.contoso.com");
        assert_eq!(b["Start"], "2025-12-22T10:00:00Z");
        assert_eq!(b["End"], Value::Null);
        assert_eq!(b["DetectedAt"], "2025-12-22T10:01:30Z");
        assert_eq!(b["Severity"], "High");
        assert_eq!(b["Vector"], "https-flood");
        assert_eq!(b["PeakRequests"], 12_345);
        assert_eq!(b["AlertBins"], 6);
        assert_eq!(
            b["CampaignId"],
            "FW-campaign-web01.contoso.com-20251221T0900Z"
        );
        assert_eq!(
            b["Pulses"],
            serde_json::json!([{"Start": "2025-12-22T10:00:00Z", "End": "2025-12-22T10:10:00Z",
                                "PeakRequestCount": 12_345}])
        );
        assert_eq!(
            b["Summary"],
            "HTTPS flood on web01.contoso.com opened at 10:00Z: 12,345 connections (High)"
        );
        assert_eq!(b["Alert"]["DeviceName"], "web01.contoso.com");
        assert_eq!(b["Alert"]["TopSources"][0]["IP"], "203.0.113.7");

        let c = webhook_body(&incident(IncidentPhase::Closed));
        assert_eq!(c["type"], "floodwatch.incident.closed");
        assert_eq!(c["End"], "2025-12-22T10:30:00Z");
        assert_eq!(
            c["Summary"],
            "HTTPS flood on web01.contoso.com closed at 10:30Z after 6 alert bins in 2 pulses: 12,345 connections at peak (High)"
        );
        assert_eq!(c["Pulses"][1]["Start"], "2025-12-22T10:25:00Z");
        assert_eq!(c["Pulses"][1]["PeakRequestCount"], 9_876);
        let e = webhook_body(&incident(IncidentPhase::Escalated));
        assert_eq!(
            e["Summary"],
            "HTTPS flood on web01.contoso.com escalated to High at 10:01Z: 12,345 connections at peak in 2 pulses"
        );
        // An older build's event, without campaign or pulses, still makes a body.
        let mut old = incident(IncidentPhase::Opened);
        let m = old.as_object_mut().unwrap();
        m.remove("CampaignId");
        m.remove("Pulses");
        let o = webhook_body(&old);
        assert_eq!(o["CampaignId"], Value::Null);
        assert_eq!(o["Summary"], b["Summary"]);
    }

    fn card_body(card: &Value) -> &Vec<Value> {
        assert_eq!(card["type"], "message");
        let att = &card["attachments"][0];
        assert_eq!(
            att["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(att["contentUrl"], Value::Null);
        let c = &att["content"];
        assert_eq!(
            c["$schema"],
            "http://adaptivecards.io/schemas/adaptive-card.json"
        );
        assert_eq!(c["type"], "AdaptiveCard");
        assert_eq!(c["version"], "1.4");
        c["body"].as_array().unwrap()
    }

    #[test]
    fn teams_card_is_a_workflows_adaptive_card() {
        let card = teams_card(&incident(IncidentPhase::Opened));
        let body = card_body(&card);
        assert_eq!(body[0]["type"], "TextBlock");
        assert_eq!(
            body[0]["text"],
            "DDoS incident opened: HTTPS flood on web01.contoso.com"
        );
        assert_eq!(body[0]["color"], "Attention", "High");
        let facts = body.iter().find(|b| b["type"] == "FactSet").unwrap()["facts"]
            .as_array()
            .unwrap();
        let fact = |t: &str| {
            facts
                .iter()
                .find(|f| f["title"] == t)
                .map(|f| f["value"].as_str().unwrap().to_owned())
        };
        assert_eq!(fact("Device").unwrap(), "web01.contoso.com");
        assert_eq!(fact("Vector").unwrap(), "HTTPS flood");
        assert_eq!(fact("Severity").unwrap(), "High");
        assert_eq!(fact("Start").unwrap(), "2025-12-22T10:00:00Z");
        assert_eq!(fact("Peak").unwrap(), "12,345 connections");
        assert_eq!(
            fact("Top sources").unwrap(),
            "203.0.113.7 (4,210), 2001:db8::9 (3,977)"
        );
        assert_eq!(
            fact("Incident").unwrap(),
            "FW-web01.contoso.com-20251222T1000Z"
        );
        assert!(fact("End").is_none(), "not closed yet");
        assert_eq!(
            fact("Campaign").unwrap(),
            "FW-campaign-web01.contoso.com-20251221T0900Z"
        );
        assert!(fact("Pulses").is_none(), "one pulse so far");
        let texts: Vec<&str> = body.iter().filter_map(|b| b["text"].as_str()).collect();
        assert!(texts.iter().any(|t| t.starts_with("• 12345 connections")));
        assert!(texts.iter().any(|t| t.starts_with("• 812 sources")));

        let closed = teams_card(&incident(IncidentPhase::Closed));
        assert_eq!(card_body(&closed)[0]["color"], "Good");
        let pulses = card_body(&closed)
            .iter()
            .find(|b| b["type"] == "FactSet")
            .and_then(|b| b["facts"].as_array())
            .and_then(|f| f.iter().find(|f| f["title"] == "Pulses"))
            .map(|f| f["value"].clone());
        assert_eq!(
            pulses,
            Some("2: 10:00Z–10:10Z (12,345), 10:25Z–10:30Z (9,876)".into())
        );
        let mut medium = incident(IncidentPhase::Escalated);
        medium["Severity"] = "Medium".into();
        assert_eq!(card_body(&teams_card(&medium))[0]["color"], "Warning");
    }

    /// An incident whose texts are far beyond every limit, in characters of every width.
    fn huge_incident() -> Value {
        let mut ev = incident(IncidentPhase::Opened);
        let name = format!("<!channel>&{}", "Ωé😀x".repeat(2_000));
        ev["DeviceName"] = name.clone().into();
        ev["Alert"]["DeviceName"] = name.into();
        ev["Alert"]["Reasons"] = (0..100)
            .map(|i| format!("{i}: {}\u{1}", "😀<>&\"".repeat(1_000)))
            .collect::<Vec<_>>()
            .into();
        ev["IncidentId"] = "I".repeat(10_000).into();
        ev
    }

    #[test]
    fn teams_card_stays_under_the_size_limit() {
        let card = teams_card(&huge_incident());
        assert!(card.to_string().len() <= TEAMS_MAX_BYTES);
        let body = card_body(&card);
        assert!(body[0]["text"].as_str().unwrap().ends_with('…'));
        assert!(body.len() <= 3 + 1 + 10, "at most ten reasons");
        // The ordinary card is not cut at all.
        let plain = teams_card(&incident(IncidentPhase::Opened)).to_string();
        assert!(!plain.contains('…'));
    }

    #[test]
    fn slack_blocks_are_block_kit_within_limits() {
        let m = slack_blocks(&incident(IncidentPhase::Opened));
        assert_eq!(
            m["text"],
            "HTTPS flood on web01.contoso.com opened at 10:00Z: 12,345 connections (High)"
        );
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(
            blocks[0]["text"]["text"],
            "DDoS incident opened: HTTPS flood on web01.contoso.com"
        );
        assert_eq!(blocks[1]["type"], "section");
        let fields = blocks[1]["fields"].as_array().unwrap();
        assert!(fields.iter().all(|f| f["type"] == "mrkdwn"));
        assert_eq!(fields[0]["text"], "*Device*\nweb01.contoso.com");
        assert!(
            fields
                .iter()
                .any(|f| f["text"] == "*Peak*\n12,345 connections")
        );
        assert!(
            blocks[2]["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with("*Reasons*\n• 12345 connections")
        );
        let last = blocks.last().unwrap();
        assert_eq!(last["type"], "context");
        assert!(
            last["elements"][0]["text"].as_str().unwrap().ends_with(
                "event FW-web01.contoso.com-20251222T1000Z:opened · campaign FW-campaign-web01.contoso.com-20251221T0900Z"
            )
        );
        // Closed, with pulses listed: eleven facts, of which Slack takes ten; the campaign is
        // in the context line all the same.
        let m = slack_blocks(&incident(IncidentPhase::Closed));
        let blocks = m["blocks"].as_array().unwrap();
        let fields = blocks[1]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), SLACK_FIELDS_MAX);
        assert!(fields.iter().any(|f| {
            f["text"]
                .as_str()
                .unwrap()
                .starts_with("*Pulses*\n2: 10:00Z–10:10Z (12,345)")
        }));
        let context = blocks.last().unwrap()["elements"][0]["text"]
            .as_str()
            .unwrap();
        assert!(
            context.ends_with("campaign FW-campaign-web01.contoso.com-20251221T0900Z"),
            "{context}"
        );
    }

    fn chars(v: &Value) -> usize {
        v.as_str().unwrap().chars().count()
    }

    #[test]
    fn slack_limits_hold_for_huge_texts_and_markup_is_escaped() {
        let m = slack_blocks(&huge_incident());
        let blocks = m["blocks"].as_array().unwrap();
        let header = &blocks[0]["text"]["text"];
        assert_eq!(chars(header), SLACK_HEADER_MAX);
        assert!(header.as_str().unwrap().ends_with('…'));
        for b in blocks.iter().filter(|b| b["type"] == "section") {
            assert!(chars(&b["text"]["text"]) <= SLACK_SECTION_MAX);
            if let Some(fields) = b["fields"].as_array() {
                assert!(fields.len() <= SLACK_FIELDS_MAX);
                for f in fields {
                    assert!(chars(&f["text"]) <= SLACK_FIELD_MAX);
                }
            }
        }
        assert!(chars(&m["text"]) <= SLACK_SECTION_MAX);
        // mrkdwn texts (all but the plain-text header, where Slack reads no markup).
        let mut all = m.clone();
        all["blocks"][0] = Value::Null;
        let all = all.to_string();
        assert!(!all.contains("<!channel>"), "no mention from telemetry");
        assert!(all.contains("&lt;!channel&gt;&amp;"));
        // A cut never splits an entity: every `&` starts a whole one.
        for b in blocks.iter().filter(|b| b["type"] == "section") {
            let t = b["text"]["text"].as_str().unwrap();
            for (i, _) in t.match_indices('&') {
                let rest = &t[i..];
                assert!(
                    rest.starts_with("&amp;")
                        || rest.starts_with("&lt;")
                        || rest.starts_with("&gt;"),
                    "{:?}",
                    &rest[..rest.len().min(8)]
                );
            }
        }
    }

    #[test]
    fn cutting_counts_characters_and_escapes() {
        assert_eq!(truncate("😀😀😀", 3), "😀😀😀");
        assert_eq!(truncate("😀😀😀😀", 3), "😀😀…");
        assert_eq!(slack_text("a<b", 6), "a&lt;b");
        assert_eq!(slack_text("a<b", 5), "a…", "never half an entity");
        assert_eq!(slack_text("ab<", 4), "ab…");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
