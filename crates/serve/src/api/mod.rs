//! The HTTP API (axum on tokio): ingest, queries, metrics, health, and the OpenAPI document.
//!
//! - `POST /ingest`: NDJSON rows, Event Hubs bodies (one per line, or one pretty-printed),
//!   Storage-export lines; `Content-Encoding: gzip | zstd`. The answer comes once the batch's
//!   effect is durable. A body with some bad records is accepted (200): its good records count
//!   and the answer says what was skipped, why and where — a client must not send it again, or
//!   the good records would count twice. A body with no usable record is 400 with the reason;
//!   413 over the size limits; 415 for an unknown encoding or content type; 429 / 503 with
//!   `Retry-After` when the service is saturated.
//! - `GET /api/incidents`, `/api/alerts`, `/api/devices`, `/api/devices/{name}/series`,
//!   `/api/inputs`, `/api/sinks`, `/metrics`, `/healthz`, `/readyz`, `/openapi.json`.
//! - `GET /`, `/device/{name}`: the dashboard; `GET /api/events`: its live updates (server-sent
//!   events); see [`dashboard`].
//!
//! Bound to loopback by default. Any other address needs a bearer token (checked in constant
//! time); with a token set, every route but the health checks needs it.

// Handlers answer early with a finished `Response` as their error; boxing it on every such
// path would only add noise to code that is not hot.
#![allow(clippy::result_large_err)]

mod dashboard;
mod query;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, mpsc, oneshot};

use floodwatch_core::{Diagnostics, SkipReason};
use floodwatch_pipeline::reader::Origin;
use floodwatch_pipeline::{LineReader, Settings};

use crate::engine::{Command, Shared};

/// Limits and identity of the API.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Largest request body accepted, as sent (compressed or not). Default 64 MiB.
    pub max_body: usize,
    /// Largest body once decompressed. Default 512 MiB.
    pub max_decoded: usize,
    /// Bearer token required on every route but /healthz and /readyz, when set.
    pub token: Option<String>,
    /// How long a request may take to send its body. Default 60 s.
    pub body_timeout: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            max_body: 64 << 20,
            max_decoded: 512 << 20,
            token: None,
            body_timeout: Duration::from_secs(60),
        }
    }
}

/// Reports every sink's delivery status.
pub type SinkReport = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the handlers share.
pub struct AppState {
    pub shared: Arc<Shared>,
    pub engine: mpsc::Sender<Command>,
    pub settings: Arc<Settings>,
    pub step: floodwatch_core::BinWidth,
    pub opts: ApiOptions,
    /// Idle readers (each keeps its duplicate filter across requests).
    readers: Mutex<Vec<LineReader>>,
    /// Requests being parsed at once.
    parsing: Semaphore,
    /// The sinks' delivery status, as JSON.
    pub sinks: SinkReport,
    pub floodwatch: floodwatch_detect::floodwatch::FloodwatchConfig,
}

impl AppState {
    pub fn new(
        shared: Arc<Shared>,
        engine: mpsc::Sender<Command>,
        settings: Arc<Settings>,
        step: floodwatch_core::BinWidth,
        opts: ApiOptions,
        sinks: SinkReport,
    ) -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        AppState {
            floodwatch: settings.floodwatch.clone(),
            shared,
            engine,
            settings,
            step,
            opts,
            readers: Mutex::new(Vec::new()),
            // Twice the cores: one request parses while another waits for the engine.
            parsing: Semaphore::new(2 * workers),
            sinks,
        }
    }

    fn take_reader(&self) -> LineReader {
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| LineReader::new(&self.settings, self.step))
    }

    fn give_reader(&self, r: LineReader) {
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.opts.max_body;
    let api = Router::new()
        .route("/ingest", post(ingest).layer(DefaultBodyLimit::max(limit)))
        .route("/", get(dashboard::page))
        .route("/device/{name}", get(dashboard::page))
        .route("/api/events", get(dashboard::events))
        .route("/api/incidents", get(query::incidents))
        .route("/api/alerts", get(query::alerts))
        .route("/api/devices", get(query::devices))
        .route("/api/devices/{name}/series", get(query::series))
        .route("/api/inputs", get(query::inputs))
        .route("/api/sinks", get(query::sinks))
        .route("/api/state", get(query::state_digest))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(api)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route (see /openapi.json)") })
        .with_state(state)
}

/// Whether `addr` may be served without a token.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": msg.into() }))).into_response()
}

fn retry_after(status: StatusCode, secs: u64, msg: &str) -> Response {
    let mut r = error(status, msg);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.opts.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Constant time, so the answer's timing does not tell how much of a guess was right.
        let ok: bool = given.as_bytes().ct_eq(token.as_bytes()).into();
        if !ok {
            let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    if st.shared.ready.load(std::sync::atomic::Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: recovering the state",
        )
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    st.shared.metrics.queue_depth.set(
        st.shared
            .queue_depth
            .load(std::sync::atomic::Ordering::Relaxed) as i64,
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.shared.metrics.encode(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

fn encoding(h: &HeaderMap) -> Result<Encoding, Response> {
    match h
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => Ok(Encoding::Identity),
        Some("gzip") | Some("x-gzip") => Ok(Encoding::Gzip),
        Some("zstd") => Ok(Encoding::Zstd),
        Some(other) => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {other:?} is not supported (gzip, zstd or none)"),
        )),
    }
}

fn content_type_ok(h: &HeaderMap) -> Result<(), Response> {
    let Some(ct) = h.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("?").to_ascii_lowercase();
    let base = ct.split(';').next().unwrap_or("").trim();
    match base {
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/json"
        | "text/plain"
        | "application/octet-stream" => Ok(()),
        other => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {other:?} is not supported (application/x-ndjson, application/json, text/plain)"
            ),
        )),
    }
}

