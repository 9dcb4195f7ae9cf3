//! Every JSON shape, through one streaming visitor.
//!
//! A JSON value is read as a *document*: a flat row, an envelope (`category` + `properties`), an
//! Event Hubs message (`records`), an Advanced Hunting or Graph response (`Results` / `results`),
//! a Log Analytics response (`tables`), or an array of any of these. Arrays are walked element by
//! element through serde's `SeqAccess`, so a 2 GB JSON array or API response never sits in
//! memory whole: only one row at a time does.
//!
//! The same visitor reads one NDJSON line ([`parse_line`]) and a whole file or stream
//! ([`read_documents`]), so a line holding `{"records":[...]}` and a pretty-printed file of the
//! same message take the same path.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::rc::Rc;

use floodwatch_core::{Aggregator, Diagnostics, Fate, Location, SkipReason};
use serde::Deserialize;
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;

use crate::record::{ColumnIndex, PositionalJson, Reject, Row, get_ci, quote, to_event_noting};

/// Line and byte position of a reader, shared with the visitor so a skipped row can say where
/// it was. Updated by [`CountingReader`].
#[derive(Debug, Default)]
pub(crate) struct Position {
    /// Bytes consumed so far.
    pub offset: Cell<u64>,
    /// Newlines consumed so far (the current line is this + 1).
    pub newlines: Cell<u64>,
}

/// Counts bytes and newlines as serde_json pulls them. serde_json reads an `io::Read` one byte
/// at a time, so the counts are exact to within its one byte of look-ahead.
pub(crate) struct CountingReader<R> {
    pub inner: R,
    pub pos: Rc<Position>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = &buf[..n];
        self.pos.offset.set(self.pos.offset.get() + n as u64);
        self.pos
            .newlines
            .set(self.pos.newlines.get() + memchr::memchr_iter(b'\n', chunk).count() as u64);
        Ok(n)
    }
}

/// How the position of a record is known.
pub(crate) enum Tracker<'a> {
    /// Every record is at the base location (one line of line-oriented input).
    Fixed,
    /// A stream: its live position.
    Reader(Rc<Position>),
    /// A document in memory: element positions come from where their text lies in `data`.
    Slice {
        data: &'a [u8],
        /// Bytes before `data[0]` in the file (a BOM).
        skipped: u64,
        /// `data[..scanned]` holds `newlines` newlines.
        scanned: usize,
        newlines: u64,
    },
}

/// Where records are going and where they come from.
pub(crate) struct Sink<'a> {
    pub agg: &'a mut Aggregator,
    pub diag: &'a mut Diagnostics,
    /// The location reported for records (a line's own location, or the stream's source).
    pub base: &'a Location,
    pub tracker: Tracker<'a>,
    /// (line, byte offset) of the element being read, once known.
    pub current: Option<(u64, u64)>,
    /// Strict mode: stop reading at the first error-class skip.
    pub strict: bool,
    /// Set once a strict run met an error; the visitors then stop.
    pub stopped: bool,
    /// The fast scanner for the rows of a document, made on first use and kept for the whole
    /// document: it learns the key order and caches device names and action types from row to
    /// row, which a scanner made afresh for each row cannot.
    pub scanner: Option<Box<floodwatch_scan::Scanner>>,
}

/// The message of the error that unwinds a strict run out of serde (never shown).
const STOPPED: &str = "stopped at the first error (strict mode)";

