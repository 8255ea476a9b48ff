//! `mssp agent` end to end, as a process in a namespace with real traffic: CLI blocks, SIGKILL,
//! restart (adoption, link swap, counters), delete, TTL, corrupt state, CLI errors, metrics,
//! incompatible pins.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mssp_tests::{
    agent::{AgentDirs, AgentProc, mssp, mssp_json, scrape, xdp_attachments},
    netns::Pair,
    require_root,
    traffic::{UdpSink, udp_send},
};

const POLICY: &str = r#"{"version":1,
  "customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
    "sources":[{"prefix":"198.18.66.0/24","action":"drop","comment":"central block"}]}]}"#;

const DST: &str = "198.19.7.1:5001";
const BLOCKED: &str = "198.18.66.10";
const ALLOWED: &str = "198.18.1.10";
const NOC: &str = "198.18.9.10";

fn topology(tag: &str) -> Pair {
    let pair = Pair::new(tag);
    pair.address(&[BLOCKED, ALLOWED, NOC], &["198.19.7.1"]);
    pair
}

/// Sends `n` datagrams from `src` and returns how many arrived.
fn probe(pair: &Pair, src: &str, n: u64) -> u64 {
    let sink = UdpSink::start(&pair.b, DST.parse().unwrap());
    udp_send(
        &pair.a,
        format!("{src}:7100").parse().unwrap(),
        DST.parse().unwrap(),
        n,
        Duration::from_micros(300),
    );
    let got = sink.finish(Duration::from_millis(200));
    got.get(&src.parse().unwrap()).copied().unwrap_or(0)
}

