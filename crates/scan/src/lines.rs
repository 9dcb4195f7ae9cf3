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

/// Splits `chunk.data` on `\n` into line-aligned pieces and processes them in parallel, the
/// workers sharing them out as they go (see [`PIECES_PER_WORKER`]). Each line (trailing `\r` stripped, blank lines ignored) goes through the fast
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

/// Told which bytes of `chunk.data` the workers are done with, as (start, end) offsets ending
/// on 2 MiB boundaries of the input, each byte at most once, so that the caller can drop them
/// from a memory map while the rest of the chunk is still being read.
pub type Release<'a> = dyn Fn(usize, usize) + Sync + 'a;

/// Pieces a chunk is cut into per worker. Each worker reads its own contiguous share of them
/// front to back and, once done, takes the rest of another's share from its back end: rows do
/// not all cost the same (a flooded device's bins are bigger, a fallback row costs many fast
/// ones), and with one fixed share each the faster worker would idle while the other finishes.
/// Shares stay contiguous, so few bins end up split between workers' aggregators.
const PIECES_PER_WORKER: usize = 16;

/// The bytes of the input dropped from the caller's map together: 2 MiB, whole huge pages
/// where the kernel maps the file with them.
const ALIGN: u64 = 2 << 20;

/// [`aggregate_lines`], handing finished ranges to `release` as the workers go.
pub fn aggregate_lines_releasing(
    chunk: Chunk<'_>,
    workers: &mut [Worker],
    max_line: usize,
    fallback: &Fallback,
    release: &Release,
) -> u64 {
    let n = workers.len();
    if n == 0 {
        // No worker, no work; still report the lines so callers' numbering stays right.
        return memchr::memchr_iter(b'\n', chunk.data).count() as u64;
    }
    let pieces = split(chunk.data, n * PIECES_PER_WORKER);
    let freeing = Freeing::new(chunk, &pieces, release);
    // Worker k owns pieces [front, back) of its share; `front` moves as it reads, `back` as
    // others take from the end.
    let shares: Vec<std::sync::Mutex<(usize, usize)>> = (0..n)
        .map(|k| std::sync::Mutex::new((pieces.len() * k / n, pieces.len() * (k + 1) / n)))
        .collect();
    let next = |me: usize| -> Option<usize> {
        let mut own = shares[me].lock().unwrap_or_else(|p| p.into_inner());
        if own.0 < own.1 {
            own.0 += 1;
            return Some(own.0 - 1);
        }
        drop(own);
        // The share with the most left, from its far end.
        let (_, victim) = (0..n)
            .filter(|&k| k != me)
            .map(|k| {
                let s = shares[k].lock().unwrap_or_else(|p| p.into_inner());
                (s.1.saturating_sub(s.0), k)
            })
            .max()?;
        let mut s = shares[victim].lock().unwrap_or_else(|p| p.into_inner());
        (s.0 < s.1).then(|| {
            s.1 -= 1;
            s.1
        })
    };
    let work = |w: &mut Worker, me: usize| -> Vec<(usize, u64, Diagnostics)> {
        let mut done = Vec::new();
        while let Some(i) = next(me) {
            let (start, end) = pieces[i];
            let mut diag = Diagnostics::default();
            let lines = run_part(
                w,
                &mut diag,
                chunk,
                (start, &chunk.data[start..end]),
                max_line,
                fallback,
            );
            freeing.done(start, end);
            done.push((i, lines, diag));
        }
        done
    };
    let mut results: Vec<(usize, u64, Diagnostics, usize)> = if n == 1 || pieces.len() == 1 {
        work(&mut workers[0], 0)
            .into_iter()
            .map(|(i, l, d)| (i, l, d, 0))
            .collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = workers
                .iter_mut()
                .enumerate()
                .map(|(k, w)| {
                    let work = &work;
                    s.spawn(move || work(w, k))
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .flat_map(|(k, h)| match h.join() {
                    Ok(r) => r.into_iter().map(move |(i, l, d)| (i, l, d, k)),
                    Err(p) => std::panic::resume_unwind(p),
                })
                .collect()
        })
    };
    // Each piece reports line numbers relative to its own start; once every piece has counted
    // its lines, the skip examples are shifted to absolute lines. This avoids a separate
    // counting pass over the data before the parallel one.
    results.sort_unstable_by_key(|r| r.0);
    let mut lines_before = 0u64;
    for (_, lines, mut diag, k) in results {
        for e in &mut diag.examples {
            if let Some(l) = e.location.line.as_mut() {
                *l += lines_before;
            }
        }
        workers[k].diag.merge(&diag);
        lines_before += lines;
    }
    lines_before
}

