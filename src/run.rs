//! What each command does, once flags and config are parsed.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use floodwatch_core::time::{Nanos, parse_duration, parse_rfc3339};
use floodwatch_core::{AllowList, BinWidth, ClassifyConfig, PortSet};
use floodwatch_detect::floodwatch as fw;
use floodwatch_ingest::{IngestOptions, InputFormat};
use floodwatch_output::{Format, IncidentRow};
use floodwatch_pipeline::{Detected, Query, Settings};

use crate::config::FileConfig;
use crate::{Cli, Command, CommonArgs, DemoArgs, DetectArgs, EvaluateArgs, Rule, SimulateArgs};

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Detect(a) => detect(a),
        Command::Simulate(a) => simulate(a),
        Command::Evaluate(a) => evaluate(a),
        Command::Demo(a) => demo(a),
        Command::Serve(a) => crate::serve::serve(a),
        Command::Replay(a) => crate::replay::replay(a),
        Command::Report(a) => crate::report::report(a),
    }
}

/// A write to a closed pipe (`floodwatch ... | head`) ends the run quietly.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn time_arg(name: &str, v: &Option<String>) -> Result<Option<Nanos>> {
    v.as_deref()
        .map(|s| {
            parse_rfc3339(s.as_bytes()).map_err(|e| {
                anyhow!("--{name} {s:?}: {e} (expected RFC 3339, e.g. 2025-12-22T09:20:00Z)")
            })
        })
        .transpose()
}

pub fn settings(c: &CommonArgs, file: FileConfig) -> Result<Settings> {
    let bin = c.bin.clone().or(file.bin).unwrap_or_else(|| "5m".into());
    let secs = parse_duration(&bin).map_err(|e| anyhow!("bin width: {e}"))? / 1_000_000_000;
    let width = BinWidth::from_secs(secs).map_err(|e| anyhow!("bin width {bin:?}: {e}"))?;
    let mut seed_cfg = file.seed;
    if let Some(p) = &c.ports {
        seed_cfg.ports = p.clone();
    }
    let mut allow = AllowList::default();
    for s in file.allow_sources.iter().chain(&c.allow_sources) {
        allow
            .add_cidr(s)
            .map_err(|e| anyhow!("allow-source: {e}"))?;
    }
    let web_ports = file.web_ports.unwrap_or_else(|| vec![80, 443, 8080, 8443]);
    let classify = ClassifyConfig {
        seed_ports: PortSet::new(&seed_cfg.ports),
        web_ports: PortSet::new(&web_ports),
        allow,
    };
    let format_name = c
        .input_format
        .clone()
        .or(file.ingest.input_format)
        .unwrap_or_else(|| "auto".into());
    let format: InputFormat = format_name
        .parse()
        .map_err(|e| anyhow!("--input-format: {e}"))?;
    let mut ingest = IngestOptions {
        format,
        strict: c.strict || file.ingest.strict.unwrap_or(false),
        progress: c.progress,
        ..IngestOptions::default()
    };
    if let Some(t) = c.threads.or(file.ingest.threads) {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        ingest.threads = t;
    }
    if let Some(m) = file.ingest.max_line_bytes {
        ingest.max_line_bytes = m;
    }
    let dedup_s = c
        .dedup_window
        .clone()
        .or(file.ingest.dedup_window)
        .unwrap_or_else(|| "1h".into());
    let dedup = parse_duration(&dedup_s).map_err(|e| anyhow!("dedup window: {e}"))?;
    let lateness_s = c
        .lateness
        .clone()
        .or(file.ingest.lateness)
        .unwrap_or_else(|| "1h".into());
    ingest.lateness = match lateness_s.as_str() {
        "all" => None,
        l => Some(parse_duration(l).map_err(|e| anyhow!("lateness {l:?}: {e} (or \"all\")"))?),
    };
    let seed = seed_cfg.validate(width).map_err(|e| anyhow!("{e}"))?;
    file.floodwatch
        .validate()
        .map_err(|e| anyhow!("floodwatch config: {e}"))?;
    Ok(Settings {
        rule: c.rule.into(),
        width,
        classify,
        ingest,
        dedup,
        seed,
        floodwatch: file.floodwatch,
    })
}

pub fn load_file(c: &CommonArgs) -> Result<FileConfig> {
    match &c.config {
        Some(p) => FileConfig::load(p),
        None => Ok(FileConfig::default()),
    }
}

