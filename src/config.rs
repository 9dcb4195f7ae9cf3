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
    /// Exact duplicates (same DeviceName, Timestamp, ReportId) are dropped when they occur within
    /// this much event time of each other; `"0s"` turns de-duplication off. Default `"1h"`.
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
