//! `floodwatch export sentinel`: every exported variant is parsed and analysed by Microsoft's
//! Kusto language service and passes Sentinel's template field checks (`tools/kql/check.js`,
//! run under Node.js: `.ci/run` installs its packages with `npm ci`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{bin, root, stderr, stdout};

/// The checker script, after making sure Node.js and its packages are there; a clear failure
/// (not a skip) when they are not.
fn checker() -> PathBuf {
    let dir = root().join("tools/kql");
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "node not found: the export tests run Microsoft's Kusto parser under Node.js \
             (Debian: apt-get install nodejs npm), then `npm ci --prefix tools/kql` (.ci/run does both)"
        ),
    }
    assert!(
        dir.join("node_modules/@kusto/language-service-next/package.json")
            .exists()
            && dir.join("node_modules/yaml/package.json").exists(),
        "{}/node_modules is incomplete: run `npm ci --prefix tools/kql` (what .ci/run does)",
        dir.display()
    );
    dir.join("check.js")
}

/// Runs the checker over `files`: its exit status and one JSON report per file.
fn check(files: &[PathBuf]) -> (bool, Vec<Value>) {
    let o = Command::new("node")
        .arg(checker())
        .arg("--json")
        .args(files)
        .output()
        .expect("node runs");
    let reports: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON report per line"))
        .collect();
    assert_eq!(reports.len(), files.len(), "stderr: {}", stderr(&o));
    (o.status.success(), reports)
}

fn export(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let o = bin()
        .args(["export", "sentinel"])
        .args(args)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("floodwatch runs");
    assert!(o.status.success(), "export {args:?}: {}", stderr(&o));
    out
}

/// A tuned deployment: every setting the queries carry away from its default, including the
/// parts that only appear when set (allow-list, both address families, a planned window).
const TUNED: &str = r#"
bin = "10m"
web_ports = [443, 8443]
allow_sources = ["10.250.0.0/24"]
[seed]
ports = [443, 8443]
sigma = 4.0
window = "2h"
baseline_start = "48h"
[floodwatch]
rate_ratio = 4.0
novelty_days = 5
baseline_days = 7
[[floodwatch.windows]]
devices = "web*.contoso.com"
start = "2025-12-22T09:00:00Z"
end = "2025-12-22T10:00:00Z"
reason = "quarterly \"load\" test"
"#;

/// Every exported variant: both rules, both formats, with the default settings, a tuned
/// config file, and one-minute bins (several bins scored per five-minute run).
fn every_variant(dir: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let cfg = dir.join("tuned.toml");
    std::fs::write(&cfg, TUNED).expect("config written");
    let cfg = cfg.to_str().expect("utf-8 path").to_owned();
    let settings: [(&str, Vec<&str>); 3] = [
        ("default", vec![]),
        (
            "tuned",
            vec!["--config", &cfg, "--allow-source", "2001:db8::/32"],
        ),
        ("1m", vec!["--bin", "1m", "--ingestion-delay", "15m"]),
    ];
    let mut v = Vec::new();
    for rule in ["seed", "floodwatch"] {
        for (name, extra) in &settings {
            let mut args = vec!["--rule", rule];
            args.extend(extra.iter().copied());
            let yaml = export(dir, &format!("{rule}-{name}.yaml"), &args);
            args.extend(["--format", "arm"]);
            let arm = export(dir, &format!("{rule}-{name}.json"), &args);
            v.push((format!("{rule}-{name}"), yaml, arm));
        }
    }
    v
}

