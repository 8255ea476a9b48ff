//! End to end: the program attached in native mode to a veth between two namespaces, real ICMP
//! and UDP from a blocked and an unblocked source. Blocked packets never arrive, unblocked ones
//! do, and the counters equal what was sent.

use std::{net::SocketAddr, time::Duration};

use aya::programs::{Xdp, XdpMode};
use mssp_common::{
    Reason, Verdict,
    abi::{Counter, counter_index},
};
use mssp_core::dataplane::backend::MapBackend;
use mssp_core::{
    dataplane::{Clock, Dataplane, Desired, kernel::KernelBackend},
    loader::{self, LoadOptions, PROGRAM_NAME},
};
use mssp_tests::{
    ReadCounters,
    netns::Pair,
    policy, require_root,
    traffic::{UdpSink, ping, udp_send},
};

const POLICY: &str = r#"{"version":1,
  "customers":[{"id":7,"prefixes":["198.19.7.0/24","2001:db8:7::/48"],
    "sources":[{"prefix":"198.18.66.0/24","action":"drop"},{"prefix":"2001:db8:66::/48","action":"drop"}]}]}"#;

fn counter(dp: &Dataplane<KernelBackend>, verdict: Verdict, reason: Reason) -> Counter {
    let slot = dp.slot(7).expect("customer 7 slot");
    dp.backend().read_counter_at(counter_index(
        slot,
        verdict as u32,
        reason as u32,
        dp.backend().capacities().slots,
    ))
}

#[test]
fn blocked_never_arrives_unblocked_does_and_counters_match() {
    require_root();
    let pair = Pair::new("e2e");
    pair.address(
        &[
            "198.18.66.10",
            "198.18.1.10",
            "2001:db8:66::10",
            "2001:db8:1::10",
        ],
        &["198.19.7.1", "2001:db8:7::1"],
    );

    let mut ebpf = loader::load(&LoadOptions::default()).expect("load");
    let backend = KernelBackend::from_ebpf(&mut ebpf).expect("maps");
    let mut dp = Dataplane::new(backend);
    dp.apply(&Desired::from_policy(&policy(POLICY)), &Clock::now())
        .expect("apply");
    let if_b = pair.if_b.clone();
    let ebpf = pair.b.run(move || {
        let prog: &mut Xdp = ebpf.program_mut(PROGRAM_NAME).unwrap().try_into().unwrap();
        prog.attach(&if_b, XdpMode::Driver)
            .expect("native XDP attach on veth");
        ebpf
    });
    let mode = pair.b.sh(&["ip", "-d", "link", "show", &pair.if_b]);
    assert!(
        mode.contains("xdp "),
        "not attached in native (driver) mode: {mode}"
    );

    let drop_before = counter(&dp, Verdict::Drop, Reason::CustomerBlock);
    let pass_before = counter(&dp, Verdict::Pass, Reason::Default);

    const N_UDP: u64 = 200;
    const N_PING: u16 = 20;
    let sink4 = UdpSink::start(&pair.b, "198.19.7.1:5001".parse().unwrap());
    let sink6 = UdpSink::start(&pair.b, "[2001:db8:7::1]:5001".parse().unwrap());
    let gap = Duration::from_micros(200);
    for (src, dst) in [
        ("198.18.66.10:7000", "198.19.7.1:5001"),
        ("198.18.1.10:7000", "198.19.7.1:5001"),
        ("[2001:db8:66::10]:7000", "[2001:db8:7::1]:5001"),
        ("[2001:db8:1::10]:7000", "[2001:db8:7::1]:5001"),
    ] {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = dst.parse().unwrap();
        udp_send(&pair.a, src, dst, N_UDP, gap);
    }
    let got4 = sink4.finish(Duration::from_millis(300));
    let got6 = sink6.finish(Duration::from_millis(0));
    let ms = Duration::from_millis(5);
    let replies_blocked4 = ping(
        &pair.a,
        "198.18.66.10".parse().unwrap(),
        "198.19.7.1".parse().unwrap(),
        N_PING,
        ms,
    );
    let replies_ok4 = ping(
        &pair.a,
        "198.18.1.10".parse().unwrap(),
        "198.19.7.1".parse().unwrap(),
        N_PING,
        ms,
    );
    let replies_blocked6 = ping(
        &pair.a,
        "2001:db8:66::10".parse().unwrap(),
        "2001:db8:7::1".parse().unwrap(),
        N_PING,
        ms,
    );
    let replies_ok6 = ping(
        &pair.a,
        "2001:db8:1::10".parse().unwrap(),
        "2001:db8:7::1".parse().unwrap(),
        N_PING,
        ms,
    );

    let blocked4 = "198.18.66.10".parse().unwrap();
    let ok4 = "198.18.1.10".parse().unwrap();
    let blocked6 = "2001:db8:66::10".parse().unwrap();
    let ok6 = "2001:db8:1::10".parse().unwrap();
    assert_eq!(got4.get(&blocked4), None, "a blocked IPv4 datagram arrived");
    assert_eq!(got6.get(&blocked6), None, "a blocked IPv6 datagram arrived");
    assert_eq!(
        got4.get(&ok4),
        Some(&N_UDP),
        "unblocked IPv4 datagrams lost"
    );
    assert_eq!(
        got6.get(&ok6),
        Some(&N_UDP),
        "unblocked IPv6 datagrams lost"
    );
    assert_eq!(
        (replies_blocked4, replies_blocked6),
        (0, 0),
        "a blocked echo request was answered"
    );
    assert_eq!(
        (replies_ok4, replies_ok6),
        (N_PING as u64, N_PING as u64),
        "unblocked echo requests unanswered"
    );

    let dropped = counter(&dp, Verdict::Drop, Reason::CustomerBlock).packets - drop_before.packets;
    let passed = counter(&dp, Verdict::Pass, Reason::Default).packets - pass_before.packets;
    let sent_each = N_UDP + N_PING as u64;
    assert_eq!(
        dropped,
        2 * sent_each,
        "dropped counter != blocked packets sent"
    );
    assert_eq!(
        passed,
        2 * sent_each,
        "passed counter != unblocked packets sent"
    );
    drop(ebpf);
}
