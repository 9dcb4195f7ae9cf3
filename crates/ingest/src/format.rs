//! Input formats, by name, and how each is recognised from its first bytes.

use std::fmt;
use std::str::FromStr;

/// The shape of an input. [`InputFormat::Auto`] sniffs the first bytes after decompression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum InputFormat {
    #[default]
    Auto,
    /// Advanced Hunting rows, one JSON object per line.
    Ndjson,
    /// Advanced Hunting rows as one JSON array, possibly pretty-printed.
    JsonArray,
    /// Event Hubs message bodies `{"records":[...]}`, one or more per line, or one pretty-printed.
    EventHubs,
    /// Azure Storage export: one envelope per line (no `records` wrapper), CRLF line ends.
    StorageExport,
    /// Advanced Hunting API response `{"Stats","Schema","Results"}`.
    AdvancedHuntingApi,
    /// Microsoft Graph `runHuntingQuery` response (`schema` / `results`).
    GraphHunting,
    /// Log Analytics query API response `{"tables":[{"columns","rows"}]}`.
    LogAnalytics,
    /// An OData collection response `{"value":[...]}` (with `@odata.context`, maybe
    /// `@odata.nextLink`): rows as a Microsoft Graph or Defender API list returns them, or a
    /// page of one saved by a script or a flow.
    ODataList,
    /// Defender portal CSV export.
    DefenderCsv,
    /// Sentinel portal CSV export (`TimeGenerated [UTC]`, US dates, maybe a BOM).
    SentinelCsv,
}

impl InputFormat {
    /// Every name [`FromStr`] accepts, in the order of the enum.
    pub const NAMES: &[&str] = &[
        "auto",
        "ndjson",
        "json-array",
        "eventhubs",
        "storage",
        "ah-api",
        "graph",
        "log-analytics",
        "odata",
        "defender-csv",
        "sentinel-csv",
    ];

