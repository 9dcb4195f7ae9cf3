//! Delivery from the outbox: one tokio task per sink.
//!
//! The engine queues each notification in the database's outbox in the same transaction as
//! the batch that caused it, so what is queued has survived. A sink reads the rows after its
//! own cursor, of its own kind (`alert` or `incident`), delivers them strictly in order and
//! moves its cursor after each success; a failed attempt is retried, the same row, with
//! exponential backoff and full jitter, forever: a receiver that is down for an hour gets
//! everything when it returns, once each and in order. Sinks share nothing but the database,
//! so one that fails never holds back another.
//!
//! "Once" holds exactly for the file sinks (the file itself says how far it got, see
//! [`start`]); for the others it is at least once across a crash between a delivery and its
//! cursor update, and HTTP receivers get an `Idempotency-Key` to drop that duplicate.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use rusqlite::Connection;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use floodwatch_core::time::{NANOS_PER_SEC, Rfc3339, from_civil};

use super::{SinkSpec, format};
use crate::engine::Shared;
use crate::metrics::SinkLabels;
use crate::state::{self, OutboxRow};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How often a sink looks at the outbox when no wake-up came (a fallback: the engine wakes
/// the sinks after each commit that queued something).
const POLL: Duration = Duration::from_secs(1);

/// Rows read per query.
const BATCH: usize = 64;

/// The largest UDP payload over IPv4 (65,535 − 8 − 20 bytes).
const UDP_MAX: usize = 65_507;

/// Bytes of an HTTP error body kept in the status (Slack, for one, says what was wrong there).
const ERROR_BODY_MAX: usize = 300;

/// The longest last line [`start`] reads back from a file sink to find where it got.
const LINE_MAX: u64 = 16 << 20;

/// How sinks retry (the service fills it from its settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// Upper bound of the first retry's wait; it doubles with each failure of the same row.
    /// Default 500 ms.
    pub initial_backoff: Duration,
    /// Cap of the wait between attempts, `Retry-After` included. Default 60 s.
    pub max_backoff: Duration,
    /// Time allowed for one attempt (connect, send, answer), network sinks. Default 10 s.
    pub timeout: Duration,
    /// Consecutive failed attempts before a sink is reported failing. Default 5.
    pub failing_after: u32,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            failing_after: 5,
        }
    }
}

/// Where a sink stands, for the API and the operator.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SinkStatus {
    /// [`SinkSpec::name`]: its cursor's key and metrics label.
    pub name: String,
    /// What it takes: `alert` or `incident`.
    pub kind: String,
    /// Notifications delivered since start.
    pub delivered: u64,
    /// Delivery attempts since start, failed ones included.
    pub attempts: u64,
    /// Notifications the receiver refused for good (an HTTP 4xx other than 408 and 429, or a
    /// payload that cannot be formatted): logged, counted and skipped.
    pub rejected: u64,
    /// Failed attempts (rejections included) since the last success.
    pub consecutive_failures: u32,
    /// `consecutive_failures` reached [`DeliveryOptions::failing_after`]; cleared on success.
    pub failing: bool,
    /// The last failure: the notification's key and what went wrong.
    pub last_error: Option<String>,
    /// Wall-clock time (RFC 3339) of the last failure and of the last success.
    pub last_failure_at: Option<String>,
    pub last_success_at: Option<String>,
    /// Key of the last notification delivered.
    pub last_delivered: Option<String>,
    /// Key of the notification being retried, while one is.
    pub retrying: Option<String>,
    /// Outbox sequence number delivery has reached.
    pub cursor: i64,
}

/// The running sinks: one status per spec, in the order given.
pub struct Sinks {
    pub statuses: Vec<Arc<Mutex<SinkStatus>>>,
}

impl Sinks {
    /// A copy of every status, for the API.
    pub fn snapshot(&self) -> Vec<SinkStatus> {
        self.statuses.iter().map(|s| lock(s).clone()).collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts one task per sink. Each opens its own database connection in `shared.state_dir`;
/// file sinks open their file here, so a path that cannot be written is an error at start,
/// not a sink that retries for ever.
///
/// # Exactly once, file sinks
///
/// A file sink appends a line, flushes and `sync_data`s it, then moves its cursor; a crash
/// between the two would write that line again. So at start the file's last complete line is
/// read back, its key found in the outbox (`AlertId`; for OCSF `finding_info.uid`) and the
/// cursor moved past it when it is behind. Since lines are written in outbox order, the last
/// line is the furthest any write got.
///
/// A last line without its newline is a write the crash cut short. It is truncated away, not
/// completed with a newline: completed, it would stay in the file as a broken JSON line, and
/// its notification, never recorded as delivered, would be written again in full after it
/// anyway. Cut, the file holds complete lines only and the row is written once.
///
/// The tasks run until `shutdown` turns true (or its sender is dropped): a sink finishes the
/// attempt under way and returns.
pub fn start(
    specs: &[SinkSpec],
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    opts: DeliveryOptions,
) -> Result<(Sinks, Vec<JoinHandle<()>>)> {
    let hostname = local_hostname();
    let mut workers = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let name = spec.name();
        if specs[..i].iter().any(|s| s.name() == name) {
            // Two tasks on one cursor (and one file) would deliver everything twice.
            bail!("notify {name}: given twice");
        }
        let dir = &shared.state_dir;
        let conn = state::open(dir, false)
            .with_context(|| format!("sink {name}: opening the state in {}", dir.display()))?;
        let transport = Transport::new(spec, &conn, &name, &opts, &hostname)
            .with_context(|| format!("sink {name}"))?;
        let cursor = state::cursor(&conn, &name)
            .with_context(|| format!("sink {name}: reading its cursor"))?;
        let labels = SinkLabels { sink: name.clone() };
        // Present (at zero) from the start, so that a dashboard sees every sink.
        let m = &shared.metrics;
        m.delivered.get_or_create(&labels).inc_by(0);
        m.delivery_failures.get_or_create(&labels).inc_by(0);
        m.sink_failing.get_or_create(&labels).set(0);
        let status = Arc::new(Mutex::new(SinkStatus {
            name: name.clone(),
            kind: spec.kind().to_owned(),
            cursor,
            ..SinkStatus::default()
        }));
        workers.push(Worker {
            name,
            labels,
            kind: spec.kind(),
            db: Arc::new(Mutex::new(conn)),
            cursor,
            saved: cursor,
            transport,
            status,
            shared: shared.clone(),
            opts: opts.clone(),
            shutdown: shutdown.clone(),
        });
    }
    // Spawned only once every sink is built, so that an error leaves nothing running.
    let statuses = workers.iter().map(|w| w.status.clone()).collect();
    let handles = workers.into_iter().map(|w| tokio::spawn(w.run())).collect();
    Ok((Sinks { statuses }, handles))
}

/// The name the syslog header gives this machine.
fn local_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

fn now_rfc3339() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
    Rfc3339(n - n.rem_euclid(1_000_000)).to_string()
}

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What one attempt came to.
#[derive(Debug)]
enum Outcome {
    Delivered,
    /// Refused for good: retrying the same bytes would be refused again.
    Rejected(String),
    /// Try again later, not before `after` when the receiver said so.
    Retry {
        error: String,
        after: Option<Duration>,
    },
}

