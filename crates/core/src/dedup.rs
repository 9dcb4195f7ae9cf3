//! Exact duplicates, removed as a property of the bin.
//!
//! An exact duplicate is a second copy of a record: the same `DeviceName`, `Timestamp` and
//! `ReportId`, which together identify a Defender event. Every event a bin takes leaves a
//! [`Mark`] there under its fingerprint (a hash of those three): what the event added to the
//! bin. A copy read into the same bin finds the mark and is dropped. Two parts of a bin
//! aggregated apart (two reading threads, a file and its copy read by different workers) merge
//! by the union of their [`Marks`]: a fingerprint in both is an event the merged bin counts
//! twice, and its mark says exactly what to take back out (see `BinAgg::merge_counting`). So the
//! merged bin equals the bin of the de-duplicated events, however the events were split and in
//! whatever order they came, and a thread count or a shuffled copy cannot change a count.
//!
//! The window is the bin's life: a copy is found while its bin is still held. That is always, for
//! input read with every bin kept (`--lateness all`, or files read again because they were out
//! of order), and up to the lateness horizon behind the newest event for input read in time
//! order (a later copy is late, and counted so). Memory is bounded per bin: at most
//! [`Marks::CAP`] marks; events beyond it are aggregated unchecked (and counted as such). Bins
//! drop their marks once complete, before they are scored.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::classify::Class;
use crate::model::Ip;

/// What one event added to its bin: its weight, its source and which of the bin's aggregates it
/// fed. Built once per event by the aggregator, which applies it to the bin; kept so that a copy
/// found when two parts of the bin merge can be taken back out exactly.
///
/// 24 bytes, so a mark with its fingerprint is 32: the address is kept as two words rather than
/// a `u128`, whose 16-byte alignment would pad each entry to 48.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    ip: [u64; 2],
    /// The weight added (the row's `uniqueEventsAggregated`, at least 1).
    pub weight: u32,
    bits: u32,
}

/// Bits of [`Mark::bits`]: the class fed with a connection (3 bits, class + 1, 0 for none), the
/// class fed with bytes (likewise), then flags.
const COUNT_SHIFT: u32 = 0;
const BYTES_SHIFT: u32 = 3;
const CLASS_MASK: u32 = 0b111;
const SEED_COUNT: u32 = 1 << 6;
const SEED_BYTES: u32 = 1 << 7;
const HAS_IP: u32 = 1 << 8;
const ALLOWED: u32 = 1 << 9;
const METERED: u32 = 1 << 10;

impl Mark {
    /// An event of `weight` from `ip` that fed nothing yet; the `with_*` methods say what it fed.
    #[inline]
    pub fn new(weight: u32, ip: Option<Ip>) -> Self {
        match ip {
            Some(ip) => Mark {
                ip: [(ip.0 >> 64) as u64, ip.0 as u64],
                weight,
                bits: HAS_IP,
            },
            None => Mark {
                ip: [0, 0],
                weight,
                bits: 0,
            },
        }
    }

    /// Counted as a connection of class `c` (its source in the class's and the bin's sketches).
    #[inline]
    pub fn with_count(mut self, c: Class) -> Self {
        self.bits |= (c as u32 + 1) << COUNT_SHIFT;
        self
    }

    /// Its bytes and packets counted towards class `c`.
    #[inline]
    pub fn with_bytes(mut self, c: Class) -> Self {
        self.bits |= ((c as u32 + 1) << BYTES_SHIFT) | METERED;
        self
    }

    /// Counted by the seed rule (its source in the seed rule's sketch).
    #[inline]
    pub fn with_seed_count(mut self) -> Self {
        self.bits |= SEED_COUNT;
        self
    }

    /// Its bytes counted in the seed rule's `TotalBytes`.
    #[inline]
    pub fn with_seed_bytes(mut self) -> Self {
        self.bits |= SEED_BYTES | METERED;
        self
    }

    /// From an allow-listed source (counted in the bin's `allowed`).
    #[inline]
    pub fn with_allowed(mut self) -> Self {
        self.bits |= ALLOWED;
        self
    }

    pub fn ip(&self) -> Option<Ip> {
        (self.bits & HAS_IP != 0).then(|| Ip(((self.ip[0] as u128) << 64) | self.ip[1] as u128))
    }

    pub fn count_class(&self) -> Option<Class> {
        class_of((self.bits >> COUNT_SHIFT) & CLASS_MASK)
    }

    pub fn bytes_class(&self) -> Option<Class> {
        class_of((self.bits >> BYTES_SHIFT) & CLASS_MASK)
    }

