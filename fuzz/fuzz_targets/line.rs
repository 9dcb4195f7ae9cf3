//! One line of line-oriented JSON through the fast scanner and the general parser: no panic,
//! every line accounted for, and a line the scanner takes that is JSON is the event the parser
//! makes of it.
#![no_main]

use floodwatch_core::{Aggregator, BinWidth, ClassifyConfig, Diagnostics, Event, Location};
use floodwatch_ingest::json::parse_line;
use floodwatch_ingest::record::to_event;
use floodwatch_scan::Scanner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
    let mut diag = Diagnostics::default();
    let loc = Location {
        source: "fuzz".into(),
        line: Some(1),
        offset: Some(0),
    };
    parse_line(data, loc, &mut agg, &mut diag);
    assert!(diag.records_read >= 1 || holds_no_record(data));

    let mut fast_agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
    if let Some(ev) = Scanner::new().scan_row(data, &mut fast_agg) {
        // The scanner reads the row's columns, not its every byte: broken JSON or bytes that
        // are not UTF-8 among the columns it skips are not its to find (checking every byte
        // costs the hot path 14 % more instructions a row). Where the line is JSON, the
        // event must be the parser's.
        let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data)
        else {
            return;
        };
        if repeats_a_key(data) {
            return;
        }
        let mut slow_agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
        let slow =
            to_event(&map, &mut slow_agg).expect("the scanner took a row the parser rejects");
        assert_eq!(
            fast_agg.devices.name(ev.device),
            slow_agg.devices.name(slow.device)
        );
        assert_eq!(Event { device: 0, ..ev }, Event { device: 0, ..slow });
    }
});

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
