//! The live engine: partial aggregates in, alerts and incident changes out, as telemetry
//! arrives.
//!
//! # Time
//!
//! Everything is event time. The engine's *watermark* is the newest event time of the slowest
//! input that is not idle, minus [`LiveConfig::lateness`] (one input behind another, or a
//! backlog read partition by partition, does not make the others' events late); a bin is sealed (complete, scored by the same
//! [`floodwatch_detect::floodwatch::Stream`] as a batch run) once the watermark passes its end,
//! and events for a sealed bin are *late*: counted by source and dropped. One watermark serves
//! every device, so a device that goes quiet has its bins closed by the others' traffic; when
//! the whole stream goes quiet, the service (which owns the wall clock) calls
//! [`Engine::advance`] so that the last bins close too; that is the one place wall time enters,
//! and the service journals it, so a replay after a crash takes the same decisions.
//!
//! # Early decisions
//!
//! Each time event time passes the end of a sub-window ([`LiveConfig::step`], 10 s by
//! default), every device's open bin is judged on what it holds so far, and on its last
//! [`LiveConfig::early_trailing`] sub-windows alone (a flood that starts mid-bin is diluted in
//! the bin so far, not in the trailing stretch): each stretch is projected onto the whole bin at
//! its own rate and put through the complete bin's tests, suppression included
//! ([`floodwatch_detect::floodwatch::Detector::preview`]). An `early` alert also needs the
//! stretch itself, unprojected, to stand out of the noise (`early_z` noise units above its
//! expected part, and `early_min_excess` connections), so that a few seconds of a quiet device
//! do not extrapolate into a flood. Devices rising together in the same stretch are put
//! through the fleet-wide (carpet) test the same way. The bin's own alert
//! follows when it is sealed; an early alert that its bin does not confirm is counted
//! ([`Counters::early_unconfirmed`]).
//!
//! # What crosses between reading and detecting
//!
//! A [`Partial`]: per (device, sub-window) aggregates, keyed by device name, serializable and
//! mergeable. Readers may send the same sub-window many times (each batch's share); the engine
//! merges them. This is the unit a scale-out puts on a keyed topic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use floodwatch_core::time::{Nanos, Rfc3339};
use floodwatch_core::{Aggregates, BinAgg, BinKey, BinWidth, DeviceTable};
use floodwatch_detect::floodwatch::incident::{Attack, Linker, Pulse, compact};
use floodwatch_detect::floodwatch::{FloodwatchConfig, Scored, Stream, StreamState, stands_out};
use floodwatch_detect::{Alert, Severity};

/// How the live engine closes bins and decides early. Every field has a `[serve]` key.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveConfig {
    /// Bin width (as the batch run's). Default 5 min.
    pub width: BinWidth,
    /// Sub-window: readers aggregate at this width, early decisions are taken each time event
    /// time passes one. Must divide the bin width. Default 10 s.
    pub step: BinWidth,
    /// How far (event time) behind the newest event an event may come and still count.
    /// Default 2 min.
    pub lateness: Nanos,
    /// Decide inside the open bin. Default on.
    pub early: bool,
    /// Sub-windows in the trailing stretch judged early. Default 3 (30 s).
    pub early_trailing: u32,
    /// An early decision needs the stretch's own excess (not projected) to be at least this
    /// many noise units. Default 6.
    pub early_z: f64,
    /// ... and at least this many connections. Default 20.
    pub early_min_excess: f64,
    /// The same for each device of an early fleet-wide (carpet) decision, whose evidence is
    /// the devices together. Default 3.
    pub carpet_z: f64,
}

impl LiveConfig {
    pub const DEFAULT_LATENESS: Nanos = 120 * 1_000_000_000;

    pub fn new(width: BinWidth) -> Self {
        LiveConfig {
            width,
            step: BinWidth::from_secs(10).unwrap_or(width),
            lateness: Self::DEFAULT_LATENESS,
            early: true,
            early_trailing: 3,
            early_z: 6.0,
            early_min_excess: 20.0,
            carpet_z: 3.0,
        }
    }

    /// Errors name the setting.
    pub fn validate(&self) -> Result<(), String> {
        let (w, s) = (self.width.nanos(), self.step.nanos());
        if s > w || w % s != 0 {
            return Err(format!(
                "early step {}s must divide the bin width {}s",
                s / 1_000_000_000,
                w / 1_000_000_000
            ));
        }
        if self.lateness < 0 {
            return Err("lateness must not be negative".into());
        }
        if self.early_trailing == 0 {
            return Err("early_trailing must be at least 1".into());
        }
        Ok(())
    }
}

/// Per (device, sub-window) aggregates from one reader batch: the unit that crosses from
/// reading to detecting.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Partial {
    /// Which input it came from (`http`, `kafka:TOPIC/PARTITION`, `file:PATH`, ...), for the
    /// late counts.
    pub source: String,
    /// Aggregates at the sub-window width, with the batch's event stats.
    pub aggs: Aggregates,
}

impl Partial {
    /// Splits into one partial per device (the key a scale-out topic partitions by).
    pub fn by_device(self) -> Vec<(String, Partial)> {
        let mut out: BTreeMap<String, Aggregates> = BTreeMap::new();
        let width = self.aggs.width;
        for (k, agg) in self.aggs.bins {
            let name = self.aggs.devices.name(k.device).to_owned();
            let a = out
                .entry(name.clone())
                .or_insert_with(|| Aggregates::empty(width));
            let id = a.devices.intern(&name);
            a.bins.insert(
                BinKey {
                    device: id,
                    bin: k.bin,
                },
                agg,
            );
        }
        let stats = self.aggs.stats;
        out.into_iter()
            .map(|(name, mut aggs)| {
                aggs.stats = stats;
                (
                    name,
                    Partial {
                        source: self.source.clone(),
                        aggs,
                    },
                )
            })
            .collect()
    }
}

