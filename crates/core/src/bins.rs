//! Per-device time bins and the aggregator that fills them.
//!
//! [`Aggregator`] is the stateful fold from events to bins; it is what each parsing thread owns.
//! [`Aggregates`] is its finished, serializable result; partial results merge with
//! [`Aggregates::merge`], which is how parallel parsing (and later, scale-out) combines work.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::classify::{Class, ClassifyConfig};
use crate::hash::{combine, hash_bytes, hash_ip, mix64};
use crate::model::{DeviceId, Event};
use crate::sketch::{SourceSketch, TopSources};
use crate::time::{BinWidth, NANOS_PER_HOUR, Nanos};

/// Interned device names. Ids are dense and local to one table; merging tables remaps by name.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeviceTable {
    names: Vec<String>,
    #[serde(skip)]
    ids: FxHashMap<String, DeviceId>,
    #[serde(skip)]
    hashes: Vec<u64>,
}

impl DeviceTable {
    /// The id of `name`, adding it on first sight. Allocates only for a new name.
    #[inline]
    pub fn intern(&mut self, name: &str) -> DeviceId {
        if self.ids.len() != self.names.len() {
            self.rebuild();
        }
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as DeviceId;
        self.names.push(name.to_owned());
        self.hashes.push(hash_bytes(name.as_bytes()));
        self.ids.insert(name.to_owned(), id);
        id
    }

    /// Restores the lookup index after deserialization (only names are serialized).
    fn rebuild(&mut self) {
        self.ids = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as DeviceId))
            .collect();
        self.hashes = self
            .names
            .iter()
            .map(|n| hash_bytes(n.as_bytes()))
            .collect();
    }

    pub fn name(&self, id: DeviceId) -> &str {
        &self.names[id as usize]
    }

    pub fn get(&self, name: &str) -> Option<DeviceId> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| i as DeviceId)
    }

    /// Seedless hash of the device's name (same for the same name in every table).
    pub fn name_hash(&mut self, id: DeviceId) -> u64 {
        if self.hashes.len() != self.names.len() {
            self.rebuild();
        }
        self.hashes[id as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// A device's bin: (device, bin index). Orders by device, then time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BinKey {
    pub device: DeviceId,
    /// Bin index: bin start = index * width.
    pub bin: i64,
}

/// One traffic class in one bin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassAgg {
    /// Connections (rows weighted by `uniqueEventsAggregated`).
    pub count: u64,
    /// Bytes both ways, from inspected rows.
    pub bytes: u64,
    /// Packets both ways, from inspected rows.
    pub packets: u64,
    /// How many rows carried byte counters (0 means "no byte data", not "zero bytes").
    pub metered: u64,
    /// Distinct sources of this class.
    pub sources: SourceSketch,
}

impl ClassAgg {
    /// Per-class sample size: the same as the bin's, so a vector's distinct sources are as
    /// accurate as the bin's, and a vector that is all of a bin's traffic has the same sample.
    pub const K: u32 = SourceSketch::DEFAULT_K;
    /// Sample size for distinct /24 (/48) prefixes: only their ratio to sources is reported.
    pub const PREFIX_K: u32 = 256;

    fn new() -> Self {
        Self::with_capacity(0)
    }

    fn with_capacity(sources: usize) -> Self {
        ClassAgg {
            count: 0,
            bytes: 0,
            packets: 0,
            metered: 0,
            sources: SourceSketch::with_capacity(Self::K, sources),
        }
    }

    fn scale(&mut self, factor: f64) {
        use crate::sketch::scale_count;
        self.count = scale_count(self.count, factor);
        self.bytes = scale_count(self.bytes, factor);
        self.packets = scale_count(self.packets, factor);
        self.sources.scale(factor);
    }

    fn merge(&mut self, o: &ClassAgg) {
        self.count += o.count;
        self.bytes += o.bytes;
        self.packets += o.packets;
        self.metered += o.metered;
        self.sources.merge(&o.sources);
    }
}

/// What the seed rule needs of a bin: its `RequestCount`, `UniqueSourceIPs` and `TotalBytes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedAgg {
    /// Inbound connections accepted on the seed ports.
    pub count: u64,
    /// Distinct `RemoteIP` of those: exact up to 16,384 (KQL's dcount is exact up to 1,000).
    pub sources: SourceSketch,
    /// Bytes of inbound inspected rows on the seed ports.
    pub bytes: u64,
    /// Rows that carried byte counters; 0 means `TotalBytes` is null.
    pub metered: u64,
}

