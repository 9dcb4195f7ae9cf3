//! One row gives one result whatever path reads it: the fast scanner of `floodwatch-scan`
//! (with the production general parser as its fallback, as every reader runs it) against the
//! production general parser alone, [`floodwatch_ingest::json::parse_line`] and
//! [`floodwatch_ingest::record::to_event`] — not a test-only copy of either.
//!
//! The generators aim at the places where the two used to part: `uniqueEventsAggregated` 0
//! and huge, keys in another letter case (top-level and inside `AdditionalFields`), a bad
//! `LocalIP`, every action type (known, unknown, of other tables), aggregated reports, missing
//! and null columns, and rows split across read-chunk boundaries.
#![allow(clippy::unwrap_used)]

use floodwatch_core::{
    ActionType, Aggregates, Aggregator, BinWidth, ClassifyConfig, Diagnostics, Location,
};
use floodwatch_ingest::json::parse_line;
use floodwatch_ingest::record::to_event;
use floodwatch_scan::{Chunk, Fallback, Scanner, Worker, aggregate_lines};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn new_agg() -> Aggregator {
    Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
}

/// Every action type floodwatch knows, and a few it does not (a new network one, one of
/// another table, an empty one, one in the wrong case).
fn action() -> impl Strategy<Value = String> {
    let mut names: Vec<String> = ActionType::ALL
        .iter()
        .filter(|a| **a != ActionType::Other)
        .map(|a| a.as_str().to_owned())
        .collect();
    names.extend(
        [
            "InboundConnectionBlockedX",
            "ProcessCreated",
            "FirewallInboundConnectionBlocked",
            "inboundconnectionattempt",
            "",
        ]
        .map(String::from),
    );
    prop::sample::select(names)
}

/// A key spelled as Defender does, or (sometimes) in another letter case.
fn key(name: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(name.to_owned()),
        1 => Just(name.to_ascii_lowercase()),
        1 => Just(name.to_ascii_uppercase()),
    ]
}

fn ip() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| Value::from(format!("{a}.{b}.{c}.{d}"))),
        1 => Just(Value::from("2001:db8::5")),
        1 => Just(Value::from("2001:db8:0:0:0:0:0:7")),
        1 => Just(Value::from("10.0.0.999")),
        1 => Just(Value::from("01.2.3.4")),
        1 => Just(Value::from("")),
        1 => Just(Value::Null),
        1 => Just(Value::from(17)),
    ]
}

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u32..=65535).prop_map(Value::from),
        1 => (0u32..=65535).prop_map(|p| Value::from(p.to_string())),
        1 => Just(Value::from(70000)),
        1 => Just(Value::from("0443")),
        1 => Just(Value::from("https")),
        1 => Just(Value::Null),
        1 => Just(Value::from(44.5)),
    ]
}

/// A counter as Zeek or Defender writes it.
fn counter() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0u64..100_000).prop_map(Value::from),
        2 => (0u64..100_000).prop_map(|n| Value::from(n.to_string())),
        1 => Just(Value::from(0)),
        1 => Just(Value::from(u64::from(u32::MAX) + 5)),
        1 => Just(Value::from("-")),
        1 => Just(Value::from(-3)),
        1 => Just(Value::from(2.0)),
        1 => Just(Value::Null),
    ]
}

/// `AdditionalFields` members: the ones detection reads (in any case), and filler.
fn af_members() -> impl Strategy<Value = Vec<(String, Value)>> {
    let member = prop_oneof![
        (
            key("direction"),
            prop::sample::select(vec!["In", "Out", "in", "Inbound", "sideways"])
        )
            .prop_map(|(k, v)| (k, Value::from(v))),
        (key("uniqueEventsAggregated"), counter()),
        (
            key("Tcp Flags"),
            prop_oneof![
                counter(),
                (0u64..256).prop_map(Value::from),
                Just(Value::from(300))
            ]
        ),
        (key("orig_bytes"), counter()),
        (key("resp_bytes"), counter()),
        (key("orig_pkts"), counter()),
        (key("resp_pkts"), counter()),
        Just(("Packet Size".to_owned(), Value::from(60))),
        Just(("Source MAC".to_owned(), Value::from("00-15-5D-0A-1B-2C"))),
        Just(("host".to_owned(), Value::from("www.contoso.com"))),
    ];
    proptest::collection::vec(member, 0..6)
}

