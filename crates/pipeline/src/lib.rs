//! The one pipeline every command drives: bytes → records → sealed bins → alerts.
//!
//! - [`batch`]: a whole export read on every core ([`batch::read_detect`]), bins sealed as the
//!   input is read and scored on a thread of their own; `detect`, `evaluate` and `demo` run it.
//! - [`live`]: the same detector fed as telemetry arrives. A [`reader::LineReader`] turns each
//!   batch of lines into a [`live::Partial`] (per device and sub-window aggregates, mergeable and
//!   serializable, so a later scale-out can put a topic between reading and detecting), and the
//!   [`live::Engine`] merges partials into open bins, decides early inside the open bin, seals
//!   bins on an event-time watermark and scores them with the very [`Stream`] the batch run uses.
//!
//! Nothing here does network I/O or reads a clock: the live service (`floodwatch-serve`) owns
//! sockets, files, the database and wall time, and hands this crate batches and event times.
//!
//! [`Stream`]: floodwatch_detect::floodwatch::Stream

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod batch;
pub mod live;
pub mod reader;
pub mod series;
pub mod settings;

#[cfg(test)]
mod tests;

pub use batch::{Detected, Outcome, read_detect, read_detect_with};
pub use live::{
    BinSummary, Counters, Emit, Engine, EngineState, IncidentEvent, IncidentPhase, LiveAlert,
    LiveConfig, Partial, Stage, Tracker,
};
pub use reader::LineReader;
pub use settings::{Query, Rule, Settings};
