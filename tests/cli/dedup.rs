//! Exact duplicates count once whatever the thread count and the input order: the same export
//! read by one thread and by two (with copies on both sides of where the two threads' parts
//! meet), and an export followed by a shuffled copy of itself, give the alerts and the counts of
//! the export alone.

use super::*;

/// Three hours of normal traffic on web01 and api01, then a 5-minute flood on web01 from 1,200
/// new sources: time-ordered rows, each with its own identity (ReportId).
fn export() -> Vec<String> {
    let mut rows = normal("web01.contoso.com", 9 * 3600, 180, 6, 0);
    rows.extend(normal("api01.contoso.com", 9 * 3600, 180, 4, 100_000));
    let flood = 11 * 3600 + 30 * 60;
    for i in 0..6000u64 {
        rows.push(row(
            &at(flood + i * 300 / 6000),
            "web01.contoso.com",
            "InboundConnectionAccepted",
            &format!("198.51.{}.{}", i % 1200 / 250, i % 1200 % 250 + 1),
            443,
            1_000_000 + i,
        ));
    }
    rows.sort();
    rows
}

/// A small deterministic shuffle (xorshift), so the test needs no randomness crate.
fn shuffled(rows: &[String]) -> Vec<String> {
    let mut v = rows.to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// The alerts (stdout) and the summary's `records:` line of `detect` with `extra` flags.
fn detect(path: &Path, extra: &[&str]) -> (String, String) {
    let mut args = vec!["detect", "--output", "jsonl"];
    args.extend_from_slice(extra);
    args.push(path.to_str().expect("utf-8 path"));
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let records = summary_lines(&o)
        .into_iter()
        .find(|l| l.starts_with("records:"))
        .unwrap_or_else(|| panic!("no records line in {}", stderr(&o)));
    (stdout(&o), records)
}

/// Equal alert lines, or where the first difference is.
fn same(got: &str, want: &str, what: &str) {
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        if g != w {
            let at = g.bytes().zip(w.bytes()).take_while(|(a, b)| a == b).count();
            let from = at.saturating_sub(80);
            panic!(
                "{what}: alert {i} differs at byte {at}:\n got  ...{}\n want ...{}",
                &g[from..(at + 120).min(g.len())],
                &w[from..(at + 120).min(w.len())]
            );
        }
    }
    assert_eq!(
        got.lines().count(),
        want.lines().count(),
        "{what}: alert count"
    );
}

fn write(dir: &tempfile::TempDir, name: &str, rows: &[String]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, rows.join("\n") + "\n").expect("write");
    p
}

/// Both rules, the seed rule over every bin as a schedule would run it.
const RULES: [&[&str]; 2] = [
    &[],
    &[
        "--rule",
        "seed",
        "--since",
        "2025-12-22T10:00:00Z",
        "--distinct-threshold",
        "300",
    ],
];

/// Each alert without what its bin's heavy-hitter summary chose: which of 1,200 sources of five
/// connections each it lists first (`TopSources`, and the reason naming the top source) depends
/// on the order the bin's events were summarized in and how the bin was split between threads,
/// with or without duplicates (a Space-Saving summary merges within its error bound, not to
/// the one-shot summary). Everything else must be the same.
fn counts(alerts: &str) -> Vec<serde_json::Value> {
    alerts
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let o = v.as_object_mut().expect("an alert is an object");
            assert!(o.remove("TopSources").is_some(), "{l}");
            let reasons = o["Reasons"].as_array_mut().expect("reasons");
            let before = reasons.len();
            reasons.retain(|r| !r.as_str().is_some_and(|r| r.starts_with("top source ")));
            assert!(reasons.len() + 1 >= before, "{l}");
            v
        })
        .collect()
}

/// `input` read with each rule and thread count gives the alerts of `clean` read the same way
/// (but for the heavy-hitter summary's choice among equals, when `reordered`: see [`counts`]),
/// and the same alerts but for that choice whatever the thread count; its summary's records
/// line is `records`.
fn same_as_clean(clean: &Path, input: &Path, records: &str, reordered: bool) {
    for rule in RULES {
        let mut by_threads = Vec::new();
        for threads in ["1", "2"] {
            let mut args = rule.to_vec();
            args.extend(["--threads", threads]);
            let what = format!("{threads} threads, {rule:?}");
            let (alone, _) = detect(clean, &args);
            assert!(alone.lines().count() >= 1, "the flood is flagged: {what}");
            let (alerts, got) = detect(input, &args);
            if reordered {
                assert_eq!(counts(&alerts), counts(&alone), "{what}");
            } else {
                same(&alerts, &alone, &what);
            }
            assert_eq!(got, records, "{what}");
            by_threads.push(counts(&alerts));
        }
        assert_eq!(by_threads[0], by_threads[1], "{rule:?}");
    }
}

#[test]
fn the_same_export_read_by_one_thread_and_by_two_gives_the_same_alerts_and_counts() {
    let rows = export();
    let n = rows.len();
    // Copies of the 400 rows before the middle, just after them: the two threads' parts meet
    // in the middle of the copies, so half of them are read by the other thread than their
    // originals, half by the same one.
    let mid = n / 2;
    let mut with_copies = rows[..mid].to_vec();
    with_copies.extend(rows[mid - 400..mid].iter().cloned());
    with_copies.extend(rows[mid..].iter().cloned());
    with_copies[mid..].sort();
    let dir = tempfile::tempdir().expect("tempdir");
    let clean = write(&dir, "clean.json", &rows);
    let dup = write(&dir, "dup.json", &with_copies);
    assert!(std::fs::metadata(&dup).expect("meta").len() > 4 * (64 << 10));
    let (_, alone) = detect(&clean, &[]);
    assert_eq!(alone, format!("records: {n} read, {n} used, 0 skipped"));
    same_as_clean(
        &clean,
        &dup,
        &format!(
            "records: {} read, {n} used, 0 skipped, 400 exact duplicates dropped",
            n + 400
        ),
        false,
    );
}

#[test]
fn an_export_followed_by_a_shuffled_copy_of_itself_counts_as_the_export() {
    let rows = export();
    let n = rows.len();
    let mut twice = rows.clone();
    twice.extend(shuffled(&rows));
    let dir = tempfile::tempdir().expect("tempdir");
    let clean = write(&dir, "clean.json", &rows);
    let both = write(&dir, "twice.json", &twice);
    same_as_clean(
        &clean,
        &both,
        &format!(
            "records: {} read, {n} used, 0 skipped, {n} exact duplicates dropped",
            2 * n
        ),
        true,
    );
}
