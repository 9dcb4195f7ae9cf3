//! Output sinks: where alerts leave the engine.
//!
//! - `table`: for a person at a terminal; incidents first (what happened), one line each, then
//!   alert bins with few columns, lines cut to the terminal's width ([`TableStyle`]).
//! - `jsonl`: one alert per line, keys named like the seed query's columns plus floodwatch's
//!   (`Vector`, `Reasons`, ...): for scripts, SIEM ingestion and golden tests.
//! - `csv`: the same flat columns for spreadsheets; lists are joined with `; `.
//! - [`sentinel`]: not alerts but the rules themselves, as Sentinel analytics rules.
//!
//! Sinks write to any `io::Write`; the CLI decides where (stdout, a file) and treats a closed
//! pipe as a normal end.

pub mod report;
pub mod sentinel;

use std::io::{self, Write};

use floodwatch_core::time::Rfc3339;
use floodwatch_detect::Alert;
use floodwatch_detect::floodwatch::incident::Pulse;
use serde::Serialize;

/// How alerts are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Jsonl,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "jsonl" | "json" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("unknown output format {s:?} (table, jsonl, csv)")),
        }
    }
}

/// An incident as the table shows it (the detector's incident type converts into this).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IncidentRow {
    pub incident_id: String,
    pub devices: Vec<String>,
    pub start: i64,
    /// `None`: still going at the end of the data.
    pub end: Option<i64>,
    pub vector: String,
    pub severity: String,
    pub peak_requests: u64,
    pub alert_bins: usize,
    /// Highest confidence of its bins.
    pub confidence: String,
    pub suppressed: bool,
    pub suppression_reason: Option<String>,
    /// Width of the bins `peak_requests` counts in, seconds.
    pub bin_width_secs: i64,
    /// The campaign it belongs to (unsuppressed incidents).
    pub campaign_id: Option<String>,
    /// Its pulses (one for a single run of alert bins).
    pub pulses: Vec<Pulse>,
}

fn fmt_bytes(b: Option<u64>) -> String {
    b.map(|b| b.to_string()).unwrap_or_default()
}

