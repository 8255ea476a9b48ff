//! The project's traffic generator: `mssp-gen` run through BPF_PROG_TEST_RUN in live-frames
//! mode, one thread per CPU, sending a template frame out of one end of a veth pair with each
//! frame's addresses taken in turn from a flow table.

use std::{
    fs::File,
    net::IpAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::Array,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use mssp_bench_ebpf::{self as generator, Flow, Flow4, GenConfig, MAX_FLOWS};

/// The generator object built from `mssp-ebpf` (bin `mssp-gen`).
pub static GEN_PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mssp-gen"));

/// A UDP frame whose addresses the generator fills in.
#[derive(Clone, Debug)]
pub struct Template {
    pub frame: Vec<u8>,
    pub v6: bool,
    pub src_off: u32,
    pub dst_off: u32,
}

/// A UDP frame of `len` bytes (at least the headers) from `src_mac` to `dst_mac`.
pub fn udp_template(
    v6: bool,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    len: usize,
    dport: u16,
) -> Template {
    l4_template(
        v6,
        src_mac,
        dst_mac,
        len,
        L4::Udp {
            sport: 40000,
            dport,
        },
    )
}

/// The transport header of a template.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Udp {
        sport: u16,
        dport: u16,
    },
    /// A TCP segment with these flags (0x02: a SYN).
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    /// An ICMP (ICMPv6 for IPv6) echo request.
    Echo,
}

/// A frame of `len` bytes (at least the headers) carrying `l4`. Checksums are left zero:
/// the filter does not read them (the receiving stack drops such frames after counting).
pub fn l4_template(v6: bool, src_mac: [u8; 6], dst_mac: [u8; 6], len: usize, l4: L4) -> Template {
    let (proto, l4_hdr) = match l4 {
        L4::Udp { .. } => (17u8, 8usize),
        L4::Tcp { .. } => (6, 20),
        L4::Echo => (if v6 { 58 } else { 1 }, 8),
    };
    let hdr = 14 + if v6 { 40 } else { 20 } + l4_hdr;
    let len = len.max(hdr);
    let mut f = Vec::with_capacity(len);
    f.extend(dst_mac);
    f.extend(src_mac);
    let l4_len = (len - hdr + l4_hdr) as u16;
    if v6 {
        f.extend(0x86ddu16.to_be_bytes());
        f.extend([0x60, 0, 0, 0]);
        f.extend(l4_len.to_be_bytes());
        f.extend([proto, 64]);
        f.extend([0u8; 32]);
    } else {
        f.extend(0x0800u16.to_be_bytes());
        f.extend([0x45, 0]);
        f.extend((l4_len + 20).to_be_bytes());
        f.extend([0, 0, 0, 0, 64, proto, 0, 0]);
        f.extend([0u8; 8]);
    }
    match l4 {
        L4::Udp { sport, dport } => {
            f.extend(sport.to_be_bytes());
            f.extend(dport.to_be_bytes());
            f.extend(l4_len.to_be_bytes());
            f.extend([0, 0]);
        }
        L4::Tcp {
            sport,
            dport,
            flags,
        } => {
            f.extend(sport.to_be_bytes());
            f.extend(dport.to_be_bytes());
            f.extend(1u32.to_be_bytes());
            f.extend(0u32.to_be_bytes());
            f.extend([0x50, flags]);
            f.extend(64240u16.to_be_bytes());
            f.extend([0, 0, 0, 0]);
        }
        L4::Echo => {
            f.extend([if v6 { 128 } else { 8 }, 0, 0, 0]);
            f.extend(0x4d53u16.to_be_bytes());
            f.extend(1u16.to_be_bytes());
        }
    }
    f.resize(len, 0x5a);
    Template {
        frame: f,
        v6,
        src_off: if v6 { 22 } else { 26 },
        dst_off: if v6 { 38 } else { 30 },
    }
}

