//! One device's detector state and the per-bin evidence it computes.
//!
//! [`DeviceState`] is the streaming unit: bins arrive in time order, [`DeviceState::assess`]
//! scores one against the device's own history (pure: nothing changes), and
//! [`DeviceState::commit`] records the outcome (history, flag, novelty, CUSUM). Splitting the two
//! lets the caller look across devices in between (carpet bombing). All state is serde-
//! serializable and bounded: `baseline_days` of small per-bin records, at most
//! `max_history_sources` source hashes, four CUSUM sums.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use floodwatch_core::sketch::Sample;
use floodwatch_core::{BinAgg, Class, SourceSketch};

use super::baseline::{Baseline, BaselineKind, BinRecord, History, INBOUND, SOURCES};
use super::config::FloodwatchConfig;
use super::novelty::{HotRule, Novelty, SourceHistory};
use crate::alert::Vector;

/// The traffic a flood vector is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Group {
    /// Inbound connections accepted on web ports.
    Web = 0,
    /// Inbound SYNs plus inbound failed connections: a SYN flood shows as both.
    Syn = 1,
    Udp = 2,
    Icmp = 3,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::Web, Group::Syn, Group::Udp, Group::Icmp];

    /// Connections of this group in a bin.
    pub fn count(self, b: &BinAgg) -> u64 {
        match self {
            Group::Web => b.class(Class::Web).count,
            Group::Syn => b.class(Class::Syn).count + b.class(Class::Failed).count,
            Group::Udp => b.class(Class::Udp).count,
            Group::Icmp => b.class(Class::Icmp).count,
        }
    }

    /// The group's source sample (SYN and failed merged).
    pub fn sketch(self, b: &BinAgg) -> Cow<'_, SourceSketch> {
        match self {
            Group::Web => Cow::Borrowed(&b.class(Class::Web).sources),
            Group::Syn => {
                let mut s = b.class(Class::Syn).sources.clone();
                s.merge(&b.class(Class::Failed).sources);
                Cow::Owned(s)
            }
            Group::Udp => Cow::Borrowed(&b.class(Class::Udp).sources),
            Group::Icmp => Cow::Borrowed(&b.class(Class::Icmp).sources),
        }
    }

    /// Bytes of the group's inspected sessions; `None` when no row carried counters.
    pub fn bytes(self, b: &BinAgg) -> Option<u64> {
        let classes: &[Class] = match self {
            Group::Web => &[Class::Web],
            Group::Syn => &[Class::Syn, Class::Failed],
            Group::Udp => &[Class::Udp],
            Group::Icmp => &[Class::Icmp],
        };
        let metered: u64 = classes.iter().map(|&c| b.class(c).metered).sum();
        (metered > 0).then(|| classes.iter().map(|&c| b.class(c).bytes).sum())
    }

    pub fn vector(self) -> Vector {
        match self {
            Group::Web => Vector::HttpsFlood,
            Group::Syn => Vector::SynFlood,
            Group::Udp => Vector::UdpFlood,
            Group::Icmp => Vector::IcmpFlood,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Web => "web",
            Group::Syn => "SYN/failed",
            Group::Udp => "UDP",
            Group::Icmp => "ICMP",
        }
    }
}

