//! The smaller defects a NOC meets day to day, each reproduced (see each test's comment):
//! unpin while running, a missing interface, a pin_dir not on bpffs, an absurd version, entries
//! that expired while the agent was down, a closed pipe, the socket's permissions, `--json`
//! errors, and the hint after `block del`.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mssp_tests::{
    agent::{AgentDirs, AgentProc, mssp, mssp_json, xdp_attachments},
    mssp_bin,
    netns::{Pair, sh},
    pki::Pki,
    push::{client_config, https},
    require_root,
};

const POLICY: &str = r#"{"version":1,
  "customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
    "sources":[{"prefix":"198.18.66.0/24","action":"drop"}]}]}"#;

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Regression: `mssp unpin` while an agent ran said "filtering has stopped" but it went on.
#[test]
fn unpin_while_an_agent_runs_is_refused_and_tells_the_truth() {
    require_root();
    let pair = Pair::new("up");
    let dirs = AgentDirs::new("up", &[&pair.if_b], Some(POLICY), "");
    let agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let pins = dirs.pin_dir();
    let pins = pins.to_str().unwrap();
    let out = mssp(&dirs.socket, &["unpin", "--pin-dir", pins]);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", agent.child.id())) && err.contains("--force"),
        "{err}"
    );
    assert!(dirs.pin_dir().join("links").exists(), "nothing was removed");
    let text = ok(mssp(&dirs.socket, &["unpin", "--pin-dir", pins, "--force"]));
    assert!(text.contains("keeps filtering until it stops"), "{text}");
    assert!(!text.contains("filtering has stopped"), "{text}");
}

