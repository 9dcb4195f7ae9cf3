//! The byte-level scanner for one flat `DeviceNetworkEvents` row.
//!
//! It finds the handful of top-level keys detection needs (first by probing where the previous
//! line had them, then with `memmem`), reads their values in place and never allocates.
//! Anything it is not certain about returns `None`, and the caller hands the line to the full
//! parser: the scanner is an accelerator, never a second opinion.
//!
//! Why a key match is a top-level key: a pattern like `"LocalPort"` followed by `:` cannot occur
//! inside a JSON string (the quote after `LocalPort` would have to be escaped), so every match is
//! a key of *some* object. The scanner accepts a line only if it has no nested container outside
//! the `AdditionalFields` value (checked with one `memchr2` for `{`/`[`), and it ignores matches
//! inside that value, so every match it uses is a key of the row itself. A probe is held to the
//! same test as a search hit (`"Key"`, preceded by `,`/`{`/space, followed by `:`, outside
//! `AdditionalFields`), so a wrong guess costs a search, never a wrong value.

use floodwatch_core::time::{NANOS_PER_SEC, Nanos, parse_rfc3339};
use floodwatch_core::{ActionType, Aggregator, DeviceId, Direction, Event, Ip, Protocol};
use memchr::memmem::Finder;
use std::sync::LazyLock;

use crate::af::{AfRef, AfValues, scan_additional_fields};

/// The top-level keys the scanner reads, in the order of [`KEYS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Key {
    Timestamp = 0,
    DeviceName,
    ActionType,
    RemoteIp,
    RemotePort,
    LocalPort,
    Protocol,
    ReportId,
    TimeGenerated,
}

const NKEYS: usize = 9;

/// The keys with their quotes, then `AdditionalFields` (slot [`AF_SLOT`]). Probes compare these
/// directly; the `memmem` finders are built only for searches.
const KEY_NAMES: [&[u8]; NSLOTS] = [
    b"\"Timestamp\"",
    b"\"DeviceName\"",
    b"\"ActionType\"",
    b"\"RemoteIP\"",
    b"\"RemotePort\"",
    b"\"LocalPort\"",
    b"\"Protocol\"",
    b"\"ReportId\"",
    b"\"TimeGenerated\"",
    b"\"AdditionalFields\"",
];

static FINDERS: LazyLock<[Finder<'static>; NSLOTS]> =
    LazyLock::new(|| KEY_NAMES.map(|k| Finder::new(k).into_owned()));

static PROPERTIES: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"properties\"").into_owned());
static CATEGORY: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"category\"").into_owned());
/// Between two records of an Event Hubs batch: the end of one envelope (its row and itself)
/// and the start of the next. The pattern cannot occur inside a JSON string (the quote after
/// `{` would have to be escaped).
static NEXT_RECORD: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"}},{\"").into_owned());

/// A located value: the bytes of a JSON value, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val<'a> {
    /// A string without escapes; the bytes between the quotes.
    Str(&'a [u8]),
    /// A number, `true`/`false`, or anything else that is not a string, object, array or null.
    Bare(&'a [u8]),
    /// A run of 1 to 19 digits, with its value (read while finding its end).
    Digits(&'a [u8], u64),
    Null,
}

#[inline]
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

/// Reads the value starting at `i` (after the colon), with the offset just past it. `None` for
/// escapes, containers or anything malformed: the caller falls back.
#[inline(always)]
fn read_value(b: &[u8], i: usize) -> Option<(Val<'_>, usize)> {
    let mut i = i;
    let mut c = *b.get(i)?;
    if is_ws(c) {
        i = skip_ws(b, i);
        c = *b.get(i)?;
    }
    match c {
        b'"' => read_string(b, i),
        b'{' | b'[' => None,
        _ => read_bare(b, i),
    }
}

/// [`read_value`] for anything but a string, object or array starting at `b[i]`.
#[inline(always)]
fn read_bare(b: &[u8], i: usize) -> Option<(Val<'_>, usize)> {
    // Ports and report ids are runs of up to seven digits: found and valued in one word.
    if let Some((run, n)) = digit_run(b, i)
        && b.get(i + run)
            .is_none_or(|&c| matches!(c, b',' | b'}') || is_ws(c))
    {
        return Some((Val::Digits(&b[i..i + run], n), i + run));
    }
    // Mostly digits (ports, ReportId): read them on the way to the end.
    let mut e = i;
    let mut n = 0u64;
    while let Some(d) = b.get(e).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9) {
        n = n.wrapping_mul(10).wrapping_add(d as u64);
        e += 1;
    }
    if e > i
        && e - i <= 19
        && b.get(e)
            .is_none_or(|&c| matches!(c, b',' | b'}') || is_ws(c))
    {
        return Some((Val::Digits(&b[i..e], n), e));
    }
    while e < b.len() && !matches!(b[e], b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
        e += 1;
    }
    let v = &b[i..e];
    if v == b"null" {
        Some((Val::Null, e))
    } else if v.is_empty() {
        None
    } else {
        Some((Val::Bare(v), e))
    }
}

/// The run of ASCII digits at `b[i]` and its value, from the eight bytes there: `None` when
/// fewer than eight bytes are left, or the run is empty or longer than seven digits.
#[inline(always)]
fn digit_run(b: &[u8], i: usize) -> Option<(usize, u64)> {
    let w = u64::from_le_bytes(*b.get(i..)?.first_chunk::<8>()?);
    // A byte is a digit when its high nibble is 3 and adding 6 keeps it 3. Adding 6 can carry
    // out of a byte of 0xFA or more, but only into later bytes: the first non-digit is exact.
    let high = (w & 0xF0F0_F0F0_F0F0_F0F0) ^ 0x3030_3030_3030_3030;
    let low =
        (w.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) ^ 0x3030_3030_3030_3030;
    let run = ((high | low).trailing_zeros() / 8) as usize;
    if run == 0 || run == 8 {
        return None;
    }
    // The digits moved to the end of the word behind leading `0`s: an eight-digit number.
    let shift = 8 * (8 - run) as u32;
    let padded = (w << shift) | (0x3030_3030_3030_3030u64 >> (64 - shift));
    Some((run, u64::from(eight_digits_word(padded)?)))
}

/// [`read_value`] for a string: `b[i]` is its opening quote.
#[inline(always)]
fn read_string(b: &[u8], i: usize) -> Option<(Val<'_>, usize)> {
    let rest = b.get(i + 1..)?;
    let end = quote_or_backslash(rest)?;
    (rest[end] == b'"').then(|| (Val::Str(&rest[..end]), i + end + 2))
}

/// Offset of the first `"` or `\\` in `s`, 16 bytes at a time (the values read are 3 to 40
/// bytes, where a vector compare per 16 bytes beats both a byte loop and the set-up of a
/// general search).
#[inline(always)]
pub(crate) fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 16).and_then(|c| <&[u8; 16]>::try_from(c).ok()) {
        let m = quote_or_backslash_mask(chunk);
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        i += 16;
    }
    s[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|p| i + p)
}

/// Bit `k` set when byte `k` of `b` is `"` or `\\`. Kept apart from
/// [`quote_and_backslash_mask`]: it is in the per-value loop, where one movemask beats two.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[inline(always)]
fn quote_or_backslash_mask(b: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: `b` is 16 readable bytes (an unaligned load); SSE2 is part of x86-64.
    unsafe {
        let v = _mm_loadu_si128(b.as_ptr().cast::<__m128i>());
        let q = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let bs = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        _mm_movemask_epi8(_mm_or_si128(q, bs)) as u32
    }
}

/// Bit masks of the `"` and of the `\\` in a 64-byte block.
#[inline]
pub(crate) fn quote_backslash_masks(b: &[u8; 64]) -> (u64, u64) {
    let mut out = (0u64, 0u64);
    for (k, chunk) in b.chunks_exact(16).enumerate() {
        let Ok(chunk) = <&[u8; 16]>::try_from(chunk) else {
            continue;
        };
        let (q, bs) = quote_and_backslash_mask(chunk);
        out.0 |= u64::from(q) << (16 * k);
        out.1 |= u64::from(bs) << (16 * k);
    }
    out
}

