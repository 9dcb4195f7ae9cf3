//! The multi-device detector: one [`DeviceState`] per device name, fed one bin at a time.
//!
//! Each bin is handled in three steps: every device assesses it alone; devices rising together
//! (carpet bombing) are looked at across the fleet; then each device's outcome is decided
//! (alert, suppression, confidence) and committed. A streaming service calls
//! [`Detector::observe_bin`] as bins close; batch [`super::run`] drives it over a file.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use floodwatch_core::{BinAgg, BinWidth};

use super::config::{CompiledWindows, FloodwatchConfig, SuppressMode};
use super::device::{Assessment, DeviceState, GroupEval, Outcome};
use crate::alert::{
    Alert, BaselineInfo, Confidence, PartialBin, RuleName, Severity, TopSource, Vector,
};

/// How many top sources an alert lists.
pub const TOP_SOURCES: usize = 10;

/// An alert with what the incident builder needs to know about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub alert: Alert,
    pub bin: i64,
    /// Raised (also) as part of a fleet-wide rise.
    pub carpet: bool,
}

/// A minimal scored alert for tests of what comes after scoring (incidents, the live
/// tracker): an unsuppressed medium HTTPS flood of `count` connections in `bin`, from one
/// exact top source `top_ip`.
#[cfg(any(test, feature = "fixtures"))]
pub fn scored_fixture(
    device: &str,
    bin: i64,
    width: BinWidth,
    count: u64,
    top_ip: String,
) -> Scored {
    Scored {
        alert: Alert {
            time_generated: width.start(bin),
            device_name: device.into(),
            request_count: count,
            unique_source_ips: 10,
            total_bytes: None,
            attack_confidence: Confidence::Medium,
            rule: RuleName::Floodwatch,
            vector: Some(Vector::HttpsFlood),
            vector_share: Some(0.9),
            severity: Severity::Medium,
            reasons: vec![],
            baseline: None,
            new_source_ratio: None,
            top_sources: vec![TopSource {
                ip: top_ip,
                count,
                exact: true,
                count_upper_bound: None,
            }],
            mitre_techniques: vec![],
            suppressed: false,
            suppression_reason: None,
            incident_id: None,
            partial: None,
        },
        bin,
        carpet: false,
    }
}

/// The serializable part of a [`Detector`]: every device's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectorState {
    pub devices: BTreeMap<String, DeviceState>,
}

/// floodwatch's detector over a fleet of devices.
#[derive(Clone, Debug)]
pub struct Detector {
    cfg: FloodwatchConfig,
    windows: CompiledWindows,
    width: BinWidth,
    pub state: DetectorState,
}

