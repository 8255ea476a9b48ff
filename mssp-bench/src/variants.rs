//! The benchmark's variants: mssp (loaded over a generated policy, or as the parse-only
//! floor), the LPM-trie baseline and nftables; attaching one to the system-under-test veth,
//! and measuring it.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{LpmTrie, lpm_trie::Key},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
    sys::{Stats, enable_stats},
};
use mssp_core::{
    dataplane::{Clock, Dataplane, Desired, kernel::KernelBackend},
    loader::{self, LoadOptions, PROGRAM_NAME},
    policy::{Capacity, Policy, validate},
};
use mssp_lab::Pair;
use serde_json::json;

use crate::{
    policy_gen::{Gen, cust4, cust6},
    traffic::Generator,
};

/// The LPM baseline's object (bin `mssp-lpm`).
pub static LPM_PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mssp-lpm"));

/// A variant under test.
pub enum Variant {
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
    fn handled(&self, net: &Pair) -> anyhow::Result<u64> {
        let s = net
            .b
            .try_sh(&[
                "cat",
                &format!("/sys/class/net/{}/statistics/rx_packets", net.if_b),
            ])
            .map_err(anyhow::Error::msg)?;
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

/// mssp loaded with `opts`, over `policy_gen`'s policy if given (published into its maps;
/// none for a variant that shares another's policy maps).
pub fn mssp_variant(
    policy_gen: Option<&Gen>,
    opts: &LoadOptions,
    control: &mut BTreeMap<String, serde_json::Value>,
) -> anyhow::Result<Variant> {
    let mut ebpf = loader::load(opts)?;
    if opts.share_policy_maps.is_some() {
        return Ok(Variant::Xdp {
            ebpf,
            _dp: None,
            link: None,
        });
    }
    let backend = KernelBackend::from_ebpf(&mut ebpf)?;
    let mut dp = Dataplane::new(backend);
    if let Some(g) = policy_gen {
        let t = Instant::now();
        let doc = g.doc();
        let policy: Policy = validate(&doc, &Capacity::default())
            .map_err(|e| anyhow::anyhow!("generated policy: {e}"))?;
        let validated = t.elapsed();
        let stats = dp.apply(&Desired::from_policy(&policy), &Clock::now())?;
        if g.entries() >= 1_000_000 {
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

pub fn lpm_variant(g: &Gen) -> anyhow::Result<Variant> {
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

/// How throughput is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Throughput {
    /// One generator thread on CPU 0; the receiving veth's NAPI threaded, its kthread pinned
    /// to CPU 1, so the program under test runs alone on CPU 1 and the generator's work does
    /// not share its caches.
    Pinned,
    /// Generator threads on both CPUs; NAPI runs in softirq on whichever CPU sent.
    Shared,
}

impl Throughput {
    pub fn describe(self) -> &'static str {
        match self {
            Throughput::Pinned => {
                "pinned: one generator thread on CPU 0; the receiving veth's threaded NAPI kthread (and so the program) pinned to CPU 1"
            }
            Throughput::Shared => {
                "shared: generator threads on CPUs 0 and 1; the program runs in softirq on the sending CPU"
            }
        }
    }

    fn generator_threads(self) -> usize {
        match self {
            Throughput::Pinned => 1,
            Throughput::Shared => 2,
        }
    }
}

/// The CPU the receiving side runs on in the pinned method.
pub const RX_CPU: usize = 1;

/// Makes the receiving veth's NAPI threaded and pins its kthread to [`RX_CPU`]. Attaching or
/// detaching XDP recreates the NAPI instance (and its kthread), so this runs after each attach.
fn pin_napi(net: &Pair) -> anyhow::Result<Vec<i32>> {
    net.b
        .try_sh(&[
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{}/threaded", net.if_b),
        ])
        .map_err(anyhow::Error::msg)
        .context("enabling threaded NAPI on the receiving veth")?;
    // The kthread is "napi/<dev>-<id>", its name cut to 15 bytes.
    let want = format!("napi/{}-", net.if_b);
    let want = &want[..want.len().min(15)];
    let t0 = Instant::now();
    loop {
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.trim_end().starts_with(want) {
                // SAFETY: a zeroed cpu_set_t with one bit set, for that thread.
                let rc = unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(RX_CPU, &mut set);
                    libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set)
                };
                if rc != 0 {
                    anyhow::bail!(
                        "pinning NAPI thread {pid} to CPU {RX_CPU}: {}",
                        std::io::Error::last_os_error()
                    );
                }
                found.push(pid);
            }
        }
        if !found.is_empty() {
            return Ok(found);
        }
        if t0.elapsed() > Duration::from_secs(2) {
            anyhow::bail!("no NAPI kthread named {want}* for {}", net.if_b);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Attaches a variant to the system-under-test interface (and detaches the others); returns
/// the receiving NAPI kthreads in the pinned method.
pub fn attach(v: &mut Variant, net: &Pair, method: Throughput) -> anyhow::Result<Vec<i32>> {
    match v {
        Variant::Xdp { .. } => {
            let if_b = net.if_b.clone();
            let prog = v.prog_mut().context("program")?;
            let id = net
                .b
                .scoped(move || prog.attach(&if_b, XdpMode::Driver))
                .map_err(anyhow::Error::msg)??;
            if let Variant::Xdp { link, .. } = v {
                *link = Some(id);
            }
        }
        Variant::Nft => {
            // Without XDP on it, a veth takes frames sent from its peer's XDP only with GRO on.
            net.b
                .try_sh(&["ethtool", "-K", &net.if_b, "gro", "on"])
                .map_err(anyhow::Error::msg)?;
        }
    }
    if method == Throughput::Pinned {
        return pin_napi(net);
    }
    Ok(Vec::new())
}

/// Nanoseconds the threads have run on a CPU (`/proc/PID/schedstat`, first field).
fn cpu_ns(pids: &[i32]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for pid in pids {
        let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .with_context(|| format!("NAPI thread {pid}"))?;
        sum += s
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .context("schedstat")?;
    }
    Ok(sum)
}

/// One measurement.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Pinned: packets per second of the receiving CPU's busy time (what one core running
    /// the receive path and the program sustains; the generator's pace does not enter).
    /// Shared: packets per wall-clock second.
    pub mpps: f64,
    /// Packets per wall-clock second.
    pub mpps_wall: f64,
    /// Pinned: the fraction of the window the receiving CPU was busy.
    pub busy: Option<f64>,
    /// Program time per packet, BPF statistics on (none for nftables).
    pub ns: Option<f64>,
}

pub fn detach(v: &mut Variant) {
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

/// One measurement: Mpps with statistics off (first half), ns per packet with them on
/// (second half). `napi`: the receiving kthreads (pinned method).
pub fn measure(
    v: &Variant,
    net: &Pair,
    g: &Generator,
    secs: f64,
    method: Throughput,
    napi: &[i32],
) -> anyhow::Result<Measured> {
    let half = secs / 2.0;
    let total = Duration::from_secs_f64(secs + 0.6);
    let ns_a = std::path::PathBuf::from(net.a.path());
    std::thread::scope(|s| -> anyhow::Result<Measured> {
        let run = s.spawn(|| {
            g.run(
                Some(&ns_a),
                &net.if_a,
                method.generator_threads(),
                total,
                None,
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        let c0 = v.handled(net)?;
        let b0 = cpu_ns(napi)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(half));
        let c1 = v.handled(net)?;
        let b1 = cpu_ns(napi)?;
        let wall = t0.elapsed().as_secs_f64();
        let mpps_wall = (c1 - c0) as f64 / wall / 1e6;
        let (mpps, busy) = if method == Throughput::Pinned && b1 > b0 {
            let busy_s = (b1 - b0) as f64 / 1e9;
            ((c1 - c0) as f64 / busy_s / 1e6, Some(busy_s / wall))
        } else {
            (mpps_wall, None)
        };
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
        Ok(Measured {
            mpps,
            mpps_wall,
            busy,
            ns,
        })
    })
}
