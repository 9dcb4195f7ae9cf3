//! Labelled scenarios: where each one is placed, what traffic it adds, and the label written
//! for it. Names are stable; they are listed in the crate docs.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use floodwatch_core::model::Ip;
use floodwatch_core::time::{NANOS_PER_HOUR, NANOS_PER_MIN, Nanos, Rfc3339, parse_rfc3339};
use floodwatch_detect::Vector;

use crate::SimError;
use crate::config::{SimConfig, SimProfile};

/// Whether a scenario should be alerted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelKind {
    Attack,
    Benign,
}

impl LabelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LabelKind::Attack => "attack",
            LabelKind::Benign => "benign",
        }
    }
}

/// One line of the labels file (JSON lines, PascalCase keys):
/// `{"Scenario":"syn-flood","Kind":"attack","Devices":["api01.contoso.com"],"Start":"...","End":"...","Vector":"syn-flood","AllowSources":[]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Label {
    /// Stable scenario name (see the crate docs).
    pub scenario: String,
    pub kind: LabelKind,
    /// `DeviceName`s the scenario touches.
    pub devices: Vec<String>,
    /// Window start (inclusive), RFC 3339 UTC; bin-aligned in simulated data.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub start: Nanos,
    /// Window end (exclusive).
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub end: Nanos,
    /// The flood vector of an attack; null for benign scenarios.
    pub vector: Option<Vector>,
    /// Source networks declared legitimate for this scenario (`--allow-source`).
    #[serde(default)]
    pub allow_sources: Vec<String>,
    /// An attack that builds up (a ramp from nothing): the start of the first bin in which it
    /// stands at 5x its device's normal traffic. Time to detect counts from here instead of
    /// `Start` (an alert before it is in time). Absent from most labels, and from older files.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_time",
        deserialize_with = "de_opt_time"
    )]
    pub detect_from: Option<Nanos>,
}

fn ser_time<S: serde::Serializer>(t: &Nanos, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Rfc3339(*t))
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Nanos, D::Error> {
    let s = String::deserialize(d)?;
    parse_rfc3339(s.as_bytes()).map_err(|e| serde::de::Error::custom(format!("{e}: {s:?}")))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<Nanos>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&Rfc3339(*t)),
        None => s.serialize_none(),
    }
}

fn de_opt_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Nanos>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_rfc3339(s.as_bytes())
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e}: {s:?}"))),
    }
}

/// Reads a labels file (JSON lines; blank lines are ignored).
pub fn read_labels(path: &Path) -> Result<Vec<Label>, SimError> {
    let f = std::fs::File::open(path).map_err(|e| SimError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| SimError::io(path, e))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let label: Label = serde_json::from_str(line).map_err(|e| SimError::Labels {
            path: path.display().to_string(),
            line: i as u64 + 1,
            message: e.to_string(),
        })?;
        out.push(label);
    }
    Ok(out)
}

/// Writes labels as JSON lines.
pub fn write_labels(path: &Path, labels: &[Label]) -> Result<(), SimError> {
    let f = std::fs::File::create(path).map_err(|e| SimError::io(path, e))?;
    let mut w = std::io::BufWriter::new(f);
    for l in labels {
        serde_json::to_writer(&mut w, l).map_err(|e| SimError::io(path, e.into()))?;
        w.write_all(b"\n").map_err(|e| SimError::io(path, e))?;
    }
    w.flush().map_err(|e| SimError::io(path, e))
}

/// What kind of traffic a scenario adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flood {
    /// Inbound TCP connections accepted on 443 (with some SYNs and TLS sessions seen).
    Web,
    /// The same on plain HTTP, port 80 (sessions inspected as HTTP, answered 503).
    Http,
    /// Inbound `ConnectionAttempt` to 443 that never complete.
    Syn,
    /// A SYN flood as Defender reports repeated failures: per source and slot one
    /// `ConnectionAttempt` and one inbound `ConnectionFailedAggregatedReport` row standing for
    /// the rest of its attempts (`uniqueEventsAggregated`). Botnet pools only.
    SynRollup,
    /// Inbound UDP to random ports.
    Udp,
    /// Inbound ICMP sessions with packet and byte counters.
    Icmp,
}

