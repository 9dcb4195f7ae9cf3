//! The table on a terminal of a given width: incidents first, one line each, no line wider
//! than the terminal; piped without `COLUMNS`, whole lines.

use super::*;

/// Four devices with long names, each with two hours of normal traffic and then a 15-minute
/// flood from 300 new sources, 40 minutes after the one before (floods at the same time on
/// several devices would be one carpet-bombing incident).
pub(super) fn floods() -> String {
    let mut rows = Vec::new();
    for d in 0..4u64 {
        let device = format!("frontend-{d:02}.branch-office-paris.eu-west.contoso.example.com");
        rows.extend(normal(&device, 9 * 3600, 300, 4, d * 10_000_000));
        let mut rid = d * 10_000_000 + 1_000_000;
        for i in 0..300u64 {
            for k in 0..15 {
                rows.push(row(
                    &at(11 * 3600 + d * 2400 + (i * 15 + k) * 900 / 4500),
                    &device,
                    "InboundConnectionAccepted",
                    &format!("198.18.{}.{}", i / 200 + d * 2, i % 200 + 1),
                    443,
                    rid,
                ));
                rid += 1;
            }
        }
    }
    rows.sort();
    rows.join("\n") + "\n"
}

fn table(path: &Path, columns: Option<&str>, extra: &[&str]) -> Output {
    let mut c = bin();
    c.arg("detect").args(extra).arg(path);
    c.env_remove("COLUMNS");
    if let Some(cols) = columns {
        c.env("COLUMNS", cols);
    }
    let o = c.output().expect("runs");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    o
}

#[test]
fn at_80_columns_no_line_is_wider_and_every_incident_is_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("floods.json");
    std::fs::write(&p, floods()).expect("write");
    let inc = dir.path().join("incidents.jsonl");
    let o = table(&p, Some("80"), &["--incidents", inc.to_str().expect("p")]);
    let out = stdout(&o);
    for l in out.lines() {
        assert!(l.chars().count() <= 80, "{} chars: {l}", l.chars().count());
    }
    let incidents: Vec<serde_json::Value> = std::fs::read_to_string(&inc)
        .expect("incidents")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(incidents.len(), 4, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "4 incidents (0 suppressed)", "{out}");
    assert!(lines[1].starts_with("TIME (UTC)"), "{out}");
    for (i, inc) in incidents.iter().enumerate() {
        let device = inc["Devices"][0].as_str().expect("device");
        let start = &inc["Start"].as_str().expect("start")[..16].replace('T', " ");
        let line = lines[2 + i];
        assert!(line.starts_with(start.as_str()), "{line} for {inc}");
        // The device name is narrowed to fit 80 columns, but begins where it should, and the
        // rest of the incident is on the line.
        assert!(line.contains(&device[..11]), "{line} for {inc}");
        let peak = format!(
            "https-flood  {} conn/5m  {}",
            inc["Peak"]["RequestCount"],
            inc["AttackConfidence"].as_str().expect("conf")
        );
        assert!(line.contains(&peak), "{line} for {inc}");
    }
    // Nothing between the incident lines: each is whole on its own line.
    assert_eq!(lines[6], "");
    let alerts_header = lines[7];
    assert!(alerts_header.ends_with("alerts (0 suppressed)"), "{out}");
    // Piped without COLUMNS: the same rows, never cut, so grep sees whole lines.
    let o = table(&p, None, &[]);
    let whole = stdout(&o);
    assert_eq!(whole.lines().count(), out.lines().count(), "{whole}");
    assert!(!whole.contains('…'), "{whole}");
    assert!(
        whole.lines().any(|l| l.chars().count() > 80),
        "the rows are wider than 80 when not cut: {whole}"
    );
    for inc in &incidents {
        let device = inc["Devices"][0].as_str().expect("device");
        assert_eq!(
            whole
                .lines()
                .filter(|l| l.contains(device) && l.contains(" conn/5m "))
                .count(),
            1,
            "{whole}"
        );
    }
    // Verbose: every reason under its alert, not cut.
    let o = table(&p, Some("80"), &["--verbose"]);
    let v = stdout(&o);
    assert!(
        v.lines()
            .any(|l| l.starts_with("    - ") && l.chars().count() > 80),
        "{v}"
    );
}

/// The seed rule flagging every bin: a few hundred alerts, none wider than the terminal.
#[test]
fn many_seed_alerts_fit_60_columns() {
    let rows = normal("web-01.contoso.com", 0, 24 * 60, 2, 0);
    let (_d, p) = temp_file("day.json", &(rows.join("\n") + "\n"));
    let o = table(
        &p,
        Some("60"),
        &[
            "--rule",
            "seed",
            "--distinct-threshold",
            "0",
            "--since",
            "2025-12-22T00:00:00Z",
        ],
    );
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "287 alerts (0 suppressed)", "{out}");
    assert_eq!(lines.len(), 2 + 287);
    assert!(lines.iter().all(|l| l.chars().count() <= 60), "{out}");
}
