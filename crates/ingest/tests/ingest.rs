//! Ingest acceptance tests: every fixture format gives the same aggregates; every kind of bad
//! input is counted where it is and the records around it still count; detection and the
//! override pick the reader.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use floodwatch_core::time::parse_rfc3339;
use floodwatch_core::{Aggregates, Aggregator, BinWidth, Class, ClassifyConfig, SkipReason};
use floodwatch_ingest::{IngestError, IngestOptions, IngestOutput, InputFormat, ingest};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/formats")
}

fn make() -> Aggregator {
    Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
}

fn opts(format: InputFormat) -> IngestOptions {
    IngestOptions {
        format,
        threads: 1,
        ..IngestOptions::default()
    }
}

fn run(paths: &[PathBuf], o: &IngestOptions) -> IngestOutput {
    ingest(paths, o, &make).unwrap()
}

fn run_auto(path: &Path) -> IngestOutput {
    run(&[path.to_path_buf()], &opts(InputFormat::Auto))
}

fn bin(t: &str) -> i64 {
    BinWidth::FIVE_MINUTES.index(parse_rfc3339(t.as_bytes()).unwrap())
}

const FIXTURES: [(&str, InputFormat, u64); 16] = [
    ("ndjson.json", InputFormat::Ndjson, 0),
    ("array.json", InputFormat::JsonArray, 0),
    ("eventhubs.json", InputFormat::EventHubs, 1),
    ("eventhubs-pretty.json", InputFormat::EventHubs, 1),
    ("storage.json", InputFormat::StorageExport, 1),
    ("ah-api.json", InputFormat::AdvancedHuntingApi, 0),
    ("graph.json", InputFormat::GraphHunting, 0),
    ("odata.json", InputFormat::ODataList, 0),
    ("log-analytics.json", InputFormat::LogAnalytics, 0),
    ("defender.csv", InputFormat::DefenderCsv, 0),
    ("sentinel.csv", InputFormat::SentinelCsv, 0),
    ("ndjson.json.gz", InputFormat::Ndjson, 0),
    ("storage.json.zst", InputFormat::StorageExport, 1),
    ("tree", InputFormat::StorageExport, 0),
    // An Advanced Hunting `union` with 18 rows of other tables, recognised by action type and
    // columns.
    ("union.csv", InputFormat::DefenderCsv, 18),
    ("union-ah-api.json", InputFormat::AdvancedHuntingApi, 18),
];

mod golden {
    use super::*;

    /// Values worked out by hand from the rows listed in testdata/formats/README.md.
    fn check_hand_computed(a: &Aggregates, what: &str) {
        assert_eq!(a.stats.events, 31, "{what}");
        // Oldest and newest event time, to the millisecond, across the 12-hour clock of
        // Sentinel's dates.
        assert_eq!(
            a.stats.min_ts,
            parse_rfc3339(b"2025-12-22T12:58:00Z").ok(),
            "{what}"
        );
        assert_eq!(
            a.stats.max_ts,
            parse_rfc3339(b"2025-12-22T13:11:03.789Z").ok(),
            "{what}"
        );
        assert_eq!(a.stats.duplicates, 1, "{what}: the repeated row is dropped");
        let by = a.by_name();
        let get = |dev: &str, t: &str| {
            by.get(&(dev.to_owned(), bin(t)))
                .copied()
                .unwrap_or_else(|| panic!("{what}: no bin {dev} {t}"))
        };
        let w1 = get("web-01.contoso.com", "2025-12-22T13:00:00Z");
        assert_eq!(w1.seed.count, 10, "{what}");
        assert_eq!(
            w1.seed.sources.distinct_u64(),
            8,
            "{what}: 6 IPv4 + 2 IPv6 sources"
        );
        assert_eq!(w1.class(Class::Web).count, 10, "{what}");
        let w1b = get("web-01.contoso.com", "2025-12-22T13:05:00Z");
        assert_eq!(w1b.seed.count, 3, "{what}: the seed counts UDP 443 too");
        assert_eq!(w1b.class(Class::Udp).count, 1, "{what}");
        let w2 = get("web-02.contoso.com", "2025-12-22T13:00:00Z");
        assert_eq!(w2.class(Class::Syn).count, 5, "{what}");
        let icmp = w2.class(Class::Icmp);
        assert_eq!(
            (icmp.count, icmp.bytes, icmp.packets),
            (4, 672, 8),
            "{what}"
        );
        assert_eq!(
            get("web-02.contoso.com", "2025-12-22T13:10:00Z")
                .class(Class::Web)
                .count,
            4,
            "{what}"
        );
        assert_eq!(
            get("db-01.contoso.com", "2025-12-22T13:00:00Z").rows,
            37 + 3,
            "{what}: the aggregated report weighs 37"
        );
        assert_eq!(get("db-01.contoso.com", "2025-12-22T12:55:00Z").rows, 1);
        assert_eq!(by.len(), 6, "{what}");
    }

