//! Mergeable sketches of the sources seen in a bin.
//!
//! [`SourceSketch`] is a bottom-k ("k minimum values") sample of source hashes with an exact
//! count per retained source. It answers three questions with one structure:
//! - how many distinct sources: exact while fewer than `k` (KQL's `dcount` is exact up to 1,000,
//!   so `k` >= 1,001 keeps the seed rule's 300/500 thresholds exact), an unbiased estimate above
//!   with relative standard error about `1/sqrt(k-2)`;
//! - which sources were there: the sample is consistent (a source is kept or not by its hash
//!   alone), so "how many of this bin's sources were never seen before" can be asked of the
//!   sample against a history of hashes;
//! - how alike the per-source rates are: counts of retained sources are exact.
//!
//! [`TopSources`] is a Space-Saving summary of the heaviest sources, for reporting top talkers
//! and measuring whether one source dominates.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::model::Ip;

/// Bottom-k sample of 64-bit source hashes, each with an exact (saturating) count.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(into = "SketchRepr", from = "SketchRepr")]
pub struct SourceSketch {
    k: u32,
    /// Hashes above this are never kept. `u64::MAX` until the sketch first fills.
    limit: u64,
    full: bool,
    /// Up to [`Self::max_held`] entries between compactions; the canonical sample is the `k`
    /// smallest.
    entries: FxHashMap<u64, u32>,
}

#[derive(Serialize, Deserialize)]
struct SketchRepr {
    k: u32,
    /// Canonical entries: the k smallest hashes with their counts, ascending.
    entries: Vec<(u64, u32)>,
    full: bool,
}

impl From<SourceSketch> for SketchRepr {
    fn from(s: SourceSketch) -> Self {
        SketchRepr {
            k: s.k,
            full: s.is_saturated(),
            entries: s.canonical(),
        }
    }
}

impl From<SketchRepr> for SourceSketch {
    fn from(r: SketchRepr) -> Self {
        let mut s = SourceSketch::new(r.k.max(1));
        for (h, c) in r.entries {
            s.insert_hash(h, c);
        }
        if r.full && !s.full {
            // Saturated sketches keep exactly k entries; re-derive their limit.
            s.full = true;
            s.limit = s.entries.keys().copied().max().unwrap_or(u64::MAX);
        }
        s
    }
}

impl PartialEq for SourceSketch {
    /// Two sketches are equal when they describe the same sample (their canonical forms agree),
    /// however many spare entries each holds between compactions.
    fn eq(&self, other: &Self) -> bool {
        self.k == other.k
            && self.is_saturated() == other.is_saturated()
            && self.canonical() == other.canonical()
    }
}

impl SourceSketch {
    /// The sample size used for distinct sources per bin and per vector: exact up to 16,384
    /// distinct sources, relative standard error 0.78 % above (KQL's `dcount` at its default
    /// accuracy: exact up to 1,000, about 0.8 % above). Memory follows the sources a bin has,
    /// not `k`: only a bin with more than 16,384 sources holds a full sample.
    pub const DEFAULT_K: u32 = 16_384;

    pub fn new(k: u32) -> Self {
        assert!(k >= 2, "a bottom-k sketch needs k >= 2");
        SourceSketch {
            k,
            limit: u64::MAX,
            full: false,
            entries: FxHashMap::default(),
        }
    }

    /// An empty sketch with room for `n` sources (at most those held between compactions),
    /// so a bin expected to be as busy as its predecessor does not regrow its map step by step.
    pub fn with_capacity(k: u32, n: usize) -> Self {
        let mut s = SourceSketch::new(k);
        s.entries.reserve(n.min(s.max_held()));
        s
    }

    /// Entries held before compacting back to the k smallest: 1.5k keeps the map in half the
    /// buckets that 2k would need (a map fills at most 7/8 of a power of two), so a busy bin's
    /// sketches stay small in cache; the sample itself does not depend on it.
    #[inline]
    fn max_held(&self) -> usize {
        let k = self.k as usize;
        k + k / 2
    }

    /// Entries held now (the sample plus spares awaiting compaction): a size hint.
    pub fn held(&self) -> usize {
        self.entries.len()
    }

    pub fn k(&self) -> u32 {
        self.k
    }

