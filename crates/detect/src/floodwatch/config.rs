//! Settings of the floodwatch detector (`[floodwatch]` in the config file).
//!
//! Every field has a default that passed the simulated acceptance runs; the doc comment of each
//! field is its user documentation (unit and default). [`FloodwatchConfig::validate`] checks
//! values and compiles the maintenance windows into [`CompiledWindows`].

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use floodwatch_core::time::{Nanos, parse_rfc3339};

/// A planned surge: maintenance, a load test, a launch. Alerts on matching devices inside the
/// window are still emitted, marked suppressed with `reason`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Device name or glob pattern (`*`, `?`, `[abc]`, `{a,b}`), case-insensitive, e.g.
    /// `"web*.contoso.com"`.
    pub devices: String,
    /// Start, RFC 3339 (`2025-12-22T09:00:00Z`), inclusive.
    pub start: String,
    /// End, RFC 3339, exclusive.
    pub end: String,
    /// Why: shown in `SuppressionReason`, e.g. `"quarterly load test"`.
    #[serde(default)]
    pub reason: String,
}

/// What the suppression rules do with an alert they explain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SuppressMode {
    /// Mark it suppressed.
    #[default]
    Apply,
    /// Emit it unsuppressed, naming the reason it would have been suppressed.
    LogOnly,
}

impl SuppressMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "apply" => Ok(SuppressMode::Apply),
            "log-only" => Ok(SuppressMode::LogOnly),
            _ => Err(format!(
                "unknown suppression mode {s:?}: expected apply or log-only"
            )),
        }
    }
}