    #[test]
    fn every_format_gives_the_same_aggregates() {
        let reference = run_auto(&fixtures().join("ndjson.json"));
        check_hand_computed(&reference.aggregates, "ndjson.json");
        for (name, _, other_tables) in FIXTURES {
            let out = run_auto(&fixtures().join(name));
            check_hand_computed(&out.aggregates, name);
            assert_eq!(
                out.aggregates.by_name(),
                reference.aggregates.by_name(),
                "{name} differs from ndjson.json"
            );
            let d = &out.diagnostics;
            assert_eq!(d.count(SkipReason::OtherTable), other_tables, "{name}");
            assert_eq!(d.errors(), 0, "{name}: {:?}", d.examples);
            assert_eq!(d.records_read, 32 + other_tables, "{name}");
            assert!(d.bytes_read > 0, "{name}");
        }
    }

    #[test]
    fn all_fixtures_at_once_merge_like_one_input() {
        let paths: Vec<PathBuf> = ["ndjson.json", "defender.csv"]
            .iter()
            .map(|n| fixtures().join(n))
            .collect();
        let out = run(&paths, &opts(InputFormat::Auto));
        // The second file repeats every event: all of it is duplicates.
        assert_eq!(out.aggregates.stats.events, 31);
        assert_eq!(out.aggregates.stats.duplicates, 1 + 32);
        assert_eq!(out.diagnostics.inputs, 2);
    }

    /// Every fixture, and a larger input cut into several parts (bad lines among good ones,
    /// and exact copies of rows far enough back to land in another thread's part), read by one
    /// thread and by four, keeping every bin or sealing them as they complete.
    #[test]
    fn four_threads_give_one_threads_result() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        let rows = std::fs::read_to_string(fixtures().join("ndjson.json")).unwrap();
        let rows: Vec<&str> = rows.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut text = String::new();
        // A new ReportId per row, so a row repeats another only where it is meant to.
        let row = |i: usize| {
            rows[i % rows.len()].replacen("\"ReportId\":", &format!("\"ReportId\":{}0", i + 1), 1)
        };
        let mut copies = 0;
        for i in 0..6000usize {
            match i % 97 {
                13 => text.push_str("{\"Timestamp\": nope}\n"),
                // An exact copy of a row 3,000 rows back: in another part with four threads.
                _ if i >= 3000 && i % 5 == 0 && (i - 3000) % 97 != 13 => {
                    text.push_str(&format!("{}\n", row(i - 3000)));
                    copies += 1;
                }
                _ => text.push_str(&format!("{}\n", row(i))),
            }
        }
        std::fs::write(&big, text).unwrap();
        assert!(std::fs::metadata(&big).unwrap().len() > 4 * (64 << 10));
        let mut paths: Vec<PathBuf> = FIXTURES.iter().map(|f| fixtures().join(f.0)).collect();
        paths.push(big.clone());
        for path in paths {
            // Also with bins sealed as they complete (the command line's default).
            for lateness in [None, Some(3_600_000_000_000)] {
                let with = |threads| {
                    run(
                        std::slice::from_ref(&path),
                        &IngestOptions {
                            threads,
                            lateness,
                            ..opts(InputFormat::Auto)
                        },
                    )
                };
                let (one, four) = (with(1), with(4));
                let at = format!("{} {lateness:?}", path.display());
                if path == big {
                    assert_eq!(one.aggregates.stats.duplicates, copies, "{at}");
                }
                assert_eq!(one.aggregates.by_name(), four.aggregates.by_name(), "{at}");
                assert_eq!(one.aggregates.stats, four.aggregates.stats, "{at}");
                assert_eq!(one.diagnostics, four.diagnostics, "{at}");
            }
        }
    }

    #[test]
    fn more_threads_same_result() {
        let one = run_auto(&fixtures().join("storage.json"));
        let many = run(
            &[fixtures().join("storage.json")],
            &IngestOptions {
                threads: 4,
                ..IngestOptions::default()
            },
        );
        assert_eq!(
            many.aggregates.stats.events + many.aggregates.stats.duplicates,
            32
        );
        assert_eq!(one.diagnostics.records_read, many.diagnostics.records_read);
    }
}

mod detect {
    use super::*;

    #[test]
    fn auto_detection_names_each_fixture() {
        for (name, want, _) in FIXTURES {
            let out = run_auto(&fixtures().join(name));
            for (source, got) in &out.formats {
                assert_eq!(*got, want, "{source}");
            }
            assert!(!out.formats.is_empty(), "{name}");
        }
    }

    #[test]
    fn directories_are_read_in_sorted_path_order() {
        let out = run_auto(&fixtures().join("tree"));
        let sources: Vec<&String> = out.formats.keys().collect();
        assert_eq!(sources.len(), 2);
        assert!(sources[0].contains("/h=12/m=00/PT1H.json"), "{sources:?}");
        assert!(sources[1].contains("/h=13/m=00/PT1H.json"), "{sources:?}");
        assert_eq!(out.diagnostics.inputs, 2);
    }