fn top_sources(a: &Alert) -> String {
    a.top_sources
        .iter()
        .map(|t| format!("{}:{}", t.ip, t.count_text()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes alerts (and, for the table, incidents first), the table with lines never cut.
pub fn write(
    out: &mut dyn Write,
    format: Format,
    alerts: &[Alert],
    incidents: &[IncidentRow],
) -> io::Result<()> {
    write_styled(out, format, alerts, incidents, &TableStyle::default())
}

/// [`write`] with the table laid out as `style` says.
pub fn write_styled(
    out: &mut dyn Write,
    format: Format,
    alerts: &[Alert],
    incidents: &[IncidentRow],
    style: &TableStyle,
) -> io::Result<()> {
    match format {
        Format::Jsonl => write_jsonl(out, alerts),
        Format::Csv => write_csv(out, alerts),
        Format::Table => write_table(out, alerts, incidents, style),
    }
}

/// One JSON object per line.
pub fn write_jsonl<T: Serialize>(out: &mut dyn Write, items: &[T]) -> io::Result<()> {
    for a in items {
        serde_json::to_writer(&mut *out, a)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

const CSV_HEADER: [&str; 17] = [
    "TimeGenerated",
    "DeviceName",
    "RequestCount",
    "UniqueSourceIPs",
    "TotalBytes",
    "AttackConfidence",
    "Rule",
    "Vector",
    "VectorShare",
    "Severity",
    "NewSourceRatio",
    "TopSources",
    "MitreTechniques",
    "Suppressed",
    "SuppressionReason",
    "IncidentId",
    "Reasons",
];

fn write_csv(out: &mut dyn Write, alerts: &[Alert]) -> io::Result<()> {
    write_csv_rows(out, alerts, true)
}

/// CSV rows, with the header line first when `header` (streamed output writes it once).
pub fn write_csv_rows(out: &mut dyn Write, alerts: &[Alert], header: bool) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    if header {
        w.write_record(CSV_HEADER)?;
    }
    for a in alerts {
        w.write_record([
            Rfc3339(a.time_generated).to_string(),
            a.device_name.clone(),
            a.request_count.to_string(),
            a.unique_source_ips.to_string(),
            fmt_bytes(a.total_bytes),
            a.attack_confidence.as_str().to_owned(),
            a.rule.as_str().to_owned(),
            a.vector.map(|v| v.as_str()).unwrap_or_default().to_owned(),
            a.vector_share
                .map(|s| format!("{s:.3}"))
                .unwrap_or_default(),
            a.severity.as_str().to_owned(),
            a.new_source_ratio
                .map(|s| format!("{s:.3}"))
                .unwrap_or_default(),
            top_sources(a),
            a.mitre_techniques.join(" "),
            a.suppressed.to_string(),
            a.suppression_reason.clone().unwrap_or_default(),
            a.incident_id.clone().unwrap_or_default(),
            a.reasons.join("; "),
        ])?;
    }
    w.flush()
}

/// How the table is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStyle {
    /// Longest line, in characters: longer lines are cut with `…`. `None`: lines are never cut
    /// (what a pipe gets unless `COLUMNS` says otherwise, so that grep sees whole lines).
    pub width: Option<usize>,
    /// Every reason of every alert, one per line under it, and each incident's id and devices
    /// (these lines are never cut).
    pub verbose: bool,
}

/// `n` and the noun, singular or plural: `1 alert`, `2 alerts`.
pub fn count(n: impl Into<u64>, singular: &str, plural: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// `s` cut to `width` characters, the last one `…` when cut.
fn cut(s: &str, width: Option<usize>) -> String {
    match width {
        Some(w) if s.chars().count() > w => {
            let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
            t.push('…');
            t
        }
        _ => s.to_owned(),
    }
}

/// Rows of cells as lines, columns padded to their widest cell (the last column is not
/// padded), two spaces apart. With a `width`, the `shrink` column (device names, the one that
/// can be long) is narrowed first, down to [`MIN_SHRUNK`] characters, its cells cut with `…`;
/// then each line is cut to `width`, which only takes from the end of the last columns.
fn columns(rows: &[Vec<String>], width: Option<usize>, shrink: usize) -> Vec<String> {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; n];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    // The line to make room for: every column at its widest, two spaces apart, the last (the
    // reasons, cut anyway) only up to [`LAST_KEPT`] characters.
    let natural = widths[..n.saturating_sub(1)].iter().sum::<usize>()
        + 2 * n.saturating_sub(1)
        + widths.last().map_or(0, |&l| l.min(LAST_KEPT));
    if let Some(w) = width
        && natural > w
        && shrink + 1 < n
    {
        widths[shrink] = widths[shrink]
            .saturating_sub(natural - w)
            .max(MIN_SHRUNK.min(widths[shrink]));
    }
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                if i + 1 < r.len() {
                    let c = cut(c, Some(widths[i]));
                    let pad = widths[i] - c.chars().count();
                    line.push_str(&c);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str(c);
                }
            }
            cut(line.trim_end(), width)
        })
        .collect()
}

/// The narrowest a shrunk column gets.
const MIN_SHRUNK: usize = 12;

/// How much of the last column a shrunk column makes room for.
const LAST_KEPT: usize = 24;

/// `2025-12-22 13:00Z`: minutes are as fine as bins go.
fn minute(t: i64) -> String {
    let s = Rfc3339(t).to_string();
    // RFC 3339 from `Rfc3339` is `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
    format!("{} {}Z", &s[..10], &s[11..16])
}

/// `2025-12-22 13:00–13:25Z`, the day written once when the same.
fn span(start: i64, end: Option<i64>) -> String {
    let a = minute(start);
    match end {
        None => format!("{a}–ongoing"),
        Some(e) => {
            let b = minute(e);
            if a[..10] == b[..10] {
                format!("{}–{}", &a[..16], &b[11..])
            } else {
                format!("{a}–{b}")
            }
        }
    }
}