fn bytes16(a: IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v) => b[..4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => b.copy_from_slice(&v.octets()),
    }
    b
}

pub struct Generator {
    ebpf: Ebpf,
    template: Template,
    /// Set by [`Generator::hold_dispatcher`].
    held: Option<XdpLinkId>,
}

/// What a run sent.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub frames: u64,
    pub elapsed: Duration,
}

impl Generator {
    /// Loads the generator with a flow table (sent in this order, round-robin).
    pub fn new(template: Template, flows: &[(IpAddr, IpAddr)]) -> anyhow::Result<Generator> {
        if flows.is_empty() || flows.len() > MAX_FLOWS as usize {
            bail!(
                "the flow table holds 1 to {MAX_FLOWS} flows, not {}",
                flows.len()
            );
        }
        let mut ebpf = Ebpf::load(GEN_PROGRAM).context("loading the generator")?;
        let prog: &mut Xdp = ebpf
            .program_mut("mssp_gen")
            .context("no mssp_gen")?
            .try_into()?;
        prog.load().context("verifying the generator")?;
        {
            let mut cfg: Array<_, GenConfig> =
                Array::try_from(ebpf.map_mut(generator::CONFIG).context("no config map")?)?;
            cfg.set(
                0,
                GenConfig {
                    n_flows: flows.len() as u32,
                    v6: template.v6 as u32,
                    src_off: template.src_off,
                    dst_off: template.dst_off,
                },
                0,
            )?;
        }
        let fd = |name: &str| -> anyhow::Result<std::os::fd::OwnedFd> {
            match ebpf.map(name).with_context(|| format!("no map {name}"))? {
                aya::maps::Map::Array(d) => Ok(d.fd().as_fd_owned()?),
                _ => bail!("map {name} of an unexpected type"),
            }
        };
        if template.v6 {
            let table: Vec<Flow> = flows
                .iter()
                .map(|(s, d)| Flow {
                    src: bytes16(*s),
                    dst: bytes16(*d),
                })
                .collect();
            let f = fd(generator::FLOWS)?;
            mssp_core::dataplane::sys::array_update_batch(std::os::fd::AsFd::as_fd(&f), 0, &table)
                .context("filling the flow table")?;
        } else {
            let table: Vec<Flow4> = flows
                .iter()
                .map(|(s, d)| {
                    let mut f = [0u8; 8];
                    f[..4].copy_from_slice(&bytes16(*s)[..4]);
                    f[4..].copy_from_slice(&bytes16(*d)[..4]);
                    f
                })
                .collect();
            let f = fd(generator::FLOWS4)?;
            mssp_core::dataplane::sys::array_update_batch(std::os::fd::AsFd::as_fd(&f), 0, &table)
                .context("filling the flow table")?;
        }
        Ok(Generator {
            ebpf,
            template,
            held: None,
        })
    }

    /// Keeps the generator in the kernel's XDP dispatcher by attaching it (generic mode) to an
    /// interface of its own in `ns`, down, where no frame ever arrives. Each test run adds
    /// its program to the dispatcher and takes it out again — two RCU grace periods per call
    /// — unless something else holds it there: one thread alone sending batches of 256 then
    /// managed ~10k frames a second, blocked in `synchronize_rcu`. The interface goes with
    /// the namespace.
    pub fn hold_dispatcher(&mut self, ns: &mssp_lab::Netns) -> anyhow::Result<()> {
        if self.held.is_some() {
            return Ok(());
        }
        // A veth pair of its own, left down (this kernel has no dummy driver).
        let dev = mssp_lab::unique("gd");
        let peer = format!("{dev}p");
        ns.try_sh(&[
            "ip", "link", "add", &dev, "type", "veth", "peer", "name", &peer,
        ])
        .map_err(anyhow::Error::msg)?;
        let prog: &mut Xdp = self
            .ebpf
            .program_mut("mssp_gen")
            .context("no mssp_gen")?
            .try_into()?;
        let id = ns
            .scoped(|| prog.attach(&dev, XdpMode::Skb))
            .map_err(anyhow::Error::msg)?
            .with_context(|| format!("attaching the generator to {dev}"))?;
        self.held = Some(id);
        Ok(())
    }

