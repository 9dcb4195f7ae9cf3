//! `floodwatch report`: reads and detects as `detect` does, keeping every device's per-bin
//! series, and writes one self-contained HTML file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use floodwatch_core::time::{Nanos, Rfc3339};
use floodwatch_detect::Alert;
use floodwatch_detect::floodwatch::Incident;
use floodwatch_output::report::{self as rep, DeviceChart, DeviceLine, IncidentView, Report};
use floodwatch_pipeline::series::{Point, SeriesBook};
use floodwatch_pipeline::{Detected, Query, Settings};

use crate::CommonArgs;

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The HTML file to write.
    #[arg(long = "out", short = 'o', value_name = "PATH")]
    pub out: PathBuf,
    /// Score bins starting at or after this time (RFC 3339); earlier bins build baselines.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Score bins starting before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Title at the top of the report (default: names the inputs).
    #[arg(long)]
    pub title: Option<String>,
    /// Devices charted in full: those with alerts first (most unsuppressed alert bins), then
    /// the busiest; the rest get a line each.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub max_devices: usize,
    /// Points a device's chart holds at most; longer series are downsampled, each point the
    /// largest of its bins (a peak stays visible).
    #[arg(long, default_value_t = 3000, value_name = "N")]
    pub max_points: usize,
}

