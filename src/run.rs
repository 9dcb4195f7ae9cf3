//! What each command does, once flags and config are parsed.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};

use floodwatch_core::time::{Nanos, Rfc3339, parse_duration, parse_rfc3339};
use floodwatch_core::{AllowList, BinWidth, ClassifyConfig, PortSet};
use floodwatch_detect::floodwatch as fw;
use floodwatch_ingest::{IngestOptions, InputFormat};
use floodwatch_output::{Format, IncidentRow, TableStyle, count};
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
        Command::Export(a) => crate::export::export(a),
        Command::Report(a) => crate::report::report(a),
    }
}

/// A mistake in how floodwatch was called (a flag's value, flags that contradict each other):
/// the run exits 2. The message names the flag and the form it accepts.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// Exit code of a run that could use no record of its input (documented in `--help` and the
/// README).
pub const EXIT_NO_RECORDS: u8 = 4;

/// An error and its causes, each said once: an error whose text already ends with its cause's
/// (`nope.json: No such file or directory (os error 2)`) is not followed by it again.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let t = c.to_string();
        if out.ends_with(&t) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&t);
    }
    out
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
                usage(format!(
                    "--{name} {s:?}: {e} (expected RFC 3339, e.g. 2025-12-22T09:20:00Z)"
                ))
            })
        })
        .transpose()
}

/// Output files floodwatch writes plain: a name ending in a compression it does not write is a
/// mistake the user would only find out about later.
fn plain_out(flag: &str, p: &Path) -> Result<()> {
    const NOT_WRITTEN: [&str; 11] = [
        "bz2", "xz", "lz4", "lzma", "zip", "7z", "br", "z", "tgz", "tar", "lz",
    ];
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some(e @ ("gz" | "zst")) => Err(usage(format!(
            "--{flag} {}: this file is written uncompressed; a name ending in .{e} would say otherwise (use e.g. .jsonl)",
            p.display()
        ))),
        Some(e) if NOT_WRITTEN.contains(&e) => Err(usage(format!(
            "--{flag} {}: .{e} is not a format floodwatch writes (use e.g. .jsonl)",
            p.display()
        ))),
        _ => Ok(()),
    }
}

/// `simulate --out`: `-`, or a name whose extensions floodwatch writes.
fn sim_out(p: &Path) -> Result<()> {
    if p.as_os_str() == "-" {
        return Ok(());
    }
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let base = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(&name);
    let ext = Path::new(base).extension().and_then(|e| e.to_str());
    match ext {
        None | Some("json" | "ndjson" | "jsonl" | "csv" | "txt") => Ok(()),
        Some(e) => Err(usage(format!(
            "--out {}: unknown extension .{e}; expected a name ending in .json, .ndjson, .jsonl, .csv or .txt (or none), optionally followed by .gz or .zst",
            p.display()
        ))),
    }
}

/// A value given by a flag or by the config file, and so where to fix it when it is wrong.
struct Given<'a> {
    value: String,
    /// The flag's name when the flag gave it, else the config key.
    flag: Option<&'static str>,
    key: &'static str,
    config: Option<&'a Path>,
}

impl Given<'_> {
    fn pick<'a>(
        flag: Option<String>,
        file: Option<String>,
        names: (&'static str, &'static str),
        config: Option<&'a Path>,
    ) -> Option<Given<'a>> {
        match (flag, file) {
            (Some(v), _) => Some(Given {
                value: v,
                flag: Some(names.0),
                key: names.1,
                config,
            }),
            (None, Some(v)) => Some(Given {
                value: v,
                flag: None,
                key: names.1,
                config,
            }),
            (None, None) => None,
        }
    }

    /// A usage error naming the flag, or a config error naming the key and the file.
    fn bad(&self, msg: impl fmt::Display) -> anyhow::Error {
        match self.flag {
            Some(f) => usage(format!("--{f} {:?}: {msg}", self.value)),
            None => anyhow!(
                "config file {}: {} = {:?}: {msg}",
                self.config.map_or("?".into(), |p| p.display().to_string()),
                self.key,
                self.value
            ),
        }
    }
}

/// The seed rule's config keys in a validation message, as the flags that set them.
fn seed_flags(msg: &str) -> String {
    [
        ("seed.baseline_start", "--baseline-start"),
        ("seed.window", "--window"),
        ("seed.sigma", "--sigma"),
        ("seed.ports", "--ports"),
        ("bin width (", "bin width (--bin "),
    ]
    .iter()
    .fold(msg.to_owned(), |m, (k, f)| m.replace(k, f))
}

