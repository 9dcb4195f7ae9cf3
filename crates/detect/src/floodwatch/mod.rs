//! floodwatch's own detector (`--rule floodwatch`, the default).
//!
//! # What it decides, bin by bin
//!
//! Every complete bin of every device is scored against that device's own trailing history
//! (see [`baseline`]), separately for four vector groups: web connections (HTTP/HTTPS
//! connection floods), SYN + failed inbound connections (SYN floods), inbound UDP, inbound ICMP.
//!
//! **Evidence** (each alert lists it as sentences with values and thresholds):
//! - *rate vs baseline*: observed connections against the robust (median / MAD) baseline:
//!   seasonal (same time of day; of week with two weeks of history) and trailing (last hour),
//!   flagged bins excluded;
//! - *new sources*: the share of the bin's sampled sources, and of their connections, never seen
//!   on the device within `novelty_days` ([`novelty`]); turned into "share of the excess that
//!   new sources explain" by subtracting the device's usual share of newcomers;
//! - *distinct sources* vs baseline, *spread* across /24 (/48) prefixes, *per-source rate
//!   uniformity* (coefficient of variation of per-source counts), *top-source dominance*;
//! - *persistence* (consecutive alert bins) and a *CUSUM* of the relative excess for floods too
//!   slow for the one-bin test.
//!
//! **Tests**: a vector alerts when (one-bin) it reaches
//! `max(ratio x baseline, baseline + z x spread, baseline + min_excess)`, where `ratio` is
//! `novel_rate_ratio` (2x) when most of the excess comes from new sources and `rate_ratio` (3x)
//! otherwise; or (slow rise) its CUSUM crosses `cusum_h` while elevated with mostly new sources;
//! or (carpet bombing) at least `carpet_min_devices` devices rise `carpet_rate_ratio` (1.5x)
//! with mostly new sources in the same bin. **Warm-up**: a device with fewer than `warmup_bins`
//! clean bins has no baseline; only absolute evidence alerts (at least `cold_min_count`
//! connections of one vector from `cold_min_sources` sources spread over many prefixes), so a
//! brand-new device under a huge flood alerts and a new device with ordinary traffic does not.
//! With some hours but no earlier day, the trailing baseline is used alone.
//!
//! **Vector**: the group carrying most of the excess, or `mixed` when none carries
//! `mixed_share` (60 %); `VectorShare` is the labelled traffic's share of the bin's inbound
//! connections.
//!
//! **Suppression** (the alert is still emitted, `Suppressed: true` + `SuppressionReason`; the
//! first that applies wins): a maintenance / load-test window matching the device; allow-listed
//! sources carrying `allowed_share` of the excess; a single source carrying
//! `single_source_share` of the excess, fewer than `min_sources` sources, or the top
//! `dominant_sources` together carrying that share (a monitor, scanner or load generator, not a
//! distributed attack); a flash crowd (less than `novel_share` of the excess
//! from new sources). Suppressed and unsuppressed alert bins are both kept out of the baseline
//! and out of the novelty history, and so are *suspect* bins (clearly elevated, mostly new
//! sources, CUSUM running): a slow flood must not lift the baseline, nor turn its own bots into
//! "returning" sources, before the CUSUM catches it.
//!
//! **Confidence** counts independent signals (observed >= 2x threshold, >= 80 % new sources,
//! persistence, distinct sources >= 3x baseline, uniform per-source rates, wide prefix spread,
//! CUSUM): High needs four and persistence (or five), Medium two. **Severity**: High when
//! confidence is High and the observation is at least twice the threshold, Medium when
//! confidence is Medium or the observation twice the threshold, else Low; suppressed alerts are
//! Informational.
//!
//! **Incidents**: see [`incident`]. Suppressed bins form their own suppressed incidents.
//!
//! # Telemetry caveats
//!
//! Defender throttles repeated identical events, so counts are lower bounds; distinct sources
//! hold up better, which is why novelty and source counts weigh as much as volume. SYN, UDP and
//! ICMP floods are only partly visible (`ConnectionAttempt`, failures, inspected ICMP) and are
//! proxies of the packet rate.
//!
//! # Measured
//!
//! On the simulator's `scenarios` profile (3 days, 8 devices, every labelled scenario), with
//! default settings plus `--allow-source 10.250.0.0/24`, seeds 1-11: every attack (HTTPS, SYN,
//! UDP and ICMP floods, low-and-slow, pulse wave, carpet bombing, attack at the daily peak,
//! attack on a device two hours old) alerted unsuppressed in its first bin with the right
//! vector; flash crowd, load test, monitor and new device raised no unsuppressed alert (each
//! surge was emitted suppressed with its reason); zero alerts of any kind outside the labelled
//! windows. The same held at volume scales 0.3, 3 and 10, for 16 devices over 7 days, and for
//! 400 hours (weekly baselines, weekends). Without the allow-list the load test is still
//! suppressed (few-source surge). A looser setting (ratios 2.0 / 1.5, z 4, minimum excess 50,
//! CUSUM threshold 1.5) still raised no false positive, so the defaults have margin.
//! Detection over the ~1.2 million events of one dataset takes about 0.13 s (one core,
//! opt-level 2, the development machine of this project).
//!
//! # Streaming
//!
//! [`Detector`] holds one [`DeviceState`] per device; everything is serde-serializable and
//! bounded, and time comes only from bin indices. [`run`] drives it over a batch.

