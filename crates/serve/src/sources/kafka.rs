//! Kafka and Event Hubs (through its Kafka endpoint): one consumer in a consumer group.
//!
//! Messages are gathered per partition into batches of lines (up to [`BATCH_BYTES`] or
//! [`BATCH_WAIT`] after the batch's first message, whichever comes first), read by that
//! partition's own [`LineReader`] and handed to the engine. A partition's offset is stored
//! and committed to the group only once the engine has answered that the batch is durable in
//! the state database, so the group's committed offset is never ahead of what the service
//! keeps. It can be behind (a crash between the database commit and the Kafka commit): the
//! database also keeps each partition's position, and messages below it are skipped when the
//! group hands the partition back. Together that is what makes a restart neither lose nor
//! count twice.
//!
//! Backpressure is the engine's bounded queue: while a batch waits for it, the consumer is
//! not polled, librdkafka's local queue fills up to `queued.max.messages.kbytes` and fetching
//! stops.
//!
//! One input is named `kafka:TOPIC/PARTITION` (an Event Hubs hub is the topic), in
//! `/api/inputs` and in skip locations; its position is the next offset to read. Because the
//! stored position wins over a lower committed offset, rewinding the group to read again
//! needs a fresh state directory too.
//!
//! Partitions are read in the order the broker hands them out. On a backlog (a first start
//! with `auto.offset.reset=earliest`, a restart after downtime) that is up to
//! `max.partition.fetch.bytes` (1 MiB) of one partition, then of the next: at low volume hours
//! of event time apart, and the engine's one watermark then counts what the later partitions
//! hold as late. Live tailing keeps partitions within a fetch of each other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::time::Instant;

use floodwatch_pipeline::LineReader;
use floodwatch_pipeline::reader::Origin;

use super::{InputSpec, SourceCtx};

/// The client crate, for tests and tools that drive a broker with the same librdkafka build.
pub use rdkafka;

/// A partition's batch is handed on once it holds this much.
pub const BATCH_BYTES: usize = 1 << 20;
/// ... or this long after its first message came.
pub const BATCH_WAIT: Duration = Duration::from_millis(100);
/// Pre-fetched messages librdkafka keeps for the whole consumer (all partitions), in KiB: what
/// bounds the memory a backlog can take while the engine is behind.
const QUEUED_MAX_KBYTES: &str = "65536";
/// Longest wait between attempts to hand the engine a batch it could not store.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long the final synchronous commit may take at shutdown (the service waits 10 s for
/// its inputs).
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `spec` (a [`InputSpec::Kafka`] or [`InputSpec::EventHubs`]) until `ctx.shutdown`.
pub async fn run(spec: InputSpec, ctx: SourceCtx) -> Result<()> {
    let conn = Connection::from_spec(&spec)?;
    let what = conn.label.clone();
    let shared = Arc::new(Mutex::new(Assignment::default()));
    let context = GroupContext {
        what: what.clone(),
        topic: conn.topic.clone(),
        shared: shared.clone(),
    };
    let consumer: StreamConsumer<GroupContext> = conn
        .config
        .create_with_context(context)
        .with_context(|| format!("{what}: cannot create the consumer"))?;
    consumer
        .subscribe(&[conn.topic.as_str()])
        .with_context(|| format!("{what}: cannot subscribe"))?;
    tracing::info!(input = %what, group = %conn.group, "kafka: subscribed");
    let mut src = Source {
        what,
        topic: conn.topic,
        consumer: Arc::new(consumer),
        shared,
        parts: BTreeMap::new(),
        announced: BTreeSet::new(),
        ctx,
    };
    let result = src.consume().await;
    src.finish().await;
    result
}

/// What the consumer connects to and how, secrets included (so never `Debug`).
struct Connection {
    config: ClientConfig,
    topic: String,
    group: String,
    /// For messages: the broker list or namespace and the topic, no secret.
    label: String,
}