/// Bit `k` of the first mask set when byte `k` of `b` is `"`, of the second when it is `\\`.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[inline(always)]
fn quote_and_backslash_mask(b: &[u8; 16]) -> (u32, u32) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: `b` is 16 readable bytes (an unaligned load); SSE2 is part of x86-64.
    unsafe {
        let v = _mm_loadu_si128(b.as_ptr().cast::<__m128i>());
        let q = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let bs = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        (_mm_movemask_epi8(q) as u32, _mm_movemask_epi8(bs) as u32)
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn quote_and_backslash_mask(b: &[u8; 16]) -> (u32, u32) {
    b.iter().enumerate().fold((0, 0), |(q, bs), (k, &c)| {
        (
            q | (u32::from(c == b'"') << k),
            bs | (u32::from(c == b'\\') << k),
        )
    })
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn quote_or_backslash_mask(b: &[u8; 16]) -> u32 {
    let (q, bs) = quote_and_backslash_mask(b);
    q | bs
}

/// Decimal digits only, into u64; `None` for anything else or overflow.
#[inline]
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u64;
    }
    Some(v)
}

/// A JSON integer (optional minus, no leading zeros) into i64.
#[inline]
fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, d) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if d.len() > 1 && d[0] == b'0' {
        return None;
    }
    let v = parse_u64(d)?;
    if neg {
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

/// A port given as a JSON number or a numeric string. The argument is `None` for an absent key
/// and `Some(None)` for a value the scanner could not read; the result `None` means "let the
/// full parser decide".
#[inline(always)]
fn port(v: Option<Option<Val<'_>>>) -> Option<Option<u16>> {
    match v {
        None | Some(Some(Val::Null)) => Some(None),
        Some(None) => None,
        // JSON numbers have no leading zeros: let the full parser reject those.
        Some(Some(Val::Digits(s, _) | Val::Bare(s))) if s.len() > 1 && s[0] == b'0' => None,
        Some(Some(Val::Digits(_, n))) => Some(Some(u16::try_from(n).ok()?)),
        Some(Some(Val::Bare(s))) => Some(Some(u16::try_from(parse_u64(s)?).ok()?)),
        Some(Some(Val::Str(s))) => Some(Some(u16::try_from(parse_u64(s)?).ok()?)),
    }
}

/// Per-worker scanner state, all of it guesses learned from the previous lines and checked on
/// every use, so a wrong guess costs time, never correctness:
/// - the order of the keys (keys usually come in the same order line after line) and, per key,
///   the distance from the end of the value located before it to the key itself (mostly
///   constant, so a 12-byte comparison usually replaces a search);
/// - the last device names with their ids (interning hashes and validates the name), and the
///   action types seen;
/// - the minute prefix of the last timestamp with its time (rows come in time order).
#[derive(Clone, Debug)]
pub struct Scanner {
    /// Slots (keys, then `AdditionalFields`) in the order of the previous line.
    order: [u8; NSLOTS],
    /// Per slot: offsets of its key from the end of the previous slot's value, the most recent
    /// first. Several, because a variable column in between (a URL, a process path) takes a
    /// few lengths that recur; `u32::MAX` is an empty entry.
    gaps: [[u32; GAPS]; NSLOTS],
    /// Per slot: offsets of its key from the end of the line, most recent first.
    tails: [[u32; TAILS]; NSLOTS],
    /// Per [`context`] of the row (device name and action type): the offset of the
    /// `ReportId` key from the end of the previous value, last time. The columns before it are
    /// the initiating process's, which a device's rows of one action type mostly share, so
    /// this guesses right where the list of recent gaps is a lottery (under half the rows of
    /// the bench file have it at the most recent one). `u32::MAX` when empty.
    report_gaps: [u32; CONTEXTS],
    ordered: bool,
    devices: NameCache<DeviceId, DEVICE_CACHE>,
    actions: NameCache<ActionType, ACTION_CACHE>,
    /// `YYYY-MM-DDTHH:MM` of the last timestamp parsed in full, and its time at second 0.
    minute: [u8; 16],
    minute_nanos: Option<Nanos>,
}

/// The nine keys plus `AdditionalFields`, located in one ordered pass.
const NSLOTS: usize = NKEYS + 1;
const AF_SLOT: usize = NKEYS;

/// The order of the slots in `DeviceNetworkEvents` rows as Defender writes them (its schema's
/// column order; `TimeGenerated` is not a column there, so it sorts last, as absent).
const SCHEMA_ORDER: [u8; NSLOTS] = [0, 1, 2, 3, 4, 5, 6, 7, AF_SLOT as u8, 8];

/// Gaps remembered per slot.
const GAPS: usize = 8;

/// Distances from the line end remembered per slot.
const TAILS: usize = 4;

/// Row contexts told apart by [`context`] (a power of two).
const CONTEXTS: usize = 256;

/// One of [`CONTEXTS`] slots for the device name and action type read so far (either may be
/// missing; that is a context too). Only a guess's key: two contexts that share a slot cost a
/// probe, never a wrong value.
#[inline(always)]
fn context(f: &Fields<'_>) -> usize {
    let name = f.name.map_or(0, |n| {
        let word = n.first_chunk::<8>().map_or(0, |w| u64::from_le_bytes(*w));
        word ^ n.len() as u64
    });
    let action = f.action.map_or(u64::MAX, |a| a as u64);
    let x = (name ^ action.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (x >> 56) as usize
}

/// Puts `v` first in a most-recent-first list of guesses, dropping the oldest.
#[inline]
fn remember<const N: usize>(list: &mut [u32; N], v: usize) {
    list.rotate_right(1);
    list[0] = u32::try_from(v).unwrap_or(u32::MAX);
}

/// Action type spellings remembered (Defender has about twenty).
const ACTION_CACHE: usize = 24;

/// Devices remembered by name (rows interleave a few busy devices).
const DEVICE_CACHE: usize = 16;

/// Slots of a [`NameCache`]'s hint table (a power of two, above the cache sizes, so that a few
/// names rarely share a slot).
const HINTS: usize = 32;

/// Two slots in a hint table for a name of at least 8 bytes, from its length and its first
/// and last words (device names differ at the start, action types at the end); `None` for
/// shorter names, which are only searched.
#[inline(always)]
fn name_hash(s: &[u8]) -> Option<(usize, usize)> {
    let n = s.len();
    let first = u64::from_le_bytes(*s.first_chunk::<8>()?);
    let last = u64::from_le_bytes(*s.last_chunk::<8>()?);
    let x = (first ^ last.rotate_left(31) ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Two fields of the top bits of a multiplicative hash; HINTS is 2^5.
    Some(((x >> 59) as usize, (x >> 54) as usize % HINTS))
}

/// The last few names seen with what they stand for (a device id, an action type), found
/// without a search: a table of hints gives, per [`name_hash`] slot, the index of the name
/// last found there. A hint is only a guess (the name is compared before use), so a stale or
/// colliding hint costs the list search, never a wrong value. Each name has two slots; it takes
/// the second when another name already holds the first as its own, so two names that share
/// one slot do not keep evicting each other.
#[derive(Clone, Debug)]
struct NameCache<V, const N: usize> {
    entries: Vec<(Box<[u8]>, V)>,
    hint: [u8; HINTS],
}

impl<V, const N: usize> Default for NameCache<V, N> {
    fn default() -> Self {
        NameCache {
            entries: Vec::new(),
            hint: [0; HINTS],
        }
    }
}

impl<V: Copy, const N: usize> NameCache<V, N> {
    /// The value of `s` if a hint for `h` (its [`name_hash`]) points at it.
    #[inline(always)]
    fn hinted(&self, s: &[u8], h: Option<(usize, usize)>) -> Option<V> {
        let (h1, h2) = h?;
        for slot in [h1, h2] {
            if let Some((n, v)) = self.entries.get(self.hint[slot] as usize)
                && same(n, s)
            {
                return Some(*v);
            }
        }
        None
    }

    /// The value of `s` from the list, or from `make` (then remembered, dropping the oldest
    /// name when full); the hint updated either way. `None` when `make` declines.
    #[inline(never)]
    fn find_or_add(
        &mut self,
        s: &[u8],
        h: Option<(usize, usize)>,
        make: impl FnOnce(&[u8]) -> Option<V>,
    ) -> Option<V> {
        let (k, v) = match self.entries.iter().position(|(n, _)| same(n, s)) {
            Some(k) => (k, self.entries[k].1),
            None => {
                let v = make(s)?;
                if self.entries.len() >= N {
                    self.entries.remove(0);
                }
                self.entries.push((s.into(), v));
                (self.entries.len() - 1, v)
            }
        };
        if let Some((h1, h2)) = h {
            // The first slot, unless another name holds it as its own first slot.
            let taken = self
                .entries
                .get(self.hint[h1] as usize)
                .is_some_and(|(n, _)| !same(n, s) && name_hash(n).is_some_and(|(o, _)| o == h1));
            let slot = if taken { h2 } else { h1 };
            self.hint[slot] = u8::try_from(k).unwrap_or(u8::MAX);
        }
        Some(v)
    }
}

/// The converted values of one row, filled key by key; `None` where a required key was not
/// seen (the row then goes to the full parser).
#[derive(Clone, Copy, Debug)]
struct Fields<'a> {
    time: Option<Nanos>,
    name: Option<&'a [u8]>,
    action: Option<ActionType>,
    remote_ip: Option<Ip>,
    remote_port: Option<u16>,
    local_port: Option<u16>,
    protocol: Protocol,
    report_id: Option<i64>,
    /// The `AdditionalFields` value's extent (`usize::MAX` twice when absent) and form.
    excl: (usize, usize),
    af: Option<AfRef>,
}

impl Default for Fields<'_> {
    fn default() -> Self {
        Fields {
            time: None,
            name: None,
            action: None,
            remote_ip: None,
            remote_port: None,
            local_port: None,
            protocol: Protocol::Unknown,
            report_id: None,
            excl: (usize::MAX, usize::MAX),
            af: None,
        }
    }
}

/// A located key: where its value starts (just after the colon) and the value, `None` if the
/// scanner cannot read it.
type Slot<'a> = Option<(usize, Option<Val<'a>>)>;

