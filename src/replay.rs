//! `floodwatch replay`: pushes an export to a running server's `POST /ingest`, paced at N times
//! event time (demos, tests, drills), or as fast as the server takes it (`--speed max`, load
//! tests). Batches are cut on event time (`--batch`) or, at full speed, on size alone.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use floodwatch_core::time::{Nanos, parse_duration, parse_rfc3339};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Export to replay: line-oriented (NDJSON rows, Storage-export lines, Event Hubs bodies
    /// one per line), plain, gzip or zstd; `-` for standard input.
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// Server base URL, e.g. http://127.0.0.1:8514 (`/ingest` is added).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Times event time (20 replays an hour in three minutes), or `max`.
    #[arg(long, default_value = "20")]
    pub speed: String,
    /// Event time per request (default 1s); `0s` cuts on size alone (with --speed max).
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub batch: String,
    /// Largest request body before compression (default 4 MiB).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_batch_bytes: usize,
    /// Compress request bodies: none, gzip or zstd.
    #[arg(long, default_value = "none")]
    pub encoding: String,
    /// Requests in flight at once (more than 1 only with --speed max).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// File holding the server's bearer token (else FLOODWATCH_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Send the input this many times (`--batch 0s` only), each copy moved on in event time by
    /// whole days past the one before (the dates of `Timestamp`/`TimeGenerated`/`time` are
    /// rewritten), so a short export makes a long, steady load.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Stop after this much wall time (with --repeat).
    #[arg(long, value_name = "DURATION")]
    pub max_time: Option<String>,
}

/// The event time of a line: its `Timestamp`, `TimeGenerated` or envelope `time`, found
/// without a full parse (pacing needs no more than that).
fn line_time(line: &[u8]) -> Option<Nanos> {
    for key in [
        &b"\"Timestamp\":\""[..],
        b"\"TimeGenerated\":\"",
        b"\"time\":\"",
    ] {
        if let Some(i) = memfind(line, key) {
            let rest = &line[i + key.len()..];
            let end = rest.iter().position(|&c| c == b'"')?;
            if let Ok(t) = parse_rfc3339(&rest[..end]) {
                return Some(t);
            }
        }
    }
    None
}

fn memfind(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn open(p: &PathBuf) -> Result<Box<dyn BufRead>> {
    let raw: Box<dyn Read> = if p.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?)
    };
    let mut r = BufReader::with_capacity(1 << 20, raw);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(BufReader::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Box::new(r)
    })
}

struct Totals {
    requests: AtomicU64,
    accepted: AtomicU64,
    skipped: AtomicU64,
    retries: AtomicU64,
    rejected: AtomicU64,
}

