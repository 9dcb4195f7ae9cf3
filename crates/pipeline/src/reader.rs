//! A reader of the live service: batches of lines (NDJSON rows, Storage-export envelope lines,
//! Event Hubs message bodies) to a [`Partial`] and what was skipped, through the batch run's
//! scanner and parser.

use floodwatch_core::{Aggregates, BinWidth, Diagnostics, Location};
use floodwatch_ingest::json::parse_line;
use floodwatch_scan::{Chunk, Fallback, Worker, aggregate_lines};

use crate::live::Partial;
use crate::settings::Settings;

/// Where a batch came from, for skip locations.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    /// The input's name (`http`, `kafka:TOPIC/3`, a path).
    pub source: &'a str,
    /// 1-based line number of the batch's first line in its input (1 for a message).
    pub first_line: u64,
    /// Byte offset of the batch in its input (a Kafka offset, a file offset).
    pub base_offset: u64,
}

/// One reading worker: its own aggregator (and so its own duplicate filter) at the sub-window
/// width. Long-lived, so duplicates are found across batches of the same input.
pub struct LineReader {
    worker: Worker,
    max_line: usize,
}

impl LineReader {
    pub fn new(s: &Settings, step: BinWidth) -> Self {
        LineReader {
            worker: Worker::new(s.aggregator(step)),
            max_line: s.ingest.max_line_bytes,
        }
    }

    /// Reads whole lines (the last may lack its `\n`). A body that is one pretty-printed JSON
    /// document (an Event Hubs message as some tools write it) is read as one record.
    pub fn read(&mut self, data: &[u8], at: Origin<'_>) -> (Partial, Diagnostics) {
        let fallback: &Fallback = &parse_line;
        if is_one_document(data) {
            let loc = Location {
                source: at.source.to_owned(),
                line: Some(at.first_line),
                offset: Some(at.base_offset),
            };
            parse_line(data, loc, &mut self.worker.agg, &mut self.worker.diag);
        } else {
            aggregate_lines(
                Chunk {
                    data,
                    source: at.source,
                    first_line: at.first_line,
                    base_offset: at.base_offset,
                },
                std::slice::from_mut(&mut self.worker),
                self.max_line,
                fallback,
            );
        }
        let aggs: Aggregates = self.worker.agg.take_all();
        let mut diag = std::mem::take(&mut self.worker.diag);
        diag.bytes_read += data.len() as u64;
        (
            Partial {
                source: at.source.to_owned(),
                aggs,
            },
            diag,
        )
    }
}

/// A JSON object spread over several lines whose first line is not a record on its own.
fn is_one_document(data: &[u8]) -> bool {
    let t = data.trim_ascii();
    if !(t.starts_with(b"{") && t.ends_with(b"}")) {
        return false;
    }
    let Some(nl) = memchr(t) else {
        return false;
    };
    let first = t[..nl].trim_ascii();
    serde_json::from_slice::<serde::de::IgnoredAny>(first).is_err()
        && serde_json::from_slice::<serde::de::IgnoredAny>(t).is_ok()
}

fn memchr(t: &[u8]) -> Option<usize> {
    t.iter().position(|&c| c == b'\n')
}
