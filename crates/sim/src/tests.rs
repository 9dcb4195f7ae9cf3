//! Unit tests across modules: determinism, every format parses as what it claims, label
//! windows match the generated traffic.

use super::*;
use crate::generate::{SLOT, World};
use floodwatch_core::time::{NANOS_PER_HOUR, parse_rfc3339};
use floodwatch_core::{BinWidth, ClassifyConfig};

/// A small but complete dataset: 3 hours, scaled down.
fn small(profile: SimProfile) -> SimConfig {
    let mut c = SimConfig::new(profile);
    c.hours = 3;
    c.scale = 0.2;
    c.devices = 3;
    c
}

fn bytes(cfg: &SimConfig, f: OutputFormat) -> (SimSummary, Vec<u8>) {
    write_to(cfg, f, Vec::new()).unwrap()
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let cfg = small(SimProfile::Scenarios);
    let (s1, a) = bytes(&cfg, OutputFormat::Ndjson);
    let (s2, b) = bytes(&cfg, OutputFormat::Ndjson);
    assert_eq!(s1, s2);
    assert!(a == b, "same seed must give identical bytes");
    let mut other = cfg.clone();
    other.seed = 2;
    let (_, c) = bytes(&other, OutputFormat::Ndjson);
    assert!(a != c);
    assert_eq!(
        s1.records as usize,
        a.iter().filter(|&&c| c == b'\n').count()
    );
}

fn json_rows(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v.as_array().cloned().unwrap_or_default()
}

#[test]
fn every_format_parses_as_what_it_claims() {
    let cfg = small(SimProfile::Scenarios);
    let (ref_sum, nd) = bytes(&cfg, OutputFormat::Ndjson);
    let n = ref_sum.records as usize;
    let first: serde_json::Value =
        serde_json::from_slice(nd.split(|&c| c == b'\n').next().unwrap()).unwrap();
    for f in OutputFormat::ALL {
        let (s, out) = bytes(&cfg, f);
        assert_eq!(s.records as usize, n, "{f}: same records in every format");
        assert_eq!(s.bytes as usize, out.len(), "{f}: byte count");
        let text = std::str::from_utf8(&out).unwrap();
        match f {
            OutputFormat::Ndjson => {
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert!(v["Timestamp"].is_string() && v["DeviceName"].is_string());
                }
            }
            OutputFormat::JsonArray => {
                let v: serde_json::Value = serde_json::from_str(text).unwrap();
                assert_eq!(json_rows(&v).len(), n);
                assert_eq!(v[0], first);
            }
            OutputFormat::EventHubs => {
                let (mut ours, mut other) = (0, 0);
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    for r in json_rows(&v["records"]) {
                        assert_eq!(r["operationName"], "Publish");
                        match r["category"].as_str().unwrap() {
                            "AdvancedHunting-DeviceNetworkEvents" => ours += 1,
                            "AdvancedHunting-DeviceProcessEvents" => other += 1,
                            c => panic!("category {c}"),
                        }
                    }
                }
                assert_eq!((ours, other as u64), (n, s.other_records));
                assert!(other > 0, "other tables are mixed in");
                let v: serde_json::Value =
                    serde_json::from_str(text.lines().next().unwrap()).unwrap();
                let props = v["records"][0]["properties"].clone();
                assert_eq!(props, first);
            }
            OutputFormat::StorageExport => {
                assert!(text.ends_with("\r\n"));
                assert_eq!(text.matches("\r\n").count(), n);
                for line in text.split("\r\n").filter(|l| !l.is_empty()) {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert_eq!(v["category"], "AdvancedHunting-DeviceNetworkEvents");
                    assert!(v["properties"]["ReportId"].is_i64());
                }
            }
            OutputFormat::AdvancedHuntingApi => {
                let v: serde_json::Value = serde_json::from_str(text).unwrap();
                assert_eq!(json_rows(&v["Results"]).len(), n);
                assert_eq!(v["Schema"][0]["Name"], "Timestamp");
                assert_eq!(v["Results"][0], first);
            }
            OutputFormat::GraphHunting => {
                let v: serde_json::Value = serde_json::from_str(text).unwrap();
                assert_eq!(json_rows(&v["results"]).len(), n);
                assert_eq!(v["schema"][0]["name"], "Timestamp");
            }
            OutputFormat::LogAnalytics => {
                let v: serde_json::Value = serde_json::from_str(text).unwrap();
                let t = &v["tables"][0];
                let cols = json_rows(&t["columns"]);
                let rows = json_rows(&t["rows"]);
                assert_eq!(rows.len(), n);
                assert!(rows.iter().all(|r| json_rows(r).len() == cols.len()));
                let idx = |name: &str| cols.iter().position(|c| c["name"] == name).unwrap();
                assert_eq!(rows[0][idx("DeviceName")], first["DeviceName"]);
                assert_eq!(rows[0][idx("TimeGenerated")], first["Timestamp"]);
                assert_eq!(cols[idx("AdditionalFields")]["type"], "dynamic");
            }
            OutputFormat::DefenderCsv | OutputFormat::SentinelCsv => {
                let sentinel = f == OutputFormat::SentinelCsv;
                assert_eq!(
                    text.starts_with('\u{feff}'),
                    sentinel,
                    "BOM only in Sentinel CSV"
                );
                let mut r =
                    csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes());
                let h = r.headers().unwrap().clone();
                if sentinel {
                    assert_eq!(&h[0], "TenantId");
                    assert_eq!(&h[1], "TimeGenerated [UTC]");
                    assert!(h.iter().any(|c| c == "Timestamp [UTC]"));
                } else {
                    assert_eq!(&h[0], "Timestamp");
                }
                let af = h.iter().position(|c| c == "AdditionalFields").unwrap();
                let mut count = 0;
                for rec in r.records() {
                    let rec = rec.unwrap();
                    assert_eq!(rec.len(), h.len());
                    if !rec[af].is_empty() {
                        let _: serde_json::Value = serde_json::from_str(&rec[af]).unwrap();
                    }
                    count += 1;
                }
                assert_eq!(count, n);
                assert!(text.contains("\r\n"));
            }
        }
    }
}

