//! The scanner against a plain serde_json reader of the same field semantics, and the parallel
//! path against one thread.

use floodwatch_core::time::parse_rfc3339;
use floodwatch_core::{
    ActionType, Aggregator, BinWidth, ClassifyConfig, Diagnostics, Direction, Event, Ip, Location,
    Protocol, SkipReason,
};
use proptest::prelude::*;
use serde_json::Value;

use crate::{Chunk, Openers, Scanner, Worker, aggregate_lines};

/// The reference: field semantics written the obvious way over a `serde_json::Value`.
fn reference_row(
    row: &serde_json::Map<String, Value>,
    agg: &mut Aggregator,
) -> Result<Event, SkipReason> {
    let get = |k: &str| row.get(k).filter(|v| !v.is_null());
    let ts = match get("Timestamp").or_else(|| get("TimeGenerated")) {
        Some(Value::String(s)) => {
            parse_rfc3339(s.as_bytes()).map_err(|_| SkipReason::BadTimestamp)?
        }
        Some(_) => return Err(SkipReason::WrongType),
        None => return Err(SkipReason::MissingField),
    };
    let name = match get("DeviceName") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None => return Err(SkipReason::MissingField),
        Some(_) => return Err(SkipReason::WrongType),
    };
    let action = match get("ActionType") {
        Some(Value::String(s)) if !s.is_empty() => ActionType::parse(s.as_bytes()),
        Some(Value::String(_)) | None => return Err(SkipReason::MissingField),
        Some(_) => return Err(SkipReason::WrongType),
    };
    let remote_ip = match get("RemoteIP") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(Ip::parse(s.as_bytes()).ok_or(SkipReason::BadIp)?),
        Some(_) => return Err(SkipReason::WrongType),
    };
    let port = |k: &str| -> Result<Option<u16>, SkipReason> {
        match get(k) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|v| u16::try_from(v).ok())
                .map(Some)
                .ok_or(SkipReason::BadPort),
            Some(Value::String(s)) => s.parse::<u16>().map(Some).map_err(|_| SkipReason::BadPort),
            Some(_) => Err(SkipReason::BadPort),
        }
    };
    let remote_port = port("RemotePort")?;
    let local_port = port("LocalPort")?;
    let protocol = match get("Protocol") {
        None => Protocol::Unknown,
        Some(Value::String(s)) => Protocol::parse(s.as_bytes()),
        Some(_) => return Err(SkipReason::WrongType),
    };
    let report_id = match get("ReportId") {
        None => 0,
        Some(Value::Number(n)) => n.as_i64().ok_or(SkipReason::WrongType)?,
        Some(Value::String(s)) => s.parse().map_err(|_| SkipReason::WrongType)?,
        Some(_) => return Err(SkipReason::WrongType),
    };
    let mut ev = Event {
        ts,
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
        tcp_flags: None,
    };
    if action.reads_additional_fields() {
        let af = match get("AdditionalFields") {
            None => serde_json::Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(Value::Array(a)) if a.is_empty() => serde_json::Map::new(),
            Some(Value::String(s)) if s.trim().is_empty() => serde_json::Map::new(),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => m,
                Ok(Value::Array(a)) if a.is_empty() => serde_json::Map::new(),
                _ => return Err(SkipReason::WrongType),
            },
            Some(_) => return Err(SkipReason::WrongType),
        };
        let counter = |k: &str| -> Result<Option<u64>, SkipReason> {
            match af.get(k) {
                None => Ok(None),
                Some(Value::Number(n)) => n.as_u64().map(Some).ok_or(SkipReason::WrongType),
                Some(Value::String(s)) => s.parse().map(Some).map_err(|_| SkipReason::WrongType),
                Some(_) => Err(SkipReason::WrongType),
            }
        };
        let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        if action.reads_direction() {
            ev.direction = match af.get("direction") {
                Some(Value::String(s)) => Direction::parse(s.as_bytes()),
                _ => Direction::Unknown,
            };
            ev.tcp_flags = counter("Tcp Flags")?.and_then(|f| u8::try_from(f).ok());
        }
        if action.is_inspected() {
            ev.bytes = sum(counter("orig_bytes")?, counter("resp_bytes")?);
            ev.packets = sum(counter("orig_pkts")?, counter("resp_pkts")?);
        }
        if action.is_aggregated_report() {
            ev.weight = match counter("uniqueEventsAggregated")? {
                Some(w) => u32::try_from(w).map_err(|_| SkipReason::WrongType)?.max(1),
                None => 1,
            };
        }
    }
    ev.device = agg.device(&name);
    Ok(ev)
}

