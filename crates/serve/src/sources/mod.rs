//! Where telemetry comes from: Kafka / Event Hubs, followed files and Storage-export folders,
//! standard input, and `POST /ingest` (in [`crate::api`]). Each source reads batches of lines,
//! turns them into partial aggregates with its own [`LineReader`], and sends them to the
//! engine with the position they reach; it moves its own position on (commits a Kafka offset)
//! only once the engine has answered that the batch is durable.

pub mod files;
pub mod kafka;
pub mod stdin;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use floodwatch_core::BinWidth;
use floodwatch_pipeline::reader::Origin;
use floodwatch_pipeline::{LineReader, Settings};

use crate::engine::{Ack, Command, Shared};

/// An `--input` as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSpec {
    /// `kafka://HOST:PORT[,HOST:PORT]/TOPIC?group=NAME`
    Kafka {
        brokers: String,
        topic: String,
        group: String,
    },
    /// `eventhubs://NAMESPACE.servicebus.windows.net/HUB?group=NAME[&connection-string-env=VAR|&connection-string-file=PATH]`
    EventHubs {
        namespace: String,
        hub: String,
        group: String,
        /// Where the connection string is: an environment variable or a file.
        secret: Secret,
    },
    /// `dir:PATH`: a folder of Storage-export blobs, followed.
    Dir(std::path::PathBuf),
    /// `file:PATH`: one growing file, followed through rotation.
    File(std::path::PathBuf),
    /// `-`: standard input.
    Stdin,
}

/// Where a secret is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    Env(String),
    File(std::path::PathBuf),
}

impl Secret {
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Env(v) => std::env::var(v)
                .map(|s| s.trim().to_owned())
                .map_err(|_| format!("environment variable {v} is not set")),
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("cannot read {}: {e}", p.display())),
        }
    }
}

fn query_params(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

impl std::str::FromStr for InputSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "-" {
            return Ok(InputSpec::Stdin);
        }
        if let Some(p) = s.strip_prefix("dir:") {
            return Ok(InputSpec::Dir(p.into()));
        }
        if let Some(p) = s.strip_prefix("file:") {
            return Ok(InputSpec::File(p.into()));
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            format!("input {s:?}: expected kafka://, eventhubs://, dir:, file: or -")
        })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, topic) = path
            .split_once('/')
            .ok_or_else(|| format!("input {s:?}: no topic (…/TOPIC)"))?;
        if host.is_empty() || topic.is_empty() || topic.contains('/') {
            return Err(format!("input {s:?}: expected HOST:PORT/TOPIC"));
        }
        let mut q = query_params(query);
        let group = q.remove("group").unwrap_or_else(|| "floodwatch".into());
        match scheme {
            "kafka" => {
                if let Some(k) = q.keys().next() {
                    return Err(format!("input {s:?}: unknown parameter {k:?} (group)"));
                }
                Ok(InputSpec::Kafka {
                    brokers: host.to_owned(),
                    topic: topic.to_owned(),
                    group,
                })
            }
            "eventhubs" => {
                let secret = match (
                    q.remove("connection-string-env"),
                    q.remove("connection-string-file"),
                ) {
                    (Some(v), None) => Secret::Env(v),
                    (None, Some(p)) => Secret::File(p.into()),
                    (None, None) => Secret::Env("EVENTHUB_CONNECTION_STRING".into()),
                    (Some(_), Some(_)) => {
                        return Err(format!(
                            "input {s:?}: give connection-string-env or connection-string-file, not both"
                        ));
                    }
                };
                if let Some(k) = q.keys().next() {
                    return Err(format!(
                        "input {s:?}: unknown parameter {k:?} (group, connection-string-env, connection-string-file)"
                    ));
                }
                Ok(InputSpec::EventHubs {
                    namespace: host.split(':').next().unwrap_or(host).to_owned(),
                    hub: topic.to_owned(),
                    group,
                    secret,
                })
            }
            other => Err(format!("input {s:?}: unknown scheme {other:?}")),
        }
    }
}