#[test]
fn sentinel_dates_are_us_twelve_hour() {
    let cfg = small(SimProfile::Scenarios);
    let (_, out) = bytes(&cfg, OutputFormat::SentinelCsv);
    let text = std::str::from_utf8(&out).unwrap();
    let mut r = csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let rec = r.records().next().unwrap().unwrap();
    // 2025-12-22 00:0x UTC is shortly after midnight: 12 AM.
    assert!(rec[1].starts_with("12/22/2025, 12:0"), "{}", &rec[1]);
    assert!(rec[1].ends_with(" AM"));
}

#[test]
fn compressed_outputs_decompress_to_the_same_bytes() {
    let cfg = small(SimProfile::Scenarios);
    let (_, plain) = bytes(&cfg, OutputFormat::Ndjson);
    let dir = tempfile::tempdir().unwrap();
    for ext in ["gz", "zst"] {
        let p = dir.path().join(format!("d.ndjson.{ext}"));
        let lp = dir.path().join("labels.jsonl");
        write_dataset(&cfg, OutputFormat::Ndjson, &p, Some(&lp)).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let mut back = Vec::new();
        use std::io::Read;
        if ext == "gz" {
            flate2::read::MultiGzDecoder::new(f)
                .read_to_end(&mut back)
                .unwrap();
        } else {
            zstd::stream::read::Decoder::new(f)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
        }
        assert!(back == plain, "{ext}");
        assert_eq!(read_labels(&lp).unwrap(), labels(&cfg));
    }
}

#[test]
fn records_are_about_690_bytes() {
    let mut cfg = SimConfig::new(SimProfile::Bench);
    cfg.hours = 2;
    cfg.scale = 0.05;
    let (s, _) = bytes(&cfg, OutputFormat::Ndjson);
    let per = s.bytes as f64 / s.records as f64;
    assert!((600.0..780.0).contains(&per), "{per:.0} bytes per record");
}

