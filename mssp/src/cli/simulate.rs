//! `mssp simulate --policy FILE --pcap FILE [--json]`: every frame of a capture through the
//! real XDP program over private maps loaded from the policy, one line per frame.

use std::{
    fs::File,
    io::{BufReader, Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use clap::Args;
use mssp_common::reference::{L4, parse};
use mssp_core::{
    policy::{Capacity, cidr::format_addr},
    simulate::{Decision, Simulator},
};
use pcap_file::{
    DataLink,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};
use serde::Serialize;

#[derive(Args)]
pub struct SimulateArgs {
    /// Policy document (JSON).
    #[arg(long, required_unless_present = "live", conflicts_with = "live")]
    policy: Option<PathBuf>,
    /// The policy the agent enforces now, every layer (through its local API).
    #[arg(long)]
    live: bool,
    /// Capture file (pcap or pcapng, Ethernet).
    #[arg(long)]
    pcap: PathBuf,
    /// The capture was taken on a customer-facing interface: say what content filtering
    /// decides for each frame that names a destination (DNS, TLS SNI, HTTP Host), with the
    /// policy file's lists.
    #[arg(long, requires = "policy")]
    customer_side: bool,
    /// One JSON object per frame.
    #[arg(long)]
    json: bool,
}

pub fn run(client: &crate::client::Client, args: SimulateArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = match &args.policy {
        Some(p) if args.customer_side => customer_side(p, &args.pcap, args.json, &mut out),
        Some(p) => simulate(p, &args.pcap, args.json, &mut out),
        None => live(client, &args.pcap, args.json, &mut out),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("mssp simulate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `--json` prints of a decision.
#[derive(Serialize)]
struct DecisionLine<'a> {
    action: &'static str,
    reason: &'static str,
    customer: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entry: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    layer: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<u32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    monitored: &'a [&'static str],
}

impl<'a> DecisionLine<'a> {
    fn new(d: &'a Decision, policy: &'a mssp_core::policy::Policy) -> Self {
        DecisionLine {
            action: d.action,
            reason: d.reason,
            customer: d.customer,
            customer_name: d
                .customer
                .and_then(|c| policy.customer(c))
                .and_then(|c| c.name.as_deref()),
            entry: d.entry.as_deref(),
            layer: d.layer,
            rule: d.rule,
            monitored: &d.monitored,
        }
    }
}

/// Frames of a pcap or pcapng capture (Ethernet link type).
fn read_capture(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut f = BufReader::new(
        File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
    );
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic).with_context(|| {
        format!(
            "{} is not a pcap or pcapng file (too short)",
            path.display()
        )
    })?;
    let data = {
        let mut rest = Vec::new();
        f.read_to_end(&mut rest)?;
        let mut all = magic.to_vec();
        all.extend(rest);
        all
    };
    let mut frames = Vec::new();
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = PcapNgReader::new(&data[..])
            .with_context(|| format!("{}: bad pcapng", path.display()))?;
        while let Some(block) = r.next_block() {
            match block.with_context(|| format!("{}: bad pcapng block", path.display()))? {
                Block::EnhancedPacket(p) => frames.push(p.data.to_vec()),
                Block::SimplePacket(p) => frames.push(p.data.to_vec()),
                _ => {}
            }
        }
        if let Some(i) = r
            .interfaces()
            .iter()
            .find(|i| i.linktype != DataLink::ETHERNET)
        {
            bail!(
                "{}: link type {:?} is not Ethernet; capture on an Ethernet interface",
                path.display(),
                i.linktype
            );
        }
    } else {
        let mut r = PcapReader::new(&data[..])
            .with_context(|| format!("{} is not a pcap or pcapng file", path.display()))?;
        let dl = r.header().datalink;
        if dl != DataLink::ETHERNET {
            bail!(
                "{}: link type {dl:?} is not Ethernet; capture on an Ethernet interface",
                path.display()
            );
        }
        while let Some(p) = r.next_packet() {
            frames.push(
                p.with_context(|| format!("{}: bad packet record", path.display()))?
                    .data
                    .to_vec(),
            );
        }
    }
    Ok(frames)
}

/// A one-line summary of a frame's headers (from the reference parser).
fn summary(frame: &[u8]) -> Summary {
    match parse(frame) {
        Ok(p) => {
            let (proto, sport, dport) = match p.l4 {
                Some(L4::Tcp { sport, dport, .. }) => ("tcp".to_string(), Some(sport), Some(dport)),
                Some(L4::Udp { sport, dport }) => ("udp".to_string(), Some(sport), Some(dport)),
                Some(L4::Icmp { .. }) => {
                    (if p.v6 { "icmpv6" } else { "icmp" }.to_string(), None, None)
                }
                None => (p.proto.to_string(), None, None),
            };
            Summary {
                src: Some(format_addr(p.v6, p.src)),
                dst: Some(format_addr(p.v6, p.dst)),
                proto: Some(proto),
                sport,
                dport,
                len: frame.len(),
            }
        }
        Err(_) => Summary {
            src: None,
            dst: None,
            proto: None,
            sport: None,
            dport: None,
            len: frame.len(),
        },
    }
}

#[derive(Clone, Debug, Serialize)]
struct Summary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    pub len: usize,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    index: usize,
    #[serde(flatten)]
    decision: Option<DecisionLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten)]
    summary: &'a Summary,
}

