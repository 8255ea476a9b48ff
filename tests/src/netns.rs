//! Network namespaces and veth pairs for end-to-end tests. Every name carries a per-test tag
//! and the process id; everything is removed on drop, so also when a test fails.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Runs a command and panics with its output if it fails.
#[track_caller]
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    pub fn new(name: &str) -> Netns {
        let name = format!("mssp-{name}");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.sh(&["ip", "link", "set", "lo", "up"]);
        // No IPv6 autoconfiguration noise unless a test asks for IPv6.
        ns.sh(&["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"]);
        ns.sh(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
        ns
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
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &str) {
    let fd = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a namespace fd only changes this thread's namespace.
    let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
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
    pub fn new(tag: &str) -> Pair {
        let u = unique(tag);
        let a = Netns::new(&format!("{u}-a"));
        let b = Netns::new(&format!("{u}-b"));
        let if_a = format!("{u}a");
        let if_b = format!("{u}b");
        assert!(if_a.len() <= 15, "interface name {if_a} too long");
        sh(&[
            "ip", "link", "add", &if_a, "netns", &a.name, "type", "veth", "peer", "name", &if_b,
            "netns", &b.name,
        ]);
        a.sh(&["ip", "link", "set", &if_a, "up"]);
        b.sh(&["ip", "link", "set", &if_b, "up"]);
        Pair { a, b, if_a, if_b }
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
    pub fn new(tag: &str) -> Bpffs {
        let dir = std::env::temp_dir().join(format!("mssp-bpffs-{}", unique(tag)));
        std::fs::create_dir_all(&dir).expect("bpffs dir");
        sh(&[
            "mount",
            "-t",
            "bpf",
            "bpffs",
            dir.to_str().expect("utf8 path"),
        ]);
        Bpffs { dir }
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
