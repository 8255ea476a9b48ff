//! One benchmark run: every variant over every traffic mix, interleaved in rounds on one veth
//! pair, then the control-plane figures; the summary (`target/bench/summary.json`) and the
//! tables.
//!
//! Variants: `parse_only` (mssp's parser, then drop), `mssp_1k`, `mssp_1m`, `lpm_trie_1m`
//! (the same 1M source entries in one kernel LPM trie keyed by (customer, source)) and
//! `nft_set_1m` (nftables at the netdev ingress hook: a verdict map on the destination jumps
//! to the customer's chain, which drops sources in the customer's set). Every variant drops
//! all the traffic it is offered, so each measures its own per-packet cost.
//!
//! Mpps is measured with BPF statistics off (packets the receiving veth took); the
//! per-packet program time (`ns_per_pkt`) in a second half of each window with
//! `BPF_ENABLE_STATS` on.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use mssp_core::loader::{Breakdown, LoadOptions};
use mssp_lab::{Bpffs, Pair};
use serde_json::json;

use crate::{
    control::control_plane,
    machine::{measure as measure_machine, miss_ns},
    policy_gen::generate,
    traffic::{Generator, udp_template},
    variants::{RX_CPU, Throughput, Variant, attach, detach, lpm_variant, measure, mssp_variant},
};

/// Per variant: the Mpps, the ns/packet and the on-the-wire Mpps of each round.
type PerVariant = BTreeMap<&'static str, (Vec<f64>, Vec<f64>, Vec<f64>)>;

pub struct BenchOpts {
    pub quick: bool,
    pub out: PathBuf,
    /// Only these variants (development; the summary then lacks the others).
    pub only: Vec<String>,
    /// Only these traffic mixes.
    pub mixes: Vec<String>,
    pub rounds: Option<usize>,
    pub secs: Option<f64>,
    pub skip_control: bool,
    pub throughput: Throughput,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

pub const NAMES: [&str; 10] = [
    "parse_only",
    "mssp_1k",
    "mssp_1m",
    "lpm_trie_1m",
    "nft_set_1m",
    "mssp_1m_to_record",
    "mssp_1m_to_root",
    "mssp_1m_to_leaf",
    "mssp_1m_to_slot",
    "mssp_1m_hit_cells",
];

/// The breakdown variants (index in [`NAMES`], where they stop): mssp_1m's program over
/// mssp_1m's own policy maps (shared, so the same memory), stopping after one step.
const BREAKDOWN: [(usize, Breakdown); 5] = [
    (8, Breakdown::Slot),
    (5, Breakdown::Record),
    (6, Breakdown::Root),
    (7, Breakdown::Leaf),
    (9, Breakdown::Cells),
];

pub fn run(opts: &BenchOpts) -> anyhow::Result<()> {
    let rounds = opts.rounds.unwrap_or(if opts.quick { 3 } else { 5 });
    let secs = opts.secs.unwrap_or(if opts.quick { 2.0 } else { 10.0 });
    // Every mix in both modes: IPv6 and Zipf belong in the headline table.
    let mut mixes: Vec<(&str, bool, bool)> = vec![
        ("ipv4_uniform", false, false),
        ("ipv4_zipf", false, true),
        ("ipv6_uniform", true, false),
        ("ipv6_zipf", true, true),
    ];
    if !opts.mixes.is_empty() {
        let all = [
            ("ipv4_uniform", false, false),
            ("ipv4_zipf", false, true),
            ("ipv6_uniform", true, false),
            ("ipv6_zipf", true, true),
        ];
        mixes = all
            .into_iter()
            .filter(|m| opts.mixes.iter().any(|x| x == m.0))
            .collect();
    }
    let wanted = |name: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == name);
    let started = Instant::now();
    let mut control = BTreeMap::new();
    eprintln!("bench: measuring this machine's dependent-load latency on CPU {RX_CPU}");
    let machine = measure_machine(RX_CPU, 2_000_000)?;
    eprintln!(
        "bench: generating policies (1k: 100 customers x 10 sources; 1M: 10k customers x 100 sources)"
    );
    let g1k = generate(100, 10, 1);
    let g1m = generate(10_000, 100, 2);
    let net = Pair::try_new("bench").map_err(anyhow::Error::msg)?;
    let src_mac = net.a.mac(&net.if_a).map_err(anyhow::Error::msg)?;
    let dst_mac = net.b.mac(&net.if_b).map_err(anyhow::Error::msg)?;

