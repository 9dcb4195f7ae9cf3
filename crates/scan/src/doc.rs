//! JSON documents whose rows sit in one array — a JSON array of rows, an Advanced Hunting or
//! Graph response (`Results` / `results`), an Event Hubs message (`records`) — cut into their
//! elements without parsing them, so that the rows take the same parallel fast path as NDJSON
//! lines ([`aggregate_spans`]) instead of a general JSON parser on one thread.
//!
//! [`DocSplitter`] reads the document's structure only: strings are skipped whole (to their
//! closing quote), containers by depth, and everything outside the row arrays (a `Schema`, the
//! `Stats`) is stepped over. It is incremental, so a compressed document streams through in
//! blocks with memory bounded by a block: each call takes the bytes up to the last complete
//! element and the caller keeps the rest for the next call. Until the splitter has found a row
//! array it has used nothing, so a document it does not read (a Log Analytics response, whose
//! rows are positional, or one whose first row array comes too late) goes whole to the general
//! reader.

use floodwatch_core::{Diagnostics, Location};

use crate::lines::{Fallback, Worker};
use crate::row::Openers;

/// One element of a row array: `data[start..end]`, its first byte on line `line` (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub line: u64,
}

/// What [`DocSplitter::feed`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The first `n` bytes are used (their complete elements are in the spans); keep the rest
    /// and call again with more.
    Used(usize),
    /// Not a document this splitter reads: nothing was used, read it another way.
    NotFast,
    /// The document ends (or its JSON breaks) at byte `at`, on line `line`: `what` says how, or
    /// `None` for a clean end (only whitespace after it). Everything before is in the spans.
    End {
        at: usize,
        line: u64,
        what: Option<&'static str>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the document's first byte.
    Start,
    /// In an object, before a key (`first`: just after `{`).
    Key { first: bool, obj: usize },
    /// In an object, after a value.
    AfterValue { obj: usize },
    /// In a row array, before an element (`first`: just after `[`); `top`: the document itself.
    Elem { first: bool, top: bool },
    /// In a row array, after an element.
    AfterElem { top: bool },
    /// After a document.
    Done,
}

/// Keys whose array holds the rows, as the general reader streams them (any case).
const ROW_KEYS: [&[u8]; 3] = [b"records", b"results", b"value"];

/// The incremental splitter; see the module documentation.
#[derive(Clone, Debug)]
pub struct DocSplitter {
    state: State,
    /// Line of the first byte not yet used.
    line: u64,
    /// Set once a row array was entered: from then on bytes are used as they are split.
    committed: bool,
}

impl Default for DocSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl DocSplitter {
    /// Longest stretch before the first row array (a `Schema` of a few hundred columns is a
    /// few kilobytes): a document whose rows start later is read another way.
    pub const MAX_PREAMBLE: usize = 8 << 20;

    pub fn new() -> Self {
        DocSplitter {
            state: State::Start,
            line: 1,
            committed: false,
        }
    }