pub mod baseline;
pub mod config;
pub mod detector;
pub mod device;
pub mod incident;
pub mod novelty;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use floodwatch_core::time::{Nanos, Rfc3339};
use floodwatch_core::{Aggregates, BinAgg};

pub use config::{FloodwatchConfig, SuppressMode, Window};
pub use detector::{Detector, DetectorState, Preview, Scored, stands_out};
pub use device::{DeviceState, Group};
pub use incident::{AlertBin, Incident, IncidentKind, Peak};

use crate::alert::Alert;

/// Bins whose start lies in `[since, until)`; `None` is unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub since: Option<Nanos>,
    pub until: Option<Nanos>,
}

/// Output of [`run`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detection {
    /// Ordered by time, then device. Suppressed alerts included.
    pub alerts: Vec<Alert>,
    /// Ordered by start.
    pub incidents: Vec<Incident>,
}

/// First bin index whose start is at or after `t`.
fn ceil_index(width: floodwatch_core::BinWidth, t: Nanos) -> i64 {
    let i = width.index(t);
    if width.start(i) < t { i + 1 } else { i }
}

/// Scores every complete bin of every device in `range`. Earlier bins still build the
/// baselines. The bin holding the newest event of the input may be incomplete: it is judged as a
/// partial bin ([`Stream::push_partial`]). `cfg` should have passed
/// [`FloodwatchConfig::validate`]; windows that do not compile are ignored here.
pub fn run(aggs: &Aggregates, cfg: &FloodwatchConfig, range: TimeRange) -> Detection {
    let width = aggs.width;
    let mut stream = Stream::new(cfg, width, range.until);
    if let Some(max_ts) = aggs.stats.max_ts {
        stream.push(aggs, width.index(max_ts));
        stream.push_partial(aggs, max_ts);
    } else if let Some(end) = aggs.bins.keys().map(|k| k.bin + 1).max() {
        stream.push(aggs, end);
    }
    stream.finish(range.since)
}

/// A partial bin must stand out on what was seen of it, unprojected, by this many noise units
/// and connections (the live service's early decisions use the same bar).
pub const PARTIAL_Z: f64 = 6.0;
pub const PARTIAL_MIN_EXCESS: f64 = 20.0;
/// Shown each device's bin before it is scored: bin index, device, the bin, the device's state.
pub type BinObserver<'a> = dyn FnMut(i64, &str, &BinAgg, Option<&DeviceState>) + 'a;

/// The serializable part of a [`Stream`]: the detector's state, where each device stands, and
/// the alerts not yet taken.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamState {
    pub detector: DetectorState,
    pub next: BTreeMap<String, i64>,
    pub scored: Vec<Scored>,
}

