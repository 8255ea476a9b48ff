//! Step 1 of the contract through the real program (BPF_PROG_TEST_RUN): every parse outcome,
//! with the counter it lands in.

use mssp_common::{Reason, Verdict};
use mssp_tests::{
    Harness,
    packet::{Frame, L4, boundaries, ext, raw},
};

const POLICY: &str = r#"{"version":1,
  "customers":[{"id":7,"prefixes":["198.19.7.0/24","2001:db8:7::/48"],
                "sources":[{"prefix":"198.18.66.0/24","action":"drop"},{"prefix":"2001:db8:66::/48","action":"drop"}]}]}"#;

fn verdict_of(action: &str) -> Verdict {
    match action {
        "pass" => Verdict::Pass,
        "drop" => Verdict::Drop,
        other => panic!("unexpected action {other}"),
    }
}

/// Runs a frame and checks the decision and that exactly its counter moved by one packet
/// and the frame's bytes.
#[track_caller]
fn check(
    h: &mut Harness,
    frame: &[u8],
    action: &str,
    reason: Reason,
    customer: Option<u32>,
    what: &str,
) {
    let verdict = verdict_of(action);
    let before = h.counter(customer, verdict, reason);
    let d = h.run(frame);
    mssp_tests::expect(&d, action, reason, customer, what);
    let after = h.counter(customer, verdict, reason);
    assert_eq!(
        (after.packets - before.packets, after.bytes - before.bytes),
        (1, frame.len() as u64),
        "{what}: counter ({customer:?}, {}, {}) moved wrong",
        verdict.name(),
        reason.name()
    );
}

fn v4() -> Frame {
    Frame::new("198.18.1.1", "198.19.7.9")
}

fn v6() -> Frame {
    Frame::new("2001:db8:1::1", "2001:db8:7::9")
}

fn bases() -> Vec<(String, Frame)> {
    let mut v = Vec::new();
    for (fam, f) in [("v4", v4()), ("v6", v6())] {
        for (l4, g) in [
            ("udp", f.clone().udp(1000, 53)),
            ("tcp", f.clone().tcp(1000, 80, 0x02)),
            ("icmp", f.clone().icmp(8, 0)),
        ] {
            v.push((format!("{fam}/{l4}"), g.clone()));
            v.push((format!("{fam}/{l4}/q"), g.clone().vlan(0x8100, 10)));
            v.push((
                format!("{fam}/{l4}/ad+q"),
                g.clone().vlan(0x88a8, 20).vlan(0x8100, 10),
            ));
        }
    }
    let mut ip4opt = v4().udp(1, 2);
    ip4opt.ihl = 9;
    v.push(("v4/options/udp".into(), ip4opt));
    let mut ip6ext = v6().tcp(1, 2, 0x10);
    ip6ext.exts = vec![
        (ext::HOP, 0),
        (ext::DSTOPTS, 1),
        (ext::ROUTING, 0),
        (ext::FRAGMENT, 0),
        (ext::AH, 1),
    ];
    v.push(("v6/5ext/tcp".into(), ip6ext));
    v
}

#[test]
fn truncation_at_every_header_boundary() {
    let mut h = Harness::get();
    h.set_policy(POLICY);
    for (name, f) in bases() {
        let full = f.build();
        check(
            &mut h,
            &full,
            "pass",
            Reason::Default,
            Some(7),
            &format!("{name} whole"),
        );
        for (header, at) in boundaries(&f) {
            // XDP never sees a frame shorter than an Ethernet header (BPF_PROG_TEST_RUN
            // refuses one too), so cuts start at 14 bytes.
            for cut in [at, at + 1, at + 3] {
                if cut < 14 || cut >= full.len() {
                    continue;
                }
                if header == "ethernet" && cut >= 14 {
                    continue;
                }
                check(
                    &mut h,
                    &full[..cut],
                    "drop",
                    Reason::Malformed,
                    None,
                    &format!("{name} cut in {header} at {cut}"),
                );
            }
        }
        // One byte short of the whole L4 header.
        let l4_end = full.len()
            - match &f.l4 {
                L4::Udp { payload, .. } | L4::Icmp { payload, .. } => *payload,
                L4::Tcp { payload, .. } => *payload,
                L4::None { payload, .. } => *payload,
            };
        check(
            &mut h,
            &full[..l4_end - 1],
            "drop",
            Reason::Malformed,
            None,
            &format!("{name} l4 one short"),
        );
        // Cut right after the L4 header: the IP header still claims the payload, so the
        // datagram is cut short (malformed); the same headers with no payload pass.
        if l4_end < full.len() {
            check(
                &mut h,
                &full[..l4_end],
                "drop",
                Reason::Malformed,
                None,
                &format!("{name} cut after l4"),
            );
        }
        let mut bare = f.clone();
        match &mut bare.l4 {
            L4::Udp { payload, .. }
            | L4::Icmp { payload, .. }
            | L4::Tcp { payload, .. }
            | L4::None { payload, .. } => *payload = 0,
        }
        check(
            &mut h,
            &bare.build(),
            "pass",
            Reason::Default,
            Some(7),
            &format!("{name} l4 exactly"),
        );
    }
}