#[test]
fn every_exported_variant_passes_the_kusto_parser_and_sentinel_field_checks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let variants = every_variant(dir.path());
    let files: Vec<PathBuf> = variants
        .iter()
        .flat_map(|(_, y, a)| [y.clone(), a.clone()])
        .collect();
    let (ok, reports) = check(&files);
    for r in &reports {
        assert_eq!(r["problems"], serde_json::json!([]), "{}", r["file"]);
        let errors: Vec<&Value> = r["diagnostics"]
            .as_array()
            .expect("diagnostics")
            .iter()
            .filter(|d| d["severity"] == "Error")
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", r["file"]);
        let columns = r["columns"].as_array().expect("the query returns a table");
        for c in ["DeviceName", "HostName", "LocalIP", "Severity", "Reason"] {
            assert!(columns.iter().any(|x| x == c), "{}: no {c}", r["file"]);
        }
    }
    assert!(ok, "the checker exits 0 when every file passes");
    // The YAML and the ARM template of one variant are the same rule, field by field.
    for (i, (name, _, _)) in variants.iter().enumerate() {
        let (y, a) = (&reports[2 * i], &reports[2 * i + 1]);
        assert_eq!(y["kind"], "yaml");
        assert_eq!(a["kind"], "arm");
        assert_eq!(y["rules"], a["rules"], "{name}: YAML and ARM differ");
        let rule = &y["rules"][0];
        assert_eq!(rule["tactics"], serde_json::json!(["Impact"]), "{name}");
        let techniques = rule["techniques"].as_array().expect("techniques");
        assert!(techniques.iter().any(|t| t == "T1498"), "{name}");
        assert!(techniques.iter().any(|t| t == "T1499"), "{name}");
        assert!(
            !techniques
                .iter()
                .any(|t| t.as_str().is_some_and(|t| t.starts_with("T1608"))),
            "{name}"
        );
        let q = rule["query"].as_str().expect("query");
        assert!(
            !q.contains("TotalBytes") && !q.contains("RemotePort =="),
            "{name}"
        );
    }
    // The settings reached the queries.
    let q = |i: usize| reports[2 * i]["rules"][0]["query"].as_str().unwrap_or("");
    assert!(q(1).contains("LocalPort in (443, 8443)"), "{}", q(1));
    assert!(q(1).contains("let sigma = 4.0;"));
    // 48h - 2h of 10-minute bins.
    assert!(q(1).contains("let baselineBins = 276.0;"));
    assert!(q(2).contains("let timeBin = 1m;") && q(2).contains("scoredTo - 5m"));
    assert!(q(4).contains("10.250.0.0/24") && q(4).contains("2001:db8::/32"));
    assert!(q(4).contains(r#"quarterly ""load"" test"#), "{}", q(4));
    assert!(q(4).contains("InboundConnectionAttempt") && q(4).contains("ConnectionAttempt"));
    assert_eq!(reports[2]["rules"][0]["queryFrequency"], 600);
    assert_eq!(reports[4]["rules"][0]["queryFrequency"], 300);
    assert_eq!(reports[6]["rules"][0]["queryFrequency"], 300);
    assert_eq!(reports[8]["rules"][0]["queryFrequency"], 600);
}

#[test]
fn export_checker_reports_the_seed_query_total_bytes_and_broken_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = root().join("testdata/sentinel/seed-rule.kql");
    // A rule broken in the ways the validator checks, from a valid export.
    let good = export(dir.path(), "good.yaml", &["--rule", "seed"]);
    let text = std::fs::read_to_string(&good).expect("exported");
    let broken = text
        .replace("queryFrequency: 5m", "queryFrequency: 1m")
        .replace("  - Impact\n", "  - ResourceDevelopment\n")
        .replace("severity: Medium", "severity: Severe")
        .replace("columnName: LocalIP", "columnName: DeviceIP")
        .replace(
            "| order by RequestCount desc",
            "| extend Bytes = TotalBytes\n  | order by RequestCount desc",
        );
    assert_ne!(broken, text);
    let broken_path = dir.path().join("broken.yaml");
    std::fs::write(&broken_path, broken).expect("written");
    let (ok, reports) = check(&[seed, broken_path, good]);
    assert!(!ok, "a file with problems makes the checker fail");
    let diags = reports[0]["diagnostics"].as_array().expect("diagnostics");
    assert!(
        diags
            .iter()
            .any(|d| d["severity"] == "Error" && d["code"] == "KS142" && d["text"] == "TotalBytes"),
        "the seed's TotalBytes is reported: {diags:?}"
    );
    let problems: Vec<String> = reports[1]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().unwrap_or("").to_owned())
        .collect();
    for expected in [
        "queryFrequency: 1m outside 5m..14d",
        "severity: \"Severe\"",
        "techniques: T1498 needs tactic Impact",
        "column \"DeviceIP\" is not returned by the query",
        "KQL KS142",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected:?} not in {problems:#?}"
        );
    }
    assert_eq!(reports[2]["problems"], serde_json::json!([]));
}

#[test]
fn export_refuses_bad_settings_with_the_reason() {
    let o = bin()
        .args(["export", "sentinel", "--rule", "seed", "--id", "12345"])
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a GUID"), "{}", stderr(&o));
    let o = bin()
        .args([
            "export",
            "sentinel",
            "--rule",
            "seed",
            "--baseline-start",
            "14d",
        ])
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("longest query period"),
        "{}",
        stderr(&o)
    );
    let o = bin()
        .args(["export", "sentinel", "--bin", "7m"])
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bin width"), "{}", stderr(&o));
    // Standard output by default, and the id fixed per variant.
    let o = bin()
        .args(["export", "sentinel", "--rule", "floodwatch"])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("id: 285e54d8-0f69-43d3-b15b-b3de60cbddf8\n"));
}
