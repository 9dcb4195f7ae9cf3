//! Sealing: handing bins on once no more events are expected for them, so that state stays
//! bounded by the bins still open instead of growing with the input.
//!
//! Input comes in stretches (a window of a file, a block of a stream); after each, the
//! [`Sealer`] looks at the event times the stretch brought and moves a *floor* forward: every bin
//! below it is taken out of the aggregators, merged, and handed to whoever consumes complete bins
//! (the detector). An event for a bin below the floor is then *late*: it is dropped and counted
//! ([`crate::IngestStats::late`], and by the reader with where it was).
//!
//! The floor is the bin of `oldest - lateness`, where `oldest` is the oldest event time of the
//! last stretch, and it only moves when the newest event time so far grew during a stretch after
//! the first. An event is thus late only when it is more than `lateness` older than *every*
//! event of some earlier stretch. So:
//! - input in time order (as Defender writes it: Event Hubs, Storage exports read in path order)
//!   keeps about `lateness` plus one stretch of bins open, and events up to `lateness` out of
//!   order still count;
//! - input in reverse order (a portal export sorted newest first) never moves the floor: the
//!   newest time is set by the first stretch and never grows;
//! - shuffled input hardly moves it: every stretch reaches back to the oldest times.
//!
//! The floor depends only on event times per stretch, not on how a stretch was split between
//! threads, so one thread and many seal the same bins.

use crate::bins::{Aggregates, Aggregator};
use crate::time::{BinWidth, Nanos};

/// Decides when bins are complete; see the module documentation.
#[derive(Clone, Debug)]
pub struct Sealer {
    width: BinWidth,
    /// `None`: never seal (every bin is kept to the end).
    lateness: Option<Nanos>,
    /// Bins below this index have been handed on.
    floor: i64,
    newest: Option<Nanos>,
    /// Sealed bins being merged across aggregators before they are handed on.
    pending: Aggregates,
}

impl Sealer {
    /// `lateness`: how far behind the newest event time an event may come and still count;
    /// `None` keeps every bin until the end (exact for input in any order, memory grows with it).
    pub fn new(width: BinWidth, lateness: Option<Nanos>) -> Self {
        Sealer {
            width,
            lateness: lateness.map(|l| l.max(0)),
            floor: i64::MIN,
            newest: None,
            pending: Aggregates::empty(width),
        }
    }

    /// The first bin index not yet sealed (`i64::MIN` before anything was).
    pub fn floor(&self) -> i64 {
        self.floor
    }

