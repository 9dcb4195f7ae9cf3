//! The engine thread: the one owner of the live detector and of the database's write side.
//!
//! Sources send it [`Command::Batch`]es over a bounded queue (when it is full, sources wait and
//! HTTP answers 503: backpressure, not collapse). It takes whatever is queued, and in one
//! transaction journals each batch's effect, applies it, stores the alerts, series and
//! notifications it caused and the position its input reached; then it answers each batch's
//! sender (an HTTP 2xx, a Kafka offset commit, a file offset) — so an acknowledged batch has
//! survived whatever happens next. Every `snapshot_every` it stores the whole state and drops
//! the journal before it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

use floodwatch_core::time::Nanos;
use floodwatch_core::{Diagnostics, SkipReason};
use floodwatch_detect::floodwatch::FloodwatchConfig;
use floodwatch_pipeline::{Counters, Emit, Engine, EngineState, LiveConfig, Partial};

use crate::metrics::Metrics;
use crate::state::{self, Entry, InputDelta};

/// Wall time, injected so that tests can move it.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// What the engine thread is asked to do.
// Commands are moved through a bounded queue once; the big variant is the common one.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// A batch read by a source. `ack` is answered once its effect is durable.
    Batch {
        input: String,
        partial: Partial,
        diag: Diagnostics,
        position: Option<String>,
        /// A client's idempotency key: a batch whose key was already stored is answered as the
        /// first time and not applied again (a client that lost the answer can send it again).
        key: Option<String>,
        /// The batch's journal entry, encoded by the sender ([`journal_batch`]) off the engine
        /// thread, which is the one part that cannot run in parallel; `None`: the engine
        /// encodes it.
        journal: Option<Vec<u8>>,
        ack: Option<oneshot::Sender<Result<Ack, String>>>,
    },
    /// A digest of the detector's state (to compare two runs), with its size.
    Digest(oneshot::Sender<StateDigest>),
    /// Store a snapshot now (then answer).
    Snapshot(oneshot::Sender<()>),
    /// Flush, snapshot and stop.
    Shutdown(oneshot::Sender<()>),
}

/// The detector's state, summarised.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StateDigest {
    /// FNV-1a of the serialized detector state (every device's history, sources, CUSUM).
    pub digest: String,
    pub devices: usize,
    pub bytes: usize,
    pub newest: Option<Nanos>,
    pub watermark: Option<Nanos>,
}

/// Where a batch's answer goes.
pub type AckTx = oneshot::Sender<Result<Ack, String>>;

/// A commit's answers (per batch), or why it failed with the batches' answer channels.
type CommitResult = Result<Vec<(Option<AckTx>, Ack)>, (anyhow::Error, Vec<Option<AckTx>>)>;

/// A batch on its way into a commit.
struct Pending {
    entry: Entry,
    /// Its journal encoding, when the sender made it.
    blob: Option<Vec<u8>>,
    key: Option<String>,
    ack: Option<AckTx>,
}

/// What a durable batch did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ack {
    pub records: u64,
    pub events: u64,
    pub skipped: BTreeMap<String, u64>,
    pub late: u64,
    /// The batch's key was seen before: this is the first answer again, nothing was applied.
    #[serde(default)]
    pub repeated: bool,
}

/// Per input: what it brought, what was skipped and where, where it stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputStats {
    pub records: u64,
    pub bytes: u64,
    pub events: u64,
    pub duplicates: u64,
    pub skipped: BTreeMap<String, u64>,
    /// The first skip examples (up to ten), with where they were.
    pub examples: Vec<String>,
    pub late: u64,
    pub position: Option<String>,
    /// Newest event time it brought.
    pub newest: Option<Nanos>,
    pub batches: u64,
}

/// What the API shows of the engine, refreshed after each commit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct View {
    pub newest: Option<Nanos>,
    pub watermark: Option<Nanos>,
    pub counters: Counters,
    pub inputs: BTreeMap<String, InputStats>,
    pub devices: Vec<DeviceView>,
    /// Device incidents open now: (device, incident id).
    pub open_incidents: Vec<(String, String)>,
    pub journal_rows: i64,
    /// Per device, its last scored bin (what the incident builder needs).
    pub last_bins: Vec<(String, i64)>,
}

