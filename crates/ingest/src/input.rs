//! Opening inputs (files, directory trees, stdin), undoing compression, sniffing the format and
//! dispatching to a reader; strictness and progress across all of them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use floodwatch_core::{
    Aggregates, Aggregator, Diagnostics, Location, Sealer, SkipExample, SkipReason,
};
use indicatif::{ProgressBar, ProgressStyle};

use floodwatch_scan::{
    Chunk, DocChunk, DocSplitter, Fallback, Split, Worker, aggregate_lines,
    aggregate_lines_releasing, aggregate_spans,
};

use crate::format::{BOM, Compression, InputFormat, ReaderKind};
use crate::json::{parse_element, parse_line, read_documents, read_documents_slice};
use crate::record::{ColumnIndex, CsvRow, to_event_noting};
use crate::{IngestError, IngestOptions, StreamOutput};

/// Bytes sniffed to recognise a format.
const SNIFF: usize = 64 << 10;
/// Decompressed bytes handed to the line driver at a time: big enough to keep every thread
/// busy, small enough that memory stays bounded whatever the input size.
const BLOCK: usize = 16 << 20;
/// Decompressed JSON documents up to this size are parsed in memory; bigger ones are streamed.
const DOC_IN_MEMORY: usize = 128 << 20;
/// Memory-mapped files are fed in windows of this size so progress and strict mode see them.
const WINDOW: usize = 64 << 20;

/// One input to read.
struct Input {
    /// `None` for stdin.
    path: Option<PathBuf>,
    /// Its name in diagnostics and in [`IngestOutput::formats`].
    name: String,
}

/// Expands directories (recursively, entries in sorted order) into their files.
fn expand(inputs: &[PathBuf]) -> Result<Vec<Input>, IngestError> {
    if inputs.is_empty() {
        return Err(IngestError::NoInput("no input paths given".into()));
    }
    let mut out = Vec::new();
    for p in inputs {
        if p.as_os_str() == "-" {
            out.push(Input {
                path: None,
                name: "-".into(),
            });
            continue;
        }
        let meta = std::fs::metadata(p).map_err(|source| IngestError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let before = out.len();
            walk(p, &mut out)?;
            if out.len() == before {
                return Err(IngestError::NoInput(format!(
                    "{}: directory holds no files",
                    p.display()
                )));
            }
        } else {
            out.push(Input {
                path: Some(p.clone()),
                name: p.display().to_string(),
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<Input>) -> Result<(), IngestError> {
    let io_err = |source| IngestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_err)?;
    entries.sort();
    for p in entries {
        let meta = std::fs::metadata(&p).map_err(|source| IngestError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(&p, out)?;
        } else if meta.is_file() {
            out.push(Input {
                name: p.display().to_string(),
                path: Some(p),
            });
        }
    }
    Ok(())
}

/// A read error met while decoding, kept so the reader above sees a clean end of input and
/// what was decoded before it still counts.
#[derive(Debug)]
struct Break {
    /// Decompressed bytes delivered before the error.
    at: u64,
    error: io::Error,
}

/// Shared with the decoding thread of [`ReadAhead`], hence a mutex.
type BreakCell = Arc<Mutex<Option<Break>>>;

/// The break slot, whether or not a thread panicked while holding it (it only ever holds a
/// plain value).
fn slot(brk: &BreakCell) -> MutexGuard<'_, Option<Break>> {
    brk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Turns the first read error into end of input (remembering it in `brk`) and counts bytes.
struct Guard<R> {
    inner: R,
    delivered: u64,
    brk: BreakCell,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if slot(&self.brk).is_some() {
            return Ok(0);
        }
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.delivered += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    *slot(&self.brk) = Some(Break {
                        at: self.delivered,
                        error,
                    });
                    return Ok(0);
                }
            }
        }
    }
}

/// Reads its input on a thread of its own, a few blocks ahead of the caller: a gzip or zstd
/// stream decodes on one core while the workers parse the blocks decoded before, instead of the
/// two taking turns. At most [`Self::AHEAD`] blocks wait; buffers go back to the thread for reuse.
struct ReadAhead {
    blocks: mpsc::Receiver<Vec<u8>>,
    spent: mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ReadAhead {
    const BLOCK: usize = 4 << 20;
    const AHEAD: usize = 2;

    /// `eager`: hand on what each read of `inner` gives at once instead of filling a block
    /// (a pipe that may stay open, whose lines must be seen as they come).
    fn new(mut inner: Box<dyn Read + Send>, eager: bool) -> Self {
        let (send, blocks) = mpsc::sync_channel::<Vec<u8>>(Self::AHEAD);
        let (spent, reuse) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            loop {
                let mut buf = reuse
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(Self::BLOCK));
                buf.clear();
                // The reader below is a `Guard`: a decoding error ends the input (and is kept
                // in its break slot) rather than coming out here.
                let n = if eager {
                    buf.resize(Self::BLOCK, 0);
                    let n = inner.read(&mut buf).unwrap_or_default();
                    buf.truncate(n);
                    n
                } else {
                    inner
                        .by_ref()
                        .take(Self::BLOCK as u64)
                        .read_to_end(&mut buf)
                        .unwrap_or_default()
                };
                if n > 0 && send.send(buf).is_err() {
                    return; // the reader was dropped
                }
                if n == 0 || (!eager && n < Self::BLOCK) {
                    return; // end of input; dropping `send` tells the reader
                }
            }
        });
        ReadAhead {
            blocks,
            spent,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl ReadAhead {
    /// Whether a read would return data without waiting.
    fn ready(&mut self) -> bool {
        if self.at < self.current.len() {
            return true;
        }
        match self.blocks.try_recv() {
            Ok(next) => {
                let old = std::mem::replace(&mut self.current, next);
                let _ = self.spent.send(old);
                self.at = 0;
                true
            }
            Err(_) => false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            let Ok(next) = self.blocks.recv() else {
                return Ok(0);
            };
            let old = std::mem::replace(&mut self.current, next);
            let _ = self.spent.send(old);
            self.at = 0;
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// An input opened, decompressed and sniffed.
struct Opened {
    /// The rest of the decompressed input after `head`.
    rest: Box<dyn Read + Send>,
    /// The first bytes (BOM removed).
    head: Vec<u8>,
    /// 3 when a UTF-8 BOM was removed: offsets are reported in the original stream.
    bom: u64,
    compression: Compression,
    brk: BreakCell,
}

fn open(input: &Input) -> Result<Opened, IngestError> {
    let io_err = |source| IngestError::Io {
        path: input.path.clone().unwrap_or_else(|| PathBuf::from("-")),
        source,
    };
    let raw: Box<dyn Read + Send> = match &input.path {
        Some(p) => Box::new(File::open(p).map_err(io_err)?),
        None => Box::new(io::stdin()),
    };
    let mut raw = BufReader::with_capacity(256 << 10, raw);
    let compression = Compression::detect(raw.fill_buf().map_err(io_err)?);
    let decoded: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(raw),
        // Multi-member: `cat a.gz b.gz` and many log shippers write several gzip members.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(io_err)?)
        }
    };
    let brk: BreakCell = Arc::new(Mutex::new(None));
    let mut guard = Guard {
        inner: decoded,
        delivered: 0,
        brk: Arc::clone(&brk),
    };
    let mut head = vec![0u8; SNIFF];
    let mut filled = 0;
    while filled < SNIFF {
        match guard.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                // A pipe that stays open: a whole line is enough to tell the format by.
                if input.path.is_none() && head[..filled].contains(&b'\n') {
                    break;
                }
            }
            Err(e) => return Err(io_err(e)),
        }
    }
    head.truncate(filled);
    let bom = if head.starts_with(BOM) {
        head.drain(..BOM.len());
        BOM.len() as u64
    } else {
        0
    };
    Ok(Opened {
        rest: Box::new(guard),
        head,
        bom,
        compression,
        brk,
    })
}