    #[test]
    fn the_override_wins() {
        // NDJSON read as JSON documents: concatenated objects, same events.
        let out = run(
            &[fixtures().join("ndjson.json")],
            &opts(InputFormat::JsonArray),
        );
        assert_eq!(out.aggregates.stats.events, 31);
        assert_eq!(out.formats.values().next(), Some(&InputFormat::JsonArray));
        // NDJSON forced through the CSV reader: nothing usable, and it says so.
        let out = run(
            &[fixtures().join("ndjson.json")],
            &opts(InputFormat::DefenderCsv),
        );
        assert_eq!(out.aggregates.stats.events, 0);
        assert_eq!(out.formats.values().next(), Some(&InputFormat::DefenderCsv));
        assert!(out.diagnostics.errors() > 0);
    }

    #[test]
    fn missing_inputs_are_errors_that_say_where() {
        let e = ingest(
            &[PathBuf::from("/no/such/file.json")],
            &opts(InputFormat::Auto),
            &make,
        )
        .unwrap_err();
        assert!(matches!(e, IngestError::Io { .. }));
        assert!(e.to_string().starts_with("/no/such/file.json: "), "{e}");
        let e = ingest(&[], &opts(InputFormat::Auto), &make).unwrap_err();
        assert!(matches!(e, IngestError::NoInput(_)));
        let empty = tempfile::tempdir().unwrap();
        let e = ingest(
            &[empty.path().to_path_buf()],
            &opts(InputFormat::Auto),
            &make,
        )
        .unwrap_err();
        assert!(e.to_string().contains("directory holds no files"), "{e}");
    }
}

mod bad_input {
    use super::*;

    fn good(n: u32) -> String {
        format!(
            r#"{{"Timestamp":"2025-12-22T09:00:{:02}Z","DeviceName":"web-01","ActionType":"InboundConnectionAccepted","RemoteIP":"203.0.113.{}","LocalPort":443,"ReportId":{n}}}"#,
            n % 60,
            n % 250 + 1
        )
    }

