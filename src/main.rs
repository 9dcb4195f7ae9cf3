//! `floodwatch`: the command line. Thin by design: it parses flags and the config file into
//! validated settings, then drives the library crates (ingest → core → detect → output).

mod config;
mod export;
mod replay;
mod report;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "floodwatch",
    version,
    about = "DDoS detection over Microsoft Defender XDR DeviceNetworkEvents telemetry",
    long_about = "Reads DeviceNetworkEvents in every shape Defender exports it (Advanced Hunting \
NDJSON/JSON, Event Hubs and Storage envelopes, hunting and Log Analytics API responses, portal \
CSVs; plain, gzip or zstd) and detects DDoS floods per device.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The exit codes, as `--help` lists them (the README's list says the same).
const EXIT_CODES: &str = "Exit codes: 0 the run read records and scored them (alerts or not); \
1 an I/O, config-file or strict-mode error; 2 a usage error (a flag's value, or flags that \
contradict each other); 3 `evaluate`: a target was not met; 4 no record in the input could be \
used (an empty file or stdin, `[]`, a file that is not telemetry).";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Detect floods in exported telemetry.
    #[command(after_help = EXIT_CODES)]
    Detect(DetectArgs),
    /// Write realistic simulated telemetry with labelled attack and benign scenarios.
    Simulate(SimulateArgs),
    /// Run detection on labelled telemetry and score it per scenario.
    #[command(after_help = EXIT_CODES)]
    Evaluate(EvaluateArgs),
    /// Build a few days of simulated telemetry with attacks in it, detect, and show the result.
    #[command(after_help = EXIT_CODES)]
    Demo(DemoArgs),
    /// Detect live: from Event Hubs / Kafka, Storage folders, files, stdin and HTTP, with state
    /// in an embedded database and notifications.
    Serve(serve::ServeArgs),
    /// Write a self-contained HTML report: summary, incidents, and per device each vector's
    /// rate against its baseline band.
    Report(report::ReportArgs),
    /// Push an export to a running server's `POST /ingest` at N times event time.
    Replay(replay::ReplayArgs),
    /// Write the rules out for other systems: `export sentinel` writes a Sentinel analytics
    /// rule with the same settings as `detect`.
    Export(export::ExportArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rule {
    /// floodwatch's own detector: seasonal robust baselines, source novelty, suppression.
    Floodwatch,
    /// The seed Sentinel rule's intent, implemented correctly.
    Seed,
}

impl From<Rule> for floodwatch_pipeline::Rule {
    fn from(r: Rule) -> Self {
        match r {
            Rule::Floodwatch => floodwatch_pipeline::Rule::Floodwatch,
            Rule::Seed => floodwatch_pipeline::Rule::Seed,
        }
    }
}

/// Settings shared by every command that reads telemetry and detects.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Files or directories (read recursively) of telemetry, or `-` for standard input.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Rule to run.
    #[arg(long, value_enum, default_value_t = Rule::Floodwatch)]
    pub rule: Rule,
    /// Config file (TOML); flags override it. See floodwatch.example.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Input format, or auto-detect from content: auto, ndjson, json-array, eventhubs, storage,
    /// ah-api, graph, log-analytics, defender-csv, sentinel-csv.
    #[arg(long, value_name = "FORMAT")]
    pub input_format: Option<String>,
    /// Parsing threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Make the first malformed record an error instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Bin width (a duration dividing a day: 1m, 5m, 10m...). Default 5m.
    #[arg(long, value_name = "DURATION")]
    pub bin: Option<String>,
    /// Seed rule: service ports whose inbound connections are counted (comma-separated). Default 443.
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    pub ports: Option<Vec<u16>>,
    /// Source network (CIDR or address) whose traffic is declared legitimate; repeatable.
    #[arg(long = "allow-source", value_name = "CIDR")]
    pub allow_sources: Vec<String>,
    /// What the floodwatch rule's suppressions do: `apply` marks an alert a benign explanation
    /// covers (flash crowd, load test, monitor, maintenance window) `Suppressed`; `log-only`
    /// emits it unsuppressed with the reason it would have been, to trial the detector.
    /// Config key `floodwatch.suppress`. Default apply.
    #[arg(long, value_name = "MODE", value_parser = ["apply", "log-only"])]
    pub suppress: Option<String>,
    /// Exact duplicates are dropped while their bin is held (batch: see --lateness); for the live
    /// readers, how long bins already handed on are remembered. 0s: off. Default 1h.
    #[arg(long, value_name = "DURATION")]
    pub dedup_window: Option<String>,
    /// Events may come this much event time behind the input before them and still count;
    /// older bins are handed to detection as the input is read, so memory stays bounded on
    /// time-ordered input. Files with later events are read again keeping every bin; on stdin
    /// they are counted as late. `all` keeps every bin from the start. Default 1h.
    #[arg(long, value_name = "DURATION|all")]
    pub lateness: Option<String>,
    /// Show progress on a terminal (never on a pipe): percent and time left when the input's
    /// size is known (plain files), else bytes and records read.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub progress: bool,
    /// No summary on stderr at the end of the run (records read, used and skipped, formats,
    /// devices, event time, bins scored), no progress; skipped records are still reported.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Output format: table, jsonl or csv. The table's lines are cut to the terminal's width
    /// (or `COLUMNS` when set; piped without `COLUMNS`, never cut).
    #[arg(long, short = 'o', default_value = "table")]
    pub output: String,
    /// Table: every reason of every alert under it, and each incident's id and devices.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Seed rule: evaluate at this time (RFC 3339, a bin boundary, after the first event's bin
    /// and at most the end of the newest event's). Default: the start of the bin holding the
    /// newest event (that bin may be incomplete). Not with --since / --until.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Score bins starting at or after this time (RFC 3339). With --rule seed, runs the rule as
    /// a schedule would: once per bin, each bin against the baseline it had then.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Score bins starting before this time (RFC 3339; after --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Write incidents as JSON lines to this file.
    #[arg(long, value_name = "PATH")]
    pub incidents: Option<PathBuf>,
    /// Seed rule: standard deviations above the mean that flag a bin (default 5).
    #[arg(long)]
    pub sigma: Option<f64>,
    /// Seed rule: distinct sources in a bin that flag it on their own (default 300).
    #[arg(long)]
    pub distinct_threshold: Option<u64>,
    /// Seed rule: scored window before now (default 1h).
    #[arg(long, value_name = "DURATION")]
    pub window: Option<String>,
    /// Seed rule: start of the baseline before now (default 24h).
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

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// What to simulate: `scenarios` (three days of traffic with every labelled scenario),
    /// `hard` (five days, fifteen devices: those scenarios plus attacks hidden in legitimate
    /// traffic, the detector's hard paths, mixed benign surges, a sensor outage, rows out of
    /// order by up to 90 s) or `bench` (the benchmark dataset).
    #[arg(long, default_value = "scenarios")]
    pub profile: String,
    /// Random seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Multiplies traffic volume.
    #[arg(long)]
    pub scale: Option<f64>,
    /// Number of devices (default depends on the profile).
    #[arg(long)]
    pub devices: Option<usize>,
    /// Hours of telemetry (default depends on the profile).
    #[arg(long)]
    pub hours: Option<u32>,
    /// First timestamp (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,
    /// Output format: ndjson, json-array, eventhubs, storage, ah-api, graph, log-analytics,
    /// defender-csv, sentinel-csv.
    #[arg(long, default_value = "ndjson")]
    pub format: String,
    /// Output file (`-` is standard output): a name ending in `.json`, `.ndjson`, `.jsonl`,
    /// `.csv` or `.txt`, or with no extension, optionally followed by `.gz` or `.zst` (which
    /// compress).
    #[arg(long, short = 'o', value_name = "PATH")]
    pub out: PathBuf,
    /// Write the scenario labels (JSON lines) here.
    #[arg(long, value_name = "PATH")]
    pub labels: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Scenario labels (JSON lines, as written by `floodwatch simulate --labels`).
    #[arg(long, value_name = "PATH")]
    pub labels: PathBuf,
    /// Target: every attack's first unsuppressed alert in a bin ending at most this many bins
    /// after the attack starts (default 2).
    #[arg(long, value_name = "BINS")]
    pub max_detect_bins: Option<u32>,
    /// Target: at most this many unsuppressed alerts (device-bins) during the benign scenarios,
    /// all of them together (default 0).
    #[arg(long, value_name = "ALERTS")]
    pub max_benign_alerts: Option<u32>,
    /// Target: at most this many unsuppressed alert bins (device-bins) on normal traffic after
    /// the 24 h warm-up (default 0).
    #[arg(long, value_name = "BINS")]
    pub max_normal_fp_bins: Option<u32>,
    /// Also print the evaluation as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Random seed of the simulated telemetry.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the generated files in this directory instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// No summary of the detection run on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run::run(cli) {
        Ok(code) => code,
        Err(e) => {
            if run::is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("floodwatch: error: {}", run::error_text(&e));
            if e.downcast_ref::<run::Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
