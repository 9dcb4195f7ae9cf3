//! One line of line-oriented JSON through the fast scanner and the general parser: no panic,
//! every line accounted for, and a row the scanner takes is the event the parser makes of it.
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
    assert!(diag.records_read >= 1 || data.iter().all(|c| c.is_ascii_whitespace()));

    let mut fast_agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
    if let Some(ev) = Scanner::new().scan_row(data, &mut fast_agg) {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(data)
            .expect("the scanner took a line that is not a JSON object");
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
