//! The real CLI on real files: what a user runs, checked end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod browser;
mod export;
mod serve;
mod signals;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_floodwatch"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn formats() -> PathBuf {
    root().join("testdata/formats")
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("floodwatch runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The seed rule with a distinct-source threshold low enough for the fixture's busy bin, at a
/// fixed `now`, as JSON lines.
const SEED_JSONL: &[&str] = &[
    "detect",
    "--rule",
    "seed",
    "--distinct-threshold",
    "5",
    "--now",
    "2025-12-22T13:15:00Z",
    "--output",
    "jsonl",
];

/// Every fixture of testdata/formats (same events, every shape Defender exports).
fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(formats())
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.is_dir() || (n != "README.md" && !n.ends_with(".py") && !n.starts_with("expected"))
        })
        .collect();
    v.sort();
    v
}

mod formats {
    use super::*;

    /// The seed rule with a low distinct-source threshold flags the fixture's busy bin; every
    /// format must give exactly the golden rows.
    #[test]
    fn every_format_gives_the_same_alerts() {
        let golden =
            std::fs::read_to_string(formats().join("expected-seed.jsonl")).expect("golden");
        assert!(golden.lines().count() >= 1);
        let all = fixtures();
        assert!(all.len() >= 13, "{all:?}");
        for f in all {
            let mut args = SEED_JSONL.to_vec();
            args.push(f.to_str().expect("utf-8 path"));
            let o = run(&args);
            assert!(o.status.success(), "{}: {}", f.display(), stderr(&o));
            assert_eq!(stdout(&o), golden, "{}", f.display());
        }
    }

    #[test]
    fn stdin_and_forced_format() {
        let data = std::fs::read(formats().join("ndjson.json")).expect("fixture");
        let mut child = bin()
            .args(SEED_JSONL)
            .args(["--input-format", "ndjson", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&data)
            .expect("write");
        let o = child.wait_with_output().expect("wait");
        assert!(o.status.success());
        let golden =
            std::fs::read_to_string(formats().join("expected-seed.jsonl")).expect("golden");
        assert_eq!(stdout(&o), golden);
    }
}

mod errors {
    use super::*;

    fn temp_with(lines: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("events.json");
        std::fs::write(&p, lines).expect("write");
        (dir, p)
    }

    fn good(sec: u32, ip: &str) -> String {
        format!(
            r#"{{"Timestamp":"2025-12-22T09:00:{sec:02}Z","DeviceName":"web01","ActionType":"InboundConnectionAccepted","RemoteIP":"{ip}","RemotePort":50000,"LocalPort":443,"Protocol":"Tcp","ReportId":{sec}}}"#
        )
    }