/// Which decision an alert comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Inside the open bin, on part of it.
    Early,
    /// The complete bin.
    Bin,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Early => "early",
            Stage::Bin => "bin",
        }
    }
}

/// An alert as the live service emits it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveAlert {
    /// Stable: the same decision after a restart has the same id.
    pub alert_id: String,
    pub stage: Stage,
    /// The event time at which it was decided.
    pub detected_at: Nanos,
    pub alert: Alert,
    /// Bin index, and whether the fleet-wide test raised it (for rebuilding incidents).
    pub bin: i64,
    pub carpet: bool,
}

impl LiveAlert {
    pub fn id(stage: Stage, device: &str, bin_start: Nanos) -> String {
        format!("{}-{}-{device}", stage.as_str(), compact(bin_start))
    }

    /// The alert JSON `detect` writes, plus `AlertId`, `Stage` and `DetectedAt`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.alert).unwrap_or(serde_json::Value::Null);
        if let Some(m) = v.as_object_mut() {
            m.insert("AlertId".into(), self.alert_id.clone().into());
            m.insert("Stage".into(), self.stage.as_str().into());
            m.insert(
                "DetectedAt".into(),
                Rfc3339(self.detected_at).to_string().into(),
            );
        }
        v
    }

    /// The scored form the incident builder takes (bin-stage alerts).
    pub fn scored(&self) -> Scored {
        Scored {
            alert: self.alert.clone(),
            bin: self.bin,
            carpet: self.carpet,
        }
    }
}

/// What happened to an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentPhase {
    /// Its first unsuppressed alert.
    Opened,
    /// Its severity rose.
    Escalated,
    /// It ended: no further pulse came within the pulse gap after its last alert bin.
    Closed,
}

impl IncidentPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentPhase::Opened => "opened",
            IncidentPhase::Escalated => "escalated",
            IncidentPhase::Closed => "closed",
        }
    }
}

/// A change of an incident, for chat and webhook sinks: one message when it opens, updates
/// when it escalates and when it ends (a pulse wave is one incident: its pulses do not open
/// and end incidents of their own). Most are a device's; a fleet-wide (carpet bombing)
/// incident lists its `Devices` and escalates as devices join it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IncidentEvent {
    /// Stable: `<IncidentId>:<phase>[:<n>]`.
    pub event_id: String,
    pub incident_id: String,
    /// The campaign it belongs to (see [`floodwatch_detect::floodwatch::incident`]).
    #[serde(default)]
    pub campaign_id: Option<String>,
    pub phase: IncidentPhase,
    pub device_name: String,
    /// Start of its first alert bin.
    pub start: Nanos,
    /// End of its last alert bin (when closed).
    pub end: Option<Nanos>,
    /// Event time of the decision.
    pub detected_at: Nanos,
    pub severity: Severity,
    pub vector: Option<String>,
    /// The highest connection count of its bins so far.
    pub peak_requests: u64,
    pub alert_bins: u32,
    /// Its pulses so far, each with its start, end and peak.
    #[serde(default)]
    pub pulses: Vec<Pulse>,
    /// The alert that caused this change (the last one, when closed).
    pub alert: Alert,
    /// For a fleet-wide (carpet bombing) incident, its devices so far; empty for a device's.
    #[serde(default)]
    pub devices: Vec<String>,
}

/// What the engine emits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Emit {
    Alert(Box<LiveAlert>),
    Incident(Box<IncidentEvent>),
}

/// What the notifications of one open attack incident have said so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Note {
    severity: Severity,
    escalations: u32,
    peak: u64,
    last_alert: Alert,
}

/// Groups alert bins into incidents with the batch incident builder's own [`Linker`] (runs,
/// pulse waves, campaigns), so the ids and campaigns agree, and turns what it does into
/// incident changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    linker: Linker,
    /// Per open attack incident (by id).
    notes: BTreeMap<String, Note>,
    /// The fleet-wide incident under way, if any.
    #[serde(default)]
    carpet: Option<Carpet>,
    /// Devices with open incidents it takes, at least, to call a fleet-wide bin carpet bombing.
    #[serde(default)]
    carpet_min_devices: u32,
}

/// A fleet-wide (carpet bombing) incident under way: announced when a bin raised by the
/// fleet-wide test finds at least `carpet_min_devices` devices with open unsuppressed
/// incidents; it takes every device whose incident overlaps it and ends when the last of
/// their incidents ends. The batch builder's carpet incident (`FW-carpet-<start>`) is the same
/// grouping seen whole: its id is this one's when the devices' incidents started as they did
/// live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Carpet {
    id: String,
    /// Start bin: the earliest of its device incidents'.
    start: i64,
    /// Device incident ids it took, by device.
    members: BTreeMap<String, String>,
    note: Note,
    last_bin: i64,
    /// Complete alert bins of its devices since it opened.
    alert_bins: u32,
    /// The campaign of its earliest device incident, as in the batch view.
    campaign: Option<String>,
}

