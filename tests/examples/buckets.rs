//! The rate-limit bucket design, measured: program time per packet (BPF_PROG_TEST_RUN,
//! repeat 1, distinct frames) for one customer without rules, with a monitor rule, with a
//! shared GCRA bucket and with per-source buckets, from one thread and from one thread on
//! each CPU at once (the shared bucket's compare-and-swap line then bounces between CPUs).
//!
//! `cargo run --release -p mssp-tests --example buckets` (root). BENCHMARKS.md records a run.
use std::net::Ipv4Addr;

use aya::programs::Xdp;
use mssp_bench::traffic::udp_template;
use mssp_core::{
    dataplane::{Clock, Dataplane, Desired, kernel::KernelBackend},
    loader::{self, LoadOptions, PROGRAM_NAME},
    policy::{Capacity, parse_policy},
};
use mssp_tests::timing::mean_ns;

const VARIANTS: [(&str, &str); 4] = [
    ("no rules", ""),
    (
        "monitor rule",
        r#"{"id":1,"match":{"protocol":"udp"},"action":"monitor"}"#,
    ),
    (
        "shared bucket",
        r#"{"id":1,"match":{"protocol":"udp"},"action":{"rate_limit":{"pps":1000000000,"burst":1000000}}}"#,
    ),
    (
        "per-source buckets",
        r#"{"id":1,"match":{"protocol":"udp"},"action":{"rate_limit":{"pps":1000000000,"burst":1000000,"per_source":true}}}"#,
    ),
];

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn run(prog: &Xdp, frames: &[Vec<u8>]) -> f64 {
    mean_ns(prog, frames).0
}

fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = udp_template(false, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], 64, 9);
    // 65,536 distinct sources: every per-source packet looks up (or makes) its own bucket.
    let frames: Vec<Vec<u8>> = (0..65_536u32)
        .map(|i| {
            let mut f = t.frame.clone();
            f[26..30].copy_from_slice(&Ipv4Addr::from(0xC612_0000 | i).octets());
            f[30..34].copy_from_slice(&Ipv4Addr::new(198, 19, 0, 1).octets());
            f
        })
        .collect();
    println!(
        "{:<20} {:>14} {:>22}",
        "variant", "1 thread", "1 thread per CPU"
    );
    for (name, rule) in VARIANTS {
        let doc = format!(
            r#"{{"version":1,"customers":[{{"id":1,"prefixes":["198.19.0.0/24"],"rules":[{rule}]}}]}}"#
        );
        let mut ebpf = loader::load(&LoadOptions::default()).expect("load");
        let mut dp = Dataplane::new(KernelBackend::from_ebpf(&mut ebpf).expect("maps"));
        let p = parse_policy(doc.as_bytes(), &Capacity::default()).expect("policy");
        dp.apply(&Desired::from_policy(&p), &Clock::now())
            .expect("apply");
        let prog: &Xdp = ebpf
            .program(PROGRAM_NAME)
            .expect("program")
            .try_into()
            .expect("xdp");
        pin(0);
        run(prog, &frames); // warm up (and create the per-source buckets)
        let one = (0..3).map(|_| run(prog, &frames)).fold(f64::MAX, f64::min);
        let all = std::thread::scope(|s| {
            let hs: Vec<_> = (0..cpus)
                .map(|c| {
                    let frames = &frames;
                    s.spawn(move || {
                        pin(c);
                        (0..3).map(|_| run(prog, frames)).fold(f64::MAX, f64::min)
                    })
                })
                .collect();
            let v: Vec<f64> = hs.into_iter().map(|h| h.join().expect("thread")).collect();
            v.iter().sum::<f64>() / v.len() as f64
        });
        println!("{name:<20} {one:>11.0} ns {all:>19.0} ns");
    }
}
