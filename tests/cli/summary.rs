//! Every run ends with a summary on stderr; a run that used no record says so and exits 4;
//! "No alerts." only when bins were scored.

use super::*;

const NO_RECORDS: i32 = 4;

/// The summary of a run that read `input` (as named in the summary) and used nothing.
fn nothing_used(input: &str, format: &str, records: &str, why: &str) -> Vec<String> {
    [
        format!("input: {input} ({format})"),
        records.to_owned(),
        "devices: 0".into(),
        "event time: none".into(),
        "bins scored: none".into(),
        format!("no record used: {why}"),
    ]
    .to_vec()
}

#[test]
fn an_empty_file_used_nothing_and_says_so() {
    let (_d, p) = temp_file("empty.json", "");
    let name = p.to_str().expect("p");
    let o = run(&["detect", name]);
    assert_eq!(o.status.code(), Some(NO_RECORDS), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "no \"No alerts.\" when nothing was scored");
    assert_eq!(
        summary_lines(&o),
        nothing_used(
            name,
            "ndjson",
            "records: 0 read, 0 used, 0 skipped",
            "the input is empty"
        )
    );
    let o = run(&["detect", "--quiet", "--output", "jsonl", name]);
    assert_eq!(o.status.code(), Some(NO_RECORDS));
    assert_eq!(
        stderr(&o),
        "floodwatch: no record used: the input is empty\n"
    );
    assert_eq!(stdout(&o), "");
}

#[test]
fn empty_stdin_used_nothing_and_says_so() {
    let o = run_stdin(&["detect", "-"], b"");
    assert_eq!(o.status.code(), Some(NO_RECORDS), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        summary_lines(&o),
        nothing_used(
            "-",
            "ndjson",
            "records: 0 read, 0 used, 0 skipped",
            "the input is empty"
        )
    );
}

#[test]
fn an_empty_json_array_used_nothing_and_says_so() {
    let (_d, p) = temp_file("rows.json", "[]\n");
    let name = p.to_str().expect("p");
    let o = run(&["detect", "--rule", "seed", name]);
    assert_eq!(o.status.code(), Some(NO_RECORDS), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        summary_lines(&o),
        nothing_used(
            name,
            "json-array",
            "records: 0 read, 0 used, 0 skipped",
            "the input holds no record (3 bytes read)"
        )
    );
}

#[test]
fn a_readme_fed_as_input_used_nothing_and_says_so() {
    let text = "# Exports\n\nPut the DeviceNetworkEvents exports here.\n\n- one file a day\n";
    let (_d, p) = temp_file("README.md", text);
    let name = p.to_str().expect("p");
    let o = run(&["detect", name]);
    assert_eq!(o.status.code(), Some(NO_RECORDS), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let s = summary_lines(&o);
    assert_eq!(s[0], format!("input: {name} (ndjson)"));
    assert_eq!(s[1], "records: 3 read, 0 used, 3 skipped (malformed 3)");
    assert_eq!(
        s.last().expect("last"),
        "no record used: none of the 3 records read could be used (malformed 3); is it DeviceNetworkEvents telemetry?"
    );
    let err = stderr(&o);
    assert!(
        err.contains(&format!("  {name}: line 1 (byte 0): malformed: ")),
        "{err}"
    );
    assert!(err.contains(&format!("  {name}: line 5 (byte ")), "{err}");
}

/// A correct export with no flood: "No alerts.", exit 0, and a summary that says what was
/// scored: web-01's bins 09:00 to 09:50 (its 09:55 bin holds the newest event and may be
/// incomplete) and db-01's seven.
#[test]
fn a_correct_export_without_a_flood_says_no_alerts_after_scoring() {
    let mut rows = normal("web-01.contoso.com", 9 * 3600, 60, 5, 0);
    // 09:00:30 to 09:30:00: seven bins, all complete.
    rows.extend(normal("db-01.contoso.com", 9 * 3600 + 30, 30, 2, 1000));
    rows.sort();
    rows.push("{not json".into());
    rows.push(rows[0].clone());
    let (_d, p) = temp_file("export.json", &(rows.join("\n") + "\n"));
    let name = p.to_str().expect("p");
    let o = run(&["detect", name]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "No alerts.\n");
    assert_eq!(
        summary_lines(&o),
        [
            format!("input: {name} (ndjson)"),
            "records: 362 read, 360 used, 1 skipped (malformed 1), 1 exact duplicate dropped"
                .into(),
            "devices: 2".into(),
            "event time: 2025-12-22T09:00:00Z to 2025-12-22T09:59:48Z (59m 48s)".into(),
            "bins scored: 11 of 5m, from 2025-12-22T09:00:00Z to 2025-12-22T09:55:00Z (18 device-bins)"
                .into(),
            "alerts: 0 alerts (0 suppressed)".into(),
        ]
    );
    assert!(
        stderr(&o).contains(&format!("\n  {name}: line 361 (byte ")),
        "{}",
        stderr(&o)
    );
    // The seed rule at the default `now`: the hour before the newest event's bin.
    let o = run(&["detect", "--rule", "seed", "--output", "jsonl", name]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let s = summary_lines(&o);
    assert_eq!(
        s[4],
        "bins scored: 12 of 5m, from 2025-12-22T08:55:00Z to 2025-12-22T09:55:00Z"
    );
    assert_eq!(s[5], "alerts: 0 alerts (0 suppressed)");
    // --quiet: no summary, but what was skipped is still said.
    let o = run(&["detect", "--quiet", name]);
    assert_eq!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.starts_with(
            "floodwatch: read 362 records, used 360; dropped 1 exact duplicate; skipped: malformed 1\n"
        ),
        "{err}"
    );
    assert!(!err.contains("bins scored"), "{err}");
}

/// Records were used but fill no bin the rule scores: not "No alerts." alone. The seed rule
/// at its default `now` scores the hour before the newest event's bin, which here holds
/// every event.
#[test]
fn records_in_no_scored_bin_say_no_bin_was_scored() {
    let rows = normal("web-01.contoso.com", 9 * 3600, 3, 5, 0);
    let (_d, p) = temp_file("short.json", &(rows.join("\n") + "\n"));
    let o = run(&[
        "detect",
        "--since",
        "2025-12-23T00:00:00Z",
        p.to_str().expect("p"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "No bin holding events was scored, so no alerts (see the summary on stderr for what was read and scored).\n"
    );
    assert!(
        summary_lines(&o).contains(&"bins scored: none".to_owned()),
        "{}",
        stderr(&o)
    );
    let o = run(&["detect", "--rule", "seed", p.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("No bin holding events was scored"),
        "{}",
        stdout(&o)
    );
    assert!(
        summary_lines(&o).contains(
            &"bins scored: 12 of 5m, from 2025-12-22T08:00:00Z to 2025-12-22T09:00:00Z".to_owned()
        ),
        "{}",
        stderr(&o)
    );
}

/// Several inputs: each with the format it was read as.
#[test]
fn each_input_is_named_with_its_format() {
    let ndjson = formats().join("ndjson.json");
    let csv = formats().join("sentinel.csv");
    let o = run(&[
        "detect",
        "--output",
        "jsonl",
        ndjson.to_str().expect("p"),
        csv.to_str().expect("p"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        summary_lines(&o)[0],
        format!(
            "inputs: {} (ndjson), {} (sentinel-csv)",
            ndjson.display(),
            csv.display()
        )
    );
}
