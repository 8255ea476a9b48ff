//! Floods from trafgen (Debian's netsniff-ng): real frames through the sender's veth at a
//! paced rate from one CPU, with spoofed or listed IPv4 sources.

use std::{
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// UDP from `sport` to `dport`, frames of `len` bytes.
    Udp { sport: u16, dport: u16, len: usize },
    /// TCP SYNs to `dport` from random ports.
    Syn { dport: u16 },
    /// ICMP echo requests, frames of `len` bytes.
    Echo { len: usize },
}

#[derive(Clone, Debug)]
pub enum Sources {
    /// 198.18.x.y, x and y random per packet (65,536 sources).
    Spoofed,
    /// These, in turn.
    List(Vec<Ipv4Addr>),
}

fn bytes(v: &[u8]) -> String {
    v.iter()
        .map(|b| format!("{b:#04x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A trafgen configuration: one packet definition per listed source (sent in turn), or
/// one with a random source.
pub fn config(
    kind: Kind,
    sources: &Sources,
    dst: Ipv4Addr,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
) -> String {
    let srcs: Vec<String> = match sources {
        Sources::Spoofed => vec!["198, 18, drnd(2)".into()],
        Sources::List(l) => l.iter().map(|a| bytes(&a.octets())).collect(),
    };
    let d = bytes(&dst.octets());
    let mut out = String::new();
    for s in srcs {
        let (proto, l4, total) = match kind {
            Kind::Udp { sport, dport, len } => {
                let l4_len = len - 14 - 20;
                (
                    17,
                    format!(
                        "const16({sport}), const16({dport}), const16({l4_len}), const16(0), fill(0x5a, {})",
                        l4_len - 8
                    ),
                    len - 14,
                )
            }
            Kind::Syn { dport } => (
                6,
                format!(
                    "drnd(2), const16({dport}), drnd(4), const32(0), 0x50, 0x02, const16(64240), const16(0), const16(0)"
                ),
                40,
            ),
            Kind::Echo { len } => (
                1,
                format!(
                    "0x08, 0x00, const16(0), drnd(2), drnd(2), fill(0x5a, {})",
                    len - 14 - 20 - 8
                ),
                len - 14,
            ),
        };
        out.push_str(&format!(
            "{{\n  {}, {}, 0x08, 0x00,\n  0x45, 0x00, const16({total}), drnd(2), 0x00, 0x00, 64, {proto}, csumip(14, 33),\n  {s}, {d},\n  {l4}\n}}\n",
            bytes(&dst_mac),
            bytes(&src_mac)
        ));
    }
    out
}

/// A trafgen process; killed on drop.
pub struct Trafgen {
    child: Child,
    pub started: Instant,
    pub pps: u64,
    cfg: std::path::PathBuf,
}

impl Trafgen {
    /// Starts sending `cfg` out of `dev` in namespace `ns` at `pps` until stopped.
    pub fn try_start(ns: &str, dev: &str, cfg: &str, pps: u64) -> Result<Trafgen, String> {
        let path = std::env::temp_dir().join(format!("mssp-trafgen-{}.cfg", crate::unique("t")));
        std::fs::write(&path, cfg).map_err(|e| format!("writing {}: {e}", path.display()))?;
        use std::os::unix::process::CommandExt;
        // Its own process group: trafgen forks a worker per CPU, and stopping means all.
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "trafgen", "--dev", dev, "--conf"])
            .arg(&path)
            .args(["--rate", &format!("{pps}pps"), "--cpus", "1", "--no-sock-mem", "--notouch-irq", "--no-cpu-stats"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting trafgen (Debian package netsniff-ng; `cargo xtask setup` installs it): {e}"))?;
        Ok(Trafgen {
            child,
            started: Instant::now(),
            pps,
            cfg: path,
        })
    }

    /// [`Trafgen::try_start`] for tests: panics with the reason.
    pub fn start(ns: &crate::Netns, dev: &str, cfg: &str, pps: u64) -> Trafgen {
        Trafgen::try_start(&ns.name, dev, cfg, pps).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stops it; returns how long it ran.
    pub fn stop(mut self) -> Duration {
        let ran = self.started.elapsed();
        // SAFETY: the process group of our own child (trafgen and its workers).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGINT) };
        let _ = self.child.wait();
        ran
    }
}

impl Drop for Trafgen {
    fn drop(&mut self) {
        // SAFETY: the process group of our own child.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.cfg);
    }
}
