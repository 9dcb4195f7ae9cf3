//! Fixed work for the instruction-count check (`bench/callgrind.sh`): scans and aggregates
//! (seed-only) the 20,000-row sample on one thread. Prints what it did so a broken scanner
//! cannot pass by doing nothing.

use floodwatch_core::{Aggregator, BinWidth, ClassifyConfig, Profile};
use floodwatch_scan::{Chunk, Worker, aggregate_lines, sample};

fn main() {
    let data = sample::lines(20_000);
    let agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
        .with_profile(Profile::SeedOnly);
    let mut w = [Worker::new(agg)];
    let chunk = Chunk {
        data: &data,
        source: "sample",
        first_line: 1,
        base_offset: 0,
    };
    let unhandled = std::sync::atomic::AtomicU64::new(0);
    aggregate_lines(chunk, &mut w, 1 << 20, &|_, _, _, _| {
        unhandled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let [w] = w;
    let read = w.diag.records_read;
    let a = w.agg.finish();
    println!(
        "{} bytes, {read} rows scanned, {} unhandled, {} events, {} bins",
        data.len(),
        unhandled.into_inner(),
        a.stats.events,
        a.bins.len()
    );
}