    eprintln!("bench: loading the variants");
    let mut variants: Vec<(usize, Variant)> = Vec::new();
    // A variant loaded only for the policy maps others share.
    let mut keep: Vec<Variant> = Vec::new();
    if wanted("parse_only") {
        let o = LoadOptions {
            parse_only: true,
            ..LoadOptions::default()
        };
        variants.push((0, mssp_variant(None, &o, &mut control)?));
    }
    if wanted("mssp_1k") {
        variants.push((
            1,
            mssp_variant(Some(&g1k), &LoadOptions::default(), &mut control)?,
        ));
    }
    // mssp_1m pins its maps in a private bpffs so the breakdown variants can share its policy.
    let pins = Bpffs::try_new("bench").map_err(anyhow::Error::msg)?;
    let want_breakdown = BREAKDOWN.iter().any(|(i, _)| wanted(NAMES[*i]));
    if wanted("mssp_1m") || want_breakdown {
        let o = LoadOptions {
            pin_maps: Some(pins.dir.clone()),
            ..LoadOptions::default()
        };
        let v = mssp_variant(Some(&g1m), &o, &mut control)?;
        if wanted("mssp_1m") {
            variants.push((2, v));
        } else {
            keep.push(v);
        }
    }
    for (i, stop) in BREAKDOWN {
        if wanted(NAMES[i]) {
            let o = LoadOptions {
                share_policy_maps: Some(pins.dir.clone()),
                breakdown: Some(stop),
                ..LoadOptions::default()
            };
            variants.push((i, mssp_variant(None, &o, &mut control)?));
        }
    }
    if wanted("lpm_trie_1m") {
        variants.push((3, lpm_variant(&g1m)?));
    }
    if wanted("nft_set_1m") {
        let t = Instant::now();
        let rules = g1m.nft_ruleset(&net.if_b);
        let file = std::env::temp_dir().join(format!("mssp-bench-{}.nft", std::process::id()));
        std::fs::write(&file, rules)?;
        let r = net
            .b
            .try_sh(&["nft", "-f", file.to_str().unwrap_or_default()])
            .map_err(anyhow::Error::msg);
        let _ = std::fs::remove_file(&file);
        r.context("loading the nftables ruleset")?;
        control.insert("nft_load_1m_s".into(), json!(t.elapsed().as_secs_f64()));
        variants.push((4, Variant::Nft));
    }

    let mut results: BTreeMap<String, PerVariant> = BTreeMap::new();
    for (mix, v6, zipf) in &mixes {
        eprintln!("bench: traffic {mix}");
        let template = udp_template(*v6, src_mac, dst_mac, 64, 9);
        let mut gens = [
            Generator::new(template.clone(), &g1m.flows(*v6, *zipf, 1 << 20, 3))?,
            Generator::new(template, &g1k.flows(*v6, *zipf, 1 << 16, 4))?,
        ];
        for g in &mut gens {
            g.hold_dispatcher(&net.a)?;
        }
        let per = results.entry(mix.to_string()).or_default();
        for round in 0..rounds {
            for (i, v) in variants.iter_mut() {
                let i = *i;
                let napi = attach(v, &net, opts.throughput)?;
                let g = if NAMES[i] == "mssp_1k" {
                    &gens[1]
                } else {
                    &gens[0]
                };
                let m = measure(v, &net, g, secs, opts.throughput, &napi)?;
                detach(v);
                eprintln!(
                    "  round {round} {:<18} {:.3} Mpps ({:.3} on the wire{}) {}",
                    NAMES[i],
                    m.mpps,
                    m.mpps_wall,
                    m.busy.map_or(String::new(), |b| format!(
                        ", rx CPU {:.0}% busy",
                        b * 100.0
                    )),
                    m.ns.map_or("-".into(), |n| format!("{n:.0} ns/pkt"))
                );
                let e = per.entry(NAMES[i]).or_default();
                e.0.push(m.mpps);
                if let Some(n) = m.ns {
                    e.1.push(n);
                }
                e.2.push(m.mpps_wall);
            }
        }
    }
    drop(variants);
    drop(keep);
    drop(pins);
    drop(net);