/// The evidence about one group in one bin.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupEval {
    pub group: Group,
    pub observed: f64,
    /// Baseline expected value (0 when cold).
    pub expected: f64,
    /// Effective spread: scaled MAD, floored by `spread_floor x expected` and Poisson noise.
    pub spread: f64,
    /// One-bin threshold (cold: `cold_min_count`).
    pub threshold: f64,
    /// The rate multiple used for `threshold`.
    pub ratio_used: f64,
    /// Distinct sources of the group.
    pub sources: u64,
    pub novelty: Novelty,
    /// Share of the group's connections from sources unlike known visitors (new, or returning
    /// hot: see [`HotRule`]).
    pub unlike: f64,
    /// Share of the excess connections that came from new or hot sources, 0..1 (cold: the share
    /// of connections from them).
    pub novel_excess: f64,
    /// Against an ongoing flash crowd's level, when one is remembered.
    pub surge: Option<SurgeEval>,
    /// CUSUM after this bin.
    pub cusum: f64,
    /// The group's source sample (unordered), kept for [`GroupEval::rate_cv`]: most bins
    /// raise no alert and never ask.
    sample: Sample,
    pub one_bin: bool,
    pub cusum_alarm: bool,
    /// This bin meets the sustained-rise test (`sustained_ratio`, `sustained_novel_share`).
    pub sustained: bool,
    /// ... for `sustained_bins` bins in a row: a slow flood of new sources, caught sooner than
    /// the CUSUM would.
    pub sustained_alarm: bool,
    /// Rose at least `carpet_rate_ratio` with mostly new sources: a carpet-bombing candidate.
    pub moderate: bool,
    /// Rose at least `carpet_wide_ratio` with mostly new sources (or is `moderate`): counts
    /// when `carpet_wide_devices` devices rise together.
    pub wide: bool,
    /// Cold device: absolute evidence met.
    pub cold_hit: bool,
}

/// A flash crowd's level, remembered while it lasts so that an attack on top of it is judged
/// against the crowd and not only against the normal baseline (a flood timed to a sale).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Surge {
    /// The group's connections in the crowd's last suppressed bin.
    pub level: f64,
    /// Of those, the connections from new or hot sources.
    pub unlike: f64,
    /// First bin of the crowd.
    pub since: i64,
    /// Last bin the level was confirmed in (a suppressed crowd bin, or an attack bin on top).
    pub last: i64,
}

/// A bin judged against an ongoing flash crowd.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SurgeEval {
    pub level: Surge,
    /// Connections above the crowd's level.
    pub step: f64,
    /// Share of the step from new or hot sources.
    pub step_unlike: f64,
    /// The step needed: `surge_step_ratio` of the level, and beyond the noise.
    pub need: f64,
    /// The step is an attack on top of the crowd.
    pub attack: bool,
}
impl GroupEval {
    /// Coefficient of variation of per-source connection counts in the sample.
    pub fn rate_cv(&self) -> Option<f64> {
        rate_cv(&self.sample)
    }

    pub fn excess(&self) -> f64 {
        (self.observed - self.expected).max(0.0)
    }

    /// Clearly above the baseline: at least two spreads. Below that the share of the excess
    /// explained by new sources is noise (a tiny excess divides it).
    pub fn elevated(&self) -> bool {
        self.excess() >= 2.0 * self.spread
    }

    pub fn ratio(&self) -> f64 {
        self.observed / self.expected.max(1.0)
    }

    pub fn triggered(&self) -> bool {
        self.one_bin
            || self.cusum_alarm
            || self.sustained_alarm
            || self.cold_hit
            || self.surge_attack()
    }

    /// Clearly above the baseline with mostly returning sources behaving as usual: the shape
    /// of a flash crowd, whether or not it is large enough to raise an alert.
    pub fn crowd(&self, cfg: &FloodwatchConfig) -> bool {
        self.elevated() && self.excess() >= cfg.min_excess && self.novel_excess < cfg.novel_share
    }

    /// An attack stepping up on top of an ongoing flash crowd.
    pub fn surge_attack(&self) -> bool {
        self.surge.is_some_and(|s| s.attack)
    }
}

/// How a scored bin came out, for [`DeviceState::commit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Any alert, suppressed or not.
    pub flagged: bool,
    /// An alert that is not suppressed.
    pub unsuppressed: bool,
    /// Explained as a flash crowd (suppressed, or would be in `log-only` mode).
    pub flash_crowd: bool,
    /// Raised as an attack on top of an ongoing flash crowd.
    pub surge_attack: bool,
}