    pub fn seed_count(&self) -> bool {
        self.bits & SEED_COUNT != 0
    }

    pub fn seed_bytes(&self) -> bool {
        self.bits & SEED_BYTES != 0
    }

    pub fn allowed(&self) -> bool {
        self.bits & ALLOWED != 0
    }

    /// Whether it carried byte or packet counters (a [`Meter`] goes with it).
    pub fn metered(&self) -> bool {
        self.bits & METERED != 0
    }
}

fn class_of(code: u32) -> Option<Class> {
    code.checked_sub(1)
        .and_then(|i| Class::ALL.get(i as usize).copied())
}

/// The byte and packet counters a metered event added (0 for one it did not carry). Kept apart
/// from the marks: most rows carry none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub bytes: u64,
    pub packets: u64,
}

/// The marks of one bin: fingerprint to what the event added. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "MarksRepr", from = "MarksRepr")]
pub struct Marks {
    marks: FxHashMap<u64, Mark>,
    meters: FxHashMap<u64, Meter>,
    /// Events the bin took after it held [`Marks::CAP`] marks: not checked, and a merge cannot
    /// find their copies.
    unchecked: u64,
}

/// Sorted by fingerprint, so the same marks always serialize the same.
#[derive(Serialize, Deserialize)]
struct MarksRepr {
    marks: Vec<(u64, Mark)>,
    #[serde(default)]
    meters: Vec<(u64, Meter)>,
    #[serde(default)]
    unchecked: u64,
}

impl From<Marks> for MarksRepr {
    fn from(m: Marks) -> Self {
        let mut marks: Vec<(u64, Mark)> = m.marks.into_iter().collect();
        marks.sort_unstable_by_key(|e| e.0);
        let mut meters: Vec<(u64, Meter)> = m.meters.into_iter().collect();
        meters.sort_unstable_by_key(|e| e.0);
        MarksRepr {
            marks,
            meters,
            unchecked: m.unchecked,
        }
    }
}

impl From<MarksRepr> for Marks {
    fn from(r: MarksRepr) -> Self {
        Marks {
            marks: r.marks.into_iter().collect(),
            meters: r.meters.into_iter().collect(),
            unchecked: r.unchecked,
        }
    }
}

impl Marks {
    /// Marks a bin keeps at most: 1,048,576 events of one device in one bin (3,500 a second for
    /// five minutes), 32 MiB of marks at most. Beyond it a bin's events are not checked.
    pub const CAP: usize = 1 << 20;

    /// Room for `n` marks (a bin sized like its device's previous one), at most [`Self::CAP`].
    pub fn with_capacity(n: usize) -> Self {
        Marks {
            marks: FxHashMap::with_capacity_and_hasher(n.min(Self::CAP), Default::default()),
            ..Marks::default()
        }
    }