/// Where a scenario's sources come from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Pool {
    /// A fixed botnet (index into the generator's botnets): sources new to the device that keep
    /// sending at a moderate, uniform rate for the whole scenario.
    Botnet(usize),
    /// A fresh random (spoofed) source for every packet.
    Spoofed,
    /// Clients the device has already seen (a flash crowd of returning customers).
    Returning,
    /// Customers: clients the device has already seen, but `new_share` of the connections
    /// from addresses it never saw (a flash crowd that brings new customers too).
    Customers { new_share: f64 },
    /// A flood through residential proxies: the botnet's addresses (new to the device) and as
    /// many returning clients (picked from the device's seen clients when the scenario starts)
    /// as make `returning_share` of the sources, interleaved in rank so that they also carry
    /// about that share of the connections. Every source sends in every slot, at heavy-tailed
    /// rates: the source of rank r makes `top x r^-a` connections (`per_source = (floor,
    /// top)`), with `a` chosen so the slot's total is the scenario's volume.
    Mixed { botnet: usize, returning_share: f64 },
    /// A handful of known addresses.
    Fixed(Vec<Ip>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Volume {
    /// Connections per 5-minute slot, before `scale`.
    Absolute(f64),
    /// Extra connections as a multiple of the device's expected normal traffic at that time.
    Relative(f64),
}

/// One scenario's traffic on one device.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Effect {
    /// Scenario index + 1 (the rows' tag).
    pub tag: u16,
    pub device: usize,
    pub start: Nanos,
    pub end: Nanos,
    pub flood: Flood,
    pub pool: Pool,
    pub volume: Volume,
    /// Connections per source per slot (inclusive range), for botnet and fixed pools.
    pub per_source: (u32, u32),
    /// On/off per 5-minute slot from `start`, repeated (pulse waves); empty = always on.
    pub pattern: Vec<bool>,
    /// Slots over which volume ramps up linearly (0 or 1 = abrupt).
    pub ramp: u32,
}

/// Indices of devices in the fixed order of [`crate::generate::DEVICE_SPECS`].
pub(crate) const WEB01: usize = 0;
pub(crate) const WEB02: usize = 1;
pub(crate) const WEB03: usize = 2;
pub(crate) const WEB04: usize = 3;
pub(crate) const API01: usize = 4;
pub(crate) const MAIL01: usize = 5;
pub(crate) const WEB05: usize = 6;
pub(crate) const SHOP01: usize = 7;

/// Devices of the `hard` profile after the first eight.
pub(crate) const PORTAL01: usize = 8;
pub(crate) const STORE01: usize = 9;
pub(crate) const WEB06: usize = 10;
pub(crate) const WEB07: usize = 11;
pub(crate) const WEB08: usize = 12;
pub(crate) const WEB09: usize = 13;
pub(crate) const WEB10: usize = 14;

/// When the late devices appear, as offsets from the dataset start (scenarios and hard).
pub(crate) const WEB05_APPEARS: Nanos = 30 * NANOS_PER_HOUR;
pub(crate) const SHOP01_APPEARS: Nanos = 33 * NANOS_PER_HOUR;
/// web10 first reports on the fourth day at 09:00 (hard), five minutes before its attack.
pub(crate) const WEB10_APPEARS: Nanos = 81 * NANOS_PER_HOUR;

/// The load generator's network, declared with `--allow-source` in the evaluation.
pub const LOAD_TEST_CIDR: &str = "10.250.0.0/24";
/// The 300 load generators of the `hard` profile's `load-test-fleet`, declared in its label.
pub const LOAD_FLEET_CIDR: &str = "10.252.0.0/23";

