//! `mssp bench` (run by `cargo xtask bench`): mssp against its floor and against what an ISP
//! would otherwise use, interleaved in rounds on one veth pair, plus control-plane figures.
//!
//! Variants: `parse_only` (mssp's parser, then drop), `mssp_1k`, `mssp_1m`, `lpm_trie_1m`
//! (the same 1M source entries in one kernel LPM trie keyed by (customer, source)) and
//! `nft_set_1m` (nftables at the netdev ingress hook: a verdict map on the destination jumps
//! to the customer's chain, which drops sources in the customer's set). Every variant drops
//! all the traffic it is offered, so each measures its own per-packet cost.
//!
//! Mpps is measured with BPF statistics off (program counters, or the nft rule counter); the
//! per-packet program time (`ns_per_pkt`) in a second half of each window with
//! `BPF_ENABLE_STATS` on.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::{LpmTrie, lpm_trie::Key},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
    sys::{Stats, enable_stats},
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde_json::json;

use crate::{
    dataplane::{Clock, Dataplane, Desired, kernel::KernelBackend},
    loader::{self, LoadOptions, PROGRAM_NAME},
    policy::{
        Capacity, Policy, PolicyDoc,
        doc::{ActionDoc, CustomerDoc, SourceDoc},
        validate,
    },
    traffic::{Generator, udp_template},
};

/// The LPM baseline's object (bin `mssp-lpm`).
pub static LPM_PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mssp-lpm"));

pub struct BenchOpts {
    pub quick: bool,
    pub out: PathBuf,
    /// Only these variants (development; the summary then lacks the others).
    pub only: Vec<String>,
    /// Only these traffic mixes.
    pub mixes: Vec<String>,
    pub rounds: Option<usize>,
    pub secs: Option<f64>,
    pub skip_control: bool,
}

/// One source entry of a generated policy.
#[derive(Clone, Copy)]
struct Src {
    customer: u32,
    v6: bool,
    addr: u128,
    len: u8,
}

/// A generated policy: customers (id = index) with an IPv4 /30 and an IPv6 /64 each, and
/// their source entries (half IPv4, half IPv6), lengths in a feed-like mix.
pub struct Gen {
    customers: u32,
    sources: Vec<Src>,
}

fn cust4(i: u32) -> u128 {
    (0xc613_0000u32 + 4 * i) as u128
}

fn cust6(i: u32) -> u128 {
    (0x2001_0db8_c000u128 << 80) | ((i as u128) << 64)
}

pub fn generate(customers: u32, per_customer: u32, seed: u64) -> Gen {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sources = Vec::with_capacity((customers * per_customer) as usize);
    for c in 0..customers {
        let mut seen = std::collections::HashSet::new();
        while seen.len() < per_customer as usize {
            let v6 = seen.len() % 2 == 1;
            let (addr, len) = if v6 {
                let len = [128u8, 128, 64, 64, 56, 48][rng.random_range(0..6)];
                // 2001:db8:0::/33 for sources; customers live in 2001:db8:c000::/34.
                let a = (0x2001_0db8u128 << 96) | (rng.random::<u128>() >> 33);
                (a & !(u128::MAX >> len), len)
            } else {
                let len =
                    [32u8, 32, 32, 32, 32, 32, 24, 24, 24, 28, 28, 20][rng.random_range(0..12)];
                let a = 0xc612_0000u32 | rng.random_range(0..0x1_0000u32);
                (
                    (a & !(u32::MAX.checked_shr(len as u32).unwrap_or(0))) as u128,
                    len,
                )
            };
            if seen.insert((v6, addr, len)) {
                sources.push(Src {
                    customer: c,
                    v6,
                    addr,
                    len,
                });
            }
        }
    }
    Gen { customers, sources }
}

fn fmt_net(v6: bool, addr: u128, len: u8) -> String {
    if v6 {
        format!("{}/{len}", Ipv6Addr::from(addr))
    } else {
        format!("{}/{len}", Ipv4Addr::from(addr as u32))
    }
}

impl Gen {
    pub fn doc(&self) -> PolicyDoc {
        let mut customers: Vec<CustomerDoc> = (0..self.customers)
            .map(|i| CustomerDoc {
                id: i + 1,
                prefixes: vec![fmt_net(false, cust4(i), 30), fmt_net(true, cust6(i), 64)],
                ..CustomerDoc::default()
            })
            .collect();
        for s in &self.sources {
            customers[s.customer as usize].sources.push(SourceDoc {
                prefix: fmt_net(s.v6, s.addr, s.len),
                action: ActionDoc::Drop,
                expires: None,
                comment: None,
            });
        }
        PolicyDoc {
            version: 1,
            customers,
            ..PolicyDoc::default()
        }
    }

