//! One edge under attack, for the detection tests (and the fleet's): a sender namespace
//! ("the internet") and the customer's namespace behind a veth that a real `mssp agent`
//! filters; floods from the project's generator, benign traffic from real sockets, and nft
//! counting what arrives.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    agent::{AgentDirs, AgentProc, mssp, mssp_json},
    netns::Pair,
    trafgen::{Kind, Sources, Trafgen, config},
};

/// The destination MAC of flood frames: none the stack listens to, so what passes the
/// filter costs it nothing past the nft count.
pub const FLOOD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

pub struct Edge {
    pub pair: Pair,
    pub dirs: AgentDirs,
    pub agent: AgentProc,
}

fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.trim().split(':').enumerate() {
        m[i] = u8::from_str_radix(p, 16).expect("mac");
    }
    m
}

impl Edge {
    /// `senders` are addresses in the sender namespace (benign traffic comes from them);
    /// `targets` are the customer's addresses behind the filter.
    pub fn new(
        tag: &str,
        policy: &str,
        senders: &[&str],
        targets: &[&str],
        extra_config: &str,
    ) -> Edge {
        let pair = Pair::new(tag);
        pair.address(senders, targets);
        let dirs = AgentDirs::new(tag, &[&pair.if_b], Some(policy), extra_config);
        let agent = AgentProc::start(&pair.b, &dirs, &[], &[]);
        Edge { pair, dirs, agent }
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        mssp(&self.dirs.socket, args)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        mssp_json(&self.dirs.socket, args)
    }

    /// A flood of `kind` from `sources` to `dst` at `pps`, out of the sender's end, until
    /// stopped (trafgen on one CPU).
    pub fn flood(
        &self,
        kind: Kind,
        sources: &Sources,
        dst: std::net::Ipv4Addr,
        pps: u64,
    ) -> Trafgen {
        let src_mac = mac(&Pair::mac(&self.pair.a, &self.pair.if_a));
        let cfg = config(kind, sources, dst, src_mac, FLOOD_MAC);
        Trafgen::start(&self.pair.a, &self.pair.if_a, &cfg, pps)
    }

    /// Packets the data path saw for a customer so far (every verdict).
    pub fn seen(&self, customer: u32) -> u64 {
        let c = customer.to_string();
        let v = self.json(&["stats", "--customer", &c, "--json"]);
        v["customers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                x["passed_packets"].as_u64().unwrap_or(0)
                    + x["dropped_packets"].as_u64().unwrap_or(0)
            })
            .sum()
    }

    /// Attacks as `mssp attacks list --all --json` lists them.
    pub fn attacks(&self) -> Vec<serde_json::Value> {
        self.json(&["attacks", "list", "--all", "--json"])["attacks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `pred` holds for some attack, or panics with what there is.
    #[track_caller]
    pub fn wait_attack(
        &self,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let all = self.attacks();
            if let Some(a) = all.iter().find(|a| pred(a)) {
                return a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no such attack within {within:?}: {}\n{}",
                serde_json::to_string_pretty(&all).unwrap_or_default(),
                self.agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The customer's rules of the auto layer (`mssp rule list`).
    pub fn auto_rules(&self, customer: u32) -> Vec<serde_json::Value> {
        let c = customer.to_string();
        self.json(&["rule", "list", "--customer", &c, "--json"])
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["layer"] == "auto")
            .cloned()
            .collect()
    }

    /// The customer's source entries of the auto layer (`mssp block list`).
    pub fn auto_blocks(&self, customer: u32) -> Vec<serde_json::Value> {
        let c = customer.to_string();
        self.json(&["block", "list", "--customer", &c, "--json"])
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["layer"] == "auto")
            .cloned()
            .collect()
    }
}

/// Real UDP datagrams from `src` to `dst` at `pps` until stopped, and a socket in the
/// customer's namespace timing each arrival.
pub struct Benign {
    stop: Arc<AtomicBool>,
    sender: JoinHandle<u64>,
    sink: JoinHandle<Vec<f64>>,
    pub started: Instant,
}

impl Benign {
    pub fn start(edge: &Edge, src: SocketAddr, dst: SocketAddr, pps: u64) -> Benign {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let s2 = stop.clone();
        let sink = edge.pair.b.spawn(move || {
            let sock = UdpSocket::bind(dst).unwrap_or_else(|e| panic!("bind {dst}: {e}"));
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut times = Vec::new();
            let mut buf = [0u8; 2048];
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((_, from)) if from == src => times.push(started.elapsed().as_secs_f64()),
                    Ok(_) => {}
                    Err(_) if s2.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            times
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("sink ready");
        let s3 = stop.clone();
        let gap = Duration::from_secs_f64(1.0 / pps as f64);
        let sender = edge.pair.a.spawn(move || {
            let sock = UdpSocket::bind(src).unwrap_or_else(|e| panic!("bind {src}: {e}"));
            let t0 = Instant::now();
            let mut n = 0u64;
            while !s3.load(Ordering::Relaxed) {
                let _ = sock.send_to(&n.to_be_bytes(), dst);
                n += 1;
                if let Some(w) = (gap * n as u32).checked_sub(t0.elapsed()) {
                    std::thread::sleep(w);
                }
            }
            n
        });
        Benign {
            stop,
            sender,
            sink,
            started,
        }
    }

    /// (sent, arrival times in seconds since the start).
    pub fn finish(self) -> (u64, Vec<f64>) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.join().expect("benign sender");
        std::thread::sleep(Duration::from_millis(200));
        let times = self.sink.join().expect("benign sink");
        (sent, times)
    }
}

/// Arrivals per whole second from `from` to `to` (seconds since the start).
pub fn per_second(times: &[f64], from: f64, to: f64) -> Vec<usize> {
    let mut buckets: HashMap<u64, usize> = HashMap::new();
    for t in times {
        if *t >= from && *t < to {
            *buckets.entry((*t - from) as u64).or_default() += 1;
        }
    }
    (0..((to - from).round() as u64))
        .map(|s| buckets.get(&s).copied().unwrap_or(0))
        .collect()
}
