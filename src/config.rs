//! The config file (`--config floodwatch.toml`): every setting a flag can give, so a tuned
//! deployment is one file. Unknown keys are an error that names the key and the file.
//!
//! Precedence: command-line flag, then config file, then the documented default.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use floodwatch_detect::floodwatch::FloodwatchConfig;
use floodwatch_detect::seed::SeedConfig;

/// The whole file. Every key is optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Bin width, a duration that divides a day (`"5m"`, `"1m"`, `"10m"`). Default `"5m"`.
    pub bin: Option<String>,
    /// Ports of the HTTP/HTTPS connection-flood vector. Default `[80, 443, 8080, 8443]`.
    pub web_ports: Option<Vec<u16>>,
    /// Source networks (CIDR) whose traffic is declared legitimate: load generators, monitors.
    /// Surges they cause are reported as suppressed. Default none. `--allow-source` adds to it.
    pub allow_sources: Vec<String>,
    pub ingest: IngestSection,
    pub seed: SeedConfig,
    pub floodwatch: FloodwatchConfig,
    pub serve: ServeSection,
}

/// `[serve]`: the live service (`floodwatch serve`). Flags of the same name override.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSection {
    /// HTTP API and ingest address. Default `"127.0.0.1:8514"`. Any non-loopback address needs
    /// a bearer token.
    pub listen: Option<String>,
    /// Directory of the state database. Default `"floodwatch-state"`.
    pub state: Option<String>,
    /// Inputs (`kafka://…`, `eventhubs://…`, `dir:PATH`, `file:PATH`, `-`). Default none (HTTP
    /// ingest is always on). `--input` adds to them.
    pub inputs: Vec<String>,
    /// Notification sinks (`jsonl:PATH`, `ocsf:PATH`, `webhook:URL`, `teams:URL`, `slack:URL`,
    /// `syslog+udp://HOST:PORT`, `syslog+tcp://HOST:PORT`). `--notify` adds to them.
    pub notify: Vec<String>,
    /// Allowed lateness (event time) before a bin closes. Default `"2m"`.
    pub lateness: Option<String>,
    /// Sub-window of early decisions; divides the bin width. Default `"10s"`.
    pub early_step: Option<String>,
    /// Decide inside the open bin. Default `true`.
    pub early: Option<bool>,
    /// Sub-windows in the trailing stretch judged early. Default 3.
    pub early_trailing: Option<u32>,
    /// Wall time without input after which event time moves on with the clock, so the last
    /// bins close. Default `"30s"`.
    pub idle_close: Option<String>,
    /// How often (wall time) the whole state is stored. Default `"10s"`.
    pub snapshot_every: Option<String>,
    /// Event time alerts, series and delivered notifications are kept. Default `"30d"`.
    pub retention: Option<String>,
    /// fsync every commit (survives a power loss, not only a killed process). Default `false`.
    pub fsync: Option<bool>,
    /// File holding the bearer token (else the `FLOODWATCH_TOKEN` environment variable).
    pub token_file: Option<String>,
    /// HTTPS: the certificate chain (PEM, leaf first) and its private key (PEM), both or neither.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// Largest `POST /ingest` body, bytes as sent. Default 67108864 (64 MiB).
    pub max_body_bytes: Option<usize>,
    /// Batches waiting for the detector at most (then ingest answers 503). Default 64.
    pub queue: Option<usize>,
    /// Longest wait between two delivery attempts of a failing sink (backoff doubles from
    /// 500 ms up to this, with jitter; it never gives up). Default `"60s"`.
    pub retry_max_backoff: Option<String>,
}

/// `[ingest]`: how input is read.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// Parsing threads. Default: all cores.
    pub threads: Option<usize>,
    /// Treat the first malformed record as an error. Default `false`.
    pub strict: Option<bool>,
    /// Input format name, or `"auto"` to detect from content. Default `"auto"`.
    pub input_format: Option<String>,
    /// Exact duplicates (same DeviceName, Timestamp, ReportId) are dropped while their bin is
    /// held; for the live readers this is also how long bins already handed on are remembered.
    /// `"0s"` turns de-duplication off. Default `"1h"`.
    pub dedup_window: Option<String>,
    /// How far behind the input before it an event may come and still count: older bins are
    /// handed to detection as the input is read, which bounds memory on time-ordered input;
    /// `"all"` keeps every bin to the end (for input in any order). If events come later than
    /// this, files are read again keeping every bin; on standard input they are counted as late
    /// and reported with where they were. Default `"1h"`.
    pub lateness: Option<String>,
    /// Lines longer than this many bytes are skipped as `too-long`. Default 67108864 (64 MiB).
    pub max_line_bytes: Option<usize>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fw.toml");
        std::fs::write(&p, "[seed]\nsigma = 4.0\nsigmaa = 3\n").unwrap();
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("sigmaa"), "{e}");
        assert!(e.contains("fw.toml"), "{e}");
        std::fs::write(&p, "bin = \"10m\"\nallow_sources = [\"10.0.0.0/8\"]\n[seed]\nsigma = 4.0\nports = [443, 8443]\n[ingest]\nthreads = 1\n").unwrap();
        let c = FileConfig::load(&p).unwrap();
        assert_eq!(c.seed.sigma, 4.0);
        assert_eq!(c.seed.ports, vec![443, 8443]);
        assert_eq!(c.seed.window, "1h", "unset keys keep their defaults");
        assert_eq!(c.ingest.threads, Some(1));
        assert_eq!(c.bin.as_deref(), Some("10m"));
    }
}
