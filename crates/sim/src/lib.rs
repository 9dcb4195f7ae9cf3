//! `floodwatch-sim`: realistic, labelled `DeviceNetworkEvents` telemetry, and the scoring of a
//! detector's alerts against the labels.
//!
//! Why a simulator: real Defender exports with labelled attacks do not exist in public, and a
//! detector is only as trustworthy as the cases it was measured on. Everything here is seeded:
//! the same [`SimConfig`] gives byte-identical output in every format, and the in-memory path
//! ([`aggregate`]) sees exactly the rows a file would hold.
//!
//! # Traffic
//! Devices in a fixed order: `web01`..`web04.contoso.com` (MachineGroup `Web Frontend`, IIS
//! `w3wp.exe` or `nginx.exe` on 443/80), `api01` (`API`, `dotnet.exe` on 443, a small population
//! of heavy partner clients), `mail01` (`Mail`, SMTP 25/587, OWA 443, SNMP polling over UDP),
//! then `web05` and `shop01` (`New Services`, which first report 30 h and 33 h into the
//! `scenarios` dataset), then further `webNN` servers. See [`generate`] for the model.
//!
//! # Scenarios and labels
//! The labels file is JSON lines, one [`Label`] per scenario, no header line:
//! `{"Scenario":"syn-flood","Kind":"attack","Devices":["api01.contoso.com"],"Start":"2025-12-23T14:00:00Z","End":"2025-12-23T14:30:00Z","Vector":"syn-flood","AllowSources":[]}`.
//! Windows are aligned to 5-minute bins; `End` is exclusive. Stable scenario names
//! (`scenarios` profile; all attacks after the first 24 hours):
//!
//! | name | kind | vector | what |
//! |---|---|---|---|
//! | `https-flood` | attack | https-flood | DDoSia-style: ~4,000 mostly new sources (8 % cloud hosts), 1-3 connections each per bin, on web01 |
//! | `syn-flood` | attack | syn-flood | `ConnectionAttempt` to 443 from spoofed random sources, on api01 |
//! | `udp-flood` | attack | udp-flood | inbound UDP `InboundConnectionAccepted` to random ports, spoofed, on mail01 at night |
//! | `icmp-flood` | attack | icmp-flood | `IcmpConnectionInspected` (direction In) with large packet/byte counters, on web02 |
//! | `low-and-slow` | attack | https-flood | 3.5x the expected traffic for 45 min from new sources, on web03 |
//! | `pulse-wave` | attack | https-flood | one bin on, two or three off, four pulses, on web04 |
//! | `carpet-bombing` | attack | https-flood | 2.5x on every device of `Web Frontend` at once |
//! | `peak-attack` | attack | https-flood | a moderate flood at the daily peak (13:00), on web02 |
//! | `new-device-attack` | attack | https-flood | web05, two hours after it first reports |
//! | `flash-crowd` | benign | - | 6x surge (ramping up) from clients the device has seen before, on web03 |
//! | `load-test` | benign | - | 12,000 connections per bin from 8 addresses in `10.250.0.0/24` (`AllowSources`), on api01 |
//! | `monitor` | benign | - | a known uptime monitor misconfigured to ~1,500 connections per bin, on web01 |
//! | `new-device` | benign | - | shop01 starts reporting ordinary traffic (its first 3 hours) |
//!
//! The `bench` profile has one label, `bench-https-flood` on web01 in the last hour.
//!
//! # Output
//! [`write_dataset`] streams any [`OutputFormat`] to a file (gzip or zstd when the name ends in
//! `.gz` / `.zst`) or stdout, never holding more than one 5-minute slot of rows.
//!
//! # Evaluation
//! [`eval::evaluate`] scores alerts against labels: detection and time to detect per attack,
//! unsuppressed alerts on benign scenarios, false-positive bins on normal traffic.

// Tests unwrap on inputs they built themselves; a panic there is a failed test.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod eval;
pub mod format;
pub mod generate;
mod record;
pub mod scenario;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use floodwatch_core::time::Nanos;
use floodwatch_core::{Aggregates, Aggregator, DeviceId, Event};

pub use config::{SimConfig, SimProfile};
pub use eval::{EvalReport, Targets, evaluate};
pub use format::OutputFormat;
pub use scenario::{LOAD_TEST_CIDR, Label, LabelKind, read_labels, write_labels};

use format::{Counting, RowWriter};
use generate::World;

/// What can go wrong writing or reading simulated data.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid simulation settings: {0}")]
    Config(String),
    #[error("{path}: line {line}: {message}")]
    Labels {
        path: String,
        line: u64,
        message: String,
    },
}