/// The evidence about one device in one bin; see [`DeviceState::assess`].
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub bin: i64,
    pub baseline: Baseline,
    pub groups: Vec<GroupEval>,
    /// Distinct inbound sources (all classes).
    pub sources: u64,
    /// Distinct /24 (/48) prefixes per distinct source.
    pub prefix_spread: f64,
    /// Novelty of all inbound sources.
    pub novelty: Novelty,
    /// Clean bins of history.
    pub history_bins: usize,
    pub inbound: u64,
    /// The bin's sample of all inbound sources, taken once for novelty and again for
    /// [`DeviceState::commit`].
    all_sources: Sample,
}

impl Assessment {
    /// Groups that raised an alert on their own.
    pub fn triggered(&self) -> bool {
        self.groups.iter().any(GroupEval::triggered)
    }

    pub fn moderate(&self) -> bool {
        self.groups.iter().any(|g| g.moderate)
    }

    /// Rises in the wide tier of the fleet-wide test (every moderate rise does too).
    pub fn wide(&self) -> bool {
        self.groups.iter().any(|g| g.wide)
    }
}

/// Streaming state of one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    history: History,
    sources: SourceHistory,
    cusum: [f64; 4],
    /// Consecutive bins with an unsuppressed alert, up to the last committed bin.
    streak: u32,
    /// Last bin at which old sources were expired.
    last_expiry: i64,
    /// Per vector group: the flash crowd going on, if any.
    #[serde(default)]
    surge: [Option<Surge>; 4],
    /// Per vector group: bins in a row meeting the sustained-rise test.
    #[serde(default)]
    sustained: [u32; 4],
}