impl Connection {
    fn from_spec(spec: &InputSpec) -> Result<Connection> {
        let mut config = ClientConfig::new();
        let (topic, group, label) = match spec {
            InputSpec::Kafka {
                brokers,
                topic,
                group,
            } => {
                config.set("bootstrap.servers", brokers);
                (topic, group, format!("kafka://{brokers}/{topic}"))
            }
            InputSpec::EventHubs {
                namespace,
                hub,
                group,
                secret,
            } => {
                let label = format!("eventhubs://{namespace}/{hub}");
                let password = secret
                    .read()
                    .map_err(|e| anyhow!("{label}: connection string: {e}"))?;
                // Event Hubs' Kafka endpoint: TLS on 9093, SASL PLAIN with the literal user
                // name `$ConnectionString` and the connection string as the password.
                config
                    .set("bootstrap.servers", format!("{namespace}:9093"))
                    .set("security.protocol", "SASL_SSL")
                    .set("sasl.mechanism", "PLAIN")
                    .set("sasl.username", "$ConnectionString")
                    .set("sasl.password", password)
                    // Azure drops TCP connections idle for 240 s; close them ourselves first
                    // and keep the rest alive, as Microsoft recommends for librdkafka.
                    .set("connections.max.idle.ms", "180000");
                (hub, group, label)
            }
            other => return Err(anyhow!("{other:?} is not a Kafka input")),
        };
        config
            .set("group.id", group)
            .set("client.id", "floodwatch")
            // Offsets move only once the engine has made a batch durable (see the module doc).
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A new group starts at the oldest retained message: a first start catches up on
            // whatever the hub still holds instead of silently starting from now.
            .set("auto.offset.reset", "earliest")
            // Microsoft's values for Event Hubs, fine for Kafka too: a 30 s session with the
            // default 3 s heartbeat, and metadata refreshed before an idle connection is cut.
            .set("session.timeout.ms", "30000")
            .set("heartbeat.interval.ms", "3000")
            .set("metadata.max.age.ms", "180000")
            .set("socket.keepalive.enable", "true")
            // The engine may hold a batch a while (backpressure); 5 min without a poll and the
            // group takes the partitions away (librdkafka's default, kept on purpose).
            .set("max.poll.interval.ms", "300000")
            .set("queued.max.messages.kbytes", QUEUED_MAX_KBYTES);
        Ok(Connection {
            config,
            topic: topic.clone(),
            group: group.clone(),
            label,
        })
    }
}

/// The input name of one partition.
pub fn input_name(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}/{partition}")
}

/// What the rebalance callbacks (run by librdkafka inside `recv`) and the read loop share.
#[derive(Default)]
struct Assignment {
    assigned: BTreeSet<i32>,
    /// Next offset not yet durable, per partition, from this run's acknowledged batches.
    durable: BTreeMap<i32, i64>,
    /// Revoked since the read loop last looked: their batches in hand are dropped (the next
    /// owner reads them from the committed offset).
    revoked: Vec<i32>,
}

fn lock(m: &Mutex<Assignment>) -> MutexGuard<'_, Assignment> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// librdkafka's callbacks: logs to `tracing`, and on revocation a synchronous commit of what
/// is durable, so that the partition's next owner starts right after it.
struct GroupContext {
    what: String,
    topic: String,
    shared: Arc<Mutex<Assignment>>,
}

