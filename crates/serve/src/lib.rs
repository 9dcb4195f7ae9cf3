//! `floodwatch serve`: live detection.
//!
//! Around the synchronous pipeline ([`floodwatch_pipeline::Engine`]), the shape of an
//! observability pipeline: [`sources`] (Kafka / Event Hubs, followed files and Storage folders,
//! stdin, HTTP ingest) read batches and hand partial aggregates to the [`engine`] thread, which
//! owns the detector and the write side of the [`state`] database; [`sinks`] deliver
//! notifications from the database's outbox; [`api`] serves ingest, queries, metrics and
//! health. Async (tokio) lives in sources, sinks and the API only; every queue is bounded.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod engine;
pub mod metrics;
pub mod service;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod tls;