/// Sends one body until the server takes it (429 / 503 / connection errors are retried after
/// `Retry-After` or a growing wait); a 4xx refusal is counted and reported.
fn post(
    client: &reqwest::blocking::Client,
    url: &str,
    token: Option<&str>,
    encoding: &str,
    (key, body): (String, Vec<u8>),
    totals: &Totals,
) -> Result<()> {
    let mut wait = Duration::from_millis(200);
    for attempt in 0..100 {
        // The same key on every attempt: a batch the server stored but could not answer (it
        // was killed) is answered again, not counted twice.
        let mut req = client
            .post(url)
            .header("Content-Type", "application/x-ndjson")
            .header("Idempotency-Key", &key)
            .body(body.clone());
        if encoding != "none" {
            req = req.header("Content-Encoding", encoding);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send() {
            Ok(resp) => {
                let status = resp.status();
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let text = resp.text().unwrap_or_default();
                if status.is_success() {
                    totals.requests.fetch_add(1, Ordering::Relaxed);
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    totals
                        .accepted
                        .fetch_add(v["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    let sk: u64 = v["skipped"]
                        .as_object()
                        .map(|m| m.values().filter_map(|x| x.as_u64()).sum())
                        .unwrap_or(0);
                    totals.skipped.fetch_add(sk, Ordering::Relaxed);
                    return Ok(());
                }
                if status.as_u16() == 429 || status.as_u16() == 503 {
                    totals.retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(retry.map_or(wait, Duration::from_secs));
                    wait = (wait * 2).min(Duration::from_secs(5));
                    continue;
                }
                if status == reqwest::StatusCode::UNAUTHORIZED {
                    bail!(
                        "{url}: 401: the server needs a bearer token (--token-file or FLOODWATCH_TOKEN)"
                    );
                }
                totals.requests.fetch_add(1, Ordering::Relaxed);
                totals.rejected.fetch_add(1, Ordering::Relaxed);
                eprintln!("floodwatch: replay: {url}: {status}: {text}");
                return Ok(());
            }
            Err(e) if attempt < 99 => {
                if attempt == 0 {
                    eprintln!("floodwatch: replay: {url}: {e}; retrying");
                }
                totals.retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(anyhow!("{url}: {e}")),
        }
    }
    bail!("{url}: the server kept refusing the batch")
}

fn compress(body: Vec<u8>, encoding: &str) -> Result<Vec<u8>> {
    use std::io::Write;
    Ok(match encoding {
        "none" => body,
        "zstd" => zstd::encode_all(&body[..], 1)?,
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&body)?;
            e.finish()?
        }
        o => bail!("--encoding {o:?}: expected none, gzip or zstd"),
    })
}

/// Days from 0000-03-01 of a `YYYY-MM-DD` date, and back: whole-day shifts of the dates in
/// place need no time zone or clock, only the civil calendar.
fn days_of(d: &[u8]) -> Option<i64> {
    let num = |r: &[u8]| -> Option<i64> {
        r.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + (c - b'0') as i64)
        })
    };
    if d.len() != 10 || d[4] != b'-' || d[7] != b'-' {
        return None;
    }
    let (y, m, dd) = (num(&d[..4])?, num(&d[5..7])?, num(&d[8..10])?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    Some(era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy)
}

fn date_of(days: i64) -> [u8; 10] {
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let s = format!("{y:04}-{m:02}-{d:02}");
    let mut out = [0u8; 10];
    out.copy_from_slice(&s.as_bytes()[..10]);
    out
}

/// Moves every event date in `block` on by `shift` days; returns the first and last day seen.
fn shift_dates(
    block: &mut [u8],
    shift: i64,
    cache: &mut std::collections::HashMap<[u8; 10], [u8; 10]>,
) -> Option<(i64, i64)> {
    let mut span: Option<(i64, i64)> = None;
    for key in [
        &b"\"Timestamp\":\""[..],
        b"\"TimeGenerated\":\"",
        b"\"time\":\"",
    ] {
        let finder = memchr::memmem::Finder::new(key);
        let mut at = 0;
        while let Some(i) = finder.find(&block[at..]) {
            let start = at + i + key.len();
            at = start;
            let Some(date) = block.get(start..start + 10) else {
                break;
            };
            let mut k = [0u8; 10];
            k.copy_from_slice(date);
            let new = match cache.get(&k) {
                Some(n) => *n,
                None => {
                    let Some(d) = days_of(&k) else { continue };
                    let n = date_of(d + shift);
                    cache.insert(k, n);
                    n
                }
            };
            if let Some(d) = days_of(&k) {
                span = Some(span.map_or((d, d), |(a, b)| (a.min(d), b.max(d))));
            }
            block[start..start + 10].copy_from_slice(&new);
        }
    }
    span
}

