//! Development aid: mean program time over many distinct frames (BPF_PROG_TEST_RUN, repeat 1).
//! `micro [customers] [sources per customer] [v4|v6] [parse_only]`.
use aya::programs::Xdp;
use mssp_bench::{policy_gen::generate, traffic::udp_template};
use mssp_core::{
    dataplane::{Clock, Dataplane, Desired, kernel::KernelBackend},
    loader::{self, LoadOptions, PROGRAM_NAME},
    policy::{Capacity, validate},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let customers: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let per: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let v6 = args.get(3).is_some_and(|s| s == "v6");
    let g = generate(customers, per, 2);
    let parse_only = args.get(4).is_some_and(|s| s == "parse_only");
    let mut ebpf = loader::load(&LoadOptions {
        parse_only,
        ..LoadOptions::default()
    })
    .unwrap();
    let mut dp = Dataplane::new(KernelBackend::from_ebpf(&mut ebpf).unwrap());
    let p = validate(&g.doc(), &Capacity::default()).unwrap();
    dp.apply(&Desired::from_policy(&p), &Clock::now()).unwrap();
    let flows = g.flows(v6, false, 400_000, 3);
    let t = udp_template(v6, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], 64, 9);
    let prog: &Xdp = ebpf.program(PROGRAM_NAME).unwrap().try_into().unwrap();
    let mut frames = Vec::new();
    for (s, d) in &flows {
        let mut f = t.frame.clone();
        match (s, d) {
            (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
                f[26..30].copy_from_slice(&s.octets());
                f[30..34].copy_from_slice(&d.octets());
            }
            (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
                f[22..38].copy_from_slice(&s.octets());
                f[38..54].copy_from_slice(&d.octets());
            }
            _ => unreachable!(),
        }
        frames.push(f);
    }
    for pass in 0..3 {
        println!(
            "pass {pass}: {:.0} ns per packet (mean over {} distinct frames)",
            mssp_tests::timing::mean_ns(prog, &frames).0,
            frames.len()
        );
    }
}