    if !opts.skip_control {
        // Tearing down the variants (a million-element nft set, the 1M maps) goes on in
        // kernel workers for seconds after the drops above; measured during that, a CLI
        // edit's p99 was 89 ms instead of ~30.
        let waited = wait_until_idle(Duration::from_secs(90));
        control.insert("quiesce_before_s".into(), json!(waited.as_secs_f64()));
        eprintln!("bench: control-plane figures");
        control_plane(&g1m, &mut control).context("control-plane figures")?;
    }

    // Summary: the headline mix's figures at the top level, every mix below.
    let summarize = |per: &PerVariant| {
        let mut out = serde_json::Map::new();
        for (name, (m, n, w)) in per {
            let (mut m, mut n, mut w) = (m.clone(), n.clone(), w.clone());
            let mm = median(&mut m);
            let nn = (!n.is_empty()).then(|| median(&mut n));
            out.insert(
                name.to_string(),
                json!({
                    "mpps": mm, "mpps_min": m.first(), "mpps_max": m.last(),
                    "ns_per_pkt": nn, "ns_min": n.first(), "ns_max": n.last(),
                    "mpps_wall": median(&mut w),
                }),
            );
        }
        serde_json::Value::Object(out)
    };
    let headline = results
        .get("ipv4_uniform")
        .map(summarize)
        .unwrap_or_else(|| json!({}));
    let mixes_json: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(k, v)| (k.clone(), summarize(v)))
        .collect();
    let at = |mix: &str, name: &str, k: &str| {
        mixes_json
            .get(mix)
            .and_then(|m| m[name][k].as_f64())
            .unwrap_or(f64::NAN)
    };
    let f = |name: &str, k: &str| at("ipv4_uniform", name, k);
    let ratios = json!({
        "mssp_1k_over_parse_only_mpps": f("mssp_1k", "mpps") / f("parse_only", "mpps"),
        "mssp_1m_over_parse_only_mpps": f("mssp_1m", "mpps") / f("parse_only", "mpps"),
        "mssp_1m_over_lpm_trie_1m_ns": f("mssp_1m", "ns_per_pkt") / f("lpm_trie_1m", "ns_per_pkt"),
        "mssp_1m_over_lpm_trie_1m_ns_ipv6": at("ipv6_uniform", "mssp_1m", "ns_per_pkt") / at("ipv6_uniform", "lpm_trie_1m", "ns_per_pkt"),
        "mssp_1k_over_parse_only_ns": f("mssp_1k", "ns_per_pkt") / f("parse_only", "ns_per_pkt"),
        "mssp_1m_over_nft_set_1m_mpps": f("mssp_1m", "mpps") / f("nft_set_1m", "mpps"),
    });
    let targets = targets(&ratios);
    // The breakdown: what each step of mssp_1m's lookup adds (median ns/packet differences).
    let breakdown: serde_json::Map<String, serde_json::Value> = mixes_json
        .keys()
        .map(|mix| {
            let ns = |name: &str| at(mix, name, "ns_per_pkt");
            (
                mix.clone(),
                json!({
                    "parse_and_count": ns("parse_only"),
                    "destination_tree": ns("mssp_1m_to_slot") - ns("parse_only"),
                    "customer_record": ns("mssp_1m_to_record") - ns("mssp_1m_to_slot"),
                    "source_tree_root": ns("mssp_1m_to_root") - ns("mssp_1m_to_record"),
                    "rest_of_tree_to_leaf": ns("mssp_1m_to_leaf") - ns("mssp_1m_to_root"),
                    "entry_hit_count": ns("mssp_1m") - ns("mssp_1m_to_leaf"),
                    "entry_hit_count_in_leaf_cells": ns("mssp_1m_hit_cells") - ns("mssp_1m_to_leaf"),
                    "total": ns("mssp_1m"),
                }),
            )
        })
        .collect();
    // The same steps in units of one cold dependent load on this machine.
    let breakdown_misses: serde_json::Map<String, serde_json::Value> = match miss_ns(&machine) {
        Some(unit) => breakdown
            .iter()
            .map(|(mix, steps)| {
                let per: serde_json::Map<String, serde_json::Value> = steps
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), json!(v.as_f64()? / unit))))
                    .collect();
                (mix.clone(), per.into())
            })
            .collect(),
        None => serde_json::Map::new(),
    };
    let summary = json!({
        "variants": headline,
        "headline_traffic": "ipv4_uniform",
        "traffic": mixes_json,
        "ratios": ratios,
        "targets": targets,
        "breakdown_ns": breakdown,
        "breakdown_in_dependent_misses": breakdown_misses,
        "machine": machine,
        "control_plane": control,
        "method": {
            "rounds": rounds, "seconds_per_measurement": secs, "quick": opts.quick,
            "throughput": opts.throughput.describe(),
            "generator": "BPF_PROG_TEST_RUN live frames (mssp-gen), 64-byte UDP frames into a veth pair",
            "mpps": "packets the variant handled per second, BPF statistics off",
            "ns_per_pkt": "run_time_ns / run_cnt of the XDP program over the second half of each window, BPF_ENABLE_STATS on",
        },
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    if let Some(dir) = opts.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&opts.out, serde_json::to_string_pretty(&summary)?)?;
    print_table(&summary);
    println!("summary: {}", opts.out.display());
    Ok(())
}

