//! What to simulate: a profile with its defaults, and the few knobs a user turns.

use std::str::FromStr;

use floodwatch_core::time::{NANOS_PER_HOUR, Nanos};

use crate::SimError;

/// A preset of devices, duration, volume and scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimProfile {
    /// Three days of eight devices with every labelled scenario (see the crate docs). Normal
    /// bins carry tens to a few hundred inbound connections, attacks thousands, so a whole
    /// dataset aggregates in about a second.
    Scenarios,
    /// Five days of fifteen devices: every `scenarios` scenario where it is there, plus the
    /// attacks that hide in legitimate traffic (a residential-proxy flood, a flood during a
    /// flash sale, a campaign over three days) and the cases only a detector's hard paths
    /// catch (low-and-slow below 2x, carpet bombing at 1.4x, an attack minutes after a device
    /// first reports, a slow ramp), mixed benign surges, a sensor outage, aggregated-report
    /// rows, and rows written out of order by up to 90 s (see the crate docs).
    Hard,
    /// The benchmark dataset: six devices, 26 hours, about 2.5 million records at scale 1.0
    /// (about 690 bytes each as NDJSON), mostly inbound web traffic, and one HTTPS flood in the
    /// last hour so the seed rule has alert rows to return.
    Bench,
}

impl FromStr for SimProfile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "scenarios" => Ok(SimProfile::Scenarios),
            "hard" => Ok(SimProfile::Hard),
            "bench" => Ok(SimProfile::Bench),
            _ => Err(format!(
                "unknown simulation profile {s:?} (expected scenarios, hard or bench)"
            )),
        }
    }
}

impl SimProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            SimProfile::Scenarios => "scenarios",
            SimProfile::Hard => "hard",
            SimProfile::Bench => "bench",
        }
    }
}

/// 2025-12-22T00:00:00Z, a Monday (the day the La Poste attack began).
pub const DEFAULT_START: Nanos = 1_766_361_600 * 1_000_000_000;

/// Everything that decides a simulated dataset. The same config gives byte-identical output.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub profile: SimProfile,
    /// Seed of every random choice (default 1).
    pub seed: u64,
    /// Number of devices (default 8 for `scenarios`, 15 for `hard`, 6 for `bench`). Devices
    /// are taken in a fixed order (web01..web04, api01, mail01, then the late-appearing web05
    /// and shop01, then more web servers; `hard` puts portal01 and store01 before those); a
    /// scenario whose device is not simulated is left out.
    pub devices: usize,
    /// Length of the dataset in hours (default 72 for `scenarios`, 120 for `hard`, 26 for
    /// `bench`). Scenarios that would end after it are left out.
    pub hours: u32,
    /// Start of the dataset, nanoseconds since the epoch; floored to a 5-minute boundary
    /// (default 2025-12-22T00:00:00Z, a Monday).
    pub start: Nanos,
    /// Multiplies every event volume, normal and attack alike (default 1.0).
    pub scale: f64,
    /// Records per Event Hubs message in the `eventhubs` format (default 100).
    pub batch: usize,
    /// Largest arrival disorder of written rows, seconds (default 90 for `hard`, 0
    /// otherwise): rows are written in the order interleaved Event Hubs partitions deliver
    /// them, so a row may come after rows up to this much newer than it; timestamps stay true.
    /// The in-memory path ([`crate::aggregate`]) is unaffected (aggregates do not depend on
    /// order). At most 3600.
    pub disorder_secs: u32,
    /// Tenant id written in streaming envelopes and Sentinel's `TenantId` column.
    pub tenant_id: String,
}

impl SimConfig {
    /// The profile's defaults.
    pub fn new(profile: SimProfile) -> Self {
        let (devices, hours, disorder_secs) = match profile {
            SimProfile::Scenarios => (8, 72, 0),
            SimProfile::Hard => (15, 120, 90),
            SimProfile::Bench => (6, 26, 0),
        };
        SimConfig {
            profile,
            seed: 1,
            devices,
            hours,
            start: DEFAULT_START,
            scale: 1.0,
            batch: 100,
            disorder_secs,
            tenant_id: "8f6d2c1e-4b7a-4e59-9c3d-2a1b0e7f5d43".to_owned(),
        }
    }

    /// Rejects values that cannot make a dataset.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.devices == 0 || self.devices > 1000 {
            return Err(SimError::Config(format!(
                "devices must be 1..=1000, got {}",
                self.devices
            )));
        }
        if self.hours == 0 || self.hours > 24 * 366 {
            return Err(SimError::Config(format!(
                "hours must be 1..=8784, got {}",
                self.hours
            )));
        }
        if !(self.scale.is_finite() && self.scale > 0.0 && self.scale <= 1000.0) {
            return Err(SimError::Config(format!(
                "scale must be in (0, 1000], got {}",
                self.scale
            )));
        }
        if self.batch == 0 {
            return Err(SimError::Config("batch must be at least 1".to_owned()));
        }
        if self.disorder_secs > 3600 {
            return Err(SimError::Config(format!(
                "disorder must be at most 3600 seconds, got {}",
                self.disorder_secs
            )));
        }
        Ok(())
    }

    /// Dataset end (exclusive).
    pub fn end(&self) -> Nanos {
        self.start_aligned() + self.hours as i64 * NANOS_PER_HOUR
    }

    pub(crate) fn start_aligned(&self) -> Nanos {
        let w = crate::generate::SLOT;
        self.start.div_euclid(w) * w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_by_name() {
        for p in [SimProfile::Scenarios, SimProfile::Hard, SimProfile::Bench] {
            assert_eq!(p.as_str().parse::<SimProfile>(), Ok(p));
        }
        let e = "hardest".parse::<SimProfile>().unwrap_err();
        assert!(e.contains("scenarios, hard or bench"), "{e}");
        let hard = SimConfig::new(SimProfile::Hard);
        assert_eq!(
            (hard.devices, hard.hours, hard.disorder_secs),
            (15, 120, 90)
        );
        assert_eq!(SimConfig::new(SimProfile::Scenarios).disorder_secs, 0);
        let mut c = hard;
        c.disorder_secs = 3601;
        assert!(c.validate().unwrap_err().to_string().contains("disorder"));
    }
}