impl SeedAgg {
    fn new() -> Self {
        Self::with_capacity(0)
    }

    fn with_capacity(sources: usize) -> Self {
        SeedAgg {
            count: 0,
            sources: SourceSketch::with_capacity(SourceSketch::DEFAULT_K, sources),
            bytes: 0,
            metered: 0,
        }
    }

    /// `TotalBytes`: `None` when no row carried byte counters.
    pub fn total_bytes(&self) -> Option<u64> {
        (self.metered > 0).then_some(self.bytes)
    }

    fn merge(&mut self, o: &SeedAgg) {
        self.count += o.count;
        self.sources.merge(&o.sources);
        self.bytes += o.bytes;
        self.metered += o.metered;
    }
}

/// Everything kept about one device in one bin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BinAgg {
    /// Rows of any kind (weighted), inbound or not.
    pub rows: u64,
    pub classes: Vec<ClassAgg>,
    pub seed: SeedAgg,
    /// All inbound sources with their exact connection counts (sampled above k).
    pub sources: SourceSketch,
    /// Distinct source prefixes (/24 IPv4, /48 IPv6).
    pub prefixes: SourceSketch,
    /// Heaviest inbound sources.
    pub top: TopSources,
    /// Inbound connections from allow-listed sources (see [`ClassifyConfig::allow`]); included
    /// in the class counts too.
    pub allowed: u64,
}

impl Default for BinAgg {
    fn default() -> Self {
        BinAgg {
            rows: 0,
            classes: (0..Class::COUNT).map(|_| ClassAgg::new()).collect(),
            seed: SeedAgg::new(),
            sources: SourceSketch::new(SourceSketch::DEFAULT_K),
            prefixes: SourceSketch::new(ClassAgg::PREFIX_K),
            top: TopSources::default(),
            allowed: 0,
        }
    }
}

impl BinAgg {
    /// An empty bin whose sketches have room for as many sources as `prev`'s hold: a device's
    /// next bin usually looks like its last, and growing a sketch's map by doubling rehashes
    /// every entry several times over.
    fn sized_like(prev: &BinAgg, profile: Profile) -> BinAgg {
        if profile == Profile::SeedOnly {
            return BinAgg {
                seed: SeedAgg::with_capacity(prev.seed.sources.held()),
                ..BinAgg::default()
            };
        }
        let seed = if profile == Profile::Floodwatch {
            SeedAgg::new()
        } else {
            SeedAgg::with_capacity(prev.seed.sources.held())
        };
        BinAgg {
            rows: 0,
            classes: prev
                .classes
                .iter()
                .map(|c| ClassAgg::with_capacity(c.sources.held()))
                .collect(),
            seed,
            sources: SourceSketch::with_capacity(SourceSketch::DEFAULT_K, prev.sources.held()),
            prefixes: SourceSketch::with_capacity(ClassAgg::PREFIX_K, prev.prefixes.held()),
            top: TopSources::default(),
            allowed: 0,
        }
    }

    pub fn class(&self, c: Class) -> &ClassAgg {
        &self.classes[c as usize]
    }

    /// Inbound connections of every class.
    pub fn inbound(&self) -> u64 {
        self.classes.iter().map(|c| c.count).sum()
    }

    /// The bin as it would look if the traffic seen so far went on at the same rate for
    /// `factor` times as long: every count (connections, bytes, per-source counts) times
    /// `factor`, the sources themselves unchanged. A part of a bin projected onto the whole bin
    /// can then be judged by the same tests as a complete one (the live service's early alerts).
    pub fn projected(&self, factor: f64) -> BinAgg {
        use crate::sketch::scale_count;
        let mut b = self.clone();
        b.rows = scale_count(b.rows, factor);
        b.allowed = scale_count(b.allowed, factor);
        for c in &mut b.classes {
            c.scale(factor);
        }
        b.seed.count = scale_count(b.seed.count, factor);
        b.seed.bytes = scale_count(b.seed.bytes, factor);
        b.sources.scale(factor);
        b.prefixes.scale(factor);
        b.top.scale(factor);
        b
    }

    pub fn merge(&mut self, o: &BinAgg) {
        self.rows += o.rows;
        for (a, b) in self.classes.iter_mut().zip(&o.classes) {
            a.merge(b);
        }
        self.seed.merge(&o.seed);
        self.sources.merge(&o.sources);
        self.prefixes.merge(&o.prefixes);
        self.top.merge(&o.top);
        self.allowed += o.allowed;
    }
}

