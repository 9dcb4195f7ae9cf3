//! `floodwatch serve`: flags and the `[serve]` config section into validated service options,
//! then the service itself (crates/serve) on a tokio runtime until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use floodwatch_core::BinWidth;
use floodwatch_core::time::parse_duration;
use floodwatch_pipeline::LiveConfig;
use floodwatch_serve::api::ApiOptions;
use floodwatch_serve::service::ServeOptions;

use crate::CommonArgs;
use crate::config::FileConfig;
use crate::run::{load_file, settings};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// HTTP API and ingest address (default 127.0.0.1:8514). A non-loopback address needs a
    /// bearer token (--token-file or FLOODWATCH_TOKEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory of the state database (default ./floodwatch-state).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// An input, repeatable: kafka://HOST:PORT/TOPIC?group=NAME,
    /// eventhubs://NAMESPACE.servicebus.windows.net/HUB?group=NAME[&connection-string-env=VAR|
    /// &connection-string-file=PATH], dir:PATH (Storage-export folder, followed), file:PATH
    /// (followed through rotation), - (stdin). POST /ingest is always on.
    #[arg(long = "input", value_name = "SPEC")]
    pub inputs: Vec<String>,
    /// A notification sink, repeatable: jsonl:PATH, ocsf:PATH, webhook:URL, teams:URL,
    /// slack:URL, syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT.
    #[arg(long = "notify", value_name = "SPEC")]
    pub notify: Vec<String>,
    /// Config file (TOML, with a [serve] section); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Source network whose traffic is declared legitimate; repeatable.
    #[arg(long = "allow-source", value_name = "CIDR")]
    pub allow_sources: Vec<String>,
    /// What the suppressions do: `apply`, or `log-only` (alerts a benign explanation covers are
    /// sent unsuppressed, naming the reason they would have been suppressed). Default apply.
    #[arg(long, value_name = "MODE", value_parser = ["apply", "log-only"])]
    pub suppress: Option<String>,
    /// Bin width (default 5m).
    #[arg(long, value_name = "DURATION")]
    pub bin: Option<String>,
    /// Exact duplicates within this much event time are dropped (default 1h; 0s: off).
    #[arg(long, value_name = "DURATION")]
    pub dedup_window: Option<String>,
    /// Allowed lateness: a bin closes once event time is this far past its end (default 2m).
    #[arg(long, value_name = "DURATION")]
    pub lateness: Option<String>,
    /// Sub-window of early decisions inside the open bin (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub early_step: Option<String>,
    /// Decide early inside the open bin (default true).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub early: Option<bool>,
    /// After this much wall time without input, event time moves on with the clock so the
    /// last bins close (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub idle_close: Option<String>,
    /// How often the whole state is stored (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub snapshot_every: Option<String>,
    /// Event time alerts and series are kept (default 30d).
    #[arg(long, value_name = "DURATION")]
    pub retention: Option<String>,
    /// fsync each commit (survives power loss; default: survives a killed process).
    #[arg(long)]
    pub fsync: bool,
    /// File holding the API's bearer token (else FLOODWATCH_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS (rustls) with this certificate chain, a PEM file, leaf first; with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, a PEM file (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace (default info; RUST_LOG wins).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// Validate flags, config, inputs and sinks, print the effective settings, and exit.
    #[arg(long)]
    pub check_config: bool,
}

fn dur(name: &str, v: Option<&str>, default: &str) -> Result<i64> {
    let s = v.unwrap_or(default);
    parse_duration(s).map_err(|e| anyhow!("{name} {s:?}: {e}"))
}

fn std_dur(name: &str, v: Option<&str>, default: &str) -> Result<Duration> {
    let n = dur(name, v, default)?;
    Ok(Duration::from_nanos(n.max(0) as u64))
}

