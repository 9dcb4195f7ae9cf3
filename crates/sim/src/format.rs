//! Every shape the ingest side reads, written from the same typed rows. JSON is written by hand
//! into one reused buffer (strings escaped by serde_json, numbers by itoa): building a
//! `serde_json::Value` per row would cost more than the rest of the generator together.

use std::io::{self, Write};
use std::str::FromStr;

use floodwatch_core::model::Ip;
use floodwatch_core::time::{NANOS_PER_SEC, Nanos, civil_from_days};

use crate::generate::Device;
use crate::record::{DOMAINS, PROCESSES, Row};

/// Output shapes; see the crate docs for what each looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// Advanced Hunting rows, one JSON object per line (`ndjson`).
    Ndjson,
    /// Advanced Hunting rows as one JSON array (`json-array`).
    JsonArray,
    /// Streaming API to Event Hubs: `{"records":[envelope,...]}` per line, with a few envelopes
    /// of `AdvancedHunting-DeviceProcessEvents` mixed in (`eventhubs`).
    EventHubs,
    /// Streaming API to Azure Storage: one envelope per line, CRLF (`storage`).
    StorageExport,
    /// Advanced Hunting API response `{"Stats","Schema","Results"}` (`ah-api`).
    AdvancedHuntingApi,
    /// Graph `runHuntingQuery` response, lower-case `schema`/`results` (`graph`).
    GraphHunting,
    /// Log Analytics query API response `{"tables":[{"columns","rows"}]}` (`log-analytics`).
    LogAnalytics,
    /// Defender portal CSV export (`defender-csv`).
    DefenderCsv,
    /// Sentinel portal CSV export: UTF-8 BOM, `TimeGenerated [UTC]` headers, US 12-hour dates
    /// (`sentinel-csv`).
    SentinelCsv,
}

impl OutputFormat {
    pub const ALL: [OutputFormat; 9] = [
        OutputFormat::Ndjson,
        OutputFormat::JsonArray,
        OutputFormat::EventHubs,
        OutputFormat::StorageExport,
        OutputFormat::AdvancedHuntingApi,
        OutputFormat::GraphHunting,
        OutputFormat::LogAnalytics,
        OutputFormat::DefenderCsv,
        OutputFormat::SentinelCsv,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Ndjson => "ndjson",
            OutputFormat::JsonArray => "json-array",
            OutputFormat::EventHubs => "eventhubs",
            OutputFormat::StorageExport => "storage",
            OutputFormat::AdvancedHuntingApi => "ah-api",
            OutputFormat::GraphHunting => "graph",
            OutputFormat::LogAnalytics => "log-analytics",
            OutputFormat::DefenderCsv => "defender-csv",
            OutputFormat::SentinelCsv => "sentinel-csv",
        }
    }
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OutputFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = OutputFormat::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown output format {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// Columns written, in Advanced Hunting's schema order (a realistic subset of its 44, enough
/// for records of about 690 bytes as NDJSON, like real exports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Timestamp,
    DeviceId,
    DeviceName,
    ActionType,
    RemoteIP,
    RemotePort,
    RemoteUrl,
    LocalIP,
    LocalPort,
    Protocol,
    LocalIPType,
    RemoteIPType,
    ProcIntegrity,
    ProcFileName,
    ProcFolderPath,
    ProcId,
    ProcAccountDomain,
    ProcAccountName,
    ReportId,
    AdditionalFields,
    MachineGroup,
}

const COLS: [Col; 21] = [
    Col::Timestamp,
    Col::DeviceId,
    Col::DeviceName,
    Col::ActionType,
    Col::RemoteIP,
    Col::RemotePort,
    Col::RemoteUrl,
    Col::LocalIP,
    Col::LocalPort,
    Col::Protocol,
    Col::LocalIPType,
    Col::RemoteIPType,
    Col::ProcIntegrity,
    Col::ProcFileName,
    Col::ProcFolderPath,
    Col::ProcId,
    Col::ProcAccountDomain,
    Col::ProcAccountName,
    Col::ReportId,
    Col::AdditionalFields,
    Col::MachineGroup,
];

