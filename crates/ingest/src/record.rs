//! The one place where a `DeviceNetworkEvents` row becomes an [`Event`].
//!
//! Every reader (a JSON object, a Log Analytics row positioned by its columns, a CSV record) hands
//! its row to [`to_event`] through the small [`Row`] accessor, so a column is read the same way
//! whatever shape it arrived in: a port may be a number or a numeric string, `AdditionalFields`
//! may be an object or a JSON-encoded string, any column may be absent or null.

use floodwatch_core::model::aggregated_weight;
use floodwatch_core::time::{from_civil, parse_rfc3339};
use floodwatch_core::{
    ActionType, Aggregator, Diagnostics, Direction, Event, Ip, Nanos, Protocol, SkipReason,
};
use serde_json::{Map, Value};

/// The columns the engine reads. Their names are Defender's spelling; lookups also accept any
/// letter case because exports and APIs are not consistent about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    Timestamp,
    TimeGenerated,
    DeviceName,
    ActionType,
    RemoteIp,
    RemotePort,
    LocalIp,
    LocalPort,
    Protocol,
    ReportId,
    AdditionalFields,
    /// Sentinel's table column (`DeviceNetworkEvents` for this table's rows).
    Type,
}

impl Col {
    pub const ALL: [Col; 12] = [
        Col::Timestamp,
        Col::TimeGenerated,
        Col::DeviceName,
        Col::ActionType,
        Col::RemoteIp,
        Col::RemotePort,
        Col::LocalIp,
        Col::LocalPort,
        Col::Protocol,
        Col::ReportId,
        Col::AdditionalFields,
        Col::Type,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Col::Timestamp => "Timestamp",
            Col::TimeGenerated => "TimeGenerated",
            Col::DeviceName => "DeviceName",
            Col::ActionType => "ActionType",
            Col::RemoteIp => "RemoteIP",
            Col::RemotePort => "RemotePort",
            Col::LocalIp => "LocalIP",
            Col::LocalPort => "LocalPort",
            Col::Protocol => "Protocol",
            Col::ReportId => "ReportId",
            Col::AdditionalFields => "AdditionalFields",
            Col::Type => "Type",
        }
    }
}

/// One cell of a row, borrowed from wherever the row lives.
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    /// The column does not exist in this row.
    Absent,
    /// JSON `null`, or an empty CSV cell.
    Null,
    Str(&'a str),
    /// A JSON number (integer or float), or a boolean / array / object: kept as the JSON value.
    Json(&'a Value),
}

impl<'a> Field<'a> {
    /// The cell of a JSON value.
    pub fn of(v: &'a Value) -> Field<'a> {
        match v {
            Value::Null => Field::Null,
            Value::String(s) => Field::Str(s),
            other => Field::Json(other),
        }
    }
}

/// Read access to one row by column.
pub trait Row {
    fn get(&self, col: Col) -> Field<'_>;
}

/// Looks a key up exactly, then ignoring ASCII case.
pub fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

impl Row for Map<String, Value> {
    fn get(&self, col: Col) -> Field<'_> {
        get_ci(self, col.name()).map_or(Field::Absent, Field::of)
    }
}

/// Where each known column sits in a positional row (CSV record, Log Analytics row).
#[derive(Clone, Debug, Default)]
pub struct ColumnIndex {
    pos: [Option<usize>; Col::ALL.len()],
}

impl ColumnIndex {
    /// Builds the index from header names. Sentinel's CSV writes `TimeGenerated [UTC]`: a
    /// bracketed suffix is ignored, as are surrounding spaces and a UTF-8 BOM.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut ix = ColumnIndex::default();
        for (i, raw) in names.into_iter().enumerate() {
            let name = normalize_header(raw);
            for (slot, col) in Col::ALL.iter().enumerate() {
                if ix.pos[slot].is_none() && name.eq_ignore_ascii_case(col.name()) {
                    ix.pos[slot] = Some(i);
                }
            }
        }
        ix
    }

    pub fn position(&self, col: Col) -> Option<usize> {
        self.pos[col as usize]
    }
}