    /// Flows whose sources are drawn from the policy's entries of one family (uniformly, or
    /// Zipf-distributed over a random ranking of the entries), each to its customer.
    pub fn flows(&self, v6: bool, zipf: bool, n: usize, seed: u64) -> Vec<(IpAddr, IpAddr)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut fam: Vec<&Src> = self.sources.iter().filter(|s| s.v6 == v6).collect();
        fam.shuffle(&mut rng);
        // Zipf(s = 1.0) by inverse transform over the harmonic weights.
        let weights: Vec<f64> = if zipf {
            let mut acc = 0.0;
            (0..fam.len())
                .map(|k| {
                    acc += 1.0 / (k as f64 + 1.0);
                    acc
                })
                .collect()
        } else {
            Vec::new()
        };
        (0..n)
            .map(|_| {
                let s = if zipf {
                    let x = rng.random::<f64>() * weights[weights.len() - 1];
                    fam[weights.partition_point(|w| *w < x).min(fam.len() - 1)]
                } else {
                    fam[rng.random_range(0..fam.len())]
                };
                let host = if s.v6 {
                    u128::MAX >> s.len
                } else {
                    (u32::MAX as u128) >> s.len
                };
                let src = s.addr | (rng.random::<u128>() & host);
                let (dst, dhost) = if v6 {
                    (cust6(s.customer), u64::MAX as u128)
                } else {
                    (cust4(s.customer), 3)
                };
                let dst = dst | (rng.random::<u128>() & dhost);
                if v6 {
                    (
                        IpAddr::V6(Ipv6Addr::from(src)),
                        IpAddr::V6(Ipv6Addr::from(dst)),
                    )
                } else {
                    (
                        IpAddr::V4(Ipv4Addr::from(src as u32)),
                        IpAddr::V4(Ipv4Addr::from(dst as u32)),
                    )
                }
            })
            .collect()
    }

    fn nft_ruleset(&self, dev: &str) -> String {
        let mut by: Vec<(Vec<String>, Vec<String>)> =
            vec![(Vec::new(), Vec::new()); self.customers as usize];
        for s in &self.sources {
            let e = &mut by[s.customer as usize];
            if s.v6 {
                e.1.push(fmt_net(true, s.addr, s.len));
            } else {
                e.0.push(fmt_net(false, s.addr, s.len));
            }
        }
        let mut out = String::from("table netdev mssp_bench {\n");
        for (i, (v4, v6)) in by.iter().enumerate() {
            for (fam, list) in [("ipv4_addr", v4), ("ipv6_addr", v6)] {
                let _ = writeln!(
                    out,
                    "  set s{}_{i} {{\n    type {fam}\n    flags interval\n    auto-merge\n    elements = {{ {} }}\n  }}",
                    &fam[..4],
                    list.join(",")
                );
            }
            let _ = writeln!(
                out,
                "  chain c{i} {{\n    ip saddr @sipv4_{i} drop\n    ip6 saddr @sipv6_{i} drop\n  }}"
            );
        }
        let vm4: Vec<String> = (0..self.customers)
            .map(|i| format!("{} : jump c{i}", fmt_net(false, cust4(i), 30)))
            .collect();
        let vm6: Vec<String> = (0..self.customers)
            .map(|i| format!("{} : jump c{i}", fmt_net(true, cust6(i), 64)))
            .collect();
        let _ = writeln!(
            out,
            "  map cust4 {{\n    type ipv4_addr : verdict\n    flags interval\n    elements = {{ {} }}\n  }}",
            vm4.join(",")
        );
        let _ = writeln!(
            out,
            "  map cust6 {{\n    type ipv6_addr : verdict\n    flags interval\n    elements = {{ {} }}\n  }}",
            vm6.join(",")
        );
        let _ = writeln!(
            out,
            "  chain ingress {{\n    type filter hook ingress device \"{dev}\" priority -500; policy accept;\n    counter\n    ip daddr vmap @cust4\n    ip6 daddr vmap @cust6\n  }}\n}}"
        );
        out
    }
}

fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The two namespaces and the veth pair of a run; removed on drop.
struct Net {
    a: String,
    b: String,
    if_a: String,
    if_b: String,
}

impl Net {
    fn new() -> anyhow::Result<Net> {
        let tag = std::process::id() % 100_000;
        let n = Net {
            a: format!("mssp-bench-gen-{tag}"),
            b: format!("mssp-bench-sut-{tag}"),
            if_a: format!("bg{tag}"),
            if_b: format!("bs{tag}"),
        };
        for ns in [&n.a, &n.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        }
        sh(&[
            "ip", "link", "add", &n.if_a, "netns", &n.a, "type", "veth", "peer", "name", &n.if_b,
            "netns", &n.b,
        ])?;
        sh(&[
            "ip", "netns", "exec", &n.a, "ip", "link", "set", &n.if_a, "up",
        ])?;
        sh(&[
            "ip", "netns", "exec", &n.b, "ip", "link", "set", &n.if_b, "up",
        ])?;
        Ok(n)
    }

    fn path(ns: &str) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{ns}"))
    }

    fn mac(&self, ns: &str, ifname: &str) -> anyhow::Result<[u8; 6]> {
        let s = sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "cat",
            &format!("/sys/class/net/{ifname}/address"),
        ])?;
        let mut m = [0u8; 6];
        for (i, p) in s.trim().split(':').enumerate().take(6) {
            m[i] = u8::from_str_radix(p, 16)?;
        }
        Ok(m)
    }

    /// Runs `f` with this thread in namespace `ns`.
    fn inside<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = Net::path(ns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("netns");
                // SAFETY: setns only moves this thread.
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
                f()
            })
            .join()
            .expect("netns thread")
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A variant under test.
enum Variant {
    /// An XDP program and how to count the packets it handled.
    Xdp {
        ebpf: Ebpf,
        /// Keeps the maps a publisher filled alive.
        _dp: Option<Box<Dataplane<KernelBackend>>>,
        link: Option<XdpLinkId>,
    },
    Nft,
}

impl Variant {
    fn prog_mut(&mut self) -> Option<&mut Xdp> {
        match self {
            Variant::Xdp { ebpf, .. } => ebpf
                .program_mut(prog_name(ebpf))
                .and_then(|p| p.try_into().ok()),
            Variant::Nft => None,
        }
    }

    /// Packets handled so far (without BPF statistics): the receiving veth's `rx_packets`,
    /// which counts every frame its NAPI loop took, whatever the program then did — the same
    /// measure for every variant (reading nft's own counter would make it load its whole
    /// million-element cache each time).
    fn handled(&self, net: &Net) -> anyhow::Result<u64> {
        let s = sh(&[
            "ip",
            "netns",
            "exec",
            &net.b,
            "cat",
            &format!("/sys/class/net/{}/statistics/rx_packets", net.if_b),
        ])?;
        Ok(s.trim().parse()?)
    }

    /// (run time, run count) from BPF statistics.
    fn stats(&self) -> Option<(Duration, u64)> {
        match self {
            Variant::Xdp { ebpf, .. } => {
                let p: &Xdp = ebpf.program(prog_name(ebpf))?.try_into().ok()?;
                let i = p.info().ok()?;
                Some((i.run_time(), i.run_count()))
            }
            Variant::Nft => None,
        }
    }
}

fn prog_name(ebpf: &Ebpf) -> &'static str {
    if ebpf.program(PROGRAM_NAME).is_some() {
        PROGRAM_NAME
    } else {
        "mssp_lpm"
    }
}

fn mssp_variant(
    policy_gen: Option<&Gen>,
    parse_only: bool,
    control: &mut BTreeMap<String, serde_json::Value>,
) -> anyhow::Result<Variant> {
    let mut ebpf = loader::load(&LoadOptions {
        parse_only,
        ..LoadOptions::default()
    })?;
    let backend = KernelBackend::from_ebpf(&mut ebpf)?;
    let mut dp = Dataplane::new(backend);
    if let Some(g) = policy_gen {
        let t = Instant::now();
        let doc = g.doc();
        let policy: Policy = validate(&doc, &Capacity::default())
            .map_err(|e| anyhow::anyhow!("generated policy: {e}"))?;
        let validated = t.elapsed();
        let stats = dp.apply(&Desired::from_policy(&policy), &Clock::now())?;
        if g.sources.len() >= 1_000_000 {
            control.insert("load_1m_validate_s".into(), json!(validated.as_secs_f64()));
            control.insert(
                "load_1m_publish_s".into(),
                json!(stats.elapsed.as_secs_f64()),
            );
            control.insert("load_1m_total_s".into(), json!(t.elapsed().as_secs_f64()));
            control.insert("load_1m_nodes".into(), json!(stats.nodes_written));
        }
    }
    Ok(Variant::Xdp {
        ebpf,
        _dp: Some(Box::new(dp)),
        link: None,
    })
}

