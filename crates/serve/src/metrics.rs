//! Prometheus metrics (`GET /metrics`), through prometheus-client. Labels are bounded: input
//! kinds, skip reasons, alert stages and configured sink names — never a source address or a
//! device name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::View;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
    pub suppressed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Every metric the service exports.
pub struct Metrics {
    pub registry: Registry,
    pub alerts: Family<StageLabels, Counter>,
    pub ingest_requests: Family<StatusLabels, Counter>,
    pub delivered: Family<SinkLabels, Counter>,
    pub delivery_failures: Family<SinkLabels, Counter>,
    pub sink_failing: Family<SinkLabels, Gauge>,
    pub skipped: Family<ReasonLabels, Gauge>,
    pub events: Gauge,
    pub late: Gauge,
    pub early_unconfirmed: Gauge,
    pub bins_sealed: Gauge,
    pub watermark_seconds: Gauge,
    pub newest_event_seconds: Gauge,
    pub queue_depth: Gauge,
    pub journal_rows: Gauge,
    pub snapshot_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("floodwatch");
        let m = Metrics {
            alerts: Family::default(),
            ingest_requests: Family::default(),
            delivered: Family::default(),
            delivery_failures: Family::default(),
            sink_failing: Family::default(),
            skipped: Family::default(),
            events: Gauge::default(),
            late: Gauge::default(),
            early_unconfirmed: Gauge::default(),
            bins_sealed: Gauge::default(),
            watermark_seconds: Gauge::default(),
            newest_event_seconds: Gauge::default(),
            queue_depth: Gauge::default(),
            journal_rows: Gauge::default(),
            snapshot_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "alerts",
            "Alerts stored, by stage and suppression",
            m.alerts.clone(),
        );
        registry.register(
            "ingest_requests",
            "POST /ingest answers by status",
            m.ingest_requests.clone(),
        );
        registry.register(
            "notifications_delivered",
            "Notifications delivered, by sink",
            m.delivered.clone(),
        );
        registry.register(
            "notification_failures",
            "Failed delivery attempts, by sink",
            m.delivery_failures.clone(),
        );
        registry.register(
            "sink_failing",
            "1 while a sink's last attempt failed",
            m.sink_failing.clone(),
        );
        registry.register(
            "records_skipped",
            "Records skipped by reason, all inputs",
            m.skipped.clone(),
        );
        registry.register("events", "Events merged into bins", m.events.clone());
        registry.register(
            "late_events",
            "Events for bins already sealed",
            m.late.clone(),
        );
        registry.register(
            "early_unconfirmed",
            "Early alerts their complete bin did not confirm",
            m.early_unconfirmed.clone(),
        );
        registry.register(
            "bins_sealed",
            "Device bins sealed and scored",
            m.bins_sealed.clone(),
        );
        registry.register(
            "watermark_seconds",
            "Event time (Unix s) below which bins are sealed",
            m.watermark_seconds.clone(),
        );
        registry.register(
            "newest_event_seconds",
            "Newest event time seen (Unix s)",
            m.newest_event_seconds.clone(),
        );
        registry.register(
            "engine_queue_depth",
            "Batches waiting for the engine",
            m.queue_depth.clone(),
        );
        registry.register(
            "journal_rows",
            "Journal rows since the last snapshot",
            m.journal_rows.clone(),
        );
        registry.register(
            "snapshot_bytes",
            "Size of the last snapshot",
            m.snapshot_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn alert(&self, stage: &str, suppressed: bool) {
        self.alerts
            .get_or_create(&StageLabels {
                stage: stage.to_owned(),
                suppressed: suppressed.to_string(),
            })
            .inc();
    }

    /// Gauges from the engine's view after a commit.
    pub fn observe(&self, v: &View) {
        let c = &v.counters;
        self.events.set(c.events as i64);
        self.late.set(c.late.values().sum::<u64>() as i64);
        self.early_unconfirmed.set(c.early_unconfirmed as i64);
        self.bins_sealed.set(c.bins_sealed as i64);
        self.watermark_seconds
            .set(v.watermark.map_or(0, |w| w / 1_000_000_000));
        self.newest_event_seconds
            .set(v.newest.map_or(0, |w| w / 1_000_000_000));
        self.journal_rows.set(v.journal_rows);
        let mut by_reason: std::collections::BTreeMap<&str, u64> = Default::default();
        for i in v.inputs.values() {
            for (r, n) in &i.skipped {
                *by_reason.entry(r.as_str()).or_insert(0) += n;
            }
        }
        for (r, n) in by_reason {
            self.skipped
                .get_or_create(&ReasonLabels {
                    reason: r.to_owned(),
                })
                .set(n as i64);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
