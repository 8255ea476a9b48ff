//! The push API end to end: three agents on three veth interfaces of one router namespace,
//! pushed to by `mssp push` (and by a bare TLS client where a test needs to misbehave).
//! Traffic through interface 0 shows what is enforced.

use std::time::{Duration, Instant};

use mssp_tests::{
    push::{Fleet, SOURCES, client_config, connect, digest, https, read_response},
    require_root,
};

/// Version 1: customer 7, nothing blocked.
const V1: &str = r#"{"version":1,
  "customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24"]}]}"#;

/// Version 2: blocks SOURCES[0]'s /24.
const V2: &str = r#"{"version":2,
  "customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
    "sources":[{"prefix":"198.18.66.0/24","action":"drop","comment":"push test"}]}]}"#;

/// Version 2 again, but another document: blocks SOURCES[1]'s /24 instead.
const V2_OTHER: &str = r#"{"version":2,
  "customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
    "sources":[{"prefix":"198.18.67.0/24","action":"drop"}]}]}"#;

fn outcome(v: &serde_json::Value, i: usize) -> &str {
    v["edges"][i]["outcome"].as_str().unwrap_or("?")
}

#[track_caller]
fn assert_version(f: &Fleet, i: usize, version: u64, doc: &str) {
    let p = f.policy(i);
    assert_eq!(p["version"], version, "agent {i}: {p}");
    assert_eq!(p["digest"], digest(doc.as_bytes()), "agent {i}: {p}");
}

#[test]
fn push_applies_on_all_three_and_traffic_follows() {
    require_root();
    let f = Fleet::new("pa", V1, "");
    for i in 0..3 {
        assert_version(&f, i, 1, V1);
    }
    assert_eq!(
        f.probe(SOURCES[0], 20),
        20,
        "nothing is blocked at version 1"
    );

    let file = f.policy_file("v2.json", V2);
    let (status, v, err) = f.push(&file, &f.pki.controller, &f.urls(), &[]);
    assert!(status.success(), "mssp push failed: {err}\n{v:#}");
    assert_eq!(v["ok"], 3, "{v:#}");
    for i in 0..3 {
        assert_eq!(outcome(&v, i), "applied", "{v:#}");
        assert_eq!(v["edges"][i]["version"], 2);
        assert_version(&f, i, 2, V2);
    }
    // The 200 came after the data path enforced it: the very next packets are dropped.
    assert_eq!(
        f.probe(SOURCES[0], 20),
        0,
        "version 2 blocks 198.18.66.0/24"
    );
    assert_eq!(f.probe(SOURCES[2], 20), 20, "others still pass");

    // Provenance: who pushed, and the status API over the same channel.
    let p = f.policy(0);
    let source = p["source"].as_str().unwrap_or_default();
    assert!(source.contains("CN=controller-1"), "{p}");
    let (code, s) = f
        .request(1, Some(&f.pki.controller), "GET", "/v1/status", b"")
        .expect("status");
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["interfaces"][0]["name"], f.ifs[1].as_str(), "{s:#}");
    assert!(s["interfaces"][0]["mode"].is_string(), "{s:#}");
    assert_eq!(s["central"]["version"], 2, "{s:#}");
    assert!(
        s["maps"].as_array().is_some_and(|m| !m.is_empty()),
        "map fill in the status: {s:#}"
    );
    // The local layer is untouched by a push: the CLI still sees no local entries.
    assert_eq!(s["local_entries"], 0);
}

