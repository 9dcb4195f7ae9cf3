//! Reading a plain NDJSON file in windows of a memory map, so resident memory stays flat.
//!
//! Touched pages of a file mapping count as resident, so mapping a 2 GB file and reading it
//! through would show 2 GB of RSS. Instead each window (default 128 MiB, cut at a line end) is
//! processed by every worker in parallel and then released with `madvise(MADV_DONTNEED)`; the
//! kernel keeps the data in its page cache, the process no longer holds it. Peak RSS is then
//! about one window plus the aggregates, whatever the file size. Mapping rather than `read()`
//! saves a copy of every byte, which matters at several GB/s.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::Path;

use memmap2::{Advice, Mmap, UncheckedAdvice};

use crate::lines::{Chunk, Fallback, Worker, aggregate_lines};

/// How a file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileOptions {
    /// Bytes processed between releases of the mapping. Default 128 MiB: large enough that
    /// thread start-up per window is noise, small enough to keep RSS low.
    pub window: usize,
    /// Longest line accepted, in bytes; longer lines are skipped as too long. Default 16 MiB.
    pub max_line: usize,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            window: 128 << 20,
            max_line: 16 << 20,
        }
    }
}

/// Aggregates every line of the NDJSON file at `path` with `workers` (one thread each).
/// Returns the number of bytes read. `source` names the file in skip locations.
///
/// The file must not be truncated while it is read (the usual condition of memory-mapped
/// reading: it would end the process with SIGBUS). Exports are written once and then read.
pub fn aggregate_file(
    path: &Path,
    source: &str,
    workers: &mut [Worker],
    opts: FileOptions,
    fallback: &Fallback,
) -> io::Result<u64> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: the map is read-only and the file is an export that is not modified while it is
    // read (documented above); Rust sees it only as `&[u8]`.
    let map = unsafe { Mmap::map(&file)? };
    // Advice is a hint; failure to apply it changes speed, not results.
    let _ = map.advise(Advice::Sequential);
    let data: &[u8] = &map;
    let window = opts.window.max(1 << 20);
    let mut start = 0usize;
    let mut line = 1u64;
    while start < data.len() {
        let mut end = (start + window).min(data.len());
        if end < data.len() {
            end = match memchr::memrchr(b'\n', &data[start..end]) {
                Some(p) => start + p + 1,
                // One line longer than the window: take it whole (it is usually too long and
                // skipped, but it must not be cut in two).
                None => match memchr::memchr(b'\n', &data[end..]) {
                    Some(p) => end + p + 1,
                    None => data.len(),
                },
            };
        }
        let _ = map.advise_range(Advice::WillNeed, start, end - start);
        let chunk = Chunk {
            data: &data[start..end],
            source,
            first_line: line,
            base_offset: start as u64,
        };
        line += aggregate_lines(chunk, workers, opts.max_line, fallback);
        // SAFETY: MADV_DONTNEED on a read-only shared file mapping only drops this process's
        // page table entries; the pages are re-read from the page cache if touched again, and
        // no reference into this range is used after this point.
        let _ =
            unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
        start = end;
    }
    Ok(len)
}