fn retry(error: String) -> Outcome {
    Outcome::Retry { error, after: None }
}

/// The wait before retrying a row that failed `tries` times before: uniform in
/// `[0, min(max_backoff, initial_backoff · 2^tries)]` ("full jitter", so that senders that
/// failed together do not come back together), and at least the receiver's `Retry-After`,
/// within `max_backoff`.
fn backoff(opts: &DeliveryOptions, tries: u32, retry_after: Option<Duration>) -> Duration {
    let cap = opts.max_backoff;
    let exp = opts
        .initial_backoff
        .saturating_mul(1u32 << tries.min(31))
        .min(cap);
    let top = exp.as_nanos().min(u64::MAX as u128) as u64;
    let wait = Duration::from_nanos(rand::random_range(0..=top));
    match retry_after {
        Some(ra) => wait.max(ra).min(cap),
        None => wait,
    }
}

/// A `Retry-After` value: delay seconds, or an HTTP date (IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`) compared with `now` (Unix seconds). `None` when it is
/// neither (the obsolete date forms included): the backoff applies.
fn retry_after(value: &str, now: i64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, hms, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let mut t = hms.split(':').map(|x| x.parse::<u32>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let at = from_civil(year.parse().ok()?, month, day.parse().ok()?, h, mi, s, 0).ok()?;
    Some(Duration::from_secs(
        (at / NANOS_PER_SEC).saturating_sub(now).max(0) as u64,
    ))
}

/// An error and its causes, `: `-joined (reqwest's own message alone hides the cause, e.g.
/// "connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        src = s.source();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Transports

enum Transport {
    File(FileSink),
    Http(HttpSink),
    Udp(UdpSink),
    Tcp(TcpSink),
}

impl Transport {
    fn new(
        spec: &SinkSpec,
        conn: &Connection,
        name: &str,
        opts: &DeliveryOptions,
        hostname: &str,
    ) -> Result<Self> {
        let http = |url: &str, body: fn(&Value) -> Value| -> Result<Transport> {
            reqwest::Url::parse(url).context("not a URL")?;
            let client = reqwest::Client::builder()
                .timeout(opts.timeout)
                .connect_timeout(opts.timeout)
                .user_agent(format!("floodwatch/{VERSION}"))
                // A redirected POST turns into a GET without its body, which would look
                // delivered; a 3xx is retried and reported instead (see `HttpSink::send`).
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("cannot build the HTTP client")?;
            Ok(Transport::Http(HttpSink {
                client,
                url: url.to_owned(),
                body,
            }))
        };
        Ok(match spec {
            SinkSpec::Jsonl(p) => Transport::File(FileSink::open(p, false, conn, name)?),
            SinkSpec::Ocsf(p) => Transport::File(FileSink::open(p, true, conn, name)?),
            SinkSpec::Webhook(u) => http(u, format::webhook_body)?,
            SinkSpec::Teams(u) => http(u, format::teams_card)?,
            SinkSpec::Slack(u) => http(u, format::slack_blocks)?,
            SinkSpec::SyslogUdp(a) => Transport::Udp(UdpSink {
                addr: a.clone(),
                socket: None,
                hostname: hostname.to_owned(),
            }),
            SinkSpec::SyslogTcp(a) => Transport::Tcp(TcpSink {
                addr: a.clone(),
                stream: None,
                hostname: hostname.to_owned(),
                timeout: opts.timeout,
            }),
        })
    }

    async fn send(&mut self, row: &OutboxRow) -> Outcome {
        match self {
            Transport::File(s) => s.send(row).await,
            Transport::Http(s) => s.send(row).await,
            Transport::Udp(s) => s.send(row).await,
            Transport::Tcp(s) => s.send(row).await,
        }
    }
}

fn parse(row: &OutboxRow) -> Result<Value, Outcome> {
    serde_json::from_str(&row.payload)
        .map_err(|e| Outcome::Rejected(format!("outbox row {}: payload is not JSON: {e}", row.seq)))
}

/// `jsonl:` and `ocsf:`: one line per notification, appended.
struct FileSink {
    path: PathBuf,
    ocsf: bool,
    /// `None` while a write is under way on the blocking pool (or after it was lost there).
    writer: Option<Writer>,
}

impl FileSink {
    /// Opens the file, and recovers where it got (see [`start`]).
    fn open(path: &Path, ocsf: bool, conn: &Connection, name: &str) -> Result<Self> {
        let mut file =
            Writer::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let (last, cut) = last_line(&mut file)
            .with_context(|| format!("cannot read the end of {}", path.display()))?;
        if cut > 0 {
            tracing::warn!(
                sink = name,
                bytes = cut,
                "cut a torn last line (a write interrupted by a crash); its notification is written again"
            );
        }
        let key = last.and_then(|line| {
            let v: Value = serde_json::from_slice(&line).ok()?;
            let key = if ocsf {
                v.get("finding_info")?.get("uid")?
            } else {
                v.get("AlertId")?
            };
            key.as_str().map(str::to_owned)
        });
        if let Some(key) = key
            && let Some(seq) = state::outbox_seq_of(conn, &key)
                .with_context(|| format!("looking up {key} in the outbox"))?
        {
            let cursor = state::cursor(conn, name).context("reading the cursor")?;
            if seq > cursor {
                state::set_cursor(conn, name, seq).context("moving the cursor")?;
                tracing::info!(
                    sink = name,
                    key,
                    "the file already holds notifications past the cursor: moved the cursor on"
                );
            }
        }
        Ok(FileSink {
            path: path.to_owned(),
            ocsf,
            writer: Some(Writer {
                path: path.to_owned(),
                file: Some(file),
            }),
        })
    }

    async fn send(&mut self, row: &OutboxRow) -> Outcome {
        let line = if self.ocsf {
            match parse(row) {
                Ok(v) => format::ocsf_finding(&v).to_string(),
                Err(o) => return o,
            }
        } else {
            format::jsonl_line(&row.payload)
        };
        let mut w = self.writer.take().unwrap_or_else(|| Writer {
            path: self.path.clone(),
            file: None,
        });
        // Not under a timeout: an abandoned write could still land after its retry and
        // write the line twice. A local file answers, or nothing else would either.
        match tokio::task::spawn_blocking(move || {
            let r = w.append(&line);
            (w, r)
        })
        .await
        {
            Ok((w, r)) => {
                self.writer = Some(w);
                match r {
                    Ok(()) => Outcome::Delivered,
                    Err(e) => retry(format!("writing {}: {e}", self.path.display())),
                }
            }
            Err(e) => retry(format!("writing {}: {e}", self.path.display())),
        }
    }
}

/// The file side of a [`FileSink`], moved to the blocking pool for each write.
struct Writer {
    path: PathBuf,
    file: Option<File>,
}

impl Writer {
    fn open(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
    }

    /// Appends `line` and a newline, durably. On failure nothing of it stays: a partial line
    /// left in front of the retry's complete one would be a broken line.
    fn append(&mut self, line: &str) -> io::Result<()> {
        if self.rotated() {
            self.file = None;
        }
        let f = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(Self::open(&self.path)?),
        };
        let before = f.metadata()?.len();
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let written = f
            .write_all(&buf)
            .and_then(|()| f.flush())
            .and_then(|()| f.sync_data());
        if let Err(e) = written {
            let _ = f.set_len(before);
            self.file = None;
            return Err(e);
        }
        Ok(())
    }

    /// The path no longer names the open file (log rotation moved it away): write to the
    /// new one.
    #[cfg(unix)]
    fn rotated(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(f) = &self.file else {
            return false;
        };
        match (std::fs::metadata(&self.path), f.metadata()) {
            (Ok(p), Ok(h)) => p.dev() != h.dev() || p.ino() != h.ino(),
            (Err(_), _) => true,
            _ => false,
        }
    }

    #[cfg(not(unix))]
    fn rotated(&self) -> bool {
        false
    }
}

