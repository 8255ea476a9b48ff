//! The customer-interface program (`mssp_xdp_customer`) with BPF_PROG_TEST_RUN: which packets
//! it would steer, and what it does when it cannot (fail-open), drops (QUIC of a customer
//! that blocks it, a flow with a cached block) or passes without a look.

use aya::{
    Ebpf,
    maps::{Array, HashMap, PerCpuArray},
    programs::Xdp,
};
use mssp_common::{
    abi::config_index,
    filter::{FlowKey, filter_stat, flow_verdict},
};
use mssp_core::{
    dataplane::{Clock, Dataplane, Desired, kernel::KernelBackend},
    loader::{self, CUSTOMER_PROGRAM_NAME, LoadOptions},
    policy::{Capacity, parse_policy},
};
use mssp_tests::{require_root, timing::mean_ns};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const POLICY: &str = r#"{"version":1,"infrastructure":["198.19.250.0/24"],
  "customers":[
    {"id":7,"name":"acme","prefixes":["198.19.7.0/24"],
     "filtering":{"block_domains":["bad.test"],"quic":"block"}},
    {"id":8,"name":"beta","prefixes":["198.19.8.0/24"]}]}"#;

/// Ethernet + IPv4 + UDP (17) or TCP (6, with `flags`) from `src` to 198.18.53.53.
fn frame(src: [u8; 4], proto: u8, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let l4 = if proto == 6 { 20 } else { 8 };
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4 + payload.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&[198, 18, 53, 53]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        f.extend_from_slice(&[
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            1,
            5 << 4,
            flags,
            0xff,
            0xff,
            0,
            0,
            0,
            0,
        ]);
    } else {
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(payload);
    while f.len() < 60 {
        f.push(0);
    }
    f
}

fn stats(e: &Ebpf) -> Vec<u64> {
    let m: PerCpuArray<_, u64> = PerCpuArray::try_from(e.map("FILTER_STATS").unwrap()).unwrap();
    (0..filter_stat::N)
        .map(|i| m.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
        .collect()
}

fn run(e: &Ebpf, f: &[u8]) -> u32 {
    let p: &Xdp = e
        .program(CUSTOMER_PROGRAM_NAME)
        .unwrap()
        .try_into()
        .unwrap();
    mean_ns(p, &[f.to_vec()]).1[0]
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn the_customer_program_steers_only_names_and_fails_open() {
    require_root();
    let mut e = loader::load(&LoadOptions::default()).expect("load");
    let p = parse_policy(POLICY.as_bytes(), &Capacity::default()).unwrap();
    let mut dp = Dataplane::new(KernelBackend::from_ebpf(&mut e).expect("maps"));
    dp.apply(&Desired::from_policy(&p), &Clock::now()).unwrap();
    let (acme, beta, infra) = ([198, 19, 7, 10], [198, 19, 8, 10], [198, 19, 250, 1]);
    let dns =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03bad\x04test\x00\x00\x01\x00\x01";
    let hello = b"\x16\x03\x01\x00\x05hello";
    let delta = |e: &Ebpf, before: &[u64], i: u32| stats(e)[i as usize] - before[i as usize];

    // No heartbeat (no inspector): a DNS query of a filtering customer passes, counted.
    let s0 = stats(&e);
    assert_eq!(run(&e, &frame(acme, 17, 53, 0, dns)), XDP_PASS);
    assert_eq!(delta(&e, &s0, filter_stat::FAIL_OPEN), 1);
    // A fresh heartbeat but no socket on the queue: passes too.
    let mut config: Array<_, u64> = Array::try_from(e.map_mut("CONFIG").unwrap()).unwrap();
    config
        .set(config_index::FILTER_HEARTBEAT, monotonic_ns(), 0)
        .unwrap();
    let s0 = stats(&e);
    assert_eq!(run(&e, &frame(acme, 17, 53, 0, dns)), XDP_PASS);
    assert_eq!(run(&e, &frame(acme, 6, 443, 0x18, hello)), XDP_PASS);
    assert_eq!(delta(&e, &s0, filter_stat::NO_SOCKET), 2);
    // Not a candidate, not filtering, infrastructure, no payload: never looked at.
    let s0 = stats(&e);
    for f in [
        frame(acme, 17, 5353, 0, dns),
        frame(beta, 17, 53, 0, dns),
        frame(infra, 17, 53, 0, dns),
        frame(acme, 6, 443, 0x10, b""),
        frame(beta, 17, 443, 0, b"quic"),
    ] {
        assert_eq!(run(&e, &f), XDP_PASS);
    }
    assert_eq!(
        delta(&e, &s0, filter_stat::NO_SOCKET) + delta(&e, &s0, filter_stat::FAIL_OPEN),
        0
    );
    // QUIC of a customer that blocks it: dropped here.
    let s0 = stats(&e);
    assert_eq!(run(&e, &frame(acme, 17, 443, 0, b"quic")), XDP_DROP);
    assert_eq!(delta(&e, &s0, filter_stat::QUIC_DROP), 1);
    // A flow with a cached block drops, with a cached allow passes; a SYN clears it.
    let key = FlowKey {
        src: [u32::from_be_bytes(acme), 0, 0, 0],
        dst: [u32::from_be_bytes([198, 18, 53, 53]), 0, 0, 0],
        sport: 40000,
        dport: 443,
        proto: 6,
        v6: 0,
        pad: [0; 2],
    };
    let mut flows: HashMap<_, FlowKey, u32> =
        HashMap::try_from(e.map_mut("FLOWS").unwrap()).unwrap();
    flows.insert(key, flow_verdict::BLOCK, 0).unwrap();
    let s0 = stats(&e);
    assert_eq!(run(&e, &frame(acme, 6, 443, 0x18, hello)), XDP_DROP);
    assert_eq!(delta(&e, &s0, filter_stat::CACHE_BLOCK), 1);
    let mut flows: HashMap<_, FlowKey, u32> =
        HashMap::try_from(e.map_mut("FLOWS").unwrap()).unwrap();
    flows.insert(key, flow_verdict::ALLOW, 0).unwrap();
    assert_eq!(run(&e, &frame(acme, 6, 443, 0x18, hello)), XDP_PASS);
    assert_eq!(run(&e, &frame(acme, 6, 443, 0x02, b"")), XDP_PASS);
    let flows: HashMap<_, FlowKey, u32> = HashMap::try_from(e.map("FLOWS").unwrap()).unwrap();
    assert!(
        flows.get(&key, 0).is_err(),
        "a SYN must clear the flow's verdict"
    );
}