impl Sink<'_> {
    fn location(&self) -> Location {
        let at = |line, offset| Location {
            source: self.base.source.clone(),
            line,
            offset,
        };
        match (&self.tracker, self.current) {
            (Tracker::Fixed, _) => self.base.clone(),
            (_, Some((l, o))) => at(Some(l), Some(o)),
            (Tracker::Reader(p), None) => at(Some(p.newlines.get() + 1), None),
            (Tracker::Slice { .. }, None) => at(None, None),
        }
    }

    fn late_if(&mut self, fate: Fate) {
        if fate == Fate::Late {
            let at = self.location();
            self.diag.late(at);
        }
    }

    /// Notes where the element whose JSON text is `text` starts.
    fn mark(&mut self, text: &str) {
        match &mut self.tracker {
            Tracker::Fixed => {}
            // The reader stands just after the element.
            Tracker::Reader(p) => {
                let inside = memchr::memchr_iter(b'\n', text.as_bytes()).count() as u64;
                let line = (p.newlines.get() + 1).saturating_sub(inside);
                self.current = Some((line, p.offset.get().saturating_sub(text.len() as u64)));
            }
            Tracker::Slice {
                data,
                skipped,
                scanned,
                newlines,
            } => {
                let base = data.as_ptr() as usize;
                let at = (text.as_ptr() as usize).wrapping_sub(base);
                if at > data.len() {
                    return; // not text of this document (a copy)
                }
                if at < *scanned {
                    *scanned = 0;
                    *newlines = 0;
                }
                *newlines += memchr::memchr_iter(b'\n', &data[*scanned..at]).count() as u64;
                *scanned = at;
                self.current = Some((*newlines + 1, *skipped + at as u64));
            }
        }
    }

    fn reject(&mut self, r: Reject) {
        self.stopped |= self.strict && r.reason.is_error();
        let loc = self.location();
        self.diag.skip(r.reason, loc, r.message);
    }

    /// One row: counted as read, then aggregated or skipped.
    fn row<R: Row + ?Sized>(&mut self, row: &R) {
        self.diag.records_read += 1;
        match to_event_noting(row, self.agg, self.diag) {
            Ok(ev) => {
                let fate = self.agg.add(&ev);
                self.late_if(fate);
            }
            Err(r) => self.reject(r),
        }
    }

    /// Fast path for one value held as JSON text: a Streaming API envelope is read without
    /// building a JSON tree, and its row (or a flat row, when `flat` is set) goes through the
    /// byte-level scanner. Returns false when the general path must read the value; nothing has
    /// been counted then.
    fn raw(&mut self, text: &str, flat: bool) -> bool {
        let b = text.as_bytes();
        if memchr::memmem::find(b, b"\"properties\"").is_some() {
            let Ok(env) = serde_json::from_str::<Envelope>(text) else {
                return false;
            };
            let Some(props) = env.properties.filter(|_| env.records.is_none()) else {
                return false;
            };
            if let Some(c) = &env.category
                && !is_network_events(c)
            {
                self.diag.records_read += 1;
                self.reject(Reject::new(
                    SkipReason::OtherTable,
                    format!("category {} is not DeviceNetworkEvents", quote(c)),
                ));
                return true;
            }
            self.flat_row(props.get().as_bytes())
        } else if flat
            && ["\"records\"", "\"results\"", "\"tables\"", "\"category\""]
                .iter()
                .all(|k| memchr::memmem::find(b, k.as_bytes()).is_none())
        {
            self.flat_row(b)
        } else {
            false
        }
    }

    /// A flat row as JSON text: the scanner, else a JSON map through [`to_event`].
    fn flat_row(&mut self, row: &[u8]) -> bool {
        let scanner = self
            .scanner
            .get_or_insert_with(|| Box::new(floodwatch_scan::Scanner::new()));
        if let Some(ev) = scanner.scan_row(row, self.agg) {
            self.diag.records_read += 1;
            let fate = self.agg.add(&ev);
            self.late_if(fate);
            return true;
        }
        match serde_json::from_slice::<Map<String, Value>>(row) {
            Ok(m) => {
                // No `category`/`properties` here (the callers checked): a row, or a wrapped one.
                self.envelope_or_row(m);
                true
            }
            Err(_) => false,
        }
    }

    /// One element of a streamed array, held as JSON text.
    fn raw_item(&mut self, raw: &RawValue) {
        self.mark(raw.get());
        self.text_item(raw.get());
    }

    /// One element of an array as JSON text (which may not be valid JSON when it comes from
    /// the document splitter rather than from serde).
    fn text_item(&mut self, text: &str) {
        if self.raw(text, true) {
            return;
        }
        self.serde_item(text);
    }

    /// One element as JSON text, through serde alone.
    fn serde_item(&mut self, text: &str) {
        match serde_json::from_str::<Value>(text) {
            Ok(v) => self.item(v),
            Err(e) => {
                self.diag.records_read += 1;
                self.reject(Reject::new(SkipReason::Malformed, format!("JSON: {e}")));
            }
        }
    }

    /// A value that stands for one or more records, already in memory.
    fn item(&mut self, v: Value) {
        match v {
            Value::Object(m) => self.object(m),
            Value::Array(items) => {
                for it in items {
                    self.item(it);
                }
            }
            other => {
                self.diag.records_read += 1;
                let what = kind(&other);
                self.reject(Reject::new(
                    SkipReason::WrongType,
                    format!("expected a JSON object (a row or an envelope), got {what}"),
                ));
            }
        }
    }

    fn object(&mut self, mut m: Map<String, Value>) {
        for key in ["records", "results", "value", "tables"] {
            if let Some(k) = m.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned() {
                // `value` holds rows only as an OData list's array; elsewhere it may be a column.
                if key == "value" && !m[&k].is_array() {
                    continue;
                }
                let v = m.remove(&k).unwrap_or(Value::Null);
                match (key, v) {
                    ("tables", Value::Array(tables)) => {
                        for t in tables {
                            self.table_value(t);
                        }
                    }
                    (_, v @ Value::Array(_)) => self.item(v),
                    (_, other) => {
                        let what = kind(&other);
                        self.reject(Reject::new(
                            SkipReason::WrongType,
                            format!("field \"{k}\": expected an array, got {what}"),
                        ));
                    }
                }
                return;
            }
        }
        self.envelope_or_row(m);
    }

    /// Streaming envelopes carry the row in `properties` and say which table it is in
    /// `category`; a flat row has neither.
    fn envelope_or_row(&mut self, m: Map<String, Value>) {
        let category = get_ci(&m, "category");
        let props = get_ci(&m, "properties");
        if category.is_none() && props.is_none() {
            match unwrap_record(&m, 0) {
                Some((path, inner)) => {
                    self.diag.wrapped.add(&path, 1);
                    self.row(&inner);
                }
                None => self.row(&m),
            }
            return;
        }
        if let Some(c) = category {
            let ok = match c {
                Value::String(s) => is_network_events(s),
                _ => false,
            };
            if !ok {
                self.diag.records_read += 1;
                let shown = match c {
                    Value::String(s) => quote(s),
                    other => other.to_string(),
                };
                self.reject(Reject::new(
                    SkipReason::OtherTable,
                    format!("category {shown} is not DeviceNetworkEvents"),
                ));
                return;
            }
        }
        match props {
            Some(Value::Object(p)) => self.row(p),
            Some(Value::String(s)) => match serde_json::from_str::<Map<String, Value>>(s) {
                Ok(p) => self.row(&p),
                Err(e) => {
                    self.diag.records_read += 1;
                    self.reject(Reject::new(
                        SkipReason::Malformed,
                        format!("field \"properties\": not a JSON object: {e}"),
                    ));
                }
            },
            other => {
                self.diag.records_read += 1;
                let what = other.map_or_else(|| "nothing".to_owned(), kind);
                self.reject(Reject::new(
                    SkipReason::MissingField,
                    format!("field \"properties\": expected the row object, got {what}"),
                ));
            }
        }
    }

    /// A Log Analytics table already in memory.
    fn table_value(&mut self, t: Value) {
        let Value::Object(t) = t else {
            return self.reject(Reject::new(
                SkipReason::WrongType,
                format!("a table must be an object, got {}", kind(&t)),
            ));
        };
        let cols = get_ci(&t, "columns").map(column_names).unwrap_or_default();
        let index = ColumnIndex::new(cols.iter().map(String::as_str));
        if let Some(Value::Array(rows)) = get_ci(&t, "rows") {
            for r in rows {
                self.positional(&index, r);
            }
        }
    }

    fn positional(&mut self, index: &ColumnIndex, r: &Value) {
        match r {
            Value::Array(values) => self.row(&PositionalJson { index, values }),
            other => {
                self.diag.records_read += 1;
                let what = kind(other);
                self.reject(Reject::new(
                    SkipReason::WrongType,
                    format!("a Log Analytics row must be an array, got {what}"),
                ));
            }
        }
    }
}

