//! The batch run: every input read on every core, bins sealed as the input is read and scored
//! on a thread of their own, late input read again with every bin kept.

use std::collections::HashMap;
use std::path::PathBuf;

use floodwatch_core::time::Nanos;
use floodwatch_core::{Aggregates, Diagnostics, IngestStats, SkipReason};
use floodwatch_detect::Alert;
use floodwatch_detect::floodwatch::{self as fw};
use floodwatch_detect::seed::{self, SeedTable};
use floodwatch_ingest::{IngestError, IngestOptions, InputFormat};

use crate::live::Tracker;
use crate::series::SeriesBook;
use crate::settings::{Query, Rule, Settings};

/// What a rule keeps of complete bins while ingest reads on: a few numbers a bin for the seed
/// rule, the detector's own state for floodwatch's. Either way a bin's sketches go as soon as
/// ingest seals it.
enum Consumer {
    Seed(SeedTable),
    /// With the per-bin series, when a report asked for them.
    Floodwatch(Box<fw::Stream>, Option<Box<SeriesBook>>),
}

impl Consumer {
    fn new(s: &Settings, q: &Query, series: bool) -> Self {
        match s.rule {
            Rule::Seed => Consumer::Seed(SeedTable::new(s.width)),
            Rule::Floodwatch => Consumer::Floodwatch(
                Box::new(fw::Stream::new(&s.floodwatch, s.width, q.until)),
                series.then(Box::default),
            ),
        }
    }

    /// `complete`: bins at or above it may be incomplete.
    fn push(&mut self, bins: &Aggregates, complete: i64, cfg: &fw::FloodwatchConfig) {
        match self {
            Consumer::Seed(t) => t.push(bins),
            Consumer::Floodwatch(f, None) => f.push(bins, complete),
            Consumer::Floodwatch(f, Some(book)) => {
                let per_day = f.width().per_day();
                f.push_observed(bins, complete, &mut |bin, name, agg, state| {
                    book.observe(bin, name, agg, state, cfg, per_day)
                });
            }
        }
    }

    fn outcome(&self, s: &Settings, q: &Query, stats: &IngestStats) -> Outcome {
        let since = if q.since_first_event {
            stats.min_ts
        } else {
            q.since
        };
        match self {
            Consumer::Seed(t) => {
                let alerts = if since.is_some() || q.until.is_some() {
                    seed::run_scheduled_table(t, &s.seed, since, q.until)
                } else {
                    seed::run_table(t, &s.seed, q.now)
                };
                Outcome {
                    alerts,
                    incidents: Vec::new(),
                }
            }
            Consumer::Floodwatch(f, _) => {
                let d = f.finish(since);
                Outcome {
                    alerts: d.alerts,
                    incidents: d.incidents,
                }
            }
        }
    }
}

/// Result of running a rule.
pub struct Outcome {
    pub alerts: Vec<Alert>,
    pub incidents: Vec<fw::Incident>,
}

/// Which bins the rule scored, for the run's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScoredBins {
    /// Bin indexes `[first, end)` whose scores the outcome reports (`None`: no bin was scored).
    pub range: Option<(i64, i64)>,
    /// (device, bin) pairs scored in that range; the floodwatch rule only (it scores each
    /// device from its first bin to its last complete one). `None` for the seed rule, which
    /// scores the same window for every device with traffic on its ports.
    pub device_bins: Option<u64>,
}

/// Where each device's bins start, seen as bins go to the rule: with the rule's own record of
/// where it stands, this tells which bins were scored.
#[derive(Debug, Default)]
struct Seen {
    first_bin: HashMap<String, i64>,
}

impl Seen {
    fn see(&mut self, chunk: &Aggregates) {
        for k in chunk.bins.keys() {
            let name = chunk.devices.name(k.device);
            match self.first_bin.get_mut(name) {
                Some(b) => *b = (*b).min(k.bin),
                None => {
                    self.first_bin.insert(name.to_owned(), k.bin);
                }
            }
        }
    }
}

