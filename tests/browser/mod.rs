//! The HTML report and the serve dashboard in a real browser: Debian's Chromium, headless,
//! driven by Playwright (tools/browser/check.js), which checks that charts are drawn, incident
//! rows shown, nothing fetched from elsewhere, and takes the screenshots the README shows.
//!
//! Needs `/usr/bin/chromium` (`apt-get install -y chromium`) and `npm ci` in tools/browser;
//! `.ci/run` sees to both. Without them these tests fail and say what is missing.
//!
//! Screenshots go to `$CARGO_TARGET_TMPDIR/screenshots`, or to `FLOODWATCH_SCREENSHOTS` when
//! set (`FLOODWATCH_SCREENSHOTS=docs` refreshes the committed ones).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::serve::{ALLOW, Server, full_sim, replay, small_sim};

fn tools() -> PathBuf {
    crate::root().join("tools/browser")
}

fn shots() -> PathBuf {
    let dir = std::env::var_os("FLOODWATCH_SCREENSHOTS")
        .map(|d| crate::root().join(d))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Runs `node check.js ARGS`; panics with its output unless every check passed.
fn check(args: &[&Path]) -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: the browser tests need Debian's (apt-get install -y chromium; .ci/run installs it)"
    );
    assert!(
        tools().join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci` in tools/browser (.ci/run does)"
    );
    let out = Command::new("node")
        .current_dir(tools())
        .arg("check.js")
        .args(args)
        .output()
        .expect("node runs (install Node.js)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser check failed:\n{text}");
    text
}

#[test]
fn report_renders_in_chromium() {
    let sim = full_sim();
    let dir = tempfile::tempdir().expect("tmp");
    let html = dir.path().join("report.html");
    let out = crate::run(&[
        "report",
        "--allow-source",
        ALLOW,
        "--title",
        "floodwatch report: three days of simulated telemetry",
        "-o",
        html.to_str().expect("path"),
        sim.data.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let shot = shots().join("report.png");
    let text = check(&[Path::new("report"), &html, &shot]);
    assert!(text.contains("ok   incident rows"), "{text}");
    assert!(
        text.contains("ok   campaign shown on every incident"),
        "{text}"
    );
    assert!(text.contains("ok   pulses listed: 4 of 4"), "{text}");
    assert!(shot.exists());
}

/// The simulated export up to `cut` (RFC 3339 prefix compared as text: the simulator writes
/// `Timestamp` first and in order).
fn cut_before(src: &Path, dst: &Path, cut: &str) {
    let text = std::fs::read_to_string(src).expect("sim data");
    let key = "\"Timestamp\":\"";
    let kept: String = text
        .lines()
        .filter(|l| {
            l.find(key)
                .map(|i| &l[i + key.len()..])
                .is_some_and(|t| t < cut)
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    assert!(kept.len() > 1000, "the cut kept too little");
    std::fs::write(dst, kept).expect("write cut");
}

#[test]
fn dashboard_renders_live_in_chromium() {
    let sim = small_sim();
    let dir = tempfile::tempdir().expect("tmp");
    // Up to 25 minutes into the HTTPS flood: the device is under attack when the page looks.
    let part = dir.path().join("until-attack.ndjson");
    cut_before(&sim.data, &part, "2025-12-23T10:25");
    // A quiet stream moves event time on with the wall clock after a second, so the view
    // changes (and the page is told) while the browser watches.
    let server = Server::start(
        &dir.path().join("state"),
        &["--allow-source", ALLOW, "--idle-close", "1s"],
    );
    replay(&server, &part, &["--speed", "max", "--batch", "60s"]);
    crate::serve::wait_for(60, "an open incident", || {
        server.get_json("/api/incidents")["open"]
            .as_array()
            .is_some_and(|o| !o.is_empty())
    });
    let overview = shots().join("dashboard.png");
    let device = shots().join("dashboard-device.png");
    let text = check(&[
        Path::new("dashboard"),
        Path::new(&server.url("/")),
        &overview,
        &device,
    ]);
    assert!(text.contains("ok   live updates"), "{text}");
    assert!(text.contains("ok   campaign shown"), "{text}");
    assert!(overview.exists() && device.exists());
}