/// The parts of a Streaming API envelope the fast path reads; `records` only to notice an
/// Event Hubs body, which takes the general path.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    category: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(default)]
    records: Option<IgnoredAny>,
}

/// Keys under which log shippers and test harnesses wrap a record: Splunk's and HTTP event
/// collectors' `body`, `message` (a JSON string, as Elastic's and Sekoia's fixtures hold it),
/// a harness's `input`, Elasticsearch's `_source`, and `event` / `data`.
const WRAPPERS: [&str; 6] = ["body", "message", "input", "_source", "event", "data"];

/// The record inside a wrapper (`{"body": {...row...}}`, `{"input": {"message": "{...}"}}`),
/// with the path of keys that led to it, when `m` is not a row itself (no `Timestamp`,
/// `TimeGenerated` or `DeviceName`) and a wrapper key holds one (an object or a JSON string of
/// one, with `DeviceName` and `ActionType`). Up to three levels deep.
fn unwrap_record(m: &Map<String, Value>, depth: usize) -> Option<(String, Map<String, Value>)> {
    let has = |m: &Map<String, Value>, k: &str| get_ci(m, k).is_some_and(|v| !v.is_null());
    if depth >= 3 || has(m, "Timestamp") || has(m, "TimeGenerated") || has(m, "DeviceName") {
        return None;
    }
    for key in WRAPPERS {
        let inner = match get_ci(m, key) {
            Some(Value::Object(o)) => o.clone(),
            Some(Value::String(s)) if s.trim_start().starts_with('{') => {
                match serde_json::from_str::<Map<String, Value>>(s) {
                    Ok(o) => o,
                    Err(_) => continue,
                }
            }
            _ => continue,
        };
        if has(&inner, "DeviceName") && has(&inner, "ActionType") {
            return Some((key.to_owned(), inner));
        }
        if let Some((path, o)) = unwrap_record(&inner, depth + 1) {
            return Some((format!("{key}.{path}"), o));
        }
    }
    None
}