/// One device now.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceView {
    pub device_name: String,
    /// Start of its newest open bin.
    pub bin_start: Option<Nanos>,
    /// Connections per vector (web, syn, udp, icmp) in that bin so far.
    pub counts: [u64; 4],
    /// Share of the bin elapsed (event time).
    pub elapsed: f64,
    /// Expected per vector for the whole bin (baseline median), while it has one.
    pub expected: Option<[f64; 4]>,
    /// The baseline's spread per vector, alongside `expected`.
    pub spread: Option<[f64; 4]>,
    /// `normal`, `suppressed-surge` or `under-attack`.
    pub state: String,
    pub incident_id: Option<String>,
}

/// Shared between the engine thread, sources, sinks and the API.
pub struct Shared {
    pub view: RwLock<View>,
    /// Woken after each commit that queued notifications.
    pub outbox: Notify,
    pub metrics: Metrics,
    pub ready: AtomicBool,
    pub queue_depth: AtomicUsize,
    pub state_dir: PathBuf,
}

impl Shared {
    pub fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// How the engine thread runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub live: LiveConfig,
    pub floodwatch: FloodwatchConfig,
    /// Store a snapshot this often (wall time). Default 10 s.
    pub snapshot_every: Duration,
    /// After this long without input (wall time), event time moves on with the wall clock so
    /// that the last bins close. Default 30 s.
    pub idle_close: Duration,
    /// Alerts, series and delivered notifications older than this (event time) are dropped.
    /// Default 30 days.
    pub retention: Nanos,
    /// Which notification kinds some sink takes (others are not queued).
    pub queue_alerts: bool,
    pub queue_incidents: bool,
    pub fsync: bool,
}

/// The snapshot blob (JSON, zstd-compressed).
#[derive(Serialize, Deserialize)]
struct Snapshot {
    engine: EngineState,
    inputs: BTreeMap<String, InputStats>,
    /// Event time the idle advance started from, if any.
    #[serde(default)]
    advanced: Option<Nanos>,
}

struct Core {
    conn: Connection,
    st: Live,
}

/// The engine thread's state apart from the database connection (so a transaction on the
/// one can be open while the other changes).
struct Live {
    opts: EngineOptions,
    engine: Engine,
    inputs: BTreeMap<String, InputStats>,
    journal_seq: i64,
    snap_seq: i64,
    last_snapshot: Instant,
    /// Wall time of the last batch that carried events, and the newest event time then.
    last_input: Option<(Instant, Nanos)>,
    /// Per input, wall time of its last batch with events (not journaled: after a restart
    /// every input starts as active again).
    last_by_input: BTreeMap<String, Instant>,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
}

/// What [`start`] gives: the queue to the engine thread, the positions each input had reached,
/// and the thread.
pub type Started = (
    mpsc::Sender<Command>,
    BTreeMap<String, String>,
    std::thread::JoinHandle<()>,
);

/// Opens the state, recovers (snapshot, then the journal after it), and starts the engine
/// thread. Returns the queue to it and the positions each input had reached.
pub fn start(
    opts: EngineOptions,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    queue: usize,
) -> Result<Started> {
    let conn = state::open(&shared.state_dir, opts.fsync)
        .with_context(|| format!("opening the state in {}", shared.state_dir.display()))?;
    let mut core = Core {
        conn,
        st: Live {
            engine: Engine::new(opts.live.clone(), opts.floodwatch.clone()),
            opts,
            inputs: BTreeMap::new(),
            journal_seq: 0,
            snap_seq: 0,
            last_snapshot: clock.now(),
            last_input: None,
            last_by_input: BTreeMap::new(),
            shared,
            clock,
        },
    };
    core.recover().context("recovering the state")?;
    let positions = state::positions(&core.conn)?;
    let (tx, rx) = mpsc::channel(queue);
    let handle = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || core.run(rx))
        .context("cannot start the engine thread")?;
    Ok((tx, positions, handle))
}

