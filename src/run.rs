//! What each command does, once flags and config are parsed.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use floodwatch_core::time::{Nanos, parse_duration, parse_rfc3339};
use floodwatch_core::{
    Aggregates, Aggregator, AllowList, BinWidth, ClassifyConfig, Diagnostics, IngestStats, PortSet,
    Profile, SkipReason,
};
use floodwatch_detect::Alert;
use floodwatch_detect::floodwatch::{self as fw, FloodwatchConfig};
use floodwatch_detect::seed::{self, SeedParams, SeedTable};
use floodwatch_ingest::{IngestOptions, InputFormat};
use floodwatch_output::{Format, IncidentRow};

use crate::config::FileConfig;
use crate::{Cli, Command, CommonArgs, DemoArgs, DetectArgs, EvaluateArgs, Rule, SimulateArgs};

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Detect(a) => detect(a),
        Command::Simulate(a) => simulate(a),
        Command::Evaluate(a) => evaluate(a),
        Command::Demo(a) => demo(a),
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

/// Everything needed to read input and detect, validated.
pub struct Settings {
    pub rule: Rule,
    pub width: BinWidth,
    pub classify: ClassifyConfig,
    pub ingest: IngestOptions,
    pub dedup: Nanos,
    pub seed: SeedParams,
    pub floodwatch: FloodwatchConfig,
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
        rule: c.rule,
        width,
        classify,
        ingest,
        dedup,
        seed,
        floodwatch: file.floodwatch,
    })
}

fn load_file(c: &CommonArgs) -> Result<FileConfig> {
    match &c.config {
        Some(p) => FileConfig::load(p),
        None => Ok(FileConfig::default()),
    }
}

/// When to score, as the user asked.
#[derive(Clone, Copy, Debug, Default)]
pub struct Query {
    /// Seed rule: evaluate at this bin boundary (default: the bin holding the newest event).
    pub now: Option<Nanos>,
    pub since: Option<Nanos>,
    pub until: Option<Nanos>,
    /// Score from the first event's bin on (as `since`, known only once all is read).
    pub since_first_event: bool,
}

/// What a rule keeps of complete bins while ingest reads on: a few numbers a bin for the seed
/// rule, the detector's own state for floodwatch's. Either way a bin's sketches go as soon as
/// ingest seals it.
enum Consumer {
    Seed(SeedTable),
    Floodwatch(Box<fw::Stream>),
}

impl Consumer {
    fn new(s: &Settings, q: &Query) -> Self {
        match s.rule {
            Rule::Seed => Consumer::Seed(SeedTable::new(s.width)),
            Rule::Floodwatch => {
                Consumer::Floodwatch(Box::new(fw::Stream::new(&s.floodwatch, s.width, q.until)))
            }
        }
    }

    /// `complete`: bins at or above it may be incomplete.
    fn push(&mut self, bins: &Aggregates, complete: i64) {
        match self {
            Consumer::Seed(t) => t.push(bins),
            Consumer::Floodwatch(f) => f.push(bins, complete),
        }
    }

    fn outcome(&self, s: &Settings, q: &Query, stats: &IngestStats) -> Outcome {
        let since = if q.since_first_event {
            stats.min_ts
        } else {
            q.since
        };
        match self {
            Consumer::Seed(t) => {
                let alerts = if since.is_some() || q.until.is_some() {
                    seed::run_scheduled_table(t, &s.seed, since, q.until)
                } else {
                    seed::run_table(t, &s.seed, q.now)
                };
                Outcome {
                    alerts,
                    incidents: Vec::new(),
                }
            }
            Consumer::Floodwatch(f) => {
                let d = f.finish(since);
                Outcome {
                    alerts: d.alerts,
                    incidents: d.incidents,
                }
            }
        }
    }
}

/// The input read and the rule run over it.
pub struct Detected {
    consumer: Consumer,
    pub stats: IngestStats,
}

impl Detected {
    /// The alerts for `q` (whose `until` must be the one the input was read with).
    pub fn outcome(&self, s: &Settings, q: &Query) -> Outcome {
        self.consumer.outcome(s, q, &self.stats)
    }
}

