//! A fleet of edge agents for the push API tests: one "router" namespace with three veth
//! interfaces (each to an upstream namespace), one agent per interface, each with its own
//! pins, state and push endpoint; plus a bare HTTPS client that can misbehave on purpose.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};

use crate::{
    agent::{AgentDirs, AgentProc},
    mssp_bin,
    netns::{Netns, sh, unique},
    pki::{Identity, Pki},
    traffic::{UdpSink, udp_send},
};

/// Where traffic is checked: from upstream 0 to the customer behind interface 0.
pub const CUSTOMER_ADDR: &str = "198.19.7.1";
pub const DST: &str = "198.19.7.1:5001";
pub const SOURCES: [&str; 3] = ["198.18.66.10", "198.18.67.10", "198.18.1.10"];

pub struct Fleet {
    pub router: Netns,
    pub ups: Vec<Netns>,
    pub ifs: Vec<String>,
    pub pki: Pki,
    pub dirs: Vec<AgentDirs>,
    pub agents: Vec<Option<AgentProc>>,
    pub ports: Vec<u16>,
    pub work: PathBuf,
}

impl Fleet {
    /// Three agents with `policy` as their initial central policy and `extra` appended to
    /// each config (after the push keys).
    pub fn new(tag: &str, policy: &str, extra: &str) -> Fleet {
        let u = unique(tag);
        let work = std::env::temp_dir().join(format!("mssp-push-{u}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).expect("work dir");
        let pki = Pki::new(&work.join("pki"));
        let router = Netns::new(&format!("{u}-r"));
        let mut ups = Vec::new();
        let mut ifs = Vec::new();
        for i in 0..3 {
            let up = Netns::new(&format!("{u}-u{i}"));
            let (ia, ib) = (format!("{u}u{i}"), format!("{u}r{i}"));
            assert!(ib.len() <= 15, "interface name {ib} too long");
            sh(&[
                "ip",
                "link",
                "add",
                &ia,
                "netns",
                &up.name,
                "type",
                "veth",
                "peer",
                "name",
                &ib,
                "netns",
                &router.name,
            ]);
            up.sh(&["ip", "link", "set", &ia, "up"]);
            router.sh(&["ip", "link", "set", &ib, "up"]);
            if i == 0 {
                address(&up, &ia, &router, &ib);
            }
            ups.push(up);
            ifs.push(ib);
        }
        let ports: Vec<u16> = (0..3).map(|i| 9443 + i).collect();
        let mut dirs = Vec::new();
        let mut agents = Vec::new();
        for i in 0..3 {
            let d = AgentDirs::new(
                &format!("{tag}{i}"),
                &[&ifs[i]],
                Some(policy),
                &pki.agent_config(ports[i], extra),
            );
            agents.push(Some(AgentProc::start(&router, &d, &[], &[])));
            dirs.push(d);
        }
        Fleet {
            router,
            ups,
            ifs,
            pki,
            dirs,
            agents,
            ports,
            work,
        }
    }

    pub fn url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.ports[i])
    }

    pub fn urls(&self) -> Vec<String> {
        (0..3).map(|i| self.url(i)).collect()
    }

    /// Writes a policy document into the work directory.
    pub fn policy_file(&self, name: &str, json: &str) -> PathBuf {
        let p = self.work.join(name);
        std::fs::write(&p, json).expect("policy file");
        p
    }