impl GroupContext {
    fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements().iter().map(|e| e.partition()).collect()
    }

    /// The durable offsets of `partitions`, as a list to commit (None when there are none).
    fn durable_list(&self, a: &Assignment, partitions: &[i32]) -> Option<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            if let Some(&next) = a.durable.get(p)
                && let Err(e) = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(next))
            {
                tracing::warn!(input = %self.what, partition = p, "kafka: {e}");
            }
        }
        (tpl.count() > 0).then_some(tpl)
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        let what = &self.what;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(input = %what, "librdkafka: {fac}: {msg}"),
            RDKafkaLogLevel::Warning => tracing::warn!(input = %what, "librdkafka: {fac}: {msg}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(input = %what, "librdkafka: {fac}: {msg}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(input = %what, "librdkafka: {fac}: {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Mostly transient (a broker restarting, a connection cut); librdkafka retries.
        tracing::warn!(input = %self.what, "kafka: {error}: {reason}");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts = Self::partitions(tpl);
                let commit = {
                    let mut a = lock(&self.shared);
                    for p in &parts {
                        a.assigned.remove(p);
                    }
                    a.revoked.extend(parts.iter().copied());
                    self.durable_list(&a, &parts)
                };
                tracing::info!(input = %self.what, partitions = ?parts, "kafka: partitions revoked");
                // Async commits of these partitions may still be in flight: commit what is
                // durable once more, synchronously, before someone else takes them over.
                if let Some(tpl) = commit
                    && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
                {
                    tracing::warn!(
                        input = %self.what,
                        "kafka: commit on revocation failed ({e}); the next owner may read some messages again"
                    );
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(input = %self.what, "kafka: rebalance: {e}"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts = Self::partitions(tpl);
            lock(&self.shared).assigned.extend(parts.iter().copied());
            tracing::info!(input = %self.what, partitions = ?parts, "kafka: partitions assigned");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            let parts: Vec<(i32, Offset)> = offsets
                .elements()
                .iter()
                .map(|e| (e.partition(), e.offset()))
                .collect();
            tracing::warn!(
                input = %self.what,
                offsets = ?parts,
                "kafka: offset commit failed ({e}); the next commit carries it"
            );
        }
    }
}

/// One partition being read.
struct Part {
    name: String,
    reader: LineReader,
    /// Lines of the messages in hand, each message ending in `\n`.
    buf: Vec<u8>,
    /// Offset of the first message in `buf`, and when it came.
    first: Option<(i64, Instant)>,
    /// The next offset to take: messages below it are already durable (or in `buf`).
    next: i64,
}

struct Source {
    what: String,
    topic: String,
    consumer: Arc<StreamConsumer<GroupContext>>,
    shared: Arc<Mutex<Assignment>>,
    parts: BTreeMap<i32, Part>,
    ctx: SourceCtx,
    /// Partitions announced to the engine since they were assigned.
    announced: BTreeSet<i32>,
}

impl Source {
    /// Until shutdown: messages into batches, batches to the engine.
    async fn consume(&mut self) -> Result<()> {
        let mut shutdown = self.ctx.shutdown.clone();
        let consumer = self.consumer.clone();
        // The same error over and over (a broker down) is logged once per change.
        let mut last_error = String::new();
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let due = self.next_due();
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        // The service dropped the sender: it is going away as well.
                        return Ok(());
                    }
                }
                _ = sleep_until(due) => self.flush_due().await?,
                m = consumer.recv() => {
                    match m {
                        Ok(msg) => {
                            last_error.clear();
                            self.announce().await?;
                            let partition = msg.partition();
                            let offset = msg.offset();
                            self.drop_revoked();
                            let full = self.take(partition, offset, msg.payload().unwrap_or(b""));
                            drop(msg);
                            if full {
                                self.flush(partition).await?;
                            }
                        }
                        Err(e) => {
                            let text = e.to_string();
                            if text != last_error {
                                tracing::warn!(input = %self.what, "kafka: {text}");
                                last_error = text;
                            }
                            // Errors come as events, not in a loop; a short pause all the same
                            // so that a storm of them cannot spin.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }
    }

    /// Shutdown: the batches in hand to the engine, a synchronous commit, the consumer closed.
    async fn finish(mut self) {
        self.drop_revoked();
        let pending: Vec<i32> = self
            .parts
            .iter()
            .filter(|(_, p)| p.first.is_some())
            .map(|(k, _)| *k)
            .collect();
        for p in pending {
            if let Err(e) = self.flush(p).await {
                tracing::warn!(input = %self.what, "kafka: {e:#}");
                break;
            }
        }
        let Source {
            what,
            consumer,
            shared,
            ..
        } = self;
        let commit = {
            let a = lock(&shared);
            let assigned: Vec<i32> = a.assigned.iter().copied().collect();
            consumer.context().durable_list(&a, &assigned)
        };
        let what2 = what.clone();
        // Both block in librdkafka, so off the async threads. Closing (dropping the last
        // reference) leaves the group: the partitions move on at once instead of after the
        // session timeout.
        let blocking = tokio::task::spawn_blocking(move || {
            if let Some(tpl) = commit
                && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
            {
                tracing::warn!(input = %what2, "kafka: final commit failed: {e}");
            }
            drop(consumer);
        });
        match tokio::time::timeout(FINAL_COMMIT_TIMEOUT, blocking).await {
            Ok(Ok(())) => {
                tracing::info!(input = %what, "kafka: offsets committed, consumer closed")
            }
            Ok(Err(e)) => tracing::warn!(input = %what, "kafka: closing the consumer: {e}"),
            Err(_) => tracing::warn!(
                input = %what,
                "kafka: the final commit did not finish within {FINAL_COMMIT_TIMEOUT:?}"
            ),
        }
    }

    /// Forgets the batches in hand of partitions revoked since the last look.
    /// Tells the engine about partitions assigned since the last look, before any of their
    /// messages: the watermark then waits for each of them (a backlog is read partition by
    /// partition, and the first one read must not make the others late) until it delivers or
    /// stays idle.
    async fn announce(&mut self) -> Result<()> {
        let assigned: Vec<i32> = lock(&self.shared).assigned.iter().copied().collect();
        for p in assigned {
            if self.announced.insert(p)
                && let Err(e) = self.ctx.announce(&input_name(&self.topic, p)).await
            {
                // Not fatal: until it is announced the partition simply does not hold the
                // watermark; the next message tries again.
                self.announced.remove(&p);
                tracing::warn!(input = %self.what, partition = p, "kafka: cannot announce the partition: {e}");
                break;
            }
        }
        Ok(())
    }

    fn drop_revoked(&mut self) {
        let revoked = std::mem::take(&mut lock(&self.shared).revoked);
        for p in &revoked {
            self.announced.remove(p);
        }
        for p in revoked {
            if let Some(part) = self.parts.remove(&p)
                && let Some((first, _)) = part.first
            {
                tracing::info!(
                    input = %part.name,
                    "kafka: revoked with offsets {first}..{} in hand: left to the next owner",
                    part.next
                );
            }
        }
    }

    /// Adds one message to its partition's batch. True when the batch is full.
    fn take(&mut self, partition: i32, offset: i64, payload: &[u8]) -> bool {
        let part = match self.parts.entry(partition) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let name = input_name(&self.topic, partition);
                let stored = self.ctx.positions.get(&name).and_then(|s| {
                    let n = s.parse::<i64>().ok();
                    if n.is_none() {
                        tracing::warn!(input = %name, "kafka: stored position {s:?} is not an offset; ignored");
                    }
                    n
                });
                let durable = lock(&self.shared).durable.get(&partition).copied();
                let next = stored.max(durable).unwrap_or(0);
                if next > offset {
                    tracing::info!(
                        input = %name,
                        "kafka: the group resumes at {offset}, the state already holds everything below {next}: skipping to it"
                    );
                }
                v.insert(Part {
                    reader: self.ctx.reader(),
                    name,
                    buf: Vec::new(),
                    first: None,
                    next,
                })
            }
        };
        // Below `next`: already durable (a restart after a crash between the database and the
        // Kafka commit) or a message librdkafka hands out again after a rebalance.
        if offset < part.next {
            return false;
        }
        if part.first.is_none() {
            part.first = Some((offset, Instant::now()));
        }
        part.next = offset + 1;
        push_message(&mut part.buf, payload);
        part.buf.len() >= BATCH_BYTES
    }

    /// When the oldest batch in hand is due.
    fn next_due(&self) -> Option<Instant> {
        self.parts
            .values()
            .filter_map(|p| p.first.map(|(_, at)| at + BATCH_WAIT))
            .min()
    }

    async fn flush_due(&mut self) -> Result<()> {
        self.drop_revoked();
        let now = Instant::now();
        let due: Vec<i32> = self
            .parts
            .iter()
            .filter(|(_, p)| p.first.is_some_and(|(_, at)| at + BATCH_WAIT <= now))
            .map(|(k, _)| *k)
            .collect();
        for p in due {
            self.flush(p).await?;
        }
        Ok(())
    }

    /// Hands partition `p`'s batch to the engine, waits until it is durable (retrying while
    /// the engine cannot store it), then stores and commits the offset after it. `Err` once
    /// the engine is gone for good (the service is stopping without us).
    async fn flush(&mut self, p: i32) -> Result<()> {
        let Some(part) = self.parts.get_mut(&p) else {
            return Ok(());
        };
        let Some((first, _)) = part.first else {
            return Ok(());
        };
        let next = part.next;
        let origin = Origin {
            source: &part.name,
            first_line: 1,
            base_offset: u64::try_from(first).unwrap_or(0),
        };
        // Read once: the reader drops records it has seen (duplicate filter), so a retry
        // must send the same partial again, not read the bytes anew.
        let (partial, diag) = part.reader.read(&part.buf, origin);
        let position = Some(next.to_string());
        let mut wait = Duration::from_millis(500);
        let mut shutdown = self.ctx.shutdown.clone();
        loop {
            let sent = self
                .ctx
                .send_partial(&part.name, partial.clone(), diag.clone(), position.clone())
                .await;
            match sent {
                Ok(_) => break,
                Err(_) if self.ctx.engine.is_closed() => {
                    return Err(anyhow!(
                        "{}: the engine has stopped; offsets {first}..{next} left for the next run",
                        part.name
                    ));
                }
                Err(e) => {
                    tracing::warn!(
                        input = %part.name,
                        "kafka: offsets {first}..{next}: the engine could not store them ({e}); retrying in {wait:?}"
                    );
                    if *shutdown.borrow() {
                        // Not committed, so the next run reads them again: nothing lost.
                        tracing::warn!(input = %part.name, "kafka: shutting down: offsets {first}..{next} left for the next run");
                        part.buf.clear();
                        part.first = None;
                        return Ok(());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => {}
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
        part.buf.clear();
        part.first = None;
        lock(&self.shared).durable.insert(p, next);
        if let Err(e) = self.consumer.store_offset(&self.topic, p, next) {
            // Not assigned any more (taken away meanwhile): the commit below says the same.
            tracing::debug!(input = %part.name, "kafka: storing offset {next}: {e}");
        }
        let mut tpl = TopicPartitionList::new();
        match tpl.add_partition_offset(&self.topic, p, Offset::Offset(next)) {
            Ok(()) => {
                if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                    tracing::warn!(input = %part.name, "kafka: commit of offset {next} failed: {e}");
                }
            }
            Err(e) => tracing::warn!(input = %part.name, "kafka: offset {next}: {e}"),
        }
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Appends one message's value as whole lines. A JSON document spread over several lines (an
/// Event Hubs body written pretty-printed) becomes one line: raw newlines inside JSON can only
/// be whitespace, so they are replaced by spaces. Anything else (NDJSON rows, one or many) is
/// kept line for line. Either way the message ends with a newline, so that message boundaries
/// stay line boundaries.
pub fn push_message(buf: &mut Vec<u8>, value: &[u8]) {
    let v = value.trim_ascii_end();
    if v.is_empty() {
        return;
    }
    if is_multiline_document(v) {
        buf.extend(
            v.iter()
                .map(|&c| if c == b'\n' || c == b'\r' { b' ' } else { c }),
        );
    } else {
        buf.extend_from_slice(v);
    }
    buf.push(b'\n');
}

/// One JSON object or array over several lines, whose first line is not a value on its own.
/// Only a value with a newline that starts with `{` or `[` pays for the full parse.
fn is_multiline_document(v: &[u8]) -> bool {
    let t = v.trim_ascii_start();
    if !matches!(t.first(), Some(b'{' | b'[')) {
        return false;
    }
    let Some(nl) = t.iter().position(|&c| c == b'\n') else {
        return false;
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(&t[..nl]).is_err()
        && serde_json::from_slice::<serde::de::IgnoredAny>(t).is_ok()
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::process::{Child, Command as Process, Stdio};
    use std::sync::RwLock;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use tokio::sync::{mpsc, watch};

    use floodwatch_core::{BinWidth, ClassifyConfig};
    use floodwatch_detect::floodwatch::FloodwatchConfig;
    use floodwatch_detect::seed::SeedConfig;
    use floodwatch_ingest::IngestOptions;
    use floodwatch_pipeline::Settings;
    use floodwatch_pipeline::settings::Rule;

    use super::*;
    use crate::engine::{Ack, Command, Shared};
    use crate::metrics::Metrics;

    // ---- framing ----

    #[test]
    fn a_pretty_printed_body_becomes_one_line() {
        let body = b"{\n  \"records\": [\n    {\"a\": 1},\r\n    {\"a\": 2}\n  ]\n}\n";
        let mut buf = Vec::new();
        push_message(&mut buf, body);
        assert_eq!(buf.iter().filter(|&&c| c == b'\n').count(), 1);
        assert!(buf.ends_with(b"\n"));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["records"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn ndjson_rows_keep_their_lines_and_messages_end_in_a_newline() {
        let mut buf = Vec::new();
        push_message(&mut buf, b"{\"a\":1}\n{\"a\":2}");
        push_message(&mut buf, b"{\"records\":[{\"a\":3}]}");
        push_message(&mut buf, b"");
        push_message(&mut buf, b"  \n");
        assert_eq!(buf, b"{\"a\":1}\n{\"a\":2}\n{\"records\":[{\"a\":3}]}\n");
    }

    #[test]
    fn a_broken_multi_line_message_is_kept_line_for_line() {
        // Not valid JSON as a whole: joining it would turn one bad line into a bad message.
        let mut buf = Vec::new();
        push_message(&mut buf, b"{ oops\n{\"a\":2}\n");
        assert_eq!(buf, b"{ oops\n{\"a\":2}\n");
    }

    #[test]
    fn event_hubs_settings_follow_microsoft_and_never_show_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cs");
        std::fs::write(&file, "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=SECRET\n").unwrap();
        let spec = InputSpec::EventHubs {
            namespace: "ns.servicebus.windows.net".into(),
            hub: "insights-logs-advancedhunting-devicenetworkevents".into(),
            group: "fw".into(),
            secret: crate::sources::Secret::File(file),
        };
        let c = Connection::from_spec(&spec).unwrap();
        let get = |k: &str| c.config.get(k).map(str::to_owned);
        assert_eq!(
            get("bootstrap.servers").as_deref(),
            Some("ns.servicebus.windows.net:9093")
        );
        assert_eq!(get("security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(get("sasl.mechanism").as_deref(), Some("PLAIN"));
        assert_eq!(get("sasl.username").as_deref(), Some("$ConnectionString"));
        assert!(
            get("sasl.password")
                .unwrap()
                .ends_with("SharedAccessKey=SECRET")
        );
        assert_eq!(get("session.timeout.ms").as_deref(), Some("30000"));
        assert_eq!(get("metadata.max.age.ms").as_deref(), Some("180000"));
        assert_eq!(get("enable.auto.commit").as_deref(), Some("false"));
        assert_eq!(c.topic, "insights-logs-advancedhunting-devicenetworkevents");
        assert!(!c.label.contains("SECRET"));
        // librdkafka accepts every key (this build has TLS).
        let consumer: Result<BaseConsumer, _> = c.config.create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }

    // ---- against a real broker ----

    /// A tansu broker on a free port, killed on drop.
    pub(crate) struct Broker {
        child: Child,
        pub(crate) addr: String,
    }

    fn tansu() -> PathBuf {
        let on_path = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("tansu"))
                .find(|f| f.is_file())
        });
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu"));
        on_path.or(home.filter(|f| f.is_file())).unwrap_or_else(|| {
            panic!("the Kafka broker `tansu` is not installed: run `bash .ci/kafka.sh`")
        })
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    impl Broker {
        pub(crate) fn start() -> Broker {
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let child = Process::new(tansu())
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("tansu starts");
            let b = Broker {
                child,
                addr: format!("127.0.0.1:{port}"),
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while TcpStream::connect(&b.addr).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "tansu did not listen on {} within 15 s",
                    b.addr
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            b
        }

        pub(crate) async fn create_topic(&self, name: &str, partitions: i32) {
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                .set("bootstrap.servers", &self.addr)
                .create()
                .unwrap();
            let r = admin
                .create_topics(
                    &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                    &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
                )
                .await
                .unwrap();
            assert!(r.iter().all(|x| x.is_ok()), "create topic {name}: {r:?}");
        }

        pub(crate) fn producer(&self) -> FutureProducer {
            ClientConfig::new()
                .set("bootstrap.servers", &self.addr)
                .set("linger.ms", "5")
                .create()
                .unwrap()
        }
    }

    impl Drop for Broker {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn settings() -> Settings {
        let width = BinWidth::from_secs(300).unwrap();
        Settings {
            rule: Rule::Floodwatch,
            width,
            classify: ClassifyConfig::default(),
            ingest: IngestOptions::default(),
            dedup: 0,
            seed: SeedConfig::default().validate(width).unwrap(),
            floodwatch: FloodwatchConfig::default(),
        }
    }

    /// What the fake engine saw of one batch.
    #[derive(Clone, Debug)]
    struct Seen {
        input: String,
        position: Option<String>,
        records: u64,
        ok: bool,
    }

    struct Harness {
        seen: Arc<Mutex<Vec<Seen>>>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<Result<()>>,
    }

    /// Runs the source on `spec` with a fake engine that answers each batch with `answer`'s
    /// verdict (true: durable).
    fn start(
        spec: InputSpec,
        positions: BTreeMap<String, String>,
        answer: impl Fn(&Seen, usize) -> bool + Send + 'static,
    ) -> Harness {
        let (tx, mut rx) = mpsc::channel::<Command>(4);
        let (stop, stop_rx) = watch::channel(false);
        let settings = Arc::new(settings());
        let ctx = SourceCtx {
            engine: tx,
            step: BinWidth::from_secs(10).unwrap(),
            settings,
            positions: Arc::new(positions),
            shared: Arc::new(Shared {
                view: RwLock::default(),
                outbox: tokio::sync::Notify::new(),
                metrics: Metrics::new(),
                ready: AtomicBool::new(true),
                queue_depth: AtomicUsize::new(0),
                state_dir: PathBuf::new(),
            }),
            shutdown: stop_rx,
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(c) = rx.recv().await {
                let (input, position, records, ack) = match c {
                    Command::Batch {
                        input,
                        diag,
                        position,
                        ack,
                        ..
                    } => (input, position, diag.records_read, ack),
                    _ => continue,
                };
                // A partition's announcement (no position, nothing read): taken, not counted.
                if position.is_none() && records == 0 {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(Ack::default()));
                    }
                    continue;
                }
                let mut s = Seen {
                    input,
                    position,
                    records,
                    ok: true,
                };
                s.ok = answer(&s, n);
                n += 1;
                seen2.lock().unwrap().push(s.clone());
                if let Some(ack) = ack {
                    let _ = ack.send(if s.ok {
                        Ok(Ack::default())
                    } else {
                        Err("disk full (test)".into())
                    });
                }
            }
        });
        let task = tokio::spawn(run(spec, ctx));
        Harness { seen, stop, task }
    }

    impl Harness {
        /// Waits until every partition's acknowledged position is `end[p]`.
        async fn wait_positions(&self, topic: &str, end: &BTreeMap<i32, i64>) {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let at = self.positions();
                let done = end
                    .iter()
                    .all(|(p, e)| at.get(&input_name(topic, *p)).copied() == Some(*e));
                if done {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "positions {at:?}, expected {end:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        fn positions(&self) -> BTreeMap<String, i64> {
            let mut at = BTreeMap::new();
            for s in self.seen.lock().unwrap().iter().filter(|s| s.ok) {
                if let Some(p) = s.position.as_ref().and_then(|p| p.parse().ok()) {
                    at.insert(s.input.clone(), p);
                }
            }
            at
        }

        fn records(&self) -> u64 {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.ok)
                .map(|s| s.records)
                .sum()
        }

        async fn stop(self) {
            self.stop.send(true).unwrap();
            let r = tokio::time::timeout(Duration::from_secs(15), self.task)
                .await
                .expect("the source stops within 15 s");
            r.unwrap().unwrap();
        }
    }

    fn rows() -> Vec<String> {
        let text = include_str!("../../../../testdata/formats/ndjson.json");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Produces `per_partition` NDJSON rows to each partition, one per message, plus one
    /// pretty-printed Event Hubs body of two rows; returns the end offsets.
    async fn produce(
        b: &Broker,
        topic: &str,
        partitions: i32,
        per_partition: usize,
    ) -> BTreeMap<i32, i64> {
        let producer = b.producer();
        let rows = rows();
        let mut end = BTreeMap::new();
        for p in 0..partitions {
            for i in 0..per_partition {
                let row = &rows[i % rows.len()];
                let d = producer
                    .send(
                        FutureRecord::<(), str>::to(topic).partition(p).payload(row),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
                assert_eq!(d.partition, p);
                end.insert(p, d.offset + 1);
            }
            let body = serde_json::to_string_pretty(&serde_json::json!({
                "records": [
                    {"time": "x", "properties": serde_json::from_str::<serde_json::Value>(&rows[0]).unwrap()},
                    {"time": "x", "properties": serde_json::from_str::<serde_json::Value>(&rows[1]).unwrap()},
                ]
            }))
            .unwrap();
            let d = producer
                .send(
                    FutureRecord::<(), str>::to(topic)
                        .partition(p)
                        .payload(&body),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            end.insert(p, d.offset + 1);
        }
        end
    }

    /// The group's committed offsets, asked as another member of it would.
    fn committed(addr: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Offset> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", addr)
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        got.elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect()
    }

    fn kafka(b: &Broker, topic: &str, group: &str) -> InputSpec {
        InputSpec::Kafka {
            brokers: b.addr.clone(),
            topic: topic.into(),
            group: group.into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_every_partition_once_and_commits_what_is_durable() {
        let b = Broker::start();
        b.create_topic("t", 4).await;
        let end = produce(&b, "t", 4, 50).await;
        let h = start(kafka(&b, "t", "g"), BTreeMap::new(), |_, _| true);
        h.wait_positions("t", &end).await;
        // 50 rows and a body of two per partition; nothing read twice.
        assert_eq!(h.records(), 4 * 52);
        h.stop().await;
        let committed = committed(&b.addr, "g", "t", 4);
        for (p, e) in &end {
            assert_eq!(
                committed.get(p),
                Some(&Offset::Offset(*e)),
                "partition {p}: {committed:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn skips_what_the_state_already_holds() {
        let b = Broker::start();
        b.create_topic("t", 2).await;
        let end = produce(&b, "t", 2, 50).await;
        // The last run made partition 0 durable up to offset 20 but its commit to the group
        // was lost: the group resumes at 0.
        let stored = BTreeMap::from([(input_name("t", 0), "20".to_owned())]);
        let h = start(kafka(&b, "t", "g"), stored, |_, _| true);
        h.wait_positions("t", &end).await;
        assert_eq!(h.records(), (52 - 20) + 52);
        h.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_the_engine_cannot_store_is_sent_again_and_not_committed_meanwhile() {
        let b = Broker::start();
        b.create_topic("t", 1).await;
        let end = produce(&b, "t", 1, 50).await;
        let healthy = Arc::new(AtomicBool::new(false));
        let h2 = healthy.clone();
        let h = start(kafka(&b, "t", "g"), BTreeMap::new(), move |_, _| {
            h2.load(std::sync::atomic::Ordering::SeqCst)
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while h.seen.lock().unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "no retry within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let addr = b.addr.clone();
        let before = tokio::task::spawn_blocking(move || committed(&addr, "g", "t", 1))
            .await
            .unwrap();
        assert_eq!(
            before.get(&0),
            Some(&Offset::Invalid),
            "committed while failing: {before:?}"
        );
        healthy.store(true, std::sync::atomic::Ordering::SeqCst);
        h.wait_positions("t", &end).await;
        let seen = h.seen.lock().unwrap().clone();
        // Every attempt carried the same batch, read once.
        let first = &seen[0];
        assert!(!first.ok);
        let retried = seen.iter().take_while(|s| !s.ok).count();
        let again = &seen[retried];
        assert_eq!(
            (&again.input, &again.position, again.records),
            (&first.input, &first.position, first.records)
        );
        assert_eq!(h.records(), 52);
        h.stop().await;
        let committed = committed(&b.addr, "g", "t", 1);
        assert_eq!(committed.get(&0), Some(&Offset::Offset(end[&0])));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_resumes_after_what_was_committed() {
        let b = Broker::start();
        b.create_topic("t", 2).await;
        let end = produce(&b, "t", 2, 20).await;
        let h = start(kafka(&b, "t", "g"), BTreeMap::new(), |_, _| true);
        h.wait_positions("t", &end).await;
        assert_eq!(h.records(), 2 * 22);
        h.stop().await;
        let end = produce(&b, "t", 2, 10).await;
        let h = start(kafka(&b, "t", "g"), BTreeMap::new(), |_, _| true);
        h.wait_positions("t", &end).await;
        assert_eq!(h.records(), 2 * 12);
        h.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_joining_midway_takes_over_partitions_without_loss_or_double_count() {
        let b = Broker::start();
        b.create_topic("t", 4).await;
        // Rows keep coming to every partition while the second member joins, so both have
        // something to read after the rebalance.
        let producer = b.producer();
        let feed = tokio::spawn(async move {
            let rows = rows();
            let mut end = BTreeMap::new();
            for i in 0..300 {
                for p in 0..4 {
                    let d = producer
                        .send(
                            FutureRecord::<(), str>::to("t")
                                .partition(p)
                                .payload(&rows[i % rows.len()]),
                            Duration::from_secs(10),
                        )
                        .await
                        .unwrap();
                    end.insert(p, d.offset + 1);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            end
        });
        let a = start(kafka(&b, "t", "g"), BTreeMap::new(), |_, _| true);
        let deadline = Instant::now() + Duration::from_secs(20);
        while a.seen.lock().unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the first member read nothing within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let c = start(kafka(&b, "t", "g"), BTreeMap::new(), |_, _| true);
        let end = feed.await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut at = a.positions();
            for (k, v) in c.positions() {
                let e = at.entry(k).or_insert(v);
                *e = (*e).max(v);
            }
            if end
                .iter()
                .all(|(p, e)| at.get(&input_name("t", *p)) == Some(e))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "positions {at:?}, expected {end:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let total = a.records() + c.records();
        let inputs = |h: &Harness| -> BTreeSet<String> {
            h.seen
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.input.clone())
                .collect()
        };
        let (ia, ic) = (inputs(&a), inputs(&c));
        a.stop().await;
        c.stop().await;
        assert!(
            !ic.is_empty(),
            "the second member got nothing to read (first: {ia:?})"
        );
        assert_eq!(total, 4 * 300, "first member read {ia:?}, second {ic:?}");
    }
}
