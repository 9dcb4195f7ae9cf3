//! Times `ingest` over the given inputs: `cargo run --release -p floodwatch-ingest --example
//! ingest_bench -- [--threads N] [--format NAME] PATH...` (`-` reads stdin). Prints events,
//! skips, bytes and throughput, so a claim about ingest speed can name its measurement.

use std::path::PathBuf;
use std::time::Instant;

use floodwatch_core::{Aggregator, BinWidth, ClassifyConfig};
use floodwatch_ingest::{IngestOptions, ingest};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = IngestOptions {
        progress: true,
        ..IngestOptions::default()
    };
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => opts.threads = args.next().ok_or("--threads needs a value")?.parse()?,
            "--format" => opts.format = args.next().ok_or("--format needs a value")?.parse()?,
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let make = || Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
    let t = Instant::now();
    let out = ingest(&paths, &opts, &make)?;
    let secs = t.elapsed().as_secs_f64();
    let d = &out.diagnostics;
    println!(
        "{} events ({} duplicates), {} records read, {} skipped, {:.1} MB in {:.2} s: {:.0} MB/s, {:.2} M records/s ({} threads)",
        out.aggregates.stats.events,
        out.aggregates.stats.duplicates,
        d.records_read,
        d.total_skipped(),
        d.bytes_read as f64 / 1e6,
        secs,
        d.bytes_read as f64 / 1e6 / secs,
        d.records_read as f64 / 1e6 / secs,
        opts.threads
    );
    if let Some((source, format)) = out.formats.iter().next() {
        eprintln!("  {source}: {format} ({} inputs)", out.formats.len());
    }
    Ok(())
}
