//! The allow-list end to end: a load test from hundreds of allow-listed addresses is reported
//! suppressed, with the reason; the same surge without the allow-list is an attack.

use super::*;

/// Two hours of normal traffic on api01, then a 5-minute surge from `sources` addresses of
/// 10.250.0.0/16 (five connections each, new to the device), then normal traffic again.
fn load_test(sources: u64) -> String {
    let mut rows = normal("api01.contoso.com", 9 * 3600, 120, 4, 0);
    let surge = 11 * 3600;
    let mut rid = 1_000_000;
    for i in 0..sources {
        let ip = format!("10.250.{}.{}", i / 250, i % 250 + 1);
        for k in 0..5 {
            rows.push(row(
                &at(surge + (i * 5 + k) % 300),
                "api01.contoso.com",
                "InboundConnectionAccepted",
                &ip,
                443,
                rid,
            ));
            rid += 1;
        }
    }
    rows.extend(normal("api01.contoso.com", surge, 15, 4, 2_000_000));
    rows.sort();
    rows.join("\n") + "\n"
}

fn detect(path: &Path, extra: &[&str]) -> (Output, Vec<serde_json::Value>) {
    let mut args = vec!["detect", "--output", "jsonl"];
    args.extend_from_slice(extra);
    args.push(path.to_str().expect("p"));
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let alerts = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    (o, alerts)
}

#[test]
fn a_load_test_from_300_allow_listed_addresses_is_suppressed_with_its_reason() {
    let (_d, p) = temp_file("loadtest.json", &load_test(300));
    let (o, alerts) = detect(&p, &["--allow-source", "10.250.0.0/16"]);
    let surge: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| a["TimeGenerated"] == "2025-12-22T11:00:00Z")
        .collect();
    assert_eq!(surge.len(), 1, "{alerts:?}\n{}", stderr(&o));
    let a = surge[0];
    assert_eq!(a["Suppressed"], true, "{a}");
    assert_eq!(a["Vector"], "https-flood", "{a}");
    assert_eq!(a["RequestCount"], 1500 + 20, "{a}");
    assert_eq!(
        a["SuppressionReason"],
        "load test from allow-listed sources: 1,500 of 1,520 inbound connections (99%) came from allow-listed sources, >= 50% of the excess",
        "{a}"
    );
    assert_eq!(a["Severity"], "Informational", "{a}");
    assert!(
        alerts.iter().all(|a| a["Suppressed"] == true),
        "nothing else is raised: {alerts:?}"
    );

    // Without the allow-list the same surge is an attack from 300 new sources.
    let (_, alerts) = detect(&p, &[]);
    let surge: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| a["TimeGenerated"] == "2025-12-22T11:00:00Z")
        .collect();
    assert_eq!(surge.len(), 1, "{alerts:?}");
    assert_eq!(surge[0]["Suppressed"], false, "{}", surge[0]);
    assert_eq!(surge[0]["Vector"], "https-flood");
    assert!(surge[0]["SuppressionReason"].is_null());
    assert_eq!(surge[0]["RequestCount"], 1520);
    assert_ne!(surge[0]["Severity"], "Informational");
    let reasons = surge[0]["Reasons"].as_array().expect("reasons");
    assert!(
        reasons.iter().any(|r| r
            .as_str()
            .is_some_and(|r| r.contains("100% of the excess from new or hot sources"))),
        "{reasons:?}"
    );
    // The allow-list covers only its network: a surge from elsewhere is not a load test.
    let (_, alerts) = detect(&p, &["--allow-source", "10.251.0.0/16"]);
    let at11: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| a["TimeGenerated"] == "2025-12-22T11:00:00Z")
        .collect();
    assert_eq!(at11.len(), 1);
    assert_eq!(at11[0]["Suppressed"], false, "{}", at11[0]);
}
