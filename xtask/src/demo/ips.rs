//! The demo's IPS act: acme turns detection on, a spoofed UDP flood hits one of its hosts,
//! the edge detects it, installs an auto rule that drops it, and ends the attack when the
//! flood stops — while a benign flow to the same host keeps arriving.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use mssp_lab::trafgen::{self, Kind, Sources, Trafgen};
use serde_json::Value;

use super::topology::{INET_MAC, NS, Topology, UP_MAC, cli, in_ns};

/// The flood's rate; acme's UDP threshold is a sixth of it.
const FLOOD_PPS: u64 = 30_000;
const FLOOD_SECS: u64 = 10;
const BENIGN_PPS: u64 = 100;

/// Per-second arrivals at the customer host.
struct Seconds {
    flood: Vec<AtomicU64>,
    benign: Vec<AtomicU64>,
}

fn attacks(t: &Topology, all: bool) -> Result<Vec<Value>> {
    let mut args = vec!["attacks", "list", "--customer", "7", "--json"];
    if all {
        args.push("--all");
    }
    let v: Value = serde_json::from_str(&cli(t, &args)?)?;
    Ok(v["attacks"].as_array().cloned().unwrap_or_default())
}

/// Whether a spoofed source lies in the demo's infrastructure prefix (which always passes).
fn infrastructure(a: &SocketAddr) -> bool {
    matches!(a.ip(), std::net::IpAddr::V4(v) if v.octets()[..3] == [198, 18, 255])
}