/// Shows progress on a terminal: percent read and time left when the inputs' size is known
/// (every input a plain file: the bytes read are then the files' bytes), else bytes read;
/// records per second either way.
struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
}

impl Progress {
    fn new(enabled: bool, inputs: &[Input]) -> Self {
        let bar = (enabled && io::stderr().is_terminal()).then(|| {
            let (bar, template) = match known_size(inputs) {
                Some(total) => (
                    ProgressBar::new(total),
                    "{bar:30} {percent:>3}% {bytes}/{total_bytes} ({bytes_per_sec}), {eta} left, {msg}",
                ),
                None => (
                    ProgressBar::new_spinner(),
                    "{spinner} {bytes} read ({bytes_per_sec}), {msg}",
                ),
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            start: Instant::now(),
        }
    }

    fn update(&self, bytes: u64, records: u64) {
        if let Some(bar) = &self.bar {
            let secs = self.start.elapsed().as_secs_f64().max(1e-3);
            bar.set_position(bytes);
            bar.set_message(format!(
                "{records} records ({:.0}/s)",
                records as f64 / secs
            ));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The bytes the inputs will give, when known: every input a plain (not compressed) file, so
/// that the bytes read, counted after decompression, can be set against the files' sizes.
fn known_size(inputs: &[Input]) -> Option<u64> {
    let mut total = 0u64;
    for input in inputs {
        let path = input.path.as_ref()?;
        let mut head = [0u8; 4];
        let mut f = File::open(path).ok()?;
        let n = f.read(&mut head).ok()?;
        if Compression::detect(&head[..n]) != Compression::None {
            return None;
        }
        total += f.metadata().ok()?.len();
    }
    Some(total)
}

/// State of one run across its inputs.
struct Run<'o> {
    opts: &'o IngestOptions,
    workers: Vec<Worker>,
    /// Counts not owned by a worker: inputs, bytes, input-level skips.
    diag: Diagnostics,
    progress: Progress,
    sealer: Sealer,
    /// Takes the bins the sealer found complete.
    sink: &'o mut dyn FnMut(Aggregates),
}

impl Run<'_> {
    fn records(&self) -> u64 {
        self.diag.records_read
            + self
                .workers
                .iter()
                .map(|w| w.diag.records_read)
                .sum::<u64>()
    }

    /// After each stretch of input (a window, a block, a whole input): progress, and the bins
    /// now complete handed on.
    fn tick(&mut self) {
        self.progress.update(self.diag.bytes_read, self.records());
        if let Some(done) = self
            .sealer
            .seal(self.workers.iter_mut().map(|w| &mut w.agg))
        {
            (self.sink)(done);
        }
    }

    /// In strict mode, the first error-class skip so far, as an error.
    fn check_strict(&self) -> Result<(), IngestError> {
        if !self.opts.strict {
            return Ok(());
        }
        let errors = self.diag.errors() + self.workers.iter().map(|w| w.diag.errors()).sum::<u64>();
        if errors == 0 {
            return Ok(());
        }
        let first = std::iter::once(&self.diag)
            .chain(self.workers.iter().map(|w| &w.diag))
            .flat_map(|d| d.examples.iter())
            .filter(|e| e.reason.is_error())
            .min()
            .cloned();
        // Examples are capped; if only other-table skips were kept, still say what failed.
        let ex = first.unwrap_or_else(|| {
            let reason = std::iter::once(&self.diag)
                .chain(self.workers.iter().map(|w| &w.diag))
                .flat_map(|d| d.skipped.keys())
                .copied()
                .find(|r| r.is_error())
                .unwrap_or(SkipReason::Malformed);
            SkipExample {
                location: Location {
                    source: "input".into(),
                    line: None,
                    offset: None,
                },
                reason,
                message: "a record could not be used".into(),
            }
        });
        Err(IngestError::Strict(ex))
    }

    /// Feeds whole lines to the workers; returns the number of `\n` in the chunk.
    fn lines(&mut self, chunk: Chunk) -> u64 {
        let fallback: &Fallback = &parse_line;
        aggregate_lines(chunk, &mut self.workers, self.opts.max_line_bytes, fallback)
    }

    /// [`Run::lines`] for a chunk that starts `at` bytes into `map`: the workers drop the
    /// pages they are done with as they go, so a window is not resident all at once.
    fn mapped_lines(&mut self, chunk: Chunk, map: &memmap2::Mmap, at: usize) -> u64 {
        let fallback: &Fallback = &parse_line;
        let release = |from: usize, to: usize| {
            // SAFETY: DONTNEED on a read-only file mapping only drops this process's page-table
            // entries; touching the range again reads the same file bytes back, so the slices
            // into it stay valid (and the workers have finished with it anyway).
            #[allow(unsafe_code)]
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, at + from, to - from)
            };
        };
        aggregate_lines_releasing(
            chunk,
            &mut self.workers,
            self.opts.max_line_bytes,
            fallback,
            &release,
        )
    }
}

pub(crate) fn run(
    inputs: &[PathBuf],
    opts: &IngestOptions,
    make_aggregator: &(dyn Fn() -> Aggregator + Sync),
    sink: &mut dyn FnMut(Aggregates),
) -> Result<StreamOutput, IngestError> {
    let inputs = expand(inputs)?;
    let workers: Vec<Worker> = (0..opts.threads.max(1))
        .map(|_| Worker::new(make_aggregator()))
        .collect();
    let width = workers[0].agg.width;
    let mut run = Run {
        opts,
        workers,
        diag: Diagnostics::default(),
        progress: Progress::new(opts.progress, &inputs),
        sealer: Sealer::new(width, opts.lateness),
        sink,
    };
    let mut formats = BTreeMap::new();
    for input in &inputs {
        let format = read_input(&mut run, input)?;
        formats.insert(input.name.clone(), format);
        run.check_strict()?;
    }
    run.progress.finish();
    let mut rest = Aggregates::empty(width);
    let mut diagnostics = Diagnostics::default();
    for w in run.workers {
        // Copies of one event read by different workers meet here and count once.
        rest.merge(w.agg.finish());
        diagnostics.merge(&w.diag);
    }
    // Every input is read: nothing more merges into these bins.
    rest.forget_marks();
    diagnostics.merge(&run.diag);
    Ok(StreamOutput {
        rest,
        diagnostics,
        formats,
    })
}

fn read_input(run: &mut Run, input: &Input) -> Result<InputFormat, IngestError> {
    let strict = run.opts.strict;
    run.diag.inputs += 1;
    let opened = open(input)?;
    let sniffed = crate::format::sniff(&opened.head);
    let format = match run.opts.format {
        InputFormat::Auto => sniffed,
        f => f,
    };
    let source = Location {
        source: input.name.clone(),
        line: None,
        offset: None,
    };
    // A forced format whose reader is not the one the content calls for (lines, a document,
    // CSV) reads it all wrong: say so once, with the content's own look, before reading.
    if format.reader(&opened.head) != sniffed.reader(&opened.head) && !opened.head.is_empty() {
        run.diag.warn(
            SkipReason::WrongType,
            Location {
                source: input.name.clone(),
                line: Some(1),
                offset: Some(opened.bom),
            },
            format!(
                "--input-format {} was forced, but the content looks like {}; read as {}",
                format.name(),
                sniffed.name(),
                format.name()
            ),
        );
    }
    match format.reader(&opened.head) {
        ReaderKind::Lines => match (&input.path, opened.compression) {
            (Some(path), Compression::None) => {
                let bom = opened.bom;
                drop(opened);
                read_mapped(run, path, &input.name, bom)?;
            }
            _ => read_blocks(run, input, opened)?,
        },
        // The fast path: rows cut out of the document and read on every worker. Not in strict
        // mode, which stops at the first error exactly where the general reader meets it.
        ReaderKind::Document if !strict => read_doc_blocks(run, input, opened, &source)?,
        ReaderKind::Document if input.path.is_some() && opened.compression == Compression::None => {
            let bom = opened.bom;
            drop(opened);
            let path = input.path.as_deref().unwrap_or(Path::new("-"));
            let io_err = |source| IngestError::Io {
                path: path.to_path_buf(),
                source,
            };
            let file = File::open(path).map_err(io_err)?;
            let len = file.metadata().map_err(io_err)?.len();
            run.diag.bytes_read += len;
            if len > 0 {
                // SAFETY: as in `read_mapped`: a read-only map of a file this program only
                // reads; a concurrent truncation would fault, exports are written once.
                #[allow(unsafe_code)]
                let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
                let _ = map.advise(memmap2::Advice::Sequential);
                let data = map.get(bom as usize..).unwrap_or(&[]);
                let w = first_worker(run);
                read_documents_slice(data, bom, &source, &mut w.agg, &mut w.diag, strict);
            }
        }
        ReaderKind::Document => read_document(run, input, opened, &source, DOC_IN_MEMORY)?,
        ReaderKind::Csv => {
            let Opened {
                rest,
                head,
                bom,
                compression,
                brk,
            } = opened;
            let mut counted = Counted {
                inner: io::Cursor::new(head).chain(rest),
                n: 0,
            };
            let truncated = || slot(&brk).is_some();
            let w = first_worker(run);
            read_csv(
                &mut counted,
                &source,
                bom,
                &mut w.agg,
                &mut w.diag,
                &truncated,
                strict,
            );
            run.diag.bytes_read += counted.n;
            finish_input(run, input, compression, &brk)?;
        }
    }
    run.tick();
    Ok(format)
}

/// A JSON document from a stream (compressed file, stdin): parsed in memory up to `limit`
/// bytes, streamed beyond.
fn read_document(
    run: &mut Run,
    input: &Input,
    opened: Opened,
    source: &Location,
    limit: usize,
) -> Result<(), IngestError> {
    let strict = run.opts.strict;
    let Opened {
        mut rest,
        mut head,
        bom,
        compression,
        brk,
    } = opened;
    // A document that fits is parsed in memory (several times faster than serde_json's
    // byte-at-a-time reader, with exact positions); a bigger one is streamed, so memory
    // stays bounded by DOC_IN_MEMORY whatever the input.
    let limit = limit as u64;
    (&mut rest)
        .take(limit.saturating_sub(head.len() as u64) + 1)
        .read_to_end(&mut head)
        .map_err(|e| IngestError::Io {
            path: input.path.clone().unwrap_or_else(|| PathBuf::from("-")),
            source: e,
        })?;
    let truncated = || slot(&brk).is_some();
    if head.len() as u64 <= limit {
        run.diag.bytes_read += head.len() as u64;
        let w = first_worker(run);
        if truncated() {
            // Cut short: stream it, so the break is reported once (not also as an
            // unexpected end of the JSON text).
            read_documents(
                &head[..],
                source,
                &mut w.agg,
                &mut w.diag,
                &truncated,
                strict,
            );
        } else {
            read_documents_slice(&head, bom, source, &mut w.agg, &mut w.diag, strict);
        }
    } else {
        let reader = BufReader::new(io::Cursor::new(head).chain(rest));
        let mut counted = Counted {
            inner: reader,
            n: 0,
        };
        let w = first_worker(run);
        read_documents(
            &mut counted,
            source,
            &mut w.agg,
            &mut w.diag,
            &truncated,
            strict,
        );
        run.diag.bytes_read += counted.n;
    }
    finish_input(run, input, compression, &brk)
}

/// A JSON document through the [`DocSplitter`], a block at a time (decoded on a thread of its
/// own, as lines are): the rows of its row arrays go to every worker through the fast scanner,
/// as NDJSON lines do. A document the splitter does not read (a Log Analytics response, a single
/// row) goes to [`read_document`], the general reader, with every byte read so far.
fn read_doc_blocks(
    run: &mut Run,
    input: &Input,
    opened: Opened,
    source: &Location,
) -> Result<(), IngestError> {
    read_doc_blocks_of(run, input, opened, source, (BLOCK, 64 << 10))
}

/// [`read_doc_blocks`] with blocks of at least `block.0` bytes, each read growing the buffer by
/// at least `block.1` (a test cuts a document into tiny blocks to check they change nothing).
fn read_doc_blocks_of(
    run: &mut Run,
    input: &Input,
    opened: Opened,
    source: &Location,
    block: (usize, usize),
) -> Result<(), IngestError> {
    let Opened {
        rest,
        head,
        bom,
        compression,
        brk,
    } = opened;
    let mut rest = ReadAhead::new(rest, false);
    let io_err = |source| IngestError::Io {
        path: input.path.clone().unwrap_or_else(|| PathBuf::from("-")),
        source,
    };
    let mut splitter = DocSplitter::new();
    let mut spans = Vec::new();
    let mut buf = head;
    // Bytes read and not yet counted: the general reader counts its own if it takes over.
    let mut uncounted = buf.len() as u64;
    // Offset (in the decompressed stream) of buf[0].
    let mut offset = bom;
    let mut eof = false;
    let fallback: &Fallback = &parse_element;
    loop {
        let target = block.0.max(buf.len() + block.1);
        while !eof && buf.len() < target {
            let len = buf.len();
            buf.resize(target, 0);
            match rest.read(&mut buf[len..]) {
                Ok(0) => {
                    buf.truncate(len);
                    eof = true;
                }
                Ok(n) => {
                    buf.truncate(len + n);
                    uncounted += n as u64;
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        spans.clear();
        let split = splitter.feed(&buf, eof, &mut spans);
        if split == Split::NotFast {
            let opened = Opened {
                rest: Box::new(rest),
                head: buf,
                bom,
                compression,
                brk,
            };
            return read_document(run, input, opened, source, DOC_IN_MEMORY);
        }
        run.diag.bytes_read += std::mem::take(&mut uncounted);
        let doc = DocChunk {
            data: &buf,
            source: &input.name,
            base_offset: offset,
        };
        aggregate_spans(doc, &spans, &mut run.workers, fallback);
        match split {
            Split::Used(n) => {
                offset += n as u64;
                buf.drain(..n);
                run.tick();
                if eof {
                    break;
                }
            }
            Split::End { at, line, what } => {
                // A stream cut short says so once, in `finish_input`, not also as an
                // unclosed document.
                if let Some(what) = what
                    && slot(&brk).is_none()
                {
                    let w = first_worker(run);
                    w.diag.records_read += 1;
                    w.diag.skip(
                        SkipReason::Malformed,
                        Location {
                            source: input.name.clone(),
                            line: Some(line),
                            offset: Some(offset + at as u64),
                        },
                        format!("JSON: {what}; the rest of the document is not read"),
                    );
                }
                break;
            }
            Split::NotFast => {}
        }
    }
    finish_input(run, input, compression, &brk)
}

/// The worker that sequential readers (documents, CSV) fill. `run` always has at least one
/// (`threads.max(1)`).
fn first_worker<'r>(run: &'r mut Run) -> &'r mut Worker {
    &mut run.workers[0]
}

/// Counts bytes going through.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// After an input: a decoding error is a truncated stream (compressed) or an I/O error (plain).
fn finish_input(
    run: &mut Run,
    input: &Input,
    compression: Compression,
    brk: &BreakCell,
) -> Result<(), IngestError> {
    let Some(b) = slot(brk).take() else {
        return Ok(());
    };
    if compression == Compression::None {
        return Err(IngestError::Io {
            path: input.path.clone().unwrap_or_else(|| PathBuf::from("-")),
            source: b.error,
        });
    }
    run.diag.skip(
        SkipReason::Truncated,
        Location {
            source: input.name.clone(),
            line: None,
            offset: Some(b.at),
        },
        format!(
            "{} stream breaks off after {} decompressed bytes ({}); what came before it was kept",
            compression.name(),
            b.at,
            b.error
        ),
    );
    Ok(())
}

/// A plain file of lines, memory-mapped one window at a time: each window (cut after its last
/// newline) is parsed in parallel and unmapped before the next, so resident memory stays about
/// one window whatever the file size, and a line longer than the limit is stepped over window
/// by window without ever being held whole.
fn read_mapped(run: &mut Run, path: &Path, name: &str, bom: u64) -> Result<(), IngestError> {
    let io_err = |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let max_line = run.opts.max_line_bytes as u64;
    let mut start = bom.min(len);
    let mut line = 1u64;
    // A line longer than a window is mapped again in a window twice as big, up to the limit;
    // the windows stay small for the common case, which keeps resident memory down.
    let base_window = WINDOW as u64;
    let mut window = base_window;
    // Inside a line already reported as too long: step to its end.
    let mut skipping = false;
    run.diag.bytes_read += len;
    while start < len {
        let end = (start + window).min(len);
        let map_len = usize::try_from(end - start)
            .map_err(|_| io_err(io::Error::other("window does not fit in memory")))?;
        // SAFETY: a read-only private map of a file the program only reads. If another process
        // truncates the file meanwhile, touching the lost pages raises SIGBUS: the accepted
        // price of mapping (ripgrep makes the same trade), and exports are written once.
        #[allow(unsafe_code)]
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(start)
                .len(map_len)
                .map(&file)
        }
        .map_err(io_err)?;
        let _ = map.advise(memmap2::Advice::Sequential);
        let data: &[u8] = &map;
        let mut used = 0usize;
        if skipping {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    used = i + 1;
                    line += 1;
                    skipping = false;
                }
                None => {
                    start = end;
                    continue;
                }
            }
        }
        let rest = &data[used..];
        match memchr::memrchr(b'\n', rest) {
            Some(i) => {
                let chunk = Chunk {
                    data: &rest[..=i],
                    source: name,
                    first_line: line,
                    base_offset: start + used as u64,
                };
                line += run.mapped_lines(chunk, &map, used);
                used += i + 1;
                window = base_window;
            }
            // The last line of the file, without a newline.
            None if end == len => {
                line += run.lines(Chunk {
                    data: rest,
                    source: name,
                    first_line: line,
                    base_offset: start + used as u64,
                });
                used = data.len();
            }
            None if rest.len() as u64 > max_line => {
                let w = first_worker(run);
                w.diag.records_read += 1;
                w.diag.skip(
                    SkipReason::TooLong,
                    Location {
                        source: name.to_owned(),
                        line: Some(line),
                        offset: Some(start + used as u64),
                    },
                    format!("line is longer than the limit of {max_line} bytes"),
                );
                skipping = true;
                used = data.len();
            }
            // A line longer than the window but within the limit: map a bigger window.
            None if used == 0 => window = window.saturating_mul(2),
            None => {}
        }
        start += used as u64;
        drop(map);
        run.tick();
        run.check_strict()?;
    }
    Ok(())
}

