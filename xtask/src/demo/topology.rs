//! The demo's topology: the internet, the edge router and the customers as namespaces,
//! the agent's config, and the CLI against its socket. Removed on drop.

use std::{
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::util::workspace_root;

pub(crate) const POLICY: &str = include_str!("../../../dist/demo-policy.json");
pub(crate) const NS: [&str; 3] = ["mssp-demo-inet", "mssp-demo-edge", "mssp-demo-cust"];
/// The fleet act's broker and second edge router.
pub(crate) const BRK: &str = "mssp-demo-brk";
pub(crate) const EDGE2: &str = "mssp-demo-edge2";

/// Everything the demo made, removed on drop.
pub(crate) struct Topology {
    pub dir: PathBuf,
    pub bpffs: PathBuf,
    pub agent: Option<Child>,
    /// The broker, the controller and the second edge's agent (the fleet act).
    pub procs: Vec<Child>,
    /// Daemons that fork (dnsmasq), by pid.
    pub pids: Vec<i32>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for pid in self.pids.drain(..) {
            // SAFETY: a daemon the demo started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        for mut p in self.procs.drain(..).rev() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
            let _ = p.wait();
        }
        if let Some(mut a) = self.agent.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
            let _ = a.wait();
        }
        for pins in ["mssp", "mssp2"] {
            let _ = Command::new(mssp())
                .args(["unpin", "--pin-dir"])
                .arg(self.bpffs.join(pins))
                .output();
        }
        for ns in NS.into_iter().chain([BRK, EDGE2]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("umount").arg(&self.bpffs).output();
        let _ = std::fs::remove_dir_all(&self.dir);
        println!("\ncleaned up: namespaces, veths, pins, bpffs and files removed");
    }
}

pub(crate) fn mssp() -> PathBuf {
    workspace_root().join("target/release/mssp")
}

pub(crate) fn sh(args: &[&str]) -> Result<String> {
    mssp_lab::try_sh(args).map_err(anyhow::Error::msg)
}

pub(crate) fn ns(name: &str, args: &[&str]) -> Result<String> {
    let mut v = vec!["ip", "netns", "exec", name];
    v.extend_from_slice(args);
    sh(&v)
}

pub(crate) fn in_ns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        mssp_lab::enter(&path);
        f()
    })
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn build(t: &mut Topology) -> Result<()> {
    for n in NS {
        let _ = Command::new("ip").args(["netns", "del", n]).output();
        sh(&["ip", "netns", "add", n])?;
        ns(n, &["ip", "link", "set", "lo", "up"])?;
    }
    let [inet, edge, cust] = NS;
    sh(&[
        "ip",
        "link",
        "add",
        "d-inet",
        "netns",
        inet,
        "address",
        &mac(INET_MAC),
        "type",
        "veth",
        "peer",
        "name",
        "d-up",
        "netns",
        edge,
        "address",
        &mac(UP_MAC),
    ])?;
    sh(&[
        "ip", "link", "add", "d-down", "netns", edge, "type", "veth", "peer", "name", "d-cust",
        "netns", cust,
    ])?;
    for (n, dev, addrs) in [
        (
            inet,
            "d-inet",
            &[
                "198.18.255.2/24",
                "198.18.66.10/32",
                "198.18.201.10/32",
                "198.18.1.10/32",
                "198.18.53.53/32",
            ][..],
        ),
        (edge, "d-up", &["198.18.255.1/24"][..]),
        (edge, "d-down", &["198.19.7.1/24", "198.19.8.1/24"][..]),
        (cust, "d-cust", &["198.19.7.10/24", "198.19.8.10/24"][..]),
    ] {
        for a in addrs {
            ns(n, &["ip", "addr", "add", a, "dev", dev])?;
        }
        ns(n, &["ip", "link", "set", dev, "up"])?;
    }
    ns(
        inet,
        &[
            "ip",
            "route",
            "add",
            "198.19.0.0/16",
            "via",
            "198.18.255.1",
            "src",
            "198.18.1.10",
        ],
    )?;
    for src in [
        "198.18.66.10",
        "198.18.201.10",
        "198.18.1.10",
        "198.18.53.53",
    ] {
        ns(
            edge,
            &[
                "ip",
                "route",
                "add",
                &format!("{src}/32"),
                "via",
                "198.18.255.2",
            ],
        )?;
    }
    ns(
        cust,
        &["ip", "route", "add", "default", "via", "198.19.7.1"],
    )?;
    ns(edge, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;

    // The pins live on a bpffs in the host's mount namespace, as /sys/fs/bpf would on a router.
    std::fs::create_dir_all(&t.bpffs)?;
    sh(&[
        "mount",
        "-t",
        "bpf",
        "bpffs",
        t.bpffs.to_str().unwrap_or_default(),
    ])?;
    Ok(())
}

pub(crate) fn config(t: &Topology, fleet: &str) -> Result<PathBuf> {
    let policy = t.dir.join("demo-policy.json");
    std::fs::write(&policy, POLICY)?;
    let cfg = t.dir.join("mssp.toml");
    std::fs::write(
        &cfg,
        format!(
            "interfaces = [\"d-up\"]\ncustomer_interfaces = [\"d-down\"]\npin_dir = \"{}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\nmetrics_listen = \"127.0.0.1:9469\"\npolicy = \"{}\"\n{fleet}",
            t.bpffs.join("mssp").display(),
            t.dir.join("state").display(),
            t.dir.join("mssp.sock").display(),
            policy.display()
        ),
    )?;
    Ok(cfg)
}

pub(crate) fn cli(t: &Topology, args: &[&str]) -> Result<String> {
    let out = Command::new(mssp())
        .arg("--socket")
        .arg(t.dir.join("mssp.sock"))
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("mssp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The veths' MAC addresses, fixed so trafgen can address frames to the edge.
pub const INET_MAC: [u8; 6] = [0x02, 0x6d, 0x73, 0x73, 0x70, 0x01];
pub const UP_MAC: [u8; 6] = [0x02, 0x6d, 0x73, 0x73, 0x70, 0x02];

pub(crate) fn wait_ready(t: &Topology) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cli(t, &["status", "--json"]).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(t.dir.join("agent.log")).unwrap_or_default();
    bail!("the agent did not come up:\n{log}")
}
