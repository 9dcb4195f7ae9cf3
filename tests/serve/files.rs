//! Followed Storage-export folders: simulated telemetry written into the export layout hour by
//! hour, each blob appended in pieces (cut mid-line) while `floodwatch serve` follows it; the
//! alerts agree with `floodwatch detect` over the same tree, and a SIGKILL mid-blob loses and
//! repeats nothing.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::*;

const TENANT: &str = "8f6d2c1e-4b7a-4e59-9c3d-2a1b0e7f5d43";

/// 40 hours, three devices, one HTTPS flood at 2025-12-23T10:00 (seed 3), a tenth of the
/// volume: about 40 MB in the Storage-export format, as its hourly blobs (path below the
/// container, bytes with CRLF line ends as the export writes them), in time order.
fn storage_blobs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let data = dir.join("sim.json");
    let st = Command::new(env!("CARGO_BIN_EXE_floodwatch"))
        .args(["simulate", "--seed", "3", "--devices", "3", "--hours", "40"])
        .args(["--scale", "0.1", "--format", "storage", "--out"])
        .arg(&data)
        .status()
        .expect("simulate runs");
    assert!(st.success());
    let text = std::fs::read_to_string(&data).expect("simulated data");
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        // `{"time":"2025-12-22T09:…`: the hour the blob is named after.
        let t = line
            .split_once(r#""time":""#)
            .map(|(_, r)| &r[..13])
            .expect("an envelope with its time");
        let (y, m, d, h) = (&t[0..4], &t[5..7], &t[8..10], &t[11..13]);
        let rel = format!(
            "insights-logs-advancedhunting-devicenetworkevents/tenantId={TENANT}/y={y}/m={m}/d={d}/h={h}/m=00/PT1H.json"
        );
        if blobs.last().is_none_or(|(r, _)| *r != rel) {
            blobs.push((rel, Vec::new()));
        }
        if let Some((_, b)) = blobs.last_mut() {
            b.extend_from_slice(line.as_bytes());
            b.extend_from_slice(b"\r\n");
        }
    }
    blobs
}

/// Where to cut blob `i` into three appends: at a third and two thirds, moved a little so the
/// cuts land anywhere in a line.
fn cuts(len: usize, i: usize) -> [usize; 2] {
    if len == 0 {
        return [0, 0];
    }
    [(len / 3 + i * 37) % len, (2 * len / 3 + i * 101) % len].map(|c| c.min(len))
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open a blob to append");
    f.write_all(bytes).expect("append");
}

/// The input's statistics, as `GET /api/inputs` shows them.
fn input(s: &Server, spec: &str) -> Value {
    reqwest::blocking::get(s.url("/api/inputs"))
        .ok()
        .and_then(|r| r.json::<Value>().ok())
        .map(|v| v["inputs"][spec].clone())
        .unwrap_or(Value::Null)
}

fn records(s: &Server, spec: &str) -> u64 {
    input(s, spec)["records"].as_u64().unwrap_or(0)
}

fn alert_ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["AlertId"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_followed_storage_folder_alerts_as_detect_does_and_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = storage_blobs(dir.path());
    let total: u64 = blobs
        .iter()
        .map(|(_, b)| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .sum();
    let root = dir.path().join("container");
    std::fs::create_dir_all(&root).expect("container folder");
    let spec = format!("dir:{}", root.display());
    let args = |sink: &Path| -> Vec<String> {
        [
            "--input",
            spec.as_str(),
            "--allow-source",
            ALLOW,
            // Event time only: no bin closes because the test paused.
            "--idle-close",
            "10m",
            "--snapshot-every",
            "1s",
            "--notify",
            format!("jsonl:{}", sink.display()).as_str(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    // Two servers follow the same tree as it is written: `a` throughout, `b` killed mid-blob.
    let sink_a = dir.path().join("a.jsonl");
    let a_args = args(&sink_a);
    let a = Server::start(&dir.path().join("a"), &strs(&a_args));
    let sink_b = dir.path().join("b.jsonl");
    let b_args = args(&sink_b);
    let mut b = Server::start(&dir.path().join("b"), &strs(&b_args));

    let kill_at = blobs.len() / 2;
    let mut written = 0u64;
    for (i, (rel, bytes)) in blobs.iter().enumerate() {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a blob's folder")).expect("hour folder");
        let [c1, c2] = cuts(bytes.len(), i);
        let (c1, c2) = (c1.min(c2), c1.max(c2));
        for (k, piece) in [&bytes[..c1], &bytes[c1..c2], &bytes[c2..]]
            .into_iter()
            .enumerate()
        {
            append(&path, piece);
            std::thread::sleep(Duration::from_millis(40));
            if i == kill_at && k == 0 {
                // Killed once it has read into this blob (its first piece ends mid-line);
                // the rest of the blob is written while it is down.
                let lines_before = written;
                wait_for(60, "b to read into the blob", || {
                    records(&b, &spec) > lines_before
                });
                b.kill9();
            }
            if i == kill_at && k == 2 {
                b.restart();
            }
        }
        written += bytes.iter().filter(|&&c| c == b'\n').count() as u64;
    }
    for s in [&a, &b] {
        wait_for(60, "every line read", || {
            let r = records(s, &spec);
            assert!(
                r <= total,
                "{r} records of {total} lines: some were read twice"
            );
            r == total
        });
    }
    for (name, s) in [("a", &a), ("b", &b)] {
        let st = input(s, &spec);
        assert_eq!(
            st["skipped"],
            serde_json::json!({}),
            "{name}: lines cut by the appends were read whole: {st}"
        );
    }
    assert_eq!(
        input(&a, &spec)["events"],
        input(&b, &spec)["events"],
        "events counted after SIGKILL"
    );

    // `detect` over the same tree.
    let mut batch: Vec<_> = super::detect_jsonl(&[&root], &[]).iter().map(key).collect();
    batch.sort();
    assert!(
        batch.iter().any(|k| !k.3),
        "the flood raised unsuppressed alerts: {batch:?}"
    );
    let bin = |s: &Server| {
        let mut v: Vec<_> = s.alerts("bin").iter().map(key).collect();
        v.sort();
        v
    };
    assert_eq!(
        bin(&a),
        batch,
        "bin alerts of the followed folder differ from detect's"
    );
    assert_eq!(
        bin(&b),
        batch,
        "bin alerts after SIGKILL differ from detect's"
    );

    // Every unsuppressed alert reached b's sink once.
    let unsuppressed = |s: &Server| {
        s.alerts("bin")
            .iter()
            .chain(&s.alerts("early"))
            .filter(|x| x["Suppressed"] == false)
            .count()
    };
    let want_b = unsuppressed(&b);
    wait_for(30, "the sinks to catch up", || {
        alert_ids(&sink_b).len() >= want_b && alert_ids(&sink_a).len() >= unsuppressed(&a)
    });
    let ids_b = alert_ids(&sink_b);
    let unique: BTreeSet<&String> = ids_b.iter().collect();
    assert_eq!(
        unique.len(),
        ids_b.len(),
        "an AlertId was delivered twice: {ids_b:?}"
    );
    let ids_a: BTreeSet<String> = alert_ids(&sink_a).into_iter().collect();
    assert_eq!(
        ids_a,
        ids_b.iter().cloned().collect::<BTreeSet<_>>(),
        "the killed server delivered other alerts"
    );
}