fn lpm_variant(g: &Gen) -> anyhow::Result<Variant> {
    let mut ebpf = Ebpf::load(LPM_PROGRAM).context("loading the LPM baseline")?;
    let p: &mut Xdp = ebpf
        .program_mut("mssp_lpm")
        .context("mssp_lpm")?
        .try_into()?;
    p.load()?;
    let mapped = |v6: bool, a: u128| -> [u8; 16] {
        if v6 {
            a.to_be_bytes()
        } else {
            ((0xffffu128 << 32) | a).to_be_bytes()
        }
    };
    {
        let mut dst: LpmTrie<_, [u8; 16], u32> =
            LpmTrie::try_from(ebpf.map_mut("LPM_DST").context("LPM_DST")?)?;
        for i in 0..g.customers {
            dst.insert(&Key::new(96 + 30, mapped(false, cust4(i))), i + 1, 0)?;
            dst.insert(&Key::new(64, mapped(true, cust6(i))), i + 1, 0)?;
        }
    }
    let mut src: LpmTrie<_, [u8; 20], u32> =
        LpmTrie::try_from(ebpf.map_mut("LPM_SRC").context("LPM_SRC")?)?;
    for s in &g.sources {
        let mut k = [0u8; 20];
        k[..4].copy_from_slice(&(s.customer + 1).to_be_bytes());
        k[4..].copy_from_slice(&mapped(s.v6, s.addr));
        let bits = 32
            + if s.v6 {
                s.len as u32
            } else {
                96 + s.len as u32
            };
        src.insert(&Key::new(bits, k), 1, 0)?;
    }
    Ok(Variant::Xdp {
        ebpf,
        _dp: None,
        link: None,
    })
}

/// Attaches a variant to the system-under-test interface (and detaches the others).
fn attach(v: &mut Variant, net: &Net) -> anyhow::Result<()> {
    match v {
        Variant::Xdp { .. } => {
            let if_b = net.if_b.clone();
            let prog = v.prog_mut().context("program")?;
            let id = Net::inside(&net.b, move || prog.attach(&if_b, XdpMode::Driver))?;
            if let Variant::Xdp { link, .. } = v {
                *link = Some(id);
            }
        }
        Variant::Nft => {
            // Without XDP on it, a veth takes frames sent from its peer's XDP only with GRO on.
            sh(&[
                "ip", "netns", "exec", &net.b, "ethtool", "-K", &net.if_b, "gro", "on",
            ])?;
        }
    }
    Ok(())
}

fn detach(v: &mut Variant) {
    if let Variant::Xdp { ebpf, link, .. } = v
        && let Some(id) = link.take()
    {
        let name = prog_name(ebpf);
        if let Some(p) = ebpf
            .program_mut(name)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
        {
            let _ = p.detach(id);
        }
    }
}