#[test]
fn ipv4_ihl_0_to_15() {
    let mut h = Harness::get();
    h.set_policy(POLICY);
    for ihl in 0..=15u8 {
        let mut f = v4().udp(1, 2);
        f.ihl = ihl;
        let frame = f.build();
        if ihl < 5 {
            check(
                &mut h,
                &frame,
                "drop",
                Reason::Malformed,
                None,
                &format!("ihl {ihl}"),
            );
        } else {
            check(
                &mut h,
                &frame,
                "pass",
                Reason::Default,
                Some(7),
                &format!("ihl {ihl}"),
            );
            // Options announced but cut short.
            let hdr_end = 14 + ihl as usize * 4;
            check(
                &mut h,
                &frame[..hdr_end - 1],
                "drop",
                Reason::Malformed,
                None,
                &format!("ihl {ihl} options cut"),
            );
        }
    }
}

#[test]
fn tcp_data_offset() {
    let mut h = Harness::get();
    h.set_policy(POLICY);
    for fam in [v4(), v6()] {
        for doff in 0..=15u8 {
            let mut f = fam.clone().tcp(1, 2, 0x12);
            if let L4::Tcp { doff: d, .. } = &mut f.l4 {
                *d = doff;
            }
            let frame = f.build();
            let what = format!("{} doff {doff}", if f.is_v6() { "v6" } else { "v4" });
            if doff < 5 {
                check(&mut h, &frame, "drop", Reason::Malformed, None, &what);
            } else {
                check(&mut h, &frame, "pass", Reason::Default, Some(7), &what);
                check(
                    &mut h,
                    &frame[..frame.len() - 1],
                    "drop",
                    Reason::Malformed,
                    None,
                    &format!("{what} options cut"),
                );
            }
        }
    }
}

#[test]
fn vlan_tags_0_to_3() {
    let mut h = Harness::get();
    h.set_policy(POLICY);
    for tpids in [
        vec![],
        vec![0x8100],
        vec![0x88a8],
        vec![0x88a8, 0x8100],
        vec![0x8100, 0x8100],
        vec![0x88a8, 0x88a8],
    ] {
        for base in [v4(), v6()] {
            let mut f = base.clone();
            for (i, t) in tpids.iter().enumerate() {
                f = f.vlan(*t, 100 + i as u16);
            }
            check(
                &mut h,
                &f.build(),
                "pass",
                Reason::Default,
                Some(7),
                &format!("tags {tpids:x?}"),
            );
            // A blocked source behind the same tags is still dropped: tags never hide a packet.
            let mut blocked = f.clone();
            blocked.src = if f.is_v6() {
                "2001:db8:66::1"
            } else {
                "198.18.66.1"
            }
            .parse()
            .unwrap();
            check(
                &mut h,
                &blocked.build(),
                "drop",
                Reason::CustomerBlock,
                Some(7),
                &format!("blocked, tags {tpids:x?}"),
            );
        }
    }
    for tpids in [
        [0x8100, 0x8100, 0x8100],
        [0x88a8, 0x8100, 0x8100],
        [0x88a8, 0x88a8, 0x8100],
    ] {
        let mut f = v4();
        for t in tpids {
            f = f.vlan(t, 5);
        }
        check(
            &mut h,
            &f.build(),
            "drop",
            Reason::UnsupportedEncap,
            None,
            &format!("3 tags {tpids:x?}"),
        );
    }
    // A third tag is refused even when it is cut short (never passed unfiltered).
    let f = v4().vlan(0x8100, 1).vlan(0x8100, 2).vlan(0x8100, 3).build();
    check(
        &mut h,
        &f[..24],
        "drop",
        Reason::UnsupportedEncap,
        None,
        "3 tags, third cut",
    );
}