impl Tracker {
    pub fn new(fw: &FloodwatchConfig, width: BinWidth) -> Self {
        Tracker {
            linker: Linker::new(fw, width),
            notes: BTreeMap::new(),
            carpet: None,
            carpet_min_devices: fw.carpet_min_devices.max(1),
        }
    }

    /// The incident id of a complete bin's alert, given the alerts in time order (streamed
    /// batch output).
    pub fn incident_of(&mut self, alert: &Alert, bin: i64) -> String {
        self.linker.close_below(bin);
        self.linker.file(alert, bin, true).incident_id
    }

    fn event(
        &self,
        phase: IncidentPhase,
        event_id: String,
        a: &Attack,
        note: &Note,
        alert: &Alert,
        at: Nanos,
    ) -> IncidentEvent {
        let width = self.linker.width();
        let closed = phase == IncidentPhase::Closed;
        IncidentEvent {
            event_id,
            incident_id: a.id.clone(),
            campaign_id: Some(a.campaign.clone()),
            phase,
            device_name: a.device.clone(),
            start: width.start(a.start),
            end: closed.then(|| width.start(a.last + 1)),
            detected_at: at,
            severity: note.severity,
            vector: alert.vector.map(|v| v.as_str().to_owned()),
            peak_requests: note.peak,
            alert_bins: a.alert_bins,
            pulses: a.pulses.iter().map(|p| p.pulse(width)).collect(),
            alert: alert.clone(),
            devices: Vec::new(),
        }
    }

    fn carpet_event(
        &self,
        phase: IncidentPhase,
        event_id: String,
        c: &Carpet,
        at: Nanos,
    ) -> IncidentEvent {
        let width = self.linker.width();
        IncidentEvent {
            event_id,
            incident_id: c.id.clone(),
            campaign_id: c.campaign.clone(),
            phase,
            device_name: c.note.last_alert.device_name.clone(),
            start: width.start(c.start),
            end: (phase == IncidentPhase::Closed).then(|| width.start(c.last_bin + 1)),
            detected_at: at,
            severity: c.note.severity,
            vector: c.note.last_alert.vector.map(|v| v.as_str().to_owned()),
            peak_requests: c.note.peak,
            alert_bins: c.alert_bins,
            pulses: Vec::new(),
            alert: c.note.last_alert.clone(),
            devices: c.members.keys().cloned().collect(),
        }
    }

    /// After a complete bin's alert was filed: a fleet-wide one may open the carpet incident
    /// or bring it a device; a device's alert inside one counts towards its peak.
    fn observe_carpet(
        &mut self,
        alert: &Alert,
        bin: i64,
        carpet: bool,
        at: Nanos,
    ) -> Option<IncidentEvent> {
        if alert.suppressed {
            return None;
        }
        // Open unsuppressed device incidents, by device: (id, start, campaign).
        let open: BTreeMap<String, (String, i64, String)> = self
            .notes
            .keys()
            .filter_map(|id| {
                let a = self.linker.attacks().find(|a| &a.id == id)?;
                Some((
                    a.device.clone(),
                    (a.id.clone(), a.start, a.campaign.clone()),
                ))
            })
            .collect();
        match self.carpet.as_mut() {
            None => {
                if !carpet || open.len() < self.carpet_min_devices as usize {
                    return None;
                }
                let start = open.values().map(|v| v.1).min().unwrap_or(bin);
                let campaign = open
                    .values()
                    .min_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)))
                    .map(|v| v.2.clone());
                let c = Carpet {
                    id: format!("FW-carpet-{}", compact(self.linker.width().start(start))),
                    start,
                    members: open.into_iter().map(|(d, v)| (d, v.0)).collect(),
                    note: Note {
                        severity: alert.severity,
                        escalations: 1,
                        peak: alert.request_count,
                        last_alert: alert.clone(),
                    },
                    last_bin: bin,
                    alert_bins: 1,
                    campaign,
                };
                let ev =
                    self.carpet_event(IncidentPhase::Opened, format!("{}:opened", c.id), &c, at);
                self.carpet = Some(c);
                Some(ev)
            }
            Some(c) => {
                let (id, _, _) = open.get(&alert.device_name)?;
                c.last_bin = c.last_bin.max(bin);
                c.alert_bins += 1;
                c.note.peak = c.note.peak.max(alert.request_count);
                c.note.last_alert = alert.clone();
                let joined = c
                    .members
                    .insert(alert.device_name.clone(), id.clone())
                    .is_none();
                let rose = alert.severity > c.note.severity;
                c.note.severity = c.note.severity.max(alert.severity);
                if !(joined || rose) {
                    return None;
                }
                c.note.escalations += 1;
                let c = c.clone();
                Some(self.carpet_event(
                    IncidentPhase::Escalated,
                    format!("{}:escalated:{}", c.id, c.note.escalations - 1),
                    &c,
                    at,
                ))
            }
        }
    }

    /// The carpet incident ends with the last of its devices' incidents.
    fn carpet_closed(&mut self, at: Nanos) -> Option<IncidentEvent> {
        let c = self.carpet.as_ref()?;
        if c.members.values().any(|id| self.notes.contains_key(id)) {
            return None;
        }
        let c = self.carpet.take()?;
        Some(self.carpet_event(IncidentPhase::Closed, format!("{}:closed", c.id), &c, at))
    }

    fn closed(&mut self, a: Attack, at: Nanos) -> Option<IncidentEvent> {
        let note = self.notes.remove(&a.id)?;
        Some(self.event(
            IncidentPhase::Closed,
            format!("{}:closed", a.id),
            &a,
            &note,
            &note.last_alert,
            at,
        ))
    }

    /// Files `alert` (of `bin`) in its incident; returns its incident id and the changes.
    fn observe(
        &mut self,
        alert: &Alert,
        bin: i64,
        stage: Stage,
        at: Nanos,
    ) -> (String, Vec<IncidentEvent>) {
        let filed = self.linker.file(alert, bin, stage == Stage::Bin);
        let mut out: Vec<IncidentEvent> = Vec::new();
        for a in filed.ended {
            out.extend(self.closed(a, at));
        }
        let Some(a) = self
            .linker
            .attack(&alert.device_name)
            .filter(|a| a.id == filed.incident_id)
        else {
            return (filed.incident_id, out);
        };
        let change = match self.notes.get_mut(&a.id) {
            Some(note) => {
                note.last_alert = alert.clone();
                if alert.suppressed {
                    None
                } else {
                    note.peak = note.peak.max(alert.request_count);
                    (alert.severity > note.severity).then(|| {
                        note.severity = alert.severity;
                        note.escalations += 1;
                        (
                            IncidentPhase::Escalated,
                            format!("{}:escalated:{}", a.id, note.escalations),
                        )
                    })
                }
            }
            None => {
                self.notes.insert(
                    a.id.clone(),
                    Note {
                        severity: alert.severity,
                        escalations: 0,
                        peak: alert.request_count,
                        last_alert: alert.clone(),
                    },
                );
                Some((IncidentPhase::Opened, format!("{}:opened", a.id)))
            }
        };
        if let Some((phase, id)) = change
            && let Some(note) = self.notes.get(&a.id)
        {
            out.push(self.event(phase, id, a, note, alert, at));
        }
        (filed.incident_id, out)
    }

    /// Ends the incidents no alert at or after `floor` can extend (every bin below it scored).
    fn close_below(&mut self, floor: i64, at: Nanos) -> Vec<IncidentEvent> {
        let ended = self.linker.close_below(floor);
        let mut out: Vec<IncidentEvent> = ended
            .into_iter()
            .filter_map(|a| self.closed(a, at))
            .collect();
        out.extend(self.carpet_closed(at));
        out
    }

    /// Device incidents still open (an attack until its pulse gap has passed), with their ids.
    pub fn open(&self) -> impl Iterator<Item = (&str, &str)> {
        self.linker.open()
    }
}