    fn file_with(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Good line, the bad line, good line: the bad one is counted at line 2 with `message`.
    fn one_bad_line(bad: &[u8], reason: SkipReason, message: &str) {
        let dir = tempfile::tempdir().unwrap();
        let mut data = Vec::new();
        data.extend_from_slice(good(1).as_bytes());
        data.push(b'\n');
        data.extend_from_slice(bad);
        data.push(b'\n');
        data.extend_from_slice(good(2).as_bytes());
        data.push(b'\n');
        let p = file_with(&dir, "bad.json", &data);
        let out = run_auto(&p);
        let d = &out.diagnostics;
        assert_eq!(d.count(reason), 1, "{:?}", d.examples);
        assert_eq!(d.total_skipped(), 1, "{:?}", d.examples);
        assert_eq!(
            out.aggregates.stats.events, 2,
            "the lines before and after still count"
        );
        let ex = &d.examples[0];
        assert_eq!(ex.location.source, p.display().to_string());
        assert_eq!(ex.location.line, Some(2));
        assert!(ex.location.offset.unwrap() > good(1).len() as u64);
        assert!(
            ex.message.contains(message),
            "{:?} lacks {message:?}",
            ex.message
        );

        // Strict mode stops with the same example.
        let e = ingest(
            std::slice::from_ref(&p),
            &IngestOptions {
                strict: true,
                ..opts(InputFormat::Auto)
            },
            &make,
        )
        .unwrap_err();
        match &e {
            IngestError::Strict(x) => {
                assert_eq!(x.reason, reason);
                assert_eq!(x.location.line, Some(2));
            }
            other => panic!("expected a strict error, got {other}"),
        }
        assert!(e.to_string().contains(": line 2 "), "{e}");
        assert!(e.to_string().contains(message), "{e}");
    }

    #[test]
    fn malformed_line() {
        one_bad_line(
            br#"{"Timestamp": "2025-12-22T13:00:00Z", "DeviceName": oops}"#,
            SkipReason::Malformed,
            "JSON: expected value",
        );
    }

    #[test]
    fn wrong_type() {
        let bad = good(3).replace(r#""DeviceName":"web-01""#, r#""DeviceName":42"#);
        one_bad_line(
            bad.as_bytes(),
            SkipReason::WrongType,
            r#"field "DeviceName": expected a string, got a number 42"#,
        );
    }

    #[test]
    fn bad_timestamp() {
        let bad = good(3).replace("2025-12-22T09:00:03Z", "yesterday");
        one_bad_line(
            bad.as_bytes(),
            SkipReason::BadTimestamp,
            r#"field "Timestamp": not a date-time: "yesterday""#,
        );
    }

    #[test]
    fn bad_ip() {
        let bad = good(3).replace("203.0.113.4", "203.0.113.400");
        one_bad_line(
            bad.as_bytes(),
            SkipReason::BadIp,
            r#"field "RemoteIP": not an IP address: "203.0.113.400""#,
        );
    }

    #[test]
    fn bad_port() {
        let bad = good(3).replace(r#""LocalPort":443"#, r#""LocalPort":-1"#);
        one_bad_line(
            bad.as_bytes(),
            SkipReason::BadPort,
            r#"field "LocalPort": not a port (0-65535): a number -1"#,
        );
    }

    #[test]
    fn binary_garbage() {
        one_bad_line(
            b"\x00\x13\x37\xde\xad\xbe\xef\x01\x02",
            SkipReason::Binary,
            "not UTF-8 text",
        );
        one_bad_line(
            b"PK\x03\x04\x00\x00",
            SkipReason::Binary,
            "binary data (control byte 0x03 at column 3)",
        );
    }

    #[test]
    fn invalid_utf8() {
        let mut bad = good(3).into_bytes();
        let at = bad.iter().position(|&c| c == b'w').unwrap();
        bad[at] = 0xc3; // a lead byte without its continuation
        one_bad_line(
            &bad,
            SkipReason::Binary,
            "not UTF-8 text (invalid byte 0xc3",
        );
    }

    #[test]
    fn a_100_mb_line_is_skipped_not_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("long.json");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
        writeln!(f, "{}", good(1)).unwrap();
        f.write_all(br#"{"DeviceName":""#).unwrap();
        let block = vec![b'a'; 1 << 20];
        for _ in 0..100 {
            f.write_all(&block).unwrap();
        }
        f.write_all(b"\"}\n").unwrap();
        writeln!(f, "{}", good(2)).unwrap();
        drop(f);
        let out = run_auto(&p);
        let d = &out.diagnostics;
        assert_eq!(d.count(SkipReason::TooLong), 1);
        assert_eq!(out.aggregates.stats.events, 2);
        let ex = &d.examples[0];
        assert_eq!(ex.location.line, Some(2));
        assert_eq!(ex.location.offset, Some(good(1).len() as u64 + 1));
        assert!(
            ex.message.contains("longer than") && ex.message.contains("67108864"),
            "{}",
            ex.message
        );
    }

    #[test]
    fn a_long_line_in_a_compressed_stream_streams_past() {
        let dir = tempfile::tempdir().unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        writeln!(enc, "{}", good(1)).unwrap();
        enc.write_all(br#"{"DeviceName":""#).unwrap();
        let block = vec![b'a'; 1 << 20];
        for _ in 0..40 {
            enc.write_all(&block).unwrap();
        }
        enc.write_all(b"\"}\n").unwrap();
        for n in 2..5 {
            writeln!(enc, "{}", good(n)).unwrap();
        }
        let p = file_with(&dir, "long.json.gz", &enc.finish().unwrap());
        let o = IngestOptions {
            max_line_bytes: 4 << 20,
            ..opts(InputFormat::Auto)
        };
        let out = run(&[p], &o);
        let d = &out.diagnostics;
        assert_eq!(d.count(SkipReason::TooLong), 1, "{:?}", d.examples);
        assert_eq!(d.total_skipped(), 1, "{:?}", d.examples);
        assert_eq!(out.aggregates.stats.events, 4);
        assert_eq!(d.examples[0].location.line, Some(2));
        assert_eq!(
            d.examples[0].location.offset,
            Some(good(1).len() as u64 + 1)
        );
    }

    fn many_lines(n: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            v.extend_from_slice(good(i).as_bytes());
            v.push(b'\n');
        }
        v
    }

    /// A compressed stream cut at 60 %: every whole line decoded before the break counts, the
    /// break is one `Truncated` skip at the decoded offset, the cut line is not reported again.
    fn truncated(name: &str, compressed: Vec<u8>, plain: &[u8], kind: &str) {
        let dir = tempfile::tempdir().unwrap();
        let cut = &compressed[..compressed.len() * 6 / 10];
        let p = file_with(&dir, name, cut);
        let out = run_auto(&p);
        let d = &out.diagnostics;
        assert_eq!(d.count(SkipReason::Truncated), 1, "{:?}", d.examples);
        assert_eq!(d.total_skipped(), 1, "{:?}", d.examples);
        let ex = &d.examples[0];
        let at = ex.location.offset.unwrap() as usize;
        assert!(at > 0 && at < plain.len(), "{at}");
        let whole_lines = memchr::memchr_iter(b'\n', &plain[..at]).count() as u64;
        assert!(whole_lines > 100, "{whole_lines}");
        assert_eq!(out.aggregates.stats.events, whole_lines);
        assert!(
            ex.message.starts_with(&format!(
                "{kind} stream breaks off after {at} decompressed bytes"
            )),
            "{}",
            ex.message
        );
        let e = ingest(
            &[p],
            &IngestOptions {
                strict: true,
                ..opts(InputFormat::Auto)
            },
            &make,
        )
        .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn truncated_gzip() {
        let plain = many_lines(3000);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&plain).unwrap();
        truncated("cut.json.gz", enc.finish().unwrap(), &plain, "gzip");
    }

    #[test]
    fn truncated_zstd() {
        let plain = many_lines(3000);
        let z = zstd::encode_all(&plain[..], 3).unwrap();
        truncated("cut.json.zst", z, &plain, "zstd");
    }

    #[test]
    fn bad_csv_record_says_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "Timestamp,DeviceName,ActionType,RemoteIP,LocalPort\r\n\
                   2025-12-22T09:00:01Z,web-01,InboundConnectionAccepted,203.0.113.1,443\r\n\
                   2025-12-22T09:00:02Z,web-01,InboundConnectionAccepted,203.0.113.2,https\r\n\
                   2025-12-22T09:00:03Z,web-01,InboundConnectionAccepted,203.0.113.3,443\r\n";
        let p = file_with(&dir, "bad.csv", csv.as_bytes());
        let out = run_auto(&p);
        assert_eq!(out.aggregates.stats.events, 2);
        let ex = &out.diagnostics.examples[0];
        assert_eq!(ex.reason, SkipReason::BadPort);
        assert_eq!(ex.location.line, Some(3));
        assert_eq!(
            ex.message,
            r#"field "LocalPort": not a port (0-65535): "https""#
        );
    }

    #[test]
    fn bad_row_in_a_json_array_says_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let doc = format!(
            "[\n{},\n{},\n{}\n]\n",
            good(1),
            good(2).replace("ReportId", "ReportId\":\"x\",\"_"),
            good(3)
        );
        let p = file_with(&dir, "bad-array.json", doc.as_bytes());
        let out = run_auto(&p);
        assert_eq!(out.formats.values().next(), Some(&InputFormat::JsonArray));
        assert_eq!(out.aggregates.stats.events, 2);
        let ex = &out.diagnostics.examples[0];
        assert_eq!(ex.reason, SkipReason::WrongType);
        assert_eq!(ex.location.line, Some(3));
    }

    /// A pretty-printed array, plain (read in memory) and gzip (streamed): the bad row is reported
    /// at the line its object starts on, and the rows around it count.
    #[test]
    fn bad_row_in_a_pretty_array_plain_and_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<serde_json::Value> = [
            good(1),
            good(2).replace("203.0.113.3", "not-an-ip"),
            good(3),
        ]
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
        let doc = serde_json::to_string_pretty(&rows).unwrap();
        // The bad row is the second element: the line of the second object's `{`.
        let want_line = doc
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim() == "{")
            .nth(1)
            .map(|(i, _)| i as u64 + 1);
        assert!(want_line > Some(5), "{doc}");
        let plain = file_with(&dir, "pretty.json", doc.as_bytes());
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(doc.as_bytes()).unwrap();
        let gz = file_with(&dir, "pretty.json.gz", &enc.finish().unwrap());
        for p in [plain, gz] {
            let out = run_auto(&p);
            assert_eq!(out.aggregates.stats.events, 2, "{}", p.display());
            let ex = &out.diagnostics.examples[0];
            assert_eq!(ex.reason, SkipReason::BadIp);
            assert_eq!(ex.location.line, want_line, "{}", p.display());
            assert_eq!(
                ex.message,
                r#"field "RemoteIP": not an IP address: "not-an-ip""#
            );
        }
    }
}

