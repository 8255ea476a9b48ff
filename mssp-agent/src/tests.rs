//! The agent over in-memory maps: the local API (through its router, as the CLI calls it),
//! the state directory and metrics, without root.

use std::sync::Arc;

use axum::{body::Body, http::Request};
use http_body_util::BodyExt;
use mssp_core::{capacity::Capacities, dataplane::backend::MemBackend};
use mssp_wire::{ErrorBody, views::BlockView};
use tower::ServiceExt;

use crate::{Agent, api, config::Config, metrics, views::metrics_snapshot};

fn caps() -> Capacities {
    Capacities {
        slots: 64,
        records: 192,
        nodes4: 65_536,
        nodes6: 4096,
        chain: 1024,
        entry_ids: 262_144,
        rules: 512,
        rule_cidrs: 512,
        buckets: 512,
    }
}

pub(crate) struct TestAgent {
    pub agent: Arc<Agent<MemBackend>>,
    dir: std::path::PathBuf,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An in-memory agent whose initial central policy is `policy`.
pub(crate) fn agent(tag: &str, policy: &str) -> TestAgent {
    let dir = std::env::temp_dir().join(format!("mssp-agent-unit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pfile = dir.join("policy.json");
    std::fs::write(&pfile, policy).unwrap();
    let cfg: Config = toml::from_str(&format!(
        "interfaces = [\"eth0\"]\npin_dir = {:?}\nstate_dir = {:?}\nsocket = {:?}\nmetrics_listen = \"127.0.0.1:1\"\npolicy = {:?}\n",
        dir.join("pins").display().to_string(),
        dir.join("state").display().to_string(),
        dir.join("sock").display().to_string(),
        pfile.display().to_string(),
    ))
    .unwrap();
    let agent = Arc::new(Agent::in_memory(cfg, caps()).expect("in-memory agent"));
    TestAgent { agent, dir }
}

/// One request through the local API's router: status and body.
pub(crate) async fn call(a: &TestAgent, method: &str, uri: &str, body: &str) -> (u16, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = api::router(a.agent.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes)
}

const POLICY: &str = r#"{"version":3,"customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
  "sources":[{"prefix":"198.18.66.0/24","action":"drop","comment":"central block"}]}]}"#;

