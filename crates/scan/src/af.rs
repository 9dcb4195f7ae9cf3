//! `AdditionalFields`: a JSON object, a JSON-encoded string of one, or null / `""` / `{}` / `[]`.
//!
//! Two steps, because most rows never need the contents: [`scan_additional_fields`] only finds
//! where the value ends (so keys inside it are not mistaken for the row's own), and
//! [`AfRef::values`] reads direction, byte/packet counters and `uniqueEventsAggregated` for the
//! rows that use them. The encoded-string form is read in place, with `\"` as its quote; any
//! other escape sends the line to the full parser.

use floodwatch_core::Direction;

use crate::row::{parse_u64, quote_backslash_masks, quote_or_backslash};

/// Where an `AdditionalFields` value is, by its form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfRef {
    /// null.
    Null,
    /// A JSON string: the bytes between its quotes (still escaped).
    Encoded(usize, usize),
    /// An object: from `{` to just past `}`.
    Object(usize, usize),
    /// An empty array.
    EmptyArray,
}

/// What detection reads from `AdditionalFields`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AfValues {
    pub direction: Direction,
    /// `orig_bytes + resp_bytes`.
    pub bytes: Option<u64>,
    /// `orig_pkts + resp_pkts`.
    pub packets: Option<u64>,
    /// `uniqueEventsAggregated`.
    pub weight: Option<u32>,
    /// `"Tcp Flags"`, when it is 0 to 255 (a larger number reads as absent, as in the full
    /// parser).
    pub tcp_flags: Option<u8>,
}

/// The keys [`Walker`] reads. Any other key that equals one of them but for letter case sends
/// the row to the full parser, which matches keys case-insensitively.
const AF_KEYS: [&[u8]; 7] = [
    b"direction",
    b"orig_bytes",
    b"resp_bytes",
    b"orig_pkts",
    b"resp_pkts",
    b"uniqueEventsAggregated",
    b"Tcp Flags",
];

/// Finds the end of the value starting at `v`. Returns (offset just past the value, its form),
/// or `None` for anything the scanner does not handle.
pub(crate) fn scan_additional_fields(line: &[u8], v: usize) -> Option<(usize, AfRef)> {
    match *line.get(v)? {
        b'n' => line
            .get(v..v + 4)
            .filter(|s| *s == b"null")
            .map(|_| (v + 4, AfRef::Null)),
        b'"' => {
            let end = string_end(line, v + 1)?;
            Some((end + 1, AfRef::Encoded(v + 1, end)))
        }
        b'{' => {
            let end = container_end(line, v)?;
            Some((end, AfRef::Object(v, end)))
        }
        b'[' => {
            let i = skip_ws(line, v + 1);
            (line.get(i) == Some(&b']')).then_some((i + 1, AfRef::EmptyArray))
        }
        _ => None,
    }
}

/// Offset of the closing quote of a string whose contents start at `i`: the first quote not
/// escaped by an odd run of backslashes, found 64 bytes at a time. An encoded object has a
/// `\"` every few bytes, and stopping at each one costs a mispredicted branch.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut carry = 0u64;
    let mut at = i;
    loop {
        let rest = b.get(at..)?;
        let n = rest.len().min(64);
        let mut pad = [b' '; 64];
        let block = match <&[u8; 64]>::try_from(&rest[..n]) {
            Ok(full) => full,
            Err(_) => {
                pad[..n].copy_from_slice(&rest[..n]);
                &pad
            }
        };
        let (quotes, backslashes) = quote_backslash_masks(block);
        let open = quotes & !escaped_bits(backslashes, &mut carry);
        if open != 0 {
            return Some(at + open.trailing_zeros() as usize);
        }
        if n < 64 {
            return None;
        }
        at += 64;
    }
}

/// The bits of the bytes that an odd run of backslashes escapes, given one 64-byte block's
/// backslash bits and whether the previous block ended in an unfinished escape (`carry`, 0 or
/// 1). simdjson's method: a run's length parity is read off a carry-propagating subtraction.
#[inline]
fn escaped_bits(backslash: u64, carry: &mut u64) -> u64 {
    const ODD_BITS: u64 = 0xAAAA_AAAA_AAAA_AAAA;
    if backslash == 0 {
        let escaped = *carry;
        *carry = 0;
        return escaped;
    }
    // A backslash that is itself escaped does not start an escape.
    let potential = backslash & !*carry;
    let maybe_escaped = potential << 1;
    let codes = (maybe_escaped | ODD_BITS).wrapping_sub(potential) ^ ODD_BITS;
    let escaped = codes ^ (backslash | *carry);
    *carry = (codes & backslash) >> 63;
    escaped
}

/// Offset just past the container opening at `i` (strings inside are skipped properly).
fn container_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'"' => i = string_end(b, i + 1)?,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

