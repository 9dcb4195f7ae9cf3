//! The HTML report: one self-contained file (styles, chart library, page code and data all
//! inline) that opens offline, zooms, and prints.
//!
//! The data goes in as one JSON document, columnar (one array per measure per device), which
//! the page parses once and hands to uPlot as it is: a report of a large export stays a few
//! hundred kilobytes and opens fast. The page code ([`REPORT_JS`]) and the chart code it shares
//! with the live dashboard ([`CHARTS_JS`]) are plain scripts with no framework.

use std::io::{self, Write};

use serde::Serialize;

/// uPlot (MIT), vendored from npm; see `assets/uplot/LICENSE` and `tools/browser/package.json`.
pub const UPLOT_JS: &str = include_str!("../../assets/uplot/uPlot.iife.min.js");
pub const UPLOT_CSS: &str = include_str!("../../assets/uplot/uPlot.min.css");
pub const UPLOT_LICENSE: &str = include_str!("../../assets/uplot/LICENSE");
/// The charts the report and the dashboard both draw (a device's vector against its band,
/// sources, alert and suppressed bins marked).
pub const CHARTS_JS: &str = include_str!("charts.js");
/// Styles shared by the report and the dashboard (light and dark).
pub const BASE_CSS: &str = include_str!("base.css");
const REPORT_JS: &str = include_str!("report.js");
const TEMPLATE: &str = include_str!("template.html");

/// Everything the report shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub title: String,
    /// When the report was written (RFC 3339), as the caller's clock says.
    pub generated: String,
    pub summary: Summary,
    pub incidents: Vec<IncidentView>,
    /// Bin width in seconds.
    pub width_secs: i64,
    /// Devices charted in full, in the order shown.
    pub devices: Vec<DeviceChart>,
    /// Devices not charted (quiet ones, past the limit): one line each.
    pub others: Vec<DeviceLine>,
}

/// What was read and how it was judged.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Input path and the format it was read as.
    pub inputs: Vec<(String, String)>,
    pub records_read: u64,
    pub events_used: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Skipped records by reason.
    pub skipped: Vec<(String, u64)>,
    /// The first skipped records, with where they were.
    pub skip_examples: Vec<String>,
    pub bytes_read: u64,
    pub devices: usize,
    /// First and last event (RFC 3339).
    pub first_event: Option<String>,
    pub last_event: Option<String>,
    /// Settings as `name = value`.
    pub settings: Vec<(String, String)>,
}

/// One incident row.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IncidentView {
    pub id: String,
    pub devices: Vec<String>,
    pub vector: String,
    pub confidence: String,
    pub severity: String,
    /// Unix seconds; `end` is `None` while it goes on at the end of the input.
    pub start: i64,
    pub end: Option<i64>,
    pub peak_time: i64,
    pub peak_device: String,
    pub peak_requests: u64,
    pub alert_bins: usize,
    /// `ip (connections)`.
    pub top_sources: Vec<(String, u64)>,
    pub reasons: Vec<String>,
    pub suppressed: bool,
    pub suppression_reason: Option<String>,
    /// The campaign it belongs to (`None` when suppressed).
    pub campaign: Option<String>,
    /// Its pulses as (start, end, peak connections per bin), Unix seconds: one for a single
    /// run of alert bins, one per wave of a pulse flood.
    pub pulses: Vec<(i64, i64, u64)>,
}

/// One device's series, columnar: index `i` is the bin starting at `t0 + i * step` seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeviceChart {
    pub name: String,
    pub t0: i64,
    /// Seconds between points: the bin width, or a multiple of it when downsampled.
    pub step: i64,
    /// Bins per point (1 unless downsampled; then each point is the largest of its bins).
    pub per_point: u32,
    /// Connections per vector group: web, syn, udp, icmp (a group with no traffic at all is
    /// empty, not zeros).
    pub counts: [Vec<u32>; 4],
    /// Baseline median and spread per group (`None`: no baseline yet).
    pub median: [Vec<Option<f32>>; 4],
    pub spread: [Vec<Option<f32>>; 4],
    pub distinct: Vec<u32>,
    pub new_sources: Vec<Option<u32>>,
    /// Alert bins: point index, vector, severity.
    pub alerts: Vec<(usize, String, String)>,
    /// Suppressed alert bins: point index, reason.
    pub suppressed: Vec<(usize, String)>,
    pub total: u64,
}

/// A device not charted.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeviceLine {
    pub name: String,
    pub total: u64,
    pub bins: usize,
    pub alerts: usize,
}