    /// Sends from `threads` threads (thread i pinned to CPU i), inside the network namespace at
    /// `netns` if given, out of `ifname`, for `duration`, in total at most `pps` frames a
    /// second if given (paced per thread in batches).
    pub fn run(
        &self,
        netns: Option<&Path>,
        ifname: &str,
        threads: usize,
        duration: Duration,
        pps: Option<u64>,
    ) -> anyhow::Result<Sent> {
        let prog: &Xdp = self
            .ebpf
            .program("mssp_gen")
            .context("no mssp_gen")?
            .try_into()?;
        let sent = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        let started = Instant::now();
        let errors: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|cpu| {
                    let (sent, failed, frame) = (&sent, &failed, &self.template.frame);
                    let netns: Option<PathBuf> = netns.map(Path::to_path_buf);
                    s.spawn(move || -> anyhow::Result<()> {
                        if let Some(ns) = &netns {
                            let f =
                                File::open(ns).with_context(|| format!("open {}", ns.display()))?;
                            // SAFETY: setns only moves this thread.
                            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                                bail!(
                                    "setns {}: {}",
                                    ns.display(),
                                    std::io::Error::last_os_error()
                                );
                            }
                        }
                        pin_to_cpu(cpu);
                        let ifindex = ifindex(ifname)?;
                        let ctx = xdp_md(frame.len() as u32, ifindex);
                        let per_thread = pps.map(|p| p as f64 / threads as f64);
                        // One unpaced thread (the bench's pinned method): large batches.
                        // Each test run sets up and tears down a page pool of its own; with
                        // batches of 256, one thread offered 0.1-0.8 Mpps and its rate fell
                        // over a long run, with 65,536 it offers ~5 Mpps.
                        let batch: u32 = match per_thread {
                            Some(r) if r < 2_000.0 => 1,
                            Some(r) if r < 200_000.0 => 16,
                            None if threads == 1 => 65_536,
                            _ => 256,
                        };
                        let t0 = Instant::now();
                        let mut mine = 0u64;
                        while t0.elapsed() < duration && !failed.load(Ordering::Relaxed) {
                            if let Some(r) = per_thread {
                                let due = Duration::from_secs_f64(mine as f64 / r);
                                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                                    std::thread::sleep(
                                        wait.min(duration.saturating_sub(t0.elapsed())),
                                    );
                                    if t0.elapsed() >= duration {
                                        break;
                                    }
                                }
                            }
                            let r = prog.test_run(TestRunOptions {
                                data_in: Some(frame),
                                ctx_in: Some(&ctx),
                                repeat: batch,
                                attrs: TestRunAttrs::new().xdp_live_frames(64),
                                ..TestRunOptions::default()
                            });
                            if let Err(e) = r {
                                failed.store(true, Ordering::Relaxed);
                                bail!("live-frames test run on {ifname}: {e}");
                            }
                            mine += batch as u64;
                        }
                        sent.fetch_add(mine, Ordering::Relaxed);
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("generator thread panicked")))
                })
                .collect()
        });
        for e in errors {
            e?;
        }
        Ok(Sent {
            frames: sent.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        })
    }
}

/// `struct xdp_md` for a live-frames run: the whole frame as data, received on `ifindex`.
fn xdp_md(len: u32, ifindex: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    for w in [0u32, len, 0, ifindex, 0, 0] {
        v.extend(w.to_ne_bytes());
    }
    v
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: reads a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("interface {name} not found in this namespace");
    }
    Ok(i)
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

trait OwnedFdExt {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl OwnedFdExt for aya::maps::MapFd {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        std::os::fd::AsFd::as_fd(self).try_clone_to_owned()
    }
}