fn dropped(socket: &std::path::Path, customer: u32, reason: &str) -> u64 {
    let v = mssp_json(
        socket,
        &["stats", "--customer", &customer.to_string(), "--json"],
    );
    v["customers"][0]["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "drop" && c["reason"] == reason)
        .map(|c| c["packets"].as_u64().unwrap())
        .sum()
}

#[track_caller]
fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn block_kill_restart_delete_ttl() {
    require_root();
    let pair = topology("ag");
    let dirs = AgentDirs::new("ag", &[&pair.if_b], Some(POLICY), "");
    let mut agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let sock = dirs.socket.clone();

    assert_eq!(probe(&pair, NOC, 20), 20, "before any block");
    assert_eq!(probe(&pair, BLOCKED, 20), 0, "central block");

    // Block: enforced by the time the CLI returns, well within 1 s.
    let t = Instant::now();
    ok(mssp(
        &sock,
        &[
            "block",
            "add",
            "198.18.9.0/24",
            "--customer",
            "7",
            "--comment",
            "ticket 77",
        ],
    ));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "block add took {took:?}");
    assert_eq!(probe(&pair, NOC, 20), 0, "blocked by the NOC");
    let before_kill = dropped(&sock, 7, "customer_block");
    assert!(before_kill >= 40, "{before_kill}");

    // SIGKILL: the filter keeps running with its last policy.
    agent.kill9();
    let (mode, progs) = xdp_attachments(&pair.b, &pair.if_b);
    assert_eq!(
        (mode.as_deref(), progs.len()),
        (Some("native"), 1),
        "after SIGKILL"
    );
    assert_eq!(probe(&pair, NOC, 20), 0, "still blocked with no agent");
    assert_eq!(
        probe(&pair, ALLOWED, 20),
        20,
        "allowed traffic flows with no agent"
    );

    // Restart while traffic flows: the new program is swapped in under the same link, so no
    // blocked packet passes and no allowed packet is lost.
    let old_prog = progs[0];
    let stop = Arc::new(AtomicBool::new(false));
    let sink = UdpSink::start(&pair.b, DST.parse().unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let (s2, n2) = (stop.clone(), sent.clone());
    let sender = pair.a.spawn(move || {
        let blocked = std::net::UdpSocket::bind(format!("{BLOCKED}:7200")).unwrap();
        let allowed = std::net::UdpSocket::bind(format!("{ALLOWED}:7200")).unwrap();
        let dst: SocketAddr = DST.parse().unwrap();
        while !s2.load(Ordering::Relaxed) {
            blocked.send_to(b"x", dst).unwrap();
            allowed.send_to(b"y", dst).unwrap();
            n2.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let got = sink.finish(Duration::from_millis(300));
    let sent = sent.load(Ordering::Relaxed);
    assert_eq!(
        got.get(&BLOCKED.parse().unwrap()),
        None,
        "a blocked packet passed during the restart"
    );
    assert_eq!(
        got.get(&ALLOWED.parse().unwrap()).copied(),
        Some(sent),
        "allowed packets lost during the restart"
    );

    let (_, progs) = xdp_attachments(&pair.b, &pair.if_b);
    assert_eq!(progs.len(), 1, "exactly one XDP attachment after restart");
    assert_ne!(progs[0], old_prog, "the new program runs under the link");
    let status = mssp_json(&sock, &["status", "--json"]);
    assert_eq!(status["interfaces"][0]["adopted"], true, "{status}");
    let links = std::fs::read_dir(dirs.pin_dir().join("links"))
        .unwrap()
        .count();
    assert_eq!(links, 1);

    // The block survived; counters continued from where they were.
    let list = mssp_json(&sock, &["block", "list", "--customer", "7", "--json"]);
    let local: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["layer"] == "local")
        .collect();
    assert_eq!(local.len(), 1, "{list}");
    assert_eq!(local[0]["prefix"], "198.18.9.0/24");
    assert_eq!(local[0]["comment"], "ticket 77");
    let after_restart = dropped(&sock, 7, "customer_block");
    assert!(
        after_restart >= before_kill + 20,
        "counters restarted: {before_kill} -> {after_restart}"
    );
    assert_eq!(probe(&pair, NOC, 10), 0);
    assert_eq!(dropped(&sock, 7, "customer_block"), after_restart + 10);
    assert!(
        local[0]["hits_packets"].as_u64().unwrap() >= 40,
        "entry hits continued: {}",
        local[0]
    );

    // Delete: passes again.
    ok(mssp(
        &sock,
        &["block", "del", "198.18.9.0/24", "--customer", "7"],
    ));
    assert_eq!(probe(&pair, NOC, 20), 20, "after delete");

    // TTL: enforced until it expires, not a second longer — under a flood from another
    // source that keeps both CPUs busy.
    let flood_stop = Arc::new(AtomicBool::new(false));
    let fs = flood_stop.clone();
    let flood = pair.a.spawn(move || {
        let s = std::net::UdpSocket::bind(format!("{ALLOWED}:7300")).unwrap();
        let dst: SocketAddr = "198.19.7.1:9".parse().unwrap();
        let mut n = 0u64;
        while !fs.load(Ordering::Relaxed) {
            let _ = s.send_to(&[0u8; 64], dst);
            n += 1;
        }
        n
    });
    ok(mssp(
        &sock,
        &[
            "block",
            "add",
            "198.18.9.0/24",
            "--customer",
            "7",
            "--ttl",
            "2s",
        ],
    ));
    let added = Instant::now();
    assert_eq!(probe(&pair, NOC, 10), 0, "TTL entry enforced");
    std::thread::sleep(Duration::from_secs(2).saturating_sub(added.elapsed()));
    let mut passed_after = None;
    while added.elapsed() < Duration::from_secs(6) {
        if probe(&pair, NOC, 5) == 5 {
            passed_after = Some(added.elapsed());
            break;
        }
    }
    flood_stop.store(true, Ordering::Relaxed);
    let flooded = flood.join().unwrap();
    assert!(
        flooded > 10_000,
        "the flood was too small to be load: {flooded}"
    );
    let passed_after = passed_after.expect("TTL entry never expired");
    assert!(
        passed_after <= Duration::from_secs(3),
        "expired entry enforced until {passed_after:?} (TTL 2 s)"
    );
    // The agent also drops it from the local layer.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = mssp_json(&sock, &["block", "list", "--customer", "7", "--json"]);
        if !list
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["layer"] == "local")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired entry still listed: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Metrics.
    let m = scrape(&pair.b, dirs.metrics_port);
    for needle in [
        "mssp_packets_total{customer=\"7\",verdict=\"drop\",reason=\"customer_block\"}",
        "mssp_packets_total{customer=\"7\",verdict=\"pass\",reason=\"default\"}",
        "mssp_entry_hit_packets_total{list=\"7\",prefix=\"198.18.66.0/24\",layer=\"central\"}",
        "mssp_map_entries{map=\"NODES4\"}",
        "mssp_map_capacity{map=\"ENTRY_HITS\"} 2097152",
        "mssp_policy_version{layer=\"central\"} 1",
        "mssp_last_apply_timestamp_seconds",
        "mssp_last_apply_duration_seconds",
        &format!(
            "mssp_interface_attached{{interface=\"{}\",mode=\"native\"}} 1",
            pair.if_b
        ),
    ] {
        assert!(m.contains(needle), "metrics lack {needle}:\n{m}");
    }
    let status = agent.stop();
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        agent.log_text()
    );
    assert_eq!(
        probe(&pair, BLOCKED, 10),
        0,
        "a stopped agent leaves the filter"
    );
}

#[test]
fn corrupt_state_stops_the_agent_and_the_filter_keeps_filtering() {
    require_root();
    let pair = topology("cs");
    let dirs = AgentDirs::new("cs", &[&pair.if_b], Some(POLICY), "");
    let mut agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    ok(mssp(
        &dirs.socket,
        &["block", "add", "198.18.9.0/24", "--customer", "7"],
    ));
    agent.stop();
    for (file, garbage) in [
        ("local.json", "{\"entries\": [tru"),
        ("central.json", "not json"),
        ("ids.log", "{\"slot\":[7,1]}\nbroken\n"),
    ] {
        let path = dirs.state.join(file);
        let saved = std::fs::read(&path).unwrap();
        std::fs::write(&path, garbage).unwrap();
        let mut a = AgentProc::spawn(&pair.b, &dirs, &[], &[]);
        let status = a.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(65), "{file}: {}", a.log_text());
        assert!(
            a.log_text().contains(file),
            "message does not name {file}: {}",
            a.log_text()
        );
        assert_eq!(
            probe(&pair, NOC, 10),
            0,
            "{file}: the filter stopped filtering"
        );
        assert_eq!(probe(&pair, ALLOWED, 10), 10);
        std::fs::write(&path, saved).unwrap();
    }
    let _a = AgentProc::start(&pair.b, &dirs, &[], &[]);
    assert_eq!(probe(&pair, NOC, 10), 0);
}

