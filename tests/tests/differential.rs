//! Differential test: the kernel program and the reference classifier (mssp-common, written
//! independently) must agree on action, reason and customer for random packets over random
//! policies. Seeded; set MSSP_DIFF_SEED to replay a failure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mssp_common::{Verdict, reference::classify};
use mssp_tests::{
    Harness,
    packet::{Frame, L4, ext, raw},
    policy,
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

const POLICIES: usize = 20;
const PACKETS_PER_POLICY: usize = 500;

struct Pool {
    v4: Vec<u32>,
    v6: Vec<u128>,
}

fn pool(rng: &mut StdRng) -> Pool {
    // 198.18.0.0/15 and 2001:db8::/32 only.
    let v4 = (0..24)
        .map(|_| 0xc612_0000 | rng.random_range(0..0x2_0000u32))
        .collect();
    let v6 = (0..24)
        .map(|_| (0x2001_0db8u128 << 96) | (rng.random::<u128>() >> 32))
        .collect();
    Pool { v4, v6 }
}

fn prefix(rng: &mut StdRng, pool: &Pool) -> String {
    if rng.random_bool(0.6) {
        let base = *pool.v4.choose(rng).unwrap();
        let len = rng.random_range(15..=32u32);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        format!("{}/{len}", Ipv4Addr::from(base & mask))
    } else {
        let base = *pool.v6.choose(rng).unwrap();
        let len = *[32u32, 40, 48, 56, 60, 63, 64, 65, 96, 112, 127, 128]
            .choose(rng)
            .unwrap();
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        format!("{}/{len}", Ipv6Addr::from(base & mask))
    }
}

fn entries(rng: &mut StdRng, pool: &Pool, n: usize) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let p = prefix(rng, pool);
        if !seen.insert(p.clone()) {
            continue;
        }
        let action = *["drop", "drop", "allow", "monitor"].choose(rng).unwrap();
        let expires = match rng.random_range(0..10) {
            0 => r#","expires":"2001-01-01T00:00:00Z""#,
            1 => r#","expires":"2999-01-01T00:00:00Z""#,
            _ => "",
        };
        out.push(format!(
            r#"{{"prefix":"{p}","action":"{action}"{expires}}}"#
        ));
    }
    out.join(",")
}

fn random_policy(rng: &mut StdRng, pool: &Pool, version: u64) -> String {
    let infra: Vec<String> = (0..rng.random_range(0..3))
        .map(|_| format!("\"{}\"", prefix(rng, pool)))
        .collect();
    let mut infra_seen = std::collections::HashSet::new();
    let infra: Vec<String> = infra
        .into_iter()
        .filter(|p| infra_seen.insert(p.clone()))
        .collect();
    let n = rng.random_range(0..25);
    let global = entries(rng, pool, n);
    let mut claimed = std::collections::HashSet::new();
    let mut customers = Vec::new();
    for id in 1..=rng.random_range(1..10u32) {
        let prefixes: Vec<String> = (0..rng.random_range(1..4))
            .map(|_| prefix(rng, pool))
            .filter(|p| claimed.insert(p.clone()))
            .map(|p| format!("\"{p}\""))
            .collect();
        let n = rng.random_range(0..25);
        let sources = entries(rng, pool, n);
        let own: Vec<String> = prefixes
            .iter()
            .map(|p| p.trim_matches('"').to_string())
            .collect();
        let nrules = rng.random_range(0..7);
        let rules: Vec<String> = (0..nrules)
            .map(|i| random_rule(rng, pool, &own, i))
            .collect();
        customers.push(format!(
            r#"{{"id":{id},"prefixes":[{}],"sources":[{sources}],"rules":[{}]}}"#,
            prefixes.join(","),
            rules.join(",")
        ));
    }
    format!(
        r#"{{"version":{version},"infrastructure":[{}],"global":{{"sources":[{global}]}},"customers":[{}]}}"#,
        infra.join(","),
        customers.join(",")
    )
}

const PORTS: [u16; 6] = [53, 80, 123, 443, 11211, 40000];
const VLANS: [u16; 3] = [10, 20, 30];

