//! Over HTTP: replayed telemetry alerts within a minute, agrees with `detect`, and survives
//! SIGKILL; the API's answers to good, bad and hostile requests.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use super::*;

/// Every attack's first unsuppressed alert comes at most this long (event time) after onset.
const MAX_LATENCY_S: f64 = 60.0;

#[test]
fn replayed_scenarios_alert_within_a_minute_and_match_detect() {
    let sim = full_sim();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &dir.path().join("state"),
        &["--allow-source", ALLOW, "--idle-close", "10m"],
    );
    // Batches of 5 s of event time: the server sees time pass as it would live, only faster.
    replay(&server, &sim.data, &["--speed", "max", "--batch", "5s"]);
    let early = server.alerts("early");
    let bin = server.alerts("bin");
    let all: Vec<&Value> = early.iter().chain(&bin).collect();

    // Every attack: its first unsuppressed alert, by the event time it was decided at.
    let mut report = Vec::new();
    for l in sim.labels.iter().filter(|l| l["Kind"] == "attack") {
        let start = secs(&l["Start"]);
        let end = secs(&l["End"]);
        let devices: BTreeSet<&str> = l["Devices"]
            .as_array()
            .expect("devices")
            .iter()
            .filter_map(|d| d.as_str())
            .collect();
        let first = all
            .iter()
            .filter(|a| a["Suppressed"] == false)
            .filter(|a| devices.contains(a["DeviceName"].as_str().unwrap_or("")))
            .filter(|a| {
                let t = secs(&a["TimeGenerated"]);
                t >= start - 300.0 && t < end
            })
            .map(|a| secs(&a["DetectedAt"]) - start)
            .fold(f64::INFINITY, f64::min);
        report.push(format!("{} {first:.0}s", l["Scenario"]));
        assert!(
            first <= MAX_LATENCY_S,
            "{}: first unsuppressed alert {first:.0} s after onset (all: {report:?})",
            l["Scenario"]
        );
    }
    // Nothing unsuppressed outside the attacks: benign surges and normal traffic stay quiet.
    let attacks: Vec<(f64, f64, Vec<String>)> = sim
        .labels
        .iter()
        .filter(|l| l["Kind"] == "attack")
        .map(|l| {
            (
                secs(&l["Start"]) - 300.0,
                secs(&l["End"]) + 600.0,
                l["Devices"]
                    .as_array()
                    .expect("devices")
                    .iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect(),
            )
        })
        .collect();
    let stray: Vec<String> = all
        .iter()
        .filter(|a| a["Suppressed"] == false)
        .filter(|a| {
            let t = secs(&a["TimeGenerated"]);
            let d = a["DeviceName"].as_str().unwrap_or("");
            !attacks
                .iter()
                .any(|(s, e, ds)| t >= *s && t <= *e && ds.iter().any(|x| x == d))
        })
        .map(|a| {
            format!(
                "{} {} {} {}",
                a["Stage"], a["TimeGenerated"], a["DeviceName"], a["Reasons"]
            )
        })
        .collect();
    assert!(
        stray.is_empty(),
        "unsuppressed alerts outside attacks: {stray:?}"
    );
    // Every early alert confirmed by its bin: speed did not cost precision.
    let confirmed: BTreeSet<(String, String)> = bin
        .iter()
        .filter(|a| a["Suppressed"] == false)
        .map(|a| (a["TimeGenerated"].to_string(), a["DeviceName"].to_string()))
        .collect();
    for e in &early {
        assert!(
            confirmed.contains(&(e["TimeGenerated"].to_string(), e["DeviceName"].to_string())),
            "early alert not confirmed by its bin: {} {}",
            e["TimeGenerated"],
            e["DeviceName"]
        );
    }
    let inputs = server.get_json("/api/inputs");
    assert_eq!(inputs["counters"]["early_unconfirmed"], 0);
    assert!(!early.is_empty());

    // The bins the server scored are the ones `detect` scores, with the same verdicts...
    let live: Vec<_> = bin.iter().map(key).collect();
    let batch: Vec<_> = sim.alerts.iter().map(key).collect();
    assert_eq!(live, batch, "bin alerts differ from detect's");
    // ... and the same incidents (ids, devices, span, vector, severity, bins).
    let inc = server.get_json("/api/incidents")["incidents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ikey = |i: &Value| {
        (
            i["IncidentId"].clone(),
            i["Devices"].clone(),
            i["Start"].clone(),
            i["End"].clone(),
            i["Vector"].clone(),
            i["Severity"].clone(),
            i["AlertBins"].clone(),
            i["Suppressed"].clone(),
            i["CampaignId"].clone(),
            i["Pulses"].clone(),
        )
    };
    let live_inc: Vec<_> = inc.iter().map(ikey).collect();
    let batch_inc: Vec<_> = sim.incidents.iter().map(ikey).collect();
    assert_eq!(live_inc.len(), batch_inc.len());
    assert_eq!(live_inc, batch_inc, "incidents differ from detect's");
    // The pulse wave (four one-bin pulses, two or three bins apart) is one incident listing
    // its four pulses, and so is its webhook-facing live state.
    let wave = sim
        .labels
        .iter()
        .find(|l| l["Scenario"] == "pulse-wave")
        .expect("a pulse-wave scenario");
    let device = &wave["Devices"][0];
    let (ws, we) = (secs(&wave["Start"]), secs(&wave["End"]));
    let on_wave: Vec<&Value> = sim
        .incidents
        .iter()
        .filter(|i| i["Suppressed"] == false && i["Devices"][0] == *device)
        .filter(|i| secs(&i["Start"]) >= ws - 300.0 && secs(&i["Start"]) < we)
        .collect();
    assert_eq!(on_wave.len(), 1, "{on_wave:#?}");
    assert_eq!(on_wave[0]["Pulses"].as_array().map(Vec::len), Some(4));
}

