//! Step 7 through the real program: every rule match field (IPv4 and IPv6), fragments, rule
//! order, each action with its counters, rate limits (burst plus rate, per source) and the
//! customer's clean-pipe limit.

use mssp_common::{Reason, abi::RuleCounter};
use mssp_tests::{
    Harness,
    packet::{Frame, L4, ext},
};

fn policy(rules: &str, extra: &str) -> String {
    format!(
        r#"{{"version":1,"customers":[{{"id":7,"prefixes":["198.19.7.0/24","2001:db8:7::/48"],
            "sources":[{{"prefix":"198.18.99.0/24","action":"allow"}}],
            "rules":[{rules}]{extra}}}]}}"#
    )
}

fn v4() -> Frame {
    Frame::new("198.18.1.1", "198.19.7.9")
}

fn v6() -> Frame {
    Frame::new("2001:db8:1::1", "2001:db8:7::9")
}

#[track_caller]
fn run(h: &mut Harness, f: &Frame, action: &str, reason: Reason, rule: Option<u32>, what: &str) {
    let d = h.run(&f.build());
    assert_eq!(
        (d.action, d.reason, d.rule),
        (action, reason.name(), rule),
        "{what}"
    );
}

fn delta(a: RuleCounter, b: RuleCounter) -> (u64, u64) {
    (b.packets - a.packets, b.limited_packets - a.limited_packets)
}