/// Reads every input and runs the rule over it as bins complete; reports what was skipped on
/// stderr.
pub fn read_detect(inputs: &[PathBuf], s: &Settings, q: &Query) -> Result<Detected> {
    let (mut consumer, mut out) = read_once(inputs, s, q, s.ingest.lateness)?;
    let late = out.diagnostics.count(SkipReason::Late);
    // Files can be read again: rather than lose late events, keep every bin the second time.
    // Only standard input cannot, and there they are counted and reported.
    if late > 0 && !inputs.iter().any(|p| p.as_os_str() == "-") {
        eprintln!(
            "floodwatch: {late} event(s) came more than the lateness horizon ({}) behind the input before them; reading the input again with every bin kept (sort it by time, or pass --lateness all, to read it once)",
            horizon(s.ingest.lateness)
        );
        (consumer, out) = read_once(inputs, s, q, None)?;
    }
    let stats = out.rest.stats;
    report_skips(&out.diagnostics, &stats, s.ingest.lateness);
    // The rest carries the whole input's stats, which give the seed table its time span.
    let complete = stats.max_ts.map_or(i64::MIN, |t| s.width.index(t));
    consumer.push(&out.rest, complete);
    Ok(Detected { consumer, stats })
}

fn horizon(lateness: Option<Nanos>) -> String {
    lateness.map_or("all".to_owned(), |l| format!("{}s", l / 1_000_000_000))
}

/// One pass over the inputs with bins sealed `lateness` behind (`None`: every bin kept).
fn read_once(
    inputs: &[PathBuf],
    s: &Settings,
    q: &Query,
    lateness: Option<Nanos>,
) -> Result<(Consumer, floodwatch_ingest::StreamOutput)> {
    let profile = match s.rule {
        Rule::Seed => Profile::SeedOnly,
        Rule::Floodwatch => Profile::Floodwatch,
    };
    let make = || {
        Aggregator::new(s.width, s.classify.clone())
            .with_profile(profile)
            .with_dedup_horizon(s.dedup)
    };
    let opts = IngestOptions {
        lateness,
        ..s.ingest.clone()
    };
    // The rule scores sealed bins on a thread of its own, while the workers read on: scoring
    // a window's bins takes about as long as a sizeable part of reading the next.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Aggregates>(2);
        let mut consumer = Consumer::new(s, q);
        let scorer = std::thread::Builder::new()
            .name("scorer".into())
            .spawn_scoped(scope, move || {
                for bins in rx {
                    consumer.push(&bins, i64::MAX);
                }
                consumer
            })
            .context("cannot start the detector's thread")?;
        let out = floodwatch_ingest::ingest_into(inputs, &opts, &make, &mut |bins| {
            // A send fails only if the scorer died; its panic is reported by the join below.
            let _ = tx.send(bins);
        });
        drop(tx);
        let consumer = scorer
            .join()
            .map_err(|_| anyhow!("the detector stopped unexpectedly"))?;
        Ok((consumer, out?))
    })
}

fn report_skips(d: &Diagnostics, stats: &IngestStats, lateness: Option<Nanos>) {
    let dup = stats.duplicates;
    if d.total_skipped() == 0 && dup == 0 {
        return;
    }
    let mut msg = format!(
        "floodwatch: read {} records, used {}",
        d.records_read, stats.events
    );
    if dup > 0 {
        msg.push_str(&format!("; dropped {dup} exact duplicate(s)"));
    }
    if d.total_skipped() > 0 {
        let parts: Vec<String> = d.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
        msg.push_str(&format!("; skipped: {}", parts.join(", ")));
    }
    eprintln!("{msg}");
    for ex in &d.examples {
        eprintln!("  {ex}");
    }
    let shown = d.examples.len() as u64;
    let listed = d.total_skipped() - d.count(SkipReason::OtherTable);
    if listed > shown {
        eprintln!("  ({} more not shown)", listed - shown);
    }
    if d.count(SkipReason::Late) > 0 {
        eprintln!(
            "floodwatch: {} event(s) came more than the lateness horizon ({}) behind the input before them, after their bins had been scored, and are not counted; sort the input by time, or pass --lateness with a longer horizon (or --lateness all for input in any order)",
            d.count(SkipReason::Late),
            horizon(lateness)
        );
    }
}

/// Result of running a rule.
pub struct Outcome {
    pub alerts: Vec<Alert>,
    pub incidents: Vec<fw::Incident>,
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
    let out = read_detect(&a.common.inputs, &s, &q)?.outcome(&s, &q);
    if let Some(p) = &a.incidents {
        let mut w = BufWriter::new(
            File::create(p)
                .with_context(|| format!("cannot write incidents to {}", p.display()))?,
        );
        floodwatch_output::write_jsonl(&mut w, &out.incidents)
            .with_context(|| format!("writing {}", p.display()))?;
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
    let read = read_detect(&a.common.inputs, &s, &SCORED)?;
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
    let read = read_detect(&common.inputs, &s, &SCORED)?;
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