/// Detector settings. Counts are connections per bin (5 minutes by default); shares are 0..1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodwatchConfig {
    /// Days of per-bin history kept per device for seasonal baselines. Default `14`.
    pub baseline_days: u32,
    /// Same-time-of-day slots used on each earlier day: the slot itself and this many bins on
    /// either side (absorbs small shifts of the daily curve). Default `1`.
    pub seasonal_halfwidth: u32,
    /// With at least this many days of history, compare with the same time of *week* (days
    /// 7, 14, ... back, two bins either side) instead of every earlier day. Default `14`.
    pub weekly_after_days: u32,
    /// Fewest clean (unflagged) seasonal points for a seasonal baseline; fewer means the
    /// trailing short-term baseline alone is used. Default `3`.
    pub min_seasonal_points: u32,
    /// Length of the trailing short-term baseline, in bins. Default `12` (one hour).
    pub short_term_bins: u32,
    /// Warm-up: with fewer clean bins of history than this, a device is "cold" and only
    /// absolute evidence (the `cold_*` thresholds) can raise an alert. Default `6`.
    pub warmup_bins: u32,
    /// One-bin test: a vector's connections must reach this multiple of its baseline. Default `3.0`.
    pub rate_ratio: f64,
    /// The same multiple when most of the excess comes from new sources (see `novel_share`):
    /// a flood by fresh sources is suspicious sooner than a rise of regulars. Default `2.0`.
    pub novel_rate_ratio: f64,
    /// Share of a vector's excess connections that must come from sources never seen on the
    /// device before for the surge to count as an attack and not a flash crowd. Default `0.5`.
    pub novel_share: f64,
    /// One-bin test: robust z-score (excess over the scaled MAD) the bin must also reach.
    /// Default `6.0`.
    pub z_threshold: f64,
    /// One-bin test: the excess must also be at least this many connections. Default `100`.
    pub min_excess: f64,
    /// Distinct sources a vector needs in the bin to be a *distributed* flood. Default `20`.
    pub min_sources: u64,
    /// Floor of the baseline spread, as a share of the expected value (stops a very regular
    /// history from making tiny wobbles significant). Default `0.1`.
    pub spread_floor: f64,
    /// CUSUM allowance: relative excess per bin (observed / expected - 1) that is ignored.
    /// Default `0.4`.
    pub cusum_k: f64,
    /// CUSUM decision threshold on the accumulated relative excess. Default `2.5` (a steady
    /// 2.5x surge crosses it in the second bin, 1.75x in about seven bins).
    pub cusum_h: f64,
    /// Cold devices: connections of one vector in one bin needed to alert. Default `5000`.
    pub cold_min_count: u64,
    /// Cold devices: distinct sources of that vector needed to alert. Default `1000`.
    pub cold_min_sources: u64,
    /// Cold devices: distinct /24 (/48) prefixes per distinct source needed: floods spread
    /// wide, customers cluster in access networks. Default `0.5`.
    pub cold_min_prefix_spread: f64,
    /// Days a source is remembered on a device for "never seen before". Default `7`.
    pub novelty_days: u32,
    /// Most source hashes remembered per device. Above it the history keeps a consistent
    /// hash-sample (adaptive threshold), so memory is bounded and novelty stays unbiased.
    /// Default `32768` (about 1 MB per device).
    pub max_history_sources: u32,
    /// The top source carrying at least this share of the excess makes a surge a single-source
    /// surge (a monitor or scanner), suppressed. Default `0.5`.
    pub single_source_share: f64,
    /// The same test for a handful of sources: the top this-many sources together carrying
    /// `single_source_share` of the excess make a few-source surge (load generators, a
    /// scanner farm), suppressed. At most 32 (the top-talker summary's size). Default `10`.
    pub dominant_sources: usize,
    /// Allow-listed sources (`--allow-source`) carrying at least this share of the excess make
    /// a surge a load test, suppressed. Default `0.5`.
    pub allowed_share: f64,
    /// A returning source making at least this multiple of its own largest clean-bin count is
    /// *hot*: seen before, but not behaving like itself (a residential proxy or a compromised
    /// customer router). Hot sources count with new ones against the flash-crowd suppression.
    /// Default `10.0`.
    pub hot_source_ratio: f64,
    /// ... and at least this many connections in the bin. Default `30`.
    pub hot_source_min: u64,
    /// Surge on surge: during a suppressed flash crowd, a bin rising at least this share above
    /// the crowd's recent level, with most of the step from new or hot sources, is an attack on
    /// top of the crowd. Default `0.15`.
    pub surge_step_ratio: f64,
    /// How many bins a flash crowd's level is remembered after its last suppressed bin (the
    /// level stays frozen, and remembered, while an attack on top of it goes on). Default `3`.
    pub surge_hold_bins: u32,
    /// `apply` (default): alerts that a suppression rule explains are emitted with
    /// `Suppressed: true`. `log-only`: they are emitted unsuppressed, with the reason they would
    /// have been suppressed in `WouldSuppressReason`, to trial the detector before trusting its
    /// suppressions.
    pub suppress: SuppressMode,
    /// Carpet bombing: at least this many devices rising together in one bin. Default `3`.
    pub carpet_min_devices: u32,
    /// Carpet bombing: the per-device rise (multiple of baseline) that counts when many devices
    /// rise together. Default `1.5`.
    pub carpet_rate_ratio: f64,
    /// Carpet bombing spread thinner: at least `carpet_wide_devices` devices each rising this
    /// multiple (two spreads above the baseline, mostly new sources). Default `1.25`.
    pub carpet_wide_ratio: f64,
    /// Default `5`.
    pub carpet_wide_devices: u32,
    /// Sustained rise: `sustained_bins` bins in a row at this multiple of the baseline with
    /// `sustained_novel_share` of the excess from new or hot sources alert (a slow flood below
    /// the one-bin thresholds, sooner than the CUSUM). Default `1.5`.
    pub sustained_ratio: f64,
    /// Default `0.8`.
    pub sustained_novel_share: f64,
    /// Default `2`.
    pub sustained_bins: u32,
    /// A vector carrying less than this share of the excess makes the alert `mixed`. Default `0.6`.
    pub mixed_share: f64,
    /// Consecutive alert bins (or a second independent signal) needed for `High`. Default `2`.
    pub persistence_bins: u32,
    /// Bins without alert allowed inside one incident. Default `1`.
    pub incident_gap_bins: u32,
    /// Maintenance and load-test windows.
    pub windows: Vec<Window>,
    /// Pulse waves: unsuppressed alert runs of one device with the same vector, at most this
    /// many minutes of quiet apart, are one incident listing each pulse. Default `30`.
    pub pulse_gap_minutes: u32,
    /// Campaigns: an attack incident starting at most this many hours after the last alert
    /// bin of an earlier one, on the same device or sharing most of its top sources, carries
    /// the earlier one's campaign id. Default `72`.
    pub campaign_gap_hours: u32,
    /// Campaigns: share of the shorter top-source list (of each incident's first complete
    /// unsuppressed bin) two incidents must have in common to be linked across devices.
    /// Default `0.6`.
    pub campaign_source_share: f64,
}