/// The targets from the ratios: true (met), false (missed), or null where a ratio's
/// variants were not run (`--only`, `--mixes`), so a partial run claims neither.
fn targets(ratios: &serde_json::Value) -> serde_json::Value {
    let r = |k: &str| ratios[k].as_f64().unwrap_or(f64::NAN);
    let judge = |x: f64, met: fn(f64) -> bool| {
        if x.is_nan() {
            serde_json::Value::Null
        } else {
            json!(met(x))
        }
    };
    json!({
        "mssp_1m ns/pkt <= 0.22 x lpm_trie_1m (ipv4_uniform)": judge(r("mssp_1m_over_lpm_trie_1m_ns"), |x| x <= 0.22),
        "mssp_1m ns/pkt <= 0.25 x lpm_trie_1m (ipv6_uniform)": judge(r("mssp_1m_over_lpm_trie_1m_ns_ipv6"), |x| x <= 0.25),
        "mssp_1k ns/pkt <= 1.6 x parse_only": judge(r("mssp_1k_over_parse_only_ns"), |x| x <= 1.6),
        "mssp_1k >= 0.8 x parse_only Mpps": judge(r("mssp_1k_over_parse_only_mpps"), |x| x >= 0.8),
        "mssp_1m >= 0.5 x parse_only Mpps": judge(r("mssp_1m_over_parse_only_mpps"), |x| x >= 0.5),
        "mssp_1m >= 3 x nft_set_1m Mpps": judge(r("mssp_1m_over_nft_set_1m_mpps"), |x| x >= 3.0),
    })
}