/// Regression: `--ttl 9000y` overflowed `OffsetDateTime + Duration` and panicked the handler.
#[tokio::test]
async fn an_absurd_ttl_is_refused_naming_the_value() {
    let a = agent("ttl", POLICY);
    let (status, body) = call(
        &a,
        "POST",
        "/v1/blocks",
        r#"{"prefix":"198.18.1.0/24","customer":7,"ttl":"9000y"}"#,
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let e: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(
        e.error.contains("\"9000y\"") && e.error.contains("9999"),
        "{}",
        e.error
    );
    // Nothing changed, and the agent still answers.
    let (status, body) = call(&a, "GET", "/v1/blocks?customer=7", "").await;
    assert_eq!(status, 200);
    let list: Vec<BlockView> = serde_json::from_slice(&body).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let (status, _) = call(
        &a,
        "POST",
        "/v1/blocks",
        r#"{"prefix":"198.18.1.0/24","customer":7,"ttl":"10m"}"#,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn blocks_are_listed_with_provenance_and_enforcement() {
    let a = agent("blocks", POLICY);
    let (status, body) = call(
        &a,
        "POST",
        "/v1/blocks",
        r#"{"prefix":"198.18.66.0/24","customer":7,"comment":"ticket 1","user":"alice"}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let b: BlockView = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (b.layer.as_str(), b.enforced, b.who.as_str()),
        ("local", true, "alice")
    );
    let (_, body) = call(&a, "GET", "/v1/blocks?customer=7", "").await;
    let list: Vec<BlockView> = serde_json::from_slice(&body).unwrap();
    let central = list.iter().find(|b| b.layer == "central").unwrap();
    assert!(
        !central.enforced,
        "the local entry for the same prefix wins: {central:?}"
    );
    assert_eq!(central.comment.as_deref(), Some("central block"));
    // An unknown customer names the ones that exist.
    let (status, body) = call(&a, "GET", "/v1/blocks?customer=99", "").await;
    assert_eq!(status, 404);
    let e: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(
        e.error.contains("unknown customer id 99") && e.error.contains('7'),
        "{}",
        e.error
    );
}

#[tokio::test]
async fn metrics_come_from_a_snapshot_of_the_agent() {
    let a = agent("metrics", POLICY);
    call(
        &a,
        "POST",
        "/v1/blocks",
        r#"{"prefix":"198.18.1.0/24","global":true}"#,
    )
    .await;
    let ag = a.agent.clone();
    let reg = metrics::registry(move || metrics_snapshot(&ag, &ag.lock()));
    let text = metrics::render(&reg);
    for want in [
        r#"mssp_policy_version{layer="central"} 3"#,
        r#"mssp_policy_version{layer="local"} 1"#,
        "mssp_local_entries 1",
        r#"mssp_customer_info{customer="7",name="acme"} 1"#,
        r#"mssp_map_capacity{map="ENTRY_HITS"} 262144"#,
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}

/// Detection settings: validated like the policy (the field, the value, what is right),
/// the local layer over the central one, cleared back to it; the customer is then metered.
#[tokio::test]
async fn detection_settings_are_validated_layered_and_cleared() {
    let p = POLICY.replace(
        r#""version":3,"#,
        r#""version":3,"detection":{"mode":"monitor","thresholds":{"pps":50000}},"#,
    );
    let a = agent("detection", &p);
    let show = |body: &[u8]| -> serde_json::Value { serde_json::from_slice(body).unwrap() };
    let (status, body) = call(&a, "GET", "/v1/detection?customer=acme", "").await;
    assert_eq!(status, 200);
    let v = show(&body);
    assert_eq!(v[0]["source"], "central default", "{v}");
    assert_eq!(v[0]["detection"]["mode"], "monitor");
    assert!(
        a.agent.lock().desired().customers[0].meter,
        "metered while detection is on"
    );

    let (status, body) = call(
        &a,
        "PUT",
        "/v1/detection",
        r#"{"customer":7,"detection":{"mode":"drop","thresholds":{"pps":0}}}"#,
    )
    .await;
    assert_eq!(status, 400);
    let e: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(
        e.error
            .contains("detection.mode: \"drop\" is not a detection mode"),
        "{}",
        e.error
    );
    assert!(
        e.error.contains("detection.thresholds.pps: 0"),
        "{}",
        e.error
    );

    let (status, body) = call(
        &a,
        "PUT",
        "/v1/detection",
        r#"{"customer":"acme","detection":{"mode":"mitigate","thresholds":{"syn_pps":2000},"hold":10},"user":"bob"}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v = show(&body);
    assert_eq!(v[0]["source"], "local", "{v}");
    assert_eq!(v[0]["detection"]["thresholds"]["syn_pps"], 2000);
    assert_eq!(v[0]["detection"]["hold"], 10);
    assert_eq!(v[0]["who"], "bob");

    let (status, body) = call(&a, "DELETE", "/v1/detection", r#"{"customer":7}"#).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(show(&body)[0]["source"], "central default");
    let (status, _) = call(&a, "DELETE", "/v1/detection", r#"{"customer":7}"#).await;
    assert_eq!(status, 404, "nothing local left to clear");

    let (status, body) = call(
        &a,
        "PUT",
        "/v1/detection",
        r#"{"default":true,"detection":{"mode":"off"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(show(&body)[0]["detection"]["mode"], "off");
    assert!(
        !a.agent.lock().desired().customers[0].meter,
        "not metered once off"
    );
}

/// The auto and fleet layers' rule ids cannot be taken by the NOC's rules; an agent over
/// in-memory maps lists no attacks and says it has no samples to stream.
#[tokio::test]
async fn reserved_rule_ids_and_attack_views_without_a_data_path() {
    let a = agent("reserved", POLICY);
    let (status, body) = call(
        &a,
        "POST",
        "/v1/rules",
        r#"{"customer":7,"rule":{"id":4026531840,"match":{"protocol":"udp"},"action":"drop"}}"#,
    )
    .await;
    assert_eq!(status, 400);
    let e: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(e.error.contains("4026531840 is reserved"), "{}", e.error);
    let (status, body) = call(&a, "GET", "/v1/attacks?all=true", "").await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), r#"{"attacks":[]}"#);
    let (status, _) = call(&a, "GET", "/v1/attacks/nope", "").await;
    assert_eq!(status, 404);
    let (status, _) = call(&a, "GET", "/v1/monitor", "").await;
    assert_eq!(status, 503);
    let (status, _) = call(&a, "GET", "/v1/monitor?reason=bogus", "").await;
    assert_eq!(status, 400);
}

/// The agent keeps the central layer's desired state between applies; a new central policy
/// must replace it, and a CLI edit afterwards must publish the new policy's entries with the
/// local one, not the old policy's.
#[tokio::test]
async fn a_cli_edit_after_a_new_central_policy_publishes_the_new_policy() {
    let a = agent("central-cache", POLICY);
    let (status, _) = call(
        &a,
        "POST",
        "/v1/blocks",
        r#"{"prefix":"198.18.1.0/24","customer":7}"#,
    )
    .await;
    assert_eq!(status, 200);
    let next = r#"{"version":4,"customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
      "sources":[{"prefix":"198.18.77.0/24","action":"drop"}]}]}"#;
    let policy =
        mssp_core::policy::parse_policy(next.as_bytes(), &mssp_core::policy::Capacity::default())
            .unwrap();
    let origin = crate::state::Origin {
        digest: "test".into(),
        source: "test".into(),
    };
    a.agent
        .lock()
        .set_central(policy, next.as_bytes(), origin, "test")
        .unwrap();
    let (status, _) = call(
        &a,
        "POST",
        "/v1/blocks",
        r#"{"prefix":"198.18.2.0/24","customer":7}"#,
    )
    .await;
    assert_eq!(status, 200);
    let d = a.agent.lock().desired();
    let mut nets: Vec<String> = d.customers[0]
        .entries
        .iter()
        .map(|e| mssp_core::policy::cidr::format_net(&e.net))
        .collect();
    nets.sort();
    assert_eq!(nets, ["198.18.1.0/24", "198.18.2.0/24", "198.18.77.0/24"]);
    // What the data path holds agrees: the old policy's entry is gone.
    let (_, body) = call(&a, "GET", "/v1/blocks?customer=7", "").await;
    let list: Vec<BlockView> = serde_json::from_slice(&body).unwrap();
    assert!(
        list.iter().all(|b| b.prefix != "198.18.66.0/24"),
        "{list:?}"
    );
    assert!(
        list.iter()
            .any(|b| b.prefix == "198.18.77.0/24" && b.enforced),
        "{list:?}"
    );
}

/// The expiry task's next wake-up, taken from the cached central expiries and the small
/// layers, is the union's; a new central policy replaces the cached list.
#[tokio::test]
async fn the_next_expiry_is_the_earliest_of_every_layer() {
    let soon = |m: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::minutes(m))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let central = |v: u32, m: i64| {
        format!(
            r#"{{"version":{v},"customers":[{{"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
              "sources":[{{"prefix":"198.18.77.0/24","action":"drop","expires":"{}"}},
                         {{"prefix":"198.18.78.0/24","action":"drop","expires":"{}"}}]}}]}}"#,
            soon(m),
            soon(m + 60)
        )
    };
    let a = agent("next-expiry", &central(3, 30));
    let next = |a: &TestAgent| {
        let s = a.agent.lock();
        assert_eq!(
            s.central_expiries.as_ref().map(|(g, _)| *g),
            Some(s.policy_gen),
            "the cached list is the one in use"
        );
        let (cached, exact) = (
            s.next_expiry(),
            s.desired().next_expiry(time::OffsetDateTime::now_utc()),
        );
        assert_eq!(cached, exact);
        cached.unwrap()
    };
    let in_minutes =
        |t: time::OffsetDateTime| (t - time::OffsetDateTime::now_utc()).whole_minutes();
    assert!((29..=30).contains(&in_minutes(next(&a))));
    // A local block expiring sooner wins.
    let (status, _) = call(
        &a,
        "POST",
        "/v1/blocks",
        r#"{"prefix":"198.18.1.0/24","customer":7,"ttl":"10m"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!((9..=10).contains(&in_minutes(next(&a))));
    // A new central policy whose entries expire sooner still: the cache follows it.
    let body = central(4, 5);
    let policy =
        mssp_core::policy::parse_policy(body.as_bytes(), &mssp_core::policy::Capacity::default())
            .unwrap();
    let origin = crate::state::Origin {
        digest: "test".into(),
        source: "test".into(),
    };
    a.agent
        .lock()
        .set_central(policy, body.as_bytes(), origin, "test")
        .unwrap();
    assert!((4..=5).contains(&in_minutes(next(&a))));
}