pub fn options(a: &ServeArgs) -> Result<ServeOptions> {
    let common = CommonArgs {
        inputs: Vec::new(),
        rule: crate::Rule::Floodwatch,
        config: a.config.clone(),
        input_format: None,
        threads: Some(1),
        strict: false,
        bin: a.bin.clone(),
        ports: None,
        allow_sources: a.allow_sources.clone(),
        suppress: a.suppress.clone(),
        dedup_window: a.dedup_window.clone(),
        lateness: None,
        progress: false,
        quiet: true,
    };
    let file: FileConfig = load_file(&common)?;
    let sv = file.serve.clone();
    let s = settings(&common, file, &crate::run::no_seed_flags)?;
    let listen_s = a
        .listen
        .clone()
        .or(sv.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8514".into());
    let listen = listen_s.parse().map_err(|e| {
        anyhow!("--listen {listen_s:?}: {e} (expected IP:PORT, e.g. 127.0.0.1:8514)")
    })?;
    let state = a
        .state
        .clone()
        .or(sv.state.clone().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("floodwatch-state"));
    let inputs = sv
        .inputs
        .iter()
        .chain(&a.inputs)
        .map(|i| i.parse().map_err(|e: String| anyhow!("--input: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let notify = sv
        .notify
        .iter()
        .chain(&a.notify)
        .map(|i| i.parse().map_err(|e: String| anyhow!("--notify: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let mut live = LiveConfig::new(s.width);
    live.lateness = dur(
        "lateness",
        a.lateness.as_deref().or(sv.lateness.as_deref()),
        "2m",
    )?;
    let step_s = dur(
        "early step",
        a.early_step.as_deref().or(sv.early_step.as_deref()),
        "10s",
    )?;
    live.step =
        BinWidth::from_secs(step_s / 1_000_000_000).map_err(|e| anyhow!("early step: {e}"))?;
    live.early = a.early.or(sv.early).unwrap_or(true);
    if let Some(t) = sv.early_trailing {
        live.early_trailing = t;
    }
    live.validate().map_err(|e| anyhow!("{e}"))?;
    let token_file = a
        .token_file
        .clone()
        .or(sv.token_file.clone().map(PathBuf::from));
    let token = match token_file {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read the token file {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("FLOODWATCH_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned()),
    }
    .filter(|t| !t.is_empty());
    let mut api = ApiOptions {
        token,
        ..ApiOptions::default()
    };
    if let Some(m) = sv.max_body_bytes {
        api.max_body = m;
    }
    let tls = match (
        a.tls_cert
            .clone()
            .or(sv.tls_cert.clone().map(PathBuf::from)),
        a.tls_key.clone().or(sv.tls_key.clone().map(PathBuf::from)),
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => bail!("[serve] tls_cert and tls_key go together: set both or neither"),
    };
    Ok(ServeOptions {
        listen,
        state,
        inputs,
        notify,
        settings: s,
        live,
        snapshot_every: std_dur(
            "snapshot_every",
            a.snapshot_every.as_deref().or(sv.snapshot_every.as_deref()),
            "10s",
        )?,
        idle_close: std_dur(
            "idle_close",
            a.idle_close.as_deref().or(sv.idle_close.as_deref()),
            "30s",
        )?,
        retention: dur(
            "retention",
            a.retention.as_deref().or(sv.retention.as_deref()),
            "30d",
        )?,
        fsync: a.fsync || sv.fsync.unwrap_or(false),
        api,
        tls,
        queue: sv.queue.unwrap_or(64).max(1),
        delivery: {
            let mut d = floodwatch_serve::sinks::DeliveryOptions::default();
            if let Some(m) = &sv.retry_max_backoff {
                d.max_backoff = std_dur("retry_max_backoff", Some(m), "60s")?;
                d.initial_backoff = d.initial_backoff.min(d.max_backoff);
            }
            d
        },
    })
}

fn init_logs(a: &ServeArgs) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},rdkafka=warn", a.log_level)));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if a.log_json {
        b.json().init();
    } else {
        b.init();
    }
}

pub fn serve(a: ServeArgs) -> Result<ExitCode> {
    let opts = options(&a)?;
    if a.check_config {
        opts.check()?;
        println!("configuration OK");
        println!("  listen   {}", opts.listen);
        println!("  state    {}", opts.state.display());
        for i in &opts.inputs {
            println!("  input    {i:?}");
        }
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        println!("  input    POST {scheme}://{}/ingest", opts.listen);
        if let Some((cert, _)) = &opts.tls {
            println!("  tls      {}", cert.display());
        }
        for n in &opts.notify {
            println!("  notify   {}", n.name());
        }
        println!(
            "  bins     {}s, early every {}s, lateness {}s, idle close {}s",
            opts.live.width.nanos() / 1_000_000_000,
            opts.live.step.nanos() / 1_000_000_000,
            opts.live.lateness / 1_000_000_000,
            opts.idle_close.as_secs()
        );
        return Ok(ExitCode::SUCCESS);
    }
    init_logs(&a);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("serve")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let stop = async {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
            }
        };
        floodwatch_serve::service::run(opts, stop, None).await
    })?;
    Ok(ExitCode::SUCCESS)
}