    #[test]
    fn bad_lines_are_counted_reported_and_skipped() {
        let text = [
            good(1, "198.51.100.1"),
            "{not json".to_string(),
            good(2, "198.51.100.2"),
            r#"{"Timestamp":"yesterday","DeviceName":"web01","ActionType":"InboundConnectionAccepted"}"#.to_string(),
            good(3, "198.51.100.3"),
        ]
        .join("\n");
        let (_d, p) = temp_with(&text);
        let o = run(&[
            "detect",
            "--rule",
            "seed",
            "--distinct-threshold",
            "2",
            "--now",
            "2025-12-22T09:05:00Z",
            "--output",
            "jsonl",
            p.to_str().expect("path"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("malformed 1"), "{err}");
        assert!(err.contains("bad-timestamp 1"), "{err}");
        assert!(err.contains("events.json: line 2"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("yesterday"), "{err}");
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one alert");
        assert_eq!(
            v["RequestCount"], 3,
            "the good records around the bad ones count"
        );
        assert_eq!(v["UniqueSourceIPs"], 3);

        let o = run(&[
            "detect",
            "--strict",
            "--rule",
            "seed",
            p.to_str().expect("path"),
        ]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(err.contains("line 2"), "{err}");
    }

    /// Rows for one hour of `web01`: `per_min` a minute, each padded with `pad` bytes (as wide
    /// as Defender's rows when asked), ReportIds from `rid`.
    fn hour(h: u32, per_min: u32, rid: u32, pad: usize) -> String {
        let pad = "x".repeat(pad);
        let mut out = String::new();
        for m in 0..60 {
            for s in 0..per_min {
                out.push_str(&format!(
                    r#"{{"Timestamp":"2025-12-22T{h:02}:{m:02}:{:02}.{s:07}Z","DeviceName":"web01","ActionType":"InboundConnectionAccepted","RemoteIP":"198.51.100.{}","LocalPort":443,"InitiatingProcessFileName":"{pad}","ReportId":{}}}"#,
                    s % 60,
                    s % 250 + 1,
                    rid + m * per_min + s
                ));
                out.push('\n');
            }
        }
        out
    }

    fn seed_args(lateness: &str) -> Vec<&str> {
        vec![
            "detect",
            "--rule",
            "seed",
            "--since",
            "2025-12-22T08:00:00Z",
            "--output",
            "jsonl",
            "--distinct-threshold",
            "2",
            "--lateness",
            lateness,
        ]
    }

    /// (TimeGenerated, RequestCount) of each alert.
    fn alerts(o: &Output) -> Vec<(String, u64)> {
        stdout(o)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                (
                    v["TimeGenerated"].as_str().expect("time").to_owned(),
                    v["RequestCount"].as_u64().expect("count"),
                )
            })
            .collect()
    }

    fn count_at(v: &[(String, u64)], t: &str) -> Option<u64> {
        v.iter().find(|a| a.0 == t).map(|a| a.1)
    }

    /// Hourly files read in time order, then an hour again three hours late: files can be read
    /// again, so floodwatch says so and reads them keeping every bin, as `--lateness all` does.
    #[test]
    fn late_events_in_files_make_a_second_reading_that_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut paths = Vec::new();
        for (i, h) in [8u32, 9, 10, 11, 12, 9].into_iter().enumerate() {
            let p = dir.path().join(format!("{i}.json"));
            std::fs::write(&p, hour(h, 3, i as u32 * 1000, 0)).expect("write");
            paths.push(p.to_str().expect("path").to_owned());
        }
        let with = |lateness: &str| {
            let mut args = seed_args(lateness);
            args.extend(paths.iter().map(String::as_str));
            run(&args)
        };
        let o = with("1h");
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("180 events came more than the lateness horizon (3600s)"),
            "{err}"
        );
        assert!(
            err.contains("reading the input again with every bin kept"),
            "{err}"
        );
        let reread = alerts(&o);
        let o = with("all");
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!stderr(&o).contains("late"), "{}", stderr(&o));
        let kept = alerts(&o);
        // The 09:00 hour counts twice: 15 connections a bin from each copy.
        assert_eq!(count_at(&kept, "2025-12-22T09:00:00Z"), Some(30));
        assert_eq!(reread, kept);
        let o = with("soon");
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("lateness \"soon\""), "{}", stderr(&o));
    }

    /// Standard input cannot be read again: six hours in order, then the first hour again
    /// (~65 MB, several 16 MiB blocks, so bins are sealed as they go): the late hour is counted
    /// and reported with where it was, and the rest is scored.
    #[test]
    fn late_events_on_stdin_are_counted_and_reported() {
        use std::io::Write;
        use std::process::Stdio;
        let mut data = String::new();
        for (i, h) in [8u32, 9, 10, 11, 12, 13, 8].into_iter().enumerate() {
            data.push_str(&hour(h, 250, i as u32 * 100_000, 420));
        }
        let lines = data.lines().count();
        let first_late = lines - 15_000 + 1;
        let mut args = seed_args("1h");
        args.push("-");
        let mut child = bin()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("floodwatch runs");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(data.as_bytes()));
        let o = child.wait_with_output().expect("output");
        writer.join().expect("writer").expect("write");
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("late 15000"), "{err}");
        assert!(err.contains(&format!("-: line {first_late} ")), "{err}");
        assert!(err.contains("are not counted"), "{err}");
        assert!(!err.contains("reading the input again"), "{err}");
        // 08:00 counts once: its second copy came after the bin was scored.
        assert_eq!(count_at(&alerts(&o), "2025-12-22T08:00:00Z"), Some(1250));
    }

    #[test]
    fn usage_and_io_errors_exit_non_zero() {
        let o = run(&["detect", "--rule", "nonsense", "x"]);
        assert_eq!(o.status.code(), Some(2), "usage error");
        let o = run(&["detect", "/definitely/not/here.json"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("/definitely/not/here.json"),
            "{}",
            stderr(&o)
        );
        let o = run(&[
            "detect",
            "--rule",
            "seed",
            "--now",
            "noon",
            formats().join("ndjson.json").to_str().expect("p"),
        ]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("--now"), "{}", stderr(&o));
    }

    #[test]
    fn config_file_unknown_key_names_key_and_file() {
        let (_d, p) = temp_with("[seed]\nsigmaa = 3\n");
        let o = run(&[
            "detect",
            "--config",
            p.to_str().expect("p"),
            formats().join("ndjson.json").to_str().expect("p"),
        ]);
        assert_eq!(o.status.code(), Some(1));
        let e = stderr(&o);
        assert!(e.contains("sigmaa") && e.contains("events.json"), "{e}");
    }

    #[test]
    fn example_config_is_valid() {
        let o = run(&[
            "detect",
            "--config",
            root().join("floodwatch.example.toml").to_str().expect("p"),
            "--output",
            "jsonl",
            formats().join("ndjson.json").to_str().expect("p"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

mod outputs {
    use super::*;

    fn seed(out: &str) -> Output {
        run(&[
            "detect",
            "--rule",
            "seed",
            "--distinct-threshold",
            "5",
            "--now",
            "2025-12-22T13:15:00Z",
            "--output",
            out,
            formats().join("ndjson.json").to_str().expect("p"),
        ])
    }

    #[test]
    fn table_and_csv() {
        let t = stdout(&seed("table"));
        assert_eq!(
            t,
            "1 alert (0 suppressed)\n\
             TIME (UTC)         DEVICE              COUNT  SOURCES  BYTES  CONF  WHY\n\
             2025-12-22 13:00Z  web-01.contoso.com  10     8               Low   8 distinct sources > 5\n"
        );
        let c = stdout(&seed("csv"));
        let mut l = c.lines();
        assert!(l.next().expect("header").starts_with(
            "TimeGenerated,DeviceName,RequestCount,UniqueSourceIPs,TotalBytes,AttackConfidence"
        ));
        assert!(
            l.next()
                .expect("row")
                .starts_with("2025-12-22T13:00:00Z,web-01.contoso.com,")
        );
    }

    /// `floodwatch ... | head -1`: the reader takes the first line and closes the pipe while
    /// floodwatch still has most of its output to write (far more than a pipe holds), so the
    /// next write fails; the run ends quietly with success, and what it wrote first is whole.
    #[test]
    fn closed_pipe_is_quiet() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("day.json");
        let mut text = String::new();
        for d in 0..3 {
            for m in 0..24 * 60 {
                for i in 0..2u32 {
                    text.push_str(&format!(
                        r#"{{"Timestamp":"2025-12-22T{:02}:{:02}:{:02}Z","DeviceName":"web-0{d}","ActionType":"InboundConnectionAccepted","RemoteIP":"198.51.100.{}","LocalPort":443,"ReportId":{}}}"#,
                        m / 60,
                        m % 60,
                        i * 30,
                        i + 1,
                        (d * 10_000 + m * 2) as u32 + i
                    ));
                    text.push('\n');
                }
            }
        }
        std::fs::write(&p, text).expect("write");
        let mut child = bin()
            .args([
                "detect",
                "--rule",
                "seed",
                "--distinct-threshold",
                "0",
                "--since",
                "2025-12-22T00:00:00Z",
                "--output",
                "jsonl",
                p.to_str().expect("p"),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first).expect("first line");
        drop(out);
        let o = child.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).is_empty(), "quiet: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&first).expect("a whole JSON line");
        assert_eq!(v["Rule"], "seed");
        assert_eq!(v["RequestCount"], 10);
        assert_eq!(v["UniqueSourceIPs"], 2);
        // The whole output would be 3 devices x 287 bins of alerts: far beyond a pipe's buffer.
        let all = run(&[
            "detect",
            "--rule",
            "seed",
            "--distinct-threshold",
            "0",
            "--since",
            "2025-12-22T00:00:00Z",
            "--output",
            "jsonl",
            "--quiet",
            p.to_str().expect("p"),
        ]);
        assert_eq!(stdout(&all).lines().count(), 3 * 287);
        assert!(all.stdout.len() > 256 << 10, "{}", all.stdout.len());
        assert_eq!(stdout(&all).lines().next(), Some(first.trim_end()));
    }
}

mod simulate {
    use super::*;

    fn simulate(dir: &Path, format: &str, name: &str) -> PathBuf {
        let out = dir.join(name);
        let o = run(&[
            "simulate",
            "--hours",
            "30",
            "--devices",
            "3",
            "--seed",
            "7",
            "--format",
            format,
            "--out",
            out.to_str().expect("p"),
            "--labels",
            dir.join("labels.jsonl").to_str().expect("p"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    }

    /// The simulator's output in two formats reads back as the same alerts.
    #[test]
    fn simulated_formats_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = simulate(dir.path(), "ndjson", "a.ndjson.gz");
        let b = simulate(dir.path(), "sentinel-csv", "b.csv.zst");
        let detect = |p: &Path| {
            stdout(&run(&[
                "detect",
                "--rule",
                "seed",
                "--output",
                "jsonl",
                "--since",
                "2000-01-01T00:00:00Z",
                p.to_str().expect("p"),
            ]))
        };
        let (x, y) = (detect(&a), detect(&b));
        assert!(!x.is_empty());
        assert_eq!(x, y);
    }
}

mod cli;
mod report {
    use super::*;
    use crate::serve::{ALLOW, full_sim};

    /// The JSON the page is drawn from, out of the written file.
    fn data_of(html: &str) -> serde_json::Value {
        let tag = "id=\"fw-data\">";
        let start = html.find(tag).expect("data script") + tag.len();
        let end = start + html[start..].find("</script>").expect("end of data");
        serde_json::from_str(&html[start..end]).expect("report data is JSON")
    }

    #[test]
    fn report_holds_detects_incidents_and_every_device_and_no_outside_reference() {
        let sim = full_sim();
        let dir = tempfile::tempdir().expect("tmp");
        let html = dir.path().join("r.html");
        let out = run(&[
            "report",
            "--allow-source",
            ALLOW,
            "-o",
            html.to_str().expect("path"),
            sim.data.to_str().expect("path"),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let page = std::fs::read_to_string(&html).expect("report written");
        for outside in [
            "src=\"http",
            "href=\"http",
            "<link",
            "<script src",
            "@import",
            "url(http",
        ] {
            assert!(
                !page.contains(outside),
                "the page refers outside: {outside}"
            );
        }
        assert!(
            page.contains("https://github.com/leeoniya/uPlot (v1.6.32)"),
            "uPlot inline"
        );
        let d = data_of(&page);
        // The same incidents as `detect --incidents`, by id.
        let mut ids: Vec<&str> = d["incidents"]
            .as_array()
            .expect("incidents")
            .iter()
            .map(|i| i["id"].as_str().expect("id"))
            .collect();
        let mut want: Vec<&str> = sim
            .incidents
            .iter()
            .map(|i| i["IncidentId"].as_str().expect("IncidentId"))
            .collect();
        ids.sort_unstable();
        want.sort_unstable();
        assert!(!want.is_empty());
        assert_eq!(ids, want);
        // Every device charted (eight, under the default limit), each alert bin marked on its
        // device: unsuppressed ones as alerts, suppressed ones apart with a reason.
        let devices = d["devices"].as_array().expect("devices");
        assert_eq!(devices.len(), 8);
        let marked: usize = devices
            .iter()
            .map(|x| x["alerts"].as_array().expect("alerts").len())
            .sum();
        let suppressed: Vec<&serde_json::Value> = devices
            .iter()
            .flat_map(|x| x["suppressed"].as_array().expect("suppressed").iter())
            .collect();
        let loud = sim
            .alerts
            .iter()
            .filter(|a| a["Suppressed"] == false)
            .count();
        let quiet = sim.alerts.len() - loud;
        assert_eq!(marked, loud);
        assert_eq!(suppressed.len(), quiet);
        assert!(quiet > 0, "the simulation has suppressed surges");
        assert!(
            suppressed
                .iter()
                .all(|s| s[1].as_str().is_some_and(|r| !r.is_empty()))
        );
        // Per device the columns line up; a baseline exists after the warm-up.
        let longest = devices
            .iter()
            .map(|x| x["distinct"].as_array().expect("distinct").len())
            .max();
        // Three days of 5-minute bins but the last, which holds the newest event and may be
        // incomplete: never scored, so not charted either.
        assert_eq!(longest, Some(863));
        for x in devices {
            let n = x["distinct"].as_array().expect("distinct").len();
            assert_eq!(x["per_point"], 1);
            let web = x["counts"][0].as_array().expect("web");
            assert_eq!(web.len(), n);
            assert_eq!(x["median"][0].as_array().expect("median").len(), n);
            assert!(
                x["median"][0]
                    .as_array()
                    .expect("m")
                    .iter()
                    .any(|m| m.is_number())
            );
        }
        let s = &d["summary"];
        assert_eq!(s["devices"], 8);
        assert!(
            s["records_read"].as_u64().expect("read") >= s["events_used"].as_u64().expect("used")
        );
        assert!(
            s["settings"]
                .as_array()
                .expect("settings")
                .iter()
                .any(|kv| kv[0] == "allow_sources" && kv[1] == ALLOW)
        );
    }

    #[test]
    fn report_downsamples_and_limits_devices_when_asked() {
        let sim = full_sim();
        let dir = tempfile::tempdir().expect("tmp");
        let html = dir.path().join("r.html");
        let out = run(&[
            "report",
            "--allow-source",
            ALLOW,
            "--max-devices",
            "3",
            "--max-points",
            "100",
            "-o",
            html.to_str().expect("path"),
            sim.data.to_str().expect("path"),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let d = data_of(&std::fs::read_to_string(&html).expect("written"));
        let devices = d["devices"].as_array().expect("devices");
        assert_eq!(devices.len(), 3);
        assert_eq!(d["others"].as_array().expect("others").len(), 5);
        for x in devices {
            assert!(x["distinct"].as_array().expect("d").len() <= 100);
            assert!(x["per_point"].as_u64().expect("per") > 1);
            assert_eq!(
                x["step"].as_i64(),
                Some(300 * x["per_point"].as_i64().expect("p"))
            );
        }
        // Devices with the most alert bins first: the first charted one has alerts.
        assert!(!devices[0]["alerts"].as_array().expect("a").is_empty());
    }

    #[test]
    fn report_refuses_the_seed_rule_and_standard_input_with_a_reason() {
        let out = run(&["report", "--rule", "seed", "-o", "/dev/null", "testdata"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("--rule seed"), "{}", stderr(&out));
        let out = run(&["report", "-o", "/dev/null", "-"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("standard input"), "{}", stderr(&out));
    }
}
