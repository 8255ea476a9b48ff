//! Lab topologies for the tests, the benchmarks and the demo: network namespaces, veth
//! pairs and private bpffs mounts. Every name carries a tag and the process id; everything
//! is removed on drop, so also when a test fails. Test traffic only ever uses 198.18.0.0/15
//! and 2001:db8::/32 inside these namespaces, with no route out.
//!
//! Functions that can fail come in two forms: `try_*` returning the error (the bench and the
//! demo report it), and a panicking one for tests.
//!
//! [`trafgen`] drives floods from Debian's trafgen (netsniff-ng).

pub mod trafgen;

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Runs a command; its stdout, or what it printed when it failed.
pub fn try_sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command and panics with its output if it fails.
#[track_caller]
pub fn sh(args: &[&str]) -> String {
    try_sh(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a command inside a namespace.
#[track_caller]
pub fn ns_sh(ns: &str, args: &[&str]) -> String {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    sh(&v)
}

/// A unique short tag for names (interface names are limited to 15 bytes).
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}{n}", std::process::id() % 100_000)
}

/// A network namespace, deleted (with its interfaces) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `mssp-NAME`, created afresh (a stale one of that name is removed first).
    pub fn try_new(name: &str) -> Result<Netns, String> {
        let name = format!("mssp-{name}");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        try_sh(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.try_sh(&["ip", "link", "set", "lo", "up"])?;
        // No IPv6 duplicate address detection delaying a test's addresses.
        ns.try_sh(&["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"])?;
        ns.try_sh(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])?;
        Ok(ns)
    }

    #[track_caller]
    pub fn new(name: &str) -> Netns {
        Netns::try_new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_sh(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["ip", "netns", "exec", self.name.as_str()];
        v.extend_from_slice(args);
        try_sh(&v)
    }

    #[track_caller]
    pub fn sh(&self, args: &[&str]) -> String {
        ns_sh(&self.name, args)
    }

    /// Runs `f` on a thread that has entered this namespace (sockets, attach calls).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Starts `f` on a thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Runs `f`, which may borrow from the caller, on a thread inside this namespace.
    pub fn scoped<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                try_enter(&path)?;
                Ok(f())
            })
            .join()
            .map_err(|_| format!("the thread in {path} panicked"))?
        })
    }

    /// The MAC address of an interface in this namespace.
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6], String> {
        let s = self.try_sh(&["cat", &format!("/sys/class/net/{ifname}/address")])?;
        let mut m = [0u8; 6];
        let parts: Vec<&str> = s.trim().split(':').collect();
        if parts.len() != 6 {
            return Err(format!("{ifname}: {s:?} is not a MAC address"));
        }
        for (i, p) in parts.iter().enumerate() {
            m[i] = u8::from_str_radix(p, 16).map_err(|e| format!("{ifname}: {s:?}: {e}"))?;
        }
        Ok(m)
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn try_enter(path: &str) -> Result<(), String> {
    let fd = File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    // SAFETY: setns on a namespace fd only changes this thread's namespace.
    let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// [`try_enter`], panicking on failure (tests).
#[track_caller]
pub fn enter(path: &str) {
    try_enter(path).unwrap_or_else(|e| panic!("{e}"));
}

impl Netns {
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces joined by a veth pair: `a` (the traffic source, "the internet") and `b`
/// (behind the filtered interface, "the customer").
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
    pub if_a: String,
    pub if_b: String,
}

impl Pair {
    pub fn try_new(tag: &str) -> Result<Pair, String> {
        let u = unique(tag);
        let a = Netns::try_new(&format!("{u}-a"))?;
        let b = Netns::try_new(&format!("{u}-b"))?;
        let if_a = format!("{u}a");
        let if_b = format!("{u}b");
        if if_a.len() > 15 {
            return Err(format!("interface name {if_a} too long (15 bytes at most)"));
        }
        try_sh(&[
            "ip", "link", "add", &if_a, "netns", &a.name, "type", "veth", "peer", "name", &if_b,
            "netns", &b.name,
        ])?;
        a.try_sh(&["ip", "link", "set", &if_a, "up"])?;
        b.try_sh(&["ip", "link", "set", &if_b, "up"])?;
        Ok(Pair { a, b, if_a, if_b })
    }

    #[track_caller]
    pub fn new(tag: &str) -> Pair {
        Pair::try_new(tag).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn mac(ns: &Netns, ifname: &str) -> String {
        let out = ns.sh(&["cat", &format!("/sys/class/net/{ifname}/address")]);
        out.trim().to_string()
    }

    /// Addresses on both ends, routes for the other side's addresses, and static neighbours
    /// so no ARP/ND crosses the filter during a measurement.
    pub fn address(&self, a_addrs: &[&str], b_addrs: &[&str]) {
        let mac_a = Self::mac(&self.a, &self.if_a);
        let mac_b = Self::mac(&self.b, &self.if_b);
        for (ns, ifname, mine, theirs, their_mac) in [
            (&self.a, &self.if_a, a_addrs, b_addrs, &mac_b),
            (&self.b, &self.if_b, b_addrs, a_addrs, &mac_a),
        ] {
            for m in mine {
                let plen = if m.contains(':') { "/128" } else { "/32" };
                let extra: &[&str] = if m.contains(':') { &["nodad"] } else { &[] };
                let mut args = vec!["ip", "addr", "add"];
                let cidr = format!("{m}{plen}");
                args.push(&cidr);
                args.extend(["dev", ifname.as_str()]);
                args.extend(extra);
                ns.sh(&args);
            }
            for t in theirs {
                ns.sh(&["ip", "route", "add", t, "dev", ifname]);
                ns.sh(&[
                    "ip",
                    "neigh",
                    "replace",
                    t,
                    "lladdr",
                    their_mac,
                    "dev",
                    ifname,
                    "nud",
                    "permanent",
                ]);
            }
        }
    }
}

/// A private bpffs (`ip netns exec` hides /sys/fs/bpf), unmounted on drop.
pub struct Bpffs {
    pub dir: std::path::PathBuf,
}

impl Bpffs {
    pub fn try_new(tag: &str) -> Result<Bpffs, String> {
        let dir = std::env::temp_dir().join(format!("mssp-bpffs-{}", unique(tag)));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.to_str().ok_or("temp dir is not UTF-8")?.to_string();
        let b = Bpffs { dir };
        try_sh(&["mount", "-t", "bpf", "bpffs", &path])?;
        Ok(b)
    }

    #[track_caller]
    pub fn new(tag: &str) -> Bpffs {
        Bpffs::try_new(tag).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