impl Default for FloodwatchConfig {
    fn default() -> Self {
        FloodwatchConfig {
            baseline_days: 14,
            seasonal_halfwidth: 1,
            weekly_after_days: 14,
            min_seasonal_points: 3,
            short_term_bins: 12,
            warmup_bins: 6,
            rate_ratio: 3.0,
            novel_rate_ratio: 2.0,
            novel_share: 0.5,
            z_threshold: 6.0,
            min_excess: 100.0,
            min_sources: 20,
            spread_floor: 0.1,
            cusum_k: 0.4,
            cusum_h: 2.5,
            cold_min_count: 5000,
            cold_min_sources: 1000,
            cold_min_prefix_spread: 0.5,
            novelty_days: 7,
            max_history_sources: 32_768,
            single_source_share: 0.5,
            dominant_sources: 10,
            allowed_share: 0.5,
            hot_source_ratio: 10.0,
            hot_source_min: 30,
            surge_step_ratio: 0.15,
            surge_hold_bins: 3,
            suppress: SuppressMode::Apply,
            carpet_min_devices: 3,
            carpet_rate_ratio: 1.5,
            carpet_wide_ratio: 1.25,
            carpet_wide_devices: 5,
            sustained_ratio: 1.5,
            sustained_novel_share: 0.8,
            sustained_bins: 2,
            mixed_share: 0.6,
            persistence_bins: 2,
            incident_gap_bins: 1,
            windows: Vec::new(),
            pulse_gap_minutes: 30,
            campaign_gap_hours: 72,
            campaign_source_share: 0.6,
        }
    }
}

/// A window with its times parsed and its glob compiled.
#[derive(Clone, Debug)]
pub struct CompiledWindow {
    matcher: GlobMatcher,
    start: Nanos,
    end: Nanos,
    reason: String,
    pattern: String,
}

/// All maintenance windows, ready to match.
#[derive(Clone, Debug, Default)]
pub struct CompiledWindows(Vec<CompiledWindow>);

impl CompiledWindows {
    /// The suppression reason if `device` is inside a window at time `t`.
    pub fn reason(&self, device: &str, t: Nanos) -> Option<String> {
        let w = self
            .0
            .iter()
            .find(|w| t >= w.start && t < w.end && w.matcher.is_match(device))?;
        let why = if w.reason.is_empty() {
            "planned"
        } else {
            &w.reason
        };
        Some(format!(
            "maintenance/load-test window ({why}) for devices \"{}\"",
            w.pattern
        ))
    }
}

fn check(name: &str, v: f64, lo: f64, hi: f64) -> Result<(), String> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(format!("floodwatch.{name} must be in {lo}..={hi}, got {v}"))
    }
}