/// Counters the service reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Events merged into open bins.
    pub events: u64,
    /// Events (rows, weighted) for bins already sealed, by source.
    pub late: BTreeMap<String, u64>,
    /// Early alerts emitted.
    pub early: u64,
    /// Early alerts whose complete bin raised no unsuppressed alert.
    pub early_unconfirmed: u64,
    /// Bin alerts emitted (suppressed included).
    pub bin_alerts: u64,
    /// Bins sealed and scored.
    pub bins_sealed: u64,
}

/// A sealed bin's numbers, for the service's per-device series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BinSummary {
    pub device_name: String,
    pub bin: i64,
    /// Bin start.
    pub time: Nanos,
    /// Connections per vector group: web, syn (with failed), udp, icmp.
    pub counts: [u64; 4],
    /// Expected connections per group (the baseline median), while the device has one.
    pub expected: Option<[f64; 4]>,
    /// The baseline's spread per group (scaled MAD), alongside `expected` (absent in series
    /// stored before it was kept).
    #[serde(default)]
    pub spread: Option<[f64; 4]>,
    pub distinct_sources: u64,
    /// Whether the bin raised an alert, and whether it was suppressed.
    pub alert: bool,
    pub suppressed: bool,
}

/// One device's open bin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OpenBin {
    agg: BinAgg,
}

/// Everything the engine knows, serializable: what a snapshot stores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    stream: StreamState,
    open: Vec<((String, i64), OpenBin)>,
    /// Per device: its most recent sub-windows, oldest first.
    recent: Vec<(String, Vec<(i64, BinAgg)>)>,
    newest: Option<Nanos>,
    floor: i64,
    early_step: i64,
    early_fired: BTreeSet<(String, i64)>,
    /// `None` in a snapshot of an older build, whose incident tracking cannot be read: the
    /// engine then starts tracking afresh.
    #[serde(default, deserialize_with = "lenient")]
    tracker: Option<Tracker>,
    counters: Counters,
    #[serde(default)]
    newest_by: BTreeMap<String, Nanos>,
    #[serde(default)]
    idle: BTreeSet<String>,
}

/// `T`, or `None` when the stored value is not one (written by an older build).
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

fn summary(
    stream: &Stream,
    fw: &FloodwatchConfig,
    width: BinWidth,
    device: &str,
    bin: i64,
    agg: &BinAgg,
) -> BinSummary {
    use floodwatch_detect::floodwatch::Group;
    let baseline = stream
        .state()
        .devices
        .get(device)
        .and_then(|d| d.expected(bin, fw, width.per_day()));
    let expected = baseline.map(|e| e.map(|(m, _)| m));
    let spread = baseline.map(|e| e.map(|(_, s)| s));
    BinSummary {
        device_name: device.to_owned(),
        bin,
        time: width.start(bin),
        counts: Group::ALL.map(|g| g.count(agg)),
        expected,
        spread,
        distinct_sources: agg.sources.distinct().round() as u64,
        alert: false,
        suppressed: false,
    }
}