/// Hands the caller each 2 MiB stretch of the input (on [`ALIGN`] boundaries of the input)
/// once every piece that overlaps it is done, whichever worker read it. The stretch the chunk
/// ends in, unless it ends on a boundary, is left to the caller (who is about to drop it all).
struct Freeing<'a> {
    /// Absolute offset of the chunk's first byte.
    base: u64,
    len: usize,
    /// Per stretch, the pieces overlapping it that are not done yet.
    pending: std::sync::Mutex<Vec<u32>>,
    release: &'a Release<'a>,
}

impl<'a> Freeing<'a> {
    fn new(chunk: Chunk<'_>, pieces: &[(usize, usize)], release: &'a Release<'a>) -> Self {
        let mut f = Freeing {
            base: chunk.base_offset,
            len: chunk.data.len(),
            pending: std::sync::Mutex::new(Vec::new()),
            release,
        };
        let mut pending = vec![0u32; f.stretch(chunk.data.len()) + 1];
        for &(start, end) in pieces.iter().filter(|p| p.1 > p.0) {
            for p in &mut pending[f.stretch(start)..=f.stretch(end - 1)] {
                *p += 1;
            }
        }
        f.pending = std::sync::Mutex::new(pending);
        f
    }

    /// The stretch holding chunk offset `off`.
    fn stretch(&self, off: usize) -> usize {
        ((self.base + off as u64) / ALIGN - self.base / ALIGN) as usize
    }

    /// Chunk offset where stretch `k` ends (its boundary, possibly past the chunk's end).
    fn stretch_end(&self, k: usize) -> u64 {
        (self.base / ALIGN + k as u64 + 1) * ALIGN - self.base
    }

    /// The piece `start..end` is done: release the stretches no other piece still needs.
    fn done(&self, start: usize, end: usize) {
        if end <= start {
            return;
        }
        let (first, last) = (self.stretch(start), self.stretch(end - 1));
        let mut freed: Vec<usize> = Vec::new();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for k in first..=last {
                pending[k] -= 1;
                if pending[k] == 0 && self.stretch_end(k) <= self.len as u64 {
                    freed.push(k);
                }
            }
        }
        // Consecutive stretches go in one call.
        let mut i = 0;
        while i < freed.len() {
            let mut j = i;
            while j + 1 < freed.len() && freed[j + 1] == freed[j] + 1 {
                j += 1;
            }
            let from = if freed[i] == 0 {
                0
            } else {
                self.stretch_end(freed[i] - 1) as usize
            };
            (self.release)(from, self.stretch_end(freed[j]) as usize);
            i = j + 1;
        }
    }
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

/// Processes one piece. Skip locations get lines relative to the part (1-based for its first
/// line, then shifted by the caller) plus `chunk.first_line - 1`; offsets are absolute.
/// Returns the number of `\n` in the part.
fn run_part(
    w: &mut Worker,
    diag: &mut Diagnostics,
    chunk: Chunk<'_>,
    (part_start, part): (usize, &[u8]),
    max_line: usize,
    fallback: &Fallback,
) -> u64 {
    let mut line_no = 0u64;
    let mut pos = 0usize;
    let mut handled = 0u64;
    let mut batch = Vec::new();
    while pos < part.len() {
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
