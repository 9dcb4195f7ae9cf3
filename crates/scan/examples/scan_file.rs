//! Runs the fast path over an NDJSON file and reports speed and what it could not handle:
//! `cargo run --release -p floodwatch-scan --example scan_file -- FILE [THREADS] [seed|full|floodwatch]`.
//! Lines the scanner does not handle are only counted here (a real reader parses them fully).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use floodwatch_core::{Aggregates, Aggregator, BinWidth, ClassifyConfig, Profile};
use floodwatch_scan::{FileOptions, Worker, aggregate_file};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: scan_file FILE [THREADS] [seed|full]")?;
    let threads: usize = match args.next() {
        Some(t) => t.parse()?,
        None => std::thread::available_parallelism()?.get(),
    };
    let profile = match args.next().as_deref() {
        Some("full") => Profile::Full,
        Some("floodwatch") => Profile::Floodwatch,
        _ => Profile::SeedOnly,
    };
    let unhandled = AtomicU64::new(0);
    let fallback = |_: &[u8], _, _: &mut Aggregator, _: &mut _| {
        unhandled.fetch_add(1, Ordering::Relaxed);
    };
    let t = Instant::now();
    let mut workers: Vec<Worker> = (0..threads)
        .map(|_| {
            Worker::new(
                Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
                    .with_profile(profile),
            )
        })
        .collect();
    let bytes = aggregate_file(
        path.as_ref(),
        &path,
        &mut workers,
        FileOptions::default(),
        &fallback,
    )?;
    let mut all = Aggregates::empty(BinWidth::FIVE_MINUTES);
    let mut read = 0;
    for w in workers {
        read += w.diag.records_read;
        all.merge(w.agg.finish());
    }
    let secs = t.elapsed().as_secs_f64();
    let seed: u64 = all.bins.values().map(|b| b.seed.count).sum();
    println!(
        "{bytes} bytes in {secs:.3} s = {:.0} MB/s on {threads} threads; {read} records by the scanner, {} unhandled; {} events, {} bins, seed count {seed}",
        bytes as f64 / secs / 1e6,
        unhandled.load(Ordering::Relaxed),
        all.stats.events,
        all.bins.len(),
    );
    Ok(())
}
