//! Bad input is data: every record that could not be used is counted by reason, and the first
//! few are kept with where they were, so a run can go on and still say what it skipped.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a record (or a stretch of input) was skipped. Bounded set: these are metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// Not valid JSON / CSV syntax.
    Malformed,
    /// A field has the wrong type (e.g. a number where a string belongs).
    WrongType,
    /// A required field is missing or null (Timestamp/TimeGenerated, DeviceName, ActionType).
    MissingField,
    /// The timestamp is not a date-time.
    BadTimestamp,
    /// An IP address that does not parse.
    BadIp,
    /// A port outside 0..=65535 or not a number.
    BadPort,
    /// A line longer than the reader's limit.
    TooLong,
    /// Not UTF-8 / binary data.
    Binary,
    /// A compressed stream ended early or is corrupt; what came before it was kept.
    Truncated,
    /// An envelope of another Defender table (`category` is not DeviceNetworkEvents). Counted,
    /// not an error.
    OtherTable,
    /// A good event that came after its bin had been sealed and handed to detection (more than
    /// the lateness horizon out of order). Not an error of the input, but not counted.
    Late,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Malformed => "malformed",
            SkipReason::WrongType => "wrong-type",
            SkipReason::MissingField => "missing-field",
            SkipReason::BadTimestamp => "bad-timestamp",
            SkipReason::BadIp => "bad-ip",
            SkipReason::BadPort => "bad-port",
            SkipReason::TooLong => "too-long",
            SkipReason::Binary => "binary",
            SkipReason::Truncated => "truncated",
            SkipReason::OtherTable => "other-table",
            SkipReason::Late => "late",
        }
    }

    /// Whether `--strict` turns this into an error (other tables are expected on a shared hub).
    pub fn is_error(self) -> bool {
        !matches!(self, SkipReason::OtherTable | SkipReason::Late)
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in the input something was: file, and line and/or byte offset when known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    /// Path as given (`-` for stdin), with `!member` for an entry inside a container when needed.
    pub source: String,
    /// 1-based line (or CSV record) number.
    pub line: Option<u64>,
    /// Byte offset of the record's start in the (decompressed) stream.
    pub offset: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(l) = self.line {
            write!(f, ": line {l}")?;
        }
        if let Some(o) = self.offset {
            write!(f, " (byte {o})")?;
        }
        Ok(())
    }
}

/// One skipped record, kept as an example.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SkipExample {
    pub location: Location,
    pub reason: SkipReason,
    /// Human-readable detail, e.g. `field "Timestamp": not a date-time: "yesterday"`.
    pub message: String,
}

impl fmt::Display for SkipExample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.location, self.reason, self.message)
    }
}

/// Mergeable account of what was skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostics {
    pub skipped: BTreeMap<SkipReason, u64>,
    /// The first [`Diagnostics::MAX_EXAMPLES`] examples in input order (by location).
    pub examples: Vec<SkipExample>,
    /// Records read (good or bad), for the summary.
    pub records_read: u64,
    /// Bytes read (decompressed), for the summary.
    pub bytes_read: u64,
    /// Inputs (files, stdin) read.
    pub inputs: u64,
}

impl Diagnostics {
    pub const MAX_EXAMPLES: usize = 10;

    pub fn skip(&mut self, reason: SkipReason, location: Location, message: impl Into<String>) {
        *self.skipped.entry(reason).or_insert(0) += 1;
        // Other tables on a shared hub are expected, often by the thousand: count them, but keep
        // the example slots for what a user must look at.
        if reason == SkipReason::OtherTable {
            return;
        }
        if self.examples.len() < Self::MAX_EXAMPLES
            || self.examples.last().is_some_and(|e| location < e.location)
        {
            self.examples.push(SkipExample {
                location,
                reason,
                message: message.into(),
            });
            self.examples.sort();
            self.examples.truncate(Self::MAX_EXAMPLES);
        }
    }

    /// Counts an event [`crate::Aggregator::add`] found late, with where it was.
    pub fn late(&mut self, location: Location) {
        self.skip(
            SkipReason::Late,
            location,
            "event time is more than the lateness horizon behind events already read, so its \
             bin was already handed to detection; not counted",
        );
    }

    /// Records what [`crate::Aggregator::add`] did, when the event was late.
    #[inline]
    pub fn note(&mut self, fate: crate::bins::Fate, location: impl FnOnce() -> Location) {
        if fate == crate::bins::Fate::Late {
            self.late(location());
        }
    }

    pub fn total_skipped(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Skips that `--strict` treats as errors.
    pub fn errors(&self) -> u64 {
        self.skipped
            .iter()
            .filter(|(r, _)| r.is_error())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn count(&self, r: SkipReason) -> u64 {
        self.skipped.get(&r).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, o: &Diagnostics) {
        for (r, n) in &o.skipped {
            *self.skipped.entry(*r).or_insert(0) += n;
        }
        self.examples.extend(o.examples.iter().cloned());
        self.examples.sort();
        self.examples.truncate(Self::MAX_EXAMPLES);
        self.records_read += o.records_read;
        self.bytes_read += o.bytes_read;
        self.inputs += o.inputs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(line: u64) -> Location {
        Location {
            source: "a.json".into(),
            line: Some(line),
            offset: None,
        }
    }

    #[test]
    fn merge_equals_one_shot() {
        let mut whole = Diagnostics::default();
        let mut a = Diagnostics::default();
        let mut b = Diagnostics::default();
        for i in 0..30u64 {
            let r = if i % 3 == 0 {
                SkipReason::BadIp
            } else {
                SkipReason::Malformed
            };
            whole.skip(r, loc(i), "x");
            if i % 2 == 0 { &mut a } else { &mut b }.skip(r, loc(i), "x");
        }
        b.merge(&a);
        assert_eq!(b, whole);
        assert_eq!(whole.examples[0].location.line, Some(0));
        assert_eq!(whole.examples.len(), Diagnostics::MAX_EXAMPLES);
        assert_eq!(whole.count(SkipReason::BadIp), 10);
        assert_eq!(whole.examples[0].to_string(), "a.json: line 0: bad-ip: x");
    }
}