fn normalize_header(raw: &str) -> &str {
    let s = raw.trim_start_matches('\u{feff}').trim();
    match s.find(" [") {
        Some(i) if s.ends_with(']') => s[..i].trim_end(),
        _ => s,
    }
}

/// A Log Analytics row: values positioned by the table's columns.
pub struct PositionalJson<'a> {
    pub index: &'a ColumnIndex,
    pub values: &'a [Value],
}

impl Row for PositionalJson<'_> {
    fn get(&self, col: Col) -> Field<'_> {
        self.index
            .position(col)
            .and_then(|i| self.values.get(i))
            .map_or(Field::Absent, Field::of)
    }
}

/// A CSV record; an empty cell is null. Callers check the record is UTF-8 first (see
/// [`CsvRow::first_non_utf8`]); a cell that is not reads as null.
pub struct CsvRow<'a> {
    pub index: &'a ColumnIndex,
    pub record: &'a csv::ByteRecord,
}

impl CsvRow<'_> {
    /// Index of the first cell that is not UTF-8.
    pub fn first_non_utf8(&self) -> Option<usize> {
        self.record
            .iter()
            .position(|f| std::str::from_utf8(f).is_err())
    }
}

impl Row for CsvRow<'_> {
    fn get(&self, col: Col) -> Field<'_> {
        match self.index.position(col).and_then(|i| self.record.get(i)) {
            None => Field::Absent,
            Some(b) => match b.strip_suffix(b"\r").unwrap_or(b) {
                b"" => Field::Null,
                b => std::str::from_utf8(b).map_or(Field::Null, Field::Str),
            },
        }
    }
}

/// Why a row was not turned into an event: the reason counted, and a message naming the field
/// and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub reason: SkipReason,
    pub message: String,
}

impl Reject {
    pub fn new(reason: SkipReason, message: impl Into<String>) -> Self {
        Reject {
            reason,
            message: message.into(),
        }
    }
}

/// At most this many characters of an offending value are quoted in a message, so a 10 MB
/// garbage field does not become a 10 MB diagnostic.
const QUOTE_MAX: usize = 80;

/// `"value"` (JSON-escaped, shortened).
pub fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(QUOTE_MAX).collect();
        format!("{head:?}...")
    }
}

fn describe(f: Field<'_>) -> String {
    match f {
        Field::Absent => "absent".into(),
        Field::Null => "null".into(),
        Field::Str(s) => quote(s),
        Field::Json(v) => {
            let kind = match v {
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::Array(_) => "an array",
                Value::Object(_) => "an object",
                _ => "a value",
            };
            let text = v.to_string();
            format!("{kind} {}", shorten(&text))
        }
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(QUOTE_MAX).collect();
        format!("{head}...")
    }
}

fn wrong_type(col: Col, expected: &str, f: Field<'_>) -> Reject {
    Reject::new(
        SkipReason::WrongType,
        format!(
            "field \"{}\": expected {expected}, got {}",
            col.name(),
            describe(f)
        ),
    )
}

/// A required text column.
fn required_str<R: Row + ?Sized>(row: &R, col: Col) -> Result<&str, Reject> {
    match row.get(col) {
        Field::Str(s) if !s.is_empty() => Ok(s),
        Field::Str(_) | Field::Null | Field::Absent => Err(Reject::new(
            SkipReason::MissingField,
            format!("field \"{}\": missing or empty", col.name()),
        )),
        f => Err(wrong_type(col, "a string", f)),
    }
}

/// An optional text column; empty text is the same as null.
fn optional_str<R: Row + ?Sized>(row: &R, col: Col) -> Result<Option<&str>, Reject> {
    match row.get(col) {
        Field::Str("") | Field::Null | Field::Absent => Ok(None),
        Field::Str(s) => Ok(Some(s)),
        f => Err(wrong_type(col, "a string", f)),
    }
}

/// Parses an event time: RFC 3339 (what Defender and the APIs write, also without a zone as in
/// Defender's CSV), or Sentinel's US-style `3/14/2025, 10:03:12.441 AM` (UTC).
pub fn parse_time(s: &str) -> Option<Nanos> {
    let t = s.trim();
    parse_rfc3339(t.as_bytes())
        .ok()
        .or_else(|| parse_us_time(t))
}