    /// `mssp push --json` from inside the router namespace, as the given identity.
    pub fn push(
        &self,
        policy: &Path,
        who: &Identity,
        urls: &[String],
        extra: &[&str],
    ) -> (ExitStatus, serde_json::Value, String) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.router.name])
            .arg(mssp_bin())
            .arg("push")
            .arg("--policy")
            .arg(policy)
            .arg("--cert")
            .arg(&who.cert)
            .arg("--key")
            .arg(&who.key)
            .arg("--ca")
            .arg(&self.pki.edge_ca)
            .arg("--json")
            .args(extra)
            .args(urls)
            .stdin(Stdio::null());
        let out = cmd.output().expect("run mssp push");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status, v, stderr)
    }

    /// A request with the bare client, from inside the router namespace.
    pub fn request(
        &self,
        i: usize,
        who: Option<&Identity>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, serde_json::Value), String> {
        let cfg = client_config(&self.pki.edge_ca, who);
        let (port, method, path, body) = (
            self.ports[i],
            method.to_string(),
            path.to_string(),
            body.to_vec(),
        );
        self.router
            .run(move || https(cfg, port, &method, &path, &body, Duration::from_secs(30)))
    }

    /// `GET /v1/policy` of agent `i` as the controller.
    pub fn policy(&self, i: usize) -> serde_json::Value {
        let (status, v) = self
            .request(i, Some(&self.pki.controller), "GET", "/v1/policy", b"")
            .unwrap_or_else(|e| panic!("GET /v1/policy of agent {i}: {e}"));
        assert_eq!(status, 200, "GET /v1/policy: {v}");
        v
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut a) = self.agents[i].take() {
            a.kill9();
        }
    }

    pub fn stop(&mut self, i: usize) {
        if let Some(mut a) = self.agents[i].take() {
            a.stop();
        }
    }

    pub fn start(&mut self, i: usize) {
        assert!(self.agents[i].is_none(), "agent {i} is running");
        self.agents[i] = Some(AgentProc::start(&self.router, &self.dirs[i], &[], &[]));
    }

    pub fn log(&self, i: usize) -> String {
        self.agents[i]
            .as_ref()
            .map(|a| a.log_text())
            .unwrap_or_default()
    }

    /// Sends `n` datagrams from `src` (one of [`SOURCES`]) through interface 0 and returns
    /// how many reached the customer.
    pub fn probe(&self, src: &str, n: u64) -> u64 {
        let sink = UdpSink::start(&self.router, DST.parse().unwrap());
        udp_send(
            &self.ups[0],
            format!("{src}:7100").parse().unwrap(),
            DST.parse().unwrap(),
            n,
            Duration::from_micros(300),
        );
        let got = sink.finish(Duration::from_millis(200));
        got.get(&src.parse().unwrap()).copied().unwrap_or(0)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(mut a) = a.take() {
                a.kill9();
            }
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Addresses, routes and static neighbours between upstream 0 and the router.
fn address(up: &Netns, ia: &str, router: &Netns, ib: &str) {
    let mac = |ns: &Netns, i: &str| {
        ns.sh(&["cat", &format!("/sys/class/net/{i}/address")])
            .trim()
            .to_string()
    };
    let (mac_a, mac_b) = (mac(up, ia), mac(router, ib));
    for s in SOURCES {
        up.sh(&["ip", "addr", "add", &format!("{s}/32"), "dev", ia]);
        router.sh(&["ip", "route", "add", s, "dev", ib]);
        router.sh(&[
            "ip",
            "neigh",
            "replace",
            s,
            "lladdr",
            &mac_a,
            "dev",
            ib,
            "nud",
            "permanent",
        ]);
    }
    router.sh(&[
        "ip",
        "addr",
        "add",
        &format!("{CUSTOMER_ADDR}/32"),
        "dev",
        ib,
    ]);
    up.sh(&["ip", "route", "add", CUSTOMER_ADDR, "dev", ia]);
    up.sh(&[
        "ip",
        "neigh",
        "replace",
        CUSTOMER_ADDR,
        "lladdr",
        &mac_b,
        "dev",
        ia,
        "nud",
        "permanent",
    ]);
}

/// A client trusting `ca`, presenting `who` (or no certificate at all).
pub fn client_config(ca: &Path, who: Option<&Identity>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(c.expect("ca cert")).expect("add ca");
    }
    let b = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let cfg = match who {
        Some(id) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&id.cert)
                .expect("cert file")
                .map(|c| c.expect("cert"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(&id.key).expect("key");
            b.with_client_auth_cert(chain, key).expect("client auth")
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// Connects to 127.0.0.1:`port` and completes the TLS handshake.
pub fn connect(
    cfg: Arc<ClientConfig>,
    port: u16,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(timeout)).unwrap();
    tcp.set_write_timeout(Some(timeout)).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = ClientConnection::new(cfg, name).map_err(|e| format!("tls: {e}"))?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    Ok(s)
}

/// One HTTP/1.1 request over TLS; the status and the JSON reply.
pub fn https(
    cfg: Arc<ClientConfig>,
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, serde_json::Value), String> {
    let mut s = connect(cfg, port, timeout)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let sent = s
        .write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .and_then(|_| s.flush());
    // A server may answer before the body is all sent (a 413) and close: its answer, if it
    // arrived, is what counts.
    match (sent, read_response(&mut s)) {
        (_, Ok(r)) => Ok(r),
        (Err(e), Err(_)) => Err(format!("sending: {e}")),
        (Ok(()), Err(e)) => Err(e),
    }
}

/// Reads a whole `Connection: close` response.
pub fn read_response(s: &mut impl Read) -> Result<(u16, serde_json::Value), String> {
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // rustls reports a peer that closes without close_notify; what arrived still counts.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(format!("reading the reply: {e}")),
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP reply: {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let v = serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_string()));
    Ok((status, v))
}

/// `sha256:<hex>` of a document, as the agent reports it.
pub fn digest(bytes: &[u8]) -> String {
    mssp_core::policy::document_digest(bytes)
}