    /// Splits `buf` — the bytes after those used by the previous calls — pushing the complete
    /// elements of row arrays to `spans` (offsets into `buf`). `eof`: no more bytes follow.
    pub fn feed(&mut self, buf: &[u8], eof: bool, spans: &mut Vec<Span>) -> Split {
        let before = spans.len();
        if !self.committed {
            // Nothing used yet: start over on the longer buffer.
            self.state = State::Start;
            self.line = 1;
        }
        let mut pos = 0usize;
        let mut line = self.line;
        // (state, position, line) at the last point where the rest can be read afresh.
        let mut used = (self.state, 0usize, self.line);
        let outcome = loop {
            skip_ws(buf, &mut pos, &mut line);
            let Some(&c) = buf.get(pos) else {
                break None;
            };
            match self.state {
                State::Start | State::Done => match c {
                    b'[' => {
                        pos += 1;
                        self.state = State::Elem {
                            first: true,
                            top: true,
                        };
                        self.committed = true;
                    }
                    // Another document after the first: read whole as one element, which the
                    // row reader takes apart (a row, an envelope, a message with records).
                    b'{' if self.committed => {
                        let mut l = line;
                        match skip_value(buf, pos, eof, &mut l) {
                            Some(Ok(e)) => {
                                spans.push(Span {
                                    start: pos,
                                    end: e,
                                    line,
                                });
                                pos = e;
                                line = l;
                                self.state = State::Done;
                            }
                            Some(Err(what)) => break Some(self.broken(pos, l, what)),
                            None => break None,
                        }
                    }
                    b'{' => {
                        self.state = State::Key {
                            first: true,
                            obj: pos,
                        };
                        pos += 1;
                    }
                    _ if !self.committed => break Some(Split::NotFast),
                    _ => break Some(self.end(pos, line, Some("expected a JSON array or object"))),
                },
                State::Key { first, obj } => {
                    if c == b'}' && first {
                        // `{}`: an object with no rows.
                        pos += 1;
                        match self.object_closed(obj) {
                            Some(s) => break Some(s),
                            None => continue,
                        }
                    }
                    if c != b'"' {
                        break Some(self.broken(pos, line, "expected a key"));
                    }
                    let Some(end) = skip_string(buf, pos + 1) else {
                        break None;
                    };
                    let key = &buf[pos + 1..end - 1];
                    let mut v = end;
                    skip_ws(buf, &mut v, &mut line);
                    match buf.get(v) {
                        None => break None,
                        Some(b':') => v += 1,
                        Some(_) => break Some(self.broken(v, line, "expected ':'")),
                    }
                    skip_ws(buf, &mut v, &mut line);
                    let Some(&first_byte) = buf.get(v) else {
                        break None;
                    };
                    let rows = ROW_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k));
                    if rows && first_byte == b'[' {
                        pos = v + 1;
                        self.state = State::Elem {
                            first: true,
                            top: false,
                        };
                        self.committed = true;
                    } else if !self.committed && key.eq_ignore_ascii_case(b"tables") {
                        break Some(Split::NotFast);
                    } else {
                        let mut l = line;
                        match skip_value(buf, v, eof, &mut l) {
                            Some(Ok(e)) => {
                                pos = e;
                                line = l;
                                self.state = State::AfterValue { obj };
                            }
                            Some(Err(what)) => break Some(self.broken(v, l, what)),
                            None => break None,
                        }
                    }
                }
                State::AfterValue { obj } => match c {
                    b',' => {
                        pos += 1;
                        self.state = State::Key { first: false, obj };
                    }
                    b'}' => {
                        pos += 1;
                        if let Some(s) = self.object_closed(obj) {
                            break Some(s);
                        }
                    }
                    _ => break Some(self.broken(pos, line, "expected ',' or '}'")),
                },
                State::Elem { first, top } => {
                    if c == b']' && first {
                        pos += 1;
                        self.state = self.after_rows(top);
                    } else {
                        let mut l = line;
                        match skip_value(buf, pos, eof, &mut l) {
                            Some(Ok(e)) => {
                                spans.push(Span {
                                    start: pos,
                                    end: e,
                                    line,
                                });
                                pos = e;
                                line = l;
                                self.state = State::AfterElem { top };
                            }
                            Some(Err(what)) => break Some(self.broken(pos, l, what)),
                            None => break None,
                        }
                    }
                }
                State::AfterElem { top } => match c {
                    b',' => {
                        pos += 1;
                        self.state = State::Elem { first: false, top };
                    }
                    b']' => {
                        pos += 1;
                        self.state = self.after_rows(top);
                    }
                    _ => break Some(self.broken(pos, line, "expected ',' or ']'")),
                },
            }
            if self.committed {
                used = (self.state, pos, line);
            }
        };
        match outcome {
            Some(Split::NotFast) => {
                spans.truncate(before);
                Split::NotFast
            }
            Some(s) => s,
            None if eof => {
                if !self.committed {
                    return Split::NotFast;
                }
                let (state, at, l) = used;
                // Elements after the last point that can be resumed were incomplete.
                spans.retain(|s| s.end <= at);
                if matches!(state, State::Done | State::Start) {
                    self.state = State::Done;
                    Split::End {
                        at,
                        line: l,
                        what: None,
                    }
                } else {
                    Split::End {
                        at,
                        line: l,
                        what: Some("the document ends before it is closed"),
                    }
                }
            }
            None => {
                if !self.committed {
                    if buf.len() > Self::MAX_PREAMBLE {
                        return Split::NotFast;
                    }
                    spans.truncate(before);
                    return Split::Used(0);
                }
                let (state, at, l) = used;
                spans.retain(|s| s.end <= at);
                self.state = state;
                self.line = l;
                Split::Used(at)
            }
        }
    }

    fn after_rows(&self, top: bool) -> State {
        if top {
            State::Done
        } else {
            // Back in the enclosing object; its start no longer matters (it has rows).
            State::AfterValue { obj: usize::MAX }
        }
    }

    /// The document's object closed. One that held a row array is done with; one that held
    /// none is a single row or envelope (pretty-printed, say): the general reader's business.
    fn object_closed(&mut self, obj: usize) -> Option<Split> {
        self.state = State::Done;
        (obj != usize::MAX).then_some(Split::NotFast)
    }

    fn end(&mut self, at: usize, line: u64, what: Option<&'static str>) -> Split {
        self.state = State::Done;
        Split::End { at, line, what }
    }

    fn broken(&mut self, at: usize, line: u64, what: &'static str) -> Split {
        if !self.committed {
            return Split::NotFast;
        }
        self.end(at, line, Some(what))
    }
}

