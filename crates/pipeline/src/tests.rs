//! The live path against the batch path, and its own parts: partials merge into the bins a
//! batch run builds, a projection scales counts and not sources, an engine resumed from its
//! snapshot goes on as if never stopped, early decisions are fast on floods and quiet on noise.

use std::path::Path;

use floodwatch_core::time::{NANOS_PER_MIN, NANOS_PER_SEC, Nanos};
use floodwatch_core::{
    ActionType, Aggregator, AllowList, BinAgg, BinWidth, ClassifyConfig, Direction, Event, Ip,
    PortSet, Protocol,
};
use floodwatch_detect::floodwatch::FloodwatchConfig;
use floodwatch_ingest::IngestOptions;
use floodwatch_sim::{OutputFormat, SimConfig, SimProfile, write_dataset};

use crate::live::{Emit, Engine, LiveConfig, Partial, Stage};
use crate::reader::{LineReader, Origin};
use crate::settings::{Query, Rule, Settings};

const T0: Nanos = 1_766_361_600 * NANOS_PER_SEC;

fn settings() -> Settings {
    let mut allow = AllowList::default();
    allow.add_cidr("10.250.0.0/24").unwrap();
    Settings {
        rule: Rule::Floodwatch,
        width: BinWidth::FIVE_MINUTES,
        classify: ClassifyConfig {
            seed_ports: PortSet::new(&[443]),
            web_ports: PortSet::new(&[80, 443, 8080, 8443]),
            allow,
        },
        ingest: IngestOptions {
            threads: 1,
            lateness: Some(3600 * NANOS_PER_SEC),
            ..IngestOptions::default()
        },
        dedup: 3600 * NANOS_PER_SEC,
        seed: floodwatch_detect::seed::SeedConfig::default()
            .validate(BinWidth::FIVE_MINUTES)
            .unwrap(),
        floodwatch: FloodwatchConfig::default(),
    }
}

fn step() -> BinWidth {
    BinWidth::from_secs(10).unwrap()
}

fn inbound(a: &mut Aggregator, device: &str, ts: Nanos, src: [u8; 4], rid: i64) -> Event {
    Event {
        ts,
        device: a.device(device),
        action: ActionType::InboundConnectionAccepted,
        protocol: Protocol::Tcp,
        direction: Direction::In,
        remote_ip: Some(Ip::v4(src)),
        remote_port: Some(50_000),
        local_port: Some(443),
        report_id: rid,
        weight: 1,
        bytes: None,
        packets: None,
        tcp_flags: None,
    }
}

/// Merges sub-window aggregates into per-device bins, as the live engine does.
fn merge_into_bins(
    bins: &mut std::collections::BTreeMap<(String, i64), BinAgg>,
    p: &floodwatch_core::Aggregates,
    width: BinWidth,
) {
    for (k, agg) in &p.bins {
        let bin = width.index(p.width.start(k.bin));
        bins.entry((p.devices.name(k.device).to_owned(), bin))
            .or_default()
            .merge(agg);
    }
}

/// Splitting the events into sub-window partials, in any batches, and merging them per bin
/// gives the bins one aggregator builds (the top-talker summary is exact here: fewer sources
/// than its counters).
#[test]
fn partials_merge_into_the_bins_a_batch_run_builds() {
    let s = settings();
    let mut whole = s.aggregator(s.width);
    let mut parts = s.aggregator(step());
    let mut engine_like: std::collections::BTreeMap<(String, i64), BinAgg> = Default::default();
    let mut seed = 7u64;
    let mut rnd = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    for i in 0..20_000i64 {
        let dev = if rnd() % 3 == 0 { "b" } else { "a" };
        let ts = T0 + (i * 97 + (rnd() % 1000) as i64) * NANOS_PER_SEC / 10;
        let src = [20, 1, (rnd() % 3) as u8, (rnd() % 8) as u8];
        let e = inbound(&mut whole, dev, ts, src, i);
        whole.add(&e);
        let e = inbound(&mut parts, dev, ts, src, i);
        parts.add(&e);
        if rnd() % 500 == 0 {
            merge_into_bins(&mut engine_like, &parts.take_all(), s.width);
        }
    }
    merge_into_bins(&mut engine_like, &parts.take_all(), s.width);
    let whole = whole.finish();
    let want = whole.by_name();
    assert_eq!(want.len(), engine_like.len());
    for (k, w) in want {
        let g = &engine_like[&k];
        assert_eq!(g.rows, w.rows, "{k:?}");
        assert_eq!(g.classes, w.classes, "{k:?}");
        assert_eq!(g.sources, w.sources, "{k:?}");
        assert_eq!(g.prefixes, w.prefixes, "{k:?}");
        assert_eq!(g.top, w.top, "{k:?}");
    }
}