/// A batch as a [`Command::Batch`] with its journal entry already encoded: what a source
/// builds before sending it (the encoding is the same as the engine's own).
pub fn journal_batch(
    input: &str,
    partial: Partial,
    diag: Diagnostics,
    position: Option<String>,
    key: Option<String>,
    ack: Option<AckTx>,
) -> Result<Command, String> {
    let entry = Entry::Batch {
        input: input.to_owned(),
        diag: delta(&diag, &partial),
        partial,
        position,
    };
    let blob = state::encode_entry(&entry).map_err(|e| format!("encoding the batch: {e}"))?;
    let Entry::Batch {
        input,
        partial,
        position,
        ..
    } = entry
    else {
        return Err("encoding the batch: not a batch".into());
    };
    Ok(Command::Batch {
        input,
        partial,
        diag,
        position,
        key,
        journal: Some(blob),
        ack,
    })
}

fn delta(diag: &Diagnostics, p: &Partial) -> InputDelta {
    InputDelta {
        records: diag.records_read,
        bytes: diag.bytes_read,
        events: p.aggs.stats.events,
        duplicates: p.aggs.stats.duplicates,
        skipped: diag
            .skipped
            .iter()
            .filter(|(r, _)| **r != SkipReason::Late)
            .map(|(r, n)| (r.to_string(), *n))
            .collect(),
        examples: diag.examples.iter().map(|e| e.to_string()).collect(),
    }
}

impl Core {
    fn recover(&mut self) -> Result<()> {
        let (conn, st) = (&self.conn, &mut self.st);
        st.recover(conn)
    }
}

impl Live {
    fn recover(&mut self, conn: &Connection) -> Result<()> {
        if let Some((seq, blob)) = state::load_snapshot(conn)? {
            let json = zstd::decode_all(&blob[..]).context("snapshot: not zstd")?;
            let snap: Snapshot = serde_json::from_slice(&json).context("snapshot: unreadable")?;
            self.engine = Engine::resume(
                self.opts.live.clone(),
                self.opts.floodwatch.clone(),
                snap.engine,
            );
            self.inputs = snap.inputs;
            self.journal_seq = seq;
            self.snap_seq = seq;
        }
        let rows = state::journal_after(conn, self.journal_seq)?;
        let replayed = rows.len();
        let tx = write_tx(conn)?;
        for (seq, blob) in rows {
            let entry: Entry = state::decode_entry(&blob)
                .map_err(|e| anyhow::anyhow!("journal entry {seq}: unreadable: {e}"))?;
            let (emits, _) = self.apply(entry);
            self.persist(&tx, emits)?;
            self.journal_seq = seq;
        }
        tx.commit()?;
        // After a restart every input counts as active again until it stays quiet.
        let now = self.clock.now();
        for i in self.engine.newest_by_input().keys() {
            self.last_by_input.insert(i.clone(), now);
        }
        if replayed > 0 {
            tracing::info!(replayed, "re-applied the journal after the last snapshot");
        }
        self.refresh_view();
        Ok(())
    }

    /// Applies one journal entry to the engine and the input counters.
    fn apply(&mut self, entry: Entry) -> (Vec<Emit>, Ack) {
        match entry {
            Entry::Batch {
                input,
                mut partial,
                diag,
                position,
            } => {
                // Late events are counted per input, whatever the reader named its batches.
                partial.source.clone_from(&input);
                let late_before = self
                    .engine
                    .counters()
                    .late
                    .get(&input)
                    .copied()
                    .unwrap_or(0);
                let newest = partial.aggs.stats.max_ts;
                let emits = self.engine.apply(partial);
                let late = self
                    .engine
                    .counters()
                    .late
                    .get(&input)
                    .copied()
                    .unwrap_or(0)
                    - late_before;
                let s = self.inputs.entry(input).or_default();
                s.records += diag.records;
                s.bytes += diag.bytes;
                s.events += diag.events;
                s.duplicates += diag.duplicates;
                s.late += late;
                s.batches += 1;
                for (r, n) in &diag.skipped {
                    *s.skipped.entry(r.clone()).or_insert(0) += n;
                }
                for e in diag.examples.iter() {
                    if s.examples.len() < Diagnostics::MAX_EXAMPLES {
                        s.examples.push(e.clone());
                    }
                }
                if position.is_some() {
                    s.position = position;
                }
                if let Some(n) = newest {
                    s.newest = Some(s.newest.map_or(n, |x| x.max(n)));
                }
                let ack = Ack {
                    records: diag.records,
                    events: diag.events,
                    skipped: diag.skipped.clone(),
                    late,
                    repeated: false,
                };
                (emits, ack)
            }
            Entry::Advance { to } => (self.engine.advance(to), Ack::default()),
            Entry::Idle { inputs } => (
                self.engine.set_idle(inputs.into_iter().collect()),
                Ack::default(),
            ),
        }
    }