    /// Call after each stretch of input with every aggregator that may have taken part in it.
    /// Returns the bins that became complete, merged across the aggregators (no stats), or
    /// `None` when the floor did not move.
    pub fn seal<'a>(
        &mut self,
        aggs: impl IntoIterator<Item = &'a mut Aggregator>,
    ) -> Option<Aggregates> {
        let mut aggs: Vec<&'a mut Aggregator> = aggs.into_iter().collect();
        let mut oldest: Option<Nanos> = None;
        let mut newest = self.newest;
        for a in aggs.iter_mut() {
            if let Some((o, n)) = a.take_span() {
                oldest = Some(oldest.map_or(o, |x| x.min(o)));
                newest = Some(newest.map_or(n, |x| x.max(n)));
            }
        }
        let grew = matches!((self.newest, newest), (Some(before), Some(now)) if now > before);
        self.newest = newest;
        let (Some(lateness), Some(oldest), true) = (self.lateness, oldest, grew) else {
            return None;
        };
        let below = self.width.index(oldest.saturating_sub(lateness));
        if below <= self.floor {
            return None;
        }
        self.floor = below;
        for a in aggs {
            // Copies of one event read by two aggregators meet here: each found is taken off
            // the events of the aggregator whose part brought the second copy.
            let found = self.pending.merge_bins(a.seal(below));
            a.count_merged_duplicates(found);
        }
        let mut done = self.pending.split_below(below);
        // Complete: nothing more merges into these bins, so their marks can go.
        done.forget_marks();
        (!done.bins.is_empty()).then_some(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bins::Fate;
    use crate::classify::ClassifyConfig;
    use crate::model::{ActionType, Direction, Event, Ip, Protocol};
    use crate::time::{NANOS_PER_MIN, NANOS_PER_SEC};

    const T0: Nanos = 1_766_361_600 * NANOS_PER_SEC;

    fn agg() -> Aggregator {
        Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default())
    }

    fn event(a: &mut Aggregator, device: &str, minute: i64, src: u32, rid: i64) -> Event {
        Event {
            ts: T0 + minute * NANOS_PER_MIN,
            device: a.device(device),
            action: ActionType::InboundConnectionAccepted,
            protocol: Protocol::Tcp,
            direction: Direction::In,
            remote_ip: Some(Ip::v4(src.to_be_bytes())),
            remote_port: Some(50_000),
            local_port: Some(443),
            report_id: rid,
            weight: 1,
            bytes: None,
            packets: None,
            tcp_flags: None,
        }
    }

    /// Feeds `minutes` in stretches of `stretch` events, alternating between two aggregators,
    /// sealing after each stretch; returns every sealed chunk and what was left, merged.
    fn feed(minutes: &[i64], stretch: usize, lateness: Option<Nanos>) -> (Aggregates, u64, usize) {
        let mut a = [agg(), agg()];
        let mut sealer = Sealer::new(BinWidth::FIVE_MINUTES, lateness);
        let mut out = Aggregates::empty(BinWidth::FIVE_MINUTES);
        let mut chunks = 0;
        for (n, part) in minutes.chunks(stretch).enumerate() {
            for (i, &m) in part.iter().enumerate() {
                let w = &mut a[i % 2];
                let dev = if m % 2 == 0 { "web01" } else { "web02" };
                let ev = event(
                    w,
                    dev,
                    m,
                    (m as u32) * 7 + i as u32,
                    (n * stretch + i) as i64,
                );
                w.add(&ev);
            }
            if let Some(done) = sealer.seal(a.iter_mut()) {
                // Chunks come in time order: nothing in a later one is below an earlier floor.
                assert!(done.bins.keys().all(|k| k.bin < sealer.floor()));
                chunks += 1;
                out.merge(done);
            }
        }
        let [x, y] = a;
        out.merge(x.finish());
        out.merge(y.finish());
        let late = out.stats.late;
        (out, late, chunks)
    }

    #[test]
    fn in_order_input_seals_as_it_goes_and_changes_nothing() {
        let minutes: Vec<i64> = (0..600).collect();
        let (all, late, chunks) = feed(&minutes, 40, None);
        assert_eq!((late, chunks), (0, 0));
        let (sealed, late, chunks) = feed(&minutes, 40, Some(60 * NANOS_PER_MIN));
        assert_eq!(late, 0);
        assert!(chunks >= 10, "sealed {chunks} times");
        assert_eq!(sealed.by_name(), all.by_name());
        assert_eq!(sealed.stats, all.stats);
    }

    #[test]
    fn jitter_within_the_horizon_is_not_late() {
        // Each stretch of 40 minutes is reversed: up to 39 minutes out of order.
        let minutes: Vec<i64> = (0..600)
            .collect::<Vec<_>>()
            .chunks(40)
            .flat_map(|c| c.iter().rev().copied().collect::<Vec<_>>())
            .collect();
        let (all, _, _) = feed(&minutes, 40, None);
        let (sealed, late, chunks) = feed(&minutes, 40, Some(60 * NANOS_PER_MIN));
        assert_eq!(late, 0);
        assert!(chunks > 0);
        assert_eq!(sealed.by_name(), all.by_name());
    }

    #[test]
    fn reverse_and_shuffled_input_seal_nothing_and_lose_nothing() {
        let reversed: Vec<i64> = (0..600).rev().collect();
        let (all, _, _) = feed(&reversed, 40, None);
        let (sealed, late, chunks) = feed(&reversed, 40, Some(60 * NANOS_PER_MIN));
        assert_eq!((late, chunks), (0, 0));
        assert_eq!(sealed.by_name(), all.by_name());
        // A seeded shuffle: every stretch of 100 reaches back near the start.
        let mut shuffled: Vec<i64> = (0..600).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let (sealed, late, _) = feed(&shuffled, 100, Some(60 * NANOS_PER_MIN));
        assert_eq!(late, 0);
        assert_eq!(sealed.stats.events, 600);
    }

    #[test]
    fn an_event_behind_the_horizon_is_late_and_counted() {
        let mut minutes: Vec<i64> = (0..300).collect();
        // Two hours behind, after 4 h of in-order input.
        minutes.push(120);
        minutes.extend(300..340);
        let (sealed, late, _) = feed(&minutes, 40, Some(60 * NANOS_PER_MIN));
        assert_eq!(late, 1);
        assert_eq!(sealed.stats.events, 340);
        let mut a = agg();
        let ev = event(&mut a, "web01", 200, 1, 1);
        a.add(&ev);
        let _ = a.seal(BinWidth::FIVE_MINUTES.index(ev.ts) + 1);
        let again = event(&mut a, "web01", 200, 2, 2);
        assert_eq!(a.add(&again), Fate::Late);
        let newer = event(&mut a, "web01", 205, 2, 3);
        assert_eq!(a.add(&newer), Fate::Used);
    }
}