#[test]
fn a_projection_scales_counts_not_sources() {
    let s = settings();
    let mut a = s.aggregator(s.width);
    for i in 0..300 {
        let e = inbound(
            &mut a,
            "d",
            T0 + i * NANOS_PER_SEC / 10,
            [20, 1, 2, (i % 30) as u8],
            i,
        );
        a.add(&e);
    }
    let aggs = a.finish();
    let b = aggs.bins.values().next().unwrap();
    let p = b.projected(10.0);
    assert_eq!(p.rows, b.rows * 10);
    assert_eq!(p.inbound(), b.inbound() * 10);
    assert_eq!(
        p.sources.distinct(),
        b.sources.distinct(),
        "the same sources"
    );
    let (t, tp) = (b.top.top(1)[0], p.top.top(1)[0]);
    assert_eq!(
        (tp.0, tp.1),
        (t.0, t.1 * 10),
        "each source at ten times its rate"
    );
}

/// A small simulated dataset (a flood at 2025-12-23T10:00 on web01) as NDJSON.
fn sim(dir: &Path) -> std::path::PathBuf {
    let mut c = SimConfig::new(SimProfile::Scenarios);
    c.seed = 3;
    c.devices = 3;
    c.hours = 40;
    c.scale = 0.2;
    let p = dir.join("sim.ndjson");
    write_dataset(&c, OutputFormat::Ndjson, &p, None).unwrap();
    p
}

/// Feeds `data` (lines) to `engine` in batches of `n` lines.
fn feed(engine: &mut Engine, reader: &mut LineReader, data: &[u8], n: usize) -> Vec<Emit> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut line = 1;
    while start < data.len() {
        let mut end = start;
        for _ in 0..n {
            match memchr_at(data, end) {
                Some(i) => end = i + 1,
                None => {
                    end = data.len();
                    break;
                }
            }
        }
        let (p, _) = reader.read(
            &data[start..end],
            Origin {
                source: "test",
                first_line: line,
                base_offset: start as u64,
            },
        );
        line += data[start..end].iter().filter(|&&c| c == b'\n').count() as u64;
        out.extend(engine.apply(p));
        start = end;
    }
    out
}

fn memchr_at(d: &[u8], from: usize) -> Option<usize> {
    d[from..].iter().position(|&c| c == b'\n').map(|i| from + i)
}

fn bin_alerts(emits: &[Emit]) -> Vec<floodwatch_detect::Alert> {
    emits
        .iter()
        .filter_map(|e| match e {
            Emit::Alert(a) if a.stage == Stage::Bin => Some(a.alert.clone()),
            _ => None,
        })
        .collect()
}

/// The same bins scored by the same detector: the live engine's bin alerts are the batch
/// run's (incident ids aside, which the batch run gives at the end).
#[test]
fn the_live_engine_scores_what_the_batch_run_scores() {
    let dir = tempfile::tempdir().unwrap();
    let path = sim(dir.path());
    let s = settings();
    let batch = crate::batch::read_detect(
        std::slice::from_ref(&path),
        &s,
        &Query::default(),
        &mut |_| {},
        None,
    )
    .unwrap()
    .outcome(&s, &Query::default());
    let data = std::fs::read(&path).unwrap();
    let mut engine = Engine::new(LiveConfig::new(s.width), s.floodwatch.clone());
    let mut reader = LineReader::new(&s, step());
    let mut emits = feed(&mut engine, &mut reader, &data, 700);
    emits.extend(engine.finish_input());
    let strip = |mut a: floodwatch_detect::Alert| {
        a.incident_id = None;
        a.top_sources.clear();
        a.reasons.retain(|r| !r.starts_with("top source"));
        a
    };
    let live: Vec<_> = bin_alerts(&emits).into_iter().map(strip).collect();
    let want: Vec<_> = batch.alerts.into_iter().map(strip).collect();
    assert!(!want.is_empty());
    assert_eq!(live.len(), want.len());
    for (l, w) in live.iter().zip(&want) {
        assert_eq!(l, w);
    }
    // The flood was decided early, and the early decision was confirmed.
    let early: Vec<_> = emits
        .iter()
        .filter_map(|e| match e {
            Emit::Alert(a) if a.stage == Stage::Early => Some(a),
            _ => None,
        })
        .collect();
    assert!(!early.is_empty());
    assert_eq!(engine.counters().early_unconfirmed, 0);
    let first = early.iter().map(|a| a.detected_at).min().unwrap();
    let onset = T0 + 34 * 60 * NANOS_PER_MIN;
    assert!(
        first - onset <= 60 * NANOS_PER_SEC,
        "first early decision {} s after onset",
        (first - onset) / NANOS_PER_SEC
    );
}