/// Reference line parser, including storage envelopes.
fn reference_line(line: &[u8], agg: &mut Aggregator) -> Result<Option<Event>, SkipReason> {
    let v: Value = serde_json::from_slice(line).map_err(|_| SkipReason::Malformed)?;
    let Value::Object(m) = v else {
        return Err(SkipReason::WrongType);
    };
    if let (Some(Value::String(cat)), Some(props)) = (m.get("category"), m.get("properties")) {
        if !cat.to_ascii_lowercase().ends_with("devicenetworkevents") {
            return Err(SkipReason::OtherTable);
        }
        let Value::Object(row) = props else {
            return Err(SkipReason::WrongType);
        };
        return reference_row(row, agg).map(Some);
    }
    reference_row(&m, agg).map(Some)
}

fn reference_fallback(line: &[u8], loc: Location, agg: &mut Aggregator, diag: &mut Diagnostics) {
    diag.records_read += 1;
    match reference_line(line, agg) {
        Ok(Some(ev)) => {
            agg.add(&ev);
        }
        Ok(None) => {}
        Err(r) => diag.skip(r, loc, "reference"),
    }
}

fn new_agg() -> Aggregator {
    Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
}

const T0: &str = "2025-12-22T09:55:01.1234567Z";

fn typical(i: u64, device: u32, action: &str, af: &str) -> String {
    format!(
        concat!(
            r#"{{"Timestamp":"2025-12-22T{:02}:{:02}:{:02}.{:07}Z","DeviceId":"abc","DeviceName":"web{:02}.contoso.com","#,
            r#""ActionType":"{}","RemoteIP":"198.51.{}.{}","RemotePort":{},"RemoteIPType":"Public","#,
            r#""LocalIP":"10.0.0.5","LocalPort":443,"Protocol":"Tcp","LocalIPType":"Private","#,
            r#""AdditionalFields":{},"InitiatingProcessFileName":"w3wp.exe","ReportId":{}}}"#
        ),
        (i / 3600) % 24,
        (i / 60) % 60,
        i % 60,
        i * 7 % 10_000_000,
        device,
        action,
        (i >> 8) % 256,
        i % 256,
        40_000 + i % 20_000,
        af,
        i
    )
}

#[test]
fn typical_rows_take_the_fast_path() {
    let mut agg = new_agg();
    let mut sc = Scanner::new();
    let line = typical(5, 1, "InboundConnectionAccepted", "null");
    let ev = sc.scan_row(line.as_bytes(), &mut agg).expect("handled");
    assert_eq!(
        ev.ts,
        parse_rfc3339(b"2025-12-22T00:00:05.0000035Z").expect("valid")
    );
    assert_eq!(agg.devices.name(ev.device), "web01.contoso.com");
    assert_eq!(ev.action, ActionType::InboundConnectionAccepted);
    assert_eq!(ev.remote_ip, Ip::parse(b"198.51.0.5"));
    assert_eq!((ev.remote_port, ev.local_port), (Some(40_005), Some(443)));
    assert_eq!(
        (ev.protocol, ev.report_id, ev.weight),
        (Protocol::Tcp, 5, 1)
    );

    let af = r#""{\"direction\":\"In\",\"orig_bytes\":\"1200\",\"resp_bytes\":34,\"orig_pkts\":\"5\",\"resp_pkts\":\"6\"}""#;
    let line = typical(6, 1, "SslConnectionInspected", af);
    let ev = sc.scan_row(line.as_bytes(), &mut agg).expect("handled");
    assert_eq!(ev.direction, Direction::In);
    assert_eq!((ev.bytes, ev.packets), (Some(1234), Some(11)));

    let line = typical(
        7,
        2,
        "ConnectionSuccessAggregatedReport",
        r#"{"uniqueEventsAggregated":17}"#,
    );
    let ev = sc
        .scan_row(line.as_bytes(), &mut agg)
        .expect("object AdditionalFields handled");
    assert_eq!(ev.weight, 17);
    assert_eq!(agg.devices.name(ev.device), "web02.contoso.com");
}

/// More devices and action spellings than the scanner remembers or has hint slots for, short
/// and long, in an order that keeps evicting them: every row still gets its own device and
/// action, as the reference reads them.
#[test]
fn device_and_action_caches_never_mix_names_up() {
    let actions = [
        "InboundConnectionAccepted",
        "inboundconnectionaccepted",
        "ConnectionSuccess",
        "ConnectionFailed",
        "SslConnectionInspected",
        "ConnectionSuccessAggregatedReport",
        "Foo",
        "Connection",
        "ListeningConnectionCreated",
        "ConnectionAttempt",
        "ConnectionAttemptX",
    ];
    let mut agg = new_agg();
    let mut sc = Scanner::new();
    for i in 0..600u64 {
        // 41 names: the cache holds 16, the hint table has 32 slots.
        let k = (i * 7) % 41;
        let name = match k % 4 {
            0 => format!("h{k}"),
            1 => format!("web{k:02}.contoso.com"),
            2 => format!("{k}-a-rather-long-device-name-that-spans-words.contoso.com"),
            _ => format!("mail{k}.c"),
        };
        let action = actions[(i as usize * 5) % actions.len()];
        let line = typical(i, 1, action, "null").replacen("web01.contoso.com", &name, 1);
        let got = sc.scan_row(line.as_bytes(), &mut agg);
        if ActionType::parse(action.as_bytes()) == ActionType::Other {
            // Unknown action types are the full parser's to count by name.
            assert_eq!(got, None, "{line}");
            continue;
        }
        let ev = got.expect("handled");
        assert_eq!(agg.devices.name(ev.device), name, "{line}");
        assert_eq!(ev.action, ActionType::parse(action.as_bytes()), "{line}");
        assert_eq!(
            reference_line(line.as_bytes(), &mut agg),
            Ok(Some(ev)),
            "{line}"
        );
    }
}

