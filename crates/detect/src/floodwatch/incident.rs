//! From alert bins to incidents an analyst works on.
//!
//! Alert bins are filed in time order (bin, then device) by a [`Linker`]: the one piece of
//! code that both `floodwatch detect` ([`build_incidents`]) and the live service (whose tracker
//! announces incidents as they open, escalate and end) run, so that both give the same
//! incidents, pulses and campaigns for the same data.
//!
//! - **Runs.** One device's alert bins in a row, allowing `incident_gap_bins` quiet bins in
//!   between, are one run (suppressed and unsuppressed bins alike).
//! - **Pulse waves.** A run with an unsuppressed bin is an attack run. It joins the device's
//!   open attack incident as its next pulse when its first unsuppressed alert has the vector of
//!   the incident's first complete unsuppressed alert, and at most `pulse_gap_minutes` of quiet
//!   (in whole bins, never fewer than `incident_gap_bins`) lie between the incident's last bin
//!   and the run's first; otherwise it opens an incident of its own (ending the old one). An
//!   attack incident ends once that quiet has passed after its last bin. Every incident lists
//!   its pulses (its runs; for carpet bombing, its stretches of bins), each with its start,
//!   end and peak. A run of suppressed bins only is a suppressed incident of its own, never a
//!   pulse, and does not end the attack around it: a flash crowd between two pulses of a flood
//!   stays apart from the flood, and the flood stays one incident.
//! - **Campaigns.** When an attack incident's first complete unsuppressed bin is filed, it
//!   is linked to the first remembered attack incident (in the order they were linked) that
//!   ended at most `campaign_gap_hours` before that bin (its last alert bin to this bin) and
//!   either is on the same device, or shares at least `campaign_source_share` of the shorter
//!   top-source list (and at least [`MIN_SHARED_SOURCES`] addresses), each incident's list
//!   being the one of its first complete unsuppressed bin. It then carries that incident's
//!   campaign id; otherwise it starts a campaign, `FW-campaign-<device>-<start>` after
//!   itself. Links are made once, looking back: a campaign is never split or merged later.
//!   Suppressed incidents never link and carry no campaign. (Live, an incident opened by an
//!   early decision carries at once the campaign of an earlier incident of its device, and is
//!   linked by sources, if at all, when its first complete bin is scored.)
//! - **Carpet bombing.** Unsuppressed device incidents that overlap in time, on at least
//!   `carpet_min_devices` devices, with at least one bin raised by the fleet-wide test, become
//!   one incident listing every device, in the campaign of its earliest device incident. (Live,
//!   each device's incident is announced, and the fleet-wide one beside them once a bin raised
//!   by the fleet-wide test finds enough devices with open incidents.)
//!
//! Ids are deterministic: `FW-<device>-<start>` or `FW-carpet-<start>` (start as
//! `YYYYMMDDTHHMMSSZ`), so re-running on the same data gives the same ids.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use floodwatch_core::BinWidth;
use floodwatch_core::time::{Nanos, Rfc3339, parse_rfc3339};

use super::config::FloodwatchConfig;
use super::detector::{LastBins, Scored, TOP_SOURCES};
use crate::alert::{Alert, Confidence, Severity, TopSource, Vector};

fn ser_time<S: Serializer>(t: &Nanos, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Rfc3339(*t))
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<Nanos, D::Error> {
    let s = String::deserialize(d)?;
    parse_rfc3339(s.as_bytes()).map_err(serde::de::Error::custom)
}

fn ser_opt_time<S: Serializer>(t: &Option<Nanos>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&Rfc3339(*t)),
        None => s.serialize_none(),
    }
}

fn de_opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Nanos>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| parse_rfc3339(s.as_bytes()).map_err(serde::de::Error::custom))
        .transpose()
}

/// What kind of incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentKind {
    /// Alert bins of one device (one run, or the pulses of one wave).
    Device,
    /// Many devices rising together.
    CarpetBombing,
}

/// The bin with the most connections of the incident's vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Peak {
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub time_generated: Nanos,
    pub device_name: String,
    pub request_count: u64,
}

/// One alert bin covered by an incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AlertBin {
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub time_generated: Nanos,
    pub device_name: String,
}

/// One pulse of an incident: a stretch of alert bins at most `incident_gap_bins` apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Pulse {
    /// Start of its first alert bin.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub start: Nanos,
    /// End of its last alert bin.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub end: Nanos,
    /// The highest connection count of its complete bins (0 while it has none).
    pub peak_request_count: u64,
}

/// An incident: one attack (or one suppressed surge) over one or many devices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Incident {
    pub incident_id: String,
    /// The campaign it belongs to (see the module documentation); `null` when suppressed.
    #[serde(default)]
    pub campaign_id: Option<String>,
    pub kind: IncidentKind,
    pub devices: Vec<String>,
    /// Start of the first alert bin.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub start: Nanos,
    /// End of the last alert bin; `null` while ongoing at the end of the data (for an attack,
    /// until `pulse_gap_minutes` have passed without another pulse).
    #[serde(serialize_with = "ser_opt_time", deserialize_with = "de_opt_time")]
    pub end: Option<Nanos>,
    pub peak: Peak,
    /// Vector of the peak bin.
    pub vector: Vector,
    /// Its pulses in time order: one for a single run of bins, one per wave of a pulse flood.
    #[serde(default)]
    pub pulses: Vec<Pulse>,
    /// Heaviest sources over all bins (counts summed).
    pub top_sources: Vec<TopSource>,
    pub alert_bins: Vec<AlertBin>,
    /// Highest severity of its bins.
    pub severity: Severity,
    /// Highest confidence of its bins.
    pub attack_confidence: Confidence,
    /// Every bin suppressed.
    pub suppressed: bool,
    /// The first bin's suppression reason, when suppressed.
    pub suppression_reason: Option<String>,
}