/// `M/D/YYYY, h:mm[:ss[.fff]] AM|PM`; the comma is optional and a missing AM/PM means a 24-hour
/// clock.
pub fn parse_us_time(s: &str) -> Option<Nanos> {
    let (date, rest) = s.split_once([',', ' '])?;
    let mut d = date.split('/');
    let mo: u32 = small_num(d.next()?, 2)?;
    let day: u32 = small_num(d.next()?, 2)?;
    let y: i64 = small_num::<i64>(d.next()?, 4)?;
    if d.next().is_some() {
        return None;
    }
    let rest = rest.trim_start_matches([',', ' ']).trim_end();
    let (clock, meridiem) = match rest.rsplit_once(' ') {
        Some((c, m)) => (c.trim_end(), Some(m)),
        None => (rest, None),
    };
    let mut parts = clock.split(':');
    let mut h: u32 = small_num(parts.next()?, 2)?;
    let mi: u32 = small_num(parts.next()?, 2)?;
    let (sec, nanos) = match parts.next() {
        None => (0, 0),
        Some(sf) => {
            let (sec, frac) = match sf.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (sf, None),
            };
            let sec: u32 = small_num(sec, 2)?;
            let nanos = match frac {
                None => 0,
                Some(f)
                    if f.is_empty() || f.len() > 9 || !f.bytes().all(|c| c.is_ascii_digit()) =>
                {
                    return None;
                }
                Some(f) => {
                    let v: u32 = f.parse().ok()?;
                    v * 10u32.pow(9 - f.len() as u32)
                }
            };
            (sec, nanos)
        }
    };
    if parts.next().is_some() {
        return None;
    }
    match meridiem {
        None => {}
        Some(m) if m.eq_ignore_ascii_case("AM") || m.eq_ignore_ascii_case("PM") => {
            if !(1..=12).contains(&h) {
                return None;
            }
            let pm = m.eq_ignore_ascii_case("PM");
            h = match (h, pm) {
                (12, false) => 0,
                (12, true) => 12,
                (h, true) => h + 12,
                (h, false) => h,
            };
        }
        Some(_) => return None,
    }
    from_civil(y, mo, day, h, mi, sec, nanos).ok()
}

fn small_num<T: std::str::FromStr>(s: &str, max_len: usize) -> Option<T> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn time_of<R: Row + ?Sized>(row: &R) -> Result<Nanos, Reject> {
    let (col, f) = match row.get(Col::Timestamp) {
        Field::Absent | Field::Null | Field::Str("") => {
            (Col::TimeGenerated, row.get(Col::TimeGenerated))
        }
        f => (Col::Timestamp, f),
    };
    match f {
        Field::Str(s) => parse_time(s).ok_or_else(|| {
            Reject::new(
                SkipReason::BadTimestamp,
                format!("field \"{}\": not a date-time: {}", col.name(), quote(s)),
            )
        }),
        Field::Absent | Field::Null => Err(Reject::new(
            SkipReason::MissingField,
            "field \"Timestamp\" (or \"TimeGenerated\"): missing or empty",
        )),
        f => Err(wrong_type(col, "a date-time string", f)),
    }
}

fn ip_of<R: Row + ?Sized>(row: &R, col: Col) -> Result<Option<Ip>, Reject> {
    match optional_str(row, col)? {
        None => Ok(None),
        Some(s) => Ip::parse(s.trim().as_bytes()).map(Some).ok_or_else(|| {
            Reject::new(
                SkipReason::BadIp,
                format!("field \"{}\": not an IP address: {}", col.name(), quote(s)),
            )
        }),
    }
}

fn port_of<R: Row + ?Sized>(row: &R, col: Col) -> Result<Option<u16>, Reject> {
    let f = row.get(col);
    let bad = || {
        Reject::new(
            SkipReason::BadPort,
            format!(
                "field \"{}\": not a port (0-65535): {}",
                col.name(),
                describe(f)
            ),
        )
    };
    match f {
        Field::Absent | Field::Null | Field::Str("") => Ok(None),
        Field::Str(s) => s.trim().parse::<u16>().map(Some).map_err(|_| bad()),
        Field::Json(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u16::try_from(v).ok())
            .map(Some)
            .ok_or_else(bad),
        Field::Json(_) => Err(bad()),
    }
}