/// The live detector; see the module documentation.
pub struct Engine {
    cfg: LiveConfig,
    fw: FloodwatchConfig,
    stream: Stream,
    open: BTreeMap<(String, i64), OpenBin>,
    recent: BTreeMap<String, VecDeque<(i64, BinAgg)>>,
    /// Newest event time seen (or advanced to).
    newest: Option<Nanos>,
    /// Bins below this index are sealed.
    floor: i64,
    /// Sub-windows below this index have been judged early.
    early_step: i64,
    early_fired: BTreeSet<(String, i64)>,
    tracker: Tracker,
    counters: Counters,
    /// Newest event time per input: the watermark follows the slowest input that is not idle.
    newest_by: BTreeMap<String, Nanos>,
    /// Inputs the service found idle (no batch for a while): they do not hold bins open.
    idle: BTreeSet<String>,
    /// Sealed bins not yet taken by [`Engine::take_sealed`] (not part of the state).
    sealed: Vec<BinSummary>,
}

impl Engine {
    pub fn new(cfg: LiveConfig, fw: FloodwatchConfig) -> Self {
        Engine {
            stream: Stream::new(&fw, cfg.width, None),
            tracker: Tracker::new(&fw, cfg.width),
            cfg,
            fw,
            open: BTreeMap::new(),
            recent: BTreeMap::new(),
            newest: None,
            floor: i64::MIN,
            early_step: i64::MIN,
            early_fired: BTreeSet::new(),
            counters: Counters::default(),
            newest_by: BTreeMap::new(),
            idle: BTreeSet::new(),
            sealed: Vec::new(),
        }
    }

    /// Marks which inputs are idle (the service decides, from wall time, and journals it).
    /// An idle input does not hold the watermark back; bins may close.
    pub fn set_idle(&mut self, idle: BTreeSet<String>) -> Vec<Emit> {
        if idle == self.idle {
            return Vec::new();
        }
        self.idle = idle;
        self.decide()
    }

    /// Inputs marked idle.
    pub fn idle(&self) -> &BTreeSet<String> {
        &self.idle
    }

    /// Newest event time per input.
    pub fn newest_by_input(&self) -> &BTreeMap<String, Nanos> {
        &self.newest_by
    }

    /// The bins sealed since the last call, with whether each alerted.
    pub fn take_sealed(&mut self) -> Vec<BinSummary> {
        std::mem::take(&mut self.sealed)
    }

    /// What `device` is expected to carry per vector group in `bin` (baseline median and
    /// spread), while it has a baseline.
    pub fn expected(&self, device: &str, bin: i64) -> Option<[(f64, f64); 4]> {
        self.stream
            .state()
            .devices
            .get(device)
            .and_then(|d| d.expected(bin, &self.fw, self.cfg.width.per_day()))
    }

    /// An engine that goes on from `state` exactly as the one that saved it would have.
    pub fn resume(cfg: LiveConfig, fw: FloodwatchConfig, state: EngineState) -> Self {
        let mut e = Engine::new(cfg, fw);
        e.stream = Stream::resume(&e.fw, e.cfg.width, None, state.stream);
        e.open = state.open.into_iter().collect();
        e.recent = state
            .recent
            .into_iter()
            .map(|(d, v)| (d, v.into_iter().collect()))
            .collect();
        e.newest = state.newest;
        e.floor = state.floor;
        e.early_step = state.early_step;
        e.early_fired = state.early_fired;
        if let Some(t) = state.tracker {
            e.tracker = t;
        }
        e.counters = state.counters;
        e.newest_by = state.newest_by;
        e.idle = state.idle;
        e
    }

    pub fn snapshot(&self) -> EngineState {
        EngineState {
            stream: self.stream.snapshot(),
            open: self
                .open
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            recent: self
                .recent
                .iter()
                .map(|(d, v)| (d.clone(), v.iter().cloned().collect()))
                .collect(),
            newest: self.newest,
            floor: self.floor,
            early_step: self.early_step,
            early_fired: self.early_fired.clone(),
            tracker: Some(self.tracker.clone()),
            counters: self.counters.clone(),
            newest_by: self.newest_by.clone(),
            idle: self.idle.clone(),
        }
    }