/// The id of the device incident starting at `start` (also what the live service gives it).
pub fn device_incident_id(device: &str, start: Nanos) -> String {
    format!("FW-{device}-{}", compact(start))
}

/// The id of the campaign that the incident `first` starts: `FW-campaign-<device>-<start>`.
pub fn campaign_id(first: &str) -> String {
    format!("FW-campaign-{}", first.strip_prefix("FW-").unwrap_or(first))
}

/// `t` as `YYYYMMDDTHHMMSSZ`.
pub fn compact(t: Nanos) -> String {
    Rfc3339(t)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

/// Fewest addresses two incidents' top-source lists must have in common to be linked across
/// devices, whatever the share: one or two shared addresses (a monitoring service, a busy
/// proxy) are common between unrelated surges.
pub const MIN_SHARED_SOURCES: usize = 3;

/// Whether two top-source lists share at least `share` of the shorter one (and at least
/// [`MIN_SHARED_SOURCES`] addresses).
pub fn shares_sources(a: &[String], b: &[String], share: f64) -> bool {
    let shorter = a.len().min(b.len());
    if shorter < MIN_SHARED_SOURCES {
        return false;
    }
    let common = a.iter().filter(|ip| b.contains(ip)).count();
    common >= MIN_SHARED_SOURCES && common as f64 >= share * shorter as f64
}

/// A pulse by bin index: first bin, last bin, highest complete-bin count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulseBins {
    pub start: i64,
    pub last: i64,
    pub peak: u64,
}

impl PulseBins {
    pub fn pulse(&self, width: BinWidth) -> Pulse {
        Pulse {
            start: width.start(self.start),
            end: width.start(self.last + 1),
            peak_request_count: self.peak,
        }
    }
}

/// An attack incident as the [`Linker`] holds it while it may still take pulses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attack {
    /// Its incident id: the id of its first run.
    pub id: String,
    pub device: String,
    /// First and last alert bin.
    pub start: i64,
    pub last: i64,
    /// Vector of its first complete unsuppressed alert (until then, of its first alert):
    /// a later run must open with the same vector to be its next pulse.
    pub vector: Option<Vector>,
    /// Whether its first complete unsuppressed alert was filed (and its campaign decided).
    pub signed: bool,
    pub campaign: String,
    pub pulses: Vec<PulseBins>,
    /// Complete alert bins in its runs.
    pub alert_bins: u32,
}

/// One device's current run of alert bins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Run {
    /// Its incident id (its attack's, once it is part of one).
    id: String,
    start: i64,
    last: i64,
    peak: u64,
    bins: u32,
    in_attack: bool,
}

/// One device: its current run, and its attack incident that may take more pulses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Lane {
    run: Option<Run>,
    attack: Option<Attack>,
}

/// An attack incident remembered for campaign linking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Remembered {
    id: String,
    device: String,
    campaign: String,
    last: i64,
    sources: Vec<String>,
}

/// What filing one alert did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filed {
    /// The incident the alert belongs to.
    pub incident_id: String,
    /// Its run joined an attack incident as a pulse: alerts filed earlier under this id (the
    /// run's leading suppressed bins) belong to `incident_id` now.
    pub renamed: Option<String>,
    /// The alert opened the attack incident `incident_id`.
    pub opened: bool,
    /// Attack incidents it ended (an attack of another vector, or past the pulse gap).
    pub ended: Vec<Attack>,
}

/// Groups alert bins into runs, pulse waves and campaigns as they come, in time order (see the
/// module documentation). Serializable: the live service keeps it in its snapshot, so that a
/// restart goes on with the same incidents and campaigns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Linker {
    width: BinWidth,
    /// Quiet bins allowed inside a run, between pulses, and between linked incidents.
    gap: i64,
    pulse_gap: i64,
    campaign_gap: i64,
    share: f64,
    lanes: BTreeMap<String, Lane>,
    /// Attack incidents that a later one may still link to, in the order they were linked.
    book: Vec<Remembered>,
}

impl Linker {
    pub fn new(cfg: &FloodwatchConfig, width: BinWidth) -> Self {
        let bins = |nanos: i64| nanos / width.nanos().max(1);
        let gap = cfg.incident_gap_bins as i64;
        Linker {
            width,
            gap,
            pulse_gap: bins(cfg.pulse_gap_minutes as i64 * 60 * 1_000_000_000).max(gap),
            campaign_gap: bins(cfg.campaign_gap_hours as i64 * 3600 * 1_000_000_000),
            share: cfg.campaign_source_share,
            lanes: BTreeMap::new(),
            book: Vec::new(),
        }
    }

    pub fn width(&self) -> BinWidth {
        self.width
    }

    /// Quiet bins after its last bin before an attack incident ends.
    pub fn pulse_gap_bins(&self) -> i64 {
        self.pulse_gap
    }

