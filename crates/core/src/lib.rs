//! The heart of floodwatch: what a network event is, how events fall into time bins, and the
//! aggregates kept per device and bin.
//!
//! Nothing here does I/O or reads a clock. Every aggregate is *mergeable*: the same events split
//! into any parts, aggregated separately and merged give the same result as aggregating them in
//! one go (exactly, or within a sketch's stated error). That one property is what lets the batch
//! engine parse a file on many threads, and later lets service instances exchange partial
//! aggregates. Every aggregate is also serde-serializable for the same reason.
//!
//! Data flow: `ingest` turns bytes into [`Event`]s; [`Aggregator`] folds them into [`BinAgg`]s keyed
//! by device and bin; `detect` reads the finished [`Aggregates`].

pub mod bins;
pub mod classify;
pub mod dedup;
pub mod diag;
pub mod hash;
pub mod model;
pub mod seal;
pub mod sketch;
pub mod stats;
pub mod time;

pub use bins::{
    Aggregates, Aggregator, BinAgg, BinKey, ClassAgg, DeviceTable, Fate, IngestStats, Profile,
    SeedAgg,
};
pub use classify::{AllowList, Class, ClassifyConfig, PortSet, Verdict};
pub use diag::{Diagnostics, Location, NameCounts, SkipExample, SkipReason};
pub use model::{ActionType, DeviceId, Direction, Event, Ip, Protocol};
pub use seal::Sealer;
pub use sketch::{SourceSketch, TopSources};
pub use stats::Moments;
pub use time::{BinWidth, Nanos};
