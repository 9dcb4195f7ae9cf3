//! Scoring alerts against scenario labels: did each attack raise an unsuppressed alert within
//! its first bins, did any benign scenario raise one, and how many bins of normal traffic did.
//!
//! Alerts are matched to a scenario by device and by bin overlap with the label's window, so a
//! window that is not bin-aligned (a hand-written label) still matches the bins it touches.
//! Suppressed alerts never count against a detector: they are the detector saying "this looked
//! like an attack, but a declared reason explains it", which is what benign scenarios want.
//!
//! Labels may overlap: an attack inside a benign surge (a flood launched during a flash sale)
//! has a benign label for the whole surge and an attack label for the flood. An alert of a
//! device in a bin that an attack label of that device covers belongs to the attack only; the
//! benign scenario is judged on its other bins. A benign label that ends where the attack's
//! starts (bins are half-open) works the same way. A ramp's label may carry `DetectFrom`, the
//! bin from which it stands at 5x its baseline: its time to detect counts from there, and an
//! alert before it is in time (`detect_bins` 0).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use floodwatch_core::time::{BinWidth, NANOS_PER_HOUR, Nanos, Rfc3339, parse_duration};
use floodwatch_detect::{Alert, Vector};

use crate::scenario::{Label, LabelKind};

/// What an evaluation must reach to pass. Keys are snake_case; every key has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Targets {
    /// An attack is detected in time when its first unsuppressed alert's bin ends at most this
    /// many bins after the attack starts (default 2).
    pub max_detect_bins: u32,
    /// Unsuppressed alerts allowed during benign scenarios, all scenarios together (default 0).
    pub max_benign_alerts: u32,
    /// Unsuppressed alert bins allowed on normal traffic after the warm-up (default 0).
    pub max_normal_fp_bins: u32,
    /// Time from the start of the data during which normal-traffic alerts are not scored, while
    /// baselines are learnt (default `24h`; a duration like `90m`, `24h`, `2d`).
    #[serde(with = "duration")]
    pub warmup: Nanos,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            max_detect_bins: 2,
            max_benign_alerts: 0,
            max_normal_fp_bins: 0,
            warmup: 24 * NANOS_PER_HOUR,
        }
    }
}

mod duration {
    use super::*;

    pub fn serialize<S: serde::Serializer>(n: &Nanos, s: S) -> Result<S::Ok, S::Error> {
        let secs = n / 1_000_000_000;
        if secs % 3600 == 0 {
            s.collect_str(&format_args!("{}h", secs / 3600))
        } else if secs % 60 == 0 {
            s.collect_str(&format_args!("{}m", secs / 60))
        } else {
            s.collect_str(&format_args!("{secs}s"))
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Nanos, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// How a scenario came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Attack alerted within `max_detect_bins`.
    Detected,
    /// Attack alerted, but later than `max_detect_bins`.
    Late,
    /// Attack never alerted (unsuppressed) in its window.
    Missed,
    /// Benign scenario without unsuppressed alerts.
    Quiet,
    /// Benign scenario with at least one unsuppressed alert.
    Flagged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Detected => "detected",
            Outcome::Late => "LATE",
            Outcome::Missed => "MISSED",
            Outcome::Quiet => "quiet",
            Outcome::Flagged => "FLAGGED",
        }
    }

    pub fn is_pass(self) -> bool {
        matches!(self, Outcome::Detected | Outcome::Quiet)
    }
}

