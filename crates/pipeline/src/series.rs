//! Per-device, per-bin series of a batch run, for pictures: each vector group's connections
//! against the baseline the bin was judged by, distinct and new sources.
//!
//! Kept small on purpose (a few dozen bytes a bin, numbers as `f32`/`u32`), since a report
//! holds every device's every bin until it is written.

use std::collections::BTreeMap;

use floodwatch_core::BinAgg;
use floodwatch_detect::floodwatch::{DeviceState, FloodwatchConfig, Group};

/// One device's bin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub bin: i64,
    /// Connections per vector group ([`Group::ALL`] order: web, syn with failed, udp, icmp).
    pub counts: [u32; 4],
    /// Baseline median and spread per group when the bin was scored; `None` while the device
    /// had no baseline yet.
    pub expected: Option<[(f32, f32); 4]>,
    /// Distinct inbound sources (estimated above the sketch's exact range).
    pub distinct: u32,
    /// Of those, never seen on the device before (estimated from the share of its sample);
    /// `None` before the device had any history.
    pub new_sources: Option<u32>,
}

/// Every device's series; devices by name, points by bin.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesBook {
    devices: BTreeMap<String, Vec<Point>>,
}

fn sat(v: f64) -> u32 {
    v.round().clamp(0.0, u32::MAX as f64) as u32
}

impl SeriesBook {
    /// Records a bin as the detector is about to score it (`state`: the device's state
    /// before the bin).
    pub fn observe(
        &mut self,
        bin: i64,
        device: &str,
        agg: &BinAgg,
        state: Option<&DeviceState>,
        cfg: &FloodwatchConfig,
        per_day: i64,
    ) {
        let distinct = agg.sources.distinct();
        let point = Point {
            bin,
            counts: Group::ALL.map(|g| g.count(agg).min(u32::MAX as u64) as u32),
            expected: state
                .and_then(|s| s.expected(bin, cfg, per_day))
                .map(|e| e.map(|(m, s)| (m as f32, s as f32))),
            distinct: sat(distinct),
            new_sources: state
                .filter(|s| s.history_bins() > 0)
                .and_then(|s| s.new_source_share(agg))
                .map(|share| sat(share * distinct)),
        };
        match self.devices.get_mut(device) {
            Some(v) => v.push(point),
            None => {
                self.devices.insert(device.to_owned(), vec![point]);
            }
        }
    }

    /// Adds `other`'s points (say, of another part of the input); a bin both hold keeps
    /// `other`'s. Points stay in bin order.
    pub fn merge(&mut self, other: SeriesBook) {
        for (name, pts) in other.devices {
            match self.devices.get_mut(&name) {
                None => {
                    self.devices.insert(name, pts);
                }
                Some(mine) => {
                    let mut by_bin: BTreeMap<i64, Point> =
                        mine.drain(..).map(|p| (p.bin, p)).collect();
                    by_bin.extend(pts.into_iter().map(|p| (p.bin, p)));
                    *mine = by_bin.into_values().collect();
                }
            }
        }
    }

    /// Devices in name order with their points in bin order.
    pub fn devices(&self) -> impl Iterator<Item = (&str, &[Point])> {
        self.devices.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(bin: i64, web: u32) -> Point {
        Point {
            bin,
            counts: [web, 0, 0, 0],
            expected: None,
            distinct: 1,
            new_sources: None,
        }
    }

    fn book(rows: &[(&str, i64, u32)]) -> SeriesBook {
        let mut b = SeriesBook::default();
        for &(d, bin, web) in rows {
            b.devices
                .entry(d.to_owned())
                .or_default()
                .push(pt(bin, web));
        }
        b
    }

    #[test]
    fn merging_halves_gives_the_whole_in_bin_order() {
        let whole = book(&[("a", 1, 10), ("a", 2, 20), ("a", 3, 30), ("b", 2, 5)]);
        let mut first = book(&[("a", 1, 10), ("a", 3, 30)]);
        first.merge(book(&[("a", 2, 20), ("b", 2, 5)]));
        assert_eq!(first, whole);
        // The other way round, the same.
        let mut second = book(&[("a", 2, 20), ("b", 2, 5)]);
        second.merge(book(&[("a", 1, 10), ("a", 3, 30)]));
        assert_eq!(second, whole);
    }

    #[test]
    fn a_bin_in_both_keeps_the_merged_ones() {
        let mut a = book(&[("a", 1, 10)]);
        a.merge(book(&[("a", 1, 99)]));
        assert_eq!(a, book(&[("a", 1, 99)]));
    }

    #[test]
    fn observe_records_counts_and_no_baseline_for_a_new_device() {
        let mut agg = BinAgg::default();
        agg.classes[floodwatch_core::Class::Web as usize].count = 7;
        let cfg = FloodwatchConfig::default();
        let mut b = SeriesBook::default();
        b.observe(4, "dev", &agg, None, &cfg, 288);
        let (name, pts) = b.devices().next().expect("one device");
        assert_eq!(name, "dev");
        assert_eq!(pts[0].counts, [7, 0, 0, 0]);
        assert_eq!(pts[0].expected, None);
        assert_eq!(pts[0].new_sources, None);
    }
}