    const ALL: [InputFormat; 11] = [
        InputFormat::Auto,
        InputFormat::Ndjson,
        InputFormat::JsonArray,
        InputFormat::EventHubs,
        InputFormat::StorageExport,
        InputFormat::AdvancedHuntingApi,
        InputFormat::GraphHunting,
        InputFormat::LogAnalytics,
        InputFormat::ODataList,
        InputFormat::DefenderCsv,
        InputFormat::SentinelCsv,
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Which reader handles the format, given the input's first bytes.
    pub(crate) fn reader(self, head: &[u8]) -> ReaderKind {
        match self {
            InputFormat::Auto | InputFormat::Ndjson | InputFormat::StorageExport => {
                ReaderKind::Lines
            }
            // Event Hubs captures hold one message per line, but a saved single message is
            // often pretty-printed: the layout decides.
            InputFormat::EventHubs => {
                if one_object_per_line(head) {
                    ReaderKind::Lines
                } else {
                    ReaderKind::Document
                }
            }
            InputFormat::JsonArray
            | InputFormat::AdvancedHuntingApi
            | InputFormat::GraphHunting
            | InputFormat::LogAnalytics
            | InputFormat::ODataList => ReaderKind::Document,
            InputFormat::DefenderCsv | InputFormat::SentinelCsv => ReaderKind::Csv,
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown format name; the message lists the known ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown input format {given:?} (expected one of: {})", InputFormat::NAMES.join(", "))]
pub struct UnknownFormat {
    pub given: String,
}

impl FromStr for InputFormat {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        InputFormat::ALL
            .iter()
            .copied()
            .find(|f| f.name() == t)
            .ok_or_else(|| UnknownFormat {
                given: s.to_owned(),
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReaderKind {
    /// Line-oriented JSON: split on newlines, parsed in parallel.
    Lines,
    /// One or more JSON documents, streamed.
    Document,
    Csv,
}

/// Compression recognised by magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "plain",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

pub(crate) const BOM: &[u8] = b"\xef\xbb\xbf";

/// Guesses the format from the first bytes of the (decompressed, BOM-stripped) input.
///
/// A first line that is one whole JSON object means line-oriented JSON, whose flavour the
/// line's keys tell; otherwise a leading `{` or `[` is a document whose top-level keys tell its
/// kind; anything else with a comma in its first line is CSV. Binary garbage falls through to
/// NDJSON, where each bad line is reported.
pub fn sniff(head: &[u8]) -> InputFormat {
    let (body, first_line) = split_head(head);
    match body.first() {
        Some(b'[') => InputFormat::JsonArray,
        Some(b'{') => {
            if one_object_per_line(head) {
                if contains(first_line, b"\"records\"") {
                    InputFormat::EventHubs
                } else if contains(first_line, b"\"category\"")
                    || contains(first_line, b"\"properties\"")
                {
                    InputFormat::StorageExport
                } else if let Some(f) = document_kind(first_line) {
                    f
                } else {
                    InputFormat::Ndjson
                }
            } else {
                document_kind(body).unwrap_or(InputFormat::JsonArray)
            }
        }
        _ if contains(first_line, b",") => {
            if contains(first_line, b"[UTC]") {
                InputFormat::SentinelCsv
            } else {
                InputFormat::DefenderCsv
            }
        }
        _ => InputFormat::Ndjson,
    }
}

/// The input without BOM and leading white space, and its first line trimmed.
fn split_head(head: &[u8]) -> (&[u8], &[u8]) {
    let head = head.strip_prefix(BOM).unwrap_or(head);
    let start = head
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(head.len());
    let body = &head[start..];
    let first_line = match memchr::memchr(b'\n', body) {
        Some(i) => &body[..i],
        None => body,
    };
    (body, trim_ascii(first_line))
}

/// Whether the JSON starts with a whole object on its first line (or is a single line), i.e.
/// is line-oriented rather than one pretty-printed document.
fn one_object_per_line(head: &[u8]) -> bool {
    let (body, first_line) = split_head(head);
    (first_line.len() >= 2 && first_line.starts_with(b"{") && first_line.ends_with(b"}"))
        || memchr::memchr(b'\n', body).is_none()
}

/// Kind of a JSON document from the first of its telling top-level keys.
fn document_kind(body: &[u8]) -> Option<InputFormat> {
    let keys: [(&[u8], InputFormat); 7] = [
        (b"\"Results\"", InputFormat::AdvancedHuntingApi),
        (b"\"Schema\"", InputFormat::AdvancedHuntingApi),
        (b"\"results\"", InputFormat::GraphHunting),
        (b"\"schema\"", InputFormat::GraphHunting),
        (b"\"tables\"", InputFormat::LogAnalytics),
        (b"\"records\"", InputFormat::EventHubs),
        (b"\"value\"", InputFormat::ODataList),
    ];
    keys.iter()
        .filter_map(|(k, f)| memchr::memmem::find(body, k).map(|at| (at, *f)))
        .min_by_key(|(at, _)| *at)
        .map(|(_, f)| f)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

fn trim_ascii(s: &[u8]) -> &[u8] {
    let a = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let b = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(a, |i| i + 1);
    &s[a..b.max(a)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (i, n) in InputFormat::NAMES.iter().enumerate() {
            let f: InputFormat = n.parse().unwrap();
            assert_eq!(f.name(), *n);
            assert_eq!(f as usize, i);
        }
        assert_eq!(
            "Log-Analytics".parse::<InputFormat>(),
            Ok(InputFormat::LogAnalytics)
        );
        let e = "xml".parse::<InputFormat>().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown input format \"xml\" (expected one of: auto, ndjson,")
        );
    }

    #[test]
    fn sniffs_each_shape() {
        let cases: [(&[u8], InputFormat); 16] = [
            (b"{\"Timestamp\":\"x\",\"DeviceName\":\"a\"}\n{\"a\":1}\n", InputFormat::Ndjson),
            (b"\xef\xbb\xbf  {\"Timestamp\":\"x\"}\r\n", InputFormat::Ndjson),
            (b"[\n  {\"Timestamp\": \"x\"}\n]", InputFormat::JsonArray),
            (b"{\"records\":[{\"category\":\"x\"}]}\n", InputFormat::EventHubs),
            (b"{\n  \"records\": [\n", InputFormat::EventHubs),
            (b"{\"time\":\"t\",\"category\":\"AdvancedHunting-DeviceNetworkEvents\",\"properties\":{}}\r\n", InputFormat::StorageExport),
            (b"{\"Stats\":{},\"Schema\":[],\"Results\":[]}", InputFormat::AdvancedHuntingApi),
            (b"{\n \"Stats\": {\n  \"x\": 1},\n \"Schema\": [", InputFormat::AdvancedHuntingApi),
            (b"{\n \"@odata.context\": \"x\",\n \"schema\": [", InputFormat::GraphHunting),
            (b"{\n \"tables\": [", InputFormat::LogAnalytics),
            (b"{\n \"@odata.context\": \"x\",\n \"value\": [", InputFormat::ODataList),
            (b"{\"@odata.context\":\"x\",\"value\":[{\"Timestamp\":\"t\"}]}", InputFormat::ODataList),
            (b"Timestamp,DeviceName,ActionType\r\n", InputFormat::DefenderCsv),
            (b"\xef\xbb\xbfTimeGenerated [UTC],DeviceName\n", InputFormat::SentinelCsv),
            (b"\x00\x01\x02\xff", InputFormat::Ndjson),
            (b"", InputFormat::Ndjson),
        ];
        for (head, want) in cases {
            assert_eq!(sniff(head), want, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn compression_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"{"), Compression::None);
    }

    proptest::proptest! {
        /// Any bytes give a concrete format (never `Auto`) and a reader, and the choice follows
        /// the documented contract: a BOM and leading white space do not change it; a body
        /// opening with `[` is a JSON array, one opening with `{` one of the JSON shapes, and
        /// anything else CSV exactly when its first line has a comma (else NDJSON, whose reader
        /// reports each bad line).
        #[test]
        fn sniff_is_total(
            bytes in proptest::collection::vec(proptest::prop_oneof![
                4 => proptest::num::u8::ANY,
                1 => proptest::sample::select(b"{}[],\n \"".to_vec()),
            ], 0..300),
            lead in proptest::sample::select(vec!["", " ", "\n\t ", "\r\n"]),
        ) {
            let f = sniff(&bytes);
            proptest::prop_assert_ne!(f, InputFormat::Auto);
            let _ = f.reader(&bytes);
            if !bytes.starts_with(BOM) {
                let mut with_bom = BOM.to_vec();
                with_bom.extend_from_slice(&bytes);
                proptest::prop_assert_eq!(sniff(&with_bom), f, "a BOM changed the format");
                if !bytes.first().is_some_and(|c| c.is_ascii_whitespace()) {
                    let mut led = lead.as_bytes().to_vec();
                    led.extend_from_slice(&bytes);
                    proptest::prop_assert_eq!(sniff(&led), f, "leading white space changed it");
                }
            }
            let (body, first_line) = split_head(&bytes);
            let json = matches!(
                f,
                InputFormat::Ndjson
                    | InputFormat::JsonArray
                    | InputFormat::EventHubs
                    | InputFormat::StorageExport
                    | InputFormat::AdvancedHuntingApi
                    | InputFormat::GraphHunting
                    | InputFormat::LogAnalytics
                    | InputFormat::ODataList
            );
            match body.first() {
                Some(b'[') => proptest::prop_assert_eq!(f, InputFormat::JsonArray),
                Some(b'{') => proptest::prop_assert!(json, "{:?}", f),
                _ if first_line.contains(&b',') => proptest::prop_assert!(
                    matches!(f, InputFormat::DefenderCsv | InputFormat::SentinelCsv),
                    "{:?}",
                    f
                ),
                _ => proptest::prop_assert_eq!(f, InputFormat::Ndjson),
            }
        }
    }
}