/// What [`Scanner::locate`] finds: each key's value, and the extent and form of the
/// `AdditionalFields` value (`(usize::MAX, usize::MAX)` and `None` when absent).
struct Located<'a> {
    vals: [Slot<'a>; NKEYS],
    excl: (usize, usize),
    af: Option<AfRef>,
}

/// `a == b`, by 8-byte words: the keys, action types and device names compared here are 10 to
/// 40 bytes, where a call into `memcmp` costs more than the comparison.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    #[inline(always)]
    fn word(s: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0..8 => a.iter().zip(b).all(|(x, y)| x == y),
        // Two overlapping words cover 8 to 16 bytes, three cover up to 24: no loop for the keys.
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        17..=24 => {
            word(a, 0) == word(b, 0) && word(a, 8) == word(b, 8) && word(a, n - 8) == word(b, n - 8)
        }
        _ => {
            let mut i = 0;
            while i + 8 < n {
                if word(a, i) != word(b, i) {
                    return false;
                }
                i += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
    }
}

/// A dotted quad in its canonical spelling (1 to 3 digits a part, no leading zero, each at most
/// 255), read part by part without the general parser's per-byte state machine. Anything else
/// (leading zeros, IPv6, stray bytes) returns `None` and is left to [`Ip::parse`], which gives
/// the same address for every string accepted here.
#[inline(always)]
fn parse_v4_canonical(s: &[u8]) -> Option<Ip> {
    let digit = |j: usize| s.get(j).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9);
    let mut out = [0u8; 4];
    let mut i = 0usize;
    for (k, o) in out.iter_mut().enumerate() {
        let a = digit(i)?;
        let mut v = a as u32;
        i += 1;
        if let Some(b) = digit(i) {
            if a == 0 {
                return None;
            }
            v = v * 10 + b as u32;
            i += 1;
            if let Some(c) = digit(i) {
                v = v * 10 + c as u32;
                i += 1;
                if v > 255 {
                    return None;
                }
            }
        }
        *o = v as u8;
        if k < 3 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    (i == s.len()).then_some(Ip::v4(out))
}

/// The full eight-group IPv6 form (`2001:db8:0:0:0:0:0:5`, 1 to 4 hex digits per group), which
/// the standard parser reads slowly; every other spelling is left to [`Ip::parse`], which
/// gives the same address for this one.
#[inline]
fn parse_v6_full(s: &[u8]) -> Option<Ip> {
    let mut v = 0u128;
    let mut groups = 0;
    let mut i = 0;
    while i < s.len() {
        let mut g = 0u128;
        let start = i;
        while let Some(&c) = s.get(i) {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => break,
            };
            if i - start == 4 {
                return None;
            }
            g = g * 16 + d as u128;
            i += 1;
        }
        if i == start {
            return None;
        }
        v = (v << 16) | g;
        groups += 1;
        match s.get(i) {
            None => break,
            Some(b':') if groups < 8 && i + 1 < s.len() => i += 1,
            _ => return None,
        }
    }
    (groups == 8).then_some(Ip(v))
}

/// Whether `line` has `"name"` followed by a colon, in any letter case, anywhere (also inside a
/// nested value: a false hit only costs a full parse).
fn has_key_ignoring_case(line: &[u8], name: &[u8]) -> bool {
    memchr::memchr_iter(b'"', line).any(|p| {
        let s = p + 1;
        let e = s + name.len();
        line.get(s..e).is_some_and(|k| k.eq_ignore_ascii_case(name))
            && line.get(e) == Some(&b'"')
            && line.get(skip_ws(line, e + 1)) == Some(&b':')
    })
}