fn fmt_n(x: f64) -> String {
    let r = x.round();
    if (x - r).abs() > 1e-9 && x.abs() < 100.0 {
        return format!("{x:.1}");
    }
    let s = format!("{}", r.abs() as u64);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if r < 0.0 { format!("-{out}") } else { out }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

impl Detector {
    /// Validates `cfg`; errors name the bad field.
    pub fn new(cfg: &FloodwatchConfig, width: BinWidth) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Detector {
            windows: cfg.compile_windows()?,
            cfg: cfg.clone(),
            width,
            state: DetectorState::default(),
        })
    }

    /// Like [`Detector::new`] for a configuration that did not validate: windows that do not
    /// compile are dropped, other values are used as given.
    pub fn lenient(cfg: &FloodwatchConfig, width: BinWidth) -> Self {
        Detector {
            windows: cfg.compile_windows().unwrap_or_default(),
            cfg: cfg.clone(),
            width,
            state: DetectorState::default(),
        }
    }

    /// Resumes from saved state.
    pub fn with_state(mut self, state: DetectorState) -> Self {
        self.state = state;
        self
    }

    pub fn config(&self) -> &FloodwatchConfig {
        &self.cfg
    }

    /// Scores one closed bin of every device that has traffic in it (or is between its first
    /// and last event: pass an empty [`BinAgg`] for idle bins, so the slow-rise test sees the
    /// quiet). Returns the alerts raised, also the suppressed ones. A device's bins must come in
    /// time order; a bin at or before one already scored for that device is ignored.
    pub fn observe_bin(&mut self, bin: i64, devices: &[(&str, &BinAgg)]) -> Vec<Scored> {
        let per_day = self.width.per_day();
        let cfg = &self.cfg;
        let state = &self.state;
        let assessed: Vec<(&str, &BinAgg, Assessment)> = devices
            .iter()
            // Time only moves forward: a bin at or before one already scored is ignored.
            .filter(|(name, _)| {
                state
                    .devices
                    .get(*name)
                    .and_then(DeviceState::next_bin)
                    .is_none_or(|next| bin >= next)
            })
            .map(|&(name, agg)| {
                let a = match state.devices.get(name) {
                    Some(s) => s.assess(bin, agg, cfg, per_day),
                    None => DeviceState::new(cfg, per_day).assess(bin, agg, cfg, per_day),
                };
                (name, agg, a)
            })
            .collect();
        let strong = assessed.iter().filter(|x| x.2.moderate()).count();
        let rising = assessed.iter().filter(|x| x.2.wide()).count();
        let carpet =
            strong >= cfg.carpet_min_devices as usize || rising >= cfg.carpet_wide_devices as usize;
        let mut out = Vec::new();
        for (name, agg, a) in assessed {
            let state = self
                .state
                .devices
                .entry(name.to_owned())
                .or_insert_with(|| DeviceState::new(cfg, per_day));
            let by_carpet = carpet && a.wide();
            let built = (a.triggered() || by_carpet).then(|| {
                build_alert(
                    cfg,
                    &self.windows,
                    self.width,
                    name,
                    agg,
                    &a,
                    state,
                    by_carpet.then_some(rising),
                    None,
                )
            });
            let outcome = Outcome {
                flagged: built.is_some(),
                unsuppressed: built.as_ref().is_some_and(|b| !b.0.suppressed),
                flash_crowd: built.as_ref().is_some_and(|b| b.1.flash_crowd),
                surge_attack: built.as_ref().is_some_and(|b| b.1.surge_attack),
            };
            state.commit(&a, outcome, cfg, per_day);
            let alert = built.map(|b| b.0);
            if let Some(alert) = alert {
                out.push(Scored {
                    alert,
                    bin,
                    carpet: by_carpet,
                });
            }
        }
        out
    }
}

/// What [`Detector::preview`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Preview {
    /// The alert the whole bin would raise at the stretch's rate.
    pub alert: Option<Alert>,
    /// Whether the device rises the way the fleet-wide (carpet) test counts.
    pub moderate: bool,
}

impl Detector {
    /// Judges a part of `device`'s open bin `bin` without changing any state: `partial` holds
    /// the traffic seen in a stretch of the bin that is `fraction` (0 < fraction <= 1) of its
    /// width, projected onto the whole bin at the same rate ([`BinAgg::projected`]) and put
    /// through the same tests, suppression included, as a complete bin. The warm-up test's
    /// distinct-source floor is scaled by `fraction` too: a flood of new sources brings them at
    /// a steady rate, so the stretch has its share of them. `carpet`: how many devices rise
    /// together in the same stretch, when the caller found enough for the fleet-wide test.
    pub fn preview(
        &self,
        bin: i64,
        device: &str,
        partial: &BinAgg,
        fraction: f64,
        carpet: Option<usize>,
    ) -> Preview {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Preview::default();
        }
        let per_day = self.width.per_day();
        let mut cfg = self.cfg.clone();
        cfg.cold_min_sources = ((cfg.cold_min_sources as f64 * fraction).ceil() as u64)
            .max(cfg.min_sources)
            .min(cfg.cold_min_sources);
        let fresh;
        let state = match self.state.devices.get(device) {
            Some(s) => {
                if s.next_bin().is_some_and(|next| bin < next) {
                    return Preview::default();
                }
                s
            }
            None => {
                fresh = DeviceState::new(&cfg, per_day);
                &fresh
            }
        };
        let projected = partial.projected(1.0 / fraction);
        let a = state.assess_projected(bin, &projected, &cfg, per_day, 1.0 / fraction);
        let moderate = a.moderate();
        let by_carpet = carpet.is_some() && moderate;
        let alert = (a.triggered() || by_carpet).then(|| {
            build_alert(
                &cfg,
                &self.windows,
                self.width,
                device,
                &projected,
                &a,
                state,
                carpet.filter(|_| by_carpet),
                Some((partial, fraction)),
            )
            .0
        });
        Preview { alert, moderate }
    }
}

