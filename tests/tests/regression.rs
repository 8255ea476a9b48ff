//! Performance regression check that cannot flake: BPF_PROG_TEST_RUN program time per packet
//! for each fixture class, as a ratio to `parse_only` (the same program built to parse and
//! drop) on the same frames, in the same run. Hot-cache figures (a small working set, passes repeated), so they
//! measure instructions and map lookups, not this VM's DRAM; the bounds are loose (several
//! times what a healthy build measures) so only a real regression — an accidental linear
//! scan, a lookup per rule per packet, a per-packet map update — trips them. Every class also
//! checks its verdict, so it measures the path it is named after.
//!
//! `cargo xtask bench` is where the absolute and at-scale figures come from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::Xdp;
use mssp_bench::traffic::udp_template;
use mssp_core::{
    dataplane::{Clock, Dataplane, Desired, kernel::KernelBackend},
    loader::{self, LoadOptions, PROGRAM_NAME},
    policy::{Capacity, parse_policy},
};
use mssp_tests::{require_root, timing::mean_ns};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const CUSTOMERS: u32 = 100;

/// 100 customers with 10 IPv4 and 10 IPv6 source drops each, a global list and an
/// infrastructure prefix; customer 0 has eight rules, only the last of which matches UDP.
fn policy() -> String {
    let mut customers = Vec::new();
    for c in 0..CUSTOMERS {
        let mut sources = Vec::new();
        for x in 0..10 {
            sources.push(format!(
                r#"{{"prefix":"198.18.{c}.{x}/32","action":"drop"}}"#
            ));
            sources.push(format!(
                r#"{{"prefix":"2001:db8:2:{c:x}::{x:x}/128","action":"drop"}}"#
            ));
        }
        let rules = if c == 0 {
            let mut r: Vec<String> = (0..7)
                .map(|i| {
                    format!(
                        r#"{{"id":{i},"match":{{"protocol":"tcp","dst_ports":["{}"]}},"action":"drop"}}"#,
                        1000 + i
                    )
                })
                .collect();
            r.push(r#"{"id":7,"match":{"protocol":"udp"},"action":"monitor"}"#.into());
            r.join(",")
        } else {
            String::new()
        };
        customers.push(format!(
            r#"{{"id":{},"prefixes":["198.19.{c}.0/24","2001:db8:1:{c:x}::/64"],"sources":[{}],"rules":[{rules}]}}"#,
            c + 1,
            sources.join(",")
        ));
    }
    format!(
        r#"{{"version":1,"infrastructure":["198.18.255.0/24"],
            "global":{{"sources":[{{"prefix":"198.18.200.0/22","action":"drop"}}]}},
            "customers":[{}]}}"#,
        customers.join(",")
    )
}

fn frame(src: IpAddr, dst: IpAddr, vlans: usize) -> Vec<u8> {
    let t = udp_template(src.is_ipv6(), [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], 64, 9);
    let mut f = t.frame;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f[26..30].copy_from_slice(&s.octets());
            f[30..34].copy_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f[22..38].copy_from_slice(&s.octets());
            f[38..54].copy_from_slice(&d.octets());
        }
        _ => unreachable!("one family per frame"),
    }
    for i in 0..vlans {
        let tpid: u16 = if i + 1 == vlans { 0x8100 } else { 0x88a8 };
        let tag = [tpid.to_be_bytes(), (100 + i as u16).to_be_bytes()].concat();
        f.splice(12..12, tag);
    }
    f
}

struct Class {
    name: &'static str,
    frames: Vec<Vec<u8>>,
    verdict: u32,
    /// At most this many times `parse_only` on the same frames.
    bound: f64,
}