    pub fn config(&self) -> &LiveConfig {
        &self.cfg
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The newest event time seen.
    pub fn newest(&self) -> Option<Nanos> {
        self.newest
    }

    /// Event time up to which bins are sealed (start of the first open bin).
    pub fn watermark(&self) -> Option<Nanos> {
        (self.floor != i64::MIN).then(|| self.cfg.width.start(self.floor))
    }

    /// The detector's stream (state, per-device positions).
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Open bins: (device, bin index, aggregate so far).
    pub fn open_bins(&self) -> impl Iterator<Item = (&str, i64, &BinAgg)> {
        self.open.iter().map(|((d, b), o)| (d.as_str(), *b, &o.agg))
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// Merges a reader's partial into the open bins; returns what was decided.
    pub fn apply(&mut self, p: Partial) -> Vec<Emit> {
        let step = p.aggs.width;
        let width = self.cfg.width;
        let Partial { source, aggs } = p;
        let max_ts = aggs.stats.max_ts;
        let devices = aggs.devices;
        // In event-time order, and each sub-window judged as event time first passes it, on what
        // came before it: the decisions then depend on the events and their order, not on how
        // the input happened to be cut into batches (a follower that reads a bigger chunk when
        // the machine is busy, a restart that resumes mid-file).
        let mut bins: Vec<(BinKey, BinAgg)> = aggs.bins.into_iter().collect();
        bins.sort_by_key(|(k, _)| (k.bin, k.device));
        let mut out = Vec::new();
        for (k, agg) in bins {
            let name = devices.name(k.device);
            let start = step.start(k.bin);
            let bin = width.index(start);
            if self.cfg.early && self.cfg.step.index(start) > self.early_step {
                out.extend(self.early_at(start));
            }
            if bin < self.floor {
                *self.counters.late.entry(source.clone()).or_insert(0) += agg.rows;
                continue;
            }
            self.counters.events += agg.rows;
            match self.open.get_mut(&(name.to_owned(), bin)) {
                Some(o) => o.agg.merge(&agg),
                None => {
                    self.open
                        .insert((name.to_owned(), bin), OpenBin { agg: agg.clone() });
                }
            }
            // The trailing stretch is only read early; without early decisions it is not kept.
            if !self.cfg.early {
                continue;
            }
            let sub = self.cfg.step.index(start);
            let ring = match self.recent.get_mut(name) {
                Some(r) => r,
                None => self.recent.entry(name.to_owned()).or_default(),
            };
            match ring.iter_mut().find(|(s, _)| *s == sub) {
                Some((_, a)) => a.merge(&agg),
                None => {
                    let at = ring
                        .iter()
                        .position(|(s, _)| *s > sub)
                        .unwrap_or(ring.len());
                    ring.insert(at, (sub, agg));
                }
            }
            let keep = self.cfg.early_trailing as usize;
            while ring.len() > keep {
                ring.pop_front();
            }
        }
        match max_ts {
            Some(t) => {
                self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
                let n = self.newest_by.entry(source).or_insert(t);
                *n = (*n).max(t);
            }
            // An input announced before its first events holds the watermark back until it
            // delivers them (or the service finds it idle).
            None => {
                self.newest_by.entry(source).or_insert(Nanos::MIN);
            }
        }
        out.extend(self.decide());
        out
    }

    /// Moves event time on to `t` without events (the stream went quiet): bins close as if an
    /// event at `t` had come. Called by the service after a quiet spell, and journaled.
    pub fn advance(&mut self, t: Nanos) -> Vec<Emit> {
        if self.newest.is_some_and(|n| t > n) {
            self.newest = Some(t);
        }
        // A quiet stream: every input is idle by now.
        let all: BTreeSet<String> = self.newest_by.keys().cloned().collect();
        self.idle = all;
        self.decide()
    }

    /// Seals every bin below the one holding the newest event (end of a finite input: the
    /// newest bin may be incomplete and is not scored, as in a batch run).
    pub fn finish_input(&mut self) -> Vec<Emit> {
        let Some(n) = self.newest else {
            return Vec::new();
        };
        let mut out = self.early();
        out.extend(self.seal(self.cfg.width.index(n)));
        out
    }

    fn decide(&mut self) -> Vec<Emit> {
        let Some(newest) = self.newest else {
            return Vec::new();
        };
        let mut out = self.early();
        // The slowest input that is not idle: a backlog read partition by partition (or one
        // input behind another) must not make the others' events late. With every input idle,
        // the newest time overall (which `advance` moves on).
        let base = self
            .newest_by
            .iter()
            .filter(|(s, _)| !self.idle.contains(*s))
            .map(|(_, t)| *t)
            .min()
            .unwrap_or(newest)
            .min(newest);
        let below = self.cfg.width.index(base.saturating_sub(self.cfg.lateness));
        out.extend(self.seal(below));
        out
    }

    /// Judges every open bin of the newest bin index once per sub-window passed.
    fn early(&mut self) -> Vec<Emit> {
        match self.newest {
            Some(newest) => self.early_at(newest),
            None => Vec::new(),
        }
    }

    /// [`Self::early`] with event time at `newest`: the sub-windows below the one holding it
    /// are judged, once.
    fn early_at(&mut self, newest: Nanos) -> Vec<Emit> {
        let step = self.cfg.step;
        let width = self.cfg.width;
        let now_step = step.index(newest);
        if now_step <= self.early_step {
            return Vec::new();
        }
        self.early_step = now_step;
        if !self.cfg.early {
            return Vec::new();
        }
        // The sub-windows below `now_step` are complete enough to judge: event time has passed
        // them. The bin they end in is the one judged.
        let judged_end = step.start(now_step);
        let bin = width.index(judged_end - 1);
        let elapsed = judged_end - width.start(bin);
        let frac_bin = elapsed as f64 / width.nanos() as f64;
        let devices: Vec<String> = self
            .open
            .keys()
            .filter(|(d, b)| *b == bin && !self.early_fired.contains(&(d.clone(), bin)))
            .map(|(d, _)| d.clone())
            .collect();
        // Each device's stretches: the bin so far, and the trailing sub-windows alone (a flood
        // that starts mid-bin is diluted in the first, not in the second).
        let mut judged: Vec<(String, Vec<Stretch>)> = Vec::new();
        for device in devices {
            let Some(open) = self.open.get(&(device.clone(), bin)) else {
                continue;
            };
            let mut stretches = vec![(open.agg.clone(), frac_bin, elapsed)];
            if let Some(ring) = self.recent.get(&device) {
                let first = now_step - self.cfg.early_trailing as i64;
                let mut trail = BinAgg::default();
                let mut n = 0;
                for (s, a) in ring {
                    if *s >= first && *s < now_step {
                        trail.merge(a);
                        n += 1;
                    }
                }
                let span = self.cfg.early_trailing as i64 * step.nanos();
                let frac = span as f64 / width.nanos() as f64;
                if n > 0 && frac < frac_bin {
                    stretches.push((trail, frac, span));
                }
            }
            judged.push((device, stretches));
        }
        let mut decided: Vec<(String, Alert, f64, Nanos)> = Vec::new();
        let mut moderate: Vec<(String, usize)> = Vec::new();
        for (device, stretches) in &judged {
            let mut hit = None;
            let mut rising = None;
            for (i, (agg, frac, seen)) in stretches.iter().enumerate() {
                let p = self
                    .stream
                    .detector()
                    .preview(bin, device, agg, *frac, None);
                if p.moderate && rising.is_none() {
                    rising = Some(i);
                }
                if let Some(a) = p
                    .alert
                    .filter(|a| !a.suppressed && self.significant(a, *frac))
                {
                    hit = Some((a, *frac, *seen));
                    break;
                }
            }
            match hit {
                Some((a, f, seen)) => decided.push((device.clone(), a, f, seen)),
                None => {
                    if let Some(i) = rising {
                        moderate.push((device.clone(), i));
                    }
                }
            }
        }
        // Several devices rising together in the same stretch: the fleet-wide test, early.
        let rising = decided.len() + moderate.len();
        if !moderate.is_empty() && rising >= self.fw.carpet_min_devices as usize {
            for (device, i) in moderate {
                let Some((_, stretches)) = judged.iter().find(|(d, _)| *d == device) else {
                    continue;
                };
                let (agg, frac, seen) = &stretches[i];
                let p = self
                    .stream
                    .detector()
                    .preview(bin, &device, agg, *frac, Some(rising));
                if let Some(a) = p
                    .alert
                    .filter(|a| !a.suppressed && self.significant_at(a, *frac, self.cfg.carpet_z))
                {
                    decided.push((device, a, *frac, *seen));
                }
            }
        }
        let mut out = Vec::new();
        decided.sort_by(|a, b| a.0.cmp(&b.0));
        for (device, mut alert, _, seen) in decided {
            unproject(&mut alert, seen);
            let (incident, changes) = self.tracker.observe(&alert, bin, Stage::Early, newest);
            alert.incident_id = Some(incident);
            self.early_fired.insert((device.clone(), bin));
            self.counters.early += 1;
            out.push(Emit::Alert(Box::new(LiveAlert {
                alert_id: LiveAlert::id(Stage::Early, &device, width.start(bin)),
                stage: Stage::Early,
                detected_at: newest,
                alert,
                bin,
                carpet: false,
            })));
            out.extend(changes.into_iter().map(|c| Emit::Incident(Box::new(c))));
        }
        out
    }

    /// Whether a projected alert's stretch, as seen, stands out of the noise: its excess over
    /// the expected part is at least `early_z` noise units (Poisson, or the baseline's own
    /// spread over the stretch, whichever is larger) and `early_min_excess` connections. A few
    /// seconds of an ordinary device extrapolate to anything; this is what keeps them quiet.
    fn significant(&self, a: &Alert, frac: f64) -> bool {
        self.significant_at(a, frac, self.cfg.early_z)
    }

    fn significant_at(&self, a: &Alert, frac: f64, z: f64) -> bool {
        stands_out(a, frac, z, self.cfg.early_min_excess)
    }

    /// Seals and scores every open bin below `below`.
    fn seal(&mut self, below: i64) -> Vec<Emit> {
        if below <= self.floor {
            return Vec::new();
        }
        self.floor = below;
        let width = self.cfg.width;
        let at = self.newest.unwrap_or(width.start(below));
        let rest = self.open.split_off(&(String::new(), i64::MIN));
        let (sealed, open): (BTreeMap<_, _>, BTreeMap<_, _>) =
            rest.into_iter().partition(|((_, b), _)| *b < below);
        self.open = open;
        let mut aggs = Aggregates::empty(width);
        aggs.devices = DeviceTable::default();
        let first_summary = self.sealed.len();
        for ((d, b), o) in sealed {
            self.sealed
                .push(summary(&self.stream, &self.fw, width, &d, b, &o.agg));
            let id = aggs.devices.intern(&d);
            aggs.bins.insert(BinKey { device: id, bin: b }, o.agg);
            self.counters.bins_sealed += 1;
        }
        self.stream.push(&aggs, below);
        let mut scored = self.stream.take_scored();
        scored.sort_by(|a, b| {
            a.bin
                .cmp(&b.bin)
                .then(a.alert.device_name.cmp(&b.alert.device_name))
        });
        let mut out = Vec::new();
        let mut confirmed: BTreeSet<(String, i64)> = BTreeSet::new();
        for sc in scored {
            // Runs that ended before this bin close first, so events come in time order.
            for c in self.tracker.close_below(sc.bin, at) {
                out.push(Emit::Incident(Box::new(c)));
            }
            let mut alert = sc.alert;
            if !alert.suppressed {
                confirmed.insert((alert.device_name.clone(), sc.bin));
            }
            if let Some(s) = self.sealed[first_summary..]
                .iter_mut()
                .find(|s| s.bin == sc.bin && s.device_name == alert.device_name)
            {
                s.alert = true;
                s.suppressed = alert.suppressed;
            }
            let (incident, mut changes) = self.tracker.observe(&alert, sc.bin, Stage::Bin, at);
            changes.extend(self.tracker.observe_carpet(&alert, sc.bin, sc.carpet, at));
            alert.incident_id = Some(incident);
            self.counters.bin_alerts += 1;
            out.push(Emit::Alert(Box::new(LiveAlert {
                alert_id: LiveAlert::id(Stage::Bin, &alert.device_name, width.start(sc.bin)),
                stage: Stage::Bin,
                detected_at: at,
                bin: sc.bin,
                carpet: sc.carpet,
                alert,
            })));
            out.extend(changes.into_iter().map(|c| Emit::Incident(Box::new(c))));
        }
        for c in self.tracker.close_below(below, at) {
            out.push(Emit::Incident(Box::new(c)));
        }
        let fired: Vec<(String, i64)> = self
            .early_fired
            .iter()
            .filter(|(_, b)| *b < below)
            .cloned()
            .collect();
        for k in fired {
            if !confirmed.contains(&k) {
                self.counters.early_unconfirmed += 1;
            }
            self.early_fired.remove(&k);
        }
        let step_floor = self.cfg.step.index(width.start(below)) - self.cfg.early_trailing as i64;
        for ring in self.recent.values_mut() {
            ring.retain(|(s, _)| *s >= step_floor);
        }
        self.recent.retain(|_, r| !r.is_empty());
        out
    }
}

/// A stretch of an open bin judged early: its traffic, its share of the bin, its length.
type Stretch = (BinAgg, f64, Nanos);

/// An early alert (whose numbers are what was seen: [`floodwatch_detect::PartialBin`]) with a
/// reason saying how it was decided.
fn unproject(alert: &mut Alert, seen: Nanos) {
    let projected = alert
        .partial
        .as_ref()
        .map_or(alert.request_count, |p| p.projected_count);
    alert.reasons.insert(
        0,
        format!(
            "early decision: {} connections in {}s of the open bin, {} at that rate over the whole bin; the tests below are on that projection, the bin's own alert follows when it closes",
            alert.request_count,
            seen / 1_000_000_000,
            projected
        ),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use floodwatch_detect::floodwatch::IncidentKind;
    use floodwatch_detect::floodwatch::incident::build_incidents;

    const W: BinWidth = BinWidth::FIVE_MINUTES;

    fn alert(device: &str, bin: i64, count: u64, carpet: bool) -> Scored {
        let ip = format!("203.0.113.{}", count % 200);
        let mut s =
            floodwatch_detect::floodwatch::detector::scored_fixture(device, bin, W, count, ip);
        s.carpet = carpet;
        s
    }

    /// Several devices flooded together, some bins raised by the fleet-wide test: live, one
    /// fleet-wide incident is announced beside the devices' own, takes each device as it joins,
    /// and ends with the last of them; its id, devices, start, end and campaign are the batch
    /// builder's carpet incident's.
    #[test]
    fn a_carpet_bombing_is_announced_as_one_incident_with_its_devices() {
        let fw = FloodwatchConfig::default();
        let mut scored = vec![
            alert("web01", 50, 300, true),
            alert("web03", 50, 310, false),
            alert("web01", 51, 300, true),
            alert("web02", 51, 280, true),
            alert("web01", 52, 900, true),
            alert("web04", 52, 290, true),
        ];
        let mut tracker = Tracker::new(&fw, W);
        let mut events = Vec::new();
        for sc in &scored {
            let at = W.start(sc.bin + 1);
            events.extend(tracker.close_below(sc.bin, at));
            let (_, changes) = tracker.observe(&sc.alert, sc.bin, Stage::Bin, at);
            events.extend(changes);
            events.extend(tracker.observe_carpet(&sc.alert, sc.bin, sc.carpet, at));
        }
        events.extend(tracker.close_below(100, W.start(100)));
        let carpet: Vec<&IncidentEvent> = events
            .iter()
            .filter(|e| e.incident_id.starts_with("FW-carpet-"))
            .collect();
        let phases: Vec<(&str, usize)> = carpet
            .iter()
            .map(|e| (e.phase.as_str(), e.devices.len()))
            .collect();
        // Opened once three devices had incidents (web01, web03, then web02's bin); web04
        // joins; it closes with the last device incident.
        assert_eq!(phases, vec![("opened", 3), ("escalated", 4), ("closed", 4)]);
        let ids: BTreeSet<&str> = carpet.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids.len(), carpet.len(), "event ids are unique");
        let closed = carpet.last().unwrap();
        assert!(events.last().unwrap().incident_id.starts_with("FW-carpet-"));
        let last = |d: &str| (d.to_string(), 99);
        let lb: LastBins_ = ["web01", "web02", "web03", "web04"]
            .iter()
            .map(|d| last(d))
            .collect();
        let batch = build_incidents(&mut scored, W, &fw, &lb);
        let b = batch
            .iter()
            .find(|i| i.kind == IncidentKind::CarpetBombing)
            .unwrap();
        assert_eq!(closed.incident_id, b.incident_id);
        assert_eq!(closed.devices, b.devices);
        assert_eq!(closed.start, b.start);
        assert_eq!(closed.end, b.end);
        assert_eq!(closed.campaign_id, b.campaign_id);
        assert_eq!(closed.peak_requests, 900);
        // Every device's own incident is announced too.
        for d in ["web01", "web02", "web03", "web04"] {
            assert!(
                events.iter().any(|e| e.phase == IncidentPhase::Opened
                    && e.devices.is_empty()
                    && e.device_name == d),
                "{d}"
            );
        }
    }

    type LastBins_ = floodwatch_detect::floodwatch::detector::LastBins;
}