/// One measurement: (Mpps with statistics off, ns per packet with them on).
fn measure(v: &Variant, net: &Net, g: &Generator, secs: f64) -> anyhow::Result<(f64, Option<f64>)> {
    let half = secs / 2.0;
    let total = Duration::from_secs_f64(secs + 0.6);
    let ns_a = Net::path(&net.a);
    std::thread::scope(|s| -> anyhow::Result<(f64, Option<f64>)> {
        let run = s.spawn(|| g.run(Some(&ns_a), &net.if_a, 2, total, None));
        std::thread::sleep(Duration::from_millis(300));
        let c0 = v.handled(net)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(half));
        let c1 = v.handled(net)?;
        let mpps = (c1 - c0) as f64 / t0.elapsed().as_secs_f64() / 1e6;
        let ns = match v {
            Variant::Nft => None,
            _ => {
                let fd = enable_stats(Stats::RunTime)?;
                std::thread::sleep(Duration::from_millis(50));
                let (r0, n0) = v.stats().context("program stats")?;
                std::thread::sleep(Duration::from_secs_f64(half - 0.1));
                let (r1, n1) = v.stats().context("program stats")?;
                drop(fd);
                (n1 > n0).then(|| (r1 - r0).as_nanos() as f64 / (n1 - n0) as f64)
            }
        };
        run.join()
            .map_err(|_| anyhow::anyhow!("generator panicked"))??;
        Ok((mpps, ns))
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

pub const NAMES: [&str; 5] = [
    "parse_only",
    "mssp_1k",
    "mssp_1m",
    "lpm_trie_1m",
    "nft_set_1m",
];

pub fn run(opts: &BenchOpts) -> anyhow::Result<()> {
    let rounds = opts.rounds.unwrap_or(if opts.quick { 3 } else { 5 });
    let secs = opts.secs.unwrap_or(if opts.quick { 2.0 } else { 10.0 });
    let mut mixes: Vec<(&str, bool, bool)> = if opts.quick {
        vec![
            ("ipv4_uniform", false, false),
            ("ipv6_uniform", true, false),
        ]
    } else {
        vec![
            ("ipv4_uniform", false, false),
            ("ipv4_zipf", false, true),
            ("ipv6_uniform", true, false),
            ("ipv6_zipf", true, true),
        ]
    };
    if !opts.mixes.is_empty() {
        let all = [
            ("ipv4_uniform", false, false),
            ("ipv4_zipf", false, true),
            ("ipv6_uniform", true, false),
            ("ipv6_zipf", true, true),
        ];
        mixes = all
            .into_iter()
            .filter(|m| opts.mixes.iter().any(|x| x == m.0))
            .collect();
    }
    let wanted = |name: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == name);
    let started = Instant::now();
    let mut control = BTreeMap::new();
    eprintln!(
        "bench: generating policies (1k: 100 customers x 10 sources; 1M: 10k customers x 100 sources)"
    );
    let g1k = generate(100, 10, 1);
    let g1m = generate(10_000, 100, 2);
    let net = Net::new()?;
    let src_mac = net.mac(&net.a, &net.if_a)?;
    let dst_mac = net.mac(&net.b, &net.if_b)?;

    eprintln!("bench: loading the variants");
    let mut variants: Vec<(usize, Variant)> = Vec::new();
    if wanted("parse_only") {
        variants.push((0, mssp_variant(None, true, &mut control)?));
    }
    if wanted("mssp_1k") {
        variants.push((1, mssp_variant(Some(&g1k), false, &mut control)?));
    }
    if wanted("mssp_1m") {
        variants.push((2, mssp_variant(Some(&g1m), false, &mut control)?));
    }
    if wanted("lpm_trie_1m") {
        variants.push((3, lpm_variant(&g1m)?));
    }
    if wanted("nft_set_1m") {
        let t = Instant::now();
        let rules = g1m.nft_ruleset(&net.if_b);
        let file = std::env::temp_dir().join(format!("mssp-bench-{}.nft", std::process::id()));
        std::fs::write(&file, rules)?;
        let r = sh(&[
            "ip",
            "netns",
            "exec",
            &net.b,
            "nft",
            "-f",
            file.to_str().unwrap_or_default(),
        ]);
        let _ = std::fs::remove_file(&file);
        r.context("loading the nftables ruleset")?;
        control.insert("nft_load_1m_s".into(), json!(t.elapsed().as_secs_f64()));
        variants.push((4, Variant::Nft));
    }

    let mut results: BTreeMap<String, BTreeMap<&str, (Vec<f64>, Vec<f64>)>> = BTreeMap::new();
    for (mix, v6, zipf) in &mixes {
        eprintln!("bench: traffic {mix}");
        let template = udp_template(*v6, src_mac, dst_mac, 64, 9);
        let gens = [
            Generator::new(template.clone(), &g1m.flows(*v6, *zipf, 1 << 20, 3))?,
            Generator::new(template, &g1k.flows(*v6, *zipf, 1 << 16, 4))?,
        ];
        let per = results.entry(mix.to_string()).or_default();
        for round in 0..rounds {
            for (i, v) in variants.iter_mut() {
                let i = *i;
                attach(v, &net)?;
                let g = if NAMES[i] == "mssp_1k" {
                    &gens[1]
                } else {
                    &gens[0]
                };
                let (mpps, ns) = measure(v, &net, g, secs)?;
                detach(v);
                eprintln!(
                    "  round {round} {:<12} {mpps:.3} Mpps {}",
                    NAMES[i],
                    ns.map_or("-".into(), |n| format!("{n:.0} ns/pkt"))
                );
                let e = per.entry(NAMES[i]).or_default();
                e.0.push(mpps);
                if let Some(n) = ns {
                    e.1.push(n);
                }
            }
        }
    }
    drop(variants);
    drop(net);

    if !opts.skip_control {
        eprintln!("bench: control-plane figures");
        control_plane(&g1m, &mut control).context("control-plane figures")?;
    }

    // Summary: the headline mix's figures at the top level, every mix below.
    let summarize = |per: &BTreeMap<&str, (Vec<f64>, Vec<f64>)>| {
        let mut out = serde_json::Map::new();
        for (name, (m, n)) in per {
            let (mut m, mut n) = (m.clone(), n.clone());
            let mm = median(&mut m);
            let nn = (!n.is_empty()).then(|| median(&mut n));
            out.insert(
                name.to_string(),
                json!({
                    "mpps": mm, "mpps_min": m.first(), "mpps_max": m.last(),
                    "ns_per_pkt": nn, "ns_min": n.first(), "ns_max": n.last(),
                }),
            );
        }
        serde_json::Value::Object(out)
    };
    let headline = results
        .get("ipv4_uniform")
        .map(summarize)
        .unwrap_or_else(|| json!({}));
    let f = |name: &str, k: &str| headline[name][k].as_f64().unwrap_or(f64::NAN);
    let ratios = json!({
        "mssp_1k_over_parse_only_mpps": f("mssp_1k", "mpps") / f("parse_only", "mpps"),
        "mssp_1m_over_parse_only_mpps": f("mssp_1m", "mpps") / f("parse_only", "mpps"),
        "mssp_1m_over_lpm_trie_1m_ns": f("mssp_1m", "ns_per_pkt") / f("lpm_trie_1m", "ns_per_pkt"),
        "mssp_1m_over_nft_set_1m_mpps": f("mssp_1m", "mpps") / f("nft_set_1m", "mpps"),
    });
    let targets = json!({
        "mssp_1k >= 0.8 x parse_only Mpps": ratios["mssp_1k_over_parse_only_mpps"].as_f64().unwrap_or(0.0) >= 0.8,
        "mssp_1m >= 0.5 x parse_only Mpps": ratios["mssp_1m_over_parse_only_mpps"].as_f64().unwrap_or(0.0) >= 0.5,
        "mssp_1m ns/pkt <= 1/3 lpm_trie_1m": ratios["mssp_1m_over_lpm_trie_1m_ns"].as_f64().unwrap_or(1.0) <= 1.0 / 3.0,
        "mssp_1m >= 2.5 x nft_set_1m Mpps": ratios["mssp_1m_over_nft_set_1m_mpps"].as_f64().unwrap_or(0.0) >= 2.5,
    });
    let mixes_json: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(k, v)| (k.clone(), summarize(v)))
        .collect();
    let summary = json!({
        "variants": headline,
        "headline_traffic": "ipv4_uniform",
        "traffic": mixes_json,
        "ratios": ratios,
        "targets": targets,
        "control_plane": control,
        "method": {
            "rounds": rounds, "seconds_per_measurement": secs, "quick": opts.quick,
            "generator": "BPF_PROG_TEST_RUN live frames (mssp-gen), 2 threads pinned to CPUs 0 and 1, 64-byte UDP frames into a veth pair",
            "mpps": "packets the variant handled per second, BPF statistics off",
            "ns_per_pkt": "run_time_ns / run_cnt of the XDP program over the second half of each window, BPF_ENABLE_STATS on",
        },
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    if let Some(dir) = opts.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&opts.out, serde_json::to_string_pretty(&summary)?)?;
    print_table(&summary);
    println!("summary: {}", opts.out.display());
    Ok(())
}

fn print_table(s: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    for (mix, per) in s["traffic"].as_object().into_iter().flatten() {
        let _ = writeln!(out, "\n{mix}: median (min-max)");
        let _ = writeln!(
            out,
            "  {:<12} {:>22} {:>24}",
            "variant", "Mpps", "ns/pkt (program)"
        );
        for name in NAMES {
            let v = &per[name];
            if v.is_null() {
                continue;
            }
            let ns = match v["ns_per_pkt"].as_f64() {
                Some(n) => format!(
                    "{n:.0} ({:.0}-{:.0})",
                    v["ns_min"].as_f64().unwrap_or(0.0),
                    v["ns_max"].as_f64().unwrap_or(0.0)
                ),
                None => "-".into(),
            };
            let _ = writeln!(
                out,
                "  {name:<12} {:>22} {ns:>24}",
                format!(
                    "{:.3} ({:.3}-{:.3})",
                    v["mpps"].as_f64().unwrap_or(0.0),
                    v["mpps_min"].as_f64().unwrap_or(0.0),
                    v["mpps_max"].as_f64().unwrap_or(0.0)
                )
            );
        }
    }
    let _ = writeln!(out, "\nratios (ipv4_uniform): {}", s["ratios"]);
    for (k, v) in s["targets"].as_object().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {} {k}",
            if v.as_bool() == Some(true) {
                "MET   "
            } else {
                "MISSED"
            }
        );
    }
    let _ = writeln!(out, "control plane: {}", s["control_plane"]);
}