#[inline]
fn skip_ws(b: &[u8], pos: &mut usize, line: &mut u64) {
    while let Some(&c) = b.get(*pos) {
        match c {
            b' ' | b'\t' | b'\r' => {}
            b'\n' => *line += 1,
            _ => return,
        }
        *pos += 1;
    }
}

/// The offset just after the string whose content starts at `i` (after its opening quote), or
/// `None` when it does not end in `b`.
#[inline]
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let k = i + memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[k] == b'"' {
            return Some(k + 1);
        }
        i = k + 2;
    }
}

/// The offset just after the JSON value starting at `i` (which is not whitespace): `None` when
/// it does not end within `b` (and more may follow), an error when it cannot be a value.
/// Containers are matched by depth alone; a mismatched bracket inside an element is left for
/// the row reader to find.
#[inline]
fn skip_value(
    b: &[u8],
    i: usize,
    eof: bool,
    line: &mut u64,
) -> Option<Result<usize, &'static str>> {
    match b[i] {
        b'"' => skip_string(b, i + 1).map(Ok),
        b'{' | b'[' => {
            let end = container_end(b, i)?;
            *line += memchr::memchr_iter(b'\n', &b[i..end]).count() as u64;
            Some(Ok(end))
        }
        b'}' | b']' | b',' | b':' => Some(Err("expected a value")),
        _ => {
            // A number, `true`, `false` or `null`: up to the next delimiter.
            let n = b[i..]
                .iter()
                .position(|&c| matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n'));
            match n {
                Some(n) => Some(Ok(i + n)),
                None if eof => Some(Ok(b.len())),
                None => None,
            }
        }
    }
}

/// The offset just after the container (object or array) opening at `b[i]`, matched by depth
/// alone, or `None` when it does not close within `b`. Every byte of a document passes through
/// here, so it goes 64 bytes at a time as simdjson's first stage does: bit masks of the quotes,
/// backslashes and brackets of a block; the quotes that are escaped (after an odd run of
/// backslashes) dropped; the bytes inside strings found by a prefix XOR of the quotes; then only
/// the brackets outside strings are visited.
fn container_end(b: &[u8], i: usize) -> Option<usize> {
    let mut depth = 0u64;
    let mut in_string = 0u64;
    let mut escaped = 0u64;
    let mut at = i;
    while at < b.len() {
        let block = block_at(b, at);
        let m = block_masks(&block);
        let esc = escaped_bits(m.backslash, &mut escaped);
        let quotes = m.quote & !esc;
        let inside = prefix_xor(quotes) ^ in_string;
        in_string = ((inside as i64) >> 63) as u64;
        let mut brackets = (m.open | m.close) & !inside;
        while brackets != 0 {
            let k = brackets.trailing_zeros();
            brackets &= brackets - 1;
            if m.open >> k & 1 == 1 {
                depth += 1;
            } else {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(at + k as usize + 1);
                }
            }
        }
        at += 64;
    }
    None
}