/// A rule over fields the random packets can hit. Rate limits are set so high no test run can
/// reach them: the reference does not model time (see `RefRuleAction::RateLimit`).
fn random_rule(rng: &mut StdRng, pool: &Pool, own: &[String], id: u32) -> String {
    let mut m = Vec::new();
    if rng.random_bool(0.5) {
        let protos: Vec<String> = (0..rng.random_range(1..3))
            .map(|_| {
                format!(
                    "\"{}\"",
                    ["tcp", "udp", "icmp", "icmpv6", "gre", "50"]
                        .choose(rng)
                        .unwrap()
                )
            })
            .collect();
        m.push(format!(r#""protocol":[{}]"#, protos.join(",")));
    }
    for field in ["src_ports", "dst_ports"] {
        if rng.random_bool(0.3) {
            let ranges: Vec<String> = (0..rng.random_range(1..4))
                .map(|_| {
                    let a = *PORTS.choose(rng).unwrap();
                    if rng.random_bool(0.5) {
                        format!("\"{a}\"")
                    } else {
                        format!("\"{}-{}\"", a, a.saturating_add(rng.random_range(0..500)))
                    }
                })
                .collect();
            m.push(format!(r#""{field}":[{}]"#, ranges.join(",")));
        }
    }
    if rng.random_bool(0.2) {
        let set = *["syn", "ack", "fin", "rst"].choose(rng).unwrap();
        let unset = *["ack", "urg", "psh"]
            .iter()
            .filter(|f| **f != set)
            .collect::<Vec<_>>()
            .choose(rng)
            .unwrap();
        m.push(format!(
            r#""tcp_flags":{{"set":["{set}"],"unset":["{unset}"]}}"#
        ));
    }
    if rng.random_bool(0.15) {
        m.push(format!(
            r#""icmp_type":[{},{}]"#,
            rng.random_range(0..4),
            rng.random_range(0..256)
        ));
    }
    if rng.random_bool(0.1) {
        m.push(format!(r#""icmp_code":{}"#, rng.random_range(0..4)));
    }
    if rng.random_bool(0.2) {
        let a = rng.random_range(20..200u32);
        m.push(format!(
            r#""length":{{"min":{a},"max":{}}}"#,
            a + rng.random_range(0..200)
        ));
    }
    if rng.random_bool(0.15) {
        let a = rng.random_range(0..128u32);
        m.push(format!(
            r#""ttl":{{"min":{a},"max":{}}}"#,
            a + rng.random_range(0..128)
        ));
    }
    if rng.random_bool(0.15) {
        m.push(format!(
            r#""dscp":[{},{}]"#,
            rng.random_range(0..4),
            rng.random_range(0..64)
        ));
    }
    if rng.random_bool(0.2) {
        m.push(format!(
            r#""fragment":["{}"]"#,
            ["none", "first", "later", "any"].choose(rng).unwrap()
        ));
    }
    if rng.random_bool(0.15) {
        m.push(format!(r#""vlan":[{}]"#, VLANS.choose(rng).unwrap()));
    }
    if rng.random_bool(0.3) {
        m.push(format!(r#""sources":["{}"]"#, prefix(rng, pool)));
    }
    if rng.random_bool(0.3) && !own.is_empty() {
        m.push(format!(
            r#""destinations":["{}"]"#,
            own.choose(rng).unwrap()
        ));
    }
    let action = match rng.random_range(0..5) {
        0 | 1 => r#""drop""#.to_string(),
        2 => r#""pass""#.to_string(),
        3 => r#""monitor""#.to_string(),
        _ => r#"{"rate_limit":{"pps":1000000000,"burst":1000000000000,"per_source":true}}"#
            .to_string(),
    };
    format!(
        r#"{{"id":{id},"match":{{{}}},"action":{action}}}"#,
        m.join(",")
    )
}

fn near(rng: &mut StdRng, pool: &Pool, v6: bool) -> IpAddr {
    if v6 {
        let base = *pool.v6.choose(rng).unwrap();
        let bits = rng.random_range(0..=96u32);
        let noise = if bits == 0 {
            0
        } else {
            rng.random::<u128>() >> (128 - bits)
        };
        IpAddr::V6(Ipv6Addr::from(base ^ noise))
    } else {
        let base = *pool.v4.choose(rng).unwrap();
        let bits = rng.random_range(0..=17u32);
        let noise = if bits == 0 {
            0
        } else {
            rng.random::<u32>() >> (32 - bits)
        };
        IpAddr::V4(Ipv4Addr::from(base ^ noise))
    }
}

fn random_frame(rng: &mut StdRng, pool: &Pool) -> Vec<u8> {
    if rng.random_bool(0.03) {
        return raw(
            *[0x0806u16, 0x88cc, 0x8847].choose(rng).unwrap(),
            rng.random_range(0..60),
        );
    }
    let v6 = rng.random_bool(0.5);
    let mut f = Frame::new("198.18.0.1", "198.18.0.2");
    if v6 {
        f = Frame::new("2001:db8::1", "2001:db8::2");
    }
    f.src = near(rng, pool, v6);
    f.dst = near(rng, pool, v6);
    let tags = *[0usize, 0, 0, 1, 1, 2, 3].choose(rng).unwrap();
    for _ in 0..tags {
        let id = if rng.random_bool(0.5) {
            *VLANS.choose(rng).unwrap()
        } else {
            rng.random_range(0..4096)
        };
        f = f.vlan(*[0x8100u16, 0x88a8].choose(rng).unwrap(), id);
    }
    let port = |rng: &mut StdRng| {
        if rng.random_bool(0.7) {
            *PORTS.choose(rng).unwrap() + rng.random_range(0..3)
        } else {
            rng.random()
        }
    };
    f.ttl = rng.random();
    f.tos = (rng.random_range(0..8u8) << 2) | rng.random_range(0..4u8);
    f = match rng.random_range(0..5) {
        0 => {
            let (a, b) = (port(rng), port(rng));
            f.udp(a, b)
        }
        1 => {
            let (a, b) = (port(rng), port(rng));
            f.tcp(a, b, rng.random())
        }
        2 => f.icmp(rng.random_range(0..5), rng.random_range(0..5)),
        3 => f.proto(
            *[47u8, 50, 132, 4, 1, 58].choose(rng).unwrap(),
            rng.random_range(0..30),
        ),
        _ => f.udp(53, 53),
    };
    if let L4::Tcp { doff, .. } = &mut f.l4
        && rng.random_bool(0.2)
    {
        *doff = rng.random_range(0..16);
    }
    if v6 {
        let n = *[0usize, 0, 1, 2, 3, 8, 9].choose(rng).unwrap();
        let kinds = [ext::HOP, ext::DSTOPTS, ext::ROUTING, ext::FRAGMENT, ext::AH];
        f.exts = (0..n)
            .map(|_| {
                let k = *kinds.choose(rng).unwrap();
                let arg = match k {
                    ext::FRAGMENT => *[0u16, 1, 0x0008, 0x00a9].choose(rng).unwrap(),
                    ext::AH => rng.random_range(1..4),
                    _ => rng.random_range(0..3),
                };
                (k, arg)
            })
            .collect();
    } else {
        if rng.random_bool(0.15) {
            f.ihl = rng.random_range(0..16);
        }
        f.frag = *[0u16, 0, 0, 0x2000, 0x0001, 0x20ff, 0x4000]
            .choose(rng)
            .unwrap();
    }
    if rng.random_bool(0.03) {
        f.version = Some(rng.random_range(0..16));
    }
    let mut bytes = f.build();
    if rng.random_bool(0.12) && bytes.len() > 14 {
        let cut = rng.random_range(14..bytes.len());
        bytes.truncate(cut);
    }
    bytes
}

/// One frame through the kernel program and the reference: (action, reason, customer) each.
type Outcome = (&'static str, &'static str, Option<u32>);
fn both(
    h: &mut Harness,
    reference: &mssp_common::reference::RefPolicy,
    frame: &[u8],
    now: u64,
) -> (Outcome, Outcome) {
    let k = h.run(frame);
    let r = classify(reference, frame, now);
    let r_action = match r.verdict {
        Verdict::Pass => "pass",
        Verdict::Drop => "drop",
    };
    (
        (k.action, k.reason, k.customer),
        (r_action, r.reason.name(), r.customer),
    )
}

#[test]
fn kernel_and_reference_agree_on_10000_packets() {
    let seed: u64 = std::env::var("MSSP_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6d73_7370);
    println!("differential seed {seed} (MSSP_DIFF_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::get();
    let mut compared = 0;
    let mut seen: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for round in 0..POLICIES {
        let pool = pool(&mut rng);
        let json = random_policy(&mut rng, &pool, 100 + round as u64);
        h.set_policy(&json);
        let reference = policy(&json).to_reference();
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
        for i in 0..PACKETS_PER_POLICY {
            let frame = random_frame(&mut rng, &pool);
            let (k, r) = both(&mut h, &reference, &frame, now);
            assert_eq!(
                k, r,
                "kernel (left) and reference (right) disagree: seed {seed}, policy {round}, packet {i}\n\
                 frame: {frame:02x?}\npolicy: {json}"
            );
            compared += 1;
            *seen.entry(k.1).or_default() += 1;
        }
    }
    println!("reasons over {compared} packets: {seen:?}");
    assert_eq!(compared, POLICIES * PACKETS_PER_POLICY);
    // The random inputs must reach every outcome, or agreement would prove little.
    for reason in [
        "default",
        "non_ip",
        "malformed",
        "unsupported_encap",
        "infrastructure",
        "allowlisted",
        "global_block",
        "customer_block",
        "rule",
    ] {
        assert!(
            seen.get(reason).copied().unwrap_or(0) >= 50,
            "only {:?} packets with reason {reason}: {seen:?}",
            seen.get(reason)
        );
    }
    assert!(compared >= 10_000);
}

/// Random `/len` prefixes (lengths from `lens`) inside `base/base_len`, deduplicated.
fn nets(
    rng: &mut StdRng,
    n: usize,
    v6: bool,
    base: u128,
    base_len: u32,
    lens: &[u32],
) -> Vec<(u128, u32)> {
    let bits = if v6 { 128 } else { 32 };
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < n {
        let len = *lens.choose(rng).unwrap();
        let host = rng.random::<u128>() & (u128::MAX >> (128 - (bits - base_len)));
        let a = base | host;
        let a = if len == bits {
            a
        } else {
            a & !((1u128 << (bits - len)) - 1)
        };
        seen.insert((a, len));
    }
    seen.into_iter().collect()
}

fn net_str(v6: bool, (a, len): (u128, u32)) -> String {
    if v6 {
        format!("{}/{len}", Ipv6Addr::from(a))
    } else {
        format!("{}/{len}", Ipv4Addr::from(a as u32))
    }
}

fn ip(v6: bool, a: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::from(a as u32))
    }
}

/// Trees several levels deep (thousands of entries in one customer's list and in the global
/// list, hundreds of customers' prefixes), probed at every interval's first and last address
/// and one past each: every probe position of the searches inside a node, and every level,
/// against the reference.
#[test]
fn deep_trees_agree_at_every_interval_boundary() {
    let mut rng = StdRng::seed_from_u64(0x6465_6570);
    let actions = ["drop", "drop", "allow", "monitor"];
    let entry = |rng: &mut StdRng, v6: bool, n: (u128, u32)| {
        let action = *actions.choose(rng).unwrap();
        format!(r#"{{"prefix":"{}","action":"{action}"}}"#, net_str(v6, n))
    };
    // Sources in 198.18.0.0/16 and 2001:db8::/33; customers in 198.19.0.0/16 and
    // 2001:db8:c000::/34.
    let (src4, src6) = (0xc612_0000u128, 0x2001_0db8u128 << 96);
    let s4 = nets(
        &mut rng,
        3000,
        false,
        src4,
        16,
        &[20, 24, 28, 30, 32, 32, 32],
    );
    let s6 = nets(&mut rng, 3000, true, src6, 33, &[48, 56, 64, 96, 128, 128]);
    let g4 = nets(&mut rng, 800, false, src4, 16, &[24, 28, 32]);
    let g6 = nets(&mut rng, 800, true, src6, 33, &[56, 64, 128]);
    let customers = 600u32;
    let c4 = |i: u32| 0xc613_0000u128 + 16 * i as u128;
    let c6 = |i: u32| (0x2001_0db8_c000u128 << 80) | ((i as u128) << 64);
    let mut own = Vec::new();
    own.extend(s4.iter().map(|n| entry(&mut rng, false, *n)));
    own.extend(s6.iter().map(|n| entry(&mut rng, true, *n)));
    let mut global = Vec::new();
    global.extend(g4.iter().map(|n| entry(&mut rng, false, *n)));
    global.extend(g6.iter().map(|n| entry(&mut rng, true, *n)));
    let custs: Vec<String> = (0..customers)
        .map(|i| {
            let sources = if i == 0 { own.join(",") } else { String::new() };
            format!(
                r#"{{"id":{},"prefixes":["{}","{}"],"sources":[{sources}]}}"#,
                i + 1,
                net_str(false, (c4(i), 28)),
                net_str(true, (c6(i), 64))
            )
        })
        .collect();
    let json = format!(
        r#"{{"version":1,"infrastructure":[],"global":{{"sources":[{}]}},"customers":[{}]}}"#,
        global.join(","),
        custs.join(",")
    );
    let mut h = Harness::get();
    h.set_policy(&json);
    let reference = policy(&json).to_reference();
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;

    // The probes: around every source prefix to customer 1, and around every customer's
    // prefix from a random source.
    let mut probes: Vec<(bool, u128, u128)> = Vec::new();
    let around = |v6: bool, (a, len): (u128, u32)| {
        let bits = if v6 { 128 } else { 32 };
        let last = a | (u128::MAX >> (128 - (bits - len)));
        let top = if v6 { u128::MAX } else { u32::MAX as u128 };
        [a.wrapping_sub(1) & top, a, last, last.wrapping_add(1) & top]
    };
    for &n in s4.iter().chain(&g4) {
        for s in around(false, n) {
            probes.push((false, s, c4(0) | rng.random_range(0..16)));
        }
    }
    for &n in s6.iter().chain(&g6) {
        for s in around(true, n) {
            probes.push((true, s, c6(0) | rng.random::<u64>() as u128));
        }
    }
    for i in 0..customers {
        let s4n = s4.choose(&mut rng).unwrap().0;
        for d in around(false, (c4(i), 28)) {
            probes.push((false, s4n, d));
        }
        let s6n = s6.choose(&mut rng).unwrap().0;
        for d in around(true, (c6(i), 64)) {
            probes.push((true, s6n, d));
        }
    }
    let mut seen: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let mut customers_seen = std::collections::BTreeSet::new();
    for (i, &(v6, s, d)) in probes.iter().enumerate() {
        let mut f = if v6 {
            Frame::new("2001:db8::1", "2001:db8::2")
        } else {
            Frame::new("198.18.0.1", "198.18.0.2")
        };
        f.src = ip(v6, s);
        f.dst = ip(v6, d);
        let frame = f.udp(40000, 53).build();
        let (k, r) = both(&mut h, &reference, &frame, now);
        assert_eq!(
            k,
            r,
            "kernel (left) and reference (right) disagree on probe {i}: {} -> {}",
            ip(v6, s),
            ip(v6, d)
        );
        *seen.entry(k.1).or_default() += 1;
        customers_seen.insert(k.2);
    }
    println!(
        "{} probes: {seen:?}, {} customers",
        probes.len(),
        customers_seen.len()
    );
    assert!(probes.len() > 30_000);
    for reason in ["default", "allowlisted", "global_block", "customer_block"] {
        assert!(
            seen.get(reason).copied().unwrap_or(0) >= 500,
            "{reason}: {seen:?}"
        );
    }
    // Every customer was found through the destination tree (plus "no customer").
    assert!(
        customers_seen.len() > customers as usize,
        "{}",
        customers_seen.len()
    );
}