fn ser_time<S: serde::Serializer>(t: &Nanos, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Rfc3339(*t))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<Nanos>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&Rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// One scenario's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScenarioResult {
    pub scenario: String,
    pub kind: LabelKind,
    pub devices: Vec<String>,
    #[serde(serialize_with = "ser_time")]
    pub start: Nanos,
    #[serde(serialize_with = "ser_time")]
    pub end: Nanos,
    /// The label's `DetectFrom`, from which time to detect counts (ramps).
    #[serde(
        serialize_with = "ser_opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub detect_from: Option<Nanos>,
    pub outcome: Outcome,
    /// Bin start of the first unsuppressed alert in the window.
    #[serde(serialize_with = "ser_opt_time")]
    pub first_alert: Option<Nanos>,
    /// Bins from the scenario start (or its `DetectFrom`) to the end of the first alert's bin
    /// (1 = the first bin; 0 = before `DetectFrom`).
    pub detect_bins: Option<u32>,
    /// The same in minutes.
    pub detect_minutes: Option<f64>,
    pub labelled_vector: Option<Vector>,
    /// Vector of the first unsuppressed alert.
    pub reported_vector: Option<Vector>,
    /// Unsuppressed alerts (device bins) in the window (for a benign scenario, outside the
    /// bins an overlapping attack label of the same device covers).
    pub alerts: u64,
    /// Suppressed alerts in the window (the same bins).
    pub suppressed: u64,
    /// How many of the scenario's devices raised an unsuppressed alert.
    pub devices_alerted: usize,
}

/// An unsuppressed alert on normal traffic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FalsePositive {
    pub device: String,
    #[serde(serialize_with = "ser_time")]
    pub time: Nanos,
}

/// The whole evaluation, printable as a table ([`fmt::Display`]) and as JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EvalReport {
    pub scenarios: Vec<ScenarioResult>,
    /// Distinct (device, bin) of unsuppressed alerts outside every window of their device,
    /// after the warm-up.
    pub normal_false_positives: Vec<FalsePositive>,
    /// Unsuppressed alerts on normal traffic during the warm-up (not scored).
    pub warmup_alerts: u64,
    pub attacks: usize,
    pub attacks_detected_in_time: usize,
    pub benign: usize,
    /// Unsuppressed alerts during benign scenarios.
    pub benign_alerts: u64,
    #[serde(serialize_with = "ser_width")]
    pub bin_width: BinWidth,
    pub targets: Targets,
    pub passed: bool,
}

fn ser_width<S: serde::Serializer>(w: &BinWidth, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{}s", w.secs()))
}

impl EvalReport {
    /// Every attack detected in time, benign alerts and normal false positives within targets.
    pub fn passed(&self) -> bool {
        self.passed
    }

    /// Scenarios that did not meet their target.
    pub fn failures(&self) -> impl Iterator<Item = &ScenarioResult> {
        self.scenarios.iter().filter(|s| !s.outcome.is_pass())
    }
}

fn overlaps(a: &Alert, l: &Label, w: Nanos) -> bool {
    a.time_generated < l.end && a.time_generated + w > l.start && l.devices.contains(&a.device_name)
}

/// Whether an attack label of the alert's device covers its bin.
fn in_attack(a: &Alert, labels: &[Label], w: Nanos) -> bool {
    labels
        .iter()
        .any(|l| l.kind == LabelKind::Attack && overlaps(a, l, w))
}

