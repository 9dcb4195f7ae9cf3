//! Writes the benchmark dataset (the simulator's `bench` profile, AH NDJSON) without the CLI:
//! `cargo run --release -p floodwatch-scan --example gen_bench -- OUT [SCALE] [FORMAT]`.
//! `floodwatch simulate --profile bench` writes the same bytes; this exists so the scanner can be
//! measured on its own.

use std::path::PathBuf;

use floodwatch_sim::{OutputFormat, SimConfig, SimProfile, write_dataset};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: gen_bench OUT [SCALE] [ndjson|storage|eventhubs]")?,
    );
    let mut cfg = SimConfig::new(SimProfile::Bench);
    if let Some(s) = args.next() {
        cfg.scale = s.parse()?;
    }
    let format = match args.next().as_deref() {
        None | Some("ndjson") => OutputFormat::Ndjson,
        Some("storage") => OutputFormat::StorageExport,
        Some("eventhubs") => OutputFormat::EventHubs,
        Some(f) => return Err(format!("unknown format {f}").into()),
    };
    let s = write_dataset(&cfg, format, &out, None)?;
    println!(
        "{} records, {} bytes, {} devices",
        s.records, s.bytes, s.devices
    );
    Ok(())
}
