//! Managed content filtering over AF_XDP, end to end with real clients and servers: dig
//! against dnsmasq, curl against nginx (HTTP and HTTPS), through a router whose
//! customer-facing veth runs mssp's customer program and inspector (copy mode on veth).

use std::time::{Duration, Instant};

use mssp_tests::{
    agent::scrape,
    content::{ACME, ACME6, BETA, DNS6, Lab, WEB, WEB6},
    require_root,
};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// acme (7) blocks bad.test and answers NXDOMAIN; beta (8) filters nothing of its own;
/// the ISP-wide feed sinkholes malware.test for everyone.
const POLICY: &str = r#"{"version":1,
  "global":{"filtering":{"block_domains":["malware.test"],"action":"sinkhole",
    "sinkhole":{"ipv4":"198.18.0.9"}}},
  "customers":[
    {"id":7,"name":"acme","prefixes":["198.19.7.0/24","2001:db8:7::/48"],
     "filtering":{"block_domains":["bad.test"],"action":"nxdomain"}},
    {"id":8,"name":"beta","prefixes":["198.19.8.0/24"]}]}"#;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn blocked_names_are_refused_for_the_filtering_customer_and_reach_others() {
    require_root();
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::new("cf", POLICY, "");

    // Allowed names get the server's answer, over UDP and TCP.
    for tcp in [false, true] {
        let (st, ans, _) = lab.dig(ACME, "allowed.test", tcp);
        assert_eq!(
            (st.as_str(), ans.clone()),
            ("NOERROR", vec![WEB.to_string()]),
            "allowed.test tcp={tcp}"
        );
    }
    // A blocked name and a name under it: mssp's NXDOMAIN, within 10 ms (median of 5).
    for name in ["bad.test", "www.bad.test"] {
        for tcp in [false, true] {
            let mut times = Vec::new();
            for _ in 0..5 {
                let (st, ans, ms) = lab.dig(ACME, name, tcp);
                assert_eq!(st, "NXDOMAIN", "{name} tcp={tcp}");
                assert!(ans.is_empty(), "{name}: {ans:?}");
                times.push(ms);
            }
            let m = median(times.clone());
            assert!(m <= 10, "{name} tcp={tcp}: answered in {times:?} ms");
        }
    }
    // The other customer reaches bad.test normally.
    let (st, ans, _) = lab.dig(BETA, "bad.test", false);
    assert_eq!((st.as_str(), ans), ("NOERROR", vec![WEB.to_string()]));
    // The global feed's name: the sinkhole address, for both customers, UDP and TCP.
    for src in [ACME, BETA] {
        for tcp in [false, true] {
            let (st, ans, _) = lab.dig(src, "c2.malware.test", tcp);
            assert_eq!(
                (st.as_str(), ans),
                ("NOERROR", vec!["198.18.0.9".to_string()]),
                "{src} tcp={tcp}"
            );
        }
    }

    // HTTPS and HTTP: allowed completes; bad.test is reset within 1 s. The server's small
    // MSS splits every ClientHello over several segments, the name in a later one.
    for scheme in ["https", "http"] {
        let (code, body, err, _) = lab.curl(ACME, scheme, "allowed.test");
        assert_eq!(
            (code, body.as_str()),
            (0, "ok\n"),
            "{scheme}://allowed.test: {err}"
        );
        for name in ["bad.test", "www.bad.test"] {
            let (code, body, err, took) = lab.curl(ACME, scheme, name);
            assert_ne!(code, 0, "{scheme}://{name} got through: {body}");
            assert!(
                err.to_lowercase().contains("reset"),
                "{scheme}://{name}: {err}"
            );
            assert!(
                took < Duration::from_secs(1),
                "{scheme}://{name} took {took:?}"
            );
        }
        let (code, body, err, _) = lab.curl(BETA, scheme, "bad.test");
        assert_eq!(
            (code, body.as_str()),
            (0, "ok\n"),
            "beta {scheme}://bad.test: {err}"
        );
    }

    // `mssp monitor --filtering` shows decisions as they happen.
    let mut mon = std::process::Command::new(mssp_tests::mssp_bin())
        .arg("--socket")
        .arg(&lab.dirs.socket)
        .args(["monitor", "--filtering", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mssp monitor");
    std::thread::sleep(Duration::from_millis(800));
    lab.dig(ACME, "monitored.bad.test", false);
    let mut reader = std::io::BufReader::new(mon.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    let _ = mon.kill();
    let _ = mon.wait();
    let ev: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(
        (
            ev["name"].as_str(),
            ev["verdict"].as_str(),
            ev["rule"].as_str()
        ),
        (
            Some("monitored.bad.test"),
            Some("nxdomain"),
            Some("bad.test")
        ),
        "{ev}"
    );

    // What the inspector counted, per customer and action; the top blocked name.
    std::thread::sleep(Duration::from_millis(1500));
    let s = lab.json(&["filter", "stats", "--json"]);
    let acme = s["report"]["customers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == 7)
        .unwrap_or_else(|| panic!("{s}"))
        .clone();
    assert_eq!(acme["name"], "acme");
    assert_eq!(acme["nxdomain"], 21, "{acme}");
    assert_eq!(acme["reset"], 4, "{acme}");
    // Every HTTPS ClientHello named its host in a later segment than the first (the small
    // MSS): held until the name came, allowed ones then released.
    assert!(acme["held"].as_u64().unwrap() >= 3, "{acme}");
    assert_eq!(acme["unparsed"], 0, "{acme}");
    assert_eq!(acme["hold_timeout"], 0, "{acme}");
    assert_eq!(s["report"]["top_blocked"][0][0], "bad.test", "{s}");
    let socks = &lab.filtering_status()["sockets"];
    assert_eq!(socks[0][2], "copy", "{socks}");
    let metrics = scrape(&lab.rtr, lab.dirs.metrics_port);
    assert!(
        metrics.contains("mssp_filter_blocked_total{customer=\"7\",customer_name=\"acme\",action=\"nxdomain\"} 21"),
        "{}",
        metrics.lines().filter(|l| l.contains("filter")).collect::<Vec<_>>().join("\n")
    );
    assert!(metrics.contains("mssp_filter_fail_open 0"));

    // The NOC adds a name on this edge; `filter test` says which rule decides and why.
    let out = lab.cli(&["filter", "add", "--customer", "acme", "evil.test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = lab.json(&["filter", "test", "--customer", "7", "a.evil.test", "--json"]);
    assert_eq!(
        (
            t["verdict"].as_str(),
            t["rule"].as_str(),
            t["layer"].as_str()
        ),
        (Some("block"), Some("evil.test"), Some("local")),
        "{t}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.dig(ACME, "a.evil.test", false).0 != "NXDOMAIN" {
        assert!(
            Instant::now() < deadline,
            "evil.test not blocked after filter add"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = lab.json(&["filter", "test", "--customer", "beta", "bad.test", "--json"]);
    assert_eq!(t["verdict"], "allow", "{t}");
    // Bad input: named, and nothing changes.
    let out = lab.cli(&["filter", "add", "--customer", "7", "bad..name"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad..name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab.cli(&["filter", "del", "--customer", "7", "bad.test"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("central policy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same over IPv6: the customer found by its IPv6 source, DNS over UDP and TCP, TLS and
/// HTTP re-injected (or reset) as IPv6.
#[test]
fn ipv6_clients_are_filtered_alike() {
    require_root();
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::new("cf6", POLICY, "");
    for tcp in [false, true] {
        let (st, ans, _) = lab.dig_at(ACME6, DNS6, "allowed.test", "AAAA", tcp);
        assert_eq!(
            (st.as_str(), ans),
            ("NOERROR", vec![WEB6.to_string()]),
            "tcp={tcp}"
        );
        let (st, ans, _) = lab.dig_at(ACME6, DNS6, "www.bad.test", "AAAA", tcp);
        assert_eq!((st.as_str(), ans.len()), ("NXDOMAIN", 0), "tcp={tcp}");
    }
    for scheme in ["https", "http"] {
        let (code, body, err, _) = lab.curl_at(ACME6, WEB6, scheme, "allowed.test");
        assert_eq!((code, body.as_str()), (0, "ok\n"), "{scheme}: {err}");
        let (code, _, err, took) = lab.curl_at(ACME6, WEB6, scheme, "bad.test");
        assert!(
            code != 0 && err.to_lowercase().contains("reset"),
            "{scheme}: {code} {err}"
        );
        assert!(took < Duration::from_secs(1), "{scheme}: {took:?}");
    }
}

#[test]
fn a_dead_inspector_fails_open_within_a_second_and_recovers() {
    require_root();
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::new("cfo", POLICY, "[filtering]\nrestart_secs = 4\n");
    assert_eq!(lab.dig(ACME, "bad.test", false).0, "NXDOMAIN");
    let pid = lab.inspector_pid();
    // SAFETY: the inspector process of this test's agent.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed = Instant::now();
    // Within 1 s every flow passes unfiltered.
    let mut first = None;
    while killed.elapsed() < Duration::from_secs(3) {
        let (st, ans, _) = lab.dig(ACME, "bad.test", false);
        if st == "NOERROR" && ans == vec![WEB.to_string()] {
            first = Some(killed.elapsed());
            break;
        }
    }
    let first = first.expect("bad.test never passed after the inspector died");
    assert!(first < Duration::from_secs(1), "fail-open took {first:?}");
    let (code, body, err, _) = lab.curl(ACME, "https", "bad.test");
    assert_eq!((code, body.as_str()), (0, "ok\n"), "{err}");
    // The agent says so (it notices the exit within 100 ms; the bound leaves CI room).
    let mut s = lab.filtering_status();
    while s["fail_open"] != true && killed.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
        s = lab.filtering_status();
    }
    assert_eq!(
        (s["inspector_running"].as_bool(), s["fail_open"].as_bool()),
        (Some(false), Some(true)),
        "{s} (killed pid {pid} {:?} ago)\n{}",
        killed.elapsed(),
        lab.agent.log_text()
    );
    let metrics = scrape(&lab.rtr, lab.dirs.metrics_port);
    assert!(metrics.contains("mssp_filter_fail_open 1"), "{metrics}");
    let out = String::from_utf8_lossy(&lab.cli(&["status"]).stdout).into_owned();
    assert!(out.contains("FAIL-OPEN"), "{out}");
    // The agent restarts it; filtering is back.
    let s = lab.wait_inspector(Duration::from_secs(15));
    assert_eq!(s["restarts"], 1, "{s}");
    assert_ne!(lab.inspector_pid(), pid);
    assert_eq!(lab.dig(ACME, "bad.test", false).0, "NXDOMAIN");
    let (code, _, err, _) = lab.curl(ACME, "https", "bad.test");
    assert_ne!(code, 0, "{err}");

    // A stalled inspector (stopped, its sockets still open): its heartbeat goes stale and
    // XDP stops steering to it within a second, without the agent doing anything.
    let pid = lab.inspector_pid();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let stopped = Instant::now();
    let mut passed = None;
    while stopped.elapsed() < Duration::from_secs(4) {
        let (st, ans, _) = lab.dig(ACME, "bad.test", false);
        if st == "NOERROR" && ans == vec![WEB.to_string()] {
            passed = Some(stopped.elapsed());
            break;
        }
    }
    let s = lab.filtering_status();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let passed = passed.expect("a stalled inspector kept steering");
    // The heartbeat is 1 s; a query the stalled socket swallowed times out after dig's 2 s.
    assert!(
        passed < Duration::from_millis(3200),
        "fail-open took {passed:?}"
    );
    assert_eq!(s["fail_open"], true, "{s}");
    let t = Instant::now();
    while lab.dig(ACME, "bad.test", false).0 != "NXDOMAIN" {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "filtering not back after SIGCONT"
        );
    }
}

/// An Ethernet/IPv4/UDP frame from `src` to the resolver's port 53 carrying `payload`.
fn udp_frame(src: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&[198, 18, 53, 53]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn dns_query(name: &str) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// `mssp simulate --customer-side`: a capture from a customer interface, decided by the
/// policy file's lists (no kernel, no agent).
#[test]
fn simulate_says_what_content_filtering_decides_per_frame() {
    let dir = std::env::temp_dir().join(format!("mssp-simcs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("p.json");
    std::fs::write(&policy, POLICY).unwrap();
    let frames = [
        udp_frame([198, 19, 7, 10], 53, &dns_query("www.bad.test")),
        udp_frame([198, 19, 8, 10], 53, &dns_query("www.bad.test")),
        udp_frame([198, 19, 8, 10], 53, &dns_query("x.malware.test")),
        udp_frame([198, 19, 7, 10], 5000, b"hello"),
    ];
    // pcap: global header, then a record header per frame.
    let mut pcap = Vec::new();
    for w in [0xa1b2c3d4u32] {
        pcap.extend_from_slice(&w.to_le_bytes());
    }
    pcap.extend_from_slice(&2u16.to_le_bytes());
    pcap.extend_from_slice(&4u16.to_le_bytes());
    pcap.extend_from_slice(&[0; 8]);
    pcap.extend_from_slice(&65535u32.to_le_bytes());
    pcap.extend_from_slice(&1u32.to_le_bytes());
    for f in &frames {
        pcap.extend_from_slice(&[0; 8]);
        pcap.extend_from_slice(&(f.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&(f.len() as u32).to_le_bytes());
        pcap.extend_from_slice(f);
    }
    let cap = dir.join("c.pcap");
    std::fs::write(&cap, pcap).unwrap();
    let out = std::process::Command::new(mssp_tests::mssp_bin())
        .args(["simulate", "--customer-side", "--policy"])
        .arg(&policy)
        .arg("--pcap")
        .arg(&cap)
        .output()
        .expect("mssp simulate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains(
            "block  dns www.bad.test customer=7(acme) rule=bad.test (Customer list) action=nxdomain"
        ),
        "{text}"
    );
    assert!(
        lines[1].contains("allow  dns www.bad.test customer=8(beta)"),
        "{text}"
    );
    assert!(lines[2].contains("block  dns x.malware.test customer=8(beta) rule=malware.test (Global list) action=sinkhole"), "{text}");
    assert!(lines[3].contains("pass   (not inspected)"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