pub fn act(t: &Topology) -> Result<()> {
    println!("\n== the NOC lifts its block of 198.18.1.0/24 (the benign sender below)");
    print!(
        "{}",
        cli(t, &["block", "del", "198.18.1.0/24", "--customer", "7"])?
    );
    println!("\n== acme turns on detection: mitigate UDP floods over 5,000 pps per host");
    print!(
        "{}",
        cli(
            t,
            &[
                "detection",
                "set",
                "--customer",
                "acme",
                "--mode",
                "mitigate",
                "--udp-pps",
                "5000",
                "--hold",
                "3",
            ]
        )?
    );
    let secs = FLOOD_SECS as usize + 12;
    let seen = Arc::new(Seconds {
        flood: (0..secs).map(|_| AtomicU64::new(0)).collect(),
        benign: (0..secs).map(|_| AtomicU64::new(0)).collect(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let (s2, st2) = (seen.clone(), stop.clone());
    let sink = in_ns(NS[2], move || -> Result<()> {
        let flood = UdpSocket::bind("198.19.7.10:6001")?;
        let benign = UdpSocket::bind("198.19.7.10:6000")?;
        for s in [&flood, &benign] {
            s.set_nonblocking(true)?;
        }
        let mut buf = [0u8; 2048];
        while !st2.load(Ordering::Relaxed) {
            let sec = (start.elapsed().as_secs() as usize).min(secs - 1);
            let mut idle = true;
            while let Ok((_, from)) = flood.recv_from(&mut buf) {
                idle = false;
                if !infrastructure(&from) {
                    s2.flood[sec].fetch_add(1, Ordering::Relaxed);
                }
            }
            while benign.recv_from(&mut buf).is_ok() {
                idle = false;
                s2.benign[sec].fetch_add(1, Ordering::Relaxed);
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    });
    let st3 = stop.clone();
    let sender = in_ns(NS[0], move || -> Result<()> {
        let s = UdpSocket::bind((Ipv4Addr::new(198, 18, 1, 10), 0))?;
        let mut next = Instant::now();
        while !st3.load(Ordering::Relaxed) {
            let _ = s.send_to(b"benign", "198.19.7.10:6000");
            next += Duration::from_micros(1_000_000 / BENIGN_PPS);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok(())
    });
    // Samples older than 3 s make the customer's baseline, against which a fingerprint's
    // collateral is measured: let the benign flow build one.
    std::thread::sleep(Duration::from_millis(4500));

    println!(
        "\n== a spoofed UDP flood (sources all over 198.18.0.0/16, NTP-like port 123, 512-byte frames) at {FLOOD_PPS} pps hits 198.19.7.10"
    );
    let cfg = trafgen::config(
        Kind::Udp {
            sport: 123,
            dport: 6001,
            len: 512,
        },
        &Sources::Spoofed,
        Ipv4Addr::new(198, 19, 7, 10),
        INET_MAC,
        UP_MAC,
    );
    let flood_at = start.elapsed().as_secs_f64();
    let flood = Trafgen::try_start(NS[0], "d-inet", &cfg, FLOOD_PPS).map_err(anyhow::Error::msg)?;
    let mut detected = None;
    let mut mitigated = None;
    let until = Instant::now() + Duration::from_secs(FLOOD_SECS);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        if mitigated.is_some() {
            continue;
        }
        if let Some(a) = attacks(t, false)?.first() {
            let now = start.elapsed().as_secs_f64() - flood_at;
            detected.get_or_insert(now);
            if a["mitigated_at"].is_string() {
                mitigated = Some(now);
            }
        }
    }
    flood.stop();
    let flood_end = start.elapsed().as_secs_f64();
    println!(
        "   detected {:.1} s after the flood began, mitigated (auto rule published) at {:.1} s",
        detected.unwrap_or(f64::NAN),
        mitigated.unwrap_or(f64::NAN)
    );
    println!("\n== mssp attacks list");
    print!("{}", cli(t, &["attacks", "list"])?);
    println!("\n== mssp rule list --customer acme (the auto layer's rule, with its TTL)");
    print!("{}", cli(t, &["rule", "list", "--customer", "acme"])?);

    println!("\n== the flood stops; the attack ends after 3 s under half the threshold");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ended = None;
    while Instant::now() < deadline {
        if attacks(t, false)?.is_empty() {
            ended = Some(start.elapsed().as_secs_f64() - flood_end);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("benign sender panicked"))??;
    sink.join()
        .map_err(|_| anyhow::anyhow!("sink panicked"))??;

    println!(
        "\n== arrivals at 198.19.7.10 per second (flood: sources outside the infrastructure prefix, which always passes)"
    );
    println!(
        "  {:>6} {:>12} {:>14}",
        "second", "flood", "benign (of 100)"
    );
    let first = flood_at as usize;
    let last = (flood_end as usize + 1).min(secs);
    for s in first..last {
        println!(
            "  {:>6} {:>12} {:>14}",
            s - first,
            seen.flood[s].load(Ordering::Relaxed),
            seen.benign[s].load(Ordering::Relaxed)
        );
    }
    let all = attacks(t, true)?;
    if let Some(id) = all.first().and_then(|a| a["id"].as_str()) {
        println!("\n== mssp attacks show {id}");
        print!("{}", cli(t, &["attacks", "show", id])?);
    }
    let Some(m) = mitigated else {
        bail!("the flood was not mitigated within {FLOOD_SECS} s");
    };
    // The last two full seconds of the flood: nothing of it may arrive.
    let tail: u64 = (last.saturating_sub(3)..last.saturating_sub(1))
        .map(|s| seen.flood[s].load(Ordering::Relaxed))
        .sum();
    if tail > 0 {
        bail!("{tail} flood packets arrived after the mitigation ({m:.1} s)");
    }
    let benign_lost = (first + 1..last - 1)
        .map(|s| seen.benign[s].load(Ordering::Relaxed))
        .filter(|n| *n < BENIGN_PPS * 8 / 10)
        .count();
    if benign_lost > 1 {
        bail!("the benign flow lost packets in {benign_lost} seconds of the flood");
    }
    match ended {
        Some(e) => println!(
            "\nthe attack ended {e:.1} s after the flood stopped; its auto rule was removed"
        ),
        None => bail!("the attack did not end within 10 s of the flood stopping"),
    }
    Ok(())
}
