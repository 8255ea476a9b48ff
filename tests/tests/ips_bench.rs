//! The IPS's timing over many floods, for `cargo xtask bench` (ignored in `cargo xtask
//! test`): per run, a spoofed UDP flood from source port 123 at 150 kpps (trafgen, one CPU)
//! against one customer address; detection time (flood start → the attack's `detected_at`)
//! and time to 95% dropped (flood start → the first moment after which every 100 ms of
//! delivered flood, counted by nft where it would be delivered, is ≤ 5% of what the data
//! path saw). Writes target/bench/detection.json and prints p50/p95.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use mssp_tests::{
    edge::Edge,
    nft::Counters,
    require_root,
    trafgen::{Kind, Sources},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

const TARGET: &str = "198.19.7.9";
const FLOOD_PPS: u64 = 150_000;
const FLOOD_SECS: f64 = 5.0;

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[((p * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)]
}

/// The first sample time after which every interval with flood offered delivered ≤ 5%.
fn time_to_95(series: &[(f64, u64, u64)]) -> Option<f64> {
    let mut answer = None;
    for w in series.windows(2).rev() {
        let (offered, delivered) = (w[1].2 - w[0].2, w[1].1 - w[0].1);
        if offered == 0 {
            continue;
        }
        if delivered as f64 > 0.05 * offered as f64 {
            break;
        }
        answer = Some(w[0].0);
    }
    answer
}

#[test]
#[ignore = "a benchmark: cargo xtask bench runs it"]
fn detection_timing_over_many_floods() {
    require_root();
    let runs: usize = std::env::var("MSSP_BENCH_DETECTION_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let policy = r#"{"version":1,"infrastructure":["198.19.250.0/24"],
        "customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
          "detection":{"mode":"mitigate","thresholds":{"pps":20000,"udp_pps":10000},"hold":2}}]}"#;
    let edge = Edge::new("ipsb", policy, &["198.18.200.1"], &[TARGET], "");
    let nft = Counters::new(
        &edge.pair.b,
        &edge.pair.if_b,
        &[("flood", "udp sport 123 ip daddr 198.19.7.9")],
    );
    let (mut detected, mut dropped95) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let before = edge.attacks().len();
        let wall0 = OffsetDateTime::now_utc();
        let t0 = Instant::now();
        let f = edge.flood(
            Kind::Udp {
                sport: 123,
                dport: 9,
                len: 500,
            },
            &Sources::Spoofed,
            TARGET.parse::<Ipv4Addr>().unwrap(),
            FLOOD_PPS,
        );
        let mut series = Vec::new();
        while t0.elapsed().as_secs_f64() < FLOOD_SECS {
            let (d, o) = (nft.get("flood"), edge.seen(7));
            series.push((t0.elapsed().as_secs_f64(), d, o));
            std::thread::sleep(Duration::from_millis(100));
        }
        f.stop();
        let attacks = edge.attacks();
        let a = attacks.iter().find(|a| {
            a["state"] == "active"
                || OffsetDateTime::parse(a["detected_at"].as_str().unwrap_or(""), &Rfc3339)
                    .is_ok_and(|t| t > wall0)
        });
        let det = a
            .and_then(|a| OffsetDateTime::parse(a["detected_at"].as_str()?, &Rfc3339).ok())
            .map(|t| (t - wall0).as_seconds_f64());
        let t95 = time_to_95(&series);
        println!(
            "run {run:2}: detected {} s, 95% dropped from {} s (attacks before {before})",
            det.map_or("-".into(), |v| format!("{v:.2}")),
            t95.map_or("-".into(), |v| format!("{v:.2}"))
        );
        detected.extend(det);
        dropped95.extend(t95);
        // The attack ends (hold 2 s) before the next run.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && edge.attacks().iter().any(|a| a["state"] == "active") {
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let report = serde_json::json!({
        "runs": runs,
        "flood_pps": FLOOD_PPS,
        "detected": detected.len(),
        "mitigated_95": dropped95.len(),
        "detection_s": {"p50": percentile(&detected, 0.5), "p95": percentile(&detected, 0.95), "max": percentile(&detected, 1.0)},
        "to_95_dropped_s": {"p50": percentile(&dropped95, 0.5), "p95": percentile(&dropped95, 0.95), "max": percentile(&dropped95, 1.0)},
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/detection.json");
    let _ = std::fs::create_dir_all(out.parent().unwrap());
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap())
        .expect("write detection.json");
    assert_eq!(detected.len(), runs, "every flood detected");
    assert_eq!(dropped95.len(), runs, "every flood mitigated to 95%");
}
