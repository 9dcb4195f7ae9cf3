//! Parallel aggregation of a buffer of JSON lines.

use floodwatch_core::{Aggregator, Diagnostics, Location, SkipReason};

use crate::row::{Openers, Scanner, trim};
use crate::split::{line_end, plain_text};

/// A buffer of whole lines from one input.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    /// Whole lines; the last one may lack its `\n`.
    pub data: &'a [u8],
    /// The input's name, for skip locations.
    pub source: &'a str,
    /// 1-based line number of `data[0]`.
    pub first_line: u64,
    /// Byte offset of `data[0]` in the (decompressed) input.
    pub base_offset: u64,
}

/// One thread's share of the work: its own aggregator and diagnostics, merged at the end.
///
/// Exact duplicates (DeviceName, Timestamp, ReportId) are dropped by the bins themselves: two
/// copies that land in different workers' parts meet when the workers' bins merge, and count
/// once (see `floodwatch_core::dedup`), so N workers count what one does.
#[derive(Debug)]
pub struct Worker {
    pub agg: Aggregator,
    pub diag: Diagnostics,
    pub(crate) scanner: Scanner,
}

impl Worker {
    pub fn new(agg: Aggregator) -> Self {
        Worker {
            agg,
            diag: Diagnostics::default(),
            scanner: Scanner::new(),
        }
    }
}

/// The full parser for lines the scanner does not handle: it parses the line, adds its events to
/// the aggregator or records a skip, and counts `records_read` itself. The lifetime lets it
/// borrow the caller's state (`&Fallback` in a signature elides it).
pub type Fallback<'a> = dyn Fn(&[u8], Location, &mut Aggregator, &mut Diagnostics) + Sync + 'a;

/// Splits `chunk.data` on `\n` into line-aligned parts, one per worker, and processes them in
/// parallel. Each line (trailing `\r` stripped, blank lines ignored) goes through the fast
/// scanner, or to `fallback` with its location when the scanner cannot handle it. Lines longer
/// than `max_line` bytes are skipped as [`SkipReason::TooLong`].
///
/// Counts `diag.records_read` for the records it handles itself (the fallback counts its own).
/// Returns the number of `\n` in the chunk, so the next chunk's `first_line` is
/// `first_line + returned`.
pub fn aggregate_lines(
    chunk: Chunk<'_>,
    workers: &mut [Worker],
    max_line: usize,
    fallback: &Fallback,
) -> u64 {
    aggregate_lines_releasing(chunk, workers, max_line, fallback, &|_, _| {})
}

/// Told by each worker which bytes of `chunk.data` it is done with, as (start, end) offsets,
/// every [`RELEASE_STEP`] or so and on 2 MiB boundaries of the input, so that the caller can drop
/// them from a memory map while the rest of the chunk is still being read.
pub type Release<'a> = dyn Fn(usize, usize) + Sync + 'a;

/// How much a worker reads between two calls of its [`Release`].
pub const RELEASE_STEP: usize = 8 << 20;