/// Bins sealed and handed on while reading (`lateness`): the same bins as keeping all, each
/// handed on once and in time order; events behind the horizon counted where they were.
mod sealing {
    use super::*;
    use floodwatch_ingest::ingest_into;

    /// One file per hour from 08:00, each a row a minute for two devices.
    fn hourly(dir: &tempfile::TempDir, hours: &[u32]) -> Vec<PathBuf> {
        hours
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let mut text = String::new();
                for m in 0..60u32 {
                    for d in 1..=2 {
                        text.push_str(&format!(
                            r#"{{"Timestamp":"2025-12-22T{h:02}:{m:02}:07Z","DeviceName":"web-0{d}","ActionType":"InboundConnectionAccepted","RemoteIP":"203.0.113.{}","LocalPort":443,"ReportId":{}}}"#,
                            m + 1,
                            h * 1000 + m * 10 + d
                        ));
                        text.push('\n');
                    }
                }
                let p = dir.path().join(format!("{i:02}-h{h:02}.json"));
                std::fs::write(&p, text).unwrap();
                p
            })
            .collect()
    }

    fn read(
        paths: &[PathBuf],
        lateness: Option<i64>,
        threads: usize,
    ) -> (Vec<Aggregates>, IngestOutput) {
        let o = IngestOptions {
            lateness,
            threads,
            ..opts(InputFormat::Auto)
        };
        let mut chunks = Vec::new();
        let out = ingest_into(paths, &o, &make, &mut |c| chunks.push(c)).unwrap();
        let mut all = out.rest;
        for c in &chunks {
            all.merge(c.clone());
        }
        (
            chunks,
            IngestOutput {
                aggregates: all,
                diagnostics: out.diagnostics,
                formats: out.formats,
            },
        )
    }

    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn in_order_input_is_handed_on_as_it_completes_with_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = hourly(&dir, &[8, 9, 10, 11, 12, 13]);
        let (none, kept) = read(&paths, None, 1);
        assert!(none.is_empty());
        for threads in [1, 3] {
            let (chunks, sealed) = read(&paths, Some(HOUR), threads);
            // After each file from the second on, bins more than an hour behind that file's
            // oldest event are complete: 08:00-09:00 after the 10:00 file, and so on.
            assert_eq!(chunks.len(), 4, "{threads} threads");
            let mut floor = i64::MIN;
            for c in &chunks {
                assert_eq!(c.bins.len(), 2 * 12, "an hour of two devices");
                let lo = c.bins.keys().map(|k| k.bin).min().unwrap();
                assert!(lo >= floor, "chunks come in time order");
                floor = c.bins.keys().map(|k| k.bin).max().unwrap() + 1;
            }
            assert_eq!(
                chunks[0].bins.keys().map(|k| k.bin).min(),
                Some(bin("2025-12-22T08:00:00Z"))
            );
            assert_eq!(sealed.aggregates.by_name(), kept.aggregates.by_name());
            assert_eq!(sealed.aggregates.stats, kept.aggregates.stats);
            assert_eq!(sealed.diagnostics, kept.diagnostics);
        }
    }

    #[test]
    fn reverse_order_input_keeps_every_bin_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let paths = hourly(&dir, &[13, 12, 11, 10, 9, 8]);
        let (chunks, sealed) = read(&paths, Some(HOUR), 2);
        assert!(chunks.is_empty());
        assert_eq!(sealed.aggregates.stats.events, 6 * 120);
        assert_eq!(sealed.aggregates.stats.late, 0);
    }

    #[test]
    fn an_hour_read_after_later_hours_is_late_counted_and_located() {
        let dir = tempfile::tempdir().unwrap();
        // 09:00 comes again (new ReportIds) after 12:00, three hours behind.
        let mut paths = hourly(&dir, &[8, 9, 10, 11, 12]);
        let again = dir.path().join("99-again.json");
        let text = std::fs::read_to_string(&paths[1])
            .unwrap()
            .replace("\"ReportId\":9", "\"ReportId\":7");
        std::fs::write(&again, text).unwrap();
        paths.push(again.clone());
        let (_, sealed) = read(&paths, Some(HOUR), 2);
        let d = &sealed.diagnostics;
        assert_eq!(d.count(SkipReason::Late), 120);
        assert_eq!(sealed.aggregates.stats.late, 120);
        assert_eq!(sealed.aggregates.stats.events, 5 * 120);
        let first = d
            .examples
            .iter()
            .find(|e| e.reason == SkipReason::Late)
            .unwrap();
        assert_eq!(first.location.source, again.display().to_string());
        assert_eq!(first.location.line, Some(1));
        assert!(
            first.message.contains("lateness horizon"),
            "{}",
            first.message
        );
        // Keeping every bin, the same hour counts.
        let (_, kept) = read(&paths, None, 2);
        assert_eq!(kept.aggregates.stats.events, 6 * 120);
        assert_eq!(kept.diagnostics.count(SkipReason::Late), 0);
    }
}