/// First bin index whose start is at or after `t`.
fn ceil_index(width: floodwatch_core::BinWidth, t: Nanos) -> i64 {
    let i = width.index(t);
    if width.start(i) < t { i + 1 } else { i }
}

/// The input read and the rule run over it.
pub struct Detected {
    consumer: Consumer,
    seen: Seen,
    pub stats: IngestStats,
    pub diagnostics: Diagnostics,
    pub formats: std::collections::BTreeMap<String, InputFormat>,
    /// What the run has to tell the user about what it skipped (empty when nothing was).
    pub notices: Vec<String>,
}

impl Detected {
    /// The alerts for `q` (whose `until` must be the one the input was read with).
    pub fn outcome(&self, s: &Settings, q: &Query) -> Outcome {
        self.consumer.outcome(s, q, &self.stats)
    }

    /// Devices with at least one event used.
    pub fn devices(&self) -> usize {
        self.seen.first_bin.len()
    }

    /// The bins [`Detected::outcome`] scores for `q`. Mirrors the ranges of
    /// [`seed::run_table`] (the window before `now`), [`seed::run_scheduled_table`] (every bin
    /// from `since` to the newest event's) and [`fw::Stream`] (each device from its first bin to
    /// the last it scored, reported from `since` on).
    pub fn scored_bins(&self, s: &Settings, q: &Query) -> ScoredBins {
        let w = s.width;
        let since = if q.since_first_event {
            self.stats.min_ts
        } else {
            q.since
        };
        let nonempty = |a: i64, b: i64| (a < b).then_some((a, b));
        match &self.consumer {
            Consumer::Seed(_) => {
                let (Some(min), Some(max)) = (self.stats.min_ts, self.stats.max_ts) else {
                    return ScoredBins::default();
                };
                let newest = w.floor(max);
                let range = if since.is_some() || q.until.is_some() {
                    let from = w.index(since.unwrap_or(min).max(min));
                    let to = w.index(q.until.unwrap_or(newest).min(newest));
                    nonempty(from, to)
                } else {
                    let now_bin = w.index(q.now.unwrap_or(newest));
                    nonempty(now_bin - s.seed.window / w.nanos(), now_bin)
                };
                ScoredBins {
                    range,
                    device_bins: None,
                }
            }
            Consumer::Floodwatch(f, _) => {
                let from = since.map_or(i64::MIN, |t| ceil_index(w, t));
                let mut range: Option<(i64, i64)> = None;
                let mut n = 0u64;
                for (device, &next) in f.next_bins() {
                    let first = self.seen.first_bin.get(device).copied().unwrap_or(next);
                    let start = first.max(from);
                    if start < next {
                        n += (next - start) as u64;
                        range =
                            Some(range.map_or((start, next), |(a, b)| (a.min(start), b.max(next))));
                    }
                }
                ScoredBins {
                    range,
                    device_bins: Some(n),
                }
            }
        }
    }

    /// The per-bin series, when the run was asked to keep them ([`read_detect_with`]) and the
    /// rule is floodwatch's.
    pub fn series(&self) -> Option<&SeriesBook> {
        match &self.consumer {
            Consumer::Floodwatch(_, Some(b)) => Some(b),
            _ => None,
        }
    }
}

/// Called with the alerts of each batch of bins as they are scored (floodwatch rule only), in
/// time order, each alert once; runs on the scoring thread.
pub type OnAlerts<'a> = dyn FnMut(&[Alert]) + Send + 'a;