    /// Adds `weight` occurrences of the source with hash `h`.
    #[inline]
    pub fn insert_hash(&mut self, h: u64, weight: u32) {
        if self.full && h > self.limit {
            return;
        }
        let c = self.entries.entry(h).or_insert(0);
        *c = c.saturating_add(weight);
        if self.entries.len() >= self.max_held() {
            self.compact();
        }
    }

    #[inline]
    pub fn insert(&mut self, ip: Ip, weight: u32) {
        self.insert_hash(crate::hash::hash_ip(ip), weight);
    }

    /// Keeps only the k smallest hashes and lowers the limit to the largest of them.
    fn compact(&mut self) {
        let k = self.k as usize;
        if self.entries.len() <= k {
            return;
        }
        let mut keys: Vec<u64> = self.entries.keys().copied().collect();
        let (_, kth, _) = keys.select_nth_unstable(k - 1);
        let kth = *kth;
        self.entries.retain(|&h, _| h <= kth);
        self.limit = kth;
        self.full = true;
    }

    /// True once more than `k` distinct sources were seen: counts above are estimates.
    pub fn is_saturated(&self) -> bool {
        self.full || self.entries.len() > self.k as usize
    }

    /// The k smallest hashes with their counts, ascending by hash.
    pub fn canonical(&self) -> Vec<(u64, u32)> {
        self.take(true).entries
    }

    /// [`Self::canonical`] in no particular order (no sort).
    pub fn sampled(&self) -> Vec<(u64, u32)> {
        self.take(false).entries
    }

    /// The k smallest entries; sorted only if asked (selecting them is linear, sorting is not).
    fn take(&self, sorted: bool) -> Sample {
        let mut v: Vec<(u64, u32)> = self.entries.iter().map(|(&h, &c)| (h, c)).collect();
        let k = self.k as usize;
        if v.len() > k {
            // Spare entries wait for compaction: only the k kept need sorting.
            v.select_nth_unstable_by_key(k - 1, |e| e.0);
            v.truncate(k);
        }
        if sorted {
            v.sort_unstable_by_key(|e| e.0);
        }
        Sample {
            k: self.k,
            saturated: self.is_saturated(),
            largest: v.iter().map(|e| e.0).max(),
            entries: v,
        }
    }

    /// The canonical sample with what is needed to answer questions about it, for callers that
    /// ask several (each question of the sketch itself goes over its entries again).
    pub fn sample(&self) -> Sample {
        self.take(true)
    }

    /// [`Self::sample`] in no particular order, for questions that do not depend on it (counts,
    /// membership, the largest hash): cheaper by the sort.
    pub fn sample_unordered(&self) -> Sample {
        self.take(false)
    }

    /// Distinct sources: exact when not saturated, else the KMV estimate `(k-1) / (h_k / 2^64)`.
    pub fn distinct(&self) -> f64 {
        if !self.is_saturated() {
            return self.entries.len() as f64;
        }
        let mut keys: Vec<u64> = self.entries.keys().copied().collect();
        let n = keys.len().min(self.k as usize);
        let kth = if n == 0 {
            u64::MAX
        } else {
            *keys.select_nth_unstable(n - 1).1
        };
        kmv_estimate(self.k, kth)
    }

    /// [`Self::distinct`] rounded to a whole number, as `dcount` reports it.
    pub fn distinct_u64(&self) -> u64 {
        self.distinct().round() as u64
    }

    /// Whether `h` is within the sampled range (so its absence from the sample means absence).
    pub fn covers(&self, h: u64) -> bool {
        !self.is_saturated() || h <= self.canonical_limit()
    }

    fn canonical_limit(&self) -> u64 {
        if !self.is_saturated() {
            return u64::MAX;
        }
        let mut keys: Vec<u64> = self.entries.keys().copied().collect();
        let k = self.k as usize;
        let (_, kth, _) = keys.select_nth_unstable(k - 1);
        *kth
    }

    /// The exact connection counts of the sources with these hashes, where the sample knows
    /// them: a hash within the sampled range was never rejected nor evicted (the range only
    /// shrinks), so its count is complete; `Some(0)` when it is within range and absent.
    /// `None` above the range, where the sketch cannot tell.
    pub fn exact_counts(&self, hashes: impl IntoIterator<Item = u64>) -> Vec<Option<u64>> {
        let limit = self.canonical_limit();
        hashes
            .into_iter()
            .map(|h| (h <= limit).then(|| self.entries.get(&h).map_or(0, |&c| c as u64)))
            .collect()
    }