/// A botnet to build.
pub(crate) struct BotnetSpec {
    pub size: usize,
    /// Share of addresses in cloud hosting ranges.
    pub cloud_share: f64,
    /// Share of IPv6 addresses among the others.
    pub v6_share: f64,
    /// Scenarios with the same key share one botnet (the same addresses), built once.
    pub key: Option<&'static str>,
}

/// A device that reports nothing in `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outage {
    pub device: usize,
    pub start: Nanos,
    pub end: Nanos,
}

pub(crate) struct Plan {
    pub labels: Vec<Label>,
    pub effects: Vec<Effect>,
    pub botnets: Vec<BotnetSpec>,
    pub outages: Vec<Outage>,
}

/// A scenario's traffic: (flood, pool, volume, per-source range, pulse pattern, ramp slots).
type Traffic = (Flood, Pool, Volume, (u32, u32), Vec<bool>, u32);

struct Draft {
    name: &'static str,
    kind: LabelKind,
    devices: Vec<usize>,
    start: Nanos,
    minutes: i64,
    vector: Option<Vector>,
    allow: Vec<String>,
    /// (flood, pool, volume, per_source, pattern, ramp); `None` for label-only scenarios.
    traffic: Option<Traffic>,
    /// Botnet to create for `Pool::Botnet` / `Pool::Mixed` (its index is filled in).
    botnet: Option<BotnetSpec>,
    /// A ramp: slots from `start` to the first one at 5x (the label's `DetectFrom`).
    detect_from_slots: Option<i64>,
    /// The device reports nothing for this many minutes from `start`.
    outage_minutes: Option<i64>,
}

fn web_bots(n: usize) -> Option<BotnetSpec> {
    Some(BotnetSpec {
        size: n,
        cloud_share: 0.08,
        v6_share: 0.05,
        key: None,
    })
}

#[allow(clippy::too_many_arguments)]
fn attack(
    name: &'static str,
    devices: Vec<usize>,
    start: Nanos,
    minutes: i64,
    vector: Vector,
    traffic: Traffic,
    botnet: Option<BotnetSpec>,
) -> Draft {
    Draft {
        name,
        kind: LabelKind::Attack,
        devices,
        start,
        minutes,
        vector: Some(vector),
        allow: Vec::new(),
        traffic: Some(traffic),
        botnet,
        detect_from_slots: None,
        outage_minutes: None,
    }
}

fn benign(
    name: &'static str,
    devices: Vec<usize>,
    start: Nanos,
    minutes: i64,
    traffic: Option<Traffic>,
) -> Draft {
    Draft {
        name,
        kind: LabelKind::Benign,
        devices,
        start,
        minutes,
        vector: None,
        allow: Vec::new(),
        traffic,
        botnet: None,
        detect_from_slots: None,
        outage_minutes: None,
    }
}