fn report_id_of<R: Row + ?Sized>(row: &R) -> Result<i64, Reject> {
    let f = row.get(Col::ReportId);
    match f {
        Field::Absent | Field::Null | Field::Str("") => Ok(0),
        Field::Str(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| wrong_type(Col::ReportId, "an integer", f)),
        Field::Json(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u as i64))
            .ok_or_else(|| wrong_type(Col::ReportId, "an integer", f)),
        Field::Json(_) => Err(wrong_type(Col::ReportId, "an integer", f)),
    }
}

/// What the engine takes from `AdditionalFields`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    pub direction: Direction,
    pub bytes: Option<u64>,
    pub packets: Option<u64>,
    pub unique_events: Option<u64>,
    /// `"Tcp Flags"`; a value outside 0..=255 reads as absent.
    pub tcp_flags: Option<u8>,
}

/// A counter that Zeek writes as a string (`"1234"`, `"-"` when unset) and other sources as a
/// number. Anything that is not a non-negative integer counts as absent.
fn counter(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.is_finite())
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
}

fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

fn extras_of_map(m: &Map<String, Value>) -> Extras {
    Extras {
        direction: match get_ci(m, "direction") {
            Some(Value::String(s)) => Direction::parse(s.as_bytes()),
            _ => Direction::Unknown,
        },
        bytes: sum(
            counter(get_ci(m, "orig_bytes")),
            counter(get_ci(m, "resp_bytes")),
        ),
        packets: sum(
            counter(get_ci(m, "orig_pkts")),
            counter(get_ci(m, "resp_pkts")),
        ),
        unique_events: counter(get_ci(m, "uniqueEventsAggregated")),
        tcp_flags: counter(get_ci(m, "Tcp Flags")).and_then(|f| u8::try_from(f).ok()),
    }
}

/// Reads `AdditionalFields`: an object, a JSON-encoded string of one, or null / "" / {} / [].
///
/// A value that is neither (say, free text) carries nothing the engine needs and does not make
/// the event itself wrong, so it reads as empty rather than rejecting the row.
pub fn extras<R: Row + ?Sized>(row: &R) -> Extras {
    match row.get(Col::AdditionalFields) {
        Field::Json(Value::Object(m)) => extras_of_map(m),
        Field::Str(s) => {
            let t = s.trim();
            if t.starts_with('{') {
                match serde_json::from_str::<Map<String, Value>>(t) {
                    Ok(m) => extras_of_map(&m),
                    Err(_) => Extras::default(),
                }
            } else {
                Extras::default()
            }
        }
        _ => Extras::default(),
    }
}

/// Whether a cell holds nothing (absent, null or empty text).
fn is_empty(f: Field<'_>) -> bool {
    matches!(f, Field::Absent | Field::Null | Field::Str(""))
}

/// A row of another table in an export that mixes tables (an Advanced Hunting `union`, a
/// Sentinel export with its `Type` column): told by an action type floodwatch does not know
/// together with a `Type` naming another table, an action type of another `Device*` table, or
/// none of the network columns. Rows with a known network action type are never taken for
/// another table's.
fn other_table<R: Row + ?Sized>(row: &R, action: &str) -> Option<Reject> {
    if let Field::Str(t) = row.get(Col::Type)
        && !t.trim().is_empty()
        && !crate::json::is_network_events(t)
    {
        return Some(Reject::new(
            SkipReason::OtherTable,
            format!("field \"Type\": {} is not DeviceNetworkEvents", quote(t)),
        ));
    }
    if floodwatch_core::model::is_other_table_action(action.as_bytes()) {
        return Some(Reject::new(
            SkipReason::OtherTable,
            format!(
                "field \"ActionType\": {} is an action type of another table",
                quote(action)
            ),
        ));
    }
    let network = [Col::RemoteIp, Col::RemotePort, Col::LocalIp, Col::LocalPort];
    if network.iter().all(|&c| is_empty(row.get(c))) {
        return Some(Reject::new(
            SkipReason::OtherTable,
            format!(
                "field \"ActionType\": {} is not a network action type and the row has no \
                 RemoteIP, RemotePort, LocalIP or LocalPort: a row of another table",
                quote(action)
            ),
        ));
    }
    None
}