/// `AdvancedHunting-DeviceNetworkEvents` (Streaming API) or the bare table name.
pub fn is_network_events(category: &str) -> bool {
    let c = category.trim();
    c.eq_ignore_ascii_case("AdvancedHunting-DeviceNetworkEvents")
        || c.eq_ignore_ascii_case("DeviceNetworkEvents")
}

fn kind(v: &Value) -> String {
    let k = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    k.to_owned()
}

/// Column names of a Log Analytics `columns` array (`[{"name","type"}]`).
fn column_names(v: &Value) -> Vec<String> {
    match v {
        Value::Array(cols) => cols
            .iter()
            .map(|c| match c {
                Value::Object(o) => match get_ci(o, "name") {
                    Some(Value::String(s)) => s.clone(),
                    _ => String::new(),
                },
                Value::String(s) => s.clone(),
                _ => String::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// An array element read as JSON text: copied out of a stream (`Box<RawValue>`), or borrowed
/// from a document in memory (`&RawValue`), which also tells where it lies.
trait Elem<'de>: Deserialize<'de> {
    fn raw(&self) -> &RawValue;
}

impl<'de> Elem<'de> for Box<RawValue> {
    fn raw(&self) -> &RawValue {
        self
    }
}

impl<'de> Elem<'de> for &'de RawValue {
    fn raw(&self) -> &RawValue {
        self
    }
}

/// Reads any JSON value as a document, streaming its big arrays.
struct Doc<'s, 'a, E> {
    sink: &'s mut Sink<'a>,
    elem: PhantomData<fn() -> E>,
}

impl<'s, 'a, E> Doc<'s, 'a, E> {
    fn new(sink: &'s mut Sink<'a>) -> Self {
        Doc {
            sink,
            elem: PhantomData,
        }
    }
}

impl<'de, E: Elem<'de>> DeserializeSeed<'de> for Doc<'_, '_, E> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, E: Elem<'de>> Visitor<'de> for Doc<'_, '_, E> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object or array of DeviceNetworkEvents rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(e) = seq.next_element::<E>()? {
            self.sink.raw_item(e.raw());
            if self.sink.stopped {
                return Err(A::Error::custom(STOPPED));
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys other than the big arrays are kept, in case this object is itself a row or an
        // envelope (then it has no big array and is handled at the end).
        let mut rest = Map::new();
        let mut streamed = false;
        while let Some(key) = map.next_key::<String>()? {
            let k = key.to_ascii_lowercase();
            match k.as_str() {
                "records" | "results" | "value" => {
                    map.next_value_seed(Items::<E> {
                        sink: self.sink,
                        elem: PhantomData,
                    })?;
                    streamed = true;
                }
                "tables" => {
                    map.next_value_seed(Tables::<E> {
                        sink: self.sink,
                        elem: PhantomData,
                    })?;
                    streamed = true;
                }
                _ if streamed => {
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    let v = map.next_value::<Value>()?;
                    rest.insert(key, v);
                }
            }
        }
        if !streamed {
            self.sink.envelope_or_row(rest);
        }
        Ok(())
    }

    fn visit_str<Er: serde::de::Error>(self, _: &str) -> Result<(), Er> {
        Err(Er::custom("expected a JSON object or array, got a string"))
    }
}

/// An array whose elements are rows or envelopes.
struct Items<'s, 'a, E> {
    sink: &'s mut Sink<'a>,
    elem: PhantomData<fn() -> E>,
}

impl<'de, E: Elem<'de>> DeserializeSeed<'de> for Items<'_, '_, E> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, E: Elem<'de>> Visitor<'de> for Items<'_, '_, E> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(e) = seq.next_element::<E>()? {
            self.sink.raw_item(e.raw());
            if self.sink.stopped {
                return Err(A::Error::custom(STOPPED));
            }
        }
        Ok(())
    }
}

