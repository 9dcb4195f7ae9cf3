//! The dashboard: `GET /` (overview) and `GET /device/{name}` (a device's series) serve one
//! page, every asset embedded in the binary (uPlot and the charts shared with the HTML report
//! come from `floodwatch-output`), so it works with no internet; `GET /api/events` streams the
//! live view as server-sent events.
//!
//! The page reads the same JSON endpoints as any client (`/api/devices`, `/api/incidents`,
//! `/api/devices/{name}/series`, `/api/inputs`); the event stream carries the view (devices
//! with their open bin, inputs, watermark) each time it changes, so the page redraws without
//! reloading and asks for incidents and series again only when a bin was sealed.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use serde_json::json;

use floodwatch_core::time::Rfc3339;
use floodwatch_output::report as assets;

use super::AppState;

const TEMPLATE: &str = include_str!("dashboard.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");

/// Nothing leaves for another origin: scripts and styles are inline, data comes from here.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'";

/// How often the event stream looks at the view for a change. The view is refreshed after
/// each engine commit; a second is as live as a person watching needs.
const POLL: Duration = Duration::from_secs(1);

static PAGE: LazyLock<String> = LazyLock::new(|| {
    TEMPLATE
        .replacen("{{UPLOT_CSS}}", assets::UPLOT_CSS, 1)
        .replacen("{{BASE_CSS}}", assets::BASE_CSS, 1)
        .replacen("{{UPLOT_JS}}", assets::UPLOT_JS, 1)
        .replacen("{{CHARTS_JS}}", assets::CHARTS_JS, 1)
        .replacen("{{DASHBOARD_JS}}", DASHBOARD_JS, 1)
});

/// `GET /` and `GET /device/{name}`: the page (it reads the path to know which view).
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE.as_str(),
    )
        .into_response()
}

/// What the stream compares to tell whether the view changed.
type Key = (Option<i64>, Option<i64>, u64, u64, i64, usize);

fn snapshot(st: &AppState) -> (Key, serde_json::Value) {
    let v = st.shared.view();
    let key = (
        v.newest,
        v.watermark,
        v.counters.events,
        v.counters.bins_sealed,
        v.journal_rows,
        v.open_incidents.len(),
    );
    let inputs: Vec<serde_json::Value> = v
        .inputs
        .iter()
        .map(|(name, i)| {
            json!({
                "name": name,
                "records": i.records,
                "events": i.events,
                "skipped": i.skipped,
                "late": i.late,
                "newest": i.newest.map(|t| Rfc3339(t).to_string()),
                "position": i.position,
            })
        })
        .collect();
    let payload = json!({
        "newest_event": v.newest.map(|t| Rfc3339(t).to_string()),
        "watermark": v.watermark.map(|t| Rfc3339(t).to_string()),
        "bins_sealed": v.counters.bins_sealed,
        "events": v.counters.events,
        "late": v.counters.late,
        "queue_depth": st.shared.queue_depth.load(std::sync::atomic::Ordering::Relaxed),
        "devices": v.devices,
        "inputs": inputs,
        "open": v.open_incidents,
    });
    (key, payload)
}

/// `GET /api/events`: a `view` event now and each time the view changes; comments keep the
/// connection alive in between.
pub async fn events(
    State(st): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold((st, None::<Key>), |(st, last)| async move {
        loop {
            let (key, payload) = snapshot(&st);
            if last != Some(key) {
                let ev = Event::default().event("view").data(payload.to_string());
                return Some((Ok(ev), (st, Some(key))));
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
