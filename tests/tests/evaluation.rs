//! Steps 2-8 of the contract through the real program: each step and every precedence the
//! brief names, with the counters each packet must move.

use mssp_common::{Reason, Verdict, abi::Counter};
use mssp_core::dataplane::Scope;
use mssp_tests::{Harness, packet::Frame};

const POLICY: &str = r#"{"version":3,
  "infrastructure":["198.18.255.0/24","2001:db8:ffff::/48"],
  "global":{"sources":[
     {"prefix":"198.18.200.0/22","action":"drop"},
     {"prefix":"198.18.66.0/24","action":"drop"},
     {"prefix":"198.18.77.0/24","action":"monitor"},
     {"prefix":"2001:db8:200::/40","action":"drop"}]},
  "customers":[
    {"id":7,"prefixes":["198.19.7.0/24","2001:db8:7::/48"],
     "sources":[
       {"prefix":"198.18.66.128/25","action":"allow"},
       {"prefix":"198.18.77.0/24","action":"drop"},
       {"prefix":"198.18.88.0/24","action":"drop"},
       {"prefix":"198.18.88.128/25","action":"allow"},
       {"prefix":"198.18.88.200/32","action":"drop"},
       {"prefix":"198.18.99.0/24","action":"monitor"},
       {"prefix":"198.18.255.7/32","action":"drop"},
       {"prefix":"198.18.11.0/24","action":"drop","expires":"2001-01-01T00:00:00Z"},
       {"prefix":"198.18.12.0/24","action":"allow","expires":"2001-01-01T00:00:00Z"},
       {"prefix":"2001:db8:200:1::/64","action":"allow"},
       {"prefix":"2001:db8:66::/48","action":"drop"},
       {"prefix":"2001:db8:66:1::/64","action":"allow"},
       {"prefix":"2001:db8:66:1::1/128","action":"drop"}]},
    {"id":8,"prefixes":["198.19.0.0/16","2001:db8::/32"],"sources":[{"prefix":"198.18.88.0/24","action":"allow"}]},
    {"id":9,"prefixes":["198.19.9.0/24"],"sources":[]}]}"#;

fn delta(a: Counter, b: Counter) -> (u64, u64) {
    (b.packets - a.packets, b.bytes - a.bytes)
}

struct Case {
    what: &'static str,
    src: &'static str,
    dst: &'static str,
    action: &'static str,
    reason: Reason,
    customer: Option<u32>,
    /// Source entries whose hit counter must move by one: (scope, prefix).
    hits: &'static [(Scope, &'static str)],
}

const G: Scope = Scope::Global;
const C7: Scope = Scope::Customer(7);