    /// Folds `other` into `self`. Both must have the same `k`.
    pub fn merge(&mut self, other: &SourceSketch) {
        assert_eq!(self.k, other.k, "merging sketches of different sizes");
        let limit = self.limit.min(other.limit);
        self.full |= other.full;
        self.limit = limit;
        if self.full {
            self.entries.retain(|&h, _| h <= limit);
        }
        for (&h, &c) in &other.entries {
            self.insert_hash(h, c);
        }
        self.compact_if_over();
    }

    /// Takes `weight` occurrences of the source with hash `h` back out: a copy of an event that
    /// a merge counted twice (see [`crate::dedup`]). The other copy is still counted, so the
    /// source stays, with the count it would have had; a hash outside the sample is not held
    /// and needs nothing.
    pub fn withdraw(&mut self, h: u64, weight: u32) {
        if let Some(c) = self.entries.get_mut(&h) {
            *c = c.saturating_sub(weight);
            if *c == 0 {
                self.entries.remove(&h);
            }
        }
    }

    fn compact_if_over(&mut self) {
        if self.entries.len() > self.k as usize {
            self.compact();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Multiplies every count by `factor` (rounded, at least 1, saturating): the same sources
    /// at a proportionally higher rate. Used to project a part of a bin onto the whole bin.
    pub fn scale(&mut self, factor: f64) {
        for c in self.entries.values_mut() {
            *c = scale_count(*c as u64, factor).min(u32::MAX as u64) as u32;
        }
    }

    /// Sum of the counts of the canonical sample.
    pub fn sampled_weight(&self) -> u64 {
        self.canonical().iter().map(|e| e.1 as u64).sum()
    }
}

/// `c x factor`, rounded, never below 1 for a non-zero count.
pub(crate) fn scale_count(c: u64, factor: f64) -> u64 {
    if c == 0 {
        return 0;
    }
    let x = (c as f64 * factor).round();
    if x >= u64::MAX as f64 {
        u64::MAX
    } else {
        (x as u64).max(1)
    }
}

/// The KMV estimate of distinct sources from a saturated sample's largest (k-th) hash.
fn kmv_estimate(k: u32, kth: u64) -> f64 {
    let frac = (kth as f64 + 1.0) / 18_446_744_073_709_551_616.0;
    (k as f64 - 1.0) / frac
}

/// A sketch's canonical sample (see [`SourceSketch::canonical`]) taken once.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    k: u32,
    saturated: bool,
    /// The largest hash of the sample (`None` when empty).
    largest: Option<u64>,
    entries: Vec<(u64, u32)>,
}

impl Sample {
    /// The k smallest hashes with their counts: ascending by hash when taken with
    /// [`SourceSketch::sample`], in no particular order with [`SourceSketch::sample_unordered`].
    pub fn entries(&self) -> &[(u64, u32)] {
        &self.entries
    }

    /// The largest hash of the sample (`None` when empty).
    pub fn largest(&self) -> Option<u64> {
        self.largest
    }

    /// True when the sketch saw more than `k` distinct sources: counts are estimates.
    pub fn is_saturated(&self) -> bool {
        self.saturated
    }

    /// Same as [`SourceSketch::distinct`] of the sketch it was taken from.
    pub fn distinct(&self) -> f64 {
        if !self.saturated {
            return self.entries.len() as f64;
        }
        kmv_estimate(self.k, self.largest.unwrap_or(u64::MAX))
    }