/// What to compute per event. `SeedOnly` skips everything the seed rule does not read;
/// `Floodwatch` skips the seed rule's aggregate (the default rule never reads it: one map insert
/// less per event, and a third less of each bin to keep in cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    #[default]
    Full,
    SeedOnly,
    Floodwatch,
}

/// Drops exact duplicates (same DeviceName, Timestamp, ReportId) seen within `horizon` of event
/// time of each other, in bounded memory: keys are kept per bin and forgotten once the newest
/// event seen is more than `horizon` past their bin.
#[derive(Clone, Debug)]
struct Deduper {
    horizon: Nanos,
    width: BinWidth,
    sets: BTreeMap<i64, FxHashSet<u64>>,
    /// The set of the bin the last event fell in, out of `sets` while in use: rows come in
    /// time order, so most events find their set here without a tree lookup.
    current: Option<(i64, FxHashSet<u64>)>,
    newest: Nanos,
    /// The bin of `newest - horizon`: sets of older bins are dropped.
    floor: i64,
    /// Times below this (minus the horizon) are still in `floor`'s bin, so the floor only
    /// needs a division once per bin of event time, not per event.
    floor_end: Nanos,
}

impl Deduper {
    fn new(horizon: Nanos, width: BinWidth) -> Self {
        let floor = width.index(Nanos::MIN);
        Deduper {
            horizon,
            width,
            sets: BTreeMap::new(),
            current: None,
            newest: Nanos::MIN,
            floor,
            floor_end: bin_end(width, floor),
        }
    }

    /// True if the key was not seen before (within the horizon). `bin` is `ts`'s bin.
    #[inline]
    fn first_sight(&mut self, ts: Nanos, bin: i64, key: u64) -> bool {
        if self.horizon <= 0 {
            return true;
        }
        if ts > self.newest {
            self.newest = ts;
            let t = ts.saturating_sub(self.horizon);
            if t >= self.floor_end {
                let floor = self.width.index(t);
                if floor > self.floor {
                    self.park();
                    // Keep this event's own bin even if it is older than the floor.
                    self.sets = self.sets.split_off(&floor.min(bin));
                }
                self.floor = floor;
                self.floor_end = bin_end(self.width, floor);
            }
        }
        if let Some((b, set)) = &mut self.current
            && *b == bin
        {
            return set.insert(key);
        }
        self.park();
        let mut set = match self.sets.remove(&bin) {
            Some(set) => set,
            None => {
                // A new bin: sized like the bin before it, so the set does not regrow (and
                // rehash) a dozen times while the bin fills. Not like the largest kept: after a
                // burst, every set of the next hour would be as big as the burst's.
                let hint = self
                    .sets
                    .range(..bin)
                    .next_back()
                    .map_or(0, |(_, s)| s.len());
                FxHashSet::with_capacity_and_hasher(hint, Default::default())
            }
        };
        let fresh = set.insert(key);
        self.current = Some((bin, set));
        fresh
    }

    /// Puts the current set back with the others.
    fn park(&mut self) {
        if let Some((b, set)) = self.current.take() {
            self.sets.insert(b, set);
        }
    }
}

/// Start of the bin after `index`, or `Nanos::MIN` (so callers always recompute) when it does
/// not fit.
fn bin_end(width: BinWidth, index: i64) -> Nanos {
    index
        .checked_add(1)
        .and_then(|i| i.checked_mul(width.nanos()))
        .unwrap_or(Nanos::MIN)
}

/// Folds events into per-device bins. One per parsing thread; see [`Aggregates::merge`].
#[derive(Clone, Debug)]
pub struct Aggregator {
    pub width: BinWidth,
    pub classify: ClassifyConfig,
    pub profile: Profile,
    pub devices: DeviceTable,
    /// Bins in the order they were opened; `index` finds one by key.
    bins: Vec<(BinKey, BinAgg)>,
    index: FxHashMap<BinKey, usize>,
    /// Per device id: its latest bin as (bin index, position in `bins`). Rows of a device come
    /// in time order, so most events find their bin here without a map lookup.
    recent: Vec<Option<(i64, usize)>>,
    dedup: Deduper,
    stats: IngestStats,
    /// The last bin an event fell in, as (start, end, index): rows come in time order, and
    /// finding the bin is a 64-bit division otherwise.
    last_bin: (Nanos, Nanos, i64),
    /// The width `last_bin` was computed with (`width` is public).
    last_width: BinWidth,
    /// Bins below this index were handed on by [`Aggregator::seal`]: an event for one of them
    /// comes too late to be counted.
    sealed_below: i64,
    /// Oldest event time added since the last [`Aggregator::take_span`] (`Nanos::MAX`: none).
    oldest_since: Nanos,
}

