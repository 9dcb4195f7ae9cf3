//! Per-device time bins and the aggregator that fills them.
//!
//! [`Aggregator`] is the stateful fold from events to bins; it is what each parsing thread owns.
//! [`Aggregates`] is its finished, serializable result; partial results merge with
//! [`Aggregates::merge`], which is how parallel parsing (and later, scale-out) combines work.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::classify::{Class, ClassifyConfig};
use crate::dedup::{Mark, Marks, Meter};
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// The events of the bin while it is open, so that copies are found however the bin was
    /// split (see [`crate::dedup`]); dropped once the bin is complete.
    // Always written, even empty: the live journal is postcard, which cannot skip a field.
    #[serde(default)]
    pub marks: Marks,
}

impl PartialEq for BinAgg {
    /// Two bins are equal when they hold the same traffic, whether or not either still keeps
    /// the marks of its events (bookkeeping for merging, not part of what the bin says).
    fn eq(&self, o: &Self) -> bool {
        self.rows == o.rows
            && self.classes == o.classes
            && self.seed == o.seed
            && self.sources == o.sources
            && self.prefixes == o.prefixes
            && self.top == o.top
            && self.allowed == o.allowed
    }
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
            marks: Marks::default(),
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
                marks: Marks::with_capacity(prev.marks.len()),
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
            marks: Marks::with_capacity(prev.marks.len()),
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
        // A projection is looked at, never merged: it needs no marks.
        b.marks = Marks::default();
        b
    }

    /// Adds what one event brings (`m`, with its counters `meter`).
    #[inline]
    fn apply(&mut self, m: &Mark, meter: Meter) {
        let w = m.weight;
        self.rows += w as u64;
        let ip = m.ip();
        let h = ip.map(hash_ip);
        if m.seed_count() {
            self.seed.count += w as u64;
            if let Some(h) = h {
                self.seed.sources.insert_hash(h, w);
            }
        }
        if m.seed_bytes() {
            self.seed.bytes += meter.bytes;
            self.seed.metered += 1;
        }
        if let Some(c) = m.count_class() {
            let ca = &mut self.classes[c as usize];
            ca.count += w as u64;
            if let (Some(h), Some(ip)) = (h, ip) {
                ca.sources.insert_hash(h, w);
                self.sources.insert_hash(h, w);
                self.prefixes.insert(ip.prefix(), w);
                self.top.insert(ip, w as u64);
            }
            if m.allowed() {
                self.allowed += w as u64;
            }
        }
        if let Some(c) = m.bytes_class() {
            let ca = &mut self.classes[c as usize];
            ca.bytes += meter.bytes;
            ca.packets += meter.packets;
            ca.metered += 1;
        }
    }

    /// Takes one event's [`BinAgg::apply`] back out, for a copy counted twice by a merge: the
    /// other copy is still in, so every count stays at least the event's weight and each
    /// source stays in its sketches with its exact count (see [`SourceSketch::withdraw`]).
    fn withdraw(&mut self, m: &Mark, meter: Meter) {
        let w = m.weight;
        self.rows = self.rows.saturating_sub(w as u64);
        let ip = m.ip();
        let h = ip.map(hash_ip);
        if m.seed_count() {
            self.seed.count = self.seed.count.saturating_sub(w as u64);
            if let Some(h) = h {
                self.seed.sources.withdraw(h, w);
            }
        }
        if m.seed_bytes() {
            self.seed.bytes = self.seed.bytes.saturating_sub(meter.bytes);
            self.seed.metered = self.seed.metered.saturating_sub(1);
        }
        if let Some(c) = m.count_class() {
            let ca = &mut self.classes[c as usize];
            ca.count = ca.count.saturating_sub(w as u64);
            if let (Some(h), Some(ip)) = (h, ip) {
                ca.sources.withdraw(h, w);
                self.sources.withdraw(h, w);
                self.prefixes.withdraw(hash_ip(ip.prefix()), w);
                self.top.withdraw(ip, w as u64);
            }
            if m.allowed() {
                self.allowed = self.allowed.saturating_sub(w as u64);
            }
        }
        if let Some(c) = m.bytes_class() {
            let ca = &mut self.classes[c as usize];
            ca.bytes = ca.bytes.saturating_sub(meter.bytes);
            ca.packets = ca.packets.saturating_sub(meter.packets);
            ca.metered = ca.metered.saturating_sub(1);
        }
    }

    pub fn merge(&mut self, o: &BinAgg) {
        self.merge_counting(o);
    }

    /// Folds `o` in and takes back out every event both held (found by their marks), so the
    /// result is the bin of the de-duplicated events of both. Returns how many there were.
    pub fn merge_counting(&mut self, o: &BinAgg) -> u64 {
        self.rows += o.rows;
        for (a, b) in self.classes.iter_mut().zip(&o.classes) {
            a.merge(b);
        }
        self.seed.merge(&o.seed);
        self.sources.merge(&o.sources);
        self.prefixes.merge(&o.prefixes);
        self.top.merge(&o.top);
        self.allowed += o.allowed;
        if o.marks.is_empty() {
            return 0;
        }
        let mut marks = std::mem::take(&mut self.marks);
        let found = marks.absorb(&o.marks, |m, meter| self.withdraw(m, meter));
        self.marks = marks;
        found
    }

    /// Drops the marks: the bin is complete, nothing more will be merged into it.
    pub fn forget_marks(&mut self) {
        self.marks = Marks::default();
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

/// The fingerprints of bins an aggregator handed on with [`Aggregator::take_all`] (a live
/// reader passes its partial bins on after every batch, marks dropped): kept for `horizon` of
/// event time, so a copy in a later batch is still found. Keys are kept per bin and forgotten
/// once the newest event seen is more than `horizon` past their bin. The batch run never hands
/// bins on that way; this stays empty there.
#[derive(Clone, Debug)]
struct Handed {
    horizon: Nanos,
    width: BinWidth,
    sets: BTreeMap<i64, FxHashSet<u64>>,
    newest: Nanos,
    /// The bin of `newest - horizon`: sets of older bins are dropped.
    floor: i64,
    /// Times below this (minus the horizon) are still in `floor`'s bin, so the floor only
    /// needs a division once per bin of event time, not per event.
    floor_end: Nanos,
}

impl Handed {
    fn new(horizon: Nanos, width: BinWidth) -> Self {
        let floor = width.index(Nanos::MIN);
        Handed {
            horizon,
            width,
            sets: BTreeMap::new(),
            newest: Nanos::MIN,
            floor,
            floor_end: bin_end(width, floor),
        }
    }

    /// True if an event with `key` in bin `bin` (`ts`'s) was handed on within the horizon.
    #[inline]
    fn remembers(&mut self, ts: Nanos, bin: i64, key: u64) -> bool {
        if self.sets.is_empty() {
            return false;
        }
        if ts > self.newest {
            self.newest = ts;
            let t = ts.saturating_sub(self.horizon);
            if t >= self.floor_end {
                let floor = self.width.index(t);
                if floor > self.floor {
                    // Keep this event's own bin even if it is older than the floor.
                    self.sets = self.sets.split_off(&floor.min(bin));
                }
                self.floor = floor;
                self.floor_end = bin_end(self.width, floor);
            }
        }
        self.sets.get(&bin).is_some_and(|s| s.contains(&key))
    }

    fn absorb(&mut self, bin: i64, keys: impl Iterator<Item = u64>) {
        if self.horizon > 0 {
            self.sets.entry(bin).or_default().extend(keys);
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
    /// Whether exact duplicates are dropped (each bin keeps its events' marks).
    dedup: bool,
    handed: Handed,
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
    /// An exact duplicate of an event its bin already holds (or, for a live reader, handed on
    /// within the duplicate horizon): dropped.
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
    /// Exact duplicates dropped: found on arrival, or found when two parts of a bin merged.
    pub duplicates: u64,
    /// Events dropped because their bin had already been sealed and handed on: they came more
    /// than the lateness horizon behind newer events (see `Sealer`).
    #[serde(default)]
    pub late: u64,
    /// Events aggregated without a duplicate check, because their bin already held
    /// [`Marks::CAP`] marks.
    #[serde(default)]
    pub unchecked: u64,
    /// Oldest and newest event time seen (`None` before the first event).
    pub min_ts: Option<Nanos>,
    pub max_ts: Option<Nanos>,
}

impl IngestStats {
    fn merge(&mut self, o: &IngestStats) {
        self.events += o.events;
        self.duplicates += o.duplicates;
        self.late += o.late;
        self.unchecked += o.unchecked;
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
    /// Default duplicate horizon of a live reader (see [`Aggregator::with_dedup_horizon`]): one
    /// hour of event time.
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
            dedup: true,
            handed: Handed::new(Self::DEFAULT_DEDUP_HORIZON, width),
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

    /// 0 turns de-duplication off. Otherwise every copy of an event whose bin is still held is
    /// dropped, and, for bins handed on with [`Aggregator::take_all`], every copy that comes
    /// within `horizon` of event time (behind the newest event seen).
    pub fn with_dedup_horizon(mut self, horizon: Nanos) -> Self {
        self.dedup = horizon > 0;
        self.handed = Handed::new(horizon, self.width);
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
        let bin_index = self.bin_index(ev.ts);
        if bin_index < self.sealed_below {
            // Seen: an event behind the horizon says the input is out of order, which holds
            // the sealing back (see `Sealer`).
            self.oldest_since = self.oldest_since.min(ev.ts);
            self.stats.late += 1;
            return Fate::Late;
        }
        let key = if self.dedup {
            let key = combine(
                combine(self.devices.name_hash(ev.device), ev.ts as u64),
                mix64(ev.report_id as u64),
            );
            if self.handed.remembers(ev.ts, bin_index, key) {
                self.stats.duplicates += 1;
                return Fate::Duplicate;
            }
            key
        } else {
            0
        };
        let mark = self.mark(ev);
        let meter = Meter {
            bytes: ev.bytes.unwrap_or(0),
            packets: ev.packets.unwrap_or(0),
        };
        let slot = self.slot(ev.device, bin_index);
        let bin = &mut self.bins[slot].1;
        if self.dedup {
            let full = bin.marks.len() >= Marks::CAP;
            if !bin.marks.insert(key, mark, meter) {
                self.stats.duplicates += 1;
                return Fate::Duplicate;
            }
            self.stats.unchecked += full as u64;
        }
        self.oldest_since = self.oldest_since.min(ev.ts);
        let s = &mut self.stats;
        s.events += 1;
        s.min_ts = opt_min(s.min_ts, Some(ev.ts));
        s.max_ts = opt_max(s.max_ts, Some(ev.ts));
        bin.apply(&mark, meter);
        Fate::Used
    }

    /// What `ev` brings to its bin under this aggregator's classification and profile.
    #[inline]
    fn mark(&self, ev: &Event) -> Mark {
        let verdict = self.classify.classify(ev);
        let mut mark = Mark::new(ev.weight.max(1), ev.remote_ip);
        if self.profile != Profile::Floodwatch {
            if verdict.seed_count {
                mark = mark.with_seed_count();
            }
            if verdict.seed_bytes && ev.bytes.is_some() {
                mark = mark.with_seed_bytes();
            }
        }
        if self.profile == Profile::SeedOnly {
            return mark;
        }
        if let Some(c) = verdict.count {
            mark = mark.with_count(c);
            if let Some(ip) = ev.remote_ip
                && !self.classify.allow.is_empty()
                && self.classify.allow.contains(ip)
            {
                mark = mark.with_allowed();
            }
        }
        if let Some(c) = verdict.bytes
            && (ev.bytes.is_some() || ev.packets.is_some())
        {
            mark = mark.with_bytes(c);
        }
        mark
    }

    /// Accounts for `n` of this aggregator's events found, when its sealed bins merged with
    /// another's, to be copies of events the other also counted (see [`crate::Sealer`]).
    pub fn count_merged_duplicates(&mut self, n: u64) {
        self.stats.events = self.stats.events.saturating_sub(n);
        self.stats.duplicates += n;
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
    /// each batch and lets the consumer decide what is late. Device names are kept, and the
    /// bins' fingerprints (for the duplicate horizon); the bins go without their marks. The
    /// result carries the stats gathered since the last call.
    pub fn take_all(&mut self) -> Aggregates {
        let mut bins: BTreeMap<BinKey, BinAgg> =
            std::mem::take(&mut self.bins).into_iter().collect();
        for (k, b) in bins.iter_mut() {
            if self.dedup {
                self.handed.absorb(k.bin, b.marks.fingerprints());
            }
            b.forget_marks();
        }
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

    /// Folds `other` in, remapping its device ids by name. Events both held (two parts of a bin
    /// read by different workers, say) are counted once, and in the stats as duplicates.
    pub fn merge(&mut self, other: Aggregates) {
        let stats = other.stats;
        self.stats.merge(&stats);
        let found = self.merge_bins(other);
        self.stats.events = self.stats.events.saturating_sub(found);
        self.stats.duplicates += found;
    }

    /// [`Aggregates::merge`] of the bins alone, the stats left as they are: returns how many
    /// events both held, for whoever keeps the stats (see [`crate::Sealer`]).
    pub fn merge_bins(&mut self, mut other: Aggregates) -> u64 {
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
        let mut found = 0;
        for (k, mut v) in std::mem::take(&mut other.bins) {
            let k = BinKey {
                device: remap[k.device as usize],
                bin: k.bin,
            };
            match self.bins.get_mut(&k) {
                Some(mine) => {
                    // Walk the smaller set of marks: either side's copy may stay.
                    if v.marks.len() > mine.marks.len() {
                        std::mem::swap(mine, &mut v);
                    }
                    found += mine.merge_counting(&v);
                }
                None => {
                    self.bins.insert(k, v);
                }
            }
        }
        found
    }

    /// Drops every bin's marks: the bins are complete (see [`BinAgg::forget_marks`]).
    pub fn forget_marks(&mut self) {
        for b in self.bins.values_mut() {
            b.forget_marks();
        }
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

    /// A copy is found while its bin is held, however far behind the newest event it comes;
    /// once its bin is sealed it is late.
    #[test]
    fn copies_are_found_while_their_bin_is_held() {
        let mut agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
            .with_dedup_horizon(600 * NANOS_PER_SEC);
        let mut fates = Vec::new();
        for &(s, rid) in &[(0i64, 1i64), (0, 1), (7200, 2), (0, 1)] {
            let e = make(&mut agg, 0, s, 0, 9, rid);
            fates.push(agg.add(&e));
        }
        use Fate::*;
        assert_eq!(fates, [Used, Duplicate, Used, Duplicate]);
        let hour = make(&mut agg, 0, 3600, 0, 9, 3).ts;
        agg.seal(BinWidth::FIVE_MINUTES.index(hour));
        let e = make(&mut agg, 0, 0, 0, 9, 1);
        assert_eq!(agg.add(&e), Late);
        let a = agg.finish();
        assert_eq!(
            (a.stats.events, a.stats.duplicates, a.stats.late),
            (2, 2, 1)
        );
    }

    /// A live reader hands its bins on after every batch: copies in later batches are found
    /// within the horizon (of event time behind the newest event), and forgotten beyond it.
    /// The bins go without their marks.
    #[test]
    fn handed_on_bins_remember_their_events_for_the_horizon() {
        let add = |agg: &mut Aggregator, s: i64, rid: i64| {
            let e = make(agg, 0, s, 0, 9, rid);
            agg.add(&e)
        };
        let mut agg = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
            .with_dedup_horizon(600 * NANOS_PER_SEC);
        assert_eq!(add(&mut agg, 0, 1), Fate::Used);
        let first = agg.take_all();
        assert!(first.bins.values().all(|b| b.marks.is_empty()));
        assert_eq!(add(&mut agg, 0, 1), Fate::Duplicate, "within the horizon");
        assert_eq!(add(&mut agg, 3600, 2), Fate::Used);
        agg.take_all();
        assert_eq!(add(&mut agg, 3600, 2), Fate::Duplicate);
        assert_eq!(add(&mut agg, 0, 1), Fate::Used, "an hour behind: forgotten");
        let mut off = Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
            .with_dedup_horizon(0);
        assert_eq!(add(&mut off, 0, 1), Fate::Used);
        assert_eq!(add(&mut off, 0, 1), Fate::Used, "0 turns it off");
    }

    /// Items made exact copies of each other by their identity: (device, second, rid) decide
    /// the rest of the row, so the same identity is always the same record.
    fn records(items: &[(u8, i64, u8, u16, i64)]) -> Vec<(u8, i64, u8, u16, i64)> {
        items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                let rid = (i % 97) as i64;
                (it.0, it.1, (rid % 5) as u8, (rid * 7 % 1500) as u16, rid)
            })
            .collect()
    }

    fn aggregate_with(items: &[(u8, i64, u8, u16, i64)], allow: bool, p: Profile) -> Aggregates {
        let mut cfg = ClassifyConfig::default();
        if allow {
            cfg.allow.add_cidr("198.51.0.0/24").unwrap();
        }
        let mut a = Aggregator::new(BinWidth::FIVE_MINUTES, cfg).with_profile(p);
        for &(d, s, k, src, rid) in items {
            let mut e = make(&mut a, d, s, k, src, rid);
            e.weight = 1 + (rid % 3) as u32;
            a.add(&e);
        }
        a.finish()
    }

    proptest! {
        /// Every aggregate of a bin made from parts that share events equals the bin of the
        /// de-duplicated events, whatever the split: events (with copies, rows that feed the
        /// seed rule, bytes, allow-listed sources, several weights) cut into two parts that
        /// overlap, aggregated apart and merged, directly or through serde, give what one
        /// aggregator gives, stats and marks included.
        #[test]
        fn split_and_merged_equals_one_shot(
            items in proptest::collection::vec(item(), 0..600),
            cut in 0usize..600,
            overlap in 0usize..200,
            allow in any::<bool>(),
            profile in prop::sample::select(vec![Profile::Full, Profile::SeedOnly, Profile::Floodwatch]),
            through_serde in any::<bool>(),
        ) {
            let items = records(&items);
            let cut = cut.min(items.len());
            let back = cut.saturating_sub(overlap);
            let whole = aggregate_with(&items, allow, profile);
            let mut a = aggregate_with(&items[back..], allow, profile);
            let mut b = aggregate_with(&items[..cut], allow, profile);
            if through_serde {
                a = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
                b = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
            }
            a.merge(b);
            // The overlap was read twice: its second reading is all duplicates.
            let twice = (cut - back) as u64;
            prop_assert_eq!(
                a.stats,
                IngestStats { duplicates: whole.stats.duplicates + twice, ..whole.stats }
            );
            let (got, want) = (a.by_name(), whole.by_name());
            prop_assert_eq!(&got, &want);
            for (k, v) in &want {
                prop_assert_eq!(&got[k].marks, &v.marks);
            }
        }

        /// Three aggregators reading interleaved parts of the same events (each event to one or
        /// more of them), sealed together: the sealed bins and the stats are the de-duplicated
        /// events', and the sealed bins carry no marks.
        #[test]
        fn sealed_parts_merge_to_the_deduplicated_bins(
            items in proptest::collection::vec((item(), 1u8..8), 0..400),
        ) {
            let owners: Vec<u8> = items.iter().map(|i| i.1).collect();
            let items = records(&items.iter().map(|i| i.0).collect::<Vec<_>>());
            let whole = aggregate_with(&items, false, Profile::Full);
            let mut aggs: Vec<Aggregator> = (0..3)
                .map(|_| Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default()))
                .collect();
            for (it, owner) in items.iter().zip(&owners) {
                for (j, a) in aggs.iter_mut().enumerate() {
                    if owner & (1 << j) != 0 {
                        let mut e = make(a, it.0, it.1, it.2, it.3, it.4);
                        e.weight = 1 + (it.4 % 3) as u32;
                        a.add(&e);
                    }
                }
            }
            let mut sealer = crate::Sealer::new(BinWidth::FIVE_MINUTES, Some(0));
            // A first stretch sets the newest time; the second moves the floor past it all.
            sealer.seal(aggs.iter_mut());
            for a in aggs.iter_mut() {
                let e = make(a, 0, 1_000_000, 0, 1, 10_000);
                a.add(&e);
            }
            let sealed = sealer.seal(aggs.iter_mut()).unwrap_or_else(|| Aggregates::empty(BinWidth::FIVE_MINUTES));
            prop_assert!(sealed.bins.values().all(|b| b.marks.is_empty()));
            // The newest event's bin is still open in all three: merged as a run's rest is.
            let mut rest = Aggregates::empty(BinWidth::FIVE_MINUTES);
            for a in aggs {
                rest.merge(a.finish());
            }
            let stats = rest.stats;
            prop_assert_eq!(rest.bins.len(), 1);
            prop_assert_eq!(rest.bins.values().next().map(|b| b.rows), Some(1));
            prop_assert_eq!(stats.events, whole.stats.events + 1);
            prop_assert_eq!(stats.duplicates, whole.stats.duplicates
                + owners.iter().map(|o| o.count_ones() as u64 - 1).sum::<u64>()
                + 2);
            prop_assert_eq!(sealed.by_name(), whole.by_name());
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