/// If the key `needle` starts at `p` and is followed by a colon, the offset just after the
/// colon. The byte before must end a previous member or open the object: that rules out a match
/// that starts at an escaped quote (`"x\"LocalPort":` is the key `x"LocalPort`).
#[inline(always)]
fn key_at(line: &[u8], p: usize, needle: &[u8]) -> Option<usize> {
    let end = p.checked_add(needle.len())?;
    if !same(line.get(p..end)?, needle) {
        return None;
    }
    if !matches!(
        line.get(p.wrapping_sub(1)),
        Some(b',' | b'{' | b' ' | b'\t' | b'\n' | b'\r')
    ) {
        return None;
    }
    // Compact JSON has the colon right after the key.
    if line.get(end) == Some(&b':') {
        return Some(end + 1);
    }
    let c = skip_ws(line, end);
    (line.get(c) == Some(&b':')).then_some(c + 1)
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

impl Scanner {
    pub fn new() -> Self {
        Scanner {
            order: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            gaps: [[u32::MAX; GAPS]; NSLOTS],
            tails: [[u32::MAX; TAILS]; NSLOTS],
            report_gaps: [u32::MAX; CONTEXTS],
            ordered: false,
            devices: NameCache::default(),
            actions: NameCache::default(),
            minute: [0; 16],
            minute_nanos: None,
        }
    }

    /// Finds `slot`'s key as a key of `line` at or after `from`, skipping `excl` (the
    /// AdditionalFields value, when known). Returns (offset of the key, offset after its colon).
    #[inline]
    fn find(line: &[u8], slot: usize, from: usize, excl: (usize, usize)) -> Option<(usize, usize)> {
        let f = &FINDERS[slot];
        let needle = KEY_NAMES[slot];
        let mut at = from;
        while at < line.len() {
            let p = at + f.find(&line[at..])?;
            if p >= excl.0 && p < excl.1 {
                at = excl.1;
                continue;
            }
            if let Some(v) = key_at(line, p, needle) {
                return Some((p, v));
            }
            at = p + needle.len();
        }
        None
    }

    /// The common case, without the general pass's bookkeeping: every key but `TimeGenerated`
    /// at one of its remembered gaps, in the learned order, values readable, `AdditionalFields`
    /// null or an encoded string. `None` on anything else (with `out` partly filled); the
    /// general pass then decides. Each value is converted into `out` as soon as it is read.
    #[inline]
    fn locate_fast<'a>(&mut self, line: &'a [u8], out: &mut Fields<'a>) -> Option<()> {
        if !self.ordered {
            return None;
        }
        let mut cursor = 0usize;
        if self.order == SCHEMA_ORDER {
            // The schema's order, written out so that each step's key is known at compile time:
            // its compare is against constants and its conversion chosen without a jump table.
            self.fast_step(line, 0, &mut cursor, out)?;
            self.fast_step(line, 1, &mut cursor, out)?;
            self.fast_step(line, 2, &mut cursor, out)?;
            self.fast_step(line, 3, &mut cursor, out)?;
            self.fast_step(line, 4, &mut cursor, out)?;
            self.fast_step(line, 5, &mut cursor, out)?;
            self.fast_step(line, 6, &mut cursor, out)?;
            // `ReportId` follows the initiating process's columns: past its most recent gap,
            // guessed by context before the other gaps.
            let slot = Key::ReportId as usize;
            let v = match key_at(
                line,
                cursor.saturating_add(self.gaps[slot][0] as usize),
                KEY_NAMES[slot],
            ) {
                Some(v) => v,
                None => {
                    let ctx = context(out);
                    match self.context_guess(line, cursor, ctx) {
                        Some(v) => v,
                        None => {
                            let v = self.probe_more(line, slot, cursor)?;
                            self.learn_context(line, cursor, ctx);
                            v
                        }
                    }
                }
            };
            self.fast_value(line, slot, v, &mut cursor, out)?;
            self.fast_step(line, AF_SLOT, &mut cursor, out)?;
            return Some(());
        }
        let order = self.order;
        for slot in order {
            let slot = slot as usize;
            if slot == Key::TimeGenerated as usize {
                continue;
            }
            self.fast_step(line, slot, &mut cursor, out)?;
        }
        Some(())
    }

    /// One key of [`Scanner::locate_fast`]: located from `cursor` (the end of the previous
    /// value), its value read and converted into `out`, `cursor` moved past it. Inlined, so that
    /// a constant `slot` specialises it.
    #[inline(always)]
    fn fast_step<'a>(
        &mut self,
        line: &'a [u8],
        slot: usize,
        cursor: &mut usize,
        out: &mut Fields<'a>,
    ) -> Option<()> {
        let needle = KEY_NAMES[slot];
        let v = match key_at(
            line,
            cursor.saturating_add(self.gaps[slot][0] as usize),
            needle,
        ) {
            Some(v) => v,
            None => self.probe_more(line, slot, *cursor)?,
        };
        self.fast_value(line, slot, v, cursor, out)
    }

    /// Where the `ReportId` key was for this row's context, as the offset after its colon.
    #[inline(always)]
    fn context_guess(&self, line: &[u8], cursor: usize, ctx: usize) -> Option<usize> {
        let g = self.report_gaps[ctx % CONTEXTS];
        key_at(
            line,
            cursor.saturating_add(g as usize),
            KEY_NAMES[Key::ReportId as usize],
        )
    }

    /// Remembers for `ctx` where the `ReportId` key was found past `from`, once
    /// [`Scanner::probe_more`] has found it.
    #[cold]
    fn learn_context(&mut self, line: &[u8], from: usize, ctx: usize) {
        // The key is at the most recent gap now (a probe's hit moves it first) unless the
        // distance from the line end found it; check before remembering.
        let slot = Key::ReportId as usize;
        let g = self.gaps[slot][0];
        if key_at(line, from.saturating_add(g as usize), KEY_NAMES[slot]).is_some() {
            self.report_gaps[ctx % CONTEXTS] = g;
        }
    }

    /// The rest of [`Scanner::fast_step`] once the key is found: the value from `v` (just
    /// after the colon) read and converted into `out`, `cursor` moved past it.
    #[inline(always)]
    fn fast_value<'a>(
        &mut self,
        line: &'a [u8],
        slot: usize,
        v: usize,
        cursor: &mut usize,
        out: &mut Fields<'a>,
    ) -> Option<()> {
        if slot == AF_SLOT {
            let v = skip_ws(line, v);
            let (end, af) = scan_additional_fields(line, v)?;
            if matches!(af, AfRef::Object(..)) {
                return None;
            }
            out.excl = (v, end);
            out.af = Some(af);
            *cursor = end;
        } else {
            // The columns Defender writes as strings go straight to the string's end when the
            // value starts with its quote, the numeric ones to their digits when it starts with
            // a digit (constant tests once `slot` is); anything else is told apart in full.
            let stringy = slot == Key::Timestamp as usize
                || slot == Key::DeviceName as usize
                || slot == Key::ActionType as usize
                || slot == Key::RemoteIp as usize
                || slot == Key::Protocol as usize;
            let numeric = slot == Key::RemotePort as usize
                || slot == Key::LocalPort as usize
                || slot == Key::ReportId as usize;
            let first = line.get(v).copied();
            let (val, end) = if stringy && first == Some(b'"') {
                read_string(line, v)?
            } else if numeric && first.is_some_and(|c| c.is_ascii_digit()) {
                read_bare(line, v)?
            } else {
                read_value(line, v)?
            };
            self.convert(slot, Some(Some(val)), out)?;
            *cursor = end;
        }
        Some(())
    }

    /// [`Scanner::locate_fast`] when the key is not at its most recent distance: the other
    /// remembered distances, then the distances from the line end, then a search from the
    /// previous value. Returns the offset after the key's colon.
    #[cold]
    fn probe_more(&mut self, line: &[u8], slot: usize, cursor: usize) -> Option<usize> {
        let needle = KEY_NAMES[slot];
        let gaps = &mut self.gaps[slot];
        for g in 1..GAPS {
            if let Some(at) = key_at(line, cursor.saturating_add(gaps[g] as usize), needle) {
                // Most recent first, so alternating layouts cost one probe more at most.
                gaps.swap(0, g);
                return Some(at);
            }
        }
        // The columns before this key vary (a URL, a process path), but those after it may
        // not: try where it was counted from the end of the line.
        let tails = &mut self.tails[slot];
        for t in 0..TAILS {
            if let Some(at) = line
                .len()
                .checked_sub(tails[t] as usize)
                .filter(|&p| p >= cursor)
                .and_then(|p| key_at(line, p, needle))
            {
                if t > 0 {
                    tails.swap(0, t);
                }
                return Some(at);
            }
        }
        // Still in order: search from here. A match before an `AdditionalFields` object is
        // not known to be outside it, but objects leave the fast pass.
        let (k, v) = Self::find(line, slot, cursor, (usize::MAX, usize::MAX))?;
        remember(gaps, k - cursor);
        remember(tails, line.len() - k);
        Some(v)
    }

    /// Finds every key and reads its value, in the order seen on the previous line: first at
    /// the remembered distance from the previous value's end, then by a search from there, then
    /// (out of order) by a search from the start of the line. `excl`, when known, is skipped.
    ///
    /// Keys found before `AdditionalFields` is known might lie inside its value; the caller
    /// checks that and repeats the pass with the extent known.
    #[inline]
    fn locate<'a>(&mut self, line: &'a [u8], excl: (usize, usize)) -> Option<Located<'a>> {
        let mut out = Located {
            vals: [None; NKEYS],
            excl,
            af: None,
        };
        let mut keys_at = [usize::MAX; NSLOTS];
        let mut cursor = 0usize;
        let mut in_order = true;
        let mut have_ts = false;
        for i in 0..NSLOTS {
            let slot = self.order[i] as usize;
            if slot == Key::TimeGenerated as usize && have_ts {
                continue;
            }
            let needle = KEY_NAMES[slot];
            let gaps = &mut self.gaps[slot];
            let mut found = None;
            for g in 0..GAPS {
                let guess = cursor.saturating_add(gaps[g] as usize);
                if (guess < excl.0 || guess >= excl.1)
                    && let Some(v) = key_at(line, guess, needle)
                {
                    // Most recent first, so alternating layouts cost one probe more at most.
                    if g > 0 {
                        gaps.swap(0, g);
                    }
                    found = Some((guess, v));
                    break;
                }
            }
            let found = match found {
                Some(f) => Some(f),
                None => {
                    let f = match Self::find(line, slot, cursor, out.excl) {
                        Some(f) => Some(f),
                        None if cursor > 0 => {
                            in_order = false;
                            Self::find(line, slot, 0, out.excl)
                        }
                        None => None,
                    };
                    if let Some((k, _)) = f {
                        remember(gaps, k.wrapping_sub(cursor));
                        remember(&mut self.tails[slot], line.len().wrapping_sub(k));
                    }
                    f
                }
            };
            let Some((k, v)) = found else {
                continue;
            };
            keys_at[slot] = k;
            if k < cursor {
                in_order = false;
            }
            if slot == AF_SLOT {
                let v = skip_ws(line, v);
                let (end, af) = scan_additional_fields(line, v)?;
                out.excl = (v, end);
                out.af = Some(af);
                cursor = end;
            } else {
                let (val, end) = match read_value(line, v) {
                    Some((val, end)) => (Some(val), end),
                    None => (None, v),
                };
                out.vals[slot] = Some((v, val));
                if slot == Key::Timestamp as usize {
                    have_ts = true;
                }
                cursor = end;
            }
        }
        if !in_order || !self.ordered {
            // Learn this line's order for the next one.
            let mut idx: [u8; NSLOTS] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
            idx.sort_by_key(|&k| keys_at[k as usize]);
            self.order = idx;
            self.ordered = true;
        }
        Some(out)
    }

    /// The row inside a Streaming API envelope line (`{"time":…,"category":
    /// "AdvancedHunting-DeviceNetworkEvents",…,"properties":{row},"Tenant":…}`, as in Storage
    /// exports), through [`Scanner::scan_row_with`]. `None` for anything else (another table,
    /// containers in the envelope, odd members after the row): the full parser decides.
    pub fn scan_envelope(
        &mut self,
        raw: &[u8],
        openers: &Openers,
        agg: &mut Aggregator,
    ) -> Option<Event> {
        let (lead, line) = braced(raw)?;
        let k = PROPERTIES.find(line)?;
        let v = skip_ws(line, key_at(line, k, b"\"properties\"")?);
        if line.get(v) != Some(&b'{') {
            return None;
        }
        // Nothing nested in the envelope before its row: then every key found there is the
        // envelope's own.
        let head = &line[..k];
        let c = CATEGORY.find(head)?;
        let (category, _) = read_value(head, key_at(head, c, b"\"category\"")?)?;
        let Val::Str(category) = category else {
            return None;
        };
        if !category.eq_ignore_ascii_case(b"AdvancedHunting-DeviceNetworkEvents")
            && !category.eq_ignore_ascii_case(b"DeviceNetworkEvents")
        {
            return None;
        }
        // The row ends at the last `}` before the envelope's own. What follows it (Storage
        // exports add `"Tenant"`) must be whole members with no braces, brackets or escapes:
        // an odd number of quotes there would mean that `}` sat inside a string.
        let close = v + memchr::memrchr(b'}', &line[v..line.len() - 1])?;
        let tail = &line[close + 1..line.len() - 1];
        if !tail.is_empty()
            && (tail[0] != b','
                || tail
                    .iter()
                    .any(|c| matches!(c, b'{' | b'[' | b'}' | b']' | b'\\'))
                || tail.iter().filter(|&&c| c == b'"').count() % 2 == 1)
        {
            return None;
        }
        let row = &line[v..=close];
        let shift = lead + v;
        let mut inner = Openers::default();
        for p in openers.iter()? {
            if p == lead {
                continue;
            }
            inner.push(p.checked_sub(shift)?);
        }
        self.scan_row_with(row, &inner, agg)
    }

    /// An Event Hubs batch line (`{"records":[envelope,envelope,…]}`): every record through
    /// [`Scanner::scan_envelope`], into `out`. All or nothing: `None` (with `out` as it was)
    /// when any record is not handled, and the full parser reads the whole line.
    pub fn scan_batch(
        &mut self,
        raw: &[u8],
        agg: &mut Aggregator,
        out: &mut Vec<Event>,
    ) -> Option<()> {
        let line = trim(raw);
        let body = line.strip_prefix(b"{\"records\":[")?.strip_suffix(b"]}")?;
        let before = out.len();
        let mut start = 0usize;
        loop {
            let end = match NEXT_RECORD.find(&body[start..]) {
                Some(p) => start + p + 2,
                None => body.len(),
            };
            let record = &body[start..end];
            match self.scan_envelope(record, &Openers::find(record), agg) {
                Some(ev) => out.push(ev),
                None => {
                    out.truncate(before);
                    return None;
                }
            }
            if end == body.len() {
                return Some(());
            }
            start = end + 1;
        }
    }

    /// Parses one flat row line without allocation. `None` means "not handled": hand the line to
    /// the full parser, which also decides whether it is an error.
    pub fn scan_row(&mut self, line: &[u8], agg: &mut Aggregator) -> Option<Event> {
        self.scan_row_with(line, &Openers::find(line), agg)
    }

    /// [`Scanner::scan_row`] with the line's `{`/`[` already located (by the line splitter,
    /// which reads every byte anyway).
    pub fn scan_row_with(
        &mut self,
        raw: &[u8],
        openers: &Openers,
        agg: &mut Aggregator,
    ) -> Option<Event> {
        let (lead, line) = braced(raw)?;
        // Filled in place: the fields are a few cache lines, not worth a copy per row.
        let mut f = Fields::default();
        if self.locate_fast(line, &mut f).is_none() {
            f = self.locate_general(line)?;
        }
        let excl = f.excl;
        // No other nested containers: then every key match outside AdditionalFields is the
        // row's own key. (A `{` inside a string elsewhere also declines the line; that is rare
        // and only costs the full parse.)
        if !openers.all(|p| {
            let p = p.wrapping_sub(lead);
            p == 0 || (p >= excl.0 && p < excl.1)
        }) {
            return None;
        }
        let action = f.action?;
        // An action type floodwatch does not know is counted by name and may be a row of
        // another table: the full parser decides both.
        if action == ActionType::Other {
            return None;
        }
        let mut ev = Event {
            ts: f.time?,
            device: 0,
            action,
            protocol: f.protocol,
            direction: Direction::Unknown,
            remote_ip: f.remote_ip,
            remote_port: f.remote_port,
            local_port: f.local_port,
            report_id: f.report_id?,
            weight: 1,
            bytes: None,
            packets: None,
            tcp_flags: None,
        };
        // The same fields from `AdditionalFields` as the full parser, for the same rows.
        if action.reads_additional_fields() {
            let af: AfValues = match f.af {
                Some(af) => af.values(line)?,
                None => AfValues::default(),
            };
            if action.reads_direction() {
                ev.direction = af.direction;
                ev.tcp_flags = af.tcp_flags;
            }
            if action.is_inspected() {
                ev.bytes = af.bytes;
                ev.packets = af.packets;
            }
            if action.is_aggregated_report() {
                ev.weight = floodwatch_core::model::aggregated_weight(af.weight.map(u64::from));
            }
        }
        ev.device = self.device(f.name?, agg)?;
        Some(ev)
    }

    /// The general pass ([`Scanner::locate`], repeated once when a key matched inside an
    /// `AdditionalFields` object), with its values converted.
    fn locate_general<'a>(&mut self, line: &'a [u8]) -> Option<Fields<'a>> {
        let mut loc = self.locate(line, (usize::MAX, usize::MAX))?;
        let excl = loc.excl;
        if matches!(loc.af, Some(AfRef::Object(..)))
            && loc
                .vals
                .iter()
                .flatten()
                .any(|&(v, _)| v >= excl.0 && v < excl.1)
        {
            // A key matched inside the AdditionalFields object before its extent was known:
            // once more, skipping it.
            loc = self.locate(line, excl)?;
            if loc.excl != excl {
                return None;
            }
        }
        // A key the pass did not find may be there in another letter case (`localport`),
        // which the full parser reads: then it decides. Only rows missing a column pay this.
        for (slot, name) in KEY_NAMES.iter().enumerate() {
            let absent = if slot == AF_SLOT {
                loc.af.is_none()
            } else if slot == Key::TimeGenerated as usize {
                // Read only in place of a missing Timestamp.
                loc.vals[slot].is_none() && loc.vals[Key::Timestamp as usize].is_none()
            } else {
                loc.vals[slot].is_none()
            };
            if absent && has_key_ignoring_case(line, &name[1..name.len() - 1]) {
                return None;
            }
        }
        let mut f = Fields {
            excl: loc.excl,
            af: loc.af,
            ..Fields::default()
        };
        for slot in 0..NKEYS {
            // TimeGenerated stands in for a missing Timestamp only.
            if slot == Key::TimeGenerated as usize && loc.vals[Key::Timestamp as usize].is_some() {
                continue;
            }
            self.convert(slot, loc.vals[slot].map(|(_, v)| v), &mut f)?;
        }
        Some(f)
    }

    /// Converts the value of one key into `f`. `v` is `None` for an absent key and `Some(None)`
    /// for one the scanner could not read; `None` back means "let the full parser decide".
    #[inline(always)]
    fn convert<'a>(
        &mut self,
        slot: usize,
        v: Option<Option<Val<'a>>>,
        f: &mut Fields<'a>,
    ) -> Option<()> {
        const TIMESTAMP: usize = Key::Timestamp as usize;
        const TIME_GENERATED: usize = Key::TimeGenerated as usize;
        const DEVICE_NAME: usize = Key::DeviceName as usize;
        const ACTION_TYPE: usize = Key::ActionType as usize;
        const REMOTE_IP: usize = Key::RemoteIp as usize;
        const REMOTE_PORT: usize = Key::RemotePort as usize;
        const LOCAL_PORT: usize = Key::LocalPort as usize;
        const PROTOCOL: usize = Key::Protocol as usize;
        const REPORT_ID: usize = Key::ReportId as usize;
        match slot {
            TIMESTAMP | TIME_GENERATED => match v {
                None => {}
                Some(Some(Val::Str(s))) => f.time = Some(self.time(s)?),
                _ => return None,
            },
            DEVICE_NAME => match v?? {
                Val::Str(s) if !s.is_empty() => f.name = Some(s),
                _ => return None,
            },
            ACTION_TYPE => match v?? {
                Val::Str(s) if !s.is_empty() => f.action = Some(self.action(s)),
                _ => return None,
            },
            REMOTE_IP => {
                f.remote_ip = match v {
                    None | Some(Some(Val::Null)) => None,
                    Some(Some(Val::Str(s))) if !s.is_empty() => {
                        // Dotted quads are at most 15 bytes; the eight-group form is at least 15.
                        let fast = if s.len() >= 15 {
                            parse_v6_full(s).or_else(|| parse_v4_canonical(s))
                        } else {
                            parse_v4_canonical(s)
                        };
                        Some(fast.map_or_else(|| Ip::parse(s), Some)?)
                    }
                    _ => return None,
                }
            }
            REMOTE_PORT => f.remote_port = port(v)?,
            LOCAL_PORT => f.local_port = port(v)?,
            PROTOCOL => {
                f.protocol = match v {
                    None | Some(Some(Val::Null)) => Protocol::Unknown,
                    // The two spellings Defender writes, without the case-blind prefix tests.
                    Some(Some(Val::Str(b"Tcp"))) => Protocol::Tcp,
                    Some(Some(Val::Str(b"Udp"))) => Protocol::Udp,
                    Some(Some(Val::Str(s))) => Protocol::parse(s),
                    _ => return None,
                }
            }
            REPORT_ID => {
                f.report_id = Some(match v?? {
                    Val::Digits(s, n) if s.len() == 1 || s[0] != b'0' => i64::try_from(n).ok()?,
                    Val::Bare(s) => parse_i64(s)?,
                    _ => return None,
                })
            }
            _ => {}
        }
        Some(())
    }

    /// [`parse_rfc3339`], reusing the previous timestamp's `YYYY-MM-DDTHH:MM` when this one has
    /// the same minute and the common `:SS[.fraction]Z` tail; anything else is parsed in full.
    #[inline(always)]
    fn time(&mut self, s: &[u8]) -> Option<Nanos> {
        // Defender's own form, `YYYY-MM-DDTHH:MM:SS.fffffffZ`: two word compares for the minute
        // and a fixed-place tail.
        if let Some(base) = self.minute_nanos
            && let Ok(full) = <&[u8; 28]>::try_from(s)
            && let (Some(prefix), Some(tail)) = (full.first_chunk::<16>(), full.last_chunk::<12>())
            && same(prefix, &self.minute)
            && let Some(t) = defender_tail(tail)
        {
            return Some(base + t);
        }
        self.time_other(s)
    }

    /// [`Scanner::time`] for any other spelling or a new minute.
    #[inline(never)]
    fn time_other(&mut self, s: &[u8]) -> Option<Nanos> {
        if let (Some(base), Some(prefix)) = (self.minute_nanos, s.get(..16))
            && same(prefix, &self.minute)
            && let Some(t) = seconds_tail(&s[16..])
        {
            return Some(base + t);
        }
        let t = parse_rfc3339(s).ok()?;
        self.minute_nanos = None;
        if let Some(prefix) = s.get(..16)
            && let Ok(base) = parse_rfc3339(&minute_probe(prefix))
        {
            self.minute.copy_from_slice(prefix);
            self.minute_nanos = Some(base);
        }
        Some(t)
    }
    /// [`ActionType::parse`] (a chain of comparisons), remembered for the few spellings seen.
    #[inline(always)]
    fn action(&mut self, s: &[u8]) -> ActionType {
        let h = name_hash(s);
        if let Some(a) = self.actions.hinted(s, h) {
            return a;
        }
        self.actions
            .find_or_add(s, h, |s| Some(ActionType::parse(s)))
            .unwrap_or_else(|| ActionType::parse(s))
    }

    /// The device id of `name`: the entry its hint points at, then the list of the last few,
    /// then the aggregator's table (which validates and hashes the name).
    #[inline(always)]
    fn device(&mut self, name: &[u8], agg: &mut Aggregator) -> Option<DeviceId> {
        let h = name_hash(name);
        if let Some(id) = self.devices.hinted(name, h) {
            return Some(id);
        }
        self.devices
            .find_or_add(name, h, |n| Some(agg.device(std::str::from_utf8(n).ok()?)))
    }
}

