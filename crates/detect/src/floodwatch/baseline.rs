//! Per-device history of bin metrics and the robust baselines built from it.
//!
//! The history is a dense ring of one small record per bin (zero-traffic bins included), kept
//! for `baseline_days`. A bin's baseline is, per metric:
//! - **seasonal**: the same time-of-day slot (plus `seasonal_halfwidth` bins either side) on
//!   every earlier day, or the same time-of-*week* slot once there are `weekly_after_days` of
//!   history;
//! - **short-term**: the last `short_term_bins` bins;
//!
//! each summarised by its median and scaled MAD (robust: one odd day does not move it), over
//! *clean* bins only (bins that raised an alert are flagged and left out, so an attack does not
//! teach the baseline that attacks are normal). When a seasonal baseline exists the expected
//! value is the larger of the two medians (today running hotter than usual is not an attack by
//! itself); otherwise the short-term baseline is used alone; with fewer than `warmup_bins` clean
//! bins the device is cold.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::config::FloodwatchConfig;

/// Metrics kept per bin: the four vector groups, all inbound, distinct inbound sources.
pub const METRICS: usize = 6;
/// Index of all inbound connections in [`BinRecord::v`].
pub const INBOUND: usize = 4;
/// Index of distinct inbound sources in [`BinRecord::v`].
pub const SOURCES: usize = 5;

/// One bin of history. `f32` keeps a 14-day, 5-minute history near 130 KB per device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct BinRecord {
    pub v: [f32; METRICS],
    /// Share of the bin's connections from sources new to the device (unknown: `None`).
    pub new_share: Option<f32>,
    /// The bin raised an alert (suppressed or not): left out of baselines.
    pub flagged: bool,
    /// The bin fed the slow-rise test with mostly new sources without alerting (yet): also left
    /// out, or a slow flood would lift the trailing baseline before it is caught.
    #[serde(default)]
    pub suspect: bool,
}

impl BinRecord {
    /// Usable for baselines.
    pub fn clean(&self) -> bool {
        !self.flagged && !self.suspect
    }
}

/// Dense per-bin history of one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Bin index of `records[0]`.
    first: i64,
    records: VecDeque<BinRecord>,
    capacity: usize,
}

/// How a baseline was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BaselineKind {
    /// Too little history: absolute evidence only.
    Cold,
    /// Trailing bins only (seasonal history too short).
    ShortTerm,
    /// Same time of day on earlier days, and the trailing bins.
    Daily,
    /// Same time of week on earlier weeks, and the trailing bins.
    Weekly,
}

/// Median and spread of one metric.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Robust {
    pub median: f64,
    /// 1.4826 x MAD: the standard deviation for normal data, unmoved by outliers.
    pub spread: f64,
}

/// The baseline of one bin.
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    pub kind: BaselineKind,
    pub metric: [Robust; METRICS],
    /// Typical share of connections from new sources (median), when known.
    pub new_share: Option<f64>,
    /// Clean bins behind the seasonal part.
    pub seasonal_points: usize,
    /// Clean bins behind the short-term part.
    pub short_points: usize,
}

impl Baseline {
    /// A short description for `Baseline.Method`.
    pub fn method(&self) -> String {
        match self.kind {
            BaselineKind::Cold => "cold start: no baseline, absolute thresholds".to_string(),
            BaselineKind::ShortTerm => format!(
                "median/MAD of the last {} clean bins (seasonal history too short)",
                self.short_points
            ),
            BaselineKind::Daily => format!(
                "max of seasonal median/MAD (same time of day, {} clean bins) and trailing median ({} bins)",
                self.seasonal_points, self.short_points
            ),
            BaselineKind::Weekly => format!(
                "max of seasonal median/MAD (same time of week, {} clean bins) and trailing median ({} bins)",
                self.seasonal_points, self.short_points
            ),
        }
    }

    pub fn points(&self) -> usize {
        self.seasonal_points + self.short_points
    }
}

/// Median and scaled MAD; `None` for no values. Sorts `xs`.
pub fn robust(xs: &mut [f64]) -> Option<Robust> {
    if xs.is_empty() {
        return None;
    }
    let median = median_sorted(xs);
    let mut dev: Vec<f64> = xs.iter().map(|x| (x - median).abs()).collect();
    let mad = median_sorted(&mut dev);
    Some(Robust {
        median,
        spread: 1.4826 * mad,
    })
}