/// The detector fed with complete bins as they come (sealed by ingest, or a whole batch at
/// once): the same result as [`run`] over all of them, in memory bounded by the detector's own
/// state and the alerts.
///
/// A device exists from its first bin to its last: the quiet bins between two of its bins are
/// scored as empty when its next bin comes (alone: an empty bin rises nowhere, so it changes
/// nothing for other devices in the same bin), and quiet bins after its last are not scored.
pub struct Stream {
    det: Detector,
    cfg: FloodwatchConfig,
    width: floodwatch_core::BinWidth,
    /// First bin index not scored (from `until`).
    until: i64,
    /// Per device: the bin after the last one scored.
    next: HashMap<String, i64>,
    scored: Vec<Scored>,
}

impl Stream {
    pub fn new(
        cfg: &FloodwatchConfig,
        width: floodwatch_core::BinWidth,
        until: Option<Nanos>,
    ) -> Self {
        Stream {
            det: Detector::new(cfg, width).unwrap_or_else(|_| Detector::lenient(cfg, width)),
            cfg: cfg.clone(),
            width,
            until: until.map_or(i64::MAX, |u| ceil_index(width, u)),
            next: HashMap::new(),
            scored: Vec::new(),
        }
    }

    /// Scores the bins of `chunk` below index `complete` in time order; bins at or above it are
    /// dropped (the caller knows them incomplete). Every bin of a device must come after the
    /// ones already pushed for it.
    pub fn push(&mut self, chunk: &Aggregates, complete: i64) {
        self.push_observed(chunk, complete, &mut |_, _, _, _| {});
    }

    /// [`Stream::push`], showing `observe` each device's bin just before it is scored, with
    /// the device's state as it stands then (`None` for a device not seen before): what a
    /// report charts against (the baseline the bin was judged by). Quiet bins scored as empty
    /// are not shown.
    pub fn push_observed(
        &mut self,
        chunk: &Aggregates,
        complete: i64,
        observe: &mut BinObserver<'_>,
    ) {
        let end = complete.min(self.until);
        let mut by_bin: BTreeMap<i64, Vec<(&str, &BinAgg)>> = BTreeMap::new();
        for (k, agg) in &chunk.bins {
            if k.bin < end {
                by_bin
                    .entry(k.bin)
                    .or_default()
                    .push((chunk.devices.name(k.device), agg));
            }
        }
        let empty = BinAgg::default();
        for (bin, mut live) in by_bin {
            live.sort_by(|a, b| a.0.cmp(b.0));
            for &(name, _) in &live {
                let from = self.next.get(name).copied().unwrap_or(bin);
                for idle in from..bin {
                    let out = self.det.observe_bin(idle, &[(name, &empty)]);
                    self.scored.extend(out);
                }
            }
            for &(name, agg) in &live {
                observe(bin, name, agg, self.det.state.devices.get(name));
            }
            let out = self.det.observe_bin(bin, &live);
            self.scored.extend(out);
            for &(name, _) in &live {
                match self.next.get_mut(name) {
                    Some(n) => *n = (*n).max(bin + 1),
                    None => {
                        self.next.insert(name.to_owned(), bin + 1);
                    }
                }
            }
        }
    }