/// `apply_flags` sets the seed rule's flags on its config (after the file's own values are
/// checked, so that a mistake is blamed on the right one).
pub fn settings(
    c: &CommonArgs,
    mut file: FileConfig,
    apply_flags: &dyn Fn(&mut floodwatch_detect::seed::SeedConfig),
) -> Result<Settings> {
    let config = c.config.as_deref();
    let in_file = |msg: String| match config {
        Some(p) => anyhow!("config file {}: {msg}", p.display()),
        None => anyhow!("{msg}"),
    };
    let width = match Given::pick(c.bin.clone(), file.bin, ("bin", "bin"), config) {
        None => BinWidth::from_secs(300).map_err(|e| anyhow!("{e}"))?,
        Some(g) => parse_duration(&g.value)
            .and_then(|n| BinWidth::from_secs(n / 1_000_000_000))
            .map_err(|e| {
                g.bad(format!(
                    "{e}; expected a duration that divides a day, such as 1m, 5m, 10m or 1h"
                ))
            })?,
    };
    let mut seed_cfg = file.seed;
    // The seed rule's windows must be whole bins; the floodwatch rule does not use them, so
    // with it they are only checked to be durations of whole minutes (`--bin 2h` works).
    let seed_width = match c.rule {
        Rule::Seed => width,
        Rule::Floodwatch => BinWidth::from_secs(60).map_err(|e| anyhow!("{e}"))?,
    };
    // The file's own seed settings first, so that a mistake in them is blamed on the file.
    seed_cfg.validate(seed_width).map_err(|e| {
        if config.is_some() && c.bin.is_none() {
            in_file(e)
        } else {
            usage(seed_flags(&e))
        }
    })?;
    if let Some(p) = &c.ports {
        seed_cfg.ports = p.clone();
    }
    apply_flags(&mut seed_cfg);
    let mut allow = AllowList::default();
    let sources = file
        .allow_sources
        .iter()
        .map(|s| (s, None))
        .chain(c.allow_sources.iter().map(|s| (s, Some("allow-source"))));
    for (s, flag) in sources {
        allow.add_cidr(s).map_err(|e| {
            Given {
                value: s.clone(),
                flag,
                key: "allow_sources",
                config,
            }
            .bad(format!(
                "{e}; expected an address or network, such as 10.250.0.7, 10.250.0.0/24 or 2001:db8::/32"
            ))
        })?;
    }
    let web_ports = file.web_ports.unwrap_or_else(|| vec![80, 443, 8080, 8443]);
    let classify = ClassifyConfig {
        seed_ports: PortSet::new(&seed_cfg.ports),
        web_ports: PortSet::new(&web_ports),
        allow,
    };
    let format = match Given::pick(
        c.input_format.clone(),
        file.ingest.input_format,
        ("input-format", "ingest.input_format"),
        config,
    ) {
        None => InputFormat::Auto,
        Some(g) => g.value.parse::<InputFormat>().map_err(|e| g.bad(e))?,
    };
    let mut ingest = IngestOptions {
        format,
        strict: c.strict || file.ingest.strict.unwrap_or(false),
        progress: c.progress && !c.quiet,
        ..IngestOptions::default()
    };
    match (c.threads, file.ingest.threads) {
        (Some(0), _) => {
            return Err(usage(
                "--threads 0: expected a number of threads, at least 1",
            ));
        }
        (None, Some(0)) => return Err(in_file("ingest.threads = 0: expected at least 1".into())),
        (Some(t), _) | (None, Some(t)) => ingest.threads = t,
        (None, None) => {}
    }
    if let Some(m) = file.ingest.max_line_bytes {
        ingest.max_line_bytes = m;
    }
    let dedup = match Given::pick(
        c.dedup_window.clone(),
        file.ingest.dedup_window,
        ("dedup-window", "ingest.dedup_window"),
        config,
    ) {
        None => floodwatch_core::Aggregator::DEFAULT_DEDUP_HORIZON,
        Some(g) => parse_duration(&g.value).map_err(|e| g.bad(format!("{e}, or 0s for off")))?,
    };
    ingest.lateness = match Given::pick(
        c.lateness.clone(),
        file.ingest.lateness,
        ("lateness", "ingest.lateness"),
        config,
    ) {
        None => Some(floodwatch_core::time::NANOS_PER_HOUR),
        Some(g) if g.value == "all" => None,
        Some(g) => Some(parse_duration(&g.value).map_err(|e| g.bad(format!("{e}, or all")))?),
    };
    let seed = seed_cfg
        .validate(seed_width)
        .map_err(|e| usage(seed_flags(&e)))?;
    if let Some(m) = &c.suppress {
        file.floodwatch.suppress = floodwatch_detect::floodwatch::SuppressMode::parse(m)
            .map_err(|e| usage(format!("--suppress: {e}")))?;
    }
    file.floodwatch.validate().map_err(in_file)?;
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

/// No seed flags (the commands other than `detect`).
pub fn no_seed_flags(_: &mut floodwatch_detect::seed::SeedConfig) {}

pub fn load_file(c: &CommonArgs) -> Result<FileConfig> {
    match &c.config {
        Some(p) => FileConfig::load(p),
        None => Ok(FileConfig::default()),
    }
}

/// Reads and detects; what the run has to say about reading the input again is printed on
/// stderr as it happens, the rest by [`finish`].
pub fn read_detect(
    inputs: &[PathBuf],
    s: &Settings,
    q: &Query,
    on_alerts: Option<&mut floodwatch_pipeline::batch::OnAlerts<'_>>,
) -> Result<Detected> {
    let mut notice = |m: &str| eprintln!("floodwatch: {m}");
    Ok(floodwatch_pipeline::read_detect(
        inputs,
        s,
        q,
        &mut notice,
        on_alerts,
    )?)
}

/// Prints the lines a run gives on stderr about itself (`floodwatch: ` before each line that
/// is not a continuation).
fn eprint_lines(lines: &[String]) {
    for line in lines {
        if line.starts_with("  ") {
            eprintln!("{line}");
        } else {
            eprintln!("floodwatch: {line}");
        }
    }
}

/// `5m`, `59m 30s`, `1h 5m`, `2d 3h`: the parts that are not zero, seconds dropped past a day.
fn duration_text(ns: i64) -> String {
    let s = ns / 1_000_000_000;
    let parts = [
        (s / 86_400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (if s >= 86_400 { 0 } else { s % 60 }, "s"),
    ];
    let t: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if t.is_empty() {
        "0s".into()
    } else {
        t.join(" ")
    }
}

/// The inputs and the format each was read as.
fn inputs_line(d: &Detected) -> String {
    let f = &d.formats;
    if f.len() <= 4 {
        let parts: Vec<String> = f
            .iter()
            .map(|(name, fmt)| format!("{name} ({fmt})"))
            .collect();
        return format!(
            "{}: {}",
            if f.len() == 1 { "input" } else { "inputs" },
            parts.join(", ")
        );
    }
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for fmt in f.values() {
        *by.entry(fmt.to_string()).or_default() += 1;
    }
    let parts: Vec<String> = by.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("inputs: {} files ({})", f.len(), parts.join(", "))
}

/// Counts the diagnostics hold beyond the ones [`summary`] writes itself (a per-name count of
/// some kind of record, a number), each as a line: so a count added to the diagnostics is in
/// the summary without the summary having to be taught it.
fn other_counts(diag: &serde_json::Value) -> Vec<String> {
    const WRITTEN: [&str; 6] = [
        "skipped",
        "examples",
        "records_read",
        "bytes_read",
        "inputs",
        // Each warning is written with where it was.
        "warnings_total",
    ];
    let Some(obj) = diag.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, v) in obj {
        if WRITTEN.contains(&key.as_str()) {
            continue;
        }
        let label = key.replace('_', " ");
        let mut named: Vec<(String, u64)> = match v {
            serde_json::Value::Number(n) => {
                if n.as_u64().is_some_and(|n| n > 0) {
                    out.push(format!("{label}: {n}"));
                }
                continue;
            }
            // Counts by name: a plain map, or a bounded one ({names, rest}: the names not kept).
            serde_json::Value::Object(m) => {
                let mut named: Vec<(String, u64)> = m
                    .get("names")
                    .and_then(|n| n.as_object())
                    .unwrap_or(m)
                    .iter()
                    .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                if m.contains_key("names")
                    && let Some(rest) = m.get("rest").and_then(|r| r.as_u64()).filter(|&r| r > 0)
                {
                    named.push(("(other names)".into(), rest));
                }
                named
            }
            // Warnings about an input, with where: one line each.
            serde_json::Value::Array(a) if key == "warnings" => {
                for w in a {
                    if let Ok(w) = serde_json::from_value::<floodwatch_core::SkipExample>(w.clone())
                    {
                        out.push(format!("warning: {w}"));
                    }
                }
                continue;
            }
            // A list of (name, count) pairs.
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|p| Some((p.get(0)?.as_str()?.to_owned(), p.get(1)?.as_u64()?)))
                .collect(),
            _ => continue,
        };
        if named.is_empty() {
            continue;
        }
        named.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        const SHOWN: usize = 20;
        let mut parts: Vec<String> = named
            .iter()
            .take(SHOWN)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if named.len() > SHOWN {
            parts.push(format!("and {} more", named.len() - SHOWN));
        }
        out.push(format!("{label}: {}", parts.join(", ")));
    }
    out
}

