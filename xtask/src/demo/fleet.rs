//! The demo's fleet act: a broker namespace (Debian's nats-server with the shipped
//! `dist/nats-server.conf`, and `mssp controller`), management links to the edges, and a
//! second edge router that joins after the attack at the first: it reads the fleet's
//! decision (made from the first edge's attack report) and drops a flood it never saw.

use std::{
    fs::File,
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use mssp_lab::trafgen::{self, Kind, Sources, Trafgen};
use serde_json::Value;

use super::topology::{BRK, EDGE2, INET_MAC, NS, Topology, mssp, ns, sh};

const INET2_MAC: [u8; 6] = [0x02, 0x6d, 0x73, 0x73, 0x70, 0x03];
const UP2_MAC: [u8; 6] = [0x02, 0x6d, 0x73, 0x73, 0x70, 0x04];

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn link(a_ns: &str, a: &str, a_addr: &str, b_ns: &str, b: &str, b_addr: &str) -> Result<()> {
    sh(&[
        "ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns,
    ])?;
    ns(a_ns, &["ip", "addr", "add", a_addr, "dev", a])?;
    ns(b_ns, &["ip", "addr", "add", b_addr, "dev", b])?;
    ns(a_ns, &["ip", "link", "set", a, "up"])?;
    ns(b_ns, &["ip", "link", "set", b, "up"])?;
    Ok(())
}

fn fleet_cli(t: &Topology, args: &[&str]) -> Result<String> {
    let out = Command::new(mssp())
        .arg("--controller-socket")
        .arg(t.dir.join("controller.sock"))
        .arg("fleet")
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "mssp fleet {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn edge2_cli(t: &Topology, args: &[&str]) -> Result<String> {
    let out = Command::new(mssp())
        .arg("--socket")
        .arg(t.dir.join("edge2.sock"))
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "mssp {args:?} (edge2): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `[fleet]` section of edge `n`'s config (management address 198.19.254.(4n-3)).
fn fleet_section(t: &Topology, n: u8) -> String {
    format!(
        "\n[fleet]\nnats_url = \"nats://198.19.254.{}:4222\"\nedge = \"edge{n}\"\nuser = \"edge{n}\"\npassword_file = \"{}\"\ncontroller_key = \"{}\"\nheartbeat_secs = 1\n",
        4 * n - 3,
        t.dir.join(format!("edge{n}.password")).display(),
        t.dir.join("fleet/controller.pub").display()
    )
}

/// The broker, the controller and the links; returns edge 1's `[fleet]` section.
pub(crate) fn broker(t: &mut Topology) -> Result<String> {
    for n in [BRK, EDGE2] {
        let _ = Command::new("ip").args(["netns", "del", n]).output();
        sh(&["ip", "netns", "add", n])?;
        ns(n, &["ip", "link", "set", "lo", "up"])?;
    }
    link(
        BRK,
        "dm1",
        "198.19.254.1/30",
        NS[1],
        "dm1e",
        "198.19.254.2/30",
    )?;
    link(
        BRK,
        "dm2",
        "198.19.254.5/30",
        EDGE2,
        "dm2e",
        "198.19.254.6/30",
    )?;
    sh(&[
        "ip",
        "link",
        "add",
        "d2-inet",
        "netns",
        NS[0],
        "address",
        &mac(INET2_MAC),
        "type",
        "veth",
        "peer",
        "name",
        "d2-up",
        "netns",
        EDGE2,
        "address",
        &mac(UP2_MAC),
    ])?;
    ns(NS[0], &["ip", "link", "set", "d2-inet", "up"])?;
    ns(EDGE2, &["ip", "link", "set", "d2-up", "up"])?;

    let conf =
        std::fs::read_to_string(crate::util::workspace_root().join("dist/nats-server.conf"))?
            .replace("\"/var/lib/nats\"", &format!("{:?}", t.dir.join("js")))
            .replace("CHANGE-ME-", "demo-");
    std::fs::write(t.dir.join("nats-server.conf"), conf)?;
    for u in ["controller", "edge1", "edge2"] {
        std::fs::write(t.dir.join(format!("{u}.password")), format!("demo-{u}\n"))?;
    }
    let keygen = Command::new(mssp())
        .args(["fleet", "keygen", "--out"])
        .arg(t.dir.join("fleet"))
        .output()?;
    if !keygen.status.success() {
        bail!(
            "mssp fleet keygen: {}",
            String::from_utf8_lossy(&keygen.stderr)
        );
    }
    let log = File::create(t.dir.join("nats.log"))?;
    t.procs.push(
        Command::new("ip")
            .args(["netns", "exec", BRK, "nats-server", "-c"])
            .arg(t.dir.join("nats-server.conf"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting nats-server (Debian package nats-server; `cargo xtask setup` installs it)")?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(t.dir.join("nats.log"))
        .unwrap_or_default()
        .contains("Server is ready")
    {
        if Instant::now() > deadline {
            bail!(
                "nats-server did not start: {}",
                std::fs::read_to_string(t.dir.join("nats.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(
        t.dir.join("controller.toml"),
        format!(
            "nats_url = \"nats://127.0.0.1:4222\"\nuser = \"controller\"\npassword_file = \"{}\"\nsigning_key = \"{}\"\nsocket = \"{}\"\n[correlation]\nedges = 2\nfleet_customers = [7]\n",
            t.dir.join("controller.password").display(),
            t.dir.join("fleet/controller.key").display(),
            t.dir.join("controller.sock").display()
        ),
    )?;
    let log = File::create(t.dir.join("controller.log"))?;
    t.procs.push(
        Command::new("ip")
            .args(["netns", "exec", BRK])
            .arg(mssp())
            .args(["controller", "--config"])
            .arg(t.dir.join("controller.toml"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting mssp controller")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet_cli(t, &["status", "--json"]).is_err() {
        if Instant::now() > deadline {
            bail!(
                "the controller did not come up: {}",
                std::fs::read_to_string(t.dir.join("controller.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(fleet_section(t, 1))
}

fn stats7(t: &Topology) -> Result<(u64, u64)> {
    let v: Value = serde_json::from_str(&edge2_cli(t, &["stats", "--customer", "7", "--json"])?)?;
    let c = &v["customers"][0];
    Ok((
        c["dropped_packets"].as_u64().unwrap_or(0),
        c["passed_packets"].as_u64().unwrap_or(0),
    ))
}

pub(crate) fn act(t: &mut Topology) -> Result<()> {
    println!(
        "\n== the fleet: acme is a fleet customer, so the controller made edge1's attack a decision for every edge"
    );
    print!("{}", fleet_cli(t, &["status"])?);
    println!("\n== a second edge router (edge2) joins the fleet: it never saw the attack");
    let cfg = t.dir.join("edge2.toml");
    std::fs::write(
        &cfg,
        format!(
            "interfaces = [\"d2-up\"]\npin_dir = \"{}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\nmetrics_listen = \"127.0.0.1:9470\"\npolicy = \"{}\"\n{}",
            t.bpffs.join("mssp2").display(),
            t.dir.join("state2").display(),
            t.dir.join("edge2.sock").display(),
            t.dir.join("demo-policy.json").display(),
            fleet_section(t, 2)
        ),
    )?;
    let log = File::create(t.dir.join("edge2.log"))?;
    t.procs.push(
        Command::new("ip")
            .args(["netns", "exec", EDGE2])
            .arg(mssp())
            .args(["agent", "--config"])
            .arg(&cfg)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting the second agent")?,
    );
    let started = Instant::now();
    let has_fleet_rule = |t: &Topology| -> bool {
        edge2_cli(t, &["rule", "list", "--customer", "acme", "--json"])
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .is_some_and(|v| {
                v.as_array()
                    .is_some_and(|a| a.iter().any(|r| r["layer"] == "fleet"))
            })
    };
    while !has_fleet_rule(t) {
        if started.elapsed() > Duration::from_secs(20) {
            bail!(
                "edge2 has no fleet rule: {}",
                std::fs::read_to_string(t.dir.join("edge2.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "   edge2 up and enforcing the fleet's decision {:.1} s after it started",
        started.elapsed().as_secs_f64()
    );
    println!("\n== mssp rule list --customer acme, on edge2");
    print!("{}", edge2_cli(t, &["rule", "list", "--customer", "acme"])?);
    println!("\n== the same flood now hits edge2 for 3 s");
    let cfg = trafgen::config(
        Kind::Udp {
            sport: 123,
            dport: 6001,
            len: 512,
        },
        &Sources::Spoofed,
        Ipv4Addr::new(198, 19, 7, 10),
        INET2_MAC,
        UP2_MAC,
    );
    let _ = INET_MAC;
    let (d0, p0) = stats7(t)?;
    let flood = Trafgen::try_start(NS[0], "d2-inet", &cfg, 30_000).map_err(anyhow::Error::msg)?;
    std::thread::sleep(Duration::from_secs(3));
    flood.stop();
    std::thread::sleep(Duration::from_millis(300));
    let (d1, p1) = stats7(t)?;
    let (dropped, passed) = (d1 - d0, p1 - p0);
    println!(
        "   edge2's data path: {dropped} dropped, {passed} passed (infrastructure sources always pass)"
    );
    println!("\n== mssp fleet status");
    print!("{}", fleet_cli(t, &["status"])?);
    if dropped == 0 || passed * 50 > dropped {
        bail!("edge2 did not drop the flood: {dropped} dropped, {passed} passed");
    }
    println!("\nedge1 detected the attack; the fleet blocked it at edge2 before edge2 ever saw it");
    Ok(())
}
