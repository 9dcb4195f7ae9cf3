//! "Never seen on this device before": a bounded, mergeable history of source hashes.
//!
//! A bin only keeps a *sample* of its sources (the bottom-k hashes of a [`SourceSketch`]), so
//! the history must be a sample of the same kind or the two disagree: a returning source that
//! fell outside an earlier bin's sample would look new. The history therefore keeps every source
//! hash at or below a threshold `tau`, and `tau` only ever goes down:
//! - inserting a saturated bin sample lowers `tau` to that sample's largest hash (above it the
//!   bin's sources are unknown);
//! - exceeding `max_sources` lowers `tau` so that three quarters of the entries remain (the
//!   smallest hashes, so the sample stays uniform).
//!
//! Below `tau` the history is complete, so a bin's sample entry with hash `<= tau` is new exactly
//! when it is absent. Entries expire `novelty_days` after they were last seen. Memory is
//! `O(max_sources)` per device.
//!
//! Each entry also keeps the most connections the source made in one clean bin (its *peak*), so
//! a returning address can be told from a returning address behaving unlike itself: a customer
//! coming back at its usual rate is a flash crowd; a compromised home router that visited the
//! shop last week and now makes fifty times its usual connections is part of a flood (residential
//! proxy networks overlap every national service's customers). Last sighting and peak both merge
//! by maximum, so two histories built over any split of the bins merge to the one-shot history.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use floodwatch_core::SourceSketch;
use floodwatch_core::sketch::Sample;

/// What a bin's sample says about novelty.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Novelty {
    /// Sample entries that could be checked (hash within the history's threshold).
    pub checked: u64,
    /// Of those, never seen before.
    pub new: u64,
    /// Connections of the checked entries.
    pub checked_conns: u64,
    /// Connections of the new entries.
    pub new_conns: u64,
    /// Returning entries that made at least [`HotRule`]'s multiple of their own peak: seen
    /// before, but not behaving like themselves.
    pub hot: u64,
    /// Connections of the hot entries.
    pub hot_conns: u64,
    /// Largest multiple of its own peak among the hot entries (0 when none).
    pub hot_max_ratio: f64,
}

/// When a returning source counts as *hot*: in this bin it made at least `ratio` times its
/// largest clean-bin count and at least `min_conns` connections (so a visitor going from 1 to
/// 10 connections is not a flood).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HotRule {
    pub ratio: f64,
    pub min_conns: u64,
    /// The sample's counts are this multiple of what was seen (a projected stretch of a bin):
    /// they are divided back before the test.
    pub scale: f64,
}

impl HotRule {
    /// No returning source is ever hot.
    pub const NEVER: HotRule = HotRule {
        ratio: f64::INFINITY,
        min_conns: u64::MAX,
        scale: 1.0,
    };

    fn hot(&self, conns: u64, peak: u32) -> Option<f64> {
        let seen = conns as f64 / self.scale.max(1.0);
        // An entry from state written before peaks were kept has peak 0: unknown, never hot.
        if peak == 0 || seen < self.min_conns as f64 {
            return None;
        }
        let r = seen / peak as f64;
        (r >= self.ratio).then_some(r)
    }
}

impl Novelty {
    /// Share of sources never seen before; `None` when nothing could be checked.
    pub fn source_share(&self) -> Option<f64> {
        (self.checked > 0).then(|| self.new as f64 / self.checked as f64)
    }

    /// Share of connections from sources never seen before; `None` when nothing was checked.
    pub fn conn_share(&self) -> Option<f64> {
        (self.checked_conns > 0).then(|| self.new_conns as f64 / self.checked_conns as f64)
    }

    /// Share of connections from sources that do not behave like known visitors: new ones and
    /// hot returning ones; `None` when nothing was checked.
    pub fn unlike_share(&self) -> Option<f64> {
        (self.checked_conns > 0)
            .then(|| (self.new_conns + self.hot_conns) as f64 / self.checked_conns as f64)
    }

