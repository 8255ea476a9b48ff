//! Resource exhaustion by unauthenticated clients. Regression: idle connections to the
//! metrics port and the Unix socket were never timed out or bounded (10,000 held: `accept:
//! Too many open files`, then the push API stopped and the CLI hung); the push API's 32
//! slots were taken before the TLS handshake, so plain TCP connections locked the controller
//! out; and parallel large pushes were all read into memory at once.

use std::{
    io::Read,
    net::TcpStream,
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

use mssp_tests::{
    agent::{AgentDirs, AgentProc, mssp, scrape},
    netns::Pair,
    pki::Pki,
    push::{client_config, https},
    require_root,
};

const POLICY: &str = r#"{"version":1,"customers":[{"id":7,"prefixes":["198.19.7.0/24"]}]}"#;

fn raise_nofile(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

#[test]
fn idle_connections_cannot_lock_anyone_out() {
    require_root();
    raise_nofile(20_000);
    let pair = Pair::new("ex");
    let work = std::env::temp_dir().join(format!("mssp-exh-{}", std::process::id()));
    let pki = Pki::new(&work.join("pki"));
    let port = 19_300 + (std::process::id() % 200) as u16;
    let dirs = AgentDirs::new(
        "exh",
        &[&pair.if_b],
        Some(POLICY),
        &pki.agent_config(port, ""),
    );
    let agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let pid = agent.child.id();
    let (metrics, sock) = (dirs.metrics_port, dirs.socket.clone());
    // 3,000 idle connections each to the metrics port, the socket and the push port.
    let held = pair.b.run(move || {
        let mut tcp = Vec::new();
        let mut unix = Vec::new();
        for _ in 0..3000 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", metrics)) {
                tcp.push(s);
            }
            if let Ok(s) = UnixStream::connect(&sock) {
                unix.push(s);
            }
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                tcp.push(s);
            }
        }
        (tcp, unix)
    });
    assert!(
        held.0.len() + held.1.len() > 5000,
        "the clients could open their connections"
    );
    std::thread::sleep(Duration::from_millis(500));
    let open = fds(pid);
    assert!(
        open < 1200,
        "the agent holds {open} descriptors for 9,000 idle connections"
    );
    // Everyone else still gets in, at once.
    let t = Instant::now();
    let out = mssp(&dirs.socket, &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = scrape(&pair.b, metrics);
    assert!(m.contains("mssp_map_entries"), "{m}");
    let cfg = client_config(&pki.edge_ca, Some(&pki.controller));
    let body = POLICY.replace("\"version\":1", "\"version\":2");
    let (status, v) = pair
        .b
        .run(move || {
            https(
                cfg,
                port,
                "PUT",
                "/v1/policy",
                body.as_bytes(),
                Duration::from_secs(30),
            )
        })
        .expect("the controller gets a connection");
    assert_eq!(status, 200, "{v}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    // Idle connections the agent kept are cut after the header timeout (10 s).
    let mut idle = held.1.into_iter().last().unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 1];
    let t = Instant::now();
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed");
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "idle for {:?}",
        t.elapsed()
    );
    drop(held.0);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn parallel_large_pushes_are_read_one_at_a_time() {
    require_root();
    let pair = Pair::new("lp");
    let work = std::env::temp_dir().join(format!("mssp-lp-{}", std::process::id()));
    let pki = Pki::new(&work.join("pki"));
    let port = 19_550 + (std::process::id() % 200) as u16;
    let dirs = AgentDirs::new(
        "lp",
        &[&pair.if_b],
        Some(POLICY),
        &pki.agent_config(port, ""),
    );
    let agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let before = peak_rss_mib(agent.child.id());
    // Ten 40 MB documents (a long comment), sent at once.
    let comment = "x".repeat(40 << 20);
    let senders: Vec<_> = (0..10u64)
        .map(|i| {
            let cfg = client_config(&pki.edge_ca, Some(&pki.controller));
            let body = format!(
                r#"{{"version":{},"customers":[{{"id":7,"prefixes":["198.19.7.0/24"],"sources":[{{"prefix":"198.18.0.0/24","action":"drop","comment":"{comment}"}}]}}]}}"#,
                10 + i
            );
            pair.b.spawn(move || {
                https(cfg, port, "PUT", "/v1/policy", body.as_bytes(), Duration::from_secs(120))
                    .map(|(s, _)| s)
            })
        })
        .collect();
    let statuses: Vec<u16> = senders
        .into_iter()
        .map(|h| h.join().unwrap().expect("push answered"))
        .collect();
    assert!(statuses.contains(&200), "{statuses:?}");
    let grew = peak_rss_mib(agent.child.id()) - before;
    eprintln!("10 parallel 40 MB pushes: peak RSS grew {grew:.0} MiB; statuses {statuses:?}");
    assert!(
        grew < 400.0,
        "the agent's peak memory grew {grew:.0} MiB: bodies were read at once"
    );
    let _ = std::fs::remove_dir_all(&work);
}
