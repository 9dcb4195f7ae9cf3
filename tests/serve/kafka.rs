//! Over Kafka, against a real broker (tansu, one per test on a free loopback port): simulated
//! Defender telemetry as Event Hubs bodies keyed by device on a four-partition topic.
//!
//! - the live bin alerts equal `floodwatch detect`'s on the same data, and every record is
//!   counted once;
//! - a restart (SIGTERM while reading, group offsets then rewound as if the last Kafka commit
//!   had been lost) neither loses nor double-counts anything;
//! - two instances in one consumer group split the partitions between them.
//!
//! The server runs with the default lateness (2 minutes). Partitions are read in whatever order
//! the broker hands them out (a backlog comes up to 1 MiB per partition at a time, hours of
//! event time at this volume): the watermark follows the slowest partition, so what a
//! partition read later holds is not late. A last "clock" row on every partition, far in the
//! future, closes every bin.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodwatch_serve::sources::kafka::rdkafka;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{Value, json};

use super::*;

const TOPIC: &str = "insights-logs-advancedhunting-devicenetworkevents";
const PARTITIONS: i32 = 4;
/// Longer than the data's three hours: no partition's events can be late for another's.
const LATENESS: &str = "2m";
/// Six hours and ten minutes after the data's end: its watermark passes every data bin.
const CLOCK_ROW_TIME: &str = "2025-12-22T09:10:00.0000000Z";
const CLOCK_DEVICE: &str = "zz-clock.contoso.com";

// ---- the broker ----

/// A tansu broker with in-memory storage on a free port of 127.0.0.1, killed on drop.
struct Broker {
    child: Child,
    addr: String,
    /// The next offset of every partition, from the delivery reports of what the tests sent.
    /// (tansu 0.6 answers ListOffsets for the latest offset with wrong numbers, so the
    /// partitions' high watermarks cannot be asked for.)
    end: Arc<Mutex<BTreeMap<i32, i64>>>,
}

/// Records the offset after each delivered message, and any delivery error.
struct Deliveries {
    end: Arc<Mutex<BTreeMap<i32, i64>>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(m) => {
                let mut end = self.end.lock().expect("lock");
                let e = end.entry(m.partition()).or_insert(0);
                *e = (*e).max(m.offset() + 1);
            }
            Err((e, _)) => self.failed.lock().expect("lock").push(e.to_string()),
        }
    }
}

/// tansu on PATH, else where `cargo install` puts it.
fn tansu() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("tansu"))
            .find(|f| f.is_file())
    });
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let installed = cargo_home
        .map(|h| h.join("bin/tansu"))
        .filter(|f| f.is_file());
    match on_path.or(installed) {
        Some(t) => t,
        None => panic!("the Kafka broker `tansu` is not installed: run `bash .ci/kafka.sh`"),
    }
}

impl Broker {
    fn start(log: &Path) -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(log).expect("broker log");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("broker log"))
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        let b = Broker {
            child,
            addr: format!("127.0.0.1:{port}"),
            end: Arc::default(),
        };
        wait_for(15, "tansu to listen", || {
            TcpStream::connect(&b.addr).is_ok()
        });
        b
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addr);
        c
    }

    /// Through the Kafka admin API (CreateTopics), as one would on any Kafka.
    fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.config().create().expect("admin client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let r = rt
            .block_on(admin.create_topics(&[topic], &opts))
            .expect("CreateTopics answered");
        assert!(r.iter().all(|x| x.is_ok()), "create topic {name}: {r:?}");
    }

    /// Sends `(partition, key, value)` in order and waits until the broker has them all.
    fn produce(&self, messages: &[(i32, String, String)]) {
        let ctx = Deliveries {
            end: self.end.clone(),
            failed: Mutex::default(),
        };
        let p: ThreadedProducer<Deliveries> = self
            .config()
            .set("linger.ms", "5")
            .set("message.max.bytes", "4000000")
            .create_with_context(ctx)
            .expect("producer");
        for (partition, key, value) in messages {
            let mut rec = BaseRecord::to(TOPIC)
                .partition(*partition)
                .key(key)
                .payload(value);
            // A full local queue: wait for deliveries, then send again.
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        assert!(
                            matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::QueueFull)),
                            "produce: {e}"
                        );
                        rec = r;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        p.flush(Duration::from_secs(30))
            .expect("every message delivered");
        let failed = p.context().failed.lock().expect("lock").clone();
        assert!(failed.is_empty(), "deliveries failed: {failed:?}");
    }

    /// The next offset of every partition written to (what a consumer that read everything
    /// is at).
    fn end_offsets(&self) -> BTreeMap<i32, i64> {
        self.end.lock().expect("lock").clone()
    }

    /// A consumer that is a member of nothing but speaks for `group` (committed offsets).
    fn group_client(&self, group: &str) -> BaseConsumer {
        self.config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer")
    }

    fn committed(&self, group: &str) -> BTreeMap<i32, Option<i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(TOPIC, p);
        }
        let got = self
            .group_client(group)
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), Some(o)),
                _ => (e.partition(), None),
            })
            .collect()
    }

    /// Moves the group's committed offsets back to the start, as if every commit to Kafka had
    /// been lost (the group must have no members then).
    fn rewind(&self, group: &str) {
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(TOPIC, p, Offset::Offset(0))
                .expect("partition offset");
        }
        self.group_client(group)
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("commit offsets 0");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the data ----