/// Per-source rate uniformity: bots send alike, people do not.
fn rate_cv(sample: &Sample) -> Option<f64> {
    if sample.entries().len() < 10 {
        return None;
    }
    // Summed in canonical (ascending hash) order, so the value does not depend on the order
    // the sample was taken in.
    let mut counts = sample.entries().to_vec();
    counts.sort_unstable_by_key(|e| e.0);
    let n = counts.len() as f64;
    let mean = counts.iter().map(|e| e.1 as f64).sum::<f64>() / n;
    let var = counts
        .iter()
        .map(|e| (e.1 as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    (mean > 0.0).then(|| var.sqrt() / mean)
}

impl DeviceState {
    pub fn new(cfg: &FloodwatchConfig, per_day: i64) -> Self {
        DeviceState {
            history: History::new(cfg.baseline_days, per_day),
            sources: SourceHistory::new(cfg.max_history_sources as usize),
            cusum: [0.0; 4],
            streak: 0,
            last_expiry: i64::MIN,
            surge: [None; 4],
            sustained: [0; 4],
        }
    }

    /// Consecutive unsuppressed alert bins up to the last committed bin.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// The bin after the last committed one.
    pub fn next_bin(&self) -> Option<i64> {
        self.history.next_bin()
    }

    /// Bins of history held (at most `baseline_days` worth).
    pub fn history_bins(&self) -> usize {
        self.history.len()
    }

    /// The expected connections of each vector group ([`Group::ALL`] order) in `bin`, and their
    /// spread; `None` while the device has no baseline yet (warm-up).
    pub fn expected(
        &self,
        bin: i64,
        cfg: &FloodwatchConfig,
        per_day: i64,
    ) -> Option<[(f64, f64); 4]> {
        let b = self.history.baseline(bin, per_day, cfg);
        (b.kind != BaselineKind::Cold).then(|| {
            let mut out = [(0.0, 0.0); 4];
            for g in Group::ALL {
                let m = b.metric[g as usize];
                out[g as usize] = (m.median, m.spread);
            }
            out
        })
    }

    /// Share of `agg`'s inbound sources this device has not seen before (as the detector
    /// judges novelty); `None` when none of its sample could be checked.
    pub fn new_source_share(&self, agg: &BinAgg) -> Option<f64> {
        self.sources
            .novelty_of(&agg.sources.sample_unordered(), HotRule::NEVER)
            .source_share()
    }

    /// The most connections `ip` made in one clean bin of this device (0 when not remembered).
    pub fn usual_peak(&self, ip: floodwatch_core::Ip) -> u32 {
        self.sources
            .peak(floodwatch_core::hash::hash_ip(ip))
            .unwrap_or(0)
    }

    /// Source hashes remembered.
    pub fn remembered_sources(&self) -> usize {
        self.sources.len()
    }

    /// Scores `bin` against this device's history. Changes nothing.
    pub fn assess(
        &self,
        bin: i64,
        agg: &BinAgg,
        cfg: &FloodwatchConfig,
        per_day: i64,
    ) -> Assessment {
        self.assess_projected(bin, agg, cfg, per_day, 1.0)
    }

    /// [`Self::assess`] of a stretch of the bin projected onto the whole of it by `scale`: a
    /// source's count is judged against its own peak as it was seen (unprojected), since one
    /// visitor's connection in ten seconds is not thirty in five minutes.
    pub fn assess_projected(
        &self,
        bin: i64,
        agg: &BinAgg,
        cfg: &FloodwatchConfig,
        per_day: i64,
        scale: f64,
    ) -> Assessment {
        let baseline = self.history.baseline(bin, per_day, cfg);
        let cold = baseline.kind == BaselineKind::Cold;
        // Only counts and membership are asked of it: no sort needed.
        let all_sources = agg.sources.sample_unordered();
        let sources = all_sources.distinct();
        let prefix_spread = if sources > 0.0 {
            (agg.prefixes.distinct() / sources).min(1.0)
        } else {
            0.0
        };
        let base_new = baseline.new_share.unwrap_or(0.0);
        let hot = HotRule {
            ratio: cfg.hot_source_ratio,
            min_conns: cfg.hot_source_min,
            scale: scale.max(1.0),
        };
        // The cold test needs no CUSUM; elsewhere an idle gap lets the sums decay.
        let gap = self
            .history
            .next_bin()
            .map(|n| (bin - n).max(0) as f64)
            .unwrap_or(0.0);
        let groups = Group::ALL
            .iter()
            .map(|&g| {
                let observed = g.count(agg) as f64;
                let sample = g.sketch(agg).sample_unordered();
                let novelty = self.sources.novelty_of(&sample, hot);
                // A vector's sources are a subset of the bin's: both are estimates from samples
                // of the same hashes once saturated, so the vector's is capped at the bin's and
                // the numbers of one alert never contradict each other.
                let group_sources = sample.distinct_u64().min(sources.round() as u64);
                // New sources, and returning ones far above their own usual rate: neither is a
                // customer coming back as usual.
                let conn_new = novelty.unlike_share().unwrap_or(0.0);
                let m = baseline.metric[g as usize];
                let expected = if cold { 0.0 } else { m.median };
                let spread = m
                    .spread
                    .max(cfg.spread_floor * expected)
                    .max(expected.sqrt())
                    .max(1.0);
                let excess = observed - expected;
                let novel_excess = if cold {
                    conn_new
                } else if excess > 0.0 {
                    ((conn_new * observed - base_new * expected) / excess).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let novel = novel_excess >= cfg.novel_share;
                let ratio_used = if novel {
                    cfg.novel_rate_ratio
                } else {
                    cfg.rate_ratio
                };
                let threshold = if cold {
                    cfg.cold_min_count as f64
                } else {
                    (expected * ratio_used)
                        .max(expected + cfg.z_threshold * spread)
                        .max(expected + cfg.min_excess)
                };
                let mut cusum = self.cusum[g as usize];
                let mut cusum_alarm = false;
                let mut moderate = false;
                let mut cold_hit = false;
                let mut surge = None;
                let mut wide = false;
                let mut sustained = false;
                let mut sustained_alarm = false;
                let one_bin;
                if cold {
                    one_bin = false;
                    cusum = 0.0;
                    cold_hit = observed >= threshold
                        && group_sources >= cfg.cold_min_sources
                        && prefix_spread >= cfg.cold_min_prefix_spread;
                } else {
                    one_bin = observed >= threshold;
                    cusum = (cusum - gap * cfg.cusum_k).max(0.0);
                    let y = (excess / expected.max(cfg.min_excess).max(1.0)).min(4.0);
                    cusum = (cusum + y - cfg.cusum_k).clamp(0.0, 2.0 * cfg.cusum_h);
                    let elevated = excess >= 2.0 * spread && excess >= cfg.min_excess / 2.0;
                    // A separate path for what the one-bin test misses, so that one surge is
                    // not counted as two independent signals.
                    cusum_alarm = !one_bin
                        && cusum >= cfg.cusum_h
                        && elevated
                        && novel
                        && group_sources >= cfg.min_sources;
                    surge = self.surge[g as usize]
                        .filter(|s| bin - s.last <= cfg.surge_hold_bins as i64 + 1)
                        .map(|level| {
                            let step = observed - level.level;
                            let step_unlike = if step > 0.0 {
                                ((conn_new * observed - level.unlike) / step).clamp(0.0, 1.0)
                            } else {
                                0.0
                            };
                            let need = (level.level * cfg.surge_step_ratio)
                                .max(cfg.z_threshold * level.level.max(1.0).sqrt())
                                .max(cfg.min_excess);
                            SurgeEval {
                                level,
                                step,
                                step_unlike,
                                need,
                                attack: step >= need
                                    && step_unlike >= cfg.novel_share
                                    && group_sources >= cfg.min_sources,
                            }
                        });
                    moderate = observed >= expected * cfg.carpet_rate_ratio
                        && excess >= cfg.z_threshold / 2.0 * spread
                        && excess >= cfg.min_excess / 2.0
                        && novel
                        && group_sources >= cfg.min_sources;
                    // The wide tier of the fleet-wide test: a smaller rise, which only counts
                    // when more devices share it.
                    wide = moderate
                        || (observed >= expected * cfg.carpet_wide_ratio
                            && excess >= 2.0 * spread
                            && excess >= cfg.min_excess / 2.0
                            && novel
                            && group_sources >= cfg.min_sources);
                    sustained = observed >= expected * cfg.sustained_ratio
                        && excess >= cfg.z_threshold / 2.0 * spread
                        && excess >= cfg.min_excess / 2.0
                        && novel_excess >= cfg.sustained_novel_share
                        && group_sources >= cfg.min_sources;
                    sustained_alarm = !one_bin
                        && !cusum_alarm
                        && sustained
                        && self.sustained[g as usize] + 1 >= cfg.sustained_bins;
                }
                GroupEval {
                    group: g,
                    observed,
                    expected,
                    spread,
                    threshold,
                    ratio_used,
                    sources: group_sources,
                    novelty,
                    unlike: conn_new,
                    novel_excess,
                    surge,
                    cusum,
                    sample,
                    one_bin,
                    cusum_alarm,
                    sustained,
                    sustained_alarm,
                    moderate,
                    wide,
                    cold_hit,
                }
            })
            .collect();
        Assessment {
            bin,
            baseline,
            groups,
            sources: sources.round() as u64,
            prefix_spread,
            novelty: self.sources.novelty_of(&all_sources, hot),
            history_bins: self.history.len(),
            inbound: agg.inbound(),
            all_sources,
        }
    }

    /// Records the outcome of `bin`: flagged bins (any alert) and suspect bins (a slow rise
    /// from mostly new sources) stay out of baselines and their sources out of the novelty and
    /// per-source history (else an attack's second bin, or the same botnet a day later, would
    /// look like returning visitors); an unsuppressed alert extends the persistence streak; a
    /// flash crowd sets the level an attack on top of it is judged against, which stays frozen
    /// while such an attack goes on. The bin's sources come with `a`.
    pub fn commit(
        &mut self,
        a: &Assessment,
        outcome: Outcome,
        cfg: &FloodwatchConfig,
        per_day: i64,
    ) {
        let Outcome {
            flagged,
            unsuppressed,
            ..
        } = outcome;
        let mut rec = BinRecord::default();
        for g in &a.groups {
            rec.v[g.group as usize] = g.observed as f32;
        }
        rec.v[INBOUND] = a.inbound as f32;
        rec.v[SOURCES] = a.sources as f32;
        // The usual share of unlike-known-visitor connections, as the tests measure it.
        rec.new_share = a.novelty.unlike_share().map(|s| s as f32);
        rec.flagged = flagged;
        rec.suspect = a
            .groups
            .iter()
            .any(|g| g.cusum > 0.0 && g.novel_excess >= cfg.novel_share && g.elevated());
        if let Some(next) = self.history.next_bin()
            && a.bin > next
        {
            // Idle bins in between break a streak.
            self.streak = 0;
        }
        let rec_clean = rec.clean();
        if !self.history.push(a.bin, rec) {
            return;
        }
        for g in &a.groups {
            self.cusum[g.group as usize] = g.cusum;
            self.sustained[g.group as usize] = if g.sustained {
                self.sustained[g.group as usize].saturating_add(1)
            } else {
                0
            };
            let slot = &mut self.surge[g.group as usize];
            // A crowd sets the level whether it alerted (suppressed as a flash crowd) or stayed
            // below the alert thresholds; an attack never does.
            let crowd_bin = g.crowd(cfg) && (!outcome.unsuppressed || outcome.flash_crowd);
            if crowd_bin && !g.surge_attack() {
                let since = g.surge.map_or(a.bin, |s| s.level.since);
                *slot = Some(Surge {
                    level: g.observed,
                    unlike: g.unlike * g.observed,
                    since,
                    last: a.bin,
                });
            } else if outcome.surge_attack
                && let Some(s) = slot.as_mut()
            {
                s.last = a.bin;
            } else if slot.is_some_and(|s| a.bin - s.last > cfg.surge_hold_bins as i64) {
                *slot = None;
            }
        }
        self.streak = if unsuppressed {
            self.streak.saturating_add(1)
        } else {
            0
        };
        if rec_clean {
            self.sources.insert_sample(&a.all_sources, a.bin);
        }
        let hour = (per_day / 24).max(1);
        if self.last_expiry == i64::MIN || a.bin.saturating_sub(self.last_expiry) >= hour {
            self.last_expiry = a.bin;
            self.sources
                .expire(a.bin - cfg.novelty_days as i64 * per_day);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rate_cv_tells_uniform_from_heavy_tailed() {
        let mut uniform = SourceSketch::new(256);
        let mut skewed = SourceSketch::new(256);
        for i in 0..100u64 {
            uniform.insert_hash(floodwatch_core::hash::mix64(i + 1), 5);
            let w = if i < 5 { 400 } else { 1 };
            skewed.insert_hash(floodwatch_core::hash::mix64(i + 1), w);
        }
        assert_eq!(rate_cv(&uniform.sample()), Some(0.0));
        assert_eq!(
            rate_cv(&skewed.sample_unordered()),
            rate_cv(&skewed.sample())
        );
        assert!(rate_cv(&skewed.sample()).unwrap() > 3.0);
        let few = SourceSketch::new(256);
        assert_eq!(rate_cv(&few.sample()), None);
    }

    #[test]
    fn state_round_trips_through_json() {
        let cfg = FloodwatchConfig::default();
        let mut s = DeviceState::new(&cfg, 288);
        let mut agg = BinAgg::default();
        for b in 0..20 {
            let a = s.assess(b, &agg, &cfg, 288);
            let outcome = Outcome {
                flagged: b == 7,
                ..Outcome::default()
            };
            s.commit(&a, outcome, &cfg, 288);
            agg.rows += 1;
        }
        let j = serde_json::to_string(&s).unwrap();
        let back: DeviceState = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
    }
}
