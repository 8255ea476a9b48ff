//! The fleet end to end: Debian's nats-server with JetStream and `mssp controller` in a
//! broker namespace, three real agents on veths (each with a management link to the
//! broker), real frames from trafgen, nft counting what is delivered.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use mssp_tests::{
    edge::Edge,
    fleet::{Broker, rules_of, status, wait_for},
    nft::Counters,
    require_root,
    trafgen::{Kind, Sources},
};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const TARGET: &str = "198.19.7.9";

fn policy(detection: &str) -> String {
    format!(
        r#"{{"version":1,"infrastructure":["198.19.250.0/24"],
        "customers":[{{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],"detection":{detection}}}]}}"#
    )
}

/// Three edges joined to the broker.
fn fleet(tag: &str, b: &mut Broker, detection: &str) -> Vec<Edge> {
    (0..3u8)
        .map(|k| {
            let e = Edge::new(
                &format!("{tag}{k}"),
                &policy(detection),
                &["198.18.200.1"],
                &[TARGET],
                &b.edge_config(k),
            );
            b.link(&e.pair.b, k);
            e
        })
        .collect()
}

fn connected(b: &Broker, n: usize) -> bool {
    status(b)["edges"]
        .as_array()
        .is_some_and(|e| e.iter().filter(|e| e["connected"] == true).count() >= n)
}

/// Frames from `src` to the target for a second: (delivered per nft, seen by the data path).
fn probe(e: &Edge, nft: &Counters, src: Ipv4Addr) -> (u64, u64) {
    let (d0, s0) = (nft.get("probe"), e.seen(7));
    let f = e.flood(
        Kind::Udp {
            sport: 4000,
            dport: 9,
            len: 200,
        },
        &Sources::List(vec![src]),
        TARGET.parse().unwrap(),
        1000,
    );
    std::thread::sleep(Duration::from_secs(1));
    f.stop();
    std::thread::sleep(Duration::from_millis(200));
    (nft.get("probe") - d0, e.seen(7) - s0)
}