/// `--batch 0s`: blocks of whole lines as fast as the server takes them, the input sent
/// `repeat` times with its dates moved on each time. The client's cost is a read and a copy
/// per block (and the date rewrite), so on one machine the server gets the cores.
fn replay_blocks(
    a: &ReplayArgs,
    tx: &mpsc::SyncSender<(String, Vec<u8>)>,
    run_id: u128,
    started: Instant,
) -> Result<u64> {
    let max_time = a
        .max_time
        .as_deref()
        .map(|t| parse_duration(t).map_err(|e| anyhow!("--max-time: {e}")))
        .transpose()?
        .map(|n| Duration::from_nanos(n.max(0) as u64));
    let mut seq = 0u64;
    let mut lines = 0u64;
    let mut shift = 0i64;
    let mut span: Option<(i64, i64)> = None;
    let mut cache = std::collections::HashMap::new();
    for pass in 0..a.repeat.max(1) {
        let mut input = open(&a.input)?;
        let mut carry: Vec<u8> = Vec::new();
        loop {
            if max_time.is_some_and(|m| started.elapsed() >= m) {
                return Ok(lines);
            }
            let mut block = std::mem::take(&mut carry);
            block.reserve(a.max_batch_bytes);
            let before = block.len();
            let n = (&mut input)
                .take(a.max_batch_bytes.saturating_sub(before).max(1 << 16) as u64)
                .read_to_end(&mut block)?;
            let eof = n == 0;
            let cut = if eof {
                block.len()
            } else {
                match memchr::memrchr(b'\n', &block) {
                    Some(i) => i + 1,
                    None => continue,
                }
            };
            carry = block.split_off(cut);
            if block.is_empty() {
                if eof {
                    break;
                }
                continue;
            }
            lines += memchr::memchr_iter(b'\n', &block).count() as u64;
            // The span is of the input's own dates (before the shift).
            if let Some((lo, hi)) = shift_dates(&mut block, shift, &mut cache) {
                span = Some(span.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
            seq += 1;
            tx.send((format!("replay-{run_id:x}-{seq}"), block))
                .map_err(|_| anyhow!("the sending threads stopped"))?;
            if eof {
                break;
            }
        }
        // The next copy starts the day after this one's last day (dates as sent).
        let days = span.map_or(1, |(lo, hi)| hi - lo + 1);
        shift = (pass as i64 + 1) * days;
        cache.clear();
    }
    Ok(lines)
}

pub fn replay(a: ReplayArgs) -> Result<ExitCode> {
    let speed: Option<f64> = match a.speed.as_str() {
        "max" => None,
        s => {
            let v: f64 = s
                .parse()
                .map_err(|_| anyhow!("--speed {s:?}: expected a number or max"))?;
            if !(v.is_finite() && v > 0.0) {
                bail!("--speed must be positive");
            }
            Some(v)
        }
    };
    compress(Vec::new(), &a.encoding)?;
    if a.concurrency == 0 || (speed.is_some() && a.concurrency > 1) {
        bail!(
            "--concurrency: at least 1, and more than 1 only with --speed max (paced batches keep their order)"
        );
    }
    // `--batch 0s` cuts on size alone (and skips reading each line's time: a load test's
    // client must cost little).
    let batch = parse_duration(&a.batch).map_err(|e| anyhow!("--batch: {e}"))?;
    let cut_on_time = batch > 0;
    if speed.is_some() && !cut_on_time {
        bail!("--batch 0s (size only) needs --speed max: pacing follows event time");
    }
    let token = match &a.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("FLOODWATCH_TOKEN").ok(),
    };
    let url = format!("{}/ingest", a.to.trim_end_matches('/'));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let totals = Arc::new(Totals {
        requests: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
    });
    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<(String, Vec<u8>)>(a.concurrency * 2);
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (rx, client, url, token, totals) = (
            rx.clone(),
            client.clone(),
            url.clone(),
            token.clone(),
            totals.clone(),
        );
        let enc = a.encoding.clone();
        workers.push(std::thread::spawn(move || -> Result<()> {
            loop {
                let body = {
                    let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
                    guard.recv()
                };
                let Ok((key, body)) = body else { return Ok(()) };
                let body = compress(body, &enc)?;
                post(&client, &url, token.as_deref(), &enc, (key, body), &totals)?;
            }
        }));
    }
    if a.repeat > 1 && cut_on_time {
        bail!("--repeat needs --batch 0s (size-cut blocks at full speed)");
    }
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let lines = if !cut_on_time {
        let lines = replay_blocks(&a, &tx, run_id, started)?;
        drop(tx);
        for w in workers {
            w.join()
                .map_err(|_| anyhow!("a sending thread panicked"))??;
        }
        lines
    } else {
        paced(&a, tx, workers, speed, batch, run_id, started)?
    };
    let secs = started.elapsed().as_secs_f64();
    let acc = totals.accepted.load(Ordering::Relaxed);
    eprintln!(
        "floodwatch: replayed {lines} lines in {} requests over {secs:.1} s: {acc} events accepted ({:.0}/s), {} records skipped, {} rejected requests, {} retries",
        totals.requests.load(Ordering::Relaxed),
        acc as f64 / secs.max(1e-9),
        totals.skipped.load(Ordering::Relaxed),
        totals.rejected.load(Ordering::Relaxed),
        totals.retries.load(Ordering::Relaxed),
    );
    if lines == 0 {
        eprintln!("floodwatch: replay: the input was empty: nothing sent");
    }
    Ok(ExitCode::SUCCESS)
}