    /// Files the alert of `alert.device_name` at `bin`; `complete`: the bin's own alert (not
    /// an early decision on part of it). Alerts come in time order.
    pub fn file(&mut self, alert: &Alert, bin: i64, complete: bool) -> Filed {
        let device = alert.device_name.as_str();
        let (gap, pulse_gap, width) = (self.gap, self.pulse_gap, self.width);
        let mut filed = Filed::default();
        let lane = self.lanes.entry(device.to_owned()).or_default();
        if !lane
            .run
            .as_ref()
            .is_some_and(|r| bin >= r.start && bin - r.last <= gap + 1)
        {
            lane.run = None;
        }
        let run = lane.run.get_or_insert_with(|| Run {
            id: device_incident_id(device, width.start(bin)),
            start: bin,
            last: bin,
            peak: 0,
            bins: 0,
            in_attack: false,
        });
        run.last = run.last.max(bin);
        if complete {
            run.peak = run.peak.max(alert.request_count);
            run.bins += 1;
        }
        let mut provisional = None;
        if !alert.suppressed && !run.in_attack {
            // A run starting before the attack's last bin (live: a bin sealed after an early
            // decision on the next one) overlaps it, and is part of it as much.
            let pulse = lane
                .attack
                .as_ref()
                .is_some_and(|a| a.vector == alert.vector && run.start - a.last - 1 <= pulse_gap);
            if pulse {
                if let Some(a) = lane.attack.as_mut() {
                    filed.renamed = Some(std::mem::replace(&mut run.id, a.id.clone()));
                    match a.pulses.last_mut() {
                        Some(p) if run.start - p.last <= gap + 1 => {
                            p.start = p.start.min(run.start);
                            p.last = p.last.max(run.last);
                            p.peak = p.peak.max(run.peak);
                        }
                        _ => a.pulses.push(PulseBins {
                            start: run.start,
                            last: run.last,
                            peak: run.peak,
                        }),
                    }
                    a.start = a.start.min(run.start);
                    a.alert_bins += run.bins;
                }
            } else {
                filed.ended.extend(lane.attack.take());
                filed.opened = true;
                lane.attack = Some(Attack {
                    id: run.id.clone(),
                    device: device.to_owned(),
                    start: run.start,
                    last: run.last,
                    vector: alert.vector,
                    signed: false,
                    campaign: campaign_id(&run.id),
                    pulses: vec![PulseBins {
                        start: run.start,
                        last: run.last,
                        peak: run.peak,
                    }],
                    alert_bins: run.bins,
                });
                provisional = Some(run.id.clone());
            }
            run.in_attack = true;
        } else if run.in_attack
            && let Some(a) = lane.attack.as_mut()
        {
            if complete {
                a.alert_bins += 1;
            }
            if let Some(p) = a.pulses.last_mut() {
                p.last = p.last.max(run.last);
                p.peak = p.peak.max(run.peak);
            }
        }
        filed.incident_id = run.id.clone();
        let in_attack = run.in_attack;
        let Some(a) = lane.attack.as_mut().filter(|_| in_attack) else {
            return filed;
        };
        a.last = a.last.max(bin);
        if provisional.is_some()
            && let Some(r) = self
                .book
                .iter()
                .find(|r| r.device == device && bin - r.last <= self.campaign_gap)
        {
            a.campaign = r.campaign.clone();
        }
        if complete && !alert.suppressed && !a.signed {
            a.signed = true;
            a.vector = alert.vector;
            let sources: Vec<String> = alert.top_sources.iter().map(|t| t.ip.clone()).collect();
            let linked = self.book.iter().find(|r| {
                bin - r.last <= self.campaign_gap
                    && (r.device == device || shares_sources(&r.sources, &sources, self.share))
            });
            a.campaign = linked.map_or_else(|| campaign_id(&a.id), |r| r.campaign.clone());
            self.book.push(Remembered {
                id: a.id.clone(),
                device: device.to_owned(),
                campaign: a.campaign.clone(),
                last: bin,
                sources,
            });
        } else if complete
            && a.signed
            && let Some(r) = self.book.iter_mut().rev().find(|r| r.id == a.id)
        {
            r.last = r.last.max(bin);
        }
        filed
    }

    /// Ends what no alert at or after `floor` can extend any more (every bin below `floor` is
    /// filed): runs past `incident_gap_bins`, attack incidents past the pulse gap (returned),
    /// and forgets incidents past the campaign gap.
    pub fn close_below(&mut self, floor: i64) -> Vec<Attack> {
        let (gap, pulse_gap, campaign_gap) = (self.gap, self.pulse_gap, self.campaign_gap);
        let mut ended = Vec::new();
        for lane in self.lanes.values_mut() {
            if lane.run.as_ref().is_some_and(|r| r.last + gap + 1 < floor) {
                lane.run = None;
            }
            if lane
                .attack
                .as_ref()
                .is_some_and(|a| a.last + pulse_gap + 1 < floor)
            {
                ended.extend(lane.attack.take());
            }
        }
        self.lanes
            .retain(|_, l| l.run.is_some() || l.attack.is_some());
        self.book.retain(|r| floor - r.last <= campaign_gap);
        ended
    }

    /// The attack incident of `device` that may still take pulses.
    pub fn attack(&self, device: &str) -> Option<&Attack> {
        self.lanes.get(device).and_then(|l| l.attack.as_ref())
    }

    /// Every attack incident that may still take pulses.
    pub fn attacks(&self) -> impl Iterator<Item = &Attack> {
        self.lanes.values().filter_map(|l| l.attack.as_ref())
    }

    /// Per device with one, the incident open now: its attack, else its suppressed run.
    pub fn open(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lanes.iter().filter_map(|(d, l)| {
            let id = l
                .attack
                .as_ref()
                .map(|a| a.id.as_str())
                .or(l.run.as_ref().map(|r| r.id.as_str()))?;
            Some((d.as_str(), id))
        })
    }
}

