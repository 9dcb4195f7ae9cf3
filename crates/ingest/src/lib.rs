//! Ingest: every shape of Defender `DeviceNetworkEvents` telemetry a user has on disk or on the
//! wire, turned into floodwatch [`Aggregates`].
//!
//! Shapes (see [`InputFormat`]): Advanced Hunting NDJSON and JSON arrays, Event Hubs message
//! bodies, Storage-export envelope lines, the Advanced Hunting / Graph / Log Analytics API
//! responses, Defender and Sentinel portal CSV, and any of them gzip- or zstd-compressed.
//! The format is sniffed from the first bytes after decompression unless forced.
//!
//! Three readers share one field mapping ([`record`]): line-oriented JSON goes through the
//! parallel line driver of `floodwatch-scan`, whose fast scanner hands anything unusual to
//! [`json::parse_line`] (plain files are memory-mapped window by window; compressed input and
//! stdin are decompressed in bounded blocks); JSON documents are streamed row by row ([`json`]); CSV goes through the `csv` crate.
//!
//! Bad input is data: each unusable record is counted in [`Diagnostics`] with where it was and
//! why, and the run goes on. [`IngestOptions::strict`] turns the first such error into
//! [`IngestError::Strict`].

// Tests may unwrap: a panic there is a failed assertion.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod format;
pub mod json;
pub mod record;

mod input;

use std::collections::BTreeMap;
use std::path::PathBuf;

use floodwatch_core::time::Nanos;
use floodwatch_core::{Aggregates, Aggregator, Diagnostics, SkipExample};

pub use format::{InputFormat, UnknownFormat, sniff};

/// How to read the inputs.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Input format; `Auto` (the default) sniffs each input separately.
    pub format: InputFormat,
    /// Fail on the first unusable record instead of counting it. Default false. Records of
    /// other tables on a shared Event Hub are not errors.
    pub strict: bool,
    /// Parsing threads for line-oriented input. Default: the available parallelism.
    pub threads: usize,
    /// Show bytes read and records/s on stderr, only when stderr is a terminal. Default false.
    pub progress: bool,
    /// Longest line accepted, in bytes; longer lines are skipped as too long without being
    /// buffered whole. Default 64 MiB.
    pub max_line_bytes: usize,
    /// How far (event time) an event may come behind the events before it and still count;
    /// bins further back are sealed and handed on as the input is read, so memory stays
    /// bounded for input in time order (see [`floodwatch_core::seal`]). `None` (the default
    /// here) keeps every bin to the end: exact for input in any order, memory grows with it.
    pub lateness: Option<Nanos>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            format: InputFormat::Auto,
            strict: false,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: false,
            max_line_bytes: 64 << 20,
            lateness: None,
        }
    }
}

/// What the inputs gave.
#[derive(Debug)]
pub struct IngestOutput {
    pub aggregates: Aggregates,
    pub diagnostics: Diagnostics,
    /// The format each input was read as, by source name (`-` for stdin).
    pub formats: BTreeMap<String, InputFormat>,
}

/// What [`ingest_into`] gives once every input is read.
#[derive(Debug)]
pub struct StreamOutput {
    /// The bins not handed to the sink (the newest; the last of them may be incomplete), with
    /// the stats of the whole input.
    pub rest: Aggregates,
    pub diagnostics: Diagnostics,
    /// The format each input was read as, by source name (`-` for stdin).
    pub formats: BTreeMap<String, InputFormat>,
}

/// Why ingest stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Strict mode met an unusable record.
    #[error("strict mode: {0}")]
    Strict(SkipExample),
    /// Nothing to read (no paths, or only empty directories).
    #[error("no input: {0}")]
    NoInput(String),
}

/// Reads `inputs` (files, directories read recursively in sorted path order, `-` for stdin)
/// into aggregates. `make_aggregator` is called once per worker thread; the workers' results
/// are merged with [`Aggregates::merge`].
pub fn ingest(
    inputs: &[PathBuf],
    opts: &IngestOptions,
    make_aggregator: &(dyn Fn() -> Aggregator + Sync),
) -> Result<IngestOutput, IngestError> {
    let mut sealed: Vec<Aggregates> = Vec::new();
    let out = ingest_into(inputs, opts, make_aggregator, &mut |bins| sealed.push(bins))?;
    let mut aggregates = out.rest;
    for bins in sealed {
        aggregates.merge(bins);
    }
    Ok(IngestOutput {
        aggregates,
        diagnostics: out.diagnostics,
        formats: out.formats,
    })
}

/// [`ingest`] for a consumer of complete bins: `sink` gets them in time order as they are
/// sealed (see [`IngestOptions::lateness`]), each (device, bin) once and never again in
/// [`StreamOutput::rest`]. Bins handed on are not kept, so memory stays bounded by the bins
/// still open.
pub fn ingest_into(
    inputs: &[PathBuf],
    opts: &IngestOptions,
    make_aggregator: &(dyn Fn() -> Aggregator + Sync),
    sink: &mut dyn FnMut(Aggregates),
) -> Result<StreamOutput, IngestError> {
    input::run(inputs, opts, make_aggregator, sink)
}