/// Regression: a missing interface left ~200 MiB of pins behind and exited 1 (restarted by
/// systemd every 2 s). The agent starts degraded, says which interface is missing, and
/// attaches it when it appears.
#[test]
fn a_missing_interface_degrades_and_is_attached_when_it_appears() {
    require_root();
    let pair = Pair::new("mi");
    let late = format!("{}z", pair.if_b);
    let dirs = AgentDirs::new("mi", &[&pair.if_b, &late], Some(POLICY), "");
    let _agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let s = mssp_json(&dirs.socket, &["status", "--json"]);
    assert_eq!(s["missing_interfaces"], serde_json::json!([late]), "{s}");
    assert_eq!(s["enforced"], false, "{s}");
    assert!(s["drift"].to_string().contains(&late), "{s}");
    assert_eq!(
        s["interfaces"].as_array().unwrap().len(),
        1,
        "the other one is filtered"
    );
    // It appears.
    let peer = format!("{}y", pair.if_b);
    sh(&[
        "ip",
        "link",
        "add",
        &late,
        "netns",
        &pair.b.name,
        "type",
        "veth",
        "peer",
        "name",
        &peer,
        "netns",
        &pair.a.name,
    ]);
    pair.b.sh(&["ip", "link", "set", &late, "up"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = mssp_json(&dirs.socket, &["status", "--json"]);
        if s["enforced"] == true {
            assert_eq!(s["interfaces"].as_array().unwrap().len(), 2, "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "not attached: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (mode, progs) = xdp_attachments(&pair.b, &late);
    assert_eq!((mode.as_deref(), progs.len()), (Some("native"), 1));
}

/// Regression: a pin_dir not on a bpffs was accepted (a bpffs mounted in the agent's private
/// mount namespace), and the filter disappeared when the agent stopped.
#[test]
fn a_pin_dir_not_on_bpffs_is_refused_in_a_private_mount_namespace() {
    require_root();
    let pair = Pair::new("nb");
    let dirs = AgentDirs::new("nb", &[&pair.if_b], Some(POLICY), "");
    let plain = dirs.root.join("not-bpffs");
    let cfg = std::fs::read_to_string(&dirs.config).unwrap().replace(
        &format!("pin_dir = {:?}", dirs.pin_dir().display().to_string()),
        &format!("pin_dir = {:?}", plain.display().to_string()),
    );
    std::fs::write(&dirs.config, cfg).unwrap();
    // `ip netns exec` gives the agent a mount namespace of its own, as systemd's sandbox does.
    let mut agent = AgentProc::spawn(&pair.b, &dirs, &[], &[]);
    let status = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(64), "{}", agent.log_text());
    assert!(
        agent.log_text().contains("not on a bpffs"),
        "{}",
        agent.log_text()
    );
    let (mode, _) = xdp_attachments(&pair.b, &pair.if_b);
    assert!(mode.is_none(), "nothing was attached");
}

/// Regression: a push of version 2^64 - 1 blocked every future push. Absurd versions are
/// refused unless forced, and `mssp policy reset-version` undoes one that got in.
#[test]
fn absurd_versions_are_refused_and_can_be_reset() {
    require_root();
    let pair = Pair::new("av");
    let work = std::env::temp_dir().join(format!("mssp-av-{}", std::process::id()));
    let pki = Pki::new(&work.join("pki"));
    let port = 19_700 + (std::process::id() % 200) as u16;
    let dirs = AgentDirs::new(
        "av",
        &[&pair.if_b],
        Some(POLICY),
        &pki.agent_config(port, ""),
    );
    let _agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let cfg = client_config(&pki.edge_ca, Some(&pki.controller));
    let put = |version: u64, query: &str| {
        let (cfg, path) = (cfg.clone(), format!("/v1/policy{query}"));
        let body = POLICY.replace("\"version\":1", &format!("\"version\":{version}"));
        pair.b
            .run(move || {
                https(
                    cfg,
                    port,
                    "PUT",
                    &path,
                    body.as_bytes(),
                    Duration::from_secs(30),
                )
            })
            .expect("push")
    };
    let (status, v) = put(u64::MAX, "");
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("2^63"), "{v}");
    let (status, v) = put(u64::MAX, "?force_version=true");
    assert_eq!(status, 200, "forced: {v}");
    let (status, _) = put(3, "");
    assert_eq!(status, 409, "nothing is above 2^64 - 1");
    let out = mssp(&dirs.socket, &["policy", "reset-version", "--to", "2"]);
    assert_eq!(out.status.code(), Some(64), "needs --yes");
    ok(mssp(
        &dirs.socket,
        &["policy", "reset-version", "--to", "2", "--yes"],
    ));
    let (status, v) = put(3, "");
    assert_eq!(status, 200, "after the reset: {v}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Regression: local entries that expired while the agent was down stayed listed.
#[test]
fn entries_that_expired_while_the_agent_was_down_are_gone() {
    require_root();
    let pair = Pair::new("ex");
    let dirs = AgentDirs::new("ex", &[&pair.if_b], Some(POLICY), "");
    let mut agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    ok(mssp(
        &dirs.socket,
        &[
            "block",
            "add",
            "198.18.5.0/24",
            "--customer",
            "7",
            "--ttl",
            "2s",
        ],
    ));
    ok(mssp(
        &dirs.socket,
        &["block", "add", "198.18.6.0/24", "--customer", "7"],
    ));
    agent.stop();
    std::thread::sleep(Duration::from_secs(3));
    let _agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let list = mssp_json(
        &dirs.socket,
        &["block", "list", "--customer", "7", "--json"],
    );
    let text = list.to_string();
    assert!(!text.contains("198.18.5.0/24"), "{text}");
    assert!(text.contains("198.18.6.0/24"), "{text}");
}

/// Regressions: the CLI panicked on a closed pipe (`mssp status | head -1`); permission denied
/// on the socket was reported as "no agent answers"; `--json` errors were plain text; the hint
/// after a refused `block del` was not runnable as printed.
#[test]
fn cli_output_pipes_permissions_and_json_errors() {
    require_root();
    let pair = Pair::new("cl");
    // Enough entries that the listing overflows a pipe's buffer (64 KiB).
    let global: Vec<String> = (0..2000u32)
        .map(|i| {
            format!(
                r#"{{"prefix":"198.18.{}.{}/32","action":"drop"}}"#,
                100 + i / 250,
                i % 250
            )
        })
        .collect();
    let policy = POLICY.replace(
        r#""customers""#,
        &format!(
            r#""global":{{"sources":[{}]}},"customers""#,
            global.join(",")
        ),
    );
    let dirs = AgentDirs::new("cl", &[&pair.if_b], Some(&policy), "");
    let _agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    // A closed pipe: the CLI ends quietly, no panic.
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --socket {} block list | head -1; echo \"status=${{PIPESTATUS:-?}}\"",
            mssp_bin().display(),
            dirs.socket.display()
        ))
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&child.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    // A user outside group mssp: told so, exit 77.
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(mssp_bin())
        .arg("--socket")
        .arg(&dirs.socket)
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        err.contains("group mssp") && !err.contains("no mssp agent answers"),
        "{err}"
    );
    // --json errors are JSON, with the exit code.
    let out = mssp(
        &dirs.socket,
        &[
            "block",
            "add",
            "198.18.66.1/24",
            "--customer",
            "7",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(65));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("did you mean 198.18.66.0/24"),
        "{v}"
    );
    assert_eq!(v["exit"], 65);
    let out = mssp(&dirs.root.join("nowhere.sock"), &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert_eq!(v["exit"], 69, "{v}");
    // The hint after deleting a central entry is a command that runs as printed.
    let out = mssp(
        &dirs.socket,
        &["block", "del", "198.18.66.0/24", "--customer", "7"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let hint = err.split('`').nth(1).expect("a command in backquotes");
    let mut args: Vec<&str> = hint.split_whitespace().collect();
    assert_eq!(args.remove(0), "mssp", "{hint}");
    ok(mssp(&dirs.socket, &args));
    let list = mssp_json(
        &dirs.socket,
        &["block", "list", "--customer", "7", "--json"],
    );
    assert!(list.to_string().contains(r#""action":"allow""#), "{list}");
}
