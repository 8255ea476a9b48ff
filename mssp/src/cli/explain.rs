//! `mssp explain --src A --dst B [--proto udp --dport N …]`: what the live data path decides
//! for one packet, through the real program over the agent's policy in force.

use std::process::ExitCode;

use clap::Args;
use mssp_wire::{requests::ProbeSpec, views::Explanation};

use super::output::report;
use crate::client::Client;

#[derive(Args)]
pub struct ExplainArgs {
    #[arg(long)]
    src: String,
    #[arg(long)]
    dst: String,
    /// udp (default), tcp, icmp, icmpv6, or a number.
    #[arg(long)]
    proto: Option<String>,
    #[arg(long)]
    sport: Option<u16>,
    #[arg(long)]
    dport: Option<u16>,
    /// TCP flags set, e.g. syn or syn,ack (default syn).
    #[arg(long, value_delimiter = ',')]
    flags: Option<Vec<String>>,
    #[arg(long)]
    icmp_type: Option<u8>,
    #[arg(long)]
    icmp_code: Option<u8>,
    /// IP total length in bytes.
    #[arg(long)]
    length: Option<u32>,
    #[arg(long)]
    ttl: Option<u8>,
    #[arg(long)]
    dscp: Option<u8>,
    /// An 802.1Q tag.
    #[arg(long)]
    vlan: Option<u16>,
    #[arg(long)]
    json: bool,
}

pub fn run(client: &Client, a: ExplainArgs) -> ExitCode {
    let spec = ProbeSpec {
        src: a.src,
        dst: a.dst,
        proto: a.proto,
        sport: a.sport,
        dport: a.dport,
        flags: a.flags,
        icmp_type: a.icmp_type,
        icmp_code: a.icmp_code,
        length: a.length,
        ttl: a.ttl,
        dscp: a.dscp,
        vlan: a.vlan,
    };
    report(
        client.post::<_, Explanation>("/v1/explain", &spec),
        a.json,
        print,
    )
}

pub fn line(e: &Explanation) -> String {
    let mut s = format!("{} ({})", e.action, e.reason);
    match (e.customer, &e.customer_name) {
        (Some(c), Some(n)) => s.push_str(&format!(" customer {c} ({n})")),
        (Some(c), None) => s.push_str(&format!(" customer {c}")),
        _ => s.push_str(" no customer"),
    }
    if let (Some(entry), Some(layer)) = (&e.entry, &e.layer) {
        s.push_str(&format!(", entry {entry} ({layer} layer)"));
    }
    if let Some(r) = e.rule {
        s.push_str(&format!(", rule {r}"));
    }
    if !e.monitored.is_empty() {
        s.push_str(&format!(
            ", counted by {} monitor entries",
            e.monitored.join(" and ")
        ));
    }
    s
}

fn print(e: &Explanation) {
    println!("{}", line(e));
    if let Some(n) = &e.note {
        println!("note: {n}");
    }
}