/// What [`Aggregator::add`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Aggregated.
    Used,
    /// An exact duplicate of an event already aggregated: dropped.
    Duplicate,
    /// Its bin was already sealed (see [`Aggregator::seal`]): dropped and counted in
    /// [`IngestStats::late`].
    Late,
}

/// Counters about what went into an [`Aggregates`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestStats {
    /// Events aggregated (after dropping duplicates).
    pub events: u64,
    /// Exact duplicates dropped.
    pub duplicates: u64,
    /// Events dropped because their bin had already been sealed and handed on: they came more
    /// than the lateness horizon behind newer events (see `Sealer`).
    #[serde(default)]
    pub late: u64,
    /// Oldest and newest event time seen (`None` before the first event).
    pub min_ts: Option<Nanos>,
    pub max_ts: Option<Nanos>,
}

impl IngestStats {
    fn merge(&mut self, o: &IngestStats) {
        self.events += o.events;
        self.duplicates += o.duplicates;
        self.late += o.late;
        self.min_ts = opt_min(self.min_ts, o.min_ts);
        self.max_ts = opt_max(self.max_ts, o.max_ts);
    }
}

fn opt_min(a: Option<Nanos>, b: Option<Nanos>) -> Option<Nanos> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn opt_max(a: Option<Nanos>, b: Option<Nanos>) -> Option<Nanos> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Aggregator {
    /// Default duplicate horizon: one hour of event time.
    pub const DEFAULT_DEDUP_HORIZON: Nanos = NANOS_PER_HOUR;

    pub fn new(width: BinWidth, classify: ClassifyConfig) -> Self {
        Aggregator {
            width,
            classify,
            profile: Profile::Full,
            devices: DeviceTable::default(),
            bins: Vec::new(),
            index: FxHashMap::default(),
            recent: Vec::new(),
            dedup: Deduper::new(Self::DEFAULT_DEDUP_HORIZON, width),
            stats: IngestStats::default(),
            last_bin: (1, 0, 0),
            last_width: width,
            sealed_below: i64::MIN,
            oldest_since: Nanos::MAX,
        }
    }

    pub fn with_profile(mut self, p: Profile) -> Self {
        self.profile = p;
        self
    }

    /// Duplicates are recognised within `horizon` of event time; 0 turns de-duplication off.
    pub fn with_dedup_horizon(mut self, horizon: Nanos) -> Self {
        self.dedup = Deduper::new(horizon, self.width);
        self
    }

    /// The id to put in [`Event::device`] for a device name.
    #[inline]
    pub fn device(&mut self, name: &str) -> DeviceId {
        self.devices.intern(name)
    }

    pub fn add_batch(&mut self, events: &[Event]) {
        for ev in events {
            self.add(ev);
        }
    }

    /// `self.width.index(ts)`, without the division while events stay in the same bin.
    #[inline]
    fn bin_index(&mut self, ts: Nanos) -> i64 {
        let (start, end, index) = self.last_bin;
        if ts >= start && ts < end && self.last_width == self.width {
            return index;
        }
        self.last_width = self.width;
        let index = self.width.index(ts);
        let start = index.checked_mul(self.width.nanos());
        self.last_bin = match (start, bin_end(self.width, index)) {
            (Some(start), end) if end > start => (start, end, index),
            _ => (1, 0, 0),
        };
        index
    }

    /// Position in `bins` of the (device, bin) aggregate, opening it if new.
    #[inline]
    fn slot(&mut self, device: DeviceId, bin: i64) -> usize {
        if let Some(&Some((b, slot))) = self.recent.get(device as usize)
            && b == bin
        {
            return slot;
        }
        self.slot_slow(device, bin)
    }

    #[inline(never)]
    fn slot_slow(&mut self, device: DeviceId, bin: i64) -> usize {
        let key = BinKey { device, bin };
        let d = device as usize;
        let slot = match self.index.get(&key) {
            Some(&slot) => slot,
            None => {
                let prev = self.recent.get(d).copied().flatten();
                let agg = match prev {
                    Some((_, p)) => BinAgg::sized_like(&self.bins[p].1, self.profile),
                    None => BinAgg::default(),
                };
                let slot = self.bins.len();
                self.bins.push((key, agg));
                self.index.insert(key, slot);
                slot
            }
        };
        if self.recent.len() <= d {
            self.recent.resize(d + 1, None);
        }
        self.recent[d] = Some((bin, slot));
        slot
    }

    #[inline]
    pub fn add(&mut self, ev: &Event) -> Fate {
        let key = combine(
            combine(self.devices.name_hash(ev.device), ev.ts as u64),
            mix64(ev.report_id as u64),
        );
        let bin_index = self.bin_index(ev.ts);
        if !self.dedup.first_sight(ev.ts, bin_index, key) {
            self.stats.duplicates += 1;
            return Fate::Duplicate;
        }
        // Seen before the late test: an event behind the horizon says the input is out of
        // order, which holds the sealing back (see `Sealer`).
        self.oldest_since = self.oldest_since.min(ev.ts);
        if bin_index < self.sealed_below {
            self.stats.late += 1;
            return Fate::Late;
        }
        let s = &mut self.stats;
        s.events += 1;
        s.min_ts = opt_min(s.min_ts, Some(ev.ts));
        s.max_ts = opt_max(s.max_ts, Some(ev.ts));

        let verdict = self.classify.classify(ev);
        let slot = self.slot(ev.device, bin_index);
        let bin = &mut self.bins[slot].1;
        let w = ev.weight.max(1);
        bin.rows += w as u64;
        let src_hash = ev.remote_ip.map(hash_ip);
        if self.profile != Profile::Floodwatch {
            if verdict.seed_count {
                bin.seed.count += w as u64;
                if let Some(h) = src_hash {
                    bin.seed.sources.insert_hash(h, w);
                }
            }
            if let (true, Some(b)) = (verdict.seed_bytes, ev.bytes) {
                bin.seed.bytes += b;
                bin.seed.metered += 1;
            }
        }
        if self.profile == Profile::SeedOnly {
            return Fate::Used;
        }
        if let Some(c) = verdict.count {
            let ca = &mut bin.classes[c as usize];
            ca.count += w as u64;
            if let (Some(h), Some(ip)) = (src_hash, ev.remote_ip) {
                ca.sources.insert_hash(h, w);
                bin.sources.insert_hash(h, w);
                bin.prefixes.insert(ip.prefix(), w);
                bin.top.insert(ip, w as u64);
                if !self.classify.allow.is_empty() && self.classify.allow.contains(ip) {
                    bin.allowed += w as u64;
                }
            }
        }
        if let Some(c) = verdict.bytes
            && (ev.bytes.is_some() || ev.packets.is_some())
        {
            let ca = &mut bin.classes[c as usize];
            ca.bytes += ev.bytes.unwrap_or(0);
            ca.packets += ev.packets.unwrap_or(0);
            ca.metered += 1;
        }
        Fate::Used
    }

    /// Oldest and newest event time aggregated since the last call (newest: of all so far);
    /// `None` when no event came in between.
    pub fn take_span(&mut self) -> Option<(Nanos, Nanos)> {
        let oldest = std::mem::replace(&mut self.oldest_since, Nanos::MAX);
        match self.stats.max_ts {
            Some(newest) if oldest != Nanos::MAX => Some((oldest, newest)),
            _ => None,
        }
    }

    /// Hands on every bin below index `below` and refuses later events for them (they are
    /// counted as late). Sealing only moves forward: a lower `below` than before seals nothing
    /// new. The result carries no stats; those stay here until [`Aggregator::finish`].
    pub fn seal(&mut self, below: i64) -> Aggregates {
        self.sealed_below = self.sealed_below.max(below);
        let below = self.sealed_below;
        let mut out = BTreeMap::new();
        if self.bins.iter().any(|(k, _)| k.bin < below) {
            let (sealed, open): (Vec<_>, Vec<_>) = std::mem::take(&mut self.bins)
                .into_iter()
                .partition(|(k, _)| k.bin < below);
            out.extend(sealed);
            self.bins = open;
            self.index = self
                .bins
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (*k, i))
                .collect();
            for (d, r) in self.recent.iter_mut().enumerate() {
                *r = r.and_then(|(bin, _)| {
                    let key = BinKey {
                        device: d as DeviceId,
                        bin,
                    };
                    self.index.get(&key).map(|&slot| (bin, slot))
                });
            }
        }
        Aggregates {
            width: self.width,
            devices: self.devices.clone(),
            bins: out,
            stats: IngestStats::default(),
        }
    }

    /// Hands on every bin held, open or not, without refusing later events for any of them:
    /// a reader that only pre-aggregates (the live service's) passes its partial bins on after
    /// each batch and lets the consumer decide what is late. Device names and the duplicate
    /// filter are kept; the result carries the stats gathered since the last call.
    pub fn take_all(&mut self) -> Aggregates {
        let bins: BTreeMap<BinKey, BinAgg> = std::mem::take(&mut self.bins).into_iter().collect();
        self.index.clear();
        self.recent.clear();
        Aggregates {
            width: self.width,
            devices: self.devices.clone(),
            bins,
            stats: std::mem::take(&mut self.stats),
        }
    }

    pub fn finish(self) -> Aggregates {
        Aggregates {
            width: self.width,
            devices: self.devices,
            bins: self.bins.into_iter().collect(),
            stats: self.stats,
        }
    }
}

