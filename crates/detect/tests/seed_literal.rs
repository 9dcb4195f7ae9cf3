//! The seed query as written versus its intent, on the same events.
//!
//! `literal` below evaluates the Sentinel query's text with KQL semantics (after removing the
//! `sum(TotalBytes)` that stops it compiling): `RemotePort == 443`, `avg(1)`/`stdev(1)`, a
//! baseline summarized per bin but joined per device, `between` inclusive at both ends, and the
//! in-progress bin scored. The test shows that it answers a different question than
//! `floodwatch_detect::seed` on the same data: it flags the server's own outbound HTTPS, repeats
//! every row once per baseline bin, and misses the inbound flood the rule was written for.

use std::collections::{BTreeMap, BTreeSet};

use floodwatch_core::time::{NANOS_PER_MIN, NANOS_PER_SEC, Nanos};
use floodwatch_core::{ActionType, Aggregator, BinWidth, ClassifyConfig, Event, Ip, Protocol};
use floodwatch_detect::seed::{self, SeedConfig};

const T0: Nanos = 1_766_361_600 * NANOS_PER_SEC; // 2025-12-22T00:00:00Z
const BIN: Nanos = 5 * NANOS_PER_MIN;

/// One output row of the literal query: (bin, device, RequestCount, UniqueSourceIPs).
type Row = (Nanos, String, u64, u64);

fn literal(events: &[(String, Event)], now: Nanos) -> Vec<Row> {
    let bin = |t: Nanos| t.div_euclid(BIN) * BIN;
    let (b_from, b_to) = (now - 24 * 60 * NANOS_PER_MIN, now - 60 * NANOS_PER_MIN);
    // baseline: summarize AvgReq = avg(1), StdDevReq = stdev(1) by bin, DeviceName
    let mut baseline: BTreeMap<String, BTreeSet<Nanos>> = BTreeMap::new();
    for (d, e) in events {
        if e.ts >= b_from && e.ts <= b_to && e.remote_port == Some(443) {
            baseline.entry(d.clone()).or_default().insert(bin(e.ts));
        }
    }
    // current: summarize count(), dcount(RemoteIP) by bin, DeviceName
    let mut current: BTreeMap<(Nanos, String), (u64, BTreeSet<Ip>)> = BTreeMap::new();
    for (d, e) in events {
        if e.ts >= now - 60 * NANOS_PER_MIN && e.remote_port == Some(443) {
            let c = current.entry((bin(e.ts), d.clone())).or_default();
            c.0 += 1;
            if let Some(ip) = e.remote_ip {
                c.1.insert(ip);
            }
        }
    }
    let mut out = Vec::new();
    for ((b, d), (count, ips)) in current {
        let distinct = ips.len() as u64;
        // join kind=leftouter baseline on DeviceName: one row per baseline bin of the device.
        let matches = baseline.get(&d).map(|s| s.len()).unwrap_or(0);
        if matches == 0 {
            // AvgReq is null: the comparison is null, only the distinct test can pass.
            if distinct > 300 {
                out.push((b, d.clone(), count, distinct));
            }
            continue;
        }
        for _ in 0..matches {
            // avg(1) = 1 and stdev(1) = 0: the test is RequestCount > 1.
            if count as f64 > 1.0 + 0.0 * 5.0 || distinct > 300 {
                out.push((b, d.clone(), count, distinct));
            }
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.2));
    out
}

struct Data {
    events: Vec<(String, Event)>,
    rid: i64,
}

impl Data {
    fn push(&mut self, dev: &str, ts: Nanos, action: ActionType, local: u16, remote: u16, ip: Ip) {
        self.rid += 1;
        self.events.push((
            dev.to_owned(),
            Event {
                ts,
                device: 0,
                action,
                protocol: Protocol::Tcp,
                remote_ip: Some(ip),
                remote_port: Some(remote),
                local_port: Some(local),
                report_id: self.rid,
                weight: 1,
                ..Event::default()
            },
        ));
    }
}

#[test]
fn the_literal_query_answers_another_question() {
    let mut d = Data {
        events: Vec::new(),
        rid: 0,
    };
    let web = "web01.contoso.com";
    // A day of ordinary life: every 5 minutes, 20 customers connect in, and the server itself
    // makes 3 outbound HTTPS calls (updates, APIs) to the same 3 destinations.
    for b in 0..288 {
        let t = T0 + b * BIN;
        for c in 0..20u8 {
            d.push(
                web,
                t + c as i64 * NANOS_PER_SEC,
                ActionType::InboundConnectionAccepted,
                443,
                50_000 + c as u16,
                Ip::v4([203, 0, 113, c]),
            );
        }
        for k in 0..3u8 {
            d.push(
                web,
                t + 100 * NANOS_PER_SEC,
                ActionType::ConnectionSuccess,
                51_000,
                443,
                Ip::v4([13, 107, 4, k]),
            );
        }
    }
    // The attack: in the last complete bin (23:50), 3,000 connections from 1,500 new sources.
    let attack = T0 + 286 * BIN;
    for i in 0..3000u32 {
        let s = i % 1500;
        d.push(
            web,
            attack + (i as i64 % 290) * NANOS_PER_SEC,
            ActionType::InboundConnectionAccepted,
            443,
            40_000 + (i % 20_000) as u16,
            Ip::v4([45, (s >> 8) as u8, s as u8, 7]),
        );
    }
    let now = T0 + 287 * BIN; // the start of the newest bin, which the intent does not score

    // Intent, through the real aggregation path.
    let mut agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
    for (dev, e) in &d.events {
        let mut e = *e;
        e.device = agg.device(dev);
        agg.add(&e);
    }
    let aggs = agg.finish();
    let p = SeedConfig::default()
        .validate(BinWidth::FIVE_MINUTES)
        .unwrap();
    let intent = seed::run(&aggs, &p, Some(now));
    assert_eq!(intent.len(), 1, "only the attack bin: {intent:?}");
    assert_eq!(intent[0].time_generated, attack);
    assert_eq!(intent[0].request_count, 3020);
    // 1,520 distinct sources: above the sketch's exact range (1,024), so an estimate (~3 %).
    let est = intent[0].unique_source_ips as f64;
    assert!((est - 1520.0).abs() / 1520.0 < 0.1, "{est}");

    let lit = literal(&d.events, now);
    // It counts the server's own outbound calls (3 per bin, to 3 destinations), flags every bin
    // of the last hour because "> avg(1) + 5*stdev(1)" means "> 1", and repeats each row once per
    // baseline bin that saw outbound HTTPS (bins 0..=274: data starts at T0, and bin 275's calls
    // come 100 s after `now - 1h`).
    let attack_rows = lit.iter().filter(|r| r.0 == attack).count();
    assert_eq!(attack_rows, 275, "one row per matching baseline bin");
    assert!(
        lit.iter().all(|r| r.2 == 3 && r.3 == 3),
        "only outbound calls are counted"
    );
    assert_eq!(
        lit.len(),
        13 * 275,
        "12 complete bins plus the in-progress one, 275 times each"
    );
    // And the attack itself is invisible: its inbound connections have ephemeral RemotePorts.
    assert!(lit.iter().all(|r| r.2 < 3000));
}