/// Places every scenario of the profile on the simulated devices.
pub(crate) fn plan(cfg: &SimConfig, names: &[String], monitor_ip: Ip) -> Plan {
    let s = cfg.start_aligned();
    let mut drafts: Vec<Draft> = Vec::new();
    match cfg.profile {
        SimProfile::Bench => {
            let start = cfg.end() - NANOS_PER_HOUR + 10 * NANOS_PER_MIN;
            drafts.push(attack(
                "bench-https-flood",
                vec![WEB01],
                start,
                30,
                Vector::HttpsFlood,
                (
                    Flood::Web,
                    Pool::Botnet(0),
                    Volume::Absolute(20_000.0),
                    (1, 4),
                    vec![],
                    0,
                ),
                web_bots(8_000),
            ));
        }
        SimProfile::Scenarios => scenario_drafts(s, monitor_ip, &mut drafts),
        SimProfile::Hard => {
            scenario_drafts(s, monitor_ip, &mut drafts);
            hard_drafts(s, &mut drafts);
        }
    }

    let mut out = Plan {
        labels: Vec::new(),
        effects: Vec::new(),
        botnets: Vec::new(),
        outages: Vec::new(),
    };
    let mut shared: Vec<(&'static str, usize)> = Vec::new();
    for d in drafts {
        let end = d.start + d.minutes * NANOS_PER_MIN;
        let devices: Vec<usize> = d.devices.into_iter().filter(|&i| i < names.len()).collect();
        if devices.is_empty() || d.start < s || end > cfg.end() {
            continue;
        }
        let tag = out.labels.len() as u16 + 1;
        if let Some((flood, mut pool, volume, per_source, pattern, ramp)) = d.traffic {
            if let Some(spec) = d.botnet {
                let known = spec
                    .key
                    .and_then(|k| shared.iter().find(|e| e.0 == k).map(|e| e.1));
                let index = known.unwrap_or_else(|| {
                    if let Some(k) = spec.key {
                        shared.push((k, out.botnets.len()));
                    }
                    out.botnets.push(spec);
                    out.botnets.len() - 1
                });
                match &mut pool {
                    Pool::Botnet(b) | Pool::Mixed { botnet: b, .. } => *b = index,
                    _ => {}
                }
            }
            for &device in &devices {
                out.effects.push(Effect {
                    tag,
                    device,
                    start: d.start,
                    end,
                    flood,
                    pool: pool.clone(),
                    volume,
                    per_source,
                    pattern: pattern.clone(),
                    ramp,
                });
            }
        }
        if let Some(m) = d.outage_minutes {
            for &device in &devices {
                out.outages.push(Outage {
                    device,
                    start: d.start,
                    end: d.start + m * NANOS_PER_MIN,
                });
            }
        }
        out.labels.push(Label {
            scenario: d.name.to_owned(),
            kind: d.kind,
            devices: devices.iter().map(|&i| names[i].clone()).collect(),
            start: d.start,
            end,
            vector: d.vector,
            allow_sources: d.allow,
            detect_from: d
                .detect_from_slots
                .map(|k| d.start + k * crate::generate::SLOT),
        });
    }
    out
}

fn at(base: Nanos, hh: i64, mm: i64) -> Nanos {
    base + hh * NANOS_PER_HOUR + mm * NANOS_PER_MIN
}

/// The 13 scenarios of the `scenarios` profile (also in `hard`), in their stable order.
fn scenario_drafts(s: Nanos, monitor_ip: Ip, drafts: &mut Vec<Draft>) {
    let d1 = s + 24 * NANOS_PER_HOUR;
    let d2 = s + 48 * NANOS_PER_HOUR;
    let h = at;
    let web = web_bots;
    use Flood::*;
    drafts.push(attack(
        "https-flood",
        vec![WEB01],
        h(d1, 10, 0),
        45,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Absolute(8_000.0),
            (1, 3),
            vec![],
            0,
        ),
        web(4_000),
    ));
    drafts.push(attack(
        "syn-flood",
        vec![API01],
        h(d1, 14, 0),
        30,
        Vector::SynFlood,
        (
            Syn,
            Pool::Spoofed,
            Volume::Absolute(6_000.0),
            (1, 1),
            vec![],
            0,
        ),
        None,
    ));
    drafts.push(attack(
        "udp-flood",
        vec![MAIL01],
        h(d1, 3, 0),
        30,
        Vector::UdpFlood,
        (
            Udp,
            Pool::Spoofed,
            Volume::Absolute(5_000.0),
            (1, 1),
            vec![],
            0,
        ),
        None,
    ));
    drafts.push(attack(
        "icmp-flood",
        vec![WEB02],
        h(d1, 20, 0),
        20,
        Vector::IcmpFlood,
        (
            Icmp,
            Pool::Botnet(0),
            Volume::Absolute(3_000.0),
            (2, 6),
            vec![],
            0,
        ),
        Some(BotnetSpec {
            size: 800,
            cloud_share: 0.3,
            v6_share: 0.05,
            key: None,
        }),
    ));
    drafts.push(attack(
        "low-and-slow",
        vec![WEB03],
        h(d1, 16, 0),
        45,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Relative(2.5),
            (1, 3),
            vec![],
            0,
        ),
        web(2_000),
    ));
    let pulse = [
        true, false, false, true, false, false, false, true, false, false, true, false,
    ];
    drafts.push(attack(
        "pulse-wave",
        vec![WEB04],
        h(d2, 9, 0),
        60,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Absolute(6_000.0),
            (1, 3),
            pulse.to_vec(),
            0,
        ),
        web(3_000),
    ));
    drafts.push(attack(
        "carpet-bombing",
        vec![WEB01, WEB02, WEB03, WEB04],
        h(d2, 11, 0),
        40,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Relative(1.5),
            (1, 2),
            vec![],
            0,
        ),
        web(6_000),
    ));
    drafts.push(attack(
        "peak-attack",
        vec![WEB02],
        h(d2, 13, 0),
        30,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Absolute(1_800.0),
            (1, 3),
            vec![],
            0,
        ),
        web(1_000),
    ));
    drafts.push(attack(
        "new-device-attack",
        vec![WEB05],
        h(s + WEB05_APPEARS, 2, 0),
        30,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Absolute(6_000.0),
            (1, 3),
            vec![],
            0,
        ),
        web(3_000),
    ));
    drafts.push(benign(
        "flash-crowd",
        vec![WEB03],
        h(d2, 15, 0),
        45,
        Some((
            Web,
            Pool::Returning,
            Volume::Relative(5.0),
            (1, 2),
            vec![],
            3,
        )),
    ));
    let load_ips = (10..18).map(|i| Ip::v4([10, 250, 0, i])).collect();
    let mut load = benign(
        "load-test",
        vec![API01],
        h(d1, 22, 0),
        40,
        Some((
            Web,
            Pool::Fixed(load_ips),
            Volume::Absolute(12_000.0),
            (1_400, 1_600),
            vec![],
            0,
        )),
    );
    load.allow = vec![LOAD_TEST_CIDR.to_owned()];
    drafts.push(load);
    drafts.push(benign(
        "monitor",
        vec![WEB01],
        h(d2, 17, 0),
        60,
        Some((
            Web,
            Pool::Fixed(vec![monitor_ip]),
            Volume::Absolute(1_500.0),
            (1_450, 1_550),
            vec![],
            0,
        )),
    ));
    drafts.push(benign(
        "new-device",
        vec![SHOP01],
        s + SHOP01_APPEARS,
        180,
        None,
    ));
}