fn cases() -> Vec<Case> {
    use Reason::*;
    vec![
        Case {
            what: "infrastructure source beats the global and customer lists",
            src: "198.18.255.7",
            dst: "198.19.7.1",
            action: "pass",
            reason: Infrastructure,
            customer: Some(7),
            hits: &[],
        },
        Case {
            what: "infrastructure destination",
            src: "198.18.200.1",
            dst: "198.18.255.1",
            action: "pass",
            reason: Infrastructure,
            customer: None,
            hits: &[],
        },
        Case {
            what: "infrastructure, IPv6",
            src: "2001:db8:ffff::1",
            dst: "2001:db8:7::1",
            action: "pass",
            reason: Infrastructure,
            customer: Some(7),
            hits: &[],
        },
        Case {
            what: "customer allow beats the global drop",
            src: "198.18.66.200",
            dst: "198.19.7.1",
            action: "pass",
            reason: Allowlisted,
            customer: Some(7),
            hits: &[(C7, "198.18.66.128/25")],
        },
        Case {
            what: "global drop outside the customer allow",
            src: "198.18.66.1",
            dst: "198.19.7.1",
            action: "drop",
            reason: GlobalBlock,
            customer: Some(7),
            hits: &[(G, "198.18.66.0/24")],
        },
        Case {
            what: "global drop with no customer",
            src: "198.18.201.9",
            dst: "198.18.50.1",
            action: "drop",
            reason: GlobalBlock,
            customer: None,
            hits: &[(G, "198.18.200.0/22")],
        },
        Case {
            what: "global monitor counts, customer drop decides",
            src: "198.18.77.1",
            dst: "198.19.7.1",
            action: "drop",
            reason: CustomerBlock,
            customer: Some(7),
            hits: &[(G, "198.18.77.0/24"), (C7, "198.18.77.0/24")],
        },
        Case {
            what: "global monitor alone passes",
            src: "198.18.77.1",
            dst: "198.19.9.1",
            action: "pass",
            reason: Default,
            customer: Some(9),
            hits: &[(G, "198.18.77.0/24")],
        },
        Case {
            what: "customer drop /24",
            src: "198.18.88.1",
            dst: "198.19.7.1",
            action: "drop",
            reason: CustomerBlock,
            customer: Some(7),
            hits: &[(C7, "198.18.88.0/24")],
        },
        Case {
            what: "more specific allow /25 inside the /24 drop",
            src: "198.18.88.129",
            dst: "198.19.7.1",
            action: "pass",
            reason: Allowlisted,
            customer: Some(7),
            hits: &[(C7, "198.18.88.128/25")],
        },
        Case {
            what: "most specific drop /32 inside the /25 allow",
            src: "198.18.88.200",
            dst: "198.19.7.1",
            action: "drop",
            reason: CustomerBlock,
            customer: Some(7),
            hits: &[(C7, "198.18.88.200/32")],
        },
        Case {
            what: "customer monitor passes and counts",
            src: "198.18.99.5",
            dst: "198.19.7.1",
            action: "pass",
            reason: Default,
            customer: Some(7),
            hits: &[(C7, "198.18.99.0/24")],
        },
        Case {
            what: "expired drop is ignored",
            src: "198.18.11.1",
            dst: "198.19.7.1",
            action: "pass",
            reason: Default,
            customer: Some(7),
            hits: &[],
        },
        Case {
            what: "expired allow does not beat the global list",
            src: "198.18.12.1",
            dst: "198.19.7.1",
            action: "pass",
            reason: Default,
            customer: Some(7),
            hits: &[],
        },
        Case {
            what: "another customer's list does not apply",
            src: "198.18.88.1",
            dst: "198.19.9.1",
            action: "pass",
            reason: Default,
            customer: Some(9),
            hits: &[],
        },
        Case {
            what: "overlapping prefixes: the most specific customer (8 holds the /16)",
            src: "198.18.88.1",
            dst: "198.19.8.1",
            action: "pass",
            reason: Allowlisted,
            customer: Some(8),
            hits: &[],
        },
        Case {
            what: "no customer, no entry",
            src: "198.18.1.1",
            dst: "198.18.50.2",
            action: "pass",
            reason: Default,
            customer: None,
            hits: &[],
        },
        Case {
            what: "IPv6 global drop",
            src: "2001:db8:200:2::1",
            dst: "2001:db8:7::1",
            action: "drop",
            reason: GlobalBlock,
            customer: Some(7),
            hits: &[(G, "2001:db8:200::/40")],
        },
        Case {
            what: "IPv6 customer allow beats global drop",
            src: "2001:db8:200:1::1",
            dst: "2001:db8:7::1",
            action: "pass",
            reason: Allowlisted,
            customer: Some(7),
            hits: &[(C7, "2001:db8:200:1::/64")],
        },
        Case {
            what: "IPv6 customer drop /48",
            src: "2001:db8:66:2::1",
            dst: "2001:db8:7::1",
            action: "drop",
            reason: CustomerBlock,
            customer: Some(7),
            hits: &[(C7, "2001:db8:66::/48")],
        },
        Case {
            what: "IPv6 allow /64 inside the drop /48",
            src: "2001:db8:66:1::2",
            dst: "2001:db8:7::1",
            action: "pass",
            reason: Allowlisted,
            customer: Some(7),
            hits: &[(C7, "2001:db8:66:1::/64")],
        },
        Case {
            what: "IPv6 drop /128 inside the allow /64",
            src: "2001:db8:66:1::1",
            dst: "2001:db8:7::1",
            action: "drop",
            reason: CustomerBlock,
            customer: Some(7),
            hits: &[(C7, "2001:db8:66:1::1/128")],
        },
        Case {
            what: "IPv6 overlapping customers (8 holds the /32)",
            src: "2001:db8:66:1::1",
            dst: "2001:db8:8::1",
            action: "pass",
            reason: Default,
            customer: Some(8),
            hits: &[],
        },
    ]
}

#[test]
fn every_step_and_precedence_with_counters() {
    let mut h = Harness::get();
    h.set_policy(POLICY);
    for c in cases() {
        let frame = Frame::new(c.src, c.dst).udp(4000, 53).build();
        let verdict = if c.action == "pass" {
            Verdict::Pass
        } else {
            Verdict::Drop
        };
        let before = h.counter(c.customer, verdict, c.reason);
        let hits_before: Vec<Counter> = c.hits.iter().map(|(s, p)| h.hits(*s, p)).collect();
        let d = h.run(&frame);
        mssp_tests::expect(&d, c.action, c.reason, c.customer, c.what);
        assert_eq!(
            delta(before, h.counter(c.customer, verdict, c.reason)),
            (1, frame.len() as u64),
            "{}: counter",
            c.what
        );
        for ((s, p), b) in c.hits.iter().zip(hits_before) {
            assert_eq!(
                delta(b, h.hits(*s, p)),
                (1, frame.len() as u64),
                "{}: hits of {p}",
                c.what
            );
        }
    }
}