/// Action types, other tables, wrapped records and forced formats, as every reader sees them.
mod signals {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn row(action: &str, n: u32, af: &str) -> String {
        format!(
            r#"{{"Timestamp":"2025-12-22T09:00:{:02}Z","DeviceName":"web-01","ActionType":"{action}","RemoteIP":"203.0.113.{}","RemotePort":{},"LocalIP":"10.0.0.4","LocalPort":443,"Protocol":"Tcp","ReportId":{n},"AdditionalFields":{af}}}"#,
            n % 60,
            n % 250 + 1,
            50_000 + n
        )
    }

    /// The classes of Defender's inbound handshake rows, through NDJSON (the fast path) and a
    /// JSON array (the general parser) alike; unknown action types are read, counted by name
    /// and feed no class.
    #[test]
    fn handshake_rows_and_unknown_action_types() {
        let syn = r#""{\"Tcp Flags\":2,\"Packet Size\":60}""#;
        let synack = r#""{\"Tcp Flags\":18,\"Packet Size\":60}""#;
        let mut rows = Vec::new();
        for n in 0..10 {
            rows.push(row("InboundConnectionAttempt", n, syn));
            rows.push(row("InboundConnectionAcknowledged", 100 + n, synack));
        }
        for n in 0..3 {
            rows.push(row("InboundConnectionSurprised", 200 + n, "null"));
        }
        rows.push(row("ZzNewAction", 300, "null"));
        let dir = tempfile::tempdir().unwrap();
        let nd = file(&dir, "a.json", &(rows.join("\n") + "\n"));
        let arr = file(&dir, "b.json", &format!("[\n{}\n]\n", rows.join(",\n")));
        for p in [nd, arr] {
            let out = run_auto(&p);
            let d = &out.diagnostics;
            assert_eq!(d.total_skipped(), 0, "{:?}", d.examples);
            assert_eq!(out.aggregates.stats.events, 24);
            let bin = out.aggregates.by_name();
            let b = bin[&("web-01".to_owned(), super::bin("2025-12-22T09:00:00Z"))];
            assert_eq!(b.class(Class::Syn).count, 10, "SYNs once, SYN/ACKs not");
            let total: u64 = Class::ALL.iter().map(|c| b.class(*c).count).sum();
            assert_eq!(total, 10, "{}", p.display());
            assert_eq!(
                d.unknown_actions.to_string(),
                "InboundConnectionSurprised 3, ZzNewAction 1"
            );
        }
    }