#[test]
fn replayed_and_older_versions_are_refused_across_restarts() {
    require_root();
    let mut f = Fleet::new("pr", V1, "");
    let v2 = f.policy_file("v2.json", V2);
    let (status, v, err) = f.push(&v2, &f.pki.controller, &f.urls(), &[]);
    assert!(status.success(), "{err}\n{v:#}");

    // The very same document again: a retry that already landed is not an error.
    let (status, v, _) = f.push(&v2, &f.pki.controller, &f.urls(), &[]);
    assert!(status.success(), "{v:#}");
    for i in 0..3 {
        assert_eq!(outcome(&v, i), "already_in_force", "{v:#}");
    }

    // Another document under the same version, and an older version: refused with 409.
    for (name, doc) in [("v2-other.json", V2_OTHER), ("v1.json", V1)] {
        let file = f.policy_file(name, doc);
        let (status, v, _) = f.push(&file, &f.pki.controller, &f.urls(), &[]);
        assert!(!status.success(), "{name} must be refused: {v:#}");
        for i in 0..3 {
            assert_eq!(outcome(&v, i), "refused", "{name}: {v:#}");
            assert_eq!(v["edges"][i]["http_status"], 409, "{v:#}");
            assert_eq!(
                v["edges"][i]["version"], 2,
                "the 409 names the version in force"
            );
            assert_version(&f, i, 2, V2);
        }
    }
    let (code, body) = f
        .request(
            0,
            Some(&f.pki.controller),
            "PUT",
            "/v1/policy",
            V1.as_bytes(),
        )
        .expect("put");
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["version"], 2, "{body}");

    // The high-water mark survives a crash: a restarted agent still refuses the replay.
    f.kill(0);
    f.start(0);
    let (code, body) = f
        .request(
            0,
            Some(&f.pki.controller),
            "PUT",
            "/v1/policy",
            V2_OTHER.as_bytes(),
        )
        .expect("put after restart");
    assert_eq!(code, 409, "replay after restart: {body}");
    assert_version(&f, 0, 2, V2);
    assert_eq!(f.probe(SOURCES[0], 20), 0, "version 2 still enforced");
    assert_eq!(
        f.probe(SOURCES[1], 20),
        20,
        "the refused document never applied"
    );
}