/// Log Analytics `tables`: an array of `{"name","columns","rows"}`.
struct Tables<'s, 'a, E> {
    sink: &'s mut Sink<'a>,
    elem: PhantomData<fn() -> E>,
}

impl<'de, E: Elem<'de>> DeserializeSeed<'de> for Tables<'_, '_, E> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, E: Elem<'de>> Visitor<'de> for Tables<'_, '_, E> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of tables")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Table::<E> {
                sink: self.sink,
                elem: PhantomData,
            })?
            .is_some()
        {}
        Ok(())
    }
}

struct Table<'s, 'a, E> {
    sink: &'s mut Sink<'a>,
    elem: PhantomData<fn() -> E>,
}

impl<'de, E: Elem<'de>> DeserializeSeed<'de> for Table<'_, '_, E> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, E: Elem<'de>> Visitor<'de> for Table<'_, '_, E> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table object with columns and rows")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut index: Option<ColumnIndex> = None;
        // Rows that arrive before their columns (the API writes columns first; this is only for
        // hand-made files) wait here.
        let mut early_rows: Vec<Value> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key.eq_ignore_ascii_case("columns") {
                let cols = map.next_value::<Value>()?;
                let names = column_names(&cols);
                index = Some(ColumnIndex::new(names.iter().map(String::as_str)));
            } else if key.eq_ignore_ascii_case("rows") {
                match &index {
                    Some(ix) => map.next_value_seed(Rows::<E> {
                        sink: self.sink,
                        index: ix,
                        elem: PhantomData,
                    })?,
                    None => early_rows.extend(match map.next_value::<Value>()? {
                        Value::Array(rows) => rows,
                        other => vec![other],
                    }),
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        let ix = index.unwrap_or_default();
        for r in &early_rows {
            self.sink.positional(&ix, r);
        }
        Ok(())
    }
}

struct Rows<'s, 'a, 'i, E> {
    sink: &'s mut Sink<'a>,
    index: &'i ColumnIndex,
    elem: PhantomData<fn() -> E>,
}

impl<'de, E: Elem<'de>> DeserializeSeed<'de> for Rows<'_, '_, '_, E> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, E: Elem<'de>> Visitor<'de> for Rows<'_, '_, '_, E> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(e) = seq.next_element::<E>()? {
            let text = e.raw().get();
            self.sink.mark(text);
            match serde_json::from_str::<Value>(text) {
                Ok(v) => self.sink.positional(self.index, &v),
                Err(err) => {
                    self.sink.diag.records_read += 1;
                    self.sink
                        .reject(Reject::new(SkipReason::Malformed, format!("JSON: {err}")));
                }
            }
            if self.sink.stopped {
                return Err(A::Error::custom(STOPPED));
            }
        }
        Ok(())
    }
}

/// Records a JSON error (syntax, truncation, a wrong shape at the document level).
fn json_error(sink: &mut Sink<'_>, e: &serde_json::Error, line_offset: Option<u64>) {
    use serde_json::error::Category;
    let reason = match e.classify() {
        Category::Data => SkipReason::WrongType,
        Category::Io => SkipReason::Truncated,
        Category::Syntax | Category::Eof => SkipReason::Malformed,
    };
    let mut loc = sink.base.clone();
    if !matches!(sink.tracker, Tracker::Fixed) {
        loc.line = Some(e.line() as u64);
        loc.offset = None;
    } else if let (Some(base), true) = (line_offset, e.column() > 0) {
        loc.offset = Some(base + e.column() as u64 - 1);
    }
    sink.diag.skip(reason, loc, format!("JSON: {e}"));
}