impl Col {
    fn name(self) -> &'static str {
        match self {
            Col::Timestamp => "Timestamp",
            Col::DeviceId => "DeviceId",
            Col::DeviceName => "DeviceName",
            Col::ActionType => "ActionType",
            Col::RemoteIP => "RemoteIP",
            Col::RemotePort => "RemotePort",
            Col::RemoteUrl => "RemoteUrl",
            Col::LocalIP => "LocalIP",
            Col::LocalPort => "LocalPort",
            Col::Protocol => "Protocol",
            Col::LocalIPType => "LocalIPType",
            Col::RemoteIPType => "RemoteIPType",
            Col::ProcIntegrity => "InitiatingProcessIntegrityLevel",
            Col::ProcFileName => "InitiatingProcessFileName",
            Col::ProcFolderPath => "InitiatingProcessFolderPath",
            Col::ProcId => "InitiatingProcessId",
            Col::ProcAccountDomain => "InitiatingProcessAccountDomain",
            Col::ProcAccountName => "InitiatingProcessAccountName",
            Col::ReportId => "ReportId",
            Col::AdditionalFields => "AdditionalFields",
            Col::MachineGroup => "MachineGroup",
        }
    }

    /// Advanced Hunting schema type.
    fn ah_type(self) -> &'static str {
        match self {
            Col::Timestamp => "DateTime",
            Col::RemotePort | Col::LocalPort | Col::ProcId => "Int32",
            Col::ReportId => "Int64",
            _ => "String",
        }
    }

    /// Log Analytics column type (Sentinel's table keeps `AdditionalFields` as dynamic).
    fn la_type(self) -> &'static str {
        match self {
            Col::Timestamp => "datetime",
            Col::RemotePort | Col::LocalPort | Col::ProcId => "int",
            Col::ReportId => "long",
            Col::AdditionalFields => "dynamic",
            _ => "string",
        }
    }
}

enum Cell<'a> {
    Time(Nanos),
    Str(&'a str),
    Ip(Ip),
    Int(i64),
    Null,
    /// JSON object text (`AdditionalFields`).
    Dyn(&'a str),
}

fn ip_type(ip: Ip) -> &'static str {
    match ip.to_std() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "Reserved",
        std::net::IpAddr::V4(v4) if v4.is_loopback() => "Loopback",
        std::net::IpAddr::V4(v4) if v4.is_private() => "Private",
        std::net::IpAddr::V6(v6) if v6.is_loopback() => "Loopback",
        _ => "Public",
    }
}

fn cell<'a>(col: Col, row: &Row, dev: &'a Device, af: Option<&'a str>) -> Cell<'a> {
    let p = &PROCESSES[row.process as usize % PROCESSES.len()];
    let opt_str = |s: &'static str| {
        if s.is_empty() {
            Cell::Null
        } else {
            Cell::Str(s)
        }
    };
    match col {
        Col::Timestamp => Cell::Time(row.ts),
        Col::DeviceId => Cell::Str(&dev.id_hex),
        Col::DeviceName => Cell::Str(&dev.name),
        Col::ActionType => Cell::Str(row.action.as_str()),
        Col::RemoteIP => Cell::Ip(row.remote_ip),
        Col::RemotePort => row.remote_port.map_or(Cell::Null, |p| Cell::Int(p as i64)),
        Col::RemoteUrl => Cell::Str(DOMAINS[row.remote_url as usize % DOMAINS.len()]),
        Col::LocalIP => Cell::Ip(dev.local_ip),
        Col::LocalPort => row.local_port.map_or(Cell::Null, |p| Cell::Int(p as i64)),
        Col::Protocol => Cell::Str(row.proto.as_str()),
        Col::LocalIPType => Cell::Str(ip_type(dev.local_ip)),
        Col::RemoteIPType => Cell::Str(ip_type(row.remote_ip)),
        Col::ProcIntegrity => Cell::Str(if p.account == "system" {
            "System"
        } else {
            "High"
        }),
        Col::ProcFileName => Cell::Str(p.file),
        Col::ProcFolderPath => opt_str(p.folder),
        Col::ProcId => Cell::Int(p.pid as i64),
        Col::ProcAccountDomain => Cell::Str(p.domain),
        Col::ProcAccountName => Cell::Str(p.account),
        Col::ReportId => Cell::Int(row.report_id),
        Col::AdditionalFields => af.map_or(Cell::Null, Cell::Dyn),
        Col::MachineGroup => Cell::Str(&dev.group),
    }
}