/// Turns a row into an event, interning its device name in `agg` (only once the row is known to
/// be good, so rejected rows do not grow the device table).
pub fn to_event<R: Row + ?Sized>(row: &R, agg: &mut Aggregator) -> Result<Event, Reject> {
    let ts = time_of(row)?;
    let device = required_str(row, Col::DeviceName)?;
    let action_text = required_str(row, Col::ActionType)?;
    let action = ActionType::parse(action_text.as_bytes());
    if action == ActionType::Other
        && let Some(r) = other_table(row, action_text)
    {
        return Err(r);
    }
    let remote_ip = ip_of(row, Col::RemoteIp)?;
    // LocalIP is not read: detection does not use it, and a garbled value there does not make
    // the columns it uses wrong (the fast path does not look at it either).
    let remote_port = port_of(row, Col::RemotePort)?;
    let local_port = port_of(row, Col::LocalPort)?;
    let protocol = optional_str(row, Col::Protocol)?
        .map_or(Protocol::Unknown, |s| Protocol::parse(s.as_bytes()));
    let report_id = report_id_of(row)?;
    // `AdditionalFields` only for the action types that use it, as the fast path does.
    let x = if action.reads_additional_fields() {
        extras(row)
    } else {
        Extras::default()
    };
    let weight = if action.is_aggregated_report() {
        aggregated_weight(x.unique_events)
    } else {
        1
    };
    let (direction, tcp_flags) = if action.reads_direction() {
        (x.direction, x.tcp_flags)
    } else {
        (Direction::Unknown, None)
    };
    let (bytes, packets) = if action.is_inspected() {
        (x.bytes, x.packets)
    } else {
        (None, None)
    };
    Ok(Event {
        ts,
        device: agg.device(device),
        action,
        protocol,
        direction,
        remote_ip,
        remote_port,
        local_port,
        report_id,
        weight,
        bytes,
        packets,
        tcp_flags,
    })
}

