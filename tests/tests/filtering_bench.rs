//! Content filtering's benchmark (`cargo xtask bench --only filtering`; not in CI): the
//! steered path's throughput through the inspector (copy mode, veth), and the latency it
//! adds to allowed DNS queries and TLS handshakes, against a customer whose traffic is not
//! steered, in the same run. Figures go to target/bench/filtering.json.

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use mssp_tests::{
    content::{ACME, BETA, DNS, Lab},
    netns::Netns,
    require_root,
    trafgen::Trafgen,
};

const POLICY: &str = r#"{"version":1,
  "customers":[
    {"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
     "filtering":{"block_domains":["bad.test"],"action":"nxdomain"}},
    {"id":8,"name":"beta","prefixes":["198.19.8.0/24"]},
    {"id":9,"name":"sink","prefixes":["198.19.9.0/24"],
     "filtering":{"block_domains":["bad.test"],"action":"drop"}}]}"#;

fn query(name: &str, id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// RTTs (µs) of `n` allowed queries from each source, interleaved.
fn dns_rtts(ns: &Netns, n: usize) -> (Vec<f64>, Vec<f64>) {
    ns.run(move || {
        let dst: SocketAddr = format!("{DNS}:53").parse().unwrap();
        let socks: Vec<UdpSocket> = [ACME, BETA]
            .iter()
            .map(|s| {
                let u = UdpSocket::bind(format!("{s}:0")).expect("bind");
                u.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                u
            })
            .collect();
        let mut out = (Vec::new(), Vec::new());
        let mut buf = [0u8; 512];
        for i in 0..n + 50 {
            for (k, s) in socks.iter().enumerate() {
                let q = query("allowed.test", i as u16);
                let t = Instant::now();
                s.send_to(&q, dst).expect("send");
                if s.recv_from(&mut buf).is_ok() && i >= 50 {
                    let us = t.elapsed().as_secs_f64() * 1e6;
                    if k == 0 {
                        out.0.push(us)
                    } else {
                        out.1.push(us)
                    }
                }
            }
        }
        out
    })
}

/// TLS handshake times (µs, connect to appconnect) of `n` curls from each source.
fn tls_times(lab: &Lab, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut out = (Vec::new(), Vec::new());
    for _ in 0..n {
        for (k, src) in [ACME, BETA].iter().enumerate() {
            let o = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &lab.cus.name,
                    "curl",
                    "-sk",
                    "-o",
                    "/dev/null",
                    "-m",
                    "3",
                    "--interface",
                    src,
                ])
                .args([
                    "--resolve",
                    "allowed.test:443:198.18.80.80",
                    "-w",
                    "%{time_connect} %{time_appconnect}",
                    "https://allowed.test/",
                ])
                .output()
                .expect("curl");
            let s = String::from_utf8_lossy(&o.stdout);
            let v: Vec<f64> = s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() == 2 && v[1] > 0.0 {
                let us = (v[1] - v[0]) * 1e6;
                if k == 0 {
                    out.0.push(us)
                } else {
                    out.1.push(us)
                }
            }
        }
    }
    out
}

