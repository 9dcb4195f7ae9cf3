//! The read side of the API: alerts, incidents, devices, series, inputs, sinks.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rusqlite::params;
use serde::Deserialize;
use serde_json::{Value, json};

use floodwatch_core::time::{Nanos, Rfc3339, parse_rfc3339};
use floodwatch_detect::floodwatch::incident::build_incidents;
use floodwatch_pipeline::LiveAlert;

use super::{AppState, error};
use crate::state;

fn time_param(name: &str, v: &Option<String>) -> Result<Option<Nanos>, Response> {
    v.as_deref()
        .map(|s| {
            parse_rfc3339(s.as_bytes()).map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("{name}={s:?}: {e} (expected RFC 3339, e.g. 2025-12-22T09:20:00Z)"),
                )
            })
        })
        .transpose()
}

/// Runs `f` on a read-only connection to the state, off the async threads.
async fn with_db<T: Send + 'static>(
    st: &Arc<AppState>,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let dir = st.shared.state_dir.clone();
    match tokio::task::spawn_blocking(move || {
        let conn = state::open_reader(&dir)?;
        f(&conn)
    })
    .await
    {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the state: {e}"),
        )),
        Err(_) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the query stopped unexpectedly",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    device: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// `unsuppressed` (default: all), `suppressed`, `all`.
    state: Option<String>,
    /// `early`, `bin` (default: both).
    stage: Option<String>,
    /// At most this many, newest last (default 10,000).
    limit: Option<u32>,
}

/// `GET /api/alerts?device=&since=&until=&state=&stage=&limit=`
pub async fn alerts(
    State(st): State<Arc<AppState>>,
    q: Result<Query<AlertQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let since = match time_param("since", &q.since) {
        Ok(t) => t.unwrap_or(i64::MIN),
        Err(r) => return r,
    };
    let until = match time_param("until", &q.until) {
        Ok(t) => t.unwrap_or(i64::MAX),
        Err(r) => return r,
    };
    let suppressed: Option<bool> = match q.state.as_deref() {
        None | Some("all") => None,
        Some("suppressed") => Some(true),
        Some("unsuppressed") => Some(false),
        Some(o) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state={o:?}: expected all, suppressed or unsuppressed"),
            );
        }
    };
    let stage = match q.stage.as_deref() {
        None => None,
        Some(s @ ("early" | "bin")) => Some(s.to_owned()),
        Some(o) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("stage={o:?}: expected early or bin"),
            );
        }
    };
    let limit = q.limit.unwrap_or(10_000).min(100_000) as i64;
    let device = q.device.clone();
    let rows = with_db(&st, move |c| {
        let mut stmt = c.prepare(
            "SELECT json FROM alerts
             WHERE time_generated >= ?1 AND time_generated < ?2
               AND (?3 IS NULL OR device = ?3)
               AND (?4 IS NULL OR suppressed = ?4)
               AND (?5 IS NULL OR stage = ?5)
             ORDER BY time_generated, device, stage DESC LIMIT ?6",
        )?;
        let rows = stmt.query_map(
            params![since, until, device, suppressed, stage, limit],
            |r| r.get::<_, String>(0),
        )?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
    })
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(r) => return r,
    };
    let alerts: Vec<Value> = rows
        .iter()
        .filter_map(|t| serde_json::from_str::<LiveAlert>(t).ok())
        .map(|a| a.to_json())
        .collect();
    Json(json!({ "alerts": alerts })).into_response()
}