/// `prefix` (`YYYY-MM-DDTHH:MM`) completed to a timestamp at second 0 of that minute, UTC.
fn minute_probe(prefix: &[u8]) -> [u8; 20] {
    let mut b = *b"0000-00-00T00:00:00Z";
    b[..16].copy_from_slice(prefix);
    b
}

/// The `:SS[.fraction][Z]` tail of a timestamp as nanoseconds into its minute, with the
/// checks and the fraction rounding of [`parse_rfc3339`]; `None` for any other tail (zone
/// offsets included), which is then parsed in full.
#[inline]
fn seconds_tail(t: &[u8]) -> Option<Nanos> {
    let [b':', s1, s2, rest @ ..] = t else {
        return None;
    };
    if !s1.is_ascii_digit() || !s2.is_ascii_digit() {
        return None;
    }
    let sec = ((s1 - b'0') * 10 + (s2 - b'0')) as i64;
    if sec > 60 {
        return None;
    }
    // Defender writes seven fraction digits: read them as one word.
    if let [b'.', d @ .., b'Z'] = rest
        && let Ok(seven) = <[u8; 7]>::try_from(d)
        && let Some(f) = eight_digits([
            seven[0], seven[1], seven[2], seven[3], seven[4], seven[5], seven[6], b'0',
        ])
    {
        return Some(sec * NANOS_PER_SEC + f as i64 * 10);
    }
    let mut frac = 0u32;
    let mut rest = rest;
    if let [b'.', digits @ ..] = rest {
        let mut scale = 100_000_000u32;
        let mut n = 0;
        for &c in digits.iter().take_while(|c| c.is_ascii_digit()) {
            frac += (c - b'0') as u32 * scale;
            scale /= 10;
            n += 1;
        }
        if n == 0 {
            return None;
        }
        rest = &digits[n..];
    }
    match rest {
        [] | [b'Z' | b'z'] => Some(sec * NANOS_PER_SEC + frac as i64),
        _ => None,
    }
}