fn trafgen_dns(dst_mac: &str, src_mac: &str) -> String {
    let hex = |m: &str| {
        m.split(':')
            .map(|b| format!("0x{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let dns = query("bad.test", 0);
    let body: Vec<String> = dns[2..].iter().map(|b| format!("0x{b:02x}")).collect();
    format!(
        "{{ {}, {}, c16(0x0800),\n 0x45, 0x00, c16({}), drnd(2), c16(0), 64, 17, csumip(14, 33),\n 198, 19, 9, drnd(), 198, 18, 53, 53,\n drnd(2), c16(53), c16({}), csumudp(14, 34),\n drnd(2), {} }}\n",
        hex(dst_mac),
        hex(src_mac),
        20 + 8 + dns.len(),
        8 + dns.len(),
        body.join(", ")
    )
}

fn report(lab: &Lab) -> (u64, u64, u64) {
    let v = lab.json(&["filter", "stats", "--json"]);
    (
        v["report"]["totals"]["inspected"].as_u64().unwrap_or(0),
        v["report"]["updated_unix_ms"].as_u64().unwrap_or(0),
        v["inspector"]["kernel"]["steered"].as_u64().unwrap_or(0),
    )
}

#[test]
#[ignore]
fn filtering_bench() {
    require_root();
    let lab = Lab::with_mss("cfb", POLICY, "", false);
    let (mut a, mut b) = dns_rtts(&lab.cus, 2000);
    let dns = serde_json::json!({
        "queries": a.len(),
        "steered_p50_us": pct(&mut a, 0.5), "steered_p99_us": pct(&mut a, 0.99),
        "unsteered_p50_us": pct(&mut b, 0.5), "unsteered_p99_us": pct(&mut b, 0.99),
        "added_p50_us": pct(&mut a, 0.5) - pct(&mut b, 0.5),
        "added_p99_us": pct(&mut a, 0.99) - pct(&mut b, 0.99),
    });
    println!("allowed DNS: {dns}");
    let (mut a, mut b) = tls_times(&lab, 40);
    let tls = serde_json::json!({
        "handshakes": a.len(),
        "steered_p50_us": pct(&mut a, 0.5), "steered_p99_us": pct(&mut a, 0.99),
        "unsteered_p50_us": pct(&mut b, 0.5), "unsteered_p99_us": pct(&mut b, 0.99),
        "added_p50_us": pct(&mut a, 0.5) - pct(&mut b, 0.5),
        "added_p99_us": pct(&mut a, 0.99) - pct(&mut b, 0.99),
    });
    println!("allowed TLS handshakes: {tls}");

    // Throughput: queries for a blocked name (action drop) as fast as one trafgen CPU
    // sends them, every one steered and parsed; the inspector on the other CPU.
    let rc_mac = lab
        .rtr
        .sh(&["cat", &format!("/sys/class/net/{}/address", lab.if_rtr)]);
    let cc_mac = lab
        .cus
        .sh(&["cat", &format!("/sys/class/net/{}/address", lab.if_cus)]);
    let cfg = trafgen_dns(rc_mac.trim(), cc_mac.trim());
    let tx = |l: &Lab| -> u64 {
        l.cus
            .sh(&[
                "cat",
                &format!("/sys/class/net/{}/statistics/tx_packets", l.if_cus),
            ])
            .trim()
            .parse()
            .unwrap()
    };
    let g = Trafgen::start(&lab.cus, &lab.if_cus, &cfg, 2_000_000);
    std::thread::sleep(Duration::from_secs(3));
    let (i0, t0, s0) = report(&lab);
    let tx0 = tx(&lab);
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let (i1, t1, s1) = report(&lab);
    let tx1 = tx(&lab);
    let wall = w0.elapsed().as_secs_f64();
    g.stop();
    let secs = (t1.saturating_sub(t0)) as f64 / 1000.0;
    let thr = serde_json::json!({
        "offered_pps": (tx1 - tx0) as f64 / wall,
        "steered_pps": (s1 - s0) as f64 / wall,
        "inspected_pps": (i1 - i0) as f64 / secs.max(0.001),
        "mode": lab.filtering_status()["sockets"][0][2],
    });
    println!("steered DNS queries through the inspector: {thr}");

    // A million names for one customer: the policy file re-read (`mssp reload`: parse,
    // validate, publish, write the table), then the inspector's reload, then a query for
    // a name in the middle of the list.
    let names: Vec<String> = (0..1_000_000)
        .map(|i| format!("\"n{i}.feed.test\""))
        .collect();
    let big = POLICY.replace(r#""version":1"#, r#""version":2"#).replace(
        r#"["bad.test"],"action":"nxdomain""#,
        &format!(r#"["bad.test",{}],"action":"nxdomain""#, names.join(",")),
    );
    std::fs::write(lab.dirs.root.join("policy.json"), &big).expect("policy file");
    let gen0 = lab.json(&["filter", "stats", "--json"])["report"]["generation"]
        .as_u64()
        .unwrap_or(0);
    let t = Instant::now();
    let out = lab.cli(&["reload", "--config", lab.dirs.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reload_s = t.elapsed().as_secs_f64();
    let in_force_s = loop {
        let g = lab.json(&["filter", "stats", "--json"])["report"]["generation"]
            .as_u64()
            .unwrap_or(0);
        if g != gen0 {
            break t.elapsed().as_secs_f64();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the inspector never loaded the 1M-name table"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (st, _, ms) = lab.dig(ACME, "www.n500000.feed.test", false);
    assert_eq!(st, "NXDOMAIN");
    let rss_kib = |pid: i64| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    let million = serde_json::json!({
        "names": 1_000_001,
        "policy_bytes": big.len(),
        "reload_s": reload_s,
        "inspector_in_force_s": in_force_s,
        "query_ms": ms,
        "inspector_rss_mib": rss_kib(lab.filtering_status()["inspector_pid"].as_i64().unwrap_or(0)) as f64 / 1024.0,
    });
    println!("a million names: {million}");
    let out =
        serde_json::json!({"dns": dns, "tls": tls, "throughput": thr, "million_names": million});
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(
        dir.join("filtering.json"),
        serde_json::to_string_pretty(&out).unwrap(),
    )
    .unwrap();
}