#[test]
fn client_certificates_are_required_and_checked() {
    require_root();
    let f = Fleet::new("pc", V1, "");
    let v2 = f.policy_file("v2.json", V2);

    // No certificate at all: the handshake (or the first read after it, in TLS 1.3) fails
    // and no request is ever answered.
    let none = client_config(&f.pki.edge_ca, None);
    let r = f.router.run(move || {
        https(
            none,
            9443,
            "PUT",
            "/v1/policy",
            V2.as_bytes(),
            Duration::from_secs(10),
        )
    });
    assert!(
        r.is_err(),
        "a request without a client certificate was answered: {r:?}"
    );

    // A certificate from a CA the edge does not trust, even with the right name on it.
    let stranger = client_config(&f.pki.edge_ca, Some(&f.pki.stranger));
    let r = f.router.run(move || {
        https(
            stranger,
            9443,
            "GET",
            "/v1/policy",
            b"",
            Duration::from_secs(10),
        )
    });
    assert!(
        r.is_err(),
        "an untrusted client certificate was answered: {r:?}"
    );

    let (status, v, _) = f.push(&v2, &f.pki.stranger, &f.urls(), &["--retries", "0"]);
    assert!(!status.success(), "{v:#}");
    for i in 0..3 {
        assert_eq!(v["edges"][i]["ok"], false, "{v:#}");
        let e = v["edges"][i]["error"].as_str().unwrap_or_default();
        assert!(e.contains("TLS"), "the failure says it is TLS: {e}");
        // Nothing changed.
        assert_version(&f, i, 1, V1);
    }
    assert!(
        f.log(0).contains("TLS handshake"),
        "the agent logs refused handshakes:\n{}",
        f.log(0)
    );
    assert_eq!(f.probe(SOURCES[0], 20), 20);

    // And the trusted controller gets through.
    let (status, v, err) = f.push(&v2, &f.pki.controller, &f.urls(), &[]);
    assert!(status.success(), "{err}\n{v:#}");

    // Rotation: edge 0's client_ca file now holds the other CA; after SIGHUP (systemctl
    // reload) new connections trust that one and no longer the old one.
    std::fs::copy(&f.pki.stranger_ca, &f.pki.controller_ca).expect("rotate client_ca");
    f.agents[0].as_ref().expect("agent 0").hup();
    let t = std::time::Instant::now();
    while !f.log(0).contains("push TLS certificates re-read") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no reload in the log:\n{}",
            f.log(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let v3 = f.policy_file("v3.json", &V2.replace(r#""version":2"#, r#""version":3"#));
    let (status, v, err) = f.push(&v3, &f.pki.controller, &[f.url(0)], &["--retries", "0"]);
    assert!(
        !status.success(),
        "the retired CA still works: {err}\n{v:#}"
    );
    let (status, v, err) = f.push(&v3, &f.pki.stranger, &[f.url(0)], &[]);
    assert!(status.success(), "the new CA is not trusted: {err}\n{v:#}");
    assert_eq!(v["edges"][0]["version"], 3, "{v:#}");
}

#[test]
fn invalid_documents_are_refused_and_nothing_changes() {
    require_root();
    let f = Fleet::new("pi", V1, "push_max_bytes = 65536\n");
    let v2 = f.policy_file("v2.json", V2);
    let (status, _, err) = f.push(&v2, &f.pki.controller, &f.urls(), &[]);
    assert!(status.success(), "{err}");

    // Host bits set: 400 with the field path, the value and the fix.
    let bad = r#"{"version":3,
      "customers":[{"id":7,"prefixes":["198.19.7.0/24"],
        "sources":[{"prefix":"198.18.67.1/24","action":"drop"}]}]}"#;
    let (code, body) = f
        .request(
            0,
            Some(&f.pki.controller),
            "PUT",
            "/v1/policy",
            bad.as_bytes(),
        )
        .expect("put");
    assert_eq!(code, 400, "{body:#}");
    let e = &body["errors"][0];
    assert_eq!(e["path"], "customers[0].sources[0].prefix", "{body:#}");
    assert_eq!(e["value"], "198.18.67.1/24", "{body:#}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("198.18.67.0/24"),
        "the message says what was meant: {body:#}"
    );

    // Unknown field, unknown action, truncated JSON, not JSON: all 400.
    for doc in [
        r#"{"version":3,"customers":[],"colour":"red"}"#,
        r#"{"version":3,"customers":[{"id":7,"prefixes":["198.19.7.0/24"],"sources":[{"prefix":"198.18.67.0/24","action":"nuke"}]}]}"#,
        r#"{"version":3,"customers":[{"id":7,"prefixes":["198.19"#,
        "version three",
    ] {
        let (code, body) = f
            .request(
                0,
                Some(&f.pki.controller),
                "PUT",
                "/v1/policy",
                doc.as_bytes(),
            )
            .expect("put");
        assert_eq!(code, 400, "{doc}: {body:#}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|s| s.contains("nothing applied")),
            "{body}"
        );
    }

    // Larger than push_max_bytes: 413 before anything is parsed.
    let big = format!(
        r#"{{"version":3,"customers":[],"infrastructure":[{}]}}"#,
        vec!["\"198.18.255.0/24\""; 5000].join(",")
    );
    let (code, body) = f
        .request(
            0,
            Some(&f.pki.controller),
            "PUT",
            "/v1/policy",
            big.as_bytes(),
        )
        .expect("put");
    assert_eq!(code, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("push_max_bytes")
    );

    // `mssp push` refuses an invalid document itself (its check runs while the uploads
    // start, and cancels them), exits 65, and no edge changes.
    let file = f.policy_file("bad.json", bad);
    let (status, _, err) = f.push(&file, &f.pki.controller, &f.urls(), &[]);
    assert_eq!(status.code(), Some(65), "{err}");
    assert!(
        err.contains("customers[0].sources[0].prefix") && err.contains("nothing applied"),
        "{err}"
    );

    for i in 0..3 {
        assert_version(&f, i, 2, V2);
    }
    assert_eq!(f.probe(SOURCES[0], 20), 0, "version 2 still enforced");
    assert_eq!(f.probe(SOURCES[1], 20), 20);
}

#[test]
fn slow_clients_are_cut_off() {
    require_root();
    let f = Fleet::new("ps", V1, "push_timeout = \"2s\"\n");
    let cfg = client_config(&f.pki.edge_ca, Some(&f.pki.controller));

    // Headers promise 1000 bytes; 10 arrive; the agent answers 408 and closes.
    let started = Instant::now();
    let r = f.router.run(move || {
        use std::io::Write;
        let mut s = connect(cfg, 9443, Duration::from_secs(20))?;
        s.write_all(
            b"PUT /v1/policy HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"version\"",
        )
        .map_err(|e| e.to_string())?;
        s.flush().map_err(|e| e.to_string())?;
        read_response(&mut s)
    });
    let waited = started.elapsed();
    let (code, body) = r.expect("a reply");
    assert_eq!(code, 408, "{body}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(15),
        "cut off after {waited:?} (push_timeout 2s)"
    );

    // A TCP connection that never starts TLS is closed too.
    let started = Instant::now();
    let closed = f.router.run(|| {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", 9443)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(0) | Err(_))
    });
    assert!(closed && started.elapsed() < Duration::from_secs(15));

    // The agent still serves pushes afterwards.
    let v2 = f.policy_file("v2.json", V2);
    let (status, v, err) = f.push(&v2, &f.pki.controller, &f.urls(), &[]);
    assert!(status.success(), "{err}\n{v:#}");
}

#[test]
fn an_agent_killed_during_a_push_is_consistent_after_restart() {
    require_root();
    let mut f = Fleet::new("pk", V1, "");
    // A document large enough that its apply takes a while (over a second here): 600k
    // entries besides the one the probe checks.
    let mut sources = vec![r#"{"prefix":"198.18.66.0/24","action":"drop"}"#.to_string()];
    for i in 0..600_000u32 {
        sources.push(format!(
            r#"{{"prefix":"2001:db8:{:x}:{:x}::/64","action":"drop"}}"#,
            1 + i / 60000,
            i % 60000
        ));
    }
    let big = format!(
        r#"{{"version":2,"customers":[{{"id":7,"prefixes":["198.19.7.0/24"],"sources":[{}]}}]}}"#,
        sources.join(",")
    );
    let file = f.policy_file("big.json", &big);

    let handle = {
        let (router, bin, file, ca, cert, key, url) = (
            f.router.name.clone(),
            mssp_tests::mssp_bin(),
            file.clone(),
            f.pki.edge_ca.clone(),
            f.pki.controller.cert.clone(),
            f.pki.controller.key.clone(),
            f.url(0),
        );
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args(["netns", "exec", &router])
                .arg(bin)
                .args(["push", "--json", "--retries", "0", "--policy"])
                .arg(file)
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key)
                .arg("--ca")
                .arg(ca)
                .arg(url)
                .output()
                .expect("push")
        })
    };
    // Kill it while it applies: that is when it holds its lock, so its local API stops
    // answering (a status request that does not return within 100 ms).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut busy = false;
    while !busy && Instant::now() < deadline && !handle.is_finished() {
        let mut status = std::process::Command::new(mssp_tests::mssp_bin())
            .arg("--socket")
            .arg(&f.dirs[0].socket)
            .args(["status", "--json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mssp status");
        std::thread::sleep(Duration::from_millis(100));
        busy = status.try_wait().expect("status").is_none();
        let _ = status.kill();
        let _ = status.wait();
    }
    assert!(busy, "never saw the agent busy applying the push");
    f.kill(0);
    let out = handle.join().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    f.start(0);

    // Whatever the agent now says is in force is exactly what the data path does.
    let p = f.policy(0);
    let got = f.probe(SOURCES[0], 20);
    eprintln!(
        "killed mid-push: push said {}, restarted agent holds version {}",
        v["edges"][0]["outcome"], p["version"]
    );
    match p["version"].as_u64() {
        Some(1) => {
            assert_eq!(p["digest"], digest(V1.as_bytes()));
            assert_eq!(got, 20, "version 1 in force: nothing blocked");
            assert_ne!(
                v["edges"][0]["outcome"], "applied",
                "a 200 for a push that is not in force: {v:#}"
            );
        }
        Some(2) => {
            assert_eq!(p["digest"], digest(big.as_bytes()));
            assert_eq!(got, 0, "version 2 in force: 198.18.66.0/24 blocked");
        }
        other => panic!("unexpected version {other:?}: {p}"),
    }
    // And the controller's retry brings it to version 2 either way.
    let (status, v, err) = f.push(&file, &f.pki.controller, &[f.url(0)], &[]);
    assert!(status.success(), "{err}\n{v:#}");
    assert_version(&f, 0, 2, &big);
    assert_eq!(f.probe(SOURCES[0], 20), 0);
}

#[test]
fn one_edge_down_is_reported_and_the_others_apply() {
    require_root();
    let mut f = Fleet::new("pd", V1, "");
    f.stop(2);
    let v2 = f.policy_file("v2.json", V2);
    let (status, v, _) = f.push(&v2, &f.pki.controller, &f.urls(), &["--retries", "1"]);
    assert_eq!(status.code(), Some(1), "{v:#}");
    assert_eq!(v["ok"], 2, "{v:#}");
    assert_eq!(v["failed"], 1, "{v:#}");
    assert_eq!(outcome(&v, 0), "applied");
    assert_eq!(outcome(&v, 1), "applied");
    assert_eq!(outcome(&v, 2), "failed");
    assert_eq!(v["edges"][2]["attempts"], 2, "one retry: {v:#}");
    assert!(
        v["edges"][2]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("connect"),
        "{v:#}"
    );
    assert_version(&f, 0, 2, V2);
    assert_version(&f, 1, 2, V2);
    assert_eq!(f.probe(SOURCES[0], 20), 0);

    // The edge comes back (with version 1: it missed the push); pushing again converges.
    f.start(2);
    assert_version(&f, 2, 1, V1);
    let (status, v, err) = f.push(&v2, &f.pki.controller, &f.urls(), &[]);
    assert!(status.success(), "{err}\n{v:#}");
    assert_eq!(outcome(&v, 0), "already_in_force");
    assert_eq!(outcome(&v, 2), "applied");
    assert_version(&f, 2, 2, V2);
}

#[test]
fn a_failed_apply_leaves_the_previous_policy_wholly_in_force() {
    require_root();
    // Node maps so small that a few hundred IPv4 entries do not fit (the document is
    // valid: only applying it can fail).
    let f = Fleet::new("pf", V2, "[capacity]\nnodes4 = 24\n");
    let many: Vec<String> = (0..600u32)
        .map(|i| {
            format!(
                r#"{{"prefix":"198.18.{}.{}/32","action":"drop"}}"#,
                100 + i / 200,
                i % 200
            )
        })
        .collect();
    let v3 = format!(
        r#"{{"version":3,"customers":[{{"id":7,"prefixes":["198.19.7.0/24"],"sources":[{{"prefix":"198.18.67.0/24","action":"drop"}},{}]}}]}}"#,
        many.join(",")
    );
    let file = f.policy_file("v3.json", &v3);
    let (status, v, _) = f.push(&file, &f.pki.controller, &f.urls(), &[]);
    assert!(!status.success(), "{v:#}");
    for i in 0..3 {
        assert_eq!(v["edges"][i]["http_status"], 507, "{v:#}");
        assert_eq!(
            v["edges"][i]["attempts"], 1,
            "a full map is not retried: {v:#}"
        );
        let e = v["edges"][i]["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("NODES4") && e.contains("stays wholly in force"),
            "{e}"
        );
        assert_version(&f, i, 2, V2);
    }
    assert_eq!(f.probe(SOURCES[0], 20), 0, "version 2's block still holds");
    assert_eq!(
        f.probe(SOURCES[1], 20),
        20,
        "nothing of version 3 leaked in"
    );
}
