//! Running `mssp agent` as a real process inside a test namespace, with its pins on a private
//! bpffs mounted in the host's mount namespace (so they outlive the agent, as on a router).

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{
    mssp_bin,
    netns::{Bpffs, Netns, unique},
};

/// Files and directories of one agent under test.
pub struct AgentDirs {
    pub root: PathBuf,
    pub bpffs: Bpffs,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub metrics_port: u16,
}

impl AgentDirs {
    /// A config filtering `ifaces`, with `policy` as the initial central policy.
    pub fn new(tag: &str, ifaces: &[&str], policy: Option<&str>, extra: &str) -> AgentDirs {
        let root = std::env::temp_dir().join(format!("mssp-agent-{}", unique(tag)));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("agent dir");
        let bpffs = Bpffs::new(tag);
        let socket = root.join("mssp.sock");
        let state = root.join("state");
        let metrics_port = 20000 + (std::process::id() % 20000) as u16 + rand_port_offset();
        let policy_line = match policy {
            Some(p) => {
                let path = root.join("policy.json");
                std::fs::write(&path, p).expect("policy file");
                format!("policy = {:?}\n", path.display().to_string())
            }
            None => String::new(),
        };
        let ifaces: Vec<String> = ifaces.iter().map(|i| format!("{i:?}")).collect();
        let config = root.join("mssp.toml");
        std::fs::write(
            &config,
            format!(
                "interfaces = [{}]\npin_dir = {:?}\nstate_dir = {:?}\nsocket = {:?}\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n{policy_line}{extra}\n",
                ifaces.join(", "),
                bpffs.dir.join("mssp").display().to_string(),
                state.display().to_string(),
                socket.display().to_string(),
            ),
        )
        .expect("config");
        AgentDirs {
            root,
            bpffs,
            config,
            socket,
            state,
            metrics_port,
        }
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.dir.join("mssp")
    }
}

fn rand_port_offset() -> u16 {
    static N: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    N.fetch_add(7, std::sync::atomic::Ordering::Relaxed)
}

impl Drop for AgentDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A running agent process; killed on drop.
pub struct AgentProc {
    pub child: Child,
    pub log: PathBuf,
}

impl AgentProc {
    /// Starts `mssp agent` in `ns` (prefixed by `wrapper`, e.g. setpriv) and waits until its
    /// socket answers.
    pub fn start(ns: &Netns, dirs: &AgentDirs, args: &[&str], wrapper: &[&str]) -> AgentProc {
        let p = Self::spawn(ns, dirs, args, wrapper);
        p.wait_ready(dirs)
    }

    pub fn spawn(ns: &Netns, dirs: &AgentDirs, args: &[&str], wrapper: &[&str]) -> AgentProc {
        Self::spawn_env(ns, dirs, args, wrapper, &[])
    }

    pub fn spawn_env(
        ns: &Netns,
        dirs: &AgentDirs,
        args: &[&str],
        wrapper: &[&str],
        env: &[(&str, String)],
    ) -> AgentProc {
        let log = dirs.root.join(format!("agent-{}.log", unique("l")));
        let logf = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]);
        cmd.args(wrapper);
        cmd.arg(mssp_bin())
            .arg("agent")
            .arg("--config")
            .arg(&dirs.config)
            .args(args);
        cmd.stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn agent");
        AgentProc { child, log }
    }

    pub fn wait_ready(mut self, dirs: &AgentDirs) -> AgentProc {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited early ({status}):\n{}", self.log_text());
            }
            if mssp(&dirs.socket, &["status", "--json"]).status.success() {
                return self;
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready after 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGHUP (`systemctl reload`).
    pub fn hup(&self) {
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGHUP);
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().expect("wait agent")
    }

    /// Waits for the process to exit by itself (bounded).
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "agent still running:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `mssp` CLI against a socket.
pub fn mssp(socket: &Path, args: &[&str]) -> Output {
    Command::new(mssp_bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mssp")
}

/// Runs the CLI, asserts success and returns stdout parsed as JSON.
#[track_caller]
pub fn mssp_json(socket: &Path, args: &[&str]) -> serde_json::Value {
    let out = mssp(socket, args);
    assert!(
        out.status.success(),
        "mssp {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mssp {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// GET /metrics from inside the agent's namespace.
pub fn scrape(ns: &Netns, port: u16) -> String {
    ns.run(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

/// `ip -d -j link show` of an interface: the number of XDP programs and their ids.
pub fn xdp_attachments(ns: &Netns, ifname: &str) -> (Option<String>, Vec<u64>) {
    let out = ns.sh(&["ip", "-d", "-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    let xdp = &v[0]["xdp"];
    if xdp.is_null() {
        return (None, Vec::new());
    }
    let mode = match xdp["mode"].as_u64() {
        Some(1) => "native",
        Some(2) => "skb",
        Some(3) => "hw",
        Some(4) => "multi",
        _ => "?",
    };
    // iproute2 lists every attachment under "attached"; older versions only "prog".
    let mut ids = Vec::new();
    if let Some(attached) = xdp["attached"].as_array() {
        for a in attached {
            if let Some(id) = a["prog"]["id"].as_u64() {
                ids.push(id);
            }
        }
    } else if let Some(id) = xdp["prog"]["id"].as_u64() {
        ids.push(id);
    }
    (Some(mode.to_string()), ids)
}
