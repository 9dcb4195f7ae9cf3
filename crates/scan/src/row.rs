//! The byte-level scanner for one flat `DeviceNetworkEvents` row.
//!
//! It finds the handful of top-level keys detection needs with `memmem`, reads their values in
//! place and never allocates. Anything it is not certain about returns `None`, and the caller
//! hands the line to the full parser: the scanner is an accelerator, never a second opinion.
//!
//! Why a key match is a top-level key: a pattern like `"LocalPort"` followed by `:` cannot occur
//! inside a JSON string (the quote after `LocalPort` would have to be escaped), so every match is
//! a key of *some* object. The scanner accepts a line only if it has no nested container outside
//! the `AdditionalFields` value (checked with one `memchr2` for `{`/`[`), and it ignores matches
//! inside that value, so every match it uses is a key of the row itself.

use floodwatch_core::time::parse_rfc3339;
use floodwatch_core::{ActionType, Aggregator, DeviceId, Direction, Event, Ip, Protocol};
use memchr::memmem::Finder;
use std::sync::LazyLock;

use crate::af::{AfValues, scan_additional_fields};

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

/// Reads the value starting at `i` (after the colon). `None` for escapes, containers or
/// anything malformed: the caller falls back.
#[inline]
fn read_value(b: &[u8], i: usize) -> Option<Val<'_>> {
    let i = skip_ws(b, i);
    match *b.get(i)? {
        b'"' => {
            let rest = b.get(i + 1..)?;
            let end = memchr::memchr2(b'"', b'\\', rest)?;
            (rest[end] == b'"').then(|| Val::Str(&rest[..end]))
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
                Some(Val::Null)
            } else if v.is_empty() {
                None
            } else {
                Some(Val::Bare(v))
            }
        }
    }
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

/// Per-worker scanner state: the key order of the previous line (keys usually come in the same
/// order line after line, so each search starts where the previous key was found) and the last
/// device name with its id (rows come in runs of the same device, and interning hashes the name).
#[derive(Clone, Debug, Default)]
pub struct Scanner {
    /// Offset of each key in the previous line, used to order the searches.
    order: [u8; NKEYS],
    ordered: bool,
    last_device: Vec<u8>,
    last_id: Option<DeviceId>,
}

/// Where each key's value starts (just after the colon), or `None` if the key is absent.
type Positions = [Option<usize>; NKEYS];

impl Scanner {
    pub fn new() -> Self {
        Scanner {
            order: [0, 1, 2, 3, 4, 5, 6, 7, 8],
            ordered: false,
            last_device: Vec::new(),
            last_id: None,
        }
    }

    /// Finds `key` as a top-level key of `line` at or after `from`, skipping `excl` (the
    /// AdditionalFields value). Returns the offset just after its colon.
    #[inline]
    fn find(line: &[u8], key: usize, from: usize, excl: (usize, usize)) -> Option<usize> {
        let f = &FINDERS[key];
        let klen = f.needle().len();
        let mut at = from;
        while at < line.len() {
            let p = at + f.find(&line[at..])?;
            let after = p + klen;
            if p >= excl.0 && p < excl.1 {
                at = excl.1;
                continue;
            }
            let c = skip_ws(line, after);
            if line.get(c) == Some(&b':') {
                return Some(c + 1);
            }
            at = after;
        }
        None
    }

    /// Finds every key, searching in the order seen on the previous line, each search starting
    /// after the previous key, then (if that misses) from the start of the line.
    #[inline]
    fn locate(&mut self, line: &[u8], excl: (usize, usize)) -> Positions {
        let mut pos: Positions = [None; NKEYS];
        let mut cursor = 0usize;
        let mut in_order = true;
        for &k in &self.order {
            let k = k as usize;
            if k == Key::TimeGenerated as usize && pos[Key::Timestamp as usize].is_some() {
                continue;
            }
            let found = match Self::find(line, k, cursor, excl) {
                Some(p) => Some(p),
                None if cursor > 0 => {
                    in_order = false;
                    Self::find(line, k, 0, excl)
                }
                None => None,
            };
            if let Some(p) = found {
                cursor = p;
            }
            pos[k] = found;
        }
        if !in_order || !self.ordered {
            // Learn this line's order for the next one.
            let mut idx: [u8; NKEYS] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
            idx.sort_by_key(|&k| pos[k as usize].unwrap_or(usize::MAX));
            self.order = idx;
            self.ordered = true;
        }
        pos
    }

    /// Parses one flat row line without allocation. `None` means "not handled": hand the line to
    /// the full parser, which also decides whether it is an error.
    pub fn scan_row(&mut self, line: &[u8], agg: &mut Aggregator) -> Option<Event> {
        let line = trim(line);
        if line.len() < 2 || line[0] != b'{' || line[line.len() - 1] != b'}' {
            return None;
        }
        // The AdditionalFields value: its extent (so key matches inside it are ignored) and,
        // for the rows that need it, its contents.
        let (excl, af) = match AF_FINDER.find(line) {
            Some(p) => {
                let c = skip_ws(line, p + AF_FINDER.needle().len());
                if line.get(c) != Some(&b':') {
                    return None;
                }
                let v = skip_ws(line, c + 1);
                let (end, af) = scan_additional_fields(line, v)?;
                ((v, end), Some(af))
            }
            None => ((usize::MAX, usize::MAX), None),
        };
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

        let pos = self.locate(line, excl);
        let val = |k: Key| pos[k as usize].map(|p| read_value(line, p));

        let time = match val(Key::Timestamp).or_else(|| val(Key::TimeGenerated))? {
            Some(Val::Str(s)) => parse_rfc3339(s).ok()?,
            _ => return None,
        };
        let name = match val(Key::DeviceName)?? {
            Val::Str(s) if !s.is_empty() => s,
            _ => return None,
        };
        let action = match val(Key::ActionType)?? {
            Val::Str(s) if !s.is_empty() => ActionType::parse(s),
            _ => return None,
        };
        let remote_ip = match val(Key::RemoteIp) {
            None | Some(Some(Val::Null)) => None,
            Some(Some(Val::Str(s))) if !s.is_empty() => Some(Ip::parse(s)?),
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
            let af: AfValues = match af {
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

    #[inline]
    fn device(&mut self, name: &[u8], agg: &mut Aggregator) -> Option<DeviceId> {
        if let Some(id) = self.last_id
            && self.last_device == name
        {
            return Some(id);
        }
        let s = std::str::from_utf8(name).ok()?;
        let id = agg.device(s);
        self.last_device.clear();
        self.last_device.extend_from_slice(name);
        self.last_id = Some(id);
        Some(id)
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