/// Parses one line of line-oriented JSON (NDJSON row, Storage-export envelope, Event Hubs
/// message with any number of records) into `agg`. Bad lines are recorded at `loc`.
///
/// This is the general parser the fast scanner falls back to for anything it does not handle.
pub fn parse_line(line: &[u8], loc: Location, agg: &mut Aggregator, diag: &mut Diagnostics) {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => {
            diag.records_read += 1;
            let at = e.valid_up_to();
            let l = Location {
                offset: loc.offset.map(|o| o + at as u64),
                ..loc
            };
            diag.skip(
                SkipReason::Binary,
                l,
                format!(
                    "not UTF-8 text (invalid byte 0x{:02x} at column {})",
                    line[at],
                    at + 1
                ),
            );
            return;
        }
    };
    if let Some(at) = line
        .iter()
        .position(|&c| c < 0x20 && c != b'\t' && c != b'\r' && c != b'\n')
    {
        diag.records_read += 1;
        diag.skip(
            SkipReason::Binary,
            loc,
            format!(
                "binary data (control byte 0x{:02x} at column {})",
                line[at],
                at + 1
            ),
        );
        return;
    }
    let line_offset = loc.offset;
    let mut sink = Sink {
        agg,
        diag,
        base: &loc,
        tracker: Tracker::Fixed,
        current: None,
        strict: false,
        stopped: false,
        scanner: None,
    };
    // The scanner already declined this line as a flat row; envelopes have a fast path.
    if sink.raw(text, false) {
        return;
    }
    let mut de = serde_json::Deserializer::from_slice(line);
    let r = Doc::<&RawValue>::new(&mut sink)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Err(e) = r {
        sink.diag.records_read += 1;
        json_error(&mut sink, &e, line_offset);
    }
}

/// Parses one element of a document's row array (a row, an envelope, a message with records, a
/// wrapped record: whatever an array element may be) into `agg`, with skips at `loc`. What the
/// document reader does with each element; the fallback of the document splitter's fast path
/// (`floodwatch_scan::aggregate_spans`), whose elements have not been checked as JSON.
pub fn parse_element(text: &[u8], loc: Location, agg: &mut Aggregator, diag: &mut Diagnostics) {
    let text = match std::str::from_utf8(text) {
        Ok(t) => t,
        Err(e) => {
            diag.records_read += 1;
            let at = e.valid_up_to();
            let l = Location {
                offset: loc.offset.map(|o| o + at as u64),
                ..loc
            };
            // As for a line (`parse_line`): a row reads the same in every shape.
            diag.skip(
                SkipReason::Binary,
                l,
                format!(
                    "not UTF-8 text (invalid byte 0x{:02x} at column {})",
                    text[at],
                    at + 1
                ),
            );
            return;
        }
    };
    let mut sink = Sink {
        agg,
        diag,
        base: &loc,
        tracker: Tracker::Fixed,
        current: None,
        strict: false,
        stopped: false,
        scanner: None,
    };
    // The splitter's element is not known to be JSON: a raw control character would pass the
    // scanner where serde refuses it (and a whole document through serde stops there).
    if floodwatch_scan::refused_controls(text.as_bytes()) {
        sink.serde_item(text);
        return;
    }
    sink.text_item(text);
}

/// Reads a stream of JSON documents (usually one: an array or an API response; also several
/// concatenated, as a forced `--format json-array` over NDJSON would give) into `agg`.
///
/// A syntax error ends the stream: inside one JSON document there is no safe place to resume.
/// `truncated` says the underlying decompressor already failed; then the resulting "unexpected
/// end" is not reported twice.
pub(crate) fn read_documents<R: Read>(
    reader: R,
    source: &Location,
    agg: &mut Aggregator,
    diag: &mut Diagnostics,
    truncated: &dyn Fn() -> bool,
    strict: bool,
) {
    let pos = Rc::new(Position::default());
    let counting = CountingReader {
        inner: reader,
        pos: Rc::clone(&pos),
    };
    let mut de = serde_json::Deserializer::from_reader(counting);
    let mut sink = Sink {
        agg,
        diag,
        base: source,
        tracker: Tracker::Reader(pos),
        current: None,
        strict,
        stopped: false,
        scanner: None,
    };
    documents::<_, Box<RawValue>>(&mut de, &mut sink, truncated);
}

/// [`read_documents`] over a document in memory (a mapped file): elements are borrowed, not
/// copied, and each knows its exact line and offset. `skipped` bytes (a BOM) precede `data`.
pub(crate) fn read_documents_slice(
    data: &[u8],
    skipped: u64,
    source: &Location,
    agg: &mut Aggregator,
    diag: &mut Diagnostics,
    strict: bool,
) {
    let mut de = serde_json::Deserializer::from_slice(data);
    let mut sink = Sink {
        agg,
        diag,
        base: source,
        tracker: Tracker::Slice {
            data,
            skipped,
            scanned: 0,
            newlines: 0,
        },
        current: None,
        strict,
        stopped: false,
        scanner: None,
    };
    documents::<_, &RawValue>(&mut de, &mut sink, &|| false);
}

