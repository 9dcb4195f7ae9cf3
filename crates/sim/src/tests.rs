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