#[test]
fn label_windows_match_generated_traffic() {
    let cfg = SimConfig::new(SimProfile::Scenarios);
    let world = World::new(&cfg);
    assert_eq!(world.labels.len(), 13);
    let mut states = world.new_states();
    let mut rows = Vec::new();
    let n = world.labels.len();
    let mut tagged = vec![0u64; n + 1];
    let mut first_seen: Vec<Option<Nanos>> = vec![None; world.devices.len()];
    let mut per_slot_attack: Vec<std::collections::BTreeMap<Nanos, u64>> =
        vec![Default::default(); n];
    for t0 in world.slots() {
        world.slot(&mut states, t0, &mut rows);
        assert!(rows.windows(2).all(|w| w[0].ts <= w[1].ts), "time order");
        for r in &rows {
            assert!(r.ts >= t0 && r.ts < t0 + SLOT);
            let d = r.device as usize;
            first_seen[d].get_or_insert(r.ts);
            tagged[r.tag as usize] += 1;
            if r.tag > 0 {
                let l = &world.labels[r.tag as usize - 1];
                assert!(
                    l.start <= r.ts && r.ts < l.end,
                    "{} row outside its window",
                    l.scenario
                );
                assert!(
                    l.devices.contains(&world.devices[d].name),
                    "{} on wrong device",
                    l.scenario
                );
                *per_slot_attack[r.tag as usize - 1].entry(t0).or_default() += 1;
            }
        }
    }
    for (i, l) in world.labels.iter().enumerate() {
        let slots = per_slot_attack[i].len() as i64;
        let window = (l.end - l.start) / SLOT;
        match l.scenario.as_str() {
            "new-device" => {
                let d = world
                    .devices
                    .iter()
                    .position(|d| d.name == l.devices[0])
                    .unwrap();
                let first = first_seen[d].unwrap();
                assert!(
                    first >= l.start && first < l.start + SLOT,
                    "shop01 first reports at the window start"
                );
                assert_eq!(tagged[i + 1], 0);
            }
            "pulse-wave" => assert_eq!(slots, 4, "four pulses of one bin"),
            "carpet-bombing" => assert_eq!(slots, window),
            _ => assert_eq!(slots, window, "{} fills its window", l.scenario),
        }
        if l.kind == LabelKind::Attack {
            let peak = per_slot_attack[i].values().copied().max().unwrap();
            assert!(
                peak >= 300,
                "{}: {peak} rows in its biggest slot",
                l.scenario
            );
        }
    }
    let web05 = world
        .devices
        .iter()
        .position(|d| d.name == "web05.contoso.com")
        .unwrap();
    let attack = world
        .labels
        .iter()
        .find(|l| l.scenario == "new-device-attack")
        .unwrap();
    let first = first_seen[web05].unwrap();
    assert!(first < attack.start && attack.start - first <= 3 * NANOS_PER_HOUR);
    assert!(attack.start >= cfg.start + 24 * NANOS_PER_HOUR);
}

#[test]
fn in_memory_aggregates_match_a_sequential_fold() {
    let cfg = small(SimProfile::Scenarios);
    let make = || Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
    let (a, labels) = aggregate(&cfg, make);
    assert!(labels.is_empty(), "no scenario fits 3 hours");
    // One thread, all devices interleaved in time order, as a file would deliver them.
    let world = World::new(&cfg);
    let mut states = world.new_states();
    let mut agg = make();
    let mut rows = Vec::new();
    for t0 in world.slots() {
        world.slot(&mut states, t0, &mut rows);
        for r in &rows {
            let id = agg.device(&world.devices[r.device as usize].name);
            agg.add(&r.event(id));
        }
    }
    let b = agg.finish();
    assert_eq!(a.stats, b.stats);
    assert_eq!(a.by_name(), b.by_name());
    assert_eq!(
        a.stats.duplicates, 0,
        "(DeviceName, Timestamp, ReportId) is unique"
    );
    let (s, _) = bytes(&cfg, OutputFormat::Ndjson);
    assert_eq!(a.stats.events, s.records);
}

#[test]
fn diurnal_traffic_and_scale() {
    let mut cfg = SimConfig::new(SimProfile::Scenarios);
    cfg.hours = 24;
    cfg.devices = 1;
    let make = || Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
    let (a, _) = aggregate(&cfg, make);
    let dev = a.devices.get("web01.contoso.com").unwrap();
    let at = |h: i64| {
        let bin = BinWidth::FIVE_MINUTES.index(cfg.start + h * NANOS_PER_HOUR);
        a.get(dev, bin).unwrap().inbound()
    };
    let (night, noon) = (at(1), at(13));
    assert!(noon > 3 * night, "noon {noon} vs night {night}");
    assert!((150..=450).contains(&noon), "peak bin of web01: {noon}");
    cfg.scale = 2.0;
    let (b, _) = aggregate(&cfg, make);
    let ratio = b.stats.events as f64 / a.stats.events as f64;
    assert!(
        (1.8..2.2).contains(&ratio),
        "scale 2 gives {ratio:.2}x events"
    );
}

#[test]
fn bench_attack_is_in_the_last_hour() {
    let cfg = SimConfig::new(SimProfile::Bench);
    let l = labels(&cfg);
    assert_eq!(l.len(), 1);
    assert!(l[0].start >= cfg.end() - NANOS_PER_HOUR && l[0].end <= cfg.end());
    assert_eq!(l[0].start, parse_rfc3339(b"2025-12-23T01:10:00Z").unwrap());
}