#[test]
fn cli_input_errors_name_the_bad_value() {
    require_root();
    let pair = topology("ce");
    let dirs = AgentDirs::new("ce", &[&pair.if_b], Some(POLICY), "");
    let _agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let s = &dirs.socket;
    for (args, code, needle) in [
        (
            vec!["block", "add", "198.18.66.0/33", "--customer", "7"],
            65,
            "\"198.18.66.0/33\"",
        ),
        (
            vec!["block", "add", "198.18.66.1/24", "--customer", "7"],
            65,
            "did you mean 198.18.66.0/24",
        ),
        (
            vec!["block", "add", "not-an-ip", "--global"],
            65,
            "\"not-an-ip\"",
        ),
        (
            vec!["block", "add", "198.18.5.0/24", "--customer", "99"],
            65,
            "unknown customer id 99",
        ),
        (
            vec![
                "block",
                "add",
                "198.18.5.0/24",
                "--customer",
                "7",
                "--ttl",
                "10x",
            ],
            65,
            "ttl \"10x\"",
        ),
        (
            vec!["block", "del", "198.18.66.0/24", "--customer", "7"],
            65,
            "comes from the central policy",
        ),
        (
            vec!["block", "del", "198.18.5.0/24", "--global"],
            65,
            "no local entry 198.18.5.0/24",
        ),
        (
            vec!["stats", "--customer", "42"],
            65,
            "unknown customer id 42",
        ),
        (
            vec![
                "block",
                "add",
                "198.18.5.0/24",
                "--customer",
                "7",
                "--global",
            ],
            2,
            "cannot be used with",
        ),
        (
            vec![
                "block",
                "add",
                "198.18.5.0/24",
                "--customer",
                "7",
                "--action",
                "reject",
            ],
            2,
            "reject",
        ),
    ] {
        let out = mssp(s, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let missing = dirs.root.join("nobody.sock");
    let out = mssp(&missing, &["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    // The socket is 0660.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn pins_of_another_abi_are_left_alone_until_replaced() {
    require_root();
    let pair = topology("ab");
    let dirs = AgentDirs::new("ab", &[&pair.if_b], Some(POLICY), "");
    std::fs::create_dir_all(dirs.pin_dir().join("v999")).unwrap();
    let mut a = AgentProc::spawn(&pair.b, &dirs, &[], &[]);
    let status = a.wait_exit(Duration::from_secs(20));
    let log = a.log_text();
    assert_eq!(status.code(), Some(75), "{log}");
    assert!(
        log.contains("v999") && log.contains("--replace-pins"),
        "{log}"
    );
    assert!(
        dirs.pin_dir().join("v999").exists(),
        "the foreign pins were touched"
    );
    let _a = AgentProc::start(&pair.b, &dirs, &["--replace-pins"], &[]);
    assert!(!dirs.pin_dir().join("v999").exists());
    assert_eq!(probe(&pair, BLOCKED, 10), 0);
}

#[test]
fn local_rules_via_the_cli() {
    require_root();
    let pair = topology("ru");
    let policy = r#"{"version":1,"customers":[{"id":7,"prefixes":["198.19.7.0/24"],
        "rules":[{"id":1,"match":{"protocol":"udp","dst_ports":["9"]},"action":"drop"}]}]}"#;
    let dirs = AgentDirs::new("ru", &[&pair.if_b], Some(policy), "");
    let _agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let s = &dirs.socket;
    assert_eq!(probe(&pair, ALLOWED, 20), 20);
    ok(mssp(
        s,
        &[
            "rule",
            "add",
            "--customer",
            "7",
            "--rule",
            r#"{"id":100,"match":{"protocol":"udp","dst_ports":["5001"],"sources":["198.18.1.0/24"]},"action":"drop","comment":"noc"}"#,
        ],
    ));
    assert_eq!(probe(&pair, ALLOWED, 20), 0, "the local rule drops");
    assert_eq!(probe(&pair, NOC, 20), 20, "other sources pass");
    let list = mssp_json(s, &["rule", "list", "--customer", "7", "--json"]);
    let rules = list.as_array().unwrap();
    assert_eq!(rules.len(), 2, "{list}");
    assert_eq!(
        (
            rules[0]["id"].as_u64(),
            rules[0]["layer"].as_str(),
            rules[0]["order"].as_u64()
        ),
        (Some(100), Some("local"), Some(1))
    );
    assert_eq!(rules[0]["packets"], 20);
    assert_eq!(rules[1]["layer"], "central");
    let m = scrape(&pair.b, dirs.metrics_port);
    assert!(
        m.contains("mssp_rule_packets_total{customer=\"7\",rule=\"100\",layer=\"local\"} 20"),
        "{m}"
    );
    for (args, needle) in [
        (
            vec![
                "rule",
                "add",
                "--customer",
                "7",
                "--rule",
                r#"{"id":5,"match":{"dst_ports":["70000"]},"action":"drop"}"#,
            ],
            "port 70000 is over 65535",
        ),
        (
            vec![
                "rule",
                "add",
                "--customer",
                "7",
                "--rule",
                r#"{"id":5,"match":{"destinations":["198.19.8.0/24"]},"action":"drop"}"#,
            ],
            "outside the customer's prefixes",
        ),
        (
            vec![
                "rule",
                "add",
                "--customer",
                "7",
                "--rule",
                r#"{"id":5,"match":{},"action":{"rate_limit":{"pps":0}}}"#,
            ],
            "a pps of 0",
        ),
        (
            vec![
                "rule",
                "add",
                "--customer",
                "7",
                "--rule",
                r#"{"id":5,"match":{"tcp_flags":{"set":["sin"]}},"action":"drop"}"#,
            ],
            "unknown TCP flag \"sin\"",
        ),
        (
            vec![
                "rule",
                "add",
                "--customer",
                "7",
                "--rule",
                r#"{"id":5,"match":{"protocol":"tcpp"},"action":"drop"}"#,
            ],
            "unknown protocol \"tcpp\"",
        ),
        (
            vec![
                "rule",
                "add",
                "--customer",
                "9",
                "--rule",
                r#"{"id":5,"action":"drop"}"#,
            ],
            "unknown customer id 9",
        ),
        (
            vec!["rule", "del", "--customer", "7", "--id", "1"],
            "comes from the central policy",
        ),
    ] {
        let out = mssp(s, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    ok(mssp(s, &["rule", "del", "--customer", "7", "--id", "100"]));
    assert_eq!(probe(&pair, ALLOWED, 20), 20, "after rule del");
}
