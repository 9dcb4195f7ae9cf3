//! Detection: from finished per-device bins ([`floodwatch_core::Aggregates`]) to alerts.
//!
//! Two rules share one [`Alert`] shape:
//! - [`seed`]: the intent of the Sentinel rule that started the project, implemented correctly;
//! - `floodwatch`: the project's own detector (seasonal robust baselines, source novelty,
//!   suppression of legitimate surges, incidents).
//!
//! Rules read event-time bins only; "now" is always a parameter, never the wall clock.

pub mod alert;
pub mod floodwatch;
pub mod seed;

pub use alert::{
    Alert, BaselineInfo, Confidence, PartialBin, RuleName, Severity, TopSource, Vector,
};