/// Groups alerts into incidents and sets each alert's `IncidentId`. Alerts are re-ordered by
/// (device, time); incidents come ordered by start, then id.
pub fn build_incidents(
    scored: &mut [Scored],
    width: BinWidth,
    cfg: &FloodwatchConfig,
    last_bins: &LastBins,
) -> Vec<Incident> {
    scored.sort_by(|a, b| {
        a.alert
            .device_name
            .cmp(&b.alert.device_name)
            .then(a.bin.cmp(&b.bin))
    });
    // Filed in time order, as the live service files them.
    let mut order: Vec<usize> = (0..scored.len()).collect();
    order.sort_by(|&a, &b| {
        scored[a].bin.cmp(&scored[b].bin).then(
            scored[a]
                .alert
                .device_name
                .cmp(&scored[b].alert.device_name),
        )
    });
    let mut linker = Linker::new(cfg, width);
    let mut ids = vec![String::new(); scored.len()];
    let mut renamed: HashMap<String, String> = HashMap::new();
    // Attack incidents by id, and whether they ended before the data did.
    let mut attacks: HashMap<String, (Attack, bool)> = HashMap::new();
    for &i in &order {
        for a in linker.close_below(scored[i].bin) {
            attacks.insert(a.id.clone(), (a, true));
        }
        let f = linker.file(&scored[i].alert, scored[i].bin, true);
        for a in f.ended {
            attacks.insert(a.id.clone(), (a, true));
        }
        if let Some(old) = f.renamed {
            renamed.insert(old, f.incident_id.clone());
        }
        ids[i] = f.incident_id;
    }
    for a in linker.attacks() {
        attacks.insert(a.id.clone(), (a.clone(), false));
    }
    let mut by_id: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, id) in ids.into_iter().enumerate() {
        let id = renamed.get(&id).cloned().unwrap_or(id);
        by_id.entry(id).or_default().push(i);
    }
    let groups: Vec<(String, Vec<usize>)> = by_id.into_iter().collect();
    // Carpet bombing: overlapping attack incidents, merged by sweeping over start time.
    let span = |g: &[usize]| {
        let first = g.iter().map(|&i| scored[i].bin).min().unwrap_or(0);
        let last = g.iter().map(|&i| scored[i].bin).max().unwrap_or(0);
        (first, last)
    };
    let mut order: Vec<usize> = (0..groups.len())
        .filter(|&k| attacks.contains_key(&groups[k].0))
        .collect();
    order.sort_by_key(|&k| (span(&groups[k].1), k));
    let mut components: Vec<Vec<usize>> = Vec::new();
    let mut reach = i64::MIN;
    for k in order {
        let (s, e) = span(&groups[k].1);
        match components.last_mut() {
            Some(c) if s <= reach => {
                c.push(k);
                reach = reach.max(e);
            }
            _ => {
                components.push(vec![k]);
                reach = e;
            }
        }
    }
    let mut merged = vec![false; groups.len()];
    let mut incidents: Vec<Incident> = Vec::new();
    for c in components {
        let devices: BTreeSet<&str> = c
            .iter()
            .map(|&k| scored[groups[k].1[0]].alert.device_name.as_str())
            .collect();
        let has_carpet = c
            .iter()
            .any(|&k| groups[k].1.iter().any(|&i| scored[i].carpet));
        if devices.len() >= cfg.carpet_min_devices as usize && has_carpet {
            let mut idx: Vec<usize> = c.iter().flat_map(|&k| groups[k].1.clone()).collect();
            idx.sort_by(|&a, &b| {
                scored[a].bin.cmp(&scored[b].bin).then(
                    scored[a]
                        .alert
                        .device_name
                        .cmp(&scored[b].alert.device_name),
                )
            });
            let members: Vec<&(Attack, bool)> = c
                .iter()
                .filter_map(|&k| attacks.get(&groups[k].0))
                .collect();
            let first = members
                .iter()
                .min_by(|a, b| (a.0.start, &a.0.id).cmp(&(b.0.start, &b.0.id)));
            let campaign = first.map(|m| m.0.campaign.clone());
            let ongoing = members.iter().any(|(a, ended)| {
                !ended && still_going(last_bins, &a.device, a.last, linker.pulse_gap_bins())
            });
            for &k in &c {
                merged[k] = true;
            }
            let inc = make(
                scored,
                &idx,
                IncidentKind::CarpetBombing,
                width,
                cfg,
                campaign,
                ongoing,
            );
            for &i in &idx {
                scored[i].alert.incident_id = Some(inc.incident_id.clone());
            }
            incidents.push(inc);
        }
    }
    for (k, (id, idx)) in groups.iter().enumerate() {
        if merged[k] {
            continue;
        }
        let device = scored[idx[0]].alert.device_name.as_str();
        let (campaign, ongoing) = match attacks.get(id) {
            Some((a, ended)) => (
                Some(a.campaign.clone()),
                !ended && still_going(last_bins, device, a.last, linker.pulse_gap_bins()),
            ),
            None => {
                let last = idx.iter().map(|&i| scored[i].bin).max().unwrap_or(0);
                (
                    None,
                    still_going(last_bins, device, last, cfg.incident_gap_bins as i64),
                )
            }
        };
        let mut inc = make(
            scored,
            idx,
            IncidentKind::Device,
            width,
            cfg,
            campaign,
            ongoing,
        );
        inc.incident_id.clone_from(id);
        for &i in idx {
            scored[i].alert.incident_id = Some(id.clone());
        }
        incidents.push(inc);
    }
    incidents.sort_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(a.incident_id.cmp(&b.incident_id))
    });
    incidents
}

/// Whether an incident whose last alert bin on `device` is `last` may still grow: the device's
/// last scored bin is at most `gap` bins after it.
fn still_going(last_bins: &LastBins, device: &str, last: i64, gap: i64) -> bool {
    last_bins.get(device).is_some_and(|&end| last + gap >= end)
}

/// The stretches of `idx`'s bins (sorted by bin) at most `incident_gap_bins` apart.
fn pulses(scored: &[Scored], idx: &[usize], width: BinWidth, gap: i64) -> Vec<Pulse> {
    let mut out: Vec<PulseBins> = Vec::new();
    for &i in idx {
        let (bin, count) = (scored[i].bin, scored[i].alert.request_count);
        match out.last_mut() {
            Some(p) if bin - p.last <= gap + 1 => {
                p.last = p.last.max(bin);
                p.peak = p.peak.max(count);
            }
            _ => out.push(PulseBins {
                start: bin,
                last: bin,
                peak: count,
            }),
        }
    }
    out.iter().map(|p| p.pulse(width)).collect()
}

