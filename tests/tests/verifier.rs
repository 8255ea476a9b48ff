//! The verifier's budget: every build of the XDP program the agent, the simulator and the
//! bench load must pass the kernel's verifier with room to spare. The kernel stops at a
//! million processed instructions, and how many it processes moves with the kernel's
//! release (pruning heuristics) as well as with our code: a program that passes at 950k on
//! one kernel is refused on the next, and an agent that cannot load its program filters
//! nothing. So each variant's count is reported, and held under [`BUDGET`].

use aya::programs::Xdp;
use mssp_core::loader::{self, Breakdown, CUSTOMER_PROGRAM_NAME, LoadOptions, PROGRAM_NAME};

/// At most this many processed instructions per program: the kernel's limit is 1,000,000,
/// and the other half is margin. A build that had passed CI was refused at the limit by
/// kernel 6.18.44 (the rule loop's context on the stack, then the IPv6 header walk).
const BUDGET: u32 = 500_000;

fn variants() -> Vec<(&'static str, LoadOptions)> {
    let base = LoadOptions::default;
    let mut v = vec![
        ("production", base()),
        (
            "traced (simulate, tests)",
            LoadOptions {
                trace: true,
                ..base()
            },
        ),
        (
            "parse_only",
            LoadOptions {
                parse_only: true,
                ..base()
            },
        ),
        (
            "no_observe",
            LoadOptions {
                no_observe: true,
                ..base()
            },
        ),
    ];
    for b in [
        Breakdown::Slot,
        Breakdown::Record,
        Breakdown::Root,
        Breakdown::Leaf,
        Breakdown::Cells,
    ] {
        v.push((
            breakdown_name(b),
            LoadOptions {
                breakdown: Some(b),
                ..base()
            },
        ));
    }
    v
}

fn breakdown_name(b: Breakdown) -> &'static str {
    match b {
        Breakdown::Slot => "breakdown slot",
        Breakdown::Record => "breakdown record",
        Breakdown::Root => "breakdown root",
        Breakdown::Leaf => "breakdown leaf",
        Breakdown::Cells => "breakdown cells",
    }
}

/// "processed 1000001 insns" from a refusal's log.
fn processed(log: &str) -> Option<u64> {
    let i = log.rfind("processed ")?;
    log[i + 10..].split_whitespace().next()?.parse().ok()
}

#[test]
fn every_variant_verifies_within_budget() {
    mssp_tests::require_root();
    let mut report = Vec::new();
    let mut over = Vec::new();
    // MSSP_VERIFIER_ONLY=production (a comma list) checks only those, when iterating.
    let only = std::env::var("MSSP_VERIFIER_ONLY").ok();
    for (name, opts) in variants() {
        if let Some(o) = &only
            && !o.split(',').any(|w| w == name)
        {
            continue;
        }
        match loader::load(&opts) {
            Ok(mut ebpf) => {
                for prog in [PROGRAM_NAME, CUSTOMER_PROGRAM_NAME] {
                    let p: &mut Xdp = ebpf.program_mut(prog).unwrap().try_into().unwrap();
                    let n = p.info().unwrap().verified_instruction_count().unwrap_or(0);
                    report.push(format!("{name:>26} {prog:<18} {n:>8} instructions"));
                    if n > BUDGET {
                        over.push(format!("{name} / {prog}: {n}"));
                    }
                }
            }
            Err(e) => {
                let e = e.to_string();
                let n = processed(&e).map_or("?".to_string(), |n| n.to_string());
                report.push(format!("{name:>26} refused after {n} instructions"));
                over.push(format!("{name}: refused ({n} processed)"));
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        over.is_empty(),
        "over the verifier budget of {BUDGET}: {over:?}\n{}",
        report.join("\n")
    );
}
