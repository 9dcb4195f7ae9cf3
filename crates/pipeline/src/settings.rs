//! What a run needs to know, validated: the command line and the config file are parsed into
//! these by the binary.

use floodwatch_core::time::Nanos;
use floodwatch_core::{Aggregator, BinWidth, ClassifyConfig, Profile};
use floodwatch_detect::floodwatch::FloodwatchConfig;
use floodwatch_detect::seed::SeedParams;
use floodwatch_ingest::IngestOptions;

/// Which rule scores the bins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// floodwatch's own detector.
    Floodwatch,
    /// The seed Sentinel rule's intent, implemented correctly.
    Seed,
}

/// Everything needed to read input and detect, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    pub rule: Rule,
    pub width: BinWidth,
    pub classify: ClassifyConfig,
    pub ingest: IngestOptions,
    /// Exact duplicates within this much event time are dropped (0: off).
    pub dedup: Nanos,
    pub seed: SeedParams,
    pub floodwatch: FloodwatchConfig,
}

impl Settings {
    /// What the rule reads of each event.
    pub fn profile(&self) -> Profile {
        match self.rule {
            Rule::Seed => Profile::SeedOnly,
            Rule::Floodwatch => Profile::Floodwatch,
        }
    }

    /// An aggregator for one reading thread, at `width` (the bin width, or a live sub-window).
    pub fn aggregator(&self, width: BinWidth) -> Aggregator {
        Aggregator::new(width, self.classify.clone())
            .with_profile(self.profile())
            .with_dedup_horizon(self.dedup)
    }
}

/// When to score, as the user asked.
#[derive(Clone, Copy, Debug, Default)]
pub struct Query {
    /// Seed rule: evaluate at this bin boundary (default: the bin holding the newest event).
    pub now: Option<Nanos>,
    pub since: Option<Nanos>,
    pub until: Option<Nanos>,
    /// Score from the first event's bin on (as `since`, known only once all is read).
    pub since_first_event: bool,
}