/// The 64 bytes of `b` from `at`; the tail padded with spaces (which are no structure).
#[inline]
fn block_at(b: &[u8], at: usize) -> [u8; 64] {
    match b
        .get(at..at + 64)
        .and_then(|c| <[u8; 64]>::try_from(c).ok())
    {
        Some(c) => c,
        None => {
            let mut pad = [b' '; 64];
            let rest = b.get(at..).unwrap_or_default();
            pad[..rest.len()].copy_from_slice(rest);
            pad
        }
    }
}

/// Whether a row holds a control character that makes it malformed JSON: inside a string any
/// byte below 0x20, outside one any but JSON's whitespace (tab, newline, carriage return). The
/// scanner does not read every string, so it would take such a row where the general parser
/// refuses it.
pub fn refused_controls(b: &[u8]) -> bool {
    // Most rows have no control byte at all, and a pretty-printed one only its whitespace: one
    // pass that vectorizes tells the first kind apart.
    if !b
        .chunks(64)
        .any(|c| c.iter().fold(false, |m, &x| m | (x < 0x20)))
    {
        return false;
    }
    let (mut in_string, mut escaped, mut at) = (0u64, 0u64, 0);
    while at < b.len() {
        let block = block_at(b, at);
        let m = block_masks(&block);
        let esc = escaped_bits(m.backslash, &mut escaped);
        let inside = prefix_xor(m.quote & !esc) ^ in_string;
        in_string = ((inside as i64) >> 63) as u64;
        let (mut control, mut space) = (0u64, 0u64);
        for (k, chunk) in block.chunks_exact(16).enumerate() {
            let Ok(chunk) = <&[u8; 16]>::try_from(chunk) else {
                continue;
            };
            let (c, w) = controls16(chunk);
            control |= u64::from(c) << (16 * k);
            space |= u64::from(w) << (16 * k);
        }
        if control & (inside | !space) != 0 {
            return true;
        }
        at += 64;
    }
    false
}

/// The bytes below 0x20 of 16 bytes, and among them JSON's whitespace (tab, newline,
/// carriage return).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[inline(always)]
fn controls16(b: &[u8; 16]) -> (u32, u32) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: `b` is 16 readable bytes (an unaligned load); SSE2 is part of x86-64.
    unsafe {
        let v = _mm_loadu_si128(b.as_ptr().cast::<__m128i>());
        let limit = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, limit), limit);
        let space = _mm_or_si128(
            _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\t' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8)),
            ),
            _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\r' as i8)),
        );
        (
            _mm_movemask_epi8(control) as u32,
            _mm_movemask_epi8(space) as u32,
        )
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn controls16(b: &[u8; 16]) -> (u32, u32) {
    let mut m = (0, 0);
    for (k, &c) in b.iter().enumerate() {
        m.0 |= u32::from(c < 0x20) << k;
        m.1 |= u32::from(matches!(c, b'\t' | b'\n' | b'\r')) << k;
    }
    m
}

/// Bits of the bytes after an odd run of backslashes (escaped), carrying a run across blocks in
/// `carry` (simdjson's `find_escaped`).
#[inline]
fn escaped_bits(backslash: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let backslash = backslash & !*carry;
    let follows = (backslash << 1) | *carry;
    let odd_starts = backslash & !EVEN & !follows;
    let (even_runs, overflow) = odd_starts.overflowing_add(backslash);
    *carry = overflow as u64;
    (EVEN ^ (even_runs << 1)) & follows
}

/// Bit `k` set when an odd number of bits at or below `k` are set in `x`.
#[inline]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The structural bytes of one block.
struct Masks {
    quote: u64,
    backslash: u64,
    /// `{` or `[`.
    open: u64,
    /// `}` or `]`.
    close: u64,
}