/// [`aggregate_lines`], handing finished ranges to `release` as the workers go.
pub fn aggregate_lines_releasing(
    chunk: Chunk<'_>,
    workers: &mut [Worker],
    max_line: usize,
    fallback: &Fallback,
    release: &Release,
) -> u64 {
    let parts = split(chunk.data, workers.len().max(1));
    if workers.len() <= 1 || parts.len() <= 1 {
        let Some(w) = workers.first_mut() else {
            // No worker, no work; still report the lines so callers' numbering stays right.
            return memchr::memchr_iter(b'\n', chunk.data).count() as u64;
        };
        let mut diag = Diagnostics::default();
        let n = run_part(
            w,
            &mut diag,
            chunk,
            (0, chunk.data),
            max_line,
            fallback,
            release,
        );
        w.diag.merge(&diag);
        return n;
    }
    // Each part reports line numbers relative to its own start; once every part has counted its
    // lines, the skip examples are shifted to absolute lines. This avoids a separate counting
    // pass over the data before the parallel one.
    let results: Vec<(u64, Diagnostics)> = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter_mut()
            .zip(&parts)
            .map(|(w, &(start, end))| {
                s.spawn(move || {
                    let mut diag = Diagnostics::default();
                    let n = run_part(
                        w,
                        &mut diag,
                        chunk,
                        (start, &chunk.data[start..end]),
                        max_line,
                        fallback,
                        release,
                    );
                    (n, diag)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    });
    let mut lines_before = 0u64;
    for ((n, mut diag), w) in results.into_iter().zip(workers.iter_mut()) {
        for e in &mut diag.examples {
            if let Some(l) = e.location.line.as_mut() {
                *l += lines_before;
            }
        }
        w.diag.merge(&diag);
        lines_before += n;
    }
    lines_before
}

/// Cuts `data` into at most `n` parts of about equal size and at least 64 KiB, each ending just
/// after a `\n` (or at the end of the data). Returns (start, end) offsets.
fn split(data: &[u8], n: usize) -> Vec<(usize, usize)> {
    // Below this much per part a thread costs more than it saves.
    const MIN_PART: usize = 64 << 10;
    let n = n.min(data.len() / MIN_PART).max(1);
    let mut parts = Vec::with_capacity(n);
    let mut start = 0;
    for i in 1..n {
        let target = (data.len() * i / n).max(start);
        let end = match memchr::memchr(b'\n', &data[target..]) {
            Some(p) => target + p + 1,
            None => data.len(),
        };
        if end > start {
            parts.push((start, end));
        }
        start = end;
    }
    if start < data.len() || parts.is_empty() {
        parts.push((start, data.len()));
    }
    parts
}

/// Processes one part. Skip locations get lines relative to the part (1-based for its first
/// line, then shifted by the caller) plus `chunk.first_line - 1`; offsets are absolute.
/// Returns the number of `\n` in the part.
fn run_part(
    w: &mut Worker,
    diag: &mut Diagnostics,
    chunk: Chunk<'_>,
    (part_start, part): (usize, &[u8]),
    max_line: usize,
    fallback: &Fallback,
    release: &Release,
) -> u64 {
    // 2 MiB of the input: whole huge pages, where the kernel maps the file with them.
    const ALIGN: u64 = 2 << 20;
    let mut released = 0usize;
    let mut line_no = 0u64;
    let mut pos = 0usize;
    let mut handled = 0u64;
    let mut batch = Vec::new();
    while pos < part.len() {
        if pos - released >= RELEASE_STEP {
            // Everything before this line is done with; hand it back on a 2 MiB boundary.
            let done = chunk.base_offset + (part_start + pos) as u64;
            let upto = (done - done % ALIGN).saturating_sub(chunk.base_offset) as usize;
            let from = part_start + released;
            if upto > from {
                release(from, upto);
                released = upto - part_start;
            }
        }
        // One pass finds the line end and the `{`/`[` the scanner must account for.
        let mut openers = Openers::default();
        let mut i = pos;
        if part[pos] == b'{' {
            openers.push(0);
            i += 1;
        }
        let nl = line_end(part, i, pos, &mut openers);
        let (line, next) = match nl {
            Some(e) => {
                line_no += 1;
                (&part[pos..e], e + 1)
            }
            None => (&part[pos..], part.len()),
        };
        let this_line = if next == part.len() && !part.ends_with(b"\n") {
            line_no + 1
        } else {
            line_no
        };
        let start = pos;
        pos = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let location = || Location {
            source: chunk.source.to_owned(),
            line: Some(chunk.first_line + this_line - 1),
            offset: Some(chunk.base_offset + (part_start + start) as u64),
        };
        if line.len() > max_line {
            handled += 1;
            diag.skip(
                SkipReason::TooLong,
                location(),
                format!("line of {} bytes is longer than {max_line}", line.len()),
            );
            continue;
        }
        if openers.odd && !plain_text(line) {
            // Invalid UTF-8 or a raw control character, maybe in a column the scanner skips:
            // the general parser decides, as it would with no scanner.
            if !trim(line).is_empty() {
                fallback(line, location(), &mut w.agg, diag);
            }
            continue;
        }
        if let Some(ev) = w.scanner.scan_row_with(line, &openers, &mut w.agg) {
            handled += 1;
            diag.note(w.agg.add(&ev), location);
            continue;
        }
        // Storage exports wrap each row in an envelope; Event Hubs batches put many in one line.
        if let Some(ev) = w.scanner.scan_envelope(line, &openers, &mut w.agg) {
            handled += 1;
            diag.note(w.agg.add(&ev), location);
            continue;
        }
        batch.clear();
        if w.scanner.scan_batch(line, &mut w.agg, &mut batch).is_some() {
            handled += batch.len() as u64;
            for ev in &batch {
                diag.note(w.agg.add(ev), location);
            }
            continue;
        }
        if trim(line).is_empty() {
            continue;
        }
        fallback(line, location(), &mut w.agg, diag);
    }
    diag.records_read += handled;
    line_no
}

#[cfg(test)]
mod tests {
    use super::split;

    fn lines(n: usize, len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            v.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len - 1));
            v.push(b'\n');
        }
        v
    }

    #[test]
    fn parts_cover_the_data_at_line_ends_and_are_not_tiny() {
        for (data, n, want) in [
            (lines(3000, 500), 3, 3), // 1.5 MB: three parts
            (lines(200, 500), 4, 1),  // 100 KB: one part of at least 64 KiB
            (lines(300, 500), 4, 2),  // 150 KB: two
            (Vec::new(), 2, 1),
        ] {
            let parts = split(&data, n);
            assert_eq!(parts.len(), want, "{} bytes", data.len());
            assert_eq!(parts.first().map(|p| p.0), Some(0));
            assert_eq!(parts.last().map(|p| p.1), Some(data.len()));
            for w in parts.windows(2) {
                assert_eq!(w[0].1, w[1].0);
                assert_eq!(data[w[0].1 - 1], b'\n');
            }
        }
    }
}