/// Stopped anywhere, saved, loaded and resumed: what follows is what an engine that never
/// stopped emits.
#[test]
fn an_engine_resumed_from_its_snapshot_goes_on_as_if_never_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::read(sim(dir.path())).unwrap();
    let s = settings();
    let cut = {
        // Mid-flood: the first line at or after 10:20 on the second day.
        let needle = b"2025-12-23T10:20";
        let at = data
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        data[..at].iter().rposition(|&c| c == b'\n').unwrap() + 1
    };
    let mut whole = Engine::new(LiveConfig::new(s.width), s.floodwatch.clone());
    let mut r1 = LineReader::new(&s, step());
    let mut want = feed(&mut whole, &mut r1, &data[..cut], 500);
    let want_tail = feed(&mut whole, &mut r1, &data[cut..], 500);
    want.extend(want_tail.iter().cloned());

    let mut first = Engine::new(LiveConfig::new(s.width), s.floodwatch.clone());
    let mut r2 = LineReader::new(&s, step());
    let _ = feed(&mut first, &mut r2, &data[..cut], 500);
    let saved = serde_json::to_string(&first.snapshot()).unwrap();
    drop(first);
    let mut resumed = Engine::resume(
        LiveConfig::new(s.width),
        s.floodwatch.clone(),
        serde_json::from_str(&saved).unwrap(),
    );
    let got_tail = feed(&mut resumed, &mut r2, &data[cut..], 500);
    assert!(!want_tail.is_empty());
    assert_eq!(got_tail, want_tail);
    assert_eq!(resumed.snapshot(), whole.snapshot());
}

/// A quiet device's bursts do not extrapolate into a flood; a flood well above its baseline
/// (here 7x) is decided within 15 s of its first events.
#[test]
fn early_decisions_are_fast_on_floods_and_quiet_on_noise() {
    let s = settings();
    let mut engine = Engine::new(LiveConfig::new(s.width), s.floodwatch.clone());
    let mut agg = s.aggregator(step());
    let mut rid = 0;
    let mut emits = Vec::new();
    let mut seed = 11u64;
    let mut rnd = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    // Six hours at ~600 connections a bin from a few hundred returning sources, with bursts of
    // 20 connections from one client now and then; then a flood at 7x, mostly new sources.
    let onset = T0 + 6 * 3600 * NANOS_PER_SEC;
    let mut t = T0;
    while t < onset + 5 * NANOS_PER_MIN {
        let flood = t >= onset;
        let per_sec = if flood { 7 } else { 1 };
        for k in 0..per_sec {
            rid += 1;
            let src = if flood && k > 0 {
                [30, (rid >> 16) as u8, (rid >> 8) as u8, rid as u8]
            } else {
                [20, 1, (rnd() % 2) as u8, (rnd() % 200) as u8]
            };
            let e = inbound(&mut agg, "web", t + k * NANOS_PER_SEC / 8, src, rid);
            agg.add(&e);
        }
        if !flood && rnd() % 600 == 0 {
            for _ in 0..20 {
                rid += 1;
                let e = inbound(&mut agg, "web", t, [20, 1, 0, 7], rid);
                agg.add(&e);
            }
        }
        t += NANOS_PER_SEC / 2;
        if (t - T0) % (5 * NANOS_PER_SEC) == 0 {
            emits.extend(engine.apply(Partial {
                source: "t".into(),
                aggs: agg.take_all(),
            }));
        }
    }
    let early: Vec<_> = emits
        .iter()
        .filter_map(|e| match e {
            Emit::Alert(a) if a.stage == Stage::Early => Some(a),
            _ => None,
        })
        .collect();
    assert!(
        early.iter().all(|a| a.detected_at >= onset),
        "early alert on ordinary traffic: {:?}",
        early.first().map(|a| (a.detected_at - T0) / NANOS_PER_SEC)
    );
    let first = early.first().expect("the flood is decided early");
    assert!(
        first.detected_at - onset <= 15 * NANOS_PER_SEC,
        "{} s after onset",
        (first.detected_at - onset) / NANOS_PER_SEC
    );
    assert!(first.alert.reasons[0].starts_with("early decision"));
    assert!(
        first.alert.request_count < 1000,
        "counts as seen, not projected"
    );
}

/// One input far ahead of another (a backlog read partition by partition): the one behind is
/// not late; once it is idle, it no longer holds bins open.
#[test]
fn the_watermark_follows_the_slowest_input_that_is_not_idle() {
    let s = settings();
    let mut engine = Engine::new(LiveConfig::new(s.width), s.floodwatch.clone());
    let part = |src: &str, minute: i64, n: i64| {
        let mut a = s.aggregator(step());
        for i in 0..n {
            let e = inbound(
                &mut a,
                "d",
                T0 + minute * NANOS_PER_MIN + i,
                [20, 1, 1, 1],
                minute * 1000 + i,
            );
            a.add(&e);
        }
        Partial {
            source: src.into(),
            aggs: a.take_all(),
        }
    };
    engine.apply(part("a", 0, 10));
    engine.apply(part("b", 0, 10));
    engine.apply(part("a", 600, 10));
    assert_eq!(engine.counters().bins_sealed, 0, "b holds the bins open");
    engine.apply(part("b", 30, 10));
    assert!(
        engine.counters().late.is_empty(),
        "{:?}",
        engine.counters().late
    );
    let e = engine.set_idle(["b".to_owned()].into_iter().collect());
    assert!(engine.counters().bins_sealed > 0, "{e:?}");
    engine.apply(part("b", 60, 10));
    assert_eq!(
        engine.counters().late.get("b"),
        Some(&10),
        "an idle input's old events are late"
    );
}
