//! `cargo xtask demo`: a three-namespace topology — the internet, an edge router filtering its
//! upstream interface with `mssp agent`, and two customers — with the embedded demo policy,
//! allowed and blocked traffic, per-customer counters, and a NOC block added live. Everything
//! it creates is removed at the end, also on failure.

use std::{
    fs::File,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, require_root, workspace_root};

const POLICY: &str = include_str!("../../dist/demo-policy.json");
const NS: [&str; 3] = ["mssp-demo-inet", "mssp-demo-edge", "mssp-demo-cust"];

/// Everything the demo made, removed on drop.
struct Topology {
    dir: PathBuf,
    bpffs: PathBuf,
    agent: Option<Child>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
            let _ = a.wait();
        }
        let _ = Command::new(mssp())
            .args(["unpin", "--pin-dir"])
            .arg(self.bpffs.join("mssp"))
            .output();
        for ns in NS {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("umount").arg(&self.bpffs).output();
        let _ = std::fs::remove_dir_all(&self.dir);
        println!("\ncleaned up: namespaces, veths, pins, bpffs and files removed");
    }
}

fn mssp() -> PathBuf {
    workspace_root().join("target/release/mssp")
}

fn sh(args: &[&str]) -> Result<String> {
    mssp_lab::try_sh(args).map_err(anyhow::Error::msg)
}

fn ns(name: &str, args: &[&str]) -> Result<String> {
    let mut v = vec!["ip", "netns", "exec", name];
    v.extend_from_slice(args);
    sh(&v)
}

fn in_ns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        mssp_lab::enter(&path);
        f()
    })
}

fn build(t: &mut Topology) -> Result<()> {
    for n in NS {
        let _ = Command::new("ip").args(["netns", "del", n]).output();
        sh(&["ip", "netns", "add", n])?;
        ns(n, &["ip", "link", "set", "lo", "up"])?;
    }
    let [inet, edge, cust] = NS;
    sh(&[
        "ip", "link", "add", "d-inet", "netns", inet, "type", "veth", "peer", "name", "d-up",
        "netns", edge,
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
    for src in ["198.18.66.10", "198.18.201.10", "198.18.1.10"] {
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

fn config(t: &Topology) -> Result<PathBuf> {
    let policy = t.dir.join("demo-policy.json");
    std::fs::write(&policy, POLICY)?;
    let cfg = t.dir.join("mssp.toml");
    std::fs::write(
        &cfg,
        format!(
            "interfaces = [\"d-up\"]\npin_dir = \"{}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\nmetrics_listen = \"127.0.0.1:9469\"\npolicy = \"{}\"\n",
            t.bpffs.join("mssp").display(),
            t.dir.join("state").display(),
            t.dir.join("mssp.sock").display(),
            policy.display()
        ),
    )?;
    Ok(cfg)
}

fn cli(t: &Topology, args: &[&str]) -> Result<String> {
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

/// Sends 50 datagrams from each source to each customer host; returns rows for the table.
fn traffic() -> Vec<(String, String, u64, u64)> {
    let flows = [
        ("198.18.1.10", "198.19.7.10", "clean source"),
        ("198.18.66.10", "198.19.7.10", "acme blocks 198.18.66.0/24"),
        ("198.18.66.10", "198.19.8.10", "globex allowlists it"),
        ("198.18.201.10", "198.19.7.10", "ISP threat feed"),
        ("198.18.201.10", "198.19.8.10", "ISP threat feed"),
        (
            "198.18.255.2",
            "198.19.8.10",
            "infrastructure always passes",
        ),
    ];
    const N: u64 = 50;
    let sinks: Vec<_> = ["198.19.7.10:6000", "198.19.8.10:6000"]
        .iter()
        .map(|a| {
            let addr: SocketAddr = a.parse().unwrap();
            in_ns(NS[2], move || {
                let s = UdpSocket::bind(addr).expect("bind sink");
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut counts = std::collections::HashMap::<String, u64>::new();
                let mut buf = [0u8; 64];
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until {
                    if let Ok((_, from)) = s.recv_from(&mut buf) {
                        *counts.entry(from.ip().to_string()).or_default() += 1;
                    }
                }
                counts
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    in_ns(NS[0], move || {
        for (src, dst, _) in flows {
            let s = UdpSocket::bind((src.parse::<std::net::IpAddr>().unwrap(), 0))
                .expect("bind source");
            for _ in 0..N {
                let _ = s.send_to(b"mssp demo", (dst, 6000));
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    })
    .join()
    .expect("sender");
    let counts: Vec<_> = sinks.into_iter().map(|h| h.join().expect("sink")).collect();
    flows
        .iter()
        .map(|(src, dst, why)| {
            let i = if dst.starts_with("198.19.7.") { 0 } else { 1 };
            (
                format!("{src} -> {dst}"),
                why.to_string(),
                N,
                counts[i].get(*src).copied().unwrap_or(0),
            )
        })
        .collect()
}

fn print_rows(rows: &[(String, String, u64, u64)]) {
    println!(
        "  {:<32} {:<36} {:>5} {:>9}",
        "flow", "why", "sent", "received"
    );
    for (flow, why, sent, got) in rows {
        println!("  {flow:<32} {why:<36} {sent:>5} {got:>9}");
    }
}

pub fn demo() -> Result<()> {
    require_root("the demo creates network namespaces and attaches XDP")?;
    cargo(&["build", "--release"])?;
    let dir = std::env::temp_dir().join(format!("mssp-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut t = Topology {
        bpffs: dir.join("bpffs"),
        dir,
        agent: None,
    };
    build(&mut t)?;
    let cfg = config(&t)?;
    println!("== topology: internet ns -- [d-up: XDP] edge router [d-down] -- customers ns");
    println!("   customer 7 (acme) 198.19.7.0/24, customer 8 (globex) 198.19.8.0/24\n");
    let log = File::create(t.dir.join("agent.log"))?;
    let child = Command::new("ip")
        .args(["netns", "exec", NS[1]])
        .arg(mssp())
        .args(["agent", "--config"])
        .arg(&cfg)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting mssp agent")?;
    t.agent = Some(child);
    wait_ready(&t)?;
    println!("== mssp status");
    print!("{}", cli(&t, &["status"])?);

    println!("\n== traffic with the embedded demo policy");
    print_rows(&traffic());
    println!("\n== mssp stats (per customer, verdict, reason)");
    print!("{}", cli(&t, &["stats"])?);

    println!("\n== the NOC blocks 198.18.1.0/24 for acme for 10 minutes");
    print!(
        "{}",
        cli(
            &t,
            &[
                "block",
                "add",
                "198.18.1.0/24",
                "--customer",
                "7",
                "--ttl",
                "10m",
                "--comment",
                "demo"
            ]
        )?
    );
    print_rows(&traffic()[..1]);
    println!("\n== mssp block list --customer 7");
    print!("{}", cli(&t, &["block", "list", "--customer", "7"])?);
    let rows = traffic();
    if rows[1].3 != 0 || rows[3].3 != 0 {
        bail!("blocked traffic arrived: {rows:?}");
    }
    if rows[2].3 != rows[2].2 || rows[5].3 != rows[5].2 {
        bail!("allowed traffic was lost: {rows:?}");
    }
    println!(
        "\nthe blocked sources' packets were dropped at the edge and counted (see stats above)"
    );
    drop(t);
    Ok(())
}

fn wait_ready(t: &Topology) -> Result<()> {
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