/// Cuts a last line that has no newline, and returns the last complete line (without its
/// newline) and how many bytes were cut.
fn last_line(f: &mut File) -> io::Result<(Option<Vec<u8>>, u64)> {
    let len = f.metadata()?.len();
    let end = rfind_newline(f, len)?.map_or(0, |p| p + 1);
    let cut = len - end;
    if cut > 0 {
        f.set_len(end)?;
        f.sync_data()?;
    }
    if end == 0 {
        return Ok((None, cut));
    }
    let start = rfind_newline(f, end - 1)?.map_or(0, |p| p + 1);
    let n = end - 1 - start;
    if n > LINE_MAX {
        return Ok((None, cut));
    }
    let mut line = vec![0; n as usize];
    f.seek(SeekFrom::Start(start))?;
    f.read_exact(&mut line)?;
    Ok((Some(line), cut))
}

/// Position of the last `\n` before byte `before`, reading backwards in blocks.
fn rfind_newline(f: &mut File, before: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = before;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let block = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(block)?;
        if let Some(i) = block.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

/// `webhook:`, `teams:`, `slack:`: one JSON POST per incident change.
struct HttpSink {
    client: reqwest::Client,
    url: String,
    body: fn(&Value) -> Value,
}

impl HttpSink {
    async fn send(&self, row: &OutboxRow) -> Outcome {
        let ev = match parse(row) {
            Ok(v) => v,
            Err(o) => return o,
        };
        // Errors leave the URL out: for Teams and Slack the URL is the credential.
        let resp = match self
            .client
            .post(&self.url)
            .header("Idempotency-Key", &row.key)
            .json(&(self.body)(&ev))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return retry(format!("POST: {}", chain(&e.without_url()))),
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, unix_secs()));
        let body = error_body(resp).await;
        let error = format!("POST: HTTP {status}{body}");
        match status.as_u16() {
            408 | 429 | 500..=599 => Outcome::Retry { error, after },
            // The receiver refuses this payload; the same bytes would be refused again, and
            // retrying them for ever would hold back every notification after them. So it is
            // logged, counted and skipped (see `Worker::failed`).
            400..=499 => Outcome::Rejected(error),
            // Redirects are not followed (see `Transport::new`): give the final URL.
            _ => Outcome::Retry { error, after },
        }
    }
}

