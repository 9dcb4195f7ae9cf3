//! Usage errors exit 2 and name the flag and what it accepts, wherever the value is checked;
//! I/O errors say their cause once.

use super::*;

fn fixture() -> String {
    formats()
        .join("ndjson.json")
        .to_str()
        .expect("utf-8")
        .to_owned()
}

/// Runs `detect ARGS fixture` and checks exit 2 and that stderr has every one of `says`.
fn usage_error(args: &[&str], says: &[&str]) {
    let f = fixture();
    let mut all = vec!["detect"];
    all.extend_from_slice(args);
    all.push(&f);
    let o = run(&all);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    for s in says {
        assert!(err.contains(s), "{args:?}: expected {s:?} in {err}");
    }
    assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
}

#[test]
fn flag_values_checked_by_floodwatch_exit_2_naming_flag_and_form() {
    usage_error(
        &["--bin", "7m"],
        &["--bin \"7m\"", "does not divide a day", "such as 1m, 5m"],
    );
    usage_error(&["--bin", "soon"], &["--bin \"soon\"", "not a duration"]);
    usage_error(
        &["--since", "yesterday"],
        &[
            "--since \"yesterday\"",
            "expected RFC 3339, e.g. 2025-12-22T09:20:00Z",
        ],
    );
    usage_error(
        &["--until", "noon"],
        &["--until \"noon\"", "expected RFC 3339"],
    );
    usage_error(
        &["--allow-source", "10.0.0.0/99"],
        &[
            "--allow-source \"10.0.0.0/99\"",
            "bad prefix length",
            "10.250.0.0/24",
        ],
    );
    usage_error(
        &["--lateness", "forever"],
        &["--lateness \"forever\"", "or all"],
    );
    usage_error(
        &["--dedup-window", "often"],
        &["--dedup-window \"often\"", "0s for off"],
    );
    usage_error(&["--threads", "0"], &["--threads 0", "at least 1"]);
    usage_error(&["-o", "xml"], &["--output \"xml\"", "(table, jsonl, csv)"]);
    usage_error(
        &["--input-format", "xml"],
        &["--input-format \"xml\"", "ndjson", "sentinel-csv"],
    );
    usage_error(
        &["--rule", "seed", "--window", "7m"],
        &["--window (7m) must be a positive multiple of the bin width (--bin 300s)"],
    );
    usage_error(
        &["--rule", "seed", "--now", "noon"],
        &["--now \"noon\"", "expected RFC 3339"],
    );
    // Clap's own checks exit 2 as well.
    usage_error(&["--rule", "nonsense"], &["--rule"]);
    usage_error(&["--threads", "many"], &["--threads"]);
}

#[test]
fn contradictory_or_impossible_times_exit_2() {
    usage_error(
        &[
            "--since",
            "2025-12-22T13:00:00Z",
            "--until",
            "2025-12-22T12:00:00Z",
        ],
        &["--since 2025-12-22T13:00:00Z is not before --until 2025-12-22T12:00:00Z"],
    );
    usage_error(
        &[
            "--since",
            "2025-12-22T13:00:00Z",
            "--until",
            "2025-12-22T13:00:00Z",
        ],
        &["is not before --until"],
    );
    usage_error(
        &["--rule", "seed", "--now", "2025-12-22T13:07:00Z"],
        &[
            "--now 2025-12-22T13:07:00Z: not on a boundary of the 5m bins",
            "2025-12-22T13:05:00Z or 2025-12-22T13:10:00Z",
        ],
    );
    // The fixture's newest event is in the 13:10 bin.
    usage_error(
        &["--rule", "seed", "--now", "2025-12-23T13:00:00Z"],
        &[
            "--now 2025-12-23T13:00:00Z: after the data",
            "expected a bin boundary from",
            "to 2025-12-22T13:15:00Z",
        ],
    );
    usage_error(
        &["--rule", "seed", "--now", "2025-12-21T13:00:00Z"],
        &["--now 2025-12-21T13:00:00Z: at or before the first event's bin"],
    );
    usage_error(
        &[
            "--rule",
            "seed",
            "--now",
            "2025-12-22T13:15:00Z",
            "--since",
            "2025-12-22T12:00:00Z",
        ],
        &["--now with --since/--until"],
    );
    usage_error(
        &["--now", "2025-12-22T13:15:00Z"],
        &["--now is a setting of the seed rule; pass --rule seed"],
    );
    usage_error(
        &["--sigma", "3"],
        &["--sigma is a setting of the seed rule"],
    );
    // The last bin boundary the data allows is fine.
    let f = fixture();
    let o = run(&[
        "detect",
        "--rule",
        "seed",
        "--now",
        "2025-12-22T13:15:00Z",
        &f,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn unknown_output_extensions_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x.bz2");
    let o = run(&[
        "simulate",
        "--hours",
        "1",
        "--devices",
        "1",
        "--out",
        out.to_str().expect("p"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown extension .bz2; expected a name ending in .json, .ndjson"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "nothing written");
    let inc = dir.path().join("incidents.jsonl.gz");
    usage_error(
        &["--incidents", inc.to_str().expect("p")],
        &["--incidents", "written uncompressed"],
    );
    let o = run(&["simulate", "--format", "parquet", "--out", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--format \"parquet\""),
        "{}",
        stderr(&o)
    );
    let o = run(&["simulate", "--scale", "0", "--out", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--scale 0: expected a positive number"),
        "{}",
        stderr(&o)
    );
}

/// A value from the config file is not a usage error: it names the key and the file, exit 1.
#[test]
fn config_file_values_name_key_and_file() {
    let (_d, p) = temp_file("fw.toml", "bin = \"7m\"\n");
    let f = fixture();
    let o = run(&["detect", "--config", p.to_str().expect("p"), &f]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("fw.toml: bin = \"7m\": bin width 420s does not divide a day"),
        "{e}"
    );
    // The flag wins over the file, and its mistakes are the flag's.
    let o = run(&[
        "detect",
        "--config",
        p.to_str().expect("p"),
        "--bin",
        "11m",
        &f,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--bin \"11m\""), "{}", stderr(&o));
}

#[test]
fn io_errors_say_their_cause_once() {
    let o = run(&["detect", "/definitely/not/here.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "floodwatch: error: /definitely/not/here.json: No such file or directory (os error 2)\n"
    );
}

#[test]
fn help_says_what_is_counted_and_lists_exit_codes() {
    let o = run(&["evaluate", "--help"]);
    assert!(o.status.success());
    let h = stdout(&o);
    assert!(
        h.contains("at most this many unsuppressed alerts (device-bins) during the benign"),
        "{h}"
    );
    assert!(h.contains("4 no record in the input could be used"), "{h}");
    let o = run(&["detect", "--help"]);
    let h = stdout(&o);
    assert!(h.contains("2 a usage error"), "{h}");
    assert!(h.contains("--quiet") && h.contains("--verbose"), "{h}");
}