    /// Wrapped records (a Splunk HEC `body`, a harness's `input.message` string) are read from
    /// inside and counted by wrapper; a wrapper with no row in it is named in the skip.
    #[test]
    fn wrapped_records_are_read_and_counted() {
        let inner = row("InboundConnectionAccepted", 1, "null");
        let lines = [
            format!(r#"{{"body":{inner},"sourcetype":"mscs:defender"}}"#),
            format!(
                r#"{{"input":{{"message":{}}},"expected":{{"event":{{"kind":"event"}}}}}}"#,
                serde_json::Value::from(row("InboundConnectionAccepted", 2, "null"))
            ),
            row("InboundConnectionAccepted", 3, "null"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "w.json", &(lines.join("\n") + "\n"));
        let out = run_auto(&p);
        assert_eq!(
            out.aggregates.stats.events, 3,
            "{:?}",
            out.diagnostics.examples
        );
        assert_eq!(
            out.diagnostics.wrapped.to_string(),
            "body 1, input.message 1"
        );
        assert_eq!(out.diagnostics.total_skipped(), 0);
    }

    /// A forced format that does not fit the content is warned about, with where.
    #[test]
    fn a_forced_format_that_does_not_fit_warns() {
        let nd = fixtures().join("ndjson.json");
        let out = run(std::slice::from_ref(&nd), &opts(InputFormat::DefenderCsv));
        let d = &out.diagnostics;
        assert_eq!(d.warnings_total, 1);
        let w = &d.warnings[0];
        assert_eq!(w.location.source, nd.display().to_string());
        assert_eq!((w.location.line, w.location.offset), (Some(1), Some(0)));
        assert_eq!(
            w.message,
            "--input-format defender-csv was forced, but the content looks like ndjson; read as defender-csv"
        );
        // Forcing a shape the content has, or one read the same way, is not warned about.
        for (file, f) in [
            ("ndjson.json", InputFormat::Ndjson),
            ("storage.json", InputFormat::Ndjson),
            ("sentinel.csv", InputFormat::DefenderCsv),
        ] {
            let out = run(&[fixtures().join(file)], &opts(f));
            assert_eq!(out.diagnostics.warnings_total, 0, "{file}");
        }
    }
}

/// JSON documents take the rows of their row arrays through the parallel fast path: the same
/// rows as NDJSON give the same aggregates and skips, whatever the shape, compression, size
/// (many decoded blocks) and thread count, and a skipped row says where its element starts.
mod documents {
    use super::*;

    /// Row `n`: one in 97 has a bad IP, one in 89 a wrong type, one in 101 carries its row in a
    /// Splunk `body`, a tenth are from a second device; one in 50 repeats the row 40 before it.
    fn rows(count: u32) -> Vec<String> {
        (0..count)
            .map(|i| {
                let n = if i % 50 == 49 { i - 40 } else { i };
                let ip = if n % 97 == 13 {
                    "nope".to_owned()
                } else {
                    format!("203.0.{}.{}", n / 250 % 250, n % 250 + 1)
                };
                let port = if n % 89 == 7 { r#""x""# } else { "443" };
                let row = format!(
                    r#"{{"Timestamp":"2025-12-22T{:02}:{:02}:{:02}.{:07}Z","DeviceId":"ab","DeviceName":"web-{:02}.contoso.com","ActionType":"InboundConnectionAccepted","RemoteIP":"{ip}","RemotePort":{},"LocalIP":"10.0.0.4","LocalPort":{port},"Protocol":"Tcp","ReportId":{n},"AdditionalFields":"{{\"x\":1}}"}}"#,
                    9 + n / 20_000,
                    n / 400 % 60,
                    n / 7 % 60,
                    n,
                    n % 10 / 9,
                    1024 + n % 60_000
                );
                if n % 101 == 3 {
                    format!(r#"{{"body":{row},"sourcetype":"x"}}"#)
                } else {
                    row
                }
            })
            .collect()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn documents_read_their_rows_as_ndjson_does() {
        let dir = tempfile::tempdir().unwrap();
        // Some 40 MB: several of the 16 MiB blocks a stream is read in.
        let rows = rows(110_000);
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let nd = write("rows.ndjson", (rows.join("\n") + "\n").as_bytes());
        let array = format!("[{}]", rows.join(","));
        let pretty = format!("[\n  {}\n]\n", rows.join(",\n  "));
        let api = format!(
            r#"{{"Stats":{{"ExecutionTime":1.0}},"Schema":[{{"Name":"Timestamp","Type":"DateTime"}}],"Results":[{}]}}"#,
            rows.join(",")
        );
        let docs = [
            (
                "array.json.gz",
                gz(array.as_bytes()),
                InputFormat::JsonArray,
            ),
            (
                "pretty.json.gz",
                gz(pretty.as_bytes()),
                InputFormat::JsonArray,
            ),
            (
                "api.json.gz",
                gz(api.as_bytes()),
                InputFormat::AdvancedHuntingApi,
            ),
            (
                "api.json",
                api.clone().into_bytes(),
                InputFormat::AdvancedHuntingApi,
            ),
        ];
        for threads in [1, 2] {
            let o = IngestOptions {
                threads,
                ..opts(InputFormat::Auto)
            };
            let want = run(std::slice::from_ref(&nd), &o);
            assert!(want.aggregates.stats.duplicates > 2000);
            assert!(want.diagnostics.total_skipped() > 2000);
            for (name, bytes, format) in &docs {
                let p = write(name, bytes);
                let got = run(std::slice::from_ref(&p), &o);
                let at = format!("{name}, {threads} threads");
                assert_eq!(got.formats.values().next(), Some(format), "{at}");
                if threads == 1 {
                    assert_eq!(got.aggregates.by_name(), want.aggregates.by_name(), "{at}");
                } else {
                    // Cut between the threads elsewhere than the lines are: the same bins but
                    // for the heavy-hitter summaries, which merge within their error bound.
                    let strip = |a: &Aggregates| {
                        let mut a = a.clone();
                        for b in a.bins.values_mut() {
                            b.top = Default::default();
                        }
                        a
                    };
                    let (g, w) = (strip(&got.aggregates), strip(&want.aggregates));
                    assert!(g.by_name() == w.by_name(), "{at}");
                }
                assert_eq!(got.aggregates.stats, want.aggregates.stats, "{at}");
                let (g, w) = (&got.diagnostics, &want.diagnostics);
                assert_eq!(g.records_read, w.records_read, "{at}");
                assert_eq!(g.skipped, w.skipped, "{at}");
                assert_eq!(g.wrapped, w.wrapped, "{at}");
                // Each example names the element it skipped: its offset is where the element's
                // text starts in the (decompressed) document, on the line given.
                let text = if name.starts_with("pretty") {
                    &pretty
                } else if name.starts_with("array") {
                    &array
                } else {
                    &api
                };
                assert!(!g.examples.is_empty(), "{at}");
                for ex in &g.examples {
                    let off = ex.location.offset.unwrap() as usize;
                    assert!(text[off..].starts_with("{\"Timestamp\""), "{at}: {ex}");
                    let line = text.as_bytes()[..off]
                        .iter()
                        .filter(|&&c| c == b'\n')
                        .count();
                    assert_eq!(ex.location.line, Some(line as u64 + 1), "{at}: {ex}");
                }
            }
        }
    }

    /// A document that breaks off (a cut stream) or breaks (a syntax error): the rows before
    /// count, and the break is reported once, with where.
    #[test]
    fn a_broken_document_keeps_what_came_before() {
        let dir = tempfile::tempdir().unwrap();
        // Good rows only, so the break is among the examples kept.
        let rows: Vec<String> = rows(3000)
            .into_iter()
            .filter(|r| !r.contains("nope") && !r.contains(r#""x""#) && !r.contains("body"))
            .collect();
        let array = format!("[{}]", rows.join(","));
        let cut_at = array.len() / 2;
        let cut = gz(array.as_bytes());
        let p = dir.path().join("cut.json.gz");
        std::fs::write(&p, &cut[..cut.len() * 6 / 10]).unwrap();
        let out = run_auto(&p);
        let d = &out.diagnostics;
        assert_eq!(d.count(SkipReason::Truncated), 1, "{:?}", d.examples);
        assert_eq!(d.count(SkipReason::Malformed), 0, "{:?}", d.examples);
        assert!(out.aggregates.stats.events > 1000);
        let at = cut_at + array[cut_at..].find("},{\"Timestamp\"").unwrap() + 1;
        let broken = format!("{}x{}", &array[..at], &array[at..]);
        let p = dir.path().join("broken.json");
        std::fs::write(&p, &broken).unwrap();
        let out = run_auto(&p);
        let d = &out.diagnostics;
        assert_eq!(d.count(SkipReason::Malformed), 1, "{:?}", d.examples);
        let ex = d
            .examples
            .iter()
            .find(|e| e.reason == SkipReason::Malformed)
            .unwrap();
        let off = ex.location.offset.unwrap() as usize;
        assert_eq!(off, at, "{ex}");
        assert!(ex.message.starts_with("JSON: "), "{ex}");
        // Every row before the break is read (and the break counted as one record).
        let before = broken[..off].matches("\"ReportId\"").count() as u64;
        assert_eq!(d.records_read, before + 1);
    }
}