/// The run's summary: what was read, in which format, what was used and skipped and why, the
/// devices, the event time, the bins scored.
pub fn summary(d: &Detected, s: &Settings, q: &Query) -> Vec<String> {
    let diag = &d.diagnostics;
    let mut out = vec![inputs_line(d)];
    let mut records = format!(
        "records: {} read, {} used, {} skipped",
        diag.records_read,
        d.stats.events,
        diag.total_skipped()
    );
    if diag.total_skipped() > 0 {
        let parts: Vec<String> = diag
            .skipped
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        records.push_str(&format!(" ({})", parts.join(", ")));
    }
    if d.stats.duplicates > 0 {
        records.push_str(&format!(
            ", {} dropped",
            count(d.stats.duplicates, "exact duplicate", "exact duplicates")
        ));
    }
    out.push(records);
    out.extend(floodwatch_pipeline::batch::skip_details(
        diag,
        s.ingest.lateness,
    ));
    out.push(format!("devices: {}", d.devices()));
    out.push(match (d.stats.min_ts, d.stats.max_ts) {
        (Some(a), Some(b)) => format!(
            "event time: {} to {} ({})",
            Rfc3339(a),
            Rfc3339(b),
            duration_text(b - a)
        ),
        _ => "event time: none".into(),
    });
    let w = s.width;
    let bins = d.scored_bins(s, q);
    out.push(match bins.range {
        Some((a, b)) => {
            let mut l = format!(
                "bins scored: {} of {}, from {} to {}",
                b - a,
                duration_text(w.nanos()),
                Rfc3339(w.start(a)),
                Rfc3339(w.start(b))
            );
            if let Some(n) = bins.device_bins {
                l.push_str(&format!(" ({})", count(n, "device-bin", "device-bins")));
            }
            l
        }
        None => "bins scored: none".into(),
    });
    if let Ok(v) = serde_json::to_value(diag) {
        out.extend(other_counts(&v));
    }
    out
}

