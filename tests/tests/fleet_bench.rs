//! The fleet at scale, for `cargo xtask bench` (ignored in `cargo xtask test`): one
//! decision from `mssp fleet block add` to 1,000 and then 10,000 edges. The edges are
//! protocol-level simulators — the agent's own fleet client (`mssp_fleet::edge::run`: follow
//! the decisions stream, verify the signature, ack) with no data plane behind it — all in
//! this process; the real agents are in `tests/fleet.rs`. Reports time to 99% and 100% of
//! acks (acks as the broker delivers them to a subscriber here), and the controller's CPU
//! time and memory. Writes target/bench/fleet.json.

use std::{
    collections::HashSet,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use mssp_fleet::edge::{Applier, EdgeConfig, EdgeStats};
use mssp_tests::{fleet::Broker, require_root};

struct Null;
impl Applier for Null {
    fn apply(&self, _: &mssp_wire::fleet::Decision) -> Result<(), String> {
        Ok(())
    }
}

fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

#[test]
#[ignore = "a benchmark: cargo xtask bench runs it"]
fn one_decision_to_thousands_of_edges() {
    require_root();
    let lim = libc::rlimit {
        rlim_cur: 65_536,
        rlim_max: 65_536,
    };
    // SAFETY: setrlimit with a valid struct (the broker inherits it).
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    let sizes: Vec<usize> = std::env::var("MSSP_BENCH_FLEET_EDGES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 10_000]);
    let mut b = Broker::start_open("flbench");
    b.start_controller("");
    let controller = b.controller_pid().expect("controller pid");
    let key = mssp_fleet::sign::load_public(&b.key()).unwrap();
    let port = b.port;
    let mut results = Vec::new();
    let mut started = 0usize;
    let rt = Arc::new(b.ns.run(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut all_stats: Vec<Arc<EdgeStats>> = Vec::new();
    for &n in &sizes {
        // More simulators, joined to the ones already running.
        let t_join = Instant::now();
        let (rt2, key2, stop2) = (rt.clone(), key, stop_rx.clone());
        let stats: Vec<Arc<EdgeStats>> = b.ns.run(move || {
            (started..n)
                .map(|i| {
                    let st = Arc::new(EdgeStats::default());
                    let cfg = EdgeConfig {
                        nats_url: format!("nats://127.0.0.1:{port}"),
                        edge: format!("sim{i}"),
                        controller_key: key2.clone(),
                        credentials: None,
                        user: None,
                        password: None,
                        tls_ca: None,
                        tls_cert: None,
                        tls_key: None,
                        heartbeat: Duration::from_secs(30),
                    };
                    let (_tx, rx) = tokio::sync::mpsc::channel(1);
                    let (s2, stop) = (st.clone(), stop2.clone());
                    rt2.spawn(async move {
                        let _keep = _tx;
                        let _ = mssp_fleet::edge::run(cfg, Arc::new(Null), s2, rx, stop).await;
                    });
                    st
                })
                .collect()
        });
        all_stats.extend(stats);
        started = n;
        let deadline = Instant::now() + Duration::from_secs(120);
        while all_stats
            .iter()
            .filter(|s| s.connected.load(Ordering::Relaxed))
            .count()
            < n
        {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} simulators following",
                all_stats
                    .iter()
                    .filter(|s| s.connected.load(Ordering::Relaxed))
                    .count()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let joined = t_join.elapsed().as_secs_f64();
        // A subscriber for the acks, then the decision.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, Instant)>();
        let sub = {
            let rt3 = rt.clone();
            b.ns.run(move || {
                rt3.block_on(async move {
                    let c = async_nats::connect(format!("nats://127.0.0.1:{port}"))
                        .await
                        .unwrap();
                    let mut s = c.subscribe("mssp.fleet.ack.>").await.unwrap();
                    c.flush().await.unwrap();
                    rt_spawn_keep(c);
                    tokio::spawn(async move {
                        while let Some(m) = s.next().await {
                            let mut parts = m.subject.as_str().rsplitn(2, '.');
                            let id = parts.next().unwrap_or("").to_string();
                            let edge = parts
                                .next()
                                .unwrap_or("")
                                .rsplit('.')
                                .next()
                                .unwrap_or("")
                                .to_string();
                            let _ = tx.send((edge, id, Instant::now()));
                        }
                    })
                })
            })
        };
        let cpu0 = cpu_s(controller);
        let t0 = Instant::now();
        let d = b.fleet_json(&[
            "block",
            "add",
            "198.18.90.0/24",
            "--global",
            "--ttl",
            "10m",
            "--json",
        ]);
        let id = d["id"].as_str().unwrap().to_string();
        let mut times = Vec::new();
        let mut seen = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < n && Instant::now() < deadline {
            match rx.try_recv() {
                Ok((edge, aid, at)) => {
                    if aid == id && seen.insert(edge) {
                        times.push((at - t0).as_secs_f64());
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        sub.abort();
        // The controller reads the acks too: let it finish before its CPU time is taken.
        std::thread::sleep(Duration::from_secs(1));
        times.sort_by(f64::total_cmp);
        let p = |q: f64| {
            times
                .get(((q * n as f64).ceil() as usize).saturating_sub(1))
                .copied()
        };
        let r = serde_json::json!({
            "edges": n,
            "kind": "protocol-level simulators (mssp_fleet::edge::run, no data plane)",
            "joined_s": joined,
            "acked": times.len(),
            "to_99pct_s": p(0.99),
            "to_100pct_s": if times.len() == n { times.last().copied() } else { None },
            "controller_cpu_s": cpu_s(controller) - cpu0,
            "controller_rss_mib": rss_mib(controller),
        });
        println!("{}", serde_json::to_string(&r).unwrap());
        results.push(r);
        // Withdrawn before the next size.
        let _ = b.fleet(&["block", "del", &id]);
        std::thread::sleep(Duration::from_secs(2));
    }
    let _ = stop_tx.send(true);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/fleet.json");
    let _ = std::fs::create_dir_all(out.parent().unwrap());
    std::fs::write(&out, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    for r in &results {
        assert_eq!(r["acked"], r["edges"], "every edge acked: {r}");
    }
}

fn rt_spawn_keep(c: async_nats::Client) {
    // The subscriber's client lives as long as the runtime.
    std::mem::forget(c);
}