/// The finished aggregates of some events: per device and bin, in (device, time) order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Aggregates {
    pub width: BinWidth,
    pub devices: DeviceTable,
    #[serde(with = "bins_as_pairs")]
    pub bins: BTreeMap<BinKey, BinAgg>,
    pub stats: IngestStats,
}

/// JSON maps need string keys; bins serialize as a list of (key, aggregate) pairs instead.
mod bins_as_pairs {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<BinKey, BinAgg>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<BinKey, BinAgg>, D::Error> {
        let v: Vec<(BinKey, BinAgg)> = Vec::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

impl Aggregates {
    pub fn empty(width: BinWidth) -> Self {
        Aggregates {
            width,
            devices: DeviceTable::default(),
            bins: BTreeMap::new(),
            stats: IngestStats::default(),
        }
    }

    /// Folds `other` in, remapping its device ids by name.
    pub fn merge(&mut self, mut other: Aggregates) {
        assert_eq!(
            self.width, other.width,
            "merging aggregates of different bin widths"
        );
        let remap: Vec<DeviceId> = other
            .devices
            .names()
            .to_vec()
            .iter()
            .map(|n| self.devices.intern(n))
            .collect();
        for (k, v) in std::mem::take(&mut other.bins) {
            let k = BinKey {
                device: remap[k.device as usize],
                bin: k.bin,
            };
            match self.bins.get_mut(&k) {
                Some(mine) => mine.merge(&v),
                None => {
                    self.bins.insert(k, v);
                }
            }
        }
        self.stats.merge(&other.stats);
    }