/// `:SS.fffffffZ` (seven fraction digits, as Defender writes them) as nanoseconds into the
/// minute; the same value as [`seconds_tail`], with the fraction read as one word in place.
/// `None` for anything else.
#[inline(always)]
fn defender_tail(t: &[u8; 12]) -> Option<Nanos> {
    let (s1, s2) = (t[1].wrapping_sub(b'0'), t[2].wrapping_sub(b'0'));
    if t[0] != b':' || t[3] != b'.' || s1 > 9 || s2 > 9 {
        return None;
    }
    let sec = (s1 * 10 + s2) as i64;
    let frac = u64::from_le_bytes(*t.last_chunk::<8>()?);
    // The last byte is the `Z`; an eighth digit `0` in its place makes the fraction a number
    // of 100 ns ticks times ten.
    if sec > 60 || frac >> 56 != u64::from(b'Z') {
        return None;
    }
    let f = eight_digits_word((frac & 0x00FF_FFFF_FFFF_FFFF) | (u64::from(b'0') << 56))?;
    Some(sec * NANOS_PER_SEC + f as i64 * 10)
}

/// Eight ASCII digits as a number (the first most significant), `None` if any is not a digit;
/// a few multiplications on one word instead of a loop.
#[inline]
fn eight_digits(b: [u8; 8]) -> Option<u32> {
    eight_digits_word(u64::from_le_bytes(b))
}