/// Three hours of the bench profile (one HTTPS flood at 02:10) at a fiftieth of its volume,
/// as Event Hubs bodies, repacked one device per message and sent to that device's partition.
struct Feed {
    /// `(partition, device, body)` in event-time order per device.
    messages: Vec<(i32, String, String)>,
    /// The same data as files, for `detect`: the simulator's bodies and the clock row.
    data: PathBuf,
    clock: PathBuf,
    /// One per partition: each partition's event time must pass the last bins.
    clock_rows: Vec<String>,
    records: u64,
}

fn feed(dir: &Path) -> Feed {
    std::fs::create_dir_all(dir).expect("feed dir");
    let data = dir.join("sim.json");
    let st = Command::new(env!("CARGO_BIN_EXE_floodwatch"))
        .args([
            "simulate",
            "--profile",
            "bench",
            "--hours",
            "3",
            "--scale",
            "0.02",
        ])
        .args([
            "--seed",
            "7",
            "--start",
            "2025-12-22T00:00:00Z",
            "--format",
            "eventhubs",
        ])
        .arg("--out")
        .arg(&data)
        .status()
        .expect("simulate runs");
    assert!(st.success());
    let text = std::fs::read_to_string(&data).expect("simulated data");
    let mut devices: BTreeMap<String, i32> = BTreeMap::new();
    let mut messages = Vec::new();
    let mut records = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let body: Value = serde_json::from_str(line).expect("an Event Hubs body");
        let mut by_device: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in body["records"].as_array().expect("records") {
            let d = r["properties"]["DeviceName"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            by_device.entry(d).or_default().push(r.clone());
            records += 1;
        }
        for (d, rs) in by_device {
            let next = devices.len() as i32;
            let partition = *devices.entry(d.clone()).or_insert(next % PARTITIONS);
            let body = json!({ "records": rs });
            // Some bodies pretty-printed, as some exporters write them: one message, many lines.
            let text = if messages.len() % 5 == 0 {
                serde_json::to_string_pretty(&body)
            } else {
                serde_json::to_string(&body)
            };
            messages.push((partition, d, text.expect("JSON")));
        }
    }
    let used: BTreeSet<i32> = devices.values().copied().collect();
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "devices {devices:?} leave a partition empty"
    );
    let clock_row = |p: i32| {
        json!({
            "Timestamp": CLOCK_ROW_TIME,
            "DeviceId": "ffffffffffffffffffffffffffffffffffffffff",
            "DeviceName": CLOCK_DEVICE,
            "ActionType": "ConnectionSuccess",
            "RemoteIP": "10.9.9.9",
            "RemotePort": 443,
            "LocalIP": "10.9.9.10",
            "LocalPort": 50000,
            "Protocol": "Tcp",
            "ReportId": 1 + p,
        })
        .to_string()
    };
    let clock_rows: Vec<String> = (0..PARTITIONS).map(clock_row).collect();
    let clock = dir.join("clock.ndjson");
    std::fs::write(&clock, clock_rows.join("\n") + "\n").expect("clock rows");
    Feed {
        messages,
        data,
        clock,
        clock_rows,
        records,
    }
}

/// `detect -o jsonl` over the data and the clock row.
fn detect(f: &Feed) -> Vec<Value> {
    super::detect_jsonl(&[&f.data, &f.clock], &[])
}

// ---- the server ----

fn serve(broker: &Broker, state: &Path, group: &str, sink: &Path) -> Server {
    let input = format!("kafka://{}/{TOPIC}?group={group}", broker.addr);
    let notify = format!("jsonl:{}", sink.display());
    Server::start(
        state,
        &[
            "--input",
            &input,
            "--allow-source",
            ALLOW,
            "--lateness",
            LATENESS,
            // No wall-clock advance: what is sealed depends on the data alone.
            "--idle-close",
            "10m",
            "--log-json",
            "--notify",
            &notify,
        ],
    )
}

