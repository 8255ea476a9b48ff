//! What the NOC asks for, end to end: explain through the live policy (every layer), names
//! as well as ids, the audit trail, bulk and atomic local edits, diff and dry runs, and a
//! reload that answers with its result.

use std::{io::Write, process::Stdio, time::Duration};

use mssp_tests::{
    agent::{AgentDirs, AgentProc, mssp, mssp_json},
    mssp_bin,
    netns::Pair,
    pki::Pki,
    push::{client_config, https},
    require_root,
};

const POLICY: &str = r#"{"version":1,
  "customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
    "sources":[{"prefix":"198.18.66.0/24","action":"drop","comment":"central"}]},
    {"id":8,"name":"globex","prefixes":["198.19.8.0/24"]}]}"#;

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Regression: `simulate` ignored the local layer and answered wrongly for locally
/// rate-limited traffic. `explain` and `simulate --live` run the real program over the live
/// maps, every layer.
#[test]
fn explain_runs_the_live_policy_with_every_layer() {
    require_root();
    let pair = Pair::new("xp");
    let dirs = AgentDirs::new("xp", &[&pair.if_b], Some(POLICY), "");
    let _agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let explain = |args: &[&str]| {
        let mut a = vec!["explain", "--json"];
        a.extend_from_slice(args);
        mssp_json(&dirs.socket, &a)
    };
    let e = explain(&["--src", "198.18.66.1", "--dst", "198.19.7.9"]);
    assert_eq!(
        (e["action"].as_str(), e["reason"].as_str()),
        (Some("drop"), Some("customer_block")),
        "{e}"
    );
    assert_eq!(
        (e["customer"].as_u64(), e["customer_name"].as_str()),
        (Some(7), Some("acme")),
        "{e}"
    );
    assert_eq!(
        (e["entry"].as_str(), e["layer"].as_str()),
        (Some("198.18.66.0/24"), Some("central")),
        "{e}"
    );
    // Local edits are what the live program sees: a local allow, a local rule.
    ok(mssp(
        &dirs.socket,
        &[
            "block",
            "add",
            "198.18.66.128/25",
            "--customer",
            "acme",
            "--action",
            "allow",
        ],
    ));
    let e = explain(&["--src", "198.18.66.200", "--dst", "198.19.7.9"]);
    assert_eq!(
        (e["reason"].as_str(), e["layer"].as_str()),
        (Some("allowlisted"), Some("local")),
        "{e}"
    );
    ok(mssp(
        &dirs.socket,
        &[
            "rule",
            "add",
            "--customer",
            "acme",
            "--rule",
            r#"{"id":100,"match":{"protocol":"udp","dst_ports":["11211"]},"action":"drop"}"#,
        ],
    ));
    let e = explain(&[
        "--src",
        "198.18.1.1",
        "--dst",
        "198.19.7.9",
        "--proto",
        "udp",
        "--dport",
        "11211",
    ]);
    assert_eq!(
        (e["reason"].as_str(), e["rule"].as_u64()),
        (Some("rule"), Some(100)),
        "{e}"
    );
    let e = explain(&[
        "--src",
        "198.18.1.1",
        "--dst",
        "198.19.7.9",
        "--proto",
        "tcp",
        "--dport",
        "11211",
    ]);
    assert_eq!(e["reason"], "default", "{e}");
    // Probes do not count: the production counters did not move.
    let s = mssp_json(&dirs.socket, &["stats", "--customer", "acme", "--json"]);
    assert_eq!(s["customers"][0]["dropped_packets"], 0, "{s}");
    // simulate --live: the same answers for a capture.
    let frames = [
        mssp_core::probe::Probe::new(
            "198.18.66.1".parse().unwrap(),
            "198.19.7.9".parse().unwrap(),
        )
        .frame()
        .unwrap(),
        mssp_core::probe::Probe::new(
            "198.18.66.200".parse().unwrap(),
            "198.19.7.9".parse().unwrap(),
        )
        .frame()
        .unwrap(),
    ];
    let pcap = dirs.root.join("live.pcap");
    {
        let f = std::fs::File::create(&pcap).unwrap();
        let mut w = pcap_file::pcap::PcapWriter::new(f).unwrap();
        for (i, fr) in frames.iter().enumerate() {
            w.write_packet(&pcap_file::pcap::PcapPacket::new(
                Duration::from_millis(i as u64),
                fr.len() as u32,
                fr,
            ))
            .unwrap();
        }
    }
    let out = ok(mssp(
        &dirs.socket,
        &[
            "simulate",
            "--live",
            "--pcap",
            pcap.to_str().unwrap(),
            "--json",
        ],
    ));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["reason"], "customer_block");
    assert_eq!(lines[1]["reason"], "allowlisted");
}