/// [`eight_digits`] on the bytes as a little-endian word.
#[inline(always)]
fn eight_digits_word(x: u64) -> Option<u32> {
    let all_digits = (x & 0xF0F0_F0F0_F0F0_F0F0)
        | ((x.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4)
        == 0x3333_3333_3333_3333;
    if !all_digits {
        return None;
    }
    let mut v = x - 0x3030_3030_3030_3030;
    v = (v * 10) + (v >> 8);
    v = ((v & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601)) >> 16;
    v = ((v & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001)) >> 32;
    Some(v as u32)
}

/// Where `{` and `[` occur in a line (offsets from its start), as many as fit; the line
/// splitter collects them on its pass, so the scanner's container check reads no bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Openers {
    at: [u32; OPENERS],
    /// How many were found; above [`OPENERS`], only the first are kept.
    n: usize,
    /// The line has a byte outside printable ASCII (a CRLF's `\r` aside): it must be valid
    /// UTF-8 without control characters before the scanner may take it (see `crate::split`).
    pub odd: bool,
}

/// Openers remembered per line: the row's own brace, an encoded `AdditionalFields` object's,
/// and a little room.
const OPENERS: usize = 4;

impl PartialEq for Openers {
    /// Equal when they record the same offsets (entries past the count do not matter) and the
    /// same oddness.
    fn eq(&self, other: &Self) -> bool {
        self.n == other.n
            && self.odd == other.odd
            && self.at[..self.n.min(OPENERS)] == other.at[..other.n.min(OPENERS)]
    }
}

impl Openers {
    /// Records an opener at `p`.
    #[inline]
    pub fn push(&mut self, p: usize) {
        if let Some(slot) = self.at.get_mut(self.n) {
            *slot = u32::try_from(p).unwrap_or(u32::MAX);
        }
        self.n += 1;
    }

    /// All openers of `line`, found with `memchr2` (`odd` is not looked at).
    pub fn find(line: &[u8]) -> Self {
        let mut o = Openers::default();
        for p in memchr::memchr2_iter(b'{', b'[', line) {
            o.push(p);
            if o.n > OPENERS {
                break;
            }
        }
        o
    }

    /// The offsets, or `None` when there were too many to keep.
    fn iter(&self) -> Option<impl Iterator<Item = usize> + '_> {
        (self.n <= OPENERS).then(|| self.at[..self.n].iter().map(|&p| p as usize))
    }

    /// Whether `ok` holds for every opener; false when there were too many to keep.
    #[inline]
    fn all(&self, ok: impl Fn(usize) -> bool) -> bool {
        self.iter().is_some_and(|mut at| at.all(ok))
    }
}

/// `raw` without surrounding whitespace, and how much was cut in front of it, when it is braced
/// like a JSON object.
#[inline]
fn braced(raw: &[u8]) -> Option<(usize, &[u8])> {
    let lead = raw.len() - trim_start(raw).len();
    let line = trim(raw);
    (line.len() >= 2 && line[0] == b'{' && line[line.len() - 1] == b'}').then_some((lead, line))
}

