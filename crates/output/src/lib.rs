//! Output sinks: where alerts leave the engine.
//!
//! - `table`: for a person at a terminal; incidents first (what happened), then alert bins.
//! - `jsonl`: one alert per line, keys named like the seed query's columns plus floodwatch's
//!   (`Vector`, `Reasons`, ...): for scripts, SIEM ingestion and golden tests.
//! - `csv`: the same flat columns for spreadsheets; lists are joined with `; `.
//!
//! Sinks write to any `io::Write`; the CLI decides where (stdout, a file) and treats a closed
//! pipe as a normal end.

pub mod report;

use std::io::{self, Write};

use comfy_table::{Cell, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use floodwatch_core::time::Rfc3339;
use floodwatch_detect::Alert;
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
    pub suppressed: bool,
}

fn fmt_bytes(b: Option<u64>) -> String {
    b.map(|b| b.to_string()).unwrap_or_default()
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_default()
}

fn top_sources(a: &Alert) -> String {
    a.top_sources
        .iter()
        .map(|t| format!("{}:{}", t.ip, t.count))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes alerts (and, for the table, incidents first).
pub fn write(
    out: &mut dyn Write,
    format: Format,
    alerts: &[Alert],
    incidents: &[IncidentRow],
) -> io::Result<()> {
    match format {
        Format::Jsonl => write_jsonl(out, alerts),
        Format::Csv => write_csv(out, alerts),
        Format::Table => write_table(out, alerts, incidents),
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

fn new_table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

fn write_table(out: &mut dyn Write, alerts: &[Alert], incidents: &[IncidentRow]) -> io::Result<()> {
    write_incidents(out, incidents)?;
    write_alert_table(out, alerts)
}

/// The incidents table alone (nothing when there are none).
pub fn write_incidents(out: &mut dyn Write, incidents: &[IncidentRow]) -> io::Result<()> {
    if !incidents.is_empty() {
        let mut t = new_table();
        t.set_header([
            "Incident",
            "Devices",
            "Start",
            "End",
            "Vector",
            "Severity",
            "Peak",
            "Bins",
            "Suppressed",
        ]);
        for i in incidents {
            t.add_row([
                Cell::new(&i.incident_id),
                Cell::new(i.devices.join(", ")),
                Cell::new(Rfc3339(i.start)),
                Cell::new(
                    i.end
                        .map(|e| Rfc3339(e).to_string())
                        .unwrap_or_else(|| "ongoing".into()),
                ),
                Cell::new(&i.vector),
                Cell::new(&i.severity),
                Cell::new(i.peak_requests),
                Cell::new(i.alert_bins),
                Cell::new(if i.suppressed { "yes" } else { "" }),
            ]);
        }
        writeln!(out, "Incidents ({})", incidents.len())?;
        writeln!(out, "{t}")?;
        writeln!(out)?;
    }
    Ok(())
}

fn write_alert_table(out: &mut dyn Write, alerts: &[Alert]) -> io::Result<()> {
    if alerts.is_empty() {
        writeln!(out, "No alerts.")?;
        return out.flush();
    }
    let floodwatch = alerts.iter().any(|a| a.vector.is_some());
    let mut t = new_table();
    let mut header = vec![
        "TimeGenerated",
        "DeviceName",
        "RequestCount",
        "UniqueSourceIPs",
        "TotalBytes",
        "AttackConfidence",
    ];
    if floodwatch {
        header.extend(["Vector", "Severity", "New", "Suppressed", "Why"]);
    }
    t.set_header(header);
    for a in alerts {
        let mut row = vec![
            Rfc3339(a.time_generated).to_string(),
            a.device_name.clone(),
            a.request_count.to_string(),
            a.unique_source_ips.to_string(),
            fmt_bytes(a.total_bytes),
            a.attack_confidence.as_str().to_owned(),
        ];
        if floodwatch {
            row.extend([
                a.vector.map(|v| v.as_str()).unwrap_or_default().to_owned(),
                a.severity.as_str().to_owned(),
                fmt_ratio(a.new_source_ratio),
                a.suppression_reason.clone().unwrap_or_default(),
                a.reasons.first().cloned().unwrap_or_default(),
            ]);
        }
        t.add_row(row);
    }
    let suppressed = alerts.iter().filter(|a| a.suppressed).count();
    writeln!(
        out,
        "Alerts ({}, of which {} suppressed)",
        alerts.len(),
        suppressed
    )?;
    writeln!(out, "{t}")?;
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

    #[test]
    fn table_shows_incidents_first() {
        let mut buf = Vec::new();
        let inc = IncidentRow {
            incident_id: "FW-1".into(),
            devices: vec!["web01.contoso.com".into()],
            start: 1_766_395_200_000_000_000,
            end: None,
            vector: "https-flood".into(),
            severity: "High".into(),
            peak_requests: 25_000,
            alert_bins: 3,
            suppressed: false,
        };
        write(&mut buf, Format::Table, &[alert()], &[inc]).unwrap();
        let s = String::from_utf8(buf).unwrap();
        let i = s.find("Incidents (1)").unwrap();
        let a = s.find("Alerts (1, of which 0 suppressed)").unwrap();
        assert!(i < a);
        assert!(s.contains("ongoing"));
        assert!(s.contains("25000"));
        let mut empty = Vec::new();
        write(&mut empty, Format::Table, &[], &[]).unwrap();
        assert_eq!(String::from_utf8(empty).unwrap(), "No alerts.\n");
    }
}