/// Why a run used no record, when it used none.
fn no_record_reason(d: &Detected) -> Option<String> {
    if d.stats.events > 0 {
        return None;
    }
    let diag = &d.diagnostics;
    Some(if diag.records_read == 0 && diag.bytes_read == 0 {
        "no record used: the input is empty".into()
    } else if diag.records_read == 0 {
        format!(
            "no record used: the input holds no record ({} read)",
            count(diag.bytes_read, "byte", "bytes")
        )
    } else {
        let parts: Vec<String> = diag
            .skipped
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        format!(
            "no record used: none of the {} read could be used ({}); is it DeviceNetworkEvents telemetry?",
            count(diag.records_read, "record", "records"),
            parts.join(", ")
        )
    })
}

/// Ends a run on stderr: the summary (or, with `quiet`, only what was skipped), then whether
/// no record could be used, which ends the run with [`EXIT_NO_RECORDS`].
fn finish(
    d: &Detected,
    s: &Settings,
    q: &Query,
    quiet: bool,
    extra: &[String],
) -> Option<ExitCode> {
    if quiet {
        let notices =
            floodwatch_pipeline::batch::skip_notices(&d.diagnostics, &d.stats, s.ingest.lateness);
        eprint_lines(&notices);
    } else {
        let mut lines = summary(d, s, q);
        lines.extend(extra.iter().cloned());
        eprint_lines(&lines);
    }
    let why = no_record_reason(d)?;
    eprintln!("floodwatch: {why}");
    Some(ExitCode::from(EXIT_NO_RECORDS))
}

