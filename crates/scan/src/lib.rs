//! The fast path for line-oriented JSON telemetry (`DeviceNetworkEvents` as NDJSON).
//!
//! A full JSON parse per record cannot reach the gigabytes per second a week of exported
//! telemetry needs, and detection reads only nine of the table's forty-odd columns. So:
//! - [`Scanner`] finds those columns in a line (probing where the previous line had them, then
//!   with `memmem`), reads their bytes in place and builds an [`floodwatch_core::Event`]
//!   without allocating; anything unusual (escapes, nested objects, envelopes, odd types,
//!   missing keys) is handed to the caller's full parser, the [`Fallback`], so results are
//!   those of the full parser on every line. Storage-export envelopes and Event Hubs batches
//!   ([`Scanner::scan_envelope`], [`Scanner::scan_batch`]) reach the same scanner for the row.
//! - [`aggregate_lines`] splits a buffer of lines into one part per [`Worker`] and runs them on
//!   scoped threads; each worker folds into its own `Aggregator`, and the finished aggregates
//!   merge (`Aggregates::merge`) into the same result as one thread would produce.
//! - [`DocSplitter`] cuts a JSON document (an array of rows, an API response) into its rows
//!   without parsing them, and [`aggregate_spans`] reads those rows as [`aggregate_lines`] reads
//!   lines, so a document is as fast as the same rows as NDJSON.
//! - [`aggregate_file`] feeds a plain file through a memory map in windows and releases each
//!   window afterwards, so peak memory does not grow with the file.

mod af;
mod doc;
mod file;
mod lines;
mod row;
#[doc(hidden)]
pub mod sample;
mod split;

pub use doc::{DocChunk, DocSplitter, Span, Split, aggregate_spans, refused_controls};
pub use file::{FileOptions, aggregate_file};
pub use lines::{
    Chunk, Fallback, RELEASE_STEP, Release, Worker, aggregate_lines, aggregate_lines_releasing,
};
pub use row::{Openers, Scanner, scan_row};

#[cfg(test)]
mod tests;