/// What an incident's peak counts, per bin of `bin_secs`.
fn peak_unit(vector: &str, bin_secs: i64) -> String {
    // Short, so that an incident's line fits a terminal: connections accepted, SYNs
    // (connection attempts), UDP and ICMP events, inbound events of every vector.
    let what = match vector {
        "https-flood" => "conn",
        "syn-flood" => "SYN",
        "udp-flood" => "UDP",
        "icmp-flood" => "ICMP",
        _ => "events",
    };
    let per = if bin_secs % 3600 == 0 {
        format!("{}h", bin_secs / 3600)
    } else if bin_secs % 60 == 0 {
        format!("{}m", bin_secs / 60)
    } else {
        format!("{bin_secs}s")
    };
    format!("{what}/{per}")
}

fn devices(d: &[String]) -> String {
    match d {
        [] => String::new(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} +{}", rest.len()),
    }
}

fn write_table(
    out: &mut dyn Write,
    alerts: &[Alert],
    incidents: &[IncidentRow],
    style: &TableStyle,
) -> io::Result<()> {
    write_incidents(out, incidents, style)?;
    write_alert_table(out, alerts, style)
}

/// The incidents, one line each (nothing when there are none).
pub fn write_incidents(
    out: &mut dyn Write,
    incidents: &[IncidentRow],
    style: &TableStyle,
) -> io::Result<()> {
    if incidents.is_empty() {
        return Ok(());
    }
    let suppressed = incidents.iter().filter(|i| i.suppressed).count() as u64;
    writeln!(
        out,
        "{} ({suppressed} suppressed)",
        count(incidents.len() as u64, "incident", "incidents")
    )?;
    let mut rows = vec![vec![
        "TIME (UTC)".to_owned(),
        "DEVICE".to_owned(),
        "VECTOR".to_owned(),
        "PEAK".to_owned(),
        "CONF".to_owned(),
        "SUPPRESSED".to_owned(),
    ]];
    for i in incidents {
        rows.push(vec![
            span(i.start, i.end),
            devices(&i.devices),
            i.vector.clone(),
            format!(
                "{} {}",
                i.peak_requests,
                peak_unit(&i.vector, i.bin_width_secs)
            ),
            i.confidence.clone(),
            if i.suppressed {
                format!(
                    "yes: {}",
                    i.suppression_reason.as_deref().unwrap_or("suppressed")
                )
            } else {
                "no".to_owned()
            },
        ]);
    }
    for (n, line) in columns(&rows, style.width, 1).iter().enumerate() {
        writeln!(out, "{line}")?;
        if style.verbose && n > 0 {
            let i = &incidents[n - 1];
            writeln!(out, "    incident {}", i.incident_id)?;
            if let Some(c) = &i.campaign_id {
                writeln!(out, "    campaign {c}")?;
            }
            if i.devices.len() > 1 {
                writeln!(out, "    devices {}", i.devices.join(", "))?;
            }
            if i.pulses.len() > 1 {
                let unit = peak_unit(&i.vector, i.bin_width_secs);
                let list: Vec<String> = i
                    .pulses
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {} {unit}",
                            span(p.start, Some(p.end)),
                            p.peak_request_count
                        )
                    })
                    .collect();
                writeln!(out, "    pulses {}: {}", i.pulses.len(), list.join(", "))?;
            }
        }
    }
    writeln!(out)
}

