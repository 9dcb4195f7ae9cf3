//! From alert bins to incidents an analyst works on.
//!
//! - One device: its alert bins in a row, allowing `incident_gap_bins` quiet bins in between,
//!   are one incident (suppressed and unsuppressed bins alike; the incident is suppressed only
//!   when every bin is, so an audit trail of suppressed surges forms its own incidents).
//! - Carpet bombing: unsuppressed device incidents that overlap in time, on at least
//!   `carpet_min_devices` devices, with at least one bin raised by the fleet-wide test, become
//!   one incident listing every device.
//!
//! Ids are deterministic: `FW-<device>-<start>` or `FW-carpet-<start>` (start as
//! `YYYYMMDDTHHMMSSZ`), so re-running on the same data gives the same ids.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use floodwatch_core::BinWidth;
use floodwatch_core::time::{Nanos, Rfc3339, parse_rfc3339};

use super::config::FloodwatchConfig;
use super::detector::{LastBins, Scored, TOP_SOURCES};
use crate::alert::{Confidence, Severity, TopSource, Vector};

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
    /// Consecutive alert bins of one device.
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

/// An incident: one attack (or one suppressed surge) over one or many devices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Incident {
    pub incident_id: String,
    pub kind: IncidentKind,
    pub devices: Vec<String>,
    /// Start of the first alert bin.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub start: Nanos,
    /// End of the last alert bin; `null` while ongoing at the end of the data.
    #[serde(serialize_with = "ser_opt_time", deserialize_with = "de_opt_time")]
    pub end: Option<Nanos>,
    pub peak: Peak,
    /// Vector of the peak bin.
    pub vector: Vector,
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

/// `t` as `YYYYMMDDTHHMMSSZ`.
pub fn compact(t: Nanos) -> String {
    Rfc3339(t)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
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
    // Runs of one device.
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for i in 0..scored.len() {
        let joins = i > 0
            && scored[i].alert.device_name == scored[i - 1].alert.device_name
            && scored[i].bin - scored[i - 1].bin <= cfg.incident_gap_bins as i64 + 1;
        match runs.last_mut() {
            Some(r) if joins => r.push(i),
            _ => runs.push(vec![i]),
        }
    }
    // Carpet bombing: overlapping unsuppressed runs, merged by sweeping over start time.
    let span = |r: &Vec<usize>| (scored[r[0]].bin, scored[r[r.len() - 1]].bin);
    let eligible = |r: &Vec<usize>| r.iter().any(|&i| !scored[i].alert.suppressed);
    let mut order: Vec<usize> = (0..runs.len()).filter(|&k| eligible(&runs[k])).collect();
    order.sort_by_key(|&k| span(&runs[k]));
    let mut components: Vec<Vec<usize>> = Vec::new();
    let mut reach = i64::MIN;
    for k in order {
        let (s, e) = span(&runs[k]);
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
    let mut groups: Vec<(IncidentKind, Vec<usize>)> = Vec::new();
    let mut merged = vec![false; runs.len()];
    for c in components {
        let devices: BTreeSet<&str> = c
            .iter()
            .map(|&k| scored[runs[k][0]].alert.device_name.as_str())
            .collect();
        let has_carpet = c.iter().any(|&k| runs[k].iter().any(|&i| scored[i].carpet));
        if devices.len() >= cfg.carpet_min_devices as usize && has_carpet {
            let mut idx: Vec<usize> = c.iter().flat_map(|&k| runs[k].clone()).collect();
            idx.sort_by_key(|&i| (scored[i].bin, scored[i].alert.device_name.clone()));
            for &k in &c {
                merged[k] = true;
            }
            groups.push((IncidentKind::CarpetBombing, idx));
        }
    }
    for (k, r) in runs.iter().enumerate() {
        if !merged[k] {
            groups.push((IncidentKind::Device, r.clone()));
        }
    }
    let mut incidents: Vec<Incident> = groups
        .into_iter()
        .map(|(kind, idx)| {
            let inc = make(scored, &idx, kind, width, cfg, last_bins);
            for &i in &idx {
                scored[i].alert.incident_id = Some(inc.incident_id.clone());
            }
            inc
        })
        .collect();
    incidents.sort_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(a.incident_id.cmp(&b.incident_id))
    });
    incidents
}

fn make(
    scored: &[Scored],
    idx: &[usize],
    kind: IncidentKind,
    width: BinWidth,
    cfg: &FloodwatchConfig,
    last_bins: &LastBins,
) -> Incident {
    let first = idx.iter().map(|&i| scored[i].bin).min().unwrap_or(0);
    let start = width.start(first);
    let devices: BTreeSet<String> = idx
        .iter()
        .map(|&i| scored[i].alert.device_name.clone())
        .collect();
    // Ongoing when some device's last alert bin is within the gap of its last scored bin.
    let mut last_alert: HashMap<&str, i64> = HashMap::new();
    for &i in idx {
        let e = last_alert
            .entry(scored[i].alert.device_name.as_str())
            .or_insert(i64::MIN);
        *e = (*e).max(scored[i].bin);
    }
    let ongoing = last_alert.iter().any(|(d, &b)| {
        last_bins
            .get(*d)
            .is_some_and(|&end| b + cfg.incident_gap_bins as i64 >= end)
    });
    let last = last_alert.values().copied().max().unwrap_or(first);
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
    use crate::alert::{Alert, RuleName};

    const W: BinWidth = BinWidth::FIVE_MINUTES;

    fn alert(device: &str, bin: i64, count: u64, suppressed: bool, carpet: bool) -> Scored {
        Scored {
            alert: Alert {
                time_generated: W.start(bin),
                device_name: device.into(),
                request_count: count,
                unique_source_ips: 10,
                total_bytes: None,
                attack_confidence: Confidence::Medium,
                rule: RuleName::Floodwatch,
                vector: Some(Vector::HttpsFlood),
                vector_share: Some(0.9),
                severity: if suppressed {
                    Severity::Informational
                } else {
                    Severity::Medium
                },
                reasons: vec![],
                baseline: None,
                new_source_ratio: None,
                top_sources: vec![TopSource {
                    ip: "203.0.113.1".into(),
                    count,
                    exact: true,
                    count_upper_bound: None,
                }],
                mitre_techniques: vec![],
                suppressed,
                suppression_reason: suppressed.then(|| "flash crowd".to_string()),
                incident_id: None,
                partial: None,
            },
            bin,
            carpet,
        }
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
            alert("web01", 103, 20, false, false), // one quiet bin: same incident
            alert("web01", 106, 5, false, false),  // two quiet bins: new incident
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
}
