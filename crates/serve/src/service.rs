//! Starting and stopping the whole service: state recovery, the engine thread, sinks, sources
//! and the API, and a graceful shutdown (stop reading, flush, snapshot, close).

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::{Notify, oneshot, watch};

use floodwatch_pipeline::{LiveConfig, Settings};

use crate::api::{self, ApiOptions, AppState};
use crate::engine::{self, Command, EngineOptions, Shared, SystemClock};
use crate::metrics::Metrics;
use crate::sinks::DeliveryOptions;
use crate::sinks::SinkSpec;
use crate::sources::{self, InputSpec, SourceCtx};

/// Everything `floodwatch serve` runs with, validated.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// HTTP API and ingest. Default 127.0.0.1:8514.
    pub listen: SocketAddr,
    /// The state database's directory.
    pub state: PathBuf,
    pub inputs: Vec<InputSpec>,
    pub notify: Vec<SinkSpec>,
    pub settings: Settings,
    pub live: LiveConfig,
    pub snapshot_every: Duration,
    pub idle_close: Duration,
    /// Event time alerts, series and delivered notifications are kept.
    pub retention: floodwatch_core::time::Nanos,
    pub fsync: bool,
    pub api: ApiOptions,
    /// HTTPS instead of HTTP: the certificate chain and private key, PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Batches waiting for the engine at most. Default 64.
    pub queue: usize,
    pub delivery: DeliveryOptions,
}

impl ServeOptions {
    /// The checks `--check-config` runs too: addresses, tokens, secrets, windows.
    pub fn check(&self) -> Result<()> {
        self.live
            .validate()
            .map_err(|e| anyhow::anyhow!("[serve] {e}"))?;
        if !api::is_loopback(&self.listen) && self.api.token.is_none() {
            bail!(
                "--listen {}: not a loopback address, so a bearer token is required (--token-file FILE or FLOODWATCH_TOKEN)",
                self.listen
            );
        }
        if let Some((cert, key)) = &self.tls {
            crate::tls::server_config(cert, key)?;
        }
        if let Some(t) = &self.api.token
            && t.len() < 16
        {
            bail!(
                "the bearer token is too short ({} characters; use at least 16)",
                t.len()
            );
        }
        for i in &self.inputs {
            if let InputSpec::EventHubs { secret, hub, .. } = i {
                secret.read().map_err(|e| {
                    anyhow::anyhow!("input eventhubs .../{hub}: connection string: {e}")
                })?;
            }
        }
        if self
            .inputs
            .iter()
            .filter(|i| **i == InputSpec::Stdin)
            .count()
            > 1
        {
            bail!("--input - given more than once");
        }
        Ok(())
    }
}

/// Runs until `stop` resolves (SIGTERM, Ctrl-C), then shuts down gracefully. `bound` is told
/// the address the API listens on (useful with port 0).
pub async fn run(
    opts: ServeOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    bound: Option<oneshot::Sender<SocketAddr>>,
) -> Result<()> {
    opts.check()?;
    let shared = Arc::new(Shared {
        view: RwLock::default(),
        outbox: Notify::new(),
        metrics: Metrics::new(),
        ready: AtomicBool::new(false),
        queue_depth: AtomicUsize::new(0),
        state_dir: opts.state.clone(),
    });
    let eng_opts = EngineOptions {
        live: opts.live.clone(),
        floodwatch: opts.settings.floodwatch.clone(),
        snapshot_every: opts.snapshot_every,
        idle_close: opts.idle_close,
        retention: opts.retention,
        queue_alerts: opts.notify.iter().any(|s| s.kind() == "alert"),
        queue_incidents: opts.notify.iter().any(|s| s.kind() == "incident"),
        fsync: opts.fsync,
    };
    // Recovery happens here, before anything is read or served.
    let (tx, positions, engine_thread) =
        engine::start(eng_opts, shared.clone(), Arc::new(SystemClock), opts.queue)?;
    tracing::info!(state = %opts.state.display(), "state recovered");

    {
        let conn = crate::state::open(&opts.state, false)?;
        let names: Vec<String> = opts.notify.iter().map(SinkSpec::name).collect();
        crate::state::forget_other_sinks(&conn, &names)?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (report, sink_tasks) = crate::sinks::start_all(
        &opts.notify,
        shared.clone(),
        stop_rx.clone(),
        &opts.delivery,
    )?;

    let settings = Arc::new(opts.settings.clone());
    let ctx = SourceCtx {
        engine: tx.clone(),
        settings: settings.clone(),
        step: opts.live.step,
        positions: Arc::new(positions),
        shared: shared.clone(),
        shutdown: stop_rx.clone(),
    };
    let mut source_tasks = Vec::new();
    for spec in opts.inputs.clone() {
        let ctx = ctx.clone();
        // Inputs known by name from the start hold the watermark until they deliver (or stay
        // idle): a folder's backlog is not late because HTTP ingest got ahead. Kafka announces
        // its partitions as they are assigned.
        let known = match &spec {
            InputSpec::Dir(p) => Some(format!("dir:{}", p.display())),
            InputSpec::File(p) => Some(format!("file:{}", p.display())),
            InputSpec::Stdin => Some("-".to_owned()),
            InputSpec::Kafka { .. } | InputSpec::EventHubs { .. } => None,
        };
        if let Some(name) = known {
            ctx.announce(&name)
                .await
                .map_err(|e| anyhow::anyhow!("input {name}: {e}"))?;
        }
        let name = format!("{spec:?}");
        source_tasks.push(tokio::spawn(async move {
            let r = sources::run(spec, ctx).await;
            if let Err(e) = r {
                tracing::error!(input = %name, "input stopped: {e:#}");
            }
        }));
    }

    let app = Arc::new(AppState::new(
        shared.clone(),
        tx.clone(),
        settings,
        opts.live.step,
        opts.api.clone(),
        report,
    ));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tls = opts.tls.is_some(), "listening");
    if let Some(b) = bound {
        let _ = b.send(addr);
    }
    let mut stop_rx2 = stop_rx.clone();
    let stopped = async move {
        let _ = stop_rx2.wait_for(|s| *s).await;
    };
    let server = match &opts.tls {
        None => tokio::spawn(
            axum::serve(listener, api::router(app))
                .with_graceful_shutdown(stopped)
                .into_future(),
        ),
        Some((cert, key)) => {
            let tls =
                crate::tls::TlsListener::new(listener, crate::tls::server_config(cert, key)?)?;
            tokio::spawn(
                axum::serve(tls, api::router(app))
                    .with_graceful_shutdown(stopped)
                    .into_future(),
            )
        }
    };

    stop.await;
    tracing::info!("shutting down: stopping inputs");
    let _ = stop_tx.send(true);
    for t in source_tasks {
        if tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .is_err()
        {
            tracing::warn!("an input did not stop within 10 s");
        }
    }
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Err(e))) => tracing::warn!("HTTP server: {e}"),
        Err(_) => tracing::warn!("HTTP requests still open after 10 s"),
        _ => {}
    }
    // Everything read is committed; a last snapshot, then the engine stops.
    let (done_tx, done_rx) = oneshot::channel();
    if tx.send(Command::Shutdown(done_tx)).await.is_ok() {
        let _ = done_rx.await;
    }
    drop(tx);
    drop(ctx);
    for t in sink_tasks {
        if tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .is_err()
        {
            tracing::warn!("a sink did not stop within 10 s");
        }
    }
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    tracing::info!("stopped");
    Ok(())
}