fn two(buf: &mut Vec<u8>, v: i64) {
    buf.push(b'0' + (v / 10) as u8);
    buf.push(b'0' + (v % 10) as u8);
}

/// `2025-12-22T09:55:01.1234567Z`: always 7 fractional digits, as Advanced Hunting writes.
fn put_iso(buf: &mut Vec<u8>, t: Nanos) {
    let secs = t.div_euclid(NANOS_PER_SEC);
    let ticks = t.rem_euclid(NANOS_PER_SEC) / 100;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut ib = itoa::Buffer::new();
    buf.extend_from_slice(ib.format(y).as_bytes());
    buf.push(b'-');
    two(buf, m as i64);
    buf.push(b'-');
    two(buf, d as i64);
    buf.push(b'T');
    two(buf, sod / 3600);
    buf.push(b':');
    two(buf, (sod / 60) % 60);
    buf.push(b':');
    two(buf, sod % 60);
    buf.push(b'.');
    let mut frac = [b'0'; 7];
    let mut v = ticks;
    for c in frac.iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
    buf.extend_from_slice(&frac);
    buf.push(b'Z');
}

/// Sentinel's portal export: `12/22/2025, 9:55:01.123 AM` (US, 12-hour, milliseconds).
fn put_us(buf: &mut Vec<u8>, t: Nanos) {
    let secs = t.div_euclid(NANOS_PER_SEC);
    let ms = t.rem_euclid(NANOS_PER_SEC) / 1_000_000;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let h24 = sod / 3600;
    let h12 = match h24 % 12 {
        0 => 12,
        h => h,
    };
    let mut ib = itoa::Buffer::new();
    buf.extend_from_slice(ib.format(m).as_bytes());
    buf.push(b'/');
    buf.extend_from_slice(ib.format(d).as_bytes());
    buf.push(b'/');
    buf.extend_from_slice(ib.format(y).as_bytes());
    buf.extend_from_slice(b", ");
    buf.extend_from_slice(ib.format(h12).as_bytes());
    buf.push(b':');
    two(buf, (sod / 60) % 60);
    buf.push(b':');
    two(buf, sod % 60);
    buf.push(b'.');
    buf.push(b'0' + (ms / 100) as u8);
    two(buf, ms % 100);
    buf.extend_from_slice(if h24 < 12 { b" AM" } else { b" PM" });
}

