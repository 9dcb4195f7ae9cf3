//! Behaviour of the whole detector on hand-built traffic: a deterministic fleet of devices with
//! diurnal, mostly returning customers, onto which single scenarios are laid.

use std::collections::BTreeMap;

use floodwatch_core::hash::mix64;
use floodwatch_core::time::{NANOS_PER_SEC, Nanos};
use floodwatch_core::{
    ActionType, Aggregates, Aggregator, BinAgg, BinKey, BinWidth, Class, ClassifyConfig,
    DeviceTable, Event, IngestStats, Ip, Protocol,
};

use super::*;
use crate::alert::{Severity, Vector};

const W: BinWidth = BinWidth::FIVE_MINUTES;
const DAY: i64 = 288;
/// 2025-12-22T00:00:00Z as a bin index.
const B0: i64 = 1_766_361_600 / 300;

/// Bins built directly, the way the aggregator fills them.
struct Fleet {
    bins: BTreeMap<(String, i64), BinAgg>,
}

fn customer(id: u64) -> Ip {
    // Customers come from access networks: 16 per /24.
    Ip::v4([100, (id >> 12) as u8, (id >> 4) as u8, (id & 15) as u8])
}

fn random_ip(seed: u64, i: u64) -> Ip {
    let h = mix64(seed.wrapping_mul(0x9e37_79b9) ^ i);
    let b = (h as u32).to_be_bytes();
    Ip::v4([1 + b[0] % 200, b[1], b[2], b[3]])
}

fn diurnal(bin: i64) -> f64 {
    let slot = (bin - B0).rem_euclid(DAY) as f64;
    1.0 + 0.6 * (std::f64::consts::TAU * (slot - 72.0) / DAY as f64).sin()
}

impl Fleet {
    fn new() -> Self {
        Fleet {
            bins: BTreeMap::new(),
        }
    }

    fn add(&mut self, dev: &str, bin: i64, class: Class, ip: Ip, conns: u32, allowed: bool) {
        let b = self.bins.entry((dev.to_owned(), bin)).or_default();
        let h = floodwatch_core::hash::hash_ip(ip);
        b.rows += conns as u64;
        let c = &mut b.classes[class as usize];
        c.count += conns as u64;
        c.sources.insert_hash(h, conns);
        b.sources.insert_hash(h, conns);
        b.prefixes.insert(ip.prefix(), conns);
        b.top.insert(ip, conns as u64);
        if allowed {
            b.allowed += conns as u64;
        }
    }

    /// Ordinary traffic: `level` sources per bin at mid-level, 95 % from a pool of 2,000
    /// returning customers, the rest first-time visitors; 1-3 connections each.
    fn normal(&mut self, dev: &str, bins: std::ops::Range<i64>, level: f64) {
        let dh = floodwatch_core::hash::hash_bytes(dev.as_bytes());
        for bin in bins {
            let n = (level * diurnal(bin)).round() as u64;
            for j in 0..n {
                let h = mix64(dh ^ mix64(bin as u64) ^ j);
                let ip = if h.is_multiple_of(20) {
                    random_ip(dh ^ 0xfeed, (bin as u64) << 16 | j)
                } else {
                    customer((h >> 8) % 2000)
                };
                self.add(dev, bin, Class::Web, ip, 1 + (h >> 40) as u32 % 3, false);
            }
        }
    }

    /// `n` fresh sources sending `per` connections each, spread over the Internet.
    fn flood(&mut self, dev: &str, bin: i64, class: Class, n: u64, per: u32, seed: u64) {
        for i in 0..n {
            self.add(dev, bin, class, random_ip(seed, i), per, false);
        }
    }

    fn finish(self, end_bin: i64) -> Aggregates {
        // The newest event opens `end_bin`, which is therefore a partial bin of one second.
        self.finish_at(end_bin, NANOS_PER_SEC)
    }

    /// The newest event `into` nanoseconds past the start of `end_bin`.
    fn finish_at(self, end_bin: i64, into: Nanos) -> Aggregates {
        let mut devices = DeviceTable::default();
        let mut bins = BTreeMap::new();
        for ((dev, bin), agg) in self.bins {
            let device = devices.intern(&dev);
            bins.insert(BinKey { device, bin }, agg);
        }
        Aggregates {
            width: W,
            devices,
            bins,
            stats: IngestStats {
                events: 1,
                duplicates: 0,
                min_ts: Some(W.start(B0)),
                max_ts: Some(W.start(end_bin) + into),
                ..IngestStats::default()
            },
        }
    }
}

fn unsuppressed(d: &Detection) -> Vec<&Alert> {
    d.alerts.iter().filter(|a| !a.suppressed).collect()
}

fn bin_of(a: &Alert) -> i64 {
    W.index(a.time_generated)
}

/// Two days of ordinary traffic on `devs`; scenarios go on day 2 (bins B0+288..B0+576).
fn two_days(devs: &[&str]) -> Fleet {
    let mut f = Fleet::new();
    for d in devs {
        f.normal(d, B0..B0 + 2 * DAY, 200.0);
    }
    f
}