/// Reads and detects, printing what the run has to say about its input on stderr.
pub fn read_detect(
    inputs: &[PathBuf],
    s: &Settings,
    q: &Query,
    on_alerts: Option<&mut floodwatch_pipeline::batch::OnAlerts<'_>>,
) -> Result<Detected> {
    let mut notice = |m: &str| eprintln!("floodwatch: {m}");
    let d = floodwatch_pipeline::read_detect(inputs, s, q, &mut notice, on_alerts)?;
    for (i, line) in d.notices.iter().enumerate() {
        if i == 0 || !line.starts_with("  ") && !line.starts_with('(') {
            eprintln!("floodwatch: {line}");
        } else {
            eprintln!("{line}");
        }
    }
    Ok(d)
}

fn incident_rows(incidents: &[fw::Incident]) -> Vec<IncidentRow> {
    incidents
        .iter()
        .map(|i| IncidentRow {
            incident_id: i.incident_id.clone(),
            devices: i.devices.clone(),
            start: i.start,
            end: i.end,
            vector: i.vector.as_str().to_owned(),
            severity: i.severity.as_str().to_owned(),
            peak_requests: i.peak.request_count,
            alert_bins: i.alert_bins.len(),
            suppressed: i.suppressed,
        })
        .collect()
}

fn detect(a: DetectArgs) -> Result<ExitCode> {
    let mut file = load_file(&a.common)?;
    let sc = &mut file.seed;
    macro_rules! over {
        ($($f:ident),*) => { $(if let Some(v) = a.$f.clone() { sc.$f = v; })* };
    }
    over!(
        sigma,
        distinct_threshold,
        window,
        baseline_start,
        high_count,
        high_distinct,
        medium_count,
        medium_distinct
    );
    let format: Format = a
        .output
        .parse()
        .map_err(|e: String| anyhow!("--output: {e}"))?;
    let now = time_arg("now", &a.now)?;
    let since = time_arg("since", &a.since)?;
    let until = time_arg("until", &a.until)?;
    let s = settings(&a.common, file)?;
    let q = Query {
        now,
        since,
        until,
        since_first_event: false,
    };
    // On standard input (a pipe that may stay open: `tail -f export | floodwatch detect -`)
    // alerts are written and flushed as their bins are sealed; the table needs every row
    // first and stays at the end.
    let stream = a.common.inputs.iter().any(|p| p.as_os_str() == "-")
        && s.rule == floodwatch_pipeline::Rule::Floodwatch
        && format != Format::Table;
    let mut write_error: Option<io::Error> = None;
    let mut header = true;
    let mut on_alerts = |alerts: &[floodwatch_detect::Alert]| {
        if write_error.is_some() {
            return;
        }
        let stdout = io::stdout();
        let mut w = stdout.lock();
        let r = match format {
            Format::Csv => {
                floodwatch_output::write_csv_rows(&mut w, alerts, std::mem::take(&mut header))
            }
            _ => floodwatch_output::write_jsonl(&mut w, alerts),
        };
        if let Err(e) = r.and_then(|()| w.flush()) {
            write_error = Some(e);
        }
    };
    let read = read_detect(
        &a.common.inputs,
        &s,
        &q,
        if stream { Some(&mut on_alerts) } else { None },
    )?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let out = read.outcome(&s, &q);
    if let Some(p) = &a.incidents {
        let mut w = BufWriter::new(
            File::create(p)
                .with_context(|| format!("cannot write incidents to {}", p.display()))?,
        );
        floodwatch_output::write_jsonl(&mut w, &out.incidents)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if stream {
        return Ok(ExitCode::SUCCESS);
    }
    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    floodwatch_output::write(&mut w, format, &out.alerts, &incident_rows(&out.incidents))?;
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn simulate(a: SimulateArgs) -> Result<ExitCode> {
    use floodwatch_sim::{OutputFormat, SimConfig, SimProfile};
    let profile = match a.profile.as_str() {
        "scenarios" => SimProfile::Scenarios,
        "bench" => SimProfile::Bench,
        p => bail!("--profile {p:?}: expected scenarios or bench"),
    };
    let mut cfg = SimConfig::new(profile);
    cfg.seed = a.seed;
    if let Some(x) = a.scale {
        if !(x.is_finite() && x > 0.0) {
            bail!("--scale must be a positive number");
        }
        cfg.scale = x;
    }
    if let Some(d) = a.devices {
        cfg.devices = d;
    }
    if let Some(h) = a.hours {
        cfg.hours = h;
    }
    if let Some(t) = time_arg("start", &a.start)? {
        cfg.start = t;
    }
    let format: OutputFormat = a
        .format
        .parse()
        .map_err(|e| anyhow!("--format {:?}: {e}", a.format))?;
    let summary = floodwatch_sim::write_dataset(&cfg, format, &a.out, a.labels.as_deref())?;
    if a.out.as_os_str() != "-" {
        eprintln!("floodwatch: {}", describe(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(s: &floodwatch_sim::SimSummary) -> String {
    use floodwatch_core::time::Rfc3339;
    format!(
        "{} records ({:.1} MB) for {} devices from {} to {}, {} labelled scenarios",
        s.records,
        s.bytes as f64 / 1e6,
        s.devices,
        Rfc3339(s.start),
        Rfc3339(s.end),
        s.labels
    )
}

fn targets(a: &EvaluateArgs) -> floodwatch_sim::eval::Targets {
    let mut t = floodwatch_sim::eval::Targets::default();
    if let Some(v) = a.max_detect_bins {
        t.max_detect_bins = v;
    }
    if let Some(v) = a.max_benign_alerts {
        t.max_benign_alerts = v;
    }
    if let Some(v) = a.max_normal_fp_bins {
        t.max_normal_fp_bins = v;
    }
    t
}

fn evaluate(a: EvaluateArgs) -> Result<ExitCode> {
    let file = load_file(&a.common)?;
    let s = settings(&a.common, file)?;
    let labels = floodwatch_sim::read_labels(&a.labels)?;
    let read = read_detect(&a.common.inputs, &s, &SCORED, None)?;
    let report = score(&read, &s, &labels, &targets(&a))?;
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    println!("{report}");
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// Every bin from the first event's on; the seed rule thus runs as a schedule would: every bin,
/// against its own baseline.
const SCORED: Query = Query {
    now: None,
    since: None,
    until: None,
    since_first_event: true,
};

fn score(
    read: &Detected,
    s: &Settings,
    labels: &[floodwatch_sim::Label],
    t: &floodwatch_sim::eval::Targets,
) -> Result<floodwatch_sim::eval::EvalReport> {
    let (Some(start), Some(end)) = (read.stats.min_ts, read.stats.max_ts) else {
        bail!("no events in the input");
    };
    let out = read.outcome(s, &SCORED);
    Ok(floodwatch_sim::eval::evaluate(
        &out.alerts,
        labels,
        (start, end),
        s.width,
        t,
    ))
}

fn demo(a: DemoArgs) -> Result<ExitCode> {
    use floodwatch_sim::{OutputFormat, SimConfig, SimProfile};
    let tmp;
    let dir: &Path = match &a.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path()
        }
    };
    let mut cfg = SimConfig::new(SimProfile::Scenarios);
    cfg.seed = a.seed;
    let data = dir.join("DeviceNetworkEvents.ndjson.gz");
    let labels = dir.join("labels.jsonl");
    let summary = floodwatch_sim::write_dataset(&cfg, OutputFormat::Ndjson, &data, Some(&labels))?;
    let allow: Vec<String> = floodwatch_sim::read_labels(&labels)?
        .iter()
        .flat_map(|l| l.allow_sources.clone())
        .collect();
    println!("Simulated {}", describe(&summary));
    println!("  -> {}", data.display());
    println!(
        "Detecting with the floodwatch rule (allow-listed load-test sources: {})\n",
        if allow.is_empty() {
            "none".into()
        } else {
            allow.join(", ")
        }
    );
    let common = CommonArgs {
        inputs: vec![data.clone()],
        rule: Rule::Floodwatch,
        config: None,
        input_format: None,
        threads: None,
        strict: false,
        bin: None,
        ports: None,
        allow_sources: allow,
        dedup_window: None,
        lateness: None,
        progress: io::stderr().is_terminal(),
    };
    let s = settings(&common, FileConfig::default())?;
    let read = read_detect(&common.inputs, &s, &SCORED, None)?;
    let out = read.outcome(&s, &Query::default());
    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    floodwatch_output::write_incidents(&mut w, &incident_rows(&out.incidents))?;
    let shown = out.alerts.iter().filter(|a| !a.suppressed).count();
    writeln!(
        w,
        "{} alert bins ({} unsuppressed, {} suppressed as flash crowd, load test or monitor) make these incidents.",
        out.alerts.len(),
        shown,
        out.alerts.len() - shown,
    )?;
    match &a.keep {
        Some(_) => writeln!(
            w,
            "Every bin with its reasons: floodwatch detect --allow-source {} {}\n",
            floodwatch_sim::LOAD_TEST_CIDR,
            data.display()
        )?,
        None => writeln!(
            w,
            "Keep the data to look at every bin: floodwatch demo --keep DIR\n"
        )?,
    }
    w.flush()?;
    drop(w);
    let labels = floodwatch_sim::read_labels(&labels)?;
    let report = score(
        &read,
        &s,
        &labels,
        &floodwatch_sim::eval::Targets::default(),
    )?;
    println!("Scored against the simulation's labels:\n{report}");
    Ok(ExitCode::SUCCESS)
}
