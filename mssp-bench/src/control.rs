//! The control-plane figures, with a real agent (the `mssp` binary) on a veth interface: a
//! 1M-entry push through the push API end to end, as `mssp push` sees it, the agent's memory,
//! CLI block latency to enforcement, and restart-to-ready with that policy.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use mssp_lab::{Bpffs, Pair};
use serde_json::json;

use crate::{
    pki::Pki,
    policy_gen::Gen,
    traffic::{Generator, udp_template},
};

/// The `mssp` binary next to this one (`cargo build --release` builds both).
pub fn mssp_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("the bench binary has no directory")?
        .join("mssp");
    if !bin.exists() {
        bail!(
            "{} is missing: build it first (`cargo build --release`, or run `cargo xtask bench`)",
            bin.display()
        );
    }
    Ok(bin)
}

pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// The control-plane figures, with a real agent on a veth interface: a 1M-entry push through
/// the push API (end to end, as `mssp push` sees it), the agent's memory, CLI block latency
/// to enforcement, and restart-to-ready with that policy.
pub fn control_plane(
    g: &Gen,
    control: &mut BTreeMap<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let exe = mssp_bin()?;
    let dir = std::env::temp_dir().join(format!("mssp-bench-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let bpffs = Bpffs::try_new("benchagent").map_err(anyhow::Error::msg)?;
    let net = Pair::try_new("bcp").map_err(anyhow::Error::msg)?;
    let result = (|| -> anyhow::Result<()> {
        let pki = Pki::new(&dir.join("pki"));
        let (edge_ca, edge_cert, edge_key) = (&pki.edge_ca, &pki.edge.cert, &pki.edge.key);
        let (ctl_ca, ctl_cert, ctl_key) = (
            &pki.controller_ca,
            &pki.controller.cert,
            &pki.controller.key,
        );
        let mut doc = g.doc();
        doc.version = 2;
        let policy = dir.join("policy-1m.json");
        std::fs::write(&policy, serde_json::to_vec(&doc)?)?;
        let size = std::fs::metadata(&policy)?.len();
        control.insert(
            "push_1m_document_mib".into(),
            json!(size as f64 / (1 << 20) as f64),
        );
        let cfg = dir.join("mssp.toml");
        let sock = dir.join("mssp.sock");
        std::fs::write(
            &cfg,
            format!(
                "interfaces = [\"{}\"]\npin_dir = {:?}\nstate_dir = {:?}\nsocket = {:?}\nmetrics_listen = \"127.0.0.1:19999\"\npush_listen = \"127.0.0.1:19443\"\ntls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\n",
                net.if_b,
                bpffs.dir.join("mssp").display().to_string(),
                dir.join("state").display().to_string(),
                sock.display().to_string(),
                edge_cert.display().to_string(),
                edge_key.display().to_string(),
                ctl_ca.display().to_string(),
            ),
        )?;
        let start = |what: &str| -> anyhow::Result<(std::process::Child, f64)> {
            let t = Instant::now();
            let child = Command::new("ip")
                .args(["netns", "exec", &net.b.name])
                .arg(&exe)
                .args(["agent", "--config"])
                .arg(&cfg)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(
                    dir.join(format!("agent-{what}.log")),
                )?)
                .spawn()?;
            loop {
                if Command::new(&exe)
                    .arg("--socket")
                    .arg(&sock)
                    .args(["status", "--json"])
                    .output()?
                    .status
                    .success()
                {
                    return Ok((child, t.elapsed().as_secs_f64()));
                }
                if t.elapsed() > Duration::from_secs(300) {
                    bail!("the agent did not come up");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let (mut agent, _) = start("first")?;
        let idle = rss_mib(agent.id());
        // The push, end to end: mssp push validates, sends over mutual TLS, the agent
        // validates, applies and replies once enforced.
        let t = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", &net.b.name])
            .arg(&exe)
            .args(["push", "--json", "--retries", "0", "--policy"])
            .arg(&policy)
            .arg("--cert")
            .arg(ctl_cert)
            .arg("--key")
            .arg(ctl_key)
            .arg("--ca")
            .arg(edge_ca)
            .arg("https://127.0.0.1:19443")
            .output()?;
        let push_s = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "the 1M push failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        control.insert("push_1m_end_to_end_s".into(), json!(push_s));
        // Enforced, not only acknowledged: real frames from the document's sources, sent
        // over the veth, are dropped by the agent's program, every one.
        let dropped = || -> anyhow::Result<u64> {
            let out = Command::new(&exe)
                .arg("--socket")
                .arg(&sock)
                .args(["stats", "--json"])
                .output()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .context("mssp stats --json did not answer JSON")?;
            Ok(v["customers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| !c["customer"].is_null())
                .map(|c| c["dropped_packets"].as_u64().unwrap_or(0))
                .sum())
        };
        let before = dropped()?;
        let probe = Generator::new(
            udp_template(
                false,
                net.a.mac(&net.if_a).map_err(anyhow::Error::msg)?,
                net.b.mac(&net.if_b).map_err(anyhow::Error::msg)?,
                64,
                9,
            ),
            &g.flows(false, false, 4096, 11),
        )?;
        let sent = probe.run(
            Some(std::path::Path::new(&net.a.path())),
            &net.if_a,
            1,
            Duration::from_millis(500),
            Some(20_000),
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let drops = dropped()? - before;
        control.insert(
            "push_1m_enforced".into(),
            json!({"sent": sent.frames, "dropped": drops}),
        );
        if drops != sent.frames {
            bail!(
                "after the 1M push, {drops} of {} frames from its sources were dropped",
                sent.frames
            );
        }
        control.insert("agent_rss_idle_mib".into(), json!(idle));
        control.insert("agent_rss_1m_mib".into(), json!(rss_mib(agent.id())));
        let mut lat = Vec::new();
        for i in 0..40u32 {
            let prefix = format!("198.18.{}.{}/32", 200 + i / 250, i % 250);
            let t = Instant::now();
            let out = Command::new(&exe)
                .arg("--socket")
                .arg(&sock)
                .args(["block", "add", &prefix, "--customer", "17"])
                .output()?;
            if !out.status.success() {
                bail!("block add: {}", String::from_utf8_lossy(&out.stderr));
            }
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        // In the order they were made, so an outlier can be placed.
        control.insert("cli_block_to_enforced_ms".into(), json!(lat));
        let mut lat = lat.clone();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        control.insert(
            "cli_block_to_enforced_p50_ms".into(),
            json!(lat[lat.len() / 2]),
        );
        control.insert(
            "cli_block_to_enforced_p99_ms".into(),
            json!(lat[(lat.len() * 99 / 100).min(lat.len() - 1)]),
        );
        let _ = agent.kill();
        let _ = agent.wait();
        let (mut again, restart) = start("restart")?;
        control.insert("agent_restart_to_ready_1m_s".into(), json!(restart));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(again.id() as i32, libc::SIGTERM) };
        let _ = again.wait();
        Ok(())
    })();
    let _ = Command::new(&exe)
        .args(["unpin", "--pin-dir"])
        .arg(bpffs.dir.join("mssp"))
        .output();
    drop(bpffs);
    if result.is_err() || std::env::var_os("MSSP_BENCH_KEEP_LOGS").is_some() {
        eprintln!("bench: agent logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    drop(net);
    result
}
