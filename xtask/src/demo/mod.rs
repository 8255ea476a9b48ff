//! `cargo xtask demo`: a three-namespace topology — the internet, an edge router filtering its
//! upstream interface with `mssp agent`, and two customers — with the embedded demo policy,
//! allowed and blocked traffic, per-customer counters, a NOC block added live, a phishing
//! name refused to acme's users by the AF_XDP inspector on the customer side (`content`:
//! dnsmasq as the resolver, dig as the client), a flood
//! detected and mitigated by the edge itself (`ips`), then blocked by the fleet at a second
//! edge that never saw it (`fleet`: nats-server, `mssp controller`). Everything it creates is
//! removed at the end, also on failure.

mod content;
mod firewall;
mod fleet;
mod ips;
mod topology;

use std::{
    fs::File,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, require_root};
use firewall::{print_rows, traffic};
use topology::{NS, Topology, build, cli, config, mssp, wait_ready};

pub fn demo() -> Result<()> {
    require_root("the demo creates network namespaces and attaches XDP")?;
    cargo(&["build", "--release"])?;
    let dir = std::env::temp_dir().join(format!("mssp-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut t = Topology {
        bpffs: dir.join("bpffs"),
        dir,
        agent: None,
        procs: Vec::new(),
        pids: Vec::new(),
    };
    build(&mut t)?;
    let fleet_section = fleet::broker(&mut t)?;
    let cfg = config(&t, &fleet_section)?;
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
    content::act(&mut t)?;
    ips::act(&t)?;
    fleet::act(&mut t)?;
    drop(t);
    Ok(())
}
