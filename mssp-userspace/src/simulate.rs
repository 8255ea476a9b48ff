//! `mssp simulate`: every frame of a capture through the real XDP program
//! (BPF_PROG_TEST_RUN), over private, unpinned maps loaded from a policy. Answers "why was
//! this packet dropped?" with the program's own decision, not a re-implementation.

use std::{
    fs::File,
    io::{BufReader, Read, Write},
    path::Path,
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use mssp_common::{
    Reason, Verdict,
    abi::{TRACE_MAGIC, Trace},
    proto::ETH_HLEN,
    reference::{L4, parse},
};
use pcap_file::{
    DataLink,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};
use serde::Serialize;

use crate::{
    dataplane::{Clock, Dataplane, Desired, kernel::KernelBackend},
    loader::{self, LoadOptions, PROGRAM_NAME},
    policy::{
        Capacity, Policy,
        cidr::{format_addr, format_net},
    },
};

/// The program loaded with tracing on, its maps holding one policy.
pub struct Simulator {
    ebpf: Ebpf,
    dataplane: Dataplane<KernelBackend>,
}

/// What the program decided for one frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// XDP action: "pass" or "drop".
    pub action: &'static str,
    pub reason: &'static str,
    pub customer: Option<u32>,
    /// The source entry that decided (prefix and layer), if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<&'static str>,
    /// The rule that decided (drop, pass, rate limit), if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// Monitor entries that counted the packet ("global", "customer").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub monitored: Vec<&'static str>,
    #[serde(skip)]
    pub verdict: Option<Verdict>,
    #[serde(skip)]
    pub reason_code: Option<Reason>,
}

impl Simulator {
    /// Loads the program with private maps and publishes `policy` into them.
    pub fn new(policy: &Policy) -> anyhow::Result<Simulator> {
        let mut ebpf = loader::load(&LoadOptions {
            trace: true,
            ..LoadOptions::default()
        })?;
        let backend = KernelBackend::from_ebpf(&mut ebpf)?;
        let mut dataplane = Dataplane::new(backend);
        dataplane
            .apply(&Desired::from_policy(policy), &Clock::now())
            .context("loading the policy into the program's maps")?;
        Ok(Simulator { ebpf, dataplane })
    }

    pub fn dataplane(&self) -> &Dataplane<KernelBackend> {
        &self.dataplane
    }

    pub fn dataplane_mut(&mut self) -> &mut Dataplane<KernelBackend> {
        &mut self.dataplane
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Runs one frame through the program; `None` for frames the kernel would never hand to
    /// XDP (shorter than an Ethernet header). Safe to call from several threads at once.
    pub fn run(&self, frame: &[u8]) -> anyhow::Result<Option<Decision>> {
        let Some((retval, t)) = trace_run(&self.ebpf, frame)? else {
            return Ok(None);
        };
        let verdict = Verdict::from_u32(t.verdict);
        let action = match retval {
            1 => "drop",
            2 => "pass",
            0 => "aborted",
            3 => "tx",
            4 => "redirect",
            _ => "unknown",
        };
        let key = (t.entry != 0)
            .then(|| self.dataplane.entry_key(t.entry))
            .flatten();
        let mut monitored = Vec::new();
        if t.flags & mssp_common::abi::trace_flags::GLOBAL_MONITOR != 0 {
            monitored.push("global");
        }
        if t.flags & mssp_common::abi::trace_flags::CUSTOMER_MONITOR != 0 {
            monitored.push("customer");
        }
        Ok(Some(Decision {
            action,
            reason: Reason::from_u32(t.reason).map_or("unknown", |r| r.name()),
            customer: (t.flags & mssp_common::abi::trace_flags::CUSTOMER != 0)
                .then_some(t.customer_id),
            entry: key.map(|k| format_net(&k.net)),
            layer: key.map(|k| k.layer.name()),
            rule: matches!(
                Reason::from_u32(t.reason),
                Some(Reason::Rule | Reason::RateLimited)
            )
            .then_some(t.rule),
            monitored,
            verdict,
            reason_code: Reason::from_u32(t.reason),
        }))
    }
}

/// Runs `frame` through a program loaded with `TRACE = 1` and returns the XDP action and the
/// trace record it prepended. `None` for frames shorter than an Ethernet header.
pub fn trace_run(ebpf: &Ebpf, frame: &[u8]) -> anyhow::Result<Option<(u32, Trace)>> {
    if frame.len() < ETH_HLEN {
        return Ok(None);
    }
    let prog: &Xdp = ebpf
        .program(PROGRAM_NAME)
        .context("program missing")?
        .try_into()?;
    let mut out = vec![0u8; frame.len() + 2 * size_of::<Trace>()];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    let n = (r.data_size_out as usize).min(out.len());
    anyhow::ensure!(
        n >= size_of::<Trace>() + frame.len(),
        "the program returned no trace ({n} bytes for a {}-byte frame)",
        frame.len()
    );
    // SAFETY: Trace is plain old data and the buffer holds at least one.
    let t: Trace = unsafe { std::ptr::read_unaligned(out.as_ptr().cast()) };
    anyhow::ensure!(
        t.seq == TRACE_MAGIC,
        "the frame returned carries no trace record"
    );
    Ok(Some((r.return_value, t)))
}

/// Frames of a pcap or pcapng capture (Ethernet link type).
pub fn read_capture(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
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
pub fn summary(frame: &[u8]) -> Summary {
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
pub struct Summary {
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
    decision: Option<&'a Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten)]
    summary: &'a Summary,
}

/// The whole command: policy file, capture file, one line per frame.
pub fn run(
    policy_path: &Path,
    pcap_path: &Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(policy_path)
        .with_context(|| format!("cannot read {}", policy_path.display()))?;
    let policy = crate::policy::parse_policy(&bytes, &Capacity::default())
        .map_err(|e| anyhow::anyhow!("{}: {e}", policy_path.display()))?;
    let frames = read_capture(pcap_path)?;
    let sim = Simulator::new(&policy)?;
    for (i, frame) in frames.iter().enumerate() {
        let index = i + 1;
        let d = sim.run(frame)?;
        let s = summary(frame);
        if json {
            let line = JsonLine {
                index,
                decision: d.as_ref(),
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
                    let customer = d.customer.map_or("-".to_string(), |c| c.to_string());
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