    /// Stores what the engine emitted and the bins it sealed (idempotent: ids are stable).
    fn persist(&mut self, conn: &Connection, emits: Vec<Emit>) -> Result<bool> {
        let mut queued = false;
        let m = &self.shared.metrics;
        for e in emits {
            match e {
                Emit::Alert(a) => {
                    let json = a.to_json();
                    let text = serde_json::to_string(&json)?;
                    let new = state::insert_alert(
                        conn,
                        &a.alert_id,
                        &a.alert.device_name,
                        a.bin,
                        a.alert.time_generated,
                        a.stage.as_str(),
                        a.alert.suppressed,
                        a.carpet,
                        a.alert.incident_id.as_deref(),
                        a.detected_at,
                        &serde_json::to_string(&a)?,
                    )?;
                    if new {
                        m.alert(a.stage.as_str(), a.alert.suppressed);
                    }
                    if self.opts.queue_alerts && !a.alert.suppressed {
                        queued |= state::enqueue(conn, &a.alert_id, "alert", a.detected_at, &text)?;
                    }
                }
                Emit::Incident(ev) => {
                    if self.opts.queue_incidents {
                        let text = serde_json::to_string(&ev)?;
                        queued |=
                            state::enqueue(conn, &ev.event_id, "incident", ev.detected_at, &text)?;
                    }
                }
            }
        }
        for s in self.engine.take_sealed() {
            state::upsert_series(conn, &s.device_name, s.bin, &serde_json::to_string(&s)?)?;
        }
        Ok(queued)
    }

    /// The inputs quiet for `idle_close` (wall time), when that set changed: they stop holding
    /// bins open (an input that delivers again is active again).
    fn idle_change(&self) -> Option<Vec<String>> {
        let now = self.clock.now();
        let idle: std::collections::BTreeSet<String> = self
            .engine
            .newest_by_input()
            .keys()
            .filter(|i| {
                self.last_by_input
                    .get(*i)
                    .is_none_or(|t| now.duration_since(*t) >= self.opts.idle_close)
            })
            .cloned()
            .collect();
        (&idle != self.engine.idle()).then(|| idle.into_iter().collect())
    }

    /// When the stream has been quiet for `idle_close`: event time moved on by the wall time
    /// since the last input (journaled, so a replay closes the same bins).
    fn idle_advance(&mut self) -> Option<Nanos> {
        let (at, newest) = self.last_input?;
        let quiet = self.clock.now().duration_since(at);
        if quiet < self.opts.idle_close {
            return None;
        }
        let to = newest.saturating_add(quiet.as_nanos().min(i64::MAX as u128) as i64);
        let step = self.opts.live.step.nanos();
        // Only when it moves event time past another sub-window: nothing else could change.
        let now_step = self.engine.newest().map(|n| n / step);
        (now_step != Some(to / step)).then_some(to)
    }

    fn commit(&mut self, conn: &Connection, batches: Vec<Pending>) -> CommitResult {
        let mut acks: Vec<Option<AckTx>> = Vec::new();
        let result = (|| -> Result<(Vec<Ack>, bool)> {
            let tx = write_tx(conn)?;
            let mut out = Vec::new();
            let mut queued = false;
            for Pending {
                entry,
                blob,
                key,
                ack,
            } in batches
            {
                acks.push(ack);
                if let Some(k) = &key
                    && let Some(first) = state::answer_of(&tx, k)?
                {
                    let mut a: Ack = serde_json::from_str(&first)?;
                    a.repeated = true;
                    out.push(a);
                    continue;
                }
                let blob = match blob {
                    Some(b) => b,
                    None => state::encode_entry(&entry)?,
                };
                let seq = state::append_journal(&tx, &blob)?;
                if let Entry::Batch {
                    input,
                    position: Some(p),
                    ..
                } = &entry
                {
                    state::set_position(&tx, input, p)?;
                }
                let has_events = matches!(&entry, Entry::Batch { partial, .. } if partial.aggs.stats.max_ts.is_some());
                let batch_input = match &entry {
                    Entry::Batch { input, .. } => Some(input.clone()),
                    _ => None,
                };
                let (emits, a) = self.apply(entry);
                let now = self.clock.now();
                if has_events && let Some(n) = self.engine.newest() {
                    self.last_input = Some((now, n));
                }
                if let Some(input) = batch_input {
                    // An announced input counts as active from its announcement.
                    match self.last_by_input.get_mut(&input) {
                        Some(t) if has_events => *t = now,
                        Some(_) => {}
                        None => {
                            self.last_by_input.insert(input, now);
                        }
                    }
                }
                queued |= self.persist(&tx, emits)?;
                self.journal_seq = seq;
                if let Some(k) = &key {
                    state::remember_answer(&tx, k, &serde_json::to_string(&a)?)?;
                }
                out.push(a);
            }
            tx.commit()?;
            Ok((out, queued))
        })();
        match result {
            Ok((out, queued)) => {
                if queued {
                    self.shared.outbox.notify_waiters();
                }
                Ok(acks.into_iter().zip(out).collect())
            }
            // The transaction rolled back, but the engine moved on in memory: go back to the
            // last durable state, so that memory never runs ahead of the database.
            Err(e) => {
                if let Err(e2) = self.reload(conn) {
                    tracing::error!("cannot reload the state after a failed commit: {e2:#}");
                }
                Err((e, acks))
            }
        }
    }