/// `AdditionalFields` in each of its forms.
fn additional_fields() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => Just(Value::Null),
        1 => Just(Value::from("")),
        1 => Just(Value::Array(vec![])),
        1 => Just(Value::from("[]")),
        1 => Just(Value::from("not json")),
        3 => af_members().prop_map(|m| Value::Object(m.into_iter().collect())),
        4 => af_members().prop_map(|m| {
            Value::from(Value::Object(m.into_iter().collect::<Map<_, _>>()).to_string())
        }),
    ]
}

fn timestamp() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (0u32..24, 0u32..60, 0u32..60, 0u32..10_000_000)
            .prop_map(|(h, m, s, f)| Value::from(format!("2025-12-22T{h:02}:{m:02}:{s:02}.{f:07}Z"))),
        1 => Just(Value::from("2025-12-22T10:00:00Z")),
        1 => Just(Value::from("2025-12-22T10:00:00+01:00")),
        1 => Just(Value::from("yesterday")),
        1 => Just(Value::from("")),
        1 => Just(Value::Null),
    ]
}

/// A value for a column, or `None` to leave the column out.
fn maybe<S: Strategy<Value = Value>>(s: S) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![8 => s.prop_map(Some), 1 => Just(None)]
}

/// One row as a JSON line: Defender's columns (in its order, or shuffled), some in another
/// case, some absent, plus filler columns.
fn row() -> impl Strategy<Value = String> {
    let cols = (
        (key("Timestamp"), maybe(timestamp())),
        (
            key("TimeGenerated"),
            prop_oneof![3 => Just(None), 1 => timestamp().prop_map(Some)],
        ),
        (
            key("DeviceName"),
            maybe(
                prop::sample::select(vec![
                    "web-01.contoso.com",
                    "db-01",
                    "WEB-01.contoso.com",
                    "",
                ])
                .prop_map(Value::from),
            ),
        ),
        (key("ActionType"), maybe(action().prop_map(Value::from))),
        (key("RemoteIP"), maybe(ip())),
        (key("RemotePort"), maybe(port())),
        (key("LocalIP"), maybe(ip())),
        (key("LocalPort"), maybe(port())),
        (
            key("Protocol"),
            maybe(
                prop::sample::select(vec!["Tcp", "Udp", "TcpV4", "Icmp", "Unknown", ""])
                    .prop_map(Value::from),
            ),
        ),
        (
            key("ReportId"),
            maybe(prop_oneof![
                (0i64..1_000_000).prop_map(Value::from),
                Just(Value::from("77")),
                Just(Value::from(-4))
            ]),
        ),
        (key("AdditionalFields"), maybe(additional_fields())),
    );
    (cols, any::<bool>(), any::<u64>()).prop_map(|(c, shuffle, seed)| {
        let mut members: Vec<(String, Value)> = Vec::new();
        let (a, b, d, e, f, g, h, i, j, k, l) = c;
        for (name, v) in [a, b, d, e, f, g, h, i, j, k, l] {
            if let Some(v) = v {
                members.push((name, v));
            }
        }
        members.push(("DeviceId".into(), Value::from("a1a1a1a1")));
        members.push(("InitiatingProcessFileName".into(), Value::from("w3wp.exe")));
        if shuffle {
            // A fixed permutation from the seed (proptest shrinks the seed, not the order).
            let n = members.len();
            for x in 0..n {
                let y = (seed.rotate_left(x as u32 * 7) as usize) % n;
                members.swap(x, y);
            }
        }
        // Written by hand: serde_json's map would sort and merge keys that differ only in case.
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

/// The production general parser over every line, one at a time, as if the scanner did not
/// exist.
fn general<L: AsRef<[u8]>>(lines: &[L]) -> (Aggregates, Diagnostics) {
    let mut agg = new_agg();
    let mut diag = Diagnostics::default();
    let mut offset = 0u64;
    for (i, l) in lines.iter().enumerate() {
        let l = l.as_ref();
        let loc = Location {
            source: "t".into(),
            line: Some(i as u64 + 1),
            offset: Some(offset),
        };
        parse_line(l, loc, &mut agg, &mut diag);
        offset += l.len() as u64 + 1;
    }
    (agg.finish(), diag)
}

/// The line driver as the readers run it: the scanner first, `parse_line` for what it declines.
fn fast<L: AsRef<[u8]>>(lines: &[L], workers: usize) -> (Aggregates, Diagnostics) {
    let data: Vec<u8> = lines
        .iter()
        .flat_map(|l| l.as_ref().iter().copied().chain([b'\n']))
        .collect();
    let mut ws: Vec<Worker> = (0..workers).map(|_| Worker::new(new_agg())).collect();
    let fallback: &Fallback = &parse_line;
    aggregate_lines(
        Chunk {
            data: &data,
            source: "t",
            first_line: 1,
            base_offset: 0,
        },
        &mut ws,
        usize::MAX,
        fallback,
    );
    let mut agg: Option<Aggregates> = None;
    let mut diag = Diagnostics::default();
    for w in ws {
        diag.merge(&w.diag);
        let a = w.agg.finish();
        match agg.as_mut() {
            Some(x) => x.merge(a),
            None => agg = Some(a),
        }
    }
    (agg.unwrap(), diag)
}

fn same_result(
    a: &(Aggregates, Diagnostics),
    b: &(Aggregates, Diagnostics),
) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.0.by_name(), b.0.by_name());
    prop_assert_eq!(a.0.stats, b.0.stats);
    prop_assert_eq!(&a.1.skipped, &b.1.skipped);
    prop_assert_eq!(a.1.records_read, b.1.records_read);
    prop_assert_eq!(&a.1.unknown_actions, &b.1.unknown_actions);
    prop_assert_eq!(&a.1.examples, &b.1.examples);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Row by row: whenever the scanner takes a row, the general parser makes the same event
    /// of it (same device name too).
    #[test]
    fn scanner_events_are_the_general_parsers(lines in proptest::collection::vec(row(), 1..12)) {
        let mut sc = Scanner::new();
        let mut fast_agg = new_agg();
        let mut slow_agg = new_agg();
        for l in &lines {
            let Some(ev) = sc.scan_row(l.as_bytes(), &mut fast_agg) else { continue };
            let m: Map<String, Value> = serde_json::from_str(l).unwrap();
            let slow = to_event(&m, &mut slow_agg);
            prop_assert!(slow.is_ok(), "scanner took a row the parser rejects: {} ({:?})", l, slow);
            let slow = slow.unwrap();
            prop_assert_eq!(fast_agg.devices.name(ev.device), slow_agg.devices.name(slow.device), "{}", l);
            prop_assert_eq!(Event { device: 0, ..ev }, Event { device: 0, ..slow }, "{}", l);
        }
    }

    /// Whole runs: the scanner with its fallback, on one thread, gives what the general parser
    /// gives alone — aggregates, skips by reason with their examples, unknown action types.
    #[test]
    fn fast_path_runs_equal_general_runs(lines in proptest::collection::vec(row(), 1..30)) {
        same_result(&fast(&lines, 1), &general(&lines))?;
    }
}

/// Bytes a column the scanner never reads may hold in a real export: broken UTF-8 (a stray
/// byte, a sequence cut short, an encoded surrogate), raw control characters (never valid in a
/// JSON string), and valid UTF-8 for contrast.
fn unread_value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b"w3wp.exe".to_vec(),
        b"caf\xc3\xa9.exe".to_vec(),
        b"\xf0\x9f\x98\x80svc".to_vec(),
        b"w3\xffwp.exe".to_vec(),
        b"w3wp\xc3".to_vec(),
        b"\xe2\x82.exe".to_vec(),
        b"\xed\xa0\x80".to_vec(),
        b"bell\x07".to_vec(),
        b"tab\there".to_vec(),
        b"cr\rhere".to_vec(),
        b"nul\x00".to_vec(),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(800))]

    /// Whatever bytes sit in a column the scanner skips, a row gives what the general parser
    /// alone makes of it: taken the same, or skipped for the same reason at the same place.
    /// With one worker and two, and for lines with CRLF ends (a `\r` there is no control
    /// character in a string).
    #[test]
    fn odd_bytes_in_unread_columns_give_the_general_parsers_result(
        rows in proptest::collection::vec((row(), unread_value(), any::<bool>()), 1..20),
        workers in 1usize..3,
    ) {
        let lines: Vec<Vec<u8>> = rows
            .iter()
            .map(|(r, odd, crlf)| {
                let at = r.find("w3wp.exe").unwrap();
                let mut l = r.as_bytes()[..at].to_vec();
                l.extend_from_slice(odd);
                l.extend_from_slice(&r.as_bytes()[at + "w3wp.exe".len()..]);
                if *crlf {
                    l.push(b'\r');
                }
                l
            })
            .collect();
        same_result(&fast(&lines, workers), &general(&lines))?;
    }
}

use floodwatch_core::Event;