#[test]
fn a_fleet_block_is_enforced_and_acknowledged_on_every_edge() {
    require_root();
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Over TLS: the broker's certificate from a lab CA, every client verifying it.
    let mut b = Broker::start_tls("flb");
    b.start_controller("");
    let edges = fleet("flb", &mut b, r#"{"mode":"off"}"#);
    wait_for(Duration::from_secs(20), "3 edges connected", || {
        connected(&b, 3)
    });
    let nfts: Vec<Counters> = edges
        .iter()
        .map(|e| {
            Counters::new(
                &e.pair.b,
                &e.pair.if_b,
                &[("probe", "udp dport 9 ip saddr 198.18.66.10")],
            )
        })
        .collect();
    for (e, n) in edges.iter().zip(&nfts) {
        let (delivered, seen) = probe(e, n, Ipv4Addr::new(198, 18, 66, 10));
        assert!(
            seen >= 500 && delivered >= seen * 9 / 10,
            "before the block: {delivered} of {seen} delivered"
        );
    }
    assert!(
        b.nats_log().contains("TLS required for client connections"),
        "{}",
        b.nats_log()
    );
    let t0 = Instant::now();
    let d = b.fleet_json(&[
        "block",
        "add",
        "198.18.66.0/24",
        "--customer",
        "7",
        "--ttl",
        "10m",
        "--comment",
        "test",
        "--json",
    ]);
    let id = d["id"].as_str().unwrap().to_string();
    let acked = wait_for(Duration::from_secs(2), "3/3 acks", || {
        status(&b)["decisions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["id"] == id.as_str() && x["acked"] == 3)
    });
    println!(
        "fleet block {id}: 3/3 acks {:.2} s after the CLI returned ({:.2} s from its start)",
        acked.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    let st = status(&b);
    let dv = st["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(dv["edges"], 3, "{st:#}");
    assert!(dv["missing"].as_array().unwrap().is_empty(), "{st:#}");
    for (e, n) in edges.iter().zip(&nfts) {
        let (delivered, seen) = probe(e, n, Ipv4Addr::new(198, 18, 66, 10));
        assert!(
            seen >= 500 && delivered == 0,
            "after the block: {delivered} of {seen} delivered"
        );
        let blocks = e.json(&["block", "list", "--customer", "7", "--json"]);
        assert!(
            blocks.to_string().contains("fleet"),
            "the block list shows the fleet layer: {blocks}"
        );
    }
    // Withdrawn: traffic flows again everywhere.
    let out = b.fleet(&["block", "del", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (e, n) in edges.iter().zip(&nfts) {
        wait_for(Duration::from_secs(3), "withdrawn", || {
            !e.json(&["block", "list", "--customer", "7", "--json"])
                .to_string()
                .contains("fleet")
        });
        let (delivered, seen) = probe(e, n, Ipv4Addr::new(198, 18, 66, 10));
        assert!(
            delivered >= seen * 9 / 10,
            "after the withdrawal: {delivered} of {seen} delivered"
        );
    }
}

/// A decision signed by another key, published with valid NATS access, is refused by every
/// edge and changes nothing; a controller restart loses no decision.
#[test]
fn a_forged_decision_is_refused_and_a_controller_restart_loses_nothing() {
    require_root();
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = Broker::start("flf");
    b.start_controller("");
    let edges = fleet("flf", &mut b, r#"{"mode":"off"}"#);
    wait_for(Duration::from_secs(20), "3 edges connected", || {
        connected(&b, 3)
    });
    let real = b.fleet_json(&[
        "block",
        "add",
        "198.18.77.0/24",
        "--customer",
        "7",
        "--json",
    ]);
    wait_for(Duration::from_secs(3), "3/3 acks", || {
        status(&b)["decisions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["id"] == real["id"] && x["acked"] == 3)
    });
    // The forger: valid NATS access, another key.
    let port = b.port;
    b.ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            // An edge's NATS user may not publish decisions at all (the broker refuses).
            let e = async_nats::ConnectOptions::with_user_and_password(
                "edge1".into(),
                "pw-edge1".into(),
            )
            .connect(format!("nats://127.0.0.1:{port}"))
            .await
            .unwrap();
            let _ = e.publish("mssp.fleet.decision.fb-edge", "{}".into()).await;
            let _ = e.flush().await;
            // The controller's NATS credentials (a compromised broker or account), another key.
            let c = async_nats::ConnectOptions::with_user_and_password(
                "controller".into(),
                "pw-controller".into(),
            )
            .connect(format!("nats://127.0.0.1:{port}"))
            .await
            .unwrap();
            let js = async_nats::jetstream::new(c);
            let forger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
            let now = time::OffsetDateTime::now_utc();
            let d = mssp_wire::fleet::Decision {
                id: "fb-forged".into(),
                version: 1000,
                customer: Some(7),
                item: mssp_wire::fleet::DecisionItem::Source {
                    prefix: "198.18.200.0/24".into(),
                    action: "drop".into(),
                },
                created: now,
                expires: now + time::Duration::hours(1),
                removed: false,
                reason: "forged".into(),
                comment: None,
            };
            let signed = mssp_fleet::sign::sign(&forger, &d);
            js.publish(
                "mssp.fleet.decision.fb-forged",
                serde_json::to_vec(&signed).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
            // Unsigned, too.
            js.publish(
                "mssp.fleet.decision.fb-unsigned",
                serde_json::to_vec(&d).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        });
    });
    std::thread::sleep(Duration::from_secs(2));
    for e in &edges {
        let blocks = e
            .json(&["block", "list", "--customer", "7", "--json"])
            .to_string();
        assert!(
            !blocks.contains("198.18.200.0/24"),
            "a forged decision was applied: {blocks}"
        );
        assert!(
            blocks.contains("198.18.77.0/24"),
            "the real one is in force: {blocks}"
        );
        let s = e.json(&["status", "--json"]);
        assert_eq!(s["fleet"]["bad_signature"], 2, "{s:#}");
        assert_eq!(s["fleet"]["connected"], true, "{s:#}");
        let log = e.agent.log_text();
        assert_eq!(
            log.matches("refused the message on mssp.fleet.decision.")
                .count(),
            2,
            "{log}"
        );
    }
    let nats = b.nats_log();
    assert!(
        nats.contains(
            "Publish Violation - User \"edge1\", Subject \"mssp.fleet.decision.fb-edge\""
        ),
        "{nats}"
    );
    // A controller restart: the decision and its acks are still known.
    b.stop_controller();
    b.start_controller("");
    let st = status(&b);
    let dv = st["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == real["id"])
        .cloned();
    assert!(
        dv.as_ref().is_some_and(|d| d["acked"] == 3),
        "after a controller restart: {st:#}"
    );
    assert!(!st.to_string().contains("fb-forged"), "{st:#}");
}

/// A flood through 2 of the 3 edges: their reports make the controller publish a fleet
/// decision, and the third edge drops the flood it never saw within 5 s of the first
/// detection.
#[test]
fn an_attack_seen_at_two_edges_is_blocked_at_the_third() {
    require_root();
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = Broker::start("flc");
    b.start_controller("[correlation]\nedges = 2\nwindow_secs = 30\n");
    let edges = fleet(
        "flc",
        &mut b,
        r#"{"mode":"mitigate","thresholds":{"udp_pps":3000},"hold":5}"#,
    );
    wait_for(Duration::from_secs(20), "3 edges connected", || {
        connected(&b, 3)
    });
    let flood = |e: &Edge| {
        e.flood(
            Kind::Udp {
                sport: 123,
                dport: 9,
                len: 500,
            },
            &Sources::Spoofed,
            TARGET.parse().unwrap(),
            20_000,
        )
    };
    let t0 = Instant::now();
    let f0 = flood(&edges[0]);
    let f1 = flood(&edges[1]);
    let first = wait_for(Duration::from_secs(5), "an attack detected", || {
        edges[..2]
            .iter()
            .any(|e| e.attacks().iter().any(|a| a["state"] == "active"))
    });
    let t1 = Instant::now();
    while !rules_of(&edges[2].dirs.socket, 7)
        .iter()
        .any(|r| r["layer"] == "fleet")
    {
        if t1.elapsed() > Duration::from_secs(8) {
            panic!(
                "no fleet rule at the third edge within 8 s\nstatus: {:#}\nreports: {}\ncontroller: {}\nedge2: {}",
                status(&b),
                String::from_utf8_lossy(&b.fleet(&["attacks", "--json"]).stdout),
                b.controller_log(),
                edges[2].agent.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let fleet_rule = t1.elapsed();
    f0.stop();
    f1.stop();
    let after_detection = fleet_rule.as_secs_f64();
    println!(
        "first detection {:.2} s after the floods began; fleet rule at the third edge {:.2} s after that",
        first.as_secs_f64(),
        after_detection
    );
    assert!(after_detection <= 5.0, "{after_detection:.2} s");
    // Its data path drops the flood it never saw.
    let nft = Counters::new(
        &edges[2].pair.b,
        &edges[2].pair.if_b,
        &[("flood", "udp sport 123")],
    );
    let (d0, s0) = (nft.get("flood"), edges[2].seen(7));
    let f2 = flood(&edges[2]);
    std::thread::sleep(Duration::from_secs(2));
    f2.stop();
    let (delivered, seen) = (nft.get("flood") - d0, edges[2].seen(7) - s0);
    println!(
        "third edge: {delivered} of {seen} flood frames delivered ({:.1} s in)",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        seen > 10_000 && delivered * 100 <= seen,
        "{delivered} of {seen} delivered"
    );
    let st = status(&b);
    assert!(
        st.to_string().contains("reported by 2 edges"),
        "the decision says why: {st:#}"
    );
}

fn acked(b: &Broker, id: &serde_json::Value, n: u64) -> bool {
    status(b)["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|x| x["id"] == *id && x["acked"] == n)
}

fn has_block(e: &Edge, prefix: &str) -> bool {
    e.json(&["block", "list", "--customer", "7", "--json"])
        .as_array()
        .into_iter()
        .flatten()
        .any(|b| b["prefix"] == prefix && b["enforced"] == true)
}

/// One edge partitioned for 60 s, then the broker restarted: every edge converges to the
/// current fleet version within 5 s of reaching the broker again, and a decision's TTL
/// expires on time at the edge that was cut off.
#[test]
fn edges_converge_after_a_partition_and_a_broker_restart() {
    require_root();
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = Broker::start("flp");
    b.start_controller("");
    let edges = fleet("flp", &mut b, r#"{"mode":"off"}"#);
    wait_for(Duration::from_secs(20), "3 edges connected", || {
        connected(&b, 3)
    });
    let short = b.fleet_json(&[
        "block",
        "add",
        "198.18.81.0/24",
        "--customer",
        "7",
        "--ttl",
        "20s",
        "--json",
    ]);
    wait_for(Duration::from_secs(3), "3/3 acks", || {
        acked(&b, &short["id"], 3)
    });
    let cut = Instant::now();
    let link = b.links[2].clone();
    b.ns.sh(&["ip", "link", "set", &link, "down"]);
    let during = b.fleet_json(&[
        "block",
        "add",
        "198.18.82.0/24",
        "--customer",
        "7",
        "--ttl",
        "10m",
        "--json",
    ]);
    wait_for(
        Duration::from_secs(3),
        "2/3 acks during the partition",
        || acked(&b, &during["id"], 2),
    );
    assert!(
        !has_block(&edges[2], "198.18.82.0/24"),
        "the cut-off edge cannot have it yet"
    );
    // The 20 s decision expires on time at the cut-off edge.
    assert!(has_block(&edges[2], "198.18.81.0/24"));
    let expires = time::OffsetDateTime::parse(
        short["expires"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = (expires - time::OffsetDateTime::now_utc()).as_seconds_f64();
    std::thread::sleep(Duration::from_secs_f64(left.max(0.0) + 1.5));
    assert!(
        !has_block(&edges[2], "198.18.81.0/24"),
        "expired while cut off"
    );
    std::thread::sleep(Duration::from_secs(60).saturating_sub(cut.elapsed()));
    b.ns.sh(&["ip", "link", "set", &link, "up"]);
    let t_up = Instant::now();
    while !acked(&b, &during["id"], 3) {
        assert!(
            t_up.elapsed() < Duration::from_secs(5),
            "the cut-off edge did not converge within 5 s:\n{:#}\n{}",
            status(&b),
            edges[2].agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let back = t_up.elapsed();
    println!(
        "partition of 60 s: the edge converged {:.2} s after the link came back",
        back.as_secs_f64()
    );
    assert!(has_block(&edges[2], "198.18.82.0/24"));
    // The broker restarts (its store kept); a decision published once it is back reaches all.
    b.stop_nats();
    std::thread::sleep(Duration::from_secs(2));
    b.start_nats();
    let t0 = Instant::now();
    let after = loop {
        let out = b.fleet(&[
            "block",
            "add",
            "198.18.83.0/24",
            "--customer",
            "7",
            "--ttl",
            "10m",
            "--json",
        ]);
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the controller cannot publish after the restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let conv = wait_for(
        Duration::from_secs(5),
        "3/3 acks after the broker restart",
        || acked(&b, &after["id"], 3),
    );
    println!(
        "broker restart: 3/3 acks {:.2} s after the decision, {:.2} s after the broker was back",
        conv.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    let st = status(&b);
    let version = st["fleet_version"].as_u64().unwrap();
    wait_for(
        Duration::from_secs(5),
        "every edge at the fleet version",
        || {
            status(&b)["edges"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["fleet_version"].as_u64() == Some(version))
        },
    );
    for e in &edges {
        assert!(has_block(e, "198.18.82.0/24") && has_block(e, "198.18.83.0/24"));
    }
}
