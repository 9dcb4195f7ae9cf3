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
//! The `hard` profile (five days, fifteen devices: the eight above, then `portal01`, a
//! national service's portal with a large returning audience, `store01`, a web shop, and
//! `web06`..`web10`) has every scenario above in the same place, plus (days are counted from
//! the dataset start, 0 to 4):
//!
//! | name | kind | vector | what |
//! |---|---|---|---|
//! | `residential-proxy-flood` | attack | https-flood | day 3, portal01: 25x the normal traffic from 8,000 sources every bin, half of them (and of the connections) the portal's own returning visitors, half new; heavy-tailed rates, the top source ~590 connections per bin, every returning proxy far above its usual rate |
//! | `flash-sale` | benign | - | day 3, store01: a sale doubling the traffic with returning customers for 90 minutes |
//! | `flash-sale-flood` | attack | https-flood | 15 minutes into the sale, 30 minutes: a botnet adding 0.55x the normal traffic (~320 new sources at 4-6 connections each), ~35 % of the excess over the pre-sale baseline |
//! | `campaign-day1`..`campaign-day3` | attack | https-flood | days 2, 3 and 4, web06: one botnet (the same 3,000 addresses) three times |
//! | `long-pulse-wave` | attack | https-flood | day 2, web07: six one-bin pulses with 10-20 minute quiet gaps |
//! | `low-and-slow-2x` | attack | https-flood | day 3, web01: 1.8x for an hour from new sources, under the one-bin 2x test |
//! | `wide-carpet-bombing` | attack | https-flood | day 4: 1.4x on eight web servers at once |
//! | `cold-start-attack` | attack | https-flood | day 3, web10: five minutes after the device first reports |
//! | `ipv6-flood` | attack | https-flood | day 2, web09: a botnet of 3,000 IPv6 addresses |
//! | `http-flood` | attack | https-flood | day 4, web02: a flood on plain HTTP, port 80 |
//! | `slow-ramp` | attack | https-flood | day 3, web03: from nothing to 15x over 90 minutes; `DetectFrom` is the first bin at 5x |
//! | `syn-flood-rollup` | attack | syn-flood | day 2, api01: bots whose repeated failed attempts come as `ConnectionFailedAggregatedReport` rows |
//! | `flash-crowd-new-customers` | benign | - | day 3, web04: a 6x surge, 30 % of it from customers never seen before |
//! | `load-test-fleet` | benign | - | day 4, api01: 12,000 connections per bin from 300 addresses in `10.252.0.0/23` (`AllowSources`) |
//! | `two-monitors` | benign | - | day 4, web08: two uptime monitors misconfigured at once, ~1,500 connections per bin each |
//! | `sensor-outage` | benign | - | day 3, web09: no data 08:00-10:00, then ordinary traffic (the label runs to 11:00) |
//!
//! Its written rows come in the order interleaved Event Hubs partitions deliver them, out of
//! time order by up to 90 s ([`SimConfig::disorder_secs`]).
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

/// Arrival order of written rows. Event Hubs delivers each partition in order, but a reader
/// of several partitions interleaves them, one running ahead of another by up to
/// `disorder_secs`. Each row goes to one of [`Arrival::PARTITIONS`] partitions; a partition
/// lags by an amount that moves smoothly within `[0, disorder]` (linearly between random
/// values every 5 minutes: for a disorder under 5 minutes slower than time passes, so each
/// partition stays in order); rows arrive in order of time plus lag. A row thus never arrives
/// after one more than `disorder` newer than itself.
struct Arrival {
    max_lag: Nanos,
    seed: u64,
    /// (arrival time, row) not yet released.
    pending: Vec<(Nanos, record::Row)>,
    released: Vec<record::Row>,
}

impl Arrival {
    const PARTITIONS: u64 = 4;

    fn new(cfg: &SimConfig) -> Self {
        Arrival {
            max_lag: cfg.disorder_secs as Nanos * floodwatch_core::time::NANOS_PER_SEC,
            seed: cfg.seed,
            pending: Vec::new(),
            released: Vec::new(),
        }
    }

    fn lag(&self, r: &record::Row) -> Nanos {
        use floodwatch_core::hash::{combine, mix64};
        let part = mix64(combine(
            self.seed,
            combine(r.device as u64, r.report_id as u64),
        )) % Self::PARTITIONS;
        let knot = r.ts.div_euclid(generate::SLOT);
        let frac = (r.ts - knot * generate::SLOT) as f64 / generate::SLOT as f64;
        let at = |k: i64| {
            let h = mix64(combine(self.seed ^ 0x0a77_17a1, combine(part, k as u64)));
            (h % (self.max_lag as u64 + 1)) as f64
        };
        (at(knot) * (1.0 - frac) + at(knot + 1) * frac) as Nanos
    }

    /// Takes the slot's `rows` (in time order) and returns, in arrival order, every row that
    /// arrives before `until`: no row of a later slot can (its time alone is past it).
    fn release(&mut self, rows: &mut Vec<record::Row>, until: Nanos) -> &[record::Row] {
        self.released.clear();
        if self.max_lag == 0 {
            std::mem::swap(&mut self.released, rows);
            return &self.released;
        }
        for r in rows.drain(..) {
            let at = r.ts.saturating_add(self.lag(&r));
            self.pending.push((at, r));
        }
        self.pending
            .sort_unstable_by_key(|(at, r)| (*at, r.ts, r.device, r.report_id));
        let n = self.pending.partition_point(|(at, _)| *at < until);
        self.released
            .extend(self.pending.drain(..n).map(|(_, r)| r));
        &self.released
    }
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
    let mut arrival = Arrival::new(cfg);
    for t0 in world.slots() {
        world.slot(&mut states, t0, &mut rows);
        records += rows.len() as u64;
        for r in arrival.release(&mut rows, t0 + generate::SLOT) {
            rw.row(r, &world.devices[r.device as usize])?;
        }
    }
    for r in arrival.release(&mut rows, Nanos::MAX) {
        rw.row(r, &world.devices[r.device as usize])?;
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
