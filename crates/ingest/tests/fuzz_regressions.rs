//! Every input a fuzz target (`fuzz/`, run by `.ci/fuzz.sh`) ever crashed on, kept under
//! `testdata/fuzz/<target>/` and checked here with that target's own assertions, so a crash once
//! found stays fixed without the fuzzer.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use floodwatch_core::{
    Aggregator, BinWidth, ClassifyConfig, Diagnostics, Event, Location, SkipReason,
};
use floodwatch_ingest::json::parse_line;
use floodwatch_ingest::record::to_event;
use floodwatch_ingest::{IngestOptions, InputFormat, ingest, sniff};
use floodwatch_scan::Scanner;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/fuzz")
        .join(target);
    // A target that never crashed has no folder.
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

fn agg() -> Aggregator {
    Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
}

/// `fuzz_targets/line.rs`: the general parser accounts for the line, and a line the scanner
/// takes is a JSON object the parser makes the same event of.
fn line(data: &[u8]) {
    let mut a = agg();
    let mut diag = Diagnostics::default();
    let loc = Location {
        source: "fuzz".into(),
        line: Some(1),
        offset: Some(0),
    };
    parse_line(data, loc, &mut a, &mut diag);
    assert!(diag.records_read >= 1 || holds_no_record(data));
    let mut fast = agg();
    if let Some(ev) = Scanner::new().scan_row(data, &mut fast) {
        // Broken JSON or bytes that are not UTF-8 among the columns the scanner skips are
        // not its to find. Where the line is JSON, the event must be the parser's.
        let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data)
        else {
            return;
        };
        if repeats_a_key(data) {
            return;
        }
        let mut slow = agg();
        let e = to_event(&map, &mut slow).expect("the scanner took a row the parser rejects");
        assert_eq!(fast.devices.name(ev.device), slow.devices.name(e.device));
        assert_eq!(Event { device: 0, ..ev }, Event { device: 0, ..e });
    }
}

/// `fuzz_targets/readers.rs`: the first byte picks the format, the rest is the file.
fn readers(data: &[u8]) {
    const FORMATS: [InputFormat; 12] = [
        InputFormat::Auto,
        InputFormat::Ndjson,
        InputFormat::JsonArray,
        InputFormat::EventHubs,
        InputFormat::StorageExport,
        InputFormat::AdvancedHuntingApi,
        InputFormat::GraphHunting,
        InputFormat::LogAnalytics,
        InputFormat::DefenderCsv,
        InputFormat::SentinelCsv,
        InputFormat::Auto,
        InputFormat::ODataList,
    ];
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("input");
    std::fs::File::create(&p).unwrap().write_all(body).unwrap();
    let opts = IngestOptions {
        format: FORMATS[pick as usize % FORMATS.len()],
        threads: 1 + (pick as usize / 16) % 2,
        max_line_bytes: 4096,
        ..IngestOptions::default()
    };
    let out = ingest(&[p], &opts, &agg).expect("only I/O errors stop ingest");
    let used = out.aggregates.stats.events + out.aggregates.stats.duplicates;
    assert!(used <= out.diagnostics.records_read);
}

#[test]
fn every_kept_crash_input_passes_its_targets_checks() {
    let mut n = 0;
    for (p, data) in inputs("line") {
        println!("line: {}", p.display());
        line(&data);
        n += 1;
    }
    for (p, data) in inputs("readers") {
        println!("readers: {}", p.display());
        readers(&data);
        n += 1;
    }
    for (p, data) in inputs("sniff") {
        println!("sniff: {}", p.display());
        assert_ne!(sniff(&data), InputFormat::Auto);
        n += 1;
    }
    assert!(n >= 4, "the kept inputs are found: {n}");
}

/// The first crash: a row with invalid UTF-8 in a key the scanner never reads
/// (`"Proto\x9d\x97l"`). The scanner alone reads the columns it needs and would use the row;
/// the full parser, which reads every byte, skips it as not UTF-8. The readers send a line or a
/// document row with a byte outside ASCII that is not valid UTF-8 to the full parser, so the row
/// is skipped alike, for the same reason, read as an NDJSON line and as an element of a JSON array.
#[test]
fn a_row_with_a_stray_byte_in_an_unread_key_is_skipped_alike_on_every_path() {
    let (_, data) = inputs("line")
        .into_iter()
        .find(|(p, _)| p.ends_with("non-utf8-in-an-unread-key"))
        .unwrap();
    assert!(std::str::from_utf8(&data).is_err());
    assert!(Scanner::new().scan_row(&data, &mut agg()).is_some());
    let dir = tempfile::tempdir().unwrap();
    let nd = dir.path().join("row.json");
    std::fs::write(&nd, [&data[..], b"\n"].concat()).unwrap();
    let arr = dir.path().join("rows.json");
    std::fs::write(&arr, [b"[", &data[..], b"]"].concat()).unwrap();
    let read =
        |p: &PathBuf| ingest(std::slice::from_ref(p), &IngestOptions::default(), &agg).unwrap();
    let (a, b) = (read(&nd), read(&arr));
    assert_eq!(a.aggregates.stats.events, 0);
    assert_eq!(b.aggregates.stats.events, 0);
    assert_eq!(a.diagnostics.total_skipped(), 1);
    assert_eq!(a.diagnostics.skipped, b.diagnostics.skipped);
    assert_eq!(a.diagnostics.count(SkipReason::Binary), 1);
}

/// Whether the JSON object `data` holds a key twice (in any case): which copy wins is outside
/// the scanner's contract (the parser keeps the last, the scanner the first it finds).
fn repeats_a_key(data: &[u8]) -> bool {
    struct Keys(bool);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Keys, A::Error> {
                    let mut seen = std::collections::BTreeSet::new();
                    let mut twice = false;
                    while let Some(k) = m.next_key::<String>()? {
                        m.next_value::<serde::de::IgnoredAny>()?;
                        twice |= !seen.insert(k.to_ascii_lowercase());
                    }
                    Ok(Keys(twice))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Keys>(data).map_or(true, |k| k.0)
}

/// Whether a line holds no record at all, so that reading none is right: blank, or JSON whose
/// row arrays (the line itself, `records`, `results`, `tables`) are all empty.
fn holds_no_record(data: &[u8]) -> bool {
    fn empty(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Array(items) => items.iter().all(empty),
            serde_json::Value::Object(m) => {
                let rows: Vec<&serde_json::Value> = m
                    .iter()
                    .filter(|(k, _)| {
                        ["records", "results", "tables"]
                            .iter()
                            .any(|r| k.eq_ignore_ascii_case(r))
                    })
                    .map(|(_, v)| v)
                    .collect();
                !rows.is_empty()
                    && rows
                        .iter()
                        .all(|v| v.as_array().is_some_and(|a| a.iter().all(empty)))
            }
            _ => false,
        }
    }
    data.iter().all(|c| c.is_ascii_whitespace())
        || serde_json::from_slice::<serde_json::Value>(data).is_ok_and(|v| empty(&v))
}