#[inline]
fn block_masks(b: &[u8; 64]) -> Masks {
    let mut m = Masks {
        quote: 0,
        backslash: 0,
        open: 0,
        close: 0,
    };
    for (k, chunk) in b.chunks_exact(16).enumerate() {
        let Ok(chunk) = <&[u8; 16]>::try_from(chunk) else {
            continue;
        };
        let (q, bs, o, c) = masks16(chunk);
        let sh = 16 * k;
        m.quote |= u64::from(q) << sh;
        m.backslash |= u64::from(bs) << sh;
        m.open |= u64::from(o) << sh;
        m.close |= u64::from(c) << sh;
    }
    m
}

/// `"`, `\\`, `{`/`[` and `}`/`]` of 16 bytes. The brackets differ from the braces only in bit
/// 0x20, so one compare after setting it finds both.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[inline(always)]
fn masks16(b: &[u8; 16]) -> (u32, u32, u32, u32) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: `b` is 16 readable bytes (an unaligned load); SSE2 is part of x86-64.
    unsafe {
        let v = _mm_loadu_si128(b.as_ptr().cast::<__m128i>());
        let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
        let q = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let bs = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        let o = _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8));
        let c = _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8));
        (
            _mm_movemask_epi8(q) as u32,
            _mm_movemask_epi8(bs) as u32,
            _mm_movemask_epi8(o) as u32,
            _mm_movemask_epi8(c) as u32,
        )
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn masks16(b: &[u8; 16]) -> (u32, u32, u32, u32) {
    let mut m = (0, 0, 0, 0);
    for (k, &c) in b.iter().enumerate() {
        m.0 |= u32::from(c == b'"') << k;
        m.1 |= u32::from(c == b'\\') << k;
        m.2 |= u32::from(c | 0x20 == b'{') << k;
        m.3 |= u32::from(c | 0x20 == b'}') << k;
    }
    m
}

/// A document's bytes in memory (one block of a stream, or all of a mapped file).
#[derive(Clone, Copy, Debug)]
pub struct DocChunk<'a> {
    pub data: &'a [u8],
    /// The input's name, for skip locations.
    pub source: &'a str,
    /// Byte offset of `data[0]` in the (decompressed) input.
    pub base_offset: u64,
}