/// `GET /api/incidents`: the stored bin alerts grouped exactly as `floodwatch detect` groups
/// them (the same function), and the device incidents open now.
pub async fn incidents(State(st): State<Arc<AppState>>) -> Response {
    let rows = with_db(&st, |c| {
        let mut stmt = c.prepare("SELECT json FROM alerts WHERE stage = 'bin'")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
    })
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(r) => return r,
    };
    let alerts: Vec<LiveAlert> = rows
        .iter()
        .filter_map(|t| serde_json::from_str::<LiveAlert>(t).ok())
        .collect();
    let mut scored: Vec<_> = alerts.iter().map(|a| a.scored()).collect();
    let (last_bins, open) = {
        let v = st.shared.view();
        (v.last_bins.clone(), v.open_incidents.clone())
    };
    let last: HashMap<String, i64> = last_bins.into_iter().collect();
    let incidents = build_incidents(&mut scored, st.settings.width, &st.floodwatch, &last);
    // Why each incident fired: the reasons of its peak bin.
    let by_bin: HashMap<(&str, Nanos), &Vec<String>> = alerts
        .iter()
        .map(|a| {
            (
                (a.alert.device_name.as_str(), a.alert.time_generated),
                &a.alert.reasons,
            )
        })
        .collect();
    let reasons: serde_json::Map<String, Value> = incidents
        .iter()
        .filter_map(|i| {
            by_bin
                .get(&(i.peak.device_name.as_str(), i.peak.time_generated))
                .map(|r| (i.incident_id.clone(), json!(r)))
        })
        .collect();
    Json(json!({
        "incidents": incidents,
        "reasons": reasons,
        "open": open.iter().map(|(d, i)| json!({"DeviceName": d, "IncidentId": i})).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `GET /api/devices`: every device now, its open bin against its baseline.
pub async fn devices(State(st): State<Arc<AppState>>) -> Response {
    let v = st.shared.view();
    Json(json!({
        "newest_event": v.newest.map(|t| Rfc3339(t).to_string()),
        "watermark": v.watermark.map(|t| Rfc3339(t).to_string()),
        "devices": v.devices,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    since: Option<String>,
    until: Option<String>,
}

/// `GET /api/devices/{name}/series?since=&until=`: per sealed bin, connections per vector,
/// the baseline, distinct sources, and whether it alerted.
pub async fn series(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    q: Result<Query<SeriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let width = st.settings.width;
    let since = match time_param("since", &q.since) {
        Ok(t) => t.map_or(i64::MIN, |t| width.index(t)),
        Err(r) => return r,
    };
    let until = match time_param("until", &q.until) {
        Ok(t) => t.map_or(i64::MAX, |t| width.index(t)),
        Err(r) => return r,
    };
    let known = st
        .shared
        .view()
        .devices
        .iter()
        .any(|d| d.device_name == name);
    let dev = name.clone();
    let rows = with_db(&st, move |c| {
        let mut stmt = c.prepare(
            "SELECT json FROM series WHERE device = ?1 AND bin >= ?2 AND bin < ?3 ORDER BY bin",
        )?;
        let rows = stmt.query_map(params![dev, since, until], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
    })
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(r) => return r,
    };
    if rows.is_empty() && !known {
        return error(StatusCode::NOT_FOUND, format!("no device {name:?}"));
    }
    let bins: Vec<Value> = rows
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .collect();
    Json(json!({ "device": name, "bins": bins })).into_response()
}

/// `GET /api/inputs`: per input what it brought, what was skipped and why, late events, where
/// it stands; the watermark and the engine's queue.
pub async fn inputs(State(st): State<Arc<AppState>>) -> Response {
    let v = st.shared.view();
    Json(json!({
        "inputs": v.inputs,
        "late": v.counters.late,
        "newest_event": v.newest.map(|t| Rfc3339(t).to_string()),
        "watermark": v.watermark.map(|t| Rfc3339(t).to_string()),
        "queue_depth": st.shared.queue_depth.load(std::sync::atomic::Ordering::Relaxed),
        "journal_rows": v.journal_rows,
        "counters": v.counters,
    }))
    .into_response()
}

/// `GET /api/sinks`: each sink's delivery status.
pub async fn sinks(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({ "sinks": (st.sinks)() })).into_response()
}

/// `GET /api/state`: a digest of the detector's state (two runs over the same input, one of
/// them interrupted, have the same), its size, the watermark.
pub async fn state_digest(State(st): State<Arc<AppState>>) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if st
        .engine
        .send(crate::engine::Command::Digest(tx))
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped");
    }
    match rx.await {
        Ok(d) => Json(json!({
            "digest": d.digest,
            "devices": d.devices,
            "bytes": d.bytes,
            "newest_event": d.newest.map(|t| Rfc3339(t).to_string()),
            "watermark": d.watermark.map(|t| Rfc3339(t).to_string()),
        }))
        .into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped"),
    }
}