fn write_alert_table(out: &mut dyn Write, alerts: &[Alert], style: &TableStyle) -> io::Result<()> {
    if alerts.is_empty() {
        writeln!(out, "No alerts.")?;
        return out.flush();
    }
    let floodwatch = alerts.iter().any(|a| a.vector.is_some());
    let suppressed = alerts.iter().filter(|a| a.suppressed).count() as u64;
    writeln!(
        out,
        "{} ({suppressed} suppressed)",
        count(alerts.len() as u64, "alert", "alerts")
    )?;
    let mut header: Vec<String> = ["TIME (UTC)", "DEVICE"].map(String::from).to_vec();
    if floodwatch {
        header.push("VECTOR".into());
    }
    header.extend(["COUNT", "SOURCES"].map(String::from));
    if !floodwatch {
        header.push("BYTES".into());
    }
    header.extend(["CONF", "WHY"].map(String::from));
    let mut rows = vec![header];
    for a in alerts {
        let mut row = vec![minute(a.time_generated), a.device_name.clone()];
        if floodwatch {
            row.push(a.vector.map(|v| v.as_str()).unwrap_or_default().to_owned());
        }
        row.extend([a.request_count.to_string(), a.unique_source_ips.to_string()]);
        if !floodwatch {
            row.push(fmt_bytes(a.total_bytes));
        }
        row.push(a.attack_confidence.as_str().to_owned());
        row.push(match &a.suppression_reason {
            Some(r) if a.suppressed => format!("suppressed: {r}"),
            _ => a.reasons.first().cloned().unwrap_or_default(),
        });
        rows.push(row);
    }
    let lines = columns(&rows, style.width, 1);
    for (i, line) in lines.iter().enumerate() {
        writeln!(out, "{line}")?;
        if style.verbose && i > 0 {
            for r in &alerts[i - 1].reasons {
                writeln!(out, "    - {r}")?;
            }
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwatch_detect::{Confidence, RuleName, Severity};

    fn alert() -> Alert {
        Alert {
            time_generated: 1_766_395_200_000_000_000,
            device_name: "web01.contoso.com".into(),
            request_count: 25_000,
            unique_source_ips: 600,
            total_bytes: None,
            attack_confidence: Confidence::High,
            rule: RuleName::Seed,
            vector: None,
            vector_share: None,
            severity: Severity::High,
            reasons: vec!["25000 > 7.01".into(), "600 distinct sources > 300".into()],
            baseline: None,
            new_source_ratio: None,
            top_sources: vec![],
            mitre_techniques: vec!["T1499.002".into()],
            suppressed: false,
            suppression_reason: None,
            incident_id: None,
            partial: None,
        }
    }

    #[test]
    fn jsonl_keeps_the_seed_columns() {
        let mut buf = Vec::new();
        write(&mut buf, Format::Jsonl, &[alert()], &[]).unwrap();
        let s = String::from_utf8(buf).unwrap();
        assert_eq!(s.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(s.trim()).unwrap();
        assert_eq!(v["TimeGenerated"], "2025-12-22T09:20:00Z");
        assert_eq!(v["DeviceName"], "web01.contoso.com");
        assert_eq!(v["RequestCount"], 25_000);
        assert_eq!(v["UniqueSourceIPs"], 600);
        assert!(v["TotalBytes"].is_null());
        assert_eq!(v["AttackConfidence"], "High");
        assert_eq!(v["Rule"], "seed");
        let back: Alert = serde_json::from_str(s.trim()).unwrap();
        assert_eq!(back, alert());
    }

    #[test]
    fn csv_has_header_and_quotes() {
        let mut buf = Vec::new();
        write(&mut buf, Format::Csv, &[alert()], &[]).unwrap();
        let s = String::from_utf8(buf).unwrap();
        let mut lines = s.lines();
        assert!(lines.next().unwrap().starts_with(
            "TimeGenerated,DeviceName,RequestCount,UniqueSourceIPs,TotalBytes,AttackConfidence,Rule"
        ));
        let row = lines.next().unwrap();
        assert!(row.starts_with("2025-12-22T09:20:00Z,web01.contoso.com,25000,600,,High,seed,"));
        assert!(row.ends_with("25000 > 7.01; 600 distinct sources > 300"));
    }

    fn incident(suppressed: bool) -> IncidentRow {
        IncidentRow {
            incident_id: "FW-web01.contoso.com-20251222T092000Z".into(),
            devices: vec!["web01.contoso.com".into()],
            start: 1_766_395_200_000_000_000,
            end: None,
            vector: "https-flood".into(),
            severity: "High".into(),
            peak_requests: 25_000,
            alert_bins: 3,
            confidence: "High".into(),
            suppressed,
            suppression_reason: suppressed.then(|| "load test: allow-listed sources".into()),
            bin_width_secs: 300,
            campaign_id: (!suppressed)
                .then(|| "FW-campaign-web01.contoso.com-20251221T080000Z".into()),
            pulses: vec![
                Pulse {
                    start: 1_766_395_200_000_000_000,
                    end: 1_766_395_500_000_000_000,
                    peak_request_count: 25_000,
                },
                Pulse {
                    start: 1_766_396_100_000_000_000,
                    end: 1_766_396_700_000_000_000,
                    peak_request_count: 19_000,
                },
            ],
        }
    }

    fn table(alerts: &[Alert], incidents: &[IncidentRow], style: TableStyle) -> String {
        let mut buf = Vec::new();
        write_styled(&mut buf, Format::Table, alerts, incidents, &style).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn table_shows_incidents_first_one_line_each() {
        let s = table(&[alert()], &[incident(false)], TableStyle::default());
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "1 incident (0 suppressed)");
        assert!(lines[1].starts_with("TIME (UTC)"), "{s}");
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "2025-12-22",
                "09:20Z–ongoing",
                "web01.contoso.com",
                "https-flood",
                "25000",
                "conn/5m",
                "High",
                "no"
            ]
        );
        assert_eq!(lines[3], "");
        assert_eq!(lines[4], "1 alert (0 suppressed)");
        assert_eq!(
            lines[6].split_whitespace().collect::<Vec<_>>(),
            [
                "2025-12-22",
                "09:20Z",
                "web01.contoso.com",
                "25000",
                "600",
                "High",
                "25000",
                ">",
                "7.01"
            ]
        );
        assert!(lines[6].ends_with("25000 > 7.01"), "{s}");
        assert_eq!(lines.len(), 7, "{s}");
        assert_eq!(table(&[], &[], TableStyle::default()), "No alerts.\n");
    }

    #[test]
    fn table_lines_fit_the_width_and_verbose_shows_every_reason() {
        let mut a = alert();
        a.reasons[0] = "a very long reason ".repeat(20);
        let sup = incident(true);
        let style = TableStyle {
            width: Some(60),
            verbose: false,
        };
        let s = table(
            &[a.clone(), a.clone()],
            &[sup.clone(), incident(false)],
            style,
        );
        for l in s.lines() {
            assert!(l.chars().count() <= 60, "{l:?}");
        }
        assert!(s.contains("2 incidents (1 suppressed)"), "{s}");
        assert!(s.contains("2 alerts (0 suppressed)"), "{s}");
        assert!(s.lines().any(|l| l.ends_with('…')), "{s}");
        // A long device name is narrowed before anything else is cut.
        let mut long = incident(false);
        long.devices = vec!["frontend-07.branch-office-paris.eu-west.contoso.example.com".into()];
        let at80 = TableStyle {
            width: Some(80),
            verbose: false,
        };
        let s = table(&[], &[long], at80);
        let line = s.lines().nth(2).unwrap();
        assert_eq!(
            line, "2025-12-22 09:20Z–ongoing  frontend-07…  https-flood  25000 conn/5m  High  no",
            "{s}"
        );
        let wide = table(&[a.clone()], &[sup], TableStyle::default());
        assert!(
            wide.contains("yes: load test: allow-listed sources"),
            "{wide}"
        );
        assert!(
            wide.contains(a.reasons[0].trim_end()),
            "uncut when no width: {wide}"
        );
        let v = table(
            &[a.clone()],
            &[incident(false)],
            TableStyle {
                width: Some(60),
                verbose: true,
            },
        );
        assert!(
            v.contains("\n    incident FW-web01.contoso.com-20251222T092000Z\n    campaign FW-campaign-web01.contoso.com-20251221T080000Z\n    pulses 2: 2025-12-22 09:20–09:25Z 25000 conn/5m, 2025-12-22 09:35–09:45Z 19000 conn/5m\n"),
            "{v}"
        );
        assert!(v.contains(&format!("    - {}", a.reasons[0])), "{v}");
        assert!(v.contains("    - 600 distinct sources > 300"), "{v}");
    }

    #[test]
    fn counts_have_plurals() {
        assert_eq!(count(1u64, "alert", "alerts"), "1 alert");
        assert_eq!(count(0u64, "alert", "alerts"), "0 alerts");
        assert_eq!(count(2u64, "alert", "alerts"), "2 alerts");
    }

    #[test]
    fn spans_write_the_day_once() {
        let t = 1_766_395_200_000_000_000;
        assert_eq!(
            span(t, Some(t + 1_500_000_000_000)),
            "2025-12-22 09:20–09:45Z"
        );
        assert_eq!(
            span(t, Some(t + 86_400_000_000_000)),
            "2025-12-22 09:20Z–2025-12-23 09:20Z"
        );
        assert_eq!(peak_unit("syn-flood", 60), "SYN/1m");
    }
}
