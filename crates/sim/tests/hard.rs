//! The `hard` profile's acceptance: five days, fifteen devices, every scenario of the
//! `scenarios` profile plus the attacks that hide in legitimate traffic (a residential-proxy
//! flood, a flood during a flash sale, a campaign over three days) and the cases only the
//! detector's hard paths catch (low-and-slow under 2x, carpet bombing at 1.4x on eight
//! devices, an attack five minutes after a device first reports, a slow ramp), with mixed
//! benign surges and a sensor outage. On every seed, with default detector settings plus the
//! labels' allow-lists: every attack detected unsuppressed within its first two bins (a ramp:
//! of standing at 5x, its `DetectFrom`), or its first bin where pinned below, with the
//! labelled vector; no benign scenario with an unsuppressed alert, each benign surge seen and
//! emitted suppressed; no unsuppressed alert bin on normal traffic after the 24 h warm-up.
//!
//! Each seed aggregates about 7 million simulated events in memory and runs the detector.

#![allow(clippy::unwrap_used)]

use floodwatch_core::{Aggregates, Aggregator, BinWidth, ClassifyConfig};
use floodwatch_detect::floodwatch::{self, Detection, FloodwatchConfig, TimeRange};
use floodwatch_sim::eval::Outcome;
use floodwatch_sim::{
    EvalReport, Label, LabelKind, SimConfig, SimProfile, Targets, aggregate, evaluate,
};

fn dataset(seed: u64) -> (Aggregates, Vec<Label>) {
    let mut cfg = SimConfig::new(SimProfile::Hard);
    cfg.seed = seed;
    let mut classify = ClassifyConfig::default();
    for l in floodwatch_sim::labels(&cfg) {
        for cidr in &l.allow_sources {
            classify.allow.add_cidr(cidr).unwrap();
        }
    }
    aggregate(&cfg, || {
        Aggregator::new(BinWidth::FIVE_MINUTES, classify.clone())
    })
}

fn evaluate_seed(seed: u64) -> (EvalReport, Detection, Vec<Label>) {
    let (aggs, labels) = dataset(seed);
    assert_eq!(labels.len(), 31, "every scenario is in the dataset");
    assert_eq!(aggs.devices.len(), 15);
    let det = floodwatch::run(&aggs, &FloodwatchConfig::default(), TimeRange::default());
    let span = (aggs.stats.min_ts.unwrap(), aggs.stats.max_ts.unwrap());
    let report = evaluate(&det.alerts, &labels, span, aggs.width, &Targets::default());
    println!("seed {seed}:\n{report}");
    (report, det, labels)
}

fn label<'a>(labels: &'a [Label], name: &str) -> &'a Label {
    labels.iter().find(|l| l.scenario == name).unwrap()
}

/// Attacks the detector alerts on in their very first bin: held to that, not to two bins.
const FIRST_BIN: &[&str] = &[
    "https-flood",
    "syn-flood",
    "udp-flood",
    "icmp-flood",
    "low-and-slow",
    "pulse-wave",
    "carpet-bombing",
    "peak-attack",
    "new-device-attack",
    "campaign-day1",
    "campaign-day2",
    "campaign-day3",
    "long-pulse-wave",
    "cold-start-attack",
    "ipv6-flood",
    "http-flood",
    "syn-flood-rollup",
    // Counted from its `DetectFrom`: alerted by the bin it first stands at 5x.
    "slow-ramp",
];

/// Benign surges big enough to trip a one-bin test: the detector must see them and say why it
/// holds back (suppressed alerts), not be blind to them.
const SEEN_SUPPRESSED: &[&str] = &[
    "flash-crowd",
    "load-test",
    "monitor",
    "flash-crowd-new-customers",
    "load-test-fleet",
    "two-monitors",
];

/// Every target on one seed; all shortfalls listed at once.
fn assert_done(seed: u64) {
    let (r, det, labels) = evaluate_seed(seed);
    assert_eq!((r.attacks, r.benign), (22, 9));
    let mut failures = Vec::new();
    for s in &r.scenarios {
        let name = s.scenario.as_str();
        match s.kind {
            LabelKind::Attack => {
                let max = if FIRST_BIN.contains(&name) { 1 } else { 2 };
                match s.detect_bins {
                    Some(b) if b <= max => {}
                    Some(b) => failures.push(format!("{name}: alerted in bin {b} (target {max})")),
                    None => failures.push(format!(
                        "{name}: missed ({} suppressed alerts)",
                        s.suppressed
                    )),
                }
                if s.detect_bins.is_some() && s.reported_vector != s.labelled_vector {
                    failures.push(format!(
                        "{name}: vector {:?}, labelled {:?}",
                        s.reported_vector, s.labelled_vector
                    ));
                }
            }
            LabelKind::Benign => {
                if s.outcome != Outcome::Quiet {
                    failures.push(format!("{name}: {} unsuppressed alerts", s.alerts));
                }
                if SEEN_SUPPRESSED.contains(&name) && s.suppressed == 0 {
                    failures.push(format!(
                        "{name}: no suppressed alert: the surge went unseen"
                    ));
                }
            }
        }
    }
    // The campaign's botnet comes back: its bots must still be new to the device, never
    // learnt as returning sources from the earlier days' attack bins.
    for name in ["campaign-day2", "campaign-day3"] {
        let l = label(&labels, name);
        let first = det.alerts.iter().find(|a| {
            !a.suppressed
                && l.devices.contains(&a.device_name)
                && l.start <= a.time_generated
                && a.time_generated < l.end
        });
        if let Some(a) = first {
            let new = a.new_source_ratio.unwrap_or(0.0);
            if new < 0.8 {
                failures.push(format!(
                    "{name}: only {:.0}% of the returning botnet's sources are new",
                    100.0 * new
                ));
            }
        }
    }
    if !r.normal_false_positives.is_empty() {
        failures.push(format!(
            "{} unsuppressed alert bins on normal traffic",
            r.normal_false_positives.len()
        ));
    }
    assert!(
        failures.is_empty(),
        "seed {seed}:\n  {}\n{r}",
        failures.join("\n  ")
    );
    assert!(r.passed());
}

#[test]
fn seed_1_meets_the_targets() {
    assert_done(1);
}

#[test]
fn seed_2_meets_the_targets() {
    assert_done(2);
}

#[test]
fn seed_3_meets_the_targets() {
    assert_done(3);
}

/// A pulse wave is one attack: one incident listing its pulses, however long the quiet gaps
/// between them (10-20 minutes here), not one incident per pulse.
#[test]
fn pulse_waves_are_one_incident_each() {
    let (_, det, labels) = evaluate_seed(1);
    let mut failures = Vec::new();
    for (name, pulses) in [("pulse-wave", 4), ("long-pulse-wave", 6)] {
        let l = label(&labels, name);
        let incidents: Vec<_> = det
            .incidents
            .iter()
            .filter(|i| !i.suppressed && i.devices == l.devices)
            .filter(|i| i.start < l.end && i.end.is_none_or(|e| e > l.start))
            .collect();
        let bins: usize = incidents.iter().map(|i| i.alert_bins.len()).sum();
        if incidents.len() != 1 || bins != pulses {
            failures.push(format!(
                "{name}: {} incidents with {bins} alert bins (want 1 with the {pulses} pulses)",
                incidents.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
