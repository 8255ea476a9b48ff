//! The demo's content-filtering act: acme's policy blocks phish.test; its users' DNS
//! queries leave through the customer-facing interface, where the inspector answers
//! NXDOMAIN for the blocked name (and every name under it) while globex, which filters
//! nothing, gets the resolver's real answer. The NOC then blocks one more name live.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::topology::{NS, Topology, cli, ns};

const RESOLVER: &str = "198.18.53.53";

/// `dig` from `src`: (status, first answer).
fn dig(src: &str, name: &str) -> Result<(String, String)> {
    let out = ns(
        NS[2],
        &[
            "dig",
            "+tries=1",
            "+time=2",
            "-b",
            src,
            &format!("@{RESOLVER}"),
            name,
            "A",
        ],
    )
    .unwrap_or_else(|e| e.to_string());
    let status = out
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .unwrap_or_else(|| "no answer".into());
    let answer = out
        .lines()
        .skip_while(|l| !l.starts_with(";; ANSWER SECTION"))
        .nth(1)
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("-")
        .to_string();
    Ok((status, answer))
}

pub(crate) fn act(t: &mut Topology) -> Result<()> {
    println!(
        "\n== content filtering: acme blocks phish.test (DNS, TLS SNI, HTTP Host) for its users"
    );
    let pid_file = t.dir.join("dnsmasq.pid");
    ns(
        NS[0],
        &[
            "dnsmasq",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={RESOLVER}"),
            "--address=/test/198.18.80.80",
            &format!("--pid-file={}", pid_file.display()),
            &format!("--log-facility={}", t.dir.join("dnsmasq.log").display()),
            "--user=root",
        ],
    )?;
    let t0 = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            t.pids.push(pid);
            break;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("dnsmasq did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The inspector is up once status says so.
    let t0 = Instant::now();
    while !cli(t, &["status"])?.contains("enforcing") {
        if t0.elapsed() > Duration::from_secs(15) {
            bail!("the inspector did not come up:\n{}", cli(t, &["status"])?);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    print!(
        "{}",
        cli(t, &["status"])?
            .lines()
            .filter(|l| l.contains("filtering")
                || l.contains("AF_XDP")
                || l.contains("re-injection"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    println!(
        "   {:<32} {:<12} {:<10} answer",
        "query (dig @198.18.53.53)", "from", "status"
    );
    let rows = [
        ("198.19.7.10", "acme", "news.test"),
        ("198.19.7.10", "acme", "phish.test"),
        ("198.19.7.10", "acme", "login.phish.test"),
        ("198.19.8.10", "globex", "login.phish.test"),
    ];
    let mut got = Vec::new();
    for (src, who, name) in rows {
        let (st, ans) = dig(src, name)?;
        println!("   {name:<32} {who:<12} {st:<10} {ans}");
        got.push(st);
    }
    if got != ["NOERROR", "NXDOMAIN", "NXDOMAIN", "NOERROR"] {
        bail!("content filtering did not decide as the policy says: {got:?}");
    }
    println!("\n== mssp filter test --customer acme login.phish.test");
    print!(
        "{}",
        cli(
            t,
            &["filter", "test", "--customer", "acme", "login.phish.test"]
        )?
    );
    println!("\n== the NOC blocks casino.test for acme on this edge (local layer)");
    print!(
        "{}",
        cli(t, &["filter", "add", "--customer", "acme", "casino.test"])?
            .lines()
            .take(1)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let t0 = Instant::now();
    let st = loop {
        let (st, _) = dig("198.19.7.10", "www.casino.test")?;
        if st == "NXDOMAIN" || t0.elapsed() > Duration::from_secs(5) {
            break st;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("   www.casino.test from acme: {st}");
    if st != "NXDOMAIN" {
        bail!("casino.test was not blocked after filter add");
    }
    std::thread::sleep(Duration::from_millis(1200));
    println!("\n== mssp filter stats");
    print!("{}", cli(t, &["filter", "stats"])?);
    Ok(())
}