fn median_sorted(xs: &mut [f64]) -> f64 {
    xs.sort_unstable_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

impl History {
    pub fn new(days: u32, per_day: i64) -> Self {
        History {
            first: 0,
            records: VecDeque::new(),
            capacity: (days.max(1) as usize) * per_day.max(1) as usize,
        }
    }

    /// The bin after the newest recorded one (`None` when empty).
    pub fn next_bin(&self) -> Option<i64> {
        (!self.records.is_empty()).then(|| self.first + self.records.len() as i64)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Oldest bin still held.
    pub fn first_bin(&self) -> Option<i64> {
        (!self.records.is_empty()).then_some(self.first)
    }

    pub fn get(&self, bin: i64) -> Option<&BinRecord> {
        let i = bin.checked_sub(self.first)?;
        if i < 0 {
            return None;
        }
        self.records.get(i as usize)
    }

    /// Appends the record of `bin`, filling skipped bins with zero-traffic records. Bins at or
    /// before the newest one are ignored (time only moves forward); returns whether it was kept.
    pub fn push(&mut self, bin: i64, rec: BinRecord) -> bool {
        match self.next_bin() {
            None => self.first = bin,
            Some(next) if bin < next => return false,
            Some(next) => {
                let gap = (bin - next) as usize;
                if gap >= self.capacity {
                    self.records.clear();
                    self.first = bin;
                } else {
                    for _ in 0..gap {
                        self.push_raw(BinRecord::default());
                    }
                }
            }
        }
        self.push_raw(rec);
        true
    }

    fn push_raw(&mut self, rec: BinRecord) {
        self.records.push_back(rec);
        while self.records.len() > self.capacity {
            self.records.pop_front();
            self.first += 1;
        }
    }

    /// Baseline for `bin` (which is not yet in the history) from the clean bins before it.
    pub fn baseline(&self, bin: i64, per_day: i64, cfg: &FloodwatchConfig) -> Baseline {
        let span_days = self
            .first_bin()
            .map(|f| (bin - f) / per_day.max(1))
            .unwrap_or(0);
        let weekly = span_days >= cfg.weekly_after_days as i64 && span_days >= 7;
        let (step, max_back, half) = if weekly {
            (7, span_days / 7, 2i64)
        } else {
            (1, span_days.max(1), cfg.seasonal_halfwidth as i64)
        };
        let mut seasonal: Vec<&BinRecord> = Vec::new();
        for d in 1..=max_back.min(cfg.baseline_days as i64) {
            let centre = bin - d * step * per_day;
            for o in -half..=half {
                if let Some(r) = self.get(centre + o).filter(|r| r.clean()) {
                    seasonal.push(r);
                }
            }
        }
        let mut short: Vec<&BinRecord> = Vec::new();
        // From the newest bin held: a bin judged ahead of the history (an open bin, while the
        // ones before it wait for late events) has the same trailing baseline as if they were
        // in. Bins scored in order always find their predecessor.
        let last = self.next_bin().map_or(bin - 1, |n| n - 1);
        let mut b = (bin - 1).min(last);
        let oldest = b + 1 - 4 * cfg.short_term_bins as i64;
        while short.len() < cfg.short_term_bins as usize && b >= oldest {
            match self.get(b) {
                Some(r) if r.clean() => short.push(r),
                Some(_) => {}
                None => break,
            }
            b -= 1;
        }
        let summary = |recs: &[&BinRecord]| -> [Robust; METRICS] {
            std::array::from_fn(|m| {
                let mut xs: Vec<f64> = recs.iter().map(|r| r.v[m] as f64).collect();
                robust(&mut xs).unwrap_or_default()
            })
        };
        let new_share = |recs: &[&BinRecord]| {
            let mut xs: Vec<f64> = recs
                .iter()
                .filter_map(|r| r.new_share.map(f64::from))
                .collect();
            robust(&mut xs).map(|r| r.median)
        };
        let clean = self.records.iter().filter(|r| r.clean()).count();
        if clean < cfg.warmup_bins as usize || (short.is_empty() && seasonal.is_empty()) {
            return Baseline {
                kind: BaselineKind::Cold,
                metric: [Robust::default(); METRICS],
                new_share: None,
                seasonal_points: 0,
                short_points: 0,
            };
        }
        let short_sum = summary(&short);
        if seasonal.len() < cfg.min_seasonal_points as usize {
            return Baseline {
                kind: BaselineKind::ShortTerm,
                metric: short_sum,
                new_share: new_share(&short),
                seasonal_points: 0,
                short_points: short.len(),
            };
        }
        let seas = summary(&seasonal);
        let metric = std::array::from_fn(|m| {
            let s = seas[m];
            let t = short_sum[m];
            if !short.is_empty() && t.median > s.median {
                Robust {
                    median: t.median,
                    spread: s.spread.max(t.spread),
                }
            } else {
                s
            }
        });
        Baseline {
            kind: if weekly {
                BaselineKind::Weekly
            } else {
                BaselineKind::Daily
            },
            metric,
            new_share: new_share(&seasonal).or_else(|| new_share(&short)),
            seasonal_points: seasonal.len(),
            short_points: short.len(),
        }
    }

    /// Marks a recorded bin as flagged (it raised an alert), so baselines skip it.
    pub fn flag(&mut self, bin: i64) {
        if let Some(i) = bin.checked_sub(self.first).filter(|i| *i >= 0)
            && let Some(r) = self.records.get_mut(i as usize)
        {
            r.flagged = true;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PER_DAY: i64 = 288;

    fn rec(web: f32) -> BinRecord {
        let mut r = BinRecord::default();
        r.v[0] = web;
        r.v[INBOUND] = web;
        r
    }

    #[test]
    fn robust_median_and_mad() {
        let mut xs = vec![10.0, 12.0, 11.0, 9.0, 1000.0];
        let r = robust(&mut xs).unwrap();
        assert_eq!(r.median, 11.0);
        // Deviations 1,1,0,2,989 -> MAD 1.
        assert!((r.spread - 1.4826).abs() < 1e-12);
        assert_eq!(robust(&mut []), None);
        let r = robust(&mut [4.0, 2.0]).unwrap();
        assert_eq!(r.median, 3.0);
    }

    #[test]
    fn cold_then_short_term_then_daily() {
        let cfg = FloodwatchConfig::default();
        let mut h = History::new(14, PER_DAY);
        assert_eq!(h.baseline(0, PER_DAY, &cfg).kind, BaselineKind::Cold);
        for b in 0..5 {
            h.push(b, rec(100.0));
        }
        assert_eq!(h.baseline(5, PER_DAY, &cfg).kind, BaselineKind::Cold);
        h.push(5, rec(100.0));
        let b = h.baseline(6, PER_DAY, &cfg);
        assert_eq!(b.kind, BaselineKind::ShortTerm);
        assert_eq!(b.metric[0].median, 100.0);
        assert_eq!(b.short_points, 6);
        // A full day of a diurnal pattern: 50 at night (first half), 500 by day.
        let mut h = History::new(14, PER_DAY);
        for b in 0..PER_DAY + 144 {
            let slot = b % PER_DAY;
            h.push(b, rec(if slot < 144 { 50.0 } else { 500.0 }));
        }
        // Tomorrow 12:00 (slot 144): the seasonal part says 500 although the last hour was 50.
        let b = h.baseline(PER_DAY + 144, PER_DAY, &cfg);
        assert_eq!(b.kind, BaselineKind::Daily);
        assert_eq!(b.seasonal_points, 3);
        assert_eq!(b.metric[0].median, 500.0);
    }

    #[test]
    fn flagged_bins_do_not_inflate_the_baseline() {
        let cfg = FloodwatchConfig::default();
        let mut h = History::new(14, PER_DAY);
        for b in 0..24 {
            let attack = b >= 12;
            h.push(b, rec(if attack { 10_000.0 } else { 100.0 }));
            if attack {
                h.flag(b);
            }
        }
        let b = h.baseline(24, PER_DAY, &cfg);
        assert_eq!(b.kind, BaselineKind::ShortTerm);
        assert_eq!(b.metric[0].median, 100.0, "the attack bins are skipped");
        assert_eq!(b.short_points, 12);
    }

    #[test]
    fn gaps_are_zero_traffic_and_capacity_is_bounded() {
        let mut h = History::new(1, PER_DAY);
        h.push(0, rec(5.0));
        h.push(3, rec(7.0));
        assert_eq!(h.get(1), Some(&BinRecord::default()));
        assert_eq!(h.get(3).map(|r| r.v[0]), Some(7.0));
        assert!(!h.push(2, rec(1.0)), "time does not go back");
        for b in 4..1000 {
            h.push(b, rec(1.0));
        }
        assert_eq!(h.len(), PER_DAY as usize);
        assert_eq!(h.first_bin(), Some(1000 - PER_DAY));
    }

    #[test]
    fn weekly_after_two_weeks() {
        let cfg = FloodwatchConfig::default();
        let mut h = History::new(21, PER_DAY);
        // Weekdays 1000, and every 7th day (the "Sunday") 100.
        let days = 15;
        for b in 0..days * PER_DAY {
            let day = b / PER_DAY;
            h.push(b, rec(if day % 7 == 0 { 100.0 } else { 1000.0 }));
        }
        // Bin on day 15 -> not a Sunday; day 14 was; compare with days 8 and 1.
        let b = h.baseline(days * PER_DAY + 100, PER_DAY, &cfg);
        assert_eq!(b.kind, BaselineKind::Weekly);
        assert_eq!(b.seasonal_points, 10);
        assert_eq!(b.metric[0].median, 1000.0);
    }
}