/// A real agent with the 1M policy: restart-to-ready time and CLI block latency.
/// A lab PKI for the push figures: an edge certificate for 127.0.0.1 and a controller
/// certificate, each from its own CA. Returns (edge ca, edge cert, edge key, controller ca,
/// controller cert, controller key) paths.
pub fn lab_pki(dir: &Path) -> anyhow::Result<[PathBuf; 6]> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca = |name: &str| -> anyhow::Result<(String, Issuer<'static, KeyPair>)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = p.self_signed(&key)?;
        Ok((cert.pem(), Issuer::new(p, key)))
    };
    let leaf = |issuer: &Issuer<'static, KeyPair>,
                names: Vec<String>,
                server: bool|
     -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(names)?;
        p.distinguished_name.push(
            DnType::CommonName,
            if server { "edge" } else { "bench-controller" },
        );
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        Ok((p.signed_by(&key, issuer)?.pem(), key.serialize_pem()))
    };
    let (edge_ca, edge_issuer) = ca("bench edges CA")?;
    let (ctl_ca, ctl_issuer) = ca("bench controllers CA")?;
    let (edge_cert, edge_key) = leaf(&edge_issuer, vec!["127.0.0.1".into()], true)?;
    let (ctl_cert, ctl_key) = leaf(&ctl_issuer, Vec::new(), false)?;
    let files = [
        ("edges-ca.crt", edge_ca),
        ("edge.crt", edge_cert),
        ("edge.key", edge_key),
        ("controllers-ca.crt", ctl_ca),
        ("controller.crt", ctl_cert),
        ("controller.key", ctl_key),
    ];
    let mut out: Vec<PathBuf> = Vec::new();
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        out.push(p);
    }
    out.try_into().map_err(|_| anyhow::anyhow!("six files"))
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// The control-plane figures, with a real agent on a veth interface: a 1M-entry push through
/// the push API (end to end, as `mssp push` sees it), the agent's memory, CLI block latency
/// to enforcement, and restart-to-ready with that policy.
fn control_plane(g: &Gen, control: &mut BTreeMap<String, serde_json::Value>) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("mssp-bench-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bpffs"))?;
    let bpffs = dir.join("bpffs");
    sh(&[
        "mount",
        "-t",
        "bpf",
        "bpffs",
        bpffs.to_str().unwrap_or_default(),
    ])?;
    let net = Net::new()?;
    let result = (|| -> anyhow::Result<()> {
        let [edge_ca, edge_cert, edge_key, ctl_ca, ctl_cert, ctl_key] = lab_pki(&dir)?;
        let mut doc = g.doc();
        doc.version = 2;
        let policy = dir.join("policy-1m.json");
        std::fs::write(&policy, serde_json::to_vec(&doc)?)?;
        let size = std::fs::metadata(&policy)?.len();
        control.insert(
            "push_1m_document_mib".into(),
            json!(size as f64 / (1 << 20) as f64),
        );
        let cfg = dir.join("mssp.toml");
        let sock = dir.join("mssp.sock");
        std::fs::write(
            &cfg,
            format!(
                "interfaces = [\"{}\"]\npin_dir = {:?}\nstate_dir = {:?}\nsocket = {:?}\nmetrics_listen = \"127.0.0.1:19999\"\npush_listen = \"127.0.0.1:19443\"\ntls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\n",
                net.if_b,
                bpffs.join("mssp").display().to_string(),
                dir.join("state").display().to_string(),
                sock.display().to_string(),
                edge_cert.display().to_string(),
                edge_key.display().to_string(),
                ctl_ca.display().to_string(),
            ),
        )?;
        let start = |what: &str| -> anyhow::Result<(std::process::Child, f64)> {
            let t = Instant::now();
            let child = Command::new("ip")
                .args(["netns", "exec", &net.b])
                .arg(&exe)
                .args(["agent", "--config"])
                .arg(&cfg)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(
                    dir.join(format!("agent-{what}.log")),
                )?)
                .spawn()?;
            loop {
                if Command::new(&exe)
                    .arg("--socket")
                    .arg(&sock)
                    .args(["status", "--json"])
                    .output()?
                    .status
                    .success()
                {
                    return Ok((child, t.elapsed().as_secs_f64()));
                }
                if t.elapsed() > Duration::from_secs(300) {
                    bail!("the agent did not come up");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let (mut agent, _) = start("first")?;
        let idle = rss_mib(agent.id());
        // The push, end to end: mssp push validates, sends over mutual TLS, the agent
        // validates, applies and replies once enforced.
        let t = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", &net.b])
            .arg(&exe)
            .args(["push", "--json", "--retries", "0", "--policy"])
            .arg(&policy)
            .arg("--cert")
            .arg(&ctl_cert)
            .arg("--key")
            .arg(&ctl_key)
            .arg("--ca")
            .arg(&edge_ca)
            .arg("https://127.0.0.1:19443")
            .output()?;
        let push_s = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "the 1M push failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        control.insert("push_1m_end_to_end_s".into(), json!(push_s));
        // Enforced, not only acknowledged: real frames from the document's sources, sent
        // over the veth, are dropped by the agent's program, every one.
        let dropped = || -> anyhow::Result<u64> {
            let out = Command::new(&exe)
                .arg("--socket")
                .arg(&sock)
                .args(["stats", "--json"])
                .output()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .context("mssp stats --json did not answer JSON")?;
            Ok(v["customers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| !c["customer"].is_null())
                .map(|c| c["dropped_packets"].as_u64().unwrap_or(0))
                .sum())
        };
        let before = dropped()?;
        let probe = Generator::new(
            udp_template(
                false,
                net.mac(&net.a, &net.if_a)?,
                net.mac(&net.b, &net.if_b)?,
                64,
                9,
            ),
            &g.flows(false, false, 4096, 11),
        )?;
        let sent = probe.run(
            Some(&Net::path(&net.a)),
            &net.if_a,
            1,
            Duration::from_millis(500),
            Some(20_000),
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let drops = dropped()? - before;
        control.insert(
            "push_1m_enforced".into(),
            json!({"sent": sent.frames, "dropped": drops}),
        );
        if drops != sent.frames {
            bail!(
                "after the 1M push, {drops} of {} frames from its sources were dropped",
                sent.frames
            );
        }
        control.insert("agent_rss_idle_mib".into(), json!(idle));
        control.insert("agent_rss_1m_mib".into(), json!(rss_mib(agent.id())));
        let mut lat = Vec::new();
        for i in 0..40u32 {
            let prefix = format!("198.18.{}.{}/32", 200 + i / 250, i % 250);
            let t = Instant::now();
            let out = Command::new(&exe)
                .arg("--socket")
                .arg(&sock)
                .args(["block", "add", &prefix, "--customer", "17"])
                .output()?;
            if !out.status.success() {
                bail!("block add: {}", String::from_utf8_lossy(&out.stderr));
            }
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        control.insert(
            "cli_block_to_enforced_p50_ms".into(),
            json!(lat[lat.len() / 2]),
        );
        control.insert(
            "cli_block_to_enforced_p99_ms".into(),
            json!(lat[(lat.len() * 99 / 100).min(lat.len() - 1)]),
        );
        let _ = agent.kill();
        let _ = agent.wait();
        let (mut again, restart) = start("restart")?;
        control.insert("agent_restart_to_ready_1m_s".into(), json!(restart));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(again.id() as i32, libc::SIGTERM) };
        let _ = again.wait();
        Ok(())
    })();
    let _ = Command::new(&exe)
        .args(["unpin", "--pin-dir"])
        .arg(bpffs.join("mssp"))
        .output();
    let _ = Command::new("umount").arg(&bpffs).output();
    if result.is_err() {
        eprintln!("bench: agent logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    drop(net);
    result
}

/// Default output path, relative to the workspace the binary was built in.
pub fn default_out() -> PathBuf {
    Path::new("target/bench/summary.json").to_path_buf()
}
