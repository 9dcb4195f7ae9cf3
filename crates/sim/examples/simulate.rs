//! Writes a simulated dataset and prints what was written and how long it took:
//! `cargo run --release -p floodwatch-sim --example simulate -- bench ndjson /tmp/bench.ndjson [scale]`.

use std::path::Path;
use std::time::Instant;

use floodwatch_sim::{OutputFormat, SimConfig, SimProfile, write_dataset};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let profile: SimProfile = args.first().map_or("scenarios", String::as_str).parse()?;
    let format: OutputFormat = args.get(1).map_or("ndjson", String::as_str).parse()?;
    let out = args.get(2).map_or("-", String::as_str);
    let mut cfg = SimConfig::new(profile);
    if let Some(s) = args.get(3) {
        cfg.scale = s.parse()?;
    }
    let labels = format!("{out}.labels.jsonl");
    let t = Instant::now();
    let s = write_dataset(
        &cfg,
        format,
        Path::new(out),
        (out != "-").then_some(Path::new(&labels)),
    )?;
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{} records ({} other-table), {} bytes ({:.0} B/record), {} labels, {:.2} s ({:.0} records/s)",
        s.records,
        s.other_records,
        s.bytes,
        s.bytes as f64 / s.records.max(1) as f64,
        s.labels,
        secs,
        s.records as f64 / secs
    );
    Ok(())
}
