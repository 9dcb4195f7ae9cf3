//! Sequential stand-in for `floodwatch_scan::aggregate_lines`, with the same signature and
//! contract, used until the fast scanner crate is part of the workspace. Every line goes to the
//! fallback parser; only worker 0 is used.

use floodwatch_core::{Aggregator, Diagnostics, Location, SkipReason};

/// A line-aligned run of bytes and where it starts in its source.
pub struct Chunk<'a> {
    pub data: &'a [u8],
    pub source: &'a str,
    /// 1-based line number of `data[0]`.
    pub first_line: u64,
    /// Byte offset of `data[0]` in the (decompressed) source.
    pub base_offset: u64,
}

/// One parsing thread's state, kept across chunks.
pub struct Worker {
    pub agg: Aggregator,
    pub diag: Diagnostics,
}

/// The general line parser called for lines the scanner does not handle.
pub type Fallback = dyn Fn(&[u8], Location, &mut Aggregator, &mut Diagnostics) + Sync;

/// Splits `chunk.data` on `\n`, strips a trailing `\r`, ignores blank lines, records lines longer
/// than `max_line` as [`SkipReason::TooLong`] and hands every other line to `fallback`.
pub fn aggregate_lines(chunk: Chunk, workers: &mut [Worker], max_line: usize, fallback: &Fallback) {
    let Some(w) = workers.first_mut() else {
        return;
    };
    let data = chunk.data;
    let mut start = 0usize;
    let mut line_no = chunk.first_line;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        let mut line = &data[start..end];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        let loc = || Location {
            source: chunk.source.to_owned(),
            line: Some(line_no),
            offset: Some(chunk.base_offset + start as u64),
        };
        if line.len() > max_line {
            w.diag.records_read += 1;
            w.diag.skip(
                SkipReason::TooLong,
                loc(),
                format!(
                    "line of {} bytes is longer than the limit of {max_line} bytes",
                    line.len()
                ),
            );
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            fallback(line, loc(), &mut w.agg, &mut w.diag);
        }
        start = end + 1;
        line_no += 1;
    }
}