    /// [`Self::distinct`] rounded to a whole number.
    pub fn distinct_u64(&self) -> u64 {
        self.distinct().round() as u64
    }
}

/// Space-Saving summary (Metwally et al.) of the heaviest sources. With `m` counters, any source
/// with more than `N/m` of the weight is kept and its count is over-estimated by at most `N/m`.
/// Exact while there are at most `m` distinct sources.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "TopRepr")]
pub struct TopSources {
    m: u32,
    /// (source, count, maximum over-estimate), as a binary min-heap on (count, source): the
    /// counter a new source replaces is always the first, so a flood of new sources (one
    /// replacement per connection) costs a sift of a few levels, not a search of every counter.
    entries: Vec<(Ip, u64, u64)>,
    /// How many counted sources fall in each bucket of [`top_bucket`]: a source whose bucket is
    /// empty is not counted, which settles most new sources without searching the counters.
    #[serde(skip_serializing)]
    buckets: [u8; TOP_BUCKETS],
}

/// Buckets of [`TopSources::buckets`]: with the default 32 counters, 7 in 8 are empty.
const TOP_BUCKETS: usize = 256;

/// A cheap spread of an address over the buckets (not one of the format's fixed hashes: it never
/// leaves memory).
#[inline]
fn top_bucket(ip: Ip) -> usize {
    let x = (ip.0 as u64) ^ ((ip.0 >> 64) as u64).rotate_left(17);
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
}

#[derive(Deserialize)]
struct TopRepr {
    m: u32,
    entries: Vec<(Ip, u64, u64)>,
}

impl From<TopRepr> for TopSources {
    fn from(r: TopRepr) -> Self {
        let mut t = TopSources::new(r.m);
        t.entries = r.entries;
        t.rebuild();
        t
    }
}

impl PartialEq for TopSources {
    /// Same counters, in any order.
    fn eq(&self, other: &Self) -> bool {
        self.m == other.m && self.top(usize::MAX) == other.top(usize::MAX)
    }
}

/// The order the heap keeps: smallest count first, the smallest source among equal counts (the
/// counter Space-Saving replaces).
#[inline]
fn top_key(e: &(Ip, u64, u64)) -> (u64, Ip) {
    (e.1, e.0)
}

impl TopSources {
    pub const DEFAULT_M: u32 = 32;

    pub fn new(m: u32) -> Self {
        TopSources {
            m: m.max(1),
            entries: Vec::new(),
            buckets: [0; TOP_BUCKETS],
        }
    }

    /// Adds `weight` connections of `ip`: a counted source gains them; a new one takes a free
    /// counter, or replaces the smallest (the smallest source among equal counts) and inherits
    /// its count as over-estimate.
    #[inline]
    pub fn insert(&mut self, ip: Ip, weight: u64) {
        let b = top_bucket(ip);
        if self.buckets[b] != 0
            && let Some(i) = self.entries.iter().position(|e| e.0 == ip)
        {
            self.entries[i].1 += weight;
            self.sift_down(i);
            return;
        }
        if self.entries.len() < self.m as usize {
            self.entries.push((ip, weight, 0));
            self.buckets[b] += 1;
            self.sift_up(self.entries.len() - 1);
            return;
        }
        if let Some(&(old, floor, _)) = self.entries.first() {
            self.buckets[top_bucket(old)] -= 1;
            self.buckets[b] += 1;
            self.entries[0] = (ip, floor + weight, floor);
            self.sift_down(0);
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.entries.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                return;
            }
            let mut c = l;
            if l + 1 < n && top_key(&self.entries[l + 1]) < top_key(&self.entries[l]) {
                c = l + 1;
            }
            if top_key(&self.entries[c]) < top_key(&self.entries[i]) {
                self.entries.swap(c, i);
                i = c;
            } else {
                return;
            }
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if top_key(&self.entries[i]) < top_key(&self.entries[p]) {
                self.entries.swap(i, p);
                i = p;
            } else {
                return;
            }
        }
    }

    /// Restores the heap order and the bucket counts after the entries were replaced wholesale.
    fn rebuild(&mut self) {
        for i in (0..self.entries.len() / 2).rev() {
            self.sift_down(i);
        }
        self.buckets = [0; TOP_BUCKETS];
        for e in &self.entries {
            let b = &mut self.buckets[top_bucket(e.0)];
            // More counters than buckets can count only in a summary of over 255 x 256
            // counters; a saturated bucket is never emptied, which only costs a search.
            *b = b.saturating_add(1);
        }
    }

    /// Mergeable-summary merge: an item missing from one side may have had up to that side's
    /// smallest count there, so it is credited with it as error; then the `m` heaviest are kept.
    pub fn merge(&mut self, other: &TopSources) {
        let full_a = self.entries.len() >= self.m as usize;
        let full_b = other.entries.len() >= other.m as usize;
        let min_a = if full_a { self.min_count() } else { 0 };
        let min_b = if full_b { other.min_count() } else { 0 };
        let mut out: Vec<(Ip, u64, u64)> =
            Vec::with_capacity(self.entries.len() + other.entries.len());
        for &(ip, c, e) in &self.entries {
            match other.entries.iter().find(|o| o.0 == ip) {
                Some(&(_, c2, e2)) => out.push((ip, c + c2, e + e2)),
                None => out.push((ip, c + min_b, e + min_b)),
            }
        }
        for &(ip, c, e) in &other.entries {
            if !self.entries.iter().any(|o| o.0 == ip) {
                out.push((ip, c + min_a, e + min_a));
            }
        }
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(self.m as usize);
        self.m = self.m.max(other.m);
        self.entries = out;
        self.rebuild();
    }