/// Equal lists, or a panic naming the first difference field by field (whole lists are too
/// long to read).
fn assert_same(a: &[Value], b: &[Value], what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            let diff: Vec<String> = x
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, v)| y.get(k.as_str()) != Some(v))
                        .map(|(k, v)| {
                            format!("{k}: {v} vs {}", y.get(k.as_str()).unwrap_or(&Value::Null))
                        })
                        .collect()
                })
                .unwrap_or_default();
            panic!(
                "{what}: item {i} ({} {} {}) differs from the uninterrupted run: {diff:?}",
                x["Stage"], x["TimeGenerated"], x["DeviceName"]
            );
        }
    }
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: {} items against {}",
        b.len(),
        a.len()
    );
}

/// The state digest, alerts and incidents of a server.
fn outcome(s: &Server) -> (Value, Vec<Value>, Vec<Value>, Value) {
    let mut alerts = s.alerts("bin");
    alerts.extend(s.alerts("early"));
    let inc = s.get_json("/api/incidents")["incidents"].clone();
    let digest = s.get_json("/api/state")["digest"].clone();
    let counters = s.get_json("/api/inputs")["counters"].clone();
    (
        digest,
        alerts,
        inc.as_array().cloned().unwrap_or_default(),
        counters,
    )
}

fn alert_ids(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["AlertId"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn sigkill_mid_attack_loses_and_repeats_nothing() {
    let sim = small_sim();
    let dir = tempfile::tempdir().expect("tempdir");
    let args = |sink: &std::path::Path| -> Vec<String> {
        vec![
            "--allow-source".into(),
            ALLOW.into(),
            "--idle-close".into(),
            "10m".into(),
            // Snapshots often, so the kill lands between a snapshot and journal after it.
            "--snapshot-every".into(),
            "1s".into(),
            "--notify".into(),
            format!("jsonl:{}", sink.display()),
        ]
    };
    // The uninterrupted run.
    let sink_a = dir.path().join("a.jsonl");
    let a_args = args(&sink_a);
    let a = Server::start(
        &dir.path().join("a"),
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    replay(&a, &sim.data, &["--speed", "max", "--batch", "5s"]);

    // The same replay into a server killed with SIGKILL while the flood is on.
    let sink_b = dir.path().join("b.jsonl");
    let b_args = args(&sink_b);
    let mut b = Server::start(
        &dir.path().join("b"),
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut rep = replay_in_background(&b, &sim.data, std::process::Stdio::piped());
    wait_event_time(&b, "the replay to reach the flood", FLOOD + 600.0);
    b.kill9();
    // The replay keeps retrying (same idempotency keys) until the server is back.
    std::thread::sleep(Duration::from_millis(300));
    b.restart();
    let status = rep.wait().expect("replay ends");
    let mut err = String::new();
    if let Some(mut e) = rep.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "replay: {err}");

    let (da, alerts_a, inc_a, ca) = outcome(&a);
    let (db, alerts_b, inc_b, cb) = outcome(&b);
    assert!(!alerts_a.is_empty(), "the flood raised alerts");
    assert!(
        alerts_a.iter().any(|x| x["Stage"] == "early"),
        "and an early one"
    );
    assert_eq!(ca, cb, "counters after SIGKILL differ");
    assert_same(&alerts_a, &alerts_b, "alerts after SIGKILL");
    assert_same(&inc_a, &inc_b, "incidents after SIGKILL");
    assert_eq!(da, db, "detector state differs");
    assert_eq!(ca["events"], cb["events"], "events counted differ");

    // Every unsuppressed alert reached each sink once, in the same order.
    wait_for(30, "the sinks to catch up", || {
        alert_ids(&sink_a).len() == alerts_a.iter().filter(|x| x["Suppressed"] == false).count()
            && alert_ids(&sink_b).len() == alert_ids(&sink_a).len()
    });
    let ids_a = alert_ids(&sink_a);
    let ids_b = alert_ids(&sink_b);
    let unique: BTreeSet<&String> = ids_b.iter().collect();
    assert_eq!(
        unique.len(),
        ids_b.len(),
        "an AlertId was delivered twice: {ids_b:?}"
    );
    assert_eq!(ids_a, ids_b);
}

/// Onset of the small simulation's flood (Unix seconds).
const FLOOD: f64 = 1_766_484_000.0;

/// `floodwatch replay` of `data` into `s` at full speed, 5 s batches, not waited for.
fn replay_in_background(
    s: &Server,
    data: &std::path::Path,
    err: std::process::Stdio,
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_floodwatch"))
        .arg("replay")
        .arg(data)
        .arg("--to")
        .arg(s.url(""))
        .args(["--speed", "max", "--batch", "5s"])
        .stderr(err)
        .spawn()
        .expect("replay starts")
}

/// Waits until the server's newest event time reaches `t` (Unix seconds).
fn wait_event_time(s: &Server, what: &str, t: f64) {
    wait_for(120, what, || {
        reqwest::blocking::get(s.url("/api/inputs"))
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .and_then(|v| v["newest_event"].as_str().map(|x| secs(&Value::from(x))))
            .is_some_and(|x| x >= t)
    });
}

/// A raw HTTP/1.1 request on a fresh connection; returns (status, body).
fn raw(port: u16, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn post(port: u16, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut head = format!(
        "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    raw(port, &head, body)
}

fn first_lines(n: usize) -> Vec<u8> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/formats/ndjson.json"),
    )
    .expect("fixture");
    let mut out = String::new();
    for l in text.lines().take(n) {
        out.push_str(l);
        out.push('\n');
    }
    out.into_bytes()
}

#[test]
fn ingest_answers_good_bad_and_hostile_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("fw.toml");
    std::fs::write(&cfg, "[serve]\nmax_body_bytes = 100000\n").expect("config");
    let s = Server::start(
        &dir.path().join("state"),
        &["--config", cfg.to_str().expect("path")],
    );
    let good = first_lines(5);

    let (st, body) = post(s.port, &[("Content-Type", "application/x-ndjson")], &good);
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["accepted"], 5, "{body}");

    // gzip and zstd bodies.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&good).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let (st, body) = post(s.port, &[("Content-Encoding", "gzip")], &gz);
    assert_eq!(st, 200, "{body}");
    let zs = zstd::encode_all(&good[..], 3).expect("zstd");
    let (st, body) = post(s.port, &[("Content-Encoding", "zstd")], &zs);
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        v["duplicates"], 5,
        "the same rows again are duplicates: {body}"
    );

    // A partly bad body: the good record counts, the answer says what was skipped and where.
    let mut mixed =
        b"{\"Timestamp\":\"2025-12-22T09:00:00Z\",\"DeviceName\":\"x\"\nnot json at all\n".to_vec();
    mixed.extend_from_slice(&first_lines(6)[good.len()..]);
    let (st, body) = post(s.port, &[], &mixed);
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["accepted"], 1, "{body}");
    assert!(
        v["skipped"]["malformed"].as_u64().unwrap_or(0) >= 1,
        "{body}"
    );
    assert!(
        v["examples"][0]
            .as_str()
            .unwrap_or("")
            .contains("http: line"),
        "{body}"
    );

    // Nothing usable: 400 with the reason.
    let (st, body) = post(s.port, &[], b"garbage\n{\"a\":1}\n");
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("no usable record"), "{body}");
    let (st, body) = post(s.port, &[], b"");
    assert_eq!(st, 400, "{body}");
    let (st, _) = post(s.port, &[("Content-Encoding", "gzip")], b"not gzip");
    assert_eq!(st, 400);
    // Too big, as sent and once decompressed.
    let big = vec![b'x'; 200_000];
    let (st, body) = post(s.port, &[], &big);
    assert_eq!(st, 413, "{body}");
    let bomb = zstd::encode_all(&vec![b'\n'; 600 << 20][..], 19).expect("zstd");
    assert!(bomb.len() < 100_000);
    let (st, body) = post(s.port, &[("Content-Encoding", "zstd")], &bomb);
    assert_eq!(st, 413, "{body}");
    // Unknown encodings and types.
    let (st, _) = post(s.port, &[("Content-Encoding", "br")], &good);
    assert_eq!(st, 415);
    let (st, _) = post(s.port, &[("Content-Type", "text/html")], &good);
    assert_eq!(st, 415);
    // Bad queries and routes.
    let (st, _) = raw(
        s.port,
        "GET /api/alerts?since=yesterday HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(st, 400);
    let (st, _) = raw(
        s.port,
        "GET /api/alerts?bogus=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(st, 400);
    let (st, _) = raw(
        s.port,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(st, 404);
    let (st, _) = raw(
        s.port,
        "GET /api/devices/nobody/series HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(st, 404);
    let (st, _) = raw(s.port, "NOT-HTTP\r\n\r\n", b"");
    assert!((400..500).contains(&st) || st == 0, "{st}");

    // A slow client holding a request open does not block the others.
    let mut slow = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    slow.write_all(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"Time")
        .expect("slow head");
    let started = std::time::Instant::now();
    for _ in 0..5 {
        let (st, _) = post(s.port, &[], &good);
        assert_eq!(st, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(slow);

    // The server is still whole, and says what it skipped.
    let inputs = s.get_json("/api/inputs");
    assert!(
        inputs["inputs"]["http"]["skipped"]["malformed"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );
    let metrics = reqwest::blocking::get(s.url("/metrics"))
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("floodwatch_ingest_requests_total{status=\"413\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("20.") && !metrics.contains("web01"),
        "no label per source or device"
    );
    let doc = s.get_json("/openapi.json");
    assert!(doc["paths"]["/ingest"]["post"].is_object());
}

#[test]
fn loopback_by_default_and_tokens_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_floodwatch"))
        .args(["serve", "--check-config", "--state"])
        .arg(dir.path().join("s"))
        .env_remove("FLOODWATCH_TOKEN")
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("listen   127.0.0.1:8514"));

    // Not loopback, no token: refused at start, with the reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_floodwatch"))
        .args(["serve", "--listen", "0.0.0.0:0", "--state"])
        .arg(dir.path().join("s"))
        .env_remove("FLOODWATCH_TOKEN")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bearer token is required"));

    // With a token (here on loopback too): wrong or missing is 401, right is 200; health is open.
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token-of-some-length\n").expect("token");
    let s = Server::start(
        &dir.path().join("state"),
        &["--token-file", token.to_str().expect("path")],
    );
    let c = reqwest::blocking::Client::new();
    let st = |r: reqwest::blocking::RequestBuilder| r.send().expect("request").status().as_u16();
    assert_eq!(st(c.get(s.url("/api/inputs"))), 401);
    assert_eq!(st(c.get(s.url("/api/inputs")).bearer_auth("wrong")), 401);
    assert_eq!(
        st(c.get(s.url("/api/inputs"))
            .bearer_auth("s3cret-token-of-some-length")),
        200
    );
    assert_eq!(st(c.post(s.url("/ingest")).body(first_lines(1))), 401);
    assert_eq!(st(c.get(s.url("/healthz"))), 200);
    assert_eq!(st(c.get(s.url("/readyz"))), 200);
}

#[test]
fn sigterm_stops_cleanly_and_keeps_everything() {
    let sim = small_sim();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let mut s = Server::start(&state, &["--allow-source", ALLOW, "--idle-close", "10m"]);
    replay(&s, &sim.data, &["--speed", "max", "--batch", "30s"]);
    let before = outcome(&s);
    s.terminate();
    assert!(s.log_text().contains("stopped"), "{}", s.log_text());
    s.restart();
    let after = outcome(&s);
    assert_eq!(before, after, "a clean restart changed the state");
    let journal = s.get_json("/api/inputs")["journal_rows"]
        .as_i64()
        .unwrap_or(-1);
    assert_eq!(journal, 0, "SIGTERM leaves a snapshot covering everything");
    let per: BTreeMap<String, Value> =
        serde_json::from_value(s.get_json("/api/inputs")["inputs"].clone()).expect("inputs");
    assert!(per["http"]["events"].as_u64().unwrap_or(0) > 100_000);
}

/// A webhook receiver on loopback: answers 503 while `down`, else 200, and keeps the
/// `EventId`s (and bodies) it accepted, in order.
struct Receiver {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    got: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Receiver {
    fn start() -> Receiver {
        use std::io::BufRead;
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let r = Receiver {
            port,
            down: Default::default(),
            got: Default::default(),
            bodies: Default::default(),
            refused: Default::default(),
        };
        let (down, got, refused) = (r.down.clone(), r.got.clone(), r.refused.clone());
        let bodies = r.bodies.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let (down, got, refused) = (down.clone(), got.clone(), refused.clone());
                let bodies = bodies.clone();
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().expect("clone");
                    let mut r = std::io::BufReader::new(conn);
                    loop {
                        let mut len = 0usize;
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            if h == "\r\n" {
                                break;
                            }
                            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0u8; len];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        let status = if down.load(Ordering::SeqCst) {
                            refused.fetch_add(1, Ordering::SeqCst);
                            "503 Service Unavailable"
                        } else {
                            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                            got.lock()
                                .expect("lock")
                                .push(v["EventId"].as_str().unwrap_or("?").to_owned());
                            bodies.lock().expect("lock").push(v);
                            "200 OK"
                        };
                        let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                        if w.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        r
    }

    fn ids(&self) -> Vec<String> {
        self.got.lock().expect("lock").clone()
    }
}

#[test]
fn a_webhook_down_for_part_of_a_replay_gets_every_notification_once_in_order() {
    use std::sync::atomic::Ordering;
    let sim = small_sim();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("fw.toml");
    std::fs::write(&cfg, "[serve]\nretry_max_backoff = \"1s\"\n").expect("config");
    let start = |name: &str, r: &Receiver| {
        Server::start(
            &dir.path().join(name),
            &[
                "--allow-source",
                ALLOW,
                "--idle-close",
                "2s",
                "--config",
                cfg.to_str().expect("path"),
                "--notify",
                &format!("webhook:http://127.0.0.1:{}/hook", r.port),
            ],
        )
    };
    let up = Receiver::start();
    let flaky = Receiver::start();
    flaky.down.store(true, Ordering::SeqCst);
    let a = start("a", &up);
    let b = start("b", &flaky);
    replay(&a, &sim.data, &["--speed", "max", "--batch", "5s"]);
    let mut rep = replay_in_background(&b, &sim.data, std::process::Stdio::null());
    // Down from the start until the flood has been on for 20 minutes of event time.
    wait_event_time(&b, "the replay to pass the flood", FLOOD + 1200.0);
    assert!(
        flaky.refused.load(Ordering::SeqCst) > 0,
        "the receiver was down while notifications were due"
    );
    // Still down: after a few failed attempts the sink reports itself failing.
    wait_for(60, "the sink to report itself failing", || {
        b.get_json("/api/sinks")["sinks"][0]["failing"] == true
    });
    let metrics = reqwest::blocking::get(b.url("/metrics"))
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("floodwatch_sink_failing{") && l.ends_with(" 1")),
        "{metrics}"
    );
    flaky.down.store(false, Ordering::SeqCst);
    assert!(rep.wait().expect("replay").success());
    // The replay ends; after 2 s of quiet the last bins close, the incident ends.
    wait_for(60, "both receivers to have the incident's end", || {
        let (x, y) = (up.ids(), flaky.ids());
        x.iter().any(|i| i.ends_with(":closed")) && x == y
    });
    let ids = flaky.ids();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "delivered twice: {ids:?}");
    assert_eq!(ids, up.ids(), "not the order an always-up receiver got");
    assert!(ids[0].ends_with(":opened"), "{ids:?}");
    // Each incident's end says what `detect` says of it: its campaign and its pulses.
    let bodies = flaky.bodies.lock().expect("lock").clone();
    let closed: Vec<&Value> = bodies.iter().filter(|b| b["Phase"] == "closed").collect();
    assert!(!closed.is_empty());
    for c in closed {
        let batch = sim
            .incidents
            .iter()
            .find(|i| i["IncidentId"] == c["IncidentId"])
            .unwrap_or_else(|| panic!("closed {} is not an incident of detect", c["IncidentId"]));
        assert_eq!(c["CampaignId"], batch["CampaignId"], "{c}");
        assert_eq!(c["Pulses"], batch["Pulses"], "{c}");
        assert_eq!(c["End"], batch["End"], "{c}");
    }
    let sinks = b.get_json("/api/sinks");
    assert_eq!(sinks["sinks"][0]["failing"], false, "{sinks}");
    assert_eq!(
        sinks["sinks"][0]["delivered"].as_u64(),
        Some(ids.len() as u64)
    );
}

/// `--tls-cert` / `--tls-key`: the API and ingest over HTTPS (rustls), with a certificate the
/// client trusts; plain HTTP to the same port gets no answer; a client that connects and never
/// starts its handshake does not hold up the others; a key that is not the certificate's, or
/// one flag without the other, is refused at start.
#[test]
fn https_with_a_certificate_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("key");
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_floodwatch"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--state"])
        .arg(dir.path().join("state"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).expect("pem"),
        )
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        // A new connection per request, each waited for briefly: a handshake held up behind
        // the silent connection below would fail the test, not just slow it.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let url = |p: &str| format!("https://localhost:{port}{p}");
    wait_for(60, "the HTTPS server to be ready", || {
        client
            .get(url("/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    // A connection that never says anything, held open meanwhile.
    let idle = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let r = client
        .post(url("/ingest"))
        .header("Content-Type", "application/x-ndjson")
        .body(first_lines(5))
        .send()
        .expect("POST over HTTPS");
    assert_eq!(r.status().as_u16(), 200);
    let answer: Value = r.json().expect("JSON");
    assert_eq!(answer["accepted"], 5, "{answer}");
    assert_eq!(
        client
            .get(url("/api/inputs"))
            .send()
            .expect("GET")
            .status()
            .as_u16(),
        200
    );
    drop(idle);
    // Plain HTTP to the HTTPS port: no HTTP answer.
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    assert!(
        plain
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .is_err()
    );
    let _ = child.kill();
    let _ = child.wait();

    // A key that is not the certificate's, and one flag alone: refused at start, saying why.
    let other = rcgen::KeyPair::generate().expect("key");
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, other.serialize_pem()).expect("key");
    let check = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_floodwatch"))
            .args(["serve", "--check-config", "--state"])
            .arg(dir.path().join("s2"))
            .args(args)
            .output()
            .expect("runs")
    };
    let out = check(&[
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        wrong.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check(&["--tls-cert".as_ref(), cert.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let out = check(&[
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        cert.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}
