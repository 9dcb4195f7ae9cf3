//! `floodwatch serve` run as a user runs it: a real process on a loopback port, fed over HTTP,
//! Kafka (a real broker) and followed folders, killed and restarted.

mod files;
mod http;
mod kafka;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A port nobody listens on now (the OS picks it; it is free again at once).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    l.local_addr().expect("probe address").port()
}

/// Waits for `cond`, up to `secs` seconds; panics with `what` if it never holds.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// A `floodwatch serve` process on 127.0.0.1, killed when dropped.
pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub state: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
}

impl Server {
    /// Starts `floodwatch serve --listen 127.0.0.1:PORT --state STATE ARGS` and waits until it
    /// is ready. The log goes to `STATE.log`.
    pub fn start(state: &Path, args: &[&str]) -> Server {
        Self::start_on(free_port(), state, args)
    }

    pub fn start_on(port: u16, state: &Path, args: &[&str]) -> Server {
        let mut s = Server {
            child: None,
            port,
            state: state.to_path_buf(),
            log: state.with_extension("log"),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let child = Command::new(env!("CARGO_BIN_EXE_floodwatch"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--state")
            .arg(&self.state)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("floodwatch serve starts");
        self.child = Some(child);
        let url = self.url("/readyz");
        let mut exited = None;
        wait_for(60, "the server to be ready", || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                exited = Some(status);
                return true;
            }
            reqwest::blocking::get(&url).is_ok_and(|r| r.status().is_success())
        });
        if let Some(status) = exited {
            panic!("floodwatch serve exited ({status}):\n{}", self.log_text());
        }
    }

    /// Starts it again on the same state and port (after a kill).
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get_json(&self, path: &str) -> Value {
        let r = reqwest::blocking::get(self.url(path)).expect("GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().expect("JSON answer")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match c.try_wait() {
                    Ok(Some(status)) => {
                        assert!(
                            status.success(),
                            "serve exited with {status} on SIGTERM:\n{}",
                            self.log_text()
                        );
                        return;
                    }
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        panic!("serve did not stop within 30 s of SIGTERM");
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Every stored alert of `stage` (`bin`, `early`), suppressed included.
    pub fn alerts(&self, stage: &str) -> Vec<Value> {
        self.get_json(&format!("/api/alerts?stage={stage}"))["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Simulated telemetry with its labels and what `floodwatch detect` makes of it.
pub struct Sim {
    pub data: PathBuf,
    pub labels: Vec<Value>,
    /// `detect -o jsonl` alerts.
    pub alerts: Vec<Value>,
    /// `detect --incidents` incidents.
    pub incidents: Vec<Value>,
}

/// The simulator's load-test network, allow-listed on both sides.
pub const ALLOW: &str = "10.250.0.0/24";

fn jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn make_sim(dir: &Path, args: &[&str]) -> Sim {
    std::fs::create_dir_all(dir).expect("sim dir");
    let data = dir.join("sim.ndjson");
    let labels = dir.join("labels.jsonl");
    let st = Command::new(env!("CARGO_BIN_EXE_floodwatch"))
        .arg("simulate")
        .args(args)
        .arg("--out")
        .arg(&data)
        .arg("--labels")
        .arg(&labels)
        .status()
        .expect("simulate runs");
    assert!(st.success());
    let inc = dir.join("incidents.jsonl");
    let alerts = detect_jsonl(&[&data], &["--incidents", inc.to_str().expect("path")]);
    Sim {
        data,
        labels: jsonl(&labels),
        alerts,
        incidents: jsonl(&inc),
    }
}

/// `floodwatch detect --allow-source ALLOW -o jsonl EXTRA INPUTS`: its alerts.
pub fn detect_jsonl(inputs: &[&Path], extra: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_floodwatch"))
        .args(["detect", "--allow-source", ALLOW, "-o", "jsonl"])
        .args(extra)
        .args(inputs)
        .output()
        .expect("detect runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert JSON"))
        .collect()
}

fn sims_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-sims")
}

/// Three days, eight devices, every labelled scenario (seed 1): made once per test process.
pub fn full_sim() -> &'static Sim {
    static SIM: OnceLock<Sim> = OnceLock::new();
    SIM.get_or_init(|| {
        make_sim(
            &sims_dir().join(format!("full-{}", std::process::id())),
            &["--seed", "1"],
        )
    })
}

/// 40 hours, three devices, one HTTPS flood at 2025-12-23T10:00 (seed 3, a third of the volume).
pub fn small_sim() -> &'static Sim {
    static SIM: OnceLock<Sim> = OnceLock::new();
    SIM.get_or_init(|| {
        make_sim(
            &sims_dir().join(format!("small-{}", std::process::id())),
            &[
                "--seed",
                "3",
                "--devices",
                "3",
                "--hours",
                "40",
                "--scale",
                "0.3",
            ],
        )
    })
}

/// Runs `floodwatch replay FILE --to URL --speed max ARGS` to its end.
pub fn replay(server: &Server, file: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_floodwatch"))
        .arg("replay")
        .arg(file)
        .arg("--to")
        .arg(server.url(""))
        .args(args)
        .output()
        .expect("replay runs");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// RFC 3339 to Unix seconds (fractions kept).
pub fn secs(v: &Value) -> f64 {
    let s = v.as_str().expect("a time string");
    let (date, time) = s.trim_end_matches('Z').split_once('T').expect("RFC 3339");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().expect("date")).collect();
    let (y, m, dd) = (d[0], d[1], d[2]);
    // Days since the epoch (civil from days, inverted).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t: Vec<f64> = time.split(':').map(|x| x.parse().expect("time")).collect();
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}

/// The fields an alert is compared on between runs and with `detect`.
pub fn key(a: &Value) -> (String, String, String, bool, String) {
    (
        a["TimeGenerated"].as_str().unwrap_or("").to_owned(),
        a["DeviceName"].as_str().unwrap_or("").to_owned(),
        a["Vector"].as_str().unwrap_or("").to_owned(),
        a["Suppressed"].as_bool().unwrap_or(false),
        a["Severity"].as_str().unwrap_or("").to_owned(),
    )
}