fn incident_rows(incidents: &[fw::Incident], width: BinWidth) -> Vec<IncidentRow> {
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
            confidence: i.attack_confidence.as_str().to_owned(),
            suppressed: i.suppressed,
            suppression_reason: i.suppression_reason.clone(),
            bin_width_secs: width.secs(),
            campaign_id: i.campaign_id.clone(),
            pulses: i.pulses.clone(),
        })
        .collect()
}

/// The table's line width: `COLUMNS` when set, else the terminal's; on a pipe without
/// `COLUMNS`, lines are not cut.
fn table_width() -> Option<usize> {
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
    {
        return Some(c);
    }
    let out = io::stdout();
    if !out.is_terminal() {
        return None;
    }
    console::Term::stdout()
        .size_checked()
        .map(|(_, cols)| cols as usize)
}

/// The alerts and incidents as a count for the summary.
fn result_line(out: &floodwatch_pipeline::Outcome) -> String {
    let sup = out.alerts.iter().filter(|a| a.suppressed).count() as u64;
    let mut l = format!(
        "alerts: {} ({sup} suppressed)",
        count(out.alerts.len() as u64, "alert", "alerts")
    );
    if !out.incidents.is_empty() {
        let isup = out.incidents.iter().filter(|i| i.suppressed).count() as u64;
        l.push_str(&format!(
            " in {} ({isup} suppressed)",
            count(out.incidents.len() as u64, "incident", "incidents")
        ));
    }
    l
}

/// `--now` against the data: the window before it must hold some of it.
fn check_now(now: Nanos, d: &Detected, w: BinWidth) -> Result<()> {
    let (Some(min), Some(max)) = (d.stats.min_ts, d.stats.max_ts) else {
        return Ok(());
    };
    let end = w.floor(max) + w.nanos();
    if now > end {
        return Err(usage(format!(
            "--now {}: after the data, whose newest event is at {} (its bin ends at {}); the window before --now would hold no data; expected a bin boundary from {} to {}",
            Rfc3339(now),
            Rfc3339(max),
            Rfc3339(end),
            Rfc3339(w.floor(min) + w.nanos()),
            Rfc3339(end)
        )));
    }
    if now <= w.floor(min) {
        return Err(usage(format!(
            "--now {}: at or before the first event's bin ({}), so no bin before it holds data; expected a bin boundary from {} to {}",
            Rfc3339(now),
            Rfc3339(w.floor(min)),
            Rfc3339(w.floor(min) + w.nanos()),
            Rfc3339(end)
        )));
    }
    Ok(())
}