#[test]
fn invalid_configs_are_errors_not_panics() {
    let mut c = SimConfig::new(SimProfile::Scenarios);
    c.scale = f64::NAN;
    assert!(matches!(c.validate(), Err(SimError::Config(_))));
    assert!(write_to(&c, OutputFormat::Ndjson, Vec::new()).is_err());
    c.scale = 1.0;
    c.devices = 0;
    assert!(c.validate().is_err());
    let dir = tempfile::tempdir().unwrap();
    let e = write_dataset(
        &SimConfig::new(SimProfile::Scenarios),
        OutputFormat::Ndjson,
        &dir.path().join("no/such/dir.ndjson"),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no/such/dir.ndjson"), "{e}");
}

// ---- The `hard` profile: every traffic shape has the property its scenario claims. ----

mod hard {
    use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

    use floodwatch_core::model::{ActionType, Ip};
    use floodwatch_core::time::{NANOS_PER_MIN, NANOS_PER_SEC};

    use super::*;
    use crate::record::{Extra, Row};
    use crate::scenario::Pool;

    fn world() -> World {
        World::new(&SimConfig::new(SimProfile::Hard))
    }

    /// The label of `name` and its rows' tag.
    fn label<'a>(w: &'a World, name: &str) -> (u16, &'a Label) {
        let i = w
            .labels
            .iter()
            .position(|l| l.scenario == name)
            .unwrap_or_else(|| panic!("no scenario {name}"));
        (i as u16 + 1, &w.labels[i])
    }

    fn device(w: &World, name: &str) -> usize {
        w.devices.iter().position(|d| d.name == name).unwrap()
    }

    /// Generates one device slot by slot from the start up to `until`, handing each slot's
    /// rows to `f` (devices are independent, so this is what the whole dataset holds).
    fn each_slot(w: &World, dev: usize, until: Nanos, mut f: impl FnMut(Nanos, &[Row])) {
        let mut st = w.new_states().swap_remove(dev);
        let mut rows = Vec::new();
        for t0 in w.slots().take_while(|&t| t < until) {
            rows.clear();
            w.device_slot(dev, &mut st, t0, &mut rows);
            f(t0, &rows);
        }
    }

    fn accepted(r: &Row) -> bool {
        r.action == ActionType::InboundConnectionAccepted
    }

    /// Per slot of a scenario's window: its accepted connections by source, and every source
    /// that reached the device (any inbound accepted row, any tag) before the window.
    struct Window {
        slots: BTreeMap<Nanos, HashMap<Ip, u64>>,
        /// Accepted connections per source before the window, normal traffic only.
        before: HashMap<Ip, u64>,
        bins_before: u64,
        /// Accepted normal connections per slot in the window.
        normal: BTreeMap<Nanos, u64>,
    }

    fn window(w: &World, name: &str) -> Window {
        let (tag, l) = label(w, name);
        let dev = device(w, &l.devices[0]);
        let mut out = Window {
            slots: BTreeMap::new(),
            before: HashMap::new(),
            bins_before: 0,
            normal: BTreeMap::new(),
        };
        each_slot(w, dev, l.end, |t0, rows| {
            if t0 < l.start {
                out.bins_before += u64::from(!rows.is_empty());
                for r in rows.iter().filter(|r| accepted(r) && r.tag == 0) {
                    *out.before.entry(r.remote_ip).or_default() += 1;
                }
                return;
            }
            let slot = out.slots.entry(t0).or_default();
            for r in rows.iter().filter(|r| accepted(r)) {
                if r.tag == tag {
                    *slot.entry(r.remote_ip).or_default() += 1;
                } else if r.tag == 0 {
                    *out.normal.entry(t0).or_default() += 1;
                }
            }
        });
        out
    }

    #[test]
    fn every_scenario_has_its_place() {
        let cfg = SimConfig::new(SimProfile::Hard);
        let w = World::new(&cfg);
        assert_eq!(w.devices.len(), 15);
        assert_eq!(w.labels.len(), 31);
        let names: BTreeSet<&str> = w.labels.iter().map(|l| l.scenario.as_str()).collect();
        assert_eq!(names.len(), w.labels.len(), "names are unique");
        let old: Vec<String> = labels(&SimConfig::new(SimProfile::Scenarios))
            .into_iter()
            .map(|l| l.scenario)
            .collect();
        assert_eq!(old.len(), 13);
        for n in &old {
            assert!(names.contains(n.as_str()), "{n} is in hard too");
        }
        for (i, a) in w.labels.iter().enumerate() {
            assert_eq!(a.start % SLOT, 0);
            assert!(a.end <= cfg.end());
            for b in &w.labels[i + 1..] {
                let shared = a.devices.iter().any(|d| b.devices.contains(d));
                let overlap = a.start < b.end && b.start < a.end;
                if shared && overlap {
                    assert_eq!(
                        (a.scenario.as_str(), b.scenario.as_str()),
                        ("flash-sale", "flash-sale-flood"),
                        "only the flood in the sale overlaps another scenario"
                    );
                }
            }
        }
        let ramp = label(&w, "slow-ramp").1;
        assert_eq!(ramp.detect_from, Some(ramp.start + 5 * SLOT));
        assert_eq!(
            w.labels.iter().filter(|l| l.detect_from.is_some()).count(),
            1
        );
        let carpet = label(&w, "wide-carpet-bombing").1;
        assert_eq!(carpet.devices.len(), 8);
        let fleet = label(&w, "load-test-fleet").1;
        assert_eq!(fleet.allow_sources, [crate::scenario::LOAD_FLEET_CIDR]);
        // The campaign's three days are one botnet.
        let pools: BTreeSet<String> = ["campaign-day1", "campaign-day2", "campaign-day3"]
            .iter()
            .map(|n| {
                let tag = label(&w, n).0;
                let e = w.effects.iter().find(|e| e.tag == tag).unwrap();
                assert!(matches!(e.pool, Pool::Botnet(_)));
                format!("{:?}", e.pool)
            })
            .collect();
        assert_eq!(pools.len(), 1, "{pools:?}");
        // Labels of the hard profile read back, DetectFrom included.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.jsonl");
        write_labels(&p, &w.labels).unwrap();
        assert_eq!(read_labels(&p).unwrap(), w.labels);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches("DetectFrom").count(), 1);
    }

    #[test]
    fn residential_proxy_flood_is_half_returning_at_heavy_rates() {
        let w = world();
        let (_, l) = label(&w, "residential-proxy-flood");
        let dev = device(&w, &l.devices[0]);
        let win = window(&w, "residential-proxy-flood");
        assert_eq!(win.slots.len(), 6);
        let mut returning_rates = Vec::new();
        for (&t0, by_src) in &win.slots {
            let total: u64 = by_src.values().sum();
            let ret: u64 = by_src
                .iter()
                .filter(|(ip, _)| win.before.contains_key(ip))
                .map(|(_, c)| c)
                .sum();
            let share = ret as f64 / total as f64;
            assert!((0.45..=0.55).contains(&share), "returning share {share:.3}");
            assert_eq!(by_src.len(), 8_000, "distinct sources");
            let top = by_src.values().max().copied().unwrap();
            assert!((500..=700).contains(&top), "top source {top}");
            let x = total as f64 / w.expected(dev, t0);
            assert!((20.0..=28.0).contains(&x), "{x:.1}x the normal traffic");
            // Heavy-tailed: the top ten carry far less than half (no few-source surge), but
            // the heaviest send hundreds of times more than the median.
            let mut counts: Vec<u64> = by_src.values().copied().collect();
            counts.sort_unstable_by(|a, b| b.cmp(a));
            let top10: u64 = counts[..10].iter().sum();
            assert!((top10 as f64) < 0.2 * total as f64);
            assert!(counts[counts.len() / 2] * 100 <= top);
            for (ip, &c) in by_src {
                if let Some(&n) = win.before.get(ip) {
                    let usual = n as f64 / win.bins_before as f64;
                    returning_rates.push(c as f64 / usual);
                }
            }
        }
        // Returning addresses far above their own usual rate.
        returning_rates.sort_by(f64::total_cmp);
        let p10 = returning_rates[returning_rates.len() / 10];
        assert!(
            p10 >= 50.0,
            "90 % of returning proxies at >= {p10:.0}x their usual rate"
        );
    }

    #[test]
    fn flash_sale_flood_is_a_third_of_the_excess() {
        let w = world();
        let sale = window(&w, "flash-sale");
        let (flood_tag, flood) = label(&w, "flash-sale-flood");
        let dev = device(&w, &flood.devices[0]);
        // The flood's rows, by slot and source, over the same window.
        let mut flood_src: BTreeMap<Nanos, HashMap<Ip, u64>> = BTreeMap::new();
        each_slot(&w, dev, flood.end, |t0, rows| {
            for r in rows.iter().filter(|r| accepted(r) && r.tag == flood_tag) {
                *flood_src
                    .entry(t0)
                    .or_default()
                    .entry(r.remote_ip)
                    .or_default() += 1;
            }
        });
        assert_eq!(flood_src.len(), 6);
        assert_eq!(*flood_src.keys().next().unwrap(), flood.start);
        for (t0, by_src) in &sale.slots {
            let sale_conns: u64 = by_src.values().sum();
            let expected = w.expected(dev, *t0);
            let returning: u64 = by_src
                .iter()
                .filter(|(ip, _)| sale.before.contains_key(ip))
                .map(|(_, c)| c)
                .sum();
            assert!(returning as f64 >= 0.85 * sale_conns as f64);
            if *t0 >= sale.slots.keys().nth(2).copied().unwrap() {
                let x = sale_conns as f64 / expected;
                assert!(
                    (0.85..=1.15).contains(&x),
                    "the sale doubles traffic: +{x:.2}x"
                );
            }
            if let Some(f) = flood_src.get(t0) {
                let bots: u64 = f.values().sum();
                assert!(
                    f.keys().all(|ip| !sale.before.contains_key(ip)),
                    "new sources"
                );
                let share = bots as f64 / (bots + sale_conns) as f64;
                assert!(
                    (0.3..=0.4).contains(&share),
                    "new share of the excess {share:.3}"
                );
                assert!(f.values().all(|&c| (4..=6).contains(&c)), "bot-like rates");
            }
        }
    }

    #[test]
    fn campaign_returns_with_the_same_botnet_that_never_becomes_a_customer() {
        let w = world();
        let days = ["campaign-day1", "campaign-day2", "campaign-day3"];
        let (_, last) = label(&w, days[2]);
        let dev = device(&w, &last.devices[0]);
        let tags: Vec<u16> = days.iter().map(|d| label(&w, d).0).collect();
        let mut sources: Vec<HashSet<Ip>> = vec![HashSet::new(); 3];
        let mut normal: HashSet<Ip> = HashSet::new();
        each_slot(&w, dev, last.end, |_, rows| {
            for r in rows {
                match tags.iter().position(|&t| t == r.tag) {
                    Some(i) => {
                        sources[i].insert(r.remote_ip);
                    }
                    None => {
                        normal.insert(r.remote_ip);
                    }
                }
            }
        });
        assert!(sources[0].len() >= 2_900, "{}", sources[0].len());
        for s in &sources[1..] {
            let same = s.intersection(&sources[0]).count() as f64;
            assert!(
                same >= 0.95 * s.len() as f64,
                "the same addresses every day"
            );
        }
        let pop: HashSet<Ip> = w.devices[dev].population.iter().copied().collect();
        for s in &sources {
            assert!(s.is_disjoint(&normal), "a bot never sends normal traffic");
            assert!(s.is_disjoint(&pop), "nor belongs to the customers");
        }
    }

    #[test]
    fn long_pulse_wave_has_quiet_gaps_of_10_to_20_minutes() {
        let w = world();
        let win = window(&w, "long-pulse-wave");
        let on: Vec<Nanos> = win
            .slots
            .iter()
            .filter(|(_, s)| s.values().sum::<u64>() > 1_000)
            .map(|(&t, _)| t)
            .collect();
        assert_eq!(on.len(), 6, "six pulses");
        let gaps: Vec<i64> = on.windows(2).map(|p| (p[1] - p[0]) / SLOT - 1).collect();
        assert_eq!(gaps, [2, 3, 4, 2, 3], "quiet bins between pulses");
        let quiet = win.slots.values().filter(|s| s.is_empty()).count();
        assert_eq!(quiet, 14);
    }

    /// Attack connections per slot as a multiple of the device's normal traffic.
    fn excess_ratios(w: &World, name: &str) -> Vec<f64> {
        let (_, l) = label(w, name);
        let mut out = Vec::new();
        for d in &l.devices {
            let dev = device(w, d);
            let (tag, _) = label(w, name);
            each_slot(w, dev, l.end, |t0, rows| {
                if t0 >= l.start {
                    let n = rows.iter().filter(|r| accepted(r) && r.tag == tag).count();
                    out.push(n as f64 / w.expected(dev, t0));
                }
            });
        }
        out
    }

    #[test]
    fn low_and_slow_and_carpet_stay_under_the_one_device_thresholds() {
        let w = world();
        let slow = excess_ratios(&w, "low-and-slow-2x");
        assert_eq!(slow.len(), 12, "an hour");
        for x in &slow {
            // 1.8x in all: under the 2x one-bin test even for new sources.
            assert!((0.7..=0.9).contains(x), "+{x:.2}x");
        }
        let carpet = excess_ratios(&w, "wide-carpet-bombing");
        assert_eq!(carpet.len(), 8 * 8, "eight devices, 40 minutes");
        for x in &carpet {
            // 1.4x on each device: under the 1.5x of the fleet-wide test's current setting.
            assert!((0.3..=0.5).contains(x), "+{x:.2}x");
        }
    }

    #[test]
    fn slow_ramp_stands_at_5x_from_detect_from() {
        let w = world();
        let (_, l) = label(&w, "slow-ramp");
        let x = excess_ratios(&w, "slow-ramp");
        assert_eq!(x.len(), 18);
        assert!(x[0] < 1.0, "from (nearly) nothing: +{:.2}x", x[0]);
        assert!(x.windows(2).all(|p| p[1] > p[0]), "rising: {x:?}");
        let k = ((l.detect_from.unwrap() - l.start) / SLOT) as usize;
        assert!(1.0 + x[k - 1] < 5.0 && 1.0 + x[k] >= 5.0, "{x:?}");
        assert!(
            (13.0..=15.0).contains(&x[17]),
            "15x at the end: +{:.1}x",
            x[17]
        );
    }

    #[test]
    fn cold_start_attack_comes_minutes_after_the_first_event() {
        let w = world();
        let (tag, l) = label(&w, "cold-start-attack");
        let dev = device(&w, &l.devices[0]);
        let mut first: Option<Nanos> = None;
        let mut first_attack: Option<Nanos> = None;
        each_slot(&w, dev, l.start + SLOT, |_, rows| {
            for r in rows {
                first = first.min(Some(r.ts)).or(Some(r.ts));
                if r.tag == tag {
                    first_attack = first_attack.min(Some(r.ts)).or(Some(r.ts));
                }
            }
        });
        let (first, attack) = (first.unwrap(), first_attack.unwrap());
        assert!(attack - first <= 10 * NANOS_PER_MIN && attack > first);
        assert_eq!(w.devices[dev].appears, l.start - SLOT);
    }

    #[test]
    fn ipv6_flood_comes_from_v6_addresses_in_many_prefixes() {
        let w = world();
        let win = window(&w, "ipv6-flood");
        let all: HashSet<Ip> = win.slots.values().flat_map(|s| s.keys().copied()).collect();
        assert!(all.len() >= 2_900);
        assert!(all.iter().all(|ip| !ip.is_v4()));
        let prefixes: HashSet<Ip> = all.iter().map(|ip| ip.prefix()).collect();
        assert!(prefixes.len() as f64 >= 0.95 * all.len() as f64);
    }

    #[test]
    fn http_flood_is_on_port_80_and_benign_surges_have_their_sources() {
        let w = world();
        for (name, port, sources) in [
            ("http-flood", 80, 2_000..=2_500),
            ("load-test-fleet", 443, 300..=300),
            ("two-monitors", 443, 2..=2),
        ] {
            let (tag, l) = label(&w, name);
            let dev = device(&w, &l.devices[0]);
            let mut ports = BTreeSet::new();
            let mut src: HashMap<Ip, u64> = HashMap::new();
            each_slot(&w, dev, l.end, |_, rows| {
                for r in rows.iter().filter(|r| accepted(r) && r.tag == tag) {
                    ports.insert(r.local_port);
                    *src.entry(r.remote_ip).or_default() += 1;
                }
            });
            assert_eq!(ports, BTreeSet::from([Some(port)]), "{name}");
            assert!(
                sources.contains(&src.len()),
                "{name}: {} sources",
                src.len()
            );
            if name == "load-test-fleet" {
                let mut allow = floodwatch_core::AllowList::default();
                allow.add_cidr(&l.allow_sources[0]).unwrap();
                assert!(src.keys().all(|&ip| allow.contains(ip)));
            }
            if name == "two-monitors" {
                let bins = ((l.end - l.start) / SLOT) as f64;
                for &c in src.values() {
                    let per_bin = c as f64 / bins;
                    assert!((1_300.0..=1_700.0).contains(&per_bin), "{per_bin}");
                }
            }
        }
    }

    #[test]
    fn flash_crowd_brings_30_percent_new_customers() {
        let w = world();
        let win = window(&w, "flash-crowd-new-customers");
        let (mut new, mut all) = (0u64, 0u64);
        for s in win.slots.values() {
            for (ip, &c) in s {
                all += c;
                new += c * u64::from(!win.before.contains_key(ip));
            }
        }
        let share = new as f64 / all as f64;
        assert!((0.27..=0.33).contains(&share), "new customers {share:.3}");
        assert!(all > 3_000);
    }

    #[test]
    fn sensor_outage_leaves_two_hours_empty_then_normal_traffic() {
        let w = world();
        let (_, l) = label(&w, "sensor-outage");
        let dev = device(&w, &l.devices[0]);
        let mut per_slot: BTreeMap<Nanos, (usize, u64)> = BTreeMap::new();
        each_slot(&w, dev, l.end, |t0, rows| {
            let n = rows.iter().filter(|r| accepted(r)).count() as u64;
            per_slot.insert(t0, (rows.len(), n));
        });
        let gap_end = l.start + 2 * NANOS_PER_HOUR;
        assert!(per_slot[&(l.start - SLOT)].0 > 0);
        for (t0, &(rows, accepted)) in per_slot.range(l.start..l.end) {
            if *t0 < gap_end {
                assert_eq!(rows, 0, "no data at all during the outage");
            } else {
                let x = accepted as f64 / w.expected(dev, *t0);
                assert!((0.7..=1.3).contains(&x), "ordinary traffic after: {x:.2}x");
            }
        }
        assert_eq!(per_slot.range(l.start..gap_end).count(), 24);
    }

    #[test]
    fn syn_rollup_rows_stand_for_several_attempts() {
        let w = world();
        let (tag, l) = label(&w, "syn-flood-rollup");
        let dev = device(&w, &l.devices[0]);
        let mut rows_n = 0u64;
        let mut weights: BTreeMap<Nanos, u64> = BTreeMap::new();
        let mut rolled = 0u64;
        each_slot(&w, dev, l.end, |t0, rows| {
            for r in rows.iter().filter(|r| r.tag == tag) {
                rows_n += 1;
                let e = r.event(0);
                if r.action == ActionType::ConnectionFailedAggregatedReport {
                    rolled += 1;
                    assert!(matches!(r.extra, Extra::Aggregated { unique } if unique >= 5));
                    assert_eq!(r.local_port, Some(443), "inbound, to the service");
                }
                *weights.entry(t0).or_default() += u64::from(e.weight);
            }
        });
        assert!(rolled > 0);
        let total: u64 = weights.values().sum();
        assert!(total >= 5 * rows_n / 2, "{total} attempts in {rows_n} rows");
        for &w in weights.values() {
            assert!((5_000..=7_000).contains(&w), "{w} attempts per slot");
        }
        // The aggregator counts them by weight, as SYN + failed.
        let cfg = {
            let mut c = SimConfig::new(SimProfile::Hard);
            c.devices = dev + 1;
            c.hours = ((l.end - c.start) / NANOS_PER_HOUR) as u32 + 1;
            c
        };
        let (a, _) = aggregate(&cfg, || {
            Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
        });
        let id = a.devices.get(&l.devices[0]).unwrap();
        let bin = a.get(id, BinWidth::FIVE_MINUTES.index(l.start)).unwrap();
        let syn = bin.class(floodwatch_core::Class::Syn).count
            + bin.class(floodwatch_core::Class::Failed).count;
        assert!(syn >= weights[&l.start], "{syn} SYN/failed counted");
    }

    /// Written rows arrive out of order by up to 90 s, but they are the same rows.
    #[test]
    fn rows_arrive_out_of_order_by_at_most_90_seconds() {
        let mut cfg = SimConfig::new(SimProfile::Hard);
        cfg.devices = 4;
        cfg.hours = 2;
        cfg.scale = 0.3;
        let mut ordered = cfg.clone();
        ordered.disorder_secs = 0;
        let (s1, a) = bytes(&cfg, OutputFormat::Ndjson);
        let (s2, b) = bytes(&ordered, OutputFormat::Ndjson);
        assert_eq!(s1, s2);
        let times = |text: &[u8]| -> Vec<Nanos> {
            text.split(|&c| c == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_slice(l).unwrap();
                    parse_rfc3339(v["Timestamp"].as_str().unwrap().as_bytes()).unwrap()
                })
                .collect()
        };
        let lateness = |ts: &[Nanos]| {
            let mut newest = Nanos::MIN;
            let mut worst = 0;
            for &t in ts {
                newest = newest.max(t);
                worst = worst.max(newest - t);
            }
            worst
        };
        let (ta, tb) = (times(&a), times(&b));
        assert_eq!(lateness(&tb), 0, "in time order without disorder");
        let late = lateness(&ta);
        assert!(late <= 90 * NANOS_PER_SEC, "{late} ns late");
        assert!(late >= 45 * NANOS_PER_SEC, "really out of order: {late} ns");
        let inverted = ta.windows(2).filter(|p| p[1] < p[0]).count();
        assert!(inverted > ta.len() / 20, "{inverted} of {}", ta.len());
        let lines = |t: &[u8]| {
            let mut v: Vec<Vec<u8>> = t.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
            v.sort();
            v
        };
        assert!(lines(&a) == lines(&b), "the same rows");
    }
}
