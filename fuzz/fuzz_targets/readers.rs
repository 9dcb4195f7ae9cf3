//! Every reader, and the decompression framing in front of them, on any bytes: the first byte
//! picks the format (sniffed, or forced to each of the shapes), the rest is the input, as a
//! file. No panic, no error but I/O, and every record read is used or skipped.
#![no_main]

use std::io::Write;

use floodwatch_core::{Aggregator, BinWidth, ClassifyConfig};
use floodwatch_ingest::{IngestOptions, InputFormat, ingest};
use libfuzzer_sys::fuzz_target;

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

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let format = FORMATS[pick as usize % FORMATS.len()];
    let mut f = tempfile_in_shm();
    f.1.write_all(body).expect("write");
    drop(f.1);
    let opts = IngestOptions {
        format,
        threads: 1 + (pick as usize / 16) % 2,
        max_line_bytes: 4096,
        ..IngestOptions::default()
    };
    let make = || Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
    let out =
        ingest(std::slice::from_ref(&f.0), &opts, &make).expect("only I/O errors stop ingest");
    let used = out.aggregates.stats.events + out.aggregates.stats.duplicates;
    assert!(
        used <= out.diagnostics.records_read,
        "{used} used of {} read",
        out.diagnostics.records_read
    );
    let _ = std::fs::remove_file(&f.0);
});

/// A fresh file in memory-backed /dev/shm when there is one (the fuzzer writes one per input).
fn tempfile_in_shm() -> (std::path::PathBuf, std::fs::File) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = dir.join(format!("floodwatch-fuzz-{}-{n}", std::process::id()));
    let f = std::fs::File::create(&p).expect("create");
    (p, f)
}