fn documents<'de, R, E>(
    de: &mut serde_json::Deserializer<R>,
    sink: &mut Sink<'_>,
    truncated: &dyn Fn() -> bool,
) where
    R: serde_json::de::Read<'de>,
    E: Elem<'de>,
{
    loop {
        if let Err(e) = Doc::<E>::new(sink).deserialize(&mut *de) {
            if sink.stopped {
                return;
            }
            let eof_after_break = e.classify() == serde_json::error::Category::Eof && truncated();
            if !eof_after_break {
                json_error(sink, &e, None);
            }
            return;
        }
        match de.end() {
            Ok(()) => return,
            Err(e) if e.classify() == serde_json::error::Category::Io => {
                json_error(sink, &e, None);
                return;
            }
            // More input follows: another document.
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwatch_core::{BinWidth, ClassifyConfig};

    fn agg() -> Aggregator {
        Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
    }

    const ROW: &str = r#"{"Timestamp":"2025-12-22T09:55:01Z","DeviceName":"a","ActionType":"InboundConnectionAccepted","RemoteIP":"203.0.113.7","LocalPort":443,"ReportId":1}"#;

    fn loc() -> Location {
        Location {
            source: "x.json".into(),
            line: Some(7),
            offset: Some(100),
        }
    }

    fn run_line(s: &str) -> (Aggregator, Diagnostics) {
        let mut a = agg();
        let mut d = Diagnostics::default();
        parse_line(s.as_bytes(), loc(), &mut a, &mut d);
        (a, d)
    }

    fn events(a: Aggregator) -> u64 {
        a.finish().stats.events
    }

    #[test]
    fn a_line_of_every_shape() {
        let env = |cat: &str| {
            format!(r#"{{"time":"x","Tenant":"t","category":"{cat}","properties":{ROW}}}"#)
        };
        let cases = [
            (ROW.to_owned(), 1, 0),
            (env("AdvancedHunting-DeviceNetworkEvents"), 1, 0),
            (env("advancedhunting-devicenetworkevents"), 1, 0),
            (env("AdvancedHunting-DeviceEvents"), 0, 1),
            (
                format!(
                    r#"{{"records":[{},{}, {}]}}"#,
                    env("AdvancedHunting-DeviceNetworkEvents"),
                    env("AdvancedHunting-DeviceProcessEvents"),
                    env("AdvancedHunting-DeviceNetworkEvents")
                        .replace("\"ReportId\":1", "\"ReportId\":2")
                ),
                2,
                1,
            ),
            (format!(r#"{{"Schema":[],"Results":[{ROW}]}}"#), 1, 0),
            (format!(r#"[{ROW}]"#), 1, 0),
        ];
        for (line, good, other) in cases {
            let (a, d) = run_line(&line);
            assert_eq!(d.count(SkipReason::OtherTable), other, "{line}");
            assert_eq!(d.total_skipped(), other, "{line}: {:?}", d.examples);
            assert_eq!(d.records_read, good + other);
            assert_eq!(events(a), good, "{line}");
        }
    }

    #[test]
    fn log_analytics_rows_by_position() {
        let line = r#"{"tables":[{"name":"PrimaryResult","columns":[{"name":"TimeGenerated","type":"datetime"},{"name":"DeviceName","type":"string"},{"name":"ActionType","type":"string"},{"name":"LocalPort","type":"int"}],"rows":[["2025-12-22T09:55:01Z","a","ConnectionAttempt",443],["2025-12-22T09:56:01Z","b","ConnectionAttempt","x"]]}]}"#;
        let (a, d) = run_line(line);
        assert_eq!(events(a), 1);
        assert_eq!(d.count(SkipReason::BadPort), 1);
        assert_eq!(
            d.examples[0].message,
            r#"field "LocalPort": not a port (0-65535): "x""#
        );
    }

    #[test]
    fn malformed_line_reports_the_column_offset() {
        let (a, d) = run_line(r#"{"Timestamp": "2025-12-22T09:55:01Z", oops}"#);
        assert_eq!(events(a), 0);
        assert_eq!(d.count(SkipReason::Malformed), 1);
        let ex = &d.examples[0];
        assert_eq!(ex.location.line, Some(7));
        assert!(ex.location.offset.unwrap() > 100);
        assert!(
            ex.message.starts_with("JSON: key must be a string"),
            "{}",
            ex.message
        );
    }

    #[test]
    fn binary_and_invalid_utf8_lines() {
        let mut a = agg();
        let mut d = Diagnostics::default();
        parse_line(b"{\"a\":\"\xff\xfe\"}", loc(), &mut a, &mut d);
        parse_line(b"\x00\x01\x02garbage", loc(), &mut a, &mut d);
        assert_eq!(d.count(SkipReason::Binary), 2);
        assert_eq!(
            d.examples[0].message,
            "binary data (control byte 0x00 at column 1)"
        );
        assert_eq!(
            d.examples[1].message,
            "not UTF-8 text (invalid byte 0xff at column 7)"
        );
        assert_eq!(d.examples[1].location.offset, Some(106));
    }

    #[test]
    fn scalar_and_trailing_garbage() {
        let (_, d) = run_line("42");
        assert_eq!(d.count(SkipReason::WrongType), 1);
        let (a, d) = run_line(&format!("{ROW} trailing"));
        assert_eq!(d.count(SkipReason::Malformed), 1);
        assert_eq!(
            events(a),
            1,
            "the complete object before the garbage still counts"
        );
    }

    #[test]
    fn documents_stream_and_report_lines() {
        let doc = format!(
            "[\n{ROW},\n{},\n{}\n]\n",
            ROW.replace("203.0.113.7", "bad-ip"),
            ROW.replace("\"ReportId\":1", "\"ReportId\":3")
        );
        let mut a = agg();
        let mut d = Diagnostics::default();
        let src = Location {
            source: "arr.json".into(),
            line: None,
            offset: None,
        };
        read_documents(doc.as_bytes(), &src, &mut a, &mut d, &|| false, false);
        assert_eq!(events(a), 2);
        assert_eq!(d.count(SkipReason::BadIp), 1);
        assert_eq!(d.examples[0].location.line, Some(3));
        assert_eq!(d.records_read, 3);
    }

    #[test]
    fn concatenated_documents_and_a_syntax_error() {
        let doc = format!(
            "{ROW}\n{}\n{{\"oops\n",
            ROW.replace("\"ReportId\":1", "\"ReportId\":2")
        );
        let mut a = agg();
        let mut d = Diagnostics::default();
        let src = Location {
            source: "c.json".into(),
            line: None,
            offset: None,
        };
        read_documents(doc.as_bytes(), &src, &mut a, &mut d, &|| false, false);
        assert_eq!(events(a), 2);
        assert_eq!(d.count(SkipReason::Malformed), 1);
        assert_eq!(d.examples[0].location.line, Some(4));
    }

    #[test]
    fn strict_documents_stop_at_the_first_error() {
        let bad = ROW.replace("203.0.113.7", "bad-ip");
        let good2 = ROW.replace("\"ReportId\":1", "\"ReportId\":2");
        let src = Location {
            source: "s.json".into(),
            line: None,
            offset: None,
        };
        for strict in [false, true] {
            let doc = format!("{{\"Results\":[\n{ROW},\n{bad},\n{good2}\n]}}");
            let mut a = agg();
            let mut d = Diagnostics::default();
            read_documents_slice(doc.as_bytes(), 0, &src, &mut a, &mut d, strict);
            assert_eq!(d.total_skipped(), 1, "{:?}", d.examples);
            assert_eq!(d.examples[0].reason, SkipReason::BadIp);
            assert_eq!(d.examples[0].location.line, Some(3));
            assert_eq!(events(a), if strict { 1 } else { 2 });
        }
    }

    proptest::proptest! {
        /// Any bytes are data: a line never panics, and is either aggregated or accounted for.
        #[test]
        fn any_line_is_accounted_for(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut a = agg();
            let mut d = Diagnostics::default();
            parse_line(&bytes, loc(), &mut a, &mut d);
            let events = a.finish().stats.events;
            proptest::prop_assert!(events + d.total_skipped() >= 1 || d.records_read == 0);
        }

        /// Rows built from JSON fragments around a valid row never panic either.
        #[test]
        fn mangled_rows_never_panic(cut in 0usize..200, junk in "[\\[\\]{}\":,0-9a-z ]{0,12}") {
            let mut s = ROW.to_owned();
            let at = cut.min(s.len());
            s.insert_str(at, &junk);
            let mut a = agg();
            let mut d = Diagnostics::default();
            parse_line(s.as_bytes(), loc(), &mut a, &mut d);
            let events = a.finish().stats.events;
            proptest::prop_assert!(events + d.total_skipped() >= 1, "{}", s);
        }
    }
}