fn classes() -> Vec<Class> {
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let v6 = |s: String| IpAddr::V6(s.parse::<Ipv6Addr>().expect("v6"));
    let n = 256u32;
    let each = |f: &dyn Fn(u32) -> Vec<u8>| (0..n).map(f).collect::<Vec<_>>();
    vec![
        Class {
            name: "ipv4_default",
            frames: each(&|j| {
                let c = (j % CUSTOMERS) as u8;
                frame(v4(198, 18, 150, j as u8), v4(198, 19, c, 1), 0)
            }),
            verdict: XDP_PASS,
            bound: 6.0,
        },
        Class {
            name: "ipv4_customer_block",
            frames: each(&|j| {
                let c = (j % CUSTOMERS) as u8;
                frame(v4(198, 18, c, (j % 10) as u8), v4(198, 19, c, 1), 0)
            }),
            verdict: XDP_DROP,
            bound: 6.0,
        },
        Class {
            name: "ipv4_global_block",
            frames: each(&|j| {
                let c = (j % CUSTOMERS) as u8;
                frame(v4(198, 18, 200, j as u8), v4(198, 19, c, 1), 0)
            }),
            verdict: XDP_DROP,
            bound: 6.0,
        },
        Class {
            name: "ipv4_infrastructure",
            frames: each(&|j| frame(v4(198, 18, 255, j as u8), v4(198, 19, 1, 1), 0)),
            verdict: XDP_PASS,
            bound: 6.0,
        },
        Class {
            name: "ipv4_eight_rules",
            frames: each(&|j| frame(v4(198, 18, 150, j as u8), v4(198, 19, 0, 1), 0)),
            verdict: XDP_PASS,
            bound: 10.0,
        },
        Class {
            name: "ipv4_two_vlan_tags",
            frames: each(&|j| {
                let c = (j % CUSTOMERS) as u8;
                frame(v4(198, 18, 150, j as u8), v4(198, 19, c, 1), 2)
            }),
            verdict: XDP_PASS,
            bound: 6.0,
        },
        Class {
            name: "ipv6_default",
            frames: each(&|j| {
                let c = j % CUSTOMERS;
                frame(
                    v6(format!("2001:db8:3::{j:x}")),
                    v6(format!("2001:db8:1:{c:x}::1")),
                    0,
                )
            }),
            verdict: XDP_PASS,
            bound: 6.0,
        },
        Class {
            name: "ipv6_customer_block",
            frames: each(&|j| {
                let c = j % CUSTOMERS;
                frame(
                    v6(format!("2001:db8:2:{c:x}::{:x}", j % 10)),
                    v6(format!("2001:db8:1:{c:x}::1")),
                    0,
                )
            }),
            verdict: XDP_DROP,
            bound: 6.0,
        },
    ]
}

/// Mean program time per packet over `frames` (the kernel's own clock around each run), the
/// least of five passes over a working set small enough to stay in cache; and the verdicts
/// seen.
fn measure(prog: &Xdp, frames: &[Vec<u8>]) -> (f64, Vec<u32>) {
    let (mut best, verdicts) = mean_ns(prog, frames);
    for _ in 1..5 {
        best = best.min(mean_ns(prog, frames).0);
    }
    (best, verdicts)
}