/// Reads every input and runs the rule over it as bins complete. When some events came later
/// than the lateness horizon and the inputs are files, they are read again with every bin kept
/// (`notice` is told why); on standard input the late events are counted and reported.
///
/// `on_alerts`, when given, sees each alert as soon as its bin is scored (with an `IncidentId`
/// from the device's run of alert bins, as the live service gives it); the alerts of
/// [`Detected::outcome`] are the same ones.
pub fn read_detect(
    inputs: &[PathBuf],
    s: &Settings,
    q: &Query,
    notice: &mut dyn FnMut(&str),
    on_alerts: Option<&mut OnAlerts<'_>>,
) -> Result<Detected, IngestError> {
    read_detect_with(inputs, s, q, notice, on_alerts, false)
}

/// [`read_detect`], keeping every device's per-bin series too when `series` (floodwatch rule):
/// see [`Detected::series`].
pub fn read_detect_with(
    inputs: &[PathBuf],
    s: &Settings,
    q: &Query,
    notice: &mut dyn FnMut(&str),
    mut on_alerts: Option<&mut OnAlerts<'_>>,
    series: bool,
) -> Result<Detected, IngestError> {
    let stdin = inputs.iter().any(|p| p.as_os_str() == "-");
    // Alerts already shown cannot be taken back: a streamed run is never read twice.
    let (mut consumer, mut seen, mut tracker, mut out) = read_once(
        inputs,
        s,
        q,
        s.ingest.lateness,
        on_alerts.as_deref_mut(),
        series,
    )?;
    let late = out.diagnostics.count(SkipReason::Late);
    if late > 0 && !stdin && on_alerts.is_none() {
        notice(&format!(
            "{} came more than the lateness horizon ({}) behind the input before them; reading the input again with every bin kept (sort it by time, or pass --lateness all, to read it once)",
            events(late),
            horizon(s.ingest.lateness)
        ));
        (consumer, seen, tracker, out) = read_once(inputs, s, q, None, None, series)?;
    }
    let stats = out.rest.stats;
    let notices = skip_notices(&out.diagnostics, &stats, s.ingest.lateness);
    // The rest carries the whole input's stats, which give the seed table its time span.
    let complete = stats.max_ts.map_or(i64::MIN, |t| s.width.index(t));
    let before = scored_len(&consumer);
    seen.see(&out.rest);
    consumer.push(&out.rest, complete, &s.floodwatch);
    // The bin the input ended in is judged on what it holds, as a partial bin.
    if let (Consumer::Floodwatch(f, _), Some(end)) = (&mut consumer, stats.max_ts) {
        f.push_partial(&out.rest, end);
    }
    if let (Some(cb), Consumer::Floodwatch(f, _)) = (on_alerts, &consumer) {
        emit_new(f, before, &mut tracker, cb);
    }
    Ok(Detected {
        consumer,
        seen,
        stats,
        diagnostics: out.diagnostics,
        formats: out.formats,
        notices,
    })
}

fn scored_len(c: &Consumer) -> usize {
    match c {
        Consumer::Floodwatch(f, _) => f.scored_len(),
        Consumer::Seed(_) => 0,
    }
}

/// Hands the alerts scored after the first `from` to `cb`, in time order, with incident ids.
fn emit_new(f: &fw::Stream, from: usize, tracker: &mut Tracker, cb: &mut OnAlerts<'_>) {
    let mut fresh: Vec<fw::Scored> = f.scored_since(from).to_vec();
    if fresh.is_empty() {
        return;
    }
    fresh.sort_by(|a, b| {
        a.bin
            .cmp(&b.bin)
            .then(a.alert.device_name.cmp(&b.alert.device_name))
    });
    let alerts: Vec<Alert> = fresh
        .into_iter()
        .map(|mut sc| {
            sc.alert.incident_id = Some(tracker.incident_of(&sc.alert, sc.bin));
            sc.alert
        })
        .collect();
    cb(&alerts);
}

fn horizon(lateness: Option<Nanos>) -> String {
    lateness.map_or("all".to_owned(), |l| format!("{}s", l / 1_000_000_000))
}

