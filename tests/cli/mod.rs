//! The command line as a user meets it: the summary every run ends with, usage errors, the
//! table on a terminal of a given width, the allow-list end to end.

use super::*;

mod allow;
mod dedup;
mod pins;
mod summary;
mod table;
mod usage;

/// Writes `text` to `name` in a new temporary directory.
fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write");
    (dir, p)
}

/// Runs floodwatch with `stdin` as standard input.
fn run_stdin(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut w = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || w.write_all(&data));
    let o = child.wait_with_output().expect("wait");
    writer.join().expect("writer").expect("write");
    o
}

/// The summary lines of a run's stderr (`floodwatch: KEY: ...`), as `KEY: ...`.
fn summary_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter_map(|l| l.strip_prefix("floodwatch: "))
        .map(str::to_owned)
        .collect()
}

/// One inbound connection row of `DeviceNetworkEvents` as Advanced Hunting exports it.
fn row(ts: &str, device: &str, action: &str, ip: &str, port: u16, rid: u64) -> String {
    format!(
        r#"{{"Timestamp":"{ts}","DeviceId":"d0","DeviceName":"{device}","ActionType":"{action}","RemoteIP":"{ip}","RemotePort":50000,"LocalIP":"10.1.0.4","LocalPort":{port},"Protocol":"Tcp","ReportId":{rid},"AdditionalFields":null}}"#
    )
}

/// `2025-12-22T{h}:{m}:{s}Z` from seconds after 2025-12-22T00:00:00Z.
fn at(secs: u64) -> String {
    format!(
        "2025-12-22T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Normal traffic on `device`: from `from_secs`, `minutes` minutes, `per_min` accepted HTTPS
/// connections a minute from 20 regular customers (203.0.113.1-20), ReportIds from `rid`.
fn normal(device: &str, from_secs: u64, minutes: u64, per_min: u64, rid: u64) -> Vec<String> {
    let mut out = Vec::new();
    for m in 0..minutes {
        for i in 0..per_min {
            let n = m * per_min + i;
            out.push(row(
                &at(from_secs + m * 60 + i * 60 / per_min),
                device,
                "InboundConnectionAccepted",
                &format!("203.0.113.{}", n % 20 + 1),
                443,
                rid + n,
            ));
        }
    }
    out
}
