//! The systemd unit: it verifies, and the agent works with exactly the capabilities the unit
//! grants (nothing more), run through setpriv the way systemd would restrict it.

use std::{path::PathBuf, process::Command, time::Duration};

use mssp_tests::{
    agent::{AgentDirs, AgentProc, mssp},
    mssp_bin,
    netns::Pair,
    require_root,
    traffic::{UdpSink, udp_send},
};

fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/mssp.service")
}

fn unit_value(key: &str) -> String {
    let text = std::fs::read_to_string(unit_path()).expect("read unit");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("unit has no {key}="))
        .trim()
        .to_string()
}

#[test]
fn unit_verifies() {
    let text = std::fs::read_to_string(unit_path()).expect("read unit");
    for needle in [
        "Type=notify",
        "ExecReload=",
        "Restart=on-failure",
        "WatchdogSec=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=mssp",
        "RuntimeDirectory=mssp",
    ] {
        assert!(text.contains(needle), "unit lacks {needle}");
    }
    // verify checks that ExecStart exists; point it at the binary under test.
    let dir = std::env::temp_dir().join(format!("mssp-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("mssp.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/mssp", &mssp_bin().display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CAP_BPF CAP_NET_ADMIN -> "+bpf,+net_admin".
fn setpriv_caps(unit_caps: &str) -> String {
    unit_caps
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

fn cap_mask(unit_caps: &str) -> u64 {
    unit_caps
        .split_whitespace()
        .map(|c| match c {
            "CAP_NET_ADMIN" => 1u64 << 12,
            "CAP_NET_RAW" => 1 << 13,
            "CAP_PERFMON" => 1 << 38,
            "CAP_BPF" => 1 << 39,
            "CAP_CHOWN" => 1 << 0,
            "CAP_SYS_ADMIN" => 1 << 21,
            other => panic!("unexpected capability {other} in the unit"),
        })
        .fold(0, |a, b| a | b)
}

#[test]
fn agent_runs_with_only_the_units_capabilities() {
    require_root();
    let caps = unit_value("CapabilityBoundingSet");
    assert_eq!(caps, unit_value("AmbientCapabilities"));
    let pair = Pair::new("cap");
    pair.address(&["198.18.66.10", "198.18.1.10"], &["198.19.7.1"]);
    let policy = r#"{"version":1,"customers":[{"id":7,"prefixes":["198.19.7.0/24"],
        "sources":[{"prefix":"198.18.66.0/24","action":"drop"}]}]}"#;
    let dirs = AgentDirs::new("cap", &[&pair.if_b], Some(policy), "");
    let set = format!("-all,{}", setpriv_caps(&caps));
    let bounding = format!("--bounding-set={set}");
    let wrapper = [
        "setpriv",
        bounding.as_str(),
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ];
    let agent = AgentProc::start(&pair.b, &dirs, &[], &wrapper);

    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        eff,
        cap_mask(&caps),
        "the agent holds other capabilities than the unit's: {eff:#x}"
    );

    let sink = UdpSink::start(&pair.b, "198.19.7.1:5001".parse().unwrap());
    for src in ["198.18.66.10:7000", "198.18.1.10:7000"] {
        udp_send(
            &pair.a,
            src.parse().unwrap(),
            "198.19.7.1:5001".parse().unwrap(),
            20,
            Duration::from_micros(300),
        );
    }
    let got = sink.finish(Duration::from_millis(200));
    assert_eq!(got.get(&"198.18.66.10".parse().unwrap()), None);
    assert_eq!(got.get(&"198.18.1.10".parse().unwrap()), Some(&20));
    // And the CLI path works against the restricted agent.
    let out = mssp(
        &dirs.socket,
        &["block", "add", "198.18.1.0/24", "--customer", "7"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(agent);
}

/// The agent speaks sd_notify as `Type=notify` expects: READY=1 once attached with the policy
/// in force, WATCHDOG=1 at half the watchdog interval, RELOADING=1/READY=1 on SIGHUP,
/// STOPPING=1 on SIGTERM.
#[test]
fn agent_notifies_systemd() {
    require_root();
    let pair = Pair::new("ntf");
    pair.address(&["198.18.1.10"], &["198.19.7.1"]);
    let dirs = AgentDirs::new("ntf", &[&pair.if_b], Some(r#"{"version":1}"#), "");
    let sock_path = dirs.root.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let env = [
        ("NOTIFY_SOCKET", sock_path.display().to_string()),
        ("WATCHDOG_USEC", "400000".to_string()),
    ];
    // systemd also sets WATCHDOG_PID to the service's pid; a shell that execs the agent has
    // that pid already.
    let wrapper = ["sh", "-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""];
    let mut agent = AgentProc::spawn_env(&pair.b, &dirs, &[], &wrapper, &env);
    let mut seen = Vec::new();
    let mut next = |what: &str| -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {what} from the agent: {e}; seen {seen:?}"));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.contains(what) {
                return msg;
            }
        }
    };
    let ready = next("READY=1");
    assert!(ready.contains("STATUS=filtering"), "{ready}");
    // It is really filtering when it says so.
    let (_, progs) = mssp_tests::agent::xdp_attachments(&pair.b, &pair.if_b);
    assert_eq!(progs.len(), 1);
    next("WATCHDOG=1");
    next("WATCHDOG=1");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
    next("RELOADING=1");
    next("READY=1");
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    next("STOPPING=1");
    assert!(agent.wait_exit(Duration::from_secs(20)).success());
}