    /// Records the event with fingerprint `fp`, unless the bin already holds it: false then (a
    /// duplicate). When the bin is full the event is taken unchecked.
    #[inline]
    pub fn insert(&mut self, fp: u64, mark: Mark, meter: Meter) -> bool {
        if self.marks.len() >= Self::CAP {
            if self.marks.contains_key(&fp) {
                return false;
            }
            self.unchecked += 1;
            return true;
        }
        match self.marks.entry(fp) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(mark);
                if mark.metered() {
                    self.meters.insert(fp, meter);
                }
                true
            }
        }
    }

    /// Whether an event with fingerprint `fp` is marked here.
    pub fn contains(&self, fp: u64) -> bool {
        self.marks.contains_key(&fp)
    }

    /// Folds `other`'s marks in. Each fingerprint already here is an event counted on both
    /// sides: `withdraw` is called with what `other`'s copy added (to take it back out of the
    /// merged bin), and the number of such events is returned.
    pub fn absorb(&mut self, other: &Marks, mut withdraw: impl FnMut(&Mark, Meter)) -> u64 {
        let mut found = 0;
        self.unchecked += other.unchecked;
        self.marks.reserve(
            other
                .marks
                .len()
                .min(Self::CAP - self.marks.len().min(Self::CAP)),
        );
        for (&fp, mark) in &other.marks {
            let meter = || other.meters.get(&fp).copied().unwrap_or_default();
            if self.marks.contains_key(&fp) {
                found += 1;
                withdraw(mark, meter());
            } else if self.marks.len() < Self::CAP {
                self.marks.insert(fp, *mark);
                if mark.metered() {
                    self.meters.insert(fp, meter());
                }
            } else {
                self.unchecked += 1;
            }
        }
        found
    }

    /// Marks held.
    pub fn len(&self) -> usize {
        self.marks.len()
    }

    /// No mark and nothing unchecked: what a bin that dropped its marks holds.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty() && self.unchecked == 0
    }

    /// Events taken unchecked because the bin was full.
    pub fn unchecked(&self) -> u64 {
        self.unchecked
    }

    /// The fingerprints held, in no particular order.
    pub fn fingerprints(&self) -> impl Iterator<Item = u64> + '_ {
        self.marks.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mark(i: u64) -> (u64, Mark, Meter) {
        let ip = Ip::v4([198, 51, (i >> 8) as u8, i as u8]);
        let mut m = Mark::new(1 + (i % 3) as u32, (!i.is_multiple_of(7)).then_some(ip));
        if i.is_multiple_of(2) {
            m = m.with_count(Class::ALL[(i % 6) as usize]);
        }
        if i.is_multiple_of(5) {
            m = m.with_bytes(Class::Web).with_seed_bytes();
        }
        if i.is_multiple_of(4) {
            m = m.with_seed_count();
        }
        let meter = Meter {
            bytes: if m.metered() { 1000 + i } else { 0 },
            packets: if m.metered() { i } else { 0 },
        };
        (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), m, meter)
    }

    #[test]
    fn a_mark_says_what_it_fed() {
        let ip = Ip::v4([203, 0, 113, 7]);
        let m = Mark::new(3, Some(ip))
            .with_count(Class::OtherInbound)
            .with_bytes(Class::Web)
            .with_allowed();
        assert_eq!(m.ip(), Some(ip));
        assert_eq!(m.count_class(), Some(Class::OtherInbound));
        assert_eq!(m.bytes_class(), Some(Class::Web));
        assert!(m.allowed() && m.metered() && !m.seed_count() && !m.seed_bytes());
        let none = Mark::new(1, None).with_seed_count();
        assert_eq!(
            (none.ip(), none.count_class(), none.bytes_class()),
            (None, None, None)
        );
        assert!(none.seed_count() && !none.metered());
        let v6 = Ip::parse(b"2001:db8::ff:1").unwrap();
        assert_eq!(Mark::new(1, Some(v6)).ip(), Some(v6));
        assert_eq!(std::mem::size_of::<(u64, Mark)>(), 32);
    }

    #[test]
    fn a_second_copy_is_refused() {
        let mut m = Marks::default();
        let (fp, mk, me) = mark(5);
        assert!(m.insert(fp, mk, me));
        assert!(!m.insert(fp, mk, me));
        assert_eq!(m.len(), 1);
        assert!(m.contains(fp));
    }

    proptest! {
        /// Marks of any events split between two sides in any way (copies on both sides,
        /// several copies on one) merge to the marks of all of them read in one go, and the
        /// merge names each event that was on both sides with what that side's copy added.
        /// The same through serde.
        #[test]
        fn split_then_absorbed_equals_one_shot(
            events in proptest::collection::vec((0u64..300, 0u8..3), 0..400),
            through_serde in any::<bool>(),
        ) {
            let mut one = Marks::default();
            let (mut a, mut b) = (Marks::default(), Marks::default());
            for &(i, side) in &events {
                let (fp, mk, me) = mark(i);
                one.insert(fp, mk, me);
                // Side 2: both.
                if side != 1 { a.insert(fp, mk, me); }
                if side != 0 { b.insert(fp, mk, me); }
            }
            if through_serde {
                a = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
                b = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
            }
            let both: std::collections::BTreeSet<u64> =
                a.fingerprints().filter(|&f| b.contains(f)).collect();
            let mut withdrawn = Vec::new();
            let found = a.absorb(&b, |m, me| withdrawn.push((*m, me)));
            prop_assert_eq!(found as usize, both.len());
            let mut expected: Vec<(Mark, Meter)> = both
                .iter()
                .map(|&f| events.iter().map(|e| mark(e.0)).find(|m| m.0 == f).unwrap())
                .map(|(_, mk, me)| (mk, me))
                .collect();
            let key = |e: &(Mark, Meter)| (e.0.weight, e.0.bits, e.0.ip, e.1.bytes, e.1.packets);
            expected.sort_by_key(key);
            withdrawn.sort_by_key(key);
            prop_assert_eq!(withdrawn, expected);
            prop_assert_eq!(&a, &one);
            let again: Marks = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
            prop_assert_eq!(again, one);
        }
    }
}