fn detect(a: DetectArgs) -> Result<ExitCode> {
    let file = load_file(&a.common)?;
    let seed_only: [(&str, bool); 9] = [
        ("now", a.now.is_some()),
        ("sigma", a.sigma.is_some()),
        ("distinct-threshold", a.distinct_threshold.is_some()),
        ("window", a.window.is_some()),
        ("baseline-start", a.baseline_start.is_some()),
        ("high-count", a.high_count.is_some()),
        ("high-distinct", a.high_distinct.is_some()),
        ("medium-count", a.medium_count.is_some()),
        ("medium-distinct", a.medium_distinct.is_some()),
    ];
    if a.common.rule == Rule::Floodwatch {
        if let Some((f, _)) = seed_only.iter().find(|(_, given)| *given) {
            return Err(usage(format!(
                "--{f} is a setting of the seed rule; pass --rule seed with it (the floodwatch rule's settings are config-file keys, see floodwatch.example.toml)"
            )));
        }
        if a.common.ports.is_some() {
            return Err(usage(
                "--ports is a setting of the seed rule; pass --rule seed with it (the floodwatch rule's web ports are the config key web_ports)",
            ));
        }
    }
    let apply = |sc: &mut floodwatch_detect::seed::SeedConfig| {
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
    };
    let format: Format = a
        .output
        .parse()
        .map_err(|e: String| usage(format!("--output {:?}: {e}", a.output)))?;
    let now = time_arg("now", &a.now)?;
    let since = time_arg("since", &a.since)?;
    let until = time_arg("until", &a.until)?;
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(usage(format!(
            "--since {} is not before --until {}: no bin would be scored; expected --since earlier than --until",
            Rfc3339(s),
            Rfc3339(u)
        )));
    }
    if now.is_some() && (since.is_some() || until.is_some()) {
        return Err(usage(
            "--now with --since/--until: --now runs the seed rule once, at that time; --since/--until run it once per bin over a span; give one or the other",
        ));
    }
    if let Some(p) = &a.incidents {
        plain_out("incidents", p)?;
    }
    let s = settings(&a.common, file, &apply)?;
    if let Some(n) = now
        && s.width.floor(n) != n
    {
        let w = s.width;
        return Err(usage(format!(
            "--now {}: not on a boundary of the {} bins; expected a bin boundary such as {} or {}",
            Rfc3339(n),
            duration_text(w.nanos()),
            Rfc3339(w.floor(n)),
            Rfc3339(w.floor(n) + w.nanos())
        )));
    }
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
    if let Some(n) = now {
        check_now(n, &read, s.width)?;
    }
    if no_record_reason(&read).is_some() {
        return Ok(finish(&read, &s, &q, a.common.quiet, &[]).unwrap_or(ExitCode::SUCCESS));
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
    if !stream {
        let stdout = io::stdout();
        let mut w = BufWriter::new(stdout.lock());
        // Scored bins that hold no event (`--since` past the data; the seed rule's window
        // before a newest bin that holds all of it) are not "no alerts" either.
        let w_ = s.width;
        let scored = match (
            read.scored_bins(&s, &q).range,
            read.stats.min_ts,
            read.stats.max_ts,
        ) {
            (Some((a, b)), Some(min), Some(max)) => a <= w_.index(max) && b > w_.index(min),
            _ => false,
        };
        if format == Format::Table && !scored {
            writeln!(
                w,
                "No bin holding events was scored, so no alerts (see the summary on stderr for what was read and scored)."
            )?;
        } else {
            let style = TableStyle {
                width: table_width(),
                verbose: a.verbose,
            };
            floodwatch_output::write_styled(
                &mut w,
                format,
                &out.alerts,
                &incident_rows(&out.incidents, s.width),
                &style,
            )?;
        }
        w.flush()?;
    }
    Ok(finish(&read, &s, &q, a.common.quiet, &[result_line(&out)]).unwrap_or(ExitCode::SUCCESS))
}