#[test]
fn program_time_per_fixture_class_stays_within_bounds_of_parse_only() {
    require_root();

    let floor = loader::load(&LoadOptions {
        parse_only: true,
        ..Default::default()
    })
    .expect("load parse_only");
    let mut full = loader::load(&LoadOptions::default()).expect("load");
    {
        let mut dp = Dataplane::new(KernelBackend::from_ebpf(&mut full).expect("maps"));
        let p = parse_policy(policy().as_bytes(), &Capacity::default()).expect("policy");
        dp.apply(&Desired::from_policy(&p), &Clock::now())
            .expect("apply");
    }

    let floor_prog: &Xdp = floor
        .program(PROGRAM_NAME)
        .expect("program")
        .try_into()
        .expect("xdp");
    let full_prog: &Xdp = full
        .program(PROGRAM_NAME)
        .expect("program")
        .try_into()
        .expect("xdp");
    let mut failures = Vec::new();
    println!(
        "{:<22} {:>12} {:>12} {:>7} {:>7}",
        "class", "parse_only", "mssp", "ratio", "bound"
    );
    for c in classes() {
        let (base, _) = measure(floor_prog, &c.frames);
        let (ns, verdicts) = measure(full_prog, &c.frames);
        let wrong = verdicts.iter().filter(|v| **v != c.verdict).count();
        assert_eq!(
            wrong,
            0,
            "{}: {wrong} of {} frames did not get verdict {} (got {:?}…)",
            c.name,
            verdicts.len(),
            c.verdict,
            &verdicts[..verdicts.len().min(8)]
        );
        let ratio = ns / base.max(1.0);
        println!(
            "{:<22} {:>9.1} ns {:>9.1} ns {:>7.2} {:>7.1}",
            c.name, base, ns, ratio, c.bound
        );
        if ratio > c.bound {
            failures.push(format!(
                "{}: {ns:.1} ns per packet is {ratio:.2}x parse_only ({base:.1} ns); the bound is {}x",
                c.name, c.bound
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Attack detection's cost in the data path: the same program with and without meters and
/// sampling (`OBSERVE`), every customer metered, at the default sampling rate (no agent runs
/// here to change it). The contract: at most 50 ns per packet.
#[test]
fn meters_and_sampling_cost_at_most_50_ns_per_packet() {
    require_root();
    let with_detection = policy().replacen(
        r#""version":1,"#,
        r#""version":1,"detection":{"mode":"monitor","thresholds":{"pps":1000000000}},"#,
        1,
    );
    let p = parse_policy(with_detection.as_bytes(), &Capacity::default()).expect("policy");
    let load = |no_observe: bool| {
        let mut e = loader::load(&LoadOptions {
            no_observe,
            ..Default::default()
        })
        .expect("load");
        let mut dp = Dataplane::new(KernelBackend::from_ebpf(&mut e).expect("maps"));
        let d = Desired::from_policy(&p);
        assert!(
            d.customers.iter().all(|c| c.meter),
            "every customer metered"
        );
        dp.apply(&d, &Clock::now()).expect("apply");
        e
    };
    // Up to three attempts, each over two fresh loads: a noisy moment on this shared
    // machine, or where two loads' maps happen to land (a fresh-clone CI run measured even
    // infrastructure traffic, which is never metered, 40-60 ns slower), is not a
    // regression; a real one fails all three.
    let mut cost = f64::MAX;
    let mut observed = load(false);
    for attempt in 1..=3 {
        if attempt > 1 {
            observed = load(false);
        }
        let plain = load(true);
        let obs_prog: &Xdp = observed
            .program(PROGRAM_NAME)
            .expect("program")
            .try_into()
            .expect("xdp");
        let plain_prog: &Xdp = plain
            .program(PROGRAM_NAME)
            .expect("program")
            .try_into()
            .expect("xdp");
        let mut costs = Vec::new();
        println!(
            "attempt {attempt}\n{:<22} {:>14} {:>14} {:>9}",
            "class", "no meters", "meters", "cost"
        );
        for c in classes() {
            // Interleaved, best of five rounds each, so drift in the machine hits both alike.
            let (mut a, mut b) = (f64::MAX, f64::MAX);
            for _ in 0..5 {
                a = a.min(measure(plain_prog, &c.frames).0);
                b = b.min(measure(obs_prog, &c.frames).0);
            }
            println!(
                "{:<22} {:>11.1} ns {:>11.1} ns {:>6.1} ns",
                c.name,
                a,
                b,
                b - a
            );
            costs.push(b - a);
        }
        // Per packet over the fixture mix: the mean of the classes (one class's noise on
        // this shared machine is not a regression; a real one moves them all).
        cost = cost.min(costs.iter().sum::<f64>() / costs.len() as f64);
        if cost <= 50.0 {
            break;
        }
    }
    println!("meters and sampling: {cost:.1} ns per packet over the fixture mix");
    // The path measured is the metered one: every destination of the fixtures has a meter.
    let (mut meters, _) = mssp_core::observe::take(&mut observed).expect("observe maps");
    let read = meters.read();
    let v4 = read.iter().filter(|(k, _)| k.v4().is_some()).count();
    assert!(v4 >= CUSTOMERS as usize, "{v4} IPv4 destinations metered");
    assert!(read.iter().all(|(_, m)| m.packets[0] > 0));
    assert!(
        cost <= 50.0,
        "meters and sampling cost {cost:.1} ns per packet; the bound is 50 ns"
    );
}

/// Content filtering's cost to traffic it does not steer. On upstream interfaces the
/// firewall program never steers: the same program with every customer (and the global
/// list) filtering names and with none, interleaved. The contract: at most 3% more per
/// packet. On customer interfaces, the customer program's cost for traffic that is not a
/// candidate (no DNS, TLS or HTTP) is printed beside it.
#[test]
fn filtering_costs_unsteered_traffic_at_most_3_percent() {
    require_root();
    let plain_doc = policy();
    let filtering = plain_doc
        .replace(
            r#""rules":["#,
            r#""filtering":{"block_domains":["bad.test","malware.test"],"quic":"block"},"rules":["#,
        )
        .replacen(
            r#""global":{"sources":"#,
            r#""global":{"filtering":{"block_domains":["feed.test"]},"sources":"#,
            1,
        );
    assert_ne!(filtering, plain_doc);
    // One program and one set of maps, the policy switched between rounds: what differs is
    // only what filtering publishes (the records' flags).
    let docs = [plain_doc.as_str(), filtering.as_str()].map(|d| {
        Desired::from_policy(&parse_policy(d.as_bytes(), &Capacity::default()).expect("policy"))
    });
    assert!(docs[1].customers.iter().all(|c| c.filter && c.block_quic) && docs[1].global_filter);
    let mut e = loader::load(&LoadOptions::default()).expect("load");
    let mut dp = Dataplane::new(KernelBackend::from_ebpf(&mut e).expect("maps"));
    let fw: &Xdp = e
        .program(PROGRAM_NAME)
        .expect("program")
        .try_into()
        .expect("xdp");
    let cust: &Xdp = e
        .program(loader::CUSTOMER_PROGRAM_NAME)
        .expect("customer program")
        .try_into()
        .expect("xdp");
    let mut ratio = f64::MAX;
    for attempt in 1..=3 {
        let (mut sum_w, mut sum_wo, mut sum_c) = (0.0, 0.0, 0.0);
        println!(
            "attempt {attempt}\n{:<22} {:>14} {:>14} {:>18}",
            "class", "no filtering", "filtering", "customer program"
        );
        for c in classes() {
            let (mut a, mut b, mut k) = (f64::MAX, f64::MAX, f64::MAX);
            for _ in 0..5 {
                dp.apply(&docs[0], &Clock::now()).expect("apply");
                a = a.min(measure(fw, &c.frames).0);
                dp.apply(&docs[1], &Clock::now()).expect("apply");
                b = b.min(measure(fw, &c.frames).0);
                k = k.min(measure(cust, &c.frames).0);
            }
            println!(
                "{:<22} {:>11.1} ns {:>11.1} ns {:>15.1} ns",
                c.name, a, b, k
            );
            sum_wo += a;
            sum_w += b;
            sum_c += k;
        }
        ratio = ratio.min(sum_w / sum_wo);
        println!(
            "filtering on / off: {ratio:.3}; customer program on unsteered traffic: {:.1} ns mean",
            sum_c / classes().len() as f64
        );
        if ratio <= 1.03 {
            break;
        }
    }
    assert!(
        ratio <= 1.03,
        "unsteered packets cost {ratio:.3}x with filtering; the bound is 1.03x"
    );
}
