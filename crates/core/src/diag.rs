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

/// Counts by name, bounded: the [`NameCounts::MAX_NAMES`] names that sort first are kept with
/// their exact counts, every other occurrence is lumped into `rest`. Keeping the smallest names
/// (rather than the first seen) makes merging equal to counting in one go, whatever the split:
/// a name pushed out once can never come back, so a name that is kept was never dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameCounts {
    pub names: BTreeMap<String, u64>,
    /// Occurrences of names not kept.
    pub rest: u64,
}

impl NameCounts {
    pub const MAX_NAMES: usize = 32;
    /// Longest name kept as is (a longer one is cut, so garbage cannot grow the counts).
    pub const MAX_NAME_CHARS: usize = 64;

    pub fn add(&mut self, name: &str, n: u64) {
        if n == 0 {
            return;
        }
        let name: String = name.chars().take(Self::MAX_NAME_CHARS).collect();
        if let Some(c) = self.names.get_mut(&name) {
            *c += n;
            return;
        }
        if self.names.len() >= Self::MAX_NAMES
            && self.names.last_key_value().is_some_and(|(k, _)| *k < name)
        {
            self.rest += n;
            return;
        }
        self.names.insert(name, n);
        self.trim();
    }

    fn trim(&mut self) {
        while self.names.len() > Self::MAX_NAMES {
            if let Some((_, c)) = self.names.pop_last() {
                self.rest += c;
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.names.values().sum::<u64>() + self.rest
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.rest == 0
    }

    pub fn merge(&mut self, o: &NameCounts) {
        for (k, n) in &o.names {
            *self.names.entry(k.clone()).or_insert(0) += n;
        }
        self.rest += o.rest;
        self.trim();
    }
}

impl fmt::Display for NameCounts {
    /// `Foo 12, Bar 3, and 7 of other names`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, n) in &self.names {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{k} {n}")?;
        }
        if self.rest > 0 {
            if !first {
                f.write_str(", and ")?;
            }
            write!(f, "{} of other names", self.rest)?;
        }
        Ok(())
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
    /// Records used whose `ActionType` floodwatch does not know, by name. They are read (the
    /// list of Defender's action types is open) but count towards no traffic class, so a run
    /// must say it met them: a new name may be a signal floodwatch is blind to.
    #[serde(default)]
    pub unknown_actions: NameCounts,
    /// Records found wrapped by a shipper or harness (`{"body": {...}}`) and read from inside
    /// the wrapper, by the path of keys that held them (`body`, `input.message`).
    #[serde(default)]
    pub wrapped: NameCounts,
    /// Warnings about an input as a whole (a forced `--input-format` that does not match the
    /// content), with where; the first [`Diagnostics::MAX_EXAMPLES`] kept, all counted.
    #[serde(default)]
    pub warnings: Vec<SkipExample>,
    #[serde(default)]
    pub warnings_total: u64,
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
        self.unknown_actions.merge(&o.unknown_actions);
        self.wrapped.merge(&o.wrapped);
        self.warnings.extend(o.warnings.iter().cloned());
        self.warnings.sort();
        self.warnings.truncate(Self::MAX_EXAMPLES);
        self.warnings_total += o.warnings_total;
    }

    /// Records a warning about an input (kept as an example with the reason it would be
    /// skipped for, e.g. `wrong-type` for a forced format that does not fit).
    pub fn warn(&mut self, reason: SkipReason, location: Location, message: impl Into<String>) {
        self.warnings_total += 1;
        self.warnings.push(SkipExample {
            location,
            reason,
            message: message.into(),
        });
        self.warnings.sort();
        self.warnings.truncate(Self::MAX_EXAMPLES);
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

    #[test]
    fn name_counts_are_bounded_and_exact_for_the_names_kept() {
        let mut c = NameCounts::default();
        for i in 0..100u64 {
            c.add(&format!("Action{:03}", i % 40), 1 + i % 3);
        }
        assert_eq!(c.names.len(), NameCounts::MAX_NAMES);
        assert_eq!(c.total(), (0..100u64).map(|i| 1 + i % 3).sum::<u64>());
        // Action000 occurs at i = 0, 40, 80: weights 1 + 0, 1 + 1, 1 + 2.
        assert_eq!(c.names["Action000"], 6);
        assert!(
            !c.names.contains_key("Action039"),
            "the names sorting last are lumped"
        );
        let long = "x".repeat(1000);
        c.add(&long, 1);
        assert!(
            c.names
                .keys()
                .all(|k| k.chars().count() <= NameCounts::MAX_NAME_CHARS)
        );
        let mut small = NameCounts::default();
        small.add("B", 2);
        small.add("A", 1);
        assert_eq!(small.to_string(), "A 1, B 2");
    }

    proptest::proptest! {
        /// Any split of the same names, counted apart and merged, equals counting in one go.
        #[test]
        fn name_counts_merge_equals_one_shot(
            names in proptest::collection::vec((0u8..60, proptest::bool::ANY), 0..300),
        ) {
            let mut whole = NameCounts::default();
            let mut a = NameCounts::default();
            let mut b = NameCounts::default();
            for (n, side) in &names {
                let name = format!("N{n}");
                whole.add(&name, 1);
                if *side { &mut a } else { &mut b }.add(&name, 1);
            }
            b.merge(&a);
            proptest::prop_assert_eq!(b, whole);
        }
    }
}