#[test]
fn names_audit_bulk_find_flush_diff_and_reload() {
    require_root();
    let pair = Pair::new("nc");
    let work = std::env::temp_dir().join(format!("mssp-nc-{}", std::process::id()));
    let pki = Pki::new(&work.join("pki"));
    let port = 19_900 + (std::process::id() % 90) as u16;
    let dirs = AgentDirs::new(
        "nc",
        &[&pair.if_b],
        Some(POLICY),
        &pki.agent_config(port, ""),
    );
    let agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    // Names wherever ids go.
    let b = mssp_json(
        &dirs.socket,
        &[
            "block",
            "add",
            "198.18.9.0/24",
            "--customer",
            "acme",
            "--comment",
            "ticket 77",
            "--json",
        ],
    );
    assert_eq!(b["scope"], "customer:7", "{b}");
    let s = mssp_json(&dirs.socket, &["stats", "--customer", "globex", "--json"]);
    assert_eq!(s["customers"][0]["customer"], 8, "{s}");
    let out = mssp(&dirs.socket, &["block", "list", "--customer", "initech"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no customer is named \"initech\"") && err.contains("acme"),
        "{err}"
    );
    // The audit trail: one structured line per change, who and what and the ticket.
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("audit ") && l.contains("block add"))
        .expect("an audit line");
    let v: serde_json::Value = serde_json::from_str(line.split("audit ").nth(1).unwrap()).unwrap();
    assert_eq!(
        (
            v["what"].as_str(),
            v["comment"].as_str(),
            v["result"].as_str()
        ),
        (Some("block add"), Some("ticket 77"), Some("ok")),
        "{v}"
    );
    assert!(v["who"].as_str().is_some_and(|w| !w.is_empty()), "{v}");
    // Bulk: all or nothing.
    let bad = "198.18.20.0/24\n198.18.21.1/24   # host bits\n";
    let mut child = std::process::Command::new(mssp_bin())
        .args([
            "--socket",
            dirs.socket.to_str().unwrap(),
            "block",
            "add",
            "-f",
            "-",
            "--global",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(bad.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("entry 2")
            && err.contains("did you mean 198.18.21.0/24")
            && err.contains("nothing changed"),
        "{err}"
    );
    let list = mssp_json(&dirs.socket, &["block", "list", "--global", "--json"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        0,
        "nothing of the batch: {list}"
    );
    let file = dirs.root.join("feed.txt");
    std::fs::write(
        &file,
        "# today's feed\n198.18.20.0/24\n198.18.21.0/24\n198.18.22.7\n",
    )
    .unwrap();
    let r = mssp_json(
        &dirs.socket,
        &[
            "block",
            "add",
            "-f",
            file.to_str().unwrap(),
            "--global",
            "--ttl",
            "1h",
            "--json",
        ],
    );
    assert_eq!(r["added"], 3, "{r}");
    // Find: which entries of which layers cover an address.
    let f = mssp_json(&dirs.socket, &["block", "find", "198.18.9.4", "--json"]);
    assert_eq!(f.as_array().unwrap().len(), 1, "{f}");
    assert_eq!(
        (f[0]["prefix"].as_str(), f[0]["layer"].as_str()),
        (Some("198.18.9.0/24"), Some("local"))
    );
    let f = mssp_json(&dirs.socket, &["block", "find", "198.18.66.4", "--json"]);
    assert_eq!(f[0]["layer"], "central", "{f}");
    // Flush one list.
    let r = mssp_json(&dirs.socket, &["block", "flush", "--global", "--json"]);
    assert_eq!(r["removed"], 3, "{r}");
    assert_eq!(
        mssp_json(
            &dirs.socket,
            &["block", "list", "--customer", "acme", "--json"]
        )
        .as_array()
        .unwrap()
        .len(),
        2
    );
    // Policy show: both layers.
    let out = ok(mssp(&dirs.socket, &["policy", "show"]));
    assert!(
        out.contains("central policy version 1") && out.contains("local layer version"),
        "{out}"
    );
    // Diff and dry run: what a document would change, nothing applied.
    let v2 = POLICY.replace("\"version\":1", "\"version\":2").replace(
        r#","name":"globex","prefixes":["198.19.8.0/24"]"#,
        r#","name":"globex","prefixes":["198.19.8.0/24","198.19.9.0/24"]"#,
    );
    let doc = dirs.root.join("v2.json");
    std::fs::write(&doc, &v2).unwrap();
    let d = mssp_json(
        &dirs.socket,
        &["policy", "diff", doc.to_str().unwrap(), "--json"],
    );
    assert_eq!(d["customers_changed"][0]["id"], 8, "{d}");
    assert_eq!(
        d["customers_changed"][0]["prefixes_added"][0], "198.19.9.0/24",
        "{d}"
    );
    let c = mssp_json(
        &dirs.socket,
        &[
            "policy",
            "validate",
            doc.to_str().unwrap(),
            "--agent",
            "--json",
        ],
    );
    assert_eq!(c["valid"], true, "{c}");
    let cfg = client_config(&pki.edge_ca, Some(&pki.controller));
    let body = v2.clone();
    let (status, v) = pair
        .b
        .run(move || {
            https(
                cfg,
                port,
                "PUT",
                "/v1/policy?dry_run=true",
                body.as_bytes(),
                Duration::from_secs(30),
            )
        })
        .unwrap();
    assert_eq!((status, v["valid"].clone()), (200, true.into()), "{v}");
    assert_eq!(
        mssp_json(&dirs.socket, &["status", "--json"])["central"]["version"],
        1,
        "a dry run applies nothing"
    );
    // Reload answers with its result, and a failed one says why and changes nothing.
    let r = mssp_json(&dirs.socket, &["reload", "--json"]);
    assert!(r["message"].as_str().is_some(), "{r}");
    std::fs::write(dirs.root.join("policy.json"), "{\"version\":5,").unwrap();
    let out = mssp(&dirs.socket, &["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing changed"), "{err}");
    let s = mssp_json(&dirs.socket, &["status", "--json"]);
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("reload")),
        "{s}"
    );
    let _ = std::fs::remove_dir_all(&work);
}