/// The scenarios only the `hard` profile has, on days 3 to 5 (and api01, web06, web07 and
/// web09 on day 2 too), none overlapping another on the same device.
fn hard_drafts(s: Nanos, drafts: &mut Vec<Draft>) {
    let d2 = s + 48 * NANOS_PER_HOUR;
    let d3 = s + 72 * NANOS_PER_HOUR;
    let d4 = s + 96 * NANOS_PER_HOUR;
    let h = at;
    use Flood::*;
    // Half the flood's connections from the portal's own returning visitors (compromised home
    // routers and proxy networks overlap a national service's customers), half from new
    // addresses; 8,000 sources, the heaviest ~590 connections per slot, 25x the normal.
    drafts.push(attack(
        "residential-proxy-flood",
        vec![PORTAL01],
        h(d3, 11, 0),
        30,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Mixed {
                botnet: 0,
                returning_share: 0.5,
            },
            Volume::Relative(24.0),
            (1, 590),
            vec![],
            0,
        ),
        web_bots(4_000),
    ));
    // A sale doubles the store's traffic with returning customers; fifteen minutes in, a
    // botnet adds 0.55x the normal traffic on top: its new sources are ~35 % of the excess
    // over the pre-sale baseline, as in the case this reproduces (3,000 sources, 15,000
    // connections per bin over a 28,000-connection sale), at a ninth of its volume. The
    // benign label spans the whole sale and overlaps the attack's (see `eval`).
    drafts.push(benign(
        "flash-sale",
        vec![STORE01],
        h(d3, 12, 0),
        90,
        Some((
            Web,
            Pool::Returning,
            Volume::Relative(1.0),
            (1, 2),
            vec![],
            2,
        )),
    ));
    drafts.push(attack(
        "flash-sale-flood",
        vec![STORE01],
        h(d3, 12, 15),
        30,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Relative(0.55),
            (4, 6),
            vec![],
            0,
        ),
        web_bots(400),
    ));
    // One botnet, the same addresses, on three days: still new traffic every time.
    let campaign = |name, start| {
        attack(
            name,
            vec![WEB06],
            start,
            30,
            Vector::HttpsFlood,
            (
                Web,
                Pool::Botnet(0),
                Volume::Absolute(6_000.0),
                (1, 3),
                vec![],
                0,
            ),
            Some(BotnetSpec {
                size: 3_000,
                cloud_share: 0.08,
                v6_share: 0.05,
                key: Some("campaign"),
            }),
        )
    };
    drafts.push(campaign("campaign-day1", h(d2, 10, 0)));
    drafts.push(campaign("campaign-day2", h(d3, 14, 0)));
    drafts.push(campaign("campaign-day3", h(d4, 9, 0)));
    // Six one-bin pulses with quiet gaps of 10, 15, 20, 10 and 15 minutes.
    let pulses: Vec<bool> = [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1]
        .iter()
        .map(|&b| b == 1)
        .collect();
    drafts.push(attack(
        "long-pulse-wave",
        vec![WEB07],
        h(d2, 14, 0),
        100,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Absolute(6_000.0),
            (1, 3),
            pulses,
            0,
        ),
        web_bots(3_000),
    ));
    // 1.8x for an hour from new sources: under the one-bin 2x, only the slow-rise test sees it.
    drafts.push(attack(
        "low-and-slow-2x",
        vec![WEB01],
        h(d3, 10, 0),
        60,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Relative(0.8),
            (1, 2),
            vec![],
            0,
        ),
        web_bots(2_000),
    ));
    // 1.4x on eight devices at once: under every one-device test, only the fleet sees it.
    drafts.push(attack(
        "wide-carpet-bombing",
        vec![WEB01, WEB02, WEB03, WEB04, WEB06, WEB07, WEB08, WEB09],
        h(d4, 12, 0),
        40,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Relative(0.4),
            (1, 2),
            vec![],
            0,
        ),
        web_bots(8_000),
    ));
    // web10 first reports at 09:00; the flood starts at 09:05.
    drafts.push(attack(
        "cold-start-attack",
        vec![WEB10],
        s + WEB10_APPEARS + 5 * NANOS_PER_MIN,
        30,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Absolute(8_000.0),
            (1, 3),
            vec![],
            0,
        ),
        web_bots(4_000),
    ));
    drafts.push(attack(
        "ipv6-flood",
        vec![WEB09],
        h(d2, 11, 0),
        30,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Absolute(6_000.0),
            (1, 3),
            vec![],
            0,
        ),
        Some(BotnetSpec {
            size: 3_000,
            cloud_share: 0.0,
            v6_share: 1.0,
            key: None,
        }),
    ));
    drafts.push(attack(
        "http-flood",
        vec![WEB02],
        h(d4, 10, 0),
        30,
        Vector::HttpsFlood,
        (
            Http,
            Pool::Botnet(0),
            Volume::Absolute(5_000.0),
            (1, 3),
            vec![],
            0,
        ),
        web_bots(2_500),
    ));
    // From nothing to 15x in 90 minutes (18 slots): slot k adds (k + 1) / 18 x 14 times the
    // normal traffic, so slot 5 is the first at 5x or more.
    let mut ramp = attack(
        "slow-ramp",
        vec![WEB03],
        h(d3, 9, 0),
        90,
        Vector::HttpsFlood,
        (
            Web,
            Pool::Botnet(0),
            Volume::Relative(14.0),
            (1, 3),
            vec![],
            18,
        ),
        web_bots(6_000),
    );
    ramp.detect_from_slots = Some(5);
    drafts.push(ramp);
    drafts.push(benign(
        "flash-crowd-new-customers",
        vec![WEB04],
        h(d3, 15, 0),
        45,
        Some((
            Web,
            Pool::Customers { new_share: 0.3 },
            Volume::Relative(5.0),
            (1, 2),
            vec![],
            3,
        )),
    ));
    let fleet: Vec<Ip> = (0..300u32)
        .map(|i| Ip::v4([10, 252, (i / 250) as u8, (1 + i % 250) as u8]))
        .collect();
    let mut fleet_test = benign(
        "load-test-fleet",
        vec![API01],
        h(d4, 10, 0),
        40,
        Some((
            Web,
            Pool::Fixed(fleet),
            Volume::Absolute(12_000.0),
            (30, 50),
            vec![],
            0,
        )),
    );
    fleet_test.allow = vec![LOAD_FLEET_CIDR.to_owned()];
    drafts.push(fleet_test);
    drafts.push(benign(
        "two-monitors",
        vec![WEB08],
        h(d4, 15, 0),
        60,
        Some((
            Web,
            Pool::Fixed(vec![Ip::v4([20, 42, 73, 6]), Ip::v4([52, 160, 10, 20])]),
            Volume::Absolute(3_000.0),
            (1_450, 1_550),
            vec![],
            0,
        )),
    ));
    // No data from 08:00 to 10:00, then ordinary morning traffic; the label runs to 11:00 so
    // the hour after the gap is judged too.
    let mut outage = benign("sensor-outage", vec![WEB09], h(d3, 8, 0), 180, None);
    outage.outage_minutes = Some(120);
    drafts.push(outage);
    drafts.push(attack(
        "syn-flood-rollup",
        vec![API01],
        h(d2, 16, 0),
        30,
        Vector::SynFlood,
        (
            SynRollup,
            Pool::Botnet(0),
            Volume::Absolute(6_000.0),
            (6, 10),
            vec![],
            0,
        ),
        Some(BotnetSpec {
            size: 800,
            cloud_share: 0.3,
            v6_share: 0.05,
            key: None,
        }),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_as_json_lines() {
        let l = Label {
            scenario: "syn-flood".into(),
            kind: LabelKind::Attack,
            devices: vec!["api01.contoso.com".into()],
            start: 1_766_361_600 * 1_000_000_000,
            end: 1_766_363_400 * 1_000_000_000,
            vector: Some(Vector::SynFlood),
            allow_sources: vec![],
            detect_from: None,
        };
        let j = serde_json::to_string(&l).unwrap();
        assert_eq!(
            j,
            r#"{"Scenario":"syn-flood","Kind":"attack","Devices":["api01.contoso.com"],"Start":"2025-12-22T00:00:00Z","End":"2025-12-22T00:30:00Z","Vector":"syn-flood","AllowSources":[]}"#
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.jsonl");
        write_labels(&p, std::slice::from_ref(&l)).unwrap();
        assert_eq!(read_labels(&p).unwrap(), vec![l]);
        std::fs::write(&p, "{\"Scenario\":1}\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn scenarios_fit_the_devices_and_hours_given() {
        let names: Vec<String> = (0..8).map(|i| format!("d{i}")).collect();
        let cfg = SimConfig::new(SimProfile::Scenarios);
        let p = plan(&cfg, &names, Ip::v4([20, 42, 73, 5]));
        assert_eq!(p.labels.len(), 13);
        for l in &p.labels {
            assert!(l.start >= cfg.start + 24 * NANOS_PER_HOUR || l.scenario == "new-device");
            assert!(l.end <= cfg.end());
            assert_eq!(l.start % (5 * NANOS_PER_MIN), 0, "bin-aligned");
        }
        let mut short = cfg.clone();
        short.hours = 40;
        let p = plan(&short, &names[..5], Ip::v4([20, 42, 73, 5]));
        assert!(p.labels.iter().all(|l| l.end <= short.end()));
        assert!(
            !p.labels.iter().any(|l| l.scenario == "udp-flood"),
            "mail01 not simulated"
        );
        assert!(p.labels.iter().any(|l| l.scenario == "https-flood"));
    }
}