/// Which groups to name, and the label: the group carrying most of the excess, or `mixed`.
fn label<'a>(
    cfg: &FloodwatchConfig,
    a: &'a Assessment,
    carpet: bool,
) -> (Vector, Vec<&'a GroupEval>) {
    let mut alerting: Vec<&GroupEval> = a
        .groups
        .iter()
        .filter(|g| g.triggered() || (carpet && g.wide))
        .collect();
    alerting.sort_by(|x, y| y.excess().total_cmp(&x.excess()));
    let total: f64 = a.groups.iter().map(GroupEval::excess).sum();
    match alerting.first() {
        Some(top) if total <= 0.0 || top.excess() / total >= cfg.mixed_share => {
            (top.group.vector(), vec![top])
        }
        Some(_) => (Vector::Mixed, alerting),
        // Not reached (an alert has an alerting group), but never index an empty list.
        None => {
            let mut all: Vec<&GroupEval> = a.groups.iter().collect();
            all.sort_by(|x, y| y.excess().total_cmp(&x.excess()));
            all.truncate(1);
            (Vector::Mixed, all)
        }
    }
}

/// What the alert builder decided beyond the alert itself, for the device's state.
#[derive(Clone, Copy, Debug, Default)]
struct Verdict {
    /// Explained as a flash crowd (whether or not `log-only` left it unsuppressed).
    flash_crowd: bool,
    /// Raised as an attack on top of an ongoing flash crowd.
    surge_attack: bool,
}

