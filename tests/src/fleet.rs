//! The fleet's lab: a broker namespace running Debian's `nats-server` with JetStream and
//! `mssp controller`, and a management veth from each edge's namespace to it (no route
//! anywhere else). Everything is stopped by pid and removed on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    agent::mssp_json,
    mssp_bin,
    netns::{Netns, unique},
};

/// The broker's address on edge `k`'s management link: 198.19.254.(4k+1)/30.
pub fn broker_addr(k: u8) -> String {
    format!("198.19.254.{}", 4 * k + 1)
}

pub struct Broker {
    pub ns: Netns,
    pub dir: PathBuf,
    pub port: u16,
    nats: Option<Child>,
    controller: Option<Child>,
    pub socket: PathBuf,
    /// The broker's side of each edge's management link, by edge index.
    pub links: Vec<String>,
    /// No users or permissions (the bench's thousands of simulated edges).
    open: bool,
    /// The broker's CA, when it speaks TLS (`tls://` for everyone).
    pub tls_ca: Option<PathBuf>,
    tls_files: Option<(PathBuf, PathBuf)>,
}

fn kill(c: &mut Option<Child>) {
    if let Some(mut c) = c.take() {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        kill(&mut self.controller);
        kill(&mut self.nats);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Broker {
    /// nats-server with JetStream in a fresh namespace, and a controller key pair.
    pub fn start(tag: &str) -> Broker {
        Self::start_with(tag, false)
    }

    /// A broker with JetStream and no authorization at all.
    pub fn start_open(tag: &str) -> Broker {
        Self::start_with(tag, true)
    }

    /// The shipped config with TLS on: a lab CA, a server certificate for the broker's
    /// addresses; every client verifies it.
    pub fn start_tls(tag: &str) -> Broker {
        let mut b = Self::start_with(tag, false);
        b.stop_nats();
        let ca = mssp_bench::pki::Ca::new("mssp lab NATS CA");
        let ca_path = b.dir.join("nats-ca.crt");
        std::fs::write(&ca_path, &ca.cert_pem).unwrap();
        let names: Vec<String> = std::iter::once("127.0.0.1".to_string())
            .chain((0..3u8).map(broker_addr))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let id =
            mssp_bench::pki::write_identity(&b.dir, "nats-server", ca.issue("nats", &names, true));
        b.tls_ca = Some(ca_path);
        b.tls_files = Some((id.cert, id.key));
        b.start_nats();
        b
    }

    fn scheme(&self) -> &'static str {
        if self.tls_ca.is_some() { "tls" } else { "nats" }
    }

    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(|c| c.id())
    }

    fn start_with(tag: &str, open: bool) -> Broker {
        let ns = Netns::new(&format!("{tag}brk"));
        let dir = std::env::temp_dir().join(format!("mssp-fleet-{}", unique(tag)));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new(mssp_bin())
            .args(["fleet", "keygen", "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut b = Broker {
            ns,
            socket: dir.join("controller.sock"),
            dir,
            port: 4222,
            nats: None,
            controller: None,
            links: Vec::new(),
            open,
            tls_ca: None,
            tls_files: None,
        };
        b.start_nats();
        b
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("controller.pub")
    }

    /// The shipped `dist/nats-server.conf` (one user per edge, permissions), with this
    /// broker's port, store and test passwords ("pw-USER").
    fn conf(&self) -> PathBuf {
        if self.open {
            let path = self.dir.join("nats-server.conf");
            std::fs::write(
                &path,
                format!(
                    "port: {}\nmax_connections: 65536\njetstream {{\n  store_dir: {:?}\n}}\n",
                    self.port,
                    self.dir.join("js")
                ),
            )
            .unwrap();
            return path;
        }
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/nats-server.conf"),
        )
        .expect("dist/nats-server.conf");
        let text = text
            .replace("port: 4222", &format!("port: {}", self.port))
            .replace("\"/var/lib/nats\"", &format!("{:?}", self.dir.join("js")))
            .replace("CHANGE-ME-", "pw-");
        let text = match &self.tls_files {
            Some((cert, key)) => {
                format!("{text}\ntls {{\n  cert_file: {cert:?}\n  key_file: {key:?}\n}}\n")
            }
            None => text,
        };
        let path = self.dir.join("nats-server.conf");
        std::fs::write(&path, text).unwrap();
        for u in ["controller", "edge1", "edge2", "edge3"] {
            std::fs::write(self.dir.join(format!("{u}.password")), format!("pw-{u}\n")).unwrap();
        }
        path
    }

    pub fn start_nats(&mut self) {
        let conf = self.conf();
        let log = std::fs::File::create(self.dir.join("nats.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "nats-server", "-c"])
            .arg(&conf)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("nats-server (Debian package nats-server; `cargo xtask setup` installs it)");
        self.nats = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(self.dir.join("nats.log"))
            .unwrap_or_default()
            .contains("Server is ready")
        {
            assert!(
                Instant::now() < deadline,
                "nats-server not ready: {}",
                self.nats_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop_nats(&mut self) {
        kill(&mut self.nats);
    }

    pub fn nats_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }

    /// `mssp controller` in the broker's namespace, waiting until its socket answers.
    pub fn start_controller(&mut self, extra: &str) {
        let cfg = self.dir.join("controller.toml");
        std::fs::write(
            &cfg,
            format!(
                "nats_url = \"{}://127.0.0.1:{}\"\n{}{}signing_key = {:?}\nsocket = {:?}\n{extra}\n",
                self.scheme(),
                self.port,
                self.tls_ca.as_ref().map_or(String::new(), |c| format!("tls_ca = {c:?}\n")),
                if self.open {
                    String::new()
                } else {
                    format!("user = \"controller\"\npassword_file = {:?}\n", self.dir.join("controller.password"))
                },
                self.dir.join("controller.key"),
                self.socket
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.join(format!("controller-{}.log", unique("c"))))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(mssp_bin())
            .args(["controller", "--config"])
            .arg(&cfg)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("mssp controller");
        self.controller = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new(mssp_bin())
                .arg("--controller-socket")
                .arg(&self.socket)
                .args(["fleet", "status", "--json"])
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "controller not ready: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.controller_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn controller_log(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("controller-") {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    pub fn stop_controller(&mut self) {
        kill(&mut self.controller);
    }

    /// `mssp fleet ARGS` on the controller's socket.
    pub fn fleet(&self, args: &[&str]) -> std::process::Output {
        Command::new(mssp_bin())
            .arg("--controller-socket")
            .arg(&self.socket)
            .arg("fleet")
            .args(args)
            .output()
            .unwrap()
    }

    pub fn fleet_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.fleet(args);
        assert!(
            out.status.success(),
            "mssp fleet {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    /// A management veth from `edge_ns` to the broker: edge side 198.19.254.(4k+2)/30.
    pub fn link(&mut self, edge_ns: &Netns, k: u8) -> String {
        let name = format!("m{}", unique("l"));
        crate::netns::sh(&[
            "ip",
            "link",
            "add",
            &name,
            "netns",
            &self.ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}e"),
            "netns",
            &edge_ns.name,
        ]);
        self.ns.sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", broker_addr(k)),
            "dev",
            &name,
        ]);
        self.ns.sh(&["ip", "link", "set", &name, "up"]);
        edge_ns.sh(&[
            "ip",
            "addr",
            "add",
            &format!("198.19.254.{}/30", 4 * k + 2),
            "dev",
            &format!("{name}e"),
        ]);
        edge_ns.sh(&["ip", "link", "set", &format!("{name}e"), "up"]);
        self.links.push(name.clone());
        name
    }

    /// The `[fleet]` section of edge `k`'s agent config: edge `edge{k+1}`, its own NATS user.
    pub fn edge_config(&self, k: u8) -> String {
        let edge = format!("edge{}", k + 1);
        format!(
            "[fleet]\nnats_url = \"{}://{}:{}\"\nedge = \"{edge}\"\nuser = \"{edge}\"\npassword_file = {:?}\ncontroller_key = {:?}\nheartbeat_secs = 1\n{}",
            self.scheme(),
            broker_addr(k),
            self.port,
            self.dir.join(format!("{edge}.password")),
            self.key(),
            self.tls_ca
                .as_ref()
                .map_or(String::new(), |c| format!("tls_ca = {c:?}\n"))
        )
    }
}

/// Waits until `f` holds, or panics with `what` after `within`.
pub fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

pub fn status(b: &Broker) -> serde_json::Value {
    b.fleet_json(&["status", "--json"])
}

pub fn rules_of(socket: &std::path::Path, customer: u32) -> Vec<serde_json::Value> {
    mssp_json(
        socket,
        &[
            "rule",
            "list",
            "--customer",
            &customer.to_string(),
            "--json",
        ],
    )
    .as_array()
    .cloned()
    .unwrap_or_default()
}