    fn reload(&mut self, conn: &Connection) -> Result<()> {
        self.engine = Engine::new(self.opts.live.clone(), self.opts.floodwatch.clone());
        self.inputs.clear();
        self.journal_seq = 0;
        self.recover(conn)
    }

    fn snapshot(&mut self, conn: &Connection) -> Result<()> {
        self.last_snapshot = self.clock.now();
        if self.journal_seq == self.snap_seq {
            return Ok(());
        }
        let snap = Snapshot {
            engine: self.engine.snapshot(),
            inputs: self.inputs.clone(),
            advanced: None,
        };
        let json = serde_json::to_vec(&snap)?;
        let blob = zstd::encode_all(&json[..], 3)?;
        let tx = write_tx(conn)?;
        state::save_snapshot(&tx, self.journal_seq, &blob)?;
        if let Some(n) = self.engine.newest() {
            state::retain(&tx, n - self.opts.retention, self.opts.live.width.nanos())?;
        }
        tx.commit()?;
        self.snap_seq = self.journal_seq;
        self.shared.metrics.snapshot_bytes.set(blob.len() as i64);
        Ok(())
    }

    fn digest(&self) -> StateDigest {
        let json = serde_json::to_vec(self.engine.stream().state()).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in &json {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        StateDigest {
            digest: format!("{h:016x}"),
            devices: self.engine.stream().state().devices.len(),
            bytes: json.len(),
            newest: self.engine.newest(),
            watermark: self.engine.watermark(),
        }
    }

    fn refresh_view(&self) {
        let e = &self.engine;
        let width = self.opts.live.width;
        let newest = e.newest();
        let open: BTreeMap<&str, &str> = e.tracker().open().collect();
        let mut devices: BTreeMap<String, DeviceView> = BTreeMap::new();
        for (d, bin, agg) in e.open_bins() {
            use floodwatch_detect::floodwatch::Group;
            let v = devices.entry(d.to_owned()).or_default();
            if v.bin_start.is_some_and(|b| b > width.start(bin)) {
                continue;
            }
            v.device_name = d.to_owned();
            v.bin_start = Some(width.start(bin));
            v.counts = Group::ALL.map(|g| g.count(agg));
            v.elapsed = newest.map_or(0.0, |n| {
                ((n - width.start(bin)) as f64 / width.nanos() as f64).clamp(0.0, 1.0)
            });
            let baseline = e.expected(d, bin);
            v.expected = baseline.map(|x| x.map(|(m, _)| m));
            v.spread = baseline.map(|x| x.map(|(_, s)| s));
        }
        for d in e.stream().next_bins().keys() {
            devices.entry(d.clone()).or_insert_with(|| DeviceView {
                device_name: d.clone(),
                ..DeviceView::default()
            });
        }
        for v in devices.values_mut() {
            v.incident_id = open.get(v.device_name.as_str()).map(|s| (*s).to_owned());
            v.state = match &v.incident_id {
                Some(_) => "under-attack".into(),
                None => "normal".into(),
            };
        }
        let view = View {
            newest,
            watermark: e.watermark(),
            counters: e.counters().clone(),
            inputs: self.inputs.clone(),
            devices: devices.into_values().collect(),
            open_incidents: open
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
            journal_rows: self.journal_seq - self.snap_seq,
            last_bins: e
                .stream()
                .next_bins()
                .iter()
                .map(|(d, n)| (d.clone(), n - 1))
                .collect(),
        };
        self.shared.metrics.observe(&view);
        *self.shared.view.write().unwrap_or_else(|p| p.into_inner()) = view;
    }
}

impl Core {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("engine thread: cannot start its timer: {e}");
                return;
            }
        };
        self.st.shared.ready.store(true, Ordering::SeqCst);
        let tick = Duration::from_millis(250);
        loop {
            let first = match rt.block_on(async { tokio::time::timeout(tick, rx.recv()).await }) {
                Ok(Some(c)) => Some(c),
                Err(_) => None,
                Ok(None) => {
                    if let Err(e) = self.st.snapshot(&self.conn) {
                        tracing::error!("final snapshot failed: {e:#}");
                    }
                    return;
                }
            };
            let mut cmds: Vec<Command> = first.into_iter().collect();
            while cmds.len() < 512 {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            self.st
                .shared
                .queue_depth
                .store(rx.len(), Ordering::Relaxed);
            let mut stop = None;
            let mut snap_now = Vec::new();
            let mut batches = Vec::new();
            for c in cmds {
                match c {
                    Command::Batch {
                        input,
                        partial,
                        diag,
                        position,
                        key,
                        journal,
                        ack,
                    } => {
                        let d = delta(&diag, &partial);
                        batches.push(Pending {
                            entry: Entry::Batch {
                                input,
                                partial,
                                diag: d,
                                position,
                            },
                            blob: journal,
                            key,
                            ack,
                        });
                    }
                    Command::Digest(reply) => {
                        let _ = reply.send(self.st.digest());
                    }
                    Command::Snapshot(done) => snap_now.push(done),
                    Command::Shutdown(done) => stop = Some(done),
                }
            }
            if let Some(inputs) = self.st.idle_change() {
                batches.push(Pending {
                    entry: Entry::Idle { inputs },
                    blob: None,
                    key: None,
                    ack: None,
                });
            }
            if batches.is_empty()
                && let Some(to) = self.st.idle_advance()
            {
                batches.push(Pending {
                    entry: Entry::Advance { to },
                    blob: None,
                    key: None,
                    ack: None,
                });
            }
            if !batches.is_empty() {
                match self.st.commit(&self.conn, batches) {
                    Ok(acks) => {
                        for (ack, a) in acks {
                            if let Some(ch) = ack {
                                let _ = ch.send(Ok(a));
                            }
                        }
                    }
                    Err((e, acks)) => {
                        tracing::error!("cannot store a batch: {e:#}");
                        for ch in acks.into_iter().flatten() {
                            let _ = ch.send(Err(format!("cannot store the batch: {e:#}")));
                        }
                    }
                }
                self.st.refresh_view();
            }
            let due = self.st.clock.now().duration_since(self.st.last_snapshot)
                >= self.st.opts.snapshot_every;
            if (due || !snap_now.is_empty() || stop.is_some())
                && let Err(e) = self.st.snapshot(&self.conn)
            {
                tracing::error!("snapshot failed: {e:#}");
            }
            for d in snap_now {
                let _ = d.send(());
            }
            if let Some(done) = stop {
                let _ = done.send(());
                return;
            }
        }
    }
}