#[allow(clippy::too_many_arguments)]
fn build_alert(
    cfg: &FloodwatchConfig,
    windows: &CompiledWindows,
    width: BinWidth,
    device: &str,
    agg: &BinAgg,
    a: &Assessment,
    state: &DeviceState,
    carpet_devices: Option<usize>,
    // The unprojected stretch and its share of the bin, when `agg` is a projection of it.
    seen: Option<(&BinAgg, f64)>,
) -> (Alert, Verdict) {
    let time = width.start(a.bin);
    let (vector, groups) = label(cfg, a, carpet_devices.is_some());
    let primary = groups[0];
    let cold = a.baseline.kind == super::baseline::BaselineKind::Cold;
    let observed: f64 = groups.iter().map(|g| g.observed).sum();
    let expected: f64 = groups.iter().map(|g| g.expected).sum();
    let excess: f64 = groups.iter().map(|g| g.excess()).sum::<f64>().max(1.0);
    let inbound = a.inbound.max(1) as f64;
    let mut reasons = Vec::new();

    // Volume.
    for g in &groups {
        if cold {
            reasons.push(format!(
                "no baseline yet ({} bins of history < warm-up {}): {} {} connections >= {}, {} distinct sources >= {}, {:.2} prefixes per source >= {:.2}",
                a.history_bins,
                cfg.warmup_bins,
                fmt_n(g.observed),
                g.group.as_str(),
                fmt_n(g.threshold),
                fmt_n(g.sources as f64),
                fmt_n(cfg.cold_min_sources as f64),
                a.prefix_spread,
                cfg.cold_min_prefix_spread
            ));
        } else {
            reasons.push(format!(
                "{} {} connections vs baseline {} ({:.1}x); one-bin threshold {} = max({:.1}x baseline, baseline + {:.1} x spread {}, baseline + {})",
                fmt_n(g.observed),
                g.group.as_str(),
                fmt_n(g.expected),
                g.ratio(),
                fmt_n(g.threshold),
                g.ratio_used,
                cfg.z_threshold,
                fmt_n(g.spread),
                fmt_n(cfg.min_excess)
            ));
        }
        if g.sustained_alarm {
            reasons.push(format!(
                "sustained rise: {} bins in a row at >= {:.2}x baseline with >= {} of the excess from new or hot sources",
                cfg.sustained_bins,
                cfg.sustained_ratio,
                pct(cfg.sustained_novel_share)
            ));
        }
        if g.cusum_alarm {
            reasons.push(format!(
                "slow-rise test: CUSUM of relative {} excess {:.2} >= {:.2} (allowance {:.2} per bin)",
                g.group.as_str(),
                g.cusum,
                cfg.cusum_h,
                cfg.cusum_k
            ));
        }
    }
    if let Some(n) = carpet_devices {
        reasons.push(format!(
            "carpet bombing: {n} devices rose together with mostly new sources in this bin (>= {} at {:.2}x, or >= {} at {:.2}x, needed)",
            cfg.carpet_min_devices,
            cfg.carpet_rate_ratio,
            cfg.carpet_wide_devices,
            cfg.carpet_wide_ratio
        ));
    }
    // Sources.
    let base_sources = a.baseline.metric[super::baseline::SOURCES].median;
    if !cold {
        reasons.push(format!(
            "{} distinct inbound sources (all vectors) vs baseline {} ({:.1}x)",
            fmt_n(a.sources as f64),
            fmt_n(base_sources),
            a.sources as f64 / base_sources.max(1.0)
        ));
    }
    let new_ratio = primary.novelty.source_share();
    if let Some(share) = new_ratio {
        reasons.push(format!(
            "{} of sampled {} sources ({} of their connections) never seen on this device in {} days",
            pct(share),
            primary.group.as_str(),
            pct(primary.novelty.conn_share().unwrap_or(0.0)),
            cfg.novelty_days,
        ));
    }
    let hot = primary.novelty;
    if hot.checked > 0 {
        let returning = hot.checked - hot.new;
        reasons.push(if hot.hot > 0 {
            format!(
                "{} of {} sampled returning sources not behaving like themselves: each made >= {:.0}x its own largest clean bin and >= {} connections (up to {:.0}x), {} of the sampled connections",
                fmt_n(hot.hot as f64),
                fmt_n(returning as f64),
                cfg.hot_source_ratio,
                cfg.hot_source_min,
                hot.hot_max_ratio,
                pct(hot.hot_share().unwrap_or(0.0))
            )
        } else {
            format!(
                "{} sampled returning sources, none above {:.0}x its own usual rate",
                fmt_n(returning as f64),
                cfg.hot_source_ratio
            )
        });
    }
    if !cold {
        reasons.push(format!(
            "{} of the excess from new or hot sources (attack needs >= {})",
            pct(primary.novel_excess),
            pct(cfg.novel_share)
        ));
    }
    if let Some(s) = primary.surge {
        reasons.push(format!(
            "{} a flash crowd going on since {}: {} connections vs its level {}, a step of {} ({} from new or hot sources; an attack on top needs a step >= {} with >= {} from them)",
            if s.attack { "surge on surge: attack on top of" } else { "judged against" },
            floodwatch_core::time::Rfc3339(width.start(s.level.since)),
            fmt_n(primary.observed),
            fmt_n(s.level.level),
            fmt_n(s.step),
            pct(s.step_unlike),
            fmt_n(s.need),
            pct(cfg.novel_share)
        ));
        if s.attack {
            reasons.push(format!(
                "the flash crowd's part ({} connections over the baseline before the step) was suppressed as such; the step is not",
                fmt_n((s.level.level - primary.expected).max(0.0))
            ));
        }
    }
    reasons.push(format!(
        "sources spread over {:.2} /24 (/48) prefixes per source",
        a.prefix_spread
    ));
    if let Some(cv) = primary.rate_cv() {
        reasons.push(format!(
            "per-source rate coefficient of variation {cv:.2} ({})",
            if cv <= 1.0 {
                "uniform, bot-like"
            } else {
                "varied, people-like"
            }
        ));
    }
    // Counts of sources are what they made, never a projection.
    // A heavy regular (a partner's gateway, a corporate NAT) makes many connections every bin:
    // what it makes beyond its own usual is its part of the excess.
    let usual = |ip: floodwatch_core::Ip| u64::from(state.usual_peak(ip));
    let ranked = top_sources_with(seen.map_or(agg, |s| s.0), &usual);
    let top: Vec<TopSource> = ranked.iter().map(|r| r.0.clone()).collect();
    // Only guaranteed counts are used (exact, or the Space-Saving lower bound), so a summary's
    // error can never make a distributed flood look like one source.
    // Listed counts are what was seen; against a projected excess they are projected too.
    let scale = seen.map_or(1.0, |s| 1.0 / s.1.max(1e-9));
    let top1 = ranked
        .first()
        .map(|(t, u)| (t.ip.as_str(), t.count, t.count.saturating_sub(*u)));
    if let Some((ip, c, above)) = top1 {
        reasons.push(format!(
            "top source {ip} made {} connections ({} above its own usual), {} of the excess (single-source threshold {})",
            fmt_n(c as f64),
            fmt_n(above as f64),
            pct((above as f64 * scale / excess).min(1.0)),
            pct(cfg.single_source_share)
        ));
    }
    let persistence = state.streak() + 1;
    if persistence >= 2 {
        reasons.push(format!("persistent: {persistence} consecutive alert bins"));
    }

    // Suppression, most specific first.
    let mut flash_crowd = false;
    let dominant = &ranked[..ranked.len().min(cfg.dominant_sources)];
    let top_n: u64 = dominant.iter().map(|(t, _)| t.count).sum();
    let top_n_above: u64 = dominant
        .iter()
        .map(|(t, u)| t.count.saturating_sub(*u))
        .sum();
    let few_sources = groups.iter().all(|g| g.sources < cfg.min_sources);
    let suppression = if let Some(r) = windows.reason(device, time) {
        Some(r)
    } else if agg.allowed as f64 >= cfg.allowed_share * excess {
        Some(format!(
            "load test from allow-listed sources: {} of {} inbound connections ({}) came from allow-listed sources, >= {} of the excess",
            fmt_n(agg.allowed as f64),
            fmt_n(inbound),
            pct(agg.allowed as f64 / inbound),
            pct(cfg.allowed_share)
        ))
    } else if let Some((ip, c, above)) =
        top1.filter(|t| few_sources || t.2 as f64 * scale >= cfg.single_source_share * excess)
    {
        Some(format!(
            "single-source surge: {ip} made {} connections ({} above its own usual, {} of the excess; {} distinct sources): a monitor or scanner, not a distributed attack",
            fmt_n(c as f64),
            fmt_n(above as f64),
            pct((above as f64 * scale / excess).min(1.0)),
            fmt_n(primary.sources as f64)
        ))
    } else if few_sources {
        Some(format!(
            "only {} distinct sources (< {}): not a distributed attack",
            primary.sources, cfg.min_sources
        ))
    } else if top_n_above as f64 * scale >= cfg.single_source_share * excess {
        Some(format!(
            "few-source surge: the top {} sources made {} connections, {} above their own usual ({} of the excess): not a distributed attack",
            dominant.len(),
            fmt_n(top_n as f64),
            fmt_n(top_n_above as f64),
            pct((top_n_above as f64 * scale / excess).min(1.0))
        ))
    } else if !cold && primary.novel_excess < cfg.novel_share && !primary.surge_attack() {
        flash_crowd = true;
        Some(format!(
            "flash crowd: only {} of the excess came from new sources or from returning ones at >= {:.0}x their own usual rate (< {}); the surge is mostly returning sources behaving as usual",
            pct(primary.novel_excess),
            cfg.hot_source_ratio,
            pct(cfg.novel_share)
        ))
    } else {
        None
    };

    // Confidence: count independent signals.
    let ratio_to_threshold = groups
        .iter()
        .map(|g| g.observed / g.threshold.max(1.0))
        .fold(0.0, f64::max);
    let signals: [(bool, String); 7] = [
        (
            ratio_to_threshold >= 2.0,
            format!("{ratio_to_threshold:.1}x the threshold"),
        ),
        (
            new_ratio.is_some_and(|s| s >= 0.8),
            format!("{} new sources", pct(new_ratio.unwrap_or(0.0))),
        ),
        (
            persistence >= cfg.persistence_bins,
            format!("{persistence} bins in a row"),
        ),
        (
            !cold && a.sources as f64 >= 3.0 * base_sources.max(1.0),
            format!(
                "{:.1}x the usual distinct sources",
                a.sources as f64 / base_sources.max(1.0)
            ),
        ),
        (
            primary.rate_cv().is_some_and(|cv| cv <= 1.0),
            "uniform per-source rates".to_owned(),
        ),
        (
            a.prefix_spread >= 0.5,
            format!("wide prefix spread {:.2}", a.prefix_spread),
        ),
        (
            groups.iter().any(|g| g.cusum_alarm || g.sustained_alarm),
            "a sustained rise".to_owned(),
        ),
    ];
    let points = signals.iter().filter(|s| s.0).count() as u32;
    let confidence = if points >= 4 && (persistence >= cfg.persistence_bins || points >= 5) {
        Confidence::High
    } else if points >= 2 {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    let unsuppressed_severity = if confidence == Confidence::High && ratio_to_threshold >= 2.0 {
        Severity::High
    } else if confidence >= Confidence::Medium || ratio_to_threshold >= 2.0 {
        Severity::Medium
    } else {
        Severity::Low
    };
    let severity = if suppression.is_some() {
        Severity::Informational
    } else {
        unsuppressed_severity
    };

    let (request_count, unique, bytes) = if groups.len() == 1 {
        (
            primary.observed as u64,
            primary.sources,
            primary.group.bytes(agg),
        )
    } else {
        let bytes: Vec<u64> = groups.iter().filter_map(|g| g.group.bytes(agg)).collect();
        (
            observed as u64,
            a.sources,
            (!bytes.is_empty()).then(|| bytes.iter().sum()),
        )
    };
    // A partial bin reports what was seen (sources are the same either way); the projection
    // the tests judged is kept beside it.
    let (request_count, bytes, partial) = match seen {
        None => (request_count, bytes, None),
        Some((raw, coverage)) => {
            let count: u64 = groups.iter().map(|g| g.group.count(raw)).sum();
            let bytes: Vec<u64> = groups.iter().filter_map(|g| g.group.bytes(raw)).collect();
            (
                count,
                (!bytes.is_empty()).then(|| bytes.iter().sum()),
                Some(PartialBin {
                    coverage,
                    projected_count: request_count,
                }),
            )
        }
    };
    let threshold: f64 = groups.iter().map(|g| g.threshold).sum();
    let spread = groups.iter().map(|g| g.spread).fold(0.0, f64::max);
    // A suppression is auditable: what spoke for an attack, and what against.
    if let Some(r) = &suppression {
        let for_attack: Vec<&str> = signals
            .iter()
            .filter(|s| s.0)
            .map(|s| s.1.as_str())
            .collect();
        reasons.push(format!(
            "evidence for an attack: {}; against: {r}",
            if for_attack.is_empty() {
                "none of the confidence signals".to_owned()
            } else {
                for_attack.join(", ")
            }
        ));
    }
    let log_only = suppression.is_some() && cfg.suppress == SuppressMode::LogOnly;
    if log_only && let Some(r) = &suppression {
        reasons.insert(0, format!("log-only: would have been suppressed: {r}"));
    }
    let suppressed = suppression.is_some() && !log_only;
    let severity = if log_only {
        unsuppressed_severity
    } else {
        severity
    };
    let verdict = Verdict {
        flash_crowd,
        surge_attack: primary.surge_attack() && suppression.is_none(),
    };
    let alert = Alert {
        time_generated: time,
        device_name: device.to_owned(),
        request_count,
        // An estimate above the sketch's exact range can exceed the connections it came from.
        unique_source_ips: unique.min(request_count),
        total_bytes: bytes,
        attack_confidence: confidence,
        rule: RuleName::Floodwatch,
        vector: Some(vector),
        vector_share: Some((observed / inbound).min(1.0)),
        severity,
        reasons,
        baseline: Some(BaselineInfo {
            method: a.baseline.method(),
            expected,
            spread,
            threshold,
            bins: a.baseline.points() as u64,
        }),
        new_source_ratio: new_ratio,
        top_sources: top,
        mitre_techniques: vector.mitre().iter().map(|s| s.to_string()).collect(),
        suppressed,
        suppression_reason: suppression,
        incident_id: None,
        partial,
    };
    (alert, verdict)
}

/// Whether the part of a bin that a partial alert judged stands out of the noise on its own:
/// the excess of what was seen over the expected part is at least `z` noise units (Poisson, or
/// the baseline's spread over the stretch, whichever is larger) and `min_excess` connections. A
/// few seconds of an ordinary device extrapolate to anything; this keeps them quiet.
pub fn stands_out(a: &Alert, coverage: f64, z: f64, min_excess: f64) -> bool {
    let (expected, spread) = a
        .baseline
        .as_ref()
        .map_or((0.0, 0.0), |b| (b.expected, b.spread));
    // A partial alert's count is already what was seen; a whole bin's is scaled down.
    let seen = if a.partial.is_some() {
        a.request_count as f64
    } else {
        a.request_count as f64 * coverage
    };
    let exp = expected * coverage;
    let noise = exp.max(1.0).sqrt().max(spread * coverage.sqrt());
    let excess = seen - exp;
    excess >= z * noise && excess >= min_excess
}

/// The heaviest sources of a bin with counts that are never above the truth: the Space-Saving
/// summary names the candidates (every source with more than 1/m of the connections is among
/// them); the bin's source sample gives the exact count of those it holds (all of them while the
/// bin has at most k sources); the others get the summary's guaranteed lower bound (estimate
/// minus error), and those with no guarantee at all are left out. Heaviest first by that count.
#[cfg(test)]
fn top_sources(agg: &BinAgg) -> Vec<TopSource> {
    top_sources_with(agg, &|_| 0)
        .into_iter()
        .map(|r| r.0)
        .collect()
}

/// [`top_sources`], each with its usual (largest clean-bin) count by `usual` (0 when unknown).
fn top_sources_with(
    agg: &BinAgg,
    usual: &dyn Fn(floodwatch_core::Ip) -> u64,
) -> Vec<(TopSource, u64)> {
    let mut candidates = agg.top.top(usize::MAX);
    // Which sources the summary holds depends on the order the connections came in (and so on
    // how the input was split between threads); among many equal counts, so would the list.
    // The source sample does not: it is the k smallest hashes, with exact counts, and it names
    // its IPv4 sources (see `ipv4_of_hash`). Its heaviest join the candidates, so while the
    // sample holds every source the list is the true heaviest, ties broken by address.
    let mut sampled: Vec<(u64, floodwatch_core::Ip)> = agg
        .sources
        .sampled()
        .into_iter()
        .filter_map(|(h, c)| floodwatch_core::hash::ipv4_of_hash(h).map(|ip| (u64::from(c), ip)))
        .collect();
    let by_weight = |a: &(u64, floodwatch_core::Ip), b: &(u64, floodwatch_core::Ip)| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.to_string().cmp(&b.1.to_string()))
    };
    if sampled.len() > TOP_SOURCES {
        // Only counts decide which make the cut here; ties at the cut are settled below.
        let cut = sampled
            .select_nth_unstable_by(TOP_SOURCES - 1, |a, b| b.0.cmp(&a.0))
            .1
            .0;
        sampled.retain(|s| s.0 >= cut);
    }
    sampled.sort_by(by_weight);
    // Exact counts: none past these can rank above them in the list.
    sampled.truncate(TOP_SOURCES);
    for (count, ip) in sampled {
        if !candidates.iter().any(|c| c.0 == ip) {
            candidates.push((ip, count, 0));
        }
    }
    let exact = agg.sources.exact_counts(
        candidates
            .iter()
            .map(|c| floodwatch_core::hash::hash_ip(c.0)),
    );
    let mut out: Vec<(TopSource, u64)> = candidates
        .iter()
        .zip(exact)
        .filter_map(|(&(ip, estimate, error), exact)| {
            let u = usual(ip);
            let t = match exact {
                Some(count) => TopSource {
                    ip: ip.to_string(),
                    count,
                    exact: true,
                    count_upper_bound: None,
                },
                None => TopSource {
                    ip: ip.to_string(),
                    count: estimate.saturating_sub(error),
                    exact: error == 0,
                    count_upper_bound: (error > 0).then_some(estimate),
                },
            };
            (t.count > 0).then_some((t, u))
        })
        .collect();
    out.sort_by(|a, b| b.0.count.cmp(&a.0.count).then_with(|| a.0.ip.cmp(&b.0.ip)));
    out.truncate(TOP_SOURCES);
    out
}

