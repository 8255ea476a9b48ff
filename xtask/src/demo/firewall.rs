//! The demo's first act: allowed and blocked traffic under the embedded policy.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use super::topology::{NS, in_ns};

/// Sends 50 datagrams from each source to each customer host; returns rows for the table.
pub(crate) fn traffic() -> Vec<(String, String, u64, u64)> {
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

pub(crate) fn print_rows(rows: &[(String, String, u64, u64)]) {
    println!(
        "  {:<32} {:<36} {:>5} {:>9}",
        "flow", "why", "sent", "received"
    );
    for (flow, why, sent, got) in rows {
        println!("  {flow:<32} {why:<36} {sent:>5} {got:>9}");
    }
}
