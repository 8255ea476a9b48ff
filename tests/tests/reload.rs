//! Reloading the agent (`systemctl reload`, SIGHUP): it reads and checks everything first,
//! then applies wholly or changes nothing, and says which.

use std::time::{Duration, Instant};

use mssp_tests::{
    agent::{AgentDirs, AgentProc, mssp_json, xdp_attachments},
    netns::{Pair, sh},
    require_root,
};

const POLICY: &str = r#"{"version":1,
  "customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
    "sources":[{"prefix":"198.18.66.0/24","action":"drop"}]}]}"#;

/// Waits until the agent's log has `n` lines containing `needle`.
fn wait_log(agent: &AgentProc, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = agent.log_text();
        if log.matches(needle).count() >= n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Regression: a reload re-attached interfaces before it read the policy file, then
/// reported "reload failed, nothing changed" with the new interface filtered.
#[test]
fn a_reload_that_cannot_apply_changes_nothing() {
    require_root();
    let pair = Pair::new("rl");
    // A second interface on the router side, for the reload to add.
    let extra = format!("{}x", pair.if_b);
    let peer = format!("{}y", pair.if_b);
    sh(&[
        "ip",
        "link",
        "add",
        &extra,
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
    pair.b.sh(&["ip", "link", "set", &extra, "up"]);
    pair.a.sh(&["ip", "link", "set", &peer, "up"]);
    let dirs = AgentDirs::new("rl", &[&pair.if_b], Some(POLICY), "");
    let agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let config = std::fs::read_to_string(&dirs.config).unwrap();
    let policy_file = dirs.root.join("policy.json");

    // The new config adds an interface, and its policy file is broken.
    std::fs::write(
        &dirs.config,
        config.replace(
            &format!("interfaces = [{:?}]", pair.if_b),
            &format!("interfaces = [{:?}, {extra:?}]", pair.if_b),
        ),
    )
    .unwrap();
    std::fs::write(
        &policy_file,
        r#"{"version":2,"customers":[{"id":7,"prefixes":["198.19.7.1/24"]}]}"#,
    )
    .unwrap();
    agent.hup();
    let log = wait_log(&agent, "reload failed", 1);
    assert!(log.contains("nothing changed"), "{log}");
    assert!(log.contains("host bits"), "the reason is named:\n{log}");
    let (mode, progs) = xdp_attachments(&pair.b, &extra);
    assert!(
        mode.is_none() && progs.is_empty(),
        "the failed reload attached {extra} anyway ({mode:?}, {progs:?})"
    );
    let s = mssp_json(&dirs.socket, &["status", "--json"]);
    assert_eq!(s["interfaces"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["central"]["version"], 1, "{s}");

    // Fixed: the same reload applies wholly.
    std::fs::write(
        &policy_file,
        POLICY.replace("\"version\":1", "\"version\":2"),
    )
    .unwrap();
    agent.hup();
    let log = wait_log(&agent, "reload: ", 1);
    assert!(log.contains("interfaces updated"), "{log}");
    let (mode, progs) = xdp_attachments(&pair.b, &extra);
    assert_eq!((mode.as_deref(), progs.len()), (Some("native"), 1), "{log}");
    let s = mssp_json(&dirs.socket, &["status", "--json"]);
    assert_eq!(s["interfaces"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["central"]["version"], 2, "{s}");
}