/// Compressed files and stdin: decompressed blocks cut at the last newline, the remainder
/// carried to the next block, so memory stays bounded. A line longer than the limit is skipped
/// as it streams past.
fn read_blocks(run: &mut Run, input: &Input, opened: Opened) -> Result<(), IngestError> {
    let Opened {
        rest,
        head,
        bom,
        compression,
        brk,
    } = opened;
    // Standard input may be a pipe that stays open (`tail -f`): its lines are parsed as they
    // come, and a block is cut whenever no more input is waiting.
    let eager = input.path.is_none();
    let mut rest = ReadAhead::new(rest, eager);
    let max_line = run.opts.max_line_bytes;
    let io_err = |source| IngestError::Io {
        path: input.path.clone().unwrap_or_else(|| PathBuf::from("-")),
        source,
    };
    let mut buf = head;
    run.diag.bytes_read += buf.len() as u64;
    // Offset (in the decompressed stream) and line number of buf[0].
    let mut offset = bom;
    let mut line = 1u64;
    // Inside a line already reported as too long: drop bytes up to its end.
    let mut skipping = false;
    let mut eof = false;
    while !eof {
        let target = BLOCK.max(buf.len() + (64 << 10));
        while buf.len() < target {
            let len = buf.len();
            buf.resize(target, 0);
            match rest.read(&mut buf[len..]) {
                Ok(0) => {
                    buf.truncate(len);
                    eof = true;
                    break;
                }
                Ok(n) => {
                    buf.truncate(len + n);
                    run.diag.bytes_read += n as u64;
                    if eager && !rest.ready() {
                        break;
                    }
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        if skipping {
            match memchr::memchr(b'\n', &buf) {
                Some(i) => {
                    buf.drain(..=i);
                    offset += i as u64 + 1;
                    line += 1;
                    skipping = false;
                }
                None => {
                    offset += buf.len() as u64;
                    buf.clear();
                    continue;
                }
            }
        }
        match memchr::memrchr(b'\n', &buf) {
            Some(i) => {
                line += run.lines(Chunk {
                    data: &buf[..=i],
                    source: &input.name,
                    first_line: line,
                    base_offset: offset,
                });
                offset += i as u64 + 1;
                buf.drain(..=i);
            }
            None if buf.len() > max_line => {
                let w = first_worker(run);
                w.diag.records_read += 1;
                w.diag.skip(
                    SkipReason::TooLong,
                    Location {
                        source: input.name.clone(),
                        line: Some(line),
                        offset: Some(offset),
                    },
                    format!("line is longer than the limit of {max_line} bytes"),
                );
                offset += buf.len() as u64;
                buf.clear();
                skipping = true;
            }
            None => {}
        }
        run.tick();
        run.check_strict()?;
    }
    if !buf.is_empty() && !skipping {
        if slot(&brk).is_some() {
            // The last line was cut by the break; the truncation skip below accounts for it.
        } else {
            run.lines(Chunk {
                data: &buf,
                source: &input.name,
                first_line: line,
                base_offset: offset,
            });
        }
    }
    finish_input(run, input, compression, &brk)
}

/// CSV with a header row (Defender or Sentinel portal export). Each record is held back until
/// the next one has been read, so a record cut off by a broken compressed stream is dropped
/// rather than half-read.
fn read_csv<R: Read>(
    reader: R,
    source: &Location,
    bom: u64,
    agg: &mut Aggregator,
    diag: &mut Diagnostics,
    truncated: &dyn Fn() -> bool,
    strict: bool,
) {
    // Records end at `\n` only, with a `\r` before it trimmed from the last cell (see
    // `CsvRow`): under the default CRLF terminator the csv crate reports every record after
    // a CRLF line one line too early.
    let mut rdr = csv::ReaderBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut rec = csv::ByteRecord::new();
    let loc_of = |rec: &csv::ByteRecord| Location {
        source: source.source.clone(),
        line: rec.position().map(|p| p.line()),
        offset: rec.position().map(|p| p.byte() + bom),
    };
    let index = match rdr.read_byte_record(&mut rec) {
        Ok(false) => return,
        Ok(true) => {
            let names: Vec<String> = rec
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            ColumnIndex::new(names.iter().map(String::as_str))
        }
        Err(e) => {
            if !truncated() {
                diag.skip(
                    SkipReason::Malformed,
                    source.clone(),
                    format!("CSV header: {e}"),
                );
            }
            return;
        }
    };
    let mut held = csv::ByteRecord::new();
    let mut have_held = false;
    let mut last_error_at: Option<u64> = None;
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                if have_held {
                    csv_record(&held, &index, agg, diag, &loc_of);
                    if strict && diag.errors() > 0 {
                        return;
                    }
                }
                std::mem::swap(&mut held, &mut rec);
                have_held = true;
            }
            Err(e) => {
                let at = e.position().map(|p| p.byte());
                // The csv reader resumes after an error; stop if it makes no progress.
                if at.is_some() && at == last_error_at {
                    break;
                }
                last_error_at = at;
                diag.records_read += 1;
                let loc = Location {
                    source: source.source.clone(),
                    line: e.position().map(|p| p.line()),
                    offset: e.position().map(|p| p.byte() + bom),
                };
                diag.skip(SkipReason::Malformed, loc, format!("CSV: {e}"));
            }
        }
    }
    if have_held && !truncated() {
        csv_record(&held, &index, agg, diag, &loc_of);
    }
}