#[test]
fn ipv6_extension_chains_0_to_9() {
    let mut h = Harness::get();
    h.set_policy(POLICY);
    let kinds = [
        ext::HOP,
        ext::DSTOPTS,
        ext::ROUTING,
        ext::FRAGMENT,
        ext::AH,
        ext::DSTOPTS,
        ext::ROUTING,
        ext::DSTOPTS,
        ext::AH,
    ];
    for n in 0..=9 {
        let mut f = v6().udp(5, 6);
        f.exts = kinds[..n]
            .iter()
            .map(|k| (*k, if *k == ext::AH { 2 } else { 1 }))
            .collect();
        // A fragment header with offset 0 and no more fragments: a whole packet.
        for e in &mut f.exts {
            if e.0 == ext::FRAGMENT {
                e.1 = 0;
            }
        }
        let frame = f.build();
        if n <= 8 {
            check(
                &mut h,
                &frame,
                "pass",
                Reason::Default,
                Some(7),
                &format!("{n} extension headers"),
            );
        } else {
            check(
                &mut h,
                &frame,
                "drop",
                Reason::UnsupportedEncap,
                None,
                &format!("{n} extension headers"),
            );
        }
    }
    // An extension header whose length runs past the frame.
    let mut f = v6().udp(5, 6);
    f.exts = vec![(ext::DSTOPTS, 30)];
    let frame = f.build();
    check(
        &mut h,
        &frame[..14 + 40 + 100],
        "drop",
        Reason::Malformed,
        None,
        "extension header cut",
    );
}

#[test]
fn fragments_first_and_later() {
    let mut h = Harness::get();
    h.set_policy(POLICY);
    // IPv4 first fragment: MF set, offset 0: L4 is parsed (and must be whole).
    let mut first = v4().udp(7, 53);
    first.frag = 0x2000;
    check(
        &mut h,
        &first.build(),
        "pass",
        Reason::Default,
        Some(7),
        "v4 first fragment",
    );
    let cut = first.build();
    check(
        &mut h,
        &cut[..14 + 20 + 4],
        "drop",
        Reason::Malformed,
        None,
        "v4 first fragment, udp cut",
    );
    // Later fragment: offset > 0, no L4 fields, so three bytes of payload are fine...
    let mut later = v4().proto(17, 3);
    later.frag = 0x00b9;
    check(
        &mut h,
        &later.build(),
        "pass",
        Reason::Default,
        Some(7),
        "v4 later fragment",
    );
    // ...and prefix decisions still apply to it.
    later.src = "198.18.66.7".parse().unwrap();
    check(
        &mut h,
        &later.build(),
        "drop",
        Reason::CustomerBlock,
        Some(7),
        "v4 later fragment, blocked source",
    );

    let mut first6 = v6().tcp(7, 443, 0x02);
    first6.exts = vec![(ext::FRAGMENT, 0x0001)];
    check(
        &mut h,
        &first6.build(),
        "pass",
        Reason::Default,
        Some(7),
        "v6 first fragment",
    );
    let b = first6.build();
    check(
        &mut h,
        &b[..b.len() - 10],
        "drop",
        Reason::Malformed,
        None,
        "v6 first fragment, tcp cut",
    );
    let mut later6 = v6().proto(6, 2);
    later6.exts = vec![(ext::FRAGMENT, 0x05a8)];
    check(
        &mut h,
        &later6.build(),
        "pass",
        Reason::Default,
        Some(7),
        "v6 later fragment",
    );
    later6.src = "2001:db8:66::9".parse().unwrap();
    check(
        &mut h,
        &later6.build(),
        "drop",
        Reason::CustomerBlock,
        Some(7),
        "v6 later fragment, blocked source",
    );
}

#[test]
fn non_ip_and_wrong_versions() {
    let mut h = Harness::get();
    h.set_policy(POLICY);
    for (name, et) in [
        ("arp", 0x0806u16),
        ("lldp", 0x88cc),
        ("mpls", 0x8847),
        ("ipx", 0x8137),
    ] {
        check(&mut h, &raw(et, 46), "pass", Reason::NonIp, None, name);
    }
    // ARP behind a tag is still not IP.
    let mut tagged = raw(0x8100, 0);
    tagged.extend([0x00, 0x0a, 0x08, 0x06]);
    tagged.extend([0; 28]);
    check(&mut h, &tagged, "pass", Reason::NonIp, None, "tagged arp");
    let mut f = v4();
    f.version = Some(6);
    check(
        &mut h,
        &f.build(),
        "drop",
        Reason::Malformed,
        None,
        "ipv4 ethertype, version 6",
    );
    let mut f = v6();
    f.version = Some(4);
    check(
        &mut h,
        &f.build(),
        "drop",
        Reason::Malformed,
        None,
        "ipv6 ethertype, version 4",
    );
    // Other L4 protocols carry no L4 header to check.
    check(
        &mut h,
        &v4().proto(47, 0).build(),
        "pass",
        Reason::Default,
        Some(7),
        "gre, no payload",
    );
}