/// Batches cut on event time, paced at `speed` times event time (`None`: at once).
#[allow(clippy::too_many_arguments)]
fn paced(
    a: &ReplayArgs,
    tx: mpsc::SyncSender<(String, Vec<u8>)>,
    workers: Vec<std::thread::JoinHandle<Result<()>>>,
    speed: Option<f64>,
    batch: Nanos,
    run_id: u128,
    started: Instant,
) -> Result<u64> {
    let mut input = open(&a.input)?;
    let mut buf: Vec<u8> = Vec::with_capacity(a.max_batch_bytes + (1 << 16));
    let mut line = Vec::new();
    // Pacing: the first event's time is wall time zero; a batch covering [b, b + batch) goes
    // when wall time reaches what b + batch is at this speed.
    let mut t0: Option<Nanos> = None;
    let mut batch_end: Option<Nanos> = None;
    let mut lines = 0u64;
    // Keys: this run's start and the batch's number, so two replays do not share keys but
    // every retry of one batch does.
    let seq = std::cell::Cell::new(0u64);
    let send = |buf: &mut Vec<u8>, until: Option<Nanos>, t0: Option<Nanos>| -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        seq.set(seq.get() + 1);
        let key = format!("replay-{run_id:x}-{}", seq.get());
        if let (Some(speed), Some(until), Some(t0)) = (speed, until, t0) {
            let due = Duration::from_secs_f64(((until - t0) as f64 / 1e9 / speed).max(0.0));
            let now = started.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let body = std::mem::replace(buf, Vec::with_capacity(a.max_batch_bytes + (1 << 16)));
        tx.send((key, body))
            .map_err(|_| anyhow!("the sending threads stopped"))
    };
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        lines += 1;
        if let Some(t) = line_time(&line) {
            let t0v = *t0.get_or_insert(t);
            let end = *batch_end.get_or_insert_with(|| t0v + batch);
            if t >= end {
                send(&mut buf, Some(end), t0)?;
                // The next batch is the one holding `t` (quiet stretches are skipped over).
                let k = (t - t0v) / batch.max(1);
                batch_end = Some(t0v + (k + 1) * batch);
            }
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        buf.extend_from_slice(&line);
        if buf.len() >= a.max_batch_bytes {
            send(&mut buf, None, t0)?;
        }
    }
    send(&mut buf, batch_end, t0)?;
    drop(tx);
    for w in workers {
        w.join()
            .map_err(|_| anyhow!("a sending thread panicked"))??;
    }
    Ok(lines)
}