/// `--live`: the frames go to the agent, which runs them over the policy in force.
fn live(
    client: &crate::client::Client,
    pcap_path: &Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let frames = read_capture(pcap_path)?;
    let hex = |f: &[u8]| f.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let req = mssp_wire::requests::SimulateFrames {
        frames: frames.iter().map(|f| hex(f)).collect(),
    };
    let decisions: Vec<mssp_wire::views::Explanation> = client
        .post("/v1/simulate", &req)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (frame, d)) in frames.iter().zip(&decisions).enumerate() {
        let s = summary(frame);
        if json {
            let mut v = serde_json::to_value(d)?;
            v["index"] = (i + 1).into();
            if let serde_json::Value::Object(m) = serde_json::to_value(&s)? {
                for (k, x) in m {
                    v[k] = x;
                }
            }
            writeln!(out, "{v}")?;
        } else {
            writeln!(out, "{:>6} {}", i + 1, super::explain::line(d))?;
        }
    }
    Ok(())
}

/// A policy file, validated as a push would be.
fn read_policy(path: &Path) -> anyhow::Result<mssp_core::policy::Policy> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    mssp_core::policy::parse_policy(&bytes, &Capacity::default())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The whole command: policy file, capture file, one line per frame.
fn simulate(
    policy_path: &Path,
    pcap_path: &Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let policy = read_policy(policy_path)?;
    let frames = read_capture(pcap_path)?;
    let sim = Simulator::new(&policy)?;
    for (i, frame) in frames.iter().enumerate() {
        let index = i + 1;
        let d = sim.run(frame)?;
        let s = summary(frame);
        if json {
            let line = JsonLine {
                index,
                decision: d.as_ref().map(|d| DecisionLine::new(d, &policy)),
                error: d.is_none().then(|| {
                    format!("frame of {} bytes is shorter than an Ethernet header; XDP never sees such a frame", frame.len())
                }),
                summary: &s,
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        } else {
            let flow = match (&s.src, &s.dst) {
                (Some(src), Some(dst)) => {
                    let ports = match (s.sport, s.dport) {
                        (Some(a), Some(b)) => format!(" {a} -> {b}"),
                        _ => String::new(),
                    };
                    format!(
                        "{src} -> {dst} {}{ports}",
                        s.proto.as_deref().unwrap_or("?")
                    )
                }
                _ => "(no IP header)".to_string(),
            };
            match d {
                Some(d) => {
                    let customer = match d.customer.and_then(|c| policy.customer(c)) {
                        Some(c) => match &c.name {
                            Some(n) => format!("{}({n})", c.id),
                            None => c.id.to_string(),
                        },
                        None => d.customer.map_or("-".to_string(), |c| c.to_string()),
                    };
                    let mut extra = String::new();
                    if let (Some(e), Some(l)) = (&d.entry, d.layer) {
                        extra.push_str(&format!(" entry={e} ({l})"));
                    }
                    if let Some(r) = d.rule {
                        extra.push_str(&format!(" rule={r}"));
                    }
                    if !d.monitored.is_empty() {
                        extra.push_str(&format!(" monitored={}", d.monitored.join(",")));
                    }
                    writeln!(
                        out,
                        "{index:>6} {:<5} {:<18} customer={customer:<6} {flow} len={}{extra}",
                        d.action, d.reason, s.len
                    )?;
                }
                None => writeln!(
                    out,
                    "{index:>6} -     too short ({} bytes): XDP never sees such a frame",
                    s.len
                )?,
            }
        }
    }
    Ok(())
}

/// `--customer-side`: content filtering's decision per frame.
fn customer_side(
    policy_path: &Path,
    pcap_path: &Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let policy = read_policy(policy_path)?;
    let doc = mssp_agent::filtering::table_doc(&policy, &Default::default());
    let table = mssp_filter::FilterTable::from_doc(&doc).map_err(anyhow::Error::msg)?;
    for (i, frame) in read_capture(pcap_path)?.iter().enumerate() {
        let v = mssp_filter::offline::frame(&table, frame);
        let s = summary(frame);
        if json {
            let mut line = serde_json::to_value(&v)?;
            line["index"] = (i + 1).into();
            writeln!(out, "{line}")?;
            continue;
        }
        let flow = match (&s.src, &s.dst) {
            (Some(a), Some(b)) => format!("{a} -> {b}"),
            _ => "(no IP header)".into(),
        };
        let what = match (&v.kind, &v.name, &v.decision) {
            (None, _, _) => "pass   (not inspected)".to_string(),
            (Some(k), None, _) => {
                format!("pass   {k}: no name in this frame (a flow's later segment, or none)")
            }
            (Some(k), Some(n), Some(d)) => {
                let who = match (d.customer_id, &d.customer_name) {
                    (Some(id), Some(nm)) => format!("customer={id}({nm})"),
                    (Some(id), None) => format!("customer={id}"),
                    _ => "customer=-".into(),
                };
                match &d.blocked {
                    Some(b) => format!(
                        "block  {k} {n} {who} rule={} ({:?} list) action={}",
                        b.rule,
                        b.list,
                        if *k == "dns" {
                            b.action.name()
                        } else {
                            "reset"
                        }
                    ),
                    None => format!("allow  {k} {n} {who}"),
                }
            }
            (Some(k), Some(n), None) => format!("allow  {k} {n}"),
        };
        writeln!(out, "{:>6} {what}  {flow}", i + 1)?;
    }
    Ok(())
}