fn put_json_str(buf: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

fn put_ip(buf: &mut Vec<u8>, ip: Ip) {
    let _ = write!(buf, "{}", ip.to_std());
}

fn put_json_cell(buf: &mut Vec<u8>, c: &Cell<'_>) {
    match c {
        Cell::Time(t) => {
            buf.push(b'"');
            put_iso(buf, *t);
            buf.push(b'"');
        }
        Cell::Str(s) | Cell::Dyn(s) => put_json_str(buf, s),
        Cell::Ip(ip) => {
            buf.push(b'"');
            put_ip(buf, *ip);
            buf.push(b'"');
        }
        Cell::Int(i) => buf.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Cell::Null => buf.extend_from_slice(b"null"),
    }
}

/// Counts the bytes that pass through (before any compression below it).
pub(crate) struct Counting<W> {
    pub inner: W,
    pub bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

const FLUSH_AT: usize = 1 << 20;
const CATEGORY: &str = "AdvancedHunting-DeviceNetworkEvents";

/// Streams rows in one format. `begin`, any number of `row`, then `finish`.
pub(crate) struct RowWriter<W: Write> {
    format: OutputFormat,
    json: Option<W>,
    csv: Option<csv::Writer<W>>,
    buf: Vec<u8>,
    field: Vec<u8>,
    af: String,
    first: bool,
    in_batch: usize,
    batch: usize,
    messages: u64,
    tenant: String,
    pub other_records: u64,
}

impl<W: Write> RowWriter<W> {
    pub(crate) fn new(format: OutputFormat, w: W, batch: usize, tenant: &str) -> Self {
        RowWriter {
            format,
            json: Some(w),
            csv: None,
            buf: Vec::with_capacity(FLUSH_AT + 64 * 1024),
            field: Vec::with_capacity(512),
            af: String::with_capacity(512),
            first: true,
            in_batch: 0,
            batch: batch.max(1),
            messages: 0,
            tenant: tenant.to_owned(),
            other_records: 0,
        }
    }

    fn flush_buf(&mut self, force: bool) -> io::Result<()> {
        if (force || self.buf.len() >= FLUSH_AT) && !self.buf.is_empty() {
            if let Some(w) = self.json.as_mut() {
                w.write_all(&self.buf)?;
            }
            self.buf.clear();
        }
        Ok(())
    }

    pub(crate) fn begin(&mut self) -> io::Result<()> {
        let b = &mut self.buf;
        match self.format {
            OutputFormat::JsonArray => b.push(b'['),
            OutputFormat::AdvancedHuntingApi => {
                b.extend_from_slice(br#"{"Stats":{"ExecutionTime":0.8213,"resource_usage":{"cache":{"memory":{"hits":42,"misses":3,"total":45},"disk":{"hits":0,"misses":0,"total":0}},"cpu":{"user":"00:00:01.2031250","kernel":"00:00:00","total cpu":"00:00:01.2031250"},"memory":{"peak_per_node":134217728}}},"Schema":["#);
                for (i, c) in COLS.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    let _ = write!(b, r#"{{"Name":"{}","Type":"{}"}}"#, c.name(), c.ah_type());
                }
                b.extend_from_slice(br#"],"Results":["#);
            }
            OutputFormat::GraphHunting => {
                b.extend_from_slice(br##"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults","schema":["##);
                for (i, c) in COLS.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    let _ = write!(b, r#"{{"name":"{}","type":"{}"}}"#, c.name(), c.ah_type());
                }
                b.extend_from_slice(br#"],"results":["#);
            }
            OutputFormat::LogAnalytics => {
                b.extend_from_slice(br#"{"tables":[{"name":"PrimaryResult","columns":[{"name":"TenantId","type":"string"},{"name":"TimeGenerated","type":"datetime"}"#);
                for c in COLS {
                    let _ = write!(b, r#",{{"name":"{}","type":"{}"}}"#, c.name(), c.la_type());
                }
                b.extend_from_slice(br#",{"name":"Type","type":"string"}],"rows":["#);
            }
            OutputFormat::DefenderCsv | OutputFormat::SentinelCsv => {
                let sentinel = self.format == OutputFormat::SentinelCsv;
                if let Some(mut w) = self.json.take() {
                    if sentinel {
                        // The BOM goes before the first header byte, outside CSV quoting.
                        w.write_all("\u{feff}".as_bytes())?;
                    }
                    self.csv = Some(
                        csv::WriterBuilder::new()
                            .terminator(csv::Terminator::CRLF)
                            .from_writer(w),
                    );
                }
                if let Some(c) = self.csv.as_mut() {
                    if sentinel {
                        c.write_field("TenantId")?;
                        c.write_field("TimeGenerated [UTC]")?;
                    }
                    for col in COLS {
                        if sentinel && col == Col::Timestamp {
                            c.write_field("Timestamp [UTC]")?;
                        } else {
                            c.write_field(col.name())?;
                        }
                    }
                    if sentinel {
                        c.write_field("Type")?;
                    }
                    c.write_record(None::<&[u8]>)?;
                }
            }
            OutputFormat::Ndjson | OutputFormat::EventHubs | OutputFormat::StorageExport => {}
        }
        Ok(())
    }

    fn object(&mut self, row: &Row, dev: &Device) {
        let af = row
            .additional_fields(&mut self.af)
            .then_some(self.af.as_str());
        let b = &mut self.buf;
        b.push(b'{');
        for (i, col) in COLS.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            b.push(b'"');
            b.extend_from_slice(col.name().as_bytes());
            b.extend_from_slice(b"\":");
            put_json_cell(b, &cell(*col, row, dev, af));
        }
        b.push(b'}');
    }

    fn envelope_head(&mut self, ts: Nanos, category: &str, report_id: i64) {
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"time\":\"");
        put_iso(b, ts);
        b.extend_from_slice(b"\",\"tenantId\":\"");
        b.extend_from_slice(self.tenant.as_bytes());
        b.extend_from_slice(b"\",\"operationName\":\"Publish\",\"category\":\"");
        b.extend_from_slice(category.as_bytes());
        b.extend_from_slice(b"\",\"_TimeReceivedBySvc\":\"");
        put_iso(b, ts + (800 + report_id.rem_euclid(2_500)) * 1_000_000);
        b.extend_from_slice(b"\",\"properties\":");
    }

    /// A `DeviceProcessEvents` envelope: another table on the same hub.
    fn other_table(&mut self, row: &Row, dev: &Device) {
        self.envelope_head(row.ts, "AdvancedHunting-DeviceProcessEvents", row.report_id);
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"Timestamp\":\"");
        put_iso(b, row.ts);
        let _ = write!(
            b,
            "\",\"DeviceId\":\"{}\",\"DeviceName\":\"{}\",\"ActionType\":\"ProcessCreated\",\"FileName\":\"conhost.exe\",\"FolderPath\":\"c:\\\\windows\\\\system32\\\\conhost.exe\",\"ProcessCommandLine\":\"conhost.exe 0xffffffff -ForceV1\",\"InitiatingProcessFileName\":\"svchost.exe\",\"ReportId\":{},\"MachineGroup\":\"{}\"}}}}",
            dev.id_hex, dev.name, row.report_id, dev.group
        );
        self.other_records += 1;
    }

    pub(crate) fn row(&mut self, row: &Row, dev: &Device) -> io::Result<()> {
        match self.format {
            OutputFormat::Ndjson => {
                self.object(row, dev);
                self.buf.push(b'\n');
            }
            OutputFormat::JsonArray
            | OutputFormat::AdvancedHuntingApi
            | OutputFormat::GraphHunting => {
                if !self.first {
                    self.buf.push(b',');
                }
                self.buf.push(b'\n');
                self.object(row, dev);
            }
            OutputFormat::EventHubs => {
                if self.in_batch == 0 {
                    self.buf.extend_from_slice(b"{\"records\":[");
                    self.messages += 1;
                    if self.messages.is_multiple_of(10) {
                        self.other_table(row, dev);
                        self.buf.push(b',');
                    }
                } else {
                    self.buf.push(b',');
                }
                self.envelope_head(row.ts, CATEGORY, row.report_id);
                self.object(row, dev);
                self.buf.push(b'}');
                self.in_batch += 1;
                if self.in_batch == self.batch {
                    self.buf.extend_from_slice(b"]}\n");
                    self.in_batch = 0;
                }
            }
            OutputFormat::StorageExport => {
                self.envelope_head(row.ts, CATEGORY, row.report_id);
                self.object(row, dev);
                self.buf
                    .extend_from_slice(b",\"Tenant\":\"DefaultTenant\"}\r\n");
            }
            OutputFormat::LogAnalytics => {
                let af = row
                    .additional_fields(&mut self.af)
                    .then_some(self.af.as_str());
                let b = &mut self.buf;
                if !self.first {
                    b.push(b',');
                }
                b.extend_from_slice(b"\n[\"");
                b.extend_from_slice(self.tenant.as_bytes());
                b.extend_from_slice(b"\",");
                put_json_cell(b, &Cell::Time(row.ts));
                for col in COLS {
                    b.push(b',');
                    put_json_cell(b, &cell(col, row, dev, af));
                }
                b.extend_from_slice(b",\"DeviceNetworkEvents\"]");
            }
            OutputFormat::DefenderCsv | OutputFormat::SentinelCsv => {
                let sentinel = self.format == OutputFormat::SentinelCsv;
                let af = row
                    .additional_fields(&mut self.af)
                    .then_some(self.af.as_str());
                let Some(c) = self.csv.as_mut() else {
                    return Ok(());
                };
                let f = &mut self.field;
                if sentinel {
                    c.write_field(&self.tenant)?;
                    f.clear();
                    put_us(f, row.ts);
                    c.write_field(&*f)?;
                }
                for col in COLS {
                    f.clear();
                    match cell(col, row, dev, af) {
                        Cell::Time(t) if sentinel => put_us(f, t),
                        Cell::Time(t) => put_iso(f, t),
                        Cell::Str(s) | Cell::Dyn(s) => f.extend_from_slice(s.as_bytes()),
                        Cell::Ip(ip) => put_ip(f, ip),
                        Cell::Int(i) => {
                            f.extend_from_slice(itoa::Buffer::new().format(i).as_bytes())
                        }
                        Cell::Null => {}
                    }
                    c.write_field(&*f)?;
                }
                if sentinel {
                    c.write_field("DeviceNetworkEvents")?;
                }
                c.write_record(None::<&[u8]>)?;
            }
        }
        self.first = false;
        self.flush_buf(false)
    }

    /// Closes the document and hands back the inner writer (flushed).
    pub(crate) fn finish(mut self) -> io::Result<W> {
        match self.format {
            OutputFormat::JsonArray => self.buf.extend_from_slice(b"\n]\n"),
            OutputFormat::AdvancedHuntingApi | OutputFormat::GraphHunting => {
                self.buf.extend_from_slice(b"\n]}\n")
            }
            OutputFormat::LogAnalytics => self.buf.extend_from_slice(b"\n]}]}\n"),
            OutputFormat::EventHubs if self.in_batch > 0 => self.buf.extend_from_slice(b"]}\n"),
            _ => {}
        }
        self.flush_buf(true)?;
        if let Some(c) = self.csv.take() {
            return c.into_inner().map_err(|e| io::Error::other(e.to_string()));
        }
        let mut w = self
            .json
            .take()
            .ok_or_else(|| io::Error::other("writer already finished"))?;
        w.flush()?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_both_spellings() {
        let t = floodwatch_core::time::parse_rfc3339(b"2025-03-14T22:03:12.4415678Z").unwrap();
        let mut b = Vec::new();
        put_iso(&mut b, t);
        assert_eq!(b, b"2025-03-14T22:03:12.4415678Z");
        b.clear();
        put_us(&mut b, t);
        assert_eq!(
            String::from_utf8(b.clone()).unwrap(),
            "3/14/2025, 10:03:12.441 PM"
        );
        let noon = floodwatch_core::time::parse_rfc3339(b"2025-03-14T00:05:00Z").unwrap();
        b.clear();
        put_us(&mut b, noon);
        assert_eq!(String::from_utf8(b).unwrap(), "3/14/2025, 12:05:00.000 AM");
    }

    #[test]
    fn format_names_parse_back() {
        for f in OutputFormat::ALL {
            assert_eq!(f.as_str().parse::<OutputFormat>(), Ok(f));
        }
        assert!(
            "xml"
                .parse::<OutputFormat>()
                .unwrap_err()
                .contains("ndjson")
        );
    }

    #[test]
    fn ip_types() {
        assert_eq!(ip_type(Ip::v4([10, 250, 0, 3])), "Private");
        assert_eq!(ip_type(Ip::v4([20, 42, 73, 5])), "Public");
        assert_eq!(ip_type(Ip::v4([0, 0, 0, 0])), "Reserved");
    }
}