/// One rule per match field: a packet that matches it (dropped by the rule) and one that does
/// not (passes by default), in both families where the field applies.
#[test]
fn every_match_field() {
    let mut h = Harness::get();
    let mut frag_first = v4().udp(5, 53);
    frag_first.frag = 0x2000;
    let mut frag_later = v4().proto(17, 4);
    frag_later.frag = 0x0010;
    let mut frag6_later = v6().proto(17, 4);
    frag6_later.exts = vec![(ext::FRAGMENT, 0x0100)];
    let ttl = |f: Frame, t: u8| {
        let mut f = f;
        f.ttl = t;
        f
    };
    let tos = |f: Frame, t: u8| {
        let mut f = f;
        f.tos = t;
        f
    };
    let cases: Vec<(&str, &str, Vec<(Frame, bool)>)> = vec![
        (
            "protocol name",
            r#"{"protocol":"udp"}"#,
            vec![
                (v4().udp(1, 2), true),
                (v4().tcp(1, 2, 2), false),
                (v6().udp(1, 2), true),
            ],
        ),
        (
            "protocol number list",
            r#"{"protocol":[47,"esp"]}"#,
            vec![
                (v4().proto(47, 8), true),
                (v6().proto(50, 8), true),
                (v4().udp(1, 2), false),
            ],
        ),
        (
            "sources",
            r#"{"sources":["198.18.1.0/24","2001:db8:1::/48"]}"#,
            vec![
                (v4(), true),
                (v6(), true),
                (Frame::new("198.18.2.1", "198.19.7.9"), false),
            ],
        ),
        (
            "destinations",
            r#"{"destinations":["198.19.7.8/29","2001:db8:7::8/125"]}"#,
            vec![
                (v4(), true),
                (v6(), true),
                (Frame::new("198.18.1.1", "198.19.7.1"), false),
            ],
        ),
        (
            "src_ports",
            r#"{"src_ports":["53","1000-2000"]}"#,
            vec![
                (v4().udp(53, 9), true),
                (v4().tcp(1500, 9, 2), true),
                (v6().udp(2000, 9), true),
                (v4().udp(2001, 9), false),
                (v4().icmp(8, 0), false),
            ],
        ),
        (
            "dst_ports",
            r#"{"dst_ports":["22"]}"#,
            vec![
                (v4().tcp(9, 22, 2), true),
                (v6().tcp(9, 22, 2), true),
                (v4().tcp(9, 23, 2), false),
            ],
        ),
        (
            "tcp_flags",
            r#"{"tcp_flags":{"set":["syn"],"unset":["ack"]}}"#,
            vec![
                (v4().tcp(1, 2, 0x02), true),
                (v6().tcp(1, 2, 0x02), true),
                (v4().tcp(1, 2, 0x12), false),
                (v4().udp(1, 2), false),
            ],
        ),
        (
            "icmp_type",
            r#"{"icmp_type":[8,128]}"#,
            vec![
                (v4().icmp(8, 0), true),
                (v6().icmp(128, 0), true),
                (v4().icmp(0, 0), false),
                (v4().udp(8, 8), false),
            ],
        ),
        (
            "icmp_code",
            r#"{"icmp_code":3}"#,
            vec![
                (v4().icmp(3, 3), true),
                (v6().icmp(1, 3), true),
                (v4().icmp(3, 1), false),
            ],
        ),
        (
            "length",
            r#"{"length":{"min":41,"max":62}}"#,
            vec![
                (v4().udp(1, 2), true),
                (v4().tcp(1, 2, 2), false),
                (v6().proto(17, 22), true),
                (v6().proto(17, 40), false),
            ],
        ),
        (
            "ttl",
            r#"{"ttl":{"max":10}}"#,
            vec![
                (ttl(v4(), 9), true),
                (ttl(v6(), 1), true),
                (ttl(v4(), 64), false),
            ],
        ),
        (
            "dscp",
            r#"{"dscp":[46]}"#,
            vec![
                (tos(v4(), 46 << 2), true),
                (tos(v6(), 46 << 2), true),
                (tos(v4(), 0), false),
            ],
        ),
        (
            "fragment later",
            r#"{"fragment":"later"}"#,
            vec![
                (frag_later.clone(), true),
                (frag6_later.clone(), true),
                (frag_first.clone(), false),
                (v4(), false),
            ],
        ),
        (
            "fragment any",
            r#"{"fragment":["any"]}"#,
            vec![
                (frag_later.clone(), true),
                (frag_first.clone(), true),
                (v6(), false),
            ],
        ),
        (
            "fragment none",
            r#"{"fragment":"none"}"#,
            vec![(v4(), true), (frag_first.clone(), false)],
        ),
        (
            "vlan",
            r#"{"vlan":[100,200]}"#,
            vec![
                (v4().vlan(0x8100, 200), true),
                (v6().vlan(0x88a8, 100).vlan(0x8100, 5), true),
                (v4().vlan(0x8100, 5).vlan(0x8100, 100), false),
                (v4(), false),
            ],
        ),
        (
            "later fragment never matches ports",
            r#"{"dst_ports":["0-65535"]}"#,
            vec![
                (frag_later.clone(), false),
                (frag6_later.clone(), false),
                (frag_first.clone(), true),
            ],
        ),
        (
            "fields AND, lists OR",
            r#"{"protocol":"udp","src_ports":["53","123"],"length":{"min":40}}"#,
            vec![
                (v4().udp(123, 9), true),
                (v4().udp(124, 9), false),
                (v4().tcp(53, 9, 2), false),
            ],
        ),
    ];
    for (name, m, packets) in cases {
        h.set_policy(&policy(
            &format!(r#"{{"id":5,"match":{m},"action":"drop"}}"#),
            "",
        ));
        for (i, (f, hit)) in packets.iter().enumerate() {
            let what = format!("{name} #{i}");
            let before = h.rule_stats(7, 5);
            if *hit {
                run(&mut h, f, "drop", Reason::Rule, Some(5), &what);
                assert_eq!(
                    delta(before, h.rule_stats(7, 5)),
                    (1, 0),
                    "{what}: rule counter"
                );
            } else {
                run(&mut h, f, "pass", Reason::Default, None, &what);
                assert_eq!(
                    delta(before, h.rule_stats(7, 5)),
                    (0, 0),
                    "{what}: rule counter"
                );
            }
        }
    }
}

#[test]
fn order_actions_and_precedence() {
    let mut h = Harness::get();
    h.set_policy(&policy(
        r#"{"id":1,"match":{"protocol":"udp","dst_ports":["53"]},"action":"monitor"},
           {"id":2,"match":{"protocol":"udp","dst_ports":["53"],"sources":["198.18.1.0/24"]},"action":"pass"},
           {"id":3,"match":{"protocol":"udp"},"action":"drop"},
           {"id":4,"match":{},"action":"drop"}"#,
        "",
    ));
    let b1 = h.rule_stats(7, 1);
    run(
        &mut h,
        &v4().udp(9, 53),
        "pass",
        Reason::Rule,
        Some(2),
        "monitor goes on, pass is terminal",
    );
    assert_eq!(
        delta(b1, h.rule_stats(7, 1)),
        (1, 0),
        "the monitor rule counted it"
    );
    run(
        &mut h,
        &Frame::new("198.18.2.1", "198.19.7.9").udp(9, 53),
        "drop",
        Reason::Rule,
        Some(3),
        "first drop wins",
    );
    run(
        &mut h,
        &v4().tcp(9, 53, 2),
        "drop",
        Reason::Rule,
        Some(4),
        "empty match matches all",
    );
    // The allowlist (step 4) comes before the rules.
    run(
        &mut h,
        &Frame::new("198.18.99.1", "198.19.7.9").udp(9, 53),
        "pass",
        Reason::Allowlisted,
        None,
        "allowlisted skips rules",
    );
    // No customer, no rules.
    run(
        &mut h,
        &Frame::new("198.18.1.1", "198.18.50.1"),
        "pass",
        Reason::Default,
        None,
        "no customer",
    );
}

#[test]
fn rate_limits_pass_burst_plus_rate_and_isolate_sources() {
    let mut h = Harness::get();
    h.set_policy(&policy(
        r#"{"id":11,"match":{"protocol":"tcp","dst_ports":["22"],"tcp_flags":{"set":["syn"],"unset":["ack"]}},"action":{"rate_limit":{"pps":10,"burst":50}}},
           {"id":12,"match":{"protocol":"icmp"},"action":{"rate_limit":{"pps":1,"burst":10,"per_source":true}}},
           {"id":13,"match":{"protocol":"udp","dst_ports":["9999"]},"action":{"rate_limit":{"bps":80000,"burst_bytes":1000}}}"#,
        "",
    ));
    // Back to back: exactly the burst passes (10 pps adds one packet per 100 ms; the loop takes
    // far less than that on this machine, so allow at most one more).
    let syn = v4().tcp(40000, 22, 0x02).build();
    let start = std::time::Instant::now();
    let passed = (0..80).filter(|_| h.run(&syn).action == "pass").count();
    let extra = (start.elapsed().as_secs_f64() * 10.0).floor() as usize + 1;
    assert!(
        (50..=50 + extra).contains(&passed),
        "burst 50: {passed} passed"
    );
    let s = h.rule_stats(7, 11);
    assert_eq!(s.limited_packets as usize, 80 - passed);
    let d = h.run(&syn);
    assert_eq!(
        (d.action, d.reason, d.rule),
        ("drop", "rate_limited", Some(11))
    );
    // Refills at the configured rate: after 300 ms about 3 more.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let refill = (0..10).filter(|_| h.run(&syn).action == "pass").count();
    assert!(
        (2..=4).contains(&refill),
        "10 pps over 300 ms let {refill} through"
    );

    // Per source: each source its own bucket of 10.
    for src in ["198.18.1.1", "198.18.1.2", "2001:db8:1::1"] {
        let f = Frame::new(
            src,
            if src.contains(':') {
                "2001:db8:7::1"
            } else {
                "198.19.7.1"
            },
        )
        .icmp(if src.contains(':') { 128 } else { 8 }, 0);
        let protocol_ok = !src.contains(':');
        let passed = (0..15)
            .filter(|_| h.run(&f.build()).action == "pass")
            .count();
        if protocol_ok {
            assert_eq!(passed, 10, "{src}: its own burst of 10");
        } else {
            // "icmp" is protocol 1; ICMPv6 is 58 and does not match the rule.
            assert_eq!(passed, 15, "{src}");
        }
    }

    // Bytes: 1000 bytes of burst at 10 kB/s; 100-byte IP packets (114-byte frames).
    let mut big = v4().udp(1, 9999);
    if let L4::Udp { payload, .. } = &mut big.l4 {
        *payload = 100 - 28;
    }
    let frame = big.build();
    let passed = (0..20).filter(|_| h.run(&frame).action == "pass").count();
    let bytes = frame.len();
    assert!(
        (1000 / bytes..=1000 / bytes + 1).contains(&passed),
        "burst_bytes 1000 at {bytes} bytes a frame let {passed} through"
    );
}

#[test]
fn customer_limit_caps_what_would_pass() {
    let mut h = Harness::get();
    h.set_policy(&policy(
        r#"{"id":1,"match":{"protocol":"gre"},"action":"drop"}"#,
        r#","limits":{"pps":100}"#,
    ));
    // Burst: a tenth of a second's worth (10 packets), then customer_limit.
    let f = v4().udp(1, 2).build();
    let results: Vec<String> = (0..30).map(|_| h.run(&f).reason.to_string()).collect();
    let passed = results.iter().filter(|r| *r == "default").count();
    assert!((10..=12).contains(&passed), "{results:?}");
    assert!(results.iter().filter(|r| *r == "customer_limit").count() >= 18);
    // Dropped by a rule: not counted against the limit, and not limited.
    run(
        &mut h,
        &v4().proto(47, 8),
        "drop",
        Reason::Rule,
        Some(1),
        "rule drop",
    );
    // Allowlisted traffic is exempt.
    run(
        &mut h,
        &Frame::new("198.18.99.1", "198.19.7.9"),
        "pass",
        Reason::Allowlisted,
        None,
        "allowlisted is exempt",
    );
}