/// Reads the elements `spans` of `doc` on every worker: each worker takes a run of consecutive
/// elements (about the same number of bytes each) through the fast scanner, as
/// [`crate::aggregate_lines`] does with lines; an element the scanner does not take goes to
/// `fallback` with its line and offset. Counts `diag.records_read` for what it handles itself.
pub fn aggregate_spans(
    doc: DocChunk<'_>,
    spans: &[Span],
    workers: &mut [Worker],
    fallback: &Fallback,
) {
    if spans.is_empty() || workers.is_empty() {
        return;
    }
    let parts = split_spans(spans, workers.len());
    if parts.len() <= 1 {
        let w = &mut workers[0];
        let mut diag = Diagnostics::default();
        run_spans(w, &mut diag, doc, spans, fallback);
        w.diag.merge(&diag);
        return;
    }
    let results: Vec<Diagnostics> = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter_mut()
            .zip(&parts)
            .map(|(w, &(a, b))| {
                s.spawn(move || {
                    let mut diag = Diagnostics::default();
                    run_spans(w, &mut diag, doc, &spans[a..b], fallback);
                    diag
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
    for (diag, w) in results.into_iter().zip(workers.iter_mut()) {
        w.diag.merge(&diag);
    }
}

/// Cuts `spans` into at most `n` runs of about equal bytes and at least 64 KiB each.
fn split_spans(spans: &[Span], n: usize) -> Vec<(usize, usize)> {
    const MIN_PART: usize = 64 << 10;
    let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
        return Vec::new();
    };
    let total = last.end - first.start;
    let n = n.min(total / MIN_PART).max(1);
    let mut parts = Vec::with_capacity(n);
    let mut a = 0;
    for i in 1..n {
        let target = first.start + total * i / n;
        let b = a + spans[a..].partition_point(|s| s.start < target);
        if b > a {
            parts.push((a, b));
            a = b;
        }
    }
    if a < spans.len() {
        parts.push((a, spans.len()));
    }
    parts
}

fn run_spans(
    w: &mut Worker,
    diag: &mut Diagnostics,
    doc: DocChunk<'_>,
    spans: &[Span],
    fallback: &Fallback,
) {
    let mut handled = 0u64;
    for s in spans {
        let text = &doc.data[s.start..s.end];
        let location = || Location {
            source: doc.source.to_owned(),
            line: Some(s.line),
            offset: Some(doc.base_offset + s.start as u64),
        };
        // Invalid UTF-8 or a raw control character, maybe in a column the scanner skips: the
        // general parser decides.
        if refused_controls(text) || (!text.is_ascii() && std::str::from_utf8(text).is_err()) {
            fallback(text, location(), &mut w.agg, diag);
            continue;
        }
        let openers = Openers::find(text);
        if let Some(ev) = w.scanner.scan_row_with(text, &openers, &mut w.agg) {
            handled += 1;
            diag.note(w.agg.add(&ev), location);
            continue;
        }
        // An Event Hubs message's `records` hold Streaming API envelopes.
        if let Some(ev) = w.scanner.scan_envelope(text, &openers, &mut w.agg) {
            handled += 1;
            diag.note(w.agg.add(&ev), location);
            continue;
        }
        fallback(text, location(), &mut w.agg, diag);
    }
    diag.records_read += handled;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `doc` fed in pieces of `step` bytes, as a stream arrives; returns the element
    /// texts with their lines, and how it ended.
    fn split_in_steps(doc: &[u8], step: usize) -> (Vec<(String, u64)>, Split) {
        let mut s = DocSplitter::new();
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            let more = (fed + step).min(doc.len());
            buf.extend_from_slice(&doc[fed..more]);
            fed = more;
            let eof = fed == doc.len();
            let mut spans = Vec::new();
            let r = s.feed(&buf, eof, &mut spans);
            for sp in &spans {
                out.push((
                    String::from_utf8_lossy(&buf[sp.start..sp.end]).into_owned(),
                    sp.line,
                ));
            }
            match r {
                Split::Used(n) => {
                    buf.drain(..n);
                    if eof {
                        return (out, r);
                    }
                }
                other => return (out, other),
            }
        }
    }

    #[test]
    fn arrays_and_responses_split_into_their_rows_in_any_pieces() {
        let rows = [
            r#"{"a":1,"s":"x},{\"y\"]"}"#,
            r#"{"b":[1,{"c":"}"}]}"#,
            r#""not a row""#,
            "17",
        ];
        let arr = format!("[{}]", rows.join(","));
        let pretty = format!("[\n  {}\n]\n", rows.join(",\n  "));
        let api = format!(
            r#"{{"Stats":{{"x":[1,2]}},"Schema":[{{"Name":"a"}}],"Results":[{}],"After":null}}"#,
            rows.join(", ")
        );
        let two = format!("{arr}\n{arr}");
        for (doc, lines, times) in [
            (&arr, [1, 1, 1, 1], 1),
            (&pretty, [2, 3, 4, 5], 1),
            (&api, [1, 1, 1, 1], 1),
            (&two, [1, 1, 1, 1], 2),
        ] {
            for step in [1, 2, 3, 7, 64, 100_000] {
                let (got, end) = split_in_steps(doc.as_bytes(), step);
                let want: Vec<(String, u64)> = (0..times)
                    .flat_map(|t| {
                        rows.iter()
                            .zip(lines)
                            .map(move |(r, l)| (r.to_string(), l + t as u64))
                    })
                    .collect();
                assert_eq!(got, want, "{doc} in steps of {step}");
                assert!(
                    matches!(end, Split::End { what: None, .. } | Split::Used(_)),
                    "{doc}: {end:?}"
                );
            }
        }
    }

    #[test]
    fn documents_it_does_not_read_are_left_whole() {
        for doc in [
            r#"{"tables":[{"columns":[],"rows":[]}]}"#,
            r#"{"Timestamp":"x","DeviceName":"a"}"#,
            "nope",
            "",
        ] {
            let (got, end) = split_in_steps(doc.as_bytes(), 5);
            assert!(got.is_empty(), "{doc}");
            assert_eq!(end, Split::NotFast, "{doc}");
        }
    }

    #[test]
    fn a_broken_document_ends_where_it_breaks() {
        let (got, _) = split_in_steps(br#"[{"a":1},{"b":2} x]"#, 4);
        assert_eq!(got.len(), 2);
        let (_, end) = split_in_steps(br#"[{"a":1},{"b":2} x]"#, 100);
        assert_eq!(
            end,
            Split::End {
                at: 17,
                line: 1,
                what: Some("expected ',' or ']'")
            }
        );
        let (got, end) = split_in_steps(br#"[{"a":1},{"b":2"#, 4);
        assert_eq!(got.len(), 1);
        assert!(matches!(end, Split::End { what: Some(_), .. }), "{end:?}");
    }

    /// The block-wise container end agrees with a byte-by-byte walk on values with strings,
    /// escapes (runs of backslashes, escaped quotes, across block edges) and nesting.
    #[test]
    fn container_ends_where_a_byte_walk_ends_it() {
        fn walk(b: &[u8], i: usize) -> Option<usize> {
            let (mut depth, mut j) = (0, i);
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j + 1)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        // Valid JSON values only: a backslash outside a string is no escape to a byte walk
        // but is to the block masks (either way such a document is malformed).
        let parts = [
            r#""a\\""#,
            r#""\"}""#,
            r#"{"x":[1,2]}"#,
            r#""]}[{""#,
            r#""\\\\""#,
            r#""\\\"[""#,
            r#""\"""#,
            "[]",
            r#"{"s":"}\\","t":[{}]}"#,
        ];
        let mut x = 7u64;
        for n in 0..400 {
            let mut v = String::from("{\"k\":[");
            for _ in 0..n % 40 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push_str(parts[(x % parts.len() as u64) as usize]);
                v.push(',');
            }
            v.push_str("0]}");
            let b = format!("{v},{v}");
            assert_eq!(container_end(b.as_bytes(), 0), walk(b.as_bytes(), 0), "{b}");
            assert_eq!(container_end(&b.as_bytes()[..v.len() - 1], 0), None, "{v}");
        }
    }

    #[test]
    fn control_characters_the_general_parser_refuses() {
        let pretty = "{\n  \"a\": \"x\",\r\n\t\"b\": [1, 2]\n}";
        assert!(!refused_controls(pretty.as_bytes()));
        assert!(!refused_controls(br#"{"a":"\u0009 \" \\"}"#));
        for bad in [
            "{\"a\": \"t\tb\"}",
            "{\"a\": \"n\nb\"}",
            "{\"a\": \"\\\" \r\"}",
            "{\"a\": 1,\u{7} \"b\": 2}",
            "{\"a\": \"\0\"}",
        ] {
            assert!(refused_controls(bad.as_bytes()), "{bad:?}");
        }
        // Past the first block, and a string carried across blocks.
        let long = format!("{{\"a\": \"{}\tb\"}}", "x".repeat(100));
        assert!(refused_controls(long.as_bytes()));
        let long = format!("{{\"a\": \"{}\",\n\"b\": 1}}", "x".repeat(100));
        assert!(!refused_controls(long.as_bytes()));
    }

    #[test]
    fn spans_are_cut_into_runs_of_about_equal_bytes() {
        let spans: Vec<Span> = (0..1000)
            .map(|i| Span {
                start: i * 1000,
                end: i * 1000 + 999,
                line: 1,
            })
            .collect();
        let parts = split_spans(&spans, 4);
        assert_eq!(parts, [(0, 250), (250, 500), (500, 750), (750, 1000)]);
        assert_eq!(split_spans(&spans[..10], 4), [(0, 10)], "too small to cut");
    }
}
