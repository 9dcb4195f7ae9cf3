//! What the commands print, pinned: the default rule's alert fields, `--incidents`,
//! `evaluate`'s exit 3, `demo`.

use super::*;

/// The floods of [`super::table::floods`], with labels: frontend-00's flood is an attack,
/// frontend-01's is declared benign (so its unsuppressed alerts count against the target).
fn labelled() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("floods.json");
    std::fs::write(&data, super::table::floods()).expect("write");
    let labels = dir.path().join("labels.jsonl");
    let d = |n: u32| format!("frontend-{n:02}.branch-office-paris.eu-west.contoso.example.com");
    let text = format!(
        "{}\n{}\n",
        serde_json::json!({"Scenario": "https-flood", "Kind": "attack", "Devices": [d(0)],
            "Start": "2025-12-22T11:00:00Z", "End": "2025-12-22T11:15:00Z",
            "Vector": "https-flood", "AllowSources": []}),
        serde_json::json!({"Scenario": "flash-crowd", "Kind": "benign", "Devices": [d(1)],
            "Start": "2025-12-22T11:40:00Z", "End": "2025-12-22T11:55:00Z",
            "Vector": null, "AllowSources": []}),
    );
    std::fs::write(&labels, text).expect("labels");
    (dir, data, labels)
}

#[test]
fn evaluate_exits_3_when_a_target_is_not_met_and_0_when_it_is() {
    let (dir, data, labels) = labelled();
    let json = dir.path().join("report.json");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "evaluate".to_owned(),
            "--labels".into(),
            labels.to_str().expect("p").into(),
            "--json".into(),
            json.to_str().expect("p").into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(data.to_str().expect("p").into());
        a
    };
    let o = bin().args(args(&[])).output().expect("runs");
    assert_eq!(o.status.code(), Some(3), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("attacks detected within 2 bins (10 min): 1/1"),
        "{out}"
    );
    assert!(
        out.contains(
            "unsuppressed alerts on benign scenarios: 3 (target <= 0), over 1 benign scenarios"
        ),
        "{out}"
    );
    assert!(out.trim_end().ends_with("FAILED"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("report");
    assert_eq!(report["BenignAlerts"], 3);
    assert_eq!(report["Passed"], false);
    assert!(
        summary_lines(&o).contains(&"devices: 4".to_owned()),
        "{}",
        stderr(&o)
    );
    // The same run with the target at what it counts passes.
    let o = bin()
        .args(args(&["--max-benign-alerts", "3"]))
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).trim_end().ends_with("PASSED"), "{}", stdout(&o));
    // No record at all is not a pass.
    let (_e, empty) = temp_file("empty.json", "");
    let o = run(&[
        "evaluate",
        "--labels",
        labels.to_str().expect("p"),
        empty.to_str().expect("p"),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
}

/// The default rule's alert on a small fixture, every field the analyst reads.
#[test]
fn the_default_rules_alert_fields_and_incidents() {
    let (dir, data, _) = labelled();
    let inc = dir.path().join("incidents.jsonl");
    let o = run(&[
        "detect",
        "--output",
        "jsonl",
        "--incidents",
        inc.to_str().expect("p"),
        data.to_str().expect("p"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let alerts: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(alerts.len(), 12, "{}", stdout(&o));
    let a = &alerts[0];
    let device = "frontend-00.branch-office-paris.eu-west.contoso.example.com";
    assert_eq!(a["TimeGenerated"], "2025-12-22T11:00:00Z");
    assert_eq!(a["DeviceName"], device);
    assert_eq!(a["Rule"], "floodwatch");
    assert_eq!(a["Vector"], "https-flood");
    assert_eq!(a["VectorShare"], 1.0);
    assert_eq!(
        a["RequestCount"], 1520,
        "1,500 flood + 20 normal connections"
    );
    assert_eq!(a["TotalBytes"], serde_json::Value::Null);
    // One bin so far: High needs a second (persistence_bins).
    assert_eq!(a["AttackConfidence"], "Medium");
    assert_eq!(a["Severity"], "Medium");
    // The first 100 flood sources fall in the first bin, with the 20 regulars.
    assert_eq!(a["UniqueSourceIPs"], 120);
    assert_eq!(a["Suppressed"], false);
    assert_eq!(a["SuppressionReason"], serde_json::Value::Null);
    assert_eq!(a["IncidentId"], format!("FW-{device}-20251222T110000Z"));
    assert_eq!(
        a["MitreTechniques"],
        serde_json::json!(["T1499.002", "T1499.003"])
    );
    assert_eq!(a["Baseline"]["Expected"], 20.0);
    assert_eq!(
        a["Reasons"][0],
        "1,520 web connections vs baseline 20 (76.0x); one-bin threshold 120 = max(2.0x baseline, baseline + 6.0 x spread 4.5, baseline + 100)"
    );
    assert_eq!(
        a["Reasons"][1],
        "120 distinct inbound sources (all vectors) vs baseline 20 (6.0x)"
    );
    assert_eq!(alerts[1]["TimeGenerated"], "2025-12-22T11:05:00Z");
    assert_eq!(alerts[1]["DeviceName"], device);
    assert_eq!(alerts[1]["AttackConfidence"], "High", "{}", alerts[1]);
    let incidents: Vec<serde_json::Value> = std::fs::read_to_string(&inc)
        .expect("incidents")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(incidents.len(), 4);
    let i = &incidents[0];
    assert_eq!(i["IncidentId"], a["IncidentId"]);
    assert_eq!(i["Devices"], serde_json::json!([device]));
    assert_eq!(i["Start"], "2025-12-22T11:00:00Z");
    assert_eq!(i["End"], "2025-12-22T11:15:00Z");
    assert_eq!(i["Vector"], "https-flood");
    assert_eq!(i["Peak"]["RequestCount"], 1520);
    assert_eq!(i["AlertBins"].as_array().map(Vec::len), Some(3));
    assert_eq!(i["Suppressed"], false);
}

/// `demo`: simulates, detects, scores against the labels, and passes.
#[test]
fn demo_detects_every_attack_and_keeps_the_benign_surges_quiet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(&["demo", "--keep", dir.path().to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("Simulated 1190453 records"), "{out}");
    // The pulse wave's four pulses are one incident.
    assert!(out.contains("\n12 incidents (3 suppressed)\n"), "{out}");
    assert!(
        out.contains("110 alert bins (82 unsuppressed, 28 suppressed as flash crowd, load test or monitor) make these incidents."),
        "{out}"
    );
    assert!(
        out.contains("attacks detected within 2 bins (10 min): 9/9"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("PASSED"), "{out}");
    assert!(dir.path().join("DeviceNetworkEvents.ndjson.gz").exists());
    let s = summary_lines(&o);
    assert!(
        s.contains(&"records: 1190453 read, 1190453 used, 0 skipped".to_owned()),
        "{s:?}"
    );
    assert!(s.contains(&"devices: 8".to_owned()), "{s:?}");
    assert!(
        s.contains(&"alerts: 110 alerts (28 suppressed) in 12 incidents (3 suppressed)".to_owned()),
        "{s:?}"
    );
}