/// The agent keeps the central document slim once the state directory holds it whole: the
/// full policy view, a version reset and a rule listing still see the whole document.
#[tokio::test]
async fn a_slim_central_document_is_read_whole_from_the_state_directory() {
    let a = agent("slim-doc", POLICY);
    {
        let s = a.agent.lock();
        assert!(s.policy.doc_slim, "slim once persisted at start");
        assert!(s.policy.doc.customers[0].sources.is_empty());
        assert_eq!(
            s.policy.customers[0].sources.len(),
            1,
            "the validated policy is whole"
        );
    }
    let (status, body) = call(&a, "GET", "/v1/policy?full=true", "").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["policy"]["customers"][0]["sources"][0]["comment"], "central block",
        "{v}"
    );
    let (status, body) = call(
        &a,
        "POST",
        "/v1/policy/reset-version",
        r#"{"to":1,"confirm":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (_, body) = call(&a, "GET", "/v1/policy?full=true", "").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["policy"]["version"], 1);
    assert_eq!(
        v["policy"]["customers"][0]["sources"][0]["prefix"],
        "198.18.66.0/24"
    );
    // A missing state file is said, not answered with an empty document.
    // Regression: this was an HTTP 200 with {"policy": {"error": …}}.
    std::fs::remove_file(a.agent.lock().store.central_path()).unwrap();
    let (status, body) = call(&a, "GET", "/v1/policy?full=true", "").await;
    assert_eq!(status, 500);
    let e: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(
        e.error.contains("cannot be read back") && e.error.contains("missing"),
        "{}",
        e.error
    );
    let (status, _) = call(&a, "GET", "/v1/policy", "").await;
    assert_eq!(status, 200, "the summary needs no document");
}

