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

const KEY_NAMES: [&str; NKEYS] = [
    "\"Timestamp\"",
    "\"DeviceName\"",
    "\"ActionType\"",
    "\"RemoteIP\"",
    "\"RemotePort\"",
    "\"LocalPort\"",
    "\"Protocol\"",
    "\"ReportId\"",
    "\"TimeGenerated\"",
];

static FINDERS: LazyLock<[Finder<'static>; NKEYS]> =
    LazyLock::new(|| KEY_NAMES.map(|k| Finder::new(k.as_bytes()).into_owned()));

static AF_FINDER: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"AdditionalFields\"").into_owned());

/// A located value: the bytes of a JSON value, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val<'a> {
    /// A string without escapes; the bytes between the quotes.
    Str(&'a [u8]),
    /// A number, `true`/`false`, or anything else that is not a string, object, array or null.
    Bare(&'a [u8]),
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
#[inline]
fn read_value(b: &[u8], i: usize) -> Option<(Val<'_>, usize)> {
    let i = skip_ws(b, i);
    match *b.get(i)? {
        b'"' => {
            let rest = b.get(i + 1..)?;
            let end = quote_or_backslash(rest)?;
            (rest[end] == b'"').then(|| (Val::Str(&rest[..end]), i + end + 2))
        }
        b'{' | b'[' => None,
        _ => {
            let rest = &b[i..];
            let end = rest
                .iter()
                .position(|&c| c == b',' || c == b'}' || is_ws(c))
                .unwrap_or(rest.len());
            let v = &rest[..end];
            if v == b"null" {
                Some((Val::Null, i + end))
            } else if v.is_empty() {
                None
            } else {
                Some((Val::Bare(v), i + end))
            }
        }
    }
}

/// Offset of the first `"` or `\\` in `s`. The values read are short (10 to 40 bytes), where
/// testing 8 bytes at a time in a register beats the set-up of a vector search; longer values
/// go to `memchr2` after the first 32 bytes.
#[inline]
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= s.len() && i < 32 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        let w = u64::from_le_bytes(w);
        // A zero byte of `w ^ pattern` marks a match; the lowest flagged byte is always a real
        // one (borrows only flag bytes above a true zero).
        let q = w ^ (ONES * b'"' as u64);
        let bs = w ^ (ONES * b'\\' as u64);
        let m = (q.wrapping_sub(ONES) & !q & HIGH) | (bs.wrapping_sub(ONES) & !bs & HIGH);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i < 32 {
        return s[i..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\')
            .map(|p| i + p);
    }
    memchr::memchr2(b'"', b'\\', &s[i..]).map(|p| i + p)
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
#[inline]
fn port(v: Option<Option<Val<'_>>>) -> Option<Option<u16>> {
    match v {
        None | Some(Some(Val::Null)) => Some(None),
        Some(None) => None,
        Some(Some(Val::Bare(s))) => {
            if s.len() > 1 && s[0] == b'0' {
                return None;
            }
            Some(Some(u16::try_from(parse_u64(s)?).ok()?))
        }
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
#[derive(Clone, Debug, Default)]
pub struct Scanner {
    /// Slots (keys, then `AdditionalFields`) in the order of the previous line.
    order: [u8; NSLOTS],
    /// Per slot: offset of its key from the end of the previous slot's value, last seen.
    gap: [u32; NSLOTS],
    ordered: bool,
    last_device: Vec<u8>,
    last_id: Option<DeviceId>,
    devices: Vec<(Box<[u8]>, DeviceId)>,
    actions: Vec<(Box<[u8]>, ActionType)>,
    /// `YYYY-MM-DDTHH:MM` of the last timestamp parsed in full, and its time at second 0.
    minute: [u8; 16],
    minute_nanos: Option<Nanos>,
}

/// The nine keys plus `AdditionalFields`, located in one ordered pass.
const NSLOTS: usize = NKEYS + 1;
const AF_SLOT: usize = NKEYS;

/// Action type spellings remembered (Defender has about twenty).
const ACTION_CACHE: usize = 24;

/// Devices remembered by name beyond the last one (rows interleave a few busy devices).
const DEVICE_CACHE: usize = 16;

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

#[inline]
fn finder(slot: usize) -> &'static Finder<'static> {
    if slot == AF_SLOT {
        &AF_FINDER
    } else {
        &FINDERS[slot]
    }
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
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let mut i = 0;
    while i + 8 < n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

/// A dotted quad in its canonical spelling (1 to 3 digits a part, no leading zero, each at most
/// 255), read part by part without the general parser's per-byte state machine. Anything else
/// (leading zeros, IPv6, stray bytes) returns `None` and is left to [`Ip::parse`], which gives
/// the same address for every string accepted here.
#[inline]
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

/// If the key `needle` starts at `p` and is followed by a colon, the offset just after the
/// colon. The byte before must end a previous member or open the object: that rules out a match
/// that starts at an escaped quote (`"x\"LocalPort":` is the key `x"LocalPort`).
#[inline]
fn key_at(line: &[u8], p: usize, needle: &[u8]) -> Option<usize> {
    if !same(line.get(p..p + needle.len())?, needle) {
        return None;
    }
    if !matches!(
        line.get(p.wrapping_sub(1)),
        Some(b',' | b'{' | b' ' | b'\t' | b'\n' | b'\r')
    ) {
        return None;
    }
    let c = skip_ws(line, p + needle.len());
    (line.get(c) == Some(&b':')).then_some(c + 1)
}

impl Scanner {
    pub fn new() -> Self {
        Scanner {
            order: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            ..Scanner::default()
        }
    }

    /// Finds `slot`'s key as a key of `line` at or after `from`, skipping `excl` (the
    /// AdditionalFields value, when known). Returns (offset of the key, offset after its colon).
    #[inline]
    fn find(line: &[u8], slot: usize, from: usize, excl: (usize, usize)) -> Option<(usize, usize)> {
        let f = finder(slot);
        let needle = f.needle();
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
            let needle = finder(slot).needle();
            let guess = cursor + self.gap[slot] as usize;
            let probe = if guess < excl.0 || guess >= excl.1 {
                key_at(line, guess, needle).map(|v| (guess, v))
            } else {
                None
            };
            let found = match probe {
                Some(f) => Some(f),
                None => match Self::find(line, slot, cursor, out.excl) {
                    Some(f) => Some(f),
                    None if cursor > 0 => {
                        in_order = false;
                        Self::find(line, slot, 0, out.excl)
                    }
                    None => None,
                },
            };
            let Some((k, v)) = found else {
                continue;
            };
            self.gap[slot] = u32::try_from(k.saturating_sub(cursor)).unwrap_or(u32::MAX);
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

    /// Parses one flat row line without allocation. `None` means "not handled": hand the line to
    /// the full parser, which also decides whether it is an error.
    pub fn scan_row(&mut self, line: &[u8], agg: &mut Aggregator) -> Option<Event> {
        let line = trim(line);
        if line.len() < 2 || line[0] != b'{' || line[line.len() - 1] != b'}' {
            return None;
        }
        let mut loc = self.locate(line, (usize::MAX, usize::MAX))?;
        let excl = loc.excl;
        if excl.0 != usize::MAX
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
        // No other nested containers: then every key match outside AdditionalFields is the
        // row's own key.
        let body = &line[1..line.len() - 1];
        let (a, b) = if excl.0 == usize::MAX {
            (body, &body[..0])
        } else {
            (
                &line[1..excl.0],
                &line[excl.1.min(line.len() - 1)..line.len() - 1],
            )
        };
        if memchr::memchr2(b'{', b'[', a).is_some() || memchr::memchr2(b'{', b'[', b).is_some() {
            return None;
        }

        let vals = &loc.vals;
        let val = |k: Key| vals[k as usize].map(|(_, v)| v);

        let time = match val(Key::Timestamp).or_else(|| val(Key::TimeGenerated))? {
            Some(Val::Str(s)) => self.time(s)?,
            _ => return None,
        };
        let name = match val(Key::DeviceName)?? {
            Val::Str(s) if !s.is_empty() => s,
            _ => return None,
        };
        let action = match val(Key::ActionType)?? {
            Val::Str(s) if !s.is_empty() => self.action(s),
            _ => return None,
        };
        let remote_ip = match val(Key::RemoteIp) {
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
        };
        let remote_port = port(val(Key::RemotePort))?;
        let local_port = port(val(Key::LocalPort))?;
        let protocol = match val(Key::Protocol) {
            None | Some(Some(Val::Null)) => Protocol::Unknown,
            Some(Some(Val::Str(s))) => Protocol::parse(s),
            _ => return None,
        };
        let report_id = match val(Key::ReportId)?? {
            Val::Bare(s) => parse_i64(s)?,
            _ => return None,
        };

        let mut ev = Event {
            ts: time,
            device: 0,
            action,
            protocol,
            direction: Direction::Unknown,
            remote_ip,
            remote_port,
            local_port,
            report_id,
            weight: 1,
            bytes: None,
            packets: None,
        };
        if action.is_inspected() || action.is_aggregated_report() {
            let af: AfValues = match loc.af {
                Some(af) => af.values(line)?,
                None => AfValues::default(),
            };
            if action.is_inspected() {
                ev.direction = af.direction;
                ev.bytes = af.bytes;
                ev.packets = af.packets;
            } else {
                ev.weight = af.weight.unwrap_or(1);
            }
        }
        ev.device = self.device(name, agg)?;
        Some(ev)
    }

    /// [`parse_rfc3339`], reusing the previous timestamp's `YYYY-MM-DDTHH:MM` when this one has
    /// the same minute and the common `:SS[.fraction]Z` tail; anything else is parsed in full.
    #[inline]
    fn time(&mut self, s: &[u8]) -> Option<Nanos> {
        if let (Some(base), Some(prefix)) = (self.minute_nanos, s.get(..16))
            && prefix == self.minute
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
    #[inline]
    fn action(&mut self, s: &[u8]) -> ActionType {
        if let Some(&(_, a)) = self.actions.iter().find(|(n, _)| same(n, s)) {
            return a;
        }
        let a = ActionType::parse(s);
        if self.actions.len() >= ACTION_CACHE {
            self.actions.remove(0);
        }
        self.actions.push((s.into(), a));
        a
    }

    /// The device id of `name`: the last device, then the few before it, then the aggregator's
    /// table (which validates and hashes the name).
    #[inline]
    fn device(&mut self, name: &[u8], agg: &mut Aggregator) -> Option<DeviceId> {
        if let Some(id) = self.last_id
            && same(&self.last_device, name)
        {
            return Some(id);
        }
        let id = match self.devices.iter().find(|(n, _)| same(n, name)) {
            Some(&(_, id)) => id,
            None => {
                let id = agg.device(std::str::from_utf8(name).ok()?);
                if self.devices.len() >= DEVICE_CACHE {
                    self.devices.remove(0);
                }
                self.devices.push((name.into(), id));
                id
            }
        };
        self.last_device.clear();
        self.last_device.extend_from_slice(name);
        self.last_id = Some(id);
        Some(id)
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
