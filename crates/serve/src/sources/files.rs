//! Followed files and Storage-export folders.
//!
//! - [`run_dir`] follows a folder of Azure Storage streaming-export blobs
//!   (`insights-logs-advancedhunting-devicenetworkevents/tenantId=…/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json`):
//!   append blobs that grow during their hour, one envelope per line, new hour folders
//!   appearing. A downloaded or synced container is read as the plain folder tree it is.
//! - [`run_file`] follows one growing file the way `tail -F` does, through rotation.
//!
//! Both poll rather than wait for inotify: folders synced by a tool (azcopy, rclone, OneDrive)
//! and network shares (SMB, NFS, blobfuse) often deliver no inotify events at all, and a poll
//! every 250 ms costs a few `stat`s.
//!
//! Only whole lines are read (up to the last `\n`; a partial last line waits for the rest), and a
//! position moves on only once the engine has answered that the batch it ends is durable, so a
//! restart neither loses nor double-counts a line. A line longer than
//! `ingest.max_line_bytes` is reported (`too-long`, with its line and offset) as soon as it
//! passes the limit and then stepped over as it streams in, never held whole.
//!
//! The pieces shared with [`super::stdin`] live here too: [`Cursor`] and [`cut`] (where a
//! stream stands and how a buffer is cut into batches) and [`Feed`] (sending to the engine,
//! retrying until durable).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use floodwatch_core::{Aggregates, Diagnostics, Location, SkipReason};
use floodwatch_pipeline::reader::Origin;
use floodwatch_pipeline::{LineReader, Partial};

use super::SourceCtx;

/// Most bytes read, and so sent to the engine, at once: a backlog goes as many batches, so no
/// one batch holds the engine's transaction (or memory) for long.
pub(crate) const BATCH: usize = 4 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How often to look and how long to wait; tests shorten them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// How often the file or tree is looked at. Polling, not inotify: see the module docs.
    pub poll: Duration,
    /// A Storage blob whose size has not changed for this long (or whose modification time is
    /// this old), with a later blob after it, is finished: its hour is over.
    pub settle: Duration,
    /// First wait before sending a batch the engine could not store again (doubling to 30 s).
    pub retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            poll: Duration::from_millis(250),
            settle: Duration::from_secs(600),
            retry: Duration::from_secs(1),
        }
    }
}

impl Timing {
    fn settled(&self, changed: Instant, modified: Option<SystemTime>) -> bool {
        changed.elapsed() >= self.settle
            || modified
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age >= self.settle)
    }
}

// ---------------------------------------------------------------------------------------------
// Cutting a stream into batches of whole lines.

/// Where reading stands in one stream (a file, a decompressed blob, standard input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Offset of the next byte to look at: everything before it is durable, or was dropped as
    /// part of a line already reported as too long.
    pub offset: u64,
    /// 1-based number of the line that starts (or, when skipping, goes on) at `offset`.
    pub line: u64,
    /// Inside a line already reported as too long: drop bytes through its `\n`.
    pub skipping: bool,
}

impl Cursor {
    pub(crate) const START: Cursor = Cursor {
        offset: 0,
        line: 1,
        skipping: false,
    };
}

/// What to do with the bytes read from a [`Cursor`] on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Send the first `n` bytes: `lines` whole lines (the last one may be the unterminated end
    /// of a finished stream).
    Lines { n: usize, lines: u64 },
    /// No `\n` within the limit: report a too-long line of (at least) `n` bytes, drop them,
    /// and skip to its end.
    TooLong { n: usize },
    /// Drop the first `n` bytes (the rest of a too-long line, or a byte-order mark); `ended`:
    /// that line ended there.
    Drop { n: usize, ended: bool },
    /// Nothing whole yet: wait for more.
    Wait,
}

/// Decides what the bytes `data`, read from `cur` on, are. `last`: the stream has ended (its
/// last line is whole even without a `\n`). Batches stop at the last `\n` within [`BATCH`]
/// bytes (or at the first `\n`, for a single line longer than that).
pub(crate) fn cut(data: &[u8], cur: &Cursor, last: bool, max_line: usize) -> Cut {
    if data.is_empty() {
        return Cut::Wait;
    }
    if cur.skipping {
        return match data.iter().position(|&b| b == b'\n') {
            Some(i) => Cut::Drop {
                n: i + 1,
                ended: true,
            },
            None => Cut::Drop {
                n: data.len(),
                ended: last,
            },
        };
    }
    if cur.offset == 0 {
        if data.starts_with(BOM) {
            return Cut::Drop {
                n: BOM.len(),
                ended: false,
            };
        }
        if !last && data.len() < BOM.len() && BOM.starts_with(data) {
            return Cut::Wait;
        }
    }
    let head = &data[..data.len().min(BATCH)];
    let end = head
        .iter()
        .rposition(|&b| b == b'\n')
        .or_else(|| data.iter().position(|&b| b == b'\n'));
    match end {
        Some(i) => Cut::Lines {
            n: i + 1,
            lines: data[..=i].iter().filter(|&&b| b == b'\n').count() as u64,
        },
        None if data.len() > max_line => Cut::TooLong { n: data.len() },
        None if last => Cut::Lines {
            n: data.len(),
            lines: 1,
        },
        None => Cut::Wait,
    }
}

/// What a stream's first `offset` bytes held, to resume at `offset` with the right line
/// numbers.
struct Prefix {
    read: u64,
    newlines: u64,
    last: Option<u8>,
    bom: bool,
}

impl Prefix {
    /// Reads (and counts) up to `n` bytes of `r`.
    fn read(r: &mut impl Read, n: u64) -> io::Result<Prefix> {
        let mut p = Prefix {
            read: 0,
            newlines: 0,
            last: None,
            bom: false,
        };
        let mut buf = vec![0u8; 1 << 20];
        while p.read < n {
            let want = (n - p.read).min(buf.len() as u64) as usize;
            let got = match r.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if p.read == 0 {
                p.bom = buf[..got].starts_with(BOM);
            }
            p.newlines += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
            p.last = Some(buf[got - 1]);
            p.read += got as u64;
        }
        Ok(p)
    }