/// The start of an error answer's body, as `: text`, for the status.
async fn error_body(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < ERROR_BODY_MAX {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let text: String = text
        .chars()
        .take(ERROR_BODY_MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// The RFC 5424 message of an alert row: its CEF line, stamped with DetectedAt.
fn syslog_message(row: &OutboxRow, hostname: &str) -> Result<String, Outcome> {
    let alert = parse(row)?;
    let ts = alert
        .get("DetectedAt")
        .and_then(Value::as_str)
        .unwrap_or("-");
    Ok(format::syslog_5424(
        &format::cef_line(&alert),
        hostname,
        ts,
        format::syslog_severity(&alert),
    ))
}

/// `syslog+udp://`: one datagram per message, no framing (RFC 5426). Nothing confirms
/// receipt; a send error (say, an ICMP unreachable reported on a later send) is retried.
struct UdpSink {
    addr: String,
    socket: Option<UdpSocket>,
    hostname: String,
}

impl UdpSink {
    async fn send(&mut self, row: &OutboxRow) -> Outcome {
        let msg = match syslog_message(row, &self.hostname) {
            Ok(m) => m,
            Err(o) => return o,
        };
        if msg.len() > UDP_MAX {
            return Outcome::Rejected(format!("{} bytes do not fit in a datagram", msg.len()));
        }
        let socket = match &self.socket {
            Some(s) => s,
            None => match udp_connect(&self.addr).await {
                Ok(s) => self.socket.insert(s),
                Err(e) => return retry(e),
            },
        };
        match socket.send(msg.as_bytes()).await {
            Ok(n) if n == msg.len() => Outcome::Delivered,
            Ok(n) => retry(format!("sent {n} of {} bytes to {}", msg.len(), self.addr)),
            Err(e) => {
                // A new socket (and a new lookup) next time.
                self.socket = None;
                retry(format!("sending to {}: {e}", self.addr))
            }
        }
    }
}

async fn udp_connect(addr: &str) -> Result<UdpSocket, String> {
    let target = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("resolving {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolving {addr}: no address"))?;
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("binding a UDP socket: {e}"))?;
    s.connect(target)
        .await
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    Ok(s)
}

/// `syslog+tcp://`: RFC 6587 octet counting (`LEN SP MSG`), one connection kept open and
/// made again after an error. TCP says a message was written, not that it was read (only
/// RELP would); the check for a closed peer before each write narrows the gap where a
/// message goes into a connection the collector already closed.
struct TcpSink {
    addr: String,
    stream: Option<TcpStream>,
    hostname: String,
    timeout: Duration,
}

impl TcpSink {
    async fn send(&mut self, row: &OutboxRow) -> Outcome {
        let msg = match syslog_message(row, &self.hostname) {
            Ok(m) => m,
            Err(o) => return o,
        };
        if let Some(s) = self.stream.take() {
            self.stream = still_open(s);
        }
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                match tokio::time::timeout(self.timeout, TcpStream::connect(&self.addr)).await {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        self.stream.insert(s)
                    }
                    Ok(Err(e)) => return retry(format!("connecting to {}: {e}", self.addr)),
                    Err(_) => {
                        return retry(format!(
                            "connecting to {}: no answer within {:?}",
                            self.addr, self.timeout
                        ));
                    }
                }
            }
        };
        let frame = format!("{} {msg}", msg.len());
        let written = tokio::time::timeout(self.timeout, async {
            stream.write_all(frame.as_bytes()).await?;
            stream.flush().await
        })
        .await;
        let error = match written {
            Ok(Ok(())) => return Outcome::Delivered,
            Ok(Err(e)) => format!("writing to {}: {e}", self.addr),
            Err(_) => format!("writing to {}: stalled for {:?}", self.addr, self.timeout),
        };
        // Part of a frame may have gone out: only a new connection frames cleanly again.
        self.stream = None;
        retry(error)
    }
}