const END: i64 = B0 + 2 * DAY;
const ATTACK: i64 = B0 + DAY + 150;

fn run_default(aggs: &Aggregates) -> Detection {
    run(aggs, &FloodwatchConfig::default(), TimeRange::default())
}

#[test]
fn ordinary_traffic_raises_nothing() {
    let aggs = two_days(&["web01", "web02", "web03"]).finish(END);
    let d = run_default(&aggs);
    assert!(d.alerts.is_empty(), "{:#?}", d.alerts.first());
    assert!(d.incidents.is_empty());
}

#[test]
fn every_vector_is_detected_at_onset_and_labelled() {
    for (class, vector) in [
        (Class::Web, Vector::HttpsFlood),
        (Class::Syn, Vector::SynFlood),
        (Class::Udp, Vector::UdpFlood),
        (Class::Icmp, Vector::IcmpFlood),
    ] {
        let mut f = two_days(&["web01", "web02"]);
        for b in ATTACK..ATTACK + 6 {
            f.flood("web01", b, class, 3000, 3, b as u64);
        }
        let d = run_default(&f.finish(END));
        let hits = unsuppressed(&d);
        assert_eq!(hits.len(), 6, "{vector:?}: {:#?}", d.alerts);
        let first = hits[0];
        assert_eq!(
            bin_of(first),
            ATTACK,
            "{vector:?} detected in its first bin"
        );
        assert_eq!(first.device_name, "web01");
        assert_eq!(first.vector, Some(vector));
        if class == Class::Web {
            assert!(
                first.request_count > 9000,
                "the flood plus ordinary web traffic"
            );
        } else {
            assert_eq!(first.request_count, 9000, "the flood's own connections");
        }
        assert!(first.vector_share.unwrap() > 0.9);
        assert!(first.new_source_ratio.unwrap() > 0.85);
        assert_eq!(
            first.mitre_techniques,
            vector
                .mitre()
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        );
        assert!(
            first.reasons[0].contains("one-bin threshold"),
            "{:?}",
            first.reasons
        );
        assert_eq!(hits[5].severity, Severity::High);
        assert_eq!(d.incidents.len(), 1);
        let inc = &d.incidents[0];
        assert_eq!(inc.alert_bins.len(), 6);
        assert_eq!(inc.vector, vector);
        assert!(
            hits.iter()
                .all(|a| a.incident_id.as_deref() == Some(inc.incident_id.as_str()))
        );
        assert_eq!(inc.end, Some(W.start(ATTACK + 6)));
        // Every column of the alert JSON is filled.
        let j = serde_json::to_value(first).unwrap();
        for key in [
            "TimeGenerated",
            "DeviceName",
            "RequestCount",
            "UniqueSourceIPs",
            "AttackConfidence",
            "Vector",
            "VectorShare",
            "Severity",
            "Reasons",
            "Baseline",
            "NewSourceRatio",
            "TopSources",
            "MitreTechniques",
            "IncidentId",
        ] {
            assert!(!j[key].is_null(), "{key} is null");
        }
        assert_eq!(j["Suppressed"], false);
        assert_eq!(j["Vector"], vector.as_str());
        assert!(j["Baseline"]["Threshold"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn flash_crowd_of_returning_customers_is_suppressed() {
    let mut f = two_days(&["web01"]);
    // Four times the usual sources, all from the returning pool, for 4 bins.
    for b in ATTACK..ATTACK + 4 {
        for j in 0..1500u64 {
            f.add("web01", b, Class::Web, customer(j % 2000), 2, false);
        }
    }
    let d = run_default(&f.finish(END));
    assert!(unsuppressed(&d).is_empty(), "{:#?}", unsuppressed(&d));
    assert_eq!(d.alerts.len(), 4);
    let r = d.alerts[0].suppression_reason.as_deref().unwrap();
    assert!(r.starts_with("flash crowd"), "{r}");
    assert_eq!(d.alerts[0].severity, Severity::Informational);
    assert!(d.incidents[0].suppressed);
}

#[test]
fn allow_listed_load_test_is_suppressed() {
    let mut f = two_days(&["web01"]);
    for b in ATTACK..ATTACK + 3 {
        for i in 0..200u64 {
            f.add(
                "web01",
                b,
                Class::Web,
                Ip::v4([10, 50, (i >> 8) as u8, i as u8]),
                40,
                true,
            );
        }
    }
    let d = run_default(&f.finish(END));
    assert!(unsuppressed(&d).is_empty());
    assert_eq!(d.alerts.len(), 3);
    let r = d.alerts[0].suppression_reason.as_deref().unwrap();
    assert!(r.starts_with("load test from allow-listed sources"), "{r}");
}

#[test]
fn misconfigured_monitor_is_a_single_source_surge() {
    let mut f = two_days(&["web01"]);
    for b in ATTACK..ATTACK + 3 {
        f.add("web01", b, Class::Web, Ip::v4([192, 0, 2, 10]), 5000, false);
    }
    let d = run_default(&f.finish(END));
    assert!(unsuppressed(&d).is_empty());
    assert_eq!(d.alerts.len(), 3);
    let r = d.alerts[0].suppression_reason.as_deref().unwrap();
    assert!(r.starts_with("single-source surge: 192.0.2.10"), "{r}");
    assert_eq!(d.alerts[0].top_sources[0].ip, "192.0.2.10");
}

#[test]
fn a_few_unlisted_load_generators_are_a_few_source_surge() {
    let mut f = two_days(&["web01"]);
    for b in ATTACK..ATTACK + 3 {
        for i in 0..8u8 {
            f.add("web01", b, Class::Web, Ip::v4([198, 18, 0, i]), 1500, false);
        }
    }
    let d = run_default(&f.finish(END));
    assert!(unsuppressed(&d).is_empty(), "{:#?}", unsuppressed(&d));
    assert_eq!(d.alerts.len(), 3);
    let r = d.alerts[0].suppression_reason.as_deref().unwrap();
    assert!(r.starts_with("few-source surge: the top 10 sources"), "{r}");
}

#[test]
fn maintenance_window_suppresses_matching_devices_only() {
    let mut f = two_days(&["web01", "db01"]);
    for b in ATTACK..ATTACK + 2 {
        f.flood("web01", b, Class::Web, 3000, 3, b as u64);
        f.flood("db01", b, Class::Web, 3000, 3, b as u64 + 7);
    }
    let start = floodwatch_core::time::Rfc3339(W.start(ATTACK)).to_string();
    let end = floodwatch_core::time::Rfc3339(W.start(ATTACK + 12)).to_string();
    let cfg = FloodwatchConfig {
        windows: vec![Window {
            devices: "web*".into(),
            start,
            end,
            reason: "quarterly load test".into(),
        }],
        ..FloodwatchConfig::default()
    };
    let d = run(&f.finish(END), &cfg, TimeRange::default());
    assert_eq!(d.alerts.len(), 4);
    for a in &d.alerts {
        assert_eq!(a.suppressed, a.device_name == "web01");
    }
    let web = d.alerts.iter().find(|a| a.device_name == "web01").unwrap();
    assert!(
        web.suppression_reason
            .as_deref()
            .unwrap()
            .contains("quarterly load test")
    );
}

#[test]
fn warm_up_new_device_flood_alerts_ordinary_traffic_does_not() {
    let mut f = Fleet::new();
    // A busy new device: 1,500 customers (3,000+ connections) from its very first bin.
    f.normal("shop01", B0..B0 + 24, 1500.0);
    // A brand-new device whose first bins are a huge flood.
    for b in B0 + 10..B0 + 13 {
        f.flood("new01", b, Class::Web, 6000, 3, b as u64);
    }
    f.normal("new01", B0 + 13..B0 + 24, 100.0);
    let d = run_default(&f.finish(B0 + 24));
    let hits = unsuppressed(&d);
    assert!(hits.iter().all(|a| a.device_name == "new01"), "{hits:#?}");
    assert_eq!(hits.len(), 3);
    assert_eq!(bin_of(hits[0]), B0 + 10);
    assert!(
        hits[0].reasons[0].starts_with("no baseline yet"),
        "{:?}",
        hits[0].reasons
    );
    assert_eq!(hits[0].baseline.as_ref().unwrap().bins, 0);
}

#[test]
fn low_and_slow_flood_is_caught() {
    // 1.8x of the baseline from new sources: under the one-bin test; the sustained-rise test
    // takes it in its second bin.
    let mut f = two_days(&["web01"]);
    for b in ATTACK..ATTACK + 12 {
        let normal: u64 = (200.0 * diurnal(b)).round() as u64;
        // The same bots every bin: they must stay "new" while the flood builds up.
        f.flood("web01", b, Class::Web, normal * 8 / 10, 2, 42);
    }
    let d = run_default(&f.finish(END));
    let hits = unsuppressed(&d);
    assert_eq!(
        hits.first().map(|a| bin_of(a)),
        Some(ATTACK + 1),
        "{hits:#?}"
    );
    assert!(
        hits[0]
            .reasons
            .iter()
            .any(|r| r.starts_with("sustained rise: 2 bins")),
        "{:?}",
        hits[0].reasons
    );
    assert_eq!(hits.len(), 11, "every later bin: {hits:#?}");
    // Half returning customers at their usual rate: too mixed for the sustained test (which
    // wants 80 % of the excess from new sources), still caught by the CUSUM as it builds up.
    let mut f = two_days(&["web01"]);
    for b in ATTACK..ATTACK + 12 {
        let normal: u64 = (200.0 * diurnal(b)).round() as u64;
        f.flood("web01", b, Class::Web, normal * 5 / 10, 2, 42);
        for j in 0..normal * 4 / 10 {
            f.add(
                "web01",
                b,
                Class::Web,
                customer((j * 13 + 7) % 2000),
                2,
                false,
            );
        }
    }
    let d = run_default(&f.finish(END));
    let hits = unsuppressed(&d);
    assert!(!hits.is_empty(), "the slow flood was missed");
    assert!(
        bin_of(hits[0]) > ATTACK + 1,
        "not a sustained-test detection"
    );
    assert!(bin_of(hits[0]) < ATTACK + 12);
    assert!(
        hits[0].reasons.iter().any(|r| r.contains("CUSUM")),
        "{:?}",
        hits[0].reasons
    );
    // And 3x from new sources fires in the first bin.
    let mut f = two_days(&["web01"]);
    for b in ATTACK..ATTACK + 6 {
        let normal: u64 = (200.0 * diurnal(b)).round() as u64;
        f.flood("web01", b, Class::Web, normal * 2, 2, b as u64);
    }
    let d = run_default(&f.finish(END));
    let hits = unsuppressed(&d);
    assert_eq!(hits.first().map(|a| bin_of(a)), Some(ATTACK), "{hits:#?}");
}

#[test]
fn carpet_bombing_is_one_incident() {
    // 1.4x per device over six devices: below every single-device test, and below the strong
    // fleet-wide tier (1.5x): the wide tier (1.25x on five or more) takes it.
    let devs = ["web01", "web02", "web03", "web04", "web05", "web06"];
    let mut f = two_days(&devs);
    for (k, dev) in devs.iter().enumerate() {
        for b in ATTACK..ATTACK + 4 {
            let normal: u64 = (200.0 * diurnal(b)).round() as u64;
            f.flood(
                dev,
                b,
                Class::Web,
                normal * 4 / 10,
                2,
                (b as u64) << 4 | k as u64,
            );
        }
    }
    // The same moderate rise on one device alone is not an alert.
    let mut single = two_days(&["web01"]);
    for b in ATTACK..ATTACK + 4 {
        let normal: u64 = (200.0 * diurnal(b)).round() as u64;
        single.flood("web01", b, Class::Web, normal * 4 / 10, 2, b as u64);
    }
    assert!(run_default(&single.finish(END)).alerts.is_empty());

    let aggs = f.finish(END);
    let d = run_default(&aggs);
    let hits = unsuppressed(&d);
    assert_eq!(hits.len(), 24, "{:#?}", d.alerts);
    assert!(
        hits[0]
            .reasons
            .iter()
            .any(|r| r.starts_with("carpet bombing: 6 devices"))
    );
    assert_eq!(d.incidents.len(), 1);
    let inc = &d.incidents[0];
    assert_eq!(inc.kind, IncidentKind::CarpetBombing);
    assert_eq!(inc.devices, devs);
    assert_eq!(inc.alert_bins.len(), 24);
    assert_eq!(inc.start, W.start(ATTACK));
    // Six devices at 1.4x are not enough when the wide tier asks for seven.
    let cfg = FloodwatchConfig {
        carpet_wide_devices: 7,
        ..FloodwatchConfig::default()
    };
    assert!(unsuppressed(&run(&aggs, &cfg, TimeRange::default())).is_empty());
}

#[test]
fn range_limits_output_but_not_learning() {
    let mut f = two_days(&["web01"]);
    for b in ATTACK..ATTACK + 6 {
        f.flood("web01", b, Class::Web, 3000, 3, b as u64);
    }
    let aggs = f.finish(END);
    let range = TimeRange {
        since: Some(W.start(ATTACK + 2)),
        until: Some(W.start(ATTACK + 4) - 1),
    };
    let d = run(&aggs, &FloodwatchConfig::default(), range);
    let bins: Vec<i64> = d.alerts.iter().map(bin_of).collect();
    assert_eq!(bins, vec![ATTACK + 2, ATTACK + 3]);
    // The attack's earlier bins still taught persistence.
    assert!(
        d.alerts[0]
            .reasons
            .iter()
            .any(|r| r.contains("3 consecutive"))
    );
    // The bin of the newest event is judged on the second of it the input holds, and says so.
    let mut f = two_days(&["web01"]);
    f.flood("web01", END, Class::Web, 5000, 3, 1);
    let d = run_default(&f.finish(END));
    assert_eq!(d.alerts.len(), 1);
    let p = d.alerts[0].partial.as_ref().unwrap();
    assert_eq!(d.alerts[0].request_count, 15_000);
    assert!(
        p.projected_count.abs_diff(15_000 * 300) <= 1,
        "{}",
        p.projected_count
    );
    assert!((p.coverage - 1.0 / 300.0).abs() < 1e-6, "{}", p.coverage);
}

#[test]
fn the_bin_the_input_ends_in_is_judged_as_a_partial_bin() {
    // The input ends a minute into a bin: web01 is being flooded in it, web02 has its usual
    // traffic at the usual rate (a fifth of a bin's worth in a fifth of a bin).
    let mut f = two_days(&["web01", "web02"]);
    f.normal("web01", END..END + 1, 40.0);
    f.normal("web02", END..END + 1, 40.0);
    f.flood("web01", END, Class::Web, 1000, 3, 7);
    let aggs = f.finish_at(END, 60 * NANOS_PER_SEC - 1);
    let bin = aggs.get(aggs.devices.get("web01").unwrap(), END).unwrap();
    let seen = bin.class(Class::Web).count;
    let d = run_default(&aggs);
    let last: Vec<&Alert> = d.alerts.iter().filter(|a| bin_of(a) == END).collect();
    assert_eq!(last.len(), 1, "{last:#?}");
    let a = last[0];
    assert_eq!(a.device_name, "web01");
    assert!(!a.suppressed, "{:?}", a.suppression_reason);
    let p = a.partial.as_ref().unwrap();
    assert!((p.coverage - 0.2).abs() < 1e-9, "{}", p.coverage);
    // What was seen, judged as a whole bin at the rate seen...
    assert_eq!(a.request_count, seen);
    assert_eq!(p.projected_count, 5 * seen);
    assert!(
        a.reasons[0].starts_with("partial bin: the input ends at"),
        "{:?}",
        a.reasons
    );
    // ...but what each source made is what it made.
    for t in &a.top_sources {
        let ip = floodwatch_core::Ip::parse(t.ip.as_bytes()).unwrap();
        let truth = bin
            .sources
            .exact_counts([floodwatch_core::hash::hash_ip(ip)]);
        assert!(t.exact);
        assert_eq!(Some(t.count), truth[0], "{}", t.ip);
    }
    // An incident that the data ends in is ongoing.
    let inc = d.incidents.iter().find(|i| i.devices == ["web01"]).unwrap();
    assert!(inc.end.is_none());
}

#[test]
fn saved_state_resumes_exactly() {
    let devs = ["web01", "web02"];
    let mut f = two_days(&devs);
    for b in ATTACK..ATTACK + 6 {
        f.flood("web02", b, Class::Syn, 4000, 2, b as u64);
    }
    let aggs = f.finish(END);
    let cfg = FloodwatchConfig::default();
    let empty = BinAgg::default();
    let feed = |det: &mut Detector, bins: std::ops::Range<i64>| {
        let mut out = Vec::new();
        for bin in bins {
            let live: Vec<(&str, &BinAgg)> = devs
                .iter()
                .map(|d| {
                    let id = aggs.devices.get(d).unwrap();
                    (*d, aggs.get(id, bin).unwrap_or(&empty))
                })
                .collect();
            out.extend(det.observe_bin(bin, &live).into_iter().map(|s| s.alert));
        }
        out
    };
    let mut whole = Detector::new(&cfg, W).unwrap();
    let expected = feed(&mut whole, B0..END);
    let mut first = Detector::new(&cfg, W).unwrap();
    let mut got = feed(&mut first, B0..ATTACK + 2);
    let saved = serde_json::to_string(&first.state).unwrap();
    let state: DetectorState = serde_json::from_str(&saved).unwrap();
    assert_eq!(state, first.state);
    let mut resumed = Detector::new(&cfg, W).unwrap().with_state(state);
    got.extend(feed(&mut resumed, ATTACK + 2..END));
    assert!(
        feed(&mut resumed, ATTACK..ATTACK + 2).is_empty(),
        "bins already scored are not scored again"
    );
    assert_eq!(got.len(), 6);
    assert_eq!(got, expected);
    assert_eq!(resumed.state, whole.state);
}

#[test]
fn state_stays_bounded() {
    // Two days of bins on a device seeing 300 brand-new sources every bin.
    let cfg = FloodwatchConfig {
        baseline_days: 1,
        max_history_sources: 2_000,
        ..FloodwatchConfig::default()
    };
    let mut det = Detector::new(&cfg, W).unwrap();
    for bin in B0..B0 + 2 * DAY {
        let mut f = Fleet::new();
        for i in 0..300 {
            f.add("web01", bin, Class::Web, random_ip(bin as u64, i), 1, false);
        }
        let agg = f.bins.values().next().unwrap().clone();
        det.observe_bin(bin, &[("web01", &agg)]);
    }
    let s = &det.state.devices["web01"];
    assert_eq!(s.history_bins(), DAY as usize);
    assert!(s.remembered_sources() <= 2_000);
    assert!(
        s.remembered_sources() >= 1_000,
        "{}",
        s.remembered_sources()
    );
    let bytes = serde_json::to_vec(&det.state).unwrap().len();
    assert!(bytes < 200_000, "{bytes} bytes of state");
}

/// Events through the real aggregator, split in two parts and merged, detect the same as the
/// one-shot aggregate.
#[test]
fn merged_partial_aggregates_detect_the_same() {
    let mut events = Vec::new();
    let mut names = Aggregator::new(W, ClassifyConfig::default());
    let dev = names.device("web01.contoso.com");
    let mut rid = 0;
    let mut push = |events: &mut Vec<Event>, bin: i64, ip: Ip, local: u16, action: ActionType| {
        rid += 1;
        events.push(Event {
            ts: W.start(bin) + (rid % 290) * NANOS_PER_SEC,
            device: dev,
            action,
            protocol: Protocol::Tcp,
            remote_ip: Some(ip),
            remote_port: Some(50_000),
            local_port: Some(local),
            report_id: rid,
            weight: 1,
            ..Event::default()
        });
    };
    for bin in B0..B0 + 36 {
        for j in 0..60u64 {
            let h = mix64(bin as u64 ^ j);
            push(
                &mut events,
                bin,
                customer(h % 300),
                443,
                ActionType::InboundConnectionAccepted,
            );
        }
    }
    for bin in B0 + 30..B0 + 33 {
        for i in 0..1500u64 {
            push(
                &mut events,
                bin,
                random_ip(bin as u64, i),
                443,
                ActionType::ConnectionAttempt,
            );
        }
    }
    push(
        &mut events,
        B0 + 36,
        customer(1),
        443,
        ActionType::InboundConnectionAccepted,
    );
    let aggregate = |evs: &[Event]| {
        let mut a = Aggregator::new(W, ClassifyConfig::default());
        a.device("web01.contoso.com");
        a.add_batch(evs);
        a.finish()
    };
    let whole = aggregate(&events);
    let mut parts = aggregate(&events[events.len() / 3..]);
    parts.merge(aggregate(&events[..events.len() / 3]));
    let cfg = FloodwatchConfig::default();
    let a = run(&whole, &cfg, TimeRange::default());
    let b = run(&parts, &cfg, TimeRange::default());
    // Top sources come from a Space-Saving summary whose merge is exact only within its stated
    // error, so compare the decisions, not the top-talker lists.
    let decisions = |d: &Detection| {
        d.alerts
            .iter()
            .map(|a| {
                (
                    a.time_generated,
                    a.request_count,
                    a.unique_source_ips,
                    a.vector,
                    a.severity,
                    a.attack_confidence,
                    a.suppressed,
                    a.new_source_ratio,
                    a.baseline.clone(),
                    a.incident_id.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(decisions(&a), decisions(&b));
    assert_eq!(a.incidents.len(), b.incidents.len());
    let hits = unsuppressed(&a);
    assert_eq!(hits.len(), 3, "{:#?}", a.alerts);
    assert_eq!(hits[0].vector, Some(Vector::SynFlood));
    assert_eq!(hits[0].request_count, 1500);
    assert_eq!(bin_of(hits[0]), B0 + 30);
}

proptest::proptest! {
    /// Whatever the traffic and however extreme the (valid) settings, detection completes and
    /// every number it reports is finite and in range.
    #[test]
    fn never_panics_and_reports_finite_numbers(
        bins in proptest::collection::vec(
            (0i64..40, 0usize..4, 0u64..300, 1u32..50, proptest::bool::ANY), 1..120),
        zero_floors in proptest::bool::ANY,
    ) {
        let mut f = Fleet::new();
        for &(bin, class, sources, per, allowed) in &bins {
            let class = [Class::Web, Class::Syn, Class::Udp, Class::Icmp][class];
            for i in 0..sources {
                f.add("dev", B0 + bin, class, random_ip(bin as u64, i), per, allowed);
            }
        }
        let cfg = if zero_floors {
            FloodwatchConfig {
                min_excess: 0.0,
                spread_floor: 0.0,
                z_threshold: 0.0,
                warmup_bins: 0,
                min_sources: 0,
                cold_min_count: 0,
                cold_min_sources: 0,
                cold_min_prefix_spread: 0.0,
                ..FloodwatchConfig::default()
            }
        } else {
            FloodwatchConfig::default()
        };
        cfg.validate().unwrap();
        let d = run(&f.finish(B0 + 40), &cfg, TimeRange::default());
        for a in &d.alerts {
            proptest::prop_assert!(!a.reasons.is_empty());
            let share = a.vector_share.unwrap();
            proptest::prop_assert!((0.0..=1.0).contains(&share));
            let b = a.baseline.as_ref().unwrap();
            proptest::prop_assert!(b.expected.is_finite() && b.spread.is_finite() && b.threshold.is_finite());
            proptest::prop_assert!(a.incident_id.is_some());
        }
    }
}

/// What [`run`] must equal: every bin of every device from its first to its last bin, scored
/// together, quiet bins as empty ones.
fn bin_by_bin(aggs: &Aggregates, cfg: &FloodwatchConfig) -> (Vec<Alert>, DetectorState) {
    let mut det = Detector::new(cfg, W).unwrap();
    let end = W.index(aggs.stats.max_ts.unwrap());
    let devs: Vec<(&str, i64, i64, floodwatch_core::DeviceId)> = aggs
        .devices_by_name()
        .into_iter()
        .map(|d| {
            let bins: Vec<i64> = aggs.device_bins(d).map(|x| x.0).collect();
            (aggs.devices.name(d), bins[0], bins[bins.len() - 1], d)
        })
        .collect();
    let empty = BinAgg::default();
    let mut out = Vec::new();
    for bin in devs.iter().map(|d| d.1).min().unwrap()..end {
        let live: Vec<(&str, &BinAgg)> = devs
            .iter()
            .filter(|d| d.1 <= bin && bin <= d.2)
            .map(|d| (d.0, aggs.get(d.3, bin).unwrap_or(&empty)))
            .collect();
        out.extend(det.observe_bin(bin, &live).into_iter().map(|s| s.alert));
    }
    out.sort_by(|a, b| {
        a.time_generated
            .cmp(&b.time_generated)
            .then(a.device_name.cmp(&b.device_name))
    });
    (out, det.state)
}

#[test]
fn quiet_bins_count_as_quiet_and_a_device_ends_at_its_last_bin() {
    let mut f = Fleet::new();
    // web02 builds a slow rise, goes quiet for two hours, and comes back with the same rise:
    // the quiet in between must calm its CUSUM. web03 stops reporting for good.
    f.normal("web01", B0..B0 + 2 * DAY, 200.0);
    f.normal("web02", B0..ATTACK, 200.0);
    f.normal("web02", ATTACK + 24..B0 + 2 * DAY, 200.0);
    f.normal("web03", B0..ATTACK + 40, 200.0);
    for b in (ATTACK - 8..ATTACK).chain(ATTACK + 24..ATTACK + 30) {
        let normal: u64 = (200.0 * diurnal(b)).round() as u64;
        f.flood("web02", b, Class::Web, normal * 8 / 10, 2, 42);
    }
    f.flood("web01", ATTACK + 60, Class::Web, 3000, 3, 7);
    let aggs = f.finish(END);
    let cfg = FloodwatchConfig::default();
    let mut stream = Stream::new(&cfg, W, None);
    stream.push(&aggs, W.index(aggs.stats.max_ts.unwrap()));
    let mut got = stream.finish(None).alerts;
    for a in &mut got {
        a.incident_id = None;
    }
    let (want, state) = bin_by_bin(&aggs, &cfg);
    assert!(want.iter().any(|a| a.device_name == "web01"));
    assert!(want.iter().any(|a| a.device_name == "web02"));
    assert_eq!(got, want);
    // Same history too: the quiet bins are in it, web03's bins stop at its last.
    assert_eq!(stream.state(), &state);
    assert_eq!(
        state.devices["web03"].next_bin(),
        Some(ATTACK + 40),
        "web03 ends at its last bin"
    );
}

/// A flood through residential proxies: most of the flood's connections from customers the
/// device knows (at 50+ times their usual 1-3 connections), the rest from new sources. Returning is not
/// innocent when a source behaves unlike itself.
#[test]
fn a_flood_through_returning_addresses_at_many_times_their_rate_is_an_attack() {
    let d = run_default(&proxy_flood());
    let hits = unsuppressed(&d);
    assert!(
        hits.first().is_some_and(|a| bin_of(a) == ATTACK),
        "alerted from the first bin: {:#?}",
        d.alerts
    );
    assert_eq!(hits.len(), 4, "{:#?}", d.alerts);
    let r = &hits[0].reasons;
    assert!(
        r.iter()
            .any(|s| s.contains("returning sources not behaving like themselves")),
        "{r:#?}"
    );
    // Without the per-source test (an impossible multiple) the same flood passes for a flash
    // crowd: the evidence is what makes the difference.
    let blind = FloodwatchConfig {
        hot_source_ratio: 1e9,
        ..FloodwatchConfig::default()
    };
    let d = run(&proxy_flood(), &blind, TimeRange::default());
    assert!(unsuppressed(&d).is_empty(), "{:#?}", unsuppressed(&d));
    assert!(d.alerts.iter().all(|a| {
        a.suppression_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("flash crowd"))
    }));
}

/// Two days of traffic and 4 bins of 60 customers at 150 connections each (their usual: 1-3)
/// with 300 new sources at 10: three quarters of the flood from returning addresses.
fn proxy_flood() -> Aggregates {
    let mut f = two_days(&["web01"]);
    for b in ATTACK..ATTACK + 4 {
        for j in 0..60u64 {
            f.add("web01", b, Class::Web, customer(j * 37 % 2000), 150, false);
        }
        f.flood("web01", b, Class::Web, 300, 10, 77);
    }
    f.finish(END)
}

/// A flash sale doubling traffic with returning customers (suppressed), and from its fourth bin
/// a botnet of new sources on top: the step is an attack, alerted at once, while the sale's
/// bins before it stay suppressed as a flash crowd.
#[test]
fn an_attack_on_top_of_a_flash_crowd_is_alerted_at_the_step() {
    let mut f = two_days(&["web01"]);
    let step = ATTACK + 3;
    for b in ATTACK..ATTACK + 10 {
        for j in 0..1200u64 {
            f.add(
                "web01",
                b,
                Class::Web,
                customer((j * 7 + b as u64) % 2000),
                2,
                false,
            );
        }
        if b >= step {
            f.flood("web01", b, Class::Web, 500, 2, 91);
        }
    }
    let d = run_default(&f.finish(END));
    let before: Vec<&Alert> = d.alerts.iter().filter(|a| bin_of(a) < step).collect();
    assert_eq!(before.len(), 3, "{:#?}", d.alerts);
    assert!(before.iter().all(|a| {
        a.suppressed
            && a.suppression_reason
                .as_deref()
                .is_some_and(|r| r.starts_with("flash crowd"))
    }));
    // Judged against the pre-sale baseline alone the step's new sources are a minority of the
    // excess: it is the crowd's level that shows them.
    let hits = unsuppressed(&d);
    assert!(
        hits.first().is_some_and(|a| bin_of(a) == step),
        "{:#?}",
        d.alerts
    );
    assert!(
        hits.iter()
            .all(|a| bin_of(a) >= step && bin_of(a) < ATTACK + 10),
        "{hits:#?}"
    );
    assert_eq!(hits.len(), 7, "every bin of the attack: {hits:#?}");
    assert!(
        hits[0]
            .reasons
            .iter()
            .any(|r| r.starts_with("surge on surge")),
        "{:#?}",
        hits[0].reasons
    );
    // The same sale without the botnet stays suppressed throughout.
    let mut f = two_days(&["web01"]);
    for b in ATTACK..ATTACK + 10 {
        for j in 0..1200u64 {
            f.add(
                "web01",
                b,
                Class::Web,
                customer((j * 7 + b as u64) % 2000),
                2,
                false,
            );
        }
    }
    let d = run_default(&f.finish(END));
    assert!(unsuppressed(&d).is_empty(), "{:#?}", unsuppressed(&d));
    assert_eq!(d.alerts.len(), 10);
}

/// `log-only`: what would be suppressed is emitted unsuppressed, with the reason it would have
/// been suppressed; nothing else changes.
#[test]
fn log_only_emits_would_be_suppressed_alerts_with_their_reason() {
    let mut f = two_days(&["web01"]);
    for b in ATTACK..ATTACK + 4 {
        for j in 0..1500u64 {
            f.add("web01", b, Class::Web, customer(j % 2000), 2, false);
        }
    }
    let aggs = f.finish(END);
    let applied = run_default(&aggs);
    let cfg = FloodwatchConfig {
        suppress: SuppressMode::LogOnly,
        ..FloodwatchConfig::default()
    };
    let trial = run(&aggs, &cfg, TimeRange::default());
    assert_eq!(applied.alerts.len(), 4);
    assert_eq!(trial.alerts.len(), 4);
    for (a, t) in applied.alerts.iter().zip(&trial.alerts) {
        assert!(a.suppressed && !t.suppressed);
        assert_eq!(a.suppression_reason, t.suppression_reason);
        assert_ne!(t.severity, Severity::Informational);
        let why = a.suppression_reason.as_deref().unwrap();
        assert_eq!(
            t.reasons[0],
            format!("log-only: would have been suppressed: {why}")
        );
        assert_eq!(a.request_count, t.request_count);
        // Both name the evidence for and against.
        assert!(
            a.reasons
                .iter()
                .any(|r| r.starts_with("evidence for an attack:") && r.ends_with(why)),
            "{:#?}",
            a.reasons
        );
    }
    assert!(!trial.incidents[0].suppressed);
}

/// The same botnet on day 1 and again a day later: its bots were never learnt as visitors
/// (attack bins do not teach), so the second wave is as new as the first.
#[test]
fn a_botnet_returning_the_next_day_is_still_new() {
    let mut f = Fleet::new();
    f.normal("web01", B0..B0 + 3 * DAY, 200.0);
    let day1 = B0 + DAY + 100;
    let day2 = day1 + DAY;
    for b in (day1..day1 + 6).chain(day2..day2 + 6) {
        f.flood("web01", b, Class::Web, 800, 3, 5150);
    }
    let d = run_default(&f.finish(B0 + 3 * DAY));
    let hits = unsuppressed(&d);
    assert_eq!(hits.len(), 12, "{:#?}", d.alerts);
    // The bots are as new in the second wave as in the first (the rest are the usual visitors).
    let share = |bin: i64| {
        hits.iter()
            .find(|a| bin_of(a) == bin)
            .and_then(|a| a.new_source_ratio)
            .expect("an alert with a new-source share")
    };
    let (first, second) = (share(day1), share(day2));
    assert!(first > 0.7, "{first}");
    assert!((first - second).abs() < 0.03, "{first} then {second}");
}