#[test]
fn unusual_rows_fall_back() {
    let mut agg = new_agg();
    let mut sc = Scanner::new();
    let cases = [
        // A nested object holding a key the scanner looks for.
        r#"{"Timestamp":"2025-12-22T09:55:01Z","DeviceName":"a","ActionType":"ConnectionSuccess","X":{"LocalPort":1},"ReportId":1}"#.to_string(),
        // Escapes in a needed value.
        format!(r#"{{"Timestamp":"{T0}","DeviceName":"a\"b","ActionType":"ConnectionSuccess","ReportId":1}}"#),
        // Storage envelope.
        format!(r#"{{"time":"{T0}","category":"AdvancedHunting-DeviceNetworkEvents","properties":{{"Timestamp":"{T0}","DeviceName":"a","ActionType":"ConnectionSuccess","ReportId":1}}}}"#),
        // Truncated line.
        format!(r#"{{"Timestamp":"{T0}","DeviceName":"a","ActionType":"ConnectionSuccess","ReportId":1"#),
        // Missing ReportId, bad IP, port out of range, number as device name.
        format!(r#"{{"Timestamp":"{T0}","DeviceName":"a","ActionType":"ConnectionSuccess"}}"#),
        format!(r#"{{"Timestamp":"{T0}","DeviceName":"a","ActionType":"X","RemoteIP":"1.2.3","ReportId":1}}"#),
        format!(r#"{{"Timestamp":"{T0}","DeviceName":"a","ActionType":"X","LocalPort":70000,"ReportId":1}}"#),
        format!(r#"{{"Timestamp":"{T0}","DeviceName":5,"ActionType":"X","ReportId":1}}"#),
        // Only one of a byte pair.
        format!(r#"{{"Timestamp":"{T0}","DeviceName":"a","ActionType":"HttpConnectionInspected","AdditionalFields":"{{\"orig_bytes\":3}}","ReportId":1}}"#),
    ];
    for c in &cases {
        assert_eq!(sc.scan_row(c.as_bytes(), &mut agg), None, "{c}");
    }
}

#[test]
fn key_names_inside_strings_are_not_keys() {
    let mut agg = new_agg();
    let line = format!(
        r#"{{"Note":"\"LocalPort\": 9","Timestamp":"{T0}","DeviceName":"a","ActionType":"InboundConnectionAccepted","AdditionalFields":"{{\"LocalPort\":9}}","LocalPort":"8443","ReportId":-3}}"#
    );
    let ev = Scanner::new().scan_row(line.as_bytes(), &mut agg);
    // The escaped quote in "Note" sends... nothing: it is not a needed value.
    let ev = ev.expect("handled");
    assert_eq!((ev.local_port, ev.report_id), (Some(8443), -3));
    assert_eq!(Ok(Some(ev)), reference_line(line.as_bytes(), &mut agg));
}

#[test]
fn a_key_name_after_an_escaped_quote_is_not_that_key() {
    let mut agg = new_agg();
    let line = format!(
        r#"{{"Timestamp":"{T0}","DeviceName":"a","ActionType":"InboundConnectionAccepted","x\"LocalPort":5,"ReportId":1}}"#
    );
    let reference = reference_line(line.as_bytes(), &mut agg).expect("valid row");
    assert_eq!(reference.map(|e| e.local_port), Some(None));
    if let Some(ev) = Scanner::new().scan_row(line.as_bytes(), &mut agg) {
        assert_eq!(Some(ev), reference);
    }
}

#[test]
fn keys_inside_an_additional_fields_object_are_skipped_on_a_learned_order() {
    let mut agg = new_agg();
    let mut sc = Scanner::new();
    // The first line teaches the order LocalPort before AdditionalFields; in the second, the
    // same distance lands on a LocalPort inside the AdditionalFields object.
    let first = format!(
        r#"{{"Timestamp":"{T0}","DeviceName":"a","ActionType":"InboundConnectionAccepted","LocalPort":443,"AdditionalFields":null,"ReportId":1}}"#
    );
    let second = format!(
        r#"{{"Timestamp":"{T0}","DeviceName":"a","ActionType":"InboundConnectionAccepted","AdditionalFields":{{"LocalPort":9}},"LocalPort":443,"ReportId":2}}"#
    );
    for line in [&first, &second] {
        let ev = sc.scan_row(line.as_bytes(), &mut agg).expect("handled");
        assert_eq!(ev.local_port, Some(443), "{line}");
        assert_eq!(Ok(Some(ev)), reference_line(line.as_bytes(), &mut agg));
    }
}

/// Rows whose variable columns move the needed keys around line after line, so every way the
/// scanner guesses a key's place gets used and then contradicted: the remembered distances
/// from the previous value and from the line end, the search from the previous value, the
/// general pass, and the relearned order. Every row must give the reference's event.
#[test]
fn moving_keys_agree_with_the_reference() {
    let mut agg = new_agg();
    let mut sc = Scanner::new();
    let urls = [
        "",
        "a.example",
        "settings-win.data.microsoft.com",
        "x",
        "{odd}",
        "[1]",
    ];
    let paths = [
        r#"c:\\windows\\system32\\svchost.exe"#,
        r#"c:\\w3wp.exe"#,
        "",
        r#"c:\\program files\\a very long folder name\\agent.exe"#,
        "d",
    ];
    let afs = [
        "null".to_string(),
        r#""{\"direction\":\"In\",\"orig_bytes\":\"10\",\"resp_bytes\":\"20\"}""#.to_string(),
        r#"{"ReportId":99,"LocalPort":1,"direction":"Out"}"#.to_string(),
        r#""""#.to_string(),
    ];
    let mut handled = 0;
    for i in 0..400u64 {
        let url = urls[(i % 6) as usize];
        let path = paths[(i * 7 % 5) as usize];
        let af = &afs[(i * 3 % 4) as usize];
        let action = if i % 4 == 1 {
            "SslConnectionInspected"
        } else {
            "InboundConnectionAccepted"
        };
        // Every 5th row puts AdditionalFields (an object, sometimes) before the keys it holds.
        let line = if i % 5 == 0 {
            format!(
                r#"{{"Timestamp":"{T0}","DeviceName":"web{}","ActionType":"{action}","RemoteIP":"10.0.0.{}","RemotePort":{},"RemoteUrl":"{url}","AdditionalFields":{af},"LocalIP":"10.1.1.1","LocalPort":{},"Protocol":"Tcp","InitiatingProcessFolderPath":"{path}","ReportId":{i},"MachineGroup":"g"}}"#,
                i % 3,
                i % 250,
                1000 + i,
                400 + i % 50
            )
        } else {
            format!(
                r#"{{"Timestamp":"{T0}","DeviceName":"web{}","ActionType":"{action}","RemoteIP":"10.0.0.{}","RemotePort":{},"RemoteUrl":"{url}","LocalIP":"10.1.1.1","LocalPort":{},"Protocol":"Tcp","InitiatingProcessFolderPath":"{path}","ReportId":{i},"AdditionalFields":{af},"MachineGroup":"g"}}"#,
                i % 3,
                i % 250,
                1000 + i,
                400 + i % 50
            )
        };
        let reference = reference_line(line.as_bytes(), &mut agg);
        match sc.scan_row(line.as_bytes(), &mut agg) {
            Some(ev) => {
                handled += 1;
                assert_eq!(Ok(Some(ev)), reference, "{line}");
            }
            // Declining is allowed (braces in a URL, an object before a key it holds); a
            // wrong value is not.
            None => assert!(url.contains(['{', '[']) || af.starts_with('{'), "{line}"),
        }
    }
    assert!(handled > 250, "only {handled} of 400 rows handled");
}

fn envelope(row: &str, category: &str, tail: &str) -> String {
    format!(
        r#"{{"time":"{T0}","tenantId":"t","operationName":"Publish","category":"{category}","properties":{row}{tail}}}"#
    )
}

#[test]
fn storage_envelopes_take_the_fast_path() {
    let mut agg = new_agg();
    let mut sc = Scanner::new();
    let af = r#""{\"direction\":\"In\",\"orig_bytes\":\"10\",\"resp_bytes\":\"20\"}""#;
    for i in 0..30u64 {
        let row = typical(
            i,
            (i % 3) as u32,
            "SslConnectionInspected",
            if i % 2 == 0 { af } else { "null" },
        );
        for tail in [
            "",
            r#","Tenant":"DefaultTenant""#,
            r#","Tenant":"a}","x":"b""#,
        ] {
            let line = envelope(&row, "AdvancedHunting-DeviceNetworkEvents", tail);
            let openers = Openers::find(line.as_bytes());
            let want = reference_line(line.as_bytes(), &mut agg);
            match sc.scan_envelope(line.as_bytes(), &openers, &mut agg) {
                Some(ev) => assert_eq!(Ok(Some(ev)), want, "{line}"),
                // Declining is allowed only where the tail hides a brace in a string.
                None => assert!(tail.contains('}'), "{line}"),
            }
        }
    }
    // Not this scanner's to decide: another table, a nested member in the envelope, a row
    // that is not an object, a container after the row.
    let row = typical(1, 1, "InboundConnectionAccepted", "null");
    for line in [
        envelope(&row, "AdvancedHunting-DeviceProcessEvents", ""),
        format!(r#"{{"meta":{{"a":1}},"category":"DeviceNetworkEvents","properties":{row}}}"#),
        envelope("[1]", "DeviceNetworkEvents", ""),
        envelope(&row, "DeviceNetworkEvents", r#","more":{"ReportId":5}"#),
    ] {
        let openers = Openers::find(line.as_bytes());
        assert_eq!(
            sc.scan_envelope(line.as_bytes(), &openers, &mut agg),
            None,
            "{line}"
        );
    }
}

#[test]
fn event_hubs_batches_are_all_or_nothing() {
    let mut agg = new_agg();
    let mut sc = Scanner::new();
    let records: Vec<String> = (0..5u64)
        .map(|i| {
            envelope(
                &typical(i, 1, "InboundConnectionAccepted", "null"),
                "AdvancedHunting-DeviceNetworkEvents",
                "",
            )
        })
        .collect();
    let line = format!(r#"{{"records":[{}]}}"#, records.join(","));
    let mut out = Vec::new();
    assert_eq!(sc.scan_batch(line.as_bytes(), &mut agg, &mut out), Some(()));
    let want: Vec<Event> = records
        .iter()
        .map(|r| {
            reference_line(r.as_bytes(), &mut agg)
                .expect("valid")
                .expect("a row")
        })
        .collect();
    assert_eq!(out, want);

    // One record of another table: nothing is kept, and the full parser reads the line.
    let mut mixed = records.clone();
    mixed[3] = envelope(
        &typical(3, 1, "InboundConnectionAccepted", "null"),
        "AdvancedHunting-DeviceEvents",
        "",
    );
    let line = format!(r#"{{"records":[{}]}}"#, mixed.join(","));
    let mut out = vec![want[0]];
    assert_eq!(sc.scan_batch(line.as_bytes(), &mut agg, &mut out), None);
    assert_eq!(out, vec![want[0]]);
}

/// Raw JSON snippets for one field, odd ones included.
fn field() -> impl Strategy<Value = (&'static str, String)> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    prop_oneof![
        prop::sample::select(s(&[
            r#""2025-12-22T09:55:01.1234567Z""#,
            r#""2025-12-22T09:55:01Z""#,
            r#""2025-12-22 10:55:01+01:00""#,
            r#""yesterday""#,
            "null",
            "17",
        ]))
        .prop_map(|v| ("Timestamp", v)),
        prop::sample::select(s(&[r#""2025-12-22T09:56:00Z""#, "null"]))
            .prop_map(|v| ("TimeGenerated", v)),
        prop::sample::select(s(&[
            r#""web01.contoso.com""#,
            r#""web02""#,
            r#""w\u00e9b""#,
            r#""wéb""#,
            r#""""#,
            "null",
            "3",
        ]))
        .prop_map(|v| ("DeviceName", v)),
        prop::sample::select(s(&[
            r#""InboundConnectionAccepted""#,
            r#""ConnectionAttempt""#,
            r#""SslConnectionInspected""#,
            r#""IcmpConnectionInspected""#,
            r#""ConnectionFailedAggregatedReport""#,
            r#""NewThing""#,
            "null",
            "1",
        ]))
        .prop_map(|v| ("ActionType", v)),
        prop::sample::select(s(&[
            r#""203.0.113.7""#,
            r#""2001:db8::5""#,
            r#""::ffff:203.0.113.7""#,
            r#""""#,
            r#""1.2.3""#,
            "null",
            "5",
        ]))
        .prop_map(|v| ("RemoteIP", v)),
        prop::sample::select(s(&[
            "443",
            r#""443""#,
            r#""0443""#,
            "null",
            "70000",
            "-1",
            "443.0",
            r#""x""#,
            "0"
        ]))
        .prop_map(|v| ("LocalPort", v)),
        prop::sample::select(s(&["50123", r#""50123""#, "null", "1e3"]))
            .prop_map(|v| ("RemotePort", v)),
        prop::sample::select(s(&[
            r#""Tcp""#,
            r#""udp""#,
            r#""""#,
            "null",
            "6",
            r#""TcpV4""#
        ]))
        .prop_map(|v| ("Protocol", v)),
        prop::sample::select(s(&[
            "12",
            "-7",
            r#""12""#,
            "null",
            "1.5",
            "01",
            "9223372036854775807"
        ]))
        .prop_map(|v| ("ReportId", v)),
        prop::sample::select(s(&[
            "null",
            r#""""#,
            r#""{}""#,
            r#""[]""#,
            "{}",
            "[]",
            r#""{\"direction\":\"In\",\"orig_bytes\":\"10\",\"resp_bytes\":\"20\"}""#,
            r#""{\"direction\": \"Out\", \"orig_pkts\": 1, \"resp_pkts\": 2}""#,
            r#"{"direction":"In","orig_bytes":5,"resp_bytes":"6","LocalPort":9}"#,
            r#"{"nested":{"LocalPort":9}}"#,
            r#""{\"uniqueEventsAggregated\":42}""#,
            r#"{"uniqueEventsAggregated":"7"}"#,
            r#""{\"direction\":\"In\\n\"}""#,
            r#""{\"orig_bytes\":1}""#,
            r#""not json""#,
            "5",
        ]))
        .prop_map(|v| ("AdditionalFields", v)),
        prop::sample::select(s(&[
            r#""w3wp.exe""#,
            r#""C:\\Program Files\\x.exe""#,
            r#""say \"LocalPort\": 1""#,
            "[1,2]",
            r#"{"LocalPort":1}"#,
            "true",
            "null",
        ]))
        .prop_map(|v| ("Extra", v)),
    ]
}

fn row() -> impl Strategy<Value = String> {
    (proptest::collection::vec(field(), 0..14), any::<bool>()).prop_map(|(mut fields, spaced)| {
        // Duplicate keys are outside the contract (readers differ on which copy wins).
        let mut seen = std::collections::HashSet::new();
        fields.retain(|(k, _)| seen.insert(*k));
        let sep = if spaced { ": " } else { ":" };
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\"{sep}{v}"))
            .collect();
        format!("{{{}}}", body.join(if spaced { ", " } else { "," }))
    })
}

/// A complete, valid row from the common shapes, so the proptest exercises the fast path a lot.
fn good_row() -> impl Strategy<Value = String> {
    (0u64..100_000, 0u32..3, 0usize..4, 0usize..4).prop_map(|(i, d, a, f)| {
        let action = ["InboundConnectionAccepted", "SslConnectionInspected", "ConnectionSuccessAggregatedReport", "ConnectionAttempt"][a];
        let af = [
            "null",
            r#""{\"direction\":\"In\",\"orig_bytes\":\"10\",\"resp_bytes\":\"20\",\"orig_pkts\":1,\"resp_pkts\":2}""#,
            r#"{"uniqueEventsAggregated":3,"direction":"Out"}"#,
            r#""""#,
        ][f];
        typical(i, d, action, af)
    })
}

/// A row with the needed keys in Defender's schema order (the order the fast pass has a
/// specialised path for), each value drawn from [`field`]'s spellings, odd ones included, with
/// columns of varying length between them so the remembered distances hit and miss.
fn schema_row() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(field(), 24..48),
        proptest::collection::vec(0usize..4, 10),
        any::<bool>(),
    )
        .prop_map(|(fields, fill, with_generated)| {
            let order = [
                "Timestamp",
                "DeviceName",
                "ActionType",
                "RemoteIP",
                "RemotePort",
                "LocalPort",
                "Protocol",
                "ReportId",
                "AdditionalFields",
            ];
            let good = [
                r#""2025-12-22T09:55:01.1234567Z""#,
                r#""web01.contoso.com""#,
                r#""InboundConnectionAccepted""#,
                r#""203.0.113.7""#,
                "50123",
                "443",
                r#""Tcp""#,
                "12",
                "null",
            ];
            let fillers = [
                "",
                r#""RemoteUrl":"a.example","#,
                r#""LocalIP":"10.1.1.12","#,
                r#""InitiatingProcessFolderPath":"c:\\windows\\system32\\svchost.exe","#,
            ];
            let mut body = String::from("{");
            for (k, (key, dflt)) in order.iter().zip(good).enumerate() {
                let v = fields
                    .iter()
                    .find(|(f, _)| f == key)
                    .map_or(dflt.to_string(), |(_, v)| v.clone());
                body.push_str(&format!("\"{key}\":{v},"));
                body.push_str(fillers[fill[k]]);
            }
            if with_generated {
                body.push_str(r#""TimeGenerated":"2025-12-22T09:56:00Z","#);
            }
            body.push_str(r#""MachineGroup":"g"}"#);
            body
        })
}

/// A typical row with one of many timestamp spellings, several sharing a minute, so the
/// scanner's minute cache meets both its fast tail and everything it must hand on.
fn time_row() -> impl Strategy<Value = String> {
    let stamps = [
        "2025-12-22T09:55:01.1234567Z",
        "2025-12-22T09:55:59Z",
        "2025-12-22T09:55:60Z",
        "2025-12-22T09:55:61Z",
        "2025-12-22T09:55:07z",
        "2025-12-22T09:55:07",
        "2025-12-22T09:55:07.Z",
        "2025-12-22T09:55:07.1234567891234Z",
        "2025-12-22T09:55:07+01:00",
        "2025-12-22T09:55:7Z",
        "2025-12-22T09:55:07.5ZZ",
        "2025-12-22 09:55:08.25Z",
        "2025-12-22T09:56:00.0000001Z",
        "2025-02-30T09:55:01Z",
        "2024-02-29T23:59:59.999Z",
        "2025-12-22T09:55",
    ];
    (prop::sample::select(stamps.to_vec()), 0u32..3, 0u64..50).prop_map(|(t, d, i)| {
        typical(i, d, "InboundConnectionAccepted", "null").replacen(
            &typical(i, d, "InboundConnectionAccepted", "null")[14..42],
            t,
            1,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whenever the scanner handles a line, the reference reads the same event from it.
    #[test]
    fn scanner_agrees_with_reference(line in prop_oneof![row(), good_row()]) {
        let mut agg = new_agg();
        let fast = Scanner::new().scan_row(line.as_bytes(), &mut agg);
        if let Some(ev) = fast {
            prop_assert_eq!(reference_line(line.as_bytes(), &mut agg), Ok(Some(ev)), "{}", line);
        }
    }

    /// One scanner over many lines: what it carries from line to line (key order and
    /// distances, devices, the timestamp's minute) never changes what it reads.
    #[test]
    fn scanner_state_agrees_with_reference(
        lines in proptest::collection::vec(prop_oneof![row(), good_row(), time_row()], 1..40)
    ) {
        let mut agg = new_agg();
        let mut sc = Scanner::new();
        for line in &lines {
            if let Some(ev) = sc.scan_row(line.as_bytes(), &mut agg) {
                prop_assert_eq!(reference_line(line.as_bytes(), &mut agg), Ok(Some(ev)), "{}", line);
            }
        }
    }

    /// Rows in the schema's order, with odd values and moving distances, through one scanner.
    #[test]
    fn schema_ordered_rows_agree_with_reference(
        lines in proptest::collection::vec(prop_oneof![3 => schema_row(), 1 => good_row()], 1..40)
    ) {
        let mut agg = new_agg();
        let mut sc = Scanner::new();
        for line in &lines {
            if let Some(ev) = sc.scan_row(line.as_bytes(), &mut agg) {
                prop_assert_eq!(reference_line(line.as_bytes(), &mut agg), Ok(Some(ev)), "{}", line);
            }
        }
    }

    #[test]
    fn good_rows_are_handled(line in good_row()) {
        let mut agg = new_agg();
        prop_assert!(Scanner::new().scan_row(line.as_bytes(), &mut agg).is_some(), "{}", line);
    }
}

/// A mixed input: typical rows, odd rows, blank lines, CRLF, an envelope of another table.
fn fixture() -> Vec<u8> {
    let mut out = Vec::new();
    let af_in = r#""{\"direction\":\"In\",\"orig_bytes\":\"10\",\"resp_bytes\":\"20\"}""#;
    for i in 0..3000u64 {
        let line = match i % 11 {
            0 => typical(i, (i % 4) as u32, "SslConnectionInspected", af_in),
            1 => format!(
                r#"{{"time":"{T0}","category":"AdvancedHunting-DeviceProcessEvents","properties":{{}}}}"#
            ),
            2 => typical(
                i,
                1,
                "ConnectionFailedAggregatedReport",
                r#""{\"uniqueEventsAggregated\":4}""#,
            ),
            3 => format!(
                r#"{{"Timestamp":"{T0}","DeviceName":"web01.contoso.com","ActionType":"InboundConnectionAccepted","RemoteIP":"bad","ReportId":{i}}}"#
            ),
            4 => String::new(),
            5 => format!("{}\r", typical(i, 2, "InboundConnectionAccepted", "null")),
            6 => format!(
                r#"{{"time":"{T0}","category":"AdvancedHunting-DeviceNetworkEvents","properties":{}}}"#,
                typical(i, 3, "InboundConnectionAccepted", "null")
            ),
            7 => "not json at all".to_string(),
            _ => typical(i, (i % 5) as u32, "InboundConnectionAccepted", "null"),
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

fn run(data: &[u8], n: usize, max_line: usize) -> (floodwatch_core::Aggregates, Diagnostics, u64) {
    let mut workers: Vec<Worker> = (0..n).map(|_| Worker::new(new_agg())).collect();
    let chunk = Chunk {
        data,
        source: "f.json",
        first_line: 1,
        base_offset: 0,
    };
    let lines = aggregate_lines(chunk, &mut workers, max_line, &reference_fallback);
    let mut aggs = floodwatch_core::Aggregates::empty(BinWidth::FIVE_MINUTES);
    let mut diag = Diagnostics::default();
    for w in workers {
        aggs.merge(w.agg.finish());
        diag.merge(&w.diag);
    }
    (aggs, diag, lines)
}

#[test]
fn workers_agree_with_one_thread_and_with_the_reference() {
    let data = fixture();
    let (one, d1, lines) = run(&data, 1, 1 << 20);
    assert_eq!(lines, 3000);
    assert_eq!(
        one.stats.events, 1908,
        "3000 lines less 4 x 273 skipped or blank"
    );
    for n in 2..=4 {
        let (many, dn, ln) = run(&data, n, 1 << 20);
        assert_eq!(ln, lines);
        assert_eq!(many.stats, one.stats, "{n} workers");
        // Every field but `top`: Space-Saving's merge is exact only while a bin has at most
        // m (32) sources, and these bins have more, so its tail legitimately depends on the split.
        let (a, b) = (many.by_name(), one.by_name());
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{n} workers"
        );
        for (k, v) in &b {
            let mut w = a[k].clone();
            w.top = v.top.clone();
            assert_eq!(&w, *v, "{n} workers, bin {k:?}");
            if v.sources.distinct_u64() <= 32 {
                assert_eq!(a[k].top, v.top, "{n} workers, bin {k:?}: exact regime");
            }
        }
        assert_eq!(dn, d1, "{n} workers");
    }
    // Everything through the reference alone gives the same aggregates and skips.
    let mut agg = new_agg();
    let mut diag = Diagnostics::default();
    for (i, line) in data.split(|&c| c == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let loc = Location {
            source: "f.json".into(),
            line: Some(i as u64 + 1),
            offset: None,
        };
        reference_fallback(line, loc, &mut agg, &mut diag);
    }
    let reference = agg.finish();
    assert_eq!(reference.by_name(), one.by_name());
    assert_eq!(reference.stats, one.stats);
    assert_eq!(diag.skipped, d1.skipped);
    assert_eq!(diag.records_read, d1.records_read);
    assert_eq!(d1.count(SkipReason::OtherTable), 273);
    assert_eq!(d1.count(SkipReason::BadIp), 273);
    // The first example is line 4 (the first error; other tables are counted without
    // examples), at its real line and byte offset.
    let first = &d1.examples[0];
    assert_eq!(first.location.line, Some(4));
    let off = data
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c == b'\n')
        .nth(2)
        .expect("lines")
        .0 as u64
        + 1;
    assert_eq!(first.location.offset, Some(off));
}

/// The ranges handed back while reading lie inside the chunk, each worker's in order and
/// without overlap, and end on 2 MiB boundaries of the input; reading with them changes nothing.
#[test]
fn released_ranges_are_done_with_and_change_nothing() {
    let one = fixture();
    let data: Vec<u8> = std::iter::repeat_n(one.as_slice(), 60)
        .flatten()
        .copied()
        .collect();
    assert!(data.len() > 2 * crate::RELEASE_STEP);
    let chunk = Chunk {
        data: &data,
        source: "big",
        first_line: 1,
        base_offset: 12_345,
    };
    let calls = std::sync::Mutex::new(Vec::new());
    let release = |from: usize, to: usize| calls.lock().expect("not poisoned").push((from, to));
    let mut with: Vec<Worker> = (0..2).map(|_| Worker::new(new_agg())).collect();
    let mut without: Vec<Worker> = (0..2).map(|_| Worker::new(new_agg())).collect();
    let fb: &crate::Fallback = &reference_fallback;
    let a = crate::aggregate_lines_releasing(chunk, &mut with, 1 << 20, fb, &release);
    let b = aggregate_lines(chunk, &mut without, 1 << 20, fb);
    assert_eq!(a, b);
    for (x, y) in with.into_iter().zip(without) {
        assert_eq!(x.diag, y.diag);
        assert_eq!(x.agg.finish().by_name(), y.agg.finish().by_name());
    }
    let mut calls = calls.into_inner().expect("not poisoned");
    assert!(calls.len() >= 2, "{calls:?}");
    calls.sort_unstable();
    for w in calls.windows(2) {
        assert!(w[0].1 <= w[1].0, "{calls:?}");
    }
    for &(from, to) in &calls {
        assert!(from < to && to <= data.len(), "{from}..{to}");
        assert_eq!(
            (chunk.base_offset + to as u64) % (2 << 20),
            0,
            "{from}..{to}"
        );
    }
}

#[test]
fn skip_locations_are_absolute_in_every_part() {
    let data = fixture();
    for n in [1, 3] {
        let (_, d, _) = run(&data, n, 1 << 20);
        // Examples are the first ten errors by location, whichever worker saw them (the
        // other-table envelopes on lines 2, 13, 24, ... are counted but not exemplified).
        let lines: Vec<u64> = d.examples.iter().filter_map(|e| e.location.line).collect();
        assert_eq!(
            lines,
            vec![4, 8, 15, 19, 26, 30, 37, 41, 48, 52],
            "{n} workers"
        );
    }
    // A part boundary falls mid-file with 3 workers: a skip there keeps its true line.
    let (_, d, _) = run(&data, 3, 100);
    assert!(d.count(SkipReason::TooLong) > 2000);
    assert_eq!(d.examples[0].location.line, Some(1));
    assert_eq!(d.records_read, run(&data, 1, 100).1.records_read);
}