    /// Takes out the bins below index `below`, with a copy of the device table and no stats.
    pub fn split_below(&mut self, below: i64) -> Aggregates {
        let (low, high) = std::mem::take(&mut self.bins)
            .into_iter()
            .partition(|(k, _)| k.bin < below);
        self.bins = high;
        Aggregates {
            width: self.width,
            devices: self.devices.clone(),
            bins: low,
            stats: IngestStats::default(),
        }
    }

    /// Device ids ordered by name, so output does not depend on which thread saw a device first.
    pub fn devices_by_name(&self) -> Vec<DeviceId> {
        let mut ids: Vec<DeviceId> = (0..self.devices.len() as DeviceId).collect();
        ids.sort_by(|&a, &b| self.devices.name(a).cmp(self.devices.name(b)));
        ids
    }

    /// The bins of one device, in time order: (bin index, aggregate).
    pub fn device_bins(&self, device: DeviceId) -> impl Iterator<Item = (i64, &BinAgg)> {
        self.bins
            .range(
                BinKey {
                    device,
                    bin: i64::MIN,
                }..=BinKey {
                    device,
                    bin: i64::MAX,
                },
            )
            .map(|(k, v)| (k.bin, v))
    }

    /// The aggregate of one device's bin, if any event fell in it.
    pub fn get(&self, device: DeviceId, bin: i64) -> Option<&BinAgg> {
        self.bins.get(&BinKey { device, bin })
    }