/// Decompresses within `limit` bytes; `Err` is the answer to give.
fn decode(body: Bytes, enc: Encoding, limit: usize) -> Result<Bytes, Response> {
    let reader: Box<dyn Read + '_> = match enc {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body over the size limit",
                ));
            }
            // A plain body is parsed as it came, without a copy.
            return Ok(body);
        }
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Encoding::Zstd => match zstd::stream::read::Decoder::new(&body[..]) {
            Ok(d) => Box::new(d),
            Err(e) => {
                return Err(error(StatusCode::BAD_REQUEST, format!("zstd: {e}")));
            }
        },
    };
    let mut out = Vec::new();
    match reader.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > limit => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body decompresses to more than the limit of {limit} bytes"),
        )),
        Ok(_) => Ok(Bytes::from(out)),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("cannot decompress the body: {e}"),
        )),
    }
}

async fn ingest(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let m = &st.shared.metrics;
    let resp = ingest_inner(&st, headers, body).await;
    m.ingest_requests
        .get_or_create(&crate::metrics::StatusLabels {
            status: resp.status().as_u16().to_string(),
        })
        .inc();
    resp
}

async fn ingest_inner(st: &Arc<AppState>, headers: HeaderMap, body: Body) -> Response {
    let enc = match encoding(&headers) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if let Err(r) = content_type_ok(&headers) {
        return r;
    }
    let bytes: Bytes = match tokio::time::timeout(
        st.opts.body_timeout,
        axum::body::to_bytes(body, st.opts.max_body),
    )
    .await
    {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the body took too long to arrive",
            );
        }
        Ok(Err(e)) => {
            // Over the limit shows as a length-limit error inside the body error.
            let msg = e.to_string();
            let status = if std::error::Error::source(&e)
                .is_some_and(|s| s.to_string().contains("length limit"))
                || msg.contains("length limit")
            {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return error(status, format!("reading the body: {msg}"));
        }
        Ok(Ok(b)) => b,
    };
    if bytes.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty body: send NDJSON rows, Event Hubs bodies or Storage-export lines",
        );
    }
    // Parsing takes a core: bounded, and a client that cannot get one soon is told to wait.
    let permit = match tokio::time::timeout(Duration::from_secs(2), st.parsing.acquire()).await {
        Ok(Ok(p)) => p,
        _ => {
            return retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                1,
                "too many requests being parsed; retry later",
            );
        }
    };
    let st2 = st.clone();
    let limit = st.opts.max_decoded;
    let parsed = tokio::task::spawn_blocking(move || {
        let data = decode(bytes, enc, limit)?;
        let mut reader = st2.take_reader();
        let (partial, diag) = reader.read(
            &data,
            Origin {
                source: "http",
                first_line: 1,
                base_offset: 0,
            },
        );
        let events = partial.aggs.stats.events + partial.aggs.stats.duplicates;
        Ok::<_, Response>(((partial, diag, events), reader))
    })
    .await;
    drop(permit);
    let ((partial, diag, events), reader) = match parsed {
        Ok(Ok(x)) => x,
        Ok(Err(r)) => return r,
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the parser stopped unexpectedly",
            );
        }
    };
    let errors: u64 = diag
        .skipped
        .iter()
        .filter(|(r, _)| r.is_error())
        .map(|(_, n)| n)
        .sum();
    if events == 0 {
        let why = diag
            .examples
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no DeviceNetworkEvents record in the body".into());
        if errors > 0 || diag.records_read == 0 {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "error": format!("no usable record: {why}"),
                    "records": diag.records_read,
                    "skipped": skipped_json(&diag),
                    "examples": diag.examples.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                })),
            )
                .into_response();
        }
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty() && k.len() <= 200);
    let summary = skipped_json(&diag);
    let examples: Vec<String> = diag.examples.iter().map(|e| e.to_string()).collect();
    let records = diag.records_read;
    let (tx, rx) = oneshot::channel();
    // The journal entry is encoded here, not on the engine's thread.
    let cmd = match crate::engine::journal_batch("http", partial, diag, None, key, Some(tx)) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    match tokio::time::timeout(Duration::from_secs(5), st.engine.send(cmd)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is shutting down",
            );
        }
        Err(_) => {
            return retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                2,
                "detection is behind: the engine's queue is full; retry later",
            );
        }
    }
    let answer = rx.await;
    // A reader goes back to the pool only when what it read was stored: its duplicate filter
    // has seen the batch's events, and a client retrying a batch that failed must not find
    // them all "duplicates".
    if matches!(answer, Ok(Ok(_))) {
        st.give_reader(reader);
    }
    match answer {
        Ok(Ok(ack)) => (
            StatusCode::OK,
            axum::Json(json!({
                "records": records,
                "accepted": ack.events,
                "duplicates": events.saturating_sub(ack.events),
                "late": ack.late,
                "repeated": ack.repeated,
                "skipped": summary,
                "examples": examples,
            })),
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down",
        ),
    }
}

fn skipped_json(d: &Diagnostics) -> serde_json::Value {
    let m: serde_json::Map<String, serde_json::Value> = d
        .skipped
        .iter()
        .filter(|(r, _)| **r != SkipReason::Late)
        .map(|(r, n)| (r.to_string(), json!(n)))
        .collect();
    serde_json::Value::Object(m)
}