/// Runs one input until it ends or the service stops.
pub async fn run(spec: InputSpec, ctx: SourceCtx) -> anyhow::Result<()> {
    match spec {
        InputSpec::Kafka { .. } | InputSpec::EventHubs { .. } => kafka::run(spec, ctx).await,
        InputSpec::Dir(p) => files::run_dir(p, ctx).await,
        InputSpec::File(p) => files::run_file(p, ctx).await,
        InputSpec::Stdin => stdin::run_stdin(ctx).await,
    }
}

/// What every source gets.
#[derive(Clone)]
pub struct SourceCtx {
    pub engine: mpsc::Sender<Command>,
    pub settings: Arc<Settings>,
    /// The live sub-window width readers aggregate at.
    pub step: BinWidth,
    /// Positions stored for each input, by input name, from the last run.
    pub positions: Arc<BTreeMap<String, String>>,
    pub shared: Arc<Shared>,
    /// Turns true on shutdown.
    pub shutdown: watch::Receiver<bool>,
}

impl SourceCtx {
    pub fn reader(&self) -> LineReader {
        LineReader::new(&self.settings, self.step)
    }

    /// Reads `data` with `reader`, sends it to the engine as `input` reaching `position`, and
    /// waits until it is durable. `Err` when the engine is gone or could not store it; `reader`
    /// is then a fresh one, so the same bytes can be sent again.
    pub async fn send(
        &self,
        reader: &mut LineReader,
        input: &str,
        data: &[u8],
        origin: Origin<'_>,
        position: Option<String>,
    ) -> Result<Ack, String> {
        let (partial, diag) = reader.read(data, origin);
        let r = self.send_partial(input, partial, diag, position).await;
        if r.is_err() {
            // The reader's duplicate filter has seen these events, but they were not stored: a
            // retry through it would drop them all as duplicates. A fresh reader counts them.
            *reader = self.reader();
        }
        r
    }

    /// Announces `input` to the engine before its first batch (an empty one): the watermark
    /// waits for it until it delivers or stays idle.
    pub async fn announce(&self, input: &str) -> Result<Ack, String> {
        let empty = floodwatch_pipeline::Partial {
            source: input.to_owned(),
            aggs: floodwatch_core::Aggregates::empty(self.step),
        };
        self.send_partial(input, empty, floodwatch_core::Diagnostics::default(), None)
            .await
    }

    pub async fn send_partial(
        &self,
        input: &str,
        partial: floodwatch_pipeline::Partial,
        diag: floodwatch_core::Diagnostics,
        position: Option<String>,
    ) -> Result<Ack, String> {
        let (tx, rx) = oneshot::channel();
        let cmd = crate::engine::journal_batch(input, partial, diag, position, None, Some(tx))?;
        self.engine
            .send(cmd)
            .await
            .map_err(|_| "the engine has stopped".to_owned())?;
        rx.await.map_err(|_| "the engine has stopped".to_owned())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_specs_parse_with_reasons() {
        assert_eq!(
            "kafka://127.0.0.1:9092/events?group=g"
                .parse::<InputSpec>()
                .unwrap(),
            InputSpec::Kafka {
                brokers: "127.0.0.1:9092".into(),
                topic: "events".into(),
                group: "g".into()
            }
        );
        let eh: InputSpec =
            "eventhubs://ns.servicebus.windows.net/hub?group=fw&connection-string-file=/etc/c"
                .parse()
                .unwrap();
        assert_eq!(
            eh,
            InputSpec::EventHubs {
                namespace: "ns.servicebus.windows.net".into(),
                hub: "hub".into(),
                group: "fw".into(),
                secret: Secret::File("/etc/c".into())
            }
        );
        assert_eq!(
            "dir:/data".parse::<InputSpec>().unwrap(),
            InputSpec::Dir("/data".into())
        );
        assert_eq!("-".parse::<InputSpec>().unwrap(), InputSpec::Stdin);
        for (bad, why) in [
            ("kafka://h:1", "no topic"),
            ("kafka://h:1/t?grop=x", "unknown parameter"),
            ("http://h/t", "unknown scheme"),
            ("nothing", "expected"),
            (
                "eventhubs://n/h?connection-string-env=A&connection-string-file=B",
                "not both",
            ),
        ] {
            let e = bad.parse::<InputSpec>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