    /// Aggregates keyed by device *name*, for comparing results made with different tables.
    pub fn by_name(&self) -> BTreeMap<(String, i64), &BinAgg> {
        self.bins
            .iter()
            .map(|(k, v)| ((self.devices.name(k.device).to_owned(), k.bin), v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionType, Ip, Protocol};
    use crate::time::NANOS_PER_SEC;
    use proptest::prelude::*;

    /// Builds an event from a compact description: (device 0..3, second, action 0..4, source).
    fn make(agg: &mut Aggregator, d: u8, sec: i64, kind: u8, src: u16, rid: i64) -> Event {
        let device = agg.device(&format!("web{d:02}.contoso.com"));
        let (action, protocol, local) = match kind {
            0 => (ActionType::InboundConnectionAccepted, Protocol::Tcp, 443),
            1 => (ActionType::ConnectionAttempt, Protocol::Tcp, 443),
            2 => (ActionType::InboundConnectionAccepted, Protocol::Udp, 53),
            3 => (ActionType::ConnectionSuccess, Protocol::Tcp, 50_000),
            _ => (ActionType::SslConnectionInspected, Protocol::Tcp, 443),
        };
        Event {
            ts: 1_766_361_600 * NANOS_PER_SEC + sec * NANOS_PER_SEC,
            device,
            action,
            protocol,
            direction: crate::model::Direction::In,
            remote_ip: Some(Ip::v4([198, 51, (src >> 8) as u8, src as u8])),
            remote_port: Some(40_000),
            local_port: Some(local),
            report_id: rid,
            weight: 1,
            bytes: (kind == 4).then_some(1500),
            packets: (kind == 4).then_some(12),
            tcp_flags: None,
        }
    }

    fn aggregate(items: &[(u8, i64, u8, u16, i64)]) -> Aggregates {
        let mut a = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
        for &(d, s, k, src, rid) in items {
            let e = make(&mut a, d, s, k, src, rid);
            a.add(&e);
        }
        a.finish()
    }

    fn item() -> impl Strategy<Value = (u8, i64, u8, u16, i64)> {
        (0u8..3, 0i64..7200, 0u8..5, 0u16..1500, 0i64..50)
    }

    #[test]
    fn counts_classes_and_seed() {
        let a = aggregate(&[
            (0, 10, 0, 1, 1),
            (0, 11, 0, 1, 2),
            (0, 12, 0, 2, 3),
            (0, 13, 1, 3, 4),
            (0, 14, 3, 4, 5),
            (0, 15, 4, 5, 6),
            (0, 15, 4, 5, 6), // exact duplicate
        ]);
        assert_eq!(a.stats.duplicates, 1);
        let b = a.bins.values().next().unwrap();
        assert_eq!(b.seed.count, 3);
        assert_eq!(b.seed.sources.distinct_u64(), 2);
        assert_eq!(b.seed.total_bytes(), Some(1500));
        assert_eq!(b.class(Class::Web).count, 3);
        assert_eq!(b.class(Class::Web).bytes, 1500);
        assert_eq!(b.class(Class::Syn).count, 1);
        assert_eq!(b.inbound(), 4);
        assert_eq!(b.rows, 6);
        assert_eq!(b.top.top(1)[0].0, Ip::v4([198, 51, 0, 1]));
    }

    /// Each rule's profile keeps what it reads exactly as the full one does, and nothing else.
    #[test]
    fn profiles_keep_what_their_rule_reads() {
        let items: Vec<(u8, i64, u8, u16, i64)> = (0..900)
            .map(|i| {
                (
                    (i % 3) as u8,
                    i * 7 % 3600,
                    (i % 5) as u8,
                    (i * 13 % 700) as u16,
                    i,
                )
            })
            .collect();
        let with = |p: Profile| {
            let mut a =
                Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default()).with_profile(p);
            for &(d, s, k, src, rid) in &items {
                let e = make(&mut a, d, s, k, src, rid);
                a.add(&e);
            }
            a.finish()
        };
        let (full, seed, fw) = (
            with(Profile::Full),
            with(Profile::SeedOnly),
            with(Profile::Floodwatch),
        );
        assert_eq!(full.bins.len(), fw.bins.len());
        assert_eq!(full.bins.len(), seed.bins.len());
        let (full, seed, fw) = (full.by_name(), seed.by_name(), fw.by_name());
        for (k, f) in &full {
            assert_eq!(seed[k].seed, f.seed);
            assert!(
                seed[k]
                    .classes
                    .iter()
                    .all(|c| c.count == 0 && c.sources.is_empty())
            );
            let w = fw[k];
            assert_eq!(
                (w.rows, &w.classes, &w.sources),
                (f.rows, &f.classes, &f.sources)
            );
            assert_eq!(
                (&w.prefixes, &w.top, w.allowed),
                (&f.prefixes, &f.top, f.allowed)
            );
            assert!(w.seed.count == 0 && w.seed.sources.is_empty() && w.seed.metered == 0);
        }
        assert!(
            full.values()
                .any(|b| b.seed.count > 0 && b.class(Class::Web).count > 0)
        );
    }

    #[test]
    fn duplicates_beyond_the_horizon_are_forgotten() {
        let mut agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
            .with_dedup_horizon(600 * NANOS_PER_SEC);
        for &(s, rid) in &[(0i64, 1i64), (0, 1), (3600, 2), (0, 1)] {
            let e = make(&mut agg, 0, s, 0, 9, rid);
            agg.add(&e);
        }
        let a = agg.finish();
        assert_eq!(
            a.stats.duplicates, 1,
            "the third copy came after the horizon"
        );
        assert_eq!(a.stats.events, 3);
    }

    proptest! {
        #[test]
        fn split_and_merged_equals_one_shot(
            items in proptest::collection::vec(item(), 0..600),
            cut in 0usize..600,
        ) {
            // Duplicates are not generated across the cut here (rids differ by side), since
            // de-duplication is per aggregator by design.
            let cut = cut.min(items.len());
            let mut items = items;
            for (i, it) in items.iter_mut().enumerate() { it.4 = i as i64; }
            let whole = aggregate(&items);
            let mut a = aggregate(&items[cut..]);
            a.merge(aggregate(&items[..cut]));
            prop_assert_eq!(a.stats, whole.stats);
            prop_assert_eq!(a.by_name(), whole.by_name());
        }

        /// Events of interleaved devices in any time order land in their own (device, bin),
        /// however the remembered latest bin of each device changes.
        #[test]
        fn every_event_lands_in_its_bin(items in proptest::collection::vec(item(), 0..600)) {
            let mut items = items;
            for (i, it) in items.iter_mut().enumerate() { it.4 = i as i64; }
            let a = aggregate(&items);
            let mut plain: BTreeMap<(String, i64), u64> = BTreeMap::new();
            for &(d, sec, ..) in &items {
                let ts = 1_766_361_600 * NANOS_PER_SEC + sec * NANOS_PER_SEC;
                *plain
                    .entry((format!("web{d:02}.contoso.com"), BinWidth::FIVE_MINUTES.index(ts)))
                    .or_default() += 1;
            }
            let got: BTreeMap<(String, i64), u64> =
                a.by_name().into_iter().map(|(k, v)| (k, v.rows)).collect();
            prop_assert_eq!(got, plain);
        }

        /// Duplicates are found across bins visited in any order, as a plain set of every key
        /// finds them (the items span half an hour, within the one-hour horizon).
        #[test]
        fn duplicates_found_in_any_bin_order(
            items in proptest::collection::vec((0u8..2, 0i64..1800, 0i64..40), 0..400),
        ) {
            let mut agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default());
            let mut seen = std::collections::HashSet::new();
            let mut dups = 0;
            for &(d, sec, rid) in &items {
                // Same second and rid: the same row (the key is device, time and ReportId).
                let e = make(&mut agg, d, sec, 0, 1, rid);
                agg.add(&e);
                if !seen.insert((d, sec, rid)) {
                    dups += 1;
                }
            }
            prop_assert_eq!(agg.finish().stats.duplicates, dups);
        }

        #[test]
        fn cached_bin_index_is_the_division(
            times in proptest::collection::vec(prop_oneof![
                -1_000_000_000_000i64..4_000_000_000_000,
                Just(Nanos::MIN), Just(Nanos::MAX), Just(Nanos::MAX - 1), Just(-1i64), Just(0i64),
            ], 1..200),
            secs in prop::sample::select(vec![1i64, 60, 300, 3600, 86_400]),
        ) {
            let width = BinWidth::from_secs(secs).unwrap();
            let mut agg = Aggregator::new(width, ClassifyConfig::default());
            for t in times {
                prop_assert_eq!(agg.bin_index(t), width.index(t), "{}", t);
            }
        }

        #[test]
        fn serialized_partials_merge_the_same(items in proptest::collection::vec(item(), 0..300)) {
            let mut items = items;
            for (i, it) in items.iter_mut().enumerate() { it.4 = i as i64; }
            let whole = aggregate(&items);
            let half = items.len() / 2;
            let a = aggregate(&items[..half]);
            let b: Aggregates = serde_json::from_str(
                &serde_json::to_string(&aggregate(&items[half..])).unwrap()).unwrap();
            let mut a: Aggregates = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
            a.merge(b);
            prop_assert_eq!(a.by_name(), whole.by_name());
        }
    }
}