fn print_table(s: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    for (mix, per) in s["traffic"].as_object().into_iter().flatten() {
        let _ = writeln!(out, "\n{mix}: median (min-max)");
        let _ = writeln!(
            out,
            "  {:<18} {:>22} {:>24}",
            "variant", "Mpps", "ns/pkt (program)"
        );
        for name in NAMES {
            let v = &per[name];
            if v.is_null() {
                continue;
            }
            let ns = match v["ns_per_pkt"].as_f64() {
                Some(n) => format!(
                    "{n:.0} ({:.0}-{:.0})",
                    v["ns_min"].as_f64().unwrap_or(0.0),
                    v["ns_max"].as_f64().unwrap_or(0.0)
                ),
                None => "-".into(),
            };
            let _ = writeln!(
                out,
                "  {name:<18} {:>22} {ns:>24}",
                format!(
                    "{:.3} ({:.3}-{:.3})",
                    v["mpps"].as_f64().unwrap_or(0.0),
                    v["mpps_min"].as_f64().unwrap_or(0.0),
                    v["mpps_max"].as_f64().unwrap_or(0.0)
                )
            );
        }
    }
    let _ = writeln!(
        out,
        "\nbreakdown of mssp_1m (ns/packet each step adds): {}",
        s["breakdown_ns"]
    );
    let _ = writeln!(
        out,
        "dependent-load latency on this machine (ns): {}",
        s["machine"]["dependent_load_ns"]
    );
    let _ = writeln!(out, "ratios: {}", s["ratios"]);
    for (k, v) in s["targets"].as_object().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {} {k}",
            match v.as_bool() {
                Some(true) => "MET    ",
                Some(false) => "MISSED ",
                None => "NOT RUN",
            }
        );
    }
    let _ = writeln!(out, "control plane: {}", s["control_plane"]);
}

/// Waits until both CPUs have been at least 95% idle for three half-second samples in a row
/// (or `limit` passes), and says how long that took. (90% over one sample was not enough: a
/// full run's CLI edits still met stalls of 90–160 ms that a run of the control plane alone
/// never shows.)
fn wait_until_idle(limit: Duration) -> Duration {
    let t = Instant::now();
    let sample = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: idle + iowait count as idle.
        let idle = cpu.get(3)? + cpu.get(4).copied().unwrap_or(0);
        Some((idle, cpu.iter().take(8).sum()))
    };
    let mut quiet = 0;
    while t.elapsed() < limit && quiet < 3 {
        let Some((i0, t0)) = sample() else { break };
        std::thread::sleep(Duration::from_millis(500));
        let Some((i1, t1)) = sample() else { break };
        if t1 > t0 && (i1 - i0) as f64 / (t1 - t0) as f64 >= 0.95 {
            quiet += 1;
        } else {
            quiet = 0;
        }
    }
    t.elapsed()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_target_whose_variants_were_not_run_is_neither_met_nor_missed() {
        // What `--only mssp_1m --mixes ipv4_uniform` leaves: NaN ratios serialise as null.
        let ratios = json!({
            "mssp_1m_over_lpm_trie_1m_ns": f64::NAN,
            "mssp_1m_over_nft_set_1m_mpps": 3.5,
            "mssp_1k_over_parse_only_ns": 1.7,
        });
        let t = super::targets(&ratios);
        let t = t.as_object().unwrap();
        assert_eq!(t.len(), 6);
        assert_eq!(
            t["mssp_1m ns/pkt <= 0.22 x lpm_trie_1m (ipv4_uniform)"],
            json!(null)
        );
        assert_eq!(
            t["mssp_1m ns/pkt <= 0.25 x lpm_trie_1m (ipv6_uniform)"],
            json!(null)
        );
        assert_eq!(t["mssp_1m >= 3 x nft_set_1m Mpps"], json!(true));
        assert_eq!(t["mssp_1k ns/pkt <= 1.6 x parse_only"], json!(false));
    }
}