fn simulate(a: SimulateArgs) -> Result<ExitCode> {
    use floodwatch_sim::{OutputFormat, SimConfig, SimProfile};
    let profile: SimProfile = a
        .profile
        .parse()
        .map_err(|e| usage(format!("--profile: {e}")))?;
    let mut cfg = SimConfig::new(profile);
    cfg.seed = a.seed;
    if let Some(x) = a.scale {
        if !(x.is_finite() && x > 0.0) {
            return Err(usage(format!(
                "--scale {x}: expected a positive number, such as 0.5 or 2"
            )));
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
        .map_err(|e| usage(format!("--format {:?}: {e}", a.format)))?;
    sim_out(&a.out)?;
    if let Some(l) = &a.labels {
        plain_out("labels", l)?;
    }
    let summary = floodwatch_sim::write_dataset(&cfg, format, &a.out, a.labels.as_deref())?;
    if a.out.as_os_str() != "-" {
        eprintln!("floodwatch: {}", describe(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(s: &floodwatch_sim::SimSummary) -> String {
    format!(
        "{} ({:.1} MB) for {} from {} to {}, {}",
        count(s.records, "record", "records"),
        s.bytes as f64 / 1e6,
        count(s.devices as u64, "device", "devices"),
        Rfc3339(s.start),
        Rfc3339(s.end),
        count(s.labels as u64, "labelled scenario", "labelled scenarios")
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
    let s = settings(&a.common, file, &no_seed_flags)?;
    if let Some(p) = &a.json {
        plain_out("json", p)?;
    }
    let labels = floodwatch_sim::read_labels(&a.labels)?;
    let read = read_detect(&a.common.inputs, &s, &SCORED, None)?;
    if let Some(code) = finish(&read, &s, &SCORED, a.common.quiet, &[]) {
        return Ok(code);
    }
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
        return Err(anyhow!("no record used: the input holds no event"));
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
        suppress: None,
        dedup_window: None,
        lateness: None,
        progress: io::stderr().is_terminal(),
        quiet: a.quiet,
    };
    let s = settings(&common, FileConfig::default(), &no_seed_flags)?;
    let read = read_detect(&common.inputs, &s, &SCORED, None)?;
    let out = read.outcome(&s, &Query::default());
    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    let style = TableStyle {
        width: table_width(),
        verbose: false,
    };
    floodwatch_output::write_incidents(&mut w, &incident_rows(&out.incidents, s.width), &style)?;
    let shown = out.alerts.iter().filter(|a| !a.suppressed).count() as u64;
    let all = out.alerts.len() as u64;
    writeln!(
        w,
        "{} ({shown} unsuppressed, {} suppressed as flash crowd, load test or monitor) make {}.",
        count(all, "alert bin", "alert bins"),
        all - shown,
        if out.incidents.len() == 1 {
            "this incident"
        } else {
            "these incidents"
        },
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
    if let Some(code) = finish(&read, &s, &Query::default(), a.quiet, &[result_line(&out)]) {
        return Ok(code);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_plainly() {
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(300_000_000_000), "5m");
        assert_eq!(duration_text(3_570_000_000_000), "59m 30s");
        assert_eq!(duration_text(3_900_000_000_000), "1h 5m");
        assert_eq!(
            duration_text((2 * 86_400 + 3 * 3600 + 7) * 1_000_000_000),
            "2d 3h"
        );
    }

    /// A count the diagnostics gain (here, unknown action types by name) is in the summary
    /// without the summary naming it.
    #[test]
    fn every_count_of_the_diagnostics_is_summarised() {
        let mut v = serde_json::to_value(floodwatch_core::Diagnostics::default()).unwrap();
        assert!(
            other_counts(&v).is_empty(),
            "the known fields are written elsewhere"
        );
        let o = v.as_object_mut().unwrap();
        o.insert(
            "unknown_action_types".into(),
            serde_json::json!({"InboundConnectionAttempt": 6000, "Foo": 2, "Bar": 2}),
        );
        o.insert("wrapped_records".into(), serde_json::json!(3));
        o.insert("empty_counts".into(), serde_json::json!({}));
        o.insert("pairs".into(), serde_json::json!([["x", 1], ["y", 5]]));
        o.insert("zero".into(), serde_json::json!(0));
        assert_eq!(
            other_counts(&v),
            [
                "pairs: y 5, x 1",
                "unknown action types: InboundConnectionAttempt 6000, Bar 2, Foo 2",
                "wrapped records: 3",
            ]
        );
        // The diagnostics' own bounded counts by name, and warnings with where they were.
        let mut d = floodwatch_core::Diagnostics::default();
        d.unknown_actions.add("NewKindOfEvent", 7);
        d.wrapped.add("body", 2);
        d.warnings.push(floodwatch_core::SkipExample {
            location: floodwatch_core::Location {
                source: "x.csv".into(),
                line: Some(1),
                offset: Some(0),
            },
            reason: floodwatch_core::SkipReason::Malformed,
            message: "forced csv".into(),
        });
        d.warnings_total = 1;
        let lines = other_counts(&serde_json::to_value(&d).unwrap());
        assert!(
            lines.contains(&"unknown actions: NewKindOfEvent 7".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"wrapped: body 2".to_string()), "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("warning: x.csv") && l.ends_with("forced csv")),
            "{lines:?}"
        );
    }

    #[test]
    fn an_error_says_its_cause_once() {
        let io = io::Error::new(
            io::ErrorKind::NotFound,
            "No such file or directory (os error 2)",
        );
        let e: anyhow::Error = floodwatch_ingest::IngestError::Io {
            path: "nope.json".into(),
            source: io,
        }
        .into();
        assert_eq!(
            error_text(&e),
            "nope.json: No such file or directory (os error 2)"
        );
        let e = anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }

    #[test]
    fn output_names_are_checked() {
        assert!(sim_out(Path::new("a.ndjson.gz")).is_ok());
        assert!(sim_out(Path::new("PT1H.json")).is_ok());
        assert!(sim_out(Path::new("export")).is_ok());
        assert!(sim_out(Path::new("-")).is_ok());
        let e = sim_out(Path::new("x.bz2")).unwrap_err();
        assert!(e.downcast_ref::<Usage>().is_some());
        assert!(e.to_string().contains("unknown extension .bz2"), "{e}");
        assert!(plain_out("incidents", Path::new("i.jsonl")).is_ok());
        assert!(plain_out("incidents", Path::new("i.jsonl.gz")).is_err());
        assert!(plain_out("incidents", Path::new("i.xz")).is_err());
    }
}