/// Scores `alerts` against `labels`. `aggs_span` is the data's (start, end); the warm-up counts
/// from its start.
pub fn evaluate(
    alerts: &[Alert],
    labels: &[Label],
    aggs_span: (Nanos, Nanos),
    width: BinWidth,
    targets: &Targets,
) -> EvalReport {
    let w = width.nanos();
    let mut scenarios = Vec::with_capacity(labels.len());
    for l in labels {
        let mut first: Option<&Alert> = None;
        let mut n = 0u64;
        let mut suppressed = 0u64;
        let mut devs = BTreeSet::new();
        let mine = alerts.iter().filter(|a| {
            overlaps(a, l, w) && (l.kind == LabelKind::Attack || !in_attack(a, labels, w))
        });
        for a in mine {
            if a.suppressed {
                suppressed += 1;
                continue;
            }
            n += 1;
            devs.insert(a.device_name.as_str());
            if first.is_none_or(|f| {
                (a.time_generated, &a.device_name) < (f.time_generated, &f.device_name)
            }) {
                first = Some(a);
            }
        }
        let from = l.detect_from.unwrap_or(l.start);
        let delay = first.map(|f| (f.time_generated + w - from).max(0));
        let detect_bins = delay.map(|d| ((d + w - 1) / w) as u32);
        let outcome = match (l.kind, detect_bins) {
            (LabelKind::Attack, Some(b)) if b <= targets.max_detect_bins => Outcome::Detected,
            (LabelKind::Attack, Some(_)) => Outcome::Late,
            (LabelKind::Attack, None) => Outcome::Missed,
            (LabelKind::Benign, Some(_)) => Outcome::Flagged,
            (LabelKind::Benign, None) => Outcome::Quiet,
        };
        scenarios.push(ScenarioResult {
            scenario: l.scenario.clone(),
            kind: l.kind,
            devices: l.devices.clone(),
            start: l.start,
            end: l.end,
            detect_from: l.detect_from,
            outcome,
            first_alert: first.map(|f| f.time_generated),
            detect_bins,
            detect_minutes: delay.map(|d| d as f64 / 60e9),
            labelled_vector: l.vector,
            reported_vector: first.and_then(|f| f.vector),
            alerts: n,
            suppressed,
            devices_alerted: devs.len(),
        });
    }
    let warm_end = aggs_span.0.saturating_add(targets.warmup);
    let mut fps = BTreeSet::new();
    let mut warmup_alerts = 0u64;
    for a in alerts.iter().filter(|a| !a.suppressed) {
        if labels.iter().any(|l| overlaps(a, l, w)) {
            continue;
        }
        if a.time_generated < warm_end {
            warmup_alerts += 1;
        } else {
            fps.insert(FalsePositive {
                device: a.device_name.clone(),
                time: a.time_generated,
            });
        }
    }
    let attacks = scenarios
        .iter()
        .filter(|s| s.kind == LabelKind::Attack)
        .count();
    let in_time = scenarios
        .iter()
        .filter(|s| s.outcome == Outcome::Detected)
        .count();
    let benign = scenarios.len() - attacks;
    let benign_alerts: u64 = scenarios
        .iter()
        .filter(|s| s.kind == LabelKind::Benign)
        .map(|s| s.alerts)
        .sum();
    let normal_false_positives: Vec<FalsePositive> = fps.into_iter().collect();
    let passed = in_time == attacks
        && benign_alerts <= targets.max_benign_alerts as u64
        && normal_false_positives.len() as u64 <= targets.max_normal_fp_bins as u64;
    EvalReport {
        scenarios,
        normal_false_positives,
        warmup_alerts,
        attacks,
        attacks_detected_in_time: in_time,
        benign,
        benign_alerts,
        bin_width: width,
        targets: targets.clone(),
        passed,
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nw = self
            .scenarios
            .iter()
            .map(|s| s.scenario.len())
            .max()
            .unwrap_or(0)
            .max(18);
        writeln!(
            f,
            "{:<nw$} {:<7} {:<9} {:<17} {:<27} {:>9} {:>7} {:>6}  devices",
            "scenario",
            "kind",
            "result",
            "start",
            "vector (label / alert)",
            "detect",
            "alerts",
            "suppr"
        )?;
        for s in &self.scenarios {
            let vec = |v: Option<Vector>| v.map_or("-", |v| v.as_str());
            let detect = match (s.detect_bins, s.detect_minutes) {
                (Some(b), Some(m)) => format!("{b}b/{m:.0}m"),
                _ => "-".to_owned(),
            };
            let start = Rfc3339(s.start).to_string();
            writeln!(
                f,
                "{:<nw$} {:<7} {:<9} {:<17} {:<27} {:>9} {:>7} {:>6}  {}{}",
                s.scenario,
                s.kind.as_str(),
                s.outcome.as_str(),
                start.get(..16).unwrap_or(&start),
                format!("{} / {}", vec(s.labelled_vector), vec(s.reported_vector)),
                detect,
                s.alerts,
                s.suppressed,
                s.devices.join(","),
                if s.devices.len() > 1 {
                    format!(" ({} alerted)", s.devices_alerted)
                } else {
                    String::new()
                }
            )?;
        }
        let t = &self.targets;
        writeln!(
            f,
            "attacks detected within {} bins ({} min): {}/{}",
            t.max_detect_bins,
            t.max_detect_bins as i64 * self.bin_width.secs() / 60,
            self.attacks_detected_in_time,
            self.attacks
        )?;
        writeln!(
            f,
            "unsuppressed alerts on benign scenarios: {} (target <= {}), over {} benign scenarios",
            self.benign_alerts, t.max_benign_alerts, self.benign
        )?;
        write!(
            f,
            "false-positive bins on normal traffic after {} h warm-up: {} (target <= {})",
            t.warmup / NANOS_PER_HOUR,
            self.normal_false_positives.len(),
            t.max_normal_fp_bins
        )?;
        for fp in self.normal_false_positives.iter().take(10) {
            write!(f, "\n  {} {}", fp.device, Rfc3339(fp.time))?;
        }
        if self.normal_false_positives.len() > 10 {
            write!(f, "\n  ... {} more", self.normal_false_positives.len() - 10)?;
        }
        if self.warmup_alerts > 0 {
            write!(
                f,
                "\n(not scored: {} alerts during the warm-up)",
                self.warmup_alerts
            )?;
        }
        write!(f, "\n{}", if self.passed { "PASSED" } else { "FAILED" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwatch_core::time::NANOS_PER_MIN;
    use floodwatch_detect::{Confidence, RuleName, Severity};

    const T0: Nanos = 1_766_361_600 * 1_000_000_000;
    const M: Nanos = NANOS_PER_MIN;

    fn alert(device: &str, at_min: i64, suppressed: bool, vector: Option<Vector>) -> Alert {
        Alert {
            time_generated: T0 + at_min * M,
            device_name: device.into(),
            request_count: 1000,
            unique_source_ips: 500,
            total_bytes: None,
            attack_confidence: Confidence::High,
            rule: RuleName::Floodwatch,
            vector,
            vector_share: None,
            severity: Severity::High,
            reasons: vec![],
            baseline: None,
            new_source_ratio: None,
            top_sources: vec![],
            mitre_techniques: vec![],
            suppressed,
            suppression_reason: None,
            incident_id: None,
            partial: None,
        }
    }

    fn label(name: &str, kind: LabelKind, devices: &[&str], from_min: i64, to_min: i64) -> Label {
        Label {
            scenario: name.into(),
            kind,
            devices: devices.iter().map(|d| d.to_string()).collect(),
            start: T0 + from_min * M,
            end: T0 + to_min * M,
            vector: (kind == LabelKind::Attack).then_some(Vector::HttpsFlood),
            allow_sources: vec![],
            detect_from: None,
        }
    }

    fn run(alerts: &[Alert], labels: &[Label]) -> EvalReport {
        let targets = Targets {
            warmup: 60 * M,
            ..Targets::default()
        };
        evaluate(
            alerts,
            labels,
            (T0, T0 + 600 * M),
            BinWidth::FIVE_MINUTES,
            &targets,
        )
    }

    #[test]
    fn detected_late_missed_and_time_to_detect() {
        let labels = [
            label("fast", LabelKind::Attack, &["a"], 100, 130),
            label("slow", LabelKind::Attack, &["b"], 100, 130),
            label("never", LabelKind::Attack, &["c"], 100, 130),
        ];
        let alerts = [
            alert("a", 105, false, Some(Vector::SynFlood)), // second bin
            alert("a", 100, true, None),                    // suppressed: does not count
            alert("a", 110, false, None),
            alert("b", 115, false, None), // fourth bin: late
            alert("c", 100, true, None),  // suppressed only: missed
            alert("c", 130, false, None), // right after the window: normal traffic
        ];
        let r = run(&alerts, &labels);
        let s = &r.scenarios;
        assert_eq!(s[0].outcome, Outcome::Detected);
        assert_eq!(s[0].first_alert, Some(T0 + 105 * M));
        assert_eq!(
            (s[0].detect_bins, s[0].detect_minutes),
            (Some(2), Some(10.0))
        );
        assert_eq!((s[0].alerts, s[0].suppressed), (2, 1));
        assert_eq!(s[0].reported_vector, Some(Vector::SynFlood));
        assert_eq!(s[0].labelled_vector, Some(Vector::HttpsFlood));
        assert_eq!((s[1].outcome, s[1].detect_bins), (Outcome::Late, Some(4)));
        assert_eq!((s[2].outcome, s[2].detect_bins), (Outcome::Missed, None));
        assert_eq!(r.attacks_detected_in_time, 1);
        assert_eq!(
            r.normal_false_positives,
            vec![FalsePositive {
                device: "c".into(),
                time: T0 + 130 * M
            }]
        );
        assert!(!r.passed());
        assert_eq!(r.failures().count(), 2);
    }

    #[test]
    fn benign_alerts_warmup_and_false_positive_bins() {
        let labels = [
            label("crowd", LabelKind::Benign, &["a"], 200, 245),
            label("loadtest", LabelKind::Benign, &["b"], 200, 240),
            label("attack", LabelKind::Attack, &["a", "b"], 300, 340),
        ];
        let alerts = [
            alert("a", 210, false, None), // benign, unsuppressed
            alert("b", 210, true, None),  // benign, suppressed: fine
            alert("a", 300, false, None), // carpet attack, first bin, one device
            alert("b", 30, false, None),  // warm-up: not scored
            alert("b", 400, false, None), // normal traffic
            alert("b", 400, false, None), // same bin twice: one bin
            alert("a", 400, true, None),  // suppressed normal: fine
            alert("z", 220, false, None), // another device during a benign window: normal
        ];
        let r = run(&alerts, &labels);
        assert_eq!(r.scenarios[0].outcome, Outcome::Flagged);
        assert_eq!(r.scenarios[1].outcome, Outcome::Quiet);
        assert_eq!(r.scenarios[1].suppressed, 1);
        assert_eq!(r.scenarios[2].outcome, Outcome::Detected);
        assert_eq!(r.scenarios[2].devices_alerted, 1);
        assert_eq!(r.scenarios[2].detect_bins, Some(1));
        assert_eq!(r.benign_alerts, 1);
        assert_eq!(r.warmup_alerts, 1);
        let fp: Vec<_> = r
            .normal_false_positives
            .iter()
            .map(|f| f.device.as_str())
            .collect();
        assert_eq!(fp, ["b", "z"]);
        assert!(!r.passed());
        let table = r.to_string();
        assert!(
            table.contains("FLAGGED") && table.ends_with("FAILED"),
            "{table}"
        );
        let ok = run(&[alert("a", 300, false, None)], &labels[2..]);
        assert!(ok.passed(), "{ok}");
        assert!(ok.to_string().ends_with("PASSED"));
        let j = serde_json::to_value(&ok).unwrap();
        assert_eq!(j["Passed"], true);
        assert_eq!(j["Scenarios"][0]["Outcome"], "detected");
        assert_eq!(j["Targets"]["warmup"], "1h");
    }

    #[test]
    fn unaligned_windows_match_the_bins_they_touch() {
        let labels = [label("x", LabelKind::Attack, &["a"], 102, 111)];
        let r = run(&[alert("a", 100, false, None)], &labels);
        assert_eq!(r.scenarios[0].outcome, Outcome::Detected);
        assert_eq!(
            r.scenarios[0].detect_bins,
            Some(1),
            "3 minutes after the start"
        );
    }

    /// A flood inside a benign surge: the attack's bins count for the attack; the surge is
    /// judged on its other bins, whether its label overlaps the attack's or ends at its start.
    #[test]
    fn an_attack_inside_a_benign_surge_is_judged_apart() {
        let overlapping = [
            label("sale", LabelKind::Benign, &["a"], 100, 190),
            label("sale-flood", LabelKind::Attack, &["a"], 115, 145),
        ];
        let adjacent = [
            label("sale", LabelKind::Benign, &["a"], 100, 115),
            label("sale-flood", LabelKind::Attack, &["a"], 115, 145),
        ];
        let quiet_sale = [
            alert("a", 100, true, None), // the sale: suppressed
            alert("a", 105, true, None),
            alert("a", 115, false, None), // the flood, first bin
            alert("a", 120, false, None),
            alert("a", 150, true, None),  // the sale again
            alert("b", 120, false, None), // another device: normal traffic
        ];
        for labels in [&overlapping, &adjacent] {
            let r = run(&quiet_sale, labels);
            let (sale, flood) = (&r.scenarios[0], &r.scenarios[1]);
            assert_eq!(sale.outcome, Outcome::Quiet, "{r}");
            assert_eq!(flood.outcome, Outcome::Detected);
            assert_eq!((flood.detect_bins, flood.alerts), (Some(1), 2));
            assert_eq!(r.normal_false_positives.len(), 1, "{r}");
        }
        assert_eq!(run(&quiet_sale, &overlapping).scenarios[0].suppressed, 3);
        // An unsuppressed alert in the sale outside the flood still flags the sale.
        let mut flagged = quiet_sale.to_vec();
        flagged.push(alert("a", 160, false, None));
        let r = run(&flagged, &overlapping);
        assert_eq!(r.scenarios[0].outcome, Outcome::Flagged);
        assert_eq!(r.scenarios[0].alerts, 1);
        assert_eq!(r.benign_alerts, 1);
        // The same alert after the adjacent label's end is normal traffic.
        let r = run(&flagged, &adjacent);
        assert_eq!(r.scenarios[0].outcome, Outcome::Quiet);
        assert_eq!(r.normal_false_positives.len(), 2);
    }

    /// A ramp is timed from `DetectFrom`; alerting before it is in time, after it late.
    #[test]
    fn ramps_are_timed_from_detect_from() {
        let mut ramp = label("ramp", LabelKind::Attack, &["a"], 100, 190);
        ramp.detect_from = Some(T0 + 125 * M);
        let r = run(&[alert("a", 130, false, None)], std::slice::from_ref(&ramp));
        let s = &r.scenarios[0];
        assert_eq!((s.outcome, s.detect_bins), (Outcome::Detected, Some(2)));
        assert_eq!(s.detect_minutes, Some(10.0));
        let r = run(&[alert("a", 110, false, None)], std::slice::from_ref(&ramp));
        assert_eq!(r.scenarios[0].detect_bins, Some(0), "before it stood at 5x");
        assert!(r.passed());
        let r = run(&[alert("a", 135, false, None)], std::slice::from_ref(&ramp));
        assert_eq!(
            (r.scenarios[0].outcome, r.scenarios[0].detect_bins),
            (Outcome::Late, Some(3))
        );
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["Scenarios"][0]["DetectFrom"], "2025-12-22T02:05:00Z");
        let plain = run(&[], &[label("x", LabelKind::Attack, &["a"], 100, 130)]);
        let j = serde_json::to_value(&plain).unwrap();
        assert!(j["Scenarios"][0].get("DetectFrom").is_none());
    }

    #[test]
    fn targets_have_defaults_and_reject_unknown_keys() {
        let t: Targets = serde_json::from_str(r#"{"warmup":"2d"}"#).unwrap();
        assert_eq!(t.warmup, 48 * NANOS_PER_HOUR);
        assert_eq!(t.max_detect_bins, 2);
        assert!(serde_json::from_str::<Targets>(r#"{"max_detect_bin":3}"#).is_err());
        assert_eq!(
            serde_json::to_value(Targets::default()).unwrap()["warmup"],
            "24h"
        );
    }
}
