//! The simulator's two paths agree: generate -> write a file in any format (plain, gzip, zstd)
//! -> `floodwatch_ingest::ingest` gives the same aggregates as the in-memory path. This pins
//! the simulator's text to what the readers understand, and the readers' field mapping to the
//! simulator's typed records.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use floodwatch_core::{Aggregator, BinAgg, BinWidth, ClassifyConfig, SkipReason};
use floodwatch_ingest::{IngestOptions, ingest};
use floodwatch_sim::{OutputFormat, SimConfig, SimProfile, aggregate, write_dataset};

fn make() -> Aggregator {
    Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
}

/// Four hours of every kind of row, including the https flood of the bench profile.
fn cfg() -> SimConfig {
    let mut c = SimConfig::new(SimProfile::Bench);
    c.hours = 4;
    c.scale = 0.03;
    c.devices = 6;
    c.batch = 37;
    c
}

/// Everything but the top-talker summary must be identical. Space-Saving (`TopSources`) keeps
/// a bounded summary whose exact counts depend on arrival order (the readers split a file
/// across threads; the in-memory path goes device by device), so for it only the heaviest
/// source's count is compared, within the summary's overestimate bound.
fn same_bin(f: OutputFormat, k: &(String, i64), got: &BinAgg, want: &BinAgg) {
    let ctx = format!("{f}: bin {k:?}");
    assert_eq!(got.rows, want.rows, "{ctx}: rows");
    assert_eq!(got.classes, want.classes, "{ctx}: classes");
    assert_eq!(got.seed, want.seed, "{ctx}: seed");
    assert_eq!(got.sources, want.sources, "{ctx}: sources");
    assert_eq!(got.prefixes, want.prefixes, "{ctx}: prefixes");
    assert_eq!(got.allowed, want.allowed, "{ctx}: allowed");
    match (got.top.top(1).first(), want.top.top(1).first()) {
        (Some(&(_, gc, gerr)), Some(&(_, wc, werr))) => {
            let (g_lo, w_lo) = (gc - gerr, wc - werr);
            assert!(
                g_lo <= wc && w_lo <= gc,
                "{ctx}: heaviest source {gc}-{gerr} vs {wc}-{werr}"
            );
        }
        (g, w) => assert_eq!(g.is_some(), w.is_some(), "{ctx}: top sources"),
    }
}

#[test]
fn every_format_reads_back_to_the_in_memory_aggregates() {
    let cfg = cfg();
    let (mem, labels) = aggregate(&cfg, make);
    assert_eq!(labels.len(), 1);
    assert!(mem.stats.events > 5_000, "{} events", mem.stats.events);
    let dir = tempfile::tempdir().unwrap();
    let expect = mem.by_name();
    for (i, f) in OutputFormat::ALL.into_iter().enumerate() {
        // Compress some of them, by extension, as a user would.
        let ext = ["", ".gz", ".zst"][i % 3];
        let path: PathBuf = dir.path().join(format!("data-{f}{ext}"));
        let s = write_dataset(&cfg, f, &path, None).unwrap();
        assert_eq!(s.records, mem.stats.events);
        let out = ingest(
            std::slice::from_ref(&path),
            &IngestOptions::default(),
            &make,
        )
        .unwrap();
        let d = &out.diagnostics;
        assert_eq!(d.errors(), 0, "{f}: {:?}", d.examples.first());
        assert_eq!(d.count(SkipReason::OtherTable), s.other_records, "{f}");
        let read = out.formats.values().next().copied();
        assert_eq!(
            read.map(|r| r.to_string()),
            Some(f.as_str().to_owned()),
            "{f}: sniffed as"
        );
        assert_eq!(out.aggregates.stats.events, mem.stats.events, "{f}");
        assert_eq!(out.aggregates.stats.duplicates, 0, "{f}");
        let got = out.aggregates.by_name();
        assert_eq!(got.len(), expect.len(), "{f}: bins");
        for (k, v) in &expect {
            let g = got
                .get(k)
                .unwrap_or_else(|| panic!("{f}: bin {k:?} missing"));
            same_bin(f, k, g, v);
        }
    }
}

/// The `hard` profile's text: rows out of arrival order by up to 90 s, and SYN-flood
/// roll-ups (`ConnectionFailedAggregatedReport`) standing for several attempts, read back to
/// the in-memory aggregates. api01 over the day of its roll-up flood, scaled down.
#[test]
fn disordered_rows_and_rollups_read_back_to_the_in_memory_aggregates() {
    let mut cfg = SimConfig::new(SimProfile::Hard);
    cfg.devices = 5;
    cfg.hours = 65;
    cfg.scale = 0.03;
    let (mem, labels) = aggregate(&cfg, make);
    let rollup = labels
        .iter()
        .find(|l| l.scenario == "syn-flood-rollup")
        .expect("the roll-up flood fits 65 hours");
    let dir = tempfile::tempdir().unwrap();
    let expect = mem.by_name();
    for (f, ext) in [
        (OutputFormat::Ndjson, ""),
        (OutputFormat::EventHubs, ".zst"),
        (OutputFormat::SentinelCsv, ".gz"),
    ] {
        let path: PathBuf = dir.path().join(format!("hard-{f}{ext}"));
        let s = write_dataset(&cfg, f, &path, None).unwrap();
        assert_eq!(s.records, mem.stats.events);
        let out = ingest(
            std::slice::from_ref(&path),
            &IngestOptions::default(),
            &make,
        )
        .unwrap();
        assert_eq!(out.diagnostics.errors(), 0, "{f}");
        assert_eq!(out.aggregates.stats.events, mem.stats.events, "{f}");
        let got = out.aggregates.by_name();
        assert_eq!(got.len(), expect.len(), "{f}: bins");
        for (k, v) in &expect {
            same_bin(f, k, got[k], v);
        }
        // The roll-ups weigh: the flood's first bin counts more SYN/failed attempts than rows.
        let w = BinWidth::FIVE_MINUTES;
        let b = &got[&(rollup.devices[0].clone(), w.index(rollup.start))];
        let syn = b.class(floodwatch_core::Class::Syn);
        let failed = b.class(floodwatch_core::Class::Failed);
        assert!(
            failed.count > 3 * syn.count,
            "{f}: {} failed (weighted) vs {} attempts",
            failed.count,
            syn.count
        );
    }
}