/// One pass over the inputs with bins sealed `lateness` behind (`None`: every bin kept).
fn read_once(
    inputs: &[PathBuf],
    s: &Settings,
    q: &Query,
    lateness: Option<Nanos>,
    on_alerts: Option<&mut OnAlerts<'_>>,
    series: bool,
) -> Result<(Consumer, Seen, Tracker, floodwatch_ingest::StreamOutput), IngestError> {
    let make = || s.aggregator(s.width);
    let opts = IngestOptions {
        lateness,
        ..s.ingest.clone()
    };
    // The rule scores sealed bins on a thread of its own, while the workers read on: scoring
    // a window's bins takes about as long as a sizeable part of reading the next.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Aggregates>(2);
        let mut consumer = Consumer::new(s, q, series);
        let scorer = std::thread::Builder::new()
            .name("scorer".into())
            .spawn_scoped(scope, move || {
                let mut tracker = Tracker::new(&s.floodwatch, s.width);
                let mut seen = Seen::default();
                let mut on_alerts = on_alerts;
                for bins in rx {
                    seen.see(&bins);
                    let before = scored_len(&consumer);
                    consumer.push(&bins, i64::MAX, &s.floodwatch);
                    if let (Some(cb), Consumer::Floodwatch(f, _)) =
                        (on_alerts.as_deref_mut(), &consumer)
                    {
                        emit_new(f, before, &mut tracker, cb);
                    }
                }
                (consumer, seen, tracker)
            })
            .map_err(|e| IngestError::Io {
                path: PathBuf::from("(detector thread)"),
                source: e,
            })?;
        let out = floodwatch_ingest::ingest_into(inputs, &opts, &make, &mut |bins| {
            // A send fails only if the scorer died; its panic is reported by the join below.
            let _ = tx.send(bins);
        });
        drop(tx);
        let (consumer, seen, tracker) = match scorer.join() {
            Ok(c) => c,
            // A panic in the detector is a bug; carry it on rather than hide it.
            Err(p) => std::panic::resume_unwind(p),
        };
        Ok((consumer, seen, tracker, out?))
    })
}

/// `n event` / `n events`.
fn events(n: u64) -> String {
    format!("{n} {}", if n == 1 { "event" } else { "events" })
}

/// The lines telling what was skipped and why, with the first examples and where they were;
/// empty when nothing was. (What a run says when its summary is off: the summary has the
/// counts, and [`skip_details`] after them.)
pub fn skip_notices(d: &Diagnostics, stats: &IngestStats, lateness: Option<Nanos>) -> Vec<String> {
    let mut out = Vec::new();
    let dup = stats.duplicates;
    if d.total_skipped() == 0 && dup == 0 {
        return out;
    }
    let mut msg = format!("read {} records, used {}", d.records_read, stats.events);
    if dup > 0 {
        msg.push_str(&format!(
            "; dropped {dup} exact {}",
            if dup == 1 { "duplicate" } else { "duplicates" }
        ));
    }
    if d.total_skipped() > 0 {
        let parts: Vec<String> = d.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
        msg.push_str(&format!("; skipped: {}", parts.join(", ")));
    }
    out.push(msg);
    out.extend(skip_details(d, lateness));
    out
}

/// The first skipped records with where they were (indented), how many more there were, and
/// what late events mean.
pub fn skip_details(d: &Diagnostics, lateness: Option<Nanos>) -> Vec<String> {
    let mut out = Vec::new();
    for ex in &d.examples {
        out.push(format!("  {ex}"));
    }
    let shown = d.examples.len() as u64;
    let listed = d.total_skipped() - d.count(SkipReason::OtherTable);
    if listed > shown {
        out.push(format!("  ({} more not shown)", listed - shown));
    }
    if d.count(SkipReason::Late) > 0 {
        out.push(format!(
            "{} came more than the lateness horizon ({}) behind the input before them, after their bins had been scored, and are not counted; sort the input by time, or pass --lateness with a longer horizon (or --lateness all for input in any order)",
            events(d.count(SkipReason::Late)),
            horizon(lateness)
        ));
    }
    out
}