fn make(
    scored: &[Scored],
    idx: &[usize],
    kind: IncidentKind,
    width: BinWidth,
    cfg: &FloodwatchConfig,
    campaign_id: Option<String>,
    ongoing: bool,
) -> Incident {
    let first = idx.iter().map(|&i| scored[i].bin).min().unwrap_or(0);
    let start = width.start(first);
    let devices: BTreeSet<String> = idx
        .iter()
        .map(|&i| scored[i].alert.device_name.clone())
        .collect();
    let last = idx.iter().map(|&i| scored[i].bin).max().unwrap_or(first);
    let peak_i = idx
        .iter()
        .copied()
        .max_by(|&a, &b| {
            scored[a]
                .alert
                .request_count
                .cmp(&scored[b].alert.request_count)
                .then(scored[b].bin.cmp(&scored[a].bin))
        })
        .unwrap_or(idx[0]);
    let peak = &scored[peak_i].alert;
    // Summed over the incident's alerts: exact only when the source was listed, exactly, in
    // every one of them (a bin where it fell off the list adds an unknown amount); otherwise the
    // sum of lower bounds is still a lower bound.
    let mut tops: BTreeMap<&str, (u64, usize, bool)> = BTreeMap::new();
    for &i in idx {
        for t in &scored[i].alert.top_sources {
            let e = tops.entry(t.ip.as_str()).or_insert((0, 0, true));
            e.0 += t.count;
            e.1 += 1;
            e.2 &= t.exact;
        }
    }
    let mut tops: Vec<TopSource> = tops
        .into_iter()
        .map(|(ip, (count, listed, exact))| TopSource {
            ip: ip.to_owned(),
            count,
            exact: exact && listed == idx.len(),
            count_upper_bound: None,
        })
        .collect();
    tops.sort_by(|a, b| b.count.cmp(&a.count).then(a.ip.cmp(&b.ip)));
    tops.truncate(TOP_SOURCES);
    let suppressed = idx.iter().all(|&i| scored[i].alert.suppressed);
    let id = match kind {
        IncidentKind::Device => device_incident_id(&peak.device_name, start),
        IncidentKind::CarpetBombing => format!("FW-carpet-{}", compact(start)),
    };
    Incident {
        incident_id: id,
        campaign_id: if suppressed { None } else { campaign_id },
        kind,
        devices: devices.into_iter().collect(),
        start,
        end: (!ongoing).then(|| width.start(last + 1)),
        peak: Peak {
            time_generated: peak.time_generated,
            device_name: peak.device_name.clone(),
            request_count: peak.request_count,
        },
        vector: peak.vector.unwrap_or(Vector::Mixed),
        pulses: pulses(scored, idx, width, cfg.incident_gap_bins as i64),
        top_sources: tops,
        alert_bins: idx
            .iter()
            .map(|&i| AlertBin {
                time_generated: scored[i].alert.time_generated,
                device_name: scored[i].alert.device_name.clone(),
            })
            .collect(),
        severity: idx
            .iter()
            .map(|&i| scored[i].alert.severity)
            .max()
            .unwrap_or(Severity::Informational),
        attack_confidence: idx
            .iter()
            .map(|&i| scored[i].alert.attack_confidence)
            .max()
            .unwrap_or(Confidence::Low),
        suppressed,
        suppression_reason: if suppressed {
            scored[idx[0]].alert.suppression_reason.clone()
        } else {
            None
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const W: BinWidth = BinWidth::FIVE_MINUTES;

    fn alert(device: &str, bin: i64, count: u64, suppressed: bool, carpet: bool) -> Scored {
        let mut s = crate::floodwatch::detector::scored_fixture(
            device,
            bin,
            W,
            count,
            "203.0.113.1".into(),
        );
        if suppressed {
            s.alert.severity = Severity::Informational;
            s.alert.suppressed = true;
            s.alert.suppression_reason = Some("flash crowd".into());
        }
        s.carpet = carpet;
        s
    }

    fn last(pairs: &[(&str, i64)]) -> LastBins {
        pairs.iter().map(|(d, b)| (d.to_string(), *b)).collect()
    }

    #[test]
    fn consecutive_bins_with_one_gap_make_one_incident() {
        let cfg = FloodwatchConfig::default();
        let mut s = vec![
            alert("web01", 100, 10, false, false),
            alert("web01", 101, 50, false, false),
            alert("web01", 103, 20, false, false), // one quiet bin: same run
            alert("web01", 111, 5, false, false),  // seven: past the pulse gap, new incident
        ];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 200)]));
        assert_eq!(inc.len(), 2);
        assert_eq!(inc[0].alert_bins.len(), 3);
        assert_eq!(inc[0].start, W.start(100));
        assert_eq!(inc[0].end, Some(W.start(104)));
        assert_eq!(inc[0].peak.request_count, 50);
        assert_eq!(inc[0].peak.time_generated, W.start(101));
        assert_eq!(inc[0].top_sources[0].count, 80);
        assert_eq!(inc[0].incident_id, "FW-web01-19700101T082000Z");
        assert!(
            s[..3]
                .iter()
                .all(|a| a.alert.incident_id.as_deref() == Some(inc[0].incident_id.as_str()))
        );
        assert_eq!(
            s[3].alert.incident_id.as_deref(),
            Some(inc[1].incident_id.as_str())
        );
    }

    #[test]
    fn ongoing_at_the_end_of_data() {
        let cfg = FloodwatchConfig::default();
        let mut s = vec![
            alert("web01", 198, 10, false, false),
            alert("web01", 199, 10, false, false),
        ];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 200)]));
        assert_eq!(inc[0].end, None);
    }

    #[test]
    fn all_suppressed_is_a_suppressed_incident() {
        let cfg = FloodwatchConfig::default();
        let mut s = vec![
            alert("web01", 10, 10, true, false),
            alert("web01", 11, 10, true, false),
        ];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 200)]));
        assert!(inc[0].suppressed);
        assert_eq!(inc[0].suppression_reason.as_deref(), Some("flash crowd"));
        assert_eq!(inc[0].severity, Severity::Informational);
        let mut s = vec![
            alert("web01", 10, 10, true, false),
            alert("web01", 11, 10, false, false),
        ];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 200)]));
        assert!(!inc[0].suppressed);
    }

    #[test]
    fn carpet_bombing_merges_overlapping_devices() {
        let cfg = FloodwatchConfig::default();
        let mut s = vec![
            alert("web01", 50, 300, false, true),
            alert("web01", 51, 300, false, true),
            alert("web02", 51, 280, false, true),
            alert("web03", 50, 310, false, false),
            alert("web04", 52, 290, false, true),
            alert("web01", 52, 900, false, true),
            // A separate, later attack on web05 stays its own incident.
            alert("web05", 80, 5000, false, false),
        ];
        let lb = last(&[
            ("web01", 99),
            ("web02", 99),
            ("web03", 99),
            ("web04", 99),
            ("web05", 99),
        ]);
        let inc = build_incidents(&mut s, W, &cfg, &lb);
        assert_eq!(inc.len(), 2);
        let carpet = &inc[0];
        assert_eq!(carpet.kind, IncidentKind::CarpetBombing);
        assert_eq!(carpet.devices, vec!["web01", "web02", "web03", "web04"]);
        assert_eq!(carpet.alert_bins.len(), 6);
        assert_eq!(carpet.peak.device_name, "web01");
        assert_eq!(carpet.peak.request_count, 900);
        assert_eq!(carpet.end, Some(W.start(53)));
        assert!(carpet.incident_id.starts_with("FW-carpet-"));
        assert_eq!(inc[1].devices, vec!["web05"]);
        // Overlap without any fleet-wide bin is not carpet bombing.
        let mut s: Vec<Scored> = ["a", "b", "c"]
            .iter()
            .map(|d| alert(d, 5, 10, false, false))
            .collect();
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("a", 99), ("b", 99), ("c", 99)]));
        assert_eq!(inc.len(), 3);
    }

    #[test]
    fn incident_json_is_pascal_case_and_round_trips() {
        let cfg = FloodwatchConfig::default();
        let mut s = vec![alert("web01", 198, 10, false, false)];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 199)]));
        let j = serde_json::to_value(&inc[0]).unwrap();
        assert_eq!(j["End"], serde_json::Value::Null);
        assert_eq!(j["Kind"], "device");
        assert!(
            j["AlertBins"][0]["TimeGenerated"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        assert_eq!(j["Peak"]["RequestCount"], 10);
        let back: Incident = serde_json::from_value(j).unwrap();
        assert_eq!(back, inc[0]);
    }

    /// 5-minute bins in a day.
    const DAY: i64 = 288;

    fn sources(mut s: Scored, ips: &[u32]) -> Scored {
        s.alert.top_sources = ips
            .iter()
            .map(|i| TopSource {
                ip: format!("198.51.{}.{}", i / 256, i % 256),
                count: 100,
                exact: true,
                count_upper_bound: None,
            })
            .collect();
        s
    }

    fn vector(mut s: Scored, v: Vector) -> Scored {
        s.alert.vector = Some(v);
        s
    }

    fn ids(s: &[Scored]) -> Vec<(i64, String)> {
        s.iter()
            .map(|a| (a.bin, a.alert.incident_id.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn pulses_within_the_pulse_gap_are_one_incident_listing_each_pulse() {
        let cfg = FloodwatchConfig::default();
        // Three pulses of one HTTPS flood: 2 and then 6 quiet bins (30 minutes) apart.
        let mut s = vec![
            alert("web01", 100, 900, false, false),
            alert("web01", 101, 1200, false, false),
            alert("web01", 104, 700, false, false),
            alert("web01", 111, 1500, false, false),
        ];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 200)]));
        assert_eq!(inc.len(), 1, "{inc:#?}");
        let i = &inc[0];
        assert_eq!(i.incident_id, "FW-web01-19700101T082000Z");
        assert_eq!(i.alert_bins.len(), 4);
        assert_eq!(i.start, W.start(100));
        assert_eq!(i.end, Some(W.start(112)));
        assert_eq!(i.peak.request_count, 1500);
        let pulses: Vec<(Nanos, Nanos, u64)> = i
            .pulses
            .iter()
            .map(|p| (p.start, p.end, p.peak_request_count))
            .collect();
        assert_eq!(
            pulses,
            vec![
                (W.start(100), W.start(102), 1200),
                (W.start(104), W.start(105), 700),
                (W.start(111), W.start(112), 1500),
            ]
        );
        assert!(
            s.iter()
                .all(|a| a.alert.incident_id.as_deref() == Some(i.incident_id.as_str()))
        );
        assert_eq!(
            i.campaign_id.as_deref(),
            Some("FW-campaign-web01-19700101T082000Z")
        );
    }

    #[test]
    fn a_longer_gap_or_another_vector_splits_a_pulse_wave() {
        let cfg = FloodwatchConfig::default();
        // Seven quiet bins (35 minutes) is past the 30-minute pulse gap.
        let mut s = vec![
            alert("web01", 100, 900, false, false),
            alert("web01", 108, 900, false, false),
        ];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 200)]));
        assert_eq!(inc.len(), 2);
        assert_eq!(inc[0].end, Some(W.start(101)));
        assert_eq!(inc[1].pulses.len(), 1);
        // Two quiet bins, but a SYN flood after an HTTPS one: another attack.
        let mut s = vec![
            alert("web01", 100, 900, false, false),
            vector(alert("web01", 103, 900, false, false), Vector::SynFlood),
        ];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 200)]));
        assert_eq!(inc.len(), 2);
        assert_eq!(inc[1].vector, Vector::SynFlood);
        // A shorter pulse gap, configured, splits what the default joins.
        let cfg = FloodwatchConfig {
            pulse_gap_minutes: 10,
            ..FloodwatchConfig::default()
        };
        let mut s = vec![
            alert("web01", 100, 900, false, false),
            alert("web01", 103, 900, false, false),
            alert("web01", 107, 900, false, false),
        ];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 200)]));
        assert_eq!(inc.len(), 2, "{inc:#?}");
        assert_eq!(inc[0].pulses.len(), 2);
        assert_eq!(inc[1].start, W.start(107));
    }

    #[test]
    fn a_suppressed_surge_between_pulses_stays_its_own_incident() {
        let cfg = FloodwatchConfig::default();
        let mut s = vec![
            alert("web01", 100, 900, false, false),
            alert("web01", 103, 400, true, false),
            alert("web01", 106, 800, false, false),
        ];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 200)]));
        assert_eq!(inc.len(), 2, "{inc:#?}");
        let attack = &inc[0];
        assert!(!attack.suppressed);
        assert_eq!(attack.pulses.len(), 2);
        assert_eq!(
            attack
                .alert_bins
                .iter()
                .map(|b| b.time_generated)
                .collect::<Vec<_>>(),
            vec![W.start(100), W.start(106)]
        );
        let surge = &inc[1];
        assert!(surge.suppressed);
        assert_eq!(surge.start, W.start(103));
        assert_eq!(surge.campaign_id, None);
        assert_eq!(surge.pulses.len(), 1);
        assert_eq!(
            ids(&s),
            vec![
                (100, attack.incident_id.clone()),
                (103, surge.incident_id.clone()),
                (106, attack.incident_id.clone()),
            ]
        );
        // A run that opens suppressed and turns into the next pulse joins whole: its leading
        // suppressed bin belongs to the attack.
        let mut s = vec![
            alert("web01", 100, 900, false, false),
            alert("web01", 104, 400, true, false),
            alert("web01", 105, 800, false, false),
        ];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 200)]));
        assert_eq!(inc.len(), 1, "{inc:#?}");
        assert_eq!(inc[0].alert_bins.len(), 3);
        assert_eq!(inc[0].pulses[1].start, W.start(104));
        assert!(
            s.iter()
                .all(|a| a.alert.incident_id == Some(inc[0].incident_id.clone()))
        );
    }

    #[test]
    fn an_attack_is_ongoing_until_its_pulse_gap_has_passed() {
        let cfg = FloodwatchConfig::default();
        let build = |end: i64| {
            let mut s = vec![alert("web01", 100, 900, false, false)];
            build_incidents(&mut s, W, &cfg, &last(&[("web01", end)]))[0].end
        };
        assert_eq!(
            build(106),
            None,
            "six quiet bins scored: a pulse may still come"
        );
        assert_eq!(build(107), Some(W.start(101)));
        // A suppressed surge ends after `incident_gap_bins`, as before.
        let mut s = vec![alert("web01", 100, 900, true, false)];
        let inc = build_incidents(&mut s, W, &cfg, &last(&[("web01", 102)]));
        assert_eq!(inc[0].end, Some(W.start(101)));
    }

    #[test]
    fn incidents_of_one_device_within_the_campaign_gap_share_a_campaign() {
        let cfg = FloodwatchConfig::default();
        let mut s = vec![
            alert("web01", 100, 900, false, false),
            alert("web01", 101, 900, false, false),
            // Two days later: the same campaign.
            alert("web01", 101 + 2 * DAY, 900, false, false),
            // Three days and ten minutes after that one's last bin: a new campaign.
            alert("web01", 101 + 5 * DAY + 2, 900, false, false),
            // Another device at the same time, no shared sources: its own.
            alert("web02", 101 + 2 * DAY, 900, false, false),
        ];
        let lb = last(&[("web01", 10 * DAY), ("web02", 10 * DAY)]);
        let inc = build_incidents(&mut s, W, &cfg, &lb);
        assert_eq!(inc.len(), 4);
        let first = "FW-campaign-web01-19700101T082000Z";
        let campaigns: Vec<(&str, Option<&str>)> = inc
            .iter()
            .map(|i| (i.devices[0].as_str(), i.campaign_id.as_deref()))
            .collect();
        assert_eq!(campaigns[0], ("web01", Some(first)));
        assert_eq!(campaigns[1].1, Some(first));
        assert_eq!(campaigns[2].0, "web02");
        assert_ne!(campaigns[2].1, Some(first));
        assert_eq!(campaigns[3].0, "web01");
        assert_eq!(
            campaigns[3].1.map(|c| c.to_owned()),
            Some(campaign_id(&inc[3].incident_id)),
            "beyond the gap: a campaign of its own"
        );
        // A longer gap, configured, links that one too.
        let cfg = FloodwatchConfig {
            campaign_gap_hours: 96,
            ..FloodwatchConfig::default()
        };
        let inc = build_incidents(&mut s, W, &cfg, &lb);
        assert_eq!(inc[3].campaign_id.as_deref(), Some(first));
    }

    #[test]
    fn incidents_sharing_most_top_sources_share_a_campaign_across_devices() {
        let cfg = FloodwatchConfig::default();
        let botnet: Vec<u32> = (1..=10).collect();
        let mut s = vec![
            sources(alert("web01", 100, 900, false, false), &botnet),
            // A day later on another device: 7 of its 10 top sources are the botnet's.
            sources(
                alert("api01", 100 + DAY, 900, false, false),
                &[1, 2, 3, 4, 5, 6, 7, 50, 51, 52],
            ),
            // Only 5 of 10 shared: below the 0.6 share.
            sources(
                alert("db01", 100 + DAY, 900, false, false),
                &[1, 2, 3, 4, 5, 60, 61, 62, 63, 64],
            ),
            // The whole botnet, but three days and five minutes after api01's: past the gap.
            sources(
                alert("dns01", 100 + 4 * DAY + 1, 900, false, false),
                &botnet,
            ),
        ];
        let lb: LastBins = ["web01", "api01", "db01", "dns01"]
            .iter()
            .map(|d| (d.to_string(), 10 * DAY))
            .collect();
        let inc = build_incidents(&mut s, W, &cfg, &lb);
        let of = |d: &str| {
            inc.iter()
                .find(|i| i.devices == [d])
                .and_then(|i| i.campaign_id.clone())
                .unwrap()
        };
        let first = "FW-campaign-web01-19700101T082000Z";
        assert_eq!(of("web01"), first);
        assert_eq!(of("api01"), first);
        assert_ne!(of("db01"), first);
        assert_ne!(of("dns01"), first);
        assert!(shares_sources(
            &["a".into(), "b".into(), "c".into()],
            &["c".into(), "b".into(), "a".into(), "d".into()],
            1.0
        ));
        assert!(
            !shares_sources(&["a".into(), "b".into()], &["a".into(), "b".into()], 0.5),
            "two addresses are too few to link"
        );
    }

    #[test]
    fn a_suppressed_surge_never_joins_or_starts_a_campaign() {
        let cfg = FloodwatchConfig::default();
        let botnet: Vec<u32> = (1..=10).collect();
        let mut s = vec![
            // A flash crowd on web01 whose top sources are the botnet's...
            sources(alert("web01", 100, 900, true, false), &botnet),
            // ... then the botnet on web02 and, later, web01: neither links to the surge.
            sources(alert("web02", 200, 900, false, false), &botnet),
            sources(alert("web01", 300, 900, false, false), &[90, 91, 92]),
            // A suppressed surge after an attack on the same device stays out of its campaign.
            sources(alert("web02", 220, 900, true, false), &botnet),
        ];
        let lb = last(&[("web01", 999), ("web02", 999)]);
        let inc = build_incidents(&mut s, W, &cfg, &lb);
        assert_eq!(inc.len(), 4);
        assert_eq!(inc.iter().filter(|i| i.suppressed).count(), 2);
        for i in &inc {
            let own = (!i.suppressed).then(|| campaign_id(&i.incident_id));
            assert_eq!(i.campaign_id, own, "{i:#?}");
        }
    }

    #[test]
    fn the_linker_survives_serde_and_goes_on_alike() {
        let cfg = FloodwatchConfig::default();
        let botnet: Vec<u32> = (1..=10).collect();
        let first = [
            sources(alert("web01", 100, 900, false, false), &botnet),
            sources(alert("web01", 103, 900, false, false), &botnet),
        ];
        let later = [
            sources(alert("web01", 106, 900, false, false), &botnet),
            sources(alert("web02", 100 + DAY, 900, false, false), &botnet),
        ];
        let mut whole = Linker::new(&cfg, W);
        let mut split = Linker::new(&cfg, W);
        for a in &first {
            whole.close_below(a.bin);
            split.close_below(a.bin);
            assert_eq!(
                whole.file(&a.alert, a.bin, true),
                split.file(&a.alert, a.bin, true)
            );
        }
        let json = serde_json::to_string(&split).unwrap();
        let mut split: Linker = serde_json::from_str(&json).unwrap();
        let mut ended = Vec::new();
        for a in &later {
            let ended_w = whole.close_below(a.bin);
            assert_eq!(ended_w, split.close_below(a.bin));
            ended.extend(ended_w);
            let (w, s) = (
                whole.file(&a.alert, a.bin, true),
                split.file(&a.alert, a.bin, true),
            );
            assert_eq!(w, s);
        }
        assert_eq!(split, whole);
        // The wave on web01 was one attack of three pulses; web02 a day later is in its campaign.
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].pulses.len(), 3);
        assert_eq!(ended[0].alert_bins, 3);
        let a = split.attack("web02").unwrap();
        assert_eq!(a.campaign, "FW-campaign-web01-19700101T082000Z");
        let ended = split.close_below(100 + DAY + 10);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].device, "web02");
    }

    #[test]
    fn pulse_and_campaign_settings_are_validated() {
        let c = FloodwatchConfig {
            campaign_source_share: 0.0,
            ..FloodwatchConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("campaign_source_share"));
        let c = FloodwatchConfig {
            pulse_gap_minutes: 120,
            campaign_gap_hours: 1,
            ..FloodwatchConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("pulse_gap_minutes"));
        let c: FloodwatchConfig =
            serde_json::from_str(r#"{"pulse_gap_minutes": 15, "campaign_gap_hours": 48}"#).unwrap();
        c.validate().unwrap();
        assert_eq!(Linker::new(&c, W).pulse_gap_bins(), 3);
    }

    /// Live, an early decision on bin 104 may come before bin 103 is sealed: the late bin
    /// joins the same pulse of the same incident, nothing ends or opens again.
    #[test]
    fn a_bin_sealed_after_an_early_decision_on_the_next_joins_its_pulse() {
        let cfg = FloodwatchConfig::default();
        let mut l = Linker::new(&cfg, W);
        let a = alert("web01", 100, 900, false, false);
        assert!(l.file(&a.alert, 100, true).opened);
        let early = alert("web01", 104, 300, false, false);
        let f = l.file(&early.alert, 104, false);
        assert!(!f.opened && f.ended.is_empty(), "{f:?}");
        let late = alert("web01", 103, 700, false, false);
        let f = l.file(&late.alert, 103, true);
        assert!(!f.opened && f.ended.is_empty(), "{f:?}");
        assert_eq!(f.incident_id, "FW-web01-19700101T082000Z");
        let bin = alert("web01", 104, 800, false, false);
        let f = l.file(&bin.alert, 104, true);
        assert_eq!(f.incident_id, "FW-web01-19700101T082000Z");
        let at = l.attack("web01").unwrap();
        assert_eq!(
            at.pulses,
            vec![
                PulseBins {
                    start: 100,
                    last: 100,
                    peak: 900
                },
                PulseBins {
                    start: 103,
                    last: 104,
                    peak: 800
                },
            ]
        );
        assert_eq!(at.alert_bins, 3);
    }
}