#[tokio::test]
async fn central_json_keeps_the_bytes_applied_and_a_refused_apply_leaves_it_alone() {
    let a = agent("raw-central", POLICY);
    let cap = mssp_core::policy::Capacity::default();
    let drafts = |a: &TestAgent| {
        let dir = a.agent.lock().store.dir.clone();
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("draft"))
            .count()
    };
    let body = "{ \"version\": 4,\n  \"customers\": [{\"id\":7,\"name\":\"acme\",\"prefixes\":[\"198.19.7.0/24\"],\n  \"sources\":[{\"prefix\":\"198.18.77.0/24\",\"action\":\"drop\",\"comment\":\"as sent\"}]}] }\n";
    let policy = mssp_core::policy::parse_policy(body.as_bytes(), &cap).unwrap();
    let origin = crate::state::Origin {
        digest: "sha256:test".into(),
        source: "test".into(),
    };
    a.agent
        .lock()
        .set_central(policy, body.as_bytes(), origin.clone(), "test")
        .unwrap();
    let path = a.agent.lock().store.central_path();
    let kept = std::fs::read_to_string(&path).unwrap();
    assert!(kept.contains(body), "the document's bytes are kept: {kept}");
    let (meta, p) = a.agent.lock().store.load_central(&cap).unwrap().unwrap();
    assert_eq!((meta.version, meta.digest.as_str()), (4, "sha256:test"));
    assert_eq!(
        p.doc.customers[0].sources[0].comment.as_deref(),
        Some("as sent")
    );
    assert_eq!(drafts(&a), 0);

    // 70 customers do not fit the 64 slots: refused by the data path, after the draft
    // was written; central.json and the policy in force stay as they were.
    let customers: Vec<String> = (1..=70)
        .map(|i| format!(r#"{{"id":{i},"prefixes":["198.19.{i}.0/24"]}}"#))
        .collect();
    let big = format!(r#"{{"version":5,"customers":[{}]}}"#, customers.join(","));
    let policy = mssp_core::policy::parse_policy(big.as_bytes(), &cap).unwrap();
    let r = a
        .agent
        .lock()
        .set_central(policy, big.as_bytes(), origin, "test");
    assert!(r.is_err(), "70 customers in 64 slots were applied");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
    assert_eq!(a.agent.lock().policy.version, 4);
    assert_eq!(drafts(&a), 0, "the draft of a refused policy is removed");
}