    /// Judges the bin the input ended in, `data_end` being its newest event: the bin covers
    /// `coverage` of its width, so each device's part of it is projected onto the whole bin at
    /// the rate seen and put through the complete bin's tests ([`Detector::preview`]), and an
    /// alert is kept only when what was seen stands out on its own ([`stands_out`]). The alert
    /// says `Partial` with its coverage and a reason naming where the data ends. Nothing is
    /// learned from the bin: baselines are unchanged, so pushing the complete bin later (had
    /// the input gone on) would score it as if this had never happened.
    pub fn push_partial(&mut self, chunk: &Aggregates, data_end: Nanos) {
        let bin = self.width.index(data_end);
        if bin >= self.until {
            return;
        }
        let start = self.width.start(bin);
        // The newest event's own nanosecond counts as covered.
        let coverage = ((data_end - start + 1) as f64 / self.width.nanos() as f64).min(1.0);
        let mut live: Vec<(&str, &BinAgg)> = chunk
            .bins
            .iter()
            .filter(|(k, _)| k.bin == bin)
            .map(|(k, agg)| (chunk.devices.name(k.device), agg))
            .collect();
        live.sort_by(|a, b| a.0.cmp(b.0));
        let empty = BinAgg::default();
        for (name, agg) in live {
            if self.next.get(name).is_some_and(|&n| n > bin) {
                continue;
            }
            // Quiet bins since the device's last are scored first, as for a complete bin.
            if let Some(&from) = self.next.get(name) {
                for idle in from..bin {
                    let out = self.det.observe_bin(idle, &[(name, &empty)]);
                    self.scored.extend(out);
                }
                self.next.insert(name.to_owned(), bin);
            }
            let preview = self.det.preview(bin, name, agg, coverage, None);
            if let Some(mut alert) = preview.alert
                && stands_out(&alert, coverage, PARTIAL_Z, PARTIAL_MIN_EXCESS)
            {
                alert.reasons.insert(
                    0,
                    format!(
                        "partial bin: the input ends at {}, {:.0}% into the bin; counts are projected onto the whole bin at the rate seen",
                        Rfc3339(data_end),
                        coverage * 100.0
                    ),
                );
                self.scored.push(Scored {
                    alert,
                    bin,
                    carpet: false,
                });
            }
        }
    }

    /// The detector's state: every device's history so far.
    pub fn state(&self) -> &DetectorState {
        &self.det.state
    }

    /// The detector itself, for judging open bins ([`Detector::preview`]).
    pub fn detector(&self) -> &Detector {
        &self.det
    }

    /// Takes the alerts scored since the last call out of the stream: a long-running consumer
    /// (the live service) keeps them elsewhere rather than in memory. [`Stream::finish`] then
    /// sees only what was not taken.
    pub fn take_scored(&mut self) -> Vec<Scored> {
        std::mem::take(&mut self.scored)
    }

    /// Everything needed to resume this stream later ([`Stream::resume`]), alerts not yet
    /// taken included.
    pub fn snapshot(&self) -> StreamState {
        StreamState {
            detector: self.det.state.clone(),
            next: self.next.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            scored: self.scored.clone(),
        }
    }

    /// A stream that goes on from `state` as if it had never stopped.
    pub fn resume(
        cfg: &FloodwatchConfig,
        width: floodwatch_core::BinWidth,
        until: Option<Nanos>,
        state: StreamState,
    ) -> Self {
        let mut s = Stream::new(cfg, width, until);
        s.det.state = state.detector;
        s.next = state.next.into_iter().collect();
        s.scored = state.scored;
        s
    }

    /// How many alerts the stream holds (scored and not taken).
    pub fn scored_len(&self) -> usize {
        self.scored.len()
    }

    /// The alerts held, from the `from`-th on, in the order they were scored.
    pub fn scored_since(&self, from: usize) -> &[Scored] {
        self.scored.get(from..).unwrap_or(&[])
    }

    pub fn width(&self) -> floodwatch_core::BinWidth {
        self.width
    }

    /// Per device, the bin after the last one scored.
    pub fn next_bins(&self) -> &HashMap<String, i64> {
        &self.next
    }

    /// Alerts and incidents of the bins starting at or after `since` (earlier bins only built
    /// baselines), of what was pushed so far.
    pub fn finish(&self, since: Option<Nanos>) -> Detection {
        let since = since.map_or(i64::MIN, |s| ceil_index(self.width, s));
        let mut scored: Vec<Scored> = self
            .scored
            .iter()
            .filter(|s| s.bin >= since)
            .cloned()
            .collect();
        let last_bins: HashMap<String, i64> = self
            .next
            .iter()
            .filter(|&(_, &next)| next > since)
            .map(|(name, &next)| (name.clone(), next - 1))
            .collect();
        let incidents = incident::build_incidents(&mut scored, self.width, &self.cfg, &last_bins);
        let mut alerts: Vec<Alert> = scored.into_iter().map(|s| s.alert).collect();
        alerts.sort_by(|a, b| {
            a.time_generated
                .cmp(&b.time_generated)
                .then(a.device_name.cmp(&b.device_name))
        });
        Detection { alerts, incidents }
    }
}