/// A write transaction that takes the write lock at once (`BEGIN IMMEDIATE`): a deferred one
/// starts as a reader and cannot become a writer once a sink's cursor update has committed in
/// between (SQLITE_BUSY_SNAPSHOT); an immediate one waits for the lock (busy timeout) instead.
fn write_tx(conn: &Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use std::collections::BTreeSet;

    use floodwatch_core::time::{NANOS_PER_MIN, NANOS_PER_SEC};
    use floodwatch_core::{
        ActionType, Aggregator, AllowList, BinWidth, ClassifyConfig, Direction, Event, Ip, PortSet,
        Profile, Protocol,
    };
    use serde_json::Value;

    use crate::metrics::Metrics;
    use crate::sinks::format::webhook_body;

    /// 2025-12-22T00:00:00Z.
    const T0: Nanos = 1_766_361_600 * NANOS_PER_SEC;
    const HOUR: Nanos = 60 * NANOS_PER_MIN;

    /// Synthetic telemetry of one device: about one connection a second from a few hundred
    /// returning clients, and floods at ten a second from sources never seen before.
    struct Traffic {
        agg: Aggregator,
        t: Nanos,
        rid: i64,
        seed: u64,
    }

    impl Traffic {
        fn new(step: BinWidth) -> Self {
            let classify = ClassifyConfig {
                seed_ports: PortSet::new(&[443]),
                web_ports: PortSet::new(&[80, 443, 8080, 8443]),
                allow: AllowList::default(),
            };
            Traffic {
                agg: Aggregator::new(step, classify).with_profile(Profile::Floodwatch),
                t: T0,
                rid: 0,
                seed: 7,
            }
        }

        fn event(&mut self, ts: Nanos, src: [u8; 4]) {
            self.rid += 1;
            let e = Event {
                ts,
                device: self.agg.device("web01.contoso.com"),
                action: ActionType::InboundConnectionAccepted,
                protocol: Protocol::Tcp,
                direction: Direction::In,
                remote_ip: Some(Ip::v4(src)),
                remote_port: Some(50_000),
                local_port: Some(443),
                report_id: self.rid,
                weight: 1,
                bytes: None,
                packets: None,
                tcp_flags: None,
            };
            self.agg.add(&e);
        }

        /// Runs until `until`, flooding while `flood(t)`; hands a batch to the engine each
        /// minute of event time and waits until it is durable.
        fn run(&mut self, tx: &mpsc::Sender<Command>, until: Nanos, flood: impl Fn(Nanos) -> bool) {
            while self.t < until {
                self.seed = self
                    .seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let client = (self.seed >> 33) as u8 % 200;
                self.event(self.t, [20, 1, client % 2, client]);
                if flood(self.t) {
                    for k in 0..10 {
                        let n = self.rid;
                        let at = self.t + k * NANOS_PER_SEC / 10;
                        self.event(at, [30, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
                    }
                }
                self.t += NANOS_PER_SEC;
                if (self.t - T0) % NANOS_PER_MIN == 0 {
                    send(tx, self.agg.take_all());
                }
            }
        }
    }

    fn send(tx: &mpsc::Sender<Command>, aggs: floodwatch_core::Aggregates) {
        let (ack, done) = oneshot::channel();
        tx.blocking_send(Command::Batch {
            input: "test".into(),
            partial: Partial {
                source: "test".into(),
                aggs,
            },
            diag: Diagnostics::default(),
            position: None,
            key: None,
            journal: None,
            ack: Some(ack),
        })
        .unwrap();
        done.blocking_recv().unwrap().unwrap();
    }

    fn engine(dir: &std::path::Path) -> Started {
        let width = BinWidth::FIVE_MINUTES;
        let opts = EngineOptions {
            live: LiveConfig::new(width),
            floodwatch: FloodwatchConfig::default(),
            snapshot_every: Duration::from_secs(3600),
            // Event time moves on with the input alone.
            idle_close: Duration::from_secs(3600),
            retention: 30 * 24 * HOUR,
            queue_alerts: false,
            queue_incidents: true,
            fsync: false,
        };
        let shared = Arc::new(Shared {
            view: RwLock::default(),
            outbox: Notify::new(),
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
            queue_depth: AtomicUsize::new(0),
            state_dir: dir.to_owned(),
        });
        start(opts, shared, Arc::new(SystemClock), 64).unwrap()
    }

    fn stop(tx: mpsc::Sender<Command>, handle: std::thread::JoinHandle<()>) {
        let (done, wait) = oneshot::channel();
        tx.blocking_send(Command::Shutdown(done)).unwrap();
        wait.blocking_recv().unwrap();
        handle.join().unwrap();
    }

    /// Every incident change queued for the webhook, Teams and Slack sinks, in order.
    fn notifications(dir: &std::path::Path) -> Vec<Value> {
        let conn = state::open(dir, false).unwrap();
        state::outbox_after(&conn, 0, &["incident"], 10_000)
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "incident")
            .map(|r| serde_json::from_str(&r.payload).unwrap())
            .collect()
    }

    fn phases(events: &[Value], incident: &str) -> Vec<String> {
        events
            .iter()
            .filter(|e| e["IncidentId"] == incident)
            .map(|e| e["Phase"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Three five-minute pulses ten minutes apart are one incident: one `opened`, one `closed`
    /// (listing the three pulses, each with its own peak), nothing per pulse. A flood two hours
    /// later, after a restart, is a new incident in the same campaign.
    #[test]
    fn a_pulse_wave_is_one_notified_incident_and_its_campaign_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let step = BinWidth::from_secs(10).unwrap();
        let onset = T0 + 6 * HOUR;
        let pulse = |t: Nanos| {
            let k = (t - onset).div_euclid(15 * NANOS_PER_MIN);
            (0..3).contains(&k) && (t - onset).rem_euclid(15 * NANOS_PER_MIN) < 5 * NANOS_PER_MIN
        };
        let mut traffic = Traffic::new(step);
        let (tx, _, handle) = engine(dir.path());
        traffic.run(&tx, onset + 2 * HOUR, pulse);
        stop(tx, handle);

        let first = notifications(dir.path());
        let ids: BTreeSet<&str> = first
            .iter()
            .filter_map(|e| e["IncidentId"].as_str())
            .collect();
        assert_eq!(ids.len(), 1, "one incident for the wave: {first:#?}");
        let id = "FW-web01.contoso.com-20251222T060000Z";
        let ph = phases(&first, id);
        assert_eq!(ph.first().map(String::as_str), Some("opened"), "{ph:?}");
        assert_eq!(ph.last().map(String::as_str), Some("closed"), "{ph:?}");
        assert_eq!(ph.iter().filter(|p| *p == "opened").count(), 1, "{ph:?}");
        assert_eq!(ph.iter().filter(|p| *p == "closed").count(), 1, "{ph:?}");
        let closed = first.last().unwrap();
        let campaign = "FW-campaign-web01.contoso.com-20251222T060000Z";
        assert_eq!(closed["CampaignId"], campaign);
        let pulses = closed["Pulses"].as_array().unwrap();
        let spans: Vec<(&str, &str)> = pulses
            .iter()
            .map(|p| (p["Start"].as_str().unwrap(), p["End"].as_str().unwrap()))
            .collect();
        assert_eq!(
            spans,
            vec![
                ("2025-12-22T06:00:00Z", "2025-12-22T06:05:00Z"),
                ("2025-12-22T06:15:00Z", "2025-12-22T06:20:00Z"),
                ("2025-12-22T06:30:00Z", "2025-12-22T06:35:00Z"),
            ]
        );
        // Each pulse's own peak: about 3,000 flood and 300 regular connections in its bin.
        for p in pulses {
            let peak = p["PeakRequestCount"].as_u64().unwrap();
            assert!((3000..=3400).contains(&peak), "{p}");
        }
        assert_eq!(closed["End"], T0 + 6 * HOUR + 35 * NANOS_PER_MIN);
        assert_eq!(closed["AlertBins"], 3);
        // What the webhook posts, and the chat text.
        let body = webhook_body(closed);
        assert_eq!(body["CampaignId"], campaign);
        assert_eq!(body["Pulses"].as_array().map(Vec::len), Some(3));
        assert!(
            body["Summary"].as_str().unwrap().contains("in 3 pulses"),
            "{}",
            body["Summary"]
        );

        // Restarted on the same state, two hours on: a new flood, a new incident, the same
        // campaign.
        let (tx, _, handle) = engine(dir.path());
        let second = onset + 3 * HOUR;
        traffic.run(&tx, second + 2 * HOUR, |t| {
            (second..second + 10 * NANOS_PER_MIN).contains(&t)
        });
        stop(tx, handle);
        let all = notifications(dir.path());
        assert_eq!(
            &all[..first.len()],
            &first[..],
            "nothing sent again after the restart"
        );
        let next = "FW-web01.contoso.com-20251222T090000Z";
        let opened = all
            .iter()
            .find(|e| e["IncidentId"] == next && e["Phase"] == "opened")
            .unwrap_or_else(|| panic!("the second flood opened an incident: {all:#?}"));
        assert_eq!(opened["CampaignId"], campaign);
        let ph = phases(&all, next);
        assert_eq!(ph.iter().filter(|p| *p == "closed").count(), 1, "{ph:?}");
    }
}
