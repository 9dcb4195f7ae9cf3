//! Times `ingest` over the given inputs: `cargo run --release -p floodwatch-ingest --example
//! ingest_bench -- [--threads N] [--format NAME] PATH...` (`-` reads stdin). Prints events,
//! skips, bytes and throughput, so a claim about ingest speed can name its measurement.
//!
//! Measured on a 2-core AMD EPYC VM, release build, `--threads 2`, best of 3, page cache
//! warm, 600,000 rows written by `examples/gen_big.py`:
//!
//! | input | MB | MB/s | M records/s |
//! |---|---|---|---|
//! | NDJSON (mapped, scanner fast path) | 264 | 948 | 2.15 |
//! | NDJSON, gzip -1 | 264 | 533 | 1.21 |
//! | Storage export envelopes, CRLF | 351 | 526 | 0.90 |
//! | Event Hubs, 50 records a line | 326 | 370 | 0.68 |
//! | JSON array (mapped) | 265 | 260 | 0.59 |
//! | JSON array, gzip, over the 128 MiB in-memory limit (streamed; before the document splitter) | 265 | 54 | 0.12 |
//!
//! Since JSON documents go through the document splitter (`floodwatch_scan::DocSplitter`), a
//! gzip JSON array or Advanced Hunting response reads at 0.97 / 0.93 of the same rows as gzip
//! NDJSON (`bash bench/compressed-docs.sh 300000 7`, median of the per-round ratios, on a busy
//! 2-core AMD EPYC host: 0.66 / 0.68 against 0.72 M records/s).
//! | Defender CSV | 121 | 167 | 0.83 |

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