impl FloodwatchConfig {
    /// Checks every value; errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        self.compile_windows().map(|_| ())?;
        check("rate_ratio", self.rate_ratio, 1.0, 1e6)?;
        check("novel_rate_ratio", self.novel_rate_ratio, 1.0, 1e6)?;
        check("carpet_rate_ratio", self.carpet_rate_ratio, 1.0, 1e6)?;
        check("carpet_wide_ratio", self.carpet_wide_ratio, 1.0, 1e6)?;
        check("sustained_ratio", self.sustained_ratio, 1.0, 1e6)?;
        check(
            "sustained_novel_share",
            self.sustained_novel_share,
            0.0,
            1.0,
        )?;
        check("novel_share", self.novel_share, 0.0, 1.0)?;
        check("single_source_share", self.single_source_share, 0.0, 1.0)?;
        check("allowed_share", self.allowed_share, 0.0, 1.0)?;
        check("hot_source_ratio", self.hot_source_ratio, 1.0, 1e9)?;
        check("surge_step_ratio", self.surge_step_ratio, 0.0, 1e6)?;
        check("mixed_share", self.mixed_share, 0.0, 1.0)?;
        check(
            "cold_min_prefix_spread",
            self.cold_min_prefix_spread,
            0.0,
            1.0,
        )?;
        check("spread_floor", self.spread_floor, 0.0, 1e6)?;
        check("z_threshold", self.z_threshold, 0.0, 1e6)?;
        check("min_excess", self.min_excess, 0.0, 1e12)?;
        check("cusum_k", self.cusum_k, 0.0, 1e6)?;
        check("cusum_h", self.cusum_h, f64::MIN_POSITIVE, 1e6)?;
        let positive = [
            ("baseline_days", self.baseline_days),
            ("weekly_after_days", self.weekly_after_days),
            ("novelty_days", self.novelty_days),
            ("short_term_bins", self.short_term_bins),
            ("carpet_min_devices", self.carpet_min_devices),
            ("carpet_wide_devices", self.carpet_wide_devices),
            ("sustained_bins", self.sustained_bins),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("floodwatch.{name} must be at least 1"));
            }
        }
        if self.baseline_days > 366 || self.novelty_days > 366 {
            return Err("floodwatch.baseline_days and novelty_days are at most 366".into());
        }
        if self.dominant_sources == 0 || self.dominant_sources > 32 {
            return Err(format!(
                "floodwatch.dominant_sources must be in 1..=32, got {}",
                self.dominant_sources
            ));
        }
        if self.max_history_sources < 16 {
            return Err(format!(
                "floodwatch.max_history_sources must be at least 16, got {}",
                self.max_history_sources
            ));
        }
        if self.rate_ratio < self.novel_rate_ratio {
            return Err(format!(
                "floodwatch.novel_rate_ratio ({}) must not exceed rate_ratio ({})",
                self.novel_rate_ratio, self.rate_ratio
            ));
        }
        check(
            "campaign_source_share",
            self.campaign_source_share,
            0.01,
            1.0,
        )?;
        // A campaign's memory must outlast a pulse wave's quiet (the live service forgets an
        // incident for linking once the campaign gap has passed since its last bin).
        if self.campaign_gap_hours > 366 * 24
            || u64::from(self.pulse_gap_minutes) > u64::from(self.campaign_gap_hours) * 60
        {
            return Err(format!(
                "floodwatch.pulse_gap_minutes ({}) must not exceed campaign_gap_hours ({}) x 60, which is at most {}",
                self.pulse_gap_minutes,
                self.campaign_gap_hours,
                366 * 24
            ));
        }
        Ok(())
    }

    /// Parses the windows' times and globs.
    pub fn compile_windows(&self) -> Result<CompiledWindows, String> {
        let mut out = Vec::with_capacity(self.windows.len());
        for (i, w) in self.windows.iter().enumerate() {
            let at = |field: &str, s: &str| {
                parse_rfc3339(s.trim().as_bytes()).map_err(|e| {
                    format!("floodwatch.windows[{i}].{field}: {e}: {s:?} (expected e.g. 2025-12-22T09:00:00Z)")
                })
            };
            let start = at("start", &w.start)?;
            let end = at("end", &w.end)?;
            if end <= start {
                return Err(format!(
                    "floodwatch.windows[{i}]: end {:?} is not after start {:?}",
                    w.end, w.start
                ));
            }
            let glob = globset::GlobBuilder::new(&w.devices)
                .case_insensitive(true)
                .literal_separator(false)
                .build()
                .map_err(|e| format!("floodwatch.windows[{i}].devices: {e}"))?;
            out.push(CompiledWindow {
                matcher: Glob::compile_matcher(&glob),
                start,
                end,
                reason: w.reason.clone(),
                pattern: w.devices.clone(),
            });
        }
        Ok(CompiledWindows(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn window(devices: &str, start: &str, end: &str) -> Window {
        Window {
            devices: devices.into(),
            start: start.into(),
            end: end.into(),
            reason: "load test".into(),
        }
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = FloodwatchConfig::default();
        c.validate().unwrap();
        let j = serde_json::to_string(&c).unwrap();
        let back: FloodwatchConfig = serde_json::from_str(&j).unwrap();
        assert_eq!(back, c);
        let partial: FloodwatchConfig = serde_json::from_str(r#"{"rate_ratio": 4.0}"#).unwrap();
        assert_eq!(partial.rate_ratio, 4.0);
        assert_eq!(partial.novelty_days, 7);
        let unknown = serde_json::from_str::<FloodwatchConfig>(r#"{"rate_ratoi": 4.0}"#);
        assert!(unknown.unwrap_err().to_string().contains("rate_ratoi"));
    }

    #[test]
    fn bad_values_name_the_field() {
        let c = FloodwatchConfig {
            novel_share: 1.5,
            ..FloodwatchConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("novel_share"));
        let c = FloodwatchConfig {
            windows: vec![window("web*", "tomorrow", "2025-12-22T10:00:00Z")],
            ..FloodwatchConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("windows[0].start"));
        let c = FloodwatchConfig {
            windows: vec![window(
                "web*",
                "2025-12-22T10:00:00Z",
                "2025-12-22T09:00:00Z",
            )],
            ..FloodwatchConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("not after start"));
        let c = FloodwatchConfig {
            windows: vec![window(
                "web[",
                "2025-12-22T09:00:00Z",
                "2025-12-22T10:00:00Z",
            )],
            ..FloodwatchConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("windows[0].devices"));
    }

    #[test]
    fn windows_match_by_glob_and_half_open_time() {
        let c = FloodwatchConfig {
            windows: vec![window(
                "web*.contoso.com",
                "2025-12-22T09:00:00Z",
                "2025-12-22T10:00:00Z",
            )],
            ..FloodwatchConfig::default()
        };
        let w = c.compile_windows().unwrap();
        let t = |s: &str| parse_rfc3339(s.as_bytes()).unwrap();
        assert!(
            w.reason("WEB01.contoso.com", t("2025-12-22T09:00:00Z"))
                .unwrap()
                .contains("load test")
        );
        assert!(
            w.reason("web01.contoso.com", t("2025-12-22T10:00:00Z"))
                .is_none()
        );
        assert!(
            w.reason("db01.contoso.com", t("2025-12-22T09:30:00Z"))
                .is_none()
        );
    }
}