/// Writes `report` as one HTML document.
pub fn write_html(w: &mut impl Write, report: &Report) -> io::Result<()> {
    let data = serde_json::to_string(report).map_err(io::Error::other)?;
    write_page(w, &report.title, &data)
}

/// The template with its holes filled in, in order: every hole is a comment-looking marker
/// that cannot occur in the inserted text's own place.
fn write_page(w: &mut impl Write, title: &str, data: &str) -> io::Result<()> {
    let mut rest = TEMPLATE;
    for (marker, fill) in [
        ("{{TITLE}}", Fill::Html(title)),
        ("{{UPLOT_CSS}}", Fill::Raw(UPLOT_CSS)),
        ("{{BASE_CSS}}", Fill::Raw(BASE_CSS)),
        ("{{DATA}}", Fill::Script(data)),
        ("{{UPLOT_JS}}", Fill::Raw(UPLOT_JS)),
        ("{{CHARTS_JS}}", Fill::Raw(CHARTS_JS)),
        ("{{REPORT_JS}}", Fill::Raw(REPORT_JS)),
    ] {
        let Some(at) = rest.find(marker) else {
            return Err(io::Error::other(format!(
                "report template has no {marker} (a build defect)"
            )));
        };
        w.write_all(&rest.as_bytes()[..at])?;
        match fill {
            Fill::Raw(s) => w.write_all(s.as_bytes())?,
            Fill::Html(s) => w.write_all(escape_html(s).as_bytes())?,
            Fill::Script(s) => write_script_json(w, s)?,
        }
        rest = &rest[at + marker.len()..];
    }
    w.write_all(rest.as_bytes())
}

enum Fill<'a> {
    Raw(&'a str),
    Html(&'a str),
    Script(&'a str),
}

pub fn escape_html(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// JSON inside `<script type="application/json">`: a device named `</script>` must not end
/// the element, so every `<` is written as its JSON escape (the parsed value is unchanged).
fn write_script_json(w: &mut impl Write, json: &str) -> io::Result<()> {
    let mut last = 0;
    for (i, _) in json.match_indices('<') {
        w.write_all(&json.as_bytes()[last..i])?;
        w.write_all(b"\\u003c")?;
        last = i + 1;
    }
    w.write_all(&json.as_bytes()[last..])
}

/// Downsamples one series by taking the largest of each `k` values (peaks stay visible).
pub fn max_every<T: Copy + PartialOrd>(v: &[T], k: usize) -> Vec<T> {
    v.chunks(k.max(1))
        .filter_map(|c| {
            c.iter().copied().fold(None, |m: Option<T>, x| match m {
                Some(m) if m >= x => Some(m),
                _ => Some(x),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(r: &Report) -> String {
        let mut out = Vec::new();
        write_html(&mut out, r).expect("writes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn the_page_holds_every_asset_and_no_external_reference() {
        let html = page(&Report::default());
        assert!(html.contains("uPlot"), "chart library inline");
        assert!(html.contains(CHARTS_JS.lines().next().unwrap_or("")));
        for marker in ["{{", "src=\"http", "href=\"http", "<link", "<script src"] {
            assert!(!html.contains(marker), "page contains {marker:?}");
        }
    }

    #[test]
    fn a_device_name_cannot_close_the_data_script() {
        let r = Report {
            title: "a <b> & 'c'".into(),
            devices: vec![DeviceChart {
                name: "</script><script>alert(1)</script>".into(),
                ..DeviceChart::default()
            }],
            ..Report::default()
        };
        let html = page(&r);
        assert!(!html.contains("</script><script>alert(1)"));
        assert!(html.contains("\\u003c/script>\\u003cscript>alert(1)\\u003c/script>"));
        assert!(html.contains("<title>a &lt;b&gt; &amp; &#39;c&#39;</title>"));
        // The data still parses to the same name.
        let start = html.find("id=\"fw-data\">").expect("data script") + "id=\"fw-data\">".len();
        let end = start + html[start..].find("</script>").expect("end of data");
        let v: serde_json::Value = serde_json::from_str(&html[start..end]).expect("json");
        assert_eq!(
            v["devices"][0]["name"],
            "</script><script>alert(1)</script>"
        );
    }

    #[test]
    fn max_every_keeps_peaks() {
        assert_eq!(max_every(&[1, 5, 2, 0, 0, 9, 3], 3), vec![5, 9, 3]);
        assert_eq!(
            max_every(&[None, Some(2.0), Some(1.0)], 2),
            vec![Some(2.0), Some(1.0)]
        );
        assert_eq!(max_every::<u32>(&[], 4), Vec::<u32>::new());
    }
}
