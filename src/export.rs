//! `floodwatch export sentinel`: the detection settings of a run, as a Sentinel analytics rule.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand, ValueEnum};

use floodwatch_core::time::parse_duration;
use floodwatch_output::sentinel::{self, ExportSettings, Variant};

use crate::{CommonArgs, Rule};

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub target: ExportTarget,
}

#[derive(Subcommand, Debug)]
pub enum ExportTarget {
    /// A Microsoft Sentinel scheduled analytics rule (YAML of Sentinel's content repository, or
    /// an ARM template) whose KQL runs the chosen rule with these settings.
    Sentinel(SentinelArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuleFormat {
    /// Sentinel's content-repository YAML (`Detections/*.yaml`).
    Yaml,
    /// An ARM template (`az deployment group create ... --parameters workspace=NAME`).
    Arm,
}

#[derive(Args, Debug)]
pub struct SentinelArgs {
    /// Rule to export: the corrected seed rule, or floodwatch's detector as far as KQL can
    /// express it (see the README).
    #[arg(long, value_enum, default_value_t = Rule::Floodwatch)]
    pub rule: Rule,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RuleFormat::Yaml)]
    pub format: RuleFormat,
    /// Write the rule to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Config file (TOML), as for `detect`; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Bin width (a duration dividing a day). Default 5m.
    #[arg(long, value_name = "DURATION")]
    pub bin: Option<String>,
    /// Seed rule: service ports whose inbound connections are counted (comma-separated). Default 443.
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    pub ports: Option<Vec<u16>>,
    /// Source network (CIDR or address) whose traffic is declared legitimate; repeatable.
    #[arg(long = "allow-source", value_name = "CIDR")]
    pub allow_sources: Vec<String>,
    /// How long after a bin ends the rule first scores it: Defender-to-Sentinel ingestion takes
    /// minutes, and a bin scored before its events arrived would under-count. Default 10m.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub ingestion_delay: String,
    /// Rule id (a GUID) instead of the variant's fixed one, e.g. for a second, differently tuned
    /// copy in the same workspace.
    #[arg(long, value_name = "GUID")]
    pub id: Option<String>,
    /// Seed rule: standard deviations above the mean that flag a bin (default 5).
    #[arg(long)]
    pub sigma: Option<f64>,
    /// Seed rule: distinct sources in a bin that flag it on their own (default 300).
    #[arg(long)]
    pub distinct_threshold: Option<u64>,
    /// Seed rule: gap between the baseline's end and the scored bin (default 1h).
    #[arg(long, value_name = "DURATION")]
    pub window: Option<String>,
    /// Seed rule: start of the baseline before the scored bin (default 24h).
    #[arg(long, value_name = "DURATION")]
    pub baseline_start: Option<String>,
    /// Seed rule: High needs more connections than this (default 20000).
    #[arg(long)]
    pub high_count: Option<u64>,
    /// Seed rule: High needs more distinct sources than this (default 500).
    #[arg(long)]
    pub high_distinct: Option<u64>,
    /// Seed rule: Medium needs more connections than this (default 10000).
    #[arg(long)]
    pub medium_count: Option<u64>,
    /// Seed rule: Medium needs more distinct sources than this (default 300).
    #[arg(long)]
    pub medium_distinct: Option<u64>,
}

pub fn export(a: ExportArgs) -> Result<ExitCode> {
    match a.target {
        ExportTarget::Sentinel(s) => export_sentinel(s),
    }
}

fn export_sentinel(a: SentinelArgs) -> Result<ExitCode> {
    // The same settings `detect` would run with: the config file, then the flags, validated by
    // the same code.
    let common = CommonArgs {
        inputs: Vec::new(),
        rule: a.rule,
        config: a.config.clone(),
        input_format: None,
        threads: None,
        strict: false,
        bin: a.bin.clone(),
        ports: a.ports.clone(),
        allow_sources: a.allow_sources.clone(),
        suppress: None,
        dedup_window: None,
        lateness: None,
        progress: false,
        quiet: true,
    };
    let mut file = crate::run::load_file(&common)?;
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
    let web_ports = file
        .web_ports
        .clone()
        .unwrap_or_else(|| vec![80, 443, 8080, 8443]);
    let allow_sources: Vec<String> = file
        .allow_sources
        .iter()
        .chain(&a.allow_sources)
        .cloned()
        .collect();
    let s = crate::run::settings(&common, file, &crate::run::no_seed_flags)?;
    let delay = parse_duration(&a.ingestion_delay)
        .map_err(|e| anyhow!("--ingestion-delay {:?}: {e}", a.ingestion_delay))?;
    let x = ExportSettings {
        width: s.width,
        seed: s.seed,
        floodwatch: s.floodwatch,
        web_ports,
        allow_sources,
        ingestion_delay_secs: delay / 1_000_000_000,
    };
    let variant = match a.rule {
        Rule::Seed => Variant::Seed,
        Rule::Floodwatch => Variant::Floodwatch,
    };
    let rule = sentinel::rule(variant, &x, a.id.as_deref()).map_err(|e| anyhow!("{e}"))?;
    let text = match a.format {
        RuleFormat::Yaml => rule.to_yaml(),
        RuleFormat::Arm => serde_json::to_string_pretty(&rule.to_arm())? + "\n",
    };
    match &a.out {
        Some(p) => std::fs::write(p, text)
            .with_context(|| format!("cannot write the rule to {}", p.display()))?,
        None => {
            let mut w = io::stdout().lock();
            w.write_all(text.as_bytes())?;
            w.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