pub fn report(a: ReportArgs) -> Result<ExitCode> {
    let file = crate::run::load_file(&a.common)?;
    let file_allow = file.allow_sources.clone();
    let web_ports = file
        .web_ports
        .clone()
        .unwrap_or_else(|| vec![80, 443, 8080, 8443]);
    let s = crate::run::settings(&a.common, file, &crate::run::no_seed_flags)?;
    if s.rule != floodwatch_pipeline::Rule::Floodwatch {
        bail!(
            "--rule seed: the report charts floodwatch's per-device baselines, which the seed rule does not keep; use `floodwatch detect --rule seed` for its rows"
        );
    }
    if a.max_points < 10 {
        bail!("--max-points must be at least 10");
    }
    if a.common.inputs.iter().any(|p| p.as_os_str() == "-") {
        bail!("the report reads files or directories, not standard input");
    }
    let time = |name: &str, v: &Option<String>| -> Result<Option<Nanos>> {
        v.as_deref()
            .map(|t| {
                floodwatch_core::time::parse_rfc3339(t.as_bytes())
                    .map_err(|e| anyhow!("--{name} {t:?}: {e} (expected RFC 3339)"))
            })
            .transpose()
    };
    let q = Query {
        now: None,
        since: time("since", &a.since)?,
        until: time("until", &a.until)?,
        since_first_event: false,
    };
    let mut notice = |m: &str| eprintln!("floodwatch: {m}");
    let d =
        floodwatch_pipeline::read_detect_with(&a.common.inputs, &s, &q, &mut notice, None, true)?;
    for line in &d.notices {
        eprintln!("floodwatch: {line}");
    }
    let out = d.outcome(&s, &q);
    let settings = settings_shown(&s, &a.common, &file_allow, &web_ports);
    let title = a.title.clone().unwrap_or_else(|| {
        let names: Vec<String> = a
            .common
            .inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!("floodwatch report: {}", names.join(", "))
    });
    let generated = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos() as Nanos);
    let r = build(
        &d,
        &s,
        &out.alerts,
        &out.incidents,
        Shape {
            max_devices: a.max_devices,
            max_points: a.max_points,
        },
        title,
        Rfc3339(generated).to_string(),
        settings,
    );
    let f = File::create(&a.out).with_context(|| format!("cannot write {}", a.out.display()))?;
    let mut w = BufWriter::new(f);
    rep::write_html(&mut w, &r)
        .and_then(|()| w.flush())
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "floodwatch: wrote {} ({} incident(s), {} device(s) charted, {} more listed)",
        a.out.display(),
        r.incidents.len(),
        r.devices.len(),
        r.others.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn settings_shown(
    s: &Settings,
    c: &CommonArgs,
    file_allow: &[String],
    web_ports: &[u16],
) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = vec![
        ("rule".into(), "floodwatch".into()),
        ("bin".into(), format!("{}s", s.width.secs())),
        ("web_ports".into(), format!("{web_ports:?}")),
        (
            "lateness".into(),
            s.ingest
                .lateness
                .map_or("all".into(), |l| format!("{}s", l / 1_000_000_000)),
        ),
        (
            "dedup_window".into(),
            format!("{}s", s.dedup / 1_000_000_000),
        ),
        ("strict".into(), s.ingest.strict.to_string()),
    ];
    let allow: Vec<&String> = file_allow.iter().chain(&c.allow_sources).collect();
    v.push((
        "allow_sources".into(),
        if allow.is_empty() {
            "none".into()
        } else {
            allow
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&s.floodwatch) {
        for (k, val) in m {
            v.push((format!("floodwatch.{k}"), val.to_string()));
        }
    }
    v
}

/// How much of the series goes in.
struct Shape {
    max_devices: usize,
    max_points: usize,
}

fn secs(t: Nanos) -> i64 {
    t.div_euclid(1_000_000_000)
}

#[allow(clippy::too_many_arguments)]
fn build(
    d: &Detected,
    s: &Settings,
    alerts: &[Alert],
    incidents: &[Incident],
    shape: Shape,
    title: String,
    generated: String,
    settings: Vec<(String, String)>,
) -> Report {
    let width = s.width;
    let empty = SeriesBook::default();
    let book = d.series().unwrap_or(&empty);
    let mut by_device: HashMap<&str, Vec<&Alert>> = HashMap::new();
    for a in alerts {
        by_device.entry(a.device_name.as_str()).or_default().push(a);
    }
    // Charted first: most unsuppressed alert bins, then any alert, then the busiest.
    let mut order: Vec<(&str, &[Point], usize, usize, u64)> = book
        .devices()
        .map(|(name, pts)| {
            let al = by_device.get(name).map_or(&[][..], |v| v.as_slice());
            let loud = al.iter().filter(|a| !a.suppressed).count();
            let total: u64 = pts
                .iter()
                .map(|p| p.counts.iter().map(|&c| c as u64).sum::<u64>())
                .sum();
            (name, pts, loud, al.len(), total)
        })
        .collect();
    order.sort_by(|a, b| {
        b.2.cmp(&a.2)
            .then(b.3.cmp(&a.3))
            .then(b.4.cmp(&a.4))
            .then(a.0.cmp(b.0))
    });
    let mut devices = Vec::new();
    let mut others = Vec::new();
    for (i, (name, pts, _, n_alerts, total)) in order.into_iter().enumerate() {
        if i < shape.max_devices {
            let al = by_device.get(name).map_or(&[][..], |v| v.as_slice());
            devices.push(chart(name, pts, al, width, shape.max_points, total));
        } else {
            let bins = match (pts.first(), pts.last()) {
                (Some(f), Some(l)) => (l.bin - f.bin + 1) as usize,
                _ => 0,
            };
            others.push(DeviceLine {
                name: name.to_owned(),
                total,
                bins,
                alerts: n_alerts,
            });
        }
    }
    let reasons_of = |inc: &Incident| -> Vec<String> {
        let peak = alerts.iter().find(|a| {
            a.device_name == inc.peak.device_name && a.time_generated == inc.peak.time_generated
        });
        peak.map(|a| a.reasons.clone()).unwrap_or_default()
    };
    let incidents = incidents
        .iter()
        .map(|i| IncidentView {
            id: i.incident_id.clone(),
            devices: i.devices.clone(),
            vector: i.vector.as_str().to_owned(),
            confidence: i.attack_confidence.as_str().to_owned(),
            severity: i.severity.as_str().to_owned(),
            start: secs(i.start),
            end: i.end.map(secs),
            peak_time: secs(i.peak.time_generated),
            peak_device: i.peak.device_name.clone(),
            peak_requests: i.peak.request_count,
            alert_bins: i.alert_bins.len(),
            top_sources: i
                .top_sources
                .iter()
                .map(|t| (t.ip.clone(), t.count))
                .collect(),
            reasons: reasons_of(i),
            suppressed: i.suppressed,
            suppression_reason: i.suppression_reason.clone(),
            campaign: i.campaign_id.clone(),
            pulses: i
                .pulses
                .iter()
                .map(|p| (secs(p.start), secs(p.end), p.peak_request_count))
                .collect(),
        })
        .collect();
    let mut skipped: Vec<(String, u64)> = d
        .diagnostics
        .skipped
        .iter()
        .map(|(r, n)| (r.to_string(), *n))
        .collect();
    skipped.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let summary = rep::Summary {
        inputs: d
            .formats
            .iter()
            .map(|(p, f)| (p.clone(), f.to_string()))
            .collect(),
        records_read: d.diagnostics.records_read,
        events_used: d.stats.events,
        duplicates: d.stats.duplicates,
        late: d.stats.late,
        skipped,
        skip_examples: d
            .diagnostics
            .examples
            .iter()
            .map(|e| e.to_string())
            .collect(),
        bytes_read: d.diagnostics.bytes_read,
        devices: book.len(),
        first_event: d.stats.min_ts.map(|t| Rfc3339(t).to_string()),
        last_event: d.stats.max_ts.map(|t| Rfc3339(t).to_string()),
        settings,
    };
    Report {
        title,
        generated,
        summary,
        incidents,
        width_secs: width.secs(),
        devices,
        others,
    }
}

/// One device's points as dense columns from its first bin to its last (quiet bins as zero
/// connections and no baseline), downsampled to at most `max_points`.
fn chart(
    name: &str,
    pts: &[Point],
    alerts: &[&Alert],
    width: floodwatch_core::BinWidth,
    max_points: usize,
    total: u64,
) -> DeviceChart {
    let (first, last) = match (pts.first(), pts.last()) {
        (Some(f), Some(l)) => (f.bin, l.bin),
        _ => (0, -1),
    };
    let n = (last - first + 1).max(0) as usize;
    let per = n.div_ceil(max_points).max(1);
    let mut counts: [Vec<u32>; 4] = Default::default();
    let mut median: [Vec<Option<f32>>; 4] = Default::default();
    let mut spread: [Vec<Option<f32>>; 4] = Default::default();
    for g in 0..4 {
        counts[g] = vec![0; n];
        median[g] = vec![None; n];
        spread[g] = vec![None; n];
    }
    let mut distinct = vec![0u32; n];
    let mut fresh = vec![None; n];
    for p in pts {
        let i = (p.bin - first) as usize;
        for g in 0..4 {
            counts[g][i] = p.counts[g];
            if let Some(e) = p.expected {
                median[g][i] = Some(e[g].0);
                spread[g][i] = Some(e[g].1);
            }
        }
        distinct[i] = p.distinct;
        fresh[i] = p.new_sources;
    }
    let used: [bool; 4] = std::array::from_fn(|g| counts[g].iter().any(|&c| c > 0));
    let down = |v: &mut Vec<u32>| *v = rep::max_every(v, per);
    let down_f = |v: &mut Vec<Option<f32>>| *v = rep::max_every(v, per);
    for g in 0..4 {
        if used[g] {
            down(&mut counts[g]);
            down_f(&mut median[g]);
            down_f(&mut spread[g]);
        } else {
            counts[g].clear();
            median[g].clear();
            spread[g].clear();
        }
    }
    down(&mut distinct);
    fresh = rep::max_every(&fresh, per);
    let mut marks = Vec::new();
    let mut suppressed = Vec::new();
    for a in alerts {
        let bin = width.index(a.time_generated);
        if bin < first || bin > last {
            continue;
        }
        let i = (bin - first) as usize / per;
        if a.suppressed {
            suppressed.push((
                i,
                a.suppression_reason
                    .clone()
                    .unwrap_or_else(|| "suppressed".into()),
            ));
        } else {
            marks.push((
                i,
                a.vector.map_or("", |v| v.as_str()).to_owned(),
                a.severity.as_str().to_owned(),
            ));
        }
    }
    marks.dedup_by_key(|m| m.0);
    suppressed.dedup_by(|a, b| a.0 == b.0);
    DeviceChart {
        name: name.to_owned(),
        t0: secs(width.start(first)),
        step: width.secs() * per as i64,
        per_point: per as u32,
        counts,
        median,
        spread,
        distinct,
        new_sources: fresh,
        alerts: marks,
        suppressed,
        total,
    }
}