/// Regression: the IPv4 total length and IPv6 payload length were never checked, so a
/// 1,200-byte frame claiming 100 escaped a `length.min` rule. A datagram the frame cuts short
/// is malformed, and so is a frame longer than its datagram beyond Ethernet's minimum-size
/// padding; padding up to 60 bytes (64 with a tag) is normal and passes.
#[test]
fn ip_lengths_must_match_the_frame() {
    let mut h = Harness::get();
    h.set_policy(POLICY);
    for (fam, base) in [("v4", v4()), ("v6", v6())] {
        let frame = base.clone().udp(1000, 53).build();
        let len_at = if fam == "v4" { 16 } else { 18 };
        let claimed = u16::from_be_bytes([frame[len_at], frame[len_at + 1]]);
        // Claims 100 bytes less than it carries: the rest would be invisible to length rules.
        let mut long = frame.clone();
        long.extend(vec![0x41; 1200]);
        check(
            &mut h,
            &long,
            "drop",
            Reason::Malformed,
            None,
            &format!("{fam}: 1,200 bytes more than claimed"),
        );
        // Claims more than it carries.
        let mut short = frame.clone();
        short[len_at..len_at + 2].copy_from_slice(&(claimed + 1).to_be_bytes());
        check(
            &mut h,
            &short,
            "drop",
            Reason::Malformed,
            None,
            &format!("{fam}: claims a byte more"),
        );
        // Exact, and padded to the minimum frame (with and without a tag): normal traffic.
        check(
            &mut h,
            &frame,
            "pass",
            Reason::Default,
            Some(7),
            &format!("{fam}: exact"),
        );
        if frame.len() < 60 {
            let mut padded = frame.clone();
            padded.resize(60, 0);
            check(
                &mut h,
                &padded,
                "pass",
                Reason::Default,
                Some(7),
                &format!("{fam}: padded to 60"),
            );
            let mut over = frame.clone();
            over.resize(61, 0);
            check(
                &mut h,
                &over,
                "drop",
                Reason::Malformed,
                None,
                &format!("{fam}: padded past 60"),
            );
        }
        let tagged = base.clone().udp(1000, 53).vlan(0x8100, 5).build();
        if tagged.len() < 64 {
            let mut padded = tagged.clone();
            padded.resize(64, 0);
            check(
                &mut h,
                &padded,
                "pass",
                Reason::Default,
                Some(7),
                &format!("{fam}: tagged, padded to 64"),
            );
        }
    }
    // A rule on IP length sees every byte the wire carried.
    h.set_policy(
        r#"{"version":1,"customers":[{"id":7,"prefixes":["198.19.7.0/24"],
            "rules":[{"id":1,"match":{"protocol":"udp","length":{"min":600}},"action":"drop"}]}]}"#,
    );
    let mut big = v4().udp(1000, 53);
    big.l4 = L4::Udp {
        sport: 1000,
        dport: 53,
        payload: 1172,
    };
    check(
        &mut h,
        &big.build(),
        "drop",
        Reason::Rule,
        Some(7),
        "a 1,200-byte datagram meets length.min 600",
    );
}

/// Regression: an IPv6 later fragment whose next header is Destination Options was dropped
/// as malformed (its payload was read as extension headers). After a fragment header with an
/// offset, the rest is payload: the fragment passes to the policy (no L4 fields).
#[test]
fn ipv6_later_fragment_payload_is_not_parsed_as_headers() {
    let mut h = Harness::get();
    h.set_policy(POLICY);
    let mut f = v6().proto(ext::DSTOPTS, 24);
    f.exts = vec![(ext::FRAGMENT, 100 << 3)];
    let frame = f.build();
    check(
        &mut h,
        &frame,
        "pass",
        Reason::Default,
        Some(7),
        "later fragment, next header 60",
    );
    let mut blocked = f.clone();
    blocked.src = "2001:db8:66::1".parse().unwrap();
    check(
        &mut h,
        &blocked.build(),
        "drop",
        Reason::CustomerBlock,
        Some(7),
        "later fragment of a blocked source",
    );
}