fn input(p: i32) -> String {
    format!("kafka:{TOPIC}/{p}")
}

/// Each Kafka input's position (the next offset) as the server reports it.
fn positions(s: &Server) -> BTreeMap<i32, i64> {
    let v = s.get_json("/api/inputs");
    (0..PARTITIONS)
        .filter_map(|p| {
            let pos = v["inputs"][input(p)]["position"].as_str()?.parse().ok()?;
            Some((p, pos))
        })
        .collect()
}

fn wait_positions(s: &Server, end: &BTreeMap<i32, i64>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let at = positions(s);
        if &at == end {
            return;
        }
        if std::time::Instant::now() > deadline {
            let log = s.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "after 60 s the partitions are at {at:?}, not at their ends {end:?}; server log (last lines first):\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sum over the Kafka inputs of one counter of `/api/inputs`.
fn total(s: &Server, field: &str) -> u64 {
    let v = s.get_json("/api/inputs");
    (0..PARTITIONS)
        .map(|p| v["inputs"][input(p)][field].as_u64().unwrap_or(0))
        .sum()
}

fn late(s: &Server) -> u64 {
    let v = s.get_json("/api/inputs");
    v["late"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// Waits until the server has read every partition to its end, then sends the clock row
/// (which closes every bin) and waits for it too; the bin alerts.
fn run_to_end(broker: &Broker, s: &Server, f: &Feed) -> Vec<Value> {
    wait_positions(s, &broker.end_offsets());
    let rows: Vec<(i32, String, String)> = f
        .clock_rows
        .iter()
        .enumerate()
        .map(|(p, r)| (p as i32, CLOCK_DEVICE.to_owned(), r.clone()))
        .collect();
    broker.produce(&rows);
    wait_positions(s, &broker.end_offsets());
    s.alerts("bin")
}

fn keys(alerts: &[Value]) -> Vec<(String, String, String, bool, String)> {
    let mut k: Vec<_> = alerts.iter().map(key).collect();
    k.sort();
    k
}

// ---- the tests ----

/// The live bin alerts are the batch run's. Compared on TimeGenerated, DeviceName, Vector,
/// Suppressed and Severity ([`key`]); the counts, scores and reasons follow from the same bin
/// aggregates through the same code, while AlertId, Stage and DetectedAt exist only live.
#[test]
fn kafka_bin_alerts_equal_detect_and_every_record_counts_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = feed(dir.path());
    let expected = detect(&f);
    assert!(
        expected.iter().any(|a| a["Suppressed"] == false),
        "the data should hold an attack: {expected:?}"
    );
    let broker = Broker::start(&dir.path().join("broker.log"));
    broker.create_topic(TOPIC, PARTITIONS);
    broker.produce(&f.messages);
    let s = serve(
        &broker,
        &dir.path().join("state"),
        "fw",
        &dir.path().join("alerts.jsonl"),
    );
    let alerts = run_to_end(&broker, &s, &f);
    assert_eq!(
        keys(&alerts),
        keys(&expected),
        "bin alerts differ from detect's"
    );
    assert_eq!(
        total(&s, "records"),
        f.records + PARTITIONS as u64,
        "records read once each"
    );
    assert_eq!(late(&s), 0, "late events");
    for a in &alerts {
        assert_eq!(a["Stage"], "bin");
        assert!(a["AlertId"].as_str().is_some_and(|s| !s.is_empty()));
    }
}

/// Stopped while reading, then its last Kafka commits lost: the second run resumes from the
/// positions in its state, so every record is read once and the bin alerts are the
/// uninterrupted run's. (Not the `/api/state` digest: which partition is read first and where
/// batches are cut (100 ms of arrival) change from run to run, and the detector's state
/// depends on that somewhere; two uninterrupted runs sometimes differ there too.)
#[test]
fn kafka_restart_after_sigterm_and_lost_commits_counts_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = feed(dir.path());
    let broker = Broker::start(&dir.path().join("broker.log"));
    broker.create_topic(TOPIC, PARTITIONS);
    let half = f.messages.len() / 2;
    broker.produce(&f.messages[..half]);

    let mut s = serve(
        &broker,
        &dir.path().join("b"),
        "b",
        &dir.path().join("b.jsonl"),
    );
    // SIGTERM as soon as it has made anything durable: usually mid-way through the half.
    let mut at = BTreeMap::new();
    wait_for(60, "the first batches to be durable", || {
        at = positions(&s);
        !at.is_empty()
    });
    s.terminate();
    let committed = broker.committed("b");
    let moved: Vec<i32> = committed
        .iter()
        .filter(|(_, c)| c.is_some_and(|o| o > 0))
        .map(|(p, _)| *p)
        .collect();
    assert!(
        !moved.is_empty(),
        "no committed offset moved: {committed:?}"
    );
    for (p, c) in &committed {
        // Never ahead of what the server had made durable by the time it stopped.
        assert!(
            c.unwrap_or(0) <= broker.end_offsets()[p],
            "partition {p}: {c:?}"
        );
    }
    // As if the server had crashed between its database commit and its Kafka commits.
    broker.rewind("b");
    broker.produce(&f.messages[half..]);
    s.restart();
    let interrupted = run_to_end(&broker, &s, &f);
    let records = total(&s, "records");
    assert_eq!(late(&s), 0, "late events");
    s.terminate();
    let end = broker.end_offsets();
    let committed = broker.committed("b");
    for (p, e) in &end {
        assert_eq!(committed[p], Some(*e), "partition {p} committed at the end");
    }

    // The uninterrupted run, on its own state and group, of the same messages (the clock
    // row included).
    let a = serve(
        &broker,
        &dir.path().join("a"),
        "a",
        &dir.path().join("a.jsonl"),
    );
    wait_positions(&a, &broker.end_offsets());
    let whole = a.alerts("bin");
    assert_eq!(
        records,
        f.records + PARTITIONS as u64,
        "records read once each across the restart"
    );
    assert_eq!(total(&a, "records"), f.records + PARTITIONS as u64);
    assert!(!whole.is_empty());
    assert_eq!(
        keys(&interrupted),
        keys(&whole),
        "alerts differ from the uninterrupted run"
    );
}

/// Two instances in one group: each reads its own share of the partitions, together all.
#[test]
fn kafka_two_instances_in_one_group_split_the_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = feed(dir.path());
    let broker = Broker::start(&dir.path().join("broker.log"));
    broker.create_topic(TOPIC, PARTITIONS);
    let one = serve(
        &broker,
        &dir.path().join("one"),
        "shared",
        &dir.path().join("1.jsonl"),
    );
    let two = serve(
        &broker,
        &dir.path().join("two"),
        "shared",
        &dir.path().join("2.jsonl"),
    );
    // Nothing is produced before the group has settled: what each reads is then its share.
    let mut shares = [BTreeSet::new(), BTreeSet::new()];
    wait_for(
        60,
        "both instances in the group, each with partitions",
        || {
            shares = [assigned(&one), assigned(&two)];
            !shares[0].is_empty() && !shares[1].is_empty() && shares[0].is_disjoint(&shares[1])
        },
    );
    broker.produce(&f.messages);
    let end = broker.end_offsets();
    let mut seen: [BTreeMap<i32, i64>; 2] = Default::default();
    wait_for(
        60,
        "the two instances to read every partition to its end",
        || {
            seen = [positions(&one), positions(&two)];
            let mut all = seen[0].clone();
            all.extend(seen[1].clone());
            all == end
        },
    );
    let (a, b): (BTreeSet<i32>, BTreeSet<i32>) = (
        seen[0].keys().copied().collect(),
        seen[1].keys().copied().collect(),
    );
    assert!(
        !a.is_empty() && !b.is_empty(),
        "one instance read nothing: {a:?} {b:?}"
    );
    assert!(a.is_disjoint(&b), "both read some partition: {a:?} {b:?}");
    let union: BTreeSet<i32> = a.union(&b).copied().collect();
    assert_eq!(union, (0..PARTITIONS).collect(), "{a:?} {b:?}");
    assert_eq!(total(&one, "records") + total(&two, "records"), f.records);
}

/// The partitions the server says (in its JSON log) it was last given; none after a
/// revocation until the next assignment. (tansu 0.6 answers DescribeGroups with no groups, so
/// the broker cannot be asked.)
fn assigned(s: &Server) -> BTreeSet<i32> {
    let mut last = BTreeSet::new();
    for line in s.log_text().lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let f = &v["fields"];
        match f["message"].as_str() {
            Some("kafka: partitions assigned") => {
                last = f["partitions"]
                    .as_str()
                    .unwrap_or("")
                    .trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .filter_map(|x| x.trim().parse().ok())
                    .collect();
            }
            Some("kafka: partitions revoked") => last.clear(),
            _ => {}
        }
    }
    last
}