    /// Takes `weight` connections of `ip` back out (a copy a merge counted twice, see
    /// [`crate::dedup`]). A counted source's estimate drops by as much, so it stays an upper
    /// bound, and its lower bound (estimate minus error) stays one too; a source not counted
    /// needs nothing.
    pub fn withdraw(&mut self, ip: Ip, weight: u64) {
        if self.buckets[top_bucket(ip)] == 0 {
            return;
        }
        let Some(i) = self.entries.iter().position(|e| e.0 == ip) else {
            return;
        };
        let e = &mut self.entries[i];
        e.1 = e.1.saturating_sub(weight);
        e.2 = e.2.min(e.1);
        if e.1 == 0 {
            self.entries.swap_remove(i);
            self.rebuild();
        } else {
            self.sift_up(i);
        }
    }

    fn min_count(&self) -> u64 {
        self.entries.iter().map(|e| e.1).min().unwrap_or(0)
    }

    /// Multiplies every counter and its error bound by `factor` (see [`SourceSketch::scale`]).
    pub fn scale(&mut self, factor: f64) {
        for e in &mut self.entries {
            e.1 = scale_count(e.1, factor);
            e.2 = scale_count(e.2, factor).min(e.1);
        }
        self.rebuild();
    }

    /// Heaviest first: (source, estimated count, maximum over-estimate).
    pub fn top(&self, n: usize) -> Vec<(Ip, u64, u64)> {
        let mut v = self.entries.clone();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Default for TopSources {
    fn default() -> Self {
        TopSources::new(Self::DEFAULT_M)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::mix64;
    use proptest::prelude::*;

    /// The Space-Saving update written plainly, to check [`TopSources::insert`] against: a
    /// counted source gains `w`, a new one takes a free counter or replaces the smallest (the
    /// smallest source among equal counts), inheriting its count as error.
    fn plain_insert(plain: &mut Vec<(Ip, u64, u64)>, m: u32, ip: Ip, w: u64) {
        if let Some(e) = plain.iter_mut().find(|e| e.0 == ip) {
            e.1 += w;
        } else if plain.len() < m as usize {
            plain.push((ip, w, 0));
        } else if let Some(min) = plain.iter_mut().min_by_key(|e| (e.1, e.0)) {
            let floor = min.1;
            *min = (ip, floor + w, floor);
        }
    }

    fn sketch_of(k: u32, items: &[(u64, u32)]) -> SourceSketch {
        let mut s = SourceSketch::new(k);
        for &(h, w) in items {
            s.insert_hash(mix64(h), w);
        }
        s
    }

    #[test]
    fn exact_below_k() {
        let items: Vec<(u64, u32)> = (0..1000).map(|i| (i % 700, 1)).collect();
        let s = sketch_of(1024, &items);
        assert!(!s.is_saturated());
        assert_eq!(s.distinct_u64(), 700);
        assert_eq!(s.sampled_weight(), 1000);
    }

    #[test]
    fn estimate_above_k_within_error() {
        for n in [5_000u64, 50_000, 400_000] {
            let items: Vec<(u64, u32)> = (0..n).map(|i| (i, 1)).collect();
            let s = sketch_of(1024, &items);
            let rel = (s.distinct() - n as f64).abs() / n as f64;
            // 1/sqrt(1022) is about 3.1 %; 4 standard errors.
            assert!(rel < 0.125, "n={n} estimate={} rel={rel}", s.distinct());
        }
    }

    /// The default sample meets KQL's `dcount` bar: exact to well past 1,000, and above its
    /// size a relative error whose root mean square over independent hash streams is under 1 %.
    #[test]
    fn default_k_is_as_accurate_as_dcount() {
        let k = SourceSketch::DEFAULT_K;
        for n in [1_000u64, 1_001, 5_000, k as u64] {
            let items: Vec<(u64, u32)> = (0..n).map(|i| (i, 1)).collect();
            assert_eq!(sketch_of(k, &items).distinct_u64(), n, "exact at n={n}");
        }
        let n = 60_000u64;
        let trials = 12;
        let mut sq = 0.0;
        for t in 0..trials {
            // A different stream of distinct hashes per trial (the offset keeps them disjoint).
            let items: Vec<(u64, u32)> = (0..n).map(|i| (i + t * 1_000_000, 1)).collect();
            let rel = (sketch_of(k, &items).distinct() - n as f64) / n as f64;
            assert!(rel.abs() < 0.035, "trial {t}: relative error {rel}");
            sq += rel * rel;
        }
        let rms = (sq / trials as f64).sqrt();
        assert!(rms < 0.01, "rms relative error {rms}");
    }

    /// Exact counts come only from the range where the sample is complete, and agree with a
    /// plain count there; above it the sketch says it does not know.
    #[test]
    fn exact_counts_are_exact_or_absent() {
        let mut truth: std::collections::HashMap<u64, u64> = Default::default();
        let mut s = SourceSketch::new(64);
        for i in 0..5_000u64 {
            let h = mix64(i % 900);
            let w = (i % 4) as u32 + 1;
            s.insert_hash(h, w);
            *truth.entry(h).or_insert(0) += w as u64;
        }
        assert!(s.is_saturated());
        let hashes: Vec<u64> = (0..900).map(mix64).chain([mix64(10_000)]).collect();
        let counts = s.exact_counts(hashes.iter().copied());
        let known = counts.iter().filter(|c| c.is_some()).count();
        assert!(known >= 64, "at least the sample itself is known: {known}");
        for (h, c) in hashes.iter().zip(&counts) {
            if let Some(c) = c {
                assert_eq!(*c, truth.get(h).copied().unwrap_or(0), "hash {h:#x}");
            }
        }
        let small = sketch_of(64, &[(1, 3), (2, 4), (1, 2)]);
        assert_eq!(
            small.exact_counts([mix64(1), mix64(2), mix64(3)]),
            vec![Some(5), Some(4), Some(0)]
        );
    }

    #[test]
    fn sample_answers_like_the_sketch() {
        for (k, n) in [
            (8u32, 5u64),
            (8, 8),
            (8, 9),
            (64, 100),
            (64, 127),
            (64, 128),
            (1024, 3000),
        ] {
            let items: Vec<(u64, u32)> = (0..n).map(|i| (i, (i % 3) as u32 + 1)).collect();
            let s = sketch_of(k, &items);
            let sample = s.sample();
            assert_eq!(sample.entries(), s.canonical().as_slice());
            assert_eq!(sample.is_saturated(), s.is_saturated());
            let mut plain: Vec<(u64, u32)> = s.entries.iter().map(|(&h, &c)| (h, c)).collect();
            plain.sort_unstable();
            plain.truncate(k as usize);
            assert_eq!(s.canonical(), plain);
            let expected = if n <= k as u64 {
                n as f64
            } else {
                let kth = plain[k as usize - 1].0 as f64 + 1.0;
                (k as f64 - 1.0) / (kth / 18_446_744_073_709_551_616.0)
            };
            assert_eq!(sample.distinct(), expected, "k={k} n={n}");
            assert_eq!(s.distinct(), expected);
            let unordered = s.sample_unordered();
            let mut sorted = unordered.entries().to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, plain);
            assert_eq!(unordered.distinct(), expected);
            assert_eq!(unordered.largest(), plain.last().map(|e| e.0));
            assert_eq!(sample.largest(), plain.last().map(|e| e.0));
            assert_eq!(sample.distinct_u64(), s.distinct_u64());
            assert!(sample.entries().len() <= k as usize);
            assert!(sample.entries().windows(2).all(|w| w[0].0 < w[1].0));
        }
    }

    #[test]
    fn serde_round_trip_keeps_the_sample() {
        let items: Vec<(u64, u32)> = (0..5000).map(|i| (i % 3000, 2)).collect();
        let s = sketch_of(64, &items);
        let j = serde_json::to_string(&s).unwrap();
        let back: SourceSketch = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.distinct(), s.distinct());
    }

    proptest! {
        #[test]
        fn merge_equals_one_shot(
            items in proptest::collection::vec((0u64..3000, 1u32..5), 0..4000),
            cuts in proptest::collection::vec(0usize..4000, 0..6),
            k in prop_oneof![Just(8u32), Just(64), Just(1024)],
        ) {
            let whole = sketch_of(k, &items);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(items.len())).collect();
            cuts.sort();
            let mut parts = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain(std::iter::once(items.len())) {
                parts.push(sketch_of(k, &items[prev..c]));
                prev = c;
            }
            // Merge in reverse order, to show order does not matter either.
            let mut merged = SourceSketch::new(k);
            for p in parts.iter().rev() {
                merged.merge(p);
            }
            prop_assert_eq!(&merged, &whole);
            prop_assert_eq!(merged.distinct(), whole.distinct());
        }

        /// The insert against the Space-Saving update written plainly: the same
        /// counters, errors and replacement choice on ties.
        #[test]
        fn top_sources_insert_matches_the_plain_update(
            items in proptest::collection::vec((0u8..40, 1u64..4), 0..400),
            m in 1u32..12,
        ) {
            let ip = |b: u8| Ip::v4([198, 51, 100, b]);
            let mut fast = TopSources::new(m);
            let mut plain: Vec<(Ip, u64, u64)> = Vec::new();
            for &(b, w) in &items {
                fast.insert(ip(b), w);
                plain_insert(&mut plain, m, ip(b), w);
                let mut sorted = plain.clone();
                sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                prop_assert_eq!(fast.top(usize::MAX), sorted);
                prop_assert_eq!(fast.entries.len(), plain.len());
            }
        }

        /// The heap order and the bucket counts hold through inserts of many distinct sources
        /// (so buckets collide and counters are replaced), merges and serde round trips, and
        /// the result equals the plain update's.
        #[test]
        fn top_sources_heap_and_buckets_stay_consistent(
            parts in proptest::collection::vec(
                proptest::collection::vec((0u16..3000, 1u64..4), 0..300), 1..4),
            m in 1u32..40,
        ) {
            let ip = |b: u16| Ip::v4([10, 1, (b >> 8) as u8, b as u8]);
            let check = |t: &TopSources| {
                for i in 1..t.entries.len() {
                    assert!(top_key(&t.entries[(i - 1) / 2]) <= top_key(&t.entries[i]));
                }
                let mut b = [0u8; TOP_BUCKETS];
                for e in &t.entries {
                    b[top_bucket(e.0)] += 1;
                }
                assert_eq!(b, t.buckets);
            };
            let mut merged = TopSources::new(m);
            for items in &parts {
                let mut t = TopSources::new(m);
                let mut plain: Vec<(Ip, u64, u64)> = Vec::new();
                for &(b, w) in items {
                    t.insert(ip(b), w);
                    plain_insert(&mut plain, m, ip(b), w);
                }
                check(&t);
                plain.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                prop_assert_eq!(t.top(usize::MAX), plain);
                let back: TopSources =
                    serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
                check(&back);
                prop_assert_eq!(&back, &t);
                merged.merge(&back);
                check(&merged);
                // The merged summary keeps taking inserts correctly.
                let mut more = merged.clone();
                more.insert(ip(7), 5);
                check(&more);
            }
        }

        #[test]
        fn top_sources_exact_when_few(
            items in proptest::collection::vec((0u8..20, 1u64..100), 0..500),
            cut in 0usize..500,
        ) {
            let ip = |b: u8| Ip::v4([198, 51, 100, b]);
            let mut whole = TopSources::new(32);
            for &(b, w) in &items { whole.insert(ip(b), w); }
            let cut = cut.min(items.len());
            let mut a = TopSources::new(32);
            let mut b = TopSources::new(32);
            for &(s, w) in &items[..cut] { a.insert(ip(s), w); }
            for &(s, w) in &items[cut..] { b.insert(ip(s), w); }
            a.merge(&b);
            prop_assert_eq!(a.top(32), whole.top(32));
        }
    }

    #[test]
    fn top_sources_keep_heavy_hitters_after_merge() {
        let mut parts = [TopSources::new(8), TopSources::new(8), TopSources::new(8)];
        let heavy = Ip::v4([203, 0, 113, 9]);
        for i in 0..3000u32 {
            let p = &mut parts[(i % 3) as usize];
            p.insert(Ip::v4([10, (i >> 8) as u8, i as u8, 1]), 1);
            if i % 2 == 0 {
                p.insert(heavy, 1);
            }
        }
        let mut m = parts[0].clone();
        m.merge(&parts[1]);
        m.merge(&parts[2]);
        let top = m.top(1);
        assert_eq!(top[0].0, heavy);
        assert!(top[0].1 >= 1500 && top[0].1 - top[0].2 <= 1500);
    }
}