/// [`to_event`] for a reader with diagnostics: a row whose action type is unknown is used, and
/// its name counted in [`Diagnostics::unknown_actions`].
pub fn to_event_noting<R: Row + ?Sized>(
    row: &R,
    agg: &mut Aggregator,
    diag: &mut Diagnostics,
) -> Result<Event, Reject> {
    let ev = to_event(row, agg)?;
    if ev.action == ActionType::Other
        && let Field::Str(name) = row.get(Col::ActionType)
    {
        diag.unknown_actions.add(name, 1);
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwatch_core::{BinWidth, ClassifyConfig};
    use serde_json::json;

    fn agg() -> Aggregator {
        Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
    }

    fn row(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn base() -> Value {
        json!({
            "Timestamp": "2025-12-22T09:55:01.1234567Z",
            "DeviceName": "web-01.contoso.com",
            "ActionType": "InboundConnectionAccepted",
            "RemoteIP": "203.0.113.7",
            "RemotePort": 51000,
            "LocalIP": "10.0.0.4",
            "LocalPort": "443",
            "Protocol": "Tcp",
            "ReportId": 17
        })
    }

    fn with(k: &str, v: Value) -> Map<String, Value> {
        let mut m = row(base());
        m.insert(k.to_owned(), v);
        m
    }

    #[test]
    fn maps_a_flat_row() {
        let mut a = agg();
        let ev = to_event(&row(base()), &mut a).unwrap();
        assert_eq!(
            ev.ts,
            parse_rfc3339(b"2025-12-22T09:55:01.1234567Z").unwrap()
        );
        assert_eq!(a.devices.name(ev.device), "web-01.contoso.com");
        assert_eq!(ev.action, ActionType::InboundConnectionAccepted);
        assert_eq!(ev.remote_ip, Ip::parse(b"203.0.113.7"));
        assert_eq!(ev.remote_port, Some(51000));
        assert_eq!(ev.local_port, Some(443), "numeric strings are ports too");
        assert_eq!(ev.protocol, Protocol::Tcp);
        assert_eq!(ev.report_id, 17);
        assert_eq!(ev.weight, 1);
        assert_eq!(ev.bytes, None);
    }

    #[test]
    fn time_generated_and_any_key_case() {
        let mut m = row(base());
        m.remove("Timestamp");
        m.insert("timegenerated".into(), json!("2025-12-22T09:55:01Z"));
        let ev = to_event(&m, &mut agg()).unwrap();
        assert_eq!(ev.ts, parse_rfc3339(b"2025-12-22T09:55:01Z").unwrap());
    }

    #[test]
    fn rejections_name_the_field_and_value() {
        let cases = [
            (
                "Timestamp",
                json!("yesterday"),
                SkipReason::BadTimestamp,
                "field \"Timestamp\": not a date-time: \"yesterday\"",
            ),
            (
                "Timestamp",
                json!(12),
                SkipReason::WrongType,
                "field \"Timestamp\": expected a date-time string, got a number 12",
            ),
            (
                "DeviceName",
                json!(null),
                SkipReason::MissingField,
                "field \"DeviceName\": missing or empty",
            ),
            (
                "DeviceName",
                json!(["x"]),
                SkipReason::WrongType,
                "field \"DeviceName\": expected a string, got an array [\"x\"]",
            ),
            (
                "RemoteIP",
                json!("10.0.0.999"),
                SkipReason::BadIp,
                "field \"RemoteIP\": not an IP address: \"10.0.0.999\"",
            ),
            (
                "LocalPort",
                json!(70000),
                SkipReason::BadPort,
                "field \"LocalPort\": not a port (0-65535): a number 70000",
            ),
            (
                "RemotePort",
                json!("https"),
                SkipReason::BadPort,
                "field \"RemotePort\": not a port (0-65535): \"https\"",
            ),
            (
                "ReportId",
                json!("abc"),
                SkipReason::WrongType,
                "field \"ReportId\": expected an integer, got \"abc\"",
            ),
        ];
        for (k, v, reason, msg) in cases {
            let r = to_event(&with(k, v), &mut agg()).unwrap_err();
            assert_eq!(r.reason, reason, "{k}");
            assert_eq!(r.message, msg);
        }
    }

    #[test]
    fn rejected_rows_do_not_intern_devices() {
        let mut a = agg();
        assert!(to_event(&with("RemoteIP", json!("nope")), &mut a).is_err());
        assert!(a.devices.is_empty());
    }

    #[test]
    fn null_and_empty_optional_columns() {
        for v in [json!(null), json!("")] {
            let mut m = with("RemoteIP", v.clone());
            m.insert("RemotePort".into(), v.clone());
            m.insert("Protocol".into(), v.clone());
            m.insert("ReportId".into(), v);
            let ev = to_event(&m, &mut agg()).unwrap();
            assert_eq!(
                (ev.remote_ip, ev.remote_port, ev.report_id),
                (None, None, 0)
            );
            assert_eq!(ev.protocol, Protocol::Unknown);
        }
    }

    #[test]
    fn additional_fields_every_shape() {
        let obj = json!({"direction": "In", "orig_bytes": "100", "resp_bytes": 50, "orig_pkts": "3", "resp_pkts": "-"});
        let want = Extras {
            direction: Direction::In,
            bytes: Some(150),
            packets: Some(3),
            unique_events: None,
            tcp_flags: None,
        };
        assert_eq!(extras(&with("AdditionalFields", obj.clone())), want);
        assert_eq!(
            extras(&with("AdditionalFields", json!(obj.to_string()))),
            want
        );
        for empty in [
            json!(null),
            json!(""),
            json!({}),
            json!([]),
            json!("[]"),
            json!("not json"),
            json!("{broken"),
        ] {
            assert_eq!(extras(&with("AdditionalFields", empty)), Extras::default());
        }
    }

    #[test]
    fn aggregated_reports_are_weighted() {
        let mut m = with("ActionType", json!("ConnectionSuccessAggregatedReport"));
        m.insert(
            "AdditionalFields".into(),
            json!("{\"uniqueEventsAggregated\":42}"),
        );
        assert_eq!(to_event(&m, &mut agg()).unwrap().weight, 42);
        // Other rows are not weighted even when the field is present.
        let mut m = with("AdditionalFields", json!({"uniqueEventsAggregated": 42}));
        m.insert("ActionType".into(), json!("ConnectionSuccess"));
        assert_eq!(to_event(&m, &mut agg()).unwrap().weight, 1);
    }

    #[test]
    fn sentinel_us_dates() {
        let t = |s: &str| parse_time(s);
        assert_eq!(
            t("3/14/2025, 10:03:12.441 AM"),
            parse_rfc3339(b"2025-03-14T10:03:12.441Z").ok()
        );
        assert_eq!(
            t("12/22/2025, 12:00:00 AM"),
            parse_rfc3339(b"2025-12-22T00:00:00Z").ok()
        );
        assert_eq!(
            t("12/22/2025, 12:30:00.5 PM"),
            parse_rfc3339(b"2025-12-22T12:30:00.5Z").ok()
        );
        assert_eq!(
            t("12/22/2025, 9:55:01 PM"),
            parse_rfc3339(b"2025-12-22T21:55:01Z").ok()
        );
        assert_eq!(
            t("12/22/2025 21:55:01"),
            parse_rfc3339(b"2025-12-22T21:55:01Z").ok()
        );
        for bad in [
            "13/1/2025, 1:00:00 AM",
            "2/30/2025, 1:00:00 AM",
            "1/1/2025, 13:00:00 PM",
            "1/1/2025, 0:00:00 AM",
            "1/1/2025",
            "1/1/2025, 1:00:00 XM",
            "yesterday",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn column_index_reads_sentinel_headers() {
        let ix = ColumnIndex::new(["\u{feff}TimeGenerated [UTC]", "DeviceName", "localport"]);
        assert_eq!(ix.position(Col::TimeGenerated), Some(0));
        assert_eq!(ix.position(Col::DeviceName), Some(1));
        assert_eq!(ix.position(Col::LocalPort), Some(2));
        assert_eq!(ix.position(Col::Timestamp), None);
    }

    proptest::proptest! {
        /// Sentinel's US form and RFC 3339 of the same instant parse to the same time.
        #[test]
        fn us_dates_agree_with_rfc3339(
            y in 1971i64..2100, mo in 1u32..=12, d in 1u32..=28,
            h in 0u32..24, mi in 0u32..60, s in 0u32..60, ms in 0u32..1000,
        ) {
            let h12 = if h % 12 == 0 { 12 } else { h % 12 };
            let ampm = if h < 12 { "AM" } else { "PM" };
            let us = format!("{mo}/{d}/{y}, {h12}:{mi:02}:{s:02}.{ms:03} {ampm}");
            let rfc = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
            proptest::prop_assert_eq!(parse_time(&us), parse_rfc3339(rfc.as_bytes()).ok());
            proptest::prop_assert!(parse_time(&us).is_some());
        }

        /// Any text: no panic, surrounding white space does not matter, and every time read
        /// is a real instant: written back in RFC 3339 it reads as the same time. The text
        /// is random, or a valid date-time of either form with a few characters overwritten,
        /// so that both answers occur.
        #[test]
        fn time_parser_total(
            s in proptest::prop_oneof![
                ".{0,40}",
                "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{1,9})?(Z|[+-][01][0-9]:[0-5][0-9])?",
                "1?[0-9]/[1-3]?[0-9]/20[0-9]{2},? 1?[0-9]:[0-6][0-9](:[0-6][0-9](\\.[0-9]{1,3})?)?( [AP]M)?",
            ],
            pad in proptest::sample::select(vec!["", " ", "\t "]),
        ) {
            let got = parse_time(&s);
            proptest::prop_assert_eq!(parse_time(&format!("{pad}{s}{pad}")), got);
            if let Some(t) = got {
                let back = floodwatch_core::time::Rfc3339(t).to_string();
                proptest::prop_assert_eq!(parse_time(&back), Some(t), "{} -> {}", s, back);
            }
        }
    }
}