/// Last bin scored per device, for "ongoing at the end of data".
pub type LastBins = HashMap<String, i64>;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use floodwatch_core::Ip;

    /// A bin's sources with their true counts, fed to the bin's sketches as the aggregator does.
    fn bin_of(sources: &[(Ip, u64)]) -> BinAgg {
        let mut b = BinAgg::default();
        // Interleaved, as a flood arrives: every source's connections spread over the bin.
        let rounds = sources.iter().map(|s| s.1).max().unwrap_or(0);
        for r in 0..rounds {
            for &(ip, n) in sources {
                if r < n {
                    b.sources.insert(ip, 1);
                    b.top.insert(ip, 1);
                }
            }
        }
        b
    }

    fn check_never_above(sources: &[(Ip, u64)], top: &[TopSource]) {
        for t in top {
            let truth = sources
                .iter()
                .find(|s| s.0.to_string() == t.ip)
                .map(|s| s.1)
                .unwrap();
            assert!(
                t.count <= truth,
                "{} listed {} > true {truth}",
                t.ip,
                t.count
            );
            if t.exact {
                assert_eq!(t.count, truth, "{} marked exact", t.ip);
            }
            if let Some(hi) = t.count_upper_bound {
                assert!(hi >= truth, "{} upper bound {hi} < true {truth}", t.ip);
            }
        }
    }

    #[test]
    fn top_sources_are_exact_while_the_sample_holds_every_source() {
        // 3,000 sources making 8-13 connections and two heavy ones: Space-Saving alone would
        // list sources at hundreds of connections.
        let mut sources: Vec<(Ip, u64)> = (0..3_000u32)
            .map(|i| (Ip::v4([10, (i >> 8) as u8, i as u8, 1]), 8 + (i % 6) as u64))
            .collect();
        sources.push((Ip::v4([192, 0, 2, 1]), 900));
        sources.push((Ip::v4([192, 0, 2, 2]), 400));
        let top = top_sources(&bin_of(&sources));
        check_never_above(&sources, &top);
        assert!(top.iter().all(|t| t.exact));
        assert_eq!(top[0].ip, "192.0.2.1");
        assert_eq!(top[0].count, 900);
        assert_eq!(top[1].count, 400);
        assert!(top[2..].iter().all(|t| (8..=13).contains(&t.count)));
    }

    #[test]
    fn top_sources_beyond_the_sample_are_lower_bounds() {
        // More sources than the sample holds: only the sampled ones can be exact; the rest are
        // lower bounds or left out, and the one heavy source is still found.
        let mut sources: Vec<(Ip, u64)> = (0..20_000u32)
            .map(|i| (Ip::v4([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]), 3))
            .collect();
        sources.push((Ip::v4([198, 51, 100, 7]), 30_000));
        let b = bin_of(&sources);
        assert!(b.sources.is_saturated());
        let top = top_sources(&b);
        check_never_above(&sources, &top);
        assert_eq!(top[0].ip, "198.51.100.7");
        assert!(top[0].count > 20_000, "{:?}", top[0]);
    }

    /// A flat flood (thousands of sources with a few connections each, many equal counts, far
    /// more sources than the summary's counters): the listed sources and counts are the same
    /// whatever order the connections came in and however the bin was split into parts merged
    /// later (as threads split it); they are the true heaviest, ties broken by address.
    #[test]
    fn top_sources_do_not_depend_on_order_or_split() {
        let sources: Vec<(Ip, u64)> = (0..5_000u32)
            .map(|i| {
                let ip = Ip::v4([100, 64 + (i >> 8) as u8 % 8, (i >> 8) as u8, i as u8]);
                (ip, 1 + u64::from(i % 7 == 3) + u64::from(i % 11 == 5) * 3)
            })
            .collect();
        let forward = top_sources(&bin_of(&sources));
        let mut reversed = sources.clone();
        reversed.reverse();
        let backward = top_sources(&bin_of(&reversed));
        let (a, b) = sources.split_at(1_234);
        let mut merged = bin_of(b);
        merged.merge(&bin_of(a));
        let split = top_sources(&merged);
        assert_eq!(forward, backward);
        assert_eq!(forward, split);
        // The truth: counts descending, then the address as text.
        let mut truth: Vec<(u64, String)> =
            sources.iter().map(|s| (s.1, s.0.to_string())).collect();
        truth.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
        let want: Vec<(u64, String)> = truth.into_iter().take(TOP_SOURCES).collect();
        let got: Vec<(u64, String)> = forward.iter().map(|t| (t.count, t.ip.clone())).collect();
        assert_eq!(got, want);
        assert!(forward.iter().all(|t| t.exact));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_n(1234567.0), "1,234,567");
        assert_eq!(fmt_n(12.25), "12.2");
        assert_eq!(fmt_n(100.0), "100");
        assert_eq!(pct(0.456), "46%");
    }
}