    /// A position is always at a line start, except inside a line reported as too long: then
    /// the byte before it is not a `\n`, and reading goes on by skipping to the line's end.
    fn cursor(&self) -> Cursor {
        let at_start = self.read == 0
            || self.last == Some(b'\n')
            || (self.bom && self.read == BOM.len() as u64);
        Cursor {
            offset: self.read,
            line: self.newlines + 1,
            skipping: !at_start,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sending to the engine.

/// Whether a source goes on.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Go,
    /// Shutdown came: the batch in hand was finished (or, if the engine could not store it,
    /// left for the next run to read again).
    Stop,
}

/// One batch for the engine.
pub(crate) enum Payload<'a> {
    /// Whole lines.
    Lines(&'a [u8]),
    /// A stretch that is no record, reported as a skip at the cursor.
    Skip {
        reason: SkipReason,
        bytes: u64,
        message: String,
    },
}

/// How a stream's position is written, and learns what became durable.
pub(crate) trait Track: Send {
    /// The position text to store once the stream stands at `next`.
    fn position(&self, next: &Cursor) -> Result<Option<String>>;
    /// The batch that ends at `next` is durable.
    fn durable(&mut self, _next: &Cursor) {}
}

/// Standard input: nowhere to go back to.
pub(crate) struct NoPosition;

impl Track for NoPosition {
    fn position(&self, _next: &Cursor) -> Result<Option<String>> {
        Ok(None)
    }
}

/// A source's way to the engine: its one [`LineReader`] (long-lived, so duplicates are found
/// across batches) and its input name.
pub(crate) struct Feed {
    pub ctx: SourceCtx,
    reader: LineReader,
    pub input: String,
    retry: Duration,
}

impl Feed {
    pub(crate) fn new(ctx: SourceCtx, input: String, retry: Duration) -> Feed {
        Feed {
            reader: ctx.reader(),
            ctx,
            input,
            retry,
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.ctx.shutdown.borrow()
    }

    /// Waits `d`, or less if shutdown comes; `true`: stop.
    pub(crate) async fn pause(&mut self, d: Duration) -> bool {
        pause(&mut self.ctx.shutdown, d).await
    }

    /// Reads one batch and sends it until the engine has stored it. On an error from the
    /// engine it waits and sends the same batch again; `Err` only when the engine is gone.
    pub(crate) async fn deliver(
        &mut self,
        source: &str,
        at: &Cursor,
        payload: Payload<'_>,
        position: Option<String>,
    ) -> Result<Flow> {
        let (mut partial, diag) = match payload {
            Payload::Lines(data) => self.reader.read(
                data,
                Origin {
                    source,
                    first_line: at.line,
                    base_offset: at.offset,
                },
            ),
            Payload::Skip {
                reason,
                bytes,
                message,
            } => {
                let mut diag = Diagnostics {
                    records_read: 1,
                    bytes_read: bytes,
                    ..Diagnostics::default()
                };
                let location = Location {
                    source: source.to_owned(),
                    line: Some(at.line),
                    offset: Some(at.offset),
                };
                diag.skip(reason, location, message);
                let partial = Partial {
                    source: String::new(),
                    aggs: Aggregates::empty(self.ctx.step),
                };
                (partial, diag)
            }
        };
        // Late events are counted per input (what the engine's input statistics read), not per
        // file: that also keeps the engine's late counters to one key per input.
        partial.source.clone_from(&self.input);
        let mut wait = self.retry;
        loop {
            // The partial is sent as a copy: if the engine cannot store it, the same partial is
            // sent again. Reading the bytes again instead would find every event a duplicate
            // of itself in this reader's filter.
            let r = self
                .ctx
                .send_partial(&self.input, partial.clone(), diag.clone(), position.clone())
                .await;
            match r {
                Ok(_) => return Ok(Flow::Go),
                Err(e) if self.ctx.engine.is_closed() => {
                    bail!("{}: {source}: line {}: {e}", self.input, at.line)
                }
                Err(e) => {
                    tracing::warn!(
                        input = %self.input,
                        "{source}: line {}: the engine could not store the batch, sending it again in {wait:?}: {e}",
                        at.line
                    );
                    if self.pause(wait).await {
                        return Ok(Flow::Stop);
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Cuts `buf` (bytes from `cur` on) into batches and sends them, until only a partial line
    /// (or nothing) is left; `last`: the stream has ended.
    pub(crate) async fn send_buffered(
        &mut self,
        source: &str,
        buf: &mut Vec<u8>,
        cur: &mut Cursor,
        last: bool,
        track: &mut impl Track,
    ) -> Result<Flow> {
        let max_line = self.ctx.settings.ingest.max_line_bytes;
        loop {
            match cut(buf, cur, last, max_line) {
                Cut::Wait => return Ok(Flow::Go),
                Cut::Drop { n, ended } => {
                    buf.drain(..n);
                    cur.offset += n as u64;
                    if ended {
                        cur.line += 1;
                        cur.skipping = false;
                    }
                }
                Cut::Lines { n, lines } => {
                    if self.stopping() {
                        return Ok(Flow::Stop);
                    }
                    let next = Cursor {
                        offset: cur.offset + n as u64,
                        line: cur.line + lines,
                        skipping: false,
                    };
                    let position = track.position(&next)?;
                    if self
                        .deliver(source, cur, Payload::Lines(&buf[..n]), position)
                        .await?
                        == Flow::Stop
                    {
                        return Ok(Flow::Stop);
                    }
                    track.durable(&next);
                    buf.drain(..n);
                    *cur = next;
                }
                Cut::TooLong { n } => {
                    if self.stopping() {
                        return Ok(Flow::Stop);
                    }
                    // Reported now, while the line still streams in, and stored with a
                    // position inside it: a restart resumes by skipping to its end, and does
                    // not report it again.
                    let next = Cursor {
                        offset: cur.offset + n as u64,
                        line: cur.line,
                        skipping: true,
                    };
                    let payload = Payload::Skip {
                        reason: SkipReason::TooLong,
                        bytes: n as u64,
                        message: format!(
                            "line is longer than the limit of {max_line} bytes (ingest.max_line_bytes)"
                        ),
                    };
                    let position = track.position(&next)?;
                    if self.deliver(source, cur, payload, position).await? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                    track.durable(&next);
                    buf.drain(..n);
                    *cur = next;
                }
            }
        }
    }
}

/// Waits `d`, or less if shutdown comes; `true`: stop.
pub(crate) async fn pause(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    let woke = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.wait_for(|s| *s) => true,
    };
    woke || *shutdown.borrow()
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a file-reading thread failed")
}

/// Appends up to `want` bytes of `file` from `at` on to `buf`; returns how many came.
fn read_into(file: &File, at: u64, want: usize, mut buf: Vec<u8>) -> (Vec<u8>, io::Result<usize>) {
    let start = buf.len();
    buf.resize(start + want, 0);
    let mut got = 0;
    let mut f = file;
    let r = match f.seek(SeekFrom::Start(at)) {
        Err(e) => Err(e),
        Ok(_) => loop {
            if got == want {
                break Ok(got);
            }
            match f.read(&mut buf[start + got..]) {
                Ok(0) => break Ok(got),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        },
    };
    buf.truncate(start + got);
    (buf, r)
}

/// How a drain of a plain file ended.
enum Drained {
    /// Everything up to the length given was read (a partial last line is left for later).
    CaughtUp,
    Stopped,
    /// The file could not be read (the message says where); try again later.
    Failed(String),
}

/// Reads what a plain file holds from `cur` up to `len` and sends it in batches. Memory: at
/// most a batch plus one line within the limit.
async fn drain_plain(
    feed: &mut Feed,
    source: &str,
    file: &Arc<File>,
    len: u64,
    cur: &mut Cursor,
    last: bool,
    track: &mut impl Track,
) -> Result<Drained> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let from = cur.offset + buf.len() as u64;
        if from >= len {
            let flow = feed
                .send_buffered(source, &mut buf, cur, last, track)
                .await?;
            return Ok(match flow {
                Flow::Go => Drained::CaughtUp,
                Flow::Stop => Drained::Stopped,
            });
        }
        let want = (len - from).min(BATCH as u64) as usize;
        let f = file.clone();
        let (b, r) = blocking(move || read_into(&f, from, want, buf)).await?;
        buf = b;
        let got = match r {
            Ok(g) => g,
            Err(e) => {
                return Ok(Drained::Failed(format!(
                    "{source}: reading at byte {from}: {e}"
                )));
            }
        };
        if got == 0 {
            // Shorter than it was a moment ago: the caller's next look finds out why.
            return Ok(Drained::CaughtUp);
        }
        let at_end = from + got as u64 >= len;
        if feed
            .send_buffered(source, &mut buf, cur, last && at_end, track)
            .await?
            == Flow::Stop
        {
            return Ok(Drained::Stopped);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One followed file.

/// Which file a path named: a rotation shows as a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    inode: u64,
}

#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        dev: m.dev(),
        inode: m.ino(),
    }
}

/// Without inode numbers, rotation is seen only as the file getting shorter.
#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> FileId {
    FileId { dev: 0, inode: 0 }
}

/// `file:PATH`'s position: which file (device, inode), how far, and the line there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FilePosition {
    dev: u64,
    inode: u64,
    offset: u64,
    /// Line number at `offset` (counted again from the start when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
}

struct FileTrack {
    id: FileId,
}

impl Track for FileTrack {
    fn position(&self, next: &Cursor) -> Result<Option<String>> {
        let p = FilePosition {
            dev: self.id.dev,
            inode: self.id.inode,
            offset: next.offset,
            line: Some(next.line),
        };
        Ok(Some(serde_json::to_string(&p)?))
    }
}

struct Followed {
    file: Arc<File>,
    id: FileId,
    cur: Cursor,
    /// Length when last read to its end: nothing new while it stays so.
    seen: Option<u64>,
}

/// How a file was opened, for the log.
enum Opened {
    Fresh,
    Resumed,
    /// The stored position is past the end of the same file.
    Truncated {
        was: u64,
    },
    /// The path names another file than the stored position's.
    Replaced,
}

/// Opens `path` (`None`: it does not exist) and finds where to start.
fn open_followed(
    path: &Path,
    stored: Option<&FilePosition>,
) -> io::Result<Option<(Followed, Opened)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let id = file_id(&meta);
    let len = meta.len();
    let (cur, how) = match stored {
        Some(p)
            if FileId {
                dev: p.dev,
                inode: p.inode,
            } == id
                && p.offset <= len =>
        {
            let cur = match p.line {
                Some(line) => Cursor {
                    line,
                    ..resume_at(&file, p.offset)?
                },
                None => {
                    let mut f = &file;
                    f.seek(SeekFrom::Start(0))?;
                    Prefix::read(&mut f, p.offset)?.cursor()
                }
            };
            (cur, Opened::Resumed)
        }
        Some(p)
            if FileId {
                dev: p.dev,
                inode: p.inode,
            } == id =>
        {
            (Cursor::START, Opened::Truncated { was: p.offset })
        }
        Some(_) => (Cursor::START, Opened::Replaced),
        None => (Cursor::START, Opened::Fresh),
    };
    Ok(Some((
        Followed {
            file: Arc::new(file),
            id,
            cur,
            seen: None,
        },
        how,
    )))
}

/// The cursor at `offset` of `file`, knowing the line number: only whether it is inside a line.
fn resume_at(file: &File, offset: u64) -> io::Result<Cursor> {
    let mut f = file;
    let (from, n) = if offset == BOM.len() as u64 {
        (0, BOM.len() as u64)
    } else {
        (offset.saturating_sub(1), offset.min(1))
    };
    f.seek(SeekFrom::Start(from))?;
    let p = Prefix::read(&mut f, n)?;
    let mid = offset > 0 && p.last != Some(b'\n') && !(offset == BOM.len() as u64 && p.bom);
    Ok(Cursor {
        offset,
        line: 1,
        skipping: mid,
    })
}

/// Logs a trouble once, until it changes or clears.
#[derive(Default)]
struct Once(Option<String>);

impl Once {
    fn warn(&mut self, input: &str, msg: String) {
        if self.0.as_ref() != Some(&msg) {
            tracing::warn!(input, "{msg}");
            self.0 = Some(msg);
        }
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

/// Follows one growing file (`file:PATH`), as `tail -F` does: complete lines as they are
/// appended; when the path names a new file (rename and create) the old one is read to its end
/// first, and a file that got shorter (truncated, `copytruncate`) is read again from the start.
/// A missing file is waited for. The position (`{"dev","inode","offset","line"}`) is resumed
/// only in the same file (same device and inode).
///
/// What cannot be seen by polling: a truncation followed by new writes past the old length
/// before the next look, and a file replaced and rotated again between two looks (the middle
/// one is never read).
pub async fn run_file(path: PathBuf, ctx: SourceCtx) -> Result<()> {
    follow_file(path, ctx, Timing::default()).await
}

async fn follow_file(path: PathBuf, ctx: SourceCtx, t: Timing) -> Result<()> {
    let input = format!("file:{}", path.display());
    let source = path.display().to_string();
    let mut stored: Option<FilePosition> = match ctx.positions.get(&input) {
        Some(p) => Some(serde_json::from_str(p).with_context(|| {
            format!("{input}: the stored position {p:?} is not a file position")
        })?),
        None => None,
    };
    let mut feed = Feed::new(ctx, input.clone(), t.retry);
    let mut open: Option<Followed> = None;
    // Logged once: "does not exist (yet)" / "is gone".
    let mut absent = false;
    let mut trouble = Once::default();
    loop {
        if feed.stopping() {
            return Ok(());
        }
        let Some(f) = open.as_mut() else {
            let p = path.clone();
            let st = stored.clone();
            match blocking(move || open_followed(&p, st.as_ref())).await? {
                Ok(Some((f, how))) => {
                    let c = f.cur;
                    match how {
                        Opened::Fresh => {
                            tracing::info!(input, "{source}: following from the start")
                        }
                        Opened::Resumed => tracing::info!(
                            input,
                            "{source}: resuming at byte {} (line {})",
                            c.offset,
                            c.line
                        ),
                        Opened::Truncated { was } => tracing::warn!(
                            input,
                            "{source}: shorter than the {was} bytes read before: reading it from the start"
                        ),
                        Opened::Replaced => tracing::warn!(
                            input,
                            "{source}: not the file read before (rotated while stopped?): reading it \
                             from the start; lines written to the old one after the stored position \
                             are not read"
                        ),
                    }
                    stored = None;
                    absent = false;
                    trouble.clear();
                    open = Some(f);
                    continue;
                }
                Ok(None) => {
                    if !absent {
                        tracing::info!(input, "{source}: does not exist (yet): waiting for it");
                        absent = true;
                    }
                }
                Err(e) => trouble.warn(&input, format!("{source}: cannot open: {e}")),
            }
            if feed.pause(t.poll).await {
                return Ok(());
            }
            continue;
        };

        let (file, p) = (f.file.clone(), path.clone());
        let (len, now_id) = blocking(move || {
            let len = file.metadata().map(|m| m.len());
            let id = match std::fs::metadata(&p) {
                Ok(m) => Ok(Some(file_id(&m))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            };
            (len, id)
        })
        .await?;
        let len = match len {
            Ok(l) => l,
            Err(e) => {
                trouble.warn(&input, format!("{source}: cannot stat the open file: {e}"));
                if feed.pause(t.poll).await {
                    return Ok(());
                }
                continue;
            }
        };
        let mut track = FileTrack { id: f.id };
        if len < f.cur.offset {
            tracing::info!(
                input,
                "{source}: truncated to {len} bytes (had been read to byte {}): reading it from the start",
                f.cur.offset
            );
            f.cur = Cursor::START;
            f.seen = None;
            // Stored at once: should the file grow past the old offset before the next batch,
            // a restart must not resume there.
            let pos = track.position(&f.cur)?;
            if feed
                .deliver(&source, &f.cur, Payload::Lines(&[]), pos)
                .await?
                == Flow::Stop
            {
                return Ok(());
            }
        }
        if f.seen != Some(len) {
            match drain_plain(
                &mut feed, &source, &f.file, len, &mut f.cur, false, &mut track,
            )
            .await?
            {
                Drained::CaughtUp => {
                    f.seen = Some(len);
                    trouble.clear();
                }
                Drained::Stopped => return Ok(()),
                Drained::Failed(m) => trouble.warn(&input, m),
            }
        }
        match now_id {
            Ok(Some(id)) if id != f.id => {
                // Rotated: what was appended to the old file before the switch is still there
                // (it is open); read it to its end, its last line whole even without a `\n`.
                let file = f.file.clone();
                let len = blocking(move || file.metadata().map(|m| m.len())).await?;
                let len = len.unwrap_or(f.seen.unwrap_or(f.cur.offset));
                match drain_plain(
                    &mut feed, &source, &f.file, len, &mut f.cur, true, &mut track,
                )
                .await?
                {
                    Drained::Stopped => return Ok(()),
                    Drained::Failed(m) => trouble.warn(&input, m),
                    Drained::CaughtUp => {}
                }
                tracing::info!(
                    input,
                    "{source}: rotated: the old file was read to byte {} (line {}); following the new one from the start",
                    f.cur.offset,
                    f.cur.line
                );
                open = None;
                continue;
            }
            Ok(Some(_)) => {
                if absent {
                    tracing::info!(input, "{source}: is back");
                    absent = false;
                }
            }
            Ok(None) => {
                if !absent {
                    tracing::info!(
                        input,
                        "{source}: is gone (moved or deleted): reading on in the open file and waiting for a new one"
                    );
                    absent = true;
                }
            }
            Err(e) => trouble.warn(&input, format!("{source}: cannot stat: {e}")),
        }
        if feed.pause(t.poll).await {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A folder of Storage-export blobs.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    Gzip,
    Zstd,
}

/// Which files of the tree are read: `*.json`, `*.jsonl`, `*.ndjson`, each optionally `.gz` or
/// `.zst`; not hidden ones (sync tools' temporary files: rclone's `*.partial`, `.~tmp~`).
fn kind_of(name: &str) -> Option<Kind> {
    if name.starts_with('.') {
        return None;
    }
    let (stem, kind) = if let Some(s) = name.strip_suffix(".gz") {
        (s, Kind::Gzip)
    } else if let Some(s) = name.strip_suffix(".zst") {
        (s, Kind::Zstd)
    } else {
        (name, Kind::Plain)
    };
    [".json", ".jsonl", ".ndjson"]
        .iter()
        .any(|e| stem.ends_with(e))
        .then_some(kind)
}

#[derive(Clone, Debug)]
struct Listed {
    /// Path below the root, `/`-separated: the key of the position, and the sort order
    /// (chronological in the Storage layout).
    rel: String,
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    kind: Kind,
}

struct Listing {
    files: Vec<Listed>,
    /// Something below the root could not be listed: then nothing is taken as gone.
    trouble: Option<String>,
}

/// Lists the tree, sorted, leaving out what sorts at or before `finished` (whole folders of it
/// are not even read).
fn list(root: &Path, finished: Option<&str>) -> io::Result<Listing> {
    let mut files = Vec::new();
    let mut trouble = None;
    let mut stack = vec![(root.to_path_buf(), String::new())];
    let mut first = true;
    while let Some((dir, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if first => return Err(e),
            Err(e) => {
                trouble.get_or_insert_with(|| format!("{}: {e}", dir.display()));
                continue;
            }
        };
        first = false;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    trouble.get_or_insert_with(|| format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            // Symbolic links to files are followed; to folders not (no loops).
            let ft = match entry.file_type() {
                Ok(t) => t,
                Err(e) => {
                    trouble.get_or_insert_with(|| format!("{}: {e}", path.display()));
                    continue;
                }
            };
            if ft.is_dir() {
                let prefix = format!("{child}/");
                if let Some(f) = finished
                    && prefix.as_str() < f
                    && !f.starts_with(&prefix)
                {
                    // Everything in it sorts before `finished`.
                    continue;
                }
                stack.push((path, child));
                continue;
            }
            let Some(kind) = kind_of(&name) else {
                continue;
            };
            if finished.is_some_and(|f| child.as_str() <= f) {
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                // Gone between listing and looking: the next poll sees.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    trouble.get_or_insert_with(|| format!("{}: {e}", path.display()));
                    continue;
                }
            };
            files.push(Listed {
                rel: child,
                path,
                len: meta.len(),
                modified: meta.modified().ok(),
                kind,
            });
        }
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(Listing { files, trouble })
}

/// How far a blob has been read, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Stand {
    /// Bytes (decompressed, for `.gz`/`.zst`) read.
    At(u64),
    /// A compressed blob read whole.
    Done(DoneMark),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum DoneMark {
    #[serde(rename = "done")]
    Done,
}

const DONE: Stand = Stand::Done(DoneMark::Done);

/// `dir:PATH`'s position.
#[derive(Debug, Default, Deserialize)]
struct DirPosition {
    #[serde(default)]
    files: BTreeMap<String, Stand>,
    #[serde(default)]
    finished: Option<String>,
}

#[derive(Serialize)]
struct DirPositionOut<'a> {
    files: BTreeMap<&'a str, Stand>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished: Option<&'a str>,
}

struct Tracked {
    /// In the last durable position.
    committed: Stand,
    /// Where reading stands in this run; `None` until first read (then line numbers are
    /// counted from the start).
    cur: Option<Cursor>,
    /// Size when last read to its end: nothing new while it stays so.
    read_to: Option<u64>,
    /// Size when last listed, and when (as this process saw) it last changed.
    observed: Option<u64>,
    changed: Instant,
    missing_since: Option<Instant>,
    trouble: Once,
}

impl Tracked {
    fn new(committed: Stand, now: Instant) -> Tracked {
        Tracked {
            committed,
            cur: None,
            read_to: None,
            observed: None,
            changed: now,
            missing_since: None,
            trouble: Once::default(),
        }
    }

    fn committed_offset(&self) -> u64 {
        match self.committed {
            Stand::At(o) => o,
            Stand::Done(_) => u64::MAX,
        }
    }
}

/// Where every blob of the tree stands.
///
/// Bounded: files are taken in path order, which in the Storage layout is time order, and a
/// blob read to its end, settled (unchanged for [`Timing::settle`], or last modified that long
/// ago), with a later blob after it, is *finished*: once every blob before it is finished too,
/// it leaves the map and `finished` names it. Everything sorting at or before `finished` is
/// never read again (nor listed). So the position holds the blobs of the last hour or so, not
/// of the whole history. A blob that is gone for [`Timing::settle`] is dropped too (not at
/// once: an unmounted share or a sync in progress looks like an empty folder for a moment).
///
/// The price: a blob that appears later with a path sorting before `finished` (a backfill of
/// past hours) is not read; the live engine would count its events as late anyway.
struct DirState {
    finished: Option<String>,
    files: BTreeMap<String, Tracked>,
}

/// A blob's position, the whole tree's position written as the blob reaches `next`.
struct DirTrack<'a> {
    st: &'a mut DirState,
    rel: &'a str,
    /// The batch finishes a compressed blob.
    done: bool,
}

impl Track for DirTrack<'_> {
    fn position(&self, next: &Cursor) -> Result<Option<String>> {
        let stand = if self.done {
            DONE
        } else {
            Stand::At(next.offset)
        };
        Ok(Some(self.st.position(self.rel, stand)?))
    }

    fn durable(&mut self, next: &Cursor) {
        if let Some(t) = self.st.files.get_mut(self.rel) {
            t.committed = if self.done {
                DONE
            } else {
                Stand::At(next.offset)
            };
        }
    }
}

impl DirState {
    fn resume(stored: Option<&String>, input: &str) -> Result<DirState> {
        let p: DirPosition = match stored {
            Some(s) => serde_json::from_str(s).with_context(|| {
                format!("{input}: the stored position {s:?} is not a folder position")
            })?,
            None => DirPosition::default(),
        };
        let now = Instant::now();
        Ok(DirState {
            files: p
                .files
                .into_iter()
                .map(|(k, s)| (k, Tracked::new(s, now)))
                .collect(),
            finished: p.finished,
        })
    }

    /// The position with `rel` at `stand`.
    fn position(&self, rel: &str, stand: Stand) -> Result<String> {
        let files = self
            .files
            .iter()
            .map(|(k, t)| (k.as_str(), if k == rel { stand } else { t.committed }))
            .filter(|(_, s)| *s != Stand::At(0))
            .collect();
        let out = DirPositionOut {
            files,
            finished: self.finished.as_deref(),
        };
        Ok(serde_json::to_string(&out)?)
    }

    /// One look at the tree: every blob with something new, in path order.
    async fn pass(&mut self, feed: &mut Feed, listing: &Listing, t: &Timing) -> Result<Flow> {
        let now = Instant::now();
        for (i, e) in listing.files.iter().enumerate() {
            if feed.stopping() {
                return Ok(Flow::Stop);
            }
            if self
                .finished
                .as_deref()
                .is_some_and(|f| e.rel.as_str() <= f)
            {
                continue;
            }
            let later = i + 1 < listing.files.len();
            let tr = self
                .files
                .entry(e.rel.clone())
                .or_insert_with(|| Tracked::new(Stand::At(0), now));
            tr.missing_since = None;
            let stable = tr.observed == Some(e.len);
            if !stable {
                tr.observed = Some(e.len);
                tr.changed = now;
            }
            let settled = t.settled(tr.changed, e.modified);
            let flow = match e.kind {
                Kind::Plain => self.visit_plain(feed, e, later && settled).await?,
                // A compressed blob is complete (it cannot grow): read once its size has held
                // still for a poll, in case a sync tool is still writing it.
                Kind::Gzip | Kind::Zstd if stable || settled => {
                    self.visit_compressed(feed, e).await?
                }
                Kind::Gzip | Kind::Zstd => Flow::Go,
            };
            if flow == Flow::Stop {
                return Ok(Flow::Stop);
            }
            self.retire(&listing.files, t);
        }
        if listing.trouble.is_none() {
            let present: HashSet<&str> = listing.files.iter().map(|e| e.rel.as_str()).collect();
            self.files.retain(|rel, tr| {
                if present.contains(rel.as_str()) {
                    return true;
                }
                let since = *tr.missing_since.get_or_insert(now);
                if now.duration_since(since) < t.settle {
                    return true;
                }
                tracing::info!(input = %feed.input, "{rel}: gone for {:?}: forgotten", t.settle);
                false
            });
        }
        Ok(Flow::Go)
    }

    /// Moves `finished` on over the blobs at the front that are finished.
    fn retire(&mut self, listed: &[Listed], t: &Timing) {
        for (j, e) in listed.iter().enumerate() {
            if self
                .finished
                .as_deref()
                .is_some_and(|f| e.rel.as_str() <= f)
            {
                continue;
            }
            let later = j + 1 < listed.len();
            let Some(tr) = self.files.get(&e.rel) else {
                return;
            };
            let done = match e.kind {
                Kind::Plain => {
                    let cur = tr.cur.unwrap_or(Cursor {
                        offset: tr.committed_offset(),
                        line: 0,
                        skipping: false,
                    });
                    later
                        && cur.offset >= e.len
                        && !cur.skipping
                        && tr.observed == Some(e.len)
                        && t.settled(tr.changed, e.modified)
                }
                Kind::Gzip | Kind::Zstd => tr.committed == DONE,
            };
            if !done {
                return;
            }
            tracing::debug!("{}: finished", e.path.display());
            self.files.remove(&e.rel);
            self.finished = Some(e.rel.clone());
        }
    }

    async fn visit_plain(&mut self, feed: &mut Feed, e: &Listed, last: bool) -> Result<Flow> {
        let Some(tr) = self.files.get_mut(&e.rel) else {
            return Ok(Flow::Go);
        };
        if tr.committed == DONE {
            return Ok(Flow::Go);
        }
        let at = tr.cur.map_or(tr.committed_offset(), |c| c.offset);
        if e.len < at {
            tracing::warn!(
                input = %feed.input,
                "{}: shrank to {} bytes, below the {at} already read: reading it again from the start",
                e.path.display(),
                e.len
            );
            tr.cur = Some(Cursor::START);
            tr.read_to = None;
        } else if tr.read_to == Some(e.len) && !(last && at < e.len) {
            return Ok(Flow::Go);
        } else if tr.cur.is_none() && at == e.len {
            // Read to its end by the last run and unchanged since: nothing to read, and its
            // lines need not be counted until it grows.
            tr.read_to = Some(e.len);
            return Ok(Flow::Go);
        }
        let (path, cur, committed) = (e.path.clone(), tr.cur, tr.committed_offset());
        let opened = blocking(move || -> io::Result<_> {
            let file = File::open(&path)?;
            let len = file.metadata()?.len();
            let cur = match cur {
                Some(c) => c,
                None if committed == 0 || committed > len => Cursor::START,
                None => {
                    let mut f = &file;
                    Prefix::read(&mut f, committed)?.cursor()
                }
            };
            Ok((Arc::new(file), len, cur))
        })
        .await?;
        let (file, len, mut cur) = match opened {
            Ok(o) => o,
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    tr.trouble.warn(
                        &feed.input,
                        format!("{}: cannot open: {err}", e.path.display()),
                    );
                }
                return Ok(Flow::Go);
            }
        };
        let source = e.path.display().to_string();
        if tr.cur.is_none() {
            if cur.offset > 0 {
                tracing::info!(input = %feed.input, "{source}: resuming at byte {} (line {})", cur.offset, cur.line);
            } else {
                tracing::info!(input = %feed.input, "{source}: reading");
            }
        }
        let mut track = DirTrack {
            st: self,
            rel: &e.rel,
            done: false,
        };
        let r = drain_plain(feed, &source, &file, len, &mut cur, last, &mut track).await?;
        let Some(tr) = self.files.get_mut(&e.rel) else {
            return Ok(Flow::Go);
        };
        tr.cur = Some(cur);
        match r {
            Drained::CaughtUp => {
                tr.read_to = Some(len);
                tr.trouble.clear();
                Ok(Flow::Go)
            }
            Drained::Stopped => Ok(Flow::Stop),
            Drained::Failed(m) => {
                tr.trouble.warn(&feed.input, m);
                Ok(Flow::Go)
            }
        }
    }

    /// Reads a `.gz`/`.zst` blob whole (from where the last run stopped, found by
    /// decompressing up to it).
    async fn visit_compressed(&mut self, feed: &mut Feed, e: &Listed) -> Result<Flow> {
        let Some(tr) = self.files.get_mut(&e.rel) else {
            return Ok(Flow::Go);
        };
        if tr.committed == DONE || tr.read_to == Some(e.len) {
            return Ok(Flow::Go);
        }
        let skip = tr.committed_offset();
        let (path, kind) = (e.path.clone(), e.kind);
        let opened = blocking(move || -> io::Result<_> {
            let file = io::BufReader::new(File::open(&path)?);
            let mut dec: Box<dyn Read + Send> = match kind {
                Kind::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
                _ => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
            };
            let cur = if skip == 0 {
                Cursor::START
            } else {
                Prefix::read(&mut dec, skip)?.cursor()
            };
            Ok((dec, cur))
        })
        .await?;
        let source = e.path.display().to_string();
        let (mut dec, mut cur) = match opened {
            Ok(o) => o,
            Err(err) => {
                // Not read: tried again at the next look (it may still be arriving).
                if err.kind() != io::ErrorKind::NotFound {
                    tr.trouble
                        .warn(&feed.input, format!("{source}: cannot open: {err}"));
                }
                return Ok(Flow::Go);
            }
        };
        if skip > 0 {
            tracing::info!(input = %feed.input, "{source}: resuming at decompressed byte {} (line {})", cur.offset, cur.line);
        } else {
            tracing::info!(input = %feed.input, "{source}: reading (compressed: read whole, once)");
        }
        let mut buf = Vec::new();
        loop {
            let (d, b, r) = blocking(move || {
                let mut buf = buf;
                let start = buf.len();
                buf.resize(start + BATCH, 0);
                let mut got = 0;
                let r = loop {
                    if got == BATCH {
                        break Ok(got);
                    }
                    match dec.read(&mut buf[start + got..]) {
                        Ok(0) => break Ok(got),
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(start + got);
                (dec, buf, r)
            })
            .await?;
            dec = d;
            buf = b;
            let got = r.as_ref().map_or(0, |g| *g);
            let mut track = DirTrack {
                st: self,
                rel: &e.rel,
                done: false,
            };
            match r {
                Ok(_) if got == BATCH => {
                    if feed
                        .send_buffered(&source, &mut buf, &mut cur, false, &mut track)
                        .await?
                        == Flow::Stop
                    {
                        return Ok(Flow::Stop);
                    }
                }
                Ok(_) => {
                    if feed
                        .send_buffered(&source, &mut buf, &mut cur, true, &mut track)
                        .await?
                        == Flow::Stop
                    {
                        return Ok(Flow::Stop);
                    }
                    tracing::info!(input = %feed.input, "{source}: read whole ({} lines)", cur.line - 1);
                    if let Some(tr) = self.files.get_mut(&e.rel) {
                        tr.committed = DONE;
                        tr.read_to = Some(e.len);
                    }
                    return Ok(Flow::Go);
                }
                Err(err) => {
                    // Corrupt or cut short: what came before is kept (the lines before the
                    // break go first), the cut line and the rest are reported as a skip, and
                    // the blob is not read again.
                    if feed
                        .send_buffered(&source, &mut buf, &mut cur, false, &mut track)
                        .await?
                        == Flow::Stop
                    {
                        return Ok(Flow::Stop);
                    }
                    let message = format!(
                        "compressed stream is corrupt or cut short after {} decompressed bytes: {err}",
                        cur.offset + buf.len() as u64
                    );
                    tracing::warn!(input = %feed.input, "{source}: {message}");
                    track.done = true;
                    let position = track.position(&cur)?;
                    let payload = Payload::Skip {
                        reason: SkipReason::Truncated,
                        bytes: buf.len() as u64,
                        message,
                    };
                    if feed.deliver(&source, &cur, payload, position).await? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                    track.durable(&cur);
                    if let Some(tr) = self.files.get_mut(&e.rel) {
                        tr.read_to = Some(e.len);
                    }
                    return Ok(Flow::Go);
                }
            }
        }
    }
}

/// Follows a folder of Storage-export blobs (`dir:PATH`): the tree is looked at every 250 ms
/// (polling: see the module docs), the blobs taken in path order (the layout's `y=/m=/d=/h=`
/// folders sort chronologically), and of each only the complete lines appended since. Plain
/// blobs may grow (append blobs during their hour); `.gz`/`.zst` ones are complete files, read
/// whole once. The position is
/// `{"files": {"<path below the root>": <bytes read> | "done", ...}, "finished": "<path>"}`,
/// bounded as [`DirState`] says.
pub async fn run_dir(root: PathBuf, ctx: SourceCtx) -> Result<()> {
    follow_dir(root, ctx, Timing::default()).await
}

async fn follow_dir(root: PathBuf, ctx: SourceCtx, t: Timing) -> Result<()> {
    let input = format!("dir:{}", root.display());
    let mut st = DirState::resume(ctx.positions.get(&input), &input)?;
    if ctx.positions.contains_key(&input) {
        tracing::info!(
            input,
            files = st.files.len(),
            finished = st.finished.as_deref().unwrap_or(""),
            "resuming from the stored position"
        );
    } else {
        tracing::info!(input, "following {} from the start", root.display());
    }
    let mut feed = Feed::new(ctx, input.clone(), t.retry);
    let mut root_trouble = Once::default();
    let mut tree_trouble = Once::default();
    loop {
        if feed.stopping() {
            return Ok(());
        }
        let (r, fin) = (root.clone(), st.finished.clone());
        match blocking(move || list(&r, fin.as_deref())).await? {
            Err(e) => root_trouble.warn(
                &input,
                format!("{}: cannot list ({e}): waiting for it", root.display()),
            ),
            Ok(listing) => {
                root_trouble.clear();
                match &listing.trouble {
                    Some(m) => tree_trouble.warn(&input, format!("cannot list {m}")),
                    None => tree_trouble.clear(),
                }
                if st.pass(&mut feed, &listing, &t).await? == Flow::Stop {
                    return Ok(());
                }
            }
        }
        if feed.pause(t.poll).await {
            return Ok(());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use std::io::Write;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use tokio::sync::{Notify, mpsc};

    use floodwatch_core::{BinWidth, ClassifyConfig, SkipExample};
    use floodwatch_detect::floodwatch::FloodwatchConfig;
    use floodwatch_detect::seed::SeedConfig;
    use floodwatch_ingest::IngestOptions;
    use floodwatch_pipeline::{Rule, Settings};

    use crate::engine::{Ack, Command, Shared};
    use crate::metrics::Metrics;

    /// One batch as the fake engine got it.
    #[derive(Clone, Debug)]
    pub(crate) struct Got {
        pub input: String,
        pub events: u64,
        pub records: u64,
        pub skipped: BTreeMap<SkipReason, u64>,
        pub examples: Vec<SkipExample>,
        pub position: Option<String>,
    }

    /// A source context whose engine is this test: it answers every batch with `Ok`.
    pub(crate) struct Fake {
        pub ctx: SourceCtx,
        pub stop: watch::Sender<bool>,
        pub got: Arc<Mutex<Vec<Got>>>,
        pub dir: tempfile::TempDir,
    }

    pub(crate) fn fake(max_line: usize, positions: BTreeMap<String, String>) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let width = BinWidth::from_secs(300).unwrap();
        let settings = Settings {
            rule: Rule::Floodwatch,
            width,
            classify: ClassifyConfig::default(),
            ingest: IngestOptions {
                max_line_bytes: max_line,
                ..IngestOptions::default()
            },
            // Off: a line read twice counts twice, so the tests see repeats.
            dedup: 0,
            seed: SeedConfig::default().validate(width).unwrap(),
            floodwatch: FloodwatchConfig::default(),
        };
        let shared = Arc::new(Shared {
            view: std::sync::RwLock::default(),
            outbox: Notify::new(),
            metrics: Metrics::new(),
            ready: AtomicBool::new(true),
            queue_depth: AtomicUsize::new(0),
            state_dir: dir.path().to_path_buf(),
        });
        let (tx, mut rx) = mpsc::channel::<Command>(4);
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                if let Command::Batch {
                    input,
                    partial,
                    diag,
                    position,
                    ack,
                    ..
                } = c
                {
                    g.lock().unwrap().push(Got {
                        input,
                        events: partial.aggs.stats.events,
                        records: diag.records_read,
                        skipped: diag.skipped.clone(),
                        examples: diag.examples.clone(),
                        position,
                    });
                    if let Some(a) = ack {
                        let _ = a.send(Ok(Ack::default()));
                    }
                }
            }
        });
        let (stop, stop_rx) = watch::channel(false);
        let ctx = SourceCtx {
            engine: tx,
            settings: Arc::new(settings),
            step: BinWidth::from_secs(10).unwrap(),
            positions: Arc::new(positions),
            shared,
            shutdown: stop_rx,
        };
        Fake {
            ctx,
            stop,
            got,
            dir,
        }
    }

    impl Fake {
        pub(crate) fn events(&self) -> u64 {
            self.got.lock().unwrap().iter().map(|g| g.events).sum()
        }

        pub(crate) fn records(&self) -> u64 {
            self.got.lock().unwrap().iter().map(|g| g.records).sum()
        }

        pub(crate) fn skipped(&self, r: SkipReason) -> u64 {
            self.got
                .lock()
                .unwrap()
                .iter()
                .map(|g| g.skipped.get(&r).copied().unwrap_or(0))
                .sum()
        }

        pub(crate) fn examples(&self) -> Vec<SkipExample> {
            self.got
                .lock()
                .unwrap()
                .iter()
                .flat_map(|g| g.examples.clone())
                .collect()
        }

        pub(crate) fn last_position(&self) -> Option<String> {
            self.got
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find_map(|g| g.position.clone())
        }

        /// Waits (up to 10 s) until `f` holds.
        pub(crate) async fn until(&self, what: &str, f: impl Fn(&Fake) -> bool) {
            let start = Instant::now();
            while !f(self) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "timed out waiting for {what}: events {}, batches {:?}",
                    self.events(),
                    self.got.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        /// Lets the follower look a few more times (to see that nothing more comes).
        pub(crate) async fn settle(&self) {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub(crate) const FAST: Timing = Timing {
        poll: Duration::from_millis(10),
        settle: Duration::from_millis(300),
        retry: Duration::from_millis(10),
    };

    /// A Storage-export envelope, `i` a distinct event (second `i` of 09:00).
    pub(crate) fn row(i: u64) -> String {
        let (m, s) = (i / 60 % 60, i % 60);
        format!(
            r#"{{"time":"2025-12-22T09:{m:02}:{s:02}.0000000Z","tenantId":"t","operationName":"Publish","category":"AdvancedHunting-DeviceNetworkEvents","properties":{{"Timestamp":"2025-12-22T09:{m:02}:{s:02}.0000000Z","DeviceId":"c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3","DeviceName":"web-01.contoso.com","ActionType":"InboundConnectionAccepted","RemoteIP":"203.0.113.{}","RemotePort":50000,"LocalIP":"10.1.0.9","LocalPort":443,"Protocol":"Tcp","ReportId":{i},"AdditionalFields":null}}}}"#,
            i % 250 + 1
        )
    }

    fn crlf(rows: std::ops::Range<u64>) -> String {
        rows.map(|i| row(i) + "\r\n").collect()
    }

    fn append(path: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn start_file(f: &Fake, path: &Path) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(follow_file(path.to_path_buf(), f.ctx.clone(), FAST))
    }

    fn start_dir(f: &Fake, path: &Path, t: Timing) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(follow_dir(path.to_path_buf(), f.ctx.clone(), t))
    }

    /// Polls fast, but nothing settles within a test (no last-line flush).
    const UNSETTLED: Timing = Timing {
        settle: Duration::from_secs(3600),
        ..FAST
    };

    async fn stop(f: &Fake, h: tokio::task::JoinHandle<Result<()>>) {
        f.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("the source stops promptly")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn cut_holds_back_a_partial_line() {
        let max = 100;
        let c = Cursor::START;
        assert_eq!(
            cut(b"ab\ncd\nef", &c, false, max),
            Cut::Lines { n: 6, lines: 2 }
        );
        assert_eq!(cut(b"ef", &c, false, max), Cut::Wait);
        assert_eq!(cut(b"ef", &c, true, max), Cut::Lines { n: 2, lines: 1 });
        assert_eq!(cut(&[b'x'; 101], &c, false, max), Cut::TooLong { n: 101 });
        let skipping = Cursor {
            offset: 200,
            line: 3,
            skipping: true,
        };
        assert_eq!(
            cut(b"xxx\nab\n", &skipping, false, max),
            Cut::Drop { n: 4, ended: true }
        );
        assert_eq!(
            cut(b"xxx", &skipping, false, max),
            Cut::Drop { n: 3, ended: false }
        );
        // A byte-order mark at the start is dropped; a part of one waits.
        assert_eq!(
            cut(b"\xEF\xBB\xBFab\n", &c, false, max),
            Cut::Drop { n: 3, ended: false }
        );
        assert_eq!(cut(b"\xEF\xBB", &c, false, max), Cut::Wait);
    }

    #[test]
    fn a_resumed_cursor_knows_whether_it_is_inside_a_line() {
        let p = Prefix::read(&mut &b"a\nbb\n"[..], 5).unwrap().cursor();
        assert_eq!(
            p,
            Cursor {
                offset: 5,
                line: 3,
                skipping: false
            }
        );
        let p = Prefix::read(&mut &b"a\nbbbb"[..], 4).unwrap().cursor();
        assert_eq!(
            p,
            Cursor {
                offset: 4,
                line: 2,
                skipping: true
            }
        );
        let p = Prefix::read(&mut &b"\xEF\xBB\xBFa\n"[..], 3)
            .unwrap()
            .cursor();
        assert!(!p.skipping);
    }

    #[tokio::test]
    async fn a_growing_file_is_read_line_by_line_and_a_partial_line_waits() {
        let f = fake(1 << 20, BTreeMap::new());
        let path = f.dir.path().join("events.json");
        let h = start_file(&f, &path);
        // Not there yet: waited for.
        f.settle().await;
        let first = crlf(0..2);
        let partial = row(2);
        let (a, b) = partial.split_at(40);
        append(&path, &(first.clone() + a));
        f.until("two lines", |f| f.events() == 2).await;
        f.settle().await;
        assert_eq!(f.events(), 2, "the partial line is held back");
        let pos: FilePosition = serde_json::from_str(&f.last_position().unwrap()).unwrap();
        assert_eq!(pos.offset, first.len() as u64);
        assert_eq!(pos.line, Some(3));
        append(&path, &(b.to_owned() + "\r\n" + &crlf(3..5)));
        f.until("five lines", |f| f.events() == 5).await;
        f.settle().await;
        assert_eq!(f.events(), 5);
        assert!(
            f.got.lock().unwrap().iter().all(|g| g.skipped.is_empty()),
            "CRLF lines read cleanly"
        );
        assert!(
            f.got
                .lock()
                .unwrap()
                .iter()
                .all(|g| g.input == format!("file:{}", path.display()))
        );
        stop(&f, h).await;
    }

    #[tokio::test]
    async fn rotation_by_rename_finishes_the_old_file_then_reads_the_new_one() {
        let f = fake(1 << 20, BTreeMap::new());
        let path = f.dir.path().join("events.json");
        append(&path, &crlf(0..2));
        let h = start_file(&f, &path);
        f.until("two lines", |f| f.events() == 2).await;
        // Appended just before the rename (the last line without its newline), then the new
        // file: the old one's lines come first, all of them.
        append(&path, &(crlf(2..3) + &row(3)));
        std::fs::rename(&path, f.dir.path().join("events.json.1")).unwrap();
        append(&path, &crlf(4..6));
        f.until("six lines", |f| f.events() == 6).await;
        f.settle().await;
        assert_eq!(f.events(), 6);
        let pos: FilePosition = serde_json::from_str(&f.last_position().unwrap()).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            FileId {
                dev: pos.dev,
                inode: pos.inode
            },
            file_id(&meta)
        );
        assert_eq!(pos.offset, meta.len());
        stop(&f, h).await;
    }

    #[tokio::test]
    async fn truncation_reads_the_file_again_from_the_start() {
        let f = fake(1 << 20, BTreeMap::new());
        let path = f.dir.path().join("events.json");
        append(&path, &crlf(0..4));
        let h = start_file(&f, &path);
        f.until("four lines", |f| f.events() == 4).await;
        // copytruncate: emptied in place, then shorter new content.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        f.settle().await;
        append(&path, &crlf(10..12));
        f.until("six lines", |f| f.events() == 6).await;
        f.settle().await;
        assert_eq!(f.events(), 6);
        let pos: FilePosition = serde_json::from_str(&f.last_position().unwrap()).unwrap();
        assert_eq!(pos.offset, crlf(10..12).len() as u64);
        assert_eq!(pos.line, Some(3));
        stop(&f, h).await;
    }

    #[tokio::test]
    async fn a_restart_resumes_at_the_stored_position_without_loss_or_repeat() {
        let first = fake(1 << 20, BTreeMap::new());
        let path = first.dir.path().join("events.json");
        append(&path, &(crlf(0..3) + &row(3)[..30]));
        let h = start_file(&first, &path);
        first.until("three lines", |f| f.events() == 3).await;
        stop(&first, h).await;
        let input = format!("file:{}", path.display());
        let stored = first.last_position().unwrap();

        // While stopped: the partial line is completed, a bad line and one more good one.
        append(
            &path,
            &(row(3)[30..].to_owned() + "\r\nnot json\r\n" + &crlf(4..5)),
        );
        let second = fake(1 << 20, BTreeMap::from([(input, stored)]));
        let h = start_file(&second, &path);
        second.until("two more lines", |f| f.events() == 2).await;
        second
            .until("the bad line", |f| f.skipped(SkipReason::Malformed) == 1)
            .await;
        second.settle().await;
        assert_eq!(second.events(), 2, "nothing read twice, nothing lost");
        let ex = second.examples();
        assert_eq!(ex[0].location.line, Some(5), "line numbers go on: {ex:?}");
        stop(&second, h).await;
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_is_skipped_as_it_streams_in() {
        let max = 600;
        let f = fake(max, BTreeMap::new());
        let path = f.dir.path().join("events.json");
        append(&path, &crlf(0..1));
        let h = start_file(&f, &path);
        f.until("one line", |f| f.events() == 1).await;
        // A long line arriving in pieces: reported once it passes the limit, before it ends.
        for _ in 0..4 {
            append(&path, &"x".repeat(400));
            f.settle().await;
        }
        f.until("the long line", |f| f.skipped(SkipReason::TooLong) == 1)
            .await;
        let pos: FilePosition = serde_json::from_str(&f.last_position().unwrap()).unwrap();
        assert!(
            pos.offset > (row(0).len() + 2 + max) as u64,
            "position inside the long line: {pos:?}"
        );
        append(&path, &("x".repeat(400) + "\r\nbad\r\n" + &crlf(1..3)));
        f.until("two more lines", |f| f.events() == 3).await;
        f.until("the bad line", |f| f.skipped(SkipReason::Malformed) == 1)
            .await;
        f.settle().await;
        assert_eq!(f.skipped(SkipReason::TooLong), 1);
        let ex = f.examples();
        assert_eq!(ex[0].location.line, Some(2), "{ex:?}");
        assert_eq!(ex[0].reason, SkipReason::TooLong);
        assert_eq!(ex[1].location.line, Some(3), "{ex:?}");
        assert_eq!(f.records(), 5, "every line is a record, the long one once");
        stop(&f, h).await;

        // A restart inside the long line's stored position would skip to its end, not report it
        // again: checked with a position stored while it was still streaming in.
        let again = fake(
            max,
            BTreeMap::from([(
                format!("file:{}", path.display()),
                serde_json::to_string(&pos).unwrap(),
            )]),
        );
        let h = start_file(&again, &path);
        again.until("the lines after it", |f| f.events() == 2).await;
        again.settle().await;
        assert_eq!(again.skipped(SkipReason::TooLong), 0);
        assert_eq!(again.events(), 2);
        stop(&again, h).await;
    }

    fn hour(root: &Path, h: u32) -> PathBuf {
        let d = root.join(format!(
            "insights-logs-advancedhunting-devicenetworkevents/tenantId=00000000-0000-0000-0000-00000000abcd/y=2025/m=12/d=22/h={h:02}/m=00"
        ));
        std::fs::create_dir_all(&d).unwrap();
        d.join("PT1H.json")
    }

    fn dir_position(f: &Fake) -> DirPosition {
        serde_json::from_str(&f.last_position().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_storage_tree_is_followed_as_blobs_grow_and_new_hours_appear() {
        let f = fake(1 << 20, BTreeMap::new());
        let root = f.dir.path().join("export");
        let h9 = hour(&root, 9);
        let r9 = h9
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        append(&h9, &crlf(0..3));
        let h = start_dir(&f, &root, FAST);
        f.until("hour 9", |f| f.events() == 3).await;
        // It grows, a line at a time and a half.
        let r = row(4);
        append(&h9, &(crlf(3..4) + &r[..50]));
        f.until("four", |f| f.events() == 4).await;
        f.settle().await;
        assert_eq!(f.events(), 4);
        append(&h9, &(r[50..].to_owned() + "\r\n"));
        f.until("five", |f| f.events() == 5).await;
        assert_eq!(
            dir_position(&f).files.get(&r9),
            Some(&Stand::At(std::fs::metadata(&h9).unwrap().len()))
        );
        // A new hour appears while following.
        let h10 = hour(&root, 10);
        let r10 = h10
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        append(&h10, &crlf(100..102));
        f.until("hour 10", |f| f.events() == 7).await;
        // A compressed blob is read whole.
        let h11 = hour(&root, 11).with_extension("json.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(crlf(200..203).as_bytes()).unwrap();
        std::fs::write(&h11, gz.finish().unwrap()).unwrap();
        f.until("hour 11", |f| f.events() == 10).await;
        // Once settled, the hours before the last leave the position: it stays bounded.
        append(&h10, &crlf(102..103));
        f.until("hour 10 grown", |f| f.events() == 11).await;
        tokio::time::sleep(FAST.settle * 2).await;
        append(&hour(&root, 12), &crlf(300..301));
        f.until("hour 12", |f| f.events() == 12).await;
        let pos = dir_position(&f);
        let r11 = h11
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(pos.finished.as_deref(), Some(r11.as_str()), "{pos:?}");
        assert!(
            !pos.files.contains_key(&r9) && !pos.files.contains_key(&r10),
            "{pos:?}"
        );
        assert_eq!(pos.files.len(), 1, "{pos:?}");
        stop(&f, h).await;
        let input = format!("dir:{}", root.display());
        let stored = f.last_position().unwrap();

        // A restart from there reads only what came since.
        append(&hour(&root, 12), &crlf(301..303));
        append(&h9, &crlf(400..401));
        let again = fake(1 << 20, BTreeMap::from([(input, stored)]));
        let h = start_dir(&again, &root, FAST);
        again.until("the two new lines", |f| f.events() == 2).await;
        again.settle().await;
        assert_eq!(again.events(), 2, "finished hours are not read again");
        stop(&again, h).await;
    }

    #[tokio::test]
    async fn a_restart_in_a_storage_tree_neither_loses_nor_repeats() {
        let f = fake(1 << 20, BTreeMap::new());
        let root = f.dir.path().join("export");
        let h9 = hour(&root, 9);
        append(&h9, &(crlf(0..3) + &row(3)[..20]));
        let h10 = hour(&root, 10);
        append(&h10, &crlf(100..102));
        let h = start_dir(&f, &root, UNSETTLED);
        f.until("five", |f| f.events() == 5).await;
        stop(&f, h).await;
        let stored = f.last_position().unwrap();
        append(&h9, &(row(3)[20..].to_owned() + "\r\nbad\r\n"));
        append(&h10, &crlf(102..103));
        let again = fake(
            1 << 20,
            BTreeMap::from([(format!("dir:{}", root.display()), stored)]),
        );
        let h = start_dir(&again, &root, UNSETTLED);
        again.until("two", |f| f.events() == 2).await;
        again
            .until("bad", |f| f.skipped(SkipReason::Malformed) == 1)
            .await;
        again.settle().await;
        assert_eq!(again.events(), 2);
        let ex = again.examples();
        assert_eq!(ex[0].location.line, Some(5), "{ex:?}");
        assert_eq!(ex[0].location.source, h9.display().to_string());
        stop(&again, h).await;
    }
}