#[test]
fn a_block_applies_to_every_ip_protocol() {
    let mut h = Harness::get();
    h.set_policy(POLICY);
    for (name, f) in [
        ("udp", Frame::new("198.18.88.1", "198.19.7.1").udp(1, 2)),
        (
            "tcp",
            Frame::new("198.18.88.1", "198.19.7.1").tcp(1, 2, 0x02),
        ),
        ("icmp", Frame::new("198.18.88.1", "198.19.7.1").icmp(8, 0)),
        ("gre", Frame::new("198.18.88.1", "198.19.7.1").proto(47, 24)),
        ("esp", Frame::new("198.18.88.1", "198.19.7.1").proto(50, 40)),
        (
            "sctp",
            Frame::new("198.18.88.1", "198.19.7.1").proto(132, 40),
        ),
        ("ipip", Frame::new("198.18.88.1", "198.19.7.1").proto(4, 20)),
        (
            "icmpv6",
            Frame::new("2001:db8:66::5", "2001:db8:7::1").icmp(128, 0),
        ),
        (
            "v6 esp",
            Frame::new("2001:db8:66::5", "2001:db8:7::1").proto(50, 40),
        ),
        (
            "v6 no next header",
            Frame::new("2001:db8:66::5", "2001:db8:7::1").proto(59, 0),
        ),
    ] {
        let d = h.run(&f.build());
        mssp_tests::expect(&d, "drop", Reason::CustomerBlock, Some(7), name);
    }
}

#[test]
fn expiry_is_enforced_by_the_data_path() {
    // The entry expires while the policy stays published: the program itself stops
    // enforcing it (the drop falls back to the covering allow), no agent involved.
    let mut h = Harness::get();
    let soon = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let p = format!(
        r#"{{"version":4,"customers":[{{"id":7,"prefixes":["198.19.7.0/24"],"sources":[
            {{"prefix":"198.18.40.0/24","action":"allow"}},
            {{"prefix":"198.18.40.8/29","action":"drop","expires":"{soon}"}}]}}]}}"#
    );
    h.set_policy(&p);
    let f = Frame::new("198.18.40.9", "198.19.7.1").build();
    mssp_tests::expect(
        &h.run(&f),
        "drop",
        Reason::CustomerBlock,
        Some(7),
        "before expiry",
    );
    std::thread::sleep(std::time::Duration::from_millis(2000));
    mssp_tests::expect(
        &h.run(&f),
        "pass",
        Reason::Allowlisted,
        Some(7),
        "after expiry",
    );
}

#[test]
fn an_auto_rule_expires_in_the_data_path() {
    // An auto-layer rule (the detector's) with an expiry, published once: the program stops
    // applying it at its expiry, no agent involved, and the central rule under it decides
    // again.
    use mssp_core::dataplane::{Clock, Desired, DesiredRule, Layer};
    let mut h = Harness::get();
    let p = mssp_tests::policy(
        r#"{"version":5,"customers":[{"id":7,"prefixes":["198.19.7.0/24"],
            "rules":[{"id":1,"match":{"protocol":"udp"},"action":"pass"}]}]}"#,
    );
    let mut d = Desired::from_policy(&p);
    let doc: mssp_core::policy::rules_doc::RuleDoc = serde_json::from_value(serde_json::json!(
        {"id": 4026531840u32, "match": {"protocol": "udp", "src_ports": ["123"]}, "action": "drop"}
    ))
    .unwrap();
    let spec =
        mssp_core::policy::rules::rule(&doc, "rule", &d.customers[0].prefixes, &mut Vec::new())
            .unwrap();
    d.customers[0].rules.push(DesiredRule {
        spec,
        layer: Layer::Auto,
        expires: Some(time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500)),
    });
    h.sim
        .dataplane_mut()
        .apply(&d, &Clock::now())
        .expect("apply");
    let f = Frame::new("198.18.40.9", "198.19.7.1").udp(123, 9).build();
    let got = h.run(&f);
    mssp_tests::expect(&got, "drop", Reason::Rule, Some(7), "before expiry");
    assert_eq!(got.rule, Some(4026531840), "the auto rule decided");
    std::thread::sleep(std::time::Duration::from_millis(2000));
    let got = h.run(&f);
    mssp_tests::expect(&got, "pass", Reason::Rule, Some(7), "after expiry");
    assert_eq!(got.rule, Some(1), "the central rule decides again");
}