fn csv_record(
    rec: &csv::ByteRecord,
    index: &ColumnIndex,
    agg: &mut Aggregator,
    diag: &mut Diagnostics,
    loc_of: &dyn Fn(&csv::ByteRecord) -> Location,
) {
    if rec.iter().all(|f| f.trim_ascii().is_empty()) {
        return; // a blank line
    }
    diag.records_read += 1;
    let row = CsvRow { index, record: rec };
    if let Some(field) = row.first_non_utf8() {
        diag.skip(
            SkipReason::Binary,
            loc_of(rec),
            format!("not UTF-8 text in CSV column {}", field + 1),
        );
        return;
    }
    match to_event_noting(&row, agg, diag) {
        Ok(ev) => diag.note(agg.add(&ev), || loc_of(rec)),
        Err(r) => diag.skip(r.reason, loc_of(rec), r.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwatch_core::{BinWidth, ClassifyConfig};

    /// Progress shows percent and time left only when the bytes to read are known.
    #[test]
    fn input_size_is_known_for_plain_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        std::fs::write(&a, "{}\n").unwrap();
        std::fs::write(&b, "x".repeat(1000)).unwrap();
        let input = |p: &Path| Input {
            path: Some(p.to_owned()),
            name: p.display().to_string(),
        };
        assert_eq!(known_size(&[input(&a), input(&b)]), Some(1003));
        let gz = dir.path().join("c.json.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert_eq!(known_size(&[input(&a), input(&gz)]), None, "compressed");
        let stdin = Input {
            path: None,
            name: "-".into(),
        };
        assert_eq!(known_size(&[input(&a), stdin]), None, "standard input");
    }

    #[test]
    fn guard_turns_errors_into_end_of_input() {
        struct Failing(u8);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut"));
                }
                self.0 -= 1;
                buf[..3].copy_from_slice(b"abc");
                Ok(3)
            }
        }
        let brk: BreakCell = Arc::new(Mutex::new(None));
        let mut g = Guard {
            inner: Failing(2),
            delivered: 0,
            brk: Arc::clone(&brk),
        };
        let mut out = Vec::new();
        g.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcabc");
        assert_eq!(slot(&brk).as_ref().map(|b| b.at), Some(6));
    }

    #[test]
    fn csv_holds_back_the_record_a_break_cut() {
        let data = "Timestamp,DeviceName,ActionType,RemoteIP\n\
                    2025-12-22T09:55:01Z,a,ConnectionAttempt,203.0.113.7\n\
                    2025-12-22T09:55:02Z,a,ConnectionAttempt,203.0.1";
        for (cut, want) in [(false, 2), (true, 1)] {
            let mut agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
            let mut diag = Diagnostics::default();
            let src = Location {
                source: "t.csv".into(),
                line: None,
                offset: None,
            };
            read_csv(
                data.as_bytes(),
                &src,
                0,
                &mut agg,
                &mut diag,
                &|| cut,
                false,
            );
            // Uncut, the short IP is a bad IP; cut, the record is dropped unread.
            assert_eq!(diag.records_read, want);
            assert_eq!(diag.count(SkipReason::BadIp), u64::from(!cut));
            assert_eq!(agg.finish().stats.events, 1);
        }
    }

    #[test]
    fn strict_csv_stops_at_the_first_error() {
        let data = "Timestamp,DeviceName,ActionType\n\
                    2025-12-22T09:55:01Z,a,ConnectionAttempt\n\
                    soon,a,ConnectionAttempt\n\
                    2025-12-22T09:55:03Z,a,ConnectionAttempt\n";
        let src = Location {
            source: "t.csv".into(),
            line: None,
            offset: None,
        };
        for strict in [false, true] {
            let mut agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
            let mut diag = Diagnostics::default();
            read_csv(
                data.as_bytes(),
                &src,
                0,
                &mut agg,
                &mut diag,
                &|| false,
                strict,
            );
            assert_eq!(diag.count(SkipReason::BadTimestamp), 1);
            assert_eq!(diag.examples[0].location.line, Some(3));
            assert_eq!(agg.finish().stats.events, if strict { 1 } else { 2 });
        }
    }

    /// The same gzip JSON array read in memory and streamed (limit below its size) gives the
    /// same events and reports the bad row at the same line.
    #[test]
    fn documents_in_memory_and_streamed_agree() {
        use std::io::Write;
        let row = |n: u32, ip: &str| {
            format!(
                "  {{\n    \"Timestamp\": \"2025-12-22T09:00:0{n}Z\",\n    \"DeviceName\": \"a\",\n    \"ActionType\": \"InboundConnectionAccepted\",\n    \"RemoteIP\": \"{ip}\",\n    \"ReportId\": {n}\n  }}"
            )
        };
        let doc = format!(
            "[\n{},\n{},\n{}\n]\n",
            row(1, "203.0.113.1"),
            row(2, "bad"),
            row(3, "203.0.113.3")
        );
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(doc.as_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json.gz");
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let input = Input {
            name: path.display().to_string(),
            path: Some(path),
        };
        let opts = IngestOptions::default();
        let mut results = Vec::new();
        for limit in [1 << 20, 16] {
            let mut run = Run {
                opts: &opts,
                workers: vec![Worker::new(Aggregator::new(
                    BinWidth::FIVE_MINUTES,
                    ClassifyConfig::default(),
                ))],
                diag: Diagnostics::default(),
                progress: Progress::new(false, &[]),
                sealer: Sealer::new(BinWidth::FIVE_MINUTES, None),
                sink: &mut |_| {},
            };
            let source = Location {
                source: input.name.clone(),
                line: None,
                offset: None,
            };
            let opened = open(&input).unwrap();
            read_document(&mut run, &input, opened, &source, limit).unwrap();
            let w = run.workers.pop().unwrap();
            assert_eq!(run.diag.bytes_read, doc.len() as u64, "limit {limit}");
            results.push((
                w.agg.finish().stats.events,
                w.diag.examples[0].location.line,
                w.diag.count(SkipReason::BadIp),
            ));
        }
        assert_eq!(results[0], (2, Some(9), 1));
        assert_eq!(results[1], results[0]);
    }

    /// Stdin and compressed input go through bounded blocks: a bad line far past the first block
    /// boundary still reports its exact line and offset, and no line is lost or read twice at
    /// the boundaries.
    #[test]
    fn block_reader_keeps_line_numbers_across_blocks() {
        let line = |n: u64| {
            format!(
                "{{\"Timestamp\":\"2025-12-22T09:00:00Z\",\"DeviceName\":\"d{}\",\"ActionType\":\"ConnectionSuccess\",\"ReportId\":{n}}}\r\n",
                n % 7
            )
        };
        let mut data = Vec::new();
        let mut n = 0u64;
        let mut bad_at = None;
        while data.len() < 2 * BLOCK + 12345 {
            n += 1;
            if n == 300_000 {
                bad_at = Some((n, data.len() as u64));
                data.extend_from_slice(
                    b"{\"Timestamp\":\"soon\",\"DeviceName\":\"x\",\"ActionType\":\"y\"}\n",
                );
            } else {
                data.extend_from_slice(line(n).as_bytes());
            }
        }
        let (bad_line, bad_offset) = bad_at.unwrap();
        assert!(
            bad_offset > BLOCK as u64,
            "the bad line lies past the first block"
        );
        let mut head = data;
        let rest = head.split_off(SNIFF);
        let opened = Opened {
            rest: Box::new(io::Cursor::new(rest)),
            head,
            bom: 0,
            compression: Compression::None,
            brk: Arc::new(Mutex::new(None)),
        };
        let input = Input {
            path: None,
            name: "-".into(),
        };
        let opts = IngestOptions {
            threads: 2,
            ..IngestOptions::default()
        };
        let make = || {
            Worker::new(
                Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
                    .with_dedup_horizon(0),
            )
        };
        let mut run = Run {
            opts: &opts,
            workers: vec![make(), make()],
            diag: Diagnostics::default(),
            progress: Progress::new(false, &[]),
            sealer: Sealer::new(BinWidth::FIVE_MINUTES, None),
            sink: &mut |_| {},
        };
        read_blocks(&mut run, &input, opened).unwrap();
        let mut events = 0;
        let mut diag = Diagnostics::default();
        for w in run.workers {
            events += w.agg.finish().stats.events;
            diag.merge(&w.diag);
        }
        assert_eq!(events, n - 1);
        assert_eq!(diag.records_read, n);
        assert_eq!(diag.count(SkipReason::BadTimestamp), 1);
        let ex = &diag.examples[0];
        assert_eq!(ex.location.source, "-");
        assert_eq!(ex.location.line, Some(bad_line));
        assert_eq!(ex.location.offset, Some(bad_offset));
    }

    /// A reader handing its bytes on in pieces of the given sizes, in turn.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        k: usize,
    }

    impl Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let want = self.sizes[self.k % self.sizes.len()].max(1);
            self.k += 1;
            let n = want.min(out.len()).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// What one read of `data` as stdin gives: the line driver behind the block reader, fed
    /// as each read of `pieces` comes (stdin hands on what it has at once, so every piece
    /// boundary can become a block boundary).
    fn read_as_stdin(data: &[u8], sizes: Vec<usize>) -> (Vec<u8>, Diagnostics) {
        let cut = data.len().min(sizes[0]);
        let opened = Opened {
            rest: Box::new(Pieces {
                data: data[cut..].to_vec(),
                at: 0,
                sizes,
                k: 1,
            }),
            head: data[..cut].to_vec(),
            bom: 0,
            compression: Compression::None,
            brk: Arc::new(Mutex::new(None)),
        };
        let input = Input {
            path: None,
            name: "-".into(),
        };
        let opts = IngestOptions {
            threads: 1,
            ..IngestOptions::default()
        };
        let make = || {
            Worker::new(Aggregator::new(
                BinWidth::FIVE_MINUTES,
                ClassifyConfig::default(),
            ))
        };
        let mut run = Run {
            opts: &opts,
            workers: vec![make()],
            diag: Diagnostics::default(),
            progress: Progress::new(false, &[]),
            sealer: Sealer::new(BinWidth::FIVE_MINUTES, None),
            sink: &mut |_| {},
        };
        read_blocks(&mut run, &input, opened).unwrap();
        let mut diag = std::mem::take(&mut run.diag);
        let mut out = Vec::new();
        for w in run.workers {
            diag.merge(&w.diag);
            let a = w.agg.finish();
            out = format!("{:?}", (a.by_name(), a.stats)).into_bytes();
        }
        diag.bytes_read = 0;
        (out, diag)
    }

    /// `data` through the documents' fast path in blocks of `block` (as [`read_doc_blocks_of`]).
    fn read_doc(data: &[u8], block: (usize, usize), name: &str) -> (Vec<u8>, Diagnostics) {
        let opened = Opened {
            rest: Box::new(io::Cursor::new(data.to_vec())),
            head: Vec::new(),
            bom: 0,
            compression: Compression::None,
            brk: Arc::new(Mutex::new(None)),
        };
        let input = Input {
            path: None,
            name: name.into(),
        };
        let opts = IngestOptions {
            threads: 2,
            ..IngestOptions::default()
        };
        let make = || {
            Worker::new(Aggregator::new(
                BinWidth::FIVE_MINUTES,
                ClassifyConfig::default(),
            ))
        };
        let mut run = Run {
            opts: &opts,
            workers: vec![make(), make()],
            diag: Diagnostics::default(),
            progress: Progress::new(false, &[]),
            sealer: Sealer::new(BinWidth::FIVE_MINUTES, None),
            sink: &mut |_| {},
        };
        let source = Location {
            source: name.into(),
            line: None,
            offset: None,
        };
        read_doc_blocks_of(&mut run, &input, opened, &source, block).unwrap();
        let mut diag = std::mem::take(&mut run.diag);
        let mut all = Aggregates::empty(BinWidth::FIVE_MINUTES);
        for w in run.workers {
            diag.merge(&w.diag);
            all.merge(w.agg.finish());
        }
        diag.bytes_read = 0;
        diag.examples.sort();
        (
            format!("{:?}", (all.by_name(), all.stats)).into_bytes(),
            diag,
        )
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../testdata/formats")
                .join(name),
        )
        .unwrap()
    }

    /// A document through the general reader alone, summed as [`read_doc`] sums the fast path.
    fn read_doc_general(data: &[u8], name: &str) -> (Vec<u8>, Diagnostics) {
        let mut agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
        let mut diag = Diagnostics::default();
        let loc = Location {
            source: name.into(),
            line: None,
            offset: None,
        };
        read_documents(
            io::Cursor::new(data.to_vec()),
            &loc,
            &mut agg,
            &mut diag,
            &|| false,
            false,
        );
        let a = agg.finish();
        diag.bytes_read = 0;
        diag.examples.sort();
        (format!("{:?}", (a.by_name(), a.stats)).into_bytes(), diag)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever bytes sit in a string the documents' fast path skips (the process name), a
        /// row reads as the general parser reads it alone: a raw control character in a string
        /// (a tab, a newline, NUL) makes the row malformed JSON, invalid UTF-8 makes it binary,
        /// and every other row is read as the general reader reads the document without the
        /// bad rows (the general reader itself stops at the first: serde cannot resume inside
        /// a document). Pretty-printed and compact documents.
        #[test]
        fn odd_bytes_in_document_strings_give_the_general_parsers_result(
            picks in proptest::collection::vec(0usize..12, 14),
            pretty in proptest::bool::ANY,
        ) {
            use serde_json::Value;
            // Taken as they are; refused as malformed JSON; refused as not UTF-8.
            const GOOD: [&[u8]; 3] = [b"w3wp.exe", b"caf\xc3\xa9.exe", b"\x7fdel"];
            const CONTROL: [&[u8]; 6] =
                [b"tab\there", b"new\nline", b"nul\x00", b"cr\rhere", b"bell\x07", b"esc\x1b[0m"];
            const BINARY: [&[u8]; 3] = [b"w3\xffwp.exe", b"\xe2\x82.exe", b"\xed\xa0\x80"];
            let odd: Vec<&[u8]> = GOOD.iter().chain(&CONTROL).chain(&BINARY).copied().collect();
            let rows: Vec<Value> = serde_json::from_slice(&fixture("array.json")).unwrap();
            let write = |rows: &[Value]| {
                if pretty { serde_json::to_vec_pretty(rows) } else { serde_json::to_vec(rows) }.unwrap()
            };
            // Each process name becomes a marker, then the marker its bytes.
            let (mut marked, mut kept, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
            let (mut control, mut binary) = (0u64, 0u64);
            for (k, mut r) in rows.into_iter().enumerate() {
                if !r["InitiatingProcessFileName"].is_string() {
                    marked.push(r.clone());
                    kept.push(r);
                    continue;
                }
                let pick = odd[picks[k % picks.len()]];
                r["InitiatingProcessFileName"] = Value::from(format!("@@{k}@@"));
                marked.push(r.clone());
                bytes.push((format!("@@{k}@@"), pick));
                if let Ok(text) = std::str::from_utf8(pick).map(str::to_owned)
                    && !pick.iter().any(|&b| b < 0x20)
                {
                    r["InitiatingProcessFileName"] = Value::from(text);
                    kept.push(r);
                } else if pick.iter().any(|&b| b < 0x20) {
                    control += 1;
                } else {
                    binary += 1;
                }
            }
            let mut doc = write(&marked);
            for (m, b) in &bytes {
                let at = doc.windows(m.len()).position(|w| w == m.as_bytes()).unwrap();
                doc.splice(at..at + m.len(), b.iter().copied());
            }
            proptest::prop_assert!(bytes.len() >= 10);

            let fast = read_doc(&doc, (BLOCK, 64 << 10), "doc.json");
            let mut want = read_doc_general(&write(&kept), "doc.json");
            proptest::prop_assert!(want.1.skipped.is_empty(), "{:?}", want.1);
            for (reason, n) in [(SkipReason::Malformed, control), (SkipReason::Binary, binary)] {
                if n > 0 {
                    want.1.skipped.insert(reason, n);
                }
            }
            want.1.records_read += control + binary;
            proptest::prop_assert_eq!(&fast.0, &want.0);
            proptest::prop_assert_eq!(&fast.1.skipped, &want.1.skipped, "{:?}", fast.1.examples);
            proptest::prop_assert_eq!(fast.1.records_read, want.1.records_read);
            proptest::prop_assert_eq!(fast.1.examples.len() as u64, (control + binary).min(10));
            if control > 0 {
                proptest::prop_assert!(fast.1.examples.iter().any(|e| e.message.contains("control character")), "{:?}", fast.1.examples);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

        /// Any record split across read boundaries (down to one byte at a time) gives the
        /// same events and the same skips, at the same lines and offsets, as one read of the
        /// whole input: line-oriented JSON (rows, Storage envelopes, Event Hubs batches, a bad
        /// line), CSV, and streamed JSON documents.
        #[test]
        fn records_split_across_reads_give_the_same_result(
            sizes in proptest::collection::vec(1usize..300, 1..20),
        ) {
            let mut lines = fixture("ndjson.json");
            lines.extend_from_slice(b"{\"Timestamp\":\"soon\",\"DeviceName\":\"x\",\"ActionType\":\"y\"}\n");
            lines.extend(fixture("storage.json"));
            lines.extend(fixture("eventhubs.json"));
            let whole = read_as_stdin(&lines, vec![usize::MAX]);
            proptest::prop_assert!(whole.1.records_read > 60);
            proptest::prop_assert_eq!(read_as_stdin(&lines, sizes.clone()), whole);

            for (name, csv) in [("union.csv", true), ("array.json", false), ("ah-api.json", false)] {
                let data = fixture(name);
                let run = |reader: Box<dyn Read>| {
                    let mut agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
                    let mut diag = Diagnostics::default();
                    let loc = Location { source: name.into(), line: None, offset: None };
                    if csv {
                        read_csv(reader, &loc, 0, &mut agg, &mut diag, &|| false, false);
                    } else {
                        read_documents(reader, &loc, &mut agg, &mut diag, &|| false, false);
                    }
                    let a = agg.finish();
                    (format!("{:?}", (a.by_name(), a.stats)).into_bytes(), diag)
                };
                let once = run(Box::new(io::Cursor::new(data.clone())));
                proptest::prop_assert!(once.0.len() > 100, "{}", name);
                let split = run(Box::new(Pieces { data, at: 0, sizes: sizes.clone(), k: 0 }));
                proptest::prop_assert_eq!(split, once, "{}", name);
            }

            // The documents' fast path, its blocks cut anywhere (down to a byte), against the
            // whole document in one block: a row cut between blocks is read once, in full,
            // at its line and offset.
            let block = sizes[0];
            for name in [
                "array.json",
                "ah-api.json",
                "graph.json",
                "odata.json",
                "eventhubs-pretty.json",
            ] {
                let data = fixture(name);
                let whole = read_doc(&data, (BLOCK, 64 << 10), name);
                proptest::prop_assert!(whole.1.records_read >= 30, "{}", name);
                proptest::prop_assert_eq!(read_doc(&data, (block, 1), name), whole, "{}", name);
            }
        }
    }
}