    /// Share of connections from hot returning sources.
    pub fn hot_share(&self) -> Option<f64> {
        (self.checked_conns > 0).then(|| self.hot_conns as f64 / self.checked_conns as f64)
    }
}

/// What the history knows of one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    /// Last bin it was seen in.
    last: i64,
    /// Most connections it made in one clean bin.
    peak: u32,
}

impl Seen {
    fn absorb(&mut self, other: Seen) {
        self.last = self.last.max(other.last);
        self.peak = self.peak.max(other.peak);
    }
}

/// Per-device history: source hash -> last bin it was seen in and its peak. The keys are already
/// uniform 64-bit hashes, so the map needs no keyed (SipHash) hashing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "HistoryRepr", from = "HistoryRepr")]
pub struct SourceHistory {
    tau: u64,
    max_sources: usize,
    seen: FxHashMap<u64, Seen>,
}

#[derive(Serialize, Deserialize)]
struct HistoryRepr {
    tau: u64,
    max_sources: usize,
    /// (hash, last bin), ascending by hash, so the serialized form is deterministic.
    seen: Vec<(u64, i64)>,
    /// Each entry's peak, in the order of `seen`. Absent in state written before peaks were
    /// kept: those entries load with an unknown (0) peak.
    #[serde(default)]
    peaks: Vec<u32>,
}

impl From<SourceHistory> for HistoryRepr {
    fn from(h: SourceHistory) -> Self {
        let mut all: Vec<(u64, Seen)> = h.seen.into_iter().collect();
        all.sort_unstable_by_key(|e| e.0);
        HistoryRepr {
            tau: h.tau,
            max_sources: h.max_sources,
            seen: all.iter().map(|e| (e.0, e.1.last)).collect(),
            peaks: all.iter().map(|e| e.1.peak).collect(),
        }
    }
}

impl From<HistoryRepr> for SourceHistory {
    fn from(r: HistoryRepr) -> Self {
        let mut h = SourceHistory::new(r.max_sources);
        h.tau = r.tau;
        h.seen = r
            .seen
            .into_iter()
            .enumerate()
            .filter(|(_, e)| e.0 <= r.tau)
            .map(|(i, (hash, last))| {
                let peak = r.peaks.get(i).copied().unwrap_or(0);
                (hash, Seen { last, peak })
            })
            .collect();
        h.cap();
        h
    }
}