/// Strips leading JSON whitespace.
#[inline]
fn trim_start(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if is_ws(*first) {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Strips surrounding JSON whitespace.
#[inline]
pub(crate) fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if is_ws(*first) {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if is_ws(*last) {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Parses one flat row line without allocation; `None` = not handled (use the full parser).
///
/// A convenience over [`Scanner::scan_row`] for one-off calls; a loop should keep one
/// [`Scanner`] so it can reuse the key order and device cache.
pub fn scan_row(line: &[u8], agg: &mut Aggregator) -> Option<Event> {
    Scanner::new().scan_row(line, agg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn quote_or_backslash_finds_the_first(
            s in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), Just(b'a'), Just(0u8), Just(0xffu8), any::<u8>()], 0..80),
            skew in 0usize..60,
        ) {
            // Mostly filler, so matches land at every offset.
            let s: Vec<u8> = s.iter().enumerate().map(|(i, &c)| if i < skew && c != 0 { b'x' } else { c }).collect();
            let naive = s.iter().position(|&c| c == b'"' || c == b'\\');
            prop_assert_eq!(quote_or_backslash(&s), naive);
        }
    }

    proptest! {
        #[test]
        fn v6_fast_path_agrees_with_the_standard_parser(
            groups in proptest::collection::vec(0u32..0x1_0000, 6..10),
            widths in proptest::collection::vec(0usize..6, 10),
            sep in prop::sample::select(vec![":", "::", ".", ""]),
            upper in any::<bool>(),
        ) {
            let text: Vec<String> = groups.iter().zip(&widths).map(|(g, &w)| {
                let h = if upper { format!("{g:X}") } else { format!("{g:x}") };
                // Pad to the drawn width (5 or more digits is invalid), or keep as is.
                if w > h.len() { format!("{h:0>w$}") } else { h }
            }).collect();
            let s = text.join(sep);
            let reference = Ip::parse(s.as_bytes());
            if let Some(ip) = parse_v6_full(s.as_bytes()) {
                prop_assert_eq!(Some(ip), reference, "{}", s);
            } else {
                prop_assert!(groups.len() != 8 || sep != ":" || widths.iter().take(8).any(|&w| w > 4), "{}", s);
            }
        }
    }

    proptest! {
        #[test]
        fn v4_fast_path_agrees_with_the_standard_parser(
            parts in proptest::collection::vec(0u32..1000, 3..6),
            zeros in proptest::collection::vec(0usize..3, 6),
            sep in prop::sample::select(vec![".", "..", ":", ""]),
            tail in prop::sample::select(vec!["", "x", " ", "."]),
        ) {
            let text: Vec<String> = parts.iter().zip(&zeros).map(|(p, &z)| {
                format!("{}{p}", "0".repeat(z))
            }).collect();
            let s = text.join(sep) + tail;
            let reference = Ip::parse(s.as_bytes());
            match parse_v4_canonical(s.as_bytes()) {
                Some(ip) => prop_assert_eq!(Some(ip), reference, "{}", s),
                // Declined: only strings the standard parser also rejects as IPv4.
                None => prop_assert!(reference.is_none_or(|ip| ip.to_string() != s), "{}", s),
            }
        }
    }

    #[test]
    fn v4_fast_path_examples() {
        let cases: [(&str, Option<[u8; 4]>); 11] = [
            ("0.0.0.0", Some([0, 0, 0, 0])),
            ("255.255.255.255", Some([255, 255, 255, 255])),
            ("176.56.19.170", Some([176, 56, 19, 170])),
            ("10.0.0.1", Some([10, 0, 0, 1])),
            ("256.1.1.1", None),
            ("01.2.3.4", None),
            ("1.2.3", None),
            ("1.2.3.4.5", None),
            ("1.2.3.4 ", None),
            ("1..3.4", None),
            ("1234.1.1.1", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_v4_canonical(s.as_bytes()), want.map(Ip::v4), "{s}");
        }
    }

    /// A row as Defender writes it teaches the scanner the schema's order, so the fast pass
    /// takes its specialised path from the next row on (the tests that compare rows in that
    /// order with the reference rely on this).
    #[test]
    fn defender_rows_teach_the_schema_order() {
        let line = br#"{"Timestamp":"2025-12-22T00:00:00.1321145Z","DeviceId":"a24d","DeviceName":"web03.contoso.com","ActionType":"ConnectionSuccess","RemoteIP":"20.190.111.13","RemotePort":443,"RemoteUrl":"settings-win.data.microsoft.com","LocalIP":"10.1.1.12","LocalPort":60540,"Protocol":"Tcp","InitiatingProcessId":3208,"ReportId":12110,"AdditionalFields":null,"MachineGroup":"Web Frontend"}"#;
        let mut agg = Aggregator::new(
            floodwatch_core::BinWidth::FIVE_MINUTES,
            floodwatch_core::ClassifyConfig::default(),
        );
        let mut sc = Scanner::new();
        let first = sc.scan_row(line, &mut agg).expect("handled");
        assert!(sc.ordered);
        assert_eq!(sc.order, SCHEMA_ORDER);
        let second = sc.scan_row(line, &mut agg).expect("handled");
        assert_eq!(first, second);
        assert_eq!((second.local_port, second.report_id), (Some(60540), 12110));
    }

    #[test]
    fn same_is_equality() {
        let words: [&[u8]; 7] = [
            b"",
            b"a",
            b"web01.contoso.com",
            b"web02.contoso.com",
            b"InboundConnectionAccepted",
            b"InboundConnectionAcceptes",
            b"12345678",
        ];
        for a in words {
            for b in words {
                assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn eight_digits_is_the_number(b in proptest::array::uniform8(prop_oneof![8 => b'0'..=b'9', 1 => any::<u8>()])) {
            let want = std::str::from_utf8(&b)
                .ok()
                .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|s| s.parse::<u32>().ok());
            prop_assert_eq!(eight_digits(b), want);
        }

        #[test]
        fn seconds_tail_agrees_with_the_full_parser(
            sec in 0u32..62,
            digits in proptest::collection::vec(prop_oneof![8 => b'0'..=b'9', 1 => any::<u8>()], 0..11),
            dot in any::<bool>(),
            zone in prop::sample::select(vec!["Z", "z", "", "+01:00", "ZZ"]),
        ) {
            let mut tail = format!(":{sec:02}").into_bytes();
            if dot {
                tail.push(b'.');
            }
            tail.extend_from_slice(&digits);
            tail.extend_from_slice(zone.as_bytes());
            let mut full = b"2025-12-22T09:55".to_vec();
            full.extend_from_slice(&tail);
            let base = parse_rfc3339(b"2025-12-22T09:55:00Z").expect("valid");
            if let Some(t) = seconds_tail(&tail) {
                prop_assert_eq!(Some(base + t), parse_rfc3339(&full).ok(), "{:?}", String::from_utf8_lossy(&tail));
            }
        }
    }

    proptest! {
        #[test]
        fn defender_tail_agrees_with_seconds_tail(
            t in proptest::array::uniform12(prop_oneof![
                8 => b'0'..=b'9', 1 => Just(b':'), 1 => Just(b'.'), 1 => Just(b'Z'), 1 => any::<u8>(),
            ]),
            form in any::<bool>(),
        ) {
            // Half of the cases in the expected shape, so both answers are exercised.
            let mut t = t;
            if form {
                t[0] = b':';
                t[3] = b'.';
                t[11] = b'Z';
            }
            let fast = defender_tail(&t);
            if let Some(v) = fast {
                prop_assert_eq!(Some(v), seconds_tail(&t));
            } else {
                // Declined only for tails that are not `:SS.fffffffZ` with SS at most 60.
                let shaped = t[0] == b':' && t[3] == b'.' && t[11] == b'Z'
                    && t[1..3].iter().chain(&t[4..11]).all(u8::is_ascii_digit)
                    && (t[1] - b'0') * 10 + (t[2] - b'0') <= 60;
                prop_assert!(!shaped, "{:?}", String::from_utf8_lossy(&t));
            }
        }
    }

    #[test]
    fn defender_tail_examples() {
        let cases: [(&[u8; 12], Option<Nanos>); 6] = [
            (b":01.1234567Z", Some(1_123_456_700)),
            (b":59.9999999Z", Some(59_999_999_900)),
            (b":60.0000000Z", Some(60_000_000_000)),
            (b":61.0000000Z", None),
            (b":01.123456xZ", None),
            (b":01.1234567z", None),
        ];
        for (t, want) in cases {
            assert_eq!(defender_tail(t), want, "{:?}", String::from_utf8_lossy(t));
        }
    }

    proptest! {
        #[test]
        fn digit_run_agrees_with_a_byte_loop(
            b in proptest::collection::vec(prop_oneof![6 => b'0'..=b'9', 1 => any::<u8>(), 1 => Just(b','), 1 => Just(0xFFu8)], 0..14),
            at in 0usize..4,
        ) {
            let at = at.min(b.len());
            let run = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
            let value = b[at..at + run].iter().fold(0u64, |v, &c| v * 10 + u64::from(c - b'0'));
            match digit_run(&b, at) {
                Some(got) => prop_assert_eq!(got, (run, value)),
                // Declined: fewer than eight bytes, an empty run or one of eight digits or more.
                None => prop_assert!(b.len() - at < 8 || run == 0 || run >= 8),
            }
        }
    }

    #[test]
    fn digit_run_examples() {
        type Case<'a> = (&'a [u8], Option<(usize, u64)>);
        let cases: [Case<'_>; 6] = [
            (b"443,\"Prot", Some((3, 443))),
            (b"60540}\n\n\n", Some((5, 60540))),
            (b"0,\"LocalI", Some((1, 0))),
            (b"1234567,x", Some((7, 1_234_567))),
            (b"12345678,", None),
            (b"443}", None),
        ];
        for (b, want) in cases {
            assert_eq!(digit_run(b, 0), want, "{:?}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn seconds_tail_matches_the_full_parser() {
        let base = parse_rfc3339(b"2025-12-22T09:55:00Z").expect("valid");
        for tail in [
            ":01Z",
            ":59.9999999Z",
            ":60Z",
            ":61Z",
            ":07z",
            ":07",
            ":07.Z",
            ":07.1234567891234Z",
            ":07+01:00",
            ":7Z",
            ":07.5ZZ",
            ":0aZ",
        ] {
            let full = parse_rfc3339(format!("2025-12-22T09:55{tail}").as_bytes()).ok();
            match seconds_tail(tail.as_bytes()) {
                Some(t) => assert_eq!(Some(base + t), full, "{tail}"),
                // The tail is handed to the full parser; only the offset form parses there.
                None => assert!(full.is_none() || tail.contains('+'), "{tail}"),
            }
        }
    }
}