impl AfRef {
    /// Reads the values detection needs; `None` = let the full parser decide.
    pub(crate) fn values(self, line: &[u8]) -> Option<AfValues> {
        match self {
            AfRef::Null | AfRef::EmptyArray => Some(AfValues::default()),
            AfRef::Object(s, e) => Walker::<false> { b: &line[s..e] }.object(),
            AfRef::Encoded(s, e) => {
                let c = &line[s..e];
                let t = trim(c);
                if t.is_empty() || t == b"[]" {
                    return Some(AfValues::default());
                }
                Walker::<true> { b: c }.object()
            }
        }
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let s = skip_ws(b, 0);
    let mut e = b.len();
    while e > s && matches!(b[e - 1], b' ' | b'\t' | b'\n' | b'\r') {
        e -= 1;
    }
    &b[s..e]
}

/// A flat-object reader over raw JSON (`ENCODED` false: quotes are `"`) or over the contents
/// of a JSON string holding JSON (`ENCODED` true: quotes are `\"`). Nested values, other
/// escapes or odd syntax: `None`. The form is a constant so that each reader's quote tests
/// are byte compares without a test of the form.
struct Walker<'a, const ENCODED: bool> {
    b: &'a [u8],
}

enum V<'a> {
    Str(&'a [u8]),
    Bare(&'a [u8]),
    Null,
}

impl<'a, const ENCODED: bool> Walker<'a, ENCODED> {
    /// The length of a quote: `\"` or `"`.
    const QUOTE: usize = if ENCODED { 2 } else { 1 };

    #[inline(always)]
    fn quote_at(&self, i: usize) -> bool {
        if ENCODED {
            self.b.get(i) == Some(&b'\\') && self.b.get(i + 1) == Some(&b'"')
        } else {
            self.b.get(i) == Some(&b'"')
        }
    }

    /// A string starting at `i` (at its quote): (contents, offset past the closing quote).
    #[inline(always)]
    fn string(&self, i: usize) -> Option<(&'a [u8], usize)> {
        let s = i + Self::QUOTE;
        let rest = self.b.get(s..)?;
        let p = quote_or_backslash(rest)?;
        if !ENCODED {
            // Raw JSON: the first quote or backslash must be the closing quote.
            (rest[p] == b'"').then(|| (&rest[..p], s + p + 1))
        } else {
            // Encoded: the first backslash must start the closing `\"`.
            (rest[p] == b'\\' && rest.get(p + 1) == Some(&b'"')).then(|| (&rest[..p], s + p + 2))
        }
    }

    fn object(&self) -> Option<AfValues> {
        let b = self.b;
        let mut out = AfValues::default();
        let (mut ob, mut rb, mut op, mut rp) = (None, None, None, None);
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i = skip_ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                if !self.quote_at(i) {
                    return None;
                }
                let (key, next) = self.string(i)?;
                i = skip_ws(b, next);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i = skip_ws(b, i + 1);
                let val = if self.quote_at(i) {
                    let (s, next) = self.string(i)?;
                    i = next;
                    V::Str(s)
                } else {
                    match *b.get(i)? {
                        b'{' | b'[' | b'"' | b'\\' => return None,
                        _ => {}
                    }
                    let rest = &b[i..];
                    let end = rest
                        .iter()
                        .position(|&c| matches!(c, b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
                        .unwrap_or(rest.len());
                    i += end;
                    match &rest[..end] {
                        b"null" => V::Null,
                        [] => return None,
                        s => V::Bare(s),
                    }
                };
                match key {
                    b"direction" => {
                        out.direction = match val {
                            V::Str(s) => Direction::parse(s),
                            V::Null => Direction::Unknown,
                            V::Bare(_) => return None,
                        }
                    }
                    b"orig_bytes" => ob = Some(counter(&val)?),
                    b"resp_bytes" => rb = Some(counter(&val)?),
                    b"orig_pkts" => op = Some(counter(&val)?),
                    b"resp_pkts" => rp = Some(counter(&val)?),
                    b"uniqueEventsAggregated" => {
                        out.weight = Some(u32::try_from(counter(&val)?).ok()?)
                    }
                    b"Tcp Flags" => out.tcp_flags = u8::try_from(counter(&val)?).ok(),
                    k if AF_KEYS.iter().any(|a| a.eq_ignore_ascii_case(k)) => return None,
                    _ => {}
                }
                i = skip_ws(b, i);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if skip_ws(b, i) != b.len() {
            return None;
        }
        out.bytes = pair(ob, rb)?;
        out.packets = pair(op, rp)?;
        Some(out)
    }
}

/// A Zeek counter: a number or a numeric string, non-negative integer.
fn counter(v: &V<'_>) -> Option<u64> {
    match v {
        V::Str(s) => parse_u64(s),
        V::Bare(s) if s.len() > 1 && s[0] == b'0' => None,
        V::Bare(s) => parse_u64(s),
        V::Null => None,
    }
}

/// Sum of both directions when both are present, nothing when neither is; one without the other
/// is left to the full parser.
fn pair(a: Option<u64>, b: Option<u64>) -> Option<Option<u64>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Some(a.checked_add(b)?)),
        (None, None) => Some(None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn string_end_finds_the_first_unescaped_quote(
            bytes in proptest::collection::vec(prop_oneof![
                4 => Just(b'\\'), 2 => Just(b'"'), 8 => Just(b'a'), 1 => any::<u8>(),
            ], 0..300),
            start in 0usize..80,
        ) {
            let start = start.min(bytes.len());
            let mut want = None;
            let mut escaped = false;
            for (k, &c) in bytes.iter().enumerate().skip(start) {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    want = Some(k);
                    break;
                }
            }
            prop_assert_eq!(string_end(&bytes, start), want);
        }
    }
}