impl SourceHistory {
    pub fn new(max_sources: usize) -> Self {
        SourceHistory {
            tau: u64::MAX,
            max_sources: max_sources.max(16),
            seen: FxHashMap::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The hash threshold: sources with larger hashes are not tracked.
    pub fn tau(&self) -> u64 {
        self.tau
    }

    /// Novelty of a bin's (or one class's) sample against the history.
    pub fn novelty(&self, sketch: &SourceSketch) -> Novelty {
        self.novelty_of(&sketch.sample(), HotRule::NEVER)
    }

    /// [`Self::novelty`] of a sample already taken, with returning sources judged hot by `hot`.
    pub fn novelty_of(&self, sample: &Sample, hot: HotRule) -> Novelty {
        let mut n = Novelty::default();
        for &(h, c) in sample.entries() {
            if h > self.tau {
                // Above the threshold the history is incomplete (the sample may be in any order).
                continue;
            }
            let c = c as u64;
            n.checked += 1;
            n.checked_conns += c;
            match self.seen.get(&h) {
                None => {
                    n.new += 1;
                    n.new_conns += c;
                }
                Some(seen) => {
                    if let Some(r) = hot.hot(c, seen.peak) {
                        n.hot += 1;
                        n.hot_conns += c;
                        n.hot_max_ratio = n.hot_max_ratio.max(r);
                    }
                }
            }
        }
        n
    }

    /// Remembers a bin's sources as seen in `bin`.
    pub fn insert(&mut self, sketch: &SourceSketch, bin: i64) {
        self.insert_sample(&sketch.sample(), bin);
    }

    /// [`Self::insert`] of a sample already taken.
    pub fn insert_sample(&mut self, sample: &Sample, bin: i64) {
        if sample.is_saturated()
            && let Some(largest) = sample.largest()
        {
            self.lower_tau(largest);
        }
        for &(h, c) in sample.entries() {
            if h > self.tau {
                continue;
            }
            let now = Seen { last: bin, peak: c };
            self.seen.entry(h).or_insert(now).absorb(now);
        }
        self.cap();
    }

    /// Forgets sources last seen before `oldest_bin`.
    pub fn expire(&mut self, oldest_bin: i64) {
        self.seen.retain(|_, s| s.last >= oldest_bin);
    }

    /// The peak (most connections in one clean bin) of a source hash, when remembered.
    pub fn peak(&self, hash: u64) -> Option<u32> {
        self.seen.get(&hash).map(|s| s.peak)
    }

    /// Folds another device history in (e.g. one built by another instance over another span):
    /// the union below the smaller threshold, keeping the latest sighting.
    pub fn merge(&mut self, other: &SourceHistory) {
        self.lower_tau(other.tau);
        self.max_sources = self.max_sources.min(other.max_sources);
        for (&h, &b) in &other.seen {
            if h <= self.tau {
                self.seen.entry(h).or_insert(b).absorb(b);
            }
        }
        self.cap();
    }

    fn lower_tau(&mut self, tau: u64) {
        if tau < self.tau {
            self.tau = tau;
            self.seen.retain(|&h, _| h <= tau);
        }
    }

    fn cap(&mut self) {
        if self.seen.len() <= self.max_sources {
            return;
        }
        let keep = self.max_sources * 3 / 4;
        let mut keys: Vec<u64> = self.seen.keys().copied().collect();
        let (_, kth, _) = keys.select_nth_unstable(keep.saturating_sub(1));
        let kth = *kth;
        self.lower_tau(kth);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use floodwatch_core::hash::mix64;

    fn sketch(k: u32, ids: impl IntoIterator<Item = u64>) -> SourceSketch {
        let mut s = SourceSketch::new(k);
        for i in ids {
            s.insert_hash(mix64(i + 1), 1);
        }
        s
    }

    /// Sources `ids`, each making `conns` connections.
    fn heavy(k: u32, ids: impl IntoIterator<Item = u64>, conns: u32) -> SourceSketch {
        let mut s = SourceSketch::new(k);
        for i in ids {
            s.insert_hash(mix64(i + 1), conns);
        }
        s
    }

    const HOT: HotRule = HotRule {
        ratio: 10.0,
        min_conns: 30,
        scale: 1.0,
    };

    #[test]
    fn returning_sources_far_above_their_own_peak_are_hot() {
        let mut h = SourceHistory::new(1000);
        // Customers 0..100 made 3 connections a bin; 100..110 are heavy regulars at 200.
        h.insert(&heavy(1024, 0..100, 3), 0);
        h.insert(&heavy(1024, 100..110, 200), 1);
        h.insert(&heavy(1024, 0..50, 2), 2);
        assert_eq!(
            h.peak(mix64(1)),
            Some(3),
            "the peak is the largest bin, not the last"
        );
        // A bin: 40 customers at their usual rate, 20 at 60 connections (20x their peak), the
        // heavy regulars at their usual 200, 10 new sources.
        let mut bin = heavy(1024, 0..40, 3);
        bin.merge(&heavy(1024, 40..60, 60));
        bin.merge(&heavy(1024, 100..110, 200));
        bin.merge(&heavy(1024, 500..510, 5));
        let n = h.novelty_of(&bin.sample(), HOT);
        assert_eq!((n.checked, n.new, n.hot), (80, 10, 20));
        assert_eq!(n.hot_conns, 20 * 60);
        assert_eq!(n.new_conns, 50);
        assert!((n.hot_max_ratio - 20.0).abs() < 1e-9);
        let total = (40 * 3 + 20 * 60 + 10 * 200 + 50) as f64;
        assert!((n.unlike_share().unwrap() - (1200.0 + 50.0) / total).abs() < 1e-9);
        // Below the connection floor nothing is hot, whatever the multiple: 1 -> 25.
        let mut h = SourceHistory::new(1000);
        h.insert(&heavy(1024, 0..10, 1), 0);
        let n = h.novelty_of(&heavy(1024, 0..10, 25).sample(), HOT);
        assert_eq!(n.hot, 0);
        // Counts projected 30x from a stretch are judged as seen: 25 is below the floor.
        let n = h.novelty_of(
            &heavy(1024, 0..10, 750).sample(),
            HotRule { scale: 30.0, ..HOT },
        );
        assert_eq!(n.hot, 0);
        let n = h.novelty_of(
            &heavy(1024, 0..10, 1500).sample(),
            HotRule { scale: 30.0, ..HOT },
        );
        assert_eq!(n.hot, 10);
        // Without a rule nothing is hot.
        let n = h.novelty_of(&heavy(1024, 0..10, 2500).sample(), HotRule::NEVER);
        assert_eq!((n.hot, n.new), (0, 0));
    }

    #[test]
    fn state_without_peaks_loads_with_unknown_peaks_that_are_never_hot() {
        let old = r#"{"tau":18446744073709551615,"max_sources":1000,"seen":[[5,3],[9,4]]}"#;
        let h: SourceHistory = serde_json::from_str(old).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h.peak(5), Some(0));
        let mut s = SourceSketch::new(64);
        s.insert_hash(5, 5_000);
        let n = h.novelty_of(&s.sample(), HOT);
        assert_eq!((n.checked, n.new, n.hot), (1, 0, 0));
        // Written again, the peaks are kept.
        let mut h = h;
        h.insert_sample(&s.sample(), 5);
        let back: SourceHistory =
            serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.peak(5), Some(5_000));
    }

    #[test]
    fn returning_and_new_sources() {
        let mut h = SourceHistory::new(1000);
        h.insert(&sketch(1024, 0..100), 0);
        let n = h.novelty(&sketch(1024, 50..150));
        assert_eq!((n.checked, n.new), (100, 50));
        assert_eq!(n.source_share(), Some(0.5));
        let mut weighted = sketch(1024, 0..10);
        for _ in 0..30 {
            weighted.insert_hash(mix64(500 + 1), 1); // one new source, 31 connections
        }
        let n = h.novelty(&weighted);
        assert_eq!((n.new, n.new_conns, n.checked_conns), (1, 30, 40));
    }

    #[test]
    fn saturated_samples_stay_consistent() {
        // Bins larger than the sample: a returning source must never look new because it fell
        // outside an earlier sample.
        let mut h = SourceHistory::new(100_000);
        h.insert(&sketch(256, 0..5_000), 0);
        h.insert(&sketch(256, 5_000..6_000), 1);
        let n = h.novelty(&sketch(256, 0..6_000));
        assert!(n.checked > 0);
        assert_eq!(n.new, 0, "every source was seen before");
        let n = h.novelty(&sketch(256, 10_000..20_000));
        assert_eq!(n.new, n.checked, "every source is new");
    }

    #[test]
    fn bounded_memory_keeps_an_unbiased_sample() {
        let mut h = SourceHistory::new(1_000);
        for bin in 0..50 {
            h.insert(&sketch(1024, bin * 400..bin * 400 + 400), bin as i64);
        }
        assert!(h.len() <= 1_000);
        // Half old, half new sources: the checked share must be near 0.5.
        let n = h.novelty(&sketch(1024, (0..500).chain(100_000..100_500)));
        let share = n.source_share().unwrap();
        assert!(n.checked >= 20, "checked {}", n.checked);
        assert!((share - 0.5).abs() < 0.2, "share {share}");
    }

    #[test]
    fn sample_order_does_not_matter() {
        // A small history cap and saturated samples put tau below some sample entries.
        let mut sorted = SourceHistory::new(300);
        let mut unordered = SourceHistory::new(300);
        for bin in 0..8u64 {
            let s = sketch(64, bin * 150..bin * 150 + 400);
            assert_eq!(
                sorted.novelty_of(&s.sample(), HotRule::NEVER),
                unordered.novelty_of(&s.sample_unordered(), HotRule::NEVER)
            );
            sorted.insert_sample(&s.sample(), bin as i64);
            unordered.insert_sample(&s.sample_unordered(), bin as i64);
            assert_eq!(sorted, unordered);
        }
        assert!(sorted.tau() < u64::MAX);
        let n = sorted.novelty_of(&sketch(64, 0..2000).sample_unordered(), HotRule::NEVER);
        assert!(n.checked > 0 && n.new > 0 && n.new < n.checked, "{n:?}");
    }

    #[test]
    fn expiry_forgets_old_sources() {
        let mut h = SourceHistory::new(1000);
        h.insert(&sketch(1024, 0..10), 0);
        h.insert(&sketch(1024, 5..15), 100);
        h.expire(50);
        let n = h.novelty(&sketch(1024, 0..15));
        assert_eq!(n.new, 5);
    }

    proptest::proptest! {
        /// Any split of the bins over two histories, merged, knows the same sources (below the
        /// common threshold) as one history that saw every bin.
        #[test]
        fn merge_of_any_split_equals_one_shot(
            bins in proptest::collection::vec((0u64..3000, 1u64..400, proptest::bool::ANY, 1u32..50), 1..12),
            k in proptest::prop_oneof![proptest::strategy::Just(16u32), proptest::strategy::Just(256)],
        ) {
            let mut whole = SourceHistory::new(100_000);
            let mut a = SourceHistory::new(100_000);
            let mut b = SourceHistory::new(100_000);
            for (i, &(from, len, side, conns)) in bins.iter().enumerate() {
                let s = heavy(k, from..from + len, conns);
                whole.insert(&s, i as i64);
                if side { &mut a } else { &mut b }.insert(&s, i as i64);
            }
            a.merge(&b);
            proptest::prop_assert_eq!(a.tau(), whole.tau());
            let mut x: Vec<(u64, i64, u32)> = a.seen.iter().map(|(&k, v)| (k, v.last, v.peak)).collect();
            let mut y: Vec<(u64, i64, u32)> = whole.seen.iter().map(|(&k, v)| (k, v.last, v.peak)).collect();
            x.sort_unstable();
            y.sort_unstable();
            proptest::prop_assert_eq!(x, y);
        }
    }

    #[test]
    fn merge_equals_one_shot_and_survives_serde() {
        let parts: Vec<(SourceSketch, i64)> = (0..6)
            .map(|i| (sketch(64, i * 70..i * 70 + 200), i as i64))
            .collect();
        let mut whole = SourceHistory::new(300);
        for (s, b) in &parts {
            whole.insert(s, *b);
        }
        let mut a = SourceHistory::new(300);
        let mut b = SourceHistory::new(300);
        for (i, (s, bin)) in parts.iter().enumerate() {
            if i % 2 == 0 { &mut a } else { &mut b }.insert(s, *bin);
        }
        let b: SourceHistory = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        a.merge(&b);
        // Caps may trigger at different moments, so compare on the common threshold.
        let tau = a.tau().min(whole.tau());
        let below = |h: &SourceHistory| {
            let mut v: Vec<(u64, i64, u32)> = h
                .seen
                .iter()
                .filter(|e| *e.0 <= tau)
                .map(|(&k, v)| (k, v.last, v.peak))
                .collect();
            v.sort_unstable();
            v
        };
        assert!(!below(&whole).is_empty());
        assert_eq!(below(&a), below(&whole));
    }
}
