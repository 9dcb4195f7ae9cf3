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
}

fn ser_time<S: serde::Serializer>(t: &Nanos, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Rfc3339(*t))
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Nanos, D::Error> {
    let s = String::deserialize(d)?;
    parse_rfc3339(s.as_bytes()).map_err(|e| serde::de::Error::custom(format!("{e}: {s:?}")))
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
    /// Inbound `ConnectionAttempt` to 443 that never complete.
    Syn,
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

/// When the late devices appear, as offsets from the dataset start (scenarios profile).
pub(crate) const WEB05_APPEARS: Nanos = 30 * NANOS_PER_HOUR;
pub(crate) const SHOP01_APPEARS: Nanos = 33 * NANOS_PER_HOUR;

/// The load generator's network, declared with `--allow-source` in the evaluation.
pub const LOAD_TEST_CIDR: &str = "10.250.0.0/24";

/// A botnet to build: (size, share of addresses in cloud hosting ranges).
pub(crate) struct BotnetSpec {
    pub size: usize,
    pub cloud_share: f64,
}

pub(crate) struct Plan {
    pub labels: Vec<Label>,
    pub effects: Vec<Effect>,
    pub botnets: Vec<BotnetSpec>,
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
    /// Botnet to create for `Pool::Botnet` (its index is filled in).
    botnet: Option<BotnetSpec>,
}

/// Places every scenario of the profile on the simulated devices.
pub(crate) fn plan(cfg: &SimConfig, names: &[String], monitor_ip: Ip) -> Plan {
    let s = cfg.start_aligned();
    let d1 = s + 24 * NANOS_PER_HOUR;
    let d2 = s + 48 * NANOS_PER_HOUR;
    let h = |base: Nanos, hh: i64, mm: i64| base + hh * NANOS_PER_HOUR + mm * NANOS_PER_MIN;
    let web = |n| {
        Some(BotnetSpec {
            size: n,
            cloud_share: 0.08,
        })
    };
    use Flood::*;
    use LabelKind::*;
    let mut drafts: Vec<Draft> = Vec::new();
    let attack = |name, devices: Vec<usize>, start, minutes, vector, traffic, botnet| Draft {
        name,
        kind: Attack,
        devices,
        start,
        minutes,
        vector: Some(vector),
        allow: Vec::new(),
        traffic: Some(traffic),
        botnet,
    };
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
                    Web,
                    Pool::Botnet(0),
                    Volume::Absolute(20_000.0),
                    (1, 4),
                    vec![],
                    0,
                ),
                web(8_000),
            ));
        }
        SimProfile::Scenarios => {
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
            drafts.push(Draft {
                name: "flash-crowd",
                kind: Benign,
                devices: vec![WEB03],
                start: h(d2, 15, 0),
                minutes: 45,
                vector: None,
                allow: Vec::new(),
                traffic: Some((
                    Web,
                    Pool::Returning,
                    Volume::Relative(5.0),
                    (1, 2),
                    vec![],
                    3,
                )),
                botnet: None,
            });
            let load_ips = (10..18).map(|i| Ip::v4([10, 250, 0, i])).collect();
            drafts.push(Draft {
                name: "load-test",
                kind: Benign,
                devices: vec![API01],
                start: h(d1, 22, 0),
                minutes: 40,
                vector: None,
                allow: vec![LOAD_TEST_CIDR.to_owned()],
                traffic: Some((
                    Web,
                    Pool::Fixed(load_ips),
                    Volume::Absolute(12_000.0),
                    (1_400, 1_600),
                    vec![],
                    0,
                )),
                botnet: None,
            });
            drafts.push(Draft {
                name: "monitor",
                kind: Benign,
                devices: vec![WEB01],
                start: h(d2, 17, 0),
                minutes: 60,
                vector: None,
                allow: Vec::new(),
                traffic: Some((
                    Web,
                    Pool::Fixed(vec![monitor_ip]),
                    Volume::Absolute(1_500.0),
                    (1_450, 1_550),
                    vec![],
                    0,
                )),
                botnet: None,
            });
            drafts.push(Draft {
                name: "new-device",
                kind: Benign,
                devices: vec![SHOP01],
                start: s + SHOP01_APPEARS,
                minutes: 180,
                vector: None,
                allow: Vec::new(),
                traffic: None,
                botnet: None,
            });
        }
    }

    let mut out = Plan {
        labels: Vec::new(),
        effects: Vec::new(),
        botnets: Vec::new(),
    };
    for d in drafts {
        let end = d.start + d.minutes * NANOS_PER_MIN;
        let devices: Vec<usize> = d.devices.into_iter().filter(|&i| i < names.len()).collect();
        if devices.is_empty() || d.start < s || end > cfg.end() {
            continue;
        }
        let tag = out.labels.len() as u16 + 1;
        if let Some((flood, mut pool, volume, per_source, pattern, ramp)) = d.traffic {
            if let (Pool::Botnet(_), Some(spec)) = (&pool, d.botnet) {
                pool = Pool::Botnet(out.botnets.len());
                out.botnets.push(spec);
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
        out.labels.push(Label {
            scenario: d.name.to_owned(),
            kind: d.kind,
            devices: devices.iter().map(|&i| names[i].clone()).collect(),
            start: d.start,
            end,
            vector: d.vector,
            allow_sources: d.allow,
        });
    }
    out
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