impl SimError {
    pub(crate) fn io(path: &Path, source: io::Error) -> SimError {
        SimError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The reader went away (`floodwatch simulate | head`): the CLI exits quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, SimError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// What a run wrote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SimSummary {
    /// `DeviceNetworkEvents` records written.
    pub records: u64,
    /// Envelopes of other tables mixed in (Event Hubs format only).
    pub other_records: u64,
    /// Bytes before compression.
    pub bytes: u64,
    pub devices: usize,
    pub labels: usize,
    /// Dataset start (inclusive) and end (exclusive), nanoseconds since the epoch.
    pub start: Nanos,
    pub end: Nanos,
}

/// The labels of a configuration, without generating traffic.
pub fn labels(cfg: &SimConfig) -> Vec<Label> {
    World::new(cfg).labels
}

/// Streams the dataset in `format` to any writer; returns the summary and the writer.
pub fn write_to<W: Write>(
    cfg: &SimConfig,
    format: OutputFormat,
    w: W,
) -> Result<(SimSummary, W), io::Error> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let world = World::new(cfg);
    let mut states = world.new_states();
    let mut rw = RowWriter::new(
        format,
        Counting { inner: w, bytes: 0 },
        cfg.batch,
        &cfg.tenant_id,
    );
    rw.begin()?;
    let mut rows = Vec::new();
    let mut records = 0u64;
    for t0 in world.slots() {
        world.slot(&mut states, t0, &mut rows);
        for r in &rows {
            rw.row(r, &world.devices[r.device as usize])?;
        }
        records += rows.len() as u64;
    }
    let other_records = rw.other_records;
    let counting = rw.finish()?;
    let summary = SimSummary {
        records,
        other_records,
        bytes: counting.bytes,
        devices: world.devices.len(),
        labels: world.labels.len(),
        start: world.start,
        end: world.end,
    };
    Ok((summary, counting.inner))
}

/// Writes the dataset to `out` (`-` = stdout; `.gz` / `.zst` compress) and, if given, the
/// labels to `labels` as JSON lines.
pub fn write_dataset(
    cfg: &SimConfig,
    format: OutputFormat,
    out: &Path,
    labels_path: Option<&Path>,
) -> Result<SimSummary, SimError> {
    cfg.validate()?;
    let err = |e| SimError::io(out, e);
    let summary = if out == Path::new("-") {
        let (s, mut w) = write_to(cfg, format, BufWriter::new(io::stdout().lock())).map_err(err)?;
        w.flush().map_err(err)?;
        s
    } else {
        let file = BufWriter::with_capacity(1 << 20, File::create(out).map_err(err)?);
        let name = out.to_string_lossy();
        if name.ends_with(".gz") {
            let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            let (s, gz) = write_to(cfg, format, gz).map_err(err)?;
            gz.finish().map_err(err)?.flush().map_err(err)?;
            s
        } else if name.ends_with(".zst") {
            let z = zstd::stream::write::Encoder::new(file, 3).map_err(err)?;
            let (s, z) = write_to(cfg, format, z).map_err(err)?;
            z.finish().map_err(err)?.flush().map_err(err)?;
            s
        } else {
            let (s, mut f) = write_to(cfg, format, file).map_err(err)?;
            f.flush().map_err(err)?;
            s
        }
    };
    if let Some(p) = labels_path {
        write_labels(p, &labels(cfg))?;
    }
    Ok(summary)
}

/// Generates the dataset straight into aggregates (no text round trip) and returns them with
/// the labels. Devices are split across threads, each folding into its own aggregator from
/// `make_aggregator`; the partial aggregates are merged, so the result does not depend on the
/// number of threads. Call [`SimConfig::validate`] first: an invalid config is not rejected
/// here (zero devices give empty aggregates, a huge `hours` takes as long as it says).
pub fn aggregate(
    cfg: &SimConfig,
    make_aggregator: impl Fn() -> Aggregator + Sync,
) -> (Aggregates, Vec<Label>) {
    let world = World::new(cfg);
    let states = world.new_states();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(world.devices.len().max(1));
    let mut groups: Vec<Vec<(usize, generate::DeviceState)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (i, st) in states.into_iter().enumerate() {
        groups[i % threads].push((i, st));
    }
    let world_ref = &world;
    let make = &make_aggregator;
    let parts: Vec<Aggregates> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|group| s.spawn(move || fold_devices(world_ref, group, make())))
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(a) => a,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    });
    let mut it = parts.into_iter();
    let mut all = match it.next() {
        Some(a) => a,
        None => make_aggregator().finish(),
    };
    for p in it {
        all.merge(p);
    }
    (all, world.labels)
}

fn fold_devices(
    world: &World,
    group: Vec<(usize, generate::DeviceState)>,
    mut agg: Aggregator,
) -> Aggregates {
    let mut rows = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    for (dev, mut st) in group {
        // Interned at its first row, as a reader would: a device that never reports is absent.
        let mut id: Option<DeviceId> = None;
        for t0 in world.slots() {
            rows.clear();
            world.device_slot(dev, &mut st, t0, &mut rows);
            if rows.is_empty() {
                continue;
            }
            let id = *id.get_or_insert_with(|| agg.device(&world.devices[dev].name));
            rows.sort_unstable_by_key(|r| (r.ts, r.report_id));
            events.clear();
            events.extend(rows.iter().map(|r| r.event(id)));
            agg.add_batch(&events);
        }
    }
    agg.finish()
}

#[cfg(test)]
mod tests;
