//! Never silently wrong: what the agent says is enforced is what the kernel does — under
//! rule limits across layers, a second agent on the same pins, tampered pins, and a full disk.
//! Each test reproduces a defect found in review (see each test's comment).

use std::time::Duration;

use mssp_tests::{
    agent::{AgentDirs, AgentProc, mssp, mssp_json, xdp_attachments},
    netns::{Netns, Pair, sh},
    pki::Pki,
    push::{client_config, https},
    require_root,
    traffic::{UdpSink, udp_send},
};

const POLICY: &str = r#"{"version":1,
  "customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
    "sources":[{"prefix":"198.18.66.0/24","action":"drop"}]}]}"#;
const DST: &str = "198.19.7.1:5001";
const BLOCKED: &str = "198.18.66.10";
const CLEAN: &str = "198.18.1.10";

fn topology(tag: &str) -> Pair {
    let pair = Pair::new(tag);
    pair.address(&[BLOCKED, CLEAN], &["198.19.7.1"]);
    pair
}

/// Datagrams from `src` that reach the customer, of `n` sent.
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

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Regression: with one local rule, a push of 64 central rules got 200, `rule list` showed
/// rule 64 enforced, and its traffic passed (the data path stops at 64 rules).
#[test]
fn rules_past_64_across_layers_are_refused_not_acknowledged() {
    require_root();
    let pair = topology("r64");
    let work = std::env::temp_dir().join(format!("mssp-r64-{}", std::process::id()));
    let pki = Pki::new(&work.join("pki"));
    let port = 19_100 + (std::process::id() % 500) as u16;
    let dirs = AgentDirs::new(
        "r64",
        &[&pair.if_b],
        Some(POLICY),
        &pki.agent_config(port, ""),
    );
    let _agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    ok(mssp(
        &dirs.socket,
        &[
            "rule",
            "add",
            "--customer",
            "7",
            "--rule",
            r#"{"id":1000,"match":{"protocol":"udp","dst_ports":["9"]},"action":"monitor"}"#,
        ],
    ));
    // 64 central rules; the 64th drops the probe's traffic.
    let mut rules: Vec<String> = (1..64)
        .map(|i| format!(r#"{{"id":{i},"match":{{"protocol":"udp","dst_ports":["{}"]}},"action":"monitor"}}"#, 10_000 + i))
        .collect();
    rules.push(
        r#"{"id":64,"match":{"protocol":"udp","dst_ports":["5001"]},"action":"drop"}"#.into(),
    );
    let doc = POLICY.replace("\"version\":1", "\"version\":2").replace(
        r#""action":"drop"}]}]}"#,
        &format!(r#""action":"drop"}}],"rules":[{}]}}]}}"#, rules.join(",")),
    );
    let cfg = client_config(&pki.edge_ca, Some(&pki.controller));
    let put = |body: String| {
        let cfg = cfg.clone();
        pair.b.run(move || {
            https(
                cfg,
                port,
                "PUT",
                "/v1/policy",
                body.as_bytes(),
                Duration::from_secs(30),
            )
        })
    };
    let (status, v) = put(doc.clone()).expect("push");
    assert_eq!(status, 507, "65 rules must not be acknowledged: {v}");
    let e = v["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("65 rules") && e.contains("1 local") && e.contains("64 central"),
        "{v}"
    );
    // Nothing changed: version 1, no central rule listed as enforced, traffic unaffected.
    let s = mssp_json(&dirs.socket, &["status", "--json"]);
    assert_eq!(s["central"]["version"], 1, "{s}");
    let rl = mssp_json(&dirs.socket, &["rule", "list", "--customer", "7", "--json"]);
    assert_eq!(rl.as_array().unwrap().len(), 1, "{rl}");
    assert_eq!(probe(&pair, CLEAN, 20), 20);
    // Without the local rule the same document fits, and rule 64 really drops.
    ok(mssp(
        &dirs.socket,
        &["rule", "del", "--customer", "7", "--id", "1000"],
    ));
    let (status, v) = put(doc).expect("push");
    assert_eq!(status, 200, "{v}");
    let rl = mssp_json(&dirs.socket, &["rule", "list", "--customer", "7", "--json"]);
    let r64 = rl
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == 64)
        .unwrap();
    assert_eq!(r64["enforced"], true, "{r64}");
    assert_eq!(probe(&pair, CLEAN, 20), 0, "rule 64 is enforced");
    // And the CLI counts every layer too.
    let out = mssp(
        &dirs.socket,
        &[
            "rule",
            "add",
            "--customer",
            "7",
            "--rule",
            r#"{"id":2000,"match":{"protocol":"tcp"},"action":"drop"}"#,
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("65 rules"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// Regression: a second agent on the same pin_dir (another state_dir) removed the first's
/// link pins and republished its own policy into the shared maps; the first kept reporting
/// its state as enforced, and after it stopped the interface had no XDP program.
#[test]
fn a_second_agent_on_the_same_pins_is_refused() {
    require_root();
    let pair = topology("own");
    let dirs = AgentDirs::new("own", &[&pair.if_b], Some(POLICY), "");
    let mut first = AgentProc::start(&pair.b, &dirs, &[], &[]);
    assert_eq!(probe(&pair, BLOCKED, 20), 0);
    // The second agent: same pins, its own state and socket, another interface and policy.
    let second = AgentDirs::new("own2", &["lo"], Some(r#"{"version":9,"customers":[]}"#), "");
    let cfg2 = std::fs::read_to_string(&second.config).unwrap().replace(
        &format!("pin_dir = {:?}", second.pin_dir().display().to_string()),
        &format!("pin_dir = {:?}", dirs.pin_dir().display().to_string()),
    );
    std::fs::write(&second.config, cfg2).unwrap();
    let mut intruder = AgentProc::spawn(&pair.b, &second, &[], &[]);
    let status = intruder.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(75), "{}", intruder.log_text());
    let log = intruder.log_text();
    assert!(
        log.contains("another mssp agent") && log.contains(&format!("pid {}", first.child.id())),
        "{log}"
    );
    // The first agent's filter is untouched and still what it reports.
    let s = mssp_json(&dirs.socket, &["status", "--json"]);
    assert_eq!(
        (s["enforced"].clone(), s["central"]["version"].clone()),
        (true.into(), 1.into()),
        "{s}"
    );
    assert_eq!(probe(&pair, BLOCKED, 20), 0);
    assert!(dirs.pin_dir().join("links").join(&pair.if_b).exists());
    first.stop();
    let (mode, progs) = xdp_attachments(&pair.b, &pair.if_b);
    assert_eq!(
        (mode.as_deref(), progs.len()),
        (Some("native"), 1),
        "the filter outlives the agent"
    );
    assert_eq!(probe(&pair, BLOCKED, 20), 0);
}

/// Regression: `status` trusted memory; now it compares the kernel's links and published
/// records with what the agent believes, and says what drifted.
#[test]
fn status_says_what_the_kernel_does() {
    require_root();
    let pair = topology("dr");
    let dirs = AgentDirs::new("dr", &[&pair.if_b], Some(POLICY), "");
    let mut agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    let s = mssp_json(&dirs.socket, &["status", "--json"]);
    assert_eq!(s["enforced"], true, "{s}");
    // Someone unpublishes customer 7 behind the agent's back.
    let cur = dirs
        .pin_dir()
        .join(format!("v{}", mssp_common::abi::ABI_VERSION))
        .join("CUR");
    let map = aya::maps::MapData::from_pin(&cur).expect("open CUR");
    let mut arr: aya::maps::Array<_, u32> =
        aya::maps::Array::try_from(aya::maps::Map::Array(map)).unwrap();
    let slot = (1..64)
        .find(|i| arr.get(i, 0).unwrap_or(0) != 0)
        .expect("customer 7's slot");
    let rec = arr.get(&slot, 0).unwrap();
    arr.set(slot, 0, 0).unwrap();
    let s = mssp_json(&dirs.socket, &["status", "--json"]);
    assert_eq!(s["enforced"], false, "{s}");
    assert!(s["drift"].to_string().contains("customer 7"), "{s}");
    let text = ok(mssp(&dirs.socket, &["status"]));
    assert!(text.contains("enforced: NO"), "{text}");
    arr.set(slot, rec, 0).unwrap();
    // Someone removes the interface's link pin: the interface is no longer filtered.
    std::fs::remove_file(dirs.pin_dir().join("links").join(&pair.if_b)).unwrap();
    let s = mssp_json(&dirs.socket, &["status", "--json"]);
    assert_eq!(s["enforced"], false, "{s}");
    assert!(s["drift"].to_string().contains("pinned link"), "{s}");
    // Inconsistent pins at start: exit 75, saying what to run and what it costs.
    agent.stop();
    arr.set(slot, 5, 0).unwrap();
    let mut again = AgentProc::spawn(&pair.b, &dirs, &[], &[]);
    let status = again.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(75), "{}", again.log_text());
    let log = again.log_text();
    assert!(
        log.contains("--replace-pins") && log.contains("counters"),
        "{log}"
    );
    // And --replace-pins recovers it, enforcing the policy from the state directory.
    drop(again);
    let _fixed = AgentProc::start(&pair.b, &dirs, &["--replace-pins"], &[]);
    let s = mssp_json(&dirs.socket, &["status", "--json"]);
    assert_eq!(s["enforced"], true, "{s}");
    assert_eq!(probe(&pair, BLOCKED, 20), 0);
}

/// A small tmpfs for the state directory, filled up on demand; unmounted on drop.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn new(tag: &str) -> SmallDisk {
        let dir = std::env::temp_dir().join(format!("mssp-disk-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "tmpfs",
            dir.to_str().unwrap(),
        ]);
        SmallDisk { dir }
    }

    /// Fills the filesystem: writes until ENOSPC.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0; 1]);
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.dir.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Regression: on a full disk a block answered "nothing changed" was enforced (and later
/// persisted); and a cut-off id-log line followed by a later append made the next start
/// fail with exit 65.
#[test]
fn a_full_disk_changes_nothing_and_the_id_log_survives_a_torn_write() {
    require_root();
    let pair = topology("df");
    let disk = SmallDisk::new("df");
    let dirs = AgentDirs::new("df", &[&pair.if_b], Some(POLICY), "");
    let cfg = std::fs::read_to_string(&dirs.config).unwrap().replace(
        &format!("state_dir = {:?}", dirs.state.display().to_string()),
        &format!(
            "state_dir = {:?}",
            disk.dir.join("state").display().to_string()
        ),
    );
    std::fs::write(&dirs.config, cfg).unwrap();
    let mut agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    assert_eq!(probe(&pair, CLEAN, 20), 20);
    disk.fill();
    let out = mssp(
        &dirs.socket,
        &["block", "add", "198.18.1.0/24", "--customer", "7"],
    );
    assert!(
        !out.status.success(),
        "a block that cannot be persisted must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing changed"), "{err}");
    // And nothing did change: the traffic passes, the listing does not show it.
    assert_eq!(
        probe(&pair, CLEAN, 20),
        20,
        "the refused block is not enforced"
    );
    let list = mssp_json(
        &dirs.socket,
        &["block", "list", "--customer", "7", "--json"],
    );
    assert!(!list.to_string().contains("198.18.1.0/24"), "{list}");
    disk.free();
    // A crash in the middle of writing an id-log line, then an append, then a restart.
    agent.kill9();
    let ids = disk.dir.join("state").join("ids.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&ids).unwrap();
    std::io::Write::write_all(&mut f, b"{\"id\":[77,\"custo").unwrap();
    drop(f);
    let mut agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    ok(mssp(
        &dirs.socket,
        &["block", "add", "198.18.1.0/24", "--customer", "7"],
    ));
    assert_eq!(probe(&pair, CLEAN, 20), 0);
    agent.kill9();
    let _agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
    assert_eq!(
        probe(&pair, CLEAN, 20),
        0,
        "the block survived both restarts"
    );
    let _ = Netns::new; // (namespaces are removed with the pair)
}