/// The connection, unless the collector closed (or reset) it. Asked of the socket itself, by
/// a non-blocking read on the std stream, not of tokio's readiness, which only knows of the
/// close once the reactor has run since it came. Collectors send nothing, so bytes read are
/// dropped.
fn still_open(s: TcpStream) -> Option<TcpStream> {
    let mut std = s.into_std().ok()?;
    let mut buf = [0u8; 512];
    loop {
        match std.read(&mut buf) {
            Ok(0) => return None,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    TcpStream::from_std(std).ok()
}

// ---------------------------------------------------------------------------------------------
// The task

struct Worker {
    name: String,
    labels: SinkLabels,
    kind: &'static str,
    db: Arc<Mutex<Connection>>,
    /// Where delivery stands (in memory), and what the database holds.
    cursor: i64,
    saved: i64,
    transport: Transport,
    status: Arc<Mutex<SinkStatus>>,
    shared: Arc<Shared>,
    opts: DeliveryOptions,
    shutdown: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) {
        let shared = self.shared.clone();
        'outer: while !self.stopping() {
            let notified = shared.outbox.notified();
            tokio::pin!(notified);
            // Registered before the query: a commit between the query and the wait below
            // still wakes this sink.
            notified.as_mut().enable();
            let rows = match self.fetch().await {
                Ok(rows) => rows,
                Err(e) => {
                    self.state_error(&e);
                    if self.pause(POLL).await {
                        break;
                    }
                    continue;
                }
            };
            if rows.is_empty() {
                self.save_cursor().await;
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = self.shutdown.changed() => {}
                }
                continue;
            }
            for row in rows {
                if self.stopping() {
                    break 'outer;
                }
                // A marker: only other kinds follow up to it; the cursor moves past them, and
                // is stored with the next delivery or when idle.
                if row.kind.is_empty() {
                    self.advance(row.seq);
                    continue;
                }
                if !self.deliver(&row).await {
                    break 'outer;
                }
                self.advance(row.seq);
                self.save_cursor().await;
            }
        }
        self.save_cursor().await;
    }

    /// Shutdown asked, or nobody left to ask (the sender is gone).
    fn stopping(&self) -> bool {
        *self.shutdown.borrow() || self.shutdown.has_changed().is_err()
    }

    /// Waits `d`, or less if shutdown comes; returns whether to stop.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.changed() => {}
        }
        self.stopping()
    }

    async fn fetch(&self) -> Result<Vec<OutboxRow>> {
        let (db, cursor, kind) = (self.db.clone(), self.cursor, self.kind);
        tokio::task::spawn_blocking(move || state::outbox_after(&lock(&db), cursor, &[kind], BATCH))
            .await
            .context("outbox query task")?
            .context("reading the outbox")
    }

    fn advance(&mut self, seq: i64) {
        self.cursor = self.cursor.max(seq);
        lock(&self.status).cursor = self.cursor;
    }

    /// Stores the cursor when it moved. A failure is logged and tried again at the next
    /// chance; the in-memory cursor goes on, so nothing is delivered twice by this process.
    async fn save_cursor(&mut self) {
        if self.cursor <= self.saved {
            return;
        }
        let (db, name, seq) = (self.db.clone(), self.name.clone(), self.cursor);
        let r = tokio::task::spawn_blocking(move || state::set_cursor(&lock(&db), &name, seq))
            .await
            .context("cursor update task")
            .and_then(|r| r.context("storing the cursor"));
        match r {
            Ok(()) => self.saved = seq,
            Err(e) => self.state_error(&e),
        }
    }

    fn state_error(&self, e: &anyhow::Error) {
        tracing::warn!(sink = %self.name, "state: {e:#}");
        let mut s = lock(&self.status);
        s.last_error = Some(format!("state: {e:#}"));
        s.last_failure_at = Some(now_rfc3339());
    }

    /// Delivers `row`, retrying until it is delivered or rejected; `false` when shutdown
    /// came first.
    async fn deliver(&mut self, row: &OutboxRow) -> bool {
        let mut tries = 0u32;
        loop {
            match self.transport.send(row).await {
                Outcome::Delivered => {
                    self.delivered(row);
                    return true;
                }
                Outcome::Rejected(e) => {
                    self.failed(row, &e, true);
                    return true;
                }
                Outcome::Retry { error, after } => {
                    self.failed(row, &error, false);
                    let wait = backoff(&self.opts, tries, after);
                    tries = tries.saturating_add(1);
                    if self.pause(wait).await {
                        return false;
                    }
                }
            }
        }
    }

    fn delivered(&self, row: &OutboxRow) {
        let m = &self.shared.metrics;
        m.delivered.get_or_create(&self.labels).inc();
        m.sink_failing.get_or_create(&self.labels).set(0);
        let mut s = lock(&self.status);
        if s.failing {
            tracing::info!(
                sink = %self.name,
                failed_attempts = s.consecutive_failures,
                "delivering again"
            );
        }
        s.delivered += 1;
        s.attempts += 1;
        s.consecutive_failures = 0;
        s.failing = false;
        s.retrying = None;
        s.last_delivered = Some(row.key.clone());
        s.last_success_at = Some(now_rfc3339());
    }

    fn failed(&self, row: &OutboxRow, error: &str, rejected: bool) {
        let m = &self.shared.metrics;
        m.delivery_failures.get_or_create(&self.labels).inc();
        let mut s = lock(&self.status);
        s.attempts += 1;
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        let was_failing = s.failing;
        s.failing = s.consecutive_failures >= self.opts.failing_after.max(1);
        m.sink_failing
            .get_or_create(&self.labels)
            .set(i64::from(s.failing));
        s.last_error = Some(format!("{}: {error}", row.key));
        s.last_failure_at = Some(now_rfc3339());
        if rejected {
            s.rejected += 1;
            s.retrying = None;
            tracing::warn!(sink = %self.name, key = %row.key, "rejected, skipped: {error}");
            return;
        }
        s.retrying = Some(row.key.clone());
        // One line when a row first fails and one when the sink turns failing, not one per
        // retry.
        if s.failing && !was_failing {
            tracing::warn!(
                sink = %self.name,
                key = %row.key,
                failed_attempts = s.consecutive_failures,
                "failing, retrying: {error}"
            );
        } else if s.consecutive_failures == 1 {
            tracing::warn!(sink = %self.name, key = %row.key, "delivery failed, retrying: {error}");
        } else {
            tracing::debug!(sink = %self.name, key = %row.key, "retrying: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows these tests queue come before the sink starts; a sink new to the state starts
    /// at the outbox's end, so its cursor is set to the beginning first.
    fn from_the_start(shared: &Shared, specs: &[SinkSpec]) {
        let conn = state::open(&shared.state_dir, false).unwrap();
        for s in specs {
            state::set_cursor(&conn, &s.name(), 0).unwrap();
        }
    }

    use std::net::SocketAddr;
    use std::sync::RwLock;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use serde_json::json;
    use tokio::io::AsyncReadExt;
    use tokio::sync::Notify;

    use crate::metrics::Metrics;

    fn shared(dir: &Path) -> Arc<Shared> {
        Arc::new(Shared {
            view: RwLock::default(),
            outbox: Notify::new(),
            metrics: Metrics::new(),
            ready: AtomicBool::new(true),
            queue_depth: AtomicUsize::new(0),
            state_dir: dir.to_owned(),
        })
    }

    fn opts() -> DeliveryOptions {
        DeliveryOptions {
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
            failing_after: 3,
        }
    }

    fn alert(id: &str) -> String {
        json!({
            "TimeGenerated": "2025-12-22T10:00:00Z", "DeviceName": "web01.contoso.com",
            "RequestCount": 12345, "UniqueSourceIPs": 812, "TotalBytes": null,
            "AttackConfidence": "High", "Rule": "floodwatch", "Vector": "https-flood",
            "VectorShare": 0.97, "Severity": "High", "Reasons": ["41x the expected 301"],
            "Baseline": null, "NewSourceRatio": 0.9,
            "TopSources": [{"IP": "203.0.113.7", "Count": 4210}],
            "MitreTechniques": ["T1499.002"], "Suppressed": false, "SuppressionReason": null,
            "IncidentId": "FW-web01", "AlertId": id, "Stage": "bin",
            "DetectedAt": "2025-12-22T10:05:00Z",
        })
        .to_string()
    }

    fn incident(id: &str) -> String {
        json!({
            "EventId": id, "IncidentId": "FW-web01", "Phase": "opened",
            "DeviceName": "web01.contoso.com", "Start": 1_766_397_600_000_000_000_i64,
            "End": null, "DetectedAt": 1_766_397_690_000_000_000_i64, "Severity": "High",
            "Vector": "https-flood", "PeakRequests": 12345, "AlertBins": 1,
            "Alert": serde_json::from_str::<Value>(&alert("a")).unwrap(),
        })
        .to_string()
    }

    /// Queues a row as the engine does, and wakes the sinks; returns its sequence number.
    fn enqueue(shared: &Shared, key: &str, kind: &str, payload: &str) -> i64 {
        let c = state::open(&shared.state_dir, false).unwrap();
        assert!(state::enqueue(&c, key, kind, 0, payload).unwrap());
        shared.outbox.notify_waiters();
        state::outbox_seq_of(&c, key).unwrap().unwrap()
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn status(sinks: &Sinks, i: usize) -> SinkStatus {
        lock(&sinks.statuses[i]).clone()
    }

    async fn stop(tx: watch::Sender<bool>, handles: Vec<JoinHandle<()>>) {
        tx.send(true).unwrap();
        for h in handles {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("a sink did not stop on shutdown")
                .unwrap();
        }
    }

    fn stored_cursor(shared: &Shared, name: &str) -> i64 {
        state::cursor(&state::open(&shared.state_dir, false).unwrap(), name).unwrap()
    }

    /// A local HTTP receiver: answers 503 (with `Retry-After: 0`) while `fail_left` is above
    /// zero, 400 to the key in `reject`, 200 to the rest, which it records.
    #[derive(Default)]
    struct Receiver {
        fail_left: AtomicUsize,
        reject: Mutex<Option<String>>,
        requests: AtomicUsize,
        /// (Idempotency-Key, User-Agent, body) of each request answered 200.
        accepted: Mutex<Vec<(String, String, Value)>>,
    }

    async fn receive(
        State(rx): State<Arc<Receiver>>,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, [(&'static str, &'static str); 1]) {
        rx.requests.fetch_add(1, Ordering::SeqCst);
        let header = |h: &str| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let key = header("idempotency-key");
        let failing = rx
            .fail_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")]);
        }
        if lock(&rx.reject).as_deref() == Some(key.as_str()) {
            return (StatusCode::BAD_REQUEST, [("x-why", "bad payload")]);
        }
        let body = serde_json::from_str(&body).unwrap();
        lock(&rx.accepted).push((key, header("user-agent"), body));
        (StatusCode::OK, [("x-ok", "1")])
    }

    async fn serve(rx: Arc<Receiver>) -> SocketAddr {
        let app = Router::new().route("/hook", post(receive)).with_state(rx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    fn accepted_keys(rx: &Receiver) -> Vec<String> {
        lock(&rx.accepted)
            .iter()
            .map(|(k, _, _)| k.clone())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn webhook_rides_out_503s_and_delivers_each_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let rx = Arc::new(Receiver::default());
        // 503 until the test has seen the sink report failing.
        rx.fail_left.store(usize::MAX, Ordering::SeqCst);
        let addr = serve(rx.clone()).await;
        let mut keys = Vec::new();
        for i in 0..5 {
            let k = format!("FW-web01:event:{i}");
            enqueue(&shared, &k, "incident", &incident(&k));
            // Alerts in between: not the webhook's kind.
            enqueue(&shared, &format!("alert-{i}"), "alert", &alert("x"));
            keys.push(k);
        }
        let spec = SinkSpec::Webhook(format!("http://{addr}/hook"));
        let name = spec.name();
        let (tx, rx_stop) = watch::channel(false);
        from_the_start(&shared, std::slice::from_ref(&spec));
        let (sinks, handles) = start(&[spec], shared.clone(), rx_stop, opts()).unwrap();

        wait_for("the sink to report failing", || status(&sinks, 0).failing).await;
        let s = status(&sinks, 0);
        assert_eq!(s.kind, "incident");
        assert_eq!(s.delivered, 0);
        assert!(s.consecutive_failures >= 3, "{s:?}");
        assert_eq!(
            s.retrying.as_deref(),
            Some(keys[0].as_str()),
            "stuck on the first"
        );
        assert!(s.last_error.as_deref().unwrap().contains("503"), "{s:?}");
        let labels = SinkLabels { sink: name.clone() };
        assert_eq!(shared.metrics.sink_failing.get_or_create(&labels).get(), 1);

        // Two more refusals, then the receiver is back.
        rx.fail_left.store(2, Ordering::SeqCst);
        wait_for("all five delivered", || status(&sinks, 0).delivered == 5).await;
        let s = status(&sinks, 0);
        assert_eq!(accepted_keys(&rx), keys, "each once, in order");
        for (key, agent, body) in lock(&rx.accepted).iter() {
            assert_eq!(
                body["EventId"],
                key.as_str(),
                "Idempotency-Key is the EventId"
            );
            assert_eq!(body["type"], "floodwatch.incident.opened");
            assert_eq!(agent, &format!("floodwatch/{VERSION}"));
        }
        assert!(!s.failing && s.consecutive_failures == 0 && s.retrying.is_none());
        assert_eq!(s.attempts, rx.requests.load(Ordering::SeqCst) as u64);
        assert_eq!(s.last_delivered.as_deref(), Some(keys[4].as_str()));
        let m = &shared.metrics;
        assert_eq!(m.delivered.get_or_create(&labels).get(), 5);
        assert_eq!(
            m.delivery_failures.get_or_create(&labels).get(),
            s.attempts - 5
        );
        assert_eq!(m.sink_failing.get_or_create(&labels).get(), 0);
        // The trailing alert row is passed over too, once the sink is idle.
        let last = enqueue(&shared, "alert-last", "alert", &alert("y"));
        wait_for("the cursor past the last row", || {
            stored_cursor(&shared, &name) == last
        })
        .await;
        stop(tx, handles).await;
        assert_eq!(rx.requests.load(Ordering::SeqCst) as u64, s.attempts);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_payload_is_counted_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let rx = Arc::new(Receiver::default());
        *lock(&rx.reject) = Some("e2".into());
        let addr = serve(rx.clone()).await;
        for k in ["e1", "e2", "e3"] {
            enqueue(&shared, k, "incident", &incident(k));
        }
        let (tx, rx_stop) = watch::channel(false);
        let spec = SinkSpec::Slack(format!("http://{addr}/hook"));
        from_the_start(&shared, std::slice::from_ref(&spec));
        let (sinks, handles) = start(&[spec], shared.clone(), rx_stop, opts()).unwrap();
        wait_for("two delivered", || status(&sinks, 0).delivered == 2).await;
        let s = status(&sinks, 0);
        assert_eq!(accepted_keys(&rx), ["e1", "e3"]);
        assert_eq!((s.rejected, s.attempts), (1, 3), "no retry of a refusal");
        let err = s.last_error.unwrap();
        assert!(err.starts_with("e2: ") && err.contains("400"), "{err}");
        assert!(!s.failing && s.consecutive_failures == 0);
        // Slack got Block Kit.
        assert!(lock(&rx.accepted)[0].2["blocks"].is_array());
        stop(tx, handles).await;
    }

    /// Lines of a file sink's file, each parsed.
    fn lines(path: &Path) -> Vec<Value> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "complete lines only"
        );
        text.lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_receiver_does_not_hold_back_a_file_sink() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let path = dir.path().join("alerts.jsonl");
        let specs = [
            SinkSpec::Webhook(format!("http://{dead}/hook")),
            SinkSpec::Jsonl(path.clone()),
        ];
        let (tx, rx_stop) = watch::channel(false);
        from_the_start(&shared, &specs);
        let (sinks, handles) = start(&specs, shared.clone(), rx_stop, opts()).unwrap();
        let a1 = enqueue(&shared, "a1", "alert", &alert("a1"));
        enqueue(&shared, "i1", "incident", &incident("i1"));
        enqueue(&shared, "a2", "alert", &alert("a2"));
        enqueue(&shared, "a3", "alert", &alert("a3"));
        let last = enqueue(&shared, "i2", "incident", &incident("i2"));

        wait_for("three lines", || lines(&path).len() == 3).await;
        let ids: Vec<Value> = lines(&path).iter().map(|l| l["AlertId"].clone()).collect();
        assert_eq!(ids, [json!("a1"), json!("a2"), json!("a3")]);
        wait_for("the jsonl cursor past the trailing incident", || {
            stored_cursor(&shared, &specs[1].name()) == last
        })
        .await;
        wait_for("the webhook to report failing", || {
            status(&sinks, 0).failing
        })
        .await;
        let s = status(&sinks, 0);
        assert_eq!(s.delivered, 0);
        assert_eq!(s.retrying.as_deref(), Some("i1"));
        assert!(
            s.last_error.unwrap().contains("i1: POST"),
            "where it failed"
        );
        let j = status(&sinks, 1);
        assert_eq!((j.delivered, j.attempts, j.failing), (3, 3, false));
        // A sink in its backoff stops on shutdown too.
        stop(tx, handles).await;
        // Past a1 (not its kind), and not past i1, which it never delivered.
        assert_eq!(stored_cursor(&shared, &specs[0].name()), a1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_sinks_write_each_alert_once_across_a_lost_cursor() {
        for ocsf in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let shared = shared(dir.path());
            let path = dir.path().join("out.jsonl");
            let spec = if ocsf {
                SinkSpec::Ocsf(path.clone())
            } else {
                SinkSpec::Jsonl(path.clone())
            };
            let key_of = |l: &Value| {
                if ocsf {
                    l["finding_info"]["uid"].clone()
                } else {
                    l["AlertId"].clone()
                }
            };
            let mut seqs = Vec::new();
            for k in ["a1", "a2", "a3"] {
                seqs.push(enqueue(&shared, k, "alert", &alert(k)));
            }
            let (tx, rx_stop) = watch::channel(false);
            let (sinks, handles) = {
                from_the_start(&shared, std::slice::from_ref(&spec));
                start(std::slice::from_ref(&spec), shared.clone(), rx_stop, opts()).unwrap()
            };
            wait_for("three lines", || status(&sinks, 0).delivered == 3).await;
            stop(tx, handles).await;
            assert_eq!(lines(&path).len(), 3);

            // The crash: the cursor update was lost, and a fourth write was cut short.
            let c = state::open(dir.path(), false).unwrap();
            c.execute(
                "UPDATE sink_cursor SET seq = 0 WHERE sink = ?1",
                [spec.name()],
            )
            .unwrap();
            assert_eq!(state::cursor(&c, &spec.name()).unwrap(), 0);
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(br#"{"AlertId":"a4","Devi"#).unwrap();
            drop(f);
            enqueue(&shared, "a4", "alert", &alert("a4"));

            let (tx, rx_stop) = watch::channel(false);
            let (sinks, handles) =
                start(std::slice::from_ref(&spec), shared.clone(), rx_stop, opts()).unwrap();
            wait_for("the fourth line", || status(&sinks, 0).delivered == 1).await;
            stop(tx, handles).await;
            let s = status(&sinks, 0);
            assert_eq!(
                (s.attempts, s.last_delivered.as_deref(), s.cursor),
                (1, Some("a4"), seqs[2] + 1),
                "the cursor was recovered from the file: a1..a3 not written again"
            );
            let got: Vec<Value> = lines(&path).iter().map(key_of).collect();
            assert_eq!(
                got,
                [json!("a1"), json!("a2"), json!("a3"), json!("a4")],
                "ocsf: {ocsf}: no duplicate, no torn line"
            );
            if ocsf {
                assert_eq!(lines(&path)[0]["class_uid"], 2004);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn syslog_udp_sends_one_datagram_per_alert() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let spec = SinkSpec::SyslogUdp(sock.local_addr().unwrap().to_string());
        let (tx, rx_stop) = watch::channel(false);
        from_the_start(&shared, std::slice::from_ref(&spec));
        let (sinks, handles) = start(&[spec], shared.clone(), rx_stop, opts()).unwrap();
        enqueue(&shared, "a1", "alert", &alert("a1"));
        enqueue(&shared, "i1", "incident", &incident("i1"));
        enqueue(&shared, "a2", "alert", &alert("a2"));
        let mut buf = vec![0u8; 65_536];
        for id in ["a1", "a2"] {
            let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
                .await
                .expect("a datagram")
                .unwrap();
            let msg = std::str::from_utf8(&buf[..n]).unwrap();
            assert!(
                msg.starts_with("<130>1 2025-12-22T10:05:00Z "),
                "local0, critical: {msg}"
            );
            assert!(msg.contains(" floodwatch - ddos - CEF:0|floodwatch|floodwatch|"));
            assert!(msg.contains(&format!("cs1={id} cs1Label=AlertId")), "{msg}");
            assert!(!msg.ends_with('\n'), "no framing over UDP");
        }
        wait_for("both counted", || status(&sinks, 0).delivered == 2).await;
        stop(tx, handles).await;
    }

    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("in time")
    }

    /// Reads one RFC 6587 octet-counted frame.
    async fn frame(conn: &mut tokio::net::TcpStream) -> String {
        let mut len = Vec::new();
        loop {
            let b = conn.read_u8().await.unwrap();
            if b == b' ' {
                break;
            }
            assert!(b.is_ascii_digit(), "MSG-LEN digits then a space");
            len.push(b);
        }
        let n: usize = std::str::from_utf8(&len).unwrap().parse().unwrap();
        let mut msg = vec![0u8; n];
        conn.read_exact(&mut msg).await.unwrap();
        String::from_utf8(msg).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn syslog_tcp_counts_octets_and_reconnects() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let spec = SinkSpec::SyslogTcp(listener.local_addr().unwrap().to_string());
        let (tx, rx_stop) = watch::channel(false);
        from_the_start(&shared, std::slice::from_ref(&spec));
        let (sinks, handles) = start(&[spec], shared.clone(), rx_stop, opts()).unwrap();
        enqueue(&shared, "a1", "alert", &alert("a1"));
        enqueue(&shared, "a2", "alert", &alert("a2"));
        let (mut conn, _) = within(listener.accept()).await.unwrap();
        for id in ["a1", "a2"] {
            let msg = within(frame(&mut conn)).await;
            assert!(msg.starts_with("<130>1 "), "{msg}");
            assert!(msg.contains(&format!("cs1={id} ")), "{msg}");
        }
        // The collector restarts: the next message comes on a new connection.
        drop(conn);
        enqueue(&shared, "a3", "alert", &alert("a3"));
        let (mut conn, _) = within(listener.accept()).await.unwrap();
        let msg = within(frame(&mut conn)).await;
        assert!(msg.contains("cs1=a3 "), "{msg}");
        wait_for("three counted", || status(&sinks, 0).delivered == 3).await;
        stop(tx, handles).await;
    }

    #[tokio::test]
    async fn a_sink_given_twice_or_an_unwritable_file_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let (_tx, rx_stop) = watch::channel(false);
        let p = dir.path().join("a.jsonl");
        let twice = [SinkSpec::Jsonl(p.clone()), SinkSpec::Jsonl(p)];
        let e = start(&twice, shared.clone(), rx_stop.clone(), opts())
            .err()
            .unwrap();
        assert!(e.to_string().contains("given twice"), "{e:#}");
        let missing = [SinkSpec::Jsonl(dir.path().join("no/such/dir/a.jsonl"))];
        let e = start(&missing, shared, rx_stop, opts()).err().unwrap();
        assert!(format!("{e:#}").contains("cannot open"), "{e:#}");
    }

    #[test]
    fn backoff_is_capped_full_jitter_and_honours_retry_after() {
        let o = DeliveryOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..DeliveryOptions::default()
        };
        let waits: Vec<Duration> = (0..500).map(|_| backoff(&o, 0, None)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(100)));
        assert!(
            waits.iter().any(|w| *w < Duration::from_millis(50)),
            "jitter spreads the waits"
        );
        for tries in [3, 10, 40, u32::MAX] {
            assert!((0..200).all(|_| backoff(&o, tries, None) <= o.max_backoff));
        }
        assert!(
            (0..200).any(|_| backoff(&o, 3, None) > Duration::from_millis(100)),
            "the bound doubles"
        );
        let ra = Duration::from_millis(700);
        assert!((0..200).all(|_| backoff(&o, 0, Some(ra)) >= ra));
        assert_eq!(
            backoff(&o, 0, Some(Duration::from_secs(3600))),
            o.max_backoff,
            "within max_backoff"
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date passed: now"
        );
        assert_eq!(retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now), None);
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn last_line_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "one\ntwo\nthr").unwrap();
        let mut f = Writer::open(&p).unwrap();
        let (line, cut) = last_line(&mut f).unwrap();
        assert_eq!((line.as_deref(), cut), (Some(&b"two"[..]), 3));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");
        std::fs::write(&p, "only-torn").unwrap();
        let mut f = Writer::open(&p).unwrap();
        assert_eq!(last_line(&mut f).unwrap(), (None, 9));
        assert_eq!(std::fs::read(&p).unwrap(), b"");
        // A last line longer than one read block.
        let long = "x".repeat(200_000);
        std::fs::write(&p, format!("a\n{long}\n")).unwrap();
        let mut f = Writer::open(&p).unwrap();
        let (line, cut) = last_line(&mut f).unwrap();
        assert_eq!((line.unwrap().len(), cut), (200_000, 0));
    }
}
